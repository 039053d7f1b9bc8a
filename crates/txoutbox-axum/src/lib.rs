//! A txoutbox relay's HTTP endpoints as an [axum](https://docs.rs/axum) router that a service
//! running the relay in-process mounts in its own: `/live`, `/health`, `/status`, `/metrics`
//! (Prometheus) and the web console at `/ui`, behind the same checks as the `txoutbox` daemon's
//! (which serves this very router). Build it with [`RelayRoutes`].
//!
//! Each relay's metrics carry its `table` label (and `slot` in WAL mode), so several relays in
//! one process keep apart series; one [`install_prometheus`] per process serves them all.

// No panic on data (why these lints are here and not in Cargo.toml: clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod endpoints;
mod guard;
mod history;
mod prometheus;
mod reports;
mod routes;
mod state;
mod ui;

pub use guard::AllowedHosts;
pub use prometheus::install_prometheus;
pub use reports::Reports;
pub use routes::RelayRoutes;
pub use ui::{BoxFuture, Console, ConsoleStore, InboxConsoleStore, MIN_TOKEN_LEN, ParkedInboxRecord};

/// The Prometheus handle [`RelayRoutes::prometheus`] takes (`metrics-exporter-prometheus`).
pub use metrics_exporter_prometheus::PrometheusHandle;
