-- Coordination of several relay nodes (exclusive and work-balance modes): live nodes with their
-- session epochs, and leases on buckets (-1: the whole table). Single-node relays never touch
-- these tables. Placeholders: {{schema_prefix}} (quoted schema and a dot, or nothing), {{name}}.
CREATE TABLE IF NOT EXISTS {{schema_prefix}}"{{name}}_relay_nodes" (
    node_id     TEXT        PRIMARY KEY,
    mode        TEXT        NOT NULL,
    -- The node's current session; a node that lost its session rejoins with a greater one.
    epoch       BIGINT      NOT NULL,
    alive_until TIMESTAMPTZ NOT NULL,
    joined_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {{schema_prefix}}"{{name}}_relay_leases" (
    bucket      INTEGER     PRIMARY KEY,
    owner       TEXT,
    epoch       BIGINT,
    lease_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);

CREATE SEQUENCE IF NOT EXISTS {{schema_prefix}}"{{name}}_relay_epoch";
