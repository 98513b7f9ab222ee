"""Opening the embedded SQLite databases: a new database that another process is writing to is
still opened, switched to WAL once that write ends."""

import asyncio
import sqlite3
from pathlib import Path

from bot.db import open_sqlite, while_locked


async def test_a_new_database_another_process_is_writing_to_opens_once_the_write_ends(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE first_bot (x)")  # still in rollback-journal mode, as a new file is
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO first_bot VALUES (1)")

    async def finish_the_write() -> None:
        await asyncio.sleep(0.3)
        other.execute("COMMIT")

    ending = asyncio.create_task(finish_the_write())
    conn = await open_sqlite(path, "CREATE TABLE IF NOT EXISTS second_bot (y);")
    try:
        await ending
        cursor = await conn.execute("PRAGMA journal_mode")
        assert (await cursor.fetchone())[0] == "wal"
    finally:
        await conn.close()
        other.close()


async def test_a_write_sqlite_refuses_at_once_is_tried_again_until_it_goes_through(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    conn = await open_sqlite(path, "CREATE TABLE notes (id INTEGER PRIMARY KEY);", autocommit=True)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await conn.executemany("INSERT INTO notes VALUES (?)", [(1,), (2,)])
        # A read left open on this connection, then another process's write: SQLite refuses this
        # connection's next write at once ("database is locked"), without its busy wait.
        reading = await conn.execute("SELECT id FROM notes")
        await reading.fetchone()
        other.execute("INSERT INTO notes VALUES (3)")
        tries = 0

        async def write() -> None:
            nonlocal tries
            tries += 1
            if tries == 3:
                await reading.close()  # the read ends: the write can go through
            await conn.execute("INSERT INTO notes VALUES (4)")

        await while_locked(write)
        assert tries == 3
        assert other.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 4
    finally:
        await conn.close()
        other.close()


async def test_new_data_folders_and_databases_are_the_owners_alone(tmp_path: Path) -> None:
    # The databases hold players' words, grievances and Discord ids: not for every local user.
    conn = await open_sqlite(tmp_path / "var" / "talk.db", "CREATE TABLE said (words TEXT)")
    try:
        await conn.execute("INSERT INTO said VALUES ('my refund never came')")
        await conn.commit()
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "var").iterdir()}
    finally:
        await conn.close()
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700
    assert modes == {"talk.db": 0o600, "talk.db-wal": 0o600, "talk.db-shm": 0o600}
