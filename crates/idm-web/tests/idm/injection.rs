//! LDAP filter injection: every user-facing input that reaches an LDAP
//! filter is escaped (`ldap3::ldap_escape`) and matches only literally.
//!
//! The directory holds exactly one account while the lookups by name and
//! address run, so an unescaped `*` would find it (one match is what login,
//! reset and the reminder act on) — the tests would see a login, a mail, or
//! an account page. Inputs: signup username and shell name, the JSON name
//! check, login, forgotten password (by name or address), forgotten username
//! (by address), the reset link's account name, and the managers' lookup.

use std::time::Duration;

use crate::common::{Env, EnvOptions, GOOD_PASSWORD, make_account, web_signup};

/// Filter metacharacters, half-open filters, a lone escape and NUL bytes.
const ATTACKS: &[&str] = &[
    "*",
    "**",
    ")(uid=*",
    "*)(|(uid=*",
    "*)(|(uid=*))",
    "frank)(|(uid=*",
    "f*",
    "Frank*",
    "*rank",
    "\\",
    "\\2a",
    "\0",
    "frank\0",
    "*\0*",
    "*)(mail=*",
    "*@example.org",
    "frank@*",
    "*)(uid=*@example.org",
];

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_filter_injection_is_escaped_everywhere() {
    let mut env = Env::start_with(EnvOptions {
        admin_recipients: false,
        antibot: false,
        worker: false,
        ..Default::default()
    })
    .await;
    env.config.rate_limit.login_per_ip_per_minute = 10_000;
    env.config.rate_limit.login_per_account_per_minute = 10_000;
    env.config.rate_limit.signup_per_ip_per_hour = 10_000;
    env.config.managers.uids = vec!["boss".into()];
    env.restart_web().await;
    let frank = make_account(&env, "frank", "Frank Example", GOOD_PASSWORD).await;

    // Login: with frank's own password, no pattern logs in as frank.
    for attack in ATTACKS {
        let mut c = env.client();
        let page = c
            .submit(
                "/login",
                "/login",
                &[("login", attack), ("password", GOOD_PASSWORD)],
            )
            .await;
        assert_eq!(page.status, 401, "login {attack:?}: {}", page.body);
        assert_eq!(
            c.get("/account").await.location(),
            Some("/login"),
            "login {attack:?} made a session"
        );
        assert!(
            env.core
                .directory
                .authenticate(attack, GOOD_PASSWORD)
                .await
                .unwrap()
                .is_none(),
            "authenticate {attack:?}"
        );
    }

    // Forgotten password / username: the pages answer as for anyone unknown,
    // and the jobs behind them (run here directly, as the worker would) find
    // nothing, so nothing is mailed.
    let mut c = env.client();
    let neutral_reset = c
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "nobody-here")],
        )
        .await;
    let neutral_name = c
        .submit(
            "/username/forgot",
            "/username/forgot",
            &[("email", "nobody@example.org")],
        )
        .await;
    for attack in ATTACKS {
        let page = c
            .submit("/password/forgot", "/password/forgot", &[("login", attack)])
            .await;
        assert_eq!(
            (page.status, &page.body),
            (neutral_reset.status, &neutral_reset.body),
            "reset {attack:?}"
        );
        let page = c
            .submit("/username/forgot", "/username/forgot", &[("email", attack)])
            .await;
        assert_eq!(
            (page.status, &page.body),
            (neutral_name.status, &neutral_name.body),
            "reminder {attack:?}"
        );
        assert!(
            !env.core.send_password_reset(attack).await.unwrap(),
            "a reset mail for {attack:?}"
        );
        assert!(
            !env.core.send_username_reminder(attack).await.unwrap(),
            "a reminder for {attack:?}"
        );
        assert!(
            env.core
                .directory
                .find_account(attack)
                .await
                .unwrap()
                .is_none(),
            "find_account {attack:?}"
        );
        assert!(
            env.core
                .directory
                .accounts_by_mail(attack)
                .await
                .unwrap()
                .is_empty(),
            "accounts_by_mail {attack:?}"
        );
    }
    // Every request was queued (the request path does no lookup), and the
    // real worker, run over those very jobs, mails nobody.
    env.start_worker().await;
    let control = c
        .submit(
            "/username/forgot",
            "/username/forgot",
            &[("email", "frank@example.org")],
        )
        .await;
    assert_eq!(control.status, 200);
    let mails = env.smtp.wait_for(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(mails[0].recipients, vec!["frank@example.org".to_owned()]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        env.smtp.messages().len(),
        1,
        "only the genuine request was answered by mail"
    );

    // The reset link names its account; a pattern there finds none.
    for attack in ATTACKS {
        let page = c
            .get(&format!("/password/reset/{}.99999999999.AAAA", enc(attack)))
            .await;
        assert_eq!(page.status, 400, "reset link {attack:?}: {}", page.body);
    }

    // The name check: rule errors or literal answers, never "taken" by a
    // pattern, never a 500.
    let taken = "This name is already taken.";
    for attack in ATTACKS {
        let page = c
            .get(&format!(
                "/api/v1/check?username={}&shellname={}",
                enc(attack),
                enc(attack)
            ))
            .await;
        assert_eq!(page.status, 200, "check {attack:?}: {}", page.body);
        let v: serde_json::Value = serde_json::from_str(&page.body).unwrap();
        for field in ["username_errors", "shellname_errors"] {
            assert!(
                !v[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e.as_str() == Some(taken)),
                "check {attack:?}: {field} {v}"
            );
        }
        assert!(
            !v["shellname_errors"].as_array().unwrap().is_empty(),
            "no pattern is a valid shell name: {attack:?}"
        );
    }
    // ... while the real names are taken (the check does look).
    let v: serde_json::Value = serde_json::from_str(
        &c.get("/api/v1/check?username=Frank%20Example&shellname=frank")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(v["username_errors"][0], taken);
    assert_eq!(v["shellname_errors"][0], taken);

    // Signup: patterns in the username or the shell name are validation
    // errors on that field (or, for a username that is a legal literal,
    // no "taken" error), never a 500; nothing reaches LDAP.
    for (n, attack) in ATTACKS.iter().enumerate() {
        let page = web_signup(
            &mut c,
            "Fresh Person",
            attack,
            &format!("fresh{n}@example.org"),
            GOOD_PASSWORD,
        )
        .await;
        assert_eq!(page.status, 400, "shell name {attack:?}: {}", page.body);
        assert!(
            page.body.contains(r#"id="e-shellname""#) && !page.body.contains("already taken"),
            "shell name {attack:?}: {}",
            page.body
        );
        let page = web_signup(
            &mut c,
            attack,
            &format!("fresh{n}"),
            &format!("fresh{n}@example.org"),
            GOOD_PASSWORD,
        )
        .await;
        assert_ne!(page.status, 500, "username {attack:?}: {}", page.body);
        assert!(
            !page.body.contains("already taken"),
            "username {attack:?}: {}",
            page.body
        );
        if page.status == 400 {
            assert!(
                page.body.contains(r#"id="e-username""#),
                "username {attack:?}: {}",
                page.body
            );
        }
    }
    for attack in [")(uid=*", "*)(|(uid=*", "\\", "\0", "*"] {
        let page = web_signup(&mut c, attack, "fresh", "f@example.org", GOOD_PASSWORD).await;
        assert_eq!(page.status, 400, "username {attack:?}");
        assert!(page.body.contains(r#"id="e-username""#), "{attack:?}");
    }

    // Managers look accounts up by shell name, literally.
    make_account(&env, "boss", "Boss Example", GOOD_PASSWORD).await;
    let mut b = env.client();
    assert_eq!(
        b.submit(
            "/login",
            "/login",
            &[("login", "boss"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );
    for attack in ATTACKS {
        let page = b.get(&format!("/manage?uid={}", enc(attack))).await;
        assert_eq!(page.status, 200, "manage {attack:?}: {}", page.body);
        assert!(
            page.body.contains("No such account")
                && !page.body.contains("account-state")
                && !page.body.contains("frank@example.org")
                && !page.body.contains("boss@example.org"),
            "manage {attack:?}: {}",
            page.body
        );
        let refused = b
            .submit(
                "/manage",
                "/manage/block",
                &[("uid", attack), ("reason", "injection test")],
            )
            .await;
        assert_eq!(refused.status, 400, "block {attack:?}: {}", refused.body);
        assert!(refused.body.contains("No such account"), "{attack:?}");
    }
    assert!(
        env.can_bind(&frank, GOOD_PASSWORD).await,
        "nobody was blocked"
    );
    assert!(
        env.core
            .audit
            .for_target("frank", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let page = b.get("/manage?uid=frank").await;
    assert!(
        page.body.contains("frank@example.org"),
        "the literal lookup works"
    );

    // Literal metacharacters in a real name match that name only.
    let star = make_account(&env, "star", "Star*Gazer", GOOD_PASSWORD).await;
    let mut s = env.client();
    for wrong in ["Star*", "*Gazer", "*"] {
        assert_eq!(
            s.submit(
                "/login",
                "/login",
                &[("login", wrong), ("password", GOOD_PASSWORD)]
            )
            .await
            .status,
            401,
            "{wrong:?}"
        );
    }
    assert_eq!(
        s.submit(
            "/login",
            "/login",
            &[("login", "Star*Gazer"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );
    assert_eq!(
        env.core
            .directory
            .find_account("Star*Gazer")
            .await
            .unwrap()
            .unwrap()
            .dn,
        star
    );

    // Still serving, and the real login still works.
    let mut f = env.client();
    assert_eq!(f.get("/").await.status, 200);
    assert_eq!(
        f.submit(
            "/login",
            "/login",
            &[("login", "frank"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );
}
