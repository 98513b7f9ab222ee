"""Per-user conversation history: text and audio ids only, bounded, surviving a restart.

A player has one conversation per place they talk in (a DM, each guild channel): what they said in
private never shapes an answer posted where others read it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiosqlite

from bot.db import add_missing_columns, naming, opening, prune_due, while_locked, writing
from bot.engines.base import PastTurn
from bot.turns import MAX_HISTORY_CHARS, chars_of

# Raised with each change to the schema or to what `open` migrates: an older voxdesk then refuses
# the file instead of running on a schema it does not know.
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    at REAL NOT NULL,
    user_text TEXT,
    reply_text TEXT NOT NULL,
    tool_results TEXT NOT NULL DEFAULT '[]',
    audio_id TEXT,
    audio_expires_at INTEGER,
    engine TEXT NOT NULL DEFAULT '',
    conversation TEXT NOT NULL DEFAULT '',
    request_id TEXT NOT NULL DEFAULT ''  -- the note or command it answered: a re-run replaces it
);
CREATE INDEX IF NOT EXISTS turns_by_user ON turns (user_id, id);
CREATE INDEX IF NOT EXISTS turns_by_age ON turns (at);
"""
# After the columns an older database lacks have been added.
INDEXES = "CREATE INDEX IF NOT EXISTS turns_by_place ON turns (user_id, conversation, id);"
# The conversation of each player's one row that is no turn: its `at`, when their latest /forget
# was sent (ToolContext.sent_at). A turn of a request sent before it is not kept, in any process
# on the storage folder and after a restart. In `turns` rather than a table of its own, which
# would raise SCHEMA_VERSION and have every older voxdesk refuse the file: one of those never
# reads it as history (no place is named so), and prunes and erases it with the player's turns.
FORGOTTEN = "/forget"
# Every conversation whose newest turn is older than the cutoff (both parameters), bar the
# /forget rows (FORGOTTEN_TURNS): turns_by_age finds the old turns, turns_by_place the few of each
# one's conversation.
IDLE_TURNS = (
    f"DELETE FROM turns WHERE at < ? AND conversation != '{FORGOTTEN}' AND NOT EXISTS (SELECT 1 FROM"
    " turns AS newer WHERE newer.user_id = turns.user_id AND newer.conversation = turns.conversation"
    " AND newer.at >= ?)"
)
# The /forget rows older than the cutoff: kept for as long as a note sent before one can still be
# answered (a restart's catch-up answers notes `discord.catch_up_minutes` old), which may be past
# the idle limit; pruned with the idle turns, such a note's turn would be kept after all.
FORGOTTEN_TURNS = f"DELETE FROM turns WHERE conversation = '{FORGOTTEN}' AND at < ?"
# How long past the catch-up's window a note it read may still wait for its turn (a raid's queue).
ANSWER_MARGIN_SECONDS = 10 * 60.0
# How often append also drops every player's idle conversations, not only its own player's.
PRUNE_EVERY_SECONDS = 5 * 60.0


class ConversationStore:
    """History of each user's recent turns, one conversation per place (`ToolContext.conversation`).

    Bounded three ways: at most `max_turns` per conversation, of which only the newest that fit
    in `max_chars` are read, and a conversation idle for longer than `idle_minutes` starts
    afresh. Its turns are deleted with the user's next turn anywhere, and every player's idle ones
    at open and then, from append or a running bot's `housekeeping`, every PRUNE_EVERY_SECONDS:
    the words of a player who never comes back are not kept much past the idle limit. No column
    can hold audio: only the engine's reference id.
    """

    def __init__(
        self,
        conn: aiosqlite.Connection,
        max_turns: int,
        idle_minutes: float,
        max_chars: int = MAX_HISTORY_CHARS,
        answered_minutes: float = 0.0,
    ) -> None:
        self._conn = conn
        self.max_turns = max_turns
        self.max_chars = max_chars
        self.idle_seconds = idle_minutes * 60
        # How long a player's latest /forget time is kept: `answered_minutes`, how old a note may
        # be and still be answered, and a margin for its wait.
        self.forget_seconds = max(self.idle_seconds, answered_minutes * 60 + ANSWER_MARGIN_SECONDS)
        self._pruned_at = 0.0
        self._write_lock = asyncio.Lock()
        # Named in a refused write's error: nine databases share the storage folder, and SQLite's
        # "database or disk is full" or "attempt to write a readonly database" names none.
        self.path: Path | None = None

    @classmethod
    async def open(
        cls, path: Path | str, max_turns: int, idle_minutes: float, answered_minutes: float = 0.0
    ) -> ConversationStore:
        async with opening(path, SCHEMA, version=SCHEMA_VERSION) as conn:
            await add_missing_columns(
                conn,
                "turns",
                {"conversation": "TEXT NOT NULL DEFAULT ''", "request_id": "TEXT NOT NULL DEFAULT ''"},
            )
            await conn.executescript(INDEXES)
            store = cls(conn, max_turns, idle_minutes, answered_minutes=answered_minutes)
            store.path = Path(path)
            await store.prune()
            return store

    async def prune(self, now: float | None = None) -> int:
        """Delete every player's idle conversations; how many turns went."""
        async with writing(self._conn, self._write_lock):
            deleted = await self._delete_idle(time.time() if now is None else now)
            await self._conn.commit()
        return deleted

    async def housekeeping(self, now: float | None = None) -> None:
        """prune() when due, for a running bot's recheck: a bot that hears no more notes makes no
        append to prune from, and would keep the last player's words long past the idle limit."""
        now = time.time() if now is None else now
        if prune_due(now, self._pruned_at, min(PRUNE_EVERY_SECONDS, self.idle_seconds)):
            await self.prune(now)

    async def _delete_idle(self, now: float) -> int:
        self._pruned_at = now
        cutoff = now - self.idle_seconds
        cursor = await self._conn.execute(IDLE_TURNS, (cutoff, cutoff))
        marks = await self._conn.execute(FORGOTTEN_TURNS, (now - self.forget_seconds,))
        return cursor.rowcount + marks.rowcount

    async def history(self, user_id: str, conversation: str = "", now: float | None = None) -> list[PastTurn]:
        now = time.time() if now is None else now
        rows = await self._conn.execute_fetchall(
            "SELECT * FROM turns WHERE user_id = ? AND conversation = ? ORDER BY id DESC LIMIT ?",
            (user_id, conversation, self.max_turns),
        )
        rows = list(rows)
        if not rows or now - rows[0]["at"] > self.idle_seconds:
            return []
        kept: list[PastTurn] = []
        size = 0
        for r in rows:  # newest first: a turn too big to fit ends the history there
            past = PastTurn(
                user_text=r["user_text"],
                reply_text=r["reply_text"],
                tool_results=json.loads(r["tool_results"]),
                audio_id=r["audio_id"],
                audio_expires_at=r["audio_expires_at"],
                at=r["at"],
                engine=r["engine"],
            )
            size += chars_of(past)
            if size > self.max_chars:
                break
            kept.append(past)
        return kept[::-1]

    async def append(
        self,
        user_id: str,
        turn: PastTurn,
        conversation: str = "",
        request_id: str = "",
        afresh: bool = False,
        sent_at: float = 0.0,
        since: float = 0.0,
    ) -> bool:
        """Add a turn; whether it was kept. A note answered again (its answer never reached the
        player, or a restart cut its turn) saw its first attempt in the history, and so what that
        attempt filed; its new turn then replaces the first, so the conversation holds each note
        once. `afresh`: the turn was answered without the conversation's earlier turns, which go;
        `since`: without those before its turn whose `at` this is, which go (in the order they were
        kept, not by `at`: a clock stepped back would put a newer turn's `at` before it).
        `sent_at`, when its request was sent: one sent before the player's latest /forget (or in
        its millisecond, which Discord's ids cannot order) is not kept."""
        try:
            return await self._append(user_id, turn, conversation, request_id, afresh, sent_at, since)
        except sqlite3.Error as exc:
            if self.path is None:
                raise
            raise naming(self.path, exc) from exc

    async def _append(
        self,
        user_id: str,
        turn: PastTurn,
        conversation: str,
        request_id: str,
        afresh: bool,
        sent_at: float,
        since: float,
    ) -> bool:
        at = turn.at or time.time()
        async with writing(self._conn, self._write_lock):
            # One transaction from the look at the /forget to the insert: another process's
            # /forget lands before it or after it, never in between.
            await while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            if sent_at and sent_at <= await self._forgotten_at(user_id):
                await self._conn.rollback()
                return False
            # Conversations idle past the limit can never be read again: this one starts afresh,
            # and the player's others are forgotten rather than kept.
            await self._conn.execute(
                "DELETE FROM turns WHERE user_id = ? AND conversation != ? AND conversation IN (SELECT"
                " conversation FROM turns WHERE user_id = ? GROUP BY conversation HAVING MAX(at) < ?)",
                (user_id, FORGOTTEN, user_id, at - self.idle_seconds),
            )
            if prune_due(at, self._pruned_at, PRUNE_EVERY_SECONDS):
                await self._delete_idle(at)
            if afresh:
                await self._conn.execute(
                    "DELETE FROM turns WHERE user_id = ? AND conversation = ?", (user_id, conversation)
                )
            else:
                if since:
                    await self._conn.execute(
                        "DELETE FROM turns WHERE user_id = ? AND conversation = ? AND id < (SELECT"
                        " MIN(id) FROM turns WHERE user_id = ? AND conversation = ? AND at = ?)",
                        (user_id, conversation, user_id, conversation, since),
                    )
                if request_id:
                    await self._conn.execute(
                        "DELETE FROM turns WHERE user_id = ? AND conversation = ? AND request_id = ?",
                        (user_id, conversation, request_id),
                    )
            await self._conn.execute(
                "INSERT INTO turns (user_id, conversation, request_id, at, user_text, reply_text,"
                " tool_results, audio_id, audio_expires_at, engine) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    conversation,
                    request_id,
                    at,
                    turn.user_text,
                    turn.reply_text,
                    json.dumps(turn.tool_results),
                    turn.audio_id,
                    turn.audio_expires_at,
                    turn.engine,
                ),
            )
            # Keep only what history() can return, so the table never grows without bound.
            await self._conn.execute(
                "DELETE FROM turns WHERE user_id = ? AND conversation = ? AND id NOT IN (SELECT id FROM"
                " turns WHERE user_id = ? AND conversation = ? ORDER BY id DESC LIMIT ?)",
                (user_id, conversation, user_id, conversation, self.max_turns),
            )
            await self._conn.commit()
        return True

    async def _forgotten_at(self, user_id: str) -> float:
        rows = await self._conn.execute_fetchall(
            "SELECT MAX(at) FROM turns WHERE user_id = ? AND conversation = ?", (user_id, FORGOTTEN)
        )
        return rows[0][0] or 0.0

    async def reset(self, user_id: str, sent_at: float = 0.0) -> int:
        """Forget the player's every conversation; how many turns went. `sent_at`, when the
        /forget was sent: the turns of requests sent before it are not kept (`append`) either.
        One row per player keeps that time, the latest /forget's, pruned at `forget_seconds`."""
        try:
            return await self._reset(user_id, sent_at)
        except sqlite3.Error as exc:
            if self.path is None:
                raise
            raise naming(self.path, exc) from exc

    async def _reset(self, user_id: str, sent_at: float) -> int:
        async with writing(self._conn, self._write_lock):
            await while_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            latest = max(sent_at, await self._forgotten_at(user_id))
            cursor = await self._conn.execute(
                "DELETE FROM turns WHERE user_id = ? AND conversation != ?", (user_id, FORGOTTEN)
            )
            turns = cursor.rowcount
            if sent_at:
                await self._conn.execute(
                    "DELETE FROM turns WHERE user_id = ? AND conversation = ?", (user_id, FORGOTTEN)
                )
                await self._conn.execute(
                    "INSERT INTO turns (user_id, conversation, at, reply_text) VALUES (?, ?, ?, '')",
                    (user_id, FORGOTTEN, latest),
                )
            await self._conn.commit()
            # The turns' words are still in the log's earlier frames, and in the database file's
            # pages until SQLite's next checkpoint, which a quiet bot may not reach for days.
            await self._conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
        return turns

    async def aclose(self) -> None:
        await self._conn.close()
