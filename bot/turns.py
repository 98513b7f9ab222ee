"""What a turn hears and leaves behind: the words heard, and earlier turns as history keeps them.

These sit below every layer of the offline engine because the intent router (bot/intent/) reads
both and must not import the engines above it; the engine protocol (bot/engines/base.py) speaks
in the same types.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

# Characters of history (words, tool calls and their results) one request carries at most, the
# turn's own tool results among them, about 12,000 tokens: eight turns that each read three
# passages of MAX_PASSAGE_CHARS (about 5,400 a turn) fit. One turn that carries a huge tool result
# or made-up arguments (a looping model) is not billed again with every later request, nor keeps
# an instruction planted in it before the model for the next eight notes.
MAX_HISTORY_CHARS = 48_000


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


def chars_of(past: PastTurn) -> int:
    """A turn's characters as MAX_HISTORY_CHARS counts them: its words, and its tool results as
    JSON with every letter as written (as \\u escapes, a manual in Cyrillic or kana would count six
    times its length)."""
    results = json.dumps(past.tool_results, ensure_ascii=False)
    return len(past.user_text or "") + len(past.reply_text) + len(results)
