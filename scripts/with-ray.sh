#!/usr/bin/env bash
# Runs a command with a throwaway single-node Ray cluster for the tests, then stops it (also when
# the command fails or is interrupted):
#
#   scripts/with-ray.sh cargo test --release -p server --test ray
#
# Ray is PyPI's `ray[default]` in the project's .venv (requirements-ray.txt; the Makefile installs
# it). The head listens on 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, or Ray silently
# moves its services onto the machine's other address), with usage stats off and token
# authentication on (a fresh random token), its dashboard (the Jobs REST API) on a free port and
# its session files in a fresh temporary directory. The head uses about 1.6 GB of memory and takes
# about 15 s to start. The command sees:
#
#   ANNEAL_TEST_RAY_ADDRESS   http://127.0.0.1:PORT, the Jobs REST API
#   ANNEAL_TEST_RAY_TOKEN     the token the head requires (Authorization: Bearer)
#   ANNEAL_TEST_RAY_PYTHON    the Python the head runs (with ray, torch and the trainer's needs)
#
# The exit status is the command's.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VIRTUAL_ENV:-$root/.venv}
python="$venv/bin/python"
ray="$venv/bin/ray"
if [[ ! -x "$ray" ]]; then
  echo "with-ray: $ray is missing (pip install -r requirements-ray.txt; make test does it)" >&2
  exit 1
fi

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A short folder: Ray's session sockets must fit in a Unix socket path (107 bytes).
dir=$(mktemp -d /tmp/anneal-ray.XXXXXX)
token=$("$python" -c 'import secrets; print(secrets.token_hex(24))')
dashboard=$(free_port)
gcs=$(free_port)

# Everything Ray runs inherits this environment: the venv's Python first on PATH (a job's
# `python` is whatever was on PATH when the head started), loopback only, no usage stats, tokens.
export PATH="$venv/bin:$PATH"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN="$token"
# Ray waits this long after SIGTERM before SIGKILL when a job is stopped (the driver stops its
# replicas and placement group inside it).
export RAY_JOB_STOP_SIGNAL_TIMEOUT_S=${RAY_JOB_STOP_SIGNAL_TIMEOUT_S:-10}

stop() {
  RAY_TMPDIR="$dir" "$ray" stop --force >"$dir/stop.log" 2>&1 || cat "$dir/stop.log" >&2
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Logical CPUs: the tests' replicas take one each and several tests run at once; each test's own
# job asks for what it needs (an infeasible request asks for more than this).
RAY_TMPDIR="$dir" "$ray" start --head \
  --node-ip-address=127.0.0.1 --port="$gcs" \
  --dashboard-host=127.0.0.1 --dashboard-port="$dashboard" --include-dashboard=true \
  --num-cpus="${ANNEAL_TEST_RAY_CPUS:-8}" --num-gpus=0 \
  --object-store-memory=200000000 --disable-usage-stats \
  --temp-dir="$dir" >"$dir/start.log" 2>&1 || {
  cat "$dir/start.log" >&2
  exit 1
}

# The dashboard's Jobs API answers a little after `ray start` returns.
for _ in $(seq 1 120); do
  if curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$dashboard/api/version" >/dev/null 2>&1; then
    break
  fi
  sleep 0.5
done

export ANNEAL_TEST_RAY_ADDRESS="http://127.0.0.1:$dashboard"
export ANNEAL_TEST_RAY_TOKEN="$token"
export ANNEAL_TEST_RAY_PYTHON="$python"
echo "with-ray: Ray $("$python" -c 'import ray; print(ray.__version__)') head on 127.0.0.1 (Jobs API $ANNEAL_TEST_RAY_ADDRESS, $dir)" >&2
status=0
"$@" || status=$?
exit "$status"
