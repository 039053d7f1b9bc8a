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
    /// The PostgreSQL cluster's system identifier: positions mean nothing in another cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) system: Option<String>,
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
    /// Reads a description back; an error that says what wrote it otherwise. `system` is this
    /// cluster's system identifier, when known.
    pub(crate) fn parse(value: &serde_json::Value, slot: &str, system: Option<&str>) -> Result<Self> {
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
        if let (Some(recorded), Some(here)) = (description.system.as_deref(), system)
            && recorded != here
        {
            return Err(Error::Config(format!(
                "the exactly-once progress of this transactional id was written against another PostgreSQL \
                 cluster (system identifier {recorded}; this one is {here}), so its WAL positions mean nothing \
                 here: after a restore or a move to a new cluster, give the relay a new transactional id (and \
                 check which messages the consumers already have)"
            )));
        }
        Ok(description)
    }

    /// Sorts and merges what it names: overlapping or adjacent ranges become one, partials of the
    /// same transaction are united, and nothing at or below `upto` (or inside a range) is kept.
    fn normalize(&mut self) {
        let upto = self.upto;
        let above = Lsn(upto.0.saturating_add(1));
        let mut ranges: Vec<(Lsn, Lsn)> = self
            .done
            .iter()
            .filter(|&&(_, last)| last > upto)
            .map(|&(first, last)| (first.max(above), last))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(Lsn, Lsn)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                Some((_, end)) if first.0 <= end.0.saturating_add(1) => *end = (*end).max(last),
                _ => merged.push((first, last)),
            }
        }
        let mut partials: std::collections::BTreeMap<Lsn, Vec<u32>> = std::collections::BTreeMap::new();
        for (end, runs) in self.partial.drain(..) {
            if end <= upto || in_ranges(&merged, end) {
                continue;
            }
            partials
                .entry(end)
                .or_default()
                .extend(runs.iter().flat_map(|&(first, last)| first..=last));
        }
        self.done = merged;
        self.partial = partials
            .into_iter()
            .map(|(end, mut indexes)| {
                indexes.sort_unstable();
                indexes.dedup();
                (end, runs(indexes))
            })
            .collect();
    }
}

/// Whether `end` lies in one of the sorted, disjoint `ranges`.
fn in_ranges(ranges: &[(Lsn, Lsn)], end: Lsn) -> bool {
    let at = ranges.partition_point(|&(_, last)| last < end);
    ranges.get(at).is_some_and(|&(first, _)| first <= end)
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
    pub(crate) fn new(slot: &str, system: Option<String>, upto: Lsn) -> Self {
        Self {
            description: Description {
                wal: VERSION,
                slot: slot.to_owned(),
                system,
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

    /// Adds everything the description this session resumed from named (still true: Kafka
    /// holds it, and a database crash may replay the slot from below it), and normalizes.
    pub(crate) fn finish(mut self, resumed: Option<&Skip>) -> Description {
        self.leading = false;
        self.break_run();
        let d = &mut self.description;
        if let Some(resumed) = resumed {
            d.upto = d.upto.max(resumed.upto);
            d.done.extend(resumed.done.iter().copied());
            d.partial.extend(resumed.partial.iter().cloned());
        }
        d.normalize();
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
    pub(crate) fn new(mut description: Description) -> Self {
        description.normalize();
        Self {
            upto: description.upto,
            done: description.done,
            partial: description.partial,
        }
    }

    /// How much of the transaction committed at `end` was delivered already.
    pub(crate) fn covered(&self, end: Lsn) -> Covered {
        if end <= self.upto || in_ranges(&self.done, end) {
            return Covered::All;
        }
        match self.partial.binary_search_by_key(&end, |(at, _)| *at) {
            Ok(at) => self
                .partial
                .get(at)
                .map_or(Covered::Nothing, |(_, runs)| Covered::Some(runs.clone())),
            Err(_) => Covered::Nothing,
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
        let mut builder = Builder::new("s", None, Lsn(upto));
        for (end, covered) in steps {
            builder.push(Lsn(*end), covered.clone());
        }
        builder.finish(None)
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
        assert_eq!(Description::parse(&json, "s", None).unwrap(), d);
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
    fn a_new_description_keeps_everything_the_resumed_one_named() {
        let resumed = Skip::new(built(
            &[
                (10, Covered::All),
                (30, Covered::Nothing),
                (40, Covered::All),
                (50, Covered::All),
                (60, Covered::Some(vec![(0, 0)])),
                (70, Covered::Nothing),
                (80, Covered::Some(vec![(1, 1)])),
            ],
            0,
        ));
        // The new session streamed from 35 (the slot was confirmed there): 40 and 50 skipped,
        // 60's index 1 is delivered now, 70 not yet, 80's index 0 delivered now.
        let mut builder = Builder::new("s", None, Lsn(0));
        builder.push(Lsn(40), Covered::All);
        builder.push(Lsn(50), Covered::All);
        builder.push(Lsn(60), Covered::Some(vec![(0, 1)]));
        builder.push(Lsn(70), Covered::Nothing);
        builder.push(Lsn(80), Covered::Some(vec![(0, 0)]));
        let d = builder.finish(Some(&resumed));
        // A database crash can replay from below 35: the resumed watermark still holds.
        assert_eq!(d.upto, Lsn(50));
        assert!(d.done.is_empty(), "{d:?}");
        assert_eq!(d.partial, [(Lsn(60), vec![(0, 1)]), (Lsn(80), vec![(0, 1)])]);
        let skip = Skip::new(d);
        assert_eq!(skip.covered(Lsn(10)), Covered::All);
        assert_eq!(skip.covered(Lsn(30)), Covered::All, "below the watermark");
        assert_eq!(skip.covered(Lsn(70)), Covered::Nothing);
    }

    #[test]
    fn overlapping_ranges_merge_and_lookups_find_them() {
        let mut d = built(&[], 5);
        d.done = vec![
            (Lsn(40), Lsn(60)),
            (Lsn(10), Lsn(20)),
            (Lsn(21), Lsn(30)),
            (Lsn(50), Lsn(90)),
        ];
        d.partial = vec![
            (Lsn(95), vec![(3, 3)]),
            (Lsn(55), vec![(0, 0)]),
            (Lsn(95), vec![(0, 2)]),
        ];
        let skip = Skip::new(d);
        assert_eq!(skip.done, [(Lsn(10), Lsn(30)), (Lsn(40), Lsn(90))]);
        assert_eq!(skip.partial, [(Lsn(95), vec![(0, 3)])]);
        for (end, all) in [(10, true), (25, true), (35, false), (90, true), (91, false)] {
            assert_eq!(skip.covered(Lsn(end)) == Covered::All, all, "{end}");
        }
        assert_eq!(skip.covered(Lsn(95)), Covered::Some(vec![(0, 3)]));
    }

    #[test]
    fn descriptions_of_another_slot_or_of_a_table_relay_are_refused() {
        let mut builder = Builder::new("s", Some("7000".into()), Lsn(0));
        builder.push(Lsn(10), Covered::All);
        let d = serde_json::to_value(builder.finish(None)).unwrap();
        assert!(Description::parse(&d, "s", Some("7000")).is_ok());
        assert!(Description::parse(&d, "s", None).is_ok());
        assert!(Description::parse(&d, "other", Some("7000")).is_err());
        let moved = Description::parse(&d, "s", Some("8000")).unwrap_err().to_string();
        assert!(moved.contains("another PostgreSQL cluster"), "{moved}");
        assert!(Description::parse(&serde_json::json!({"ids": [1]}), "s", None).is_err());
        assert!(Description::parse(&serde_json::json!({"wal": 9, "slot": "s"}), "s", None).is_err());
        let reversed = serde_json::json!({"wal": 1, "slot": "s", "upto": "0/0", "done": [["0/9", "0/1"]], "partial": []});
        assert!(Description::parse(&reversed, "s", None).is_err());
    }

    #[test]
    fn indexes_become_runs() {
        assert_eq!(runs([0, 1, 2, 5, 7, 8]), [(0, 2), (5, 5), (7, 8)]);
        assert!(in_runs(&[(0, 2), (5, 5)], 5));
        assert!(!in_runs(&[(0, 2), (5, 5)], 3));
    }
}
