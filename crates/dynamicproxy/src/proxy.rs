//! The proxy itself: accept connections (HTTP/1.1 and HTTP/2, negotiated by
//! hyper-util's `auto` builder), decide each request's backend from the
//! in-memory route table, and forward it over a pooled HTTP/1.1 client,
//! streaming bodies in both directions.
//!
//! A request passes through three stages, kept apart so later features slot
//! in: [`Proxy::filter`] (requests answered by the proxy itself: missing
//! `Host`; rate limits and blocks go here), routing ([`RouteTable::route`]),
//! and [`Proxy::forward`] (headers rewritten as in `docs/dynamicproxy.md`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use forge_core::{Reloadable, Shutdown};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::{ServerSettings, Settings, UpstreamSettings};
use crate::metrics::Metrics;
use crate::table::{Backend, Decision, Routes};

/// The body of every response: the backend's, streamed, or the proxy's own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static PROXY: HeaderName = HeaderName::from_static("proxy");

/// Where a connection came in.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client.
    pub peer: SocketAddr,
    /// The local port (sent as `X-Forwarded-Port`).
    pub local_port: u16,
    /// `http` or `https` (sent as `X-Forwarded-Proto`).
    pub https: bool,
}

/// The request handler shared by every connection.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    routes: Arc<Routes>,
    settings: Arc<Reloadable<Settings>>,
    client: Client<HttpConnector, Incoming>,
    metrics: Metrics,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proxy")
    }
}

impl Proxy {
    /// A proxy reading `routes` and `settings`, connecting to backends as
    /// `upstream` says.
    pub fn new(
        routes: Arc<Routes>,
        settings: Arc<Reloadable<Settings>>,
        upstream: &UpstreamSettings,
        metrics: Metrics,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(
            upstream.connect_timeout_ms.max(1),
        )));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(upstream.idle_timeout_ms.max(1)))
            .pool_max_idle_per_host(upstream.max_idle_per_backend)
            .build(connector);
        Proxy {
            inner: Arc::new(ProxyInner {
                routes,
                settings,
                client,
                metrics,
            }),
        }
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let resp = match self.filter(&req) {
            Err((status, text)) => plain(status, text),
            Ok(host) => self.route_and_forward(req, host, conn).await,
        };
        self.inner.metrics.response(resp.status());
        resp
    }

    /// Requests the proxy answers itself. Returns the request's host.
    fn filter(&self, req: &Request<Incoming>) -> Result<String, (StatusCode, &'static str)> {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .map(str::trim)
            .unwrap_or("");
        if host.is_empty() {
            return Err((StatusCode::BAD_REQUEST, "Missing Host header\n"));
        }
        if !host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        }) {
            return Err((StatusCode::BAD_REQUEST, "Invalid Host header\n"));
        }
        Ok(host.to_owned())
    }

    async fn route_and_forward(
        &self,
        req: Request<Incoming>,
        host: String,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let settings = self.inner.settings.get();
        let decision = self
            .inner
            .routes
            .load()
            .route(&host, req.uri().path(), &settings);
        let m = &self.inner.metrics;
        let backend = match decision {
            Decision::Route(b) => {
                m.hit.increment(1);
                b
            }
            Decision::Frontend(b) => {
                m.frontend.increment(1);
                b
            }
            Decision::Miss => {
                m.miss.increment(1);
                return self
                    .forward(
                        req,
                        &host,
                        &settings.default_backend.clone(),
                        conn,
                        &settings,
                    )
                    .await;
            }
            Decision::OutsideDefault => {
                m.outside.increment(1);
                return self
                    .forward(
                        req,
                        &host,
                        &settings.default_backend.clone(),
                        conn,
                        &settings,
                    )
                    .await;
            }
            Decision::OutsideReject => {
                m.outside.increment(1);
                return plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    "This host is not served here\n",
                );
            }
        };
        self.forward(req, &host, &backend, conn, &settings).await
    }

    /// Sends the request to `backend` and streams its answer back.
    async fn forward(
        &self,
        req: Request<Incoming>,
        host: &str,
        backend: &Backend,
        conn: ConnInfo,
        settings: &Settings,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let original_uri = path_and_query.as_str().to_owned();
        let uri = Uri::builder()
            .scheme(backend.scheme.clone())
            .authority(backend.authority.clone())
            .path_and_query(path_and_query)
            .build();
        let uri = match uri {
            Ok(u) => u,
            Err(_) => return plain(StatusCode::BAD_REQUEST, "Invalid request URI\n"),
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let h = &mut parts.headers;
        strip_hop_by_hop(h);
        h.remove(&PROXY);
        let bare_host = forge_core::schema::strip_port(host).to_ascii_lowercase();
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(header::HOST, v);
        }
        if let Ok(v) = HeaderValue::from_str(&bare_host) {
            h.insert(X_FORWARDED_HOST.clone(), v);
        }
        h.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(conn.local_port));
        h.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if conn.https { "https" } else { "http" }),
        );
        if let Ok(v) = HeaderValue::from_str(&original_uri) {
            h.insert(X_ORIGINAL_URI.clone(), v);
        }
        if settings.forwarded_for {
            let ip = conn.peer.ip().to_canonical().to_string();
            let value = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
                _ => ip,
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        let started = Instant::now();
        match self
            .inner
            .client
            .request(Request::from_parts(parts, body))
            .await
        {
            Ok(resp) => {
                self.inner
                    .metrics
                    .upstream_seconds
                    .record(started.elapsed().as_secs_f64());
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) => {
                self.inner.metrics.upstream_errors.increment(1);
                tracing::warn!(backend = %backend.url, host, error = %error_chain(&e), "backend request failed");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "Bad Gateway: the backend is unreachable\n",
                )
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// A short text response from the proxy itself.
pub fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Accepts connections on `listener` until shutdown, then drains open ones
/// within `server.drain_timeout_ms`.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    server: ServerSettings,
    https: bool,
    shutdown: Shutdown,
) {
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(server.header_read_timeout_ms.max(1)))
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.triggered() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let info = ConnInfo {
            peer,
            local_port,
            https,
        };
        let proxy = proxy.clone();
        let service = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, info).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let bound = Duration::from_millis(server.drain_timeout_ms);
    forge_core::lifecycle::drain_within(&shutdown, bound, graceful.shutdown()).await;
}
