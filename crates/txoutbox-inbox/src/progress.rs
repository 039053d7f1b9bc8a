//! Which offsets of each assigned partition are finished, so that only offsets below every
//! unfinished record are committed: a crash re-delivers whatever was not finished, never skips it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A partition of a topic.
pub(crate) type Partition = (String, i32);

/// One assignment of one partition: a revoke ends it, and work of an ended assignment that
/// finishes late changes nothing.
#[derive(Debug, Default)]
struct PartitionProgress {
    generation: u64,
    in_flight: BTreeSet<i64>,
    /// One past the highest offset read in this assignment.
    next: Option<i64>,
    /// The position last committed (or handed out to be committed).
    committed: Option<i64>,
}

impl PartitionProgress {
    /// The position to commit: the first unfinished offset, or one past the last read.
    fn position(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<Partition, PartitionProgress>,
    next_generation: u64,
    in_flight_bytes: usize,
}

/// The progress of every assigned partition, shared by the poll thread and the handlers.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

/// A record handed out: its partition, offset, size, and the assignment it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub(crate) partition: Partition,
    pub(crate) offset: i64,
    pub(crate) bytes: usize,
    generation: u64,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters that are still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new assignment of each partition.
    pub(crate) fn assign(&self, partitions: impl IntoIterator<Item = Partition>) {
        let mut state = self.lock();
        for partition in partitions {
            state.next_generation += 1;
            let generation = state.next_generation;
            // Bytes of an earlier assignment's records still running are given back when they
            // finish.
            state.partitions.insert(
                partition,
                PartitionProgress {
                    generation,
                    ..PartitionProgress::default()
                },
            );
        }
    }

    /// Ends the assignments of these partitions; work of theirs still running finishes unseen.
    pub(crate) fn revoke(&self, partitions: &[Partition]) {
        let mut state = self.lock();
        for partition in partitions {
            state.partitions.remove(partition);
        }
        self.changed.notify_all();
    }

    /// Records that `offset` of `partition` was read and handed to a handler; `None` when the
    /// partition is not assigned (a record read across a rebalance: skipped, it comes again).
    pub(crate) fn start(&self, partition: &Partition, offset: i64, bytes: usize) -> Option<Ticket> {
        let mut state = self.lock();
        let progress = state.partitions.get_mut(partition)?;
        progress.in_flight.insert(offset);
        progress.next = Some(progress.next.map_or(offset + 1, |n| n.max(offset + 1)));
        let generation = progress.generation;
        state.in_flight_bytes += bytes;
        Some(Ticket {
            partition: partition.clone(),
            offset,
            bytes,
            generation,
        })
    }

    /// Records that a handed-out record is finished (handled, a duplicate, or parked).
    pub(crate) fn finish(&self, ticket: &Ticket) {
        let mut state = self.lock();
        state.in_flight_bytes = state.in_flight_bytes.saturating_sub(ticket.bytes);
        if let Some(progress) = state.partitions.get_mut(&ticket.partition)
            && progress.generation == ticket.generation
        {
            progress.in_flight.remove(&ticket.offset);
        }
        self.changed.notify_all();
    }

    /// Gives a handed-out record's bytes back without finishing it (a handler stopped by
    /// shutdown): its offset stays uncommitted and the record comes again.
    pub(crate) fn abandon(&self, ticket: &Ticket) {
        let mut state = self.lock();
        state.in_flight_bytes = state.in_flight_bytes.saturating_sub(ticket.bytes);
        self.changed.notify_all();
    }

    /// Positions that moved since they were last taken, for a commit; `only` limits them to some
    /// partitions.
    pub(crate) fn take_positions(&self, only: Option<&[Partition]>) -> Vec<(Partition, i64)> {
        let mut state = self.lock();
        let mut out = Vec::new();
        for (partition, progress) in &mut state.partitions {
            if only.is_some_and(|only| !only.contains(partition)) {
                continue;
            }
            if let Some(position) = progress.position()
                && progress.committed != Some(position)
            {
                progress.committed = Some(position);
                out.push((partition.clone(), position));
            }
        }
        out
    }

    /// Forgets that these positions were taken (their commit failed): the next take has them.
    pub(crate) fn untake(&self, positions: &[(Partition, i64)]) {
        let mut state = self.lock();
        for (partition, position) in positions {
            if let Some(progress) = state.partitions.get_mut(partition)
                && progress.committed == Some(*position)
            {
                progress.committed = None;
            }
        }
    }

    /// Waits until no record of `partitions` is in flight, or `timeout`; returns whether they
    /// drained.
    pub(crate) fn wait_drained(&self, partitions: &[Partition], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            let busy = partitions.iter().any(|p| {
                state
                    .partitions
                    .get(p)
                    .is_some_and(|progress| !progress.in_flight.is_empty())
            });
            if !busy {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits up to `timeout` until `bytes` more fit under `max` (or nothing is in flight).
    pub(crate) fn wait_for_room(&self, bytes: usize, max: usize, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| {
                s.in_flight_bytes > 0 && s.in_flight_bytes + bytes > max
            })
            .unwrap_or_else(PoisonError::into_inner);
        state.in_flight_bytes == 0 || state.in_flight_bytes + bytes <= max
    }

    /// Bytes of records read and not finished.
    #[cfg(test)]
    pub(crate) fn in_flight_bytes(&self) -> usize {
        self.lock().in_flight_bytes
    }

    /// Records read and not finished, over every partition.
    pub(crate) fn in_flight_records(&self) -> usize {
        self.lock().partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("t".to_owned(), n)
    }

    #[test]
    fn commits_only_below_the_first_unfinished_offset() {
        let progress = Progress::default();
        progress.assign([p(0)]);
        let tickets: Vec<_> = (10..15).map(|o| progress.start(&p(0), o, 1).unwrap()).collect();
        assert_eq!(progress.take_positions(None), vec![(p(0), 10)]);
        progress.finish(&tickets[1]);
        progress.finish(&tickets[2]);
        assert!(progress.take_positions(None).is_empty(), "10 is still running");
        progress.finish(&tickets[0]);
        assert_eq!(progress.take_positions(None), vec![(p(0), 13)]);
        progress.finish(&tickets[4]);
        progress.finish(&tickets[3]);
        assert_eq!(progress.take_positions(None), vec![(p(0), 15)]);
        assert_eq!(progress.in_flight_bytes(), 0);
    }

    #[test]
    fn a_revoked_assignment_ignores_late_work_and_a_failed_commit_is_taken_again() {
        let progress = Progress::default();
        progress.assign([p(1)]);
        let old = progress.start(&p(1), 5, 3).unwrap();
        assert!(!progress.wait_drained(&[p(1)], Duration::from_millis(10)));
        progress.revoke(&[p(1)]);
        assert!(progress.start(&p(1), 6, 1).is_none(), "not assigned");
        progress.assign([p(1)]);
        let new = progress.start(&p(1), 5, 3).unwrap();
        progress.finish(&old);
        assert_eq!(
            progress.in_flight_records(),
            1,
            "the old ticket does not finish the new one"
        );
        progress.finish(&new);
        let taken = progress.take_positions(None);
        assert_eq!(taken, vec![(p(1), 6)]);
        progress.untake(&taken);
        assert_eq!(progress.take_positions(None), taken);
        assert!(progress.wait_drained(&[p(1)], Duration::ZERO));
    }

    #[test]
    fn room_is_bounded_in_bytes_but_one_record_always_fits() {
        let progress = Progress::default();
        progress.assign([p(0)]);
        assert!(
            progress.wait_for_room(100, 10, Duration::ZERO),
            "nothing in flight"
        );
        let t = progress.start(&p(0), 0, 100).unwrap();
        assert!(!progress.wait_for_room(1, 10, Duration::from_millis(5)));
        progress.abandon(&t);
        assert!(progress.wait_for_room(1, 10, Duration::ZERO));
    }
}
