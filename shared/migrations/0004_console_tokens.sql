-- The console's issued access tokens (docs/console.md, "Giving a tenant access"), when the
-- integrations are kept in PostgreSQL: every console replica reads them from here on every
-- request, so a revocation holds at once everywhere. `hash` is the SHA-256 of the token (hex):
-- the token itself is shown once, to the operator who issued it, and kept nowhere.
-- Times are Unix seconds. Applied by every console that opens the store; idempotent.
CREATE TABLE IF NOT EXISTS bridge_console_tokens (
    scope       text    NOT NULL,
    id          text    NOT NULL,
    hash        text    NOT NULL UNIQUE,
    name        text    NOT NULL,
    role        text    NOT NULL,
    integration text,
    read_only   boolean NOT NULL,
    issued_by   text    NOT NULL,
    issued_at   bigint  NOT NULL,
    expires_at  bigint  NOT NULL,
    revoked_at  bigint,
    PRIMARY KEY (scope, id)
);
