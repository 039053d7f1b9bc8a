-- Writes that cost about what a plain insert costs. Placeholders: {{schema_prefix}} (quoted
-- schema and a dot, or nothing), {{name}}, {{next_schema_version}} (the schema cookie plus one,
-- read by the migrator in this transaction).
--
-- The CHECK on `status` cost every writer's INSERT and is not needed on its path (Python's
-- sqlite3, single-row inserts, 1,000 per transaction, against a plain table with an id, topic,
-- key, payload, headers and creation time: 1.52x a plain row with that CHECK, 1.06x without the
-- CHECKs; the other two cost 0.02-0.03 each and stay):
--
-- * the CHECK on `status` (`status IN ('pending', 'published', 'dead')`): SQLite builds a
--   lookup table for the IN list on every statement it runs, so a single-row insert paid for it
--   each time. Only the relay writes `status`. SQLite cannot drop a constraint with ALTER TABLE;
--   this is the procedure its documentation gives for removing a CHECK constraint without
--   rewriting the table (https://sqlite.org/lang_altertable.html#otheralter): the table's
--   definition in the schema table is edited, and the schema cookie is bumped so that every
--   connection reads the new definition. A table whose definition does not carry the CHECK
--   exactly as version 1 wrote it is left unchanged.
--
-- The `_pending` index stays: it lets a read from the start skip rows kept as published or dead.
PRAGMA {{schema_prefix}}writable_schema = ON;
UPDATE {{schema_prefix}}sqlite_master
    SET sql = replace(sql, ' CHECK (status IN (''pending'', ''published'', ''dead''))', '')
    WHERE type = 'table' AND name = '{{name}}';
PRAGMA {{schema_prefix}}schema_version = {{next_schema_version}};
PRAGMA {{schema_prefix}}writable_schema = OFF;
