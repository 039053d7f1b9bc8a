//! The console's inbox view: a consumer's parked inbox records (`GET /ui/api/inbox/parked`), and
//! replay and purge of them (`POST /ui/api/inbox/replay`, `…/purge`, checked like every console
//! action: same origin, the token, a JSON body).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::actions::checked;
use super::api::{MAX_LIST, list_reply, off, refuse, reply};
use super::inbox_store::InboxConsoleStore;
use crate::state::RouteState;

/// Most message ids one action names.
const MAX_IDS: usize = 500;

/// The answer when the console shows no inbox.
fn no_inbox() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "the console shows no inbox table (the daemon: start the relay with --ui-inbox-table)",
    )
}

/// Query of the parked list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParkedQuery {
    /// Only this consumer's records.
    consumer: Option<String>,
    /// At most this many (1 to 500; default 100).
    limit: Option<usize>,
}

/// `GET /ui/api/inbox/parked?consumer=&limit=`: parked records, oldest first per consumer,
/// without keys, payloads or header values.
pub(super) async fn parked(
    State(state): State<Arc<RouteState>>,
    Query(query): Query<ParkedQuery>,
) -> Response {
    let Some(console) = state.console.as_ref() else {
        return off();
    };
    let Some(inbox) = console.inbox.as_ref() else {
        return no_inbox();
    };
    let consumer = query.consumer.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIST);
    // One more than shown, to tell whether there are more.
    let listed = inbox.parked(consumer, limit + 1).await;
    list_reply(listed, limit, "parked inbox records", |rows, more| {
        json!({
            "table": inbox.table(),
            "read_only": console.read_only(),
            "limit": limit,
            "more": more,
            "rows": rows,
        })
    })
}

/// The body of an inbox action: one consumer, and its records by id or `all` of them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    consumer: String,
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Replay,
    Purge,
}

/// `POST /ui/api/inbox/replay`: marks dead records for replay (the running consumer handles each
/// once more).
pub(super) async fn replay(state: State<Arc<RouteState>>, request: Request) -> Response {
    act(state, request, Action::Replay).await
}

/// `POST /ui/api/inbox/purge`: deletes parked records.
pub(super) async fn purge(state: State<Arc<RouteState>>, request: Request) -> Response {
    act(state, request, Action::Purge).await
}

async fn act(State(state): State<Arc<RouteState>>, request: Request, action: Action) -> Response {
    let name = match action {
        Action::Replay => "inbox replay",
        Action::Purge => "inbox purge",
    };
    let (console, bytes, caller) = match checked(&state, request, name).await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let Some(inbox) = console.inbox.as_ref() else {
        return no_inbox();
    };
    let body: Body = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return caller.refused(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
    };
    let consumer = body.consumer.trim();
    if consumer.is_empty() {
        return caller.refused(
            StatusCode::BAD_REQUEST,
            "name the consumer (its Kafka group id): every inbox action is one consumer's".to_owned(),
        );
    }
    let ids: Vec<String> = body
        .ids
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ids = match (ids.is_empty(), body.all) {
        (false, false) if ids.len() <= MAX_IDS => Some(ids),
        (false, false) => {
            return caller.refused(
                StatusCode::BAD_REQUEST,
                format!("at most {MAX_IDS} ids per action; send \"all\": true to act on every one"),
            );
        }
        (true, true) => None,
        (false, true) => {
            return caller.refused(
                StatusCode::BAD_REQUEST,
                "send either ids or \"all\": true, not both".to_owned(),
            );
        }
        (true, false) => {
            return caller.refused(
                StatusCode::BAD_REQUEST,
                format!(
                    "refusing to act on every parked record of consumer {consumer}: name ids, or send \"all\": true"
                ),
            );
        }
    };
    let outcome = match action {
        Action::Replay => inbox.replay(consumer, ids.as_deref()).await,
        Action::Purge => inbox.purge(consumer, ids.as_deref()).await,
    };
    match outcome {
        Ok(n) => {
            info!(
                action = name,
                records = n,
                consumer,
                ids = ids.as_ref().map_or(0, Vec::len),
                all = ids.is_none(),
                peer = %caller.peer,
                user_agent = %caller.agent,
                "console action"
            );
            reply(StatusCode::OK, json!({ "action": name, "records": n }))
        }
        Err(e) => caller.failed(&e),
    }
}

/// Whether the console shows an inbox, and its table, for the views' navigation.
pub(super) fn inbox_table(inbox: Option<&Arc<dyn InboxConsoleStore>>) -> Value {
    inbox.map_or(Value::Null, |inbox| Value::from(inbox.table()))
}
