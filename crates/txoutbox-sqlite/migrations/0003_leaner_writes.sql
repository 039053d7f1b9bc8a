-- Writes that cost about what a plain insert costs. Placeholders: {{schema_prefix}} (quoted
-- schema and a dot, or nothing), {{name}}, {{next_schema_version}} (the schema cookie plus one,
-- read by the migrator in this transaction).
--
-- Two things cost every writer's INSERT and are not needed on its path (single-row inserts,
-- 1,000 per transaction, against a plain table with an id, topic, key, payload, headers and
-- creation time: version 2 about 1.6x, without the `_pending` index 1.5x, without it and the
-- status CHECK about 1.1x):
--
-- * the CHECK on `status` (`status IN ('pending', 'published', 'dead')`): SQLite builds a
--   lookup table for the IN list on every statement it runs, so a single-row insert paid for it
--   each time. Only the relay writes `status`. SQLite cannot drop a constraint with ALTER TABLE;
--   this is the procedure its documentation gives for removing a CHECK constraint without
--   rewriting the table (https://sqlite.org/lang_altertable.html#otheralter): the table's
--   definition in the schema table is edited, and the schema cookie is bumped so that every
--   connection reads the new definition. A table whose definition does not carry the CHECK
--   exactly as version 1 wrote it is left unchanged.
-- * the `_pending` index: the relay reads pending rows above its cursor by the rowid (every row
--   above the cursor is pending: only the relay changes a row's status, on rows it has read).
PRAGMA {{schema_prefix}}writable_schema = ON;
UPDATE {{schema_prefix}}sqlite_master
    SET sql = replace(sql, ' CHECK (status IN (''pending'', ''published'', ''dead''))', '')
    WHERE type = 'table' AND name = '{{name}}';
PRAGMA {{schema_prefix}}schema_version = {{next_schema_version}};
PRAGMA {{schema_prefix}}writable_schema = OFF;
DROP INDEX IF EXISTS {{schema_prefix}}"{{name}}_pending";
