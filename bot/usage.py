"""Usage and cost per turn, per-user daily totals, and an optional per-user daily budget."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import aiosqlite

from bot.config import UsageSettings
from bot.db import open_sqlite
from bot.engines.base import Usage

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    user_id TEXT NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    text_in INTEGER NOT NULL DEFAULT 0,
    text_out INTEGER NOT NULL DEFAULT 0,
    audio_in INTEGER NOT NULL DEFAULT 0,
    audio_out INTEGER NOT NULL DEFAULT 0,
    audio_seconds REAL NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id)
);
"""

OVER_BUDGET = (
    "You've used up today's voice answers. I'll be happy to help again tomorrow; until then, "
    "the slash commands still work."
)


def estimate_cost(usage: Usage, prices: dict[str, float]) -> float:
    """USD for one turn from prices per million tokens (text_in, text_out, audio_in, audio_out,
    and cached_in for cached prompt tokens)."""
    cached = min(usage.cached_in, usage.text_in)
    per_token = {k: v / 1_000_000 for k, v in prices.items()}
    return (
        (usage.text_in - cached) * per_token.get("text_in", 0)
        + cached * per_token.get("cached_in", per_token.get("text_in", 0))
        + usage.text_out * per_token.get("text_out", 0)
        + usage.audio_in * per_token.get("audio_in", 0)
        + usage.audio_out * per_token.get("audio_out", 0)
    )


class UsageMeter:
    """The agent's Budget: records every turn, refuses politely once a daily budget is spent."""

    def __init__(self, conn: aiosqlite.Connection, settings: UsageSettings, model: str) -> None:
        self._conn = conn
        self.settings = settings
        self.model = model

    @classmethod
    async def open(cls, path: Path | str, settings: UsageSettings, model: str) -> UsageMeter:
        return cls(await open_sqlite(path, SCHEMA), settings, model)

    @staticmethod
    def today() -> str:
        return dt.datetime.now(dt.UTC).date().isoformat()

    async def today_for(self, user_id: str) -> dict[str, float]:
        cursor = await self._conn.execute(
            "SELECT * FROM usage WHERE day = ? AND user_id = ?", (self.today(), user_id)
        )
        row = await cursor.fetchone()
        return dict(row) if row else {}

    async def refusal(self, user_id: str) -> str | None:
        s = self.settings
        if not s.daily_audio_seconds and not s.daily_tokens:
            return None
        spent = await self.today_for(user_id)
        tokens = sum(spent.get(k, 0) for k in ("text_in", "text_out", "audio_in", "audio_out"))
        if (s.daily_audio_seconds and spent.get("audio_seconds", 0) >= s.daily_audio_seconds) or (
            s.daily_tokens and tokens >= s.daily_tokens
        ):
            log.info("user %s is over today's budget", user_id)
            return OVER_BUDGET
        return None

    async def record(self, user_id: str, engine: str, usage: Usage | None, audio_seconds: float) -> None:
        usage = usage or Usage()
        prices = self.settings.prices.get(self.model, {}) if engine == "openai" else {}
        cost = estimate_cost(usage, prices)
        await self._conn.execute(
            "INSERT INTO usage (day, user_id, turns, text_in, text_out, audio_in, audio_out, audio_seconds,"
            " cost_usd) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?) ON CONFLICT(day, user_id) DO UPDATE SET"
            " turns = turns + 1, text_in = text_in + excluded.text_in,"
            " text_out = text_out + excluded.text_out, audio_in = audio_in + excluded.audio_in,"
            " audio_out = audio_out + excluded.audio_out,"
            " audio_seconds = audio_seconds + excluded.audio_seconds,"
            " cost_usd = cost_usd + excluded.cost_usd",
            (
                self.today(),
                user_id,
                usage.text_in,
                usage.text_out,
                usage.audio_in,
                usage.audio_out,
                audio_seconds,
                cost,
            ),
        )
        await self._conn.commit()
        if engine == "openai":
            log.info(
                "turn usage user=%s model=%s text_in=%d text_out=%d audio_in=%d audio_out=%d "
                "audio_sent=%.1fs cost=$%.5f",
                user_id,
                self.model,
                usage.text_in,
                usage.text_out,
                usage.audio_in,
                usage.audio_out,
                audio_seconds,
                cost,
            )

    async def aclose(self) -> None:
        await self._conn.close()
