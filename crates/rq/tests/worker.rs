//! The worker against a real Redis: retries and backoff, timeouts, panics,
//! bad jobs, graceful hand-back, orphan requeue, poison jobs, dependencies,
//! priorities, operator verbs, recurring jobs.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use forge_rq::job::{JobCall, encode_data, utcformat};
use forge_rq::{
    EnqueueOptions, HandlerRegistry, JobArgs, JobError, JobStatus, Keys, Queue, RecurringJob,
    Registry, Retry, RqError,
};
use fred::prelude::*;
use serde_json::json;

async fn status_of(q: &Queue, id: &str) -> Option<JobStatus> {
    q.fetch(id).await.ok()?.status()
}

async fn wait_status(q: &Queue, id: &str, want: JobStatus, within: Duration) {
    eventually(&format!("job {id} to be {want:?}"), within, || async {
        (status_of(q, id).await == Some(want)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn retries_happen_at_the_configured_intervals_then_fail_for_good() {
    let redis = redis().await;
    let url = redis.url();
    // Wall-clock times, as the schedule itself keeps them (python-rq's
    // scheduled registry is scored by wall-clock time): a monotonic clock
    // drifts from it when the system clock is slewed or stepped (a VM
    // resumed from a pause), and would then see a retry "early".
    let times: Arc<Mutex<HashMap<String, Vec<SystemTime>>>> = Arc::default();
    let mut reg = HandlerRegistry::new();
    let t = times.clone();
    reg.register("tests.flaky", move |ctx, _args: JobArgs| {
        let t = t.clone();
        async move {
            t.lock()
                .unwrap()
                .entry(ctx.job_id.clone())
                .or_default()
                .push(SystemTime::now());
            Err::<serde_json::Value, _>(JobError::retryable(format!(
                "attempt {} broke",
                ctx.attempt
            )))
        }
    });
    let worker = start_worker(&url, fast_settings(&["default"]), reg);
    let q = Queue::new(pool(&url).await, "default");
    let fixed = q
        .enqueue(
            "tests.flaky",
            vec![],
            EnqueueOptions {
                retry: Some(Retry::intervals(
                    2,
                    vec![Duration::from_millis(300), Duration::from_millis(900)],
                )),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let expo = q
        .enqueue(
            "tests.flaky",
            vec![],
            EnqueueOptions {
                retry: Some(
                    Retry::exponential(3, Duration::from_millis(200), Duration::from_millis(500))
                        .with_jitter(0.0),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_status(&q, &fixed, JobStatus::Failed, Duration::from_secs(15)).await;
    wait_status(&q, &expo, JobStatus::Failed, Duration::from_secs(15)).await;
    let times = times.lock().unwrap().clone();
    let gaps = |id: &str| -> Vec<Duration> {
        times[id]
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).unwrap_or_default())
            .collect()
    };
    let fixed_gaps = gaps(&fixed);
    assert_eq!(fixed_gaps.len(), 2, "1 attempt + 2 retries");
    let expo_gaps = gaps(&expo);
    assert_eq!(expo_gaps.len(), 3, "1 attempt + 3 retries");
    // Never early; late by at most a scheduling slack.
    let slack = Duration::from_millis(1500);
    for (gap, want) in fixed_gaps
        .iter()
        .zip([300, 900])
        .chain(expo_gaps.iter().zip([200, 400, 500]))
    {
        let want = Duration::from_millis(want);
        assert!(
            *gap >= want && *gap < want + slack,
            "gap {gap:?}, configured {want:?}"
        );
    }
    let rec = q.fetch(&fixed).await.unwrap();
    assert!(
        rec.exc_info().unwrap().contains("attempt 2 broke"),
        "{:?}",
        rec.exc_info()
    );
    assert_eq!(rec.fields["retries_left"], "0");
    assert_eq!(
        q.registry_ids(Registry::Failed).await.unwrap().len(),
        2,
        "both in the failed registry"
    );
    worker.stop().await;
}

#[tokio::test]
async fn timeout_stops_the_job_and_a_panic_fails_only_its_job() {
    let redis = redis().await;
    let url = redis.url();
    let ticks = Arc::new(AtomicUsize::new(0));
    let mut reg = HandlerRegistry::with_builtins();
    let tk = ticks.clone();
    reg.register("tests.forever", move |_ctx, _args: JobArgs| {
        let tk = tk.clone();
        async move {
            loop {
                tk.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    reg.register("tests.panic", |_ctx, _args: JobArgs| async move {
        if true {
            panic!("boom in handler");
        }
        Ok(json!(null))
    });
    let worker = start_worker(&url, fast_settings(&["default"]), reg);
    let q = Queue::new(pool(&url).await, "default");
    let slow = q
        .enqueue(
            "tests.forever",
            vec![],
            EnqueueOptions {
                timeout: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let boom = q
        .enqueue("tests.panic", vec![], EnqueueOptions::default())
        .await
        .unwrap();
    let fine = q
        .enqueue("forge.echo", vec![json!(7)], EnqueueOptions::default())
        .await
        .unwrap();
    wait_status(&q, &boom, JobStatus::Failed, Duration::from_secs(10)).await;
    wait_status(&q, &fine, JobStatus::Finished, Duration::from_secs(10)).await;
    wait_status(&q, &slow, JobStatus::Failed, Duration::from_secs(10)).await;
    let rec = q.fetch(&slow).await.unwrap();
    assert!(
        rec.exc_info().unwrap().contains("JobTimeoutException"),
        "{:?}",
        rec.exc_info()
    );
    assert!(
        rec.exc_info().unwrap().contains("(1 seconds)"),
        "{:?}",
        rec.exc_info()
    );
    let after = ticks.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        after,
        "the timed-out handler kept running"
    );
    let rec = q.fetch(&boom).await.unwrap();
    assert!(
        rec.exc_info().unwrap().contains("boom in handler"),
        "{:?}",
        rec.exc_info()
    );
    assert_eq!(q.fetch(&fine).await.unwrap().result(), Some(json!([7])));
    // The worker keeps going.
    let again = q
        .enqueue("forge.echo", vec![], EnqueueOptions::default())
        .await
        .unwrap();
    wait_status(&q, &again, JobStatus::Finished, Duration::from_secs(10)).await;
    worker.stop().await;
}

#[tokio::test]
async fn bad_jobs_fail_with_clear_errors_and_the_worker_keeps_going() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let keys = Keys::default();
    let q = Queue::new(pool.clone(), "default");
    let unknown = q
        .enqueue("no.such.job", vec![], EnqueueOptions::default())
        .await
        .unwrap();
    let missing_arg = q
        .enqueue("forge.sleep", vec![], EnqueueOptions::default())
        .await
        .unwrap();
    let wrong_type = q
        .enqueue(
            "forge.sleep",
            vec![json!("soon")],
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    // Hand-written broken jobs, as a buggy or foreign producer would leave them.
    type Fields = Vec<(&'static str, Vec<u8>)>;
    let broken: [(&str, Fields); 4] = [
        (
            "garbage",
            vec![("data", b"\x78\x9c not zlib nor json".to_vec())],
        ),
        (
            "pickled",
            vec![("data", forge_rq::job::zlib(b"\x80\x05\x95pickle"))],
        ),
        ("nodata", vec![("description", b"no data field".to_vec())]),
        (
            "shortarray",
            vec![("data", forge_rq::job::zlib(b"[\"forge.echo\"]"))],
        ),
    ];
    for (id, fields) in &broken {
        let mut f: Fields = fields.clone();
        f.push(("origin", b"default".to_vec()));
        f.push(("status", b"queued".to_vec()));
        let _: () = pool.hset(keys.job(id), f).await.unwrap();
        let _: () = pool.rpush(keys.queue("default"), *id).await.unwrap();
    }
    let good = q
        .enqueue("forge.echo", vec![json!("ok")], EnqueueOptions::default())
        .await
        .unwrap();
    let worker = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    wait_status(&q, &good, JobStatus::Finished, Duration::from_secs(10)).await;
    let expect = [
        (
            unknown.as_str(),
            "no handler registered for \"no.such.job\"",
        ),
        (missing_arg.as_str(), "missing argument \"seconds\""),
        (wrong_type.as_str(), "positional argument 0"),
        ("garbage", "payload is not JSON"),
        ("pickled", "pickled"),
        ("nodata", "no data field"),
        ("shortarray", "1 elements"),
    ];
    for (id, text) in expect {
        wait_status(&q, id, JobStatus::Failed, Duration::from_secs(10)).await;
        let rec = q.fetch(id).await.unwrap();
        let exc = rec.exc_info().unwrap_or_default().to_owned();
        assert!(exc.contains(text), "job {id}: {exc:?} lacks {text:?}");
    }
    let failed = q.failed_jobs(100).await.unwrap();
    assert_eq!(failed.len(), 7);
    worker.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_hands_unfinished_jobs_back() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    let settings = forge_rq::WorkerSettings {
        drain_timeout_secs: 1,
        ..fast_settings(&["default"])
    };
    let worker = start_worker(&url, settings, HandlerRegistry::with_builtins());
    let long = q
        .enqueue("forge.sleep", vec![json!(60)], EnqueueOptions::default())
        .await
        .unwrap();
    let short = q
        .enqueue("forge.sleep", vec![json!(0.3)], EnqueueOptions::default())
        .await
        .unwrap();
    wait_status(&q, &long, JobStatus::Started, Duration::from_secs(5)).await;
    wait_status(&q, &short, JobStatus::Started, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    let name = worker.name.clone();
    worker.stop().await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(
        status_of(&q, &short).await,
        Some(JobStatus::Finished),
        "finished within the drain"
    );
    assert_eq!(
        status_of(&q, &long).await,
        Some(JobStatus::Queued),
        "handed back"
    );
    assert_eq!(q.job_ids(10).await.unwrap(), vec![long.clone()]);
    assert!(q.registry_ids(Registry::Started).await.unwrap().is_empty());
    let held: i64 = pool.hlen(Keys::inflight(&name)).await.unwrap();
    assert_eq!(held, 0);
    let workers: i64 = pool.scard("rq:workers").await.unwrap();
    assert_eq!(workers, 0);
    // A second signal hands back at once.
    let worker = start_worker(
        &url,
        forge_rq::WorkerSettings {
            drain_timeout_secs: 3600,
            ..fast_settings(&["default"])
        },
        HandlerRegistry::with_builtins(),
    );
    wait_status(&q, &long, JobStatus::Started, Duration::from_secs(5)).await;
    worker.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.shutdown.force();
    worker.handle.await.unwrap().unwrap();
    assert_eq!(status_of(&q, &long).await, Some(JobStatus::Queued));
}

/// Leaves the state a worker killed with SIGKILL leaves: job claimed into
/// its in-flight hash, started, no liveness lease.
async fn plant_orphan(pool: &Pool, q: &Queue, worker: &str, id: &str) {
    let keys = Keys::default();
    let got: Option<String> = pool.lpop(keys.queue(q.name()), None).await.unwrap();
    assert_eq!(got.as_deref(), Some(id));
    let composite = format!("{id}:dead-1");
    let _: () = pool
        .hset(
            Keys::inflight(worker),
            (id, format!("{}\t{composite}", q.name())),
        )
        .await
        .unwrap();
    let _: () = pool.sadd(Keys::inflight_workers(), worker).await.unwrap();
    let _: () = pool
        .zadd(
            keys.registry(Registry::Started, q.name()),
            None,
            None,
            false,
            false,
            (1e12, composite.as_str()),
        )
        .await
        .unwrap();
    let _: () = pool
        .hset(
            keys.job(id),
            vec![("status", "started"), ("worker_name", worker)],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn dead_workers_jobs_are_requeued_and_poison_jobs_fail() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    let orphan = q
        .enqueue(
            "forge.echo",
            vec![json!("again")],
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    plant_orphan(&pool, &q, "ghost", &orphan).await;
    let poison = q
        .enqueue("forge.echo", vec![], EnqueueOptions::default())
        .await
        .unwrap();
    plant_orphan(&pool, &q, "ghost2", &poison).await;
    let _: () = pool
        .hset(Keys::default().job(&poison), ("forge_orphaned", 3))
        .await
        .unwrap();
    let t0 = Instant::now();
    let settings = fast_settings(&["default"]);
    let bound = Duration::from_millis(settings.orphan_after_ms + settings.reap_interval_ms);
    let worker = start_worker(&url, settings, HandlerRegistry::with_builtins());
    wait_status(&q, &orphan, JobStatus::Finished, Duration::from_secs(10)).await;
    // The planted worker had no lease at all, so the first reap requeues it.
    assert!(
        t0.elapsed() < bound + Duration::from_secs(2),
        "requeued after {:?}",
        t0.elapsed()
    );
    let rec = q.fetch(&orphan).await.unwrap();
    assert_eq!(rec.result(), Some(json!(["again"])));
    assert_eq!(rec.fields["forge_orphaned"], "1");
    wait_status(&q, &poison, JobStatus::Failed, Duration::from_secs(10)).await;
    let rec = q.fetch(&poison).await.unwrap();
    assert!(
        rec.exc_info().unwrap().contains("PoisonJob"),
        "{:?}",
        rec.exc_info()
    );
    assert!(q.registry_ids(Registry::Started).await.unwrap().is_empty());
    let left: i64 = pool.scard(Keys::inflight_workers()).await.unwrap();
    assert!(left <= 1, "ghosts removed");
    // Operator verb: requeue the poison job; it now runs.
    assert_eq!(
        q.requeue_failed(std::slice::from_ref(&poison))
            .await
            .unwrap(),
        1
    );
    wait_status(&q, &poison, JobStatus::Finished, Duration::from_secs(10)).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_live_but_slow_worker_is_not_reaped_and_a_stale_settle_is_dropped() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    let w1 = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    let w2 = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    // Longer than the lease: the heartbeat keeps the job with its worker.
    let id = q
        .enqueue("forge.sleep", vec![json!(2.5)], EnqueueOptions::default())
        .await
        .unwrap();
    wait_status(&q, &id, JobStatus::Finished, Duration::from_secs(10)).await;
    let rec = q.fetch(&id).await.unwrap();
    assert!(
        !rec.fields.contains_key("forge_orphaned"),
        "requeued although alive"
    );
    w1.stop().await;
    w2.stop().await;
}

#[tokio::test]
async fn dependencies_priorities_unique_ids_and_operator_verbs() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let high = Queue::new(pool.clone(), "high");
    let low = Queue::new(pool.clone(), "low");
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut reg = HandlerRegistry::with_builtins();
    let o = order.clone();
    reg.register("tests.record", move |_ctx, args: JobArgs| {
        let o = o.clone();
        async move {
            o.lock().unwrap().push(args.arg::<String>(0)?);
            Ok(json!(null))
        }
    });
    for i in 0..3 {
        low.enqueue(
            "tests.record",
            vec![json!(format!("low{i}"))],
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
        high.enqueue(
            "tests.record",
            vec![json!(format!("high{i}"))],
            EnqueueOptions::default(),
        )
        .await
        .unwrap();
    }
    high.enqueue(
        "tests.record",
        vec![json!("high-front")],
        EnqueueOptions {
            at_front: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Unique ids.
    let opts = || EnqueueOptions {
        job_id: Some("unique-1".into()),
        ..Default::default()
    };
    low.enqueue("tests.record", vec![json!("unique")], opts())
        .await
        .unwrap();
    assert!(matches!(
        low.enqueue("tests.record", vec![json!("unique")], opts())
            .await,
        Err(RqError::DuplicateJob(_))
    ));
    // A dependency chain.
    let first = low
        .enqueue("forge.sleep", vec![json!(0.2)], EnqueueOptions::default())
        .await
        .unwrap();
    let second = high
        .enqueue(
            "tests.record",
            vec![json!("after-dependency")],
            EnqueueOptions {
                depends_on: vec![first.clone()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(status_of(&high, &second).await, Some(JobStatus::Deferred));
    let settings = forge_rq::WorkerSettings {
        concurrency: 1,
        ..fast_settings(&["high", "low"])
    };
    let worker = start_worker(&url, settings, reg);
    wait_status(&high, &second, JobStatus::Finished, Duration::from_secs(10)).await;
    let order = order.lock().unwrap().clone();
    assert_eq!(
        &order[..4],
        &["high-front", "high0", "high1", "high2"],
        "priority and at-front order: {order:?}"
    );
    assert_eq!(order.last().unwrap(), "after-dependency");
    assert!(
        high.registry_ids(Registry::Deferred)
            .await
            .unwrap()
            .is_empty()
    );
    // Suspend / resume / empty.
    let keys = Keys::default();
    forge_rq::queue::suspend(&pool, &keys, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let held = low
        .enqueue("forge.echo", vec![], EnqueueOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        status_of(&low, &held).await,
        Some(JobStatus::Queued),
        "suspended workers take no jobs"
    );
    let info = forge_rq::queue::workers(&pool, &keys).await.unwrap();
    assert_eq!(info[0].fields["state"], "suspended");
    forge_rq::queue::resume(&pool, &keys).await.unwrap();
    wait_status(&low, &held, JobStatus::Finished, Duration::from_secs(10)).await;
    worker.stop().await;
    for _ in 0..5 {
        low.enqueue("forge.echo", vec![], EnqueueOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(low.len().await.unwrap(), 5);
    assert_eq!(low.empty().await.unwrap(), 5);
    assert_eq!(low.len().await.unwrap(), 0);
    let names = forge_rq::queue::queue_names(&pool, &keys).await.unwrap();
    assert_eq!(names, vec!["high".to_owned(), "low".to_owned()]);
}

#[tokio::test]
async fn scheduled_and_recurring_jobs_run_without_a_scheduler_process() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    let at = SystemTime::now() + Duration::from_millis(800);
    let id = q
        .enqueue(
            "forge.echo",
            vec![json!("later")],
            EnqueueOptions {
                run_at: Some(at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let recurring = RecurringJob {
        name: "tick".into(),
        func: "forge.echo".into(),
        queue: "default".into(),
        args: vec![json!("tick")],
        kwargs: Default::default(),
        every_secs: 3600,
        offset_secs: 0,
        timeout_secs: None,
    };
    let settings = forge_rq::WorkerSettings {
        recurring: vec![recurring],
        ..fast_settings(&["default"])
    };
    // Two workers: the recurring job is enqueued once per slot.
    let w1 = start_worker(&url, settings.clone(), HandlerRegistry::with_builtins());
    let w2 = start_worker(&url, settings, HandlerRegistry::with_builtins());
    assert_eq!(status_of(&q, &id).await, Some(JobStatus::Scheduled));
    wait_status(&q, &id, JobStatus::Finished, Duration::from_secs(10)).await;
    let started = q.fetch(&id).await.unwrap().fields["started_at"].clone();
    assert!(
        forge_rq::job::utcparse(&started).unwrap() >= at,
        "ran before its time"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let finished = q.registry_ids(Registry::Finished).await.unwrap();
    let ticks = finished
        .iter()
        .filter(|i| i.starts_with("forge-recurring-tick-"))
        .count();
    assert_eq!(ticks, 1, "{finished:?}");
    w1.stop().await;
    w2.stop().await;
    let _ = utcformat(SystemTime::now());
    let _ = encode_data(&JobCall {
        func_name: "x".into(),
        args: vec![],
        kwargs: Default::default(),
    });
}
