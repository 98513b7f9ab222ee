"""A raid of voice notes on the offline engine: real decoding, recognition, tools and speech.

    python bench/offline.py [--notes N] [--users 1,4,16]

The agent answers the README's six sample notes (greeting, points, manuals, a grievance, ticket
status, thanks) from several players at once, on embedded defaults seeded into a temporary
directory, exactly as the bot would: decode, hear, route, run the tool, speak, encode. Two ways
of hearing, in the same run:

- workers: pocketsphinx in worker processes, one per core (what the bot does);
- threads: pocketsphinx in threads of the bot's own process (the baseline: how it ran before,
  with one decoder behind a lock where the old code queued two; a decode holds the GIL, so two
  decoders in threads measured no faster than one).

Per note: seconds from the note's bytes to the finished reply; and the worst lateness of a 5 ms
timer on the event loop, which is what heartbeats and other players' slash commands wait for.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bot import paths

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e import LagMonitor, pct
from bot.app import App, running_app
from bot.config import load_settings
from bot.engines.offline.engine import speech_dir
from bot.engines.offline.hearing import LocalHearing
from bot.seed import initialise
from bot.speech.recognizer import Recognizer
from bot.tools.base import ToolContext

REPO = Path(__file__).resolve().parent.parent
NOTES = [p.read_bytes() for p in sorted(paths.SAMPLES.glob("*.ogg"))]


async def one_player(app: App, user_id: str, count: int, out: list[float]) -> None:
    context = ToolContext(user_id=user_id)
    for i in range(count):
        started = time.perf_counter()
        await app.agent.respond(context, NOTES[i % len(NOTES)])
        out.append(time.perf_counter() - started)


async def raid(app: App, players: int, notes: int, round_: str) -> dict[str, float]:
    per_player = max(1, notes // players)
    timings: list[float] = []
    monitor = LagMonitor()
    monitor.start()
    started = time.perf_counter()
    await asyncio.gather(
        *(one_player(app, f"bench-{round_}-{i}", per_player, timings) for i in range(players))
    )
    wall = time.perf_counter() - started
    lag = await monitor.stop()
    return {
        "notes": len(timings),
        "notes_per_s": len(timings) / wall,
        "p50": statistics.median(timings) * 1000,
        "p95": pct(timings, 95) * 1000,
        "lag": lag * 1000,
    }


async def main(notes: int, player_counts: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        settings = load_settings(
            REPO / "config.toml", environ={"VOXDESK_STORAGE_DIR": tmp, "VOXDESK_AGENT_FALLBACK": "apology"}
        )
        await initialise(settings)
        results: dict[tuple[str, int], dict[str, float]] = {}
        async with running_app(settings) as app:
            engine = app.agent.engine
            workers = engine.hearing  # type: ignore[attr-defined]
            threads = LocalHearing(await asyncio.to_thread(Recognizer, speech_dir(settings)))
            for name, hearing in (("workers", workers), ("threads", threads)):
                engine.hearing = hearing  # type: ignore[attr-defined]
                await raid(app, 2, len(NOTES), f"warm-{name}")  # imports, codecs, general model, SQLite
                for n in player_counts:
                    results[name, n] = await raid(app, n, max(notes, n), f"{name}-{n}")
            engine.hearing = workers  # type: ignore[attr-defined]
        print(
            f"the six sample notes through the whole offline agent; {workers.workers} worker processes; "
            f"agent.max_concurrent_turns={settings.agent.max_concurrent_turns}"
        )
        print(table(results, player_counts))


def table(results: dict[tuple[str, int], dict[str, float]], player_counts: list[int]) -> str:
    lines = ["players  hearing  notes  notes/s     p50     p95  loop lag max"]
    for n in player_counts:
        for name in ("workers", "threads"):
            r = results[name, n]
            lines.append(
                f"{n:>7}  {name:<7}  {r['notes']:>5}  {r['notes_per_s']:>7.2f}  {r['p50']:>4.0f}ms  "
                f"{r['p95']:>4.0f}ms  {r['lag']:>10.1f}ms"
            )
        w, t = results["workers", n], results["threads", n]
        throughput, lag = w["notes_per_s"] / t["notes_per_s"], t["lag"] / max(w["lag"], 0.1)
        lines.append(
            f"{'':>7}  {'ratio':<7}  {'':>5}  {throughput:>6.2f}x  {t['p50'] / w['p50']:>5.2f}x  "
            f"{t['p95'] / w['p95']:>5.2f}x  {lag:>11.1f}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=48, help="notes per scenario (at least one per player)")
    parser.add_argument("--users", default="1,4,16", help="comma-separated counts of players sending at once")
    args = parser.parse_args()
    asyncio.run(main(args.notes, [int(u) for u in args.users.split(",")]))
