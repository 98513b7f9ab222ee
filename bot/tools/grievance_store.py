"""The local grievance store: every grievance is written here first, whatever the backend.

It is the embedded default's whole ticket system (keys like GRV-12) and, with Jira switched on,
the outbox that guarantees a grievance survives a Jira outage or a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bot import db as bot_db
from bot import metrics
from bot import sentences as say
from bot.config import NeedsHuman
from bot.db import (
    add_missing_columns,
    first,
    naming,
    no_database,
    only_in_log,
    open_read_only,
    opening,
    private_file,
    read_only_uri,
    readable,
    refuse_newer,
    restore_from_log,
    roll_back,
    while_locked,
    writing,
)
from bot.instants import instant
from bot.logs import STORE_LINE, Outage
from bot.tools import complaint_key, filed_in, filing_turn, same_complaint, typed_key
from bot.tools.base import DECLINED, DUPLICATE, MAX_LISTED, Filing, Grievance, ToolError
from bot.tools.grievance_spool import UNFILED, GrievanceSpool, spool_line

log = logging.getLogger(__name__)

KEY_PREFIX = "GRV"
MAX_ERROR_CHARS = 500
# Grievances held in memory while neither the database nor the spool takes any (a full disk):
# beyond this many the player is told it was not filed.
MAX_HELD = 1000
# Kept before it could choose its filing id (cut short, or the read it chooses from refused), a
# complaint is kept under its turn, this mark and a random part: no place in the turn, which a later
# run may give another complaint. Filed from the spool, it is matched to the turn's filings by its
# words (_file_kept).
UNCHOSEN = "?"
# How long a claim on a complaint's words (`claim_words`) waits for its filing before a repeat
# may file in its place: well past a filing's two busy waits (the database's, then the spool's),
# so a repeat is held back only when the filing's process died. A filing still running in this
# process (queued behind a busy database) has its claim renewed every quarter of it.
FILING_LEASE_SECONDS = 120.0
# A double submit of /grievance file (the command sent again while the first was filing, or a
# minute later because its answer was slow) is told the first ticket within this window: a claim
# in lately_filed is of no use to anyone after it.
RESUBMIT_SECONDS = 600.0
# The claims no repeat reads any more (now - the window, now): pruned by each claim, a running
# bot's housekeeping and `player forget`.
LATELY_GONE = "at < ? AND lease_until < ?"
# How long a claim waits for a busy database before its filing goes ahead unclaimed: the filing
# waits the database's full busy wait (BUSY_SECONDS) after it, and the player hears nothing
# meanwhile; a claim is a check for a double submit, worth seconds, not a wait of its own.
CLAIM_WAIT_SECONDS = 5.0
# How often a running bot files what the spool or memory holds, with nothing else to prompt it
# (no filing, no look at tickets, ticket news off): until filed it has no key, is on no desk,
# and cannot go to Jira.
REFILE_SECONDS = 30.0
# How often a filing chooses its id again when another process takes the one it chose meanwhile.
MAX_CHOICES = 5

# Raised with each change to the schema or to what `open` migrates: an older voxdesk then refuses
# the file instead of running on a schema it does not know.
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS grievances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    local_key TEXT UNIQUE,
    user_id TEXT NOT NULL,
    category TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    remote_key TEXT,
    push_state TEXT NOT NULL DEFAULT 'local_only',  -- local_only | pending | pushed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_try_at REAL,  -- unix time: a pusher's claim on the row, or when to try it again
    -- a filing id: a note's (filed once however often its turn runs) or a spool line's
    -- (grievance_spool.py: filed once, whatever happens)
    spool_id TEXT,
    -- 1: its player never heard its key (filed from the spool, or the answer telling it was lost)
    filed_late INTEGER NOT NULL DEFAULT 0,
    -- when the tracker answered that it no longer has the pushed issue (deleted, or moved out of
    -- its project): worked on the desk again, its status the local one
    gone_at TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Support staff's notes on a grievance (the web desk); never shown to the player.
CREATE TABLE IF NOT EXISTS staff_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grievance_id INTEGER NOT NULL REFERENCES grievances (id),
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS staff_notes_by_grievance ON staff_notes (grievance_id, id);
CREATE INDEX IF NOT EXISTS grievances_by_user ON grievances (user_id, id);
CREATE INDEX IF NOT EXISTS grievances_pending ON grievances (push_state);
CREATE INDEX IF NOT EXISTS grievances_by_time ON grievances (created_at, id);
-- The desk's page and count of one status ("open" among a year's resolved ones), which through
-- grievances_by_time read every grievance. An index only: schema 1 still, which every voxdesk opens.
CREATE INDEX IF NOT EXISTS grievances_by_status ON grievances (status, created_at, id);
"""
# Each grievance's status history (its page on the desk): a row of `meta` named this and the
# grievance's id, its value a JSON list of changes, oldest first ({"at", "from", "to", "by": a
# staff account's name | staff | jira}; any text: an older voxdesk shows a name it does not know
# as it is). In `meta`, not a table of its own: a new table would raise SCHEMA_VERSION, and an older
# voxdesk, which reads only meta's store_id, would then refuse the file after a rollback (see
# RECENT below). Kept as long as its grievance, its newest STATUS_CHANGES_KEPT changes: a status
# set back and forth without end (a script, a Jira automation) grows it no further.
STATUS_HISTORY = "status_history:"
# The row of `meta` holding the newest issue the tracker made and then hid from the bot's account
# (an issue security level it is not in), while it hides them: `check` is a process of its own.
HIDDEN = "hidden_issue"
# The rows of `meta` holding the issue a create made for a pending grievance, kept from the create's
# answer until the grievance is marked pushed: a process stopped in between finds the issue by it
# after a restart, where a search by its key label leaves out one Jira hides from the account.
CREATED = "created_issue:"
STATUS_CHANGES_KEPT = 50
# Complaints filed lately by a front end that tells a repeat the first ticket (/grievance file),
# in a database of their own beside grievances.db (`recent_beside`), attached to the store's
# connection as `recent`: a claim and the grievances it reads are still one transaction, while
# grievances.db keeps a schema an older voxdesk opens after a rollback, with every grievance in it.
RECENT_SCHEMA_VERSION = 1
RECENT = "recent"
# What to do with a grievances-recent.db a newer voxdesk wrote: no backup holds a copy of it
# (bot/backup.py), and its claims are of use for RESUBMIT_SECONDS only.
RECENT_REMEDY = (
    "upgrade voxdesk, or stop every voxdesk on this storage folder and delete the file: it holds only"
    f" the last {RESUBMIT_SECONDS / 60:g} minutes' claims that tell a /grievance file repeat its first"
    " ticket, and the bot makes it anew"
)
RECENT_SCHEMA = """
-- By a hash of player, category and words (no words kept): in a file, so a restart or a second
-- bot on this storage folder knows them too.
CREATE TABLE IF NOT EXISTS recent.lately_filed (
    words_hash TEXT PRIMARY KEY,
    turn TEXT NOT NULL,         -- the filing's "platform:request:": its grievance's filing id starts so
    at REAL NOT NULL,           -- unix time of the claim
    lease_until REAL NOT NULL,  -- while its filing may still be under way
    kept TEXT                   -- what the player was told when it was kept for later
);
"""
# After the columns an older database lacks have been added (the triggers name them).
INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS grievances_by_spool_id ON grievances (spool_id);
-- What may be news for a player (bot/ticket_news.py reads and then drops these). Triggers, so a
-- change made by anything that writes the file counts: this process, a CLI `ask`, or support staff
-- setting a status with the sqlite3 shell.
CREATE TABLE IF NOT EXISTS news_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grievance_id INTEGER NOT NULL,
    kind TEXT NOT NULL,  -- filed_late | pushed | status | moved
    was TEXT  -- moved: the remote key before
);
CREATE TRIGGER IF NOT EXISTS news_filed_late AFTER INSERT ON grievances WHEN NEW.filed_late = 1
BEGIN INSERT INTO news_events (grievance_id, kind) VALUES (NEW.id, 'filed_late'); END;
CREATE TRIGGER IF NOT EXISTS news_pushed AFTER UPDATE OF push_state ON grievances
WHEN NEW.push_state = 'pushed' AND OLD.push_state IS NOT 'pushed'
BEGIN INSERT INTO news_events (grievance_id, kind) VALUES (NEW.id, 'pushed'); END;
CREATE TRIGGER IF NOT EXISTS news_status AFTER UPDATE OF status ON grievances
WHEN NEW.status IS NOT OLD.status
BEGIN INSERT INTO news_events (grievance_id, kind) VALUES (NEW.id, 'status'); END;
-- A row gets its key in the statement that inserts it: no row can ever be committed without one,
-- whatever stops its filing half-way. Rows a filing cut short before this trigger get theirs here.
CREATE TRIGGER IF NOT EXISTS grievance_key AFTER INSERT ON grievances WHEN NEW.local_key IS NULL
BEGIN UPDATE grievances SET local_key = '{prefix}-' || NEW.id WHERE id = NEW.id; END;
UPDATE grievances SET local_key = '{prefix}-' || id WHERE local_key IS NULL;
""".replace("{prefix}", KEY_PREFIX)
# After news_events has its `was` column. The tracker gave a pushed issue another key (moved to
# another project, or the project's key changed): the player is told the new one.
MOVES = """
CREATE TRIGGER IF NOT EXISTS news_moved AFTER UPDATE OF remote_key ON grievances
WHEN OLD.remote_key IS NOT NULL AND NEW.remote_key IS NOT NULL AND NEW.remote_key IS NOT OLD.remote_key
BEGIN INSERT INTO news_events (grievance_id, kind, was) VALUES (NEW.id, 'moved', OLD.remote_key); END;
"""


class StatusChanged(Exception):
    """A staff status change refused: the grievance's status is no longer the one staff saw."""

    def __init__(self, row: StaffRow) -> None:
        super().__init__(f"{row.local_key} is {row.status} now")
        self.row = row


class WaitsForJira(Exception):
    """A refusal (REFUSALS) set on a grievance that waits to reach Jira: the push would give its
    issue Jira's To Do, and its player, told it was closed, would hear it open again."""

    def __init__(self, row: StaffRow) -> None:
        super().__init__(f"{row.local_key} waits to reach Jira")
        self.row = row


class WorkedInJira(Exception):
    """A staff status change or note refused: the tracker, not the desk, works the grievance now."""

    def __init__(self, row: StaffRow) -> None:
        super().__init__(f"{row.local_key} is worked in Jira")
        self.row = row


@dataclass(frozen=True)
class Lately:
    """What `claim_words` found of a complaint filed lately: its ticket's key, or what its player
    was told when it was kept for later, or that its filing is still under way; none of them: the
    claim is the caller's, and it files the complaint."""

    key: str | None = None
    kept: str | None = None
    busy: bool = False
    turn: str | None = None  # busy: the turn ("platform:request:") whose filing holds the words


@dataclass(frozen=True)
class PendingGrievance:
    """A grievance the remote tracker has not acknowledged yet: what the outbox pushes."""

    local_key: str
    user_id: str
    category: str
    description: str
    created_at: str
    attempts: int
    last_error: str | None
    # As staff set it on the desk while it waited (tools.grievances = "local" during an outage):
    # the push gives the issue this status too, so Jira never contradicts what the player was told.
    status: str = "open"
    # A push took it before (a claim or a failure is on the row): only then may an issue in Jira
    # be its own from a create whose answer was lost.
    tried: bool = False


# A grievance the desk works with Jira on: one that never goes there, or one Jira no longer has
# (StaffRow.desk_works says the same of a row read).
DESK_WORKS = "(push_state = 'local_only' OR gone_at IS NOT NULL)"


# Closing outcomes that say no fix was made: the words a Jira issue's copy reads as when staff
# turned it down there, and that staff set on the desk. No Jira status category matches them (a
# push could not give an issue one), so a grievance waiting for Jira cannot take them.
REFUSALS = (DECLINED, DUPLICATE)
# Statuses staff can set on the desk; the seed and older rows use the same words. The column is
# free text: a refusal needs no new schema, and an older voxdesk reads one as Jira's copy.
STAFF_STATUSES = ("open", "in progress", "waiting on player", "resolved", "closed", *REFUSALS)
# Those a player has nothing more to wait for.
FINISHED_STATUSES = ("resolved", "closed", *REFUSALS)
# Every status a grievance has (the desk lists by them).
STATUSES = STAFF_STATUSES
CATEGORIES = ("wallet", "reward_points", "gaming_experience", "usage_history", "other")


@dataclass(frozen=True)
class StaffRow:
    """A grievance as the support desk sees it: every field, whoever filed it."""

    id: int
    local_key: str
    remote_key: str | None
    user_id: str
    category: str
    description: str
    status: str
    created_at: str
    updated_at: str
    push_state: str
    last_error: str | None
    gone_at: str | None = None  # the tracker no longer has its issue: worked on the desk again

    @property
    def desk_works(self) -> bool:
        """Whether the desk works it with Jira on (DESK_WORKS, of a row read): it never goes to
        Jira, or Jira no longer has it."""
        return self.push_state == "local_only" or self.gone_at is not None


@dataclass(frozen=True)
class StaffNote:
    author: str
    body: str
    created_at: str


@dataclass(frozen=True)
class StatusChange:
    """A change of a grievance's status: when (UTC), from and to what, and who made it (a staff
    account's name, "staff" for the desk's shared password, or jira: found there by the bot)."""

    at: str
    from_status: str
    to_status: str
    changed_by: str


def status_changes(value: str | None) -> list[StatusChange]:
    """A status history as `meta` keeps it (STATUS_HISTORY); none for a value that is not one (a
    row edited by hand)."""
    try:
        kept = json.loads(value or "[]")
        return [StatusChange(c["at"], c["from"], c["to"], c["by"]) for c in kept]
    except (ValueError, TypeError, KeyError):
        return []


@dataclass(frozen=True)
class GrievanceEvent:
    """Something that happened to a grievance (see news_events), with the grievance as it is now."""

    id: int
    kind: str  # filed_late | pushed | status
    user_id: str
    local_key: str
    remote_key: str | None
    category: str
    description: str
    status: str
    created_at: str
    push_state: str
    attempts: int
    filed_late: bool  # its player never heard its key (see the column)
    spool_id: str | None  # its filing id: the turn it was filed in (bot/tools/__init__.py), if any
    gone: bool = False  # the tracker no longer has its issue: worked on the desk again
    was: str | None = None  # moved: its remote key before


def recent_beside(grievances: Path | str) -> Path:
    """The file of the claims of complaints filed lately, beside the grievances' `grievances`."""
    path = Path(grievances)
    return path.with_name(f"{path.stem}-recent{path.suffix}")


async def _attach_recent(conn: aiosqlite.Connection, recent: Path) -> None:
    """Attach `recent` as RECENT, opened as bot.db opens a database: owner-only, restored from its
    log, a newer schema refused before anything is written to it, WAL, then made and stamped.
    NORMAL sync: a power cut may take its last claims, and a repeat then files a second ticket."""
    await asyncio.to_thread(restore_from_log, recent)
    private_file(recent)
    try:
        await conn.execute(f"ATTACH DATABASE ? AS {RECENT}", (str(recent),))
        (found,) = first(await conn.execute_fetchall(f"PRAGMA {RECENT}.user_version")) or (0,)
    except sqlite3.Error as exc:
        raise bot_db.naming(recent, exc, remade=True) from exc
    if (refused := bot_db.newer_schema(recent, found, RECENT_SCHEMA_VERSION, RECENT_REMEDY)) is not None:
        raise refused
    try:
        await while_locked(lambda: conn.execute(f"PRAGMA {RECENT}.journal_mode=WAL"))
        await conn.execute(f"PRAGMA {RECENT}.synchronous=NORMAL")
        await conn.executescript(RECENT_SCHEMA)
        if found < RECENT_SCHEMA_VERSION:
            await conn.execute(f"PRAGMA {RECENT}.user_version = {RECENT_SCHEMA_VERSION}")
        await conn.commit()
    except sqlite3.Error as exc:
        raise bot_db.naming(recent, exc, remade=True) from exc


def _renew(recent: Path, attached: tuple[int, int], claims: list[tuple[str, str]], until: float) -> None:
    """Extend the lease of `claims` (hash, turn) to `until` in `recent`, if it is still the file
    attached (`attached`: device and inode): one put in its place holds none of them. A claim
    settled meanwhile (lease 0) stays settled."""
    with contextlib.closing(
        sqlite3.connect(f"{recent.resolve().as_uri()}?mode=rw", uri=True, timeout=CLAIM_WAIT_SECONDS)
    ) as conn:
        if _file_id(recent) != attached:
            return
        with conn:
            conn.executemany(
                "UPDATE lately_filed SET lease_until = ? WHERE words_hash = ? AND turn = ?"
                " AND lease_until > 0 AND lease_until < ?",
                [(until, digest, turn, until) for digest, turn in claims],
            )


def _file_id(path: Path) -> tuple[int, int] | None:
    """The device and inode at `path`, None when nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


async def _attach_recent_or_memory(
    conn: aiosqlite.Connection, recent: Path, warn: bool = True
) -> tuple[int, int] | None:
    """`_attach_recent`, or, when that file cannot serve (torn, not a database, a newer schema, an
    unwritable folder), an empty one in memory: the claims only stop a repeat from filing twice,
    and a broken file of them must not stop every grievance from being filed. This process then
    tells its own repeats; one sent to another bot on the folder may be filed twice. Returns the
    attached file's device and inode, None for the one in memory. `warn`: say why in a line."""
    try:
        await _attach_recent(conn, recent)
        return await asyncio.to_thread(_file_id, recent)
    except (sqlite3.Error, OSError) as exc:
        if warn:
            log.warning(
                "%s; claims of /grievance file kept in memory: repeats sent to another bot on this"
                " folder may be filed twice until %s is removed or fixed",
                exc,
                recent.name,
            )
    await conn.rollback()
    if any(row[1] == RECENT for row in await conn.execute_fetchall("PRAGMA database_list")):
        await conn.execute(f"DETACH DATABASE {RECENT}")
    await conn.execute(f"ATTACH DATABASE ':memory:' AS {RECENT}")
    await conn.executescript(RECENT_SCHEMA)
    await conn.commit()
    return None


def recent_unusable(recent: Path) -> str | None:
    """Why the store would keep its claims in memory rather than in `recent` (torn, not a database,
    a newer schema), read without writing to it, for `check`; None when it serves or is not there."""
    if not bot_db.kept(recent) or (recent.stat().st_size == 0 and not only_in_log(recent)):
        return None
    try:
        with (
            readable(recent) as read,
            contextlib.closing(sqlite3.connect(read_only_uri(read), uri=True)) as conn,
        ):
            refuse_newer(conn, recent, RECENT_SCHEMA_VERSION, RECENT_REMEDY, remade=True)
            # The header alone answers user_version: a torn file shows in its pages.
            (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                return f"{recent}: {verdict}"
    except (sqlite3.Error, OSError) as exc:
        return str(exc) if str(recent) in str(exc) else f"{recent}: {exc}"
    return None


def empty_store_file(path: Path) -> bool:
    """A database file of no bytes, with no write-ahead log that would fill it."""
    try:
        if path.stat().st_size:
            return False
    except FileNotFoundError:
        return False  # a new store: made now
    wal = path.with_name(path.name + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


def utc_now() -> str:
    return iso_at(time.time())


def seconds_of(iso: str) -> float:
    """A grievance time back to unix seconds; one staff wrote with no offset is UTC."""
    return instant(iso).timestamp()


def iso_at(seconds: float) -> str:
    """Unix seconds as the grievances' times are written ("2026-12-05T06:00:00Z"), so that
    times compare as text."""
    at = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=0)
    return at.isoformat().replace("+00:00", "Z")


def _absent(path: Path) -> str:
    """Why `path` holds no database yet, or "" where it holds one."""
    if not no_database(path):
        return ""
    return f"{path} is a file of no bytes" if path.exists() else f"{path} does not exist"


class LocalGrievanceStore:
    """A GrievanceBackend on SQLite. `push_state` is 'local_only' when no remote tracker is in
    use, and 'pending' until a remote tracker has acknowledged the grievance."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        initial_state: str = "local_only",
        spool: GrievanceSpool | None = None,
    ) -> None:
        self._conn = conn
        self._initial_state = initial_state
        self._write_lock = asyncio.Lock()
        # Grievances the database refused (locked past its busy timeout, disk full, damaged),
        # filed from there at the next start or the next grievance.
        self._spool = spool
        # A spool that cannot be read may hold grievances: said once (each probe and scrape reads
        # it), and its end.
        self._spool_unread = Outage(log, "the grievance spool reads again", level=logging.ERROR)
        # Those the spool refused too (the disk full or read-only), by filing id: written to the
        # spool by the next file_spooled that can (the next grievance, the refiler's next round).
        self._held: dict[str, dict[str, Any]] = {}
        # False in a process that ends after its turn (hold_none): nothing would file them there.
        self._holds = True
        # The grievances refused outright there: none held, none filed.
        self.refused: list[dict[str, Any]] = []
        self._refiler: asyncio.Task[None] | None = None
        # grievances-recent.db and the device and inode attached (None: the claims in memory).
        self._recent: Path | None = None
        self._recent_id: tuple[int, int] | None = None
        # The claims on complaints' words (hash, turn) whose filing runs in this process, and the
        # task that renews their lease until each is settled or let go.
        self._filing: set[tuple[str, str]] = set()
        self._renewer: asyncio.Task[None] | None = None
        # Why a read-only open found no database (counted as none), or "".
        self._absent = ""
        # The database's file, named in what a refused filing logs: SQLite's "database or disk is
        # full" names none, and staff free the disk it is on.
        self._path: Path | None = None
        self._store_id: str | None = None
        self._store_id_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path | str, initial_state: str = "local_only", read_only: bool = False
    ) -> LocalGrievanceStore:
        """`read_only`: for `check`, which counts: the database as it lies, not migrated (nor made:
        a missing one is an empty one in memory, which `check` says is missing), and the spool
        counted, left to the bot to file."""
        if read_only:
            absent = await asyncio.to_thread(_absent, Path(path))
            conn = await open_read_only(path, SCHEMA_VERSION, SCHEMA)
            store = cls(conn, initial_state, GrievanceSpool.beside(path))
            store._absent = absent
            # `check` says a spool it cannot read in its own line: an ERROR besides says it twice.
            store._spool_unread.level = logging.DEBUG
            return store
        emptied = empty_store_file(Path(path))
        return await cls._open(path, initial_state, emptied)

    @classmethod
    async def _open(cls, path: Path | str, initial_state: str, emptied: bool) -> LocalGrievanceStore:
        async with opening(path, SCHEMA, version=SCHEMA_VERSION, durable=True) as conn:
            await add_missing_columns(
                conn,
                "grievances",
                {
                    "next_try_at": "REAL",
                    "spool_id": "TEXT",
                    "filed_late": "INTEGER NOT NULL DEFAULT 0",
                    "gone_at": "TEXT",
                },
            )
            await conn.executescript(INDEXES)
            await add_missing_columns(conn, "news_events", {"was": "TEXT"})
            await conn.executescript(MOVES)
            await conn.create_function("folded", 1, folded, deterministic=True)
            recent = recent_beside(path)
            attached = await _attach_recent_or_memory(conn, recent)
            store = cls(conn, initial_state, GrievanceSpool.beside(path))
            store._recent, store._recent_id = recent, attached
            store._path = Path(path)
            if emptied:
                # SQLite takes an empty file for a new database: a store truncated by a failed
                # copy or restore would go on as if it never held a grievance.
                log.warning(
                    "%s was an empty file: it is a new grievance store now; if it held grievances,"
                    " stop the bot and restore it from a backup",
                    path,
                )
            await store.file_spooled()
            return store

    async def register(
        self,
        user_id: str,
        category: str,
        description: str,
        filing_id: str | Filing | None = None,
        push_state: str | None = None,
        untold: bool = False,
    ) -> Grievance:
        """`filing_id` (a filing id, or the Filing that chooses one from what earlier runs of its turn
        filed) files it once: registering again with the same id returns the grievance filed the
        first time. `push_state` overrides the store's initial state for this one row
        ('local_only' for a grievance no remote tracker can take). `untold`: filed as one whose key
        its player has not heard (ticket news tells it) until `heard` says the answer told it."""
        now = utc_now()
        state = push_state or self._initial_state
        # With no filing id (a CLI `ask`), one of its own, as a spool line's: a copy kept when a
        # stop cuts it short after its commit landed then finds the row and files nothing.
        choice, filing_id = (
            (filing_id, f"{filing_id.turn}{UNCHOSEN}{uuid.uuid4().hex}")
            if isinstance(filing_id, Filing)
            else (None, filing_id or uuid.uuid4().hex)
        )
        unchosen = filing_id
        try:
            await self.file_spooled()
            # The row and its key are committed together, before the player hears the key.
            async with self._write_lock:
                try:
                    # A read the database refuses (damaged, failing disk) keeps the grievance too.
                    for _ in range(MAX_CHOICES):
                        known: set[str] = set()
                        if choice is not None:
                            earlier, older = await self._filings_of_turn(user_id, choice.turn)
                            chosen = choice.choose(earlier)
                            filing_id = older.get(chosen, chosen)
                            known = {f[0] for f in earlier}
                        key = await self._insert(
                            user_id, category, description, now, state, filing_id, late=untold
                        )
                        if key is not None or choice is None or chosen in known:
                            break
                        # Its id was free when read, and is taken now: another process filed the
                        # spool meanwhile (a one-shot `ask`, a second bot on this storage). Its
                        # ticket, if it is this complaint (its own line, filed); else choose again,
                        # rather than tell this player another complaint's key and file nothing.
                        if await self._filed_alike(user_id, category, description, filing_id):
                            break
                        log.warning(
                            "filing id %s of user %s taken meanwhile, choosing again", filing_id, user_id
                        )
                    else:
                        # Every id it chose was taken: kept as one that never chose, filed from the
                        # spool under its turn's next free id; the last id taken is another's.
                        filing_id = unchosen
                        raise sqlite3.IntegrityError(f"{MAX_CHOICES} filing ids chosen, each taken meanwhile")
                    await self._conn.commit()
                except sqlite3.Error as exc:
                    await self._rollback()
                    row = _spool_row(user_id, category, description, now, state, choice, filing_id)
                    named = exc if self._path is None else naming(self._path, exc)
                    await self._keep_for_later(named, filing_id, row)
                    metrics.GRIEVANCES.labels("kept").inc()
                    raise ToolError(say.KEPT_FOR_LATER) from None
                except BaseException:
                    await self._rollback_cut_short()
                    raise
        except asyncio.CancelledError:
            # Cut short before its commit (filing the spool, waiting for the lock or the busy
            # database); if the commit did land, the filing id files it once all the same.
            row = _spool_row(user_id, category, description, now, state, choice, filing_id)
            self._keep_cut_short(filing_id, row)
            raise
        if key is None:  # filed before, by an earlier run of the same turn
            return await self._filed_as(user_id, filing_id)
        metrics.GRIEVANCES.labels("filed").inc()
        return Grievance(
            key=key,
            category=category,
            description=description,
            status="open",
            created_at=now,
            updated_at=now,
            local_key=key,
        )

    async def _insert(
        self,
        user_id: str,
        category: str,
        description: str,
        at: str,
        state: str,
        spool_id: str | None = None,
        late: bool = False,
    ) -> str | None:
        """The new row's key; None when a grievance from the spool was filed before. `late`: from
        the spool, so its player is yet to hear its key (ticket news tells them)."""
        cursor = await self._conn.execute(
            "INSERT INTO grievances (user_id, category, description, created_at, updated_at,"
            " push_state, spool_id, filed_late) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (spool_id) DO NOTHING",
            (user_id, category, description, at, at, state, spool_id, int(late)),
        )
        if not cursor.rowcount:
            return None
        return f"{KEY_PREFIX}-{cursor.lastrowid}"  # set by the grievance_key trigger

    async def _filings_of_turn(
        self, user_id: str, turn: str
    ) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
        """What earlier runs of a turn filed, for `Filing.choose`: (filing id, category,
        description) of each grievance of `user_id` under a filing id starting with `turn`
        ("platform:request:"), in filing order: in the database (a filing a shutdown cut short
        among them), then in the spool and held in memory, whose ids are as taken though the
        database has not filed them yet. A filing of an older version (platform:request:category:k)
        is shown under the id of the place it stands for (the nth such filing of the turn), so that
        a complaint new in this run is judged against it as against any; the dict maps that id
        back."""
        rows = await self._conn.execute_fetchall(
            "SELECT spool_id, category, description FROM grievances WHERE user_id = ?"
            " AND substr(spool_id, 1, ?) = ? ORDER BY id",
            (user_id, len(turn), turn),
        )
        found = {str(r[0]): (str(r[1]), str(r[2])) for r in rows}
        for kept, row in [*await self._spooled(), *self._held.items()]:
            # Not an unchosen one (UNCHOSEN): it names no filing to choose.
            if row["user_id"] == user_id and kept.startswith(turn) and filed_in(kept):
                found.setdefault(kept, (row["category"], row["description"]))
        older = [f for f in found if len(f.split(":")) == 4]
        places = {f"{turn}{n}": f for n, f in enumerate(older) if f"{turn}{n}" not in found}
        shown = {f: place for place, f in places.items()}
        return [(shown.get(f, f), *found[f]) for f in found], places

    async def _spooled(self) -> list[tuple[str, dict[str, str]]]:
        """(filing id, grievance) of each line waiting in the spool."""
        spool = self._spool
        try:
            lines = await asyncio.to_thread(spool.lines) if spool is not None and spool.waiting() else []
        except OSError as exc:
            # Not a reason to lose the complaint: an id given twice is caught when the spool is
            # filed (_file_kept).
            self._spool_unread.failed(
                str(exc), "could not read %s, which may hold grievances: %s", spool.path if spool else "", exc
            )
            return []
        self._spool_unread.answered()
        return [(line["id"], line) for line in lines]

    @property
    def spool_unreadable(self) -> bool:
        """The spool's last read failed: what it holds is not known, nor counted as unfiled."""
        return self._spool_unread.failing

    async def _filed_alike(
        self, user_id: str, category: str, description: str, filing_id: str | None
    ) -> bool:
        """Whether the row under `filing_id` is this player's and may be this complaint."""
        row = first(
            await self._conn.execute_fetchall(
                "SELECT user_id, category, description FROM grievances WHERE spool_id = ?", (filing_id,)
            )
        )
        return (
            row is not None
            and row[0] == user_id
            and same_complaint(category, description, ("", row[1], row[2]))
        )

    async def _filed_as(self, user_id: str, filing_id: str | None) -> Grievance:
        rows = await self._conn.execute_fetchall("SELECT * FROM grievances WHERE spool_id = ?", (filing_id,))
        row = first(rows)
        # A filing id names one player's note; another player's row under it would be a bug, and
        # answering with that row would show them someone else's ticket.
        if row is None or row["user_id"] != user_id:
            raise RuntimeError(f"filing id {filing_id!r} is not this player's")
        return self._to_grievance(row)

    async def _rollback(self) -> None:
        # Half a transaction left open would be committed with the next grievance.
        await roll_back(self._conn)

    def _writing(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]:
        """The writers' lock, for a write committed inside it: what a refused write leaves open is
        rolled back (bot.db.writing)."""
        return writing(self._conn, self._write_lock)

    async def _rollback_cut_short(self) -> None:
        # A filing cancelled mid-way (a shutdown's grace ran out while the database was busy):
        # aiosqlite still runs the statements already queued, so without this rollback the next
        # commit on the connection, anyone's, would commit half a filing nobody was told of.
        await roll_back(self._conn)

    def _keep_cut_short(self, filing_id: str | None, row: dict[str, Any]) -> None:
        """A filing cancelled before its commit (a shutdown's grace ran out while the database
        was busy) goes to the spool: a slash command cannot be sent again after the restart as a
        voice note is. On disk at once, in this thread: the task is already being cancelled; but
        never waiting for the spool's lock, which this process's own file_spooled may hold while
        it waits for this event loop: held in memory then, for aclose() or the next filing to
        write. The filing id files it once even if the commit did land."""
        if self._spool is None:
            return
        user_id = row["user_id"]
        try:
            kept = self._spool.keep(filing_id, wait=False, **row)
        except OSError:
            log.exception("grievance cut short could not be kept: %s", json.dumps(row))
            kept = False
        if not kept:
            if not self._hold(filing_id, row):
                log.error("grievance cut short lost, too many held in memory: %s", json.dumps(row))
            else:
                log.warning("grievance of user %s cut short by a shutdown, held in memory", user_id)
            return
        log.warning("grievance of user %s cut short by a shutdown, kept in %s", user_id, self._spool.path)

    async def _keep_for_later(self, exc: sqlite3.Error, filing_id: str | None, row: dict[str, Any]) -> None:
        """Keep the grievance in the spool, on disk before the player is told it is kept."""
        if self._spool is None:
            raise exc
        try:
            await asyncio.to_thread(self._spool.keep, filing_id, **row)
        except OSError as refused:
            # The words survive in this line for an operator whatever becomes of them. Both causes
            # and both files: an ENOSPC from write() names no file, nor SQLite's error its database.
            log.exception(
                "grievance could be neither filed (%s) nor kept in %s (%s): %s",
                exc,
                self._spool.path,
                refused,
                json.dumps(row),
            )
            if not self._holds:
                self.refused.append(row)
                raise ToolError(say.NOT_FILED) from None
            if not self._hold(filing_id, row):
                raise exc from None
            raise ToolError(say.HELD_FOR_LATER) from None
        log.error("grievance of user %s kept in %s to file later: %s", row["user_id"], self._spool.path, exc)

    def hold_none(self) -> None:
        """For a process that ends after its turns (`ask`, `demo`): a grievance the database and the
        spool both refuse is not held in memory, where its player is told it will be filed, for
        the process to end with it. Its player is told it is not filed (say.NOT_FILED), and it is
        listed in `refused` for the command to say so: asked again, it is filed once."""
        self._holds = False

    def _hold(self, filing_id: str | None, row: dict[str, Any]) -> bool:
        """Hold a grievance in memory until the spool takes it; False when too many are held."""
        if len(self._held) >= MAX_HELD:
            return False
        filing_id = filing_id or uuid.uuid4().hex
        self._held[filing_id] = row
        # Memory is no copy a killed process keeps (SIGKILL, the OOM killer, a stop's timeout,
        # before aclose() logs it): the log is, as the line `voxdesk refile` files under the id it
        # is held by, so that this line, the stop's and the spool file it once between them.
        _log_unfiled(filing_id, row)
        return True

    async def _spool_held(self) -> None:
        """Write the grievances held in memory to the spool, those it takes."""
        assert self._spool is not None
        for filing_id, row in list(self._held.items()):
            try:
                await asyncio.to_thread(self._spool.keep, filing_id, **row)
            except OSError as exc:
                log.warning(
                    "%d grievance(s) held in memory, the disk still refuses them: %s", len(self._held), exc
                )
                return
            self._held.pop(filing_id, None)  # another round may have kept it meanwhile: filed once
            log.info("grievance of user %s held in memory now kept in %s", row["user_id"], self._spool.path)

    async def start(self, every: float = REFILE_SECONDS) -> None:
        """File what the spool and memory hold every `every` seconds, until `aclose`."""
        if self._refiler is None and self._spool is not None:
            self._refiler = asyncio.create_task(self._refile(every), name="grievance-refiler")

    async def _refile(self, every: float) -> None:
        assert self._spool is not None
        while True:
            await asyncio.sleep(every)
            try:
                if self._held or self._spool.waiting():
                    await self.file_spooled()
            except Exception:  # never ends: the next round tries again
                log.exception("filing the kept grievances failed")

    async def file_spooled(self) -> int:
        """File the grievances the database once refused; how many were filed. Never raises:
        what cannot be filed now stays in the spool (or in memory) for the next try."""
        spool = self._spool
        if spool is not None and self._held:
            await self._spool_held()
        if spool is None or not spool.waiting():
            return 0
        async with self._write_lock:
            taking = asyncio.ensure_future(asyncio.to_thread(spool.take))
            try:
                taken = await asyncio.shield(taking)
            except asyncio.CancelledError:
                # The thread runs on and may lock the spool (aclose stops the refiler at any
                # point): a lock left on a descriptor nobody closes makes every keep() wait for ever.
                taking.add_done_callback(functools.partial(_let_go, spool))
                raise
            except OSError as exc:
                log.warning("could not read %s: %s", spool.path, exc)
                return 0
            if taken is None:  # empty, or another process is filing it
                return 0
            fd, rows = taken
            filed = []
            waiting = {r["id"] for r in rows} | set(self._held)
            try:
                # Chosen lines first: an unchosen one is matched against what they file.
                for r in sorted(rows, key=lambda r: _unchosen_in(r["id"]) is not None):
                    key = await self._file_kept(r, waiting)
                    if key is not None:
                        filed.append((r["user_id"], key))
                await self._conn.commit()
            except sqlite3.Error as exc:
                try:
                    await self._rollback()
                finally:
                    spool.release(fd)
                log.warning("kept grievances not filed yet (%d): %s", len(rows), exc)
                return 0
            except BaseException:
                # Let go whatever stops the rollback (a second cancel): a lock left held would make
                # every later keep() in this process wait for ever.
                try:
                    await self._rollback_cut_short()
                finally:
                    spool.release(fd)
                raise
            # Its fsync in a thread: a player's complaint files the spool first, and a slow disk
            # would hold every other player's note. Shielded: a cancel must not leave it unrun,
            # the spool locked for ever.
            finishing = asyncio.ensure_future(asyncio.to_thread(spool.finish, fd))
            try:
                await asyncio.shield(finishing)
            except asyncio.CancelledError:
                finishing.add_done_callback(_finished)
                raise
            except OSError as exc:
                # Filed all the same: read again, each line's id finds its row and files nothing.
                log.warning("filed the kept grievances but could not empty %s: %s", spool.path, exc)
        for user_id, key in filed:
            log.info("kept grievance of user %s filed as %s", user_id, key)
        metrics.GRIEVANCES.labels("filed_late").inc(len(filed))
        return len(filed)

    async def _file_kept(self, r: dict[str, str], waiting: set[str]) -> str | None:
        """File one line of the spool: its key, or None when it was filed before. `waiting`: the
        ids of the lines and of the grievances held in memory, given to none but their own. An
        unchosen line (UNCHOSEN) is filed under the turn's next free id unless a filing of its turn
        is the same complaint."""
        grievance = (r["user_id"], r["category"], r["description"], r["at"], r["state"])
        turn = _unchosen_in(r["id"])
        unchosen = turn is not None
        if turn is None:
            key = await self._insert(*grievance, r["id"], late=True)
            named = filed_in(r["id"])
            if key is not None or named is None:  # a line's own random id: filed before
                return key
            # The same complaint kept twice under the id it chose (its note answered again while
            # the database refused it, worded afresh), or this spool read again: filed before.
            if await self._filed_alike(r["user_id"], r["category"], r["description"], r["id"]):
                return None
            turn = filing_turn(*named)
        rows = await self._conn.execute_fetchall(IN_TURN, (turn, after_prefix(turn), len(turn), turn))
        theirs = [(str(f), str(c), str(d)) for f, c, d, u in rows if u == r["user_id"]]
        if unchosen:
            # Not one its own run's other complaints chose: a complaint like it is not it.
            others = r.get("others")
            mine = {o for o in others if isinstance(o, str)} if isinstance(others, list) else set()
            same = next(
                (
                    f
                    for f in theirs
                    if f[0] not in mine and same_complaint(r["category"], r["description"], f)
                ),
                None,
            )
            if same is not None:
                # Filed by its turn run again (or by this spool, read again).
                log.info("kept grievance of user %s (%s) filed before as %s", r["user_id"], r["id"], same[0])
                return None
        else:
            # Its id was given to another complaint of its turn (chosen while this line waited
            # where the choice could not see it): a ticket of its own, unless a row has its very
            # words (this spool filed it so, and is read again after a crash). A complaint filed
            # twice is better than one lost; its player hears of it through ticket news.
            if any(d == r["description"] for _, _, d in theirs):
                return None
            log.warning("kept grievance of user %s: its filing id %s is another's", r["user_id"], r["id"])
        taken = {str(row[0]) for row in rows} | waiting
        k = len(rows)
        while f"{turn}{k}" in taken:
            k += 1
        return await self._insert(*grievance, f"{turn}{k}", late=True)

    @property
    def local_store(self) -> LocalGrievanceStore:
        """The store that holds every grievance (ticket news reads its events): this one."""
        return self

    # ---- a repeat of a complaint filed lately (/grievance file's double submit) ---------------

    async def claim_words(
        self,
        user_id: str,
        words: tuple[str, ...],
        turn: str,
        within: float,
        finished: frozenset[str] = frozenset(),
    ) -> Lately:
        """What became of the complaint `words` (the player's, folded) filed in the last `within`
        seconds; or, when none was (or its ticket's key is in `finished`, or its filing ended with
        nothing filed), claim it for the filing `turn` ("platform:request:") and say nothing.
        Read and claimed in one write transaction: of two processes on this file, or two repeats
        at once, one claims and the other is told of its filing. Raises sqlite3.Error when the
        database refuses."""
        digest = _words_hash(user_id, words)
        now = time.time()
        async with self._writing():
            await self._begin_claim()
            # Pruned by every claim: the table holds only the claims of the last `within`.
            await self._conn.execute(
                f"DELETE FROM recent.lately_filed WHERE {LATELY_GONE}", (now - within, now)
            )
            row = first(
                await self._conn.execute_fetchall(
                    "SELECT turn, at, lease_until, kept FROM recent.lately_filed WHERE words_hash = ?",
                    (digest,),
                )
            )
            if row is not None and row["turn"] == turn:
                # The same command in two processes (both bots of a deploy get it): filed
                # once by its filing id, and each told it was filed.
                await self._conn.rollback()
                return Lately()
            # A lease still live past the window is a filing still running (renewed while it
            # runs): a repeat filed over it would be a second ticket. One ending further off than
            # any this clock sets (with a lease's worth to spare, for another host's clock on a
            # shared folder) was set before the clock was stepped back (NTP correcting a fast host
            # at a reboot): its filing's process is most likely gone, and a repeat held off until
            # the clock caught up would wait hours, its player told it was kept.
            horizon = now + 2 * FILING_LEASE_SECONDS
            live = row is not None and now < row["lease_until"] <= horizon
            if row is not None and (now - row["at"] < within or live):
                found = await self._lately(user_id, str(row["turn"]), row["kept"])
                if found.key not in (None, *finished) or found.kept is not None:
                    await self._conn.rollback()
                    return found
                if found.key is None and live:
                    await self._conn.rollback()
                    return Lately(busy=True, turn=str(row["turn"]))
            await self._conn.execute(
                "INSERT INTO recent.lately_filed (words_hash, turn, at, lease_until) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (words_hash) DO UPDATE SET turn = excluded.turn, at = excluded.at,"
                " lease_until = excluded.lease_until, kept = NULL",
                (digest, turn, now, now + FILING_LEASE_SECONDS),
            )
            await self._conn.commit()
        self._renew_while_filing(digest, turn)
        return Lately()

    def _renew_while_filing(self, digest: str, turn: str) -> None:
        """Keep the claim's lease while its filing runs here: filings queued behind a busy
        database can run past it, and a repeat sent to another bot would then file a second
        ticket. Claims in memory are this process's alone, and lapse with it; tracked all the same,
        as housekeeping copies them into the file once it serves again, where they need renewing."""
        self._filing.add((digest, turn))
        self._keep_renewing()

    def _keep_renewing(self) -> None:
        if self._filing and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.create_task(self._renew_claims(), name="grievance-claim-renewer")

    async def _renew_claims(self) -> None:
        while self._filing:
            await asyncio.sleep(FILING_LEASE_SECONDS / 4)
            claims, recent, attached = list(self._filing), self._recent, self._recent_id
            if not claims or recent is None:
                return
            if attached is None:
                continue  # kept in memory for now: nothing to renew until the file serves again
            until = time.time() + FILING_LEASE_SECONDS
            try:
                await asyncio.to_thread(_renew, recent, attached, claims, until)
            except (sqlite3.Error, OSError) as exc:
                # The next round tries again; the lease has three rounds' worth left.
                log.warning("could not renew %d claim(s) of /grievance file: %s", len(claims), exc)
            except Exception:
                # Anything else (a symlink loop at the path, a bug) must not end the renewing
                # unsaid: the claims of filings still running would lapse until the next filing.
                log.exception("could not renew %d claim(s) of /grievance file", len(claims))

    def stop_renewing(self, user_id: str, words: tuple[str, ...], turn: str) -> None:
        """The filing that claimed `words` for `turn` ended without `settle_words` (cut short, or
        failed): its claim lapses, and a repeat then finds it filed or spooled, or files it."""
        self._filing.discard((_words_hash(user_id, words), turn))

    async def housekeeping(self, now: float | None = None) -> None:
        """Drop the claims past RESUBMIT_SECONDS, for a running bot's recheck: each claim drops
        them too, but where nobody files again the last one (a hash of a player's id and words)
        would be kept for ever."""
        now = time.time() if now is None else now
        async with self._writing():
            await self._recent_back()
            await self._reattach_if_gone()
            await self._conn.execute(
                f"DELETE FROM recent.lately_filed WHERE {LATELY_GONE}", (now - RESUBMIT_SECONDS, now)
            )
            await self._conn.commit()

    async def _recent_back(self) -> None:
        """Claims in memory since grievances-recent.db could not serve: the file is tried again
        (read only, then attached), so one removed or fixed meanwhile serves without a restart, with
        the claims made in memory; quiet while it still cannot, said once when it serves."""
        if self._recent is None or self._recent_id is not None:
            return
        if await asyncio.to_thread(recent_unusable, self._recent) is not None:
            return
        claims = await self._conn.execute_fetchall(
            f"SELECT words_hash, turn, at, lease_until, kept FROM {RECENT}.lately_filed"
        )
        await self._conn.execute(f"DETACH DATABASE {RECENT}")
        # Not warned again: a folder still unwritable fails here at every housekeeping.
        self._recent_id = await _attach_recent_or_memory(self._conn, self._recent, warn=False)
        # Over a claim of the same words only when that one is older and no filing holds it: a
        # stale row (a file restored from a backup) kept instead would be pruned, and a repeat
        # filed again; another bot's newer claim, or one it is filing, stays.
        now = time.time()
        await self._conn.executemany(
            f"INSERT INTO {RECENT}.lately_filed (words_hash, turn, at, lease_until, kept)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (words_hash) DO UPDATE SET turn = excluded.turn,"
            " at = excluded.at, lease_until = excluded.lease_until, kept = excluded.kept"
            " WHERE excluded.at > lately_filed.at AND lately_filed.lease_until < ?",
            [(*row, now) for row in claims],
        )
        if self._recent_id is not None:
            log.info("claims of /grievance file are kept in %s again", self._recent)
            self._keep_renewing()  # the copied-in claims whose filings still run

    async def _reattach_if_gone(self) -> None:
        """grievances-recent.db deleted or replaced while the store runs: SQLite goes on with the
        inode it holds, seen by no other process, and another bot on the folder makes a new file,
        so a repeat sent to each would be filed twice. Attached anew at the path, said once."""
        if self._recent is None or self._recent_id is None:
            return
        if await asyncio.to_thread(_file_id, self._recent) == self._recent_id:
            return
        log.warning(
            "%s was deleted or replaced while the bot ran; its claims of /grievance file go to the"
            " file now there (made new if none), and those since the last one are lost",
            self._recent,
        )
        await self._conn.rollback()
        await self._conn.execute(f"DETACH DATABASE {RECENT}")
        self._recent_id = await _attach_recent_or_memory(self._conn, self._recent)

    async def _begin_claim(self) -> None:
        wait = bot_db.BUSY_SECONDS * 1000
        try:
            # Inside the try: aiosqlite runs a queued statement even when its caller is cancelled,
            # and the restore, queued after it, must then undo it.
            await self._conn.execute(f"PRAGMA busy_timeout = {int(CLAIM_WAIT_SECONDS * 1000)}")
            await while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"), CLAIM_WAIT_SECONDS)
        finally:
            # Shielded: a cancel must not leave every later write of the connection the short wait.
            await asyncio.shield(self._conn.execute(f"PRAGMA busy_timeout = {int(wait)}"))

    async def settle_words(
        self, user_id: str, words: tuple[str, ...], turn: str, filed: bool, kept: str | None
    ) -> None:
        """The filing that claimed `words` for `turn` ended: `filed`, or `kept` for later (what its
        player was told), or neither, and then a repeat may file them."""
        digest = _words_hash(user_id, words)
        self._filing.discard((digest, turn))  # should the write fail, the claim lapses
        mine = "words_hash = ? AND turn = ?"
        # The window runs from the answer: a filing that ran long (a busy database) has repeats
        # waiting on it, and each, told nothing, would file a second ticket.
        now = time.time()
        async with self._writing():
            if filed:
                # Its grievance, found by its filing id, tells a repeat its key.
                await self._conn.execute(
                    f"UPDATE recent.lately_filed SET at = ?, lease_until = 0 WHERE {mine}",
                    (now, digest, turn),
                )
            elif kept is not None:
                await self._conn.execute(
                    f"UPDATE recent.lately_filed SET kept = ?, at = ?, lease_until = 0 WHERE {mine}",
                    (kept, now, digest, turn),
                )
            else:
                await self._conn.execute(f"DELETE FROM recent.lately_filed WHERE {mine}", (digest, turn))
            await self._conn.commit()

    def keep_cut_short(self, user_id: str, category: str, description: str, turn: str) -> None:
        """A filing of `turn` cut short before it reached `register` (a shutdown's grace ran out
        while `claim_words` waited for the busy database): kept as `register` keeps one, under an
        unchosen id of its turn, so that a filing of the turn that did land files it once."""
        row = _spool_row(user_id, category, description, utc_now(), self._initial_state, None, None)
        self._keep_cut_short(f"{turn}{UNCHOSEN}{uuid.uuid4().hex}", row)

    async def _lately(self, user_id: str, turn: str, kept: str | None) -> Lately:
        """The ticket filed under `turn` for `user_id`, or else what was told when it was kept."""
        row = first(
            await self._conn.execute_fetchall(
                "SELECT local_key FROM grievances WHERE user_id = ? AND substr(spool_id, 1, ?) = ?"
                " AND local_key IS NOT NULL ORDER BY id LIMIT 1",
                (user_id, len(turn), turn),
            )
        )
        if row is not None:
            return Lately(key=str(row[0]))
        spooled = any(f.startswith(turn) and line["user_id"] == user_id for f, line in await self._spooled())
        if kept is None and spooled:
            kept = say.KEPT_FOR_LATER  # cut short by a shutdown, kept in the spool: filed from there
        held = any(f.startswith(turn) and line["user_id"] == user_id for f, line in self._held.items())
        if kept == say.HELD_FOR_LATER and not (spooled or held):
            # Held in the memory of a process since restarted, and lost: its player was told to
            # tell it again, and this repeat files it. Another bot's memory cannot be told from a
            # lost one: filed twice then, rather than never.
            kept = None
        return Lately(kept=kept)

    async def status(self, user_id: str, key: str | None = None, limit: int = MAX_LISTED) -> list[Grievance]:
        # A player told their complaint was kept for later is told to ask for it: asking files
        # what the disk or the database refused, if they take it now, rather than wait for the
        # next filing or ticket news's poll.
        await self.file_spooled()
        # The user_id condition is in every query: a key that belongs to someone else finds nothing.
        if key is not None:
            rows = await self._conn.execute_fetchall(
                "SELECT * FROM grievances WHERE user_id = ? AND (local_key = ? OR remote_key = ?)",
                (user_id, key, key),
            )
        else:
            rows = await self._conn.execute_fetchall(
                "SELECT * FROM grievances WHERE user_id = ? AND local_key IS NOT NULL"
                " ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
        return [self._to_grievance(row) for row in rows]

    # ---- the outbox: rows waiting for the remote tracker ---------------------------------------

    async def pending(self, limit: int = 100) -> list[PendingGrievance]:
        """Unacknowledged grievances that are due, oldest first, so they reach the tracker in
        filing order. Rows claimed by a pusher (this process or another on the same file) or
        waiting out a retry delay are left out. (A row whose key is not set yet is mid-`register`
        on this connection: not ready.)"""
        rows = await self._conn.execute_fetchall(
            "SELECT local_key, user_id, category, description, created_at, attempts, last_error, status,"
            " attempts > 0 OR next_try_at IS NOT NULL"
            " FROM grievances WHERE push_state = 'pending' AND local_key IS NOT NULL"
            " AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY id LIMIT ?",
            (time.time(), limit),
        )
        return [PendingGrievance(*row[:-1], tried=bool(row[-1])) for row in rows]

    async def bring_back(self, longest: float) -> int:
        """Make every pending row due within `longest` (seconds) that is due further off than
        twice that: no pusher sets a claim or a retry wait so far ahead, so such a time was set by
        a clock since stepped back (NTP setting a fast clock right, a VM restored), and would hold
        its grievance back from the tracker by the step. Not due now: the row may be the claim of
        a live pusher whose create Jira has not shown yet, and `longest` outlasts that claim.
        Returns how many rows it brought back."""
        now = time.time()
        stepped = "push_state = 'pending' AND next_try_at > ?"
        if not await self._conn.execute_fetchall(
            f"SELECT 1 FROM grievances WHERE {stepped} LIMIT 1", (now + 2 * longest,)
        ):
            return 0
        async with self._writing():
            cursor = await self._conn.execute(
                f"UPDATE grievances SET next_try_at = ? WHERE {stepped}", (now + longest, now + 2 * longest)
            )
            await self._conn.commit()
            return cursor.rowcount

    async def claim(self, local_key: str, until: float) -> bool:
        """Take a pending row for pushing until `until` (unix time); False if another pusher holds
        it. The claim is on disk, so it holds across processes (a CLI `ask` next to the running
        bot) and across a crash in the middle of a create: nobody retries the row until Jira has
        had time to show the issue that create may have made. `until` is also the claim's token
        for `renew` and `record_attempt`."""
        async with self._writing():
            cursor = await self._conn.execute(
                "UPDATE grievances SET next_try_at = ? WHERE local_key = ? AND push_state = 'pending'"
                " AND (next_try_at IS NULL OR next_try_at <= ?)",
                (until, local_key, time.time()),
            )
            await self._conn.commit()
            return cursor.rowcount == 1

    async def renew(self, local_key: str, token: float, until: float) -> bool:
        """Extend our claim (still holding `token`) to `until`; False if it lapsed and another
        pusher may have the row now, in which case we must not create anything for it."""
        async with self._writing():
            cursor = await self._conn.execute(
                "UPDATE grievances SET next_try_at = ? WHERE local_key = ? AND push_state = 'pending'"
                " AND next_try_at = ?",
                (until, local_key, token),
            )
            await self._conn.commit()
            return cursor.rowcount == 1

    async def store_id(self) -> str:
        """A random id made once per grievance database: local keys (GRV-14) repeat across
        databases, so what finds a pushed grievance in Jira again must carry this too. Read, once
        made: ticket news asks at each answer that told a ticket, and a write would wait its turn
        behind every other writer of the storage folder for nothing."""
        # One call at a time reads it: on this connection a read sees what another call inserted
        # and has not committed, and a commit refused or cut short rolls that id back.
        async with self._store_id_lock:
            if self._store_id is not None:
                return self._store_id
            read = "SELECT value FROM meta WHERE name = 'store_id'"
            found = first(await self._conn.execute_fetchall(read))
            if found is None:
                async with self._writing():  # another process may make it first: theirs is kept
                    await self._conn.execute(
                        "INSERT OR IGNORE INTO meta (name, value) VALUES ('store_id', ?)",
                        (secrets.token_hex(4),),
                    )
                    await self._conn.commit()
                found = first(await self._conn.execute_fetchall(read))
            (value,) = found  # type: ignore[misc]
            self._store_id = str(value)
            return self._store_id

    async def _meta_value(self, name: str) -> str | None:
        """The value `meta` holds under `name`, None when it holds none."""
        found = first(await self._conn.execute_fetchall("SELECT value FROM meta WHERE name = ?", (name,)))
        return None if found is None else str(found[0])

    async def _set_meta(self, name: str, value: str) -> None:
        """`value` under `name` in `meta`, in the caller's write (uncommitted)."""
        await self._conn.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    async def hidden_issue(self) -> str | None:
        """The newest issue the tracker made and then hid from the bot's account (note_hidden)."""
        return await self._meta_value(HIDDEN)

    async def created_issue(self, local_key: str) -> str | None:
        """The issue a create made for pending grievance `local_key` (note_created), if kept."""
        return await self._meta_value(f"{CREATED}{local_key}")

    async def note_created(self, local_key: str, remote_key: str) -> None:
        """Keep `remote_key`, the issue a create has just made for pending `local_key`, until
        mark_pushed: before anything else is asked of the tracker about it."""
        async with self._writing():
            await self._set_meta(f"{CREATED}{local_key}", remote_key)
            await self._conn.commit()

    async def note_hidden(self, remote_key: str | None) -> None:
        """Keep `remote_key` as an issue the tracker hid from the bot's account right after making
        it (None: the newest it made it shows), for `check`, a process of its own, to say."""
        async with self._writing():
            if remote_key is None:
                await self._conn.execute(f"DELETE FROM meta WHERE name = '{HIDDEN}'")
            else:
                await self._set_meta(HIDDEN, remote_key)
            await self._conn.commit()

    async def count_pending(self) -> int:
        pending = "SELECT COUNT(*) FROM grievances WHERE push_state = 'pending'"
        rows = await self._conn.execute_fetchall(pending)
        (count,) = first(rows)  # type: ignore[misc]
        return int(count)

    async def next_due(self) -> float | None:
        """When the soonest pending grievance is due for a push (unix time; None: none pending). A
        row waiting out Jira's search lag or a refusal is due later than the pusher's next round."""
        rows = await self._conn.execute_fetchall(
            "SELECT MIN(COALESCE(next_try_at, 0)) FROM grievances WHERE push_state = 'pending'"
        )
        (due,) = first(rows)  # type: ignore[misc]
        return None if due is None else float(due)

    async def oldest_pending(self) -> str | None:
        """When the longest-waiting grievance for the remote tracker was filed (None: none)."""
        rows = await self._conn.execute_fetchall(
            "SELECT MIN(created_at) FROM grievances WHERE push_state = 'pending'"
        )
        (oldest,) = first(rows)  # type: ignore[misc]
        return None if oldest is None else str(oldest)

    async def count_unfiled(self) -> int:
        """Grievances the database refused, waiting in the spool or in memory to be filed."""
        return len(await self._spooled()) + len(self._held)

    async def mark_pushed(self, local_key: str, remote_key: str) -> None:
        async with self._writing():
            await self._conn.execute(
                "UPDATE grievances SET push_state = 'pushed', remote_key = ?, last_error = NULL,"
                " next_try_at = NULL, attempts = attempts + 1 WHERE local_key = ?",
                (remote_key, local_key),
            )
            await self._conn.execute("DELETE FROM meta WHERE name = ?", (f"{CREATED}{local_key}",))
            await self._conn.commit()

    async def record_attempt(
        self, local_key: str, error: str, next_try_at: float | None = None, token: float | None = None
    ) -> None:
        """A failed push: counted, with its reason, for the operator to see; the row is due again
        at `next_try_at` (None: whenever the pusher next runs). With `token`, the due time is set
        only while that claim is still ours, so a late failure never undoes another's claim."""
        async with self._writing():
            await self._conn.execute(
                "UPDATE grievances SET attempts = attempts + 1, last_error = ?,"
                " next_try_at = CASE WHEN ? IS NULL OR next_try_at = ? THEN ? ELSE next_try_at END"
                " WHERE local_key = ?",
                (error[:MAX_ERROR_CHARS], token, token, next_try_at, local_key),
            )
            await self._conn.commit()

    async def keep_local(self, local_key: str) -> None:
        """A grievance no remote tracker can take (its owner is no Discord user) stays local."""
        async with self._writing():
            await self._conn.execute(
                "UPDATE grievances SET push_state = 'local_only', next_try_at = NULL WHERE local_key = ?",
                (local_key,),
            )
            await self._conn.commit()

    async def update_status(self, local_key: str, status: str, updated_at: str) -> None:
        """Cache what the tracker said, so an answer from the local record is as fresh as we know.
        A new status is Jira's change in the grievance's history, at Jira's `updated`."""
        async with self._writing():
            before = await self._status_before_write(local_key)
            cursor = await self._conn.execute(
                "UPDATE grievances SET status = ?, updated_at = ? WHERE local_key = ?"
                " AND (status != ? OR updated_at != ?)",
                (status, updated_at, local_key, status, updated_at),
            )
            if cursor.rowcount == 1 and before is not None and before[1] != status:
                await self._record_change(before[0], updated_at or utc_now(), before[1], status, "jira")
            await self._conn.commit()

    async def _status_before_write(self, local_key: str) -> tuple[int, str] | None:
        """(id, status) of the grievance, read in a write transaction begun here: what the write
        after it changes from, with no other process's write in between."""
        await self._conn.execute("BEGIN IMMEDIATE")
        row = first(
            await self._conn.execute_fetchall(
                "SELECT id, status FROM grievances WHERE local_key = ?", (local_key,)
            )
        )
        return None if row is None else (int(row[0]), str(row[1]))

    async def _record_change(self, grievance_id: int, at: str, was: str, status: str, by: str) -> None:
        """Add a change to the grievance's status history, in the write transaction that makes it."""
        name = f"{STATUS_HISTORY}{grievance_id}"
        changes = [
            {"at": c.at, "from": c.from_status, "to": c.to_status, "by": c.changed_by}
            for c in status_changes(await self._meta_value(name))
        ]
        changes.append({"at": at, "from": was, "to": status, "by": by})
        await self._set_meta(name, json.dumps(changes[-STATUS_CHANGES_KEPT:]))

    async def status_history(self, local_key: str) -> list[StatusChange]:
        """The grievance's status changes kept (the newest STATUS_CHANGES_KEPT), oldest first."""
        found = first(
            await self._conn.execute_fetchall(
                "SELECT m.value FROM meta m JOIN grievances g ON m.name = ? || g.id WHERE g.local_key = ?",
                (STATUS_HISTORY, local_key),
            )
        )
        return status_changes(found[0] if found else None)

    # ---- the support desk (bot/web): every player's grievances, for staff only ---------------

    async def staff_list(
        self,
        status: str | None = None,
        category: str | None = None,
        older_than_days: float | None = None,
        newer_than_days: float | None = None,
        limit: int = 200,
        *,
        search: str = "",
        offset: int = 0,
        oldest_first: bool = False,
        after: int | None = None,
        before: int | None = None,
    ) -> list[StaffRow]:
        """A page of grievances by the time each was filed, newest first (or oldest), filtered;
        values are bound parameters, never SQL text. By time, not id: a grievance kept in the spool
        gets its id when it is filed from there, after others made later.

        `after` (or `before`), a grievance's id: the page that follows it in this order (or comes
        just before it). Grievances filed, or leaving a filter, while staff page through move no
        other onto the next page, as counting `offset` rows would (shown twice, or never)."""
        where, args = _staff_where(status, category, older_than_days, newer_than_days, search)
        forward = "created_at, id" if oldest_first else "created_at DESC, id DESC"
        backward = "created_at DESC, id DESC" if oldest_first else "created_at, id"
        order, cursor = forward, after
        if before is not None:
            order, cursor, oldest_first = backward, before, not oldest_first
        if cursor is not None:
            where += f" AND (created_at, id) {'>' if oldest_first else '<'} ({AT_ROW})"
            args = [*args, str(cursor)]
        rows = await self._conn.execute_fetchall(
            STAFF_PAGE.format(where=where, order=order), (*args, limit, max(0, offset))
        )
        found = [_staff_row(row) for row in rows]
        return found[::-1] if before is not None else found

    async def staff_count(
        self,
        status: str | None = None,
        category: str | None = None,
        older_than_days: float | None = None,
        newer_than_days: float | None = None,
        *,
        search: str = "",
        ahead_of: int | None = None,
        oldest_first: bool = False,
    ) -> int:
        """How many grievances staff_list's filters match, over all its pages; with `ahead_of` (a
        grievance's id), those listed before it in staff_list's order."""
        where, args = _staff_where(status, category, older_than_days, newer_than_days, search)
        if ahead_of is not None:
            where += f" AND (created_at, id) {'<' if oldest_first else '>'} ({AT_ROW})"
            args = [*args, str(ahead_of)]
        rows = await self._conn.execute_fetchall(STAFF_COUNT.format(where=where), args)
        (count,) = first(rows)  # type: ignore[misc]
        return int(count)

    async def staff_get(self, local_key: str) -> StaffRow | None:
        rows = await self._conn.execute_fetchall("SELECT * FROM grievances WHERE local_key = ?", (local_key,))
        row = first(rows)
        return _staff_row(row) if row else None

    async def staff_key(self, typed: str) -> str | None:
        """The key of the grievance `typed` names (its key as a player may type it, or its Jira
        key), or None."""
        key = typed_key(typed)
        # A Jira project may number like the local store (GRV, the default): a key that is one's
        # local key names that grievance, not the one whose Jira issue has that key.
        rows = await self._conn.execute_fetchall(
            "SELECT local_key FROM grievances WHERE local_key = ? OR remote_key = ?"
            " ORDER BY local_key IS NOT ?, id LIMIT 1",
            (key, key, key),
        )
        row = first(rows)
        return str(row[0]) if row else None

    async def staff_notes(self, local_key: str) -> list[StaffNote]:
        rows = await self._conn.execute_fetchall(
            "SELECT n.author, n.body, n.created_at FROM staff_notes n JOIN grievances g"
            " ON g.id = n.grievance_id WHERE g.local_key = ? ORDER BY n.id",
            (local_key,),
        )
        return [StaffNote(*row) for row in rows]

    async def add_staff_note(self, local_key: str, author: str, body: str, *, jira: bool = False) -> bool:
        """Keep a staff note on a grievance; False if there is no such grievance. With `jira` (the
        tracker), only on a grievance the desk works, in the statement that writes it: one Jira
        took back since it was looked at is noted in Jira (WorkedInJira), where staff work it."""
        async with self._writing():
            cursor = await self._conn.execute(
                "INSERT INTO staff_notes (grievance_id, author, body, created_at)"
                " SELECT id, ?, ?, ? FROM grievances WHERE local_key = ?"
                f" AND (NOT ? OR {DESK_WORKS})",
                (author, body, utc_now(), local_key, jira),
            )
            await self._conn.commit()
        if cursor.rowcount == 1:
            return True
        row = await self.staff_get(local_key)
        if row is None:
            return False
        raise WorkedInJira(row)

    async def set_status_by_staff(
        self, local_key: str, status: str, was: str | None = None, *, jira: bool = False, by: str
    ) -> bool:
        """Move a grievance to `status`; the news_status trigger records it, so the player hears
        of it through ticket news like any other change, and its status history as made `by` (a
        staff account's name). False if there is no such grievance.

        With `was` (the status staff saw when they chose), only from that status: one another
        staff member changed meanwhile is left as they set it (StatusChanged), in the statement
        that would write it, so two desks setting it together cannot both win. With `jira` (the
        tracker), only a grievance the desk works: one Jira took back since it was looked at
        (its issue found again) is Jira's to set (WorkedInJira). A refusal (REFUSALS) only on one
        that does not wait to reach Jira (WaitsForJira)."""
        if status not in STAFF_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        refusal = status in REFUSALS
        async with self._writing():
            before = await self._status_before_write(local_key)
            at = utc_now()
            cursor = await self._conn.execute(
                "UPDATE grievances SET status = ?, updated_at = ? WHERE local_key = ? AND status != ?"
                " AND (? IS NULL OR status = ?)"
                f" AND (NOT ? OR {DESK_WORKS}) AND NOT (? AND push_state = 'pending')",
                (status, at, local_key, status, was, was, jira, refusal),
            )
            if cursor.rowcount == 1 and before is not None:
                await self._record_change(before[0], at, before[1], status, by)
            await self._conn.commit()
        if cursor.rowcount == 1:
            return True
        row = await self.staff_get(local_key)
        if row is None:
            return False
        if jira and not row.desk_works:
            raise WorkedInJira(row)
        if refusal and row.push_state == "pending":
            raise WaitsForJira(row)
        if was is not None and row.status not in (was, status):
            raise StatusChanged(row)
        return True

    # ---- ticket news: what happened since a reader last looked ------------------------------

    async def news_events(self, after: int, limit: int = 500) -> list[GrievanceEvent | int]:
        """Events after id `after`, oldest first, each with its grievance as it is now; a bare id
        for an event whose grievance is gone, so the reader moves past it."""
        # Under the writers' lock: this connection also writes, and a filing is an INSERT (which
        # records its event) then an UPDATE that sets the key; read between them, the event would
        # be passed over for want of a key and the player never told.
        async with self._write_lock:
            rows = await self._conn.execute_fetchall(
                "SELECT e.id AS event_id, e.kind, e.was, g.* FROM news_events e"
                " LEFT JOIN grievances g ON g.id = e.grievance_id WHERE e.id > ? ORDER BY e.id LIMIT ?",
                (after, limit),
            )
        found: list[GrievanceEvent | int] = []
        for row in rows:
            if row["local_key"] is None:
                found.append(int(row["event_id"]))
                continue
            found.append(
                GrievanceEvent(
                    id=int(row["event_id"]),
                    kind=row["kind"],
                    user_id=row["user_id"],
                    local_key=row["local_key"],
                    remote_key=row["remote_key"],
                    category=row["category"],
                    description=row["description"],
                    status=row["status"],
                    created_at=row["created_at"],
                    push_state=row["push_state"],
                    attempts=int(row["attempts"]),
                    filed_late=bool(row["filed_late"]),
                    spool_id=row["spool_id"],
                    gone=row["gone_at"] is not None,
                    was=row["was"],
                )
            )
        return found

    async def heard(self, user_id: str, turn: str, keys: list[str]) -> list[tuple[str, str | None]]:
        """The player heard these keys (local or Jira) in the answer to a turn (`turn`,
        "platform:request:", as in `Filing`): those of its grievances filed from the spool are no
        longer ones whose key they never heard. (local key, Jira key or None) of each of those
        grievances: the two are of different key spaces (local GRV-2 may be another ticket's Jira
        GRV-2)."""
        if not keys or not turn.endswith(":"):  # "discord:7" would find discord:70:0 too
            return []
        marks = ",".join("?" * len(keys))
        # An answer tells the keys of what its own turn filed, nothing else: a key naming another
        # ticket of the player in the other key space (a Jira project numbering like the local
        # store) leaves that ticket, whose key they never heard, to ticket news. Among the turn's
        # own, a key that is one's local key names that grievance, not another's Jira key; told
        # by Jira's key, a grievance whose Jira key is also the local key of another of the turn
        # stays untold: a DM naming a key heard is better than none.
        in_turn = "user_id = ? AND substr(spool_id, 1, ?) = ?"
        named = (
            f"{in_turn} AND filed_late = 1 AND (local_key IN ({marks}) OR (remote_key IN ({marks})"
            f" AND remote_key NOT IN (SELECT local_key FROM grievances WHERE {in_turn}"
            " AND local_key IS NOT NULL)))"
        )
        args = (user_id, len(turn), turn, *keys, *keys, user_id, len(turn), turn)
        async with self._writing():
            rows = await self._conn.execute_fetchall(
                f"SELECT local_key, remote_key FROM grievances WHERE {named}", args
            )
            if not rows:  # the usual answer: a ticket filed as the player asked, no write needed
                return []
            await self._conn.execute(f"UPDATE grievances SET filed_late = 0 WHERE {named}", args)
            await self._conn.commit()
        return [(str(row["local_key"]), row["remote_key"]) for row in rows]

    async def unheard(self, user_id: str, turn: str, keys: list[str]) -> list[tuple[str, str | None]]:
        """Undo `heard` for an answer that did not reach the player after all (Discord refused
        it): the turn's grievances named by `keys` are again ones whose key they never heard, and
        an event of each goes out for ticket news to find (the one it found first, when the key
        was marked heard, made no news). (local key, Jira key or None) of each, those already
        unheard too: an untelling replayed after a restart (`TicketNews.unheard_in_answer`) may
        have ended here the first time, and its news.db half is still to be done."""
        if not keys or not turn.endswith(":"):
            return []
        marks = ",".join("?" * len(keys))
        named = (
            "user_id = ? AND substr(spool_id, 1, ?) = ?"
            f" AND (local_key IN ({marks}) OR remote_key IN ({marks}))"
        )
        args = (user_id, len(turn), turn, *keys, *keys)
        async with self._writing():
            rows = await self._conn.execute_fetchall(
                f"SELECT id, local_key, remote_key, push_state, filed_late FROM grievances WHERE {named}",
                args,
            )
            heard = [row for row in rows if not row["filed_late"]]
            if not heard:
                return [(str(row["local_key"]), row["remote_key"]) for row in rows]
            await self._conn.execute(
                f"UPDATE grievances SET filed_late = 1 WHERE {named} AND filed_late = 0", args
            )
            # A grievance still on its way to Jira is told by the event its push makes.
            events = [
                (row["id"], "filed_late" if row["push_state"] == "local_only" else "pushed")
                for row in heard
                if row["push_state"] in ("local_only", "pushed")
            ]
            await self._conn.executemany("INSERT INTO news_events (grievance_id, kind) VALUES (?, ?)", events)
            await self._conn.commit()
        return [(str(row["local_key"]), row["remote_key"]) for row in rows]

    async def last_news_event(self) -> int:
        """The id of the newest event (0: none yet)."""
        rows = await self._conn.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM news_events")
        return int(first(rows)[0])  # type: ignore[index]

    async def drop_news_events(self, up_to: int) -> None:
        """Forget the events a reader has dealt with, so the table stays small."""
        async with self._writing():
            await self._conn.execute("DELETE FROM news_events WHERE id <= ?", (up_to,))
            await self._conn.commit()

    async def users(self) -> list[str]:
        """Everyone with a grievance here: whose tickets ticket news asks Jira about."""
        rows = await self._conn.execute_fetchall("SELECT DISTINCT user_id FROM grievances ORDER BY user_id")
        return [str(row[0]) for row in rows]

    async def row_of_issue(self, user_id: str, remote_key: str, local_key: str) -> StaffRow | None:
        """The player's grievance pushed as `remote_key`, or else the one its issue's key label
        names (`local_key`, "" for an issue made in the tracker): an issue moved to another key
        is still found."""
        rows = await self._conn.execute_fetchall(
            "SELECT * FROM grievances WHERE user_id = ? AND (remote_key = ? OR local_key = ?)"
            " ORDER BY remote_key IS NOT ?",
            (user_id, remote_key, local_key, remote_key),
        )
        row = first(rows)
        return _staff_row(row) if row else None

    async def follow(self, local_key: str, remote_key: str) -> None:
        """The tracker has the pushed grievance as `remote_key`: under a new key if it moved (the
        news_moved trigger tells its player), or again after it seemed gone."""
        async with self._writing():
            await self._conn.execute(
                "UPDATE grievances SET remote_key = ?, gone_at = NULL WHERE local_key = ?"
                " AND push_state = 'pushed' AND (remote_key IS NOT ? OR gone_at IS NOT NULL)",
                (remote_key, local_key, remote_key),
            )
            await self._conn.commit()

    async def mark_gone(self, local_key: str) -> bool:
        """The tracker no longer has the pushed grievance's issue (deleted, or moved out of its
        project): its status is the local record's, and staff work it on the desk. False if it
        was marked so before."""
        async with self._writing():
            cursor = await self._conn.execute(
                "UPDATE grievances SET gone_at = ? WHERE local_key = ? AND push_state = 'pushed'"
                " AND gone_at IS NULL",
                (utc_now(), local_key),
            )
            await self._conn.commit()
        return cursor.rowcount == 1

    async def gone(self, user_id: str) -> set[str]:
        """The local keys of the player's grievances whose issue the tracker no longer has."""
        rows = await self._conn.execute_fetchall(
            "SELECT local_key FROM grievances WHERE user_id = ? AND gone_at IS NOT NULL", (user_id,)
        )
        return {str(row[0]) for row in rows}

    async def count(self) -> int:
        """The grievances the database holds: a read that says it answers."""
        rows = await self._conn.execute_fetchall("SELECT COUNT(*) FROM grievances")
        (count,) = first(rows)  # type: ignore[misc]
        return int(count)

    async def check(self) -> str:
        if self._absent:
            # Not "0 grievances": a storage.dir set wrong, or a database lost, reads as a store
            # nobody has complained to yet, and the first grievance `run` files starts it anew.
            return NeedsHuman(
                await self.with_unfiled(
                    f"local grievance store: {self._absent}; `run` makes it anew, empty: restore it"
                    " from a backup first if grievances were kept there"
                )
            )
        said = f"local grievance store: {await self.count()} grievances"
        if self._initial_state == "local_only" and (waiting := await self.count_pending()):
            # Filed while Jira was on and kept for it: nothing pushes them on this backend, and
            # an operator who removed Jira would otherwise not know they are still to go.
            said += (
                f"; {waiting} wait for Jira, which is off: they go to Jira once tools.grievances"
                " is jira again"
            )
        return await self.with_unfiled(said)

    @property
    def absent(self) -> str:
        """Why a read-only open found no database here ("<path> does not exist", "... is a file of
        no bytes"), counted as an empty one; "" where it found one."""
        return self._absent

    async def with_unfiled(self, said: str) -> str:
        """A `check` line `said`, with the grievances the database refused that wait unfiled (their
        one copy, which no count of the database holds) or a spool that cannot be read: then a
        line that wants a person's eye, as /healthz is not ready."""
        spooled, held = len(await self._spooled()), len(self._held)
        spool = self._spool.path if self._spool is not None else "the spool"
        # Only this process's memory: `check`, a process of its own, has none to count, and a
        # running bot's is its log's and its desk's to say.
        where = []
        if spooled:
            where.append(f"{spooled} in {spool}")
        if held:
            where.append(f"{held} in this process's memory")
        if self.spool_unreadable:
            said += f"; {spool} cannot be read, and may hold grievances the database refused"
        elif where:
            said += f"; grievance(s) the database refused wait unfiled: {' and '.join(where)}"
        else:
            return said
        return NeedsHuman(said)

    async def aclose(self) -> None:
        """Stop the refiler, keep what memory holds, close the database. A cancel of the caller (a
        stop whose grace ran out while the refiler's rollback waits for the busy database) is
        raised after all that is done all the same: nothing else would keep those grievances."""
        refiler, self._refiler = self._refiler, None
        renewer, self._renewer = self._renewer, None
        self._filing.clear()
        try:
            for task in (refiler, renewer):
                if task is not None:
                    task.cancel()
                    await asyncio.wait({task})
        finally:
            if self._spool is not None and self._held:
                await self._spool_held()
            for filing_id, row in self._held.items():
                # The disk still refuses it: the log, which lives off the storage folder, keeps the
                # one copy, again at the stop (a log rotated since it was held holds the other no
                # more). Its player heard no key (HELD_FOR_LATER): ticket news tells it once filed.
                _log_unfiled(filing_id, row)
            await self._conn.close()

    @staticmethod
    def _to_grievance(row: aiosqlite.Row) -> Grievance:
        return Grievance(
            key=row["remote_key"] or row["local_key"],
            category=row["category"],
            description=row["description"],
            status=row["status"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            local_key=row["local_key"],
            remote_key=row["remote_key"],
        )

    async def holds_none_but(self, keys: list[str]) -> bool:
        """Whether the store holds no grievance but those of `keys` (the demo's): a new one, or one
        an init cut short while seeding them. A store holding others (the bot filed them before any
        `init`) is no new one: demo tickets would be worked on the desk among real ones."""
        others = await self._conn.execute_fetchall(
            "SELECT 1 FROM grievances WHERE local_key IS NULL"
            f" OR local_key NOT IN ({', '.join('?' * len(keys))}) LIMIT 1",
            keys,
        )
        return not others

    async def seed(self, rows: list[dict[str, str]]) -> None:
        """Grievances as given (`init`'s demo ones, into a store `holds_none_but` them); a re-run
        never overwrites a row, so nothing filed is lost."""
        for r in rows:
            await self._conn.execute(
                "INSERT OR IGNORE INTO grievances (id, local_key, user_id, category, description,"
                " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    int(r["key"].split("-")[1]),
                    r["key"],
                    r["user_id"],
                    r["category"],
                    r["description"],
                    r["status"],
                    r["created_at"],
                    r["updated_at"],
                ),
            )
        await self._conn.commit()


# A description holding a searched word, folded. A description of ASCII alone (as many bytes as
# characters) folds to its lower case, which SQLite's own lower() gives without calling Python
# once a row: the desk's search over every row stays in C for those (bench/desk_search.py).
DESCRIBED = (
    "(CASE WHEN length(description) = length(CAST(description AS BLOB))"
    " THEN instr(lower(description), ?) ELSE instr(folded(description), ?) END > 0)"
)


# Every grievance a turn filed, of any player: the range finds them on grievances_by_spool_id
# (substr alone reads every grievance, once for each spool line filed after an outage); substr
# keeps out what the range lets in past the prefix.
IN_TURN = (
    "SELECT spool_id, category, description, user_id FROM grievances"
    " WHERE spool_id >= ? AND spool_id < ? AND substr(spool_id, 1, ?) = ?"
)


def after_prefix(prefix: str) -> str:
    """The least text past every text that starts with `prefix` (a non-empty one)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# The desk's page of grievances and the count of all its pages, by _staff_where's filters.
STAFF_PAGE = "SELECT * FROM grievances WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
STAFF_COUNT = "SELECT COUNT(*) FROM grievances WHERE {where}"
# Where one grievance is in the desk's order: a page starts after it, or before it.
AT_ROW = "SELECT created_at, id FROM grievances WHERE id = ?"


def _staff_where(
    status: str | None,
    category: str | None,
    older_than_days: float | None,
    newer_than_days: float | None,
    search: str,
) -> tuple[str, list[str]]:
    """The WHERE clause (and its arguments) of the desk's filters. A search finds a ticket by its
    key (local or Jira), a player by their id, or descriptions holding every word searched."""
    where, args = ["local_key IS NOT NULL"], []
    if status:
        where.append("status = ?")
        args.append(status)
    if category:
        where.append("category = ?")
        args.append(category)
    now = time.time()
    for days, op in ((older_than_days, "<="), (newer_than_days, ">=")):
        if days is not None:
            where.append(f"created_at {op} ?")
            args.append(iso_at(now - days * 86400))
    words = search.split()
    if words:
        described = " AND ".join([DESCRIBED] * len(words))
        where.append(f"(local_key = ? OR remote_key = ? OR user_id = ? OR ({described}))")
        term = search.strip()
        # A key pasted from a player's message may be in full width or carry another dash, as
        # /grievance status takes it.
        key = typed_key(term)
        args += [key, key, term, *(f for w in words for f in (folded(w),) * 2)]
    return " AND ".join(where), args


def folded(text: str | None) -> str:
    """`text` as the desk's search compares it: SQLite's LIKE ignores the case of ASCII letters
    alone, so "écran" would miss "Écran", "MÜNZEN" "Münzen", and Cyrillic or Greek words any
    other case. Casefolded ("Straße" is "strasse"), compatibility-composed (a decomposed accent or
    a full-width letter is the one typed), and the dot a capital İ leaves on its i dropped, so
    "iade" finds "İADE"."""
    shown = unicodedata.normalize("NFKC", text or "").casefold().replace("i\u0307", "i")
    return unicodedata.normalize("NFKC", shown)


def _staff_row(row: aiosqlite.Row) -> StaffRow:
    return StaffRow(
        id=int(row["id"]),
        local_key=row["local_key"],
        remote_key=row["remote_key"],
        user_id=row["user_id"],
        category=row["category"],
        description=row["description"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        push_state=row["push_state"],
        last_error=row["last_error"],
        gone_at=row["gone_at"],
    )


def _let_go(spool: GrievanceSpool, taking: asyncio.Future[tuple[int, list[dict[str, Any]]] | None]) -> None:
    """Release the spool a cancelled filing's thread took after all."""
    if not taking.cancelled() and taking.exception() is None and (taken := taking.result()) is not None:
        spool.release(taken[0])


def _finished(finishing: asyncio.Future[None]) -> None:
    """Log what a cancelled filing's emptying of the spool raised, which nobody awaits."""
    if not finishing.cancelled() and (exc := finishing.exception()) is not None:
        log.warning("filed the kept grievances but could not empty the spool: %s", exc)


def claims_of(user_id: str, complaints: Iterable[tuple[str, str]]) -> list[str]:
    """The lately_filed keys /grievance file gives a player's complaints (category, words)."""
    return [_words_hash(user_id, complaint_key(category, words)) for category, words in complaints]


def _words_hash(user_id: str, words: tuple[str, ...]) -> str:
    return hashlib.sha256(json.dumps([user_id, *words]).encode()).hexdigest()


def _unchosen_in(filing: str) -> str | None:
    """The turn ("platform:request:") of a filing kept before it chose its id (UNCHOSEN); None for
    any other id."""
    turn, mark, _ = filing.partition(UNCHOSEN)
    return turn if mark and filed_in(f"{turn}0") else None


def _log_unfiled(filing_id: str, row: dict[str, Any]) -> None:
    """A grievance held in memory as the spool line `voxdesk refile` files once, by its filing id:
    the store's line, which the log's handlers keep as the player wrote it (bot/logs.py)."""
    log.error("%s%s", UNFILED, spool_line(filing_id, **row), extra={STORE_LINE: True})


def _spool_row(
    user_id: str,
    category: str,
    description: str,
    at: str,
    state: str,
    choice: Filing | None,
    filing: str | None,
) -> dict[str, Any]:
    """A grievance as the spool keeps it; one kept before it chose its filing id carries the ids
    the other complaints of its run chose."""
    row: dict[str, Any] = {
        "user_id": user_id,
        "category": category,
        "description": description,
        "at": at,
        "state": state,
    }
    if choice is not None and filing is not None and _unchosen_in(filing) and (others := choice.chosen()):
        row["others"] = others
    return row
