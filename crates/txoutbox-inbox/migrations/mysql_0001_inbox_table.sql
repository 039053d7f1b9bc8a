CREATE TABLE IF NOT EXISTS {{table}} (
    consumer        VARCHAR(255)  NOT NULL,
    message_id      VARCHAR(512)  NOT NULL,
    status          VARCHAR(16)   NOT NULL DEFAULT 'handled',
    topic           VARCHAR(255)  NOT NULL,
    kafka_partition INT           NOT NULL,
    kafka_offset    BIGINT        NOT NULL,
    received_at     TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    attempts        INT           NOT NULL DEFAULT 0,
    last_error      TEXT          NULL,
    record_key      LONGBLOB      NULL,
    payload         LONGBLOB      NULL,
    headers         LONGTEXT      NULL,
    PRIMARY KEY (consumer, message_id),
    KEY `{{name}}_handled_idx` (consumer, status, received_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
