#!/usr/bin/env bash
# Set-up benchmark: times a fresh clone's `make test`, step by step, then a `make run` in the same
# clone (build with nothing to do, until the console answers), and writes results.md here.
#
#   benchmarks/setup/run.sh [--remove-tools]
#
# It clones this repository's HEAD into a temporary folder (so no .venv, end2end/node_modules,
# target/ or .make/ exist there) and runs `make test` in it. With --remove-tools it first removes
# the cargo-installed wasm-bindgen-cli (`cargo uninstall wasm-bindgen-cli`), so that it is timed as
# well; Debian's chromium and the rustup wasm32 target are system-wide and stay (remove them by
# hand for a fully fresh machine). It takes the whole machine for 20-30 minutes on 2 cores: run it
# when nothing else builds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ ${1:-} == --remove-tools ]]; then
    cargo uninstall wasm-bindgen-cli 2>/dev/null || true
fi

work=$(mktemp -d /tmp/anneal-setup-bench.XXXXXX)
echo "cloning $repo into $work/anneal"
git clone --quiet "$repo" "$work/anneal"
cd "$work/anneal"
commit=$(git rev-parse --short HEAD)

now() { date +%s.%N; }
# Seconds from $1 to now, or between two times.
since() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.1f", b - a }'; }
# M:SS of a number of seconds.
fmt() { awk -v s="$1" 'BEGIN { printf "%d:%02d", s / 60, s % 60 }'; }
# Every output line gets the seconds since the start in front, so the steps can be timed from it.
stamp() {
    local t0=$1 line
    while IFS= read -r line; do
        printf '%7s %s\n' "$(since "$t0")" "$line"
    done
}

t0=$(now)
status=0
make test 2>&1 | stamp "$t0" | tee "$work/make-test.log" || status=$?
total_test=$(since "$t0")

# A second `make run`: the build finds nothing to do; the console (its login page) answers soon after.
t1=$(now)
ANNEAL_ADDR=127.0.0.1:0 ANNEAL_DATA_DIR=$work/data make run >"$work/make-run.log" 2>&1 &
run_pid=$!
url=""
for _ in $(seq 1 1200); do
    url=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$work/make-run.log" | head -n 1 | cut -d' ' -f3 || true)
    [[ -n $url ]] && curl -fsS "$url/login" -o /dev/null 2>/dev/null && break
    url=""
    sleep 0.1
done
second_run=$(since "$t1")
pkill -TERM -P "$run_pid" 2>/dev/null || true
kill "$run_pid" 2>/dev/null || true
wait "$run_pid" 2>/dev/null || true

# Step durations from the step runner's lines ("    NAME done in M:SS"), the tests from the
# timestamps of the lines that start them.
table=$(awk '
    / done in [0-9]+:[0-9][0-9]$/ { split($NF, t, ":"); printf "| %s | %d:%02d |\n", $2, t[1], t[2] }
' "$work/make-test.log")
rust_start=$(awk '/cargo test --release -p app -p server$/ { print $1; exit }' "$work/make-test.log")
e2e_start=$(awk '/npx playwright test$/ { print $1; exit }' "$work/make-test.log")

{
    echo "# Set-up benchmark: fresh clone \`make test\` and \`make run\`"
    echo
    echo "Written by \`benchmarks/setup/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit,"
    echo "$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME")."
    echo "Tools removed first: $([[ ${1:-} == --remove-tools ]] && echo "wasm-bindgen-cli" || echo "none (already installed ones were reused)")."
    echo "\`make test\` exit status: $status. See session-measurements.md for how the steps were measured"
    echo "the first time and the numbers before this change."
    echo
    echo "Steps run in parallel (make -j4), so their times overlap and do not add up to the total."
    echo
    echo "| step (make test, fresh clone) | wall time |"
    echo "|---|---|"
    echo "$table"
    if [[ -n $rust_start && -n $e2e_start ]]; then
        echo "| cargo test --release -p app -p server | $(fmt "$(since "$rust_start" "$e2e_start")") |"
        echo "| Playwright (end2end) | $(fmt "$(since "$e2e_start" "$total_test")") |"
    fi
    echo "| **make test, in all** | **$(fmt "$total_test")** |"
    echo "| second \`make run\`, until the console answers | $(printf '%.1f s' "$second_run")$([[ -z $url ]] && echo " (did not answer)") |"
} >"$here/results.md"

echo "wrote $here/results.md (logs in $work)"
cat "$here/results.md"
exit "$status"
