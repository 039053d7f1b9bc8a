//! The inbox table on MySQL 8.0.16+ / MariaDB 10.6+.

use sqlx::MySqlPool;
use txoutbox_core::{Migration, Migrations, Result, TableName};

use crate::error::db_error;
use crate::message::InboxMessage;
use crate::sql_store::{Statements, apply_migrations, bind_claims, multi_row, sql_inbox_store};

/// The named lock that serializes inbox migrators on one server.
const MIGRATE_LOCK: &str = "txoutbox inbox migrate";

const MIGRATIONS: Migrations = Migrations::new(&[Migration {
    version: 1,
    name: "inbox table",
    template: include_str!("../migrations/mysql_0001_inbox_table.sql"),
}]);

/// The inbox on MySQL or MariaDB: table `inbox_messages` (or another, [`MySqlInbox::with_table`]).
/// The handler receives a `sqlx::Transaction<'static, MySql>`.
#[derive(Debug, Clone)]
pub struct MySqlInbox {
    pool: MySqlPool,
    table: TableName,
    sql: Statements,
    /// `INSERT INTO <table> (…) VALUES `: a batch's claim, rows appended.
    claim_head: String,
}

impl MySqlInbox {
    /// The inbox in table `inbox_messages` of the pool's database.
    pub fn new(pool: MySqlPool) -> Self {
        Self::with_table(pool, crate::default_table())
    }

    /// The inbox in `table` (validated identifiers, optionally schema-qualified).
    pub fn with_table(pool: MySqlPool, table: TableName) -> Self {
        let t = quoted(&table, "");
        let sql = Statements {
            replays: format!(
                "SELECT message_id, topic, kafka_partition, kafka_offset, record_key, payload, headers \
                 FROM {t} WHERE consumer = ? AND status = 'replay' ORDER BY received_at LIMIT ?"
            ),
            claim_replay: format!(
                "UPDATE {t} SET status = 'handled', received_at = UTC_TIMESTAMP(6), last_error = NULL, \
                 attempts = attempts + 1 WHERE consumer = ? AND message_id = ? AND status = 'replay'"
            ),
            repark: format!(
                "UPDATE {t} SET status = 'dead', last_error = ?, attempts = attempts + 1 \
                 WHERE consumer = ? AND message_id = ? AND status = 'replay'"
            ),
            claim: format!(
                "INSERT INTO {t} (consumer, message_id, topic, kafka_partition, kafka_offset, attempts, \
                 received_at) VALUES (?, ?, ?, ?, ?, 1, UTC_TIMESTAMP(6))"
            ),
            park: format!(
                "INSERT INTO {t} (consumer, message_id, status, topic, kafka_partition, kafka_offset, \
                 attempts, last_error, record_key, payload, headers, received_at) \
                 VALUES (?, ?, 'dead', ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))"
            ),
            remove_handled: format!(
                "DELETE FROM {t} WHERE consumer = ? AND status = 'handled' \
                 AND received_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND LIMIT ?"
            ),
        };
        let claim_head = format!(
            "INSERT INTO {t} (consumer, message_id, topic, kafka_partition, kafka_offset, attempts, received_at) VALUES "
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

    /// Claims a chunk of a batch (distinct ids) in one plain multi-row `INSERT`; returns the ids
    /// recorded now. MySQL has no `RETURNING`: when any id is there already the statement fails
    /// as a whole with ER_DUP_ENTRY — undone, the transaction goes on — and the ids are claimed
    /// one by one.
    async fn claim_chunk(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::MySql>,
        consumer: &str,
        messages: &[&InboxMessage],
    ) -> Result<Vec<String>> {
        let sql = multi_row(
            &self.claim_head,
            "(?, ?, ?, ?, ?, 1, UTC_TIMESTAMP(6))",
            messages.len(),
            "",
        );
        let query = bind_claims!(sqlx::query(sqlx::AssertSqlSafe(sql)), consumer, messages);
        match query.execute(&mut **tx).await {
            Ok(_) => Ok(messages.iter().map(|m| m.id.clone()).collect()),
            Err(e) if is_duplicate_key(&e) => {
                let mut inserted = Vec::with_capacity(messages.len());
                for message in messages {
                    if crate::store::InboxStore::claim(self, tx, consumer, message).await? {
                        inserted.push(message.id.clone());
                    }
                }
                Ok(inserted)
            }
            Err(e) => Err(db_error(e)),
        }
    }

    /// Creates or upgrades the inbox table; safe to run from many processes at once.
    pub async fn migrate(&self) -> Result<()> {
        // DDL commits on its own in MySQL: a named lock, not a transaction, keeps migrators apart.
        let mut tx = self.pool.acquire().await.map_err(db_error)?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, ?) AS SIGNED)")
            .bind(MIGRATE_LOCK)
            .bind(120_i64)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if locked != Some(1) {
            return Err(txoutbox_core::Error::database(
                format!("another inbox migration held the lock {MIGRATE_LOCK:?} for over 120 s; try again"),
                true,
            ));
        }
        let result = self.apply(&mut tx).await;
        let released = sqlx::query("DO RELEASE_LOCK(?)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await;
        if released.is_err() {
            // Never hand a connection that may still hold the lock back to the pool.
            tx.close_on_drop();
        }
        result
    }

    async fn apply(&self, tx: &mut sqlx::MySqlConnection) -> Result<()> {
        // A binary collation without trailing-space padding: MySQL 8 and MariaDB name it apart.
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let id_collation = if version.contains("MariaDB") {
            "utf8mb4_nopad_bin"
        } else {
            "utf8mb4_0900_bin"
        };
        apply_migrations!(
            tx,
            steps = MIGRATIONS,
            table = &self.table,
            migrations = quoted(&self.table, "_migrations"),
            applied_at = "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
            insert = "INSERT INTO {migrations} (version, name) VALUES (?, ?)",
            values = &[
                ("table", &quoted(&self.table, "")),
                ("name", self.table.table()),
                ("id_collation", id_collation),
            ],
        );
        Ok(())
    }
}

sql_inbox_store!(
    MySqlInbox,
    sqlx::MySql,
    begin = |pool| pool.begin(),
    age = |age| i64::try_from(age.as_micros()).unwrap_or(i64::MAX),
    duplicate = |error| is_duplicate_key(&error),
);

/// ER_DUP_ENTRY: the claim's id is there (a plain INSERT, not INSERT IGNORE, which would turn
/// every other error into a warning and a skipped record). MySQL undoes the statement only, not
/// the transaction.
fn is_duplicate_key(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| db.number() == 1062)
}

/// `` `schema`.`table<suffix>` `` of a validated [`TableName`].
fn quoted(table: &TableName, suffix: &str) -> String {
    match table.schema() {
        Some(schema) => format!("`{schema}`.`{}{suffix}`", table.table()),
        None => format!("`{}{suffix}`", table.table()),
    }
}
