//! No oracle for which accounts exist: a login names an unknown account
//! does the same work as one naming a real account (a fresh connection, a
//! bind, one password-hash verification), and the name check is rate-limited.
//! Work is counted, not timed; the times are printed for the record
//! (`cargo test -p idm-web --test idm -- no_oracle --nocapture`).

use std::time::{Duration, Instant};

use crate::common::{Env, EnvOptions, GOOD_PASSWORD, WebClient, make_account};

async fn env(check_per_minute: u32) -> Env {
    let mut env = Env::start_with(EnvOptions {
        antibot: false,
        worker: false,
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    env.config.rate_limit.login_per_ip_per_minute = 10_000;
    env.config.rate_limit.login_per_account_per_minute = 10_000;
    env.config.rate_limit.check_per_ip_per_minute = check_per_minute;
    env.restart_web().await;
    env
}

/// Logs in with a wrong password; returns the status, the error shown and
/// how long it took.
async fn wrong_login(c: &mut WebClient, login: &str) -> (u16, bool, Duration) {
    let form = c.get("/login").await;
    let csrf = form.hidden("csrf_token").unwrap();
    let started = Instant::now();
    let page = c
        .post(
            "/login",
            &[
                ("login", login),
                ("password", "Not-the-password-31"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    let took = started.elapsed();
    (
        page.status,
        page.body.contains("Wrong username or password."),
        took,
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_does_the_same_work_for_unknown_and_known_names() {
    let env = env(10_000).await;
    make_account(&env, "known", "Known Person", GOOD_PASSWORD).await;
    let dir = &env.core.directory;
    let mut c = env.client();
    let (mut known_times, mut unknown_times) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let before = dir.login_work();
        let (status, message, took) = wrong_login(&mut c, "known").await;
        let after = dir.login_work();
        assert_eq!((status, message), (401, true));
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1, 1),
            "a known name: one bind, one hash verified"
        );
        known_times.push(took);

        let before = dir.login_work();
        let (status, message, took) = wrong_login(&mut c, "nobody-here").await;
        let after = dir.login_work();
        assert_eq!((status, message), (401, true));
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1, 1),
            "an unknown name: the same bind and hash verification"
        );
        unknown_times.push(took);
    }
    let (k, u) = (median(known_times), median(unknown_times));
    println!(
        "login with a wrong password, median of 10: known name {:.1} ms, unknown name {:.1} ms (ratio {:.2})",
        k.as_secs_f64() * 1e3,
        u.as_secs_f64() * 1e3,
        u.as_secs_f64() / k.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_name_check_is_rate_limited_per_client() {
    let env = env(5).await;
    let mut c = env.client();
    for i in 0..5 {
        let page = c
            .get(&format!(
                "/api/v1/check?username=Person+{i}&shellname=person{i}"
            ))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let page = c.get("/api/v1/check?username=Person+x").await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.body.contains("too many name checks"), "{}", page.body);
    assert_eq!(
        page.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("60")
    );
}
