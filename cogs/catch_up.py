"""After a start: answer the voice notes sent while the bot was down (a deploy, a crash), the
notes kept during the last shutdown, and the notes a killed process never finished.

Each configured channel, its active threads and those archived within the window, and each DM
the bot has answered in before is read from the newest note it answered there before this start
(or from the oldest one left unanswered there, if older), but no further back than
`discord.catch_up_minutes`: later notes nobody answered are answered, each player's oldest
first, through the same path as a live note (so the ledger's claim keeps two processes starting
together from both answering), as soon as the places that may hold that player's notes are read
(see `_catch_up`). Older ones are left, and counted in the log. discord.py's history iterator
pages 100 at a time through the client's rate limiter; the reads are paced below Discord's global
limit (`_paced`).

A gateway outage that ends in a fresh session (Discord refused to resume the old one) loses the
events of the gap: on that READY each place is read again from when the gateway went quiet, and
every note there that the ledger does not know is answered.

A private thread the bot may see only as a member (no Manage Threads) is read from when the
bot joined it: the notes sent there before went to its members alone, not to the bot, and are
not answered (but one that @mentions the bot or replies to it), whichever read finds them: a
start's, a gateway outage's, or the read of the thread when a player adds the bot.

While it runs, the bot also looks every `discord.recheck_seconds` for notes another process left
unanswered on the same storage: in a deploy that overlaps the old process, a note the old one
kept or had to cut during its shutdown is answered by the new one, not at some later start.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Set
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import discord
from discord.ext import commands

from bot import sentences as say
from bot.bounded import remember
from bot.logs import Outage
from cogs.bot import VoxdeskBot
from cogs.limits import InAnyWindow, room_for
from cogs.replies import (
    NONCE_SECONDS,
    discords_trouble,
    from_the_edge,
    limited_for,
    may_read_history,
    timed_out_until,
)

if TYPE_CHECKING:
    from bot.note_ledger import Unanswered
    from cogs.voice import VoiceNotes

log = logging.getLogger(__name__)
T = TypeVar("T")

# How far past the window's edge a channel is read only to count what is not answered.
COUNT_AT_MOST = 500
# Read this much before the gateway went quiet: message ids carry Discord's clock, not ours.
CLOCK_MARGIN = datetime.timedelta(minutes=2)
MAX_JOINED = 1000  # private threads remembered as read on joining
MAX_REFUSALS_SAID = 1000  # places whose refused read was said in this process
MAX_REASONS = 20  # Discord's troubles remembered as said while the catch-up is owed
# Notes counted as too old to answer: a read Discord failed past its first page counts them again
# at each recheck. Ten channels' counts (COUNT_AT_MOST each).
MAX_TOO_OLD_COUNTED = 10 * COUNT_AT_MOST
# Messages read after a note a dead process had started, looking for its reply: a sanity cap on
# the pages (100 each) a raid's channel costs within the claim's lease.
REPLY_SEARCH_AT_MOST = 5000
NO_HISTORY = "no Read Message History permission"
EDGE_TEXT_AT_MOST = 80  # a page from Cloudflare longer than this is named, not quoted, in the log
# Replies to a note that come before its answer: "one note per message" as its turn is claimed,
# "restarting" as a stop cuts the turn. A process killed after one is no answer of the note's.
TOLD_BEFORE_THE_ANSWER = frozenset({say.ONE_AT_A_TIME, say.RESTARTING})
# Places a catch-up reads at once: one request each for most (a quiet DM), so a few at once hide
# the round trip, and `discord.catch_up_reads_per_second` holds their sum below Discord's limit.
READS_AT_ONCE = 4


class CatchUp(commands.Cog):
    def __init__(self, bot: VoxdeskBot) -> None:
        self.bot = bot
        self._done = False
        self._quiet_since: datetime.datetime | None = None  # the gateway's last disconnect
        # A catch-up that failed (a busy or full disk, a network error, places Discord did not
        # serve) is tried again by the recheck: what it still owes, a start-up's first, then a
        # gateway outage's (see `_still_owed`).
        self._failed: list[Owed] = []
        self._owings = 0  # how many times a catch-up was owed: a read that began before pays none
        # Discord out of reach is met at every recheck until it is back: said once.
        self._unreachable = Outage(log, "Discord answers the catch-up again")
        # Apart: a look that finds no note left over asks Discord nothing, so its success must
        # not end the catch-up's outage, to be said anew at the next recheck.
        self._leftovers_unreachable = Outage(
            log, "Discord answers the look for notes left unanswered again", beside=self._unreachable
        )
        # A start-up's read begins at the newest note answered before this process started: a
        # note answered live since (before a place is read, or before a failed read is tried
        # again) says nothing of the notes sent while the bot was down.
        self._started_at = time.time()
        self._started_tick = time.monotonic()
        # Discord's trouble with the catch-up's requests: a ban fails every place, and a place
        # left unread is met again at every recheck, so each reason (two may come in turn: one
        # place's 503, a listing's 429) is said once until every place is read. Its end is the
        # line below's.
        self._reasons_said: dict[str, None] = {}
        self._places_unread = Outage(log, "catch-up: Discord serves every place again")
        # Said once until it works again, whatever each failure's words.
        self._claims_unkept = Outage(log, "pruning the claims of /grievance file works again")
        # A full or read-only disk refuses every catch-up's bookkeeping alike: said once.
        self._owed_unkept = Outage(log, "the places a catch-up is to read are kept on disk again")
        # The rows of owed_reads this process wrote (places; listings as their channels' ids
        # negated), each with the count of such writes when it was last owed: a read or listing
        # begun before its place was owed again (a new gateway session's catch-up owing it as a
        # start's read of it ends) saw none of the notes that catch-up is for, and pays nothing.
        self._owe_writes = 0
        self._last_owed: dict[int, int] = {}
        self._unfetched_said: set[int] = set()  # notes left over whose fetch failed: said once
        self._too_old_counted: dict[int, None] = {}
        self.recheck = Every(bot.discord_settings.recheck_seconds, self._recheck, "recheck")
        # Set once the start's catch-up has ended, however it ended: from then on a note sent is
        # live or the recheck's, never read as the start's own (Every has no event for it).
        self.caught_up = asyncio.Event()
        self._joined: dict[int, None] = {}  # private threads a player added the bot to, oldest first
        # Watched places whose read Discord refuses, and channels whose archived threads it refuses
        # to list (by their ids negated): said once a process, not at each catch-up.
        self._refusals_said: dict[int, None] = {}
        self._next_read = 0.0  # when the next catch-up read may begin (the loop's clock)

    async def cog_unload(self) -> None:
        # Ended before Bot.close() goes on to close the HTTP session and the app goes on to close
        # the stores: a run cut short would otherwise roll back and read on against closed ones.
        await self.recheck.stop()

    def _start_as_stamped_now(self) -> float:
        """This process's start by the ledger's clock (time.time()) as it runs now. A host clock
        stepped back since (NTP correcting a fast clock at boot) stamps the notes answered live
        after the start with times before it, which would be read as answered before the start:
        a read would begin after them and skip the notes sent while the bot was down. Earlier
        rather than later: a read begun before a note already answered finds it answered."""
        stepped = (time.time() - self._started_at) - (time.monotonic() - self._started_tick)
        return self._started_at + min(0.0, stepped)

    @commands.Cog.listener()
    async def on_disconnect(self) -> None:
        if self._quiet_since is None:
            self._quiet_since = discord.utils.utcnow()

    @commands.Cog.listener()
    async def on_resumed(self) -> None:
        self._quiet_since = None  # a resumed session is sent the events it missed

    @commands.Cog.listener()
    async def on_thread_join(self, thread: discord.Thread) -> None:
        """A player added the bot to a private thread under a watched channel. Discord shows such
        a thread only to its members and to who may manage threads: the notes sent there before
        were its members' among themselves, and are left. The thread is read for a note that
        addresses the bot (the mention that added it) or was sent as it was added, whose
        MESSAGE_CREATE may not have reached it. The bot's own first reply in a thread it saw
        already adds it too (discord.py tells of that join the same way): nothing to read then."""
        if thread.type is not discord.ChannelType.private_thread:
            return
        if thread.parent_id not in self.bot.discord_settings.channels or thread.id in self._joined:
            return
        parent = thread.parent
        if parent is None or parent.permissions_for(thread.guild.me).manage_threads:
            return
        # Discord tells of one join twice (THREAD_CREATE, then THREAD_MEMBERS_UPDATE).
        remember(self._joined, thread.id, None, MAX_JOINED)
        # THREAD_CREATE carries no thread member for the bot: it was added as the event came.
        joined = thread.me.joined_at if thread.me is not None else discord.utils.utcnow()
        # The notes it finds count, not the read.
        self.bot.track(self._reading(self._read_joined(thread, joined)), aside=True)

    @commands.Cog.listener()
    async def on_thread_remove(self, thread: discord.Thread) -> None:
        # Out of a private thread, the bot hears none of its notes: adding it back reads it again.
        self._joined.pop(thread.id, None)

    def _cutoff(self) -> datetime.datetime:
        """When the oldest note still answered was sent: `discord.catch_up_minutes` ago."""
        return discord.utils.utcnow() - datetime.timedelta(minutes=self.bot.discord_settings.catch_up_minutes)

    async def _read_joined(self, thread: discord.Thread, joined: datetime.datetime) -> None:
        voice: VoiceNotes | None = self.bot.get_cog("VoiceNotes")  # type: ignore[assignment]
        if voice is None or not may_read_history(thread):
            return
        ledger = self.bot.core.notes
        cutoff = self._cutoff()
        # Owed on disk until read, as a catch-up's places are: a restart before then (Discord
        # failing the read, a stop while it waits its turn) must read the thread from here, not
        # from a note answered there live meanwhile, past the note that added the bot.
        await self._owe_on_disk(ledger.owe_reads([thread.id], cutoff.timestamp()), [thread.id])
        began = self._owe_writes

        async def done() -> None:  # read, or never to be: the row is paid
            if self._pays(thread.id, began):
                await self._keep_owed(ledger.read_through(thread.id, cutoff.timestamp(), cutoff.timestamp()))

        await self._paced()  # players adding the bot to many threads at once are a catch-up too
        if thread.id not in self._joined:
            # Removed again while the read waited its turn: Discord refuses it (50001), and would
            # refuse a start's read too.
            await done()
            return
        found: dict[int, tuple[discord.Message, discord.Attachment]] = {}
        replied: set[int] = set()
        voiceless: dict[int, discord.Message] = {}
        try:
            async for message in thread.history(limit=None, after=cutoff, oldest_first=True):
                self._sort(voice, message, found, replied, voiceless, joined)
        except (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, TimeoutError) as exc:
            broken = isinstance(exc, aiohttp.ClientError | TimeoutError)
            if not broken and not discords_trouble(exc):
                log.warning("could not read thread %s the bot was added to: %s", thread.id, _why(exc))
                await done()
                return
            # Owed as a place a gateway outage's catch-up failed (none of it read), from the same
            # edge: the recheck reads it until Discord serves it. Else the thread, remembered as
            # read, is never read again and its notes go unanswered.
            self._owe(Owed(cutoff, frozenset()), Owed(cutoff, frozenset({thread.id})), self._owings)
            if broken:  # the connection broke under the read
                self._out_of_reach(exc, f"the read of thread {thread.id} the bot was added to")
                return
            self._said_trouble(
                exc,
                "could not read thread %s the bot was added to: %s; tried again every %g s",
                thread.id,
                _why(exc),
                self.bot.discord_settings.recheck_seconds,
            )
            # The line above said it: kept quietly, for its end to be said once the recheck reads it.
            self._say_unread(level=logging.DEBUG)
            return
        await done()
        if answering := await self._answer_unseen(voice, found, replied):
            log.info("added to thread %s: answering %d note(s) for me found there", thread.id, answering)
        await self._say_voiceless(voice, voiceless)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        if not self._done:
            self._done = True
            self._quiet_since = None
            self.bot.track(self.catch_up(), aside=True)  # the notes it finds count, not the read
            return
        # A fresh session after an outage: Discord does not send the events of the gap.
        quiet, self._quiet_since = self._quiet_since, None
        since = (quiet or discord.utils.utcnow()) - CLOCK_MARGIN
        log.info("new gateway session: reading the notes sent since %s", since.isoformat(timespec="seconds"))
        self.bot.track(self.catch_up(since), aside=True)

    async def _recheck(self) -> None:
        if not self.bot.accepting:
            return
        for owed in list(self._failed):
            await self.catch_up(owed.since, owed.places, owed.listings)
        # Whatever became of it: a catch-up that fails at each try (a channel whose read always
        # errs) must not hold back the notes kept here, fetched by id, nor the pruning.
        try:
            await self.answer_leftovers()
            self._leftovers_unreachable.answered()
        except Exception as exc:
            if not self._out_of_reach(exc, "looking for notes left unanswered", self._leftovers_unreachable):
                log.exception("looking for notes left unanswered failed; trying again later")
        # A bot that runs for months must not keep every settled note and told news, nor a bot that
        # hears no more notes the last player's words.
        try:
            await self.bot.core.notes.housekeeping()
            await self.bot.core.news.housekeeping()
            await self.bot.core.conversations.housekeeping()
        except Exception:
            log.exception("pruning old records failed; trying again later")
        # Apart: a claims file the store cannot write (a full disk, a folder made read-only) fails
        # every recheck the same way, and a traceback at each would bury the log.
        try:
            await self.bot.core.grievances.local_store.housekeeping()
            self._claims_unkept.answered()
        except Exception as exc:
            self._claims_unkept.failed(
                "failing",
                "pruning the claims of /grievance file failed (%s: %s); tried again every %g s",
                type(exc).__name__,
                exc,
                self.bot.discord_settings.recheck_seconds,
            )

    def _out_of_reach(self, exc: Exception, what: str, outage: Outage | None = None) -> bool:
        """Whether `exc` is Discord out of reach (a network or Discord outage, which discord.py's
        own retries did not outlast): then said in one line without a traceback, and only when
        the reason is new, since the recheck meets it every recheck_seconds until Discord is back."""
        if not (isinstance(exc, aiohttp.ClientError | TimeoutError) or discords_trouble(exc)):
            return False
        why = f"{type(exc).__name__}: {exc}"
        (outage or self._unreachable).failed(
            why,
            "%s could not reach Discord (%s); new notes are still answered, and it is tried again every %g s",
            what,
            why,
            self.bot.discord_settings.recheck_seconds,
        )
        return True

    async def answer_leftovers(self) -> int:
        """Answer the notes left unanswered (kept for later, or cut short by a process that died),
        fetched by id; how many."""
        return await self._reading(self._answer_leftovers())

    async def _answer_leftovers(self) -> int:
        voice: VoiceNotes | None = self.bot.get_cog("VoiceNotes")  # type: ignore[assignment]
        if voice is None:
            return 0
        ledger = self.bot.core.notes
        cutoff = self._cutoff()
        # Answers kept for notes settled or given up on elsewhere (another process, a moderator)
        # are let go once the notes are too old to answer.
        voice.forget_unsent(sent_before=cutoff)
        leftovers = await ledger.unanswered()
        await ledger.expire([u.message_id for u in leftovers if _sent_at(u.message_id) < cutoff])

        async def give_up(message_id: int) -> None:
            await ledger.expire([message_id])
            voice.forget_unsent([message_id])

        answered = 0
        self._unfetched_said &= {u.message_id for u in leftovers}
        # Discord's trouble with notes not failed before: a ban fails every one, said in one line.
        troubled: list[tuple[str, int, str]] = []
        try:
            for index, left in enumerate(leftovers):
                if _sent_at(left.message_id) < cutoff or not self.bot.accepting:
                    continue
                if voice.scheduled(left.message_id):
                    # Taken up already and not yet claimed: one a dead process had in hand waits
                    # for the one before it (VoiceNotes.answer). Fetched again, it is queued again.
                    continue
                # A process stopped in a raid leaves hundreds: fetched back to back, they would take
                # Discord's global rate limit from the answers.
                await self._paced()
                what = "look up the channel of note"
                try:
                    channel = await self._channel(left.place_id)
                    what = "fetch note"
                    if channel is not None and _guild_missing(channel):
                        # Its guild in an outage: the bot's permissions there are unknown until it
                        # is back. The note waits for it; the notes kept after it go on.
                        log.debug("note %s waits for the guild of channel %s", left.message_id, left.place_id)
                        continue
                    if channel is not None and timed_out_until(getattr(channel, "guild", None)):
                        # Said when the note was given back: until the timeout ends nothing can be
                        # posted there, and fetching the note each recheck would only spend requests.
                        log.debug("note %s waits for the bot's timeout to end", left.message_id)
                        continue
                    if channel is not None and not may_read_history(channel):
                        # Discord would refuse the fetch (403 50001), as it does a refusal's: a
                        # request sure to be refused spends the rate limit and, with enough
                        # others, earns Cloudflare's ban of the address. This process's own
                        # note given back there is answered from its copy.
                        message = voice.given_back(left.message_id)
                        elsewhere = ledger.discord_elsewhere(unknown=False)
                        if message is None and left.state == "pending" and elsewhere:
                            # Given back by another bot on this storage (a deploy overlapping this
                            # one), whose copy answers it, or whose stop asks for it again.
                            log.debug("note %s waits for the bot that gave it back", left.message_id)
                            continue
                        if message is None and _cut_past_the_nonces(left):
                            # Its turn cut by a death longer ago than Discord keeps a nonce: a
                            # part of the answer it posted would be posted again, not returned.
                            # Asked for only if it did not reach the player, as with none kept.
                            await voice.ask_again_unfetchable(channel, left.message_id, left.user_id, True)
                            continue
                        if message is None:
                            # Given back or cut short by a process that died: its copy died
                            # with it. The answer the ledger kept for it is sent; with none, its
                            # player is asked to send it again rather than left waiting untold.
                            user = left.user_id
                            message = await voice.copy_from_the_ledger(channel, left.message_id, user)
                        if message is None:
                            cut = left.state == "started"
                            await voice.ask_again_unfetchable(channel, left.message_id, left.user_id, cut)
                            continue
                    else:
                        message = await channel.fetch_message(left.message_id) if channel else None
                    notes = voice.voice_notes(message) if message else []
                    if message is None or not notes:
                        await give_up(left.message_id)
                        continue
                    what = "look for my reply to note"
                    if left.state == "started" and await self._replied_to(message, left.lease_until):
                        # Its process died after the reply went out, before it could mark the note.
                        await ledger.answered_before_a_crash([left.message_id])
                        voice.forget_unsent([left.message_id])
                        continue
                except discord.NotFound:  # deleted meanwhile: nothing to answer
                    await give_up(left.message_id)
                    if what == "fetch note" and channel is not None:
                        await self.take_back_restarting(channel, left.message_id)
                    continue
                except (discord.HTTPException, discord.RateLimited) as exc:
                    if not discords_trouble(exc):
                        # Refused (the bot lost sight of the channel): no recheck would change that,
                        # and an answer there would be refused too.
                        log.warning("could not %s %s: %s; giving it up", what, left.message_id, _why(exc))
                        await give_up(left.message_id)
                        continue
                    # Left for the next recheck, which meets a long outage every recheck_seconds.
                    if left.message_id not in self._unfetched_said:
                        troubled.append((what, left.message_id, _why(exc)))
                    self._unfetched_said.add(left.message_id)
                    log.debug("could not %s %s: %s", what, left.message_id, _why(exc))
                    if not _edge_refuses_the_bot(exc):
                        continue
                    # Cloudflare refuses the bot's address (its ban, its firewall): each note after
                    # this one would meet it too, every refused request one more of the invalid
                    # ones that keep the ban. They wait for the next recheck untried.
                    for later in leftovers[index + 1 :]:
                        if (
                            _sent_at(later.message_id) >= cutoff
                            and later.message_id not in self._unfetched_said
                        ):
                            troubled.append(("fetch note", later.message_id, _why(exc)))
                            self._unfetched_said.add(later.message_id)
                    break
                self._unfetched_said.discard(left.message_id)
                log.info("answering note %s, kept for later or cut short", left.message_id)
                voice.schedule(message, notes[0])
                answered += 1
        finally:
            # Also when the round ends early (the connection dropped on a later note): the notes met
            # are "said" already, and would otherwise fail at DEBUG only from now on.
            _say_troubled(troubled)
        return answered

    async def catch_up(
        self,
        since: datetime.datetime | None = None,
        places: frozenset[int] | None = None,
        listings: frozenset[int] = frozenset(),
    ) -> None:
        """`places`: only these (a catch-up owed for the places Discord failed), with the archived
        threads of the watched channels in `listings`; None, every place."""
        this, began = Owed(since, places, listings), self._owings
        try:
            await self._reading(self._catch_up(since, places, listings))
            self._owe(this, None, began)
            self._unreachable.answered()
            if not self._failed:  # another catch-up owed (a start-up's and an outage's) may still fail
                self._reasons_said.clear()
                self._places_unread.answered()
        except Exception as exc:
            # Only the places Discord failed are read again; any other failure, all this one read.
            failed = this
            if isinstance(exc, PlacesUnread):
                failed = Owed(since, frozenset(exc.places or ()), frozenset(exc.unlisted))
            self._owe(this, failed, began)
            if isinstance(exc, PlacesUnread):
                self._say_unread()
            elif not self._out_of_reach(exc, "catch-up"):
                log.exception("catch-up failed; new notes are still answered, and it is tried again soon")
        finally:
            # Whatever became of the start's catch-up: notes another process keeps for this one (a
            # deploy overlapping the old process) are found only by the recheck. Not an outage's
            # that ends first (a reconnect as the bot starts): the start's read is still to claim
            # the notes the recheck would fetch one by one.
            if since is None:
                if not self.recheck.is_running():
                    self.recheck.start()
                self.caught_up.set()

    async def _reading(self, read: Awaitable[T]) -> T:
        """`read`, which reads notes back and schedules those to answer, heard by the voice cog as
        one (see VoiceNotes.reading): a note deleted as it is read is not answered."""
        voice: VoiceNotes | None = self.bot.get_cog("VoiceNotes")  # type: ignore[assignment]
        if voice is None:
            return await read
        with voice.reading():
            return await read

    def _say_unread(self, level: int | None = None) -> None:
        """What all the catch-ups owed leave unread, tried in turn at each recheck: said once,
        not once per catch-up, and its end once every place is read."""
        every = any(o.places is None for o in self._failed)
        unread = PlacesUnread(
            None if every else frozenset().union(*(o.places or () for o in self._failed)),
            frozenset().union(*(o.listings for o in self._failed)),
        )
        self._places_unread.failed(
            str(unread),
            "catch-up: %s; tried again every %g s",
            unread,
            self.bot.discord_settings.recheck_seconds,
            level=level,
        )

    def _owe(self, done: Owed, failed: Owed | None, began: int) -> None:
        """What is owed once `done`, begun when `began` catch-ups had been owed, left `failed` of it
        unread. A place owed since may have been read before the notes that made it owed were
        sent (a second outage while an outage's catch-up still reads): `done` does not pay it."""
        if failed is not None:
            self._owings += 1
            failed = replace(failed, owed_at=self._owings)
        self._failed = _still_owed(self._failed, done, failed, began)

    async def _catch_up(
        self,
        since: datetime.datetime | None = None,
        only: frozenset[int] | None = None,
        listings: frozenset[int] = frozenset(),
    ) -> None:
        """`since`: after a gateway outage, read every place from then and answer every note the
        ledger does not know (notes are answered out of order, so the newest one handled says
        nothing of the gap); at a start, from the newest note answered in each place before it.
        `only`: read these places, and the archived threads of the channels in `listings` (those
        active again by now too), not every place.

        The channels, their threads and the other guild places are read first, with the DMs of
        the players who left a note there, and their notes answered; then each DM, the one heard
        from most recently first, its notes answered as soon as it is read. A DM is one player's
        alone, so each player's notes are still answered in the order sent, weighed against the
        flood limit together."""
        voice: VoiceNotes | None = self.bot.get_cog("VoiceNotes")  # type: ignore[assignment]
        if voice is None:
            return
        ledger = self.bot.core.notes
        minutes = self.bot.discord_settings.catch_up_minutes
        cutoff = self._cutoff()
        leftovers = await ledger.unanswered()
        owed = await ledger.owed_reads()
        owed_listings = await ledger.owed_listings()
        owners = dict(await ledger.dms())  # newest heard first
        channels = set(self.bot.discord_settings.channels)
        unlisted: set[int] = set()  # channels whose archived threads Discord's trouble kept unlisted
        window_start = cutoff if since is None else max(cutoff, since)
        to_list = channels if only is None else channels & listings
        # The places a catch-up reads for a reason of their own, not only for their row on disk.
        watched = channels | self._threads_of(channels) | set(owners) | {u.place_id for u in leftovers}
        known = watched | set(owed) if only is None else set(only)
        # Owed on disk until read: a stop, or Discord failing a read, before a place is read leaves
        # it to the next start, which must not begin there after a note answered live meanwhile,
        # past the notes this read is for. So too a channel's archived threads until they are
        # listed: one archived while the bot was down is active again once a player posts there,
        # and no longer listed. Before the listings, which may take a while (each joined private
        # thread of a channel without Manage Threads is listed).
        await self._owe_on_disk(ledger.owe_reads(sorted(known), window_start.timestamp()), known)
        await self._owe_on_disk(
            ledger.owe_listings(sorted(to_list), window_start.timestamp()), [-c for c in to_list]
        )
        listing_began = self._owe_writes
        archived = await self._archived_threads(to_list, window_start, unlisted)
        # A thread Discord failed to list before may be active again by now (a player posted
        # there): no longer listed as archived, it is read as an active one.
        places = known | set(archived) | self._threads_of(to_list)
        # The threads of a channel whose listing an earlier catch-up owed are read from then, as
        # places owed are: any of them may have been the one it did not list.
        listed_late: dict[int, set[int]] = {}
        for channel_id, listed_since in owed_listings.items():
            theirs = self._threads_of({channel_id}) | {
                t for t, thread in archived.items() if thread.parent_id == channel_id
            }
            listed_late[channel_id] = theirs & places
            for thread_id in listed_late[channel_id]:
                owed[thread_id] = min(owed.get(thread_id, listed_since), listed_since)
        # The threads listed, and those active by now.
        await self._owe_on_disk(
            ledger.owe_reads(sorted(places - known), window_start.timestamp()), places - known
        )
        for channel_id, theirs in listed_late.items():
            await self._owe_on_disk(ledger.owe_reads(sorted(theirs), owed_listings[channel_id]), theirs)
        # Each thread a listing found is owed on its own now; a channel no longer watched, listed
        # by no catch-up, has no thread left to read.
        paid = to_list - unlisted
        if only is None:
            paid |= owed_listings.keys() - channels
        for channel_id in sorted(paid):
            if not self._pays(-channel_id, listing_began):
                continue
            await self._keep_owed(
                ledger.listed_through(channel_id, window_start.timestamp(), cutoff.timestamp())
            )
        reading = _Reading(
            voice,
            since,
            cutoff,
            window_start,
            leftovers,
            archived,
            set(owners),
            owed,
            too_old={u.message_id for u in leftovers if _sent_at(u.message_id) < cutoff},
            watched=watched | set(archived),
        )
        # A DM with no player recorded goes with the guild places: whose notes it holds is unknown.
        dms = [p for p, owner in owners.items() if p in places and owner is not None]
        left_in = {u.place_id for u in leftovers}
        dms.sort(key=lambda p: p not in left_in)  # a note left over there first; stable otherwise
        found: dict[int, tuple[discord.Message, discord.Attachment]] = {}
        replied: set[int] = set()  # notes a bot message refers to
        await self._each(sorted(places - set(dms)), lambda p: self._read(reading, p, found, replied))
        # Their DMs may hold older notes of theirs: read before any of their notes is answered.
        authors = {str(message.author.id) for message, _ in found.values()}
        theirs = [p for p in dms if owners[p] in authors]
        await self._each(theirs, lambda p: self._read(reading, p, found, replied))
        await self._answer_found(reading, found, replied)

        async def read_dm(place_id: int) -> None:
            found: dict[int, tuple[discord.Message, discord.Attachment]] = {}
            replied: set[int] = set()
            await self._read(reading, place_id, found, replied)
            await self._answer_found(reading, found, replied)

        await self._each([p for p in dms if owners[p] not in authors], read_dm)
        await self._say_voiceless(voice, reading.voiceless)

        too_old = reading.too_old
        if too_old:
            await ledger.expire(sorted(too_old))
            counted = [m for m in sorted(too_old) if m not in self._too_old_counted]
            for message_id in counted:
                remember(self._too_old_counted, message_id, None, MAX_TOO_OLD_COUNTED)
            if counted:
                log.info("catch-up: %d note(s) older than %g minutes left unanswered", len(counted), minutes)
        # Places owed are read again at every recheck while Discord fails them: an empty one of
        # those reads is no news.
        log.log(
            logging.INFO if reading.answered or only is None else logging.DEBUG,
            "catch-up: answering %d note(s) sent while I was away, from %d place(s)",
            reading.answered,
            len(places),
        )
        if reading.unread or unlisted:
            raise PlacesUnread(reading.unread, unlisted)

    async def _each(self, place_ids: list[int], read: Callable[[int], Awaitable[None]]) -> None:
        """`read` each place, in the order given, READS_AT_ONCE at a time and each begun when the
        pace allows (see `_paced`). The first exception ends every read and is raised as it is."""
        todo = iter(place_ids)

        async def reader() -> None:
            for place_id in todo:  # shared: each place is taken by one reader
                await self._paced()
                await read(place_id)

        readers = [asyncio.create_task(reader()) for _ in range(min(READS_AT_ONCE, len(place_ids)))]
        try:
            for done in asyncio.as_completed(readers):
                await done
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _paced(self) -> None:
        """Wait for the next read's turn: at most `discord.catch_up_reads_per_second` reads are
        begun a second, by every catch-up together, so that the answers keep the most of Discord's
        global rate limit (50 requests a second) and discord.py's HTTP layer never has to wait it
        out. A read that pages through a busy channel spends its further requests in its turn."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self._next_read)
        self._next_read = start + 1 / self.bot.discord_settings.catch_up_reads_per_second
        await asyncio.sleep(start - now)

    async def _read(
        self,
        reading: _Reading,
        place_id: int,
        found: dict[int, tuple[discord.Message, discord.Attachment]],
        replied: set[int],
    ) -> None:
        """One place's notes since where the catch-up starts there, sorted into `found`."""
        await self._read_place(reading, place_id, found, replied)
        if refusal := reading.refused.get(place_id):
            await self._refused(reading, place_id, *refusal)
        elif place_id not in reading.unread:
            self._refusals_said.pop(place_id, None)  # refused again later, it is said again

    async def _refused(self, reading: _Reading, place_id: int, why: str, gone: bool) -> None:
        """A place Discord will not let the catch-up read. Gone (deleted), or read only because a
        row of owed_reads names it (a channel no longer watched, a thread neither active nor
        archived of late), its row goes: nothing else has a catch-up read it, and kept, every start
        would read it and warn of it for ever. A place read anyway (a watched channel, its threads,
        a DM) stays owed, its notes answered from then once the bot may read there (an admin's
        fix, which a restart reads); said once a process, since every catch-up meets it."""
        if gone or place_id not in reading.watched:
            log.info("catch-up skips channel %s: %s", place_id, why)
            await self._given_up(place_id)
            if gone and place_id in reading.dms:
                # Remembered, every start would read it again: a DM is read for its row alone.
                await self._keep_owed(self.bot.core.notes.forget_place(place_id, reading.began_at))
            return
        self._say_refusal(
            place_id,
            "catch-up cannot read channel %s: %s; the notes sent there while I was away (within"
            " catch_up_minutes) are answered at the first start after the bot is given View Channel"
            " and Read Message History there",
            place_id,
            why,
        )

    def _say_refusal(self, key: int, msg: str, *args: object) -> None:
        """A refusal every catch-up of a process meets until an admin acts: warned of once a
        process for each `key` (a place, or a channel's listing by its id negated), then DEBUG."""
        said = key in self._refusals_said
        remember(self._refusals_said, key, None, MAX_REFUSALS_SAID)
        log.log(logging.DEBUG if said else logging.WARNING, msg, *args)

    async def _read_place(
        self,
        reading: _Reading,
        place_id: int,
        found: dict[int, tuple[discord.Message, discord.Attachment]],
        replied: set[int],
    ) -> None:
        """`_read`, but for a refusal, which it leaves in `reading.refused`."""
        ledger, voice, cutoff = self.bot.core.notes, reading.voice, reading.cutoff
        began = self._owe_writes
        channel = reading.archived.get(place_id) or await self._channel(
            place_id, dm=place_id in reading.dms, unread=reading.unread
        )
        if channel is None:
            if place_id not in reading.unread:  # gone: nothing there to answer
                await self._given_up(place_id)
            return
        if _guild_missing(channel):
            reading.unread.add(place_id)  # read once its guild is back from its outage
            return
        if not may_read_history(channel):
            # Discord would answer an empty list, not an error: the notes would vanish unseen.
            reading.refused[place_id] = (NO_HISTORY, False)
            return
        try:
            joined = await self._bot_joined(channel)
        except (discord.HTTPException, discord.RateLimited) as exc:
            self._not_read(place_id, "look up the bot's membership of", exc, reading.unread, reading.refused)
            return
        last = None
        owed = reading.owed.get(place_id)
        if reading.since is None and owed is None:
            last = await ledger.last_handled(place_id, answered_before=self._start_as_stamped_now())
        # Notes are answered out of order (one queue per player, several players at once), so
        # a note a stopped or killed process left unanswered can be older than the newest one
        # it answered here: reading resumes before the oldest such note, not after the newest.
        left_here = {u.message_id for u in reading.leftovers if u.place_id == place_id} - reading.too_old
        start: discord.abc.Snowflake | datetime.datetime = reading.window_start
        if owed is not None and reading.since is None:
            # A read owed since before a restart (or this one's failed read): its newest note
            # answered may be one answered live after the notes the read was for, so every note
            # from then that the ledger does not know is answered, as after a gateway outage.
            start = max(cutoff, datetime.datetime.fromtimestamp(owed, datetime.UTC))
        elif last is not None and _sent_at(last) >= cutoff:
            start = discord.Object(id=min([last, *(m - 1 for m in left_here)]))
        elif last is not None:
            gap, window_read = await self._read_from_last(
                voice,
                place_id,
                channel,
                last,
                cutoff,
                found,
                replied,
                reading.unread,
                reading.voiceless,
                joined,
                reading.refused,
            )
            reading.too_old |= gap
            if window_read:
                if place_id not in reading.unread and place_id not in reading.refused:
                    await self._read_through(reading, place_id, _sent_at(last), began)
                return
        try:
            async for message in channel.history(limit=None, after=start, oldest_first=True):
                # Up to the newest note handled, only the left-over notes are to answer: the
                # others were answered, or turned away on purpose (a flood).
                if last is not None and message.id <= last and message.id not in left_here:
                    self._sort(voice, message, {}, replied)
                else:
                    self._sort(voice, message, found, replied, reading.voiceless, joined)
        except (discord.HTTPException, discord.RateLimited) as exc:
            self._not_read(place_id, "read", exc, reading.unread, reading.refused)
            return
        await self._read_through(
            reading, place_id, start if isinstance(start, datetime.datetime) else _sent_at(start.id), began
        )

    async def _read_through(
        self, reading: _Reading, place_id: int, start: datetime.datetime, began: int
    ) -> None:
        """The place was read to the present from `start`, the read begun when `began` writes had
        owed places: what this catch-up owed there is paid, as is what an earlier one owed from
        then on, unless it was owed again since the read began (`_pays`)."""
        if not self._pays(place_id, began):
            return
        ledger = self.bot.core.notes
        since = min(start, reading.window_start).timestamp()
        await self._keep_owed(ledger.read_through(place_id, since, reading.cutoff.timestamp()))

    async def _owe_on_disk(self, write: Awaitable[None], rows: Iterable[int]) -> None:
        """`write`, which owes `rows` of owed_reads on disk (see `_last_owed`)."""
        self._owe_writes += 1
        for row in rows:
            self._last_owed[row] = self._owe_writes
        await self._keep_owed(write)

    def _pays(self, row: int, began: int) -> bool:
        """Whether a read or listing begun when `began` writes had owed places may pay `row`: not
        if a catch-up owed it again since, whose notes (a gateway's gap) that read may have been
        over before."""
        if self._last_owed.get(row, 0) > began:
            return False
        self._last_owed.pop(row, None)
        return True

    async def _given_up(self, place_id: int) -> None:
        """Nothing is owed at `place_id` any more, whenever it was owed: a place gone is never
        read again to pay it, and its mark in `_last_owed` would stay for the life of the process."""
        self._last_owed.pop(place_id, None)
        await self._keep_owed(self.bot.core.notes.read_through(place_id, 0.0, 0.0))

    async def _keep_owed(self, write: Awaitable[None]) -> None:
        """Bookkeeping for a restart, which a disk that takes no writes must not hold back the notes
        found from: they are answered, unrecorded as the ledger allows."""
        try:
            await write
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            self._owed_unkept.failed(
                why, "could not keep the places the catch-up is to read in notes.db (%s)", why
            )
        else:
            self._owed_unkept.answered()

    async def _answer_found(
        self,
        reading: _Reading,
        found: dict[int, tuple[discord.Message, discord.Attachment]],
        replied: set[int],
    ) -> None:
        """Answer the notes `found` that nobody answered, oldest first: all of their players'
        notes the catch-up reads are among them."""
        ledger = self.bot.core.notes
        # A turn a killed process had started may have got its reply out before the process died;
        # a kept or released note may have had a "restarting" message, which is no answer.
        cut_short = {u.message_id for u in reading.leftovers if u.state == "started"} & replied
        if not found and not cut_short:
            return
        # Settled now: left 'started' by a dead owner, the recheck would fetch and answer them again.
        await ledger.answered_before_a_crash(sorted(cut_short))
        promised = {u.message_id for u in reading.leftovers}  # kept with a ⏳, or cut by a stop: answered
        reading.answered += await self._answer_unseen(reading.voice, found, cut_short, promised)

    async def _answer_unseen(
        self,
        voice: VoiceNotes,
        found: dict[int, tuple[discord.Message, discord.Attachment]],
        skip: set[int],
        promised: Set[int] = frozenset(),
    ) -> int:
        """Answer the notes `found` that the ledger does not know, but for those in `skip`, as far
        as the flood limit allows (see `_within_flood_limit`); how many."""
        seen = await self.bot.core.notes.seen(list(found))
        waiting = [found[m][0] for m in sorted(found) if m not in seen | skip]
        todo = self._within_flood_limit(voice, waiting, promised)
        for message_id in todo:  # oldest first: each player's lock keeps them in this order
            voice.schedule(*found[message_id])
        return len(todo)

    def _within_flood_limit(
        self, voice: VoiceNotes, messages: list[discord.Message], promised: Set[int]
    ) -> list[int]:
        """The notes to answer, oldest first: a player's notes beyond discord.flood_notes in any
        discord.flood_seconds of their sending (a script that kept sending while the bot was
        down) are turned away as they would have been live. Notes already promised an answer
        (kept during a shutdown, or cut by one) are answered whatever, and count. `messages` are
        those the ledger does not know as answered or claimed; of them, a note another path
        (the live event, another read) weighed first is left to it and does not count, unless
        promised: that path gave it back (Discord failed under its answer), and it waits for no
        recheck; the live limit holds it already."""
        first = {m.id for m in messages if voice.count_once(m.id)}
        messages = [m for m in messages if m.id in first or m.id in promised]
        limit = self.bot.discord_settings
        # Each note is weighed against its player's uses in the live limit: the notes answered
        # live or weighed at a stop, and those answered here, all by when Discord says they were
        # sent. Weighed apart, the notes a gateway gap hid would be answered on top of a window
        # the live notes had filled. Kept here too, not read back from the limit: it drops uses
        # catch_up_minutes + flood_seconds before its newest, and a live note stamped after this
        # read began (a long catch-up, a host clock behind Discord's) puts the oldest notes read
        # back that far, each one dropped as soon as it is counted.
        uses: dict[int, list[float]] = {}
        todo: list[int] = []
        answered: dict[int, int] = {}
        refused: list[discord.Message] = []
        for message in messages:
            author = message.author.id
            sent = message.created_at.timestamp()
            flood = voice.flood.get_bucket(message, sent)
            assert isinstance(flood, InAnyWindow)  # a per-user mapping makes one per player
            taken = uses.setdefault(author, flood.uses())
            if message.id not in promised and not room_for(
                taken, sent, limit.flood_notes, limit.flood_seconds
            ):
                refused.append(message)
                continue
            todo.append(message.id)
            answered[author] = answered.get(author, 0) + 1
            if message.id not in first:
                # Weighed before (the live path counted it, as sent) and given back: the uses hold
                # it already, and counted again one note would stand for two in the player's window.
                continue
            taken.append(sent)
            # A player whose notes were just read back and answered gets no fresh flood_notes for
            # the notes they send next.
            flood.count(sent)
        for message in refused:
            count = answered.get(message.author.id, 0)
            voice.turn_away(message, say.too_many_unseen(count))
        return todo

    async def take_back_restarting(self, channel: discord.abc.Messageable, note_id: int) -> None:
        """Delete the "restarting" line a stop told the note, found gone (by its fetch, or the
        deletion heard while it waited): it promises an answer that will not come, under a
        question its player took back. Looked for among the messages
        after the note, as `_replied_to` looks for an answer; not found, or not deleted, it stays."""
        me = self.bot.user
        if me is None or not may_read_history(channel):
            return  # without the read, a line there went unlinked, and cannot be told by its reference
        try:
            after = discord.Object(id=note_id)
            async for later in channel.history(limit=REPLY_SEARCH_AT_MOST, after=after, oldest_first=True):
                ref = later.reference
                if (
                    later.author.id == me.id
                    and ref
                    and ref.message_id == note_id
                    and later.content == say.RESTARTING
                ):
                    await later.delete()
                    log.info("note %s is gone: the restarting line told it deleted too", note_id)
                    return
        except (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, TimeoutError) as exc:
            log.info("note %s is gone: could not look for the restarting line told it: %r", note_id, exc)

    async def _replied_to(self, message: discord.Message, lease_until: float | None) -> bool:
        """Whether a message of the bot's answers `message`. Its turn's reply went out between the
        note and the end of its claim's lease (a claim outlives any turn, note_ledger.LEASE_SECONDS),
        so that span is read, however many messages a busy channel put in it; not the whole history
        since. The claim, not the note, starts the clock: a note is claimed before it waits in its
        player's queue, and a catch-up claims notes sent up to catch_up_minutes before.

        Discord's failure of the read is raised, for the next recheck to look again (answered
        twice only if it was not); so is its refusal, which means the bot no longer views the
        channel (without Read Message History the read is empty, not refused): a reply there
        would be refused too."""
        me = self.bot.user
        end = None
        if lease_until is not None:
            end = datetime.datetime.fromtimestamp(lease_until, datetime.UTC) + CLOCK_MARGIN
        read = 0
        async for later in message.channel.history(limit=None, after=message, before=end, oldest_first=True):
            ref = later.reference
            if me and later.author.id == me.id and ref and ref.message_id == message.id:
                if not _told_before_the_answer(later):
                    return True
            read += 1
            if read >= REPLY_SEARCH_AT_MOST:
                # A read must end somewhere: answered twice rather than perhaps never.
                log.warning(
                    "note %s: no reply of mine in the %d messages after it; answering it again",
                    message.id,
                    read,
                )
                return False
        return False

    def _sort(
        self,
        voice: VoiceNotes,
        message: discord.Message,
        found: dict[int, tuple[discord.Message, discord.Attachment]],
        replied: set[int],
        voiceless: dict[int, discord.Message] | None = None,
        joined: datetime.datetime | None = None,
    ) -> None:
        """`message` into `found` if it is a note to answer, or into `voiceless` if it is a voice
        message with no note to hear; a reply of the bot's into `replied`. `joined`: when the bot
        joined the private thread `message` is in (see `_bot_joined`)."""
        me = self.bot.user
        if me is not None and message.author.id == me.id:
            if message.reference and message.reference.message_id and not _told_before_the_answer(message):
                replied.add(message.reference.message_id)
            return
        if message.author.bot:
            return
        # A message's id tells its time to the millisecond, a join's timestamp to the microsecond.
        joined = joined and joined.replace(microsecond=joined.microsecond // 1000 * 1000)
        if joined is not None and message.created_at < joined and not voice.addressed_to_me(message):
            return  # its thread's members' among themselves, before the bot was one of them
        notes = voice.voice_notes(message)
        if notes and voice.addressed_here(message):
            found[message.id] = (message, notes[0])
            voice.hold(message.id)  # answered once every place is read, perhaps long after
        elif voiceless is not None and voice.voiceless(message) and voice.addressed_here(message):
            voiceless[message.id] = message

    async def _say_voiceless(self, voice: VoiceNotes, messages: dict[int, discord.Message]) -> None:
        """The voice messages read back with no note to hear, said in the log and told to their
        players as the live path does; not those the ledger knows (a player told already) or
        another path met first (the live event)."""
        if not messages:
            return
        seen = await self.bot.core.notes.seen(list(messages))
        for message_id in sorted(messages):
            if message_id not in seen and voice.count_once(message_id):
                voice.say_voiceless(messages[message_id])

    async def _read_from_last(
        self,
        voice: VoiceNotes,
        place_id: int,
        channel: discord.abc.Messageable,
        last: int,
        cutoff: datetime.datetime,
        found: dict[int, tuple[discord.Message, discord.Attachment]],
        replied: set[int],
        unread: set[int],
        voiceless: dict[int, discord.Message],
        joined: datetime.datetime | None = None,
        refused: dict[int, tuple[str, bool]] | None = None,
    ) -> tuple[set[int], bool]:
        """One read from the last note handled, in a place quiet since before the window: the
        notes before the window's edge are only counted (up to COUNT_AT_MOST), those after it are
        sorted into `found`. Returns the notes too old to answer, and whether the window was read
        too (not when the count ran out first). A place with nothing new, most players' DMs at a
        start, costs one request."""
        gap: dict[int, tuple[discord.Message, discord.Attachment]] = {}
        counted = 0
        try:
            async for message in channel.history(
                limit=None, after=discord.Object(id=last), oldest_first=True
            ):
                if message.created_at >= cutoff:
                    self._sort(voice, message, found, replied, voiceless, joined)
                    continue
                counted += 1
                if counted > COUNT_AT_MOST:  # a busy channel: the window is read from its edge
                    return set(gap) - replied, False
                self._sort(voice, message, gap, replied, joined=joined)
        except (discord.HTTPException, discord.RateLimited) as exc:
            self._not_read(place_id, "read", exc, unread, refused)
        return set(gap) - replied, True

    async def _bot_joined(self, channel: discord.abc.Messageable) -> datetime.datetime | None:
        """When the bot joined `channel`, a private thread it may see only as a member (it may not
        manage threads there): Discord showed it none of the notes sent there before, which were
        not for it. None for any other place. The thread member comes with a thread Discord
        lists as active (GUILD_CREATE) or serves by id; an archived thread's listing carries
        none that discord.py keeps, so it is asked for (one request). Raises Discord's errors,
        but that the bot is no member (10007): then nothing sent there so far was for it."""
        if not isinstance(channel, discord.Thread) or channel.type is not discord.ChannelType.private_thread:
            return None
        me = channel.guild.me
        if me is not None and channel.parent is not None and channel.permissions_for(me).manage_threads:
            return None
        if channel.me is not None:
            return channel.me.joined_at
        assert self.bot.user is not None  # logged in before any catch-up
        try:
            member = await channel.fetch_member(self.bot.user.id)
        except discord.NotFound:
            return discord.utils.utcnow()
        return member.joined_at

    def _threads_of(self, channels: set[int]) -> set[int]:
        """The active threads under the watched channels, a forum's posts among them. A channel's
        history holds none of its threads' messages, and a forum has no history of its own."""
        return {t.id for guild in self.bot.guilds for t in guild.threads if t.parent_id in channels}

    async def _archived_threads(
        self, channels: set[int], since: datetime.datetime, unlisted: set[int]
    ) -> dict[int, discord.Thread]:
        """The threads under the watched channels archived since `since` (by a moderator, or by
        Discord after a quiet spell) and still archived: neither GUILD_CREATE nor discord.py's
        cache lists them, and a note posted before the archive is still unanswered. Discord lists
        public ones, and with Manage Threads all private ones, newest archive first, so those
        listings stop at the first one archived before `since`: its notes are all older than
        that. Without Manage Threads, the private ones the bot joined (it is added when a player
        mentions or invites it, so they hold every private thread a note could address it in)
        are listed by thread id instead, newest made first, and a thread made long ago may have
        been archived a minute ago: that listing is read to its end. A thread archived since has
        had no note since, as a message would have unarchived it. A locked one is left quietly: a
        reply there is refused (50083). A channel whose listing Discord failed goes in `unlisted`,
        to be listed again."""
        found: dict[int, discord.Thread] = {}
        for channel_id in sorted(channels):
            channel = self.bot.get_channel(channel_id)
            if not isinstance(channel, discord.TextChannel | discord.ForumChannel):
                continue  # a voice or stage channel's chat has no threads; a DM, none either
            perms = channel.permissions_for(channel.guild.me)
            if not perms.read_message_history:
                continue  # the channel's own read says so in the log
            # (listing, whether it comes newest archive first)
            listings = [(channel.archived_threads(limit=None), True)]
            # An announcement channel or a forum has no private threads.
            if isinstance(channel, discord.TextChannel) and channel.type is discord.ChannelType.text:
                if perms.manage_threads:
                    listings.append((channel.archived_threads(limit=None, private=True), True))
                else:
                    joined = channel.archived_threads(limit=None, private=True, joined=True)
                    listings.append((joined, False))
            listed = True
            for listing, by_archive in listings:
                try:
                    async for thread in listing:
                        if thread.archive_timestamp < since:
                            if by_archive:
                                break
                            continue
                        if thread.locked:
                            log.debug("catch-up skips thread %s: archived and locked", thread.id)
                        elif self.bot.get_channel(thread.id) is None:  # not active again meanwhile
                            found[thread.id] = thread
                except (discord.HTTPException, discord.RateLimited) as exc:
                    listed = False
                    if discords_trouble(exc):
                        self._not_read(channel_id, "list the archived threads of", exc, unlisted)
                        continue
                    # Its other listing would be refused too: each 403 counts toward Cloudflare's ban.
                    self._say_refusal(
                        -channel_id,
                        "catch-up could not list the archived threads of channel %s: %s",
                        channel_id,
                        _why(exc),
                    )
                    break
            if listed:
                self._refusals_said.pop(-channel_id, None)  # refused again later, it is said again
        return found

    def _not_read(
        self,
        place_id: int,
        what: str,
        exc: discord.HTTPException | discord.RateLimited,
        unread: set[int],
        refused: dict[int, tuple[str, bool]] | None = None,
    ) -> None:
        """A place Discord did not let the catch-up read. Discord's trouble leaves it in `unread`,
        read again at every recheck until Discord serves it, and is said once for every place it
        fails (the catch-up owed names them); a refusal goes in `refused` (see `_refused`), or
        without it is said each time."""
        why = _why(exc)
        if not discords_trouble(exc):
            if refused is not None:
                refused[place_id] = (why, isinstance(exc, discord.NotFound))
                return
            log.warning("catch-up could not %s channel %s: %s", what, place_id, why)
            return
        unread.add(place_id)
        self._said_trouble(exc, "catch-up could not %s channel %s: %s", what, place_id, why)

    def _said_trouble(
        self, exc: discord.HTTPException | discord.RateLimited, msg: str, *args: object
    ) -> None:
        reason = _trouble_reason(exc)
        said = reason in self._reasons_said
        remember(self._reasons_said, reason, None, MAX_REASONS)
        log.log(logging.DEBUG if said else logging.WARNING, msg, *args)

    async def _channel(
        self, place_id: int, dm: bool = False, unread: set[int] | None = None
    ) -> discord.abc.Messageable | None:
        """The place to read; None when it is gone or hidden from the bot, or Discord failed to
        say (then in `unread`, for the catch-up to be tried again; raised without `unread`)."""
        channel = self.bot.get_channel(place_id)
        if channel is None and dm:
            # Not cached after a restart; a DM needs no fetch to be read (one request less each).
            return self.bot.get_partial_messageable(place_id, type=discord.ChannelType.private)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(place_id)
            except (discord.HTTPException, discord.RateLimited) as exc:
                if discords_trouble(exc):
                    if unread is None:
                        raise
                    self._not_read(place_id, "look up", exc, unread)
                else:  # deleted, or no longer visible to the bot
                    log.info("catch-up skips channel %s: %s", place_id, _why(exc))
                return None
        if not isinstance(channel, discord.abc.Messageable):
            return None
        return channel


class Every:
    """`work` run again `seconds` after each run ends, by the event loop's monotonic clock.

    discord.py's tasks.loop aims each run at the last one's wall-clock time plus `seconds`: a run
    that overran (a catch-up reading many places through an outage), a host resumed from sleep or
    a clock set forward is made up for there by as many runs back to back as were missed, each
    asking Discord and writing to disk with no pause (a day's suspend: 2,880 at 30 s); a clock set
    back holds the next run back as long, and with it the notes it answers."""

    def __init__(self, seconds: float, work: Callable[[], Awaitable[None]], name: str) -> None:
        self.seconds = seconds
        self.name = name
        self._work = work
        self._task: asyncio.Task[None] | None = None
        self.current_loop = 0  # runs ended (not one cancelled with the loop)
        self.under_way = False  # a run has begun and not ended
        # A fault that fails every run (a broken file, a bug) is said once with its traceback, not
        # every `seconds` for as long as it lasts.
        self._failures = Outage(log, "%s works again", level=logging.ERROR)

    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.is_running():
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancel the runs and wait for the one under way to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def _run(self) -> None:
        while True:
            self.under_way = True
            try:
                await self._work()
            except asyncio.CancelledError as exc:
                if (me := asyncio.current_task()) is None or me.cancelling():
                    raise  # cancelled itself: the cog unloaded, the bot closing
                # Raised by something a run awaited that another task cancelled: it would end the
                # recheck unsaid for the life of the process, and the notes kept for it with it.
                self._failed(exc)
            except Exception as exc:  # never ends by itself: the next run may find the trouble gone
                self._failed(exc)
            else:
                self._failures.answered(self.name)
            finally:
                self.under_way = False
            self.current_loop += 1
            if (me := asyncio.current_task()) is not None and me.cancelling():
                # A stop the run swallowed (Python 3.11's asyncio.wait_for may, as its inner future
                # ends): sleeping on would have stop(), and the bot's close with it, wait for ever.
                raise asyncio.CancelledError
            await asyncio.sleep(self.seconds)

    def _failed(self, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}"
        self._failures.failed(
            why, "%s failed (%s); tried again every %g s", self.name, why, self.seconds, exc_info=exc
        )


class PlacesUnread(Exception):
    """Places a catch-up could not read for Discord's trouble, and channels whose archived threads
    it could not list: the notes sent there are still to answer, so the catch-up is owed again for
    them (the ledger keeps it from answering any note twice)."""

    def __init__(self, places: Set[int] | None, unlisted: Set[int] = frozenset()) -> None:
        """`places` None: a catch-up of every place is owed (one failed for another reason)."""
        if places is None:
            said = "every place to read again"
        else:
            said = f"{len(places)} place(s) not read: {', '.join(map(str, sorted(places)))}" if places else ""
        if unlisted:
            listed = f"archived threads not listed in {', '.join(map(str, sorted(unlisted)))}"
            said = f"{said}; {listed}" if said else listed
        super().__init__(said)
        self.places, self.unlisted = places, unlisted


@dataclass
class _Reading:
    """What the reads of one catch-up share."""

    voice: VoiceNotes
    since: datetime.datetime | None
    cutoff: datetime.datetime
    window_start: datetime.datetime
    leftovers: list[Unanswered]
    archived: dict[int, discord.Thread]
    dms: set[int]
    owed: dict[int, float]  # places owed a read on disk (NoteLedger.owe_reads) as it began
    too_old: set[int]  # notes too old to answer: left over, or counted in a read
    watched: set[int]  # places read for a reason of their own, not only as owed on disk
    # Voice messages with no note to hear (no audio, no waveform), by id: said as the live path says them.
    voiceless: dict[int, discord.Message] = field(default_factory=dict)
    unread: set[int] = field(default_factory=set)  # places Discord's trouble (not a refusal) kept unread
    # Places Discord refuses to show the bot (or would: no Read Message History), with why, and
    # whether the place is gone (404).
    refused: dict[int, tuple[str, bool]] = field(default_factory=dict)
    answered: int = 0  # notes sent to be answered
    began_at: float = field(default_factory=time.time)  # Unix time, as the ledger's places are heard


@dataclass(frozen=True)
class Owed:
    """A catch-up still to do: from `since` (see `_covers`), of `places` (None: every place) and
    the archived threads of the watched channels in `listings` (every one with every place)."""

    since: datetime.datetime | None
    places: frozenset[int] | None = None
    listings: frozenset[int] = frozenset()
    owed_at: int = field(default=0, compare=False)  # CatchUp._owings when it was last added to


def _still_owed(owed: list[Owed], done: Owed, failed: Owed | None, began: int = 0) -> list[Owed]:
    """What is owed once the catch-up `done` ran, leaving `failed` of it unread. A start-up's
    catch-up and a gateway outage's are owed apart, since neither reads all the other would
    (`_covers`); of one kind, what `done` read is paid if it read as far back, and what failed
    is owed, from the earlier of the two `since`s where they meet. Only what was owed by `began`
    is paid."""
    start_up = done.since is None
    same = next((o for o in owed if (o.since is None) == start_up), None)
    left = [o for o in owed if (o.since is None) != start_up]
    if still := _paid(same, done, failed, began):
        left.append(still)
    return sorted(left, key=lambda o: o.since is not None)


def _paid(owed: Owed | None, done: Owed, failed: Owed | None, began: int) -> Owed | None:
    """`_still_owed` for catch-ups of one kind."""
    if owed is not None and owed.owed_at <= began and _covers(done.since, owed.since):
        if done.places is None:
            owed = None
        elif owed.places is not None:
            left = replace(owed, places=owed.places - done.places, listings=owed.listings - done.listings)
            owed = left if left.places or left.listings else None
    if owed is None or failed is None:
        return owed or failed
    since = owed.since if _covers(owed.since, failed.since) else failed.since
    places = None if owed.places is None or failed.places is None else owed.places | failed.places
    return Owed(since, places, owed.listings | failed.listings, max(owed.owed_at, failed.owed_at))


def _say_troubled(troubled: list[tuple[str, int, str]]) -> None:
    """One warning for the kept notes a recheck met Discord's trouble with for the first time."""
    if len(troubled) == 1:
        log.warning("could not %s %s: %s", *troubled[0])
    elif troubled:
        log.warning(
            "could not %s %s: %s; nor %d more note(s) left unanswered, tried again at the next recheck",
            *troubled[0],
            len(troubled) - 1,
        )


def _edge_refuses_the_bot(exc: discord.HTTPException | discord.RateLimited) -> bool:
    """Whether Cloudflare, not Discord's API, refused the request (429 for its ban of the bot's
    address after too many invalid requests, 403 for its firewall): every request meets it."""
    return isinstance(exc, discord.HTTPException) and exc.status in (403, 429) and from_the_edge(exc)


def _trouble_reason(exc: discord.HTTPException | discord.RateLimited) -> str:
    """What one of Discord's troubles is said once for: a rate limit's length changes each time."""
    return "rate limited" if isinstance(exc, discord.RateLimited) else _why(exc)


def _why(exc: discord.HTTPException | discord.RateLimited) -> str:
    if isinstance(exc, discord.RateLimited):
        return limited_for(exc)
    text = exc.text
    if from_the_edge(exc) and ("\n" in text or len(text) > EDGE_TEXT_AT_MOST):
        text = "an HTML page from Discord's edge (Cloudflare)"  # kilobytes of markup, no reason in it
    return f"{exc.status} {text}"


def _guild_missing(channel: discord.abc.Messageable) -> bool:
    """A guild channel whose guild discord.py has not had (unavailable in an outage at the start,
    the channel fetched by id): with no member for the bot, its permissions there are unknown."""
    return isinstance(channel, discord.abc.GuildChannel | discord.Thread) and channel.guild.me is None


def _covers(since: datetime.datetime | None, other: datetime.datetime | None) -> bool:
    """Whether a catch-up from `since` reads all one from `other` would. None, a start-up's, reads
    each place from its newest note answered before the start, and an outage's (from when the
    gateway went quiet) only since then; but a start-up's still running when the gateway dropped
    may have read a place before the notes sent in the outage: neither covers the other."""
    if since is None or other is None:
        return since is other
    return since <= other


def _told_before_the_answer(said: discord.Message) -> bool:
    return said.content in TOLD_BEFORE_THE_ANSWER


def _cut_past_the_nonces(left: Unanswered) -> bool:
    """Whether the note's turn (by a process now dead) may have posted longer ago than Discord
    keeps a nonce: the answer kept for it, sent again, would be posted twice, not returned."""
    after = left.posted_after()
    return left.state == "started" and after is not None and time.time() - after > NONCE_SECONDS


def _sent_at(message_id: int) -> datetime.datetime:
    return discord.utils.snowflake_time(message_id)


async def setup(bot: VoxdeskBot) -> None:
    await bot.add_cog(CatchUp(bot))
