-- The collaborative customer timeline: one row per touchpoint, from every context.
CREATE TABLE IF NOT EXISTS timeline (
    event_id       uuid PRIMARY KEY,
    customer_id    text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    context        text        NOT NULL,
    event_type     text        NOT NULL,
    summary        text        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version integer     NOT NULL,
    link           text,
    data           jsonb       NOT NULL,
    projected_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS timeline_by_customer ON timeline (customer_id, occurred_at, event_id);
