//! State shared by the relay's services.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::RelayConfig;
use super::in_flight::InFlight;

/// What the fetcher and the completer share.
#[derive(Debug)]
pub(crate) struct Shared<S, K> {
    pub(crate) store: S,
    pub(crate) sink: K,
    pub(crate) config: RelayConfig,
    pub(crate) in_flight: InFlight,
    /// Wakes an idle fetcher (new rows committed, or rows released).
    pub(crate) wake: std::sync::Arc<Notify>,
    /// Set when a graceful shutdown begins.
    pub(crate) cancel: CancellationToken,
    /// While the transport reports transient failures, the fetcher waits until this instant.
    paused_until: Mutex<Option<Instant>>,
    /// When a graceful shutdown gives up waiting for deliveries: one deadline for the whole stop.
    shutdown_deadline: std::sync::OnceLock<Instant>,
}

impl<S, K> Shared<S, K> {
    pub(crate) fn new(
        store: S,
        sink: K,
        config: RelayConfig,
        wake: std::sync::Arc<Notify>,
        cancel: CancellationToken,
    ) -> Self {
        let in_flight = InFlight::new(config.max_in_flight);
        Self {
            store,
            sink,
            config,
            in_flight,
            wake,
            cancel,
            paused_until: Mutex::new(None),
            shutdown_deadline: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn pause_for(&self, delay: Duration) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + delay);
    }

    pub(crate) fn resume(&self) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn paused_until(&self) -> Option<Instant> {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        until.filter(|at| *at > Instant::now())
    }

    /// The instant a shutdown stops waiting for deliveries; fixed by the first caller after the
    /// shutdown began.
    pub(crate) fn shutdown_deadline(&self) -> Instant {
        *self
            .shutdown_deadline
            .get_or_init(|| Instant::now() + self.config.shutdown_timeout)
    }

    /// Sleeps unless a shutdown begins first; returns `false` on shutdown.
    pub(crate) async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
