"""Opening the embedded SQLite databases: a new database that another process is writing to is
still opened, switched to WAL once that write ends."""

import asyncio
import contextlib
import os
import re
import sqlite3
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.db import NewerSchema, open_sqlite, opening, while_locked


def refusals_noted(module: Any, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once `module`'s `while_locked` has had its action refused as locked: a test ends the
    other process's write then, not after a pause that a busy machine may outlast before the
    write under test was even tried."""
    refused = asyncio.Event()
    real = module.while_locked

    async def noting(action: Callable[[], Awaitable[Any]], seconds: float | None = None) -> Any:
        async def tried() -> Any:
            try:
                return await action()
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):
                    refused.set()
                raise

        return await real(tried, seconds)

    monkeypatch.setattr(module, "while_locked", noting)
    return refused


async def test_a_new_database_another_process_is_writing_to_opens_once_the_write_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import db

    path = tmp_path / "shared.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE first_bot (x)")  # still in rollback-journal mode, as a new file is
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO first_bot VALUES (1)")
    refused = refusals_noted(db, monkeypatch)

    async def finish_the_write() -> None:
        await refused.wait()
        other.execute("COMMIT")

    ending = asyncio.create_task(finish_the_write())
    conn = await open_sqlite(path, "CREATE TABLE IF NOT EXISTS second_bot (y);", version=1)
    try:
        assert refused.is_set()  # opened while the other write was under way, not after it
        await ending
        cursor = await conn.execute("PRAGMA journal_mode")
        assert (await cursor.fetchone())[0] == "wal"
    finally:
        await conn.close()
        other.close()


async def test_a_write_sqlite_refuses_at_once_is_tried_again_until_it_goes_through(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    conn = await open_sqlite(path, "CREATE TABLE notes (id INTEGER PRIMARY KEY);", version=1, autocommit=True)
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
    conn = await open_sqlite(tmp_path / "var" / "talk.db", "CREATE TABLE said (words TEXT)", version=1)
    try:
        await conn.execute("INSERT INTO said VALUES ('my refund never came')")
        await conn.commit()
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "var").iterdir()}
    finally:
        await conn.close()
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700
    assert modes == {"talk.db": 0o600, "talk.db-wal": 0o600, "talk.db-shm": 0o600}


async def open_players(path: Path) -> Any:
    """players.db as `init` makes it (its schema script, stamped) and the stats backend opens it."""
    from bot import paths
    from bot.seed import load_sql_script
    from bot.tools.embedded import SqliteStats

    await asyncio.to_thread(load_sql_script, path, paths.SQL / "sqlite" / "schema.sql")
    return await SqliteStats.open(path)


def every_store() -> dict[str, Callable[[Path], Awaitable[Any]]]:
    """How each store voxdesk keeps in the storage folder is opened, by its file's name."""
    from bot.config import UsageSettings
    from bot.conversations import ConversationStore
    from bot.note_ledger import NoteLedger
    from bot.preferences import PreferenceStore
    from bot.ticket_news import NewsStore
    from bot.tools.embedded import FtsManuals
    from bot.tools.grievance_store import LocalGrievanceStore
    from bot.usage import UsageMeter
    from bot.web.security import StaffLogins

    return {
        "conversations.db": lambda p: ConversationStore.open(p, 10, 30),
        "preferences.db": PreferenceStore.open,
        "notes.db": NoteLedger.open,
        "news.db": NewsStore.open,
        "grievances.db": LocalGrievanceStore.open,
        # Attached to the grievance store's connection: opened, and made, by that store.
        "grievances-recent.db": lambda p: LocalGrievanceStore.open(p.with_name("grievances.db")),
        "usage.db": lambda p: UsageMeter.open(p, UsageSettings(), "gpt-audio-1.5"),
        "web.db": StaffLogins.open,
        "manuals.db": FtsManuals.open,
        "players.db": open_players,
    }


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


async def test_every_store_refuses_a_database_a_newer_voxdesk_wrote_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    # A downgrade, or a newer install's backup restored: the old code would run on a schema it
    # does not know (a new NOT NULL column sent every grievance to the spool with a warning).
    for name, open_store in every_store().items():
        if name == "grievances-recent.db":
            continue  # left aside, claims in memory: test_a_broken_recent_claims_file_never_stops_...
        (tmp_path / name).mkdir()
        path = tmp_path / name / name
        await (await open_store(path)).aclose()
        made = user_version(path)
        assert made >= 1, name  # stamped when the store made its schema
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(f"PRAGMA user_version = {made + 1}")
        before = path.read_bytes()
        with pytest.raises(NewerSchema) as refused:
            await open_store(path)
        said = str(refused.value)
        assert said == (
            f"{path} was written by a newer voxdesk (schema version {made + 1}, this one knows up to"
            f" {made}): upgrade voxdesk, or restore a backup this version made"
        ), name
        assert "\n" not in said
        assert path.read_bytes() == before, name  # nothing migrated, pruned or stamped


async def test_a_database_from_before_schema_versions_is_migrated_and_stamped(tmp_path: Path) -> None:
    path = tmp_path / "preferences.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:  # user_version 0, no notify column yet
        conn.execute("CREATE TABLE preferences (user_id TEXT PRIMARY KEY, voice TEXT, reply_mode TEXT)")
        conn.execute("INSERT INTO preferences VALUES ('7', 'nova', 'voice_only')")
        conn.commit()
    from bot.preferences import SCHEMA_VERSION, PreferenceStore

    store = await PreferenceStore.open(path)
    try:
        kept = await store.get("7")
        assert (kept.voice, kept.reply_mode, kept.notify) == ("nova", "voice_only", True)
    finally:
        await store.aclose()
    assert user_version(path) == SCHEMA_VERSION


async def test_a_store_whose_migration_fails_is_not_stamped(tmp_path: Path) -> None:
    # Stamped only once the store's own migration went through: the next start tries it again.
    path = tmp_path / "store.db"
    with pytest.raises(sqlite3.OperationalError):
        async with opening(path, "CREATE TABLE IF NOT EXISTS t (x);", version=3) as conn:
            await conn.execute("ALTER TABLE t ADD COLUMN x")  # duplicate column
    assert user_version(path) == 0
    async with opening(path, "CREATE TABLE IF NOT EXISTS t (x);", version=3) as conn:
        pass
    await conn.close()
    assert user_version(path) == 3


async def test_every_reader_of_players_db_refuses_one_a_newer_voxdesk_wrote(tmp_path: Path) -> None:
    # voxdesk only reads the players (but for `init`'s schema script): a newer version's tables
    # could still mean other things, and the stats be told wrong rather than refused.
    from bot import paths
    from bot.seed import load_sql_script
    from bot.tools.embedded import PLAYERS_SCHEMA_VERSION, SqliteStats, has_players_table

    path = tmp_path / "players.db"
    load_sql_script(path, paths.SQL / "sqlite" / "schema.sql", paths.SQL / "sqlite" / "seed.sql")
    assert user_version(path) == PLAYERS_SCHEMA_VERSION
    assert has_players_table(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {PLAYERS_SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    line = (
        f"{path} was written by a newer voxdesk (schema version {PLAYERS_SCHEMA_VERSION + 1}, this one"
        f" knows up to {PLAYERS_SCHEMA_VERSION}): upgrade voxdesk, or restore a backup this version made"
    )
    with pytest.raises(NewerSchema, match=re.escape(line)):
        has_players_table(path)
    with pytest.raises(NewerSchema, match=re.escape(line)):
        await SqliteStats.open(path)
    with pytest.raises(NewerSchema, match=re.escape(line)):
        load_sql_script(path, paths.SQL / "sqlite" / "schema.sql")
    assert path.read_bytes() == before


async def test_a_grievance_stores_id_once_made_is_read_without_waiting_for_a_writer(tmp_path: Path) -> None:
    # Ticket news asks for it at each answer that told a ticket: a write each time would queue
    # behind another process's transaction (here: refused at once, with no busy wait).
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        made = await store.store_id()
        await store._conn.execute("PRAGMA busy_timeout = 0")
        with contextlib.closing(sqlite3.connect(tmp_path / "grievances.db", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            assert await store.store_id() == made
            other.execute("ROLLBACK")
    finally:
        await store.aclose()


# ---- a database whose commits are only in its write-ahead log -----------------------------------


async def _crashed_while_made(storage: Path) -> Path:
    """grievances.db as a power cut while it was being made leaves it: the log, synced at each
    commit, holds one filed grievance; the file itself, never synced, holds no byte."""
    from bot.tools.grievance_store import LocalGrievanceStore

    made = storage.parent / "made-elsewhere"
    made.mkdir()
    store = await LocalGrievanceStore.open(made / "grievances.db")
    try:
        await store.register("111111111111111111", "billing", "charged twice for the season pass")
        target = storage / "grievances.db"
        target.write_bytes(b"")
        (storage / "grievances.db-wal").write_bytes((made / "grievances.db-wal").read_bytes())
    finally:
        await store.aclose()
    return target


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


async def test_check_reads_a_database_from_its_log_and_leaves_the_log_there(settings) -> None:
    # SQLite takes an empty file for a new database and deletes the log beside it on opening,
    # even read-only: `check` counted no grievance, said the file was new, and took the only
    # copy of the grievances with it.
    from bot.health import check_all

    path = await _crashed_while_made(settings.storage_dir)
    before = _listing(settings.storage_dir)
    lines = {r.service: r for r in await check_all(settings)}
    assert lines["grievances"].detail == "local grievance store: 1 grievances", lines["grievances"]
    assert lines["storage"].ok, lines["storage"]
    assert _listing(settings.storage_dir) == before
    assert path.with_name("grievances.db-wal").stat().st_size > 0


async def test_the_bot_restores_a_database_from_its_log_and_keeps_its_grievances(settings, caplog) -> None:
    from bot.tools.grievance_store import LocalGrievanceStore

    path = await _crashed_while_made(settings.storage_dir)
    store = await LocalGrievanceStore.open(path)
    try:
        (kept,) = await store.status("111111111111111111")
        assert kept.description == "charged twice for the season pass"
    finally:
        await store.aclose()
    assert f"{path} was empty beside its write-ahead log of " in caplog.text
    assert "(a crash while it was made): restored from that log" in caplog.text


async def test_a_log_that_cannot_restore_its_database_is_named_and_left_alone(settings) -> None:
    from bot.health import check_storage
    from bot.tools.grievance_store import LocalGrievanceStore

    path = settings.storage_dir / "grievances.db"
    path.write_bytes(b"")
    wal = path.with_name("grievances.db-wal")
    wal.write_bytes(b"not a log" * 1000)
    said = f"{path} is empty and {wal} holds 9000 bytes SQLite cannot read back into it: keep both"
    with pytest.raises(sqlite3.DatabaseError, match=re.escape(said)):
        check_storage(settings)
    with pytest.raises(sqlite3.DatabaseError, match=re.escape(said)):
        await LocalGrievanceStore.open(path)
    assert path.stat().st_size == 0 and wal.read_bytes() == b"not a log" * 1000


async def test_a_newer_voxdesks_database_only_in_its_log_is_still_refused(tmp_path: Path) -> None:
    from bot.db import written_by_newer

    made = tmp_path / "made"
    made.mkdir()
    conn = sqlite3.connect(made / "grievances.db", isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE grievances (x)")
    conn.execute("PRAGMA user_version = 999")
    path = tmp_path / "grievances.db"
    path.write_bytes(b"")
    path.with_name("grievances.db-wal").write_bytes((made / "grievances.db-wal").read_bytes())
    conn.close()
    with pytest.raises(NewerSchema, match="written by a newer voxdesk"):
        written_by_newer(path, 5)


async def test_init_restores_players_only_in_their_log_rather_than_seeding_the_demo(settings) -> None:
    # An empty players.db is the new one `init` seeds with the demo players: one whose players
    # were only in its log lost them to the demo.
    from bot.seed import initialise
    from bot.tools.embedded import has_players_table

    players = settings.storage_dir / "players.db"
    with contextlib.closing(sqlite3.connect(players)) as conn, conn:
        conn.execute("DELETE FROM players WHERE player_id NOT IN (SELECT MIN(player_id) FROM players)")
    made = settings.storage_dir.parent / "made"
    made.mkdir()
    crashed = sqlite3.connect(made / "players.db", isolation_level=None)
    crashed.execute("PRAGMA wal_autocheckpoint = 0")
    crashed.execute("PRAGMA journal_mode = WAL")
    with contextlib.closing(sqlite3.connect(players)) as studio:
        studio.backup(crashed)
    players.write_bytes(b"")
    players.with_name("players.db-wal").write_bytes((made / "players.db-wal").read_bytes())
    crashed.close()
    assert has_players_table(players)
    await initialise(settings, speech=False)
    with contextlib.closing(sqlite3.connect(players)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM players").fetchone() == (1,)


async def test_a_log_that_holds_no_commit_leaves_a_new_database_as_before(settings) -> None:
    # A power cut before the first commit reached the disk leaves the log's header alone (or
    # frames no commit closes): nothing was committed, SQLite reads a new database, as it did
    # before the restore; the bot starts on it rather than refusing both files.
    from bot.health import check_storage
    from bot.tools.grievance_store import LocalGrievanceStore

    path = await _crashed_while_made(settings.storage_dir)
    wal = path.with_name("grievances.db-wal")
    logged = wal.read_bytes()
    page_size = int.from_bytes(logged[8:12], "big")
    uncommitted = bytearray(logged[: 32 + 24 + page_size])
    uncommitted[32 + 4 : 32 + 8] = bytes(4)  # its frame closes no commit
    for kept in (logged[:32], bytes(uncommitted)):
        wal.write_bytes(kept)
        check_storage(settings)
        assert path.stat().st_size == 0 and wal.read_bytes() == kept  # check read nothing there
        store = await LocalGrievanceStore.open(path)
        try:
            assert await store.status("111111111111111111") == []
        finally:
            await store.aclose()
        path.write_bytes(b"")
    # A log a checkpoint restarted: the file held the commits before it, and is empty now (lost,
    # not new); the log alone cannot restore it, and both are left for a human.
    restarted = bytearray(logged[:32])
    restarted[12:16] = (1).to_bytes(4, "big")
    wal.write_bytes(bytes(restarted))
    with pytest.raises(sqlite3.DatabaseError, match="SQLite cannot read back into it"):
        check_storage(settings)
    with pytest.raises(sqlite3.DatabaseError, match="SQLite cannot read back into it"):
        await LocalGrievanceStore.open(path)
    assert path.stat().st_size == 0 and wal.read_bytes() == restarted


def _lock_held(path: Any, flags: int) -> bool:
    """Whether another holder has `path`'s flock, as a second process opening it with `flags`
    finds: a lock taken here is let go at once."""
    import fcntl

    fd = os.open(path, flags)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def test_two_processes_restoring_one_database_take_turns(settings, monkeypatch) -> None:
    # `run` and `web` start together after the power cut: one restores the first page, opens the
    # database and checkpoints it; the other, past its "still empty?" before that, wrote the log's
    # first page over the newer one the checkpoint put there. The whole restore holds the file's
    # lock, and another restorer waits for it, then finds the file restored.

    from bot import db

    path = await _crashed_while_made(settings.storage_dir)
    other_restorer = []
    restored_copy = db._restored_copy

    def copying(file: Path, into: Path, *found: bool):
        other_restorer.append("waits" if _lock_held(file, os.O_RDONLY) else "went ahead")
        return restored_copy(file, into, *found)

    monkeypatch.setattr(db, "_restored_copy", copying)
    assert db.restore_from_log(path)
    assert other_restorer == ["waits"]
    assert not db.restore_from_log(path)  # the next finds it restored


def _log_of_commits(folder: Path, rows: list[str]) -> tuple[bytes, list[int]]:
    """A first-round log holding one commit per row of a `notes` table (each row its own), as a
    database whose file was never written leaves it; and where each commit's last frame ends."""
    folder.mkdir()
    conn = sqlite3.connect(folder / "made.db", isolation_level=None)
    try:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE notes (said)")
        for row in rows:
            conn.execute("INSERT INTO notes VALUES (?)", (row,))
        logged = (folder / "made.db-wal").read_bytes()
    finally:
        conn.close()
    frame = 24 + int.from_bytes(logged[8:12], "big")
    ends = [
        32 + (i + 1) * frame
        for i in range((len(logged) - 32) // frame)
        if logged[32 + i * frame + 4 : 32 + i * frame + 8] != bytes(4)
    ]
    return logged, ends


def _notes(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [said for (said,) in conn.execute("SELECT said FROM notes ORDER BY rowid")]


async def test_a_torn_last_commit_keeps_every_commit_before_it_as_sqlite_does(tmp_path: Path) -> None:
    # A power cut while the last commit's frames were written leaves its tail as the disk had it:
    # SQLite's checksums end the log there and keep every commit before it.
    from bot import db

    logged, ends = _log_of_commits(tmp_path / "made", ["first", "second", "third"])
    torn = bytearray(logged)
    torn[ends[-1] - 512 : ends[-1]] = b"\xa5" * 512  # what the disk held there
    path = tmp_path / "notes.db"
    path.write_bytes(b"")
    path.with_name("notes.db-wal").write_bytes(bytes(torn))
    assert db.restore_from_log(path)
    assert _notes(path) == ["first", "second"]


async def test_a_first_round_log_whose_only_commit_is_torn_is_a_new_database(tmp_path: Path) -> None:
    # Its checksum does not match: SQLite keeps no commit of it and reads a new database. Taken for
    # a commit, both files were refused and the bot would not start until a human moved them.
    from bot import db

    logged, ends = _log_of_commits(tmp_path / "made", [])
    (table,) = ends
    torn = bytearray(logged[:table])
    torn[table - 512 : table] = b"\xa5" * 512
    path = tmp_path / "notes.db"
    path.write_bytes(b"")
    wal = path.with_name("notes.db-wal")
    wal.write_bytes(bytes(torn))
    assert not db.only_in_log(path)
    assert not db.restore_from_log(path)
    assert path.stat().st_size == 0 and wal.read_bytes() == torn
    # The same log, untorn, is restored.
    wal.write_bytes(logged[:table])
    assert db.restore_from_log(path)
    assert _notes(path) == []


async def test_a_log_in_the_other_byte_order_is_checked_in_that_order(tmp_path: Path) -> None:
    # The header's magic says which order the writer's checksums are in: a log written on a
    # big-endian machine is as whole as one written here.
    from bot import db

    logged, _ = _log_of_commits(tmp_path / "made", ["kept"])
    assert int.from_bytes(logged[:4], "big") == 0x377F0682  # this machine: little-endian sums
    header = bytearray(logged[:32])
    header[:4] = (0x377F0683).to_bytes(4, "big")
    sums = db._checksum(bytes(header[:24]), True, 0, 0)
    header[24:32] = struct.pack(">II", *sums)
    frames, size = bytearray(), 24 + int.from_bytes(logged[8:12], "big")
    for at in range(32, len(logged), size):
        frame = bytearray(logged[at : at + size])
        sums = db._checksum(bytes(frame[:8]), True, *sums)
        sums = db._checksum(bytes(frame[24:]), True, *sums)
        frame[16:24] = struct.pack(">II", *sums)
        frames += frame
    path = tmp_path / "notes.db"
    path.write_bytes(b"")
    path.with_name("notes.db-wal").write_bytes(bytes(header + frames))
    assert db.restore_from_log(path)
    assert _notes(path) == ["kept"]


async def test_a_restore_reads_the_log_a_frame_at_a_time(tmp_path: Path) -> None:
    # A log grows with every commit a long reader kept from being checkpointed: read whole, a
    # restore holds it all in memory, twice over.
    import tracemalloc

    from bot import db

    logged, _ = _log_of_commits(tmp_path / "made", ["x" * 3000] * 3000)
    assert len(logged) > 12_000_000
    path = tmp_path / "notes.db"
    path.write_bytes(b"")
    path.with_name("notes.db-wal").write_bytes(logged)
    del logged
    tracemalloc.start()
    try:
        assert db.restore_from_log(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak
    assert len(_notes(path)) == 3000


async def test_a_missing_database_beside_its_log_is_restored_not_made_anew(settings, caplog) -> None:
    # SQLite makes a missing file anew, empty, and deletes the log beside it as it does beside an
    # empty one: every grievance in the log was gone, and `check` called the store new.
    from bot.health import check_all
    from bot.tools.grievance_store import LocalGrievanceStore

    path = await _crashed_while_made(settings.storage_dir)
    path.unlink()
    before = _listing(settings.storage_dir)
    lines = {r.service: r for r in await check_all(settings)}
    assert lines["grievances"].detail == "local grievance store: 1 grievances", lines["grievances"]
    assert _listing(settings.storage_dir) == before
    store = await LocalGrievanceStore.open(path)
    try:
        (kept,) = await store.status("111111111111111111")
        assert kept.description == "charged twice for the season pass"
    finally:
        await store.aclose()
    assert f"{path} was missing beside its write-ahead log of " in caplog.text
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_missing_database_whose_log_cannot_restore_it_is_named_and_not_made(settings) -> None:
    from bot.tools.grievance_store import LocalGrievanceStore

    path = settings.storage_dir / "grievances.db"
    path.unlink(missing_ok=True)
    wal = path.with_name("grievances.db-wal")
    wal.write_bytes(b"not a log" * 1000)
    said = f"{path} is missing and {wal} holds 9000 bytes SQLite cannot read back into it: keep both"
    with pytest.raises(sqlite3.DatabaseError, match=re.escape(said)):
        await LocalGrievanceStore.open(path)
    assert not path.exists() and wal.read_bytes() == b"not a log" * 1000


async def test_backup_export_and_check_count_a_database_only_in_its_log(settings, tmp_path: Path) -> None:
    # Each asked whether the file exists: the backup left the grievances out, an export said the
    # player had none, and `check` counted one database fewer.
    from bot.app import storage_paths
    from bot.backup import backup
    from bot.health import check_storage
    from bot.player_data import export

    path = await _crashed_while_made(settings.storage_dir)
    counted = check_storage(settings)
    logged = path.with_name("grievances.db-wal").read_bytes()
    path.unlink()
    assert check_storage(settings) == counted
    folder, lines = backup(settings, tmp_path / "backups")
    assert "grievances.db: copied" in lines
    with contextlib.closing(sqlite3.connect(folder / "grievances.db")) as conn:
        assert conn.execute("SELECT description FROM grievances").fetchall() == [
            ("charged twice for the season pass",)
        ]
    for made in settings.storage_dir.glob("grievances.db*"):  # restored and checkpointed: crash again
        made.unlink()
    path.with_name("grievances.db-wal").write_bytes(logged)
    held = export(storage_paths(settings), "111111111111111111")
    assert [g["description"] for g in held["grievances"]["grievances"]] == [
        "charged twice for the season pass"
    ]


class Writes:
    """How one store writes a row of player `n`, whether it sees that row, and the SQL another
    process counts those rows with."""

    def __init__(
        self,
        write: Callable[[Any, int], Awaitable[Any]],
        sees: Callable[[Any, int], Awaitable[bool]],
        count: str,
        refused: str,
    ) -> None:
        self.write, self.sees, self.count = write, sees, count
        self.refused = refused  # the trigger event a full disk is played by


def every_write() -> dict[str, Writes]:
    """A write of each store that writes (the grievance store's in test_tools.py), by its file."""
    from bot.turns import PastTurn

    async def append(store: Any, n: int) -> None:
        await store.append(f"player{n}", PastTurn("where is my refund", "on its way"), "dm", f"note{n}")

    async def in_history(store: Any, n: int) -> bool:
        return len(await store.history(f"player{n}", "dm")) == 1

    async def voice_kept(store: Any, n: int) -> bool:
        return (await store.get(f"player{n}")).voice == "alloy"

    async def claimed(store: Any, n: int) -> bool:
        return await store.seen([n]) == {n}

    async def used(store: Any, n: int) -> bool:
        return (await store.today_for(f"player{n}")).get("turns") == 1

    async def told(store: Any, n: int) -> bool:
        return len(await store.told(f"player{n}")) == 1

    async def ended(store: Any, n: int) -> bool:
        return await store.ended(f"staff{n}")

    return {
        "conversations.db": Writes(append, in_history, "SELECT COUNT(*) FROM turns", "INSERT ON turns"),
        "preferences.db": Writes(
            lambda s, n: s.set_voice(f"player{n}", "alloy"),
            voice_kept,
            "SELECT COUNT(*) FROM preferences",
            "INSERT ON preferences",
        ),
        "notes.db": Writes(
            lambda s, n: s.claim(n, 7, f"player{n}"), claimed, "SELECT COUNT(*) FROM notes", "INSERT ON notes"
        ),
        "news.db": Writes(
            lambda s, n: s.add(f"player{n}", "grievances", f"GRV-{n}", "filed", "open", "Filed."),
            told,
            "SELECT COUNT(*) FROM news",
            "INSERT ON news",
        ),
        # The turn's hour is written after its player's day: refused, the day must not stay.
        "usage.db": Writes(
            lambda s, n: s.record(f"player{n}", "offline", None, 2.0),
            used,
            "SELECT COUNT(*) FROM usage",
            "INSERT ON turns_by_hour",
        ),
        "web.db": Writes(
            lambda s, n: s.end(f"staff{n}", 4_000_000_000.0),
            ended,
            "SELECT COUNT(*) FROM ended_logins",
            "INSERT ON ended_logins",
        ),
    }


REFUSALS = [
    pytest.param(name, refusal, id=f"{name}-{refusal}")
    for name in every_write()
    for refusal in ("busy", "full")
]


@pytest.mark.parametrize(("name", "refusal"), REFUSALS)
async def test_a_write_the_database_refuses_leaves_the_store_free_and_current(
    tmp_path: Path, name: str, refusal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left open, the transaction of a refused write would hold the database's write lock against
    # every other process (a full disk), or hold this store to the database as it was (busy):
    # another process's writes unseen, and each later write here refused, until a restart.
    from bot import db

    path = tmp_path / name
    writes = every_write()[name]
    store = await every_store()[name](path)
    another_bot = await every_store()[name](path)
    # Not the production 30 s: each try's busy wait, and how long a BEGIN IMMEDIATE SQLite answers
    # "locked" at once is tried again (while_locked).
    await store._conn.execute("PRAGMA busy_timeout=100")
    monkeypatch.setattr(db, "BUSY_SECONDS", 0.5)
    other = sqlite3.connect(path, timeout=1, isolation_level=None)
    try:
        if refusal == "busy":
            other.execute("BEGIN EXCLUSIVE")
        else:
            full = "SELECT RAISE(FAIL, 'database or disk is full')"
            other.execute(f"CREATE TRIGGER refuse BEFORE {writes.refused} BEGIN {full}; END")
        with pytest.raises(sqlite3.DatabaseError, match="locked" if refusal == "busy" else "full"):
            await writes.write(store, 0)
        other.execute("ROLLBACK" if refusal == "busy" else "DROP TRIGGER refuse")
        assert not await writes.sees(store, 1)  # the store's next read (a budget, a history)...
        await writes.write(another_bot, 1)  # ... then a write of another bot on this storage
        assert await writes.sees(store, 1)
        await writes.write(store, 2)
        assert await writes.sees(another_bot, 2)
        assert other.execute(writes.count).fetchone()[0] == 2  # nothing of the refused write
    finally:
        other.close()
        await another_bot.aclose()
        await store.aclose()


async def test_a_refused_write_is_rolled_back_whole_while_another_write_goes_through(tmp_path: Path) -> None:
    # A note answered again replaces its first turn: deleted, then the new one inserted. Refused
    # at the insert while another player's turn is written on the same connection, the delete
    # must go with it, not be committed by the other write: the player would lose the turn.
    from bot.conversations import ConversationStore
    from bot.turns import PastTurn

    path = tmp_path / "conversations.db"
    store = await ConversationStore.open(path, 10, 30)
    other = sqlite3.connect(path, timeout=1, isolation_level=None)
    try:
        await store.append("nova", PastTurn("where is my refund", "on its way"), "dm", "note1")
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON turns WHEN NEW.user_id = 'nova'"
            " BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
        )
        again, beside = await asyncio.gather(
            store.append("nova", PastTurn("where is my refund", "sent today"), "dm", "note1"),
            store.append("blaze", PastTurn("how many points", "1200"), "dm", "note2"),
            return_exceptions=True,
        )
        assert isinstance(again, sqlite3.DatabaseError) and beside is True
        said = other.execute("SELECT user_id, reply_text FROM turns ORDER BY id").fetchall()
        assert said == [("nova", "on its way"), ("blaze", "1200")]
    finally:
        other.close()
        await store.aclose()


async def test_the_stats_backend_opens_a_players_database_only_in_its_log(settings) -> None:
    # `check` counts it and `backup` copies it (db.kept), but the stats backend asked whether the
    # file exists: `run` stopped with "does not exist: run init" beside the log holding it.
    from bot import paths
    from bot.app import build_stats_backend, storage_paths

    players = storage_paths(settings).players
    made = players.parent.parent / "made-elsewhere"
    made.mkdir()
    sql = paths.SQL / "sqlite"
    with contextlib.closing(sqlite3.connect(made / "players.db", isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executescript((sql / "schema.sql").read_text() + (sql / "seed.sql").read_text())
        (found,) = conn.execute("SELECT COUNT(*) FROM players").fetchone()
        players.parent.mkdir(parents=True, exist_ok=True)
        players.unlink(missing_ok=True)
        players.with_name("players.db-wal").write_bytes((made / "players.db-wal").read_bytes())
    assert found and not players.exists()
    stats = await build_stats_backend(settings)
    try:
        with contextlib.closing(sqlite3.connect(players)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM players").fetchone() == (found,)
    finally:
        await stats.aclose()


def test_a_partial_file_its_writer_holds_is_kept_whatever_its_process_id_says(tmp_path: Path) -> None:
    # A writer in another container on the same volume (its own pid namespace, pid 1 as likely
    # as not) names a process this one cannot see: removed mid-write, its rename would fail and
    # its start with it. The lock it holds says it is at work; the killed one's holds none.
    import fcntl
    import subprocess

    from bot.db import remove_partials

    gone = subprocess.Popen(["true"])
    gone.wait()
    writing = tmp_path / f".model.bin.{gone.pid}.0a1b2c3d.partial"
    killed = tmp_path / f".model.bin.{gone.pid}.9e8f7a6b.partial"
    for partial in (writing, killed):
        partial.write_bytes(b"half a model")
    fd = os.open(writing, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        remove_partials(tmp_path, ["model.bin"])
    finally:
        os.close(fd)
    assert writing.exists() and not killed.exists()


HOLDING_A_PARTIAL = """
import sys
from pathlib import Path
from bot.db import new_partial
partial, fd = new_partial(Path(sys.argv[1]))
print(partial, flush=True)
sys.stdin.read()
"""


def test_a_partial_file_new_partial_made_is_held_by_its_writer(tmp_path: Path, monkeypatch) -> None:
    # Its writer in another container: its process id names none this one can see, and only the
    # lock new_partial takes keeps the sweep from removing the file mid-write.
    import subprocess
    import sys

    from bot import db

    writer = subprocess.Popen(
        [sys.executable, "-c", HOLDING_A_PARTIAL, str(tmp_path / "model.bin")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        partial = Path(writer.stdout.readline().strip())
        monkeypatch.setattr(db, "running", lambda pid: False)  # another pid namespace's
        db.remove_partials(tmp_path, ["model.bin"])
        assert partial.exists()
    finally:
        writer.communicate("", timeout=60)


def test_a_partial_file_held_on_nfs_is_kept(tmp_path: Path, monkeypatch) -> None:
    # NFS emulates flock with byte-range locks on the server, where an exclusive one needs a
    # descriptor open for writing (flock(2)): a read-only probe gets EBADF, which taken for a file
    # system with no locks would have the other container's Whisper model.bin removed mid-join.
    import errno
    import fcntl
    import subprocess

    from bot.db import hold, remove_partials

    flock = fcntl.flock

    def nfs_flock(fd: int, operation: int) -> None:
        if operation & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    gone = subprocess.Popen(["true"])
    gone.wait()
    writing = tmp_path / f".model.bin.{gone.pid}.0a1b2c3d.partial"
    killed = tmp_path / f".model.bin.{gone.pid}.9e8f7a6b.partial"
    killed.write_bytes(b"half a model")
    fd = os.open(writing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as every writer opens it
    try:
        hold(fd)
        os.write(fd, b"half a model")
        remove_partials(tmp_path, ["model.bin"])
    finally:
        os.close(fd)
    assert writing.exists(), "a partial its writer holds was removed"
    assert not killed.exists()


@pytest.mark.parametrize("writer", ["domain model", "encoder", "whisper", "export", "safety key"])
def test_every_writer_holds_its_partial_file_until_it_takes_its_name(
    tmp_path: Path, monkeypatch, writer: str
) -> None:
    # Another container's start on the same volume, sweeping just before this one's rename,
    # cannot tell this process's id from a dead one's: the writer's lock alone keeps its file.
    # Here the sweep runs in this very process, whose id remove_partials never trusts.
    from bot.db import remove_partials

    rename, link = os.replace, os.link

    def swept_first(real: Callable[..., None]) -> Callable[..., None]:
        def step(src: Any, dst: Any) -> None:
            remove_partials(Path(dst).parent, [Path(dst).name])
            real(src, dst)

        return step

    monkeypatch.setattr(os, "replace", swept_first(rename))
    monkeypatch.setattr(os, "link", swept_first(link))
    made = _write_through(writer, tmp_path)
    assert made.stat().st_size
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_killed_writers_partial_is_removed_whatever_marks_its_name_holds(tmp_path: Path) -> None:
    # `player export --out 'nova [2026].json'`: put into a glob pattern as it is, the name's
    # brackets would read as a set of characters, and a killed export's copy of a player's data stay.
    import subprocess

    from bot.db import remove_partials

    gone = subprocess.Popen(["true"])
    gone.wait()
    name = "nova [2026]*?.json"
    killed = tmp_path / f".{name}.{gone.pid}.0a1b2c3d.partial"
    other = tmp_path / f".nova 2.json.{gone.pid}.9e8f7a6b.partial"  # another name's: not asked for
    for partial in (killed, other):
        partial.write_text("half a player's data", encoding="utf-8")
    remove_partials(tmp_path, [name])
    assert not killed.exists()
    assert other.exists()


def test_a_killed_writers_partial_is_removed_where_the_file_system_takes_no_locks(
    tmp_path: Path, monkeypatch
) -> None:
    # No lock to ask (ENOLCK): its process id, gone, is all there is to go by, and the partial
    # would be left for good, as large as the file it was writing.
    import errno
    import fcntl
    import subprocess

    from bot.db import remove_partials

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = tmp_path / f".model.bin.{gone.pid}.0a1b2c3d.partial"
    killed.write_bytes(b"half a model")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    remove_partials(tmp_path, ["model.bin"])
    assert not killed.exists()


def test_a_killed_writers_partial_this_user_may_only_read_is_still_removed(
    tmp_path: Path, monkeypatch
) -> None:
    # `init` run as root and killed leaves a 0644 partial of root's in a folder the bot's user
    # writes: the lock's probe may not open it for writing, and a refusal there must not stop the
    # sweep, and with it Whisper's start and the encoders' cache, where its removal goes through.
    import errno
    import subprocess

    from bot.db import remove_partials

    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = tmp_path / f".model.bin.{gone.pid}.0a1b2c3d.partial"
    killed.write_bytes(b"half a model")
    opened = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == killed and flags & os.O_ACCMODE != os.O_RDONLY:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return opened(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    remove_partials(tmp_path, ["model.bin"])
    assert not killed.exists()


def test_a_partial_file_held_on_smb_is_kept(tmp_path: Path, monkeypatch) -> None:
    # On SMB a lock another holds is refused with EACCES (as `voxdesk check`'s test of locks
    # knows): taken for a file system with no locks, it would have the other container's partial
    # removed mid-write.
    import subprocess

    from bot.db import hold, remove_partials

    from .conftest import smb_locks

    smb_locks(monkeypatch)
    gone = subprocess.Popen(["true"])
    gone.wait()
    writing = tmp_path / f".model.bin.{gone.pid}.0a1b2c3d.partial"
    killed = tmp_path / f".model.bin.{gone.pid}.9e8f7a6b.partial"
    killed.write_bytes(b"half a model")
    fd = os.open(writing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        hold(fd)
        remove_partials(tmp_path, ["model.bin"])
    finally:
        os.close(fd)
    assert writing.exists(), "a partial its writer holds was removed"
    assert not killed.exists()


# Each writer of a partial file, writing `made` in `folder`.
def _write_through(writer: str, folder: Path) -> Path:
    import hashlib

    if writer == "domain model":
        from bot.speech.recognizer import _replace

        _replace(folder / "domain.arpa", "\\data\\\n")
        return folder / "domain.arpa"
    if writer == "encoder":
        from bot.speech.encoder_files import _keep_in

        _keep_in({"model.safetensors": b"weights"}, folder)
        return folder / "model.safetensors"
    if writer == "whisper":
        from bot.speech.whisper_recognizer import _join

        piece = folder / "model.bin.part1"
        piece.write_bytes(b"weights")
        _join([piece], folder / "model.bin", hashlib.sha256(b"weights").hexdigest())
        piece.unlink()
        return folder / "model.bin"
    if writer == "export":
        from bot.player_data import write_private

        write_private(folder / "nova.json", "{}\n")
        return folder / "nova.json"
    from bot.engines.openai import _made

    _made(folder, folder / "openai-safety.key")
    return folder / "openai-safety.key"


@pytest.mark.parametrize("writer", ["domain model", "encoder", "whisper", "export", "safety key"])
def test_a_sweep_between_a_partials_making_and_its_lock_does_not_fail_its_writer(
    tmp_path: Path, monkeypatch, writer: str
) -> None:
    # Two bots starting together in two containers on one volume: one's sweep may find the
    # other's partial made but not locked yet (its pid unknown there), and remove it. The writer
    # then wrote a whole model into a file no name led to, and failed at its rename.
    import fcntl

    from bot.db import remove_partials

    flock, swept = fcntl.flock, []

    def swept_before_the_lock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not swept:
            partial = Path(os.readlink(f"/proc/self/fd/{fd}"))
            swept.append(partial)
            remove_partials(
                partial.parent, [partial.name[1:].rsplit(".", 3)[0]]
            )  # .<name>.<pid>.<hex>.partial
        flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", swept_before_the_lock)
    made = _write_through(writer, tmp_path)
    assert swept and not swept[0].exists()
    assert made.stat().st_size
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_sweep_removes_a_partial_while_it_holds_its_lock(tmp_path: Path, monkeypatch) -> None:
    # Let go before the unlink, a writer locking in between would take its file for its own, still
    # named, and go on writing into one the sweep then removes.
    import subprocess

    from bot.db import remove_partials

    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = tmp_path / f".model.bin.{gone.pid}.0a1b2c3d.partial"
    killed.write_bytes(b"half a model")
    unlink, tried = os.unlink, []

    def writer_locking_first(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path) == killed:
            tried.append("held" if _lock_held(path, os.O_WRONLY) else "taken")
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", writer_locking_first)
    remove_partials(tmp_path, ["model.bin"])
    assert tried == ["held"], "the sweep let go of its lock before removing the file"
    assert not killed.exists()


def test_a_file_whose_fsync_fails_as_a_folders_may_still_fails_its_write(tmp_path: Path, monkeypatch) -> None:
    # EINVAL is tolerated from a folder alone (a file system that syncs none): from a file's own
    # fsync it says the data is not on disk, and the write that counted on it must fail.
    import errno

    from bot.db import fsync_path

    def refused(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    made = tmp_path / "grievances.spool.jsonl"
    made.write_text("{}\n")
    monkeypatch.setattr(os, "fsync", refused)
    fsync_path(tmp_path)
    with pytest.raises(OSError):
        fsync_path(made)


def test_a_partial_of_this_process_id_left_unheld_is_a_killed_ones_and_removed(tmp_path: Path) -> None:
    # A container's process is pid 1 at each start: a partial a killed start left carries the
    # id this one has now, and kept as "running" it would stay for good, one more each restart.
    from bot.db import remove_partials

    left = tmp_path / f".model.bin.{os.getpid()}.0a1b2c3d.partial"
    left.write_bytes(b"half a model")
    remove_partials(tmp_path, ["model.bin"])
    assert not left.exists()


def test_a_partial_of_another_users_running_process_is_kept_where_locks_tell_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    # kill(pid, 0) refused (EPERM) means a live process of another user, `init` run as root:
    # its partial is being written, locked or not (a file system without locks holds none).
    from bot.db import remove_partials

    writing = tmp_path / ".model.bin.4242.0a1b2c3d.partial"
    writing.write_bytes(b"half a model")

    def not_yours(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_yours)
    remove_partials(tmp_path, ["model.bin"])
    assert writing.exists()
