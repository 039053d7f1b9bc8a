//! The web console at `/ui` (`txoutbox relay --ui`, or
//! [`RelayRoutes::console`](crate::RelayRoutes::console)): an overview of the backlog with charts,
//! the dead letters with replay and purge, and optionally a consumer inbox's parked records. See
//! docs/operations.md, "Web console".
//!
//! Everything it needs is compiled in (one HTML page, one script, one style sheet). The read
//! views use what the routes already measure (the health check's indexed backlog query, the
//! per-second timeline) plus two bounded queries: the per-topic statistics, cached and refreshed
//! at most every [`TOPIC_STATS_EVERY`](topic_stats::TOPIC_STATS_EVERY) while someone looks, and
//! `list_dead` with a limit. Actions need the configured bearer token in an `Authorization`
//! header and a same-origin request.

mod actions;
mod api;
pub(crate) mod console;
mod console_store;
mod hardened;
mod inbox_api;
mod inbox_store;
mod sampler;
mod topic_stats;

pub use console::{Console, MIN_TOKEN_LEN};
pub use console_store::{BoxFuture, ConsoleStore};
pub use inbox_store::{InboxConsoleStore, ParkedInboxRecord};

use std::sync::Arc;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, post};

use crate::state::RouteState;
use hardened::hardened;

const PAGE: &str = include_str!("../../assets/console.html");
const SCRIPT: &str = include_str!("../../assets/console.js");
const STYLE: &str = include_str!("../../assets/console.css");

/// The console's routes.
pub(crate) fn routes() -> Router<Arc<RouteState>> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/dead-letters", get(page))
        .route("/ui/inbox", get(page))
        .route("/ui/assets/console.js", get(script))
        .route("/ui/assets/console.css", get(style))
        .route("/ui/api/overview", get(api::overview))
        .route("/ui/api/dead-letters", get(api::dead_letters))
        .route("/ui/api/dead-letters/{id}/payload", get(api::payload))
        .route("/ui/api/dead-letters/replay", post(actions::replay))
        .route("/ui/api/dead-letters/purge", post(actions::purge))
        .route("/ui/api/inbox/parked", get(inbox_api::parked))
        .route("/ui/api/inbox/replay", post(inbox_api::replay))
        .route("/ui/api/inbox/purge", post(inbox_api::purge))
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
