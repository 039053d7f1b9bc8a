//! Where the outbox lives: the database, the table, and where the relay reads messages.

use txoutbox_core::TableName;
use txoutbox_postgres_wal::WalConfig;

/// Where the outbox lives.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The database URL (holds a password maybe: never logged as is).
    pub database_url: String,
    /// The outbox table (in WAL mode: the dead-letter table).
    pub table: TableName,
    /// Where the relay reads messages.
    pub source: Source,
}

/// Where the relay reads messages.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The outbox table.
    Table,
    /// PostgreSQL's WAL through a logical replication slot; dead letters go to the target's table.
    Wal(WalConfig),
}
