//! Every signup rule has a test that it rejects.

use idm_web::services::signup::SignupOutcome;

use crate::common::{
    Backend, Env, EnvOptions, GOOD_PASSWORD, signup_errors as errors, signup_form as form,
    web_signup,
};

async fn env() -> Env {
    Env::start_with(EnvOptions {
        antibot: false,
        worker: false,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_existing_in_ldap_are_refused() {
    let env = env().await;
    env.add_ldap_user("taken", "Taken Person", 6000);
    assert!(errors(&env, &form("Someone New", "taken"), "shellname").await[0].contains("taken"));
    assert!(errors(&env, &form("Taken Person", "fresh"), "username").await[0].contains("taken"));
    assert!(
        errors(&env, &form("taken person", "fresh"), "username").await[0].contains("taken"),
        "cn matches case-insensitively"
    );
    // A username equal to an existing uid, a shell name equal to an existing cn.
    assert!(
        !errors(&env, &form("Taken", "fresh2"), "username")
            .await
            .is_empty()
    );
    env.add_ldap_user("other", "zed", 6001);
    assert!(
        !errors(&env, &form("Fine Name", "zed"), "shellname")
            .await
            .is_empty()
    );
    // Filter metacharacters are escaped, not interpreted.
    // ("Ta*" would match "Taken Person" as a wildcard.)
    match env
        .core
        .submit_signup(&form("Ta*", "fresh4"))
        .await
        .unwrap()
    {
        SignupOutcome::Stored { .. } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_held_by_pending_signups_are_refused() {
    let env = env().await;
    assert!(matches!(
        env.core
            .submit_signup(&form("Pending Person", "pending"))
            .await
            .unwrap(),
        SignupOutcome::Stored { .. }
    ));
    assert!(
        !errors(&env, &form("Another Person", "pending"), "shellname")
            .await
            .is_empty()
    );
    assert!(
        !errors(&env, &form("PENDING PERSON", "another"), "username")
            .await
            .is_empty()
    );
    assert!(
        !errors(&env, &form("Pending", "another2"), "username")
            .await
            .is_empty(),
        "a username equal to a pending shell name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocklisted_names_are_refused_with_and_without_casesensitive() {
    let env = env().await;
    env.core
        .blocklist_store
        .upsert(
            "test",
            &[
                ("User:bad.*".into(), String::new(), false),
                ("User:EvIL.*".into(), "casesensitive".into(), true),
            ],
            idm_web::db::now(),
        )
        .await
        .unwrap();
    env.core.reload_blocklist().await.unwrap();
    // Case-insensitive entry: matches whatever the case.
    assert_eq!(
        errors(&env, &form("Fine Name", "badger"), "shellname").await,
        vec!["This name is not allowed."]
    );
    assert!(
        !errors(&env, &form("BADGER", "fine"), "username")
            .await
            .is_empty()
    );
    // Anchored: "notbad" does not match "bad.*".
    assert!(matches!(
        env.core
            .submit_signup(&form("Not Bad", "notbad"))
            .await
            .unwrap(),
        SignupOutcome::Stored { .. }
    ));
    // Case-sensitive entry: "EvIL one" is blocked; "evil-one" (User:Evil-one) is not.
    assert!(
        !errors(&env, &form("EvIL one", "fine2"), "username")
            .await
            .is_empty()
    );
    assert!(matches!(
        env.core
            .submit_signup(&form("Nice One", "evil-one"))
            .await
            .unwrap(),
        SignupOutcome::Stored { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shell_names_usernames_and_emails_are_refused() {
    let env = env().await;
    for bad in ["1abc", "Abc", "a_b", "-abc", "", &"a".repeat(33)] {
        assert!(
            !errors(&env, &form("Good Name", bad), "shellname")
                .await
                .is_empty(),
            "{bad:?}"
        );
    }
    for bad in ["x", "a@b", "12345", "Foo/Bar"] {
        assert!(
            !errors(&env, &form(bad, "goodname"), "username")
                .await
                .is_empty(),
            "{bad:?}"
        );
    }
    let mut f = form("Good Name", "goodname");
    f.email = "not-an-address".into();
    assert!(!errors(&env, &f, "email").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_passwords_are_refused() {
    let env = env().await;
    for (pw, why) in [
        ("short1!", "too short"),
        ("password1234", "common"),
        ("12345678901234", "digits"),
        ("Goodname-Person1", "similar to the username"),
        ("goodname-2024", "contains the shell name"),
    ] {
        let mut f = form("Goodname Person", "goodname");
        f.password = pw.into();
        f.password2 = pw.into();
        assert!(
            !errors(&env, &f, "password").await.is_empty(),
            "{pw}: {why}"
        );
    }
    let mut f = form("Good Name", "goodname");
    f.password2 = "Something-else-42".into();
    assert!(!errors(&env, &f, "password2").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_bot_check_refuses_wrong_answers_and_honeypots() {
    let env = Env::start_with(EnvOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut f = form("Robot Person", "robot");
    assert!(
        !errors(&env, &f, "human_check").await.is_empty(),
        "no challenge"
    );
    let (q, challenge) = env.core.tokens.antibot_challenge(idm_web::db::now());
    let nums: Vec<u32> = q
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse().ok())
        .collect();
    f.challenge = challenge;
    f.human_check = (nums[0] + nums[1] + 1).to_string();
    assert!(
        !errors(&env, &f, "human_check").await.is_empty(),
        "wrong answer"
    );
    f.human_check = (nums[0] + nums[1]).to_string();
    f.website = "http://spam.example".into();
    assert!(
        !errors(&env, &f, "human_check").await.is_empty(),
        "honeypot filled"
    );
    f.website.clear();
    assert!(matches!(
        env.core.submit_signup(&f).await.unwrap(),
        SignupOutcome::Stored { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_down_means_try_again_later_and_nothing_saved() {
    let mut env = Env::start_with(EnvOptions {
        antibot: false,
        worker: false,
        ..Default::default()
    })
    .await;
    env.slapd.stop().unwrap();
    assert!(matches!(
        env.core
            .submit_signup(&form("Down Person", "down"))
            .await
            .unwrap(),
        SignupOutcome::TryLater
    ));
    assert!(env.core.signups.by_uid("down").await.unwrap().is_none());
    let mut c = env.client();
    let page = web_signup(
        &mut c,
        "Down Person",
        "down",
        "down@example.org",
        GOOD_PASSWORD,
    )
    .await;
    assert_eq!(page.status, 503);
    assert!(page.body.contains("try again later"), "{}", page.body);
    assert!(env.core.signups.by_uid("down").await.unwrap().is_none());
    assert_eq!(
        c.get("/api/v1/check?username=Down%20Person").await.status,
        503
    );
    // Back up: works again.
    env.slapd.restart().await.unwrap();
    assert!(matches!(
        env.core
            .submit_signup(&form("Down Person", "down"))
            .await
            .unwrap(),
        SignupOutcome::Stored { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_errors_are_shown_per_field_and_the_check_endpoint_suggests() {
    let env = Env::start_with(EnvOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    env.add_ldap_user("alice-example", "Someone Else", 6000);
    let mut c = env.client();
    let page = web_signup(
        &mut c,
        "Fine Person",
        "Bad_Name",
        "fine@example.org",
        "short",
    )
    .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains(r#"id="e-shellname""#), "{}", page.body);
    assert!(page.body.contains(r#"id="e-password""#));
    assert!(page.body.contains(r#"aria-invalid="true""#));
    assert!(
        page.body.contains(r#"value="Fine Person""#),
        "entered values are kept"
    );
    assert!(!page.body.contains("short\""), "passwords are never echoed");

    let check = c.get("/api/v1/check?username=Alice%20Example").await;
    assert_eq!(check.status, 200);
    let v: serde_json::Value = serde_json::from_str(&check.body).unwrap();
    assert_eq!(v["suggested_shellname"], "alice-example2");
    assert_eq!(v["username_errors"], serde_json::json!([]));
    let check = c
        .get("/api/v1/check?username=Someone%20Else&shellname=alice-example")
        .await;
    let v: serde_json::Value = serde_json::from_str(&check.body).unwrap();
    assert_eq!(v["username_errors"][0], "This name is already taken.");
    assert_eq!(v["shellname_errors"][0], "This name is already taken.");
    let check = c.get("/api/v1/check?username=X&shellname=9lives").await;
    let v: serde_json::Value = serde_json::from_str(&check.body).unwrap();
    assert!(!v["shellname_errors"].as_array().unwrap().is_empty());
    let _ = Backend::Sqlite;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreplicated_enqueue_withdraws_the_signup() {
    // `[queue] min_replicas = 1` against a Redis without replicas: the
    // activation mail can't be queued durably, so the signup is refused with
    // an error and withdrawn — its names stay free for the retry.
    let mut env = env().await;
    env.config.queue.min_replicas = forge_core::redis::MinReplicas::Count(1);
    env.config.queue.replica_timeout_ms = 100;
    let strict = crate::common::build_core(&env.config, &env.secrets).await;
    let f = form("Durable Person", "durable");
    assert!(strict.submit_signup(&f).await.is_err());
    assert!(strict.signups.by_uid("durable").await.unwrap().is_none());
    // The default (master's acknowledgement) stores it.
    assert!(matches!(
        env.core.submit_signup(&f).await.unwrap(),
        SignupOutcome::Stored { .. }
    ));
}
