-- Read models of contacts, accounts, pipelines and deals, written in the transaction that
-- saves their events. The duplicate indexes are the uniqueness guards: an insert that collides
-- aborts the whole command.
CREATE TABLE IF NOT EXISTS contacts (
    contact_id   text PRIMARY KEY,
    customer_id  text NOT NULL,
    display_name text NOT NULL,
    email        text,
    account_id   text,
    owner_id     text,
    team_id      text,
    tags         text[] NOT NULL DEFAULT '{}',
    merged_into  text,
    details      jsonb NOT NULL,
    version      integer NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS contacts_listing ON contacts (created_at DESC, contact_id DESC);
CREATE INDEX IF NOT EXISTS contacts_owner ON contacts (owner_id);
CREATE INDEX IF NOT EXISTS contacts_team ON contacts (team_id);
CREATE INDEX IF NOT EXISTS contacts_account ON contacts (account_id);
CREATE INDEX IF NOT EXISTS contacts_customer ON contacts (customer_id);

CREATE TABLE IF NOT EXISTS contact_emails (
    email      text PRIMARY KEY,
    contact_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS contact_emails_contact ON contact_emails (contact_id);

CREATE TABLE IF NOT EXISTS accounts (
    account_id  text PRIMARY KEY,
    customer_id text NOT NULL,
    name        text NOT NULL,
    domain      text,
    tier        text NOT NULL,
    owner_id    text,
    team_id     text,
    tags        text[] NOT NULL DEFAULT '{}',
    merged_into text,
    details     jsonb NOT NULL,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_listing ON accounts (created_at DESC, account_id DESC);
CREATE INDEX IF NOT EXISTS accounts_owner ON accounts (owner_id);
CREATE INDEX IF NOT EXISTS accounts_team ON accounts (team_id);

CREATE TABLE IF NOT EXISTS account_domains (
    domain     text PRIMARY KEY,
    account_id text NOT NULL
);

CREATE TABLE IF NOT EXISTS deals (
    deal_id        text PRIMARY KEY,
    customer_id    text NOT NULL,
    name           text NOT NULL,
    pipeline_id    text NOT NULL,
    stage          text NOT NULL,
    status         text NOT NULL,
    probability    integer NOT NULL,
    amount_minor   bigint NOT NULL,
    currency       text NOT NULL,
    amount_base    numeric NOT NULL,
    expected_close date,
    owner_id       text,
    team_id        text,
    account_id     text,
    contact_id     text,
    version        integer NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS deals_listing ON deals (created_at DESC, deal_id DESC);
CREATE INDEX IF NOT EXISTS deals_board ON deals (pipeline_id, status, stage);
CREATE INDEX IF NOT EXISTS deals_owner ON deals (owner_id);
CREATE INDEX IF NOT EXISTS deals_team ON deals (team_id);

CREATE TABLE IF NOT EXISTS exchange_rates (
    currency      text PRIMARY KEY,
    base_currency text NOT NULL,
    rate          numeric NOT NULL,
    set_at        timestamptz NOT NULL
);

ALTER TABLE leads ADD COLUMN IF NOT EXISTS team_id text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS converted_contact_id text;
