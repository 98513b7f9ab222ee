"""`python -m bot init`: create and seed the embedded databases from the data voxdesk ships
(`bot/data/`) and the manuals folder the settings name."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from bot import paths
from bot.app import storage_paths
from bot.config import ConfigError, Settings
from bot.tools.embedded import FtsManuals
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.manual_chunks import chunk_manuals

log = logging.getLogger(__name__)


def load_sql_script(db: Path, *scripts: Path) -> None:
    """Run schema/seed scripts in one transaction (the seed replaces the demo rows)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        for script in scripts:
            conn.executescript(script.read_text(encoding="utf-8"))


async def initialise(settings: Settings, speech: bool = True) -> list[str]:
    """Idempotent: re-running refreshes demo data and indexes, never deletes a filed grievance."""
    storage = storage_paths(settings)
    storage.root.mkdir(parents=True, exist_ok=True)
    done = []

    sql = paths.SQL / "sqlite"
    load_sql_script(storage.players, sql / "schema.sql", sql / "seed.sql")
    with sqlite3.connect(storage.players) as conn:
        players = conn.execute("SELECT COUNT(*) FROM players").fetchone()[0]
    done.append(f"players: {players} demo players in {storage.players}")

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

    store = await LocalGrievanceStore.open(storage.grievances)
    try:
        seeded = json.loads(paths.GRIEVANCES.read_text(encoding="utf-8"))
        await store.seed(seeded)
    finally:
        await store.aclose()
    done.append(f"grievances: {len(seeded)} demo grievances in {storage.grievances}")

    if speech:
        from bot.engines.offline.engine import build_speech_models

        done.append(await build_speech_models(settings))
    return done
