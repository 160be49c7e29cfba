//! The admin listener under attack: what a curious neighbour on the admin
//! network can do to any forge daemon through `forge_core::admin`.
//!
//! Threat model (docs/security.md): whoever reaches an admin listener may
//! read health, status and metrics, but must not change the daemon (switch
//! its log filter off and blind the access log) without the admin token, and
//! must never read a credential from `/status`, `/healthz` or
//! `--print-config`. Each test serves the real admin router on a loopback
//! port and talks HTTP/1.1 to it.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use forge_core::admin::{self, AdminToken, AdminTokenError, StatusBoard, install_admin_token};
use forge_core::config::{ConfigSource, Loaded};
use forge_core::lifecycle::Shutdown;
use forge_core::redis::RedisSettings;
use forge_core::telemetry::{LogControl, LogSettings, init_logging};
use forge_core::{CheckState, redact};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "0123456789abcdef-admin-token";

/// The process's one log control (a test binary has one global subscriber).
fn log_control() -> LogControl {
    static LOG: OnceLock<LogControl> = OnceLock::new();
    LOG.get_or_init(|| init_logging(&LogSettings::default()).expect("logging"))
        .clone()
}

/// An admin router for a fresh board, served on a loopback port.
async fn serve(board: Arc<StatusBoard>) -> (String, Shutdown) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = Shutdown::new();
    tokio::spawn(admin::serve(
        listener,
        admin::router(board),
        shutdown.clone(),
    ));
    (addr, shutdown)
}

/// One HTTP/1.1 request; the status code and the whole response text.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("the admin listener answers")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn board_with_logging() -> Arc<StatusBoard> {
    let board = StatusBoard::new("attacked", "0.0.0", "abc");
    board.set_log_control(log_control());
    board
}

// ---- changing endpoints -------------------------------------------------

#[tokio::test]
async fn neighbour_cannot_switch_logging_off_when_no_token_is_configured() {
    let board = board_with_logging();
    let before = log_control().filter();
    let (addr, shutdown) = serve(board).await;

    let (code, text) = request(&addr, "PUT", "/log-filter", &[], "off").await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("no admin token configured"), "{text}");
    assert_eq!(log_control().filter(), before, "the filter must not change");
    // Reading the filter stays open.
    let (code, _) = request(&addr, "GET", "/log-filter", &[], "").await;
    assert_eq!(code, 200);
    shutdown.trigger();
}

#[tokio::test]
async fn changing_the_log_filter_needs_the_right_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("  {TOKEN}\n")).unwrap();
    let board = board_with_logging();
    install_admin_token(&board, Some(&file)).unwrap();
    let before = log_control().filter();
    let (addr, shutdown) = serve(board).await;

    let (code, text) = request(&addr, "PUT", "/log-filter", &[], "off").await;
    assert_eq!(code, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{text}"
    );
    assert!(text.contains("Authorization: Bearer"), "{text}");

    let wrong = format!("Authorization: Bearer {TOKEN}x");
    let (code, text) = request(&addr, "PUT", "/log-filter", &[&wrong], "off").await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("does not match"), "{text}");

    let (code, text) = request(
        &addr,
        "PUT",
        "/log-filter",
        &["Authorization: Basic eDp5"],
        "off",
    )
    .await;
    assert_eq!(code, 401, "{text}");
    assert_eq!(
        log_control().filter(),
        before,
        "refused requests change nothing"
    );

    let right = format!("Authorization: Bearer {TOKEN}");
    let (code, text) = request(&addr, "PUT", "/log-filter", &[&right], &before).await;
    assert_eq!(code, 200, "{text}");
    // Read-only views need no token.
    for path in ["/healthz", "/status", "/metrics", "/log-filter"] {
        let (code, text) = request(&addr, "GET", path, &[], "").await;
        assert_eq!(code, 200, "{path}: {text}");
    }
    shutdown.trigger();
}

#[test]
fn unusable_token_files_are_refused_with_the_file_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let e = AdminToken::from_file(&missing).unwrap_err();
    assert!(matches!(e, AdminTokenError::Read { .. }));
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, " \n").unwrap();
    let e = AdminToken::from_file(&empty).unwrap_err();
    assert!(matches!(e, AdminTokenError::Empty { .. }), "{e}");

    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let e = AdminToken::from_file(&short).unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
    // The token never shows in Debug.
    let good = dir.path().join("good");
    std::fs::write(&good, TOKEN).unwrap();
    let t = AdminToken::from_file(&good).unwrap();
    assert!(!format!("{t:?}").contains(TOKEN));
    assert!(t.matches(TOKEN.as_bytes()));
    assert!(!t.matches(b"0123456789abcdef"));
}

// ---- credentials --------------------------------------------------------

#[tokio::test]
async fn status_and_healthz_never_show_a_password() {
    let board = StatusBoard::new("attacked", "0.0.0", "abc");
    let redis = RedisSettings::for_url("redis://:hunter2@127.0.0.1:6379/0");
    board.set_field("redis", redis.describe());
    board.set_field("database", "mysql://idm:s3cret-db@db.example.org/idm");
    board.set_check(
        "ldap",
        CheckState::Failing,
        "ldap://cn=admin:ldap-pw@ldap.example.org failed",
    );
    let (addr, shutdown) = serve(board).await;
    for path in ["/status", "/healthz"] {
        let (_, text) = request(&addr, "GET", path, &[], "").await;
        for secret in ["hunter2", "s3cret-db", "ldap-pw"] {
            assert!(!text.contains(secret), "{path} shows {secret}: {text}");
        }
    }
    let (_, text) = request(&addr, "GET", "/status", &[], "").await;
    assert!(text.contains("redis://:***@127.0.0.1:6379/0"), "{text}");
    assert!(text.contains("db.example.org"), "{text}");
    shutdown.trigger();
}

#[test]
fn redis_description_for_logs_hides_the_password() {
    let redis = RedisSettings::for_url("redis://forge:hunter2@10.0.0.1:6379");
    assert_eq!(redis.describe(), "redis://forge:***@10.0.0.1:6379");
    let bad = RedisSettings::for_url("http://forge:hunter2@10.0.0.1:6379");
    let e = bad.fred_config().unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert_eq!(
        redact::Redacted("smtp://u:mail-pw@mx:587").to_string(),
        "smtp://u:***@mx:587"
    );
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DaemonConfig {
    redis: RedisSettings,
    database: Database,
    ldap: Ldap,
    mail: Mail,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Database {
    url: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Ldap {
    bind_password: String,
    bind_password_file: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Mail {
    password: Option<String>,
    min_password_length: u32,
}

#[test]
fn print_config_redacts_every_credential() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("daemon.toml");
    std::fs::write(
        &path,
        r#"
[redis]
url = "redis://:hunter2@10.0.0.1:6379"
[database]
url = "mysql://idm:s3cret-db@db/idm"
[ldap]
bind_password = "ldap-pw"
bind_password_file = "/etc/forge/secrets/ldap"
[mail]
password = "mail-pw"
min_password_length = 12
"#,
    )
    .unwrap();
    let loaded: Loaded<DaemonConfig> = ConfigSource::new(Some(path), "").load().unwrap();
    let shown = loaded.to_toml();
    for secret in ["hunter2", "s3cret-db", "ldap-pw", "mail-pw"] {
        assert!(
            !shown.contains(secret),
            "--print-config shows {secret}:\n{shown}"
        );
    }
    // Everything else is still there to read.
    assert!(shown.contains("10.0.0.1:6379"), "{shown}");
    assert!(shown.contains("/etc/forge/secrets/ldap"), "{shown}");
    assert!(shown.contains("min_password_length = 12"), "{shown}");
    // The generation is of the real configuration, not the redacted one.
    assert_eq!(loaded.config.ldap.bind_password, "ldap-pw");
}
