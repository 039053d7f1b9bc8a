//! Which fetched rows may be sent now without breaking per-key order.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::message::OutboxMessage;

/// Picks, in id order, up to `limit` rows to send now.
///
/// Rows already in flight are skipped (later rows of their key may follow them: the producer
/// keeps a partition's order). A row that is still backing off holds back every later row of its
/// key; rows without a key never hold each other back.
pub(crate) fn select_sendable(
    rows: Vec<OutboxMessage>,
    in_flight: impl Fn(i64) -> bool,
    now: DateTime<Utc>,
    limit: usize,
) -> Vec<OutboxMessage> {
    let mut held_keys: HashSet<Vec<u8>> = HashSet::new();
    let mut sendable = Vec::with_capacity(rows.len().min(limit));
    for row in rows {
        if sendable.len() == limit {
            break;
        }
        if in_flight(row.id) {
            continue;
        }
        if let Some(key) = &row.key {
            if held_keys.contains(key) {
                continue;
            }
            if !row.is_due(now) {
                held_keys.insert(key.clone());
                continue;
            }
        } else if !row.is_due(now) {
            continue;
        }
        sendable.push(row);
    }
    sendable
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn row(id: i64, key: Option<&str>, backing_off: bool) -> OutboxMessage {
        let now = Utc::now();
        OutboxMessage {
            id,
            message_id: id.to_string(),
            topic: "t".into(),
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: None,
            headers: vec![],
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
        let picked = select_sendable(rows, |_| false, Utc::now(), 10);
        assert_eq!(ids(&picked), vec![1, 3, 6]);
    }

    #[test]
    fn skips_in_flight_rows_but_not_their_key_and_respects_the_limit() {
        let rows = vec![
            row(1, Some("a"), false),
            row(2, Some("a"), false),
            row(3, Some("b"), false),
        ];
        assert_eq!(
            ids(&select_sendable(rows.clone(), |id| id == 1, Utc::now(), 10)),
            vec![2, 3]
        );
        assert_eq!(ids(&select_sendable(rows, |_| false, Utc::now(), 2)), vec![1, 2]);
    }
}
