//! One active relay per table: a server named lock (`GET_LOCK`) held on a connection of its own.
//!
//! The relay engine reads rows without claiming them, so two relays reading one table would both
//! send every row. The stores of one [`MySqlOutbox`](crate::MySqlOutbox) share one `RelayLock`:
//! the first fetch takes the table's lock, and every fetch checks in the same statement that this
//! lock is still held by its connection (`IS_USED_LOCK`). A relay in another process, whose lock
//! attempt fails, stands by: its fetches return nothing and try again. The server frees the lock
//! when its connection ends (the process exits, the store is dropped, the network fails), and a
//! standby relay takes over at its next poll. No row is written to claim it.

use std::time::{Duration, Instant};

use sqlx::{MySqlConnection, MySqlPool};
use tokio::sync::Mutex;
use txoutbox_core::{Result, TableName};

use crate::error::db_error;

/// How long a lock attempt waits for a lock just freed (a store of the same outbox dropped a
/// moment ago), in seconds.
const LOCK_WAIT_SECS: i64 = 1;

/// How often the holder's connection is pinged, so that an idle server timeout never ends it.
const PING_EVERY: Duration = Duration::from_secs(60);

/// The lock of one table, shared by the stores of one outbox.
#[derive(Debug)]
pub(crate) struct RelayLock {
    table: TableName,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The lock's connection, detached from the pool.
    conn: Option<MySqlConnection>,
    /// `txoutbox:` and the SHA-1 of `database.table` (lock names are limited to 64 characters).
    name: Option<String>,
    /// `CONNECTION_ID()` of `conn` while it holds the lock.
    holder: Option<i64>,
    /// When `conn` last answered.
    checked: Option<Instant>,
}

/// The lock as a fetch sees it.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The lock's name, for the fetch's `IS_USED_LOCK`.
    pub(crate) name: String,
    /// The connection id that must hold it.
    pub(crate) holder: i64,
}

impl RelayLock {
    pub(crate) fn new(table: TableName) -> Self {
        Self {
            table,
            state: Mutex::new(State::default()),
        }
    }

    /// The lock, taking it when free; `None` while another relay holds it.
    pub(crate) async fn acquire(&self, pool: &MySqlPool) -> Result<Option<Held>> {
        let mut state = self.state.lock().await;
        let result = self.acquire_locked(&mut state, pool).await;
        if result.is_err() {
            // A connection that failed may or may not still hold the lock: end it.
            *state = State {
                name: state.name.take(),
                ..State::default()
            };
        }
        result
    }

    async fn acquire_locked(&self, state: &mut State, pool: &MySqlPool) -> Result<Option<Held>> {
        let fresh = state.checked.is_some_and(|at| at.elapsed() < PING_EVERY);
        if let (Some(holder), Some(name), true) = (state.holder, &state.name, fresh) {
            return Ok(Some(Held {
                name: name.clone(),
                holder,
            }));
        }
        let conn = match &mut state.conn {
            Some(conn) => conn,
            slot @ None => {
                state.holder = None;
                slot.insert(pool.acquire().await.map_err(db_error)?.detach())
            }
        };
        let name = match &state.name {
            Some(name) => name.clone(),
            None => {
                let name: Option<String> = sqlx::query_scalar(
                    "SELECT concat('txoutbox:', sha1(concat(coalesce(?, database()), '.', ?)))",
                )
                .bind(self.table.schema())
                .bind(self.table.table())
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
                let name = name.ok_or_else(|| {
                    txoutbox_core::Error::Config(format!(
                        "the outbox table {} names no database and the connection has none: \
                         add one to the URL or use TableName::with_schema",
                        self.table
                    ))
                })?;
                state.name = Some(name.clone());
                name
            }
        };
        let (got, id): (Option<i64>, i64) = if state.holder.is_some() {
            // Still ours? (Also keeps the connection from idling out.)
            sqlx::query_as(
                "SELECT CAST(IS_USED_LOCK(?) = CONNECTION_ID() AS SIGNED), CAST(CONNECTION_ID() AS SIGNED)",
            )
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error)?
        } else {
            sqlx::query_as("SELECT CAST(GET_LOCK(?, ?) AS SIGNED), CAST(CONNECTION_ID() AS SIGNED)")
                .bind(&name)
                .bind(LOCK_WAIT_SECS)
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?
        };
        state.checked = Some(Instant::now());
        if got == Some(1) {
            if state.holder.is_none() {
                tracing::info!(table = %self.table, "this relay is the active one for the table");
            }
            state.holder = Some(id);
            Ok(Some(Held { name, holder: id }))
        } else {
            if state.holder.take().is_some() {
                tracing::warn!(table = %self.table, "lost the table's relay lock; standing by");
            }
            Ok(None)
        }
    }

    /// Forgets the lock after a fetch found another connection holding it: the next fetch starts
    /// over with a fresh connection.
    pub(crate) async fn lost(&self) {
        let mut state = self.state.lock().await;
        tracing::warn!(table = %self.table, "the table's relay lock is held elsewhere; standing by");
        state.conn = None;
        state.holder = None;
        state.checked = None;
    }
}

impl Drop for RelayLock {
    fn drop(&mut self) {
        // COM_QUIT frees the lock at once; dropping the socket would free it a moment later.
        if let Some(conn) = self.state.get_mut().conn.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = sqlx::Connection::close(conn).await;
            });
        }
    }
}
