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
