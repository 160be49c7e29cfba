//! A block holds: a manager's lock (`pwdAccountLockedTime`) is never lifted by
//! anything but a manager's audited unblock — not a reset link mailed before
//! the block, not a new reset request, not the service account's own writes —
//! and a block ends the account's sessions and API tokens at once.

use std::time::Duration;

use idm_web::directory::DirectoryError;

use crate::api::call;
use crate::common::{Backend, Env, EnvOptions, GOOD_PASSWORD, link_in_mail, make_account};

const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl mallory@laptop";
const NEW_PASSWORD: &str = "Brand-new-passphrase-77";

fn mails_with(env: &Env, to: &str, marker: &str) -> usize {
    env.smtp
        .messages()
        .iter()
        .filter(|m| m.recipients.iter().any(|r| r == to))
        .filter(|m| m.text_body().unwrap_or_default().contains(marker))
        .count()
}

async fn locked(env: &Env, uid: &str) -> bool {
    // An operational attribute: not in `*`, asked for by name.
    let mut ldap = env.slapd.admin_conn().await.unwrap();
    let (entries, _) = ldap
        .search(
            &format!("uid={uid},{}", env.slapd.people_dn()),
            ldap3::Scope::Base,
            "(objectClass=*)",
            vec!["pwdAccountLockedTime"],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    let _ = ldap.unbind().await;
    entries
        .into_iter()
        .map(ldap3::SearchEntry::construct)
        .any(|e| e.attrs.contains_key("pwdAccountLockedTime"))
}

async fn login(env: &Env, uid: &str, password: &str) -> (crate::common::WebClient, u16) {
    let mut c = env.client();
    let status = c
        .submit(
            "/login",
            "/login",
            &[("login", uid), ("password", password)],
        )
        .await
        .status;
    (c, status)
}

async fn a_block_holds(backend: Backend) {
    let mut env = Env::start_with(EnvOptions {
        backend,
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    assert!(
        env.slapd.has_ppolicy(),
        "these tests need slapd's ppolicy module"
    );
    env.config.managers.uids = vec!["boss".into()];
    env.restart_web().await;
    make_account(&env, "boss", "Boss Example", GOOD_PASSWORD).await;
    make_account(&env, "bystander", "Bystander Example", GOOD_PASSWORD).await;
    let dn = make_account(&env, "blockme", "Blockme Example", GOOD_PASSWORD).await;

    // Before the block: a session, an API token, and a reset link in the mailbox.
    let (mut victim, status) = login(&env, "blockme", GOOD_PASSWORD).await;
    assert_eq!(status, 303);
    let token = env
        .core
        .api_tokens
        .create("blockme", "laptop")
        .await
        .unwrap();
    assert_eq!(
        call(&env, "GET", "/api/v1/me", Some(&token), "").await.0,
        200
    );
    let mut anon = env.client();
    let _ = anon
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "blockme")],
        )
        .await;
    let early_link = link_in_mail(&env, "blockme@example.org", "/password/reset/").await;

    // The manager blocks the account.
    let (mut boss, status) = login(&env, "boss", GOOD_PASSWORD).await;
    assert_eq!(status, 303);
    let blocked = boss
        .submit(
            "/manage?uid=blockme",
            "/manage/block",
            &[("uid", "blockme"), ("reason", "abuse")],
        )
        .await;
    assert_eq!(blocked.status, 303, "{}", blocked.body);
    assert!(locked(&env, "blockme").await);

    // The old session ended at once: no page, no SSH key, no token, no e-mail change.
    assert_eq!(victim.get("/account").await.location(), Some("/login"));
    let csrf = victim.get("/login").await.hidden("csrf_token").unwrap();
    let add = victim
        .post("/account/keys", &[("csrf_token", &csrf), ("key", ED25519)])
        .await;
    assert_eq!(add.location(), Some("/login"), "{}", add.body);
    let mint = victim
        .post("/account/tokens", &[("csrf_token", &csrf), ("name", "x")])
        .await;
    assert_eq!(mint.location(), Some("/login"), "{}", mint.body);
    assert!(env.core.api_tokens.list("blockme").await.unwrap().len() == 1);

    // API tokens refuse.
    let (status, body) = call(&env, "GET", "/api/v1/me", Some(&token), "").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        &env,
        "POST",
        "/api/v1/me/ssh-keys",
        Some(&token),
        &serde_json::json!({ "key": ED25519 }).to_string(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        !env.ldap_entry("blockme")
            .await
            .unwrap()
            .attrs
            .contains_key("sshPublicKey"),
        "no key reached the blocked account"
    );

    // The link mailed before the block is dead: form and submission.
    let mut c = env.client();
    assert_eq!(c.get(&early_link).await.status, 400);
    let csrf = c.get("/login").await.hidden("csrf_token").unwrap();
    let used = c
        .post(
            &early_link,
            &[
                ("csrf_token", &csrf),
                ("new_password", NEW_PASSWORD),
                ("new_password2", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(used.status, 400, "{}", used.body);
    assert!(locked(&env, "blockme").await, "the lock holds");
    assert!(!env.can_bind(&dn, NEW_PASSWORD).await);

    // A new reset request: the same answer as for an unknown name, and no mail.
    let known = c
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "blockme")],
        )
        .await;
    let unknown = c
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "no-such-one")],
        )
        .await;
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    // A request for an unlocked account queued after it: once its mail is
    // here, the worker has had the blocked account's job too.
    let _ = c
        .submit(
            "/password/forgot",
            "/password/forgot",
            &[("login", "bystander")],
        )
        .await;
    let _ = link_in_mail(&env, "bystander@example.org", "/password/reset/").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        mails_with(&env, "blockme@example.org", "/password/reset/"),
        1,
        "only the mail from before the block"
    );
    assert!(
        !env.core.send_password_reset("blockme").await.unwrap(),
        "the job itself sends nothing for a locked account"
    );

    // No password change by the user either.
    let owner = idm_web::services::password::PasswordOwner {
        session: None,
        dn: &dn,
        uid: "blockme",
        cn: "Blockme Example",
        mail: "blockme@example.org",
    };
    let changed = env
        .core
        .change_password(&owner, GOOD_PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
        .await
        .unwrap();
    assert!(changed.is_err(), "a locked account changes no password");
    assert!(locked(&env, "blockme").await);

    // The write itself is conditional: a reset whose checks ran before the
    // block (the race) still can't clear the lock.
    let hash =
        idm_web::passwords::hash_for_directory(NEW_PASSWORD, env.config.ldap.password_scheme)
            .unwrap();
    let refused_as_locked =
        |r: Result<(), DirectoryError>| matches!(r, Err(DirectoryError::Locked));
    assert!(refused_as_locked(
        env.core.directory.set_password(&dn, &hash).await
    ));
    assert!(refused_as_locked(
        env.core.directory.set_mail(&dn, "evil@example.net").await
    ));
    assert!(
        locked(&env, "blockme").await,
        "no service write clears the lock"
    );
    assert!(!env.can_bind(&dn, NEW_PASSWORD).await);

    // Nothing of this is in the audit log but the block; the manager's unblock is.
    let log = env.core.audit.for_target("blockme", 10).await.unwrap();
    assert_eq!(log.len(), 1);
    let unblocked = boss
        .submit(
            "/manage?uid=blockme",
            "/manage/unblock",
            &[("uid", "blockme"), ("reason", "appeal granted")],
        )
        .await;
    assert_eq!(unblocked.status, 303);
    assert!(!locked(&env, "blockme").await);
    assert_eq!(login(&env, "blockme", GOOD_PASSWORD).await.1, 303);
    assert_eq!(
        call(&env, "GET", "/api/v1/me", Some(&token), "").await.0,
        200
    );
    assert_eq!(
        env.core
            .audit
            .for_target("blockme", 10)
            .await
            .unwrap()
            .len(),
        2
    );
}
on_both_databases!(a_block_holds);
