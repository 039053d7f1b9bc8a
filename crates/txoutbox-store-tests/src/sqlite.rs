//! The SQLite harness: a fresh database file per case, the outbox table in its `main` schema.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};
use txoutbox_core::{NewMessage, Result, TableName, Topics};
use txoutbox_sqlite::{SqliteOutbox, SqliteStore};
use txoutbox_testing::sqlite::TestDb;
use uuid::Uuid;

use crate::{Harness, HeldTransaction, RowState, StoreHarness, TxEnd};

/// One database file of its own and an outbox over a table in it.
#[derive(Debug)]
pub struct SqliteHarness {
    db: TestDb,
    outbox: SqliteOutbox,
}

impl SqliteHarness {
    /// The file's pool.
    pub fn pool(&self) -> &sqlx::SqlitePool {
        &self.db.pool
    }

    /// The outbox under test.
    pub fn outbox(&self) -> &SqliteOutbox {
        &self.outbox
    }

    fn migrations_table(&self) -> String {
        self.outbox.table().quoted_with_suffix("_migrations")
    }

    async fn begin(&self) -> sqlx::Transaction<'static, sqlx::Sqlite> {
        self.db.pool.begin().await.expect("begin")
    }
}

async fn end(tx: sqlx::Transaction<'static, sqlx::Sqlite>, end: TxEnd) {
    match end {
        TxEnd::Commit => tx.commit().await.expect("commit"),
        TxEnd::Rollback => tx.rollback().await.expect("rollback"),
    }
}

/// The store keeps times as milliseconds since the Unix epoch.
fn from_millis(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(|ms| DateTime::from_timestamp_millis(ms).expect("time in range"))
}

impl StoreHarness for SqliteHarness {
    type Store = SqliteStore;

    async fn ready(topics: Topics) -> Self {
        crate::migrated_database(topics).await
    }

    fn store(&self) -> SqliteStore {
        self.outbox.store(self.db.pool.clone())
    }

    async fn publish<T: Sync + 'static>(&self, message: &T, how: TxEnd) -> Result<Uuid> {
        let mut tx = self.begin().await;
        let result = self.outbox.publish(&mut *tx, message).await;
        end(tx, how).await;
        result
    }

    async fn publish_all<T: Sync + 'static>(&self, messages: &[T], how: TxEnd) -> Result<Vec<Uuid>> {
        let mut tx = self.begin().await;
        let result = self.outbox.publish_all(&mut *tx, messages).await;
        end(tx, how).await;
        result
    }

    async fn publish_message(&self, message: NewMessage, how: TxEnd) -> Result<Uuid> {
        let mut tx = self.begin().await;
        let result = self.outbox.publish_message(&mut *tx, message).await;
        end(tx, how).await;
        result
    }

    async fn publish_messages(&self, messages: Vec<NewMessage>, how: TxEnd) -> Result<Vec<Uuid>> {
        let mut tx = self.begin().await;
        let result = self.outbox.publish_messages(&mut *tx, messages).await;
        end(tx, how).await;
        result
    }

    /// A writing transaction holds SQLite's one write lock from its first insert to its commit:
    /// ids are taken in commit order.
    async fn publish_held(&self, _messages: Vec<NewMessage>) -> Option<HeldTransaction> {
        None
    }

    async fn row(&self, id: i64) -> Option<RowState> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT status, attempts, last_error, next_attempt_at, published_at FROM {} WHERE id = ?1",
            self.table().quoted()
        )))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await
        .expect("read row")?;
        Some(RowState {
            status: row.get("status"),
            attempts: row.get("attempts"),
            last_error: row.get("last_error"),
            next_attempt_at: from_millis(row.get("next_attempt_at")),
            published_at: from_millis(row.get("published_at")),
        })
    }

    async fn row_count(&self) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            self.table().quoted()
        )))
        .fetch_one(&self.db.pool)
        .await
        .expect("count rows")
    }

    async fn backdate(&self, id: i64, created_at: DateTime<Utc>) {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET created_at = ?1 WHERE id = ?2",
            self.table().quoted()
        )))
        .bind(created_at.timestamp_millis())
        .bind(id)
        .execute(&self.db.pool)
        .await
        .expect("backdate");
    }

    async fn teardown(self) {
        drop(self.outbox);
        self.db.pool.close().await;
        drop(self.db); // removes the file
    }
}

impl Harness for SqliteHarness {
    /// One relay per file, so every row is in bucket 0.
    const BUCKETS: i32 = 1;

    async fn setup_with_table(topics: Topics, table: &str) -> Result<Self> {
        let table = TableName::new(table)?;
        let db = TestDb::new().await;
        Ok(Self {
            outbox: SqliteOutbox::with_table(topics, table),
            db,
        })
    }

    fn table(&self) -> &TableName {
        self.outbox.table()
    }

    async fn migrate(&self) -> Result<()> {
        self.outbox.migrate(&self.db.pool).await
    }

    async fn insert_minimal(&self, topic: &str, payload: &[u8]) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, payload) VALUES (?1, ?2) RETURNING id",
            self.table().quoted()
        )))
        .bind(topic)
        .bind(payload)
        .fetch_one(&self.db.pool)
        .await
        .expect("foreign insert")
    }

    async fn insert_foreign(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers_json: Option<&str>,
    ) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, key, payload, headers) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            self.table().quoted()
        )))
        .bind(topic)
        .bind(key)
        .bind(payload)
        .bind(headers_json)
        .fetch_one(&self.db.pool)
        .await
        .expect("foreign insert")
    }

    async fn try_insert_literals(
        &self,
        topic: &str,
        key_sql: &'static str,
        payload_sql: &'static str,
    ) -> Option<i64> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {} (topic, key, payload) VALUES (?1, {key_sql}, {payload_sql}) RETURNING id",
            self.table().quoted()
        )))
        .bind(topic)
        .fetch_one(&self.db.pool)
        .await
        .ok()
    }

    async fn schema_versions(&self) -> Vec<i32> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT version FROM {} ORDER BY version",
            self.migrations_table()
        )))
        .fetch_all(&self.db.pool)
        .await
        .expect("read schema versions")
    }

    async fn record_schema_version(&self, version: i32) {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (version, name) VALUES (?1, 'from a newer txoutbox')",
            self.migrations_table()
        )))
        .bind(version)
        .execute(&self.db.pool)
        .await
        .expect("record schema version");
    }
}
