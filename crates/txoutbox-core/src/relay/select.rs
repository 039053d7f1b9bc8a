//! Which fetched rows may be sent now without breaking per-key order.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::message::OutboxMessage;

/// A key whose messages must wait: the topic and the record key.
pub(crate) type HeldKey = (std::sync::Arc<str>, bytes::Bytes);

/// The held key of a message: the key is copied, so a hold that lasts (a back-off, a parked key)
/// does not keep the message's whole buffer alive (a WAL message's key shares its envelope).
pub(crate) fn held_key(topic: &std::sync::Arc<str>, key: &[u8]) -> HeldKey {
    (topic.clone(), bytes::Bytes::copy_from_slice(key))
}

/// What the fetcher does with one fetch.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    /// Rows to send now, in id order.
    pub(crate) send: Vec<OutboxMessage>,
    /// The highest id the fetcher is done with (sent, in flight or held); the cursor moves there.
    pub(crate) last_considered: Option<i64>,
    /// Keys found backing off, with the time their row is due.
    pub(crate) holds: Vec<(HeldKey, DateTime<Utc>)>,
}

/// Picks, in id order, up to `limit` rows to send now.
///
/// Rows already in flight are skipped (later rows of their key may follow them: the producer
/// keeps a partition's order). A row that is still backing off holds back every later row of its
/// key, and so does a key the relay holds already; rows without a key never hold each other back.
pub(crate) fn select_sendable(
    rows: Vec<OutboxMessage>,
    in_flight: impl Fn(i64) -> bool,
    held: impl Fn(&str, &[u8]) -> bool,
    now: DateTime<Utc>,
    limit: usize,
) -> Selection {
    let mut held_here: HashSet<HeldKey> = HashSet::new();
    let mut selection = Selection::default();
    for row in rows {
        if selection.send.len() == limit {
            break;
        }
        selection.last_considered = Some(row.id);
        if in_flight(row.id) {
            continue;
        }
        if let Some(key) = &row.key {
            // Clones only while some key of this fetch is held, which is rare.
            let held_in_fetch =
                !held_here.is_empty() && held_here.contains(&(row.topic.clone(), key.clone()));
            if held_in_fetch || held(&row.topic, key) {
                continue;
            }
            if let Some(at) = row.next_attempt_at.filter(|_| !row.is_due(now)) {
                held_here.insert((row.topic.clone(), key.clone()));
                selection.holds.push((held_key(&row.topic, key), at));
                continue;
            }
        } else if !row.is_due(now) {
            continue;
        }
        selection.send.push(row);
    }
    selection
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn row(id: i64, key: Option<&str>, backing_off: bool) -> OutboxMessage {
        let now = Utc::now();
        OutboxMessage {
            id,
            message_id: id.to_string().into(),
            topic: "t".into(),
            key: key.map(|k| k.as_bytes().to_vec().into()),
            payload: None,
            headers: Default::default(),
            created_at: now,
            attempts: 0,
            next_attempt_at: backing_off.then(|| now + TimeDelta::hours(1)),
            bucket: 0,
            malformed: None,
        }
    }

    fn ids(rows: &[OutboxMessage]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn a_backing_off_row_holds_back_its_key_only() {
        let rows = vec![
            row(1, Some("a"), false),
            row(2, Some("b"), true),
            row(3, Some("a"), false),
            row(4, Some("b"), false),
            row(5, None, true),
            row(6, None, false),
        ];
        let picked = select_sendable(rows, |_| false, |_, _| false, Utc::now(), 10);
        assert_eq!(ids(&picked.send), vec![1, 3, 6]);
        assert_eq!(picked.last_considered, Some(6));
        assert_eq!(picked.holds.len(), 1);
        assert_eq!(picked.holds[0].0, ("t".into(), bytes::Bytes::from_static(b"b")));
    }

    #[test]
    fn the_same_key_on_another_topic_is_not_held() {
        let mut other = row(2, Some("a"), false);
        other.topic = "u".into();
        let rows = vec![row(1, Some("a"), true), other, row(3, Some("a"), false)];
        assert_eq!(
            ids(&select_sendable(rows, |_| false, |_, _| false, Utc::now(), 10).send),
            vec![2]
        );
    }

    #[test]
    fn keys_the_relay_holds_are_skipped() {
        let rows = vec![row(1, Some("a"), false), row(2, Some("b"), false)];
        let picked = select_sendable(rows, |_| false, |_, key| key == b"a", Utc::now(), 10);
        assert_eq!(ids(&picked.send), vec![2]);
        assert_eq!(picked.last_considered, Some(2));
    }

    #[test]
    fn skips_in_flight_rows_but_not_their_key_and_stops_at_the_limit() {
        let rows = vec![
            row(1, Some("a"), false),
            row(2, Some("a"), false),
            row(3, Some("b"), false),
        ];
        let picked = select_sendable(rows.clone(), |id| id == 1, |_, _| false, Utc::now(), 10);
        assert_eq!(ids(&picked.send), vec![2, 3]);
        let picked = select_sendable(rows, |_| false, |_, _| false, Utc::now(), 2);
        assert_eq!(ids(&picked.send), vec![1, 2]);
        assert_eq!(
            picked.last_considered,
            Some(2),
            "the cursor must not pass a row left unsent"
        );
    }
}
