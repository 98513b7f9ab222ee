"""A raid of voice notes on the offline engine: real decoding, recognition, tools and speech.

    python bench/offline.py [--notes N] [--users 1,4] [--latency 15] [--voice auto] [--meaning-model auto]

The agent answers the README's six sample notes (greeting, points, manuals, a grievance, ticket
status, thanks) from several players at once, on embedded defaults seeded into a temporary
directory, exactly as the bot would: decode, hear (worker processes), route, run the tool, speak
(the neural Piper voice when it is installed: the voice used is printed), encode 48 kHz Ogg/Opus.
The players are the linked demo players (Nova, Blaze, ...: real points to read out), so the
replies are as long as a real player's; past nine players the rest are unlinked.

Engines, in the same run and taking turns row by row and round by round, so a busy moment on a
shared machine hits each alike (the "others" column: cores other processes kept busy meanwhile):

- today: the engine as it was before issue 18's speed work: pocketsphinx hears, and the whole
  reply is synthesised in one go, handed to the agent as a WAV, decoded and resampled again,
  Opus at complexity 10;
- sentences: offline.recognizer's choice hears (Whisper tiny.en by default), each sentence is
  synthesised on the speaking pool and encoded as it comes, Opus at complexity 5, with the
  sentence cache off;
- +cache: the same with the sentence cache on (what the bot runs). The raid repeats six notes,
  so its hit rate is higher than a real bot's: the row without the cache is the honest one.

`--rounds R` runs every row R times, the rows taking turns, and adds each row's rounds up. Per
note: seconds from the note's bytes to the finished Ogg reply; the worst lateness of a 5 ms
timer on the event loop; and where the time went, per stage (median ms of wall time, which
under load includes waiting for a core).

`--latency N` also answers a 5 s note (eSpeak's en-us+m3 asking for points and rank, made into
Ogg/Opus) N times per engine, one at a time, by a linked player, each with no history: median
and worst seconds from the note's bytes to the Ogg reply, models loaded (a running bot).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e import LagMonitor, pct
from bot import paths
from bot.app import App, running_app
from bot.audio import reply_from_pcm
from bot.config import load_settings
from bot.engines.offline import engine as offline_engine
from bot.engines.offline.engine import describe_recognizer, speech_dir
from bot.engines.offline.hearing import WorkerHearing
from bot.intent import meaning, router
from bot.lab.samples import speak_pcm
from bot.seed import initialise
from bot.tools.base import ToolContext

REPO = Path(__file__).resolve().parent.parent
NOTES = [p.read_bytes() for p in sorted(paths.SAMPLES.glob("*.ogg"))]
LINKED = [str(d) * 18 for d in range(1, 10)]  # the demo players' Discord ids (seed.sql)
FIVE_SECONDS = "Hi there, how many points do I have right now, and what is my rank this week?"
STAGES = ("decode", "hear", "route", "tools", "speak", "encode", "other")


# The stage times of the note being answered: a context variable, so the hearing task the agent
# starts for a note (which copies the context) adds to that note's row, whatever else runs.
ROW: contextvars.ContextVar[dict[str, float]] = contextvars.ContextVar("row")
NOTE_ROWS: list[dict[str, float]] = []


def add(stage: str, ms: float) -> None:
    row = ROW.get(None)
    if row is not None:
        row[stage] = row.get(stage, 0.0) + ms


def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            add(stage, (time.perf_counter() - started) * 1000)

    return wrapper


def instrument(app: App) -> None:
    engine = app.agent.engine
    for hearing in {id(h): h for h in (engine.hearing, *HEARINGS.values())}.values():  # type: ignore[attr-defined]
        hearing.hear = timed("hear", hearing.hear)
    engine._say = timed("speak", engine._say)  # type: ignore[attr-defined]
    name = "decide_all"
    decide = getattr(router, name)

    def deciding(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return decide(*args, **kwargs)
        finally:
            add("route", (time.perf_counter() - started) * 1000)

    setattr(offline_engine.router, name, deciding)


async def answer(app: App, context: ToolContext, note: bytes) -> float:
    row: dict[str, float] = {}
    ROW.set(row)  # this task's own context: each player's loop runs in a task of its own
    started = time.perf_counter()
    reply = await app.agent.respond(context, note)
    took = (time.perf_counter() - started) * 1000
    assert reply.audio is not None and reply.audio.ogg.startswith(b"OggS"), "no Ogg reply"
    timings = reply.timings_ms
    row["decode"] = timings.get("decode", 0.0)
    row["tools"] = timings.get("tools", 0.0)
    row["encode"] = timings.get("encode", 0.0)
    row["total"] = took
    # Hearing overlaps the history read: "other" is what no stage accounts for (history, saving,
    # waiting for a turn slot), never below zero.
    row["other"] = max(0.0, took - sum(row.get(s, 0.0) for s in STAGES if s != "other"))
    NOTE_ROWS.append(row)
    return took / 1000


# ---- the engines compared ----------------------------------------------------------------------


# Each mode's hearing: `today` hears with pocketsphinx, the recogniser the engine had before
# Whisper became the default; the others with what offline.recognizer picks.
HEARINGS: dict[str, Any] = {}


def set_mode(app: App, mode: str) -> None:
    engine = app.agent.engine
    if HEARINGS:
        engine.hearing = HEARINGS["today" if mode == "today" else "now"]  # type: ignore[attr-defined]
    speaker = engine.speaker  # type: ignore[attr-defined]
    speaker.by_sentence = mode != "today"
    speaker.cache.enabled = mode == "+cache"


MODES = ("today", "sentences", "+cache")


# ---- the raid ----------------------------------------------------------------------------------


async def one_player(app: App, users: list[str], count: int, out: list[float]) -> None:
    """One sender at a time, the six notes in turn; each round of six by another player, so no
    player asks the same question twice in a raid (which would flatter the sentence cache)."""
    for i in range(count):
        context = ToolContext(user_id=users[(i // len(NOTES)) % len(users)])
        out.append(await answer(app, context, NOTES[i % len(NOTES)]))


def cpu_seconds(app: App) -> float:
    """CPU time of the bot's process and its speech workers."""
    total = time.process_time()
    pool = app.agent.engine.hearing._pool  # type: ignore[attr-defined]
    for pid in list(getattr(pool, "_processes", {}) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


async def raid(app: App, players: int, notes: int) -> dict[str, Any]:
    per_player = max(1, notes // players)
    rounds = -(-per_player // len(NOTES))
    # Sender k's rounds go to players k, k + senders, ...: the linked demo players first.
    ids = [*LINKED, *(f"bench-{i}" for i in range(players * rounds))]
    users = [[ids[k + r * players] for r in range(rounds)] for k in range(players)]
    for user in {u for us in users for u in us}:  # the same history (none) for every engine's row
        await app.agent.forget(user)
    cache = app.agent.engine.speaker.cache  # type: ignore[attr-defined]
    cache.clear()  # each row starts cold: only what is said again within the row is a hit
    hits, misses = cache.hits, cache.misses
    timings: list[float] = []
    NOTE_ROWS.clear()
    monitor = LagMonitor()
    monitor.start()
    cpu = cpu_seconds(app)
    busy = machine_busy()
    started = time.perf_counter()
    await asyncio.gather(*(one_player(app, us, per_player, timings) for us in users))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(app) - cpu
    lag = await monitor.stop()
    return {
        "timings": timings,
        "wall": wall,
        "cpu": cpu,
        "lag": lag,
        "rows": list(NOTE_ROWS),
        "hits": cache.hits - hits,
        "misses": cache.misses - misses,
        "others": (machine_busy() - busy - cpu) / wall,
    }


def summary(raids: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one row together: notes over the wall time they took, medians over notes."""
    timings = [t for r in raids for t in r["timings"]]
    rows = [row for r in raids for row in r["rows"]]
    hits, misses = sum(r["hits"] for r in raids), sum(r["misses"] for r in raids)
    return {
        "notes": len(timings),
        "notes_per_s": len(timings) / sum(r["wall"] for r in raids),
        "p50": statistics.median(timings) * 1000,
        "p95": pct(timings, 95) * 1000,
        "lag": max(r["lag"] for r in raids) * 1000,
        "cpu": sum(r["cpu"] for r in raids) / len(timings),
        "stages": {s: statistics.median(n.get(s, 0.0) for n in rows) for s in STAGES},
        "hit_rate": hits / max(1, hits + misses),
        "others": statistics.mean(r["others"] for r in raids),
    }


async def latency(app: App, note: bytes, runs: int, modes: tuple[str, ...]) -> dict[str, list[float]]:
    took: dict[str, list[float]] = {m: [] for m in modes}
    stages: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    context = ToolContext(user_id=LINKED[0])
    for _ in range(runs):
        for mode in modes:
            set_mode(app, mode)
            await app.agent.forget(context.user_id)
            app.agent.engine.speaker.cache.clear()  # type: ignore[attr-defined]
            NOTE_ROWS.clear()
            took[mode].append(await answer(app, context, note))
            stages[mode].append(NOTE_ROWS[0])
    LATENCY_STAGES.update(stages)
    return took


LATENCY_STAGES: dict[str, list[dict[str, float]]] = {}


async def main(
    notes: int, player_counts: list[int], runs: int, voice: str, rounds: int, meaning_model: str = "auto"
) -> None:
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        settings = load_settings(
            REPO / "config.toml",
            environ={
                "VOXDESK_STORAGE_DIR": tmp,
                "VOXDESK_AGENT_FALLBACK": "apology",
                "VOXDESK_OFFLINE_VOICE": voice,
                "VOXDESK_OFFLINE_MEANING_MODEL": meaning_model,
            },
        )
        await initialise(settings)
        pcm, rate = speak_pcm(FIVE_SECONDS, "en-us+m3", 148)
        five = reply_from_pcm(pcm, rate).ogg
        async with running_app(settings) as app:
            engine = app.agent.engine
            HEARINGS["now"] = engine.hearing  # type: ignore[attr-defined]
            HEARINGS["today"] = WorkerHearing(speech_dir(settings), settings.offline.workers)
            await HEARINGS["today"].start()
            instrument(app)
            info = engine.reply_voices.describe()  # type: ignore[attr-defined]
            for mode in MODES:  # imports, codecs, the general model, SQLite, the ONNX session's first run
                set_mode(app, mode)
                await raid(app, 2, len(NOTES))
            raids: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for _ in range(rounds):  # the rows take turns, round by round
                for n in player_counts:
                    for mode in MODES:
                        set_mode(app, mode)
                        raids.setdefault((mode, n), []).append(await raid(app, n, max(notes, n)))
            results = {key: summary(rs) for key, rs in raids.items()}
            # One player asking a new question: nothing in the cache to find (it is cleared).
            lat = await latency(app, five, runs, MODES[:2]) if runs else {}
            cache = engine.speaker.cache  # type: ignore[attr-defined]
            workers = engine.hearing.workers  # type: ignore[attr-defined]
            heard_with = describe_recognizer(HEARINGS["now"].whisper)
            engine.hearing = HEARINGS["now"]  # type: ignore[attr-defined]
            await HEARINGS.pop("today").aclose()
        print(
            f"the six sample notes through the whole offline agent; reply voice {info.name} ({info.engine}); "
            f"{workers} hearing workers; today hears with pocketsphinx, the others with {heard_with}; "
            f"{os.cpu_count()} cores; "
            f"agent.max_concurrent_turns={settings.agent.max_concurrent_turns}; "
            f"sentence cache, all rows: {cache.hits} hits, {cache.misses} misses; {meaning.describe()}"
        )
        print(table(results, player_counts))
        if lat:
            print(latency_table(lat, len(pcm) / 2 / rate))


def table(results: dict[tuple[str, int], dict[str, Any]], player_counts: list[int]) -> str:
    head = "players  engine     notes  notes/s     p50     p95  loop lag  cpu s/note  cache hits  others  "
    lines = [head + "  ".join(f"{s:>6}" for s in STAGES)]
    for n in player_counts:
        for mode in MODES:
            r = results[mode, n]
            lines.append(
                f"{n:>7}  {mode:<9}  {r['notes']:>5}  {r['notes_per_s']:>7.2f}  {r['p50']:>4.0f}ms  "
                f"{r['p95']:>4.0f}ms  {r['lag']:>6.1f}ms  {r['cpu']:>10.2f}  {r['hit_rate']:>10.0%}  "
                f"{r['others']:>6.2f}  " + "  ".join(f"{r['stages'][s]:>6.0f}" for s in STAGES)
            )
        base = results["today", n]
        for mode in MODES[1:]:
            r = results[mode, n]
            lines.append(
                f"{'':>7}  {mode + '/today':<15}  {r['notes_per_s'] / base['notes_per_s']:>5.2f}x  "
                f"{r['p50'] / base['p50']:>5.2f}x  {r['p95'] / base['p95']:>5.2f}x"
            )
    return "\n".join(lines)


def latency_table(took: dict[str, list[float]], seconds: float) -> str:
    runs = len(next(iter(took.values())))
    lines = [
        f"\na {seconds:.1f} s note, {runs} times per engine, one at a time (stages: median ms)",
        "engine     median  min     max     " + "  ".join(f"{s:>6}" for s in STAGES),
    ]
    for mode, times in took.items():
        stages = LATENCY_STAGES[mode]
        lines.append(
            f"{mode:<9}  {statistics.median(times):.2f} s  {min(times):.2f} s  {max(times):.2f} s  "
            + "  ".join(f"{statistics.median(n.get(s, 0.0) for n in stages):>6.0f}" for s in STAGES)
        )
    base = statistics.median(took["today"])
    for mode in list(took)[1:]:
        lines.append(f"{mode}/today: {statistics.median(took[mode]) / base:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=48, help="notes per scenario (at least one per player)")
    parser.add_argument("--users", default="1,4", help="comma-separated counts of players sending at once")
    parser.add_argument("--latency", type=int, default=15, help="5 s notes per engine, one at a time")
    parser.add_argument("--voice", default="auto", help="offline.voice (auto: Piper when installed)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every row, taking turns")
    parser.add_argument(
        "--meaning-model",
        default="auto",
        help="offline.meaning_model (auto: all-mpnet-base-v2 when installed)",
    )
    args = parser.parse_args()
    counts = [int(u) for u in args.users.split(",")]
    asyncio.run(main(args.notes, counts, args.latency, args.voice, args.rounds, args.meaning_model))
