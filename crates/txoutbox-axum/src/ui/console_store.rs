//! What the console reads and changes in the outbox: [`ConsoleStore`], and its implementation
//! over the stores of the store crates.

use std::future::Future;
use std::pin::Pin;

use txoutbox_core::coordination::{LeaseInfo, Leases};
use txoutbox_core::{
    DeadLetter, DeadLetterFilter, DeadLetters, DeadPayload, Result, Statistics, Store, TopicStats,
};

/// A boxed future, as [`ConsoleStore`]'s methods return (the trait is used as an object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outbox as the web console sees it: dead letters, per-topic statistics and, for a
/// coordinated relay, the leases. [`Console::new`](super::Console::new) and
/// [`Console::with_leases`](super::Console::with_leases) wrap any store of the store crates;
/// implement it for a store of another kind (the daemon implements it for the database its URL
/// names).
pub trait ConsoleStore: Send + Sync + 'static {
    /// The outbox table's name, as shown.
    fn table(&self) -> String;

    /// Up to `limit` dead letters matching `filter`, oldest first.
    fn list_dead<'a>(
        &'a self,
        filter: &'a DeadLetterFilter,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>>>;

    /// Moves matching dead letters back to pending; how many.
    fn replay_dead<'a>(&'a self, filter: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>>;

    /// Deletes matching dead letters; how many.
    fn purge_dead<'a>(&'a self, filter: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>>;

    /// The start of dead letter `id`'s payload, at most `max_bytes`.
    fn dead_payload(&self, id: i64, max_bytes: usize) -> BoxFuture<'_, Result<Option<DeadPayload>>>;

    /// Every topic's rows by state (a scan of the table: the console caches it).
    fn topic_stats(&self) -> BoxFuture<'_, Result<Vec<TopicStats>>>;

    /// Every coordination lease; none for a store without leases (the default).
    fn leases(&self) -> BoxFuture<'_, Result<Vec<LeaseInfo>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A store of the store crates, without leases.
pub(crate) struct Plain<S>(pub(crate) S);

/// A store of the store crates, with leases.
pub(crate) struct WithLeases<S>(pub(crate) S);

macro_rules! console_store {
    ($wrapper:ident, $($bound:path),+; $($leases:tt)*) => {
        impl<S> ConsoleStore for $wrapper<S>
        where
            S: Store + DeadLetters + Statistics $(+ $bound)+,
        {
            fn table(&self) -> String {
                let labels = self.0.metric_labels();
                labels.get(txoutbox_core::MetricLabels::TABLE).unwrap_or_default().to_owned()
            }
            fn list_dead<'a>(
                &'a self,
                filter: &'a DeadLetterFilter,
                limit: usize,
            ) -> BoxFuture<'a, Result<Vec<DeadLetter>>> {
                Box::pin(self.0.list_dead(filter, limit))
            }
            fn replay_dead<'a>(&'a self, filter: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>> {
                Box::pin(self.0.replay_dead(filter))
            }
            fn purge_dead<'a>(&'a self, filter: &'a DeadLetterFilter) -> BoxFuture<'a, Result<u64>> {
                Box::pin(self.0.purge_dead(filter))
            }
            fn dead_payload(&self, id: i64, max_bytes: usize) -> BoxFuture<'_, Result<Option<DeadPayload>>> {
                Box::pin(self.0.dead_payload(id, max_bytes))
            }
            fn topic_stats(&self) -> BoxFuture<'_, Result<Vec<TopicStats>>> {
                Box::pin(self.0.topic_stats())
            }
            $($leases)*
        }
    };
}

console_store!(Plain, Send;);
console_store!(WithLeases, Leases;
    fn leases(&self) -> BoxFuture<'_, Result<Vec<LeaseInfo>>> {
        Box::pin(self.0.leases())
    }
);
