//! Kafka over TLS with SASL/SCRAM-SHA-512 and ACLs: a private broker with a SASL_SSL listener
//! (certificates made by the test with `openssl`, SCRAM users created when its storage is
//! formatted, `StandardAuthorizer`). The relay process connects through librdkafka properties
//! (`TXOUTBOX_CHAOS_KAFKA`):
//!
//! - right user, password and CA: every message is delivered;
//! - wrong password, a CA that did not sign the broker's certificate, a user without an ACL: the
//!   relay's log names the cause, nothing is delivered, nothing leaves the outbox;
//! - in every case the password never appears in the relay's log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;
use txoutbox_core::{Store, Topic, Topics};
use txoutbox_postgres::PgOutbox;
use txoutbox_testing::instances::{KafkaNode, SaslSsl};
use txoutbox_testing::kafka::{new_topic_on, read_all_from};
use txoutbox_testing::postgres::TestSchema;

const ALICE_PASSWORD: &str = "alice-Pa55word-9f1c2e";
const BOB_PASSWORD: &str = "bob-Pa55word-77ad01";
const WRONG_PASSWORD: &str = "not-alice-Pa55word-3b8e";

#[derive(Serialize)]
struct Event {
    key: String,
    seq: u64,
}

/// The relay process with `kafka` as its extra librdkafka properties, its log (info) in `log`;
/// killed on drop.
struct Relay(std::process::Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay(schema: &str, bootstrap: &str, kafka: &str, log: &Path) -> Relay {
    let file = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_txoutbox-chaos-relay"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("TXOUTBOX_CHAOS_SCHEMA", schema)
        .env("TXOUTBOX_KAFKA_BOOTSTRAP", bootstrap)
        .env("TXOUTBOX_CHAOS_KAFKA", kafka)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start the relay process");
    Relay(child)
}

fn properties(user: &str, password: &str, ca: &Path) -> String {
    format!(
        "security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,sasl.username={user},sasl.password={password},ssl.ca.location={}",
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_relay_delivers_and_each_wrong_setting_names_its_cause() {
    txoutbox_testing::init_tracing();
    let (broker, secure): (KafkaNode, SaslSsl) =
        KafkaNode::start_sasl_ssl(&[("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)], &["alice"]).await;
    let logs = std::env::temp_dir().join(txoutbox_testing::unique("tls-sasl-logs"));
    std::fs::create_dir_all(&logs).unwrap();

    // Each wrong setting first: nothing may be delivered, and the log must say why.
    let cases: [(&str, String, &[&str]); 3] = [
        (
            "wrong password",
            properties("alice", WRONG_PASSWORD, &secure.ca),
            &["authentication", "invalid credentials"],
        ),
        (
            "untrusted certificate",
            properties("alice", ALICE_PASSWORD, &secure.untrusted_ca),
            &["certificate verify failed"],
        ),
        (
            "missing ACL",
            properties("bob", BOB_PASSWORD, &secure.ca),
            &["authoriz"],
        ),
    ];
    for (case, kafka, causes) in cases {
        let (db, topic, store) = setup(&broker, 20).await;
        let log = logs.join(format!("{}.log", case.replace(' ', "-")));
        let _relay = relay(&db.schema, &secure.bootstrap, &kafka, &log);
        let named = txoutbox_testing::eventually(Duration::from_secs(90), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default().to_lowercase();
            causes.iter().all(|c| text.contains(c))
        })
        .await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            named,
            "{case}: the relay's log does not name the cause ({causes:?}):\n{}",
            tail(&text)
        );
        drop(_relay);
        let first_cause = text
            .lines()
            .find(|l| causes.iter().any(|c| l.to_lowercase().contains(c)))
            .unwrap_or_default();
        eprintln!("{case}: {first_cause}");
        assert_no_password(case, &text);
        let backlog = store.backlog().await.unwrap();
        // Still in the table: pending, or dead (kept, replayable) for a permanent refusal.
        assert_eq!(
            backlog.pending + backlog.dead,
            20,
            "{case}: rows left the outbox: {backlog:?}"
        );
        eprintln!("{case}: outbox {backlog:?}");
        let records = read_all_from(&broker.bootstrap(), std::slice::from_ref(&topic)).await;
        assert!(
            records.is_empty(),
            "{case}: {} records reached the topic",
            records.len()
        );
        db.drop_schema().await;
    }

    // The right settings: everything is delivered through SASL_SSL.
    let (db, topic, store) = setup(&broker, 200).await;
    let log = logs.join("right.log");
    let relay = relay(
        &db.schema,
        &secure.bootstrap,
        &properties("alice", ALICE_PASSWORD, &secure.ca),
        &log,
    );
    let drained = txoutbox_testing::eventually(Duration::from_secs(90), || async {
        store.backlog().await.map(|b| b.pending == 0).unwrap_or(false)
    })
    .await;
    drop(relay);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(drained, "not delivered over SASL_SSL:\n{}", tail(&text));
    let records = read_all_from(&broker.bootstrap(), std::slice::from_ref(&topic)).await;
    assert_eq!(records.len(), 200);
    assert_no_password("right settings", &text);
    eprintln!("right settings: 200 messages delivered over SASL_SSL/SCRAM-SHA-512");
    db.drop_schema().await;
    if std::env::var_os("TXOUTBOX_KEEP_INSTANCES").is_none() {
        let _ = std::fs::remove_dir_all(&logs);
    }
}

fn assert_no_password(case: &str, log: &str) {
    for password in [ALICE_PASSWORD, BOB_PASSWORD, WRONG_PASSWORD] {
        assert!(
            !log.contains(password),
            "{case}: a password is in the relay's log"
        );
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A fresh outbox table with `n` committed messages, and a fresh topic (created through the
/// broker's PLAINTEXT listener).
async fn setup(broker: &KafkaNode, n: u64) -> (TestSchema, String, txoutbox_postgres::PgStore) {
    let topic = new_topic_on(&broker.bootstrap(), "tls-sasl", 3, &[]).await;
    let db = TestSchema::new().await;
    let topics = Topics::new()
        .with(Topic::<Event>::json(&topic).unwrap().key(|e| e.key.clone()))
        .unwrap();
    let outbox = PgOutbox::with_table(topics, db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let events: Vec<Event> = (0..n)
        .map(|i| Event {
            key: format!("key-{}", i % 10),
            seq: i / 10 + 1,
        })
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    outbox.publish_all(&mut *tx, &events).await.unwrap();
    tx.commit().await.unwrap();
    let store = outbox.store(db.pool.clone());
    (db, topic, store)
}
