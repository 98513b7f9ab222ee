"""Per-user settings a player chooses (reply voice, reply style, ticket news), persisted."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.db import add_missing_columns, first, naming, opening, writing

REPLY_MODES = ("voice_and_text", "voice", "file", "text")

# Raised with each change to the schema or to what `open` migrates: an older voxdesk then refuses
# the file instead of running on a schema it does not know.
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS preferences (
    user_id TEXT PRIMARY KEY,
    voice TEXT,
    reply_mode TEXT NOT NULL DEFAULT 'voice_and_text',
    notify INTEGER NOT NULL DEFAULT 1  -- ticket news by DM (bot/ticket_news.py)
);
"""


@dataclass(frozen=True)
class Preferences:
    voice: str | None = None
    reply_mode: str = "voice_and_text"
    notify: bool = True


class PreferenceStore:
    def __init__(self, conn: aiosqlite.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self._write_lock = asyncio.Lock()
        # Named in a refused write: SQLite's "attempt to write a readonly database" names none.
        self.path = path

    @classmethod
    async def open(cls, path: Path | str) -> PreferenceStore:
        async with opening(path, SCHEMA, version=SCHEMA_VERSION) as conn:
            await add_missing_columns(conn, "preferences", {"notify": "INTEGER NOT NULL DEFAULT 1"})
            return cls(conn, Path(path))

    async def get(self, user_id: str) -> Preferences:
        rows = await self._conn.execute_fetchall(
            "SELECT voice, reply_mode, notify FROM preferences WHERE user_id = ?", (user_id,)
        )
        row = first(rows)
        return Preferences(row["voice"], row["reply_mode"], bool(row["notify"])) if row else Preferences()

    async def set_voice(self, user_id: str, voice: str | None) -> None:
        await self._set(user_id, "voice", voice)

    async def set_reply_mode(self, user_id: str, mode: str) -> None:
        if mode not in REPLY_MODES:
            raise ValueError(f"reply mode must be one of {', '.join(REPLY_MODES)}")
        await self._set(user_id, "reply_mode", mode)

    async def set_notify(self, user_id: str, on: bool) -> None:
        await self._set(user_id, "notify", int(on))

    async def _set(self, user_id: str, column: str, value: str | int | None) -> None:
        """One choice of the player's; the others stay as they were. `column` is one of ours."""
        try:
            async with writing(self._conn, self._write_lock):
                await self._conn.execute(
                    f"INSERT INTO preferences (user_id, {column}) VALUES (?, ?) "
                    f"ON CONFLICT(user_id) DO UPDATE SET {column} = excluded.{column}",
                    (user_id, value),
                )
                await self._conn.commit()
        except sqlite3.Error as exc:
            if self.path is None:
                raise
            raise naming(self.path, exc) from exc

    async def aclose(self) -> None:
        await self._conn.close()
