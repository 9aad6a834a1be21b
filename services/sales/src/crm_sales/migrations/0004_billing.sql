-- Products and price book, quotes, invoices and credit notes: read models written in the
-- transaction that saves their events, and the gap-free document number counters.

-- One row per (series, year). A command takes the next number with UPDATE ... RETURNING in its
-- own transaction: the row stays locked until it commits, and a rollback gives the number back,
-- so numbers are consecutive, unique and without gaps.
CREATE TABLE IF NOT EXISTS document_numbers (
    series     text    NOT NULL,
    year       integer NOT NULL,
    last_value bigint  NOT NULL CHECK (last_value > 0),
    PRIMARY KEY (series, year)
);

CREATE TABLE IF NOT EXISTS products (
    product_id  text PRIMARY KEY,
    sku         text NOT NULL,
    sku_key     text NOT NULL UNIQUE,  -- the duplicate guard: trimmed, upper-case SKU
    name        text NOT NULL,
    description text,
    unit        text NOT NULL,
    tax_rate    numeric NOT NULL,
    prices      jsonb NOT NULL,
    active      boolean NOT NULL,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS products_listing ON products (created_at DESC, product_id DESC);

CREATE TABLE IF NOT EXISTS quotes (
    quote_id        text PRIMARY KEY,
    quote_number    text NOT NULL UNIQUE,
    revision        integer NOT NULL,
    status          text NOT NULL,
    title           text NOT NULL,
    deal_id         text NOT NULL,
    customer_id     text NOT NULL,
    contact_id      text,
    account_id      text,
    currency        text NOT NULL,
    subtotal_minor  bigint NOT NULL,
    tax_minor       bigint NOT NULL,
    total_minor     bigint NOT NULL,
    valid_until     date,
    invoice_id      text,
    invoice_voided  boolean NOT NULL DEFAULT false,
    version         integer NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS quotes_listing ON quotes (created_at DESC, quote_id DESC);
CREATE INDEX IF NOT EXISTS quotes_deal ON quotes (deal_id);
CREATE INDEX IF NOT EXISTS quotes_customer ON quotes (customer_id);
-- A deal is billed once: at most one accepted quote whose invoice stands (not voided).
CREATE UNIQUE INDEX IF NOT EXISTS quotes_one_accepted_per_deal
    ON quotes (deal_id) WHERE status = 'accepted' AND NOT invoice_voided;

CREATE TABLE IF NOT EXISTS invoices (
    invoice_id      text PRIMARY KEY,
    invoice_number  text NOT NULL UNIQUE,
    quote_id        text NOT NULL,
    quote_number    text NOT NULL,
    deal_id         text NOT NULL,
    customer_id     text NOT NULL,
    contact_id      text,
    account_id      text,
    currency        text NOT NULL,
    total_minor     bigint NOT NULL,
    paid_minor      bigint NOT NULL,
    balance_minor   bigint NOT NULL,
    status          text NOT NULL,
    overdue         boolean NOT NULL,
    issue_date      date NOT NULL,
    due_date        date NOT NULL,
    credit_note_id  text,
    version         integer NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS invoices_listing ON invoices (created_at DESC, invoice_id DESC);
CREATE INDEX IF NOT EXISTS invoices_deal ON invoices (deal_id);
CREATE INDEX IF NOT EXISTS invoices_customer ON invoices (customer_id);
-- What the overdue job scans: open invoices not yet flagged, by due date.
CREATE INDEX IF NOT EXISTS invoices_open_due ON invoices (due_date)
    WHERE status IN ('issued', 'partially_paid') AND NOT overdue;

CREATE TABLE IF NOT EXISTS credit_notes (
    credit_note_id     text PRIMARY KEY,
    credit_note_number text NOT NULL UNIQUE,
    invoice_id         text NOT NULL UNIQUE,
    customer_id        text NOT NULL,
    currency           text NOT NULL,
    total_minor        bigint NOT NULL,
    refund_due_minor   bigint NOT NULL,
    issue_date         date NOT NULL,
    created_at         timestamptz NOT NULL
);
