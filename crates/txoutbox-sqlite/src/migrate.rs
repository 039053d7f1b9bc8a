//! The store's migrations, applied in order in one immediate transaction.

use sqlx::{AssertSqlSafe, Row, SqlitePool};
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
        name: "relay progress",
        template: include_str!("../migrations/0002_relay_progress.sql"),
    },
    Migration {
        version: 3,
        name: "leaner writes",
        template: include_str!("../migrations/0003_leaner_writes.sql"),
    },
]);

/// Creates or upgrades the outbox table. Switches the database to WAL journaling, so the
/// application's writers and the relay's readers do not block each other.
pub(crate) async fn migrate(pool: &SqlitePool, sql: &Statements) -> Result<()> {
    let schema_prefix = sql
        .table
        .schema()
        .map(|s| format!("\"{s}\"."))
        .unwrap_or_default();
    sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA {schema_prefix}journal_mode = WAL")))
        .execute(pool)
        .await
        .map_err(db_error)?;
    let mut conn = pool.acquire().await.map_err(db_error)?;
    // BEGIN IMMEDIATE takes the write lock first: concurrent migrators wait instead of racing.
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    let result = async {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
            sql.migrations_table
        )))
        .execute(&mut *conn)
        .await?;
        let applied: i32 = sqlx::query(AssertSqlSafe(format!(
            "SELECT coalesce(max(version), 0) FROM {}",
            sql.migrations_table
        )))
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
        Ok::<_, sqlx::Error>(applied)
    }
    .await;
    let applied = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            return Err(db_error(e));
        }
    };
    let pending = match MIGRATIONS.pending(&sql.table, applied) {
        Ok(pending) => pending,
        Err(newer) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            return Err(newer);
        }
    };
    let apply = async {
        for step in pending {
            let Migration { version, name, .. } = *step;
            // The schema cookie as the steps before left it (a step that edits the schema table
            // bumps it, so that every connection reads the new definitions).
            let cookie: i64 =
                sqlx::query_scalar(AssertSqlSafe(format!("PRAGMA {schema_prefix}schema_version")))
                    .fetch_one(&mut *conn)
                    .await?;
            let next_cookie = (cookie + 1).to_string();
            let statement = step.render(&[
                ("table", &sql.table.quoted()),
                ("schema_prefix", &schema_prefix),
                ("name", sql.table.table()),
                ("next_schema_version", &next_cookie),
            ]);
            sqlx::raw_sql(AssertSqlSafe(statement))
                .execute(&mut *conn)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {} (version, name) VALUES (?1, ?2)",
                sql.migrations_table
            )))
            .bind(version)
            .bind(name)
            .execute(&mut *conn)
            .await?;
            tracing::info!(table = %sql.table, version, name, "applied outbox migration");
        }
        sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    if let Err(e) = apply {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        // A step that failed while the schema table was writable must not leave this pooled
        // connection so (on its own: the ROLLBACK fails if SQLite already rolled back).
        let _ = sqlx::raw_sql("PRAGMA writable_schema = OFF")
            .execute(&mut *conn)
            .await;
        return Err(db_error(e));
    }
    Ok(())
}

/// Fails with a clear error unless the table is at the version this crate expects.
pub(crate) async fn check(pool: &SqlitePool, sql: &Statements) -> Result<()> {
    let version: Option<i32> = sqlx::query(AssertSqlSafe(format!(
        "SELECT max(version) FROM {}",
        sql.migrations_table
    )))
    .fetch_one(pool)
    .await
    .and_then(|row| row.try_get(0))
    .or_else(|e| match &e {
        sqlx::Error::Database(db) if db.message().contains("no such table") => Ok(None),
        _ => Err(e),
    })
    .map_err(db_error)?;
    MIGRATIONS.check(&sql.table, version)
}
