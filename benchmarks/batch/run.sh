#!/usr/bin/env bash
# Batch prediction benchmark over the small MLP (784 -> 256 -> 10): two floors measured in the same
# run (the raw tch batched forward over instances already in memory, and the fastest parse of the
# same JSON lines into f32 rows by a well-kept crate: server/examples/parse_floor.rs) vs an Anneal
# batch prediction job end to end (JSON lines of full-precision floats in, JSON lines out) over
# 100,000 and 400,000 instances, with the server's peak memory for each; then TF_RECORD and
# TF_RECORD_GZIP jobs over 100,000 Examples.
#
# Reproduce from the repository root, after `make build`:   benchmarks/batch/run.sh
# Needs about 7 GB of free disk for the 400k-line input (removed afterwards). Writes results.json
# and results.md here. SIZES (default "100000 400000") and TFRECORDS (default 100000) can be set
# in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VIRTUAL_ENV=$PWD/.venv PATH=$PWD/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
# The comparison build with forward passes in the server's process first, kept aside (see
# benchmarks/serving/run.sh); then the shipped build, which stays in target/release.
if [ ! -x target/release/anneal-in-process ] || [ target/release/anneal-in-process -ot server/src/serving/model.rs ]; then
  cargo build --release --quiet -p server --bin anneal --features in-process
  cp target/release/anneal target/release/anneal-in-process
fi
cargo build --release --quiet -p server --bin anneal --bin anneal-sandbox --example batch_floor --example parse_floor
exec python benchmarks/batch/bench.py
