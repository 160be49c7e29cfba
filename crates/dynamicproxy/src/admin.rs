//! The admin listener: forge-core's `/healthz`, `/status`, `/metrics` and
//! `/log-filter`, plus `/list`.
//!
//! `GET /list` answers today's document, `{"<tool>": {"status": "active"}}`
//! for every `prefix:<tool>` key, built from the in-memory table (no Redis
//! command, no `KEYS`). `GET /list?backends=1` adds each tool's routes in
//! match order and any entries that were ignored; since that maps every
//! tool's backend address, it needs the admin token
//! ([`forge_core::StatusBoard::authorize`]), while plain `/list` (what
//! webservicemonitor reads) stays open.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use forge_core::StatusBoard;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::metrics::Metrics;
use crate::sync::{SyncStatus, report};
use crate::table::Routes;

#[derive(Clone)]
struct AdminState {
    routes: Arc<Routes>,
    status: Arc<SyncStatus>,
    board: Arc<StatusBoard>,
    metrics: Metrics,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    backends: Option<String>,
}

/// The admin router.
pub fn router(
    board: Arc<StatusBoard>,
    routes: Arc<Routes>,
    status: Arc<SyncStatus>,
    metrics: Metrics,
) -> Router {
    let state = AdminState {
        routes,
        status,
        board: board.clone(),
        metrics,
    };
    // Refresh the table age before health and metrics are read.
    let refresh = state.clone();
    let refresh = axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let s = refresh.clone();
            async move {
                report(&s.status, &s.board, &s.metrics, &s.routes);
                next.run(req).await
            }
        },
    );
    forge_core::admin::router(board)
        .merge(Router::new().route("/list", get(list)).with_state(state))
        .layer(refresh)
}

async fn list(
    State(s): State<AdminState>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let with_backends = q
        .backends
        .as_deref()
        .is_some_and(|v| !matches!(v, "" | "0" | "false" | "no"));
    if with_backends && let Err(refusal) = s.board.authorize(&headers) {
        tracing::warn!("GET /list?backends=1 refused: no valid admin token");
        return refusal;
    }
    let table = s.routes.load_full();
    let mut out = Map::new();
    for (tool, routes) in table.tools_sorted() {
        let mut entry = Map::new();
        entry.insert("status".into(), "active".into());
        if with_backends {
            let list: Vec<Value> = routes
                .routes
                .iter()
                .map(|r| json!({"pattern": r.pattern.as_str(), "backend": r.backend.url.as_str()}))
                .collect();
            entry.insert("routes".into(), Value::Array(list));
            if !routes.invalid.is_empty() {
                entry.insert("invalid".into(), json!(routes.invalid));
            }
        }
        out.insert(tool.to_owned(), Value::Object(entry));
    }
    axum::Json(Value::Object(out)).into_response()
}
