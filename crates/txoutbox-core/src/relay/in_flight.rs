//! The rows handed to the sink and not yet completed: skipped by the fetcher, bounded by permits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Room taken in flight by one batch: its rows and its bytes, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    _rows: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// Ids in flight, and the permits that bound how many there may be and how many bytes they hold.
///
/// A fetch may read a row just before the completer marks it and removes it from flight; the row
/// would then look pending and new. So removed ids are kept as *retired* until the next fetch
/// begins (its query runs after their mark committed, so it cannot return them), and the fetcher
/// skips both. There is one fetcher per relay, which is what makes this sound.
#[derive(Debug)]
pub(crate) struct InFlight {
    sets: Mutex<Sets>,
    permits: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_bytes: u32,
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
    /// At most `max` rows and `max_bytes` bytes in flight (a batch larger than `max_bytes`
    /// still goes, alone).
    pub(crate) fn new(max: usize, max_bytes: usize) -> Self {
        let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX);
        Self {
            sets: Mutex::new(Sets {
                flying: Ids::with_capacity_and_hasher(max.min(1 << 20), Default::default()),
                retired: Ids::default(),
            }),
            permits: Arc::new(Semaphore::new(max)),
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            max_bytes,
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

    /// Waits for room for `rows` more rows of `bytes` bytes. The semaphores are never closed;
    /// `None` only if one were.
    pub(crate) async fn reserve(&self, rows: usize, bytes: usize) -> Option<Permit> {
        let rows = u32::try_from(rows).unwrap_or(u32::MAX);
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX).min(self.max_bytes);
        let rows = Arc::clone(&self.permits).acquire_many_owned(rows).await.ok()?;
        let bytes = Arc::clone(&self.bytes).acquire_many_owned(bytes).await.ok()?;
        Some(Permit {
            _rows: rows,
            _bytes: bytes,
        })
    }

    /// How many more rows fit in flight right now.
    pub(crate) fn room(&self) -> usize {
        self.permits.available_permits()
    }

    /// How many more bytes fit in flight right now.
    pub(crate) fn room_bytes(&self) -> usize {
        self.bytes.available_permits()
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
        let in_flight = InFlight::new(10, 1 << 20);
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

    #[tokio::test]
    async fn bytes_bound_what_is_in_flight_but_a_large_batch_still_goes_alone() {
        let in_flight = InFlight::new(10, 100);
        let first = in_flight.reserve(1, 60).await.unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), in_flight.reserve(1, 60));
        assert!(waiting.await.is_err(), "no room for 60 more bytes");
        drop(first);
        let huge = in_flight.reserve(1, 1_000).await.unwrap();
        assert_eq!(in_flight.bytes.available_permits(), 0);
        drop(huge);
        assert_eq!(in_flight.bytes.available_permits(), 100);
    }
}
