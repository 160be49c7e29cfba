//! Acceptance tests of webservice-runner, portreleaser and the client
//! library against a real proxylistener (in-process), a real Redis and a real
//! identd. The web server is `python3 -m http.server`.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use forge_core::redis::RedisSettings;
use forge_core::{Reloadable, Shutdown};
use forge_test_support::{IdentAnswer, Identd, RedisServer, free_port};
use fred::prelude::*;
use tokio::process::Command;
use webservice_runner::client::{ClientError, RegistrationClient};

const RUNNER: &str = env!("CARGO_BIN_EXE_webservice-runner");
const RELEASER: &str = env!("CARGO_BIN_EXE_portreleaser");

struct Env {
    _redis: RedisServer,
    identd: Identd,
    addr: SocketAddr,
    db: Client,
    _dir: tempfile::TempDir,
    active_proxy: PathBuf,
    shutdown: Shutdown,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn env() -> Env {
    let redis = RedisServer::start().await.unwrap();
    let identd = Identd::start(IdentAnswer::User("tools.mytool".into()))
        .await
        .unwrap();
    let mut config = proxylistener::Config::default();
    config.ident.port = identd.port();
    config.redis = RedisSettings {
        command_timeout_ms: 1000,
        ..RedisSettings::for_url(&redis.url())
    };
    let store = proxylistener::RouteStore::connect(&config.redis).unwrap();
    assert!(store.wait_connected(Duration::from_secs(5)).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    tokio::spawn(proxylistener::run(
        listener,
        proxylistener::Context {
            config: Reloadable::new(config),
            store,
            pending: proxylistener::PendingChecks::default(),
        },
        shutdown.clone(),
    ));
    let db = RedisSettings::for_url(&redis.url()).client().unwrap();
    db.init().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let active_proxy = dir.path().join("active-proxy");
    std::fs::write(&active_proxy, format!("127.0.0.1:{}\n", addr.port())).unwrap();
    Env {
        _redis: redis,
        identd,
        addr,
        db,
        _dir: dir,
        active_proxy,
        shutdown,
    }
}

impl Env {
    async fn routes(&self) -> HashMap<String, String> {
        self.db.hgetall("prefix:mytool").await.unwrap()
    }

    fn runner(&self, port: u16, server: &str) -> Command {
        let mut c = Command::new(RUNNER);
        c.arg("--active-proxy")
            .arg(&self.active_proxy)
            .args(["--port", &port.to_string(), "--ready-timeout", "20"])
            .args(["--", "sh", "-c", server])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

fn http_server(delay: &str) -> String {
    format!("sleep {delay}; exec python3 -m http.server \"$PORT\" --bind 127.0.0.1")
}

async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn stderr_of(child: tokio::process::Child) -> (Option<i32>, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("runner exits")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn route_appears_after_listen_and_goes_when_the_server_exits() {
    let e = env().await;
    let port = free_port();
    // Listens after 1 s, exits with 124 after 3 s more.
    let server = "sleep 1; exec timeout 3 python3 -m http.server \"$PORT\" --bind 127.0.0.1";
    let child = e.runner(port, server).spawn().unwrap();
    let started = Instant::now();
    let mut seen = false;
    while started.elapsed() < Duration::from_secs(10) {
        let routes = e.routes().await;
        if let Some(url) = routes.get(".*") {
            assert_eq!(url, &format!("http://127.0.0.1:{port}"));
            assert!(listening(port).await, "registered before listening");
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "the route never appeared");
    let (code, stderr) = stderr_of(child).await;
    assert_eq!(code, Some(124), "{stderr}");
    assert!(e.routes().await.is_empty(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_and_removes_the_route() {
    let e = env().await;
    let port = free_port();
    let child = e.runner(port, &http_server("0")).spawn().unwrap();
    let pid = child.id().unwrap();
    let started = Instant::now();
    while e.routes().await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (code, stderr) = stderr_of(child).await;
    assert_eq!(code, Some(128 + 15), "{stderr}");
    assert!(stderr.contains("unregistered"), "{stderr}");
    assert!(e.routes().await.is_empty());
    assert!(!listening(port).await, "the server still runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_registration_exits_non_zero_with_the_reason() {
    let e = env().await;
    e.identd.set_default(IdentAnswer::User("root".into()));
    let port = free_port();
    let child = e.runner(port, &http_server("0")).spawn().unwrap();
    let (code, stderr) = stderr_of(child).await;
    assert_eq!(code, Some(77), "{stderr}");
    assert!(stderr.contains("not a tool account"), "{stderr}");
    assert!(e.routes().await.is_empty());
    assert!(!listening(port).await, "the server was left running");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoint_and_bad_file_have_their_own_codes() {
    let e = env().await;
    std::fs::write(&e.active_proxy, format!("127.0.0.1:{}\n", free_port())).unwrap();
    let (code, stderr) = stderr_of(e.runner(free_port(), &http_server("0")).spawn().unwrap()).await;
    assert_eq!(code, Some(69), "{stderr}");
    assert!(
        stderr.contains("no registration endpoint answered"),
        "{stderr}"
    );

    std::fs::write(&e.active_proxy, "a\nb\n").unwrap();
    let (code, stderr) = stderr_of(e.runner(free_port(), &http_server("0")).spawn().unwrap()).await;
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("active-proxy:2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_never_listens_is_not_registered() {
    let e = env().await;
    let mut c = Command::new(RUNNER);
    c.arg("--active-proxy")
        .arg(&e.active_proxy)
        .args(["--ready-timeout", "1", "--", "sleep", "30"])
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (code, stderr) = stderr_of(c.spawn().unwrap()).await;
    assert_eq!(code, Some(75), "{stderr}");
    assert!(e.routes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_active_proxy_means_just_run() {
    let e = env().await;
    std::fs::write(&e.active_proxy, "").unwrap();
    let mut c = Command::new(RUNNER);
    c.arg("--active-proxy")
        .arg(&e.active_proxy)
        .args(["--", "sh", "-c", "exit 3"])
        .stderr(Stdio::piped());
    let (code, stderr) = stderr_of(c.spawn().unwrap()).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("registration is disabled"), "{stderr}");
    let out = Command::new(RELEASER)
        .arg("--active-proxy")
        .arg(&e.active_proxy)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn portreleaser_is_safe_to_run_twice() {
    let e = env().await;
    let client = RegistrationClient::new(vec![e.addr.to_string()]);
    let done = client
        .register_self(".*", "http", 34567, false)
        .await
        .unwrap();
    assert_eq!(done.url, "http://127.0.0.1:34567");
    assert_eq!(e.routes().await.len(), 1);
    for _ in 0..2 {
        let out = Command::new(RELEASER)
            .env("FORGE_ACTIVE_PROXY", &e.active_proxy)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(e.routes().await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_tries_each_endpoint_and_reports_refusals() {
    let e = env().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let client = RegistrationClient::new(vec![dead.clone(), e.addr.to_string()]);
    let done = client
        .register_self(".*", "http", 40000, true)
        .await
        .unwrap();
    assert_eq!(done.endpoint, e.addr.to_string());
    let redirect: HashMap<String, String> = e.db.hgetall("redirect:mytool").await.unwrap();
    assert_eq!(
        redirect.get(".*").map(String::as_str),
        Some("mytool.toolforge.org")
    );

    let err = client
        .register(".*", "http://10.9.9.9:40000")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(_)), "{err}");
    assert!(
        err.reason().unwrap().contains("not this client's address"),
        "{err}"
    );

    let err = RegistrationClient::new(vec![dead])
        .unregister(".*")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
    assert_eq!(
        RegistrationClient::new(vec![]).unregister(".*").await,
        Err(ClientError::Disabled)
    );
}
