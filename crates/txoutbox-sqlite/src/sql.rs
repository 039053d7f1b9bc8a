//! The statements of the SQLite store, built once from the validated table name.

use std::sync::Arc;

use txoutbox_core::{Completion, TableName};

/// The size the relay counts for a row (what a [`txoutbox_core::ReadLimit`] bounds): topic,
/// key, payload and headers in bytes.
const ROW_SIZE: &str = "coalesce(octet_length(topic), 0) + coalesce(octet_length(key), 0) \
     + coalesce(octet_length(payload), 0) + coalesce(octet_length(headers), 0)";

/// Every statement of the store, with the table name filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) table: TableName,
    pub(crate) migrations_table: String,
    /// ?1 key: whether an exactly-once relay's progress key is recorded (0 or 1).
    pub(crate) progress_kept: Arc<str>,
    /// ?1 key: records it.
    pub(crate) keep_progress: Arc<str>,
    pub(crate) insert_one: Arc<str>,
    pub(crate) insert_many: Arc<str>,
    pub(crate) fetch_pending: Arc<str>,
    pub(crate) delete: Arc<str>,
    pub(crate) mark_published: Arc<str>,
    /// `delete` and `mark_published` of the ids from ?1 to ?2 (a batch of consecutive ids: one
    /// walk of the table's b-tree, no JSON list to build and read).
    pub(crate) delete_range: Arc<str>,
    pub(crate) mark_published_range: Arc<str>,
    pub(crate) record_failures: Arc<str>,
    pub(crate) backlog: Arc<str>,
    pub(crate) dead_keys: Arc<str>,
    pub(crate) list_dead: Arc<str>,
    pub(crate) replay_dead: Arc<str>,
    pub(crate) purge_dead: Arc<str>,
    pub(crate) purge_published: Arc<str>,
    pub(crate) topic_stats: Arc<str>,
    pub(crate) dead_payload: Arc<str>,
}

/// The dead-letter filter: ?1 topic, ?2 lowest id, ?3 highest id, ?4 created before (ms since the
/// epoch); each NULL for "any".
const DEAD_FILTER: &str = "status = 'dead' AND (?1 IS NULL OR topic = ?1) \
     AND (?2 IS NULL OR id >= ?2) AND (?3 IS NULL OR id <= ?3) AND (?4 IS NULL OR created_at < ?4)";

/// The delete and the mark-published of the pending rows `ids` selects (a condition on `id`).
fn completions(t: &str, ids: &str) -> [Arc<str>; 2] {
    [
        Arc::from(format!("DELETE FROM {t} WHERE {ids} AND status = 'pending'")),
        Arc::from(format!(
            "UPDATE {t} SET status = 'published', next_attempt_at = NULL, \
               published_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) \
             WHERE {ids} AND status = 'pending'"
        )),
    ]
}

impl Statements {
    /// The completion `completion` asks for: of the ids in the JSON list ?1 (`range`: of the ids
    /// from ?1 to ?2).
    pub(crate) fn complete(&self, completion: Completion, range: bool) -> &Arc<str> {
        match (completion == Completion::MarkPublished, range) {
            (true, false) => &self.mark_published,
            (true, true) => &self.mark_published_range,
            (false, false) => &self.delete,
            (false, true) => &self.delete_range,
        }
    }

    pub(crate) fn new(table: TableName) -> Self {
        let t = table.quoted();
        let [delete, mark_published] = completions(&t, "id IN (SELECT value FROM json_each(?1))");
        let [delete_range, mark_published_range] = completions(&t, "id BETWEEN ?1 AND ?2");
        Self {
            migrations_table: table.quoted_with_suffix("_migrations"),
            progress_kept: format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE progress_key = ?1)",
                table.quoted_with_suffix("_relay_progress")
            )
            .into(),
            keep_progress: format!(
                "INSERT INTO {} (progress_key) VALUES (?1) ON CONFLICT DO NOTHING",
                table.quoted_with_suffix("_relay_progress")
            )
            .into(),
            insert_one: format!(
                "INSERT INTO {t} (message_id, topic, key, payload, headers) VALUES (?1, ?2, ?3, ?4, ?5)"
            )
            .into(),
            // One statement for the whole batch: a JSON array of [id, topic, hex key, hex payload,
            // headers] rows, inserted in array order.
            insert_many: format!(
                "INSERT INTO {t} (message_id, topic, key, payload, headers) \
                 SELECT value ->> 0, value ->> 1, unhex(value ->> 2), unhex(value ->> 3), value ->> 4 \
                 FROM json_each(?1) ORDER BY json_each.key"
            )
            .into(),
            // The columns in the table contract's order ([`txoutbox_core::row_position`]), decoded
            // by position. ?1 limit, ?2 cursor, ?3 byte budget, ?4 largest message. What a row
            // brings counts against the budget: its size, or for a larger row only its key and
            // topic (when they are returned). Sizes first (read from the
            // record headers, not the values), then the contents of the rows within the budget:
            // a row larger than ?4 without payload and headers (and key over 64 KiB). Each row
            // carries its size. The result is not sorted again (the window orders the rows; the
            // caller checks, see `txoutbox_core::in_id_order`).
            fetch_pending: format!(
                "SELECT t.id, t.message_id, \
                   CASE WHEN c.big AND octet_length(t.topic) > 255 THEN '' ELSE t.topic END, \
                   CASE WHEN c.big AND octet_length(t.key) > 65536 THEN NULL ELSE t.key END, \
                   CASE WHEN c.big THEN NULL ELSE t.payload END, \
                   CASE WHEN c.big THEN NULL ELSE t.headers END, \
                   t.created_at, t.attempts, t.next_attempt_at, t.bucket, c.size \
                 FROM ( \
                   SELECT k.*, sum(k.cost) OVER (ORDER BY k.id) AS upto \
                   FROM (SELECT s.id, s.size, s.size > ?4 AS big, CASE WHEN s.size > ?4 THEN \
                           (CASE WHEN s.key_len > 65536 THEN 0 ELSE s.key_len END) \
                           + (CASE WHEN s.topic_len > 255 THEN 0 ELSE s.topic_len END) \
                         ELSE s.size END AS cost \
                         FROM (SELECT id, {ROW_SIZE} AS size, coalesce(octet_length(key), 0) AS key_len, \
                                 coalesce(octet_length(topic), 0) AS topic_len FROM {t} \
                               WHERE status = 'pending' AND id > ?2 ORDER BY id LIMIT ?1) AS s) AS k \
                 ) AS c JOIN {t} AS t ON t.id = c.id \
                 WHERE c.upto - c.cost < ?3"
            )
            .into(),
            delete,
            mark_published,
            delete_range,
            mark_published_range,
            record_failures: format!(
                "UPDATE {t} AS o SET attempts = f.value ->> 1, last_error = f.value ->> 2, \
                   next_attempt_at = f.value ->> 3, \
                   status = CASE WHEN f.value ->> 3 IS NULL THEN 'dead' ELSE 'pending' END \
                 FROM json_each(?1) AS f \
                 WHERE o.id = f.value ->> 0 AND o.status = 'pending'"
            )
            .into(),
            backlog: format!(
                "SELECT (SELECT count(*) FROM {t} WHERE status = 'pending'), \
                        (SELECT created_at FROM {t} WHERE status = 'pending' ORDER BY id LIMIT 1), \
                        (SELECT count(*) FROM {t} WHERE status = 'dead')"
            )
            .into(),
            dead_keys: format!(
                "SELECT DISTINCT topic, key FROM {t} WHERE status = 'dead' AND key IS NOT NULL"
            )
            .into(),
            list_dead: format!(
                "SELECT id, message_id, topic, key, headers, coalesce(length(payload), 0) AS payload_len, \
                   created_at, attempts, last_error FROM {t} WHERE {DEAD_FILTER} ORDER BY id LIMIT ?5"
            )
            .into(),
            replay_dead: format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = NULL WHERE {DEAD_FILTER}"
            )
            .into(),
            purge_dead: format!("DELETE FROM {t} WHERE {DEAD_FILTER}").into(),
            purge_published: format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} \
                   WHERE status = 'published' AND published_at < ?1 ORDER BY id LIMIT ?2)"
            )
            .into(),
            dead_payload: format!(
                "SELECT substr(CAST(payload AS BLOB), 1, ?2), coalesce(length(CAST(payload AS BLOB)), 0) \
                 FROM {t} WHERE id = ?1 AND status = 'dead'"
            )
            .into(),
            topic_stats: format!(
                "SELECT topic, sum(status = 'pending') AS pending, \
                   min(CASE WHEN status = 'pending' THEN created_at END) AS oldest_pending, \
                   sum(status = 'dead') AS dead, sum(status = 'published') AS published \
                 FROM {t} GROUP BY topic ORDER BY topic"
            )
            .into(),
            table,
        }
    }
}
