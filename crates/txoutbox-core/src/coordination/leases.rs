//! What a store offers for coordination: node heartbeats and bucket leases with epochs.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::ownership::Ownership;
use crate::error::Result;
use crate::store::Completion;

/// The lease that covers the whole table (exclusive mode).
pub const EXCLUSIVE_LEASE: i32 = -1;

/// A live relay node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveNode {
    /// Its id.
    pub node_id: String,
    /// Its coordination mode.
    pub mode: String,
    /// Its session epoch: epochs grow with every join, so a smaller one joined earlier.
    pub epoch: i64,
}

/// A lease as stored, for status pages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseInfo {
    /// The bucket ([`EXCLUSIVE_LEASE`] for the whole table).
    pub bucket: i32,
    /// The holder, if any.
    pub owner: Option<String>,
    /// The holder's session epoch.
    pub epoch: Option<i64>,
    /// Until when it holds (database time).
    pub lease_until: Option<DateTime<Utc>>,
}

/// The refusal of a store that cannot take leases over atomically.
fn take_over_unsupported() -> crate::Error {
    crate::Error::Config(
        "this store cannot take over the leases of lost sessions, which exactly-once delivery in \
         work-balance mode needs: run it in exclusive mode"
            .into(),
    )
}

/// A lease that ran out under another session, left by [`Leases::claim_fresh`] for
/// [`Leases::take_over`]: that session may have delivered rows of the bucket it never marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredLease {
    /// The bucket.
    pub bucket: i32,
    /// The node that held it.
    pub node_id: String,
    /// That node's session epoch.
    pub epoch: i64,
}

/// What [`Leases::claim_fresh`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claimed {
    /// The buckets the session holds afterwards.
    pub held: Vec<i32>,
    /// Wanted buckets whose lease ran out under another session: not taken.
    pub expired: Vec<ExpiredLease>,
}

/// Node membership and leases, in the outbox's database. Times are the database's, so nodes need
/// no synchronised clocks.
pub trait Leases: Send + Sync + Clone + 'static {
    /// The number of buckets rows are spread over (fixed by the table).
    fn bucket_count(&self) -> i32;

    /// Scopes this store's reads to what `ownership` may read, and fences its writes with the
    /// ownership's node and epoch. Called once, by the relay, before it starts.
    fn attach(&mut self, ownership: Ownership);

    /// Starts a node session: registers `node` in `mode`, alive for `ttl`, and returns a fresh
    /// epoch (greater than every earlier one).
    fn join(&self, node: &str, mode: &str, ttl: Duration) -> impl Future<Output = Result<i64>> + Send;

    /// Keeps the session alive for `ttl` more and returns every live node sorted by id; `None`
    /// when the session was lost (it expired, or another session replaced it).
    fn heartbeat(
        &self,
        node: &str,
        epoch: i64,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Vec<LiveNode>>>> + Send;

    /// Takes or renews, for `ttl`, the leases of `buckets` that are free, expired or already this
    /// session's; returns the buckets the session holds afterwards.
    fn claim(
        &self,
        node: &str,
        epoch: i64,
        buckets: &[i32],
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<i32>>> + Send;

    /// [`claim`](Self::claim) for a relay that must take over what lost sessions delivered (an
    /// exactly-once relay in work-balance mode): takes free leases and renews its own, but leaves
    /// a lease that ran out under another session to [`take_over`](Self::take_over), naming it.
    /// The default refuses: with a store without it, such a relay stops at its first heartbeat.
    fn claim_fresh(
        &self,
        node: &str,
        epoch: i64,
        buckets: &[i32],
        ttl: Duration,
    ) -> impl Future<Output = Result<Claimed>> + Send {
        let _ = (node, epoch, buckets, ttl);
        async { Err(take_over_unsupported()) }
    }

    /// Takes, for `ttl`, the leases of `buckets` that the lost session `from` still holds with its
    /// lease run out, and in the same database transaction completes (as `completion` says) the
    /// rows `ids` of the buckets taken — the rows that session delivered for good. Returns the
    /// buckets taken now (not those the session held before). Atomic: a lease names the lost session until its rows are completed, so
    /// whoever takes it learns of that session, however often takers fail in between. The
    /// default refuses.
    #[allow(clippy::too_many_arguments)] // The session, the buckets, the rows and how: one step.
    fn take_over(
        &self,
        node: &str,
        epoch: i64,
        from: i64,
        buckets: &[i32],
        ids: &[i64],
        completion: Completion,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<i32>>> + Send {
        let _ = (node, epoch, from, buckets, ids, completion, ttl);
        async { Err(take_over_unsupported()) }
    }

    /// Gives up this session's leases of `buckets`, at once.
    fn release(&self, node: &str, epoch: i64, buckets: &[i32]) -> impl Future<Output = Result<()>> + Send;

    /// Ends the session: releases its leases and unregisters the node.
    fn leave(&self, node: &str, epoch: i64) -> impl Future<Output = Result<()>> + Send;

    /// Every lease, for status pages.
    fn leases(&self) -> impl Future<Output = Result<Vec<LeaseInfo>>> + Send;
}
