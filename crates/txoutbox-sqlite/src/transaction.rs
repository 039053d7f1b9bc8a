//! An outbox transaction on SQLite: a sqlx transaction whose `commit()` wakes the in-process relay.

use std::ops::{Deref, DerefMut};

use sqlx::{Sqlite, SqliteConnection, Transaction};
use txoutbox_core::Result;
use uuid::Uuid;

use crate::error::db_error;
use crate::outbox::SqliteOutbox;

/// A database transaction that publishes through the outbox; `&mut *tx` runs your own statements.
/// [`commit`](Self::commit) wakes the relay attached with [`SqliteOutbox::with_wakeup`], so a
/// message leaves at once instead of at the next poll.
#[must_use = "an outbox transaction rolls back when dropped; call commit()"]
pub struct SqliteOutboxTransaction {
    tx: Transaction<'static, Sqlite>,
    outbox: SqliteOutbox,
}

impl std::fmt::Debug for SqliteOutboxTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOutboxTransaction").finish_non_exhaustive()
    }
}

impl SqliteOutboxTransaction {
    pub(crate) fn new(tx: Transaction<'static, Sqlite>, outbox: SqliteOutbox) -> Self {
        Self { tx, outbox }
    }

    /// Publishes one message in this transaction.
    pub async fn publish<T: 'static>(&mut self, message: &T) -> Result<Uuid> {
        self.outbox.publish(&mut *self.tx, message).await
    }

    /// Publishes many messages of one type in this transaction, in one statement.
    pub async fn publish_all<'m, T: 'static>(
        &mut self,
        messages: impl IntoIterator<Item = &'m T>,
    ) -> Result<Vec<Uuid>> {
        self.outbox.publish_all(&mut *self.tx, messages).await
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

impl Deref for SqliteOutboxTransaction {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for SqliteOutboxTransaction {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl SqliteOutbox {
    /// Begins an outbox transaction: your statements and your messages in one transaction, and a
    /// commit that wakes the in-process relay.
    pub async fn begin(&self, pool: &sqlx::SqlitePool) -> Result<SqliteOutboxTransaction> {
        let tx = pool.begin().await.map_err(db_error)?;
        Ok(SqliteOutboxTransaction::new(tx, self.clone()))
    }
}
