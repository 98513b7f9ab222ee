"""`python -m bot init`: create and seed the embedded databases from the files in data/."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from bot.app import storage_paths
from bot.config import Settings
from bot.tools.embedded import FtsManuals
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.manual_chunks import chunk_manuals

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def load_sql_script(db: Path, *scripts: Path) -> None:
    """Run schema/seed scripts in one transaction (the seed replaces the demo rows)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        for script in scripts:
            conn.executescript(script.read_text(encoding="utf-8"))


async def initialise(settings: Settings, data_dir: Path = DATA_DIR, speech: bool = True) -> list[str]:
    """Idempotent: re-running refreshes demo data and indexes, never deletes a filed grievance."""
    paths = storage_paths(settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    done = []

    sql = data_dir / "sql" / "sqlite"
    load_sql_script(paths.players, sql / "schema.sql", sql / "seed.sql")
    with sqlite3.connect(paths.players) as conn:
        players = conn.execute("SELECT COUNT(*) FROM players").fetchone()[0]
    done.append(f"players: {players} demo players in {paths.players}")

    chunks = chunk_manuals(data_dir / "manuals")
    manuals = await FtsManuals.open(paths.manuals)
    try:
        await manuals.rebuild(chunks)
    finally:
        await manuals.aclose()
    done.append(f"manuals: {len(chunks)} passages from {data_dir / 'manuals'} in {paths.manuals}")

    store = await LocalGrievanceStore.open(paths.grievances)
    try:
        seeded = json.loads((data_dir / "grievances.json").read_text(encoding="utf-8"))
        await store.seed(seeded)
    finally:
        await store.aclose()
    done.append(f"grievances: {len(seeded)} demo grievances in {paths.grievances}")

    if speech:
        from bot.engines.offline import build_speech_models

        done.append(await build_speech_models(settings))
    return done
