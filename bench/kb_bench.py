"""Knowledge-base search latency over 10,000 published articles, next to a plain ILIKE scan.

The articles are written through the service desk's own command handlers (events, read model,
revisions), so the rows, the stored tsvector and the GIN index are what the service keeps.
Synthetic text: a Zipf-distributed vocabulary of support words and made-up words, titles of 3
to 8 words, bodies of 60 to 250; 90% English, 7% German, 3% Japanese-tagged ('simple').

Ours: the exact statement ``GET /kb/search`` runs (``crm_service_desk.kb.views.search``:
``websearch_to_tsquery`` per text-search configuration, GIN match, ``ts_rank_cd`` ranking,
``ts_headline`` snippets for the page of 20), one connection, one query at a time.
Baseline: the same query as ``ILIKE '%word%'`` on title or body for each word (every word must
match, as in ours), ordered by title matches then newest, first 20 — a scan of the same rows.
The two alternate query by query. A second pair of figures times the whole HTTP route
(in-process ASGI: JWT, validation, JSON) with the knowledge-base routers of the service.
"""

from __future__ import annotations

import random
import time
from typing import Any

import asyncpg
import httpx

from bench.common import Figure, percentile
from crm_runtime import db
from crm_runtime.eventstore import EventStore, Metadata
from crm_runtime.http.app import create_service_app
from crm_runtime.http.auth import mint_token
from crm_runtime.settings import Settings
from crm_service_desk.kb import views
from crm_service_desk.kb.api import ROUTERS
from crm_service_desk.kb.handlers import KbHandlers

DATABASE = "bench_kb"
PAGE = 20
BATCH = 250  # articles per transaction while loading
_SUPPORT = """printer paper jam toner cartridge tray driver install update firmware network wifi
router modem cable password reset account login email invoice refund return order delivery
shipping warranty repair screen battery charger power error message crash slow backup restore
sync calendar contact export import report dashboard permission license subscription upgrade
cancel billing payment card address phone settings language keyboard mouse monitor scanner
camera audio speaker microphone bluetooth vpn browser cache cookie download upload file folder
share link storage quota server""".split()  # noqa: SIM905
_GERMAN = "drucker papier stau walze treiber netzwerk passwort konto rechnung".split()  # noqa: SIM905
VOCABULARY = 20_000
ZIPF_SHIFT = 100  # weight of the r-th word: 1 / (r + 100); the commonest is in ~25% of bodies


def _vocabulary(rnd: random.Random, size: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "va", "de", "xo", "zu", "bel"]
    made_up: set[str] = set()
    while len(made_up) < size - len(_SUPPORT):
        made_up.add("".join(rnd.choice(syllables) for _ in range(rnd.randint(2, 5))))
    words = sorted(made_up)
    rnd.shuffle(words)
    return _SUPPORT + words


class Corpus:
    def __init__(self, seed: int = 11, size: int = VOCABULARY) -> None:
        self.rnd = random.Random(seed)
        self.words = _vocabulary(self.rnd, size)
        self.weights = [1 / (r + ZIPF_SHIFT) for r in range(len(self.words))]

    def text(self, n: int) -> str:
        return " ".join(self.rnd.choices(self.words, self.weights, k=n))

    def article(self) -> dict[str, Any]:
        roll = self.rnd.random()
        language = "en" if roll < 0.90 else ("de" if roll < 0.97 else "ja")
        title = self.text(self.rnd.randint(3, 8)).capitalize()
        body = self.text(self.rnd.randint(60, 250))
        if language == "de":
            body += " " + " ".join(self.rnd.choices(_GERMAN, k=20))
        return {"title": title, "body": body, "language": language, "tags": []}

    def queries(self, n: int) -> list[str]:
        """A mix: a frequent word, a mid-frequency word, a rare word, and two words."""
        out = []
        for i in range(n):
            kind = i % 4
            if kind == 0:
                out.append(self.rnd.choice(self.words[:30]))
            elif kind == 1:
                out.append(self.rnd.choice(self.words[30:300]))
            elif kind == 2:
                out.append(self.rnd.choice(self.words[300:5000]))
            else:
                out.append(" ".join(self.rnd.sample(self.words[:300], 2)))
        return out


async def _fresh(server_url: str) -> str:
    conn = await asyncpg.connect(db.with_database(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    url = db.with_database(server_url, DATABASE)
    await db.migrate_url(url, ["crm_runtime", "crm_runtime.people", "crm_service_desk"])
    return url


async def _load(url: str, corpus: Corpus, n: int) -> float:
    """Write and publish ``n`` articles through the handlers; returns articles/s."""
    pool = await db.create_pool(url, max_size=2)
    try:
        handlers = KbHandlers(EventStore(pool, source="/crm/bench"))
        meta = Metadata(actor="bench")
        start = time.perf_counter()
        done = 0
        while done < n:
            async with pool.acquire() as conn, conn.transaction():
                for _ in range(min(BATCH, n - done)):
                    await handlers.create_article(conn, corpus.article(), meta, publish=True)
                    done += 1
        rate = n / (time.perf_counter() - start)
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE kb_articles")
        return rate
    finally:
        await pool.close()


_BASELINE = """
    SELECT article_id, title, rank FROM (
        SELECT article_id, title, updated_at,
               (SELECT count(*) FROM unnest($1::text[]) w WHERE title ILIKE w) AS rank
        FROM kb_articles
        WHERE state = 'published'
          AND (SELECT bool_and(title ILIKE w OR body ILIKE w) FROM unnest($1::text[]) w)
    ) m
    ORDER BY rank DESC, updated_at DESC, article_id
    LIMIT $2
"""


def _patterns(q: str) -> list[str]:
    return [
        "%" + w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        for w in q.split()
    ]


async def _sql_latencies(url: str, queries: list[str]) -> tuple[list[float], list[float], int, str]:
    conn = await asyncpg.connect(url)
    ours: list[float] = []
    base: list[float] = []
    found = 0
    try:
        for q in queries[:10]:  # warm both (plans, buffers)
            await views.search(conn, q, limit=PAGE + 1)
            await conn.fetch(_BASELINE, _patterns(q), PAGE)
        for i, q in enumerate(queries):
            pair = [("ours", q), ("base", q)]
            if i % 2:
                pair.reverse()
            for which, text in pair:
                t = time.perf_counter()
                if which == "ours":
                    rows = await views.search(conn, text, limit=PAGE + 1)
                    ours.append((time.perf_counter() - t) * 1000)
                    found += bool(rows)
                else:
                    await conn.fetch(_BASELINE, _patterns(text), PAGE)
                    base.append((time.perf_counter() - t) * 1000)
        sql, params = views.search_sql(queries[1], limit=PAGE + 1)
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
    finally:
        await conn.close()
    return ours, base, found, plan


async def _http_latencies(url: str, queries: list[str]) -> list[float]:
    settings = Settings(
        service_name="service-desk",
        crm_env="test",
        service_database_url=url,
        scheduler_enabled=False,
        consumers_enabled=False,
        log_level="WARNING",
    )
    app = create_service_app(
        settings,
        title="kb bench",
        description="the knowledge-base routers of the service desk",
        routers=list(ROUTERS),
        migrations=["crm_runtime.people", "crm_service_desk"],
    )
    token = mint_token(settings.jwt_secret, "bench", ["sales_rep"])
    out: list[float] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://kb", headers=headers
        ) as c:
            for q in queries[:10]:
                await c.get("/kb/search", params={"q": q})
            for q in queries:
                t = time.perf_counter()
                r = await c.get("/kb/search", params={"q": q, "limit": PAGE})
                out.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"GET /kb/search: {r.status_code} {r.text[:200]}")
    return out


async def run(server_url: str, *, smoke: bool) -> list[Figure]:
    """``server_url``: the bench's PostgreSQL server; a fresh database is made on it."""
    articles, n_queries = (400, 80) if smoke else (10_000, 400)
    corpus = Corpus()
    url = await _fresh(server_url)
    load_rate = await _load(url, corpus, articles)
    queries = corpus.queries(n_queries)
    ours, base, found, plan = await _sql_latencies(url, queries)
    http = await _http_latencies(url, queries[: n_queries // 2])
    conn = await asyncpg.connect(db.with_database(server_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()
    gin = "kb_articles_search" in plan
    how = (
        f"{articles:,} published articles, {len(queries):,} queries (frequent, mid, rare word, "
        f"two words; {found:,} with hits), page of {PAGE}, one connection; GIN index used: "
        f"{'yes' if gin else 'no'}; loaded at {load_rate:,.0f} articles/s through the handlers"
    )
    baseline_name = "ILIKE '%word%' on title or body, same rows, same page"
    return [
        Figure(
            name=f"knowledge-base search over {articles:,} articles, p50",
            value=percentile(ours, 50),
            unit="ms",
            baseline_name=baseline_name,
            baseline=percentile(base, 50),
            goal="< 1x ILIKE",
            samples=ours,
            baseline_samples=base,
            notes=how + "; ours ranks (ts_rank_cd) and builds snippets (ts_headline)",
        ),
        Figure(
            name=f"knowledge-base search over {articles:,} articles, p99",
            value=percentile(ours, 99),
            unit="ms",
            baseline_name=baseline_name,
            baseline=percentile(base, 99),
            goal="<= 50 ms",
            notes=how,
        ),
        Figure(
            name=f"GET /kb/search over {articles:,} articles, p50",
            value=percentile(http, 50),
            unit="ms",
            notes=f"{len(http):,} requests in-process (ASGI): JWT, validation, query, JSON",
            samples=http,
        ),
        Figure(
            name=f"GET /kb/search over {articles:,} articles, p99",
            value=percentile(http, 99),
            unit="ms",
            goal="<= 100 ms",
            notes=f"{len(http):,} requests in-process (ASGI): JWT, validation, query, JSON",
        ),
    ]


if __name__ == "__main__":  # python -m bench.kb_bench [--smoke]: this benchmark alone
    import asyncio
    import sys
    import tempfile
    from pathlib import Path

    from crm_runtime.embedded import EmbeddedPostgres

    async def _main(smoke: bool) -> None:
        with tempfile.TemporaryDirectory(prefix="crm-kb-bench-") as tmp:
            pg = EmbeddedPostgres(Path(tmp) / "pg", keep=False).start()
            try:
                started = time.monotonic()
                for f in await run(pg.url, smoke=smoke):
                    base = f" vs {f.baseline:,.2f} ({f.ratio:.2f}x)" if f.baseline else ""
                    print(f"{f.name}: {f.value:,.2f} {f.unit}{base}  [{f.notes}]")
                print(f"{time.monotonic() - started:.1f} s")
            finally:
                pg.stop()

    asyncio.run(_main("--smoke" in sys.argv))
