-- Audience (MK-B): profiles, consent, push devices, purchases and website activity.
-- Read models kept in the same transaction as the events that change them (or by the
-- consumer of crm.sales.events, idempotently per event id).

-- One profile per (canonical) customer: contact data from sales plus marketing's attributes.
CREATE TABLE IF NOT EXISTS profiles (
    customer_id  text PRIMARY KEY,
    email        text,
    phone        text,
    first_name   text,
    last_name    text,
    company      text,
    country      char(2),
    city         text,
    language     text,
    age_band     text,
    industry     text,
    company_size text,
    timezone     text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS profiles_email ON profiles (lower(email));
CREATE INDEX IF NOT EXISTS profiles_country ON profiles (country);
CREATE INDEX IF NOT EXISTS profiles_listing ON profiles (updated_at DESC, customer_id DESC);

-- Current consent per channel; the history is the consent events of the profile's stream.
CREATE TABLE IF NOT EXISTS consents (
    customer_id text NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    status      text NOT NULL CHECK (status IN ('pending', 'granted', 'withdrawn')),
    changed_at  timestamptz NOT NULL,
    -- e-mail: the address that was confirmed (NULL: any current address); the pending request
    address     text,
    request_id  text,
    source      text,
    PRIMARY KEY (customer_id, channel)
);
CREATE INDEX IF NOT EXISTS consents_granted ON consents (channel, customer_id)
    WHERE status = 'granted';

CREATE TABLE IF NOT EXISTS push_devices (
    customer_id   text NOT NULL,
    token         text NOT NULL,
    platform      text NOT NULL,
    registered_at timestamptz NOT NULL,
    PRIMARY KEY (customer_id, token)
);

-- Purchases (sales deal.won lines, invoice.paid lines), for the "purchased" behaviour.
CREATE TABLE IF NOT EXISTS purchases (
    purchase_id  text PRIMARY KEY,  -- <source event id>:<line no>: a redelivery adds nothing
    customer_id  text NOT NULL,
    product_id   text NOT NULL,
    product_name text,
    category     text,
    amount_minor bigint,
    currency     char(3),
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS purchases_customer ON purchases (customer_id, occurred_at DESC);

-- Website activity: anonymous by visitor id; customer_id filled in once the visitor is identified.
CREATE TABLE IF NOT EXISTS web_activity (
    event_id    uuid PRIMARY KEY,
    visitor_id  text NOT NULL,
    customer_id text,
    kind        text NOT NULL CHECK (kind IN ('page_view', 'product_view', 'search', 'add_to_cart')),
    url         text,
    product_id  text,
    category    text,
    query       text,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS web_activity_visitor ON web_activity (visitor_id, occurred_at);
CREATE INDEX IF NOT EXISTS web_activity_customer ON web_activity (customer_id, kind, occurred_at)
    WHERE customer_id IS NOT NULL;

-- Which customer an identified visitor is (latest identification wins).
CREATE TABLE IF NOT EXISTS visitors (
    visitor_id    text PRIMARY KEY,
    customer_id   text NOT NULL,
    identified_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS visitors_customer ON visitors (customer_id);
