//! proxylistener under attack: each test runs an attack against the running
//! daemon (a real Redis, a real identd) and checks it is refused.
//!
//! Threat model: the attacker owns a tool (anyone can create one) and can run
//! any process as that tool on a host that may register, so ident names them
//! truthfully. They want to:
//!
//! * cost other tools CPU or memory through the proxy with route patterns
//!   that are expensive to compile or to match, or with very many of them
//!   (`[route_budget]`: a compiled-size budget per pattern, a number of
//!   patterns per tool);
//! * publish a server they don't run — another tool's port on the same host,
//!   already listening or about to — under their own tool's name
//!   (`[ownership]`: the backend host's identd must name the registering tool
//!   as the owner of the backend's server socket, before `ok` when it already
//!   listens, within `ownership.within_ms` otherwise);
//! * forge log lines or terminal output with control characters (CR, LF,
//!   ESC, …) in routes, URLs or ident answers (refused as input; escaped in
//!   logs).
//!
//! The ownership tests run servers under different Unix users (created with
//! `useradd` when missing) and ask Debian's `oidentd`, which answers from the
//! kernel's socket table, so they need root.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Harness, register};
use forge_core::PatternBudget;
use forge_test_support::{IdentAnswer, ListenerAs, Oidentd, RedisServer, free_port, wait_for_port};

/// The tool the attacker registers as (its identd says `tools.fgmallory`).
const MALLORY: &str = "tools.fgmallory";
/// The victim tool whose server the attacker wants to publish.
const VICTIM: &str = "tools.fgvictim";

/// Polls `cond` until it holds, for at most `within` (generous: a loaded
/// machine). Panics with `what` otherwise.
async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- item 1: route pattern budgets ------------------------------------------

#[tokio::test]
async fn a_pattern_over_the_compiled_size_budget_is_refused() {
    let h = Harness::start().await;
    // Linear-time and under the 256-byte length cap, yet ~250 KB of automaton
    // and seconds of proxy CPU per request on a long path.
    let reply = h
        .send(&register("[ab]{3500}[^ab]", "http://127.0.0.1:5000"))
        .await;
    assert!(
        reply.starts_with(
            "fail: bad route: route pattern compiles to more than the budget of 16384 bytes"
        ),
        "{reply}"
    );
    // Unicode classes are large too; the ASCII spelling fits.
    let reply = h.send(&register("^/\\w+/", "http://127.0.0.1:5000")).await;
    assert!(reply.contains("budget"), "{reply}");
    assert!(h.all_keys().await.is_empty());
    assert_eq!(
        h.send(&register("^/[a-z0-9_]+/", "http://127.0.0.1:5000"))
            .await,
        "ok"
    );
}

#[tokio::test]
async fn a_tool_cannot_register_more_patterns_than_its_budget() {
    let h = Harness::start_with(|c| {
        c.route_budget = PatternBudget::new(16 * 1024, 3).unwrap();
    })
    .await;
    for i in 0..3 {
        let route = format!("^/p{i}/");
        assert_eq!(
            h.send(&register(&route, "http://127.0.0.1:5000")).await,
            "ok"
        );
    }
    let reply = h.send(&register("^/p3/", "http://127.0.0.1:5000")).await;
    assert_eq!(
        reply,
        "fail: the tool already has 3 route patterns; at most 3 are allowed (unregister one first)"
    );
    assert_eq!(h.hgetall("prefix:mytool").await.len(), 3);
    // Re-registering an existing pattern (a restart on a new port) is fine.
    assert_eq!(
        h.send(&register("^/p0/", "http://127.0.0.1:5001")).await,
        "ok"
    );
    // After removing one there is room again.
    assert_eq!(h.send(b"unregister\n^/p1/\n").await, "ok");
    assert_eq!(
        h.send(&register("^/p3/", "http://127.0.0.1:5000")).await,
        "ok"
    );
    assert_eq!(h.hgetall("prefix:mytool").await.len(), 3);
}

// --- item 9: control characters ---------------------------------------------

#[tokio::test]
async fn control_characters_in_routes_urls_and_ident_answers_are_refused() {
    let h = Harness::start().await;
    for (request, what) in [
        (
            &b"register\n.*\x1b]0;owned\x07\nhttp://127.0.0.1:5000\n"[..],
            "route",
        ),
        (
            b"register\n^/a\rFAKE LOG LINE\nhttp://127.0.0.1:5000\n",
            "route",
        ),
        (b"register\n.*\nhttp://127.0.0.1:5000\x1b[2J\n", "url"),
        (b"register\n.*\nhttp://127.0.0.1:5000\x7f\n", "url"),
        (b"unregister\n.*\x00\n", "route"),
    ] {
        let reply = h.send(request).await;
        assert!(
            reply.starts_with(&format!(
                "fail: the {what} line contains the control character U+"
            )),
            "{:?} → {reply}",
            String::from_utf8_lossy(request)
        );
    }
    assert!(h.all_keys().await.is_empty());
}

/// The identd answers for the connection actually asked about, with a
/// control character in its opsys field.
#[tokio::test]
async fn ident_answers_with_control_characters_are_refused_for_the_right_ports() {
    let h = Harness::start().await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let port = s.local_addr().unwrap().port();
    h.identd.answer_for(
        port,
        IdentAnswer::Raw(format!(
            "{port} , {} : USERID : UNIX\u{1b}[2J : tools.mytool",
            h.addr.port()
        )),
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(&register(".*", "http://127.0.0.1:5000"))
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(
        reply.starts_with("fail: ident authentication failed: malformed ident reply: the reply contains the control character U+001B"),
        "{reply}"
    );
    assert!(h.all_keys().await.is_empty());
}

#[tokio::test]
async fn the_daemon_log_never_carries_raw_control_characters() {
    let redis = RedisServer::start().await.unwrap();
    let identd = forge_test_support::Identd::start(IdentAnswer::User("tools.mytool".into()))
        .await
        .unwrap();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let child = Command::new(env!("CARGO_BIN_EXE_proxylistener"))
        .args(["--redis", &redis.url()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--listen-admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--ident-port", &identd.port().to_string()])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _child = Kill(child);
    let addr = forge_test_support::ports::loopback(port);
    wait_for_port(addr, Duration::from_secs(30)).await.unwrap();
    let attacks: [&[u8]; 4] = [
        b"register\n(\x1b[2J\nhttp://127.0.0.1:5000\n",
        b"register\n(a\r\nFORGED proxylistener: ok\nhttp://127.0.0.1:5000\n",
        b"register\n.*\nhttp://127.0.0.1:5000\x1b[31m\n",
        b"hello\x1b[2J\n.*\n",
    ];
    for attack in attacks {
        let reply = common::send_to(addr, attack, None).await;
        assert!(reply.starts_with("fail: "), "{reply}");
    }
    // The refusals are logged (one line each) before the next request is
    // read; wait until all are there.
    eventually(Duration::from_secs(30), "four refusals logged", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("refused")
            .count()
            >= attacks.len()
    })
    .await;
    let text = std::fs::read(&log).unwrap();
    assert!(
        !text.contains(&0x1b),
        "raw ESC in the log:\n{}",
        String::from_utf8_lossy(&text)
    );
    assert!(!text.contains(&b'\r'), "raw CR in the log");
    assert!(
        !String::from_utf8_lossy(&text)
            .lines()
            .any(|l| l.starts_with("FORGED")),
        "a forged log line"
    );
}

// --- item 5: a tool can only publish its own server -------------------------

/// A harness whose ownership checks ask a real oidentd, and a client whose
/// own identd (the table one) says it is `MALLORY`.
async fn ownership_harness(oidentd: &Oidentd, within_ms: u64) -> Harness {
    let ident_port = oidentd.port();
    let h = Harness::start_with(move |c| {
        c.ownership.ident_port = Some(ident_port);
        c.ownership.within_ms = within_ms;
        c.ownership.retry_interval_ms = 100;
        c.ident.read_timeout_ms = 5000;
        c.ident.connect_timeout_ms = 5000;
    })
    .await;
    h.identd.set_default(IdentAnswer::User(MALLORY.into()));
    h
}

#[tokio::test]
async fn registering_another_tools_listening_server_is_refused() {
    let oidentd = Oidentd::start().await.unwrap();
    let h = ownership_harness(&oidentd, 60_000).await;
    let victim = ListenerAs::start(VICTIM, free_port()).await.unwrap();
    let url = format!("http://127.0.0.1:{}", victim.port());

    let reply = h.send(&register(".*", &url)).await;
    assert_eq!(
        reply,
        format!(
            "fail: backend 127.0.0.1:{} is served by user \"{VICTIM}\", not by {MALLORY}",
            victim.port()
        )
    );
    assert!(h.all_keys().await.is_empty());

    // Its own server is accepted before `ok` (the runner's order: listen,
    // then register).
    let own = ListenerAs::start(MALLORY, free_port()).await.unwrap();
    let url = format!("http://127.0.0.1:{}", own.port());
    assert_eq!(h.send(&register(".*", &url)).await, "ok");
    assert_eq!(h.hgetall("prefix:fgmallory").await.len(), 1);
    assert_eq!(
        h.pending.pending(),
        0,
        "verified before ok, nothing watched"
    );
}

#[tokio::test]
async fn a_route_to_a_port_another_tool_starts_serving_later_is_removed() {
    let oidentd = Oidentd::start().await.unwrap();
    let h = ownership_harness(&oidentd, 60_000).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // Nothing listens yet: today's clients register first, so `ok`.
    assert_eq!(h.send(&register(".*", &url)).await, "ok");
    assert_eq!(h.hgetall("prefix:fgmallory").await.len(), 1);

    let _victim = ListenerAs::start(VICTIM, port).await.unwrap();
    eventually(
        Duration::from_secs(120),
        "the foreign route was not removed",
        || async { h.hgetall("prefix:fgmallory").await.is_empty() },
    )
    .await;
    assert_eq!(h.pending.stats().removed_foreign, 1);
}

#[tokio::test]
async fn a_route_to_a_port_nobody_ever_serves_is_removed_after_the_bound() {
    let oidentd = Oidentd::start().await.unwrap();
    let h = ownership_harness(&oidentd, 1000).await;
    let url = format!("http://127.0.0.1:{}", free_port());
    assert_eq!(h.send(&register(".*", &url)).await, "ok");
    eventually(
        Duration::from_secs(120),
        "the never-served route was not removed",
        || async { h.hgetall("prefix:fgmallory").await.is_empty() },
    )
    .await;
    assert_eq!(h.pending.stats().removed_never_listened, 1);
}

#[tokio::test]
async fn a_tool_that_registers_before_it_listens_keeps_its_route() {
    let oidentd = Oidentd::start().await.unwrap();
    let h = ownership_harness(&oidentd, 60_000).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(h.send(&register(".*", &url)).await, "ok");
    assert_eq!(h.pending.pending(), 1);

    let _own = ListenerAs::start(MALLORY, port).await.unwrap();
    eventually(
        Duration::from_secs(120),
        "the tool's own server was not verified",
        || async { h.pending.stats().verified == 1 },
    )
    .await;
    assert_eq!(h.pending.pending(), 0);
    assert_eq!(h.hgetall("prefix:fgmallory").await.get(".*"), Some(&url));
}

// --- item 5, remembered verdicts: never another tool's pass ---------------

/// A probe's verdict is remembered for the tool it named, and only for it:
/// another tool registering the same backend is probed and refused.
#[tokio::test]
async fn a_remembered_verdict_does_not_let_another_tool_pass() {
    let oidentd = Oidentd::start().await.unwrap();
    let h = ownership_harness(&oidentd, 60_000).await;
    let victim = ListenerAs::start(VICTIM, free_port()).await.unwrap();
    let url = format!("http://127.0.0.1:{}", victim.port());

    // The victim registers its own server: verified, remembered.
    let victim_ident = IdentAnswer::User(VICTIM.into());
    assert_eq!(
        h.send_as(&register(".*", &url), victim_ident.clone()).await,
        "ok"
    );
    assert_eq!(
        h.send_as(&register("^/again", &url), victim_ident).await,
        "ok"
    );
    assert_eq!(
        h.pending.verified().hits(),
        1,
        "the victim's second registration used the remembered verdict"
    );

    // The attacker registers the same backend right after: still refused.
    let reply = h.send(&register(".*", &url)).await;
    assert_eq!(
        reply,
        format!(
            "fail: backend 127.0.0.1:{} is served by user \"{VICTIM}\", not by {MALLORY}",
            victim.port()
        )
    );
    assert_eq!(h.pending.verified().hits(), 1);
    assert!(h.hgetall("prefix:fgmallory").await.is_empty());
}

/// A tool that unregisters its backend and registers it again is probed
/// again: if another tool's server took the port meanwhile, it is refused.
#[tokio::test]
async fn after_an_unregister_the_backend_is_probed_again() {
    let oidentd = Oidentd::start().await.unwrap();
    let h = ownership_harness(&oidentd, 60_000).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let own = ListenerAs::start(MALLORY, port).await.unwrap();
    assert_eq!(h.send(&register(".*", &url)).await, "ok");
    assert_eq!(h.send(b"unregister\n.*\n").await, "ok");
    drop(own);

    let _victim = ListenerAs::start(VICTIM, port).await.unwrap();
    let reply = h.send(&register(".*", &url)).await;
    assert_eq!(
        reply,
        format!("fail: backend 127.0.0.1:{port} is served by user \"{VICTIM}\", not by {MALLORY}")
    );
    assert_eq!(h.pending.verified().hits(), 0);
    assert!(h.hgetall("prefix:fgmallory").await.is_empty());
}

/// A remembered verdict lasts `ownership.verified_ttl_ms`: after it, a
/// server replaced by another tool's is found out even without an
/// unregister in between.
#[tokio::test]
async fn a_remembered_verdict_expires() {
    let oidentd = Oidentd::start().await.unwrap();
    let ident_port = oidentd.port();
    let h = Harness::start_with(move |c| {
        c.ownership.ident_port = Some(ident_port);
        c.ownership.verified_ttl_ms = 1000;
        c.ident.read_timeout_ms = 5000;
        c.ident.connect_timeout_ms = 5000;
    })
    .await;
    h.identd.set_default(IdentAnswer::User(MALLORY.into()));
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let own = ListenerAs::start(MALLORY, port).await.unwrap();
    assert_eq!(h.send(&register(".*", &url)).await, "ok");
    drop(own);
    let _victim = ListenerAs::start(VICTIM, port).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let reply = h.send(&register("^/other", &url)).await;
    assert_eq!(
        reply,
        format!("fail: backend 127.0.0.1:{port} is served by user \"{VICTIM}\", not by {MALLORY}")
    );
    assert_eq!(h.pending.verified().hits(), 0);
}

/// A child process killed when dropped.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
