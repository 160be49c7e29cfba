//! Bodies stream through the proxy in both directions: nothing is buffered
//! whole. (Its own test binary so the memory check sees only this test.)

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use forge_test_support::RedisServer;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

const MB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// A backend: `/upload` counts the body's bytes (reporting the first chunk on
/// `first_in`), `/download?<n>` sends n bytes, `/interlock` sends one chunk,
/// waits for `release`, then a second.
struct StreamBackend {
    url: String,
    first_in: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

async fn stream_backend() -> StreamBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let first_in: Arc<Mutex<Option<oneshot::Sender<()>>>> = Arc::default();
    let release: Arc<Mutex<Option<oneshot::Receiver<()>>>> = Arc::default();
    let (fi, rel) = (first_in.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (fi, rel) = (fi.clone(), rel.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (fi, rel) = (fi.clone(), rel.clone());
                    async move { Ok::<_, Infallible>(serve(req, fi, rel).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    StreamBackend {
        url,
        first_in,
        release,
    }
}

async fn serve(
    req: Request<Incoming>,
    first_in: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
) -> Response<BoxBody> {
    match req.uri().path() {
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    n += data.len();
                    if n > 0
                        && let Some(tx) = first_in.lock().unwrap().take()
                    {
                        let _ = tx.send(());
                    }
                }
            }
            Response::new(Full::new(Bytes::from(n.to_string())).boxed())
        }
        "/download" => {
            let total: usize = req.uri().query().unwrap().parse().unwrap();
            let chunks = futures::stream::iter(
                (0..total / CHUNK)
                    .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; CHUNK])))),
            );
            Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
        "/interlock" => {
            let rx = release.lock().unwrap().take().unwrap();
            let first = futures::stream::once(async {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"first")))
            });
            let second = futures::stream::once(async move {
                let _ = rx.await;
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"second")))
            });
            Response::new(BodyExt::boxed(StreamBody::new(first.chain(second))))
        }
        _ => Response::new(Full::new(Bytes::new()).boxed()),
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    let redis = RedisServer::start().await.unwrap();
    let backend = stream_backend().await;
    cli(redis.port(), &["HSET", "prefix:big", ".*", &backend.url]);
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    // Bodies past `buffer_body_bytes` stream; with 0 that is all of them.
    c.server.buffer_body_bytes = 0;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    let client =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<BoxBody>();

    // Request body: the backend sees the first chunk while the client still
    // holds the rest back — impossible if the proxy buffered the body.
    let (first_tx, first_rx) = oneshot::channel();
    *backend.first_in.lock().unwrap() = Some(first_tx);
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(1);
    let body = BodyExt::boxed(StreamBody::new(
        tokio_stream_from(chunk_rx).map(|b| Ok::<_, Infallible>(Frame::data(b))),
    ));
    let req = Request::post(format!("http://{}/upload", p.http))
        .header("host", "big.toolforge.org")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(client.request(req));
    chunk_tx.send(Bytes::from_static(b"hello")).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), first_rx)
        .await
        .expect("the backend never saw the first chunk: the request body is buffered")
        .unwrap();
    chunk_tx.send(Bytes::from_static(b" world")).await.unwrap();
    drop(chunk_tx);
    let resp = pending.await.unwrap().unwrap();
    let n = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&n[..], b"11");

    // Response body: the client gets the first chunk while the backend still
    // holds the second back.
    let (release_tx, release_rx) = oneshot::channel();
    *backend.release.lock().unwrap() = Some(release_rx);
    let req = Request::get(format!("http://{}/interlock", p.http))
        .header("host", "big.toolforge.org")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("the first chunk never arrived: the response body is buffered")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second");

    // 100 MB each way, and the process's peak memory grows by far less.
    let before = peak_rss_kib();
    let total = 100 * MB;
    let chunks = futures::stream::iter(
        (0..total / CHUNK)
            .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'y'; CHUNK])))),
    );
    let req = Request::post(format!("http://{}/upload", p.http))
        .header("host", "big.toolforge.org")
        .body(BodyExt::boxed(StreamBody::new(chunks)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let n = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&n), total.to_string());

    let req = Request::get(format!("http://{}/download?{total}", p.http))
        .header("host", "big.toolforge.org")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let mut body = client.request(req).await.unwrap().into_body();
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            got += d.len();
        }
    }
    assert_eq!(got, total);
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 50,
        "peak memory grew by {grown_mib} MiB while streaming 100 MB: something buffers"
    );
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures::Stream<Item = Bytes> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
