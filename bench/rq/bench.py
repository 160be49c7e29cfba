#!/usr/bin/env python3
"""No-op job throughput and enqueue->start latency: python-rq's forking Worker and
SimpleWorker vs forge's rq-worker, through the same Redis, in one run.

Usage: bench.py --redis-url URL --rq-worker PATH [--jobs 1000] [--latency-jobs 200] [--big 100000]
Prints a Markdown report on stdout.
"""
import argparse, os, signal, statistics, subprocess, sys, time
from datetime import datetime, timezone

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

HERE = os.path.dirname(os.path.abspath(__file__))
QUEUE = 'bench'


def parse_ts(raw):
    if not raw:
        return None
    s = raw.decode()
    fmt = '%Y-%m-%dT%H:%M:%S.%fZ' if '.' in s else '%Y-%m-%dT%H:%M:%SZ'
    return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc).timestamp()


def enqueue(conn, n):
    q = Queue(QUEUE, connection=conn, serializer=JSONSerializer)
    ids = []
    for start in range(0, n, 1000):
        batch = [Queue.prepare_data('forge.echo', result_ttl=3600) for _ in range(min(1000, n - start))]
        jobs = q.enqueue_many(batch)
        ids.extend(j.id for j in jobs)
    return ids


def worker_cmd(kind, url, rq_worker, burst):
    rq_bin = os.path.join(os.path.dirname(sys.executable), 'rq')
    if kind == 'rq-worker':
        return [rq_worker, '--redis', url, '--admin-listen', '', QUEUE]
    cmd = [rq_bin, 'worker', '--url', url, '--serializer', 'rq.serializers.JSONSerializer', '--quiet']
    if kind == 'python-rq SimpleWorker':
        cmd += ['-w', 'rq.worker.SimpleWorker']
    if burst:
        cmd.append('--burst')
    return cmd + [QUEUE]


def start(kind, url, rq_worker, burst=False):
    env = dict(os.environ, PYTHONPATH=os.path.join(HERE, 'pyjobs'),
               FORGE_RQ_WORKER_LOG__FILTER='warn')
    return subprocess.Popen(worker_cmd(kind, url, rq_worker, burst), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_finished(conn, n, timeout):
    deadline = time.time() + timeout
    while conn.zcard(f'rq:finished:{QUEUE}') < n:
        if time.time() > deadline:
            raise SystemExit(f'timeout: {conn.zcard(f"rq:finished:{QUEUE}")}/{n} finished')
        time.sleep(0.005)


def stamps(conn, ids, a, b):
    pipe = conn.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(f'rq:job:{i}', a, b)
    return [(parse_ts(x), parse_ts(y)) for x, y in pipe.execute()]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def vm_hwm_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return 0


def throughput(conn, kind, url, rq_worker, n):
    conn.flushall()
    ids = enqueue(conn, n)
    t0 = time.time()
    p = start(kind, url, rq_worker, burst=True)
    wait_finished(conn, n, 900)
    wall = time.time() - t0
    stop(p)
    st = stamps(conn, ids, 'started_at', 'ended_at')
    first = min(s for s, _ in st)
    last = max(e for _, e in st)
    return n / (last - first), n / wall


def latency(conn, kind, url, rq_worker, n):
    conn.flushall()
    p = start(kind, url, rq_worker)
    time.sleep(2.0)  # started and idle
    q = Queue(QUEUE, connection=conn, serializer=JSONSerializer)
    ids = []
    for _ in range(n):
        job = q.enqueue('forge.echo', result_ttl=3600)
        ids.append(job.id)
        while conn.hget(job.key, 'status') != b'finished':
            time.sleep(0.0005)
    stop(p)
    lat = [(s - e) * 1000 for e, s in stamps(conn, ids, 'enqueued_at', 'started_at')]
    return pct(lat, 50), pct(lat, 99)


def big(conn, url, rq_worker, n):
    conn.flushall()
    t = time.time()
    ids = enqueue(conn, n)
    enq = time.time() - t
    t0 = time.time()
    p = start('rq-worker', url, rq_worker)
    wait_finished(conn, n, 1800)
    wall = time.time() - t0
    hwm = vm_hwm_kib(p.pid)
    stop(p)
    st = stamps(conn, ids, 'started_at', 'ended_at')
    rate = n / (max(e for _, e in st) - min(s for s, _ in st))
    return enq, wall, rate, hwm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--redis-url', required=True)
    ap.add_argument('--rq-worker', required=True)
    ap.add_argument('--jobs', type=int, default=1000)
    ap.add_argument('--latency-jobs', type=int, default=200)
    ap.add_argument('--big', type=int, default=100000)
    a = ap.parse_args()
    conn = Redis.from_url(a.redis_url)
    kinds = ['python-rq Worker (forking)', 'python-rq SimpleWorker', 'rq-worker']
    rows = {}
    for k in kinds:
        rate, wall_rate = throughput(conn, k, a.redis_url, a.rq_worker, a.jobs)
        p50, p99 = latency(conn, k, a.redis_url, a.rq_worker, a.latency_jobs)
        rows[k] = (rate, wall_rate, p50, p99)
        print(f'# {k}: {rate:.0f} jobs/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms', file=sys.stderr)
    base = rows['python-rq SimpleWorker'][0]
    print(f'| worker | jobs/s ({a.jobs} no-op jobs, first start to last end) | jobs/s incl. worker start-up | vs SimpleWorker | enqueue→start p50 (idle) | p99 |')
    print('|---|---|---|---|---|---|')
    for k in kinds:
        rate, wall_rate, p50, p99 = rows[k]
        print(f'| {k} | {rate:,.0f} | {wall_rate:,.0f} | {rate / base:.1f}× | {p50:.2f} ms | {p99:.2f} ms |')
    if a.big:
        enq, wall, rate, hwm = big(conn, a.redis_url, a.rq_worker, a.big)
        print()
        print(f'rq-worker, {a.big:,} queued no-op jobs: drained in {wall:.1f} s ({rate:,.0f} jobs/s between first start '
              f'and last end), peak RSS {hwm / 1024:.1f} MiB (VmHWM); enqueueing them with python-rq took {enq:.1f} s.')


if __name__ == '__main__':
    main()
