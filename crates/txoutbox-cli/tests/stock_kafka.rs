//! The daemon against Apache Kafka on its own default settings — the `server.properties` Kafka
//! ships, so topic auto-creation is on, new topics get one partition and `delete` retention, and
//! record timestamps more than an hour ahead are refused. Every other broker of the test bed
//! turns auto-creation off, which hid what these settings do to a relay.
//!
//! One broker, several scenarios in order: the exactly-once start check (a progress topic the
//! broker auto-created is repaired while empty, refused with the command that fixes it once it
//! holds records), exactly-once delivery read back by a read_committed consumer, and a
//! dead-letter topic with rows no broker can take. Nothing the relay does creates a topic.

mod support;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sqlx::AssertSqlSafe;
use support::{Daemon, ok};
use txoutbox_testing::eventually;
use txoutbox_testing::instances::KafkaNode;
use txoutbox_testing::kafka::{
    new_topic_on, read_all_from, read_with_isolation_on, topic_exists_on, topic_settings_on,
};
use txoutbox_testing::postgres::TestSchema;

/// Makes the broker create `topic` the way any client with auto-creation allowed does (a
/// metadata request naming it), optionally with one record in it; waits until it exists.
async fn auto_create(bootstrap: &str, topic: &str, with_record: bool) {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("allow.auto.create.topics", "true")
            .create()
            .expect("producer");
        let _ = producer
            .client()
            .fetch_metadata(Some(&t), Duration::from_secs(10));
        if with_record {
            producer
                .send(BaseRecord::<str, str>::to(&t).key("someone").payload("else"))
                .expect("produce");
            producer.flush(Duration::from_secs(30)).expect("flush");
        }
    })
    .await
    .unwrap();
    let exists = eventually(Duration::from_secs(30), || topic_exists_on(bootstrap, topic)).await;
    assert!(exists, "the broker auto-created {topic}");
}

/// Inserts rows through the table contract: `(topic, key, payload)` each.
async fn insert(db: &TestSchema, rows: &[(String, String, Vec<u8>)]) {
    let mut tx = db.pool.begin().await.unwrap();
    for (topic, key, payload) in rows {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, key, payload) VALUES ($1, convert_to($2, 'UTF8'), $3)",
            db.qualify("outbox_messages")
        )))
        .bind(topic)
        .bind(key)
        .bind(payload)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn count(db: &TestSchema, status: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE status = $1",
        db.qualify("outbox_messages")
    )))
    .bind(status)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// `txoutbox relay` on the test schema against `bootstrap`, which must refuse to start; its
/// standard error.
fn refused_start(db: &TestSchema, bootstrap: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(support::binary())
        .args(["relay", "--http-listen", "off", "--kafka-bootstrap", bootstrap])
        .args(args)
        .env("TXOUTBOX_DATABASE_URL", txoutbox_testing::postgres::url())
        .env("TXOUTBOX_TABLE", format!("{}.outbox_messages", db.schema))
        .env_remove("TXOUTBOX_CONFIG")
        .output()
        .expect("run txoutbox relay");
    assert!(!output.status.success(), "the relay must refuse to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_broker_gets_no_topic_from_the_relay_and_exactly_once_stays_safe() {
    let broker = KafkaNode::start_stock().await;
    let bootstrap = broker.bootstrap();
    let db = TestSchema::new().await;
    ok(&support::txoutbox(&db, &["migrate"]));

    // A progress topic that the broker's auto-creation made (cleanup.policy=delete) and that
    // holds no record is repaired at start.
    let progress = txoutbox_testing::unique("progress").replace('_', "-");
    auto_create(&bootstrap, &progress, false).await;
    let auto = topic_settings_on(&bootstrap, &progress, "cleanup.policy").await;
    assert_eq!(auto, Some((1, Some("delete".into()))), "what auto-creation makes");
    let orders = new_topic_on(&bootstrap, "orders", 3, &[]).await;
    let rows: Vec<(String, String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                orders.clone(),
                format!("k{}", i % 10),
                format!("{i}").into_bytes(),
            )
        })
        .collect();
    insert(&db, &rows).await;
    let eos = [
        "--kafka-bootstrap",
        &bootstrap,
        "--delivery",
        "exactly-once",
        "--progress-topic",
        &progress,
        "--create-progress-topic",
        "--poll-interval",
        "100ms",
    ];
    let daemon = Daemon::start(&db, &eos).await;
    let drained = eventually(Duration::from_secs(60), || async {
        count(&db, "pending").await == 0
    })
    .await;
    assert!(drained, "delivered: {}", daemon.logs());
    let logs = daemon.stop();
    assert!(
        logs.contains("repaired the exactly-once progress topic"),
        "{logs}"
    );
    assert_eq!(
        topic_settings_on(&bootstrap, &progress, "cleanup.policy").await,
        Some((1, Some("compact".into()))),
        "the progress topic after the repair"
    );
    // A second start checks the repaired topic and goes on where the first stopped.
    insert(&db, &rows[..100]).await;
    let daemon = Daemon::start(&db, &eos).await;
    let drained = eventually(Duration::from_secs(60), || async {
        count(&db, "pending").await == 0
    })
    .await;
    assert!(drained, "delivered after the restart: {}", daemon.logs());
    daemon.stop();
    let committed = read_with_isolation_on(&bootstrap, &orders, "read_committed").await;
    let mut ids: Vec<&str> = committed
        .iter()
        .filter_map(|r| r.header("txoutbox-message-id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (committed.len(), ids.len()),
        (400, 400),
        "each message exactly once"
    );

    // A progress topic with the wrong settings that holds records is left alone: the relay
    // refuses to start and names the command that fixes it.
    let used = txoutbox_testing::unique("progress-used").replace('_', "-");
    auto_create(&bootstrap, &used, true).await;
    let eos_used = [
        "--delivery",
        "exactly-once",
        "--progress-topic",
        &used,
        "--create-progress-topic",
    ];
    let stderr = refused_start(&db, &bootstrap, &eos_used);
    assert!(
        stderr.contains(&format!(
            "kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics --entity-name {used} \
             --add-config cleanup.policy=compact"
        )),
        "{stderr}"
    );
    assert_eq!(
        topic_settings_on(&bootstrap, &used, "cleanup.policy").await,
        Some((1, Some("delete".into()))),
        "untouched"
    );

    // At least once with a dead-letter topic: rows no broker takes are dead-lettered alone, the
    // others delivered in key order, and no topic a row names is created.
    let events = new_topic_on(&bootstrap, "events", 3, &[]).await;
    let events_dead = format!("{events}.dead");
    let unreadable_dead = "txoutbox-unreadable.dead".to_owned();
    txoutbox_testing::kafka::create_topics_on(&bootstrap, &[&events_dead, &unreadable_dead], 1, &[]).await;
    let missing = txoutbox_testing::unique("never-created").replace('_', "-");
    let mut rows: Vec<(String, String, Vec<u8>)> = Vec::new();
    for i in 0..200 {
        rows.push((
            events.clone(),
            format!("k{}", i % 10),
            format!("{i}").into_bytes(),
        ));
        match i {
            20 => rows.push(("no spaces allowed".into(), "bad".into(), b"x".to_vec())),
            40 => rows.push((events.clone(), "big".into(), vec![b'x'; 2_000_000])),
            60 => rows.push((missing.clone(), "lost".into(), b"x".to_vec())),
            80 => rows.push(("t".repeat(600), "long".into(), b"x".to_vec())),
            _ => {}
        }
    }
    insert(&db, &rows).await;
    // And one whose creation time lies a day ahead (Kafka refuses it).
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (topic, key, payload, created_at) VALUES ($1, 'future', 'x', now() + interval '1 day')",
        db.qualify("outbox_messages")
    )))
    .bind(&events)
    .execute(&db.pool)
    .await
    .unwrap();
    let daemon = Daemon::start(
        &db,
        &[
            "--kafka-bootstrap",
            &bootstrap,
            "--dead-letter-topic",
            "{topic}.dead",
            "--max-attempts",
            "1",
            "--poll-interval",
            "100ms",
        ],
    )
    .await;
    let settled = eventually(Duration::from_secs(90), || async {
        count(&db, "pending").await == 0
    })
    .await;
    assert!(settled, "settled: {}", daemon.logs());
    assert_eq!(count(&db, "dead").await, 5, "{}", daemon.logs());
    let delivered = read_all_from(&bootstrap, std::slice::from_ref(&events)).await;
    let verdict = txoutbox_testing::kafka::verdict(&delivered, |r| {
        (r.key_str().to_owned(), r.payload_str().parse().unwrap_or(0))
    });
    assert_eq!(
        (verdict.distinct, verdict.order_violations),
        (200, 0),
        "{verdict:?}"
    );
    let copies = read_all_from(&bootstrap, &[events_dead, unreadable_dead]).await;
    let copied: Vec<&str> = copies.iter().map(|r| r.key_str()).collect();
    for key in ["bad", "big", "long", "future"] {
        assert!(copied.contains(&key), "a dead-letter copy of `{key}`: {copied:?}");
    }
    let logs = daemon.stop();
    assert!(!topic_exists_on(&bootstrap, &missing).await, "never auto-created");
    assert!(
        !topic_exists_on(&bootstrap, &format!("{missing}.dead")).await,
        "its dead-letter topic neither"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    db.drop_schema().await;
}
