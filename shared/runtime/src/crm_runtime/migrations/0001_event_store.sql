-- The event store (system of record), the outbox relay's state, consumer bookkeeping and idempotency keys.
CREATE TABLE IF NOT EXISTS events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The inserting transaction: readers only read below the oldest running transaction,
    -- so an event whose transaction commits late is never passed over (design §3).
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id      text        NOT NULL,
    stream_type    text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    event_id       uuid        NOT NULL UNIQUE,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    subject        text,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_commit_order ON events (txid, position);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, position);

CREATE OR REPLACE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Delivered at commit; identical notifications in one transaction are folded into one.
    PERFORM pg_notify('crm_events', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS events_notify ON events;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

CREATE TABLE IF NOT EXISTS relay_state (
    topic            text PRIMARY KEY,
    cursor_txid      xid8   NOT NULL DEFAULT '0'::xid8,
    cursor_position  bigint NOT NULL DEFAULT 0,
    -- Highest acknowledged offset per partition: if the broker reports less, it lost history.
    acked_offsets    jsonb  NOT NULL DEFAULT '{}'::jsonb,
    republished      integer NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS processed_events (
    consumer   text NOT NULL,
    event_id   uuid NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    principal    text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status_code  integer NOT NULL,
    response     jsonb NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);
