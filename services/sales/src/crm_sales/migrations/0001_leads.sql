-- Read model of leads, written in the same transaction as the lead's events.
CREATE TABLE IF NOT EXISTS leads (
    lead_id     text PRIMARY KEY,
    customer_id text NOT NULL,
    name        text NOT NULL,
    email       text,
    company     text,
    source      text NOT NULL,
    status      text NOT NULL,
    score       integer,
    owner_id    text,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS leads_listing ON leads (created_at DESC, lead_id DESC);
CREATE INDEX IF NOT EXISTS leads_owner ON leads (owner_id, created_at DESC);
