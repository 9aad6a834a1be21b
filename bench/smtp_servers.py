"""The SMTP servers beside the service in the inbound-mail benchmark, each a process of its own,
served the way the service desk serves its endpoint (aiosmtpd's SMTP protocol on uvloop):

    python -m bench.smtp_servers baseline <postgres-url> <port>
        the baseline: parses each message with the standard library e-mail parser (sender,
        subject, Message-ID, plain-text body) and INSERTs one row with asyncpg (pool of 10,
        as the service's) — no customer, no events, no read model, no routing, no mail out;
    python -m bench.smtp_servers sink <port>
        accepts and discards every message: where the service's acknowledgements go.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import uuid
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from typing import Any

import asyncpg
import uvloop

_PARSER = BytesParser(_class=EmailMessage, policy=policy.default)
TABLE = "inbound_plain"


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 Message accepted for delivery"


class Plain:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = _PARSER.parsebytes(bytes(envelope.original_content or b""))
        _, sender = parseaddr(str(msg.get("From", "")))
        part = msg.get_body(preferencelist=("plain",))
        body = part.get_content() if part is not None else ""
        await self.pool.execute(
            f"INSERT INTO {TABLE} (id, message_id, sender, subject, body)"
            " VALUES ($1, $2, $3, $4, $5)",
            uuid.uuid4(),
            str(msg.get("Message-ID", "")),
            sender.lower(),
            str(msg.get("Subject", "")),
            body,
        )
        return "250 Message accepted for delivery"


async def serve(handler: Any, port: int) -> None:
    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench", ident="bench", loop=loop), "127.0.0.1", port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


async def baseline(url: str, port: int) -> None:
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10)
    await pool.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, message_id text NOT NULL,"
        " sender text NOT NULL, subject text NOT NULL, body text NOT NULL,"
        " received_at timestamptz NOT NULL DEFAULT now())"
    )
    try:
        await serve(Plain(pool), port)
    finally:
        await pool.close()


def main(argv: list[str]) -> int:
    if argv[:1] == ["baseline"] and len(argv) == 3:
        uvloop.run(baseline(argv[1], int(argv[2])))
    elif argv[:1] == ["sink"] and len(argv) == 2:
        uvloop.run(serve(Sink(), int(argv[1])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
