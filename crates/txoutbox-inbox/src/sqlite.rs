//! The inbox table on SQLite.

use sqlx::SqlitePool;
use txoutbox_core::{Migration, Migrations, Result, TableName};

use crate::error::db_error;
use crate::message::InboxMessage;
use crate::sql_store::{Statements, apply_migrations, bind_claims, multi_row, sql_inbox_store};

const MIGRATIONS: Migrations = Migrations::new(&[Migration {
    version: 1,
    name: "inbox table",
    template: include_str!("../migrations/sqlite_0001_inbox_table.sql"),
}]);

/// The inbox on SQLite: table `inbox_messages` (or another, [`SqliteInbox::with_table`]). The
/// handler receives a `sqlx::Transaction<'static, Sqlite>`, begun with `BEGIN IMMEDIATE` (the
/// write lock first: one handler writes at a time, none fails on a lock upgrade).
#[derive(Debug, Clone)]
pub struct SqliteInbox {
    pool: SqlitePool,
    table: TableName,
    sql: Statements,
    /// `INSERT INTO <table> (…) VALUES `: a batch's claim, rows appended.
    claim_head: String,
}

impl SqliteInbox {
    /// The inbox in table `inbox_messages` of the pool's database.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_table(pool, crate::default_table())
    }

    /// The inbox in `table` (validated identifiers, optionally schema-qualified).
    pub fn with_table(pool: SqlitePool, table: TableName) -> Self {
        let t = table.quoted();
        let sql = Statements {
            replays: format!(
                "SELECT message_id, topic, kafka_partition, kafka_offset, record_key, payload, headers \
                 FROM {t} WHERE consumer = ?1 AND status = 'replay' ORDER BY received_at LIMIT ?2"
            ),
            claim_replay: format!(
                "UPDATE {t} SET status = 'handled', received_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), last_error = NULL, \
                 attempts = attempts + 1 WHERE consumer = ?1 AND message_id = ?2 AND status = 'replay'"
            ),
            repark: format!(
                "UPDATE {t} SET status = 'dead', last_error = ?1, attempts = attempts + 1 \
                 WHERE consumer = ?2 AND message_id = ?3 AND status = 'replay'"
            ),
            claim: format!(
                "INSERT INTO {t} (consumer, message_id, topic, kafka_partition, kafka_offset, attempts) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 1) ON CONFLICT DO NOTHING"
            ),
            park: format!(
                "INSERT INTO {t} (consumer, message_id, status, topic, kafka_partition, kafka_offset, \
                 attempts, last_error, record_key, payload, headers) \
                 VALUES (?1, ?2, 'dead', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING"
            ),
            remove_handled: format!(
                "DELETE FROM {t} WHERE (consumer, message_id) IN (SELECT consumer, message_id FROM {t} \
                 WHERE consumer = ?1 AND status = 'handled' \
                 AND received_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || ?2 || ' seconds') LIMIT ?3)"
            ),
        };
        let claim_head = format!(
            "INSERT INTO {t} (consumer, message_id, topic, kafka_partition, kafka_offset, attempts) VALUES "
        );
        Self {
            pool,
            table,
            sql,
            claim_head,
        }
    }

    /// The table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Claims a chunk of a batch (distinct ids) in one statement, `RETURNING` the ids recorded
    /// now.
    async fn claim_chunk(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        consumer: &str,
        messages: &[&InboxMessage],
    ) -> Result<Vec<String>> {
        let sql = multi_row(
            &self.claim_head,
            "(?, ?, ?, ?, ?, 1)",
            messages.len(),
            " ON CONFLICT DO NOTHING RETURNING message_id",
        );
        let query = bind_claims!(
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)),
            consumer,
            messages
        );
        query.fetch_all(&mut **tx).await.map_err(db_error)
    }

    /// Creates or upgrades the inbox table; safe to run from many processes at once.
    pub async fn migrate(&self) -> Result<()> {
        // The write lock first: concurrent migrators wait instead of racing.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let schema_prefix = self
            .table
            .schema()
            .map(|s| format!("\"{s}\"."))
            .unwrap_or_default();
        apply_migrations!(
            tx,
            steps = MIGRATIONS,
            table = &self.table,
            migrations = self.table.quoted_with_suffix("_migrations"),
            applied_at = "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            insert = "INSERT INTO {migrations} (version, name) VALUES (?1, ?2)",
            values = &[
                ("table", &self.table.quoted()),
                ("schema_prefix", &schema_prefix),
                ("name", self.table.table()),
            ],
        );
        tx.commit().await.map_err(db_error)
    }
}

sql_inbox_store!(
    SqliteInbox,
    sqlx::Sqlite,
    begin = |pool| pool.begin_with("BEGIN IMMEDIATE"),
    age = |age| age.as_secs_f64(),
    // ON CONFLICT DO NOTHING: a duplicate is no error.
    duplicate = |_error| false,
);
