-- Reps, routing state, activities, tasks and reminders (read models written with their events).
ALTER TABLE leads ADD COLUMN IF NOT EXISTS region text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS product_line text;
CREATE INDEX IF NOT EXISTS leads_team ON leads (team_id);

CREATE TABLE IF NOT EXISTS reps (
    user_id       text PRIMARY KEY,
    email         text,
    team_id       text,
    regions       text[] NOT NULL DEFAULT '{}',
    product_lines text[] NOT NULL DEFAULT '{}',
    available     boolean NOT NULL DEFAULT true,
    version       integer NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- The rep each round-robin rule chose last (updated in the assigning transaction).
CREATE TABLE IF NOT EXISTS assignment_state (
    rule_id      text PRIMARY KEY,
    last_user_id text NOT NULL
);

CREATE TABLE IF NOT EXISTS activities (
    activity_id text PRIMARY KEY,
    kind        text NOT NULL,
    subject     text NOT NULL,
    occurred_at timestamptz NOT NULL,
    customer_id text NOT NULL,
    contact_id  text,
    account_id  text,
    deal_id     text,
    owner_id    text,
    team_id     text,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS activities_account ON activities (account_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS activities_contact ON activities (contact_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS activities_deal ON activities (deal_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS activities_listing ON activities (created_at DESC, activity_id DESC);

CREATE TABLE IF NOT EXISTS tasks (
    task_id     text PRIMARY KEY,
    title       text NOT NULL,
    due_at      timestamptz,
    assignee_id text,
    team_id     text,
    priority    text NOT NULL,
    done        boolean NOT NULL,
    customer_id text,
    contact_id  text,
    account_id  text,
    deal_id     text,
    origin      text,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_assignee ON tasks (assignee_id, done, due_at);
CREATE INDEX IF NOT EXISTS tasks_listing ON tasks (created_at DESC, task_id DESC);

-- One reminder per lapse of a top-tier account: (account, the activity time it lapsed from).
-- mailed_at stays NULL until the owner's e-mail went out (retried on the next tick).
CREATE TABLE IF NOT EXISTS reminders (
    account_id   text NOT NULL,
    lapse_since  timestamptz NOT NULL,
    task_id      text NOT NULL,
    owner_id     text,
    flagged_at   timestamptz NOT NULL,
    mailed_at    timestamptz,
    mail_error   text,
    attempts     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, lapse_since)
);
CREATE INDEX IF NOT EXISTS reminders_unmailed ON reminders (flagged_at) WHERE mailed_at IS NULL;
