#!/usr/bin/env bash
# How long should a model worker wait to fill a batch? Serves the small and the large MLP with
# predict_max_queue_delay_us = 0, 250, 1000, 4000 and measures the small model's latency at one
# connection (a window costs a lone request its length) and both models' throughput and latency
# at 8 and 64 connections. ROUNDS (default 2) sweeps run one after the other, each over every
# window, so a noisy machine shows as the spread between a window's rows rather than as a winner.
# Bodies hold full-precision floats. Writes delay_sweep.md here (OUT: another folder;
# ANNEAL_BIN: another build). Authentication is on, as by default: every /v1 call, wrk's
# included, sends the admin token the server wrote to <data dir>/admin.token on first start.
# Reproduce from the repository root, after `make build`:   benchmarks/serving/delay_sweep.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/benchmarks/serving
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-2}
ANNEAL_BIN=${ANNEAL_BIN:-$ROOT/target/release/anneal}
OUTDIR=${OUT:-$HERE}
mkdir -p "$OUTDIR"
export VIRTUAL_ENV=$ROOT/.venv PATH=$ROOT/.venv/bin:$PATH
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data/exports"
python "$HERE/make_models.py" "$WORK/data/exports"
OUT=$OUTDIR/delay_sweep.md
{
  echo "# Batching window sweep ($(nproc) cores shared with wrk; load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "Reproduce: \`make build && benchmarks/serving/delay_sweep.sh\`."
  echo "Requests carry a bearer token (auth on, as by default), so the overhead of checking it is included."
  echo
  echo "| round | predict_max_queue_delay_us | small p50 µs c=1 | small req/s c=1 | small req/s c=8 | small p99 µs c=8 | small req/s c=64 | small p99 µs c=64 | large req/s c=8 | large p99 µs c=8 | large req/s c=64 | large p99 µs c=64 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
port=18190
for round in $(seq 1 "$ROUNDS"); do
for delay in 0 250 1000 4000; do
  port=$((port + 1))
  rm -rf "$WORK/data-$delay"
  ANNEAL_LOG=warn ANNEAL_PREDICT_MAX_QUEUE_DELAY_US=$delay "$ANNEAL_BIN" serve --addr 127.0.0.1:$port --data-dir "$WORK/data-$delay" > "$WORK/log-$delay" 2>&1 &
  pid=$!
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; do sleep 0.1; done
  # The server wrote its admin token before it started answering.
  token=$(cat "$WORK/data-$delay/admin.token")
  auth=(-H "authorization: Bearer $token")
  mkdir -p "$WORK/data-$delay/exports"
  for model in small large; do
    cp -r "$WORK/data/exports/$model" "$WORK/data-$delay/exports/"
    curl -fsS "${auth[@]}" -X POST "http://127.0.0.1:$port/v1/projects/b/models" -H 'content-type: application/json' -d "{\"name\": \"$model\"}" > /dev/null
    op=$(curl -fsS "${auth[@]}" -X POST "http://127.0.0.1:$port/v1/projects/b/models/$model/versions" -H 'content-type: application/json' \
      -d "{\"name\": \"v\", \"deploymentUri\": \"$WORK/data-$delay/exports/$model\"}" | python -c 'import json,sys; print(json.load(sys.stdin)["name"])')
    until curl -fsS "${auth[@]}" "http://127.0.0.1:$port/v1/$op" | grep -q '"done":true'; do sleep 0.1; done
  done
  row="| $round | $delay"
  line=$(BODY_FILE="$WORK/data/exports/small.body.json" ANNEAL_TOKEN="$token" wrk -t1 -c1 -d"${DURATION}s" --timeout 10s -s "$HERE/post.lua" "http://127.0.0.1:$port/v1/projects/b/models/small:predict" | tail -n 1)
  echo "  round=$round delay=$delay small c=1 $line"
  row="$row | $(python -c 'import json,sys; r=json.loads(sys.argv[1]); print("%d | %.0f" % (r["p50_us"], r["rps"]))' "$line")"
  for model in small large; do
    for c in 8 64; do
      line=$(BODY_FILE="$WORK/data/exports/$model.body.json" ANNEAL_TOKEN="$token" wrk -t1 -c$c -d"${DURATION}s" --timeout 10s -s "$HERE/post.lua" "http://127.0.0.1:$port/v1/projects/b/models/$model:predict" | tail -n 1)
      echo "  round=$round delay=$delay $model c=$c $line"
      row="$row | $(python -c 'import json,sys; r=json.loads(sys.argv[1]); print("%.0f | %d" % (r["rps"], r["p99_us"]))' "$line")"
    done
  done
  echo "$row |" >> "$OUT"
  kill $pid; wait $pid 2>/dev/null || true
done
done
echo "wrote $OUT"
