-- The 360 view of each customer: who it is, who owns it, its deals and its last touch.
CREATE TABLE IF NOT EXISTS customers (
    customer_id        text PRIMARY KEY,
    kind               text,            -- lead | contact | account
    display_name       text,
    first_name         text,
    last_name          text,
    owner_id           text,
    team_id            text,
    tier               text,
    first_seen_at      timestamptz NOT NULL,
    last_touch_at      timestamptz,
    last_touch_type    text,
    updated_at         timestamptz NOT NULL
);

-- Deals per customer (open amount in the deal currency and in the base currency).
CREATE TABLE IF NOT EXISTS customer_deals (
    deal_id       text PRIMARY KEY,
    customer_id   text NOT NULL,
    name          text NOT NULL,
    stage         text NOT NULL,
    status        text NOT NULL,
    probability   integer NOT NULL,
    amount_minor  bigint NOT NULL,
    currency      text NOT NULL,
    amount_base   numeric NOT NULL,
    base_currency text NOT NULL,
    owner_id      text,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_deals_customer ON customer_deals (customer_id);

-- Invoices per customer, for overdue money in the health score.
CREATE TABLE IF NOT EXISTS customer_invoices (
    invoice_id  text PRIMARY KEY,
    customer_id text NOT NULL,
    status      text NOT NULL,
    overdue     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_invoices_customer ON customer_invoices (customer_id);
