//! Part 2: account managers block and unblock accounts, with an audit log.

use crate::common::{Env, EnvOptions, GOOD_PASSWORD, make_account};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_block_and_unblock_with_an_audit_log() {
    let mut env = Env::start_with(EnvOptions {
        admin_recipients: false,
        worker: false,
        ..Default::default()
    })
    .await;
    env.config.managers.uids = vec!["boss".into()];
    env.restart_web().await;
    make_account(&env, "boss", "Boss Example", GOOD_PASSWORD).await;
    let dn = make_account(&env, "jack", "Jack Example", GOOD_PASSWORD).await;

    // Not a manager: refused.
    let mut j = env.client();
    assert_eq!(
        j.submit(
            "/login",
            "/login",
            &[("login", "jack"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );
    assert_eq!(j.get("/manage?uid=boss").await.status, 403);
    let csrf = j.get("/account").await.hidden("csrf_token").unwrap();
    assert_eq!(
        j.post(
            "/manage/block",
            &[("csrf_token", &csrf), ("uid", "boss"), ("reason", "coup")]
        )
        .await
        .status,
        403
    );
    assert_eq!(
        j.post(
            "/manage/unblock",
            &[
                ("csrf_token", &csrf),
                ("uid", "jack"),
                ("reason", "self-help")
            ]
        )
        .await
        .status,
        403
    );
    assert_eq!(j.get("/manage").await.status, 403);

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
    let page = b.get("/manage?uid=jack").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Active"));
    let no_reason = b
        .submit(
            "/manage?uid=jack",
            "/manage/block",
            &[("uid", "jack"), ("reason", " ")],
        )
        .await;
    assert_eq!(no_reason.status, 400);
    assert!(env.can_bind(&dn, GOOD_PASSWORD).await);
    let self_block = b
        .submit(
            "/manage?uid=boss",
            "/manage/block",
            &[("uid", "boss"), ("reason", "oops")],
        )
        .await;
    assert_eq!(self_block.status, 400);

    let blocked = b
        .submit(
            "/manage?uid=jack",
            "/manage/block",
            &[("uid", "jack"), ("reason", "spam")],
        )
        .await;
    assert_eq!(blocked.status, 303, "{}", blocked.body);
    assert!(
        !env.can_bind(&dn, GOOD_PASSWORD).await,
        "a blocked account cannot bind"
    );
    let mut again = env.client();
    assert_eq!(
        again
            .submit(
                "/login",
                "/login",
                &[("login", "jack"), ("password", GOOD_PASSWORD)]
            )
            .await
            .status,
        401
    );
    assert!(b.get("/manage?uid=jack").await.body.contains("Blocked"));

    let unblocked = b
        .submit(
            "/manage?uid=jack",
            "/manage/unblock",
            &[("uid", "jack"), ("reason", "appeal granted")],
        )
        .await;
    assert_eq!(unblocked.status, 303);
    assert!(env.can_bind(&dn, GOOD_PASSWORD).await, "unblocked: binds");
    assert_eq!(
        again
            .submit(
                "/login",
                "/login",
                &[("login", "jack"), ("password", GOOD_PASSWORD)]
            )
            .await
            .status,
        303,
        "unblocked: the form login works again"
    );
    assert!(b.get("/manage?uid=jack").await.body.contains("Active"));

    let log = env.core.audit.for_target("jack", 10).await.unwrap();
    let actions: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("boss", "unblock", "appeal granted"),
            ("boss", "block", "spam")
        ]
    );
    assert!(
        b.get("/manage?uid=jack")
            .await
            .body
            .contains("appeal granted")
    );
}
