"""VoiceAgent: one conversational turn, from the player's audio to a spoken reply.

The agent owns what is the same for every engine: decoding, history, the tool-call loop and
its bound, per-user ordering, fallback when the engine fails. Engines answer single steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from bot import audio, heap, metrics
from bot import sentences as say
from bot.config import AgentSettings, AudioSettings
from bot.conversations import ConversationStore
from bot.engines.base import (
    AudioClip,
    Engine,
    EngineBusy,
    EngineError,
    EnginePaused,
    EngineReply,
    NoAnswer,
    NoteTooLarge,
    NoteUnheard,
    PaidTranscript,
    PastTurn,
    Round,
    Transcript,
    TurnState,
    Usage,
)
from bot.logs import Outage
from bot.speech.speakable import writable
from bot.tools import Toolbox, heard_in_public
from bot.tools.base import ToolContext, ToolResult

log = logging.getLogger(__name__)

# Seconds an answer waits, once ready, for the engine's transcription of the note: the words only
# feed history, and a transcription held up by its own rate limit or retries must not hold the
# answer (the turn is kept without them).
TRANSCRIPT_GRACE = 2.0

# Characters of an answer the bot speaks in its own voice when the engine gave none (or none it
# could read). A model may answer in text alone, at any length its token limit allows: spoken
# whole, tens of thousands of characters hold the synthesiser (eSpeak's one lock for the whole
# process, or every core for Piper) for minutes, only to make audio longer than Discord uploads,
# and past eSpeak's own limit an empty one. About three minutes of speech; a longer answer goes
# as text.
MAX_SPOKEN_CHARS = 3000

# Seconds of a rate limit's named wait that "try again in a minute" still fits; past them the
# apology names no time.
A_MINUTE_OR_SO = 120.0

# Speaks a text in a voice (None: default) → reply audio. The offline synthesizer provides it;
# the agent uses it for apologies when the engine itself cannot speak.
Speaker = Callable[[str, str | None], Awaitable[audio.ReplyAudio]]


class Budget(Protocol):
    """Per-user spending limits (usage accounting lives with the engines that spend)."""

    async def refusal(self, user_id: str) -> str | None:
        """A friendly refusal when the user's budget for today is spent, else None."""

    async def record(
        self, user_id: str, engine: str, usage: Usage | None, audio_seconds: float, turns: int = 1
    ) -> None: ...


@dataclass
class Reply:
    text: str
    audio: audio.ReplyAudio | None
    user_text: str | None
    tool_results: list[ToolResult]
    engine: str
    kind: str = "answer"  # answer | refusal | apology | over_budget
    spoken_in_part: bool = False  # its audio says "There's more in the written reply" (EngineReply)
    timings_ms: dict[str, float] = field(default_factory=dict)
    usage: Usage | None = None

    @property
    def tool_calls(self) -> list[dict[str, object]]:
        return [{"name": r.call.name, "arguments": r.call.arguments} for r in self.tool_results]

    @property
    def told_keys(self) -> list[str]:
        """Keys of the tickets this turn filed (or found filed, a note heard again) that its
        words name: what the player hears of them in this answer."""
        return [k for k in _filed_keys(self.tool_results) if names_key(self.text, k)]


# Ticket numbers as a model may write them out for its voice ("GRV twelve", "S U P one oh one").
_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
        " fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_DIGITS = {w: str(i) for w, i in _UNITS.items() if i < 10} | {"oh": "0"}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
# Between a key's letters and its number: nothing, a dash (or the word), "number", "#".
_KEY_GAP = r"(?:\s*(?:[-\u2010-\u2015]|\bdash\b|\bnumber\b|\bno\.|#)\s*|\s*)"
_NUMBER_RUN = re.compile(r"[0-9A-Za-z]+(?:(?:\s+|-)[0-9A-Za-z]+)*")


def names_key(text: str, key: str) -> bool:
    """Whether `text` names ticket `key` (any project's, "SUP-101"): as written, or spelt out
    as a voice says it ("GRV twelve", "G R V dash one two", "SUP one hundred and one"). The
    whole number said is read, so GRV-1 is not named by "GRV-12" or "GRV twelve", and only
    that: "GRV fourteen two days ago" names GRV-14, not GRV-142."""
    project, _, digits = key.rpartition("-")
    if not project or not digits.isdigit():
        return False
    letters = r"[\s.\-]*".join(re.escape(c) for c in project)
    for found in re.finditer(rf"(?<![\w-]){letters}{_KEY_GAP}", text, re.IGNORECASE):
        run = _NUMBER_RUN.match(text, found.end())
        if run and spoken_number(run.group().lower().replace("-", " ").split()) == digits:
            return True
    return False


def spoken_number(words: list[str]) -> str | None:
    """The figures of the number that `words` begin with, read as far as English combines
    number words and no further, or None. Written figures stand alone ("12 three" is 12). Words
    are read both as a count ("one hundred and four", "twelve hundred") and as figures said one
    or two at a time ("one oh one", "twelve thirty four"); whichever takes in more words is what
    was said, so "one two" is 12 and "one hundred" 100. Number words that English never puts
    together end the number: "fourteen two days ago" is 14."""
    if words and words[0].isdigit():
        return words[0]
    count, counted = _count(words)
    figures, said = _figures(words)
    if not counted and not said:
        return None
    return str(count) if counted >= said else figures


def _below_hundred(words: list[str], i: int) -> tuple[int, int]:
    """1 to 99 said at words[i:] as a count ("seven", "twelve", "forty", "forty two"), and the
    index after it; (0, i) if none."""
    w = words[i] if i < len(words) else ""
    if w in _UNITS and w != "zero":
        return _UNITS[w], i + 1
    if w in _TENS:
        unit = words[i + 1] if i + 1 < len(words) else ""
        if unit in _UNITS and 0 < _UNITS[unit] < 10:
            return _TENS[w] + _UNITS[unit], i + 2
        return _TENS[w], i + 1
    return 0, i


def _below_thousand(words: list[str], i: int, most_hundreds: int) -> tuple[int, int]:
    """A count of at most most_hundreds hundreds and 99 at words[i:] ("seven", "two hundred and
    four", "twelve hundred"), and the index after it. "hundred" alone ("hundred and one") may
    only begin the number: "one thousand hundred" is not English."""
    value, j = _below_hundred(words, i)
    if words[j : j + 1] == ["hundred"] and (0 < value <= most_hundreds or i == 0):
        value, j = max(value, 1) * 100, j + 1
        start = j + 1 if words[j : j + 1] == ["and"] else j
        rest, k = _below_hundred(words, start)
        if k > start:
            value, j = value + rest, k
    return value, j


def _count(words: list[str]) -> tuple[int, int]:
    """The count at the start of `words` and how many words it takes (0 if none)."""
    if words and words[0] == "zero":
        return 0, 1
    value, j = _below_thousand(words, 0, 99)
    if j < len(words) and words[j] == "thousand" and value < 1000:
        value, j = max(value, 1) * 1000, j + 1
        start = j + 1 if words[j : j + 1] == ["and"] else j
        rest, k = _below_thousand(words, start, 9)
        if k > start:
            value, j = value + rest, k
    return value, j


def _figures(words: list[str]) -> tuple[str, int]:
    """Figures said one or two at a time at the start of `words` ("one two", "one oh one", "one
    forty two", "nineteen eighty four", "twelve oh five") and how many words they take. After
    a pair ("twelve", "forty two") comes only another pair or "oh" and a digit, as a time or a
    year is said: a lone digit after a pair is another number ("fourteen two days")."""
    figures, i, after_pair = "", 0, False
    while i < len(words):
        w = words[i]
        pair, j = _below_hundred(words, i)
        if j > i and pair >= 10:
            figures, i, after_pair = figures + str(pair), j, True
        elif w in _DIGITS and not after_pair:
            figures, i = figures + _DIGITS[w], i + 1
        elif w in ("oh", "zero") and i + 1 < len(words) and words[i + 1] in _DIGITS:
            figures, i = figures + "0" + _DIGITS[words[i + 1]], i + 2
        else:
            break
    return figures, i


def _filed_keys(results: Iterable[ToolResult]) -> list[str]:
    """Keys of the tickets these tool results filed (or found filed, a turn run again), each once:
    a complaint filed again in the same words is told its first ticket."""
    keys = [
        r.result["ticket_key"]
        for r in results
        if r.call.name == "register_grievance" and r.ok and isinstance(r.result.get("ticket_key"), str)
    ]
    return list(dict.fromkeys(keys))


class HandedNote:
    """An audio file's bytes handed to `VoiceAgent.respond`, which lets go of them once they are
    decoded: a caller that keeps no other reference does not hold the note (up to
    audio.max_bytes) through the model's call, only the decoded clip the turn needs. One turn's."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def take(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("this note was handed to a turn already")
        return data


def _clip(data: bytes, limits: AudioSettings) -> AudioClip:
    decoded = audio.decode(data, limits)
    return AudioClip(wav=decoded.wav(), seconds=decoded.seconds)


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            self.timings[name] = round(self.timings.get(name, 0.0) + elapsed, 1)


@dataclass(frozen=True)
class TurnLoad:
    """What the turn slots hold now, for /healthz and /metrics."""

    slots: int  # agent.max_concurrent_turns
    turning: int  # turns holding a slot
    newest_turn_seconds: float  # how long the latest of those has held its slot (0: none)

    def stuck(self, after_seconds: float) -> bool:
        """Every slot held, and even the latest turn to take one has held it this long: no note
        is answered until one ends, whatever the engine's own state says."""
        return self.turning >= self.slots and self.newest_turn_seconds >= after_seconds


class VoiceAgent:
    def __init__(
        self,
        engine: Engine,
        toolbox: Toolbox,
        conversations: ConversationStore,
        audio_settings: AudioSettings,
        agent_settings: AgentSettings,
        fallback: Engine | None = None,
        speaker: Speaker | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.engine = engine
        self.toolbox = toolbox
        self.conversations = conversations
        self.audio_settings = audio_settings
        self.settings = agent_settings
        self.fallback = fallback
        self.speaker = speaker
        self.budget = budget
        self._slots = asyncio.Semaphore(agent_settings.max_concurrent_turns)
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._user_waiting: dict[str, int] = {}
        self._turning = metrics.Waiting()  # the turns holding a slot, by when each took it
        self.idle_trim = heap.IdleTrim()
        # usage.db failing fails every note's read and record alike: said once, not once a note.
        # Apart, each beside the other: a busy or full usage.db still reads, and a read's success
        # would end the outage each record then starts again. The playground's reads say theirs
        # in `usage_unread` too.
        self.usage_unread = Outage(log, "usage.db is read again", level=logging.ERROR)
        self._usage_unwritten = Outage(
            log, "usage.db is written again", level=logging.ERROR, beside=self.usage_unread
        )
        self.usage_unread.beside = self._usage_unwritten
        # A full or read-only disk refuses every turn's save, and every /forget, alike: said once,
        # not once a note.
        self._history_unwritten = Outage(log, "conversations.db is written again", level=logging.ERROR)

    # ---- public API ---------------------------------------------------------------------

    async def respond(
        self, context: ToolContext, data: bytes | HandedNote, voice: str | None = None
    ) -> Reply:
        """One turn from the bytes of an audio file (a HandedNote's are let go once decoded).
        Raises audio.AudioError for bad input."""
        async with self._user_turn(context.speaker):
            watch = _Stopwatch()
            with watch.stage("decode"):
                # Passed straight on: a name here would hold a HandedNote's bytes through the turn.
                clip = await audio.off_loop(
                    _clip, data.take() if isinstance(data, HandedNote) else data, self.audio_settings
                )
            return _measured(await self._turn(context, clip, None, voice, watch))

    async def respond_text(self, context: ToolContext, text: str, voice: str | None = None) -> Reply:
        """One turn from typed words (slash commands, the CLI's text mode)."""
        async with self._user_turn(context.speaker):
            return _measured(await self._turn(context, None, text, voice, _Stopwatch()))

    async def forget(self, user_id: str, sent_at: float = 0.0) -> int:
        """Reset the player's conversations. `sent_at`, when the /forget was sent (as
        ToolContext.sent_at): the turns of requests sent before it (or in its millisecond, which
        Discord's ids cannot order) are forgotten too, however long they still wait (a note
        queued for a turn slot, or for its download, or answered by the next process)."""
        # In the player's turn order: a turn already running read the history before the reset
        # and would save itself after it, and the next note would not start afresh. No turn
        # slot: a reset is quick, and other players' turns have nothing to do with it.
        async with self._user_turn(user_id, slot=False):
            try:
                removed = await self.conversations.reset(user_id, sent_at)
            except sqlite3.Error as exc:
                # The outage the turns' saves say: one file refusing both is said once, and ends
                # once, by whichever write goes through first. Raised for the caller to say so.
                self._history_unwritten.failed(
                    _reason(exc), "could not forget the turns of user %s: %s", user_id, _reason(exc)
                )
                raise
            self._history_unwritten.answered()
            # Whatever the store held, an engine may still hold the player's words in memory
            # (the offline engine's sentence cache); only engines that keep any have `forget`.
            for engine in (self.engine, self.fallback):
                forget = getattr(engine, "forget", None)
                if forget is not None:
                    forget(user_id)
            return removed

    def voices(self) -> list[str]:
        return self.engine.voices()

    def load(self) -> TurnLoad:
        return TurnLoad(
            slots=self.settings.max_concurrent_turns,
            turning=len(self._turning),
            newest_turn_seconds=self._turning.newest_seconds(),
        )

    # ---- ordering -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _user_turn(self, user_id: str, slot: bool = True) -> AsyncIterator[None]:
        """One user's turns (a ToolContext's speaker) run one at a time in arrival order
        (asyncio.Lock is FIFO); different users run concurrently, at most `max_concurrent_turns`
        at once (what takes no `slot` waits only for the user's own turns)."""
        lock = self._user_locks.setdefault(user_id, asyncio.Lock())
        self._user_waiting[user_id] = self._user_waiting.get(user_id, 0) + 1
        self.idle_trim.busy()
        turn = object()
        if slot:
            metrics.NOTES_WAITING.enter(turn)
        try:
            async with lock, self._slots if slot else contextlib.nullcontext():
                metrics.NOTES_WAITING.leave(turn)
                if slot:
                    self._turning.enter(turn)
                yield
        finally:
            metrics.NOTES_WAITING.leave(turn)
            self._turning.leave(turn)
            self._user_waiting[user_id] -= 1
            if self._user_waiting[user_id] == 0:
                del self._user_waiting[user_id]
                del self._user_locks[user_id]
            if not self._user_waiting:
                self.idle_trim.idle()

    # ---- the turn -----------------------------------------------------------------------

    async def _turn(
        self,
        context: ToolContext,
        clip: AudioClip | None,
        text: str | None,
        voice: str | None,
        watch: _Stopwatch,
    ) -> Reply:
        if self.budget is not None:
            try:
                refusal = await self.budget.refusal(context.spender)
            except Exception as exc:
                # As a spend it cannot record: the note is answered, and the line says the budget
                # went unchecked, rather than every player hearing "something went wrong".
                self.usage_unread.failed(
                    _reason(exc),
                    "could not read the budget of user %s, answering anyway: %s",
                    context.spender,
                    _reason(exc),
                )
                refusal = None
            else:
                self.usage_unread.answered()
            if refusal:
                return await self._canned(refusal, "over_budget", text, voice, watch)

        try:
            with watch.stage("history"):
                # The speaker's: what a visitor says as a shared player is the visitor's, not the
                # player's to export or /forget.
                history = await self.conversations.history(context.speaker, context.conversation)
        except Exception as exc:  # the player is still answered, only without the context
            log.error("could not read the history of user %s: %s", context.speaker, _reason(exc))
            history = []
        if not context.private:
            history = [replace(t, tool_results=heard_in_public(t.tool_results)) for t in history]
        engine = self.engine
        turn = TurnState(
            context=context,
            audio=clip,
            text=text,
            history=history,
            tools=self.toolbox.tools,
            voice=voice,
        )
        try:
            return await self._answer(engine, turn, watch)
        finally:
            # A turn cancelled mid-step (a shutdown out of grace, a deadline) would otherwise leave
            # its transcription running, and billed, for nobody.
            _let_go(turn.heard)

    async def _answer(self, engine: Engine, turn: TurnState, watch: _Stopwatch) -> Reply:
        context, clip, text, voice = turn.context, turn.audio, turn.text, turn.voice
        try:
            final = await self._loop(engine, turn, watch)
        except Exception as exc:
            log.log(
                # A paused engine logged the pause once; every note answered meanwhile is no news.
                logging.INFO if isinstance(exc, EnginePaused) else logging.WARNING,
                "engine %s failed on %s: %s",
                engine.name,
                context.who,
                _reason(exc),
                exc_info=not _expected(exc),
            )
            spent = [*turn.scratch.get("usage", []), _hearing_cost(turn.heard)]
            await self._charge_failed(context, engine.name, spent)
            if self.fallback is None:
                _let_go(turn.heard)
                return await self._apology(turn, watch, exc)
            engine = self.fallback
            # The fallback starts the step loop afresh but keeps tool results already fetched.
            _let_go(turn.heard)
            turn.heard, turn.scratch, turn.allow_tools = None, {}, True
            # Counted afresh: a complaint the failed engine filed is found again by its words (or
            # its place), so the fallback finds that ticket rather than filing it again.
            context.refile()
            failed = self.engine.name
            try:
                final = await self._loop(engine, turn, watch)
            except Exception as exc2:
                log.error(
                    "fallback engine %s failed too: %s",
                    engine.name,
                    _reason(exc2),
                    exc_info=not _expected(exc2),
                )
                metrics.FALLBACKS.labels(failed, "failed").inc()
                await self._charge_failed(context, engine.name, turn.scratch.get("usage", []))
                return await self._apology(turn, watch, exc2, exc)
            metrics.FALLBACKS.labels(failed, "answered").inc()

        # A display name or a tool's result can carry a lone surrogate or a NUL into the answer.
        final.text = writable(final.text)
        user_text = text
        if turn.heard is not None:
            with watch.stage("transcribe_wait"):
                user_text = await _result_or_none(turn.heard, TRANSCRIPT_GRACE)
        user_text = user_text or final.user_text
        hearing = _hearing_cost(turn.heard)
        results = [r for rnd in turn.rounds for r in rnd.results]
        if final.refusal and (keys := _filed_keys(results)):
            # A filter that blocks the step reading a complaint's words (a threat the player
            # reports) refuses after the ticket is filed: "I can't help" alone would have the
            # player file it again. Spoken afresh: any audio of the refusal does not say it.
            filed = say.FILED_BEFORE_REFUSING.format(ticket_keys=", ".join(keys))
            final.text, final.audio, final.reply_audio = f"{filed} {final.text}", None, None

        with watch.stage("encode"):
            reply_audio = await self._reply_audio(final, voice)
        usage = _summed([*turn.scratch.get("usage", []), final.usage, hearing])
        past = PastTurn(
            # The words a filter refused are not kept: the answer, which names any ticket filed, is.
            user_text=None if final.blocked else user_text,
            # A cut-off answer is kept as text saying so: its audio would pass it off as complete.
            reply_text=f"{final.text} {say.CUT_OFF}" if final.cut_off else final.text,
            tool_results=[] if final.blocked else [r.as_dict() for r in results],
            audio_id=None if final.cut_off else final.audio_id,
            audio_expires_at=None if final.cut_off else final.audio_expires_at,
            at=time.time(),
            engine=engine.name,
        )
        # The answer is given whatever happens to the bookkeeping: its tools have run (a ticket
        # may be filed), and "something went wrong" now would send the player to file it twice.
        with watch.stage("save"):
            await self._save(context, past, turn)
        await self._record_usage(context, engine.name, usage, clip.seconds if clip else 0.0)
        return Reply(
            text=final.text,
            audio=reply_audio,
            user_text=user_text,
            tool_results=results,
            engine=engine.name,
            kind="refusal" if final.refusal else "answer",
            spoken_in_part=final.spoken_in_part and reply_audio is not None,
            timings_ms=watch.timings,
            usage=usage,
        )

    async def _loop(self, engine: Engine, turn: TurnState, watch: _Stopwatch) -> EngineReply:
        if turn.audio is not None and turn.heard is None:
            turn.heard = asyncio.create_task(engine.transcribe(turn.audio))
        usage_log: list[Usage] = turn.scratch.setdefault("usage", [])
        while True:
            turn.allow_tools = len(turn.rounds) < self.settings.max_tool_rounds
            with watch.stage("engine"):
                step = await engine.complete(turn)
            if step.tool_calls and not turn.allow_tools:
                # An engine that ignores the bound still gets no more tool calls run.
                log.warning("engine %s asked for tools after the rounds bound", engine.name)
                step.tool_calls = []
            if not step.tool_calls:
                if not step.text.strip() and not step.audio and step.reply_audio is None:
                    if step.usage:
                        usage_log.append(step.usage)
                    # Nothing to send, and a note marked answered with nothing sent is a note lost.
                    raise NoAnswer(_why_nothing(engine.name, step, turn, self.settings.max_tool_rounds))
                return step
            if step.usage:
                usage_log.append(step.usage)
            with watch.stage("tools"):
                results = await self.toolbox.run_all(turn.context, step.tool_calls)
            turn.rounds.append(Round(calls=step.tool_calls, results=results, assistant_text=step.text))

    async def _charge_failed(self, context: ToolContext, engine: str, spent: list[Usage | None]) -> None:
        """Tokens a failed engine spent (steps billed before it failed) count against the player's
        budget and the cost estimate, though another engine or an apology answers the turn."""
        if any(spent):
            await self._record_usage(context, engine, _summed(spent), 0.0, turns=0)

    async def _record_usage(
        self, context: ToolContext, engine: str, usage: Usage, audio_seconds: float, turns: int = 1
    ) -> None:
        if self.budget is None:
            return
        try:
            await self.budget.record(
                context.spender, engine, usage, audio_seconds, turns, request_id=context.request_id
            )
        except Exception as exc:
            self._usage_unwritten.failed(
                _reason(exc), "could not record the usage of user %s: %s", context.spender, _reason(exc)
            )
        else:
            self._usage_unwritten.answered()

    async def _reply_audio(self, final: EngineReply, voice: str | None) -> audio.ReplyAudio | None:
        if final.reply_audio is not None:
            return final.reply_audio
        if final.audio:
            try:
                return await audio.off_loop(audio.reply_from_encoded, final.audio, final.audio_format)
            except Exception as exc:
                # The engine's audio, not the player's note: its answer still goes out, in the
                # bot's own voice or as text, and the turn (tickets it filed) is still saved.
                log.error(
                    "engine reply audio (%s, %d bytes) unreadable, speaking its text instead: %s",
                    final.audio_format,
                    len(final.audio),
                    _reason(exc),
                )
        if self.speaker is not None and final.text:
            if len(final.text) > MAX_SPOKEN_CHARS:
                log.warning(
                    "an answer of %d characters came without audio to send, over the %d the bot speaks"
                    " itself: it goes as text",
                    len(final.text),
                    MAX_SPOKEN_CHARS,
                )
                return None
            return await self.speaker(final.text, voice)
        return None

    async def _apology(
        self, turn: TurnState, watch: _Stopwatch, why: Exception, first: Exception | None = None
    ) -> Reply:
        """No engine could answer: `why` is the last one's failure, `first` the engine's when its
        fallback failed too. A complaint a tool filed before that is told by its key and kept in
        the conversation: a player who heard only "sorry" would file it again."""
        # A note that crashed the recogniser is that note's trouble: other notes are answered,
        # so "my voice service is down, try in a few minutes" would mislead.
        # Nor does a model that answered with nothing: its service is up, that answer failed;
        # nor a note its service takes no request that large of.
        if isinstance(why, NoteUnheard):
            sorry = say.NOTE_UNHEARD
        elif isinstance(why, NoteTooLarge):
            sorry = say.NOTE_TOO_LARGE
        elif isinstance(why, NoAnswer):
            sorry = say.NO_ANSWER_MADE
        elif isinstance(busy := why if isinstance(why, EngineBusy) else first, EngineBusy):
            # A rate limit's reset, not an outage's end, is what the player waits for: the engine's
            # answers then, whatever became of its fallback.
            long_wait = busy.wait is not None and busy.wait > A_MINUTE_OR_SO
            sorry = say.VOICE_SERVICE_LIMITED if long_wait else say.VOICE_SERVICE_BUSY
        else:
            sorry = say.VOICE_SERVICE_DOWN
        keys = _filed_keys(r for rnd in turn.rounds for r in rnd.results)
        if not keys:
            return await self._canned(sorry, "apology", turn.text, turn.voice, watch)
        told = f"{sorry} {say.FILED_BEFORE_FAILING.format(ticket_keys=', '.join(keys))}"
        reply = await self._canned(told, "apology", turn.text, turn.voice, watch)
        reply.tool_results = [r for rnd in turn.rounds for r in rnd.results]
        past = PastTurn(
            user_text=turn.text,
            reply_text=told,
            tool_results=[r.as_dict() for r in reply.tool_results],
            at=time.time(),
            engine="none",
        )
        await self._save(turn.context, past, turn)
        return reply

    async def _save(self, context: ToolContext, past: PastTurn, turn: TurnState) -> None:
        # The turns the engine let go to come within its token limit go from the conversation.
        since = turn.history[turn.let_go].at if 0 < turn.let_go < len(turn.history) else 0.0
        try:
            kept = await self.conversations.append(
                context.speaker,
                past,
                context.conversation,
                context.request_id,
                afresh=turn.afresh,
                sent_at=context.sent_at,
                since=since,
            )
            if not kept:
                log.info("%s was sent before its player's /forget: its turn is not kept", context.who)
        except Exception as exc:
            self._history_unwritten.failed(
                _reason(exc), "could not save the turn of user %s: %s", context.speaker, _reason(exc)
            )
        else:
            if kept:  # a turn a /forget drops writes nothing: no sign the disk takes writes
                self._history_unwritten.answered()

    async def _canned(
        self, text: str, kind: str, user_text: str | None, voice: str | None, watch: _Stopwatch
    ) -> Reply:
        reply_audio = None
        if self.speaker is not None:
            with watch.stage("encode"):
                try:
                    reply_audio = await self.speaker(text, voice)
                except Exception:
                    log.exception("could not speak the %s message", kind)
        return Reply(
            text=text,
            audio=reply_audio,
            user_text=user_text,
            tool_results=[],
            engine="none",
            kind=kind,
            timings_ms=watch.timings,
        )


def _measured(reply: Reply) -> Reply:
    # Stage timings and tool calls are only seen in here; front ends count outcomes themselves.
    metrics.agent_turn(reply.timings_ms, [(r.call.name, r.ok) for r in reply.tool_results])
    return reply


async def _result_or_none(task: asyncio.Task[Transcript | None], within: float) -> str | None:
    """The transcript's words, waited for at most `within` seconds; None if it failed, was
    cancelled or is not back by then. A cancel of the turn itself (a shutdown out of grace) is
    raised: asyncio.wait keeps it apart from the transcript's own."""
    try:
        await asyncio.wait({task}, timeout=within)
    except asyncio.CancelledError:
        task.cancel()  # nobody will read it
        raise
    if not task.done():
        task.cancel()
        log.info("transcription not back %.0f s after the answer: the turn is kept without the words", within)
        return None
    if task.cancelled():
        return None
    if (exc := task.exception()) is not None:
        log.warning("transcription failed: %s", _reason(exc))
        return None
    heard = task.result()
    return heard.text if heard is not None else None


def _let_go(task: asyncio.Task[Transcript | None] | None) -> None:
    """Stop a transcription nobody will read, and keep its error, if it has one, out of asyncio's
    "exception was never retrieved" ERROR when the task is collected. cancel() does that for one
    that failed before (on an ended task it marks the error retrieved, and stops nothing); the
    callback, for one still running whose cancellation ends in an error rather than cancelled (a
    client's teardown failing as it is interrupted)."""
    if task is None:
        return
    task.cancel()
    task.add_done_callback(_read_out)


def _read_out(task: asyncio.Task[Transcript | None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.debug("transcription of a turn that went on without it failed: %s", _reason(exc))


def _hearing_cost(task: asyncio.Task[Transcript | None] | None) -> Usage | None:
    """What a finished transcription was billed, when its engine pays for hearing."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    heard = task.result()
    return heard.usage if isinstance(heard, PaidTranscript) else None


def _summed(steps: list[Usage | None]) -> Usage:
    usage = Usage()
    for step in steps:
        usage.add(step)
    return usage


def _why_nothing(engine: str, step: EngineReply, turn: TurnState, max_rounds: int) -> str:
    """The log's reason for an answer with neither words nor audio."""
    if step.cut_off:
        why = "cut off at its length limit before a word"
    elif not turn.allow_tools:
        why = f"said nothing after {len(turn.rounds)} tool rounds (agent.max_tool_rounds = {max_rounds})"
    else:
        why = "said nothing"
    return f"engine {engine} answered with neither words nor audio: {why}"


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, EngineError | TimeoutError)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
