//! The relay side: a [`Store`] over a logical replication slot.
//!
//! A background task streams the slot and decodes the outbox's logical messages into a buffer,
//! with synthetic ids in commit order. The relay reads the buffer; `complete` confirms the slot
//! up to the end of the last transaction whose messages were all completed, never further.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, SslMode, TlsConfig};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::sync::{Notify, watch};
use txoutbox_core::{
    Backlog, Completion, Error, Failure, Interner, OutboxMessage, ReadLimit, Result, Store, StreamPositions,
    Topics, Wakeup, message_id_text,
};
use txoutbox_postgres::PgOutbox;
use uuid::Uuid;

use crate::buffer::Buffer;
use crate::envelope;
use crate::error::db_error;
use crate::outbox::{WalConfig, check_wal_level};
use crate::positions::{Builder, Covered, Description, Skip, in_runs, runs};

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

struct Shared {
    pool: PgPool,
    config: Arc<WalConfig>,
    replication: ReplicationConfig,
    dead_insert: String,
    dead_count: String,
    state: Mutex<State>,
    /// New messages arrived (wakes the relay through `watch`).
    arrived: Notify,
    /// Buffer space was freed (wakes the streaming task under back-pressure).
    space: Notify,
    /// The position to confirm to PostgreSQL.
    confirm: watch::Sender<Lsn>,
    /// The highest WAL position the stream has reached.
    received: watch::Sender<Lsn>,
    /// The stream's state, for `lock_for_relay`.
    status: watch::Sender<StreamStatus>,
    /// The cluster's system identifier, read by `check` (exactly-once progress records it).
    system: std::sync::OnceLock<String>,
}

impl Shared {
    /// Whether the buffer holds as many messages, or bytes, as it may (back-pressure).
    fn is_full(&self, state: &State) -> bool {
        state.buffer.len() >= self.config.max_buffered
            || state.buffer.bytes() >= self.config.max_buffered_bytes
    }
}

#[derive(Debug, Clone, PartialEq)]
enum StreamStatus {
    Idle,
    Connecting,
    Streaming,
    Failed(String),
}

/// A transaction whose messages are not all completed yet: committed, or being streamed (its
/// commit not read yet) because it is larger than the buffer should hold at once.
#[derive(Debug)]
struct Tx {
    first_id: i64,
    /// Its messages (ids `first_id..first_id + len`, in the order the transaction wrote them).
    len: usize,
    outstanding: usize,
    /// Where its commit record starts (announced when it begins): its name in exactly-once
    /// progress and in the ids of its unreadable messages, the same on every replay.
    start: Lsn,
    /// Where its commit record ends; `None` while it streams (the slot never moves past it then).
    end_lsn: Option<Lsn>,
    /// While it streams: which of its messages an exactly-once progress says Kafka holds already.
    covered: Covered,
}

#[derive(Debug, Default)]
struct State {
    /// Decoded messages not completed yet, by synthetic id (commit order).
    buffer: Buffer,
    /// Transactions not confirmed yet, in commit order.
    txs: VecDeque<Tx>,
    next_id: i64,
    /// End of the last transaction taken into the buffer: replays after a reconnect skip up to it.
    last_commit_end: Lsn,
    confirmed: Lsn,
    /// What an exactly-once sink's progress says was delivered beyond the stream's position:
    /// skipped as the stream reaches it.
    skip: Option<Skip>,
    /// The progress this session resumed from, whole: every later description repeats it until
    /// the watermark passes it (a database crash may replay the slot from below this session's
    /// start).
    resumed: Option<Skip>,
    /// The relay has begun reading (after any exactly-once resume): a large transaction may
    /// stream from now on.
    reading: bool,
}

impl State {
    /// Confirms every leading transaction with nothing outstanding; returns the new position.
    fn advance(&mut self) -> Option<Lsn> {
        let mut to = None;
        while self
            .txs
            .front()
            .is_some_and(|t| t.outstanding == 0 && t.end_lsn.is_some())
        {
            to = self.txs.pop_front().and_then(|t| t.end_lsn);
        }
        let to = to.filter(|&l| l > self.confirmed)?;
        self.confirmed = to;
        if let Some(mut resumed) = self.resumed.take() {
            self.resumed = resumed.prune(to).then_some(resumed);
        }
        Some(to)
    }

    /// Drops the messages `skip` names from the transactions already taken (a relay reads none
    /// of them before it recovered), and keeps it for those still to come.
    fn resume(&mut self, mut skip: Skip) {
        let mut dropped = Vec::new();
        for tx in &mut self.txs {
            let covered = skip.covered(tx.start, tx.end_lsn).unwrap_or(Covered::Nothing);
            if tx.end_lsn.is_none() {
                tx.covered = covered.clone();
            }
            match covered {
                Covered::Nothing => {}
                Covered::All => dropped.extend(tx.ids()),
                Covered::Some(runs) => dropped.extend(
                    tx.ids()
                        .zip(0u32..)
                        .filter(|&(_, index)| in_runs(&runs, index))
                        .map(|(id, _)| id),
                ),
            }
        }
        for id in dropped {
            self.complete_one(id);
        }
        self.resumed = Some(skip.clone());
        self.skip = skip.prune(self.last_commit_end).then_some(skip);
    }

    /// Describes what is done (see [`positions`](crate::positions)), `delivered` included.
    fn describe(&self, slot: &str, system: Option<String>, delivered: &[i64]) -> Description {
        let mut delivered = delivered.to_vec();
        delivered.sort_unstable();
        let mut builder = Builder::new(slot, system, self.confirmed);
        for tx in &self.txs {
            let end = tx.first_id + tx.len as i64;
            let extra = {
                let from = delivered.partition_point(|&d| d < tx.first_id);
                let to = delivered.partition_point(|&d| d < end);
                delivered.get(from..to).unwrap_or_default()
            };
            let covered = if tx.outstanding == 0 {
                Covered::All
            } else if extra.is_empty() && tx.outstanding == tx.len {
                Covered::Nothing
            } else {
                let waiting: Vec<i64> = self
                    .buffer
                    .ids_in(tx.first_id..end)
                    .filter(|id| extra.binary_search(id).is_err())
                    .collect();
                if waiting.is_empty() {
                    Covered::All
                } else if waiting.len() == tx.len {
                    Covered::Nothing
                } else {
                    Covered::Some(runs(
                        tx.ids()
                            .zip(0u32..)
                            .filter(|(id, _)| waiting.binary_search(id).is_err())
                            .map(|(_, index)| index),
                    ))
                }
            };
            // A streaming transaction may have more messages: never all done.
            let covered = match (covered, tx.end_lsn) {
                (Covered::All, None) => Covered::Some(runs(0..u32::try_from(tx.len).unwrap_or(u32::MAX))),
                (covered, _) => covered,
            };
            builder.push(tx.start, tx.end_lsn, covered);
        }
        builder.finish(self.resumed.as_ref())
    }

    fn complete_one(&mut self, id: i64) {
        if self.buffer.remove(id).is_none() {
            return;
        }
        let at = self.txs.partition_point(|t| t.first_id <= id);
        if let Some(tx) = at.checked_sub(1).and_then(|i| self.txs.get_mut(i)) {
            tx.outstanding = tx.outstanding.saturating_sub(1);
        }
    }
}

impl Tx {
    fn ids(&self) -> std::ops::Range<i64> {
        self.first_id..self.first_id + self.len as i64
    }
}

/// The first id of a session: the time in nanoseconds, so no two sessions' ids meet (a session
/// would need more messages than nanoseconds passed before the next one started). A progress
/// recorded in ids by mistake (a store wrapper that does not forward
/// [`Store::stream_positions`]) then matches nothing after a restart, and messages are sent
/// again instead of being skipped.
fn first_session_id() -> i64 {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX / 2);
    nanos.clamp(1, i64::MAX / 2)
}

/// A UUID (version 8, custom) for the message at `index` of the transaction whose commit starts
/// at `start`: the id of a message whose envelope could not be read, stable across replays.
fn position_id(start: Lsn, index: u32) -> Uuid {
    let mut bytes = [0u8; 16];
    for (to, from) in bytes
        .iter_mut()
        .zip(start.0.to_be_bytes().into_iter().chain(index.to_be_bytes()))
    {
        *to = from;
    }
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// PostgreSQL's epoch (2000-01-01) plus microseconds.
fn pg_time(micros: i64) -> DateTime<Utc> {
    let epoch = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    epoch + chrono::Duration::microseconds(micros)
}

fn replication_config(url: &str, config: &WalConfig) -> Result<ReplicationConfig> {
    let bad = |why: &str| {
        Error::Config(format!(
            "invalid database URL for the replication connection ({why}): use postgres://user:password@host:port/database"
        ))
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(bad("the scheme is not postgres://"));
    }
    let decode = percent_decode;
    let host = match parsed.host().ok_or_else(|| bad("no host"))? {
        url::Host::Domain(name) => decode(name),
        url::Host::Ipv4(ip) => ip.to_string(),
        // Without the brackets of the URL form.
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    let user = decode(parsed.username());
    let password = parsed.password().map(decode).unwrap_or_default();
    let database = decode(parsed.path().trim_start_matches('/'));
    let database = if database.is_empty() {
        user.clone()
    } else {
        database
    };
    let tls = tls_config(&parsed, &host)?;
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        config.slot.clone(),
        config.publication.clone(),
    )
    .with_port(parsed.port().unwrap_or(5432))
    .with_tls(tls)
    .with_status_interval(config.status_interval)
    .with_wakeup_interval(config.status_interval)
    .with_application_name(format!("txoutbox-wal-{}", config.slot)))
}

/// The URL's libpq TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) as the
/// replication client's TLS settings, meaning what they mean to libpq (and to the sqlx pool that
/// shares the URL):
///
/// - no `sslmode`: `prefer` (libpq's default), or `verify-full` with `sslrootcert=system`;
/// - `disable`: plain text; `allow` and `prefer`: TLS when the server offers it, without
///   verification, plain text otherwise (`allow` tries TLS first, where libpq tries plain text
///   first: either way either is accepted);
/// - `require`: TLS without verification, but with `sslrootcert` given it verifies the chain, as
///   libpq does (`verify-ca`);
/// - `verify-ca`: the chain is verified against `sslrootcert`; `verify-full` also checks the
///   host name (or IP address) of the URL against the certificate. Without `sslrootcert` both
///   trust the Mozilla roots bundled with the client (webpki-roots; libpq reads
///   `~/.postgresql/root.crt` instead); `sslrootcert=system` also means those roots and requires
///   `verify-full`, as in libpq;
/// - `sslcert` + `sslkey`: a client certificate (both or neither).
fn tls_config(url: &url::Url, host: &str) -> Result<TlsConfig> {
    let param = |name: &str| {
        url.query_pairs()
            .filter(|(k, _)| k == name)
            .last()
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    };
    let root = param("sslrootcert");
    let system = root.as_deref() == Some("system");
    let mode = match param("sslmode").as_deref() {
        None if system => SslMode::VerifyFull,
        None | Some("allow" | "prefer") => SslMode::Prefer,
        Some("disable") => return Ok(TlsConfig::disabled()),
        Some("require") if root.is_some() => SslMode::VerifyCa,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some(other) => {
            return Err(Error::Config(format!(
                "invalid sslmode {other:?} in the database URL: use disable, allow, prefer, require, \
                 verify-ca or verify-full"
            )));
        }
    };
    if system && mode != SslMode::VerifyFull {
        return Err(Error::Config(
            "sslrootcert=system needs sslmode=verify-full (as in libpq): a weaker sslmode would trust \
             any server certificate signed by a public CA for any host"
                .into(),
        ));
    }
    let (cert, key) = (param("sslcert"), param("sslkey"));
    if cert.is_some() != key.is_some() {
        return Err(Error::Config(
            "the database URL gives only one of sslcert and sslkey: a client certificate needs both \
             (PEM files; the key unencrypted)"
                .into(),
        ));
    }
    let mut tls = TlsConfig {
        mode,
        ca_pem_path: root.filter(|_| !system).map(Into::into),
        sni_hostname: None,
        client_cert_pem_path: cert.map(Into::into),
        client_key_pem_path: key.map(Into::into),
    };
    if mode == SslMode::VerifyFull && host.parse::<std::net::IpAddr>().is_ok() {
        // An IP address in the URL: verified against the certificate's IP addresses (as libpq
        // 14+ does); the client refuses an IP host for verify-full unless named explicitly.
        tls.sni_hostname = Some(host.to_owned());
    }
    Ok(tls)
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

/// active, confirmed_flush_lsn, lag bytes, wal_status, safe_wal_size, max_slot_wal_keep_size.
type SlotRow = (
    bool,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// Reads the slot of `config` from `pg_replication_slots` (no replication connection needed).
pub(crate) async fn slot_status(pool: &PgPool, config: &WalConfig) -> Result<SlotStatus> {
    let row: Option<SlotRow> = sqlx::query_as(
        "SELECT active, confirmed_flush_lsn::text, \
           (pg_current_wal_lsn() - coalesce(confirmed_flush_lsn, restart_lsn))::bigint, \
           wal_status, safe_wal_size, \
           nullif(pg_size_bytes(current_setting('max_slot_wal_keep_size')), -1) \
         FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
    )
    .bind(&config.slot)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let Some((active, confirmed, lag, wal_status, safe, keep)) = row else {
        return Err(missing_slot(config));
    };
    Ok(SlotStatus {
        slot: config.slot.clone(),
        active,
        confirmed_lsn: confirmed,
        lag_bytes: lag.unwrap_or(0).max(0) as u64,
        wal_status: wal_status.unwrap_or_default(),
        safe_wal_size: safe,
        max_slot_wal_keep_size: keep.filter(|&k| k >= 0),
        buffered: 0,
    })
}

/// What [`PgWalStore::slot_status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// The slot's name.
    pub slot: String,
    /// Whether a session streams the slot now.
    pub active: bool,
    /// The position the relay confirmed last (`confirmed_flush_lsn`).
    pub confirmed_lsn: Option<String>,
    /// WAL written since the confirmed position, in bytes: what the slot keeps on disk.
    pub lag_bytes: u64,
    /// `reserved`, `extended`, `unreserved` (at risk) or `lost` (invalidated: messages are gone).
    pub wal_status: String,
    /// Bytes of WAL that may still be written before the slot is invalidated
    /// (`max_slot_wal_keep_size`); `None` when unlimited.
    pub safe_wal_size: Option<i64>,
    /// The server's `max_slot_wal_keep_size` in bytes; `None` when unlimited (`-1`).
    pub max_slot_wal_keep_size: Option<i64>,
    /// Messages this store holds decoded, not yet completed (0 when read without a store).
    pub buffered: usize,
}

/// Below this share of `max_slot_wal_keep_size` left (`safe_wal_size`), a slot is reported at
/// risk by [`SlotStatus::problems`] unless a threshold is given: 20 %.
pub const DEFAULT_SAFE_WAL_SHARE: f64 = 0.2;

impl SlotStatus {
    /// Whether PostgreSQL invalidated the slot (`wal_status = lost`): the WAL it needed is gone.
    pub fn is_lost(&self) -> bool {
        self.wal_status == "lost"
    }

    /// What is wrong with the slot, one sentence per problem (empty when it is fine), each
    /// saying what to do:
    /// - `wal_status = lost`: invalidated, messages since its confirmed position are gone;
    /// - `wal_status = unreserved`: it keeps more WAL than `max_slot_wal_keep_size` and will be
    ///   invalidated at the next checkpoint unless the relay catches up;
    /// - `safe_wal_size` below `min_safe_wal_size` (default: [`DEFAULT_SAFE_WAL_SHARE`] of
    ///   `max_slot_wal_keep_size`): it will be invalidated soon if the lag keeps growing.
    pub fn problems(&self, min_safe_wal_size: Option<u64>) -> Vec<String> {
        let slot = &self.slot;
        let mb = |bytes: f64| format!("{:.1} MB", bytes / 1_048_576.0);
        let mut problems = Vec::new();
        match self.wal_status.as_str() {
            "lost" => problems.push(format!(
                "the replication slot {slot:?} was invalidated (wal_status lost: it kept more WAL than \
                 max_slot_wal_keep_size allows): messages committed since its last confirmed position are \
                 gone from the WAL and will not be relayed. Re-publish them from the application's data, \
                 then recreate the slot (txoutbox wal drop-slot --confirm; txoutbox migrate --source wal)"
            )),
            "unreserved" => problems.push(format!(
                "the replication slot {slot:?} keeps more WAL than max_slot_wal_keep_size (wal_status \
                 unreserved, {} behind): PostgreSQL invalidates it at the next checkpoint unless the relay \
                 catches up; fix the relay or Kafka now, or raise max_slot_wal_keep_size",
                mb(self.lag_bytes as f64)
            )),
            _ => {}
        }
        let threshold = min_safe_wal_size.map(|t| t as f64).or_else(|| {
            self.max_slot_wal_keep_size
                .map(|keep| keep as f64 * DEFAULT_SAFE_WAL_SHARE)
        });
        if let (Some(safe), Some(threshold), false) = (self.safe_wal_size, threshold, self.is_lost())
            && (safe as f64) < threshold
            && self.wal_status != "unreserved"
        {
            problems.push(format!(
                "only {} of WAL may still be written before PostgreSQL invalidates the replication slot \
                 {slot:?} (safe_wal_size, below the warning threshold of {}; {} behind): make the relay \
                 catch up or raise max_slot_wal_keep_size",
                mb(safe.max(0) as f64),
                mb(threshold),
                mb(self.lag_bytes as f64)
            ));
        }
        problems
    }
}

fn missing_slot(config: &WalConfig) -> Error {
    Error::Config(format!(
        "the replication slot {:?} does not exist: run the migrations first (`txoutbox migrate \
         --source wal`, or PgWalOutbox::migrate)",
        config.slot
    ))
}

/// The invalidated slot's message: the cause and the recovery.
fn lost_slot(config: &WalConfig, detail: &str) -> String {
    format!(
        "the replication slot {:?} was invalidated (wal_status lost: it kept more WAL than \
         max_slot_wal_keep_size allows){detail}: messages committed since its last confirmed position are \
         gone from the WAL, and the relay will not skip them silently. Re-publish them from the \
         application's data, then recreate the slot: `txoutbox wal drop-slot --confirm` and \
         `txoutbox migrate --source wal` (or PgWalOutbox::drop_slot and migrate)",
        config.slot
    )
}

/// Decodes `%XX` escapes of a URL part.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Streams the slot until aborted, reconnecting after transient failures.
async fn stream(shared: Arc<Shared>) {
    let mut delay = Duration::from_millis(100);
    let deadline = shared
        .config
        .takeover_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let mut standing_by = false;
    loop {
        let started = session(&shared).await;
        let error = match started {
            Ok(()) => return,
            Err(e) => e,
        };
        let fatal = error.fatal;
        // SQLSTATE 55006: another session streams the slot.
        let in_use = error.message.contains("55006");
        let streamed = shared.status.borrow().eq(&StreamStatus::Streaming);
        if fatal || (in_use && !streamed && deadline.is_some_and(|d| tokio::time::Instant::now() >= d)) {
            tracing::error!(slot = %shared.config.slot, error = %error.message, "WAL relay stopped");
            shared.status.send_replace(StreamStatus::Failed(error.message));
            return;
        }
        if in_use && !streamed {
            // A standby: say so once, not at every retry.
            if !standing_by {
                tracing::info!(
                    slot = %shared.config.slot, error = %error.message,
                    "another relay streams the slot; standing by to take over when its session ends"
                );
                standing_by = true;
            }
        } else {
            tracing::warn!(slot = %shared.config.slot, error = %error.message, retry_in = %txoutbox_core::HumanDuration(delay), "replication stream interrupted");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

struct StreamError {
    message: String,
    fatal: bool,
}

fn classify(error: pgwire_replication::PgWireError, shared: &Shared) -> StreamError {
    let config = &shared.config;
    let message = error.to_string();
    // PostgreSQL 13-15 refuse to stream an invalidated slot with "cannot read from logical
    // replication slot" (SQLSTATE 55000; the reason is in the detail), raised for nothing else.
    let lost = message.contains("can no longer get changes")
        || message.contains("cannot read from logical replication slot")
        || message.contains("invalidated");
    let missing = message.contains("does not exist");
    let auth = matches!(error, pgwire_replication::PgWireError::Auth(_))
        || message.contains("28000")
        || message.contains("42501");
    // A certificate refused, a server without TLS, unreadable PEM files: settings to fix, not
    // something a retry mends (a connection cut during the handshake is retried).
    let tls = matches!(error, pgwire_replication::PgWireError::Tls(_))
        && ["certificate", "config error", "SSLRequest", "SNI", "alert"]
            .iter()
            .any(|m| message.contains(m));
    let message = if tls {
        format!(
            "{message}: the replication connection's TLS (sslmode={}) failed. Check sslrootcert (the CA \
             that signed the server's certificate), that the URL's host is in the certificate \
             (verify-full), sslcert/sslkey, and that the server has ssl = on",
            ssl_mode_name(shared.replication.tls.mode)
        )
    } else if lost {
        lost_slot(config, &format!(" ({message})"))
    } else if missing {
        format!(
            "{message}: create the slot and publication with `txoutbox migrate --source wal` (or PgWalOutbox::migrate)"
        )
    } else if auth {
        format!(
            "{message}: the replication connection needs a role with the REPLICATION attribute and a pg_hba.conf `replication` entry"
        )
    } else {
        message
    };
    StreamError {
        message,
        fatal: lost || missing || auth || tls,
    }
}

/// libpq's name of the mode the client uses (`allow` shows as `prefer`).
fn ssl_mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

/// A transaction being decoded.
enum Building {
    /// Its messages are gathered until its commit is read (the usual case).
    Gathering {
        start: Lsn,
        commit_time: DateTime<Utc>,
        messages: Vec<Decoded>,
        bytes: usize,
    },
    /// Too large to gather: its messages go to the buffer as they come (the last `Tx`, open).
    /// `index` counts its messages so far; the first `taken` were taken before a reconnect.
    Streaming {
        start: Lsn,
        commit_time: DateTime<Utc>,
        index: u32,
        taken: usize,
    },
    /// Taken whole before a reconnect: its replay is ignored.
    Replayed,
}

/// One outbox message of a transaction being decoded. A message larger than the sink takes is
/// kept whole here (its dead letter keeps its payload, so it can be replayed once the limit is
/// raised): the buffer counts its bytes, and the relay's reads return it without its contents.
enum Decoded {
    /// Ready to send.
    Envelope(envelope::Envelope),
    /// Not a valid envelope: why, and the raw bytes.
    Unreadable(String, Bytes),
}

impl Decoded {
    /// Decodes a logical message's content.
    fn new(content: &Bytes, topics: &mut Interner) -> Self {
        match envelope::decode_with(content, topics) {
            Ok(e) => Self::Envelope(e),
            Err(reason) => Self::Unreadable(reason, content.clone()),
        }
    }
}

/// One replication session: connect, stream, return on error.
async fn session(shared: &Shared) -> std::result::Result<(), StreamError> {
    let config = &shared.config;
    let confirmed = shared.state.lock().unwrap_or_else(|p| p.into_inner()).confirmed;
    let mut replication = shared.replication.clone();
    if confirmed > Lsn::ZERO {
        replication = replication.with_ack_lsn(confirmed);
    }
    let mut client = ReplicationClient::connect(replication)
        .await
        .map_err(|e| classify(e, shared))?;
    client.wait_started().await.map_err(|e| classify(e, shared))?;
    shared.status.send_replace(StreamStatus::Streaming);
    tracing::info!(slot = %config.slot, "streaming the replication slot");
    let mut confirm = shared.confirm.subscribe();
    let sync_prefix = format!("{}.sync", config.prefix);
    let mut building: Option<Building> = None;
    let mut topics = Interner::new();
    loop {
        // Back-pressure: stop reading while the buffer is full.
        loop {
            let space = shared.space.notified();
            let full = shared.is_full(&shared.state.lock().unwrap_or_else(|p| p.into_inner()));
            if !full {
                break;
            }
            tokio::select! {
                _ = space => {}
                changed = confirm.changed() => if changed.is_ok() {
                    client.update_applied_lsn(*confirm.borrow_and_update());
                },
            }
        }
        let event = tokio::select! {
            event = client.recv() => event.map_err(|e| classify(e, shared))?,
            changed = confirm.changed() => {
                if changed.is_ok() {
                    client.update_applied_lsn(*confirm.borrow_and_update());
                }
                continue;
            }
        };
        let Some(event) = event else {
            return Err(StreamError {
                message: "the replication stream ended".into(),
                fatal: false,
            });
        };
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                building = Some(begin(shared, final_lsn, pg_time(commit_time_micros)));
            }
            ReplicationEvent::Message {
                transactional,
                lsn,
                prefix,
                content,
            } => {
                if transactional && prefix == config.prefix {
                    if let Some(b) = building.as_mut() {
                        take_message(shared, b, &content, &mut topics);
                    }
                } else if !transactional && prefix == sync_prefix {
                    shared.received.send_if_modified(|r| raise(r, lsn));
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                match building.take() {
                    Some(Building::Gathering {
                        start,
                        commit_time,
                        messages,
                        ..
                    }) => take_transaction(shared, messages, commit_time, start, end_lsn),
                    Some(Building::Streaming { .. }) => close_streamed(shared, end_lsn),
                    Some(Building::Replayed) | None => {}
                }
                shared.received.send_if_modified(|r| raise(r, end_lsn));
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                if building.is_none() {
                    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    // Nothing outstanding: everything before wal_end is done (transactions of
                    // other tables are not even sent), so the slot may move on.
                    if state.txs.is_empty() && wal_end > state.confirmed {
                        state.confirmed = wal_end;
                        state.last_commit_end = state.last_commit_end.max(wal_end);
                        shared.confirm.send_replace(wal_end);
                    }
                }
                shared.received.send_if_modified(|r| raise(r, wal_end));
            }
            ReplicationEvent::XLogData { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
    }
}

fn raise(r: &mut Lsn, to: Lsn) -> bool {
    if to > *r {
        *r = to;
        true
    } else {
        false
    }
}

/// What a transaction that begins now is to the stream: ignored (a replay of one taken whole),
/// continued (the replay of the one that was streaming), or gathered.
fn begin(shared: &Shared, start: Lsn, commit_time: DateTime<Utc>) -> Building {
    let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    // A commit starting below the end of the last one taken was taken already.
    if start < state.last_commit_end {
        return Building::Replayed;
    }
    match state.txs.back() {
        Some(tx) if tx.end_lsn.is_none() && tx.start == start => Building::Streaming {
            start,
            commit_time,
            index: 0,
            taken: tx.len,
        },
        _ => Building::Gathering {
            start,
            commit_time,
            messages: Vec::new(),
            bytes: 0,
        },
    }
}

/// Takes one of a transaction's messages: gathered, or streamed into the buffer; a gathering
/// that grows past a quarter of the buffer's limits starts streaming (once the relay reads, and
/// unless an exactly-once progress of format 1 still has to be matched by commit ends).
fn take_message(shared: &Shared, building: &mut Building, content: &Bytes, topics: &mut Interner) {
    match building {
        Building::Replayed => {}
        Building::Streaming {
            index,
            taken,
            start,
            commit_time,
        } => {
            let at = *index;
            *index = index.saturating_add(1);
            if usize::try_from(at).is_ok_and(|at| at < *taken) {
                return;
            }
            let decoded = Decoded::new(content, topics);
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            stream_message(&mut state, decoded, *start, *commit_time, at);
            drop(state);
            shared.arrived.notify_one();
        }
        Building::Gathering {
            start,
            commit_time,
            messages,
            bytes,
        } => {
            messages.push(Decoded::new(content, topics));
            *bytes = bytes.saturating_add(content.len());
            let config = &shared.config;
            let large = *bytes > config.max_buffered_bytes / 4 || messages.len() > config.max_buffered / 4;
            if !large {
                return;
            }
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let Some(covered) = state
                .reading
                .then(|| {
                    state
                        .skip
                        .as_ref()
                        .map_or(Some(Covered::Nothing), |s| s.covered(*start, None))
                })
                .flatten()
            else {
                return;
            };
            let first_id = state.next_id;
            state.txs.push_back(Tx {
                first_id,
                len: 0,
                outstanding: 0,
                start: *start,
                end_lsn: None,
                covered,
            });
            tracing::debug!(start = %start, messages = messages.len(), "a large transaction: streaming its messages");
            let gathered = std::mem::take(messages);
            let count = u32::try_from(gathered.len()).unwrap_or(u32::MAX);
            for (decoded, at) in gathered.into_iter().zip(0u32..) {
                stream_message(&mut state, decoded, *start, *commit_time, at);
            }
            drop(state);
            shared.arrived.notify_one();
            *building = Building::Streaming {
                start: *start,
                commit_time: *commit_time,
                index: count,
                taken: 0,
            };
        }
    }
}

/// Adds message `index` of the streaming transaction (the last one) to the buffer, unless its
/// exactly-once progress says Kafka holds it already.
fn stream_message(state: &mut State, decoded: Decoded, start: Lsn, commit_time: DateTime<Utc>, index: u32) {
    let id = state.next_id;
    state.next_id += 1;
    let Some(tx) = state.txs.back_mut() else {
        return;
    };
    tx.len += 1;
    let skipped = match &tx.covered {
        Covered::Nothing => false,
        Covered::All => true,
        Covered::Some(runs) => in_runs(runs, index),
    };
    if skipped {
        return;
    }
    tx.outstanding += 1;
    state
        .buffer
        .push(message_of(decoded, id, commit_time, start, index));
}

/// A decoded message under its id: ready to send, or dead-lettered at once with the reason (an
/// unreadable envelope is named by its position, the same on every replay).
fn message_of(
    decoded: Decoded,
    id: i64,
    commit_time: DateTime<Utc>,
    start: Lsn,
    index: u32,
) -> OutboxMessage {
    match decoded {
        Decoded::Envelope(e) => OutboxMessage {
            id,
            message_id: message_id_text(&e.message_id),
            topic: e.topic,
            key: e.key,
            payload: e.payload,
            headers: e.headers.into(),
            created_at: commit_time,
            attempts: 0,
            next_attempt_at: None,
            bucket: 0,
            malformed: None,
        },
        Decoded::Unreadable(reason, raw) => {
            let mut m = OutboxMessage::unreadable(id, format!("unreadable WAL envelope: {reason}"));
            // Its own id is in the unreadable envelope: one made of its position names its dead
            // letter (the table row and the dead-letter topic's copy alike), the same on every
            // replay of the slot.
            m.message_id = message_id_text(&position_id(start, index));
            m.payload = Some(raw);
            m.created_at = commit_time;
            m
        }
    }
}

/// The streaming transaction's commit: it is whole now, and may be confirmed once done.
fn close_streamed(shared: &Shared, end_lsn: Lsn) {
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = state.txs.back_mut()
        && tx.end_lsn.is_none()
    {
        tx.end_lsn = Some(end_lsn);
    }
    state.last_commit_end = state.last_commit_end.max(end_lsn);
    if let Some(mut skip) = state.skip.take() {
        state.skip = skip.prune(end_lsn).then_some(skip);
    }
    if let Some(to) = state.advance() {
        shared.confirm.send_replace(to);
    }
}

/// Buffers a committed transaction's messages under fresh ids (unless a replay after a
/// reconnect brought it again).
fn take_transaction(
    shared: &Shared,
    messages: Vec<Decoded>,
    commit_time: DateTime<Utc>,
    start: Lsn,
    end_lsn: Lsn,
) {
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if end_lsn <= state.last_commit_end {
        return;
    }
    state.last_commit_end = end_lsn;
    // Delivered in an earlier session, by its exactly-once progress: skipped, not read again.
    let covered = state
        .skip
        .as_ref()
        .and_then(|s| s.covered(start, Some(end_lsn)))
        .unwrap_or(Covered::Nothing);
    if let Some(mut skip) = state.skip.take() {
        state.skip = skip.prune(end_lsn).then_some(skip);
    }
    let first_id = state.next_id;
    let len = messages.len();
    let mut n = 0;
    for (decoded, index) in messages.into_iter().zip(0u32..) {
        let id = state.next_id;
        state.next_id += 1;
        let skipped = match &covered {
            Covered::Nothing => false,
            Covered::All => true,
            Covered::Some(runs) => in_runs(runs, index),
        };
        if skipped {
            continue;
        }
        n += 1;
        let message = message_of(decoded, id, commit_time, start, index);
        state.buffer.push(message);
    }
    state.txs.push_back(Tx {
        first_id,
        len,
        outstanding: n,
        start,
        end_lsn: Some(end_lsn),
        covered: Covered::Nothing,
    });
    if let Some(to) = state.advance() {
        shared.confirm.send_replace(to);
    }
    drop(state);
    if n > 0 {
        shared.arrived.notify_one();
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
    use super::*;

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
