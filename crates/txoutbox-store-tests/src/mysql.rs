//! The MySQL / MariaDB harness: a fresh database per case, the outbox table named with it (so
//! every case also shows that a qualified table name works).

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};
use txoutbox_core::{NewMessage, Result, TableName, Topics};
use txoutbox_mysql::{MySqlOutbox, MySqlStore};
use txoutbox_testing::mysql::TestDatabase;
use uuid::Uuid;

use crate::{Harness, HeldTransaction, RowState, StoreHarness, TxEnd};

/// One database of its own and an outbox over a table in it.
#[derive(Debug)]
pub struct MySqlHarness {
    db: TestDatabase,
    outbox: MySqlOutbox,
}

/// `` `database`.`table` `` with an optional suffix on the table.
fn backquoted(table: &TableName, suffix: &str) -> String {
    match table.schema() {
        Some(schema) => format!("`{schema}`.`{}{suffix}`", table.table()),
        None => format!("`{}{suffix}`", table.table()),
    }
}

impl MySqlHarness {
    /// The database's pool.
    pub fn pool(&self) -> &sqlx::MySqlPool {
        &self.db.pool
    }

    /// The outbox under test.
    pub fn outbox(&self) -> &MySqlOutbox {
        &self.outbox
    }

    fn quoted(&self) -> String {
        backquoted(self.outbox.table(), "")
    }

    fn migrations_table(&self) -> String {
        backquoted(self.outbox.table(), "_migrations")
    }

    async fn begin(&self) -> sqlx::Transaction<'static, sqlx::MySql> {
        self.db.pool.begin().await.expect("begin")
    }

    async fn insert(
        &self,
        sql: String,
        binds: impl FnOnce(SqlQuery<'_>) -> SqlQuery<'_>,
    ) -> sqlx::Result<i64> {
        let done = binds(sqlx::query(AssertSqlSafe(sql)))
            .execute(&self.db.pool)
            .await?;
        Ok(i64::try_from(done.last_insert_id()).expect("id in range"))
    }
}

type SqlQuery<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

async fn end(tx: sqlx::Transaction<'static, sqlx::MySql>, end: TxEnd) {
    match end {
        TxEnd::Commit => tx.commit().await.expect("commit"),
        TxEnd::Rollback => tx.rollback().await.expect("rollback"),
    }
}

impl StoreHarness for MySqlHarness {
    type Store = MySqlStore;

    async fn ready(topics: Topics) -> Self {
        crate::migrated_database(topics).await
    }

    fn store(&self) -> MySqlStore {
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
        let result = self.outbox.publish_all(&mut tx, messages).await;
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
        let result = self.outbox.publish_messages(&mut tx, messages).await;
        end(tx, how).await;
        result
    }

    async fn publish_held(&self, messages: Vec<NewMessage>) -> Option<HeldTransaction> {
        let mut tx = self.begin().await;
        if let Err(e) = self.outbox.publish_messages(&mut tx, messages).await {
            panic!("publish_messages in a held transaction: {e}");
        }
        Some(Box::pin(async move { tx.commit().await.expect("commit") }))
    }

    async fn row(&self, id: i64) -> Option<RowState> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT status, attempts, last_error, next_attempt_at, published_at FROM {} WHERE id = ?",
            self.quoted()
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
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {}", self.quoted())))
            .fetch_one(&self.db.pool)
            .await
            .expect("count rows")
    }

    async fn backdate(&self, id: i64, created_at: DateTime<Utc>) {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {} SET created_at = ? WHERE id = ?",
            self.quoted()
        )))
        .bind(created_at)
        .bind(id)
        .execute(&self.db.pool)
        .await
        .expect("backdate");
    }

    async fn teardown(self) {
        drop(self.outbox);
        self.db.drop_database().await;
    }
}

impl Harness for MySqlHarness {
    const BUCKETS: i32 = 64;

    async fn setup_with_table(topics: Topics, table: &str) -> Result<Self> {
        TableName::new(table)?; // the store's error for a bad name, before any database exists
        let db = TestDatabase::with_pool_size(4).await;
        let table = TableName::with_schema(&db.database, table)?;
        Ok(Self {
            outbox: MySqlOutbox::with_table(topics, table),
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
        let sql = format!("INSERT INTO {} (topic, payload) VALUES (?, ?)", self.quoted());
        let payload = payload.to_vec();
        self.insert(sql, |q| q.bind(topic.to_owned()).bind(payload))
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
        let sql = format!(
            "INSERT INTO {} (topic, `key`, payload, headers) VALUES (?, ?, ?, ?)",
            self.quoted()
        );
        let (topic, key, payload, headers) = (
            topic.to_owned(),
            key.map(<[u8]>::to_vec),
            payload.map(<[u8]>::to_vec),
            headers_json.map(str::to_owned),
        );
        self.insert(sql, |q| q.bind(topic).bind(key).bind(payload).bind(headers))
            .await
            .expect("foreign insert")
    }

    async fn try_insert_literals(
        &self,
        topic: &str,
        key_sql: &'static str,
        payload_sql: &'static str,
    ) -> Option<i64> {
        let sql = format!(
            "INSERT INTO {} (topic, `key`, payload) VALUES (?, {key_sql}, {payload_sql})",
            self.quoted()
        );
        let topic = topic.to_owned();
        self.insert(sql, |q| q.bind(topic)).await.ok()
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
            "INSERT INTO {} (version, name) VALUES (?, 'from a newer txoutbox')",
            self.migrations_table()
        )))
        .bind(version)
        .execute(&self.db.pool)
        .await
        .expect("record schema version");
    }
}
