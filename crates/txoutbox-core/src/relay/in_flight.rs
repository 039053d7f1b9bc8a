//! The rows handed to the sink and not yet completed: skipped by the fetcher, bounded by permits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Ids in flight, and the permits that bound how many there may be.
///
/// A fetch may read a row just before the completer marks it and removes it from flight; the row
/// would then look pending and new. So removed ids are kept as *retired* until the next fetch
/// begins (its query runs after their mark committed, so it cannot return them), and the fetcher
/// skips both. There is one fetcher per relay, which is what makes this sound.
#[derive(Debug)]
pub(crate) struct InFlight {
    sets: Mutex<Sets>,
    permits: Arc<Semaphore>,
}

/// A set of row ids. Every fetched row is looked up and every sent one inserted and removed:
/// foldhash instead of SipHash (the default), which showed in profiles of the relay.
type Ids = HashSet<i64, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Sets {
    flying: Ids,
    retired: Ids,
}

impl InFlight {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            sets: Mutex::new(Sets {
                flying: Ids::with_capacity_and_hasher(max, Default::default()),
                retired: Ids::default(),
            }),
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    fn sets(&self) -> MutexGuard<'_, Sets> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called before each fetch query; returns how many rows are in flight.
    pub(crate) fn begin_fetch(&self) -> usize {
        let mut sets = self.sets();
        sets.retired.clear();
        sets.flying.len()
    }

    /// Whether no row is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.sets().flying.is_empty()
    }

    /// How many rows are in flight.
    pub(crate) fn len(&self) -> usize {
        self.sets().flying.len()
    }

    /// Whether the fetcher must skip this row: in flight, or completed during the current fetch.
    pub(crate) fn contains(&self, id: i64) -> bool {
        let sets = self.sets();
        sets.flying.contains(&id) || sets.retired.contains(&id)
    }

    /// Waits for room for `n` more rows.
    pub(crate) async fn reserve(&self, n: usize) -> OwnedSemaphorePermit {
        Arc::clone(&self.permits)
            .acquire_many_owned(n as u32)
            .await
            .expect("the in-flight semaphore is never closed")
    }

    /// How many more rows fit in flight right now.
    pub(crate) fn room(&self) -> usize {
        self.permits.available_permits()
    }

    pub(crate) fn insert(&self, ids: impl IntoIterator<Item = i64>) {
        self.sets().flying.extend(ids);
    }

    /// Takes rows out of flight once their outcome is written to the store.
    pub(crate) fn remove(&self, ids: impl IntoIterator<Item = i64>) {
        let mut sets = self.sets();
        for id in ids {
            if sets.flying.remove(&id) {
                sets.retired.insert(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_rows_stay_hidden_until_the_next_fetch_begins() {
        let in_flight = InFlight::new(10);
        in_flight.insert([1, 2]);
        assert_eq!(in_flight.begin_fetch(), 2);
        // The fetch query runs; meanwhile row 1 is marked and leaves flight.
        in_flight.remove([1]);
        assert!(
            in_flight.contains(1),
            "a row completed during a fetch must not look new to it"
        );
        assert!(in_flight.contains(2));
        assert_eq!(in_flight.begin_fetch(), 1);
        assert!(!in_flight.contains(1));
    }
}
