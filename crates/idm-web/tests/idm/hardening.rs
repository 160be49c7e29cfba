//! Smaller defences: CSRF tokens bound to the session, browser security
//! headers on every page, multipart mails, and password hashes that leave
//! SQLite's files once the account exists.

use crate::common::{DbGuard, Env, EnvOptions, GOOD_PASSWORD, make_account};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_tokens_are_bound_to_the_session() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        worker: false,
        ..Default::default()
    })
    .await;
    make_account(&env, "rita", "Rita Example", GOOD_PASSWORD).await;
    let mut victim = env.client();
    let login = victim
        .submit(
            "/login",
            "/login",
            &[("login", "rita"), ("password", GOOD_PASSWORD)],
        )
        .await;
    assert_eq!(login.status, 303);

    // The attacker mints a cookie and its form token in a session of their
    // own, and plants the cookie in the victim's browser (a sibling host can).
    let mut attacker = env.client();
    let form = attacker.get("/login").await;
    let token = form.hidden("csrf_token").unwrap();
    let cookie = attacker.cookies["idm_csrf"].clone();
    victim.cookies.insert("idm_csrf".into(), cookie);
    let forged = victim
        .post(
            "/account/tokens",
            &[("csrf_token", &token), ("name", "planted")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(env.core.api_tokens.list("rita").await.unwrap().is_empty());

    // A token from another logged-in session of the same cookie: refused too.
    let mut other = env.client();
    other
        .cookies
        .insert("idm_csrf".into(), victim.cookies["idm_csrf"].clone());
    assert_eq!(
        other
            .submit(
                "/login",
                "/login",
                &[("login", "rita"), ("password", GOOD_PASSWORD)]
            )
            .await
            .status,
        303
    );
    let theirs = other
        .get("/account/tokens")
        .await
        .hidden("csrf_token")
        .unwrap();
    let cross = victim
        .post(
            "/account/tokens",
            &[("csrf_token", &theirs), ("name", "cross")],
        )
        .await;
    assert_eq!(cross.status, 403, "{}", cross.body);

    // The victim's own form works.
    let own = victim
        .submit("/account/tokens", "/account/tokens", &[("name", "mine")])
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(env.core.api_tokens.list("rita").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_sends_browser_security_headers() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        worker: false,
        ..Default::default()
    })
    .await;
    let mut c = env.client();
    let mut pages = Vec::new();
    for path in [
        "/",
        "/login",
        "/signup",
        "/password/forgot",
        "/no-such-page",
        "/api/v1/check?username=x",
    ] {
        pages.push((path.to_owned(), c.get(path).await));
    }
    let mut bad_host = env.client();
    bad_host.host = Some("evil.example".into());
    pages.push(("bad host".into(), bad_host.get("/").await));
    for (what, page) in &pages {
        let h = |name: &str| {
            page.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let csp = h("content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp:?}");
        assert!(csp.contains("default-src 'none'"), "{what}: {csp:?}");
        assert!(csp.contains("form-action 'self'"), "{what}: {csp:?}");
        assert_eq!(h("x-frame-options"), "DENY", "{what}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    }
}

/// Whether `needle` occurs in any of the SQLite files (database, WAL, shared memory).
fn in_sqlite_files(db: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signups_password_hash_leaves_the_sqlite_files_after_activation() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        worker: false,
        ..Default::default()
    })
    .await;
    let DbGuard::Sqlite(db) = &env.db else {
        unreachable!("SQLite by default")
    };
    let hash =
        idm_web::passwords::hash_for_directory(GOOD_PASSWORD, env.config.ldap.password_scheme)
            .unwrap();
    // The hash's last part (salt and digest) is what must not stay behind.
    let secret = hash.rsplit('$').next().unwrap().to_owned();
    assert!(secret.len() >= 16, "{hash}");
    let s = env
        .core
        .signups
        .insert(&idm_web::store::NewSignup {
            username: "Sam Example".into(),
            uid: "sam".into(),
            email: "sam@example.org".into(),
            password_hash: hash.clone(),
        })
        .await
        .unwrap();
    assert!(
        !in_sqlite_files(db.path(), secret.as_bytes()).is_empty(),
        "the hash is stored while the signup is pending"
    );
    assert!(env.core.signups.confirm(s.id).await.unwrap());
    env.core.create_account(s.id).await.unwrap();
    assert_eq!(
        env.core
            .signups
            .by_uid("sam")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        None
    );
    let left = in_sqlite_files(db.path(), secret.as_bytes());
    assert!(left.is_empty(), "the deleted hash is still in {left:?}");

    // Expired pending signups' hashes go the same way.
    let hash2 = idm_web::passwords::hash_for_directory(
        "Another-long-passphrase-9",
        env.config.ldap.password_scheme,
    )
    .unwrap();
    let secret2 = hash2.rsplit('$').next().unwrap().to_owned();
    env.core
        .signups
        .insert(&idm_web::store::NewSignup {
            username: "Tom Example".into(),
            uid: "tom".into(),
            email: "tom@example.org".into(),
            password_hash: hash2,
        })
        .await
        .unwrap();
    assert!(!in_sqlite_files(db.path(), secret2.as_bytes()).is_empty());
    env.core.expire_signups(-1, false).await.unwrap();
    assert!(env.core.signups.by_uid("tom").await.unwrap().is_none());
    let left = in_sqlite_files(db.path(), secret2.as_bytes());
    assert!(
        left.is_empty(),
        "the expired signup's hash is still in {left:?}"
    );
}
