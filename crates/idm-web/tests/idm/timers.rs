//! The timer subcommands' work: blocklist sync and signup expiry, on both
//! databases.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use idm_web::blocklist;
use idm_web::config::BlocklistSource;
use idm_web::db::now;

use crate::common::{Backend, Env, EnvOptions};

/// A real `action=parse` response (formatversion 2) as MediaWiki renders a
/// Titleblacklist page: `<pre>` blocks inside the parser output, HTML-escaped.
const PARSE_RESPONSE: &str = r#"{"parse":{"title":"MediaWiki:Titleblacklist","pageid":4321,"text":"<div class=\"mw-content-ltr mw-parser-output\" lang=\"en\" dir=\"ltr\"><p>This is the title blacklist. Titles and users that match a regex here cannot be created.\n</p>\n<pre># Offensive names\n.*badword.*              &lt;newaccountonly&gt;\nRoot[0-9]*               &lt;casesensitive | newaccountonly&gt;\n\n# Impersonation\n.*wiki(m|p)edia.*staff.* &lt;newaccountonly|errmsg=titleblacklist-custom-imposter&gt;\nMove[ _]only.*           &lt;moveonly&gt;\n.*\\&amp;amp;.*\n</pre>\n<h2><span class=\"mw-headline\" id=\"More\">More</span></h2>\n<pre>Spam.*bot    # spam bots\n</pre>\n</div>"}}"#;

#[derive(Clone, Default)]
struct Seen {
    queries: Arc<Mutex<Vec<(String, String)>>>,
}

async fn api(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let ua = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    seen.queries.lock().unwrap().push(("user-agent".into(), ua));
    seen.queries.lock().unwrap().extend(q);
    ([("content-type", "application/json")], PARSE_RESPONSE)
}

async fn broken() -> impl IntoResponse {
    (StatusCode::INTERNAL_SERVER_ERROR, "oops")
}

async fn wiki_server() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/w/api.php", axum::routing::get(api))
        .route("/broken/api.php", axum::routing::get(broken))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

async fn blocklist_sync(backend: Backend) {
    let env = Env::start_with(EnvOptions {
        backend,
        worker: false,
        ..Default::default()
    })
    .await;
    let (addr, seen) = wiki_server().await;
    let mut settings = env.config.blocklist.clone();
    settings.sources = vec![
        BlocklistSource {
            name: "meta".into(),
            api_url: format!("http://{addr}/w/api.php"),
        },
        BlocklistSource {
            name: "wikitech".into(),
            api_url: format!("http://{addr}/broken/api.php"),
        },
    ];
    let store = &env.core.blocklist_store;
    let old = now() - 8 * 86_400;
    // An entry meta no longer lists (stale), and one of wikitech (whose fetch will fail).
    store
        .upsert("meta", &[("Gone.*".into(), String::new(), false)], old)
        .await
        .unwrap();
    store
        .upsert("wikitech", &[("Keep.*".into(), String::new(), false)], old)
        .await
        .unwrap();

    // --check: reports, stores and drops nothing.
    let report = blocklist::sync(&settings, store, true).await.unwrap();
    assert_eq!(report.sources[0], ("meta".to_owned(), Ok(6)));
    assert!(report.sources[1].1.is_err());
    assert_eq!(
        report.dropped,
        vec![("meta".to_owned(), "Gone.*".to_owned())]
    );
    assert_eq!(store.all().await.unwrap().len(), 2);

    let report = blocklist::sync(&settings, store, false).await.unwrap();
    assert_eq!(report.dropped.len(), 1);
    let all = store.all().await.unwrap();
    let patterns: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.origin.as_str(), e.pattern.as_str()))
        .collect();
    assert!(
        patterns.contains(&("wikitech", "Keep.*")),
        "a failed fetch changes nothing: {patterns:?}"
    );
    assert!(!patterns.iter().any(|p| p.1 == "Gone.*"));
    assert!(patterns.contains(&("meta", ".*badword.*")));
    assert!(
        patterns.contains(&("meta", r".*\&amp;.*")),
        "entities are decoded once: {patterns:?}"
    );
    assert!(patterns.contains(&("meta", "Spam.*bot")));
    let root = all.iter().find(|e| e.pattern == "Root[0-9]*").unwrap();
    assert_eq!(root.case_sensitive, 1);
    assert_eq!(root.options, "casesensitive|newaccountonly");
    assert!(
        all.iter()
            .filter(|e| e.origin == "meta")
            .all(|e| e.last_seen >= now() - 60)
    );

    // The request was what MediaWiki expects, with a User-Agent.
    let q = seen.queries.lock().unwrap().clone();
    for pair in [
        ("action", "parse"),
        ("page", "MediaWiki:Titleblacklist"),
        ("prop", "text"),
        ("format", "json"),
        ("formatversion", "2"),
    ] {
        assert!(
            q.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{pair:?} in {q:?}"
        );
    }
    assert!(
        q.iter()
            .any(|(k, v)| k == "user-agent" && v.starts_with("forge-idm-web/"))
    );

    // Matching as MediaWiki: against `User:<Name>`, anchored; moveonly ignored.
    env.core.reload_blocklist().await.unwrap();
    let list = env.core.blocklist.load();
    assert!(list.matching("MyBadWordName").is_some());
    // Lines without `User:` are page titles: they never block accounts.
    assert!(list.matching("Root42").is_none());
    assert!(list.matching("Move only this").is_none());
    assert!(list.matching("spambot").is_none());

    // A timeout is a failure too, and changes nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap();
    let mut slow = settings.clone();
    slow.timeout_seconds = 1;
    slow.sources[0].api_url = format!("http://{silent}/w/api.php");
    let before = store.all().await.unwrap().len();
    let report = blocklist::sync(&slow, store, false).await.unwrap();
    assert!(
        report.sources[0]
            .1
            .as_ref()
            .unwrap_err()
            .contains("timed out"),
        "{report:?}"
    );
    assert_eq!(store.all().await.unwrap().len(), before);
    drop(listener);
}
on_both_databases!(blocklist_sync);

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
