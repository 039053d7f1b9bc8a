//! An outbox transaction: a sqlx transaction whose `commit()` is the point where messages of
//! immediate topics leave for Kafka.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row, Transaction};
use txoutbox_core::{NewMessage, OutboxMessage, PublishStrategy, Result};
use uuid::Uuid;

use crate::error::db_error;
use crate::outbox::PgOutbox;

/// A database transaction that publishes through the outbox. Run your own statements on it with
/// `&mut *tx` as on any sqlx transaction.
///
/// Messages of topics with [`PublishStrategy::ImmediateWithFallback`] are sent by this process
/// right after [`commit`](Self::commit) succeeds (never before, never after a rollback); all
/// others, and immediate ones whose send fails, are sent by the relay.
///
/// ```no_run
/// # use serde::Serialize;
/// # use txoutbox_core::{PublishStrategy, Topic, Topics};
/// # use txoutbox_postgres::PgOutbox;
/// # #[derive(Serialize)] struct PaymentTaken { id: i64 }
/// # async fn demo(pool: sqlx::PgPool, outbox: PgOutbox) -> txoutbox_core::Result<()> {
/// let mut tx = outbox.begin(&pool).await?;
/// sqlx::query("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
///     .execute(&mut *tx).await.unwrap();
/// tx.publish(&PaymentTaken { id: 1 }).await?;
/// tx.commit().await?; // commits, then sends the immediate messages
/// # Ok(()) }
/// ```
#[must_use = "an outbox transaction rolls back when dropped; call commit()"]
pub struct PgOutboxTransaction {
    tx: Transaction<'static, Postgres>,
    outbox: PgOutbox,
    immediate: Vec<OutboxMessage>,
}

impl std::fmt::Debug for PgOutboxTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutboxTransaction")
            .field("immediate", &self.immediate.len())
            .finish_non_exhaustive()
    }
}

impl PgOutboxTransaction {
    pub(crate) fn new(tx: Transaction<'static, Postgres>, outbox: PgOutbox) -> Self {
        Self {
            tx,
            outbox,
            immediate: Vec::new(),
        }
    }

    /// Publishes many messages of one type in this transaction, in one statement (immediate
    /// topics: one statement per message).
    pub async fn publish_all<'m, T: 'static>(
        &mut self,
        messages: impl IntoIterator<Item = &'m T>,
    ) -> Result<Vec<Uuid>> {
        let messages = self.outbox.topics().encode_all(messages)?;
        if messages
            .iter()
            .all(|m| m.strategy == PublishStrategy::BackgroundOnly)
        {
            return self.outbox.publish_messages(&mut *self.tx, messages).await;
        }
        let mut ids = Vec::with_capacity(messages.len());
        for message in messages {
            ids.push(self.publish_message(message).await?);
        }
        Ok(ids)
    }

    /// Publishes one message in this transaction.
    pub async fn publish<T: 'static>(&mut self, message: &T) -> Result<Uuid> {
        let message = self.outbox.topics().encode(message)?;
        self.publish_message(message).await
    }

    /// Publishes an already encoded message in this transaction.
    pub async fn publish_message(&mut self, message: NewMessage) -> Result<Uuid> {
        let PublishStrategy::ImmediateWithFallback { grace } = message.strategy else {
            return self.outbox.publish_message(&mut *self.tx, message).await;
        };
        message.check()?;
        let row = sqlx::query(AssertSqlSafe(Arc::clone(&self.outbox.sql().insert_immediate)))
            .bind(message.message_id)
            .bind(&message.topic)
            .bind(&message.key)
            .bind(&message.payload)
            .bind(message.headers_json())
            .bind(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX))
            .fetch_one(&mut *self.tx)
            .await
            .map_err(db_error)?;
        let id: i64 = row.try_get("id").map_err(db_error)?;
        let created_at = row.try_get("created_at").map_err(db_error)?;
        let message_id = message.message_id;
        self.immediate.push(message.into_outbox_message(id, created_at));
        Ok(message_id)
    }

    /// Commits, then wakes the in-process relay (if one is attached with
    /// [`PgOutbox::with_wakeup`]) and hands the messages of immediate topics to the outbox's
    /// immediate sender (in the background: this returns once the database committed).
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await.map_err(db_error)?;
        if let Some(wakeup) = self.outbox.wakeup() {
            wakeup.notify();
        }
        if self.immediate.is_empty() {
            return Ok(());
        }
        match self.outbox.immediate() {
            Some(sender) => {
                let rows = self.immediate;
                tokio::spawn(async move { sender.send_committed(rows).await });
            }
            None => tracing::warn!(
                messages = self.immediate.len(),
                "immediate topics but no immediate sender (PgOutbox::with_immediate): the relay sends them after the grace period"
            ),
        }
        Ok(())
    }

    /// Rolls back: nothing is published.
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await.map_err(db_error)
    }
}

impl Deref for PgOutboxTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for PgOutboxTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

impl PgOutbox {
    /// Begins an outbox transaction: your statements and your messages in one transaction, and
    /// an explicit commit point after which immediate topics are sent.
    pub async fn begin(&self, pool: &sqlx::PgPool) -> Result<PgOutboxTransaction> {
        let tx = pool.begin().await.map_err(db_error)?;
        Ok(PgOutboxTransaction::new(tx, self.clone()))
    }
}
