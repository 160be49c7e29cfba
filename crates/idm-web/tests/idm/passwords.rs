//! Part 2 self-service: password change and forgotten-password reset.

use std::time::Duration;

use crate::common::{
    Env, EnvOptions, GOOD_PASSWORD, assert_text_and_html, link_in_mail, make_account,
};

const NEW_PASSWORD: &str = "Another-strong-one-77";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_user_changes_password() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    let dn = make_account(&env, "erin", "Erin Example", GOOD_PASSWORD).await;
    let mut c = env.client();
    assert_eq!(c.get("/account/password").await.location(), Some("/login"));
    assert_eq!(
        c.submit(
            "/login",
            "/login",
            &[("login", "erin"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );

    let wrong = c
        .submit(
            "/account/password",
            "/account/password",
            &[
                ("current_password", "not-it-at-all"),
                ("new_password", NEW_PASSWORD),
                ("new_password2", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(wrong.status, 400);
    assert!(
        wrong.body.contains("not your current password"),
        "{}",
        wrong.body
    );
    let weak = c
        .submit(
            "/account/password",
            "/account/password",
            &[
                ("current_password", GOOD_PASSWORD),
                ("new_password", "password1234"),
                ("new_password2", "password1234"),
            ],
        )
        .await;
    assert_eq!(weak.status, 400);
    assert!(weak.body.contains(r#"id="e-new_password""#));
    let differ = c
        .submit(
            "/account/password",
            "/account/password",
            &[
                ("current_password", GOOD_PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password2", "x"),
            ],
        )
        .await;
    assert_eq!(differ.status, 400);
    assert!(
        env.can_bind(&dn, GOOD_PASSWORD).await,
        "refused changes change nothing"
    );

    let ok = c
        .submit(
            "/account/password",
            "/account/password",
            &[
                ("current_password", GOOD_PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password2", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(env.can_bind(&dn, NEW_PASSWORD).await);
    assert!(!env.can_bind(&dn, GOOD_PASSWORD).await);
    let p = env.ldap_entry("erin").await.unwrap().attrs["userPassword"][0].clone();
    assert!(p.starts_with("{ARGON2}") || p.starts_with("{SSHA}"), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_password_is_reset_by_mail_with_neutral_answers() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    let dn = make_account(&env, "frank", "Frank Example", GOOD_PASSWORD).await;
    let mut c = env.client();
    let known = c
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "frank")],
        )
        .await;
    let unknown = c
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "nobody-here")],
        )
        .await;
    assert_eq!(known.status, 200);
    assert_eq!(
        (known.status, &known.body),
        (unknown.status, &unknown.body),
        "the answer reveals nothing"
    );

    let link = link_in_mail(&env, "frank@example.org", "/password/reset/").await;
    assert!(link.starts_with(&env.base_url));
    // Short-lived: one hour by default, and the mail says so.
    let token = link.rsplit('/').next().unwrap();
    let expires: i64 = token.split('.').nth(1).unwrap().parse().unwrap();
    let left = expires - idm_web::db::now();
    assert!((3500..=3600).contains(&left), "reset link valid {left} s");
    let mail = env
        .smtp
        .messages()
        .into_iter()
        .find(|m| m.recipients == ["frank@example.org"])
        .unwrap();
    assert_text_and_html(&mail);
    let text = mail.text_body().unwrap();
    assert!(
        text.contains("within 1 hour:") && text.contains(&link),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reset_mails = env
        .smtp
        .messages()
        .iter()
        .filter(|m| {
            m.text_body()
                .unwrap_or_default()
                .contains("/password/reset/")
        })
        .count();
    assert_eq!(reset_mails, 1, "nothing is sent for an unknown account");

    let form = c.get(&link).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("frank"));
    let weak = c
        .submit(
            &link,
            &link,
            &[
                ("new_password", "frank-example"),
                ("new_password2", "frank-example"),
            ],
        )
        .await;
    assert_eq!(weak.status, 400);
    assert!(env.can_bind(&dn, GOOD_PASSWORD).await);
    let done = c
        .submit(
            &link,
            &link,
            &[
                ("new_password", NEW_PASSWORD),
                ("new_password2", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(env.can_bind(&dn, NEW_PASSWORD).await);
    assert!(!env.can_bind(&dn, GOOD_PASSWORD).await);

    // The link worked once; tampered links never.
    assert_eq!(c.get(&link).await.status, 400);
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(c.get(&tampered).await.status, 400);
    let other_user = link.replacen("/frank.", "/erin.", 1);
    assert_eq!(c.get(&other_user).await.status, 400);

    // An expired link (genuine, bound to the current password) is refused,
    // for the form and for the submission, and changes nothing.
    let account = env
        .core
        .directory
        .find_account("frank")
        .await
        .unwrap()
        .unwrap();
    let expired =
        env.core
            .tokens
            .reset_token("frank", &account.user_password, idm_web::db::now() - 10);
    let expired_link = format!("/password/reset/{expired}");
    let page = c.get(&expired_link).await;
    assert_eq!(page.status, 410, "{}", page.body);
    assert!(page.body.contains("expired"), "{}", page.body);
    let csrf = c.get("/login").await.hidden("csrf_token").unwrap();
    let refused = c
        .post(
            &expired_link,
            &[
                ("csrf_token", &csrf),
                ("new_password", "Yet-another-strong-one-5"),
                ("new_password2", "Yet-another-strong-one-5"),
            ],
        )
        .await;
    assert_eq!(refused.status, 410, "{}", refused.body);
    assert!(env.can_bind(&dn, NEW_PASSWORD).await);

    // By e-mail address, a new link arrives and works.
    let _ = c
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "frank@example.org")],
        )
        .await;
    for _ in 0..100 {
        let l = link_in_mail(&env, "frank@example.org", "/password/reset/").await;
        if l != link {
            assert_eq!(c.get(&l).await.status, 200);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no second reset mail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_username_is_mailed_with_neutral_answers() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    make_account(&env, "gina", "Gina Example", GOOD_PASSWORD).await;
    let mut c = env.client();
    let known = c
        .submit(
            "/username/forgot",
            "/username/forgot",
            &[("email", "gina@example.org")],
        )
        .await;
    let unknown = c
        .submit(
            "/username/forgot",
            "/username/forgot",
            &[("email", "nobody@example.org")],
        )
        .await;
    assert_eq!(known.status, 200);
    assert_eq!(
        (known.status, &known.body),
        (unknown.status, &unknown.body),
        "the answer reveals nothing"
    );
    let mails = env.smtp.wait_for(1, Duration::from_secs(20)).await.unwrap();
    let body = mails[0].text_body().unwrap();
    assert_text_and_html(&mails[0]);
    assert_eq!(mails[0].recipients, vec!["gina@example.org".to_owned()]);
    assert!(
        body.contains("Gina Example") && body.contains("Shell name: gina"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.smtp.messages().len(),
        1,
        "nothing is sent to an unknown address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_change_is_verified_by_mail_to_the_new_address() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    make_account(&env, "ivan", "Ivan Example", GOOD_PASSWORD).await;
    let mut c = env.client();
    assert_eq!(
        c.submit(
            "/login",
            "/login",
            &[("login", "ivan"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );
    let bad = c
        .submit(
            "/account/email",
            "/account/email",
            &[("email", "not-an-address")],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains(r#"id="e-email""#));
    let same = c
        .submit(
            "/account/email",
            "/account/email",
            &[("email", "ivan@example.org")],
        )
        .await;
    assert_eq!(same.status, 400);
    let ok = c
        .submit(
            "/account/email",
            "/account/email",
            &[("email", "ivan.new@example.net")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let link = link_in_mail(&env, "ivan.new@example.net", "/account/email/confirm/").await;
    for m in env.smtp.messages() {
        assert_text_and_html(&m);
        assert_eq!(
            m.recipients,
            ["ivan.new@example.net"],
            "only the new address"
        );
        assert!(m.text_body().unwrap().contains("within 1 hour and confirm"));
    }
    let entry = env.ldap_entry("ivan").await.unwrap();
    assert_eq!(
        entry.attrs["mail"],
        vec!["ivan@example.org"],
        "nothing changes before the link is used"
    );
    let page = c.get(&link).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("ivan.new@example.net"));
    assert_eq!(
        c.post(&link, &[]).await.status,
        403,
        "CSRF applies to the confirmation too"
    );
    let done = c.submit(&link, &link, &[]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(
        env.ldap_entry("ivan").await.unwrap().attrs["mail"],
        vec!["ivan.new@example.net"]
    );
    assert!(
        c.get("/account")
            .await
            .body
            .contains("ivan.new@example.net"),
        "the session follows"
    );
    // Once only; tampered never.
    assert_eq!(c.get(&link).await.status, 400);
    let forged = link.replacen("/ivan.", "/erin.", 1);
    assert_eq!(c.get(&forged).await.status, 400);
}

/// `page` without its per-session CSRF token.
fn without_csrf(page: &str) -> String {
    regex::Regex::new(r#"name="csrf_token" value="[^"]*""#)
        .unwrap()
        .replace_all(page, r#"name="csrf_token" value="""#)
        .into_owned()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The reset and forgotten-username pages answer an existing and a missing
/// account identically: same status, same body (but the CSRF token), and
/// each queues exactly one job — the request path never asks LDAP, so its
/// time cannot depend on the answer. The medians are printed (run with
/// `--nocapture`), not asserted: no timing thresholds in `cargo test`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neutral_answers_do_the_same_work_for_known_and_unknown_accounts() {
    use fred::prelude::*;

    const ROUNDS: usize = 20;
    let mut env = Env::start_with(EnvOptions {
        admin_recipients: false,
        worker: false,
        ..Default::default()
    })
    .await;
    env.config.rate_limit.login_per_ip_per_minute = 10_000;
    env.restart_web().await;
    make_account(&env, "frank", "Frank Example", GOOD_PASSWORD).await;
    let redis = env.config.redis.pool().unwrap();
    redis.init().await.unwrap();
    let queue = format!("rq:queue:{}", idm_web::jobs::NOTIFICATION_QUEUE);

    let pages = [
        (
            "/password/forgot",
            "login",
            "frank",
            "nobody-here",
            "forgotten password",
        ),
        (
            "/username/forgot",
            "email",
            "frank@example.org",
            "nobody@example.org",
            "forgotten username",
        ),
    ];
    for (path, field, known, unknown, what) in pages {
        let mut answers = Vec::new();
        let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            // Alternate the order so warm-up favours neither side.
            let order = if round % 2 == 0 {
                [known, unknown]
            } else {
                [unknown, known]
            };
            for value in order {
                let side = usize::from(value == unknown);
                let mut c = env.client();
                let csrf = c.get(path).await.hidden("csrf_token").unwrap();
                let before: i64 = redis.llen(&queue).await.unwrap();
                let started = std::time::Instant::now();
                let page = c.post(path, &[(field, value), ("csrf_token", &csrf)]).await;
                times[side].push(started.elapsed());
                let after: i64 = redis.llen(&queue).await.unwrap();
                assert_eq!(after, before + 1, "{what} {value:?}: one job queued");
                answers.push((side, page.status, without_csrf(&page.body)));
            }
        }
        let first = &answers[0];
        assert_eq!(first.1, 200);
        for a in &answers {
            assert_eq!(
                (a.1, &a.2),
                (first.1, &first.2),
                "{what}: known and unknown accounts get the same answer"
            );
        }
        let (k, u) = (median(times[0].clone()), median(times[1].clone()));
        println!(
            "{what}: median over {ROUNDS} requests: existing account {k:?}, no account {u:?} (ratio {:.2})",
            k.as_secs_f64() / u.as_secs_f64()
        );
    }
}
