#!/usr/bin/env bash
# Several-nodes benchmark (#15): submit -> RUNNING and jobs per second on one node with SQLite, one
# node with PostgreSQL and two nodes on one PostgreSQL; predictions per second at c=64 through one
# node and spread over two; the HTTP floor (GET /healthz) of one node.
#
# Reproduce from the repository root, after `cargo build --release -p server --bin anneal`:
#
#   benchmarks/cluster/run.sh
#
# It runs itself under scripts/with-postgres.sh (a throwaway PostgreSQL on 127.0.0.1), starts its
# own `anneal serve` nodes on free ports with temporary data dirs, and writes results.json and
# results.md here (about 3 minutes). Needs wrk (Debian: apt-get install wrk). In the environment:
# DURATION (seconds per wrk run, default 10), SUBMITS (jobs timed one at a time, default 30),
# ROUNDS (rounds of the queue and of the prediction measures, default 3), ANNEAL_BIN (another
# build to measure) and OUT (where the results go).
#
# Authentication is on, as by default: every request, wrk's included, sends the admin token the
# first node wrote to <data dir>/admin.token (the other node gets a copy; the token is in the
# shared database, so it is valid on both).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
export VIRTUAL_ENV=$PWD/.venv PATH=$PWD/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
exec scripts/with-postgres.sh .venv/bin/python benchmarks/cluster/bench.py "$@"
