"""The OpenAI audio engine: audio in, audio and text out, with tools, through Chat Completions.

Works with OpenAI (`AsyncOpenAI`; OPENAI_BASE_URL points it at any compatible server) and Azure
OpenAI (`AsyncAzureOpenAI`).

Retries are the engine's, not the SDK's, and bounded by the turn's deadline: a turn holds one of
the agent's few slots, and the fallback should answer within that time rather than after the SDK's
whole retry budget. A 429 or a run of failures pauses requests for every turn (`Gate`), so notes
queued behind a rate limit or an outage are answered by the fallback at once instead of each
trying again. Only a request the server never had whole is sent again (docs/design.md, "OpenAI
requests sent again"): a reply that timed out, whose connection closed once the whole request was
out, or that a gateway's 502 or 504 says its upstream failed on, may well have been generated, and
billed, and would only fail again.

Cost is kept bounded by what goes into each request: the current note's audio only; earlier
turns as text (the player's words from a concurrent transcription, the assistant's transcript,
tool calls and results) plus references to earlier audio replies while they have not expired.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import secrets
import threading
import time
import types
import urllib.parse
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import openai

from bot import sentences as say
from bot.audio import pcm_to_wav
from bot.bounded import remember
from bot.config import OPENAI_VOICES, ConfigError, NeedsHuman, Settings, reply_audio_choices, shown_url
from bot.db import fsync_path, new_partial, remove_partials
from bot.engines.base import (
    AudioClip,
    BusyPause,
    EngineBusy,
    EngineError,
    EnginePaused,
    EngineReply,
    NoteTooLarge,
    PaidTranscript,
    PastTurn,
    Round,
    Transcript,
    TurnState,
    Usage,
)
from bot.logs import Outage
from bot.retry_after import seconds_named
from bot.tools import SHOWN_CHARS, clipped, well_formed
from bot.tools.base import UNPARSED, ToolCall, ToolResult, too_deep
from bot.turns import MAX_HISTORY_CHARS, chars_of

log = logging.getLogger(__name__)

VOICES = list(OPENAI_VOICES)
# Audio models OpenAI has retired or announced for retirement; a warning at start-up says so.
SHUTDOWNS = {
    "gpt-4o-audio-preview": "shut down by OpenAI",
    "gpt-4o-audio-preview-2024-10-01": "shut down by OpenAI",
    "gpt-4o-audio-preview-2024-12-17": "shut down by OpenAI",
    "gpt-4o-audio-preview-2025-06-03": "shut down by OpenAI",
}
NOT_IN_A_NAME = re.compile(r"[^a-zA-Z0-9_-]")  # what a function name sent to the API may not hold
TRANSCRIPT_WAIT = 2.0  # seconds
EXPIRY_MARGIN = 60  # seconds: an audio reference about to expire is sent as text instead
# What we ask for → what reply_from_encoded is told it got. Opus comes in an Ogg container, which
# is exactly what a Discord voice message carries, so it needs no re-encoding.
FORMATS = {"opus": "ogg_opus", "wav": "wav", "mp3": "mp3", "flac": "flac", "aac": "aac", "pcm16": "pcm16"}
# Error codes of a request a content filter or usage policy blocked: Azure's content filter, and
# OpenAI's policy refusals.
FILTERED = {"content_filter", "content_policy_violation", "invalid_prompt"}
# The error code of an earlier reply's audio id the provider does not hold (another provider, model
# or key issued it, or it expired early by its clock).
AUDIO_NOT_FOUND = "audio_not_found"
# The code of a 429 that is no rate limit: the account's credit or the project's budget is spent.
OUT_OF_QUOTA = "insufficient_quota"
# The scope a model lookup needs, which a restricted key given Models: None lacks while it may
# well chat and transcribe: OpenAI refuses the lookup (403, "Missing scopes: api.model.read").
MODEL_READ = "api.model.read"
MISSING_SCOPES = re.compile(r"Missing scopes?: ([\w.]+(?:, *[\w.]+)*)")
# A 429 rate_limit_exceeded for a request over a token limit on its own: "Request too large for
# gpt-4o in organization org-... on tokens per min (TPM): Limit 30000, Requested 41234. The input or
# output tokens must be reduced ...", where a limit run out says "Limit 30000, Used 29000, Requested
# 1500. Please try again in 1s".
LIMIT_REQUESTED = re.compile(r"\bLimit:? ([\d,.]+)(?:, Used:? [\d,.]+)?, Requested:? ([\d,.]+)")
TEXT_HISTORY = "text_history"  # turn.scratch: this turn sends earlier replies as text only
# turn.scratch: this turn is asked without its history because a request with it was too large
TOO_LARGE_WITH_HISTORY = "too_large_with_history"
# turn.scratch: this step is asked without the history's oldest turns because a request with them
# was too large; what turn.let_go was before.
TRIMMED_FROM = "trimmed_from"
# A request too large names its limit and its tokens; the oldest turns of its history are left out
# until the request is estimated to come to this share of the limit at most. The estimate
# (`estimated_tokens`) is rough, and one short of the limit would be refused once more.
TOO_LARGE_MARGIN = 0.1
# A request too large is asked again without its history only if that history, at this many times
# its estimate, would bring it within the limit: the estimate can be half the count (JSON, or words
# the tokenizer splits finely), and the request, refused again, costs no more than its wait.
HISTORY_AT_MOST = 2.0
# The estimate's audio: OpenAI counts audio by its length, a note's at about 10 tokens a second,
# speech it made (an earlier reply sent back by its id) at about 20; a note's WAV is 16-bit mono
# at 24 kHz, and a reply's words are spoken at some 2.5 a second.
NOTE_TOKENS_A_SECOND = 10
SPEECH_TOKENS_A_SECOND = 20
WAV_BYTES_A_SECOND = 48_000
WORDS_A_SECOND = 2.5
# Half a second of silence: audio models refuse a request with neither audio in nor audio out.
SILENCE = base64.b64encode(pcm_to_wav(bytes(24_000), 24_000)).decode()
DEADLINE = "deadline"  # turn.scratch: time.monotonic() past which this turn sends no request
ASKING = "asking"  # turn.scratch: seconds this turn waited on chat requests, their retries with them
# turn.scratch: the note's WAV in base64, made once a turn off the event loop (a 120 s note's
# is 7.7 MB, some 10 ms of CPU that every other player's note and the heartbeat would wait for).
ENCODED = "encoded"
ASKED_AT = "asked_at"  # scratch: when the turn's first step was sent, Unix seconds
# The player's words only feed history, and the agent waits for them briefly after the answer: a
# transcription is short, and sent again only when the server never had it.
TRANSCRIBE_TIMEOUT = 15.0  # seconds, its tries together
# A probe of `check` is one request of a few tokens, asked once: a service that has not answered it
# in this long is not answering, and the Azure probes' two together stay within check's 30 s for
# the service, so its line names the one that hung.
PROBE_TIMEOUT = 10.0  # seconds, or openai.timeout_seconds when that is shorter
SHORT_WAIT = 5.0  # seconds: a turn waits out a pause up to this; past it the fallback answers
# Timeouts, connection failures, 408s or 5xx (but a model_error, one request's) in a row that pause
# requests.
BREAKER_FAILURES = 3
FIRST_PAUSE = 1.0  # seconds: a 429 naming no wait pauses this long, doubled for each in a row ...
LONGEST_PAUSE = 300.0  # ... up to this, which bounds a named wait too: then requests try again
# x-ratelimit-reset-*: "20ms", "1.5s", "6m0s", "6h0m0s", or in days ("1d"): a reset left unread
# pauses its 429 a second, doubled, and a day's limit would be asked again every few seconds.
RESET = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
RESET_SECONDS = re.compile(r"\d+(?:\.\d+)?")  # Azure's x-ratelimit-reset-*: seconds, no unit ("37")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
# The transport errors (by name, as httpx and httpx2 both call them) of a request that never went
# out: no connection was made (refused, unreachable, timed out), the proxy would not carry it, or
# none came free from the pool.
NEVER_SENT = frozenset({"ConnectError", "ProxyError", "ConnectTimeout", "PoolTimeout"})
# An extension of each httpx request, set once the whole request (its body too) has been written.
SENT_WHOLE = "voxdesk.sent_whole"
# Seconds an idle connection is kept for the next request. httpx keeps one 5 s, as long as uvicorn
# (which serves vLLM and LiteLLM) does: a request sent while the server's close is on its way fails
# once it is out whole, and is not sent again. Let go a second sooner, the pool opens a new one.
KEEPALIVE_EXPIRY = 4.0
# A gateway's 5xx for an upstream that failed or timed out while it had the request: the reply may
# have been generated, and billed, as after a timeout of our own.
GATEWAY_FAILED = frozenset({502, 504})
# A server's answer that it gave up waiting for the rest of the request (or an idle keep-alive
# connection's close, which some servers send as one): it never had the request whole.
NEVER_HAD_WHOLE = 408
# A proxy's or gateway's refusal of a request body over its size limit (nginx's
# client_max_body_size) before OpenAI saw it: a long note's audio is most of those bytes. It names
# no limit to trim the history to, and the history (earlier replies by audio id, text) is little
# of them: the note is too large, as for a request too large, and the history is kept.
PAYLOAD_TOO_LARGE = 413
# Characters of a reply's words a player is sent: six Discord messages, cut at words. With
# openai.max_reply_tokens 0 (the model's own limit) a reply may run to tens of thousands, dozens of
# messages in a channel, and kept whole it would be more than a request carries of the history
# (MAX_HISTORY_CHARS), which would then hold nothing. openai.max_reply_tokens' default comes to some
# 8,000 at most.
MAX_ANSWER_CHARS = 10_000
# A code block's fence in markdown, not one escaped with a backslash.
_FENCE = re.compile(r"(?<!\\)```")
# Seconds ahead an audio id's expiry may be and still be taken for one: OpenAI keeps a reply's audio
# for an hour; a day leaves room for a provider that keeps it longer, or whose clock runs ahead.
AUDIO_KEPT_AT_MOST = 86_400
GIVEN_AUDIO_KEPT = 1000  # the latest reply audio ids an engine keeps, to know its own when refused
# The longest tool call id OpenAI takes in a request (a 400 string_above_max_length past it).
MAX_CALL_ID = 40
# Where an audio_not_found points: OpenAI names it "content.messages[3].audio.id"; a compatible
# server may leave "content." out.
REFUSED_PARAM = re.compile(r"(?:content\.)?messages\[(\d+)\]\.audio\.id")
# Where a 400 names what it refused inside a message: "messages[2].content", "messages.[2].role",
# "content.messages[2].audio.id", in its param or its message ("Invalid 'messages[2].content': ...").
IN_MESSAGE = re.compile(r"\bmessages\.?\[(\d+)\]")
# A provider that refused an audio id it gave well before the id's expiry keeps none: earlier
# replies go as text for every turn this long, then one reference is tried again.
AUDIO_REFUSED_PAUSE = 900.0  # seconds

# In storage.dir: the key each player's safety_identifier is hashed under (see safety_key).
SAFETY_KEY_FILE = "openai-safety.key"
SAFETY_KEY_BYTES = 32
_MAKING = threading.Lock()
OPENAI_HOST = "api.openai.com"  # where (and its regions) openai.safety_identifier = "auto" sends one

T = TypeVar("T")


class Gate:
    """Whether requests to one endpoint go out, shared by every turn.

    A 429 pauses them for as long as the provider asks (retry-after, or its rate-limit reset), or,
    when it names no wait, for FIRST_PAUSE doubled with each 429 in a row (of requests sent after
    the last one came: those out with it are one burst); a 408's or a 5xx's
    Retry-After, for as long as it names up to `breaker_seconds`. BREAKER_FAILURES timeouts,
    connection failures, 408s or 5xx in a row pause them for `breaker_seconds`; then a single
    request goes to see whether the service is back, and the fallback answers the others until it
    returns. After a 429's pause, too, a single request goes first, and the others wait for its
    answer: OpenAI counts a refused request against the limit that refused it, and a raid's notes
    sent again together the moment a pause ends would prolong it; its 429 is one of their tries.
    A turn waits out a pause of up to SHORT_WAIT; the fallback answers it during a longer one.
    The breaker's pause, and a named one longer than that, are logged when they begin and when
    requests are answered again, not once a note. A 429 insufficient_quota, which no wait cures,
    pauses them for LONGEST_PAUSE at once; then, too, a single request looks whether credit was
    added while the fallback answers the others."""

    def __init__(self, what: str, breaker_seconds: float, meanwhile: str) -> None:
        self.what = what
        self.meanwhile = meanwhile  # what becomes of the notes during a pause, for the log
        self.breaker_seconds = breaker_seconds
        self.until = 0.0  # time.monotonic() before which no request goes
        self.why = ""
        self.busy = False  # `why` is a rate limit: the service is up, and turns requests away
        self.failures = 0  # timeouts, connection failures, 408s and 5xx in a row
        self.limited = 0  # 429s in a row
        self.limited_at = 0.0  # time.monotonic() when the last 429 counted in `limited` came
        # time.monotonic() when the wait the last 429 named ends, however far past the pause that
        # is (a day's limit names hours): the players' apology says whether it is a minute's.
        self.limit_ends = 0.0
        # The request out alone after a pause, None when there is none: its Event is set once it
        # is done. After the breaker's or a spent quota's pause (`holding` False), or a 429's.
        self.probe: asyncio.Event | None = None
        self.probe_sent = 0.0  # time.monotonic() when that request went
        self.holding = False  # the other turns wait for that request's answer
        self.spent = False  # a 429 insufficient_quota, and no answer since
        self.spent_at = 0.0  # time.monotonic() when that 429 came
        self.refused = False  # a 401 or a 403 refused the key, and no answer since of one sent after
        self.refused_at = 0.0  # time.monotonic() when that refusal came
        # The logged pause: said when it begins, however often it is prolonged, and when it ends.
        self.outage = Outage(log, "OpenAI %s answers again after a pause of %.0f s (%s)")

    def wait(self) -> float:
        """Seconds before a request may go: inf while one is out alone after a pause."""
        left = self.until - time.monotonic()
        if left > 0:
            return left
        return math.inf if self.probe is not None else 0.0

    def sending(self) -> asyncio.Event | None:
        """A request goes out; after a pause, alone: then the Event that is set once it is done
        (`probed`), which the turns `holding` wait for."""
        # After an exhausted quota's pause every note would otherwise get its own 429 while the
        # first is out: one looks whether credit was added, as after the breaker's pause.
        back = self.failures >= BREAKER_FAILURES or self.spent
        if not back and not self.limited:
            return None
        self.holding = not back
        self.probe = asyncio.Event()
        self.probe_sent = time.monotonic()
        return self.probe

    def probed(self, probe: asyncio.Event) -> None:
        """The request sent alone is done, whatever came of it, even a cancelled turn's."""
        probe.set()
        if self.probe is probe:
            self.probe = None

    def answered(self, sent: float | None = None) -> None:
        """Any answer but a 429 or a 5xx, of a request sent at `sent`: the service is there. One
        sent before the last 429 counted in `limited` came, or the 429 insufficient_quota, was
        out with it: a long generation the limit or the quota let in before it ran out, a refusal
        of what that request holds. It tells nothing of the limit or the credit now, and the
        pause, the request out alone after it (the turns waiting for that one's answer), the 429s
        in a row and the spent quota stand. Nor does one sent before the key was refused say that
        the key is taken now."""
        if self.refused and (sent is None or sent >= self.refused_at):
            self.refused = False
        if sent is not None and (
            (self.limited and sent < self.limited_at) or (self.spent and sent < self.spent_at)
        ):
            self.failures = 0
            return
        self.failures = self.limited = 0
        self.limit_ends = 0.0
        self._let_go()
        self.spent = False
        self.outage.answered(self.what, self.outage.seconds(), self.why)

    def answered_about_itself(self, sent: float) -> None:
        """An answer about what the request sent at `sent` alone holds (a model_error, a request
        too large for the limit on its own): the service is there. But a 5xx or a 429 of a request
        out before the one out alone after a 429's pause, come while that one is out, is the
        burst's: it tells nothing of the limit now, and the turns waiting for that one's answer go
        on waiting, as they do after any other 5xx or 429 of the burst."""
        if self.probe is not None and self.holding and sent < self.probe_sent:
            return
        self.answered(sent)

    @property
    def ready(self) -> bool:
        """Neither the quota spent nor the key refused: what no wait cures, /healthz's to say."""
        return not (self.spent or self.refused)

    def key_refused(self) -> None:
        """A 401 or a 403: the provider refuses the key (revoked, or not allowed the model). A
        request out before it may still be answered; only one sent after it shows the key taken."""
        self.refused = True
        self.refused_at = time.monotonic()

    def _let_go(self) -> None:
        # An answer that tells of the service now, or a spent quota, decided what the request out
        # alone was out to learn: the turns waiting for it decide again now, not once
        # it is done, which a long generation may not be for a while.
        if self.probe is not None:
            self.probe.set()
        self.probe = None

    def paused(self) -> EnginePaused:
        """A turn's request held back by the pause, or the failure of the one request that looked
        whether the service is back (the pause goes on): the pause was said when it began, so the
        turn's log line is no news. A rate limit's tells the player the service is busy, not down."""
        why = f"OpenAI {self.what} requests paused: {self.why}"
        return BusyPause(why, wait=self.limit_left()) if self.busy else EnginePaused(why)

    def limit_left(self) -> float | None:
        """Seconds left of the wait the last 429 named, None when it named none."""
        return max(0.0, self.limit_ends - time.monotonic()) if self.limit_ends else None

    def rate_limited(self, asked: float | None, sent: float) -> float:
        """A 429 of a request sent at `sent` (time.monotonic()): the pause it sets (seconds). One
        sent before the last 429 came was out with it, as a raid's notes' requests are: counted
        in a row, eight at once would pause every note for two minutes. One sent before the
        request out alone after a pause, and answered while it is out, is of the burst that pause
        was for: that request's answer tells whether the limit is over, and a pause begun again
        would end with a second request going while it is still out."""
        if self.probe is not None and sent < self.probe_sent:
            return self._limited_pause(asked)
        if self.limited == 0 or sent >= self.limited_at:
            self.limited += 1
            self.limited_at = time.monotonic()
        self.failures = 0
        self.probe = None
        pause = self._limited_pause(asked)
        now = time.monotonic()
        ends = 0.0 if asked is None else now + asked
        # Within a pause, the later end: a shorter limit's 429 come with a longer one's (tokens per
        # minute beside a day's requests) ends within it, and pauses capped at LONGEST_PAUSE alike
        # do not say whose wait is longer. After it, this 429's wait is the limit's now.
        self.limit_ends = max(self.limit_ends, ends) if now < self.until else ends
        # A short pause is waited out by the turns (see _send): only a longer one needs saying.
        self._pause(pause, "rate limited (429)", logged=pause > SHORT_WAIT, busy=True)
        return pause

    def _limited_pause(self, asked: float | None) -> float:
        doubled = FIRST_PAUSE * 2 ** min(max(self.limited, 1) - 1, 16)
        return min(doubled if asked is None else asked, LONGEST_PAUSE)

    def out_of_quota(self) -> None:
        """A 429 insufficient_quota: the account's credit or the project's budget is spent, which
        no wait cures. Requests pause for LONGEST_PAUSE (the fallback answers), then one sees
        whether credit was added."""
        self.failures = self.limited = 0
        self._let_go()
        self.spent = True
        self.spent_at = time.monotonic()
        self._pause(
            LONGEST_PAUSE, "429 insufficient_quota: add credit or raise the budget in OpenAI's billing"
        )

    def failed(self, why: str, asked: float | None = None, sent: float | None = None) -> None:
        """A timeout, a connection failure, a 408 or a 5xx of a request sent at `sent`. `asked`:
        the wait its Retry-After named, which pauses requests as a 429's does (a short one is
        waited out by the turns), but no longer than the breaker's: it is one failure, often a
        proxy's page (a maintenance 503 naming an hour), not the provider's limit, and once it is
        over no probe goes first. One of a request sent before the one out alone after a pause
        leaves that one out alone: its answer is still the one the others wait for."""
        self.failures += 1
        if self.probe is None or sent is None or sent >= self.probe_sent:
            self.probe = None
        if asked is not None:
            pause = min(asked, self.breaker_seconds, LONGEST_PAUSE)
            self._pause(pause, f"{why}, Retry-After {asked:g} s", logged=pause > SHORT_WAIT)
        if self.failures >= BREAKER_FAILURES:
            self._pause(self.breaker_seconds, f"{self.failures} failures in a row, the last {why}")

    def _pause(self, seconds: float, why: str, logged: bool = True, busy: bool = False) -> None:
        until = time.monotonic() + seconds
        if until >= self.until:
            # The pause that holds requests says why, and whether it is a rate limit's: a shorter
            # one (a late 429 of a request out before a spent quota's) ends within it.
            self.until, self.why, self.busy = until, why, busy
        if logged:
            self.outage.failed(
                "paused",
                "OpenAI %s paused for %.0f s (%s): %s meanwhile",
                self.what,
                seconds,
                why,
                self.meanwhile,
            )


class OpenAIEngine:
    name = "openai"
    # False once the provider refused the key (401/403) or the account is out of quota (429
    # insufficient_quota), until a request sent after that refusal succeeds: /healthz says not
    # ready instead of every note quietly going to the fallback.
    ready = True

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        voice: str,
        reply_format: str,
        transcribe_model: str,
        system_prompt: str,
        audio_history_turns: int = 1,
        max_reply_tokens: int = 0,
        voices: Sequence[str] = VOICES,
        max_retries: int = 2,
        turn_deadline: float = 120.0,
        breaker_seconds: float = 30.0,
        connect_timeout: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        safety_key: bytes | None = None,
    ) -> None:
        """`sleep` waits out pauses and backoffs (a test passes one that records the delay chosen).
        `safety_key`: each request names its player by a keyed hash under it (safety_identifier);
        None sends none. `voices`: those a player may pick, the provider's (Azure's api-version
        takes fewer than OpenAI's models speak)."""
        self.client = client
        self.safety_key = safety_key
        self._sleep = sleep
        self.connect_timeout = connect_timeout
        self.chat_gate = Gate("chat", breaker_seconds, "the fallback answers")
        self.hearing_gate = Gate("transcription", breaker_seconds, "turns are kept without the words")
        # A transcription refused (401/403), or failing (a 5xx, a model not served, timeouts), fails
        # for every note alike through an outage: said once, with the model and the reason, and
        # once more when one is answered again.
        self._hearing_failed = Outage(log, "OpenAI answers transcriptions with model %s again")
        self.max_retries = max_retries
        self.turn_deadline = turn_deadline
        self.model = model
        self.voice = voice
        self.offered = list(voices)
        self._voices_told: set[str] = set()  # players' voices the provider refuses, each said once
        # Models start-up found the provider does not offer: named once as the setting to mend,
        # not again as a name with no usage.prices row.
        self.not_offered: set[str] = set()
        self.reply_format = reply_format
        self.transcribe_model = transcribe_model
        self.system_prompt = system_prompt
        self.audio_history_turns = audio_history_turns
        self.max_reply_tokens = max_reply_tokens
        # The model answers name, as far as known: on Azure `check` asks the deployment.
        self.answers_as = model
        # Reply audio ids the provider gave this engine: their expiry, and the provider's clock
        # (its `created`) less time.monotonic() when it gave them, to tell by its own clock whether
        # it refused one it should still hold.
        self._given_audio: dict[str, tuple[int, float]] = {}
        # Audio ids refused: the conversation holding one sends that reply as text from then on,
        # rather than each of its notes paying for a refused request first.
        self._refused_audio: dict[str, None] = {}
        # time.monotonic() until which earlier replies go as text for every turn: the provider
        # refused an id it gave well before the id's expiry, so it holds none.
        self.audio_refused_until = 0.0

    async def transcribe(self, audio: AudioClip) -> Transcript | None:
        if not self.transcribe_model:
            return None
        try:
            result = await self._send(
                self.hearing_gate,
                lambda: self._once(TRANSCRIBE_TIMEOUT).audio.transcriptions.create(
                    model=self.transcribe_model, file=("note.wav", audio.wav, "audio/wav")
                ),
                deadline=time.monotonic() + TRANSCRIBE_TIMEOUT,
                retries=self.max_retries,
                # A 5xx or a 429 would be tried again for words the turn can be kept without, into
                # a service that is failing or limiting.
                unsent_only=True,
                late=f"timed out after {TRANSCRIBE_TIMEOUT:g} s",
                timed_out_at=f"at the transcription's deadline of {TRANSCRIBE_TIMEOUT:g} s",
            )
        except EnginePaused:
            return None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            said = _said(exc)
            self._hearing_failed.failed(
                f"{exc.status_code} {said}",
                "OpenAI refused transcription with model %s (%d: %s): turns are kept without the"
                " player's words until it answers one",
                self.transcribe_model,
                exc.status_code,
                said,
            )
            return None
        except (openai.OpenAIError, EngineError) as exc:
            why = _hearing_failure(exc)
            self._hearing_failed.failed(
                _failure_kind(exc, why),
                "OpenAI transcription with model %s failed: %s; turns are kept without the player's"
                " words until it answers one",
                self.transcribe_model,
                why,
            )
            return None
        self._hearing_failed.answered(self.transcribe_model)
        text = result.text.strip()
        if not text:
            return None
        # A transcription names no model in its answer: it is priced by the name it was asked of.
        usage = _transcription_usage(getattr(result, "usage", None), self.transcribe_model)
        return PaidTranscript(text, usage=usage)

    async def complete(self, turn: TurnState) -> EngineReply:
        reply = None
        try:
            reply = await self._complete(turn)
            return reply
        finally:
            if reply is None:
                _keep_unanswered(turn)
            if reply is None or not reply.tool_calls:
                # Only a tool round's next step sends the note again: held on through the
                # transcript's wait, the reply's encoding and the history's saving, or a fallback's
                # turn, it would be a second copy of every note being answered at once.
                turn.scratch.pop(ENCODED, None)

    async def _complete(self, turn: TurnState) -> EngineReply:
        deadline: float = turn.scratch.setdefault(DEADLINE, time.monotonic() + self.turn_deadline)
        if turn.rounds and turn.heard is not None and not turn.heard.done():
            # A short wait for the words lets this step send text instead of the audio again.
            await asyncio.wait(
                {turn.heard}, timeout=max(0.0, min(TRANSCRIPT_WAIT, deadline - time.monotonic()))
            )
        if turn.audio is not None and ENCODED not in turn.scratch:
            turn.scratch[ENCODED] = await asyncio.to_thread(_base64, turn.audio.wav)
        try:
            while True:  # each retry below sets a flag of its own: at most four requests
                text_only = turn.scratch.get(TEXT_HISTORY) or time.monotonic() < self.audio_refused_until
                audio_turns = 0 if text_only else self.audio_history_turns
                request = self._request(turn, audio_turns)
                try:
                    response = await self._ask(turn, request, deadline)
                    # Answered without it, or without its oldest turns: they made it too large,
                    # and are let go for good.
                    turn.scratch.pop(TOO_LARGE_WITH_HISTORY, None)
                    turn.scratch.pop(TRIMMED_FROM, None)
                    break
                except openai.APIStatusError as exc:
                    if exc.code == AUDIO_NOT_FOUND and audio_turns:
                        # The conversation goes on with the transcripts of those replies instead.
                        self._audio_refused(request, exc)
                        turn.scratch[TEXT_HISTORY] = True
                    elif _too_large(exc) and turn.history and not turn.afresh:
                        # No wait cures it, and the history is most of a request: kept, it would
                        # have each later note of the conversation refused first. The oldest turns
                        # go first, once a turn; then all of them; none when the request would be
                        # too large without any (its note and its own tool rounds).
                        trimmed = self._trimmed(turn, request, audio_turns, exc)
                        if trimmed is None:
                            raise
                        if trimmed < len(turn.history):
                            log.warning(
                                "a request over OpenAI's token limit on its own (%s): asking without"
                                " the oldest %d of the history's %d turns, which the conversation"
                                " lets go if it is answered",
                                _said(exc),
                                trimmed,
                                len(turn.history),
                            )
                            turn.scratch[TRIMMED_FROM] = turn.let_go
                            turn.let_go = trimmed
                        else:
                            log.warning(
                                "a request over OpenAI's token limit on its own (%s): asking"
                                " without the history of %d turns; answered, the conversation"
                                " goes on from this note",
                                _said(exc),
                                len(turn.history) - turn.let_go,
                            )
                            turn.afresh = turn.scratch[TOO_LARGE_WITH_HISTORY] = True
                    elif exc.code in FILTERED and turn.history and not turn.afresh:
                        # A prompt filter reads the whole prompt: words it blocked in an earlier
                        # turn (a threat the player reported) would refuse every note of theirs
                        # until the conversation idles. This one is asked once more on its own.
                        log.info(
                            "content filter blocked a request with history (%s): asking without it", exc.code
                        )
                        turn.afresh = True
                    elif turn.history and not turn.afresh and _names_history(request, exc):
                        # Something an earlier turn keeps (not this note, nor a setting) would have
                        # each later note of the conversation refused until it idles.
                        log.warning(
                            "OpenAI refused the conversation's history (%s: %s): asking without it,"
                            " and the conversation goes on from this note",
                            exc.param or "no param",
                            _said(exc),
                        )
                        turn.afresh = True
                    else:
                        raise
        except openai.APIStatusError as exc:
            if _too_large(exc) or exc.status_code == PAYLOAD_TOO_LARGE:
                # Too large without the history too: the note, not the history, is over the limit,
                # and the conversation goes on from the history (`complete` keeps it).
                self.ready = self.chat_gate.ready
                raise NoteTooLarge(f"OpenAI answered {exc.status_code}: {_said(exc)}") from exc
            if exc.code in FILTERED:
                self.ready = self.chat_gate.ready
                # Refused with no earlier turn in it (none, or asked again without them).
                return replace(_filtered(f"{exc.status_code} {exc.code}", None), blocked=True)
            if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
                self.chat_gate.key_refused()
                self.ready = False
            elif exc.code == OUT_OF_QUOTA:
                self.ready = False
            elif isinstance(exc, openai.RateLimitError):
                # Past the turn's retries, or asking a longer wait than a turn holds a slot for.
                wait = _pause_asked(exc.response.headers)
                raise EngineBusy(f"OpenAI answered {exc.status_code}: {_said(exc)}", wait=wait) from exc
            # The provider's reason: a request it refuses for a setting (a token limit over the
            # model's, a voice it does not speak) is refused for every note, and `check` passes.
            raise EngineError(f"OpenAI answered {exc.status_code}: {_said(exc)}") from exc
        except (openai.OpenAIError, ValueError) as exc:
            raise EngineError(type(exc).__name__) from exc
        # Not of a request out before an exhausted quota's 429 or the key's refusal came: that tells
        # nothing of the credit or the key now.
        self.ready = self.chat_gate.ready
        return await self._read(turn, response)

    def _audio_refused(self, request: dict[str, Any], exc: openai.APIStatusError) -> None:
        """The provider refused the earlier replies' audio ids `request` sent. None is sent again.
        One it gave and should hold for a while yet by its own clock means it holds none, and
        references pause for every turn; one expired by its clock (this host's may be behind) or
        one it never gave (another key's or provider's) is that conversation's alone."""
        messages = request["messages"]
        sent = [m["audio"]["id"] for m in messages if m.get("audio")]
        # The API names the one it refused ("content.messages[3].audio.id"); the others may be good.
        named = REFUSED_PARAM.fullmatch(exc.param) if isinstance(exc.param, str) else None
        at = int(named[1]) if named else len(messages)
        if at < len(messages) and messages[at].get("audio"):
            sent = [messages[at]["audio"]["id"]]
        for audio_id in sent:
            remember(self._refused_audio, audio_id, None, GIVEN_AUDIO_KEPT)
        held = [
            expires_at - (clock + time.monotonic())
            for expires_at, clock in (self._given_audio[i] for i in sent if i in self._given_audio)
        ]
        if held and max(held) > EXPIRY_MARGIN:
            self.audio_refused_until = time.monotonic() + AUDIO_REFUSED_PAUSE
            log.warning(
                "the provider refused an audio id it gave %.0f s before its expiry (%s): earlier "
                "replies go as text for %.0f s",
                max(held),
                _said(exc),
                AUDIO_REFUSED_PAUSE,
            )
        elif held:
            log.warning(
                "the provider refused an audio id expired by its clock (%s): this host's clock may be "
                "behind; that conversation's history goes as text",
                _said(exc),
            )
        else:
            log.warning("earlier reply's audio refused (%s): sending the history as text", _said(exc))

    async def _read(self, turn: TurnState, response: Any) -> EngineReply:
        if not response.choices:
            raise EngineError("OpenAI returned no choices")
        choice = response.choices[0]
        message = choice.message
        # Priced by the model the answer names: on Azure the deployment's model (the request names
        # only the deployment), on OpenAI the snapshot that answered.
        usage = _usage(response.usage, response.model or self.model)
        if choice.finish_reason == "content_filter":
            # Whatever came before the filter stopped it is not to be said either.
            return _filtered("finish_reason content_filter", usage)
        # Audio models put their words in the audio's transcript, with no content; a transcript
        # of blanks says nothing the content may say.
        transcript = message.audio.transcript if message.audio else None
        said = next((s for s in (transcript, message.content) if isinstance(s, str) and s.strip()), "")
        if message.tool_calls and turn.allow_tools:
            calls: list[ToolCall] = []
            for call in message.tool_calls:
                name, raw = _name_and_arguments(call)
                try:
                    arguments = raw if isinstance(raw, dict) else json.loads(raw or "{}")
                except (json.JSONDecodeError, RecursionError):
                    arguments = {UNPARSED: raw}
                if too_deep(arguments):  # sent back as text: nested, it would fail the next step
                    arguments = {UNPARSED: as_json(raw) if isinstance(raw, dict) else raw}
                # Each result goes back under its call's id: a compatible server that gives a call
                # none (a 400 on the next step) or gives two calls one (a result the model cannot
                # tell apart) gets ids of ours.
                call_id = call.id
                if not call_id or any(c.id == call_id for c in calls):
                    # Random: ids numbered by round would repeat turn after turn in the history.
                    call_id = f"call_voxdesk_{secrets.token_hex(6)}"
                calls.append(ToolCall(id=call_id, name=name, arguments=arguments))
            return EngineReply(tool_calls=calls, text=said, usage=usage)
        if message.refusal:
            # It may quote the player: their words stay out of INFO, which `run` logs and which
            # outlives /forget; repr keeps their new lines and escapes out of the log's lines.
            log.info("model refused to answer (%d characters of refusal)", len(message.refusal))
            log.debug("model refused: %r", message.refusal[:300])
            return EngineReply(text=say.REFUSAL, refusal=True, usage=usage)
        cut_off = choice.finish_reason == "length"
        if cut_off:
            log.warning(
                "reply cut off at openai.max_reply_tokens (%d tokens)%s",
                self.max_reply_tokens,
                ": what was said goes out" if said.strip() or message.audio else " before a word",
            )
        if len(said) > MAX_ANSWER_CHARS:
            log.warning(
                "a reply of %d characters, over the %d one is sent with: cut there",
                len(said),
                MAX_ANSWER_CHARS,
            )
            said, cut_off = clipped(said, MAX_ANSWER_CHARS), True
        if cut_off and len(_FENCE.findall(said)) % 2:
            # Cut inside a code block: left open, Discord shows its fence as text and the code
            # after it as markdown (a "# comment" line as a heading).
            said += "\n```"
        if message.audio is None:
            return EngineReply(text=said, usage=usage, cut_off=cut_off)
        try:
            # Off the loop too: a 90 s WAV reply is 5.8 MB of base64, some 10 ms to decode.
            spoken = await asyncio.to_thread(base64.b64decode, message.audio.data or "")
        except ValueError as exc:  # binascii.Error, or characters outside ASCII
            # The words came: the agent speaks them in the bot's own voice, as it does audio it
            # cannot decode, rather than the player hearing that the service is down.
            log.warning(
                "reply audio is not base64 (%d characters), its words are spoken instead: %s",
                len(message.audio.data),
                exc,
            )
            spoken = None
        # Kept in the history and sent back with the player's next notes: an id or expiry of another
        # type (a compatible server's) would fail every one of them until the conversation idles.
        # An expiry further off than any provider keeps audio is no Unix time in seconds (a
        # compatible server's milliseconds: never expired by this host's clock), and past 2**63
        # SQLite cannot store it, and the turn would be lost from the history.
        audio_id, expires_at = message.audio.id, message.audio.expires_at
        referable = (
            isinstance(audio_id, str)
            and bool(audio_id)
            and type(expires_at) is int
            and 0 < expires_at < time.time() + AUDIO_KEPT_AT_MOST
        )
        if referable:
            # A compatible server's `created` of another type or scale: this host's clock instead.
            created = response.created
            sane = type(created) is int and abs(created - time.time()) < 86_400
            clock = (created if sane else time.time()) - time.monotonic()
            remember(self._given_audio, audio_id, (expires_at, clock), GIVEN_AUDIO_KEPT)
        return EngineReply(
            text=said,
            audio=spoken,
            audio_format=FORMATS[self.reply_format],
            audio_id=audio_id if referable else None,
            audio_expires_at=expires_at if referable else None,
            usage=usage,
            cut_off=cut_off,
        )

    async def _ask(self, turn: TurnState, request: dict[str, Any], deadline: float) -> Any:
        asked = time.monotonic()

        def spent_elsewhere() -> bool:
            """Whether the turn spent most of its time so far other than waiting on OpenAI (on
            its tools, mostly)."""
            now = time.monotonic()
            waited = turn.scratch.get(ASKING, 0.0) + now - asked
            return now - (deadline - self.turn_deadline) - waited > waited

        try:
            return await self._send(
                self.chat_gate,
                lambda: self._once().chat.completions.create(**request),
                deadline=deadline,
                retries=self.max_retries,
                spent_elsewhere=spent_elsewhere,
            )
        finally:
            turn.scratch[ASKING] = turn.scratch.get(ASKING, 0.0) + time.monotonic() - asked

    def _once(self, timeout: float | None = None) -> openai.AsyncOpenAI:
        """The client with none of the SDK's retries (the engine's own are in `_send`)."""
        if timeout is None:
            return self.client.with_options(max_retries=0)
        return self.client.with_options(
            max_retries=0, timeout=openai.Timeout(timeout, connect=min(self.connect_timeout, timeout))
        )

    async def _send(
        self,
        gate: Gate,
        request: Callable[[], Awaitable[T]],
        deadline: float,
        retries: int,
        spent_elsewhere: Callable[[], bool] = lambda: False,
        unsent_only: bool = False,
        late: str = "no answer within openai.turn_deadline_seconds",
        timed_out_at: str = "at the turn's deadline (openai.turn_deadline_seconds)",
    ) -> T:
        """One request through `gate`, sent again (at most `retries` times, while `deadline`, a
        time.monotonic(), allows) after a failure before the server had it whole (`_never_sent`, a
        408), and unless `unsent_only` after a 5xx but a gateway's 502 or 504, or a 429 asking for
        at most SHORT_WAIT. A 408's or a 5xx's Retry-After is waited out as a 429's. Raises the
        SDK's error, EnginePaused when the gate holds requests back for longer than a turn waits
        (BusyPause for a rate limit's), EngineError(`late`) at the deadline, EngineBusy at the
        deadline while waiting for the request that went first after a 429's pause (EngineError
        when a request of the turn's own failed before), or when that request's 429 was the last
        of this turn's tries. A request cut off at a deadline mostly `spent_elsewhere` (by the
        turn's tools) is not the service's failure: the breaker does not count it; one that is
        counts as a failure `timed_out_at`, which names the deadline for the breaker's line."""
        tries = 0
        failed = False  # a request of this turn's own timed out, failed or met a 5xx
        while True:
            wait = gate.wait()
            if wait > 0 and gate.probe is not None and gate.holding:
                limited = gate.limited
                try:
                    async with asyncio.timeout(deadline - time.monotonic()):
                        await gate.probe.wait()
                except TimeoutError:
                    if failed:
                        raise EngineError(late) from None
                    # Held by the rate limit alone: the service is up, not "down" to the player.
                    raise EngineBusy(
                        f"{late}, waiting for the request out alone after a 429's pause",
                        wait=gate.limit_left(),
                    ) from None
                if gate.limited > limited:
                    # Refused: as this turn's own request would have been, had it gone.
                    if unsent_only or tries >= retries:
                        raise EngineBusy(f"OpenAI {gate.what} requests {gate.why}", wait=gate.limit_left())
                    tries += 1
                continue
            if wait > 0:
                if wait > SHORT_WAIT or wait >= deadline - time.monotonic():
                    raise gate.paused()
                await self._sleep(wait)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError(late)
            probe = gate.sending()
            sent = time.monotonic()  # not before the gate's probe_sent: its own 429 counts
            # Seeing whether the service is back: its failure is the pause going on, not this
            # turn's to try again while the fallback answers the others.
            probing = probe is not None and not gate.holding
            try:
                async with asyncio.timeout(left):
                    result = await request()
            except TimeoutError:
                # Slow tools would otherwise pause OpenAI for every player, and it was not slow.
                if not spent_elsewhere():
                    gate.failed(timed_out_at, sent=sent)
                raise EngineError(late) from None
            except openai.RateLimitError as exc:
                if exc.code == OUT_OF_QUOTA:
                    gate.out_of_quota()
                    raise
                if _too_large(exc):
                    # This request alone is over the limit, which may have room for every other:
                    # sent again it would be refused again, and a pause would hold them back.
                    gate.answered_about_itself(sent)
                    raise
                pause = gate.rate_limited(_pause_asked(exc.response.headers), sent)
                if (
                    not unsent_only
                    and tries < retries
                    and pause <= SHORT_WAIT
                    and pause < deadline - time.monotonic()
                ):
                    tries += 1
                    continue  # after the pause, which the gate now holds for every turn
                raise
            except (openai.APIConnectionError, openai.APIStatusError) as exc:
                status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
                if status is not None and status != NEVER_HAD_WHOLE and status < 500:
                    gate.answered(sent)
                    raise
                if status is not None and _model_error(exc):
                    # The service answered, about what this request holds: its tries are no
                    # failures in a row that would pause every player's notes.
                    gate.answered_about_itself(sent)
                    backoff = _backoff(tries)
                    if tries < retries and not unsent_only and backoff < deadline - time.monotonic():
                        tries += 1
                        await self._sleep(backoff)
                        continue
                    raise
                asked = _wait_named(exc.response.headers) if status is not None else None
                timed_out = isinstance(exc, openai.APITimeoutError)
                failed = True
                gate.failed("timed out" if timed_out else str(status or type(exc).__name__), asked, sent)
                if probing:
                    raise gate.paused() from exc
                if isinstance(exc, openai.APIConnectionError) and not _never_sent(exc):
                    # Timed out or dropped once the whole request was out (a proxy's idle timeout
                    # in a long generation): it may have been generated and billed, and asked again
                    # it would be late, or cut off, again.
                    raise
                if status in GATEWAY_FAILED or (unsent_only and status not in (None, NEVER_HAD_WHOLE)):
                    raise  # for the same reasons; or a failing service not asked again for words
                if asked is not None:
                    # The gate holds the named wait for every turn: a short one is waited out.
                    paused = gate.wait()
                    if tries < retries and paused <= SHORT_WAIT and paused < deadline - time.monotonic():
                        tries += 1
                        continue
                    raise
                backoff = _backoff(tries)
                # Sent before the request out alone after a 429's pause, which is still out: tried
                # again once that one is answered, as a late 429 is (the loop waits for it).
                after_probe = gate.probe is not None and gate.holding
                if (
                    tries < retries
                    and (gate.wait() == 0 or after_probe)
                    and backoff < deadline - time.monotonic()
                ):
                    tries += 1
                    await self._sleep(backoff)
                    continue
                raise
            finally:
                if probe is not None:
                    gate.probed(probe)
            gate.answered(sent)
            return result

    def _trimmed(
        self, turn: TurnState, request: dict[str, Any], audio_turns: int, exc: openai.APIStatusError
    ) -> int | None:
        """How many of the history's oldest turns to leave out of a request that was too large
        (`request`, which `exc` refused): the fewest that bring it within the limit by
        TOO_LARGE_MARGIN as estimated, unless that is every one, or they were left out before in
        this turn (len(turn.history): ask without the history); None when the request would be
        too large without any history too.

        The estimate starts from the tokens the 429 counted and takes off the difference
        `estimated_tokens` makes out between the request and the one without those turns (fewer
        turns leave more room for the turn's own tool results, see `fitted`)."""
        limit, requested = _limit_and_requested(exc)
        said = {p.audio_id: p.reply_text for p in turn.history if p.audio_id}
        sent = estimated_tokens(request["messages"], said)

        def without(oldest: int) -> float:
            kept = turn.history[oldest:] if oldest < len(turn.history) else []
            return requested - sent + estimated_tokens(self._messages(turn, kept, audio_turns), said)

        if requested - HISTORY_AT_MOST * (requested - without(len(turn.history))) > limit:
            return None  # the note and its own tool rounds are over the limit on their own
        if turn.let_go == 0:
            for oldest in range(1, len(turn.history)):
                if without(oldest) <= limit * (1 - TOO_LARGE_MARGIN):
                    return oldest
        return len(turn.history)

    def _messages(self, turn: TurnState, history: list[PastTurn], audio_turns: int) -> list[dict[str, Any]]:
        return build_messages(
            self.system_prompt,
            replace(turn, history=history),
            audio_turns,
            refused=self._refused_audio,
            # One time for every step of the turn, so each step's prompt begins as the last did.
            asked_at=turn.scratch.setdefault(ASKED_AT, time.time()),
        )

    def _request(self, turn: TurnState, audio_turns: int) -> dict[str, Any]:
        history = [] if turn.afresh else turn.history[turn.let_go :]
        request: dict[str, Any] = {
            "model": self.model,
            "messages": self._messages(turn, history, audio_turns),
            "modalities": ["text", "audio"],
            "audio": {"voice": self._voice(turn.voice), "format": self.reply_format},
            "tools": [tool.spec() for tool in turn.tools],
        }
        if self.max_reply_tokens:
            request["max_completion_tokens"] = self.max_reply_tokens
        if self.safety_key is not None:
            # In the body rather than as create()'s argument: an SDK pyproject allows (openai 1.91)
            # has no such argument, and would raise TypeError on every note.
            # Whose budget the turn spends: the player, or a playground visitor (by address), not
            # their browser session, which a dropped cookie would make a new person to OpenAI.
            name = safety_identifier(self.safety_key, turn.context.spender)
            request["extra_body"] = {"safety_identifier": name}
        if not turn.allow_tools:
            request["tool_choice"] = "none"  # the rounds bound is reached: answer now
        return request

    def voices(self) -> list[str]:
        return list(self.offered)

    def _voice(self, chosen: str | None) -> str:
        """A player's voice, or the configured one for a name this provider does not take: the
        offline engine's (the player picked it while it answered), or one of OpenAI's voices that
        Azure's api-version refuses (picked before the switch to Azure), which would have every
        note of theirs refused."""
        if chosen in self.offered:
            return chosen
        if chosen in VOICES and chosen not in self._voices_told:
            self._voices_told.add(chosen)
            log.warning(
                "a player's voice %s is not one this provider takes (%s): %s speaks to them instead",
                chosen,
                ", ".join(self.offered),
                self.voice,
            )
        return self.voice

    async def verify_model(self) -> None:
        """Warn at start-up when the configured model, or the transcription model, is unknown to
        the provider, or the model is retired."""
        if self.model in SHUTDOWNS:
            log.warning(
                "model %s is %s: set openai.model to a current audio model", self.model, SHUTDOWNS[self.model]
            )
        where = shown_url(str(self.client.base_url)).rstrip("/")
        # A lookup is quick or the provider is not answering: one try, no longer than connecting
        # may take. It only decides a warning, and start-up (the fallback with it) waits for it.
        once = self._once(self.connect_timeout)
        try:
            await once.models.retrieve(self.model)
        except openai.NotFoundError:
            self.not_offered.add(self.model)
            log.warning("model %s is not offered by this provider: check openai.model", self.model)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            if _lacks_model_read(exc):
                # Unchecked, not refused: the key may well use the models, and the first note's
                # requests tell whether it does. A second lookup would be refused the same way.
                log.warning("%s: %s", where, self._unread(exc))
                return
            self.chat_gate.key_refused()
            self.ready = False
            if isinstance(exc, openai.AuthenticationError):
                log.error("%s refused the API key (401: %s): check OPENAI_API_KEY", where, _said(exc))
                return
            log.error("%s: the API key may not use model %s (403: %s)", where, self.model, _said(exc))
        except openai.OpenAIError as exc:
            log.info("could not check model %s: %s", self.model, type(exc).__name__)
            return  # not answering: start-up waits for no second lookup
        try:
            await self._look_up_transcriber(once)
        except openai.NotFoundError as exc:
            self.not_offered.add(self.transcribe_model)
            # Each note's transcription meets the same 404, no news once this line has said it.
            self._hearing_failed.failed(
                _failure_kind(exc, _hearing_failure(exc)),
                "model %s is not offered by this provider: check openai.transcribe_model",
                self.transcribe_model,
            )
        except openai.PermissionDeniedError as exc:
            # Not the key's refusal: the chat's lookup passed with it, and the chat answers. Each
            # note's transcription meets the same refusal, no news once this line has said it.
            said = _said(exc)
            self._hearing_failed.failed(
                f"{exc.status_code} {said}",
                "%s: the API key may not use transcription model %s (403: %s): allow it for the"
                " key's project in OpenAI's settings, or set openai.transcribe_model to a model it"
                " may use (empty for none); until then turns are kept without the player's words",
                where,
                self.transcribe_model,
                said,
            )
        except openai.OpenAIError as exc:
            log.info("could not check model %s: %s", self.transcribe_model, type(exc).__name__)

    def _unread(self, exc: openai.APIStatusError) -> str:
        """What a model lookup refused for want of the api.model.read scope leaves unknown."""
        models = " and ".join(dict.fromkeys(m for m in (self.model, self.transcribe_model) if m))
        return (
            f"the API key may not look up models ({exc.status_code}: it lacks the {MODEL_READ} scope,"
            f" as a restricted key given Models: None does), so {models} go unchecked and the first"
            " note shows whether it may use them; give the key Models: Read to have them looked up"
        )

    async def _look_up_transcriber(self, client: openai.AsyncOpenAI) -> None:
        """Look up the transcription model, where there is one apart from the chat model, at
        start-up and for `check`; the provider's error (openai.NotFoundError: it does not serve
        it) is the caller's to tell. Unseen, each note's transcription would be a 404, and every
        turn kept without the player's words."""
        if self.transcribe_model and self.transcribe_model != self.model:
            await client.models.retrieve(self.transcribe_model)

    async def check(self) -> str:
        """For `python -m bot check`: one request that proves the key and the model are good, and
        one more for the transcription model (on Azure, its deployment hears half a second of
        silence)."""
        where = shown_url(str(self.client.base_url)).rstrip("/")
        azure = isinstance(self.client, openai.AsyncAzureOpenAI)
        configured = self.client.timeout
        read = configured.read if isinstance(configured, openai.Timeout) else configured
        seconds = min(PROBE_TIMEOUT, read) if isinstance(read, int | float) else PROBE_TIMEOUT
        probe = self._once(seconds)
        asking = f"model {self.model}"  # named in the line when the request out fails
        named = (self.model, "openai.azure_deployment")  # what was asked for, and its setting
        try:
            if azure:
                asking = f"deployment {self.model}"
                # Azure's data plane has no deployment lookup (listing models passes for any
                # name): the smallest request to the deployment proves it exists and answers. An
                # audio model refuses one with no audio, so it hears a moment of silence.
                silence = {"type": "input_audio", "input_audio": {"data": SILENCE, "format": "wav"}}
                answered = await probe.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": [silence]}],
                    modalities=["text"],
                    max_completion_tokens=1,
                )
                self.answers_as = answered.model or self.model
                answers = (
                    f"Azure OpenAI {where}: reachable, deployment {self.model} answers as {self.answers_as}"
                )
                if self.transcribe_model:
                    asking = f"deployment {self.transcribe_model}"
                    named = (self.transcribe_model, "openai.transcribe_model")
                    # Nor would a missing transcription deployment show but as one warning a note,
                    # and every turn kept without the player's words.
                    await probe.audio.transcriptions.create(
                        model=self.transcribe_model,
                        file=("check.wav", base64.b64decode(SILENCE), "audio/wav"),
                    )
                return answers
            named = (self.model, "openai.model")
            await probe.models.retrieve(self.model)
            asking = f"model {self.transcribe_model}"
            named = (self.transcribe_model, "openai.transcribe_model")
            await self._look_up_transcriber(probe)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            if not azure and _lacks_model_read(exc):
                # The key is taken (refused a scope, not itself), and no lookup shows the models:
                # this check's warning, the next check's to say again or not.
                return NeedsHuman(f"OpenAI {where}: {self._unread(exc)}")
            if isinstance(exc, openai.AuthenticationError):
                raise RuntimeError(f"{where} refused the API key ({exc.status_code}): check it") from None
            name, setting = named
            if azure:
                raise RuntimeError(
                    f"{where}: the key may not use deployment {name} ({exc.status_code}: {_said(exc)})"
                ) from None
            raise RuntimeError(
                f"{where}: the key may not use model {name} ({exc.status_code}: {_said(exc)}): allow"
                f" it for the key's project in OpenAI's settings, or change {setting}"
            ) from None
        except openai.NotFoundError as exc:
            if azure and not _no_deployment(exc):
                raise RuntimeError(
                    f"{where} answered 404 {_said(exc)!r} ({asking}): check openai.api_version, "
                    "which Azure answers so when it does not serve it, and openai.azure_endpoint"
                ) from None
            name, setting = named
            if azure:
                raise RuntimeError(f"{where} has no deployment {name}: check {setting}") from None
            raise RuntimeError(f"{where} does not offer model {name}: check {setting}") from None
        except openai.APITimeoutError:
            raise RuntimeError(f"{where} did not answer within {seconds:g} s ({asking})") from None
        except openai.APIConnectionError as exc:
            raise RuntimeError(f"cannot reach {where}: {exc.__cause__ or exc}") from None
        except openai.APIStatusError as exc:
            raise RuntimeError(f"{where} answered {exc.status_code} ({asking})") from None
        retired = f" (warning: {SHUTDOWNS[self.model]})" if self.model in SHUTDOWNS else ""
        return f"OpenAI {where}: model {self.model} available{retired}"

    def billed_models(self) -> list[str]:
        """The names turns' tokens are billed under, for `check` to find their price rows."""
        return [m for m in (self.answers_as, self.transcribe_model) if m]

    async def aclose(self) -> None:
        await self.client.close()


def build_messages(
    system_prompt: str,
    turn: TurnState,
    audio_turns: int = 1,
    now: float | None = None,
    refused: Container[str] = (),
    asked_at: float | None = None,
) -> list[dict[str, Any]]:
    """The request's messages; `refused`: earlier replies' audio ids the provider refused, sent as
    their transcripts; `asked_at`: the time the model is told it is now."""
    now = time.time() if now is None else now
    history, rounds = fitted(turn.history, turn.rounds)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    by_audio = len(history) - audio_turns
    for index, past in enumerate(history):
        messages += _past_turn(past, now, by_audio=index >= by_audio and past.audio_id not in refused)
    # The tools' times are UTC, and without today's date the model cannot say how long ago one
    # was. The note sits just before the player's words rather than in the system prompt: the
    # prompt's beginning, which the provider caches, stays the same from turn to turn.
    messages.append({"role": "system", "content": time_note(now if asked_at is None else asked_at)})
    heard = _heard(turn)
    if turn.rounds and heard:
        # After the first step the player's words, already transcribed, say the same as their
        # audio did, at a fraction of the cost.
        messages.append({"role": "user", "content": heard})
    elif turn.audio is not None:
        encoded = turn.scratch.get(ENCODED) or _base64(turn.audio.wav)
        messages.append(
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}}],
            }
        )
    else:
        messages.append({"role": "user", "content": turn.text or ""})
    for round_ in rounds:
        messages.append(
            {
                "role": "assistant",
                "content": round_.assistant_text or None,
                "tool_calls": [_tool_call(c.id, c.name, c.arguments) for c in round_.calls],
            }
        )
        messages += [
            {"role": "tool", "tool_call_id": r.call.id, "content": as_json(r.result)} for r in round_.results
        ]
    return _distinct_call_ids(messages)


def fitted(
    history: list[PastTurn], rounds: list[Round], budget: int = MAX_HISTORY_CHARS
) -> tuple[list[PastTurn], list[Round]]:
    """The history and the turn's tool rounds a request carries, within `budget` characters
    together (the player's note is no part of it, and always goes). Ten rounds of eight searches
    come to more than the budget on their own: the newest results go whole, each older one that
    no longer fits as RESULT_LEFT_OUT (every call is answered, or the API refuses the request),
    and the history's oldest turns are left out before any of them."""
    left_out = as_json({"error": say.RESULT_LEFT_OUT})

    def short(call: ToolCall) -> bool:
        return len(as_json(call.arguments)) <= SHOWN_CHARS

    def least(r: ToolResult) -> int:
        """What a call costs left out: the stand-in, and its arguments when short ({} if not)."""
        return len(left_out) + (len(as_json(r.call.arguments)) if short(r.call) else 2)

    # What goes whatever fits (a few thousand characters at most: ten rounds of eight calls).
    room = budget - sum(least(r) for round_ in rounds for r in round_.results)
    shown: list[Round] = []
    for round_ in reversed(rounds):  # newest first
        calls, results = list(round_.calls), []
        for i, r in enumerate(round_.results):  # in the calls' order (Toolbox.run_all)
            more = len(as_json(r.result)) + len(as_json(r.call.arguments)) - least(r)
            if more <= room:
                room -= more
                results.append(r)
                continue
            results.append(replace(r, result={"error": say.RESULT_LEFT_OUT}))
            if not short(r.call) and i < len(calls):
                calls[i] = replace(calls[i], arguments={})
        said = round_.assistant_text
        if len(said) <= room:
            room -= len(said)
        else:
            said = ""
        shown.append(Round(calls=calls, results=results, assistant_text=said))
    kept: list[PastTurn] = []
    for past in reversed(history):  # newest first: a turn too big to fit ends the history there
        room -= chars_of(past)
        if room < 0:
            break
        kept.append(past)
    return kept[::-1], shown[::-1]


def time_note(at: float) -> str:
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    return f"It is now {when:%A %Y-%m-%d %H:%M} UTC. The player's own time zone is unknown."


def _distinct_call_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with no two calls under one id, and none over MAX_CALL_ID: a compatible server
    may number each answer's calls from call_0, a history may hold ids voxdesk numbered by round,
    and one may hold a server's ids longer than OpenAI takes back (vLLM's are 46 characters). A
    repeat, and its result, go under the id with a suffix, a long id under its digest: the same
    on every step, so the prompt's cached beginning stays the same."""
    seen: set[str] = set()
    open_calls: list[tuple[str, str]] = []  # the last calls' ids as sent and as they were, in order
    for message in messages:
        if message.get("tool_calls"):
            open_calls = []
            for call in message["tool_calls"]:
                old = call["id"]
                new, suffix = _short_id(old), 2
                while new in seen:
                    new, suffix = _short_id(f"{old}_{suffix}"), suffix + 1
                seen.add(new)
                open_calls.append((call["id"], new))
                call["id"] = new
        elif message.get("role") == "tool":
            # Results follow their calls in order: this one answers the first open call of its id.
            for i, (old, new) in enumerate(open_calls):
                if message["tool_call_id"] == old:
                    message["tool_call_id"] = new
                    del open_calls[i]
                    break
    return messages


def _short_id(call_id: str) -> str:
    """A call id OpenAI takes back: itself, or when too long "call_" and 24 hex digits of its
    digest, as long as its own ids."""
    if len(call_id) <= MAX_CALL_ID:
        return call_id
    return "call_" + hashlib.sha256(call_id.encode()).hexdigest()[:24]


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _heard(turn: TurnState) -> str | None:
    task = turn.heard
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    heard = task.result()
    return heard.text if heard is not None else None


def _past_turn(past: PastTurn, now: float, by_audio: bool) -> list[dict[str, Any]]:
    """An earlier turn as text; its audio reply by reference only while OpenAI still holds it.
    The player's past audio is never sent again."""
    out: list[dict[str, Any]] = [{"role": "user", "content": past.user_text or "(a voice note)"}]
    calls = [r for r in past.tool_results if r.get("id")]
    if calls:
        out.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [_tool_call(r["id"], r["name"], r["arguments"]) for r in calls],
            }
        )
        out += [{"role": "tool", "tool_call_id": r["id"], "content": as_json(r["result"])} for r in calls]
    if by_audio and past.audio_id and past.audio_expires_at and past.audio_expires_at > now + EXPIRY_MARGIN:
        out.append({"role": "assistant", "audio": {"id": past.audio_id}})
    else:
        out.append({"role": "assistant", "content": past.reply_text})
    return out


def _tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    # A model may call a tool that does not exist, named in a way the API refuses to be sent
    # back ("multi_tool_use.parallel"): the call and its "no such tool" result go back under a
    # name it takes, or every later request of the conversation would be a 400.
    name = NOT_IN_A_NAME.sub("_", name)[:64] or "unknown_tool"
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": as_json(arguments)}}


def as_json(value: Any) -> str:
    """Tool arguments and results as the model reads them: words outside ASCII as written. As
    \\u escapes a letter of Cyrillic or kana is six characters and several tokens, and a history
    kept to MAX_HISTORY_CHARS characters would be sent as several times the tokens it allows. A
    lone surrogate (half an emoji in a model's arguments) becomes U+FFFD: the SDK sends the body as
    UTF-8, which cannot hold one."""
    return well_formed(json.dumps(value, ensure_ascii=False))


def _name_and_arguments(call: Any) -> tuple[str, str | dict[str, Any]]:
    """A call's tool name and its arguments as sent: their JSON text, or the object itself from a
    compatible server that sends one. A custom tool's call (voxdesk offers none) is taken by its name
    and its input as the arguments' text: a tool of ours by that name checks them as any call's."""
    function = getattr(call, "function", None) or getattr(call, "custom", None)
    if isinstance(function, dict):  # an SDK that predates custom tools keeps the field as it came
        function = types.SimpleNamespace(**{k: v for k, v in function.items() if isinstance(k, str)})
    name = getattr(function, "name", None)
    raw = getattr(function, "arguments", getattr(function, "input", None))
    if raw is not None and not isinstance(raw, str | dict):
        raw = as_json(raw)
    return (name if isinstance(name, str) else ""), raw or ""


def _never_sent(exc: openai.APIConnectionError) -> bool:
    """Whether the request failed before the server could have had all of it: no connection was
    made (refused, unreachable, its TLS handshake, the connect timeout), the proxy would not carry
    it (HTTPS_PROXY answering CONNECT with an error), or the connection was lost before the whole
    request was written (a pooled one the server closed just as it was reused, one reset during
    the upload), which httpcore reports only as the read that follows failing. A server cannot
    answer, nor bill, a request it never had whole; one written whole and then dropped or timed
    out it may have."""
    if any(kind.__name__ in NEVER_SENT for kind in type(exc.__cause__).__mro__):
        return True
    extensions = getattr(exc.request, "extensions", {})
    return "trace" in extensions and not extensions.get(SENT_WHOLE)


async def _watch_sending(request: Any) -> None:
    """An httpx request hook: marks the request SENT_WHOLE once httpcore has written all of it."""
    # Through HTTPS_PROXY the tunnel's CONNECT is written first, traced under the same extension:
    # its body, written whole, is not this request's.
    writing: list[bytes] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.started"):
            writing[:] = [getattr(info.get("request"), "method", b"")]
        elif event.endswith(".send_request_body.complete") and writing != [b"CONNECT"]:
            request.extensions[SENT_WHOLE] = True

    request.extensions["trace"] = trace


def _said(exc: openai.APIStatusError) -> str:
    """The provider's own one-line reason for refusing a request."""
    body = exc.body if isinstance(exc.body, dict) else {}
    text = str(body.get("message") or exc.message).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _hearing_failure(exc: openai.OpenAIError | EngineError) -> str:
    """A failed transcription's reason for the log, the same for each note failing alike (the
    outage's key): the status and the provider's words, the timeout, or the connection's fault."""
    if isinstance(exc, openai.APIStatusError):
        return f"{exc.status_code} {_said(exc)}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        named = _first_line(cause) if cause is not None else type(exc).__name__
        if _never_sent(exc):
            return f"could not connect ({named})"
        if isinstance(exc, openai.APITimeoutError):
            return f"timed out after {TRANSCRIBE_TIMEOUT:g} s"
        return f"connection lost ({named})"
    if isinstance(exc, EngineError):
        return str(exc) or type(exc).__name__
    return _first_line(exc)


def _failure_kind(exc: openai.OpenAIError | EngineError, why: str) -> str:
    """What tells one failure from another: the status and the error's code where it names one
    (a model lookup's 404 and a transcription's word model_not_found apart), else `why`."""
    if isinstance(exc, openai.APIStatusError) and isinstance(exc.code, str) and exc.code:
        return f"{exc.status_code} {exc.code}"
    return why


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _lacks_model_read(exc: openai.APIStatusError) -> bool:
    """Whether a 401 or a 403 refused a model lookup for the api.model.read scope the key lacks,
    not the key or the model ("You have insufficient permissions for this operation. Missing
    scopes: api.model.read. ..."; OpenAI answers some missing scopes 401)."""
    if exc.status_code not in (401, 403):
        return False
    body = exc.body if isinstance(exc.body, dict) else {}
    found = MISSING_SCOPES.search(str(body.get("message") or exc.message))
    return found is not None and MODEL_READ in (s.rstrip(".") for s in re.split(r", *", found[1]))


def _keep_unanswered(turn: TurnState) -> None:
    """The history's turns a step was asked without, for a request too large with them, stay in
    the conversation (a fallback's answer goes on from them) unless a request without them was
    answered: one that failed otherwise (a 5xx, a timeout, a pause, too large still) showed
    nothing about the rest fitting, and the next note is sized by its own request."""
    if turn.scratch.pop(TOO_LARGE_WITH_HISTORY, False):
        turn.afresh = False
    if TRIMMED_FROM in turn.scratch:
        turn.let_go = turn.scratch.pop(TRIMMED_FROM)


def _too_large(exc: openai.APIStatusError) -> bool:
    """Whether a 429 refuses a request for asking more tokens than the limit allows in all."""
    limit, requested = _limit_and_requested(exc)
    return requested > limit


def _limit_and_requested(exc: openai.APIStatusError) -> tuple[float, float]:
    """The token limit a 429 names and the tokens it says the request asked for; (0, 0) when
    it names none."""
    if exc.status_code != 429:
        return 0.0, 0.0
    body = exc.body if isinstance(exc.body, dict) else {}
    found = LIMIT_REQUESTED.search(str(body.get("message") or exc.message))
    if found is None:
        return 0.0, 0.0
    try:
        limit, requested = (float(n.replace(",", "")) for n in found.groups())
    except ValueError:
        return 0.0, 0.0
    return limit, requested


def estimated_tokens(messages: list[dict[str, Any]], said: dict[str, str]) -> float:
    """Roughly the tokens `messages` come to, only to tell how much of a request too large to
    leave out: text (each message as JSON) at four characters a token but a character outside
    ASCII a token of its own (a kana, a Cyrillic letter); a note's audio by its length at
    NOTE_TOKENS_A_SECOND; an earlier reply sent back by its audio id at SPEECH_TOKENS_A_SECOND of
    its words (`said`, by id) spoken. Audio is most of a request's tokens when there is any."""
    tokens = 0.0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "input_audio":
                    seconds = len(part["input_audio"]["data"]) * 3 / 4 / WAV_BYTES_A_SECOND
                    tokens += seconds * NOTE_TOKENS_A_SECOND
                else:
                    tokens += _text_tokens(as_json(part))
            message = {k: v for k, v in message.items() if k != "content"}
        audio = message.get("audio")
        if isinstance(audio, dict):
            words = len(said.get(audio.get("id") or "", "").split())
            tokens += words / WORDS_A_SECOND * SPEECH_TOKENS_A_SECOND
        tokens += _text_tokens(as_json(message))
    return tokens


def _text_tokens(text: str) -> float:
    outside_ascii = len(text) - len(text.encode("ascii", "ignore"))
    return (len(text) - outside_ascii) / 4 + outside_ascii


def _backoff(tries: int) -> float:
    """Seconds before try `tries` + 1 of a request the service failed: doubling from half a second
    up to 8, less up to a quarter at random, so that turns failed together do not retry together."""
    return min(0.5 * 2**tries, 8.0) * (1 - 0.25 * random.random())


def _model_error(exc: openai.APIStatusError) -> bool:
    """Whether a 5xx is OpenAI's model_error ("The model produced invalid content. Consider
    modifying your prompt ..."): the model failed on what this request holds (a history of tool
    calls has been seen to bring it on every time), not the service."""
    body = exc.body if isinstance(exc.body, dict) else {}
    return exc.type == "model_error" or body.get("type") == "model_error"


def _names_history(request: dict[str, Any], exc: openai.APIStatusError) -> bool:
    """Whether a 400 names a message of the earlier turns `request` carried (those between the
    system prompt and the time note) as what it refused."""
    if exc.status_code != 400:
        return False
    body = exc.body if isinstance(exc.body, dict) else {}
    named = next(
        (
            found
            for text in (exc.param, body.get("message"))
            if isinstance(text, str) and (found := IN_MESSAGE.search(text))
        ),
        None,
    )
    if named is None:
        return False
    messages = request["messages"]
    note = next((i for i, m in enumerate(messages) if i and m.get("role") == "system"), 0)
    return 0 < int(named[1]) < note


def _filtered(why: str, usage: Usage | None) -> EngineReply:
    """The provider's content filter blocked the request or the answer: the player hears the
    polite refusal, and no other engine answers what the filter blocked."""
    log.info("content filter: %s", why)
    return EngineReply(text=say.REFUSAL, refusal=True, usage=usage)


def _pause_asked(headers: Any) -> float | None:
    """Seconds a 429 asks to wait: its Retry-After (`_wait_named`), else the reset of the limit it
    ran out of (x-ratelimit-reset-requests when no request is left, -tokens when no token is, the
    later of the two when neither is, else -tokens), with units as OpenAI gives it or in bare
    seconds as Azure does."""
    named = _wait_named(headers)
    if named is not None:
        return named
    run_out = [k for k in ("requests", "tokens") if headers.get(f"x-ratelimit-remaining-{k}") == "0"]
    resets = [r for k in run_out or ["tokens"] if (r := _reset(headers, k)) is not None]
    return max(resets, default=None)


def _reset(headers: Any, limit: str) -> float | None:
    """Seconds until the limit named ("requests" or "tokens") resets, None when it names none."""
    # Azure's 429 has named it x-rate-limit-reset-tokens too ("55", beside an
    # x-ratelimit-remaining-requests, and no retry-after: openai/openai-python#937).
    reset = (
        headers.get(f"x-ratelimit-reset-{limit}") or headers.get(f"x-rate-limit-reset-{limit}") or ""
    ).strip()
    if RESET_SECONDS.fullmatch(reset):
        # Read as a Retry-After's seconds, a Unix time among them. A limit that resets now names no
        # wait (Azure has been seen sending "0" with its counts at -1), nor does one already past.
        return seconds_named(reset, past=None) or None
    parts = RESET.findall(reset)
    if not parts or "".join(n + u for n, u in parts) != reset:
        return None
    return sum(float(n) * UNITS[u] for n, u in parts) or None  # "0s", as Azure's "0" above


def _wait_named(headers: Any) -> float | None:
    """Seconds an answer's retry-after-ms or retry-after (seconds, or an HTTP date a proxy or
    gateway in front of the service may send) names. The rate limits' resets are a 429's alone:
    OpenAI sends them with every answer."""
    try:
        seconds = float(headers.get("retry-after-ms") or "nan") / 1000
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds) and seconds >= 0:
        return seconds
    # A date already past falls back to the limit's reset, the 429's doubling, the 5xx's backoff.
    return seconds_named(headers.get("retry-after"), past=None)


def _transcription_usage(usage: Any, model: str) -> Usage | None:
    """Tokens of a transcription billed by token; one billed by duration is counted by the turn's
    audio seconds already."""
    if getattr(usage, "type", None) != "tokens":
        return None
    audio = _tokens(getattr(usage, "input_token_details", None), "audio_tokens")
    return Usage(
        text_in=max(0, _tokens(usage, "input_tokens") - audio),
        text_out=_tokens(usage, "output_tokens"),
        audio_in=audio,
        model=model,
    )


def _usage(usage: Any, model: str) -> Usage | None:
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens_details", None)
    prompt_audio = _tokens(prompt, "audio_tokens")
    completion_audio = _tokens(getattr(usage, "completion_tokens_details", None), "audio_tokens")
    return Usage(
        text_in=max(0, _tokens(usage, "prompt_tokens") - prompt_audio),
        text_out=max(0, _tokens(usage, "completion_tokens") - completion_audio),
        audio_in=prompt_audio,
        audio_out=completion_audio,
        cached_in=_tokens(prompt, "cached_tokens"),
        model=model,
    )


def _no_deployment(exc: openai.NotFoundError) -> bool:
    """Whether Azure's 404 says the deployment is missing: it answers an api-version it does not
    serve (or a path it has not) with a 404 too, whose code is "404"."""
    return exc.code == "DeploymentNotFound"


def _tokens(counts: Any, name: str) -> int:
    """A count of a usage as a compatible server may send it: null, left out or no number is 0.
    The model answered, and a count it did not give must not lose the player the answer."""
    value = getattr(counts, name, None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def safety_identifier(key: bytes, speaker: str) -> str:
    """The player as OpenAI's abuse monitoring knows them: one name for all their requests, which
    OpenAI, never holding the key, cannot turn back into their Discord id."""
    return "voxdesk-" + hmac.new(key, speaker.encode(), hashlib.sha256).hexdigest()[:32]


def safety_key(folder: Path) -> bytes | None:
    """The key safety identifiers are hashed under, made once and kept in `folder`, so that a
    player keeps one identifier across restarts and processes; None, said in one warning, when it
    cannot be made or read, or is too short to keep a hash from being turned back into the id (an
    empty file left by a cut-short restore): then requests name no one."""
    path = folder / SAFETY_KEY_FILE
    try:
        key = _made_or_read(folder, path)
    except OSError as exc:
        log.warning("%s: %s; requests to OpenAI name no player", path, exc)
        return None
    if len(key) < SAFETY_KEY_BYTES:
        log.warning(
            "%s holds %d bytes, not %d: requests to OpenAI name no player until it is removed (a"
            " new key is then made, and every player gets a new name)",
            path,
            len(key),
            SAFETY_KEY_BYTES,
        )
        return None
    return key


def _made_or_read(folder: Path, path: Path) -> bytes:
    """Linked into place whole: a process starting alongside reads the same key, never a part."""
    with _MAKING:  # no key of this process's being made as a killed one's are removed
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = _made(folder, path)
        # A process killed as it made the key left a copy of it (or a part) that nothing else
        # removes, and that would outlive the key removed to give every player a new name.
        remove_partials(folder, [path.name])
    return key


def _made(folder: Path, path: Path) -> bytes:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    made, fd = new_partial(path, 0o600)
    try:
        os.write(fd, secrets.token_bytes(SAFETY_KEY_BYTES))
        os.fsync(fd)
        try:
            os.link(made, path)
        except FileExistsError:
            pass  # another process's came first: both use it
    finally:
        made.unlink()
        os.close(fd)
    # The key's name on disk before a request carries a name hashed under it: lost to a power
    # cut, a new key would give every player a new name.
    fsync_path(folder)
    return path.read_bytes()


def build_client(settings: Settings) -> openai.AsyncOpenAI:
    o = settings.openai
    if o.provider == "azure":
        return openai.AsyncAzureOpenAI(
            api_key=settings.secrets.azure_openai_api_key,
            azure_endpoint=o.azure_endpoint,
            # No client-wide deployment: each request's `model` names its deployment, so chat and
            # transcription can use different deployments.
            api_version=o.api_version,
            timeout=openai.Timeout(o.timeout_seconds, connect=o.connect_timeout_seconds),
            max_retries=o.max_retries,
            http_client=_http_client(),
        )
    # Left out, the SDK reads its own variables (config.OPENAI_SDK_ENV), as it documents:
    # OPENAI_BASE_URL when openai.base_url is empty, OPENAI_ORG_ID, OPENAI_PROJECT_ID.
    return openai.AsyncOpenAI(
        api_key=settings.secrets.openai_api_key,
        base_url=o.base_url or None,
        timeout=openai.Timeout(o.timeout_seconds, connect=o.connect_timeout_seconds),
        max_retries=o.max_retries,
        http_client=_http_client(),
    )


def names_players(provider: str, setting: str, base_url: str) -> bool:
    """Whether requests carry a safety_identifier (openai.safety_identifier). Azure's API version
    (openai.api_version) documents no such field; under "auto" only OpenAI's own service gets it,
    as a compatible server or gateway may refuse a field it does not know, every note with it."""
    if provider != "openai" or setting == "off":
        return False
    host = urllib.parse.urlsplit(base_url).hostname or ""
    # Its data residency regions are its own service too: eu.api.openai.com, us., au., ...
    return setting == "on" or host == OPENAI_HOST or host.endswith(f".{OPENAI_HOST}")


def _http_client() -> Any:
    """The SDK's own HTTP client, with its defaults but for KEEPALIVE_EXPIRY, that tells which
    requests went out whole."""
    limits = openai.DEFAULT_CONNECTION_LIMITS
    return openai.DefaultAsyncHttpxClient(
        event_hooks={"request": [_watch_sending]},
        limits=type(limits)(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        ),
    )


def read_system_prompt(settings: Settings) -> str:
    path = settings.system_prompt_path
    try:
        # A byte-order mark (Notepad's UTF-8) is no part of the prompt.
        return path.read_bytes().decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        # Notepad's "ANSI" or PowerShell 5's UTF-16: a traceback naming no file, otherwise.
        raise ConfigError(
            f"agent.system_prompt_file = {path} is not UTF-8 text: save it as UTF-8"
            + settings.where_set("agent.system_prompt_file")
        ) from None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        # Said as "<path>: no such file" alone, the operator was left to find which setting, in
        # which file or variable, named it.
        if not settings.agent.system_prompt_file:
            raise
        what = "is a folder" if isinstance(exc, IsADirectoryError) else "does not exist"
        raise ConfigError(
            f"agent.system_prompt_file = {path} {what}: name the prompt's file, or leave it empty"
            f" for the prompt voxdesk ships{settings.where_set('agent.system_prompt_file')}"
        ) from None


async def create_openai_engine(
    settings: Settings,
    verify: bool = True,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    keyed: bool = True,
) -> OpenAIEngine:
    """`keyed=False`: an engine that names no player, for `check`, which sends no chat request and
    writes nothing, so makes no key (nor a storage.dir set wrong to keep it in)."""
    o = settings.openai
    system_prompt = await asyncio.to_thread(read_system_prompt, settings)
    client = build_client(settings)
    named = keyed and names_players(o.provider, o.safety_identifier, str(client.base_url))
    engine = OpenAIEngine(
        client=client,
        model=o.azure_deployment if o.provider == "azure" else o.model,
        voice=o.voice,
        reply_format=o.reply_format,
        transcribe_model=o.transcribe_model,
        system_prompt=system_prompt,
        # Azure's api-versions document no `audio` in an assistant message, where OpenAI takes an
        # earlier reply's audio id: named so, that reply would have each later note refused.
        audio_history_turns=0 if o.provider == "azure" else o.audio_history_turns,
        max_reply_tokens=o.max_reply_tokens,
        voices=reply_audio_choices(o, "voice"),
        max_retries=o.max_retries,
        turn_deadline=o.turn_deadline_seconds,
        breaker_seconds=o.breaker_seconds,
        connect_timeout=o.connect_timeout_seconds,
        sleep=sleep,
        safety_key=await asyncio.to_thread(safety_key, settings.storage_dir) if named else None,
    )
    if verify and o.provider == "openai":
        await engine.verify_model()
    return engine
