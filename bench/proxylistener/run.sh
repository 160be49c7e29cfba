#!/bin/sh
# Registrations per second and latency of proxylistener at 1, 16 and 256
# concurrent clients, against a real redis-server, with ident answered by a
# local test identd. Target: >= 5000 registrations/s at 16 clients.
#
# Usage: bench/proxylistener/run.sh [SECONDS_PER_LEVEL] [CLIENTS]
#   e.g. bench/proxylistener/run.sh 5 1,16,256
set -eu
cd "$(dirname "$0")/../.."
seconds="${1:-5}"
clients="${2:-1,16,256}"
cargo build --release -q -p proxylistener --bin proxylistener --example regbench
mkdir -p bench/results
out="bench/results/proxylistener-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# proxylistener registration benchmark ($(date -u +%FT%TZ), $(nproc) cores)"
  echo
  ./target/release/examples/regbench --bin ./target/release/proxylistener \
    --seconds "$seconds" --clients "$clients"
} | tee "$out"
echo "results: $out"
