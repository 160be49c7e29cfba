//! The monitor against real files, a real redis-server, real executables as
//! scheduler and restart command, and a real HTTP `/list`.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use common::{GRID_MANIFEST, Site, dead_backend, live_backend};
use forge_core::{Reloadable, Shutdown, StatusBoard};
use fred::prelude::*;
use webservicemonitor::config::SchedulerKind;
use webservicemonitor::proxy::HttpClient;
use webservicemonitor::template::ArgvTemplate;
use webservicemonitor::{Action, Monitor, MonitorConfig, PassReport, RunOptions};

fn monitor(site: &Site, config: MonitorConfig, holder: &str) -> Monitor {
    Monitor::new(
        Arc::new(config),
        site.store(),
        HttpClient::new(),
        holder.to_owned(),
    )
    .verbose(true)
}

fn action_of(r: &PassReport, tool: &str) -> Action {
    r.decisions
        .iter()
        .find(|d| d.tool == tool)
        .unwrap_or_else(|| panic!("no decision for {tool}: {r:#?}"))
        .action
}

fn reason_of(r: &PassReport, tool: &str) -> String {
    r.decisions
        .iter()
        .find(|d| d.tool == tool)
        .unwrap()
        .reason
        .clone()
}

/// Runs one pass the way the daemon does with `--once` (a fresh holder each
/// time, lease released at the end: like a monitor process started anew).
async fn run_once(config: MonitorConfig, site: &Site) -> PassReport {
    let board = StatusBoard::new("webservicemonitor", "test", "gen");
    webservicemonitor::run(
        Reloadable::new(config),
        site.store(),
        board,
        RunOptions {
            once: true,
            dry_run: false,
        },
        Shutdown::new(),
    )
    .await
}

#[tokio::test]
async fn restarts_what_is_down_and_leaves_the_rest_alone() {
    let mut site = Site::new().await;
    let alive = live_backend().await;
    // healthy: running, listed, backend answers
    site.add_tool("healthy", 50001, Some(GRID_MANIFEST));
    site.add_job(1, "lighttpd-healthy", "tools.healthy", "r");
    site.list("healthy");
    site.register("healthy", &alive).await;
    // missing job (and not listed)
    site.add_tool("missing", 50002, Some(GRID_MANIFEST));
    // job in Eqw, still listed with a registration
    site.add_tool("eqw", 50003, Some(GRID_MANIFEST));
    site.add_job(3, "lighttpd-eqw", "tools.eqw", "Eqw");
    site.list("eqw");
    site.register("eqw", &alive).await;
    // running, but absent from /list
    site.add_tool("unlisted", 50004, Some(GRID_MANIFEST));
    site.add_job(4, "lighttpd-unlisted", "tools.unlisted", "r");
    // kubernetes and no-web manifests are not ours
    site.add_tool("k8s", 50005, Some("backend: kubernetes\nweb: python3.11\n"));
    site.add_tool("noweb", 50006, Some("backend: gridengine\nversion: 3\n"));
    // a job of the right name but another owner doesn't count
    site.add_tool(
        "owned",
        50007,
        Some("web: uwsgi-python\nrelease: bullseye\n"),
    );
    site.add_job(7, "uwsgi-python-owned", "tools.someoneelse", "r");
    site.list("owned");

    let report = monitor(&site, site.monitor_config(), "a").pass(false).await;
    assert!(report.error.is_none(), "{report:#?}");
    assert_eq!(report.manifests_seen, 7);
    assert_eq!(action_of(&report, "healthy"), Action::Healthy);
    assert_eq!(action_of(&report, "missing"), Action::Restarted);
    assert_eq!(action_of(&report, "eqw"), Action::Restarted);
    assert!(
        reason_of(&report, "eqw").contains("error state Eqw"),
        "{report:#?}"
    );
    assert_eq!(action_of(&report, "unlisted"), Action::Restarted);
    assert!(reason_of(&report, "unlisted").contains("/list"));
    assert_eq!(action_of(&report, "k8s"), Action::Skipped);
    assert_eq!(action_of(&report, "noweb"), Action::Skipped);
    assert_eq!(action_of(&report, "owned"), Action::Restarted);
    assert_eq!(report.restarts_attempted, 4);
    assert_eq!(report.restarts_succeeded, 4);

    let mut restarts = site.restarts();
    restarts.sort();
    assert_eq!(
        restarts,
        [
            "tools.eqw --release=buster lighttpd",
            "tools.missing --release=buster lighttpd",
            "tools.owned --release=bullseye uwsgi-python",
            "tools.unlisted --release=buster lighttpd",
        ]
    );
    // The Eqw job's registration was stale: removed.
    assert!(site.routes("eqw").await.is_empty());
    assert_eq!(report.stale_routes_removed, 1);
    assert!(!site.routes("healthy").await.is_empty());
    // service.log written, owned by the tool.
    let log = site.service_log("missing");
    assert!(
        log.contains("job lighttpd-missing is not running; restarting"),
        "{log}"
    );
    assert!(log.contains("restart succeeded"), "{log}");
    let meta = std::fs::metadata(site.root.join("missing/service.log")).unwrap();
    assert_eq!(meta.uid(), 50002);
    assert!(site.service_log("healthy").is_empty());
    assert!(site.service_log("k8s").is_empty());
}

#[tokio::test]
async fn a_failed_restart_is_logged_and_counted() {
    let mut site = Site::new().await;
    site.add_tool("broken", 50001, Some(GRID_MANIFEST));
    std::fs::write(site.state.join("restart-fails"), "").unwrap();
    let report = monitor(&site, site.monitor_config(), "a").pass(false).await;
    assert_eq!(action_of(&report, "broken"), Action::RestartFailed);
    assert_eq!(report.restarts_failed, 1);
    assert!(
        site.service_log("broken").contains("restart failed"),
        "{}",
        site.service_log("broken")
    );
    assert!(reason_of(&report, "broken").contains("no such type"));
}

#[tokio::test]
async fn throttle_refuses_the_fourth_restart_even_after_a_monitor_restart() {
    let mut site = Site::new().await;
    site.add_tool("flappy", 50001, Some(GRID_MANIFEST));
    for i in 1..=3 {
        let r = run_once(site.monitor_config(), &site).await;
        assert_eq!(
            action_of(&r, "flappy"),
            Action::Restarted,
            "pass {i}: {r:#?}"
        );
    }
    // A fresh monitor (new process, new holder id, nothing in memory).
    let r = run_once(site.monitor_config(), &site).await;
    assert_eq!(action_of(&r, "flappy"), Action::Throttled, "{r:#?}");
    assert_eq!(r.restarts_throttled, 1);
    assert!(reason_of(&r, "flappy").contains("Throttled for 3 restarts in last 3600 seconds"));
    assert_eq!(site.restarts().len(), 3);
    let log = site.service_log("flappy");
    assert!(
        log.contains("Throttled for 3 restarts in last 3600 seconds"),
        "{log}"
    );
    // The throttle key lives in Redis with a TTL.
    let key = forge_core::RedisKey::MonitorRestarts(forge_core::ToolName::parse("flappy").unwrap())
        .to_key();
    let ttl: i64 = site.client.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
}

#[tokio::test]
async fn bad_manifests_are_skipped_with_a_clear_reason_and_the_pass_goes_on() {
    let mut site = Site::new().await;
    // owned by another uid
    let home = site.add_tool("foreign", 50001, None);
    std::fs::write(home.join("service.manifest"), GRID_MANIFEST).unwrap();
    std::os::unix::fs::chown(home.join("service.manifest"), Some(50002), Some(50002)).unwrap();
    // a symlink (to a manifest that would otherwise be fine)
    let home = site.add_tool("linked", 50003, None);
    let target = site.dir.path().join("elsewhere.manifest");
    std::fs::write(&target, GRID_MANIFEST).unwrap();
    std::os::unix::fs::chown(&target, Some(50003), Some(50003)).unwrap();
    std::os::unix::fs::symlink(&target, home.join("service.manifest")).unwrap();
    // invalid YAML
    site.add_tool(
        "garbled",
        50004,
        Some("web: [lighttpd\nbackend: gridengine\n"),
    );
    // unreadable as a file: a directory, and a FIFO
    let home = site.add_tool("dirmanifest", 50005, None);
    std::fs::create_dir(home.join("service.manifest")).unwrap();
    std::os::unix::fs::chown(home.join("service.manifest"), Some(50005), Some(50005)).unwrap();
    let home = site.add_tool("fifo", 50006, None);
    nix::unistd::mkfifo(
        &home.join("service.manifest"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::os::unix::fs::chown(home.join("service.manifest"), Some(50006), Some(50006)).unwrap();
    // a uid below the minimum
    site.add_tool("lowuid", 1000, Some(GRID_MANIFEST));
    // an unknown user
    let home = site.root.join("nouser");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("service.manifest"), GRID_MANIFEST).unwrap();
    // and one tool that does need a restart
    site.add_tool("good", 50007, Some(GRID_MANIFEST));

    let r = monitor(&site, site.monitor_config(), "a").pass(false).await;
    assert!(r.error.is_none(), "{r:#?}");
    assert_eq!(r.manifests_invalid, 7, "{r:#?}");
    for (tool, expect) in [
        (
            "foreign",
            "is owned by uid 50002, not by the tool's uid 50001",
        ),
        ("linked", "symbolic link"),
        ("garbled", "is not valid YAML"),
        ("dirmanifest", "not a regular file (a directory)"),
        ("fifo", "not a regular file (a FIFO)"),
        ("lowuid", "below the minimum tool uid 50000"),
        ("nouser", "no user \"tools.nouser\""),
    ] {
        assert_eq!(action_of(&r, tool), Action::Invalid, "{tool}");
        let reason = reason_of(&r, tool);
        assert!(reason.contains(expect), "{tool}: {reason}");
        assert!(
            reason.contains(&format!("{tool}/service.manifest")),
            "{tool}: {reason}"
        );
    }
    assert_eq!(action_of(&r, "good"), Action::Restarted);
    assert_eq!(site.restarts(), ["tools.good --release=buster lighttpd"]);
    // The symlink target was never written through.
    assert!(
        !site.root.join("linked/service.log").exists() || site.service_log("linked").is_empty()
    );
}

#[tokio::test]
async fn missing_data_means_no_restarts_and_the_daemon_continues() {
    let mut site = Site::new().await;
    site.add_tool("down", 50001, Some(GRID_MANIFEST));

    // /list never answers.
    let mut cfg = site.monitor_config();
    cfg.proxy.list_url = site.hanging_list_url.clone();
    cfg.proxy.timeout_ms = 300;
    let r = monitor(&site, cfg.clone(), "a").pass(false).await;
    let err = r.error.clone().unwrap();
    assert!(err.contains("timed out after 300 ms"), "{err}");
    assert!(site.restarts().is_empty());

    // The scheduler fails.
    std::fs::write(site.state.join("qstat-fails"), "").unwrap();
    let r = monitor(&site, site.monitor_config(), "a").pass(false).await;
    let err = r.error.clone().unwrap();
    assert!(
        err.contains("scheduler (gridengine)") && err.contains("commlib error"),
        "{err}"
    );
    assert!(site.restarts().is_empty());
    // The scheduler prints garbage.
    std::fs::remove_file(site.state.join("qstat-fails")).unwrap();
    let mut garbage = site.monitor_config();
    garbage.scheduler.gridengine.list =
        ArgvTemplate::new(vec!["/bin/echo".into(), "<job_info><job_list>".into()]);
    let r = monitor(&site, garbage, "a").pass(false).await;
    assert!(
        r.error
            .clone()
            .unwrap()
            .contains("cannot parse the job list"),
        "{r:#?}"
    );
    assert!(site.restarts().is_empty());

    // The daemon: first pass fails on /list, then the configuration is fixed
    // (as a reload would) and the next pass acts. The one-off monitor "a"
    // above hands its lease back first, as a stopping monitor does.
    site.store()
        .release_lease("webservicemonitor", "a")
        .await
        .unwrap();
    let live = Reloadable::new(cfg);
    let board = StatusBoard::new("webservicemonitor", "test", "gen");
    let shutdown = Shutdown::new();
    let daemon = tokio::spawn(webservicemonitor::run(
        Arc::clone(&live),
        site.store(),
        Arc::clone(&board),
        RunOptions::default(),
        shutdown.clone(),
    ));
    let mut saw_failure = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = board.status_json();
        if status["checks"]["pass"]["state"] == "degraded" {
            saw_failure = true;
            break;
        }
    }
    assert!(saw_failure, "{}", board.status_json());
    assert!(site.restarts().is_empty());
    live.replace(site.monitor_config());
    for _ in 0..100 {
        if !site.restarts().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(site.restarts(), ["tools.down --release=buster lighttpd"]);
    assert!(board.status_json()["last_pass_at"].as_u64().is_some());
    shutdown.trigger();
    let last = tokio::time::timeout(Duration::from_secs(10), daemon)
        .await
        .unwrap()
        .unwrap();
    assert!(last.active);
}

#[tokio::test]
async fn a_dead_backend_is_unregistered_and_restarted_after_n_passes() {
    let mut site = Site::new().await;
    let dead = dead_backend();
    site.add_tool("crashed", 50001, Some(GRID_MANIFEST));
    site.add_job(1, "lighttpd-crashed", "tools.crashed", "r");
    site.list("crashed");
    site.register("crashed", &dead).await;
    let mut cfg = site.monitor_config();
    cfg.health.failures_before_restart = 2;
    let m = monitor(&site, cfg, "a");

    let r = m.pass(false).await;
    assert_eq!(action_of(&r, "crashed"), Action::Suspect, "{r:#?}");
    assert!(reason_of(&r, "crashed").contains("1 of 2"));
    assert!(site.restarts().is_empty());
    assert_eq!(site.routes("crashed").await.len(), 1);

    let r = m.pass(false).await;
    assert_eq!(action_of(&r, "crashed"), Action::Restarted, "{r:#?}");
    assert!(reason_of(&r, "crashed").contains("did not answer 2 passes in a row"));
    assert_eq!(r.stale_routes_removed, 1);
    assert!(site.routes("crashed").await.is_empty());
    assert_eq!(site.restarts().len(), 1);

    // A backend that answers resets the count.
    let alive = live_backend().await;
    site.register("crashed", &dead).await;
    let _ = m.pass(false).await; // 1 of 2
    site.register("crashed", &alive).await;
    let r = m.pass(false).await;
    assert_eq!(action_of(&r, "crashed"), Action::Healthy, "{r:#?}");
    let key =
        forge_core::RedisKey::MonitorUnhealthy(forge_core::ToolName::parse("crashed").unwrap())
            .to_key();
    let n: Option<i64> = site.client.get(&key).await.unwrap();
    assert_eq!(n, None);
}

#[tokio::test]
async fn stale_route_removal_spares_a_fresh_registration() {
    let site = Site::new().await;
    site.register("tool", "http://10.0.0.5:34567").await;
    let store = site.store();
    let tool = forge_core::ToolName::parse("tool").unwrap();
    // The monitor saw the old backend; meanwhile the new job registered.
    site.register("tool", "http://10.0.0.6:40000").await;
    assert!(
        !store
            .remove_route_if(&tool, ".*", "http://10.0.0.5:34567")
            .await
            .unwrap()
    );
    assert_eq!(site.routes("tool").await[".*"], "http://10.0.0.6:40000");
    assert!(
        store
            .remove_route_if(&tool, ".*", "http://10.0.0.6:40000")
            .await
            .unwrap()
    );
    assert!(site.routes("tool").await.is_empty());
}

/// A canonical registration has a `redirect:` entry beside its route;
/// removing the stale route removes both, or `forgectl routes get` would
/// report the entry left behind as a stray redirect.
#[tokio::test]
async fn a_stale_canonical_route_leaves_no_redirect_entry() {
    let mut site = Site::new().await;
    let alive = live_backend().await;
    site.add_tool("eqw", 50003, Some(GRID_MANIFEST));
    site.add_job(3, "lighttpd-eqw", "tools.eqw", "Eqw");
    site.list("eqw");
    site.register_canonical("eqw", &alive).await;
    assert_eq!(site.redirects("eqw").await.len(), 1);

    let report = monitor(&site, site.monitor_config(), "a").pass(false).await;
    assert_eq!(action_of(&report, "eqw"), Action::Restarted, "{report:#?}");
    assert_eq!(report.stale_routes_removed, 1);
    assert!(site.routes("eqw").await.is_empty());
    assert!(
        site.redirects("eqw").await.is_empty(),
        "the stale route's redirect: entry was left behind: {:?}",
        site.redirects("eqw").await
    );
}

#[tokio::test]
async fn two_monitors_against_one_redis_only_one_acts() {
    let mut site = Site::new().await;
    for (i, t) in ["one", "two", "three"].iter().enumerate() {
        site.add_tool(t, 50001 + i as u32, Some(GRID_MANIFEST));
    }
    let a = monitor(&site, site.monitor_config(), "host-a");
    let b = monitor(&site, site.monitor_config(), "host-b");
    let (ra, rb) = tokio::join!(a.pass(false), b.pass(false));
    assert!(
        ra.active != rb.active,
        "exactly one active: {ra:#?} {rb:#?}"
    );
    assert_eq!(site.restarts().len(), 3);
    let (active, standby) = if ra.active { (&a, &b) } else { (&b, &a) };
    let holder: Option<String> = site
        .client
        .get("forge:lease:webservicemonitor")
        .await
        .unwrap();
    assert!(holder.is_some());
    // The standby stays standby while the lease is renewed.
    assert!(!standby.pass(false).await.active);
    assert!(active.pass(false).await.active);
    assert_eq!(site.restarts().len(), 6);
}

#[tokio::test]
async fn dry_run_decides_but_changes_nothing() {
    let mut site = Site::new().await;
    site.add_tool("down", 50001, Some(GRID_MANIFEST));
    site.add_tool("eqw", 50002, Some(GRID_MANIFEST));
    site.add_job(2, "lighttpd-eqw", "tools.eqw", "Eqw");
    site.list("eqw");
    site.register("eqw", &dead_backend()).await;
    let r = monitor(&site, site.monitor_config(), "a").pass(true).await;
    assert_eq!(action_of(&r, "down"), Action::WouldRestart);
    assert_eq!(action_of(&r, "eqw"), Action::WouldRestart);
    assert!(site.restarts().is_empty());
    assert!(site.service_log("down").is_empty());
    assert_eq!(site.routes("eqw").await.len(), 1);
    let t = |n: &str| forge_core::ToolName::parse(n).unwrap();
    for key in [
        forge_core::RedisKey::Lease("webservicemonitor".into()).to_key(),
        forge_core::RedisKey::MonitorRestarts(t("down")).to_key(),
        forge_core::RedisKey::MonitorRestarts(t("eqw")).to_key(),
        forge_core::RedisKey::MonitorUnhealthy(t("eqw")).to_key(),
    ] {
        let n: i64 = site.client.exists(&key).await.unwrap();
        assert_eq!(n, 0, "{key} written in a dry run");
    }
    assert!(
        r.render_text()
            .contains("down\twould_restart\tjob lighttpd-down is not running")
    );
}

#[tokio::test]
async fn the_command_scheduler_backend_reads_json() {
    let mut site = Site::new().await;
    site.add_tool("up", 50001, Some(GRID_MANIFEST));
    site.add_tool("err", 50002, Some(GRID_MANIFEST));
    site.list("up");
    site.list("err");
    site.register("up", &live_backend().await).await;
    std::fs::write(
        site.state.join("jobs.json"),
        r#"{"jobs": [{"id": 1, "name": "lighttpd-up", "owner": "tools.up", "state": "r"},
                     {"id": "2", "name": "lighttpd-err", "owner": "tools.err", "state": "Eqw"}]}"#,
    )
    .unwrap();
    let mut cfg = site.monitor_config();
    cfg.scheduler.backend = SchedulerKind::Command;
    cfg.scheduler.command.list = ArgvTemplate::new(vec![site.bin("jobs-json")]);
    cfg.scheduler.command.submit = ArgvTemplate::new(vec!["/bin/false".into()]);
    cfg.scheduler.command.stop = ArgvTemplate::new(vec!["/bin/false".into()]);
    cfg.validate().unwrap();
    let r = monitor(&site, cfg, "a").pass(false).await;
    assert!(r.error.is_none(), "{r:#?}");
    assert_eq!(action_of(&r, "up"), Action::Healthy);
    assert_eq!(action_of(&r, "err"), Action::Restarted);
}

#[tokio::test]
async fn the_binary_prints_dry_run_decisions() {
    let mut site = Site::new().await;
    site.add_tool("down", 50001, Some(GRID_MANIFEST));
    let cfg = site.monitor_config();
    let path = site.dir.path().join("webservicemonitor.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_webservicemonitor"))
        .arg("--config")
        .arg(&path)
        .arg("--dry-run")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("down\twould_restart\tjob lighttpd-down is not running"),
        "{stdout}"
    );
    assert!(site.restarts().is_empty());

    // A bad configuration fails at start-up with file:line.
    std::fs::write(&path, "[pass]\ninterval_secs = 0\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_webservicemonitor"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("webservicemonitor.toml:2") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_daemon_serves_health_and_stops_cleanly_on_sigterm() {
    let mut site = Site::new().await;
    site.add_tool("down", 50001, Some(GRID_MANIFEST));
    let mut cfg = site.monitor_config();
    let admin_port = forge_test_support::free_port();
    cfg.admin.listen = format!("127.0.0.1:{admin_port}");
    let path = site.dir.path().join("webservicemonitor.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_webservicemonitor"))
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if !site.restarts().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(site.restarts(), ["tools.down --release=buster lighttpd"]);
    // /healthz over real HTTP.
    let mut health = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", admin_port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            s.read_to_string(&mut health).await.unwrap();
            if health.contains("last_pass_at") {
                break;
            }
            health.clear();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(health.contains("\"active\":true"), "{health}");
    // Every metric the shipped Grafana dashboard queries is exported (the
    // pass above restarted one service; counters of what didn't happen are
    // there at 0), and so is the Redis master this process sees.
    let master = format!(
        "forge_redis_master{{master=\"127.0.0.1:{}\"}} 1",
        site.redis.port()
    );
    let mut metrics = String::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", admin_port))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        metrics.clear();
        s.read_to_string(&mut metrics).await.unwrap();
        if metrics.contains(&master) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(metrics.contains(&master), "{metrics}");
    let missing =
        forge_test_support::monitoring::missing_dashboard_metrics("webservicemonitor", &metrics);
    assert!(
        missing.is_empty(),
        "dashboard metrics not exported: {missing:?}\n{metrics}"
    );
    let holder: Option<String> = site
        .client
        .get("forge:lease:webservicemonitor")
        .await
        .unwrap();
    assert!(holder.is_some());

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let holder: Option<String> = site
        .client
        .get("forge:lease:webservicemonitor")
        .await
        .unwrap();
    assert_eq!(holder, None, "the lease is handed back on shutdown");
}

#[tokio::test]
async fn a_hanging_restart_command_is_killed_after_its_timeout() {
    let mut site = Site::new().await;
    site.add_tool("slow", 50001, Some(GRID_MANIFEST));
    let marker = site.dir.path().join("survived");
    let hang = site.dir.path().join("hang.sh");
    std::fs::write(
        &hang,
        format!("#!/bin/sh\nsleep 3\ntouch '{}'\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cfg = site.monitor_config();
    cfg.restart.command = ArgvTemplate::new(vec![hang.display().to_string()]);
    cfg.restart.timeout_secs = 1;
    let r = monitor(&site, cfg, "a").pass(false).await;
    assert_eq!(action_of(&r, "slow"), Action::RestartFailed);
    assert!(
        reason_of(&r, "slow").contains("did not finish within 1 s"),
        "{r:#?}"
    );
    assert!(
        site.service_log("slow")
            .contains("did not finish within 1 s")
    );
    // The whole process tree was killed: the script never got to its end.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!marker.exists());
}

#[tokio::test]
async fn redis_down_fails_the_pass_without_restarts() {
    let mut site = Site::new().await;
    site.add_tool("down", 50001, Some(GRID_MANIFEST));
    let mut cfg = site.monitor_config();
    cfg.redis = forge_core::redis::RedisSettings::for_url(&format!(
        "redis://127.0.0.1:{}",
        forge_test_support::free_port()
    ));
    cfg.redis.command_timeout_ms = 500;
    cfg.redis.connect_timeout_ms = 500;
    let path = site.dir.path().join("webservicemonitor.toml");
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_webservicemonitor"))
        .arg("--config")
        .arg(&path)
        .arg("--once")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("pass: FAILED: Redis: cannot take the lease"),
        "{stdout}"
    );
    assert!(site.restarts().is_empty());
}
