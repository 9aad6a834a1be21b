"""Bulk CSV import of contacts and leads: streamed, validated as the API validates, batch-appended.

- Rows are read one at a time, so memory stays flat whatever the size of the file. Each row is
  validated with the API's own request model (``ContactCreate``/``LeadCreate``) and, for
  contacts, the custom field definitions, so a row is accepted exactly when POST /contacts or
  POST /leads would accept it. It becomes the events the API records: ``contact.created``, or
  ``lead.captured`` with source ``import`` (and ``lead.assigned`` when the assignment rules route
  a lead nobody owns), with one customer id minted per record.
- Good rows are written in batches, one transaction each: the events with one COPY
  (``EventStore.append_new_streams``), the read model with one COPY, the duplicate guard with one
  set-based statement. Parsing runs ahead of the writers (two connections by default), so Python
  and PostgreSQL work at the same time. Committed events reach Kafka through the outbox relay,
  like any other.
- Duplicates are caught within the file and against the database, by the API's rules: a contact
  by any of its normalised e-mails (the ``contact_emails`` guard), a lead by an open lead or a
  contact with its e-mail (under the API's per-address lock). A record without an e-mail is
  keyed by its whole normalised row (``import_keys``), so that importing the same file again
  imports nothing new. Guards are taken inside the batch's transaction, so a concurrent import
  or API call cannot slip a duplicate in; a batch that still fails on a conflict is retried row
  by row, and the other rows are kept.
- Line numbers are the ones a person sees in an editor: the header is line 1, and a row with a
  quoted line break is reported at its first line.

Nothing here logs row content: names and e-mails are personal data.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import csv
import hashlib
import itertools
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import email_validator
from pydantic import BaseModel, EmailStr, TypeAdapter, ValidationError, create_model

from crm_events import EventPayload, registry
from crm_events.schemas.sales import ContactCreated, LeadAssigned, LeadCaptured
from crm_runtime.db import Conn
from crm_runtime.errors import ConcurrencyError, InvalidInput
from crm_runtime.eventstore import EventStore, Metadata, NewEvent, StreamAppend
from crm_sales.adapters import work_view
from crm_sales.application.directory import custom_fields
from crm_sales.application.work import Router
from crm_sales.domain.assignment import route
from crm_sales.domain.contact import normalise_email
from crm_sales.domain.custom_fields import CustomFields
from crm_sales.entrypoints.api.schemas import ContactCreate, LeadCreate

Kind = Literal["contacts", "leads"]

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000
DEFAULT_MAX_ISSUES = 10_000
DEFAULT_WRITERS = 2  # connections writing batches at the same time
MAX_WRITERS = 8
_YIELD_EVERY = 16  # rows parsed between two chances for the writers to run
_RESOLVE_DEPTH = 10  # merge pointers followed, as directory._resolve does
_LEAD_LOCK = 7  # the seed of the API's per-address lock (LeadHandlers.check_duplicate)


def _type_of(model: type[EventPayload]) -> tuple[str, int]:
    """The registered type name and version of a payload model (what Repository.save records)."""
    for spec in registry.specs():
        if spec.model is model:
            return spec.type, spec.version
    raise LookupError(model.__name__)


_CONTACT_CREATED = _type_of(ContactCreated)
_LEAD_CAPTURED = _type_of(LeadCaptured)
_LEAD_ASSIGNED = _type_of(LeadAssigned)
# Exceptions that mean "another transaction got in the way", not "this data is wrong".
_CONFLICTS = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    ConcurrencyError,
)


# --- the report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """A row that was not imported: its line, the column at fault (empty: the whole row), why."""

    line: int
    field: str
    reason: str


@dataclass(frozen=True)
class Duplicate:
    """A row that was not imported because the record exists already."""

    line: int
    email: str | None  # the e-mail that matched; None: an identical row without an e-mail
    existing_id: str
    existing: str  # its path: /contacts/<id> or /leads/<id>
    first_line: int | None = None  # the line of this file it was imported from, if it was


@dataclass
class ImportReport:
    kind: Kind
    rows: int = 0  # data rows read (blank lines are skipped)
    imported: int = 0
    rejected: int = 0  # rows with errors
    duplicated: int = 0  # rows that were duplicates
    errors: list[RowError] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    issues_truncated: bool = False  # more errors/duplicates than max_issues were found
    aborted: bool = False  # the header was unusable: no row was read
    seconds: float = 0.0
    max_issues: int = DEFAULT_MAX_ISSUES

    @property
    def done(self) -> int:
        """Rows fully handled so far: imported, rejected or found to be duplicates."""
        return self.imported + self.rejected + self.duplicated

    @property
    def complete(self) -> bool:
        """Every row was imported."""
        return not self.aborted and self.imported == self.rows

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def add_error(self, error: RowError) -> None:
        if len(self.errors) + len(self.duplicates) < self.max_issues:
            self.errors.append(error)
        else:
            self.issues_truncated = True

    def add_duplicate(self, duplicate: Duplicate) -> None:
        self.duplicated += 1
        if len(self.errors) + len(self.duplicates) < self.max_issues:
            self.duplicates.append(duplicate)
        else:
            self.issues_truncated = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": self.rows,
            "imported": self.imported,
            "rejected": self.rejected,
            "duplicated": self.duplicated,
            "complete": self.complete,
            "aborted": self.aborted,
            "errors": [e.__dict__ for e in self.errors],
            "duplicates": [d.__dict__ for d in self.duplicates],
            "issues_truncated": self.issues_truncated,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }


Progress = Callable[[ImportReport], None]


# --- reading ----------------------------------------------------------------------------------


class _Lines:
    """Decodes a binary line stream as UTF-8, one line at a time; remembers undecodable lines."""

    def __init__(self, source: Iterable[bytes]) -> None:
        self.source = source
        self.number = 0
        self.bad: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for raw in self.source:
            self.number += 1
            if self.number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # the byte-order mark spreadsheets write
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad.add(self.number)
                yield raw.decode("utf-8", errors="replace")


_QUOTED = re.compile(r'"[^"]*"')
DELIMITERS = (",", ";", "\t")


def delimiter_of(header: str) -> str:
    """The cell separator a file uses, from its header line: a comma, or the semicolon that
    spreadsheets write where the comma is the decimal separator, or a tab - whichever the header
    has most of outside quotes (a comma when it has none: one column)."""
    bare = _QUOTED.sub("", header)
    counts = {d: bare.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])  # the first of equals: the comma
    return best if counts[best] else ","


def _reader(lines: Iterable[str]) -> Any:
    """A csv reader over ``lines`` with the separator of their first line."""
    it = iter(lines)
    first = next(it, None)
    if first is None:
        return csv.reader(iter(()))
    return csv.reader(itertools.chain([first], it), delimiter=delimiter_of(first))


_SEPARATORS = re.compile(r"[\s-]+")


def _column_name(header: str) -> str:
    return _SEPARATORS.sub("_", header.strip().lower())


def _split(cell: str) -> list[str]:
    """A ``;``-separated list cell (already stripped) as its non-empty items."""
    if ";" not in cell:
        return [cell]
    return [p for p in (part.strip() for part in cell.split(";")) if p]


def _uuid4() -> str:
    """``str(uuid.uuid4())``, as the API mints ids, without building a UUID object."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- e-mail syntax ----------------------------------------------------------------------------

# RFC 5322 atext: a local part of these, dot-separated, is valid as it is (email-validator's
# DOT_ATOM_TEXT), so for such an address only the domain decides, and a domain's result is the
# same every time it is checked.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_SIMPLE_ADDRESS = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@([A-Za-z0-9.-]+)\Z")
_EMAIL_MAX = 254  # octets, as email-validator checks the address as given and normalised
_EMAIL_STR: TypeAdapter[str] = TypeAdapter(EmailStr)
_DOMAINS_KEPT = 10_000


class _EmailCheck:
    """pydantic's ``EmailStr`` (email-validator), as the API checks e-mails, made cheap for files.

    In a file the same few domains come back on every row, and validating the domain is most of
    the cost. A plain ASCII address on a domain seen valid before is answered from the domain's
    remembered result, with the same length checks; anything else is validated in full. The
    outcome is the same either way (a test compares them).
    """

    def __init__(self) -> None:
        self.domains: dict[str, tuple[str, str]] = {}  # as written -> (normalised, IDNA ASCII)

    def __call__(self, value: str) -> tuple[str | None, str]:
        """``(normalised address, "")``, or ``(None, reason)`` if it is not a valid address."""
        simple = _SIMPLE_ADDRESS.match(value)
        if simple is not None:
            local, domain = simple.groups()
            known = self.domains.get(domain)
            if known is not None:
                address = f"{local}@{known[0]}"
                longest = max(len(value), len(address.encode()), len(local) + 1 + len(known[1]))
                if longest <= _EMAIL_MAX:
                    return address, ""
        try:
            address = _EMAIL_STR.validate_python(value)
        except ValidationError as exc:
            return None, str(exc.errors()[0]["msg"])
        if simple is not None and len(self.domains) < _DOMAINS_KEPT:
            parts = email_validator.validate_email(value, check_deliverability=False)
            self.domains[simple.group(2)] = (parts.domain, parts.ascii_domain)
        return address, ""


def _with_plain_emails(model: type[BaseModel], name: str, annotation: Any) -> type[BaseModel]:
    """``model`` with field ``name`` taking e-mails already checked by _EmailCheck (as str);
    every other rule, the field's own constraints included, stays the API's."""
    info = copy.copy(model.model_fields[name])
    info.annotation = annotation
    fields: dict[str, Any] = {name: (annotation, info)}
    row: type[BaseModel] = create_model(f"_{model.__name__}Row", __base__=model, **fields)
    return row


_ContactRow = _with_plain_emails(ContactCreate, "emails", list[str] | None)
_LeadRow = _with_plain_emails(LeadCreate, "email", str | None)


# --- custom fields: typed by their definitions ------------------------------------------------

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})


def _typed(kind: str, cell: str) -> Any:
    """A CSV cell as the JSON value a custom field of type ``kind`` holds (else the text)."""
    if kind == "integer":
        with contextlib.suppress(ValueError):
            return int(cell)
    elif kind == "number":
        with contextlib.suppress(ValueError):
            return int(cell) if re.fullmatch(r"[+-]?\d+", cell) else float(cell)
    elif kind == "boolean":
        low = cell.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
    return cell


def _reasons(exc: InvalidInput) -> list[tuple[str, str]]:
    """(field, reason) of each error an InvalidInput names."""
    errors = exc.extra.get("errors")
    if not isinstance(errors, list):
        return [("", exc.detail)]
    return [(str(e.get("field", "")), str(e.get("reason", ""))) for e in errors]


# --- what a row turns into --------------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    line: int
    id: str
    keys: list[str]  # what import_keys (or contact_emails) holds for it
    email: str | None  # the (first) e-mail
    events: list[NewEvent]
    view: list[Any]  # its read-model row, without the two timestamps
    route: tuple[str | None, str | None] = (None, None)  # a lead's region and product line


# (matching e-mail or None, existing id, its path)
_Match = tuple[str | None, str, str]


@dataclass(frozen=True)
class _Column:
    index: int
    name: str  # as normalised from the header
    target: str  # field of the request model
    shape: Literal["text", "list", "address", "custom"]
    sub: str = ""


class _Spec:
    """What differs between contacts and leads: columns, validation, tables and guards."""

    kind: str  # import_keys.kind, and the stream type
    path: str  # /contacts or /leads
    required: str
    view_table: str
    view_columns: list[str]
    text_columns: tuple[str, ...]
    list_columns: dict[str, str] = {}  # header name -> model field
    aliases: dict[str, str] = {}
    address_parts: tuple[str, ...] = ()
    custom: bool = False

    def __init__(self, owner_id: str | None, team_id: str | None) -> None:
        self.owner_id = owner_id
        self.team_id = team_id
        self.columns: list[_Column] = []
        self.width = 0
        self.source_of: dict[str, str] = {}  # model field -> header column that fills it
        self.plan: list[tuple[int, str, str, str]] = []  # the columns, unpacked for speed
        self.email = _EmailCheck()

    async def load(self, conn: Conn, store: EventStore) -> None:
        """Read what validation needs from the database, once per import."""

    def known(self) -> list[str]:
        names = [*self.text_columns, *self.list_columns]
        names += [f"address.{p}" for p in self.address_parts]
        if self.custom:
            names.append("custom.<key>")
        return names

    def read_header(self, cells: list[str]) -> list[RowError]:
        """Map the header's columns to fields; errors if a column is unknown or missing."""
        errors: list[RowError] = []
        unknown: list[str] = []
        seen: dict[str, str] = {}
        for index, raw in enumerate(cells):
            name = _column_name(raw)
            if not name:
                if any(c.strip() for c in cells[index:]):
                    errors.append(RowError(1, f"column {index + 1}", "the column has no name"))
                continue
            column = self._column(index, self.aliases.get(name, name))
            if column is None:
                unknown.append(raw.strip())
                continue
            key = column.target + ("." + column.sub if column.sub else "")
            if key in seen:
                errors.append(
                    RowError(1, name, f"the column appears twice (also as {seen[key]!r})")
                )
                continue
            seen[key] = name
            self.columns.append(column)
            self.source_of.setdefault(column.target, name)
            self.width = index + 1
        if unknown:
            errors.insert(
                0,
                RowError(
                    1,
                    "header",
                    "unknown column(s): "
                    + ", ".join(repr(u) for u in unknown)
                    + "; the columns are: "
                    + ", ".join(self.known()),
                ),
            )
        self.plan = [(c.index, c.target, c.shape, c.sub) for c in self.columns]
        if self.required not in self.source_of and not errors:
            errors.append(RowError(1, self.required, f"the header needs a {self.required} column"))
        return errors

    def _column(self, index: int, name: str) -> _Column | None:
        if name in self.text_columns:
            return _Column(index, name, name, "text")
        if name in self.list_columns:
            return _Column(index, name, self.list_columns[name], "list")
        prefix, _, sub = name.partition(".")
        if prefix == "address" and sub in self.address_parts:
            return _Column(index, name, "address", "address", sub)
        if prefix == "custom" and self.custom and sub:
            return _Column(index, name, "custom_fields", "custom", sub)
        return None

    def values(self, cells: list[str]) -> dict[str, Any]:
        """The row as the request body it stands for; empty cells are left out."""
        data: dict[str, Any] = {}
        width = len(cells)
        for index, target, shape, sub in self.plan:
            if index >= width:
                continue
            cell = cells[index].strip()
            if not cell:
                continue
            if shape == "text":
                data[target] = cell
            elif shape == "list":
                items = _split(cell)
                if items:
                    data[target] = items
            elif shape == "address":
                data.setdefault(target, {})[sub] = cell
            else:
                data.setdefault(target, {})[sub] = self.typed(sub, cell)
        return data

    def typed(self, key: str, cell: str) -> Any:
        return cell

    def errors(self, line: int, exc: ValidationError, data: dict[str, Any]) -> list[RowError]:
        out = []
        for e in exc.errors(include_url=False):
            loc = e["loc"]
            head = str(loc[0]) if loc else ""
            reason = "required; the cell is empty" if e["type"] == "missing" else e["msg"]
            if head in ("address", "custom_fields") and len(loc) > 1:
                name = ("address." if head == "address" else "custom.") + str(loc[1])
            else:
                name = self.source_of.get(head, head)
                items = data.get(head)
                listed = isinstance(items, list) and len(items) > 1
                if listed and len(loc) > 1 and isinstance(loc[1], int):
                    reason = f"value {loc[1] + 1} of {len(data[head])}: {reason}"
            out.append(RowError(line, name, reason))
        return out

    def check_emails(self, line: int, data: dict[str, Any], name: str) -> list[RowError]:
        """Validate and normalise the e-mail(s) in ``data[name]`` in place."""
        value = data.get(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        errors, checked = [], []
        for i, item in enumerate(items):
            address, reason = self.email(item)
            if address is None:
                where = f"value {i + 1} of {len(items)}: " if len(items) > 1 else ""
                errors.append(RowError(line, self.source_of.get(name, name), where + reason))
            checked.append(address)
        if not errors:
            data[name] = checked if isinstance(value, list) else checked[0]
        return errors

    def prepare(self, line: int, data: dict[str, Any]) -> _Record | list[RowError]:
        raise NotImplementedError

    # --- the database side, inside the batch's transaction ---

    async def existing(self, conn: Conn, records: list[_Record]) -> dict[str, _Match]:
        """Records found to exist before any key is claimed: record id -> match."""
        return {}

    async def claim(self, conn: Conn, records: list[_Record]) -> set[tuple[str, str]]:
        """Claim the records' keys; returns the (key, id) pairs that are now theirs."""
        return await _claim_import_keys(conn, self.kind, [r for r in records if r.keys])

    async def release(self, conn: Conn, ids: list[str]) -> None:
        await conn.execute(
            "DELETE FROM import_keys WHERE kind = $1 AND record_id = ANY($2::text[])",
            self.kind,
            ids,
        )

    async def owners(self, conn: Conn, keys: list[str]) -> dict[str, str]:
        """Who holds each of these keys now."""
        rows = await conn.fetch(
            "SELECT key, record_id FROM import_keys WHERE kind = $1 AND key = ANY($2::text[])",
            self.kind,
            keys,
        )
        return {r["key"]: r["record_id"] for r in rows}

    def label(self, record: _Record, key: str) -> str | None:
        """What to show for the key that matched (an e-mail, or None for a whole-row key)."""
        return None if key.startswith("r:") else key

    async def finish(self, conn: Conn, accepted: list[_Record]) -> None:
        """Last step before the records are written (leads: routing)."""


async def _claim_import_keys(
    conn: Conn, kind: str, records: Sequence[_Record]
) -> set[tuple[str, str]]:
    if not records:
        return set()
    # Sorted, so that two imports claim in the same order and cannot deadlock; for one key the
    # earlier line wins.
    pairs = sorted((k, r.line, r.id) for r in records for k in r.keys)
    rows = await conn.fetch(
        """
        INSERT INTO import_keys (kind, key, record_id)
        SELECT $1, u.key, u.id FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(key, id, o)
        ORDER BY u.o
        ON CONFLICT (kind, key) DO NOTHING
        RETURNING key, record_id
        """,
        kind,
        [p[0] for p in pairs],
        [p[2] for p in pairs],
    )
    return {(r["key"], r["record_id"]) for r in rows}


# Follow merge pointers (contacts.merged_into) from each key's holder to the record standing.
_RESOLVE = f"""
WITH RECURSIVE chain(key, id, depth) AS (
    {{base}}
  UNION ALL
    SELECT chain.key, c.merged_into, chain.depth + 1
    FROM chain JOIN contacts c ON c.contact_id = chain.id
    WHERE c.merged_into IS NOT NULL AND chain.depth < {_RESOLVE_DEPTH}
)
SELECT DISTINCT ON (key) key, id FROM chain ORDER BY key, depth DESC
"""
_BY_EMAIL = "SELECT email, contact_id, 0 FROM contact_emails WHERE email = ANY($1::text[])"


async def _contacts_by_email(conn: Conn, emails: list[str]) -> dict[str, str]:
    """The contact standing today behind each of these e-mails (merges followed)."""
    rows = await conn.fetch(_RESOLVE.format(base=_BY_EMAIL), emails)
    return {r["key"]: r["id"] for r in rows}


class _Contacts(_Spec):
    kind = "contact"
    path = "/contacts"
    required = "last_name"
    view_table = "contacts"
    view_columns = [
        "contact_id",
        "customer_id",
        "display_name",
        "email",
        "account_id",
        "owner_id",
        "team_id",
        "tags",
        "merged_into",
        "details",
        "version",
        "created_at",
        "updated_at",
    ]
    text_columns = ("first_name", "last_name", "title", "account_id", "region", "industry")
    list_columns = {
        "email": "emails",
        "emails": "emails",
        "phone": "phones",
        "phones": "phones",
        "tags": "tags",
        "tag": "tags",
        "social_profiles": "social_profiles",
        "social_profile": "social_profiles",
    }
    aliases = {"e_mail": "email", "e_mails": "emails"}
    address_parts = ("street", "city", "region", "postal_code", "country")
    custom = True

    def __init__(self, owner_id: str | None, team_id: str | None) -> None:
        super().__init__(owner_id, team_id)
        self.definitions = CustomFields("contact")

    async def load(self, conn: Conn, store: EventStore) -> None:
        self.definitions = await custom_fields(store, conn, "contact")

    def read_header(self, cells: list[str]) -> list[RowError]:
        errors = super().read_header(cells)
        for c in self.columns:
            if c.shape != "custom":
                continue
            try:  # the API's rules for the key, then its definition: once, not per row
                ContactCreate.model_validate({"last_name": "x", "custom_fields": {c.sub: "x"}})
                if c.sub not in self.definitions.fields:
                    self.definitions.check({c.sub: None})
            except ValidationError as exc:
                errors.append(RowError(1, c.name, exc.errors()[0]["msg"]))
            except InvalidInput as exc:
                errors += [RowError(1, c.name, reason) for _, reason in _reasons(exc)]
        return errors

    def typed(self, key: str, cell: str) -> Any:
        definition = self.definitions.fields.get(key)
        return _typed(definition.type, cell) if definition is not None else cell

    def prepare(self, line: int, data: dict[str, Any]) -> _Record | list[RowError]:
        errors = self.check_emails(line, data, "emails")
        try:
            body = _ContactRow.model_validate(data)
        except ValidationError as exc:
            errors += self.errors(line, exc, data)
        try:  # as ContactHandlers.create: the values against the custom field definitions
            self.definitions.check(data.get("custom_fields"))
        except InvalidInput as exc:
            for where, reason in _reasons(exc):
                name = "custom." + where.removeprefix("custom_fields.")
                errors.append(RowError(line, name, reason))
        if errors:
            return errors
        # What POST /contacts stores: the body as ContactDetails, then Contact.create's cleaning.
        details = body.model_dump(mode="json", exclude={"owner_id"})
        emails = list(dict.fromkeys(normalise_email(e) for e in details["emails"] or []))
        details["emails"] = emails
        contact_id, customer_id = _uuid4(), _uuid4()
        payload = {
            "contact_id": contact_id,
            "customer_id": customer_id,
            "details": details,
            "owner_id": self.owner_id,
            "team_id": self.team_id,
            "lead_id": None,
        }
        keys = emails or ["r:" + _hash(json.dumps(details, sort_keys=True))]
        first, last = details["first_name"], details["last_name"]
        view = [
            contact_id,
            customer_id,
            " ".join(p for p in (first, last) if p),
            emails[0] if emails else None,
            details["account_id"],
            self.owner_id,
            self.team_id,
            list(details["tags"] or []),
            None,
            json.dumps(details),
            1,
        ]
        type_, version = _CONTACT_CREATED
        event = NewEvent(type_, payload, version, subject=customer_id)
        return _Record(line, contact_id, keys, emails[0] if emails else None, [event], view)

    async def claim(self, conn: Conn, records: list[_Record]) -> set[tuple[str, str]]:
        by_email = [r for r in records if r.email is not None]
        claimed = await _claim_import_keys(conn, self.kind, [r for r in records if r.email is None])
        if by_email:
            pairs = sorted((k, r.line, r.id) for r in by_email for k in r.keys)
            rows = await conn.fetch(
                """
                INSERT INTO contact_emails (email, contact_id)
                SELECT u.email, u.id
                FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(email, id, o)
                ORDER BY u.o
                ON CONFLICT (email) DO NOTHING
                RETURNING email, contact_id
                """,
                [p[0] for p in pairs],
                [p[2] for p in pairs],
            )
            claimed.update((r["email"], r["contact_id"]) for r in rows)
        return claimed

    async def release(self, conn: Conn, ids: list[str]) -> None:
        await conn.execute("DELETE FROM contact_emails WHERE contact_id = ANY($1::text[])", ids)
        await super().release(conn, ids)

    async def owners(self, conn: Conn, keys: list[str]) -> dict[str, str]:
        emails = [k for k in keys if not k.startswith("r:")]
        rows = [k for k in keys if k.startswith("r:")]
        found = await _contacts_by_email(conn, emails) if emails else {}
        if rows:
            base = (
                "SELECT key, record_id, 0 FROM import_keys"
                " WHERE kind = 'contact' AND key = ANY($1::text[])"
            )
            found.update(
                (r["key"], r["id"]) for r in await conn.fetch(_RESOLVE.format(base=base), rows)
            )
        return found


_LEAD_OWNER, _LEAD_VERSION, _LEAD_TEAM = 8, 9, 10  # places in a lead's view row


class _Leads(_Spec):
    kind = "lead"
    path = "/leads"
    required = "name"
    view_table = "leads"
    view_columns = [
        "lead_id",
        "customer_id",
        "name",
        "email",
        "company",
        "source",
        "status",
        "score",
        "owner_id",
        "version",
        "team_id",
        "region",
        "product_line",
        "created_at",
        "updated_at",
    ]
    text_columns = ("name", "email", "phone", "company", "source_detail", "region", "product_line")
    aliases = {"e_mail": "email"}

    def __init__(self, owner_id: str | None, team_id: str | None, store: EventStore) -> None:
        super().__init__(owner_id, team_id)
        self.router = Router(store)

    def prepare(self, line: int, data: dict[str, Any]) -> _Record | list[RowError]:
        data["source"] = "import"
        errors = self.check_emails(line, data, "email")
        try:
            body = _LeadRow.model_validate(data)
        except ValidationError as exc:
            errors += self.errors(line, exc, data)
        if errors:
            return errors
        # What POST /leads and Lead.capture store.
        v = body.model_dump(mode="json")
        email = str(v["email"]).strip().lower() if v["email"] else None
        lead_id, customer_id = _uuid4(), _uuid4()
        payload = {
            "lead_id": lead_id,
            "customer_id": customer_id,
            "name": v["name"],
            "email": email,
            "phone": v["phone"],
            "company": v["company"],
            "source": "import",
            "source_detail": v["source_detail"],
            "owner_id": self.owner_id,
            "team_id": self.team_id,
            "region": v["region"],
            "product_line": v["product_line"],
            "attribution": None,
        }
        # With an e-mail, the API's rule finds duplicates; without, the whole row is the key.
        row = [v[k] for k in ("name", "phone", "company", "source_detail", "region")]
        keys = [] if email else ["r:" + _hash(json.dumps([*row, v["product_line"]]))]
        view = [lead_id, customer_id, v["name"], email, v["company"], "import", "new", None]
        view += [self.owner_id, 1, self.team_id, v["region"], v["product_line"]]
        type_, version = _LEAD_CAPTURED
        event = NewEvent(type_, payload, version, subject=customer_id)
        record = _Record(line, lead_id, keys, email, [event], view)
        record.route = (v["region"], v["product_line"])
        return record

    async def existing(self, conn: Conn, records: list[_Record]) -> dict[str, _Match]:
        """As POST /leads: an open lead or a contact with the e-mail exists; then this batch's
        own earlier rows. Under the API's per-address lock, taken in one order."""
        emails = sorted({r.email for r in records if r.email is not None})
        if not emails:
            return {}
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM"
            " (SELECT DISTINCT hashtextextended(e, $2) AS k FROM unnest($1::text[]) AS e"
            "  ORDER BY 1) AS locks",
            emails,
            _LEAD_LOCK,
        )
        rows = await conn.fetch(
            "SELECT DISTINCT ON (email) email, lead_id FROM leads"
            " WHERE email = ANY($1::text[]) AND status IN ('new', 'qualified')"
            " ORDER BY email, created_at",
            emails,
        )
        holders: dict[str, tuple[str, str]] = {
            r["email"]: (r["lead_id"], f"/leads/{r['lead_id']}") for r in rows
        }
        rest = [e for e in emails if e not in holders]
        if rest:
            for email, contact_id in (await _contacts_by_email(conn, rest)).items():
                holders[email] = (contact_id, f"/contacts/{contact_id}")
        found: dict[str, _Match] = {}
        for r in records:  # in line order: the first of the batch takes an address
            if r.email is None:
                continue
            holder = holders.get(r.email)
            if holder is None:
                holders[r.email] = (r.id, f"/leads/{r.id}")
            else:
                found[r.id] = (r.email, *holder)
        return found

    def label(self, record: _Record, key: str) -> str | None:
        return None

    async def finish(self, conn: Conn, accepted: list[_Record]) -> None:
        """As POST /leads: a lead nobody owns is routed by the assignment rules, if any."""
        if self.owner_id is not None or not accepted:
            return
        rules = await self.router.current_rules(conn)
        if not rules.rules:
            return
        reps = await work_view.candidates(conn)
        load = await work_view.open_work(conn)
        last = await work_view.last_chosen(conn)
        chosen: dict[str, str] = {}
        for r in accepted:  # in line order, as one capture after the other
            del r.events[1:]  # a batch retried row by row is routed again
            r.view[_LEAD_OWNER], r.view[_LEAD_TEAM] = self.owner_id, self.team_id
            r.view[_LEAD_VERSION] = 1
            region, product_line = r.route
            decision = route(rules.rules, "lead", region, product_line, reps, load, last)
            if decision is None:
                continue
            last[decision.rule_id] = chosen[decision.rule_id] = decision.owner_id
            load[decision.owner_id] = load.get(decision.owner_id, 0) + 1
            # Lead.assign records a change: the lead had no owner, the decision names one.
            assigned = LeadAssigned(
                lead_id=r.id,
                owner_id=decision.owner_id,
                team_id=decision.team_id,
                rule_id=decision.rule_id,
                strategy=decision.strategy,
            )
            type_, version = _LEAD_ASSIGNED
            data = assigned.model_dump(mode="json")
            r.events.append(NewEvent(type_, data, version, subject=r.events[0].subject))
            r.view[_LEAD_OWNER], r.view[_LEAD_TEAM] = decision.owner_id, decision.team_id
            r.view[_LEAD_VERSION] = 2
        for rule_id, user_id in chosen.items():
            await work_view.remember_choice(conn, rule_id, user_id)


# --- the import -------------------------------------------------------------------------------


class _Stop(Exception):
    """A writer ended early (it failed): stop reading."""


class CsvImport:
    """One import of one CSV stream, written through ``writers`` connections of ``pool``."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        store: EventStore,
        kind: Kind,
        *,
        meta: Metadata,
        owner_id: str | None,
        team_id: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        writers: int = DEFAULT_WRITERS,
        max_issues: int = DEFAULT_MAX_ISSUES,
        progress: Progress | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch size must be 1 to {MAX_BATCH_SIZE}")
        if not 1 <= writers <= MAX_WRITERS:
            raise ValueError(f"writers must be 1 to {MAX_WRITERS}")
        self.pool = pool
        self.store = store
        self.spec: _Spec = (
            _Contacts(owner_id, team_id) if kind == "contacts" else _Leads(owner_id, team_id, store)
        )
        self.meta = meta
        self.batch_size = batch_size
        self.writers = writers
        self.progress = progress
        self.report = ImportReport(kind, max_issues=max_issues)
        self.id = uuid.uuid4()  # import_lines.import_id: record id -> line, while it runs

    async def run(self, source: Iterable[bytes]) -> ImportReport:
        started = time.perf_counter()
        async with self.pool.acquire() as conn:
            await self.spec.load(conn, self.store)
        lines = _Lines(source)
        reader = _reader(lines)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            header, problem = None, f"the header cannot be read as CSV: {exc}"
        else:
            problem = "the file is empty; its first line must name the columns"
        errors = (
            [RowError(1, "header", problem)] if header is None else self.spec.read_header(header)
        )
        if 1 in lines.bad:
            errors.append(RowError(1, "header", "the line is not UTF-8; save the file as UTF-8"))
        if errors:
            self.report.aborted = True
            for e in errors:
                self.report.add_error(e)
        else:
            try:
                await self._pipeline(reader, lines)
            finally:
                await self._forget_lines()
        self.report.errors.sort(key=lambda e: e.line)
        self.report.seconds = time.perf_counter() - started
        return self.report

    async def _forget_lines(self) -> None:
        # Also what an import that died left behind.
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "DELETE FROM import_lines WHERE import_id = $1"
                    " OR started_at < now() - interval '1 day'",
                    self.id,
                )

    # --- reading and validating (runs ahead of the writers) ---

    def _records(self, reader: Any, lines: _Lines) -> Iterator[_Record | None]:
        """Valid rows as records; invalid ones are reported and give None (a point to yield)."""
        spec, report = self.spec, self.report
        last = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line, last = last + 1, reader.line_num
                report.rows += 1
                report.rejected += 1
                report.add_error(RowError(line, "", f"the row cannot be read as CSV: {exc}"))
                yield None
                continue
            line, last = last + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue  # a blank line, or one of only separators
            report.rows += 1
            problem = self._shape_problem(line, last, cells, lines)
            if problem is not None:
                report.rejected += 1
                report.add_error(problem)
                yield None
                continue
            prepared = spec.prepare(line, spec.values(cells))
            if isinstance(prepared, list):
                report.rejected += 1
                for e in prepared:
                    report.add_error(e)
                yield None
            else:
                yield prepared

    def _shape_problem(
        self, line: int, last: int, cells: list[str], lines: _Lines
    ) -> RowError | None:
        if lines.bad:
            bad = [n for n in lines.bad if line <= n <= last]
            lines.bad.difference_update(n for n in list(lines.bad) if n <= last)
            if bad:
                return RowError(line, "", "the line is not UTF-8; save the file as UTF-8")
        if len(cells) > self.spec.width and any(c.strip() for c in cells[self.spec.width :]):
            return RowError(
                line, "", f"the row has {len(cells)} cells; the header names {self.spec.width}"
            )
        return None

    async def _pipeline(self, reader: Any, lines: _Lines) -> None:
        queue: asyncio.Queue[list[_Record] | None] = asyncio.Queue(maxsize=self.writers)
        tasks = [asyncio.create_task(self._write_all(queue)) for _ in range(self.writers)]
        try:
            batch: list[_Record] = []
            for n, record in enumerate(self._records(reader, lines), 1):
                if record is not None:
                    batch.append(record)
                    if len(batch) >= self.batch_size:
                        await self._hand_over(queue, batch, tasks)
                        batch = []
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let the writers take their turn
            if batch:
                await self._hand_over(queue, batch, tasks)
            for _ in tasks:
                await self._hand_over(queue, None, tasks)
            await asyncio.gather(*tasks)
        except _Stop:
            await asyncio.gather(*tasks)  # raises the writer's error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _hand_over(
        queue: asyncio.Queue[list[_Record] | None],
        batch: list[_Record] | None,
        writers: list[asyncio.Task[None]],
    ) -> None:
        """Queue a batch (None: the end) unless a writer failed: then stop reading."""
        if any(w.done() for w in writers):
            raise _Stop
        put = asyncio.ensure_future(queue.put(batch))
        await asyncio.wait({put, *writers}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            raise _Stop

    # --- writing: each writer a connection of its own, one transaction per batch ---

    async def _write_all(self, queue: asyncio.Queue[list[_Record] | None]) -> None:
        async with self.pool.acquire() as conn:
            while (batch := await queue.get()) is not None:
                await self._write_batch(conn, batch)
                if self.progress is not None:
                    self.progress(self.report)

    async def _write_batch(self, conn: Conn, batch: list[_Record]) -> None:
        try:
            accepted, duplicates = await self._write(conn, batch)
        except _CONFLICTS:
            if len(batch) == 1:
                self.report.rejected += 1
                self.report.add_error(
                    RowError(
                        batch[0].line,
                        "",
                        "conflicted with a concurrent change; import the file again to retry it",
                    )
                )
                return
            for record in batch:  # keep the others: one row per transaction, checked again
                await self._write_batch(conn, [record])
            return
        self.report.imported += len(accepted)
        for d in duplicates:
            self.report.add_duplicate(d)

    async def _write(
        self, conn: Conn, batch: list[_Record]
    ) -> tuple[list[_Record], list[Duplicate]]:
        """One transaction: check and claim, then append the events and the read-model rows."""
        spec = self.spec
        found: list[tuple[_Record, _Match]] = []
        async with conn.transaction():
            existing = await spec.existing(conn, batch)
            found += [(r, existing[r.id]) for r in batch if r.id in existing]
            pending = [r for r in batch if r.id not in existing]
            accepted: list[_Record] = []
            while pending:
                claimed = await spec.claim(conn, pending)
                lost = [r for r in pending if any((k, r.id) not in claimed for k in r.keys)]
                accepted += [r for r in pending if all((k, r.id) in claimed for k in r.keys)]
                if not lost:
                    break
                await spec.release(conn, [r.id for r in lost])
                missing = sorted({k for r in lost for k in r.keys if (k, r.id) not in claimed})
                owners = await spec.owners(conn, missing)
                pending = []
                for r in lost:
                    held = [k for k in r.keys if (k, r.id) not in claimed and k in owners]
                    if held:
                        owner = owners[held[0]]
                        found.append((r, (spec.label(r, held[0]), owner, f"{spec.path}/{owner}")))
                    else:  # it lost only to a row released just now: claim again
                        pending.append(r)
            accepted.sort(key=lambda r: r.line)
            if accepted:
                await spec.finish(conn, accepted)
                await self.store.append_new_streams(
                    conn,
                    [StreamAppend(f"{spec.kind}-{r.id}", spec.kind, 0, r.events) for r in accepted],
                    self.meta,
                )
                now = datetime.now(UTC)
                await conn.copy_records_to_table(
                    spec.view_table,
                    records=[(*r.view, now, now) for r in accepted],
                    columns=spec.view_columns,
                )
                await conn.execute(
                    "INSERT INTO import_lines (import_id, record_id, line)"
                    " SELECT $1, * FROM unnest($2::text[], $3::int[])",
                    self.id,
                    [r.id for r in accepted],
                    [r.line for r in accepted],
                )
            lines = await self._lines_of(conn, {m[1] for _, m in found}, batch)
        found.sort(key=lambda f: f[0].line)
        duplicates = [
            Duplicate(r.line, email, owner, path, lines.get(owner))
            for r, (email, owner, path) in found
        ]
        return accepted, duplicates

    async def _lines_of(self, conn: Conn, ids: set[str], batch: list[_Record]) -> dict[str, int]:
        """The lines of this file that the given records were imported from (if they were)."""
        if not ids:
            return {}
        here = {r.id: r.line for r in batch if r.id in ids}
        rest = sorted(ids - here.keys())
        if rest:
            rows = await conn.fetch(
                "SELECT record_id, line FROM import_lines"
                " WHERE import_id = $1 AND record_id = ANY($2::text[])",
                self.id,
                rest,
            )
            here.update((r["record_id"], r["line"]) for r in rows)
        return here


async def import_csv(
    pool: asyncpg.Pool,
    store: EventStore,
    kind: Kind,
    source: Iterable[bytes],
    *,
    meta: Metadata,
    owner_id: str | None,
    team_id: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    writers: int = DEFAULT_WRITERS,
    max_issues: int = DEFAULT_MAX_ISSUES,
    progress: Progress | None = None,
) -> ImportReport:
    """Import ``source`` (binary lines of a CSV file) as contacts or leads; see the module doc.

    Takes up to ``writers`` connections from ``pool`` while it runs.
    """
    job = CsvImport(
        pool,
        store,
        kind,
        meta=meta,
        owner_id=owner_id,
        team_id=team_id,
        batch_size=batch_size,
        writers=writers,
        max_issues=max_issues,
        progress=progress,
    )
    return await job.run(source)
