//! The console's read endpoints (JSON). None reads the whole table per request: see the module
//! documentation of [`crate::ui`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use txoutbox_core::coordination::EXCLUSIVE_LEASE;
use txoutbox_core::{DeadLetter, DeadLetterFilter};

use super::console::Console;
use super::hardened::hardened;
use super::inbox_api::inbox_table;
use crate::endpoints::scope_json;
use crate::state::RouteState;

/// Most dead letters one list returns.
pub(super) const MAX_LIST: usize = 500;

/// Most payload bytes shown.
const MAX_PAYLOAD: usize = 64 * 1024;

/// A JSON answer with the console's headers.
pub(super) fn reply(code: StatusCode, body: Value) -> Response {
    hardened("application/json", (code, body.to_string()))
}

/// An error answer: `{"error": message}`.
pub(super) fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    reply(code, json!({ "error": message.into() }))
}

/// The answer when the console is off.
pub(super) fn off() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "the console is off (the daemon: start the relay with --ui)",
    )
}

/// Query of the overview.
#[derive(Debug, Deserialize)]
pub(super) struct OverviewQuery {
    /// Chart window, in minutes (1 to 15).
    minutes: Option<u64>,
}

/// `GET /ui/api/overview`: backlog, health, relay, per-topic statistics (cached), the charts'
/// timeline and the coordination leases.
pub(super) async fn overview(
    State(state): State<Arc<RouteState>>,
    Query(query): Query<OverviewQuery>,
) -> Response {
    let Some(console) = state.console.as_ref() else {
        return off();
    };
    let minutes = query.minutes.unwrap_or(5).clamp(1, 15);
    let samples = console.timeline.last(Duration::from_secs(minutes * 60));
    let series = json!({
        "minutes": minutes,
        "t": samples.iter().map(|s| s.at.timestamp_millis()).collect::<Vec<_>>(),
        "rate": samples.iter().map(|s| (s.rate * 10.0).round() / 10.0).collect::<Vec<_>>(),
        "latency_avg_ms": samples.iter().map(|s| s.latency_avg_ms.map(round2)).collect::<Vec<_>>(),
        "latency_p99_ms": samples.iter().map(|s| s.latency_p99_ms.map(round2)).collect::<Vec<_>>(),
        "pending": samples.iter().map(|s| s.pending).collect::<Vec<_>>(),
    });
    let health = state.reports.latest();
    let topics = Console::topic_stats(&state, console);
    let coordination = coordination(&state, console).await;
    reply(
        StatusCode::OK,
        json!({
            "now": Utc::now(),
            "table": console.store.table(),
            // Where the relay publishes, as the daemon reports it in /status (no credentials).
            "sink": state.reports.status_fields().get("sink").cloned().unwrap_or(Value::Null),
            "inbox": inbox_table(console.inbox.as_ref()),
            "read_only": console.read_only(),
            "show_payloads": console.show_payloads,
            "relay": {
                "running": state.monitor.is_running(),
                "published_total": state.monitor.published(),
                "dead_lettered_total": state.monitor.dead_lettered(),
                "last_delivery": state.monitor.last_delivery(),
            },
            "health": health,
            "topics": topics,
            "series": series,
            "coordination": coordination,
        }),
    )
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// This node's coordination and every lease, grouped by owner (one small-table query).
async fn coordination(state: &RouteState, console: &Console) -> Value {
    let Some(ownership) = state.ownership.as_ref() else {
        return json!({ "mode": state.mode });
    };
    let leases = console.store.leases().await;
    let now = Utc::now();
    let (nodes, free, error) = match leases {
        Ok(leases) => {
            let mut nodes: BTreeMap<String, (Vec<i32>, Option<chrono::DateTime<Utc>>)> = BTreeMap::new();
            let mut free = Vec::new();
            for lease in leases {
                match (lease.owner, lease.lease_until) {
                    (Some(owner), Some(until)) if until > now => {
                        let entry = nodes.entry(owner).or_default();
                        entry.0.push(lease.bucket);
                        entry.1 = entry.1.max(Some(until));
                    }
                    _ if lease.bucket != EXCLUSIVE_LEASE => free.push(lease.bucket),
                    _ => {}
                }
            }
            let nodes: Vec<Value> = nodes
                .into_iter()
                .map(|(node, (mut buckets, until))| {
                    buckets.sort_unstable();
                    let whole_table = buckets.contains(&EXCLUSIVE_LEASE);
                    buckets.retain(|b| *b != EXCLUSIVE_LEASE);
                    json!({ "node": node, "buckets": buckets, "whole_table": whole_table, "lease_until": until })
                })
                .collect();
            free.sort_unstable();
            (nodes, free, None)
        }
        Err(e) => (Vec::new(), Vec::new(), Some(e.to_string())),
    };
    json!({
        "mode": state.mode,
        "this_node": ownership.node(),
        "epoch": ownership.epoch(),
        "scope": scope_json(&ownership.scope()),
        "draining": ownership.draining_buckets(),
        "nodes": nodes,
        "free_buckets": free,
        "error": error,
    })
}

/// Which dead letters a view or an action means; every field narrows.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Selection {
    /// Only this topic.
    pub topic: Option<String>,
    /// Only this row id.
    pub id: Option<i64>,
    /// Only rows older than this, e.g. `1h`.
    pub older_than: Option<String>,
    /// At most this many listed (views only).
    pub limit: Option<usize>,
}

impl Selection {
    /// The store's filter; an error names the bad field.
    pub(super) fn filter(&self) -> Result<DeadLetterFilter, String> {
        let mut filter = DeadLetterFilter::all();
        if let Some(topic) = self.topic.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            filter = filter.topic(topic);
        }
        if let Some(id) = self.id {
            filter = filter.ids(id..=id);
        }
        if let Some(age) = self
            .older_than
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let age = humantime::parse_duration(age)
                .map_err(|e| format!("`{age}` is not a duration ({e}); write e.g. 500ms, 30s, 5m, 7d"))?;
            filter = filter.created_before(txoutbox_core::ago(age));
        }
        Ok(filter)
    }
}

/// `GET /ui/api/dead-letters?topic=&older_than=&limit=`: the oldest matching dead letters (by the
/// dead partial index), without payloads.
pub(super) async fn dead_letters(
    State(state): State<Arc<RouteState>>,
    Query(selection): Query<Selection>,
) -> Response {
    let Some(console) = state.console.as_ref() else {
        return off();
    };
    let filter = match selection.filter() {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
    };
    let limit = selection.limit.unwrap_or(100).clamp(1, MAX_LIST);
    // One more than shown, to tell whether there are more.
    let listed = console.store.list_dead(&filter, limit + 1).await;
    list_reply(listed, limit, "dead letters", |rows, more| {
        json!({
            "table": console.store.table(),
            "inbox": inbox_table(console.inbox.as_ref()),
            "read_only": console.read_only(),
            "show_payloads": console.show_payloads,
            "limit": limit,
            "more": more,
            "rows": rows.iter().map(to_json).collect::<Vec<_>>(),
        })
    })
}

/// A list's answer: `listed` holds up to `limit + 1` rows, the extra one only saying that there
/// are more; `body` makes the JSON of the rows shown. A failed read answers 503, naming `what`.
pub(super) fn list_reply<T>(
    listed: txoutbox_core::Result<Vec<T>>,
    limit: usize,
    what: &str,
    body: impl FnOnce(Vec<T>, bool) -> Value,
) -> Response {
    match listed {
        Ok(mut rows) => {
            let more = rows.len() > limit;
            rows.truncate(limit);
            reply(StatusCode::OK, body(rows, more))
        }
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot list {what}: {e}"),
        ),
    }
}

fn to_json(dead: &DeadLetter) -> Value {
    json!({
        "id": dead.id,
        "message_id": dead.message_id,
        "topic": dead.topic,
        "key": dead.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "headers": dead.headers.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "payload_bytes": dead.payload_len,
        "created_at": dead.created_at,
        "attempts": dead.attempts,
        "last_error": dead.last_error,
    })
}

/// `GET /ui/api/dead-letters/{id}/payload`: one dead letter's payload (by primary key), only with
/// payloads shown (`--ui-show-payloads`); at most 64 KiB, as text.
pub(super) async fn payload(State(state): State<Arc<RouteState>>, Path(id): Path<i64>) -> Response {
    let Some(console) = state.console.as_ref() else {
        return off();
    };
    if !console.show_payloads {
        return refuse(
            StatusCode::FORBIDDEN,
            "payloads are hidden (the daemon: start the relay with --ui-show-payloads to show them)",
        );
    }
    // Cut by the database: a dead letter of many megabytes never leaves it whole.
    let found = console.store.dead_payload(id, MAX_PAYLOAD).await;
    match found {
        Ok(Some(payload)) => {
            let shown = payload.head.unwrap_or_default();
            reply(
                StatusCode::OK,
                json!({
                    "id": id,
                    "bytes": payload.len,
                    "truncated": payload.len > shown.len() as u64,
                    "text": String::from_utf8_lossy(&shown),
                }),
            )
        }
        Ok(None) => refuse(StatusCode::NOT_FOUND, format!("no dead letter with id {id}")),
        Err(e) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the payload: {e}"),
        ),
    }
}
