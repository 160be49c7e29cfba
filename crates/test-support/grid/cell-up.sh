#!/bin/bash
# Brings up a private single-host Son of Grid Engine cell for forge's tests:
# a qmaster and an execd on their own ports, the scheduler running every
# second, the `release` complex, and the web queues. Run by
# forge_test_support::GridCell with these variables set:
#
#   SGE_ROOT, SGE_CELL, SGE_QMASTER_PORT, SGE_EXECD_PORT
#   FORGE_GRID_DIR     the cell's private directory (spool, tmp)
#   FORGE_GRID_GID     first gid of the cell's gid_range (100 ids)
#   FORGE_GRID_QUEUES  queue names, space-separated
#   FORGE_GRID_EPILOG  the queues' epilog (or NONE)
#   FORGE_GRID_TERMINATE  the queues' terminate_method (SIGTERM, or NONE = SIGKILL)
#
# Known facts about Debian's SGE 8.1.9 this follows: the host name resolves to
# 127.0.0.1, which reads back as `localhost`, so the master calls itself
# `localhost` and the cell's host_aliases must map the host name to it; the
# default queue template names parallel environments that don't exist and a
# load threshold that alarms on a busy machine (both NONE here); cells side by
# side need their own ports, queue tmpdir and gid_range.
set -euo pipefail

D=$FORGE_GRID_DIR
C=$SGE_ROOT/$SGE_CELL
mkdir -p "$C/common" "$D/qmaster" "$D/execd" "$D/tmp"
chmod 1777 "$D/tmp"

cat >"$C/common/bootstrap" <<EOF
admin_user              none
default_domain          none
ignore_fqdn             true
spooling_method         classic
spooling_lib            libspoolc
spooling_params         $C/common;$D/qmaster
binary_path             /usr/sbin
qmaster_spool_dir       $D/qmaster
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
EOF
echo localhost >"$C/common/act_qmaster"
echo "localhost $(hostname)" >"$C/common/host_aliases"

sed -e "s|^execd_spool_dir.*|execd_spool_dir $D/execd|" \
    -e "s|^gid_range.*|gid_range $FORGE_GRID_GID-$((FORGE_GRID_GID + 99))|" \
    -e "s|^mailer.*|mailer /bin/true|" \
    -e "s|^min_uid.*|min_uid 1000|" \
    /usr/share/gridengine/default-configuration >"$D/global.conf"
/usr/lib/gridengine/spoolinit classic libspoolc "$C/common;$D/qmaster" init
/usr/lib/gridengine/spooldefaults configuration "$D/global.conf"
/usr/lib/gridengine/spooldefaults complexes /usr/share/gridengine/util/resources/centry
/usr/lib/gridengine/spooldefaults usersets /usr/share/gridengine/util/resources/usersets
/usr/lib/gridengine/spooldefaults managers root

/usr/sbin/sge_qmaster
for _ in $(seq 300); do
  qstat >/dev/null 2>&1 && break
  sleep 0.2
done
qstat >/dev/null || { echo "sge_qmaster did not answer; see $D/qmaster/messages" >&2; exit 1; }

qconf -as localhost >/dev/null
qconf -ah localhost >/dev/null 2>&1 || true
# The scheduler runs every second (15 s by default).
qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' >"$D/sched.conf"
qconf -Msconf "$D/sched.conf" >/dev/null
# `release=…` in the submit template is a site-defined complex.
qconf -sc | grep -v '^#' >"$D/complexes"
echo "release rel RESTRING == YES NO NONE 0" >>"$D/complexes"
qconf -Mc "$D/complexes" >/dev/null

cat >"$D/exechost.conf" <<EOF
hostname localhost
load_scaling NONE
complex_values release=buster
user_lists NONE
xuser_lists NONE
projects NONE
xprojects NONE
usage_scaling NONE
report_variables NONE
EOF
qconf -Ae "$D/exechost.conf" >/dev/null
/usr/sbin/sge_execd

for q in $FORGE_GRID_QUEUES; do
  sed -e "s|@QUEUE@|$q|" -e "s|@TMPDIR@|$D/tmp|" -e "s|@EPILOG@|$FORGE_GRID_EPILOG|" \
      -e "s|@TERMINATE@|$FORGE_GRID_TERMINATE|" >"$D/queue-$q.conf" <<'EOF'
qname @QUEUE@
hostlist localhost
seq_no 0
load_thresholds NONE
suspend_thresholds NONE
nsuspend 1
suspend_interval 00:05:00
priority 0
min_cpu_interval 00:05:00
processors UNDEFINED
qtype BATCH INTERACTIVE
ckpt_list NONE
pe_list NONE
rerun FALSE
slots 20
tmpdir @TMPDIR@
shell /bin/sh
prolog NONE
epilog @EPILOG@
shell_start_mode posix_compliant
starter_method NONE
suspend_method NONE
resume_method NONE
terminate_method @TERMINATE@
notify 00:00:60
owner_list NONE
user_lists NONE
xuser_lists NONE
subordinate_list NONE
complex_values NONE
projects NONE
xprojects NONE
calendar NONE
initial_state default
s_rt INFINITY
h_rt INFINITY
s_cpu INFINITY
h_cpu INFINITY
s_fsize INFINITY
h_fsize INFINITY
s_data INFINITY
h_data INFINITY
s_stack INFINITY
h_stack INFINITY
s_core INFINITY
h_core INFINITY
s_rss INFINITY
h_rss INFINITY
s_vmem INFINITY
h_vmem INFINITY
EOF
  qconf -Aq "$D/queue-$q.conf" >/dev/null
done

# Ready when the execd has reported and every queue can take jobs.
for _ in $(seq 300); do
  if qstat -f 2>/dev/null | grep -E '@localhost +B' | grep -qv -E ' [a-zA-Z]+ *$' \
     && ! qstat -f 2>/dev/null | grep -E '@localhost' | grep -q -- '-NA-'; then
    echo "cell $SGE_CELL up"
    exit 0
  fi
  sleep 0.2
done
echo "the execd never reported; see $D/execd/localhost/messages:" >&2
qstat -f >&2 || true
exit 1
