//! The write side: messages as transactional logical messages, and the slot's set-up.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgExecutor, PgPool};
use txoutbox_core::{Error, NewMessage, Result, Topics};
use txoutbox_postgres::PgOutbox;
use uuid::Uuid;

use crate::config::{WalConfig, check_wal_level};
use crate::envelope;
use crate::error::db_error;
use crate::store::PgWalStore;

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
        crate::slot::slot_status(pool, &self.config).await
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
        message.check()?;
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
        for message in &messages {
            message.check()?;
        }
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
