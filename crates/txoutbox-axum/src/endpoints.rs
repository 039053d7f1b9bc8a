//! The daemon's HTTP endpoints: `/metrics` (Prometheus text), `/health` (readiness: 503 with the
//! reasons when a check fails), `/live` (liveness) and `/status` (JSON for `txoutbox status`);
//! with `--ui`, the web console under `/ui` (see [`crate::ui`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use txoutbox_core::HealthReport;
use txoutbox_core::coordination::Scope;

use crate::app_state::AppState;

/// The routes, every one behind the [`guard`](crate::guard::guard).
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let mut routes = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/live", get(live))
        .route("/status", get(status));
    if state.console.is_some() {
        routes = routes.merge(crate::ui::routes());
    }
    routes
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(state.allowed_hosts.clone()),
            crate::guard::guard,
        ))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.prometheus.render(),
    )
        .into_response()
}

fn latest(state: &AppState) -> Option<HealthReport> {
    state.health.read().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match latest(&state) {
        Some(report) => {
            let code = if report.healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, axum::Json(report)).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"healthy": false, "reasons": ["starting: no check has run yet"]})),
        )
            .into_response(),
    }
}

async fn live(State(state): State<Arc<AppState>>) -> Response {
    if state.monitor.is_running() {
        (StatusCode::OK, "live\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the relay is not running\n").into_response()
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(serde_json::json!({
        "running": state.monitor.is_running(),
        "published_total": state.monitor.published(),
        "dead_lettered_total": state.monitor.dead_lettered(),
        "publish_rate_per_second": state
            .published
            .rate(Duration::from_secs(60), tokio::time::Instant::now(), state.monitor.published())
            .unwrap_or(0.0),
        "last_delivery": state.monitor.last_delivery(),
        "health": latest(&state),
        "wal_slot": state.wal_slot.read().unwrap_or_else(|p| p.into_inner()).clone(),
        "coordination": state.ownership.as_ref().map(|o| {
            let (applied, fenced) = o.write_counts();
            serde_json::json!({
                "node": o.node(),
                "epoch": o.epoch(),
                "scope": match o.scope() {
                    Scope::Nothing => serde_json::json!("nothing"),
                    Scope::All => serde_json::json!("all"),
                    Scope::Buckets(buckets) => serde_json::json!(buckets),
                },
                "draining": o.draining_buckets(),
                "rows_applied": applied,
                "rows_fenced": fenced,
            })
        }),
    }))
    .into_response()
}
