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
//!
//! The lock's session asks the server to probe the client ([`SESSION_SETTINGS`]: TCP keepalives
//! after 10 s idle, every 5 s, 3 probes; unacknowledged data for 30 s), so the lock of a node
//! that vanished (a lost machine, a partition, a frozen VM) frees in about half a minute instead
//! of the kernel's default two hours. A paused process on a live machine keeps it: exclusive
//! coordination, whose leases expire, bounds that case too.
//!
//! The lock needs a real session: behind a proxy in transaction-pooling mode (pgbouncer's
//! `pool_mode = transaction`) each statement may run on another server connection. The lock's
//! statements compare the backend they ran on with the one that took the lock and refuse to go
//! on, saying so, when they differ.

use std::sync::atomic::{AtomicBool, Ordering};
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

/// Settings of the lock's session (those the server knows: `tcp_user_timeout` is PostgreSQL 12+,
/// `idle_session_timeout` 14+); the connection stays idle between checks, so no idle timeout may
/// end it.
const SESSION_SETTINGS: &str = "SELECT pg_backend_pid(), count(set_config(s.name, v.value, false)) \
     FROM (VALUES ('tcp_keepalives_idle', '10'), ('tcp_keepalives_interval', '5'), \
       ('tcp_keepalives_count', '3'), ('tcp_user_timeout', '30000'), \
       ('idle_session_timeout', '0'), ('idle_in_transaction_session_timeout', '0')) AS v(name, value) \
     JOIN pg_settings AS s ON s.name = v.name";

/// How often the holder's connection is checked, so that a connection the server or the network
/// ended is noticed even when every read still finds rows.
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The lock of one table, shared by the clones of one store.
#[derive(Debug)]
pub(crate) struct RelayLock {
    table: TableName,
    state: Mutex<State>,
    /// A relay runs on this lock (clones of one store share it; two relays may not).
    claimed: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// The lock's connection, detached from the pool, and its backend process id.
    conn: Option<(PgConnection, i32)>,
    /// `pg_backend_pid()` of `conn` and the table's oid, while `conn` holds the lock.
    held: Option<Held>,
    /// When `conn` last answered.
    checked: Option<Instant>,
    /// A standby was already logged (said once, not at every poll).
    said_standby: bool,
}

impl State {
    /// Forgets the connection and the lock (what was said of a standby stays said).
    fn reset(&mut self) {
        *self = Self {
            said_standby: self.said_standby,
            ..Self::default()
        };
    }
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
            claimed: AtomicBool::new(false),
        }
    }

    /// Marks the lock as used by a relay; fails when another relay already uses it (two relays
    /// on clones of one store would both pass its checks). The claim ends when the returned
    /// guard drops, unless it is kept (then at [`release`](Self::release)).
    pub(crate) fn claim(&self) -> Result<Claim<'_>> {
        if self.claimed.swap(true, Ordering::AcqRel) {
            return Err(txoutbox_core::Error::Config(format!(
                "a relay already runs on this store of {}: give each relay its own store \
                 (`outbox.store(pool)`), or choose work-balance coordination to share the rows",
                self.table
            )));
        }
        Ok(Claim {
            lock: self,
            kept: false,
        })
    }

    /// The lock, taking it when free; `None` while another relay holds it.
    pub(crate) async fn acquire(&self, pool: &PgPool) -> Result<Option<Held>> {
        let mut state = self.state.lock().await;
        let result = self.acquire_locked(&mut state, pool).await;
        if result.is_err() {
            // A connection that failed may or may not still hold the lock: end it (the server
            // frees the lock with it) and start again at the next read.
            if state.held.is_some() {
                tracing::warn!(
                    table = %self.table,
                    "the relay lock's connection failed: reading nothing until the lock is taken again"
                );
            }
            state.reset();
        }
        result
    }

    async fn acquire_locked(&self, state: &mut State, pool: &PgPool) -> Result<Option<Held>> {
        let fresh = state.checked.is_some_and(|at| at.elapsed() < CHECK_EVERY);
        if let (Some(held), true) = (state.held, fresh) {
            return Ok(Some(held));
        }
        let (conn, session) = match &mut state.conn {
            Some((conn, session)) => (conn, *session),
            slot @ None => {
                state.held = None;
                let mut conn = pool.acquire().await.map_err(db_error)?.detach();
                let (session, _): (i32, i64) = sqlx::query_as(SESSION_SETTINGS)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(db_error)?;
                let (conn, session) = slot.insert((conn, session));
                (conn, *session)
            }
        };
        // A session keeps its lock as long as it lives: an answer from the same backend proves it.
        if let Some(held) = state.held {
            let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?;
            self.same_session(session, holder)?;
            state.checked = Some(Instant::now());
            return Ok(Some(held));
        }
        let (got, holder, table_oid): (bool, i32, i64) = sqlx::query_as(
            "SELECT pg_try_advisory_lock($1, t::oid::int4), pg_backend_pid(), t::oid::bigint \
             FROM (SELECT $2::text::regclass AS t) AS r",
        )
        .bind(NAMESPACE)
        .bind(self.table.quoted())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        self.same_session(session, holder)?;
        state.checked = Some(Instant::now());
        if got {
            tracing::info!(table = %self.table, "this relay is the active one for the table");
            let held = Held { holder, table_oid };
            state.held = Some(held);
            state.said_standby = false;
            Ok(Some(held))
        } else {
            if !state.said_standby {
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

    /// Fails unless `holder`, the backend a statement ran on, is the lock's `session`.
    fn same_session(&self, session: i32, holder: i32) -> Result<()> {
        if holder == session {
            return Ok(());
        }
        Err(txoutbox_core::Error::Config(format!(
            "the relay lock of {} needs a session of its own, but its statements ran on two \
             server connections ({session}, then {holder}): connect the relay directly or \
             through session pooling (not pgbouncer's transaction pooling), or choose \
             exclusive coordination",
            self.table
        )))
    }

    /// A read found the lock no longer granted to its connection (ended, or taken over): the
    /// connection is dropped (the server frees whatever it still held) and the next read starts
    /// over.
    pub(crate) async fn lost(&self) {
        let mut state = self.state.lock().await;
        if state.held.is_some() {
            tracing::warn!(table = %self.table, "lost the table's relay lock; standing by");
        }
        state.reset();
    }

    /// Whether this store held the lock when it last looked (without waiting for a read under way).
    pub(crate) fn probably_held(&self) -> bool {
        self.state.try_lock().map_or(true, |state| state.held.is_some())
    }

    /// Gives the lock up (the relay stopped): a standby relay takes over at its next poll.
    pub(crate) async fn release(&self) {
        let mut state = self.state.lock().await;
        self.claimed.store(false, Ordering::Release);
        if let (Some((conn, _)), Some(_)) = (state.conn.take(), state.held) {
            // Closing the connection frees every lock it holds; a failure here leaves it to the
            // server, which frees them when it sees the connection gone.
            if let Err(error) = sqlx::Connection::close(conn).await {
                tracing::debug!(%error, "closing the relay lock's connection failed");
            }
            tracing::info!(table = %self.table, "gave up the table's relay lock");
        }
        state.reset();
    }
}

/// A relay's claim on a [`RelayLock`]: given back on drop unless kept.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    lock: &'a RelayLock,
    kept: bool,
}

impl Claim<'_> {
    /// The relay runs: the claim lasts until the lock is released.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.lock.claimed.store(false, Ordering::Release);
        }
    }
}
