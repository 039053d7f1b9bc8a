-- Push wake-ups: every statement that inserts outbox rows sends a notification on the table's
-- channel. PostgreSQL delivers notifications only when the transaction commits (never for a
-- rolled-back one) and folds identical notifications of one transaction into one, so a burst of
-- inserts is one wake-up, and rows written by any application wake the relay. Placeholders:
-- {{table}}, {{schema_prefix}} (quoted schema and a dot, or nothing), {{name}}, {{channel}}.
CREATE OR REPLACE FUNCTION {{schema_prefix}}"{{name}}_notify"() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{{channel}}', '');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS "{{name}}_notify" ON {{table}};
CREATE TRIGGER "{{name}}_notify" AFTER INSERT ON {{table}}
    FOR EACH STATEMENT EXECUTE FUNCTION {{schema_prefix}}"{{name}}_notify"();
