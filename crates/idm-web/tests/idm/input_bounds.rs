//! Every form field is bounded before any work; passwords have a minimum
//! strength and may not be blank or invisible.

use std::time::Instant;

use idm_web::services::signup::{SignupForm, SignupOutcome};

use crate::common::{Env, EnvOptions, GOOD_PASSWORD};

async fn env() -> Env {
    Env::start_with(EnvOptions {
        antibot: false,
        worker: false,
        admin_recipients: false,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_signup_is_refused_on_its_size_alone() {
    let env = env().await;
    let huge = "x".repeat(30_000);
    let mut c = env.client();
    let started = Instant::now();
    // (Both password copies would pass the 64 KiB form limit: one is short.)
    let page = c
        .submit(
            "/signup",
            "/signup",
            &[
                ("username", &huge),
                ("shellname", "huge"),
                ("email", "huge@example.org"),
                ("password", &huge),
                ("password2", "x"),
            ],
        )
        .await;
    let took = started.elapsed();
    println!(
        "30,000-character username and password refused in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains("Use at most 85 characters."),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("Use at most 1024 characters."),
        "{}",
        page.body
    );
    // Refused before any other rule ran: the (quadratic) similarity check
    // between password and names never happened.
    assert!(!page.body.contains("too similar"), "{}", page.body);
    assert!(env.core.signups.by_uid("huge").await.unwrap().is_none());

    // The same through the service, and for the login form and name check.
    let form = SignupForm {
        username: huge.clone(),
        shellname: "x".repeat(5_000),
        email: format!("{huge}@example.org"),
        password: huge.clone(),
        password2: huge.clone(),
        ..Default::default()
    };
    let SignupOutcome::Invalid(errors) = env.core.submit_signup(&form).await.unwrap() else {
        panic!("accepted");
    };
    for field in ["username", "shellname", "email", "password", "password2"] {
        assert!(errors.contains_key(field), "{field}: {errors:?}");
    }
    let before = env.core.directory.login_work();
    let page = c
        .submit("/login", "/login", &[("login", &huge), ("password", &huge)])
        .await;
    assert_eq!(page.status, 401);
    assert_eq!(
        env.core.directory.login_work(),
        before,
        "no bind for an oversized login"
    );
    let check = env.core.check_names(&huge, Some(&huge)).await.unwrap();
    assert!(!check.username_errors.is_empty() && !check.shellname_errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_blank_and_invisible_passwords_are_refused() {
    let env = env().await;
    let try_password = |password: &str| SignupForm {
        username: "Strong Person".into(),
        shellname: "strong".into(),
        email: "strong@example.org".into(),
        password: password.into(),
        password2: password.into(),
        ..Default::default()
    };
    for (password, expect) in [
        ("qwertyuiop123", "too"),
        ("Zaqxswcdevfr", "too easy to guess"),
        ("abcdefghijkl", "too easy to guess"),
        ("Strong Person 2024", "too"),
        ("                ", "only spaces"),
        (
            "\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}\u{200b}",
            "invisible",
        ),
        ("Plenty-of-\u{202e}entropy-42!", "invisible"),
    ] {
        match env
            .core
            .submit_signup(&try_password(password))
            .await
            .unwrap()
        {
            SignupOutcome::Invalid(e) => {
                let msgs = e.get("password").cloned().unwrap_or_default();
                assert!(
                    msgs.iter().any(|m| m.contains(expect)),
                    "{password:?}: {msgs:?}"
                );
            }
            other => panic!("{password:?} accepted: {other:?}"),
        }
    }
    assert!(matches!(
        env.core
            .submit_signup(&try_password(GOOD_PASSWORD))
            .await
            .unwrap(),
        SignupOutcome::Stored { .. }
    ));
}
