"""`python -m bot init`: create and seed the embedded databases from the data voxdesk ships
(`bot/data/`) and the manuals folder the settings name."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path

from bot import paths
from bot.app import storage_paths
from bot.config import ConfigError, Settings
from bot.db import private_dir, private_file, refuse_newer, restore_from_log
from bot.schemas import refuse_newer_databases
from bot.tools.embedded import PLAYERS_SCHEMA_VERSION, FtsManuals
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.manual_chunks import chunk_manuals

log = logging.getLogger(__name__)


def load_sql_script(db: Path, *scripts: Path, version: int = PLAYERS_SCHEMA_VERSION) -> None:
    """Run SQL scripts in one transaction, a reader never seeing half of them, and stamp the
    database schema `version` with them. A database at a newer version is refused (NewerSchema)
    before anything is written to it."""
    private_file(db)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        refuse_newer(conn, db, version)
        conn.executescript(
            "BEGIN;\n"
            + "\n".join(script.read_text(encoding="utf-8") for script in scripts)
            + f"\nPRAGMA user_version = {int(version)};\nCOMMIT;"
        )


def _players(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM players").fetchone()[0]


async def initialise(settings: Settings, speech: bool = True) -> list[str]:
    """Idempotent: the demo players and grievances go only into a new var/; a re-run
    keeps the players a studio linked or added, rebuilds the indexes and never deletes a filed
    grievance."""
    storage = storage_paths(settings)
    # Every database before any is written: one a newer voxdesk wrote, found half-way, would leave
    # the players' schema applied and the manuals rebuilt by a version that then refuses to run.
    refuse_newer_databases(storage)
    private_dir(storage.root)
    for database in storage.databases:  # an empty file whose commits are in its log is no new one
        restore_from_log(database)
    sql = paths.SQL / "sqlite"
    # A new var/ is one with no players database yet (or the empty file a failed first run left)
    # and no grievance but the demo's: an emptied players table is a studio's choice, not an
    # invitation to bring the demo back, and a bot that needed no `init` (its stats and manuals
    # elsewhere) may have filed grievances for months.
    first_run = not storage.players.exists() or storage.players.stat().st_size == 0

    # The demo tickets before the demo players, whose database says the demo went in: an init
    # cut short between the two (a kill, a manuals folder set wrong) seeds them at the next run
    # (seed() overwrites no row), rather than leave the demo players with none.
    store = await LocalGrievanceStore.open(storage.grievances)
    try:
        seeded = json.loads(paths.GRIEVANCES.read_text(encoding="utf-8"))
        first_run = first_run and await store.holds_none_but([r["key"] for r in seeded])
        if first_run:
            await store.seed(seeded)
            grievances = f"grievances: {len(seeded)} demo grievances in {storage.grievances}"
        else:
            grievances = f"grievances: kept in {storage.grievances} ({await store.check()})"
    finally:
        await store.aclose()

    done = []
    if first_run:
        load_sql_script(storage.players, sql / "schema.sql", sql / "seed.sql")
        done.append(f"players: {_players(storage.players)} demo players in {storage.players}")
    else:
        load_sql_script(storage.players, sql / "schema.sql")
        kept = _players(storage.players)
        done.append(f"players: {kept} kept in {storage.players} (demo players go only into a new one)")

    chunks = chunk_manuals(settings.manuals_dir)
    if not chunks:
        # Rebuilding from nothing would empty the index the bot answers manual questions from.
        raise ConfigError(f"storage.manuals_dir {settings.manuals_dir} holds no manuals: fix the setting")
    manuals = await FtsManuals.open(storage.manuals)
    try:
        await manuals.rebuild(chunks)
    finally:
        await manuals.aclose()
    done.append(f"manuals: {len(chunks)} passages from {settings.manuals_dir} in {storage.manuals}")
    done.append(grievances)

    if speech:
        from bot.engines.offline.engine import build_speech_models

        done.append(await build_speech_models(settings))
    return done
