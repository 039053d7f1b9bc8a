//! Dead-letter actions and retention, on PostgreSQL and SQLite: they touch only the rows they
//! are asked to, and retention deletes in bounded batches.

use chrono::{TimeDelta, Utc};
use txoutbox_core::{
    Completion, DeadLetterFilter, DeadLetters, Failure, NewMessage, Retention, Store, Topic, Topics,
};
use txoutbox_postgres::PgOutbox;
use txoutbox_sqlite::SqliteOutbox;
use txoutbox_testing::postgres::TestSchema;
use txoutbox_testing::sqlite::TestDb;

#[derive(serde::Serialize)]
struct Msg(u32);

fn topics() -> Topics {
    Topics::new()
        .with(Topic::<Msg>::json("orders").unwrap().key(|m| m.0.to_string()))
        .unwrap()
}

/// Eight messages: ids 1–4 on `orders`, 5–8 on `audit`, all pending.
fn messages() -> Vec<NewMessage> {
    let topics = topics();
    (0..8)
        .map(|i| {
            let mut m = topics.encode(&Msg(i)).unwrap();
            if i >= 4 {
                m.topic = "audit".into();
            }
            m
        })
        .collect()
}

async fn exercise<S: Store + DeadLetters + Retention>(store: S, ids: Vec<i64>) {
    // 1, 2, 5, 6 dead; 3, 7 published; 4, 8 pending.
    let dead = |id| Failure {
        id,
        attempts: 3,
        error: format!("boom {id}"),
        next_attempt_at: None,
    };
    store
        .record_failures(&[dead(ids[0]), dead(ids[1]), dead(ids[4]), dead(ids[5])])
        .await
        .unwrap();
    store
        .complete(&[ids[2], ids[6]], Completion::MarkPublished)
        .await
        .unwrap();

    let all = store.list_dead(&DeadLetterFilter::all(), 100).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.id).collect::<Vec<_>>(),
        [ids[0], ids[1], ids[4], ids[5]]
    );
    assert_eq!(
        all[0].last_error.as_deref(),
        Some(format!("boom {}", ids[0]).as_str())
    );
    assert_eq!((all[0].attempts, all[0].topic.as_str()), (3, "orders"));
    assert!(all[0].payload_len > 0);
    let payload = store.dead_payload(ids[0], 1 << 20).await.unwrap().unwrap();
    let head = payload.head.unwrap();
    assert_eq!(
        (head.len() as i64, payload.len as i64),
        (all[0].payload_len, all[0].payload_len),
        "the dead letter's payload"
    );
    // Only the first bytes leave the database.
    let cut = store.dead_payload(ids[0], 1).await.unwrap().unwrap();
    assert_eq!(cut.head.as_deref(), Some(&head[..1]));
    assert_eq!(cut.len, payload.len);
    assert_eq!(
        store.dead_payload(ids[3], 100).await.unwrap(),
        None,
        "a pending row is no dead letter"
    );
    let orders = store
        .list_dead(&DeadLetterFilter::all().topic("orders"), 100)
        .await
        .unwrap();
    assert_eq!(orders.len(), 2);
    let one = DeadLetterFilter::all().ids(ids[1]..=ids[1]);
    assert_eq!(store.list_dead(&one, 100).await.unwrap().len(), 1);
    assert_eq!(
        store.list_dead(&DeadLetterFilter::all(), 1).await.unwrap().len(),
        1,
        "limit"
    );
    let future = DeadLetterFilter::all().created_before(Utc::now() - TimeDelta::hours(1));
    assert!(store.list_dead(&future, 100).await.unwrap().is_empty());

    // Replay one: it is pending again with a clean slate, and the relay reads it.
    assert_eq!(store.replay_dead(&one).await.unwrap(), 1);
    let pending: Vec<i64> = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(pending, [ids[1], ids[3], ids[7]]);
    let replayed = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == ids[1])
        .unwrap();
    assert_eq!((replayed.attempts, replayed.next_attempt_at), (0, None));

    // Purge the audit dead letters only.
    assert_eq!(
        store
            .purge_dead(&DeadLetterFilter::all().topic("audit"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .list_dead(&DeadLetterFilter::all(), 100)
            .await
            .unwrap()
            .len(),
        1
    );

    // Retention: published rows only, in bounded batches, only those published before the cut.
    assert_eq!(
        store
            .purge_published(Utc::now() - TimeDelta::hours(1), 1)
            .await
            .unwrap(),
        0
    );
    let cut = Utc::now() + TimeDelta::seconds(1);
    assert_eq!(
        store.purge_published(cut, 1).await.unwrap(),
        1,
        "one bounded batch"
    );
    assert_eq!(store.purge_published(cut, 1).await.unwrap(), 1);
    assert_eq!(store.purge_published(cut, 1).await.unwrap(), 0);
    let backlog = store.backlog().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.dead),
        (3, 1),
        "pending and dead rows untouched"
    );
}

#[tokio::test]
async fn dead_letters_and_retention_on_postgres() {
    txoutbox_testing::init_tracing();
    let db = TestSchema::new().await;
    let outbox = PgOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    outbox.publish_messages(&db.pool, messages()).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let ids = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    exercise(store, ids).await;
    db.drop_schema().await;
}

#[tokio::test]
async fn dead_letters_and_retention_on_sqlite() {
    txoutbox_testing::init_tracing();
    let db = TestDb::new().await;
    let outbox = SqliteOutbox::new(topics());
    outbox.migrate(&db.pool).await.unwrap();
    outbox.publish_messages(&db.pool, messages()).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let ids = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    exercise(store, ids).await;
}
