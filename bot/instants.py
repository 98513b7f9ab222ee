"""Times read back from ISO 8601 text.

Every time voxdesk writes is UTC ("2026-12-05T06:00:00Z"), and a studio's database may write one
with its own offset or none; a time with no offset is taken as UTC, never as this machine's zone,
so that the answer does not depend on where the bot runs.
"""

from __future__ import annotations

import datetime as dt


def instant(text: str) -> dt.datetime:
    """ISO 8601 text ("Z", an offset, or none for UTC) as an aware time; ValueError otherwise."""
    at = dt.datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
