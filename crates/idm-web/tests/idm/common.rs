//! The test environment: real slapd, Redis, SMTP sink, SQLite or MariaDB,
//! an in-process idm-web on port 0, and an in-process rq worker running
//! idm-web's job handlers.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use forge_core::Shutdown;
use forge_core::redis::RedisSettings;
use forge_test_support::{MariaDb, RedisServer, Slapd, SmtpSink, SqliteDb};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idm_web::config::{Config, PasswordScheme, Secrets};
use idm_web::db::Db;
use idm_web::jobs::JobQueues;
use idm_web::{Core, jobs};
use ldap3::{LdapConnAsync, Scope, SearchEntry};

/// Which SQL database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MariaDb,
}

/// Keeps the database alive.
pub enum DbGuard {
    Sqlite(SqliteDb),
    MariaDb(MariaDb),
}

impl DbGuard {
    pub fn url(&self) -> String {
        match self {
            DbGuard::Sqlite(d) => d.url(),
            DbGuard::MariaDb(d) => d.url(),
        }
    }
}

pub const ADMIN_MAIL: &str = "admins@example.org";
pub const TOKEN_KEY: &str = "test-token-key-0123456789abcdef0123456789";

pub struct Env {
    pub slapd: Slapd,
    pub redis: RedisServer,
    pub smtp: SmtpSink,
    pub db: DbGuard,
    pub config: Config,
    pub secrets: Secrets,
    pub core: Arc<Core>,
    pub addr: SocketAddr,
    pub base_url: String,
    server: Option<Shutdown>,
    worker: Option<Shutdown>,
}

pub struct EnvOptions {
    pub backend: Backend,
    pub antibot: bool,
    pub admin_recipients: bool,
    pub worker: bool,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            backend: Backend::Sqlite,
            antibot: true,
            admin_recipients: true,
            worker: true,
        }
    }
}

impl Env {
    pub async fn start(backend: Backend) -> Env {
        Env::start_with(EnvOptions {
            backend,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(o: EnvOptions) -> Env {
        forge_core::cli::install_crypto_provider();
        let slapd = Slapd::start().await.unwrap();
        let redis = RedisServer::start().await.unwrap();
        let smtp = SmtpSink::start().await.unwrap();
        let db = match o.backend {
            Backend::Sqlite => DbGuard::Sqlite(SqliteDb::new().unwrap()),
            Backend::MariaDb => DbGuard::MariaDb(MariaDb::start().await.unwrap()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://127.0.0.1:{}", addr.port());
        let mut config = Config::default();
        config.http.public_base_url = base_url.clone();
        config.http.cookie_secure = false;
        config.database.url = db.url();
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
        if o.admin_recipients {
            config.mail.admin_recipients = vec![ADMIN_MAIL.into()];
        }
        config.redis = RedisSettings::for_url(&redis.url());
        config.signup.antibot = o.antibot;
        config.blocklist.refresh_seconds = 1;
        config.blocklist.sources = Vec::new();
        let secrets = Secrets {
            database_url: db.url(),
            ldap_password: slapd.admin_password().to_owned(),
            token_key: TOKEN_KEY.as_bytes().to_vec(),
            smtp_password: String::new(),
        };
        let core = build_core(&config, &secrets).await;
        let mut env = Env {
            slapd,
            redis,
            smtp,
            db,
            config,
            secrets,
            core,
            addr,
            base_url,
            server: None,
            worker: None,
        };
        env.serve(listener).await;
        if o.worker {
            env.start_worker().await;
        }
        env
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) {
        let shutdown = Shutdown::new();
        tokio::spawn(idm_web::run(
            Arc::clone(&self.core),
            listener,
            None,
            shutdown.clone(),
        ));
        self.server = Some(shutdown);
    }

    /// Stops the web app and starts a new one (new Core, same database and port).
    pub async fn restart_web(&mut self) {
        if let Some(s) = self.server.take() {
            s.trigger();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.core = build_core(&self.config, &self.secrets).await;
        let mut listener = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        self.serve(listener.expect("rebinding the web port")).await;
    }

    pub async fn start_worker(&mut self) {
        let mut registry = forge_rq::HandlerRegistry::new();
        jobs::register(&mut registry, Arc::clone(&self.core));
        let settings = forge_rq::WorkerSettings {
            name: Some(format!("idm-test-{}", rand::random::<u32>())),
            queues: vec!["default".into(), "notification".into()],
            concurrency: 16,
            ..Default::default()
        };
        let worker = forge_rq::Worker::new(
            settings,
            RedisSettings::for_url(&self.redis.url()),
            registry,
        )
        .unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(worker.run(shutdown.clone()));
        self.worker = Some(shutdown);
    }

    pub fn client(&self) -> WebClient {
        WebClient::new(&self.base_url)
    }

    /// Waits until the signup of `uid` has state `created`.
    pub async fn wait_created(&self, uid: &str) -> idm_web::store::Signup {
        for _ in 0..300 {
            if let Some(s) = self.core.signups.by_uid(uid).await.unwrap()
                && s.state == "created"
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("account {uid} was not created in time");
    }

    /// The LDAP entry `uid=<uid>` with all attributes, if it exists.
    pub async fn ldap_entry(&self, uid: &str) -> Option<SearchEntry> {
        let mut ldap = self.slapd.admin_conn().await.unwrap();
        let (entries, _) = ldap
            .search(
                &self.slapd.people_dn(),
                Scope::Subtree,
                &format!("(uid={uid})"),
                vec!["*"],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        let _ = ldap.unbind().await;
        let mut v: Vec<SearchEntry> = entries.into_iter().map(SearchEntry::construct).collect();
        assert!(v.len() <= 1);
        v.pop()
    }

    /// Whether `dn` binds with `password`.
    pub async fn can_bind(&self, dn: &str, password: &str) -> bool {
        let (conn, mut ldap) = LdapConnAsync::new(&self.slapd.url()).await.unwrap();
        ldap3::drive!(conn);
        let r = ldap.simple_bind(dn, password).await.unwrap();
        let _ = ldap.unbind().await;
        r.rc == 0
    }

    /// Adds an account directly to LDAP (for "name exists" tests).
    pub fn add_ldap_user(&self, uid: &str, cn: &str, uid_number: u32) {
        self.slapd
            .ldapadd(&format!(
                "dn: uid={uid},{people}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nobjectClass: ldapPublicKey\n\
                 cn: {cn}\nsn: {cn}\nuid: {uid}\nuidNumber: {uid_number}\ngidNumber: 500\nhomeDirectory: /home/{uid}\n\
                 mail: {uid}@example.org\nuserPassword: secret-{uid}\n",
                people = self.slapd.people_dn()
            ))
            .unwrap();
    }

    /// The activation link in the newest mail to `to`.
    pub async fn activation_link_for(&self, to: &str) -> String {
        for _ in 0..200 {
            for m in self.smtp.messages().iter().rev() {
                if m.recipients.iter().any(|r| r == to) {
                    let body = m.text_body().unwrap_or_default();
                    if let Some(link) = body.split_whitespace().find(|w| w.contains("/activate/")) {
                        return link.to_owned();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no activation mail to {to}");
    }

    pub fn mails_to(&self, to: &str) -> usize {
        self.smtp
            .messages()
            .iter()
            .filter(|m| m.recipients.iter().any(|r| r == to))
            .count()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.force();
        }
        if let Some(s) = &self.worker {
            s.force();
        }
    }
}

pub async fn build_core(config: &Config, secrets: &Secrets) -> Arc<Core> {
    let pool = config.redis.pool().unwrap();
    fred::prelude::ClientLike::init(&pool).await.unwrap();
    let db = Db::connect(&secrets.database_url, 8, Duration::from_secs(10))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    Core::with_db(
        config.clone(),
        secrets,
        db,
        Some(JobQueues::configured(pool, &config.redis, &config.queue).await),
    )
    .await
    .unwrap()
}

/// A small HTTP client with a cookie jar.
pub struct WebClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    pub cookies: BTreeMap<String, String>,
    pub host: Option<String>,
}

pub struct Page {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }
    /// The value of the hidden input `name`.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let re = regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).unwrap();
        re.captures(&self.body).map(|c| html_unescape(&c[1]))
    }
    /// The answer to the anti-bot question on the page.
    pub fn antibot_answer(&self) -> String {
        let re = regex::Regex::new(r"What is (\d+) plus (\d+)\?").unwrap();
        let c = re.captures(&self.body).expect("anti-bot question");
        (c[1].parse::<u32>().unwrap() + c[2].parse::<u32>().unwrap()).to_string()
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x3d;", "=")
        .replace("&#x2b;", "+")
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
}

impl WebClient {
    pub fn new(base: &str) -> Self {
        WebClient {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookies: BTreeMap::new(),
            host: None,
        }
    }

    async fn send(&mut self, req: http::request::Builder, body: Bytes) -> Page {
        let mut req = req;
        if !self.cookies.is_empty() {
            let c = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header("cookie", c);
        }
        if let Some(h) = &self.host {
            req = req.header("host", h.as_str());
        }
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for sc in headers.get_all("set-cookie") {
            let s = sc.to_str().unwrap();
            let first = s.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            if v.is_empty() || s.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.send(http::Request::get(url), Bytes::new()).await
    }

    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            http::Request::post(url).header("content-type", "application/x-www-form-urlencoded"),
            Bytes::from(body),
        )
        .await
    }

    /// GETs `form_path`, then POSTs `fields` plus its CSRF token (and the
    /// anti-bot answer when the form has one) to `action`.
    pub async fn submit(&mut self, form_path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let page = self.get(form_path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = page.hidden("csrf_token").expect("csrf token");
        let mut all: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.push(("csrf_token".into(), csrf));
        if let Some(ch) = page.hidden("challenge") {
            all.push(("challenge".into(), ch));
            if page.body.contains("What is ") && !fields.iter().any(|(k, _)| *k == "human_check") {
                all.push(("human_check".into(), page.antibot_answer()));
            }
        }
        let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.post(action, &refs).await
    }
}

pub const GOOD_PASSWORD: &str = "Plenty-of-entropy-42!";

/// Signs up through the web form; returns the response page.
pub async fn web_signup(
    c: &mut WebClient,
    username: &str,
    uid: &str,
    email: &str,
    password: &str,
) -> Page {
    c.submit(
        "/signup",
        "/signup",
        &[
            ("username", username),
            ("shellname", uid),
            ("email", email),
            ("password", password),
            ("password2", password),
        ],
    )
    .await
}

/// Creates an account directly through the services (no mail, no worker).
pub async fn make_account(env: &Env, uid: &str, username: &str, password: &str) -> String {
    let hash =
        idm_web::passwords::hash_for_directory(password, env.config.ldap.password_scheme).unwrap();
    let s = env
        .core
        .signups
        .insert(&idm_web::store::NewSignup {
            username: username.into(),
            uid: uid.into(),
            email: format!("{uid}@example.org"),
            password_hash: hash,
        })
        .await
        .unwrap();
    assert!(env.core.signups.confirm(s.id).await.unwrap());
    env.core.create_account(s.id).await.unwrap();
    format!("uid={uid},{}", env.slapd.people_dn())
}

/// The link containing `marker` in the newest mail to `to`.
pub async fn link_in_mail(env: &Env, to: &str, marker: &str) -> String {
    for _ in 0..200 {
        for m in env.smtp.messages().iter().rev() {
            if m.recipients.iter().any(|r| r == to) {
                let body = m.text_body().unwrap_or_default();
                if let Some(link) = body.split_whitespace().find(|w| w.contains(marker)) {
                    return link.to_owned();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no mail to {to} with {marker}");
}

/// Asserts `mail` is `multipart/alternative` with a text part (what it says,
/// `mail.text_body()`) and an HTML version of the same text.
pub fn assert_text_and_html(mail: &forge_test_support::CapturedMail) {
    let ct = mail.header("content-type").unwrap_or_default();
    assert!(
        ct.to_ascii_lowercase().starts_with("multipart/alternative"),
        "content type {ct:?} of {}",
        mail.raw()
    );
    let text = mail.text_body().unwrap_or_default();
    assert!(!text.trim().is_empty());
    let html = mail.html_body().unwrap_or_default();
    assert!(html.contains("<p>"), "an HTML part: {}", mail.raw());
    for link in text.split_whitespace().filter(|w| w.starts_with("http")) {
        assert!(
            html.contains(&format!("<a href=\"{}\"", link.replace('&', "&amp;"))),
            "{link} is a link in the HTML part: {html}"
        );
    }
}

/// A signup form for display name `username` and shell name `uid`, with a
/// good password and `<uid>@example.org`.
pub fn signup_form(username: &str, uid: &str) -> idm_web::services::signup::SignupForm {
    idm_web::services::signup::SignupForm {
        username: username.into(),
        shellname: uid.into(),
        email: format!("{uid}@example.org"),
        password: GOOD_PASSWORD.into(),
        password2: GOOD_PASSWORD.into(),
        ..Default::default()
    }
}

/// The error messages the signup gives for `field` (empty when that field
/// passed); panics if the form was accepted.
pub async fn signup_errors(
    env: &Env,
    f: &idm_web::services::signup::SignupForm,
    field: &str,
) -> Vec<String> {
    match env.core.submit_signup(f).await.unwrap() {
        idm_web::services::signup::SignupOutcome::Invalid(e) => {
            e.get(field).cloned().unwrap_or_default()
        }
        other => panic!("{:?} / {:?} accepted: {other:?}", f.username, f.shellname),
    }
}
