//! What the routes serve of a relay's checks: the latest health report and extra `/status`
//! fields, written by the router's own health check or by the application's.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};
use tracing::{info, warn};
use txoutbox_core::HealthReport;

/// The latest health report `/health` serves and the extra fields `/status` shows. Cheap to
/// clone; obtained from [`RelayRoutes::reports`](crate::RelayRoutes::reports).
///
/// [`RelayRoutes::health_check`](crate::RelayRoutes::health_check) publishes its reports here;
/// an application that checks more than the relay (the daemon checks its replication slot in
/// WAL mode) runs its own timer and publishes instead.
#[derive(Debug, Clone, Default)]
pub struct Reports {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    health: RwLock<Option<HealthReport>>,
    status: RwLock<Map<String, Value>>,
}

impl Reports {
    /// Makes `report` the one `/health` serves; logs when health changes (`unhealthy` with the
    /// reasons, or `healthy`).
    pub fn publish(&self, report: HealthReport) {
        let mut latest = self.inner.health.write().unwrap_or_else(|p| p.into_inner());
        let changed = latest.as_ref().is_none_or(|old| old.healthy != report.healthy);
        if changed && !report.healthy {
            warn!(reasons = ?report.reasons, "unhealthy");
        } else if changed {
            info!("healthy");
        }
        *latest = Some(report);
    }

    /// The latest report (`None` until the first check).
    pub fn latest(&self) -> Option<HealthReport> {
        self.inner
            .health
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets field `name` of the `/status` document (e.g. the daemon's `wal_slot`).
    pub fn set_status(&self, name: impl Into<String>, value: Value) {
        self.inner
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.into(), value);
    }

    /// The extra `/status` fields.
    pub(crate) fn status_fields(&self) -> Map<String, Value> {
        self.inner
            .status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
