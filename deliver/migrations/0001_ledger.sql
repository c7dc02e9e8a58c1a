-- The shared delivered-ledger of several deliver replicas (`[deliver] ledger_postgres`).
-- One row per ext_id of a topology (`scope` is `[amqp] topology_prefix`): claimed while a replica
-- sends it, delivered once CoMagic took it. Applied by deliver at start; idempotent.
CREATE TABLE IF NOT EXISTS bridge_ledger (
    scope         text        NOT NULL,
    ext_id        text        NOT NULL,
    delivered_at  timestamptz,
    claimed_by    text,
    claimed_until timestamptz,
    PRIMARY KEY (scope, ext_id)
);
CREATE INDEX IF NOT EXISTS bridge_ledger_delivered_at ON bridge_ledger (scope, delivered_at);
