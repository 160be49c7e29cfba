//! The `rq-worker` binary against a real Redis: SIGKILL storms with jobs in
//! flight on two queues, the orphan requeue bound, SIGTERM hand-back, the
//! operator verbs; and the `forge.send_mail` built-in against an SMTP sink
//! (with the metrics the shipped dashboard reads).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::redis::RedisSettings;
use forge_core::{Shutdown, StatusBoard};
use forge_rq::{EnqueueOptions, JobStatus, Keys, Queue, Registry};
use forge_test_support::{ChildGuard, RedisServer, SmtpSink};
use fred::prelude::*;
use serde_json::json;

const HEARTBEAT_MS: u64 = 200;
const ORPHAN_AFTER_MS: u64 = 1_000;
const REAP_MS: u64 = 250;

fn worker_command(url: &str, queues: &[&str], extra_env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rq-worker"));
    c.arg("--redis")
        .arg(url)
        .arg("--admin-listen")
        .arg("")
        .args(queues)
        .env(
            "FORGE_RQ_WORKER_WORKER__HEARTBEAT_INTERVAL_MS",
            HEARTBEAT_MS.to_string(),
        )
        .env(
            "FORGE_RQ_WORKER_WORKER__ORPHAN_AFTER_MS",
            ORPHAN_AFTER_MS.to_string(),
        )
        .env(
            "FORGE_RQ_WORKER_WORKER__REAP_INTERVAL_MS",
            REAP_MS.to_string(),
        )
        .env("FORGE_RQ_WORKER_WORKER__SCHEDULER_INTERVAL_MS", "200")
        .env("FORGE_RQ_WORKER_LOG__FILTER", "info")
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c
}

fn spawn_worker(
    dir: &std::path::Path,
    n: usize,
    url: &str,
    queues: &[&str],
    env: &[(&str, &str)],
) -> ChildGuard {
    ChildGuard::spawn(
        "rq-worker",
        worker_command(url, queues, env),
        &dir.join(format!("worker-{n}.log")),
    )
    .expect("spawn rq-worker")
}

async fn pool(url: &str) -> Pool {
    let p = RedisSettings::for_url(url).pool().unwrap();
    p.init().await.unwrap();
    p
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_storm_loses_no_job_across_two_queues() {
    let redis = RedisServer::start().await.unwrap();
    let url = redis.url();
    let pool = pool(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let high = Queue::new(pool.clone(), "high");
    let low = Queue::new(pool.clone(), "low");
    let mut ids = Vec::new();
    let opts = || EnqueueOptions {
        result_ttl: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    for i in 0..500 {
        ids.push((
            "high",
            high.enqueue(
                "forge.sleep",
                vec![json!(0.02 + (i % 5) as f64 * 0.01)],
                opts(),
            )
            .await
            .unwrap(),
        ));
        ids.push((
            "low",
            low.enqueue("forge.sleep", vec![json!(0.02)], opts())
                .await
                .unwrap(),
        ));
    }
    let env = [("FORGE_RQ_WORKER_WORKER__CONCURRENCY", "32")];
    let mut kills = 0;
    let mut orphaned_seen = false;
    for round in 0..8 {
        let mut w = spawn_worker(dir.path(), round, &url, &["high", "low"], &env);
        // Let it claim and run jobs, then kill it mid-flight.
        tokio::time::sleep(Duration::from_millis(300 + 100 * (round as u64 % 3))).await;
        let held: i64 = {
            let names: Vec<String> = pool.smembers(Keys::inflight_workers()).await.unwrap();
            let mut n = 0;
            for name in names {
                let c: i64 = pool.hlen(Keys::inflight(&name)).await.unwrap();
                n += c;
            }
            n
        };
        orphaned_seen |= held > 0;
        w.kill().unwrap();
        kills += 1;
        let remaining = high.len().await.unwrap() + low.len().await.unwrap();
        if remaining == 0 {
            break;
        }
    }
    assert!(
        kills >= 2 && orphaned_seen,
        "the storm never caught jobs in flight"
    );
    // A final worker drains everything, including the last victims' jobs.
    let mut last = spawn_worker(dir.path(), 99, &url, &["high", "low"], &env);
    let keys = Keys::default();
    eventually("every job finished", Duration::from_secs(120), || async {
        let mut statuses: Vec<Option<String>> = Vec::new();
        for chunk in ids.chunks(200) {
            for (_, id) in chunk {
                let s: Option<String> = pool.hget(keys.job(id), "status").await.unwrap();
                statuses.push(s);
            }
        }
        statuses.iter().all(|s| s.as_deref() == Some("finished"))
    })
    .await;
    // Nothing stays started, nothing is held, every job ran (at least once).
    for q in [&high, &low] {
        assert!(q.registry_ids(Registry::Started).await.unwrap().is_empty());
        assert_eq!(q.len().await.unwrap(), 0);
        assert_eq!(q.registry_len(Registry::Finished).await.unwrap(), 500);
        assert_eq!(q.registry_len(Registry::Failed).await.unwrap(), 0);
    }
    let requeued = {
        let mut n = 0;
        for (_, id) in &ids {
            let o: Option<i64> = pool.hget(keys.job(id), "forge_orphaned").await.unwrap();
            n += i64::from(o.is_some());
        }
        n
    };
    assert!(
        requeued > 0,
        "no job was ever orphaned, the test proved nothing"
    );
    // Dead workers are forgotten once their lease expired and a reaper ran.
    eventually("dead workers reaped", Duration::from_secs(10), || async {
        let left: Vec<String> = pool.smembers(Keys::inflight_workers()).await.unwrap();
        let mut all_alive = true;
        for name in left {
            let alive: i64 = pool.exists(Keys::alive(&name)).await.unwrap();
            all_alive &= alive == 1;
        }
        all_alive
    })
    .await;
    last.terminate(Duration::from_secs(10)).unwrap();
}

#[tokio::test]
async fn a_killed_workers_job_is_requeued_within_the_bound() {
    let redis = RedisServer::start().await.unwrap();
    let url = redis.url();
    let pool = pool(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::new(pool.clone(), "default");
    let id = q
        .enqueue("forge.sleep", vec![json!(1.5)], EnqueueOptions::default())
        .await
        .unwrap();
    let mut a = spawn_worker(dir.path(), 1, &url, &["default"], &[]);
    let keys = Keys::default();
    eventually("job started", Duration::from_secs(10), || async {
        q.fetch(&id).await.ok().and_then(|r| r.status()) == Some(JobStatus::Started)
    })
    .await;
    let first_worker: String = pool.hget(keys.job(&id), "worker_name").await.unwrap();
    let mut b = spawn_worker(dir.path(), 2, &url, &["default"], &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().unwrap();
    let killed = Instant::now();
    eventually("job taken over", Duration::from_secs(10), || async {
        let w: Option<String> = pool.hget(keys.job(&id), "worker_name").await.unwrap();
        w.is_some_and(|w| w != first_worker)
    })
    .await;
    let took = killed.elapsed();
    let bound = Duration::from_millis(ORPHAN_AFTER_MS + REAP_MS);
    assert!(
        took <= bound + Duration::from_millis(1500),
        "requeued after {took:?}, bound {bound:?}"
    );
    eventually("job finished", Duration::from_secs(10), || async {
        q.fetch(&id).await.ok().and_then(|r| r.status()) == Some(JobStatus::Finished)
    })
    .await;
    b.terminate(Duration::from_secs(10)).unwrap();
}

#[tokio::test]
async fn sigterm_hands_jobs_back_and_verbs_work() {
    let redis = RedisServer::start().await.unwrap();
    let url = redis.url();
    let pool = pool(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::new(pool.clone(), "default");
    let long = q
        .enqueue("forge.sleep", vec![json!(60)], EnqueueOptions::default())
        .await
        .unwrap();
    let fail = q
        .enqueue(
            "forge.fail",
            vec![json!("on purpose")],
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    let mut w = spawn_worker(
        dir.path(),
        1,
        &url,
        &["default"],
        &[("FORGE_RQ_WORKER_WORKER__DRAIN_TIMEOUT_SECS", "1")],
    );
    eventually("job started", Duration::from_secs(10), || async {
        q.fetch(&long).await.ok().and_then(|r| r.status()) == Some(JobStatus::Started)
            && q.fetch(&fail).await.ok().and_then(|r| r.status()) == Some(JobStatus::Failed)
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(w.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(status) = w.try_wait().unwrap() {
            assert!(
                status.success(),
                "exit status {status:?}: {}",
                w.log_tail(20)
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        q.fetch(&long).await.unwrap().status(),
        Some(JobStatus::Queued)
    );
    assert_eq!(q.job_ids(10).await.unwrap(), vec![long.clone()]);
    let verb = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rq-worker"))
            .args(args)
            .arg("--redis")
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let info = verb(&["info"]);
    assert!(
        info.lines().any(|l| l.starts_with("default")
            && l.split_whitespace().collect::<Vec<_>>()
                == ["default", "1", "0", "0", "0", "1", "0"]),
        "{info}"
    );
    let failed = verb(&["failed", "default"]);
    assert!(
        failed.contains(&fail) && failed.contains("on purpose") && failed.contains("forge.fail"),
        "{failed}"
    );
    assert!(verb(&["requeue", "--queue", "default", "--all"]).contains("requeued 1 job"));
    assert_eq!(q.len().await.unwrap(), 2);
    assert!(verb(&["empty", "default"]).contains("removed 2 job(s)"));
    assert!(verb(&["suspend"]).contains("suspended"));
    assert!(verb(&["info"]).contains("SUSPENDED"));
    assert!(verb(&["resume"]).contains("resumed"));
    assert!(!verb(&["info"]).contains("SUSPENDED"));
}

#[tokio::test]
async fn send_mail_builtin_delivers_and_refuses_bad_addresses() {
    forge_core::cli::install_crypto_provider();
    // The process-wide Prometheus recorder, installed before anything counts.
    let metrics = forge_core::telemetry::metrics_handle();
    let redis = RedisServer::start().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let url = redis.url();
    let pool = pool(&url).await;
    let mut config = rq_worker::config::Config {
        redis: RedisSettings::for_url(&url),
        ..Default::default()
    };
    config.mail.smtp_host = "127.0.0.1".into();
    config.mail.smtp_port = smtp.port();
    config.mail.from = "Forge <noreply@example.org>".into();
    let registry = rq_worker::registry(&config);
    let shutdown = Shutdown::new();
    let board = StatusBoard::new("rq-worker", "test", "test");
    let task = tokio::spawn(rq_worker::run(
        config,
        registry,
        Arc::clone(&board),
        None,
        shutdown.clone(),
    ));
    let q = Queue::new(pool.clone(), "default");
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("to".into(), json!(["alice@example.org"]));
    kwargs.insert("subject".into(), json!("Activate your account"));
    kwargs.insert(
        "body".into(),
        json!("Follow https://example.org/activate/x"),
    );
    let ok = q
        .enqueue_with_kwargs("forge.send_mail", vec![], kwargs, EnqueueOptions::default())
        .await
        .unwrap();
    let bad = q
        .enqueue(
            "forge.send_mail",
            vec![json!("not an address"), json!("s"), json!("b")],
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(mails[0].subject().as_deref(), Some("Activate your account"));
    assert!(mails[0].text_body().unwrap().contains("activate/x"));
    eventually("both settled", Duration::from_secs(10), || async {
        q.fetch(&ok).await.ok().and_then(|r| r.status()) == Some(JobStatus::Finished)
            && q.fetch(&bad).await.ok().and_then(|r| r.status()) == Some(JobStatus::Failed)
    })
    .await;
    let rec = q.fetch(&bad).await.unwrap();
    assert!(
        rec.exc_info().unwrap().contains("is not an e-mail address"),
        "{:?}",
        rec.exc_info()
    );
    assert!(board.status_json()["worker_name"].is_string());
    // Every metric the shipped Grafana dashboard queries is exported (the
    // queue-depth gauges come with the reaper's pass), and so is the Redis
    // master this process sees.
    let master = format!(
        "forge_redis_master{{master=\"127.0.0.1:{}\"}} 1",
        redis.port()
    );
    let mut missing = Vec::new();
    for _ in 0..100 {
        let text = metrics.render();
        missing = forge_test_support::monitoring::missing_dashboard_metrics("rq-worker", &text);
        if !text.contains(&master) {
            missing.push(master.clone());
        }
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(missing.is_empty(), "not exported: {missing:?}");
    shutdown.trigger();
    task.await.unwrap().unwrap();
}
