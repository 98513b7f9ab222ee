"""Usage and cost per turn, per-user daily totals, and an optional per-user daily budget."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from pathlib import Path

import aiosqlite

from bot import metrics
from bot import sentences as say
from bot.config import UsageSettings
from bot.db import first, opening, writing
from bot.engines.base import Usage

log = logging.getLogger(__name__)

# Raised with each change to the schema or to what `open` migrates: an older voxdesk then refuses
# the file instead of running on a schema it does not know.
SCHEMA_VERSION = 1
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
-- Turns per hour (UTC, "2026-11-20T14"), every player together: the support desk's chart.
CREATE TABLE IF NOT EXISTS turns_by_hour (hour TEXT PRIMARY KEY, turns INTEGER NOT NULL DEFAULT 0);
"""
# Days of figures kept: the support desk charts 14 (bot/web/desk.py), a budget reads today's.
KEEP_DAYS = 31


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
    """The agent's Budget: records every turn, refuses politely once a daily budget is spent.

    A turn's tokens are priced by the row of the model that billed each share of them (the model a
    chat answer names, the transcription's own); `model` prices tokens no model was named for."""

    def __init__(self, conn: aiosqlite.Connection, settings: UsageSettings, model: str) -> None:
        self._conn = conn
        self.settings = settings
        self.model = model
        self._pruned_on = ""  # the day of the last prune
        self._unpriced: set[str] = set()  # models already warned of having no price row
        self._write_lock = asyncio.Lock()

    def expect(self, models: list[str]) -> None:
        """Warn now of the models turns will be billed by that have no price row."""
        for model in models:
            if model:
                self._row(model)

    def _row(self, model: str) -> dict[str, float]:
        row = self.settings.price_row(model)
        if row is not None:
            return self.settings.prices[row]
        if model not in self._unpriced:
            # Once: a studio wants to know, not to read it again with every turn.
            self._unpriced.add(model)
            log.warning(
                "no usage.prices row for model %s: the cost estimate counts its tokens as $0; add "
                '[usage.prices."%s"] to the config, or name a row for it in usage.price_as',
                model,
                model,
            )
        return {}

    def cost(self, usage: Usage) -> float:
        """USD for tokens of the OpenAI engine, each model's share by its own row."""
        return sum(
            estimate_cost(share, self._row(model or self.model)) for model, share in usage.by_model().items()
        )

    @classmethod
    async def open(cls, path: Path | str, settings: UsageSettings, model: str) -> UsageMeter:
        async with opening(path, SCHEMA, version=SCHEMA_VERSION) as conn:
            meter = cls(conn, settings, model)
            await meter.prune()
            return meter

    async def prune(self) -> None:
        """Forget the days older than KEEP_DAYS, every player's; at open and from record once a
        day, so a process with no other housekeeping (the web desk alone) stays bounded too."""
        self._pruned_on = self.today()
        first = (dt.date.fromisoformat(self._pruned_on) - dt.timedelta(days=KEEP_DAYS - 1)).isoformat()
        async with writing(self._conn, self._write_lock):
            await self._conn.execute("DELETE FROM usage WHERE day < ?", (first,))
            # "2026-11-20T14" sorts after "2026-11-20": the first day's hours stay.
            await self._conn.execute("DELETE FROM turns_by_hour WHERE hour < ?", (first,))
            await self._conn.commit()

    @staticmethod
    def today() -> str:
        return dt.datetime.now(dt.UTC).date().isoformat()

    async def today_for(self, user_id: str) -> dict[str, float]:
        rows = await self._conn.execute_fetchall(
            "SELECT * FROM usage WHERE day = ? AND user_id = ?", (self.today(), user_id)
        )
        row = first(rows)
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
            return say.OVER_BUDGET.format(when=reset_in(seconds_to_reset()))
        return None

    async def record(
        self,
        user_id: str,
        engine: str,
        usage: Usage | None,
        audio_seconds: float,
        turns: int = 1,
        request_id: str = "",
    ) -> None:
        """`turns` 0: tokens an engine spent on a turn it then failed, which another engine or an
        apology answered; they count against the budget, the turn is counted once, elsewhere.
        `request_id` (the note) is for the log line alone."""
        if self.today() != self._pruned_on:
            await self.prune()
        usage = usage or Usage()
        cost = self.cost(usage) if engine == "openai" else 0.0
        async with writing(self._conn, self._write_lock):
            await self._conn.execute(
                "INSERT INTO usage (day, user_id, turns, text_in, text_out, audio_in, audio_out,"
                " audio_seconds, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(day, user_id) DO UPDATE SET"
                " turns = turns + excluded.turns, text_in = text_in + excluded.text_in,"
                " text_out = text_out + excluded.text_out, audio_in = audio_in + excluded.audio_in,"
                " audio_out = audio_out + excluded.audio_out,"
                " audio_seconds = audio_seconds + excluded.audio_seconds,"
                " cost_usd = cost_usd + excluded.cost_usd",
                (
                    self.today(),
                    user_id,
                    turns,
                    usage.text_in,
                    usage.text_out,
                    usage.audio_in,
                    usage.audio_out,
                    audio_seconds,
                    cost,
                ),
            )
            if turns:
                await self._conn.execute(
                    "INSERT INTO turns_by_hour (hour, turns) VALUES (?, ?)"
                    " ON CONFLICT(hour) DO UPDATE SET turns = turns + excluded.turns",
                    (dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H"), turns),
                )
            await self._conn.commit()
        tokens = {k: getattr(usage, k) for k in ("text_in", "text_out", "audio_in", "audio_out")}
        metrics.usage(engine, tokens, cost)
        if engine == "openai":
            log.info(
                "turn usage note=%s user=%s models=%s text_in=%d text_out=%d audio_in=%d audio_out=%d "
                "audio_sent=%.1fs cost=$%.5f",
                request_id or "-",
                user_id,
                ",".join(model or self.model for model in usage.by_model()) or self.model,
                usage.text_in,
                usage.text_out,
                usage.audio_in,
                usage.audio_out,
                audio_seconds,
                cost,
            )

    async def by_day(self, days: int = 14) -> list[dict[str, float | str]]:
        """Every player's turns, tokens and cost added up per day, oldest first (the desk's chart)."""
        since = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days - 1)).isoformat()
        rows = await self._conn.execute_fetchall(
            "SELECT day, SUM(turns) AS turns, SUM(text_in + text_out + audio_in + audio_out) AS tokens,"
            " SUM(audio_seconds) AS audio_seconds, SUM(cost_usd) AS cost_usd FROM usage"
            " WHERE day >= ? GROUP BY day ORDER BY day",
            (since,),
        )
        found = {row["day"]: dict(row) for row in rows}
        first = dt.date.fromisoformat(since)
        empty = {"turns": 0, "tokens": 0, "audio_seconds": 0.0, "cost_usd": 0.0}
        days_shown = [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]
        return [found.get(day, {"day": day, **empty}) for day in days_shown]  # quiet days as zeros

    async def by_hour(self, hours: int = 24) -> dict[str, int]:
        """Turns per hour over the last `hours` hours, every hour present (0 when quiet)."""
        now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        keys = [(now - dt.timedelta(hours=h)).strftime("%Y-%m-%dT%H") for h in range(hours - 1, -1, -1)]
        rows = await self._conn.execute_fetchall(
            "SELECT hour, turns FROM turns_by_hour WHERE hour >= ?", (keys[0],)
        )
        found = {row["hour"]: int(row["turns"]) for row in rows}
        return {k: found.get(k, 0) for k in keys}

    async def aclose(self) -> None:
        await self._conn.close()


def seconds_to_reset(now: dt.datetime | None = None) -> float:
    """Until the daily budgets start afresh: the next UTC midnight (UsageMeter.today)."""
    now = now or dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return (midnight - now).total_seconds()


def reset_in(seconds: float) -> str:
    """`seconds` as said to a player: "in about 5 hours", "in 20 minutes"."""
    hours = round(seconds / 3600)
    if hours >= 2:
        return say.RESET_IN_HOURS.format(hours=hours)
    if seconds >= 45 * 60:
        return say.RESET_IN_AN_HOUR
    minutes = math.ceil(seconds / 60)
    return say.RESET_IN_MINUTES.format(minutes=minutes) if minutes > 1 else say.RESET_IN_A_MINUTE
