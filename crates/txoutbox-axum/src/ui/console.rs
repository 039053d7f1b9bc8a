//! The console's state: its store, settings, the per-second timeline and the cached per-topic
//! statistics.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use txoutbox_core::coordination::Leases;
use txoutbox_core::{DeadLetters, Error, Statistics, Store, TopicStats};

use super::console_store::{ConsoleStore, Plain, WithLeases};
use super::inbox_store::InboxConsoleStore;
use crate::history::{Histogram, Timeline};

/// The shortest console token accepted, so that a guessable one is refused.
pub const MIN_TOKEN_LEN: usize = 16;

/// The web console at `/ui` (see [`RelayRoutes::console`](crate::RelayRoutes::console)): an
/// overview of the backlog with charts, the dead letters with replay and purge and, with
/// [`with_inbox`](Self::with_inbox), a consumer inbox's parked records. Read-only unless it has a
/// token; payloads stay hidden unless shown on purpose.
pub struct Console {
    pub(crate) store: Arc<dyn ConsoleStore>,
    pub(crate) inbox: Option<Arc<dyn InboxConsoleStore>>,
    token: Option<String>,
    pub(crate) show_payloads: bool,
    pub(crate) timeline: Timeline,
    pub(crate) topics: Mutex<TopicCache>,
    pub(crate) last: Mutex<Option<Last>>,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("Console")
            .field("table", &self.store.table())
            .field("inbox", &self.inbox.as_ref().map(|inbox| inbox.table()))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("show_payloads", &self.show_payloads)
            .finish_non_exhaustive()
    }
}

/// The cached per-topic statistics.
#[derive(Debug, Default)]
pub(crate) struct TopicCache {
    pub(crate) rows: Option<(DateTime<Utc>, Vec<TopicStats>)>,
    pub(crate) error: Option<String>,
    pub(crate) refreshing: bool,
    pub(crate) started: Option<Instant>,
}

/// The previous second's counters, to compute the next sample's deltas.
#[derive(Debug)]
pub(crate) struct Last {
    pub(crate) at: Instant,
    pub(crate) published: u64,
    pub(crate) latency: Option<Histogram>,
}

impl Console {
    /// A read-only console over `store` (a store of the store crates, e.g. from
    /// `PgOutbox::store`; a pool of its own keeps the console's reads off the relay's
    /// connections).
    pub fn new<S>(store: S) -> Self
    where
        S: Store + DeadLetters + Statistics,
    {
        Self::from_store(Arc::new(Plain(store)))
    }

    /// A read-only console over `store` that also shows the coordination leases (PostgreSQL with
    /// `Relay::coordinated`).
    pub fn with_leases<S>(store: S) -> Self
    where
        S: Store + DeadLetters + Statistics + Leases,
    {
        Self::from_store(Arc::new(WithLeases(store)))
    }

    /// A read-only console over a store of another kind.
    pub fn from_store(store: Arc<dyn ConsoleStore>) -> Self {
        Self {
            store,
            inbox: None,
            token: None,
            show_payloads: false,
            timeline: Timeline::default(),
            topics: Mutex::new(TopicCache::default()),
            last: Mutex::new(None),
        }
    }

    /// Allows replay and purge to requests that carry `token` (`Authorization: Bearer …`, same
    /// origin); fails when it is shorter than [`MIN_TOKEN_LEN`] characters (e.g. use the output
    /// of `openssl rand -hex 24`).
    pub fn with_token(mut self, token: impl Into<String>) -> Result<Self, Error> {
        let token = token.into().trim().to_owned();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(Error::Config(format!(
                "the console token must have at least {MIN_TOKEN_LEN} characters"
            )));
        }
        self.token = Some(token);
        Ok(self)
    }

    /// Adds the inbox view at `/ui/inbox`: the parked records of a consumer inbox's table
    /// (txoutbox-inbox), with replay and purge under the same token as the dead letters'.
    #[must_use]
    pub fn with_inbox(mut self, inbox: impl InboxConsoleStore) -> Self {
        self.inbox = Some(Arc::new(inbox));
        self
    }

    /// Whether the dead-letter view may show payloads (default: no).
    #[must_use]
    pub fn show_payloads(mut self, show: bool) -> Self {
        self.show_payloads = show;
        self
    }

    /// Whether actions are disabled (no token configured).
    pub fn read_only(&self) -> bool {
        self.token.is_none()
    }

    /// The configured token.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}
