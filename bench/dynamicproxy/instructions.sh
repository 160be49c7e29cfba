#!/usr/bin/env bash
# What a change costs dynamicproxy per request, counted in CPU instructions
# (valgrind's callgrind), which — unlike seconds — do not move with the
# machine's load: the same binary, configuration and requests count the same
# every run. Runs the current release build (c) and DYNAMICPROXY_BEFORE_BIN (d)
# under callgrind, same configuration, 10,000 routes, plain HTTP keep-alive
# hits; counting is switched on only for the load window (after start-up and
# the route table's full load), and the periodic full resync is pushed out of
# it (`routes.resync_interval_ms` = 1 h: under callgrind's ~50× slowdown a
# 30 s resync of 10,000 routes lands several times in the window and swamps
# the per-request figure), so the figure is instructions per request.
#
# Usage: DYNAMICPROXY_BEFORE_BIN=path bench/dynamicproxy/instructions.sh [requests=20000]
# Prints one line per cell: cell requests instructions instructions_per_request
# and leaves each cell's callgrind profile in bench/results/callgrind.<cell>
# (`callgrind_annotate bench/results/callgrind.c` shows where they went).
set -euo pipefail
REQUESTS=${1:-20000}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
before=${DYNAMICPROXY_BEFORE_BIN:?set DYNAMICPROXY_BEFORE_BIN to the binary to compare with}
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install valgrind" >&2; exit 1; }
results="$root/bench/results"; mkdir -p "$results"
cost_fixture 10000
echo "cell requests instructions instructions_per_request"
for cell in c d; do
    if [ "$cell" = c ]; then b=$bin; else b=$before; fi
    port=$(free_port); admin=$(free_port)
    cost_proxy_conf "$port" "$admin" '[routes]\nresync_interval_ms = 3600000\n' >"$work/$cell.toml"
    out="$results/callgrind.$cell"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$b" --config "$work/$cell.toml" >"$work/$cell.log" 2>&1 &
    vpid=$!; pids+=($vpid)
    for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.2; done
    # the table is loaded once the tool's route answers
    for _ in $(seq 600); do
        curl -s -A bench -H "Host: tool4242.toolforge.org" "http://127.0.0.1:$port/" | grep -q routed && break; sleep 0.5
    done
    python3 "$here/tools.py" requests "$port" 200 >/dev/null   # warm-up: connections, pools
    callgrind_control --instr=on "$vpid" >/dev/null
    python3 "$here/tools.py" requests "$port" "$REQUESTS" >/dev/null
    callgrind_control --instr=off "$vpid" >/dev/null
    kill "$vpid"; wait "$vpid" 2>/dev/null || true
    ir=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$cell $REQUESTS $ir $(python3 -c "print(round($ir / $REQUESTS))")"
done
