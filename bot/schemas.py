"""The schema version this voxdesk knows for each database of the storage folder, in one table,
and the refusal of a folder a newer voxdesk wrote: `init`, the bot's start, `check`, `player` and
`refile` each read every file they touch before writing any."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING

from bot.db import UPGRADE, written_by_newer

if TYPE_CHECKING:
    from bot.app import StoragePaths


@functools.cache
def versions() -> dict[str, int]:
    """Each database by its name in StoragePaths, with the version its store stamps. The stores
    are imported at the first call, not with this module: the web front end's brings aiohttp."""
    from bot import conversations, note_ledger, preferences, ticket_news, usage
    from bot.tools import embedded, grievance_store
    from bot.web import security

    return {
        "players": embedded.PLAYERS_SCHEMA_VERSION,
        "manuals": embedded.FTS_SCHEMA_VERSION,
        "grievances": grievance_store.SCHEMA_VERSION,
        "conversations": conversations.SCHEMA_VERSION,
        "preferences": preferences.SCHEMA_VERSION,
        "notes": note_ledger.SCHEMA_VERSION,
        "usage": usage.SCHEMA_VERSION,
        "news": ticket_news.SCHEMA_VERSION,
        "web": security.WEB_SCHEMA_VERSION,
        "recent_claims": grievance_store.RECENT_SCHEMA_VERSION,
    }


# Databases a store runs on without: grievances-recent.db's claims are then kept in memory
# (grievance_store._attach_recent_or_memory), and `check` warns of it.
RUN_WITHOUT = ("recent_claims",)


def remedy(name: str) -> str:
    """What the line refusing the database `name` of a newer voxdesk tells to do."""
    from bot.tools.grievance_store import RECENT_REMEDY

    return RECENT_REMEDY if name == "recent_claims" else UPGRADE


def refuse_newer_databases(storage: StoragePaths, names: Collection[str] | None = None) -> None:
    """Raise NewerSchema for the first database of the storage folder (or of those `names`; by
    default all but RUN_WITHOUT) a newer voxdesk wrote, each read without writing to it."""
    for name, version in versions().items():
        if name in RUN_WITHOUT if names is None else name not in names:
            continue
        written_by_newer(getattr(storage, name), version, remedy(name))
