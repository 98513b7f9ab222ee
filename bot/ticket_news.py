"""Ticket news: a player is told by DM when a grievance they were told is kept gets filed, when a
grievance reaches Jira late under a new key, and when one of their tickets changes status.

Finding news (`TicketNews.find`) has two sources:

- the grievance database's `news_events`, written by triggers (grievance_store.py), so a change
  made by anyone who writes the file counts: a grievance filed from the spool (its player never
  heard a key), a push to Jira that came only after Jira had failed (the key the player heard is
  not the one they will see from now on), and, when the local store is the ticket system, a
  status change, support staff's `UPDATE grievances SET status = ...` included;
- with Jira on, a poll of the players' issues updated since the last poll (JQL built only from
  validated values, jira_tracker.py), each compared with the status last known locally.

A grievance filed from the spool is not news yet while the turn that filed it is still to be
answered (`answering`: a voice note whose filing a shutdown cut, answered again after the
restart, where the filing id finds it): its news is held, and the answer that names its key
tells the player instead (`heard_in_answer`: the news is dropped, and the grievance is no longer
one whose key they never heard, so its news found later, or its push to Jira, is none either).
Held news goes out once the turn is settled without naming the key: answered by an apology, or
never answered again (too old). A slash command is never answered again: what it files is filed as
a grievance whose key its player has not heard, its news held while this process answers it
(`answers_once`) and dropped once the answer is out, so a process that ends in between (a kill, a
stop whose grace runs out, an answer Discord would not take) leaves the key to a DM. An answer
recorded as told that did not go after all gives its keys back (`unheard_in_answer`), owed first
in a `cursors` row: a giving back that a stop cuts, or a failure ends, is done by a later round.

A status is news when it differs from the one the player was last told (queued or sent) of that
ticket, or, with Jira, from the local copy they last heard: a ticket resolved, reopened and
resolved again is told each time, and one that flips and comes back before a round is told
nothing. Each piece of news is kept in news.db once, unique per (source, ticket, kind, status,
marker), the marker naming the change (its grievance event, or its Jira issue's `updated`):
finding the same change again (overlapping poll windows, a restart before a cursor was saved) adds
nothing. Once told, it is forgotten after a month, but for each player's newest piece of each ticket
(`NewsStore.prune`), the one a change is compared with.

Delivering (`TicketNews.deliver`) is at most once per piece of news: each player's due news is
claimed on disk ('pending' -> 'claimed') before anything is sent, under a lease naming the claiming
process (a `cursors` row, renewed at each claim and mark, CLAIM_LEASE_SECONDS), marked 'sending' on
disk just before its DM is tried (only a claim still this process's moves on: a process may have
given it back meanwhile, its lease over), and marked after. A crash after that mark leaves it
'sending', and it is never sent again: a lost DM is preferred to a repeated one (the player can
still ask `/grievance status`). The lease names such news too until how its DM went is recorded: a
start says how much a stopped process left 'sending', not counting what a live one is sending. News
a stop or unreadable preferences took before its DM was tried goes back to 'pending' for later, as
does a send that certainly never reached Discord (no connection). News left 'claimed' (news.db
refusing to give it back) is sent later, since no DM was tried for it: given back at each later
round of the same process, at its store's close, or, its process killed, by any process's round once
its lease is over (one ending further off than a lease taken now, written by a clock since stepped
back, is taken to end as that one would). A process starting on the same storage (a deploy
overlapping the running bot, `voxdesk ask`) gives back at once only claims no lease holds (an older
voxdesk's): a running bot's claim stays its own. A write news.db refuses for one player's news (how
their DM went), or any other fault in it, ends that player's delivery alone, logged as what failed
while doing what (and, once the DM was tried, how Discord took it): the round goes on to the
others'. A player with `/notify off` gets nothing: their news is marked 'muted', not kept for later.
A player whose DMs are closed is told so once, in the channel they last sent a voice note in, until
a DM to them goes through again.

The sending itself is the front end's (`Messenger`: cogs/news.py for Discord); the speech for a
spoken DM is made here, off the event loop, by the app's speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import json
import logging
import math
import os
import re
import secrets
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from bot import metrics
from bot import sentences as say
from bot.addresses import Addresses
from bot.audio import ReplyAudio
from bot.config import NewsSettings
from bot.db import add_missing_columns, first, opening, prune_due, while_locked, writing
from bot.instants import instant
from bot.logs import Outage
from bot.preferences import Preferences, PreferenceStore
from bot.speech.speakable import without_overrides
from bot.tools import USER_ID, cluster_start, filed_in, filing_turn
from bot.tools.grievance_store import GrievanceEvent, LocalGrievanceStore, iso_at, utc_now

log = logging.getLogger(__name__)

EVENT_BATCH = 500
DELIVER_BATCH = 200
MAX_ITEMS_PER_DM = 10  # more news for one player waits for the next round
MAX_ATTEMPTS = 5  # sends Discord failed or never got, before giving up on a piece of news
RETRY_SECONDS = 30.0
MAX_WINDOW_MINUTES = 7 * 24 * 60  # after a longer outage, older Jira changes are not news any more
# Searches at most in one Jira poll: one, and more while the window asked falls short of the
# cursor by Jira's clock (measured by the host's, stepped back, before Jira's first Date).
WINDOW_TRIES = 3
# A Date header is whole seconds, stamped before its answer travelled: Jira's clock read from it
# is behind by up to this much.
DATE_SLACK_SECONDS = 5.0
# A cursor further ahead of Jira's clock than this is not Jira's time (see TicketNews._window).
AHEAD_SECONDS = 60.0
# A 429's Retry-After quiets the Jira poll at most this long. The poll's window reopens as far
# back as the last poll, so a quiet loses no news, it only makes it late; a Retry-After of days
# (a proxy's, or an HTTP date from a clock far off) would make it days late, while one poll per
# quarter hour cannot prolong a limit Jira really means. Longer than the pusher's default cap
# (jira.max_backoff_seconds): a grievance not yet in Jira matters more than news of one.
MAX_QUIET_SECONDS = 15 * 60.0
# Told news is forgotten this long after it was found, far longer than a Jira poll looks back,
# but for each player's newest piece of each ticket (see NewsStore.prune).
KEEP_TOLD_SECONDS = 30 * 24 * 3600.0
# Where a player last sent a voice note, kept for their closed-DMs notice: one silent for this
# long is unlikely to read that channel.
KEEP_CHANNEL_SECONDS = 90 * 24 * 3600.0
PRUNE_EVERY_SECONDS = 3600.0
# How long a process's claim is its own after its last claim or mark (the lease in `cursors`, see
# NewsStore.claim): well past the seconds between one mark and the next (preferences, speech, a
# Discord rate limit waited out up to rate_limit_seconds). A lease that lapses under a live
# process (or only by the clock of another, minutes ahead) costs a DM made for nothing, never a
# second one: the process whose lease was taken over tries none of it ('trying' takes only a claim
# its lease row still names). A process killed with news claimed leaves it for this long; one that
# closes its store gives its claims back there and then.
CLAIM_LEASE_SECONDS = 180.0
# `cursors` rows naming the news each process holds claimed: one per process, `<prefix><claimant>`.
LEASE_PREFIX = "claims:"
# `cursors` rows naming an untelling owed (`TicketNews.unheard_in_answer`):
# `<prefix><user id>:<platform>:<request id>`, its value the keys as a JSON list.
UNTELL_PREFIX = "untell:"
SNIPPET_CHARS = 60
STATUS_CHARS = 40

# `{table}`: news.db's news table, by this name; the rebuild of an older file makes it under another.
NEWS_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    source TEXT NOT NULL,  -- local:<store id> | jira: whose key `ticket` is (GRV-5 differs in each)
    ticket TEXT NOT NULL,
    kind TEXT NOT NULL,  -- filed | moved | status
    status TEXT NOT NULL,  -- the status told
    text TEXT NOT NULL,
    -- pending | held | claimed | sending | sent | muted | dms_closed | failed | in_answer
    -- (held: waiting for the answer to a turn; in_answer: that answer named its key; claimed: taken
    -- for a DM not tried yet; sending: its DM tried, maybe sent)
    state TEXT NOT NULL DEFAULT 'pending',
    found_at TEXT NOT NULL,
    done_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL,
    error TEXT,
    held_for TEXT,  -- the filing id of the turn whose answer is to tell it (state 'held')
    -- which change of the ticket this is: its grievance event's id, or its Jira issue's `updated`
    -- ('' for a filing, told once)
    marker TEXT NOT NULL DEFAULT '',
    -- the DM it was first tried in, once a try failed: that try's first news id, kept over tries
    -- (its messages' nonce, though news of it is done meanwhile); last, where an older file gets it
    delivery INTEGER,
    UNIQUE (source, ticket, kind, status, marker)
);
"""
NEWS_COLUMNS = (
    "id, user_id, source, ticket, kind, status, text, state, found_at, done_at, attempts,"
    " next_try_at, error, held_for, delivery"
)
# The key of news.db files made before each change had a marker: a ticket back to a status told
# once could never be told it again.
OLD_KEY = ["source", "ticket", "kind", "status"]
# Raised with each change to the schema or to what `open` migrates: an older voxdesk then refuses
# the file instead of running on a schema it does not know.
SCHEMA_VERSION = 2
# news.db's indexes, made again on a rebuilt table. Each player's newest piece of every ticket is
# kept for ever, so the table grows with the tickets: news_by_user finds one player's (the desk's
# ticket page, and the prune's look for a newer piece) without reading every row.
NEWS_INDEXES = """
CREATE INDEX IF NOT EXISTS news_by_state ON news (state, id);
CREATE INDEX IF NOT EXISTS news_by_user ON news (user_id, source, ticket, id);
"""
SCHEMA = (
    NEWS_TABLE.format(table="news")
    + f"""
{NEWS_INDEXES}
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS last_channel (
    user_id TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,  -- where the player last sent a voice note the bot answers
    at TEXT NOT NULL
);
-- players told in a channel that their DMs are closed; cleared when a DM to them goes through
CREATE TABLE IF NOT EXISTS dms_closed (user_id TEXT PRIMARY KEY, told_at TEXT NOT NULL);
"""
)


class Outcome(enum.Enum):
    SENT = "sent"
    DMS_CLOSED = "dms_closed"  # Discord refused: the player accepts no DMs from the bot
    RETRY = "retry"  # Discord failed (5xx, 429, no connection or a broken one): tried again
    FAILED = "failed"  # refused, or maybe sent: never tried again


@dataclass(frozen=True)
class NewsItem:
    id: int
    user_id: str
    source: str
    ticket: str
    kind: str
    status: str
    text: str
    attempts: int
    # When a failed try is due again: the same for every piece of that try's DM, and None for
    # news never tried.
    next_try_at: float | None = None
    delivery: int | None = None  # the DM it was first tried in (news.delivery), None if never tried


# A NewsItem's fields, in its order, as the queries that make one select them.
ITEM_COLUMNS = ", ".join(f.name for f in fields(NewsItem))


@dataclass(frozen=True)
class Delivery:
    """One DM to one player: all their due news, in their reply style."""

    user_id: str
    text: str
    audio: ReplyAudio | None  # None for text-only players, or when speaking failed
    mode: str  # the player's /replies style: voice_and_text | voice | file | text
    items: tuple[NewsItem, ...]
    # Which DM this is, the same at every try of it whatever of its news is done meanwhile: the
    # first news id of its first try. None for a DM a voxdesk that kept no key tried (news tried,
    # news.delivery empty): that voxdesk's nonce was over the ids of its news.
    key: int | None


class Messenger(Protocol):
    """What a front end does for ticket news."""

    async def direct(self, delivery: Delivery) -> Outcome:
        """Send `delivery` to its player privately."""

    async def in_channel(self, user_id: str, channel_id: str, text: str) -> bool:
        """Post `text` for the player in a channel; False if it could not be posted."""


Speaker = Callable[[str, str | None], Awaitable[ReplyAudio]]
# Whether a turn (platform, request id: a Discord note's message id) is still to be answered.
Answering = Callable[[str, str], Awaitable[bool]]


# ---- what the player is told ----------------------------------------------------------------


_MARKS = re.compile(r"[`*_~|<>@#\\\[\]]")


def plain(text: str, limit: int) -> str:
    """Words from a database or Jira, fit for one line of a message: no markdown or mention
    characters, nor the brackets of a masked link, whose words would hide its address, nor a
    direction override; whitespace collapsed, at most `limit` characters. An address keeps every
    character (one made a space would link another page), and one that does not fit is left
    out, not cut."""
    words = " ".join(without_overrides(_unmarked(text)).split())
    if len(words) <= limit:
        return words
    kept = words[: cluster_start(words, limit - 1)].rstrip()
    for start, end in Addresses(words):
        # An address at the end, whole or not, would take the "…" into the link Discord makes.
        if start < len(kept) <= end:
            kept = kept[:start].rstrip()
    return kept + "…"


# Out of its angle brackets, an address is one still only with the scheme of one that needs none.
_BARE_SCHEMES = ("https://", "http://", "steam://")


def _unmarked(text: str) -> str:
    """`text` with its marks made spaces and its addresses kept whole, out of their brackets."""
    parts: list[str] = []
    at = 0
    for start, end in Addresses(text):  # as Discord finds them, in angle brackets or not
        address = text[start:end]
        if address.startswith("<"):
            address = address[1:-1]
            if not address.startswith(_BARE_SCHEMES):
                # Text now (<x:/@everyone>): its marks would make a mention, a masked link.
                address = _unmarked(address)
        parts += [_MARKS.sub(" ", text[at:start]), f" {address} "]
        at = end
    parts.append(_MARKS.sub(" ", text[at:]))
    return "".join(parts)


def when(iso: str) -> str:
    """2025-01-31T10:02:00Z as "31 Jan at 10:02 UTC"."""
    try:
        at = instant(iso).astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: a time zone takes it before year 1 or past 9999
        return "earlier"
    return f"{at.day} {at:%b} at {at:%H:%M} UTC"


def filed_text(key: str, created_at: str, description: str, status: str) -> str:
    return say.NEWS_FILED.format(
        when=when(created_at),
        description=plain(description, SNIPPET_CHARS),
        key=key,
        status=plain(say.status_said(status), STATUS_CHARS),
    )


def reached_text(local_key: str, remote_key: str, status: str) -> str:
    """A ticket the player heard by its local key, in Jira at last (its key there may be the same)."""
    sentence = say.NEWS_REACHED_SAME_KEY if local_key == remote_key else say.NEWS_REACHED
    return sentence.format(
        old_key=local_key, new_key=remote_key, status=plain(say.status_said(status), STATUS_CHARS)
    )


def moved_text(old_key: str, new_key: str, status: str) -> str:
    """A Jira issue under another key: the same number under a new project key is the project
    renamed (re-keyed); another number, the issue moved to another project."""
    old_project, _, old_number = old_key.rpartition("-")
    new_project, _, new_number = new_key.rpartition("-")
    renamed = old_number == new_number and old_project != new_project
    sentence = say.NEWS_RENAMED if renamed else say.NEWS_MOVED
    return sentence.format(
        old_key=old_key, new_key=new_key, status=plain(say.status_said(status), STATUS_CHARS)
    )


def status_text(key: str, about: str, status: str) -> str:
    about = say.NEWS_ABOUT.format(about=plain(about, SNIPPET_CHARS)) if about.strip() else ""
    return say.NEWS_STATUS.format(key=key, about=about, status=plain(say.status_said(status), STATUS_CHARS))


def message_for(items: list[NewsItem]) -> tuple[str, str]:
    """(text, spoken words) of one DM carrying these pieces of news."""
    if len(items) == 1:
        return items[0].text, items[0].text
    text = say.NEWS_HEADING + "\n" + "\n".join(f"- {i.text}" for i in items)
    return text, say.NEWS_SPOKEN_HEADING + " " + " ".join(i.text for i in items)


# ---- what was found and told: news.db -------------------------------------------------------


async def _has_old_key(conn: aiosqlite.Connection) -> bool:
    keys = await conn.execute_fetchall("SELECT name FROM pragma_index_list('news') WHERE \"unique\" = 1")
    for (index,) in keys:
        columns = await conn.execute_fetchall(
            "SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index,)
        )
        if [c[0] for c in columns] == OLD_KEY:
            return True
    return False


async def rekey_news(conn: aiosqlite.Connection) -> None:
    """Give a news table of an older news.db its marker column and key, keeping every row (each
    an earlier change, marker ''). SQLite changes no table's UNIQUE constraint in place: the table
    is made again and its rows copied, in one transaction, so a stop half-way leaves the old one.
    Taken with BEGIN IMMEDIATE and looked at again: a second bot starting on the same storage
    waits, then finds it done."""
    if not await _has_old_key(conn):
        return
    await while_locked(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        if await _has_old_key(conn):
            rows = await conn.execute_fetchall("SELECT seq FROM sqlite_sequence WHERE name = 'news'")
            seq = first(rows)
            await conn.execute("DROP TABLE IF EXISTS news_rekeyed")
            await conn.execute(NEWS_TABLE.format(table="news_rekeyed"))
            await conn.execute(
                f"INSERT INTO news_rekeyed ({NEWS_COLUMNS}) SELECT {NEWS_COLUMNS} FROM news ORDER BY id"
            )
            await conn.execute("DROP TABLE news")
            await conn.execute("ALTER TABLE news_rekeyed RENAME TO news")
            for index in filter(str.strip, NEWS_INDEXES.split(";")):  # executescript would commit
                await conn.execute(index)
            if seq is not None:  # ids of news pruned since are not given out again
                await conn.execute(
                    "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'news'", (int(seq[0]),)
                )
            log.info("news.db: news table rebuilt to tell each change of a ticket apart")
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise


# What a player was told, oldest first (the desk's ticket page).
TOLD = "SELECT ticket, kind, status, state FROM news WHERE user_id = ? ORDER BY id"
# The states of news whose text a DM may still carry ('claimed' and 'sending' go back to pending
# when given back or put back for a retry).
TO_SEND = "('pending', 'held', 'claimed', 'sending')"

# A piece of news told (or given up) with a newer one of its ticket for its player: what pruning
# may drop. Each player's newest piece of a ticket stays, since `add` compares a change with it.
SUPERSEDED = (
    "state NOT IN ('pending', 'held', 'claimed') AND EXISTS (SELECT 1 FROM news AS later"
    " WHERE later.user_id = news.user_id AND later.source = news.source"
    " AND later.ticket = news.ticket AND later.id > news.id)"
)


class NewsStore:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self._pruned_at = 0.0
        # Which process this store is, for the lease of its claims: another process on the same
        # host may have had its pid, and one in another container the same pid.
        self._lease = f"{LEASE_PREFIX}{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._leased: set[int] = set()  # news this store claimed and has not tried nor given back
        # News this store marked 'sending' and has not yet recorded how its DM went: leased too, so
        # that a process starting meanwhile tells it from news a stopped process left 'sending'.
        self._sending: set[int] = set()

    @classmethod
    async def open(cls, path: Path | str) -> NewsStore:
        async with opening(path, SCHEMA, version=SCHEMA_VERSION) as conn:
            await add_missing_columns(conn, "news", {"held_for": "TEXT", "delivery": "INTEGER"})
            await rekey_news(conn)
            store = cls(conn)
            stuck = await store.count_left_sending()
            if stuck:
                # Its DM tried, then the bot stopped before it knew how the send went: never sent again.
                said = "%d piece(s) of ticket news were being sent when the bot stopped: not resent"
                log.warning(said, stuck)
            untried = await store.give_back_untried()
            if untried:
                said = "%d piece(s) of ticket news claimed with no DM tried when the bot stopped: to send"
                log.warning(said, untried)
            await store.prune()
            return store

    async def prune(self, now: float | None = None) -> int:
        """Forget news no longer due (sent, muted, given up on) found KEEP_TOLD_SECONDS ago,
        but for each player's newest piece of each ticket, and the channels of players long silent and
        closed-DMs notices as old; how many pieces of news went.

        What goes cannot be found again: its grievance events were read and dropped, and a Jira
        poll sees each issue's status as it is now, looking back a week at most. Only a real
        change brings its status back, and that is news. The newest piece stays: each change is
        compared with it (`add`'s `heard`), so a Jira issue made by staff, in a poll again after
        an edit that left its status alone, is not told that status again."""
        now = time.time() if now is None else now
        self._pruned_at = now
        async with writing(self._conn, self._lock):
            cursor = await self._conn.execute(
                f"DELETE FROM news WHERE found_at < ? AND {SUPERSEDED}", (iso_at(now - KEEP_TOLD_SECONDS),)
            )
            await self._conn.execute(
                "DELETE FROM last_channel WHERE at < ?", (iso_at(now - KEEP_CHANNEL_SECONDS),)
            )
            # Who was told their DMs are closed, kept only while the notice could matter: a player
            # whose DMs stay closed is told once more a season on, not kept on record for ever.
            await self._conn.execute(
                "DELETE FROM dms_closed WHERE told_at < ?", (iso_at(now - KEEP_CHANNEL_SECONDS),)
            )
            await self._conn.commit()
        return cursor.rowcount

    async def housekeeping(self, now: float | None = None) -> None:
        """prune(), at most every PRUNE_EVERY_SECONDS: for a running bot's frequent recheck."""
        now = time.time() if now is None else now
        if prune_due(now, self._pruned_at, PRUNE_EVERY_SECONDS):
            await self.prune(now)

    async def add(
        self,
        user_id: str,
        source: str,
        ticket: str,
        kind: str,
        status: str,
        text: str,
        held_for: str | None = None,
        marker: str = "",
        heard: str | None = None,
    ) -> bool:
        """Keep a piece of news, held for the answer to the turn of filing id `held_for` if one is
        given; False if it was found before (the same `marker`: the same change of the ticket).

        With `heard`, a status change, kept only if `status` differs from the status of this
        player's newest news of this ticket, or from `heard` (what the player knows of a ticket
        nobody told them about) when there is none: a ticket back to what its player was last told
        is not news, and one told a status, moved on and back to it again, is. Per player: staff
        may give a ticket to another player, who knows nothing of what the first one was told. One
        statement, so two processes finding news together compare with each other's."""
        async with writing(self._conn, self._lock):
            cursor = await self._conn.execute(
                "INSERT INTO news (user_id, source, ticket, kind, status, text, found_at, state, held_for,"
                " marker) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE ? IS NULL OR COALESCE((SELECT status"
                " FROM news WHERE user_id = ? AND source = ? AND ticket = ? ORDER BY id DESC LIMIT 1), ?)"
                " IS NOT ?"
                " ON CONFLICT (source, ticket, kind, status, marker) DO NOTHING",
                (
                    user_id,
                    source,
                    ticket,
                    kind,
                    status,
                    text,
                    utc_now(),
                    "held" if held_for else "pending",
                    held_for,
                    marker,
                    heard,
                    user_id,
                    source,
                    ticket,
                    heard,
                    status,
                ),
            )
            await self._conn.commit()
            return cursor.rowcount == 1

    async def held(self) -> list[tuple[int, str]]:
        """(id, filing id of the turn it waits for) of each piece of held news."""
        rows = await self._conn.execute_fetchall(
            "SELECT id, held_for FROM news WHERE state = 'held' ORDER BY id"
        )
        return [(int(row[0]), str(row[1])) for row in rows]

    async def release(self, ids: list[int]) -> None:
        """Held news to be sent after all: the turn it waited for will not tell it."""
        async with writing(self._conn, self._lock):
            await self._conn.executemany(
                "UPDATE news SET state = 'pending' WHERE id = ? AND state = 'held'", [(i,) for i in ids]
            )
            await self._conn.commit()

    async def told_in_answer(
        self, user_id: str, local_source: str, tickets: list[tuple[str, str | None]]
    ) -> int:
        """The player heard these tickets' keys in an answer: news of their filing that is not
        sent yet never will be, claimed by a round too while its DM is not tried (`trying` then
        finds the claim gone, and that round tries no DM of it). Each ticket is (its key in
        `local_source`, its Jira key or None): a key names a ticket only in its own source. How
        many pieces of news that was."""
        told = ("state = 'in_answer', done_at = ?", (utc_now(),))
        return await self._set_filed(user_id, local_source, tickets, told, "('pending', 'held', 'claimed')")

    async def untold_in_answer(
        self, user_id: str, local_source: str, tickets: list[tuple[str, str | None]]
    ) -> int:
        """Undo `told_in_answer` for an answer that did not reach the player after all: its news
        goes out. How many pieces of news that was."""
        untold = ("state = 'pending', done_at = NULL", ())
        return await self._set_filed(user_id, local_source, tickets, untold, "('in_answer')")

    async def _set_filed(
        self,
        user_id: str,
        local_source: str,
        tickets: list[tuple[str, str | None]],
        change: tuple[str, tuple[object, ...]],
        states: str,
    ) -> int:
        """`change` (SET clause, its parameters) on the player's news of these tickets' filing
        that is in one of `states`; how many pieces of news it changed."""
        local = [key for key, _ in tickets]
        jira = [key for _, key in tickets if key]
        local_marks, jira_marks = ",".join("?" * len(local)), ",".join("?" * len(jira))
        set_clause, set_args = change
        async with writing(self._conn, self._lock):
            cursor = await self._conn.execute(
                f"UPDATE news SET {set_clause} WHERE user_id = ? AND kind = 'filed' AND state IN {states}"
                f" AND ((source = ? AND ticket IN ({local_marks}))"
                f" OR (source = 'jira' AND ticket IN ({jira_marks})))",
                (*set_args, user_id, local_source, *local, *jira),
            )
            await self._conn.commit()
        return cursor.rowcount

    async def adopt_local(self, source: str) -> None:
        """News found before sources named their grievance database ("local") is this one's."""
        async with writing(self._conn, self._lock):
            # OR IGNORE: a row this database already has (an older version running beside) stays.
            await self._conn.execute("UPDATE OR IGNORE news SET source = ? WHERE source = 'local'", (source,))
            await self._conn.commit()

    async def due(self, limit: int = DELIVER_BATCH) -> list[NewsItem]:
        """The oldest pending news, at most one DM's worth per player: a player with hundreds of
        tickets closed at once must not fill the batch and hold back everyone else's news. A try
        due later than RETRY_SECONDS from now was set by a clock since stepped back (NTP
        correcting a fast host): due now, not that much later."""
        now = time.time()
        rows = await self._conn.execute_fetchall(
            f"SELECT {ITEM_COLUMNS} FROM ("
            " SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY id) AS nth FROM news"
            " WHERE state = 'pending' AND (next_try_at IS NULL OR next_try_at <= ? OR next_try_at > ?)"
            ") WHERE nth <= ? ORDER BY id LIMIT ?",
            (now, now + RETRY_SECONDS, MAX_ITEMS_PER_DM, limit),
        )
        return [NewsItem(*row) for row in rows]

    async def tried_together(self, user_id: str, next_try_at: float) -> list[NewsItem]:
        """The pending news of one failed try of a DM to `user_id` (due again at `next_try_at`),
        whatever else is due for them."""
        rows = await self._conn.execute_fetchall(
            f"SELECT {ITEM_COLUMNS} FROM news"
            " WHERE user_id = ? AND state = 'pending' AND next_try_at = ? ORDER BY id",
            (user_id, next_try_at),
        )
        return [NewsItem(*row) for row in rows]

    async def claim(self, ids: list[int]) -> list[int]:
        """Take pending news for sending, on disk before anything is sent; the ids now ours (news
        another process claimed first is not). The claim is leased to this process in the same
        transaction (`cursors`, a row per process: the news table, which older voxdesks share,
        stays as it was): another process gives it back only once this store closed or the lease
        ran out (`give_back_untried`)."""
        mine = []
        async with writing(self._conn, self._lock):
            await self._begin()
            held = await self._still_leased()
            for news_id in ids:
                cursor = await self._conn.execute(
                    "UPDATE news SET state = 'claimed' WHERE id = ? AND state = 'pending'", (news_id,)
                )
                if cursor.rowcount == 1:
                    mine.append(news_id)
            leased = held | set(mine)
            await self._write_lease(leased, self._sending)
            await self._conn.commit()
        self._leased = leased
        return mine

    async def _begin(self) -> None:
        """A write transaction, begun before this store's lease is read: no other process gives
        back a claim between the read and the writes that rely on it."""
        await while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))

    async def _still_leased(self) -> set[int]:
        """What this store claimed that is still its own, in the caller's transaction. Another
        process takes a lease it finds over (`give_back_untried`) whole: it gives its claims back
        and drops its row. Over only by that process's clock: one running minutes ahead of this
        one's sees this lease lapse long before CLAIM_LEASE_SECONDS have passed here."""
        if not self._leased:
            return set()
        rows = await self._conn.execute_fetchall("SELECT value FROM cursors WHERE name = ?", (self._lease,))
        row = first(rows)
        held = self._leased & set(_lease_of(str(row[0]))[0]) if row else set()
        if lost := self._leased - held:
            log.warning(
                "ticket news %s claimed here was given back by another process, this one's lease over"
                " by its clock (the two clocks apart?): its DM is tried there, not here",
                sorted(lost),
            )
        return held

    async def _write_lease(self, ids: set[int], sending: set[int]) -> None:
        """This process's lease on the news it claimed (`ids`) and the news whose DM it is trying
        (`sending`), in the caller's transaction; none left when both are empty. Only `ids` is a
        claim (what a voxdesk before `sending` reads of a lease)."""
        if not ids and not sending:
            await self._conn.execute("DELETE FROM cursors WHERE name = ?", (self._lease,))
            return
        until = time.time() + CLAIM_LEASE_SECONDS
        lease = {"ids": sorted(ids), "sending": sorted(sending), "until": until}
        await self._conn.execute(
            "INSERT INTO cursors (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (self._lease, json.dumps(lease)),
        )

    async def trying(self, ids: list[int]) -> bool:
        """Claimed news whose DM is about to be tried, 'sending' on disk first: from here on it may
        reach the player, and is never given back as untried. All or none: False, and nothing
        written, when a piece is no longer claimed (another process gave it back, this one's lease
        over, and may have claimed it again), so that only one process ever tries a piece."""
        async with writing(self._conn, self._lock):
            await self._begin()
            held = await self._still_leased()
            moved = 0
            if set(ids) <= held:  # 'claimed' alone may be another process's claim of it since
                for news_id in ids:
                    cursor = await self._conn.execute(
                        "UPDATE news SET state = 'sending' WHERE id = ? AND state = 'claimed'", (news_id,)
                    )
                    moved += cursor.rowcount
            if moved != len(ids):
                await self._conn.rollback()
                self._leased = held
                return False
            leased, sending = held - set(ids), self._sending | set(ids)
            await self._write_lease(leased, sending)
            await self._conn.commit()
        self._leased, self._sending = leased, sending
        return True

    async def give_back(self, ids: list[int], state: str = "claimed") -> None:
        """News this process claimed and never tried to send (a stop cut the round short before
        the DM): pending again, as if never claimed. `state` 'sending': news `trying` marked
        whose DM a stop kept from being tried after all."""
        async with writing(self._conn, self._lock):
            await self._begin()
            held = await self._still_leased()
            # Only this process's: a claim another process took over since is its to send.
            mine = held if state == "claimed" else self._sending
            await self._conn.executemany(
                "UPDATE news SET state = 'pending' WHERE id = ? AND state = ?",
                [(i, state) for i in ids if i in mine],
            )
            leased, sending = held - set(ids), self._sending - set(ids)
            await self._write_lease(leased, sending)
            await self._conn.commit()
        self._leased, self._sending = leased, sending

    async def give_back_untried(self, now: float | None = None, unleased: bool = True) -> int:
        """News claimed with no DM tried by a process that is gone, pending again; how many: what
        a process that stopped left claimed (killed, or news.db refusing to give it back) is sent
        after all. Gone: its lease ran out (`now`, time.time()). `unleased`, for a start: news
        claimed under no lease too (a voxdesk that kept none, or one whose store closed while
        news.db refused to give its claim back). A claim under a live lease is left alone: the
        process holding it, still running, is about to try its DM. Expired leases are dropped."""
        now = time.time() if now is None else now
        async with writing(self._conn, self._lock):
            # The leases read and the claims given back are one transaction: a claim another
            # process commits in between, its lease not read, would be given back as no one's.
            await while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            live: set[int] = set()
            dead: set[int] = set()
            rows = await self._conn.execute_fetchall(
                "SELECT name, value FROM cursors WHERE substr(name, 1, ?) = ?",
                (len(LEASE_PREFIX), LEASE_PREFIX),
            )
            for name, value in rows:
                ids, sending, until = _lease_of(value)
                if until > now + CLAIM_LEASE_SECONDS and name != self._lease:
                    # Further off than a lease taken now: written by a clock since stepped back
                    # (NTP correcting a host that ran fast, a bad real-time clock at boot), which
                    # would hold a killed process's news as long as the step. It lasts as one
                    # taken now; a live process renews it at its next claim or mark.
                    until = now + CLAIM_LEASE_SECONDS
                    lease = {"ids": ids, "sending": sending, "until": until}
                    await self._conn.execute(
                        "UPDATE cursors SET value = ? WHERE name = ?", (json.dumps(lease), name)
                    )
                if until > now or name == self._lease:
                    live.update(ids)
                else:
                    dead.update(ids)
                    await self._conn.execute("DELETE FROM cursors WHERE name = ?", (name,))
            if unleased:
                kept = ",".join(map(str, sorted(live)))
                cursor = await self._conn.execute(
                    f"UPDATE news SET state = 'pending' WHERE state = 'claimed' AND id NOT IN ({kept})"
                )
                given = cursor.rowcount
            else:
                cursor = await self._conn.executemany(
                    "UPDATE news SET state = 'pending' WHERE id = ? AND state = 'claimed'",
                    [(i,) for i in sorted(dead - live)],
                )
                given = max(cursor.rowcount, 0)
            await self._conn.commit()
        return given

    async def finish(self, ids: list[int], state: str, error: str | None = None) -> list[int]:
        """`ids` marked `state`; those marked. Claimed news another process took over (this one's
        lease over by its clock) is that process's to tell, and is not marked here."""
        async with writing(self._conn, self._lock):
            await self._begin()
            held = await self._still_leased()
            lost = self._leased - held  # another process's to tell now, muted or not
            marked = [i for i in ids if i not in lost]
            await self._conn.executemany(
                "UPDATE news SET state = ?, done_at = ?, error = ? WHERE id = ?",
                [(state, utc_now(), error, i) for i in marked],
            )
            leased = held - set(ids)  # muted straight from the claim
            sending = self._sending - set(ids)
            if (leased, sending) != (self._leased, self._sending):
                await self._write_lease(leased, sending)
            await self._conn.commit()
        self._leased, self._sending = leased, sending
        return marked

    async def retry(self, ids: list[int], at: float, error: str, delivery: int | None) -> None:
        """Back to pending, due at `at`: the send never reached Discord. `delivery`: the DM's key,
        kept from its first try (None: an older voxdesk's try, whose nonce is over the ids)."""
        async with writing(self._conn, self._lock):
            await self._conn.executemany(
                "UPDATE news SET state = 'pending', attempts = attempts + 1, next_try_at = ?, error = ?,"
                " delivery = COALESCE(delivery, ?) WHERE id = ?",
                [(at, error, delivery, i) for i in ids],
            )
            # Read once this transaction writes: no other process gives back a claim meanwhile.
            held, sending = await self._still_leased(), self._sending - set(ids)
            if (held, sending) != (self._leased, self._sending):
                await self._write_lease(held, sending)
            await self._conn.commit()
        self._leased, self._sending = held, sending

    async def count(self, state: str) -> int:
        rows = await self._conn.execute_fetchall("SELECT COUNT(*) FROM news WHERE state = ?", (state,))
        (n,) = first(rows)  # type: ignore[misc]
        return int(n)

    async def count_left_sending(self) -> int:
        """News 'sending' that no live lease holds: its DM tried by a process that stopped before
        it knew how the send went. Not news another process still running is sending (a bot beside
        this one, a `voxdesk ask`): its lease names it until the DM's outcome is recorded."""
        now = time.time()
        rows = await self._conn.execute_fetchall(
            "SELECT value FROM cursors WHERE substr(name, 1, ?) = ?", (len(LEASE_PREFIX), LEASE_PREFIX)
        )
        live: set[int] = set()
        for (value,) in rows:
            _, sending, until = _lease_of(value)
            if until > now:
                live.update(sending)
        rows = await self._conn.execute_fetchall("SELECT id FROM news WHERE state = 'sending'")
        return sum(1 for (news_id,) in rows if news_id not in live)

    async def told(self, user_id: str) -> list[tuple[str, str, str, str]]:
        """(ticket, kind, status, state) of every piece of news for a player, oldest first."""
        rows = await self._conn.execute_fetchall(TOLD, (user_id,))
        return [tuple(row) for row in rows]  # type: ignore[misc]

    async def cursor(self, name: str) -> str | None:
        rows = await self._conn.execute_fetchall("SELECT value FROM cursors WHERE name = ?", (name,))
        row = first(rows)
        return str(row[0]) if row else None

    async def set_cursor(self, name: str, value: str) -> None:
        async with writing(self._conn, self._lock):
            await self._conn.execute(
                "INSERT INTO cursors (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
            await self._conn.commit()

    async def owe_untelling(self, user_id: str, platform: str, request_id: str, keys: list[str]) -> str:
        """Keep on disk that these keys, told in no answer, are to go back to ticket news; the
        row's name, for `paid_untelling`."""
        name = f"{UNTELL_PREFIX}{user_id}:{platform}:{request_id}"
        await self.set_cursor(name, json.dumps(keys))
        return name

    async def untellings_owed(self) -> list[tuple[str, str, str, str, list[str]]]:
        """(row name, user id, platform, request id, keys) of each untelling owed."""
        rows = await self._conn.execute_fetchall(
            "SELECT name, value FROM cursors WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(UNTELL_PREFIX), UNTELL_PREFIX),
        )
        owed = []
        for name, value in rows:
            user_id, platform, request_id = str(name)[len(UNTELL_PREFIX) :].split(":", 2)
            keys = json.loads(value)
            owed.append((str(name), user_id, platform, request_id, [str(key) for key in keys]))
        return owed

    async def paid_untelling(self, name: str) -> None:
        async with writing(self._conn, self._lock):
            await self._conn.execute("DELETE FROM cursors WHERE name = ?", (name,))
            await self._conn.commit()

    async def set_last_channel(self, user_id: str, channel_id: str) -> None:
        async with writing(self._conn, self._lock):
            await self._conn.execute(
                "INSERT INTO last_channel (user_id, channel_id, at) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET channel_id = excluded.channel_id, at = excluded.at",
                (user_id, channel_id, utc_now()),
            )
            await self._conn.commit()

    async def last_channel(self, user_id: str) -> str | None:
        rows = await self._conn.execute_fetchall(
            "SELECT channel_id FROM last_channel WHERE user_id = ?", (user_id,)
        )
        row = first(rows)
        return str(row[0]) if row else None

    async def claim_closed_notice(self, user_id: str) -> bool:
        """True the first time since DMs to this player last went through: tell them, once."""
        async with writing(self._conn, self._lock):
            cursor = await self._conn.execute(
                "INSERT INTO dms_closed (user_id, told_at) VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING",
                (user_id, utc_now()),
            )
            await self._conn.commit()
            return cursor.rowcount == 1

    async def dms_open(self, user_id: str) -> None:
        """A DM went through: should they close their DMs again, they are told again."""
        async with writing(self._conn, self._lock):
            await self._conn.execute("DELETE FROM dms_closed WHERE user_id = ?", (user_id,))
            await self._conn.commit()

    async def aclose(self) -> None:
        """Close, giving back what this store still holds claimed (news.db refused to give it back
        earlier): no DM of it will be tried here. Refused again, its lease is dropped all the
        same, and the next start gives it back."""
        if self._leased:
            try:
                await self.give_back(sorted(self._leased))
            except Exception as exc:
                log.error("ticket news %s claimed and not given back at close: %s", sorted(self._leased), exc)
        if self._leased or self._sending:
            # News still 'sending' here was being sent as this process stopped: the next start
            # says so.
            with contextlib.suppress(Exception):
                async with writing(self._conn, self._lock):
                    await self._write_lease(set(), set())
                    await self._conn.commit()
        await self._conn.close()


def _lease_of(value: str) -> tuple[list[int], list[int], float]:
    """(news ids claimed, news ids whose DM is being tried, until) of a lease row; one unreadable
    (written by hand) holds nothing, and one a voxdesk before 'sending' was leased wrote, no DM."""
    try:
        lease = json.loads(value)
        sending = [int(i) for i in lease.get("sending", [])]
        return [int(i) for i in lease["ids"]], sending, float(lease["until"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return [], [], 0.0


T = TypeVar("T")


# ---- finding and delivering ----------------------------------------------------------------


async def _outlasting(future: asyncio.Future[T]) -> T:
    """`future`'s outcome, awaited through any cancel of the caller: each leaves it running, and
    the caller, cancelled, raises its cancel once this returns."""
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():  # its own cancel, not the caller's
                raise


# What a delivery does once its DM was tried, by how the try went (`TicketNews._doing`).
_RECORDING = {
    Outcome.SENT: "recording its DM, which Discord took, as sent",
    Outcome.DMS_CLOSED: "recording its DM, which Discord refused (DMs closed)",
    Outcome.RETRY: "recording its DM, which never reached Discord, for a retry",
    Outcome.FAILED: "recording its DM, which Discord refused or may have taken, as failed",
}


class _PollStopped(Exception):
    """The bot is stopping: the Jira poll's search was not begun, or was let go (stop_polling)."""


def quiet_for(retry_after: float | None) -> float:
    """Seconds the Jira poll waits after a failure: a 429's Retry-After, up to MAX_QUIET_SECONDS."""
    if retry_after is None:
        return 0.0
    if retry_after > MAX_QUIET_SECONDS:
        log.warning(
            "ticket news: Jira asked for no request within %g s (Retry-After): asking again in %g s",
            retry_after,
            MAX_QUIET_SECONDS,
        )
        return MAX_QUIET_SECONDS
    return retry_after


class TicketNews:
    def __init__(
        self,
        store: NewsStore,
        grievances: object,
        preferences: PreferenceStore,
        speaker: Speaker | None,
        settings: NewsSettings,
        answering: Answering | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._clock = clock
        self.settings = settings
        self._preferences = preferences
        self._speaker = speaker
        self._answering = answering
        self._in_flight: set[tuple[str, str]] = set()  # (platform, request id): answers_once
        # Both grievance backends keep every grievance in a local store; the Jira one also
        # answers which of its issues changed (JiraGrievances.updated_issues).
        self._local: LocalGrievanceStore | None = getattr(grievances, "local_store", None)
        self._jira: Any = grievances if hasattr(grievances, "updated_issues") else None
        self._round = asyncio.Lock()  # the loop and a test's explicit round never overlap
        self._events_cursor: str | None = None
        self._local_source = "local"  # "local:<store id>" once the grievance database is read
        # A 429's Retry-After: no poll before this time.monotonic(), which a clock stepped back
        # (NTP correcting a fast host) cannot push later.
        self._jira_quiet_until = 0.0
        # The bot is stopping (stop_polling): no poll begins, and one in flight is let go unsaid.
        self._stopping = False
        self._search: asyncio.Future[Any] | None = None
        # Jira's answers that said its rate limit is nearly spent, as counted at the last round,
        # and whether that round left the poll out for them.
        self._near_limit_seen = 0
        self._near_limit_skipped = False
        # An outage the grievance pusher or a player's lookup said already (an expired API token)
        # is no news here, nor one said here to the lookups.
        views = getattr(self._jira, "outages", None)
        self._jira_outage = Outage(log, "ticket news: Jira answers again", beside=views)
        if views is not None:
            views.append(self._jira_outage)
        self._preferences_unread = Outage(log, "ticket news: preferences are read again")
        # News this process claimed, tried no DM of, and could not give back (news.db refused the
        # write): given back at the start of each round until it goes through, or at the next start.
        self._owed_back: set[int] = set()
        self._giving_back = Outage(log, "ticket news: claimed news is given back again", level=logging.ERROR)
        self._unmarked = Outage(log, "ticket news: DMs are marked tried again", level=logging.ERROR)
        self._round_writes = Outage(log, "ticket news: news.db writes go through again", level=logging.ERROR)
        self._reclaiming = Outage(
            log,
            "ticket news: news claimed by processes that are gone is given back again",
            level=logging.ERROR,
        )
        self._round_failures = Outage(log, "ticket news: DMs are delivered again", level=logging.ERROR)
        # What a player's delivery was doing, for the log line of a failure that ends it.
        self._doing = ""
        self._unmuted = Outage(log, "ticket news: news.db marks news muted again", level=logging.ERROR)
        # With news off: (time.monotonic(), the newest grievance event) at the last look (see
        # `housekeeping`).
        self._unread_events: tuple[float, int] | None = None
        # `clock` at the start of this process's last Jira poll that finished: the time since, which
        # a host clock stepped back cannot shorten, bounds the next poll's window from below.
        self._jira_polled: float | None = None

    async def housekeeping(self, now: float | None = None) -> None:
        """The news store's pruning, for a running bot's recheck. With news off, nothing reads
        the grievance database's events (a row for each filing kept for later, push and change of
        status): they would pile up for as long as the bot runs, and news switched on again would
        tell players months of changes at once. Each is dropped once it has been there a whole
        PRUNE_EVERY_SECONDS (`now`, time.monotonic()), which leaves a process on the same storage
        that has news on (a deploy switching it on) time to read it first."""
        await self.store.housekeeping()
        if self.settings.enabled or self._local is None:
            return
        now = time.monotonic() if now is None else now
        if self._unread_events is not None:
            looked_at, newest = self._unread_events
            if now - looked_at < PRUNE_EVERY_SECONDS:
                return
            await self._local.drop_news_events(newest)
        self._unread_events = (now, await self._local.last_news_event())

    async def run_once(self, messenger: Messenger) -> int:
        """Find news and deliver what is due; how many pieces were sent."""
        async with self._round:
            await self.find()
            return await self.deliver(messenger)

    async def record_channel(self, user_id: str, channel_id: str) -> None:
        """Where the player last sent a voice note: where to tell them their DMs are closed."""
        await self.store.set_last_channel(user_id, channel_id)

    @contextlib.contextmanager
    def answers_once(self, platform: str, request_id: str) -> Iterator[None]:
        """While a request answered only once (a slash command) is being answered by this process,
        the news of what it files is held for its answer (`heard_in_answer` drops it); after, or
        after a restart, what no answer told goes out."""
        turn = (platform, request_id)
        self._in_flight.add(turn)
        try:
            yield
        finally:
            self._in_flight.discard(turn)

    async def heard_in_answer(self, user_id: str, platform: str, request_id: str, keys: list[str]) -> None:
        """The player heard these ticket keys in the answer to their request (a note, a slash
        command): a grievance that request filed from the spool among them is told, and its news
        (held for that answer, or found later) is not. The keys an answer tells are those of what
        its own turn filed (`Reply.told_keys`, the slash command's filing): the same key naming
        another of the player's tickets, in the other key space, leaves that one to news. A
        failure to record it is logged, never raised: the DM then goes out as well."""
        if self._local is None or not keys or not request_id:
            return
        try:
            tickets = await self._local.heard(user_id, filing_turn(platform, request_id), keys)
            if not tickets:
                return
            # Not `_local_source`: an answer may come before this process has read any event.
            local_source = f"local:{await self._local.store_id()}"
            told = await self.store.told_in_answer(user_id, local_source, tickets)
        except Exception as exc:  # the DM goes out as well: told twice rather than never
            log.error(
                "could not record that %s request %s told tickets %s: %s", user_id, request_id, keys, exc
            )
            return
        if told:
            log.info(
                "ticket news for %s not sent: %s told in the answer to their note", user_id, ", ".join(keys)
            )

    async def unheard_in_answer(self, user_id: str, platform: str, request_id: str, keys: list[str]) -> None:
        """Undo `heard_in_answer`, made before the answer was sent, for an answer that did not
        reach the player (Discord refused it, a stop cut it): its keys go by DM. Owed on disk
        first, in one short write to news.db: the untelling's own writes may wait out another
        process's lock on grievances.db, longer than a stop waits, and what a stop cuts, or a
        failure ends, is done by a later round (`_pay_untellings`), the next start's at the
        latest. Logged, never raised."""
        if self._local is None or not keys or not request_id:
            return
        try:
            owed: str | None = await self.store.owe_untelling(user_id, platform, request_id, keys)
        except asyncio.CancelledError:  # a stop that waited its bound (news.db locked as long)
            log.error(
                "closing before keeping that %s request %s owes tickets %s to news: they are not"
                " DMed (/grievance status lists them)",
                user_id,
                request_id,
                keys,
            )
            raise
        except Exception as exc:  # the untelling itself may still go through
            log.error(
                "could not keep that %s request %s owes tickets %s to news: %s",
                user_id,
                request_id,
                keys,
                exc,
            )
            owed = None
        if await self._untell(user_id, platform, request_id, keys) and owed is not None:
            await self._paid(owed)

    async def _untell(self, user_id: str, platform: str, request_id: str, keys: list[str]) -> bool:
        """The untelling's writes, each a no-op once done: whether both went through."""
        assert self._local is not None
        try:
            tickets = await self._local.unheard(user_id, filing_turn(platform, request_id), keys)
            if tickets:
                local_source = f"local:{await self._local.store_id()}"
                await self.store.untold_in_answer(user_id, local_source, tickets)
        except Exception as exc:
            log.error(
                "could not record that %s request %s did not tell tickets %s after all: %s",
                user_id,
                request_id,
                keys,
                exc,
            )
            return False
        return True

    async def _paid(self, owed: str) -> None:
        try:
            await self.store.paid_untelling(owed)
        except Exception as exc:  # done again by a later round: a no-op
            log.warning("ticket news: could not drop the untelling %s, done: %s", owed, exc)

    async def _pay_untellings(self) -> None:
        """The untellings a stop cut or a failure ended, in this process or another on the same
        storage: done now, before the round reads the events they make. One still under way
        elsewhere is done twice, to no effect."""
        try:
            owed = await self.store.untellings_owed()
        except Exception:
            log.exception("ticket news: reading the untellings owed failed")
            return
        for name, user_id, platform, request_id, keys in owed:
            if await self._untell(user_id, platform, request_id, keys):
                log.info(
                    "ticket news: ticket(s) %s of %s given back, told in no answer", ", ".join(keys), user_id
                )
                await self._paid(name)

    # ---- finding --------------------------------------------------------------------------

    async def find(self) -> int:
        """Look for news in every source; how many new pieces were found. A source that fails is
        logged and tried again next round; the others still count."""
        found = 0
        if self._local is not None:
            # A grievance kept in the spool is filed before the events are read: its news (its
            # key, which its player never heard) goes out this round.
            await self._local.file_spooled()
            await self._pay_untellings()
            found += await self._read_events(self._local)
        if (
            self._jira is not None
            and self._local is not None
            and time.monotonic() >= self._jira_quiet_until
            and not self._stopping
            and not self._near_limit_skip()
        ):
            try:
                found += await self._find_in_jira(self._jira, self._local)
            except _PollStopped:
                log.debug("ticket news: the Jira poll in flight let go, the bot stopping")
            except Exception as exc:
                if self._stopping:  # failed as the stop came: about a bot no longer serving
                    log.debug("ticket news: asking Jira what changed failed while stopping: %s", exc)
                    return found
                # A TrackerError's gist: its reason without the wait a 429 asks, new with each one.
                said = getattr(exc, "gist", None) or str(exc)
                self._jira_outage.failed(
                    said,
                    "ticket news: asking Jira what changed failed: %s",
                    exc,
                    level=getattr(exc, "level", None),
                )
                # Rate limited: asking again before Jira allows only prolongs the limit, which
                # the grievance pusher shares. The window stays open, so nothing is missed.
                self._jira_quiet_until = time.monotonic() + quiet_for(getattr(exc, "retry_after", None))
            else:
                self._jira_outage.answered()
                # An issue the poll found under a new key is told by its grievance event: this round.
                found += await self._read_events(self._local)
        return found

    def _near_limit_skip(self) -> bool:
        """Whether this round leaves Jira alone: an answer since the last poll said little of its
        rate limit's budget is left (X-RateLimit-NearLimit), which the grievance pusher and
        players' lookups share, and the last round polled. So the poll goes every other round
        while Jira says so; the next poll's window reaches back to the last one, and no news is
        lost, only late by a round."""
        said = int(getattr(self._jira, "near_limit_answers", 0) or 0)
        skip = said != self._near_limit_seen and not self._near_limit_skipped
        self._near_limit_seen, self._near_limit_skipped = said, skip
        if skip:
            log.debug(
                "ticket news: Jira's rate limit is nearly spent (X-RateLimit-NearLimit): no poll this round"
            )
        return skip

    async def _read_events(self, local: LocalGrievanceStore) -> int:
        try:
            return await self._find_in_events(local)
        except Exception:
            log.exception("ticket news: reading the grievance database failed")
            return 0

    async def _find_in_events(self, local: LocalGrievanceStore) -> int:
        if self._events_cursor is None:
            # Per grievance database: a new one numbers its events from 1 again, and its keys
            # (GRV-1 ...) are other tickets than the old one's, maybe other players'.
            store_id = await local.store_id()
            self._events_cursor = f"grievance-events-{store_id}"
            self._local_source = f"local:{store_id}"
            await self.store.adopt_local(self._local_source)
        after = int(await self.store.cursor(self._events_cursor) or 0)
        found = 0
        while True:
            events = await local.news_events(after, EVENT_BATCH)
            for event in events:
                if isinstance(event, GrievanceEvent):
                    found += await self._from_event(event)
                    after = event.id
                else:
                    after = event
            if not events:
                return found
            # Saved after the news is: a crash in between finds the same news again, which adds nothing.
            await self.store.set_cursor(self._events_cursor, str(after))
            await local.drop_news_events(after)
            if len(events) < EVENT_BATCH:
                return found

    async def _from_event(self, e: GrievanceEvent) -> int:
        if not USER_ID.match(e.user_id):
            return 0  # not a Discord user (a CLI `ask`): nobody to send it to
        jira = self._jira is not None
        if e.kind == "filed_late":
            if not e.filed_late:
                return 0  # its key was heard after all, in the answer to the note it came from
            if e.push_state != "local_only":
                return 0  # on its way to Jira: told with the key it gets there ("pushed")
            text = filed_text(e.local_key, e.created_at, e.description, e.status)
            held_for = await self._held_for(e)
            return await self._add(
                e.user_id, self._local_source, e.local_key, "filed", e.status, text, held_for
            )
        if e.kind == "pushed" and e.remote_key:
            held_for = None
            if e.filed_late:  # the player heard no key at all
                text = filed_text(e.remote_key, e.created_at, e.description, e.status)
                held_for = await self._held_for(e)
            elif e.attempts > 1:  # Jira failed when it was filed: the key they heard is not Jira's
                text = reached_text(e.local_key, e.remote_key, e.status)
            else:
                return 0  # pushed at once: the usual path, not news
            return await self._add(e.user_id, "jira", e.remote_key, "filed", e.status, text, held_for)
        if e.kind == "moved" and e.remote_key and e.was:
            # Jira answers to the new key: the player, who knew the old one, is told it.
            text = moved_text(e.was, e.remote_key, e.status)
            return await self._add(e.user_id, "jira", e.remote_key, "moved", e.status, text, marker=str(e.id))
        if e.kind == "status" and (not jira or e.push_state == "local_only" or e.gone):
            # Jira's status is the ticket's when Jira is on (the local one is a cache of it),
            # except for a ticket that never goes there, or one Jira no longer has: staff work
            # it on the desk.
            # The event's grievance is as it is now: changes found together are told as one, and
            # a ticket back to what its player last heard (or "open", what they heard at filing,
            # when nobody told them more) is none.
            # A ticket Jira no longer has goes by the Jira key its player last saw.
            key = e.remote_key if e.gone and e.remote_key else e.local_key
            text = status_text(key, e.description, e.status)
            source, marker = self._local_source, str(e.id)
            return await self._add(
                e.user_id, source, e.local_key, "status", e.status, text, marker=marker, heard="open"
            )
        return 0

    async def _find_in_jira(self, jira: Any, local: LocalGrievanceStore) -> int:
        # The cursor is kept in Jira's own time (its answers' Date headers), which measures the
        # window too (a relative "-Nm"): no step of the host's clock, while the bot runs or while
        # it is down, moves either. The host's clock stands in only until Jira has answered.
        began, ticked = time.monotonic(), self._clock()
        jira_now: Callable[[], float | None] = getattr(jira, "jira_now", lambda: None)
        said = jira_now()
        last = await self.store.cursor("jira-polled-at")
        now = time.time() if said is None else said
        since = float(last) if last else now - self.settings.poll_seconds
        minutes = self._window(now - since, ticked, said is not None)
        for _ in range(WINDOW_TRIES):
            issues = await self._search_jira(jira, await local.users(), minutes)
            said = jira_now()
            if said is None or not last:
                # No Date header (a proxy dropping it): the host's clock is all there is. No
                # cursor: a first poll, with no earlier one to reach back to.
                break
            # The search ran before its answer's Date: a window reaching the cursor from then
            # reaches it from the search. Short of it, the host's clock was off: asked again, by
            # Jira's, before anything is told (the wider search finds all the short one did).
            needed = self._window(said - since + DATE_SLACK_SECONDS, ticked, True)
            if needed <= minutes:
                break
            log.info(
                "ticket news: a window of %d min, by this host's clock, fell short of the last poll"
                " (%+.0f s from Jira's clock now): asking for %d min",
                minutes,
                since - said,
                needed,
            )
            minutes = needed
        found = 0
        for user_id, issue in issues:
            mine, moved = await jira.follow_issue(user_id, issue)
            if mine is not None and mine.push_state == "pending":
                # Made by a push not finished yet (which may still have to give it the status the
                # desk set): the push's own news tells it.
                continue
            if mine is not None and moved:
                # Its grievance event tells the new key and the status together, in this round.
                await local.update_status(mine.local_key, issue.status, issue.updated_at)
                continue
            # What the player last heard: the local copy is refreshed whenever they ask, and below
            # once they are told. An issue made in Jira directly starts "open" like any other, and
            # then is what they were last told of it (`heard`).
            if mine is not None and issue.status == mine.status:
                continue
            if mine is not None and issue.untouched:
                # Nobody changed it since the push made it: its first status is no news after
                # the one they were told. (A status the desk set while it waited is given to the
                # issue by the push itself, jira_grievances.py.) A local copy as new as the issue
                # is the push's, which moved the issue after this search saw it: kept.
                if mine.updated_at < issue.updated_at:
                    await local.update_status(mine.local_key, issue.status, issue.updated_at)
                continue
            # A grievance's own words, as a status answer quotes them: staff may have rewritten
            # the issue's description (triage notes, mentions), which is theirs, not the player's.
            about = mine.description if mine is not None and mine.description else ""
            about = about or issue.description or issue.summary
            text = status_text(issue.key, about, issue.status)
            # `updated` tells this change from an earlier one to the same status (a reopened
            # issue resolved again), and the same change found again in an overlapping window.
            heard = None if mine is not None else "open"
            found += await self._add(
                user_id, "jira", issue.key, "status", issue.status, text, marker=issue.version, heard=heard
            )
            if mine is not None:
                await local.update_status(mine.local_key, issue.status, issue.updated_at)
        # Jira's time when this poll began: its latest Date, less the time since by the monotonic
        # clock. Never later than any search of this poll ran, so the next window reaches it.
        said = jira_now()
        polled_at = (time.time() if said is None else said) - (time.monotonic() - began)
        await self.store.set_cursor("jira-polled-at", repr(polled_at))
        self._jira_polled = ticked
        return found

    def stop_polling(self) -> None:
        """The bot is stopping: Jira's answer to a poll, come during the drain, would be said (a
        failure's WARNING) in the middle of the shutdown. The search in flight is cancelled, as
        nothing of its answer was kept yet; the next poll's window reaches back to the last one."""
        self._stopping = True
        if self._search is not None:
            self._search.cancel()

    async def _search_jira(self, jira: Any, user_ids: list[str], minutes: int) -> Any:
        if self._stopping:
            raise _PollStopped
        self._search = asyncio.ensure_future(jira.updated_issues(user_ids, minutes))
        try:
            return await self._search
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._stopping and (current is None or not current.cancelling()):
                raise _PollStopped from None
            raise  # the round itself cancelled
        finally:
            self._search = None

    def _window(self, away: float, ticked: float, by_jira: bool) -> int:
        """Minutes a poll looks back to take in changes since the last poll, `away` seconds ago by
        the cursor's clock (`by_jira`: measured with Jira's)."""
        if by_jira and away < -AHEAD_SECONDS:
            # A cursor ahead of Jira's clock was written by a host clock ahead of it (a voxdesk
            # that kept the cursor in the host's time): when the last poll was is unknown, so the
            # poll looks back as far as it ever does, unless this process polled since it began.
            away = MAX_WINDOW_MINUTES * 60.0 if self._jira_polled is None else 0.0
        if self._jira_polled is not None:
            # The time since this process's last poll, which no clock step can shorten. A wider
            # window only finds again what the markers already tell apart.
            away = max(away, ticked - self._jira_polled)
        # +1: a minute of overlap for Jira's search index lagging behind its updates
        return min(MAX_WINDOW_MINUTES, math.ceil(max(0.0, away) / 60) + 1)

    async def _add(
        self,
        user_id: str,
        source: str,
        ticket: str,
        kind: str,
        status: str,
        text: str,
        held_for: str | None = None,
        marker: str = "",
        heard: str | None = None,
    ) -> int:
        added = await self.store.add(user_id, source, ticket, kind, status, text, held_for, marker, heard)
        if added:
            held = f", held for the answer to {held_for}" if held_for else ""
            log.info("ticket news for %s: %s %s %s%s", user_id, ticket, kind, status, held)
        return int(added)

    async def _held_for(self, e: GrievanceEvent) -> str | None:
        """The filing id of the turn that filed `e`'s grievance while that turn is still to be
        answered (a note whose filing a shutdown cut, a slash command at work): its answer is to
        tell the key."""
        if e.spool_id is None or not await self._to_answer(e.spool_id):
            return None
        return e.spool_id

    async def _to_answer(self, filing: str) -> bool:
        turn = filed_in(filing)
        if turn in self._in_flight:
            return True
        if turn is None or self._answering is None:
            return False
        try:
            return await self._answering(*turn)
        except Exception:  # told now, maybe twice, rather than never
            log.exception("ticket news: could not learn whether %s is still to be answered", filing)
            return False

    async def _release_held(self) -> None:
        """Held news whose turn was settled without naming its key (an apology, a note given up
        on as too old) is sent after all."""
        done = [news_id for news_id, filing in await self.store.held() if not await self._to_answer(filing)]
        if done:
            await self.store.release(done)

    # ---- delivering -----------------------------------------------------------------------

    async def deliver(self, messenger: Messenger) -> int:
        """Send each player their due news, one DM each; how many pieces were sent."""
        await self._release_held()
        if self._owed_back:
            await self._give_back_owed(sorted(self._owed_back))
        try:
            # What a process killed while it held news claimed left (another, or this one's
            # predecessor): back once its lease is over, without waiting for a start.
            if gone := await self.store.give_back_untried(unleased=False):
                log.warning("ticket news: %d piece(s) claimed by a process that is gone: to send", gone)
        except Exception as exc:  # tried again next round; the due news goes out meanwhile
            said = "ticket news: news claimed by a process that is gone not given back: %s"
            self._reclaiming.failed(type(exc).__name__, said, exc)
        else:
            self._reclaiming.answered()
        due = await self.store.due()
        by_user: dict[str, list[NewsItem]] = {}
        for item in due:
            mine = by_user.setdefault(item.user_id, [])
            if len(mine) < MAX_ITEMS_PER_DM:
                mine.append(item)
        sent = 0
        for user_id, items in by_user.items():
            try:
                # A DM tried before is tried again as it was, and alone: Discord may have posted it
                # (its answer lost), and its nonce then returns it rather than post it again. Were
                # newer news added, the DM would be another, with a nonce of its own, telling the
                # old news twice.
                if tried := [i.next_try_at for i in items if i.next_try_at is not None]:
                    self._doing = "reading the news of its DM tried before"
                    items = await self.store.tried_together(user_id, min(tried))
                sent += await self._deliver_to(messenger, user_id, items)
            except Exception as exc:
                # News whose DM was tried stays 'sending', never sent again; the other players'
                # news is apart from it, and goes out now rather than a round later.
                if isinstance(exc, sqlite3.Error):  # news.db refused (how their DM went, most likely)
                    outage, said = self._round_writes, "ticket news for %s: news.db failed while %s: %s"
                else:  # neither news.db nor Discord (`direct` answers for Discord): a fault here
                    outage, said = (
                        self._round_failures,
                        "ticket news for %s failed while %s, not in news.db: %r",
                    )
                said += "; the round goes on"
                outage.failed(type(exc).__name__, said, user_id, self._doing, exc, exc_info=exc)
            else:
                self._round_writes.answered()
                self._round_failures.answered()
        return sent

    async def _deliver_to(self, messenger: Messenger, user_id: str, items: list[NewsItem]) -> int:
        # Shielded: a stop landing on the claim's commit once it went through would leave the news
        # claimed, and never sent, with no DM ever tried.
        self._doing = "claiming its news"
        claiming = asyncio.ensure_future(self.store.claim([i.id for i in items]))
        trying: asyncio.Future[bool] | None = None
        try:
            claimed = set(await asyncio.shield(claiming))
            items = [i for i in items if i.id in claimed]
            if not items:
                return 0
            ids = [i.id for i in items]
            try:
                prefs = await self._preferences.get(user_id)
            except Exception as exc:
                # /notify unknown is not guessed; claimed with no DM tried, the news would never
                # go out, and raised, the round would end for every player after this one.
                self._preferences_unread.failed(
                    type(exc).__name__,
                    "ticket news for %s waits: preferences cannot be read: %s",
                    user_id,
                    exc,
                    level=logging.ERROR,
                )
                # Unshielded: a stop landing on it is the `except asyncio.CancelledError` below,
                # whose `_give_back` gives the claim back through every further cancel.
                await self._give_back_owed(ids)
                return 0
            self._preferences_unread.answered()
            if not prefs.notify:
                try:
                    muted = await self.store.finish(ids, "muted")
                except Exception as exc:
                    # Claimed, and no DM tried: given back, and muted at a later round.
                    self._unmuted.failed(
                        type(exc).__name__, "ticket news for %s not marked muted: %s", user_id, exc
                    )
                    await self._give_back_owed(ids)
                    return 0
                self._unmuted.answered()
                if muted:
                    metrics.TICKET_NEWS.labels("muted").inc()
                    log.info("ticket news for %s not sent: /notify is off (%d)", user_id, len(muted))
                if taken := len(ids) - len(muted):
                    # Its round mutes it, and counts it: counted here too, it would be twice.
                    log.info(
                        "ticket news for %s not muted here: another process took its claim over (%d)",
                        user_id,
                        taken,
                    )
                return 0
            self._doing = "making its DM"
            delivery = await self._prepare(user_id, items, prefs)  # its speech takes seconds
            # Shielded, as the claim: a stop landing on its commit once through would leave the
            # news 'sending' with no DM tried, never sent.
            trying = asyncio.ensure_future(self.store.trying(ids))
            try:
                tried = await asyncio.shield(trying)
            except Exception as exc:  # news.db refused: still claimed, and no DM tried
                self._unmarked.failed(
                    type(exc).__name__,
                    "ticket news for %s waits: news.db refused to mark its DM tried: %s",
                    user_id,
                    exc,
                )
                tried = False
            else:
                self._unmarked.answered()
            if not tried:
                await self._give_back_owed(ids)
                return 0
        except (asyncio.CancelledError, Exception):
            # A stop, or a fault making the DM: no DM tried, so the news goes out later rather
            # than stay claimed under this process's lease for as long as it runs.
            await self._give_back(claiming, trying)
            raise
        try:
            outcome = await messenger.direct(delivery)
        except Exception as exc:  # an unknown failure may have sent it: never again
            log.exception("ticket news DM to %s failed", user_id)
            outcome, error = Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:300]
        else:
            error = None
        metrics.TICKET_NEWS.labels(outcome.value).inc()
        self._doing = _RECORDING[outcome]
        if outcome is Outcome.SENT:
            await self.store.finish(ids, "sent")
            await self.store.dms_open(user_id)
            log.info(
                "ticket news sent to %s: %s", user_id, ", ".join(f"{i.ticket} {i.status}" for i in items)
            )
            return len(ids)
        if outcome is Outcome.DMS_CLOSED:
            await self.store.finish(ids, "dms_closed")
            self._doing = "telling them in a channel that their DMs are closed"
            await self._tell_dms_closed(messenger, user_id)
            return 0
        unreachable = "not sent: Discord unreachable"
        if outcome is Outcome.RETRY and max(i.attempts for i in items) + 1 < MAX_ATTEMPTS:
            # Finished through a stop, not given back as untried: Discord may have made the DM (a
            # 5xx, a connection broken once it was out), and only a try under its key, with the news
            # it carried alone, is returned by its nonce rather than told twice or with later news
            # marked sent under it.
            putting_back = asyncio.ensure_future(
                self.store.retry(ids, time.time() + RETRY_SECONDS, unreachable, delivery.key)
            )
            try:
                await asyncio.shield(putting_back)
            except asyncio.CancelledError:
                # Through every further cancel, as `_give_back`: a write cut loose would leave the
                # news 'sending' once the store closes. One that fails leaves it claimed: lost, as
                # a crash there would leave it.
                with contextlib.suppress(Exception):
                    await _outlasting(putting_back)
                raise
            return 0
        await self.store.finish(ids, "failed", error or (unreachable if outcome is Outcome.RETRY else None))
        return 0

    async def _give_back_owed(self, ids: list[int]) -> None:
        """Claimed news no DM was tried for, pending again; kept owed when news.db refuses it (and
        given back at the store's close, or by another process once its lease is over). A failure
        raised would end the round for every player after this one."""
        try:
            await self.store.give_back(ids)
        except Exception as exc:
            self._owed_back.update(ids)
            self._giving_back.failed(
                type(exc).__name__,
                "ticket news %s claimed and not given back, owed to the next round: %s",
                ids,
                exc,
            )
        else:
            self._owed_back.difference_update(ids)
            if not self._owed_back:
                self._giving_back.answered()

    async def _give_back(
        self, claiming: asyncio.Future[list[int]], trying: asyncio.Future[bool] | None = None
    ) -> None:
        """A stop (or a fault) before the DM was tried: what the claim took goes back to pending,
        for the next round or the next start (at most once is about DMs that may have gone out),
        also when `trying` marked it 'sending' first. Waited for through a second cancel, which the caller
        raises with the first: a claim, a mark or a giving back cut loose would leave the news
        claimed or 'sending' once the store closes."""
        try:
            mine = await _outlasting(claiming)
        except Exception:  # the claim itself failed: nothing taken
            return
        marked = False
        if trying is not None:
            with contextlib.suppress(Exception):  # refused: nothing marked
                marked = await _outlasting(trying)
        if mine:
            state = "sending" if marked else "claimed"
            try:
                await _outlasting(asyncio.ensure_future(self.store.give_back(mine, state)))
            except Exception as exc:
                # Left 'claimed', it is given back at the store's close or once its lease is over;
                # left 'sending', it is lost, as a crash there would leave it.
                log.error("ticket news claimed for a round cut short not given back: %s", exc)

    async def _prepare(self, user_id: str, items: list[NewsItem], prefs: Preferences) -> Delivery:
        text, words = message_for(items)
        audio = None
        if prefs.reply_mode != "text" and self._speaker is not None:
            try:
                audio = await self._speaker(words, prefs.voice)  # synthesis and encoding in threads
            except Exception:
                log.exception("could not speak ticket news for %s: sending it as text", user_id)
        tried = [i.delivery for i in items if i.delivery is not None]
        if tried:
            key: int | None = min(tried)
        elif any(i.attempts for i in items):
            key = None
        else:
            key = min(i.id for i in items)
        return Delivery(user_id, text, audio, prefs.reply_mode, tuple(items), key)

    async def _tell_dms_closed(self, messenger: Messenger, user_id: str) -> None:
        channel_id = await self.store.last_channel(user_id)
        if channel_id is None:
            log.info("ticket news for %s: DMs closed and no channel to tell them in", user_id)
            return
        # Claimed before posting: at most one such message per closing of their DMs.
        if not await self.store.claim_closed_notice(user_id):
            return
        try:
            posted = await messenger.in_channel(user_id, channel_id, say.DMS_CLOSED_NOTICE)
        except Exception:
            log.exception("telling %s in channel %s that their DMs are closed failed", user_id, channel_id)
            posted = False
        if posted:
            log.info("ticket news for %s: DMs closed, told them in channel %s", user_id, channel_id)
