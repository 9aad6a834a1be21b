-- One customer, many ids: a merge (until undone) or a lead converted onto an existing contact
-- links an alias id to the customer id that stands. Timelines are read over the whole tree.
CREATE TABLE IF NOT EXISTS customer_links (
    link_id     text PRIMARY KEY,       -- merge id, or 'lead:<lead id>'
    alias_id    text NOT NULL,
    customer_id text NOT NULL,
    reason      text NOT NULL,
    linked_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_links_alias ON customer_links (alias_id);
CREATE INDEX IF NOT EXISTS customer_links_customer ON customer_links (customer_id);
