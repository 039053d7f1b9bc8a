//! The relay's endpoints: `/metrics` (Prometheus text), `/health` (readiness: 503 with the
//! reasons when a check fails), `/live` (liveness) and `/status` (JSON; `txoutbox status` reads
//! the daemon's).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use txoutbox_core::coordination::Scope;

use crate::state::RouteState;

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<RouteState>>) -> Response {
    let Some(prometheus) = &state.prometheus else {
        return (StatusCode::NOT_FOUND, "no metrics recorder\n").into_response();
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        prometheus.render(),
    )
        .into_response()
}

/// `GET /health`: the latest report, 503 when unhealthy or before the first check.
pub(crate) async fn health(State(state): State<Arc<RouteState>>) -> Response {
    match state.reports.latest() {
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

/// `GET /live`: 200 while the relay runs.
pub(crate) async fn live(State(state): State<Arc<RouteState>>) -> Response {
    if state.monitor.is_running() {
        (StatusCode::OK, "live\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the relay is not running\n").into_response()
    }
}

/// `GET /status`: the relay's counters, rate, health and coordination, and the extra fields of
/// [`Reports::set_status`](crate::Reports::set_status).
pub(crate) async fn status(State(state): State<Arc<RouteState>>) -> Response {
    let mut status = serde_json::json!({
        "running": state.monitor.is_running(),
        "standby": state.monitor.is_standing_by(),
        "table": state.monitor.metric_labels().get(txoutbox_core::MetricLabels::TABLE),
        "published_total": state.monitor.published(),
        "dead_lettered_total": state.monitor.dead_lettered(),
        "publish_rate_per_second": state
            .published
            .rate(Duration::from_secs(60), tokio::time::Instant::now(), state.monitor.published())
            .unwrap_or(0.0),
        "last_delivery": state.monitor.last_delivery(),
        "health": state.reports.latest(),
        "coordination": state.ownership.as_ref().map(|o| {
            let (applied, fenced) = o.write_counts();
            serde_json::json!({
                "node": o.node(),
                "epoch": o.epoch(),
                "scope": scope_json(&o.scope()),
                "draining": o.draining_buckets(),
                "rows_applied": applied,
                "rows_fenced": fenced,
            })
        }),
    });
    if let Some(fields) = status.as_object_mut() {
        fields.extend(state.reports.status_fields());
    }
    axum::Json(status).into_response()
}

/// A coordinated relay's scope as JSON: `"nothing"`, `"all"` or its buckets.
pub(crate) fn scope_json(scope: &Scope) -> serde_json::Value {
    match scope {
        Scope::Nothing => serde_json::json!("nothing"),
        Scope::All => serde_json::json!("all"),
        Scope::Buckets(buckets) => serde_json::json!(buckets),
    }
}
