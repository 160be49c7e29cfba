//! Shared pieces of dynamicproxy's integration tests: an echo backend that
//! reports what it received, the proxy started in-process against a real
//! redis-server, a small HTTP client, and `redis-cli`.

#![allow(dead_code, clippy::unwrap_used)]

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamicproxy::{Config, Listeners};
use forge_core::{BackendUrl, Shutdown};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend answering every request with a JSON description of it.
pub struct EchoBackend {
    /// Its name, echoed as `backend`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl EchoBackend {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an echo backend.
pub async fn echo_backend(name: &str) -> EchoBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = name.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let n = n.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = n.clone();
                    async move { Ok::<_, Infallible>(echo(&n, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    EchoBackend {
        name: name.to_owned(),
        addr,
        task,
    }
}

async fn echo(name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        headers.insert(
            k.as_str().to_owned(),
            serde_json::Value::String(v.to_str().unwrap_or("?").to_owned()),
        );
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let doc = serde_json::json!({
        "backend": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
    });
    Response::new(Full::new(Bytes::from(doc.to_string())))
}

/// The proxy running in-process.
pub struct ProxyUnderTest {
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Stops it.
    pub shutdown: Shutdown,
    /// Its task.
    pub task: tokio::task::JoinHandle<Result<(), dynamicproxy::Error>>,
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        self.shutdown.force();
    }
}

/// The admin token of test proxies ([`test_config`]); [`admin_json`] sends it.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A file holding [`ADMIN_TOKEN`], written once per test process.
pub fn admin_token_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "dynamicproxy-test-admin-token-{}",
            std::process::id()
        ));
        std::fs::write(&path, ADMIN_TOKEN).unwrap();
        path
    })
    .clone()
}

/// A configuration for tests: fast health checks and resyncs, short Redis
/// timeouts, domain `toolforge.org`, the admin token [`ADMIN_TOKEN`].
pub fn test_config(redis_url: &str, default_upstream: &str) -> Config {
    let mut c = Config {
        default_upstream: Some(BackendUrl::parse(default_upstream).unwrap()),
        domains: vec!["toolforge.org".into()],
        admin_token_file: Some(admin_token_file()),
        ..Default::default()
    };
    c.redis.url = redis_url.to_owned();
    c.redis.command_timeout_ms = 500;
    c.redis.connect_timeout_ms = 500;
    c.routes.health_interval_ms = 200;
    c.routes.resync_interval_ms = 1000;
    c.upstream.connect_timeout_ms = 1000;
    c.server.drain_timeout_ms = 1000;
    // The routing tests use clients without a User-Agent and send requests
    // in bursts; the limit tests turn these back on.
    c.limits.require_user_agent = false;
    c.limits.rate_per_second = 0;
    c
}

/// Starts the proxy with `config` on loopback port 0.
pub async fn start_proxy(config: Config) -> ProxyUnderTest {
    start_proxy_on(config, None).await
}

/// Starts the proxy with `config` on loopback port 0, serving TLS on
/// `https` too (`config.tls.dir` must be set).
pub async fn start_proxy_with_https(config: Config, https: TcpListener) -> ProxyUnderTest {
    start_proxy_on(config, Some(https)).await
}

async fn start_proxy_on(config: Config, https: Option<TcpListener>) -> ProxyUnderTest {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, admin_addr) = (http.local_addr().unwrap(), admin.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(dynamicproxy::run(
        Listeners { http, admin, https },
        config,
        shutdown.clone(),
    ));
    ProxyUnderTest {
        http: http_addr,
        admin: admin_addr,
        shutdown,
        task,
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
}

impl Reply {
    /// The body as JSON (`null` when it isn't).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Which echo backend answered (empty when none did).
    pub fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or("").to_owned()
    }
}

/// `GET path` to `addr` with `Host: host` over HTTP/1.1.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("request timed out")
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends raw bytes, returns the whole raw response (connection closed by the
/// request's `Connection: close`).
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed raw response.
#[derive(Debug)]
pub struct RawReply {
    /// The status code.
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    /// The body.
    pub body: String,
}

impl RawReply {
    /// The value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    }
}

/// `GET path` with `Host: host` and extra header lines, over a fresh
/// connection.
pub async fn request(addr: SocketAddr, host: &str, path: &str, extra: &str) -> RawReply {
    let r = raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await;
    let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawReply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Runs `redis-cli -p PORT args…` and returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls `check` until it returns true; panics with `what` after 15 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > Duration::from_secs(15) {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the proxy answers on its HTTP listener (its first table is loaded).
pub async fn wait_serving(p: &ProxyUnderTest) {
    let addr = p.http;
    eventually("proxy serving", || async move {
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            get_quick(addr, "probe.toolforge.org", "/"),
        )
        .await;
        matches!(r, Ok(Some(_)))
    })
    .await;
}

async fn get_quick(addr: SocketAddr, host: &str, path: &str) -> Option<StatusCode> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .ok()?;
    client.request(req).await.ok().map(|r| r.status())
}

/// `GET` on the admin listener with the admin token, body as JSON.
pub async fn admin_json(p: &ProxyUnderTest, path: &str) -> (StatusCode, serde_json::Value) {
    let r = request(
        p.admin,
        "localhost",
        path,
        &format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"),
    )
    .await;
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let json = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Serves `handler` over HTTP/1.1 (upgrades allowed) on a fresh loopback
/// port for the rest of the test; returns the backend's URL.
pub async fn serve_backend<F, Fut>(handler: F) -> String
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    url
}

/// A backend that accepts any Upgrade and echoes bytes on the upgraded
/// connection (a request without one gets an empty 200); returns its URL.
pub async fn upgrade_backend() -> String {
    serve_backend(|mut req: Request<Incoming>| async move {
        let mut resp = Response::new(Full::new(Bytes::new()));
        if let Some(p) = req.headers().get("upgrade").cloned() {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 1024];
                loop {
                    let n = io.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    io.write_all(&buf[..n]).await.unwrap();
                }
            });
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut().insert("upgrade", p);
            resp.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
        }
        resp
    })
    .await
}
