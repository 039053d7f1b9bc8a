//! Shares repeated names (topics) between the messages of a read instead of allocating each.

use std::sync::Arc;

/// Hands out one shared [`Arc<str>`] per distinct name it has seen.
///
/// Stores read far fewer distinct topics than messages; interning them makes the topic of a
/// decoded message a reference-count increment instead of an allocation. Keeps at most
/// [`Interner::CAPACITY`] names (the most recent ones), so a stream of ever-new names costs one
/// allocation each and no more memory.
#[derive(Debug, Default)]
pub struct Interner {
    names: Vec<Arc<str>>,
}

impl Interner {
    /// How many names it keeps.
    pub const CAPACITY: usize = 32;

    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(at) = self.names.iter().position(|n| &**n == name) {
            // Most recent first: the common case, one or two topics, is found at once.
            let found = self.names.remove(at);
            self.names.insert(0, Arc::clone(&found));
            return found;
        }
        let shared: Arc<str> = Arc::from(name);
        if self.names.len() == Self::CAPACITY {
            self.names.pop();
        }
        self.names.insert(0, shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_share_one_allocation() {
        let mut i = Interner::new();
        let a = i.get("orders");
        let b = i.get("payments");
        assert!(Arc::ptr_eq(&a, &i.get("orders")));
        assert!(Arc::ptr_eq(&b, &i.get("payments")));
        assert_eq!(&*a, "orders");
    }

    #[test]
    fn keeps_at_most_its_capacity() {
        let mut i = Interner::new();
        let first = i.get("t0");
        for n in 1..=Interner::CAPACITY {
            i.get(&format!("t{n}"));
        }
        assert_eq!(i.names.len(), Interner::CAPACITY);
        let again = i.get("t0");
        assert_eq!(&*again, "t0");
        assert!(!Arc::ptr_eq(&first, &again), "the oldest name was dropped");
    }
}
