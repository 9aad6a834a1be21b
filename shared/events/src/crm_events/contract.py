"""The generated contract: JSON Schema per event type and version, one AsyncAPI 3 document, and
the compatibility check that keeps published schemas from changing under their consumers.

A published ``(type, version)`` schema is frozen. Payload models forbid unknown fields, so even
an added optional field breaks a consumer still on the old model; the way to change an event is
a new schema version plus an upcaster. Only annotations (descriptions, titles, examples) may
change in place.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from crm_events.envelope import EXTENSIONS, JSON_CONTENT_TYPE, context_topic, public_topic
from crm_events.registry import EventPayload, EventRegistry

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.json"
INDEX_FILE = "index.json"
# Keywords that document a schema without changing which documents it accepts.
ANNOTATIONS = frozenset({"title", "description", "examples", "$comment", "deprecated"})


def schema_id(type_: str, version: int) -> str:
    return f"urn:crm:event:{type_}:v{version}"


def json_schema(
    type_: str, version: int, model: type[EventPayload], public: bool
) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event payload version."""
    schema = model.model_json_schema(mode="serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(type_, version),
        "x-event-type": type_,
        "x-schema-version": version,
        "x-public": public,
        **schema,
    }


def schema_path(type_: str, version: int) -> str:
    """A schema's path under the published directory, e.g. ``crm.sales.lead.captured/v1.json``."""
    return f"{type_}/v{version}.json"


def example(type_: str, version: int) -> dict[str, Any]:
    """The example payload for ``(type, version)``, kept in the package as a contract fixture."""
    ref = resources.files("crm_events").joinpath("examples", type_, f"v{version}.json")
    try:
        data = json.loads(ref.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LookupError(  # noqa: B904 - the missing file is the whole story
            f"no example for {type_} v{version}: add examples/{type_}/v{version}.json"
        )
    if not isinstance(data, dict):
        raise ValueError(f"example for {type_} v{version} is not a JSON object")
    return data


def generate(reg: EventRegistry) -> dict[str, dict[str, Any]]:
    """Every generated document by relative path: schemas, an index, and the AsyncAPI document."""
    docs: dict[str, dict[str, Any]] = {}
    index: list[dict[str, Any]] = []
    for type_, version, model in reg.all_versions():
        docs[schema_path(type_, version)] = json_schema(type_, version, model, reg.is_public(type_))
        index.append(
            {
                "type": type_,
                "version": version,
                "current": version == reg.current_version(type_),
                "public": reg.is_public(type_),
                "schema": schema_path(type_, version),
            }
        )
    docs[INDEX_FILE] = {"events": index}
    docs[ASYNCAPI_FILE] = asyncapi(reg)
    return docs


def write(docs: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Write documents as stable, diff-friendly JSON; return the files that changed."""
    changed: list[Path] = []
    for rel, doc in sorted(docs.items()):
        path = out / rel
        text = dumps(doc)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(path)
    return changed


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _message_name(type_: str) -> str:
    return "".join(part.title() for part in type_.replace("-", "_").replace(".", "_").split("_"))


def asyncapi(reg: EventRegistry) -> dict[str, Any]:
    """One AsyncAPI 3.0 document for every topic: the context topics and the public topic."""
    specs = list(reg.specs())
    contexts = sorted({s.context for s in specs})
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in specs:
        name = _message_name(spec.type)
        schema = json_schema(spec.type, spec.version, spec.model, spec.public)
        defs = schema.pop("$defs", {})
        for def_name, def_schema in defs.items():
            rewritten = _rewrite_refs(def_schema)
            if schemas.get(def_name, rewritten) != rewritten:
                raise ValueError(f"two different payload parts are both named {def_name!r}")
            schemas[def_name] = rewritten
        schema.pop("$schema", None)
        schemas[name] = _rewrite_refs(schema)
        message: dict[str, Any] = {
            "name": spec.type,
            "title": spec.type,
            "summary": spec.summary,
            "contentType": JSON_CONTENT_TYPE,
            "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{name}"},
            "correlationId": {"$ref": "#/components/correlationIds/CorrelationId"},
            "bindings": {"kafka": {"key": {"type": "string", "description": "customer id"}}},
            "x-schema-version": spec.version,
        }
        with contextlib.suppress(LookupError):
            message["examples"] = [{"payload": example(spec.type, spec.version)}]
        messages[name] = message
    for ctx in contexts:
        topic = context_topic(ctx)
        channel = f"{ctx}Events"
        ctx_messages = {
            _message_name(s.type): {"$ref": f"#/components/messages/{_message_name(s.type)}"}
            for s in specs
            if s.context == ctx
        }
        channels[channel] = {
            "address": topic,
            "title": f"{ctx} context events",
            "description": (
                f"Every domain event of the {ctx} context, keyed by customer id so that one "
                "customer's events stay in order. Internal to the platform."
            ),
            "messages": ctx_messages,
        }
        operations[f"publish{ctx.title().replace('-', '')}Events"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"The {ctx} outbox relay publishes each committed event once or more.",
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/{m}"} for m in sorted(ctx_messages)
            ],
        }
    public_messages = {
        _message_name(s.type): {"$ref": f"#/components/messages/{_message_name(s.type)}"}
        for s in specs
        if s.public
    }
    channels["publicCustomerEvents"] = {
        "address": public_topic(),
        "title": "Public customer events",
        "description": (
            "The curated integration topic: customer events that downstream systems may "
            "subscribe to. Keyed by customer id; delivery is at least once, deduplicate on id."
        ),
        "messages": public_messages,
    }
    operations["receivePublicCustomerEvents"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/publicCustomerEvents"},
        "summary": "Downstream systems consume curated customer events.",
        "messages": [
            {"$ref": f"#/channels/publicCustomerEvents/messages/{m}"}
            for m in sorted(public_messages)
        ],
    }
    schemas["CloudEventHeaders"] = _headers_schema()
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CRM events",
            "version": "1.0.0",
            "description": (
                "Domain events of the CRM, CloudEvents 1.0 in the Kafka protocol binding "
                "(binary content mode): attributes in ce_* headers, the payload as the value."
            ),
        },
        "defaultContentType": JSON_CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "correlationIds": {
                "CorrelationId": {
                    "description": "The request that caused the event",
                    "location": "$message.header#/ce_correlationid",
                }
            },
        },
    }


def _headers_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        "content-type": {"type": "string", "const": JSON_CONTENT_TYPE},
        "ce_id": {"type": "string", "format": "uuid"},
        "ce_source": {"type": "string"},
        "ce_type": {"type": "string"},
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "description": "customer id; never personal data"},
    }
    for ext in EXTENSIONS:
        props[f"ce_{ext}"] = {"type": "string"}
    return {
        "type": "object",
        "properties": props,
        "required": [
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_specversion",
            "ce_time",
            "ce_streamid",
            "ce_streamversion",
            "ce_schemaversion",
        ],
    }


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = "#/components/schemas/" + v.removeprefix("#/$defs/")
            else:
                out[k] = _rewrite_refs(v)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


# --- compatibility ---------------------------------------------------------------------------


def compatibility_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why ``new`` cannot replace the published ``old`` schema of the same version ([] if it can).

    Annotations may change; anything that changes which payloads are valid may not.
    """
    problems: list[str] = []
    if old.get("x-public") and not new.get("x-public"):
        problems.append("the event is no longer public, but downstream systems subscribe to it")
    _compare(_resolve_root(old), _resolve_root(new), old, new, "", problems)
    return problems


def _resolve_root(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in schema.items()
        if not k.startswith("x-") and k not in ("$id", "$schema", "$defs")
    }


def _deref(node: Any, doc: dict[str, Any]) -> Any:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 32:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            break
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **rest} if rest else target
        seen += 1
    return node


def _where(path: str) -> str:
    return path or "the payload"


def _compare(
    old: Any, new: Any, old_doc: dict[str, Any], new_doc: dict[str, Any], path: str, out: list[str]
) -> None:
    old = _deref(old, old_doc)
    new = _deref(new, new_doc)
    if not isinstance(old, dict) or not isinstance(new, dict):
        if old != new:
            out.append(f"{_where(path)}: schema changed from {old!r} to {new!r}")
        return
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    old_req = set(old.get("required", []))
    new_req = set(new.get("required", []))
    for name in sorted(old_props.keys() - new_props.keys()):
        out.append(f"{_join(path, name)}: field removed")
    for name in sorted(new_props.keys() - old_props.keys()):
        kind = "required" if name in new_req else "optional"
        out.append(
            f"{_join(path, name)}: {kind} field added (consumers of this version reject unknown "
            "fields)"
        )
    for name in sorted(new_req - old_req):
        if name in old_props:
            out.append(f"{_join(path, name)}: became required (stored events may not have it)")
    for name in sorted(old_req - new_req):
        if name in new_props:
            out.append(f"{_join(path, name)}: no longer required (consumers rely on it)")
    for name in sorted(old_props.keys() & new_props.keys()):
        _compare(old_props[name], new_props[name], old_doc, new_doc, _join(path, name), out)
    keys = (old.keys() | new.keys()) - ANNOTATIONS - {"properties", "required", "$ref"}
    for key in sorted(keys):
        a, b = old.get(key), new.get(key)
        if (
            key in ("anyOf", "oneOf", "allOf", "prefixItems")
            and isinstance(a, list)
            and isinstance(b, list)
        ):
            if len(a) != len(b):
                out.append(f"{_where(path)}: {key} changed from {len(a)} to {len(b)} alternatives")
                continue
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                _compare(x, y, old_doc, new_doc, f"{path}[{key}{i}]", out)
        elif (
            key in ("items", "additionalProperties") and isinstance(a, dict) and isinstance(b, dict)
        ):
            _compare(a, b, old_doc, new_doc, f"{path}[]", out)
        elif key == "enum" and isinstance(a, list) and isinstance(b, list):
            lost = [v for v in a if v not in b]
            gained = [v for v in b if v not in a]
            if lost:
                out.append(f"{_where(path)}: enum values removed {lost} (stored events use them)")
            if gained:
                out.append(f"{_where(path)}: enum values added {gained} (consumers reject them)")
        elif _strip(a) != _strip(b):
            out.append(f"{_where(path)}: {key} changed from {a!r} to {b!r}")


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ANNOTATIONS}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def check(reg: EventRegistry, published: Path) -> list[str]:
    """Every reason the registry's schemas disagree with the published directory."""
    problems: list[str] = []
    generated = generate(reg)
    index_path = published / INDEX_FILE
    if not index_path.exists():
        return [f"{index_path}: no published schemas; run `make schemas` and commit the result"]
    index = json.loads(index_path.read_text(encoding="utf-8"))
    published_entries = {(e["type"], e["version"]): e for e in index.get("events", [])}
    for (type_, version), entry in sorted(published_entries.items()):
        rel = schema_path(type_, version)
        path = published / rel
        if rel not in generated:
            problems.append(
                f"{type_} v{version}: published but no longer registered; stored events of this "
                "version could not be read"
            )
            continue
        if not path.exists():
            problems.append(f"{path}: listed in {INDEX_FILE} but missing")
            continue
        old = json.loads(path.read_text(encoding="utf-8"))
        for reason in compatibility_problems(old, generated[rel]):
            problems.append(
                f"{type_} v{version}: {reason}. Publish a new version with an upcaster instead"
            )
        if entry.get("public") and not reg.is_public(type_):
            problems.append(f"{type_}: was public, is no longer (downstream systems subscribe)")
    for rel, doc in sorted(generated.items()):
        path = published / rel
        if not path.exists() or path.read_text(encoding="utf-8") != dumps(doc):
            problems.append(f"{path}: out of date; run `make schemas` and commit the result")
    return _dedupe(problems)


def examples_problems(reg: EventRegistry) -> Iterator[str]:
    """Every registered version needs an example that its model accepts and that upcasts."""
    for type_, version, model in reg.all_versions():
        try:
            data = example(type_, version)
        except (LookupError, ValueError) as exc:
            yield str(exc)
            continue
        try:
            model.model_validate(data)
            reg.decode(type_, version, data)
        except Exception as exc:  # any failure is a contract problem
            yield f"example {type_} v{version} does not decode: {exc}"


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
