#!/bin/bash
# Runs the libFuzzer targets of a TSR_FUZZ build (make fuzz, make test).
# Usage: tests/fuzz/run.sh BUILD_DIR SECONDS [JOBS [TARGET...]]
# For each target (default: every <BUILD_DIR>/fuzz/fuzz_* binary): replays
# every input in BUILD_DIR/fuzz/regressions/<target> (written by
# make_seeds.py at build time), then fuzzes for SECONDS
# from the seeds and the corpus kept in BUILD_DIR (it grows from run to
# run). JOBS targets run at a time. Crash inputs go to
# BUILD_DIR/fuzz/artifacts/<target>/, logs to BUILD_DIR/fuzz/logs/; a
# dictionary BUILD_DIR/fuzz/seeds/<target>.dict is used when there. Exits
# non-zero when any target crashed, leaked, ran out of memory or time.
set -u

build=${1:?usage: run.sh BUILD_DIR SECONDS [JOBS [TARGET...]]}
seconds=${2:?usage: run.sh BUILD_DIR SECONDS [JOBS [TARGET...]]}
jobs=${3:-1}
shift $(($# < 3 ? $# : 3))
fuzz=$(cd "$build" && pwd)/fuzz

if [ $# -gt 0 ]; then
    targets="$*"
else
    targets=$(cd "$fuzz" && ls fuzz_* | sed 's/^fuzz_//')
fi

# Per input: 25 s and 2 GB at most, no single allocation over 1 GB; stderr
# of the library (the CLI readers' messages) is closed, sanitizer reports
# still reach the log.
common="-timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=1024 -close_fd_mask=2"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1

# The lines of a log that say what went wrong.
summarize() {
    grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz: |.*runtime error)' "$1" | head -5
}

run_one() {
    local t=$1 bin=$fuzz/fuzz_$1 log=$fuzz/logs/$1.log
    local regressions=$fuzz/regressions/$1 corpus=$fuzz/corpus/$1 seeds=$fuzz/seeds/$1
    local artifacts=$fuzz/artifacts/$1
    mkdir -p "$corpus" "$seeds" "$artifacts"
    : >"$log"
    if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
        if ! "$bin" $common -artifact_prefix="$artifacts/" "$regressions"/* >>"$log" 2>&1; then
            echo "fuzz_$t: FAILED replaying $regressions (log: $log)"
            summarize "$log"
            return 1
        fi
    fi
    local dict=()
    [ -f "$fuzz/seeds/$t.dict" ] && dict=(-dict="$fuzz/seeds/$t.dict")
    local dirs=("$corpus" "$seeds")
    [ -d "$regressions" ] && dirs+=("$regressions")
    local start=$SECONDS
    if ! "$bin" $common "${dict[@]}" -artifact_prefix="$artifacts/" -max_total_time="$seconds" \
        -print_final_stats=1 "${dirs[@]}" >>"$log" 2>&1; then
        echo "fuzz_$t: FAILED after $((SECONDS - start)) s; inputs in $artifacts (log: $log)"
        summarize "$log"
        return 1
    fi
    local execs corp
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corp=$(sed -n 's/.*DONE .*corp: \([^ ]*\).*/\1/p' "$log" | tail -1)
    echo "fuzz_$t: ok, $((SECONDS - start)) s, ${execs:-?} executions, corpus ${corp:-?} (files/bytes)"
}

mkdir -p "$fuzz/logs"
status=0
running=0
for t in $targets; do
    if [ ! -x "$fuzz/fuzz_$t" ]; then
        echo "fuzz_$t: no such target in $fuzz" >&2
        status=1
        continue
    fi
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || status=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || status=1
    running=$((running - 1))
done
exit $status
