//! The PostgreSQL store's leases and fencing, statement by statement: claims are exclusive, an
//! expired or taken lease fences the old session's writes off, a lost session rejoins with a
//! greater epoch, and a work-balance node reads only its buckets.

use std::time::Duration;

use sqlx::AssertSqlSafe;
use txoutbox_core::coordination::{Leases, Ownership, Scope};
use txoutbox_core::{Completion, Store, Topics};
use txoutbox_postgres::{PgOutbox, PgStore};
use txoutbox_testing::postgres::TestSchema;

const LONG: Duration = Duration::from_secs(60);

async fn setup() -> (TestSchema, PgOutbox) {
    let db = TestSchema::with_pool_size(4).await;
    let outbox = PgOutbox::with_table(Topics::new(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    (db, outbox)
}

/// A store attached to `ownership`, as a coordinated relay's.
fn attached(outbox: &PgOutbox, db: &TestSchema, ownership: &Ownership) -> PgStore {
    let mut store = outbox.store(db.pool.clone());
    store.attach(ownership.clone());
    store
}

/// Inserts one row per key and returns (id, bucket) of each.
async fn rows(db: &TestSchema, keys: &[&str]) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    for key in keys {
        let row: (i64, i32) = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, key, payload) VALUES ('t', convert_to($1, 'UTF8'), 'x') \
             RETURNING id, (hashtextextended(encode(coalesce(key, '\\x'::bytea), 'hex'), 0) & 63)::integer",
            db.qualify("outbox_messages")
        )))
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        out.push(row);
    }
    out
}

async fn status(db: &TestSchema, id: i64) -> Option<String> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT status FROM {} WHERE id = $1",
        db.qualify("outbox_messages")
    )))
    .bind(id)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_bucket_has_one_holder_until_it_is_released() {
    let (db, outbox) = setup().await;
    let store = outbox.store(db.pool.clone());
    assert_eq!(store.bucket_count(), 64);
    let a = store.join("a", "work-balance", LONG).await.unwrap();
    let b = store.join("b", "work-balance", LONG).await.unwrap();
    assert!(b > a, "epochs grow");
    assert_eq!(store.claim("a", a, &[1, 2], LONG).await.unwrap(), [1, 2]);
    let mut got = store.claim("b", b, &[2, 3], LONG).await.unwrap();
    got.sort_unstable();
    assert_eq!(got, [3], "bucket 2 is a's");
    // Renewal by the holder works; by the same node at another epoch it does not.
    assert_eq!(store.claim("a", a, &[2], LONG).await.unwrap(), [2]);
    assert!(store.claim("a", a + 100, &[2], LONG).await.unwrap().is_empty());
    store.release("a", a, &[2]).await.unwrap();
    assert_eq!(store.claim("b", b, &[2], LONG).await.unwrap(), [2]);
    let live = store.heartbeat("b", b, LONG).await.unwrap().unwrap();
    let names: Vec<&str> = live.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    store.leave("a", a).await.unwrap();
    let leases = store.leases().await.unwrap();
    assert!(
        leases.iter().all(|l| l.owner.as_deref() != Some("a")),
        "{leases:?}"
    );
    db.drop_schema().await;
}

#[tokio::test]
async fn writes_of_a_session_whose_lease_was_taken_are_fenced_off() {
    let (db, outbox) = setup().await;
    let rows = rows(&db, &["k1", "k2"]).await;
    let store = outbox.store(db.pool.clone());
    let old = store.join("old", "work-balance", LONG).await.unwrap();
    let buckets: Vec<i32> = rows.iter().map(|(_, b)| *b).collect();
    // A short lease that runs out.
    store
        .claim("old", old, &buckets, Duration::from_millis(200))
        .await
        .unwrap();
    let old_view = Ownership::new("old");
    let old_store = attached(&outbox, &db, &old_view);
    let expired = txoutbox_testing::eventually(Duration::from_secs(5), || async {
        let now = chrono::Utc::now();
        store
            .leases()
            .await
            .unwrap()
            .iter()
            .all(|l| l.lease_until.is_none_or(|t| t < now))
    })
    .await;
    assert!(expired);
    let new = store.join("new", "work-balance", LONG).await.unwrap();
    let mut taken = store.claim("new", new, &buckets, LONG).await.unwrap();
    taken.sort_unstable();
    let mut expected = buckets.clone();
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(taken, expected, "expired leases can be taken");

    // The old session's completion changes nothing; the new one's goes through.
    old_view.begin_for_tests(old);
    old_store
        .complete(&[rows[0].0], Completion::Delete)
        .await
        .unwrap();
    assert_eq!(status(&db, rows[0].0).await.as_deref(), Some("pending"));
    assert_eq!(old_view.write_counts(), (0, 1));
    let new_view = Ownership::new("new");
    new_view.begin_for_tests(new);
    let new_store = attached(&outbox, &db, &new_view);
    new_store
        .complete(&[rows[0].0], Completion::Delete)
        .await
        .unwrap();
    assert_eq!(status(&db, rows[0].0).await, None);
    assert_eq!(new_view.write_counts(), (1, 0));

    // The old session learns it at its next renewal: the leases are not its any more.
    assert!(store.claim("old", old, &buckets, LONG).await.unwrap().is_empty());
    db.drop_schema().await;
}

#[tokio::test]
async fn a_work_balance_node_reads_only_its_buckets() {
    let (db, outbox) = setup().await;
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let rows = rows(&db, &key_refs).await;
    let mine = rows[0].1;
    let ownership = Ownership::new("n");
    ownership.begin_for_tests(1);
    ownership.set_for_tests(Scope::Buckets(vec![mine]));
    let store = attached(&outbox, &db, &ownership);
    let fetched = store
        .fetch_pending(txoutbox_core::ReadLimit::rows(100))
        .await
        .unwrap();
    let expected = rows.iter().filter(|(_, b)| *b == mine).count();
    assert!(expected >= 1 && expected < rows.len());
    assert_eq!(fetched.len(), expected);
    assert!(fetched.iter().all(|m| m.bucket == mine));
    ownership.set_for_tests(Scope::Nothing);
    assert!(
        store
            .fetch_pending(txoutbox_core::ReadLimit::rows(100))
            .await
            .unwrap()
            .is_empty()
    );
    db.drop_schema().await;
}
