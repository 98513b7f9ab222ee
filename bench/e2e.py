"""End to end through discord.py and the fake Discord: how much the bot itself adds per note.

    python bench/e2e.py [--notes N] [--users 1,10,50]
    python bench/e2e.py --keep-first 5 [--users 1,10]

`--keep-first R`: each user count R times over, taking turns with and without the answer written
to the notes ledger (NoteLedger.keep_answer: its text and Ogg/Opus audio) before its first post,
what keeping it beforehand where the bot may not read history would cost each answer; medians
of the rounds' p50s, and their ratio (with / without).

The bot runs exactly as `python -m bot run` runs it (cogs.runner.serve), on embedded defaults
seeded into a temporary directory, with an engine that answers instantly (no tool call, a 1 s
generated reply), so what is measured is the bot's own work: gateway event, download, decode,
agent bookkeeping, Opus encoding of the reply, the voice-message and transcript posts.
The fake Discord runs on its own thread and event loop, so its work is not counted as the bot's
event-loop lag (it still shares the CPU and the GIL with the bot, as a real network would not).

Each simulated user sends a note, waits for the whole answer, then sends the next one.
Per note: from MESSAGE_CREATE sent by the fake to the voice message (first reply) and to the
transcript (answer complete) arriving back at the fake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import load_settings
from bot.seed import initialise
from cogs.runner import serve
from tests.audio_samples import encode, speechlike
from tests.discord_harness import discord_settings
from tests.fakes.discord_server import TOKEN, FakeDiscord, InjectedUser
from tests.frontend_engine import FrontendEngine

# Whether VoiceNotes._send writes the answer to the ledger first (`--keep-first`).
KEEP_FIRST = [False]


def keep_before_sending() -> None:
    from cogs.voice import VoiceNotes

    send = VoiceNotes._send

    async def keeping_first(self: Any, message: Any, unsent: Any, arrived: float) -> Any:
        if KEEP_FIRST[0]:
            await self.bot.core.notes.keep_answer(message.id, unsent)
        return await send(self, message, unsent, arrived)

    VoiceNotes._send = keeping_first  # type: ignore[method-assign]


REPO = Path(__file__).resolve().parent.parent


class FakeThread:
    """The fake Discord on its own event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake: FakeDiscord = self.call_sync(FakeDiscord().start())

    def call_sync(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.call_sync(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


class LagMonitor:
    """Worst lateness of a 5 ms timer on the bot's event loop."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, time.perf_counter() - started - self.period)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.worst


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def one_user(
    ft: FakeThread, user: InjectedUser, note: bytes, count: int, out: list[tuple[float, float]]
) -> None:
    fake = ft.fake
    for _ in range(count):
        message = await ft.call(fake.send_note(user, note))
        replies = await ft.call(
            fake.wait_for(lambda _, m=message: (r := fake.replies_to(m["id"])) and len(r) >= 2 and r, 300)
        )
        sent = fake.dispatched_at[message["id"]]
        out.append((replies[0].at - sent, replies[1].at - sent))


async def scenario(ft: FakeThread, users: int, notes: int, note: bytes, round_: int) -> dict[str, float]:
    players = [InjectedUser(700000000000000000 + round_ * 1000 + i, f"p{i}") for i in range(users)]
    per_user = max(1, notes // users)
    timings: list[tuple[float, float]] = []
    monitor = LagMonitor()
    monitor.start()
    started = time.perf_counter()
    await asyncio.gather(*(one_user(ft, p, note, per_user, timings) for p in players))
    wall = time.perf_counter() - started
    lag = await monitor.stop()
    first = [t[0] * 1000 for t in timings]
    full = [t[1] * 1000 for t in timings]
    return {
        "users": users,
        "notes": len(timings),
        "notes_per_s": len(timings) / wall,
        "voice_p50": statistics.median(first),
        "voice_p95": pct(first, 95),
        "full_p50": statistics.median(full),
        "full_p95": pct(full, 95),
        "lag_ms": lag * 1000,
    }


async def compare_keeping(
    ft: FakeThread, users: int, notes: int, note: bytes, rounds: int, base: int
) -> None:
    """Rounds taking turns without and with the answer kept before its first post."""
    seen: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for r in range(rounds):
        for keep in (False, True) if r % 2 == 0 else (True, False):
            KEEP_FIRST[0] = keep
            seen[keep].append(await scenario(ft, users, max(notes, users), note, base + 2 * r + keep))
    KEEP_FIRST[0] = False
    for key in ("voice_p50", "full_p50", "notes_per_s"):
        without = statistics.median(x[key] for x in seen[False])
        with_ = statistics.median(x[key] for x in seen[True])
        print(f"{users:>5} {key:>12} without {without:>9.1f} with {with_:>9.1f} ratio {with_ / without:.3f}")


async def main(notes: int, user_counts: list[int], note_seconds: float, keep_first: int = 0) -> None:
    if keep_first:
        keep_before_sending()
    note = encode(speechlike(note_seconds), 48_000, "ogg")
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        base = load_settings(
            REPO / "config.toml",
            environ={"VOXDESK_STORAGE_DIR": tmp, "VOXDESK_AGENT_FALLBACK": "apology"},
        )
        await initialise(base, speech=False)
        ft = FakeThread()
        try:
            settings = discord_settings(base, ft.fake, flood_notes=100_000, flood_seconds=1.0)
            stop = asyncio.Event()
            started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            engine = FrontendEngine(use_tools=False, reply_seconds=1.0)
            bot_task = asyncio.create_task(serve(settings, TOKEN, stop=stop, engine=engine, started=started))
            bot = await asyncio.wait_for(started, 60)
            await asyncio.wait_for(bot.wait_until_ready(), 60)
            await scenario(ft, 2, 4, note, 99)  # warm-up: imports, codecs, SQLite pages
            print(
                f"{note_seconds:g} s Ogg/Opus notes in, 1 s voice replies + transcript out; instant engine; "
                f"agent.max_concurrent_turns={settings.agent.max_concurrent_turns}"
            )
            print(
                f"{'users':>5} {'notes':>5} {'notes/s':>8} {'voice p50':>10} {'voice p95':>10} "
                f"{'full p50':>9} {'full p95':>9} {'loop lag max':>13}"
            )
            if keep_first:
                print(f"answer kept before its first post or not, {keep_first} rounds each, medians:")
                for i, users in enumerate(user_counts):
                    await compare_keeping(ft, users, notes, note, keep_first, 100 + i * 100)
                user_counts = []
            for i, users in enumerate(user_counts):
                r = await scenario(ft, users, max(notes, users), note, i)
                print(
                    f"{r['users']:>5} {r['notes']:>5} {r['notes_per_s']:>8.1f} {r['voice_p50']:>8.1f}ms "
                    f"{r['voice_p95']:>8.1f}ms {r['full_p50']:>7.1f}ms {r['full_p95']:>7.1f}ms "
                    f"{r['lag_ms']:>11.1f}ms"
                )
            assert not ft.fake.violations, ft.fake.violations
            stop.set()
            await bot_task
        finally:
            ft.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=100, help="notes per scenario (at least one per user)")
    parser.add_argument("--users", default="1,10,50", help="comma-separated concurrent user counts")
    parser.add_argument("--note-seconds", type=float, default=3.0, help="length of each voice note")
    parser.add_argument(
        "--keep-first", type=int, default=0, help="rounds comparing the answer kept before its first post"
    )
    args = parser.parse_args()
    users = [int(u) for u in args.users.split(",")]
    asyncio.run(main(args.notes, users, args.note_seconds, args.keep_first))
