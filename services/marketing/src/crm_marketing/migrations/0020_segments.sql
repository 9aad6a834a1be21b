-- Segments (read model of the segment streams), their members, and the segment tailer's place
-- in the service's own event log. Rules are evaluated over the audience tables (0001-0019).
CREATE TABLE IF NOT EXISTS segments (
    segment_id         text PRIMARY KEY,
    name               text        NOT NULL,
    description        text,
    kind               text        NOT NULL CHECK (kind IN ('dynamic', 'static')),
    rule               jsonb,
    rule_text          text,
    has_window         boolean     NOT NULL DEFAULT false,
    status             text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    version            integer     NOT NULL,
    -- The version of the stream segment_membership-<id>: entered/left events append to it
    -- under this row's lock, so concurrent evaluations of one segment queue up.
    membership_version integer     NOT NULL DEFAULT 0,
    member_count       integer     NOT NULL DEFAULT 0,
    evaluated_at       timestamptz,
    created_by         text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS segments_active_name ON segments (lower(name)) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS segments_listing ON segments (created_at DESC, segment_id DESC);

CREATE TABLE IF NOT EXISTS segment_members (
    segment_id  text        NOT NULL,
    customer_id text        NOT NULL,
    since       timestamptz NOT NULL,
    PRIMARY KEY (segment_id, customer_id)
);
CREATE INDEX IF NOT EXISTS segment_members_customer ON segment_members (customer_id);

CREATE TABLE IF NOT EXISTS segment_tailer (
    name            text PRIMARY KEY,
    cursor_txid     bigint      NOT NULL DEFAULT 0,
    cursor_position bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO segment_tailer (name) VALUES ('segments') ON CONFLICT DO NOTHING;
