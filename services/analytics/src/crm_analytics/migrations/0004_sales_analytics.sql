-- Facts for the analytical sales CRM: one row per deal, and each stage a deal entered.
CREATE TABLE IF NOT EXISTS deal_facts (
    deal_id        text PRIMARY KEY,
    customer_id    text NOT NULL,
    owner_id       text,
    team_id        text,
    pipeline_id    text NOT NULL,
    stage          text NOT NULL,
    status         text NOT NULL,      -- open | won | lost
    probability    integer NOT NULL,
    amount_minor   bigint NOT NULL,
    currency       text NOT NULL,
    exchange_rate  numeric NOT NULL,   -- 1 unit of currency in the base currency
    base_currency  text NOT NULL,
    expected_close date,
    source         text,
    lost_reason    text,
    opened_at      timestamptz NOT NULL,
    closed_at      timestamptz
);
CREATE INDEX IF NOT EXISTS deal_facts_status ON deal_facts (status, closed_at);

CREATE TABLE IF NOT EXISTS deal_lines (
    deal_id          text NOT NULL,
    line_no          integer NOT NULL,
    product_id       text,
    name             text NOT NULL,
    amount_minor     bigint NOT NULL,
    PRIMARY KEY (deal_id, line_no)
);

CREATE TABLE IF NOT EXISTS deal_stages (
    deal_id    text NOT NULL,
    seq        integer NOT NULL,
    stage      text NOT NULL,
    entered_at timestamptz NOT NULL,
    left_at    timestamptz,
    PRIMARY KEY (deal_id, seq)
);

ALTER TABLE customers ADD COLUMN IF NOT EXISTS region text;
