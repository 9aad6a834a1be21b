-- Audience (MK-B): what the consumer of crm.sales.events needs to keep profiles and purchases,
-- and the outbox of double opt-in confirmation mails.

-- Which customer id stands for which (merges, conversions, identifications), as sales said.
CREATE TABLE IF NOT EXISTS profile_aliases (
    link_id     text PRIMARY KEY,
    alias_id    text NOT NULL,
    customer_id text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS profile_aliases_alias ON profile_aliases (alias_id);

CREATE TABLE IF NOT EXISTS audience_contacts (
    contact_id  text PRIMARY KEY,
    customer_id text NOT NULL
);

-- Deals and invoices as far as purchases need them (lines are on deal.opened/updated, and
-- invoice.issued; deal.won and invoice.paid say only that it happened).
CREATE TABLE IF NOT EXISTS audience_deals (
    deal_id     text PRIMARY KEY,
    customer_id text NOT NULL,
    currency    char(3),
    lines       jsonb NOT NULL DEFAULT '[]'::jsonb
);
CREATE TABLE IF NOT EXISTS audience_invoices (
    invoice_id  text PRIMARY KEY,
    deal_id     text,
    customer_id text NOT NULL,
    currency    char(3),
    lines       jsonb NOT NULL DEFAULT '[]'::jsonb
);
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS source text;
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS source_id text;
ALTER TABLE purchases ADD COLUMN IF NOT EXISTS deal_id text;
CREATE INDEX IF NOT EXISTS purchases_deal ON purchases (deal_id);

-- The category of a product as the website last reported it (sales' catalogue has none).
CREATE TABLE IF NOT EXISTS product_categories (
    product_id text PRIMARY KEY,
    category   text NOT NULL,
    seen_at    timestamptz NOT NULL
);

-- Confirmation mails of e-mail double opt-in: written with the request, sent after commit;
-- a job retries what the SMTP server did not take.
CREATE TABLE IF NOT EXISTS consent_mails (
    request_id  text PRIMARY KEY,
    customer_id text NOT NULL,
    address     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);
CREATE INDEX IF NOT EXISTS consent_mails_unsent ON consent_mails (created_at) WHERE sent_at IS NULL;

CREATE INDEX IF NOT EXISTS profiles_created ON profiles (created_at DESC, customer_id DESC);
