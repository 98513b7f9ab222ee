"""Validating request bodies against the official OpenAPI specs kept in `tests/fakes/specs/`
(gzipped, with their source, commit and licence in `manifest.json`), with `$ref`s resolved inside
the spec document. The OpenAI and Discord fakes both use it.

The published schemas are open (an object takes any property it does not name) and the OpenAI
one still marks some nulls in OpenAPI 3.0 style (`nullable: true`), which a JSON Schema
validator ignores. OpenAI refuses unknown fields, and a field Discord does not document is one
it may drop or refuse, while both take those nulls; so each spec is adjusted once as it is
loaded: objects are closed and `nullable` becomes a null type.

A check of a large body still takes a while (a 30 MB note's, a tenth of a second): the OpenAI
fake, whose chat requests carry notes, runs it off its event loop (asyncio.to_thread), which the
test's own clients share. What the others check is small: a transcription's fields and Discord's
JSON payloads, their uploads apart.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.exceptions
import referencing
import referencing.jsonschema

SPECS = Path(__file__).resolve().parent / "specs"

Schema = dict[str, Any]

# Keywords whose schema describes a child of the instance (a property's value, an array's item),
# so the child is an object of its own and can be closed there.
_CHILD_MAPS = ("properties", "patternProperties")
_CHILD = ("items", "additionalProperties", "unevaluatedProperties", "contains", "unevaluatedItems")
_COMPOSITION = ("allOf", "anyOf", "oneOf")
_NOT_SCHEMAS = ("example", "examples", "default", "const", "enum")
_ANNOTATIONS = {"description", "title", "default", "example", "examples", "deprecated", "nullable"}


def _discord_as_served(spec: dict[str, Any]) -> None:
    # Discord documents that snowflakes are returned as strings but accepted as integers too, and
    # discord.py sends integers (e.g. in message_reference); the spec only describes the string.
    schemas = spec["components"]["schemas"]
    schemas["SnowflakeType"] = {"anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}
    # discord.py sends `tts: false` with every message, edits of a webhook message too, where the
    # spec has no `tts`; Discord takes those edits (every discord.py bot makes them).
    edit = schemas["IncomingWebhookUpdateRequestPartial"]["properties"]
    edit.setdefault("tts", {"type": ["boolean", "null"]})
    # `nsfw` is a documented field of a command (Discord's docs list it for create and bulk
    # overwrite) that the spec's request schemas leave out; discord.py syncs it.
    for name in ("ApplicationCommandCreateRequest", "ApplicationCommandUpdateRequest"):
        schemas[name]["properties"].setdefault("nsfw", {"type": ["boolean", "null"]})


# Where a spec is stricter than the service it describes, and only there.
_PATCHES = {"discord-openapi.json": _discord_as_served}


def _allow_nulls(node: Any) -> None:
    """`nullable: true` (OpenAPI 3.0) as JSON Schema: null is one more allowed value."""
    if isinstance(node, list):
        for item in node:
            _allow_nulls(item)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key not in _NOT_SCHEMAS:
            _allow_nulls(value)
    if node.pop("nullable", None) is not True:
        return
    if "type" in node and not {"$ref", *_COMPOSITION} & node.keys():
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        node["type"] = [*types, "null"] if "null" not in types else types
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
    else:  # a $ref or a composition: "this, or null"
        inner = dict(node)
        node.clear()
        node["anyOf"] = [inner, {"type": "null"}]


def _resolve(document: dict[str, Any], ref: str) -> Schema | None:
    if not ref.startswith("#/"):
        return None
    node: Any = document
    for part in ref[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _in_place(document: dict[str, Any], schema: Schema, seen: set[int] | None = None) -> Iterator[Schema]:
    """`schema` and every schema applied to the same instance through $ref and composition."""
    seen = set() if seen is None else seen
    if id(schema) in seen:
        return
    seen.add(id(schema))
    yield schema
    target = _resolve(document, schema["$ref"]) if isinstance(schema.get("$ref"), str) else None
    if target is not None:
        yield from _in_place(document, target, seen)
    for key in _COMPOSITION:
        for branch in schema.get(key) or []:
            if isinstance(branch, dict):
                yield from _in_place(document, branch, seen)


def _is_object(schema: Schema) -> bool:
    kind = schema.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def _closable(document: dict[str, Any], schema: Schema) -> bool:
    """Whether an object here may hold only the properties the spec names for it. Not where the
    spec already says (additionalProperties), and not where one alternative is a free-form object
    (or any value at all): there an unnamed property is allowed by design."""
    if "additionalProperties" in schema or "unevaluatedProperties" in schema:
        return False
    shapes = list(_in_place(document, schema))
    structural = {*_CHILD_MAPS, "additionalProperties", "$ref", *_COMPOSITION}
    free_form = any(
        (_is_object(s) and not structural & s.keys()) or not (s.keys() - _ANNOTATIONS) or s.get("type") == []
        for s in shapes
    )
    return not free_form and any(_CHILD_MAPS[0] in s or _CHILD_MAPS[1] in s for s in shapes)


def _close(document: dict[str, Any], node: Any) -> None:
    """Close every object schema where an instance's value is described (a property, an item),
    and not inside $ref or composition: `unevaluatedProperties` there sees the properties that
    every branch of an allOf (and each matching anyOf/oneOf branch) names, whereas closing each
    branch would refuse the properties its siblings name."""
    if isinstance(node, list):
        for item in node:
            _close(document, item)
        return
    if not isinstance(node, dict):
        return
    children: list[Any] = []
    for key, value in node.items():
        if key in _CHILD_MAPS and isinstance(value, dict):
            children += [v for v in value.values() if isinstance(v, dict)]
        elif key in _CHILD and isinstance(value, dict):
            children.append(value)
        elif key == "prefixItems" and isinstance(value, list):
            children += value
        elif key not in _NOT_SCHEMAS and not key.startswith("x-"):
            _close(document, value)
    for child in children:
        if _closable(document, child):
            child["unevaluatedProperties"] = False
        _close(document, child)


@functools.cache
def spec(name: str) -> dict[str, Any]:
    document = json.loads(gzip.decompress((SPECS / f"{name}.gz").read_bytes()))
    if name in _PATCHES:
        _PATCHES[name](document)
    _allow_nulls(document)
    _close(document, document)
    return document


@functools.cache
def _registry(name: str) -> referencing.Registry:
    draft = referencing.jsonschema.DRAFT202012
    resource = referencing.Resource.from_contents(spec(name), default_specification=draft)
    return referencing.Registry().with_resource(f"urn:{name}", resource)


def _validator(name: str, *parts: str) -> jsonschema.Draft202012Validator:
    # Point into the spec document so its own "#/components/..." references resolve; the body
    # itself is closed here, as the values inside it were when the spec was loaded.
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1") for part in ("", *parts))
    schema: Schema = {"$ref": f"urn:{name}#{pointer}"}
    if _closable(spec(name), {"$ref": f"#{pointer}"}):
        schema["unevaluatedProperties"] = False
    return jsonschema.Draft202012Validator(schema, registry=_registry(name))


def _reason(error: jsonschema.exceptions.ValidationError) -> str:
    # "is not valid under any of the given schemas" names no field: say what the closest
    # alternative found wrong instead.
    deepest = jsonschema.exceptions.best_match([error])
    path = "/".join(map(str, deepest.absolute_path)) or "<body>"
    return f"{path}: {deepest.message}"


# Characters of a string past which an error message shows only its length and its start.
LONG_STRING = 1000


class _Long(str):
    """A long string (a note's audio in base64) as the validator sees it: the same string to
    every keyword, but shown in brief. Each failing branch of a oneOf or anyOf around it (a
    message's content is a string or a list of parts) makes a message holding the repr of the
    whole value, and on a 30 MB note those copies took the check some 20 s."""

    def __repr__(self) -> str:
        return f"<{len(self)} characters: {str.__repr__(self[:40])}…>"


def _briefly_shown(value: Any) -> Any:
    if isinstance(value, str):
        return _Long(value) if len(value) > LONG_STRING else value
    if isinstance(value, dict):
        return {key: _briefly_shown(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_briefly_shown(item) for item in value]
    return value


def _errors(validator: jsonschema.Draft202012Validator, body: Any) -> list[str]:
    errors = list(validator.iter_errors(_briefly_shown(body)))

    # A property whose value is invalid is not "evaluated" either, so an object around an error
    # also reports its known properties as unexpected: that is noise, the error inside says it.
    def noise(e: jsonschema.exceptions.ValidationError) -> bool:
        here = list(e.absolute_path)
        return e.validator == "unevaluatedProperties" and any(
            list(other.absolute_path)[: len(here)] == here
            and (len(other.absolute_path) > len(here) or other.validator != e.validator)
            for other in errors
        )

    return [_reason(e) for e in errors if not noise(e)]


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
