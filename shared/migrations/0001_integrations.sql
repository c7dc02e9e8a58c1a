-- The integrations store of several machines (`integrations_store = "postgres://…"`).
-- One row per integration of a pipeline (`scope` is `[amqp] topology_prefix`); `doc` is the form
-- as JSON (docs/integrations.md), secrets included: keep the database as private as the tokens.
-- Every change, by the console or by hand in SQL, notifies the channel the services LISTEN on.
-- Applied by every process that opens the store; idempotent.
CREATE TABLE IF NOT EXISTS bridge_integrations (
    scope      text        NOT NULL,
    id         text        NOT NULL,
    doc        text        NOT NULL,
    version    text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, id)
);
CREATE OR REPLACE FUNCTION bridge_integrations_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('bridge_integrations', COALESCE(NEW.scope, OLD.scope));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS bridge_integrations_changed ON bridge_integrations;
CREATE TRIGGER bridge_integrations_changed AFTER INSERT OR UPDATE OR DELETE ON bridge_integrations
    FOR EACH ROW EXECUTE FUNCTION bridge_integrations_changed();
