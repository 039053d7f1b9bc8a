//! The store's migrations, applied in order under a server-wide named lock.
//!
//! MySQL commits DDL implicitly, so a migration cannot be rolled back: each statement is
//! idempotent (`IF NOT EXISTS`), and a migration's version is recorded after its statements, so a
//! migrator that died half-way is completed by the next one.

use sqlx::{AssertSqlSafe, MySqlConnection, MySqlPool};
use txoutbox_core::{Error, Migration, Migrations, Result};

use crate::error::{db_error, error_number};
use crate::sql::{Statements, quote};
use crate::version;

/// The migrations, oldest first.
pub(crate) const MIGRATIONS: Migrations = Migrations::new(&[
    Migration {
        version: 1,
        name: "outbox table",
        template: include_str!("../migrations/0001_outbox_table.sql"),
    },
    Migration {
        version: 2,
        name: "relay leases",
        template: include_str!("../migrations/0002_relay_leases.sql"),
    },
]);

/// The named lock that serializes txoutbox migrators on one server.
const MIGRATE_LOCK: &str = "txoutbox migrate";

/// How long a migrator waits for another one, in seconds.
const MIGRATE_LOCK_WAIT_SECS: i64 = 120;

/// ER_NO_SUCH_TABLE and ER_BAD_DB_ERROR: the table or its database does not exist.
const NO_SUCH_TABLE: [u16; 2] = [1146, 1049];

/// Creates or upgrades the outbox table; safe to run concurrently from many processes.
pub(crate) async fn migrate(pool: &MySqlPool, sql: &Statements) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    version::check(&mut conn).await?;
    let locked: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, ?) AS SIGNED)")
        .bind(MIGRATE_LOCK)
        .bind(MIGRATE_LOCK_WAIT_SECS)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    if locked != Some(1) {
        return Err(Error::database(
            format!(
                "another txoutbox migration held the lock {MIGRATE_LOCK:?} for over {MIGRATE_LOCK_WAIT_SECS} s; \
                 try again, or look for a stuck migrator (SELECT IS_USED_LOCK('{MIGRATE_LOCK}'))"
            ),
            true,
        ));
    }
    let result = apply(&mut conn, sql).await;
    let released = sqlx::query("DO RELEASE_LOCK(?)")
        .bind(MIGRATE_LOCK)
        .execute(&mut *conn)
        .await;
    if released.is_err() {
        // Never hand a connection that may still hold the lock back to the pool.
        conn.close_on_drop();
    }
    result
}

async fn apply(conn: &mut MySqlConnection, sql: &Statements) -> Result<()> {
    if let Some(schema) = sql.table.schema() {
        // Only when missing: CREATE DATABASE IF NOT EXISTS needs the global CREATE privilege even
        // when the database exists, which an application account often lacks.
        let exists: i64 = sqlx::query_scalar(
            "SELECT CAST(count(*) AS SIGNED) FROM information_schema.schemata WHERE schema_name = ?",
        )
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        if exists == 0 {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
                quote(schema)
            )))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        }
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {} (version INT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, \
         applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE = InnoDB",
        sql.migrations_table
    )))
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    let applied: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CAST(coalesce(max(version), 0) AS SIGNED) FROM {}",
        sql.migrations_table
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    let applied = i32::try_from(applied).unwrap_or(i32::MAX);
    for step in MIGRATIONS.pending(&sql.table, applied)? {
        let Migration { version, name, .. } = *step;
        let statement = step.render(&[
            ("table", &sql.quoted),
            ("name", sql.table.table()),
            ("nodes", &sql.leases.nodes),
            ("leases", &sql.leases.leases),
            ("epoch", &sql.leases.epoch),
            ("progress", &sql.progress_table),
        ]);
        sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (version, name) VALUES (?, ?)",
            sql.migrations_table
        )))
        .bind(version)
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        tracing::info!(table = %sql.table, version, name, "applied outbox migration");
    }
    Ok(())
}

/// Fails with a clear error unless the server is new enough and the table is at the version this
/// crate expects.
pub(crate) async fn check(pool: &MySqlPool, sql: &Statements) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    version::check(&mut conn).await?;
    let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CAST(max(version) AS SIGNED) FROM {}",
        sql.migrations_table
    )))
    .fetch_one(&mut *conn)
    .await
    .or_else(|e| match error_number(&e) {
        Some(n) if NO_SUCH_TABLE.contains(&n) => Ok(None),
        _ => Err(e),
    })
    .map_err(db_error)?;
    let found = found.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    MIGRATIONS.check(&sql.table, found)
}
