#!/usr/bin/env bash
# idm-web benchmark: wrk at 64 connections on the signup page and on the
# username-check endpoint (real slapd, SQLite, Redis, rq worker), and the time
# for 100 simultaneous activations to become LDAP accounts.
#
# Usage: bench/idm-web/run.sh [DURATION_SECONDS]   (default 20)
# Needs: wrk, slapd, redis-server (see scripts/test).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-20}"
CONNS=64
THREADS=2

[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p idm-web --example idm_bench
BIN=target/release/examples/idm_bench

fifo=$(mktemp -u)
mkfifo "$fifo"
# The environment lives while the fifo is held open.
exec 3<>"$fifo"
"$BIN" serve <&3 >"$fifo.out" 2>"$fifo.err" &
pid=$!
trap 'exec 3>&-; kill $pid 2>/dev/null || true; rm -f "$fifo" "$fifo.out" "$fifo.err"' EXIT
for _ in $(seq 1 300); do
  grep -q '^URL ' "$fifo.out" 2>/dev/null && break
  sleep 0.1
done
URL=$(awk '/^URL /{print $2}' "$fifo.out")
[ -n "$URL" ] || { cat "$fifo.err"; exit 1; }

report() { # name url
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$2")
  local rps p99 errors
  rps=$(awk '/^Requests\/sec/{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/{print $5}' <<<"$out")
  printf '%-22s requests/s=%-10s p99=%-9s non-2xx=%s\n' "$1" "$rps" "$p99" "${errors:-0}"
}

echo "# idm-web benchmark, $(nproc) cores, wrk -t$THREADS -c$CONNS -d${DURATION}s"
curl -fsS "$URL/signup" >/dev/null
report "GET /signup" "$URL/signup"
report "GET /api/v1/check" "$URL/api/v1/check?username=Bench%20User&shellname=bench-user"
kill $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
exec 3>&-
trap - EXIT
rm -f "$fifo" "$fifo.out" "$fifo.err"

echo "# 100 simultaneous activations (rq worker concurrency 16)"
"$BIN" activations 100 16
