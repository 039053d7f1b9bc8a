//! The relay side: a [`Store`] over a logical replication slot.
//!
//! A background task ([`stream`](crate::stream)) streams the slot and decodes the outbox's logical
//! messages into a buffer ([`state`](crate::state)), with synthetic ids in commit order. The relay
//! reads the buffer; `complete` confirms the slot up to the end of the last transaction whose
//! messages were all completed, never further. The connection's settings are in
//! [`connection`](crate::connection), the slot's state in [`slot`](crate::slot).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgwire_replication::Lsn;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::sync::{Notify, watch};
use txoutbox_core::{
    Backlog, Completion, Error, Failure, OutboxMessage, ReadLimit, Result, Store, StreamPositions, Topics,
    Wakeup,
};
use txoutbox_postgres::PgOutbox;
use uuid::Uuid;

use crate::config::{WalConfig, check_wal_level};
use crate::connection::replication_config;
use crate::error::db_error;
use crate::positions::{Description, Skip};
use crate::slot::{SlotStatus, lost_slot, missing_slot, slot_status};
use crate::state::{Shared, State, StreamStatus, first_session_id};
use crate::stream::stream;

/// The relay's [`Store`] in WAL mode. Create it with
/// [`PgWalOutbox::store`](crate::PgWalOutbox::store).
///
/// One store streams its slot from [`lock_for_relay`](Store::lock_for_relay) on (the relay calls
/// it at start) until it is dropped; PostgreSQL lets one session stream a slot at a time, so a
/// second relay stands by until the first one's session ends (or [`WalConfig::takeover_timeout`]
/// passes, when set).
#[derive(Clone)]
pub struct PgWalStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgWalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWalStore")
            .field("slot", &self.inner.shared.config.slot)
            .field("prefix", &self.inner.shared.config.prefix)
            .finish()
    }
}

/// Stops the streaming task when the last handle of the store goes.
struct Inner {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl PgWalStore {
    pub(crate) fn new(pool: PgPool, url: &str, config: Arc<WalConfig>) -> Result<Self> {
        let replication = replication_config(url, &config)?;
        let t = config.dead_letter_table.quoted();
        let shared = Shared {
            pool,
            replication,
            dead_insert: format!(
                "INSERT INTO {t} (message_id, topic, key, payload, headers, status, attempts, last_error, created_at) \
                 SELECT m, tp, k, p, h::json, 'dead', a, e, c \
                 FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], $5::text[], $6::int[], $7::text[], $8::timestamptz[]) \
                   AS u(m, tp, k, p, h, a, e, c)"
            ),
            dead_count: format!("SELECT count(*) FROM {t} WHERE status = 'dead'"),
            config,
            state: Mutex::new(State {
                next_id: first_session_id(),
                ..State::default()
            }),
            arrived: Notify::new(),
            space: Notify::new(),
            confirm: watch::Sender::new(Lsn::ZERO),
            received: watch::Sender::new(Lsn::ZERO),
            status: watch::Sender::new(StreamStatus::Idle),
            system: std::sync::OnceLock::new(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
                task: Mutex::new(None),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared().state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot as PostgreSQL sees it: whether a relay streams it, its confirmed position, how
    /// many bytes of WAL it keeps, and whether it is at risk of invalidation; `buffered` counts
    /// this store's decoded messages not yet completed.
    pub async fn slot_status(&self) -> Result<SlotStatus> {
        let mut status = slot_status(&self.shared().pool, &self.shared().config).await?;
        status.buffered = self.state().buffer.len();
        Ok(status)
    }

    /// Waits (up to `timeout`) until PostgreSQL recorded the last position this store confirmed,
    /// so a relay started after this one replays nothing that was already acknowledged. The
    /// stream reports its position every [`WalConfig::status_interval`]; call this before
    /// dropping the store at a graceful shutdown. Returns whether it was recorded in time.
    pub async fn flush_confirmation(&self, timeout: Duration) -> Result<bool> {
        let confirmed = self.state().confirmed;
        if confirmed == Lsn::ZERO {
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let done: Option<bool> = sqlx::query_scalar(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots \
                 WHERE slot_name = $1 AND database = current_database()",
            )
            .bind(&self.shared().config.slot)
            .bind(confirmed.to_pg_string())
            .fetch_optional(&self.shared().pool)
            .await
            .map_err(db_error)?
            .flatten();
            if done == Some(true) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20).min(self.shared().config.status_interval)).await;
        }
    }

    /// Resolves when the replication stream stopped for good, with the error it stopped on: an
    /// invalidated or dropped slot, a refused login, a refused TLS certificate. The stream does not
    /// restart by itself then (reads fail with that error), so a daemon should stop; see
    /// [`slot_invalidated`](Self::slot_invalidated) for an invalidation seen in
    /// [`slot_status`](Self::slot_status) first.
    pub async fn stream_stopped(&self) -> Error {
        let mut status = self.shared().status.subscribe();
        let failed = match status.wait_for(|s| matches!(s, StreamStatus::Failed(_))).await {
            Ok(s) => match &*s {
                StreamStatus::Failed(error) => Some(error.clone()),
                _ => None,
            },
            Err(_) => None,
        };
        match failed {
            Some(error) => Error::Config(error),
            // The store owns the sender: it cannot go while `self` lives.
            None => std::future::pending().await,
        }
    }

    /// The error for a slot PostgreSQL invalidated (`wal_status = lost`, see
    /// [`SlotStatus::is_lost`]): the cause and the recovery, the message `check` refuses to
    /// start with.
    pub fn slot_invalidated(&self) -> Error {
        Error::Config(lost_slot(&self.shared().config, ""))
    }

    /// The stream's fatal error (an invalidated or dropped slot, a refused login), if it stopped
    /// on one: the relay reports it on every read instead of idling as if nothing were pending.
    fn stream_failed(&self) -> Result<()> {
        match &*self.shared().status.borrow() {
            StreamStatus::Failed(error) => Err(Error::Config(error.clone())),
            _ => Ok(()),
        }
    }

    /// Starts streaming (once), then waits until PostgreSQL accepted this session on the slot.
    async fn start_streaming(&self) -> Result<()> {
        let mut status = self.shared().status.subscribe();
        {
            let mut task = self.inner.task.lock().unwrap_or_else(|p| p.into_inner());
            if task.as_ref().is_none_or(|t| t.is_finished()) {
                self.shared().status.send_replace(StreamStatus::Connecting);
                *task = Some(tokio::spawn(stream(Arc::clone(&self.inner.shared))));
            }
        }
        // A standby (no takeover timeout) waits as long as another relay streams the slot; the
        // streaming task itself gives up on errors that a retry does not mend.
        let timeout = self
            .shared()
            .config
            .takeover_timeout
            .map_or(Duration::MAX, |t| t + Duration::from_secs(10));
        let ready = tokio::time::timeout(
            timeout,
            status.wait_for(|s| matches!(s, StreamStatus::Streaming | StreamStatus::Failed(_))),
        )
        .await;
        match ready {
            Ok(Ok(s)) => match &*s {
                StreamStatus::Failed(error) => Err(Error::Config(error.clone())),
                _ => Ok(()),
            },
            Ok(Err(_)) => Err(Error::Config("the replication task ended".into())),
            Err(_) => Err(Error::database(
                format!(
                    "could not start streaming the replication slot {:?} within {}",
                    self.shared().config.slot,
                    txoutbox_core::HumanDuration(timeout)
                ),
                true,
            )),
        }
    }

    /// Counts the outbox's messages still in the slot, without consuming them (only while no
    /// session streams the slot).
    async fn peek_count(&self) -> Result<u64> {
        let c = &self.shared().config;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, \
               'proto_version', '1', 'publication_names', $2, 'messages', 'true') \
             WHERE get_byte(data, 0) = 77 AND get_byte(data, 1) = 1 \
               AND substring(data FROM 11 FOR $4) = convert_to($3, 'UTF8') || '\\x00'::bytea",
        )
        .bind(&c.slot)
        .bind(&c.publication)
        .bind(&c.prefix)
        .bind(i32::try_from(c.prefix.len() + 1).unwrap_or(i32::MAX))
        .fetch_one(&self.shared().pool)
        .await
        .map_err(db_error)?;
        Ok(n.max(0) as u64)
    }

    fn running(&self) -> bool {
        self.inner
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Messages committed but not yet buffered: none once the stream passed a marker written
    /// now; counted by peeking the slot when this store does not stream it.
    async fn unread(&self) -> Result<u64> {
        let running = self.running();
        if running {
            // A relay starting on this store: the slot is (about to be) ours, so peeking it
            // would fail; wait for the stream instead.
            let mut status = self.shared().status.subscribe();
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                status.wait_for(|s| matches!(s, StreamStatus::Streaming | StreamStatus::Failed(_))),
            )
            .await;
        }
        let streaming = running && *self.shared().status.borrow() == StreamStatus::Streaming;
        let full = self.shared().is_full(&self.state());
        if streaming && full {
            // Back-pressure: the stream waits for the relay, so a marker would not be reached
            // soon. The buffered count is a lower bound then (and never zero).
            Ok(0)
        } else if streaming {
            self.sync().await.map(|()| 0)
        } else {
            self.peek_count().await
        }
    }

    /// Waits until the stream has read everything committed before now: writes a
    /// non-transactional marker message and waits for the stream to pass it.
    async fn sync(&self) -> Result<()> {
        let marker = format!("{}.sync", self.shared().config.prefix);
        let lsn: String = sqlx::query_scalar("SELECT pg_logical_emit_message(false, $1, ''::bytea)::text")
            .bind(&marker)
            .fetch_one(&self.shared().pool)
            .await
            .map_err(db_error)?;
        let lsn = Lsn::parse(&lsn).map_err(|e| Error::database(e.to_string(), false))?;
        let mut received = self.shared().received.subscribe();
        match tokio::time::timeout(Duration::from_secs(10), received.wait_for(|&r| r >= lsn)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::database(
                "the replication stream did not catch up within 10 s; the backlog is unknown",
                true,
            )),
        }
    }
}

impl Store for PgWalStore {
    async fn check(&self) -> Result<()> {
        let pool = &self.shared().pool;
        let config = &self.shared().config;
        check_wal_level(pool).await?;
        PgOutbox::with_table(Topics::new(), config.dead_letter_table.clone())
            .store(pool.clone())
            .check()
            .await?;
        let slot: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT plugin, wal_status FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
        )
        .bind(&config.slot)
        .fetch_optional(pool)
        .await
        .map_err(db_error)?;
        match slot {
            None => Err(missing_slot(config)),
            Some((plugin, _)) if plugin != "pgoutput" => Err(Error::Config(format!(
                "the replication slot {:?} uses the plugin {plugin:?}; WAL mode needs pgoutput: drop it and run the migrations",
                config.slot
            ))),
            Some((_, Some(status))) if status == "lost" => Err(Error::Config(lost_slot(config, ""))),
            Some(_) => {
                if self.shared().system.get().is_none() {
                    // Executable by anyone (no ACL on pg_control_system by default); a server
                    // that refuses it only loses the cluster check of exactly-once progress.
                    match sqlx::query_scalar::<_, String>(
                        "SELECT system_identifier::text FROM pg_control_system()",
                    )
                    .fetch_one(pool)
                    .await
                    {
                        Ok(system) => {
                            let _ = self.shared().system.set(system);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the cluster's system identifier"),
                    }
                }
                Ok(())
            }
        }
    }

    async fn lock_for_relay(&self) -> Result<()> {
        self.start_streaming().await
    }

    async fn fetch_pending(&self, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        self.fetch_after(i64::MIN, limit).await
    }

    async fn fetch_after(&self, after: i64, limit: ReadLimit) -> Result<Vec<OutboxMessage>> {
        // Ids are given in commit order: nothing ever appears below the cursor.
        self.stream_failed()?;
        let mut state = self.state();
        // The relay reads: any exactly-once resume is done, large transactions may stream.
        state.reading = true;
        Ok(limit.take(state.buffer.starting_at(after.saturating_add(1))))
    }

    async fn complete(&self, ids: &[i64], _completion: Completion) -> Result<()> {
        // The WAL keeps no rows: both completions mean "confirm past it".
        let mut state = self.state();
        for &id in ids {
            state.complete_one(id);
        }
        if let Some(to) = state.advance() {
            self.shared().confirm.send_replace(to);
        }
        drop(state);
        self.shared().space.notify_one();
        Ok(())
    }

    async fn record_failures(&self, failures: &[Failure]) -> Result<()> {
        let mut dead = Vec::new();
        {
            let mut state = self.state();
            for f in failures {
                let Some(m) = state.buffer.get_mut(f.id) else {
                    continue;
                };
                m.attempts = f.attempts;
                match f.next_attempt_at {
                    Some(at) => m.next_attempt_at = Some(at),
                    None => dead.push((m.clone(), f.error.clone())),
                }
            }
        }
        if dead.is_empty() {
            return Ok(());
        }
        let n = dead.len();
        let (mut ids, mut topics, mut keys, mut payloads, mut headers, mut attempts, mut errors, mut created) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (m, error) in &dead {
            ids.push(Uuid::parse_str(&m.message_id).unwrap_or_else(|_| Uuid::now_v7()));
            topics.push(if m.topic.is_empty() {
                "(unreadable)"
            } else {
                &*m.topic
            });
            keys.push(m.key.as_deref());
            payloads.push(m.payload.as_deref());
            headers.push(txoutbox_core::headers_to_json(&m.headers));
            attempts.push(m.attempts);
            errors.push(error.clone());
            created.push(m.created_at);
        }
        sqlx::query(AssertSqlSafe(self.shared().dead_insert.clone()))
            .bind(&ids)
            .bind(&topics)
            .bind(&keys)
            .bind(&payloads)
            .bind(&headers)
            .bind(&attempts)
            .bind(&errors)
            .bind(&created)
            .execute(&self.shared().pool)
            .await
            .map_err(db_error)?;
        // Kept in the dead-letter table now: counts as completed for the slot.
        let ids: Vec<i64> = dead.iter().map(|(m, _)| m.id).collect();
        self.complete(&ids, Completion::Delete).await
    }

    async fn backlog(&self) -> Result<Backlog> {
        let unread = match self.unread().await {
            Ok(n) => n,
            // A relay of this store took the slot while we peeked it: read from the stream.
            Err(_) if self.running() => self.unread().await?,
            Err(e) => return Err(e),
        };
        let (buffered, oldest) = {
            let state = self.state();
            (
                state.buffer.len() as u64,
                state.buffer.values().next().map(|m| m.created_at),
            )
        };
        let dead: i64 = sqlx::query_scalar(AssertSqlSafe(self.shared().dead_count.clone()))
            .fetch_one(&self.shared().pool)
            .await
            .map_err(db_error)?;
        Ok(Backlog {
            pending: buffered + unread,
            oldest_pending: oldest,
            dead: dead.max(0) as u64,
        })
    }

    fn watch(&self, wakeup: Wakeup) -> Option<tokio::task::JoinHandle<()>> {
        let shared = Arc::clone(&self.inner.shared);
        Some(tokio::spawn(async move {
            loop {
                shared.arrived.notified().await;
                wakeup.notify();
            }
        }))
    }

    /// Ids last one session here: an exactly-once sink records WAL positions instead.
    fn stream_positions(&self) -> Option<Arc<dyn StreamPositions>> {
        Some(Arc::new(Positions(Arc::clone(&self.inner.shared))))
    }

    /// `table` = the dead-letter table, `slot` = the replication slot.
    fn metric_labels(&self) -> txoutbox_core::MetricLabels {
        let config = &self.inner.shared.config;
        txoutbox_core::MetricLabels::table(config.dead_letter_table.to_string()).with_slot(&config.slot)
    }
}

/// The store's [`StreamPositions`]: what is done, as commit positions and indexes (without
/// keeping the streaming task alive).
struct Positions(Arc<Shared>);

impl StreamPositions for Positions {
    fn describe(&self, delivered: &[i64]) -> serde_json::Value {
        let system = self.0.system.get().cloned();
        let state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        let description = state.describe(&self.0.config.slot, system, delivered);
        drop(state);
        serde_json::to_value(description).unwrap_or_default()
    }

    fn resume(&self, description: &serde_json::Value) -> Result<()> {
        let system = self.0.system.get().map(String::as_str);
        let description = Description::parse(description, &self.0.config.slot, system)?;
        tracing::info!(
            slot = %self.0.config.slot,
            upto = %description.upto,
            ranges = description.done.len(),
            partial = description.partial.len(),
            "exactly-once: skipping what Kafka already holds"
        );
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.resume(Skip::new(description));
        let to = state.advance();
        drop(state);
        if let Some(to) = to {
            self.0.confirm.send_replace(to);
        }
        self.0.space.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use pgwire_replication::{SslMode, TlsConfig};

    use super::*;
    use crate::positions::{Builder, Covered};
    use crate::state::{Tx, position_id};

    #[test]
    fn an_unreadable_message_is_named_by_its_position_the_same_on_every_replay() {
        let id = position_id(Lsn(0x1_0000_0040), 3);
        assert_eq!(id, position_id(Lsn(0x1_0000_0040), 3));
        assert_ne!(id, position_id(Lsn(0x1_0000_0040), 4));
        assert_ne!(id, position_id(Lsn(0x1_0000_0048), 3));
        assert_eq!(id.get_version_num(), 8);
    }

    #[test]
    fn confirms_only_past_fully_completed_transactions() {
        let mut s = State {
            next_id: 1,
            ..State::default()
        };
        for (i, (first, n)) in [(1, 2), (3, 1), (4, 2)].into_iter().enumerate() {
            for id in first..first + n {
                s.buffer.push(OutboxMessage::unreadable(id, "x"));
            }
            s.txs.push_back(Tx {
                first_id: first,
                len: n as usize,
                outstanding: n as usize,
                start: Lsn(100 * (i as u64 + 1) - 2),
                end_lsn: Some(Lsn(100 * (i as u64 + 1))),
                covered: Covered::Nothing,
            });
        }
        s.complete_one(3); // the second transaction, while the first is open
        assert_eq!(s.advance(), None);
        s.complete_one(1);
        assert_eq!(s.advance(), None);
        s.complete_one(2);
        assert_eq!(s.advance(), Some(Lsn(200)));
        s.complete_one(5);
        s.complete_one(5); // twice: no effect
        assert_eq!(s.advance(), None);
        s.complete_one(4);
        assert_eq!(s.advance(), Some(Lsn(300)));
        assert!(s.buffer.is_empty() && s.txs.is_empty());
    }

    /// A state holding transactions of `sizes` messages, whose commits start at 98, 198, ...
    /// and end at 100, 200, ...
    fn state_of(sizes: &[usize]) -> State {
        let mut s = State {
            next_id: 1,
            ..State::default()
        };
        for (i, &n) in sizes.iter().enumerate() {
            let first = s.next_id;
            for id in first..first + n as i64 {
                s.buffer.push(OutboxMessage::unreadable(id, "x"));
            }
            s.next_id += n as i64;
            s.txs.push_back(Tx {
                first_id: first,
                len: n,
                outstanding: n,
                start: Lsn(100 * (i as u64 + 1) - 2),
                end_lsn: Some(Lsn(100 * (i as u64 + 1))),
                covered: Covered::Nothing,
            });
            s.last_commit_end = Lsn(100 * (i as u64 + 1));
        }
        s
    }

    #[test]
    fn a_description_names_completed_and_delivered_messages_by_position() {
        // Transactions at 100 (ids 1-2), 200 (3-5), 300 (6), 400 (7-8).
        let mut s = state_of(&[2, 3, 1, 2]);
        s.complete_one(1);
        s.complete_one(6);
        // Delivered, not completed yet: 2 (finishes the first), 4, and 7.
        let d = s.describe("slot", None, &[7, 4, 2]);
        assert_eq!(d.upto, Lsn(100));
        assert_eq!(d.done, [(Lsn(298), Lsn(298))]);
        assert_eq!(d.partial, [(Lsn(198), vec![(1, 1)]), (Lsn(398), vec![(0, 0)])]);

        // The next session streams the same transactions afresh, with other ids: it skips what
        // the description names and keeps the rest.
        let mut next = state_of(&[2, 3]);
        next.next_id = 1_000; // ids differ across sessions; positions do not
        next.resume(Skip::new(d.clone()));
        let left: Vec<i64> = next.buffer.values().map(|m| m.id).collect();
        assert_eq!(left, [3, 5], "index 1 of the transaction at 200 was delivered");
        assert_eq!(next.advance(), Some(Lsn(100)));
        // Still to come: 300 (skipped whole) and 400 (index 0 skipped).
        let rest = [(Lsn(298), 1usize), (Lsn(398), 2)];
        for (start, n) in rest {
            // Told when the transaction begins, before its commit is read.
            let covered = next.skip.as_ref().unwrap().covered(start, None);
            match (start.0, covered) {
                (298, Some(Covered::All)) => {}
                (398, Some(Covered::Some(runs))) => assert_eq!((runs, n), (vec![(0, 0)], 2)),
                other => panic!("unexpected {other:?}"),
            }
        }
        // Described before the stream reaches them, they are still named.
        let again = next.describe("slot", None, &[]);
        assert_eq!(again.upto, Lsn(100));
        assert_eq!(again.done, [(Lsn(298), Lsn(298))]);
        assert_eq!(
            again.partial,
            [(Lsn(198), vec![(1, 1)]), (Lsn(398), vec![(0, 0)])]
        );
    }

    #[test]
    fn later_descriptions_repeat_what_the_session_resumed_from() {
        // The last record said: done up to 50, and index 0 of the transaction at 70. This
        // session's stream started above both (the slot was confirmed at 80) and holds the
        // transaction at 100 (ids 1-2), of which id 1 is delivered.
        let resumed = Builder::new("slot", None, Lsn(50));
        let mut resumed = resumed.finish(None);
        resumed.partial.push((Lsn(70), vec![(0, 0)]));
        let mut s = state_of(&[2]);
        s.resume(Skip::new(resumed));
        let d = s.describe("slot", None, &[1]);
        // A database crash may replay the slot from below 80: what the resumed record named
        // must still be named.
        assert_eq!(d.upto, Lsn(50));
        assert_eq!(d.partial, [(Lsn(70), vec![(0, 0)]), (Lsn(98), vec![(0, 0)])]);
        // Once this session's own watermark passes them, they are dropped.
        s.complete_one(1);
        s.complete_one(2);
        assert_eq!(s.advance(), Some(Lsn(100)));
        let d = s.describe("slot", None, &[]);
        assert_eq!(
            (d.upto, d.partial.len(), s.resumed.is_none()),
            (Lsn(100), 0, true)
        );
    }

    #[test]
    fn urls_become_replication_settings() {
        let c = replication_config(
            "postgres://u%40x:p%2Fw@db.example:6543/shop",
            &WalConfig::default(),
        )
        .unwrap();
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.password.as_str(),
                c.database.as_str()
            ),
            ("db.example", 6543, "u@x", "p/w", "shop")
        );
        assert!(replication_config("mysql://x/y", &WalConfig::default()).is_err());
        let v6 = replication_config("postgres://u@[::1]:5433/d", &WalConfig::default()).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 5433));
    }

    fn tls(query: &str) -> Result<TlsConfig> {
        replication_config(
            &format!("postgres://u@db.example/d{query}"),
            &WalConfig::default(),
        )
        .map(|c| c.tls)
    }

    #[test]
    fn sslmodes_mean_what_they_mean_to_libpq() {
        let mode = |query: &str| tls(query).unwrap().mode;
        // libpq's default is prefer: TLS when offered, plain text otherwise.
        assert_eq!(mode(""), SslMode::Prefer);
        assert_eq!(mode("?sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("?sslmode=allow"), SslMode::Prefer);
        assert_eq!(mode("?sslmode=prefer"), SslMode::Prefer);
        assert_eq!(mode("?sslmode=require"), SslMode::Require);
        assert_eq!(mode("?sslmode=verify-ca"), SslMode::VerifyCa);
        assert_eq!(mode("?sslmode=verify-full"), SslMode::VerifyFull);
        // require with a root certificate verifies the chain, as in libpq.
        assert_eq!(mode("?sslmode=require&sslrootcert=/ca.pem"), SslMode::VerifyCa);
        assert_eq!(mode("?sslmode=prefer&sslrootcert=/ca.pem"), SslMode::Prefer);
        // sslrootcert=system: the bundled roots, verify-full by default and required.
        let system = tls("?sslrootcert=system").unwrap();
        assert_eq!((system.mode, system.ca_pem_path), (SslMode::VerifyFull, None));
        let weak = tls("?sslrootcert=system&sslmode=verify-ca")
            .unwrap_err()
            .to_string();
        assert!(
            weak.contains("sslrootcert=system needs sslmode=verify-full"),
            "{weak}"
        );
        // The last value wins; an unknown mode is refused, naming the valid ones.
        assert_eq!(mode("?sslmode=disable&sslmode=verify-ca"), SslMode::VerifyCa);
        let bad = tls("?sslmode=verify_full").unwrap_err().to_string();
        assert!(
            bad.contains("\"verify_full\"") && bad.contains("verify-full"),
            "{bad}"
        );
        // disable ignores the files, as libpq does.
        assert_eq!(
            tls("?sslmode=disable&sslrootcert=/ca.pem&sslcert=/c.pem").unwrap(),
            TlsConfig::disabled()
        );
    }

    #[test]
    fn tls_files_and_hosts_are_passed_on() {
        let full =
            tls("?sslmode=verify-full&sslrootcert=/etc/pg/ca%20x.pem&sslcert=/c.pem&sslkey=/k.pem").unwrap();
        assert_eq!(
            full,
            TlsConfig {
                mode: SslMode::VerifyFull,
                ca_pem_path: Some("/etc/pg/ca x.pem".into()),
                sni_hostname: None,
                client_cert_pem_path: Some("/c.pem".into()),
                client_key_pem_path: Some("/k.pem".into()),
            }
        );
        // verify-ca without sslrootcert: the client's bundled (Mozilla) roots.
        assert_eq!(tls("?sslmode=verify-ca").unwrap().ca_pem_path, None);
        // Half a client certificate is refused.
        for query in ["?sslmode=require&sslcert=/c.pem", "?sslkey=/k.pem"] {
            let err = tls(query).unwrap_err().to_string();
            assert!(err.contains("sslcert and sslkey"), "{query}: {err}");
        }
        // verify-full against an IP address checks the certificate's IP addresses.
        let ip = replication_config(
            "postgres://u@127.0.0.1:5432/d?sslmode=verify-full&sslrootcert=/ca.pem",
            &WalConfig::default(),
        )
        .unwrap();
        assert_eq!(ip.tls.sni_hostname.as_deref(), Some("127.0.0.1"));
        let ca = replication_config(
            "postgres://u@127.0.0.1:5432/d?sslmode=verify-ca&sslrootcert=/ca.pem",
            &WalConfig::default(),
        )
        .unwrap();
        assert_eq!(ca.tls.sni_hostname, None);
    }

    fn status(wal_status: &str, safe: Option<i64>, keep: Option<i64>) -> SlotStatus {
        SlotStatus {
            slot: "s".into(),
            active: true,
            confirmed_lsn: None,
            lag_bytes: 10 << 20,
            wal_status: wal_status.into(),
            safe_wal_size: safe,
            max_slot_wal_keep_size: keep,
            buffered: 0,
        }
    }

    #[test]
    fn slot_problems_warn_before_invalidation() {
        let keep = Some(100 << 20);
        assert!(status("reserved", None, None).problems(None).is_empty());
        assert!(status("reserved", Some(90 << 20), keep).problems(None).is_empty());
        let low = status("reserved", Some(10 << 20), keep).problems(None);
        assert!(low.len() == 1 && low[0].contains("safe_wal_size"), "{low:?}");
        assert!(
            status("reserved", Some(10 << 20), keep)
                .problems(Some(1 << 20))
                .is_empty()
        );
        let unreserved = status("unreserved", Some(0), keep).problems(None);
        assert!(
            unreserved.len() == 1 && unreserved[0].contains("unreserved"),
            "{unreserved:?}"
        );
        let lost = status("lost", None, keep).problems(None);
        assert!(
            lost.len() == 1 && lost[0].contains("invalidated") && lost[0].contains("drop-slot"),
            "{lost:?}"
        );
    }
}
