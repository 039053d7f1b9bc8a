//! The web console (`txoutbox relay --ui`) in headless Chromium, against the real daemon, a real
//! PostgreSQL and a real Kafka broker: the overview shows what the database holds and its charts
//! refresh; a dead letter shows with its key and error and is replayed (with the token) to Kafka;
//! a read-only console, a wrong token and cross-site requests are refused; payloads stay hidden
//! unless enabled.
//!
//! Screenshots go to `$TXOUTBOX_SCREENSHOTS` when set (the README's come from
//! `TXOUTBOX_SCREENSHOTS=crates/txoutbox-cli/assets/screenshots`), else to a temporary folder.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use support::Daemon;
use txoutbox_testing::browser::Browser;
use txoutbox_testing::eventually;
use txoutbox_testing::kafka::{count, new_topic, read_all};
use txoutbox_testing::postgres::TestSchema;

/// A refused request: what it is, its headers, the expected status.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

const TOKEN: &str = "console-test-token-0123456789";
const WAIT: Duration = Duration::from_secs(60);

/// Inserts `n` rows with plain SQL: keys `key-<i>`, payload `key-<i>:<i>`, one header; rows
/// `deferred` are not due for an hour (pending, but the relay leaves them alone).
async fn insert_rows(db: &TestSchema, topic: &str, n: usize, deferred: bool) {
    let table = db.qualify("outbox_messages");
    let next = if deferred {
        "now() + interval '1 hour'"
    } else {
        "NULL"
    };
    let mut tx = db.pool.begin().await.unwrap();
    for i in 0..n {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (topic, key, payload, headers, next_attempt_at) VALUES ($1, \
             convert_to($2, 'UTF8'), convert_to($3, 'UTF8'), '{{\"source\": \"plain-sql\"}}', {next})"
        )))
        .bind(topic)
        .bind(format!("key-{i}"))
        .bind(format!("key-{i}:{i}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Rows in a state, counted by SQL (independently of the daemon).
async fn rows_in(db: &TestSchema, status: &str, topic: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE status = $1 AND topic = $2",
        db.qualify("outbox_messages")
    )))
    .bind(status)
    .bind(topic)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// The log without its colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the escape sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn screenshot(name: &str) -> PathBuf {
    match std::env::var_os("TXOUTBOX_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("console-screenshots")
            .join(name),
    }
}

async fn get_json(daemon: &Daemon, path: &str) -> Value {
    let (code, body) = daemon.get(path).await.expect("the daemon answers");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
}

/// POSTs a dead-letter action with extra headers; status code and body.
async fn post(daemon: &Daemon, action: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, String) {
    daemon
        .post_json(&format!("/ui/api/dead-letters/{action}"), body, headers)
        .await
}

/// Waits until the daemon lists `n` dead letters.
async fn until_dead(daemon: &Daemon, n: usize) {
    let dead = eventually(WAIT, || async {
        get_json(daemon, "/ui/api/dead-letters").await["rows"]
            .as_array()
            .is_some_and(|rows| rows.len() == n)
    })
    .await;
    assert!(dead, "no dead letter showed up: {}", daemon.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_what_the_database_holds_and_its_charts_refresh() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestSchema::new().await;
    let live = new_topic("console-live", 1).await;
    // Never sent in this test: the rows are not due for an hour.
    let waiting = txoutbox_testing::unique("console-waiting");
    support::ok(&support::txoutbox(&db, &["migrate"]));
    insert_rows(&db, &waiting, 25, true).await;

    let daemon = Daemon::start(
        &db,
        &["--ui", "--poll-interval", "200ms", "--health-interval", "200ms"],
    )
    .await;
    // Bursts of traffic a few seconds apart, for the charts to show.
    let samples = || async {
        get_json(&daemon, "/ui/api/overview").await["series"]["t"]
            .as_array()
            .map_or(0, Vec::len)
    };
    for wave in 1..=4 {
        insert_rows(&db, &live, 50 * wave, false).await;
        let total = (50 * wave * (wave + 1) / 2) as i64;
        let delivered = eventually(WAIT, || async {
            count(std::slice::from_ref(&live)).await == total
        })
        .await;
        assert!(delivered, "the live rows did not reach Kafka: {}", daemon.logs());
        let before = samples().await;
        assert!(
            eventually(WAIT, || async { samples().await >= before + 3 }).await,
            "no samples taken"
        );
    }
    assert_eq!(rows_in(&db, "pending", &waiting).await, 25);

    browser.goto(&format!("{}/ui", daemon.base)).await;
    let row = format!("tr[data-topic=\"{waiting}\"] td.pending");
    let shown = browser
        .wait_until(
            &format!(
                "document.getElementById('pending').textContent === '25' && \
                 document.querySelector('{row}')?.textContent === '25'"
            ),
            WAIT,
        )
        .await;
    assert!(
        shown,
        "the overview never showed 25 pending on {waiting}: pending {:?}, topics {:?}",
        browser.text("#pending").await,
        browser.text("#topics").await
    );
    // The delivered topic left no row behind (completion: delete).
    assert_eq!(
        browser
            .text(&format!("tr[data-topic=\"{live}\"] td.pending"))
            .await,
        None
    );
    assert_eq!(browser.text("#dead").await.as_deref(), Some("0"));
    assert_eq!(browser.text("#health").await.as_deref(), Some("healthy"));
    // Where the relay publishes, from the daemon's /status.
    let sink = format!("→ kafka {}", txoutbox_testing::kafka::bootstrap());
    assert_eq!(browser.text("#sink").await.as_deref(), Some(sink.as_str()));

    // The charts: drawn as SVG, with the publish burst and its latency, and redrawn as time goes.
    let drawn = browser
        .wait_until(
            "['chart-rate', 'chart-latency', 'chart-pending'].every(id => \
               Number(document.querySelector('#' + id + ' svg')?.dataset.points) > 0) && \
             document.querySelector('#chart-latency svg .s0') !== null && \
             document.querySelector('#chart-latency svg .s1') !== null",
            WAIT,
        )
        .await;
    assert!(
        drawn,
        "the charts were not drawn: {:?}",
        browser.text(".charts").await
    );
    let series = get_json(&daemon, "/ui/api/overview").await["series"].clone();
    let max_rate = series["rate"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .fold(0.0, f64::max);
    assert!(max_rate > 0.0, "no publish rate in {series}");
    assert!(
        series["latency_avg_ms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_f64().is_some_and(|ms| ms > 0.0)),
        "no latency in {series}"
    );
    let first = browser
        .eval(
            "return [document.querySelector('#chart-rate svg').dataset.last, document.body.dataset.refreshes]",
            json!([]),
        )
        .await;
    let refreshed = browser
        .wait_until(
            &format!(
                "document.querySelector('#chart-rate svg').dataset.last !== {} && \
                 Number(document.body.dataset.refreshes) > {}",
                first[0],
                first[1].as_str().unwrap_or("0")
            ),
            Duration::from_secs(15),
        )
        .await;
    assert!(refreshed, "the charts did not refresh by themselves");
    browser.screenshot(&screenshot("console-overview.png")).await;

    // Coordination: a single relay owns the whole table.
    let nodes = browser.text("#nodes").await.unwrap_or_default();
    assert!(nodes.contains("no coordination"), "{nodes}");
    // Payloads are never in the overview.
    let page = browser.eval("return document.body.innerText", json!([])).await;
    assert!(!page.as_str().unwrap_or_default().contains("key-0:0"), "{page}");

    drop(browser);
    daemon.stop();
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_shown_and_replayed_from_the_console_with_the_token() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestSchema::new().await;
    // A topic that does not exist yet: the message dies after one attempt.
    let topic = txoutbox_testing::unique("console-missing");
    support::ok(&support::txoutbox(&db, &["migrate"]));
    insert_rows(&db, &topic, 1, false).await;
    // The token comes from the environment, as the docs advise. The producer refreshes its
    // metadata every 500 ms so that it learns of the topic created below before the replay
    // (by default it keeps "unknown topic" for minutes and the replayed message dies again).
    let table = format!("{}.outbox_messages", db.schema);
    let daemon = Daemon::start_with_env(
        &txoutbox_testing::postgres::url(),
        &table,
        &[
            "--ui",
            "--max-attempts",
            "1",
            "--poll-interval",
            "200ms",
            "-X",
            "topic.metadata.refresh.interval.ms=500",
        ],
        &[("TXOUTBOX_UI_TOKEN", TOKEN)],
    )
    .await;
    until_dead(&daemon, 1).await;
    txoutbox_testing::kafka::create_topics(&[&topic], 1).await;
    // A second dead letter, on another topic and two hours old, as the relay would leave it.
    let other = txoutbox_testing::unique("console-other");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (topic, key, payload, status, attempts, last_error, created_at) VALUES \
         ($1, convert_to('old-key', 'UTF8'), convert_to('x', 'UTF8'), 'dead', 7, \
          'Broker: Message size too large', now() - interval '2 hours')",
        db.qualify("outbox_messages")
    )))
    .bind(&other)
    .execute(&db.pool)
    .await
    .unwrap();

    // The overview counts both (from the health check's next backlog query).
    browser.goto(&format!("{}/ui", daemon.base)).await;
    let counted = browser
        .wait_until("document.getElementById('dead').textContent === '2'", WAIT)
        .await;
    assert!(
        counted,
        "the overview's dead count: {:?}",
        browser.text("#dead").await
    );

    browser.goto(&format!("{}/ui/dead-letters", daemon.base)).await;
    let listed = browser
        .wait_until(
            "document.querySelector('#dead-table tbody tr[data-id] td.key')?.textContent === 'key-0'",
            WAIT,
        )
        .await;
    assert!(
        listed,
        "the dead letter is not listed: {:?}",
        browser.text("#dead-table").await
    );
    let rows = || async {
        browser
            .eval(
                "return [...document.querySelectorAll('#dead-table tbody tr[data-id]')].map(r => \
                 [...r.cells].map(c => c.textContent))",
                json!([]),
            )
            .await
    };
    let shown = rows().await;
    assert_eq!(shown.as_array().map(Vec::len), Some(2), "{shown}");
    // Columns: id, topic, key, headers, attempts, created, last error, actions.
    assert_eq!(
        (&shown[0][2], &shown[0][4]),
        (&json!("key-0"), &json!("1")),
        "{shown}"
    );
    assert_eq!(
        (&shown[1][2], &shown[1][4]),
        (&json!("old-key"), &json!("7")),
        "{shown}"
    );
    // The topic filter narrows the list to the first.
    browser.type_into("#f-topic", &topic).await;
    browser.click("#f-apply").await;
    let narrowed = browser
        .wait_until(
            "document.querySelectorAll('#dead-table tbody tr[data-id]').length === 1",
            WAIT,
        )
        .await;
    assert!(narrowed, "the topic filter: {}", rows().await);
    assert_eq!(rows().await[0][2], json!("key-0"));
    let row = browser.text("#dead-table tbody tr[data-id]").await.unwrap();
    assert!(row.contains(&topic), "{row}");
    assert!(row.contains("Unknown topic"), "the error is not shown: {row}");
    assert!(
        row.contains("source=plain-sql"),
        "the headers are not shown: {row}"
    );
    let page = browser.eval("return document.body.innerText", json!([])).await;
    assert!(
        !page.as_str().unwrap_or_default().contains("key-0:0"),
        "the payload is shown: {page}"
    );
    assert!(
        browser.text(".payload").await.is_none(),
        "a payload button without --ui-show-payloads"
    );
    browser.screenshot(&screenshot("console-dead-letters.png")).await;

    // Without the token: refused, and nothing changes.
    browser.click("#dead-table tbody tr[data-id] button.replay").await;
    browser.click("#confirm-yes").await;
    let refused = browser
        .wait_until(
            "document.getElementById('notice').textContent.includes('refused (401)')",
            Duration::from_secs(10),
        )
        .await;
    assert!(refused, "no refusal shown: {:?}", browser.text("#notice").await);
    assert_eq!(rows_in(&db, "dead", &topic).await, 1);

    // With the token: replayed, and a consumer reads the message.
    browser.type_into("#token", TOKEN).await;
    browser.click("#token-use").await;
    browser.click("#dead-table tbody tr[data-id] button.replay").await;
    browser.click("#confirm-yes").await;
    let replayed = browser
        .wait_until(
            "document.getElementById('notice').textContent.includes('1 dead letter replayed')",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        replayed,
        "the replay did not succeed: {:?}",
        browser.text("#notice").await
    );
    let published = eventually(WAIT, || async { count(std::slice::from_ref(&topic)).await == 1 }).await;
    assert!(
        published,
        "the replayed message never reached Kafka: {}",
        daemon.logs()
    );
    let records = read_all(std::slice::from_ref(&topic)).await;
    assert_eq!(
        (records[0].key_str(), records[0].payload_str()),
        ("key-0", "key-0:0")
    );
    assert_eq!(records[0].header("source"), Some("plain-sql"));

    // "Purge all matching" with an age filter removes the old dead letter only.
    browser
        .eval(
            "document.getElementById('f-topic').value = ''; return null;",
            json!([]),
        )
        .await;
    browser.type_into("#f-age", "1h").await;
    browser.click("#f-apply").await;
    let aged = browser
        .wait_until(
            "[...document.querySelectorAll('#dead-table tbody tr[data-id] td.key')].map(c => c.textContent).join() === 'old-key'",
            WAIT,
        )
        .await;
    assert!(aged, "the age filter: {}", rows().await);
    browser.click("#bulk-purge").await;
    browser.click("#confirm-yes").await;
    let purged = browser
        .wait_until(
            "document.getElementById('notice').textContent.includes('1 dead letter purged')",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        purged,
        "the purge did not succeed: {:?}",
        browser.text("#notice").await
    );
    assert_eq!(rows_in(&db, "dead", &other).await, 0);

    let logs = plain(&daemon.stop());
    assert!(
        logs.contains("console action refused: wrong or missing token"),
        "{logs}"
    );
    assert!(
        logs.contains("console action") && logs.contains("messages=1") && logs.contains("action=\"replay\""),
        "{logs}"
    );
    assert!(!logs.contains(TOKEN), "the token reached the log");
    drop(browser);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_consoles_wrong_tokens_and_cross_site_requests_are_refused() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestSchema::new().await;
    let topic = txoutbox_testing::unique("console-refused");
    support::ok(&support::txoutbox(&db, &["migrate"]));
    insert_rows(&db, &topic, 1, false).await;
    let by_id = |id: i64| json!({ "id": id });

    // No token configured: read-only, in the page and for the API.
    let daemon = Daemon::start(&db, &["--ui", "--max-attempts", "1", "--poll-interval", "200ms"]).await;
    until_dead(&daemon, 1).await;
    let id = get_json(&daemon, "/ui/api/dead-letters").await["rows"][0]["id"]
        .as_i64()
        .unwrap();
    browser.goto(&format!("{}/ui/dead-letters", daemon.base)).await;
    let read_only = browser
        .wait_until(
            "document.getElementById('access').textContent === 'read-only' && \
             document.querySelector('#dead-table tbody tr[data-id] button.replay')?.disabled === true && \
             document.getElementById('token-box').hidden",
            WAIT,
        )
        .await;
    assert!(
        read_only,
        "the page does not show a read-only console: {:?}",
        browser.text("#dead-letters").await
    );
    let (code, body) = post(
        &daemon,
        "replay",
        &by_id(id),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    // Payloads are hidden by default.
    let (code, body) = daemon
        .get(&format!("/ui/api/dead-letters/{id}/payload"))
        .await
        .unwrap();
    assert_eq!(code, 403, "{body}");
    let (_, list) = daemon.get("/ui/api/dead-letters").await.unwrap();
    assert!(!list.contains("key-0:0"), "{list}");
    let logs = daemon.stop();
    assert!(
        logs.contains("console action refused: the console is read-only"),
        "{logs}"
    );

    // With a token: the wrong one, none, and cross-site requests with the right one are refused.
    let table = format!("{}.outbox_messages", db.schema);
    let daemon = Daemon::start_with_env(
        &txoutbox_testing::postgres::url(),
        &table,
        &[
            "--ui",
            "--ui-show-payloads",
            "--max-attempts",
            "1",
            "--poll-interval",
            "200ms",
        ],
        &[("TXOUTBOX_UI_TOKEN", TOKEN)],
    )
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let host = daemon.base.trim_start_matches("http://").to_owned();
    let cases: [Case<'_>; 5] = [
        ("no token", vec![], 401),
        (
            "a wrong token",
            vec![("authorization", "Bearer not-the-token-at-all")],
            401,
        ),
        (
            "another site's origin",
            vec![("authorization", &bearer), ("origin", "http://evil.example")],
            403,
        ),
        (
            "a cross-site fetch",
            vec![("authorization", &bearer), ("sec-fetch-site", "cross-site")],
            403,
        ),
        (
            "a same-site fetch",
            vec![("authorization", &bearer), ("sec-fetch-site", "same-site")],
            403,
        ),
    ];
    for (what, headers, expected) in &cases {
        let (code, body) = post(&daemon, "replay", &by_id(id), headers).await;
        assert_eq!(code, *expected, "{what}: {body}");
        let (code, body) = post(&daemon, "purge", &by_id(id), headers).await;
        assert_eq!(code, *expected, "{what}: {body}");
    }
    // A page on another host name that resolves to the daemon (DNS rebinding) reads nothing.
    let rebound = reqwest::Client::new()
        .get(format!("{}/ui/api/dead-letters", daemon.base))
        .header("host", "rebound.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    // Every route is guarded, not only the console's: the status and the metrics too.
    for path in ["/status", "/metrics", "/health", "/live"] {
        let rebound = reqwest::Client::new()
            .get(format!("{}{path}", daemon.base))
            .header("host", "rebound.example:80")
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status().as_u16(), 403, "{path}");
        let cross = reqwest::Client::new()
            .get(format!("{}{path}", daemon.base))
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(cross.status().as_u16(), 403, "{path} read by another site's page");
    }
    // A form post (no JSON) is refused even with the token.
    let (code, _) = {
        let response = reqwest::Client::new()
            .post(format!("{}/ui/api/dead-letters/purge", daemon.base))
            .header("authorization", &bearer)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("id=1")
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(code, 415);
    // Everything at once needs saying so.
    let (code, body) = post(&daemon, "purge", &json!({}), &[("authorization", &bearer)]).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        rows_in(&db, "dead", &topic).await,
        1,
        "a refused request changed the row"
    );

    // The page's own origin is accepted, and with --ui-show-payloads the payload can be shown.
    let origin = format!("http://{host}");
    let (code, body) = daemon
        .get(&format!("/ui/api/dead-letters/{id}/payload"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("key-0:0"), "{body}");
    let (code, body) = post(
        &daemon,
        "purge",
        &json!({ "topic": topic }),
        &[
            ("authorization", &bearer),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!((code, body.as_str()), (200, r#"{"action":"purge","messages":1}"#));
    assert_eq!(rows_in(&db, "dead", &topic).await, 0);

    let logs = daemon.stop();
    assert!(logs.contains("HTTP request refused: cross-site"), "{logs}");
    let bad_requests = plain(&logs)
        .lines()
        .filter(|l| l.contains("console action refused: bad request"))
        .count();
    assert_eq!(
        bad_requests, 2,
        "the form post and the unfiltered purge are logged: {logs}"
    );
    assert!(!logs.contains(TOKEN), "the token reached the log");
    drop(browser);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_lists_the_relay_nodes_and_the_buckets_each_owns() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let db = TestSchema::new().await;
    support::ok(&support::txoutbox(&db, &["migrate"]));
    let node = |name: &'static str| {
        [
            "--ui",
            "--coordination",
            "work-balance",
            "--node-id",
            name,
            "--lease",
            "3s",
            "--heartbeat",
            "500ms",
            "--poll-interval",
            "200ms",
        ]
    };
    let first = Daemon::start(&db, &node("relay-a")).await;
    let second = Daemon::start(&db, &node("relay-b")).await;

    browser.goto(&format!("{}/ui", first.base)).await;
    // The 64 buckets end up shared evenly, and the page says which node holds which.
    let shared = browser
        .wait_until(
            "document.querySelector('tr[data-node=\"relay-a\"]')?.textContent.includes('32 buckets') && \
             document.querySelector('tr[data-node=\"relay-b\"]')?.textContent.includes('32 buckets')",
            WAIT,
        )
        .await;
    assert!(
        shared,
        "the nodes and their buckets are not shown: {:?}",
        browser.text("#nodes").await
    );
    let mine = browser.text("tr[data-node=\"relay-a\"]").await.unwrap();
    assert!(mine.contains("(this node)"), "{mine}");
    let mode = browser.text("#coord-mode").await.unwrap();
    assert!(
        mode.contains("work-balance") && mode.contains("relay-a"),
        "{mode}"
    );
    // The page agrees with the leases table.
    let owned: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT owner, count(*) FROM {} WHERE owner IS NOT NULL AND lease_until > now() GROUP BY owner ORDER BY owner",
        db.qualify("outbox_messages_relay_leases")
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(owned, [("relay-a".to_owned(), 32), ("relay-b".to_owned(), 32)]);
    browser.screenshot(&screenshot("console-nodes.png")).await;

    drop(browser);
    second.stop();
    first.stop();
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_settings_are_checked_before_the_relay_starts() {
    let db = TestSchema::new().await;
    let short = support::txoutbox(&db, &["relay", "--ui", "--ui-token", "short-secret"]);
    assert_eq!(short.status.code(), Some(2));
    let message = String::from_utf8_lossy(&short.stderr);
    assert!(message.contains("at least 16 characters"), "{message}");
    assert!(
        !message.contains("short-secret"),
        "the token was echoed: {message}"
    );
    let off = support::txoutbox(&db, &["relay", "--ui", "--http-listen", "off"]);
    assert_eq!(off.status.code(), Some(2));
    let message = String::from_utf8_lossy(&off.stderr);
    assert!(message.contains("--http-listen"), "{message}");
    db.drop_schema().await;
}
