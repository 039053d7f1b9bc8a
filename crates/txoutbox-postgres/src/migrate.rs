//! The store's migrations, applied in order under an advisory lock, each in its transaction.

use sqlx::{AssertSqlSafe, PgPool, Row};
use txoutbox_core::{Migration, Migrations, Result};

use crate::error::db_error;
use crate::sql::Statements;

/// The migrations, oldest first.
pub(crate) const MIGRATIONS: Migrations = Migrations::new(&[
    Migration {
        version: 1,
        name: "outbox table",
        template: include_str!("../migrations/0001_outbox_table.sql"),
    },
    Migration {
        version: 2,
        name: "notify trigger",
        template: include_str!("../migrations/0002_notify_trigger.sql"),
    },
    Migration {
        version: 3,
        name: "relay leases",
        template: include_str!("../migrations/0003_relay_leases.sql"),
    },
    Migration {
        version: 4,
        name: "notify while asleep",
        template: include_str!("../migrations/0004_notify_while_asleep.sql"),
    },
    Migration {
        version: 5,
        name: "cheaper writes",
        template: include_str!("../migrations/0005_cheaper_writes.sql"),
    },
    Migration {
        version: 6,
        name: "relay progress",
        template: include_str!("../migrations/0006_relay_progress.sql"),
    },
    Migration {
        version: 7,
        name: "leaner writes",
        template: include_str!("../migrations/0007_leaner_writes.sql"),
    },
]);

/// Creates or upgrades the outbox table; safe to run concurrently from many processes.
pub(crate) async fn migrate(pool: &PgPool, sql: &Statements) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    // One txoutbox migrator per database at a time (two tables may share a new schema); the
    // lock ends with the transaction. Migrations are rare, so the coarse lock costs nothing.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('txoutbox migrate', 0))")
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    if let Some(schema) = sql.table.schema() {
        // Only when missing: CREATE SCHEMA IF NOT EXISTS needs the database's CREATE privilege
        // even when the schema exists, which an application role often lacks.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        if !exists {
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        sql.migrations_table
    )))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    let applied: i32 = sqlx::query(AssertSqlSafe(format!(
        "SELECT coalesce(max(version), 0) FROM {}",
        sql.migrations_table
    )))
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get(0))
    .map_err(db_error)?;
    let schema_prefix = sql
        .table
        .schema()
        .map(|s| format!("\"{s}\"."))
        .unwrap_or_default();
    for step in MIGRATIONS.pending(&sql.table, applied)? {
        let Migration { version, name, .. } = *step;
        let statement = step.render(&[
            ("table", &sql.table.quoted()),
            ("schema_prefix", &schema_prefix),
            ("channel", &sql.channel),
            ("name", sql.table.table()),
        ]);
        sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {} (version, name) VALUES ($1, $2)",
            sql.migrations_table
        )))
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tracing::info!(table = %sql.table, version, name, "applied outbox migration");
    }
    tx.commit().await.map_err(db_error)
}

/// Fails with a clear error unless the table is at the version this crate expects.
pub(crate) async fn check(pool: &PgPool, sql: &Statements) -> Result<()> {
    let version: Option<i32> = sqlx::query(AssertSqlSafe(format!(
        "SELECT max(version) FROM {}",
        sql.migrations_table
    )))
    .fetch_one(pool)
    .await
    .and_then(|row| row.try_get(0))
    .or_else(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
        _ => Err(e),
    })
    .map_err(db_error)?;
    MIGRATIONS.check(&sql.table, version)
}

/// The wake-up trigger's name (created by migration 2, disabled by migration 7).
fn trigger(sql: &Statements) -> String {
    format!("{}_notify", sql.table.table())
}

/// Turns the wake-up trigger on or off (`ALTER TABLE … ENABLE | DISABLE TRIGGER`: the table's
/// owner may). Waits at most 5 s for the table's lock, like the migrations.
pub(crate) async fn set_push_wakeups(pool: &PgPool, sql: &Statements, on: bool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '5s'; ALTER TABLE {} {} TRIGGER \"{}\"",
        sql.table.quoted(),
        if on { "ENABLE" } else { "DISABLE" },
        trigger(sql)
    )))
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    tracing::info!(table = %sql.table, on, "push wake-ups set");
    Ok(())
}

/// Whether the wake-up trigger is on (false without the table or the trigger).
pub(crate) async fn push_wakeups(pool: &PgPool, sql: &Statements) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT tgenabled <> 'D' FROM pg_trigger \
           WHERE tgrelid = to_regclass($1) AND tgname = $2), false)",
    )
    .bind(sql.table.quoted())
    .bind(trigger(sql))
    .fetch_one(pool)
    .await
    .map_err(db_error)
}
