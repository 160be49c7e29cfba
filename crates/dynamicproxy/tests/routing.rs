//! Routing against a real redis-server: tools, patterns, frontends, hosts,
//! headers, dead backends, `/list` and `/metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::*;
use dynamicproxy::config::OutsideDomain;
use forge_test_support::RedisServer;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn routes_tools_patterns_frontends_and_hosts() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let alpha = echo_backend("alpha").await;
    let (b1, b2, b3) = (
        echo_backend("b1").await,
        echo_backend("b2").await,
        echo_backend("b3").await,
    );
    let port = redis.port();
    cli(port, &["HSET", "prefix:alpha", ".*", &alpha.url()]);
    cli(
        port,
        &[
            "HSET",
            "prefix:multi",
            ".*",
            &b1.url(),
            "^/api/",
            &b2.url(),
            "^/api/v2/",
            &b3.url(),
        ],
    );
    cli(
        port,
        &["SADD", "frontend:www.example.org", &b1.url(), &b2.url()],
    );
    cli(port, &["SADD", "frontend:*.example.org", &b3.url()]);

    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;

    // A registered tool gets its backend with the original path and query.
    let r = get(p.http, "alpha.toolforge.org", "/some/path?x=1&y=%20").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let j = r.json();
    assert_eq!(j["backend"], "alpha");
    assert_eq!(j["uri"], "/some/path?x=1&y=%20");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["headers"]["host"], "alpha.toolforge.org");
    assert_eq!(j["headers"]["x-forwarded-host"], "alpha.toolforge.org");
    assert_eq!(j["headers"]["x-forwarded-proto"], "http");
    assert_eq!(j["headers"]["x-forwarded-port"], p.http.port().to_string());
    assert_eq!(j["headers"]["x-original-uri"], "/some/path?x=1&y=%20");
    assert!(j["headers"].get("x-forwarded-for").is_none(), "{j}");

    // Mixed-case host with a port.
    let r = get(p.http, "ALPHA.ToolForge.ORG:8443", "/").await;
    assert_eq!(r.backend(), "alpha");
    assert_eq!(
        r.json()["headers"]["x-forwarded-host"],
        "alpha.toolforge.org"
    );

    // Unknown tool → default upstream.
    let r = get(p.http, "nosuchtool.toolforge.org", "/x").await;
    assert_eq!(r.backend(), "default");
    assert_eq!(r.json()["uri"], "/x");

    // Outside the domain → 421 (configured default: reject).
    let r = get(p.http, "alpha.example.com", "/").await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    // The bare domain is not a tool.
    let r = get(p.http, "toolforge.org", "/").await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);

    // Several patterns: most specific first, every time.
    for _ in 0..10 {
        assert_eq!(
            get(p.http, "multi.toolforge.org", "/api/v2/x")
                .await
                .backend(),
            "b3"
        );
        assert_eq!(
            get(p.http, "multi.toolforge.org", "/api/x").await.backend(),
            "b2"
        );
        assert_eq!(
            get(p.http, "multi.toolforge.org", "/web").await.backend(),
            "b1"
        );
    }

    // frontend: sets — a random member; wildcard fallback.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(get(p.http, "www.example.org", "/").await.backend());
    }
    assert_eq!(seen, BTreeSet::from(["b1".to_owned(), "b2".to_owned()]));
    assert_eq!(get(p.http, "other.example.org", "/").await.backend(), "b3");
    assert_eq!(get(p.http, "WWW.EXAMPLE.ORG", "/").await.backend().len(), 2);

    // The proxy's own health URL answers on any host.
    let r = get(p.http, "alpha.toolforge.org", "/.well-known/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "OK\n"));

    // Missing Host → 400.
    let resp = raw(p.http, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(p.http, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.0 400") || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );

    // httpoxy: Proxy is not passed on; hop-by-hop headers neither.
    let resp = raw(
        p.http,
        "GET /h HTTP/1.1\r\nHost: alpha.toolforge.org\r\nProxy: http://evil:1\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nX-Keep: 2\r\n\r\n",
    )
    .await;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    let j: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(j["headers"].get("proxy").is_none(), "{j}");
    assert!(j["headers"].get("x-drop").is_none(), "{j}");
    assert_eq!(j["headers"]["x-keep"], "2");

    // HTTP/2 (prior knowledge) in, HTTP/1.1 out.
    let stream = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("http://Alpha.toolforge.org/h2?q")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // routed by :authority, forwarded over HTTP/1.1 with Host set
    assert_eq!(j["backend"], "alpha");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["headers"]["host"], "Alpha.toolforge.org");
    assert_eq!(j["uri"], "/h2?q");

    // /list equals the Redis contents; ?backends=1 gives routes in order.
    let keys = cli(port, &["--scan", "--pattern", "prefix:*"]);
    let from_redis: BTreeSet<String> = keys
        .lines()
        .map(|k| k.trim_start_matches("prefix:").to_owned())
        .collect();
    let (status, list) = admin_json(&p, "/list").await;
    assert_eq!(status, StatusCode::OK);
    let listed: BTreeSet<String> = list.as_object().unwrap().keys().cloned().collect();
    assert_eq!(listed, from_redis);
    assert_eq!(list["alpha"], serde_json::json!({"status": "active"}));
    let (_, list) = admin_json(&p, "/list?backends=1").await;
    let patterns: Vec<&str> = list["multi"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(patterns, vec!["^/api/v2/", "^/api/", ".*"]);
    assert_eq!(list["alpha"]["routes"][0]["backend"], alpha.url());
    // Backend addresses are for operators only: without the admin token,
    // or with a wrong one, `?backends=1` is refused; plain `/list` is not.
    let r = request(p.admin, "localhost", "/list?backends=1", "").await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(!r.body.contains(&alpha.url()), "{r:?}");
    let r = request(
        p.admin,
        "localhost",
        "/list?backends=1",
        "Authorization: Bearer not-the-token\r\n",
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(p.admin, "localhost", "/list", "").await;
    assert_eq!(r.status, 200, "{r:?}");

    // /metrics counts requests.
    let before = metric(&p, "forge_dynamicproxy_requests_total{class=\"2xx\"}").await;
    get(p.http, "alpha.toolforge.org", "/").await;
    let after = metric(&p, "forge_dynamicproxy_requests_total{class=\"2xx\"}").await;
    assert!(after >= before + 1.0, "{before} → {after}");
    assert!(metric(&p, "forge_dynamicproxy_route_table_tools").await >= 2.0);
    assert!(
        metric(
            &p,
            "forge_dynamicproxy_route_lookups_total{result=\"miss\"}"
        )
        .await
            >= 1.0
    );
    let (status, health) = admin_json(&p, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["checks"]["routes"]["state"], "ok", "{health}");
}

async fn metric(p: &ProxyUnderTest, name: &str) -> f64 {
    let r = get(p.admin, "localhost", "/metrics").await;
    r.body
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim().parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn outside_hosts_can_go_to_the_default_and_forwarded_for_is_optional() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.outside_domain = OutsideDomain::Default;
    c.forwarded_for = true;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    let r = get(p.http, "alpha.example.com", "/").await;
    assert_eq!(r.backend(), "default");
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "127.0.0.1");
    let resp = raw(
        p.http,
        "GET / HTTP/1.1\r\nHost: a.toolforge.org\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n",
    )
    .await;
    // The client's own value is replaced by what the proxy saw.
    assert!(resp.contains("\"x-forwarded-for\":\"127.0.0.1\""), "{resp}");
}

#[tokio::test]
async fn dead_backend_gives_502_not_a_hang() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    // A port nobody listens on (refused), and a listener that never accepts
    // and whose accept queue is full, so connecting hangs (connect timeout).
    cli(
        redis.port(),
        &["HSET", "prefix:refused", ".*", "http://127.0.0.1:1"],
    );
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let stuck = socket.listen(1).unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(stuck_addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    cli(
        redis.port(),
        &[
            "HSET",
            "prefix:blackhole",
            ".*",
            &format!("http://{stuck_addr}"),
        ],
    );
    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;
    let r = get(p.http, "refused.toolforge.org", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    // `get` gives up after 10 s; the connect timeout is 1 s.
    let r = get(p.http, "blackhole.toolforge.org", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{r:?}");
    drop((stuck, fillers));
    // The proxy itself is fine.
    assert_eq!(
        get(p.http, "x.toolforge.org", "/").await.backend(),
        "default"
    );
}
