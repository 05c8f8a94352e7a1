#!/usr/bin/env bash
# Fair-shares benchmark (issue #28): a trainer reports 60,000 metric tags; four viewers read the
# job's metrics in a loop while /healthz is timed, against /healthz with no viewers in the same
# run. Starts its own `anneal serve` on a free port with a temporary data dir.
#
# Reproduce from the repository root, after `make build`:   benchmarks/tenancy/run.sh
# Writes results.json and results.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python benchmarks/tenancy/bench.py "$@"
