"""A fake Azure AI Search service on 127.0.0.1 for the real `azure-search-documents` SDK.

It speaks the REST protocol the SDK sends (api-version 2026-04-01): indexes created, read,
updated and deleted at `/indexes('name')`, documents indexed with `docs/search.index`, searched
with `docs/search.post.search`, counted with `docs/$count`, read with `docs('key')`. It checks the
`api-key` header (401 without one, 403 for a wrong one or a query key writing; 403 for any when
`keys_allowed` is off, as with key authentication disabled) or a Microsoft Entra ID bearer token
(one FakeEntra issued for Azure AI Search's scope, in `tokens`; 401 for another), which
azure-core sends only over https: `start(ssl_context=...)` serves it at https://localhost. It
checks the api-version, and the shape of every body, refusing what the real service would
refuse (a request over 16 MB with a 413).

Ranking is BM25 over the index's searchable fields, weighted by the index's scoring profile,
with English stemming for fields whose analyzer is English. It runs on SQLite's FTS5 (porter
tokenizer), the same ranker the embedded manuals index uses: a parity test between the two
backends then fails only when the cloud path sends different words, forgets the title weighting
or maps results wrongly, never because two rankers disagree on a near tie. As on the service,
accents are kept (Lucene's English analyzer does not fold them: "pokemon" does not find
"Pokémon") except under standardasciifolding.lucene, and each term of the query, as split by
spaces and operators, is cut into words by the same tokenizer as the documents.

The query text is held to what the bot promises: the player's words, no query syntax. Simple
syntax (queryType simple, and semantic's keyword half) never fails to parse, so an operator in it
(+ | - " * ( ) \\) is answered as the service would answer it and kept in `violations`; full
Lucene that does not parse is a 400, as on the real service.

Switches: `fail_with(500)`, `fail_with(403)`, `fail_with(hang=30)` (longer than the client's
timeout), `fail_with(429, retry_after=60)` (throttled, with the wait the service asks for), each
for every request until `recover()` or for `times` requests, from the first or once `after`
requests are answered; and
`fail_semantic("capacityOverloaded")`, a semantic ranker that fails while keyword search works: a
query that asked for `semanticErrorHandling: partial` gets the keyword results with a 206, as on
the real service, any other semantic query a 503; `spend_semantic_quota()`, the free semantic
plan's monthly requests used up: every semantic query a 402, as the service answers it, while
keyword queries still work; `semantic_enabled = False`, the semantic ranker plan disabled: every
semantic query a 400 (FeatureNotSupportedInService), as is one naming a semantic configuration
the index does not have (UnknownSemanticConfiguration), each in the service's words;
`refuse_documents(503, times=1)`, an indexing request whose every
document is refused (a 207 whose items say so, as the service answers under heavy load), or with
`keys=` only those documents, the rest taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.strict import Strict, checked

ADMIN_KEY = "fake-search-admin-key"
QUERY_KEY = "fake-search-query-key"
SEARCH_SCOPE = "https://search.azure.com/.default"  # the audience of a token the service takes
API_VERSIONS = {"2023-11-01", "2024-07-01", "2025-09-01", "2026-04-01"}
ENGLISH_ANALYZERS = {"en.lucene", "en.microsoft"}
ANALYZERS = ENGLISH_ANALYZERS | {"standard.lucene", "standardasciifolding.lucene", "simple", "keyword"}
# \Z, not $: the service refuses a name or key ending in a line break, which $ lets through.
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}\Z")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}\Z")
DOCUMENT_KEY = re.compile(r"^[A-Za-z0-9\-=][A-Za-z0-9_\-=]{0,1023}\Z")
ACTIONS = {"upload", "merge", "mergeOrUpload", "delete"}
SEARCH_BODY = {
    "answers", "captions", "count", "debug", "facets", "filter", "highlight", "highlightPostTag",
    "highlightPreTag", "minimumCoverage", "orderby", "queryType", "scoringParameters", "scoringProfile",
    "scoringStatistics", "search", "searchFields", "searchMode", "select", "semanticConfiguration",
    "semanticErrorHandling", "semanticMaxWaitInMilliseconds", "semanticQuery", "sessionId", "skip", "top",
    "vectorFilterMode", "vectorQueries",
}  # fmt: skip
INDEX_BODY = {
    "@odata.etag", "@odata.context", "analyzers", "charFilters", "corsOptions", "defaultScoringProfile",
    "description", "encryptionKey", "fields", "name", "normalizers", "scoringProfiles", "semantic",
    "similarity", "suggesters", "tokenFilters", "tokenizers", "vectorSearch",
}  # fmt: skip
_PATH = re.compile(r"^/indexes(?:\('(?P<q>[^']*)'\)|/(?P<p>[^/('$]+))?(?P<rest>/.*)?$")
_DOC = re.compile(r"^/docs(?:\('(?P<q>[^']*)'\)|/(?P<p>[^/]+))$")
# A query's terms as the simple syntax's parser splits them, before the analyzer cuts each.
_TERM = re.compile(r'[^\s+|\-"*()\\]+')
SIMPLE_OPERATORS = set('+|-"*()\\')
SEMANTIC_ERROR_REASONS = {"maxWaitExceeded", "capacityOverloaded", "transient"}
MAX_REQUEST_BYTES = 16 * 1024 * 1024
PAGE = 1000  # search results in one response at most; the rest come by nextPageParameters
MAX_SKIP = 100_000
# Why the service refuses one document of an indexing request, for the statuses it may try again.
ITEM_REFUSED = {
    409: "A version conflict was detected when attempting to index this document. Please try again.",
    422: "The index is temporarily unavailable because it was updated with the 'allowIndexDowntime' flag "
    "set to 'true'. Please try again later.",
    503: "Your search service is temporarily unavailable, possibly due to heavy load. Please try again "
    "later.",
}
# The service's answer to a semantic query once the free plan's requests for the month are spent.
# The service's answer to a semantic query when its semantic ranker plan is Disabled.
SEMANTIC_DISABLED = "Semantic search is not enabled for this service."
SEMANTIC_QUOTA_SPENT = (
    "Free Query Semantic Usage's exceeded for the month. To continue using semantic search, please "
    "enable semantic billing: https://aka.ms/SemanticPriceDocPage"
)


class SearchError(Exception):
    def __init__(
        self, status: int, message: str, *, violation: bool | None = None, code: str = "", detail: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code, self.detail = code, detail  # the service's error code, and its inner error's
        # A 400 is a malformed request; a 404 or 403 is usually the state or the key a test set up.
        self.violation = status == 400 if violation is None else violation


@dataclass
class Received:
    method: str
    path: str
    operation: str  # create_index, get_index, index, search, count, get_document, ...
    index: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Failure:
    status: int = 500
    hang: float = 0.0
    times: int | None = None  # None: until recover()
    retry_after: float | None = None  # seconds, sent in a Retry-After header
    after: int = 0  # requests answered before the failures begin


@dataclass
class FakeIndex:
    definition: dict[str, Any]
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: f'"{uuid.uuid4().hex}"')

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in self.definition["fields"]}

    @property
    def key_field(self) -> str:
        return next(f["name"] for f in self.definition["fields"] if f.get("key"))

    @property
    def searchable(self) -> list[str]:
        return [f["name"] for f in self.definition["fields"] if f.get("searchable")]

    def semantic_configuration(self, name: str | None) -> dict[str, Any] | None:
        semantic = self.definition.get("semantic") or {}
        name = name or semantic.get("defaultConfiguration")
        return next((c for c in semantic.get("configurations") or [] if c["name"] == name), None)

    def weights(self, profile_name: str | None) -> dict[str, float]:
        profile_name = profile_name or self.definition.get("defaultScoringProfile")
        profiles = {p["name"]: p for p in self.definition.get("scoringProfiles") or []}
        if profile_name and profile_name not in profiles:
            raise SearchError(400, f"Unknown scoring profile '{profile_name}'.")
        weights = ((profiles.get(profile_name) or {}).get("text") or {}).get("weights") or {}
        return {name: float(weights.get(name, 1.0)) for name in self.searchable}


class FakeSearch(Strict):
    def __init__(self, service: str = "fake") -> None:
        self.service = service
        self.api_key = ADMIN_KEY
        self.query_key = QUERY_KEY
        self.api_version = ""
        self.indexes: dict[str, FakeIndex] = {}
        self.received: list[Received] = []
        self.failures: list[Failure] = []
        self.semantic_failure: str | None = None  # a SEMANTIC_ERROR_REASONS value while failing
        self.semantic_quota_spent = False
        self.semantic_enabled = True  # off: the service's semantic ranker plan is Disabled
        # Per indexing request to come: the status every item is refused with, 0 for none.
        self.documents_refused: list[int] = []
        self.keys_refused: set[str] | None = None
        self.violations: list[str] = []
        self.violations_expected = False
        self._released = asyncio.Event()  # set on stop: hanging handlers return at once
        # Microsoft Entra access tokens and the scope each was issued for (FakeEntra.issued): one
        # for Azure AI Search's is taken as an admin's (role-based access). And whether the
        # service takes API keys at all (`disableLocalAuth` on the service refuses them).
        self.tokens: dict[str, str] = {}
        self.scope = SEARCH_SCOPE  # the one its tokens are for: a sovereign cloud's service has its own
        self.keys_allowed = True
        self._runner: web.AppRunner | None = None
        self._tls = False
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> FakeSearch:
        """`ssl_context`: served over https at localhost, where a bearer token may be sent."""
        # The real service refuses an indexing request over 16 MB with a 413.
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._released = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        self._tls = ssl_context is not None
        host = "localhost" if self._tls else "127.0.0.1"
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        self.port = self._runner.addresses[0][1]  # port 0: the OS chose one
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}" if self._tls else f"http://127.0.0.1:{self.port}"

    def fail_with(
        self,
        status: int = 500,
        *,
        hang: float = 0.0,
        times: int | None = None,
        retry_after: float | None = None,
        after: int = 0,
    ) -> None:
        self.failures = [Failure(status, hang, times, retry_after, after)]

    def recover(self) -> None:
        self.failures = []
        self.semantic_failure = None
        self.semantic_quota_spent = False

    def spend_semantic_quota(self) -> None:
        self.semantic_quota_spent = True

    def refuse_documents(
        self, status: int = 503, *, times: int = 1, after: int = 0, keys: set[str] | None = None
    ) -> None:
        """Refuse every item of `times` indexing requests, once `after` more have been taken;
        with `keys`, only those items, the others taken (a 207 with some documents failed)."""
        self.documents_refused = [0] * after + [status] * times
        self.keys_refused = keys

    def fail_semantic(self, reason: str = "capacityOverloaded") -> None:
        if reason not in SEMANTIC_ERROR_REASONS:
            raise ValueError(f"unknown semantic error reason {reason!r}")
        self.semantic_failure = reason

    @property
    def searches(self) -> list[Received]:
        return [r for r in self.received if r.operation == "search"]

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        return self.indexes[index].documents

    # ---- dispatch --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        try:
            index, rest = self._route(request.path)
            operation = self._operation(request.method, index, rest)
            self.received.append(
                Received(
                    request.method,
                    request.path,
                    operation,
                    index,
                    dict(request.query),
                    dict(request.headers),
                    body,
                )
            )
            self._authorise(request, operation)
            version = request.query.get("api-version")
            if version not in API_VERSIONS:
                raise SearchError(400, "Invalid or missing api-version query string parameter.")
            self.api_version = version  # the request's own, for the links its answer holds
            failed = await self._fail_if_told()
            if failed is not None:
                return failed
            if isinstance(body, str):
                raise SearchError(400, "The request body is not valid JSON.")
            return await getattr(self, f"_op_{operation}")(index, rest, body)
        except SearchError as exc:
            if exc.violation:
                self.refuse(f"{request.method} {request.path}: {exc}")
            return _error(exc.status, str(exc), exc.code, exc.detail)

    def _route(self, path: str) -> tuple[str | None, str]:
        match = _PATH.match(path)
        if match is None:
            raise SearchError(404, f"The resource '{path}' was not found.", violation=True)
        return match.group("q") or match.group("p"), match.group("rest") or ""

    def _operation(self, method: str, index: str | None, rest: str) -> str:
        table = {
            ("POST", False, ""): "create_index",
            ("GET", False, ""): "list_indexes",
            ("PUT", True, ""): "put_index",
            ("GET", True, ""): "get_index",
            ("DELETE", True, ""): "delete_index",
            ("POST", True, "/docs/search.index"): "index",
            ("POST", True, "/docs/search.post.search"): "search",
            ("GET", True, "/docs/$count"): "count",
        }
        found = table.get((method, index is not None, rest))
        if found:
            return found
        if method == "GET" and index is not None and _DOC.match(rest):
            return "get_document"
        raise SearchError(404, f"The resource '{method} {rest or '/indexes'}' was not found.", violation=True)

    def _authorise(self, request: web.Request, operation: str) -> None:
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            if self.tokens.get(bearer.removeprefix("Bearer ")) == self.scope:
                return
            raise SearchError(401, "Authentication failed: the bearer token is not valid for this service.")
        key = request.headers.get("api-key")
        if key and not self.keys_allowed:
            raise SearchError(403, "Key-based authentication is disabled for this service.")
        if not key:
            raise SearchError(401, "Authentication is required: send an api-key header.")
        readable = operation in ("search", "count", "get_document")
        if key == self.api_key or (readable and key == self.query_key):
            return
        raise SearchError(403, "Access denied: the api-key is not valid for this operation.")

    async def _fail_if_told(self) -> web.Response | None:
        if not self.failures:
            return None
        failure = self.failures[0]
        if failure.after > 0:
            failure.after -= 1
            return None
        if failure.times is not None:
            failure.times -= 1
            if failure.times <= 0:
                self.failures.pop(0)
        if failure.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), failure.hang)
        response = _error(failure.status, "scripted failure")
        if failure.retry_after is not None:
            response.headers["Retry-After"] = f"{failure.retry_after:g}"
        return response

    def _lookup(self, name: str | None) -> FakeIndex:
        if name not in self.indexes:
            raise SearchError(
                404, f"No index with the name '{name}' was found in the service '{self.service}'."
            )
        return self.indexes[name]  # type: ignore[index]

    # ---- indexes ---------------------------------------------------------------------

    async def _op_create_index(self, _: None, rest: str, body: Any) -> web.Response:
        definition = _valid_index(body)
        if definition["name"] in self.indexes:
            raise SearchError(409, f"Cannot create index '{definition['name']}' because it already exists.")
        self.indexes[definition["name"]] = FakeIndex(definition)
        return web.json_response(self._index_json(definition["name"]), status=201)

    async def _op_put_index(self, name: str, rest: str, body: Any) -> web.Response:
        definition = _valid_index(body)
        if definition["name"] != name:
            raise SearchError(400, "The index name in the body does not match the one in the URL.")
        existing = self.indexes.get(name)
        if existing is None:
            self.indexes[name] = FakeIndex(definition)
            return web.json_response(self._index_json(name), status=201)
        for old in existing.definition["fields"]:
            new = next((f for f in definition["fields"] if f["name"] == old["name"]), None)
            if new is None or any(
                new.get(k) != old.get(k) for k in ("type", "key", "analyzer", "searchable")
            ):
                raise SearchError(400, f"Existing field '{old['name']}' cannot be changed or removed.")
        existing.definition = definition
        existing.etag = f'"{uuid.uuid4().hex}"'
        return web.json_response(self._index_json(name))

    async def _op_get_index(self, name: str, rest: str, body: Any) -> web.Response:
        return web.json_response(self._index_json(self._lookup(name).definition["name"]))

    async def _op_list_indexes(self, _: None, rest: str, body: Any) -> web.Response:
        return web.json_response({"value": [self._index_json(n) for n in self.indexes]})

    async def _op_delete_index(self, name: str, rest: str, body: Any) -> web.Response:
        self._lookup(name)
        del self.indexes[name]
        return web.Response(status=204)

    def _index_json(self, name: str) -> dict[str, Any]:
        index = self.indexes[name]
        return {**index.definition, "@odata.etag": index.etag}

    # ---- documents -------------------------------------------------------------------

    async def _op_count(self, name: str, rest: str, body: Any) -> web.Response:
        return web.Response(text=str(len(self._lookup(name).documents)), content_type="text/plain")

    async def _op_get_document(self, name: str, rest: str, body: Any) -> web.Response:
        index = self._lookup(name)
        match = _DOC.match(rest)
        key = (match.group("q") or match.group("p")) if match else ""
        if key not in index.documents:
            raise SearchError(404, f"Document '{key}' was not found.")
        return web.json_response(index.documents[key])

    async def _op_index(self, name: str, rest: str, body: Any) -> web.Response:
        index = self._lookup(name)
        if not isinstance(body, dict) or set(body) != {"value"} or not isinstance(body["value"], list):
            raise SearchError(400, 'The request body must be {"value": [actions]}.')
        if not body["value"] or len(body["value"]) > 1000:
            raise SearchError(400, "A batch holds between 1 and 1000 actions.")
        fields, key_field = index.fields, index.key_field
        results, all_ok = [], True
        refused = self.documents_refused.pop(0) if self.documents_refused else None
        for action in body["value"]:
            kind = action.get("@search.action", "upload")
            if kind not in ACTIONS:
                raise SearchError(400, f"Unknown @search.action '{kind}'.")
            key = action.get(key_field)
            if not isinstance(key, str) or not DOCUMENT_KEY.match(key):
                raise SearchError(
                    400,
                    f"Invalid document key: '{key}'. Keys can only contain letters, digits, underscore (_), "
                    "dash (-), or equal sign (=).",
                )
            document = {k: v for k, v in action.items() if k != "@search.action"}
            unknown = set(document) - set(fields)
            if unknown:
                raise SearchError(
                    400,
                    f"The property '{sorted(unknown)[0]}' does not exist on type 'search.documentFields'.",
                )
            if refused and (self.keys_refused is None or key in self.keys_refused):
                results.append(
                    {
                        "key": key,
                        "status": False,
                        "errorMessage": ITEM_REFUSED[refused],
                        "statusCode": refused,
                    }
                )
                all_ok = False
                continue
            existed = key in index.documents
            status = 200 if existed else 201
            if kind == "delete":
                index.documents.pop(key, None)
                status = 200
            elif kind == "merge" and not existed:
                results.append(
                    {"key": key, "status": False, "errorMessage": "Document not found.", "statusCode": 404}
                )
                all_ok = False
                continue
            elif kind in ("merge", "mergeOrUpload") and existed:
                index.documents[key] = {**index.documents[key], **document}
            else:
                index.documents[key] = {name: None for name in fields} | document
            results.append({"key": key, "status": True, "errorMessage": None, "statusCode": status})
        return web.json_response({"value": results}, status=200 if all_ok else 207)

    async def _op_search(self, name: str, rest: str, body: Any) -> web.Response:
        index = self._lookup(name)
        if not isinstance(body, dict):
            raise SearchError(400, "The request body must be a search request object.")
        unknown = set(body) - SEARCH_BODY
        if unknown:
            raise SearchError(400, f"Unknown search parameters: {', '.join(sorted(unknown))}.")
        if body.get("filter") or body.get("orderby") or body.get("facets") or body.get("vectorQueries"):
            raise SearchError(400, "This fake serves no $filter, $orderby, facets or vector queries.")
        query_type = body.get("queryType", "simple")
        if query_type not in ("simple", "full", "semantic"):
            raise SearchError(400, f"Invalid queryType '{query_type}'.")
        mode = body.get("searchMode", "any")
        if mode not in ("any", "all"):
            raise SearchError(400, f"Invalid searchMode '{mode}'.")
        self._check_query_text(body.get("search"), query_type)
        semantic = None
        if query_type == "semantic":
            semantic = index.semantic_configuration(body.get("semanticConfiguration"))
            if not self.semantic_enabled:
                raise SearchError(
                    400,
                    SEMANTIC_DISABLED + "\r\nParameter name: queryType",
                    violation=False,
                    code="FeatureNotSupportedInService",
                    detail="SemanticQueriesNotAvailable",
                )
            if semantic is None:
                # The index's state, not a malformed request: the configuration may be deleted,
                # or the setting name one index-manuals has not added yet.
                unknown = f"Unknown semantic configuration '{body.get('semanticConfiguration')}'."
                raise SearchError(
                    400,
                    unknown + "\r\nParameter name: semanticConfiguration",
                    violation=False,
                    code="InvalidRequestParameter",
                    detail="UnknownSemanticConfiguration",
                )
            if self.semantic_quota_spent:  # whatever semanticErrorHandling asks: no partial answer
                raise SearchError(402, SEMANTIC_QUOTA_SPENT, violation=False)
        elif body.get("captions") or body.get("answers") or body.get("semanticConfiguration"):
            raise SearchError(400, "captions, answers and semanticConfiguration need queryType 'semantic'.")
        error_mode = body.get("semanticErrorHandling", "fail")
        if error_mode not in ("partial", "fail"):
            raise SearchError(400, f"Invalid semanticErrorHandling '{error_mode}'.")
        partial = semantic is not None and self.semantic_failure is not None
        if partial and error_mode == "fail":
            raise SearchError(503, f"Semantic ranking failed: {self.semantic_failure}.", violation=False)
        if partial:
            semantic = None  # the keyword half's results, unranked by the reranker and uncaptioned
        fields = index.fields
        select = _names(body.get("select")) or [n for n, f in fields.items() if f.get("retrievable", True)]
        highlight = _names(body.get("highlight"))
        search_fields = _names(body.get("searchFields")) or index.searchable
        for fname in select:
            if fname not in fields:
                raise SearchError(400, f"Invalid $select: unknown field '{fname}'.")
        for fname in highlight + search_fields:
            if fname not in index.searchable:
                raise SearchError(400, f"Field '{fname}' is not searchable.")
        top, skip = body.get("top", 50), body.get("skip", 0)
        if not isinstance(top, int) or not isinstance(skip, int) or top < 0 or skip < 0:
            raise SearchError(400, "top and skip must be non-negative integers.")
        if skip > MAX_SKIP:
            raise SearchError(400, f"Value of $skip must be less than or equal to {MAX_SKIP}.")
        pre, post = body.get("highlightPreTag", "<em>"), body.get("highlightPostTag", "</em>")
        hits = _rank(
            index, body.get("search"), mode, search_fields, index.weights(body.get("scoringProfile"))
        )
        best = max((h[1] for h in hits), default=1.0) or 1.0
        value = []
        # Server-side paging: past PAGE results the rest is asked for with nextPageParameters.
        more = top > PAGE and len(hits) > skip + PAGE
        for key, score, snippets in hits[skip : skip + min(top, PAGE)]:
            document = index.documents[key]
            hit: dict[str, Any] = {"@search.score": score, **{n: document.get(n) for n in select}}
            if highlight:
                marked = {
                    n: [_mark(snippets[n], pre, post)] for n in highlight if "\x02" in snippets.get(n, "")
                }
                hit["@search.highlights"] = marked
            if semantic is not None:
                hit["@search.rerankerScore"] = round(4.0 * score / best, 4)
                if str(body.get("captions", "")).startswith("extractive"):
                    content = [
                        c["fieldName"]
                        for c in semantic["prioritizedFields"].get("prioritizedContentFields", [])
                    ]
                    caption = next((snippets[n] for n in content if n in snippets), "")
                    hit["@search.captions"] = [
                        {"text": _mark(caption, "", ""), "highlights": _mark(caption, pre, post)}
                    ]
            value.append(hit)
        result: dict[str, Any] = {"value": value}
        if body.get("count"):
            result["@odata.count"] = len(hits)
        if more:
            result["@search.nextPageParameters"] = {**body, "skip": skip + PAGE, "top": top - PAGE}
            result["@odata.nextLink"] = (
                f"{self.endpoint}/indexes('{name}')/docs/search.post.search?api-version={self.api_version}"
            )
        if partial:
            result["@search.semanticPartialResponseReason"] = self.semantic_failure
            result["@search.semanticPartialResponseType"] = "baseResults"
            return web.json_response(result, status=206)
        return web.json_response(result)

    def _check_query_text(self, text: Any, query_type: str) -> None:
        if not isinstance(text, str) or text.strip() == "*":  # "*" alone: every document
            return
        if query_type == "full":
            problem = _lucene_problem(text)
            if problem:
                raise SearchError(400, f"Failed to parse query string {text!r}: {problem}.")
        operators = sorted(SIMPLE_OPERATORS & set(text))
        if operators:
            self.refuse(
                f"search {text!r} holds query syntax {' '.join(operators)}: the bot sends the player's "
                "words only"
            )


def _lucene_problem(text: str) -> str | None:
    """Why full Lucene syntax would not parse, for the mistakes a query built from words makes."""
    unescaped = re.sub(r"\\.", "", text)
    if unescaped.count('"') % 2:
        return "unbalanced quotes"
    outside = re.sub(r'"[^"]*"', "", unescaped)
    depth = 0
    for char in outside:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return "a ')' closes nothing"
    if depth:
        return "unbalanced parentheses"
    if re.search(r"(?:^|\s)(?:AND|OR|NOT|&&|\|\||[+\-!])\s*$", outside) or re.match(
        r"\s*(?:AND|OR)\b", outside
    ):
        return "an operator without its term"
    return None


def _error(status: int, message: str, code: str = "", detail: str = "") -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if detail:  # as the service words it: the inner error's message is the outer's first line
        error["details"] = [{"code": detail, "message": message.split("\r\n")[0]}]
    return web.json_response({"error": error}, status=status)


def _valid_index(body: Any) -> dict[str, Any]:
    """The checks the real service makes on an index definition, those this project can trip."""
    if not isinstance(body, dict):
        raise SearchError(400, "The request body must be an index definition object.")
    unknown = set(body) - INDEX_BODY
    if unknown:
        raise SearchError(400, f"Unknown properties in the index definition: {', '.join(sorted(unknown))}.")
    name = body.get("name")
    if not isinstance(name, str) or not INDEX_NAME.match(name):
        raise SearchError(400, f"Invalid index name {name!r}: lowercase letters, digits and dashes.")
    fields = body.get("fields")
    if not isinstance(fields, list) or not fields:
        raise SearchError(400, "An index needs at least one field.")
    names: set[str] = set()
    for f in fields:
        fname = f.get("name")
        if not isinstance(fname, str) or not FIELD_NAME.match(fname) or fname in names:
            raise SearchError(400, f"Invalid or repeated field name {fname!r}.")
        names.add(fname)
        if not str(f.get("type", "")).startswith(("Edm.", "Collection(")):
            raise SearchError(400, f"Field '{fname}' has no valid type.")
        analyzer = f.get("analyzer")
        if analyzer is not None:
            if not f.get("searchable"):
                raise SearchError(400, f"Field '{fname}' has an analyzer but is not searchable.")
            if analyzer not in ANALYZERS:
                raise SearchError(400, f"Field '{fname}': unknown analyzer '{analyzer}'.")
    keys = [f for f in fields if f.get("key")]
    if len(keys) != 1 or keys[0].get("type") != "Edm.String":
        raise SearchError(400, "An index needs exactly one key field, of type Edm.String.")
    searchable = {f["name"] for f in fields if f.get("searchable")}
    profiles = body.get("scoringProfiles") or []
    for profile in profiles:
        for fname in ((profile.get("text") or {}).get("weights") or {}).keys():
            if fname not in searchable:
                raise SearchError(
                    400, f"Scoring profile '{profile.get('name')}' weights unknown field '{fname}'."
                )
    default = body.get("defaultScoringProfile")
    if default and default not in {p.get("name") for p in profiles}:
        raise SearchError(400, f"The default scoring profile '{default}' is not defined.")
    semantic = body.get("semantic") or {}
    configurations = semantic.get("configurations") or []
    for config in configurations:
        prioritized = config.get("prioritizedFields") or {}
        used = [(prioritized.get("titleField") or {}).get("fieldName")]
        used += [c.get("fieldName") for c in prioritized.get("prioritizedContentFields") or []]
        used += [c.get("fieldName") for c in prioritized.get("prioritizedKeywordsFields") or []]
        for fname in filter(None, used):
            if fname not in names:
                raise SearchError(
                    400, f"Semantic configuration '{config.get('name')}' names unknown field '{fname}'."
                )
    default_config = semantic.get("defaultConfiguration")
    if default_config and default_config not in {c.get("name") for c in configurations}:
        raise SearchError(400, f"The default semantic configuration '{default_config}' is not defined.")
    return body


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    return [n.strip() for n in str(value).split(",") if n.strip()]


def _mark(snippet: str, pre: str, post: str) -> str:
    return snippet.replace("\x02", pre).replace("\x03", post)


def _rank(
    index: FakeIndex, text: str | None, mode: str, search_fields: list[str], weights: dict[str, float]
) -> list[tuple[str, float, dict[str, str]]]:
    """(key, score, snippets by field) best first: FTS5 BM25 with the profile's field weights."""
    columns = index.searchable
    if not columns:
        return []
    all_docs = text is None or text.strip() in ("", "*")
    # FTS5 folds case itself: Python's lower() makes "İ" an "i" and a combining dot, no index's word.
    terms = list(dict.fromkeys(_TERM.findall(text or "")))
    if not all_docs and not terms:
        return []
    analyzers = {index.fields[c].get("analyzer") for c in columns}
    if analyzers <= ENGLISH_ANALYZERS:
        tokenizer = "porter unicode61 remove_diacritics 0"
    elif analyzers == {"standardasciifolding.lucene"}:
        tokenizer = "unicode61 remove_diacritics 2"
    else:
        tokenizer = "unicode61 remove_diacritics 0"
    db = sqlite3.connect(":memory:")
    try:
        quoted = ", ".join(f'"{c}"' for c in columns)
        db.execute(
            f"CREATE VIRTUAL TABLE docs USING fts5({quoted}, doc_key UNINDEXED, tokenize='{tokenizer}')"
        )
        db.executemany(
            f"INSERT INTO docs ({quoted}, doc_key) VALUES ({', '.join('?' * (len(columns) + 1))})",
            [(*(str(d.get(c) or "") for c in columns), k) for k, d in index.documents.items()],
        )
        snippets = ", ".join(f"snippet(docs, {i}, char(2), char(3), '…', 24)" for i in range(len(columns)))
        if all_docs:
            rows = db.execute(f"SELECT doc_key, 1.0, {snippets} FROM docs ORDER BY rowid").fetchall()
        else:
            joiner = " OR " if mode == "any" else " AND "
            match = joiner.join('"' + t.replace('"', '""') + '"' for t in terms)
            scope = " ".join(f'"{c}"' for c in search_fields)
            bm25 = ", ".join(str(weights.get(c, 1.0)) for c in columns)
            rows = db.execute(
                f"SELECT doc_key, -bm25(docs, {bm25}, 0.0) AS score, {snippets} FROM docs "
                "WHERE docs MATCH ? ORDER BY score DESC, rowid",
                (f"{{{scope}}} : ({match})",),
            ).fetchall()
    finally:
        db.close()
    return [(row[0], float(row[1]), dict(zip(columns, row[2:], strict=True))) for row in rows]


@contextlib.asynccontextmanager
async def running_fake_search() -> AsyncIterator[FakeSearch]:
    """A running fake search service, stopped at the end; fails if it refused a request as
    malformed or was sent query syntax."""
    async with checked(await FakeSearch().start()) as fake:
        yield fake
