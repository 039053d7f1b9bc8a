//! The end-to-end cases, written once over [`E2eDb`] and run against every store.

use std::future::Future;
use std::time::Duration;

use txoutbox::Store;
use txoutbox_testing::kafka::{new_topic, read_all};

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

    /// The relay's store.
    fn store(&self) -> Self::Store;

    /// In one transaction: inserts a business row, publishes each of `singles` with `publish`
    /// and `batch` with one `publish_all`, then commits or rolls back.
    fn write(&self, singles: Vec<Msg>, batch: Vec<Event<0>>, commit: bool)
    -> impl Future<Output = ()> + Send;
}

/// Three fresh topics of three partitions.
pub(crate) async fn three_new_topics(prefix: &str) -> Vec<String> {
    let mut topics = Vec::new();
    for i in 0..3 {
        topics.push(new_topic(&format!("{prefix}{i}"), 3).await);
    }
    topics
}

fn event<const N: usize>(key: &str, seq: u64) -> Event<N> {
    Event { key: key.into(), seq }
}

pub(crate) async fn rolled_back_transaction_publishes_nothing<D: E2eDb>(db: D, topics: &[String]) {
    db.write(vec![Msg::T0(event("a", 1))], vec![event("a", 2)], false)
        .await;
    db.write(vec![Msg::T0(event("b", 1))], vec![], true).await;
    let store = db.store();
    let relay = start_relay(store.clone(), relay_config());
    drained(&store, Duration::from_secs(30)).await;
    relay.shutdown().await.unwrap();

    let records = read_all(topics).await;
    assert_eq!(
        records.len(),
        1,
        "only the committed message may reach Kafka: {records:?}"
    );
    assert_eq!(records[0].key_str(), "b");
}

pub(crate) async fn ten_thousand_messages_arrive_once_in_key_order<D: E2eDb>(db: D, topics: &[String]) {
    const KEYS: u64 = 300;
    const TOTAL: u64 = 10_000;
    const WRITERS: u64 = 4;
    let store = db.store();
    // The relay streams while the writers commit.
    let relay = start_relay(store.clone(), relay_config());
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
    let verdict = verify(&read_all(topics).await);
    assert_eq!(verdict.distinct as u64, TOTAL, "{verdict:?}");
    assert_eq!(
        verdict.duplicates, 0,
        "a fault-free run sends each message once: {verdict:?}"
    );
    assert_eq!(verdict.order_violations, 0, "{verdict:?}");
}

pub(crate) async fn relay_stopped_mid_stream_and_restarted_loses_nothing<D: E2eDb>(db: D, topics: &[String]) {
    const TOTAL: u64 = 20_000;
    let events: Vec<Event<0>> = (0..TOTAL).map(|i| event(&format!("k{}", i % 101), i)).collect();
    for chunk in events.chunks(2_000) {
        db.write(vec![], chunk.to_vec(), true).await;
    }
    let store = db.store();
    // Small batches, so the stop lands mid-stream.
    let config = relay_config().with_batch_size(100).with_max_in_flight(200);
    let relay = start_relay(store.clone(), config.clone());
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

    let relay = start_relay(store.clone(), config);
    drained(&store, Duration::from_secs(120)).await;
    relay.shutdown().await.unwrap();
    let verdict = verify(&read_all(&topics[..1]).await);
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
