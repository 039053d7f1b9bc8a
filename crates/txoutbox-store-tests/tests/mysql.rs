//! The store conformance suite on MySQL / MariaDB (each case in a fresh database, the table named
//! with it), plus what only this store has: databases created by `migrate`, concurrent migrators,
//! multi-row inserts split by `max_allowed_packet`, late commits found behind the cursor, one
//! active relay per table, and dead letters, retention and per-topic statistics.

use chrono::{TimeDelta, Utc};
use sqlx::{AssertSqlSafe, MySqlPool};
use txoutbox_core::{
    Completion, DeadLetterFilter, DeadLetters, Error, Failure, NewMessage, Retention, Statistics, Store,
    TableName, Topic, TopicStats, Topics,
};
use txoutbox_mysql::MySqlOutbox;
use txoutbox_store_tests::mysql::MySqlHarness;
use txoutbox_store_tests::{OrderCreated, topics};
use txoutbox_testing::mysql::TestDatabase;
use txoutbox_testing::unique;
use uuid::Uuid;

txoutbox_store_tests::store_conformance!(MySqlHarness);

async fn execute(pool: &MySqlPool, sql: String) {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(pool)
        .await
        .expect("admin statement");
}

fn raw(topic: &str, payload: Vec<u8>) -> NewMessage {
    NewMessage {
        message_id: Uuid::now_v7(),
        topic: topic.to_owned(),
        key: Some(b"k".to_vec()),
        payload: Some(payload),
        headers: vec![("h".to_owned(), "v".to_owned())],
        strategy: Default::default(),
    }
}

/// A table in a database that does not exist yet: `check` says to run the migrations, and
/// `migrate` creates the database.
#[tokio::test]
async fn table_in_a_database_that_does_not_exist_yet() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(2).await;
    let database = unique("absent");
    let outbox = MySqlOutbox::with_table(
        topics(),
        TableName::with_schema(&database, "outbox_messages").unwrap(),
    );
    let store = outbox.store(db.pool.clone());
    let checked = store.check().await;
    let migrated = outbox.migrate(&db.pool).await;
    let published = outbox.publish(&db.pool, &OrderCreated::new(1)).await;
    let fetched = store.fetch_pending(txoutbox_core::ReadLimit::rows(10)).await;
    execute(&db.pool, format!("DROP DATABASE IF EXISTS `{database}`")).await;
    drop(store);
    db.drop_database().await;

    let err = checked.expect_err("check before migrate");
    assert!(matches!(err, Error::SchemaNotReady { .. }), "{err:?}");
    migrated.expect("migrate creates the database");
    published.expect("publish");
    assert_eq!(fetched.expect("fetch").len(), 1);
}

/// Two services whose outbox tables share a database that does not exist yet start at the same
/// time: both migrations succeed (a named lock serializes txoutbox migrators).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_two_tables_in_a_new_database() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(4).await;
    let mut errors = Vec::new();
    for _ in 0..3 {
        let database = unique("shared");
        let outbox =
            |table| MySqlOutbox::with_table(topics(), TableName::with_schema(&database, table).unwrap());
        let (a, b) = (outbox("orders_outbox"), outbox("billing_outbox"));
        let (ra, rb) = tokio::join!(a.migrate(&db.pool), b.migrate(&db.pool));
        errors.extend(ra.err().into_iter().chain(rb.err()).map(|e| e.to_string()));
        execute(&db.pool, format!("DROP DATABASE IF EXISTS `{database}`")).await;
    }
    db.drop_database().await;
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A batch larger than the server's `max_allowed_packet` is written with several multi-row
/// inserts (not one per message), all in the caller's transaction and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_above_max_allowed_packet_is_split_into_few_statements() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(2).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // About two and a half packets of 256 KiB payloads.
    let payload = 256 * 1024;
    let n = usize::try_from(packet).unwrap() * 5 / 2 / payload;
    let messages: Vec<NewMessage> = (0..n)
        .map(|i| raw("bulk", vec![(i % 251) as u8; payload]))
        .collect();
    let sent: Vec<String> = messages.iter().map(|m| m.message_id.to_string()).collect();

    let mut tx = db.pool.begin().await.unwrap();
    let inserts_before = com_insert(&mut tx).await;
    outbox.publish_messages(&mut tx, messages).await.unwrap();
    let statements = com_insert(&mut tx).await - inserts_before;
    tx.rollback().await.unwrap();
    let after_rollback: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.qualify("outbox_messages")
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    let again: Vec<NewMessage> = (0..n)
        .map(|i| raw("bulk", vec![(i % 251) as u8; payload]))
        .collect();
    let again_ids: Vec<String> = again.iter().map(|m| m.message_id.to_string()).collect();
    outbox.publish_messages(&mut tx, again).await.unwrap();
    tx.commit().await.unwrap();
    let store = MySqlOutbox::with_table(topics(), db.table()).store(db.pool.clone());
    let fetched = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(n + 10))
        .await
        .unwrap();
    drop(store);
    db.drop_database().await;

    assert!(
        (3..=4).contains(&statements),
        "{n} rows in {statements} INSERT statements"
    );
    assert_eq!(
        after_rollback, 0,
        "the split statements are atomic in the caller's transaction"
    );
    assert_eq!(sent.len(), n);
    assert_eq!(
        fetched
            .iter()
            .map(|m| m.message_id.to_string())
            .collect::<Vec<_>>(),
        again_ids,
        "every row, in order"
    );
    for (i, m) in fetched.iter().enumerate() {
        assert_eq!(m.payload.as_deref(), Some(&vec![(i % 251) as u8; payload][..]));
    }
}

/// The INSERT statements this session has run (`Com_insert`).
async fn com_insert(conn: &mut sqlx::MySqlConnection) -> i64 {
    let (_, value): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Com_insert'")
        .fetch_one(conn)
        .await
        .unwrap();
    value.parse().unwrap()
}

/// A row whose transaction took its id early and committed after the store read past that id is
/// returned by the next `fetch_after`, once, with the rows above the cursor.
#[tokio::test]
async fn fetch_after_finds_a_late_commit_below_the_cursor_once() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());

    let mut early = db.pool.begin().await.unwrap();
    let late_id = outbox.publish(&mut *early, &OrderCreated::new(1)).await.unwrap();
    let first = outbox.publish(&db.pool, &OrderCreated::new(2)).await.unwrap();
    let read = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap();
    assert_eq!(
        read.iter().map(|m| m.message_id.to_string()).collect::<Vec<_>>(),
        [first.to_string()]
    );
    let cursor = read[0].id;
    early.commit().await.unwrap();
    let above = outbox.publish(&db.pool, &OrderCreated::new(3)).await.unwrap();

    let next = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap();
    let again = store
        .fetch_after(next.last().unwrap().id, txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap();
    drop(store);
    db.drop_database().await;

    assert_eq!(
        next.iter().map(|m| m.message_id.to_string()).collect::<Vec<_>>(),
        [late_id.to_string(), above.to_string()],
        "the late row first (its id is lower), then the new one"
    );
    assert!(next[0].id < cursor, "the late row's id is behind the cursor");
    assert!(again.is_empty(), "a late row is returned once: {again:?}");
}

/// The message ids of `messages`, in order.
fn message_ids(messages: &[txoutbox_core::OutboxMessage]) -> Vec<String> {
    messages.iter().map(|m| m.message_id.to_string()).collect()
}

/// Rows still in flight (returned, not completed) are left out of the read behind the cursor,
/// which lists only the ids around them: a late commit below the lowest of them and one in a gap
/// between them are both found, once; completing runs of ids around the gap leaves its row.
#[tokio::test]
async fn late_commits_around_rows_in_flight_are_found_once() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());

    let mut below = db.pool.begin().await.unwrap();
    let late_below = outbox.publish(&mut *below, &OrderCreated::new(0)).await.unwrap();
    let mut committed = Vec::new();
    for i in 1..=3 {
        committed.push(outbox.publish(&db.pool, &OrderCreated::new(i)).await.unwrap());
    }
    let mut between = db.pool.begin().await.unwrap();
    let late_between = outbox
        .publish(&mut *between, &OrderCreated::new(4))
        .await
        .unwrap();
    for i in 5..=7 {
        committed.push(outbox.publish(&db.pool, &OrderCreated::new(i)).await.unwrap());
    }
    let in_flight = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    let expected: Vec<String> = committed.iter().map(ToString::to_string).collect();
    assert_eq!(message_ids(&in_flight), expected, "only committed rows are read");
    let cursor = in_flight.last().unwrap().id;
    // The first check for late commits lists every pending id; the next ones only those around
    // the rows in flight, which the reads below are.
    let nothing_yet = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    assert!(
        nothing_yet.is_empty(),
        "uncommitted rows are not read: {nothing_yet:?}"
    );
    below.commit().await.unwrap();
    between.commit().await.unwrap();

    let next = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    let again = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    let sent: Vec<i64> = in_flight.iter().map(|m| m.id).collect();
    store.complete(&sent, Completion::Delete).await.unwrap();
    let left = store.backlog().await.unwrap().pending;
    let rest = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    drop(store);
    db.drop_database().await;

    assert_eq!(
        message_ids(&next),
        [late_below.to_string(), late_between.to_string()],
        "both late rows, in id order"
    );
    assert!(
        next[1].id > in_flight[0].id && next[1].id < cursor,
        "the second late row sits between rows in flight"
    );
    assert!(again.is_empty(), "a late row is returned once: {again:?}");
    assert_eq!(
        left, 2,
        "completing the rows in flight leaves the late rows between them"
    );
    assert_eq!(message_ids(&rest), message_ids(&next));
}

/// A read from the start that its byte budget cuts short still counts the rows it did not reach
/// as read, while an earlier read returned them and they are pending (in flight): a later read
/// from the cursor does not return them again as late commits.
#[tokio::test]
async fn a_read_from_the_start_cut_by_its_budget_keeps_the_rows_in_flight() {
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    let messages: Vec<NewMessage> = (0..3u8).map(|i| raw("raw", vec![i; 1_000])).collect();
    let mut conn = db.pool.acquire().await.unwrap();
    outbox.publish_messages(&mut conn, messages).await.unwrap();
    drop(conn);

    let in_flight = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    let cursor = in_flight.last().map(|m| m.id).unwrap_or_default();
    // Each row brings about 1,000 bytes: a budget of 1,000 takes the first one only.
    let cut = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100).with_bytes(1_000))
        .await
        .unwrap();
    let after = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    drop(store);
    db.drop_database().await;

    assert_eq!(in_flight.len(), 3);
    assert_eq!(message_ids(&cut), message_ids(&in_flight[..1]), "cut by bytes");
    assert!(
        after.is_empty(),
        "rows in flight came back as late commits: {:?}",
        message_ids(&after)
    );
}

/// Late rows read by id in several statements (more ids than one statement names) share one byte
/// budget: a read cut in the second statement returns exactly the rows the budget holds, in id
/// order, and leaves the rows above the cursor for later; the next read returns the rest of the
/// late rows and those above, each row once.
#[tokio::test]
async fn a_byte_budget_carries_across_the_statements_of_a_late_read() {
    txoutbox_testing::init_tracing();
    const LATE: usize = 8_300;
    const KEPT: usize = 8_250;
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    // Rows of one size, so that a budget of KEPT rows' bytes takes exactly KEPT of them.
    let row = |i: usize| raw("raw", i.to_be_bytes().to_vec());
    let mut held = db.pool.begin().await.unwrap();
    let late = outbox
        .publish_messages(&mut held, (0..LATE).map(row).collect())
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    outbox.publish_messages(&mut conn, vec![row(LATE)]).await.unwrap();
    let first = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    held.commit().await.unwrap();
    let above = outbox
        .publish_messages(&mut conn, vec![row(LATE + 1)])
        .await
        .unwrap();
    drop(conn);

    let cursor = first.last().map(|m| m.id).unwrap_or_default();
    // The bytes the store counts for a row (its headers as stored JSON text).
    let size: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CAST(LENGTH(topic) + LENGTH(`key`) + LENGTH(payload) + LENGTH(headers) AS SIGNED) \
         FROM {} WHERE id = ?",
        db.qualify("outbox_messages")
    )))
    .bind(cursor)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let budget = txoutbox_core::ReadLimit::rows(100_000).with_bytes(KEPT * usize::try_from(size).unwrap());
    let cut = store.fetch_after(cursor, budget).await.unwrap();
    let rest = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(100_000))
        .await
        .unwrap();
    drop(store);
    db.drop_database().await;

    assert_eq!(first.len(), 1, "only the committed row is read first");
    let late: Vec<String> = late.iter().map(Uuid::to_string).collect();
    assert_eq!(
        (cut.len(), rest.len()),
        (KEPT, LATE - KEPT + 1),
        "rows in each read"
    );
    assert_eq!(message_ids(&cut), late[..KEPT], "cut by the budget, in id order");
    let mut expected = late[KEPT..].to_vec();
    expected.push(above[0].to_string());
    assert_eq!(
        message_ids(&rest),
        expected,
        "the late rows the budget left, then the row above the cursor"
    );
}

/// Completing a batch whose last id is followed by a writer's uncommitted row does not wait for
/// that writer (a range over the batch's ids would lock the next record at REPEATABLE READ).
#[tokio::test]
async fn completing_a_batch_does_not_wait_for_the_writer_behind_it() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());
    for i in 0..100 {
        outbox.publish(&db.pool, &OrderCreated::new(i)).await.unwrap();
    }
    let batch = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(1_000))
        .await
        .unwrap();
    let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
    let mut writer = db.pool.begin().await.unwrap();
    outbox
        .publish(&mut *writer, &OrderCreated::new(100))
        .await
        .unwrap();
    let mut results = Vec::new();
    for completion in [Completion::MarkPublished, Completion::Delete] {
        let subset = if completion == Completion::MarkPublished {
            &ids[50..]
        } else {
            &ids[..]
        };
        results.push(
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                store.complete(subset, completion),
            )
            .await,
        );
    }
    writer.commit().await.unwrap();
    let left = store.backlog().await.unwrap().pending;
    drop(store);
    db.drop_database().await;

    assert_eq!(ids.len(), 100);
    for result in results {
        assert!(
            matches!(result, Ok(Ok(()))),
            "completion waited for the writer or failed: {result:?}"
        );
    }
    assert_eq!(left, 1, "the writer's row is left");
}

/// With more gaps among the rows in flight than one read names (ids of rolled-back transactions
/// here), the read behind the cursor lists every pending id there, and still finds a late commit.
#[tokio::test]
async fn late_commits_are_found_behind_many_gaps() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(4).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let store = outbox.store(db.pool.clone());

    let mut held = db.pool.begin().await.unwrap();
    let late = outbox.publish(&mut *held, &OrderCreated::new(0)).await.unwrap();
    for i in 1..=80 {
        outbox.publish(&db.pool, &OrderCreated::new(i)).await.unwrap();
        let mut rolled_back = db.pool.begin().await.unwrap();
        outbox
            .publish(&mut *rolled_back, &OrderCreated::new(1_000 + i))
            .await
            .unwrap();
        rolled_back.rollback().await.unwrap();
    }
    let in_flight = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(1_000))
        .await
        .unwrap();
    let cursor = in_flight.last().unwrap().id;
    // The first check for late commits lists every pending id in any case; the next one lists
    // them all because the rows in flight leave more gaps than one statement names.
    let nothing_yet = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(1_000))
        .await
        .unwrap();
    assert!(
        nothing_yet.is_empty(),
        "uncommitted rows are not read: {nothing_yet:?}"
    );
    held.commit().await.unwrap();
    let next = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(1_000))
        .await
        .unwrap();
    let again = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(1_000))
        .await
        .unwrap();
    let sent: Vec<i64> = in_flight.iter().map(|m| m.id).collect();
    store.complete(&sent, Completion::Delete).await.unwrap();
    let left = store.backlog().await.unwrap().pending;
    drop(store);
    db.drop_database().await;

    assert_eq!(in_flight.len(), 80);
    assert_eq!(message_ids(&next), [late.to_string()]);
    assert!(again.is_empty(), "a late row is returned once: {again:?}");
    assert_eq!(left, 1, "80 rows completed by id list, the late one left");
}

/// The stores of two outboxes (two processes) over one table: only the one holding the table's
/// relay lock reads rows; when its outbox's stores are gone, the other takes over.
#[tokio::test]
async fn only_one_outbox_reads_a_table_at_a_time() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(4).await;
    let writer = MySqlOutbox::with_table(topics(), db.table());
    writer.migrate(&db.pool).await.unwrap();
    writer.publish(&db.pool, &OrderCreated::new(1)).await.unwrap();
    let (a, b) = (
        MySqlOutbox::with_table(topics(), db.table()),
        MySqlOutbox::with_table(topics(), db.table()),
    );
    let a_store = a.store(db.pool.clone());
    let a_first = a_store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap()
        .len();
    let a_clone_reads = a
        .store(db.pool.clone())
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap()
        .len();
    let b_store = b.store(db.pool.clone());
    let b_while_a = b_store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap()
        .len();
    let b_after = b_store
        .fetch_after(0, txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap()
        .len();
    let backlog = b_store.backlog().await.unwrap().pending;
    drop(a_store);
    let b_once_a_is_gone = b_store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap()
        .len();
    drop(b_store);
    db.drop_database().await;

    assert_eq!(a_first, 1, "the first store takes the lock and reads");
    assert_eq!(a_clone_reads, 1, "stores of one outbox share the lock");
    assert_eq!((b_while_a, b_after), (0, 0), "another outbox stands by");
    assert_eq!(backlog, 1, "the backlog is read without the lock");
    assert_eq!(b_once_a_is_gone, 1, "the standby store takes over");
}

#[derive(serde::Serialize)]
struct Msg(u32);

/// Dead letters and retention: they touch only the rows they are asked to, and retention deletes
/// in bounded batches (the same checks as `tests/maintenance.rs` runs on PostgreSQL and SQLite).
#[tokio::test]
async fn dead_letters_and_retention_on_mysql() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::new().await;
    let topics = Topics::new()
        .with(Topic::<Msg>::json("orders").unwrap().key(|m| m.0.to_string()))
        .unwrap();
    // Eight messages: 1–4 on `orders`, 5–8 on `audit`.
    let messages: Vec<NewMessage> = (0..8)
        .map(|i| {
            let mut m = topics.encode(&Msg(i)).unwrap();
            if i >= 4 {
                m.topic = "audit".into();
            }
            m
        })
        .collect();
    let outbox = MySqlOutbox::with_table(topics, db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    outbox.publish_messages(&mut tx, messages).await.unwrap();
    tx.commit().await.unwrap();
    let store = outbox.store(db.pool.clone());
    let ids: Vec<i64> = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();

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

    let stats = store.topic_stats().await.unwrap();
    let oldest = |topic: &str| {
        stats
            .iter()
            .find(|s| s.topic == topic)
            .and_then(|s| s.oldest_pending)
    };
    assert_eq!(
        stats,
        [
            TopicStats {
                topic: "audit".into(),
                pending: 1,
                oldest_pending: oldest("audit"),
                dead: 2,
                published: 1,
            },
            TopicStats {
                topic: "orders".into(),
                pending: 1,
                oldest_pending: oldest("orders"),
                dead: 2,
                published: 1,
            },
        ]
    );
    assert!(oldest("orders").is_some() && oldest("audit").is_some());

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
    let orders = store
        .list_dead(&DeadLetterFilter::all().topic("orders"), 100)
        .await
        .unwrap();
    assert_eq!(orders.len(), 2);
    let one = DeadLetterFilter::all().ids(ids[1]..=ids[1]);
    assert_eq!(store.list_dead(&one, 100).await.unwrap().len(), 1);
    assert_eq!(
        store.list_dead(&DeadLetterFilter::all(), 1).await.unwrap().len(),
        1
    );
    let old = DeadLetterFilter::all().created_before(Utc::now() - TimeDelta::hours(1));
    assert!(store.list_dead(&old, 100).await.unwrap().is_empty());

    // Replay one: pending again with a clean slate; the relay's cursor read finds it as late.
    assert_eq!(store.replay_dead(&one).await.unwrap(), 1);
    let late = store
        .fetch_after(ids[7], txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    assert_eq!(late.iter().map(|m| m.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!((late[0].attempts, late[0].next_attempt_at), (0, None));
    let pending: Vec<i64> = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(pending, [ids[1], ids[3], ids[7]]);

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
    drop(store);
    db.drop_database().await;
}

/// Reading on from a cursor touches the rows behind it (in flight) and the rows it returns, not
/// the backlog nor deleted rows not purged yet: the index entries read stay far below the
/// 14,000 pending rows and 86,000 deleted ones.
#[tokio::test]
async fn fetch_after_reads_index_entries_in_proportion_to_its_result() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(1).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let orders: Vec<OrderCreated> = (0..100_000).map(OrderCreated::new).collect();
    for chunk in orders.chunks(5_000) {
        let mut tx = db.pool.begin().await.unwrap();
        outbox.publish_all(&mut tx, chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    // Settled statistics, then 86,000 rows completed (their index entries kept by an old
    // snapshot) and 4,000 read and still pending (in flight), as a relay would leave them.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ANALYZE TABLE {}",
        db.qualify("outbox_messages")
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let store = outbox.store(db.pool.clone());
    let first = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(90_000))
        .await
        .unwrap();
    // An old snapshot elsewhere holds back purge: the deleted rows' index entries stay.
    let other = TestDatabase::connect(&db.database, 1).await;
    let mut snapshot = other.begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *snapshot).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        db.qualify("outbox_messages")
    )))
    .execute(&mut *snapshot)
    .await
    .unwrap();
    let done: Vec<i64> = first[..86_000].iter().map(|m| m.id).collect();
    store.complete(&done, Completion::Delete).await.unwrap();
    let cursor = first.last().unwrap().id;

    // One pooled connection: its session counters are the store's.
    let read_next = || async {
        let (_, v): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Handler_read_next'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        v.parse::<i64>().unwrap()
    };
    let before = read_next().await;
    let next = store
        .fetch_after(cursor, txoutbox_core::ReadLimit::rows(1_000))
        .await
        .unwrap();
    let read = read_next().await - before;
    snapshot.rollback().await.unwrap();
    other.close().await;
    drop(store);
    db.drop_database().await;

    assert_eq!(next.len(), 1_000);
    assert!(next.iter().all(|m| m.id > cursor));
    assert!(
        read < 10_000,
        "fetch_after read {read} index entries for 1,000 rows and 4,000 in flight (backlog 10,000, 86,000 deleted)"
    );
}

/// Errors come back classified from the server's error numbers: a lock wait timeout (1205) while
/// another transaction holds the row is transient (the conformance suite shows that a refused
/// row, a `CHECK` violation, is not).
#[tokio::test]
async fn a_lock_wait_timeout_is_retryable() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(2).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    outbox.publish(&db.pool, &OrderCreated::new(1)).await.unwrap();
    // A store whose sessions give up waiting for a row lock after one second.
    let impatient = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql("SET SESSION innodb_lock_wait_timeout = 1")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect_with(txoutbox_testing::mysql::options(Some(&db.database)))
        .await
        .unwrap();
    let store = outbox.store(impatient.clone());
    let id = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap()[0]
        .id;

    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "SELECT id FROM {} WHERE id = ? FOR UPDATE",
        db.qualify("outbox_messages")
    )))
    .bind(id)
    .execute(&mut *holder)
    .await
    .unwrap();
    let waited = store.complete(&[id], Completion::Delete).await;
    holder.rollback().await.unwrap();
    let retried = store.complete(&[id], Completion::Delete).await;

    drop(store);
    impatient.close().await;
    db.drop_database().await;

    let err = waited.expect_err("complete while another transaction holds the row");
    assert!(err.is_retryable(), "a lock wait timeout is transient: {err}");
    assert!(
        err.to_string().contains("1205") || err.to_string().contains("Lock wait"),
        "{err}"
    );
    retried.expect("the same statement succeeds once the lock is free");
}

/// A deadlock (1213) from the real server is retryable too: the relay's completion locks two
/// rows in id order while another transaction, heavier (so InnoDB rolls the completion back),
/// holds the second and then asks for the first.
#[tokio::test]
async fn a_deadlock_is_retryable() {
    txoutbox_testing::init_tracing();
    let db = TestDatabase::with_pool_size(3).await;
    let outbox = MySqlOutbox::with_table(topics(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    for n in 1..=2 {
        outbox.publish(&db.pool, &OrderCreated::new(n)).await.unwrap();
    }
    let store = outbox.store(db.pool.clone());
    let ids: Vec<i64> = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(10))
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    let (first, second) = (ids[0], ids[1]);
    // The completion locks the rows in id order: hold the second, then ask for the first. The
    // holder changes the rows (an UPDATE locks the row itself, not only an index entry).
    let (held, asked) = (second, first);
    let table = db.qualify("outbox_messages");
    let ballast = db.qualify("ballast");
    execute(&db.pool, format!("CREATE TABLE {ballast} (n INT PRIMARY KEY)")).await;

    let mut holder = db.pool.begin().await.unwrap();
    // Weight: InnoDB chooses the transaction that changed and locked fewer rows as the victim.
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {ballast} WITH RECURSIVE s (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000) SELECT n FROM s"
    )))
    .execute(&mut *holder)
    .await
    .unwrap();
    let lock_row = format!("UPDATE {table} SET attempts = attempts + 1 WHERE id = ?");
    sqlx::query(AssertSqlSafe(lock_row.clone()))
        .bind(held)
        .execute(&mut *holder)
        .await
        .unwrap();
    let completing = tokio::spawn({
        let store = store.clone();
        async move { store.complete(&[first, second], Completion::Delete).await }
    });
    // Until the completion runs: it holds the first row and waits for the second.
    let waiting = txoutbox_testing::eventually(std::time::Duration::from_secs(30), || async {
        // The user's own sessions are visible without the PROCESS privilege.
        let running: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE ?")
                .bind(format!("DELETE FROM {table}%"))
                .fetch_one(&db.pool)
                .await
                .unwrap();
        running > 0
    })
    .await;
    assert!(waiting, "the completion never waited for the held row");
    // Its statement shows before it has locked the first row: give it the time to, or on a busy
    // machine the holder takes that row first, nothing deadlocks, and the completion times out.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query(AssertSqlSafe(lock_row))
        .bind(asked)
        .execute(&mut *holder)
        .await
        .expect("the heavier transaction survives the deadlock");
    let victim = completing.await.unwrap();
    holder.rollback().await.unwrap();
    let retried = store.complete(&[first, second], Completion::Delete).await;
    let left: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&db.pool)
        .await
        .unwrap();
    drop(store);
    db.drop_database().await;

    let err = victim.expect_err("the completion was chosen as the deadlock's victim");
    assert!(err.is_retryable(), "a deadlock is transient: {err}");
    assert!(
        err.to_string().contains("1213") || err.to_string().contains("Deadlock"),
        "{err}"
    );
    retried.expect("the same completion succeeds once the other transaction ended");
    assert_eq!(left, 0);
}
