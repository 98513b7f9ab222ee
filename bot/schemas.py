"""The schema version this voxdesk knows for each database of the storage folder, in one table,
and the refusal of a folder a newer voxdesk wrote: `init`, the bot's start, `check` and
`player` each read every file they touch before writing any."""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import TYPE_CHECKING

from bot.db import written_by_newer

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
        "web": security.LOGINS_SCHEMA_VERSION,
        "recent_claims": grievance_store.RECENT_SCHEMA_VERSION,
    }


def refuse_newer_databases(storage: StoragePaths, names: Collection[str] | None = None) -> None:
    """Raise NewerSchema for the first database of the storage folder (or of those `names`) a
    newer voxdesk wrote, each read without writing to it."""
    for name, version in versions().items():
        if names is None or name in names:
            written_by_newer(getattr(storage, name), version)
