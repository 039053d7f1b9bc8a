//! The messages the WAL store decoded and the relay has not completed yet.

use std::collections::VecDeque;

use txoutbox_core::OutboxMessage;

/// Messages by id, in id order. Ids are handed out densely and ascending (some are skipped: the
/// messages an exactly-once progress names), so a queue indexed by `id - first` holds them: an
/// append is a push, a completion a slot cleared, and completed slots leave from the front.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    /// Id of `slots[0]`.
    first: i64,
    slots: VecDeque<Option<OutboxMessage>>,
    len: usize,
}

impl Buffer {
    /// Adds a message; its id must be above every id added before.
    pub(crate) fn push(&mut self, message: OutboxMessage) {
        let id = message.id;
        if self.slots.is_empty() {
            self.first = id;
        }
        let at = self.index(id);
        debug_assert!(
            at.is_some_and(|at| at >= self.slots.len()),
            "ids are added in ascending order"
        );
        let Some(at) = at.filter(|&at| at >= self.slots.len()) else {
            return;
        };
        self.slots.resize_with(at, || None);
        self.slots.push_back(Some(message));
        self.len += 1;
    }

    /// Takes the message with this id out, if it is here.
    pub(crate) fn remove(&mut self, id: i64) -> Option<OutboxMessage> {
        let at = self.index(id)?;
        let message = self.slots.get_mut(at)?.take()?;
        self.len -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first += 1;
        }
        Some(message)
    }

    /// The message with this id, if it is here.
    pub(crate) fn get_mut(&mut self, id: i64) -> Option<&mut OutboxMessage> {
        let at = self.index(id)?;
        self.slots.get_mut(at)?.as_mut()
    }

    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The messages with ids from `id` on, in id order.
    pub(crate) fn starting_at(&self, id: i64) -> impl Iterator<Item = &OutboxMessage> {
        let from = usize::try_from(id.saturating_sub(self.first)).unwrap_or(0);
        self.slots.range(from.min(self.slots.len())..).flatten()
    }

    /// All messages, in id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &OutboxMessage> {
        self.slots.iter().flatten()
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
        b.push(message(40));
        assert_eq!(ids(b.values()), [40], "an empty buffer starts at the next id");
    }
}
