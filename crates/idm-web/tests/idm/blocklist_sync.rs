//! The username blocklist against local wikis serving real-format pages: each
//! source's own pages read as raw wikitext, the whitelist honoured,
//! `antispoof` entries, `--check` naming exactly what the run then does, a
//! User-Agent with a contact, connection failures that say what failed, and
//! a runaway entry that gives up instead of hanging the name check.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use idm_web::blocklist::{self, BlocklistError, FetchFailure, KeepReason, SourceOutcome};
use idm_web::config::{BlocklistSettings, BlocklistSource};
use idm_web::db::now;
use idm_web::store::blocklist::StoredEntry;

use crate::common::{Backend, Env, EnvOptions};

/// Meta's global list (`Title blacklist`), with entries of the shapes the
/// public lists use: the `<pre>` guard lines, comments, `User:` prefixes,
/// look-arounds, back-references, `{{ns:}}`, `_` for spaces, options.
pub(crate) const META_GLOBAL: &str = r#" #<!-- leave this line exactly as it is --> <pre>
# This is the global title blacklist. Titles and users that match a regex here cannot be created.
#
## Impersonation
.*[Ww][Ii][Kk][Ii][Mm][Ee][Dd][Ii][Aa].*[Ss]taff.*   <newaccountonly|errmsg=titleblacklist-custom-imposter>
.*WIKIMEDIA.*FOUNDATION.*                             <newaccountonly|antispoof|casesensitive>
## Bots need approval
User:.*(?<!Good)bot                                   <newaccountonly>
## Long runs of one letter
User:.*(.)\1\1\1.*                                    <newaccountonly|casesensitive>
{{ns:user}}:Nsword.*
.*Under_score.*                                       <newaccountonly>
Move[ _]only.*                                        <moveonly>
.*badword.*                                           <newaccountonly>
 #</pre> <!-- leave this line exactly as it is -->
"#;

/// Meta's own `MediaWiki:Titleblacklist`: applies on meta only, never read.
const META_LOCAL: &str = "User:Metaonly.* <newaccountonly>\n";

/// Wikitech's own list and whitelist.
const WIKITECH_LOCAL: &str = "# Wikitech\nUser:.*[Tt]oolforge.* <newaccountonly>\n";
const WIKITECH_WHITELIST: &str = " #<pre>\n# Let these through\nUser:Toolforge Bot\nUser:Wikimedia Staff Helper\nUser:Movable.* <moveonly>\n #</pre>\n";

/// A local wiki's `api.php`: answers `action=query&prop=revisions&rvprop=
/// content&rvslots=main&titles=…&format=json&formatversion=2` as MediaWiki
/// does (normalised titles, `missing` pages, content in the main slot),
/// from pages held in memory; anything else gets the API's error shape.
/// One request a wiki saw: its User-Agent and its query.
type SeenRequest = (String, Vec<(String, String)>);

#[derive(Clone, Default)]
pub(crate) struct Wiki {
    pages: Arc<Mutex<HashMap<String, String>>>,
    /// Each request's User-Agent and query.
    requests: Arc<Mutex<Vec<SeenRequest>>>,
}

fn title_of(t: &str) -> String {
    let t = t.replace('_', " ");
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

async fn api(
    State(wiki): State<Wiki>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let ua = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    wiki.requests.lock().unwrap().push((ua, q.clone()));
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let json = if get("action") != Some("query")
        || get("prop") != Some("revisions")
        || get("rvprop") != Some("content")
        || get("format") != Some("json")
        || get("formatversion") != Some("2")
    {
        serde_json::json!({"error": {"code": "badvalue", "info": "not what this wiki serves"}})
    } else {
        let pages = wiki.pages.lock().unwrap();
        let mut normalized = Vec::new();
        let mut out = Vec::new();
        for (i, requested) in get("titles").unwrap_or("").split('|').enumerate() {
            let title = title_of(requested);
            if title != requested {
                normalized.push(
                    serde_json::json!({"fromencoded": false, "from": requested, "to": title}),
                );
            }
            let ns = if title.starts_with("MediaWiki:") {
                8
            } else if title.starts_with("User:") {
                2
            } else {
                0
            };
            out.push(match pages.get(&title) {
                Some(text) => serde_json::json!({"pageid": 100 + i, "ns": ns, "title": title,
                    "revisions": [{"slots": {"main": {"contentmodel": "wikitext",
                        "contentformat": "text/x-wiki", "content": text}}}]}),
                None => serde_json::json!({"ns": ns, "title": title, "missing": true}),
            });
        }
        serde_json::json!({"batchcomplete": true, "query": {"normalized": normalized, "pages": out}})
    };
    (
        [("content-type", "application/json; charset=utf-8")],
        json.to_string(),
    )
}

async fn broken() -> impl IntoResponse {
    (StatusCode::INTERNAL_SERVER_ERROR, "oops")
}

pub(crate) async fn serve_wiki(pages: &[(&str, &str)]) -> (SocketAddr, Wiki) {
    let wiki = Wiki::default();
    wiki.pages.lock().unwrap().extend(
        pages
            .iter()
            .map(|(t, c)| ((*t).to_owned(), (*c).to_owned())),
    );
    let app = axum::Router::new()
        .route("/w/api.php", axum::routing::get(api))
        .route("/broken/api.php", axum::routing::get(broken))
        .with_state(wiki.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, wiki)
}

fn source(name: &str, api_url: String, pages: &[&str], whitelist: &[&str]) -> BlocklistSource {
    BlocklistSource {
        name: name.into(),
        api_url,
        pages: pages.iter().map(|p| (*p).to_owned()).collect(),
        whitelist_pages: whitelist.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn settings_with(sources: Vec<BlocklistSource>) -> BlocklistSettings {
    BlocklistSettings {
        sources,
        contact: Some("https://idm.example.org/contact".into()),
        timeout_seconds: 5,
        ..Default::default()
    }
}

/// A stored row without its last-seen time.
fn key(e: &StoredEntry) -> (String, String, String, String) {
    (
        e.origin.clone(),
        e.kind.clone(),
        e.pattern.clone(),
        e.options.clone(),
    )
}

async fn pages_whitelist_and_a_truthful_check(backend: Backend) {
    let env = Env::start_with(EnvOptions {
        backend,
        worker: false,
        ..Default::default()
    })
    .await;
    let (meta, meta_wiki) = serve_wiki(&[
        ("Title blacklist", META_GLOBAL),
        ("MediaWiki:Titleblacklist", META_LOCAL),
    ])
    .await;
    let (wikitech, _) = serve_wiki(&[
        ("MediaWiki:Titleblacklist", WIKITECH_LOCAL),
        ("MediaWiki:Titlewhitelist", WIKITECH_WHITELIST),
    ])
    .await;
    let settings = settings_with(vec![
        // As configured by default: meta's global list, wikitech's own
        // list and whitelist (the underscore form of a title works too).
        source(
            "meta",
            format!("http://{meta}/w/api.php"),
            &["Title_blacklist"],
            &[],
        ),
        source(
            "wikitech",
            format!("http://{wikitech}/w/api.php"),
            &["MediaWiki:Titleblacklist"],
            &["MediaWiki:Titlewhitelist"],
        ),
        source(
            "broken",
            format!("http://{meta}/broken/api.php"),
            &["X"],
            &[],
        ),
    ]);
    let store = &env.core.blocklist_store;
    let old = now() - 8 * 86_400;
    // Still listed but last seen long ago (the old --check called these
    // stale), gone from the page, of a failing wiki, of a retired source.
    store
        .upsert(
            "meta",
            &[
                (".*badword.*".into(), "newaccountonly".into(), false),
                ("Gone.*".into(), String::new(), false),
            ],
            old,
        )
        .await
        .unwrap();
    store
        .upsert("broken", &[("Keep.*".into(), String::new(), false)], old)
        .await
        .unwrap();
    store
        .upsert(
            "retired",
            &[("Retired.*".into(), String::new(), false)],
            old,
        )
        .await
        .unwrap();
    let before = store.all().await.unwrap();

    // The check: changes nothing, and names every line.
    let checked = blocklist::sync(&settings, store, true).await.unwrap();
    assert_eq!(
        store.all().await.unwrap(),
        before,
        "a check changes nothing"
    );
    assert!(matches!(
        checked.sources[0].1,
        SourceOutcome::Fetched { block: 8, allow: 0 }
    ));
    assert!(matches!(
        checked.sources[1].1,
        SourceOutcome::Fetched { block: 1, allow: 3 }
    ));
    assert!(matches!(checked.sources[2].1, SourceOutcome::Failed(_)));
    let kept_badword = checked
        .keep
        .iter()
        .find(|(l, _)| l.pattern == ".*badword.*")
        .map(|(_, why)| *why);
    assert_eq!(
        kept_badword,
        Some(KeepReason::Listed),
        "a listed line is kept, however old"
    );
    let dropped: Vec<&str> = checked.drop.iter().map(|l| l.pattern.as_str()).collect();
    assert_eq!(dropped, vec!["Gone.*", "Retired.*"]);
    assert!(
        checked
            .keep
            .iter()
            .any(|(l, why)| l.pattern == "Keep.*" && *why == KeepReason::FetchFailed)
    );
    // meta's eight lines less the stored one, wikitech's one and three.
    assert_eq!(checked.add.len(), 7 + 1 + 3);
    let text = checked.render();
    assert!(
        text.contains("add wikitech whitelist: User:Toolforge Bot\n"),
        "{text}"
    );
    assert!(text.contains("drop meta blacklist: Gone.*\n"), "{text}");
    assert!(
        !text.contains("Metaonly"),
        "meta's local list is not read: {text}"
    );

    // The run does exactly what the check said.
    let t0 = now();
    let ran = blocklist::sync(&settings, store, false).await.unwrap();
    assert_eq!(ran.sources, checked.sources);
    assert_eq!(ran.add, checked.add);
    assert_eq!(ran.drop, checked.drop);
    assert_eq!(ran.keep, checked.keep);
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("check:"))
            .map(|l| l.replace(" (check: nothing changed)", ""))
            .collect()
    };
    assert_eq!(strip(&ran.render()), strip(&text), "same lines printed");
    let after = store.all().await.unwrap();
    let before_keys: BTreeSet<_> = before.iter().map(key).collect();
    let after_keys: BTreeSet<_> = after.iter().map(key).collect();
    let mut expected = before_keys.clone();
    for l in &checked.drop {
        assert!(expected.remove(&(
            l.origin.clone(),
            l.kind.clone(),
            l.pattern.clone(),
            l.options.clone()
        )));
    }
    for e in &checked.add {
        expected.insert((
            e.origin.clone(),
            e.kind.clone(),
            e.pattern.clone(),
            e.options.clone(),
        ));
    }
    assert_eq!(
        after_keys, expected,
        "the store changed exactly as announced"
    );
    for (l, why) in &checked.keep {
        let row = after
            .iter()
            .find(|e| e.origin == l.origin && e.pattern == l.pattern && e.kind == l.kind)
            .unwrap();
        if *why == KeepReason::Listed {
            assert!(row.last_seen >= t0, "{l}: refreshed");
        } else {
            assert_eq!(row.last_seen, old, "{l}: untouched");
        }
    }
    // A second check has nothing to add or drop.
    let again = blocklist::sync(&settings, store, true).await.unwrap();
    assert!(again.add.is_empty() && again.drop.is_empty(), "{again:?}");

    // The request: raw page text through the query API, a User-Agent
    // naming the contact.
    let requests = meta_wiki.requests.lock().unwrap().clone();
    let (ua, q) = requests.first().unwrap();
    assert!(
        ua.starts_with("forge-idm-web/") && ua.contains("(https://idm.example.org/contact;"),
        "{ua}"
    );
    for pair in [
        ("action", "query"),
        ("prop", "revisions"),
        ("rvprop", "content"),
        ("titles", "Title_blacklist"),
        ("format", "json"),
        ("formatversion", "2"),
    ] {
        assert!(
            q.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "{pair:?} in {q:?}"
        );
    }

    // Matching as MediaWiki does on wikitech: the global list and
    // wikitech's own, less what wikitech's whitelist lets through.
    env.core.reload_blocklist().await.unwrap();
    let list = env.core.blocklist.load();
    for (name, blocked) in [
        ("Jane Wikimedia staff", true),
        ("Wikimedia Staff Helper", false), // whitelisted
        ("WikimediaFoundation", true),
        ("Wiki media Foundation", true),      // antispoof: spaces go
        ("W\u{456}kimedia Foundation", true), // antispoof: Cyrillic і
        ("Wikimedia Fondation", false),
        ("Spambot", true),
        ("Goodbot", false), // look-behind
        ("Bzzzz", true),    // back-reference
        ("Bzzz", false),
        ("Nswordfish", true), // {{ns:user}}
        ("Under score fan", true),
        ("Move only me", false), // moveonly
        ("Mybadwordname", true),
        ("Metaonly person", false), // meta's local list is meta's
        ("Toolforge fan", true),
        ("Toolforge Bot", false),    // whitelisted on wikitech
        ("Movable toolforge", true), // a moveonly whitelist line lets no account through
    ] {
        assert_eq!(
            list.matching(name).is_some(),
            blocked,
            "{name}: {:?}",
            list.check(name)
        );
    }
    // Through the name check, as a user meets it.
    let answer = env
        .core
        .check_names("Wikimedia Staff Helper", Some("staffhelper"))
        .await
        .unwrap();
    assert!(answer.username_errors.is_empty(), "{answer:?}");
    let answer = env
        .core
        .check_names("Jane Wikimedia Staff", Some("janestaff"))
        .await
        .unwrap();
    assert_eq!(answer.username_errors, vec!["This name is not allowed."]);
}
on_both_databases!(pages_whitelist_and_a_truthful_check);

/// A missing page: in the MediaWiki namespace it is the built-in default (no
/// lines), as MediaWiki reads it; elsewhere it is a failure that keeps the
/// wiki's entries (a mistyped or moved page must not empty the list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pages() {
    let (wiki, _) = serve_wiki(&[("MediaWiki:Titleblacklist", "User:X.*\n")]).await;
    let api = format!("http://{wiki}/w/api.php");
    let settings = settings_with(vec![]);
    let lists = blocklist::fetch_source(
        &source(
            "w",
            api.clone(),
            &["MediaWiki:Titleblacklist"],
            &["MediaWiki:Titlewhitelist"],
        ),
        &settings,
    )
    .await
    .unwrap();
    assert_eq!(lists.block.len(), 1);
    assert!(lists.allow.is_empty());
    let err = blocklist::fetch_source(&source("w", api, &["Title blacklist"], &[]), &settings)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BlocklistError::MissingPage { page, .. } if page == "Title blacklist"),
        "{err}"
    );
}

/// Without a contact the sync refuses to run (and says what to write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_contact_no_sync() {
    let env = Env::start_with(EnvOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let (wiki, w) = serve_wiki(&[("Title blacklist", "User:X.*\n")]).await;
    let mut settings = settings_with(vec![source(
        "meta",
        format!("http://{wiki}/w/api.php"),
        &["Title blacklist"],
        &[],
    )]);
    settings.contact = None;
    let err = blocklist::sync(&settings, &env.core.blocklist_store, true)
        .await
        .unwrap_err();
    assert!(matches!(err, BlocklistError::NoContact), "{err}");
    assert!(err.to_string().contains("contact = "), "{err}");
    assert!(
        w.requests.lock().unwrap().is_empty(),
        "nothing was sent without a contact"
    );
}

/// A TLS server on `addr` whose certificate no public authority signed.
async fn untrusted_tls_server() -> SocketAddr {
    forge_core::cli::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_file_iter(dir.path().join("cert.pem"))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.path().join("key.pem")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

/// Each way of not reaching a wiki, each from a real local failure, says
/// what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_say_what_failed() {
    let mut settings = settings_with(vec![]);
    settings.timeout_seconds = 1;
    let fetch = |url: String| {
        let settings = settings.clone();
        async move {
            match blocklist::fetch_source(&source("w", url, &["Title blacklist"], &[]), &settings)
                .await
            {
                Err(BlocklistError::Fetch { failure, .. }) => failure,
                other => panic!("expected a fetch failure, got {other:?}"),
            }
        }
    };

    // A closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let f = fetch(format!("http://127.0.0.1:{port}/w/api.php")).await;
    assert_eq!(f, FetchFailure::Refused, "{f}");
    assert!(f.to_string().contains("connection refused"));

    // A name that does not resolve (.invalid never does, RFC 6761).
    let f = fetch("http://forge-blocklist-test.invalid/w/api.php".into()).await;
    assert!(matches!(f, FetchFailure::Dns(_)), "{f}");
    assert!(f.to_string().starts_with("DNS"), "{f}");

    // A TLS server whose certificate no authority we trust signed.
    let tls = untrusted_tls_server().await;
    let f = fetch(format!("https://{tls}/w/api.php")).await;
    assert!(
        matches!(&f, FetchFailure::Tls(e) if e.contains("certificate")),
        "{f}"
    );

    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((s, _)) = silent.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    let f = fetch(format!("http://{silent_addr}/w/api.php")).await;
    assert_eq!(f, FetchFailure::Timeout(Duration::from_secs(1)), "{f}");
    assert!(f.to_string().contains("timed out"));

    // An HTTP error.
    let (wiki, _) = serve_wiki(&[]).await;
    let f = fetch(format!("http://{wiki}/broken/api.php")).await;
    assert_eq!(f, FetchFailure::Status(500));
}

/// An entry that backtracks catastrophically gives up within its budget:
/// the name check answers (the name is judged by the other entries), and
/// the entry is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_entry_gives_up_and_is_reported() {
    let env = Env::start_with(EnvOptions {
        worker: false,
        ..Default::default()
    })
    .await;
    let runaway = RUNAWAY;
    env.core
        .blocklist_store
        .upsert(
            "meta",
            &[
                (runaway.into(), String::new(), false),
                ("User:Zz.*".into(), String::new(), false),
            ],
            now(),
        )
        .await
        .unwrap();
    env.core.reload_blocklist().await.unwrap();
    let list = env.core.blocklist.load_full();
    let name = format!("{}x", "a".repeat(40));
    let started = std::time::Instant::now();
    let verdict = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking({
            let list = Arc::clone(&list);
            let name = name.clone();
            move || {
                let v = list.check(&name);
                (
                    v.blocked_by.map(str::to_owned),
                    v.gave_up
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect::<Vec<_>>(),
                )
            }
        }),
    )
    .await
    .expect("the check answers (without a budget this entry runs for years)")
    .unwrap();
    let took = started.elapsed();
    assert_eq!(
        verdict.0, None,
        "giving up counts as no match, as PCRE does"
    );
    assert_eq!(verdict.1, vec![runaway.to_owned()], "the entry is reported");
    eprintln!("runaway entry gave up after {took:?}");
    // The other entries still judge names, and the user-facing check answers.
    assert!(list.check("Zzname").blocked_by.is_some());
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        env.core.check_names(&name, Some("runawayname")),
    )
    .await
    .expect("the name check answers")
    .unwrap();
    assert!(
        !answer
            .username_errors
            .contains(&"This name is not allowed.".to_owned()),
        "{answer:?}"
    );
}

/// A PCRE entry that backtracks exponentially on a run of `a`s not followed
/// by what it wants: the back-reference makes fancy-regex run it on its
/// backtracking engine (a plain regex would go to the linear one).
const RUNAWAY: &str = r"User:(?:(a)\1?)+b";
