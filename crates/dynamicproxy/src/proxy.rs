//! The proxy itself: accept connections (HTTP/1.1 and HTTP/2, negotiated by
//! hyper-util's `auto` builder), decide each request's backend from the
//! in-memory route table, and forward it over a pooled HTTP/1.1 client,
//! streaming bodies in both directions.
//!
//! A request passes through three stages: [`Proxy::handle`] answers what the
//! proxy answers itself (bad `Host` or framing — including what
//! [`framing`](crate::framing) saw below hyper —, `/.well-known/healthz`,
//! maintenance, the HTTPS redirect, [`guard`](crate::guard) blocks and the
//! rate limit), routing ([`RouteTable::route`](crate::table::RouteTable::route)), and `Proxy::forward`
//! (headers rewritten as in `docs/dynamicproxy.md`, `Location` to https,
//! upgrades spliced with an idle timeout). Every response then gets
//! `response_headers`, HSTS and, when enabled, an access-log line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use forge_core::schema::escape_controls;
use forge_core::{Reloadable, Shutdown};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use crate::activity::{ConnActivity, TrackedBody};
use crate::config::{ServerSettings, Settings, UpstreamSettings};
use crate::framing::{AmbiguousFraming, FramingVerdicts, Oversized, Verdict, WatchedIo};
use crate::metrics::Metrics;
use crate::table::{Backend, Decision, Routes};

/// The body of every response: the backend's, streamed, or the proxy's own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// A request body on its way to the backend: its first frame (already read,
/// so malformed framing is refused before the backend is contacted), then
/// the rest, streamed.
pub type UpstreamBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// An error reading the client's request body (bad chunk framing, a reset
/// connection): the client's fault, answered with 400.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body: {0}")]
pub struct ClientBodyError(#[source] hyper::Error);

/// A client that sent no piece of its request body within
/// `server.body_read_timeout_ms`: answered 408.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data within {0:?}")]
pub struct BodyReadTimeout(Duration);

/// The rest of a request body, each piece within the body read timeout.
struct TimedBody {
    /// The client's body.
    inner: Incoming,
    /// The time allowed between pieces.
    timeout: Duration,
    /// When the next piece is due.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.timeout;
                self.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(ClientBodyError(e)) as _)))
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(self.timeout))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// Why a request body could not be read before the backend was asked.
enum BodyStart {
    /// No data within the body read timeout (408).
    TimedOut,
    /// Broken framing (400).
    Malformed(hyper::Error),
}

/// Reads a request body before the backend is contacted: whole when it is
/// at most `settings.buffer_body_bytes`, else that much and then the rest
/// streamed; every piece within `settings.body_read_timeout`. A body whose
/// framing is broken from the start (a bad chunk size), or a client that
/// sends nothing, never reaches the backend.
async fn read_body_start(
    mut body: Incoming,
    settings: &Settings,
) -> Result<UpstreamBody, BodyStart> {
    let mut frames = Vec::new();
    let mut buffered = 0usize;
    while !body.is_end_stream() && buffered <= settings.buffer_body_bytes {
        match tokio::time::timeout(settings.body_read_timeout, body.frame()).await {
            Err(_) => return Err(BodyStart::TimedOut),
            Ok(None) => {
                let whole = futures::stream::iter(frames.into_iter().map(Ok));
                return Ok(http_body_util::StreamBody::new(whole).boxed_unsync());
            }
            Ok(Some(Err(e))) => return Err(BodyStart::Malformed(e)),
            Ok(Some(Ok(f))) => {
                buffered += f.data_ref().map_or(0, Bytes::len);
                frames.push(f);
            }
        }
    }
    let head = futures::stream::iter(frames.into_iter().map(Ok));
    if body.is_end_stream() {
        return Ok(http_body_util::StreamBody::new(head).boxed_unsync());
    }
    let rest = TimedBody {
        inner: body,
        timeout: settings.body_read_timeout,
        timer: Box::pin(tokio::time::sleep(settings.body_read_timeout)),
    };
    let tail = http_body_util::BodyStream::new(rest);
    Ok(http_body_util::StreamBody::new(futures::StreamExt::chain(head, tail)).boxed_unsync())
}

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
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static PROXY: HeaderName = HeaderName::from_static("proxy");

/// The pooled HTTP/1.1 client to backends that `upstream` describes.
fn backend_client(upstream: &UpstreamSettings) -> Client<HttpConnector, Limited<UpstreamBody>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(
        upstream.connect_timeout_ms.max(1),
    )));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_millis(upstream.idle_timeout_ms.max(1)))
        .pool_max_idle_per_host(upstream.max_idle_per_backend)
        .build(connector)
}

/// A request being handled, boxed (see [`serve`]).
type HandlerFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Response<TrackedBody<ProxyBody>>, Infallible>>
            + Send,
    >,
>;

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
    /// Shared by every worker thread's copy, so one client has one quota.
    limiter: Arc<crate::guard::ClientLimiter>,
    settings: Arc<Reloadable<Settings>>,
    /// This copy's backend connection pool (one per worker thread).
    client: Client<HttpConnector, Limited<UpstreamBody>>,
    /// How `client` was built, for [`Proxy::with_own_pool`].
    upstream: UpstreamSettings,
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
        Proxy {
            inner: Arc::new(ProxyInner {
                routes,
                limiter: Default::default(),
                settings,
                client: backend_client(upstream),
                upstream: upstream.clone(),
                metrics,
            }),
        }
    }

    /// The same proxy — routes, settings, rate-limit state, metrics — with
    /// a backend connection pool of its own, for another worker thread: a
    /// pooled connection then lives on the thread whose requests use it.
    pub fn with_own_pool(&self) -> Self {
        let inner = &self.inner;
        Proxy {
            inner: Arc::new(ProxyInner {
                routes: inner.routes.clone(),
                limiter: inner.limiter.clone(),
                settings: inner.settings.clone(),
                client: backend_client(&inner.upstream),
                upstream: inner.upstream.clone(),
                metrics: inner.metrics.clone(),
            }),
        }
    }

    /// Handles one request.
    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let started = Instant::now();
        let http1 = req.version() < http::Version::HTTP_2;
        let settings = self.inner.settings.get();
        let log = settings.access_log.wanted();
        let mut access = log.then(|| AccessInfo {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            ..AccessInfo::default()
        });
        // A request refused for its framing or host on HTTP/1: the rest of
        // the connection can't be trusted to be framed as the client meant.
        let mut close = false;
        let mut resp = match self.filter(&req, &settings) {
            Err((status, text)) => {
                close = http1;
                own(&settings, status, text)
            }
            // The proxy's own liveness URL, on every host (as today).
            Ok(_) if req.uri().path() == "/.well-known/healthz" => plain(StatusCode::OK, "OK\n"),
            Ok(_) if settings.maintenance => own(
                &settings,
                StatusCode::SERVICE_UNAVAILABLE,
                "This service is down for maintenance. Please try again later.",
            ),
            Ok(host) => {
                if let Some(a) = access.as_mut() {
                    a.host.clone_from(&host);
                }
                if settings.redirect_http && !conn.https {
                    // Port 80 only redirects, as today: no limits there.
                    redirect_to_https(&req, &host)
                } else if let Err(refusal) = settings.guard.check(conn.peer.ip(), req.headers()) {
                    self.inner.metrics.refused(refusal);
                    own(&settings, StatusCode::FORBIDDEN, refusal.message())
                } else if let Err(wait) = self.inner.limiter.check(&settings.guard, conn.peer.ip())
                {
                    self.inner.metrics.rate_limited.increment(1);
                    let mut r = own(
                        &settings,
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too many requests from your address; slow down.",
                    );
                    // Whole seconds, rounded up.
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                    r
                } else {
                    self.route_and_forward(req, host, conn, &settings, access.as_mut())
                        .await
                }
            }
        };
        for (name, value) in &settings.response_headers {
            match value {
                Some(v) => {
                    resp.headers_mut().insert(name.clone(), v.clone());
                }
                None => {
                    resp.headers_mut().remove(name);
                }
            }
        }
        if conn.https
            && let Some(hsts) = &settings.hsts
        {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        if close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.inner.metrics.response(resp.status());
        if let Some(a) = access {
            a.log(&resp, conn, started);
        }
        resp
    }

    /// Requests the proxy answers itself. Returns the request's host.
    fn filter(
        &self,
        req: &Request<Incoming>,
        settings: &Settings,
    ) -> Result<String, (StatusCode, &'static str)> {
        if let Some(o) = req.extensions().get::<Oversized>() {
            return Err(if o.request_line {
                (StatusCode::URI_TOO_LONG, "The request line is too long")
            } else {
                (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "The request header fields are too large",
                )
            });
        }
        if req.extensions().get::<AmbiguousFraming>().is_some() {
            return Err((
                StatusCode::BAD_REQUEST,
                "A request may not carry both Content-Length and Transfer-Encoding",
            ));
        }
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let header_host = hosts.next().and_then(|h| h.to_str().ok()).map(str::trim);
        if hosts.next().is_some() {
            return Err((
                StatusCode::BAD_REQUEST,
                "A request may carry one Host header only",
            ));
        }
        let host = match (req.uri().authority(), header_host) {
            // Absolute-form (HTTP/1.1) or :authority (HTTP/2) naming another
            // host than `Host`: refused, so no hop can route by the other one.
            (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "The Host header does not match the request target",
                ));
            }
            (Some(a), _) => a.as_str(),
            (None, h) => h.unwrap_or(""),
        };
        if host.is_empty() {
            return Err((StatusCode::BAD_REQUEST, "Missing Host header"));
        }
        if !host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        }) {
            return Err((StatusCode::BAD_REQUEST, "Invalid Host header"));
        }
        crate::malformed::check_host_labels(host)?;
        crate::malformed::check_target(req.method(), req.uri())?;
        let too_long = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > settings.max_body_bytes);
        if too_long {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"));
        }
        Ok(host.to_owned())
    }

    async fn route_and_forward(
        &self,
        req: Request<Incoming>,
        host: String,
        conn: ConnInfo,
        settings: &Settings,
        access: Option<&mut AccessInfo>,
    ) -> Response<ProxyBody> {
        let decision = self
            .inner
            .routes
            .load()
            .route(&host, req.uri().path(), settings);
        let fallback = match (req.method(), req.uri().path()) {
            (&http::Method::GET | &http::Method::HEAD, "/favicon.ico") => Some(false),
            (&http::Method::GET | &http::Method::HEAD, "/robots.txt") => Some(true),
            _ => None,
        };
        let m = &self.inner.metrics;
        let (backend, route) = match decision {
            Decision::Route(b) => {
                m.hit.increment(1);
                (b, "hit")
            }
            Decision::Frontend(b) => {
                m.frontend.increment(1);
                (b, "frontend")
            }
            Decision::Miss => {
                m.miss.increment(1);
                (settings.default_backend.clone(), "miss")
            }
            Decision::OutsideDefault => {
                m.outside.increment(1);
                (settings.default_backend.clone(), "outside")
            }
            Decision::OutsideReject => {
                m.outside.increment(1);
                return plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    "This host is not served here\n",
                );
            }
        };
        if let Some(a) = access {
            a.route = route;
            a.upstream = backend.url.to_string();
            if route == "hit" {
                a.tool = host.split('.').next().unwrap_or("").to_ascii_lowercase();
            }
            a.upstream_started = Some(Instant::now());
        }
        let resp = self.forward(req, &host, &backend, conn, settings).await;
        match fallback {
            Some(robots) if resp.status() == StatusCode::NOT_FOUND => {
                if robots {
                    settings.pages.robots()
                } else {
                    settings.pages.favicon()
                }
            }
            _ => resp,
        }
    }

    /// Sends the request to `backend` and streams its answer back.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        host: &str,
        backend: &Backend,
        conn: ConnInfo,
        settings: &Settings,
    ) -> Response<ProxyBody> {
        // WebSocket and other HTTP/1.1 upgrades: passed through, then the two
        // connections are spliced.
        let upgrade = if req.version() == http::Version::HTTP_11
            && has_token(req.headers(), header::CONNECTION, "upgrade")
        {
            req.headers().get(header::UPGRADE).cloned()
        } else {
            None
        };
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let body = match read_body_start(body, settings).await {
            Ok(b) => b,
            Err(BodyStart::TimedOut) => {
                return own(
                    settings,
                    StatusCode::REQUEST_TIMEOUT,
                    "The request body did not arrive in time.",
                );
            }
            Err(BodyStart::Malformed(e)) => {
                tracing::debug!(host, error = %e, "malformed request body");
                return settings
                    .pages
                    .error(StatusCode::BAD_REQUEST, "The request body is malformed.");
            }
        };
        let body = Limited::new(
            body,
            usize::try_from(settings.max_body_bytes).unwrap_or(usize::MAX),
        );
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
        if let Some(u) = &upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, u.clone());
        }
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
        // The client's own claims about who it is never reach the backend;
        // with `forwarded_for` the proxy states what it saw.
        h.remove(&X_FORWARDED_FOR);
        h.remove(&X_REAL_IP);
        h.remove(header::FORWARDED);
        if settings.forwarded_for {
            let ip = conn.peer.ip().to_canonical();
            let for_ = match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
            };
            let proto = if conn.https { "https" } else { "http" };
            let forwarded = format!("for={for_};host={bare_host};proto={proto}");
            let client = ip_value(ip);
            h.insert(X_FORWARDED_FOR.clone(), client.clone());
            h.insert(X_REAL_IP.clone(), client);
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                h.insert(header::FORWARDED, v);
            }
        }
        let started = Instant::now();
        let sent = tokio::time::timeout(
            settings.response_timeout,
            self.inner.client.request(Request::from_parts(parts, body)),
        )
        .await;
        let Ok(sent) = sent else {
            self.inner.metrics.upstream_errors.increment(1);
            tracing::warn!(backend = %backend.url, host, "backend did not answer in time");
            return settings.pages.error(
                StatusCode::GATEWAY_TIMEOUT,
                "The tool's web service did not answer in time.",
            );
        };
        match sent {
            Ok(mut resp) => {
                self.inner
                    .metrics
                    .upstream_seconds
                    .record(started.elapsed().as_secs_f64());
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                let backend_upgrade = resp.headers().get(header::UPGRADE).cloned();
                if switching && let Some(client_upgrade) = client_upgrade {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(splice(
                        client_upgrade,
                        backend_side,
                        settings.upgrade_idle_timeout,
                    ));
                }
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if switching && let Some(u) = backend_upgrade {
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    parts.headers.insert(header::UPGRADE, u);
                }
                if conn.https {
                    rewrite_location(&mut parts.headers, host);
                }
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) if is_length_limit(&e) => {
                plain(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large\n")
            }
            Err(e) if has_source::<BodyReadTimeout>(&e) => own(
                settings,
                StatusCode::REQUEST_TIMEOUT,
                "The request body did not arrive in time.",
            ),
            Err(e) if has_source::<ClientBodyError>(&e) => {
                tracing::debug!(host, error = %error_chain(&e), "request body failed");
                settings
                    .pages
                    .error(StatusCode::BAD_REQUEST, "The request body is malformed.")
            }
            Err(e) => {
                self.inner.metrics.upstream_errors.increment(1);
                tracing::warn!(backend = %backend.url, host, error = %error_chain(&e), "backend request failed");
                settings.pages.error(
                    StatusCode::BAD_GATEWAY,
                    "The tool's web service could not be reached.",
                )
            }
        }
    }
}

/// Copies bytes both ways between an upgraded client and backend
/// connection; closes both when no byte moved for `idle`.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    idle: Duration,
) {
    match tokio::join!(client, backend) {
        (Ok(c), Ok(b)) => {
            let start = tokio::time::Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let mut c = Touch {
                io: TokioIo::new(c),
                start,
                last: last.clone(),
            };
            let mut b = Touch {
                io: TokioIo::new(b),
                start,
                last: last.clone(),
            };
            let copy = tokio::io::copy_bidirectional(&mut c, &mut b);
            tokio::pin!(copy);
            loop {
                let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                tokio::select! {
                    r = &mut copy => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "upgraded connection ended");
                        }
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        let quiet_since = start + Duration::from_millis(last.load(Ordering::Relaxed));
                        if quiet_since + idle <= tokio::time::Instant::now() {
                            tracing::debug!(idle_s = idle.as_secs(), "upgraded connection idle; closing");
                            break;
                        }
                    }
                }
            }
        }
        (c, b) => tracing::debug!(
            client_ok = c.is_ok(),
            backend_ok = b.is_ok(),
            "upgrade failed"
        ),
    }
}

/// An upgraded stream that records when it last read bytes.
struct Touch<T> {
    io: T,
    start: tokio::time::Instant,
    /// Milliseconds after `start` of the last read, shared by both sides.
    last: Arc<AtomicU64>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Touch<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Touch<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Rewrites a backend's `Location: http://<host>…` to https (the request
/// came over TLS), as nginx's `proxy_redirect` did.
fn rewrite_location(h: &mut HeaderMap, host: &str) {
    let Some(loc) = h.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let bare = forge_core::schema::strip_port(host);
    if !loc
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
    {
        return;
    }
    let after = &loc[7..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    let loc_host = authority.strip_suffix(":80").unwrap_or(authority);
    if loc_host.eq_ignore_ascii_case(bare)
        && let Ok(v) = HeaderValue::from_str(&format!("https://{loc_host}{tail}"))
    {
        h.insert(header::LOCATION, v);
    }
}

/// What the access log says about a request.
#[derive(Debug, Default)]
struct AccessInfo {
    method: String,
    path: String,
    host: String,
    tool: String,
    route: &'static str,
    upstream: String,
    upstream_started: Option<Instant>,
}

impl AccessInfo {
    fn log(self, resp: &Response<ProxyBody>, conn: ConnInfo, started: Instant) {
        let bytes = http_body::Body::size_hint(resp.body())
            .exact()
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let upstream_ms = self
            .upstream_started
            .map_or(-1.0, |t| t.elapsed().as_secs_f64() * 1000.0);
        tracing::info!(
            target: "dynamicproxy::access",
            client = %conn.peer.ip().to_canonical(),
            method = %escape_controls(&self.method),
            host = %escape_controls(&self.host),
            path = %escape_controls(&self.path),
            tool = %escape_controls(&self.tool),
            route = if self.route.is_empty() { "own" } else { self.route },
            upstream = %escape_controls(&self.upstream),
            status = resp.status().as_u16(),
            bytes,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            upstream_ms,
            "request"
        );
    }
}

/// The proxy's own answer: its error page for the statuses that have one,
/// else short text.
fn own(settings: &Settings, status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    if crate::pages::STATUSES.contains(&status.as_u16()) {
        settings.pages.error(status, text)
    } else {
        plain(status, text)
    }
}

fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    has_source::<http_body_util::LengthLimitError>(e)
}

/// Whether `e` or one of its sources is a `T`.
fn has_source<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `301 https://<host><path>` for every method, as today's port 80 does.
fn redirect_to_https(req: &Request<Incoming>, host: &str) -> Response<ProxyBody> {
    let bare = forge_core::schema::strip_port(host).to_ascii_lowercase();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut r = plain(StatusCode::MOVED_PERMANENTLY, "Moved Permanently\n");
    if let Ok(v) = HeaderValue::from_str(&format!("https://{bare}{pq}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
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

/// An address as a header value.
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
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

/// Serves the connections arriving on `incoming` (accepted on local port
/// `local_port`, terminating TLS with `tls` when given) until shutdown or
/// until `incoming` ends, then drains open ones within
/// `server.drain_timeout_ms`. Each connection task runs on the calling
/// runtime and holds its [`Accepted::ticket`] until it ends.
///
/// [`Accepted::ticket`]: crate::workers::Accepted::ticket
pub async fn serve_connections(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<crate::workers::Accepted>,
    local_port: u16,
    proxy: Proxy,
    server: ServerSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: Shutdown,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(server.header_read_timeout_ms.max(1)))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_head_bytes).unwrap_or(u32::MAX));
    let head_limits = server.head_limits();
    let idle_timeout = Duration::from_millis(server.idle_timeout_ms.max(1));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let handshake_timeout = Duration::from_millis(server.header_read_timeout_ms.max(1));
    loop {
        let crate::workers::Accepted {
            stream,
            peer,
            ticket,
        } = tokio::select! {
            _ = shutdown.triggered() => break,
            a = incoming.recv() => match a {
                Some(a) => a,
                None => break,
            },
        };
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "can't take over an accepted connection");
                continue;
            }
        };
        let info = ConnInfo {
            peer,
            local_port,
            https: tls.is_some(),
        };
        let proxy = proxy.clone();
        let verdicts = Arc::new(FramingVerdicts::default());
        let watched = verdicts.clone();
        let activity = Arc::new(ConnActivity::new(
            tokio::time::Instant::now(),
            handshake_timeout,
            idle_timeout,
        ));
        let reader_activity = activity.clone();
        // hyper hands HTTP/1 requests over one at a time, in order, so the
        // n-th call is the n-th request head the scanner saw.
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            match verdicts.next() {
                Verdict::Fine => {}
                Verdict::Ambiguous => {
                    req.extensions_mut().insert(AmbiguousFraming);
                }
                Verdict::Oversized { request_line } => {
                    req.extensions_mut().insert(Oversized { request_line });
                }
            }
            let in_flight = activity.start();
            let activity = activity.clone();
            let proxy = proxy.clone();
            let connect = req.method() == http::Method::CONNECT;
            // Boxed: hyper keeps a slot the size of the service's future
            // for the connection's whole life; the handler's future is
            // ~3 KiB, which an idle keep-alive connection would otherwise hold.
            let handled: HandlerFuture = Box::pin(async move {
                let resp = proxy.handle(req, info).await;
                // hyper switches on a 101, and on a 2xx to CONNECT (which
                // the proxy refuses, but the scanner must know either way).
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    || (connect && resp.status().is_success())
                {
                    activity.upgraded();
                }
                Ok::<_, Infallible>(resp.map(|b| TrackedBody::new(b, in_flight)))
            });
            handled
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        match &tls {
            None => {
                tokio::spawn(async move {
                    let _ticket = ticket;
                    let io = TokioIo::new(WatchedIo::new(
                        stream,
                        head_limits,
                        watched,
                        reader_activity,
                    ));
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ticket = ticket;
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let io = TokioIo::new(WatchedIo::new(
                        stream,
                        head_limits,
                        watched,
                        reader_activity,
                    ));
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(incoming);
    let bound = Duration::from_millis(server.drain_timeout_ms);
    forge_core::lifecycle::drain_within(&shutdown, bound, graceful.shutdown()).await;
}
