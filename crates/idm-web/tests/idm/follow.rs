//! Sessions and links follow the account: a password change ends the
//! account's other sessions; an e-mail-change link works once and dies when
//! the address changes again; e-mail-change requests are rate-limited like
//! the other pages that send mail.

use std::time::Duration;

use crate::common::{
    Backend, Env, EnvOptions, GOOD_PASSWORD, WebClient, link_in_mail, make_account,
};

const NEW_PASSWORD: &str = "Another-fine-passphrase-31";

async fn login(env: &Env, uid: &str, password: &str) -> WebClient {
    let mut c = env.client();
    let page = c
        .submit(
            "/login",
            "/login",
            &[("login", uid), ("password", password)],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    c
}

async fn mail_of(env: &Env, uid: &str) -> String {
    env.ldap_entry(uid).await.unwrap().attrs["mail"][0].clone()
}

/// Asks for `uid`'s address to become `to` and returns the mailed link.
async fn email_link(env: &Env, c: &mut WebClient, to: &str, before: usize) -> String {
    let asked = c
        .submit("/account/email", "/account/email", &[("email", to)])
        .await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    for _ in 0..200 {
        if env.mails_to(to) > before {
            return link_in_mail(env, to, "/account/email/confirm/").await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no e-mail-change mail to {to}");
}

async fn sessions_and_links_follow_the_account(backend: Backend) {
    let env = Env::start_with(EnvOptions {
        backend,
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    make_account(&env, "olga", "Olga Example", GOOD_PASSWORD).await;

    // A password change ends the account's other sessions, not the one making it.
    let mut here = login(&env, "olga", GOOD_PASSWORD).await;
    let mut there = login(&env, "olga", GOOD_PASSWORD).await;
    assert_eq!(there.get("/account").await.status, 200);
    let changed = here
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
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(there.get("/account").await.location(), Some("/login"));
    assert_eq!(here.get("/account").await.status, 200, "this session stays");

    // An e-mail-change link works once, and dies when the address changes again.
    let a = "olga@example.org";
    let b = "olga.b@example.net";
    let first = email_link(&env, &mut here, b, 0).await;
    let used = here.submit(&first, &first, &[]).await;
    assert_eq!(used.status, 200, "{}", used.body);
    assert_eq!(mail_of(&env, "olga").await, b);
    assert_eq!(here.get(&first).await.status, 400, "once only");
    let back = email_link(&env, &mut here, a, env.mails_to(a)).await;
    assert_eq!(here.submit(&back, &back, &[]).await.status, 200);
    assert_eq!(mail_of(&env, "olga").await, a);
    // The address is A again, as when the first link was made: still dead.
    assert_eq!(here.get(&first).await.status, 400, "A→B link after B→A");
    let replay = here.submit("/account", &first, &[]).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert_eq!(mail_of(&env, "olga").await, a);
    // A link made before another change went through dies too.
    let c_addr = "olga.c@example.net";
    let d_addr = "olga.d@example.net";
    let to_c = email_link(&env, &mut here, c_addr, 0).await;
    let to_d = email_link(&env, &mut here, d_addr, 0).await;
    assert_eq!(here.submit(&to_d, &to_d, &[]).await.status, 200);
    let back = email_link(&env, &mut here, a, env.mails_to(a)).await;
    assert_eq!(here.submit(&back, &back, &[]).await.status, 200);
    assert_eq!(here.get(&to_c).await.status, 400);
    assert_eq!(mail_of(&env, "olga").await, a);
}
on_both_databases!(sessions_and_links_follow_the_account);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_change_requests_are_rate_limited() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    make_account(&env, "pete", "Pete Example", GOOD_PASSWORD).await;
    let mut c = login(&env, "pete", GOOD_PASSWORD).await;
    let victim = "someone.else@example.net";
    let mut limited = 0;
    for _ in 0..40 {
        let page = c
            .submit("/account/email", "/account/email", &[("email", victim)])
            .await;
        match page.status {
            200 => {}
            429 => limited += 1,
            s => panic!("status {s}: {}", page.body),
        }
    }
    let allowed = env.config.rate_limit.email_change_per_account_per_hour as usize;
    assert_eq!(limited, 40 - allowed, "all but {allowed} refused");
    for _ in 0..200 {
        if env.mails_to(victim) >= allowed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        env.mails_to(victim),
        allowed,
        "a third party gets {allowed} mails, not 40"
    );
}
