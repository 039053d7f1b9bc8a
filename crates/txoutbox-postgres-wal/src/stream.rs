//! The streaming task: reads the slot, decodes the outbox's logical messages into the buffer
//! in commit order, and reconnects after transient failures.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use txoutbox_core::{Interner, OutboxMessage, message_id_text};

use crate::connection::ssl_mode_name;
use crate::envelope;
use crate::positions::{Covered, in_runs};
use crate::slot::lost_slot;
use crate::state::{Shared, State, StreamStatus, Tx, pg_time, position_id};

/// Streams the slot until aborted, reconnecting after transient failures.
pub(crate) async fn stream(shared: Arc<Shared>) {
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

pub(crate) struct StreamError {
    pub(crate) message: String,
    pub(crate) fatal: bool,
}

pub(crate) fn classify(error: pgwire_replication::PgWireError, shared: &Shared) -> StreamError {
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

/// A transaction being decoded.
pub(crate) enum Building {
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
pub(crate) enum Decoded {
    /// Ready to send.
    Envelope(envelope::Envelope),
    /// Not a valid envelope: why, and the raw bytes.
    Unreadable(String, Bytes),
}

impl Decoded {
    /// Decodes a logical message's content.
    pub(crate) fn new(content: &Bytes, topics: &mut Interner) -> Self {
        match envelope::decode_with(content, topics) {
            Ok(e) => Self::Envelope(e),
            Err(reason) => Self::Unreadable(reason, content.clone()),
        }
    }
}

/// One replication session: connect, stream, return on error.
pub(crate) async fn session(shared: &Shared) -> std::result::Result<(), StreamError> {
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

pub(crate) fn raise(r: &mut Lsn, to: Lsn) -> bool {
    if to > *r {
        *r = to;
        true
    } else {
        false
    }
}

/// What a transaction that begins now is to the stream: ignored (a replay of one taken whole),
/// continued (the replay of the one that was streaming), or gathered.
pub(crate) fn begin(shared: &Shared, start: Lsn, commit_time: DateTime<Utc>) -> Building {
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
pub(crate) fn take_message(shared: &Shared, building: &mut Building, content: &Bytes, topics: &mut Interner) {
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
pub(crate) fn stream_message(
    state: &mut State,
    decoded: Decoded,
    start: Lsn,
    commit_time: DateTime<Utc>,
    index: u32,
) {
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
pub(crate) fn message_of(
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
pub(crate) fn close_streamed(shared: &Shared, end_lsn: Lsn) {
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
pub(crate) fn take_transaction(
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
