-- Knowledge base read models (crm_service_desk.kb). Rebuildable from the kb_* streams.

CREATE TABLE kb_categories (
    category_id text PRIMARY KEY,
    name        text NOT NULL,
    description text,
    parent_id   text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     int NOT NULL
);
-- One name per parent, without regard to case.
CREATE UNIQUE INDEX kb_categories_name ON kb_categories (coalesce(parent_id, ''), lower(name));

-- One row per article: what it presents (the published revision, else the latest) and is found
-- by. ts_config is chosen per article language ('simple' when there is no better one).
CREATE TABLE kb_articles (
    article_id         text PRIMARY KEY,
    state              text NOT NULL CHECK (state IN ('draft', 'published', 'archived')),
    title              text NOT NULL,
    body               text NOT NULL,
    category_id        text,
    language           text NOT NULL,
    ts_config          regconfig NOT NULL,
    tags               text[] NOT NULL DEFAULT '{}',
    latest_revision    int NOT NULL,
    published_revision int,
    published_at       timestamptz,
    helpful_count      int NOT NULL DEFAULT 0,
    not_helpful_count  int NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            int NOT NULL,
    search             tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector(ts_config, title), 'A') || setweight(to_tsvector(ts_config, body), 'B')
    ) STORED
);
CREATE INDEX kb_articles_search ON kb_articles USING gin (search);
CREATE INDEX kb_articles_newest ON kb_articles (created_at DESC, article_id DESC);
CREATE INDEX kb_articles_category ON kb_articles (category_id);
CREATE INDEX kb_articles_tags ON kb_articles USING gin (tags);

-- The text-search configurations articles use: a search builds one query per configuration
-- (so each article is matched with its own language's stemming) and every one can use the
-- GIN index. Never shrinks; an unused configuration costs one empty index probe.
CREATE TABLE kb_search_configs (
    ts_config regconfig PRIMARY KEY
);

CREATE TABLE kb_article_revisions (
    article_id  text NOT NULL,
    revision    int NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,
    category_id text,
    language    text NOT NULL,
    tags        text[] NOT NULL DEFAULT '{}',
    note        text,
    author      text,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (article_id, revision)
);

CREATE TABLE kb_links (
    article_id text NOT NULL,
    ticket_id  text NOT NULL,
    revision   int NOT NULL,
    linked_by  text,
    linked_at  timestamptz NOT NULL,
    PRIMARY KEY (article_id, ticket_id)
);
CREATE INDEX kb_links_ticket ON kb_links (ticket_id, linked_at);

CREATE TABLE kb_feedback (
    article_id  text NOT NULL,
    voter       text NOT NULL,  -- customer:<id>, token:<nonce> or user:<id>: one each per article
    helped      boolean NOT NULL,
    revision    int NOT NULL,
    channel     text NOT NULL,
    customer_id text,
    ticket_id   text,
    comment     text,
    given_at    timestamptz NOT NULL,
    PRIMARY KEY (article_id, voter)
);

-- An OR of the distinct words of a text (its first max_terms, in order of appearance) as a
-- tsquery in one configuration: suggestions match a ticket's text on any word, ranked by how
-- many and where (websearch_to_tsquery would demand every word).
CREATE FUNCTION kb_any_tsquery(cfg regconfig, txt text, max_terms int DEFAULT 64)
RETURNS tsquery LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        string_agg(
            '''' || replace(replace(w.lexeme, '\', '\\'), '''', '''''') || '''',
            ' | ' ORDER BY w.first
        ),
        ''
    )::tsquery
    FROM (
        SELECT lexeme, positions[1] AS first
        FROM unnest(to_tsvector(cfg, left(txt, 20000)))
        ORDER BY positions[1]
        LIMIT max_terms
    ) w
$$;
