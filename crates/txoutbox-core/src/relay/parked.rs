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
    /// Keys this relay parked whose dead row may not be committed yet: no reload drops them.
    unconfirmed: HashSet<HeldKey>,
    /// Bumped whenever this relay parks a key or confirms one, so a reload that started before
    /// (and may have missed the dead row) does not drop it.
    generation: u64,
}

impl ParkedKeys {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks a key this relay is dead-lettering a message of, before the dead row is written.
    pub(crate) fn park(&self, key: HeldKey) {
        let mut inner = self.inner();
        inner.keys.insert(key.clone());
        inner.unconfirmed.insert(key);
        inner.generation += 1;
    }

    /// The dead rows of these parked keys are committed: from now on the store lists them.
    pub(crate) fn confirm<'a>(&self, keys: impl IntoIterator<Item = &'a HeldKey>) {
        let mut inner = self.inner();
        for key in keys {
            inner.unconfirmed.remove(key);
        }
        inner.generation += 1;
    }

    /// Whether the key is parked.
    pub(crate) fn contains(&self, topic: &str, key: &[u8]) -> bool {
        let inner = self.inner();
        !inner.keys.is_empty()
            && inner
                .keys
                .contains(&(topic.into(), bytes::Bytes::copy_from_slice(key)))
    }

    /// Taken before reading the parked keys from the store, given back to [`reload`](Self::reload).
    pub(crate) fn generation(&self) -> u64 {
        self.inner().generation
    }

    /// Replaces the set with what the store lists (read after `generation` was taken); keys whose
    /// dead row is not committed yet, or was committed during the read, are kept. Returns whether
    /// any key was released.
    pub(crate) fn reload(&self, from_store: Vec<HeldKey>, generation: u64) -> bool {
        let mut inner = self.inner();
        let mut keys: HashSet<HeldKey> = from_store.into_iter().collect();
        // The mutant trusts the store alone, as the relay did before 6ed0bbe.
        #[cfg(not(txoutbox_sim_mutant = "parked_reload_forgets"))]
        keys.extend(inner.unconfirmed.iter().cloned());
        #[cfg(not(txoutbox_sim_mutant = "parked_reload_forgets"))]
        if inner.generation != generation {
            // A key parked or confirmed during the read may be missing from it: keep ours until
            // next time.
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
        ("t".into(), bytes::Bytes::copy_from_slice(k.as_bytes()))
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
    fn a_key_stays_parked_until_its_dead_row_is_committed_and_read() {
        let parked = ParkedKeys::default();
        parked.park(key("new")); // its dead row is being written
        for _ in 0..3 {
            let generation = parked.generation();
            assert!(!parked.reload(Vec::new(), generation), "not committed yet: kept");
            assert!(parked.contains("t", b"new"));
        }
        // Committed while a reload was reading: that reload may have missed it, and keeps it.
        let generation = parked.generation();
        parked.confirm([&key("new")]);
        assert!(!parked.reload(Vec::new(), generation));
        assert!(parked.contains("t", b"new"));
        // Read from the store: kept; then replayed (no longer listed): released.
        let generation = parked.generation();
        assert!(!parked.reload(vec![key("new")], generation));
        let generation = parked.generation();
        assert!(parked.reload(Vec::new(), generation));
        assert_eq!(parked.len(), 0);
    }
}
