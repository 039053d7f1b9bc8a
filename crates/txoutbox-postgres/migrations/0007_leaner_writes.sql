-- Writes that cost about what a plain insert costs. Placeholders: {{table}}, {{schema_prefix}}
-- (quoted schema and a dot, or nothing), {{name}}.
--
-- Three things cost every writer's INSERT and are not needed on its path (the project's
-- `writes` benchmark: four writers, single-row inserts, 1,000 per transaction, against a plain
-- table with a sequence id, topic, key, payload, headers and creation time: version 6 1.55x;
-- without the trigger and the `_pending` index 1.26-1.30x; with `_pending_xid` a plain index
-- too, 1.19x):
--
-- * the `_pending` index. The relay's read above its cursor takes the primary key instead: every
--   row above the cursor is pending, because only the relay changes a row's status, and only on
--   rows it has read. The read functions of version 5 need no change (their planner settings
--   leave the primary key as the one way to read in id order).
-- * the partial `_pending_xid` index, replaced by a plain index on `xid`, `_xid`: PostgreSQL
--   prepares a partial index's predicate for every statement, which cost a single-row insert
--   more than the index itself. Rows that commit late are found through `_xid` as they were
--   through `_pending_xid` (the read function filters on the status). Building it holds off
--   writers while it runs (about a quarter of a second per million rows here); to avoid even
--   that on a large table, build it first with
--   `CREATE INDEX CONCURRENTLY "<table>_xid" ON <table> (xid)`: this migration then keeps it.
-- * the wake-up trigger. Disabled, not dropped: `PgOutbox::set_push_wakeups` (or
--   `txoutbox migrate --push-wakeups on`) turns it on again for services that want a sleeping
--   relay woken at once by other processes' commits; without it such rows wait at most the
--   relay's poll interval (a relay in the same process is woken through `PgOutbox::with_wakeup`).
--
-- No row is rewritten. Each statement holds the table's lock for a moment (the index build for
-- its duration); a lock it cannot get within 5 s (a long transaction on the table) fails the
-- migration instead of stalling the writers queued behind it: run it again.
SET LOCAL lock_timeout = '5s';
DROP INDEX IF EXISTS {{schema_prefix}}"{{name}}_pending";
CREATE INDEX IF NOT EXISTS "{{name}}_xid" ON {{table}} (xid);
DROP INDEX IF EXISTS {{schema_prefix}}"{{name}}_pending_xid";
ALTER TABLE {{table}} DISABLE TRIGGER "{{name}}_notify";
