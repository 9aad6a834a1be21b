-- Campaigns, messages, the local SMS/push provider and triggers (MK-C). Read models kept in
-- the same transaction as the events that change them.

CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id  text PRIMARY KEY,
    name         text NOT NULL,
    template_id  text NOT NULL,
    segment_id   text NOT NULL,
    channel      text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    status       text NOT NULL CHECK (status IN ('draft', 'scheduled', 'sending', 'sent', 'cancelled')),
    send_at      timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    members      integer,
    version      integer NOT NULL,
    created_by   text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS campaigns_due ON campaigns (send_at) WHERE status = 'scheduled';
CREATE INDEX IF NOT EXISTS campaigns_listing ON campaigns (created_at DESC, campaign_id DESC);

-- One row per recipient of a campaign or firing of a trigger; stream message-<message_id>.
-- status: queued -> sending (claimed; counted against the frequency cap) -> sent -> delivered
-- -> opened -> clicked -> unsubscribed, or bounced, or skipped (skip_reason).
CREATE TABLE IF NOT EXISTS messages (
    message_id      uuid PRIMARY KEY,
    campaign_id     text,
    trigger_id      text,
    episode_id      uuid,
    customer_id     text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    template_id     text NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'delivered',
                        'bounced', 'opened', 'clicked', 'unsubscribed', 'skipped')),
    skip_reason     text,
    due_at          timestamptz NOT NULL,
    claimed_until   timestamptz,           -- the lease of the sender that claimed it
    counted_at      timestamptz,           -- when it was claimed: counts for the frequency cap
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    provider_id     text,                  -- stable Message-ID / provider id, set at claim
    links           jsonb,                 -- the URLs that were in the message, by link index
    version         integer NOT NULL DEFAULT 0,  -- of the stream message-<message_id>
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    delivered_at    timestamptz,
    bounced_at      timestamptz,
    opened_at       timestamptz,
    clicked_at      timestamptz,
    unsubscribed_at timestamptz,
    clicked_links   integer[] NOT NULL DEFAULT '{}',
    CHECK (campaign_id IS NOT NULL OR trigger_id IS NOT NULL)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_campaign_customer ON messages (campaign_id, customer_id)
    WHERE campaign_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS messages_episode ON messages (episode_id) WHERE episode_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_due ON messages (due_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS messages_in_flight ON messages (claimed_until) WHERE status = 'sending';
CREATE INDEX IF NOT EXISTS messages_cap ON messages (customer_id, counted_at)
    WHERE counted_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_campaign_status ON messages (campaign_id, status);

-- The local SMS / push provider: what it was given, listable over /delivery/outbox.
CREATE TABLE IF NOT EXISTS provider_outbox (
    outbox_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel      text NOT NULL CHECK (channel IN ('sms', 'push')),
    message_id   uuid NOT NULL UNIQUE,     -- the provider's idempotency key
    recipient    text NOT NULL,            -- phone number or device token
    title        text,
    body         text NOT NULL,
    recorded_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS provider_outbox_channel ON provider_outbox (channel, outbox_id DESC);

CREATE TABLE IF NOT EXISTS triggers (
    trigger_id  text PRIMARY KEY,
    name        text NOT NULL,
    rule        jsonb NOT NULL,
    active      boolean NOT NULL,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS triggers_listing ON triggers (created_at DESC, trigger_id DESC);

-- Qualifying episodes: open while the customer keeps qualifying; one firing per episode.
CREATE TABLE IF NOT EXISTS trigger_episodes (
    episode_id   uuid PRIMARY KEY,
    trigger_id   text NOT NULL,
    customer_id  text NOT NULL,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    end_reason   text,
    fired        boolean NOT NULL,
    message_id   uuid
);
CREATE UNIQUE INDEX IF NOT EXISTS trigger_episodes_open ON trigger_episodes (trigger_id, customer_id)
    WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS trigger_episodes_fired ON trigger_episodes (trigger_id, customer_id, started_at DESC)
    WHERE fired;

-- Where the trigger processor is in the service's own event log (commit order).
CREATE TABLE IF NOT EXISTS trigger_progress (
    name     text PRIMARY KEY,
    txid     bigint NOT NULL,
    position bigint NOT NULL
);
