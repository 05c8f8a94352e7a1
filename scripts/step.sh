#!/usr/bin/env bash
# Runs one set-up or build step of the Makefile with its output in a log file, and says in words
# what it is doing: one line when it starts (with the log's path and, for a first build, roughly
# how long it takes), a progress line every 30 seconds while it runs (for cargo: how many crates
# are compiled and which one is compiling now), and one line when it ends. On failure it prints
# the log's last lines and exits with the step's status.
#
# Usage: scripts/step.sh NAME "what it does" "how long a first run takes, or empty" -- COMMAND...
# Logs go to .make/log/NAME.log. STEP_EXPECTED_CRATES, when set, is the number of crates a cold
# cargo build compiles (the progress line shows "n/~N crates").
set -euo pipefail

name=$1 what=$2 estimate=$3
shift 3
[[ ${1:-} == -- ]] && shift

root=$(cd "$(dirname "$0")/.." && pwd)
log_dir=$root/.make/log
log=$log_dir/$name.log
mkdir -p "$log_dir"
: >"$log"

label=$(printf '%-8s' "$name")
start=$(date +%s)
elapsed() {
    local s=$(($(date +%s) - start))
    printf '%d:%02d' $((s / 60)) $((s % 60))
}

echo "==> $what (${estimate:+$estimate; }log: ${log#"$root"/})"

# A reporter in the background prints progress while the step runs in the foreground (so that
# Ctrl-C reaches the step).
report() {
    local ticks=0 compiled now detail total
    while sleep 1; do
        ticks=$((ticks + 1))
        ((ticks % 30 == 0)) || continue
        compiled=$(grep -c '^ *Compiling ' "$log" || true)
        now=$(grep -o '^ *\(Compiling\|Installing\|Downloaded\|Building\) [^ ]*' "$log" | tail -n 1 | sed 's/^ *//' || true)
        if tail -n 1 "$log" | grep -q 'Blocking waiting for file lock'; then
            detail="waiting for a lock another cargo holds (target directory or package cache)"
        elif ((compiled > 0)); then
            total=${STEP_EXPECTED_CRATES:+/~$STEP_EXPECTED_CRATES}
            detail="$compiled$total crates compiled${now:+, now: ${now#Compiling }}"
        else
            detail="${now:-working}"
        fi
        echo "    $label $(elapsed)  $detail"
    done
}
report &
reporter=$!
trap 'kill "$reporter" 2>/dev/null || true' EXIT

status=0
"$@" >>"$log" 2>&1 || status=$?
kill "$reporter" 2>/dev/null || true

if ((status == 0)); then
    echo "    $label done in $(elapsed)"
else
    echo "!!! $what failed after $(elapsed) (exit $status). Last lines of ${log#"$root"/}:" >&2
    tail -n 40 "$log" | sed 's/^/    /' >&2
    exit "$status"
fi
