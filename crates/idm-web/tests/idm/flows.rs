//! The signup → mail → activation → account → login flow over HTTP, tokens,
//! CSRF, sessions across restarts, concurrency of account creation.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{ADMIN_MAIL, Backend, Env, EnvOptions, GOOD_PASSWORD, web_signup};

fn attr(e: &ldap3::SearchEntry, name: &str) -> Vec<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

async fn full_flow(backend: Backend) {
    let mut env = Env::start(backend).await;
    let mut c = env.client();
    let page = web_signup(
        &mut c,
        "Alice Example",
        "alice",
        "alice@example.org",
        GOOD_PASSWORD,
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), Some("/signup/sent"));

    let link = env.activation_link_for("alice@example.org").await;
    assert!(
        link.starts_with(&format!("{}/activate/", env.base_url)),
        "{link}"
    );
    let confirm = c.get(&link).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("alice"));

    // A POST without the CSRF token is refused and changes nothing.
    let refused = c.post(&link, &[]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        env.core
            .signups
            .by_uid("alice")
            .await
            .unwrap()
            .unwrap()
            .state,
        "pending"
    );

    let done = c.submit(&link, &link, &[]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("being created"));

    let signup = env.wait_created("alice").await;
    assert_eq!(
        signup.password_hash, None,
        "the password hash is deleted once the account exists"
    );
    let entry = env.ldap_entry("alice").await.expect("LDAP entry");
    assert_eq!(entry.dn, format!("uid=alice,{}", env.slapd.people_dn()));
    let classes: HashSet<String> = attr(&entry, "objectClass")
        .into_iter()
        .map(|c| c.to_lowercase())
        .collect();
    for c in ["inetorgperson", "posixaccount", "ldappublickey"] {
        assert!(classes.contains(c), "{classes:?}");
    }
    assert_eq!(attr(&entry, "cn"), vec!["Alice Example"]);
    assert_eq!(attr(&entry, "sn"), vec!["Alice Example"]);
    assert_eq!(attr(&entry, "uid"), vec!["alice"]);
    let uid_number: u32 = attr(&entry, "uidNumber")[0].parse().unwrap();
    assert!(uid_number >= 5000);
    assert_eq!(signup.uid_number, Some(i64::from(uid_number)));
    assert_eq!(attr(&entry, "gidNumber"), vec!["500"]);
    assert_eq!(attr(&entry, "homeDirectory"), vec!["/home/alice"]);
    assert_eq!(attr(&entry, "loginShell"), vec!["/bin/bash"]);
    assert_eq!(attr(&entry, "mail"), vec!["alice@example.org"]);
    assert!(
        env.can_bind(&entry.dn, GOOD_PASSWORD).await,
        "bind with the chosen password"
    );
    assert!(!env.can_bind(&entry.dn, "wrong password").await);

    // Admins hear about it once.
    env.smtp.wait_for(2, Duration::from_secs(20)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.mails_to(ADMIN_MAIL), 1);
    // Both mails, the user's and the admins', are plain text.
    for m in env.smtp.messages() {
        crate::common::assert_text_and_html(&m);
    }
    let admin = env
        .smtp
        .messages()
        .into_iter()
        .find(|m| m.recipients.iter().any(|r| r == ADMIN_MAIL))
        .unwrap();
    let text = admin.text_body().unwrap();
    assert!(
        text.contains("Shell name: alice") && text.contains(&format!("uidNumber: {uid_number}")),
        "{text}"
    );

    // The link works once.
    let again = c.get(&link).await;
    assert_eq!(again.status, 400);

    // Log in (by shell name), see the account page.
    let mut browser = env.client();
    let login = browser
        .submit(
            "/login",
            "/login",
            &[("login", "alice"), ("password", "nope-nope-nope")],
        )
        .await;
    assert_eq!(login.status, 401);
    assert!(login.body.contains("Wrong username or password"));
    let login = browser
        .submit(
            "/login",
            "/login",
            &[("login", "alice"), ("password", GOOD_PASSWORD)],
        )
        .await;
    assert_eq!(login.status, 303, "{}", login.body);
    let account = browser.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(account.body.contains("alice@example.org"));

    // By display name too.
    let mut other = env.client();
    let login = other
        .submit(
            "/login",
            "/login",
            &[("login", "Alice Example"), ("password", GOOD_PASSWORD)],
        )
        .await;
    assert_eq!(login.status, 303, "{}", login.body);

    // Sessions survive a restart of idm-web.
    env.restart_web().await;
    let account = browser.get("/account").await;
    assert_eq!(account.status, 200, "still logged in after a restart");

    // Logout ends it.
    let page = browser.get("/account").await;
    let csrf = page.hidden("csrf_token").unwrap();
    let out = browser.post("/logout", &[("csrf_token", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(browser.get("/account").await.location(), Some("/login"));
}
on_both_databases!(full_flow);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_tampering_is_refused() {
    let env = Env::start(Backend::Sqlite).await;
    let mut c = env.client();
    assert_eq!(
        web_signup(
            &mut c,
            "Bob Example",
            "bob",
            "bob@example.org",
            GOOD_PASSWORD
        )
        .await
        .status,
        303
    );
    let link = env.activation_link_for("bob@example.org").await;
    let signup = env.core.signups.by_uid("bob").await.unwrap().unwrap();

    // Expired.
    let expired = env
        .core
        .tokens
        .activation_token(&signup, idm_web::db::now() - 10);
    let page = c.get(&format!("/activate/{expired}")).await;
    assert_eq!(page.status, 410, "{}", page.body);
    let csrf = c.get("/login").await.hidden("csrf_token").unwrap();
    assert_eq!(
        c.post(&format!("/activate/{expired}"), &[("csrf_token", &csrf)])
            .await
            .status,
        410
    );

    // Tampered: another expiry, another id, a changed MAC.
    let token = link.rsplit('/').next().unwrap().to_owned();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let later = (parts[1].parse::<i64>().unwrap() + 86_400).to_string();
    let forged_expiry = format!("{}.{}.{}", parts[0], later, parts[2]);
    assert_eq!(
        c.get(&format!("/activate/{forged_expiry}")).await.status,
        400
    );
    let forged_id = format!("{}.{}.{}", signup.id + 1, parts[1], parts[2]);
    assert_eq!(c.get(&format!("/activate/{forged_id}")).await.status, 400);
    let last = parts[2].pop().unwrap();
    parts[2].push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        c.get(&format!("/activate/{}", parts.join(".")))
            .await
            .status,
        400
    );
    assert_eq!(c.get("/activate/nonsense").await.status, 400);

    // Regenerating invalidates the old link.
    env.core.signups.rotate_nonce(signup.id).await.unwrap();
    assert_eq!(c.get(&link).await.status, 400);
    let fresh = env
        .core
        .activation_link(&env.core.signups.get(signup.id).await.unwrap().unwrap());
    assert_eq!(c.get(&fresh).await.status, 200);
    assert_eq!(
        env.core.signups.by_uid("bob").await.unwrap().unwrap().state,
        "pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_less_posts_and_unknown_hosts_are_refused() {
    let env = Env::start(Backend::Sqlite).await;
    let mut c = env.client();
    // No cookie at all.
    let p = c
        .post("/signup", &[("username", "Carol"), ("shellname", "carol")])
        .await;
    assert_eq!(p.status, 403);
    // A cookie, but no or a wrong token.
    let _ = c.get("/login").await;
    assert!(c.cookies.contains_key("idm_csrf"));
    assert_eq!(
        c.post("/login", &[("login", "x"), ("password", "y")])
            .await
            .status,
        403
    );
    assert_eq!(
        c.post(
            "/login",
            &[("login", "x"), ("password", "y"), ("csrf_token", "AAAA")]
        )
        .await
        .status,
        403
    );
    // A token from another browser's cookie.
    let mut other = env.client();
    let token = other.get("/login").await.hidden("csrf_token").unwrap();
    assert_eq!(
        c.post(
            "/login",
            &[("login", "x"), ("password", "y"), ("csrf_token", &token)]
        )
        .await
        .status,
        403
    );
    assert!(env.core.signups.by_uid("carol").await.unwrap().is_none());

    // Host names not configured are refused.
    let mut evil = env.client();
    evil.host = Some("evil.example".into());
    assert_eq!(evil.get("/signup").await.status, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_host_name_and_secure_cookies() {
    let mut env = Env::start_with(EnvOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    env.config.http.allowed_hosts = vec![
        format!("127.0.0.1:{}", env.addr.port()),
        "standby.example".into(),
    ];
    env.config.http.cookie_secure = true;
    env.restart_web().await;
    let mut c = env.client();
    c.host = Some("standby.example".into());
    let page = c.get("/signup").await;
    assert_eq!(page.status, 200);
    let cookie = page
        .headers
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let mut other = env.client();
    other.host = Some("other.example".into());
    assert_eq!(other.get("/signup").await.status, 421);
}

async fn confirmed_signups(env: &Env, n: usize) -> Vec<(i64, String)> {
    let hash =
        idm_web::passwords::hash_for_directory(GOOD_PASSWORD, env.config.ldap.password_scheme)
            .unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let uid = format!("user{i:03}");
        let s = env
            .core
            .signups
            .insert(&idm_web::store::NewSignup {
                username: format!("User {i:03}"),
                uid: uid.clone(),
                email: format!("{uid}@example.org"),
                password_hash: hash.clone(),
            })
            .await
            .unwrap();
        out.push((s.id, env.core.activation_link(&s)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_simultaneous_activations_get_distinct_uid_numbers() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    env.add_ldap_user("preexisting", "Pre Existing", 5003);
    let signups = confirmed_signups(&env, 50).await;
    let tasks: Vec<_> = signups
        .iter()
        .map(|(_, link)| {
            let core = std::sync::Arc::clone(&env.core);
            let token = link.rsplit('/').next().unwrap().to_owned();
            tokio::spawn(async move { core.confirm_activation(&token).await.unwrap().unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut numbers = HashSet::new();
    for i in 0..50 {
        let s = env.wait_created(&format!("user{i:03}")).await;
        let entry = env.ldap_entry(&s.uid).await.unwrap();
        let n: u32 = attr(&entry, "uidNumber")[0].parse().unwrap();
        assert!(numbers.insert(n), "uidNumber {n} handed out twice");
        assert_ne!(n, 5003, "a number already in use was handed out");
    }
    assert_eq!(numbers.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_job_twice_gives_one_entry_and_one_admin_mail() {
    let env = Env::start(Backend::Sqlite).await;
    let signups = confirmed_signups(&env, 1).await;
    let id = signups[0].0;
    assert!(env.core.signups.confirm(id).await.unwrap());
    let (a, b) = tokio::join!(env.core.create_account(id), env.core.create_account(id));
    a.unwrap();
    b.unwrap();
    let third = env.core.create_account(id).await.unwrap();
    assert_eq!(
        third,
        idm_web::services::account::AccountOutcome::AlreadyExisted
    );
    assert!(env.ldap_entry("user000").await.is_some());
    env.smtp.wait_for(1, Duration::from_secs(20)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.mails_to(ADMIN_MAIL), 1);
    let s = env.core.signups.get(id).await.unwrap().unwrap();
    assert_eq!(s.state, "created");
    assert_eq!(s.password_hash, None);
}
