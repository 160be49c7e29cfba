//! The `proxylistener` binary: flags, config errors, admin endpoint, SIGTERM.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::register;
use forge_test_support::{IdentAnswer, Identd, RedisServer, free_port, wait_for_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_proxylistener");

#[test]
fn help_and_config_errors() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--redis",
        "--listen",
        "--listen-admin",
        "--ident-port",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxylistener.toml");
    std::fs::write(
        &path,
        "[policy]\nmin_backend_port = 2000\nmax_backend_port = 1000\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxylistener.toml:3"), "{err}");

    std::fs::write(&path, "[ident]\nport = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxylistener.toml:2"), "{err}");
}

#[tokio::test]
async fn runs_serves_admin_and_stops_on_sigterm() {
    let redis = RedisServer::start().await.unwrap();
    let identd = Identd::start(IdentAnswer::User("tools.mytool".into()))
        .await
        .unwrap();
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let child = Command::new(BIN)
        .args(["--redis", &redis.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--listen-admin", &format!("127.0.0.1:{admin}")])
        .args(["--ident-port", &identd.port().to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Proc(child);
    let addr = forge_test_support::ports::loopback(port);
    wait_for_port(addr, Duration::from_secs(10)).await.unwrap();
    wait_for_port(
        forge_test_support::ports::loopback(admin),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    // A backend that listens, so the ownership check runs before `ok` (the
    // table identd names the same tool for it).
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_url = format!("http://{}", backend.local_addr().unwrap());
    assert_eq!(
        common::send_to(addr, &register(".*", &backend_url), None).await,
        "ok"
    );
    // Every metric the shipped Grafana dashboard queries is exported, and so
    // is the Redis master this process sees (it looks every 2 s; give it
    // time on a loaded machine).
    let master = format!(
        "forge_redis_master{{master=\"127.0.0.1:{}\"}} 1",
        redis.port()
    );
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(admin, "/metrics").await;
        if metrics.contains(&master) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metrics.contains(&master), "{metrics}");
    let missing =
        forge_test_support::monitoring::missing_dashboard_metrics("proxylistener", &metrics);
    assert!(
        missing.is_empty(),
        "dashboard metrics not exported: {missing:?}\n{metrics}"
    );
    let health = http_get(admin, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    child.sigterm();
    let status = child.wait(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // stderr is a file here, not a terminal: plain text, no ANSI colour
    // (a timer's or a daemon's output piped to mail or a file stays readable).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file: {text:?}"
    );
}

/// A neighbour on the admin network: reads `/status` and the logs for the
/// Redis password, and tries to switch the log filter off. The password is
/// nowhere; without an admin token file the change is refused (and the
/// start-up log says so); with one, only the right token changes it.
#[tokio::test]
async fn admin_hides_the_redis_password_and_needs_the_token_to_change() {
    const PASSWORD: &str = "hunter2-redis-pw";
    let redis = RedisServer::builder()
        .config(format!("requirepass {PASSWORD}"))
        .start()
        .await
        .unwrap();
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "proxylistener-admin-token-0123\n").unwrap();

    for with_token in [false, true] {
        let (port, admin) = (free_port(), free_port());
        let log = dir.path().join(format!("log-{with_token}"));
        let mut cmd = Command::new(BIN);
        cmd.args(["--redis", &url])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--listen-admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if with_token {
            cmd.env("FORGE_PROXYLISTENER_ADMIN_TOKEN_FILE", &token_file);
        }
        let mut child = Proc(cmd.spawn().unwrap());
        wait_for_port(
            forge_test_support::ports::loopback(admin),
            Duration::from_secs(30),
        )
        .await
        .unwrap();

        let status = http_get(admin, "/status").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(
            !status.contains(PASSWORD),
            "/status shows the password: {status}"
        );
        assert!(status.contains(":***@127.0.0.1"), "{status}");

        let refused = http_request(admin, "PUT", "/log-filter", &[], "off").await;
        if with_token {
            assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
            let wrong = http_request(
                admin,
                "PUT",
                "/log-filter",
                &["Authorization: Bearer nope"],
                "off",
            )
            .await;
            assert!(wrong.starts_with("HTTP/1.1 403"), "{wrong}");
            let ok = http_request(
                admin,
                "PUT",
                "/log-filter",
                &["Authorization: Bearer proxylistener-admin-token-0123"],
                "info,proxylistener=debug",
            )
            .await;
            assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        } else {
            assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
            assert!(refused.contains("no admin token configured"), "{refused}");
        }
        let filter = http_get(admin, "/log-filter").await;
        assert_eq!(
            filter.contains("proxylistener=debug"),
            with_token,
            "{filter}"
        );

        child.sigterm();
        child.wait(Duration::from_secs(30));
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !logged.contains(PASSWORD),
            "the log shows the password:\n{logged}"
        );
        assert!(logged.contains("proxylistener started"), "{logged}");
        assert_eq!(
            logged.contains("no admin token file configured"),
            !with_token,
            "{logged}"
        );
    }
}

/// A child process killed when dropped.
struct Proc(std::process::Child);

impl Proc {
    fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn http_request(port: u16, method: &str, path: &str, headers: &[&str], body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
