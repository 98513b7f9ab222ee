"""Prometheus metrics: the one place the core and its front ends count what happens.

Counters are process-wide, as Prometheus expects of one process, in a registry of our own (not
prometheus-client's global one), so importing this module twice or building several apps in a
test never registers a metric twice. `/metrics` (bot/web) renders `REGISTRY`, and
`DISCORD_REGISTRY` too in a process that runs the Discord bot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# A note's stages: seconds from milliseconds to a slow model's half minute.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The agent's stopwatch names (bot/agent.py) → the stages an operator knows. "engine" is the
# model's own steps: for the offline engine, hearing and routing; for OpenAI, the whole request.
AGENT_STAGES = {"decode": "decode", "engine": "hear", "tools": "tools", "encode": "speak"}

NOTES = Counter(
    "voxdesk_notes",
    "Voice notes by front end and outcome (answered, refused, failed) and reason",
    ["frontend", "outcome", "reason"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "voxdesk_stage_seconds",
    "Seconds per stage of a note: download, decode, hear, tools, speak, send",
    ["stage"],
    buckets=STAGE_BUCKETS,
    registry=REGISTRY,
)
# A whole note as its player waits for it: from the note reaching the bot (a catch-up's: found)
# to its answer sent, so the queue, the download, the turn and the send together.
NOTE_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
NOTE_SECONDS = Histogram(
    "voxdesk_note_seconds",
    "Seconds from a voice note reaching the bot to its answer sent, by front end",
    ["frontend"],
    buckets=NOTE_BUCKETS,
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "voxdesk_fallbacks",
    "Turns the engine failed and its fallback engine took, by the failed engine and how the"
    " fallback did (answered, failed)",
    ["engine", "result"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "voxdesk_tool_calls", "Tool calls by tool name and result", ["tool", "ok"], registry=REGISTRY
)
# The toolbox's tools (bot/tools/__init__.py). A name a model makes up is counted as "unknown":
# each label value is a time series kept for the life of the process.
TOOLS = frozenset({"get_player_stats", "search_manuals", "register_grievance", "get_grievance_status"})
MODEL_TOKENS = Counter(
    "voxdesk_model_tokens",
    "Model tokens by engine and kind (text_in, text_out, audio_in, audio_out)",
    ["engine", "kind"],
    registry=REGISTRY,
)
MODEL_COST = Counter(
    "voxdesk_model_cost_usd",
    "Estimated model cost in US dollars ([usage.prices])",
    ["engine"],
    registry=REGISTRY,
)
GRIEVANCES = Counter(
    "voxdesk_grievances",
    "Grievances by what became of them: filed (in the database as the player asked), kept (the"
    " database refused it: in the spool or in memory), filed_late (a kept one filed since)",
    ["result"],
    registry=REGISTRY,
)
TICKET_NEWS = Counter(
    "voxdesk_ticket_news",
    "Ticket news DMs by outcome (sent, dms_closed, retry, failed, muted)",
    ["outcome"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "voxdesk_grievance_outbox_depth",
    "Grievances waiting to be pushed to the remote tracker (0 on the local backend)",
    registry=REGISTRY,
)
# Depth alone cannot tell one grievance stuck for a day from a steady trickle: alert on age.
OUTBOX_OLDEST_SECONDS = Gauge(
    "voxdesk_grievance_outbox_oldest_seconds",
    "Seconds since the longest-waiting grievance for the remote tracker was filed (0: none waits)",
    registry=REGISTRY,
)
UNFILED = Gauge(
    "voxdesk_grievances_unfiled",
    "Grievances the database refused, kept in its spool or in memory until it takes them",
    registry=REGISTRY,
)
# The turn slots (agent.max_concurrent_turns): a queue that only grows, or a wait that only
# lengthens, is what players feel before any error is logged.
TURNS_IN_PROGRESS = Gauge(
    "voxdesk_turns_in_progress", "Notes holding a turn slot (being heard and answered)", registry=REGISTRY
)
TURN_SLOTS = Gauge("voxdesk_turn_slots", "Turn slots (agent.max_concurrent_turns)", registry=REGISTRY)


class Waiting:
    """What waits now (a note for its turn, a turn in its slot), each by when it began
    (time.monotonic()): read at each scrape and /healthz probe."""

    def __init__(self) -> None:
        self._since: dict[object, float] = {}

    def enter(self, who: object) -> None:
        self._since.setdefault(who, time.monotonic())

    def leave(self, who: object) -> None:
        """Done waiting (again is nothing)."""
        self._since.pop(who, None)

    def __len__(self) -> int:
        return len(self._since)

    def oldest_seconds(self) -> float:
        return time.monotonic() - min(self._since.values()) if self._since else 0.0

    def newest_seconds(self) -> float:
        return time.monotonic() - max(self._since.values()) if self._since else 0.0


# Every front end's notes taken to be answered and waiting for a turn (the voice cog's queue per
# player and for a note in hand, the agent's for a slot): process-wide, as the slots are.
NOTES_WAITING = Waiting()
TURNS_WAITING = Gauge(
    "voxdesk_notes_waiting",
    "Notes taken to be answered and waiting for their turn (queue depth)",
    registry=REGISTRY,
)
TURNS_WAITING.set_function(lambda: len(NOTES_WAITING))
TURN_OLDEST_WAITING_SECONDS = Gauge(
    "voxdesk_notes_oldest_waiting_seconds",
    "Seconds the longest-waiting note has waited for its turn (0: none waits)",
    registry=REGISTRY,
)
TURN_OLDEST_WAITING_SECONDS.set_function(NOTES_WAITING.oldest_seconds)
# Apart: `voxdesk web` has no gateway, and a 0 there would read as a Discord bot disconnected.
DISCORD_REGISTRY = CollectorRegistry(auto_describe=True)
DISCORD_CONNECTED = Gauge(
    "voxdesk_discord_connected", "1 while the Discord gateway is connected", registry=DISCORD_REGISTRY
)

# Outcome reasons of an agent reply (Reply.kind).
_REPLY_OUTCOMES = {
    "answer": ("answered", "answer"),
    "refusal": ("answered", "refusal"),
    "over_budget": ("refused", "over_budget"),
    "apology": ("failed", "engine_down"),
}


def note(frontend: str, outcome: str, reason: str) -> None:
    NOTES.labels(frontend, outcome, reason).inc()


def reply(frontend: str, kind: str) -> None:
    """Count a note the agent answered, by the kind of its reply."""
    outcome, reason = _REPLY_OUTCOMES.get(kind, ("answered", kind))
    note(frontend, outcome, reason)


def answered_in(frontend: str, seconds: float) -> None:
    NOTE_SECONDS.labels(frontend).observe(seconds)


def stage(name: str, seconds: float) -> None:
    STAGE_SECONDS.labels(name).observe(seconds)


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Time a stage a front end owns (download, send); counted whether it succeeds or not."""
    started = time.perf_counter()
    try:
        yield
    finally:
        stage(name, time.perf_counter() - started)


def agent_turn(timings_ms: dict[str, float], tools: list[tuple[str, bool]]) -> None:
    """What one agent turn did: its stage timings and its tool calls."""
    for name, label in AGENT_STAGES.items():
        if name in timings_ms:
            stage(label, timings_ms[name] / 1000)
    for tool, ok in tools:
        TOOL_CALLS.labels(tool if tool in TOOLS else "unknown", "true" if ok else "false").inc()


def usage(engine: str, tokens: dict[str, int], cost_usd: float) -> None:
    for kind, count in tokens.items():
        if count:
            MODEL_TOKENS.labels(engine, kind).inc(count)
    if cost_usd:
        MODEL_COST.labels(engine).inc(cost_usd)


def render(discord: bool = False) -> bytes:
    """The metrics page; `discord`: this process runs the Discord bot."""
    page = generate_latest(REGISTRY)
    return page + generate_latest(DISCORD_REGISTRY) if discord else page
