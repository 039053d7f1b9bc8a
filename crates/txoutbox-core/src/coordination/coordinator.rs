//! The coordinator: one task per coordinated relay that keeps the node's session and leases
//! alive, follows the live nodes, drains and hands over buckets, and tells the relay engine
//! (through [`Ownership`]) what it may read and until when it may send.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::assign::assign_buckets;
use super::leases::{EXCLUSIVE_LEASE, Leases};
use super::ownership::{Ownership, Scope};
use super::{Coordination, LeaseSettings};
use crate::error::{Error, Result};

/// Runs until `engine_done` fires (then leaves: its leases go at once to the other nodes), or
/// returns an error the relay must stop with (nodes of another `mode` on the table: the
/// coordination, and the delivery when it is not at-least-once, e.g. `exclusive (exactly-once)`).
pub(crate) async fn run<L: Leases>(
    leases: L,
    ownership: Ownership,
    coordination: Coordination,
    mode: String,
    engine_done: CancellationToken,
) -> Result<()> {
    let Some(settings) = coordination.lease_settings().cloned() else {
        return Ok(());
    };
    let node = ownership.node().to_owned();
    let mode = mode.as_str();
    let exclusive = matches!(coordination, Coordination::Exclusive(_));
    let mut epoch = None;
    loop {
        let session = match epoch {
            Some(epoch) => epoch,
            None => match leases.join(&node, mode, settings.lease).await {
                Ok(new) => {
                    info!(node = %node, epoch = new, mode, "relay node joined");
                    ownership.begin(new);
                    epoch = Some(new);
                    new
                }
                Err(error) => {
                    warn!(%error, "cannot join the relay nodes of this table; retrying");
                    if wait(&engine_done, settings.heartbeat).await {
                        return Ok(());
                    }
                    continue;
                }
            },
        };
        match tick(&leases, &ownership, &settings, &node, session, mode, exclusive).await {
            Ok(Tick::Held) => {}
            Ok(Tick::SessionLost) => {
                warn!(node = %node, epoch = session, "this relay lost its leases (paused or cut off too long); rejoining with a new epoch");
                ownership.lose();
                epoch = None;
                continue;
            }
            Err(error @ Error::Config(_)) => {
                ownership.lose();
                return Err(error);
            }
            Err(error) => warn!(%error, "could not renew the relay's leases; retrying"),
        }
        if wait(&engine_done, settings.heartbeat).await {
            ownership.lose();
            if let Err(error) = leases.leave(&node, session).await {
                warn!(%error, "could not release the leases on the way out; they expire by themselves");
            } else {
                info!(node = %node, "relay node left; its leases are free");
            }
            return Ok(());
        }
    }
}

/// Waits for `delay`; true when the engine finished meanwhile.
async fn wait(engine_done: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = engine_done.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

enum Tick {
    Held,
    SessionLost,
}

/// One round: heartbeat, compute the wanted buckets, release drained ones, claim and renew.
async fn tick<L: Leases>(
    leases: &L,
    ownership: &Ownership,
    settings: &LeaseSettings,
    node: &str,
    epoch: i64,
    mode: &str,
    exclusive: bool,
) -> Result<Tick> {
    let started = Instant::now();
    let Some(live) = leases.heartbeat(node, epoch, settings.lease).await? else {
        return Ok(Tick::SessionLost);
    };
    if let Some(other) = live.iter().find(|n| n.mode != mode) {
        return Err(Error::Config(format!(
            "relay node `{}` runs in {} mode on this table and this one in {mode} mode; run every relay of \
             a table in the same mode",
            other.node_id, other.mode
        )));
    }
    let held: BTreeSet<i32> = match ownership.scope() {
        Scope::Nothing => BTreeSet::new(),
        Scope::All => BTreeSet::from([EXCLUSIVE_LEASE]),
        Scope::Buckets(buckets) => buckets.into_iter().collect(),
    };
    let draining_held = ownership.draining();
    let held: BTreeSet<i32> = held.union(&draining_held).copied().collect();
    let desired: BTreeSet<i32> = if exclusive {
        BTreeSet::from([EXCLUSIVE_LEASE])
    } else {
        let ids: Vec<String> = live.iter().map(|n| n.node_id.clone()).collect();
        assign_buckets(&ids, node, leases.bucket_count())
            .into_iter()
            .collect()
    };

    // Buckets that now belong to another node: stop reading them; release each once its
    // in-flight messages have settled, so its new owner starts after the last send.
    let draining: BTreeSet<i32> = held.difference(&desired).copied().collect();
    let (drained, still_draining): (Vec<i32>, Vec<i32>) =
        draining.iter().partition(|&&b| ownership.in_flight(b) == 0);
    if !drained.is_empty() {
        leases.release(node, epoch, &drained).await?;
        info!(node, buckets = ?drained, "released drained buckets");
    }
    let wanted: Vec<i32> = desired.iter().chain(still_draining.iter()).copied().collect();
    let got: BTreeSet<i32> = leases
        .claim(node, epoch, &wanted, settings.lease)
        .await?
        .into_iter()
        .collect();
    let kept_from_before: BTreeSet<i32> = held.difference(&draining).copied().collect();
    if kept_from_before
        .iter()
        .chain(&still_draining)
        .any(|b| !got.contains(b))
    {
        // A lease this session held went to another node: our view is stale, start afresh.
        return Ok(Tick::SessionLost);
    }
    let newly: Vec<i32> = got.difference(&held).copied().collect();
    if !newly.is_empty() {
        info!(node, buckets = ?newly, "took over buckets");
    }
    let readable: Vec<i32> = got.intersection(&desired).copied().collect();
    let scope = if exclusive {
        if got.contains(&EXCLUSIVE_LEASE) {
            Scope::All
        } else {
            Scope::Nothing
        }
    } else if readable.is_empty() && still_draining.is_empty() {
        Scope::Nothing
    } else {
        Scope::Buckets(readable)
    };
    ownership.set_draining(still_draining.into_iter().collect());
    // Sends stop a heartbeat before the lease could end, whatever happens to the next renewal.
    let valid_until = started + settings.lease.saturating_sub(settings.heartbeat);
    ownership.set(scope, valid_until);
    Ok(Tick::Held)
}
