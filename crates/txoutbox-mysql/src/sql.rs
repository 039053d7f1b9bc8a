//! The statements of the MySQL / MariaDB store, built from the validated table name. Every value
//! is a bound parameter; lists of ids are `IN (?, …)` lists, or ranges of ids, whose length is
//! rounded up to a power of two (padded with a repeated id or range), so a connection caches a
//! handful of statement shapes.

use txoutbox_core::TableName;

use txoutbox_core::id_ranges::IdRange;

/// A statement of this store with its parameters being bound.
pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

/// The size the relay counts for a row (what a [`txoutbox_core::ReadLimit`] bounds): topic,
/// key, payload and headers in bytes.
const ROW_SIZE: &str = "LENGTH(topic) + COALESCE(LENGTH(`key`), 0) + COALESCE(LENGTH(payload), 0) \
     + COALESCE(LENGTH(headers), 0)";

/// The lengths of what a row larger than the largest message still brings: its key and topic.
const KEPT_LENGTHS: &str = "COALESCE(LENGTH(`key`), 0) AS key_len, LENGTH(topic) AS topic_len";

/// The relay's read of the rows `sizes` selects (`SELECT id, <size> AS size, key_len, topic_len ...`, its own
/// parameters in the middle): while their sizes, added up in id order, stay below the byte budget
/// (at least one row); a row larger than the largest message comes back without payload and
/// headers (and without a key over 64 KiB or a topic longer than any valid one), and only what it
/// brings counts against the budget. The result is not sorted again (the window orders the rows;
/// the caller checks, see [`txoutbox_core::in_id_order`]).
/// Parameters: the relay lock's name, the largest message (twice), those of `sizes`, the budget.
/// The columns: the table contract's, in [`txoutbox_core::row_position`] order, `holder` (the connection holding the relay lock when
/// the rows were read), the row's size, whether the read had a row after it (1 or 0: on the
/// last row, that the budget cut the read), and the bytes counted against the budget up to and
/// including the row.
fn budgeted(t: &str, sizes: &str) -> String {
    format!(
        "SELECT r.id, r.message_id, IF(c.big AND LENGTH(r.topic) > 255, '', r.topic), \
           IF(c.big AND LENGTH(r.`key`) > 65536, NULL, r.`key`), IF(c.big, NULL, r.payload), IF(c.big, NULL, r.headers), \
           r.created_at, r.attempts, r.next_attempt_at, r.bucket, \
           CAST(IS_USED_LOCK(?) AS SIGNED) AS holder, CAST(c.size AS SIGNED), c.more, CAST(c.upto AS SIGNED) \
         FROM ( \
           SELECT k.id, k.size, k.big, k.cost, SUM(k.cost) OVER o AS upto, \
             CAST(LEAD(k.id) OVER o IS NOT NULL AS SIGNED) AS more \
           FROM (SELECT s.id, s.size, s.size > ? AS big, \
                   IF(s.size > ?, IF(s.key_len > 65536, 0, s.key_len) + IF(s.topic_len > 255, 0, s.topic_len), s.size) AS cost \
                 FROM ({sizes}) AS s) AS k \
           WINDOW o AS (ORDER BY k.id) \
         ) AS c JOIN {t} AS r ON r.id = c.id \
         WHERE c.upto - c.cost < ?"
    )
}

/// The condition that a row's bucket is among those of the bound mask (bit `b` set for bucket
/// `b`; all ones for every row): one statement shape for a relay that reads every row and for a
/// work-balance node that reads its buckets.
const IN_BUCKETS: &str = "((? >> bucket) & 1) = 1";

/// The bucket mask of a relay that reads every row.
pub(crate) const ALL_BUCKETS: u64 = u64::MAX;

/// The fence of a coordinated node's writes on a row: the node holds the whole table, or the
/// row's bucket, at its epoch, and the lease has not ended. Parameters: node, epoch, node, epoch.
/// Two uncorrelated subqueries, which the server evaluates once per statement (the exclusive
/// lease) and as a semi-join (the bucket leases): a correlated `EXISTS` per row made a 1,000-row
/// delete 3.5–4 times as slow as an unfenced one on MariaDB, these 1.2 times.
fn fence(leases: &str) -> String {
    let held = "l.owner = ? AND l.epoch = ? AND l.lease_until > UTC_TIMESTAMP(6)";
    format!(
        "(EXISTS (SELECT 1 FROM {leases} AS l WHERE {held} AND l.bucket = -1) \
           OR bucket IN (SELECT l.bucket FROM {leases} AS l WHERE {held}))"
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

/// `query` with the values of `list` bound, padded to [`padded_len`] with its last value.
pub(crate) fn bind_padded<'q, T>(mut query: Query<'q>, list: &[T]) -> Query<'q>
where
    T: Copy + Default + sqlx::Encode<'q, sqlx::MySql> + sqlx::Type<sqlx::MySql> + 'q,
{
    for i in 0..padded_len(list.len()) {
        query = query.bind(list.get(i).or(list.last()).copied().unwrap_or_default());
    }
    query
}

/// `(term OR term …)` with `n` terms.
fn any_of(n: usize, term: &str) -> String {
    let mut s = String::with_capacity(n * (term.len() + 4) + 2);
    s.push('(');
    for i in 0..n {
        if i > 0 {
            s.push_str(" OR ");
        }
        s.push_str(term);
    }
    s.push(')');
    s
}

/// `(id BETWEEN ? AND ? OR …)` with `n` ranges, for a statement that takes no locks.
fn in_ranges(n: usize) -> String {
    any_of(n, "id BETWEEN ? AND ?")
}

/// `query` with the bounds of `ranges` bound, padded to [`padded_len`] with its last range.
pub(crate) fn bind_ranges<'q>(mut query: Query<'q>, ranges: &[IdRange]) -> Query<'q> {
    for i in 0..padded_len(ranges.len()) {
        let (start, end) = ranges.get(i).or(ranges.last()).copied().unwrap_or((1, 0));
        query = query.bind(start).bind(end);
    }
    query
}

/// `(id BETWEEN ? AND ? OR id = ? OR …)` with `n` runs, for a locking statement: each run
/// `[a, b]` is named as `[a, b - 1]` and `b` (see [`bind_runs`]). A range scan locks the first
/// record past its end (InnoDB's next-key lock at REPEATABLE READ), and past a batch's last id
/// that record is often a writer's uncommitted row: `id BETWEEN a AND b` made the completion wait
/// for that writer's commit (measured on MariaDB 10.11: a lock-wait timeout), where the range up
/// to `b - 1` stops at `b`, a row of the batch, and `id = b` locks that row alone. (Were `b` gone
/// already — completed twice, and purged — the scan would reach the next record again: a wait,
/// never a wrong row.)
fn in_runs(n: usize) -> String {
    any_of(n, "id BETWEEN ? AND ? OR id = ?")
}

/// `query` with the runs of [`in_runs`] bound (`a`, `b - 1`, `b` each), padded to
/// [`padded_len`] with the last run.
pub(crate) fn bind_runs<'q>(mut query: Query<'q>, runs: &[IdRange]) -> Query<'q> {
    for i in 0..padded_len(runs.len()) {
        let (start, end) = runs.get(i).or(runs.last()).copied().unwrap_or((1, 0));
        // A run of one id names the empty range `[1, 0]` and the id.
        let (start, below_end) = match end.checked_sub(1) {
            Some(below_end) if start <= below_end => (start, below_end),
            _ => (1, 0),
        };
        query = query.bind(start).bind(below_end).bind(end);
    }
    query
}

/// Which rows a completion names: `n` ids in an `IN` list, or `n` runs of consecutive ids.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ids {
    List(usize),
    Runs(usize),
}

impl Ids {
    fn condition(self) -> String {
        match self {
            Self::List(n) => format!("id IN ({})", placeholders(n)),
            Self::Runs(n) => in_runs(n),
        }
    }
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
    /// The progress keys of exactly-once relays (created with the relay tables).
    pub(crate) progress_table: String,
    /// ? key: whether an exactly-once relay's progress key is recorded (0 or 1).
    pub(crate) progress_kept: String,
    /// ? key: records it.
    pub(crate) keep_progress: String,
    pub(crate) insert_one: String,
    pub(crate) fetch_after: String,
    pub(crate) pending_ids_upto: String,
    /// `pending_ids_upto` limited to the buckets of a mask (after the cursor).
    pub(crate) pending_ids_upto_in_buckets: String,
    /// The quoted name of the `(status, id)` index.
    status_index: String,
    pub(crate) record_failure: String,
    /// `record_failure` fenced (see [`fence`]; its parameters after the id).
    pub(crate) record_failure_fenced: String,
    /// The fence of a coordinated node's writes (see [`fence`]).
    fence: String,
    pub(crate) backlog: String,
    pub(crate) dead_keys: String,
    pub(crate) list_dead: String,
    pub(crate) dead_payload: String,
    pub(crate) replay_dead: String,
    pub(crate) purge_dead: String,
    pub(crate) purge_published: String,
    pub(crate) topic_stats: String,
    pub(crate) leases: LeaseStatements,
}

/// The statements of the relay-node, lease and epoch tables (see the migration
/// `0002_relay_leases.sql`). Times are the database's UTC clock; lease lengths are bound in
/// microseconds.
#[derive(Debug)]
pub(crate) struct LeaseStatements {
    pub(crate) nodes: String,
    pub(crate) leases: String,
    pub(crate) epoch: String,
    /// Takes the next epoch; `LAST_INSERT_ID()` returns it on the same connection.
    pub(crate) next_epoch: String,
    /// ? node, ? mode, ? lease (µs), ? mode, ? lease (µs): registers the node with the epoch just
    /// taken.
    pub(crate) join: String,
    /// ? node: its epoch.
    pub(crate) epoch_of: String,
    pub(crate) forget_dead_nodes: String,
    /// ? lease (µs), ? node, ? epoch.
    pub(crate) renew: String,
    /// ? node: the live nodes (and this one, alive or not), with `alive`.
    pub(crate) live_nodes: String,
    /// ? node, ? epoch.
    pub(crate) release_all: String,
    /// ? node, ? epoch.
    pub(crate) leave: String,
    pub(crate) list: String,
}

impl Statements {
    pub(crate) fn new(table: TableName) -> Self {
        let t = qualified(&table, "");
        // Pending rows are read by a range over this index, never by `ref` on the status alone:
        // MariaDB prefers `ref` when many rows match (also deleted rows not purged yet), and
        // `ref` walks every pending entry from the first (measured: 104,000 entries read to find
        // 4,000 ids). FORCE INDEX makes it take the range, which reads only what it returns.
        let status_index = quote(&format!("{}_status_id", table.table()));
        let leases = LeaseStatements::new(&table);
        // ? attempts, ? error, ? next attempt, ? next attempt again, ? id.
        let record_failure = format!(
            "UPDATE {t} SET attempts = ?, last_error = ?, next_attempt_at = ?, \
               status = CASE WHEN ? IS NULL THEN 'dead' ELSE 'pending' END \
             WHERE id = ? AND status = 'pending'"
        );
        Self {
            migrations_table: qualified(&table, "_migrations"),
            progress_kept: format!(
                "SELECT CAST(EXISTS (SELECT 1 FROM {} WHERE progress_key = ?) AS SIGNED)",
                qualified(&table, "_relay_progress")
            ),
            keep_progress: format!(
                // Not INSERT IGNORE: a key too long for the column must fail, not be cut short.
                "INSERT INTO {} (progress_key, kept_since) VALUES (?, UTC_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE progress_key = progress_key",
                qualified(&table, "_relay_progress")
            ),
            progress_table: qualified(&table, "_relay_progress"),
            insert_one: format!(
                "INSERT INTO {t} (message_id, topic, `key`, payload, headers) VALUES (?, ?, ?, ?, ?)"
            ),
            // ? the relay lock's name, ? largest message (twice), ? cursor (0 = from the start),
            // ? bucket mask, ? limit, ? byte budget. `holder` is the connection holding the relay
            // lock when the rows were read (see `budgeted`).
            fetch_after: budgeted(
                &t,
                &format!(
                    "SELECT id, {ROW_SIZE} AS size, {KEPT_LENGTHS} FROM {t} FORCE INDEX ({status_index}) \
                     WHERE status = 'pending' AND id > ? AND {IN_BUCKETS} ORDER BY id LIMIT ?"
                ),
            ),
            // Only ids: the candidates for late commits.
            pending_ids_upto: format!(
                "SELECT id FROM {t} FORCE INDEX ({status_index}) \
                 WHERE status = 'pending' AND id <= ? ORDER BY id LIMIT ?"
            ),
            pending_ids_upto_in_buckets: format!(
                "SELECT id FROM {t} FORCE INDEX ({status_index}) \
                 WHERE status = 'pending' AND id <= ? AND {IN_BUCKETS} ORDER BY id LIMIT ?"
            ),
            status_index,
            record_failure_fenced: format!("{record_failure} AND {}", fence(&leases.leases)),
            fence: fence(&leases.leases),
            record_failure,
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
            leases,
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
    /// relay lock's name, the largest message twice, the bucket mask; the byte budget last).
    pub(crate) fn fetch_ids(&self, n: usize) -> String {
        budgeted(
            &self.quoted,
            &format!(
                "SELECT id, {ROW_SIZE} AS size, {KEPT_LENGTHS} FROM {} \
                 WHERE status = 'pending' AND {IN_BUCKETS} AND id IN ({}) ORDER BY id",
                self.quoted,
                placeholders(n)
            ),
        )
    }

    /// The fence of a coordinated node's writes, after the ids (see [`fence`]).
    fn fenced(&self, fenced: bool) -> String {
        if fenced {
            format!(" AND {}", self.fence)
        } else {
            String::new()
        }
    }

    /// The pending ids in `n` ranges (the candidates for late commits outside the ids in
    /// flight), limited to the buckets of a mask when `in_buckets`. Parameters: the ranges' bounds,
    /// the mask (when `in_buckets`), the limit.
    pub(crate) fn pending_ids_in(&self, n: usize, in_buckets: bool) -> String {
        let buckets = if in_buckets {
            format!(" AND {IN_BUCKETS}")
        } else {
            String::new()
        };
        format!(
            "SELECT id FROM {} FORCE INDEX ({}) WHERE status = 'pending' AND {}{buckets} ORDER BY id LIMIT ?",
            self.quoted,
            self.status_index,
            in_ranges(n)
        )
    }

    /// Deletes the pending rows among `ids` (`fenced`: of a coordinated node).
    pub(crate) fn delete(&self, ids: Ids, fenced: bool) -> String {
        format!(
            "DELETE FROM {} WHERE status = 'pending' AND {}{}",
            self.quoted,
            ids.condition(),
            self.fenced(fenced)
        )
    }

    /// Marks the pending rows among `ids` published (`fenced`: of a coordinated node).
    pub(crate) fn mark_published(&self, ids: Ids, fenced: bool) -> String {
        format!(
            "UPDATE {} SET status = 'published', published_at = CURRENT_TIMESTAMP(6), next_attempt_at = NULL \
             WHERE status = 'pending' AND {}{}",
            self.quoted,
            ids.condition(),
            self.fenced(fenced)
        )
    }
}

impl LeaseStatements {
    fn new(table: &TableName) -> Self {
        let nodes = qualified(table, "_relay_nodes");
        let leases = qualified(table, "_relay_leases");
        let epoch = qualified(table, "_relay_epoch");
        let until = "UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND";
        Self {
            // On first use the row is created with epoch 1; LAST_INSERT_ID(expr) keeps the value
            // for this connection.
            next_epoch: format!(
                "INSERT INTO {epoch} (id, value) VALUES (1, LAST_INSERT_ID(1)) \
                 ON DUPLICATE KEY UPDATE value = LAST_INSERT_ID(value + 1)"
            ),
            join: format!(
                "INSERT INTO {nodes} (node_id, mode, epoch, alive_until, joined_at) \
                 VALUES (?, ?, LAST_INSERT_ID(), {until}, UTC_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE mode = ?, epoch = LAST_INSERT_ID(), alive_until = {until}, \
                   joined_at = UTC_TIMESTAMP(6)"
            ),
            epoch_of: format!("SELECT epoch FROM {nodes} WHERE node_id = ?"),
            forget_dead_nodes: format!(
                "DELETE FROM {nodes} WHERE alive_until < UTC_TIMESTAMP(6) - INTERVAL 1 HOUR"
            ),
            renew: format!(
                "UPDATE {nodes} SET alive_until = {until} \
                 WHERE node_id = ? AND epoch = ? AND alive_until > UTC_TIMESTAMP(6)"
            ),
            live_nodes: format!(
                "SELECT CAST(node_id AS CHAR CHARACTER SET utf8mb4) AS node_id, mode, epoch, \
                   CAST(alive_until > UTC_TIMESTAMP(6) AS SIGNED) AS alive \
                 FROM {nodes} AS n WHERE alive_until > UTC_TIMESTAMP(6) OR n.node_id = ? \
                 ORDER BY n.node_id"
            ),
            release_all: format!(
                "UPDATE {leases} SET owner = NULL, epoch = NULL, lease_until = NULL WHERE owner = ? AND epoch = ?"
            ),
            leave: format!("DELETE FROM {nodes} WHERE node_id = ? AND epoch = ?"),
            list: format!(
                "SELECT bucket, CAST(owner AS CHAR CHARACTER SET utf8mb4) AS owner, epoch, lease_until \
                 FROM {leases} ORDER BY bucket"
            ),
            nodes,
            leases,
            epoch,
        }
    }

    /// Creates the lease rows of `n` buckets that have none yet (free).
    pub(crate) fn create(&self, n: usize) -> String {
        let mut rows = String::with_capacity(n * 5);
        for i in 0..n {
            if i > 0 {
                rows.push_str(", ");
            }
            rows.push_str("(?)");
        }
        format!("INSERT IGNORE INTO {} (bucket) VALUES {rows}", self.leases)
    }

    /// ? node, ? epoch, ? lease (µs), `n` buckets, ? node, ? epoch: takes or renews the leases
    /// of the buckets that are free, expired or already this session's.
    pub(crate) fn claim(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET owner = ?, epoch = ?, lease_until = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
             WHERE bucket IN ({}) AND (owner IS NULL OR lease_until IS NULL \
               OR lease_until <= UTC_TIMESTAMP(6) OR (owner = ? AND epoch = ?))",
            self.leases,
            placeholders(n)
        )
    }

    /// ? node, ? epoch, ? lease (µs), `n` buckets, ? node, ? epoch: takes the free leases of the
    /// buckets and renews this session's; leaves leases that ran out under other sessions.
    pub(crate) fn claim_fresh(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET owner = ?, epoch = ?, lease_until = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
             WHERE bucket IN ({}) AND (owner IS NULL OR lease_until IS NULL OR (owner = ? AND epoch = ?))",
            self.leases,
            placeholders(n)
        )
    }

    /// `n` buckets, ? node, ? epoch: those whose lease ran out under another session, with it.
    pub(crate) fn expired(&self, n: usize) -> String {
        format!(
            "SELECT bucket, CAST(owner AS CHAR CHARACTER SET utf8mb4) AS owner, epoch FROM {} \
             WHERE bucket IN ({}) AND owner IS NOT NULL AND lease_until <= UTC_TIMESTAMP(6) \
               AND NOT (owner = ? AND epoch = ?) ORDER BY bucket",
            self.leases,
            placeholders(n)
        )
    }

    /// ? node, ? epoch, ? lease (µs), `n` buckets, ? lost epoch: takes the leases of the buckets
    /// that the lost session still holds with its lease run out.
    pub(crate) fn take_over(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET owner = ?, epoch = ?, lease_until = UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND \
             WHERE bucket IN ({}) AND epoch = ? AND owner IS NOT NULL AND lease_until <= UTC_TIMESTAMP(6)",
            self.leases,
            placeholders(n)
        )
    }

    /// ? node, ? epoch, `n` buckets: those of them whose lease names the session, run out or not.
    pub(crate) fn owned(&self, n: usize) -> String {
        format!(
            "SELECT bucket FROM {} WHERE owner = ? AND epoch = ? AND bucket IN ({}) ORDER BY bucket",
            self.leases,
            placeholders(n)
        )
    }

    /// ? node, ? epoch, `n` buckets: those of them the session holds.
    pub(crate) fn held(&self, n: usize) -> String {
        format!(
            "SELECT bucket FROM {} WHERE owner = ? AND epoch = ? AND lease_until > UTC_TIMESTAMP(6) \
               AND bucket IN ({}) ORDER BY bucket",
            self.leases,
            placeholders(n)
        )
    }

    /// ? node, ? epoch, `n` buckets: gives them up.
    pub(crate) fn release(&self, n: usize) -> String {
        format!(
            "UPDATE {} SET owner = NULL, epoch = NULL, lease_until = NULL \
             WHERE owner = ? AND epoch = ? AND bucket IN ({})",
            self.leases,
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
        assert!(sql.delete(Ids::List(3), false).ends_with("IN (?, ?, ?)"));
        assert_eq!(sql.delete(Ids::List(3), true).matches('?').count(), 3 + 4);
        assert!(
            sql.delete(Ids::Runs(2), false)
                .ends_with("(id BETWEEN ? AND ? OR id = ? OR id BETWEEN ? AND ? OR id = ?)")
        );
        assert_eq!(sql.mark_published(Ids::Runs(2), true).matches('?').count(), 6 + 4);
        assert_eq!(sql.pending_ids_in(2, true).matches('?').count(), 4 + 2);
        assert_eq!(sql.insert_many(2).matches('?').count(), 2 * INSERT_PARAMS);
    }
}
