//! The Debian package built by `scripts/build-deb`: it lists every binary,
//! unit, timer and default configuration; it installs into and is removed
//! and purged from a scratch root cleanly (maintainer scripts included); the
//! default configurations it ships pass each daemon's `--check-config`.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use forge_deploy_tests::{
    BINARIES, DAEMONS, binary, profile_dir, repo_root, require_tool, run, run_ok, unit_files,
};

/// Builds the package from the binaries of this test's profile into `out`.
fn build_deb(out: &Path) -> PathBuf {
    require_tool("dpkg-deb");
    for b in BINARIES {
        binary(b);
    }
    let profile = profile_dir();
    let flag = match profile.file_name().and_then(|n| n.to_str()) {
        Some("release") => "--release",
        Some("debug") => "--debug",
        other => panic!("unexpected profile directory {other:?}"),
    };
    let result = run_ok(
        Command::new(repo_root().join("scripts/build-deb"))
            .args([flag, "--no-build", "--fast"])
            .arg("--target-dir")
            .arg(profile.parent().unwrap())
            .arg("--out")
            .arg(out),
    );
    let said = String::from_utf8_lossy(&result.stdout);
    let deb = PathBuf::from(
        said.lines()
            .last()
            .expect("build-deb prints the package path")
            .trim(),
    );
    assert!(deb.is_file(), "{} not built", deb.display());
    deb
}

fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .arg("--force-script-chrootless")
        .arg("--force-depends")
        .arg("--log=/dev/null");
    cmd
}

#[test]
fn package_lists_installs_and_removes_cleanly() {
    require_tool("dpkg");
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(&dir.path().join("out"));

    // Contents: every binary, unit and timer, default configs, docs.
    let contents = run_ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let listing = String::from_utf8_lossy(&contents.stdout);
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    let mut expected: Vec<String> = BINARIES.iter().map(|b| format!("./usr/bin/{b}")).collect();
    for u in unit_files() {
        expected.push(format!(
            "./lib/systemd/system/{}",
            u.file_name().unwrap().to_string_lossy()
        ));
    }
    for d in DAEMONS {
        expected.push(format!("./etc/forge/{d}.toml"));
    }
    for b in BINARIES {
        expected.push(format!("./usr/share/doc/forge/{b}.txt"));
        expected.push(format!("./usr/share/man/man1/{b}.1.gz"));
        expected.push(format!("./usr/share/bash-completion/completions/{b}"));
        expected.push(format!("./usr/share/zsh/vendor-completions/_{b}"));
    }
    expected.push("./usr/lib/forge/forge-job-status".into());
    expected.push("./usr/lib/sysusers.d/forge.conf".into());
    expected.push("./usr/share/forge/monitoring/forge-alerts.yml".into());
    expected.push("./usr/share/forge/monitoring/forge-alerts.test.yml".into());
    for d in DAEMONS {
        expected.push(format!("./usr/share/forge/monitoring/dashboards/{d}.json"));
    }
    for doc in [
        "installation.md",
        "configuration.md",
        "deployment.md",
        "runbook.md",
        "migration.md",
    ] {
        expected.push(format!("./usr/share/doc/forge/{doc}"));
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !paths.contains(&e.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from the package: {missing:?}\n{listing}"
    );

    // Control data: conffiles and maintainer scripts.
    let conffiles = run_ok(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    );
    let conffiles = String::from_utf8_lossy(&conffiles.stdout);
    for d in DAEMONS {
        assert!(
            conffiles
                .lines()
                .any(|l| l == format!("/etc/forge/{d}.toml")),
            "{conffiles}"
        );
    }
    let field = |f: &str| {
        let out = run_ok(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(f));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "forge");

    // The --help texts are real help, not errors.
    let help = dir.path().join("help");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&help));
    for b in BINARIES {
        let text =
            std::fs::read_to_string(help.join(format!("usr/share/doc/forge/{b}.txt"))).unwrap();
        assert!(text.contains("Usage"), "{b}.txt has no usage:\n{text}");
        // The man page is a real page of this binary, the completions name it.
        let man = help.join(format!("usr/share/man/man1/{b}.1.gz"));
        let page = run_ok(Command::new("gzip").arg("-dc").arg(&man));
        let page = String::from_utf8_lossy(&page.stdout);
        assert!(
            page.contains(&format!(".TH {b} 1")),
            "{b}.1 is no man page:\n{page}"
        );
        // Where a tool owner looks first: `man webservice` explains start/stop.
        if *b == "webservice" {
            assert!(
                page.contains("start") && page.contains("service.manifest"),
                "{page}"
            );
        }
        for (file, marker) in [
            (
                format!("usr/share/bash-completion/completions/{b}"),
                "complete",
            ),
            (format!("usr/share/zsh/vendor-completions/_{b}"), "#compdef"),
        ] {
            let text = std::fs::read_to_string(help.join(&file)).unwrap();
            assert!(text.contains(marker) && text.contains(b), "{file}:\n{text}");
        }
    }

    // Install into a scratch root.
    let root = dir.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    run_ok(dpkg(&root).arg("--install").arg(&deb));
    let status = run_ok(dpkg(&root).args(["--status", "forge"]));
    assert!(String::from_utf8_lossy(&status.stdout).contains("Status: install ok installed"));
    for b in BINARIES {
        assert!(root.join("usr/bin").join(b).is_file(), "{b} not installed");
    }
    for u in unit_files() {
        assert!(
            root.join("lib/systemd/system")
                .join(u.file_name().unwrap())
                .is_file()
        );
    }
    // postinst generated the idm-web token key.
    let token = std::fs::read_to_string(root.join("etc/forge/secrets/idm-web-token")).unwrap();
    assert_eq!(token.trim().len(), 64, "token {token:?}");

    // The shipped default configurations are valid as they are.
    for d in DAEMONS {
        let file = root.join(format!("etc/forge/{d}.toml"));
        let out = run(Command::new(binary(d))
            .arg("--config")
            .arg(&file)
            .arg("--check-config")
            .env(
                "FORGE_IDM_TOKENS__SECRET_FILE",
                root.join("etc/forge/secrets/idm-web-token"),
            ));
        assert!(
            out.status.success(),
            "default {d}.toml fails --check-config:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Remove: everything but conffiles goes.
    run_ok(dpkg(&root).args(["--remove", "forge"]));
    for b in BINARIES {
        assert!(!root.join("usr/bin").join(b).exists(), "{b} left behind");
    }
    for u in unit_files() {
        assert!(
            !root
                .join("lib/systemd/system")
                .join(u.file_name().unwrap())
                .exists()
        );
    }
    assert!(
        root.join("etc/forge/dynamicproxy.toml").is_file(),
        "conffiles stay until purge"
    );
    // Purge: nothing of forge is left.
    run_ok(dpkg(&root).args(["--purge", "forge"]));
    let left: Vec<PathBuf> = walk(&root)
        .into_iter()
        .filter(|p| !p.starts_with(root.join("var/lib/dpkg")))
        .filter(|p| p.is_file())
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn shell_scripts_parse() {
    let root = repo_root();
    for (shell, script) in [
        ("sh", "packaging/debian/postinst"),
        ("sh", "packaging/debian/prerm"),
        ("sh", "packaging/debian/postrm"),
        ("sh", "systemd/forge-job-status"),
        ("bash", "scripts/build-deb"),
    ] {
        run_ok(Command::new(shell).arg("-n").arg(root.join(script)));
    }
}
