#!/usr/bin/env bash
# Object-storage benchmark (#16): the same work from local files and from an S3-compatible server
# on loopback (moto, from PyPI's moto[server], in memory), one Anneal server for both:
#   - version creation time (POST versions -> operation done) for the small (0.8 MB) and large
#     (116 MB) MLPs, from a local folder and from s3://;
#   - batch prediction instances/s over the same JSON lines of full-precision floats, local
#     input and output vs s3:// input and output, with the server's peak RSS.
#
# Reproduce from the repository root, after `make build`:   benchmarks/storage/run.sh
# LINES (default 20000, ~310 MB of JSON) and REPEATS (default 3) can be set in the environment.
# Writes results.json and results.md here. moto keeps objects in its own memory (about 3x the
# input), so it is a slower store than a real one; the S3 numbers are a floor for the client path.
set -euo pipefail
cd "$(dirname "$0")/../.."
export VIRTUAL_ENV=$PWD/.venv PATH=$PWD/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
cargo build --release --quiet -p server --bin anneal
exec python benchmarks/storage/bench.py
