//! The systemd units and timers in `systemd/`: they verify, they are
//! hardened to an exposure of at most 2.5 (the numbers recorded in
//! docs/deployment.md are the current ones), every daemon unit has readiness,
//! watchdog, reload and restart policy, and the timers' failure handling and
//! last-success export work.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::process::Command;

use forge_deploy_tests::{
    DAEMONS, TIMER_JOBS, exposure, repo_root, run_ok, unit_files, unit_values, verify_units,
};

fn unit_text(name: &str) -> String {
    let path = repo_root().join("systemd").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_unit_and_timer_is_present() {
    let names: Vec<String> = unit_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut expected: Vec<String> = DAEMONS.iter().map(|d| format!("{d}.service")).collect();
    for job in TIMER_JOBS {
        expected.push(format!("{job}.service"));
        expected.push(format!("{job}.timer"));
    }
    expected.push("forge-job-failed@.service".into());
    for e in &expected {
        assert!(names.contains(e), "systemd/{e} is missing (have {names:?})");
    }
}

#[test]
fn systemd_analyze_verify_passes_for_every_unit() {
    let units = unit_files();
    let v = verify_units(&units);
    assert!(
        v.clean(),
        "systemd-analyze verify complained about {units:?}:\n{}",
        v.messages
    );
}

#[test]
fn verify_check_catches_broken_units() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad-key.service");
    let text = unit_text("dynamicproxy.service").replace("Restart=on-failure", "Restart=sometimes");
    std::fs::write(&bad_key, text).unwrap();
    let v = verify_units(&[bad_key]);
    assert!(!v.clean(), "a bad Restart= value went unnoticed");

    let unknown = dir.path().join("unknown.service");
    let text =
        unit_text("rq-worker.service").replace("[Service]", "[Service]\nProtectEverything=yes");
    std::fs::write(&unknown, text).unwrap();
    assert!(
        !verify_units(&[unknown]).clean(),
        "an unknown key went unnoticed"
    );

    let timer = dir.path().join("broken.timer");
    std::fs::write(&timer, "[Timer]\nOnCalendar=dayly\n").unwrap();
    assert!(
        !verify_units(&[timer]).clean(),
        "a broken timer went unnoticed"
    );
}

#[test]
fn daemon_units_notify_watchdog_reload_and_restart() {
    for d in DAEMONS {
        let name = format!("{d}.service");
        let t = unit_text(&name);
        assert_eq!(unit_values(&t, "Type"), ["notify"], "{name}: Type");
        assert_eq!(
            unit_values(&t, "NotifyAccess"),
            ["main"],
            "{name}: NotifyAccess"
        );
        assert!(
            !unit_values(&t, "WatchdogSec").is_empty(),
            "{name}: WatchdogSec"
        );
        assert_eq!(
            unit_values(&t, "ExecReload"),
            ["/bin/kill -HUP $MAINPID"],
            "{name}: ExecReload"
        );
        assert_eq!(
            unit_values(&t, "Restart"),
            ["on-failure"],
            "{name}: Restart"
        );
        assert_eq!(
            unit_values(&t, "ProtectSystem"),
            ["strict"],
            "{name}: ProtectSystem"
        );
        assert_eq!(
            unit_values(&t, "NoNewPrivileges"),
            ["yes"],
            "{name}: NoNewPrivileges"
        );
        let exec = unit_values(&t, "ExecStart");
        assert!(
            exec.len() == 1
                && exec[0].starts_with(&format!("/usr/bin/{d} --config /etc/forge/{d}.toml")),
            "{name}: ExecStart {exec:?}"
        );
        assert!(
            unit_values(&t, "ExecStartPre")
                .iter()
                .any(|e| e.ends_with("--check-config")),
            "{name}: the configuration is checked before start"
        );
        let caps = unit_values(&t, "CapabilityBoundingSet");
        match *d {
            // Binds port 80/443: that capability and nothing else.
            "dynamicproxy" => {
                assert_eq!(caps, ["CAP_NET_BIND_SERVICE"], "{name}");
                assert_eq!(
                    unit_values(&t, "AmbientCapabilities"),
                    ["CAP_NET_BIND_SERVICE"],
                    "{name}"
                );
                assert_eq!(unit_values(&t, "User"), ["forge"], "{name}");
            }
            // Becomes tool users through sudo: root, with only the
            // identity-changing capabilities.
            "webservicemonitor" => {
                assert_eq!(
                    caps,
                    ["CAP_SETUID CAP_SETGID CAP_DAC_OVERRIDE CAP_CHOWN"],
                    "{name}"
                );
                assert_eq!(unit_values(&t, "AmbientCapabilities"), [""], "{name}");
            }
            _ => {
                assert_eq!(caps, [""], "{name}: no capabilities");
                assert_eq!(unit_values(&t, "User"), ["forge"], "{name}");
            }
        }
    }
}

#[test]
fn timers_are_daily_persistent_and_failures_are_handled() {
    for job in TIMER_JOBS {
        let timer = unit_text(&format!("{job}.timer"));
        assert_eq!(unit_values(&timer, "OnCalendar"), ["daily"], "{job}.timer");
        assert_eq!(unit_values(&timer, "Persistent"), ["true"], "{job}.timer");
        assert_eq!(
            unit_values(&timer, "WantedBy"),
            ["timers.target"],
            "{job}.timer"
        );
        let service = unit_text(&format!("{job}.service"));
        assert_eq!(unit_values(&service, "Type"), ["oneshot"], "{job}.service");
        assert_eq!(
            unit_values(&service, "OnFailure"),
            ["forge-job-failed@%N.service"],
            "{job}.service"
        );
        assert_eq!(
            unit_values(&service, "ExecStartPost"),
            ["+/usr/lib/forge/forge-job-status success %N"],
            "{job}.service"
        );
    }
    let sync = unit_text("idm-web-sync-username-block.service");
    assert!(unit_values(&sync, "ExecStart")[0].ends_with("sync-username-block"));
    let expire = unit_text("idm-web-expire-signups.service");
    assert!(unit_values(&expire, "ExecStart")[0].ends_with("expire-signups --days 5"));
    let handler = unit_text("forge-job-failed@.service");
    assert_eq!(
        unit_values(&handler, "ExecStart"),
        ["/usr/lib/forge/forge-job-status failure %i"]
    );
}

/// The exposure of every service unit in `systemd/` — daemons, timer jobs
/// and the failure handler alike: a unit added later is rated without
/// anyone remembering to list it.
fn exposures() -> Vec<(String, f64)> {
    unit_files()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, exposure(&p))
        })
        .collect()
}

#[test]
fn every_service_unit_rates_at_most_2_5_and_docs_record_it() {
    let docs = std::fs::read_to_string(repo_root().join("docs/deployment.md"))
        .expect("docs/deployment.md");
    let mut problems = Vec::new();
    let rated = exposures();
    assert!(
        rated.len() > DAEMONS.len() + TIMER_JOBS.len(),
        "every service unit, the failure handler included: {rated:?}"
    );
    for (name, e) in rated {
        eprintln!("{name}: exposure {e:.1}");
        if e > 2.5 {
            problems.push(format!("{name}: exposure {e:.1} > 2.5"));
        }
        let row = format!("| `{name}` | {e:.1} |");
        if !docs.contains(&row) {
            problems.push(format!(
                "docs/deployment.md lacks the row {row:?} (update the table)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn job_status_script_exports_success_and_failure_times() {
    let script = repo_root().join("systemd/forge-job-status");
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("textfile");
    std::fs::create_dir(&textfile).unwrap();
    let state = dir.path().join("state");
    let status = |outcome: &str| {
        run_ok(
            Command::new(&script)
                .args([outcome, "idm-web-expire-signups"])
                .env("FORGE_TEXTFILE_DIR", &textfile)
                .env("FORGE_JOB_STATE_DIR", &state),
        )
    };
    status("success");
    let prom =
        std::fs::read_to_string(textfile.join("forge_job_idm-web-expire-signups.prom")).unwrap();
    let value = |metric: &str, text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{metric}{{job=\"idm-web-expire-signups\"}} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{metric} missing in:\n{text}"))
    };
    assert!(value("forge_job_last_success_timestamp_seconds", &prom) > 1_600_000_000);
    assert_eq!(value("forge_job_last_failure_timestamp_seconds", &prom), 0);

    let out = status("failure");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("<2>forge job idm-web-expire-signups FAILED"),
        "{said}"
    );
    let prom =
        std::fs::read_to_string(textfile.join("forge_job_idm-web-expire-signups.prom")).unwrap();
    assert!(value("forge_job_last_failure_timestamp_seconds", &prom) > 1_600_000_000);
    assert!(value("forge_job_last_success_timestamp_seconds", &prom) > 1_600_000_000);
    // No leftovers from the atomic rename.
    assert_eq!(std::fs::read_dir(&textfile).unwrap().count(), 1);

    let bad = forge_deploy_tests::run(Command::new(&script).args(["maybe", "x"]));
    assert_eq!(bad.status.code(), Some(2));
    let bad = forge_deploy_tests::run(Command::new(&script).args(["success", "../etc"]));
    assert_eq!(bad.status.code(), Some(2));
}

/// The socket units (restarts that refuse no one, docs/deployment.md): each
/// names a daemon unit that exists, a listener name that daemon takes, and
/// the address its shipped configuration listens on.
#[test]
fn socket_units_match_their_daemon_and_its_default_address() {
    // (socket unit, service, FileDescriptorName, config file, key path)
    let expected = [
        (
            "dynamicproxy-http.socket",
            "dynamicproxy.service",
            "http",
            "dynamicproxy",
            "listen_http",
        ),
        (
            "dynamicproxy-https.socket",
            "dynamicproxy.service",
            "https",
            "dynamicproxy",
            "",
        ),
    ];
    let sockets: Vec<String> = unit_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".socket"))
        .collect();
    assert_eq!(sockets.len(), expected.len(), "socket units: {sockets:?}");
    for (socket, service, name, daemon, key) in expected {
        let t = unit_text(socket);
        assert_eq!(unit_values(&t, "Service"), [service], "{socket}");
        assert!(!unit_text(service).is_empty(), "{socket}: {service}");
        assert_eq!(unit_values(&t, "FileDescriptorName"), [name], "{socket}");
        assert_eq!(unit_values(&t, "WantedBy"), ["sockets.target"], "{socket}");
        let listen = unit_values(&t, "ListenStream");
        assert_eq!(listen.len(), 1, "{socket}: one address");
        if key.is_empty() {
            continue; // listen_https is unset by default
        }
        let config = std::fs::read_to_string(
            forge_deploy_tests::repo_root().join(format!("packaging/etc/{daemon}.toml")),
        )
        .unwrap();
        let (section, field) = key.rsplit_once('.').unwrap_or(("", key));
        let mut current = String::new();
        let configured = config.lines().find_map(|l| {
            let l = l.trim();
            if let Some(s) = l.strip_prefix('[') {
                current = s.trim_end_matches(']').to_owned();
                return None;
            }
            let (k, v) = l.split_once('=')?;
            (current == section && k.trim() == field).then(|| v.trim().trim_matches('"').to_owned())
        });
        assert_eq!(
            configured.as_deref(),
            Some(listen[0]),
            "{socket}: ListenStream= must be {daemon}.toml's {key}"
        );
    }
}
