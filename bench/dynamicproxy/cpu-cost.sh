#!/usr/bin/env bash
# What a change costs dynamicproxy per request, measured as proxy CPU time
# (utime + stime from /proc/<pid>/stat over a wrk run ÷ requests), which moves
# far less with the machine's load than req/s does. Runs the current release
# build (c) and DYNAMICPROXY_BEFORE_BIN (d), same configuration, 10,000 routes,
# plain HTTP keep-alive hits, cells interleaved.
#
# Usage: DYNAMICPROXY_BEFORE_BIN=path bench/dynamicproxy/cpu-cost.sh [duration_s=6] [reps=4]
# Prints one line per cell run: rep cell loadavg requests req/s cpu_us_per_request
set -euo pipefail
DURATION=${1:-6}
REPS=${2:-4}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
before=${DYNAMICPROXY_BEFORE_BIN:?set DYNAMICPROXY_BEFORE_BIN to the binary to compare with}
cost_fixture 10000
C=$(free_port); CA=$(free_port); D=$(free_port); DA=$(free_port)
cost_proxy_conf "$C" "$CA" >"$work/c.toml"; cost_proxy_conf "$D" "$DA" >"$work/d.toml"
"$bin" --config "$work/c.toml" >"$work/c.log" 2>&1 & cpid=$!; pids+=($cpid)
"$before" --config "$work/d.toml" >"$work/d.log" 2>&1 & dpid=$!; pids+=($dpid)
wait_port "$C"; wait_port "$D"; sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "rep cell loadavg requests req/s cpu_us_per_request"
for rep in $(seq "$REPS"); do
    for cell in c d; do
        if [ "$cell" = c ]; then p=$cpid; port=$C; else p=$dpid; port=$D; fi
        t0=$(ticks "$p")
        out=$(wrk -t2 -c64 -d"${DURATION}s" -H "Host: tool4242.toolforge.org" -H "User-Agent: wrk" "http://127.0.0.1:$port/")
        t1=$(ticks "$p")
        n=$(echo "$out" | awk '/requests in/ {print $1}')
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        echo "$rep $cell $(cut -d' ' -f1 /proc/loadavg) $n $rps $(python3 -c "print(round(($t1 - $t0) / $hz * 1e6 / $n, 2))")"
    done
done
