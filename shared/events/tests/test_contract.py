"""Generated contract documents and the backward-compatibility check CI runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from crm_events import EventPayload, EventRegistry, contract, event_type, registry
from crm_events.cli import main

PUBLISHED = Path(__file__).resolve().parents[1] / "schemas"


def test_committed_schemas_match_the_registry() -> None:
    problems = contract.check(registry, PUBLISHED)
    assert problems == [], "\n".join(problems)


def test_every_version_has_an_example_that_decodes() -> None:
    assert list(contract.examples_problems(registry)) == []


def test_asyncapi_document_covers_every_topic_and_type() -> None:
    doc = contract.asyncapi(registry)
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"crm.sales.events", "crm.public.customer-events"} <= addresses
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == {s.type for s in registry.specs()}
    public = doc["channels"]["publicCustomerEvents"]["messages"]
    assert len(public) == sum(1 for s in registry.specs() if s.public)
    # every $ref resolves inside the document
    for ref in _refs(doc):
        node: Any = doc
        for part in ref[2:].split("/"):
            assert part in node, ref
            node = node[part]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def schema_of(**fields: Any) -> dict[str, Any]:
    reg = EventRegistry()
    model = type("M", (EventPayload,), {"__annotations__": fields, "__doc__": "A thing."})
    reg.register("crm.test.thing.done", 1, model)
    return contract.generate(reg)["crm.test.thing.done/v1.json"]


def test_annotation_changes_are_compatible() -> None:
    old = schema_of(a=str)
    new = copy.deepcopy(old)
    new["description"] = "Now better documented."
    new["properties"]["a"]["title"] = "A field"
    assert contract.compatibility_problems(old, new) == []


@pytest.mark.parametrize(
    ("new_fields", "reason"),
    [
        ({}, "a: field removed"),
        ({"a": str, "b": int}, "b: required field added"),
        ({"a": str, "c": "int | None"}, "c: optional field added"),
        ({"a": int}, "a: type changed"),
    ],
)
def test_incompatible_changes_are_named(new_fields: dict[str, Any], reason: str) -> None:
    old = schema_of(a=str)
    if "c" in new_fields:
        reg = EventRegistry()

        @event_type("crm.test.thing.done", 1, into=reg)
        class M(EventPayload):
            """A thing."""

            a: str
            c: int | None = None

        new = contract.generate(reg)["crm.test.thing.done/v1.json"]
    else:
        new = schema_of(**new_fields)
    problems = contract.compatibility_problems(old, new)
    assert any(reason in p for p in problems), problems


def test_enum_and_constraint_changes_are_incompatible() -> None:
    old = {"type": "object", "properties": {"s": {"enum": ["a", "b"]}, "n": {"maximum": 10}}}
    new = {"type": "object", "properties": {"s": {"enum": ["a", "c"]}, "n": {"maximum": 5}}}
    problems = contract.compatibility_problems(old, new)
    assert any("enum values removed ['b']" in p for p in problems)
    assert any("enum values added ['c']" in p for p in problems)
    assert any("n: maximum changed" in p for p in problems)


def test_a_public_event_cannot_become_private() -> None:
    old = {"x-public": True, "type": "object"}
    assert contract.compatibility_problems(old, {"x-public": False, "type": "object"})


def published_copy(tmp_path: Path) -> Path:
    out = tmp_path / "schemas"
    contract.write(contract.generate(registry), out)
    return out


def test_check_fails_on_an_edited_published_schema(tmp_path: Path, capsys: Any) -> None:
    out = published_copy(tmp_path)
    assert main(["check", "--published", str(out)]) == 0
    path = out / "crm.sales.lead.qualified/v1.json"
    doc = json.loads(path.read_text())
    doc["properties"]["score"]["maximum"] = 1000  # what the code used to say
    path.write_text(contract.dumps(doc))
    assert main(["check", "--published", str(out)]) == 1
    err = capsys.readouterr().err
    assert "crm.sales.lead.qualified v1: score: maximum changed from 1000 to 100" in err
    # generate refuses to paper over it
    assert main(["generate", "--out", str(out)]) == 1
    assert json.loads(path.read_text())["properties"]["score"]["maximum"] == 1000


def test_check_fails_when_a_published_version_disappears(tmp_path: Path, capsys: Any) -> None:
    out = published_copy(tmp_path)
    index = json.loads((out / "index.json").read_text())
    index["events"].append(
        {
            "type": "crm.sales.lead.vanished",
            "version": 1,
            "public": False,
            "current": True,
            "schema": "crm.sales.lead.vanished/v1.json",
        }
    )
    (out / "index.json").write_text(contract.dumps(index))
    assert main(["check", "--published", str(out)]) == 1
    assert (
        "crm.sales.lead.vanished v1: published but no longer registered" in capsys.readouterr().err
    )


def test_check_fails_when_schemas_were_not_regenerated(tmp_path: Path, capsys: Any) -> None:
    out = published_copy(tmp_path)
    (out / "asyncapi.json").unlink()
    assert main(["check", "--published", str(out)]) == 1
    assert "run `make schemas`" in capsys.readouterr().err
    assert main(["generate", "--out", str(out)]) == 0
    assert main(["check", "--published", str(out)]) == 0


def test_check_without_published_schemas_explains(tmp_path: Path, capsys: Any) -> None:
    assert main(["check", "--published", str(tmp_path / "none")]) == 1
    assert "no published schemas" in capsys.readouterr().err
