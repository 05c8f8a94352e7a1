#!/usr/bin/env bash
# Training-job benchmark: submit -> RUNNING latency with a cached environment, log-line latency to
# a follower, and 50 jobs queued on 2 slots. Starts its own `anneal serve` on a free port with a
# temporary data dir.
#
# Reproduce from the repository root, after `make build`:   benchmarks/jobs/run.sh
# Writes results.json and results.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python benchmarks/jobs/bench.py "$@"
