//! Several relay nodes on one outbox table, coordinated through the database they share — no
//! second coordinator.
//!
//! - [`Coordination::Single`]: one active relay, a second one stands by on the store's lock (the
//!   default).
//! - [`Coordination::Exclusive`]: every replica runs a relay; the one holding the table's lease
//!   relays, the others wait and take over when it expires.
//! - [`Coordination::WorkBalance`]: rows are spread over buckets by a hash of their key (computed
//!   by the database); live nodes announce themselves with heartbeats and share the buckets
//!   evenly. A bucket that moves is drained by its old owner (its in-flight messages settled)
//!   before it is released, and only then taken by the new one, so per-key order holds.
//!
//! Every lease carries the epoch of its holder's session; every write a relay makes about
//! messages is conditional on holding the row's lease at that epoch, so a node that was paused or
//! partitioned past its lease cannot overwrite its successor's work (fencing). See
//! `docs/coordination.md`.

mod assign;
mod coordinator;
mod leases;
mod ownership;
mod taking_over;

use std::time::Duration;

pub use assign::assign_buckets;
pub(crate) use coordinator::run;
pub use leases::{Claimed, EXCLUSIVE_LEASE, ExpiredLease, LeaseInfo, Leases, LiveNode};
pub use ownership::{Ownership, Scope};

use crate::error::{Error, Result};

/// How relay nodes on one table share it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Coordination {
    /// One active relay per table, no leases: the stores keep a second relay on standby
    /// (PostgreSQL, MySQL/MariaDB: a lock the database frees when the first one's connection
    /// ends) or refuse it (SQLite).
    #[default]
    Single,
    /// One relay at a time holds the table's lease; the others stand by.
    Exclusive(LeaseSettings),
    /// Buckets of keys shared evenly among the live relays.
    WorkBalance(LeaseSettings),
}

impl Coordination {
    /// Exclusive mode with the default lease settings.
    pub fn exclusive() -> Self {
        Self::Exclusive(LeaseSettings::default())
    }

    /// Work-balance mode with the default lease settings.
    pub fn work_balance() -> Self {
        Self::WorkBalance(LeaseSettings::default())
    }

    /// The name stored with each node, so nodes in different modes refuse to share a table.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Exclusive(_) => "exclusive",
            Self::WorkBalance(_) => "work-balance",
        }
    }

    /// The lease settings, if coordinated.
    pub fn lease_settings(&self) -> Option<&LeaseSettings> {
        match self {
            Self::Single => None,
            Self::Exclusive(settings) | Self::WorkBalance(settings) => Some(settings),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        match self.lease_settings() {
            Some(settings) => settings.validate(),
            None => Ok(()),
        }
    }
}

/// Lease timing. The defaults suit most deployments:
///
/// - `lease` (10 s): how long a node's leases outlive its last renewal. A crashed node's buckets
///   move after at most about `lease + heartbeat`. Shorter: faster take-over, but a pause (GC,
///   a stalled VM, a slow database) longer than it makes a healthy node lose its buckets, which
///   costs a drain and some duplicates.
/// - `heartbeat` (2 s): how often a node renews its leases and looks at who is alive. Must be
///   well under `lease` (at most a third) so one slow renewal does not lose the lease.
/// - `node_id`: a unique name per process; generated (`host-pid-random`) when empty.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseSettings {
    /// Lease length.
    pub lease: Duration,
    /// Renewal interval.
    pub heartbeat: Duration,
    /// This node's name (unique per process).
    pub node_id: Option<String>,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            node_id: None,
        }
    }
}

impl LeaseSettings {
    /// Sets the lease length and the renewal interval.
    #[must_use]
    pub fn with_timing(mut self, lease: Duration, heartbeat: Duration) -> Self {
        self.lease = lease;
        self.heartbeat = heartbeat;
        self
    }

    /// Names this node.
    #[must_use]
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Checks the timing.
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat.is_zero() || self.lease < self.heartbeat * 3 {
            return Err(Error::Config(format!(
                "the lease ({:?}) must be at least three heartbeats ({:?}) long, so one slow renewal \
                 does not lose it",
                self.lease, self.heartbeat
            )));
        }
        Ok(())
    }

    /// The node id, generated when not set.
    pub(crate) fn resolved_node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                })
                .unwrap_or_else(|| "node".to_owned());
            let random = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}-{}", std::process::id(), &random[..8])
        })
    }
}
