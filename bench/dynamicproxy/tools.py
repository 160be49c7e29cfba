#!/usr/bin/env python3
"""Helpers of the dynamicproxy benchmark: load routes into Redis, hold idle
keep-alive connections, measure route-change visibility. Standard library only."""
import socket, sys, time, statistics, os


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def read_reply(f):
    line = f.readline()
    t = line[:1]
    if t in (b"+", b"-", b":"):
        return line
    if t == b"$":
        n = int(line[1:])
        return f.read(n + 2) if n >= 0 else None
    if t == b"*":
        return [read_reply(f) for _ in range(int(line[1:]))]
    raise RuntimeError(line)


def redis_conn(port):
    s = socket.create_connection(("127.0.0.1", port))
    return s, s.makefile("rb")


def load(port, n, backend):
    """HSET prefix:tool<i> .* <backend> for i < n, pipelined."""
    s, f = redis_conn(port)
    batch = b""
    for i in range(n):
        batch += resp("HSET", "prefix:tool%d" % i, ".*", backend)
        if len(batch) > 64 * 1024:
            s.sendall(batch)
            batch = b""
    s.sendall(batch)
    s.sendall(resp("PING"))
    for _ in range(n + 1):
        read_reply(f)


def http_get(sock, f, host, path="/"):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: forge-bench\r\n\r\n" % (path, host)).encode())
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
    return status, f.read(length)


def change_latency(redis_port, proxy_port, routed_backend, rounds):
    """Redis write → first request routed by it, in ms (p50, p99)."""
    r, rf = redis_conn(redis_port)
    h = socket.create_connection(("127.0.0.1", proxy_port))
    h.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hf = h.makefile("rb")
    samples = []
    for i in range(rounds):
        host = "chg%d-%d.toolforge.org" % (os.getpid(), i)
        tool = host.split(".")[0]
        _, body = http_get(h, hf, host)
        assert body.strip() == b"default", body
        t0 = time.perf_counter()
        r.sendall(resp("HSET", "prefix:" + tool, ".*", routed_backend))
        read_reply(rf)
        while True:
            _, body = http_get(h, hf, host)
            if body.strip() == b"routed":
                break
            if time.perf_counter() - t0 > 10:
                raise SystemExit("route change not visible after 10 s")
        samples.append((time.perf_counter() - t0) * 1000)
        r.sendall(resp("DEL", "prefix:" + tool))
        read_reply(rf)
        time.sleep(0.01)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print("%.3f %.3f" % (p50, p99))


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open("/proc/%s/status" % pid) as st:
            for line in st:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def idle(proxy_port, n, pids):
    """Opens n keep-alive connections, one request each, then measures the
    RSS growth of pids per connection (bytes)."""
    pids = pids.split(",")
    time.sleep(0.5)
    before = rss_kib(pids)
    conns = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", proxy_port))
        f = s.makefile("rb")
        status, _ = http_get(s, f, "tool%d.toolforge.org" % (i % 1000))
        assert b" 200 " in status, status
        conns.append((s, f))
    time.sleep(1.0)
    after = rss_kib(pids)
    print("%d %d %.0f" % (before, after, (after - before) * 1024 / n))
    for s, f in conns:
        s.close()


def requests(proxy_port, n, host="tool4242.toolforge.org"):
    """n keep-alive GETs one after another on one connection; fails on a non-200."""
    h = socket.create_connection(("127.0.0.1", proxy_port))
    h.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hf = h.makefile("rb")
    for _ in range(n):
        status, _ = http_get(h, hf, host)
        assert b" 200 " in status, status
    h.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "load":
        load(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif cmd == "latency":
        change_latency(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    elif cmd == "requests":
        requests(int(sys.argv[2]), int(sys.argv[3]))
    elif cmd == "idle":
        idle(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif cmd == "rss":
        print(rss_kib(sys.argv[2].split(",")))
