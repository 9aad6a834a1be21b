-- Service analytics: one row per ticket with the times that matter, and a row per SLA breach.
CREATE TABLE IF NOT EXISTS ticket_facts (
    ticket_id          text PRIMARY KEY,
    customer_id        text NOT NULL,
    kind               text NOT NULL,
    priority           text NOT NULL,
    product            text,
    channel            text,
    status             text NOT NULL,
    queue_id           text,
    assignee_id        text,
    opened_at          timestamptz NOT NULL,
    first_response_at  timestamptz,
    resolved_at        timestamptz,          -- the latest resolution (NULL while reopened)
    closed_at          timestamptz,
    csat_score         smallint,
    csat_at            timestamptz,
    csat_agent_id      text,                 -- who held the ticket when it was rated
    updated_at         timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ticket_facts_customer ON ticket_facts (customer_id);
CREATE INDEX IF NOT EXISTS ticket_facts_product_opened ON ticket_facts (product, opened_at);

CREATE TABLE IF NOT EXISTS ticket_breaches (
    ticket_id   text NOT NULL,
    target      text NOT NULL,               -- first_response | resolution
    episode     integer NOT NULL,
    breached_at timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, target, episode)
);
