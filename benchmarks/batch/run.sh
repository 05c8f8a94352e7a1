#!/usr/bin/env bash
# Batch prediction benchmark: the floor (raw tch batched forward over instances already in memory)
# vs an Anneal batch prediction job end to end (JSON lines in, JSON lines out) over 100,000 and
# 1,000,000 instances of the small MLP (784 -> 256 -> 10), with the server's peak memory for each.
#
# Reproduce from the repository root, after `make build`:   benchmarks/batch/run.sh
# Needs about 7 GB of free disk for the 1M-line input (removed afterwards). Writes results.json
# and results.md here. SIZES (default "100000 1000000") can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VIRTUAL_ENV=$PWD/.venv PATH=$PWD/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
cargo build --release --quiet -p server --bin anneal --example batch_floor
exec python benchmarks/batch/bench.py
