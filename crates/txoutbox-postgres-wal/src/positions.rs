//! What an exactly-once sink records of a WAL relay's progress: positions in the log, never the
//! store's per-session ids.
//!
//! A message is named by its transaction's commit position and its index among the
//! transaction's outbox messages. Version 2 (written now) names a transaction by where its commit
//! record **starts** — the `final_lsn` that the stream announces when the transaction begins — so
//! a transaction larger than the relay's buffer can be streamed, delivered and recorded before its
//! commit record is read. Version 1 named it by where the commit record ends; such a description
//! is still read (its entries are kept apart and checked once a transaction's commit is read).
//!
//! A description says: every outbox transaction whose commit ends at or below `upto` is done, and
//! so is every one whose commit position lies in a `done` range, and of the `partial` ones the
//! listed indexes. Ranges stay valid across sessions because the set of outbox transactions that
//! commit between two positions is fixed by the log.

use pgwire_replication::Lsn;
use serde::{Deserialize, Serialize};
use txoutbox_core::{Error, Result};

/// The description format written now (version 1 is still read).
pub(crate) const VERSION: u32 = 2;

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
    /// Every outbox transaction whose commit record ends at or below this position is done
    /// (equivalently: whose commit record starts below it).
    #[serde(with = "lsn_text")]
    pub(crate) upto: Lsn,
    /// Ranges of commit starts: every outbox transaction whose commit starts in one is done.
    #[serde(with = "lsn_ranges")]
    pub(crate) done: Vec<(Lsn, Lsn)>,
    /// Transactions done in part: the start of the commit and the done indexes.
    #[serde(with = "lsn_partials")]
    pub(crate) partial: Vec<(Lsn, Vec<Run>)>,
    /// Version 1's ranges, of commit **ends**, carried until the stream passes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "lsn_ranges")]
    pub(crate) ended_done: Vec<(Lsn, Lsn)>,
    /// Version 1's partial transactions, by commit **end**, carried until the stream passes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "lsn_partials")]
    pub(crate) ended_partial: Vec<(Lsn, Vec<Run>)>,
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
        let mut description: Self = serde_json::from_value(value.clone()).map_err(|e| {
            Error::Config(format!(
                "the exactly-once WAL progress is not readable ({e}): refusing to guess which messages Kafka holds"
            ))
        })?;
        if description.wal < 2 {
            // Version 1 named transactions by where their commit ends.
            description.ended_done.append(&mut description.done);
            description.ended_partial.append(&mut description.partial);
            description.wal = VERSION;
        }
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
    /// same transaction are united, and nothing `upto` covers (or a range does) is kept.
    fn normalize(&mut self) {
        let upto = self.upto;
        // A commit starting below `upto` ends at or below it.
        self.done = merge_ranges(&self.done, upto);
        self.partial = merge_partials(std::mem::take(&mut self.partial), &self.done, |start| {
            start < upto
        });
        // Version 1: by commit end, done when at or below `upto`.
        let above = Lsn(upto.0.saturating_add(1));
        self.ended_done = merge_ranges(&self.ended_done, above);
        self.ended_partial =
            merge_partials(std::mem::take(&mut self.ended_partial), &self.ended_done, |end| {
                end <= upto
            });
    }
}

/// The ranges at or above `from` (cut there), sorted and merged.
fn merge_ranges(ranges: &[(Lsn, Lsn)], from: Lsn) -> Vec<(Lsn, Lsn)> {
    let mut ranges: Vec<(Lsn, Lsn)> = ranges
        .iter()
        .filter(|&&(_, last)| last >= from)
        .map(|&(first, last)| (first.max(from), last))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(Lsn, Lsn)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some((_, end)) if first.0 <= end.0.saturating_add(1) => *end = (*end).max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// Partials united per transaction (their runs merged, never expanded), without those `covered`
/// or inside one of `ranges`.
fn merge_partials(
    partials: Vec<(Lsn, Vec<Run>)>,
    ranges: &[(Lsn, Lsn)],
    covered: impl Fn(Lsn) -> bool,
) -> Vec<(Lsn, Vec<Run>)> {
    let mut united: std::collections::BTreeMap<Lsn, Vec<Run>> = std::collections::BTreeMap::new();
    for (at, runs) in partials {
        if covered(at) || in_ranges(ranges, at) {
            continue;
        }
        united.entry(at).or_default().extend(runs);
    }
    united
        .into_iter()
        .map(|(at, mut runs)| {
            runs.sort_unstable();
            let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
            for (first, last) in runs {
                match merged.last_mut() {
                    Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
                    _ => merged.push((first, last)),
                }
            }
            (at, merged)
        })
        .collect()
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
                ended_done: Vec::new(),
                ended_partial: Vec::new(),
            },
            leading: true,
            run: None,
        }
    }

    /// The next transaction in commit order — where its commit starts, where it ends (`None`
    /// while its commit has not been read: it may have more messages, so it is never all done)
    /// — and how much of it is done.
    pub(crate) fn push(&mut self, start: Lsn, end: Option<Lsn>, covered: Covered) {
        match (covered, end) {
            (Covered::All, Some(end)) if self.leading => {
                self.description.upto = self.description.upto.max(end);
            }
            (Covered::All, _) => {
                self.leading = false;
                self.run = Some(self.run.map_or((start, start), |(first, _)| (first, start)));
            }
            (Covered::Some(runs), _) => {
                self.break_run();
                self.description.partial.push((start, runs));
            }
            (Covered::Nothing, _) => self.break_run(),
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
            d.ended_done.extend(resumed.ended_done.iter().copied());
            d.ended_partial.extend(resumed.ended_partial.iter().cloned());
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
    ended_done: Vec<(Lsn, Lsn)>,
    ended_partial: Vec<(Lsn, Vec<Run>)>,
}

impl Skip {
    /// The skip a description asks for.
    pub(crate) fn new(mut description: Description) -> Self {
        description.normalize();
        Self {
            upto: description.upto,
            done: description.done,
            partial: description.partial,
            ended_done: description.ended_done,
            ended_partial: description.ended_partial,
        }
    }

    /// How much of the transaction whose commit starts at `start` (and ends at `end`, once read)
    /// was delivered already; `None` when that cannot be told before its commit is read (a
    /// version 1 entry may name it by its end).
    pub(crate) fn covered(&self, start: Lsn, end: Option<Lsn>) -> Option<Covered> {
        if start < self.upto || end.is_some_and(|end| end <= self.upto) || in_ranges(&self.done, start) {
            return Some(Covered::All);
        }
        if let Ok(at) = self.partial.binary_search_by_key(&start, |(at, _)| *at) {
            return Some(
                self.partial
                    .get(at)
                    .map_or(Covered::Nothing, |(_, runs)| Covered::Some(runs.clone())),
            );
        }
        if self.ended_done.is_empty() && self.ended_partial.is_empty() {
            return Some(Covered::Nothing);
        }
        let end = end?;
        if in_ranges(&self.ended_done, end) {
            return Some(Covered::All);
        }
        Some(
            match self.ended_partial.binary_search_by_key(&end, |(at, _)| *at) {
                Ok(at) => self
                    .ended_partial
                    .get(at)
                    .map_or(Covered::Nothing, |(_, runs)| Covered::Some(runs.clone())),
                Err(_) => Covered::Nothing,
            },
        )
    }

    /// Forgets what the stream has passed (`streamed`: where the last commit it took ends);
    /// whether anything is left.
    pub(crate) fn prune(&mut self, streamed: Lsn) -> bool {
        self.done.retain(|&(_, last)| last >= streamed);
        self.partial.retain(|(start, _)| *start >= streamed);
        self.ended_done.retain(|&(_, last)| last > streamed);
        self.ended_partial.retain(|(end, _)| *end > streamed);
        self.upto > streamed
            || !self.done.is_empty()
            || !self.partial.is_empty()
            || !self.ended_done.is_empty()
            || !self.ended_partial.is_empty()
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
            Some((_, last)) if last.checked_add(1) == Some(index) => *last = index,
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

    /// Transactions as (where the commit starts, how much is done); each commit ends 2 later.
    fn built(steps: &[(u64, Covered)], upto: u64) -> Description {
        let mut builder = Builder::new("s", None, Lsn(upto));
        for (start, covered) in steps {
            builder.push(Lsn(*start), Some(Lsn(start + 2)), covered.clone());
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
        assert_eq!(d.upto, Lsn(22), "the end of the last leading transaction");
        assert_eq!(d.done, [(Lsn(40), Lsn(50)), (Lsn(70), Lsn(70))]);
        assert_eq!(d.partial, [(Lsn(60), vec![(0, 1), (3, 3)])]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json.to_string(),
            r#"{"wal":2,"slot":"s","upto":"0/16","done":[["0/28","0/32"],["0/46","0/46"]],"partial":[["0/3C",[[0,1],[3,3]]]]}"#
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
        // Told when the transaction begins: its commit's start is known then.
        assert_eq!(skip.covered(Lsn(10), None), Some(Covered::All));
        assert_eq!(skip.covered(Lsn(7), None), Some(Covered::All));
        assert_eq!(skip.covered(Lsn(30), None), Some(Covered::Nothing));
        assert_eq!(skip.covered(Lsn(40), None), Some(Covered::All));
        assert_eq!(skip.covered(Lsn(60), None), Some(Covered::Some(vec![(2, 4)])));
        assert_eq!(skip.covered(Lsn(61), None), Some(Covered::Nothing));
        assert!(skip.prune(Lsn(42)));
        assert!(!skip.prune(Lsn(62)));
    }

    #[test]
    fn an_open_transaction_is_recorded_in_part_by_where_its_commit_will_start() {
        let mut builder = Builder::new("s", None, Lsn(0));
        builder.push(Lsn(10), Some(Lsn(12)), Covered::All);
        builder.push(Lsn(20), None, Covered::Some(vec![(0, 999)]));
        let d = builder.finish(None);
        assert_eq!(
            (d.upto, d.partial.clone()),
            (Lsn(12), vec![(Lsn(20), vec![(0, 999)])])
        );
        let skip = Skip::new(d);
        assert_eq!(skip.covered(Lsn(20), None), Some(Covered::Some(vec![(0, 999)])));
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
        builder.push(Lsn(40), Some(Lsn(42)), Covered::All);
        builder.push(Lsn(50), Some(Lsn(52)), Covered::All);
        builder.push(Lsn(60), Some(Lsn(62)), Covered::Some(vec![(0, 1)]));
        builder.push(Lsn(70), Some(Lsn(72)), Covered::Nothing);
        builder.push(Lsn(80), Some(Lsn(82)), Covered::Some(vec![(0, 0)]));
        let d = builder.finish(Some(&resumed));
        assert_eq!(d.upto, Lsn(52));
        assert!(d.done.is_empty(), "{d:?}");
        assert_eq!(d.partial, [(Lsn(60), vec![(0, 1)]), (Lsn(80), vec![(0, 1)])]);
        let skip = Skip::new(d);
        assert_eq!(skip.covered(Lsn(10), None), Some(Covered::All));
        assert_eq!(
            skip.covered(Lsn(30), None),
            Some(Covered::All),
            "below the watermark"
        );
        assert_eq!(skip.covered(Lsn(70), None), Some(Covered::Nothing));
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
            (Lsn(97), vec![(0, u32::MAX)]),
        ];
        let skip = Skip::new(d);
        assert_eq!(skip.done, [(Lsn(10), Lsn(30)), (Lsn(40), Lsn(90))]);
        assert_eq!(
            skip.partial,
            [(Lsn(95), vec![(0, 3)]), (Lsn(97), vec![(0, u32::MAX)])],
            "runs are merged, never expanded"
        );
        for (start, all) in [(10, true), (25, true), (35, false), (90, true), (91, false)] {
            assert_eq!(
                skip.covered(Lsn(start), None) == Some(Covered::All),
                all,
                "{start}"
            );
        }
        assert_eq!(skip.covered(Lsn(95), None), Some(Covered::Some(vec![(0, 3)])));
    }

    #[test]
    fn a_version_1_description_is_read_by_where_commits_end() {
        let v1 = serde_json::json!({
            "wal": 1, "slot": "s", "upto": "0/10",
            "done": [["0/28", "0/32"]], "partial": [["0/3C", [[0, 1]]]]
        });
        let d = Description::parse(&v1, "s", None).unwrap();
        assert_eq!((d.wal, d.done.len(), d.ended_done.len()), (VERSION, 0, 1));
        let mut skip = Skip::new(d);
        assert_eq!(
            skip.covered(Lsn(5), None),
            Some(Covered::All),
            "below the watermark"
        );
        assert_eq!(skip.covered(Lsn(38), None), None, "not before its commit is read");
        assert_eq!(skip.covered(Lsn(38), Some(Lsn(40))), Some(Covered::All));
        assert_eq!(
            skip.covered(Lsn(58), Some(Lsn(60))),
            Some(Covered::Some(vec![(0, 1)]))
        );
        assert_eq!(skip.covered(Lsn(70), Some(Lsn(72))), Some(Covered::Nothing));
        // Carried into the next description until the stream passes it.
        let again = Builder::new("s", None, Lsn(0)).finish(Some(&skip));
        assert!(serde_json::to_value(&again).unwrap().get("ended_done").is_some());
        assert!(!skip.prune(Lsn(60)));
    }

    #[test]
    fn descriptions_of_another_slot_or_of_a_table_relay_are_refused() {
        let mut builder = Builder::new("s", Some("7000".into()), Lsn(0));
        builder.push(Lsn(10), Some(Lsn(12)), Covered::All);
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
        assert_eq!(runs([u32::MAX - 1, u32::MAX]), [(u32::MAX - 1, u32::MAX)]);
        assert!(in_runs(&[(0, 2), (5, 5)], 5));
        assert!(!in_runs(&[(0, 2), (5, 5)], 3));
    }
}
