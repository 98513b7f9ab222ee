"""Opening the embedded SQLite databases the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import aiosqlite


async def open_sqlite(path: Path | str, schema: str = "") -> aiosqlite.Connection:
    """A WAL-mode connection (readers never wait on the writer), with `schema` applied."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(str(path))
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA busy_timeout=5000")
    if schema:
        await conn.executescript(schema)
        await conn.commit()
    return conn
