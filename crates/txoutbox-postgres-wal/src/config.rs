//! Where a WAL outbox's messages go in the WAL and how the relay reads them: [`WalConfig`], and
//! the server setting WAL mode needs.

use std::time::Duration;

use sqlx::PgPool;
use txoutbox_core::{Error, Result, TableName};

use crate::error::db_error;

/// The default logical-message prefix.
pub const DEFAULT_PREFIX: &str = "txoutbox";
/// The default replication slot.
pub const DEFAULT_SLOT: &str = "txoutbox";

/// Settings of a WAL outbox: where messages go in the WAL and how the relay reads them.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// The logical-message prefix writers use and the relay reads (default `txoutbox`). Messages
    /// with another prefix are ignored.
    pub prefix: String,
    /// The logical replication slot (default `txoutbox`): one per relay group. Slots are global
    /// per database.
    pub slot: String,
    /// The (empty) publication `pgoutput` needs (default: the slot's name).
    pub publication: String,
    /// The table for dead letters (default `outbox_messages`): a regular outbox table where
    /// messages the relay gives up on are kept with status `dead`.
    pub dead_letter_table: TableName,
    /// How often the relay reports its confirmed position to PostgreSQL at most (default 1 s).
    pub status_interval: Duration,
    /// How many decoded messages the relay buffers before it stops reading the slot (default
    /// 100,000): back-pressure when Kafka is slower than the WAL.
    pub max_buffered: usize,
    /// How many bytes of decoded messages (topics, keys, payloads, headers) the relay buffers
    /// before it stops reading the slot (default 256 MiB). A transaction is buffered whole once
    /// its commit is read, so one larger than this is still taken, alone.
    pub max_buffered_bytes: usize,
    /// How long a relay waits for a slot another relay streams before it fails; `None` (the
    /// default) waits as long as it takes: the relay is a standby and takes over when the
    /// other's session ends.
    pub takeover_timeout: Option<Duration>,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.into(),
            slot: DEFAULT_SLOT.into(),
            publication: DEFAULT_SLOT.into(),
            dead_letter_table: TableName::default(),
            status_interval: Duration::from_secs(1),
            max_buffered: 100_000,
            max_buffered_bytes: 256 << 20,
            takeover_timeout: None,
        }
    }
}

impl WalConfig {
    /// Sets the slot, and the publication to the same name.
    #[must_use]
    pub fn with_slot(mut self, slot: impl Into<String>) -> Self {
        self.slot = slot.into();
        self.publication = self.slot.clone();
        self
    }

    /// Sets the logical-message prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the dead-letter table.
    #[must_use]
    pub fn with_dead_letter_table(mut self, table: TableName) -> Self {
        self.dead_letter_table = table;
        self
    }

    /// Sets the status interval.
    #[must_use]
    pub fn with_status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }

    /// Sets the buffer limit.
    #[must_use]
    pub fn with_max_buffered(mut self, max: usize) -> Self {
        self.max_buffered = max;
        self
    }

    /// Sets the buffer's byte limit.
    #[must_use]
    pub fn with_max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Sets how long to wait for a slot another relay streams before failing (by default a
    /// relay waits as long as it takes).
    #[must_use]
    pub fn with_takeover_timeout(mut self, timeout: Duration) -> Self {
        self.takeover_timeout = Some(timeout);
        self
    }

    /// Checks the names: slot and publication names are lower-case letters, digits and `_`
    /// (PostgreSQL's rule for slots), at most 63 bytes; the prefix is not empty.
    pub fn validate(&self) -> Result<()> {
        for (what, name) in [("slot", &self.slot), ("publication", &self.publication)] {
            let ok = !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(Error::Config(format!(
                    "invalid {what} name {name:?}: use 1 to 63 lower-case letters, digits and underscores"
                )));
            }
        }
        if self.prefix.is_empty() || self.prefix.contains('\0') {
            return Err(Error::Config(
                "the logical-message prefix must be a non-empty string".into(),
            ));
        }
        if self.max_buffered == 0 {
            return Err(Error::Config("max_buffered must be at least 1".into()));
        }
        if self.max_buffered_bytes == 0 {
            return Err(Error::Config("max_buffered_bytes must be at least 1".into()));
        }
        Ok(())
    }
}

/// Fails with what to do unless the server runs with `wal_level = logical`.
pub(crate) async fn check_wal_level(pool: &PgPool) -> Result<()> {
    let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
    if level != "logical" {
        return Err(Error::Config(format!(
            "PostgreSQL runs with wal_level = {level}; WAL mode needs wal_level = logical \
             (set it in postgresql.conf or with ALTER SYSTEM SET wal_level = logical, then restart \
             PostgreSQL), and max_replication_slots and max_wal_senders of at least 1"
        )));
    }
    Ok(())
}
