//! Fuzzes the job hash against a real Redis: a seeded random generator
//! writes hostile values into every field the worker, its Lua scripts and
//! python-rq read (timeouts, TTLs, retry state, payloads, dependency lists,
//! orphan counters, statuses), as queued jobs, deferred dependents and
//! orphans of a dead worker. Then it checks that no panic happened anywhere,
//! that every job ends in exactly one registry (finished, failed, scheduled
//! for a retry, deferred behind a failed dependency) or was finished and
//! deleted by a zero `result_ttl`, that nothing is left queued, started or in
//! flight, and that the worker still runs jobs.
//!
//! `FORGE_FUZZ_SEED` and `FORGE_FUZZ_JOBS` change the seed (printed on
//! failure) and the number of jobs.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use forge_rq::job::{JobCall, encode_data, zlib};
use forge_rq::{
    EnqueueOptions, HandlerRegistry, JobArgs, JobError, JobStatus, Keys, Queue, Registry,
};
use fred::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Panics seen anywhere in this test binary (one test per binary, so the
/// process-wide hook counts only this test's).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// The payload bound the worker runs with: small, so bombs are cheap.
const DATA_LIMIT: u64 = 64 * 1024;

/// Field values that have broken parsers: non-numbers, non-finite and
/// out-of-range numbers, python-rq's unit spellings, invalid UTF-8, JSON of
/// the wrong shape.
const NASTY: &[&[u8]] = &[
    b"",
    b" ",
    b"0",
    b"-0",
    b"1",
    b"-1",
    b"-2",
    b"2",
    b"180",
    b"1.5",
    b"-1.5",
    b"0.0001",
    b"nan",
    b"NaN",
    b"-nan",
    b"inf",
    b"-inf",
    b"infinity",
    b"1e300",
    b"-1e300",
    b"1e-300",
    b"0x10",
    b"99999999999999999999",
    b"18446744073709551615",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"4294967295",
    b"4294967296",
    b"31536001",
    b"3m",
    b"1H",
    b"2d",
    b"5x",
    b"99999999999999999999d",
    b"m",
    b"\xff",
    b"\xff\xfe",
    b"\xe2\x82",
    b"\x00",
    b"[]",
    b"[0]",
    b"[1, 2]",
    b"[0.5]",
    b"[-1]",
    b"[1e400]",
    b"[\"x\"]",
    b"[18446744073709551615]",
    b"[null]",
    b"{}",
    b"{\"base_ms\":1,\"max_ms\":2,\"jitter\":0.5}",
    b"{\"base_ms\":18446744073709551615,\"max_ms\":18446744073709551615,\"jitter\":1}",
    b"{\"base_ms\":1,\"max_ms\":100,\"jitter\":-7}",
    b"{\"base_ms\":1}",
    b"null",
    b"true",
    b"\"str\"",
    b"queued",
    b"started",
    b"finished",
    b"failed",
    b"deferred",
    b"scheduled",
    b"default",
    b"2023-11-14T22:13:20.123456Z",
    b"9999-12-31T23:59:59.999999Z",
    b"0000-01-01T00:00:00Z",
];

/// Fields a producer writes and something on our side reads.
const FIELDS: &[&str] = &[
    "timeout",
    "result_ttl",
    "failure_ttl",
    "retries_left",
    "number_of_retries",
    "retry_intervals",
    "forge_retry_intervals_ms",
    "forge_backoff",
    "enqueue_at_front_on_retry",
    "enqueue_at_front",
    "forge_orphaned",
    "status",
    "origin",
    "enqueued_at",
    "created_at",
    "description",
    "meta",
    "dependency_id",
    "dependency_ids",
    "worker_name",
    "exc_info",
    "result",
];

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0..=6 => NASTY[rng.random_range(0..NASTY.len())].to_vec(),
        7 => rng.random::<i64>().to_string().into_bytes(),
        8 => f64::from_bits(rng.random::<u64>()).to_string().into_bytes(),
        _ => {
            let n = rng.random_range(0..24);
            (0..n).map(|_| rng.random::<u8>()).collect()
        }
    }
}

fn call_data(func: &str, args: serde_json::Value) -> Vec<u8> {
    let serde_json::Value::Array(args) = args else {
        panic!("args must be a list")
    };
    encode_data(&JobCall {
        func_name: func.into(),
        args,
        kwargs: Default::default(),
    })
}

fn random_data(rng: &mut StdRng, id: &str) -> Vec<u8> {
    match rng.random_range(0..12) {
        0..=5 => call_data("fuzz.echo", json!([id])),
        6 | 7 => call_data("fuzz.fail", json!([id])),
        8 => random_value(rng),
        9 => zlib(&random_value(rng)),
        10 => {
            // Inflates past the bound.
            let mut json = b"[\"fuzz.echo\", null, [\"".to_vec();
            json.resize(json.len() + 2 * DATA_LIMIT as usize, b'z');
            json.extend_from_slice(b"\"], {}]");
            zlib(&json)
        }
        _ => zlib(
            [
                &b"[\"fuzz.echo\", "[..],
                &random_value(rng)[..],
                &b", [1], {}]"[..],
            ]
            .concat()
            .as_slice(),
        ),
    }
}

/// One fuzzed job hash (without `data` and `status` handled by the caller).
fn random_fields(rng: &mut StdRng) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for f in FIELDS {
        if rng.random_bool(0.12) {
            let mut v = random_value(rng);
            // A job marked canceled while still in a queue is skipped by
            // design (python-rq's semantics); keep that out of the invariant.
            if *f == "status" && v == b"canceled" {
                v = b"queued".to_vec();
            }
            out.push((*f, v));
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planted {
    Queued,
    Dependent,
    Orphan,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_field_values_never_panic_wedge_or_lose_a_job() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let seed: u64 = std::env::var("FORGE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f0f6_e001);
    let jobs: usize = std::env::var("FORGE_FUZZ_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    eprintln!("fuzz seed {seed}, {jobs} jobs (FORGE_FUZZ_SEED / FORGE_FUZZ_JOBS)");
    let mut rng = StdRng::seed_from_u64(seed);

    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let keys = Keys::default();
    let q = Queue::new(pool.clone(), "default");

    let ran: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut reg = HandlerRegistry::new();
    let r = ran.clone();
    reg.register("fuzz.echo", move |ctx, args: JobArgs| {
        let r = r.clone();
        async move {
            r.lock().unwrap().insert(ctx.job_id.clone());
            Ok(serde_json::Value::Array(args.args))
        }
    });
    reg.register("fuzz.fail", |ctx, _args: JobArgs| async move {
        // Retryable at first, then for good, so huge retry counts end.
        Err::<serde_json::Value, _>(if ctx.attempt < 2 {
            JobError::retryable("fuzz.fail fails")
        } else {
            JobError::permanent("fuzz.fail fails for good")
        })
    });

    let mut planted: HashMap<String, Planted> = HashMap::new();
    let mut parents: Vec<String> = Vec::new();
    for i in 0..jobs {
        let id = format!("fz-{i}");
        let mut fields = random_fields(&mut rng);
        fields.push(("data", random_data(&mut rng, &id)));
        let kind = match rng.random_range(0..10) {
            0 if !parents.is_empty() => Planted::Dependent,
            1 => Planted::Orphan,
            _ => Planted::Queued,
        };
        let jk = keys.job(&id);
        match kind {
            Planted::Queued => {
                if !fields.iter().any(|(f, _)| *f == "status") {
                    fields.push(("status", b"queued".to_vec()));
                }
                let _: () = pool.hset(&jk, fields).await.unwrap();
                let _: () = pool.rpush(keys.queue("default"), &id).await.unwrap();
                parents.push(id.clone());
            }
            Planted::Dependent => {
                let parent = parents[rng.random_range(0..parents.len())].clone();
                fields.retain(|(f, _)| *f != "status" && *f != "origin");
                fields.push(("status", b"deferred".to_vec()));
                fields.push(("origin", b"default".to_vec()));
                if rng.random_bool(0.5) {
                    fields.retain(|(f, _)| *f != "dependency_ids");
                    fields.push(("dependency_ids", json!([parent]).to_string().into_bytes()));
                }
                let _: () = pool.hset(&jk, fields).await.unwrap();
                let _: () = pool
                    .sadd(format!("{}:dependents", keys.job(&parent)), &id)
                    .await
                    .unwrap();
                let _: () = pool
                    .zadd(
                        keys.registry(Registry::Deferred, "default"),
                        None,
                        None,
                        false,
                        false,
                        (f64::INFINITY, id.as_str()),
                    )
                    .await
                    .unwrap();
            }
            Planted::Orphan => {
                let ghost = format!("ghost-{}", rng.random_range(0..3));
                let composite = format!("{id}:dead-1");
                fields.retain(|(f, _)| *f != "status");
                fields.push(("status", b"started".to_vec()));
                let _: () = pool.hset(&jk, fields).await.unwrap();
                let _: () = pool
                    .hset(
                        Keys::inflight(&ghost),
                        (&id, format!("default\t{composite}")),
                    )
                    .await
                    .unwrap();
                let _: () = pool.sadd(Keys::inflight_workers(), &ghost).await.unwrap();
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
        }
        planted.insert(id, kind);
    }

    let mut settings = fast_settings(&["default"]);
    settings.max_job_data_bytes = DATA_LIMIT.try_into().unwrap();
    let worker = start_worker(&url, settings, reg);

    // Where each job ended, once nothing moves any more.
    let registries = [
        Registry::Finished,
        Registry::Failed,
        Registry::Scheduled,
        Registry::Deferred,
    ];
    let outcome = eventually(
        "every fuzzed job to settle",
        Duration::from_secs(180),
        || async {
            let queued: i64 = pool.llen(keys.queue("default")).await.ok()?;
            let started: i64 = pool
                .zcard(keys.registry(Registry::Started, "default"))
                .await
                .ok()?;
            let held: i64 = pool.hlen(Keys::inflight(&worker.name)).await.ok()?;
            let ghosts: i64 = pool.scard(Keys::inflight_workers()).await.ok()?;
            if queued + started + held > 0 || ghosts > 1 {
                return None;
            }
            let mut member: HashMap<String, Vec<Registry>> = HashMap::new();
            for r in registries {
                for id in q.registry_ids(r).await.ok()? {
                    member.entry(id).or_default().push(r);
                }
            }
            let ran = ran.lock().unwrap().clone();
            let unaccounted = planted
                .keys()
                .filter(|id| !member.contains_key(*id) && !ran.contains(*id))
                .count();
            (unaccounted == 0).then_some(member)
        },
    )
    .await;

    let ran = ran.lock().unwrap().clone();
    let mut tally: HashMap<String, usize> = HashMap::new();
    for (id, kind) in &planted {
        let regs = outcome.get(id).cloned().unwrap_or_default();
        assert!(
            regs.len() <= 1,
            "seed {seed}: job {id} ({kind:?}) is in several registries: {regs:?}"
        );
        let exists: bool = pool.exists(keys.job(id)).await.unwrap();
        match regs.first() {
            None => {
                // Only a job that ran and was deleted by result_ttl 0.
                assert!(
                    ran.contains(id) && !exists,
                    "seed {seed}: job {id} ({kind:?}) is in no registry"
                );
                *tally.entry("finished, deleted".into()).or_default() += 1;
            }
            Some(Registry::Failed) if exists => {
                let rec = q.fetch(id).await.unwrap();
                assert_eq!(rec.status(), Some(JobStatus::Failed), "seed {seed}: {id}");
                assert!(
                    rec.exc_info().is_some_and(|e| !e.is_empty()),
                    "seed {seed}: failed job {id} has no exc_info"
                );
                *tally.entry("failed".into()).or_default() += 1;
            }
            Some(r) => *tally.entry(format!("{r:?}")).or_default() += 1,
        }
    }
    eprintln!("fuzz outcome: {tally:?}");

    // The worker is alive and well.
    let good = q
        .enqueue("fuzz.echo", vec![json!("after")], EnqueueOptions::default())
        .await
        .unwrap();
    eventually("a job after the fuzz", Duration::from_secs(30), || async {
        (q.fetch(&good).await.ok()?.status() == Some(JobStatus::Finished)).then_some(())
    })
    .await;
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "seed {seed}: something panicked (see the output above)"
    );
    worker.stop().await;
}
