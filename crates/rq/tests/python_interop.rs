//! python-rq interoperability: python enqueues, we run; we enqueue, python
//! and `rq info` see it. Needs `FORGE_TEST_PYTHON` (a Python with `rq`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use forge_rq::{EnqueueOptions, HandlerRegistry, JobArgs, JobStatus, Queue};
use serde_json::{Value, json};

const PY_PRELUDE: &str = r#"
import os, json, sys
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
conn = Redis.from_url(os.environ['REDIS_URL'])
"#;

#[tokio::test]
async fn python_enqueued_job_runs_here_and_python_reads_the_result() {
    let _ = python();
    let redis = redis().await;
    let url = redis.url();
    let mut registry = HandlerRegistry::with_builtins();
    registry.register("tests.add", |_ctx, args: JobArgs| async move {
        let a: i64 = args.arg(0)?;
        let b: i64 = args.kwarg("b")?;
        Ok(json!({"sum": a + b}))
    });
    let worker = start_worker(&url, fast_settings(&["default", "notification"]), registry);
    let id = run_python(
        &url,
        &format!(
            "{PY_PRELUDE}
q = Queue('notification', connection=conn, serializer=JSONSerializer)
job = q.enqueue('tests.add', 40, b=2)
e = q.enqueue('forge.echo', 1, 'two', [3])
print(job.id + ' ' + e.id)"
        ),
    );
    let ids: Vec<&str> = id.split_whitespace().collect();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "notification");
    for id in &ids {
        eventually("python job finished", Duration::from_secs(15), || async {
            let r = q.fetch(id).await.ok()?;
            (r.status() == Some(JobStatus::Finished)).then_some(())
        })
        .await;
    }
    let out = run_python(
        &url,
        &format!(
            "{PY_PRELUDE}
for i in sys.argv[1:] if len(sys.argv) > 1 else {ids:?}:
    job = Job.fetch(i, connection=conn, serializer=JSONSerializer)
    print(json.dumps([job.get_status(), job.return_value(), job.func_name, str(job.worker_name)]))"
        ),
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0][0], "finished");
    assert_eq!(lines[0][1], json!({"sum": 42}));
    assert_eq!(lines[0][2], "tests.add");
    assert_eq!(lines[0][3], worker.name.as_str());
    assert_eq!(lines[1][0], "finished");
    assert_eq!(lines[1][1], json!([1, "two", [3]]));
    worker.stop().await;
}

#[tokio::test]
async fn our_jobs_and_workers_are_visible_to_python_and_rq_info() {
    let _ = python();
    let redis = redis().await;
    let url = redis.url();
    let pool = pool(&url).await;
    let q = Queue::new(pool.clone(), "default");
    let opts = EnqueueOptions {
        timeout: Some(Duration::from_secs(42)),
        result_ttl: Some(Duration::from_secs(1000)),
        description: Some("an echo".into()),
        ..Default::default()
    };
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("k".into(), json!("v"));
    let id = q
        .enqueue_with_kwargs("forge.echo", vec![json!(1), json!("a")], kwargs, opts)
        .await
        .unwrap();
    let scheduled = q
        .enqueue(
            "forge.echo",
            vec![],
            EnqueueOptions::default().run_in(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let out = run_python(
        &url,
        &format!(
            "{PY_PRELUDE}
job = Job.fetch('{id}', connection=conn, serializer=JSONSerializer)
q = Queue('default', connection=conn, serializer=JSONSerializer)
s = Job.fetch('{scheduled}', connection=conn, serializer=JSONSerializer)
print(json.dumps([job.get_status(), job.func_name, list(job.args), job.kwargs, job.timeout, job.result_ttl,
  job.description, job.origin, len(q), q.job_ids, s.get_status(), q.scheduled_job_registry.get_job_ids()]))"
        ),
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v,
        json!(["queued", "forge.echo", [1, "a"], {"k": "v"}, 42, 1000, "an echo", "default", 1, [id], "scheduled", [scheduled]])
    );
    // A running worker shows up in `rq info`, the queue with its length.
    let worker = start_worker(&url, fast_settings(&["default"]), HandlerRegistry::new());
    // The worker has no handler for forge.echo: the job fails cleanly.
    eventually("job failed", Duration::from_secs(10), || async {
        (q.fetch(&id).await.ok()?.status() == Some(JobStatus::Failed)).then_some(())
    })
    .await;
    let rq = std::path::Path::new(&python()).with_file_name("rq");
    let info = std::process::Command::new(&rq)
        .args([
            "info",
            "--url",
            &url,
            "--serializer",
            "rq.serializers.JSONSerializer",
        ])
        .output()
        .expect("run rq info");
    let text = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(
        info.status.success(),
        "rq info failed: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(text.contains("default"), "rq info: {text}");
    assert!(
        text.contains(&worker.name),
        "rq info does not list our worker: {text}"
    );
    let out = run_python(
        &url,
        &format!(
            "{PY_PRELUDE}
from rq import Worker
from rq.registry import FailedJobRegistry
ws = Worker.all(connection=conn)
job = Job.fetch('{id}', connection=conn, serializer=JSONSerializer)
r = job.latest_result()
print(json.dumps([[w.name for w in ws], [q.name for q in ws[0].queues], job.get_status(),
  FailedJobRegistry('default', connection=conn).get_job_ids(), r.exc_string if r else None]))"
        ),
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v[0], json!([worker.name]));
    assert_eq!(v[1], json!(["default"]));
    assert_eq!(v[2], "failed");
    assert_eq!(v[3], json!([id]));
    assert!(
        v[4].as_str()
            .unwrap()
            .contains("no handler registered for \"forge.echo\""),
        "{v}"
    );
    worker.stop().await;
    // After a clean stop the worker is gone from rq:workers.
    let out = run_python(
        &url,
        &format!("{PY_PRELUDE}\nfrom rq import Worker\nprint(len(Worker.all(connection=conn)))"),
    );
    assert_eq!(out.trim(), "0");
}
