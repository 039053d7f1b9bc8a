//! The console's state inside the daemon: its database, settings, the per-second timeline and
//! the cached per-topic statistics.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::{info, warn};
use txoutbox_core::TopicStats;
use txoutbox_core::coordination::Coordination;

use crate::console_settings::ConsoleSettings;
use crate::database::Database;
use crate::history::{Histogram, Timeline};
use crate::settings::RelaySettings;

/// The console's state inside the daemon.
#[derive(Debug)]
pub(crate) struct Console {
    pub(crate) database: Database,
    pub(crate) settings: ConsoleSettings,
    /// `single`, `exclusive` or `work-balance`.
    pub(crate) mode: &'static str,
    pub(crate) timeline: Timeline,
    pub(crate) topics: Mutex<TopicCache>,
    pub(crate) last: Mutex<Option<Last>>,
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
    /// The console the daemon's settings ask for, if any (and once its database is set).
    pub(crate) fn from_settings(settings: &RelaySettings) -> Option<Self> {
        let console = settings.console.as_ref()?;
        let database = console.database.clone()?;
        let mode = match settings.coordination {
            Coordination::Single => "single",
            Coordination::Exclusive(_) => "exclusive",
            Coordination::WorkBalance(_) => "work-balance",
            _ => "coordinated",
        };
        let address = settings.http_listen.as_deref().unwrap_or_default();
        let loopback = address
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
            || address.starts_with("localhost:");
        info!(
            path = "/ui",
            read_only = console.token.is_none(),
            show_payloads = console.show_payloads,
            "serving the web console"
        );
        if !loopback {
            warn!(
                %address,
                "the web console is served on a non-loopback address: anyone who reaches it can read the \
                 backlog and the dead letters' keys and errors; put it behind an authenticating proxy"
            );
        }
        Some(Self::new(database, console.clone(), mode))
    }

    /// The console of `database`, for a relay in coordination `mode`.
    pub(crate) fn new(database: Database, settings: ConsoleSettings, mode: &'static str) -> Self {
        Self {
            database,
            settings,
            mode,
            timeline: Timeline::default(),
            topics: Mutex::new(TopicCache::default()),
            last: Mutex::new(None),
        }
    }

    /// Whether actions are disabled (no token configured).
    pub(crate) fn read_only(&self) -> bool {
        self.settings.token.is_none()
    }
}
