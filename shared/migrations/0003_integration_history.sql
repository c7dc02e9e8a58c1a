-- The change history of the integrations store (`integrations_store = "postgres://…"`): one row
-- per save, deactivation, delete, restore and dead-letter action, written by the same statement as
-- the change itself. `entry` is the entry as JSON, the form it left included (secrets too: keep the
-- database as private as the tokens). The console keeps the newest entries of each integration and
-- deletes older ones. Applied by every process that opens the store; idempotent.
CREATE TABLE IF NOT EXISTS bridge_integration_history (
    scope text   NOT NULL,
    id    text   NOT NULL,
    seq   bigserial,
    entry text   NOT NULL,
    PRIMARY KEY (scope, id, seq)
);
