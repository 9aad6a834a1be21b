-- Routing (SD-B): agent profiles, queues and the current routing of each ticket (read models
-- written in the same transaction as their events). Open work is counted from `tickets` (SD-A).
CREATE TABLE IF NOT EXISTS agents (
    agent_id           text PRIMARY KEY,
    email              text,
    display_name       text,
    skills             text[] NOT NULL DEFAULT '{}',
    languages          text[] NOT NULL DEFAULT '{}',
    queues             text[] NOT NULL DEFAULT '{}',
    active             boolean NOT NULL DEFAULT true,
    available          boolean NOT NULL DEFAULT true,
    unavailable_reason text,
    version            integer NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS agents_queues ON agents USING gin (queues);

CREATE TABLE IF NOT EXISTS queues (
    queue_id    text PRIMARY KEY,
    name        text NOT NULL,
    description text,
    active      boolean NOT NULL DEFAULT true,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- The latest routing decision per ticket (the full record is the routing-<ticket> stream).
CREATE TABLE IF NOT EXISTS ticket_routing (
    ticket_id  text PRIMARY KEY,
    queue_id   text,
    agent_id   text,
    rule_id    text,
    reason     text NOT NULL,
    manual     boolean NOT NULL DEFAULT false,
    routed_at  timestamptz NOT NULL,
    version    integer NOT NULL
);
CREATE INDEX IF NOT EXISTS ticket_routing_agent ON ticket_routing (agent_id);
