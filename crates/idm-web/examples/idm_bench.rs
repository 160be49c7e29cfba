//! Benchmark environment for `bench/idm-web/run.sh` (not shipped).
//!
//! * `idm_bench serve` — starts a real slapd (argon2 module), Redis, an SMTP
//!   sink, a SQLite database, idm-web and an in-process rq worker with
//!   idm-web's handlers; prints `URL http://127.0.0.1:PORT` and serves until
//!   stdin closes.
//! * `idm_bench activations N` — the same environment; N signups are
//!   confirmed at once and the time until every LDAP account exists is
//!   printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use forge_core::Shutdown;
use forge_core::redis::RedisSettings;
use forge_test_support::{RedisServer, Slapd, SmtpSink, SqliteDb};
use idm_web::config::{Config, PasswordScheme, Secrets};
use idm_web::db::Db;
use idm_web::jobs::JobQueues;
use idm_web::{Core, jobs};

struct Env {
    _slapd: Slapd,
    _redis: RedisServer,
    _smtp: SmtpSink,
    _db: SqliteDb,
    core: Arc<Core>,
    url: String,
}

async fn start(concurrency: usize) -> Env {
    forge_core::cli::install_crypto_provider();
    let slapd = Slapd::start().await.unwrap();
    let redis = RedisServer::start().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let db = SqliteDb::new().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = Config::default();
    config.http.public_base_url = url.clone();
    config.http.cookie_secure = false;
    config.ldap.url = slapd.url();
    config.ldap.bind_dn = slapd.admin_dn();
    config.ldap.people_base = slapd.people_dn();
    config.ldap.uid_counter_dn = format!("cn=uidnumber-counter,{}", slapd.base_dn());
    config.ldap.password_scheme = if slapd.has_argon2() {
        PasswordScheme::Argon2
    } else {
        PasswordScheme::Ssha
    };
    config.mail.smtp_port = smtp.port();
    config.redis = RedisSettings::for_url(&redis.url());
    config.blocklist.sources = Vec::new();
    let secrets = Secrets {
        database_url: db.url(),
        ldap_password: slapd.admin_password().to_owned(),
        token_key: b"benchmark-token-key-0123456789abcdef".to_vec(),
        smtp_password: String::new(),
    };
    let pool = config.redis.pool().unwrap();
    fred::prelude::ClientLike::init(&pool).await.unwrap();
    let dbp = Db::connect(&secrets.database_url, 8, Duration::from_secs(10))
        .await
        .unwrap();
    dbp.migrate().await.unwrap();
    let core = Core::with_db(config, &secrets, dbp, Some(JobQueues::new(pool)))
        .await
        .unwrap();
    tokio::spawn(idm_web::run(
        Arc::clone(&core),
        listener,
        None,
        Shutdown::new(),
    ));
    let mut registry = forge_rq::HandlerRegistry::new();
    jobs::register(&mut registry, Arc::clone(&core));
    let settings = forge_rq::WorkerSettings {
        queues: vec!["default".into(), "notification".into()],
        concurrency,
        ..Default::default()
    };
    let worker =
        forge_rq::Worker::new(settings, RedisSettings::for_url(&redis.url()), registry).unwrap();
    tokio::spawn(worker.run(Shutdown::new()));
    Env {
        _slapd: slapd,
        _redis: redis,
        _smtp: smtp,
        _db: db,
        core,
        url,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let env = start(16).await;
            println!("URL {}", env.url);
            let mut line = String::new();
            let _ =
                tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
        }
        Some("activations") => {
            let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
            let env = start(concurrency).await;
            let hash = idm_web::passwords::hash_for_directory(
                "Plenty-of-entropy-42!",
                env.core.config.ldap.password_scheme,
            )
            .unwrap();
            let mut tokens = Vec::new();
            for i in 0..n {
                let uid = format!("bench{i:04}");
                let s = env
                    .core
                    .signups
                    .insert(&idm_web::store::NewSignup {
                        username: format!("Bench {i:04}"),
                        uid: uid.clone(),
                        email: format!("{uid}@example.org"),
                        password_hash: hash.clone(),
                    })
                    .await
                    .unwrap();
                let link = env.core.activation_link(&s);
                tokens.push(link.rsplit('/').next().unwrap().to_owned());
            }
            let start = Instant::now();
            let tasks: Vec<_> = tokens
                .into_iter()
                .map(|t| {
                    let core = Arc::clone(&env.core);
                    tokio::spawn(async move { core.confirm_activation(&t).await.unwrap().unwrap() })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let confirmed = start.elapsed();
            loop {
                let mut done = 0;
                for i in 0..n {
                    if env
                        .core
                        .signups
                        .by_uid(&format!("bench{i:04}"))
                        .await
                        .unwrap()
                        .is_some_and(|s| s.state == "created")
                    {
                        done += 1;
                    }
                }
                if done == n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!(
                "activations={n} worker_concurrency={concurrency} confirmed_in_ms={} all_created_in_ms={}",
                confirmed.as_millis(),
                start.elapsed().as_millis()
            );
        }
        _ => {
            eprintln!("usage: idm_bench serve | idm_bench activations [N] [CONCURRENCY]");
            std::process::exit(2);
        }
    }
}
