//! The write side: `publish` inside the caller's transaction.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use sqlx::{AssertSqlSafe, MySqlConnection, MySqlExecutor, MySqlPool};
use txoutbox_core::{Error, NewMessage, Result, TableName, Topics, Wakeup};
use uuid::Uuid;

use crate::error::db_error;
use crate::migrate;
use crate::relay_lock::RelayLock;
use crate::sql::{INSERT_PARAMS, Statements};
use crate::store::MySqlStore;

/// The most rows one multi-row insert holds (MySQL allows 65,535 parameters per statement).
const MAX_ROWS_PER_INSERT: usize = 65_535 / INSERT_PARAMS;

/// Bytes of a statement packet that are not row values (header, statement id, flags, null
/// bitmap, parameter types): kept free of the `max_allowed_packet` budget, generously.
const PACKET_RESERVE: usize = 64 * 1024;

/// Upper bound of the bytes one parameter adds besides its value (type, length prefix).
const PARAM_OVERHEAD: usize = 11;

/// The outbox on MySQL 8.0.16+ or MariaDB 10.6+: publishes messages in the caller's transaction.
///
/// MySQL has no LISTEN/NOTIFY: attach the relay with [`MySqlOutbox::with_wakeup`] and publish
/// through [`MySqlOutbox::begin`] so that a commit wakes it at once; rows written any other way
/// are found at the relay's next poll (`RelayConfig::poll_interval`).
///
/// ```no_run
/// # use serde::Serialize;
/// # use txoutbox_core::{Topic, Topics};
/// # use txoutbox_mysql::MySqlOutbox;
/// # #[derive(Serialize)] struct OrderCreated { id: i64 }
/// # async fn demo(pool: sqlx::MySqlPool) -> Result<(), Box<dyn std::error::Error>> {
/// let topics = Topics::new().with(Topic::<OrderCreated>::json("orders")?.key(|o| o.id.to_string()))?;
/// let outbox = MySqlOutbox::new(topics);
/// outbox.migrate(&pool).await?;
///
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO orders (id) VALUES (?)").bind(42_i64).execute(&mut *tx).await?;
/// outbox.publish(&mut *tx, &OrderCreated { id: 42 }).await?; // same transaction
/// tx.commit().await?; // the order and its event commit together, or neither does
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlOutbox {
    topics: Arc<Topics>,
    sql: Arc<Statements>,
    wakeup: Option<Wakeup>,
    shared: Arc<Shared>,
}

/// What the clones of one outbox share.
#[derive(Debug, Default)]
struct Shared {
    /// The table's relay lock while a store of this outbox lives.
    relay_lock: Mutex<Weak<RelayLock>>,
    /// The server's `max_allowed_packet`, read once.
    max_packet: OnceLock<usize>,
}

impl std::fmt::Debug for MySqlOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlOutbox")
            .field("table", &self.sql.table)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl MySqlOutbox {
    /// An outbox over the default table (`outbox_messages` in the connection's database).
    pub fn new(topics: Topics) -> Self {
        Self::with_table(topics, TableName::default())
    }

    /// An outbox over the given table (a schema names a MySQL database).
    pub fn with_table(topics: Topics, table: TableName) -> Self {
        Self {
            topics: Arc::new(topics),
            sql: Arc::new(Statements::new(table)),
            wakeup: None,
            shared: Arc::default(),
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

    /// Checks the server version, then creates or upgrades the outbox table and its index.
    /// Idempotent; safe to call from every replica at start-up (a named lock serializes them).
    pub async fn migrate(&self, pool: &MySqlPool) -> Result<()> {
        migrate::migrate(pool, &self.sql).await
    }

    /// The relay's view of this outbox, over `pool`. The stores of one outbox (and its clones)
    /// share the table's relay lock: see [`MySqlStore`].
    pub fn store(&self, pool: MySqlPool) -> MySqlStore {
        let lock = {
            let mut weak = self.shared.relay_lock.lock().unwrap_or_else(|p| p.into_inner());
            weak.upgrade().unwrap_or_else(|| {
                let lock = Arc::new(RelayLock::new(self.sql.table.clone()));
                *weak = Arc::downgrade(&lock);
                lock
            })
        };
        MySqlStore::new(pool, Arc::clone(&self.sql), lock)
    }

    /// Writes one message with the caller's executor (pass `&mut *tx` to publish in your
    /// transaction). Returns the message id sent as the `txoutbox-message-id` header.
    pub async fn publish<'e, T: 'static>(
        &self,
        executor: impl MySqlExecutor<'e>,
        message: &T,
    ) -> Result<Uuid> {
        let message = self.topics.encode(message)?;
        self.publish_message(executor, message).await
    }

    /// Writes many messages of one type, in order, with multi-row `INSERT`s: as few as the
    /// server's `max_allowed_packet` allows (usually one). Pass `&mut *tx`: the statements are
    /// atomic only inside your transaction.
    pub async fn publish_all<'m, T: 'static>(
        &self,
        conn: &mut MySqlConnection,
        messages: impl IntoIterator<Item = &'m T>,
    ) -> Result<Vec<Uuid>> {
        let messages = self.topics.encode_all(messages)?;
        self.publish_messages(conn, messages).await
    }

    /// Writes an already encoded message (any topic, no type lookup).
    pub async fn publish_message<'e>(
        &self,
        executor: impl MySqlExecutor<'e>,
        message: NewMessage,
    ) -> Result<Uuid> {
        message.check()?;
        sqlx::query(AssertSqlSafe(self.sql.insert_one.as_str()))
            .bind(message.message_id.hyphenated().to_string())
            .bind(&message.topic)
            .bind(&message.key)
            .bind(&message.payload)
            .bind(message.headers_json())
            .execute(executor)
            .await
            .map_err(db_error)?;
        Ok(message.message_id)
    }

    /// Writes already encoded messages in order, with as few multi-row `INSERT`s as
    /// `max_allowed_packet` allows (see [`MySqlOutbox::publish_all`]).
    pub async fn publish_messages(
        &self,
        conn: &mut MySqlConnection,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Uuid>> {
        for message in &messages {
            message.check()?;
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let budget = self.max_packet(conn).await?.saturating_sub(PACKET_RESERVE);
        let rows: Vec<Row<'_>> = messages.iter().map(Row::new).collect();
        for chunk in split(&rows, budget)? {
            let mut query = sqlx::query(AssertSqlSafe(self.sql.insert_many(chunk.len())));
            for row in chunk {
                query = query
                    .bind(row.message_id.as_str())
                    .bind(row.message.topic.as_str())
                    .bind(row.message.key.as_deref())
                    .bind(row.message.payload.as_deref())
                    .bind(row.headers.as_deref());
            }
            query.execute(&mut *conn).await.map_err(db_error)?;
        }
        Ok(messages.iter().map(|m| m.message_id).collect())
    }

    /// The server's `max_allowed_packet`, read once per outbox.
    async fn max_packet(&self, conn: &mut MySqlConnection) -> Result<usize> {
        if let Some(size) = self.shared.max_packet.get() {
            return Ok(*size);
        }
        let size: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(conn)
            .await
            .map_err(db_error)?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        Ok(*self.shared.max_packet.get_or_init(|| size))
    }
}

/// One message of a multi-row insert, with its encoded columns.
#[derive(Debug)]
struct Row<'m> {
    message: &'m NewMessage,
    message_id: String,
    headers: Option<String>,
}

impl<'m> Row<'m> {
    fn new(message: &'m NewMessage) -> Self {
        Self {
            message,
            message_id: message.message_id.hyphenated().to_string(),
            headers: message.headers_json(),
        }
    }

    /// The bytes this row adds to a statement packet, at most.
    fn size(&self) -> usize {
        self.message_id.len()
            + self.message.topic.len()
            + self.message.key.as_ref().map_or(0, Vec::len)
            + self.message.payload.as_ref().map_or(0, Vec::len)
            + self.headers.as_ref().map_or(0, String::len)
            + INSERT_PARAMS * PARAM_OVERHEAD
    }
}

/// Splits rows, in order, into statements of at most `budget` bytes and
/// [`MAX_ROWS_PER_INSERT`] rows.
fn split<'a, 'm>(rows: &'a [Row<'m>], budget: usize) -> Result<Vec<&'a [Row<'m>]>> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let size = row.size();
        if size > budget {
            return Err(Error::database(
                format!(
                    "a message for topic `{}` takes {size} bytes, more than the server's max_allowed_packet \
                     allows for one statement ({budget} bytes after overhead): raise max_allowed_packet \
                     or send smaller messages",
                    row.message.topic
                ),
                false,
            ));
        }
        if i > start && (bytes + size > budget || i - start >= MAX_ROWS_PER_INSERT) {
            chunks.extend(rows.get(start..i));
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    chunks.extend(rows.get(start..));
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: usize) -> NewMessage {
        NewMessage {
            message_id: Uuid::now_v7(),
            topic: "t".to_owned(),
            key: None,
            payload: Some(vec![0; payload]),
            headers: Vec::new(),
            strategy: Default::default(),
        }
    }

    #[test]
    fn rows_split_by_packet_budget_in_order() {
        let messages: Vec<NewMessage> = (0..10).map(|_| message(1_000)).collect();
        let rows: Vec<Row<'_>> = messages.iter().map(Row::new).collect();
        let one = rows[0].size();
        assert_eq!(split(&rows, 100 * one).unwrap().len(), 1);
        let chunks = split(&rows, 3 * one).unwrap();
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        let ids: Vec<Uuid> = chunks
            .iter()
            .flat_map(|c| c.iter().map(|r| r.message.message_id))
            .collect();
        assert_eq!(ids, messages.iter().map(|m| m.message_id).collect::<Vec<_>>());
        let err = split(&rows, one - 1).unwrap_err().to_string();
        assert!(err.contains("max_allowed_packet"), "{err}");
    }

    #[test]
    fn rows_split_by_parameter_count() {
        let messages: Vec<NewMessage> = (0..MAX_ROWS_PER_INSERT + 1).map(|_| message(0)).collect();
        let rows: Vec<Row<'_>> = messages.iter().map(Row::new).collect();
        let chunks = split(&rows, usize::MAX).unwrap();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [MAX_ROWS_PER_INSERT, 1]
        );
    }
}
