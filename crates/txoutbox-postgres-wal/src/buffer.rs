//! The messages the WAL store decoded and the relay has not completed yet.

use std::collections::{BTreeMap, VecDeque};

use txoutbox_core::OutboxMessage;

/// Slots the queue may hold beyond twice its messages before it moves its front messages aside.
const SPARE_SLOTS: usize = 4_096;

/// Messages by id, in id order.
///
/// Ids are handed out densely and ascending (some are skipped: the messages an exactly-once
/// progress names), so a queue indexed by `id - first` holds them: an append is a push, a
/// completion a slot cleared, and completed slots leave from the front. A message that stays
/// long at the front (one retrying with back-off) would keep every completed slot behind it: once
/// the queue holds more than twice its messages (plus [`SPARE_SLOTS`]), its front messages move
/// to a map of stragglers, so memory and scans follow the messages held, not the ids passed.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    /// Id of `slots[0]`.
    first: i64,
    slots: VecDeque<Option<OutboxMessage>>,
    /// Messages below `first`.
    stragglers: BTreeMap<i64, OutboxMessage>,
    /// Messages in `slots`.
    in_slots: usize,
    /// The [`size`](OutboxMessage::size) of every message held.
    bytes: usize,
}

impl Buffer {
    /// Adds a message (replacing one with the same id). Ids normally come in ascending order; one
    /// below the queue's front is kept aside.
    pub(crate) fn push(&mut self, message: OutboxMessage) {
        let id = message.id;
        self.bytes = self.bytes.saturating_add(message.size());
        if self.slots.is_empty() {
            self.first = id;
        }
        let Some(at) = self.index(id) else {
            if let Some(old) = self.stragglers.insert(id, message) {
                self.bytes = self.bytes.saturating_sub(old.size());
            }
            return;
        };
        if at >= self.slots.len() {
            self.slots.resize_with(at, || None);
            self.slots.push_back(None);
        }
        match self.slots.get_mut(at).and_then(|slot| slot.replace(message)) {
            Some(old) => self.bytes = self.bytes.saturating_sub(old.size()),
            None => self.in_slots += 1,
        }
        self.compact();
    }

    /// Takes the message with this id out, if it is here.
    pub(crate) fn remove(&mut self, id: i64) -> Option<OutboxMessage> {
        let message = match self.index(id) {
            None => self.stragglers.remove(&id)?,
            Some(at) => {
                let message = self.slots.get_mut(at)?.take()?;
                self.in_slots -= 1;
                self.drop_completed_front();
                self.compact();
                message
            }
        };
        self.bytes = self.bytes.saturating_sub(message.size());
        Some(message)
    }

    /// The bytes of the messages it holds ([`OutboxMessage::size`]).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The message with this id, if it is here.
    pub(crate) fn get_mut(&mut self, id: i64) -> Option<&mut OutboxMessage> {
        match self.index(id) {
            Some(at) => self.slots.get_mut(at)?.as_mut(),
            None => self.stragglers.get_mut(&id),
        }
    }

    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        self.in_slots + self.stragglers.len()
    }

    /// Whether it holds none.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages with ids from `id` on, in id order.
    pub(crate) fn starting_at(&self, id: i64) -> impl Iterator<Item = &OutboxMessage> {
        let from = match usize::try_from(id.saturating_sub(self.first)) {
            Ok(from) => from.min(self.slots.len()),
            Err(_) if id > self.first => self.slots.len(),
            Err(_) => 0,
        };
        self.stragglers
            .range(id..)
            .map(|(_, m)| m)
            .chain(self.slots.range(from..).flatten())
    }

    /// All messages, in id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &OutboxMessage> {
        self.starting_at(i64::MIN)
    }

    /// The ids it holds in `range`, ascending.
    pub(crate) fn ids_in(&self, range: std::ops::Range<i64>) -> impl Iterator<Item = i64> {
        self.starting_at(range.start)
            .map(|m| m.id)
            .take_while(move |&id| id < range.end)
    }

    fn index(&self, id: i64) -> Option<usize> {
        usize::try_from(id.checked_sub(self.first)?).ok()
    }

    fn drop_completed_front(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first += 1;
        }
    }

    /// Moves front messages aside while the queue holds mostly completed slots.
    fn compact(&mut self) {
        if self.slots.len() <= 2 * self.in_slots + SPARE_SLOTS {
            return;
        }
        while self.slots.len() > 2 * self.in_slots + SPARE_SLOTS / 2 {
            let Some(front) = self.slots.pop_front() else {
                break;
            };
            self.first += 1;
            if let Some(message) = front {
                self.in_slots -= 1;
                self.stragglers.insert(message.id, message);
            }
            self.drop_completed_front();
        }
        if self.slots.capacity() > 4 * self.slots.len() + SPARE_SLOTS {
            self.slots.shrink_to(2 * self.slots.len() + SPARE_SLOTS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64) -> OutboxMessage {
        OutboxMessage::unreadable(id, "x")
    }

    fn ids<'a>(it: impl Iterator<Item = &'a OutboxMessage>) -> Vec<i64> {
        it.map(|m| m.id).collect()
    }

    #[test]
    fn holds_messages_by_id_across_gaps_and_completions() {
        let mut b = Buffer::default();
        for id in [10, 11, 13, 14, 17] {
            b.push(message(id));
        }
        assert_eq!(b.len(), 5);
        assert_eq!(ids(b.values()), [10, 11, 13, 14, 17]);
        assert_eq!(ids(b.starting_at(12)), [13, 14, 17]);
        assert_eq!(ids(b.starting_at(0)), [10, 11, 13, 14, 17]);
        assert_eq!(ids(b.starting_at(18)), Vec::<i64>::new());
        assert_eq!(ids(b.starting_at(i64::MAX)), Vec::<i64>::new());
        assert_eq!(b.ids_in(11..17).collect::<Vec<_>>(), [11, 13, 14]);
        assert!(b.remove(12).is_none() && b.remove(99).is_none() && b.remove(1).is_none());
        assert_eq!(b.remove(11).map(|m| m.id), Some(11));
        assert!(b.remove(11).is_none(), "twice: gone");
        assert_eq!(b.remove(10).map(|m| m.id), Some(10));
        assert_eq!(b.first, 13, "the completed front left the queue");
        b.get_mut(14).unwrap().attempts = 3;
        assert_eq!(b.values().find(|m| m.id == 14).unwrap().attempts, 3);
        for id in [13, 14, 17] {
            b.remove(id);
        }
        assert!(b.is_empty() && b.slots.is_empty());
        assert_eq!(b.bytes(), 0, "the bytes follow the messages");
        b.push(message(40));
        assert_eq!(ids(b.values()), [40], "an empty buffer starts at the next id");
        b.push(message(39));
        assert_eq!(
            ids(b.values()),
            [39, 40],
            "an id below the front is kept, not dropped"
        );
        assert_eq!(b.remove(39).map(|m| m.id), Some(39));
    }

    #[test]
    fn a_message_stuck_at_the_front_does_not_keep_the_completed_slots() {
        let mut b = Buffer::default();
        b.push(message(1)); // retrying for long: never completed here
        for id in 2..200_000 {
            b.push(message(id));
            b.remove(id);
        }
        assert_eq!(b.len(), 1);
        assert!(
            b.slots.len() <= 2 * b.in_slots + SPARE_SLOTS,
            "{} slots for {} messages",
            b.slots.len(),
            b.len()
        );
        assert_eq!(ids(b.values()), [1]);
        b.get_mut(1).unwrap().attempts = 2;
        for id in 200_000..200_010 {
            b.push(message(id));
        }
        assert_eq!(
            b.ids_in(0..200_003).collect::<Vec<_>>(),
            [1, 200_000, 200_001, 200_002]
        );
        assert_eq!(ids(b.starting_at(2)).len(), 10);
        assert_eq!(b.remove(1).map(|m| m.attempts), Some(2));
        assert_eq!(b.len(), 10);
    }
}
