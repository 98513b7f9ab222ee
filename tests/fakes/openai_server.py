"""A fake OpenAI (and Azure OpenAI) server on 127.0.0.1 for the real `openai` SDK.

It validates every chat request against `CreateChatCompletionRequest` and every transcription
against `CreateTranscriptionRequest` from the official spec (closed against unknown fields),
checks what the API checks beyond the schema (each tool result answers a tool call of the
assistant message before it, each tool call is answered, and no call's id is over 40
characters), refuses what we never want to send
(the deprecated `functions`) and a note's audio that is not strict base64 of the format it
declares, and, as the audio models it stands for do, a request with neither audio in nor audio
out. It answers with scripted replies carrying real audio in the format asked for, keeps the
audio ids it gave out (an assistant message naming any other, or one expired by its clock, which
may run ahead of this host's, is a 400 `audio_not_found`), stops
at `max_completion_tokens` with finish_reason "length", can be told to take its time (or hold one
answer until a test lets it go), and to fail
(chat and transcription apart, or at a step of the script): 429 with retry-after, or as OpenAI
sends one for a limit run out (`rate_limited`: its x-ratelimit-* headers and message), 500, a hang
past the client's timeout, a connection closed with no answer once the request is read, or reset
before its body is, malformed
JSON, OpenAI's 429 "Request too large" for a request over the tokens per minute on its own
(`tokens_per_minute`), a proxy's 413 for a request body over its limit (`proxy_max_bytes`),
Azure's content filter (told to, or on words it is told to block,
wherever in the prompt they are). Its usage can be given the shape a compatible server gives it. A chat or
transcription on a model it does not list (`models`) is OpenAI's 404 model_not_found, and a
max_completion_tokens over the model's most (`max_output_tokens`) its 400 invalid_value; a model
the project is not allowed (`denied_models`) its 403 model_not_found, and a model lookup by a key
lacking the api.model.read scope (`reads_models`) its 403 "Missing scopes"; on Azure,
an api-version it does not serve (`api_versions`) or a deployment it lacks is Azure's 404, and a
field the api-version does not document (`AZURE_FIELDS`), or a reply voice or format its enum
lacks, is Azure's 400. Azure's answers carry
its content filter's results (`prompt_filter_results`, each choice's `content_filter_results`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import math
import re
import socket
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiohttp import web

from bot.audio import pcm_to_wav, reply_from_pcm
from tests.fakes.openapi import component_errors, response_errors
from tests.fakes.strict import Strict, checked

SPEC = "openai-openapi.json"
API_KEY = "sk-test-fake"
AZURE_KEY = "azure-test-key"
AZURE_NOT_FOUND = {"code": "404", "message": "Resource not found"}
# The fields each api-version the fake serves documents, by its inference.json in
# github.com/Azure/azure-rest-api-specs (specification/cognitiveservices/data-plane/AzureOpenAI/
# inference/preview/2025-01-01-preview/inference.json, commit 4c95bb2873f0a0c29340e1fe1e7963fcbf9dc0b2):
# a chat request is createChatCompletionRequest with chatCompletionsRequestCommon, each message is
# its role's schema, a user message's parts are text, image_url or input_audio, and a transcription
# is createTranscriptionRequest. Azure answers a field its api-version does not know with a 400
# naming it, "Unrecognized request argument supplied: ...". `model` is in none of them, yet the SDK
# sends it with every request and Azure takes it: the path names the deployment.
AZURE_FIELDS: dict[str, dict[str, frozenset[str]]] = {
    "2025-01-01-preview": {
        "request": frozenset(
            {
                "model",
                "messages",
                "data_sources",
                "reasoning_effort",
                "frequency_penalty",
                "logit_bias",
                "logprobs",
                "top_logprobs",
                "max_tokens",
                "max_completion_tokens",
                "n",
                "modalities",
                "prediction",
                "audio",
                "presence_penalty",
                "parallel_tool_calls",
                "response_format",
                "seed",
                "stop",
                "stream",
                "stream_options",
                "temperature",
                "top_p",
                "tools",
                "tool_choice",
                "function_call",
                "functions",
                "user",
                "user_security_context",
                "store",
                "metadata",
            }
        ),
        "developer": frozenset({"role", "content", "name"}),
        "system": frozenset({"role", "content", "name"}),
        "user": frozenset({"role", "content", "name"}),
        # No `audio`: an earlier reply cannot be named by its audio id in this version.
        "assistant": frozenset({"role", "content", "refusal", "name", "tool_calls", "function_call"}),
        "tool": frozenset({"role", "content", "tool_call_id"}),
        "function": frozenset({"role", "content", "name"}),
        "user parts": frozenset({"text", "image_url", "input_audio"}),
        # The values its `audio` (a reply's voice and format) takes: an enum each.
        "audio.voice": frozenset({"alloy", "echo", "fable", "onyx", "nova", "shimmer"}),
        "audio.format": frozenset({"wav", "mp3", "flac", "opus", "pcm16"}),
        "transcription": frozenset(
            {
                "model",
                "file",
                "prompt",
                "response_format",
                "temperature",
                "language",
                "timestamp_granularities[]",
            }
        ),
    },
}
# The Azure OpenAI api-versions the fake serves: the one config.toml documents (audio in Chat
# Completions came with it). The OpenAI spec names none. Azure answers any other, or none, with a
# 404 that names no deployment.
AZURE_API_VERSIONS = frozenset(AZURE_FIELDS)
AUDIO_TOKENS_PER_SECOND = 10  # roughly what OpenAI bills for audio input
AUDIO_OUT_TOKENS_PER_SECOND = 20  # and for audio output

Reply = dict[str, Any]
Responder = Callable[[dict[str, Any]], Reply]


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    query: dict[str, str]

    @property
    def audio_bytes(self) -> int:
        """Bytes of base64 audio this request carried (input_audio parts only)."""
        total = 0
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if part.get("type") == "input_audio":
                        total += len(part["input_audio"]["data"])
        return total

    @property
    def audio_ids(self) -> list[str]:
        return [m["audio"]["id"] for m in self.body.get("messages", []) if m.get("audio")]


@dataclass
class Failure:
    status: int = 500
    retry_after: float | None = None
    hang: float = 0.0
    malformed: bool = False
    content_filter: bool = False  # Azure's 400 for a prompt its content filter blocked
    headers: dict[str, str] = field(default_factory=dict)  # such as OpenAI's x-ratelimit-reset-*
    code: str | None = None  # the error's code, such as OpenAI's "insufficient_quota" on a 429
    message: str = "scripted failure"  # the error's message, such as a 429's naming the limit
    error_type: str = "server_error"  # the error's type, such as "invalid_request_error"
    param: str | None = None  # what it names as refused, such as "messages[2].content"
    # The request read, the connection closes with no answer (after `hang`): as a proxy's idle
    # timeout cuts off a long generation, or a server that restarts drops what it was answering.
    drop: bool = False
    # The answer waits for this to be set (or the fake to stop) before its `hang`: a test lets a
    # request's answer come at the step of its own that it chooses.
    held: asyncio.Event | None = None


def rate_limited(
    limit: int,
    reset: str,
    per: str = "requests per day (RPD)",
    retry_after: str | None = None,
    again: str | None = None,
    model: str = "gpt-audio-1.5",
    held: asyncio.Event | None = None,
) -> Failure:
    """OpenAI's 429 rate_limit_exceeded for a limit run out (`per` names it, as its message does),
    with the headers it sends: every x-ratelimit-* of both limits, the one run out at 0 remaining
    and `reset` the time until it is whole again ("6h0m0s", as Go words a duration; a day limit
    refills over the day, so that is hours, though one request may go again sooner), and a
    retry-after only when `retry_after` is given. The message's "try again in" is `again`, by
    default `reset` (for a day's 200 requests OpenAI words it "7m12s", the time one comes back)."""
    limits = "requests" if "requests" in per else "tokens"
    other = "tokens" if limits == "requests" else "requests"
    headers = {
        f"x-ratelimit-limit-{limits}": str(limit),
        f"x-ratelimit-remaining-{limits}": "0",
        f"x-ratelimit-reset-{limits}": reset,
        f"x-ratelimit-limit-{other}": "30000",
        f"x-ratelimit-remaining-{other}": "29000",
        f"x-ratelimit-reset-{other}": "2s",
    }
    if retry_after is not None:
        headers["retry-after"] = retry_after
    message = (
        f"Rate limit reached for {model} in organization org-fake on {per}: Limit {limit}, Used"
        f" {limit}, Requested 1. Please try again in {again or reset}. Visit"
        " https://platform.openai.com/account/rate-limits to learn more."
    )
    return Failure(
        status=429,
        headers=headers,
        code="rate_limit_exceeded",
        message=message,
        error_type=limits,
        held=held,
    )


@dataclass
class Held:
    """A script's answer that waits for `released` to be set (or the fake to stop) before it
    comes: a test lets a request's answer come late, at the step of its own that it chooses."""

    released: asyncio.Event
    then: Responder = field(default_factory=lambda: answer("Here is your answer."))


@dataclass
class FakeOpenAI(Strict):
    # One per chat request, in order: a reply, a reply held back (Held), or a Failure of it.
    script: list[Responder | Held | Failure] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)  # consumed before the script
    transcription_failures: list[Failure] = field(default_factory=list)  # one per transcription
    model_failures: list[Failure] = field(default_factory=list)  # one per model lookup
    chat_seconds: float = 0.0  # how long an answer takes to come
    # Chat requests whose connection is reset once their headers are read, before their body is:
    # as a server resets a connection during a large upload, or one it closed as it was reused.
    resets_before_body: int = 0
    transcribe_seconds: float = 0.0  # how long a transcription takes to come
    received: list[Received] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    violations_expected: bool = False
    transcript: str = "how many points do i have"
    # The organisation's tokens per minute: a chat request whose prompt and max_completion_tokens
    # together come to more is OpenAI's 429 rate_limit_exceeded "Request too large", however long
    # it waits.
    tokens_per_minute: int | None = None
    # A proxy or gateway in front of the API (nginx's client_max_body_size): a request whose body
    # is over this many bytes is its 413 page, the API never reached.
    proxy_max_bytes: int | None = None
    too_big: list[str] = field(default_factory=list)  # the paths of requests the proxy refused
    # Words Azure's prompt filter blocks wherever a request holds them (a message's words, a tool
    # call's arguments or result): its 400 content_filter, as for `Failure(content_filter=True)`.
    blocked_words: list[str] = field(default_factory=list)
    models: list[str] = field(
        default_factory=lambda: ["gpt-audio-1.5", "gpt-audio", "gpt-4o-mini-transcribe"]
    )
    # Models the key's project is not allowed (its model access in OpenAI's settings): a lookup of
    # one, or a request on it, is OpenAI's 403 model_not_found naming the project.
    denied_models: list[str] = field(default_factory=list)
    # False: a restricted key given Models: None, which lacks the api.model.read scope. Each model
    # lookup (GET /v1/models, /v1/models/{id}) is then OpenAI's "insufficient permissions" answer
    # naming that scope, with `scope_status` (403 for it; OpenAI answers some other missing scopes
    # 401), while chats and transcriptions are answered.
    reads_models: bool = True
    scope_status: int = 403
    # The most tokens each model answers with: a request's max_completion_tokens over it is
    # OpenAI's 400 invalid_value, whatever the rest of the request.
    max_output_tokens: dict[str, int] = field(
        default_factory=lambda: {"gpt-audio-1.5": 16_384, "gpt-audio": 16_384}
    )
    # Azure's deployments and the model each runs, which its answers name in `model` as Azure's
    # do (a request names the deployment alone); any other is a 404 DeploymentNotFound.
    deployments: dict[str, str] = field(
        default_factory=lambda: {
            "voxdesk-audio": "gpt-audio-2025-08-28",
            "gpt-4o-mini-transcribe": "gpt-4o-mini-transcribe",
        }
    )
    # A 401 says the key it was given in full, as some OpenAI-compatible servers do (OpenAI's own
    # shows its first and last characters).
    echo_key: bool = False
    api_versions: frozenset[str] = AZURE_API_VERSIONS
    audio_ttl: int = 3600
    # Seconds its clock runs ahead of this host's: its `created`, the audio ids' `expires_at` and
    # whether one has expired are all by its clock, as a provider's are.
    clock_ahead: float = 0.0
    issued_audio: dict[str, int] = field(default_factory=dict)  # audio id -> expires_at
    # False: a server that gives audio ids but takes none back (each is a 400 audio_not_found).
    takes_audio_back: bool = True
    billed: list[dict[str, Any]] = field(default_factory=list)  # the usage of every answer given
    # A compatible server's own usage: each answer's (chat and transcription) goes out as this
    # makes it, with nulls and fields left out that the API always sends.
    usage_as: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # A test's script plays a compatible server whose answers leave the API's spec on purpose (a
    # call without an id, an audio id that is no string): they are not held to the spec.
    compatible_server: bool = False
    # A compatible server's own `created` of each completion (milliseconds, say) from the API's.
    created_as: Callable[[int], Any] | None = None
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)  # set on stop: hangs end at once
    # Chat requests take their scripted failure or answer in the order they came, whichever's
    # checks end first (see _chat): the next ticket to give, the first not yet served, and those
    # served out of turn.
    _tickets: int = 0
    _turn: int = 0
    _served: set[int] = field(default_factory=set)
    _turn_moved: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    # ---- lifecycle ------------------------------------------------------------------------

    def __post_init__(self) -> None:
        self._knows_its_versions()

    def _knows_its_versions(self) -> None:
        """An api-version served with no field table would answer each request with a KeyError's
        500, which reads as the bot's fault: the test that names one is refused at once."""
        if lacking := sorted(set(self.api_versions) - set(AZURE_FIELDS)):
            raise ValueError(
                f"api_versions names {', '.join(lacking)}, which AZURE_FIELDS has no fields for: add"
                " its fields from that api-version's inference.json, or serve only "
                f"{', '.join(sorted(AZURE_FIELDS))}"
            )

    async def start(self) -> FakeOpenAI:
        self._knows_its_versions()  # api_versions may have been set since
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._held_to_spec])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_get("/openai/models", self._models)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/audio/transcriptions", self._transcribe)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)  # 0: any free one
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    @web.middleware
    async def _held_to_spec(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Hold a successful answer of the API to its spec. Not Azure's (its own API, whose spec
        the repository does not carry), nor a compatible server's a test plays
        (`compatible_server`, `usage_as`, `created_as`); errors have no schema there."""
        response = await handler(request)
        own = not self.compatible_server and self.usage_as is None and self.created_as is None
        if (
            own
            and request.path.startswith("/v1/")
            and isinstance(response, web.Response)
            and 200 <= response.status < 300
            and response.content_type == "application/json"
            and isinstance(response.body, bytes)
        ):
            body = json.loads(response.body)
            path = request.path.removeprefix("/v1")
            for error in response_errors(
                SPEC, path, request.method, response.status, "application/json", body
            ):
                self.answered_off_spec(f"{request.method} {request.path} {response.status}: {error}")
        return response

    async def stop(self) -> None:
        # Before the cleanup, which would otherwise wait for every hanging request to finish.
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": API_KEY}

    def now(self) -> float:
        """The time by this server's clock."""
        return time.time() + self.clock_ahead

    @property
    def chats(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("/chat/completions")]

    @property
    def transcriptions(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("/audio/transcriptions")]

    # ---- handlers -------------------------------------------------------------------------

    def _not_found(self, request: web.Request) -> web.Response | None:
        if request.path.startswith("/openai/") and request.query.get("api-version") not in self.api_versions:
            return web.json_response({"error": AZURE_NOT_FOUND}, status=404)
        deployment = request.match_info.get("deployment")
        if deployment is None or deployment in self.deployments:
            return None
        error = {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
        }
        return web.json_response({"error": error}, status=404)

    def _azure_unknown(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        """Azure's 400 for fields its api-version does not document (AZURE_FIELDS), top-level or in
        a message: OpenAI's spec, which the body is checked against too, knows fields Azure's
        version has not caught up with."""
        if not request.path.startswith("/openai/"):
            return None
        fields = AZURE_FIELDS[request.query["api-version"]]
        if request.path.endswith("/audio/transcriptions"):
            unknown = sorted(set(body) - fields["transcription"])
        else:
            unknown = sorted(set(body) - fields["request"])
            messages = body.get("messages")
            for i, message in enumerate(messages if isinstance(messages, list) else []):
                if not isinstance(message, dict):
                    continue
                known = fields.get(str(message.get("role")), frozenset())
                unknown += [f"messages[{i}].{name}" for name in sorted(set(message) - known)]
                content = message.get("content")
                for j, part in enumerate(
                    content if message.get("role") == "user" and isinstance(content, list) else []
                ):
                    if isinstance(part, dict) and part.get("type") not in fields["user parts"]:
                        unknown.append(f"messages[{i}].content[{j}].type={part.get('type')!r}")
        if not unknown:
            return self._azure_invalid(request, body)
        version = request.query["api-version"]
        message = self.refuse(
            f"Unrecognized request argument{'s' if len(unknown) > 1 else ''} supplied: {', '.join(unknown)}"
            f" (not in api-version {version})"
        )
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        return web.json_response({"error": error}, status=400)

    def _azure_invalid(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        """Azure's 400 for a reply voice or format its api-version's enum lacks (AZURE_FIELDS):
        OpenAI's spec takes any voice name, and its audio models speak voices this version's
        enum has not caught up with."""
        audio = body.get("audio")
        if request.path.endswith("/audio/transcriptions") or not isinstance(audio, dict):
            return None
        version = request.query["api-version"]
        for name in ("voice", "format"):
            allowed = AZURE_FIELDS[version][f"audio.{name}"]
            if name in audio and audio[name] not in allowed:
                supported = ", ".join(repr(v) for v in sorted(allowed))
                message = self.refuse(
                    f"Invalid value: {audio[name]!r}. Supported values are: {supported}"
                    f" (audio.{name} in api-version {version})"
                )
                error = {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": f"audio.{name}",
                    "code": "invalid_value",
                }
                return web.json_response({"error": error}, status=400)
        return None

    def _no_model(self, request: web.Request, model: object) -> web.Response | None:
        """OpenAI's 404 for a model it does not serve (Azure names a deployment instead), as the
        model lookup answers it: a request names the model it runs on, and a wrong name is no
        answer however well-formed the rest."""
        if request.path.startswith("/openai/") or not isinstance(model, str):
            return None
        if model in self.denied_models:
            return self._denied(model)
        if model in self.models:
            return None
        error = {
            "message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
        return web.json_response({"error": error}, status=404)

    def _denied(self, model: str) -> web.Response:
        error = {
            "message": f"Project `proj_fake` does not have access to model `{model}`",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
        return web.json_response({"error": error}, status=403)

    def _no_model_read(self, request: web.Request) -> web.Response | None:
        if self.reads_models or request.path.startswith("/openai/"):
            return None
        error = {
            "message": "You have insufficient permissions for this operation. Missing scopes:"
            " api.model.read. Check that you have the correct role in your organization (Reader,"
            " Writer, Owner) and project (Member, Owner), and if you're using a restricted API key,"
            " that it has the necessary scopes.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        return web.json_response({"error": error}, status=self.scope_status)

    def _too_many_tokens(self, request: web.Request, body: dict[str, Any]) -> web.Response | None:
        """OpenAI's 400 for a max_completion_tokens over the model's most, worded as it words it
        (naming max_tokens whichever of the two the request used)."""
        asked, most = body.get("max_completion_tokens"), self.max_output_tokens.get(body["model"])
        if request.path.startswith("/openai/") or not isinstance(asked, int) or most is None or asked <= most:
            return None
        error = {
            "message": f"max_tokens is too large: {asked}. This model supports at most {most} completion"
            f" tokens, whereas you provided {asked}.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "invalid_value",
        }
        return web.json_response({"error": error}, status=400)

    def _authorised(self, request: web.Request) -> bool:
        if request.path.startswith("/openai/"):
            return request.headers.get("api-key") == AZURE_KEY
        return request.headers.get("Authorization") == f"Bearer {API_KEY}"

    def _refused(self, request: web.Request) -> web.Response:
        message = "Incorrect API key"
        if self.echo_key:
            given = request.headers.get("api-key") or request.headers.get("Authorization", "")
            message += f" provided: {given.removeprefix('Bearer ')}"
        return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=401)

    async def _take(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _held(self, released: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(self._stopping.wait())
        waiting = asyncio.ensure_future(released.wait())
        try:
            await asyncio.wait({stopping, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            waiting.cancel()

    async def _fail_if_told(
        self, request: web.Request, failures: list[Failure] | None = None
    ) -> web.Response | None:
        failures = self.failures if failures is None else failures
        if not failures:
            return None
        return await self._fail(request, failures.pop(0))

    async def _fail(self, request: web.Request, failure: Failure) -> web.Response:
        if failure.content_filter:
            return web.json_response({"error": AZURE_CONTENT_FILTER}, status=400)
        if failure.held is not None:
            await self._held(failure.held)
        if failure.hang:
            await self._take(failure.hang)
        if failure.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=204)  # written to nobody: the connection is gone
        if failure.malformed:
            return web.Response(
                status=200, text='{"id": "chatcmpl-broken", "choices": [', content_type="application/json"
            )
        headers = dict(failure.headers)
        if failure.retry_after is not None:
            headers["retry-after"] = str(failure.retry_after)
        error = {
            "error": {
                "message": failure.message,
                "type": failure.error_type,
                "param": failure.param,
                "code": failure.code,
            }
        }
        return web.json_response(error, status=failure.status, headers=headers)

    async def _over_proxy_limit(self, request: web.Request) -> web.Response | None:
        """nginx's answer to a request over its client_max_body_size: HTML, not the API's JSON."""
        if self.proxy_max_bytes is None:
            return None
        size = request.content_length
        if size is None:
            size = len(await request.read())
        if size <= self.proxy_max_bytes:
            return None
        self.too_big.append(request.path)
        page = (
            "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
            "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return web.Response(status=413, text=page, content_type="text/html")

    async def _chat(self, request: web.Request) -> web.Response:
        if (too_big := await self._over_proxy_limit(request)) is not None:
            return too_big
        if not self._authorised(request):
            return self._refused(request)
        if self.resets_before_body:
            self.resets_before_body -= 1
            assert request.transport is not None
            sock = request.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            request.transport.abort()
            return web.Response(status=204)  # written to nobody: the connection is gone
        missing = self._not_found(request)
        if missing is not None:
            return missing
        try:
            body = await request.json()
        except ValueError:
            message = self.refuse(f"{request.path}: the body is not JSON")
            return web.json_response(
                {"error": {"message": message, "type": "invalid_request_error"}}, status=400
            )
        self.received.append(Received(request.path, body, dict(request.headers), dict(request.query)))
        # Checked off the loop, a request that came later could end its checks first and take the
        # failure scripted for an earlier one (on a busy machine, by seconds): each takes its turn.
        ticket, self._tickets = self._tickets, self._tickets + 1
        try:
            return await self._checked_chat(request, body, ticket)
        finally:
            self._served_ticket(ticket)

    def _served_ticket(self, ticket: int) -> None:
        self._served.add(ticket)
        while self._turn in self._served:
            self._served.discard(self._turn)
            self._turn += 1
        moved, self._turn_moved = self._turn_moved, asyncio.Event()
        moved.set()

    async def _checked_chat(self, request: web.Request, body: dict[str, Any], ticket: int) -> web.Response:
        unknown = self._azure_unknown(request, body)
        if unknown is not None:
            return unknown
        # Off the loop: it is the test's too, and a note's megabytes of base64 take a while.
        errors = await asyncio.to_thread(component_errors, SPEC, "CreateChatCompletionRequest", body)
        if "functions" in body or "function_call" in body:
            errors.append("deprecated functions/function_call sent; use tools/tool_calls")
        if not errors:
            errors = _conversation_errors(body["messages"])
        if not errors and not _has_audio(body):
            errors.append(NO_AUDIO)
        if errors:
            for error in errors:
                self.refuse(error)
            return web.json_response(
                {"error": {"message": "; ".join(errors), "type": "invalid_request_error"}}, status=400
            )
        unserved = self._no_model(request, body["model"]) or self._too_many_tokens(request, body)
        if unserved is not None:
            return unserved
        bad_audio = await asyncio.to_thread(_input_audio_errors, body["messages"])
        if bad_audio:
            for param, error in bad_audio:
                self.refuse(f"{param}: {error}")
            param, error = bad_audio[0]
            error_body = {"message": error, "type": "invalid_request_error", "param": param, "code": None}
            return web.json_response({"error": error_body}, status=400)
        too_long = None if self.compatible_server else _call_id_too_long(body["messages"])
        if too_long is not None:
            self.refuse(too_long["message"])
            return web.json_response({"error": too_long}, status=400)
        unknown = self._unknown_audio(body["messages"])
        if unknown is not None:
            return web.json_response({"error": unknown}, status=400)
        if any(word in _prompt_text(body["messages"]) for word in self.blocked_words):
            return web.json_response({"error": AZURE_CONTENT_FILTER}, status=400)
        too_large = self._too_large(body)
        if too_large is not None:
            return too_large
        while self._turn < ticket:  # an earlier request still in its checks
            await self._turn_moved.wait()
        failure = self.failures.pop(0) if self.failures else None
        responder = None if failure is not None else self.script.pop(0) if self.script else None
        self._served_ticket(ticket)
        if failure is not None:
            return await self._fail(request, failure)
        if self.chat_seconds:
            await self._take(self.chat_seconds)
        responder = responder or answer("Here is your answer.")
        if isinstance(responder, Failure):
            return await self._fail(request, responder)
        if isinstance(responder, Held):
            await self._held(responder.released)
            responder = responder.then
        deployment = request.match_info.get("deployment")
        model = self.deployments[deployment] if deployment else body["model"]
        completion = self._completion(body, responder(body), model)
        if deployment:
            _as_azure_answers(completion)
        if self.usage_as is not None:
            completion["usage"] = self.usage_as(completion["usage"])
        self.billed.append(completion["usage"])
        return web.json_response(completion)

    def _too_large(self, body: dict[str, Any]) -> web.Response | None:
        """OpenAI's 429 for a request over the tokens per minute on its own (counted as its prompt
        and the most it may answer with), as its API words it."""
        if self.tokens_per_minute is None:
            return None
        asked = request_tokens(body)
        if asked <= self.tokens_per_minute:
            return None
        message = (
            f"Request too large for {body['model']} in organization org-fake on tokens per min (TPM):"
            f" Limit {self.tokens_per_minute}, Requested {asked}. The input or output tokens must be"
            " reduced in order to run successfully. Visit https://platform.openai.com/account/"
            "rate-limits to learn more."
        )
        error = {"message": message, "type": "tokens", "param": None, "code": "rate_limit_exceeded"}
        headers = {
            "x-ratelimit-limit-tokens": str(self.tokens_per_minute),
            "x-ratelimit-remaining-tokens": str(self.tokens_per_minute),
            "x-ratelimit-reset-tokens": "0s",
        }
        return web.json_response({"error": error}, status=429, headers=headers)

    def _unknown_audio(self, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The API's error for an assistant audio id it did not give out, or no longer holds: a
        state the client cannot see, so not a violation."""
        now = self.now()
        for i, message in enumerate(messages):
            audio_id = (message.get("audio") or {}).get("id")
            if audio_id is not None and (
                not self.takes_audio_back or self.issued_audio.get(audio_id, 0) <= now
            ):
                # As the API words it, "content." before the message's place included.
                return {
                    "message": f"Assistant audio {audio_id} not found.",
                    "type": "invalid_request_error",
                    "param": f"content.messages[{i}].audio.id",
                    "code": "audio_not_found",
                }
        return None

    def _completion(self, body: dict[str, Any], message: dict[str, Any], model: str) -> dict[str, Any]:
        fmt = (body.get("audio") or {}).get("format", "wav")
        finish_reason = message.pop("_finish_reason", None)
        spoken = message.pop("_audio", False) and "audio" in (body.get("modalities") or [])
        words = (message.get("content") or "").split()
        text_out = max(
            1, math.ceil(len(words) * 4 / 3) + len(json.dumps(message.get("tool_calls") or [])) // 4
        )
        audio_out = (
            math.ceil(speaking_seconds(" ".join(words)) * AUDIO_OUT_TOKENS_PER_SECOND) if spoken else 0
        )
        cap = body.get("max_completion_tokens")
        if cap is not None and text_out + audio_out > cap:
            # Cut where the tokens ran out: the words, and the audio that says them.
            kept = len(words) * cap // (text_out + audio_out)
            if message.get("content") is not None:
                message["content"] = " ".join(words[:kept])
            spoken = spoken and kept > 0
            finish_reason = "length"
            audio_out = cap - min(cap, math.ceil(kept * 4 / 3)) if spoken else 0
            text_out = cap - audio_out
        if spoken:
            transcript = message.pop("content")
            message["content"] = None
            audio_id = f"audio_{uuid.uuid4().hex[:16]}"
            self.issued_audio[audio_id] = int(self.now()) + self.audio_ttl
            message["audio"] = {
                "id": audio_id,
                "data": base64.b64encode(spoken_audio(transcript, fmt)).decode(),
                "expires_at": self.issued_audio[audio_id],
                "transcript": transcript,
            }
        audio_in, text_in = _prompt_tokens(body["messages"])
        if finish_reason is None:
            finish_reason = "tool_calls" if message.get("tool_calls") else "stop"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(self.now()) if self.created_as is None else self.created_as(int(self.now())),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "refusal": None, **message},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": int(audio_in) + max(text_in, 1),
                "completion_tokens": audio_out + text_out,
                "total_tokens": int(audio_in) + max(text_in, 1) + audio_out + text_out,
                "prompt_tokens_details": {"audio_tokens": int(audio_in), "cached_tokens": 0},
                "completion_tokens_details": {
                    "audio_tokens": audio_out,
                    "text_tokens": text_out,
                    "reasoning_tokens": 0,
                },
            },
        }

    async def _transcribe(self, request: web.Request) -> web.Response:
        if (too_big := await self._over_proxy_limit(request)) is not None:
            return too_big
        if not self._authorised(request):
            return self._refused(request)
        missing = self._not_found(request)
        if missing is not None:
            return missing
        form = await request.post()
        fields = {k: v for k, v in form.items() if not hasattr(v, "file")}
        upload = form.get("file")
        body = {**fields, "file": getattr(upload, "filename", "")}
        self.received.append(Received(request.path, body, dict(request.headers), dict(request.query)))
        unknown = self._azure_unknown(request, body)
        if unknown is not None:
            return unknown
        errors = component_errors(SPEC, "CreateTranscriptionRequest", body)
        if upload is None or not hasattr(upload, "file"):
            errors.append("file: no file part")
        else:
            data = upload.file.read()
            if not data.startswith(b"RIFF"):
                errors.append("file: not a WAV")
        if errors:
            for error in errors:
                self.refuse(error)
            return web.json_response({"error": {"message": "; ".join(errors)}}, status=400)
        unserved = self._no_model(request, body.get("model"))
        if unserved is not None:
            return unserved
        failed = await self._fail_if_told(request, self.transcription_failures)
        if failed is not None:
            return failed
        if self.transcribe_seconds:
            await self._take(self.transcribe_seconds)
        seconds = (len(data) - 44) / 48_000
        if body.get("model", "").startswith("whisper"):
            usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(seconds)}
        else:  # the gpt-4o transcribe models bill tokens
            audio_tokens = math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
            output_tokens = math.ceil(len(self.transcript.split()) * 4 / 3)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": output_tokens,
                "total_tokens": audio_tokens + output_tokens,
            }
        if self.usage_as is not None:
            usage = self.usage_as(usage)
        self.billed.append(usage)
        return web.json_response({"text": self.transcript, "usage": usage})

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused(request)
        missing = self._not_found(request) or self._no_model_read(request)
        if missing is not None:
            return missing
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "openai"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused(request)
        self.received.append(Received(request.path, {}, dict(request.headers), dict(request.query)))
        unread = self._no_model_read(request)
        if unread is not None:
            return unread
        failed = await self._fail_if_told(request, self.model_failures)
        if failed is not None:
            return failed
        model = request.match_info["model"]
        if model in self.denied_models:
            return self._denied(model)
        if model not in self.models:
            return web.json_response(
                {"error": {"message": f"The model `{model}` does not exist", "code": "model_not_found"}},
                status=404,
            )
        return web.json_response({"id": model, "object": "model", "created": 0, "owned_by": "openai"})

    async def _unknown(self, request: web.Request) -> web.Response:
        message = self.refuse(f"{request.method} {request.path}: not an endpoint the fake serves")
        return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=404)


# What an audio model answers a request with neither audio in nor audio out.
NO_AUDIO = "This model requires that either input content or output modality contain audio."
# Azure's 400 for a prompt its content filter blocked, as it sends it.
AZURE_CONTENT_FILTER = {
    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry.",
    "type": None,
    "param": "prompt",
    "code": "content_filter",
    "status": 400,
    "innererror": {
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": {"violence": {"filtered": True, "severity": "medium"}},
    },
}


# What Azure's content filter says of a prompt and an answer it let through (inference.json's
# contentFilterPromptResults and contentFilterChoiceResults).
AZURE_SAFE = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}


def _as_azure_answers(completion: dict[str, Any]) -> None:
    """Azure's answer carries its content filter's results, the prompt's and each choice's."""
    prompt = {**AZURE_SAFE, "jailbreak": {"filtered": False, "detected": False}}
    completion["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": prompt}]
    for choice in completion["choices"]:
        withheld = choice["finish_reason"] == "content_filter"
        verdict = {"filtered": True, "severity": "high"} if withheld else AZURE_SAFE["violence"]
        choice["content_filter_results"] = {**AZURE_SAFE, "violence": verdict}


def request_tokens(body: dict[str, Any]) -> int:
    """What a chat request counts against the tokens per minute, roughly as OpenAI counts it: its
    audio's tokens, its words' and tools' at four characters a token, and the most it may answer
    with."""
    messages = body["messages"]
    audio_in, _ = _prompt_tokens(messages)
    text = [m for m in messages if not isinstance(m.get("content"), list)]
    words = len(json.dumps(text)) + len(json.dumps(body.get("tools") or []))
    return audio_in + words // 4 + (body.get("max_completion_tokens") or 0)


def _prompt_tokens(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """A prompt's audio and text tokens, roughly as OpenAI counts them."""
    audio_in = sum(
        _decoded_size(p["input_audio"]["data"]) / 48_000 * AUDIO_TOKENS_PER_SECOND
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "input_audio"
    )
    return int(audio_in), sum(len(json.dumps(m)) // 4 for m in messages) - int(audio_in)


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    """Every word a request's messages hold as text, lowercased, for the prompt filter to read."""
    said: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            said.append(content)
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "text":
                said.append(part["text"])
        said += [call["function"]["arguments"] for call in message.get("tool_calls") or []]
    return "\n".join(said).lower()


def _has_audio(body: dict[str, Any]) -> bool:
    if "audio" in (body.get("modalities") or []):
        return True
    return any(
        part.get("type") == "input_audio"
        for message in body["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


# What the API answers 400 `invalid_value` for in a message's tool calls (the spec says it only of
# the tools offered), e.g. the "multi_tool_use.parallel" some models make up.
FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


# The longest id of a tool call a request may carry in an assistant message: the API's 400
# `string_above_max_length` (its spec gives no such bound). A compatible server's own ids may be
# longer (vLLM's "chatcmpl-tool-" and 32 hex digits), and it takes them back.
MAX_CALL_ID = 40


def _call_id_too_long(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The API's error for the first tool call id longer than MAX_CALL_ID, as it words it."""
    for i, message in enumerate(messages):
        for j, call in enumerate(message.get("tool_calls") or []):
            call_id = call.get("id")
            if isinstance(call_id, str) and len(call_id) > MAX_CALL_ID:
                param = f"messages[{i}].tool_calls[{j}].id"
                return {
                    "message": f"Invalid '{param}': string too long. Expected a string with maximum "
                    f"length {MAX_CALL_ID}, but got a string with length {len(call_id)} instead.",
                    "type": "invalid_request_error",
                    "param": param,
                    "code": "string_above_max_length",
                }
    return None


def _conversation_errors(messages: list[dict[str, Any]]) -> list[str]:
    """The API's 400s for tool messages out of place: a tool result must come after the assistant
    message that made its call (other results between them), and every call made must be
    answered before the conversation goes on."""
    errors: list[str] = []
    open_calls: list[str] = []  # calls of the latest assistant message not yet answered
    answering = False  # only tool results since that assistant message
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not answering or call_id not in open_calls:
                errors.append(
                    f"messages/{i}: messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls' (no open call {call_id!r})"
                )
            else:
                open_calls.remove(call_id)
            continue
        if open_calls:
            errors.append(
                f"messages/{i}: an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; not answered: {', '.join(open_calls)}"
            )
        for call in message.get("tool_calls") or []:
            name = call.get("function", {}).get("name", "")
            if not FUNCTION_NAME.match(name):
                errors.append(
                    f"messages/{i}: invalid 'tool_calls' function name {name!r}: it must match "
                    f"{FUNCTION_NAME.pattern}"
                )
        open_calls = [c["id"] for c in message.get("tool_calls") or []] if role == "assistant" else []
        answering = role == "assistant" and bool(open_calls)
    if open_calls:
        errors.append(f"messages: tool calls not answered at the end: {', '.join(open_calls)}")
    return errors


def _input_audio_errors(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(param, message) for each `input_audio` part that is not strict base64 of audio in the
    format it declares: the API decodes it and refuses what it cannot read as that format."""
    errors: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        content = message.get("content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            if part.get("type") != "input_audio":
                continue
            param = f"messages[{i}].content[{j}].input_audio"
            declared = part["input_audio"]["format"]
            try:
                data = base64.b64decode(part["input_audio"]["data"], validate=True)
            except binascii.Error as exc:
                errors.append((param, f"Invalid base64 in 'input_audio.data': {exc}"))
                continue
            if not _sounds_like(data, declared):
                errors.append((param, f"The audio data is not valid {declared}: it begins {data[:12]!r}"))
    return errors


def _decoded_size(encoded: str) -> int:
    """The bytes that strict base64 (as `_input_audio_errors` made sure it is) holds, not decoded
    again on the loop."""
    return len(encoded) * 3 // 4 - encoded[-2:].count("=")


def _sounds_like(data: bytes, declared: str) -> bool:
    if declared == "wav":
        return data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    if declared == "mp3":
        # An ID3 tag, or straight away an MPEG audio frame: 11 set bits of frame sync.
        return data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    return False


# ---- scripted replies -------------------------------------------------------------------------


def answer(text: str, finish_reason: str | None = None) -> Responder:
    """A final spoken answer; `text` may use {tool:<name>} to quote a tool result it was sent.
    `finish_reason` (e.g. "length", "content_filter") replaces the one the fake would give."""

    def respond(body: dict[str, Any]) -> Reply:
        results = {m.get("tool_call_id"): m["content"] for m in body["messages"] if m.get("role") == "tool"}
        names = {
            call["id"]: call["function"]["name"]
            for m in body["messages"]
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or []
        }
        spoken = text
        for call_id, content in results.items():
            spoken = spoken.replace(f"{{tool:{names.get(call_id)}}}", content)
        return {"content": spoken, "_audio": True, "_finish_reason": finish_reason}

    return respond


def filtered() -> Responder:
    """An answer the content filter withheld: finish_reason "content_filter", nothing said."""
    return lambda body: {"content": None, "_finish_reason": "content_filter"}


def tool_calls(*calls: tuple[str, dict[str, Any]], said: str | None = None) -> Responder:
    """Tool calls; with `said`, words spoken alongside them (as audio, when audio was asked for)."""

    def respond(body: dict[str, Any]) -> Reply:
        return {
            "content": said,
            "_audio": said is not None,
            "tool_calls": [
                {
                    "id": f"call_{uuid.uuid4().hex[:10]}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
                for name, arguments in calls
            ],
        }

    return respond


def audio_reply(transcript: str, data: str) -> Responder:
    """A final answer whose `audio.data` is `data` as it stands: base64 or not, audio or not."""
    audio = {"id": "audio_scripted", "data": data, "expires_at": int(time.time()) + 3600}
    return lambda body: {"content": None, "audio": {**audio, "transcript": transcript}}


def refusal(text: str) -> Responder:
    return lambda body: {"content": None, "refusal": text}


def speaking_seconds(transcript: str) -> float:
    return max(0.5, len(transcript.split()) / 2.7)


# The containers and codecs of the formats the API answers in, besides wav, opus and pcm16. Its
# aac is raw ADTS.
ENCODERS = {
    "mp3": ("mp3", "libmp3lame"),
    "flac": ("flac", "flac"),
    "aac": ("adts", "aac"),
}


def spoken_audio(transcript: str, fmt: str) -> bytes:
    """Real audio of a plausible length for the transcript, in the requested format."""
    t = np.arange(int(speaking_seconds(transcript) * 24_000)) / 24_000
    pcm = (np.sin(2 * np.pi * 200 * t) * 6000 * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)
    if fmt == "opus":
        return reply_from_pcm(pcm.tobytes(), 24_000).ogg
    if fmt == "pcm16":
        return pcm.tobytes()
    if fmt == "wav":
        return pcm_to_wav(pcm.tobytes(), 24_000)
    container_format, codec = ENCODERS[fmt]
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=24_000, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=24_000)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 24_000
        for resampled in resampler.resample(frame) + resampler.resample(None):
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return out.getvalue()


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeOpenAI]:
    """A running fake OpenAI, stopped at the end; fails if it refused a request as malformed."""
    async with checked(await FakeOpenAI().start()) as fake:
        yield fake
