//! The binary end to end: one structured access-log line per request under
//! target `dynamicproxy::access`, and `SIGTERM` draining an in-flight
//! request before a clean exit.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use forge_test_support::{RedisServer, free_port};
use http_body_util::Full;
use hyper::Response;

const BIN: &str = env!("CARGO_BIN_EXE_dynamicproxy");

/// A backend: `/slow` answers after 1.5 s, anything else at once.
async fn slow_backend() -> String {
    serve_backend(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        Response::new(Full::new(Bytes::from_static(b"done")))
    })
    .await
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn access_log_lines_and_sigterm_drains_in_flight_requests() {
    let redis = RedisServer::start().await.unwrap();
    let backend = slow_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("dynamicproxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen_http = \"{http}\"\nlisten_admin = \"{admin}\"\ndefault_upstream = \"{backend}\"\ndomains = [\"toolforge.org\"]\n\
             [server]\ndrain_timeout_ms = 10000\n[access_log]\nmode = \"on\"\n[log]\nformat = \"json\"\nfilter = \"info\"\n\
             [redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut proc = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually("serving", || async move {
        tokio::net::TcpStream::connect(http).await.is_ok()
            && request(http, "a.toolforge.org", "/", "User-Agent: t/1\r\n")
                .await
                .status
                == 200
    })
    .await;

    // One JSON line per request, target dynamicproxy::access.
    let r = request(
        http,
        "tool.toolforge.org",
        "/hello?x=1",
        "User-Agent: t/1\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(http, "tool.toolforge.org", "/", "").await;
    assert_eq!(r.status, 403);
    let mut hello = None;
    let mut refused = None;
    eventually("access log lines", || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["target"] != "dynamicproxy::access" || v["fields"]["host"] != "tool.toolforge.org"
            {
                continue;
            }
            if v["fields"]["path"] == "/hello" {
                hello = Some(v.clone());
            } else if v["fields"]["status"] == 403 {
                refused = Some(v.clone());
            }
        }
        let done = hello.is_some() && refused.is_some();
        async move { done }
    })
    .await;
    let hello = hello.unwrap();
    let f = &hello["fields"];
    assert_eq!(f["status"], 200, "{hello}");
    assert_eq!(f["method"], "GET", "{hello}");
    assert_eq!(f["route"], "miss", "{hello}");
    assert_eq!(f["upstream"].as_str().unwrap(), backend, "{hello}");
    assert_eq!(f["bytes"], 4, "{hello}");
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0, "{hello}");
    assert!(f["upstream_ms"].as_f64().unwrap() >= 0.0, "{hello}");
    let refused = refused.unwrap();
    assert_eq!(refused["fields"]["route"], "own", "{refused}");

    // SIGTERM while a request is in flight: it completes, then a clean exit.
    let slow = tokio::spawn(async move {
        request(http, "a.toolforge.org", "/slow", "User-Agent: t/1\r\n").await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(proc.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "done");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = proc.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    // Not accepting any more.
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
}
