//! Relay-node membership and bucket leases in memory, with the PostgreSQL store's semantics
//! (`txoutbox-postgres/src/leases.rs`): sessions with growing epochs, leases that a node takes
//! when they are free, expired or already its session's, and writes fenced by the lease of each
//! row's bucket at the writer's epoch. Time is the world's virtual clock, shared by every node
//! as the database's clock is.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use txoutbox_core::coordination::{EXCLUSIVE_LEASE, LeaseInfo, LiveNode};

/// Rows are spread over this many buckets (a stable hash of the key, as the tables do).
pub const BUCKETS: i32 = 16;

/// The bucket of a row with `key` (FNV-1a of the key, an absent key hashing as an empty one).
pub fn bucket_of(key: Option<&[u8]>) -> i32 {
    let hash = key
        .unwrap_or_default()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    i32::try_from(hash % BUCKETS as u64).unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Node {
    mode: String,
    epoch: i64,
    alive_until_ms: u64,
}

#[derive(Debug, Clone)]
struct Lease {
    owner: String,
    epoch: i64,
    until_ms: u64,
}

/// The nodes and leases of one table.
#[derive(Debug, Default)]
pub struct LeaseTable {
    epochs: i64,
    nodes: BTreeMap<String, Node>,
    leases: BTreeMap<i32, Lease>,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl LeaseTable {
    /// Registers `node` with a fresh epoch (replacing its earlier session, if any).
    pub fn join(&mut self, node: &str, mode: &str, ttl: Duration, now_ms: u64) -> i64 {
        self.epochs += 1;
        self.nodes.insert(
            node.to_owned(),
            Node {
                mode: mode.to_owned(),
                epoch: self.epochs,
                alive_until_ms: now_ms.saturating_add(ms(ttl)),
            },
        );
        self.epochs
    }

    /// Renews the session; the live nodes sorted by id, or `None` when the session was lost.
    pub fn heartbeat(&mut self, node: &str, epoch: i64, ttl: Duration, now_ms: u64) -> Option<Vec<LiveNode>> {
        let session = self.nodes.get_mut(node)?;
        if session.epoch != epoch || session.alive_until_ms <= now_ms {
            return None;
        }
        session.alive_until_ms = now_ms.saturating_add(ms(ttl));
        Some(
            self.nodes
                .iter()
                .filter(|(_, n)| n.alive_until_ms > now_ms)
                .map(|(id, n)| LiveNode {
                    node_id: id.clone(),
                    mode: n.mode.clone(),
                    epoch: n.epoch,
                })
                .collect(),
        )
    }

    /// Takes or renews the leases of `buckets` that are free, expired or this session's;
    /// returns the buckets it holds afterwards.
    pub fn claim(&mut self, node: &str, epoch: i64, buckets: &[i32], ttl: Duration, now_ms: u64) -> Vec<i32> {
        let mut held = Vec::new();
        for &bucket in buckets {
            let free = self.leases.get(&bucket).is_none_or(|lease| {
                lease.until_ms <= now_ms || (lease.owner == node && lease.epoch == epoch)
            });
            if free {
                self.leases.insert(
                    bucket,
                    Lease {
                        owner: node.to_owned(),
                        epoch,
                        until_ms: now_ms.saturating_add(ms(ttl)),
                    },
                );
                held.push(bucket);
            }
        }
        held
    }

    /// Gives up the session's leases of `buckets`.
    pub fn release(&mut self, node: &str, epoch: i64, buckets: &[i32]) {
        self.leases.retain(|bucket, lease| {
            !(buckets.contains(bucket) && lease.owner == node && lease.epoch == epoch)
        });
    }

    /// Ends the session: its leases go, and the node is no longer listed.
    pub fn leave(&mut self, node: &str, epoch: i64) {
        self.leases
            .retain(|_, lease| !(lease.owner == node && lease.epoch == epoch));
        if self.nodes.get(node).is_some_and(|n| n.epoch == epoch) {
            self.nodes.remove(node);
        }
    }

    /// Whether `node` holds the lease of `bucket` (or the whole table's) at `epoch` now — the
    /// fence of its writes. `epoch` `None`: at any epoch (what a send is checked against).
    pub fn holds(&self, node: &str, epoch: Option<i64>, bucket: i32, now_ms: u64) -> bool {
        [EXCLUSIVE_LEASE, bucket].iter().any(|b| {
            self.leases.get(b).is_some_and(|lease| {
                lease.owner == node && epoch.is_none_or(|e| e == lease.epoch) && lease.until_ms > now_ms
            })
        })
    }

    /// Every lease, for status pages; `start` is the wall time of virtual millisecond 0.
    pub fn list(&self, start: DateTime<Utc>) -> Vec<LeaseInfo> {
        self.leases
            .iter()
            .map(|(bucket, lease)| LeaseInfo {
                bucket: *bucket,
                owner: Some(lease.owner.clone()),
                epoch: Some(lease.epoch),
                lease_until: start.checked_add_signed(TimeDelta::milliseconds(
                    i64::try_from(lease.until_ms).unwrap_or(i64::MAX),
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn a_lease_moves_only_when_free_or_expired_and_fences_the_old_epoch() {
        let mut table = LeaseTable::default();
        let a = table.join("a", "work-balance", TTL, 0);
        let b = table.join("b", "work-balance", TTL, 0);
        assert!(b > a);
        assert_eq!(table.claim("a", a, &[1, 2], TTL, 0), [1, 2]);
        assert!(table.claim("b", b, &[2], TTL, 5_000).is_empty(), "held by a");
        assert!(table.holds("a", Some(a), 2, 9_999));
        assert!(!table.holds("a", Some(a), 2, 10_000), "expired");
        assert_eq!(table.claim("b", b, &[2], TTL, 10_000), [2]);
        assert!(!table.holds("a", Some(a), 2, 10_001));
        let a2 = table.join("a", "work-balance", TTL, 11_000);
        assert!(
            table.heartbeat("a", a, TTL, 11_000).is_none(),
            "the old session is gone"
        );
        assert!(
            !table.holds("a", Some(a2), 1, 5_000),
            "a new epoch holds nothing yet"
        );
        table.leave("b", b);
        assert_eq!(table.claim("a", a2, &[2], TTL, 11_000), [2], "left: free at once");
    }

    #[test]
    fn keys_spread_over_the_buckets() {
        let used: std::collections::BTreeSet<i32> = (0..40)
            .map(|k| bucket_of(Some(format!("w0-k{k}").as_bytes())))
            .collect();
        assert!(used.len() > 8, "{used:?}");
        assert_eq!(bucket_of(None), bucket_of(Some(b"")));
    }
}
