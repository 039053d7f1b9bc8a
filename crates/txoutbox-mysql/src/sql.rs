//! The statements of the MySQL / MariaDB store, built from the validated table name. Every value
//! is a bound parameter; lists of ids are `IN (?, …)` lists whose length is rounded up to a power
//! of two (padded with a repeated id), so a connection caches a handful of statement shapes.

use txoutbox_core::TableName;

/// The size the relay counts for a row (what a [`txoutbox_core::ReadLimit`] bounds): topic,
/// key, payload and headers in bytes.
const ROW_SIZE: &str = "LENGTH(topic) + COALESCE(LENGTH(`key`), 0) + COALESCE(LENGTH(payload), 0) \
     + COALESCE(LENGTH(headers), 0)";

/// The lengths of what a row larger than the largest message still brings: its key and topic.
const KEPT_LENGTHS: &str = "COALESCE(LENGTH(`key`), 0) AS key_len, LENGTH(topic) AS topic_len";

/// The relay's read of the rows `sizes` selects (`SELECT id, <size> AS size, key_len, topic_len ...`, its own
/// parameters in the middle): in id order while their sizes add up to less than the byte budget
/// (at least one row); a row larger than the largest message comes back without payload and
/// headers (and without a key over 64 KiB or a topic longer than any valid one), and only what it
/// brings counts against the budget.
/// Parameters: the relay lock's name, the largest message (twice), those of `sizes`, the budget.
/// The columns: the table contract's, in [`txoutbox_core::row_position`] order, `holder` (the connection holding the relay lock when
/// the rows were read), the row's size, and how many rows the read had before the budget cut it.
fn budgeted(t: &str, sizes: &str) -> String {
    format!(
        "SELECT r.id, r.message_id, IF(c.big AND LENGTH(r.topic) > 255, '', r.topic), \
           IF(c.big AND LENGTH(r.`key`) > 65536, NULL, r.`key`), IF(c.big, NULL, r.payload), IF(c.big, NULL, r.headers), \
           r.created_at, r.attempts, r.next_attempt_at, r.bucket, \
           CAST(IS_USED_LOCK(?) AS SIGNED) AS holder, CAST(c.size AS SIGNED), CAST(c.candidates AS SIGNED) \
         FROM ( \
           SELECT k.id, k.size, k.big, k.cost, SUM(k.cost) OVER (ORDER BY k.id) AS upto, \
             COUNT(*) OVER () AS candidates \
           FROM (SELECT s.id, s.size, s.size > ? AS big, \
                   IF(s.size > ?, IF(s.key_len > 65536, 0, s.key_len) + IF(s.topic_len > 255, 0, s.topic_len), s.size) AS cost \
                 FROM ({sizes}) AS s) AS k \
         ) AS c JOIN {t} AS r ON r.id = c.id \
         WHERE c.upto - c.cost < ? \
         ORDER BY r.id"
    )
}

/// The most ids one `IN` list holds (MySQL allows 65,535 parameters per statement).
pub(crate) const MAX_IDS: usize = 8_192;

/// The parameters one row of a multi-row insert takes.
pub(crate) const INSERT_PARAMS: usize = 5;

/// The dead-letter filter: topic, lowest id, highest id, created before, each bound twice (MySQL
/// has only positional parameters) and each NULL for "any".
const DEAD_FILTER: &str = "status = 'dead' AND (? IS NULL OR topic = ?) \
     AND (? IS NULL OR id >= ?) AND (? IS NULL OR id <= ?) AND (? IS NULL OR created_at < ?)";

/// `` `name` `` for an identifier [`TableName`] validated (letters, digits, underscores).
pub(crate) fn quote(identifier: &str) -> String {
    format!("`{identifier}`")
}

/// The qualified, quoted name of `table` with `suffix` appended to the table part.
pub(crate) fn qualified(table: &TableName, suffix: &str) -> String {
    let name = quote(&format!("{}{suffix}", table.table()));
    match table.schema() {
        Some(schema) => format!("{}.{name}", quote(schema)),
        None => name,
    }
}

/// `n` rounded up to a power of two (at least 1): the length an id list is padded to.
pub(crate) fn padded_len(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// Every statement of the store, with the table name filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) table: TableName,
    pub(crate) quoted: String,
    pub(crate) migrations_table: String,
    pub(crate) insert_one: String,
    pub(crate) fetch_after: String,
    pub(crate) pending_ids_upto: String,
    pub(crate) record_failure: String,
    pub(crate) backlog: String,
    pub(crate) dead_keys: String,
    pub(crate) list_dead: String,
    pub(crate) dead_payload: String,
    pub(crate) replay_dead: String,
    pub(crate) purge_dead: String,
    pub(crate) purge_published: String,
    pub(crate) topic_stats: String,
}

impl Statements {
    pub(crate) fn new(table: TableName) -> Self {
        let t = qualified(&table, "");
        // Pending rows are read by a range over this index, never by `ref` on the status alone:
        // MariaDB prefers `ref` when many rows match (also deleted rows not purged yet), and
        // `ref` walks every pending entry from the first (measured: 104,000 entries read to find
        // 4,000 ids). FORCE INDEX makes it take the range, which reads only what it returns.
        let status_index = quote(&format!("{}_status_id", table.table()));
        Self {
            migrations_table: qualified(&table, "_migrations"),
            insert_one: format!(
                "INSERT INTO {t} (message_id, topic, `key`, payload, headers) VALUES (?, ?, ?, ?, ?)"
            ),
            // ? the relay lock's name, ? largest message (twice), ? cursor (0 = from the start),
            // ? limit, ? byte budget. `holder` is the connection holding the relay lock when the
            // rows were read (see `budgeted`).
            fetch_after: budgeted(
                &t,
                &format!(
                    "SELECT id, {ROW_SIZE} AS size, {KEPT_LENGTHS} FROM {t} FORCE INDEX ({status_index}) \
                     WHERE status = 'pending' AND id > ? ORDER BY id LIMIT ?"
                ),
            ),
            // Only ids: the candidates for late commits.
            pending_ids_upto: format!(
                "SELECT id FROM {t} FORCE INDEX ({status_index}) \
                 WHERE status = 'pending' AND id <= ? ORDER BY id LIMIT ?"
            ),
            // ? attempts, ? error, ? next attempt, ? next attempt again, ? id.
            record_failure: format!(
                "UPDATE {t} SET attempts = ?, last_error = ?, next_attempt_at = ?, \
                   status = CASE WHEN ? IS NULL THEN 'dead' ELSE 'pending' END \
                 WHERE id = ? AND status = 'pending'"
            ),
            backlog: format!(
                "SELECT (SELECT count(*) FROM {t} WHERE status = 'pending') AS pending, \
                        (SELECT created_at FROM {t} WHERE status = 'pending' ORDER BY id LIMIT 1) AS oldest, \
                        (SELECT count(*) FROM {t} WHERE status = 'dead') AS dead"
            ),
            dead_keys: format!(
                "SELECT DISTINCT topic, `key` FROM {t} WHERE status = 'dead' AND `key` IS NOT NULL"
            ),
            dead_payload: format!(
                "SELECT SUBSTRING(payload, 1, ?), CAST(COALESCE(LENGTH(payload), 0) AS SIGNED) \
                 FROM {t} WHERE id = ? AND status = 'dead'"
            ),
            list_dead: format!(
                "SELECT id, message_id, topic, `key`, headers, \
                   CAST(coalesce(length(payload), 0) AS SIGNED) AS payload_len, created_at, attempts, last_error \
                 FROM {t} WHERE {DEAD_FILTER} ORDER BY id LIMIT ?"
            ),
            replay_dead: format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = NULL WHERE {DEAD_FILTER}"
            ),
            purge_dead: format!("DELETE FROM {t} WHERE {DEAD_FILTER}"),
            // Single-table DELETE takes ORDER BY and LIMIT: one bounded batch, oldest first.
            purge_published: format!(
                "DELETE FROM {t} WHERE status = 'published' AND published_at < ? ORDER BY id LIMIT ?"
            ),
            // Comparisons are 0 or 1 in MySQL: their sum counts the matching rows.
            topic_stats: format!(
                "SELECT topic, CAST(sum(status = 'pending') AS SIGNED) AS pending, \
                   min(CASE WHEN status = 'pending' THEN created_at END) AS oldest_pending, \
                   CAST(sum(status = 'dead') AS SIGNED) AS dead, \
                   CAST(sum(status = 'published') AS SIGNED) AS published \
                 FROM {t} GROUP BY topic ORDER BY topic"
            ),
            quoted: t,
            table,
        }
    }

    /// A multi-row insert of `rows` messages, in the given order.
    pub(crate) fn insert_many(&self, rows: usize) -> String {
        let mut sql = format!(
            "INSERT INTO {} (message_id, topic, `key`, payload, headers) VALUES ",
            self.quoted
        );
        sql.reserve(rows * 17);
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?)");
        }
        sql
    }

    /// Pending rows among `n` ids, with the parameters of `fetch_after` around the ids (the
    /// relay lock's name, the largest message twice; the byte budget last).
    pub(crate) fn fetch_ids(&self, n: usize) -> String {
        budgeted(
            &self.quoted,
            &format!(
                "SELECT id, {ROW_SIZE} AS size, {KEPT_LENGTHS} FROM {} WHERE status = 'pending' AND id IN ({}) ORDER BY id",
                self.quoted,
                placeholders(n)
            ),
        )
    }

    /// Deletes the pending rows among `n` ids.
    pub(crate) fn delete(&self, n: usize) -> String {
        format!(
            "DELETE FROM {} WHERE status = 'pending' AND id IN ({})",
            self.quoted,
            placeholders(n)
        )
    }

    /// Marks the pending rows among `n` ids published.
    pub(crate) fn mark_published(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET status = 'published', published_at = CURRENT_TIMESTAMP(6), next_attempt_at = NULL \
             WHERE status = 'pending' AND id IN ({})",
            self.quoted,
            placeholders(n)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_backquoted_and_qualified() {
        let t = TableName::with_schema("shop", "outbox").unwrap();
        assert_eq!(qualified(&t, ""), "`shop`.`outbox`");
        assert_eq!(qualified(&t, "_migrations"), "`shop`.`outbox_migrations`");
        assert_eq!(qualified(&TableName::default(), ""), "`outbox_messages`");
    }

    #[test]
    fn id_lists_are_padded_to_powers_of_two() {
        assert_eq!([0, 1, 2, 3, 5, 1000].map(padded_len), [1, 1, 2, 4, 8, 1024]);
        let sql = Statements::new(TableName::default());
        assert!(sql.delete(3).ends_with("IN (?, ?, ?)"));
        assert_eq!(sql.insert_many(2).matches('?').count(), 2 * INSERT_PARAMS);
    }
}
