#!/bin/sh
# Registrations per second and latency of proxylistener at several client
# concurrencies, against a real redis-server, with every check on: the
# registrations are spread over many tools (the per-tool pattern budget), each
# tool's backend is a real listening socket, and the identd answers per
# connection (client and backend ports each attributed to their tool), so the
# ident look-up and the backend ownership check both pass.
# Targets: >= 5000 registrations/s at 16 clients; >= 5000/s at 256 clients
# with p99 <= 100 ms and no more daemon CPU per registration than ~150 us.
#
# Cells, interleaved REPEAT times, medians: the binary as built ("hardened"),
# the same with ownership.verified_ttl_ms = 0 ("no memory": every
# registration's backend probed), with ownership.verify = false ("ownership
# off"), and, when BEFORE_BIN names one, a proxylistener built from an earlier
# commit ("before"). Each level also reports the daemon's CPU time per
# acknowledged registration and the kernel's ListenOverflows / TCPSynRetrans.
# Every listener's accept queue is BACKLOG (default 1024).
#
# Usage: [BEFORE_BIN=path] [TOOLS=64] [BACKLOG=1024] bench/proxylistener/run.sh [SECONDS_PER_LEVEL] [CLIENTS] [REPEAT]
#   e.g. bench/proxylistener/run.sh 5 1,16,256 3
set -eu
cd "$(dirname "$0")/../.."
seconds="${1:-5}"
clients="${2:-1,16,256}"
repeat="${3:-3}"
cargo build --release -q -p proxylistener --bin proxylistener --example regbench
mkdir -p bench/results
out="bench/results/proxylistener-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# proxylistener registration benchmark ($(date -u +%FT%TZ), $(nproc) cores)"
  echo
  ./target/release/examples/regbench --bin ./target/release/proxylistener \
    ${BEFORE_BIN:+--before-bin "$BEFORE_BIN"} --toggle-memory --toggle-ownership \
    --backlog "${BACKLOG:-1024}" \
    --tools "${TOOLS:-64}" --seconds "$seconds" --clients "$clients" --repeat "$repeat"
} | tee "$out"
echo "results: $out"
