"""/docs documents every endpoint: a summary on each, and an example on each request body."""

from __future__ import annotations

from typing import Any

from crm_runtime.settings import Settings
from crm_sales.app import create_app


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_operation_has_a_summary_and_every_body_an_example() -> None:
    doc = create_app(Settings(service_name="sales")).openapi()
    missing: list[str] = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            if not op.get("summary"):
                missing.append(f"{where}: no summary")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                schema = _resolve(doc, content.get("schema", {}))
                has_example = "example" in content or "examples" in content or "examples" in schema
                if not has_example and schema.get("properties"):
                    missing.append(f"{where} ({media}): request body has no example")
    assert missing == [], "\n".join(missing)
