"""Bulk CSV import of contacts and leads: the API upload, the CLI and the importer itself.

Unit tests (no database) check that the import records exactly what the API records and checks
e-mails exactly as the API does; the integration tests run on real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import EmailStr, TypeAdapter, ValidationError

from crm_events.schemas.sales import CustomFieldDefinition
from crm_runtime import db
from crm_runtime.errors import ConcurrencyError
from crm_runtime.eventstore import Checkpoint, EventStore, Metadata
from crm_runtime.testing import ApiCaller as Caller
from crm_sales import cli
from crm_sales.application import importer
from crm_sales.application.importer import CsvImport, ImportReport, import_csv
from crm_sales.domain.contact import Contact, normalise_email
from crm_sales.domain.custom_fields import CustomFields
from crm_sales.domain.lead import Lead
from crm_sales.entrypoints.api import imports
from crm_sales.entrypoints.api.schemas import ContactCreate, ContactFields, LeadCreate

integration = pytest.mark.integration
CSV = {"Content-Type": "text/csv"}


def csv_bytes(rows: Sequence[Sequence[object]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def contacts_csv(n: int, start: int = 0) -> bytes:
    rows: list[list[object]] = [["first_name", "last_name", "email", "phone", "tags"]]
    rows += [
        ["Test", f"Person{i}", f"person{i}@example.com", "+44 20 7946 0000", "a;b"]
        for i in range(start, start + n)
    ]
    return csv_bytes(rows)


async def upload(caller: Caller, kind: str, body: bytes, **params: str) -> Any:
    return await caller.post(f"/imports/{kind}", content=body, headers=CSV, params=params)


# --- unit: the same rules and the same events as the API ----------------------------------------


_DOMAINS = [
    "example.com",
    "Example.COM",
    "sub.example.org",
    "xn--bcher-kva.example",
    "b\u00fccher.example",
    "localhost",
    "x.invalid",
    "a..b.com",
    "-x.com",
    "x-.com",
    "123.example",
    "x" * 63 + ".com",
    "x" * 64 + ".com",
    ".".join(["y" * 60] * 4) + ".com",
    "com",
    "",
]


@settings(max_examples=300, deadline=None)
@given(
    local=st.text(
        alphabet=st.sampled_from([*"abcXYZ019.+-_'!#~\"() @\u00e9", "\u00df"]),
        max_size=70,
    ),
    domain=st.sampled_from(_DOMAINS),
)
def test_email_check_agrees_with_the_api(local: str, domain: str) -> None:
    check, api = importer._EmailCheck(), TypeAdapter(EmailStr)
    for d in _DOMAINS:  # what a file has seen before: the remembered domains are used
        check(f"warm@{d}")
    value = f"{local}@{domain}"
    try:
        expected: str | None = normalise_email(api.validate_python(value))
    except ValidationError:
        expected = None
    got, reason = check(value)
    assert (normalise_email(got) if got else None) == expected, value
    assert (reason == "") == (expected is not None)


def test_the_row_models_keep_the_api_rules() -> None:
    # The importer validates e-mails itself (_EmailCheck) and everything else with these.
    assert ContactCreate.model_fields["emails"].annotation == list[EmailStr] | None
    assert LeadCreate.model_fields["email"].annotation == EmailStr | None
    for model, row in ((ContactCreate, importer._ContactRow), (LeadCreate, importer._LeadRow)):
        assert list(row.model_fields) == list(model.model_fields)
        for name, info in model.model_fields.items():
            assert row.model_fields[name].metadata == info.metadata, name


def _definitions() -> CustomFields:
    defs = CustomFields("contact")
    defs.define(CustomFieldDefinition(key="plan", label="Plan", type="choice", choices=["gold"]))
    defs.define(CustomFieldDefinition(key="employees", label="Employees", type="integer"))
    defs.define(CustomFieldDefinition(key="newsletter", label="Newsletter", type="boolean"))
    defs.define(CustomFieldDefinition(key="score", label="Score", type="number"))
    return defs


@pytest.mark.parametrize(
    "cells",
    [
        {"last_name": "Lovelace"},
        {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "Ada@Example.COM; ada@example.com;second@example.org",
            "phone": "+44 20 7946 0000",
            "title": "CTO",
            "tags": "vip; board",
            "social_profiles": "https://www.linkedin.com/in/ada",
            "address.city": "London",
            "address.country": "GB",
            "region": "EMEA",
            "custom.plan": "gold",
            "custom.employees": "12",
            "custom.newsletter": "yes",
            "custom.score": "4.5",
        },
    ],
)
def test_a_contact_row_records_what_post_contacts_records(cells: dict[str, str]) -> None:
    spec = importer._Contacts("alice", "emea")
    spec.definitions = _definitions()
    assert spec.read_header(list(cells)) == []
    record = spec.prepare(2, spec.values(list(cells.values())))
    assert isinstance(record, importer._Record)
    # The API: ContactCreate body -> ContactFields.details() -> ContactHandlers.create.
    body = ContactCreate.model_validate(spec.values(list(cells.values())))
    details = ContactFields.model_validate(body.model_dump(exclude={"owner_id"})).details()
    event = record.events[0]
    contact = Contact.create(
        record.id, event.data["customer_id"], details, owner_id="alice", team_id="emea"
    )
    assert event.data == contact.pending[0].model_dump(mode="json")
    assert (event.type, event.schema_version, event.subject) == (
        "crm.sales.contact.created",
        1,
        contact.subject,
    )
    # The read-model row upsert_contact writes.
    assert record.view[:9] == [
        contact.id,
        contact.customer_id,
        contact.display_name,
        contact.emails[0] if contact.emails else None,
        contact.details.get("account_id"),
        "alice",
        "emea",
        list(contact.details.get("tags") or []),
        None,
    ]
    assert json.loads(record.view[9]) == contact.details and record.view[10] == 1


def test_a_lead_row_records_what_post_leads_records() -> None:
    spec = importer._Leads("alice", "emea", EventStore(None, "/crm/sales"))  # type: ignore[arg-type]
    header = ["name", "email", "phone", "company", "source_detail", "region", "product_line"]
    assert spec.read_header(header) == []
    cells = ["Ada Lovelace", " ADA@Example.com ", "+44 20", "Engines", "fair", "EMEA", "crm"]
    record = spec.prepare(2, spec.values(cells))
    assert isinstance(record, importer._Record)
    event = record.events[0]
    lead = Lead.capture(
        record.id,
        event.data["customer_id"],
        name="Ada Lovelace",
        source="import",
        email=str(TypeAdapter(EmailStr).validate_python("ADA@Example.com")),
        phone="+44 20",
        company="Engines",
        source_detail="fair",
        owner_id="alice",
        team_id="emea",
        region="EMEA",
        product_line="crm",
    )
    assert event.data == lead.pending[0].model_dump(mode="json")
    assert (event.type, event.schema_version) == ("crm.sales.lead.captured", 3)


def test_row_errors_name_the_column_and_the_reason() -> None:
    spec = importer._Contacts(None, None)
    spec.definitions = _definitions()
    header = ["Last Name", "E-Mail", "phone", "address.country", "custom.employees", "custom.plan"]
    assert spec.read_header(header) == []
    got = spec.prepare(7, spec.values(["", "a@example.com;nope", "x", "gb", "many", "gold"]))
    assert isinstance(got, list)
    by_field = {e.field: e.reason for e in got}
    assert all(e.line == 7 for e in got)
    assert by_field["last_name"] == "required; the cell is empty"
    assert by_field["e_mail"].startswith("value 2 of 2: value is not a valid email address")
    assert "should match pattern" in by_field["phone"]
    assert "address.country" in by_field
    assert by_field["custom.employees"] == "Employees must be a integer"
    assert "custom.plan" not in by_field


def test_header_problems_are_one_clear_error_each() -> None:
    spec = importer._Contacts(None, None)
    spec.definitions = _definitions()
    errors = spec.read_header(["last_name", "e-mail", "fax", "Notes", "custom.colour"])
    assert errors[0].line == 1 and errors[0].field == "header"
    assert "unknown column(s): 'fax', 'Notes'" in errors[0].reason
    assert "first_name" in errors[0].reason  # it lists what is known
    assert [e.field for e in errors[1:]] == ["custom.colour"]
    assert "no custom field 'colour'" in errors[1].reason
    missing = importer._Contacts(None, None).read_header(["first_name", "email"])
    assert [(e.field, e.reason) for e in missing] == [
        ("last_name", "the header needs a last_name column")
    ]
    twice = importer._Contacts(None, None).read_header(["last_name", "email", "emails"])
    assert [e.field for e in twice] == ["emails"]


def test_progress_bar_draws_on_a_terminal_and_prints_lines_otherwise() -> None:
    now = [0.0]
    tty = io.StringIO()
    bar = cli.ProgressBar(tty, 1000, label="importing", tty=True, clock=lambda: now[0])
    for done in (100, 150, 500):
        now[0] += 0.5
        bar.update(done)
    bar.finish(1000)
    drawn = tty.getvalue()
    assert drawn.count("\r") == 4 and drawn.endswith("\n")
    assert "500/1,000 rows  50%" in drawn and "ETA 0:02" in drawn and "rows/s" in drawn
    plain = io.StringIO()
    bar = cli.ProgressBar(plain, 1000, label="importing", tty=False, clock=lambda: now[0])
    for done in range(0, 1001, 50):
        now[0] += 0.1
        bar.update(done)
    bar.finish(1000)
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and len(lines) == 10
    assert lines[0].startswith("importing: 100/1,000 rows  10%")
    assert lines[-1].startswith("importing: 1,000/1,000 rows 100%")


def test_count_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(contacts_csv(3))
    assert cli.count_rows(path) == 3
    path.write_bytes(contacts_csv(3).rstrip(b"\n"))
    assert cli.count_rows(path) == 3


# --- integration: the API upload -------------------------------------------------------------


async def define_fields(meg: Caller) -> None:
    for key, body in {
        "plan": {"label": "Plan", "type": "choice", "choices": ["free", "gold"]},
        "employees": {"label": "Employees", "type": "integer"},
    }.items():
        r = await meg.put(f"/custom-fields/contact/{key}", json=body)
        assert r.status_code == 200, r.text


CONTACTS = [
    [
        *("first_name", "last_name", "email", "phone", "tags"),
        *("address.country", "custom.plan", "custom.employees"),
    ],
    ["Grace", "Hopper", "grace@example.com", "+1 555 0100", "navy;vip", "US", "gold", "12"],
    ["Alan", "", "alan@example.com", "", "", "", "", ""],
    ["Edsger", "Dijkstra", "not-an-email", "", "", "", "", ""],
    ["Barbara", "Liskov", "barbara@example.com", "call me", "", "", "", ""],
    ["Ada", "Byron", "ADA@Example.com", "", "", "", "", ""],
    ["Grace", "Hopper", "Grace@Example.com", "", "", "", "", ""],
    ["Donald", "Knuth", "don@example.com", "", "", "gb", "", ""],
    ["Ken", "Thompson", "ken@example.com", "", "", "", "platinum", ""],
    ["Frances", "Allen", "", "", "", "", "free", "many"],
    ["Margaret", "Hamilton", "", "", "apollo", "", "", ""],
    ["", "", "", "", "", "", "", ""],
    ["John", "Backus", "john@example.com", "", "", "", "", "", "stray"],
]


@integration
async def test_upload_imports_good_rows_and_reports_every_bad_one(
    as_user: Callable[..., Caller],
) -> None:
    meg = as_user("sales_manager", user="meg", team="emea")
    await define_fields(meg)
    alice = as_user("sales_rep", user="alice", team="emea")
    ada = (
        await alice.post("/contacts", json={"last_name": "Lovelace", "emails": ["ada@example.com"]})
    ).json()
    r = await upload(alice, "contacts", csv_bytes(CONTACTS))
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["rows"], report["imported"], report["rejected"], report["duplicated"]) == (
        11,
        2,
        7,
        2,
    )
    assert not report["complete"]
    errors = {(e["line"], e["field"]) for e in report["errors"]}
    assert errors == {
        (3, "last_name"),
        (4, "email"),
        (5, "phone"),
        (8, "address.country"),
        (9, "custom.plan"),
        (10, "custom.employees"),
        (13, ""),
    }
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert reasons[3] == "required; the cell is empty"
    assert reasons[4].startswith("value is not a valid email address")
    assert reasons[13] == "the row has 9 cells; the header names 8"
    dups = {d["line"]: d for d in report["duplicates"]}
    assert dups[6]["email"] == "ada@example.com" and dups[6]["existing_id"] == ada["id"]
    assert dups[6]["existing"] == f"/contacts/{ada['id']}" and dups[6]["first_line"] is None
    assert dups[7]["email"] == "grace@example.com" and dups[7]["first_line"] == 2
    grace_id = dups[7]["existing_id"]

    # An imported contact reads as one created over the API with the same data.
    grace = await alice.get(f"/contacts/{grace_id}")
    assert grace.status_code == 200 and grace.headers["ETag"] == '"1"'
    same = await alice.post(
        "/contacts",
        json={
            "first_name": "Grace",
            "last_name": "Hopper",
            "emails": ["grace.h@example.com"],
            "phones": ["+1 555 0100"],
            "tags": ["navy", "vip"],
            "address": {"country": "US"},
            "custom_fields": {"plan": "gold", "employees": 12},
        },
    )
    assert same.status_code == 201, same.text
    differ = {"id", "customer_id", "emails"}
    imported, created = grace.json(), same.json()
    assert {k: v for k, v in imported.items() if k not in differ} == {
        k: v for k, v in created.items() if k not in differ
    }
    assert imported["emails"] == ["grace@example.com"] and imported["owner_id"] == "alice"
    history = (await alice.get(f"/contacts/{grace_id}/history")).json()
    assert [h["type"] for h in history] == ["crm.sales.contact.created"]
    assert history[0]["actor"] == "alice" and history[0]["correlation_id"]
    listed = (await alice.get("/contacts", params={"q": "hamilton"})).json()["items"]
    assert [c["details"]["tags"] for c in listed] == [["apollo"]]

    # The same file again: nothing new, every good row is a duplicate of what it created.
    again = (await upload(alice, "contacts", csv_bytes(CONTACTS))).json()
    assert (again["imported"], again["rejected"], again["duplicated"]) == (0, 7, 4)
    redups = {d["line"]: d for d in again["duplicates"]}
    assert redups[2]["existing_id"] == grace_id and redups[2]["first_line"] is None
    assert redups[11]["email"] is None and redups[11]["existing_id"] == listed[0]["id"]
    assert redups[7]["existing_id"] == grace_id
    total = (await alice.get("/contacts", params={"limit": 200})).json()["items"]
    assert len(total) == 4  # Ada, Grace, Margaret, and the API's Grace


@integration
async def test_duplicates_follow_merges_and_partial_claims_are_released(
    as_user: Callable[..., Caller],
) -> None:
    alice = as_user("sales_rep", user="alice")
    a = (await alice.post("/contacts", json={"last_name": "A", "emails": ["a@example.com"]})).json()
    b = (await alice.post("/contacts", json={"last_name": "B", "emails": ["b@example.com"]})).json()
    merged = await alice.post(f"/contacts/{a['id']}/merge", json={"merged_id": b["id"]})
    assert merged.status_code == 200, merged.text
    body = csv_bytes(
        [
            ["last_name", "email"],
            ["Merged", "b@example.com"],
            ["Both", "x@example.com;a@example.com"],  # x is taken, then given back
            ["Later", "x@example.com"],
        ]
    )
    report = (await upload(alice, "contacts", body)).json()
    assert report["imported"] == 1 and report["errors"] == []
    dups = {d["line"]: (d["email"], d["existing_id"]) for d in report["duplicates"]}
    assert dups == {2: ("b@example.com", a["id"]), 3: ("a@example.com", a["id"])}
    later = (await alice.get("/contacts", params={"q": "later"})).json()["items"]
    assert later[0]["email"] == "x@example.com"


@integration
async def test_upload_leads_as_post_leads_would(as_user: Callable[..., Caller]) -> None:
    alice = as_user("sales_rep", user="alice", team="emea")
    open_lead = (
        await alice.post("/leads", json={"name": "Open", "email": "open@example.com"})
    ).json()
    contact = (
        await alice.post("/contacts", json={"last_name": "C", "emails": ["c@example.com"]})
    ).json()
    body = csv_bytes(
        [
            ["name", "email", "phone", "company", "region"],
            ["Ada Lovelace", "ada@example.com", "+44 20", "Engines", "EMEA"],
            ["Again", "OPEN@example.com", "", "", ""],
            ["Contact", "c@example.com", "", "", ""],
            ["Ada Twice", "ada@example.com", "", "", ""],
            ["", "nameless@example.com", "", "", ""],
            ["Bad", "bad@", "", "", ""],
            ["No Mail", "", "", "Acme", ""],
        ]
    )
    report = (await upload(alice, "leads", body)).json()
    assert (report["imported"], report["rejected"], report["duplicated"]) == (2, 2, 3)
    assert {(e["line"], e["field"]) for e in report["errors"]} == {(6, "name"), (7, "email")}
    dups = {d["line"]: d for d in report["duplicates"]}
    assert dups[3]["existing"] == f"/leads/{open_lead['id']}"
    assert dups[4]["existing"] == f"/contacts/{contact['id']}"
    assert dups[5]["first_line"] == 2 and dups[5]["email"] == "ada@example.com"
    lead = (await alice.get(f"/leads/{dups[5]['existing_id']}")).json()
    assert (lead["source"], lead["owner_id"], lead["email"], lead["status"]) == (
        "import",
        "alice",
        "ada@example.com",
        "new",
    )
    again = (await upload(alice, "leads", body)).json()
    assert (again["imported"], again["duplicated"]) == (0, 5)
    assert {d["line"] for d in again["duplicates"]} == {2, 3, 4, 5, 8}


@integration
async def test_leads_nobody_owns_are_routed_by_the_rules(as_user: Callable[..., Caller]) -> None:
    meg = as_user("sales_manager", user="meg", team="emea")
    for user in ("alice", "bob"):
        r = await meg.put(f"/reps/{user}", json={"team_id": "emea", "regions": ["EMEA"]})
        assert r.status_code == 200, r.text
    rules = {"rules": [{"rule_id": "rr", "applies_to": ["lead"], "strategy": "round_robin"}]}
    assert (await meg.put("/assignment-rules", json=rules)).status_code == 200
    body = csv_bytes([["name", "region"], *[[f"Lead {i}", "EMEA"] for i in range(4)]])
    report = (await upload(meg, "leads", body)).json()
    assert report["imported"] == 4, report
    leads = (await meg.get("/leads", params={"source": "import"})).json()["items"]
    assert sorted(lead["owner_id"] for lead in leads) == ["alice", "alice", "bob", "bob"]
    history = (await meg.get(f"/leads/{leads[0]['id']}/history")).json()
    assert [h["type"] for h in history] == ["crm.sales.lead.captured", "crm.sales.lead.assigned"]
    assert history[1]["data"]["rule_id"] == "rr"


@integration
async def test_upload_refusals_and_roles(
    as_user: Callable[..., Caller], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = as_user("sales_rep", user="alice")
    bad_header = await upload(alice, "contacts", b"last_name,fax\nX,1\n")
    assert bad_header.status_code == 422
    assert bad_header.headers["content-type"].startswith("application/problem+json")
    assert bad_header.json()["errors"][0]["line"] == 1
    assert "'fax'" in bad_header.json()["errors"][0]["reason"]
    empty = await upload(alice, "contacts", b"")
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    json_body = await alice.post("/imports/contacts", json={"last_name": "X"})
    assert json_body.status_code == 415 and "text/csv" in json_body.json()["detail"]
    # a file over the API's 4 MiB limit for JSON bodies still reaches the importer
    large = await upload(alice, "contacts", b"last_name,fax\n" + b"X,1\n" * (1300 * 1024))
    assert large.status_code == 422 and "'fax'" in large.json()["errors"][0]["reason"]
    monkeypatch.setattr(imports, "MAX_UPLOAD_BYTES", 100)
    too_big = await upload(alice, "contacts", contacts_csv(10))
    assert too_big.status_code == 413
    monkeypatch.undo()
    marketer = as_user("marketer", user="mark")
    assert (await upload(marketer, "contacts", contacts_csv(1))).status_code == 403
    assert (await upload(alice, "contacts", contacts_csv(1), owner_id="bob")).status_code == 403
    meg = as_user("sales_manager", user="meg", team="emea")
    given = await upload(meg, "contacts", contacts_csv(1), owner_id="bob")
    assert given.status_code == 200 and given.json()["imported"] == 1
    listed = (await meg.get("/contacts")).json()["items"]
    assert [c["owner_id"] for c in listed] == ["bob"]
    spec = (await alice.get("/openapi.json")).json()["paths"]["/imports/contacts"]["post"]
    assert "text/csv" in spec["requestBody"]["content"]
    assert {"200", "413", "415", "422"} <= set(spec["responses"])


# --- integration: the importer itself --------------------------------------------------------


@pytest.fixture
async def sales_db(fresh_db: Callable[..., Any]) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    url = await fresh_db("crm_sales")
    pool = await db.create_pool(url, max_size=10)
    yield url, pool
    await pool.close()


async def run_import(
    pool: asyncpg.Pool, body: bytes | Path, *, store: EventStore | None = None, **kw: Any
) -> ImportReport:
    with body.open("rb") if isinstance(body, Path) else io.BytesIO(body) as source:
        return await import_csv(
            pool,
            store or EventStore(pool, "/crm/sales"),
            kw.pop("kind", "contacts"),
            source,
            meta=Metadata(actor="test"),
            owner_id=kw.pop("owner_id", None),
            **kw,
        )


@integration
async def test_line_numbers_count_quoted_breaks_and_bad_bytes(
    sales_db: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = sales_db
    body = (
        b"\xef\xbb\xbflast_name,title\n"
        b'One,"a title\nover two lines"\n'
        b"\n"
        b",no last name\n"
        b"Caf\xe9,latin-1\n"
        b"Two,fine\n"
    )
    report = await run_import(pool, body)
    assert (report.rows, report.imported, report.rejected) == (4, 2, 2)
    assert [(e.line, e.field) for e in report.errors] == [(5, "last_name"), (6, "")]
    assert "UTF-8" in report.errors[1].reason


@integration
async def test_a_batch_that_conflicts_is_retried_row_by_row(
    sales_db: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = sales_db

    class Flaky(EventStore):
        calls = 0

        async def append_new_streams(self, *args: Any, **kwargs: Any) -> int:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ConcurrencyError("<batch>", 0)
            return await super().append_new_streams(*args, **kwargs)

    report = await run_import(pool, contacts_csv(5), store=Flaky(pool, "/crm/sales"), writers=1)
    assert (report.imported, report.errors, Flaky.calls) == (5, [], 6)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM contact_emails") == 5
        assert await conn.fetchval("SELECT count(*) FROM events") == 5


@integration
async def test_concurrent_imports_of_overlapping_files_create_each_contact_once(
    sales_db: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = sales_db
    first, second = await asyncio.gather(
        run_import(pool, contacts_csv(300, start=0), batch_size=50),
        run_import(pool, contacts_csv(300, start=150), batch_size=50),
    )
    assert first.errors == second.errors == []
    assert first.imported + second.imported == 450
    assert first.duplicated + second.duplicated == 150
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM contacts") == 450
        assert await conn.fetchval("SELECT count(DISTINCT stream_id) FROM events") == 450
        assert await conn.fetchval("SELECT count(*) FROM import_lines") == 0
    # What the outbox relay reads and publishes: every imported event, committed.
    committed = await EventStore(pool, "/crm/sales").read_committed(Checkpoint(), limit=1000)
    assert len(committed) == 450
    assert {e.type for e in committed} == {"crm.sales.contact.created"}


@integration
async def test_memory_does_not_grow_with_the_file(
    sales_db: tuple[str, asyncpg.Pool], tmp_path: Path
) -> None:
    _, pool = sales_db
    await run_import(pool, contacts_csv(500, start=50_000), batch_size=200)  # warm caches
    peaks: dict[int, int] = {}
    # Each size twice, keeping the lower peak: tasks other tests left on the session's event
    # loop may allocate while one import runs, and that noise only ever adds.
    for n, start in ((2_000, 0), (20_000, 10_000), (2_000, 100_000), (20_000, 200_000)):
        body = tmp_path / f"{n}-{start}.csv"
        body.write_bytes(contacts_csv(n, start=start))
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            report = await run_import(pool, body, batch_size=200)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert report.imported == n
        peaks[n] = min(peaks.get(n, peak), peak)
    small, large = peaks[2_000], peaks[20_000]
    # 10x the rows, the same peak: nothing is kept per row (50 bytes a row would show).
    assert large < small * 1.3, f"peak {small / 1e6:.2f} MB for 2k rows, {large / 1e6:.2f} MB"


# --- integration: the CLI --------------------------------------------------------------------


@integration
async def test_cli_exit_codes_and_report(
    sales_db: tuple[str, asyncpg.Pool],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = sales_db
    monkeypatch.setenv("SALES_DATABASE_URL", url)
    root = logging.getLogger()  # the CLI sets up logging to (captured) stderr: put it back
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    good = tmp_path / "good.csv"
    good.write_bytes(contacts_csv(3))
    assert await asyncio.to_thread(cli.main, ["import", "contacts", str(good), "--owner", "o"]) == 0
    out = capsys.readouterr()
    assert "Imported 3 of 3 contacts" in out.out
    assert "importing contacts: 3/3 rows 100%" in out.err  # plain lines: stderr is no TTY

    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes([["last_name", "email"], ["X", "x@example.com"], ["", "y@y.org"]]))
    bad_args = ["import", "contacts", str(bad), "--batch-size", "7", "--json"]
    assert await asyncio.to_thread(cli.main, bad_args) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["imported"] == 1
    assert report["errors"] == [
        {"line": 3, "field": "last_name", "reason": "required; the cell is empty"}
    ]
    assert await asyncio.to_thread(cli.main, ["import", "contacts", str(good)]) == 1
    assert "line 2: person0@example.com exists: /contacts/" in capsys.readouterr().out

    header = tmp_path / "header.csv"
    header.write_bytes(b"name,fax\n")
    assert await asyncio.to_thread(cli.main, ["import", "contacts", str(header)]) == 1
    assert "Nothing was imported" in capsys.readouterr().out
    leads = tmp_path / "leads.csv"
    leads.write_bytes(b"name,email\nAda,ada@example.com\n")
    assert await asyncio.to_thread(cli.main, ["import", "leads", str(leads)]) == 0

    assert cli.main(["import", "contacts", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    for argv in (["import", "people", str(good)], ["import"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["import", "contacts", str(good), "--batch-size", "0"])
    assert exit_.value.code == 2


def test_import_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="batch size"):
        CsvImport(None, None, "contacts", meta=Metadata(), owner_id=None, batch_size=0)  # type: ignore[arg-type]


def test_the_separator_is_read_from_the_header() -> None:
    from crm_sales.application.importer import delimiter_of

    assert delimiter_of("first_name,last_name,email\n") == ","
    assert delimiter_of("first_name;last_name;email\r\n") == ";"  # a German or French Excel
    assert delimiter_of("first_name\tlast_name\n") == "\t"
    assert delimiter_of("last_name\n") == ","  # one column
    assert delimiter_of('"name, as written";email;tags\n') == ";"  # quoted commas do not count


@integration
async def test_a_semicolon_separated_file_imports_like_a_comma_separated_one(
    sales_db: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = sales_db
    body = (
        b"first_name;last_name;email;title;tags\n"
        b'Ada;Lovelace;ada@example.com;"Analyst, first";"math;engines"\n'
        b"Grace;Hopper;grace@example.com;Rear admiral;navy\n"
    )
    report = await run_import(pool, body)
    assert (report.rows, report.imported, report.rejected) == (2, 2, 0), report.errors
    rows = await pool.fetch(
        "SELECT email, details->>'title' AS title, tags FROM contacts ORDER BY email"
    )
    assert [(r["email"], r["title"], sorted(r["tags"])) for r in rows] == [
        ("ada@example.com", "Analyst, first", ["engines", "math"]),
        ("grace@example.com", "Rear admiral", ["navy"]),
    ]
