//! Keys parked behind a dead-lettered message ([`OnDeadLetter::ParkKey`]).
//!
//! The table is the truth (a key is parked while it has a dead row); the relay keeps a copy, read
//! again now and then so a replay or purge made elsewhere (the CLI, another node) releases the
//! key, and updated at once when this relay dead-letters a message.
//!
//! [`OnDeadLetter::ParkKey`]: super::config::OnDeadLetter::ParkKey

use std::collections::HashSet;
use std::sync::Mutex;

use super::select::HeldKey;

/// The parked keys this relay knows of.
#[derive(Debug, Default)]
pub(crate) struct ParkedKeys {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashSet<HeldKey>,
    /// Bumped whenever this relay parks a key, so a reload that started before does not drop it.
    generation: u64,
}

impl ParkedKeys {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks a key this relay just dead-lettered a message of.
    pub(crate) fn park(&self, key: HeldKey) {
        let mut inner = self.inner();
        inner.keys.insert(key);
        inner.generation += 1;
    }

    /// Whether the key is parked.
    pub(crate) fn contains(&self, topic: &str, key: &[u8]) -> bool {
        let inner = self.inner();
        !inner.keys.is_empty() && inner.keys.contains(&(topic.to_owned(), key.to_vec()))
    }

    /// Taken before reading the parked keys from the store, given back to [`reload`](Self::reload).
    pub(crate) fn generation(&self) -> u64 {
        self.inner().generation
    }

    /// Replaces the set with what the store lists (read after `generation` was taken); keys parked
    /// by this relay meanwhile are kept. Returns whether any key was released.
    pub(crate) fn reload(&self, from_store: Vec<HeldKey>, generation: u64) -> bool {
        let mut inner = self.inner();
        let mut keys: HashSet<HeldKey> = from_store.into_iter().collect();
        if inner.generation != generation {
            // A key parked during the read may be missing from it: keep ours until next time.
            keys.extend(inner.keys.iter().cloned());
        }
        let released = inner.keys.iter().any(|key| !keys.contains(key));
        inner.keys = keys;
        released
    }

    /// How many keys are parked.
    pub(crate) fn len(&self) -> usize {
        self.inner().keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> HeldKey {
        ("t".to_owned(), k.as_bytes().to_vec())
    }

    #[test]
    fn a_reload_releases_keys_the_store_no_longer_lists() {
        let parked = ParkedKeys::default();
        let generation = parked.generation();
        assert!(!parked.reload(vec![key("a"), key("b")], generation));
        assert!(parked.contains("t", b"a") && parked.contains("t", b"b"));
        let generation = parked.generation();
        assert!(parked.reload(vec![key("b")], generation));
        assert!(!parked.contains("t", b"a") && parked.contains("t", b"b"));
        assert!(!parked.contains("u", b"b"));
    }

    #[test]
    fn a_key_parked_during_a_reload_is_kept() {
        let parked = ParkedKeys::default();
        let generation = parked.generation();
        parked.park(key("new")); // dead-lettered while the store was being read
        assert!(!parked.reload(Vec::new(), generation));
        assert!(parked.contains("t", b"new"));
        // The next reload, which sees the dead row, keeps it; one that does not, releases it.
        let generation = parked.generation();
        assert!(!parked.reload(vec![key("new")], generation));
        let generation = parked.generation();
        assert!(parked.reload(Vec::new(), generation));
        assert_eq!(parked.len(), 0);
    }
}
