#!/bin/sh
# rq benchmark: python-rq's forking Worker and SimpleWorker vs rq-worker on no-op jobs,
# same Redis, same run. Usage: bench/rq/run.sh [--jobs N] [--latency-jobs N] [--big N]
# Needs redis-server and python3; creates target/pyvenv with rq from PyPI if missing.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${FORGE_TEST_PYTHON:-$root/target/pyvenv/bin/python}
if [ ! -x "$py" ]; then
    python3 -m venv target/pyvenv && target/pyvenv/bin/pip install -q rq
    py=$root/target/pyvenv/bin/python
fi
# RQ_WORKER=/path/to/rq-worker skips the build.
bin=${RQ_WORKER:-}
if [ -z "$bin" ]; then
    cargo build --release -q -p rq-worker
    bin=$root/target/release/rq-worker
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" --daemonize yes --logfile "$dir/redis.log"
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
sleep 0.3
echo "python-rq $("$py" -c 'import rq; print(rq.__version__)'), redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), $(nproc) cores" >&2
"$py" bench/rq/bench.py --redis-url "redis://127.0.0.1:$port/0" --rq-worker "$bin" "$@"
