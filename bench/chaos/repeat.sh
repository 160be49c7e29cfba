#!/bin/sh
# Runs a chaos scenario of crates/forgectl/tests/chaos.rs N times in a row and summarises the
# figures each run prints (its `SWITCH RESULT` / `CHAOS RESULT` lines): min, median, 95th
# percentile and max of every figure, the failed runs, and the load average at each run's start.
#
# Usage: bench/chaos/repeat.sh [-n RUNS] [-o DIR] [SCENARIO]
#   SCENARIO  the test's exact name (default: paused_master_loses_no_acknowledged_write;
#             also master_cut_off_from_replicas_and_sentinels_loses_no_acknowledged_write,
#             kill_the_master_under_load)
#   -n RUNS   how many runs (default 40)
#   -o DIR    where each run's output is kept (default target/chaos-runs/<scenario>-<time>)
# Needs what the chaos test needs (redis-server). Not part of scripts/test: it takes
# RUNS × ~20 s (kill_the_master_under_load: ~45 s), and its figures are for docs/ha.md.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
runs=40
out=
while getopts n:o: opt; do
    case $opt in
        n) runs=$OPTARG ;;
        o) out=$OPTARG ;;
        *) sed -n '2,13p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
scenario=${1:-paused_master_loses_no_acknowledged_write}
out=${out:-target/chaos-runs/$scenario-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
echo "building the chaos test…" >&2
cargo test -p forgectl --test chaos --no-run >"$out/build.log" 2>&1 || {
    tail -20 "$out/build.log" >&2
    exit 1
}
# The test executable, run directly (as `cargo test` does, from the package's directory), so
# that a build elsewhere in the workspace doesn't hold a run up on cargo's lock.
bin=$root/$(sed -n 's/.*Executable tests\/chaos.rs (\(.*\))$/\1/p' "$out/build.log" | tail -1)
[ -x "$bin" ] || { echo "no chaos test executable in $out/build.log" >&2; exit 1; }
command="$bin $scenario --exact --nocapture"
i=1
while [ "$i" -le "$runs" ]; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if (cd crates/forgectl && $command) >"$out/run-$i.log" 2>&1; then status=pass; else status=FAIL; fi
    # One record per run: its number, pass/FAIL, the load average, then every RESULT figure.
    figures=$(sed -n 's/^\(SWITCH\|CHAOS\) RESULT //p' "$out/run-$i.log" | tr '\n' ' ')
    echo "run=$i status=$status load=$load $figures" | tee -a "$out/runs.txt" >&2
    i=$((i + 1))
done
{
    echo "command: bench/chaos/repeat.sh -n $runs $scenario (each run: cargo test -p forgectl --test chaos $scenario -- --exact --nocapture)"
    echo "runs: $runs, scenario: $scenario, host: $(uname -n), $(nproc) cores"
    python3 - "$out/runs.txt" <<'PY'
import math, statistics, sys

records = []
for line in open(sys.argv[1]):
    rec = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    records.append(rec)
failed = [r["run"] for r in records if r.get("status") != "pass"]
print(f"failed runs: {len(failed)} of {len(records)}" + (f" (runs {', '.join(failed)})" if failed else ""))
keys = []
for r in records:
    for k in r:
        if k not in ("run", "status", "fault") and k not in keys:
            keys.append(k)
print()
print("| figure | runs | min | median | p95 | max |")
print("|---|---|---|---|---|---|")
for k in keys:
    values = []
    for r in records:
        try:
            values.append(float(r[k]))
        except (KeyError, ValueError):
            pass
    if not values:
        continue
    values.sort()
    p95 = values[max(0, math.ceil(0.95 * len(values)) - 1)]
    fmt = lambda v: f"{v:g}" if v == int(v) else f"{v:.3f}"
    print(f"| {k} | {len(values)} | {fmt(values[0])} | {fmt(statistics.median(values))} | {fmt(p95)} | {fmt(values[-1])} |")
PY
} | tee "$out/summary.md"
echo "per-run output: $out" >&2
