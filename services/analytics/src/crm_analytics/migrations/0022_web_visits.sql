-- Website activity summarised per visit for the timeline: a visit is one visitor's activity
-- without a gap of 30 minutes. It joins the customer's timeline once the visitor is known.
CREATE TABLE IF NOT EXISTS web_visits (
    visit_id     text PRIMARY KEY,
    visitor_id   text NOT NULL,
    customer_id  text,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz NOT NULL,
    pages        integer NOT NULL DEFAULT 0,
    products     integer NOT NULL DEFAULT 0,
    searches     integer NOT NULL DEFAULT 0,
    carts        integer NOT NULL DEFAULT 0,
    categories   text[] NOT NULL DEFAULT '{}',
    last_url     text
);
CREATE INDEX IF NOT EXISTS web_visits_visitor ON web_visits (visitor_id, started_at);
