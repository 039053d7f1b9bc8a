//! What the simulated broker does with what its producers hold, on the world's virtual time: a
//! pump step lands or fails the head of a queue (or commits the open transaction), a producer
//! dies with its relay, a new producer recovers the committed progress and fences older ones.

use std::collections::VecDeque;

use rand::Rng;
use txoutbox_core::SinkError;

use crate::record::{Lane, POISON};
use crate::transactions::{COMMIT_INTERVAL_MS, fenced};
use crate::world::World;

/// Producer `producer` dies with its relay: a random prefix of each queue lands (never
/// acknowledged), the rest is lost; in exactly-once mode its open transaction is gone.
pub(crate) fn producer_dies(world: &mut World, producer: u64) {
    world.broker.acknowledged.remove(&producer);
    if world.broker.transactions.enabled {
        transaction_dies(world, producer);
        return;
    }
    let lanes = world.broker.lanes_of(producer);
    let now = world.now_ms();
    let mut landed = 0;
    for lane in lanes {
        let queue = world.broker.queues.remove(&lane).unwrap_or_default();
        let partition = lane.1;
        let keep = world.rng().random_range(0..=queue.len());
        for queued in queue.into_iter().take(keep) {
            let Some(message) = queued.message() else { continue };
            // The broker refuses a poison record, and then nothing behind it in the partition.
            if message.payload.as_ref().is_some_and(|p| p.starts_with(POISON)) {
                break;
            }
            world.broker.land(&partition, message, now);
            landed += 1;
        }
    }
    world.broker.outage_until_ms = None;
    world.broker.broken.retain(|(owner, _)| *owner != producer);
    world.log(format_args!(
        "broker: producer {producer} died; {landed} of what it held landed"
    ));
}

/// One step of `producer`: the head of a random one of its queues lands or fails.
pub(crate) fn step(world: &mut World, producer: u64) {
    let now = world.now_ms();
    if let Some(until) = world.broker.outage_until_ms {
        if now < until {
            return;
        }
        world.broker.outage_until_ms = None;
        if world.broker.outage_times_out {
            let lanes: Vec<Lane> = world.broker.queues.keys().cloned().collect();
            let mut failed = 0;
            for lane in lanes {
                let timed_out = world.broker.fail_queue(&lane, "simulated: message timed out");
                if timed_out > 0 {
                    world.broker.broken.insert(lane);
                }
                failed += timed_out;
            }
            world.log(format_args!("broker: back; {failed} queued records timed out"));
        } else {
            world.log("broker: back");
        }
    }
    if world.broker.transactions.enabled {
        transaction_step(world);
    }
    let outages = world.faults.outages_per_second;
    // About one step per millisecond: the rate per second, spread over them.
    if world.chance(outages / 1_000.0) {
        let lasts = world.rng().random_range(100..3_000);
        let times_out = world.rng().random_bool(0.5);
        world.broker.outage_until_ms = Some(now + lasts);
        world.broker.outage_times_out = times_out;
        world.log(format_args!("broker: out for {lasts} ms"));
        return;
    }
    let busy: Vec<Lane> = world
        .broker
        .queues
        .iter()
        .filter(|((owner, _), q)| *owner == producer && !q.is_empty())
        .map(|(lane, _)| lane.clone())
        .collect();
    if busy.is_empty() {
        return;
    }
    let pick = world.rng().random_range(0..busy.len());
    let Some(lane) = busy.get(pick).cloned() else {
        return;
    };
    let Some(head) = world.broker.queues.get_mut(&lane).and_then(VecDeque::pop_front) else {
        return;
    };
    let partition = lane.1.clone();
    let Some(message) = head.message().cloned() else {
        return;
    };
    let faults = world.faults;
    let id = message.id;
    let poison = message.payload.as_ref().is_some_and(|p| p.starts_with(POISON));
    let failure = if poison {
        Some((
            false,
            SinkError::permanent("simulated: the broker refuses this record"),
        ))
    } else if world.chance(faults.broker_transient) {
        Some((false, SinkError::transient("simulated: not leader for partition")))
    } else if world.chance(faults.broker_lost_ack) {
        Some((
            true,
            SinkError::transient("simulated: request timed out (the record may have landed)"),
        ))
    } else {
        None
    };
    match failure {
        None => {
            world.broker.land(&partition, &message, now);
            world.log(format_args!(
                "broker: row {id} landed on {}/{}",
                partition.0, partition.1
            ));
            world.broker.acknowledge(producer, &[id]);
            head.succeed();
        }
        Some((landed, error)) => {
            if landed {
                world.broker.land(&partition, &message, now);
            }
            let kind = error.kind();
            let transient = error.is_transient();
            head.fail(error);
            let behind = world
                .broker
                .fail_queue(&lane, "simulated: an earlier record of the partition failed");
            if transient || behind > 0 {
                world.broker.broken.insert(lane);
            }
            world.log(format_args!(
                "broker: row {id} failed {kind:?}{} on {}/{}; {behind} behind it failed too",
                if landed { " after it landed" } else { "" },
                partition.0,
                partition.1
            ));
        }
    }
}

/// A new producer starts: it fences the older ones (aborting their open transaction) and
/// reads the progress: the committed rows not confirmed completed.
pub(crate) fn recover(world: &mut World, producer: u64) -> Vec<i64> {
    let txns = &mut world.broker.transactions;
    txns.current = txns.current.max(producer);
    if !txns.open.is_empty() && txns.opened_by < producer {
        let open = std::mem::take(&mut txns.open);
        let aborted = open.len();
        for (_, queued) in open {
            queued.fail(fenced());
        }
        world.log(format_args!(
            "broker: producer {producer} fenced the older one; its transaction of {aborted} aborted"
        ));
    }
    world.broker.transactions.spoiled = false;
    let unmarked: Vec<i64> = world.broker.transactions.unmarked.iter().copied().collect();
    world.broker.may_complete(producer, &unmarked);
    world.log(format_args!(
        "broker: producer {producer} recovers {} committed rows",
        unmarked.len()
    ));
    unmarked
}

/// Producer `producer` died: its open transaction is gone (nothing of it lands).
fn transaction_dies(world: &mut World, producer: u64) {
    let txns = &mut world.broker.transactions;
    if txns.opened_by == producer && !txns.open.is_empty() {
        let dropped = std::mem::take(&mut txns.open).len();
        world.log(format_args!(
            "broker: the open transaction of {dropped} died with its producer"
        ));
    }
}

/// One step: commits the open transaction when it is due (not during an outage).
fn transaction_step(world: &mut World) {
    let now = world.now_ms();
    let txns = &world.broker.transactions;
    let due = !txns.open.is_empty()
        && (txns.commit_asked || now.saturating_sub(txns.began_ms) >= COMMIT_INTERVAL_MS);
    if !due || world.broker.is_out() {
        return;
    }
    let txns = &mut world.broker.transactions;
    txns.commit_asked = false;
    let producer = txns.opened_by;
    let open = std::mem::take(&mut txns.open);
    if txns.is_fenced(producer) {
        for (_, queued) in open {
            queued.fail(fenced());
        }
        return;
    }
    let poison = open.iter().any(|(_, q)| {
        q.message()
            .and_then(|m| m.payload.as_ref())
            .is_some_and(|p| p.starts_with(POISON))
    });
    let faults = world.faults;
    let fails = poison || world.chance(faults.broker_transient);
    // A lost outcome is resolved by reading the progress: either way, reported truly.
    let lost_outcome = world.chance(faults.broker_lost_ack);
    let commits = !fails && (!lost_outcome || world.chance(0.5));
    if !commits {
        world.broker.transactions.spoiled = true;
        let records = open.len();
        for (_, queued) in open {
            let is_poison = queued
                .message()
                .and_then(|m| m.payload.as_ref())
                .is_some_and(|p| p.starts_with(POISON));
            if is_poison {
                queued.fail(SinkError::permanent("simulated: the broker refuses this record"));
            } else {
                queued.fail(SinkError::transient(
                    "simulated: the transaction was aborted; sent again",
                ));
            }
        }
        world.log(format_args!(
            "broker: a transaction of {records} aborted{}",
            if poison { " (poison)" } else { "" }
        ));
        return;
    }
    let mut ids = Vec::with_capacity(open.len());
    for (partition, queued) in &open {
        if let Some(message) = queued.message() {
            world.broker.land(partition, message, now);
            ids.push(message.id);
        }
    }
    world.broker.acknowledge(producer, &ids);
    world.broker.transactions.unmarked.extend(ids.iter().copied());
    for (_, queued) in open {
        queued.succeed();
    }
    world.log(format_args!(
        "broker: producer {producer}'s transaction of {} committed: {ids:?}",
        ids.len()
    ));
}
