//! Backlog scaling: the cost of claiming a batch (the relay's read) with a small and a huge
//! backlog of pending rows, and with a huge number of rows already published or dead.

use std::time::Instant;

use serde::Serialize;
use sqlx::AssertSqlSafe;
use txoutbox::postgres::PgOutbox;
use txoutbox::{Store, Topics};
use txoutbox_testing::postgres::TestSchema;

use crate::common::{Percentiles, percentiles};

/// One table shape and its read costs.
#[derive(Debug, Serialize)]
pub(crate) struct BacklogCase {
    /// What the table holds.
    pub shape: String,
    /// Pending rows.
    pub pending: u64,
    /// Published or dead rows beside them.
    pub settled: u64,
    /// Seconds to write the rows (server-side `generate_series`).
    pub fill_seconds: f64,
    /// A relay's first read: `fetch_pending(batch)` from the start.
    pub fetch_pending: Percentiles,
    /// A relay's steady read: `fetch_after(cursor, batch)` in the middle of the backlog.
    pub fetch_after: Percentiles,
}

/// The scenario's result.
#[derive(Debug, Serialize)]
pub(crate) struct BacklogResult {
    /// Rows per read.
    pub batch: usize,
    /// Reads timed per case.
    pub reads: usize,
    /// Each case.
    pub cases: Vec<BacklogCase>,
    /// p50 of `fetch_after` with the largest pending backlog ÷ with the smallest.
    pub pending_ratio: f64,
    /// p50 of `fetch_after` with many settled rows ÷ with the smallest backlog.
    pub settled_ratio: f64,
}

async fn fill(db: &TestSchema, rows: u64, status: &str) {
    let table = db.qualify("outbox_messages");
    let (published_at, next) = match status {
        "published" => ("now()", "NULL"),
        _ => ("NULL", "NULL"),
    };
    // In chunks, so one statement never holds the whole fill in memory.
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(1_000_000);
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (topic, key, payload, status, published_at, next_attempt_at) \
             SELECT 'bench', convert_to('key-' || (g % 1000), 'UTF8'), convert_to(repeat('x', 100), 'UTF8'), \
                    $1, {published_at}, {next} FROM generate_series(1, $2) AS g"
        )))
        .bind(status)
        .bind(n as i64)
        .execute(&db.pool)
        .await
        .expect("fill");
        done += n;
    }
}

async fn case(shape: &str, pending: u64, settled: u64, batch: usize, reads: usize) -> BacklogCase {
    let db = TestSchema::with_pool_size(2).await;
    let outbox = PgOutbox::with_table(Topics::new(), db.table());
    outbox.migrate(&db.pool).await.expect("migrate");
    let started = Instant::now();
    if settled > 0 {
        fill(&db, settled / 2, "published").await;
        fill(&db, settled - settled / 2, "dead").await;
    }
    fill(&db, pending, "pending").await;
    let fill_seconds = started.elapsed().as_secs_f64();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "VACUUM ANALYZE {}",
        db.qualify("outbox_messages")
    )))
    .execute(&db.pool)
    .await
    .expect("vacuum");
    let (middle,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT min(id) + (max(id) - min(id)) / 2 FROM {} WHERE status = 'pending'",
        db.qualify("outbox_messages")
    )))
    .fetch_one(&db.pool)
    .await
    .expect("ids");
    let mut from_start = Vec::with_capacity(reads);
    let mut after = Vec::with_capacity(reads);
    for _ in 0..reads {
        // A fresh store: the first read of a starting relay.
        let store = outbox.store(db.pool.clone());
        let t = Instant::now();
        let rows = store
            .fetch_pending(txoutbox::ReadLimit::rows(batch))
            .await
            .expect("fetch_pending");
        from_start.push(t.elapsed());
        assert_eq!(rows.len(), batch.min(pending as usize));
        let t = Instant::now();
        let rows = store
            .fetch_after(middle, txoutbox::ReadLimit::rows(batch))
            .await
            .expect("fetch_after");
        after.push(t.elapsed());
        assert!(!rows.is_empty() || pending < 2);
    }
    db.drop_schema().await;
    BacklogCase {
        shape: shape.to_owned(),
        pending,
        settled,
        fill_seconds,
        fetch_pending: percentiles(&from_start),
        fetch_after: percentiles(&after),
    }
}

/// Runs the cases: `small` pending, `large` pending, and `small` pending beside `large` settled.
pub(crate) async fn run(small: u64, large: u64, batch: usize, reads: usize) -> BacklogResult {
    let mut cases = Vec::new();
    for (shape, pending, settled) in [
        ("small backlog", small, 0),
        ("large backlog", large, 0),
        ("small backlog, many settled rows", small, large),
    ] {
        eprintln!("[backlog] {shape}: {pending} pending, {settled} published/dead ...");
        let c = case(shape, pending, settled, batch, reads).await;
        eprintln!(
            "[backlog]   filled in {:.0} s; fetch_pending p50 {:.2} ms, fetch_after p50 {:.2} ms",
            c.fill_seconds,
            c.fetch_pending.p50_us / 1000.0,
            c.fetch_after.p50_us / 1000.0
        );
        cases.push(c);
    }
    let p50 = |c: &BacklogCase| c.fetch_after.p50_us.max(1.0);
    BacklogResult {
        batch,
        reads,
        pending_ratio: p50(&cases[1]) / p50(&cases[0]),
        settled_ratio: p50(&cases[2]) / p50(&cases[0]),
        cases,
    }
}
