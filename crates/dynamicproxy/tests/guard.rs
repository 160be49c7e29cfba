//! Requests the proxy refuses or answers itself: the per-client rate limit
//! (429 + Retry-After, then recovery), empty / blocked User-Agent, blocked
//! Referer, banned addresses, the maintenance switch flipped by a real
//! configuration reload, the error pages and the favicon / robots.txt
//! fallbacks.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use dynamicproxy::{Config, Listeners};
use forge_core::{Daemon, ReloadReason, ReloadSignal, Reloadable};
use forge_test_support::RedisServer;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

const UA: &str = "User-Agent: forge-test/1\r\n";

#[tokio::test]
async fn rate_limit_answers_429_past_the_burst_and_recovers() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.limits.rate_per_second = 2;
    c.limits.burst = 5;
    let p = start_proxy(c).await;
    let addr = p.http;
    // Wait until serving without spending the budget: healthz is not limited.
    eventually("serving", || async move {
        request(addr, "a.toolforge.org", "/.well-known/healthz", UA)
            .await
            .status
            == 200
    })
    .await;

    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(request(addr, "a.toolforge.org", "/", UA).await);
    }
    let ok = statuses.iter().filter(|r| r.status == 200).count();
    // A burst of 5; at 2/s at most one more token can have been refilled.
    assert!((5..=6).contains(&ok), "{statuses:?}");
    let limited = statuses.last().unwrap();
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{limited:?}");
    assert!(limited.body.contains("429"), "{limited:?}");
    // Recovery: the bucket refills.
    eventually("rate limit recovers", || async move {
        request(addr, "a.toolforge.org", "/", UA).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn user_agent_referer_and_ip_blocks_answer_403() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.limits.require_user_agent = true;
    c.limits.block_user_agents = vec!["(?i)evilbot".into()];
    c.limits.block_referers = vec![r"spam\.example".into()];
    let p = start_proxy(c.clone()).await;
    let addr = p.http;
    eventually("serving", || async move {
        request(addr, "a.toolforge.org", "/", UA).await.status == 200
    })
    .await;

    let r = request(addr, "a.toolforge.org", "/", "").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("Requests must have a user agent"), "{r:?}");
    let r = request(addr, "a.toolforge.org", "/", "User-Agent: \r\n").await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(
        addr,
        "a.toolforge.org",
        "/",
        "User-Agent: Mozilla EvilBot/2\r\n",
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(
        addr,
        "a.toolforge.org",
        "/",
        "User-Agent: ok/1\r\nReferer: https://spam.example/page\r\n",
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = request(
        addr,
        "a.toolforge.org",
        "/",
        "User-Agent: ok/1\r\nReferer: https://fine.example/page\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    drop(p);

    // The test client is 127.0.0.1: ban its network.
    c.limits.banned_ips = vec!["10.1.2.3".into(), "127.0.0.0/8".into()];
    let p = start_proxy(c).await;
    let addr = p.http;
    eventually("serving", || async move {
        request(addr, "a.toolforge.org", "/.well-known/healthz", UA)
            .await
            .status
            == 200
    })
    .await;
    let r = request(addr, "a.toolforge.org", "/", UA).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.head.contains("content-type: text/html"), "{r:?}");
    assert!(r.body.contains("blocked"), "{r:?}");
}

/// The proxy started the way `main` does it: settings reloaded from the
/// configuration file on a reload request (SIGHUP) or a file change.
struct Reloading {
    proxy: ProxyUnderTest,
    reload: ReloadSignal,
}

async fn start_reloading(path: std::path::PathBuf) -> Reloading {
    let load = {
        let path = path.clone();
        move || {
            let loaded = forge_core::ConfigSource::new(Some(path.clone()), "FORGE_TEST_NONE")
                .load::<Config>()?;
            let settings = Config::validate(&loaded)?;
            Ok::<_, forge_core::ConfigError>((loaded.config, settings))
        }
    };
    let (config, settings) = load().unwrap();
    let settings = Reloadable::new(settings);
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, admin_addr) = (http.local_addr().unwrap(), admin.local_addr().unwrap());
    let daemon = Daemon::new("dynamicproxy", "test");
    let (reload, shutdown) = (daemon.reload.clone(), daemon.shutdown.clone());
    daemon.spawn_reloader("test settings", vec![path], &settings, move || {
        load().map(|(_, s)| (s, "test".to_owned()))
    });
    let task = tokio::spawn(dynamicproxy::run_with(
        Listeners {
            http,
            admin,
            https: None,
        },
        config,
        settings,
        daemon,
    ));
    Reloading {
        proxy: ProxyUnderTest {
            http: http_addr,
            admin: admin_addr,
            shutdown,
            task,
        },
        reload,
    }
}

fn config_text(redis: &RedisServer, default: &str, extra: &str) -> String {
    format!(
        "default_upstream = \"{default}\"\ndomains = [\"toolforge.org\"]\n{extra}\n[redis]\nurl = \"{}\"\ncommand_timeout_ms = 500\n[routes]\nhealth_interval_ms = 200\n",
        redis.url()
    )
}

#[tokio::test]
async fn maintenance_is_switched_by_a_reload_and_health_stays_up() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dynamicproxy.toml");
    std::fs::write(&path, config_text(&redis, &default.url(), "")).unwrap();
    let r = start_reloading(path.clone()).await;
    let addr = r.proxy.http;
    eventually("serving", || async move {
        request(addr, "a.toolforge.org", "/", UA).await.status == 200
    })
    .await;

    // Switched on: an explicit reload request (what SIGHUP sends).
    std::fs::write(
        &path,
        config_text(&redis, &default.url(), "maintenance = true"),
    )
    .unwrap();
    r.reload.request(ReloadReason::Requested);
    eventually("maintenance on", || async move {
        request(addr, "a.toolforge.org", "/", UA).await.status == 503
    })
    .await;
    let page = request(addr, "b.toolforge.org", "/x", UA).await;
    assert_eq!(page.status, 503);
    assert!(page.head.contains("content-type: text/html"), "{page:?}");
    assert!(page.body.contains("maintenance"), "{page:?}");
    let health = request(addr, "a.toolforge.org", "/.well-known/healthz", UA).await;
    assert_eq!(health.status, 200, "{health:?}");

    // Switched off: by editing the file alone (the file watch).
    std::fs::write(
        &path,
        config_text(&redis, &default.url(), "maintenance = false"),
    )
    .unwrap();
    eventually("maintenance off", || async move {
        request(addr, "a.toolforge.org", "/", UA).await.status == 200
    })
    .await;
}

/// A backend answering every request with `status` and a short body.
async fn status_backend(status: u16) -> String {
    serve_backend(move |_req| async move {
        let mut r = Response::new(Full::new(Bytes::from_static(b"backend says")));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    })
    .await
}

#[tokio::test]
async fn error_pages_come_from_the_directory_and_favicon_robots_fall_back() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let missing = status_backend(404).await;
    // A port nothing listens on: 502.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    cli(redis.port(), &["HSET", "prefix:gone", ".*", &missing]);
    cli(redis.port(), &["HSET", "prefix:dead", ".*", &dead]);
    let pages = tempfile::tempdir().unwrap();
    std::fs::write(
        pages.path().join("502.html"),
        "<html><body>our own 502 page</body></html>",
    )
    .unwrap();
    std::fs::write(
        pages.path().join("robots.txt"),
        "User-agent: *\nDisallow: /secret\n",
    )
    .unwrap();
    let mut c = test_config(&redis.url(), &default.url());
    c.pages.dir = Some(pages.path().to_owned());
    let p = start_proxy(c).await;
    let addr = p.http;
    eventually("routes loaded", || async move {
        request(addr, "gone.toolforge.org", "/x", UA).await.status == 404
    })
    .await;

    // From the directory.
    let r = request(addr, "dead.toolforge.org", "/", UA).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.body, "<html><body>our own 502 page</body></html>");
    assert!(r.head.contains("content-type: text/html"), "{r:?}");
    // The backend's own 404 is passed on for other paths…
    let r = request(addr, "gone.toolforge.org", "/page", UA).await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("backend says"), "{r:?}");
    // …but /robots.txt and /favicon.ico fall back to the proxy's.
    let r = request(addr, "gone.toolforge.org", "/robots.txt", UA).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "User-agent: *\nDisallow: /secret\n");
    let raw_favicon = raw(
        addr,
        "GET /favicon.ico HTTP/1.1\r\nHost: gone.toolforge.org\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = raw_favicon.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{lower}");
    assert!(lower.contains("content-type: image/x-icon"), "{lower}");
    // A backend that has its own favicon keeps it.
    let r = request(addr, "other.toolforge.org", "/favicon.ico", UA).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"backend\":\"default\""), "{r:?}");
    // Built-in pages for statuses without a file; extra response headers.
    let r = request(addr, "", "/", UA).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("<h1>400 Bad Request</h1>"), "{r:?}");
    assert_eq!(
        r.header("permissions-policy").as_deref(),
        Some("browsing-topics=()")
    );
}

#[tokio::test]
async fn a_backend_too_slow_to_answer_gets_the_504_page() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    cli(redis.port(), &["HSET", "prefix:slow", ".*", &silent_url]);
    let mut c = test_config(&redis.url(), &default.url());
    c.upstream.response_timeout_ms = 300;
    let p = start_proxy(c).await;
    let addr = p.http;
    eventually("504", || async move {
        request(addr, "slow.toolforge.org", "/", UA).await.status == 504
    })
    .await;
    let r = request(addr, "slow.toolforge.org", "/", UA).await;
    assert!(r.body.contains("<h1>504 Gateway Timeout</h1>"), "{r:?}");
}
