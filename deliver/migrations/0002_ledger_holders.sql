-- Claims tied to their holder's liveness (applied after 0001, in the same transaction and under the
-- same advisory lock; idempotent).
-- Each deliver process holds a lease while it runs: it pushes `alive_until` forward every few
-- seconds, and a claim whose holder's lease lapsed may be taken over at once instead of when its
-- `claimed_until` passes. `owner` is unique per process start. A claim of an owner with no row here
-- (a release before leases) holds until `claimed_until`, as it always did.
CREATE TABLE IF NOT EXISTS bridge_ledger_holders (
    scope       text        NOT NULL,
    owner       text        NOT NULL,
    alive_until timestamptz NOT NULL,
    PRIMARY KEY (scope, owner)
);
-- `called_at`: when a holder last renewed the claim right before an upload (NULL: no holder ever
-- called CoMagic with it). A takeover keeps it, so the next holder knows whether to ask CoMagic's
-- report first. `claim_id`: which batch of its holder holds the claim, so a batch renews and
-- releases only its own, never a copy's that took a lapsed claim over in the same process.
-- Checked first: ALTER TABLE would lock the table out at every start.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'bridge_ledger'
                     AND column_name = 'called_at') THEN
        ALTER TABLE bridge_ledger ADD COLUMN called_at timestamptz, ADD COLUMN claim_id bigint;
    END IF;
END
$$;
