#!/usr/bin/env bash
# Online prediction benchmark: (a) in-process tch forward (the forward floor), (h) GET /healthz of
# the same Anneal server (the HTTP floor), (b) Anneal over HTTP with dynamic batching (forward
# passes in sandboxed worker processes, as shipped), (b'') the same build with passes in the
# server's own process (the `in-process` feature: what Anneal did before its sandbox, built here
# for the comparison only), (b') Anneal with batching off, (c) FastAPI + uvicorn + PyTorch, for a
# small and a larger MLP; p50/p99 latency
# at concurrency 1 and throughput at concurrency 1, 8 and 64 (wrk), all in one run; then 1,000
# connections on the small model (answers or 429s only, the server's peak memory); then the
# targets' comparisons in pairs (below). Request bodies hold full-precision floats, as a client's
# json.dumps writes them.
#
# Reproduce from the repository root, after `make build`:   benchmarks/serving/run.sh
# Needs wrk (Debian: apt-get install wrk). Writes results.jsonl, results.md and results.png here.
# DURATION (seconds per load run, default 10) can be set in the environment; ANNEAL_BIN measures
# another build of anneal (e.g. the commit before a change) and OUT names the results folder.
#
# Anneal runs as by default, with authentication on: every /v1 call, wrk's included, sends the admin
# token that `anneal serve` wrote to <data dir>/admin.token on first start, so the cost of checking
# it is in the numbers. The FastAPI server is the peer compared against and has no auth.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/benchmarks/serving
DURATION=${DURATION:-10}
# The c=1 and c=64 targets are judged on pairs: /healthz, then :predict right after it, ROUNDS
# times, PAIR_DURATION seconds each, so a noisy machine moves both sides of each comparison alike.
ROUNDS=${ROUNDS:-3}
PAIR_DURATION=${PAIR_DURATION:-5}
ANNEAL_BIN=${ANNEAL_BIN:-$ROOT/target/release/anneal}
OUT=${OUT:-$HERE}
mkdir -p "$OUT"
export VIRTUAL_ENV=$ROOT/.venv PATH=$ROOT/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
python -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
# The in-process build first, kept aside; then the shipped build, which stays in target/release.
IN_PROCESS_BIN=${IN_PROCESS_BIN:-$ROOT/target/release/anneal-in-process}
if [ ! -x "$IN_PROCESS_BIN" ] || [ "$IN_PROCESS_BIN" -ot "$ROOT/server/src/serving/model.rs" ]; then
  cargo build --release --quiet -p server --bin anneal --features in-process
  cp "$ROOT/target/release/anneal" "$IN_PROCESS_BIN"
fi
cargo build --release --quiet -p server --bin anneal --bin anneal-sandbox --example predict_floor

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/data/exports"
python "$HERE/make_models.py" "$WORK/data/exports"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

record() { # system model concurrency json [round]
  python - "$@" >> "$RESULTS" <<'PY'
import json, sys
system, model, concurrency, line = sys.argv[1:5]
row = json.loads(line)
row.update(system=system, model=model, concurrency=int(concurrency))
if len(sys.argv) > 5:
    row["round"] = int(sys.argv[5])
print(json.dumps(row))
PY
}

load() { # system model url [token]
  for c in 1 8 64; do
    line=$(BODY_FILE="$WORK/data/exports/$2.body.json" ANNEAL_TOKEN="${4:-}" wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s -s "$HERE/post.lua" "$3" | tail -n 1)
    echo "  $1 $2 c=$c $line"
    record "$1" "$2" "$c" "$line"
  done
}

healthz() { # port: the HTTP floor, an empty handler of the same server under the same load
  for c in 1 8 64; do
    line=$(wrk -t1 -c"$c" -d"${DURATION}s" --timeout 10s -s "$HERE/get.lua" "http://127.0.0.1:$1/healthz" | tail -n 1)
    echo "  healthz c=$c $line"
    record healthz small "$c" "$line"
  done
}

pairs() { # port token in-process-port: the targets' comparisons, each measured right after its floors, ROUNDS times
  for round in $(seq 1 "$ROUNDS"); do
    line=$(BODY_FILE="$WORK/data/exports/small.body.json" ANNEAL_TOKEN="$(cat "$WORK/inprocess/admin.token")" wrk -t1 -c64 -d"${PAIR_DURATION}s" --timeout 10s -s "$HERE/post.lua" \
      "http://127.0.0.1:$3/v1/projects/bench/models/small:predict" | tail -n 1)
    echo "  round $round anneal in-process small c=64 $line"
    record pair_inprocess small 64 "$line" "$round"
    for c in 1 64; do
      line=$(wrk -t1 -c"$c" -d"${PAIR_DURATION}s" --timeout 10s -s "$HERE/get.lua" "http://127.0.0.1:$1/healthz" | tail -n 1)
      echo "  round $round healthz c=$c $line"
      record pair_healthz small "$c" "$line" "$round"
      line=$(BODY_FILE="$WORK/data/exports/small.body.json" ANNEAL_TOKEN="$2" wrk -t1 -c"$c" -d"${PAIR_DURATION}s" --timeout 10s -s "$HERE/post.lua" \
        "http://127.0.0.1:$1/v1/projects/bench/models/small:predict" | tail -n 1)
      echo "  round $round anneal small c=$c $line"
      record pair_anneal small "$c" "$line" "$round"
    done
  done
}

crowd() { # port token pid: 1,000 connections on the small model; statuses and peak memory
  line=$(BODY_FILE="$WORK/data/exports/small.body.json" ANNEAL_TOKEN="$2" wrk -t2 -c1000 -d"${DURATION}s" --timeout 10s -s "$HERE/post_statuses.lua" \
    "http://127.0.0.1:$1/v1/projects/bench/models/small:predict" | tail -n 1)
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$3/status")
  line=$(python -c 'import json,sys; r=json.loads(sys.argv[1]); r["server_peak_rss_kib"]=int(sys.argv[2]); print(json.dumps(r))' "$line" "$peak")
  echo "  anneal small c=1000 $line"
  record anneal_crowd small 1000 "$line"
}

wait_http() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

declare -A SIZE=([small]=784 [large]=2048)
for model in small large; do
  line=$(target/release/examples/predict_floor "$WORK/data/exports/$model" "${SIZE[$model]}" 3000)
  echo "  floor $model $line"
  record floor "$model" 1 "$line"
done
# The same forward with 200 µs of idle before each call (about the gap one client leaves between
# requests): what a pass costs on a core that has just woken.
line=$(target/release/examples/predict_floor "$WORK/data/exports/small" 784 3000 200)
echo "  floor_idle small $line"
record floor_idle small 1 "$line"

rss_kib() { # pid: the resident memory of a process and of every process under it, KiB
  python - "$1" <<'PY'
import os, sys
children = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        continue
    children.setdefault(ppid, []).append(int(pid))
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
root = int(sys.argv[1])
tree, todo = [], [root]
while todo:
    pid = todo.pop()
    for child in children.get(pid, []):
        tree.append(child)
        todo.append(child)
print(rss(root), sum(rss(p) for p in tree))
PY
}

serve_anneal() { # system port extra-env...; BIN= another anneal, DATA= another data dir, KEEP=1 leaves it running
  local system=$1 port=$2; shift 2
  local data=${DATA:-$WORK/data}
  mkdir -p "$data"
  env "$@" ANNEAL_LOG=warn ANNEAL_STORAGE_ROOTS="[$WORK/data]" "${BIN:-$ANNEAL_BIN}" serve --addr "127.0.0.1:$port" --data-dir "$data" > "$WORK/$system.log" 2>&1 &
  PIDS+=($!)
  local pid=$!
  wait_http "http://127.0.0.1:$port/readyz"
  # The server wrote its admin token before it started answering.
  local token
  token=$(cat "$data/admin.token")
  local auth=(-H "authorization: Bearer $token")
  for model in small large; do
    curl -fsS "${auth[@]}" -X POST "http://127.0.0.1:$port/v1/projects/bench/models" -d "{\"name\": \"$model\"}" -H 'content-type: application/json' > /dev/null || true
    op=$(curl -fsS "${auth[@]}" -X POST "http://127.0.0.1:$port/v1/projects/bench/models/$model/versions" -H 'content-type: application/json' \
      -d "{\"name\": \"${system}\", \"deploymentUri\": \"$WORK/data/exports/$model\"}" | python -c 'import json,sys; print(json.load(sys.stdin)["name"])')
    local created=$EPOCHREALTIME
    until curl -fsS "${auth[@]}" "http://127.0.0.1:$port/v1/$op" | grep -q '"done":true'; do sleep 0.01; done
    record "${system}_ready" "$model" 1 "{\"seconds\": $(python -c "print(round($EPOCHREALTIME - $created, 3))")}"
    curl -fsS "${auth[@]}" "http://127.0.0.1:$port/v1/projects/bench/models/$model/versions/${system}" | grep -q '"state":"READY"' \
      || { echo "$system $model did not become READY" >&2; exit 1; }
    curl -fsS "${auth[@]}" -X POST "http://127.0.0.1:$port/v1/projects/bench/models/$model/versions/${system}:setDefault" -H 'content-type: application/json' -d '{}' > /dev/null
    load "$system" "$model" "http://127.0.0.1:$port/v1/projects/bench/models/$model:predict" "$token"
  done
  # Both versions loaded and idle: the server's memory, and its workers' (sandbox launchers and
  # model worker processes).
  sleep 1
  read -r server_kib workers_kib < <(rss_kib "$pid")
  record "${system}_idle_rss" both 0 "{\"server_kib\": $server_kib, \"workers_kib\": $workers_kib}"
  echo "  $system idle RSS: server $server_kib KiB, workers $workers_kib KiB"
  if [ "$system" = anneal ]; then
    healthz "$port"
    pairs "$port" "$token" 18084
    crowd "$port" "$token" "$pid"
  fi
  [ -n "${KEEP:-}" ] && return 0
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# The in-process build stays up (idle but for its pairs) while the shipped build is measured.
BIN=$IN_PROCESS_BIN DATA=$WORK/inprocess KEEP=1 serve_anneal anneal_inprocess 18084
IN_PROCESS_PID=${PIDS[-1]}
serve_anneal anneal 18081
kill "$IN_PROCESS_PID"; wait "$IN_PROCESS_PID" 2>/dev/null || true
serve_anneal anneal_nobatch 18082 ANNEAL_PREDICT_MAX_BATCH_SIZE=1

for model in small large; do
  python "$HERE/fastapi_server.py" "$WORK/data/exports/$model" 18083 > "$WORK/fastapi.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:18083/docs"
  load fastapi "$model" "http://127.0.0.1:18083/predict"  # no token: the peer has no auth
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done

python "$HERE/report.py" "$RESULTS" "$OUT/results.md" "$OUT/results.png"
echo "wrote $OUT/results.md and $OUT/results.png"
