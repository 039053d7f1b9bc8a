//! The `txoutbox` binary end to end, against real PostgreSQL and Kafka: migrate, rows inserted
//! with plain SQL as the table contract allows, relay, status, metrics, health, dead letters.

mod support;

use std::time::Duration;

use serde_json::Value;
use sqlx::AssertSqlSafe;
use support::{Daemon, metric, ok, txoutbox};
use txoutbox_testing::eventually;
use txoutbox_testing::kafka::{count, new_topic, read_all, verdict};
use txoutbox_testing::postgres::TestSchema;

/// Inserts `n` rows with plain SQL, as a service in another language would: keys `key-0..keys`,
/// payload `<key>:<seq>`, one header.
async fn insert_rows(db: &TestSchema, topic: &str, n: usize, keys: usize) {
    let table = db.qualify("outbox_messages");
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut tx = db.pool.begin().await.unwrap();
        for &i in chunk {
            let key = format!("key-{}", i % keys);
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {table} (topic, key, payload, headers) VALUES ($1, convert_to($2, 'UTF8'), \
                 convert_to($3, 'UTF8'), '{{\"source\": \"plain-sql\"}}')"
            )))
            .bind(topic)
            .bind(&key)
            .bind(format!("{key}:{}", i / keys))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

/// Waits for `n` records on `topic` and checks they are `n` distinct messages, none twice, every
/// key (payload `key:seq`) in order.
async fn expect_exactly_in_order(topic: &str, n: i64, daemon: &Daemon) {
    let topics = [topic.to_owned()];
    let delivered = eventually(Duration::from_secs(30), || async { count(&topics).await == n }).await;
    assert!(delivered, "the rows did not reach Kafka: {}", daemon.logs());
    let records = read_all(&topics).await;
    let v = verdict(&records, |r| {
        let (key, seq) = r.payload_str().split_once(':').unwrap();
        (key.to_owned(), seq.parse().unwrap())
    });
    assert_eq!(
        (v.distinct as i64, v.duplicates, v.order_violations),
        (n, 0, 0),
        "{v:?}"
    );
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `status --watch` redraws the screen (clear, then the status) until interrupted.
fn watch_redraws(db: &TestSchema) {
    use std::io::Read;
    let mut child = std::process::Command::new(support::binary())
        .args(["status", "--watch", "200ms", "--relay-url", "127.0.0.1:1"])
        .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
        .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.schema))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run txoutbox status --watch");
    let mut stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let clear = b"\x1b[2J\x1b[H";
    let screens = |seen: &[u8]| seen.windows(clear.len()).filter(|w| w == clear).count();
    while screens(&seen) < 3 && std::time::Instant::now() < deadline {
        if let Ok(chunk) = receiver.recv_timeout(Duration::from_secs(1)) {
            seen.extend(chunk);
        }
    }
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for status --watch");
    let text = String::from_utf8_lossy(&seen);
    assert!(screens(&seen) >= 3, "status --watch did not redraw: {text}");
    let table = format!("{}.outbox_messages", db.schema);
    assert!(text.matches(table.as_str()).count() >= 3, "{text}");
    assert!(status.success(), "status --watch ended with {status} on SIGINT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_commands_filter_by_topic_id_range_and_age() {
    let db = TestSchema::new().await;
    ok(&txoutbox(&db, &["migrate"]));
    let table = db.qualify("outbox_messages");
    // Five dead letters on two topics (as the relay leaves them), the first written 2 hours ago.
    let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO {table} (topic, key, payload, status, attempts, last_error, created_at) \
         SELECT CASE WHEN g <= 3 THEN 'orders' ELSE 'invoices' END, convert_to('key-' || g, 'UTF8'), \
                convert_to('p', 'UTF8'), 'dead', 3, 'Broker: Message size too large', \
                CASE WHEN g = 1 THEN now() - interval '2 hours' ELSE now() END \
         FROM generate_series(1, 5) AS g ORDER BY g RETURNING id"
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let listed = |args: &[&str]| -> Vec<i64> {
        let mut all = vec!["dead-letters", "list", "--json"];
        all.extend_from_slice(args);
        let list = json(&ok(&txoutbox(&db, &all)));
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect()
    };
    let (first, second, fourth) = (ids[0].to_string(), ids[1].to_string(), ids[3].to_string());
    let last = ids[4].to_string();
    assert_eq!(listed(&[]), ids);
    assert_eq!(listed(&["--topic", "orders"]), ids[..3]);
    assert_eq!(listed(&["--id", &second]), [ids[1]]);
    assert_eq!(listed(&["--from-id", &second, "--to-id", &fourth]), ids[1..4]);
    assert_eq!(listed(&["--older-than", "1h"]), [ids[0]]);
    assert_eq!(
        listed(&["--topic", "invoices", "--older-than", "1h"]),
        Vec::<i64>::new()
    );

    let purged = ok(&txoutbox(
        &db,
        &["dead-letters", "purge", "--from-id", &fourth, "--to-id", &last],
    ));
    assert!(purged.contains("purged 2 dead letters"), "{purged}");
    let replayed = ok(&txoutbox(&db, &["dead-letters", "replay", "--older-than", "1h"]));
    assert!(replayed.contains("replayed 1 dead letters"), "{replayed}");
    assert_eq!(listed(&[]), ids[1..3]);
    let states: Vec<(i64, String, i32)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, status, attempts FROM {table} ORDER BY id"
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        vec![
            (ids[0], "pending".to_owned(), 0),
            (ids[1], "dead".to_owned(), 3),
            (ids[2], "dead".to_owned(), 3),
        ],
        "{first}: replayed to pending with fresh attempts; the purged rows are gone"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_relay_status_and_metrics_match_what_the_consumer_sees() {
    let db = TestSchema::new().await;
    let topic = new_topic("daemon", 3).await;
    let migrated = ok(&txoutbox(&db, &["migrate"]));
    assert!(migrated.contains("is ready"), "{migrated}");
    ok(&txoutbox(&db, &["migrate"])); // idempotent
    insert_rows(&db, &topic, 1_000, 50).await;

    // Before any relay: status sees the backlog, in JSON and for people.
    let status = json(&ok(&txoutbox(
        &db,
        &["status", "--json", "--relay-url", "127.0.0.1:1"],
    )));
    assert_eq!(status["pending"], 1_000);
    assert_eq!(status["topics"][0]["topic"], topic.as_str());
    assert_eq!(status["topics"][0]["pending"], 1_000);
    assert!(status["relay"].is_null());
    let oldest = status["oldest_pending_age_seconds"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&oldest), "{status}");
    let human = ok(&txoutbox(&db, &["status", "--relay-url", "127.0.0.1:1"]));
    assert!(human.contains(&topic) && human.contains("1000"), "{human}");

    let daemon = Daemon::start(&db, &["--poll-interval", "200ms", "--health-interval", "200ms"]).await;
    let delivered = eventually(Duration::from_secs(60), || async {
        count(std::slice::from_ref(&topic)).await >= 1_000
    })
    .await;
    assert!(delivered, "not every message reached Kafka: {}", daemon.logs());
    let drained = eventually(Duration::from_secs(30), || async {
        let status = json(&ok(&txoutbox(
            &db,
            &["status", "--json", "--relay-url", &daemon.base],
        )));
        status["pending"] == 0 && status["relay"]["published_total"] == 1_000
    })
    .await;
    assert!(drained, "status never showed the drained backlog");
    let status = json(&ok(&txoutbox(
        &db,
        &["status", "--json", "--relay-url", &daemon.base],
    )));
    assert!(status["oldest_pending_age_seconds"].is_null(), "{status}");
    // 1,000 messages within the last minute.
    let rate = status["relay"]["publish_rate_per_second"].as_f64().unwrap();
    assert!(rate >= 1_000.0 / 60.0 - 0.01, "{status}");
    let human = ok(&txoutbox(&db, &["status", "--relay-url", &daemon.base]));
    assert!(
        human.contains("msg/s over the last minute, 1000 published since it started"),
        "{human}"
    );
    watch_redraws(&db);

    let records = read_all(std::slice::from_ref(&topic)).await;
    let v = verdict(&records, |r| {
        let (key, seq) = r.payload_str().split_once(':').unwrap();
        (key.to_owned(), seq.parse().unwrap())
    });
    assert_eq!(
        (v.records, v.distinct, v.duplicates, v.order_violations),
        (1_000, 1_000, 0, 0),
        "{v:?}"
    );
    assert!(records.iter().all(|r| r.header("source") == Some("plain-sql")));
    assert!(records.iter().all(|r| r.payload_str().starts_with(r.key_str())));

    let (code, text) = daemon.get("/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, "txoutbox_messages_published_total", &[("topic", &topic)]),
        Some(1_000.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "txoutbox_delivery_latency_seconds_count", &[]),
        Some(1_000.0)
    );
    assert_eq!(metric(&text, "txoutbox_up", &[("component", "relay")]), Some(1.0));
    // Every message went out in some batch.
    assert_eq!(metric(&text, "txoutbox_batch_messages_sum", &[]), Some(1_000.0));
    assert!(metric(&text, "txoutbox_batch_messages_count", &[]).is_some_and(|n| n >= 1.0));
    assert_eq!(metric(&text, "txoutbox_send_failures_total", &[]), None, "{text}");
    // The gauges of the health check (every 200 ms) show the drained table.
    let gauges = eventually(Duration::from_secs(10), || async {
        let (_, text) = daemon.get("/metrics").await.unwrap();
        metric(&text, "txoutbox_pending_messages", &[]) == Some(0.0)
            && metric(&text, "txoutbox_dead_messages", &[]) == Some(0.0)
            && metric(&text, "txoutbox_oldest_pending_age_seconds", &[]) == Some(0.0)
            && metric(&text, "txoutbox_up", &[("component", "database")]) == Some(1.0)
            && metric(&text, "txoutbox_up", &[("component", "broker")]) == Some(1.0)
    })
    .await;
    assert!(gauges, "{}", daemon.get("/metrics").await.unwrap().1);
    let (code, health) = daemon.get("/health").await.unwrap();
    assert_eq!(code, 200, "{health}");

    // SIGINT (Ctrl-C) stops it as cleanly as SIGTERM.
    let mut daemon = daemon;
    daemon.signal("INT");
    assert_eq!(daemon.wait(), Some(0), "{}", daemon.logs());
    let logs = daemon.logs();
    assert!(
        logs.contains("SIGINT: shutting down") && logs.contains("relay stopped"),
        "{logs}"
    );
    assert!(
        !logs.contains("txoutbox:txoutbox@"),
        "the database password reached the log"
    );
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_past_the_backlog_threshold_and_back_when_it_drains() {
    let db = TestSchema::new().await;
    let topic = new_topic("daemon-health", 1).await;
    ok(&txoutbox(&db, &["migrate"]));
    insert_rows(&db, &topic, 300, 10).await;
    // Another session holds the rows: the relay sends them but cannot complete them, so the
    // backlog stays up, as behind a slow database.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT id FROM {} FOR UPDATE",
        db.qualify("outbox_messages")
    )))
    .fetch_all(&mut *blocker)
    .await
    .unwrap();

    let daemon = Daemon::start(
        &db,
        &[
            "--health-max-pending",
            "100",
            "--health-interval",
            "100ms",
            "--poll-interval",
            "200ms",
        ],
    )
    .await;
    let unhealthy = eventually(Duration::from_secs(30), || async {
        matches!(daemon.get("/health").await, Some((503, body)) if body.contains("300 messages are pending, above the threshold of 100"))
    })
    .await;
    assert!(
        unhealthy,
        "/health never reported the backlog: {:?}",
        daemon.get("/health").await
    );
    let (_, metrics) = daemon.get("/metrics").await.unwrap();
    assert_eq!(metric(&metrics, "txoutbox_pending_messages", &[]), Some(300.0));
    let oldest = metric(&metrics, "txoutbox_oldest_pending_age_seconds", &[]);
    assert!(oldest.is_some_and(|age| age > 0.0 && age < 120.0), "{oldest:?}");

    blocker.rollback().await.unwrap();
    let healthy = eventually(Duration::from_secs(30), || async {
        matches!(daemon.get("/health").await, Some((200, _)))
    })
    .await;
    assert!(
        healthy,
        "/health did not recover: {:?}",
        daemon.get("/health").await
    );
    assert_eq!(count(std::slice::from_ref(&topic)).await, 300);
    daemon.stop();
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replay_publishes_it_once_its_cause_is_fixed() {
    let db = TestSchema::new().await;
    // A topic that does not exist yet (the broker does not create topics by itself).
    let topic = txoutbox_testing::unique("daemon-missing");
    ok(&txoutbox(&db, &["migrate"]));
    insert_rows(&db, &topic, 1, 1).await;
    let daemon = Daemon::start(&db, &["--max-attempts", "1", "--poll-interval", "200ms"]).await;

    let dead = eventually(Duration::from_secs(60), || async {
        let list = json(&ok(&txoutbox(&db, &["dead-letters", "list", "--json"])));
        list.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    assert!(dead, "the message was not dead-lettered: {}", daemon.logs());
    let list = json(&ok(&txoutbox(
        &db,
        &["dead-letters", "list", "--json", "--topic", &topic],
    )));
    let letter = &list[0];
    assert_eq!(letter["key"], "key-0");
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["headers"]["source"], "plain-sql");
    assert!(
        letter["last_error"].as_str().unwrap().contains("Unknown topic"),
        "{letter}"
    );
    let human = ok(&txoutbox(&db, &["dead-letters", "list"]));
    assert!(human.contains(&topic) && human.contains("key-0"), "{human}");
    let status = json(&ok(&txoutbox(
        &db,
        &["status", "--json", "--relay-url", &daemon.base],
    )));
    assert_eq!(status["dead"], 1);

    // Purging everything needs saying so.
    let refused = txoutbox(&db, &["dead-letters", "purge"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--all"));

    txoutbox_testing::kafka::create_topics(&[&topic], 1).await;
    let replayed = ok(&txoutbox(&db, &["dead-letters", "replay", "--topic", &topic]));
    assert!(replayed.contains("replayed 1 dead letters"), "{replayed}");
    // The producer may still hold "unknown topic" from before (until its next metadata refresh):
    // the message can die once more; an operator would replay it again, and so does the test.
    let published = eventually(Duration::from_secs(60), || async {
        if count(std::slice::from_ref(&topic)).await == 1 {
            return true;
        }
        let dead = json(&ok(&txoutbox(&db, &["dead-letters", "list", "--json"])));
        if dead.as_array().is_some_and(|l| !l.is_empty()) {
            ok(&txoutbox(&db, &["dead-letters", "replay", "--topic", &topic]));
        }
        false
    })
    .await;
    assert!(
        published,
        "the replayed message was not published: {}",
        daemon.logs()
    );
    let records = read_all(std::slice::from_ref(&topic)).await;
    assert_eq!(
        (records[0].key_str(), records[0].payload_str()),
        ("key-0", "key-0:0")
    );
    let (_, metrics) = daemon.get("/metrics").await.unwrap();
    let dead_lettered = metric(
        &metrics,
        "txoutbox_messages_dead_lettered_total",
        &[("topic", &topic)],
    );
    // At least once; more when the producer's stale "unknown topic" killed a replay again.
    assert!(dead_lettered.is_some_and(|n| n >= 1.0), "{dead_lettered:?}");
    // The unknown topic is a permanent failure (it used the message's only attempt).
    let permanent = metric(
        &metrics,
        "txoutbox_send_failures_total",
        &[("class", "permanent")],
    );
    assert!(permanent.is_some_and(|n| n >= 1.0), "{metrics}");
    daemon.stop();
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_published_rows_then_cleanup_purges_them() {
    let db = TestSchema::new().await;
    let topic = new_topic("daemon-retention", 1).await;
    ok(&txoutbox(&db, &["migrate"]));
    insert_rows(&db, &topic, 50, 5).await;
    let daemon = Daemon::start(
        &db,
        &["--completion", "mark-published", "--poll-interval", "200ms"],
    )
    .await;
    let kept = eventually(Duration::from_secs(60), || async {
        let status = json(&ok(&txoutbox(
            &db,
            &["status", "--json", "--relay-url", "127.0.0.1:1"],
        )));
        status["published_kept"] == 50 && status["pending"] == 0
    })
    .await;
    assert!(kept, "published rows were not kept: {}", daemon.logs());
    daemon.stop();

    let none = ok(&txoutbox(&db, &["cleanup", "--older-than", "1h"]));
    assert!(none.contains("purged 0 published rows"), "{none}");
    let purged = ok(&txoutbox(&db, &["cleanup", "--older-than", "0s", "--batch", "7"]));
    assert!(purged.contains("purged 50 published rows"), "{purged}");
    assert_eq!(count(&[topic]).await, 50);
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_relays_a_fresh_sqlite_file() {
    let topic = new_topic("daemon-sqlite", 1).await;
    let path = std::env::temp_dir().join(format!("{}.db", txoutbox_testing::unique("daemon")));
    let url = format!("sqlite://{}", path.display());
    let daemon = Daemon::start_on(
        &url,
        "outbox_messages",
        &["--migrate", "--poll-interval", "100ms"],
    )
    .await;

    // Another program writes rows with plain SQL, as the table contract allows.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for i in 0..20 {
        sqlx::query(
            "INSERT INTO outbox_messages (topic, key, payload) VALUES (?1, CAST(?2 AS BLOB), CAST(?3 AS BLOB))",
        )
        .bind(&topic)
        .bind(format!("key-{}", i % 3))
        .bind(format!("key-{}:{}", i % 3, i / 3))
        .execute(&pool)
        .await
        .unwrap();
    }
    expect_exactly_in_order(&topic, 20, &daemon).await;
    daemon.stop();
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_relays_a_mariadb_outbox() {
    let topic = new_topic("daemon-mysql", 3).await;
    let db = txoutbox_testing::mysql::TestDatabase::new().await;
    let url = txoutbox_testing::mysql::url();
    let table = format!("{}.outbox_messages", db.database);
    let daemon = Daemon::start_on(&url, &table, &["--migrate", "--poll-interval", "100ms"]).await;
    for i in 0..30 {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, `key`, payload) VALUES (?, ?, ?)",
            db.qualify("outbox_messages")
        )))
        .bind(&topic)
        .bind(format!("key-{}", i % 4).into_bytes())
        .bind(format!("key-{}:{}", i % 4, i / 4).into_bytes())
        .execute(&db.pool)
        .await
        .unwrap();
    }
    expect_exactly_in_order(&topic, 30, &daemon).await;
    let status = std::process::Command::new(support::binary())
        .args(["status", "--json", "--relay-url", &daemon.base])
        .env("TXOUTBOX_DATABASE_URL", &url)
        .env("TXOUTBOX_TABLE", &table)
        .output()
        .unwrap();
    let status = json(&ok(&status));
    assert_eq!(status["pending"], 0);
    assert_eq!(status["relay"]["published_total"], 30);
    daemon.stop();
    db.drop_database().await;
}
