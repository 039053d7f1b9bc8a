//! Scenario `writes`: what an outbox row costs the application that writes it, against a plain
//! outbox table of the same data (`id` from a sequence, topic, key, payload, headers, creation
//! time: the table other relays poll), on PostgreSQL, SQLite and MySQL / MariaDB.
//!
//! Several writers insert rows concurrently, one `INSERT` (or one `publish`) per row, a fixed
//! number of rows per transaction — the shape of an application that publishes as it works.
//! Rounds alternate plain and outbox so that drift (checkpoints, autovacuum) hits both alike; both
//! tables are emptied before each round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{AssertSqlSafe, Connection};
use txoutbox::Topics;
use txoutbox::mysql::MySqlOutbox;
use txoutbox::postgres::PgOutbox;
use txoutbox::sqlite::SqliteOutbox;
use txoutbox_testing::mysql::TestDatabase;
use txoutbox_testing::postgres::TestSchema;
use txoutbox_testing::sqlite::TestDb;

use crate::common::{BenchMsg, messages, topic_def, wait_quiet};
use crate::plain_table::{self, PLAIN_TABLE};

/// The topic the rows name (never read).
const TOPIC: &str = "bench-writes";

/// One store's rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreWrites {
    pub store: String,
    pub writers: usize,
    pub rows_per_writer: usize,
    pub rows_per_transaction: usize,
    /// Rows per second into the plain table, each round.
    pub plain_rows_per_sec: Vec<f64>,
    /// Rows per second through `publish`, each round.
    pub outbox_rows_per_sec: Vec<f64>,
    /// Seconds per row relative to the plain table (plain rate / outbox rate), each round.
    pub cost_ratio: Vec<f64>,
    /// Median of `cost_ratio`.
    pub cost_ratio_median: f64,
}

/// Every store's rounds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WritesResult {
    pub stores: Vec<StoreWrites>,
}

/// The sizes of one store's run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub writers: usize,
    pub rows: usize,
    pub per_transaction: usize,
    pub rounds: usize,
}

/// Runs `shape` on PostgreSQL, SQLite (one writer) and MySQL / MariaDB, each unless skipped.
pub(crate) async fn run(shape: Shape, postgres_too: bool, sqlite: bool, mysql: bool) -> WritesResult {
    let mut stores = Vec::new();
    if postgres_too {
        stores.push(postgres(shape).await);
    }
    if sqlite {
        // One writer: SQLite takes one writing transaction at a time.
        stores.push(sqlite_run(Shape { writers: 1, ..shape }).await);
    }
    if mysql {
        stores.push(mysql_run(shape).await);
    }
    WritesResult { stores }
}

/// Which table a round writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Plain,
    Outbox,
}

/// Runs `rounds` of plain and outbox in turn; `round(target)` empties the tables, writes and
/// returns rows per second.
async fn rounds(store: &str, shape: Shape, mut round: impl AsyncFnMut(Target) -> f64) -> StoreWrites {
    let (mut plain, mut outbox) = (Vec::new(), Vec::new());
    wait_quiet("writes", Duration::from_secs(30)).await;
    for r in 0..shape.rounds {
        for target in [Target::Plain, Target::Outbox] {
            let rate = round(target).await;
            eprintln!("[writes] {store} round {}: {target:?} {rate:.0} rows/s", r + 1);
            match target {
                Target::Plain => plain.push(rate),
                Target::Outbox => outbox.push(rate),
            }
        }
    }
    let cost_ratio: Vec<f64> = plain.iter().zip(&outbox).map(|(p, o)| p / o).collect();
    let mut sorted = cost_ratio.clone();
    sorted.sort_by(f64::total_cmp);
    StoreWrites {
        store: store.into(),
        writers: shape.writers,
        rows_per_writer: shape.rows / shape.writers,
        rows_per_transaction: shape.per_transaction,
        plain_rows_per_sec: plain,
        outbox_rows_per_sec: outbox,
        cost_ratio_median: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        cost_ratio,
    }
}

/// The messages of writer `w`.
fn share(msgs: &[BenchMsg], shape: Shape, w: usize) -> Vec<BenchMsg> {
    let per = shape.rows / shape.writers;
    msgs[w * per..(w + 1) * per].to_vec()
}

/// One writer's work, the same on every store: a connection of `$pool`, `$rows` in transactions
/// of `$per_tx`, each row one single-row `$insert` into the plain table or one `$outbox.publish`.
macro_rules! write_rows {
    ($pool:expr, $outbox:expr, $insert:expr, $target:expr, $rows:expr, $per_tx:expr) => {{
        let mut conn = $pool.acquire().await.unwrap();
        for chunk in $rows.chunks($per_tx) {
            let mut tx = conn.begin().await.unwrap();
            for msg in chunk {
                match $target {
                    Target::Plain => {
                        sqlx::query(AssertSqlSafe($insert))
                            .bind(TOPIC)
                            .bind(msg.key.as_bytes())
                            .bind(msg.payload.as_slice())
                            .bind(None::<String>)
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                    }
                    Target::Outbox => {
                        $outbox.publish(&mut *tx, msg).await.unwrap();
                    }
                }
            }
            tx.commit().await.unwrap();
        }
    }};
}

/// Runs `shape.writers` writers at once, each given its share of `msgs`; rows per second.
async fn timed_writers<F, Fut>(shape: Shape, msgs: &[BenchMsg], writer: F) -> f64
where
    F: Fn(Vec<BenchMsg>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..shape.writers)
        .map(|w| tokio::spawn(writer(share(msgs, shape, w))))
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    shape.rows as f64 / started.elapsed().as_secs_f64()
}

async fn postgres(shape: Shape) -> StoreWrites {
    let schema = Arc::new(TestSchema::with_pool_size(shape.writers as u32 + 1).await);
    let outbox = PgOutbox::with_table(Topics::new().with(topic_def(TOPIC)).unwrap(), schema.table());
    outbox.migrate(&schema.pool).await.unwrap();
    let plain = schema.qualify(PLAIN_TABLE);
    sqlx::raw_sql(AssertSqlSafe(plain_table::postgres_table(&plain)))
        .execute(&schema.pool)
        .await
        .unwrap();
    let insert = Arc::<str>::from(format!(
        "INSERT INTO {plain} (topic, key, payload, headers) VALUES ($1, $2, $3, $4::json)"
    ));
    let truncate = format!("TRUNCATE {plain}, {}", outbox.table().quoted());
    let msgs = messages(shape.rows, 1_000);
    let result = rounds("postgres", shape, async |target| {
        sqlx::raw_sql(AssertSqlSafe(truncate.clone()))
            .execute(&schema.pool)
            .await
            .unwrap();
        timed_writers(shape, &msgs, |mine| {
            let (schema, outbox, insert) = (Arc::clone(&schema), outbox.clone(), Arc::clone(&insert));
            async move {
                write_rows!(
                    schema.pool,
                    outbox,
                    Arc::clone(&insert),
                    target,
                    mine,
                    shape.per_transaction
                );
            }
        })
        .await
    })
    .await;
    if let Ok(schema) = Arc::try_unwrap(schema) {
        schema.drop_schema().await;
    }
    result
}

async fn sqlite_run(shape: Shape) -> StoreWrites {
    let db = Arc::new(TestDb::new().await);
    let outbox = SqliteOutbox::new(Topics::new().with(topic_def(TOPIC)).unwrap());
    outbox.migrate(&db.pool).await.unwrap();
    sqlx::raw_sql(plain_table::SQLITE_TABLE)
        .execute(&db.pool)
        .await
        .unwrap();
    let msgs = messages(shape.rows, 1_000);
    rounds("sqlite", shape, async |target| {
        sqlx::raw_sql("DELETE FROM plain_outbox; DELETE FROM outbox_messages")
            .execute(&db.pool)
            .await
            .unwrap();
        timed_writers(shape, &msgs, |mine| {
            let (db, outbox) = (Arc::clone(&db), outbox.clone());
            async move {
                write_rows!(
                    db.pool,
                    outbox,
                    "INSERT INTO plain_outbox (topic, key, payload, headers) VALUES (?1, ?2, ?3, ?4)",
                    target,
                    mine,
                    shape.per_transaction
                );
            }
        })
        .await
    })
    .await
}

async fn mysql_run(shape: Shape) -> StoreWrites {
    let db = Arc::new(TestDatabase::with_pool_size(shape.writers as u32 + 1).await);
    let outbox = MySqlOutbox::with_table(Topics::new().with(topic_def(TOPIC)).unwrap(), db.table());
    outbox.migrate(&db.pool).await.unwrap();
    let plain = db.qualify(PLAIN_TABLE);
    sqlx::raw_sql(AssertSqlSafe(plain_table::mysql_table(&plain)))
        .execute(&db.pool)
        .await
        .unwrap();
    let insert = Arc::<str>::from(format!(
        "INSERT INTO {plain} (topic, `key`, payload, headers) VALUES (?, ?, ?, ?)"
    ));
    let truncate = [
        format!("TRUNCATE TABLE {plain}"),
        format!("TRUNCATE TABLE {}", db.qualify("outbox_messages")),
    ];
    let msgs = messages(shape.rows, 1_000);
    let result = rounds("mysql", shape, async |target| {
        for statement in &truncate {
            sqlx::raw_sql(AssertSqlSafe(statement.clone()))
                .execute(&db.pool)
                .await
                .unwrap();
        }
        timed_writers(shape, &msgs, |mine| {
            let (db, outbox, insert) = (Arc::clone(&db), outbox.clone(), Arc::clone(&insert));
            async move {
                write_rows!(
                    db.pool,
                    outbox,
                    Arc::clone(&insert),
                    target,
                    mine,
                    shape.per_transaction
                );
            }
        })
        .await
    })
    .await;
    if let Ok(db) = Arc::try_unwrap(db) {
        db.drop_database().await;
    }
    result
}
