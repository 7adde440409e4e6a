"""Validate JSON against OpenAI's published OpenAPI schemas (the subset in ``/work/shared/openai``).

The document mixes OpenAPI 3.1 (``anyOf [..., {"type": "null"}]``) with 3.0 leftovers (``nullable: true``,
boolean ``exclusiveMinimum``) that JSON Schema 2020-12 ignores or misreads, so those are rewritten first.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # it ships no stubs
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_PATH = Path(__file__).parents[2].parent / "shared/openai/openapi-subset.json"
SCHEMA_AVAILABLE = SCHEMA_PATH.is_file()
_URI = "urn:openai:openapi-subset"


def _to_2020_12(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_2020_12(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_2020_12(v) for k, v in node.items() if k != "nullable"}
    for bound in ("Minimum", "Maximum"):  # 3.0: {"minimum": 0, "exclusiveMinimum": true}
        flag = out.get(f"exclusive{bound}")
        if isinstance(flag, bool):
            del out[f"exclusive{bound}"]
            if flag and bound.lower() in out:
                out[f"exclusive{bound}"] = out.pop(bound.lower())
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _registry() -> Registry:
    document = _to_2020_12(json.loads(SCHEMA_PATH.read_text()))
    registry: Registry = Registry().with_resource(
        _URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return registry


def schema_names() -> list[str]:
    return sorted(_registry().contents(_URI)["components"]["schemas"])


def validate(instance: object, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` matches ``components.schemas[schema_name]``.

    Skips the calling test when the published schema file is not present.
    """
    if not SCHEMA_AVAILABLE:
        pytest.skip(f"OpenAI schema file not found at {SCHEMA_PATH}")
    if schema_name not in schema_names():
        raise KeyError(f"no schema named {schema_name!r} in {SCHEMA_PATH.name}")
    schema = {"$ref": f"{_URI}#/components/schemas/{schema_name}"}
    Draft202012Validator(schema, registry=_registry()).validate(instance)
