-- Writes that cost about what a plain insert costs. Placeholders: {{table}}, {{schema_prefix}}
-- (quoted schema and a dot, or nothing), {{name}}.
--
-- Two things cost every writer's INSERT and are not needed on its path (pgbench, four clients,
-- single-row inserts, 1,000 per transaction, against a plain table with a sequence id, topic,
-- key, payload, headers and creation time: version 6 1.4-1.5x, without the trigger about 1.26x,
-- without both about 1.15x):
--
-- * the `_pending` index. The relay's read above its cursor takes the primary key instead: every
--   row above the cursor is pending, because only the relay changes a row's status, and only on
--   rows it has read. The read functions of version 5 need no change (their planner settings
--   leave the primary key as the one way to read in id order). The `_pending_xid` index stays:
--   rows that commit late are found through it, without rereading the rows in flight.
-- * the wake-up trigger. Disabled, not dropped: `PgOutbox::set_push_wakeups` (or
--   `txoutbox migrate --push-wakeups on`) turns it on again for services that want a sleeping
--   relay woken at once by other processes' commits; without it such rows wait at most the
--   relay's poll interval (a relay in the same process is woken through `PgOutbox::with_wakeup`).
--
-- Neither rewrites a row. Each statement holds the table's lock for a moment; a lock it cannot
-- get within 5 s (a long transaction on the table) fails the migration instead of stalling the
-- writers queued behind it: run it again.
SET LOCAL lock_timeout = '5s';
DROP INDEX IF EXISTS {{schema_prefix}}"{{name}}_pending";
ALTER TABLE {{table}} DISABLE TRIGGER "{{name}}_notify";
