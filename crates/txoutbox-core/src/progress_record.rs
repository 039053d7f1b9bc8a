//! A transactional sink's progress, as the relay checks it against the table at start: progress
//! that vanished while the table remembers deliveries under it stops the relay instead of
//! sending again rows the transport may already hold.

use crate::error::{Error, Result};

/// Where a sink that records progress (a transactional sink) keeps it, and whether its last
/// [`Sink::recover`](crate::Sink::recover) found any (see
/// [`Sink::progress_record`](crate::Sink::progress_record)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRecord {
    /// The name the progress is kept under (Kafka: the transactional id).
    pub key: String,
    /// Where it is kept, for messages (Kafka: the progress topic).
    pub location: String,
    /// Whether the last recovery found progress under `key`.
    pub found: bool,
}

/// What the relay does about a [`ProgressRecord`] once it knows whether the table remembers
/// deliveries under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProgressStep {
    /// Nothing: the table keeps no such record, or remembers the key and the progress is there.
    Nothing,
    /// Remember the key now: the progress is there, the table does not know it yet (a table
    /// migrated while the relay ran before, or its record was removed).
    KeepNow,
    /// Remember the key after the first delivery: no progress yet, none expected.
    KeepAfterFirstDelivery,
}

impl ProgressRecord {
    /// The step for this record given what the table remembers (`None`: the store keeps no
    /// record), or the error that stops the relay when the progress is gone; `table` names the
    /// outbox table in that error.
    pub(crate) fn step(&self, kept: Option<bool>, table: &str) -> Result<ProgressStep> {
        match (kept, self.found) {
            (None, _) | (Some(true), true) => Ok(ProgressStep::Nothing),
            (Some(false), true) => Ok(ProgressStep::KeepNow),
            (Some(false), false) => Ok(ProgressStep::KeepAfterFirstDelivery),
            (Some(true), false) => Err(Error::Config(format!(
                "the exactly-once progress of `{key}` is gone from {location}, but the table {table} \
                 records that a relay delivered under `{key}` before: the progress was deleted (the \
                 topic deleted or recreated, or its records removed). The rows the transport committed \
                 but the table had not marked yet cannot be told from the others, so the relay does not \
                 guess. Restore the progress if you can; or accept that read_committed consumers may see \
                 those rows twice: delete the record (`DELETE FROM {table}_relay_progress WHERE \
                 progress_key = '{key}'`) and start the relay again",
                key = self.key,
                location = self.location,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(found: bool) -> ProgressRecord {
        ProgressRecord {
            key: "txoutbox-outbox_messages".into(),
            location: "the topic `progress`".into(),
            found,
        }
    }

    #[test]
    fn progress_gone_from_a_table_that_remembers_it_stops_the_relay() {
        let err = record(false)
            .step(Some(true), "shop.outbox")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is gone from the topic `progress`"), "{err}");
        assert!(err.contains("shop.outbox_relay_progress"), "{err}");
        assert!(err.contains("progress_key = 'txoutbox-outbox_messages'"), "{err}");
    }

    #[test]
    fn every_other_case_goes_on() {
        assert_eq!(record(true).step(Some(true), "t").unwrap(), ProgressStep::Nothing);
        assert_eq!(record(false).step(None, "t").unwrap(), ProgressStep::Nothing);
        assert_eq!(record(true).step(None, "t").unwrap(), ProgressStep::Nothing);
        assert_eq!(
            record(true).step(Some(false), "t").unwrap(),
            ProgressStep::KeepNow
        );
        assert_eq!(
            record(false).step(Some(false), "t").unwrap(),
            ProgressStep::KeepAfterFirstDelivery
        );
    }
}
