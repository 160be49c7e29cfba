//! The timer subcommands' work: signup expiry, on both databases (the
//! blocklist sync has its own file, `blocklist_sync.rs`).

use idm_web::db::now;

use crate::common::{Backend, Env, EnvOptions};

async fn signup_expiry(backend: Backend) {
    let env = Env::start_with(EnvOptions {
        backend,
        worker: false,
        ..Default::default()
    })
    .await;
    let store = &env.core.signups;
    let mk = |uid: &str| idm_web::store::NewSignup {
        username: format!("User {uid}"),
        uid: uid.into(),
        email: format!("{uid}@example.org"),
        password_hash: "{SSHA}x".into(),
    };
    let old_pending = store.insert(&mk("oldpending")).await.unwrap();
    let new_pending = store.insert(&mk("newpending")).await.unwrap();
    let old_confirmed = store.insert(&mk("oldconfirmed")).await.unwrap();
    let old_created = store.insert(&mk("oldcreated")).await.unwrap();
    let six_days_ago = now() - 6 * 86_400;
    for s in [&old_pending, &old_confirmed, &old_created] {
        store.set_created_at(s.id, six_days_ago).await.unwrap();
    }
    store
        .set_created_at(new_pending.id, now() - 4 * 86_400)
        .await
        .unwrap();
    assert!(store.confirm(old_confirmed.id).await.unwrap());
    assert!(store.confirm(old_created.id).await.unwrap());
    store.mark_created(old_created.id, 5000).await.unwrap();

    let would = env.core.expire_signups(5, true).await.unwrap();
    assert_eq!(
        would.iter().map(|s| s.uid.as_str()).collect::<Vec<_>>(),
        vec!["oldpending"]
    );
    assert!(
        store.get(old_pending.id).await.unwrap().is_some(),
        "--check deletes nothing"
    );

    let deleted = env.core.expire_signups(5, false).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert!(store.get(old_pending.id).await.unwrap().is_none());
    for s in [&new_pending, &old_confirmed, &old_created] {
        assert!(store.get(s.id).await.unwrap().is_some(), "{} kept", s.uid);
    }
    // The name is free again.
    assert_eq!(
        store
            .names_held("User oldpending", "oldpending")
            .await
            .unwrap(),
        (false, false)
    );
    // With a shorter age, the 4-day-old one goes too.
    assert_eq!(env.core.expire_signups(3, false).await.unwrap().len(), 1);
    assert!(store.get(new_pending.id).await.unwrap().is_none());
}
on_both_databases!(signup_expiry);
