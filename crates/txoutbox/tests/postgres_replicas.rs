//! Several replicas of one service, each running the quickstart's relay (`Relay::new`, single
//! mode) on one PostgreSQL table: one relays, the others stand by, and a standby takes over when
//! the active one stops — no message twice, none lost, per-key order kept. Checked on what a
//! consumer reads back from Kafka.
#![cfg(feature = "postgres")]

mod common;

use std::time::Duration;

use common::{Event, kafka_sink, keyed, relay_config};
use sqlx::postgres::{PgPool, PgPoolOptions};
use txoutbox::postgres::PgOutbox;
use txoutbox::{Relay, RelayHandle, Topics};
use txoutbox_testing::kafka::{self, Record};
use txoutbox_testing::postgres::TestSchema;

const KEYS: u64 = 40;
const PER_KEY_AND_PHASE: u64 = 25;

/// One replica: its own pool and outbox, as in each process of the service.
struct Replica {
    outbox: PgOutbox,
    pool: PgPool,
}

impl Replica {
    async fn new(db: &TestSchema, topic: &str) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&txoutbox_testing::postgres::url())
            .await
            .unwrap();
        let outbox = PgOutbox::with_table(Topics::new().with(keyed::<0>(topic)).unwrap(), db.table());
        outbox.migrate(&pool).await.unwrap();
        Self { outbox, pool }
    }

    /// The quickstart's relay.
    fn relay(&self) -> RelayHandle {
        Relay::new(self.outbox.store(self.pool.clone()), kafka_sink(), relay_config())
            .unwrap()
            .start()
    }

    /// Sequence numbers `from..to` of every key, one transaction per sequence number.
    async fn write(&self, from: u64, to: u64) {
        for seq in from..to {
            let events: Vec<Event<0>> = (0..KEYS)
                .map(|k| Event {
                    key: format!("k{k}"),
                    seq,
                })
                .collect();
            let mut tx = self.pool.begin().await.unwrap();
            self.outbox.publish_all(&mut *tx, &events).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
}

fn key_seq(record: &Record) -> (String, u64) {
    let event: Event<0> = serde_json::from_str(record.payload_str()).unwrap();
    (event.key, event.seq)
}

async fn delivered(topic: &str, expected: i64) -> bool {
    let topics = [topic.to_owned()];
    txoutbox_testing::eventually(Duration::from_secs(60), || async {
        kafka::count(&topics).await >= expected
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_running_the_quickstart_relay_send_each_message_once() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let topic = kafka::new_topic("replicas", 4).await;
    let per_phase = (KEYS * PER_KEY_AND_PHASE) as i64;
    let (a, b, c) = (
        Replica::new(&db, &topic).await,
        Replica::new(&db, &topic).await,
        Replica::new(&db, &topic).await,
    );

    // Two replicas run at once: one of them relays.
    let relay_a = a.relay();
    let relay_b = b.relay();
    let (monitor_a, monitor_b) = (relay_a.monitor(), relay_b.monitor());
    let one_stands_by = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        monitor_a.is_standing_by() != monitor_b.is_standing_by()
    })
    .await;
    assert!(one_stands_by, "not exactly one of the two relays stands by");
    a.write(0, PER_KEY_AND_PHASE / 2).await;
    b.write(PER_KEY_AND_PHASE / 2, PER_KEY_AND_PHASE).await;
    assert!(delivered(&topic, per_phase).await, "phase 1 was not delivered");

    // The first replica stops while rows are being written and sent; the second carries on.
    let writing = tokio::spawn(async move {
        b.write(PER_KEY_AND_PHASE, 2 * PER_KEY_AND_PHASE).await;
        b
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay_a.shutdown().await.unwrap();
    let b = writing.await.unwrap();
    assert!(
        delivered(&topic, 2 * per_phase).await,
        "phase 2 was not delivered"
    );

    // A third replica starts and the second stops mid-stream: the third takes over.
    let relay_c = c.relay();
    let writing = tokio::spawn(async move {
        c.write(2 * PER_KEY_AND_PHASE, 3 * PER_KEY_AND_PHASE).await;
        c
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay_b.shutdown().await.unwrap();
    let c = writing.await.unwrap();
    assert!(
        delivered(&topic, 3 * per_phase).await,
        "phase 3 was not delivered"
    );

    // Anything sent twice would arrive within a few poll intervals.
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay_c.shutdown().await.unwrap();
    let records = kafka::read_all(&[topic]).await;
    let verdict = kafka::verdict(&records, key_seq);
    assert_eq!(verdict.distinct, 3 * per_phase as usize, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    for replica in [a, b, c] {
        replica.pool.close().await;
    }
    db.drop_schema().await;
}

/// The backend that holds the relay lock of the test's table, if any.
async fn lock_holder(db: &TestSchema) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = 1954049890 \
         AND objid = $1::text::regclass::oid AND objsubid = 2 AND granted",
    )
    .bind(db.table().quoted())
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_when_the_active_relays_lock_connection_ends() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let topic = kafka::new_topic("replicas-cut", 4).await;
    let per_phase = (KEYS * PER_KEY_AND_PHASE) as i64;
    let (a, b) = (Replica::new(&db, &topic).await, Replica::new(&db, &topic).await);
    let (relay_a, relay_b) = (a.relay(), b.relay());
    a.write(0, PER_KEY_AND_PHASE).await;
    assert!(delivered(&topic, per_phase).await, "phase 1 was not delivered");

    // The server ends the active relay's lock connection (a network failure, an administrator):
    // that relay stops reading at its next poll and the standby takes the lock.
    let first = lock_holder(&db).await.expect("a relay holds the lock");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    let moved = txoutbox_testing::eventually(Duration::from_secs(20), || async {
        lock_holder(&db).await.is_some_and(|pid| pid != first)
    })
    .await;
    assert!(moved, "no relay took the lock over");
    b.write(PER_KEY_AND_PHASE, 2 * PER_KEY_AND_PHASE).await;
    assert!(
        delivered(&topic, 2 * per_phase).await,
        "phase 2 was not delivered"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    relay_a.shutdown().await.unwrap();
    relay_b.shutdown().await.unwrap();
    let records = kafka::read_all(&[topic]).await;
    let verdict = kafka::verdict(&records, key_seq);
    assert_eq!(verdict.distinct, 2 * per_phase as usize, "{verdict:?}");
    assert_eq!(
        verdict.duplicates, 0,
        "nothing was in flight when the lock moved: {verdict:?}"
    );
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    for replica in [a, b] {
        replica.pool.close().await;
    }
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_clones_of_one_store_are_refused_with_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let topic = kafka::new_topic("replicas-clone", 1).await;
    let replica = Replica::new(&db, &topic).await;
    let store = replica.outbox.store(replica.pool.clone());
    let first = Relay::new(store.clone(), kafka_sink(), relay_config())
        .unwrap()
        .start();
    let monitor = first.monitor();
    let started = txoutbox_testing::eventually(Duration::from_secs(10), || async {
        monitor.store() == txoutbox::Condition::Ok
    })
    .await;
    assert!(started, "the first relay never started");
    let second = Relay::new(store.clone(), kafka_sink(), relay_config())
        .unwrap()
        .start();
    let stopped =
        txoutbox_testing::eventually(Duration::from_secs(10), || async { second.is_finished() }).await;
    assert!(stopped, "the second relay did not stop by itself");
    let error = second.shutdown().await.unwrap_err().to_string();
    assert!(error.contains("give each relay its own store"), "{error}");

    // The refused relay took nothing from the first, which still relays; once it stops, the same
    // store serves a new relay.
    replica.write(0, 1).await;
    assert!(
        delivered(&topic, KEYS as i64).await,
        "the first relay stopped relaying"
    );
    first.shutdown().await.unwrap();
    let third = Relay::new(store, kafka_sink(), relay_config()).unwrap().start();
    replica.write(1, 2).await;
    assert!(
        delivered(&topic, 2 * KEYS as i64).await,
        "the store was not given back"
    );
    third.shutdown().await.unwrap();
    replica.pool.close().await;
    db.drop_schema().await;
}
