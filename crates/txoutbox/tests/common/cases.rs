//! The end-to-end cases, written once over [`E2eDb`] and run against every store.

use std::future::Future;
use std::time::Duration;

use txoutbox::Store;
use txoutbox_testing::kafka::{new_topic, read_all};

use super::broker::{Broker, Kafka};
use super::{Event, drained, relay_config, start_relay, verify};

/// One message of a test transaction, for one of the three topics.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    T0(Event<0>),
    T1(Event<1>),
    T2(Event<2>),
}

/// A store under test, with an outbox over three topics and an `orders` business table.
pub(crate) trait E2eDb: Clone + Send + Sync + 'static {
    type Store: Store + Clone;
    /// A transaction left open by [`E2eDb::publish_open`].
    type Open: Send;

    /// The relay's store.
    fn store(&self) -> Self::Store;

    /// In one transaction: inserts a business row, publishes each of `singles` with `publish`
    /// and `batch` with one `publish_all`, then commits or rolls back (see [`write_body`]).
    fn write(&self, singles: Vec<Msg>, batch: Vec<Event<0>>, commit: bool)
    -> impl Future<Output = ()> + Send;

    /// Begins a transaction, publishes `event` in it and leaves it open.
    fn publish_open(&self, event: Event<0>) -> impl Future<Output = Self::Open> + Send;

    /// Commits a transaction [`E2eDb::publish_open`] left open.
    fn commit_open(&self, open: Self::Open) -> impl Future<Output = ()> + Send;
}

/// `impl E2eDb for $ty`, the same on every store: `$ty` has fields `db` (with a `pool`) and
/// `outbox`; `$orders` (a closure of `&$ty`) names its `orders` table. A write begins a
/// transaction on the pool, inserts the business row, publishes each single through
/// `outbox.publish` and the batch through one `outbox.publish_all`, then commits or rolls back.
#[allow(unused_macros)] // reason: only the e2e binaries use it, not every binary of `common`
macro_rules! impl_e2e_db {
    ($ty:ty, $store:ty, $db:ty, $orders:expr) => {
        impl cases::E2eDb for $ty {
            type Store = $store;
            type Open = sqlx::Transaction<'static, $db>;

            fn store(&self) -> $store {
                self.store_over_pool()
            }

            async fn write(&self, singles: Vec<cases::Msg>, batch: Vec<Event<0>>, commit: bool) {
                let mut tx = self.db.pool.begin().await.unwrap();
                let orders: String = ($orders)(self);
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO {orders} (note) VALUES ('order')"
                )))
                .execute(&mut *tx)
                .await
                .unwrap();
                for m in &singles {
                    match m {
                        cases::Msg::T0(e) => self.outbox.publish(&mut *tx, e).await,
                        cases::Msg::T1(e) => self.outbox.publish(&mut *tx, e).await,
                        cases::Msg::T2(e) => self.outbox.publish(&mut *tx, e).await,
                    }
                    .unwrap();
                }
                self.outbox.publish_all(&mut *tx, &batch).await.unwrap();
                if commit {
                    tx.commit().await.unwrap();
                } else {
                    tx.rollback().await.unwrap();
                }
            }

            async fn publish_open(&self, event: Event<0>) -> Self::Open {
                let mut tx = self.db.pool.begin().await.unwrap();
                self.outbox.publish(&mut *tx, &event).await.unwrap();
                tx
            }

            async fn commit_open(&self, open: Self::Open) {
                open.commit().await.unwrap();
            }
        }
    };
}
#[allow(unused_imports)] // reason: as above
pub(crate) use impl_e2e_db;

/// Three fresh topics of three partitions.
pub(crate) async fn three_new_topics(prefix: &str) -> Vec<String> {
    let mut topics = Vec::new();
    for i in 0..3 {
        topics.push(new_topic(&format!("{prefix}{i}"), 3).await);
    }
    topics
}

pub(crate) fn event<const N: usize>(key: &str, seq: u64) -> Event<N> {
    Event { key: key.into(), seq }
}

pub(crate) async fn rolled_back_transaction_publishes_nothing<D: E2eDb>(db: D, topics: &[String]) {
    rolled_back_transaction_publishes_nothing_on(&Kafka, db, topics).await;
}

/// [`rolled_back_transaction_publishes_nothing`] through `broker`.
pub(crate) async fn rolled_back_transaction_publishes_nothing_on<D: E2eDb>(
    broker: &impl Broker,
    db: D,
    topics: &[String],
) {
    db.write(vec![Msg::T0(event("a", 1))], vec![event("a", 2)], false)
        .await;
    db.write(vec![Msg::T0(event("b", 1))], vec![], true).await;
    let store = db.store();
    let relay = broker.start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();

    let records = broker.read_all(topics).await;
    assert_eq!(
        records.len(),
        1,
        "only the committed message may reach Kafka: {records:?}"
    );
    assert_eq!(records[0].key_str(), "b");
}

pub(crate) async fn ten_thousand_messages_arrive_once_in_key_order<D: E2eDb>(db: D, topics: &[String]) {
    ten_thousand_messages_arrive_once_in_key_order_on(&Kafka, db, topics).await;
}

/// [`ten_thousand_messages_arrive_once_in_key_order`] through `broker`.
pub(crate) async fn ten_thousand_messages_arrive_once_in_key_order_on<D: E2eDb>(
    broker: &impl Broker,
    db: D,
    topics: &[String],
) {
    const KEYS: u64 = 300;
    const TOTAL: u64 = 10_000;
    const WRITERS: u64 = 4;
    let store = db.store();
    // The relay streams while the writers commit.
    let relay = broker.start_relay(store.clone(), relay_config());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone();
        // Writer w owns the keys k with k % WRITERS == w, so each key's writes are serialized.
        writers.push(tokio::spawn(async move {
            let mut seq = vec![0u64; KEYS as usize];
            let mut written = 0;
            let mut n = w;
            while n < TOTAL {
                let (mut singles, mut batch) = (Vec::new(), Vec::new());
                for _ in 0..10 {
                    if n >= TOTAL {
                        break;
                    }
                    // KEYS is a multiple of WRITERS, so this key is one of this writer's own.
                    let k = n % KEYS;
                    seq[k as usize] += 1;
                    let (key, s) = (format!("key-{k}"), seq[k as usize]);
                    match k % 3 {
                        0 => batch.push(event(&key, s)),
                        1 => singles.push(Msg::T1(event(&key, s))),
                        _ => singles.push(Msg::T2(event(&key, s))),
                    }
                    written += 1;
                    n += WRITERS;
                }
                db.write(singles, batch, true).await;
            }
            written
        }));
    }
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert_eq!(written, TOTAL);

    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    let verdict = verify(&broker.read_all(topics).await);
    assert_eq!(verdict.distinct as u64, TOTAL, "{verdict:?}");
    assert_eq!(
        verdict.duplicates, 0,
        "a fault-free run sends each message once: {verdict:?}"
    );
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
}

pub(crate) async fn relay_stopped_mid_stream_and_restarted_loses_nothing<D: E2eDb>(db: D, topics: &[String]) {
    relay_stopped_mid_stream_and_restarted_loses_nothing_on(&Kafka, db, topics).await;
}

/// [`relay_stopped_mid_stream_and_restarted_loses_nothing`] through `broker`.
pub(crate) async fn relay_stopped_mid_stream_and_restarted_loses_nothing_on<D: E2eDb>(
    broker: &impl Broker,
    db: D,
    topics: &[String],
) {
    const TOTAL: u64 = 20_000;
    let events: Vec<Event<0>> = (0..TOTAL).map(|i| event(&format!("k{}", i % 101), i)).collect();
    for chunk in events.chunks(2_000) {
        db.write(vec![], chunk.to_vec(), true).await;
    }
    let store = db.store();
    // Small batches, so the stop lands mid-stream.
    let config = relay_config().with_batch_size(100).with_max_in_flight(200);
    let relay = broker.start_relay(store.clone(), config.clone());
    let started = txoutbox_testing::eventually(Duration::from_secs(60), || async {
        store.backlog().await.unwrap().pending < TOTAL - 2_000
    })
    .await;
    assert!(started, "the relay made no progress");
    relay.shutdown().await.unwrap();
    let left = store.backlog().await.unwrap().pending;
    assert!(
        left > 0,
        "the stop should land mid-stream (all {TOTAL} were already sent)"
    );

    let relay = broker.start_relay(store.clone(), config);
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    let verdict = verify(&broker.read_all(&topics[..1]).await);
    assert_eq!(verdict.distinct as u64, TOTAL, "{verdict:?}");
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
    assert_eq!(
        verdict.duplicates, 0,
        "a graceful stop completes what Kafka acknowledged: {verdict:?}"
    );
}

/// Relays `ids` (just written by one `publish_all`) and checks the consumer sees exactly them.
pub(crate) async fn bulk_batch_arrives_whole<D: E2eDb>(db: D, topics: &[String], ids: &[uuid::Uuid]) {
    let store = db.store();
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(60)).await;
    relay.shutdown().await.unwrap();
    let records = read_all(&topics[1..2]).await;
    let verdict = verify(&records);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (ids.len(), 0, 0)
    );
    let sent: std::collections::HashSet<String> = ids.iter().map(|id| id.to_string()).collect();
    let got: std::collections::HashSet<String> = records
        .iter()
        .map(|r| r.header(txoutbox::MESSAGE_ID_HEADER).unwrap().to_owned())
        .collect();
    assert_eq!(
        sent, got,
        "the ids publish_all returned are the ids consumers see"
    );
}

/// The 1,000 events of [`publish_all_is_one_statement_and_all_arrive`], over 37 keys.
pub(crate) fn thousand_events() -> Vec<Event<1>> {
    (0..1000).map(|i| event(&format!("k{}", i % 37), i)).collect()
}

/// `publish_all` of the [`thousand_events`] is one statement, returns the ids, and all of them
/// arrive. `counted` commits them with one `publish_all` and returns the ids it gave and whether
/// the database saw a single statement write them all (each store checks it its own way).
pub(crate) async fn publish_all_is_one_statement_and_all_arrive<D: E2eDb>(
    db: D,
    topics: &[String],
    counted: impl Future<Output = (Vec<uuid::Uuid>, bool)>,
) {
    let (ids, one_statement) = counted.await;
    assert_eq!(ids.len(), 1000);
    assert!(one_statement, "publish_all must write the batch in one statement");
    bulk_batch_arrives_whole(db, topics, &ids).await;
}

/// A relay over a table that was never migrated stops by itself with `SchemaNotReady`, which
/// says what to do.
pub(crate) async fn relay_on_a_missing_table_stops_with_a_clear_error(store: impl Store) {
    let relay = start_relay(store, relay_config());
    let stopped =
        txoutbox_testing::eventually(Duration::from_secs(30), || async { relay.is_finished() }).await;
    assert!(stopped, "the relay should stop by itself");
    let err = relay.shutdown().await.unwrap_err();
    assert!(matches!(err, txoutbox::Error::SchemaNotReady { .. }), "{err}");
    assert!(err.to_string().contains("run the migrations"), "{err}");
}

/// Commit order is not id order: a transaction that took its id early and commits late must
/// still go before the later messages of its key, even when the relay has read past its id.
pub(crate) async fn late_committing_transaction_keeps_its_key_in_order<D: E2eDb>(db: D, topics: &[String]) {
    let store = db.store();
    // A long poll interval: only wake-ups and the cursor's late-commit lookup can find rows.
    let relay = start_relay(
        store.clone(),
        relay_config().with_poll_interval(Duration::from_secs(60)),
    );
    let wakeup = relay.wakeup();

    let early = db.publish_open(event("k", 1)).await;
    db.write(vec![Msg::T0(event("other", 1))], vec![], true).await;
    wakeup.notify();
    // The relay reads past the early row's id while it is still invisible.
    drained(&store, Duration::from_secs(30)).await;
    db.commit_open(early).await;
    db.write(vec![Msg::T0(event("k", 2))], vec![], true).await;
    wakeup.notify();
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();

    let records = read_all(&topics[..1]).await;
    let verdict = verify(&records);
    assert_eq!((verdict.distinct, verdict.duplicates), (3, 0), "{verdict:?}");
    assert_eq!(
        verdict.order_violations, 0,
        "k:2 overtook the late-committing k:1: {records:?}"
    );
}

/// Without push notifications (SQLite, MySQL), an outbox transaction's commit wakes the relay of
/// the same process directly. `commit_woken(wakeup, seq)` commits a business row and
/// `Event<0> { key: "k", seq }` through an outbox that wakes `wakeup` (its `begin` transaction).
pub(crate) async fn a_commit_wakes_the_in_process_relay<D, F, Fut>(db: D, topics: &[String], commit_woken: F)
where
    D: E2eDb,
    F: Fn(txoutbox::Wakeup, u64) -> Fut,
    Fut: Future<Output = ()>,
{
    // A poll interval far beyond the test: only the wake-up can deliver in time.
    let relay = start_relay(
        db.store(),
        relay_config().with_poll_interval(Duration::from_secs(60)),
    );
    // (The first message may also be found by the relay's first look at start; the next two
    // can only be found through the wake-up.)
    for seq in 1..=3 {
        let started = std::time::Instant::now();
        commit_woken(relay.wakeup(), seq).await;
        // Well below the 60 s poll interval, so only the wake-up can make it; loose enough for a
        // loaded machine (a fresh topic's first write can wait for its leader).
        let arrived = txoutbox_testing::eventually(Duration::from_secs(20), || async {
            txoutbox_testing::kafka::count(&topics[..1]).await >= seq as i64
        })
        .await;
        assert!(
            arrived && started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }
    relay.shutdown().await.unwrap();
    let verdict = verify(&read_all(&topics[..1]).await);
    assert_eq!(
        (verdict.distinct, verdict.duplicates, verdict.order_violations),
        (3, 0, 0)
    );
}
