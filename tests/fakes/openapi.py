"""Validating request bodies against a schema in one of the official OpenAPI specs in
`<repo>/../shared/specs/`, with `$ref`s resolved inside the spec document."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs"


@functools.cache
def _registry(name: str) -> referencing.Registry:
    spec = json.loads((SPECS / name).read_text())
    resource = referencing.Resource.from_contents(
        spec, default_specification=referencing.jsonschema.DRAFT202012
    )
    return referencing.Registry().with_resource(f"urn:{name}", resource)


@functools.cache
def component_validator(spec: str, schema: str) -> jsonschema.Draft202012Validator:
    """A validator for `#/components/schemas/<schema>` of `spec` (e.g. "openai-openapi.json")."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"urn:{spec}#/components/schemas/{schema}"}, registry=_registry(spec)
    )


def component_errors(spec: str, schema: str, body: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
        for e in component_validator(spec, schema).iter_errors(body)
    ]
