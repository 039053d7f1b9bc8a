-- The progress keys of exactly-once relays that delivered from this table (their Kafka
-- transactional ids): a relay that finds no progress under a key recorded here knows the progress
-- was lost (the progress topic deleted or recreated) and stops instead of sending again rows Kafka
-- may already hold. Written once per key by the relay; writers never touch it. Placeholders:
-- {{schema_prefix}} (the quoted schema and a dot, or nothing), {{name}}.
CREATE TABLE IF NOT EXISTS {{schema_prefix}}"{{name}}_relay_progress" (
    progress_key TEXT NOT NULL PRIMARY KEY,
    -- Milliseconds since the Unix epoch, UTC.
    kept_since   INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);
