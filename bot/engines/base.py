"""The engine protocol: what the agent asks of a model, independent of any vendor.

The agent owns the turn (history, tool loop, rounds bound); an engine only answers one step:
given the turn so far, either call tools or give the final answer with its audio.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.tools.base import Tool, ToolCall, ToolContext, ToolResult

# Defined below the engines so the intent router can use them too; the protocol speaks in them.
from bot.turns import PastTurn, Transcript

if TYPE_CHECKING:  # the speech workers import this module and have no use for audio encoding
    from bot.audio import ReplyAudio

__all__ = [
    "AudioClip",
    "BusyPause",
    "Engine",
    "EngineBusy",
    "EngineError",
    "EnginePaused",
    "EngineReply",
    "NoteTooLarge",
    "NoteUnheard",
    "PaidTranscript",
    "PastTurn",
    "Round",
    "Transcript",
    "TurnState",
    "Usage",
]


class EngineError(Exception):
    """The engine could not answer (down, timed out, malformed reply) after its own retries."""


class EnginePaused(EngineError):
    """The engine sends no requests for now (rate limited, or its service failing), and said so in
    the log when it paused: each note the fallback answers meanwhile needs no warning of its own."""


class EngineBusy(EngineError):
    """The engine's service is up but turned the request away for its rate limit (a 429) past the
    engine's own retries: the limit's reset cures it, not an outage's end. `wait`: the seconds the
    service named until then, however long (a day's limit names hours), None when it named none."""

    def __init__(self, *args: object, wait: float | None = None) -> None:
        super().__init__(*args)
        self.wait = wait


class BusyPause(EnginePaused, EngineBusy):
    """The engine sends no requests until its service's rate limit resets."""


class NoAnswer(EngineError):
    """The engine's service answered, but with nothing to say: a model cut off at its length limit
    before a word, or one that kept calling tools past the rounds bound and then said nothing. The
    service is up; this answer did not come together."""


class NoteTooLarge(EngineError):
    """This note's request (the note and what the turn sends with it) is over the provider's token
    limit on its own, which no wait cures; the engine answers other notes meanwhile."""


class NoteUnheard(EngineError):
    """This note, not the engine, could not be heard (it crashed the recogniser each time it was
    tried); the engine answers other notes meanwhile."""


class SpeechModelsUnavailable(RuntimeError):
    """The offline engine's speech workers cannot start: what to do about it, in one line."""


@dataclass(frozen=True)
class AudioClip:
    """The player's note, decoded and trimmed: 24 kHz mono 16-bit WAV for a model."""

    wav: bytes
    seconds: float
    sample_rate: int = 24_000

    @property
    def pcm(self) -> bytes:
        """The raw 16-bit samples (the WAV minus its 44-byte header)."""
        return self.wav[44:]


TOKEN_KINDS = ("text_in", "text_out", "audio_in", "audio_out", "cached_in")


@dataclass
class Usage:
    text_in: int = 0
    text_out: int = 0
    audio_in: int = 0
    audio_out: int = 0
    cached_in: int = 0
    # The model that billed these tokens, as the provider named it ("" unknown): each model has
    # its own prices, so a turn's chat steps and its transcription are priced apart.
    model: str = ""
    # A sum's tokens by the model that billed them (empty: all of them are `model`'s).
    shares: dict[str, Usage] = field(default_factory=dict, repr=False)

    def add(self, other: Usage | None) -> None:
        if other is None:
            return
        if not self.shares and (self.total or self.cached_in):
            self.shares[self.model] = Usage(**{k: getattr(self, k) for k in TOKEN_KINDS}, model=self.model)
        self._count(other)
        for model, share in other.by_model().items():
            self.shares.setdefault(model, Usage(model=model))._count(share)

    def _count(self, other: Usage) -> None:
        for kind in TOKEN_KINDS:
            setattr(self, kind, getattr(self, kind) + getattr(other, kind))

    def by_model(self) -> dict[str, Usage]:
        """These tokens split by the model that billed them."""
        if self.shares:
            return dict(self.shares)
        return {self.model: self} if self.total or self.cached_in else {}

    @property
    def total(self) -> int:
        return self.text_in + self.text_out + self.audio_in + self.audio_out


@dataclass(frozen=True)
class PaidTranscript(Transcript):
    """Words heard by a service that bills the hearing: what it cost goes with the turn's usage."""

    usage: Usage | None = None


@dataclass
class Round:
    calls: list[ToolCall]
    results: list[ToolResult]
    assistant_text: str = ""  # any words the model said alongside its tool calls


@dataclass
class TurnState:
    """Everything an engine may look at for one step of a turn."""

    context: ToolContext
    audio: AudioClip | None  # None for a typed request (e.g. a slash command)
    text: str | None  # the typed request, when there is no audio
    history: list[PastTurn]
    tools: list[Tool]
    voice: str | None = None  # the player's chosen reply voice, if any
    rounds: list[Round] = field(default_factory=list)  # tool rounds so far in this turn
    allow_tools: bool = True  # False on the last step: the engine must answer now
    heard: asyncio.Task[Transcript | None] | None = None  # the engine's transcribe() of `audio`
    scratch: dict[str, Any] = field(default_factory=dict)  # engine-private state for this turn
    # A content filter refused to read the conversation's earlier turns: the turn begins the
    # conversation afresh whichever engine answers it (a fallback too), or the next note would
    # carry them and be refused first.
    afresh: bool = False
    # The conversation's oldest turns (of `history`) this turn left out of its requests to come
    # within the provider's token limit, once a request without them was answered: they go from
    # the conversation as the turn is kept, or each later note would carry them and be refused first.
    let_go: int = 0


@dataclass
class EngineReply:
    tool_calls: list[ToolCall] = field(default_factory=list)
    text: str = ""
    audio: bytes | None = None
    audio_format: str = ""  # "ogg_opus", "wav", "mp3", "pcm16" (24 kHz mono), ...
    # The reply already encoded as Discord wants it (the offline engine encodes as it speaks);
    # the agent then sends it as it is, rather than decoding `audio` and encoding it again.
    reply_audio: ReplyAudio | None = None
    audio_id: str | None = None
    audio_expires_at: int | None = None
    usage: Usage | None = None
    refusal: bool = False  # the model declined to answer; `text` says so politely
    cut_off: bool = False  # the answer stopped at its length limit; `text` is what was said
    # Its audio says only the start of `text` and then that the rest is written: a player who
    # asked for voice alone is sent the text too, or the rest would be nowhere.
    spoken_in_part: bool = False
    user_text: str | None = None  # what the engine heard, when it knows it from this step
    # A content filter refused this turn's own words (its request carried no earlier turns): the
    # turn is kept without them, or the next note's request would carry them and be refused too.
    blocked: bool = False


class Engine(Protocol):
    name: str

    async def transcribe(self, audio: AudioClip) -> Transcript | None:
        """The player's words, or None when this engine cannot or is told not to. An engine that
        marks a transcript not to act on (`act_on=False`) asks the player again in `complete`."""

    async def complete(self, turn: TurnState) -> EngineReply:
        """One step: tool calls (if allowed) or the final answer with audio. Raises EngineError."""

    def voices(self) -> list[str]:
        """Reply voices a player may choose from."""

    async def check(self) -> str:
        """One line for `check` and the desk: what serves players and that it answers; raises,
        with why, when it does not."""

    async def aclose(self) -> None: ...
