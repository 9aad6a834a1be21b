"""Structured JSON logs carrying the request's correlation id. Never log personal data."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


# PostgreSQL's error details quote row values ("Failing row contains (..., ada@example.com)",
# "Key (email)=(ada@example.com) already exists"), and asyncpg puts them in the exception's text.
_DB_DETAIL = re.compile(r"^(DETAIL|HINT):  .*$", re.MULTILINE)
DB_DETAIL_WITHHELD = r"\1:  (withheld from the log: it may quote row values)"


class JsonFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        """The traceback, without PostgreSQL's DETAIL/HINT lines (they may hold personal data)."""
        return _DB_DETAIL.sub(DB_DETAIL_WITHHELD, super().formatException(ei))

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid:
            doc["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints full URLs (a query string can hold an e-mail): ours omits them.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("aiokafka", "kafka", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
