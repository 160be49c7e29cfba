//! One name, one account — by the directory's own rules; reserved names.
//!
//! slapd's matching rules fold fullwidth `Ｖictim` to `victim`, so a
//! display name our own folding calls free can shadow another account for
//! every lookup by name. These tests run against real slapd.

use idm_web::services::signup::{SignupForm, SignupOutcome};

use crate::common::{
    Env, EnvOptions, GOOD_PASSWORD, make_account, signup_errors, signup_form as form,
};

/// `Ｖictim` with a FULLWIDTH LATIN CAPITAL LETTER V.
const FULLWIDTH_VICTIM: &str = "\u{ff36}ictim";

/// The errors of `field`; panics if the form was accepted.
async fn refused(env: &Env, f: &SignupForm, field: &str) -> Vec<String> {
    let v = signup_errors(env, f, field).await;
    assert!(!v.is_empty(), "{field} not refused for {:?}", f.username);
    v
}

async fn env() -> Env {
    let mut env = Env::start_with(EnvOptions {
        antibot: false,
        worker: false,
        admin_recipients: false,
        ..Default::default()
    })
    .await;
    env.config.rate_limit.login_per_ip_per_minute = 10_000;
    env.config.rate_limit.check_per_ip_per_minute = 10_000;
    env.config.managers.uids = vec!["boss".into()];
    env.config.signup.reserved_names = vec!["wikiadmin".into()];
    env.restart_web().await;
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookalike_names_are_refused_by_the_directorys_matching_and_by_skeleton() {
    let env = env().await;
    make_account(&env, "victim", "Victim", GOOD_PASSWORD).await;

    // The directory's equality match folds fullwidth letters: taken.
    let e = refused(&env, &form(FULLWIDTH_VICTIM, "attacker"), "username").await;
    assert!(e[0].contains("taken"), "{e:?}");
    let check = env
        .core
        .check_names(FULLWIDTH_VICTIM, Some("attacker"))
        .await
        .unwrap();
    assert!(!check.username_errors.is_empty(), "{check:?}");
    // An account made outside idm-web (no signup row): only the directory's
    // own matching can tell, and it does.
    env.add_ldap_user("ldaponly", "Ldap Only", 6100);
    let e = refused(&env, &form("\u{ff2c}dap Only", "fresh"), "username").await;
    assert!(e[0].contains("taken"), "{e:?}");
    let e = refused(&env, &form("Someone", "ldaponly"), "shellname").await;
    assert!(e[0].contains("taken"), "{e:?}");
    // Over HTTP too.
    let page = env
        .client()
        .get("/api/v1/check?username=%EF%BC%B6ictim&shellname=attacker")
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("taken"), "{}", page.body);

    // Mixed scripts (Cyrillic і among Latin letters) and invisible characters.
    let e = refused(&env, &form("V\u{0456}ctim", "attacker"), "username").await;
    assert!(e.iter().any(|m| m.contains("one script")), "{e:?}");
    for invisible in ["Vic\u{200b}tim", "Vic\u{00ad}tim", "Victim\u{202e}x"] {
        let e = refused(&env, &form(invisible, "attacker"), "username").await;
        assert!(
            e.iter().any(|m| m.contains("Invisible")),
            "{invisible:?}: {e:?}"
        );
    }

    // A pending signup's names hold their skeletons: look-alikes (capital I
    // for small l, digit 1 for l) are refused before any LDAP entry exists.
    assert!(matches!(
        env.core
            .submit_signup(&form("Paypal Person", "paypal"))
            .await
            .unwrap(),
        SignupOutcome::Stored { .. }
    ));
    let e = refused(&env, &form("PaypaI Person", "other"), "username").await;
    assert!(e[0].contains("looks too much like"), "{e:?}");
    let e = refused(&env, &form("PAYPAL PERSON", "other2"), "username").await;
    assert!(e[0].contains("taken"), "{e:?}");
    let e = refused(&env, &form("Fresh Name", "paypa1"), "shellname").await;
    assert!(e[0].contains("looks too much like"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookalike_twin_in_the_directory_hides_no_account() {
    let env = env().await;
    make_account(&env, "victim", "Victim Person", GOOD_PASSWORD).await;
    make_account(&env, "boss", "The Boss", GOOD_PASSWORD).await;
    // A twin made before the fix (or by another tool): its cn folds to the
    // victim's shell name.
    env.add_ldap_user("twin", FULLWIDTH_VICTIM, 7000);

    // Login by shell name still finds the victim.
    let mut c = env.client();
    let page = c
        .submit(
            "/login",
            "/login",
            &[("login", "victim"), ("password", GOOD_PASSWORD)],
        )
        .await;
    assert_eq!(page.location(), Some("/account"), "{}", page.body);
    // A reset by shell name, and managers, find it.
    let found = env.core.directory.find_account("victim").await.unwrap();
    assert_eq!(found.map(|a| a.uid).as_deref(), Some("victim"));
    let managed = env.core.managed_account("victim").await.unwrap();
    assert_eq!(managed.map(|a| a.uid).as_deref(), Some("victim"));
    env.core
        .set_blocked("boss", "victim", true, "testing")
        .await
        .unwrap()
        .unwrap();
    env.core
        .set_blocked("boss", "victim", false, "testing")
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limit_is_per_account_whatever_the_spelling() {
    let env = env().await;
    make_account(&env, "caseperson", "Case Person", GOOD_PASSWORD).await;
    let limit = env.config.rate_limit.login_per_account_per_minute;
    let variants = [
        "Case Person",
        "case person",
        "CASE PERSON",
        "case  person",
        " Case Person ",
        "cASE pERSON",
        "caseperson",
        "CasePerson",
    ];
    let mut c = env.client();
    let mut limited = None;
    for i in 0..(limit as usize + 4) {
        let login = variants[i % variants.len()];
        let page = c
            .submit(
                "/login",
                "/login",
                &[("login", login), ("password", "wrong password!")],
            )
            .await;
        if page.status == 429 {
            limited = Some(i);
            break;
        }
        assert_eq!(page.status, 401, "{login:?}: {}", page.body);
    }
    assert_eq!(
        limited,
        Some(limit as usize),
        "the {}th wrong password in a minute, however spelled, is refused",
        limit + 1
    );
    // The account's budget is spent for every spelling, even the right password.
    let page = c
        .submit(
            "/login",
            "/login",
            &[("login", "CASE PERSON"), ("password", GOOD_PASSWORD)],
        )
        .await;
    assert_eq!(page.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_and_blocklisted_names_are_refused() {
    let env = env().await;
    for uid in ["root", "admin", "daemon", "sshd", "www-data", "wikiadmin"] {
        let e = refused(&env, &form("Some Person", uid), "shellname").await;
        assert!(e[0].contains("reserved"), "{uid}: {e:?}");
    }
    for name in ["Root", "ADMIN", "\u{ff32}oot", "Www-data", "Wikiadmin"] {
        let e = refused(&env, &form(name, "someone"), "username").await;
        assert!(
            e.iter()
                .any(|m| m.contains("reserved") || m.contains("taken")),
            "{name:?}: {e:?}"
        );
    }
    // The blocklist applies to the compatibility form of a name as well.
    env.core
        .blocklist_store
        .upsert(
            "test",
            &[("User:Evil.*".into(), "casesensitive".into(), true)],
            idm_web::db::now(),
        )
        .await
        .unwrap();
    env.core.reload_blocklist().await.unwrap();
    let e = refused(&env, &form("\u{ff25}vil Person", "someone"), "username").await;
    assert_eq!(e, vec!["This name is not allowed."]);
    // Ordinary names still pass.
    assert!(matches!(
        env.core
            .submit_signup(&form("Rooted Person", "rooted"))
            .await
            .unwrap(),
        SignupOutcome::Stored { .. }
    ));
}
