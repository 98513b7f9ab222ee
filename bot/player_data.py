"""`voxdesk player export|forget ID`: what voxdesk holds about one player, on their request.

Export gathers every row kept under the player's Discord id, in every database under
`storage.dir`, the rows kept under their grievances (staff notes, status history, the changes
ticket news has still to read), and the grievances still waiting in the spool. Forget erases what
only serves the bot (conversations, settings, usage, where to reach them, answers made for their
notes and not yet wholly sent, their claims on complaints filed lately) and keeps what is the
studio's record or keeps the bot from acting twice, saying which and why: their grievances with
each one's status history (and Jira's copies), their stats in players.db (the embedded ones), the
newest ticket news of each ticket (so no status is told again), news still to send and the keys
an answer never told (still DMed), and which notes were answered
(pruned after 30 days). A player who switched ticket news off keeps that choice.

Plain sqlite3 on each file, as `backup` does: no model, engine or Discord client is loaded, and
the bot may run meanwhile (each database's busy wait covers its writes). The erasure's time stays
in their place in conversations.db, as a /forget's does: a turn of the player's being answered at
that very moment, saved after the erasure, is refused (its usage figures are counted)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot import ticket_news
from bot.app import StoragePaths
from bot.conversations import FORGOTTEN
from bot.db import (
    BUSY_SECONDS,
    kept,
    naming,
    new_partial,
    read_only_uri,
    refuse_newer,
    remove_partials,
    restore_from_log,
)
from bot.instants import instant
from bot.schemas import refuse_newer_databases, remedy, versions
from bot.tools.grievance_spool import GrievanceSpool
from bot.tools.grievance_store import (
    LATELY_GONE,
    RESUBMIT_SECONDS,
    STATUS_HISTORY,
    claims_of,
    iso_at,
    status_changes,
)

DISCORD_ID = re.compile(r"[0-9]{1,20}")
SNOWFLAKE_DIGITS = (17, 20)  # a real Discord id's length, from 2015's on

# (database, table): the rows keyed by the player's id.
BY_USER = {
    "conversations": ("turns",),
    "preferences": ("preferences",),
    "usage": ("usage",),
    "news": ("news", "last_channel", "dms_closed"),
    "notes": ("notes", "places", "answers"),
    "grievances": ("grievances",),
}

# Of the rows under the player's id, those that are theirs alone: an older voxdesk kept a guild
# channel, everyone's place, under the id of the first player who sent a note there.
MINE_ONLY = {"places": " AND kind = 'dm'"}


# The columns of those tables that keep a time as Unix seconds: ISO 8601 in UTC in the export, as
# every other time in it is, for a reader who cannot tell 1765000000.0 for a date.
UNIX_SECONDS = {
    "turns": ("at", "audio_expires_at"),
    "latest_forget": ("at", "audio_expires_at"),  # a row of turns
    "news": ("next_try_at",),
    "notes": ("lease_until", "updated_at"),
    "places": ("heard_at",),
    "answers": ("made_at",),
    "grievances": ("next_try_at",),
    "lately_filed": ("at", "lease_until"),
}
# Times kept as text another program may have written with an offset or none (players.db is the
# studio's): the same instant, in UTC, one with no offset read as UTC (bot/instants.py); a date
# alone stays a date (YYYY-MM-DD).
ISO_TEXT = {"game_sessions": ("played_at",), "achievements": ("earned_at",)}


class NotAPlayerId(ValueError):
    pass


def checked(user_id: str) -> str:
    if not DISCORD_ID.fullmatch(user_id):
        raise NotAPlayerId(f"{user_id!r} is not a Discord user id (digits only, e.g. 111111111111111111)")
    return user_id


# players.db, the embedded stats: the player's name, games and achievements, by their player id.
PLAYER_ROWS = {
    "players": "SELECT * FROM players WHERE discord_user_id = ?",
    "game_sessions": "SELECT * FROM game_sessions WHERE player_id IN ({mine}) ORDER BY session_id",
    "achievements": "SELECT * FROM achievements WHERE player_id IN ({mine}) ORDER BY achievement_id",
}
MINE = "SELECT player_id FROM players WHERE discord_user_id = ?"


def _refuse_newer(storage: StoragePaths) -> None:
    """Raise NewerSchema (the line a store opening the file says) for the first database a newer
    voxdesk wrote, before any is read or written: a forget stopped half-way would leave a player
    erased from some databases and not the others. A file a newer voxdesk wrote may keep a
    player's rows where these queries do not look, or under the same names with another meaning."""
    refuse_newer_databases(storage, [*BY_USER, "players", "recent_claims"])


# news.db's untellings owed (`ticket_news.UNTELL_PREFIX`), whose names begin with their player's id.
UNTELLINGS = "FROM cursors WHERE substr(name, 1, ?) = ?"


def _untellings_of(user_id: str) -> tuple[int, str]:
    prefix = f"{ticket_news.UNTELL_PREFIX}{user_id}:"
    return (len(prefix), prefix)


@contextlib.contextmanager
def _database(storage: StoragePaths, name: str, write: bool = False) -> Iterator[sqlite3.Connection | None]:
    """The database `name`, or None when voxdesk never made it (nothing is kept there)."""
    path: Path = getattr(storage, name)
    if not kept(path):
        yield None
        return
    restore_from_log(path)  # opened as it is, SQLite would delete the log that holds its commits
    # As a URI, quoted: a storage folder named "clan #2" must not end the path at "#".
    uri = path.resolve().as_uri() if write else read_only_uri(path)
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS, isolation_level=None)
    except sqlite3.Error as exc:
        raise naming(path, exc) from exc
    conn.row_factory = sqlite3.Row
    try:
        # Again on this connection: a newer voxdesk may have started on the file since the check.
        refuse_newer(conn, path, versions()[name], remedy(name))
        if write:
            # What is erased is overwritten, not left in the page's free space for `strings` and
            # every later backup to read: python.org's and uv's SQLite do not do so by default.
            conn.execute("PRAGMA secure_delete = ON")
    except sqlite3.Error:
        conn.close()
        raise
    try:
        yield conn
    except sqlite3.Error as exc:
        raise naming(path, exc) from exc
    finally:
        conn.close()


def _settled(conn: sqlite3.Connection | None) -> bool:
    """Move the erasure into the database file and empty its write-ahead log; whether it was.
    While the bot runs it keeps the file open, so SQLite leaves the old pages, words and all, in
    the file until its next checkpoint, and their earlier copies in the log until overwritten."""
    if conn is None:
        return True
    (busy, _, _) = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


def _rows(conn: sqlite3.Connection | None, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    if conn is None:
        return []
    try:
        return [dict(row) for row in conn.execute(sql, args)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a file made before that table was
            return []
        raise


def export(storage: StoragePaths, user_id: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything kept about `user_id`, as JSON-ready data: one key per database."""
    checked(user_id)
    held: dict[str, Any] = {
        "user_id": user_id,
        "exported_at": iso_at((now or dt.datetime.now(dt.UTC)).timestamp()),
        "storage": str(storage.root),
    }
    _refuse_newer(storage)
    for name, tables in BY_USER.items():
        with _database(storage, name) as conn:
            part = {
                t: _rows(conn, f"SELECT * FROM {t} WHERE user_id = ?{MINE_ONLY.get(t, '')}", (user_id,))
                for t in tables
            }
            if name == "conversations":
                # The row that keeps when their latest /forget was sent is no turn of conversation.
                # A file no store has opened since an older voxdesk made it may lack the column.
                rows = part["turns"]
                part["turns"] = [r for r in rows if r.get("conversation", "") != FORGOTTEN]
                part["latest_forget"] = [r for r in rows if r.get("conversation", "") == FORGOTTEN]
            if name == "news":
                # Their tickets' keys an answer never told, owed back to ticket news to be DMed.
                part["untellings_owed"] = _rows(
                    conn, f"SELECT * {UNTELLINGS} ORDER BY name", _untellings_of(user_id)
                )
            if name == "grievances":
                part["staff_notes"] = _rows(
                    conn,
                    "SELECT * FROM staff_notes WHERE grievance_id IN"
                    " (SELECT id FROM grievances WHERE user_id = ?) ORDER BY id",
                    (user_id,),
                )
                part["status_changes"] = _status_changes(conn, user_id)
                # What ticket news has still to read of their tickets: a move's event keeps the Jira
                # key the player knew, which the grievance no longer holds.
                part["news_events"] = _rows(
                    conn,
                    "SELECT * FROM news_events WHERE grievance_id IN"
                    " (SELECT id FROM grievances WHERE user_id = ?) ORDER BY id",
                    (user_id,),
                )
                part["waiting_in_spool"], part["unreadable_spool_lines"] = _spooled(storage, user_id)
                with _database(storage, "recent_claims") as recent:
                    complaints = part["grievances"] + part["waiting_in_spool"]
                    part["lately_filed"] = _claims(recent, user_id, complaints)
        held[name] = part
    held["players"] = _stats(storage, user_id)
    for part in (held[name] for name in [*BY_USER, "players"]):
        for table, rows in part.items():
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, dict):
                    _for_json(row, table)
    return held


def nothing_kept(exported: dict[str, Any]) -> bool:
    """Whether an `export` found no row at all: an id no player of this bot has (a mistyped one
    passes as digits, as tests and fakes use short ones)."""
    return not any(rows for name in [*BY_USER, "players"] for rows in exported[name].values())


def unknown(user_id: str, storage: StoragePaths) -> str:
    """The warning for an id of which `storage` keeps nothing; a hint where it is no snowflake's
    length."""
    said = f"no such player here: voxdesk keeps nothing about {user_id} in {storage.root}"
    if not SNOWFLAKE_DIGITS[0] <= len(user_id) <= SNOWFLAKE_DIGITS[1]:
        said += f" (a Discord user id has {SNOWFLAKE_DIGITS[0]} to {SNOWFLAKE_DIGITS[1]} digits)"
    return said


def _for_json(row: dict[str, Any], table: str) -> None:
    """Its times in ISO 8601 in UTC, its bytes (a kept answer's audio) in base64."""
    for column, value in row.items():
        if isinstance(value, bytes):
            row[column] = base64.b64encode(value).decode("ascii")
    for column in UNIX_SECONDS.get(table, ()):
        value = row.get(column)
        if isinstance(value, int | float) and not isinstance(value, bool):
            row[column] = iso_at(value)
    for column in ISO_TEXT.get(table, ()):
        value = row.get(column)
        if not isinstance(value, str):
            continue
        try:
            row[column] = _in_utc_text(value)
        except (ValueError, OverflowError):  # OverflowError: in UTC before year 1 or past 9999
            continue  # shown as the studio wrote it


def _in_utc_text(value: str) -> str:
    try:
        # A date alone (a DATE column) is a day, not an instant: as midnight UTC it would name a
        # time nothing happened at, and west of UTC the day before.
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        return instant(value).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _status_changes(conn: sqlite3.Connection | None, user_id: str) -> list[dict[str, Any]]:
    """Each status change of the player's grievances (their history on the desk's ticket page,
    kept in grievances.db's meta), by grievance, oldest first."""
    rows = _rows(
        conn,
        "SELECT g.id, m.value FROM grievances g JOIN meta m ON m.name = ? || g.id"
        " WHERE g.user_id = ? ORDER BY g.id",
        (STATUS_HISTORY, user_id),
    )
    return [
        {"grievance_id": row["id"], **vars(change)} for row in rows for change in status_changes(row["value"])
    ]


def _stats(storage: StoragePaths, user_id: str) -> dict[str, list[dict[str, Any]]]:
    """What players.db (the embedded stats, `tools.stats = "sqlite"`) holds about the player: the
    game's record, which a studio on its own stats database (ODBC) keeps there instead."""
    with _database(storage, "players") as conn:
        return {t: _rows(conn, sql.format(mine=MINE), (user_id,)) for t, sql in PLAYER_ROWS.items()}


def _spooled(storage: StoragePaths, user_id: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The player's grievances kept in the spool (not yet in the database), and the unreadable
    lines that name them (a line cut short may name nobody: those are not theirs to be shown)."""
    rows, lines = GrievanceSpool.beside(storage.grievances).contents()
    waiting = [row for row in rows if row["user_id"] == user_id]
    unreadable = [line for line in lines if f'"user_id": "{user_id}"' in line]
    return waiting, unreadable


def _claims(
    conn: sqlite3.Connection | None, user_id: str, complaints: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The player's claims on complaints filed lately (lately_filed in grievances-recent.db:
    /grievance file's, keyed by a hash of player, category and words, which their grievances and
    spooled ones give)."""
    hashes = set(claims_of(user_id, [(str(c["category"]), str(c["description"])) for c in complaints]))
    # The table holds the last few minutes' claims only: read whole, as a player may have
    # thousands of grievances.
    return [
        row
        for row in _rows(conn, "SELECT * FROM lately_filed ORDER BY at", ())
        if row["words_hash"] in hashes
    ]


def forget(storage: StoragePaths, user_id: str) -> list[str]:
    """Erase what /forget and a request to erase cover; one line per database, saying what was
    erased and what was kept, and why."""
    checked(user_id)
    _refuse_newer(storage)
    lines = []
    with _database(storage, "conversations", write=True) as conn:
        # Their latest /forget's time is a row of `turns` too (conversations.FORGOTTEN): erased
        # with them, but not counted as a turn.
        marked = _has_column(conn, "turns", "conversation")
        latest = (
            _rows(
                conn,
                "SELECT MAX(at) AS at FROM turns WHERE user_id = ? AND conversation = ?",
                (user_id, FORGOTTEN),
            )
            if marked
            else []
        )
        marks = (
            _delete(conn, "DELETE FROM turns WHERE user_id = ? AND conversation = ?", (user_id, FORGOTTEN))
            if marked
            else 0
        )
        n = _delete(conn, "DELETE FROM turns WHERE user_id = ?", (user_id,))
        if conn is not None and marked:
            # This erasure's time in their place, as /forget keeps its own: a note of theirs the
            # running bot is answering now saves its turn after this, and the store refuses a turn
            # of a note sent before it. The bot prunes it as it prunes a /forget's.
            at = max(time.time(), (latest[0]["at"] if latest else None) or 0.0)
            conn.execute(
                "INSERT INTO turns (user_id, conversation, at, reply_text) VALUES (?, ?, ?, '')",
                (user_id, FORGOTTEN, at),
            )
        lines.append(
            f"conversations.db: {n} turn(s) of conversation erased"
            + (", and when they last used /forget" if marks else "")
            + (
                "; kept: when this erasure ran (no words), so no turn of a note sent before it is kept"
                if conn is not None and marked
                else ""
            )
        )
    with _database(storage, "preferences", write=True) as conn:
        notify = "notify" if _has_column(conn, "preferences", "notify") else "1 AS notify"
        prefs = _rows(conn, f"SELECT {notify} FROM preferences WHERE user_id = ?", (user_id,))
        if prefs and not prefs[0]["notify"]:
            # An opt-out erased would switch ticket news back on for someone who asked for none.
            assert conn is not None
            conn.execute(
                "UPDATE preferences SET voice = NULL, reply_mode = 'voice_and_text' WHERE user_id = ?",
                (user_id,),
            )
            lines.append("preferences.db: reply voice and style erased; kept: ticket news off, as they chose")
        else:
            n = _delete(conn, "DELETE FROM preferences WHERE user_id = ?", (user_id,))
            lines.append(f"preferences.db: {n} row(s) of settings erased")
    with _database(storage, "usage", write=True) as conn:
        n = _delete(conn, "DELETE FROM usage WHERE user_id = ?", (user_id,))
        lines.append(f"usage.db: {n} day(s) of usage erased")
    with _database(storage, "news", write=True) as conn:
        n = _delete(conn, "DELETE FROM last_channel WHERE user_id = ?", (user_id,))
        n += _delete(conn, "DELETE FROM dms_closed WHERE user_id = ?", (user_id,))
        # Ticket keys an answer never told, still to DM, as news still to send is: the player's
        # record of their own grievances, which forget keeps. No words, and gone once DMed.
        owed = len(_rows(conn, f"SELECT name {UNTELLINGS}", _untellings_of(user_id)))
        # Each ticket's newest piece stays (as news.db's own pruning keeps it): a change is told
        # by comparing with it, and without it the ticket's status would be told again.
        told = _delete(conn, f"DELETE FROM news WHERE user_id = ? AND {ticket_news.SUPERSEDED}", (user_id,))
        kept = len(_rows(conn, "SELECT id FROM news WHERE user_id = ?", (user_id,)))
        unsent = len(
            _rows(
                conn, f"SELECT id FROM news WHERE user_id = ? AND state IN {ticket_news.TO_SEND}", (user_id,)
            )
        )
        # A change is compared with the status alone: the words told (the start of the ticket's
        # description) are kept only where the news is still to be sent.
        _delete(
            conn,
            f"UPDATE news SET text = '' WHERE user_id = ? AND state NOT IN {ticket_news.TO_SEND}",
            (user_id,),
        )
        lines.append(
            f"news.db: {told} piece(s) of ticket news and {n} channel note(s) erased;"
            f" kept: {kept}, the newest of each ticket (so no status is told twice), its words erased"
            " if told"
            + (f": {unsent} still to send keeps them" if unsent else "")
            + (f"; kept: {owed} record(s) of ticket keys an answer never told, still to DM" if owed else "")
        )
    with _database(storage, "notes", write=True) as conn:
        # Answers made for their notes and not yet wholly sent (kept for the recheck): their words
        # and voice. A note of theirs still waiting is then answered anew.
        a = _delete(conn, "DELETE FROM answers WHERE user_id = ?", (user_id,))
        n = len(_rows(conn, "SELECT message_id FROM notes WHERE user_id = ?", (user_id,)))
        p = len(
            _rows(conn, f"SELECT place_id FROM places WHERE user_id = ?{MINE_ONLY['places']}", (user_id,))
        )
        lines.append(
            f"notes.db: {a} answer(s) not yet wholly sent erased; kept {n} note id(s) and {p} DM"
            " channel(s), no words: they keep a note from being answered twice; answered notes go"
            " after 30 days"
        )
    with _database(storage, "grievances") as conn:
        mine = _rows(conn, "SELECT category, description FROM grievances WHERE user_id = ?", (user_id,))
        changes = len(_status_changes(conn, user_id))
    n = len(mine)
    waiting, unreadable = _spooled(storage, user_id)
    with _database(storage, "recent_claims", write=True) as recent:
        claims = [c["words_hash"] for c in _claims(recent, user_id, mine + waiting)]
        erased = sum(_delete(recent, "DELETE FROM lately_filed WHERE words_hash = ?", (h,)) for h in claims)
        # Everyone's claims past the window go too: no repeat reads them, and each claim drops them.
        now = time.time()
        _delete(recent, f"DELETE FROM lately_filed WHERE {LATELY_GONE}", (now - RESUBMIT_SECONDS, now))
    lines.append(
        f"{storage.recent_claims.name}: {erased} claim(s) of a complaint filed lately erased (hashes"
        " of their words that tell a repeated /grievance file the first ticket)"
    )
    spooled = f", {len(waiting)} waiting in the spool" if waiting else ""
    if unreadable:
        # Never filed by the bot: staff file them by hand from the spool's .rejected (`check`).
        spooled += f", {len(unreadable)} unreadable spool line(s) naming them, set aside to file by hand"
    lines.append(
        f"grievances.db: kept {n} grievance(s){spooled}, and {changes} status change(s) of them:"
        " the studio's record (and Jira's copies); `player export` shows them"
    )
    unsettled = []
    for name in ERASED_IN:
        with _database(storage, name, write=True) as conn:
            if not _settled(conn):
                unsettled.append(getattr(storage, name).name)
    if unsettled:
        lines.append(
            f"{', '.join(unsettled)}: the bot was reading, so what was erased may stay in the"
            " file until SQLite's next checkpoint: run this again to be sure"
        )
    stats = {table: len(rows) for table, rows in _stats(storage, user_id).items()}
    lines.append(
        f"players.db: kept {stats['players']} player record(s), {stats['game_sessions']} game(s) and"
        f" {stats['achievements']} achievement(s): the game's record of their play"
    )
    return lines


def _has_column(conn: sqlite3.Connection | None, table: str, column: str) -> bool:
    """Whether `table` has `column`. A file an older voxdesk made and no store has opened since
    (a request handled before the upgraded bot first started) lacks the columns each store adds
    as it opens: read as that store would make them, a forget erases all it should instead of
    stopping after the first databases, the player erased from those alone."""
    if conn is None:
        return False
    return any(row["name"] == column for row in conn.execute(f"PRAGMA table_info({table})"))


# The databases forget writes to.
ERASED_IN = ("conversations", "preferences", "usage", "news", "notes", "recent_claims")


def _delete(conn: sqlite3.Connection | None, sql: str, args: tuple[Any, ...]) -> int:
    if conn is None:
        return 0
    try:
        return conn.execute(sql, args).rowcount
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise


FORGET_NOTE = (
    "not erased here: backups made before now; a note of theirs the bot is answering at this moment"
    " is answered, its turn not kept, its usage figures counted"
)


def write_private(path: Path, text: str) -> None:
    """A new file only its owner may read: an export is one person's data, words included. Written
    whole under another name, then linked to its own, which must be new: an export cut short (a
    kill, a full disk) is never one that looks whole, nor keeps the next from being written."""
    remove_partials(path.parent, [path.name])  # an earlier export of it killed half-way
    if path.exists():  # refused before a player's data is written anywhere
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))
    partial, fd = new_partial(path, 0o600)
    try:
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
            try:
                os.link(partial, path)
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # A USB stick (FAT, exFAT) or an SMB share: the name claimed, still never over an
                # existing file, then the whole export renamed onto it. A kill in between leaves
                # an empty file by that name, never part of a player's data.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# What link() says on a file system that has no hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
