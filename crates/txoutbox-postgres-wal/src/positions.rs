//! What an exactly-once sink records of a WAL relay's progress: positions in the log, never the
//! store's per-session ids.
//!
//! A message is named by its transaction's commit position (the end of its commit record, which
//! every replay decodes the same) and its index among the transaction's outbox messages. A
//! description says: every outbox transaction that committed at or below `upto` is done, and so
//! is every one whose commit position lies in a `done` range, and of the `partial` ones the listed
//! indexes. Ranges stay valid across sessions because the set of outbox transactions that commit
//! between two positions is fixed by the log.

use pgwire_replication::Lsn;
use serde::{Deserialize, Serialize};
use txoutbox_core::{Error, Result};

/// The description format written now.
pub(crate) const VERSION: u32 = 1;

/// A run of indexes `[first, last]` of one transaction's messages.
pub(crate) type Run = (u32, u32);

/// The recorded progress of a WAL relay (the JSON its sink stores).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Description {
    /// Format version.
    pub(crate) wal: u32,
    /// The slot the progress belongs to.
    pub(crate) slot: String,
    /// Every outbox transaction with its commit at or below this position is done.
    #[serde(with = "lsn_text")]
    pub(crate) upto: Lsn,
    /// Ranges of commit positions: every outbox transaction committed in one is done.
    #[serde(with = "lsn_ranges")]
    pub(crate) done: Vec<(Lsn, Lsn)>,
    /// Transactions done in part: the commit position and the done indexes.
    #[serde(with = "lsn_partials")]
    pub(crate) partial: Vec<(Lsn, Vec<Run>)>,
}

impl Description {
    /// Reads a description back; an error that says what wrote it otherwise.
    pub(crate) fn parse(value: &serde_json::Value, slot: &str) -> Result<Self> {
        let version = value.get("wal").and_then(serde_json::Value::as_u64);
        match version {
            None => {
                return Err(Error::Config(
                    "the exactly-once progress of this transactional id was not written by a WAL relay \
                     (it names outbox row ids): give the WAL relay a transactional id of its own"
                        .into(),
                ));
            }
            Some(v) if v > u64::from(VERSION) => {
                return Err(Error::Config(format!(
                    "the exactly-once progress was written by a newer txoutbox (WAL progress format {v}, this \
                     one reads up to {VERSION}): upgrade this relay"
                )));
            }
            Some(_) => {}
        }
        let description: Self = serde_json::from_value(value.clone()).map_err(|e| {
            Error::Config(format!(
                "the exactly-once WAL progress is not readable ({e}): refusing to guess which messages Kafka holds"
            ))
        })?;
        if description.slot != slot {
            return Err(Error::Config(format!(
                "the exactly-once progress of this transactional id belongs to the replication slot `{}`, and \
                 this relay streams `{slot}`: give each slot's relay a transactional id of its own",
                description.slot
            )));
        }
        Ok(description)
    }
}

/// How much of one transaction a description covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Covered {
    /// Every message.
    All,
    /// The messages at these indexes.
    Some(Vec<Run>),
    /// None.
    Nothing,
}

/// Builds a description from the transactions a store holds, in commit order.
pub(crate) struct Builder {
    description: Description,
    /// Whether every transaction pushed so far was done (so a done one raises `upto`).
    leading: bool,
    /// The open range of done transactions.
    run: Option<(Lsn, Lsn)>,
}

impl Builder {
    /// Starts from the position below which everything is done.
    pub(crate) fn new(slot: &str, upto: Lsn) -> Self {
        Self {
            description: Description {
                wal: VERSION,
                slot: slot.to_owned(),
                upto,
                done: Vec::new(),
                partial: Vec::new(),
            },
            leading: true,
            run: None,
        }
    }

    /// The next transaction in commit order, and how much of it is done.
    pub(crate) fn push(&mut self, end: Lsn, covered: Covered) {
        match covered {
            Covered::All if self.leading => self.description.upto = self.description.upto.max(end),
            Covered::All => {
                self.run = Some(self.run.map_or((end, end), |(first, _)| (first, end)));
            }
            Covered::Some(runs) => {
                self.break_run();
                self.description.partial.push((end, runs));
            }
            Covered::Nothing => self.break_run(),
        }
    }

    fn break_run(&mut self) {
        self.leading = false;
        if let Some(run) = self.run.take() {
            self.description.done.push(run);
        }
    }

    /// Adds what a skip still names beyond `streamed` (the stream has not reached it yet).
    pub(crate) fn finish(mut self, skip: Option<&Skip>, streamed: Lsn) -> Description {
        self.leading = false;
        self.break_run();
        if let Some(skip) = skip {
            let d = &mut self.description;
            d.upto = d.upto.max(skip.upto);
            let above = Lsn(streamed.0.saturating_add(1));
            d.done.extend(
                skip.done
                    .iter()
                    .filter(|&&(_, last)| last > streamed)
                    .map(|&(first, last)| (first.max(above), last)),
            );
            d.partial
                .extend(skip.partial.iter().filter(|(end, _)| *end > streamed).cloned());
        }
        let upto = self.description.upto;
        self.description.done.retain(|&(_, last)| last > upto);
        for range in &mut self.description.done {
            range.0 = range.0.max(Lsn(upto.0.saturating_add(1)));
        }
        self.description.partial.retain(|(end, _)| *end > upto);
        self.description
    }
}

/// The messages a new session skips: the last description its sink recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skip {
    upto: Lsn,
    done: Vec<(Lsn, Lsn)>,
    partial: Vec<(Lsn, Vec<Run>)>,
}

impl Skip {
    /// The skip a description asks for.
    pub(crate) fn new(description: Description) -> Self {
        Self {
            upto: description.upto,
            done: description.done,
            partial: description.partial,
        }
    }

    /// How much of the transaction committed at `end` was delivered already.
    pub(crate) fn covered(&self, end: Lsn) -> Covered {
        if end <= self.upto || self.done.iter().any(|&(first, last)| first <= end && end <= last) {
            return Covered::All;
        }
        match self.partial.iter().find(|(at, _)| *at == end) {
            Some((_, runs)) => Covered::Some(runs.clone()),
            None => Covered::Nothing,
        }
    }

    /// Forgets what lies at or below `streamed` (the stream is past it); whether anything is left.
    pub(crate) fn prune(&mut self, streamed: Lsn) -> bool {
        self.done.retain(|&(_, last)| last > streamed);
        self.partial.retain(|(end, _)| *end > streamed);
        self.upto > streamed || !self.done.is_empty() || !self.partial.is_empty()
    }
}

/// Whether `index` lies in one of `runs`.
pub(crate) fn in_runs(runs: &[Run], index: u32) -> bool {
    runs.iter().any(|&(first, last)| first <= index && index <= last)
}

/// Sorted indexes as runs.
pub(crate) fn runs(indexes: impl IntoIterator<Item = u32>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for index in indexes {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == index => *last = index,
            _ => runs.push((index, index)),
        }
    }
    runs
}

mod lsn_text {
    use pgwire_replication::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(lsn: &Lsn, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&lsn.to_pg_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(deserializer)?;
        Lsn::parse(&text).map_err(serde::de::Error::custom)
    }
}

mod lsn_ranges {
    use pgwire_replication::Lsn;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(ranges: &[(Lsn, Lsn)], serializer: S) -> Result<S::Ok, S::Error> {
        ranges
            .iter()
            .map(|(first, last)| (first.to_pg_string(), last.to_pg_string()))
            .collect::<Vec<_>>()
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(Lsn, Lsn)>, D::Error> {
        Vec::<(String, String)>::deserialize(deserializer)?
            .into_iter()
            .map(|(first, last)| {
                let parse = |s: &str| Lsn::parse(s).map_err(serde::de::Error::custom);
                let (first, last) = (parse(&first)?, parse(&last)?);
                if last < first {
                    return Err(serde::de::Error::custom("a reversed range of positions"));
                }
                Ok((first, last))
            })
            .collect()
    }
}

mod lsn_partials {
    use pgwire_replication::Lsn;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Run;

    pub(super) fn serialize<S: Serializer>(
        partials: &[(Lsn, Vec<Run>)],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        partials
            .iter()
            .map(|(end, runs)| (end.to_pg_string(), runs))
            .collect::<Vec<_>>()
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<(Lsn, Vec<Run>)>, D::Error> {
        Vec::<(String, Vec<Run>)>::deserialize(deserializer)?
            .into_iter()
            .map(|(end, runs)| {
                if runs.iter().any(|(first, last)| last < first) {
                    return Err(serde::de::Error::custom("a reversed run of indexes"));
                }
                Ok((Lsn::parse(&end).map_err(serde::de::Error::custom)?, runs))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(steps: &[(u64, Covered)], upto: u64) -> Description {
        let mut builder = Builder::new("s", Lsn(upto));
        for (end, covered) in steps {
            builder.push(Lsn(*end), covered.clone());
        }
        builder.finish(None, Lsn(steps.last().map_or(upto, |s| s.0)))
    }

    #[test]
    fn leading_done_transactions_raise_the_watermark_and_later_ones_form_ranges() {
        let d = built(
            &[
                (10, Covered::All),
                (20, Covered::All),
                (30, Covered::Nothing),
                (40, Covered::All),
                (50, Covered::All),
                (60, Covered::Some(vec![(0, 1), (3, 3)])),
                (70, Covered::All),
            ],
            5,
        );
        assert_eq!(d.upto, Lsn(20));
        assert_eq!(d.done, [(Lsn(40), Lsn(50)), (Lsn(70), Lsn(70))]);
        assert_eq!(d.partial, [(Lsn(60), vec![(0, 1), (3, 3)])]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json.to_string(),
            r#"{"wal":1,"slot":"s","upto":"0/14","done":[["0/28","0/32"],["0/46","0/46"]],"partial":[["0/3C",[[0,1],[3,3]]]]}"#
        );
        assert_eq!(Description::parse(&json, "s").unwrap(), d);
    }

    #[test]
    fn a_skip_covers_what_its_description_names_and_nothing_else() {
        let d = built(
            &[
                (10, Covered::All),
                (30, Covered::Nothing),
                (40, Covered::All),
                (60, Covered::Some(vec![(2, 4)])),
            ],
            0,
        );
        let mut skip = Skip::new(d);
        assert_eq!(skip.covered(Lsn(10)), Covered::All);
        assert_eq!(skip.covered(Lsn(7)), Covered::All);
        assert_eq!(skip.covered(Lsn(30)), Covered::Nothing);
        assert_eq!(skip.covered(Lsn(40)), Covered::All);
        assert_eq!(skip.covered(Lsn(60)), Covered::Some(vec![(2, 4)]));
        assert_eq!(skip.covered(Lsn(61)), Covered::Nothing);
        assert!(skip.prune(Lsn(40)));
        assert!(!skip.prune(Lsn(60)));
    }

    #[test]
    fn a_new_description_keeps_what_the_skip_names_beyond_the_stream() {
        let skip = Skip::new(built(
            &[
                (10, Covered::All),
                (30, Covered::Nothing),
                (40, Covered::All),
                (50, Covered::All),
                (60, Covered::Some(vec![(0, 0)])),
            ],
            0,
        ));
        // The new session streamed up to 45: 30 is done now, 40 was skipped.
        let mut builder = Builder::new("s", Lsn(10));
        builder.push(Lsn(30), Covered::All);
        builder.push(Lsn(40), Covered::All);
        let d = builder.finish(Some(&skip), Lsn(45));
        assert_eq!(d.upto, Lsn(40));
        assert_eq!(d.done, [(Lsn(46), Lsn(50))]);
        assert_eq!(d.partial, [(Lsn(60), vec![(0, 0)])]);
    }

    #[test]
    fn descriptions_of_another_slot_or_of_a_table_relay_are_refused() {
        let d = serde_json::to_value(built(&[(10, Covered::All)], 0)).unwrap();
        assert!(Description::parse(&d, "other").is_err());
        assert!(Description::parse(&serde_json::json!({"ids": [1]}), "s").is_err());
        assert!(Description::parse(&serde_json::json!({"wal": 9, "slot": "s"}), "s").is_err());
        let reversed = serde_json::json!({"wal": 1, "slot": "s", "upto": "0/0", "done": [["0/9", "0/1"]], "partial": []});
        assert!(Description::parse(&reversed, "s").is_err());
    }

    #[test]
    fn indexes_become_runs() {
        assert_eq!(runs([0, 1, 2, 5, 7, 8]), [(0, 2), (5, 5), (7, 8)]);
        assert!(in_runs(&[(0, 2), (5, 5)], 5));
        assert!(!in_runs(&[(0, 2), (5, 5)], 3));
    }
}
