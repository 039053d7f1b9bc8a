-- Push wake-ups only while the relay sleeps. A transaction that calls pg_notify takes a
-- cluster-wide lock before it commits and holds it until its commit is durable, which serializes
-- concurrent writers through their WAL flush. So the relay says whether it is awake (reading
-- without waiting) in this one-row table, and the trigger notifies only when no relay has said so.
-- Unlogged: the flag is no data and needs no WAL; after a crash the table is empty, and a missing
-- row means "notify" (the safe default). Writers' triggers read it, so every role may read it.
-- Placeholders: {{table}}, {{schema_prefix}} (quoted schema and a dot, or nothing), {{name}},
-- {{channel}}.
CREATE UNLOGGED TABLE IF NOT EXISTS {{schema_prefix}}"{{name}}_relay_state" (
    -- Always true: the table holds at most one row.
    id    BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    awake BOOLEAN NOT NULL
);

GRANT SELECT ON {{schema_prefix}}"{{name}}_relay_state" TO PUBLIC;

CREATE OR REPLACE FUNCTION {{schema_prefix}}"{{name}}_notify"() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {{schema_prefix}}"{{name}}_relay_state" WHERE awake) THEN
        PERFORM pg_notify('{{channel}}', '');
    END IF;
    RETURN NULL;
END
$$;
