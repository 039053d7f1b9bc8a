//! The PostgreSQL harness: a fresh schema per case, with the outbox table inside it (so every
//! case also shows that a table outside the connection's `search_path` works).

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};
use txoutbox_core::{NewMessage, Result, TableName, Topics};
use txoutbox_postgres::{PgOutbox, PgStore};
use txoutbox_testing::postgres::TestSchema;
use uuid::Uuid;

use crate::{Harness, HeldTransaction, RowState, StoreHarness, TxEnd};

/// One schema of its own and an outbox over a table in it.
#[derive(Debug)]
pub struct PgHarness {
    db: TestSchema,
    outbox: PgOutbox,
}

impl PgHarness {
    /// The schema's pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.db.pool
    }

    /// The outbox under test.
    pub fn outbox(&self) -> &PgOutbox {
        &self.outbox
    }

    fn migrations_table(&self) -> String {
        self.outbox.table().quoted_with_suffix("_migrations")
    }

    async fn begin(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        self.db.pool.begin().await.expect("begin")
    }
}

async fn end(tx: sqlx::Transaction<'static, sqlx::Postgres>, end: TxEnd) {
    match end {
        TxEnd::Commit => tx.commit().await.expect("commit"),
        TxEnd::Rollback => tx.rollback().await.expect("rollback"),
    }
}

impl StoreHarness for PgHarness {
    type Store = PgStore;

    async fn ready(topics: Topics) -> Self {
        crate::migrated_database(topics).await
    }

    fn store(&self) -> PgStore {
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

    async fn publish_held(&self, messages: Vec<NewMessage>) -> Option<HeldTransaction> {
        let mut tx = self.begin().await;
        if let Err(e) = self.outbox.publish_messages(&mut *tx, messages).await {
            panic!("publish_messages in a held transaction: {e}");
        }
        Some(Box::pin(async move { tx.commit().await.expect("commit") }))
    }

    async fn row(&self, id: i64) -> Option<RowState> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT status, attempts, last_error, next_attempt_at, published_at FROM {} WHERE id = $1",
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
            next_attempt_at: row.get("next_attempt_at"),
            published_at: row.get("published_at"),
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
            "UPDATE {} SET created_at = $1 WHERE id = $2",
            self.table().quoted()
        )))
        .bind(created_at)
        .bind(id)
        .execute(&self.db.pool)
        .await
        .expect("backdate");
    }

    async fn teardown(self) {
        drop(self.outbox);
        self.db.drop_schema().await;
    }
}

impl Harness for PgHarness {
    const BUCKETS: i32 = 64;

    async fn setup_with_table(topics: Topics, table: &str) -> Result<Self> {
        TableName::new(table)?; // the store's error for a bad name, before any schema exists
        let db = TestSchema::with_pool_size(4).await;
        let table = TableName::with_schema(&db.schema, table)?;
        Ok(Self {
            outbox: PgOutbox::with_table(topics, table),
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
            "INSERT INTO {} (topic, payload) VALUES ($1, $2) RETURNING id",
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
            "INSERT INTO {} (topic, key, payload, headers) VALUES ($1, $2, $3, $4::json) RETURNING id",
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
            "INSERT INTO {} (topic, key, payload) VALUES ($1, {key_sql}, {payload_sql}) RETURNING id",
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
            "INSERT INTO {} (version, name) VALUES ($1, 'from a newer txoutbox')",
            self.migrations_table()
        )))
        .bind(version)
        .execute(&self.db.pool)
        .await
        .expect("record schema version");
    }
}
