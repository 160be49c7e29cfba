//! Registration benchmark: registrations per second and latency percentiles
//! of a `proxylistener` binary at several client concurrencies, against a
//! real redis-server, with ident answered by a local test identd.
//!
//! Run through `bench/proxylistener/run.sh`.

#![allow(clippy::unwrap_used)]

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
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let redis = RedisServer::start().await.unwrap();
    let identd = Identd::start(IdentAnswer::User("tools.bench".into()))
        .await
        .unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut child = Command::new(&args.bin)
        .args(["--redis", &redis.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--listen-admin", &format!("127.0.0.1:{admin}")])
        .args(["--ident-port", &identd.port().to_string()])
        .env("FORGE_PROXYLISTENER_LIMITS__MAX_CONNECTIONS", "4096")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = forge_test_support::ports::loopback(port);
    wait_for_port(addr, Duration::from_secs(10)).await.unwrap();

    println!(
        "| clients | registrations | seconds | registrations/s | p50 ms | p99 ms | failures |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &clients in &args.clients {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let request = format!("register\n^/c{i}/\nhttp://127.0.0.1:{}\n", 10_000 + i);
                    let mut latencies = Vec::new();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match one(addr, request.as_bytes()).await {
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
        let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
        for t in tasks {
            let (l, f) = t.await.unwrap();
            all.extend(l);
            for r in f {
                *reasons.entry(r).or_default() += 1;
            }
        }
        let failures: usize = reasons.values().sum();
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "| {clients} | {} | {elapsed:.1} | {:.0} | {:.2} | {:.2} | {failures} |",
            all.len(),
            all.len() as f64 / elapsed,
            pct(0.50),
            pct(0.99),
        );
        for (r, n) in &reasons {
            eprintln!("  {n} × {r}");
        }
        // Let TIME_WAIT sockets and the daemon settle between levels.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(identd);
}

async fn one(addr: std::net::SocketAddr, request: &[u8]) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
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
