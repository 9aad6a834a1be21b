-- SLAs and escalation (SD-B): calendars, policies per priority, the SLA state per ticket target
-- and episode (what the "tickets at risk" view reads), and escalations with their mail status.
CREATE TABLE IF NOT EXISTS calendars (
    calendar_id text PRIMARY KEY,
    name        text NOT NULL,
    timezone    text NOT NULL,
    definition  jsonb NOT NULL,
    version     integer NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS sla_policies (
    priority               text PRIMARY KEY,
    calendar_id            text NOT NULL,
    first_response_minutes integer NOT NULL,
    resolution_minutes     integer NOT NULL,
    at_risk_percent        integer NOT NULL,
    version                integer NOT NULL,
    updated_at             timestamptz NOT NULL
);

-- status: running | paused | at_risk | breached | met (stopped in time)
CREATE TABLE IF NOT EXISTS sla_states (
    ticket_id        text NOT NULL,
    target           text NOT NULL CHECK (target IN ('first_response', 'resolution')),
    episode          integer NOT NULL,
    priority         text NOT NULL,
    status           text NOT NULL,
    started_at       timestamptz NOT NULL,
    stopped_at       timestamptz,
    elapsed_minutes  double precision NOT NULL,
    target_minutes   integer NOT NULL,
    at_risk_percent  integer NOT NULL,
    due_at           timestamptz,
    at_risk_at       timestamptz,
    breached_at      timestamptz,
    evaluated_at     timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, target, episode)
);
CREATE INDEX IF NOT EXISTS sla_states_open ON sla_states (due_at) WHERE stopped_at IS NULL;
CREATE INDEX IF NOT EXISTS sla_states_status ON sla_states (status, due_at);

-- One row per rule and episode: the unique key is what makes an escalation fire once.
CREATE TABLE IF NOT EXISTS escalations (
    escalation_id text PRIMARY KEY,
    ticket_id     text NOT NULL,
    rule_id       text NOT NULL,
    episode       text NOT NULL,
    kind          text NOT NULL,
    customer_id   text,
    reason        text NOT NULL,
    recipients    text[] NOT NULL DEFAULT '{}',
    escalated_at  timestamptz NOT NULL,
    mailed_at     timestamptz,
    mail_error    text,
    attempts      integer NOT NULL DEFAULT 0,
    UNIQUE (ticket_id, rule_id, episode)
);
CREATE INDEX IF NOT EXISTS escalations_unmailed ON escalations (escalated_at) WHERE mailed_at IS NULL;
