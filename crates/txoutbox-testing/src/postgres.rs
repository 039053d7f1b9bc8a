//! A fresh PostgreSQL schema per test.

use sqlx::postgres::{PgPool, PgPoolOptions};
use txoutbox_core::TableName;

/// The test database URL (`TXOUTBOX_POSTGRES_URL`).
pub fn url() -> String {
    crate::required_env("TXOUTBOX_POSTGRES_URL")
}

/// A pool and a schema of its own, dropped with [`TestSchema::drop_schema`].
#[derive(Debug)]
pub struct TestSchema {
    pub pool: PgPool,
    pub schema: String,
}

impl TestSchema {
    pub async fn new() -> Self {
        Self::with_pool_size(8).await
    }

    pub async fn with_pool_size(size: u32) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .connect(&url())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at TXOUTBOX_POSTGRES_URL: {e}"));
        let schema = crate::unique("t");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&pool)
            .await
            .unwrap();
        Self { pool, schema }
    }

    /// The outbox table inside this schema.
    pub fn table(&self) -> TableName {
        TableName::with_schema(&self.schema, "outbox_messages").unwrap()
    }

    /// `"schema"."name"` for business tables of the test.
    pub fn qualify(&self, name: &str) -> String {
        format!("\"{}\".\"{name}\"", self.schema)
    }

    pub async fn drop_schema(self) {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await;
        self.pool.close().await;
    }
}
