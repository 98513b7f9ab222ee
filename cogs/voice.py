"""Voice notes in, voice messages out: which messages to answer, and the turn around each one."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import enum
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import aiohttp
import discord
from discord.ext import commands

from bot import metrics
from bot import sentences as say
from bot.agent import HandedNote, Reply
from bot.audio import AudioError, too_big_message, too_long_message
from bot.bounded import remember
from bot.logs import Outage
from bot.note_ledger import KeptAnswer
from bot.preferences import Preferences
from bot.tools.base import ToolContext, ToolResult
from cogs.bot import SENDING, SendClock, VoxdeskBot
from cogs.limits import InAnyWindow, Lateness, Limits
from cogs.replies import (
    NoteGone,
    Withdrawn,
    discords_trouble,
    limited_for,
    may_react,
    may_read_history,
    may_send,
    send_answer,
    send_text,
    timed_out_until,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

WORKING = "\N{HEADPHONE}"  # shown on the player's note while it is queued or being answered
FAILED = "\N{WARNING SIGN}"
# On a note that arrives while the bot shuts down: kept, and answered after the restart.
LATER = "\N{HOURGLASS WITH FLOWING SAND}"
TYPING_EVERY = 5.0  # seconds; Discord shows "typing…" for 10 s after each request
# A player is told "slow down" or "send a voice note" at most once in this many seconds: replying
# to every message of a flood would itself flood the channel and run into Discord's rate limits.
HINT_SECONDS = 60.0
MAX_UNRECORDED = 1000  # notes remembered in memory while the ledger refuses writes
MAX_THREADS = 1000  # threads remembered as deleted or left, for the notes still queued from them
# Notes remembered as weighed against a flood limit: more than one catch-up finds.
MAX_COUNTED = 10000
# Places remembered as warned of: channels denying the bot Send Messages, guilds timing it out.
MAX_WARNED = 1000
MAX_LATER = 10000  # notes remembered as given a ⏳ that may not have reached Discord yet
# Messages remembered as deleted by Discord's word (MESSAGE_DELETE, MESSAGE_DELETE_BULK) out of a
# turn: notes whose turn is over (for the reactions still to go), and whatever is deleted while a
# catch-up or the recheck reads notes back to schedule. A note scheduled and deleted is held
# apart, for as long as it is scheduled, however many other messages go meanwhile.
MAX_DELETED = 10000
# Deletions heard within this many seconds of the first are settled in the ledger in one write:
# MESSAGE_DELETE comes for every message deleted where the bot reads, mostly no note, and a
# guild's moderation deletes in bursts. A turn learns of a deletion at once (in memory) all the same.
WITHDRAWALS_EVERY = 0.2
MAX_TOLD_SEVERAL = 10000  # messages of several notes whose player heard only the first is answered
MAX_ASKED_AGAIN = 10000  # (line, place, player) a stop asked to send their notes again
NAMED_AT_ONCE = 40  # players one such line names: 40 mentions take some 900 of its 2,000 characters
# Answers made and not yet (wholly) out, kept in memory for the recheck to send: each holds its
# audio. One forgotten for newer ones is read back from the note ledger, which keeps each given back.
MAX_UNSENT = 200
# Discord types a .webm as video/webm whatever it holds, and an audio-only Ogg or MP4 may come
# typed as video too. A real video is a note as well: decoding reads its audio and skips the picture.
AUDIO_AS_VIDEO = {"video/webm", "video/ogg", "video/mp4", "video/quicktime"}
# An attachment whose extension Discord does not recognise comes with no content type at all.
AUDIO_EXTENSIONS = set(".ogg .oga .opus .mp3 .m4a .aac .wav .webm .weba .flac .amr .3gp".split())
# Types by which only the extension tells whether a file is audio: Discord keeps the type an
# uploader declares, and a client or bridge uploading "some bytes", or Ogg by its generic type,
# sends these.
UNTYPED = {"application/octet-stream", "binary/octet-stream", "application/ogg"}
# Bytes a download may run past the attachment's stated size before it is given up: Discord
# states the file's exact size, so this is slack, not room for anything the note needs.
DOWNLOAD_SLACK = 64 * 1024


def read_by_speaker_alone(channel: object) -> bool:
    """Whether only the speaker reads what is posted in `channel`: a DM, as discord.py has it or
    as catch-up reads one after a restart (a partial channel of the private type). Not `guild is
    None`: a guild channel discord.py has not cached comes with no guild, and its answer is
    public. A channel it cannot place counts as public."""
    if isinstance(channel, discord.DMChannel):
        return True
    return (
        isinstance(channel, discord.PartialMessageable)
        and channel.type == discord.ChannelType.private
        and channel.guild_id is None
    )


class SendStalled(Exception):
    """Discord did not take a message of a send within `send_seconds`: its request out that long
    unanswered (a stalled upload), or waiting its turn that long with no message of its channel
    answered meanwhile (behind one). It goes on by itself, and what it posts late is posted once,
    its nonce making one message of it and a later answer's."""


class ShortDownload(Exception):
    """A download whose body ended before the attachment's size with no broken connection to say
    so (a body of no stated length, a proxy's cut): decoded, half a question would be answered as
    the whole, or a cut file blamed on the player."""


def _answer_for(message: discord.Message, reply: Reply, mode: str) -> KeptAnswer:
    """The answer made for a note, as `_send` sends it and the ledger keeps it until it is out.
    One whose voice says only its start, and that the rest is in writing, goes with its text to a
    player who asked for voice alone: the rest would be nowhere."""
    if mode == "voice" and reply.spoken_in_part:
        mode = "voice_and_text"
    return KeptAnswer(
        user_id=str(message.author.id),
        mode=mode,
        kind=reply.kind,
        engine=reply.engine,
        text=reply.text,
        names=_player_names(reply.tool_results),
        told=reply.told_keys,
        posted=set(),
        audio=reply.audio,
    )


class LongDownload(Exception):
    """A download whose body ran past the attachment's stated size (and DOWNLOAD_SLACK): the CDN
    or a proxy is broken or hostile, and read to its end it could hold hundreds of MB for as long
    as download_seconds. The note itself, as Discord states it, is within audio.max_bytes: it is
    the download's fault, not the player's file's."""


async def download(http: discord.http.HTTPClient, note: discord.Attachment, cap: int) -> bytes:
    """The attachment's bytes, as `note.read()` fetches them (discord.py's connector, so its
    pooled connections and name lookups, and its proxy), but never more than `cap` of them held:
    discord.py reads a body whole, however long. Raises discord.HTTPException for a status other
    than 200, LongDownload past `cap`."""
    proxy = {"proxy": http.proxy, "proxy_auth": http.proxy_auth}
    # The connector stays discord.py's: this session only borrows it for the one request.
    async with (
        aiohttp.ClientSession(
            connector=http.connector, connector_owner=False, cookie_jar=aiohttp.DummyCookieJar()
        ) as session,
        session.get(note.url, **proxy) as resp,
    ):
        if resp.status != 200:
            raise discord.HTTPException(resp, "failed to get asset")
        if resp.content_length is not None and resp.content_length > cap:
            raise LongDownload(f"{resp.content_length} bytes declared, over {cap}")
        body = bytearray()
        async for chunk in resp.content.iter_any():
            body += chunk
            if len(body) > cap:
                raise LongDownload(f"over {cap} bytes")
        return bytes(body)


class Reached(enum.Enum):
    """What reached the player of a note: the answer or a line telling them why not (YES);
    nothing, where the bot may not post (NO); nothing, because Discord failed (LATER)."""

    YES = "yes"
    NO = "no"
    LATER = "later"


def _discord_failed(exc: BaseException) -> bool:
    """Discord's trouble (see discords_trouble), a connection that broke or never came, or a send
    Discord did not finish."""
    return discords_trouble(exc) or isinstance(exc, aiohttp.ClientError | ConnectionError | SendStalled)


# Discord's answers that there is nowhere left to post: unknown channel, no access, DMs closed,
# a locked thread (archived: 50083; left open: 160005). An apology would be refused the same way.
NOWHERE_TO_POST = frozenset({10003, 50001, 50007, 50083, 160005})


def carried_attachments(message: discord.Message) -> list[discord.Attachment]:
    """A message's attachments. A forward has none of its own: the note it forwards is in its
    snapshot, and the player who forwarded it is the one asking."""
    return message.attachments or [a for snapshot in message.message_snapshots for a in snapshot.attachments]


def voice_flagged(message: discord.Message) -> bool:
    """Whether Discord marks `message`, or the message a forward carries, as a voice message."""
    return message.flags.voice or any(s.flags.voice for s in message.message_snapshots)


def _player_names(results: list[ToolResult]) -> list[str]:
    """The player names a turn's lookups found: the game's, which its players choose."""
    return [
        name
        for r in results
        if isinstance(r.result, dict) and isinstance(name := r.result.get("player_name"), str)
    ]


def too_fast(retry_after: float) -> str:
    """What a player over the flood limit is told: the wait rounded up, so never "0 seconds"."""
    return say.TOO_FAST.format(wait=say.wait_of(retry_after))


def is_audio_attachment(attachment: discord.Attachment) -> bool:
    """An attachment that is not a voice message but may be one spoken and saved as a file."""
    kind = (attachment.content_type or "").split(";")[0].strip().lower()
    if kind and kind not in UNTYPED:
        return kind.startswith("audio/") or kind in AUDIO_AS_VIDEO
    return os.path.splitext(attachment.filename)[1].lower() in AUDIO_EXTENSIONS


class VoiceNotes(commands.Cog):
    def __init__(self, bot: VoxdeskBot) -> None:
        self.bot = bot
        settings = bot.discord_settings
        self.settings = settings
        # A note read back can be catch_up_minutes old, and is weighed in the windows before it.
        keep = settings.catch_up_minutes * 60 + settings.flood_seconds
        self.flood = Limits(
            InAnyWindow(settings.flood_notes, settings.flood_seconds, keep), commands.BucketType.user
        )
        self.lateness = Lateness()  # of every message that comes, for a wait told to run from then
        # Each kind of hint has its own: a player told how to send a note still hears "slow down".
        # Timed by time.monotonic(): a host clock set back would keep a player untold as long.
        self.hints = {
            kind: Limits.from_cooldown(1, HINT_SECONDS, commands.BucketType.user)
            for kind in ("not a note", "flood")
        }
        # One lock per user around the whole note (download, turn, replies): asyncio.Lock wakes
        # waiters first-come first-served, so a player's replies go out in the order they spoke.
        self._user_locks: dict[int, asyncio.Lock] = {}
        self._user_waiting: dict[int, int] = {}
        # Each player's notes scheduled and not yet over, counted as they are scheduled (a note's
        # task starts later): the flood limit counts arrivals, and a raid that slows every turn
        # past flood_seconds / flood_notes would otherwise let a player's queue grow without end.
        self._backlog: dict[int, int] = {}
        # A note's bytes are downloaded only when a turn can take them: a raid of many players
        # holds as many attachments in memory as there are turns, not one per raider.
        turns = bot.app.settings.agent.max_concurrent_turns if bot.app is not None else 1
        self._notes_in_hand = asyncio.Semaphore(turns)
        self._suspects = asyncio.Lock()  # held by the one note a dead process had in hand (`answer`)
        self._unrecorded: dict[int, None] = {}  # notes answered though the ledger refused them
        # Notes whose answer is sent, its transcript maybe not yet: the ticket keys it names.
        self._answer_out: dict[int, list[str]] = {}
        # Notes given back after their answer was made (Discord failed it, or the bot was timed
        # out): the answer, for the recheck to send.
        self._unsent: dict[int, KeptAnswer] = {}
        # Threads Discord said were deleted (THREAD_DELETE): discord.py drops a deleted thread
        # from its cache as it drops an archived one, which still takes a reply.
        self._deleted_threads: dict[int, None] = {}
        # Private threads a player removed the bot from: until one adds it back, Discord refuses
        # it everything there (50001) unless it may manage threads.
        self._left_threads: dict[int, None] = {}
        # Notes a flood limit has weighed already (live, a catch-up, a thread's read-back): the
        # ledger learns of a note only once its claim lands, and a second path weighing it before
        # then would answer it and tell its player "too many" as well.
        self._counted: dict[int, None] = {}
        self._reacting: dict[int, asyncio.Task[None]] = {}  # each note's latest reaction under way
        # Notes their players deleted, as Discord said: the question is withdrawn, and an answer
        # posted after it would stand alone and say in the channel what the player took back.
        # A busy guild's moderators delete far more chat than players delete notes, and a bound
        # shared with their deletions would forget a queued note's: a note scheduled is held
        # whatever their number, and so is one a read under way found (see `hold`); the rest
        # within MAX_DELETED (see `reading`).
        self._scheduled: dict[int, int] = {}  # note → its answers scheduled and not over
        self._deleted_held: set[int] = set()
        self._deleted: dict[int, None] = {}
        # Catch-ups and rechecks reading notes back (see `reading`), each with the notes it found.
        self._reads: list[set[int]] = []
        # Deletions heard and not yet taken by a write to the ledger (see WITHDRAWALS_EVERY).
        self._withdrawals: list[int] = []
        # Notes this process gave a ⏳: the recheck may fetch one before its ⏳ reached Discord
        # (queued behind the channel's reaction limit), and the fetched note would not show it.
        self._later: dict[int, None] = {}
        # Messages of several notes told "one at a time": a note given back (Discord failing, the
        # bot's timeout) is answered again by the recheck, and the player heard it the first time.
        self._told_several: dict[int, None] = {}
        # Notes refused as crashing whose player Discord's trouble kept from being told: given
        # back for the recheck to tell, their refusal logged and counted once.
        self._refusals_untold: dict[int, None] = {}
        # Notes given back where the bot may not read history: Discord refuses their fetch (403),
        # so the recheck answers them from here (see `given_back`); once the process that gave one
        # back is dead, from the ledger (see `copy_from_the_ledger`).
        self._given_back: dict[int, discord.Message] = {}
        # Notes whose kept answer a stop is sending: cut, they are asked for in one line a place.
        self._sending_at_stop: set[int] = set()
        self._asked_again: dict[tuple[str, int, int], None] = {}  # see _ask_again
        # (line, place) → the notes whose players a line on its way there is to name: see _ask_again
        self._asking: dict[tuple[str, int], list[discord.Message]] = {}
        # Channels warned of as denying Send Messages, or, (id, True), Send Messages in Threads.
        self._denying: dict[tuple[int, bool], None] = {}
        self._timeouts_said: dict[tuple[int, float], None] = {}  # (guild, end) of timeouts warned of
        # Work that ends by itself, uncut ("typing…", reaction requests, sends given up on): held
        # here alone because asyncio keeps only a weak reference to a task.
        self._on_their_own: set[asyncio.Task[Any]] = set()
        # Channel → the end of its "typing…" loop and the notes in hand there: Discord shows the
        # bot typing in a channel, not per note, so a raid's notes in hand share one loop.
        self._typing_in: dict[int, SharedTyping] = {}
        # A busy or full disk refuses every note's bookkeeping alike for a while: said once a
        # reason, with its traceback, and its end once.
        self._places_unkept = Outage(log, "where notes came from is remembered again")

    # ---- which messages --------------------------------------------------------------

    def voice_notes(self, message: discord.Message) -> list[discord.Attachment]:
        attachments = carried_attachments(message)
        notes = [a for a in attachments if a.is_voice_message()]
        if not notes and self.settings.any_audio_attachment:
            notes = [a for a in attachments if is_audio_attachment(a)]
        return notes

    def addressed_here(self, message: discord.Message) -> bool:
        if message.guild is None:
            return True  # DMs always
        channel = message.channel
        parent = getattr(channel, "parent_id", None)
        if channel.id in self.settings.channels or (parent is not None and parent in self.settings.channels):
            return True
        return self.addressed_to_me(message)

    def addressed_to_me(self, message: discord.Message) -> bool:
        """A note that @mentions the bot or replies to one of its messages (where
        `answer_mentions` is on): for the bot wherever it is sent."""
        if self._mentioned(message):
            return True
        if not self.settings.answer_mentions or self.bot.user is None:
            return False
        ref = message.reference
        resolved = ref.resolved if ref else None
        return isinstance(resolved, discord.Message) and resolved.author.id == self.bot.user.id

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        # Discord sends a private thread's messages only to who may see it: the bot is back in a
        # thread it was removed from, added while the gateway was away (no thread_join told).
        self._left_threads.pop(message.channel.id, None)
        # The flood limit times a note by when Discord says it was sent, as a catch-up times the
        # notes it reads back: a burst of events replayed by a resumed gateway session is not a
        # flood, and a host clock set back would hold a player at the limit as long. The wait a
        # player is told runs from when the note came: it was that much less by then. Every
        # message is weighed, a bot's too: the more that come, the surer the prompt ones are.
        sent = message.created_at.timestamp()
        late = self.lateness.of(sent)
        if message.author.bot:
            return
        if not self.bot.accepting:
            if self.voice_notes(message) and self.addressed_here(message) and self.count_once(message.id):
                # A kept note is answered after the restart whatever the limit then: weighed now,
                # or a script sending through the stop's grace would have every note answered.
                if retry_after := self.flood.update_rate_limit(message, sent):
                    self.turn_away(message, too_fast(retry_after - late))
                else:
                    self.bot.track(self._keep_for_restart(message))
            return
        notes = self.voice_notes(message)
        if not notes:
            if self.voiceless(message) and self.addressed_here(message):
                if self.count_once(message.id):  # a catch-up may read it back as it comes
                    self.say_voiceless(message)
                return
            # Chat in a channel the bot watches is not for it; a DM or a mention is.
            chatty = message.type in (discord.MessageType.default, discord.MessageType.reply)
            if chatty and (message.guild is None or self._mentioned(message)):
                log.info("message %s from %s has no voice note", message.id, message.author.id)
                hint = say.NOT_A_NOTE if self.settings.any_audio_attachment else say.NOT_A_VOICE_MESSAGE
                self._hint(message, hint, "not a note")
            return
        if not self.addressed_here(message) or not self.count_once(message.id):
            return
        flood = self.flood.get_bucket(message, sent)
        assert flood is not None  # a per-user mapping makes a bucket for every message
        queued = self._backlog.get(message.author.id, 0)
        if flood.get_tokens(sent) > 0 and queued >= self.settings.flood_notes:
            # Not weighed against the flood limit: it answers nothing, and the note the player
            # sends again once the queue is empty would be told "too fast" for it.
            self.turn_away(message, say.STILL_ANSWERING, backlog=True)
            return
        retry_after = flood.update_rate_limit(sent)
        if retry_after:
            self.turn_away(message, too_fast(retry_after - late))
            return
        if len(notes) > 1:
            log.info(
                "message %s from %s has %d notes; answering the first",
                message.id,
                message.author.id,
                len(notes),
            )
        self.schedule(message, notes[0])

    def voiceless(self, message: discord.Message) -> bool:
        """A voice message, or a forward of one, that brings no note to hear: no audio, or (where
        only voice messages are answered) an attachment without a voice message's waveform."""
        if not voice_flagged(message) or self.voice_notes(message):
            return False
        return not (self.settings.any_audio_attachment and carried_attachments(message))

    def say_voiceless(self, message: discord.Message) -> None:
        """A voice message, or a forward of one, with no attachment to hear where the bot answers
        notes, or one whose attachment lacks the waveform that makes it a voice message to
        discord.py where only voice messages are answered: said in the log, not dropped unseen,
        and the player told where it may be told."""
        if carried_attachments(message):
            log.info(
                "voice message %s from %s has no waveform, and discord.any_audio_attachment is off:"
                " not answered",
                message.id,
                message.author.id,
            )
            if message.guild is None or self._mentioned(message):
                self._hint(message, say.VOICE_WITHOUT_WAVEFORM, "not a note")
            return
        hidden = message.guild is not None and not self.bot.intents.message_content
        log.info(
            "voice message %s from %s came without its audio%s: not answered",
            message.id,
            message.author.id,
            " (Discord hides a guild message's attachments without the Message Content intent)"
            if hidden
            else "",
        )
        if not hidden and (message.guild is None or self._mentioned(message)):
            self._hint(message, say.VOICE_WITHOUT_AUDIO, "not a note")

    def schedule(self, message: discord.Message, note: discord.Attachment) -> None:
        """`answer` as work in flight, counted in its player's backlog until it is over. Whoever
        found the note (the live event, a catch-up, a recheck), a message of several is answered
        by its first with a word about the rest."""
        user = message.author.id
        self._backlog[user] = self._backlog.get(user, 0) + 1
        self._scheduled[message.id] = self._scheduled.get(message.id, 0) + 1
        if message.id in self._deleted:  # deleted as it was read back
            del self._deleted[message.id]
            self._deleted_held.add(message.id)
        several = len(self.voice_notes(message)) > 1
        task = self.bot.track(self.answer(message, note, several))
        task.add_done_callback(lambda _: self._over(user, message.id))

    def scheduled(self, message_id: int) -> bool:
        """Whether an answer of the note is scheduled and not over (see `schedule`)."""
        return message_id in self._scheduled

    def _over(self, user: int, message_id: int) -> None:
        self._backlog[user] -= 1
        if not self._backlog[user]:
            del self._backlog[user]
        self._scheduled[message_id] -= 1
        if self._scheduled[message_id]:
            return
        del self._scheduled[message_id]
        self._let_go(message_id)

    def _let_go(self, message_id: int) -> None:
        """A note no longer scheduled or held by a read: its deletion, if heard, is remembered
        within MAX_DELETED from now (its reactions still to go would be refused, 404)."""
        if message_id in self._scheduled or self._held(message_id):
            return
        if message_id in self._deleted_held:
            self._deleted_held.discard(message_id)
            remember(self._deleted, message_id, None, MAX_DELETED)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A catch-up's or the recheck's read of notes back, and their scheduling: a note Discord
        served may be deleted before it is scheduled, its MESSAGE_DELETE even heard before the
        read's answer, so every deletion heard meanwhile is remembered; a note the read found
        (`hold`) is held until the read ends, however many other messages go meanwhile (a long
        catch-up, moderators clearing chat). Outside a read only a scheduled note's deletion
        matters: nothing else is scheduled but as Discord sends it."""
        found: set[int] = set()
        self._reads.append(found)
        try:
            yield
        finally:
            # By identity: two reads' sets may be equal.
            del self._reads[next(i for i, read in enumerate(self._reads) if read is found)]
            for message_id in found:
                self._let_go(message_id)

    def hold(self, message_id: int) -> None:
        """A note the reads under way found, to be scheduled once they have read all they will:
        its deletion is held until they end, one heard as Discord served it too."""
        if not self._reads:
            return
        for found in self._reads:
            found.add(message_id)
        if message_id in self._deleted:
            del self._deleted[message_id]
            self._deleted_held.add(message_id)

    def _held(self, message_id: int) -> bool:
        return any(message_id in found for found in self._reads)

    def count_once(self, message_id: int) -> bool:
        """Whether this is the first path to weigh the note against a flood limit: only that one
        answers it or turns it away."""
        if message_id in self._counted:
            return False
        remember(self._counted, message_id, None, MAX_COUNTED)
        return True

    def _mentioned(self, message: discord.Message) -> bool:
        me = self.bot.user
        return self.settings.answer_mentions and me is not None and me in message.mentions

    def turn_away(self, message: discord.Message, why: str, backlog: bool = False) -> None:
        """A note over the player's flood limit, or finding as many of theirs queued (`backlog`):
        not answered, and they hear `why` once a minute."""
        if backlog:
            log.info("backlog: note %s from %s not answered", message.id, message.author.id)
            metrics.note("discord", "refused", "backlog")
        else:
            log.info("flood: note %s from %s not answered", message.id, message.author.id)
            metrics.note("discord", "refused", "flood")
        self._hint(message, why, "flood")

    def _hint(self, message: discord.Message, text: str, kind: str) -> None:
        """Tell the player, unless they were told something of the kind a moment ago. Counted
        here whoever tells them, so two bot processes on one storage keep the same quiet."""
        quiet = bool(self.hints[kind].update_rate_limit(message, time.monotonic()))
        # Aside: a word to a player is no note in flight, which a stop's count says.
        self.bot.track(self._hint_once(message, text, quiet), aside=True)

    async def _hint_once(self, message: discord.Message, text: str, quiet: bool) -> None:
        # Settled in the ledger: the player was told to send it again, so no restart answers it.
        # Another bot process on this storage (a deploy overlapping) gets the message too, and
        # the one that records it first tells them.
        try:
            first = await self.bot.core.notes.turned_away(
                message.id, message.channel.id, str(message.author.id)
            )
        except Exception as exc:
            log.error("could not record message %s in the ledger: %s", message.id, exc)
            first = True  # told twice beats never
        if first and not quiet:
            await self._tell(message, text)

    # ---- one note --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _in_order(self, user_id: int) -> AsyncIterator[None]:
        lock = self._user_locks.setdefault(user_id, asyncio.Lock())
        self._user_waiting[user_id] = self._user_waiting.get(user_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._user_waiting[user_id] -= 1
            if not self._user_waiting[user_id]:
                del self._user_waiting[user_id], self._user_locks[user_id]

    async def answer(self, message: discord.Message, note: discord.Attachment, several: bool = False) -> None:
        """`several`: the message holds more notes than this one, which the player is told of."""
        arrived = time.monotonic()
        try:
            suspect = await self.bot.core.notes.suspect(message.id)
        except Exception:  # a failing disk: the claim says what becomes of the note
            suspect = False
        if not suspect:
            await self._claim_and_answer(message, note, several, arrived)
            return
        # A note a process died answering, taken up again with the others that crash cut: claimed
        # only once no other such note is in hand, so that the death it may cause again counts
        # against it alone (NoteLedger.claim refuses a note at its MAX_CRASHES-th), not against
        # every note answered beside it.
        async with self._suspects:
            await self._claim_and_answer(message, note, several, arrived)

    async def _claim_and_answer(
        self, message: discord.Message, note: discord.Attachment, several: bool, arrived: float
    ) -> None:
        author = message.author
        ledger = self.bot.core.notes
        if not self.bot.accepting:  # found by a catch-up still running when the shutdown began
            await self._keep_for_restart(message)
            return
        # Claimed before queueing: another bot process on the same storage (a deploy overlapping
        # the old one), or the catch-up racing a live event, then leaves it alone.
        if message.id in self._unrecorded:
            return
        try:
            mine = await ledger.claim(message.id, message.channel.id, str(author.id))
        except Exception as exc:
            # A full or failing disk: the player is answered all the same, only the note is not
            # recorded (a restart's catch-up could answer it again, which beats never). This
            # process remembers it, so its own catch-up racing the live event leaves it alone;
            # another bot on this storage, failing the same way, is kept off it by the kernel.
            mine = await ledger.take_unrecorded(message.id, message.channel.id, str(author.id))
            if mine:
                log.error("could not record note %s in the ledger, answering it anyway: %s", message.id, exc)
                remember(self._unrecorded, message.id, None, MAX_UNRECORDED)
        if not mine:
            if (crashes := ledger.crashed_out(message.id)) is not None:
                await self._refuse_crashing(message, crashes)
                return
            log.info("note %s from %s is answered elsewhere", message.id, author.id)
            return
        if self._withdrawn(message):
            await self._give_up_withdrawn(message)
            return
        if shut := self._shut(message):
            log.info("note %s from %s not answered: %s", message.id, author.id, shut)
            await self._settle(ledger.unanswerable, message)
            return
        if self._wait_out_timeout(message):
            await self._release(message)
            return
        if await self._settled_unpostable(message):
            return
        if several and message.id not in self._told_several:  # once it is this process's to answer
            remember(self._told_several, message.id, None, MAX_TOLD_SEVERAL)
            self.bot.track(self._tell_several(message), aside=True)  # its note is counted
        await self._remember_place(message)
        metrics.NOTES_WAITING.enter(message)  # until a turn's note in hand (_turn)
        begun = False  # its turn: once begun, a stop cutting it tells its player (see _answer)
        try:
            async with self._in_order(author.id):
                begun = True
                reached = await self._answer(message, note, arrived)
        except asyncio.CancelledError:
            if message.id in self._answer_out:
                # Cut while its transcript was still going out: the answer itself was sent, and
                # answering it again after the restart would answer it twice.
                await self._heard(message, self._answer_out.pop(message.id))
                await self._settle(ledger.answered, message)
                raise
            if self._withdrawn(message):
                await self._give_up_withdrawn(message)
                raise
            # Shutting down and the grace period ran out, mid-turn or still queued: the note is
            # answered after the restart.
            if not may_read_history(message.channel):
                # No process may fetch it back (403): settled; a turn begun told its player to try
                # again (see _answer).
                log.info(
                    "note %s from %s not kept for after the restart: no Read Message History there",
                    message.id,
                    author.id,
                )
                if not begun:  # still queued behind its player's turn: nothing told them of it
                    await self._ask_again(message, say.NOTES_CUT_SHORT)
                await self._settle(ledger.unanswerable, message)
                raise
            await self._release(message)
            await self._react(message, LATER)
            raise
        finally:
            metrics.NOTES_WAITING.leave(message)
        await self._after_turn(message, reached)

    async def _after_turn(self, message: discord.Message, reached: Reached) -> None:
        """Settle the note, or give it back, once its turn (or a stop's send of its kept answer)
        is over, by what reached its player."""
        author, ledger = message.author, self.bot.core.notes
        told = self._answer_out.pop(message.id, None)
        if reached is not Reached.YES and self._withdrawn(message):
            await self._give_up_withdrawn(message)
            return
        if reached is not Reached.YES and self._wait_out_timeout(message):  # timed out meanwhile
            await self._release(message)
            return
        if reached is Reached.YES:
            await self._heard(message, told or [])
            await self._settle(ledger.answered, message)
            return
        if reached is Reached.LATER:
            # discord.py's own retries are spent: the recheck answers the note once Discord is
            # back, for as long as catch-up would. Filings are keyed by the note, so a ticket
            # this turn filed is not filed twice. Said once given back, its answer kept: a kill
            # after this line finds what the recheck needs on disk.
            await self._release(message)
            log.warning(
                "note %s from %s got no answer because Discord failed: it is answered again later",
                message.id,
                author.id,
            )
            return
        # Recorded as given up on, not answered, and not tried again: what kept every message from
        # the player (mostly permissions the channel denies) would most likely meet it again.
        if shut := self._shut(message):  # a moderator's doing, as a deletion is: nothing to fix
            log.info("note %s from %s not answered: %s", message.id, author.id, shut)
        else:
            log.error(
                "note %s from %s got no answer: nothing could be posted in channel %s (see above)",
                message.id,
                author.id,
                message.channel.id,
            )
        await self._settle(ledger.unanswerable, message)

    async def _refuse_crashing(self, message: discord.Message, crashes: int) -> None:
        """A note refused at its claim, as the process died in each of its last turns (see
        NoteLedger.claim): most likely it crashes native code (decoding, hearing), and answered
        again it would take the bot down anew. Its player is asked for another recording."""
        if message.id not in self._refusals_untold:  # said once, however often Discord fails the line
            log.error(
                "note %s from %s not answered: the bot died %d times while answering it",
                message.id,
                message.author.id,
                crashes,
            )
            metrics.note("discord", "refused", "crashes")
        if await self._tell(message, say.NOTE_CRASHED, about_the_note=True) is not Reached.LATER:
            self._refusals_untold.pop(message.id, None)
            return
        # Refused for good, the note would leave its player waiting for an answer that never
        # comes: given back, its refusal is told by the recheck, as an answer Discord failed is.
        remember(self._refusals_untold, message.id, None, MAX_LATER)
        try:
            await self.bot.core.notes.refusal_untold(message.id)
        except Exception as exc:
            log.error("could not keep note %s for its refusal to be told again: %s", message.id, exc)
            return
        log.warning("note %s from %s: its refusal is told again later", message.id, message.author.id)

    def _withdrawn(self, message: discord.Message) -> bool:
        """Whether the player deleted the note (Discord said so): nothing more is posted for it."""
        return message.id in self._deleted_held or message.id in self._deleted

    async def _give_up_withdrawn(self, message: discord.Message) -> None:
        """Settle a note its player deleted before its answer was out: given up on, so no
        catch-up or recheck answers it later."""
        log.info("note %s from %s not answered: its player deleted it", message.id, message.author.id)
        metrics.note("discord", "refused", "deleted")
        await self._settle(self.bot.core.notes.unanswerable, message)
        # Its ⏳ (read back with it): kept or cut by a stop, which may have told it "restarting".
        catch_up = self.bot.get_cog("CatchUp")
        if catch_up is not None and any(r.me and r.emoji == LATER for r in message.reactions):
            take_back = catch_up.take_back_restarting(message.channel, message.id)  # type: ignore[attr-defined]
            self.bot.track(take_back, aside=True)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        # Raw: discord.py's message cache holds no note read back by a catch-up or fetched by the
        # recheck, nor any after a restart.
        self._deleted_now([payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        # A moderator's bulk delete, or a ban that deletes the player's recent messages.
        self._deleted_now(sorted(payload.message_ids))

    def _deleted_now(self, message_ids: list[int]) -> None:
        """Notes deleted: a turn here stops at its next step (see `_withdrawn`), and one kept for
        later (a stop, Discord failing its answer) or left by a process that died is settled, so
        no catch-up or recheck answers it."""
        for message_id in message_ids:
            if message_id in self._scheduled or self._held(message_id):
                self._deleted_held.add(message_id)
            elif self._reads:
                remember(self._deleted, message_id, None, MAX_DELETED)
            self._unsent.pop(message_id, None)
            # Nor asked for again at a stop, should the ledger refuse to settle it.
            self._given_back.pop(message_id, None)
        first = not self._withdrawals
        self._withdrawals.extend(message_ids)
        if first:
            # Aside, and waited for by a stop: the ledger stays open until it is written.
            self.bot.track(self._settle_deleted(), aside=True)

    async def cog_unload(self) -> None:
        # The client's close unloads the cogs before the app closes the ledger: deletions a stop's
        # cut caught before their batch's task began (a task cancelled then never runs its body),
        # or heard after it, are written here.
        if self._withdrawals:
            await self._withdraw()

    async def _settle_deleted(self) -> None:
        """Settle in one write the deletions heard from now until WITHDRAWALS_EVERY has passed,
        or until a stop cuts the wait short."""
        try:
            await asyncio.sleep(WITHDRAWALS_EVERY)
        except asyncio.CancelledError:
            await self._withdraw()
            raise
        await self._withdraw()

    async def _withdraw(self) -> None:
        message_ids, self._withdrawals = self._withdrawals, []
        try:
            waiting = await self.bot.core.notes.withdrawn(message_ids)
        except Exception as exc:
            # The recheck's fetch of such a note finds it gone (404) and gives it up all the same.
            log.error("could not record deleted messages %s in the ledger: %s", message_ids, exc)
            return
        catch_up = self.bot.get_cog("CatchUp")
        if catch_up is None or not self.bot.accepting:
            return
        if waiting:
            self.bot.track(self._take_back_restarting(catch_up, waiting), aside=True)

    async def _take_back_restarting(self, catch_up: commands.Cog, waiting: list[tuple[int, int]]) -> None:
        """A note cut by a stop was told "restarting", which now promises nothing. One history
        read at a time: a bulk delete (a ban's) may take hundreds of waiting notes at once, and a
        read each all at once would queue on Discord's global rate limit, which answers share."""
        for message_id, place_id in waiting:
            channel = self.bot.get_channel(place_id) or self.bot.get_partial_messageable(place_id)
            try:
                await catch_up.take_back_restarting(channel, message_id)  # type: ignore[attr-defined]
            except Exception:
                # One note's failure (a bug) leaves the other notes' lines to be looked for.
                log.exception("note %s is gone: looking for the restarting line told it failed", message_id)

    def _wait_out_timeout(self, message: discord.Message) -> bool:
        """Whether the bot is timed out in the note's guild: a moderator's timeout leaves it only
        View Channel and Read Message History there, until a time Discord names. The note is
        given back for the recheck, which answers it once the timeout is over (if it was sent
        within catch_up_minutes), rather than given up on as a channel that denies Send
        Messages would be. One warning for each timeout, the notes at info."""
        until = timed_out_until(message.guild)
        if until is None:
            return False
        assert message.guild is not None  # a DM has no timeout
        said = (message.guild.id, until.timestamp())
        level = logging.INFO if said in self._timeouts_said else logging.WARNING
        remember(self._timeouts_said, said, None, MAX_WARNED)
        # The recheck answers a note no older than catch_up_minutes: past that, a timeout that
        # runs its course (an hour, a day, a week) leaves the note unanswered. Its end comes with
        # no event: the first recheck after it, up to recheck_seconds later, is the one to answer.
        last = message.created_at + datetime.timedelta(
            minutes=self.settings.catch_up_minutes, seconds=-self.settings.recheck_seconds
        )
        if until <= last:
            then = "notes there are answered once it ends"
        else:
            then = f"this note is answered only if it is lifted before {last.isoformat(timespec='seconds')}"
        log.log(
            level,
            "note %s from %s waits: I am timed out in guild %s until %s; %s",
            message.id,
            message.author.id,
            message.guild.id,
            until.isoformat(timespec="seconds"),
            then,
        )
        return True

    async def _settled_unpostable(self, message: discord.Message) -> bool:
        """Whether the bot is known to be denied posting where the note was sent, the note then
        settled unanswered: nothing could reach the player there, so no turn is spent on an
        answer that cannot go out, nor a refused request (403 50013, counted toward an address
        ban) made for one already kept."""
        if may_send(message):
            self._denying.pop(_permission_place(message), None)
            return False
        self._cannot_post(message)
        metrics.note("discord", "failed", "permissions")
        await self._settle(self.bot.core.notes.unanswerable, message)
        return True

    def _cannot_post(self, message: discord.Message) -> None:
        """A warning for the first note of a channel that denies the bot Send Messages; the rest
        at info until a note there may be answered again: a raid there is one line to act on. In
        a thread the permission is Send Messages in Threads, set on its parent channel, which the
        line names: a thread has no permissions of its own to look at."""
        where, who = message.channel.id, message.author.id
        place = _permission_place(message)
        if place[1]:
            missing = f"no Send Messages in Threads permission in thread {where} of channel {place[0]}"
        else:
            missing = f"no Send Messages permission in channel {where}"
        if place in self._denying:
            log.info("note %s from %s not answered: %s", message.id, who, missing)
            return
        remember(self._denying, place, None, MAX_WARNED)
        log.warning(
            "note %s from %s not answered: %s (its next notes are logged at info until the bot may"
            " post there)",
            message.id,
            who,
            missing,
        )

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        remember(self._deleted_threads, payload.thread_id, None, MAX_THREADS)

    @commands.Cog.listener()
    async def on_thread_remove(self, thread: discord.Thread) -> None:
        if thread.type is discord.ChannelType.private_thread:
            remember(self._left_threads, thread.id, None, MAX_THREADS)

    @commands.Cog.listener()
    async def on_thread_join(self, thread: discord.Thread) -> None:
        self._left_threads.pop(thread.id, None)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # A new session: discord.py's cache is rebuilt from GUILD_CREATE, which lists the active
        # threads the bot may see. A private thread a player added it back to while the gateway
        # was away is among them, and no thread_join tells of that add.
        for thread_id in list(self._left_threads):
            if any(guild.get_thread(thread_id) for guild in self.bot.guilds):
                self._left_threads.pop(thread_id, None)

    def _gone(self, message: discord.Message) -> bool:
        """Whether the note's guild channel or thread was deleted or the bot removed from its guild
        (Discord said so by CHANNEL_DELETE, THREAD_DELETE or GUILD_DELETE): every request there
        would be refused, so the notes still queued from it are neither heard nor answered."""
        guild, channel = message.guild, message.channel
        if guild is None:
            return False  # a DM
        if channel.id in self._deleted_threads:
            return True
        if isinstance(channel, discord.PartialMessageable):
            return False  # a channel discord.py has no record of to judge by
        now = self.bot.get_guild(guild.id)
        if now is None:
            return True
        if now.unavailable:
            # A new session's READY lists each guild unavailable, with no channels, until its
            # GUILD_CREATE (which an outage holds back): its cache says nothing of the channel.
            return False
        # An archived thread leaves discord.py's cache but still takes a reply (which unarchives
        # it): its parent says whether it is there.
        place = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else channel.id
        return place is not None and self.bot.get_channel(place) is None

    def _shut(self, message: discord.Message) -> str | None:
        """Why nothing can be posted where the note is, as far as Discord has told the bot: its
        place is gone, or its thread is locked (a moderator's lock keeps out everyone who may not
        manage threads, archived or not). None: it may be."""
        if self._gone(message):
            return "its channel or guild is gone"
        if _manages_threads(message):
            return None  # a thread moderator posts in a locked thread, and sees every private one
        thread = _live_thread(message)
        if thread is not None and thread.locked:
            return f"thread {message.channel.id} is locked"
        if message.channel.id in self._left_threads:
            return f"the bot is no longer in private thread {message.channel.id}"
        return None

    async def _heard(self, message: discord.Message, keys: list[str]) -> None:
        """Before the note is marked answered, while ticket news still holds what its answer
        tells: a complaint of this note kept in the spool is told by this answer, not by DM."""
        await self.bot.core.news.heard_in_answer(str(message.author.id), "discord", str(message.id), keys)

    async def _release(self, message: discord.Message) -> None:
        """Give the note back to be answered again: its turn is over and nothing reached the player,
        or only part of its answer, which is kept in the ledger first for whichever recheck
        answers the note (this process's after a restart, another's on this storage)."""
        ledger = self.bot.core.notes
        if not may_read_history(message.channel):
            remember(self._given_back, message.id, message, MAX_UNSENT)
        if (unsent := self._unsent.get(message.id)) is not None:
            try:
                await ledger.keep_answer(message.id, unsent)
            except Exception as exc:
                # This process's recheck still has it; a restart or another process makes another.
                log.error("could not keep the answer to note %s in the ledger: %s", message.id, exc)
        if message.id not in self._unrecorded:
            await self._mark(ledger.release, message)
            return
        # Answered unrecorded: `answer` would pass it over for good, and the ledger, which has no
        # row of it, would never list it.
        del self._unrecorded[message.id]
        place, user = message.channel.id, str(message.author.id)
        await self._mark(lambda m: ledger.release_unrecorded(m, place, user), message)

    async def _settle(self, mark: Callable[[int], Awaitable[None]], message: discord.Message) -> None:
        """Mark the note settled, its answer kept for the recheck (if any) let go."""
        self._unsent.pop(message.id, None)
        self._given_back.pop(message.id, None)
        await self._mark(mark, message)

    def forget_unsent(
        self, message_ids: Iterable[int] = (), sent_before: datetime.datetime | None = None
    ) -> None:
        """Let go of the answers kept for these notes, which the recheck gave up on, and of those
        for notes sent before `sent_before`, which it answers no more: each holds its audio, and a
        note settled by another process, or too old, would otherwise keep it until MAX_UNSENT
        newer ones pushed it out."""
        kept: tuple[dict[int, Any], ...] = (self._unsent, self._given_back)
        for message_id in message_ids:
            for notes in kept:
                notes.pop(message_id, None)
        if sent_before is not None:
            for notes in kept:
                for message_id in [m for m in notes if discord.utils.snowflake_time(m) < sent_before]:
                    del notes[message_id]

    async def ask_given_back_again(self) -> None:
        """At a stop: the notes given back where the bot may not read history that no recheck has
        answered yet. No later process can fetch them (403). One whose answer is kept has it sent
        now, as the recheck would (see `_send_kept_at_stop`); the others' players are asked to send
        them again, as a stop asks for the notes it cuts there, and the notes are settled."""
        ledger = self.bot.core.notes
        claimed: list[discord.Message] = []
        kept: list[discord.Message] = []
        begun: set[int] = set()

        async def send(message: discord.Message) -> None:
            begun.add(message.id)
            await self._send_kept_at_stop(message)

        try:
            for message in list(self._given_back.values()):
                if self._given_back.pop(message.id, None) is None:
                    continue  # settled meanwhile
                try:
                    mine = await ledger.claim(message.id, message.channel.id, str(message.author.id))
                except asyncio.CancelledError:
                    # The stop's wait ran out: the COMMIT the cancel cut may have gone through. Left
                    # claimed, the next start would count a crash in the note's turn; given back,
                    # it is as the notes not reached (the release touches only a claim of ours). A
                    # second cancel is not waited out, as in the settling below.
                    await self._mark(ledger.release, message)
                    raise
                except Exception as exc:  # a full disk: the next start gives it up, with a warning
                    log.error("could not settle note %s as asked for again: %s", message.id, exc)
                    continue
                if mine:  # else answered or given up on elsewhere meanwhile
                    claimed.append(message)
            for message in list(claimed):
                if self._unsent.get(message.id) or await self._kept(message.id, "asking for it again"):
                    claimed.remove(message)  # settled by its send
                    kept.append(message)
            for message in claimed:
                log.info(
                    "note %s from %s asked for again after the restart: no Read Message History there",
                    message.id,
                    message.author.id,
                )
            # At once, as the notes a stop cuts are: the players of one place named in one line,
            # not a line each, one after another, into the channel's rate limit and the stop's wait.
            sending = [asyncio.ensure_future(send(m)) for m in kept]
            try:
                asking = (self._ask_again(m, say.RESTARTING_SEND_AGAIN) for m in claimed)
                await asyncio.gather(*asking, *sending)
            except asyncio.CancelledError:
                # A gather cut ends as soon as the first of them does, but a send cut asks for its
                # note in the stop's line and settles it as it ends (its line may wait out a rate
                # limit): not waited for, it would be cut by the close, its note left claimed and
                # its player untold. Cancelled again, not waited for any longer.
                if sending:
                    await asyncio.wait(sending)
                raise
        finally:
            # Also once the stop's wait runs out, even as they are being settled (a slow disk):
            # left claimed, a note would look to the next start like one whose process died in
            # its turn. The write the cancel cut is made again; the cancel goes on after them. A
            # note whose kept answer was not yet being sent is given back with it, for the next
            # start to send (a send begun settles its note itself).
            unsent = [m for m in kept if m.id not in begun]
            settling = [(m, partial(self._settle, ledger.unanswerable)) for m in claimed]
            cut: asyncio.CancelledError | None = None
            for message, mark in [*settling, *((m, self._release) for m in unsent)]:
                try:
                    await mark(message)
                except asyncio.CancelledError as exc:
                    if cut is not None:
                        raise  # cancelled again: not waited for any longer
                    cut = exc
                    await mark(message)
            if cut is not None:
                raise cut

    async def _send_kept_at_stop(self, message: discord.Message) -> None:
        """A note given back where the bot may not read history, claimed by a stop, whose answer
        is kept: sent, as the recheck sends it, within the stop's wait. Asked for again instead,
        its player would send it again for a second turn (a second complaint filed, perhaps) when
        Discord takes messages again. Discord failing it again (a 5xx), the note is given back
        with its answer and what of it was posted: the next start's recheck sends it from the
        ledger (see `copy_from_the_ledger`), as a line asking for it would fail alike."""
        ledger = self.bot.core.notes
        if await self._settled_unpostable(message):
            return
        log.info("note %s from %s: sending its kept answer before the stop", message.id, message.author.id)
        self._sending_at_stop.add(message.id)
        try:
            async with self._in_order(message.author.id):  # its player's other kept answer first
                reached = await self._answer(message, message.attachments[0], time.monotonic())
        except asyncio.CancelledError:
            # The stop's wait ran out (a raid's answers queued behind the channel's five messages
            # in five seconds): those not out are asked for in the stop's line, their players
            # named together, not in a line each, one after another, into the same limit. Only
            # if the answer does not come: a part cut on its way may still be made (Discord
            # read it whole), which nothing here can tell, nor any process look for later.
            if message.id in self._answer_out:
                await self._heard(message, self._answer_out.pop(message.id))
                await self._settle(ledger.answered, message)
            else:
                if not self._withdrawn(message):
                    await self._ask_again(message, say.STOPPING_MAYBE_UNANSWERED)
                await self._settle(ledger.unanswerable, message)
            raise
        finally:
            self._sending_at_stop.discard(message.id)
        await self._after_turn(message, reached)

    def given_back(self, message_id: int) -> discord.Message | None:
        """The note, if this process gave it back where it may not read history (Discord failing
        its answer, a timeout in its guild): only this process can answer it, from this copy.
        Kept until the note is settled: a stop beginning before the answer's claim lands keeps
        the note for a restart no process can fetch it in, and asks for it from the copy."""
        return self._given_back.get(message_id)

    async def copy_from_the_ledger(
        self, channel: discord.abc.Messageable, message_id: int, user_id: str
    ) -> discord.Message | None:
        """A note given back where the bot may not read history by a process that died before
        its recheck answered it (kill -9, an out-of-memory kill): Discord refuses its fetch (403),
        and that process's copy died with it. Where the ledger keeps the answer made for it, a
        copy of the note made from what the ledger holds (its id, place and player), which is all
        sending that answer takes: no download, and no reply link where history may not be read.
        None where the ledger keeps no answer for it. Errors reading the ledger propagate: the
        note waits for the next recheck rather than be given up."""
        if await self._kept(message_id, instead=None) is None:
            return None
        copy = _note_from_the_ledger(self.bot, channel, message_id, user_id)
        # As a note given back here is: a stop before its answer is out asks its player for it.
        remember(self._given_back, message_id, copy, MAX_UNSENT)
        return copy

    async def ask_again_unfetchable(
        self, channel: discord.abc.Messageable, message_id: int, user_id: str, cut: bool = False
    ) -> None:
        """A note no process may fetch (no Read Message History where it was sent) and nothing on
        this storage can answer: its turn cut by a process that died (`cut`), or given back by one
        before it made an answer. Its player is asked to send it again, as a stop asks for the
        notes it cuts there, and the note is settled: given up on untold, the player would wait
        for an answer that never comes. A cut turn's answer is kept before its first post there
        (`_keep_before_posting`), but a ledger that refused that write leaves one that may have
        gone out unrecorded, as does a turn begun longer ago than Discord keeps the nonces that
        would return its parts, and no process may read the channel to look, so its player is
        asked only if it did not reach them."""
        text = say.MAYBE_UNANSWERED_SEND_AGAIN if cut else say.RESTARTING_SEND_AGAIN
        ledger = self.bot.core.notes
        copy = _note_from_the_ledger(self.bot, channel, message_id, user_id)
        if not await ledger.claim(message_id, copy.channel.id, user_id):
            if (crashes := ledger.crashed_out(message_id)) is not None:  # most likely its own deaths
                await self._refuse_crashing(copy, crashes)
            return  # else answered or given up on elsewhere meanwhile
        log.info(
            "note %s from %s asked for again: no Read Message History there, and no answer kept",
            message_id,
            user_id,
        )
        reached = None
        try:
            reached = await self._ask_again(copy, text)
        finally:
            if reached is Reached.LATER:
                # Discord failed the line (a 5xx): settled, its player would hear nothing. Given
                # back, a later recheck asks again, until the note is too old to answer.
                self._asked_again.pop((text, copy.channel.id, copy.author.id), None)
                await self._mark(ledger.release, copy)
            else:
                # Also once a stop cuts the line: left claimed, the next start would count a crash.
                await self._settle(ledger.unanswerable, copy)

    async def _kept(self, message_id: int, instead: str | None = "making another") -> KeptAnswer | None:
        """The answer the ledger keeps for the note (made before a restart, by another process on
        this storage, or forgotten here for newer ones), kept in memory again; None if none.
        `instead`: what is done when the ledger cannot be read, logged with the error, which is
        taken as none; None: the error propagates."""
        try:
            kept = await self.bot.core.notes.kept_answer(message_id)
        except Exception as exc:
            if instead is None:
                raise
            log.error("could not read the answer kept for note %s, %s: %s", message_id, instead, exc)
            return None
        if kept is not None:
            remember(self._unsent, message_id, kept, MAX_UNSENT)
        return kept

    async def _mark(self, mark: Callable[[int], Awaitable[None]], message: discord.Message) -> None:
        try:
            await mark(message.id)
        except Exception as exc:
            log.error("could not mark note %s in the ledger: %s", message.id, exc)

    async def _answer(self, message: discord.Message, note: discord.Attachment, arrived: float) -> Reached:
        working = not _archived(message)  # else refused (50083), until the reply unarchives it
        self._react_soon(message, WORKING)
        ok = nowhere = cancelled = False
        reached = Reached.NO
        try:
            ok, reached = await self._turn(message, note, arrived)
        except (discord.RateLimited, SendStalled) as exc:
            # A rate limit of minutes, or a send Discord has not finished: an apology would meet the
            # same limit or stall behind the same upload, and the answer may yet land. The recheck
            # answers the note; the nonces keep what did land from being posted twice.
            why = limited_for(exc) if isinstance(exc, discord.RateLimited) else exc
            log.warning("could not reply to note %s: %s", message.id, why)
            metrics.note("discord", "failed", "send")
            reached = self._out_or_later(message)
            # Stalled after the answer went out: its transcript still goes on by itself, so no ⚠️.
            ok = reached is Reached.YES and isinstance(exc, SendStalled)
        except discord.HTTPException as exc:
            log.warning("could not reply to note %s: %s %s", message.id, exc.status, exc.text)
            metrics.note("discord", "failed", "send")
            nowhere = exc.code in NOWHERE_TO_POST
            if discords_trouble(exc):
                # Discord failed the answer (its audio, then its words) or the transcript after it.
                reached = self._out_or_later(message)
            elif not nowhere:
                reached = await self._tell_oops(message)
        except (aiohttp.ClientError, ConnectionError) as exc:
            # The connection to Discord broke under a reply (nothing else in a turn speaks HTTP
            # through aiohttp): Discord's trouble, which a traceback would call a bug here.
            log.warning("could not reply to note %s: %r", message.id, exc)
            metrics.note("discord", "failed", "send")
            reached = self._out_or_later(message)
        except asyncio.CancelledError:
            cancelled = True
            if message.id in self._answer_out:
                ok = True  # its answer went out; only the transcript was cut
            elif not self._withdrawn(message) and message.id not in self._sending_at_stop:
                # Where the bot may not read history, no later process can fetch the note back to
                # answer it (see answer()): a promise to would not be kept.
                kept = may_read_history(message.channel)
                await self._tell(message, say.RESTARTING if kept else say.COMMAND_CUT_SHORT)
            raise
        except Exception:
            log.exception("note %s from %s failed", message.id, message.author.id)
            metrics.note("discord", "failed", "error")
            reached = await self._tell_oops(message)
        finally:
            marks: list[tuple[str, bool]] = []  # (emoji, remove)
            if not nowhere:  # where nothing can be posted, reactions are refused too
                if working:
                    marks.append((WORKING, True))
                if ok:
                    later = message.id in self._later or any(
                        r.me and r.emoji == LATER for r in message.reactions
                    )
                    if later:
                        marks.append((LATER, True))  # kept for later, answered now
                elif not cancelled:  # a cut turn gets its ⏳ in answer(): no ⚠️ to outlive its answer
                    marks.append((LATER if reached is Reached.LATER else FAILED, False))
            for emoji, remove in marks:
                if cancelled:  # a stop cancelled the turn: it waits for this task, not for new ones
                    await self._react(message, emoji, remove)
                else:
                    self._react_soon(message, emoji, remove)
        return reached

    def _react_soon(self, message: discord.Message, emoji: str, remove: bool = False) -> None:
        """The reaction as work of its own, after the note's earlier ones. Discord takes a bot's
        reactions a few a second per channel: under a raid, a note waiting for its 🎧 would wait
        for its answer too, and the player's next note for its removal."""
        before = self._reacting.get(message.id)
        if emoji == LATER:
            if remove:
                self._later.pop(message.id, None)
            else:
                remember(self._later, message.id, None, MAX_LATER)

        async def react() -> None:
            if before is not None:
                await asyncio.wait({before})
            await self._react(message, emoji, remove)

        task = self.bot.track(react(), aside=True)
        self._reacting[message.id] = task
        task.add_done_callback(lambda done: self._reacted(message.id, done))

    def _reacted(self, message_id: int, task: asyncio.Task[None]) -> None:
        if self._reacting.get(message_id) is task:
            del self._reacting[message_id]

    async def _keep_for_restart(self, message: discord.Message) -> None:
        """A note that arrived while shutting down: kept, marked, and answered after the restart;
        where the bot may not read history, its player is asked to send it again instead, unless
        another bot on this storage answers Discord (a deploy overlapping this one): it gets the
        note too, and answers it kept, which a note turned away here it may not. Where that cannot
        be told, the player is asked: a note kept for no bot would be given up unfetched, untold."""
        if not may_read_history(message.channel) and not self.bot.core.notes.discord_elsewhere(unknown=False):
            # Neither a ⏳ may go on it nor may a later process fetch it back to answer it.
            try:
                first = await self.bot.core.notes.turned_away(
                    message.id, message.channel.id, str(message.author.id)
                )
            except Exception as exc:  # a full disk: asked all the same, as nothing else would answer it
                log.error("could not record note %s as asked for again: %s", message.id, exc)
                first = True
            if first:
                log.info(
                    "note %s from %s asked for again after the restart: no Read Message History there",
                    message.id,
                    message.author.id,
                )
                await self._ask_again(message, say.RESTARTING_SEND_AGAIN)
            return
        await self._remember_place(message)
        if await self.bot.core.notes.keep_for_restart(message.id, message.channel.id, str(message.author.id)):
            log.info("note %s from %s kept for after the restart", message.id, message.author.id)
            await self._react(message, LATER)

    async def _ask_again(self, message: discord.Message, text: str) -> Reached | None:
        """`text`, a stop's request to send notes again, told a player once in each place: each of
        their notes there is asked for by the one line (a plain message naming them, as the bot
        may not reply where it may not read history). The players a stop cuts at once in one place
        are named in one line, as many as fit: a raid's queued notes would otherwise cost the stop
        a line a player, five a channel in Discord's five seconds. Awaited by the first of them, to
        be sent; the others, whose handlers run in the same pass of the loop, join it. What
        reached the player by the line this call sent; None where it sent none."""
        key = (text, message.channel.id, message.author.id)
        if key in self._asked_again:
            return None
        remember(self._asked_again, key, None, MAX_ASKED_AGAIN)
        place = (text, message.channel.id)
        if (joining := self._asking.get(place)) is not None and len(joining) < NAMED_AT_ONCE:
            joining.append(message)
            return None
        self._asking[place] = named = [message]
        try:
            await asyncio.sleep(0)  # the notes cut with this one ask to join it
        finally:
            if self._asking.get(place) is named:
                del self._asking[place]
        # The first player's name leads the line (send_text's, as the bot may not reply here).
        others = dict.fromkeys(m.author.mention for m in named[1:] if m.author.id != message.author.id)
        return await self._tell(message, " ".join([*others, text]))

    async def _remember_place(self, message: discord.Message) -> None:
        # DMs are where catch-up looks after a restart, beside the configured channels.
        kind = "dm" if message.guild is None else "channel"
        # Whose it is only for a DM: a guild channel is everyone's who speaks there, and its first
        # speaker's export would hold it, with the time of whoever sent a note there last.
        user = str(message.author.id) if kind == "dm" else None
        try:
            await self.bot.core.notes.remember_place(message.channel.id, kind, user)
        except Exception as exc:
            # Bookkeeping for a later catch-up: the note in hand is answered all the same.
            self._places_unkept.failed(
                f"{type(exc).__name__}: {exc}",
                "could not remember where note %s came from",
                message.id,
                exc_info=exc,
            )
        else:
            self._places_unkept.answered()

    async def _tell_several(self, message: discord.Message) -> None:
        if await self._tell(message, say.ONE_AT_A_TIME) is not Reached.YES:
            self._told_several.pop(message.id, None)  # for the note's next answer to say, if any

    def _out_or_later(self, message: discord.Message) -> Reached:
        """What reached the player when Discord failed: the answer, if it got out before, else
        nothing until the recheck answers the note (no apology: one that got through would
        settle the note unanswered)."""
        return Reached.YES if message.id in self._answer_out else Reached.LATER

    async def _tell_oops(self, message: discord.Message) -> Reached:
        if self._withdrawn(message):
            return Reached.YES if message.id in self._answer_out else Reached.NO
        told = await self._tell(message, say.OOPS, about_the_note=True)
        return Reached.YES if message.id in self._answer_out else told

    async def _turn(
        self, message: discord.Message, note: discord.Attachment, arrived: float
    ) -> tuple[bool, Reached]:
        """(answered as the agent meant to, what reached the player). `arrived`: when this process
        took the note (time.monotonic())."""
        limits = self.bot.core.settings.audio
        # Came while the note waited behind its player's others: a refusal would be refused (50013).
        if timed_out_until(message.guild) or self._withdrawn(message):
            return False, Reached.NO
        if (unsent := self._unsent.get(message.id) or await self._kept(message.id)) is not None:
            log.info("note %s from %s: sending the answer Discord failed", message.id, message.author.id)
            # No turn to wait for: a stalled send would read as a queue behind the turn slots.
            metrics.NOTES_WAITING.leave(message)
            return await self._send(message, unsent, arrived)
        early = None  # a refusal that needs no turn
        if note.size > limits.max_bytes:
            log.info("note %s from %s refused: %d bytes", message.id, message.author.id, note.size)
            metrics.note("discord", "refused", "too_big")
            early = too_big_message(note.size, limits)
        elif note.duration is not None and note.duration > limits.max_seconds:
            log.info("note %s from %s refused: %.0f s declared", message.id, message.author.id, note.duration)
            metrics.note("discord", "refused", "too_long")
            early = too_long_message(limits.max_seconds)
        elif await self._forwards_my_answer(message):
            author_id = message.author.id
            log.info("note %s from %s forwards an answer of mine: not answered", message.id, author_id)
            metrics.note("discord", "refused", "own_answer")
            early = say.OWN_ANSWER
        if early is not None:
            # No turn to wait for: a stalled send would read as a queue behind the turn slots.
            metrics.NOTES_WAITING.leave(message)
            return False, await self._tell(message, early, about_the_note=True)
        refusal = None  # told after the slot is given back: a slow send must not hold a turn slot
        # "typing…" only once a turn slot is the note's: it is sent again every TYPING_EVERY s, and a
        # queue of waiting notes would otherwise cost requests growing with the square of its length.
        async with self._notes_in_hand:
            metrics.NOTES_WAITING.leave(message)  # the agent counts it again while it waits for a slot
            if self._shut(message) or timed_out_until(message.guild) or self._withdrawn(message):
                return False, Reached.NO  # came while it waited (see answer())
            async with self._typing(message):
                try:
                    # discord.py's session sets no timeout of its own: a stalled download would hold this
                    # player's later notes for aiohttp's five minutes.
                    async with asyncio.timeout(self.settings.download_seconds):
                        with metrics.timed("download"):
                            cap = min(note.size, limits.max_bytes) + DOWNLOAD_SLACK
                            data = await download(self.bot.http, note, cap)
                    if len(data) < note.size:
                        raise ShortDownload(f"{len(data)} of {note.size} bytes")
                except (
                    discord.HTTPException,
                    aiohttp.ClientError,
                    TimeoutError,
                    ShortDownload,
                    LongDownload,
                ) as exc:
                    if isinstance(exc, discord.HTTPException):
                        why = f"HTTP {exc.status}"
                    elif isinstance(exc, ShortDownload):
                        why = f"got {exc}"
                    elif isinstance(exc, LongDownload):
                        why = f"the body ran past its stated {note.size} bytes: {exc}"
                    else:
                        why = type(exc).__name__
                    log.warning("could not download attachment %s of note %s: %s", note.id, message.id, why)
                    metrics.note("discord", "failed", "download")
                    refusal = say.DOWNLOAD_FAILED
                else:
                    app = self.bot.core
                    author = message.author
                    try:
                        prefs = await app.preferences.get(str(author.id))
                    except Exception as exc:
                        # A voice and a reply style are no reason to leave the note unanswered.
                        log.error(
                            "could not read the preferences of %s, answering as set by default: %s",
                            author.id,
                            exc,
                        )
                        prefs = Preferences()
                    context = ToolContext(
                        user_id=str(author.id),
                        display_name=author.display_name,
                        platform="discord",
                        conversation=str(message.channel.id),
                        request_id=str(message.id),
                        private=read_by_speaker_alone(message.channel),
                        sent_at=message.created_at.timestamp(),
                    )
                    # The agent lets go of the bytes once decoded: nothing here may hold them on.
                    handed = HandedNote(data)
                    del data
                    try:
                        reply = await app.agent.respond(context, handed, voice=prefs.voice)
                    except AudioError as exc:
                        # The player's sentence is the same for a cut upload and an unknown codec;
                        # the decoder's reason tells staff which.
                        cause = exc.__cause__
                        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
                        log.info("note %s from %s refused: %s%s", message.id, author.id, exc, why)
                        metrics.note("discord", "refused", "bad_audio")
                        refusal = str(exc)
                    finally:
                        # The slot is given back before the answer is sent, which can wait long
                        # behind a busy channel's rate limit: the note must not wait in memory too.
                        del handed
        # Came during the turn: the answer, or the refusal of the note, would be refused (50013);
        # or the player deleted the note meanwhile.
        if timed_out_until(message.guild) or self._withdrawn(message):
            return False, Reached.NO
        if refusal is not None:
            return False, await self._tell(message, refusal, about_the_note=True)
        unsent = _answer_for(message, reply, prefs.reply_mode)
        remember(self._unsent, message.id, unsent, MAX_UNSENT)
        if not may_read_history(message.channel):
            await self._keep_before_posting(message, unsent)
        return await self._send(message, unsent, arrived)

    async def _keep_before_posting(self, message: discord.Message, unsent: KeptAnswer) -> None:
        """Keep the answer in the ledger before its first post, where the bot may not read history:
        a kill after Discord took a part, before the note was marked answered, leaves the next
        start no way to look for it there, and with the answer kept that start sends it again
        under the same nonces (Discord returns what it already made, for a few minutes) rather
        than ask the player to send a note perhaps answered. One write of the answer's text and
        audio, within the noise of a turn (bench/e2e.py --keep-first)."""
        try:
            await self.bot.core.notes.keep_answer(message.id, unsent)
        except Exception as exc:
            # The answer still goes out; only a kill in its send is left as without this.
            log.error("could not keep the answer to note %s in the ledger: %s", message.id, exc)

    async def _send(
        self, message: discord.Message, unsent: KeptAnswer, arrived: float
    ) -> tuple[bool, Reached]:
        """Send a note's answer, as `_turn` says; kept in `_unsent` until the note is settled."""
        author, told = message.author, unsent.told
        given_up = False

        def answered() -> None:
            if not given_up:  # a stalled send ending late: the note is the recheck's by then
                self._answer_out[message.id] = told

        try:
            with metrics.timed("send"):
                how = await self._bounded(
                    send_answer(
                        self.bot,
                        message,
                        unsent.text,
                        unsent.audio,
                        unsent.mode,
                        answered=answered,
                        names=unsent.names,
                        posted=unsent.posted,
                        stop=lambda: self._withdrawn(message),
                    ),
                    message.channel.id,
                    late=lambda: self._posted_late(message, unsent),
                )
        except SendStalled:
            given_up = message.id not in self._answer_out
            raise
        except Withdrawn as exc:
            if isinstance(exc, NoteGone):
                self._deleted_now([message.id])  # as if heard: its turn and reactions stop here
            # Deleted between two parts of the answer: the rest is not posted. What is out stays
            # (the player may have heard it before deleting the note), and answers it.
            if unsent.posted:
                answered()
                log.info(
                    "note %s from %s deleted mid-answer: its answer's other parts not posted",
                    message.id,
                    author.id,
                )
                return False, Reached.YES
            return False, Reached.NO
        answered()  # out whichever way it went: a text or file answer calls nothing
        metrics.reply("discord", unsent.kind)
        metrics.answered_in("discord", time.monotonic() - arrived)
        # The note's one summary line: where, what answered it, and how long the player waited
        # (from Discord's timestamp: the queue, the download, the turn and the send together).
        log.info(
            "answered note %s from %s in %s as %s (%s, %s) %.1f s after it was sent",
            message.id,
            author.id,
            message.channel.id,
            how,
            unsent.kind,
            unsent.engine,
            (discord.utils.utcnow() - message.created_at).total_seconds(),
        )
        return unsent.kind in ("answer", "refusal"), Reached.YES

    def _posted_late(self, message: discord.Message, unsent: KeptAnswer) -> None:
        """A send given up on ended by itself: what it posted meanwhile goes into the answer the
        ledger keeps, or a recheck after a restart would post it again past Discord's nonce window."""
        if self._unsent.get(message.id) is not unsent:
            return  # settled, or answered with another: the ledger keeps none of this one

        async def keep() -> None:
            try:
                await self.bot.core.notes.answer_posted(message.id, set(unsent.posted))
            except Exception as exc:
                log.error("could not keep what was posted of the answer to note %s: %s", message.id, exc)

        self.bot.track(keep(), aside=True)

    async def _forwards_my_answer(self, message: discord.Message) -> bool:
        """Whether `message` forwards a voice answer of the bot's: Discord's copy of a forwarded
        message names nobody, so the original is fetched (one request, for forwards alone). Heard,
        the bot's own words would be answered as the player's question. A fetch that fails (the
        original deleted, or where the bot cannot read) says no: the note is answered as any."""
        ref, me = message.reference, self.bot.user
        if ref is None or ref.type is not discord.MessageReferenceType.forward or me is None:
            return False
        if ref.message_id is None or not self._may_read_my_answer_in(message, ref):
            return False
        channel = self.bot.get_partial_messageable(ref.channel_id)
        try:
            async with asyncio.timeout(self.settings.download_seconds):
                original = await channel.fetch_message(ref.message_id)
        except (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, TimeoutError) as exc:
            log.debug("note %s: the message it forwards not fetched: %r", message.id, exc)
            return False
        return original.author.id == me.id

    def _may_read_my_answer_in(self, message: discord.Message, ref: discord.MessageReference) -> bool:
        """Whether the place a forward's original is in may hold an answer of the bot's that it
        may read there. Most forwards are of notes from a server the bot is not in, or a DM with
        a friend: Discord answers their fetch with a 403, which it counts toward the invalid
        requests that have the bot's address refused for an hour."""
        if ref.guild_id is not None:
            guild = self.bot.get_guild(ref.guild_id)
            if guild is None:
                return False  # a server the bot is not in: none of its answers there
            channel = guild.get_channel_or_thread(ref.channel_id)
            if channel is None or guild.me is None:
                return True  # not in the cache (an archived thread): asked
            return may_read_history(channel)
        # A DM: the bot's answers to this player are in its DM with them, the very channel when
        # the forward came by DM; any other is a DM between players.
        return message.guild is not None or ref.channel_id == message.channel.id

    @contextlib.asynccontextmanager
    async def _typing(self, message: discord.Message) -> AsyncIterator[None]:
        """ "typing…" while the note is heard and answered, as work of its own: under a raid its
        requests wait behind the channel's rate limit, and the turn must not wait with them."""
        if _archived(message):  # nobody sees it in a thread still archived, until the reply
            yield
            return
        # One loop a channel, however many of its notes are in hand: each more would send the
        # same "typing…" again, into the channel's rate limit and the bot's global one.
        place = message.channel.id
        shared = self._typing_in.get(place)
        if shared is None:
            shared = self._typing_in[place] = SharedTyping()
            self._hold(asyncio.create_task(_keep_typing(message, shared.done)))
        shared.notes_in_hand += 1
        try:
            yield
        finally:
            shared.notes_in_hand -= 1
            if not shared.notes_in_hand:
                # Told to end, not cancelled: discord.py holds every request back while it waits
                # out a global 429, and one cancelled in that wait never lets them go.
                shared.done.set()
                del self._typing_in[place]

    async def _tell(self, message: discord.Message, text: str, about_the_note: bool = False) -> Reached:
        """A short reply the player can act on (failures are only logged). `about_the_note`: it
        speaks of the note (its refusal, an apology for its turn), so is not posted once the
        player deleted it, and is deleted if posted as they did (see `send_answer`'s `stop`)."""
        # Denied Send Messages, or timed out (the timeout keeps only View Channel and Read Message
        # History): Discord would refuse it (50013), a request counted toward an address ban.
        if self._shut(message) or not may_send(message):
            return Reached.NO
        stop = (lambda: self._withdrawn(message)) if about_the_note else None
        try:
            await self._bounded(send_text(message, text, stop=stop), message.channel.id)
        except Withdrawn as exc:
            if isinstance(exc, NoteGone):
                self._deleted_now([message.id])
            return Reached.NO
        except (
            discord.HTTPException,
            aiohttp.ClientError,
            ConnectionError,
            discord.RateLimited,
            SendStalled,
        ) as exc:
            why = f"{exc.status} {exc.text}" if isinstance(exc, discord.HTTPException) else repr(exc)
            log.warning("could not reply in channel %s: %s", message.channel.id, why)
            return Reached.LATER if _discord_failed(exc) else Reached.NO
        return Reached.YES

    async def _bounded(
        self, send: Coroutine[Any, Any, T], channel_id: int, late: Callable[[], None] | None = None
    ) -> T:
        """`send` (messages posted in `channel_id`), given up on once one of its requests has been
        out to Discord for `send_seconds` unanswered: discord.py's session gives up only after 300
        s, and the player's later notes wait behind this one. Its wait in discord.py's rate limiter
        counts only while the channel's queue stands still (Discord answering no message POST
        there, as behind a stalled upload): under a raid a channel's answers wait there their turn
        (five messages in five seconds), each on its way, and one given up on would be heard again
        by the recheck, a second turn for a message posted once and two more POSTs in the same
        queue. Given up on, it goes on by itself rather than be cut: a request cancelled while
        discord.py waits out a global 429 never ends that wait for the requests behind it. A stop
        still cuts it. `late` is called when a send given up on ends, however it ends."""
        clock, limit, began = SendClock(), self.settings.send_seconds, time.monotonic()
        context = contextvars.copy_context()
        context.run(SENDING.set, clock)
        task = asyncio.create_task(send, context=context)
        try:
            while not task.done():
                since = clock.out_since
                if since is None:  # its turn not come: counted from the queue's last move
                    since = max(began, self.bot.posts_answered.get(channel_id, began))
                if (left := since + limit - time.monotonic()) <= 0:
                    break
                await asyncio.wait({task}, timeout=left)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.add_done_callback(_stalled_ended)
        if late is not None:
            task.add_done_callback(lambda _: late())
        self._hold(task)
        raise SendStalled(f"Discord did not take a message of a send within {limit:g} s")

    def _hold(self, task: asyncio.Task[T]) -> asyncio.Task[T]:
        self._on_their_own.add(task)
        task.add_done_callback(self._on_their_own.discard)
        return task

    async def _react(self, message: discord.Message, emoji: str, remove: bool = False) -> None:
        if not may_react(message) or self._shut(message):
            return  # Discord would refuse it (403 50013, or 10003 / 50001 / 160005) for every note there
        if self._withdrawn(message):
            return  # refused (404 10008): the note is gone
        if not remove and _archived(message):
            return  # refused (50083) until a message unarchives the thread: a note a catch-up found
        # Shielded: a stop cancels the reactions under way, and a request cancelled while
        # discord.py waits out a global 429 never ends that wait for the requests behind it (the
        # stop's own "restarting" and ⏳ among them). Cancelled, the request goes on by itself.
        await asyncio.shield(self._hold(asyncio.create_task(self._send_reaction(message, emoji, remove))))

    async def _send_reaction(self, message: discord.Message, emoji: str, remove: bool) -> None:
        try:
            if remove:
                assert self.bot.user is not None
                await message.remove_reaction(emoji, self.bot.user)
            else:
                await message.add_reaction(emoji)
        except discord.HTTPException as exc:
            # A missing Add Reactions permission, or a note the player deleted meanwhile (404):
            # neither may cost the player their answer, nor is either worth a warning.
            log.debug("no %s reaction on note %s: %s %s", emoji, message.id, exc.status, exc.code)
        except (aiohttp.ClientError, ConnectionError, discord.RateLimited) as exc:
            # The connection dropped (discord.py retries only a reset), or the route is limited for
            # longer than rate_limit_seconds: the answer is still owed.
            log.info("no %s reaction on note %s: %r", emoji, message.id, exc)


def _stalled_ended(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.info("a send given up on ended late: %r", exc)


@dataclass
class SharedTyping:
    """One channel's "typing…" loop and how many of the channel's notes are in hand under it: the
    loop is told to end (`done`) when the last of them is."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    notes_in_hand: int = 0


async def _keep_typing(message: discord.Message, done: asyncio.Event) -> None:
    """ "typing…" now and every TYPING_EVERY seconds, as discord.py's typing() does, until
    `done`; a channel that refuses it, or a connection that drops on it, ends it."""
    while not done.is_set():
        # Looked at before each request: a timeout (or Send Messages taken away) heard during
        # the turn makes every later one a sure refusal (50013), counted toward an address ban.
        if not may_send(message):
            return
        try:
            await message.channel.typing()  # one request
        except Exception as exc:  # decoration: whatever became of it, the answer is still owed
            log.debug("no typing in channel %s: %r", message.channel.id, exc)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TYPING_EVERY):
                await done.wait()


def _live_thread(message: discord.Message) -> discord.Thread | None:
    """The note's thread as discord.py knows it now: the cache holds a thread once it is active
    again, and drops it when it is archived; None for a note in no thread."""
    channel = message.channel
    if not isinstance(channel, discord.Thread):
        return None
    return channel.guild.get_thread(channel.id) or channel


def _note_from_the_ledger(
    bot: VoxdeskBot, channel: discord.abc.Messageable, message_id: int, user_id: str
) -> discord.Message:
    """A voice message standing for note `message_id` of player `user_id` in `channel`, which
    Discord will not let the bot fetch: what the ledger knows of it, with an attachment that is
    never downloaded (the answer it is made for is kept). Its player is the guild's member where
    cached, so the line naming them reads as one to a note heard live does."""
    data: dict[str, Any] = {
        "id": str(message_id),
        "channel_id": str(getattr(channel, "id", 0)),
        "type": 0,
        "content": "",
        "flags": discord.MessageFlags(voice=True).value,
        "attachments": [
            {
                "id": "0",
                "filename": "voice-message.ogg",
                "size": 0,
                "url": "",
                "proxy_url": "",
                "duration_secs": 0.0,
                "waveform": "",
            }
        ],
    }
    message = discord.Message(state=bot._connection, channel=channel, data=data)  # type: ignore[arg-type]
    guild = getattr(channel, "guild", None)
    member = guild.get_member(int(user_id)) if guild is not None else None
    # Not stored in discord.py's cache: a name made up here must not stand for the player's there.
    message.author = (
        member
        or bot.get_user(int(user_id))
        or discord.User(
            state=bot._connection, data={"id": user_id, "username": "", "discriminator": "0", "avatar": None}
        )
    )
    return message


def _archived(message: discord.Message) -> bool:
    """Whether the note's thread is archived as far as discord.py knows."""
    thread = _live_thread(message)
    return thread is not None and thread.archived


def _permission_place(message: discord.Message) -> tuple[int, bool]:
    """Where the permission to post a note's answer is set: (the channel, False), or for a thread
    (its parent, True), whose Send Messages in Threads covers every thread under it."""
    channel = message.channel
    parent = getattr(channel, "parent_id", None)
    if isinstance(channel, discord.Thread) and parent is not None:
        return parent, True
    return channel.id, False


def _manages_threads(message: discord.Message) -> bool:
    """Whether the bot may manage the threads where `message` is (a thread moderator posts in a
    locked thread, and sees every private one); False where discord.py cannot tell."""
    channel = message.channel
    if not isinstance(channel, discord.Thread) or channel.parent is None or channel.guild.me is None:
        return False
    return channel.permissions_for(channel.guild.me).manage_threads


async def setup(bot: VoxdeskBot) -> None:
    await bot.add_cog(VoiceNotes(bot))
