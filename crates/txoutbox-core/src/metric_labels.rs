//! The labels that tell one relay's metrics from another's in the same process.

use std::sync::Arc;

use metrics::{Label, SharedString};

use crate::identifier::DEFAULT_TABLE;

/// The labels every metric of one relay carries: `table` (the outbox table) and, in WAL mode,
/// `slot` (the replication slot). Two relays in one process on two tables (or slots) keep apart
/// series; a relay takes them from its store ([`Store::metric_labels`](crate::Store::metric_labels)).
///
/// Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricLabels {
    labels: Arc<[Label]>,
}

impl Default for MetricLabels {
    /// `table` = `outbox_messages` (the default table).
    fn default() -> Self {
        Self::table(DEFAULT_TABLE)
    }
}

impl MetricLabels {
    /// The label name of the outbox table.
    pub const TABLE: &'static str = "table";
    /// The label name of the replication slot (WAL mode).
    pub const SLOT: &'static str = "slot";

    /// `table` = `name`.
    pub fn table(name: impl AsRef<str>) -> Self {
        Self {
            labels: Arc::from([label(Self::TABLE, name.as_ref())]),
        }
    }

    /// These labels and `slot` = `name` (WAL mode).
    #[must_use]
    pub fn with_slot(self, name: impl AsRef<str>) -> Self {
        self.with(Self::SLOT, name.as_ref())
    }

    fn with(self, key: &'static str, value: &str) -> Self {
        let labels = self
            .labels
            .iter()
            .filter(|l| l.key() != key)
            .cloned()
            .chain([label(key, value)])
            .collect();
        Self { labels }
    }

    /// The value of label `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|l| l.key() == key).map(Label::value)
    }

    /// The `(name, value)` pairs, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.labels.iter().map(|l| (l.key(), l.value()))
    }

    /// The labels, for a metric that has none of its own.
    pub(crate) fn to_vec(&self) -> Vec<Label> {
        self.labels.to_vec()
    }

    /// The labels and one of the metric's own.
    pub(crate) fn and(&self, key: &'static str, value: impl Into<SharedString>) -> Vec<Label> {
        let mut labels = self.to_vec();
        labels.push(Label::new(key, value));
        labels
    }
}

fn label(key: &'static str, value: &str) -> Label {
    Label::new(key, SharedString::from_shared(Arc::<str>::from(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_joins_the_table() {
        let labels = MetricLabels::table("orders_outbox")
            .with_slot("s1")
            .with_slot("s2");
        assert_eq!(labels.get("table"), Some("orders_outbox"));
        assert_eq!(labels.get("slot"), Some("s2"));
        assert_eq!(
            labels.pairs().collect::<Vec<_>>(),
            [("table", "orders_outbox"), ("slot", "s2")]
        );
        assert_eq!(MetricLabels::default().get("table"), Some(DEFAULT_TABLE));
        let with_topic = labels.and("topic", "orders");
        assert_eq!(with_topic.len(), 3);
    }
}
