"""Which notes have been answered: the record that makes every note answered exactly once.

A front end claims a note here before answering it and marks it answered after, so two bot
processes on one `storage.dir` (a deploy overlapping the old one) never both answer it. A note
that arrives while the bot shuts down is recorded as pending; a note whose turn was cut short by
a crash stays claimed by a process that no longer exists. Both are answered after the restart,
but not a note whose turn MAX_CRASHES processes began and died in: that note may be what kills
them (native code decoding or hearing it), and answered at every restart it would keep the bot
down for every player.
The ledger also remembers the places notes came from, so the bot knows where to look for notes
sent while it was down.

Message ids are platform snowflakes: they grow with time, so the newest handled id of a place is
where reading its history resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import struct
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import aiosqlite

from bot.audio import ReplyAudio
from bot.bounded import remember
from bot.db import LOCK_HELD, add_missing_columns, first, opening, prune_due, running, while_locked, writing

log = logging.getLogger(__name__)

# Raised with each change to the schema or to what `open` migrates: an older voxdesk then refuses
# the file instead of running on a schema it does not know.
SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    message_id INTEGER PRIMARY KEY,
    place_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    state TEXT NOT NULL,        -- pending | started | answered | expired | refused
                                -- (expired: given up on, too old or nowhere to answer it)
    owner TEXT,                 -- '<pid>:<start>:<token>' of the process answering it ('started')
    lease_until REAL,           -- when a 'started' claim lapses whatever its owner
    updated_at REAL NOT NULL,
    crashes INTEGER NOT NULL DEFAULT 0  -- its turns whose process died before they ended
);
CREATE INDEX IF NOT EXISTS notes_by_state ON notes (state, message_id);
-- A start asks each place for its newest note answered: without this, a scan of every note each.
CREATE INDEX IF NOT EXISTS notes_by_place ON notes (place_id, state, message_id);
-- The hourly prune finds the settled notes past KEEP_SETTLED_SECONDS by this: through
-- notes_by_state it would read every note settled in that month, holding the write lock that each
-- note's claim waits on. Not (state, updated_at): SQLite would take that for a place's newest
-- note answered too, and read a month of every place's. An index only: an older voxdesk opens
-- the file and keeps it up to date.
CREATE INDEX IF NOT EXISTS notes_by_age ON notes (updated_at);
CREATE TABLE IF NOT EXISTS places (
    place_id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,         -- dm | channel
    user_id TEXT,               -- whose DM
    heard_at REAL               -- the newest note from there (NULL: before this was kept)
);
-- Answers made for notes given back before they were wholly posted (Discord failed part way, a
-- stop cut the send, a moderator's timeout): the recheck of any process, after a restart too,
-- sends the same answer, the parts Discord took left out, instead of making another whose
-- pieces would follow the first's. Kept while their note is pending or started.
CREATE TABLE IF NOT EXISTS answers (
    message_id INTEGER PRIMARY KEY,  -- the note answered
    user_id TEXT NOT NULL,           -- whose note (a player's export and erasure)
    made_at REAL NOT NULL,
    mode TEXT NOT NULL,              -- the reply style it was first sent in
    kind TEXT NOT NULL,              -- answer | refusal | apology | over_budget
    engine TEXT NOT NULL,
    text TEXT NOT NULL,              -- its words as the turn made them
    names TEXT NOT NULL,             -- JSON list: the player names the words may hold
    told TEXT NOT NULL,              -- JSON list: the ticket keys the words name
    posted TEXT NOT NULL,            -- JSON list: the parts Discord took, by their nonces' kinds
    audio BLOB,                      -- Ogg/Opus; NULL: none, or over MAX_KEPT_AUDIO_BYTES
    audio_seconds REAL,
    waveform TEXT
);
-- Places a catch-up is to read and has not read yet, and from when (Discord's clock, in seconds)
-- their notes are still to answer: a start reads them from there, not from their newest note
-- answered, which a note answered live meanwhile may have put after the notes missed. Gone once
-- a read of the place covers it. A channel's id negated: the listing of its archived threads,
-- whose threads are owed a read from then (Discord's ids are positive).
CREATE TABLE IF NOT EXISTS owed_reads (
    place_id INTEGER PRIMARY KEY,
    since REAL NOT NULL
);
-- Let go as its note is settled or pruned, by whichever process or path does it.
CREATE TRIGGER IF NOT EXISTS answers_settled AFTER UPDATE OF state ON notes
    WHEN NEW.state NOT IN ('pending', 'started')
    BEGIN DELETE FROM answers WHERE message_id = NEW.message_id; END;
CREATE TRIGGER IF NOT EXISTS answers_pruned AFTER DELETE ON notes
    BEGIN DELETE FROM answers WHERE message_id = OLD.message_id; END;
"""

# A claim outlives any turn: a download is given up after 30 s and a shutdown waits 20 s, so a
# claim this old belongs to a process that died (or an old process whose pid was reused).
LEASE_SECONDS = 15 * 60.0
KEEP_SETTLED_SECONDS = 30 * 24 * 3600.0
# A note whose turn this many processes began and never ended is refused, not answered again: it
# may be what kills them. Two, so a note cut once by a crash it did not cause (a deploy's kill -9,
# an out-of-memory kill during another player's turn) is still answered after the restart.
MAX_CRASHES = 2
# Each start reads every place the ledger knows (Discord cannot list a bot's DMs), a request or
# more each; a place silent this long is forgotten, and a note sent there while the bot is down
# is not seen. A note sent while it runs comes through the gateway and remembers it again.
KEEP_PLACE_SECONDS = 365 * 24 * 3600.0
PRUNE_EVERY_SECONDS = 3600.0
# A kept answer's audio above this is kept without it: Discord takes no larger upload where no
# boost raises the limit, and the words go instead there too. Spoken answers come far smaller.
MAX_KEPT_AUDIO_BYTES = 10 * 1024 * 1024
# The settled notes last changed before the cutoff: what prune drops. Named, since SQLite would
# rather take notes_by_state, knowing nothing of how few notes are past the cutoff.
SETTLED_BEFORE = (
    "DELETE FROM notes INDEXED BY notes_by_age"
    " WHERE state IN ('answered', 'expired', 'refused') AND updated_at < ?"
)
# The newest note answered in a place (before a time): one row of notes_by_place.
LAST_HANDLED = (
    "SELECT MAX(message_id) FROM notes WHERE place_id = ? AND state = 'answered' AND updated_at < ?"
)
# Notes a process answers while the ledger refuses to record them (a full or read-only disk) are
# held in the kernel instead, the newest this many: far more than are answered in a lease.
MAX_HELD_UNRECORDED = 1000
# Notes whose release the ledger refused (or, answered unrecorded, whose record), given back at
# the next look for notes to answer: far more than Discord fails in the while a disk stays full.
MAX_UNRELEASED = 1000
# Where in the holds file each process marks itself alive, one byte at a random place past this:
# above every message id (snowflakes reach it in 2084).
LIVE_MARKS = 2**63 - 2**40
# Where each process that answers Discord (the bot) marks itself, below the live marks.
DISCORD_MARKS = LIVE_MARKS - 2**40


@dataclasses.dataclass(frozen=True)
class Unanswered:
    message_id: int
    place_id: int
    user_id: str
    state: str
    # A 'started' note's claim: no reply of its turn can come after this (LEASE_SECONDS).
    lease_until: float | None = None
    # When the answer kept for it was written (time.time()), if one is: where the bot may not
    # read history, just before its first post.
    kept_at: float | None = None

    def posted_after(self) -> float | None:
        """A 'started' note's: the time every post of its turn came after, its claim's or, later,
        its answer's keeping."""
        if self.lease_until is None:
            return None
        return max(self.lease_until - LEASE_SECONDS, self.kept_at or 0.0)


@dataclasses.dataclass
class KeptAnswer:
    """An answer made for a note, kept until it is out: sent again, not made again, when Discord
    failed it, so the player never reads pieces of two answers (the pieces Discord took return
    by their nonces, and another answer's would follow them). The front end holds it while it
    sends; the ledger keeps it (the `answers` table) for the recheck after a restart or in another
    process. `mode`: the reply style it was first sent in; `names`: the player names its words
    may hold; `told`: the ticket keys they name; `posted`: the parts of it Discord took (see
    cogs.replies.send_answer); `audio`: None where it had none, or, once kept, was too big to
    keep."""

    user_id: str
    mode: str
    kind: str
    engine: str
    text: str
    names: list[str]
    told: list[str]
    posted: set[str]
    audio: ReplyAudio | None


class NoteLedger:
    def __init__(self, conn: aiosqlite.Connection, owner: str, holds: _Holds | None = None) -> None:
        self._conn = conn
        self.owner = owner
        self._holds = holds
        # One connection: a claim's transaction must not take in another coroutine's statements.
        self._lock = asyncio.Lock()
        self._pruned_at = 0.0
        # This process's claims of notes no turn answers any more: they look like turns still
        # running (never handed out again, LEASE_SECONDS or not) until given back. A note answered
        # unrecorded has no row to give back: its (place, user) to record it with instead.
        self._unreleased: dict[int, tuple[int, str] | None] = {}
        # Notes this process refused at their claim as MAX_CRASHES processes died in their turn,
        # until the front end asks (`crashed_out`): it tells their players.
        self._crashed_out: dict[int, int] = {}
        # Those being given back now: one claimed anew meanwhile leaves it, and is then no longer
        # owed if the write fails (the new turn's, not to hand out).
        self._giving_back: set[int] = set()
        # Notes this process answers though the ledger refused their claim, with their (place,
        # user) where known: no claim of this process's marks how their turn ended.
        self._unrecorded: dict[int, tuple[int, str] | None] = {}
        # How turns ended whose mark the ledger refused ('answered', 'expired'): marked at the
        # next look for notes to answer, or a restart would answer a note given back before.
        self._unmarked: dict[int, str] = {}

    @classmethod
    async def open(cls, path: Path | str) -> NoteLedger:
        # Autocommit, with BEGIN IMMEDIATE where a read and a write must be one transaction.
        async with opening(path, SCHEMA, version=SCHEMA_VERSION, autocommit=True) as conn:
            await add_missing_columns(conn, "places", {"heard_at": "REAL"})
            await add_missing_columns(conn, "notes", {"crashes": "INTEGER NOT NULL DEFAULT 0"})
            # Places kept before heard_at was: their year starts now.
            await conn.execute("UPDATE places SET heard_at = ? WHERE heard_at IS NULL", (time.time(),))
            holds = _Holds.beside(Path(path))
            ledger = cls(conn, _owner_id(holds.mark(LIVE_MARKS) if holds else None), holds)
            try:
                await ledger.prune()
            except BaseException:
                ledger.close_holds()
                raise
            return ledger

    async def prune(self, now: float | None = None) -> int:
        """Forget the settled notes older than any catch-up window: they only make the file grow.
        How many went."""
        now = time.time() if now is None else now
        self._pruned_at = now
        cursor = await self._write(SETTLED_BEFORE, (now - KEEP_SETTLED_SECONDS,))
        await self._write("DELETE FROM places WHERE heard_at < ?", (now - KEEP_PLACE_SECONDS,))
        # Answers whose note the ledger has no claim of (one answered unrecorded, never given
        # back): past a lease, none of its turns is sending them.
        await self._write(
            "DELETE FROM answers WHERE made_at < ? AND message_id NOT IN"
            " (SELECT message_id FROM notes WHERE state IN ('pending', 'started'))",
            (now - LEASE_SECONDS,),
        )
        return cursor.rowcount

    async def housekeeping(self, now: float | None = None) -> None:
        """prune(), at most every PRUNE_EVERY_SECONDS: for a running bot's frequent recheck."""
        now = time.time() if now is None else now
        if prune_due(now, self._pruned_at, PRUNE_EVERY_SECONDS):
            await self.prune(now)

    async def aclose(self) -> None:
        self.close_holds()
        await self._conn.close()

    def answer_discord(self) -> None:
        """Mark this process as one answering Discord, while the ledger is open: see
        `discord_elsewhere`."""
        if self._holds is not None:
            self._holds.mark(DISCORD_MARKS)

    def discord_elsewhere(self, unknown: bool = True) -> bool:
        """Whether another process on this storage answers Discord (a deploy overlapping this
        one); `unknown` where that cannot be told (not Linux, a file system that takes no locks)."""
        found = None if self._holds is None else self._holds.any_marked(DISCORD_MARKS, 2**40)
        return unknown if found is None else found

    def close_holds(self) -> None:
        if self._holds is not None:
            self._holds.close()

    # ---- one note -------------------------------------------------------------------------

    async def claim(self, message_id: int, place_id: int, user_id: str) -> bool:
        """Take the note for answering: True if this process should answer it now. False when it
        was answered or given up on, or another live process is answering it, or when this claim
        refused it, its turn begun by MAX_CRASHES processes that died (see `crashed_out`)."""
        now = time.time()
        async with self._transaction():
            rows = await self._conn.execute_fetchall(
                "SELECT state, owner, lease_until, crashes FROM notes WHERE message_id = ?", (message_id,)
            )
            row = first(rows)
            if row is not None and not self._claimable(row["state"], row["owner"], row["lease_until"], now):
                return False
            if self._holds is not None and self._holds.held_elsewhere(message_id):
                return False  # answered unrecorded by a process that is still running
            # A 'started' claim one may take whose process is gone: it died in the note's turn. Not
            # one whose lease lapsed under a live process (a turn stuck, not a crash).
            died = row is not None and row["state"] == "started" and not self._alive(row["owner"] or "")
            crashes = 0 if row is None else row["crashes"] + died
            if crashes >= MAX_CRASHES:
                await self._conn.execute(
                    "UPDATE notes SET state = 'refused', owner = NULL, lease_until = NULL,"
                    " updated_at = ?, crashes = ? WHERE message_id = ?",
                    (now, crashes, message_id),
                )
                remember(self._crashed_out, message_id, crashes, MAX_UNRELEASED)
                return False
            if died:
                # Said at the first death too: a crash's log then names the notes it had in hand.
                log.warning(
                    "note %s is answered again: the process answering it died (%d of %d)",
                    message_id,
                    crashes,
                    MAX_CRASHES,
                )
            await self._conn.execute(
                "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
                " VALUES (?, ?, ?, 'started', ?, ?, ?) ON CONFLICT (message_id) DO UPDATE SET"
                " state = 'started', owner = excluded.owner, lease_until = excluded.lease_until,"
                " updated_at = excluded.updated_at, crashes = ?",
                (message_id, place_id, user_id, self.owner, now + LEASE_SECONDS, now, crashes),
            )
        # A claim taken anew (once another process gave the note back) is a turn of its own: a
        # release still owed from an earlier one must not give it back.
        self._no_longer_owed(message_id)
        self._unrecorded.pop(message_id, None)
        return True

    async def suspect(self, message_id: int) -> bool:
        """Whether a process died in the note's turn before (counted, or a 'started' claim whose
        process is gone): it may be what killed it. The front end answers such notes one at a
        time, none claimed while another is in hand, so that the next death is counted against
        the note that causes it and not against every note a crash cut, answered again beside it."""
        rows = await self._conn.execute_fetchall(
            "SELECT state, owner, crashes FROM notes WHERE message_id = ?", (message_id,)
        )
        row = first(rows)
        if row is None or row["state"] not in ("pending", "started"):
            return False
        if row["crashes"]:
            return True
        owner = row["owner"] or ""
        return row["state"] == "started" and owner != self.owner and not self._alive(owner)

    async def refusal_untold(self, message_id: int) -> None:
        """Give back a note `claim` refused whose player Discord's trouble kept from being told:
        pending again with its deaths still counted, so the next claim of it (a recheck's, a
        restart's, another process's) refuses it again, without a turn, and tells them then."""
        await self._write(
            "UPDATE notes SET state = 'pending', updated_at = ? WHERE message_id = ? AND state = 'refused'",
            (time.time(), message_id),
        )

    def crashed_out(self, message_id: int) -> int | None:
        """Whether this process's claim of the note refused it (see `claim`): how many processes
        died in its turn, once, so its player is told once; None if not."""
        return self._crashed_out.pop(message_id, None)

    def claim_unrecorded(
        self, message_id: int, place_id: int | None = None, user_id: str | None = None
    ) -> bool:
        """When `claim` failed (a full or read-only disk refuses the write): whether this process
        may answer the note all the same. Another process on this storage (a deploy overlapping
        this one) gets the same note from Discord and fails the same way: the note is held by a
        lock in the kernel, which needs no disk, and the one that holds it answers. Held while this
        process runs, so a note arriving late at the other is not answered by it either, and a
        claim of it there once the disk takes writes again is refused."""
        if self._holds is None:
            mine = True  # nothing to hold it by: answered twice beats never
        else:
            mine = self._holds.take(message_id)
        if mine:
            # A turn of its own: a record of the note still owed from an earlier one would hand
            # this one's note out while it runs.
            self._no_longer_owed(message_id)
            where = None if place_id is None or user_id is None else (place_id, user_id)
            remember(self._unrecorded, message_id, where, MAX_HELD_UNRECORDED)
        return mine

    def _no_longer_owed(self, message_id: int) -> None:
        self._unreleased.pop(message_id, None)
        self._giving_back.discard(message_id)

    async def take_unrecorded(self, message_id: int, place_id: int, user_id: str) -> bool:
        """`claim_unrecorded`, unless the ledger, read after the note is held, says it is answered,
        given up on, or claimed by a live process: another bot whose claim landed before this
        one's failed (a database busy past its timeout here, a disk full since) holds no lock in
        the kernel for it, and both would answer it. Held first, so a claim landing after the
        read is refused by the hold."""
        if not self.claim_unrecorded(message_id, place_id, user_id):
            return False
        try:
            # Nor one its claim would refuse as crashing (see `claim`): a turn of it unrecorded
            # would be no death counted, and might take the bot down at every restart.
            taken = message_id not in await self.seen([message_id]) and not await self._crashing(message_id)
        except Exception as exc:
            log.debug("could not read note %s from the ledger either: %s", message_id, exc)
            return True  # answered twice beats never
        if not taken:
            self._unrecorded.pop(message_id, None)
            if self._holds is not None:
                self._holds.let_go(message_id)
        return taken

    async def _crashing(self, message_id: int) -> bool:
        """Whether the note's next claim would refuse it: MAX_CRASHES processes died in its turn,
        counting one whose claim it still holds."""
        rows = await self._conn.execute_fetchall(
            "SELECT state, owner, crashes FROM notes WHERE message_id = ?", (message_id,)
        )
        row = first(rows)
        if row is None or row["state"] not in ("pending", "started"):
            return False
        died = row["state"] == "started" and not self._alive(row["owner"] or "")
        return row["crashes"] + died >= MAX_CRASHES

    def _claimable(self, state: str, owner: str | None, lease_until: float | None, now: float) -> bool:
        if state == "pending":
            return True
        if state != "started" or owner == self.owner:
            return False
        return (lease_until or 0) < now or not self._alive(owner or "")

    def _alive(self, owner: str) -> bool:
        """Whether the process named in a claim may still be answering it. Its pid says so only
        in this pid namespace (a process in another container on this storage has a pid that here
        is gone or another process's), and only where /proc tells when it started (else a pid the
        system gave again, a container's pid 1 after a restart, passes). Its mark in the holds
        file, which the kernel drops when it dies, says so wherever it can be read."""
        mark = owner.split(":")[3:4]
        if mark and mark[0].isdigit() and self._holds is not None:
            held = self._holds.any_marked(int(mark[0]), 1)
            if held is not None:
                return held
        return _alive(owner)

    async def answered(self, message_id: int) -> None:
        await self._end(message_id, "answered")

    async def unanswerable(self, message_id: int) -> None:
        """A claimed note nothing could be posted for (the bot may not post where it was sent):
        given up on, like an expired one, so no restart tries it again."""
        await self._end(message_id, "expired")

    async def _end(self, message_id: int, state: str) -> None:
        """Where the ledger refuses the mark (a full disk), it is made at the next `unanswered`."""
        try:
            if message_id in self._unrecorded:
                await self._end_unrecorded(message_id, state)
            else:
                await self._set(message_id, state)
        except Exception:
            remember(self._unmarked, message_id, state, MAX_UNRELEASED)
            raise
        self._unmarked.pop(message_id, None)

    async def _end_unrecorded(self, message_id: int, state: str) -> None:
        # The note may have a row by now that no claim of this process's matches: given back
        # pending earlier (by this process or another), or left 'started' by a dead process.
        # Left so, a restart answers it again. A live process's claim is that one's to mark.
        where = self._unrecorded.get(message_id)
        now = time.time()
        async with self._transaction():
            rows = await self._conn.execute_fetchall(
                "SELECT state, owner, lease_until FROM notes WHERE message_id = ?", (message_id,)
            )
            row = first(rows)
            if row is None and where is not None:
                await self._conn.execute(
                    "INSERT INTO notes (message_id, place_id, user_id, state, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (message_id, *where, state, now),
                )
            elif row is not None and (
                row["owner"] == self.owner
                or self._claimable(row["state"], row["owner"], row["lease_until"], now)
            ):
                await self._conn.execute(
                    "UPDATE notes SET state = ?, owner = NULL, lease_until = NULL, updated_at = ?"
                    " WHERE message_id = ?",
                    (state, now, message_id),
                )
        self._unrecorded.pop(message_id, None)

    async def release(self, message_id: int) -> None:
        """Give a claimed note back, to be answered after a restart (a shutdown cut its turn) or
        by a running bot's recheck (Discord failed its answer). Where the ledger refuses it (a
        full disk, a database busy past its timeout), it is given back at the next `unanswered`."""
        await self._give_back(message_id, None)

    async def release_unrecorded(self, message_id: int, place_id: int, user_id: str) -> None:
        """`release` for a note answered though its claim was refused (`claim_unrecorded`): it is
        recorded as given back, and no longer held, so a recheck (of any process) answers it.
        Where the ledger refuses that too, it is recorded at the next `unanswered`."""
        self._unrecorded.pop(message_id, None)  # its turn is over: recorded pending, or owed so
        await self._give_back(message_id, (place_id, user_id))

    async def _give_back(self, message_id: int, unrecorded: tuple[int, str] | None) -> None:
        """Give the note back, or owe it where the ledger refuses. `unrecorded`: its (place, user)
        for a note answered unrecorded."""
        self._unreleased.pop(message_id, None)
        self._giving_back.add(message_id)
        try:
            if unrecorded is None:
                await self._set(message_id, "pending")
            else:
                await self._give_back_unrecorded(message_id, *unrecorded)
        except Exception:
            # Unless a claim took it anew while the write waited (a catch-up read it again).
            if message_id in self._giving_back:
                remember(self._unreleased, message_id, unrecorded, MAX_UNRELEASED)
            raise
        finally:
            self._giving_back.discard(message_id)

    async def _give_back_unrecorded(self, message_id: int, place_id: int, user_id: str) -> None:
        # A row there already is another's (kept for a restart, answered, a claim): left as it is.
        await self._write(
            "INSERT INTO notes (message_id, place_id, user_id, state, updated_at)"
            " VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (message_id) DO NOTHING",
            (message_id, place_id, user_id, time.time()),
        )
        # Only once it is recorded: another process claiming it in between would find neither.
        if self._holds is not None:
            self._holds.let_go(message_id)

    async def _release_again(self) -> None:
        while self._unmarked:
            message_id, state = next(iter(self._unmarked.items()))
            try:
                await self._end(message_id, state)
            except Exception as exc:
                log.debug("could not mark note %s %s yet: %s", message_id, state, exc)
                return  # the ledger still refuses: the rest wait for the next look too
            log.info("note %s marked %s: the ledger takes writes again", message_id, state)
        while self._unreleased:
            # Taken out (by _give_back) before the write: two looks at once (a start-up's catch-up
            # and a recheck) giving one note back twice would give back the claim of the turn
            # answering it.
            message_id, unrecorded = next(iter(self._unreleased.items()))
            try:
                await self._give_back(message_id, unrecorded)
            except Exception as exc:
                log.debug("could not give note %s back to be answered yet: %s", message_id, exc)
                return  # the ledger still refuses: the rest wait for the next look too
            log.info("note %s given back to be answered: the ledger takes writes again", message_id)

    async def keep_answer(self, message_id: int, answer: KeptAnswer) -> None:
        """Keep the answer made for a note about to be given back, with the parts of it posted so
        far, for whichever recheck answers the note next: before the note is given back, so no
        process claims it first and finds none."""
        audio = answer.audio
        if audio is not None and audio.size > MAX_KEPT_AUDIO_BYTES:
            audio = None
        ogg, seconds, waveform = (
            (None, None, None) if audio is None else (audio.ogg, audio.duration_secs, audio.waveform)
        )
        await self._write(
            "INSERT OR REPLACE INTO answers (message_id, user_id, made_at, mode, kind, engine, text,"
            " names, told, posted, audio, audio_seconds, waveform)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message_id,
                answer.user_id,
                time.time(),
                answer.mode,
                answer.kind,
                answer.engine,
                answer.text,
                json.dumps(answer.names),
                json.dumps(answer.told),
                json.dumps(sorted(answer.posted)),
                ogg,
                seconds,
                waveform,
            ),
        )

    async def answer_posted(self, message_id: int, posted: set[str]) -> None:
        """The parts of the answer kept for the note that Discord has taken by now (a send given up
        on goes on by itself); nothing if it is kept no more."""
        await self._write(
            "UPDATE answers SET posted = ? WHERE message_id = ?", (json.dumps(sorted(posted)), message_id)
        )

    async def kept_answer(self, message_id: int) -> KeptAnswer | None:
        """The answer kept for the note (`keep_answer`), if any."""
        rows = await self._conn.execute_fetchall("SELECT * FROM answers WHERE message_id = ?", (message_id,))
        row = first(rows)
        if row is None:
            return None
        audio = (
            None
            if row["audio"] is None
            else ReplyAudio(bytes(row["audio"]), row["audio_seconds"], row["waveform"])
        )
        return KeptAnswer(
            user_id=row["user_id"],
            mode=row["mode"],
            kind=row["kind"],
            engine=row["engine"],
            text=row["text"],
            names=json.loads(row["names"]),
            told=json.loads(row["told"]),
            posted=set(json.loads(row["posted"])),
            audio=audio,
        )

    async def keep_for_restart(self, message_id: int, place_id: int, user_id: str) -> bool:
        """Record a note that arrived while shutting down; False if it was known already."""
        cursor = await self._write(
            "INSERT INTO notes (message_id, place_id, user_id, state, updated_at)"
            " VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (message_id) DO NOTHING",
            (message_id, place_id, user_id, time.time()),
        )
        return cursor.rowcount == 1

    async def turned_away(self, message_id: int, place_id: int, user_id: str) -> bool:
        """A note the player was told to send again (a flood), or a message told how to send one:
        never answered later. False if the ledger knew it already (another process told them)."""
        cursor = await self._write(
            "INSERT INTO notes (message_id, place_id, user_id, state, updated_at)"
            " VALUES (?, ?, ?, 'refused', ?) ON CONFLICT (message_id) DO NOTHING",
            (message_id, place_id, user_id, time.time()),
        )
        return cursor.rowcount == 1

    async def expire(self, message_ids: list[int]) -> None:
        """Notes too old to answer now: never answered, whoever asks later."""
        now = time.time()
        await self._write_many(
            "UPDATE notes SET state = 'expired', owner = NULL, updated_at = ? WHERE message_id = ?"
            " AND state IN ('pending', 'started')",
            [(now, m) for m in message_ids],
        )

    async def withdrawn(self, message_ids: list[int]) -> list[tuple[int, int]]:
        """Notes their players deleted: never answered, whoever asks later. Those kept for later
        or given back, and those a dead process or another live one holds (which hears of the
        deletion too); a claim of this process's is its turn's to settle. Returns those of them
        that were waiting for an answer here, with their places."""
        waiting: list[tuple[int, int]] = []
        for start in range(0, len(message_ids), 500):  # within SQLite's bound on parameters
            chunk = message_ids[start : start + 500]
            rows = await self._conn.execute_fetchall(
                "SELECT message_id, place_id FROM notes WHERE state IN ('pending', 'started')"
                f" AND owner IS NOT ? AND message_id IN ({','.join('?' * len(chunk))})",
                [self.owner, *chunk],
            )
            waiting += [(row["message_id"], row["place_id"]) for row in rows]
        now = time.time()
        await self._write_many(
            "UPDATE notes SET state = 'expired', owner = NULL, lease_until = NULL, updated_at = ?"
            " WHERE message_id = ? AND state IN ('pending', 'started') AND owner IS NOT ?",
            [(now, m, self.owner) for m in message_ids],
        )
        return waiting

    async def answered_before_a_crash(self, message_ids: list[int]) -> None:
        """Notes whose turn a dead process had started and whose reply it got out before dying:
        answered, so neither a later start nor a running bot's recheck answers them again."""
        now = time.time()
        await self._write_many(
            "UPDATE notes SET state = 'answered', owner = NULL, lease_until = NULL, updated_at = ?"
            " WHERE message_id = ? AND state = 'started'",
            [(now, m) for m in message_ids],
        )

    async def _set(self, message_id: int, state: str) -> None:
        await self._write(
            "UPDATE notes SET state = ?, owner = NULL, lease_until = NULL, updated_at = ?"
            " WHERE message_id = ? AND owner = ?",
            (state, time.time(), message_id, self.owner),
        )

    async def _write(self, sql: str, parameters: tuple[object, ...]) -> aiosqlite.Cursor:
        """One statement that writes, by itself, tried again while SQLite refuses it at once."""
        async with self._lock:
            return await while_locked(lambda: self._conn.execute(sql, parameters))

    async def _write_many(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        async with self._lock:
            await while_locked(lambda: self._conn.executemany(sql, rows))

    # ---- what to look at after a start --------------------------------------------------------

    async def seen(self, message_ids: list[int]) -> set[int]:
        """Those of `message_ids` that were answered, given up on, or are being answered."""
        if not message_ids:
            return set()
        marks = ",".join("?" * len(message_ids))
        rows = await self._conn.execute_fetchall(
            f"SELECT message_id, state, owner, lease_until FROM notes WHERE message_id IN ({marks})",
            message_ids,
        )
        now = time.time()
        return {
            row["message_id"]
            for row in rows
            if not self._claimable(row["state"], row["owner"], row["lease_until"], now)
        }

    async def unanswered(self) -> list[Unanswered]:
        """Notes kept for a restart, notes whose turn a dead process never finished, and notes
        given back (their release, refused before, among them)."""
        await self._release_again()
        # After the claims already waiting: a start-up catch-up's answers claim a dead process's
        # notes just as the first recheck lists them, and each listed before its claim landed
        # would be fetched and its reply searched for (up to 50 pages of history) for nothing.
        async with self._lock:
            rows = await self._conn.execute_fetchall(
                "SELECT message_id, place_id, notes.user_id, state, owner, lease_until, made_at"
                " FROM notes LEFT JOIN answers USING (message_id)"
                " WHERE state IN ('pending', 'started') ORDER BY message_id"
            )
        now = time.time()
        # Notes this process answers (or answered) unrecorded are its own, whatever their row
        # says: listed, each recheck would fetch them from Discord for no answer.
        return [
            Unanswered(
                row["message_id"],
                row["place_id"],
                row["user_id"],
                row["state"],
                row["lease_until"],
                row["made_at"],
            )
            for row in rows
            if self._claimable(row["state"], row["owner"], row["lease_until"], now)
            and row["message_id"] not in self._unrecorded
        ]

    async def to_answer(self, message_id: int) -> bool:
        """Whether the note is still to be answered: kept for a restart, given back by a turn a
        stop cut, or being answered (by a live process, or left by a dead one for the next)."""
        rows = await self._conn.execute_fetchall(
            "SELECT state FROM notes WHERE message_id = ?", (message_id,)
        )
        row = first(rows)
        return row is not None and row["state"] in ("pending", "started")

    async def last_handled(self, place_id: int, answered_before: float | None = None) -> int | None:
        """The newest note answered in the place; of those answered before `answered_before`
        (time.time()) if given."""
        rows = await self._conn.execute_fetchall(
            LAST_HANDLED,
            (place_id, float("inf") if answered_before is None else answered_before),
        )
        row = first(rows)
        return row[0] if row else None

    async def owe_reads(self, place_ids: Iterable[int], since: float) -> None:
        """Places a catch-up could not read, whose notes from `since` (a Unix time) are still to
        answer, after a restart too; an earlier `since` owed before stays."""
        await self._write_many(
            "INSERT INTO owed_reads (place_id, since) VALUES (?, ?)"
            " ON CONFLICT (place_id) DO UPDATE SET since = MIN(since, excluded.since)",
            [(place_id, since) for place_id in place_ids],
        )

    async def owed_reads(self) -> dict[int, float]:
        """The places owed a read (`owe_reads`), with when their notes to answer begin."""
        rows = await self._conn.execute_fetchall("SELECT place_id, since FROM owed_reads WHERE place_id > 0")
        return {row[0]: row[1] for row in rows}

    async def owe_listings(self, channel_ids: Iterable[int], since: float) -> None:
        """Channels whose archived threads a catch-up is to list: every thread of theirs is owed a
        read from `since`, after a restart too; an earlier `since` owed before stays."""
        await self.owe_reads((-channel_id for channel_id in channel_ids), since)

    async def owed_listings(self) -> dict[int, float]:
        """The channels owed a listing (`owe_listings`), with when their threads' notes begin."""
        rows = await self._conn.execute_fetchall("SELECT -place_id, since FROM owed_reads WHERE place_id < 0")
        return {row[0]: row[1] for row in rows}

    async def listed_through(self, channel_id: int, since: float, cutoff: float) -> None:
        """`read_through` for a channel's listing: its threads archived since `since` were listed,
        and each is owed a read of its own."""
        await self.read_through(-channel_id, since, cutoff)

    async def read_through(self, place_id: int, since: float, cutoff: float) -> None:
        """The place was read from `since`, and notes sent before `cutoff` are too old to answer:
        what it owed from then on is paid."""
        await self._write(
            "DELETE FROM owed_reads WHERE place_id = ? AND MAX(since, ?) >= ?", (place_id, cutoff, since)
        )

    async def remember_place(
        self, place_id: int, kind: str, user_id: str | None = None, now: float | None = None
    ) -> None:
        await self._write(
            "INSERT INTO places (place_id, kind, user_id, heard_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (place_id) DO UPDATE SET heard_at = excluded.heard_at",
            (place_id, kind, user_id, time.time() if now is None else now),
        )

    async def forget_place(self, place_id: int, heard_before: float) -> None:
        """A place Discord no longer has (404 Unknown Channel): no catch-up is to look for notes
        there, unless one was heard from there since `heard_before` (a Unix time)."""
        await self._write("DELETE FROM places WHERE place_id = ? AND heard_at < ?", (place_id, heard_before))

    async def dms(self) -> list[tuple[int, str | None]]:
        """The DMs notes came from, with whose each is, the one heard from most recently first:
        the likeliest to hold a note sent while the bot was down."""
        rows = await self._conn.execute_fetchall(
            "SELECT place_id, user_id FROM places WHERE kind = 'dm' ORDER BY heard_at DESC, place_id"
        )
        return [(row[0], row[1]) for row in rows]

    # ---------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT under the ledger's lock: the read and the write of a claim
        hold the write lock together, so two processes cannot both see a note unclaimed. What a
        refused statement or COMMIT leaves open is rolled back (bot.db.writing)."""
        async with writing(self._conn, self._lock):
            await while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            yield
            await self._conn.execute("COMMIT")


def holds_beside(ledger: Path) -> Path:
    """The file of the kernel locks (`_Holds`) beside the notes ledger at `ledger`."""
    return ledger.with_name(ledger.name + ".holds")


class _Holds:
    """Notes held by open-file-description locks, one byte each at the note's id, on a file beside
    the ledger: they conflict between processes, and between two ledgers one process opened, and
    the kernel drops them when the holder dies, however it dies."""

    def __init__(self, path: Path, fd: int) -> None:
        self._path = path
        self._fd = fd
        self._held: dict[int, None] = {}

    @classmethod
    def beside(cls, ledger: Path) -> _Holds | None:
        """Made while the disk takes writes (at start), it holds notes once it no longer does."""
        if not hasattr(fcntl, "F_OFD_SETLK"):  # not Linux: claims are the ledger's alone
            return None
        path = holds_beside(ledger)
        try:
            return cls(path, os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            log.warning("could not open %s (a note the ledger refuses may be answered twice): %s", path, exc)
            return None

    def take(self, message_id: int) -> bool:
        if message_id in self._held:
            return True
        try:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, message_id))
        except OSError as exc:
            if exc.errno in LOCK_HELD:
                return False
            # A file system without such locks: answered twice beats never.
            log.warning("could not hold note %s in %s: %s", message_id, self._path, exc)
            return True
        self._held[message_id] = None
        while len(self._held) > MAX_HELD_UNRECORDED:
            oldest = next(iter(self._held))
            del self._held[oldest]
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, oldest))
        return True

    def let_go(self, message_id: int) -> None:
        if message_id in self._held:
            del self._held[message_id]
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, message_id))

    def mark(self, marks: int) -> int | None:
        """Mark this process at a random byte of the 2**40 from `marks`, for as long as it holds the
        file open: where, or None."""
        offset = marks + secrets.randbelow(2**40 - 1)
        try:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, offset))
        except OSError as exc:
            log.warning("could not mark this process in %s: %s", self._path, exc)
            return None
        return offset

    def any_marked(self, start: int, length: int) -> bool | None:
        """Whether another holds a mark in the `length` bytes from `start`; None if unknown."""
        try:
            found = fcntl.fcntl(self._fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, start, length))
        except OSError:
            return None
        return struct.unpack(_FLOCK, found)[0] != fcntl.F_UNLCK

    def held_elsewhere(self, message_id: int) -> bool:
        # On a file system without such locks (None): none held there.
        return message_id not in self._held and self.any_marked(message_id, 1) is True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # and with it every hold
            self._fd = -1


# struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (0 for an OFD lock).
_FLOCK = "hhqqi4x"


def _flock(kind: int, start: int, length: int = 1) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0)


def _process_start(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, from /proc), or "" where unknown: a pid
    the system reused for a new process (a container's pid 1 after a restart) starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces


def _owner_id(mark: int | None = None) -> str:
    """'<pid>:<start>:<token>', and ':<mark>' where the process marked itself alive."""
    pid = os.getpid()
    owner = f"{pid}:{_process_start(pid)}:{uuid.uuid4().hex[:12]}"
    return owner if mark is None else f"{owner}:{mark}"


def _alive(owner: str) -> bool:
    """Whether the process named in a claim may still be answering it."""
    pid_text, _, rest = owner.partition(":")
    started = rest.partition(":")[0]
    if not pid_text.isdigit() or not running(int(pid_text)):
        return False
    return not started or _process_start(int(pid_text)) in ("", started)
