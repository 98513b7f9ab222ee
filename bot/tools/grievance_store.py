"""The local grievance store: every grievance is written here first, whatever the backend.

It is the embedded default's whole ticket system (keys like GRV-12) and, with Jira switched on,
the outbox that guarantees a grievance survives a Jira outage or a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import aiosqlite

from bot.db import open_sqlite
from bot.tools.base import Grievance

KEY_PREFIX = "GRV"
MAX_LISTED = 10

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
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS grievances_by_user ON grievances (user_id, id);
CREATE INDEX IF NOT EXISTS grievances_pending ON grievances (push_state);
"""


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class LocalGrievanceStore:
    """A GrievanceBackend on SQLite. `push_state` is 'local_only' when no remote tracker is in
    use, and 'pending' until a remote tracker has acknowledged the grievance."""

    def __init__(self, conn: aiosqlite.Connection, initial_state: str = "local_only") -> None:
        self._conn = conn
        self._initial_state = initial_state
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, initial_state: str = "local_only") -> LocalGrievanceStore:
        return cls(await open_sqlite(path, SCHEMA), initial_state)

    async def register(self, user_id: str, category: str, description: str) -> Grievance:
        now = utc_now()
        # The row and its key are committed together, before the player hears the key.
        async with self._write_lock:
            cursor = await self._conn.execute(
                "INSERT INTO grievances (user_id, category, description, created_at, updated_at,"
                " push_state) VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, category, description, now, now, self._initial_state),
            )
            row_id = cursor.lastrowid
            key = f"{KEY_PREFIX}-{row_id}"
            await self._conn.execute("UPDATE grievances SET local_key = ? WHERE id = ?", (key, row_id))
            await self._conn.commit()
        return Grievance(
            key=key,
            category=category,
            description=description,
            status="open",
            created_at=now,
            updated_at=now,
            local_key=key,
        )

    async def status(self, user_id: str, key: str | None = None) -> list[Grievance]:
        # The user_id condition is in every query: a key that belongs to someone else finds nothing.
        if key is not None:
            cursor = await self._conn.execute(
                "SELECT * FROM grievances WHERE user_id = ? AND (local_key = ? OR remote_key = ?)",
                (user_id, key, key),
            )
        else:
            cursor = await self._conn.execute(
                "SELECT * FROM grievances WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, MAX_LISTED),
            )
        return [self._to_grievance(row) for row in await cursor.fetchall()]

    async def check(self) -> str:
        cursor = await self._conn.execute("SELECT COUNT(*) FROM grievances")
        (count,) = await cursor.fetchone()  # type: ignore[misc]
        return f"local grievance store: {count} grievances"

    async def aclose(self) -> None:
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

    async def seed(self, rows: list[dict[str, str]]) -> None:
        """Demo grievances for `init`; a re-run never overwrites a row, so nothing filed is lost."""
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
