//! No request can panic a handler of the daemon's HTTP server: generated paths, query strings,
//! headers and bodies go to every route of a daemon with its console on (actions allowed,
//! payloads shown, an inbox table's view), and each gets an answer — never a dropped connection, never a 500 — while
//! the daemon's log shows no panic. proptest generates the requests and shrinks a failing one to
//! the smallest that fails.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::Daemon;
use txoutbox_testing::postgres::TestSchema;

const TOKEN: &str = "generated-requests-token-0123456789";

/// Values that have broken parsers before: huge and negative numbers, durations past the
/// calendar, text that is no number, control characters, long runs.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i128>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{1,30}(ns|us|ms|s|m|h|d|w|y|months|years)?",
        "-[0-9]{1,20}[a-z]{0,3}",
        "\\PC{0,40}",
        "[\\x00-\\x1f%&=#?/+]{0,10}",
        Just("NaN".to_owned()),
        Just("1e309".to_owned()),
        Just("9".repeat(400)),
        Just(String::new()),
    ]
}

/// Query parameters: the ones the routes read, and others.
fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("minutes".to_owned()),
        Just("topic".to_owned()),
        Just("older_than".to_owned()),
        Just("limit".to_owned()),
        Just("id".to_owned()),
        Just("consumer".to_owned()),
        "[a-z_]{1,12}",
    ];
    proptest::collection::vec((name, value()), 0..5)
}

/// One request: method, path, query, body, and whether it carries the token.
#[derive(Debug, Clone)]
struct Request {
    post: bool,
    path: String,
    query: Vec<(String, String)>,
    body: String,
    token: bool,
}

fn request() -> impl Strategy<Value = Request> {
    let path = prop_oneof![
        Just("/metrics".to_owned()),
        Just("/health".to_owned()),
        Just("/live".to_owned()),
        Just("/status".to_owned()),
        Just("/ui".to_owned()),
        Just("/ui/api/overview".to_owned()),
        Just("/ui/api/dead-letters".to_owned()),
        value().prop_map(|id| format!("/ui/api/dead-letters/{}/payload", urlencode(&id))),
        Just("/ui/api/dead-letters/replay".to_owned()),
        Just("/ui/api/dead-letters/purge".to_owned()),
        Just("/ui/inbox".to_owned()),
        Just("/ui/api/inbox/parked".to_owned()),
        Just("/ui/api/inbox/replay".to_owned()),
        Just("/ui/api/inbox/purge".to_owned()),
        "/[a-z/]{0,20}",
    ];
    let body = prop_oneof![
        Just(String::new()),
        (value(), value(), any::<bool>()).prop_map(|(topic, older, all)| {
            serde_json::json!({ "topic": topic, "older_than": older, "all": all }).to_string()
        }),
        value().prop_map(|id| format!(r#"{{"id": {id}}}"#)),
        (value(), proptest::collection::vec(value(), 0..4), any::<bool>()).prop_map(
            |(consumer, ids, all)| {
                serde_json::json!({ "consumer": consumer, "ids": ids, "all": all }).to_string()
            }
        ),
        "\\PC{0,60}",
    ];
    (any::<bool>(), path, query(), body, any::<bool>()).prop_map(|(post, path, query, body, token)| Request {
        post,
        path,
        query,
        body,
        token,
    })
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn send(client: &reqwest::Client, base: &str, request: &Request) -> Result<u16, String> {
    let query: Vec<String> = request
        .query
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect();
    let url = format!("{base}{}?{}", request.path, query.join("&"));
    let mut builder = if request.post {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(request.body.clone())
    } else {
        client.get(&url)
    };
    if request.token {
        builder = builder.header("authorization", format!("Bearer {TOKEN}"));
    }
    let response = builder
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    Ok(response.status().as_u16())
}

#[test]
fn no_generated_request_panics_a_handler_or_goes_unanswered() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, daemon) = runtime.block_on(async {
        let db = TestSchema::new().await;
        support::ok(&support::txoutbox(&db, &["migrate"]));
        // A few dead letters for the routes to find.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (topic, key, payload, status, attempts, last_error) \
             SELECT 'orders', convert_to('k' || g, 'UTF8'), convert_to('p' || g, 'UTF8'), 'dead', 1, 'boom' \
             FROM generate_series(1, 5) g",
            db.qualify("outbox_messages")
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        // An inbox table with parked records, for the console's inbox view.
        let inbox_table = txoutbox_core::TableName::with_schema(&db.schema, "inbox_messages").unwrap();
        let inbox = txoutbox_inbox::PgInbox::with_table(db.pool.clone(), inbox_table.clone());
        inbox.migrate().await.unwrap();
        for offset in 0..5 {
            let message = txoutbox_inbox::InboxMessage::new("orders", 0, offset).with_key("k");
            txoutbox_inbox::InboxStore::park(&inbox, "g1", &message, 3, "boom")
                .await
                .unwrap();
        }
        let table = format!("{}.outbox_messages", db.schema);
        let daemon = Daemon::start_with_env(
            &txoutbox_testing::postgres::url(),
            &table,
            &[
                "--ui",
                "--ui-show-payloads",
                "--ui-inbox-table",
                &inbox_table.to_string(),
            ],
            &[("TXOUTBOX_UI_TOKEN", TOKEN)],
        )
        .await;
        (db, daemon)
    });
    let client = reqwest::Client::new();
    let cases = support::env_or("TXOUTBOX_HTTP_CASES", 400);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let outcome = runner.run(&request(), |request| {
        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let status = runtime.block_on(send(&client, &daemon.base, &request));
        prop_assert!(status.is_ok(), "{request:?}: {status:?}");
        let status = status.unwrap_or_default();
        prop_assert!(status < 500 || status == 503, "{request:?} answered {status}");
        Ok(())
    });
    let logs = daemon.stop();
    outcome.unwrap_or_else(|e| panic!("{e}\n{logs}"));
    let sent = sent.into_inner();
    eprintln!("{sent} generated requests answered");
    assert!(sent >= cases as usize, "{sent} requests sent");
    assert!(!logs.contains("panicked"), "a handler panicked: {logs}");
    runtime.block_on(db.drop_schema());
}
