CREATE TABLE IF NOT EXISTS {{table}} (
    consumer        TEXT        NOT NULL,
    message_id      TEXT        NOT NULL,
    status          TEXT        NOT NULL DEFAULT 'handled',
    topic           TEXT        NOT NULL,
    kafka_partition INTEGER     NOT NULL,
    kafka_offset    BIGINT      NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    last_error      TEXT,
    record_key      BYTEA,
    payload         BYTEA,
    headers         TEXT,
    CONSTRAINT {{name}}_pkey PRIMARY KEY (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS {{name}}_handled_idx ON {{table}} (consumer, received_at) WHERE status = 'handled';
CREATE INDEX IF NOT EXISTS {{name}}_parked_idx ON {{table}} (consumer, status) WHERE status <> 'handled';
