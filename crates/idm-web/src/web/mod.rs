//! The web front: routes, templates, and the request guards every page
//! shares.
//!
//! Layers, outermost first: **host check** (only `Host` names in
//! `http.allowed_hosts`, or the public URL's host, are served — so a standby
//! host is reached by its own name when it is listed, and forged hosts are
//! refused), **client IP** (the peer, or the `X-Forwarded-For` entry just
//! before the trusted proxies), **sessions** (tower-sessions over our SQL
//! store; HttpOnly, Secure, SameSite=Lax cookie, rotated at login), and
//! **CSRF** (every POST must carry the form token of its `idm_csrf` cookie
//! and its session; see `tokens`), and **security headers** on every
//! response (CSP, `X-Frame-Options`, `X-Content-Type-Options`,
//! `Referrer-Policy`). Pages are rendered by minijinja with HTML auto-escaping,
//! work without JavaScript, and report errors per field.

mod pages;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use minijinja::Environment;
use tower_sessions::cookie::{Cookie, SameSite};
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::services::Core;
use crate::store::SqlSessionStore;
use crate::tokens::random_token;

/// Name of the CSRF cookie.
pub const CSRF_COOKIE: &str = "idm_csrf";
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "idm_session";
/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Per-IP and per-account rate limiters.
#[derive(Debug)]
pub struct RateLimits {
    signup_ip: DefaultKeyedRateLimiter<IpAddr>,
    login_ip: DefaultKeyedRateLimiter<IpAddr>,
    login_account: DefaultKeyedRateLimiter<String>,
    email_change_account: DefaultKeyedRateLimiter<String>,
    check_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl RateLimits {
    fn new(c: &crate::config::RateLimitSettings) -> Self {
        let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimits {
            signup_ip: RateLimiter::keyed(Quota::per_hour(nz(c.signup_per_ip_per_hour))),
            login_ip: RateLimiter::keyed(Quota::per_minute(nz(c.login_per_ip_per_minute))),
            login_account: RateLimiter::keyed(Quota::per_minute(
                nz(c.login_per_account_per_minute),
            )),
            email_change_account: RateLimiter::keyed(Quota::per_hour(nz(
                c.email_change_per_account_per_hour
            ))),
            check_ip: RateLimiter::keyed(Quota::per_minute(nz(c.check_per_ip_per_minute))),
        }
    }

    /// Forgets idle keys (called periodically).
    pub fn retain_recent(&self) {
        self.signup_ip.retain_recent();
        self.login_ip.retain_recent();
        self.login_account.retain_recent();
        self.email_change_account.retain_recent();
        self.check_ip.retain_recent();
    }
}

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The services.
    pub core: Arc<Core>,
    templates: Arc<Environment<'static>>,
    limits: Arc<RateLimits>,
    hosts: Arc<Vec<String>>,
    trusted: Arc<Vec<IpNet>>,
}

/// The client's address, as determined by the client-IP layer.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The CSRF form token of this request.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("../../templates/base.html")),
        (
            "form_macros.html",
            include_str!("../../templates/form_macros.html"),
        ),
        ("index.html", include_str!("../../templates/index.html")),
        ("signup.html", include_str!("../../templates/signup.html")),
        ("message.html", include_str!("../../templates/message.html")),
        (
            "activate.html",
            include_str!("../../templates/activate.html"),
        ),
        ("login.html", include_str!("../../templates/login.html")),
        ("account.html", include_str!("../../templates/account.html")),
        (
            "errors_summary.html",
            include_str!("../../templates/errors_summary.html"),
        ),
        (
            "password_change.html",
            include_str!("../../templates/password_change.html"),
        ),
        (
            "password_forgot.html",
            include_str!("../../templates/password_forgot.html"),
        ),
        (
            "password_reset.html",
            include_str!("../../templates/password_reset.html"),
        ),
        (
            "username_forgot.html",
            include_str!("../../templates/username_forgot.html"),
        ),
        (
            "account_keys.html",
            include_str!("../../templates/account_keys.html"),
        ),
        (
            "account_email.html",
            include_str!("../../templates/account_email.html"),
        ),
        (
            "email_confirm.html",
            include_str!("../../templates/email_confirm.html"),
        ),
        ("manage.html", include_str!("../../templates/manage.html")),
        (
            "account_tokens.html",
            include_str!("../../templates/account_tokens.html"),
        ),
    ] {
        if let Err(e) = env.add_template(name, text) {
            // Templates are compiled into the binary; a broken one is a bug caught by tests.
            tracing::error!(template = name, error = %e, "template does not compile");
        }
    }
    env
}

impl AppState {
    /// State for `core`.
    pub fn new(core: Arc<Core>) -> Self {
        AppState {
            templates: Arc::new(templates()),
            limits: Arc::new(RateLimits::new(&core.config.rate_limit)),
            hosts: Arc::new(core.config.allowed_hosts()),
            trusted: Arc::new(core.config.http.trusted_proxies.clone()),
            core,
        }
    }

    /// The rate limiters.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Renders `template` with `ctx`; a rendering failure is a 500 page.
    pub fn render(&self, status: StatusCode, template: &str, ctx: minijinja::Value) -> Response {
        match self
            .templates
            .get_template(template)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template, error = %e, "rendering failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
            }
        }
    }
}

/// The whole web app.
pub fn router(core: Arc<Core>) -> Router {
    router_with(AppState::new(core))
}

/// The web app on an existing state (shared with the maintenance task).
pub fn router_with(state: AppState) -> Router {
    let core = Arc::clone(&state.core);
    let sessions = SessionManagerLayer::new(SqlSessionStore::new(core.db.clone()))
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_secure(core.config.http.cookie_secure)
        .with_same_site(SameSite::Lax)
        .with_expiry(Expiry::OnInactivity(time::Duration::days(
            core.config.http.session_days,
        )));
    Router::new()
        .route("/", get(pages::index))
        .route(
            "/signup",
            get(pages::signup_form).post(pages::signup_submit),
        )
        .route("/signup/sent", get(pages::signup_sent))
        .route(
            "/activate/{token}",
            get(pages::activate_page).post(pages::activate_confirm),
        )
        .route("/login", get(pages::login_form).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route("/account", get(pages::account))
        .route(
            "/account/password",
            get(pages::password_change_form).post(pages::password_change_submit),
        )
        .route(
            "/password/forgot",
            get(pages::password_forgot_form).post(pages::password_forgot_submit),
        )
        .route("/account/keys", get(pages::keys_page).post(pages::keys_add))
        .route("/account/keys/delete", post(pages::keys_delete))
        .route(
            "/account/tokens",
            get(pages::tokens_page).post(pages::tokens_create),
        )
        .route("/account/tokens/revoke", post(pages::tokens_revoke))
        .route("/api/v1/me", get(pages::api_me))
        .route("/api/v1/me/ssh-keys", post(pages::api_add_key))
        .route("/manage", get(pages::manage_page))
        .route("/manage/block", post(pages::manage_block))
        .route("/manage/unblock", post(pages::manage_unblock))
        .route(
            "/account/email",
            get(pages::email_form).post(pages::email_submit),
        )
        .route(
            "/account/email/confirm/{token}",
            get(pages::email_confirm_page).post(pages::email_confirm_submit),
        )
        .route(
            "/username/forgot",
            get(pages::username_forgot_form).post(pages::username_forgot_submit),
        )
        .route(
            "/password/reset/{token}",
            get(pages::password_reset_form).post(pages::password_reset_submit),
        )
        .route("/api/v1/check", get(pages::check_names))
        .route("/static/style.css", get(pages::stylesheet))
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), csrf_guard))
        .layer(sessions)
        .layer(middleware::from_fn_with_state(state.clone(), client_ip))
        .layer(middleware::from_fn_with_state(state.clone(), host_check))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// `Content-Security-Policy` of every response: our own stylesheet, our own
/// forms, nothing else — no scripts, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the browser-side defences to every response: CSP (above),
/// `X-Frame-Options: DENY` (for browsers without `frame-ancestors`),
/// `X-Content-Type-Options: nosniff`, and `Referrer-Policy: no-referrer`
/// (links carry tokens in their path: none leaks to another site).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// The request's host name without port, lower-cased.
fn request_host(req: &Request) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))?;
    Some(raw.to_ascii_lowercase())
}

async fn host_check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = request_host(&req).is_some_and(|h| {
        let bare = match h.rsplit_once(':') {
            Some((host, port))
                if port.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(']')
                    || h.starts_with('[') && h.contains("]:") =>
            {
                host.to_owned()
            }
            _ => h.clone(),
        };
        state.hosts.iter().any(|a| *a == h || *a == bare)
    });
    if !ok {
        metrics::counter!("forge_idm_bad_host_total").increment(1);
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "This host name is not served here.\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// The client address: the peer, unless the peer is a trusted proxy, in
/// which case the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy.
pub fn client_address(peer: IpAddr, forwarded: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(xff) = forwarded else { return peer };
    let mut client = peer;
    for part in xff.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

async fn client_ip(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = client_address(peer, xff, &state.trusted);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// The value of cookie `name`, if sent.
pub fn read_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| Cookie::parse(c.trim().to_owned()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The id of the request's session, if it has one (loading it), as the
/// CSRF token's binding: `""` for a visitor without a session.
async fn session_binding(session: Option<tower_sessions::Session>) -> String {
    let Some(session) = session else {
        return String::new();
    };
    // Loads the record; a cookie naming no stored session binds like none.
    match session
        .get::<serde_json::Value>(crate::store::sessions::SESSION_USER_KEY)
        .await
    {
        Ok(_) => session.id().map(|id| id.to_string()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn csrf_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let binding = session_binding(req.extensions().get::<tower_sessions::Session>().cloned()).await;
    let existing =
        read_cookie(req.headers(), CSRF_COOKIE).filter(|v| v.len() >= 16 && v.len() <= 128);
    let (cookie, fresh) = match existing {
        Some(v) => (v, false),
        None => (random_token(24), true),
    };
    let mut req = req;
    // API calls authenticated by a bearer token carry no ambient credential
    // a foreign page could use, so CSRF does not apply to them.
    let bearer_api = req.uri().path().starts_with("/api/")
        && req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
    if req.method() == Method::POST && !bearer_api {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response(),
        };
        let sent = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf_token")
            .map(|(_, v)| v.into_owned());
        let valid =
            !fresh && sent.is_some_and(|t| state.core.tokens.verify_csrf(&cookie, &binding, &t));
        if !valid {
            metrics::counter!("forge_idm_csrf_refused_total").increment(1);
            let req = Request::from_parts(parts, Body::empty());
            let _ = req;
            return state.render(
                StatusCode::FORBIDDEN,
                "message.html",
                minijinja::context! {
                    title => "This form has expired",
                    paragraphs => vec!["For your security the form could not be accepted. Please go back, reload the page and try again."],
                    csrf_token => state.core.tokens.csrf_token(&cookie, &binding),
                },
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut()
        .insert(CsrfToken(state.core.tokens.csrf_token(&cookie, &binding)));
    let mut resp = next.run(req).await;
    if fresh {
        let c = Cookie::build((CSRF_COOKIE, cookie))
            .path("/")
            .http_only(true)
            .secure(state.core.config.http.cookie_secure)
            .same_site(SameSite::Strict)
            .build();
        if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_honours_only_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_address(ip("192.0.2.1"), Some("1.2.3.4"), &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), Some("1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), Some("6.6.6.6, 1.2.3.4, 10.0.0.2"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), None, &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn templates_compile() {
        let env = templates();
        for t in [
            "signup.html",
            "login.html",
            "message.html",
            "activate.html",
            "account.html",
            "index.html",
            "password_change.html",
            "password_forgot.html",
            "password_reset.html",
            "username_forgot.html",
            "account_keys.html",
            "account_email.html",
            "email_confirm.html",
            "manage.html",
            "account_tokens.html",
        ] {
            env.get_template(t).unwrap();
        }
    }
}
