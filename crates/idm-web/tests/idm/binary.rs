//! The `idm-web` binary: configuration errors with file:line, the timer
//! subcommands' exit codes and output, support's activation-link command.

use std::process::Command;

use forge_test_support::{Slapd, SqliteDb};

const BIN: &str = env!("CARGO_BIN_EXE_idm-web");

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("idm-web.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the idm-web binary with `--config config` and `args`: exit code,
/// stdout, stderr.
pub(crate) fn run(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[ldap]\ngid_number = \"many\"\n",
    );
    let (code, _, err) = run(&p, &["--check-config"]);
    assert_ne!(code, 0);
    assert!(err.contains("idm-web.toml:5:"), "{err}");

    let p = write_config(dir.path(), "[tokens]\nsecret = \"short\"\n");
    let (code, _, err) = run(&p, &["--check-config"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("idm-web.toml:2:") && err.contains("at least 32"),
        "{err}"
    );

    let p = write_config(
        dir.path(),
        "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n[http]\npublic_base_url = \"not a url\"\n",
    );
    let (code, _, err) = run(&p, &["--check-config"]);
    assert_ne!(code, 0);
    assert!(err.contains("idm-web.toml:4:"), "{err}");

    let p = write_config(
        dir.path(),
        "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
    let (code, out, _) = run(&p, &["--check-config"]);
    assert_eq!(code, 0);
    assert!(out.contains("configuration OK"));
}

/// The retired `blocklist.page` (one page for every wiki, which read meta's
/// local list instead of the global one) fails at start-up with its
/// file:line and what to write instead; so do a source without pages and a
/// contact that is neither a URL nor an address.
#[test]
fn retired_blocklist_page_is_refused_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let key = "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
    let p = write_config(
        dir.path(),
        &format!("{key}\n[blocklist]\nstale_days = 7\npage = \"MediaWiki:Titleblacklist\"\n"),
    );
    let (code, _, err) = run(&p, &["--check-config"]);
    assert_ne!(code, 0);
    assert!(err.contains("idm-web.toml:6:"), "{err}");
    assert!(
        err.contains("pages = [\"Title blacklist\"]") && err.contains("whitelist_pages"),
        "{err}"
    );
    let (code, _, err) = run(&p, &["serve"]);
    assert_ne!(code, 0, "the web app refuses to start too");
    assert!(err.contains("idm-web.toml:6:"), "{err}");

    for (blocklist, says) in [
        (
            "sources = [{ name = \"meta\", api_url = \"https://meta.wikimedia.org/w/api.php\" }]",
            "names no pages",
        ),
        ("contact = \"call me maybe\"", "URL"),
    ] {
        let p = write_config(dir.path(), &format!("{key}[blocklist]\n{blocklist}\n"));
        let (code, _, err) = run(&p, &["--check-config"]);
        assert_ne!(code, 0, "{blocklist}");
        assert!(
            err.contains("idm-web.toml:4:") && err.contains(says),
            "{err}"
        );
    }
    let p = write_config(
        dir.path(),
        &format!("{key}[blocklist]\ncontact = \"https://tools.example.org/contact\"\n"),
    );
    let (code, out, err) = run(&p, &["--check-config"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_subcommands_and_activation_link() {
    let slapd = Slapd::start().await.unwrap();
    let db = SqliteDb::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        &format!(
            "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             [http]\npublic_base_url = \"https://idm.example.org\"\n\
             [database]\nurl = \"{db}\"\n\
             [ldap]\nurl = \"{ldap}\"\nbind_dn = \"{admin}\"\nbind_password = \"{pw}\"\npeople_base = \"{people}\"\n\
             [blocklist]\nsources = [{{ name = \"meta\", api_url = \"http://127.0.0.1:9/w/api.php\", pages = [\"Title blacklist\"] }}]\ntimeout_seconds = 2\ncontact = \"ops@example.org\"\n",
            db = db.url(),
            ldap = slapd.url(),
            admin = slapd.admin_dn(),
            pw = slapd.admin_password(),
            people = slapd.people_dn(),
        ),
    );
    let (code, out, err) = run(&p, &["migrate"]);
    assert_eq!(code, 0, "{out}{err}");

    // A failed fetch: exit 1, nothing changed, the reason printed.
    let (code, out, _) = run(&p, &["sync-username-block", "--check"]);
    assert_eq!(code, 1);
    assert!(out.contains("meta: FAILED"), "{out}");

    // Expiry of a backdated pending signup.
    let pool = idm_web::db::Db::connect(&db.url(), 2, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let store = idm_web::store::SignupStore::new(pool);
    let s = store
        .insert(&idm_web::store::NewSignup {
            username: "Old Signup".into(),
            uid: "oldsignup".into(),
            email: "old@example.org".into(),
            password_hash: "{SSHA}x".into(),
        })
        .await
        .unwrap();
    let (code, out, _) = run(&p, &["activation-link", "oldsignup"]);
    assert_eq!(code, 0);
    let link = out.trim().to_owned();
    assert!(
        link.starts_with("https://idm.example.org/activate/"),
        "{out}"
    );
    let (code, out, _) = run(&p, &["activation-link", "oldsignup", "--regenerate"]);
    assert_eq!(code, 0);
    assert_ne!(out.trim(), link);
    let (code, _, err) = run(&p, &["activation-link", "nosuchuser"]);
    assert_ne!(code, 0);
    assert!(err.contains("no signup"), "{err}");

    store
        .set_created_at(s.id, idm_web::db::now() - 6 * 86_400)
        .await
        .unwrap();
    let (code, out, _) = run(&p, &["expire-signups", "--days", "5", "--check"]);
    assert_eq!(code, 0);
    assert!(out.contains("would delete signup oldsignup"), "{out}");
    assert!(store.get(s.id).await.unwrap().is_some());
    let (code, out, _) = run(&p, &["expire-signups", "--days", "5"]);
    assert_eq!(code, 0, "{out}");
    assert!(store.get(s.id).await.unwrap().is_none());
}

/// `sync-username-block --check` prints exactly the lines the run then
/// prints (and does), against a local wiki serving meta's global list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_check_prints_what_the_run_does() {
    let slapd = Slapd::start().await.unwrap();
    let db = SqliteDb::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (wiki, _) = crate::blocklist_sync::serve_wiki(&[(
        "Title blacklist",
        crate::blocklist_sync::META_GLOBAL,
    )])
    .await;
    let p = write_config(
        dir.path(),
        &format!(
            "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             [database]\nurl = \"{db}\"\n\
             [ldap]\nurl = \"{ldap}\"\nbind_dn = \"{admin}\"\nbind_password = \"{pw}\"\npeople_base = \"{people}\"\n\
             [blocklist]\nsources = [{{ name = \"meta\", api_url = \"http://{wiki}/w/api.php\", pages = [\"Title blacklist\"] }}]\n\
             contact = \"ops@example.org\"\n",
            db = db.url(),
            ldap = slapd.url(),
            admin = slapd.admin_dn(),
            pw = slapd.admin_password(),
            people = slapd.people_dn(),
        ),
    );
    let (code, out, err) = run(&p, &["migrate"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, checked, err) = run(&p, &["sync-username-block", "--check"]);
    assert_eq!(code, 0, "{checked}{err}");
    assert!(checked.starts_with("check: "), "{checked}");
    assert!(
        checked.contains("add meta blacklist: User:.*(?<!Good)bot <newaccountonly>\n"),
        "{checked}"
    );
    let (code, ran, err) = run(&p, &["sync-username-block"]);
    assert_eq!(code, 0, "{ran}{err}");
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("check: "))
            .map(|l| l.replace(" (check: nothing changed)", ""))
            .collect()
    };
    assert_eq!(body(&checked), body(&ran));
    assert!(ran.contains("8 to add, 0 to drop, 0 kept"), "{ran}");
    // What it added is stored: a second check keeps every line, adds none.
    let (code, again, _) = run(&p, &["sync-username-block", "--check"]);
    assert_eq!(code, 0);
    assert!(again.contains("0 to add, 0 to drop, 8 kept"), "{again}");
}
