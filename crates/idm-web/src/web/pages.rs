//! The page handlers. Each one turns a request into a service call and the
//! result into a page; no business rule lives here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::Json;
use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use super::{AppState, ClientIp, CsrfToken};
use crate::db::now;
use crate::services::ServiceError;
use crate::services::signup::{SignupForm, SignupOutcome};
use crate::tokens::TokenError;

/// The logged-in user, as kept in the session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionUser {
    /// DN.
    pub dn: String,
    /// Shell name.
    pub uid: String,
    /// Display name.
    pub cn: String,
    /// E-mail.
    pub mail: String,
}

use crate::store::sessions::SESSION_USER_KEY as USER_KEY;

/// The longest login name looked up (a username is at most 85 characters).
const MAX_LOGIN_BYTES: usize = 4 * 85;
/// The longest password tried at login.
const MAX_LOGIN_PASSWORD_BYTES: usize = 4 * crate::passwords::MAX_PASSWORD_CHARS;

async fn current_user(session: &Session) -> Option<SessionUser> {
    session.get::<SessionUser>(USER_KEY).await.ok().flatten()
}

fn message(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    title: &str,
    paragraphs: &[&str],
) -> Response {
    state.render(
        status,
        "message.html",
        context! { title => title, paragraphs => paragraphs, csrf_token => csrf.0 },
    )
}

fn internal(state: &AppState, csrf: &CsrfToken, e: &ServiceError) -> Response {
    tracing::error!(error = %e, "request failed");
    match e {
        ServiceError::Directory(crate::directory::DirectoryError::Locked) => message(
            state,
            StatusCode::FORBIDDEN,
            csrf,
            "This account is blocked",
            &["Nothing was changed."],
        ),
        ServiceError::Directory(_) => try_later(state, csrf),
        _ => message(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            csrf,
            "Something went wrong",
            &["Sorry, something went wrong on our side. Please try again in a few minutes."],
        ),
    }
}

fn try_later(state: &AppState, csrf: &CsrfToken) -> Response {
    message(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        csrf,
        "Please try again later",
        &[
            "The account directory cannot be reached right now. Nothing was saved; please try again in a few minutes.",
        ],
    )
}

pub(super) async fn index(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
) -> Response {
    let user = current_user(&session).await;
    if user.is_some() {
        return Redirect::to("/account").into_response();
    }
    state.render(
        StatusCode::OK,
        "index.html",
        context! { title => "Developer accounts", csrf_token => csrf.0 },
    )
}

fn labels() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("username", "Username"),
        ("shellname", "Shell name"),
        ("email", "E-mail address"),
        ("password", "Password"),
        ("password2", "Password again"),
        ("human_check", "Robot check"),
    ])
}

fn signup_page(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    form: &SignupForm,
    errors: &BTreeMap<&'static str, Vec<String>>,
) -> Response {
    let (question, challenge) = state.core.tokens.antibot_challenge(now());
    state.render(
        status,
        "signup.html",
        context! {
            title => "Create a developer account",
            csrf_token => csrf.0,
            form => context! { username => form.username, shellname => form.shellname, email => form.email },
            errors => errors,
            labels => labels(),
            question => question,
            challenge => challenge,
            antibot => state.core.config.signup.antibot,
            min_password_length => state.core.config.signup.min_password_length,
        },
    )
}

pub(super) async fn signup_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Response {
    signup_page(
        &state,
        StatusCode::OK,
        &csrf,
        &SignupForm::default(),
        &BTreeMap::new(),
    )
}

pub(super) async fn signup_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Form(form): Form<SignupForm>,
) -> Response {
    if state.limits().signup_ip.check_key(&ip).is_err() {
        metrics::counter!("forge_idm_rate_limited_total", "what" => "signup").increment(1);
        return message(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &csrf,
            "Too many signups",
            &["Too many accounts were requested from your network. Please try again later."],
        );
    }
    match state.core.submit_signup(&form).await {
        Ok(SignupOutcome::Stored { .. }) => Redirect::to("/signup/sent").into_response(),
        Ok(SignupOutcome::Invalid(errors)) => {
            signup_page(&state, StatusCode::BAD_REQUEST, &csrf, &form, &errors)
        }
        Ok(SignupOutcome::TryLater) => {
            let errors = BTreeMap::from([(
                "form",
                vec!["The account directory cannot be reached right now. Nothing was saved; please try again later.".to_owned()],
            )]);
            signup_page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                &csrf,
                &form,
                &errors,
            )
        }
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn signup_sent(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Response {
    message(
        &state,
        StatusCode::OK,
        &csrf,
        "Check your e-mail",
        &[
            "We sent you a link to activate your account. It works for a few days.",
            "If no mail arrives within a few minutes, look in your spam folder.",
        ],
    )
}

fn token_error(state: &AppState, csrf: &CsrfToken, e: TokenError) -> Response {
    match e {
        TokenError::Expired => message(
            state,
            StatusCode::GONE,
            csrf,
            "This link has expired",
            &["Links sent by mail work for a limited time. Please start again from the beginning."],
        ),
        TokenError::Invalid => message(
            state,
            StatusCode::BAD_REQUEST,
            csrf,
            "This link is not valid",
            &["The link is incomplete, was already used, or was replaced by a newer one."],
        ),
    }
}

pub(super) async fn activate_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(token): Path<String>,
) -> Response {
    match state.core.signup_for_token(&token).await {
        Ok(Ok(signup)) => state.render(
            StatusCode::OK,
            "activate.html",
            context! {
                title => "Activate your account",
                csrf_token => csrf.0,
                token => token,
                signup => context! { username => signup.username, uid => signup.uid, email => signup.email },
            },
        ),
        Ok(Err(e)) => token_error(&state, &csrf, e),
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn activate_confirm(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(token): Path<String>,
) -> Response {
    match state.core.confirm_activation(&token).await {
        Ok(Ok(signup)) => state.render(
            StatusCode::OK,
            "message.html",
            context! {
                title => "Your account is being created",
                csrf_token => csrf.0,
                paragraphs => vec![format!("The account {} is being created; this takes a moment. You can then log in.", signup.uid)],
                link => context! { href => "/login", text => "Log in" },
            },
        ),
        Ok(Err(e)) => token_error(&state, &csrf, e),
        Err(e) => internal(&state, &csrf, &e),
    }
}

/// The login form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct LoginForm {
    login: String,
    password: String,
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    login: &str,
    error: Option<&str>,
) -> Response {
    let errors: BTreeMap<&str, Vec<&str>> = error.map(|e| ("form", vec![e])).into_iter().collect();
    state.render(
        status,
        "login.html",
        context! { title => "Log in", csrf_token => csrf.0, login => login, errors => errors },
    )
}

pub(super) async fn login_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Response {
    login_page(&state, StatusCode::OK, &csrf, "", None)
}

pub(super) async fn login_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Response {
    let login = form.login.trim().to_owned();
    if state.limits().login_ip.check_key(&ip).is_err() {
        return login_limited(&state, &csrf, &login);
    }
    // Bounded before any lookup: no name or password of ours is this long.
    if login.len() > MAX_LOGIN_BYTES || form.password.len() > MAX_LOGIN_PASSWORD_BYTES {
        metrics::counter!("forge_idm_logins_total", "result" => "refused").increment(1);
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            &csrf,
            "",
            Some("Wrong username or password."),
        );
    }
    // The per-account limit is keyed by the account the name resolves to
    // (by the directory's own matching), so case, space or look-alike
    // spellings of one name share one budget; an unknown name by its skeleton.
    let account = match state.core.directory.resolve_login(&login).await {
        Ok(a) => a,
        Err(e) => return login_unavailable(&state, &csrf, &login, &e),
    };
    let key = match &account {
        Some(a) => format!("uid:{}", a.uid),
        None => format!("name:{}", crate::names::skeleton(&login)),
    };
    if state.limits().login_account.check_key(&key).is_err() {
        return login_limited(&state, &csrf, &login);
    }
    match state
        .core
        .directory
        .verify_password(account.as_ref(), &form.password)
        .await
    {
        Ok(Some(user)) => {
            // A new session id at login: a planted cookie never becomes a logged-in session.
            if let Err(e) = session.cycle_id().await {
                tracing::error!(error = %e, "session rotation failed");
                return internal(&state, &csrf, &ServiceError::Other(e.to_string()));
            }
            let u = SessionUser {
                dn: user.dn,
                uid: user.uid,
                cn: user.cn,
                mail: user.mail,
            };
            if let Err(e) = session.insert(USER_KEY, &u).await {
                return internal(&state, &csrf, &ServiceError::Other(e.to_string()));
            }
            metrics::counter!("forge_idm_logins_total", "result" => "ok").increment(1);
            tracing::info!(uid = %u.uid, "login");
            Redirect::to("/account").into_response()
        }
        Ok(None) => {
            metrics::counter!("forge_idm_logins_total", "result" => "refused").increment(1);
            login_page(
                &state,
                StatusCode::UNAUTHORIZED,
                &csrf,
                &login,
                Some("Wrong username or password."),
            )
        }
        Err(e) => login_unavailable(&state, &csrf, &login, &e),
    }
}

fn login_limited(state: &AppState, csrf: &CsrfToken, login: &str) -> Response {
    metrics::counter!("forge_idm_rate_limited_total", "what" => "login").increment(1);
    login_page(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        csrf,
        login,
        Some("Too many login attempts. Please wait a minute and try again."),
    )
}

fn login_unavailable(
    state: &AppState,
    csrf: &CsrfToken,
    login: &str,
    e: &crate::directory::DirectoryError,
) -> Response {
    tracing::warn!(error = %e, "login: directory unavailable");
    login_page(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        csrf,
        login,
        Some("The account directory cannot be reached right now. Please try again later."),
    )
}

pub(super) async fn logout(session: Session) -> Response {
    if let Err(e) = session.flush().await {
        tracing::warn!(error = %e, "logout: session delete failed");
    }
    Redirect::to("/").into_response()
}

pub(super) async fn account(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    state.render(
        StatusCode::OK,
        "account.html",
        context! { title => "Your account", csrf_token => csrf.0, user => user },
    )
}

/// Query of the name check.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CheckQuery {
    username: String,
    shellname: Option<String>,
}

pub(super) async fn check_names(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Query(q): Query<CheckQuery>,
) -> Response {
    // Each check asks the directory and the database: limited per client,
    // so the endpoint is no fast oracle for which names exist.
    if state.limits().check_ip.check_key(&ip).is_err() {
        metrics::counter!("forge_idm_rate_limited_total", "what" => "name_check").increment(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            Json(serde_json::json!({"error": "too many name checks; try again in a minute"})),
        )
            .into_response();
    }
    match state
        .core
        .check_names(&q.username, q.shellname.as_deref())
        .await
    {
        Ok(check) => Json(check).into_response(),
        Err(e) => {
            let status = if matches!(e, ServiceError::Directory(_)) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            tracing::warn!(error = %e, "name check failed");
            (
                status,
                Json(serde_json::json!({"error": "try again later"})),
            )
                .into_response()
        }
    }
}

pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/style.css"),
    )
        .into_response()
}

pub(super) async fn not_found(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Response {
    message(
        &state,
        StatusCode::NOT_FOUND,
        &csrf,
        "Page not found",
        &["There is no page at this address."],
    )
}

fn password_labels() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("current_password", "Current password"),
        ("new_password", "New password"),
        ("new_password2", "New password again"),
    ])
}

/// The password-change form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PasswordChangeForm {
    current_password: String,
    new_password: String,
    new_password2: String,
}

fn password_change_page(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    user: &SessionUser,
    errors: &BTreeMap<&'static str, Vec<String>>,
) -> Response {
    state.render(
        status,
        "password_change.html",
        context! {
            title => "Change your password",
            csrf_token => csrf.0,
            user => user,
            errors => errors,
            labels => password_labels(),
            min_password_length => state.core.config.signup.min_password_length,
        },
    )
}

pub(super) async fn password_change_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    password_change_page(&state, StatusCode::OK, &csrf, &user, &BTreeMap::new())
}

pub(super) async fn password_change_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    session: Session,
    Form(form): Form<PasswordChangeForm>,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    if state.limits().login_ip.check_key(&ip).is_err()
        || state.limits().login_account.check_key(&user.uid).is_err()
    {
        metrics::counter!("forge_idm_rate_limited_total", "what" => "password_change").increment(1);
        let errors = BTreeMap::from([(
            "form",
            vec!["Too many attempts. Please wait a minute and try again.".to_owned()],
        )]);
        return password_change_page(&state, StatusCode::TOO_MANY_REQUESTS, &csrf, &user, &errors);
    }
    let owner = crate::services::password::PasswordOwner {
        session: session.id(),
        dn: &user.dn,
        uid: &user.uid,
        cn: &user.cn,
        mail: &user.mail,
    };
    match state
        .core
        .change_password(
            &owner,
            &form.current_password,
            &form.new_password,
            &form.new_password2,
        )
        .await
    {
        Ok(Ok(())) => state.render(
            StatusCode::OK,
            "message.html",
            context! {
                title => "Password changed",
                csrf_token => csrf.0,
                user => user,
                paragraphs => vec!["Your new password is in force."],
                link => context! { href => "/account", text => "Back to your account" },
            },
        ),
        Ok(Err(errors)) => {
            password_change_page(&state, StatusCode::BAD_REQUEST, &csrf, &user, &errors)
        }
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn password_forgot_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Response {
    state.render(
        StatusCode::OK,
        "password_forgot.html",
        context! { title => "Forgot your password?", csrf_token => csrf.0 },
    )
}

/// The per-IP limit of the pages that send mail on request (forgotten
/// password, forgotten username): `Some(429 page)` when exceeded.
fn mail_request_limited(
    state: &AppState,
    csrf: &CsrfToken,
    ip: &IpAddr,
    what: &'static str,
) -> Option<Response> {
    state.limits().login_ip.check_key(ip).is_err().then(|| {
        metrics::counter!("forge_idm_rate_limited_total", "what" => what).increment(1);
        message(
            state,
            StatusCode::TOO_MANY_REQUESTS,
            csrf,
            "Too many requests",
            &["Please wait a minute and try again."],
        )
    })
}

pub(super) async fn password_forgot_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Some(refusal) = mail_request_limited(&state, &csrf, &ip, "password_reset") {
        return refusal;
    }
    if let Err(e) = state.core.request_password_reset(&form.login).await {
        return internal(&state, &csrf, &e);
    }
    // The same answer whether or not an account matched.
    message(
        &state,
        StatusCode::OK,
        &csrf,
        "Check your e-mail",
        &[
            "If this belongs to an account, we sent a link to choose a new password to its e-mail address. The link works for a limited time.",
        ],
    )
}

/// The reset form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ResetForm {
    new_password: String,
    new_password2: String,
}

fn reset_page(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    token: &str,
    uid: &str,
    errors: &BTreeMap<&'static str, Vec<String>>,
) -> Response {
    state.render(
        status,
        "password_reset.html",
        context! {
            title => "Choose a new password",
            csrf_token => csrf.0,
            token => token,
            uid => uid,
            errors => errors,
            labels => password_labels(),
            min_password_length => state.core.config.signup.min_password_length,
        },
    )
}

pub(super) async fn password_reset_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(token): Path<String>,
) -> Response {
    match state.core.account_for_reset_token(&token).await {
        Ok(Ok(account)) => reset_page(
            &state,
            StatusCode::OK,
            &csrf,
            &token,
            &account.uid,
            &BTreeMap::new(),
        ),
        Ok(Err(e)) => token_error(&state, &csrf, e),
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn password_reset_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(token): Path<String>,
    Form(form): Form<ResetForm>,
) -> Response {
    use crate::services::password::ResetOutcome;
    match state
        .core
        .reset_password(&token, &form.new_password, &form.new_password2)
        .await
    {
        Ok(ResetOutcome::Done) => state.render(
            StatusCode::OK,
            "message.html",
            context! {
                title => "Password changed",
                csrf_token => csrf.0,
                paragraphs => vec!["Your new password is in force. You can log in with it now."],
                link => context! { href => "/login", text => "Log in" },
            },
        ),
        Ok(ResetOutcome::Token(e)) => token_error(&state, &csrf, e),
        Ok(ResetOutcome::Invalid(errors)) => {
            let uid = crate::tokens::TokenSigner::reset_uid(&token).unwrap_or_default();
            reset_page(
                &state,
                StatusCode::BAD_REQUEST,
                &csrf,
                &token,
                &uid,
                &errors,
            )
        }
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn username_forgot_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
) -> Response {
    state.render(
        StatusCode::OK,
        "username_forgot.html",
        context! { title => "Forgot your username?", csrf_token => csrf.0 },
    )
}

/// The forgotten-username form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct EmailForm {
    email: String,
}

pub(super) async fn username_forgot_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Form(form): Form<EmailForm>,
) -> Response {
    if let Some(refusal) = mail_request_limited(&state, &csrf, &ip, "username_reminder") {
        return refusal;
    }
    if let Err(e) = state.core.request_username_reminder(&form.email).await {
        return internal(&state, &csrf, &e);
    }
    message(
        &state,
        StatusCode::OK,
        &csrf,
        "Check your e-mail",
        &["If accounts use this address, we sent their names to it."],
    )
}

async fn keys_view(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    user: &SessionUser,
    error: Option<&str>,
    key: &str,
) -> Response {
    match state.core.list_ssh_keys(&user.dn).await {
        Ok(keys) => state.render(
            status,
            "account_keys.html",
            context! { title => "Your SSH keys", csrf_token => csrf.0, user => user, keys => keys, error => error, key => key },
        ),
        Err(e) => internal(state, csrf, &e),
    }
}

pub(super) async fn keys_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    keys_view(&state, StatusCode::OK, &csrf, &user, None, "").await
}

/// The add-key form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct KeyForm {
    key: String,
    fingerprint: String,
}

pub(super) async fn keys_add(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Form(form): Form<KeyForm>,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    match state.core.add_ssh_key(&user.dn, &form.key).await {
        Ok(Ok(_)) => Redirect::to("/account/keys").into_response(),
        // A refused private key is not echoed back into the page.
        Ok(Err(message)) => {
            let echo = if form.key.contains("PRIVATE") {
                ""
            } else {
                form.key.as_str()
            };
            keys_view(
                &state,
                StatusCode::BAD_REQUEST,
                &csrf,
                &user,
                Some(&message),
                echo,
            )
            .await
        }
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn keys_delete(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Form(form): Form<KeyForm>,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    match state.core.remove_ssh_key(&user.dn, &form.fingerprint).await {
        Ok(_) => Redirect::to("/account/keys").into_response(),
        Err(e) => internal(&state, &csrf, &e),
    }
}

fn email_page(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    user: &SessionUser,
    email: &str,
    error: Option<String>,
) -> Response {
    let errors: BTreeMap<&str, Vec<String>> =
        error.map(|e| ("email", vec![e])).into_iter().collect();
    state.render(
        status,
        "account_email.html",
        context! { title => "Change your e-mail address", csrf_token => csrf.0, user => user, email => email, errors => errors },
    )
}

pub(super) async fn email_form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    email_page(&state, StatusCode::OK, &csrf, &user, "", None)
}

pub(super) async fn email_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    session: Session,
    Form(form): Form<EmailForm>,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    // Each request mails the address typed: limited per client and per account.
    if let Some(refusal) = mail_request_limited(&state, &csrf, &ip, "email_change") {
        return refusal;
    }
    if state
        .limits()
        .email_change_account
        .check_key(&user.uid)
        .is_err()
    {
        metrics::counter!("forge_idm_rate_limited_total", "what" => "email_change").increment(1);
        return email_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &csrf,
            &user,
            &form.email,
            Some("Too many address changes were asked for. Please try again in an hour.".into()),
        );
    }
    match state
        .core
        .request_email_change(&user.uid, &user.mail, &form.email)
        .await
    {
        Ok(Ok(())) => message(
            &state,
            StatusCode::OK,
            &csrf,
            "Check your new mailbox",
            &[
                "We sent a confirmation link to the new address. Your address changes when you open it.",
            ],
        ),
        Ok(Err(m)) => email_page(
            &state,
            StatusCode::BAD_REQUEST,
            &csrf,
            &user,
            &form.email,
            Some(m),
        ),
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn email_confirm_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Path(token): Path<String>,
) -> Response {
    match state.core.email_change_for_token(&token).await {
        Ok(Ok(crate::services::email::EmailChange {
            uid,
            new_email: email,
            ..
        })) => state.render(
            StatusCode::OK,
            "email_confirm.html",
            context! { title => "Confirm your new e-mail address", csrf_token => csrf.0, token => token, uid => uid, email => email },
        ),
        Ok(Err(e)) => token_error(&state, &csrf, e),
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn email_confirm_submit(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Path(token): Path<String>,
) -> Response {
    match state.core.confirm_email_change(&token).await {
        Ok(Ok((uid, email))) => {
            // Keep a logged-in session of this account up to date.
            if let Some(mut user) = current_user(&session).await
                && user.uid == uid
            {
                user.mail = email.clone();
                let _ = session.insert(USER_KEY, &user).await;
            }
            message(
                &state,
                StatusCode::OK,
                &csrf,
                "E-mail address changed",
                &["Your account now uses the new address."],
            )
        }
        Ok(Err(e)) => token_error(&state, &csrf, e),
        Err(e) => internal(&state, &csrf, &e),
    }
}

/// Query and form of the manager page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ManageForm {
    uid: String,
    reason: String,
}

async fn manage_view(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    user: &SessionUser,
    uid: &str,
    error: Option<String>,
) -> Response {
    let account = if uid.is_empty() {
        None
    } else {
        match state.core.managed_account(uid).await {
            Ok(a) => a,
            Err(e) => return internal(state, csrf, &e),
        }
    };
    let error = error
        .or_else(|| (!uid.is_empty() && account.is_none()).then(|| "No such account.".to_owned()));
    state.render(
        status,
        "manage.html",
        context! { title => "Manage accounts", csrf_token => csrf.0, user => user, uid => uid, account => account, error => error },
    )
}

async fn manager(
    state: &AppState,
    csrf: &CsrfToken,
    session: &Session,
) -> Result<SessionUser, Response> {
    let Some(user) = current_user(session).await else {
        return Err(Redirect::to("/login").into_response());
    };
    if !state.core.is_manager(&user.uid) {
        return Err(message(
            state,
            StatusCode::FORBIDDEN,
            csrf,
            "Not allowed",
            &["Only account managers may use this page."],
        ));
    }
    Ok(user)
}

pub(super) async fn manage_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Query(q): Query<ManageForm>,
) -> Response {
    let user = match manager(&state, &csrf, &session).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    manage_view(&state, StatusCode::OK, &csrf, &user, q.uid.trim(), None).await
}

async fn manage_set(
    state: AppState,
    csrf: CsrfToken,
    session: Session,
    form: ManageForm,
    block: bool,
) -> Response {
    let user = match manager(&state, &csrf, &session).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match state
        .core
        .set_blocked(&user.uid, form.uid.trim(), block, &form.reason)
        .await
    {
        Ok(Ok(())) => Redirect::to(&format!(
            "/manage?uid={}",
            url::form_urlencoded::byte_serialize(form.uid.trim().as_bytes()).collect::<String>()
        ))
        .into_response(),
        Ok(Err(m)) => {
            manage_view(
                &state,
                StatusCode::BAD_REQUEST,
                &csrf,
                &user,
                form.uid.trim(),
                Some(m),
            )
            .await
        }
        Err(e) => internal(&state, &csrf, &e),
    }
}

pub(super) async fn manage_block(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Form(form): Form<ManageForm>,
) -> Response {
    manage_set(state, csrf, session, form, true).await
}

pub(super) async fn manage_unblock(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Form(form): Form<ManageForm>,
) -> Response {
    manage_set(state, csrf, session, form, false).await
}

/// The token forms.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TokenForm {
    name: String,
    id: i64,
}

async fn tokens_view(
    state: &AppState,
    status: StatusCode,
    csrf: &CsrfToken,
    user: &SessionUser,
    secret: Option<String>,
) -> Response {
    match state.core.api_tokens.list(&user.uid).await {
        Ok(tokens) => state.render(
            status,
            "account_tokens.html",
            context! { title => "API tokens", csrf_token => csrf.0, user => user, tokens => tokens, secret => secret },
        ),
        Err(e) => internal(state, csrf, &e.into()),
    }
}

pub(super) async fn tokens_page(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    tokens_view(&state, StatusCode::OK, &csrf, &user, None).await
}

pub(super) async fn tokens_create(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Form(form): Form<TokenForm>,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    let name: String = form.name.trim().chars().take(100).collect();
    let name = if name.is_empty() {
        "token".to_owned()
    } else {
        name
    };
    match state.core.api_tokens.create(&user.uid, &name).await {
        Ok(secret) => tokens_view(&state, StatusCode::OK, &csrf, &user, Some(secret)).await,
        Err(e) => internal(&state, &csrf, &e.into()),
    }
}

pub(super) async fn tokens_revoke(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    session: Session,
    Form(form): Form<TokenForm>,
) -> Response {
    let Some(user) = current_user(&session).await else {
        return Redirect::to("/login").into_response();
    };
    match state.core.api_tokens.revoke(&user.uid, form.id).await {
        Ok(_) => Redirect::to("/account/tokens").into_response(),
        Err(e) => internal(&state, &csrf, &e.into()),
    }
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The account a bearer token belongs to.
async fn api_account(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<crate::directory::AccountRecord, Response> {
    let Some(secret) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(api_error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    let uid = match state.core.api_tokens.owner(secret.trim()).await {
        Ok(Some(uid)) => uid,
        Ok(None) => return Err(api_error(StatusCode::UNAUTHORIZED, "invalid token")),
        Err(e) => {
            tracing::error!(error = %e, "api token lookup failed");
            return Err(api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ));
        }
    };
    match state.core.directory.find_account(&uid).await {
        Ok(Some(a)) if a.uid == uid && a.locked => {
            Err(api_error(StatusCode::FORBIDDEN, "this account is blocked"))
        }
        Ok(Some(a)) if a.uid == uid => Ok(a),
        Ok(_) => Err(api_error(
            StatusCode::UNAUTHORIZED,
            "the token's account no longer exists",
        )),
        Err(_) => Err(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "try again later",
        )),
    }
}

pub(super) async fn api_me(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let account = match api_account(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match state.core.list_ssh_keys(&account.dn).await {
        Ok(keys) => Json(serde_json::json!({
            "uid": account.uid,
            "username": account.cn,
            "email": account.mail,
            "ssh_keys": keys,
        }))
        .into_response(),
        Err(_) => api_error(StatusCode::SERVICE_UNAVAILABLE, "try again later"),
    }
}

/// Body of `POST /api/v1/me/ssh-keys`.
#[derive(Debug, Deserialize)]
pub(super) struct ApiKey {
    key: String,
}

pub(super) async fn api_add_key(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let account = match api_account(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<ApiKey>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "expected {\"key\": \"ssh-ed25519 AAAA… comment\"}",
        );
    };
    match state.core.add_ssh_key(&account.dn, &req.key).await {
        Ok(Ok(view)) => (StatusCode::CREATED, Json(view)).into_response(),
        Ok(Err(m)) => api_error(StatusCode::BAD_REQUEST, &m),
        Err(_) => api_error(StatusCode::SERVICE_UNAVAILABLE, "try again later"),
    }
}
