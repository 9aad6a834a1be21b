-- The deal projection becomes temporal: every event about a deal is kept (deal_events), and each
-- state of the deal is a row valid over [valid_from, valid_to) in event time (deal_versions).
-- An event that arrives late splits the interval it falls in and the later versions are folded
-- again from the kept events. deal_facts / deal_lines / deal_stages become views of the history.
CREATE TABLE IF NOT EXISTS deal_events (
    deal_id        text        NOT NULL,
    event_id       uuid        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    stream_version integer     NOT NULL,
    arrival        bigserial   NOT NULL,   -- delivery order: the last tie-break
    event_type     text        NOT NULL,
    data           jsonb       NOT NULL,
    PRIMARY KEY (deal_id, event_id)
);
CREATE INDEX IF NOT EXISTS deal_events_order
    ON deal_events (deal_id, occurred_at, stream_version, arrival);

CREATE TABLE IF NOT EXISTS deal_versions (
    deal_id          text        NOT NULL,
    event_id         uuid        NOT NULL,     -- the event that made this version
    event_type       text        NOT NULL,
    valid_from       timestamptz NOT NULL,     -- that event's time
    valid_to         timestamptz,              -- the next version's valid_from; NULL = current
    stream_version   integer     NOT NULL,
    arrival          bigint      NOT NULL,
    customer_id      text        NOT NULL,
    name             text        NOT NULL,
    owner_id         text,
    team_id          text,
    pipeline_id      text        NOT NULL,
    stage            text        NOT NULL,
    status           text        NOT NULL,     -- open | won | lost
    probability      integer     NOT NULL,
    amount_minor     bigint      NOT NULL,
    currency         text        NOT NULL,
    exchange_rate    numeric     NOT NULL,     -- 1 unit of currency in the base currency
    base_currency    text        NOT NULL,
    expected_close   date,
    source           text,
    lost_reason      text,
    opened_at        timestamptz NOT NULL,
    closed_at        timestamptz,
    lines            jsonb       NOT NULL DEFAULT '[]',  -- [{product_id, name, amount_minor}]
    stage_seq        integer     NOT NULL,     -- 1 for the opening stage, +1 per stage change
    stage_entered_at timestamptz NOT NULL,
    stage_left_at    timestamptz,              -- set when closing left the stage
    PRIMARY KEY (deal_id, event_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS deal_versions_current ON deal_versions (deal_id)
    WHERE valid_to IS NULL;
CREATE INDEX IF NOT EXISTS deal_versions_order
    ON deal_versions (deal_id, valid_from, stream_version, arrival);
CREATE INDEX IF NOT EXISTS deal_versions_valid ON deal_versions (valid_from, valid_to);

-- Deals projected before this migration: one version each, the state they are in now (their
-- earlier history comes back with `crm analytics rebuild`).
INSERT INTO deal_versions (deal_id, event_id, event_type, valid_from, valid_to, stream_version,
    arrival, customer_id, name, owner_id, team_id, pipeline_id, stage, status, probability,
    amount_minor, currency, exchange_rate, base_currency, expected_close, source, lost_reason,
    opened_at, closed_at, lines, stage_seq, stage_entered_at, stage_left_at)
SELECT f.deal_id, md5('migrated:' || f.deal_id)::uuid, 'migrated', f.opened_at, NULL, 0, 0,
       f.customer_id, coalesce(cd.name, f.deal_id), f.owner_id, f.team_id, f.pipeline_id, f.stage,
       f.status, f.probability, f.amount_minor, f.currency, f.exchange_rate, f.base_currency,
       f.expected_close, f.source, f.lost_reason, f.opened_at, f.closed_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object('product_id', l.product_id, 'name', l.name,
                                                     'amount_minor', l.amount_minor)
                                  ORDER BY l.line_no)
                 FROM deal_lines l WHERE l.deal_id = f.deal_id), '[]'),
       coalesce((SELECT max(s.seq) FROM deal_stages s WHERE s.deal_id = f.deal_id), 1),
       coalesce((SELECT s.entered_at FROM deal_stages s WHERE s.deal_id = f.deal_id
                 ORDER BY s.seq DESC LIMIT 1), f.opened_at),
       (SELECT s.left_at FROM deal_stages s WHERE s.deal_id = f.deal_id
        ORDER BY s.seq DESC LIMIT 1)
FROM deal_facts f LEFT JOIN customer_deals cd ON cd.deal_id = f.deal_id
ON CONFLICT DO NOTHING;

DROP TABLE deal_stages;
DROP TABLE deal_lines;
DROP TABLE deal_facts;

-- The current state of every deal (what deal_facts held).
CREATE VIEW deal_facts AS
SELECT deal_id, customer_id, name, owner_id, team_id, pipeline_id, stage, status, probability,
       amount_minor, currency, exchange_rate, base_currency, expected_close, source, lost_reason,
       opened_at, closed_at, lines
FROM deal_versions WHERE valid_to IS NULL;

-- The current product lines of every deal.
CREATE VIEW deal_lines AS
SELECT f.deal_id, (l.ordinality - 1)::integer AS line_no, l.value ->> 'product_id' AS product_id,
       l.value ->> 'name' AS name, (l.value ->> 'amount_minor')::bigint AS amount_minor
FROM deal_facts f CROSS JOIN LATERAL jsonb_array_elements(f.lines) WITH ORDINALITY AS l(value, ordinality);

-- Each stage a deal entered: left when the next stage was entered, or when closing left it.
CREATE VIEW deal_stages AS
WITH s AS (
    SELECT deal_id, stage_seq AS seq, min(stage) AS stage, min(stage_entered_at) AS entered_at,
           max(stage_left_at) AS closed_left
    FROM deal_versions GROUP BY deal_id, stage_seq
)
SELECT deal_id, seq, stage, entered_at,
       coalesce(lead(entered_at) OVER (PARTITION BY deal_id ORDER BY seq), closed_left) AS left_at
FROM s;
