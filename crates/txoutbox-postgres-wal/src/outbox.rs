//! The write side: messages as transactional logical messages, and the slot's set-up.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgExecutor, PgPool};
use txoutbox_core::{Error, NewMessage, Result, TableName, Topics};
use txoutbox_postgres::PgOutbox;
use uuid::Uuid;

use crate::envelope;
use crate::error::db_error;
use crate::store::PgWalStore;

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

/// The outbox in WAL mode: `publish` writes a transactional logical message
/// (`pg_logical_emit_message(true, prefix, envelope)`) in the caller's transaction, with no
/// table write; the relay streams them from a logical replication slot ([`PgWalStore`]).
///
/// ```no_run
/// # use serde::Serialize;
/// # use txoutbox_core::{Topic, Topics};
/// # use txoutbox_postgres_wal::{PgWalOutbox, WalConfig};
/// # #[derive(Serialize)] struct OrderCreated { id: i64 }
/// # async fn demo(pool: sqlx::PgPool, url: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let topics = Topics::new().with(Topic::<OrderCreated>::json("orders")?.key(|o| o.id.to_string()))?;
/// let outbox = PgWalOutbox::new(topics, WalConfig::default())?;
/// outbox.migrate(&pool).await?; // the slot, its publication, the dead-letter table
///
/// let mut tx = pool.begin().await?;
/// outbox.publish(&mut *tx, &OrderCreated { id: 42 }).await?; // decoded only if this commits
/// tx.commit().await?;
///
/// let store = outbox.store(pool.clone(), url)?; // streams the slot for the relay
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgWalOutbox {
    topics: Arc<Topics>,
    config: Arc<WalConfig>,
}

impl PgWalOutbox {
    /// A WAL outbox with `config` (validated here).
    pub fn new(topics: Topics, config: WalConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            topics: Arc::new(topics),
            config: Arc::new(config),
        })
    }

    /// The settings.
    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    /// The topic definitions.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Creates what the relay needs, idempotently: checks `wal_level`, creates the dead-letter
    /// table (a regular outbox table), the empty publication and the logical replication slot
    /// (plugin `pgoutput`). The slot keeps every WAL segment from its creation on until a relay
    /// confirms it: create it when a relay is about to run, drop it ([`drop_slot`](Self::drop_slot))
    /// when WAL mode is abandoned.
    pub async fn migrate(&self, pool: &PgPool) -> Result<()> {
        check_wal_level(pool).await?;
        PgOutbox::with_table(Topics::new(), self.config.dead_letter_table.clone())
            .migrate(pool)
            .await?;
        let c = &self.config;
        let has_publication: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
                .bind(&c.publication)
                .fetch_one(pool)
                .await
                .map_err(db_error)?;
        if !has_publication {
            // Validated name: lower-case letters, digits and underscores only.
            match sqlx::raw_sql(AssertSqlSafe(format!("CREATE PUBLICATION \"{}\"", c.publication)))
                .execute(pool)
                .await
            {
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42710") => {}
                Err(e) => return Err(setup_error(e, "create the publication")),
            }
        }
        let has_slot: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database())",
        )
        .bind(&c.slot)
        .fetch_one(pool)
        .await
        .map_err(db_error)?;
        if !has_slot {
            match sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
                .bind(&c.slot)
                .execute(pool)
                .await
            {
                Ok(_) => tracing::info!(slot = %c.slot, "created the logical replication slot"),
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42710") => {}
                Err(e) => return Err(setup_error(e, "create the replication slot")),
            }
        }
        Ok(())
    }

    /// Drops the slot and its publication (PostgreSQL then frees the WAL the slot kept).
    /// Messages written since the relay's last confirmed position are lost with it. Fails while
    /// a relay streams the slot.
    pub async fn drop_slot(&self, pool: &PgPool) -> Result<()> {
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = $1 AND database = current_database()",
        )
        .bind(&self.config.slot)
        .execute(pool)
        .await
        .map_err(|e| setup_error(e, "drop the replication slot"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP PUBLICATION IF EXISTS \"{}\"",
            self.config.publication
        )))
        .execute(pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The slot as PostgreSQL sees it (lag, `wal_status`, `safe_wal_size`), read over `pool`
    /// without a replication connection; fails if the slot does not exist.
    pub async fn slot_status(&self, pool: &PgPool) -> Result<crate::SlotStatus> {
        crate::store::slot_status(pool, &self.config).await
    }

    /// The relay's source over this outbox's slot: `pool` for the dead-letter table and
    /// statistics, `database_url` (`postgres://user:password@host:port/database`) for the
    /// replication connection (the role needs the `REPLICATION` attribute). Its libpq TLS
    /// parameters apply to the replication connection as to a libpq client: `sslmode` (default
    /// `prefer`), `sslrootcert`, `sslcert` and `sslkey`; an unknown `sslmode`, `sslrootcert=system`
    /// without `verify-full` or half a client certificate is a [`Error::Config`](txoutbox_core::Error::Config).
    pub fn store(&self, pool: PgPool, database_url: &str) -> Result<PgWalStore> {
        PgWalStore::new(pool, database_url, Arc::clone(&self.config))
    }

    /// Writes one message in the caller's transaction (pass `&mut *tx`): a transactional logical
    /// message, decoded by the relay only if the transaction commits. Returns the message id.
    pub async fn publish<'e, T: 'static>(&self, executor: impl PgExecutor<'e>, message: &T) -> Result<Uuid> {
        let message = self.topics.encode(message)?;
        self.publish_message(executor, message).await
    }

    /// Writes many messages of one type with a single statement, in order.
    pub async fn publish_all<'e, 'm, T: 'static>(
        &self,
        executor: impl PgExecutor<'e>,
        messages: impl IntoIterator<Item = &'m T>,
    ) -> Result<Vec<Uuid>> {
        let messages = self.topics.encode_all(messages)?;
        self.publish_messages(executor, messages).await
    }

    /// Writes an already encoded message.
    pub async fn publish_message<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        message: NewMessage,
    ) -> Result<Uuid> {
        sqlx::query("SELECT pg_logical_emit_message(true, $1, $2)")
            .bind(&self.config.prefix)
            .bind(envelope::encode(&message))
            .execute(executor)
            .await
            .map_err(emit_error)?;
        Ok(message.message_id)
    }

    /// Writes already encoded messages with a single statement, in order.
    pub async fn publish_messages<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Uuid>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
        let envelopes: Vec<Vec<u8>> = messages.iter().map(envelope::encode).collect();
        sqlx::query(
            // unnest yields the array in order, and the target list runs once per row as it comes.
            "SELECT pg_logical_emit_message(true, $1, e) FROM unnest($2::bytea[]) AS u(e)",
        )
        .bind(&self.config.prefix)
        .bind(&envelopes)
        .execute(executor)
        .await
        .map_err(emit_error)?;
        Ok(ids)
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

fn setup_error(error: sqlx::Error, what: &str) -> Error {
    if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some("42501")
    {
        return Error::Config(format!(
            "could not {what}: the role lacks a privilege ({}); WAL mode needs a role with the \
             REPLICATION attribute (ALTER ROLE name REPLICATION) and, for the publication, \
             CREATE on the database",
            db.message()
        ));
    }
    db_error(error)
}

fn emit_error(error: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some("55000")
    {
        return Error::Config(format!(
            "could not write a logical message ({}): WAL mode needs wal_level = logical",
            db.message()
        ));
    }
    db_error(error)
}
