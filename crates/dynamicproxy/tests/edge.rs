//! The edge features: TLS with SNI from a certificate directory, ALPN h2 /
//! http/1.1, reload keeping a broken certificate's predecessor, HTTP → HTTPS
//! redirects, HSTS, WebSocket (Upgrade) pass-through, the body cap; the metrics
//! the shipped dashboard and certificate-expiry alert read.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::tls::{client_config, make_ca, make_cert};
use common::*;
use dynamicproxy::{Listeners, Settings};
use forge_core::{Daemon, ReloadReason, ReloadSignal, Reloadable, Shutdown};
use forge_test_support::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Edge {
    http: std::net::SocketAddr,
    https: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    reload: ReloadSignal,
    shutdown: Shutdown,
    ca: Arc<rustls::ClientConfig>,
    ca_h2: Arc<rustls::ClientConfig>,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.shutdown.force();
    }
}

async fn start_edge(mut config: dynamicproxy::Config, ca_dir: &Path, tls_dir: &Path) -> Edge {
    forge_core::cli::install_crypto_provider();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, https_addr) = (http.local_addr().unwrap(), https.local_addr().unwrap());
    let admin_addr = admin.local_addr().unwrap();
    config.listen_https = Some(https_addr.to_string());
    config.tls.dir = Some(tls_dir.to_owned());
    let settings: Settings = config.settings().unwrap();
    let daemon = Daemon::new("dynamicproxy", "test");
    let (reload, shutdown) = (daemon.reload.clone(), daemon.shutdown.clone());
    tokio::spawn(dynamicproxy::run_with(
        Listeners {
            http,
            admin,
            https: Some(https),
        },
        config,
        Reloadable::new(settings),
        daemon,
    ));
    let edge = Edge {
        http: http_addr,
        https: https_addr,
        admin: admin_addr,
        reload,
        shutdown,
        ca: client_config(ca_dir, &[b"http/1.1"]),
        ca_h2: client_config(ca_dir, &[b"h2", b"http/1.1"]),
    };
    let addr = edge.http;
    eventually("serving", || async move {
        tokio::time::timeout(
            std::time::Duration::from_millis(300),
            TcpStream::connect(addr),
        )
        .await
        .is_ok_and(|r| r.is_ok())
            && tokio::time::timeout(
                std::time::Duration::from_millis(500),
                raw(
                    addr,
                    "GET / HTTP/1.1\r\nHost: x.toolforge.org\r\nConnection: close\r\n\r\n",
                ),
            )
            .await
            .is_ok_and(|r| r.starts_with("HTTP/1.1"))
    })
    .await;
    edge
}

/// TLS handshake with `sni`; returns the negotiated ALPN protocol and the stream.
async fn tls_connect(
    edge: &Edge,
    sni: &str,
    h2: bool,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
    let config = if h2 {
        edge.ca_h2.clone()
    } else {
        edge.ca.clone()
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(edge.https).await?;
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

async fn https_get(edge: &Edge, host: &str, path: &str, h2: bool) -> (Response<Bytes>, String) {
    let stream = tls_connect(edge, host, h2).await.unwrap();
    let alpn =
        String::from_utf8_lossy(stream.get_ref().1.alpn_protocol().unwrap_or(b"")).into_owned();
    let resp = if alpn == "h2" {
        let (mut s, c) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(c);
        let req = Request::get(format!("https://{host}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(c);
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        s.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, body), alpn)
}

#[tokio::test]
async fn tls_sni_alpn_reload_redirect_and_hsts() {
    let ca = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    make_ca(ca.path());
    make_cert(ca.path(), certs.path(), "toolforge", "*.toolforge.org");
    make_cert(ca.path(), certs.path(), "other", "other.example.org");

    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let alpha = echo_backend("alpha").await;
    cli(redis.port(), &["HSET", "prefix:alpha", ".*", &alpha.url()]);
    cli(
        redis.port(),
        &["SADD", "frontend:other.example.org", &alpha.url()],
    );
    let edge = start_edge(
        test_config(&redis.url(), &default.url()),
        ca.path(),
        certs.path(),
    )
    .await;

    // h2 by ALPN, the wildcard certificate for a tool, HSTS, proto https.
    let (resp, alpn) = https_get(&edge, "alpha.toolforge.org", "/p?q=1", true).await;
    assert_eq!(alpn, "h2");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31622400"
    );
    let j: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(j["backend"], "alpha");
    assert_eq!(j["uri"], "/p?q=1");
    assert_eq!(j["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        j["headers"]["x-forwarded-port"],
        edge.https.port().to_string()
    );

    // http/1.1 by ALPN; SNI picks the other certificate (the client checks
    // the name, so a wrong certificate fails the handshake).
    let (resp, alpn) = https_get(&edge, "other.example.org", "/", false).await;
    assert_eq!(alpn, "http/1.1");
    assert_eq!(resp.status(), StatusCode::OK);

    // What the shipped monitoring reads: every metric the Grafana dashboard
    // (`packaging/monitoring/dashboards/dynamicproxy.json`) queries is in
    // `/metrics`, each certificate's expiry is exported for the
    // `ForgeCertificateExpiringSoon` alert (the test certificates live two
    // days), and so is the Redis master this process sees.
    let master = format!(
        "forge_redis_master{{master=\"127.0.0.1:{}\"}} 1",
        redis.port()
    );
    let admin = edge.admin;
    eventually("the master this process sees is exported", || {
        let master = master.clone();
        async move {
            get(admin, "localhost", "/metrics")
                .await
                .body
                .contains(&master)
        }
    })
    .await;
    let metrics = get(admin, "localhost", "/metrics").await.body;
    let missing =
        forge_test_support::monitoring::missing_dashboard_metrics("dynamicproxy", &metrics);
    assert!(
        missing.is_empty(),
        "dashboard metrics not exported: {missing:?}\n{metrics}"
    );

    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "forge_dynamicproxy_certificate_expiry_timestamp_seconds{certificate=\"toolforge\"}",
            )
        })
        .unwrap_or_else(|| panic!("no expiry for the toolforge certificate:\n{metrics}"));
    let not_after: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days = (not_after - now) / 86_400.0;
    assert!((1.0..3.0).contains(&days), "{line}: {days} days left");

    // A name no certificate covers: the default certificate, which the
    // client refuses.
    assert!(
        tls_connect(&edge, "nothing.example.net", false)
            .await
            .is_err()
    );

    // Plain HTTP: 301 to https for every method, no HSTS there.
    let r = raw(
        edge.http,
        "POST /a/b?c=d HTTP/1.1\r\nHost: Alpha.toolforge.org:80\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 301"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("location: https://alpha.toolforge.org/a/b?c=d\r\n"),
        "{r}"
    );
    assert!(
        !r.to_ascii_lowercase().contains("strict-transport-security"),
        "{r}"
    );

    // Reload: a broken certificate keeps its predecessor; a new one is used.
    std::fs::write(certs.path().join("toolforge.crt"), "not a certificate").unwrap();
    make_cert(ca.path(), certs.path(), "fresh", "fresh.example.org");
    assert!(
        tls_connect(&edge, "fresh.example.org", false)
            .await
            .is_err()
    );
    edge.reload.request(ReloadReason::Requested);
    eventually("new certificate after reload", || async {
        tls_connect(&edge, "fresh.example.org", false).await.is_ok()
    })
    .await;
    let (resp, _) = https_get(&edge, "alpha.toolforge.org", "/", true).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn websocket_upgrades_pass_through_and_bodies_are_capped() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let ws = upgrade_backend().await;
    cli(redis.port(), &["HSET", "prefix:ws", ".*", &ws]);
    let mut c = test_config(&redis.url(), &default.url());
    c.max_body_bytes = 1000;
    let p = start_proxy(c).await;
    wait_serving(&p).await;

    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"GET /socket HTTP/1.1\r\nHost: ws.toolforge.org\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed: {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"frames both ways"] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg);
    }

    // Body cap: declared too large → 413 at once; streamed too large → 413.
    let r = raw(
        p.http,
        "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    let big = "x".repeat(3000);
    let r = raw(
        p.http,
        &format!(
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        ),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // Within the cap: passed on.
    let r = raw(
        p.http,
        "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"body_len\":5"),
        "{r}"
    );
}

/// A backend redirecting every request to `location` and sending its own
/// `Permissions-Policy`.
async fn redirect_backend(location: &'static str) -> String {
    serve_backend(move |_req| async move {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut()
            .insert("location", location.parse().unwrap());
        r.headers_mut()
            .insert("permissions-policy", "camera=*".parse().unwrap());
        r
    })
    .await
}

#[tokio::test]
async fn backend_location_is_rewritten_to_https_and_response_headers_replaced() {
    let ca = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    make_ca(ca.path());
    make_cert(ca.path(), certs.path(), "toolforge", "*.toolforge.org");
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let own = redirect_backend("http://alpha.toolforge.org/next?x=1").await;
    let foreign = redirect_backend("http://elsewhere.example.org/x").await;
    cli(redis.port(), &["HSET", "prefix:alpha", ".*", &own]);
    cli(redis.port(), &["HSET", "prefix:beta", ".*", &foreign]);
    let mut c = test_config(&redis.url(), &default.url());
    c.tls.redirect_http = false;
    let edge = start_edge(c, ca.path(), certs.path()).await;
    eventually("routes loaded", || async {
        https_get(&edge, "alpha.toolforge.org", "/", false)
            .await
            .0
            .status()
            == StatusCode::FOUND
    })
    .await;

    for h2 in [false, true] {
        let (resp, _) = https_get(&edge, "alpha.toolforge.org", "/", h2).await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        assert_eq!(
            resp.headers()["location"],
            "https://alpha.toolforge.org/next?x=1"
        );
        assert_eq!(resp.headers()["permissions-policy"], "browsing-topics=()");
    }
    // Another host's location is left alone.
    let (resp, _) = https_get(&edge, "beta.toolforge.org", "/", false).await;
    assert_eq!(resp.headers()["location"], "http://elsewhere.example.org/x");
    // Over plain HTTP the client's scheme is http: unchanged.
    let r = request(edge.http, "alpha.toolforge.org", "/", "").await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://alpha.toolforge.org/next?x=1")
    );
}
