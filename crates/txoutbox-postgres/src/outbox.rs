//! The write side: `publish` inside the caller's transaction.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgExecutor, PgPool};
use txoutbox_core::{ImmediateSend, NewMessage, Result, TableName, Topics, Wakeup};
use uuid::Uuid;

use crate::error::db_error;
use crate::migrate;
use crate::sql::Statements;
use crate::store::PgStore;

/// The outbox on PostgreSQL: publishes messages in the caller's transaction.
///
/// ```no_run
/// # use serde::Serialize;
/// # use txoutbox_core::{Topic, Topics};
/// # use txoutbox_postgres::PgOutbox;
/// # #[derive(Serialize)] struct OrderCreated { id: i64 }
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let topics = Topics::new().with(Topic::<OrderCreated>::json("orders")?.key(|o| o.id.to_string()))?;
/// let outbox = PgOutbox::new(topics);
/// outbox.migrate(&pool).await?;
///
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind(42_i64).execute(&mut *tx).await?;
/// outbox.publish(&mut *tx, &OrderCreated { id: 42 }).await?; // same transaction
/// tx.commit().await?; // the order and its event commit together, or neither does
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgOutbox {
    topics: Arc<Topics>,
    sql: Arc<Statements>,
    immediate: Option<Arc<dyn ImmediateSend>>,
    wakeup: Option<Wakeup>,
}

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutbox")
            .field("table", &self.sql.table)
            .field("topics", &self.topics)
            .field("immediate", &self.immediate.is_some())
            .finish()
    }
}

impl PgOutbox {
    /// An outbox over the default table (`outbox_messages` in the connection's `search_path`).
    pub fn new(topics: Topics) -> Self {
        Self::with_table(topics, TableName::default())
    }

    /// An outbox over the given table.
    pub fn with_table(topics: Topics, table: TableName) -> Self {
        Self {
            topics: Arc::new(topics),
            sql: Arc::new(Statements::new(table)),
            immediate: None,
            wakeup: None,
        }
    }

    /// Wakes this relay (in the same process) after each outbox transaction commits. Across
    /// processes, push wake-ups do it when they are on ([`PgOutbox::set_push_wakeups`]); else a
    /// sleeping relay finds the rows within its poll interval.
    #[must_use]
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = Some(wakeup);
        self
    }

    pub(crate) fn wakeup(&self) -> Option<&Wakeup> {
        self.wakeup.as_ref()
    }

    /// Sends the messages of immediate topics from this process after each outbox transaction
    /// commits (see [`PgOutbox::begin`]).
    #[must_use]
    pub fn with_immediate(mut self, sender: Arc<dyn ImmediateSend>) -> Self {
        self.immediate = Some(sender);
        self
    }

    pub(crate) fn sql(&self) -> &Statements {
        &self.sql
    }

    pub(crate) fn immediate(&self) -> Option<Arc<dyn ImmediateSend>> {
        self.immediate.clone()
    }

    /// The table this outbox writes to.
    pub fn table(&self) -> &TableName {
        &self.sql.table
    }

    /// The topic definitions.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Creates or upgrades the outbox table and its indexes. Idempotent; safe to call from every
    /// replica at start-up (an advisory lock serializes them).
    pub async fn migrate(&self, pool: &PgPool) -> Result<()> {
        migrate::migrate(pool, &self.sql).await
    }

    /// Turns push wake-ups on or off. On, every `INSERT` into the table — from any process or
    /// language — wakes a sleeping relay at once through LISTEN/NOTIFY, at a cost to every insert
    /// statement (a trigger; see `docs/guarantees.md`). Off — the default since schema version
    /// 7 — rows that other processes commit while the relay sleeps wait at most its poll
    /// interval; a relay in the writer's process is woken by commits through
    /// [`PgOutbox::begin`] with [`PgOutbox::with_wakeup`] either way. Needs the table's owner;
    /// run it after [`PgOutbox::migrate`]. The setting is the table's, kept until changed (the
    /// upgrade to version 7 turns it off once).
    pub async fn set_push_wakeups(&self, pool: &PgPool, on: bool) -> Result<()> {
        migrate::set_push_wakeups(pool, &self.sql, on).await
    }

    /// Whether push wake-ups are on (see [`PgOutbox::set_push_wakeups`]).
    pub async fn push_wakeups(&self, pool: &PgPool) -> Result<bool> {
        migrate::push_wakeups(pool, &self.sql).await
    }

    /// The relay's view of this outbox, over `pool`.
    pub fn store(&self, pool: PgPool) -> PgStore {
        PgStore::new(pool, Arc::clone(&self.sql))
    }

    /// Writes one message with the caller's executor (pass `&mut *tx` to publish in your
    /// transaction). Returns the message id sent as the `txoutbox-message-id` header. The relay
    /// sends it, whatever the topic's strategy (immediate sends need [`PgOutbox::begin`]).
    pub async fn publish<'e, T: 'static>(&self, executor: impl PgExecutor<'e>, message: &T) -> Result<Uuid> {
        let message = self.topics.encode(message)?;
        self.publish_message(executor, message).await
    }

    /// Writes many messages of one type in a single statement, in order.
    pub async fn publish_all<'e, 'm, T: 'static>(
        &self,
        executor: impl PgExecutor<'e>,
        messages: impl IntoIterator<Item = &'m T>,
    ) -> Result<Vec<Uuid>> {
        let messages = self.topics.encode_all(messages)?;
        self.publish_messages(executor, messages).await
    }

    /// Writes an already encoded message (any topic, no type lookup).
    pub async fn publish_message<'e>(
        &self,
        executor: impl PgExecutor<'e>,
        message: NewMessage,
    ) -> Result<Uuid> {
        message.check()?;
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.insert_one)))
            .bind(message.message_id)
            .bind(&message.topic)
            .bind(&message.key)
            .bind(&message.payload)
            .bind(message.headers_json())
            .execute(executor)
            .await
            .map_err(db_error)?;
        Ok(message.message_id)
    }

    /// Writes already encoded messages in a single statement, in order.
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
        let n = messages.len();
        let (mut ids, mut topics, mut keys, mut payloads, mut headers) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for message in messages {
            headers.push(message.headers_json());
            ids.push(message.message_id);
            topics.push(message.topic);
            keys.push(message.key);
            payloads.push(message.payload);
        }
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.insert_many)))
            .bind(&ids)
            .bind(&topics)
            .bind(&keys)
            .bind(&payloads)
            .bind(&headers)
            .execute(executor)
            .await
            .map_err(db_error)?;
        Ok(ids)
    }
}
