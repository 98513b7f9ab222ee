"""Shared fixtures: settings on a temporary storage dir, seeded once per session and copied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
NOVA = "111111111111111111"  # demo player 1
BLAZE = "222222222222222222"  # demo player 2
QUILL = "333333333333333333"
UNLINKED = "999000999000999000"  # a Discord user with no player profile


def make_settings(storage: Path, **env: str) -> Settings:
    environ = {"VOXDESK_STORAGE_DIR": str(storage), "VOXDESK_AGENT_FALLBACK": "apology", **env}
    return load_settings(REPO / "config.toml", environ=environ)


@pytest.fixture(scope="session")
def seeded_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded databases as `python -m bot init` leaves them, built once."""
    import asyncio

    from bot.seed import initialise

    storage = tmp_path_factory.mktemp("seeded")
    asyncio.run(initialise(make_settings(storage)))
    return storage


@pytest.fixture
def settings(tmp_path: Path, seeded_storage: Path) -> Settings:
    storage = tmp_path / "var"
    shutil.copytree(seeded_storage, storage)
    return make_settings(storage)


@pytest.fixture
def scripted_app_engine():
    from tests.scripted_engine import ScriptedEngine

    return ScriptedEngine()
