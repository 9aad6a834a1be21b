-- Tickets read model, written in the same transaction as the ticket's events (SD-B's routing and
-- SLA jobs read it too: see the interface in the service README).
CREATE TABLE IF NOT EXISTS tickets (
    ticket_id                 text PRIMARY KEY,
    customer_id               text NOT NULL,
    customer_email            text,
    kind                      text NOT NULL,
    status                    text NOT NULL,
    priority                  text NOT NULL,
    product                   text,
    language                  text,
    region                    text,
    customer_tier             text,
    queue_id                  text,
    assignee_id               text,
    subject                   text NOT NULL,
    channel                   text NOT NULL,
    return_status             text,
    merged_into               text,
    score                     integer,
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    first_response_at         timestamptz,
    last_customer_message_at  timestamptz,
    last_agent_reply_at       timestamptz,
    waiting_since             timestamptz,
    resolved_at               timestamptz,
    closed_at                 timestamptz,
    version                   integer NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_listing ON tickets (created_at DESC, ticket_id DESC);
CREATE INDEX IF NOT EXISTS tickets_status ON tickets (status, created_at);
CREATE INDEX IF NOT EXISTS tickets_queue ON tickets (queue_id, status);
CREATE INDEX IF NOT EXISTS tickets_assignee ON tickets (assignee_id, status);
CREATE INDEX IF NOT EXISTS tickets_customer ON tickets (customer_id);

-- How long a ticket spent in each status (the SLA clock pauses in waiting_on_customer).
CREATE TABLE IF NOT EXISTS ticket_status_spans (
    ticket_id   text NOT NULL,
    status      text NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    PRIMARY KEY (ticket_id, started_at, status)
);
CREATE INDEX IF NOT EXISTS ticket_status_spans_open ON ticket_status_spans (ticket_id)
    WHERE ended_at IS NULL;

-- The conversation as the customer link shows it, and the notes agents see.
CREATE TABLE IF NOT EXISTS ticket_comments (
    comment_id   text PRIMARY KEY,
    ticket_id    text NOT NULL,
    author_kind  text NOT NULL,          -- agent | customer
    author_id    text,
    public       boolean NOT NULL,
    body         text NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ticket_comments_ticket ON ticket_comments (ticket_id, created_at);

-- Message-IDs of the mail we sent and received, to thread replies (In-Reply-To / References)
-- and to ignore a message delivered twice.
CREATE TABLE IF NOT EXISTS ticket_mail_ids (
    message_id   text PRIMARY KEY,
    ticket_id    text NOT NULL,
    direction    text NOT NULL,          -- out | in
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ticket_mail_ids_ticket ON ticket_mail_ids (ticket_id, recorded_at);

-- Mail to customers: written with the event, sent after the commit, retried until sent.
CREATE TABLE IF NOT EXISTS ticket_outbox (
    mail_id        text PRIMARY KEY,
    ticket_id      text NOT NULL,
    purpose        text NOT NULL,        -- acknowledgement | reply | survey
    to_address     text NOT NULL,
    subject        text NOT NULL,
    body           text NOT NULL,
    message_id     text NOT NULL,
    in_reply_to    text,
    created_at     timestamptz NOT NULL,
    claimed_until  timestamptz,
    sent_at        timestamptz,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text
);
CREATE INDEX IF NOT EXISTS ticket_outbox_pending ON ticket_outbox (created_at) WHERE sent_at IS NULL;

-- Portal rate limiting, shared by every replica: hits per bucket and fixed window.
CREATE TABLE IF NOT EXISTS portal_hits (
    bucket        text NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
