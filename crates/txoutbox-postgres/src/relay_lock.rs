//! One active single-mode relay per table: a session advisory lock held on a connection of its
//! own.
//!
//! The relay engine reads rows without claiming them, so two relays reading one table would both
//! send every row. A single-mode relay (the default: [`Relay::new`](txoutbox_core::Relay::new))
//! takes the table's advisory lock when it starts, and every read checks in the same statement
//! that the lock is still granted to the lock's connection (`pg_locks`). A relay in another
//! replica, whose `pg_try_advisory_lock` fails, stands by at start (trying again every
//! [`STANDBY_POLL`]); a relay that finds at a read that it lost the lock reads nothing until it
//! has it again. The server frees the lock when its connection ends (the process exits, the
//! relay stops, the network fails), and a standby relay takes over within [`STANDBY_POLL`]. Coordinated
//! relays (exclusive, work balance) use leases instead and never take this lock.
//!
//! The lock's key is two 32-bit numbers: [`NAMESPACE`] and the table's oid, so two names of one
//! table (with and without its schema) share it.

use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio::sync::Mutex;
use txoutbox_core::{Result, TableName};

use crate::error::db_error;

/// The first half of the lock's key ("txob"): keeps it apart from the advisory locks of the
/// application.
pub(crate) const NAMESPACE: i32 = 0x7478_6f62;

/// How often a standby relay tries the lock: how long a hand-over waits at most, after the
/// lock frees.
pub(crate) const STANDBY_POLL: Duration = Duration::from_millis(500);

/// How often the holder's connection is checked, so that a connection the server or the network
/// ended is noticed even when every read still finds rows.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The lock of one table, shared by the clones of one store.
#[derive(Debug)]
pub(crate) struct RelayLock {
    table: TableName,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The lock's connection, detached from the pool.
    conn: Option<PgConnection>,
    /// `pg_backend_pid()` of `conn` and the table's oid, while `conn` holds the lock.
    held: Option<Held>,
    /// When `conn` last answered.
    checked: Option<Instant>,
    /// A standby was already logged (said once, not at every poll).
    said_standby: bool,
}

/// The lock as a read sees it: the read checks that `holder` holds it on the table `table_oid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// The backend process id of the lock's connection.
    pub(crate) holder: i32,
    /// The table's oid (the second half of the key).
    pub(crate) table_oid: i64,
}

impl RelayLock {
    pub(crate) fn new(table: TableName) -> Self {
        Self {
            table,
            state: Mutex::new(State::default()),
        }
    }

    /// The lock, taking it when free; `None` while another relay holds it.
    pub(crate) async fn acquire(&self, pool: &PgPool) -> Result<Option<Held>> {
        let mut state = self.state.lock().await;
        let result = self.acquire_locked(&mut state, pool).await;
        if result.is_err() {
            // A connection that failed may or may not still hold the lock: end it (the server
            // frees the lock with it) and start again at the next read.
            let said_standby = state.said_standby;
            *state = State {
                said_standby,
                ..State::default()
            };
        }
        result
    }

    async fn acquire_locked(&self, state: &mut State, pool: &PgPool) -> Result<Option<Held>> {
        let fresh = state.checked.is_some_and(|at| at.elapsed() < CHECK_EVERY);
        if let (Some(held), true) = (state.held, fresh) {
            return Ok(Some(held));
        }
        let conn = match &mut state.conn {
            Some(conn) => conn,
            slot @ None => {
                state.held = None;
                slot.insert(pool.acquire().await.map_err(db_error)?.detach())
            }
        };
        // Taking a lock this session already holds succeeds again (and stacks): release the extra
        // hold so one unlock frees it.
        let (got, holder, table_oid): (bool, i32, i64) = sqlx::query_as(
            "SELECT pg_try_advisory_lock($1, t::oid::int4), pg_backend_pid(), t::oid::bigint \
             FROM (SELECT $2::text::regclass AS t) AS r",
        )
        .bind(NAMESPACE)
        .bind(self.table.quoted())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        state.checked = Some(Instant::now());
        if got && state.held.is_some() {
            sqlx::query("SELECT pg_advisory_unlock($1, $2::oid::int4)")
                .bind(NAMESPACE)
                .bind(table_oid)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        if got {
            if state.held.is_none() {
                tracing::info!(table = %self.table, "this relay is the active one for the table");
            }
            let held = Held { holder, table_oid };
            state.held = Some(held);
            state.said_standby = false;
            Ok(Some(held))
        } else {
            if state.held.take().is_some() {
                tracing::warn!(table = %self.table, "lost the table's relay lock; standing by");
            } else if !state.said_standby {
                tracing::info!(
                    table = %self.table,
                    "another relay is active on this table; standing by until its lock frees \
                     (choose work-balance coordination to share the rows)"
                );
            }
            state.said_standby = true;
            Ok(None)
        }
    }

    /// A read found the lock no longer granted to its connection: the next read checks again.
    pub(crate) async fn lost(&self) {
        self.state.lock().await.checked = None;
    }

    /// Whether this store held the lock when it last looked (without waiting for a read under way).
    pub(crate) fn probably_held(&self) -> bool {
        self.state.try_lock().map_or(true, |state| state.held.is_some())
    }

    /// Gives the lock up (the relay stopped): a standby relay takes over at its next poll.
    pub(crate) async fn release(&self) {
        let mut state = self.state.lock().await;
        let said_standby = state.said_standby;
        if let (Some(conn), Some(_)) = (state.conn.take(), state.held) {
            // Closing the connection frees every lock it holds; a failure here leaves it to the
            // server, which frees them when it sees the connection gone.
            if let Err(error) = sqlx::Connection::close(conn).await {
                tracing::debug!(%error, "closing the relay lock's connection failed");
            }
            tracing::info!(table = %self.table, "gave up the table's relay lock");
        }
        *state = State {
            said_standby,
            ..State::default()
        };
    }
}
