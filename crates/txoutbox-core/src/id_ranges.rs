//! Sets of row ids as inclusive ranges, for stores whose statements name a batch by
//! `id BETWEEN … AND …` instead of one entry per id: a B-tree walks a range once where a list of
//! ids descends the index for every id.

use std::collections::BTreeSet;

/// The most ranges [`runs`] and [`outside`] return: a store names more ids by list instead.
pub const MAX_RANGES: usize = 64;

/// An inclusive range of ids, `start <= end`.
pub type IdRange = (i64, i64);

/// `ids` as the fewest inclusive ranges that hold exactly those ids, in ascending order; `None`
/// when that takes more than [`MAX_RANGES`].
pub fn runs(ids: &[i64]) -> Option<Vec<IdRange>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut ranges: Vec<IdRange> = Vec::new();
    for id in sorted {
        if let Some((_, end)) = ranges.last_mut()
            && end.checked_add(1) == Some(id)
        {
            *end = id;
            continue;
        }
        if ranges.len() == MAX_RANGES {
            return None;
        }
        ranges.push((id, id));
    }
    Some(ranges)
}

/// The range `ids` make when they are one run of consecutive ids (repeats allowed), else `None`.
pub fn single_run(ids: &[i64]) -> Option<IdRange> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (&first, &last) = (sorted.first()?, sorted.last()?);
    let span = last.checked_sub(first)?;
    (usize::try_from(span).ok()? == sorted.len() - 1).then_some((first, last))
}

/// The ids up to `upto` (inclusive) that are not in `known`, as the fewest ranges, in ascending
/// order; `None` when that takes more than [`MAX_RANGES`]. Empty when `known` holds every id
/// from `i64::MIN` to `upto`.
pub fn outside(known: &BTreeSet<i64>, upto: i64) -> Option<Vec<IdRange>> {
    let mut ranges: Vec<IdRange> = Vec::new();
    // The lowest id not yet placed in a range or known; `None` once past `i64::MAX`.
    let mut next = Some(i64::MIN);
    for &id in known.range(..=upto) {
        let Some(from) = next else { break };
        if id > from {
            if ranges.len() == MAX_RANGES {
                return None;
            }
            ranges.push((from, id - 1));
        }
        next = id.checked_add(1);
    }
    if let Some(from) = next
        && from <= upto
    {
        if ranges.len() == MAX_RANGES {
            return None;
        }
        ranges.push((from, upto));
    }
    Some(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn holds(ranges: &[IdRange], id: i64) -> bool {
        ranges.iter().any(|&(a, b)| a <= id && id <= b)
    }

    #[test]
    fn consecutive_ids_are_one_range() {
        assert_eq!(runs(&[5, 3, 4, 7, 6]), Some(vec![(3, 7)]));
        assert_eq!(runs(&[1, 3]), Some(vec![(1, 1), (3, 3)]));
        assert_eq!(runs(&[]), Some(vec![]));
        assert_eq!(
            runs(&[i64::MAX, i64::MAX - 1]),
            Some(vec![(i64::MAX - 1, i64::MAX)])
        );
    }

    #[test]
    fn a_single_run_is_its_range() {
        assert_eq!(single_run(&[5, 3, 4, 4]), Some((3, 5)));
        assert_eq!(single_run(&[7]), Some((7, 7)));
        assert_eq!(single_run(&[1, 3]), None);
        assert_eq!(single_run(&[1, 1, 3]), None);
        assert_eq!(single_run(&[]), None);
        assert_eq!(single_run(&[i64::MIN, i64::MAX]), None);
    }

    #[test]
    fn too_many_runs_are_refused() {
        let spread: Vec<i64> = (0..=MAX_RANGES as i64).map(|i| i * 2).collect();
        assert_eq!(runs(&spread), None);
        assert!(runs(&spread[..MAX_RANGES]).is_some());
    }

    #[test]
    fn outside_the_known_ids() {
        let known: BTreeSet<i64> = [10, 11, 12, 15, 30].into();
        assert_eq!(outside(&known, 20), Some(vec![(i64::MIN, 9), (13, 14), (16, 20)]));
        assert_eq!(outside(&known, 12), Some(vec![(i64::MIN, 9)]));
        assert_eq!(outside(&BTreeSet::new(), 0), Some(vec![(i64::MIN, 0)]));
        let edge: BTreeSet<i64> = [i64::MIN, i64::MAX].into();
        assert_eq!(outside(&edge, i64::MAX), Some(vec![(i64::MIN + 1, i64::MAX - 1)]));
    }

    proptest! {
        /// The ranges hold exactly the ids, and no fewer ranges could.
        #[test]
        fn runs_hold_exactly_the_ids(ids in proptest::collection::vec(-50i64..50, 0..80)) {
            let set: BTreeSet<i64> = ids.iter().copied().collect();
            match runs(&ids) {
                Some(ranges) => {
                    for id in -60..60 {
                        prop_assert_eq!(holds(&ranges, id), set.contains(&id));
                    }
                    for pair in ranges.windows(2) {
                        prop_assert!(pair[0].1 + 1 < pair[1].0, "ranges touch: {:?}", pair);
                    }
                }
                None => {
                    let gaps = set.iter().zip(set.iter().skip(1)).filter(|(a, b)| **a + 1 < **b).count();
                    prop_assert!(gaps + 1 > MAX_RANGES);
                }
            }
        }

        /// `single_run` agrees with `runs` on whether the ids make one run.
        #[test]
        fn single_run_is_a_one_range_run(ids in proptest::collection::vec(-20i64..20, 0..30)) {
            let expected = match runs(&ids).as_deref() {
                Some(&[run]) => Some(run),
                _ => None,
            };
            prop_assert_eq!(single_run(&ids), expected);
        }

        /// Every id up to `upto` is in the ranges or in `known`, never both, and none above it.
        #[test]
        fn outside_is_the_complement(
            known in proptest::collection::btree_set(-50i64..50, 0..80),
            upto in -55i64..55,
        ) {
            if let Some(ranges) = outside(&known, upto) {
                for id in -60..60 {
                    let expected = id <= upto && !known.contains(&id);
                    prop_assert_eq!(holds(&ranges, id), expected, "id {}", id);
                }
                prop_assert!(ranges.iter().all(|&(a, b)| a <= b));
            }
        }
    }
}
