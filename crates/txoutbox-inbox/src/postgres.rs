//! The inbox table on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::PgPool;
use txoutbox_core::{Migration, Migrations, Result, TableName};

use crate::error::db_error;
use crate::message::InboxMessage;
use crate::sql_store::{Statements, apply_migrations, sql_inbox_store};

const MIGRATIONS: Migrations = Migrations::new(&[Migration {
    version: 1,
    name: "inbox table",
    template: include_str!("../migrations/postgres_0001_inbox_table.sql"),
}]);

/// The inbox on PostgreSQL: table `inbox_messages` (or another, [`PgInbox::with_table`]). The
/// handler receives a `sqlx::Transaction<'static, Postgres>`.
#[derive(Debug, Clone)]
pub struct PgInbox {
    pool: PgPool,
    table: TableName,
    sql: Statements,
    /// Claims a batch's ids from arrays, `RETURNING` the ones recorded now.
    claim_many: String,
    /// The same without the duplicate check: fails on an id that is there.
    claim_many_unchecked: String,
    /// Batches still to claim with the check, counted down after a batch met an id it had.
    checked_batches: Arc<AtomicU32>,
}

/// Batches claimed with the duplicate check after a batch without it met an id it had: while
/// copies arrive, every batch checks; once they stop, batches go without the check again.
const CHECKED_AFTER_A_DUPLICATE: u32 = 256;

impl PgInbox {
    /// The inbox in table `inbox_messages` of the pool's database.
    pub fn new(pool: PgPool) -> Self {
        Self::with_table(pool, crate::default_table())
    }

    /// The inbox in `table` (validated identifiers, optionally schema-qualified).
    pub fn with_table(pool: PgPool, table: TableName) -> Self {
        let t = table.quoted();
        let sql = Statements {
            replays: format!(
                "SELECT message_id, topic, kafka_partition, kafka_offset, record_key, payload, headers \
                 FROM {t} WHERE consumer = $1 AND status = 'replay' ORDER BY received_at LIMIT $2"
            ),
            claim_replay: format!(
                "UPDATE {t} SET status = 'handled', received_at = now(), last_error = NULL, \
                 attempts = attempts + 1 WHERE consumer = $1 AND message_id = $2 AND status = 'replay'"
            ),
            repark: format!(
                "UPDATE {t} SET status = 'dead', last_error = $1, attempts = attempts + 1 \
                 WHERE consumer = $2 AND message_id = $3 AND status = 'replay'"
            ),
            claim: format!(
                "INSERT INTO {t} (consumer, message_id, topic, kafka_partition, kafka_offset, attempts) \
                 VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT DO NOTHING"
            ),
            park: format!(
                "INSERT INTO {t} (consumer, message_id, status, topic, kafka_partition, kafka_offset, \
                 attempts, last_error, record_key, payload, headers) \
                 VALUES ($1, $2, 'dead', $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
            ),
            remove_handled: format!(
                "DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} WHERE consumer = $1 \
                 AND status = 'handled' AND received_at < now() - make_interval(secs => $2) LIMIT $3)"
            ),
        };
        let claim_many_unchecked = format!(
            "INSERT INTO {t} (consumer, message_id, topic, kafka_partition, kafka_offset, attempts) \
             SELECT $1, id, topic, kafka_partition, kafka_offset, 1 \
             FROM unnest($2::text[], $3::text[], $4::int4[], $5::int8[]) \
             AS batch(id, topic, kafka_partition, kafka_offset)"
        );
        let claim_many = format!("{claim_many_unchecked} ON CONFLICT DO NOTHING RETURNING message_id");
        Self {
            pool,
            table,
            sql,
            claim_many,
            claim_many_unchecked,
            checked_batches: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Claims a chunk of a batch (distinct ids) in one statement, the ids as arrays. Without a
    /// recent duplicate, a plain `INSERT` (PostgreSQL's `ON CONFLICT` check and `RETURNING` cost
    /// a claim a few percent): an id that is there fails it, and so the batch's transaction —
    /// the lane then handles those records one by one, and the next batches claim with the
    /// check, `RETURNING` the ids recorded now.
    async fn claim_chunk(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        consumer: &str,
        messages: &[&InboxMessage],
    ) -> Result<Vec<String>> {
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        let partitions: Vec<i32> = messages.iter().map(|m| m.partition).collect();
        let offsets: Vec<i64> = messages.iter().map(|m| m.offset).collect();
        let checked = self
            .checked_batches
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if checked {
            return sqlx::query_scalar(sqlx::AssertSqlSafe(self.claim_many.as_str()))
                .bind(consumer)
                .bind(ids)
                .bind(topics)
                .bind(partitions)
                .bind(offsets)
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error);
        }
        let done = sqlx::query(sqlx::AssertSqlSafe(self.claim_many_unchecked.as_str()))
            .bind(consumer)
            .bind(ids)
            .bind(topics)
            .bind(partitions)
            .bind(offsets)
            .execute(&mut **tx)
            .await;
        match done {
            Ok(_) => Ok(messages.iter().map(|m| m.id.clone()).collect()),
            Err(e) => {
                if e.as_database_error()
                    .is_some_and(|db| db.kind() == sqlx::error::ErrorKind::UniqueViolation)
                {
                    self.checked_batches
                        .store(CHECKED_AFTER_A_DUPLICATE, Ordering::Relaxed);
                }
                Err(db_error(e))
            }
        }
    }

    /// Creates or upgrades the inbox table; safe to run from many processes at once.
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('txoutbox inbox migrate', 0))")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        apply_migrations!(
            tx,
            steps = MIGRATIONS,
            table = &self.table,
            migrations = self.table.quoted_with_suffix("_migrations"),
            applied_at = "TIMESTAMPTZ NOT NULL DEFAULT now()",
            insert = "INSERT INTO {migrations} (version, name) VALUES ($1, $2)",
            values = &[("table", &self.table.quoted()), ("name", self.table.table())],
        );
        tx.commit().await.map_err(db_error)
    }
}

sql_inbox_store!(
    PgInbox,
    sqlx::Postgres,
    begin = |pool| pool.begin(),
    age = |age| age.as_secs_f64(),
    // ON CONFLICT DO NOTHING: a duplicate is no error.
    duplicate = |_error| false,
);
