//! End to end in PostgreSQL WAL mode: application transaction → transactional logical message →
//! replication slot → relay → Kafka → consumer. Each test has its own schema, slot and topics,
//! and drops the slot at the end (slots are global per database).
#![cfg(feature = "postgres-wal")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::cases::{self, E2eDb, three_new_topics};
use common::{Event, drained, relay_config, start_relay, three_topics, verify};
use sqlx::AssertSqlSafe;
use txoutbox::Store;
use txoutbox::postgres_wal::{PgWalOutbox, PgWalStore, WalConfig};
use txoutbox_testing::kafka::read_all;
use txoutbox_testing::postgres::{TestSchema, url};

#[derive(Clone)]
struct Wal {
    db: Arc<TestSchema>,
    outbox: PgWalOutbox,
}

impl Wal {
    async fn new(topics: &[String]) -> Self {
        Self::with_config(topics, |c| c).await
    }

    /// With the test's slot, prefix and dead-letter table, then `adjust`.
    async fn with_config(topics: &[String], adjust: impl FnOnce(WalConfig) -> WalConfig) -> Self {
        txoutbox_testing::init_tracing();
        let db = TestSchema::new().await;
        let config = adjust(
            WalConfig::default()
                .with_slot(txoutbox_testing::unique("e2e_wal"))
                .with_prefix(txoutbox_testing::unique("txoutbox"))
                .with_dead_letter_table(db.table())
                .with_status_interval(Duration::from_millis(200)),
        );
        let outbox = PgWalOutbox::new(three_topics(topics), config).unwrap();
        outbox.migrate(&db.pool).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)",
            db.qualify("orders")
        )))
        .execute(&db.pool)
        .await
        .unwrap();
        Self {
            db: Arc::new(db),
            outbox,
        }
    }

    /// Drops the slot (once the last store's session ended) and the schema.
    async fn teardown(self) {
        let (outbox, pool) = (self.outbox.clone(), self.db.pool.clone());
        let dropped = txoutbox_testing::eventually(Duration::from_secs(30), || {
            let (outbox, pool) = (outbox.clone(), pool.clone());
            async move { outbox.drop_slot(&pool).await.is_ok() }
        })
        .await;
        assert!(dropped, "the test's replication slot could not be dropped");
        if let Ok(db) = Arc::try_unwrap(self.db) {
            db.drop_schema().await;
        }
    }

    /// The dead letters: the dead-letter table is a regular outbox table, whose store lists them.
    async fn dead_letters(&self) -> Vec<txoutbox::DeadLetter> {
        use txoutbox::DeadLetters;
        txoutbox::postgres::PgOutbox::with_table(txoutbox::Topics::new(), self.db.table())
            .store(self.db.pool.clone())
            .list_dead(&txoutbox::DeadLetterFilter::all(), 10)
            .await
            .unwrap()
    }
}

cases::impl_e2e_db!(Wal, PgWalStore, sqlx::Postgres, |db: &Wal| db
    .db
    .qualify("orders"));

impl Wal {
    /// The relay's store.
    fn store_over_pool(&self) -> PgWalStore {
        self.outbox.store(self.db.pool.clone(), &url()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_publishes_nothing() {
    let topics = three_new_topics("wal-rollback").await;
    let db = Wal::new(&topics).await;
    cases::rolled_back_transaction_publishes_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_from_concurrent_writers_arrive_once_in_key_order() {
    let topics = three_new_topics("wal-10k").await;
    let db = Wal::new(&topics).await;
    cases::ten_thousand_messages_arrive_once_in_key_order(db.clone(), &topics).await;
    db.teardown().await;
}

/// The scale-out road of WAL mode: several relays, each streaming a slot of its own and relaying
/// only the messages of its prefix, on one database. Transactions publish to both prefixes at
/// once; each relay's topics get exactly their own messages, once, in key order (a relay that
/// took the other prefix's messages too would send them to the other relay's topics, twice), and
/// a rolled-back transaction reaches neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_slots_with_their_own_prefixes_split_the_stream_without_crossing() {
    const TOTAL: u64 = 4_000;
    let topics_a = three_new_topics("wal-split-a").await;
    let topics_b = three_new_topics("wal-split-b").await;
    let a = Wal::new(&topics_a).await;
    let b = Wal::new(&topics_b).await;
    let (store_a, store_b) = (a.store_over_pool(), b.store_over_pool());
    let relay_a = start_relay(store_a.clone(), relay_config());
    let relay_b = start_relay(store_b.clone(), relay_config());
    let events: Vec<Event<0>> = (0..TOTAL)
        .map(|i| cases::event(&format!("k{}", i % 97), i))
        .collect();
    for chunk in events.chunks(20) {
        let mut tx = a.db.pool.begin().await.unwrap();
        a.outbox.publish_all(&mut *tx, chunk).await.unwrap();
        b.outbox.publish_all(&mut *tx, chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = a.db.pool.begin().await.unwrap();
    let rolled_back = [cases::event::<0>("k-rolled-back", 0)];
    a.outbox.publish_all(&mut *tx, &rolled_back).await.unwrap();
    b.outbox.publish_all(&mut *tx, &rolled_back).await.unwrap();
    tx.rollback().await.unwrap();
    drained(&store_a, Duration::from_secs(120)).await;
    drained(&store_b, Duration::from_secs(120)).await;
    relay_a.shutdown().await.unwrap();
    relay_b.shutdown().await.unwrap();
    // Their replication sessions end with the last clones: the slots can then be dropped.
    drop((store_a, store_b));
    for (name, topics) in [("a", &topics_a), ("b", &topics_b)] {
        let records = read_all(topics).await;
        let verdict = verify(&records);
        assert_eq!(verdict.distinct as u64, TOTAL, "relay {name}: {verdict:?}");
        assert_eq!(verdict.duplicates, 0, "relay {name}: {verdict:?}");
        assert_eq!(verdict.order_violations, 0, "relay {name}: {verdict:?}");
        assert!(
            records.iter().all(|r| r.key_str() != "k-rolled-back"),
            "relay {name} sent a rolled-back message"
        );
    }
    a.teardown().await;
    b.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_mid_stream_and_started_again_loses_nothing() {
    let topics = three_new_topics("wal-restart").await;
    let db = Wal::new(&topics).await;
    cases::relay_stopped_mid_stream_and_restarted_loses_nothing(db.clone(), &topics).await;
    db.teardown().await;
}

/// A new process after the stop: a fresh store streams the slot again from its confirmed
/// position. Nothing is lost; what Kafka acknowledged after the last confirmation reaches it again
/// (counted, not forbidden).
/// WAL mode streams in commit order: a transaction that took its id early and commits late is
/// still sent before the later messages of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_keeps_its_key_in_order() {
    let topics = three_new_topics("wal-late").await;
    let wal = Wal::new(&topics).await;
    cases::late_committing_transaction_keeps_its_key_in_order(wal.clone(), &topics).await;
    wal.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_relay_process_replays_from_the_confirmed_position_and_loses_nothing() {
    const TOTAL: u64 = 20_000;
    let topics = three_new_topics("wal-newproc").await;
    let db = Wal::new(&topics).await;
    let events: Vec<Event<0>> = (0..TOTAL)
        .map(|i| Event {
            key: format!("k{}", i % 101),
            seq: i,
        })
        .collect();
    for chunk in events.chunks(2_000) {
        db.write(vec![], chunk.to_vec(), true).await;
    }
    let config = relay_config().with_batch_size(100).with_max_in_flight(200);
    let store = db.store();
    let relay = start_relay(store.clone(), config.clone());
    let started = txoutbox_testing::eventually(Duration::from_secs(60), || async {
        store.backlog().await.unwrap().pending < TOTAL - 2_000
    })
    .await;
    assert!(started, "the relay made no progress");
    relay.shutdown().await.unwrap();
    let left = store.backlog().await.unwrap().pending;
    assert!(left > 0, "the stop should land mid-stream");
    // No flush_confirmation: the process "dies" with its last confirmations perhaps unsent.
    drop(store);

    // The next process: its store waits for the old session to end, then streams the slot.
    let store = db.store();
    let relay = start_relay(store.clone(), config);
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    assert!(store.flush_confirmation(Duration::from_secs(10)).await.unwrap());
    drop(store);

    let verdict = verify(&read_all(&topics[..1]).await);
    eprintln!(
        "new relay process after a stop at {left} left: {} distinct, {} duplicates",
        verdict.distinct, verdict.duplicates
    );
    assert_eq!(verdict.distinct as u64, TOTAL, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");

    // Everything was confirmed: a third process finds nothing to send.
    let store = db.store();
    assert_eq!(store.backlog().await.unwrap().pending, 0);
    drop(store);
    db.teardown().await;
}

/// The replication connection is killed three times while writers commit (as a database restart
/// or a network cut would end it): the stream reconnects, resumes from the confirmed position and
/// skips what it had buffered already, so nothing is lost and nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replication_connection_resumes_without_loss_or_duplicates() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const TXS: usize = 100;
    const PER_TX: usize = 100;
    let topics = three_new_topics("wal-reconnect").await;
    let db = Wal::new(&topics).await;
    let store = db.store();
    let relay = start_relay(store.clone(), relay_config());
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (db, written) = (db.clone(), Arc::clone(&written));
        tokio::spawn(async move {
            for t in 0..TXS {
                let batch: Vec<Event<0>> = (0..PER_TX)
                    .map(|j| Event {
                        key: format!("k{}", j % 50),
                        seq: (t * PER_TX + j) as u64,
                    })
                    .collect();
                db.write(vec![], batch, true).await;
                written.fetch_add(1, Ordering::Release);
            }
        })
    };
    let slot = db.outbox.config().slot.clone();
    // Each kill ends a different stream: the walsender of the previous kill may still show the
    // slot as active while it exits, so the test waits for a new pid and terminates that pid only
    // (checking and killing in one step would race with the stream's own reconnects).
    let last_killed = std::cell::Cell::new(None::<i32>);
    for kill in 1..=3 {
        let killed = txoutbox_testing::eventually(Duration::from_secs(60), || async {
            if written.load(Ordering::Acquire) < kill * TXS / 4 {
                return false;
            }
            let ended = end_active_stream(&db.db.pool, &slot, last_killed.get()).await;
            if ended.is_some() {
                last_killed.set(ended);
            }
            ended.is_some()
        })
        .await;
        assert!(killed, "no active stream to end before kill {kill}");
    }
    writer.await.unwrap();
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    drop(store);
    let verdict = verify(&read_all(&topics[..1]).await);
    assert_eq!(verdict.distinct, TXS * PER_TX, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");
    db.teardown().await;
}

/// Ends the replication stream reading `slot` (as a database restart would), unless its walsender
/// is `previous` (one already told to end, still exiting). Returns the pid it ended.
async fn end_active_stream(pool: &sqlx::PgPool, slot: &str, previous: Option<i32>) -> Option<i32> {
    let pid: i32 =
        sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active")
            .bind(slot)
            .fetch_optional(pool)
            .await
            .unwrap()
            .flatten()
            .filter(|pid| Some(*pid) != previous)?;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    ended.then_some(pid)
}

/// The child side of the `kill -9` test: a relay process over the slot named in the environment
/// that runs until it is killed. A no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_relay_child_process() {
    let Ok(slot) = std::env::var("TXOUTBOX_WAL_CHILD_SLOT") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let topics: Vec<String> = var("TXOUTBOX_WAL_CHILD_TOPICS")
        .split(',')
        .map(str::to_owned)
        .collect();
    let table =
        txoutbox::TableName::with_schema(var("TXOUTBOX_WAL_CHILD_SCHEMA"), "outbox_messages").unwrap();
    let config = WalConfig::default()
        .with_slot(slot)
        .with_prefix(var("TXOUTBOX_WAL_CHILD_PREFIX"))
        .with_dead_letter_table(table)
        .with_status_interval(Duration::from_millis(50));
    let outbox = PgWalOutbox::new(three_topics(&topics), config).unwrap();
    let pool = sqlx::PgPool::connect(&url()).await.unwrap();
    let store = outbox.store(pool, &url()).unwrap();
    let _relay = start_relay(
        store,
        relay_config().with_batch_size(200).with_max_in_flight(1_000),
    );
    std::future::pending::<()>().await;
}

/// `kill -9` of the relay process, 20 times over 100,000 messages (each kill once the process
/// confirmed some progress): each new process replays from the slot's confirmed position.
/// Nothing is lost, per-key order holds, duplicates are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_processes_killed_with_sigkill_lose_nothing() {
    const TXS: usize = 1_000;
    const PER_TX: usize = 100;
    const KILLS: i64 = 20;
    let topics = three_new_topics("wal-kill9").await;
    let db = Wal::new(&topics).await;
    for t in 0..TXS {
        let batch: Vec<Event<0>> = (0..PER_TX)
            .map(|j| Event {
                key: format!("k{}", j % 37),
                seq: (t * PER_TX + j) as u64,
            })
            .collect();
        db.write(vec![], batch, true).await;
    }
    let total = (TXS * PER_TX) as i64;
    let config = db.outbox.config().clone();
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "wal_relay_child_process", "--nocapture"])
            .env("TXOUTBOX_WAL_CHILD_SLOT", &config.slot)
            .env("TXOUTBOX_WAL_CHILD_PREFIX", &config.prefix)
            .env("TXOUTBOX_WAL_CHILD_SCHEMA", &db.db.schema)
            .env("TXOUTBOX_WAL_CHILD_TOPICS", topics.join(","))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut killed_at = Vec::new();
    // Only for slot_status: never streams.
    let watcher = db.store();
    for kill in 1..=KILLS {
        let before = txoutbox_testing::kafka::count(&topics[..1]).await;
        let confirmed_before = watcher.slot_status().await.unwrap().confirmed_lsn;
        let mut child = spawn();
        // Kill once this process has sent something and confirmed some of it.
        let progressed = txoutbox_testing::eventually(Duration::from_secs(60), || async {
            txoutbox_testing::kafka::count(&topics[..1]).await > before
                && watcher.slot_status().await.unwrap().confirmed_lsn != confirmed_before
        })
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !progressed {
            // Everything was sent and confirmed by an earlier process: nothing left to kill. (The
            // killed process's walsender may hold the slot a moment longer.)
            let released = txoutbox_testing::eventually(Duration::from_secs(30), || async {
                watcher.backlog().await.is_ok()
            })
            .await;
            assert!(released, "the killed relay's slot was not released");
            let left = watcher.backlog().await.unwrap().pending;
            assert_eq!(left, 0, "relay process {kill} made no progress");
            break;
        }
        killed_at.push(txoutbox_testing::kafka::count(&topics[..1]).await);
    }
    // A last relay, in this process, finishes.
    drop(watcher);
    let store = db.store();
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    drop(store);
    let verdict = verify(&read_all(&topics[..1]).await);
    // How many kills land mid-stream depends on the machine's speed (a fast relay drains the
    // backlog in a few lives); at least one must have, or the crash path was not exercised.
    assert!(!killed_at.is_empty(), "no kill landed mid-stream");
    eprintln!(
        "{} x kill -9 over {total} messages (records in Kafka at each kill: {killed_at:?}): \
         {} distinct, {} duplicates, {} order violations",
        killed_at.len(),
        verdict.distinct,
        verdict.duplicates,
        verdict.order_violations
    );
    assert_eq!(verdict.distinct as i64, total, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    db.teardown().await;
}

/// A message Kafka refuses for good dies: its copy reaches the dead-letter topic with the reason
/// and the message id the dead-letter table holds, and without a row id (the WAL store's ids are
/// per session and name no row of that table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_copy_carries_the_message_id_of_its_dead_letter_and_no_row_id() {
    use txoutbox::{DeadLetterTopic, Relay, RetryPolicy};

    let topics = three_new_topics("wal-dead").await;
    let dead_letter_topic = format!("{}.dead", topics[0]);
    txoutbox_testing::kafka::create_topics(&[&dead_letter_topic], 1).await;
    let db = Wal::new(&topics).await;
    let poison = common::oversize(db.outbox.topics(), "poison");
    let poison_id = poison.message_id;
    db.outbox.publish_message(&db.db.pool, poison).await.unwrap();
    db.write(
        vec![],
        (2..=4).map(|seq| Event { key: "k".into(), seq }).collect(),
        true,
    )
    .await;

    // A producer that refuses records over 10 kB: the padded one dies on its first attempt.
    let sink = common::small_sink();
    let config = relay_config()
        .with_retry(RetryPolicy::default().with_max_attempts(1))
        .with_dead_letter_topic(DeadLetterTopic::new("{topic}.dead").unwrap());
    let store = db.store();
    let relay = Relay::new(store.clone(), sink, config).unwrap().start();
    drained(&store, Duration::from_secs(60)).await;
    relay.shutdown().await.unwrap();

    let dead_letters = [dead_letter_topic];
    let copies = read_all(&dead_letters).await;
    assert_eq!(copies.len(), 1, "one copy");
    let copy = &copies[0];
    let dead = db.dead_letters().await;
    assert_eq!(dead.len(), 1, "one dead letter in the table");
    assert_eq!(dead[0].message_id, poison_id.to_string());
    assert_eq!(
        copy.header("txoutbox-message-id"),
        Some(dead[0].message_id.as_str())
    );
    assert_eq!(
        copy.header("txoutbox-dead-letter-topic"),
        Some(topics[0].as_str())
    );
    assert_eq!(
        copy.header("txoutbox-dead-letter-row"),
        None,
        "{:?}",
        copy.headers
    );
    assert_eq!(
        read_all(&topics[..1]).await.len(),
        3,
        "the other messages went on"
    );
    drop(store);
    db.teardown().await;
}

/// An envelope no reader understands (a foreign writer's) has no topic: its dead-letter copy goes
/// to the template with `txoutbox-unreadable` for `{topic}`, carrying its dead letter's message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_envelope_is_copied_to_the_unreadable_dead_letter_topic() {
    use txoutbox::{DeadLetterTopic, Relay, RetryPolicy};

    let topics = three_new_topics("wal-unreadable").await;
    let suffix = txoutbox_testing::unique("dead");
    let unreadable_copies = format!("{}.{suffix}", txoutbox::UNREADABLE_TOPIC);
    txoutbox_testing::kafka::create_topics(&[&unreadable_copies], 1).await;
    let db = Wal::new(&topics).await;
    // Version 2 of the envelope does not exist.
    sqlx::query("SELECT pg_logical_emit_message(true, $1, '\\x0200'::bytea)")
        .bind(&db.outbox.config().prefix)
        .execute(&db.db.pool)
        .await
        .unwrap();
    db.write(
        vec![],
        (1..=2).map(|seq| Event { key: "k".into(), seq }).collect(),
        true,
    )
    .await;

    let config = relay_config()
        .with_retry(RetryPolicy::default().with_max_attempts(1))
        .with_dead_letter_topic(DeadLetterTopic::new(format!("{{topic}}.{suffix}")).unwrap());
    let store = db.store();
    let relay = Relay::new(store.clone(), common::kafka_sink(), config)
        .unwrap()
        .start();
    drained(&store, Duration::from_secs(60)).await;
    relay.shutdown().await.unwrap();

    let copies = read_all(std::slice::from_ref(&unreadable_copies)).await;
    assert_eq!(copies.len(), 1, "one copy of the unreadable envelope");
    let dead = db.dead_letters().await;
    assert_eq!(dead.len(), 1, "one dead letter in the table");
    assert_eq!(
        copies[0].header("txoutbox-message-id"),
        Some(dead[0].message_id.as_str())
    );
    let error = copies[0].header("txoutbox-dead-letter-error").unwrap_or_default();
    assert!(error.contains("unknown envelope version 2"), "{error}");
    assert_eq!(
        read_all(&topics[..1]).await.len(),
        2,
        "the readable messages went on"
    );
    drop(store);
    db.teardown().await;
}

/// One transaction many times larger than the relay's buffer (100,000 messages against a buffer
/// of 1,000 messages or 256 KiB): its messages stream to Kafka before its commit is read, the
/// buffer never holds more than its limit, and a replication connection lost in the middle of it
/// resumes where the transaction was, without a message lost or sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_the_buffer_streams_through_it_and_survives_a_lost_connection() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const MESSAGES: usize = 100_000;
    let topics = three_new_topics("wal-large").await;
    let db = Wal::with_config(&topics, |c| {
        c.with_max_buffered(1_000).with_max_buffered_bytes(256 << 10)
    })
    .await;
    let store = db.store();
    let relay = start_relay(store.clone(), relay_config());
    let batch: Vec<Event<0>> = (0..MESSAGES)
        .map(|i| Event {
            key: format!("k{}", i % 50),
            seq: i as u64,
        })
        .collect();
    db.write(vec![], batch, true).await;
    // Watch the buffer while the transaction streams, and cut the replication connection once
    // part of it is delivered.
    let most = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (store, most, stop) = (store.clone(), Arc::clone(&most), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(status) = store.slot_status().await {
                    most.fetch_max(status.buffered, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let part = txoutbox_testing::eventually(Duration::from_secs(60), || async {
        txoutbox_testing::kafka::count(&topics[..1]).await >= (MESSAGES / 10) as i64
    })
    .await;
    assert!(
        part,
        "a part of the transaction went out before its commit was taken"
    );
    let killed = txoutbox_testing::eventually(Duration::from_secs(30), || async {
        end_active_stream(&db.db.pool, &db.outbox.config().slot, None)
            .await
            .is_some()
    })
    .await;
    assert!(killed, "no active stream to end");
    drained(&store, Duration::from_secs(120)).await;
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    relay.shutdown().await.unwrap();
    drop(store);
    let verdict = verify(&read_all(&topics[..1]).await);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (MESSAGES, 0, 0),
        "{verdict:?}"
    );
    let most = most.load(Ordering::Relaxed);
    assert!(most <= 1_000, "the buffer held {most} messages");
    db.teardown().await;
}
