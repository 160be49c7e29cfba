//! The admin HTTP endpoint every daemon serves: health, status, metrics and
//! the run-time log filter.
//!
//! * `GET /healthz` — 200 when every check is `ok` or `degraded`, 503 when one
//!   is `failing`; JSON body with each check and its detail.
//! * `GET /status` — JSON: daemon, version, config generation, start time, and
//!   daemon-specific fields (role, the Redis master it sees, …). `forgectl
//!   status` reads this from every host.
//! * `GET /metrics` — Prometheus text format.
//! * `GET /log-filter`, `PUT /log-filter` (body: an `EnvFilter` directive).
//!
//! Anyone who reaches the admin listener may read; changing a daemon (`PUT
//! /log-filter`) or reading what only operators should see (dynamicproxy's
//! backend addresses) needs the admin token: `Authorization: Bearer <token>`
//! where the token is the content of a file ([`AdminToken::from_file`],
//! installed with [`install_admin_token`]). Without a token file such
//! requests are refused. [`StatusBoard::authorize`] is the one check, so a
//! daemon's own guarded routes answer exactly like these. Everything
//! `/status` and `/healthz` show passes through [`crate::redact`].
//!
//! A daemon owns a [`StatusBoard`], updates its checks and fields as things
//! happen, and merges [`router`] into its own admin router (dynamicproxy adds
//! `/list`, for instance).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::lifecycle::Shutdown;
use crate::telemetry::{LogControl, metrics_handle};

/// State of one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    /// Working.
    Ok,
    /// Working with reduced guarantees (e.g. serving a stale route table).
    Degraded,
    /// Not working; `/healthz` answers 503.
    Failing,
}

/// One named check as reported by `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Its state.
    pub state: CheckState,
    /// A human-readable detail.
    pub detail: String,
}

/// What a daemon reports about itself; shared by its tasks.
#[derive(Debug)]
pub struct StatusBoard {
    /// The daemon's name (`dynamicproxy`, …).
    pub daemon: &'static str,
    /// The daemon's version.
    pub version: &'static str,
    started: SystemTime,
    inner: RwLock<BoardInner>,
    log: RwLock<Option<LogControl>>,
    token: RwLock<Option<AdminToken>>,
}

/// The secret that guards changing admin endpoints, read from a file.
///
/// Its `Debug` never shows it; [`AdminToken::matches`] compares in constant
/// time.
#[derive(Clone)]
pub struct AdminToken {
    secret: Vec<u8>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Why the admin token file can't be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The file can't be read.
    #[error("admin token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("admin token file {path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The token is too short to resist guessing.
    #[error("admin token in {path} is {len} bytes; it must be at least {min}")]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
}

impl AdminToken {
    /// The shortest token accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// Reads the token from `path` (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, AdminTokenError> {
        let text = std::fs::read(path).map_err(|source| AdminTokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        let secret = text.trim_ascii();
        if secret.is_empty() {
            return Err(AdminTokenError::Empty {
                path: path.to_owned(),
            });
        }
        if secret.len() < Self::MIN_LEN {
            return Err(AdminTokenError::TooShort {
                path: path.to_owned(),
                len: secret.len(),
                min: Self::MIN_LEN,
            });
        }
        Ok(AdminToken {
            secret: secret.to_vec(),
        })
    }

    /// Whether `presented` is this token (constant time in its content).
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.secret.as_slice().ct_eq(presented))
    }
}

/// Reads the token file at `path` (if any) and installs it on `board`; says
/// at start-up which endpoints are refused when there is none.
pub fn install_admin_token(
    board: &StatusBoard,
    path: Option<&Path>,
) -> Result<(), AdminTokenError> {
    let token = path.map(AdminToken::from_file).transpose()?;
    match path {
        Some(p) => tracing::info!(
            file = %p.display(),
            "admin token loaded: changing admin endpoints need it"
        ),
        None => tracing::warn!(
            "no admin token file configured: changing admin endpoints (PUT /log-filter, \
             backend listings) are refused"
        ),
    }
    board.set_admin_token(token);
    Ok(())
}

#[derive(Debug, Default)]
struct BoardInner {
    generation: String,
    checks: BTreeMap<String, Check>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl StatusBoard {
    /// A board for `daemon` at `version` running config `generation`.
    ///
    /// Also installs the process's Prometheus recorder, so metrics recorded
    /// before the first scrape of `/metrics` are kept.
    pub fn new(daemon: &'static str, version: &'static str, generation: &str) -> Arc<Self> {
        metrics_handle();
        Arc::new(StatusBoard {
            daemon,
            version,
            started: SystemTime::now(),
            inner: RwLock::new(BoardInner {
                generation: generation.to_owned(),
                ..Default::default()
            }),
            log: RwLock::new(None),
            token: RwLock::new(None),
        })
    }

    /// Sets (or clears) the admin token guarding changing endpoints.
    pub fn set_admin_token(&self, token: Option<AdminToken>) {
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
    }

    /// Checks a request's `Authorization: Bearer <token>` against the admin
    /// token; the refusal is the response to send: `401` without a token,
    /// `403` with a wrong one or when none is configured.
    #[allow(clippy::result_large_err)]
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), Response> {
        let token = self.token.read().ok().and_then(|t| t.clone());
        let Some(token) = token else {
            return Err((
                StatusCode::FORBIDDEN,
                "refused: this daemon has no admin token configured, so it accepts no \
                 changing or privileged admin requests (set its admin token file)\n",
            )
                .into_response());
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| {
                v.get(..7)
                    .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
                    .map(|_| v[7..].trim_ascii())
            });
        match presented {
            None => Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"forge-admin\"")],
                "unauthorized: send `Authorization: Bearer <admin token>`\n",
            )
                .into_response()),
            Some(p) if token.matches(p) => Ok(()),
            Some(_) => Err((
                StatusCode::FORBIDDEN,
                "forbidden: the admin token does not match\n",
            )
                .into_response()),
        }
    }

    /// Records a new config generation (after a reload).
    pub fn set_generation(&self, generation: &str) {
        if let Ok(mut i) = self.inner.write() {
            i.generation = generation.to_owned();
        }
    }

    /// The config generation in force.
    pub fn generation(&self) -> String {
        self.inner
            .read()
            .map(|i| i.generation.clone())
            .unwrap_or_default()
    }

    /// Sets a health check.
    pub fn set_check(&self, name: &str, state: CheckState, detail: impl Into<String>) {
        if let Ok(mut i) = self.inner.write() {
            i.checks.insert(
                name.to_owned(),
                Check {
                    state,
                    detail: detail.into(),
                },
            );
        }
    }

    /// Sets a daemon-specific status field.
    pub fn set_field(&self, name: &str, value: impl Into<serde_json::Value>) {
        if let Ok(mut i) = self.inner.write() {
            i.fields.insert(name.to_owned(), value.into());
        }
    }

    /// Lets `/log-filter` change the process's log filter.
    pub fn set_log_control(&self, log: LogControl) {
        if let Ok(mut l) = self.log.write() {
            *l = Some(log);
        }
    }

    /// The worst state of all checks (`Ok` without checks).
    pub fn overall(&self) -> CheckState {
        let i = match self.inner.read() {
            Ok(i) => i,
            Err(_) => return CheckState::Failing,
        };
        if i.checks.values().any(|c| c.state == CheckState::Failing) {
            CheckState::Failing
        } else if i.checks.values().any(|c| c.state == CheckState::Degraded) {
            CheckState::Degraded
        } else {
            CheckState::Ok
        }
    }

    /// The `/healthz` document.
    pub fn health_json(&self) -> serde_json::Value {
        let checks = self
            .inner
            .read()
            .map(|i| serde_json::to_value(&i.checks).unwrap_or_default())
            .unwrap_or_default();
        let mut doc = serde_json::json!({
            "status": self.overall(),
            "daemon": self.daemon,
            "checks": checks,
        });
        crate::redact::redact_json(&mut doc);
        doc
    }

    /// The `/status` document.
    pub fn status_json(&self) -> serde_json::Value {
        let (generation, fields, checks) = match self.inner.read() {
            Ok(i) => (
                i.generation.clone(),
                i.fields.clone(),
                serde_json::to_value(&i.checks).unwrap_or_default(),
            ),
            Err(_) => Default::default(),
        };
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let mut doc = serde_json::json!({
            "daemon": self.daemon,
            "version": self.version,
            "config_generation": generation,
            "started_at": started,
            "hostname": host,
            "pid": std::process::id(),
            "health": self.overall(),
            "checks": checks,
        });
        if let Some(obj) = doc.as_object_mut() {
            obj.extend(fields);
        }
        crate::redact::redact_json(&mut doc);
        doc
    }
}

/// The admin routes for `board`; merge a daemon's own routes into it.
pub fn router(board: Arc<StatusBoard>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/log-filter", get(get_log_filter).put(put_log_filter))
        .with_state(board)
}

async fn healthz(State(board): State<Arc<StatusBoard>>) -> Response {
    let code = match board.overall() {
        CheckState::Failing => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (code, axum::Json(board.health_json())).into_response()
}

async fn status(State(board): State<Arc<StatusBoard>>) -> Response {
    axum::Json(board.status_json()).into_response()
}

async fn metrics() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
        .into_response()
}

async fn get_log_filter(State(board): State<Arc<StatusBoard>>) -> Response {
    match board.log.read().ok().and_then(|l| l.clone()) {
        Some(l) => (StatusCode::OK, format!("{}\n", l.filter())).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "logging is not controlled by this process\n",
        )
            .into_response(),
    }
}

async fn put_log_filter(
    State(board): State<Arc<StatusBoard>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(refusal) = board.authorize(&headers) {
        tracing::warn!("PUT /log-filter refused: no valid admin token");
        return refusal;
    }
    let Some(log) = board.log.read().ok().and_then(|l| l.clone()) else {
        return (
            StatusCode::NOT_FOUND,
            "logging is not controlled by this process\n",
        )
            .into_response();
    };
    match log.set_filter(body.trim()) {
        Ok(()) => (StatusCode::OK, format!("log filter now {}\n", body.trim())).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// Serves `router` on an already-bound listener until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.triggered().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_is_the_worst_check() {
        let b = StatusBoard::new("test", "0.0.0", "abc");
        assert_eq!(b.overall(), CheckState::Ok);
        b.set_check("redis", CheckState::Degraded, "stale 5s");
        assert_eq!(b.overall(), CheckState::Degraded);
        b.set_check("db", CheckState::Failing, "down");
        assert_eq!(b.overall(), CheckState::Failing);
        b.set_field("redis_master", "127.0.0.1:6379");
        let s = b.status_json();
        assert_eq!(s["config_generation"], "abc");
        assert_eq!(s["redis_master"], "127.0.0.1:6379");
        assert_eq!(s["checks"]["redis"]["state"], "degraded");
    }
}
