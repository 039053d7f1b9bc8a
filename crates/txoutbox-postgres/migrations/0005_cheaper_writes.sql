-- Cheaper writes, reads whose plan cannot go wrong. Placeholders: {{table}}, {{schema_prefix}}
-- (quoted schema and a dot, or nothing), {{name}}, {{channel}}.
--
-- Each of these cost every INSERT statement several microseconds, because PostgreSQL prepares
-- their expressions anew for each statement: the generated `bucket` column (the relay now
-- computes a row's bucket when it reads it, with the same expression) and the two CHECKs
-- (`topic <> ''`: the relay dead-letters a row whose topic the broker refuses, an empty one
-- included; `status IN (...)`: only the relay writes `status`). Dropping a column or a
-- constraint changes no row: no rewrite, a short exclusive lock. A lock it cannot get within
-- 5 s (a long transaction on the table) fails the migration instead of stalling every writer
-- queued behind it; run it again.
SET LOCAL lock_timeout = '5s';
ALTER TABLE {{table}} DROP COLUMN IF EXISTS bucket;

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = '{{table}}'::regclass AND contype = 'c'
          AND (conname IN ('{{name}}_topic_check', '{{name}}_status_check')
               OR pg_get_constraintdef(oid) IN (
                   'CHECK ((topic <> ''''::text))',
                   'CHECK ((status = ANY (ARRAY[''pending''::text, ''published''::text, ''dead''::text])))'))
    LOOP
        EXECUTE format('ALTER TABLE {{table}} DROP CONSTRAINT %I', c.conname);
    END LOOP;
END
$$;

-- The relay's reads of pending rows. They run with planner settings that leave one plan, so
-- that a table whose statistics lag (a backlog written since the last ANALYZE looks like a few
-- pending rows) is never read by scanning and sorting every pending row for each batch:
-- pending rows above the cursor, in id order, through the `_pending` index;
CREATE OR REPLACE FUNCTION {{schema_prefix}}"{{name}}_pending_after"(p_after BIGINT, p_limit BIGINT, p_buckets INTEGER[])
    RETURNS SETOF {{table}} LANGUAGE plpgsql STABLE
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off AS $$
BEGIN
    RETURN QUERY SELECT * FROM {{table}} AS o
        WHERE o.status = 'pending' AND o.id > p_after
          AND (p_buckets IS NULL
               OR (hashtextextended(encode(coalesce(o.key, '\x'::bytea), 'hex'), 0) & 63)::integer = ANY (p_buckets))
        ORDER BY o.id LIMIT p_limit;
END
$$;

-- and rows at or below the cursor that the previous read's snapshot could not see (their
-- transaction was still running), found through the `_pending_xid` index: the subquery with
-- OFFSET 0 is planned on its own, where that index is the only cheap way in.
CREATE OR REPLACE FUNCTION {{schema_prefix}}"{{name}}_pending_late"(p_after BIGINT, p_snapshot pg_snapshot, p_limit BIGINT, p_buckets INTEGER[])
    RETURNS SETOF {{table}} LANGUAGE plpgsql STABLE
    SET enable_seqscan = off AS $$
BEGIN
    RETURN QUERY SELECT l.* FROM (
            SELECT * FROM {{table}} AS o
            WHERE o.status = 'pending' AND o.xid >= pg_snapshot_xmin(p_snapshot)
            OFFSET 0) AS l
        WHERE l.id <= p_after AND NOT pg_visible_in_snapshot(l.xid, p_snapshot)
          AND (p_buckets IS NULL
               OR (hashtextextended(encode(coalesce(l.key, '\x'::bytea), 'hex'), 0) & 63)::integer = ANY (p_buckets))
        ORDER BY l.id LIMIT p_limit;
END
$$;

-- The functions run with the caller's rights (the relay's role still needs its rights on the
-- table); granted to every role in case default privileges withhold EXECUTE.
GRANT EXECUTE ON FUNCTION {{schema_prefix}}"{{name}}_pending_after"(BIGINT, BIGINT, INTEGER[]) TO PUBLIC;
GRANT EXECUTE ON FUNCTION {{schema_prefix}}"{{name}}_pending_late"(BIGINT, pg_snapshot, BIGINT, INTEGER[]) TO PUBLIC;

-- Push wake-ups only to a relay that said it is asleep. Up to version 4 a missing flag row meant
-- "notify"; but no row means no relay has declared anything since the table was created or the
-- database restarted (the flag table is unlogged), and a relay declares itself asleep before it
-- waits for a notification: so writers no longer pay for notifications (and the commit lock they
-- take) while no relay listens — a stopped relay, a table being filled before its relay starts.
-- After a database crash a relay that was asleep is woken by its poll interval, and declares
-- itself again at its next read that finds rows.
CREATE OR REPLACE FUNCTION {{schema_prefix}}"{{name}}_notify"() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM {{schema_prefix}}"{{name}}_relay_state" WHERE NOT awake) THEN
        PERFORM pg_notify('{{channel}}', '');
    END IF;
    RETURN NULL;
END
$$;
