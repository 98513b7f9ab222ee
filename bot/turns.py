"""What a turn hears and leaves behind: the words heard, and earlier turns as history keeps them.

These sit below every layer of the offline engine because the intent router (bot/intent/) reads
both and must not import the engines above it; the engine protocol (bot/engines/base.py) speaks
in the same types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class Transcript:
    """What an engine heard in a note."""

    text: str
    # False when the engine heard these words but not surely enough to act on them: the player is
    # asked to say it again, and the words are still kept in the conversation.
    act_on: bool = True


@dataclass
class PastTurn:
    """One earlier turn as history keeps it: text and audio ids, never raw audio."""

    user_text: str | None
    reply_text: str
    tool_results: list[JSON] = field(default_factory=list)  # ToolResult.as_dict() items
    audio_id: str | None = None  # an engine's id for its audio reply (OpenAI: message.audio.id)
    audio_expires_at: int | None = None  # unix seconds
    at: float = 0.0  # unix seconds
    engine: str = ""
