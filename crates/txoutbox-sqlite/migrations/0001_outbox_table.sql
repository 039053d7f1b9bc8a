-- The outbox table and the indexes the relay reads by. Placeholders: {{table}} is the quoted,
-- qualified table name; {{schema_prefix}} the quoted schema and a dot (or nothing), which SQLite
-- puts on index names; {{name}} the bare table name.
CREATE TABLE IF NOT EXISTS {{table}} (
    -- AUTOINCREMENT: ids are never reused, even after the newest rows were deleted.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT    NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    topic           TEXT    NOT NULL CHECK (topic <> ''),
    key             BLOB,
    payload         BLOB,
    headers         TEXT    CHECK (headers IS NULL OR json_valid(headers)),
    -- Milliseconds since the Unix epoch, UTC.
    created_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    status          TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'published', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    published_at    INTEGER,
    -- SQLite is relayed by one process per database file, so every row is in bucket 0.
    bucket          INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS {{schema_prefix}}"{{name}}_pending" ON "{{name}}" (id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS {{schema_prefix}}"{{name}}_dead" ON "{{name}}" (id) WHERE status = 'dead';
