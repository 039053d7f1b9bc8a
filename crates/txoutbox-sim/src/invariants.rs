//! What must hold at the end of every run (checked on the broker's logs and the table, never on
//! the relay's own bookkeeping). Checked as they happen, elsewhere: no row is completed before
//! its acknowledgement (the store); no row is handed to the broker while an earlier row of its
//! key backs off or is parked (the sink, against the table); a graceful shutdown completes every
//! acknowledged row and leaves nothing queued (the schedule).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use txoutbox_core::OnDeadLetter;

use crate::record::{POISON, REFUSED};
use crate::table::{Row, RowState};
use crate::world::World;

/// A key of a topic.
type TopicKey = (String, Bytes);

/// Whether a row can never be delivered (it ends dead by design).
pub fn is_bad(row: &Row) -> bool {
    let payload = row.message.payload.as_deref().unwrap_or_default();
    row.message.malformed.is_some() || payload.starts_with(POISON) || payload.starts_with(REFUSED)
}

fn topic_key(row: &Row) -> Option<TopicKey> {
    Some((row.message.topic.to_string(), row.message.key.clone()?))
}

/// Checks the end state; returns the broken invariants.
///
/// - **None lost:** every committed row landed, or is dead — and a row that can be delivered is
///   not dead; a row that can never be is dead, not delivered.
/// - **Nothing from a rolled-back transaction** landed.
/// - **Exactly once:** in exactly-once mode no row landed (committed) twice.
/// - **Per-key order:** on each partition, the first landing of each row of a key comes in id
///   order (later copies — resends — are allowed: the delivery is at-least-once).
/// - **Parked keys stay parked:** with [`OnDeadLetter::ParkKey`], the rows behind a key's dead
///   row are still pending (that none was handed over is checked as it happens, by the sink).
/// - **No key blocks another:** every row of a key with no bad row landed within `latency_ms`
///   of its commit (less than a poison row's back-off holds its own key).
pub fn check_end(world: &World, on_dead_letter: OnDeadLetter, latency_ms: u64) -> Vec<String> {
    let mut broken = Vec::new();
    let mut first_landing: BTreeMap<i64, u64> = BTreeMap::new();
    let exactly_once = world.broker.is_exactly_once();
    for (partition, log) in world.broker.logs() {
        let mut last_first: BTreeMap<&Bytes, i64> = BTreeMap::new();
        let mut seen: BTreeSet<i64> = BTreeSet::new();
        for record in log {
            if exactly_once && first_landing.contains_key(&record.id) {
                broken.push(format!(
                    "row {} was delivered twice in exactly-once mode",
                    record.id
                ));
            }
            if !seen.insert(record.id) {
                continue;
            }
            first_landing.entry(record.id).or_insert(record.at_ms);
            if world.table.was_rolled_back(record.id) {
                broken.push(format!("row {} of a rolled-back transaction landed", record.id));
            }
            let Some(key) = &record.key else { continue };
            let last = last_first.entry(key).or_insert(record.id);
            if record.id < *last {
                broken.push(format!(
                    "order broken on {partition:?}: row {} of key {key:?} landed after row {last}",
                    record.id
                ));
            }
            *last = (*last).max(record.id);
        }
    }
    let mut bad_keys: BTreeSet<TopicKey> = BTreeSet::new();
    // With parked keys, the pending rows of a key with a dead row stay pending.
    let mut dead_of_key: BTreeMap<TopicKey, i64> = BTreeMap::new();
    if on_dead_letter == OnDeadLetter::ParkKey {
        for row in world.table.rows().filter(|row| row.state == RowState::Dead) {
            if let Some(key) = topic_key(row) {
                let first = dead_of_key.entry(key).or_insert(row.message.id);
                *first = (*first).min(row.message.id);
            }
        }
    }
    // (Earlier rows too: one that was in flight when a later row of its key died and then failed
    // transiently waits with the key, and a replay sends them in id order.)
    let parked_behind = |row: &Row| topic_key(row).is_some_and(|key| dead_of_key.contains_key(&key));
    for committed in world.table.ledger() {
        let id = committed.message.id;
        let now = world.table.row(id).map(|row| row.state);
        let landed = first_landing.contains_key(&id);
        let bad = is_bad(committed);
        if bad {
            bad_keys.extend(topic_key(committed));
        }
        match (bad, landed, now) {
            (_, _, Some(RowState::Pending)) if !parked_behind(committed) => {
                let m = &committed.message;
                broken.push(format!(
                    "row {id} ({}/{:?}) is still pending at the end (attempts {}, due {:?})",
                    m.topic,
                    m.key,
                    world.table.row(id).map_or(0, |r| r.message.attempts),
                    world.table.row(id).and_then(|r| r.message.next_attempt_at),
                ));
            }
            (_, _, Some(RowState::Pending)) => {}
            (false, false, _) => broken.push(format!("row {id} never landed (lost, or dead: {now:?})")),
            (true, true, _) => broken.push(format!("row {id} can never be delivered, yet it landed")),
            (true, false, state) if state != Some(RowState::Dead) => {
                broken.push(format!(
                    "row {id} can never be delivered, yet it is not dead ({state:?})"
                ));
            }
            _ => {}
        }
    }
    for committed in world.table.ledger() {
        let healthy = topic_key(committed).is_none_or(|key| !bad_keys.contains(&key)) && !is_bad(committed);
        let Some(landed) = first_landing.get(&committed.message.id) else {
            continue;
        };
        let waited = landed.saturating_sub(committed.committed_ms);
        if healthy && waited > latency_ms {
            broken.push(format!(
                "row {} of a healthy key waited {waited} ms (more than {latency_ms} ms): something blocked it",
                committed.message.id
            ));
        }
    }
    broken
}
