//! An outbox transaction on MySQL: a sqlx transaction whose `commit()` wakes the in-process relay.

use std::ops::{Deref, DerefMut};

use sqlx::{MySql, MySqlConnection, Transaction};
use txoutbox_core::{NewMessage, Result};
use uuid::Uuid;

use crate::error::db_error;
use crate::outbox::MySqlOutbox;

/// A database transaction that publishes through the outbox; `&mut *tx` runs your own statements.
/// [`commit`](Self::commit) wakes the relay attached with [`MySqlOutbox::with_wakeup`], so a
/// message leaves at once instead of at the next poll (MySQL has no LISTEN/NOTIFY).
///
/// Topics with `PublishStrategy::ImmediateWithFallback` are sent by the relay like any other on
/// MySQL (immediate sends are a PostgreSQL feature today).
#[must_use = "an outbox transaction rolls back when dropped; call commit()"]
pub struct MySqlOutboxTransaction {
    tx: Transaction<'static, MySql>,
    outbox: MySqlOutbox,
}

impl std::fmt::Debug for MySqlOutboxTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlOutboxTransaction").finish_non_exhaustive()
    }
}

impl MySqlOutboxTransaction {
    pub(crate) fn new(tx: Transaction<'static, MySql>, outbox: MySqlOutbox) -> Self {
        Self { tx, outbox }
    }

    /// Publishes one message in this transaction.
    pub async fn publish<T: 'static>(&mut self, message: &T) -> Result<Uuid> {
        self.outbox.publish(&mut *self.tx, message).await
    }

    /// Publishes many messages of one type in this transaction, with as few statements as the
    /// server's `max_allowed_packet` allows.
    pub async fn publish_all<'m, T: 'static>(
        &mut self,
        messages: impl IntoIterator<Item = &'m T>,
    ) -> Result<Vec<Uuid>> {
        self.outbox.publish_all(&mut self.tx, messages).await
    }

    /// Publishes an already encoded message in this transaction.
    pub async fn publish_message(&mut self, message: NewMessage) -> Result<Uuid> {
        self.outbox.publish_message(&mut *self.tx, message).await
    }

    /// Commits, then wakes the in-process relay.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await.map_err(db_error)?;
        if let Some(wakeup) = self.outbox.wakeup() {
            wakeup.notify();
        }
        Ok(())
    }

    /// Rolls back: nothing is published.
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await.map_err(db_error)
    }
}

impl Deref for MySqlOutboxTransaction {
    type Target = MySqlConnection;

    fn deref(&self) -> &MySqlConnection {
        &self.tx
    }
}

impl DerefMut for MySqlOutboxTransaction {
    fn deref_mut(&mut self) -> &mut MySqlConnection {
        &mut self.tx
    }
}

impl MySqlOutbox {
    /// Begins an outbox transaction: your statements and your messages in one transaction, and a
    /// commit that wakes the in-process relay.
    pub async fn begin(&self, pool: &sqlx::MySqlPool) -> Result<MySqlOutboxTransaction> {
        let tx = pool.begin().await.map_err(db_error)?;
        Ok(MySqlOutboxTransaction::new(tx, self.clone()))
    }
}
