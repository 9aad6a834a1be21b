-- Marketing analytics: one row per marketing message, per lead, and per deal (for the funnel).
CREATE TABLE IF NOT EXISTS message_facts (
    message_id       text PRIMARY KEY,
    customer_id      text NOT NULL,
    campaign_id      text,
    trigger_id       text,
    template_id      text,
    channel          text NOT NULL,
    sent_at          timestamptz,
    delivered_at     timestamptz,
    bounced_at       timestamptz,
    opened_at        timestamptz,
    clicked_at       timestamptz,
    unsubscribed_at  timestamptz
);
CREATE INDEX IF NOT EXISTS message_facts_campaign ON message_facts (campaign_id);

CREATE TABLE IF NOT EXISTS lead_facts (
    lead_id          text PRIMARY KEY,
    customer_id      text NOT NULL,
    source           text NOT NULL,
    source_detail    text,
    utm_campaign     text,
    captured_at      timestamptz NOT NULL,
    qualified_at     timestamptz,
    disqualified_at  timestamptz,
    converted_at     timestamptz,
    deal_id          text
);
CREATE INDEX IF NOT EXISTS lead_facts_customer ON lead_facts (customer_id);

CREATE TABLE IF NOT EXISTS funnel_deals (
    deal_id        text PRIMARY KEY,
    customer_id    text NOT NULL,
    opened_at      timestamptz NOT NULL,
    currency       text NOT NULL,
    exchange_rate  numeric NOT NULL,
    base_currency  text NOT NULL,
    won_at         timestamptz,
    won_base       numeric                -- the won amount in the base currency (major units)
);
CREATE INDEX IF NOT EXISTS funnel_deals_customer ON funnel_deals (customer_id);
