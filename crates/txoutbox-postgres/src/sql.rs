//! The statements of the PostgreSQL store, built once from the validated table name.

use std::sync::Arc;

use txoutbox_core::{Completion, TableName};

/// Columns the relay reads, in [`crate::store`]'s decoding order (the bucket computed from the key,
/// see [`bucket_of`]).
fn row_columns() -> String {
    format!(
        "id, message_id, topic, key, payload, headers::text AS headers, created_at, attempts, next_attempt_at, \
         {} AS bucket",
        bucket_of("key")
    )
}

/// The bucket of a row with key column `key`: a stable hash of the key into 64 buckets
/// (`hashtextextended`, the function behind PostgreSQL's hash partitioning), the same for every
/// writer's rows; rows without a key share one. The migrations' read functions use the same
/// expression.
pub(crate) fn bucket_of(key: &str) -> String {
    format!("(hashtextextended(encode(coalesce({key}, '\\x'::bytea), 'hex'), 0) & 63)::integer")
}

/// The positions of the relay's read ([`fetch_statement`]): the snapshot, then [`ROW_COLUMNS`]
/// in the table contract's order ([`txoutbox_core::row_position`]).
pub(crate) mod fetch_column {
    use txoutbox_core::row_position as row;

    pub(crate) const SNAPSHOT: usize = 0;
    pub(crate) const ID: usize = 1 + row::ID;
    pub(crate) const MESSAGE_ID: usize = 1 + row::MESSAGE_ID;
    pub(crate) const TOPIC: usize = 1 + row::TOPIC;
    pub(crate) const KEY: usize = 1 + row::KEY;
    pub(crate) const PAYLOAD: usize = 1 + row::PAYLOAD;
    pub(crate) const HEADERS: usize = 1 + row::HEADERS;
    pub(crate) const CREATED_AT: usize = 1 + row::CREATED_AT;
    pub(crate) const ATTEMPTS: usize = 1 + row::ATTEMPTS;
    pub(crate) const NEXT_ATTEMPT_AT: usize = 1 + row::NEXT_ATTEMPT_AT;
    pub(crate) const BUCKET: usize = 1 + row::BUCKET;
    /// The row's size in bytes.
    pub(crate) const SIZE: usize = 1 + row::COUNT;
    /// Whether the read had a row after this one (in id order): on the last row returned, that
    /// the byte budget cut the read.
    pub(crate) const MORE: usize = 2 + row::COUNT;
    /// Whether this relay may read (it holds the table's relay lock, or needs none).
    pub(crate) const HELD: usize = 3 + row::COUNT;
}

/// Every statement of the store, with the table name filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) table: TableName,
    pub(crate) migrations_table: String,
    /// $1 key: whether an exactly-once relay's progress key is recorded.
    pub(crate) progress_kept: Arc<str>,
    /// $1 key: records it.
    pub(crate) keep_progress: Arc<str>,
    /// The LISTEN/NOTIFY channel of this table (only identifier characters, so it is safe in a
    /// string literal and as a quoted identifier).
    pub(crate) channel: String,
    pub(crate) insert_one: Arc<str>,
    pub(crate) insert_many: Arc<str>,
    pub(crate) insert_immediate: Arc<str>,
    pub(crate) fetch_pending: Arc<str>,
    pub(crate) delete: Arc<str>,
    pub(crate) mark_published: Arc<str>,
    pub(crate) record_failures: Arc<str>,
    pub(crate) backlog: Arc<str>,
    pub(crate) dead_keys: Arc<str>,
    pub(crate) list_dead: Arc<str>,
    pub(crate) replay_dead: Arc<str>,
    pub(crate) purge_dead: Arc<str>,
    pub(crate) purge_published: Arc<str>,
    pub(crate) topic_stats: Arc<str>,
    pub(crate) dead_payload: Arc<str>,
    /// Reads of a work-balance node: `fetch_pending` limited to the buckets in $7.
    pub(crate) fetch_pending_in_buckets: Arc<str>,
    /// Reads of a single-mode relay: `fetch_pending` while the relay lock of table $8 (oid) is
    /// granted to backend $7 ([`crate::relay_lock`]); one row of NULLs with `held` false if not.
    pub(crate) fetch_pending_locked: Arc<str>,
    /// Writes of a coordinated node: conditional on its lease ($2 node, $3 epoch; failures: $5, $6).
    pub(crate) delete_fenced: Arc<str>,
    pub(crate) mark_published_fenced: Arc<str>,
    pub(crate) record_failures_fenced: Arc<str>,
    /// `delete` and `mark_published` of the ids from $1 to $2 (a batch of consecutive ids: one
    /// index range scan, where `id = ANY($1)` descends the index for every id), and their fenced
    /// forms ($3 node, $4 epoch).
    pub(crate) delete_range: Arc<str>,
    pub(crate) mark_published_range: Arc<str>,
    pub(crate) delete_range_fenced: Arc<str>,
    pub(crate) mark_published_range_fenced: Arc<str>,
    /// The relay says whether it is awake ($1): the notify trigger stays silent while it is.
    pub(crate) relay_awake: Arc<str>,
    pub(crate) leases: LeaseStatements,
}

impl Statements {
    /// The completion `completion` asks for: of the ids in $1 (`range`: of the ids from $1 to
    /// $2), fenced by the node and epoch that follow when `fenced`.
    pub(crate) fn complete(&self, completion: Completion, range: bool, fenced: bool) -> &Arc<str> {
        let published = completion == Completion::MarkPublished;
        match (published, range, fenced) {
            (true, false, false) => &self.mark_published,
            (true, false, true) => &self.mark_published_fenced,
            (true, true, false) => &self.mark_published_range,
            (true, true, true) => &self.mark_published_range_fenced,
            (false, false, false) => &self.delete,
            (false, false, true) => &self.delete_fenced,
            (false, true, false) => &self.delete_range,
            (false, true, true) => &self.delete_range_fenced,
        }
    }
}

/// The statements of the relay-node and lease tables.
#[derive(Debug)]
pub(crate) struct LeaseStatements {
    pub(crate) join: Arc<str>,
    pub(crate) forget_dead_nodes: Arc<str>,
    pub(crate) heartbeat: Arc<str>,
    pub(crate) claim: Arc<str>,
    pub(crate) claim_fresh: Arc<str>,
    pub(crate) take_over: Arc<str>,
    pub(crate) release: Arc<str>,
    pub(crate) release_all: Arc<str>,
    pub(crate) leave: Arc<str>,
    pub(crate) list: Arc<str>,
}

/// The size the relay counts for a row (what a [`txoutbox_core::ReadLimit`] bounds): topic,
/// key, payload and headers in bytes, read from the column headers without detoasting them.
const ROW_SIZE: &str = "octet_length(topic)::bigint + coalesce(octet_length(key), 0) \
     + coalesce(octet_length(payload), 0) + coalesce(octet_length(headers::text), 0)";

/// The relay's pending-row read: $1 cursor, $2 limit, $3 previous snapshot, $4 late limit, $5
/// byte budget, $6 largest message, `held` the condition for reading at all (evaluated once), and
/// `buckets` the buckets to read (`$7::int[]`, or `NULL::int[]` for all). The candidate rows come
/// from the table's read functions (`<table>_pending_after`, `<table>_pending_late`: see the
/// migration `0005_cheaper_writes.sql`), whose plans do not depend on the table's statistics.
///
/// Rows come back while what they bring, added up in id order, stays below $5 (at least one): a
/// row's size, or for a row larger than $6 — which comes back without payload and headers (and
/// without a key over 64 KiB or a topic longer than any valid one) — only its key and topic. Each
/// row also carries its size and whether the read had a row after it.
///
/// The running sum and the look-ahead share one window over the candidates in id order (a
/// `float8` sum, exact while the rows add up to less than 2^53 bytes: a `bigint` sum is
/// `numeric`, and slower), and the result is not sorted again: the caller puts the rows in id
/// order. With a second window (`count(*) OVER ()`), a numeric sum and a final sort, a 1,000-row
/// read took 6.0–8.5 ms of server time against 4.5–5.9 ms (docs/benchmarks.md).
fn fetch_statement(table: &TableName, held: &str, buckets: &str) -> String {
    let after = table.quoted_with_suffix("_pending_after");
    let late = table.quoted_with_suffix("_pending_late");
    let columns = row_columns();
    format!(
        "SELECT h.snap, r.id, r.message_id, \
           CASE WHEN r.big AND octet_length(r.topic) > 255 THEN '' ELSE r.topic END, \
           CASE WHEN r.big AND octet_length(r.key) > 65536 THEN NULL ELSE r.key END, \
           CASE WHEN r.big THEN NULL ELSE r.payload END, \
           CASE WHEN r.big THEN NULL ELSE r.headers END, \
           r.created_at, r.attempts, r.next_attempt_at, r.bucket, r.size, r.more, h.held \
         FROM (SELECT pg_current_snapshot()::text AS snap, {held} AS held) AS h \
         LEFT JOIN LATERAL ( \
           SELECT w.*, w.size > $6 AS big FROM ( \
             SELECT c.*, sum(c.cost::float8) OVER o AS upto, lead(c.id) OVER o IS NOT NULL AS more \
             FROM (SELECT u.*, CASE WHEN u.size > $6 THEN \
                     (CASE WHEN coalesce(octet_length(u.key), 0) > 65536 THEN 0 ELSE coalesce(octet_length(u.key), 0) END) \
                     + (CASE WHEN octet_length(u.topic) > 255 THEN 0 ELSE octet_length(u.topic) END) \
                   ELSE u.size END AS cost FROM ( \
               SELECT {columns}, {ROW_SIZE} AS size FROM {after}($1, $2, {buckets}) WHERE h.held \
               UNION ALL \
               SELECT {columns}, {ROW_SIZE} AS size FROM {late}($1, $3::text::pg_snapshot, $4, {buckets}) \
                 WHERE h.held AND $3::text IS NOT NULL \
             ) AS u) AS c \
             WINDOW o AS (ORDER BY c.id) \
           ) AS w \
           WHERE w.upto - w.cost::float8 < $5::float8 \
         ) AS r ON true"
    )
}

/// Whether the relay lock of table $8 (oid) is granted to backend $7 (see [`crate::relay_lock`]):
/// a two-key advisory lock (`objsubid` 2) in this database.
fn relay_lock_granted() -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid::bigint = {} AND objid::bigint = $8 AND objsubid = 2 AND pid = $7 AND granted)",
        crate::relay_lock::NAMESPACE
    )
}

/// The fence of a coordinated node's writes on row `o`: it holds the row's bucket (or the whole
/// table) at its epoch, and the lease has not ended.
fn fence(leases: &str, node: &str, epoch: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM {leases} AS l WHERE l.owner = {node} AND l.epoch = {epoch} \
           AND l.lease_until > now() AND l.bucket IN (-1, {}))",
        bucket_of("o.key")
    )
}

/// The completions of the pending rows `ids` selects (a condition on `o.id`): delete, mark
/// published, and both fenced by the node and epoch in the parameters `fence_params`.
fn completions(t: &str, leases: &str, ids: &str, fence_params: (&str, &str)) -> [Arc<str>; 4] {
    let delete = format!("DELETE FROM {t} AS o WHERE {ids} AND o.status = 'pending'");
    let mark_published = format!(
        "UPDATE {t} AS o SET status = 'published', published_at = now(), next_attempt_at = NULL \
         WHERE {ids} AND o.status = 'pending'"
    );
    let fenced = format!(" AND {}", fence(leases, fence_params.0, fence_params.1));
    [
        Arc::from(delete.as_str()),
        Arc::from(mark_published.as_str()),
        Arc::from(format!("{delete}{fenced}")),
        Arc::from(format!("{mark_published}{fenced}")),
    ]
}

/// The dead-letter filter: $1 topic, $2 lowest id, $3 highest id, $4 created before (each NULL
/// for "any").
const DEAD_FILTER: &str = "status = 'dead' AND ($1::text IS NULL OR topic = $1) \
     AND ($2::bigint IS NULL OR id >= $2) AND ($3::bigint IS NULL OR id <= $3) \
     AND ($4::timestamptz IS NULL OR created_at < $4)";

impl Statements {
    pub(crate) fn new(table: TableName) -> Self {
        let t = table.quoted();
        let leases = table.quoted_with_suffix("_relay_leases");
        let [delete, mark_published, delete_fenced, mark_published_fenced] =
            completions(&t, &leases, "o.id = ANY($1)", ("$2", "$3"));
        let [
            delete_range,
            mark_published_range,
            delete_range_fenced,
            mark_published_range_fenced,
        ] = completions(&t, &leases, "o.id BETWEEN $1 AND $2", ("$3", "$4"));
        Self {
            migrations_table: table.quoted_with_suffix("_migrations"),
            progress_kept: format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE progress_key = $1)",
                table.quoted_with_suffix("_relay_progress")
            )
            .into(),
            keep_progress: format!(
                "INSERT INTO {} (progress_key) VALUES ($1) ON CONFLICT DO NOTHING",
                table.quoted_with_suffix("_relay_progress")
            )
            .into(),
            channel: channel_name(&table),
            insert_one: format!(
                "INSERT INTO {t} (message_id, topic, key, payload, headers) VALUES ($1, $2, $3, $4, $5::json)"
            )
            .into(),
            // A row the publishing process sends itself after commit: the relay leaves it alone
            // for the grace period ($6, milliseconds).
            insert_immediate: format!(
                "INSERT INTO {t} (message_id, topic, key, payload, headers, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5::json, now() + $6 * interval '1 millisecond') \
                 RETURNING id, created_at"
            )
            .into(),
            // One statement for the whole batch, in the caller's order.
            insert_many: format!(
                "INSERT INTO {t} (message_id, topic, key, payload, headers) \
                 SELECT m, tp, k, p, h::json \
                 FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], $5::text[]) \
                   WITH ORDINALITY AS u(m, tp, k, p, h, ord) \
                 ORDER BY ord"
            )
            .into(),
            // $1 cursor (0 = from the start), $2 limit above the cursor, $3 the snapshot of the
            // previous fetch (text; NULL at first), $4 limit of late rows. Late rows are the
            // pending rows at or below the cursor that the previous fetch could not see: written
            // by a transaction still running then (or not yet started). Every row comes back with
            // this fetch's snapshot (and a row of NULLs when nothing is pending).
            fetch_pending: fetch_statement(&table, "true", "NULL::int[]").into(),
            dead_payload: format!(
                "SELECT substring(payload FROM 1 FOR $2), coalesce(octet_length(payload), 0)::bigint \
                 FROM {t} WHERE id = $1 AND status = 'dead'"
            )
            .into(),
            fetch_pending_in_buckets: fetch_statement(&table, "true", "$7::int[]").into(),
            fetch_pending_locked: fetch_statement(&table, &relay_lock_granted(), "NULL::int[]").into(),
            record_failures: format!(
                "UPDATE {t} AS o SET attempts = f.attempts, last_error = f.error, next_attempt_at = f.next, \
                   status = CASE WHEN f.next IS NULL THEN 'dead' ELSE 'pending' END \
                 FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::timestamptz[]) AS f(id, attempts, error, next) \
                 WHERE o.id = f.id AND o.status = 'pending'"
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
                "SELECT id, message_id, topic, key, headers::text AS headers, \
                   coalesce(octet_length(payload), 0)::bigint AS payload_len, created_at, attempts, last_error \
                 FROM {t} WHERE {DEAD_FILTER} ORDER BY id LIMIT $5"
            )
            .into(),
            // A fresh xid: the relay's cursor sees replayed rows as just committed.
            replay_dead: format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = NULL, \
                   xid = pg_current_xact_id() WHERE {DEAD_FILTER}"
            )
            .into(),
            purge_dead: format!("DELETE FROM {t} WHERE {DEAD_FILTER}").into(),
            purge_published: format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} \
                   WHERE status = 'published' AND published_at < $1 ORDER BY id LIMIT $2)"
            )
            .into(),
            topic_stats: format!(
                "SELECT topic, count(*) FILTER (WHERE status = 'pending') AS pending, \
                   min(created_at) FILTER (WHERE status = 'pending') AS oldest_pending, \
                   count(*) FILTER (WHERE status = 'dead') AS dead, \
                   count(*) FILTER (WHERE status = 'published') AS published \
                 FROM {t} GROUP BY topic ORDER BY topic"
            )
            .into(),
            delete,
            mark_published,
            delete_fenced,
            mark_published_fenced,
            delete_range,
            mark_published_range,
            delete_range_fenced,
            mark_published_range_fenced,
            record_failures_fenced: format!(
                "UPDATE {t} AS o SET attempts = f.attempts, last_error = f.error, next_attempt_at = f.next, \
                   status = CASE WHEN f.next IS NULL THEN 'dead' ELSE 'pending' END \
                 FROM UNNEST($1::bigint[], $2::int[], $3::text[], $4::timestamptz[]) AS f(id, attempts, error, next) \
                 WHERE o.id = f.id AND o.status = 'pending' AND {}",
                fence(&leases, "$5", "$6")
            )
            .into(),
            relay_awake: format!(
                "INSERT INTO {} (id, awake) VALUES (true, $1) \
                 ON CONFLICT (id) DO UPDATE SET awake = EXCLUDED.awake",
                table.quoted_with_suffix("_relay_state")
            )
            .into(),
            leases: LeaseStatements::new(&table, &leases),
            table,
        }
    }
}

impl LeaseStatements {
    fn new(table: &TableName, leases: &str) -> Self {
        let nodes = table.quoted_with_suffix("_relay_nodes");
        // A regclass literal: the quoted, validated name inside a string.
        let epochs = table.quoted_with_suffix("_relay_epoch").replace('\'', "''");
        let ms = "* interval '1 millisecond'";
        // $1 node, $2 epoch, $3 buckets, $4 lease (ms): takes the leases that are free, this
        // session's, or (with `expired`) ran out.
        let claim = |expired: &str| {
            format!(
                "INSERT INTO {leases} AS l (bucket, owner, epoch, lease_until) \
                 SELECT b, $1, $2, now() + $4 {ms} FROM unnest($3::int[]) AS b \
                 ON CONFLICT (bucket) DO UPDATE SET owner = EXCLUDED.owner, epoch = EXCLUDED.epoch, \
                   lease_until = EXCLUDED.lease_until \
                 WHERE l.owner IS NULL{expired} \
                    OR (l.owner = EXCLUDED.owner AND l.epoch = EXCLUDED.epoch) \
                 RETURNING bucket"
            )
        };
        Self {
            // Free and own leases are claimed; leases that ran out under other sessions are left
            // for a take-over and listed (from the statement's snapshot: advisory, the take-over
            // statement checks the holder again).
            claim_fresh: format!(
                "WITH expired AS MATERIALIZED (SELECT bucket, owner, epoch FROM {leases} \
                   WHERE bucket = ANY($3::int[]) AND owner IS NOT NULL AND lease_until <= now() \
                     AND NOT (owner = $1 AND epoch = $2)), \
                 claimed AS ({}) \
                 SELECT bucket, NULL::text AS expired_owner, NULL::bigint AS expired_epoch FROM claimed \
                 UNION ALL SELECT bucket, owner, epoch FROM expired",
                claim("")
            )
            .into(),
            // $1 node, $2 epoch, $3 buckets, $4 lease (ms), $5 the lost session's epoch.
            take_over: format!(
                "UPDATE {leases} SET owner = $1, epoch = $2, lease_until = now() + $4 {ms} \
                 WHERE bucket = ANY($3::int[]) AND epoch = $5 AND owner IS NOT NULL AND lease_until <= now() \
                 RETURNING bucket"
            )
            .into(),
            claim: claim(" OR l.lease_until <= now()").into(),
            join: format!(
                "INSERT INTO {nodes} (node_id, mode, epoch, alive_until) \
                 VALUES ($1, $2, nextval('{epochs}'), now() + $3 {ms}) \
                 ON CONFLICT (node_id) DO UPDATE SET mode = EXCLUDED.mode, epoch = EXCLUDED.epoch, \
                   alive_until = EXCLUDED.alive_until, joined_at = now() \
                 RETURNING epoch"
            )
            .into(),
            forget_dead_nodes: format!("DELETE FROM {nodes} WHERE alive_until < now() - interval '1 hour'")
                .into(),
            // The renewal and the live nodes in one statement; `alive` is false when the session
            // was lost (expired, or replaced by a newer one).
            heartbeat: format!(
                "WITH renewed AS (UPDATE {nodes} SET alive_until = now() + $3 {ms} \
                   WHERE node_id = $1 AND epoch = $2 AND alive_until > now() RETURNING node_id) \
                 SELECT n.node_id, n.mode, n.epoch, EXISTS (SELECT 1 FROM renewed) AS alive FROM {nodes} AS n \
                 WHERE n.alive_until > now() OR n.node_id = $1 ORDER BY n.node_id"
            )
            .into(),
            release: format!(
                "UPDATE {leases} SET owner = NULL, epoch = NULL, lease_until = '-infinity' \
                 WHERE bucket = ANY($3) AND owner = $1 AND epoch = $2"
            )
            .into(),
            release_all: format!(
                "UPDATE {leases} SET owner = NULL, epoch = NULL, lease_until = '-infinity' \
                 WHERE owner = $1 AND epoch = $2"
            )
            .into(),
            leave: format!("DELETE FROM {nodes} WHERE node_id = $1 AND epoch = $2").into(),
            list: format!(
                "SELECT bucket, owner, epoch, \
                   CASE WHEN lease_until = '-infinity' THEN NULL ELSE lease_until END AS lease_until \
                 FROM {leases} ORDER BY bucket"
            )
            .into(),
        }
    }
}

/// `txoutbox_<schema>_<table>`, cut to PostgreSQL's 63-byte identifier limit.
fn channel_name(table: &TableName) -> String {
    let mut channel = match table.schema() {
        Some(schema) => format!("txoutbox_{schema}_{}", table.table()),
        None => format!("txoutbox_{}", table.table()),
    };
    channel.truncate(63);
    channel
}
