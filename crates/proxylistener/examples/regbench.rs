//! Registration benchmark: registrations per second and latency percentiles
//! of a `proxylistener` binary at several client concurrencies, against a
//! real redis-server, with every check a production registration passes:
//!
//! * the registrations are spread over `--tools` tools, each registering
//!   `.*` (what today's clients register) for its own backend, so the
//!   per-tool pattern budget holds;
//! * each backend is a real server (a listening socket in this process),
//!   and the identd answers per connection: a registration's client
//!   connection is bound first and its port entered in the identd's table
//!   under its tool's user, and each backend's port under its owner — so
//!   both the client's ident look-up and the backend ownership check (the
//!   daemon connects to the backend and asks who owns its server end) name
//!   the registering tool, as `oidentd` would with real tool users.
//!
//! Cells, interleaved `--repeat` times (medians reported): `hardened` (the
//! binary as shipped), `no memory` (`--toggle-memory`: the same binary with
//! `ownership.verified_ttl_ms = 0`, every registration probed), `ownership
//! off` (`--toggle-ownership`: the same binary with `ownership.verify =
//! false`) and `before` (`--before-bin`: a binary built from before the
//! checks being measured, same setup).
//!
//! Beside rate and latency, each level reports the daemon's CPU time per
//! acknowledged registration (utime + stime from `/proc/<pid>/stat`, less
//! sensitive to the machine's load than the rate) and the kernel's
//! `ListenOverflows` and `TCPSynRetrans` counters over the level (system
//! wide: a full accept queue drops SYNs, resent after a second).
//!
//! Every listener of the bench (the daemon's, the identd's, the backends')
//! has an accept queue of 1024 (`--backlog`).
//!
//! Run through `bench/proxylistener/run.sh`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use forge_test_support::{IdentAnswer, Identd, RedisServer, free_port, wait_for_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
struct Args {
    /// The proxylistener binary.
    #[arg(long)]
    bin: String,
    /// A binary built from before the checks being measured, run as the
    /// `before` cell with the same setup.
    #[arg(long)]
    before_bin: Option<String>,
    /// Also run the `ownership off` cell (`ownership.verify = false`).
    #[arg(long)]
    toggle_ownership: bool,
    /// Also run the `no memory` cell (`ownership.verified_ttl_ms = 0`).
    #[arg(long)]
    toggle_memory: bool,
    /// Accept queue of the daemon (`limits.listen_backlog`, ignored by
    /// binaries without it), the identd and the backends.
    #[arg(long, default_value_t = 1024)]
    backlog: u32,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Tools the registrations are spread over, each with its own backend.
    #[arg(long, default_value_t = 64)]
    tools: usize,
    /// Repetitions of every cell, interleaved.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

/// One way of running the daemon.
struct Cell {
    /// Its name in the report.
    name: &'static str,
    /// The binary.
    bin: String,
    /// Environment overrides.
    env: Vec<(&'static str, &'static str)>,
}

/// What one level of one cell measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Registrations answered `ok` per second.
    per_second: f64,
    /// Latency percentiles of the `ok` ones, ms.
    p50_ms: f64,
    p99_ms: f64,
    /// Anything but `ok`.
    failures: usize,
    /// The daemon's CPU time per `ok`, µs.
    cpu_us: f64,
    /// `TcpExt: ListenOverflows` over the level.
    listen_overflows: u64,
    /// `TcpExt: TCPSynRetrans` over the level.
    syn_retrans: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let redis = RedisServer::start().await.unwrap();
    let identd = Arc::new(
        Identd::start_with_backlog(IdentAnswer::Error("NO-USER".into()), args.backlog)
            .await
            .unwrap(),
    );

    // One backend server per tool, owned by that tool (says the identd).
    let mut backends = Vec::new();
    for t in 0..args.tools {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let listener = socket.listen(args.backlog).unwrap();
        let port = listener.local_addr().unwrap().port();
        identd.answer_for(port, IdentAnswer::User(format!("tools.bench{t}")));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    let _ = s.read(&mut byte).await;
                });
            }
        });
        backends.push(port);
    }
    let backends = Arc::new(backends);

    let mut cells = vec![Cell {
        name: "hardened",
        bin: args.bin.clone(),
        env: vec![],
    }];
    if args.toggle_memory {
        cells.push(Cell {
            name: "no memory",
            bin: args.bin.clone(),
            env: vec![("FORGE_PROXYLISTENER_OWNERSHIP__VERIFIED_TTL_MS", "0")],
        });
    }
    if args.toggle_ownership {
        cells.push(Cell {
            name: "ownership off",
            bin: args.bin.clone(),
            env: vec![("FORGE_PROXYLISTENER_OWNERSHIP__VERIFY", "false")],
        });
    }
    if let Some(before) = &args.before_bin {
        cells.push(Cell {
            name: "before",
            bin: before.clone(),
            env: vec![],
        });
    }

    let mut results: BTreeMap<(usize, usize), Vec<Measured>> = BTreeMap::new();
    let mut loads = Vec::new();
    for rep in 0..args.repeat {
        for (c, cell) in cells.iter().enumerate() {
            let out = Command::new("redis-cli")
                .args(["-p", &redis.port().to_string(), "FLUSHALL"])
                .output()
                .unwrap();
            assert!(out.status.success(), "FLUSHALL: {out:?}");
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let load = load.split_whitespace().next().unwrap_or("?").to_owned();
            eprintln!(
                "rep {} / {}, {}: load average {load}",
                rep + 1,
                args.repeat,
                cell.name
            );
            loads.push(load);
            let (port, admin) = (free_port(), free_port());
            let mut child = Command::new(&cell.bin)
                .args(["--redis", &redis.url()])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--listen-admin", &format!("127.0.0.1:{admin}")])
                .args(["--ident-port", &identd.port().to_string()])
                .env("FORGE_PROXYLISTENER_LIMITS__MAX_CONNECTIONS", "4096")
                .envs(cell.env.iter().copied())
                .envs(accepts_backlog(&cell.bin).then(|| {
                    (
                        "FORGE_PROXYLISTENER_LIMITS__LISTEN_BACKLOG",
                        args.backlog.to_string(),
                    )
                }))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let addr = forge_test_support::ports::loopback(port);
            wait_for_port(addr, Duration::from_secs(10)).await.unwrap();
            for &clients in &args.clients {
                let m = level(addr, child.id(), clients, &args, &identd, &backends).await;
                results.entry((clients, c)).or_default().push(m);
                // Let TIME_WAIT sockets and the daemon settle between levels.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    println!(
        "{} tools, {} × {} s per cell and level, cells interleaved, medians; load average at each cell's start: {}\n",
        args.tools,
        args.repeat,
        args.seconds,
        loads.join(", ")
    );
    println!(
        "| clients | cell | registrations/s | p50 ms | p99 ms | failures | registrations/s vs hardened | daemon CPU µs / registration | listen overflows | SYN retransmits |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &clients in &args.clients {
        let base = median(&results[&(clients, 0)], |m| m.per_second);
        for (c, cell) in cells.iter().enumerate() {
            let ms = &results[&(clients, c)];
            let rate = median(ms, |m| m.per_second);
            println!(
                "| {clients} | {} | {rate:.0} | {:.2} | {:.2} | {} | {:.3} | {:.0} | {} | {} |",
                cell.name,
                median(ms, |m| m.p50_ms),
                median(ms, |m| m.p99_ms),
                ms.iter().map(|m| m.failures).sum::<usize>(),
                rate / base,
                median(ms, |m| m.cpu_us),
                ms.iter().map(|m| m.listen_overflows).sum::<u64>(),
                ms.iter().map(|m| m.syn_retrans).sum::<u64>(),
            );
        }
    }
    drop(identd);
}

/// The median of `f` over `ms`.
fn median(ms: &[Measured], f: impl Fn(&Measured) -> f64) -> f64 {
    let mut xs: Vec<f64> = ms.iter().map(f).collect();
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Whether `bin` knows `limits.listen_backlog` (builds from before it
/// refuse unknown keys).
fn accepts_backlog(bin: &str) -> bool {
    Command::new(bin)
        .arg("--check-config")
        .env("FORGE_PROXYLISTENER_LIMITS__LISTEN_BACKLOG", "1024")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// utime + stime of process `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime is field 14, stime 15 (1-based); `rest` starts at field 3.
    let hz = 100.0; // USER_HZ on Linux
    (ticks(11) + ticks(12)) as f64 / hz
}

/// The kernel's `TcpExt` counters `ListenOverflows` and `TCPSynRetrans`.
fn tcp_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else {
        return (0, 0);
    };
    let get = |name: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    (get("ListenOverflows"), get("TCPSynRetrans"))
}

/// `clients` clients registering for `args.seconds`, client `i`'s `k`-th
/// registration for tool `(i + k * clients) % tools`.
async fn level(
    addr: SocketAddr,
    daemon: u32,
    clients: usize,
    args: &Args,
    identd: &Arc<Identd>,
    backends: &Arc<Vec<u16>>,
) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_seconds(daemon);
    let (overflows_before, retrans_before) = tcp_counters();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let stop = Arc::clone(&stop);
            let identd = Arc::clone(identd);
            let backends = Arc::clone(backends);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = Vec::new();
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let tool = (i + k * clients) % backends.len();
                    k += 1;
                    let request = format!("register\n.*\nhttp://127.0.0.1:{}\n", backends[tool]);
                    let t = Instant::now();
                    match one(addr, &identd, tool, request.as_bytes()).await {
                        Ok(r) if r == "ok" => latencies.push(t.elapsed()),
                        Ok(r) => failures.push(r),
                        Err(e) => failures.push(e),
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        for r in f {
            *reasons.entry(r).or_default() += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(daemon) - cpu_before;
    let (overflows_after, retrans_after) = tcp_counters();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    for (r, n) in &reasons {
        eprintln!("  {clients} clients: {n} × {r}");
    }
    Measured {
        per_second: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        failures: reasons.values().sum(),
        cpu_us: cpu * 1e6 / all.len().max(1) as f64,
        listen_overflows: overflows_after.saturating_sub(overflows_before),
        syn_retrans: retrans_after.saturating_sub(retrans_before),
    }
}

/// One registration for tool `tool` over a new connection whose port the
/// identd attributes to that tool.
async fn one(
    addr: SocketAddr,
    identd: &Identd,
    tool: usize,
    request: &[u8],
) -> Result<String, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    let _ = socket.set_reuseaddr(true);
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("bind: {e}"))?;
    let port = socket
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?
        .port();
    identd.answer_for(port, IdentAnswer::User(format!("tools.bench{tool}")));
    let mut s = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply))
        .await
        .map_err(|_| "reply timeout".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    Ok(reply)
}
