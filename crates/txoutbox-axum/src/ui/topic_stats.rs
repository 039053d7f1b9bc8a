//! The console's per-topic statistics: a scan of the table, cached and refreshed in the
//! background at most every [`TOPIC_STATS_EVERY`], only while someone looks.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tracing::warn;

use super::console::Console;
use crate::state::RouteState;

/// How often, at most, the per-topic statistics (a scan of the table) are recomputed, and only
/// while a console asks for them.
pub(crate) const TOPIC_STATS_EVERY: Duration = Duration::from_secs(30);

impl Console {
    /// The cached per-topic statistics, and starts a refresh in the background when they are
    /// older than [`TOPIC_STATS_EVERY`] (one at a time).
    pub(super) fn topic_stats(state: &Arc<RouteState>, console: &Self) -> serde_json::Value {
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
