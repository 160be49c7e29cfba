# Shared setup of the dynamicproxy benchmarks (sourced by run.sh and run-tls.sh):
# the release binary, a work directory removed on exit with every process started
# through `pids`, loopback port helpers, a throw-away redis-server and nginx
# instances. Expects `here` (this directory) to be set.
root=$(cd "$here/../.." && pwd)
bin=${DYNAMICPROXY_BIN:-$root/target/release/dynamicproxy}
[ -x "$bin" ] || { echo "build first: cargo build --release -p dynamicproxy" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# redis-server on port $1, nothing kept on disk
redis_start() {
    redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
    pids+=($!)
    wait_port "$1"
}

# nginx named $1 serving the http-block body $2 (main-context lines $3 first);
# its master's pid lands in ${1}_pid
nginx_start() {
    mkdir -p "$work/$1"
    cat >"$work/$1/nginx.conf" <<CONF
${3:-}
worker_processes 2;
error_log $work/$1/error.log warn;
pid $work/$1/nginx.pid;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $work/$1/body; proxy_temp_path $work/$1/proxy;
    fastcgi_temp_path $work/$1/fcgi; uwsgi_temp_path $work/$1/uwsgi; scgi_temp_path $work/$1/scgi;
    keepalive_requests 1000000;
$2
}
CONF
    nginx -p "$work/$1" -c "$work/$1/nginx.conf" -g 'daemon off;' >"$work/$1/out.log" 2>&1 &
    pids+=($!)
    eval "${1}_pid=$!"
}

# a process and its children, comma-separated (for ps/RSS sums)
children() { echo "$1,$(pgrep -d, -P "$1")"; }
