CREATE TABLE IF NOT EXISTS {{table}} (
    consumer        TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'handled',
    topic           TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    received_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    record_key      BLOB,
    payload         BLOB,
    headers         TEXT,
    PRIMARY KEY (consumer, message_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {{schema_prefix}}"{{name}}_handled_idx" ON "{{name}}" (consumer, received_at) WHERE status = 'handled';
CREATE INDEX IF NOT EXISTS {{schema_prefix}}"{{name}}_parked_idx" ON "{{name}}" (consumer, status) WHERE status <> 'handled';
