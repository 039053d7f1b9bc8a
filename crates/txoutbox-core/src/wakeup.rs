//! The handle that wakes a relay: shared by the relay (which hands it out) and the stores (whose
//! watchers call it), so neither depends on the other for it.

use std::sync::Arc;

use tokio::sync::Notify;

/// Wakes a relay when new messages were committed, so it does not wait for its poll interval.
#[derive(Debug, Clone)]
pub struct Wakeup {
    notify: Arc<Notify>,
}

impl Wakeup {
    /// A handle that notifies `notify` (the relay's).
    pub(crate) fn new(notify: Arc<Notify>) -> Self {
        Self { notify }
    }

    /// Asks the relay to look for new messages now. Cheap; many calls coalesce into one look.
    pub fn notify(&self) {
        self.notify.notify_one();
    }
}
