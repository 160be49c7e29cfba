//! The `webservice` command against an executable scheduler (shell scripts
//! speaking `qstat -xml`, `qsub`, `qdel`), real files, real processes.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::Site;
use webservicemonitor::manifest::{self, MANIFEST_HEADER, Manifest};

async fn webservice(site: &Site, config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_webservice"))
        .arg("--config")
        .arg(config)
        .arg("--tool")
        .arg("mytool")
        .args(args)
        .current_dir(site.dir.path())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn setup() -> (Site, std::path::PathBuf) {
    let mut site = Site::new().await;
    site.add_tool(
        "mytool",
        50001,
        Some("# hand-written\nversion: 3\nsomething-else: kept\n"),
    );
    let path = site.dir.path().join("webservice.toml");
    std::fs::write(&path, toml::to_string(&site.webservice_config()).unwrap()).unwrap();
    (site, path)
}

fn manifest_text(site: &Site) -> String {
    std::fs::read_to_string(site.root.join("mytool/service.manifest")).unwrap()
}

#[tokio::test]
async fn start_then_stop_writes_and_clears_the_manifest_and_the_job() {
    let (site, cfg) = setup().await;
    let (ok, out, err) = webservice(
        &site,
        &cfg,
        &["--mem", "2G", "lighttpd", "start", "--foo", "bar"],
    )
    .await;
    assert!(ok, "{out} {err}");
    assert!(
        out.contains("Your job lighttpd-mytool has been submitted"),
        "{out}"
    );
    let jobs = site.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].1, "lighttpd-mytool");
    let qsub = std::fs::read_to_string(site.state.join("qsub.log")).unwrap();
    assert_eq!(
        qsub.trim(),
        "lighttpd-mytool tools.mytool lighttpd --foo bar"
    );

    let text = manifest_text(&site);
    assert!(text.starts_with(MANIFEST_HEADER), "{text}");
    let m = Manifest::parse(&text).unwrap();
    assert_eq!(m.web().as_deref(), Some("lighttpd"));
    assert_eq!(m.backend().as_deref(), Some("gridengine"));
    assert_eq!(m.release().as_deref(), Some("buster"));
    assert_eq!(m.memory().as_deref(), Some("2G"));
    assert_eq!(m.extra_args(), ["--foo", "bar"]);
    assert!(text.contains("something-else: kept"), "{text}");
    assert!(text.contains("version: 3"), "{text}");

    let (ok, out, _) = webservice(&site, &cfg, &["status"]).await;
    assert!(
        ok && out.contains("Your webservice of type lighttpd is running"),
        "{out}"
    );

    // A second start refuses to submit a second job.
    let (ok, _, err) = webservice(&site, &cfg, &["lighttpd", "start"]).await;
    assert!(!ok);
    assert!(err.contains("already running"), "{err}");
    assert_eq!(site.jobs().len(), 1);

    let (ok, out, err) = webservice(&site, &cfg, &["stop"]).await;
    assert!(ok, "{out} {err}");
    assert!(out.contains("Stopping webservice"), "{out}");
    assert!(site.jobs().is_empty(), "stop waits until the job is gone");
    let text = manifest_text(&site);
    let m = Manifest::parse(&text).unwrap();
    assert_eq!(m.web(), None);
    assert!(m.extra_args().is_empty() && m.memory().is_none());
    assert_eq!(m.backend().as_deref(), Some("gridengine"));
    assert!(text.contains("something-else: kept"));

    let (ok, out, _) = webservice(&site, &cfg, &["status"]).await;
    assert!(
        ok && out.contains("Your webservice is not running"),
        "{out}"
    );
    let (ok, out, _) = webservice(&site, &cfg, &["stop"]).await;
    assert!(ok && out.contains("not running"), "{out}");
}

#[tokio::test]
async fn restart_never_leaves_two_jobs() {
    let (site, cfg) = setup().await;
    let (ok, _, err) = webservice(&site, &cfg, &["uwsgi-python", "start"]).await;
    assert!(ok, "{err}");
    let first = site.jobs()[0].0.clone();

    // Watch the scheduler's state while restarts run (qdel takes a second to
    // really remove a job, as Grid Engine does).
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, max_seen) = (Arc::clone(&stop), Arc::clone(&max_seen));
        let jobs_dir = site.state.join("jobs");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = std::fs::read_dir(&jobs_dir).map(|d| d.count()).unwrap_or(0);
                max_seen.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    // Two restarts at once, plus the type taken from the manifest.
    let (a, b) = tokio::join!(
        webservice(&site, &cfg, &["restart"]),
        webservice(&site, &cfg, &["uwsgi-python", "restart"]),
    );
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert!(a.0, "{a:?}");
    assert!(b.0, "{b:?}");
    assert_eq!(max_seen.load(Ordering::Relaxed), 1, "never two jobs");
    let jobs = site.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_ne!(jobs[0].0, first);
    assert_eq!(jobs[0].1, "uwsgi-python-mytool");
    let qdel = std::fs::read_to_string(site.state.join("qdel.log")).unwrap();
    assert_eq!(qdel.lines().count(), 2, "{qdel}");
}

#[tokio::test]
async fn start_refuses_when_a_job_in_error_state_exists_and_bad_types() {
    let (site, cfg) = setup().await;
    site.add_job(7, "lighttpd-mytool", "tools.mytool", "Eqw");
    let (ok, _, err) = webservice(&site, &cfg, &["lighttpd", "start"]).await;
    assert!(!ok);
    assert!(
        err.contains("state Eqw") && err.contains("not submitting a second job"),
        "{err}"
    );
    let (ok, out, _) = webservice(&site, &cfg, &["lighttpd", "status"]).await;
    assert!(ok && out.contains("error state Eqw"), "{out}");
    // restart deals with it: the error job is deleted, then a new one submitted.
    let (ok, out, err) = webservice(&site, &cfg, &["lighttpd", "restart"]).await;
    assert!(ok, "{out} {err}");
    let jobs = site.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].2, "r");

    let (ok, _, err) = webservice(&site, &cfg, &["nginx-deluxe", "start"]).await;
    assert!(!ok);
    assert!(
        err.contains("unknown web service type \"nginx-deluxe\"") && err.contains("lighttpd"),
        "{err}"
    );
    let (ok, _, err) = webservice(&site, &cfg, &["lighttpd", "launch"]).await;
    assert!(!ok && err.contains("unknown action"), "{err}");
    let (ok, _, err) = webservice(
        &site,
        &cfg,
        &["--backend", "kubernetes", "lighttpd", "start"],
    )
    .await;
    assert!(!ok && err.contains("not handled"), "{err}");
}

#[test]
fn a_concurrent_reader_never_sees_a_half_written_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.manifest");
    let mut m = Manifest::default();
    m.set("backend", "gridengine");
    // Big enough that a non-atomic write would be observable half-done.
    m.set_extra_args(&(0..2000).map(|i| format!("--arg-{i}")).collect::<Vec<_>>());
    m.set("zz-last", "end");
    manifest::write_atomic(&path, &m).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, path) = (Arc::clone(&done), path.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                let parsed = Manifest::parse(&text).unwrap();
                assert!(
                    text.trim_end().ends_with("zz-last: end"),
                    "partial file seen"
                );
                assert_eq!(parsed.extra_args().len(), 2000);
                reads += 1;
            }
            reads
        })
    };
    for i in 0..300 {
        m.set(
            "web",
            if i % 2 == 0 {
                "lighttpd"
            } else {
                "uwsgi-python"
            },
        );
        manifest::write_atomic(&path, &m).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    // No temporary files left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(left.len(), 1);
}
