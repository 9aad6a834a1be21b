"""The CRUD baseline of the command-API benchmark: a plain FastAPI + asyncpg endpoint that
validates a lead with pydantic and INSERTs one row — no auth, no events, no idempotency, no
read model. Served the way our services are (uvicorn, one worker, uvloop, httptools).

    python -m bench.crud_app <postgres-url> <port>
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, Field


class LeadIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    source: str = "manual"


def create(url: str) -> FastAPI:
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(url, min_size=10, max_size=10)
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS crud_leads (id uuid PRIMARY KEY, name text NOT NULL,"
                " source text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            )
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/leads", status_code=201)
    async def create_lead(body: LeadIn) -> dict[str, str]:
        assert pool is not None
        lead_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO crud_leads (id, name, source) VALUES ($1, $2, $3)",
            lead_id,
            body.name,
            body.source,
        )
        return {"id": str(lead_id), "name": body.name, "source": body.source}

    return app


if __name__ == "__main__":
    uvicorn.run(
        create(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
