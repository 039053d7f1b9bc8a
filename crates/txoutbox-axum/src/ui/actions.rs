//! The console's actions: replay and purge dead letters (and, in [`super::inbox_api`], parked
//! inbox records). Each one needs the configured bearer
//! token in an `Authorization` header (which a cross-site form or image can never send, and a
//! cross-site script only after a CORS preflight that is never granted), a JSON body, and no
//! cross-site `Origin` or `Sec-Fetch-Site`. Every attempt is logged, without the token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};
use txoutbox_core::DeadLetterFilter;

use super::api::{Selection, off, refuse, reply};
use super::console::Console;
use crate::state::RouteState;

/// Largest accepted request body.
const MAX_BODY: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::Purge => "purge",
        }
    }
}

/// The body of an action: a selection, and `all` to act on every dead letter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    topic: Option<String>,
    id: Option<i64>,
    older_than: Option<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /ui/api/dead-letters/replay`.
pub(super) async fn replay(state: State<Arc<RouteState>>, request: Request) -> Response {
    act(state, request, Action::Replay).await
}

/// `POST /ui/api/dead-letters/purge`.
pub(super) async fn purge(state: State<Arc<RouteState>>, request: Request) -> Response {
    act(state, request, Action::Purge).await
}

async fn act(State(state): State<Arc<RouteState>>, request: Request, action: Action) -> Response {
    let action_name = action.name();
    let (console, bytes, caller) = match checked(&state, request, action_name).await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let body: Body = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return caller.refused(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
    };
    let selection = Selection {
        topic: body.topic,
        id: body.id,
        older_than: body.older_than,
        limit: None,
    };
    let filter = match selection.filter() {
        Ok(f) => f,
        Err(e) => return caller.refused(StatusCode::BAD_REQUEST, e),
    };
    if filter == DeadLetterFilter::all() && !body.all {
        return caller.refused(
            StatusCode::BAD_REQUEST,
            "refusing to act on every dead letter: narrow it by topic, id or age, or send \"all\": true"
                .to_owned(),
        );
    }
    let outcome = match action {
        Action::Replay => console.store.replay_dead(&filter).await,
        Action::Purge => console.store.purge_dead(&filter).await,
    };
    match outcome {
        Ok(n) => {
            info!(
                action = action_name,
                messages = n,
                topic = filter.topic.as_deref().unwrap_or("*"),
                ids = ?filter.ids,
                created_before = ?filter.created_before,
                peer = %caller.peer,
                user_agent = %caller.agent,
                "console action"
            );
            reply(StatusCode::OK, json!({ "action": action_name, "messages": n }))
        }
        Err(e) => caller.failed(&e),
    }
}

/// Who sent a console action, for its log lines (never the token).
pub(super) struct Caller {
    pub(super) action: &'static str,
    pub(super) peer: String,
    pub(super) agent: String,
}

impl Caller {
    /// A refusal of a checked request's content, logged.
    pub(super) fn refused(&self, status: StatusCode, reason: String) -> Response {
        warn!(action = self.action, peer = %self.peer, user_agent = %self.agent, status = status.as_u16(), %reason, "console action refused: bad request");
        refuse(status, reason)
    }

    /// The answer when the store failed the action, logged.
    pub(super) fn failed(&self, error: &dyn std::fmt::Display) -> Response {
        warn!(action = self.action, %error, peer = %self.peer, "console action failed");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} failed: {error}", self.action),
        )
    }
}

/// Checks a console action before anything is read: the console is on, the request is
/// same-origin, carries the token and a JSON body of at most [`MAX_BODY`] bytes. Every refusal
/// is logged and answered here.
pub(super) async fn checked<'s>(
    state: &'s RouteState,
    request: Request,
    action: &'static str,
) -> Result<(&'s Console, Bytes, Caller), Response> {
    let Some(console) = state.console.as_ref() else {
        return Err(off());
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.to_string());
    let headers = request.headers().clone();
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .chars()
        .take(120)
        .collect::<String>();
    let caller = Caller { action, peer, agent };

    if let Err(reason) = crate::guard::same_origin(&headers, true) {
        warn!(action, peer = %caller.peer, user_agent = %caller.agent, reason, "console action refused: cross-site request");
        return Err(refuse(StatusCode::FORBIDDEN, format!("refused: {reason}")));
    }
    let Some(expected) = console.token() else {
        warn!(action, peer = %caller.peer, user_agent = %caller.agent, "console action refused: the console is read-only");
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the console is read-only: it has no token (the daemon: start the relay with --ui-token or \
             TXOUTBOX_UI_TOKEN) to allow actions",
        ));
    };
    match bearer(&headers) {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => {}
        given => {
            warn!(action, peer = %caller.peer, user_agent = %caller.agent, token_given = given.is_some(), "console action refused: wrong or missing token");
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "a valid token is needed: enter the console token (Authorization: Bearer <token>)",
            ));
        }
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(caller.refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send a JSON body (Content-Type: application/json)".to_owned(),
        ));
    }
    match axum::body::to_bytes(request.into_body(), MAX_BODY).await {
        Ok(bytes) => Ok((console, bytes, caller)),
        Err(e) => Err(caller.refused(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))),
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::tests::headers;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert!(constant_time_eq(b"same", b"same"));
        assert!(!constant_time_eq(b"same", b"sane"));
        assert!(!constant_time_eq(b"same", b"same!"));
    }
}
