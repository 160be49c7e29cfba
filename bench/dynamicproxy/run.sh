#!/usr/bin/env bash
# dynamicproxy benchmark: (a) nginx + Lua doing today's per-request HGETALL,
# (b) nginx static proxy_pass (no lookup, the ceiling), (c) dynamicproxy —
# same machine, same run, loopback, same nginx backend, 10,000 routes loaded.
#
# Usage: bench/dynamicproxy/run.sh [duration_s=10] [reps=3] [connections=64]
# Needs: redis-server, nginx, libnginx-mod-http-lua, lua-nginx-redis, wrk,
# python3, and a release build (cargo build --release -p dynamicproxy) or
# DYNAMICPROXY_BIN pointing at one. With DYNAMICPROXY_BEFORE_BIN naming a
# dynamicproxy built from an earlier commit, a fourth cell (d) runs it with
# the same configuration, interleaved with the others: (c)/(d) is what the
# changes in between cost. Prints a markdown report.
set -euo pipefail
DURATION=${1:-10}
REPS=${2:-3}
CONNS=${3:-64}
ROUTES=10000
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

REDIS=$(free_port); ROUTED=$(free_port); DEFAULT=$(free_port)
LUA=$(free_port); STATIC=$(free_port); DP=$(free_port); DP_ADMIN=$(free_port)
BEFORE=$(free_port); BEFORE_ADMIN=$(free_port)
before_bin=${DYNAMICPROXY_BEFORE_BIN:-}

redis_start "$REDIS"

nginx_start backend "
    server { listen 127.0.0.1:$ROUTED; location / { default_type text/plain; return 200 'routed\n'; } }
    server { listen 127.0.0.1:$DEFAULT; location / { default_type text/plain; return 200 'default\n'; } }
" ""
nginx_start lua "
    lua_package_path '/usr/share/lua/5.1/?.lua;;';
    server {
        listen 127.0.0.1:$LUA;
        location / {
            set \$backend 'http://127.0.0.1:$DEFAULT';
            set \$redis_port $REDIS;
            access_by_lua_file $here/urlproxy.lua;
            proxy_pass \$backend;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header Proxy '';
        }
    }
" "load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
nginx_start static "
    upstream be { server 127.0.0.1:$ROUTED; keepalive 64; }
    server {
        listen 127.0.0.1:$STATIC;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection '';
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header Proxy '';
        }
    }
" ""
wait_port "$ROUTED"; wait_port "$LUA"; wait_port "$STATIC"

python3 "$here/tools.py" load "$REDIS" "$ROUTES" "http://127.0.0.1:$ROUTED"

dp_config() {
cat <<CONF
listen_http = "127.0.0.1:$1"
listen_admin = "127.0.0.1:$2"
default_upstream = "http://127.0.0.1:$DEFAULT"
domains = ["toolforge.org"]
[limits]
# The nginx anchors run without limit_req; one wrk client IP would otherwise
# be held to 100 r/s. The User-Agent check stays on (wrk sends one below).
rate_per_second = 0
[redis]
url = "redis://127.0.0.1:$REDIS"
[log]
filter = "warn"
CONF
}
dp_config "$DP" "$DP_ADMIN" >"$work/dp.toml"
"$bin" --config "$work/dp.toml" >"$work/dp.log" 2>&1 &
dp_pid=$!
pids+=($dp_pid)
wait_port "$DP"
sleep 1
dp_rss_loaded=$(python3 "$here/tools.py" rss "$dp_pid")
cells="lua static dp"
if [ -n "$before_bin" ]; then
    dp_config "$BEFORE" "$BEFORE_ADMIN" >"$work/before.toml"
    "$before_bin" --config "$work/before.toml" >"$work/before.log" 2>&1 &
    before_pid=$!
    pids+=($before_pid)
    wait_port "$BEFORE"
    cells="lua static dp before"
fi

# wrk → "rps p50_ms p99_ms"
run_wrk() {
    wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: $2" -H "User-Agent: wrk" "http://127.0.0.1:$1/" >"$work/wrk.out"
    if grep -q "Non-2xx" "$work/wrk.out"; then
        echo "wrk saw non-2xx answers from port $1 (a refused request is not a proxied one):" >&2
        grep "Non-2xx" "$work/wrk.out" >&2
        exit 1
    fi
    python3 - "$work/wrk.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", t).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", t).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if errs: print("non-2xx responses: " + errs.group(1), file=sys.stderr)
print(rps, p50, p99)
PY
}

declare -A port=([lua]=$LUA [static]=$STATIC [dp]=$DP [before]=$BEFORE)
declare -A host=([hit]="tool4242.toolforge.org" [miss]="nosuchtool.toolforge.org")
# sanity: each answers as expected
for s in $cells; do
    curl -sf -H "Host: ${host[hit]}" "http://127.0.0.1:${port[$s]}/" | grep -q routed || { echo "$s: hit not routed" >&2; exit 1; }
done
curl -sf -H "Host: ${host[miss]}" "http://127.0.0.1:$LUA/" | grep -q default
curl -sf -H "Host: ${host[miss]}" "http://127.0.0.1:$DP/" | grep -q default

: >"$work/results"
loads=""
for rep in $(seq "$REPS"); do
    loads="$loads $(cut -d' ' -f1 /proc/loadavg)"
    for scen in hit miss; do
        for s in $cells; do
            echo "$scen $s $(run_wrk "${port[$s]}" "${host[$scen]}")" >>"$work/results"
        done
    done
done
# dynamicproxy keeps histogram samples until /metrics is scraped (as
# Prometheus does every few seconds in production): scrape before measuring.
curl -sf "http://127.0.0.1:$DP_ADMIN/metrics" >/dev/null
rss_lua=$(python3 "$here/tools.py" rss "$(children "$lua_pid")")
rss_static=$(python3 "$here/tools.py" rss "$(children "$static_pid")")
rss_dp=$(python3 "$here/tools.py" rss "$dp_pid")
rss_before=0
[ -n "$before_bin" ] && rss_before=$(python3 "$here/tools.py" rss "$before_pid")

read -r lat_p50 lat_p99 < <(python3 "$here/tools.py" latency "$REDIS" "$DP" "http://127.0.0.1:$ROUTED" 200)
curl -sf "http://127.0.0.1:$DP_ADMIN/metrics" >/dev/null
read -r idle_before idle_after idle_per < <(python3 "$here/tools.py" idle "$DP" 10000 "$dp_pid")

python3 - "$work/results" <<PY
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
cells = "$cells".split()
med = {}
for scen in ("hit", "miss"):
    for s in cells:
        xs = [r for r in rows if r[0] == scen and r[1] == s]
        med[scen, s] = tuple(statistics.median(float(x[i]) for x in xs) for i in (2, 3, 4))
names = {"lua": "(a) nginx + Lua, HGETALL per request", "static": "(b) nginx static proxy_pass", "dp": "(c) dynamicproxy", "before": "(d) dynamicproxy before ($before_bin)"}
rss = {"lua": $rss_lua, "static": $rss_static, "dp": $rss_dp, "before": $rss_before}
print("$REPS × ${DURATION}s per cell, wrk -t2 -c$CONNS, $ROUTES routes in Redis, cells interleaved, medians; load average at the start of each repetition:$loads\n")
print("| scenario | proxy | req/s | p50 ms | p99 ms | RSS MiB after the run |")
print("|---|---|---:|---:|---:|---:|")
for scen in ("hit", "miss"):
    for s in cells:
        r, p50, p99 = med[scen, s]
        print(f"| {scen} | {names[s]} | {r:,.0f} | {p50:.2f} | {p99:.2f} | {rss[s]/1024:.1f} |")
print()
for scen in ("hit", "miss"):
    a, b, c = med[scen, "lua"], med[scen, "static"], med[scen, "dp"]
    print(f"- {scen}: dynamicproxy / (a) = **{c[0]/a[0]:.2f}×** (target ≥ 3×), dynamicproxy / (b) = **{c[0]/b[0]:.2f}×** (target ≥ 0.8×), p99 {c[2]:.2f} ms vs (a) {a[2]:.2f} ms (target ≤)")
    if "before" in cells:
        d = med[scen, "before"]
        print(f"- {scen}: (c) / (d) = **{c[0]/d[0]:.3f}×** req/s, p99 {c[2]:.2f} vs {d[2]:.2f} ms — what the changes since (d) cost")
    for s in cells:
        per = [float(r[2]) for r in rows if r[0] == scen and r[1] == s]
        print(f"  - {scen} {s} req/s per repetition: {', '.join(f'{x:,.0f}' for x in per)}")
print(f"- dynamicproxy RSS with $ROUTES routes loaded, before load: {$dp_rss_loaded/1024:.1f} MiB; after the runs: {rss['dp']/1024:.1f} MiB (target ≤ 50 MB)")
print(f"- idle keep-alive client connections: 10,000 held → RSS {$idle_before/1024:.1f} → {$idle_after/1024:.1f} MiB, **{$idle_per:.0f} bytes per connection** (target ≤ 4096)")
print(f"- route change visible (Redis HSET → first request routed by it), 200 changes: p50 **{$lat_p50:.2f} ms**, p99 **{$lat_p99:.2f} ms** (target p99 ≤ 50 ms)")
PY
