#!/usr/bin/env bash
# dynamicproxy HTTPS benchmark (issue 4): dynamicproxy's TLS listener against
# nginx static proxy_pass with the same certificate — TLS 1.3 only, HTTP/2 on,
# same machine, same run, loopback, same nginx backend, 10,000 routes loaded.
#
#  (1) keep-alive:      wrk -t2 -c64 --latency over https
#  (2) new connection:  the same with "Connection: close" — one full TLS 1.3
#                       handshake per request (wrk does not resume sessions),
#                       so req/s = handshakes/s
#  (3) HTTP/2:          h2load -t2 -c64 -m10 (req/s and mean latency)
#  (4) memory per idle TLS connection: N connections held open after one
#                       request each; RSS growth / N (dynamicproxy process;
#                       nginx master + workers)
#
# Usage: bench/dynamicproxy/run-tls.sh [duration_s=10] [reps=3] [connections=64] [idle_conns=3000]
# Needs: redis-server, nginx, wrk (built with OpenSSL), h2load (nghttp2-client),
# openssl, python3, and a release build (cargo build --release -p dynamicproxy)
# or DYNAMICPROXY_BIN pointing at one. Prints a markdown report; exits non-zero
# if any request got a non-2xx answer.
set -euo pipefail
DURATION=${1:-10}
REPS=${2:-3}
CONNS=${3:-64}
IDLE=${4:-3000}
ROUTES=10000
HOST=tool4242.toolforge.org
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# --- a throw-away CA and a *.toolforge.org certificate (ECDSA P-256), shared by both proxies
tls=$work/tls
mkdir -p "$tls"
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key" 2>/dev/null
openssl req -x509 -new -key "$work/ca.key" -days 2 -subj "/CN=forge bench CA" -out "$work/ca.crt" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$tls/toolforge.org.key"
openssl req -new -key "$tls/toolforge.org.key" -subj "/CN=*.toolforge.org" -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:*.toolforge.org,DNS:toolforge.org\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/ext.cnf"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/ext.cnf" -out "$work/leaf.crt" 2>/dev/null
cat "$work/leaf.crt" "$work/ca.crt" >"$tls/toolforge.org.crt"

REDIS=$(free_port); ROUTED=$(free_port); DEFAULT=$(free_port)
STATIC=$(free_port); DP=$(free_port); DPS=$(free_port); DP_ADMIN=$(free_port)

redis_start "$REDIS"

nginx_start backend "
    server { listen 127.0.0.1:$ROUTED; location / { default_type text/plain; return 200 'routed\n'; } }
    server { listen 127.0.0.1:$DEFAULT; location / { default_type text/plain; return 200 'default\n'; } }
"
# nginx 1.22: http2 is a listen parameter (the 'http2 on;' directive came in 1.25.1).
nginx_start static "
    upstream be { server 127.0.0.1:$ROUTED; keepalive 64; }
    server {
        listen 127.0.0.1:$STATIC ssl http2;
        ssl_certificate $tls/toolforge.org.crt;
        ssl_certificate_key $tls/toolforge.org.key;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection '';
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header Proxy '';
        }
    }
"
wait_port "$ROUTED"; wait_port "$STATIC"

python3 "$here/tools.py" load "$REDIS" "$ROUTES" "http://127.0.0.1:$ROUTED"

cat >"$work/dp.toml" <<CONF
listen_http = "127.0.0.1:$DP"
listen_https = "127.0.0.1:$DPS"
listen_admin = "127.0.0.1:$DP_ADMIN"
default_upstream = "http://127.0.0.1:$DEFAULT"
domains = ["toolforge.org"]
[tls]
dir = "$tls"
[limits]
# The nginx anchor runs without limit_req; one wrk client IP would otherwise
# be held to 100 r/s. The User-Agent check stays on (wrk sends one below).
rate_per_second = 0
[redis]
url = "redis://127.0.0.1:$REDIS"
[log]
filter = "warn"
CONF
"$bin" --config "$work/dp.toml" >"$work/dp.log" 2>&1 &
dp_pid=$!
pids+=($dp_pid)
wait_port "$DPS"
sleep 1

declare -A port=([static]=$STATIC [dp]=$DPS)
# sanity: both answer over TLS 1.3 with the routed backend, verifying the certificate
for s in static dp; do
    curl -sf --tlsv1.3 --cacert "$work/ca.crt" --resolve "$HOST:${port[$s]}:127.0.0.1" \
        "https://$HOST:${port[$s]}/" | grep -q routed || { echo "$s: https request not routed" >&2; exit 1; }
    curl -sf --http2 --cacert "$work/ca.crt" --resolve "$HOST:${port[$s]}:127.0.0.1" \
        -o /dev/null -w '%{http_version}' "https://$HOST:${port[$s]}/" | grep -q '^2' \
        || { echo "$s: no HTTP/2 by ALPN" >&2; exit 1; }
done

# wrk → "rps p50_ms p99_ms"   (args: port, extra wrk args...)
run_wrk() {
    local p=$1; shift
    wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: $HOST" -H "User-Agent: wrk" "$@" \
        "https://127.0.0.1:$p/" >"$work/wrk.out"
    if grep -q "Non-2xx" "$work/wrk.out" || ! grep -q "Requests/sec" "$work/wrk.out"; then
        echo "wrk saw non-2xx answers (or no answers) from port $p:" >&2
        cat "$work/wrk.out" >&2
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
err = re.search(r"Socket errors: (.*)", t)
print(rps, p50, p99, (err.group(1).replace(" ", "") if err else "none"))
PY
}

# h2load → "rps mean_ms"
run_h2() {
    h2load -t2 -c"$CONNS" -m10 -D "$DURATION" --warm-up-time=1 \
        -H ":authority: $HOST" -H "user-agent: h2load" "https://127.0.0.1:$1/" >"$work/h2.out" 2>&1
    python3 - "$work/h2.out" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", t)
if not m or int(m.group(2)) + int(m.group(3)) + int(m.group(4)) or int(m.group(1)) == 0:
    sys.exit("h2load saw non-2xx answers (or none):\n" + t)
if "TLS Protocol: TLSv1.3" not in t:
    sys.exit("h2load did not negotiate TLS 1.3:\n" + t)
rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", t).group(1))
mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", t).group(1)
n, u = re.match(r"([\d.]+)(us|ms|s)", mean).groups()
print(rps, float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u])
PY
}

# memory per idle TLS connection: N TLS 1.3 connections, one request each, held open —
# measured on fresh processes, before the load runs (afterwards both allocators hold
# freed connection memory that new connections reuse, hiding the cost)
cat >"$work/idle_tls.py" <<'PY'
import socket, ssl, sys, time
sys.path.insert(0, sys.argv[5])
from tools import rss_kib, http_get
port, n, pids, cafile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.set_alpn_protocols(["http/1.1"])
time.sleep(0.5)
before = rss_kib(pids)
conns = []
for i in range(n):
    host = "tool%d.toolforge.org" % (i % 1000)
    raw = socket.create_connection(("127.0.0.1", port))
    s = ctx.wrap_socket(raw, server_hostname=host)
    assert s.version() == "TLSv1.3", s.version()
    f = s.makefile("rb")
    status, _ = http_get(s, f, host)
    assert b" 200 " in status, status
    conns.append((s, f))
time.sleep(1.0)
after = rss_kib(pids)
print("%d %d %.0f" % (before, after, (after - before) * 1024 / n))
for s, f in conns:
    s.close()
PY
read -r idle_static_before idle_static_after idle_static_per < <(python3 "$work/idle_tls.py" "$STATIC" "$IDLE" "$(children "$static_pid")" "$work/ca.crt" "$here")
read -r idle_dp_before idle_dp_after idle_dp_per < <(python3 "$work/idle_tls.py" "$DPS" "$IDLE" "$dp_pid" "$work/ca.crt" "$here")

: >"$work/results"
for rep in $(seq "$REPS"); do
    for s in static dp; do
        echo "keepalive $s $(run_wrk "${port[$s]}")" >>"$work/results"
        echo "newconn $s $(run_wrk "${port[$s]}" -H "Connection: close")" >>"$work/results"
        echo "h2 $s $(run_h2 "${port[$s]}")" >>"$work/results"
    done
done
curl -sf "http://127.0.0.1:$DP_ADMIN/metrics" >/dev/null
rss_static=$(python3 "$here/tools.py" rss "$(children "$static_pid")")
rss_dp=$(python3 "$here/tools.py" rss "$dp_pid")

python3 - "$work/results" <<PY
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(mode, s, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == mode and r[1] == s)
names = {"static": "nginx static proxy_pass (anchor)", "dp": "dynamicproxy"}
errs = {(r[0], r[1]): r[5] for r in rows if len(r) > 5 and r[5] != "none"}
print("TLS 1.3 (ECDSA P-256 *.toolforge.org, same certificate for both), $REPS × ${DURATION}s per cell, interleaved, medians;")
print("wrk -t2 -c$CONNS over https (HTTP/1.1), h2load -t2 -c$CONNS -m10 (HTTP/2); $ROUTES routes in Redis; nginx worker_processes 2\n")
print("| case | proxy | req/s | p50 ms | p99 ms |")
print("|---|---|---:|---:|---:|")
for mode, label in (("keepalive", "keep-alive (HTTP/1.1)"), ("newconn", "new connection per request = handshakes/s")):
    for s in ("static", "dp"):
        print(f"| {label} | {names[s]} | {med(mode, s, 2):,.0f} | {med(mode, s, 3):.2f} | {med(mode, s, 4):.2f} |")
for s in ("static", "dp"):
    print(f"| HTTP/2, 10 streams per connection | {names[s]} | {med('h2', s, 2):,.0f} | mean {med('h2', s, 3):.2f} | — |")
print()
print("| measure | nginx | dynamicproxy | ratio | target | met |")
print("|---|---:|---:|---:|---|---|")
for mode, label in (("keepalive", "keep-alive req/s"), ("newconn", "handshakes/s (new connection per request)")):
    a, b = med(mode, "static", 2), med(mode, "dp", 2)
    print(f"| {label} | {a:,.0f} | {b:,.0f} | {b/a:.2f}× | ≥ 1× | {'yes' if b >= a else 'no'} |")
    a, b = med(mode, "static", 4), med(mode, "dp", 4)
    print(f"| {label.split(' ')[0]} p99 ms | {a:.2f} | {b:.2f} | {b/a:.2f}× | ≤ nginx | {'yes' if b <= a else 'no'} |")
a, b = med("h2", "static", 2), med("h2", "dp", 2)
print(f"| HTTP/2 req/s | {a:,.0f} | {b:,.0f} | {b/a:.2f}× | (none) | — |")
print(f"| memory per idle TLS connection ($IDLE held) | {$idle_static_per:,.0f} B | {$idle_dp_per:,.0f} B | {(format($idle_dp_per/$idle_static_per, '.2f') + '×') if $idle_static_per > 0 else '—'} | report | — |")
print()
print(f"- RSS after the runs: nginx master+workers {$rss_static/1024:.1f} MiB, dynamicproxy {$rss_dp/1024:.1f} MiB")
print(f"- idle TLS connections: nginx {$idle_static_before/1024:.1f} → {$idle_static_after/1024:.1f} MiB, dynamicproxy {$idle_dp_before/1024:.1f} → {$idle_dp_after/1024:.1f} MiB")
if errs:
    print(f"- wrk socket errors (per case/proxy, last rep seen): {errs}")
PY
