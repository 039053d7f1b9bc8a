//! [`RelayRoutes`]: the builder of the router an application mounts.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::time::Instant;
use txoutbox_core::coordination::{Coordination, Ownership};
use txoutbox_core::{Error, HealthCheck, RelayMonitor, Store};

use crate::guard::AllowedHosts;
use crate::history::History;
use crate::reports::Reports;
use crate::state::RouteState;
use crate::ui::Console;

/// A periodic health check, type-erased: runs one check and publishes it.
type Checker = Box<dyn Fn(Reports) -> crate::ui::BoxFuture<'static, ()> + Send + Sync>;

/// Builds the router of one relay's endpoints, to `.merge()` into an application's router (or
/// `.nest()` under a path, one per relay):
///
/// | route | answer |
/// |---|---|
/// | `GET /live` | 200 while the relay runs, 503 otherwise |
/// | `GET /health` | the latest [`HealthReport`](txoutbox_core::HealthReport) as JSON; 503 with the reasons when unhealthy or before the first check |
/// | `GET /status` | JSON: counters, publish rate, health, coordination |
/// | `GET /metrics` | Prometheus text, with [`prometheus`](Self::prometheus) |
/// | `/ui`, `/ui/api/…` | the web console, with [`console`](Self::console) |
///
/// Every route is behind the same checks as the daemon's: requests to a `Host` that is not an IP
/// address, `localhost` or one of the [`allowed_hosts`](Self::allowed_hosts) are refused (DNS
/// rebinding), and so are cross-site ones (`Origin`, `Sec-Fetch-Site`); console actions also
/// need the console's token. The reads need none: on a service that faces the internet, serve
/// these routes on a private listener rather than merging them into the public router.
///
/// ```no_run
/// # async fn demo<S, K>(store: S, sink: K) -> Result<(), Box<dyn std::error::Error>>
/// # where S: txoutbox_core::Store + Clone + txoutbox_core::DeadLetters + txoutbox_core::Statistics, K: txoutbox_core::Sink {
/// use std::time::Duration;
/// use txoutbox_axum::{Console, RelayRoutes, install_prometheus};
/// use txoutbox_core::{HealthCheck, HealthThresholds, Relay, RelayConfig};
///
/// let prometheus = install_prometheus()?; // once per process
/// let relay = Relay::new(store.clone(), sink, RelayConfig::default())?.start();
/// let check = HealthCheck::new(store.clone(), HealthThresholds::none()).with_relay(relay.monitor());
/// let routes = RelayRoutes::new(relay.monitor())
///     .health_check(check, Duration::from_secs(5))
///     .prometheus(prometheus)
///     .console(Console::new(store))
///     .into_router()?;
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "shop" })).merge(routes);
/// # let _ = app; Ok(()) }
/// ```
pub struct RelayRoutes {
    monitor: RelayMonitor,
    prometheus: Option<PrometheusHandle>,
    reports: Reports,
    checker: Option<(Checker, Duration)>,
    ownership: Option<Ownership>,
    mode: &'static str,
    console: Option<Console>,
    allowed_hosts: AllowedHosts,
}

impl std::fmt::Debug for RelayRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayRoutes")
            .field("labels", self.monitor.metric_labels())
            .field("metrics", &self.prometheus.is_some())
            .field("health_check", &self.checker.as_ref().map(|(_, every)| every))
            .field("mode", &self.mode)
            .field("console", &self.console)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

impl RelayRoutes {
    /// The routes of the relay `monitor` watches (`Relay::monitor`, `RelayHandle::monitor`):
    /// `/live`, `/status` and `/health` (which answers 503 until a
    /// [`health_check`](Self::health_check) or the [`reports`](Self::reports) handle publishes).
    pub fn new(monitor: RelayMonitor) -> Self {
        Self {
            monitor,
            prometheus: None,
            reports: Reports::default(),
            checker: None,
            ownership: None,
            mode: "single",
            console: None,
            allowed_hosts: AllowedHosts::default(),
        }
    }

    /// Serves `/metrics` from this recorder (the application's own, or
    /// [`install_prometheus`](crate::install_prometheus)'s); the console's latency chart reads
    /// it too.
    #[must_use]
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// Runs `check` every `every` (one backlog query each time) and serves its latest report at
    /// `/health`. The check also sets the backlog and `up` gauges. It stops when the router is
    /// dropped.
    #[must_use]
    pub fn health_check<S: Store + Clone>(mut self, check: HealthCheck<S>, every: Duration) -> Self {
        let check = Arc::new(check);
        let checker: Checker = Box::new(move |reports: Reports| {
            let check = Arc::clone(&check);
            Box::pin(async move { reports.publish(check.check().await) })
        });
        self.checker = Some((checker, every));
        self
    }

    /// A coordinated relay (`Relay::coordinated`, [`Relay::ownership`](txoutbox_core::Relay::ownership)):
    /// `/status` and the console show its mode and leases.
    #[must_use]
    pub fn ownership(mut self, ownership: Ownership, coordination: &Coordination) -> Self {
        self.ownership = Some(ownership);
        self.mode = coordination.name();
        self
    }

    /// Serves the web console at `/ui`.
    #[must_use]
    pub fn console(mut self, console: Console) -> Self {
        self.console = Some(console);
        self
    }

    /// The host names requests may be sent to besides IP addresses and `localhost` (e.g. the
    /// service's DNS name): every other `Host` is refused.
    #[must_use]
    pub fn allowed_hosts(mut self, hosts: AllowedHosts) -> Self {
        self.allowed_hosts = hosts;
        self
    }

    /// The handle that publishes health reports and `/status` fields, for an application that
    /// runs its own checks.
    pub fn reports(&self) -> Reports {
        self.reports.clone()
    }

    /// The router, its state set (a `Router<()>` to merge or nest anywhere). Starts the
    /// background tasks (the health check, the per-second publish-rate sampler) on the current
    /// tokio runtime; they end once the router and its clones are dropped. Fails outside a
    /// tokio runtime.
    pub fn into_router(self) -> Result<Router, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Config(format!("the relay's routes need a tokio runtime: {e}")))?;
        let state = Arc::new(RouteState {
            prometheus: self.prometheus,
            reports: self.reports,
            published: History::starting_at(Instant::now(), self.monitor.published()),
            monitor: self.monitor,
            ownership: self.ownership,
            mode: self.mode,
            console: self.console,
        });
        if let Some((checker, every)) = self.checker {
            runtime.spawn(run_checks(Arc::downgrade(&state), checker, every));
        }
        runtime.spawn(sample_every_second(Arc::downgrade(&state)));

        let mut routes = Router::new()
            .route("/metrics", get(crate::endpoints::metrics))
            .route("/health", get(crate::endpoints::health))
            .route("/live", get(crate::endpoints::live))
            .route("/status", get(crate::endpoints::status));
        if state.console.is_some() {
            routes = routes.merge(crate::ui::routes());
        }
        Ok(routes
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(self.allowed_hosts),
                crate::guard::guard,
            ))
            .with_state(state))
    }
}

/// Runs the health check every `every` while the routes live.
async fn run_checks(state: Weak<RouteState>, checker: Checker, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    // A check slower than `every` (a slow database) is not followed at once by the next one.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(reports) = state.upgrade().map(|s| s.reports.clone()) else {
            return;
        };
        checker(reports).await;
    }
}

/// Samples the published count (and the console's timeline) every second while the routes live.
async fn sample_every_second(state: Weak<RouteState>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        let now = ticker.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        state.published.record(now, state.monitor.published());
        if let Some(console) = &state.console {
            console.record_second(&state, now);
        }
    }
}
