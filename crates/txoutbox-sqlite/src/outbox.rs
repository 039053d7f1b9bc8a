//! The write side: `publish` inside the caller's transaction.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqliteExecutor, SqlitePool};
use txoutbox_core::{NewMessage, Result, TableName, Topics, Wakeup};
use uuid::Uuid;

use crate::error::db_error;
use crate::migrate;
use crate::sql::Statements;
use crate::store::SqliteStore;

/// The outbox on SQLite: publishes messages in the caller's transaction.
///
/// ```no_run
/// # use serde::Serialize;
/// # use txoutbox_core::{Topic, Topics};
/// # use txoutbox_sqlite::SqliteOutbox;
/// # #[derive(Serialize)] struct OrderCreated { id: i64 }
/// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// let topics = Topics::new().with(Topic::<OrderCreated>::json("orders")?.key(|o| o.id.to_string()))?;
/// let outbox = SqliteOutbox::new(topics);
/// outbox.migrate(&pool).await?;
///
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO orders (id) VALUES (?)").bind(42_i64).execute(&mut *tx).await?;
/// outbox.publish(&mut *tx, &OrderCreated { id: 42 }).await?; // same transaction
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOutbox {
    topics: Arc<Topics>,
    sql: Arc<Statements>,
    wakeup: Option<Wakeup>,
}

impl SqliteOutbox {
    /// An outbox over the default table (`outbox_messages` in the `main` database).
    pub fn new(topics: Topics) -> Self {
        Self::with_table(topics, TableName::default())
    }

    /// An outbox over the given table (a schema names an attached database).
    pub fn with_table(topics: Topics, table: TableName) -> Self {
        Self {
            topics: Arc::new(topics),
            sql: Arc::new(Statements::new(table)),
            wakeup: None,
        }
    }

    /// Wakes this relay (in the same process) after each outbox transaction commits.
    #[must_use]
    pub fn with_wakeup(mut self, wakeup: Wakeup) -> Self {
        self.wakeup = Some(wakeup);
        self
    }

    pub(crate) fn wakeup(&self) -> Option<&Wakeup> {
        self.wakeup.as_ref()
    }

    /// The table this outbox writes to.
    pub fn table(&self) -> &TableName {
        &self.sql.table
    }

    /// The topic definitions.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Creates or upgrades the outbox table and its indexes, and turns on WAL journaling.
    pub async fn migrate(&self, pool: &SqlitePool) -> Result<()> {
        migrate::migrate(pool, &self.sql).await
    }

    /// The relay's view of this outbox, over `pool`.
    pub fn store(&self, pool: SqlitePool) -> SqliteStore {
        SqliteStore::new(pool, Arc::clone(&self.sql))
    }

    /// Writes one message with the caller's executor (pass `&mut *tx` to publish in your
    /// transaction). Returns the message id sent as the `txoutbox-message-id` header.
    pub async fn publish<'e, T: 'static>(
        &self,
        executor: impl SqliteExecutor<'e>,
        message: &T,
    ) -> Result<Uuid> {
        let message = self.topics.encode(message)?;
        self.publish_message(executor, message).await
    }

    /// Writes many messages of one type in a single statement, in order.
    pub async fn publish_all<'e, 'm, T: 'static>(
        &self,
        executor: impl SqliteExecutor<'e>,
        messages: impl IntoIterator<Item = &'m T>,
    ) -> Result<Vec<Uuid>> {
        let messages = self.topics.encode_all(messages)?;
        self.publish_messages(executor, messages).await
    }

    /// Writes an already encoded message (any topic, no type lookup).
    pub async fn publish_message<'e>(
        &self,
        executor: impl SqliteExecutor<'e>,
        message: NewMessage,
    ) -> Result<Uuid> {
        message.check()?;
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.insert_one)))
            .bind(message.message_id.to_string())
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
        executor: impl SqliteExecutor<'e>,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Uuid>> {
        for message in &messages {
            message.check()?;
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!([
                    m.message_id.to_string(),
                    m.topic,
                    m.key.as_deref().map(hex),
                    m.payload.as_deref().map(hex),
                    m.headers_json(),
                ])
            })
            .collect();
        sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.insert_many)))
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(executor)
            .await
            .map_err(db_error)?;
        Ok(messages.into_iter().map(|m| m.message_id).collect())
    }
}

/// Lower-case hex, which SQLite's `unhex()` decodes inside the insert.
fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0xf));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_encodes_every_byte() {
        assert_eq!(super::hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
