"""Validating request bodies against the official OpenAPI specs kept in `tests/fakes/specs/`
(gzipped, with their source, commit and licence in `manifest.json`), with `$ref`s resolved inside
the spec document. The OpenAI and Discord fakes both use it."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

SPECS = Path(__file__).resolve().parent / "specs"


def _accept_integer_snowflakes(spec: dict[str, Any]) -> None:
    # Discord documents that snowflakes are returned as strings but accepted as integers too, and
    # discord.py sends integers (e.g. in message_reference); the spec only describes the string.
    schemas = spec["components"]["schemas"]
    schemas["SnowflakeType"] = {"anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}


# Where a spec is stricter than the service it describes, and only there.
_PATCHES = {"discord-openapi.json": _accept_integer_snowflakes}


@functools.cache
def spec(name: str) -> dict[str, Any]:
    document = json.loads(gzip.decompress((SPECS / f"{name}.gz").read_bytes()))
    if name in _PATCHES:
        _PATCHES[name](document)
    return document


@functools.cache
def _registry(name: str) -> referencing.Registry:
    draft = referencing.jsonschema.DRAFT202012
    resource = referencing.Resource.from_contents(spec(name), default_specification=draft)
    return referencing.Registry().with_resource(f"urn:{name}", resource)


def _validator(name: str, *parts: str) -> jsonschema.Draft202012Validator:
    # Point into the spec document so its own "#/components/..." references resolve.
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1") for part in ("", *parts))
    return jsonschema.Draft202012Validator({"$ref": f"urn:{name}#{pointer}"}, registry=_registry(name))


def _errors(validator: jsonschema.Draft202012Validator, body: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in validator.iter_errors(body)
    ]


@functools.cache
def component_validator(name: str, schema: str) -> jsonschema.Draft202012Validator:
    """A validator for `#/components/schemas/<schema>` of spec `name` (e.g. "openai-openapi.json")."""
    spec(name)["components"]["schemas"][schema]  # KeyError if absent
    return _validator(name, "components", "schemas", schema)


@functools.cache
def request_validator(
    name: str, path: str, method: str, content_type: str
) -> jsonschema.Draft202012Validator:
    """A validator for the request body an operation of spec `name` accepts as `content_type`."""
    spec(name)["paths"][path][method]["requestBody"]["content"][content_type]["schema"]  # KeyError if absent
    return _validator(name, "paths", path, method, "requestBody", "content", content_type, "schema")


def component_errors(name: str, schema: str, body: Any) -> list[str]:
    return _errors(component_validator(name, schema), body)


def request_errors(name: str, path: str, method: str, content_type: str, body: Any) -> list[str]:
    return _errors(request_validator(name, path, method, content_type), body)
