-- The local directory of sales' people (docs/identity.md): which customer an e-mail address is,
-- and which provisional or merged ids stand for which customer. Kept by crm_runtime.people.
CREATE TABLE IF NOT EXISTS people (
    email        text PRIMARY KEY,            -- normalised: trimmed, lower-case
    customer_id  text NOT NULL,
    provisional  boolean NOT NULL DEFAULT false,  -- minted here; sales has not answered yet
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS people_customer_idx ON people (customer_id);

CREATE TABLE IF NOT EXISTS people_contacts (
    contact_id   text PRIMARY KEY,
    customer_id  text NOT NULL
);

CREATE TABLE IF NOT EXISTS people_links (
    link_id      text PRIMARY KEY,            -- merge id, lead:<id>, identified:<alias>
    alias_id     text NOT NULL,
    customer_id  text NOT NULL
);
CREATE INDEX IF NOT EXISTS people_links_alias_idx ON people_links (alias_id);
