//! What the handlers read, shared by the routes and their background tasks.

use metrics_exporter_prometheus::PrometheusHandle;
use txoutbox_core::RelayMonitor;
use txoutbox_core::coordination::Ownership;

use crate::history::History;
use crate::reports::Reports;
use crate::ui::console::Console;

/// What the handlers read; written by the routes' background tasks (and by [`Reports`]).
#[derive(Debug)]
pub(crate) struct RouteState {
    /// Renders the metrics (`None`: no `/metrics`, and no latency in the console's charts).
    pub(crate) prometheus: Option<PrometheusHandle>,
    /// The latest health report and the extra `/status` fields.
    pub(crate) reports: Reports,
    /// The relay's own view.
    pub(crate) monitor: RelayMonitor,
    /// Published counts over time.
    pub(crate) published: History,
    /// A coordinated relay's leases, and its coordination's name (`single`, `exclusive`,
    /// `work-balance`).
    pub(crate) ownership: Option<Ownership>,
    pub(crate) mode: &'static str,
    /// The web console at `/ui`, when enabled.
    pub(crate) console: Option<Console>,
}
