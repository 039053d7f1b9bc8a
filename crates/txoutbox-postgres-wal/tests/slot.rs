//! The WAL store against a real PostgreSQL with `wal_level = logical`: decoding in commit order,
//! confirmation only past completed transactions, replay after a restart, dead letters, and one
//! streaming relay per slot. Each test has its own schema and slot, and drops both.

use std::time::Duration;

use serde::Serialize;
use txoutbox_core::{Completion, Failure, Store, Topic, Topics};
use txoutbox_postgres_wal::{PgWalOutbox, PgWalStore, WalConfig};
use txoutbox_testing::postgres::{TestSchema, url};

#[derive(Serialize)]
struct Ev {
    key: String,
    n: u32,
}

struct Fixture {
    db: TestSchema,
    outbox: PgWalOutbox,
}

impl Fixture {
    async fn new(config: WalConfig) -> Self {
        txoutbox_testing::init_tracing();
        let db = TestSchema::new().await;
        let topics = Topics::new()
            .with(
                Topic::<Ev>::json("wal-events")
                    .unwrap()
                    .key(|e| e.key.clone())
                    .header("origin", "wal-test"),
            )
            .unwrap();
        let slot = txoutbox_testing::unique("wal");
        let config = config
            .with_slot(slot)
            .with_prefix(txoutbox_testing::unique("txoutbox"))
            .with_dead_letter_table(db.table())
            .with_status_interval(Duration::from_millis(100));
        let outbox = PgWalOutbox::new(topics, config).unwrap();
        outbox.migrate(&db.pool).await.unwrap();
        Self { db, outbox }
    }

    fn store(&self) -> PgWalStore {
        self.outbox.store(self.db.pool.clone(), &url()).unwrap()
    }

    async fn write(&self, events: &[(&str, u32)], commit: bool) {
        let mut tx = self.db.pool.begin().await.unwrap();
        let (first, rest) = events.split_first().unwrap();
        self.outbox
            .publish(
                &mut *tx,
                &Ev {
                    key: first.0.into(),
                    n: first.1,
                },
            )
            .await
            .unwrap();
        let rest: Vec<Ev> = rest
            .iter()
            .map(|(k, n)| Ev {
                key: (*k).into(),
                n: *n,
            })
            .collect();
        self.outbox.publish_all(&mut *tx, &rest).await.unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }

    async fn teardown(self) {
        let outbox = self.outbox.clone();
        // The last store was dropped: wait for PostgreSQL to see its session end.
        let pool = self.db.pool.clone();
        let released = txoutbox_testing::eventually(Duration::from_secs(10), || {
            let (outbox, pool) = (outbox.clone(), pool.clone());
            async move { outbox.drop_slot(&pool).await.is_ok() }
        })
        .await;
        assert!(released, "the slot could not be dropped");
        self.db.drop_schema().await;
    }
}

/// The id of the `n`-th message (from 1) of a session whose messages start at `messages[0]`.
fn ids(messages: &[txoutbox_core::OutboxMessage]) -> impl Fn(i64) -> i64 + use<> {
    let first = messages.first().map_or(0, |m| m.id);
    move |n| first + n - 1
}

fn payload_n(m: &txoutbox_core::OutboxMessage) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap();
    v["n"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_messages_arrive_in_commit_order_and_a_restart_replays_the_unconfirmed() {
    let f = Fixture::new(WalConfig::default()).await;
    f.write(&[("a", 1), ("b", 2), ("a", 3)], true).await;
    f.write(&[("x", 99)], false).await; // rolled back: never decoded
    f.write(&[("c", 4), ("c", 5)], true).await;

    let store = f.store();
    // Before streaming, the backlog peeks the slot.
    assert_eq!(store.backlog().await.unwrap().pending, 5);
    store.lock_for_relay().await.unwrap();
    assert_eq!(store.backlog().await.unwrap().pending, 5);
    let all = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    assert_eq!(all.iter().map(payload_n).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    // Ids are consecutive in commit order, from a base of the session's own (see `ids`).
    let id = ids(&all);
    assert_eq!(
        all.iter().map(|m| m.id).collect::<Vec<_>>(),
        (1..=5).map(&id).collect::<Vec<_>>()
    );
    assert_eq!(all[0].key.as_deref(), Some(&b"a"[..]));
    assert_eq!(&*all[0].topic, "wal-events");
    assert!(
        all[0]
            .headers
            .contains(&("origin".to_owned(), "wal-test".to_owned()))
    );
    assert_eq!(
        store
            .fetch_after(id(3), txoutbox_core::ReadLimit::rows(100))
            .await
            .unwrap()
            .len(),
        2
    );

    // Completing part of the first transaction confirms nothing.
    store.complete(&[id(1), id(2)], Completion::Delete).await.unwrap();
    // The second transaction entirely: still nothing, the first is open.
    store.complete(&[id(4), id(5)], Completion::Delete).await.unwrap();
    assert_eq!(
        store
            .fetch_pending(txoutbox_core::ReadLimit::rows(100))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.flush_confirmation(Duration::from_secs(10)).await.unwrap());
    drop(store); // a crash: nothing of ours was confirmed

    let store = f.store();
    store.lock_for_relay().await.unwrap();
    store.backlog().await.unwrap(); // caught up
    let replayed = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    assert_eq!(
        replayed.iter().map(payload_n).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // Now the first transaction completes, the second not: the slot moves past the first only.
    // A new session numbers its messages afresh, apart from the last one's.
    let id = ids(&replayed);
    let old = ids(&all);
    assert!(
        id(1) > old(5),
        "a new session's ids never meet an earlier session's"
    );
    store
        .complete(&[id(1), id(2), id(3)], Completion::Delete)
        .await
        .unwrap();
    assert!(
        store.flush_confirmation(Duration::from_secs(10)).await.unwrap(),
        "the slot was not confirmed past the completed transaction"
    );
    assert!(store.slot_status().await.unwrap().confirmed_lsn.is_some());
    drop(store);

    let store = f.store();
    store.lock_for_relay().await.unwrap();
    store.backlog().await.unwrap();
    let left = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    assert_eq!(left.iter().map(payload_n).collect::<Vec<_>>(), vec![4, 5]);
    let id = ids(&left);
    store.complete(&[id(1), id(2)], Completion::Delete).await.unwrap();
    assert_eq!(store.backlog().await.unwrap().pending, 0);
    drop(store);
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_buffered_and_dead_letters_land_in_the_table() {
    let f = Fixture::new(WalConfig::default()).await;
    f.write(&[("a", 1), ("a", 2)], true).await;
    let store = f.store();
    store.lock_for_relay().await.unwrap();
    assert_eq!(store.backlog().await.unwrap().pending, 2);
    let id = ids(&store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap());
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    store
        .record_failures(&[
            Failure {
                id: id(1),
                attempts: 1,
                error: "broker said no".into(),
                next_attempt_at: Some(later),
            },
            Failure {
                id: id(2),
                attempts: 3,
                error: "too large".into(),
                next_attempt_at: None,
            },
        ])
        .await
        .unwrap();
    let left = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].id, left[0].attempts, left[0].next_attempt_at),
        (id(1), 1, Some(later))
    );
    let backlog = store.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead), (1, 1));
    let (topic, error, attempts): (String, String, i32) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT topic, last_error, attempts FROM {} WHERE status = 'dead'",
        f.db.table().quoted()
    )))
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (topic.as_str(), error.as_str(), attempts),
        ("wal-events", "too large", 3)
    );
    drop(store);
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_waits_for_the_slot_and_takes_it_over() {
    let f = Fixture::new(WalConfig::default().with_takeover_timeout(Duration::from_secs(1))).await;
    f.write(&[("a", 1)], true).await;
    let first = f.store();
    first.lock_for_relay().await.unwrap();
    let second = f.store();
    let err = second.lock_for_relay().await.unwrap_err();
    assert!(err.to_string().contains("active"), "{err}");
    drop(first);
    let third = f.store();
    third.lock_for_relay().await.unwrap();
    assert_eq!(third.backlog().await.unwrap().pending, 1);
    assert_eq!(
        third
            .fetch_pending(txoutbox_core::ReadLimit::rows(10))
            .await
            .unwrap()
            .len(),
        1
    );
    drop((second, third));
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_without_a_takeover_timeout_waits_and_takes_over() {
    let f = Fixture::new(WalConfig::default()).await;
    f.write(&[("a", 1)], true).await;
    let first = f.store();
    first.lock_for_relay().await.unwrap();
    let second = f.store();
    let standby = tokio::spawn({
        let second = second.clone();
        async move { second.lock_for_relay().await }
    });
    // Past the 30 s after which a standby used to give up (it retries about every 5 s).
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert!(!standby.is_finished(), "the standby gave up: {:?}", standby.await);
    drop(first);
    tokio::time::timeout(Duration::from_secs(60), standby)
        .await
        .expect("the standby took over within 60 s of the first relay's end")
        .unwrap()
        .unwrap();
    assert_eq!(second.backlog().await.unwrap().pending, 1);
    assert_eq!(
        second
            .fetch_pending(txoutbox_core::ReadLimit::rows(10))
            .await
            .unwrap()
            .len(),
        1
    );
    drop(second);
    f.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_slot_is_a_clear_error() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let outbox = PgWalOutbox::new(
        Topics::new(),
        WalConfig::default()
            .with_slot(txoutbox_testing::unique("nowal"))
            .with_dead_letter_table(db.table()),
    )
    .unwrap();
    txoutbox_postgres::PgOutbox::with_table(Topics::new(), db.table())
        .migrate(&db.pool)
        .await
        .unwrap();
    let err = outbox
        .store(db.pool.clone(), &url())
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("run the migrations"), "{err}");
    db.drop_schema().await;
}

/// A foreign writer builds the envelope in SQL, as `docs/wal-mode.md` shows; a malformed one is
/// handed to the relay as unreadable (to be dead-lettered), not a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_built_in_sql_by_a_foreign_writer_is_read() {
    let f = Fixture::new(WalConfig::default()).await;
    let prefix = f.outbox.config().prefix.clone();
    let mut tx = f.db.pool.begin().await.unwrap();
    sqlx::query(
        r#"SELECT pg_logical_emit_message(true, $1,
             '\x01'::bytea
             || uuid_send(gen_random_uuid())
             || int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8')
             || coalesce(int4send(octet_length(k)) || k, '\xffffffff'::bytea)
             || coalesce(int4send(octet_length(p)) || p, '\xffffffff'::bytea)
             || coalesce(int4send(octet_length(convert_to(h::text, 'UTF8'))) || convert_to(h::text, 'UTF8'),
                         '\xffffffff'::bytea))
           FROM (VALUES ('wal-events', 'k1'::bytea, '{"n":7}'::bytea, '{"origin":"sql"}'::json)) AS m(t, k, p, h)"#,
    )
    .bind(&prefix)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_logical_emit_message(true, $1, '\\x0200'::bytea)")
        .bind(&prefix)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let store = f.store();
    store.lock_for_relay().await.unwrap();
    assert_eq!(store.backlog().await.unwrap().pending, 2);
    let got = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap();
    assert_eq!(&*got[0].topic, "wal-events");
    assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(payload_n(&got[0]), 7);
    assert_eq!(
        got[0].headers.to_vec(),
        vec![("origin".to_owned(), "sql".to_owned())]
    );
    assert!(got[0].malformed.is_none());
    let reason = got[1].malformed.as_deref().unwrap();
    assert!(reason.contains("unknown envelope version 2"), "{reason}");
    // It gets a message id of its own, which its dead letter keeps.
    let id = uuid::Uuid::parse_str(&got[1].message_id).expect("a UUID names the unreadable message");
    store
        .record_failures(&[Failure {
            id: got[1].id,
            attempts: 1,
            error: reason.to_owned(),
            next_attempt_at: None,
        }])
        .await
        .unwrap();
    let kept: uuid::Uuid = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT message_id FROM {} WHERE status = 'dead'",
        f.db.table().quoted()
    )))
    .fetch_one(&f.db.pool)
    .await
    .unwrap();
    assert_eq!(kept, id);
    drop(store);
    f.teardown().await;
}
