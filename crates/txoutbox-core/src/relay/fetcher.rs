//! The fetcher: reads pending rows in id order and hands sendable ones to the sink, pipelined.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{Instrument, debug_span, warn};

use super::backoff::Backoff;
use super::batches::Selected;
use super::config::OnDeadLetter;
use super::select::select_sendable;
use super::shared::Shared;
use crate::coordination::Scope;
use crate::message::OutboxMessage;
use crate::sink::Sink;
use crate::store::{ReadLimit, Store};

/// Runs until shutdown; dropping `sender` when it returns lets the sender and completer drain.
///
/// **Awake and asleep.** The fetcher tells the store ([`Store::relay_awake`]) when it goes to
/// sleep (a read found nothing to send and it is about to wait for a wake-up or its poll
/// interval) and when it wakes and finds rows to send; only on these transitions, never on
/// every loop. PostgreSQL's notify trigger stays silent while the relay is awake, so busy
/// writers do not pay for notifications nobody waits for. The races, and why none loses a row:
///
/// - A writer's trigger decides at insert time, before the writer commits. A writer that inserts
///   just before the fetcher declares itself asleep does not notify, and commits just after:
///   therefore the fetcher reads **once more** after declaring itself asleep, and only then
///   waits. A writer that committed before that read is found by it; one that inserts after the
///   declaration notifies.
/// - What remains: a transaction that inserted while the relay was awake (no notification) and
///   commits only after the relay declared itself asleep **and** read once more (a long
///   transaction, or one whose snapshot predates the declaration) wakes nobody. The poll
///   interval covers it: such a row waits at most one interval. Nothing is lost; the rows are
///   the truth, the flag only decides whether a wake-up is pushed.
/// - A failed declaration is only logged: a stale "awake" delays new rows by at most one poll
///   interval, a stale "asleep" only costs writers their notification.
/// - At start (and whenever a coordinated relay's scope falls to nothing) the fetcher has
///   declared nothing, so its first transition is always written: a relay killed while awake
///   leaves the flag "awake", and its successor resets it at its first read. Until then that
///   successor is reading, not waiting.
/// - Several relays share the one flag. A standby without a lease declares nothing. A
///   work-balance node never declares itself awake, only asleep: another node's "awake" would
///   otherwise silence the notifications a sleeping node waits for, so in that mode writers keep
///   notifying whenever any node slept last. The exclusive lease holder (and a single relay)
///   declares both.
pub(crate) async fn run<S: Store, K: Sink>(shared: Arc<Shared<S, K>>, sender: mpsc::Sender<Selected>) {
    let config = &shared.config;
    // Rows larger than the sink takes are read without their contents.
    let message_bytes = shared.sink.max_message_bytes().unwrap_or(usize::MAX);
    // The relay never schedules a retry further ahead than this: a later `next_attempt_at` is a
    // writer's, and would hold the row and its key back for as long.
    let retry_horizon = chrono::TimeDelta::from_std(config.retry.max_backoff.saturating_mul(2))
        .unwrap_or(chrono::TimeDelta::MAX)
        .max(chrono::TimeDelta::days(1));
    let mut db_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // Where reading goes on from; `None` reads from the start (at start, after failures, when a
    // held key is released, and once per poll interval after a pass reached the end, as a safety net).
    let mut cursor: Option<i64> = None;
    let mut last_rescan = tokio::time::Instant::now();
    // Whether the pass that began at the last read from the start reached the end of the pending
    // rows. The periodic rescan waits for it: restarting every poll interval would starve the
    // rows behind more held or parked rows than one interval's reads get past.
    let mut reached_end = true;
    let mut last_parked_reload = tokio::time::Instant::now();
    // Buckets were taken over and the parked keys not read since: the keys their previous owner
    // parked are unknown, so nothing is read until they are.
    let mut parked_unknown = false;
    let mut idle = false;
    // What this relay last told the store (awake or asleep); `None`: nothing yet, so the first
    // transition is written whatever a previous relay left behind.
    let mut declared: Option<bool> = None;
    // A batch went to the sender without the end of its burst: the sink may be gathering it (a
    // Kafka transaction) and must hear when nothing more follows.
    let mut burst_open = false;
    loop {
        if idle {
            let (released, next_due) = shared.release_due_holds(crate::clock::now());
            let wait = next_due
                .and_then(|at| (at - crate::clock::now()).to_std().ok())
                .map_or(config.poll_interval, |d| d.min(config.poll_interval));
            if released {
                cursor = None;
            } else {
                tokio::select! {
                    biased;
                    _ = shared.cancel.cancelled() => break,
                    _ = shared.wake.notified() => {}
                    _ = ownership_changed(&shared) => {}
                    _ = tokio::time::sleep(wait) => cursor = None,
                }
            }
        }
        if shared.cancel.is_cancelled() {
            break;
        }
        // Paused after transient failures, until the pause ends or the transport delivers again
        // (a stale wake-up only looks at the pause once more).
        let mut stopping = false;
        while let Some(until) = shared.paused_until() {
            tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => {
                    stopping = true;
                    break;
                }
                _ = tokio::time::sleep_until(until) => {}
                _ = shared.resumed.notified() => {}
            }
        }
        if stopping {
            break;
        }
        // Also rescan once per poll interval under load, once the current pass reached the end:
        // rows made pending again behind the cursor by hand (an operator's UPDATE) are found
        // within one interval of the relay catching up, busy or idle.
        if let Some(ownership) = &shared.ownership {
            if ownership.take_changed() {
                cursor = None;
                parked_unknown = true;
            }
            // Nothing leased (yet), or the leases may have ended (they could not be renewed in
            // time): nothing to read, or nothing that could be sent.
            #[cfg(not(txoutbox_sim_mutant = "refusal_keeps_epoch"))]
            let idle_now = ownership.scope() == Scope::Nothing || !ownership.may_send();
            // The mutant reads on while it may not send, as the relay did before.
            #[cfg(txoutbox_sim_mutant = "refusal_keeps_epoch")]
            let idle_now = ownership.scope() == Scope::Nothing;
            if idle_now {
                declared = None;
                idle = true;
                continue;
            }
        }
        // Parked keys are read again once per poll interval: a replay or purge made elsewhere (the
        // CLI, another node) releases its key, and the rows it held wait below the cursor.
        // A node that took over buckets reads them only once it knows the keys their previous
        // owner parked.
        #[cfg(txoutbox_sim_mutant = "takeover_ignores_parked")]
        {
            parked_unknown = false;
        }
        if config.on_dead_letter == OnDeadLetter::ParkKey
            && (parked_unknown || last_parked_reload.elapsed() >= config.poll_interval)
        {
            last_parked_reload = tokio::time::Instant::now();
            match reload_parked(&shared).await {
                Ok(reloaded) => {
                    if reloaded {
                        cursor = None;
                    }
                    parked_unknown = false;
                }
                Err(error) if parked_unknown => {
                    warn!(%error, "could not read the parked keys; reading the buckets taken over waits for them");
                    if !shared.sleep(db_backoff.next_delay()).await {
                        break;
                    }
                    idle = false;
                    continue;
                }
                Err(error) => warn!(%error, "could not read the parked keys; keeping the ones known"),
            }
        }
        // Taken before the rescan request is: a key let go from here on is caught after the read.
        let releases = shared.releases();
        if shared.take_rescan()
            || shared.release_due_holds(crate::clock::now()).0
            || (last_rescan.elapsed() >= config.poll_interval && reached_end)
        {
            cursor = None;
        }
        if cursor.is_none() {
            last_rescan = tokio::time::Instant::now();
            reached_end = false;
        }

        // The epoch is read before the drain check: if a failure moves it on in between, this
        // read's selection carries the older epoch and the sender gives it up (it could
        // otherwise pass over failed rows that are still in flight and send later rows of their
        // keys).
        #[cfg(not(txoutbox_sim_mutant = "epoch_after_drain"))]
        let epoch = shared.epoch();
        // After a transient failure, wait for everything in flight to settle before reading:
        // rows of the failed keys that are still queued must fail (or land) first.
        if shared.take_drain() {
            cursor = None;
            while !shared.in_flight.is_empty() {
                tokio::select! {
                    biased;
                    _ = shared.cancel.cancelled() => return,
                    _ = shared.settled.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }

        // The mutant reads it after the drain, as the relay did before 1e5024b.
        #[cfg(txoutbox_sim_mutant = "epoch_after_drain")]
        let epoch = shared.epoch();

        // Rows in flight are still pending in the table: a read from the start passes over them;
        // a read from the cursor is past them already.
        let in_flight = shared.in_flight.begin_fetch();
        let cursor_before = cursor;
        let span = debug_span!("txoutbox.claim", after = cursor);
        let budget = ReadLimit::rows(config.batch_size)
            .with_bytes(config.max_batch_bytes)
            .with_message_bytes(message_bytes);
        let fetched = match cursor {
            None => {
                let limit = ReadLimit {
                    rows: config.batch_size + in_flight,
                    ..budget
                };
                shared
                    .bounded(shared.store.fetch_pending(limit))
                    .instrument(span)
                    .await
            }
            Some(after) => {
                shared
                    .bounded(shared.store.fetch_after(after, budget))
                    .instrument(span)
                    .await
            }
        };
        let rows = match fetched {
            Ok(rows) => {
                db_backoff.reset();
                shared.monitor.store_ok();
                rows
            }
            Err(error) => {
                shared.monitor.store_failed(&error);
                crate::metrics::record_store_error(shared.monitor.metric_labels(), "fetch");
                let delay = db_backoff.next_delay();
                if error.is_retryable() {
                    warn!(%error, retry_in = %crate::HumanDuration(delay), "could not read pending outbox messages");
                } else {
                    tracing::error!(%error, retry_in = %crate::HumanDuration(delay), "could not read pending outbox messages; this needs fixing by hand");
                }
                if !shared.sleep(delay).await {
                    break;
                }
                idle = false;
                continue;
            }
        };
        // A key was let go during this read (its failing row died): the read may hold the key's
        // later rows while earlier ones, deferred behind the dead row, are missing from it (below
        // the cursor, or hidden as rows that left the flight during the read). Read again from
        // the start instead (the release requested it).
        #[cfg(not(txoutbox_sim_mutant = "early_release"))]
        if shared.releases() != releases {
            cursor = None;
            idle = false;
            continue;
        }
        // A coordinated relay's scope grew during this read (the store reads the scope of the
        // moment): a read from the cursor may hold rows of a bucket just taken over while that
        // bucket's earlier rows, below the cursor, are missing from it. Read from the start.
        #[cfg(not(txoutbox_sim_mutant = "scope_grew_during_read"))]
        if cursor.is_some()
            && let Some(ownership) = &shared.ownership
            && ownership.take_changed()
        {
            cursor = None;
            parked_unknown = true;
            idle = false;
            continue;
        }
        let mut rows = rows;
        refuse_far_retries(&mut rows, retry_horizon);
        let fresh = rows.iter().filter(|r| cursor.is_none_or(|c| r.id > c)).count();
        // Only a read that brings nothing new ends a pass: one cut by its byte budget cannot tell
        // (the next row may be the one that did not fit), and ending the pass early sent the
        // relay back to the start, so rows behind enough held or parked ones were never read.
        // It costs one more read at the end of a burst.
        #[cfg(not(txoutbox_sim_mutant = "half_budget_end"))]
        let more = fresh > 0;
        #[cfg(txoutbox_sim_mutant = "half_budget_end")]
        let more = fresh >= config.batch_size + if cursor_before.is_none() { in_flight } else { 0 }
            || rows.iter().map(OutboxMessage::size).sum::<usize>() >= budget.bytes / 2;
        // The mutant restarts every poll interval, pass finished or not.
        #[cfg(not(txoutbox_sim_mutant = "rescan_restarts_pass"))]
        if !more {
            reached_end = true;
        }
        #[cfg(txoutbox_sim_mutant = "rescan_restarts_pass")]
        {
            reached_end = true;
        }
        let selection = select_sendable(
            rows,
            |id| shared.in_flight.contains(id),
            |topic, key| shared.is_held(topic, key),
            crate::clock::now(),
            config.batch_size,
        );
        for (key, until) in selection.holds {
            shared.hold(key, until);
        }
        if let Some(last) = selection.last_considered {
            cursor = Some(cursor.map_or(last, |c| c.max(last)));
        }
        let mut batch = selection.send;
        if let Some(allowed) = &config.allowed_topics {
            refuse_disallowed(allowed, &mut batch);
        }
        if batch.is_empty() && burst_open {
            burst_open = false;
            let Some(permit) = shared.in_flight.reserve(0, 0).await else {
                break;
            };
            let marker = Selected {
                rows: Arc::from(Vec::new()),
                permit,
                epoch,
                end_of_burst: true,
            };
            if sender.send(marker).await.is_err() {
                break;
            }
        }
        if batch.is_empty() {
            if !more && declared != Some(false) {
                // About to sleep: say so, then read once more before waiting (a row committed
                // between the read above and the declaration did not notify).
                declare(&shared, false).await;
                declared = Some(false);
                idle = false;
                continue;
            }
            idle = !more;
            // More to read, but this read brought nothing new to send and left the cursor where
            // it was (e.g. a byte budget cut among late rows still in flight): wait for some of
            // them to settle instead of reading the same rows again at once.
            if more && cursor == cursor_before {
                tokio::select! {
                    biased;
                    _ = shared.cancel.cancelled() => break,
                    _ = shared.settled.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            continue;
        }

        let bytes = batch.iter().map(OutboxMessage::size).sum();
        let permit = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            permit = shared.in_flight.reserve(batch.len(), bytes) => match permit {
                Some(permit) => permit,
                None => break,
            },
        };
        let batch = shared.enter_flight(batch);
        if batch.is_empty() {
            continue;
        }
        let rows: Arc<[OutboxMessage]> = batch.into();
        // The burst ends here when the read came back short or the next batch would not fit.
        let end_of_burst = !more
            || shared.in_flight.room() < config.batch_size
            || shared.in_flight.room_bytes() < config.max_batch_bytes;
        burst_open = !end_of_burst;
        let selected = Selected {
            rows,
            permit,
            epoch,
            end_of_burst,
        };
        if sender.send(selected).await.is_err() {
            break;
        }
        // Awake with rows to send (declared after handing the batch on, so it costs no latency).
        // A work-balance node never silences the writers: another node may be asleep.
        if declared != Some(true) {
            let buckets = shared
                .ownership
                .as_ref()
                .is_some_and(|o| matches!(o.scope(), Scope::Buckets(_)));
            if !buckets {
                declare(&shared, true).await;
            }
            declared = Some(true);
        }
        // Look again at once: a burst may have more rows than one batch.
        idle = false;
    }
}

/// Marks the rows whose `next_attempt_at` lies further ahead than the relay ever schedules a
/// retry (a foreign writer set it): they go to the sink now, which refuses them, and are
/// dead-lettered with the reason instead of holding their key back for months.
fn refuse_far_retries(rows: &mut [OutboxMessage], horizon: chrono::TimeDelta) {
    let Some(latest) = crate::clock::now().checked_add_signed(horizon) else {
        return;
    };
    for row in rows.iter_mut().filter(|row| row.malformed.is_none()) {
        if let Some(at) = row.next_attempt_at.filter(|at| *at > latest) {
            row.malformed = Some(
                crate::UnfitColumn::new(
                    "next_attempt_at",
                    format!(
                        "({}) lies further ahead than the relay schedules any retry: writers must leave it \
                     NULL",
                        at.to_rfc3339()
                    ),
                )
                .reason(),
            );
            row.next_attempt_at = None;
        }
    }
}

/// Marks the rows whose topic the allow-list does not name: the sink refuses them unsent and
/// they are dead-lettered at once with the reason.
fn refuse_disallowed(allowed: &super::AllowedTopics, batch: &mut [OutboxMessage]) {
    // Topics are shared between a read's rows: decide once per run of one topic.
    let mut last: Option<(Arc<str>, bool)> = None;
    for row in batch.iter_mut().filter(|row| row.malformed.is_none()) {
        let ok = match &last {
            Some((topic, ok)) if Arc::ptr_eq(topic, &row.topic) || **topic == *row.topic => *ok,
            _ => {
                let ok = allowed.allows(&row.topic);
                last = Some((Arc::clone(&row.topic), ok));
                ok
            }
        };
        if !ok {
            row.malformed = Some(allowed.refusal(&row.topic));
        }
    }
}

/// Tells the store whether the relay is awake; a failure is only logged, since the poll interval
/// still bounds how long a row waits for a wake-up that was not pushed.
async fn declare<S: Store, K>(shared: &Shared<S, K>, awake: bool) {
    if let Err(error) = shared.bounded(shared.store.relay_awake(awake)).await {
        warn!(
            %error,
            awake,
            "could not tell the outbox store whether the relay is awake; new messages may wait \
             up to the poll interval"
        );
    }
}

/// Reads the parked keys (those with a dead row) from the store; returns whether any was released.
pub(crate) async fn reload_parked<S: Store, K>(shared: &Shared<S, K>) -> crate::Result<bool> {
    let generation = shared.parked.generation();
    let keys = shared.bounded(shared.store.dead_keys()).await?;
    let keys = keys
        .into_iter()
        .map(|(topic, key)| (topic.into(), key.into()))
        .collect();
    Ok(shared.parked.reload(keys, generation))
}

/// Resolves when a coordinated relay's scope changes; never for a single relay.
async fn ownership_changed<S, K>(shared: &Shared<S, K>) {
    match &shared.ownership {
        Some(ownership) => ownership.changed().await,
        None => std::future::pending().await,
    }
}
