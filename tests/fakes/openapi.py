"""Validating request bodies, and the fakes' answers, against the official OpenAPI specs kept in
`tests/fakes/specs/` (gzipped, with their source, commit and licence in `manifest.json`), with
`$ref`s resolved inside the spec document. The OpenAI and Discord fakes both use it: a request
the spec refuses is the bot's fault, an answer it does not allow is the fake's.

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
import re
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
    # A forward's reference is of type 1 (FORWARD, in Discord's docs); the spec knows only 0.
    schemas["MessageReferenceType"]["oneOf"].append({"title": "FORWARD", "const": 1})
    # The guild's active threads come without the `has_more` of the archived listings the spec
    # shares its schema with: Discord's docs list only `threads` and `members`, and libraries
    # tested against the API found it absent (discord.js #9164, nyxx #443).
    active = json.loads(json.dumps(schemas["ThreadsResponse"]))
    del active["properties"]["has_more"]
    active["required"].remove("has_more")
    schemas["GuildActiveThreadsResponse"] = active
    answer = spec["paths"]["/guilds/{guild_id}/threads/active"]["get"]["responses"]["200"]
    answer["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/GuildActiveThreadsResponse"
    }


# Where a spec is stricter (or looser) than the service it describes, and only there.
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


def _closest(error: jsonschema.exceptions.ValidationError) -> jsonschema.exceptions.ValidationError:
    """Inside an anyOf/oneOf that nothing matched (two object shapes a channel may have), the
    first error of the alternative that came closest: of the ones the value is of the right type
    for, with the right discriminator (a `type` field's value), the one with the fewest errors.
    Where it is right for none, the anyOf's own error says more than any one alternative's."""
    error = jsonschema.exceptions.best_match([error])
    while error.context:
        branches: dict[Any, list[jsonschema.exceptions.ValidationError]] = {}
        for inner in error.context:
            branches.setdefault(inner.relative_schema_path[0], []).append(inner)
        near = [
            errors
            for errors in branches.values()
            if not any(e.validator in ("type", "const", "enum") and len(e.relative_path) <= 1 for e in errors)
        ]
        if not near:
            break
        error = jsonschema.exceptions.best_match(min(near, key=len)) or error
    return error


def _reason(error: jsonschema.exceptions.ValidationError) -> str:
    # "is not valid under any of the given schemas" names no field: say what the closest
    # alternative found wrong instead.
    deepest = _closest(error)
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


@functools.cache
def _templates(name: str) -> list[tuple[re.Pattern[str], str]]:
    """Each path of spec `name` as a pattern, the most literal first: "/webhooks/{id}/{token}/
    messages/@original" before "/webhooks/{id}/{token}/messages/{message_id}", which a request
    for the original message matches too."""
    found = []
    for path in spec(name)["paths"]:
        parts = re.split(r"(\{[^}/]+\})", path)
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        literal = sum(len(part) for part in parts if not part.startswith("{"))
        found.append((literal, re.compile(pattern), path))
    return [(pattern, path) for _, pattern, path in sorted(found, key=lambda f: -f[0])]


def spec_path(name: str, path: str) -> str | None:
    """The path of spec `name` that a request's path (without the API's base) is an instance of."""
    return next((template for pattern, template in _templates(name) if pattern.fullmatch(path)), None)


@functools.cache
def response_validator(
    name: str, path: str, method: str, status: int, content_type: str
) -> jsonschema.Draft202012Validator | None:
    """A validator for the body an operation of spec `name` answers with `status` as
    `content_type`; None where the spec gives that answer no body (a 204). KeyError for an
    answer the operation does not have."""
    responses = spec(name)["paths"][path][method]["responses"]
    key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
    content = responses[key].get("content")
    if not content:
        return None
    content[content_type]["schema"]  # KeyError if absent
    return _validator(name, "paths", path, method, "responses", key, "content", content_type, "schema")


@functools.cache
def _item_validator(
    name: str, path: str, method: str, status: int, content_type: str
) -> jsonschema.Draft202012Validator | None:
    """For an answer that is a list of one kind (a page of messages), a validator of one item."""
    responses = spec(name)["paths"][path][method]["responses"]
    key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
    schema = responses[key]["content"][content_type]["schema"]
    if set(schema) - {"type", "items"} or not isinstance(schema.get("items"), dict):
        return None
    return _validator(
        name, "paths", path, method, "responses", key, "content", content_type, "schema", "items"
    )


# Items already found valid, as JSON: the same messages come back page after page, and
# validating each one every time (a millisecond a message) would slow the tests that read
# history down. Bounded: cleared when full.
_VALID_ITEMS: set[str] = set()
_VALID_ITEMS_MAX = 100_000


def _list_errors(validator: jsonschema.Draft202012Validator, body: list[Any]) -> list[str]:
    errors = []
    for i, item in enumerate(body):
        seen = json.dumps(item, sort_keys=True)
        if seen in _VALID_ITEMS:
            continue
        found = _errors(validator, item)
        if found:
            errors += [f"{i}/{e}" if not e.startswith("<body>") else f"{i}{e[6:]}" for e in found]
        else:
            if len(_VALID_ITEMS) >= _VALID_ITEMS_MAX:
                _VALID_ITEMS.clear()
            _VALID_ITEMS.add(seen)
    return list(dict.fromkeys(errors))  # the item's schema and the list's both close it: one reason


def response_errors(
    name: str, path: str, method: str, status: int, content_type: str, body: Any
) -> list[str]:
    """Why the spec does not allow this answer to `method` `path` (a request's own path); [] if it does."""
    template = spec_path(name, path)
    try:
        validator = response_validator(name, template or "", method.lower(), status, content_type)
    except KeyError:
        return [f"the spec has no {status} {content_type} answer to {method.upper()} {template or path}"]
    if validator is None:
        return [] if body in (None, b"", "") else [f"the spec gives a {status} answer no body"]
    if isinstance(body, list):
        items = _item_validator(name, template or "", method.lower(), status, content_type)
        if items is not None:
            return _list_errors(items, body)
    return _errors(validator, body)
