#!/usr/bin/env bash
# Runs a command with a throwaway single-node Ray cluster for the tests, then stops it (also when
# the command fails or is interrupted):
#
#   scripts/with-ray.sh cargo test --release -p server --test ray
#
# Ray is PyPI's `ray[default]` in the project's .venv (requirements.txt; the Makefile installs it). The head listens on 127.0.0.1 only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, or Ray silently
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
  echo "with-ray: $ray is missing (pip install -r requirements.txt; make test does it)" >&2
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

# The head's processes inherit this environment (the command does not): the venv's Python first
# on PATH (a job's `python` is whatever was on PATH when the head started), loopback only, no
# usage stats, tokens. Ray waits RAY_JOB_STOP_SIGNAL_TIMEOUT_S after SIGTERM before SIGKILL when
# a job is stopped (Anneal's driver stops its replicas and placement group inside it).
ray_env=(
  PATH="$venv/bin:$PATH"
  RAY_TMPDIR="$dir"
  RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
  RAY_USAGE_STATS_ENABLED=0
  RAY_AUTH_MODE=token
  RAY_AUTH_TOKEN="$token"
  RAY_JOB_STOP_SIGNAL_TIMEOUT_S="${RAY_JOB_STOP_SIGNAL_TIMEOUT_S:-10}"
)

# Stops this head only (not another Ray of the machine, as `ray stop` would): every process of
# the session it was started in gets SIGTERM, and SIGKILL 10 s later. Job drivers (sessions of
# their own) are killed by Ray's watcher once their supervisor is gone, replicas with their actor.
stop() {
  if [[ -s "$dir/sid" ]]; then
    local sid pids
    sid=$(cat "$dir/sid")
    pids() { ps -e -o pid=,sid= | awk -v s="$sid" '$2 == s { print $1 }'; }
    pids | xargs -r kill -TERM 2>/dev/null || true
    for _ in $(seq 1 20); do
      [[ -z "$(pids)" ]] && break
      sleep 0.5
    done
    pids | xargs -r kill -KILL 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Logical CPUs and memory (Ray enforces neither): a replica's bundle holds its machine type's
# vCPUs and memory (one CPU without one), several tests run at once, and an infeasible request
# asks for more CPUs than this.
env "${ray_env[@]}" setsid bash -c 'echo $$ >"$0/sid"; exec "$@"' "$dir" "$ray" start --head \
  --node-ip-address=127.0.0.1 --port="$gcs" \
  --dashboard-host=127.0.0.1 --dashboard-port="$dashboard" --include-dashboard=true \
  --num-cpus="${ANNEAL_TEST_RAY_CPUS:-8}" --num-gpus=0 --memory=64000000000 \
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
