//! Bad job data against a real Redis: every hash field a producer can get
//! wrong (timeouts, TTLs, retry state, dependency lists, orphan counters,
//! payloads that inflate without bound) fails that job with a clear
//! `exc_info`, never panics or wedges the worker, never loses a job or
//! strands its batch-mates.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use forge_rq::job::{JobCall, encode_data, zlib};
use forge_rq::{EnqueueOptions, HandlerRegistry, JobStatus, Keys, Queue, Registry};
use fred::prelude::*;
use serde_json::json;

/// Hash fields as written by a producer.
type Fields = Vec<(&'static str, Vec<u8>)>;

/// Generous bound for one job to settle on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

fn echo_data(arg: &str) -> Vec<u8> {
    encode_data(&JobCall {
        func_name: "forge.echo".into(),
        args: vec![json!(arg)],
        kwargs: Default::default(),
    })
}

/// Writes a job hash as a foreign producer would and queues it.
async fn plant(pool: &Pool, queue: &str, id: &str, extra: Fields) {
    let keys = Keys::default();
    let mut fields: Fields = vec![
        ("data", echo_data(id)),
        ("origin", queue.as_bytes().to_vec()),
        ("status", b"queued".to_vec()),
    ];
    for (k, v) in extra {
        fields.retain(|(f, _)| *f != k);
        fields.push((k, v));
    }
    let _: () = pool.hset(keys.job(id), fields).await.unwrap();
    let _: () = pool.rpush(keys.queue(queue), id).await.unwrap();
}

async fn status_of(q: &Queue, id: &str) -> Option<JobStatus> {
    q.fetch(id).await.ok()?.status()
}

/// Waits until the job has `want` as status *and* sits in the matching
/// registry (a status without a registry entry is a lost job).
async fn wait_settled(q: &Queue, id: &str, want: JobStatus) {
    let registry = match want {
        JobStatus::Finished => Registry::Finished,
        JobStatus::Failed => Registry::Failed,
        other => panic!("no registry for {other:?}"),
    };
    eventually(
        &format!("job {id} to be {want:?} in its registry"),
        SETTLE,
        || async {
            let in_registry = q.registry_ids(registry).await.ok()?.iter().any(|x| x == id);
            (status_of(q, id).await == Some(want) && in_registry).then_some(())
        },
    )
    .await;
}

async fn exc_info(q: &Queue, id: &str) -> String {
    q.fetch(id)
        .await
        .unwrap()
        .exc_info()
        .unwrap_or_default()
        .to_owned()
}

async fn assert_failed_with(q: &Queue, id: &str, text: &str) {
    wait_settled(q, id, JobStatus::Failed).await;
    let exc = exc_info(q, id).await;
    assert!(exc.contains(text), "job {id}: {exc:?} lacks {text:?}");
}

/// Nothing of this worker's is left in flight once its jobs settled.
async fn assert_nothing_in_flight(pool: &Pool, worker: &str) {
    let held: i64 = pool.hlen(Keys::inflight(worker)).await.unwrap();
    assert_eq!(held, 0, "worker {worker} still holds jobs");
    let started: i64 = pool
        .zcard(Keys::default().registry(Registry::Started, "default"))
        .await
        .unwrap();
    assert_eq!(started, 0, "jobs left in the started registry");
}

#[tokio::test]
async fn timeouts_that_panicked_the_worker_fail_only_their_job() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    let bad: [(&str, &[u8]); 5] = [
        ("t-ff", b"\xff"),
        ("t-1e300", b"1e300"),
        ("t-inf", b"inf"),
        ("t-junk", b"soon"),
        ("t-unit-overflow", b"99999999999999999999d"),
    ];
    for (id, timeout) in bad {
        plant(&pool, "default", id, vec![("timeout", timeout.to_vec())]).await;
    }
    // Spellings python-rq accepts still run.
    plant(&pool, "default", "t-3m", vec![("timeout", b"3M".to_vec())]).await;
    plant(
        &pool,
        "default",
        "t-none",
        vec![("timeout", b"-1".to_vec())],
    )
    .await;
    let worker = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    for (id, _) in bad {
        assert_failed_with(&q, id, "forge_rq.InvalidJob: field \"timeout\"").await;
    }
    for id in ["t-3m", "t-none"] {
        wait_settled(&q, id, JobStatus::Finished).await;
    }
    // The worker is still there and runs the next job.
    let good = q
        .enqueue("forge.echo", vec![json!("ok")], EnqueueOptions::default())
        .await
        .unwrap();
    wait_settled(&q, &good, JobStatus::Finished).await;
    assert_nothing_in_flight(&pool, &worker.name).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_nan_timeout_neither_loses_its_job_nor_strands_its_batch_mates() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    // All three are claimed in one batch: the bad one in the middle.
    plant(&pool, "default", "before", vec![]).await;
    plant(&pool, "default", "nan", vec![("timeout", b"nan".to_vec())]).await;
    plant(&pool, "default", "after", vec![]).await;
    let worker = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    assert_failed_with(&q, "nan", "field \"timeout\"").await;
    wait_settled(&q, "before", JobStatus::Finished).await;
    wait_settled(&q, "after", JobStatus::Finished).await;
    assert_nothing_in_flight(&pool, &worker.name).await;
    worker.stop().await;
}

#[tokio::test]
async fn out_of_range_ttls_and_retry_state_fail_the_job_in_its_registry() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    let fail_data = encode_data(&JobCall {
        func_name: "forge.fail".into(),
        args: vec![json!("fails on purpose")],
        kwargs: Default::default(),
    });
    // (id, fields, what exc_info must name)
    let cases: Vec<(&str, Fields, &str)> = vec![
        (
            "huge-result-ttl",
            vec![("result_ttl", b"9223372036854775807".to_vec())],
            "field \"result_ttl\"",
        ),
        (
            "huge-failure-ttl",
            vec![
                ("data", fail_data.clone()),
                ("failure_ttl", b"99999999999999999".to_vec()),
            ],
            "field \"failure_ttl\"",
        ),
        (
            "huge-retry-interval",
            vec![
                ("data", fail_data.clone()),
                ("retries_left", b"2".to_vec()),
                (
                    "forge_retry_intervals_ms",
                    b"[18446744073709551615]".to_vec(),
                ),
            ],
            "field \"forge_retry_intervals_ms\"",
        ),
        (
            "huge-backoff",
            vec![
                ("data", fail_data.clone()),
                ("retries_left", b"2".to_vec()),
                (
                    "forge_backoff",
                    br#"{"base_ms":1,"max_ms":18446744073709551615,"jitter":0.0}"#.to_vec(),
                ),
            ],
            "field \"forge_backoff\"",
        ),
        (
            "negative-retries",
            vec![
                ("data", fail_data.clone()),
                ("retries_left", b"-1".to_vec()),
            ],
            "field \"retries_left\"",
        ),
        (
            "bad-intervals",
            vec![
                ("data", fail_data.clone()),
                ("retries_left", b"1".to_vec()),
                ("retry_intervals", b"[1, \"x\"]".to_vec()),
            ],
            "field \"retry_intervals\"",
        ),
    ];
    for (id, fields, _) in &cases {
        plant(&pool, "default", id, fields.clone()).await;
    }
    // The retry counter at its largest still retries and then fails cleanly.
    plant(
        &pool,
        "default",
        "max-retry-count",
        vec![
            ("data", fail_data.clone()),
            ("retries_left", b"1".to_vec()),
            ("number_of_retries", b"4294967295".to_vec()),
        ],
    )
    .await;
    let worker = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    for (id, _, text) in &cases {
        assert_failed_with(&q, id, text).await;
    }
    assert_failed_with(&q, "max-retry-count", "fails on purpose").await;
    assert_nothing_in_flight(&pool, &worker.name).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_payload_inflating_past_the_bound_fails_instead_of_growing_the_worker() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    // 65 MiB of JSON, under 100 KiB compressed: past the 64 MiB default.
    let mut json = Vec::with_capacity(65 << 20);
    json.extend_from_slice(b"[\"forge.echo\", null, [\"");
    json.resize(json.len() + (65 << 20), b'a');
    json.extend_from_slice(b"\"], {}]");
    let bomb = zlib(&json);
    drop(json);
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    plant(&pool, "default", "bomb", vec![("data", bomb)]).await;
    plant(&pool, "default", "after-bomb", vec![]).await;
    let worker = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    assert_failed_with(&q, "bomb", "worker.max_job_data_bytes").await;
    wait_settled(&q, "after-bomb", JobStatus::Finished).await;
    worker.stop().await;
}

#[tokio::test]
async fn a_dependent_with_unreadable_dependency_ids_fails_and_its_parent_settles() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let keys = Keys::default();
    let q = Queue::new(pool.clone(), "default");
    let parent = q
        .enqueue("forge.echo", vec![json!("p")], EnqueueOptions::default())
        .await
        .unwrap();
    let good_child = q
        .enqueue(
            "forge.echo",
            vec![json!("c")],
            EnqueueOptions {
                depends_on: vec![parent.clone()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Dependents as a broken producer leaves them: unreadable JSON, a list
    // of non-strings, an object.
    for (id, deps) in [
        ("bad-json", "{not json"),
        ("bad-items", "[1, {\"a\": 2}]"),
        ("bad-shape", "{\"a\": 1}"),
    ] {
        let _: () = pool
            .hset(
                keys.job(id),
                vec![
                    ("data", echo_data(id)),
                    ("origin", b"default".to_vec()),
                    ("status", b"deferred".to_vec()),
                    ("dependency_ids", deps.as_bytes().to_vec()),
                ],
            )
            .await
            .unwrap();
        let _: () = pool
            .sadd(format!("{}:dependents", keys.job(&parent)), id)
            .await
            .unwrap();
        let _: () = pool
            .zadd(
                keys.registry(Registry::Deferred, "default"),
                None,
                None,
                false,
                false,
                (f64::INFINITY, id),
            )
            .await
            .unwrap();
    }
    let worker = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    wait_settled(&q, &parent, JobStatus::Finished).await;
    wait_settled(&q, &good_child, JobStatus::Finished).await;
    for id in ["bad-json", "bad-items", "bad-shape"] {
        assert_failed_with(&q, id, "field \"dependency_ids\"").await;
    }
    assert!(
        q.registry_ids(Registry::Deferred).await.unwrap().is_empty(),
        "nothing left deferred"
    );
    let wk = keys.worker(&worker.name);
    let done: i64 = pool.hget(&wk, "successful_job_count").await.unwrap();
    assert_eq!(done, 2, "the parent's settle ran to its end");
    worker.stop().await;
}

#[tokio::test]
async fn an_orphan_with_a_garbage_orphan_counter_is_requeued_and_runs() {
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let keys = Keys::default();
    let q = Queue::new(pool.clone(), "default");
    // What a killed worker leaves behind, with an unreadable counter on one
    // job and a good one next to it.
    for (id, counter) in [("garbled", "lots"), ("fine", "1")] {
        let composite = format!("{id}:dead-1");
        let _: () = pool
            .hset(
                keys.job(id),
                vec![
                    ("data", echo_data(id)),
                    ("origin", b"default".to_vec()),
                    ("status", b"started".to_vec()),
                    ("forge_orphaned", counter.as_bytes().to_vec()),
                ],
            )
            .await
            .unwrap();
        let _: () = pool
            .hset(
                Keys::inflight("ghost"),
                (id, format!("default\t{composite}")),
            )
            .await
            .unwrap();
        let _: () = pool
            .zadd(
                keys.registry(Registry::Started, "default"),
                None,
                None,
                false,
                false,
                (1e12, composite.as_str()),
            )
            .await
            .unwrap();
    }
    let _: () = pool.sadd(Keys::inflight_workers(), "ghost").await.unwrap();
    let worker = start_worker(
        &url,
        fast_settings(&["default"]),
        HandlerRegistry::with_builtins(),
    );
    wait_settled(&q, "garbled", JobStatus::Finished).await;
    wait_settled(&q, "fine", JobStatus::Finished).await;
    let rec = q.fetch("garbled").await.unwrap();
    assert_eq!(rec.fields["forge_orphaned"], "1", "counter restarted");
    let rec = q.fetch("fine").await.unwrap();
    assert_eq!(rec.fields["forge_orphaned"], "2");
    let ghosts: bool = pool
        .sismember(Keys::inflight_workers(), "ghost")
        .await
        .unwrap();
    assert!(!ghosts, "the dead worker is forgotten");
    worker.stop().await;
}
