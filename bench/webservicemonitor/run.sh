#!/usr/bin/env bash
# One webservicemonitor pass over N tools (default 1000, 10000, 50000) with
# the scheduler (a qstat -xml document) and /list (a static HTTP file)
# answering, every tool healthy. Reports the pass time the monitor measures,
# the process wall time and peak RSS, for the probe modes `off` (today's
# checks: job state + /list) and `tcp` (plus one TCP health probe per tool and
# its Redis bookkeeping).
#
#   cargo build --release -p webservicemonitor
#   bench/webservicemonitor/run.sh [N ...]
#
# Needs redis-server, redis-cli, python3 and GNU time. Runs as any user
# (manifests are owned by the running user, mapped with users.source = "map").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
BIN=${BIN:-$repo/target/release/webservicemonitor}
REPEAT=${REPEAT:-3}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 50000)
[ -x "$BIN" ] || { echo "build first: cargo build --release -p webservicemonitor" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --maxclients 20000 --logfile "$work/redis.log" &
pids+=($!)
http_port=$(free_port)
mkdir -p "$work/www"
python3 -m http.server "$http_port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

uid=$(id -u)
printf "%-7s %-5s %12s %12s %12s %10s\n" tools probe "pass_ms(med)" "wall_s(med)" "maxrss_MiB" "restarts"
for n in "${sizes[@]}"; do
  root="$work/project-$n"
  python3 - "$n" "$root" "$work" "$uid" "$redis_port" <<'PY'
import json, os, sys
n, root, work, uid, rport = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
os.makedirs(root, exist_ok=True)
manifest = ("# This file is used by toollabs infrastructure.\n"
            "# Please do not edit manually at this time.\n"
            "backend: gridengine\nrelease: buster\nversion: 3\nweb: lighttpd\n")
jobs, listed, users, redis = [], {}, [], []
for i in range(n):
    t = f"tool{i:05d}"
    os.makedirs(f"{root}/{t}", exist_ok=True)
    with open(f"{root}/{t}/service.manifest", "w") as f:
        f.write(manifest)
    jobs.append(f"""    <job_list state="running">
      <JB_job_number>{100000 + i}</JB_job_number>
      <JAT_prio>0.25000</JAT_prio>
      <JB_name>lighttpd-{t}</JB_name>
      <JB_owner>tools.{t}</JB_owner>
      <state>r</state>
      <JAT_start_time>2026-11-20T10:11:12.000</JAT_start_time>
      <queue_name>webgrid-lighttpd@tools-sgewebgrid-lighttpd-0917.tools.eqiad1.wikimedia.cloud</queue_name>
      <slots>1</slots>
    </job_list>""")
    listed[t] = {"status": "active"}
    users.append(f'"tools.{t}" = {uid}')
    redis.append(f"HSET prefix:{t} .* http://127.0.0.1:{rport}")
with open(f"{work}/qstat-{n}.xml", "w") as f:
    f.write("<?xml version='1.0'?>\n<job_info>\n  <queue_info>\n" + "\n".join(jobs) +
            "\n  </queue_info>\n  <job_info>\n  </job_info>\n</job_info>\n")
with open(f"{work}/www/list-{n}", "w") as f:
    json.dump(listed, f)
with open(f"{work}/users-{n}.toml", "w") as f:
    f.write("\n".join(users) + "\n")
with open(f"{work}/redis-{n}.txt", "w") as f:
    f.write("\n".join(redis) + "\n")
PY
  redis-cli -p "$redis_port" flushall >/dev/null
  redis-cli -p "$redis_port" < "$work/redis-$n.txt" >/dev/null
  for probe in off tcp; do
    cfg="$work/monitor-$n-$probe.toml"
    cat > "$cfg" <<TOML
[tools]
root = "$root"
min_uid = 0
[users]
source = "map"
[scheduler]
backend = "gridengine"
[scheduler.gridengine]
list = ["cat", "$work/qstat-$n.xml"]
submit = ["true"]
stop = ["true"]
[proxy]
list_url = "http://127.0.0.1:$http_port/list-$n"
timeout_ms = 10000
[health]
probe = "$probe"
[restart]
command = ["true"]
[pass]
concurrency = 32
[redis]
url = "redis://127.0.0.1:$redis_port"
[log]
filter = "warn"
[users.map]
TOML
    cat "$work/users-$n.toml" >> "$cfg"
    passes=(); walls=(); rss=0; restarts=0
    for _ in $(seq "$REPEAT"); do
      out=$( { /usr/bin/time -f "TIME %e %M" "$BIN" --config "$cfg" --once; } 2>&1 )
      line=$(grep '^pass:' <<<"$out")
      passes+=("$(sed -E 's/.* ([0-9]+) ms$/\1/' <<<"$line")")
      restarts=$(sed -E 's/.* manifests \([0-9]+ invalid\), ([0-9]+) restarts.*/\1/' <<<"$line")
      read -r _ w m < <(grep '^TIME' <<<"$out")
      walls+=("$w"); [ "$m" -gt "$rss" ] && rss=$m
    done
    med() { printf "%s\n" "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    printf "%-7s %-5s %12s %12s %12s %10s\n" "$n" "$probe" "$(med "${passes[@]}")" "$(med "${walls[@]}")" "$((rss / 1024))" "$restarts"
  done
  rm -rf "$root"
done
