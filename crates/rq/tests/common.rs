//! Shared helpers for forge-rq's tests: a real Redis, a pool, a worker
//! running in-process, python-rq from `FORGE_TEST_PYTHON`.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use forge_core::Shutdown;
use forge_core::redis::RedisSettings;
use forge_rq::{HandlerRegistry, Worker, WorkerSettings};
use forge_test_support::RedisServer;
use fred::prelude::*;

pub async fn redis() -> RedisServer {
    RedisServer::start().await.expect("start redis-server")
}

pub async fn pool(url: &str) -> Pool {
    let p = RedisSettings::for_url(url).pool().unwrap();
    p.init().await.unwrap();
    p
}

/// Settings with short intervals so tests run quickly.
pub fn fast_settings(queues: &[&str]) -> WorkerSettings {
    WorkerSettings {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        concurrency: 8,
        heartbeat_interval_ms: 200,
        orphan_after_ms: 1_000,
        reap_interval_ms: 250,
        scheduler_interval_ms: 200,
        drain_timeout_secs: 5,
        ..Default::default()
    }
}

pub struct Running {
    pub shutdown: Shutdown,
    pub handle: tokio::task::JoinHandle<Result<(), forge_rq::RqError>>,
    pub name: String,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.handle.await.unwrap().unwrap();
    }
}

pub fn start_worker(url: &str, settings: WorkerSettings, registry: HandlerRegistry) -> Running {
    let worker = Worker::new(settings, RedisSettings::for_url(url), registry).unwrap();
    let name = worker.name().to_owned();
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    Running {
        shutdown,
        handle,
        name,
    }
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > within {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Python interpreter with python-rq installed.
pub fn python() -> String {
    match std::env::var("FORGE_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "this test needs python-rq: set FORGE_TEST_PYTHON to a Python with `rq` installed, e.g.\n  \
             python3 -m venv target/pyvenv && target/pyvenv/bin/pip install rq\n  \
             export FORGE_TEST_PYTHON=$PWD/target/pyvenv/bin/python\n(scripts/test does this)"
        ),
    }
}

/// Runs a Python snippet with `REDIS_URL` set; returns stdout, panics with stderr on failure.
pub fn run_python(url: &str, code: &str) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(code)
        .env("REDIS_URL", url)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
