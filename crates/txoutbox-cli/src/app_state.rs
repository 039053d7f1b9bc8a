//! What the daemon's HTTP handlers read, written by its background tasks.

use std::sync::RwLock;

use metrics_exporter_prometheus::PrometheusHandle;
use txoutbox_core::coordination::Ownership;
use txoutbox_core::{HealthReport, RelayMonitor};

use crate::guard::AllowedHosts;
use crate::history::History;
use crate::ui::console::Console;

/// What the handlers read; written by the daemon's background tasks.
#[derive(Debug)]
pub(crate) struct AppState {
    /// Renders the metrics.
    pub prometheus: PrometheusHandle,
    /// The latest health report (`None` until the first check).
    pub health: RwLock<Option<HealthReport>>,
    /// The relay's own view.
    pub monitor: RelayMonitor,
    /// Published counts over time.
    pub published: History,
    /// A coordinated relay's leases.
    pub ownership: Option<Ownership>,
    /// The web console at `/ui`, when enabled.
    pub console: Option<Console>,
    /// WAL mode: the replication slot as last checked (`None` otherwise).
    pub wal_slot: RwLock<Option<serde_json::Value>>,
    /// The host names requests may be sent to (see [`crate::guard`]).
    pub allowed_hosts: AllowedHosts,
}
