#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server for the tests, then stops it (also when the
# command fails or is interrupted):
#
#   scripts/with-postgres.sh cargo test --release -p server --test jobs
#
# The server is Debian's `postgresql` package (the Makefile's set-up installs it), initialised in a
# fresh temporary directory, listening on 127.0.0.1 on a free port with trust authentication and
# fsync off (nothing in it outlives the run). PostgreSQL refuses to run as root, so as root it runs
# as the `postgres` user. The command sees:
#
#   ANNEAL_TEST_POSTGRES      postgres://postgres@127.0.0.1:PORT/postgres (its user may create
#                             databases; tests/common makes one per test server)
#   ANNEAL_TEST_POSTGRES_DIR  the cluster's directory, for `scripts/with-postgres.sh --ctl stop|start`
#                             (the tests that take the database away under a running server)
#
# The exit status is the command's.
set -euo pipefail

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -n "$found" && -x "$found/pg_ctl" ]]; then
    echo "$found"
  elif command -v pg_ctl >/dev/null; then
    dirname "$(command -v pg_ctl)"
  else
    echo "with-postgres: PostgreSQL is not installed (apt-get install postgresql; make test does it)" >&2
    exit 1
  fi
}

# Runs a PostgreSQL program as the user that owns the cluster.
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

BIN=$(bindir)

if [[ "${1:-}" == "--ctl" ]]; then
  dir=${ANNEAL_TEST_POSTGRES_DIR:?--ctl needs ANNEAL_TEST_POSTGRES_DIR (set by with-postgres.sh)}
  case "${2:-}" in
    stop) as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null ;;
    start) as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null ;;
    *) echo "usage: $0 --ctl stop|start" >&2; exit 2 ;;
  esac
  exit 0
fi

if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi

dir=$(mktemp -d -t anneal-pg.XXXXXX)
chmod 755 "$dir"
[[ "$(id -u)" == 0 ]] && chown postgres: "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

stop() {
  as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

as_owner "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust --no-locale -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
  cat "$dir/initdb.log" >&2
  exit 1
}
# Everything a restart (--ctl start) needs is in the cluster's own configuration.
cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 500
EOF
as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null || {
  cat "$dir/server.log" >&2
  exit 1
}

export ANNEAL_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
export ANNEAL_TEST_POSTGRES_DIR="$dir"
echo "with-postgres: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($dir)" >&2
status=0
"$@" || status=$?
exit "$status"
