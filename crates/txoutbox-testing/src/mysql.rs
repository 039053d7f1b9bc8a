//! A fresh MySQL / MariaDB database per test.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use txoutbox_core::TableName;

/// The test server URL (`TXOUTBOX_MYSQL_URL`, set by `scripts/services.sh env`).
pub fn url() -> String {
    crate::required_env("TXOUTBOX_MYSQL_URL")
}

/// Connect options for the test server, with `database` as the default database (or none).
pub fn options(database: Option<&str>) -> MySqlConnectOptions {
    let options = MySqlConnectOptions::from_str(&url())
        .unwrap_or_else(|e| panic!("TXOUTBOX_MYSQL_URL is not a mysql:// URL: {e}"));
    match database {
        Some(db) => options.database(db),
        None => options,
    }
}

/// A database of its own and a pool whose connections use it, dropped with
/// [`TestDatabase::drop_database`].
#[derive(Debug)]
pub struct TestDatabase {
    pub pool: MySqlPool,
    pub database: String,
}

impl TestDatabase {
    pub async fn new() -> Self {
        Self::with_pool_size(8).await
    }

    pub async fn with_pool_size(size: u32) -> Self {
        let database = crate::unique("t");
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options(None))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to MySQL/MariaDB at TXOUTBOX_MYSQL_URL: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE `{database}` CHARACTER SET utf8mb4"
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
        let pool = Self::connect(&database, size).await;
        Self { pool, database }
    }

    /// Another pool over the same database (an application pool beside the relay's).
    pub async fn connect(database: &str, size: u32) -> MySqlPool {
        MySqlPoolOptions::new()
            .max_connections(size)
            .connect_with(options(Some(database)))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to database {database}: {e}"))
    }

    /// The outbox table inside this database, named with its database.
    pub fn table(&self) -> TableName {
        TableName::with_schema(&self.database, "outbox_messages").unwrap()
    }

    /// `` `database`.`name` `` for business tables of the test.
    pub fn qualify(&self, name: &str) -> String {
        format!("`{}`.`{name}`", self.database)
    }

    pub async fn drop_database(self) {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS `{}`",
            self.database
        )))
        .execute(&self.pool)
        .await;
        self.pool.close().await;
    }
}
