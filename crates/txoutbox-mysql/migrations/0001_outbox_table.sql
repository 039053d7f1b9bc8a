-- The outbox table and the index the relay reads by. Placeholders: {{table}} is the quoted,
-- qualified table name; {{name}} the bare table name (constraint names are per database).
-- MySQL 8.0.16+ / MariaDB 10.6+: expression defaults, enforced CHECK constraints.
CREATE TABLE IF NOT EXISTS {{table}} (
    id              BIGINT       NOT NULL AUTO_INCREMENT,
    message_id      CHAR(36)     CHARACTER SET ascii NOT NULL DEFAULT (uuid()),
    topic           VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `key`           BLOB         NULL,
    payload         LONGBLOB     NULL,
    -- Text holding JSON, not MySQL's JSON type: MySQL's binary JSON sorts object members, and
    -- headers must reach Kafka in the order they were written.
    headers         LONGTEXT     CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    -- TIMESTAMP is stored in UTC whatever the writer's session time zone.
    created_at      TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    status          VARCHAR(16)  CHARACTER SET ascii NOT NULL DEFAULT 'pending',
    attempts        INT          NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP(6) NULL DEFAULT NULL,
    last_error      MEDIUMTEXT   CHARACTER SET utf8mb4 NULL,
    published_at    TIMESTAMP(6) NULL DEFAULT NULL,
    -- A stable hash of the key into 64 buckets, computed by the database so that rows written by
    -- any application get one (CRC-32 of the key bytes; no key hashes like an empty one).
    bucket          INT          AS (crc32(coalesce(`key`, '')) & 63) STORED,
    PRIMARY KEY (id),
    -- MySQL has no partial indexes: pending (and dead, and published) rows are read in id order
    -- through this one.
    KEY `{{name}}_status_id` (status, id),
    CONSTRAINT `{{name}}_chk_topic` CHECK (topic <> ''),
    CONSTRAINT `{{name}}_chk_status` CHECK (status IN ('pending', 'published', 'dead')),
    CONSTRAINT `{{name}}_chk_headers` CHECK (headers IS NULL OR json_valid(headers))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4
