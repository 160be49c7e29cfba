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

# The per-request cost benches' fixture (cpu-cost.sh, instructions.sh): a Redis
# with $1 routes prefix:tool<i> → an nginx answering "routed", and an nginx
# "default" upstream. Sets REDIS, ROUTED and DEFAULT.
cost_fixture() {
    REDIS=$(free_port); ROUTED=$(free_port); DEFAULT=$(free_port)
    redis_start "$REDIS"
    nginx_start backend "
    server { listen 127.0.0.1:$ROUTED; location / { default_type text/plain; return 200 'routed\n'; } }
    server { listen 127.0.0.1:$DEFAULT; location / { default_type text/plain; return 200 'default\n'; } }
" ""
    wait_port "$ROUTED"
    python3 "$here/tools.py" load "$REDIS" "$1" "http://127.0.0.1:$ROUTED"
}

# A dynamicproxy configuration for the cost benches on stdout: plain HTTP on
# port $1, admin on $2, the fixture's Redis and default upstream, no rate
# limit, warnings only; $3 (optional) is appended TOML.
cost_proxy_conf() {
    printf 'listen_http = "127.0.0.1:%s"\nlisten_admin = "127.0.0.1:%s"\ndefault_upstream = "http://127.0.0.1:%s"\ndomains = ["toolforge.org"]\n[limits]\nrate_per_second = 0\n[redis]\nurl = "redis://127.0.0.1:%s"\n[log]\nfilter = "warn"\n%b' \
        "$1" "$2" "$DEFAULT" "$REDIS" "${3:-}"
}
