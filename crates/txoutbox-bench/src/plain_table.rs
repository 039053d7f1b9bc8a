//! The plain outbox table the scenarios compare with: a sequence id, topic, key, payload, headers
//! and creation time — the table other relays poll — and a plain relay over it.
//!
//! The plain relay is a naive, sequential poller: read the next rows in id order after the last
//! one it sent, send them with a producer of `KafkaSink`'s settings (the same two headers), wait
//! for every acknowledgement, delete them (one range: nothing writes meanwhile), and again — one
//! step at a time, nothing overlapped, no late-commit detection, no retries. It is a reference
//! for what the database costs a poller, not a relay to use.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use sqlx::{AssertSqlSafe, MySqlPool, PgPool, SqlitePool};

use crate::common::{BenchMsg, bootstrap, producer_config, wait_quiet};
use crate::throughput::{PREWRITE_CHUNK, sink_like_headers};

/// The plain table's name in every store.
pub(crate) const PLAIN_TABLE: &str = "plain_outbox";

/// `CREATE TABLE` of the plain table `name` on PostgreSQL.
pub(crate) fn postgres_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (id BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL, key BYTEA, payload BYTEA, \
           headers JSON, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
}

/// `CREATE TABLE` of the plain table on SQLite.
pub(crate) const SQLITE_TABLE: &str = "CREATE TABLE plain_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, \
     topic TEXT NOT NULL, key BLOB, payload BLOB, headers TEXT, \
     created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)))";

/// `CREATE TABLE` of the plain table `name` on MySQL / MariaDB.
pub(crate) fn mysql_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (id BIGINT AUTO_INCREMENT PRIMARY KEY, topic VARCHAR(255) NOT NULL, \
           `key` BLOB, payload LONGBLOB, headers LONGTEXT, \
           created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE = InnoDB"
    )
}

/// The rows one read of the plain relay takes.
const READ: i64 = 1_000;

/// Rows per statement when SQLite and MySQL fill the plain table (three parameters each).
const FILL_ROWS: usize = 1_000;

/// `INSERT INTO table (topic, key, payload) VALUES (?, ?, ?), …` for `rows` rows.
fn multi_row_insert(table: &str, rows: usize) -> String {
    let values = vec!["(?, ?, ?)"; rows].join(", ");
    format!("INSERT INTO {table} (topic, `key`, payload) VALUES {values}")
}

/// A row of the plain table as the plain relay reads it.
type PlainRow = (i64, String, Option<Vec<u8>>, Option<Vec<u8>>);

/// Sends `rows` and waits for every acknowledgement; panics on a failed delivery.
async fn send_all(producer: &FutureProducer, rows: &[PlainRow]) {
    let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(rows.len());
    for (_, topic, key, payload) in rows {
        let id = uuid::Uuid::now_v7().to_string();
        let mut record = FutureRecord::to(topic)
            .key(key.as_deref().unwrap_or_default())
            .payload(payload.as_deref().unwrap_or_default())
            .headers(sink_like_headers(&id));
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => panic!("produce failed: {e}"),
            }
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("delivery failed: {e}"),
            Err(_) => panic!("delivery cancelled"),
        }
    }
}

fn producer() -> FutureProducer {
    producer_config(&bootstrap()).create().expect("producer")
}

/// Creates the plain table (`$create`) and fills it (`$fill`) on `$pool`, then waits for a quiet
/// machine and runs the plain relay's loop over statements `$read` (? after, ? limit) and
/// `$delete` (? after, ? last id: the range just sent, so that no delete steps over the entries of
/// rows deleted before and not yet vacuumed): messages per second from its first read to its last
/// delete. A macro, not a function: the three drivers' pools and query types differ.
macro_rules! drain_plain {
    ($pool:expr, $create:expr, $fill:block, $read:expr, $delete:expr, $messages:expr) => {{
        sqlx::raw_sql(AssertSqlSafe($create))
            .execute($pool)
            .await
            .expect("create the plain table");
        $fill
        wait_quiet("drain", Duration::from_secs(30)).await;
        let producer = producer();
        let started = Instant::now();
        let mut after = 0_i64;
        loop {
            let rows: Vec<PlainRow> = sqlx::query_as(AssertSqlSafe($read.clone()))
                .bind(after)
                .bind(READ)
                .fetch_all($pool)
                .await
                .expect("read");
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            send_all(&producer, &rows).await;
            sqlx::query(AssertSqlSafe($delete.clone()))
                .bind(after)
                .bind(last)
                .execute($pool)
                .await
                .expect("delete");
            after = last;
        }
        $messages as f64 / started.elapsed().as_secs_f64()
    }};
}

/// Fills `$table` with `$msgs` for `$topic` on SQLite or MySQL: one multi-row statement of
/// [`FILL_ROWS`] rows at a time.
macro_rules! fill_multi_row {
    ($pool:expr, $table:expr, $topic:expr, $msgs:expr) => {
        for chunk in $msgs.chunks(FILL_ROWS) {
            let mut insert = sqlx::query(AssertSqlSafe(multi_row_insert($table, chunk.len())));
            for m in chunk {
                insert = insert
                    .bind($topic)
                    .bind(m.key.as_bytes())
                    .bind(m.payload.as_slice());
            }
            insert.execute($pool).await.expect("fill the plain table");
        }
    };
}

/// Creates the plain table `table`, fills it with `msgs` for `topic` (one `UNNEST` statement per
/// chunk) and drains it with the plain relay; messages per second from its first read to its last
/// delete.
pub(crate) async fn postgres(pool: &PgPool, table: &str, topic: &str, msgs: &[BenchMsg]) -> f64 {
    drain_plain!(
        pool,
        postgres_table(table),
        {
            for chunk in msgs.chunks(PREWRITE_CHUNK) {
                let keys: Vec<&[u8]> = chunk.iter().map(|m| m.key.as_bytes()).collect();
                let payloads: Vec<&[u8]> = chunk.iter().map(|m| m.payload.as_slice()).collect();
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {table} (topic, key, payload) \
                     SELECT $1, k, p FROM UNNEST($2::bytea[], $3::bytea[]) AS u(k, p)"
                )))
                .bind(topic)
                .bind(keys)
                .bind(payloads)
                .execute(pool)
                .await
                .expect("fill the plain table");
            }
        },
        format!("SELECT id, topic, key, payload FROM {table} WHERE id > $1 ORDER BY id LIMIT $2"),
        format!("DELETE FROM {table} WHERE id > $1 AND id <= $2"),
        msgs.len()
    )
}

/// [`postgres`] on SQLite (the table is [`SQLITE_TABLE`]).
pub(crate) async fn sqlite(pool: &SqlitePool, topic: &str, msgs: &[BenchMsg]) -> f64 {
    drain_plain!(
        pool,
        SQLITE_TABLE,
        { fill_multi_row!(pool, PLAIN_TABLE, topic, msgs) },
        format!("SELECT id, topic, key, payload FROM {PLAIN_TABLE} WHERE id > ?1 ORDER BY id LIMIT ?2"),
        format!("DELETE FROM {PLAIN_TABLE} WHERE id > ?1 AND id <= ?2"),
        msgs.len()
    )
}

/// [`postgres`] on MySQL / MariaDB.
pub(crate) async fn mysql(pool: &MySqlPool, table: &str, topic: &str, msgs: &[BenchMsg]) -> f64 {
    drain_plain!(
        pool,
        mysql_table(table),
        { fill_multi_row!(pool, table, topic, msgs) },
        format!("SELECT id, topic, `key`, payload FROM {table} WHERE id > ? ORDER BY id LIMIT ?"),
        format!("DELETE FROM {table} WHERE id > ? AND id <= ?"),
        msgs.len()
    )
}
