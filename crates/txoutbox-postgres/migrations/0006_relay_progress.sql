-- The progress keys of exactly-once relays that delivered from this table (their Kafka
-- transactional ids): a relay that finds no progress under a key recorded here knows the progress
-- was lost (the progress topic deleted or recreated) and stops instead of sending again rows Kafka
-- may already hold. Written once per key by the relay; writers never touch it. Only a new table:
-- the upgrade from version 5 is online. Placeholders: {{schema_prefix}}, {{name}}.
CREATE TABLE IF NOT EXISTS {{schema_prefix}}"{{name}}_relay_progress" (
    progress_key TEXT        PRIMARY KEY,
    kept_since   TIMESTAMPTZ NOT NULL DEFAULT now()
);
