#!/usr/bin/env bash
# Ray-executor benchmark (#17): the same jobs on the local executor and on a Ray head, one Anneal
# server of each kind (authentication on, SQLite), same machine:
#   - submit -> RUNNING and submit -> SUCCEEDED for a trivial job (one replica that prints a line)
#     and for the two-replica DDP example (examples/digits, 1 epoch);
#   - batch prediction instances/s over the same JSON lines of full-precision floats (4 files) on
#     the local executor and on Ray with 1 and 2 workers.
# The Ray head is the tests' single-node head (scripts/with-ray.sh: loopback, token auth).
#
# Reproduce from the repository root, after `make build`:   benchmarks/ray/run.sh
# LINES (default 40000) and REPEATS (default 3) can be set in the environment.
# Writes results.json and results.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VIRTUAL_ENV=$PWD/.venv PATH=$PWD/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
cargo build --release --quiet -p server --bin anneal
exec scripts/with-ray.sh python benchmarks/ray/bench.py
