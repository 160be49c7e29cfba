//! The binary: `--help` explains, configuration errors name file:line and
//! exit 2, `--print-config` shows flags merged over the file.

#![allow(clippy::unwrap_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dynamicproxy");

#[test]
fn help_lists_the_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--redis",
        "--listen-http",
        "--listen-admin",
        "--default-upstream",
        "--domain",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn config_errors_name_the_line_and_flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dynamicproxy.toml");
    std::fs::write(
        &path,
        "default_upstream = \"http://127.0.0.1:9\"\n[routes]\nstartup = \"sometimes\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dynamicproxy.toml:3"), "{err}");

    std::fs::write(&path, "default_upstream = \"http://127.0.0.1:9\"\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--print-config",
            "--domain",
            "toolforge.org",
            "--redis",
            "redis://10.0.0.1:6380",
        ])
        .arg("--config")
        .arg(&path)
        .env("FORGE_PROXY_FORWARDED_FOR", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("domains = [\"toolforge.org\"]"),
        "{printed}"
    );
    assert!(printed.contains("redis://10.0.0.1:6380"), "{printed}");
    assert!(printed.contains("forwarded_for = true"), "{printed}");

    let out = Command::new(BIN).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default_upstream is required"));
}

/// The admin listener is not an open door: by default it listens on
/// loopback only, `--print-config` never shows the Redis password, and an
/// unusable admin token file stops the proxy at start with file:line.
#[test]
fn admin_listener_defaults_to_loopback_and_secrets_stay_hidden() {
    let out = Command::new(BIN)
        .args([
            "--print-config",
            "--default-upstream",
            "http://127.0.0.1:9",
            "--redis",
            "redis://forge:hunter2@10.0.0.1:6380",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("listen_admin = \"127.0.0.1:8081\""),
        "{printed}"
    );
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(
        printed.contains("redis://forge:***@10.0.0.1:6380"),
        "{printed}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dynamicproxy.toml");
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "default_upstream = \"http://127.0.0.1:9\"\nadmin_token_file = \"{}\"\n",
            token.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dynamicproxy.toml:2"), "{err}");
    assert!(err.contains("is empty"), "{err}");
}
