-- Every event's journey (deliver/src/journey): a row per event, beside the ledger.
CREATE TABLE IF NOT EXISTS bridge_journey (
    scope       text   NOT NULL,
    event_id    text   NOT NULL,
    integration text   NOT NULL,
    -- When ingest accepted it, in milliseconds since 1970 (the cursor's unit).
    accepted_ms bigint NOT NULL,
    -- 'd:<dialog id>' and 'c:<keyed hash of a phone or e-mail>'.
    lookups     text[] NOT NULL DEFAULT '{}',
    end_kind    text,
    last_kind   text   NOT NULL,
    version     bigint NOT NULL,
    journey     jsonb  NOT NULL,
    PRIMARY KEY (scope, event_id)
);
CREATE INDEX IF NOT EXISTS bridge_journey_newest ON bridge_journey (scope, integration, accepted_ms DESC, event_id DESC);
CREATE INDEX IF NOT EXISTS bridge_journey_lookups ON bridge_journey USING gin (lookups);
CREATE INDEX IF NOT EXISTS bridge_journey_on_its_way ON bridge_journey (scope, accepted_ms) WHERE end_kind IS NULL;
CREATE INDEX IF NOT EXISTS bridge_journey_age ON bridge_journey USING brin (accepted_ms);
-- The key of the contacts' keyed hash, one per scope, made by the first replica.
CREATE TABLE IF NOT EXISTS bridge_journey_key (
    scope text  PRIMARY KEY,
    key   bytea NOT NULL
);
