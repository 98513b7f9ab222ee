"""/grievance status | list | file: the same tools the agent uses, typed instead of spoken."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import sqlite3
import time
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import sentences as say
from bot.instants import instant
from bot.tools import (
    CATEGORIES,
    TICKET_KEY,
    blank,
    clipped,
    complaint_key,
    filing_turn,
    readable_grievances,
    ticket_rows,
    too_short,
    typed_key,
)
from bot.tools.base import ToolCall, ToolError
from bot.tools.grievance_store import FINISHED_STATUSES, RESUBMIT_SECONDS
from cogs.bot import SENDING, SendClock, VoxdeskBot
from cogs.interactions import answer_privately, caller
from cogs.limits import InAnyWindow, Limits
from cogs.replies import limited_for, literal

log = logging.getLogger(__name__)
_call_ids = itertools.count(1)

# A typed list is read, not heard: every ticket a player may plausibly have, in follow-ups when it
# runs long. The bound keeps Jira's search to one modest page.
MAX_SHOWN = 50
# Per player, as the web playground holds its ticket views: more than a person asks for.
LOOKUPS, LOOKUP_SECONDS = 20, 60.0
# A double submit is told the first ticket instead of opening a second: the same player, category
# and words (case and spaces folded, as a voice note's repeats are), within RESUBMIT_SECONDS, while
# that ticket is not finished.
# How often a repeat looks again while another process files its words (the grievance store's
# claim on them): a double submit is rare, and the first filing takes a second or two.
WAIT_FOR_FILING_SECONDS = 0.25
# What a filing left for a repeat of it: its ticket key, or the answer it had when kept for later.
Filed = tuple[str | None, str | None]


def shown_time(stamp: str) -> str:
    """A ticket's time as a Discord timestamp, which each player's client shows in their own
    time zone; a time that cannot be read is shown as it is."""
    try:
        at = instant(stamp)
    except ValueError:
        return stamp
    return discord.utils.format_dt(at, "f")


def describe_tickets(result: dict[str, Any]) -> str:
    if "error" in result:
        return say.LOOKUP_FAILED.format(reason=result["error"])
    tickets = result.get("tickets") or []
    if not tickets:
        return result.get("message") or say.NO_TICKETS_YET
    if result.get("more"):
        heading = say.TICKETS_HEADING_NEWEST.format(count=len(tickets))
    elif len(tickets) > 1:
        heading = say.TICKETS_HEADING.format(count=len(tickets))
    else:
        heading = say.TICKET_HEADING
    lines = [heading]
    # Open ones first, each group newest first as the backends list them.
    for t in sorted(tickets, key=lambda t: t["status"] in FINISHED_STATUSES):
        line = say.TICKET_ROW.format(
            ticket_key=t["ticket_key"],
            category=literal(t["category"].replace("_", " ")),
            status=literal(say.status_said(t["status"])),
            updated=shown_time(str(t.get("last_update", ""))),
        )
        if t.get("summary"):
            line += f"\n> {literal(t['summary'])}"
        if t.get("note"):
            line += f"\n_{t['note']}_"
        lines.append(line)
    return "\n".join(lines)


class Grievances(commands.GroupCog, group_name="grievance", group_description="Your support tickets"):
    def __init__(self, bot: VoxdeskBot) -> None:
        self.bot = bot
        s = bot.discord_settings
        # Each /grievance file opens a new ticket (in Jira too, when it is on): held to the same
        # per-player limit as voice notes, so a script cannot bury the desk. Both limits are timed
        # by time.monotonic(): a host clock set back would hold a player as long.
        self.filings = Limits(
            InAnyWindow(s.flood_notes, s.flood_seconds), lambda interaction: interaction.user.id
        )
        # Each /grievance status or list searches Jira, when it is on, in the threads every
        # player's lookups share: a script re-running it would keep the others waiting.
        self.lookups = Limits(InAnyWindow(LOOKUPS, LOOKUP_SECONDS), lambda interaction: interaction.user.id)
        # (player, category, folded words) -> (when, the first filing: its ticket key, or the
        # answer it had when the store kept it for later; both None when it filed nothing).
        self.recent: dict[tuple[str, str, str], tuple[float, asyncio.Future[Filed]]] = {}

    def _too_soon(self, interaction: discord.Interaction) -> str | None:
        retry_after = self.lookups.update_rate_limit(interaction, time.monotonic())
        if not retry_after:
            return None
        log.info("flood: /grievance lookup from %s refused", interaction.user.id)
        return say.TICKETS_TOO_FAST.format(wait=say.wait_of(retry_after))

    async def _run(
        self, interaction: discord.Interaction, tool: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        call = ToolCall(id=f"slash_{next(_call_ids)}", name=tool, arguments=arguments)
        context = dataclasses.replace(caller(interaction), answered_once=True)
        result = await self.bot.core.toolbox.run(context, call)
        return result.result

    async def _every_ticket(self, interaction: discord.Interaction) -> str:
        # Not the tool: it lists the few newest, for a spoken answer.
        asking = caller(interaction)
        try:
            found = await readable_grievances(self.bot.core.grievances, asking, limit=MAX_SHOWN + 1)
        except ToolError as exc:
            return describe_tickets({"error": str(exc)})
        rows = ticket_rows(found[:MAX_SHOWN], private=asking.private)
        return describe_tickets({"tickets": rows, "more": len(found) > MAX_SHOWN})

    async def _filed_before(
        self, interaction: discord.Interaction, words: tuple[str, str, str], described: tuple[str, str]
    ) -> str | None:
        """The answer to these words filed within RESUBMIT_SECONDS (its ticket still open) or kept
        for later (a spool line files them once), waiting for a filing of them in flight; None:
        file them."""
        while (earlier := self.recent.get(words)) is not None:
            at, filing = earlier
            # A filing still running is waited for however long it has run: filed over, it would
            # be a second ticket. The wait ends with this command's, which answer_privately gives
            # up before its token ends.
            if not filing.done():
                await asyncio.shield(filing)
                continue  # read again: a failed filing leaves the place to the next
            if time.monotonic() - at >= RESUBMIT_SECONDS:
                return None
            key, kept = filing.result()
            if kept is not None:
                return kept
            if key is None:
                return None
            finished = await self._finished(interaction, key, words, described)
            if self.recent.get(words) is not earlier:
                continue  # another repeat filed meanwhile, after the same lookup: its filing is told
            if finished:
                return None
            return say.SLASH_ALREADY_FILED.format(ticket_key=key)
        return None

    async def _finished(
        self,
        interaction: discord.Interaction,
        key: str,
        words: tuple[str, str, str],
        described: tuple[str, str],
    ) -> bool:
        try:
            found = await self._run(interaction, "get_grievance_status", {"ticket_key": key})
        except asyncio.CancelledError:
            # A stop while the ticket was looked up: resolved, it is a complaint come back, and its
            # player is told it is kept. Filed twice, should the ticket be open, rather than lost.
            store = self.bot.core.grievances.local_store
            store.keep_cut_short(words[0], *described, filing_turn("discord", str(interaction.id)))
            raise
        tickets = found.get("tickets") or []
        # A lookup that fails is no reason to file twice: the ticket is minutes old.
        return bool(tickets) and tickets[0].get("status") in FINISHED_STATUSES

    async def _filed_lately(
        self, interaction: discord.Interaction, words: tuple[str, str, str], described: tuple[str, str]
    ) -> tuple[str, Filed] | None:
        """As `_filed_before`, from the grievance store's record, which a restart or another bot
        on the storage folder (a deploy's overlap) shares: the answer and what it tells of the
        filing; None: these words are claimed for this command, to file."""
        store = self.bot.core.grievances.local_store
        turn = filing_turn("discord", str(interaction.id))
        finished: set[str] = set()
        holder = turn  # the turn whose filing the complaint is, should it be cut short here
        while True:
            try:
                found = await store.claim_words(
                    words[0], words[1:], turn, RESUBMIT_SECONDS, frozenset(finished)
                )
                if found.busy:
                    holder = found.turn or turn
                    await asyncio.sleep(WAIT_FOR_FILING_SECONDS)
                    continue
            except asyncio.CancelledError:
                # A shutdown while the database was busy, or the command given up (its player told
                # the complaint is kept) while another filing of these words still ran, and may yet
                # fail: the complaint is in no store yet. Kept as one of that filing's turn, it is
                # filed once whichever lands first, that filing or the spool's.
                store.keep_cut_short(words[0], *described, holder)
                raise
            except sqlite3.Error as exc:
                # Filed, or kept, all the same; this process's memory tells its own repeats.
                log.warning("could not check %s's filing against those of other processes: %s", words[0], exc)
                return None
            if found.kept is not None:
                return found.kept, (None, found.kept)
            elif found.key is None:
                return None
            elif await self._finished(interaction, found.key, words, described):
                finished.add(found.key)
            else:
                return say.SLASH_ALREADY_FILED.format(ticket_key=found.key), (found.key, None)

    async def _settle(
        self, interaction: discord.Interaction, words: tuple[str, str, str], filed: Filed
    ) -> None:
        key, kept = filed
        turn = filing_turn("discord", str(interaction.id))
        try:
            await self.bot.core.grievances.local_store.settle_words(
                words[0], words[1:], turn, key is not None, kept
            )
        except sqlite3.Error as exc:
            # Its claim lapses: a repeat after that files, as it would have without the claim.
            log.warning("could not record how %s's filing ended: %s", words[0], exc)

    def _filing(self, words: tuple[str, str, str]) -> asyncio.Future[Filed]:
        now = time.monotonic()
        for old in [w for w, (at, f) in self.recent.items() if now - at >= RESUBMIT_SECONDS and f.done()]:
            del self.recent[old]
        filing: asyncio.Future[Filed] = asyncio.get_running_loop().create_future()
        self.recent[words] = (now, filing)
        return filing

    @app_commands.command(name="status", description="The status of your tickets, or of one of them")
    @app_commands.describe(ticket="A ticket key like GRV-12; leave it out for all your tickets")
    async def status(self, interaction: discord.Interaction, ticket: str | None = None) -> None:
        typed = (ticket or "").strip()
        # Checked here: the tool's own refusal of a long one names the tool, for the model.
        a_key = bool(TICKET_KEY.match(typed_key(typed)))
        refused = self._too_soon(interaction) if a_key or not typed else None

        async def work() -> str:
            if refused:
                return refused
            if not typed:
                return await self._every_ticket(interaction)
            if not a_key:
                return say.NOT_A_TICKET_KEY.format(key=literal(clipped(typed)))
            return describe_tickets(
                await self._run(interaction, "get_grievance_status", {"ticket_key": typed})
            )

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="list", description="All your tickets")
    async def list_(self, interaction: discord.Interaction) -> None:
        refused = self._too_soon(interaction)

        async def work() -> str:
            return refused or await self._every_ticket(interaction)

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="file", description="Open a support ticket")
    @app_commands.describe(category="What it is about", description="What went wrong, in your own words")
    @app_commands.choices(
        category=[app_commands.Choice(name=c.replace("_", " "), value=c) for c in CATEGORIES]
    )
    async def file(
        self,
        interaction: discord.Interaction,
        category: app_commands.Choice[str],
        description: app_commands.Range[str, 5, 1000],
    ) -> None:
        # Before the flood counter: Discord counts spaces of any kind towards the minimum length,
        # and a slip of the keyboard (or a word alone) is not a ticket.
        empty, short = blank(description), too_short(description)
        asked_at = time.monotonic()
        filed: list[str] = []

        def repeat(answer: str) -> str:
            # A repeat told its first ticket filed nothing: it gives its filing back, and costs a
            # lookup instead (it looked the ticket up), so repeats alone stay bounded too.
            if not self.lookups.update_rate_limit(interaction, time.monotonic()):
                bucket = self.filings.get_bucket(interaction, asked_at)
                if isinstance(bucket, InAnyWindow):
                    bucket.uncount(asked_at)
            log.info("/grievance file from %s again: told the first filing", user_id)
            return answer

        async def work() -> str:
            if empty:
                return say.BLANK_DESCRIPTION
            if short:
                return say.DESCRIPTION_TOO_SHORT
            # Counted once Discord took the deferral, which the work waits for: a filing it refused
            # (the event reached the bot past its 3 s, or another process of this bot answered it)
            # files nothing, and the player, told "the application did not respond", tries again.
            if retry_after := self.filings.update_rate_limit(interaction, asked_at):
                log.info("flood: /grievance file from %s refused", interaction.user.id)
                return say.FILING_TOO_FAST.format(wait=say.wait_of(retry_after))
            words = (str(interaction.user.id), *complaint_key(category.value, description))
            described = (category.value, description.strip())
            before = await self._filed_before(interaction, words, described)
            if before is not None:
                return repeat(before)
            filing, key, kept = self._filing(words), None, None
            try:
                lately = await self._filed_lately(interaction, words, described)
                if lately is not None:
                    answer, (key, kept) = lately
                    return repeat(answer)
                result = await self._run(
                    interaction,
                    "register_grievance",
                    {"category": category.value, "description": description},
                )
                key = result.get("ticket_key")
                key = key if isinstance(key, str) else None
                if result.get("error") in (say.KEPT_FOR_LATER, say.HELD_FOR_LATER):  # not filed, not lost
                    kept = result["error"]
                # Not when cut short: its claim lapses, and a repeat finds it filed or spooled.
                await self._settle(interaction, words, (key, kept))
            finally:
                store = self.bot.core.grievances.local_store
                store.stop_renewing(words[0], words[1:], filing_turn("discord", str(interaction.id)))
                # The window runs from the answer, as the store's does: a filing that ran long has
                # repeats waiting on it, and each would otherwise file a second ticket.
                if self.recent.get(words, (0.0, None))[1] is filing:
                    self.recent[words] = (time.monotonic(), filing)
                filing.set_result((key, kept))
            if "error" in result:
                if kept is not None:
                    return kept
                return say.FILING_FAILED.format(reason=result["error"])
            filed.append(result["ticket_key"])
            # Recorded as told before the answer goes: a process ended once the answer reached
            # Discord, before it heard back, would leave it untold, and the next start would DM
            # the key the player just read. Undone below if Discord refuses the answer.
            await self.bot.core.news.heard_in_answer(user_id, "discord", str(interaction.id), filed)
            told_at[0] = time.monotonic()
            return say.SLASH_FILED.format(
                ticket_key=result["ticket_key"],
                category=category.name,
                status=say.status_said(result["status"]),
            )

        user_id = str(interaction.user.id)
        # Whether the answer's request went to Discord (one begun once the filing was told: the
        # defer is over by then): a stop that cuts it there has most likely told the key; one
        # that cuts it still waiting its turn behind a rate limit has not.
        clock, told_at = SendClock(), [float("inf")]
        sending = SENDING.set(clock)
        try:
            with self.bot.core.news.answers_once("discord", str(interaction.id)):
                # Deferred before anything is filed: a ticket is never filed for an interaction
                # Discord has already told the player did not respond.
                await answer_privately(
                    interaction,
                    work,
                    self.bot.discord_settings.defer_after_seconds,
                    say.CUT_SHORT_BY_RESTART,
                    too_slow=say.STILL_BUSY_FILING,
                    defer_first=True,
                    edit_later=False,  # a key the answer could not tell goes by ticket news instead
                )
        except (discord.HTTPException, aiohttp.ClientError, discord.RateLimited) as exc:
            if not filed:
                raise
            # Untold after all: ticket news DMs its key, as for a complaint filed late, rather
            # than the player file it again. The bot's work, as below: a stop waits for it.
            self._untell(user_id, interaction, filed)
            log.warning(
                "ticket %s filed for user %s, but the answer did not reach them (%s): ticket news will DM it",
                filed[0],
                user_id,
                limited_for(exc) if isinstance(exc, discord.RateLimited) else exc,
            )
        except asyncio.CancelledError:
            if filed and (clock.began is None or clock.began < told_at[0]):
                # Cut before its answer went out: untold after all, its key goes by DM.
                self._untell(user_id, interaction, filed)
            raise
        finally:
            SENDING.reset(sending)

    def _untell(self, user_id: str, interaction: discord.Interaction, filed: list[str]) -> None:
        """Give the keys an answer did not tell back to ticket news, which DMs them. The bot's
        work, which a stop waits for before it closes news.db; the command's own task is not."""
        untelling = self.bot.core.news.unheard_in_answer(user_id, "discord", str(interaction.id), filed)
        # Its writes wait on grievances.db and news.db, behind another process's write lock for
        # up to BUSY_SECONDS: what a stop does not wait out is owed on disk, done at the next start.
        keys = ", ".join(filed)
        undone = (
            f"giving ticket(s) {keys} back to ticket news: filed for user {user_id}, whose answer"
            " never told them, they will be DMed after the next start (unless keeping that was"
            " refused or cut, as logged)"
        )
        self.bot.track(untelling, finish=True, undone=undone)


async def setup(bot: VoxdeskBot) -> None:
    await bot.add_cog(Grievances(bot))
