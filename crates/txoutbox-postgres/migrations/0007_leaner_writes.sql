-- Writes that pay for no predicate and no wake-up. Placeholders: {{table}}, {{schema_prefix}}
-- (quoted schema and a dot, or nothing), {{name}}.
--
-- Measured with the project's `writes` benchmark (four writers, single-row inserts, 1,000 per
-- transaction, against a plain table with a sequence id, topic, key, payload, headers and
-- creation time; docs/benchmarks.md): version 6 cost 1.55x a plain row, version 6 without the
-- trigger 1.41x, this version about 1.25x. Two kinds of things cost every INSERT statement:
--
-- * The wake-up trigger, which ran a PL/pgSQL function reading the relay's flag for every
--   statement, whether a relay slept or not. It is disabled, not dropped:
--   `PgOutbox::set_push_wakeups` (or `txoutbox migrate --push-wakeups on`) turns it on again for
--   services that want a sleeping relay woken at once by other processes' commits; without it
--   such rows wait at most the relay's poll interval (a relay in the writer's own process is
--   woken by commits through `PgOutbox::begin` with `PgOutbox::with_wakeup`).
-- * Partial indexes: PostgreSQL prepares a partial index's predicate for every statement, which
--   cost more than the index itself (even `_dead`, which no new row enters). The three partial
--   indexes are replaced by two plain ones: `_status_id` (status, id) serves every read by status
--   in id order (pending rows from the cursor or from the start, skipping kept published and
--   dead rows; dead letters; counts), `_xid` (xid) finds rows that commit late.
--
-- No row is rewritten. The migration takes the table's lock first (so that it never waits for a
-- stronger lock while holding a weaker one, which could deadlock with a transaction that read the
-- table and then writes to it) and holds it while the two indexes are built: about half a second
-- per million rows in the table on the benchmark machine, during which writers and the relay
-- wait. To avoid even that on a large table, build them first with `CREATE INDEX CONCURRENTLY "<table>_status_id"
-- ON <table> (status, id)` and `… "<table>_xid" ON <table> (xid)`: this migration keeps valid
-- indexes of those names (and builds again one that a failed concurrent build left invalid).
-- A lock it cannot get within 5 s (a long transaction on the table) fails the migration instead
-- of stalling the writers queued behind it: run it again.
SET LOCAL lock_timeout = '5s';
LOCK TABLE {{table}} IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    invalid record;
BEGIN
    FOR invalid IN
        SELECT i.indexrelid::regclass AS name FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = '{{table}}'::regclass AND NOT i.indisvalid
          AND c.relname IN ('{{name}}_status_id', '{{name}}_xid')
    LOOP
        EXECUTE format('DROP INDEX %s', invalid.name);
    END LOOP;
END
$$;
CREATE INDEX IF NOT EXISTS "{{name}}_status_id" ON {{table}} (status, id);
CREATE INDEX IF NOT EXISTS "{{name}}_xid" ON {{table}} (xid);
DROP INDEX IF EXISTS {{schema_prefix}}"{{name}}_pending";
DROP INDEX IF EXISTS {{schema_prefix}}"{{name}}_pending_xid";
DROP INDEX IF EXISTS {{schema_prefix}}"{{name}}_dead";

-- The read functions of version 5, written so that each has one index to go through (their
-- planner settings already rule out sorting and, for the first, scanning the table; neither
-- starts parallel workers, whose start alone costs a read several milliseconds):
-- pending rows above the cursor, as the range of `_status_id` from ('pending', cursor) up to the
-- last 'pending' entry. Not `status = 'pending'`: with an equality on the first column, a btree
-- scan (PostgreSQL up to 17) starts at the first 'pending' entry and steps over every entry at or
-- below the cursor — those of the rows delivered since the last vacuum included — on every read.
-- The order (status, id) is one the primary key cannot give without a sort, so a read from the
-- start never walks the rows kept as published or dead;
CREATE OR REPLACE FUNCTION {{schema_prefix}}"{{name}}_pending_after"(p_after BIGINT, p_limit BIGINT, p_buckets INTEGER[])
    RETURNS SETOF {{table}} LANGUAGE plpgsql STABLE
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
    SET max_parallel_workers_per_gather = 0 AS $$
BEGIN
    RETURN QUERY SELECT * FROM {{table}} AS o
        WHERE (o.status, o.id) > ('pending'::text, p_after) AND o.status <= 'pending'
          AND (o.status || '') = 'pending'
          AND (p_buckets IS NULL
               OR (hashtextextended(encode(coalesce(o.key, '\x'::bytea), 'hex'), 0) & 63)::integer = ANY (p_buckets))
        ORDER BY o.status, o.id LIMIT p_limit;
END
$$;

-- and rows at or below the cursor that the previous read's snapshot could not see, by `xid`
-- alone: the status is compared as an expression no index holds, so that `_status_id` (every
-- pending row) is never the way in.
CREATE OR REPLACE FUNCTION {{schema_prefix}}"{{name}}_pending_late"(p_after BIGINT, p_snapshot pg_snapshot, p_limit BIGINT, p_buckets INTEGER[])
    RETURNS SETOF {{table}} LANGUAGE plpgsql STABLE
    SET enable_seqscan = off SET max_parallel_workers_per_gather = 0 AS $$
BEGIN
    RETURN QUERY SELECT l.* FROM (
            SELECT * FROM {{table}} AS o
            WHERE (o.status || '') = 'pending' AND o.xid >= pg_snapshot_xmin(p_snapshot)
            OFFSET 0) AS l
        WHERE l.id <= p_after AND NOT pg_visible_in_snapshot(l.xid, p_snapshot)
          AND (p_buckets IS NULL
               OR (hashtextextended(encode(coalesce(l.key, '\x'::bytea), 'hex'), 0) & 63)::integer = ANY (p_buckets))
        ORDER BY l.id LIMIT p_limit;
END
$$;

ALTER TABLE {{table}} DISABLE TRIGGER "{{name}}_notify";
