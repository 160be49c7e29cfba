//! Restarts that refuse no one, tested the way systemd's socket units do
//! them: the test holds the listening sockets and passes them (`LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`) to each new process of the real binary.
//! A load of fresh connections runs through two restarts — `SIGTERM`, the
//! old process drains and exits, a new one starts on the same sockets — and
//! sees no refused connection. Known gap, printed, not yet asserted: a few
//! requests (2 of ~870 here) are reset — connections the old process had
//! accepted but not yet read when its drain began are closed unread.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use forge_test_support::RedisServer;
use http_body_util::Full;
use hyper::Response;

const BIN: &str = env!("CARGO_BIN_EXE_dynamicproxy");

/// Starts the binary with `http` as descriptor 3 and `admin` as 4, named
/// as a socket unit's `FileDescriptorName=` names them. The shell moves the
/// sockets from stdin/stdout to 3 and 4 and sets `LISTEN_PID` to its own
/// pid, which `exec` hands to the binary — what systemd does in its child.
fn start(config: &Path, http: &TcpListener, admin: &TcpListener, log: &Path) -> Child {
    let script = "exec 3<&0 4>&1 </dev/null >/dev/null; \
                  LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=http:admin; \
                  export LISTEN_PID LISTEN_FDS LISTEN_FDNAMES; exec \"$0\" \"$@\"";
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new("/bin/sh")
        .args(["-c", script, BIN, "--config"])
        .arg(config)
        .stdin(Stdio::from(OwnedFd::from(http.try_clone().unwrap())))
        .stdout(Stdio::from(OwnedFd::from(admin.try_clone().unwrap())))
        .stderr(log)
        .spawn()
        .unwrap()
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// One request over a fresh connection; `Err` says how it failed.
fn one_request(addr: SocketAddr) -> Result<(), (bool, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| {
        (
            e.kind() == std::io::ErrorKind::ConnectionRefused,
            format!("connect: {e}"),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"GET /load HTTP/1.1\r\nHost: a.toolforge.org\r\nUser-Agent: t/1\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| (false, format!("write: {e}")))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| (false, format!("read: {e}")))?;
    let text = String::from_utf8_lossy(&out);
    if text.starts_with("HTTP/1.1 200") && text.ends_with("served") {
        Ok(())
    } else {
        Err((false, format!("answer: {text:?}")))
    }
}

/// Clients sending requests back to back until `stop`.
fn load(
    addr: SocketAddr,
    clients: usize,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|_| {
            let (tally, stop) = (Arc::clone(tally), Arc::clone(stop));
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match one_request(addr) {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Err((true, e)) => {
                            errors.push(e);
                            tally.refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err((false, e)) => {
                            errors.push(e);
                            tally.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                errors
            })
        })
        .collect()
}

/// `SIGTERM`, then waits for a clean exit.
async fn stop_gracefully(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// Waits until the load has had `more` further answers.
async fn answered(tally: &Tally, more: u64) {
    let target = tally.ok.load(Ordering::Relaxed) + more;
    eventually("the load is answered", || {
        let done = tally.ok.load(Ordering::Relaxed) >= target;
        async move { done }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_restarts_on_passed_sockets_refuse_no_connection() {
    let redis = RedisServer::start().await.unwrap();
    let backend =
        serve_backend(|_| async { Response::new(Full::new(Bytes::from_static(b"served"))) }).await;
    let dir = tempfile::tempdir().unwrap();
    // The sockets systemd would hold: bound once, for every process.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap();
    let config = dir.path().join("dynamicproxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen_http = \"{http_addr}\"\nlisten_admin = \"{}\"\ndefault_upstream = \"{backend}\"\n\
             domains = [\"toolforge.org\"]\n[server]\ndrain_timeout_ms = 20000\n[limits]\nrate_per_second = 0\n\
             [log]\nfilter = \"info\"\n\
             [redis]\nurl = \"{}\"\n",
            admin.local_addr().unwrap(),
            redis.url()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut proxy = start(&config, &http, &admin, &log);
    eventually("serving on the passed socket", || async move {
        request(http_addr, "a.toolforge.org", "/", "User-Agent: t/1\r\n")
            .await
            .status
            == 200
    })
    .await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(http_addr, 8, &tally, &stop);
    answered(&tally, 200).await;
    for _ in 0..2 {
        stop_gracefully(&mut proxy).await;
        proxy = start(&config, &http, &admin, &log);
        answered(&tally, 200).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for c in clients {
        errors.extend(c.join().unwrap());
    }
    stop_gracefully(&mut proxy).await;
    let (ok, refused, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!("through two restarts: {ok} answered, {refused} refused, {failed} failed");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if failed > 0 {
        eprintln!("failed: {:?}", &errors[..errors.len().min(10)]);
    }
    assert!(
        refused == 0,
        "{refused} refused, {failed} failed of {}: {:?}\nlog:\n{log_text}",
        ok + refused + failed,
        &errors[..errors.len().min(10)]
    );
    assert_eq!(
        log_text.matches("using the socket systemd passed").count(),
        6,
        "each of the three processes took both sockets:\n{log_text}"
    );
}
