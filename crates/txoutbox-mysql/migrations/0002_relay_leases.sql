-- Coordination of several relay nodes (exclusive and work-balance modes): live nodes with their
-- session epochs, leases on buckets (-1: the whole table), and the epoch counter; and the
-- progress keys of exactly-once relays. Single-node relays never touch the first three; writers
-- none. Placeholders: {{table}} is the quoted, qualified outbox table; {{nodes}}, {{leases}},
-- {{epoch}} and {{progress}} the quoted, qualified names of these tables.
-- Node ids are compared byte for byte (VARBINARY: no collation folds case or trailing spaces);
-- times are the database's UTC clock (UTC_TIMESTAMP), so nodes need no synchronised clocks and
-- the session time zone does not matter.
CREATE TABLE IF NOT EXISTS {{nodes}} (
    node_id     VARBINARY(255) NOT NULL,
    mode        VARCHAR(64)    CHARACTER SET ascii NOT NULL,
    -- The node's current session; a node that lost its session rejoins with a greater one.
    epoch       BIGINT         NOT NULL,
    alive_until DATETIME(6)    NOT NULL,
    joined_at   DATETIME(6)    NOT NULL,
    PRIMARY KEY (node_id)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS {{leases}} (
    bucket      INT            NOT NULL,
    owner       VARBINARY(255) NULL,
    epoch       BIGINT         NULL,
    -- NULL while free.
    lease_until DATETIME(6)    NULL,
    PRIMARY KEY (bucket),
    -- A node's leases (the fence of its writes, its claims' read-back, its release): found, and
    -- locked, without scanning every bucket's row.
    KEY owner_epoch (owner, epoch)
) ENGINE = InnoDB;

-- One row: the last epoch handed out (MySQL has no sequences).
CREATE TABLE IF NOT EXISTS {{epoch}} (
    id    TINYINT NOT NULL,
    value BIGINT  NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB;

-- The progress keys of exactly-once relays that delivered from this table (their Kafka
-- transactional ids): a relay that finds no progress under a key recorded here knows the progress
-- was lost (the progress topic deleted or recreated) and stops instead of sending again rows Kafka
-- may already hold. Written once per key by the relay.
CREATE TABLE IF NOT EXISTS {{progress}} (
    progress_key VARBINARY(1024) NOT NULL,
    kept_since   DATETIME(6)    NOT NULL,
    PRIMARY KEY (progress_key)
) ENGINE = InnoDB;
