//! Fuzzed input: arbitrary bytes, mutated requests, split writes,
//! half-closed and abandoned connections. The daemon must keep answering,
//! reply at most one line, and write nothing a valid request from this
//! client couldn't.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;

use std::time::Duration;

use common::{Harness, register};
use forge_core::{BackendUrl, RedisKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn request(rng: &mut StdRng) -> Vec<u8> {
    let valid: [&[u8]; 3] = [
        b"register\n.*\nhttp://127.0.0.1:5000\n",
        b"registerCanonical\r\n^/x\r\nhttp://127.0.0.1:6000\r\n",
        b"unregister\n.*\n",
    ];
    match rng.random_range(0..4) {
        // Arbitrary bytes.
        0 => (0..rng.random_range(0..300))
            .map(|_| rng.random())
            .collect(),
        // A valid request with a few bytes flipped, inserted or dropped.
        1 | 2 => {
            let mut r = valid[rng.random_range(0..valid.len())].to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..r.len());
                match rng.random_range(0..3) {
                    0 => r[i] = rng.random(),
                    1 => r.insert(i, rng.random()),
                    _ => {
                        r.remove(i);
                    }
                }
                if r.is_empty() {
                    break;
                }
            }
            r
        }
        // A valid request, possibly truncated.
        _ => {
            let r = valid[rng.random_range(0..valid.len())];
            r[..rng.random_range(0..=r.len())].to_vec()
        }
    }
}

async fn one_case(addr: std::net::SocketAddr, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let bytes = request(&mut rng);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Split writes with small pauses.
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len());
        if s.write_all(&rest[..n]).await.is_err() {
            return;
        }
        rest = &rest[n..];
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
        }
    }
    match rng.random_range(0..4) {
        // Abandon the connection without reading the reply.
        0 => return,
        // Half-close, then read.
        1 | 2 => {
            let _ = s.shutdown().await;
        }
        // Keep the write side open (the request timeout answers).
        _ => {}
    }
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    if let Ok(Ok(_)) = read {
        let reply = String::from_utf8(reply).expect("UTF-8 reply");
        assert!(
            reply == "ok" || reply.starts_with("fail: "),
            "{:?} → {reply:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(!reply.contains('\n'));
    }
}

#[tokio::test]
async fn fuzzed_input_never_crashes_or_writes_what_it_shouldnt() {
    // Room for every pattern the cases may register, so the final
    // registration below is not refused by the patterns-per-tool budget.
    let h = Harness::start_with(|c| {
        c.route_budget = forge_core::PatternBudget::new(16 * 1024, 1024).unwrap();
    })
    .await;
    let mut seeds = 0..600u64;
    loop {
        let batch: Vec<u64> = seeds.by_ref().take(50).collect();
        if batch.is_empty() {
            break;
        }
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|seed| tokio::spawn(one_case(h.addr, seed)))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(!h.task.is_finished(), "the daemon stopped");
    }

    // Only this tool's keys exist, and every backend is this client's.
    for key in h.all_keys().await {
        match RedisKey::parse(&key).unwrap() {
            RedisKey::Prefix(t) => {
                assert_eq!(t.as_str(), "mytool");
                for (route, url) in h.hgetall(&key).await {
                    forge_core::RoutePattern::parse(&route).unwrap();
                    let url = BackendUrl::parse(&url).unwrap();
                    assert_eq!(url.host(), "127.0.0.1");
                    assert!(url.port() >= 1024);
                }
            }
            RedisKey::Redirect(t) => {
                assert_eq!(t.as_str(), "mytool");
                for (_, v) in h.hgetall(&key).await {
                    assert_eq!(v, "mytool.toolforge.org");
                }
            }
            other => panic!("unexpected key {other:?}"),
        }
    }
    // And it still works.
    assert_eq!(h.send(&register(".*", "http://127.0.0.1:5999")).await, "ok");
}
