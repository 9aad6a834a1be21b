"""Structured JSON logs carrying the request's correlation id. Never log personal data."""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


# PostgreSQL's errors and asyncpg's quote values: the DETAIL of a constraint violation ("Failing
# row contains (..., ada@example.com)", "Key (email)=(...)"), the message of a bad input
# ('invalid input syntax for type uuid: "ada@..."') or argument. A logged traceback names such
# an error's type and the database object, never its text; DETAIL/HINT lines another exception
# carried along are withheld too.
_DB_DETAIL = re.compile(r"^(DETAIL|HINT):  .*$", re.MULTILINE)
_DB_FACTS = ("sqlstate", "schema_name", "table_name", "column_name", "constraint_name")


_VALIDATION_MODULES = frozenset({"pydantic", "pydantic_core", "fastapi"})


def _is_db(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "asyncpg"


def _exception_line(exc: BaseException, withhold: bool) -> str:
    kind = type(exc)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if withhold or _is_db(exc):
        facts = " ".join(f"{k}={getattr(exc, k)}" for k in _DB_FACTS if getattr(exc, k, None))
        return f"{name}: (text withheld: it may quote values) {facts}".rstrip() + "\n"
    errors = getattr(exc, "errors", None)
    if kind.__module__.split(".")[0] in _VALIDATION_MODULES and callable(errors):
        # its text quotes the input: pydantic's errors, and FastAPI's request and response
        # validation errors (a response that fails its model, with the record's values)
        try:
            items = errors(include_input=False, include_url=False)
        except TypeError:  # FastAPI's: a list of pydantic's error dicts, inputs included
            items = errors()
        found = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in items
        )
        return f"{name}: {found}\n"
    return "".join(traceback.format_exception_only(exc))


def format_exception(
    exc: BaseException, seen: set[int] | None = None, withhold: bool = False
) -> str:
    """A traceback as Python prints it (causes and contexts first, groups' members after),
    without the texts that may quote values: a database error's, and that of whatever caused
    one (asyncpg raises DataError from the ValueError that names the argument)."""
    seen = set() if seen is None else seen
    seen.add(id(exc))
    below = withhold or _is_db(exc)  # a cause or context of a database error
    out = ""
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        out += format_exception(exc.__cause__, seen, below)
        out += "\nThe above exception was the direct cause of the following exception:\n\n"
    elif (
        exc.__context__ is not None
        and not exc.__suppress_context__
        and id(exc.__context__) not in seen
    ):
        out += format_exception(exc.__context__, seen, below)
        out += "\nDuring handling of the above exception, another exception occurred:\n\n"
    if exc.__traceback__ is not None:
        out += "Traceback (most recent call last):\n" + "".join(
            traceback.format_tb(exc.__traceback__)
        )
    out += _exception_line(exc, withhold)
    members = getattr(exc, "exceptions", None)  # an ExceptionGroup's
    if isinstance(exc, BaseExceptionGroup) and isinstance(members, tuple):
        for i, member in enumerate(members, 1):
            inner = format_exception(member, seen, withhold).rstrip("\n")
            out += f"  +---- {i} of {len(members)} ----\n"
            out += "".join(f"  | {line}\n" for line in inner.splitlines())
    return out


class JsonFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:
        """The traceback without what a database error may quote (personal data among it)."""
        exc = ei[1] if isinstance(ei, tuple) and len(ei) == 3 else None
        text = (
            format_exception(exc) if isinstance(exc, BaseException) else super().formatException(ei)
        )
        return _DB_DETAIL.sub(r"\1:  (withheld from the log: it may quote values)", text).rstrip()

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
