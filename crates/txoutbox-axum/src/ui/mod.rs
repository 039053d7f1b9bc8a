//! The web console at `/ui` (`txoutbox relay --ui`, or [`RelayRoutes::console`](crate::RelayRoutes::console)):
//! an overview of the backlog with charts, and the dead letters with replay and purge. See
//! docs/operations.md, "Web console".
//!
//! Everything it needs is compiled in (one HTML page, one script, one style sheet). The read
//! views use what the routes already measure (the health check's indexed backlog query, the
//! per-second timeline) plus two bounded queries: the per-topic statistics, cached and refreshed
//! at most every [`TOPIC_STATS_EVERY`] while someone looks, and `list_dead` with a limit. Actions
//! need the configured bearer token in an `Authorization` header and a same-origin request.

mod actions;
mod api;
mod console;
mod console_store;

pub use console::{Console, MIN_TOKEN_LEN};
pub use console_store::{BoxFuture, ConsoleStore};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use tokio::time::Instant;
use tracing::warn;

use crate::history::{Histogram, Sample};
use crate::state::RouteState;
use console::Last;

/// How often, at most, the per-topic statistics (a scan of the table) are recomputed, and only
/// while a console asks for them.
pub(crate) const TOPIC_STATS_EVERY: Duration = Duration::from_secs(30);

const PAGE: &str = include_str!("../../assets/console.html");
const SCRIPT: &str = include_str!("../../assets/console.js");
const STYLE: &str = include_str!("../../assets/console.css");

impl Console {
    /// Takes this second's sample: publish rate, latency from the delivery-latency histogram,
    /// and the pending count of the latest health check. Called every second by the routes'
    /// sampler.
    pub(crate) fn record_second(&self, state: &RouteState, now: Instant) {
        let published = state.monitor.published();
        // This relay's series only: other relays of the process have other labels.
        let latency = state.prometheus.as_ref().and_then(|prometheus| {
            Histogram::from_prometheus(
                &prometheus.render(),
                txoutbox_core::metrics::DELIVERY_LATENCY,
                state.monitor.metric_labels().pairs(),
            )
        });
        let pending = state.reports.latest().and_then(|h| h.backlog).map(|b| b.pending);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = last.as_ref() {
            let elapsed = now.duration_since(previous.at).as_secs_f64();
            let rate = if elapsed > 0.0 {
                published.saturating_sub(previous.published) as f64 / elapsed
            } else {
                0.0
            };
            let observed = match (&latency, &previous.latency) {
                (Some(now), Some(before)) => now.since(before, 0.99),
                (Some(now), None) => now.since(&Histogram::default(), 0.99),
                _ => None,
            };
            self.timeline.push(Sample {
                at: Utc::now(),
                rate,
                latency_avg_ms: observed.map(|(mean, _)| mean * 1e3),
                latency_p99_ms: observed.map(|(_, p99)| p99 * 1e3),
                pending,
            });
        }
        *last = Some(Last {
            at: now,
            published,
            latency,
        });
    }

    /// The cached per-topic statistics, and starts a refresh in the background when they are
    /// older than [`TOPIC_STATS_EVERY`] (one at a time).
    fn topic_stats(state: &Arc<RouteState>, console: &Self) -> serde_json::Value {
        let mut cache = console.topics.lock().unwrap_or_else(|p| p.into_inner());
        let stale = cache.started.is_none_or(|at| at.elapsed() >= TOPIC_STATS_EVERY);
        if stale && !cache.refreshing {
            cache.refreshing = true;
            cache.started = Some(Instant::now());
            let state = Arc::clone(state);
            tokio::spawn(async move {
                let Some(console) = state.console.as_ref() else {
                    return;
                };
                let outcome = console.store.topic_stats().await;
                let mut cache = console.topics.lock().unwrap_or_else(|p| p.into_inner());
                cache.refreshing = false;
                match outcome {
                    Ok(rows) => {
                        cache.rows = Some((Utc::now(), rows));
                        cache.error = None;
                    }
                    Err(e) => {
                        warn!(error = %e, "the console could not read the per-topic statistics");
                        cache.error = Some(e.to_string());
                    }
                }
            });
        }
        serde_json::json!({
            "as_of": cache.rows.as_ref().map(|(at, _)| at),
            "refresh_seconds": TOPIC_STATS_EVERY.as_secs(),
            "refreshing": cache.refreshing,
            "error": cache.error,
            "rows": cache.rows.as_ref().map_or(&[][..], |(_, rows)| rows.as_slice()),
        })
    }
}

/// The console's routes.
pub(crate) fn routes() -> Router<Arc<RouteState>> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/dead-letters", get(page))
        .route("/ui/assets/console.js", get(script))
        .route("/ui/assets/console.css", get(style))
        .route("/ui/api/overview", get(api::overview))
        .route("/ui/api/dead-letters", get(api::dead_letters))
        .route("/ui/api/dead-letters/{id}/payload", get(api::payload))
        .route("/ui/api/dead-letters/replay", post(actions::replay))
        .route("/ui/api/dead-letters/purge", post(actions::purge))
}

/// Headers of every console response: no framing, no sniffing, nothing loaded from elsewhere.
fn hardened(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page, its links under the path the router is nested at (if any).
async fn page(OriginalUri(original): OriginalUri, uri: Uri) -> Response {
    let prefix = original
        .path()
        .strip_suffix(uri.path())
        .filter(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        })
        .unwrap_or_default();
    if prefix.is_empty() {
        return hardened("text/html; charset=utf-8", PAGE);
    }
    let page = PAGE
        .replace("href=\"/ui", &format!("href=\"{prefix}/ui"))
        .replace("src=\"/ui", &format!("src=\"{prefix}/ui"));
    hardened("text/html; charset=utf-8", page)
}

async fn script() -> Response {
    hardened("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    hardened("text/css; charset=utf-8", STYLE)
}
