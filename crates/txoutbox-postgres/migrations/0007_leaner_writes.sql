-- Writes that do not pay for wake-ups. Placeholders: {{table}}, {{name}}.
--
-- The wake-up trigger ran a PL/pgSQL function that read the relay's flag for every insert
-- statement, whether a relay slept or not: about a fifth of what a single-row outbox insert
-- cost (pgbench, four clients, single-row inserts, 1,000 per transaction: 1.50x a plain table's
-- row with it, 1.20-1.26x without). It is disabled, not dropped: `PgOutbox::set_push_wakeups`
-- (or `txoutbox migrate --push-wakeups on`) turns it on again for services that want a sleeping
-- relay woken at once by other processes' commits; without it such rows wait at most the
-- relay's poll interval (a relay in the writer's own process is woken by commits through
-- `PgOutbox::begin` with `PgOutbox::with_wakeup`).
--
-- The indexes stay: `_pending` lets a read from the start skip rows kept as published or dead
-- (the relay rereads from the start once per poll interval), `_pending_xid` finds rows that
-- commit late, `_dead` the dead letters.
--
-- No row is rewritten; the statement holds the table's lock for a moment. A lock it cannot get
-- within 5 s (a long transaction on the table) fails the migration instead of stalling the
-- writers queued behind it: run it again.
SET LOCAL lock_timeout = '5s';
ALTER TABLE {{table}} DISABLE TRIGGER "{{name}}_notify";
