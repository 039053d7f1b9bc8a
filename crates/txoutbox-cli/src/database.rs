//! The outbox database named by a URL: PostgreSQL, SQLite or MySQL/MariaDB.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use txoutbox_core::{TableName, Topics};
use txoutbox_mysql::MySqlOutbox;
use txoutbox_postgres::PgOutbox;
use txoutbox_postgres_wal::{PgWalOutbox, WalConfig};
use txoutbox_sqlite::SqliteOutbox;

use crate::error::CliError;
use crate::target::Target;

/// How long to wait for a database connection before saying it is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one statement of the web console may run (PostgreSQL `statement_timeout`, MariaDB
/// `max_statement_time`, MySQL `max_execution_time`): a busy console gives up, the relay does not
/// wait for it.
pub(crate) const CONSOLE_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections of the web console's own pool, apart from the relay's.
pub(crate) const CONSOLE_CONNECTIONS: u32 = 2;

/// A connected outbox database.
#[derive(Debug, Clone)]
pub(crate) enum Database {
    /// PostgreSQL.
    Postgres(PgPool, TableName),
    /// SQLite.
    Sqlite(SqlitePool, TableName),
    /// MySQL 8 or MariaDB 10.6+.
    MySql(MySqlPool, TableName),
}

/// Runs `$body` with `$store` bound to the database's store, whatever its type.
#[macro_export]
macro_rules! with_store {
    ($database:expr, $store:ident => $body:expr) => {
        match $database {
            $crate::database::Database::Postgres(pool, table) => {
                let $store = $crate::database::pg_outbox(table).store(pool.clone());
                $body
            }
            $crate::database::Database::Sqlite(pool, table) => {
                let $store = $crate::database::sqlite_outbox(table).store(pool.clone());
                $body
            }
            $crate::database::Database::MySql(pool, table) => {
                let $store = $crate::database::mysql_outbox(table).store(pool.clone());
                $body
            }
        }
    };
}

/// Whether connecting may create a missing SQLite file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// `migrate`: create it.
    IfMissing,
    /// Everything else: a missing file is a mistake to report.
    Never,
}

/// What the database is opened for: the words of its connection errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// The outbox table (every command but `inbox`).
    Outbox,
    /// A consumer's inbox table (`txoutbox inbox`).
    Inbox,
}

impl Holds {
    fn noun(self) -> &'static str {
        match self {
            Self::Outbox => "outbox",
            Self::Inbox => "inbox",
        }
    }

    /// What creates a missing SQLite file.
    fn how_to_create(self) -> &'static str {
        match self {
            Self::Outbox => "run `txoutbox migrate` first to create it",
            Self::Inbox => "the consumer creates it (its inbox's migrate()) when it first starts",
        }
    }
}

impl Database {
    /// Connects, with an error that names the (redacted) URL and what to check.
    pub(crate) async fn connect(
        target: &Target,
        create: Create,
        max_connections: u32,
    ) -> Result<Self, CliError> {
        Self::connect_with(target, create, max_connections, None, Holds::Outbox).await
    }

    /// Connects to the database of an inbox table (`table`, in `target`'s database), one
    /// connection, never creating a SQLite file.
    pub(crate) async fn connect_inbox(target: &Target, table: &TableName) -> Result<Self, CliError> {
        let target = Target {
            table: table.clone(),
            ..target.clone()
        };
        Self::connect_with(&target, Create::Never, 1, None, Holds::Inbox).await
    }

    /// The web console's own small pool: its reads never take the relay's connections, and
    /// each statement ends after [`CONSOLE_STATEMENT_TIMEOUT`] (SQLite has no statement
    /// timeout; its reads are local).
    pub(crate) async fn connect_console(target: &Target) -> Result<Self, CliError> {
        Self::connect_with(
            target,
            Create::Never,
            CONSOLE_CONNECTIONS,
            Some(CONSOLE_STATEMENT_TIMEOUT),
            Holds::Outbox,
        )
        .await
    }

    /// The same connections, for another table of the database (the console's inbox view).
    pub(crate) fn with_table(&self, table: TableName) -> Self {
        match self {
            Self::Postgres(pool, _) => Self::Postgres(pool.clone(), table),
            Self::Sqlite(pool, _) => Self::Sqlite(pool.clone(), table),
            Self::MySql(pool, _) => Self::MySql(pool.clone(), table),
        }
    }

    async fn connect_with(
        target: &Target,
        create: Create,
        max_connections: u32,
        statement_timeout: Option<Duration>,
        holds: Holds,
    ) -> Result<Self, CliError> {
        let url = &target.database_url;
        let shown = redact(url);
        let what = holds.noun();
        let unreachable = |e: sqlx::Error| {
            CliError::runtime(format!(
                "cannot connect to the {what} database at {shown}: {e}. Check the URL, that the server is \
                 running and reachable, and the credentials"
            ))
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut options = PgConnectOptions::from_str(url)
                .map_err(|e| CliError::usage(format!("bad database URL {shown}: {e}")))?;
            // `txoutbox` in pg_stat_activity unless the URL names the application itself
            // (`?application_name=...`, e.g. one name per relay node).
            if options.get_application_name().is_none() {
                options = options.application_name("txoutbox");
            }
            if let Some(timeout) = statement_timeout {
                options = options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(unreachable)?;
            Ok(Self::Postgres(pool, target.table.clone()))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| CliError::usage(format!("bad database URL {shown}: {e}")))?
                .create_if_missing(create == Create::IfMissing)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(|e| match create {
                    Create::Never => CliError::runtime(format!(
                        "cannot open the SQLite {what} {shown}: {e}. Check the path; {}",
                        holds.how_to_create()
                    )),
                    Create::IfMissing => unreachable(e),
                })?;
            Ok(Self::Sqlite(pool, target.table.clone()))
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            let options = MySqlConnectOptions::from_str(&url)
                .map_err(|e| CliError::usage(format!("bad database URL {shown}: {e}")))?;
            let pool = MySqlPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(CONNECT_TIMEOUT)
                .after_connect(move |connection, _| {
                    Box::pin(async move {
                        if let Some(timeout) = statement_timeout {
                            mysql_statement_timeout(connection, timeout).await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .map_err(unreachable)?;
            Ok(Self::MySql(pool, target.table.clone()))
        } else {
            Err(CliError::usage(format!(
                "unsupported database URL {shown}: use postgres://user@host/db, mysql://user@host/db or \
                 sqlite:///path/to/file.db"
            )))
        }
    }

    /// Creates or upgrades the outbox table.
    pub(crate) async fn migrate(&self) -> Result<(), CliError> {
        match self {
            Self::Postgres(pool, table) => pg_outbox(table).migrate(pool).await?,
            Self::Sqlite(pool, table) => sqlite_outbox(table).migrate(pool).await?,
            Self::MySql(pool, table) => mysql_outbox(table).migrate(pool).await?,
        }
        Ok(())
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &TableName {
        match self {
            Self::Postgres(_, table) | Self::Sqlite(_, table) | Self::MySql(_, table) => table,
        }
    }
}

/// Limits every statement of a MySQL / MariaDB session: MariaDB's `max_statement_time` (seconds,
/// every statement), else MySQL's `max_execution_time` (milliseconds, `SELECT`s: the console's
/// reads).
async fn mysql_statement_timeout(
    connection: &mut sqlx::MySqlConnection,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    let mariadb = format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64());
    if connection.execute(sqlx::AssertSqlSafe(mariadb)).await.is_ok() {
        return Ok(());
    }
    let mysql = format!("SET SESSION max_execution_time = {}", timeout.as_millis());
    connection.execute(sqlx::AssertSqlSafe(mysql)).await.map(|_| ())
}

/// The PostgreSQL outbox of `table` (the daemon publishes nothing itself: no topics).
pub(crate) fn pg_outbox(table: &TableName) -> PgOutbox {
    PgOutbox::with_table(Topics::new(), table.clone())
}

/// The WAL-mode outbox of `config` (the daemon publishes nothing itself: no topics).
pub(crate) fn wal_outbox(config: &WalConfig) -> Result<PgWalOutbox, CliError> {
    Ok(PgWalOutbox::new(Topics::new(), config.clone())?)
}

/// The error for WAL mode on a database other than PostgreSQL (the settings refuse it first).
pub(crate) fn wal_needs_postgres() -> CliError {
    CliError::usage("--source wal needs a PostgreSQL database (postgres://...)")
}

/// The MySQL / MariaDB outbox of `table`.
pub(crate) fn mysql_outbox(table: &TableName) -> MySqlOutbox {
    MySqlOutbox::with_table(Topics::new(), table.clone())
}

/// The SQLite outbox of `table`.
pub(crate) fn sqlite_outbox(table: &TableName) -> SqliteOutbox {
    SqliteOutbox::with_table(Topics::new(), table.clone())
}

/// The URL with its password replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    txoutbox_core::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/shop?sslmode=require"),
            "postgres://app:***@db:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/shop?password=s3cret"),
            "postgres://db/shop?password=***"
        );
        assert_eq!(redact("postgres://app@db/shop"), "postgres://app@db/shop");
        assert_eq!(redact("sqlite:///var/lib/shop.db"), "sqlite:///var/lib/shop.db");
    }
}
