//! `idm-web --once-per SECS <timer command>`: with the timers enabled on
//! several hosts, one run per period happens (a Redis lease), and a failed run
//! lets the next one (on any host) try again.

use forge_test_support::{RedisServer, Slapd, SqliteDb};
use fred::prelude::*;

use crate::binary::run;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_run_once_per_period_across_hosts() {
    let slapd = Slapd::start().await.unwrap();
    let db = SqliteDb::new().unwrap();
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("idm-web.toml");
    std::fs::write(
        &p,
        format!(
            "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             [http]\npublic_base_url = \"https://idm.example.org\"\n\
             [database]\nurl = \"{db}\"\n\
             [redis]\nurl = \"{redis}\"\n\
             [ldap]\nurl = \"{ldap}\"\nbind_dn = \"{admin}\"\nbind_password = \"{pw}\"\npeople_base = \"{people}\"\n\
             [blocklist]\nsources = [{{ name = \"meta\", api_url = \"http://127.0.0.1:9/w/api.php\", pages = [\"Title blacklist\"] }}]\ntimeout_seconds = 2\ncontact = \"ops@example.org\"\n",
            db = db.url(),
            redis = redis.url(),
            ldap = slapd.url(),
            admin = slapd.admin_dn(),
            pw = slapd.admin_password(),
            people = slapd.people_dn(),
        ),
    )
    .unwrap();
    let (code, out, err) = run(&p, &["migrate"]);
    assert_eq!(code, 0, "{out}{err}");

    // The first host runs it and keeps the lease for the period…
    let (code, out, err) = run(&p, &["--once-per", "600", "expire-signups", "--days", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("unactivated signups older than 5 days"),
        "{out}"
    );
    let client = forge_core::redis::RedisSettings::for_url(&redis.url())
        .client()
        .unwrap();
    client.init().await.unwrap();
    let ttl: i64 = client.pttl("forge:lease:idm-expire-signups").await.unwrap();
    assert!(ttl > 500_000, "lease kept for the period: {ttl} ms");
    // …so the same timer on another host skips.
    let (code, out, err) = run(&p, &["--once-per", "600", "expire-signups", "--days", "5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("skipped: expire-signups ran within the last 600 s"),
        "{out}"
    );
    // Without --once-per (or with --check) it always runs.
    let (code, out, _) = run(&p, &["expire-signups", "--days", "5", "--check"]);
    assert_eq!(code, 0);
    assert!(!out.contains("skipped"), "{out}");

    // A failed run releases the lease: the next run (any host) tries again.
    let (code, out, _) = run(&p, &["--once-per", "600", "sync-username-block"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("meta: FAILED"), "{out}");
    let held: bool = client
        .exists("forge:lease:idm-sync-username-block")
        .await
        .unwrap();
    assert!(!held, "a failed run must not keep the lease");
    let (code, out, _) = run(&p, &["--once-per", "600", "sync-username-block"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("meta: FAILED") && !out.contains("skipped"),
        "{out}"
    );
}
