#!/usr/bin/env bash
# Python-framework serving benchmark (#18): a scikit-learn pipeline and a TensorFlow SavedModel
# (make_models.py) behind Anneal (2 Python worker processes per version: manualScaling.nodes=2,
# the dynamic batcher in front, authentication on) and behind FastAPI + uvicorn with 2 worker
# processes, on this machine, in one run: p50/p99 latency and req/s at concurrency 1, 8 and 64
# (wrk, one-instance bodies of full-precision floats). The target: Anneal's req/s at c=64 at least
# 2x FastAPI's, at no worse p99.
#
# Reproduce from the repository root, after `make build`:   benchmarks/frameworks/run.sh
# Needs wrk (Debian: apt-get install wrk). Writes results.jsonl and results.md here. DURATION
# (seconds per load run, default 10), ANNEAL_BIN and OUT can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/benchmarks/frameworks
DURATION=${DURATION:-10}
ANNEAL_BIN=${ANNEAL_BIN:-$ROOT/target/release/anneal}
OUT=${OUT:-$HERE}
mkdir -p "$OUT"
export VIRTUAL_ENV=$ROOT/.venv PATH=$ROOT/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
python -m pip install --quiet --disable-pip-version-check -r "$ROOT/benchmarks/serving/requirements.txt"
[ -x "$ANNEAL_BIN" ] || cargo build --release --quiet -p server --bin anneal

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/data/exports"
python "$HERE/make_models.py" "$WORK/data/exports"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

record() { # system model concurrency json
  python - "$@" >> "$RESULTS" <<'PY'
import json, sys
system, model, concurrency, line = sys.argv[1:5]
row = json.loads(line)
row.update(system=system, model=model, concurrency=int(concurrency))
print(json.dumps(row))
PY
}

load() { # system model url [token]
  for c in 1 8 64; do
    line=$(BODY_FILE="$WORK/data/exports/$2.body.json" ANNEAL_TOKEN="${4:-}" wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s -s "$ROOT/benchmarks/serving/post.lua" "$3" | tail -n 1)
    echo "  $1 $2 c=$c $line"
    record "$1" "$2" "$c" "$line"
  done
}

wait_http() { for _ in $(seq 1 600); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

ANNEAL_LOG=warn "$ANNEAL_BIN" serve --addr 127.0.0.1:18091 --data-dir "$WORK/data" > "$WORK/anneal.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:18091/readyz"
TOKEN=$(cat "$WORK/data/admin.token")
AUTH=(-H "authorization: Bearer $TOKEN" -H 'content-type: application/json')
for model in sklearn tensorflow; do
  curl -fsS "${AUTH[@]}" -X POST "http://127.0.0.1:18091/v1/projects/bench/models" -d "{\"name\": \"$model\"}" > /dev/null
  op=$(curl -fsS "${AUTH[@]}" -X POST "http://127.0.0.1:18091/v1/projects/bench/models/$model/versions" \
    -d "{\"name\": \"v1\", \"deploymentUri\": \"$WORK/data/exports/$model\", \"manualScaling\": {\"nodes\": 2}}" |
    python -c 'import json,sys; print(json.load(sys.stdin)["name"])')
  until curl -fsS "${AUTH[@]}" "http://127.0.0.1:18091/v1/$op" | grep -q '"done":true'; do sleep 0.2; done
  curl -fsS "${AUTH[@]}" "http://127.0.0.1:18091/v1/$op" | grep -q '"state":"READY"' || { echo "version $model not READY" >&2; cat "$WORK/anneal.log" >&2; exit 1; }
  load anneal "$model" "http://127.0.0.1:18091/v1/projects/bench/models/$model:predict" "$TOKEN"
done
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

for model in sklearn tensorflow; do
  python "$HERE/fastapi_server.py" "$model" "$WORK/data/exports/$model" 18093 > "$WORK/fastapi.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:18093/docs"
  sleep 2  # both uvicorn workers up
  load fastapi "$model" "http://127.0.0.1:18093/predict"  # no token: the peer has no auth
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done

python "$HERE/report.py" "$RESULTS" "$OUT/results.md"
echo "wrote $OUT/results.md"
