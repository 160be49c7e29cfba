//! The edge under attack: each test is an attack on the running proxy (in
//! process, or the binary where its log output matters) that succeeded once.
//!
//! Threat model (see `docs/security.md`):
//! * **Hostile clients on the internet** send whatever bytes they like:
//!   silent or trickling connections to exhaust the connection cap, slow or
//!   missing request bodies to hold a single-threaded tool backend, huge or
//!   endless request heads, malformed targets and hosts that nginx refuses
//!   and a backend might misread, identity headers (`X-Forwarded-For`, …)
//!   a backend might trust, and control characters meant to forge or hide
//!   access-log lines.
//! * **Hostile tool owners** write route patterns (through proxylistener, or
//!   into Redis by other means) meant to make every request to the proxy
//!   expensive, or to forge log lines.
//!
//! Every bound here is a configuration knob with a default documented in
//! `docs/dynamicproxy.md`; the tests set small values so they finish
//! quickly, and never depend on how fast the machine is.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use forge_test_support::{RedisServer, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_dynamicproxy");

/// The status of a raw response (0: closed without one).
fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// --- Item 6: identity headers ------------------------------------------------

#[tokio::test]
async fn client_supplied_identity_headers_never_reach_the_backend() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let spoof = "X-Forwarded-For: 10.9.9.9\r\nX-Real-IP: 10.9.9.9\r\nForwarded: for=10.9.9.9\r\n";

    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;
    let r = request(p.http, "a.toolforge.org", "/", spoof).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let h = &seen["headers"];
    for name in ["x-forwarded-for", "x-real-ip", "forwarded"] {
        assert!(h.get(name).is_none(), "{name} passed on: {seen}");
    }
    drop(p);

    // With forwarded_for the proxy states what it saw, nothing else.
    let mut c = test_config(&redis.url(), &default.url());
    c.forwarded_for = true;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    let r = request(p.http, "a.toolforge.org", "/", spoof).await;
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{seen}");
    assert_eq!(
        h["forwarded"], "for=127.0.0.1;host=a.toolforge.org;proto=http",
        "{seen}"
    );
}

// --- Item 8: malformed requests ----------------------------------------------

#[tokio::test]
async fn malformed_requests_are_refused_like_nginx_does() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;

    let refused = |raw_request: &'static str, want: u16| {
        let addr = p.http;
        async move {
            let resp = raw(addr, raw_request).await;
            assert_eq!(status(&resp), want, "{raw_request:?} got {resp:?}");
            assert!(!resp.contains("\"backend\""), "forwarded: {resp}");
        }
    };
    // Two Host headers: which one would a backend route by?
    refused(
        "GET / HTTP/1.1\r\nHost: a.toolforge.org\r\nHost: b.toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
    // Paths that climb above the root once decoded, or hold a NUL.
    for path in [
        "/../etc/passwd",
        "/a/../../x",
        "/%2e%2e/x",
        "/a%2f..%2f..%2fx",
        "/x%00.php",
    ] {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n");
        let resp = raw(p.http, &req).await;
        assert_eq!(status(&resp), 400, "{path}: {resp}");
        assert!(!resp.contains("\"backend\""), "{path} forwarded: {resp}");
    }
    // A path that stays below the root is fine.
    let r = request(p.http, "a.toolforge.org", "/a/../b/./c", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    // Empty host labels.
    refused(
        "GET / HTTP/1.1\r\nHost: a..toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
    refused(
        "GET / HTTP/1.1\r\nHost: .a.toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
    // CONNECT and OPTIONS * are not forwarded.
    refused(
        "CONNECT a.toolforge.org:443 HTTP/1.1\r\nHost: a.toolforge.org:443\r\nConnection: close\r\n\r\n",
        405,
    )
    .await;
    refused(
        "OPTIONS * HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n",
        400,
    )
    .await;
}

/// Reads from `s` until the bytes read end with `end` (`None`: until the
/// peer closes), within 20 s; returns what was read.
async fn read_until(s: &mut TcpStream, end: Option<&[u8]>) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while !end.is_some_and(|end| out.ends_with(end)) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn both_framing_headers_are_refused_after_a_refused_upgrade() {
    use std::sync::{Arc, Mutex};
    let redis = RedisServer::start().await.unwrap();
    // A backend that refuses every upgrade (a plain 200) and records the
    // paths it was asked for.
    let asked = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = asked.clone();
    let backend = serve_backend(move |req: hyper::Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(req.uri().path().to_owned());
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                b"no-upgrade",
            )))
        }
    })
    .await;
    let p = start_proxy(test_config(&redis.url(), &backend)).await;
    wait_serving(&p).await;

    const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    const SMUGGLED: &str = "POST /smuggled HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    // Sent behind the upgrade request at once (before its answer is known)…
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(format!("{UPGRADE}{SMUGGLED}").as_bytes())
        .await
        .unwrap();
    let out = read_until(&mut s, None).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let second = out.split_once("no-upgrade").map_or("", |(_, rest)| rest);
    assert_eq!(status(second), 400, "{out}");

    // …or after its refusal arrived.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(UPGRADE.as_bytes()).await.unwrap();
    let first = read_until(&mut s, Some(b"no-upgrade")).await;
    assert_eq!(status(&first), 200, "{first}");
    s.write_all(SMUGGLED.as_bytes()).await.unwrap();
    let second = read_until(&mut s, None).await;
    assert_eq!(status(&second), 400, "{second}");

    assert!(
        !asked.lock().unwrap().iter().any(|p| p == "/smuggled"),
        "smuggled request reached the backend: {:?}",
        asked.lock().unwrap()
    );

    // An upgrade that happens (101) still hands the client's next bytes to
    // the upgraded stream untouched, even sent before the 101 arrived.
    let ws = upgrade_backend().await;
    let p = start_proxy(test_config(&redis.url(), &ws)).await;
    wait_serving(&p).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(format!("{UPGRADE}{SMUGGLED}").as_bytes())
        .await
        .unwrap();
    let out = read_until(&mut s, Some(SMUGGLED.as_bytes())).await;
    assert!(out.starts_with("HTTP/1.1 101"), "{out}");
    assert!(
        out.ends_with(SMUGGLED),
        "not echoed on the upgraded stream: {out}"
    );
}

// --- Item 9: log forging -----------------------------------------------------

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn control_characters_are_escaped_in_the_access_log() {
    let redis = RedisServer::start().await.unwrap();
    let backend = echo_backend("default").await;
    let dir = tempfile::tempdir().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("dynamicproxy.toml");
    std::fs::write(
        &config,
        format!(
            "listen_http = \"{http}\"\nlisten_admin = \"{admin}\"\ndefault_upstream = \"{}\"\ndomains = [\"toolforge.org\"]\n\
             [access_log]\nmode = \"on\"\n[log]\nformat = \"text\"\nfilter = \"info\"\n\
             [limits]\nrequire_user_agent = false\n[redis]\nurl = \"{}\"\n",
            backend.url(),
            redis.url()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let _proc = Running(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually("serving", || async move {
        TcpStream::connect(http).await.is_ok()
            && request(http, "a.toolforge.org", "/", "").await.status == 200
    })
    .await;
    // U+009B (CSI) is a terminal control sequence introducer in UTF-8; it
    // is a valid path byte sequence for the HTTP parser.
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(
        b"GET /forged\xc2\x9b31mRED HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let mut text = String::new();
    eventually("the access log line", || {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let found = text.contains("/forged");
        async move { found }
    })
    .await;
    assert!(
        !text.contains('\u{9b}'),
        "raw control character logged: {text}"
    );
    assert!(text.contains("/forged\\u{9b}31mRED"), "{text}");
}

// --- Item 2: connections that send nothing ----------------------------------

/// Reads until the peer closes; panics if it doesn't within 20 s.
async fn closed_within_bound<S: tokio::io::AsyncRead + Unpin>(s: &mut S) {
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the proxy kept a silent connection open");
}

#[tokio::test]
async fn silent_connections_are_closed_and_free_the_connection_cap() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.server.max_connections = 3;
    c.server.workers = 1;
    c.server.header_read_timeout_ms = 500;
    c.server.idle_timeout_ms = 500;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    // Fill the cap: a socket that never sends a byte, one that sends the
    // HTTP/2 preface and an empty SETTINGS frame, one kept alive after a
    // request. All then go silent.
    let mut raw_silent = TcpStream::connect(p.http).await.unwrap();
    let mut h2_silent = TcpStream::connect(p.http).await.unwrap();
    h2_silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut kept_alive = TcpStream::connect(p.http).await.unwrap();
    kept_alive
        .write_all(b"GET / HTTP/1.1\r\nHost: a.toolforge.org\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept_alive.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // A fourth client waits for a free slot, and gets one once the silent
    // ones are closed.
    let addr = p.http;
    let waiting = tokio::spawn(async move { request(addr, "a.toolforge.org", "/", "").await });
    closed_within_bound(&mut raw_silent).await;
    closed_within_bound(&mut h2_silent).await;
    closed_within_bound(&mut kept_alive).await;
    let r = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the listener never served again")
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn a_finished_tls_handshake_and_then_silence_is_closed() {
    use common::tls::{client_config, make_ca, make_cert};
    use rustls::pki_types::ServerName;
    let ca = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    make_ca(ca.path());
    make_cert(ca.path(), certs.path(), "toolforge", "*.toolforge.org");
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let mut c = test_config(&redis.url(), &default.url());
    c.server.max_connections = 1;
    c.server.workers = 1;
    c.server.header_read_timeout_ms = 500;
    c.server.idle_timeout_ms = 500;
    c.tls.dir = Some(certs.path().to_owned());
    c.tls.redirect_http = false;
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https_addr = https.local_addr().unwrap();
    let p = start_proxy_with_https(c, https).await;
    wait_serving(&p).await;

    let connector = tokio_rustls::TlsConnector::from(client_config(ca.path(), &[b"http/1.1"]));
    let name = ServerName::try_from("a.toolforge.org").unwrap();
    // The handshake completes, then the client says nothing; it holds the
    // listener's only slot until the proxy closes it.
    let tcp = TcpStream::connect(https_addr).await.unwrap();
    let mut silent = connector.connect(name.clone(), tcp).await.unwrap();
    let waiting = tokio::spawn(async move {
        let tcp = TcpStream::connect(https_addr).await.unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.toolforge.org\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    closed_within_bound(&mut silent).await;
    let r = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the TLS listener never served again")
        .unwrap();
    assert_eq!(status(&r), 200, "{r}");
}

// --- Item 3: slow request bodies ----------------------------------------------

#[tokio::test]
async fn a_slow_body_never_holds_the_backend() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let redis = RedisServer::start().await.unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let backend = serve_backend(move |req: hyper::Request<hyper::body::Incoming>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = http_body_util::BodyExt::collect(req.into_body()).await;
            let n = body.map(|b| b.to_bytes().len()).unwrap_or(0);
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(n.to_string())))
        }
    })
    .await;
    let mut c = test_config(&redis.url(), &backend);
    c.server.body_read_timeout_ms = 500;
    c.server.buffer_body_bytes = 1024;
    let p = start_proxy(c).await;
    wait_serving(&p).await;
    // wait_serving's probes went to this backend.
    let probes = asked.load(Ordering::SeqCst);

    // A declared body that never comes, or stops half-way: 408, and the
    // backend is never asked.
    for sent in ["", "0123456789"] {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 1000\r\n\r\n{sent}"
        );
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("no answer to a stalled body")
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert_eq!(status(&text), 408, "{text}");
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        probes,
        "the backend was asked"
    );

    // A large body streams; stalled half-way it is cut off with 408 too.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 50_000]).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("no answer to a stalled large body")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status(&text), 408, "{text}");

    // A body sent in time is passed on whole.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: a.toolforge.org\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'y'; 5000]).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status(&text), 200, "{text}");
    assert!(text.ends_with("5000"), "{text}");
}

// --- Item 7: request heads bounded -------------------------------------------

#[tokio::test]
async fn request_heads_are_bounded_like_nginx() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let p = start_proxy(test_config(&redis.url(), &default.url())).await;
    wait_serving(&p).await;

    // 20 KiB of header fields pass; 40 KiB get 431; a 10 KiB request line 414.
    let fields = |n: usize| format!("X-Big: {}\r\n", "a".repeat(n));
    let r = request(p.http, "a.toolforge.org", "/", &fields(20 * 1024)).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let r = request(p.http, "a.toolforge.org", "/", &fields(40 * 1024)).await;
    assert_eq!(r.status, 431, "{}", r.head);
    let long_path = format!("/{}", "p".repeat(10 * 1024));
    let r = request(p.http, "a.toolforge.org", &long_path, "").await;
    assert_eq!(r.status, 414, "{}", r.head);

    // A head trickled in small pieces that never ends is refused at the
    // limit too, rather than buffered without bound.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.toolforge.org\r\n")
        .await
        .unwrap();
    let piece = format!("X-Trickle: {}\r\n", "t".repeat(1000));
    for _ in 0..100 {
        if s.write_all(piece.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status(&text), 431, "{text}");
}

// --- Item 1: route patterns that cost other tools ----------------------------

#[tokio::test]
async fn route_entries_over_the_budget_are_ignored_and_matching_is_bounded() {
    let redis = RedisServer::start().await.unwrap();
    let default = echo_backend("default").await;
    let tool = echo_backend("tool").await;
    let url = tool.url();
    // A linear-time pattern under the old size cap that costs the proxy
    // seconds of CPU per long path: over the compiled-size budget.
    cli(
        redis.port(),
        &["HSET", "prefix:greedy", "[ab]{3500}[^ab]", &url],
    );
    // Nine patterns where the budget allows eight: the last (in pattern
    // order) is ignored.
    for i in 0..9 {
        cli(
            redis.port(),
            &["HSET", "prefix:many", &format!("^/p{i}"), &url],
        );
    }
    // Matching sees only the first `routes.max_match_path_bytes` of a path.
    cli(redis.port(), &["HSET", "prefix:tail", "x$", &url]);
    let mut c = test_config(&redis.url(), &default.url());
    c.routes.max_match_path_bytes = 1024;
    let p = start_proxy(c).await;
    wait_serving(&p).await;

    let greedy_path = format!("/{}c", "a".repeat(3500));
    let r = get(p.http, "greedy.toolforge.org", &greedy_path).await;
    assert_eq!(r.backend(), "default", "an over-budget pattern was used");
    let r = get(p.http, "many.toolforge.org", "/p0").await;
    assert_eq!(r.backend(), "tool");
    let r = get(p.http, "many.toolforge.org", "/p8").await;
    assert_eq!(
        r.backend(),
        "default",
        "a pattern past the per-tool budget was used"
    );
    let r = get(p.http, "tail.toolforge.org", "/ax").await;
    assert_eq!(r.backend(), "tool");
    let long_tail = format!("/{}x", "a".repeat(2000));
    let r = get(p.http, "tail.toolforge.org", &long_tail).await;
    assert_eq!(r.backend(), "default", "matched beyond the path bound");
}
