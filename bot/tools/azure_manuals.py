"""Game-manual search on Azure AI Search, and `index-manuals`, which builds that index.

The query sent is made of the player's words only (the same words, minus the same stopwords, as
the embedded FTS index uses), joined by spaces and sent with the simple syntax in `any` mode. A
word holds Unicode letters, digits and combining marks only, none of which is an operator of the
simple or the full Lucene syntax, so no character the player says reaches the service as query
syntax, and nothing ever goes into a `$filter`. The index gives a section title four times the
weight of its text, as the embedded index does, so both backends rank the manuals alike, and a
passage that shares too few of the question's words is left out by the same rule
(bot/tools/relevance.py), so neither answers an off-topic question from an unrelated manual.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.search.documents.aio import SearchClient
from azure.search.documents.indexes.aio import SearchIndexClient
from azure.search.documents.indexes.models import (
    ScoringProfile,
    SearchableField,
    SearchFieldDataType,
    SearchIndex,
    SemanticConfiguration,
    SemanticField,
    SemanticPrioritizedFields,
    SemanticSearch,
    SimpleField,
    TextWeights,
)
from azure.search.documents.models import IndexingResult

from bot import sentences as say
from bot.config import NeedsHuman, SearchSettings, shown_url
from bot.logs import Outage
from bot.tools.base import Passage, ToolError

# One vocabulary for both backends: the same words are searched for on either.
from bot.tools.embedded import TITLE_WEIGHT, query_terms, words
from bot.tools.manual_chunks import Chunk, chunk_manuals
from bot.tools.relevance import CANDIDATES_PER_RESULT, all_known, evidence

log = logging.getLogger(__name__)

FIELDS = ["key", "title", "text", "source"]
SCORING_PROFILE = "title-first"
ANALYZER = "en.lucene"  # English stemming and stopwords, like the embedded index's porter tokenizer
BATCH = 500  # documents per indexing request; the service takes up to 1000
# JSON bytes per indexing request: the service refuses one over 16 MB with a 413, which the async
# SDK's own splitting of a batch answers with a TypeError (azure-search-documents 12.0.0).
BATCH_BYTES = 12 * 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# An indexing request's items the service refuses for now (a 207): 503 under heavy load, 409 a
# version conflict, 422 an index briefly offline for an update. Sent again after 1, 2, 4 s.
RETRIED_DOCUMENT_STATUSES = frozenset({409, 422, 503})
DOCUMENT_TRIES = 4
DOCUMENT_RETRY_SECONDS = 1.0
# \Z, not $: $ also matches before a final line break, which the service refuses in a key.
_VALID_KEY = re.compile(r"^[A-Za-z0-9\-=][A-Za-z0-9_\-=]{0,1023}\Z")
_TAG = re.compile(r"</?em>")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# How long keyword queries stand in for semantic ones after the service refused semantic ranking
# with a 402 (the free plan's monthly requests spent): asking again each question would cost a
# refused request each, and billing, once an operator enables it, is used within the hour.
SEMANTIC_REFUSED_SECONDS = 3600.0


class SearchServiceError(Exception):
    """The search service refused or could not be reached; str() is the reason in one line."""


class NoToken(ClientAuthenticationError):
    """No Microsoft Entra ID token could be had: the request was never sent to the service."""

    def __init__(self, reason: str) -> None:
        super().__init__(message=reason)
        self.reason = reason


def _token_failure(exc: BaseException, chain: int) -> str:
    """The one line of DefaultAzureCredential's report that says why: the credential that failed
    (the chain stops at the first that tries and fails), in its first sentence; or, when every
    one of the `chain` credentials was tried, none applied, and what an operator can set."""
    text = getattr(exc, "message", None) or str(exc)
    tried = [line.strip() for line in str(text).splitlines() if line.startswith("\t")]
    if chain > 1 and len(tried) >= chain:
        return (
            f"none of the {len(tried)} credentials DefaultAzureCredential tries applied: set "
            "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or run with a managed or "
            "workload identity"
        )
    line = (tried[-1] if tried else _first_line(exc)).split("\r")[0]
    # Entra's description runs on over several sentences, a trace and a correlation id.
    first, dot, _ = line.partition(". ")
    return first + dot.strip()


class _EntraToken:
    """DefaultAzureCredential, its failures told apart from the service's refusals (NoToken)."""

    def __init__(self) -> None:
        from azure.identity.aio import DefaultAzureCredential

        self._credential = DefaultAzureCredential()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        try:
            return await self._credential.get_token(*scopes, **kwargs)
        except ClientAuthenticationError as exc:
            raise NoToken(_token_failure(exc, len(self._credential.credentials))) from exc

    async def close(self) -> None:
        await self._credential.close()

    async def __aenter__(self) -> _EntraToken:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()


def _credential(settings: SearchSettings, api_key: str) -> AzureKeyCredential | _EntraToken:
    if settings.auth == "entra":
        return _EntraToken()
    if not api_key:
        raise SearchServiceError("AZURE_SEARCH_API_KEY is empty: set it in the environment or .env")
    return AzureKeyCredential(api_key)


def auth_mode(settings: SearchSettings) -> str:
    return "Microsoft Entra ID" if settings.auth == "entra" else "API key"


def document_key(chunk_key: str) -> str:
    """A valid Azure document key (letters, digits, _ - =, not starting with _) for a chunk.

    Chunk keys from ordinary file names are used as they are; anything else is encoded with
    URL-safe base64, which stays stable across runs so a re-index still updates in place.
    """
    if _VALID_KEY.match(chunk_key):
        return chunk_key
    return "b64-" + base64.urlsafe_b64encode(chunk_key.encode()).decode().rstrip("=")


def _check_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SearchServiceError(
            f"search.endpoint {endpoint!r} is not a URL like https://<service>.search.windows.net"
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        # The key travels in a header: never in clear text beyond this machine.
        raise SearchServiceError(
            f"search.endpoint {endpoint!r} must use https (plain http only for localhost)"
        )
    return endpoint.strip().rstrip("/")


class _ShortWaits(AsyncRetryPolicy):
    """azure-core's retries, but where a player waits a Retry-After longer than one request's
    timeout is not waited out: the service's refusal (a 429 or 503 asking for a minute) ends the
    call at once, instead of holding the player until the call's budget runs out and logging no
    answer at all. Where none does, such a wait is said before it is waited out."""

    def __init__(self, timeout: float, player_waits: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timeout, self._player_waits = timeout, player_waits

    def _long_wait(self, response: Any) -> float | None:
        wait = self.get_retry_after(response) if response is not None else None
        return wait if wait is not None and wait > self._timeout else None

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        if self._player_waits and self._long_wait(response) is not None:
            return False
        return super().is_retry(settings, response)

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        # azure-core's first retry follows at once: a service that answered, throttling or
        # failing without a Retry-After, would be sent the same request again straight away.
        backoff = super().get_backoff_time(settings)
        history = settings["history"]
        if len(history) == 1 and history[0].http_response is not None:
            return min(settings["backoff"], settings["max_backoff"])
        return backoff

    def _is_method_retryable(self, settings: dict[str, Any], request: Any, response: Any = None) -> bool:
        # azure-core tries a POST again on 500, 503 and 504 only, but a 429 (the service
        # throttling) has done nothing either: every POST sent here is a search, or indexing
        # actions (mergeOrUpload, delete) that do the same sent twice.
        if response is not None and response.status_code == 429:
            return True
        return super()._is_method_retryable(settings, request, response)

    async def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        # An hour's Retry-After, slept on without a word, looks like a hang to whoever waits.
        if (wait := self._long_wait(response)) is not None:
            log.warning(
                "the search service answered %s and asks to wait %g s before the next try: waiting",
                response.http_response.status_code,
                wait,
            )
        await super().sleep(settings, transport, response)


def _client_options(settings: SearchSettings, player_waits: bool = True) -> dict[str, Any]:
    """Timeouts and the SDK's own retries (with backoff).

    A search (a POST) is tried again on 429, 500, 503 and 504 but not after a read timeout, so a
    hanging service costs a player one timeout; GETs such as the document count retry on both.
    Unless a player waits (`index-manuals` has an operator, and no budget), the service's
    Retry-After is waited out however long, saying so when it is longer than a request's timeout.
    """
    retries = settings.retries
    options: dict[str, Any] = {
        "connection_timeout": settings.timeout_seconds,
        "read_timeout": settings.timeout_seconds,
        "retry_policy": _ShortWaits(
            settings.timeout_seconds,
            player_waits,
            retry_total=retries,
            retry_connect=retries,
            retry_read=retries,
            retry_status=retries,
        ),
    }
    if settings.audience:
        # The SDK asks Entra for "<audience>/.default"; a key ignores it.
        options["audience"] = settings.audience
    return options


def _budget(settings: SearchSettings) -> float:
    """A hard ceiling for one call, retries and backoff included, so a player's turn ends."""
    return settings.timeout_seconds * (settings.retries + 2)


def _status(exc: BaseException) -> int | None:
    return exc.status_code if isinstance(exc, HttpResponseError) else None


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, HttpResponseError) and exc.error is not None and exc.error.message:
        return str(exc.error.message).strip().splitlines()[0]
    text = getattr(exc, "message", None) or str(exc)
    lines = str(text).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# The service's inner error codes for a semantic query it cannot rank: the index has no semantic
# configuration of that name (the setting names one `index-manuals` has not added yet, or it was
# deleted), or the service's semantic ranker plan is Disabled.
SEMANTIC_UNAVAILABLE_CODES = frozenset({"UnknownSemanticConfiguration", "SemanticQueriesNotAvailable"})


def _semantic_unavailable(exc: BaseException) -> bool:
    """A semantic query refused while a keyword query would be answered: a 402 (the free plan's
    monthly requests spent), or a 400 whose inner error is one of SEMANTIC_UNAVAILABLE_CODES."""
    status = _status(exc)
    if status == 402:
        return True
    error = getattr(exc, "error", None)
    if status != 400 or error is None:
        return False
    codes = {error.code, *(getattr(d, "code", None) for d in error.details or [])}
    return bool(codes & SEMANTIC_UNAVAILABLE_CODES)


def _missing_index(exc: BaseException) -> bool:
    return isinstance(exc, ResourceNotFoundError) or _status(exc) == 404


def _problem(exc: BaseException) -> str | None:
    """ "credentials" or "configuration" when the operator must fix something, else None."""
    status = _status(exc)
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        return "credentials"
    # A 400 to the queries this module builds is the index refusing them (a field the bot reads
    # missing or not searchable): waiting cures nothing. Semantic ranking it cannot give is
    # answered from keyword ranking before it gets here (_semantic_unavailable).
    if _missing_index(exc) or status == 400:
        return "configuration"
    return None


def describe(exc: BaseException, settings: SearchSettings) -> str:
    """The exact reason a call failed, in one line an operator can act on (never the key)."""
    endpoint, status, problem = shown_url(settings.endpoint), _status(exc), _problem(exc)
    if isinstance(exc, NoToken):
        return f"no Microsoft Entra ID token for Azure AI Search (search.auth = entra): {exc.reason}"
    if problem == "credentials" and settings.auth == "entra":
        said = (
            f"the Microsoft Entra ID token was refused ({status}) by {endpoint}: give the identity "
            "the Search Index Data Reader role (Search Index Data Contributor and Search Service "
            "Contributor for index-manuals), and enable role-based access on the service"
        )
        if status == 401:
            # A token for another audience is no token to the service, as one lacking a role is
            # not: a sovereign cloud's takes its own cloud's only.
            audience = settings.audience or "https://search.azure.com, the public cloud's"
            said += f"; a token for another cloud is refused too (search.audience: {audience})"
        return said
    if problem == "credentials":
        return f"AZURE_SEARCH_API_KEY was refused ({status}) by {endpoint}: check the key"
    if _missing_index(exc):
        # The service's 404 for a missing index names it ("The index 'manuals' for service '…'
        # was not found."); another service's (an Azure OpenAI resource's address pasted here)
        # does not, and `index-manuals` would be told to run itself.
        said = _first_line(exc)
        if status == 404 and f"'{settings.index}'" not in said:
            return (
                f"{endpoint} answered 404 ({said}), not as an Azure AI Search service: set "
                "search.endpoint to its address, https://<service>.search.windows.net"
            )
        return (
            f"index '{settings.index}' not found at {endpoint}: set search.index to the index's name,"
            " or run `python -m bot index-manuals` to make it"
        )
    if isinstance(exc, TimeoutError):
        return f"no answer from {endpoint} within {_budget(settings):.0f} s"
    if isinstance(exc, ServiceRequestError):
        return f"cannot reach {endpoint}: {_first_line(exc)}"
    if isinstance(exc, ServiceResponseError):
        return f"no usable answer from {endpoint}: {_first_line(exc)}"
    if status is not None:
        return f"{endpoint} answered {status}: {_first_line(exc)}"
    return f"{endpoint}: {_first_line(exc)}"


def _excerpt(doc: dict[str, Any]) -> str:
    captions = doc.get("@search.captions") or []
    for caption in captions:
        text = caption.get("text") or caption.get("highlights") or ""
        if text:
            return _TAG.sub("", str(text)).strip()
    highlights = doc.get("@search.highlights") or {}
    fragments = [f for field in ("text", "title") for f in highlights.get(field) or []]
    return " … ".join(_TAG.sub("", f).strip() for f in fragments)


class AzureSearchManuals:
    """ManualsBackend over an Azure AI Search index built by `index_manuals`."""

    def __init__(
        self, client: SearchClient, settings: SearchSettings, indexes: SearchIndexClient | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._indexes = indexes  # for `check` to read the index's definition
        # Every player's question meets an outage: said once a reason, not once a question.
        self._outage = Outage(log, "manuals search: the search service answers again", quiet=logging.INFO)
        # A reranker overloaded, or out of its free quota, fails every question for hours.
        self._reranker = Outage(log, "manuals search: semantic ranking works again", quiet=logging.INFO)
        self._semantic_refused_at: float | None = None  # time.monotonic() of the last 402
        self._credential: _EntraToken | None = None  # closed with the clients, which do not

    @classmethod
    async def open(cls, settings: SearchSettings, api_key: str) -> AzureSearchManuals:
        """`api_key` is used when search.auth is "key"; "entra" asks azure-identity for tokens."""
        endpoint = _check_endpoint(settings.endpoint)
        credential, options = _credential(settings, api_key), _client_options(settings)
        client = SearchClient(endpoint, settings.index, credential, **options)
        manuals = cls(client, settings, SearchIndexClient(endpoint, credential, **options))
        if isinstance(credential, _EntraToken):
            manuals._credential = credential
        return manuals

    def _query(self, query: str, top: int, semantic: bool = True) -> dict[str, Any] | None:
        terms = query_terms(query)
        if not terms:
            return None
        options: dict[str, Any] = {
            "search_text": " ".join(terms),
            "search_mode": "any",
            "select": FIELDS,
            "top": top,
        }
        configuration = self._settings.semantic_configuration if semantic else ""
        if configuration:
            # The reranker reads the whole question; it gets the player's words, never their syntax.
            options |= {
                "query_type": "semantic",
                "semantic_configuration_name": configuration,
                "semantic_query": " ".join(words(query)),
                "query_caption": "extractive",
                # A reranker that fails or is overloaded leaves the keyword ranking, which answers
                # as well as keyword mode does, instead of failing the player's question.
                "semantic_error_mode": "partial",
            }
        else:
            options |= {"query_type": "simple", "highlight_fields": "text,title"}
        return options

    def _semantic_refused(self) -> bool:
        refused = self._semantic_refused_at
        return refused is not None and time.monotonic() - refused < SEMANTIC_REFUSED_SECONDS

    async def _documents(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        results = await self._client.search(**options)
        return [doc async for doc in results]

    async def search(self, query: str, top: int) -> list[Passage]:
        terms = query_terms(query)
        options = self._query(query, top * CANDIDATES_PER_RESULT, semantic=not self._semantic_refused())
        if options is None:
            return []
        try:
            async with asyncio.timeout(_budget(self._settings)):
                try:
                    docs = await self._documents(options)
                except HttpResponseError as exc:
                    # Semantic ranking refused, which no semanticErrorHandling softens; the keyword
                    # ranking answers as well as it does in keyword mode, where every question
                    # would otherwise fail until an operator acts (see _semantic_unavailable).
                    if options.get("query_type") != "semantic" or not _semantic_unavailable(exc):
                        raise
                    self._semantic_refused_at = time.monotonic()
                    self._reranker.failed(
                        "refused",
                        "manuals search: semantic ranking refused (%s), answering from keyword ranking: %s",
                        _status(exc),
                        _first_line(exc),
                    )
                    options = self._query(query, top * CANDIDATES_PER_RESULT, semantic=False) or {}
                    docs = await self._documents(options)
                # The embedded index's rule, on the passages returned whatever ranked them: the
                # semantic reranker only reorders what the keyword half matched, and a floor on
                # its score would be a second rule, tuned to a model, the backends would not share.
                found = evidence(terms, [(str(d.get("title") or ""), str(d.get("text") or "")) for d in docs])
                try:
                    every_known = await all_known(terms, found, self._known)
                except AzureError as exc:
                    # The passages are in hand: a word not known to be used is taken as unused,
                    # which leaves out only passages holding a single word of the question.
                    every_known = False
                    log.info(
                        "manuals search: whether the manuals use a word is unknown: %s",
                        describe(exc, self._settings),
                    )
        except (AzureError, TimeoutError) as exc:
            self._log_failure(exc)
            raise ToolError(say.MANUALS_UNAVAILABLE) from exc
        self._outage.answered()
        if options.get("query_type") == "semantic" and docs:
            if docs[0].get("@search.reranker_score") is None:
                self._reranker.failed(
                    "reranker", "manuals search: semantic ranking failed, answering from keyword ranking"
                )
            else:
                self._reranker.answered()
        passages: list[Passage] = []
        for doc in [d for d, e in zip(docs, found, strict=True) if e.answers(every_known)][:top]:
            reranked = doc.get("@search.reranker_score")
            passages.append(
                Passage(
                    title=str(doc.get("title") or ""),
                    text=str(doc.get("text") or ""),
                    source=str(doc.get("source") or doc.get("key") or ""),
                    score=float(reranked if reranked is not None else doc.get("@search.score") or 0.0),
                    excerpt=_excerpt(doc),
                )
            )
        return passages

    async def _known(self, term: str) -> bool:
        """Whether any manual uses the word: one keyword query for a single document key."""
        results = await self._client.search(
            search_text=term, search_mode="any", query_type="simple", select=["key"], top=1
        )
        return any([doc async for doc in results])

    def _log_failure(self, exc: BaseException) -> None:
        reason, problem = describe(exc, self._settings), _problem(exc)
        if problem is not None:
            self._outage.failed(
                reason, "manuals search: %s problem: %s", problem, reason, level=logging.ERROR
            )
        else:
            self._outage.failed(reason, "manuals search unavailable: %s", reason)

    async def check(self) -> str:
        """The index answers a question's own request; a NeedsHuman detail when its definition
        differs from the one `index-manuals` makes (what `index-manuals` would refuse)."""

        settings = self._settings
        refused, mend = "", "it is enabled again"
        try:
            async with asyncio.timeout(_budget(settings)):
                count = await self._client.get_document_count()
                if count:
                    # A question's own request proves what counting cannot: the fields it reads
                    # and searches are in the index, and any semantic configuration exists.
                    try:
                        await self._documents(self._query("manual", 1) or {})
                    except HttpResponseError as exc:
                        if not _semantic_unavailable(exc) or not settings.semantic_configuration:
                            raise
                        # Questions are answered from keyword ranking meanwhile (see search).
                        refused = f"{_status(exc)}: {_first_line(exc)}"
                        if _status(exc) == 400 and "UnknownSemanticConfiguration" in str(exc):
                            mend = "the index has it: run `python -m bot index-manuals` to add it"
                        await self._documents(self._query("manual", 1, semantic=False) or {})
                differences = await self._differences()
        except (AzureError, TimeoutError) as exc:
            said = describe(exc, settings)
            if isinstance(exc, ServiceRequestError):
                # No connection made at all (no such host, nothing listening): at `check` and
                # start-up that is the address set, where a player's question meets an outage.
                said += ": check search.endpoint"
            raise SearchServiceError(said) from exc
        if not count:
            raise SearchServiceError(f"index '{settings.index}' is empty: run `python -m bot index-manuals`")
        mode = (
            f"semantic ranking '{settings.semantic_configuration}'"
            if settings.semantic_configuration
            else "keyword"
        )
        said = (
            f"Azure AI Search index '{settings.index}': {count} documents, {mode} queries,"
            f" {auth_mode(settings)} auth"
        )
        if refused:
            return NeedsHuman(
                f"{said}, but semantic ranking is refused ({refused}): questions are answered"
                f" from keyword ranking until {mend}"
            )
        if differences is None:
            return f"{said}; its definition not compared (a query key cannot read it)"
        if differences:
            # Questions are answered, but by other words or another ranking than the embedded
            # index's: a person must rebuild it, as `index-manuals` would say.
            return NeedsHuman(
                f"{said}; it is not the index voxdesk makes ({'; '.join(differences)}): delete it and"
                " run `python -m bot index-manuals` again, or set search.index to another name"
            )
        return said

    async def _differences(self) -> list[str] | None:
        """How the index's definition differs from `index_definition`'s; None when the key may
        not read it (a query key, which is enough to serve players)."""
        if self._indexes is None:
            return None
        try:
            found = await self._indexes.get_index(self._settings.index)
        except (ClientAuthenticationError, HttpResponseError) as exc:
            if _status(exc) == 403:
                return None
            raise
        return _differences(found, index_definition(self._settings))

    async def probe(self) -> None:
        """What /healthz asks, as often as a load balancer probes: the service answers this key
        for this index, and it holds documents. A document count, no query: a semantic query
        each probe would be billed (and spend the free semantic quota), and `check` covers
        what only a question's request proves."""
        settings = self._settings
        try:
            async with asyncio.timeout(_budget(settings)):
                count = await self._client.get_document_count()
        except (AzureError, TimeoutError) as exc:
            # A running bot's outage, as a player's question meets it: no setting named.
            raise SearchServiceError(describe(exc, settings)) from exc
        if not count:
            raise SearchServiceError(f"index '{settings.index}' is empty: run `python -m bot index-manuals`")

    async def aclose(self) -> None:
        await self._client.close()
        if self._indexes is not None:
            await self._indexes.close()
        if self._credential is not None:
            await self._credential.close()


# ---- index-manuals ------------------------------------------------------------------------


def index_definition(settings: SearchSettings) -> SearchIndex:
    semantic = None
    if settings.semantic_configuration:
        semantic = SemanticSearch(
            default_configuration_name=settings.semantic_configuration,
            configurations=[_semantic_configuration(settings.semantic_configuration)],
        )
    return SearchIndex(
        name=settings.index,
        fields=[
            SimpleField(name="key", type=SearchFieldDataType.STRING, key=True),
            SearchableField(name="title", analyzer_name=ANALYZER),
            SearchableField(name="text", analyzer_name=ANALYZER),
            SimpleField(name="source", type=SearchFieldDataType.STRING, filterable=True),
        ],
        scoring_profiles=[
            ScoringProfile(
                name=SCORING_PROFILE, text_weights=TextWeights(weights={"title": TITLE_WEIGHT, "text": 1.0})
            )
        ],
        default_scoring_profile=SCORING_PROFILE,
        semantic_search=semantic,
    )


def _semantic_configuration(name: str) -> SemanticConfiguration:
    return SemanticConfiguration(
        name=name,
        prioritized_fields=SemanticPrioritizedFields(
            title_field=SemanticField(field_name="title"),
            content_fields=[SemanticField(field_name="text")],
        ),
    )


def _shown(value: Any) -> str:
    return str(getattr(value, "value", value))


def _differences(found: SearchIndex, wanted: SearchIndex) -> list[str]:
    """How an existing index differs from the one `index_definition` makes, in what the bot's
    queries rely on: its fields' types, key, retrievability, searchability and analyzer, and the
    title-first ranking. Fields the bot does not make stay empty in its documents: no matter."""
    have = {f.name: f for f in found.fields or []}
    said: list[str] = []
    for want in wanted.fields:
        name, field = want.name, have.get(want.name)
        if field is None:
            said.append(f"no field '{name}'")
            continue
        if _shown(field.type) != _shown(want.type):
            said.append(f"'{name}' is {_shown(field.type)}, not {_shown(want.type)}")
        if bool(field.key) != bool(want.key):
            said.append(f"'{name}' is {'' if field.key else 'not '}the key")
        if field.hidden:
            said.append(f"'{name}' is not retrievable")
        if bool(field.searchable) != bool(want.searchable):
            said.append(f"'{name}' is {'' if field.searchable else 'not '}searchable")
        elif want.searchable:
            # One analyzer for indexing and queries, as the local index's tokenizer is for both.
            used = [
                f"{_shown(a)}{role}"
                for a, role in (
                    (field.analyzer_name, ""),
                    (field.index_analyzer_name, " to index"),
                    (field.search_analyzer_name, " to search"),
                )
                if a
            ]
            if used != [ANALYZER]:
                said.append(
                    f"'{name}' is analyzed with {' and '.join(used) or 'no analyzer'}, not {ANALYZER}"
                )
    profiles = {p.name: p for p in found.scoring_profiles or []}
    weights = {p.name: p.text_weights.weights for p in wanted.scoring_profiles or [] if p.text_weights}
    if found.default_scoring_profile != wanted.default_scoring_profile:
        default = found.default_scoring_profile
        said.append(
            f"its default scoring profile is {repr(default) if default else 'none'}, "
            f"not '{wanted.default_scoring_profile}'"
        )
    elif wanted.default_scoring_profile:
        profile = profiles.get(wanted.default_scoring_profile)
        have_weights = profile.text_weights.weights if profile and profile.text_weights else {}
        want_weights = weights.get(wanted.default_scoring_profile, {})
        if {k: float(v) for k, v in have_weights.items()} != want_weights:
            said.append(
                f"scoring profile '{wanted.default_scoring_profile}' weighs "
                f"{_weighs(have_weights)}, not {_weighs(want_weights)}"
            )
    return said


def _weighs(weights: dict[str, float]) -> str:
    return ", ".join(f"{name} {float(w):g}" for name, w in sorted(weights.items())) or "nothing"


async def _ensure_index(indexes: SearchIndexClient, settings: SearchSettings) -> str:
    """Create the index when missing; add the configured semantic configuration when absent.
    An index there already whose fields or ranking differ from those the bot makes is refused:
    uploaded into, it would answer questions other than the embedded index does, or not at all."""
    wanted = index_definition(settings)
    try:
        index = await indexes.get_index(settings.index)
    except ResourceNotFoundError:
        await indexes.create_index(wanted)
        return "created"
    differences = _differences(index, wanted)
    if differences:
        # Azure cannot change a field's analyzer or searchability in place: only a new index can.
        raise SearchServiceError(
            f"index '{settings.index}' at {shown_url(settings.endpoint)} is not the one voxdesk makes "
            f"({'; '.join(differences)}): delete it and run `python -m bot index-manuals` again, or set "
            "search.index to another name"
        )
    name = settings.semantic_configuration
    configurations = list(index.semantic_search.configurations or []) if index.semantic_search else []
    if name and all(c.name != name for c in configurations):
        configurations.append(_semantic_configuration(name))
        index.semantic_search = SemanticSearch(default_configuration_name=name, configurations=configurations)
        await indexes.create_or_update_index(index)
        return f"given semantic configuration '{name}'"
    return "already there"


def _batches(documents: list[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
    """The documents in order, in requests of at most BATCH documents and about BATCH_BYTES; a
    document larger than that alone, for the service to accept or refuse."""
    batch: list[dict[str, str]] = []
    size = 0
    for document in documents:
        length = _json_size(document)
        if batch and (len(batch) >= BATCH or size + length > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(document)
        size += length
    if batch:
        yield batch


def _json_size(document: dict[str, str]) -> int:
    # ASCII-escaped JSON, as azure-core sends a body; 64 for the action's name.
    return len(json.dumps(document)) + 64


def _document(chunk: Chunk) -> dict[str, str]:
    return {"key": document_key(chunk.key), "title": chunk.title, "text": chunk.text, "source": chunk.source}


async def _send(
    send: Callable[[list[dict[str, str]]], Awaitable[list[IndexingResult]]], batch: list[dict[str, str]]
) -> list[IndexingResult]:
    """Each document's result, the batch's items the service refused for now sent again."""
    results: dict[str, IndexingResult] = {}
    pending = batch
    for attempt in range(DOCUMENT_TRIES):
        results |= {r.key: r for r in await send(pending)}
        pending = [
            d
            for d in pending
            if not results[d["key"]].succeeded and results[d["key"]].status_code in RETRIED_DOCUMENT_STATUSES
        ]
        if not pending or attempt + 1 == DOCUMENT_TRIES:
            break
        wait = DOCUMENT_RETRY_SECONDS * 2**attempt
        first = results[pending[0]["key"]]
        log.warning(
            "the search service refused %d passages (%s) for now, sending them again in %g s: %s",
            len(pending),
            first.status_code,
            wait,
            first.error_message,
        )
        await asyncio.sleep(wait)
    return [results[d["key"]] for d in batch]


async def _stale_keys(client: SearchClient, current: set[str]) -> dict[str, str]:
    """Keys in the index that no manual section has any more (a section or manual removed), each
    with the manual it came from."""
    results = await client.search(search_text="*", select=["key", "source"], top=100_000)
    return {doc["key"]: doc["source"] async for doc in results if doc["key"] not in current}


# Manuals a refusal names, at most: a service refusing everything under load names them all.
NAMED_MANUALS = 5


def _refused(refused: list[IndexingResult], chunks: list[Chunk], documents: list[dict[str, str]]) -> str:
    """The passages refused, said by manual, and the first one's section and reason: its key
    alone may be encoded ("b64-…"), naming no manual to look at."""
    chunk_of = {d["key"]: c for d, c in zip(documents, chunks, strict=True)}
    manuals = Counter(chunk_of[r.key].source for r in refused)
    named = ", ".join(f"{m} ({n})" for m, n in list(manuals.items())[:NAMED_MANUALS])
    if len(manuals) > NAMED_MANUALS:
        named += f" and {len(manuals) - NAMED_MANUALS} more manuals"
    first, chunk = refused[0], chunk_of[refused[0].key]
    return (
        f"{len(refused)} of {len(documents)} passages were refused, of {named}; the first, section "
        f"'{chunk.title}' of {chunk.source}: {first.error_message} ({first.status_code})"
    )


async def index_manuals(settings: SearchSettings, api_key: str, manuals_dir: Path) -> str:
    """Create the index if missing and upload every manual section; a re-run updates in place.

    Returns a one-line summary; raises SearchServiceError with the reason when it cannot.
    """
    chunks = chunk_manuals(manuals_dir)
    if not chunks:
        raise SearchServiceError(f"no manuals (*.md) with sections found in {manuals_dir}")
    endpoint = _check_endpoint(settings.endpoint)
    options = _client_options(settings, player_waits=False)
    documents = [_document(c) for c in chunks]
    for chunk, document in zip(chunks, documents, strict=True):
        # Sent alone, the service would refuse it with a bare 413 naming no manual; refused
        # here, before anything is uploaded, no run leaves the index half updated for it.
        if (size := _json_size(document)) > MAX_REQUEST_BYTES:
            raise SearchServiceError(
                f"section '{chunk.title}' of {chunk.source} is {size / 2**20:.0f} MB, over the 16 MB "
                "Azure AI Search takes in one request: split it under more ## headings"
            )
    # Only now: an Entra credential is closed in the `finally` below, on every way out after it.
    credential = _credential(settings, api_key)
    try:
        async with SearchIndexClient(endpoint, credential, **options) as indexes:
            state = await _ensure_index(indexes, settings)
        async with SearchClient(endpoint, settings.index, credential, **options) as client:
            results = []
            for batch in _batches(documents):
                results += await _send(client.merge_or_upload_documents, batch)
            # Removed sections are deleted whatever became of the uploads: a passage refused for
            # good would otherwise keep a removed manual (an old refund policy) answering, run
            # after run, and a key no manual has any more is wrong in the index either way. Those
            # of a manual with a passage refused are kept: under a key it had before (a name
            # with a backslash), that passage is still the manual's only one in the index.
            refused = [r for r in results if not r.succeeded]
            source_of = {d["key"]: d["source"] for d in documents}
            held = {source_of[r.key] for r in refused}
            scanned = await _stale_keys(client, set(source_of))
            stale = {key: manual for key, manual in scanned.items() if manual not in held}
            # As the uploads, in batches: over 1000 keys (a manuals folder reorganised) in one
            # request are refused, every run, and the removed sections go on answering.
            kept: list[IndexingResult] = []
            for batch in _batches([{"key": key} for key in stale]):
                kept += [r for r in await _send(client.delete_documents, batch) if not r.succeeded]
            problems = []
            if refused:
                problems.append(_refused(refused, chunks, documents))
            if kept:
                first, manual = kept[0], stale[kept[0].key] or "no manual named"
                problems.append(
                    f"{len(kept)} of {len(stale)} removed passages could not be deleted; "
                    f"{first.key} of {manual}: {first.error_message} ({first.status_code})"
                )
            if problems:
                raise SearchServiceError("; and ".join(problems))
    except AzureError as exc:
        raise SearchServiceError(describe(exc, settings)) from exc
    finally:
        if isinstance(credential, _EntraToken):
            await credential.close()
    added = sum(1 for r in results if r.status_code == 201)
    manuals = len({c.source for c in chunks})
    return (
        f"index '{settings.index}' {state}: {len(documents)} passages from {manuals} manuals "
        f"in {manuals_dir} ({added} added, {len(documents) - added} updated, {len(stale)} removed)"
    )
