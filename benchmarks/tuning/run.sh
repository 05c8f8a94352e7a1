#!/usr/bin/env bash
# Hyperparameter tuning benchmark: on a noisy 2-parameter objective with a known optimum, how many
# sequential trials the default algorithm (TPE) and random search need to get within 5 % of the
# optimum (median over SEEDS studies each), and the scheduler's overhead between trials.
#
# Reproduce from the repository root, after `make build`:   benchmarks/tuning/run.sh
# Writes results.json and results.md here. SEEDS (default 7) and MAX_TRIALS (default 80) can be set.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python benchmarks/tuning/bench.py "$@"
