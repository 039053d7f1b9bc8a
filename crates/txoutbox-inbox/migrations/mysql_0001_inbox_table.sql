CREATE TABLE IF NOT EXISTS {{table}} (
    -- A NO PAD binary collation: ids that differ in trailing spaces are different ids.
    consumer        VARCHAR(255)  CHARACTER SET utf8mb4 COLLATE {{id_collation}} NOT NULL,
    message_id      VARCHAR(512)  CHARACTER SET utf8mb4 COLLATE {{id_collation}} NOT NULL,
    status          VARCHAR(16)   NOT NULL DEFAULT 'handled',
    topic           VARCHAR(255)  NOT NULL,
    kafka_partition INT           NOT NULL,
    kafka_offset    BIGINT        NOT NULL,
    -- UTC, written by the inbox (DATETIME: no 2038 limit).
    received_at     DATETIME(6)   NOT NULL,
    attempts        INT           NOT NULL DEFAULT 0,
    last_error      TEXT          NULL,
    record_key      LONGBLOB      NULL,
    payload         LONGBLOB      NULL,
    headers         LONGTEXT      NULL,
    PRIMARY KEY (consumer, message_id),
    KEY `{{name}}_handled_idx` (consumer, status, received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
