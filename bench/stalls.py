"""Event-loop stalls under a raid of voice notes: every time the bot's loop goes longer than
`--threshold` without running a 5 ms timer, where it was (the loop thread's stack, sampled by a
watchdog thread), and the worst lag.

    python bench/stalls.py                          # 20 players, Discord, instant engine
    python bench/stalls.py --engine openai          # the OpenAI engine against the fake OpenAI
    python bench/stalls.py --engine offline --spoken  # the offline engine hearing real speech
    python bench/stalls.py --web 2                  # and 2 playground uploads, and the web probed
    python bench/stalls.py --profile                # and where the loop thread spends its time

The bot runs as `python -m bot run` runs it (cogs.runner.serve) on embedded defaults seeded into a
temporary directory. The fakes (Discord, OpenAI) run on their own thread and event loop, so their
work is not the bot's lag (they still share the CPU and the GIL). Half the players send short
notes, half long ones (`--long-seconds`), `--notes` each, one after another. A stall is reported
with the stack most often sampled in it, cut to the frames of this repository and the innermost
frame; "waits for the GIL" when the loop thread was in a system call (select, send) the whole
time, with what the other threads were doing; "not sampled" when the watchdog itself got no
turn. With `--web`, GET /static/style.css and /healthz are timed every 100 ms during the raid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import re
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bench.e2e import FakeThread
from bot.config import load_settings
from bot.seed import initialise
from cogs.runner import serve
from tests import frontend_engine
from tests.audio_samples import encode, speechlike
from tests.discord_harness import discord_settings
from tests.fakes.discord_server import TOKEN, InjectedUser
from tests.fakes.openai_server import API_KEY, FakeOpenAI
from tests.frontend_engine import FrontendEngine

# The instant engine's reply audio, made once: making it is the stand-in model's work, not the bot's.
frontend_engine.tone = functools.lru_cache(frontend_engine.tone)

REPO = Path(__file__).resolve().parent.parent
ANSWERS: Counter[str] = Counter()  # what the notes were answered, to tell a real answer from a refusal


class StallWatch:
    """A heartbeat task on the loop and a thread that, while the heartbeat is late by more than
    `threshold`, samples the loop thread's stack."""

    def __init__(self, threshold: float = 0.05, tick: float = 0.005) -> None:
        self.threshold, self.tick = threshold, tick
        self.beat = time.perf_counter()
        self.worst = 0.0
        self.stalls: dict[float, list[str]] = {}  # the beat it followed -> stacks sampled in it
        self.lengths: dict[float, float] = {}
        self.others: Counter[str] = Counter()
        self.profile = False
        self.busy: Counter[str] = Counter()  # where the loop thread was, sampled throughout
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.tick)
            now = time.perf_counter()
            late = now - before - self.tick
            self.worst = max(self.worst, late)
            if late > self.threshold:
                self.lengths[self.beat] = late
            self.beat = now

    def _watch(self) -> None:
        while not self._stop.wait(self.tick / 2):
            beat = self.beat
            if self.profile:
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None and not _idle(frame):
                    self.busy[" <- ".join(reversed(_where(frame, 1).strip().split("\n  ")))] += 1
            if time.perf_counter() - beat > self.threshold:
                frames = sys._current_frames()
                frame = frames.get(self._loop_thread)
                if frame is None:
                    continue
                if _idle(frame):
                    # The loop is waiting for the GIL back: note which threads run Python meanwhile.
                    busy = [
                        _where(f, 1)
                        for ident, f in frames.items()
                        if ident not in (self._loop_thread, threading.get_ident()) and not _idle(f)
                    ]
                    self.stalls.setdefault(beat, []).append(GIL)
                    self.others.update(busy)
                else:
                    self.stalls.setdefault(beat, []).append(_where(frame))

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def report(self) -> None:
        over = f"stalls over {self.threshold * 1000:.0f} ms: {len(self.lengths)}"
        print(f"loop lag max {self.worst * 1000:.1f} ms; {over}")
        by_place: dict[str, list[float]] = {}
        for beat, length in self.lengths.items():
            samples = self.stalls.get(beat) or ["(not sampled)"]
            place = Counter(samples).most_common(1)[0][0]
            by_place.setdefault(place, []).append(length)
        for place, lengths in sorted(by_place.items(), key=lambda kv: -max(kv[1])):
            longest, total = max(lengths) * 1000, sum(lengths) * 1000
            print(f"\n{len(lengths)} stall(s), max {longest:.0f} ms, total {total:.0f} ms:")
            print(place)
        if self.busy:
            print(f"\nwhere the loop thread ran, every {self.tick / 2 * 1000:g} ms (samples):")
            for place, count in self.busy.most_common(15):
                print(f"{count:5d} {place.strip()}")
        if self.others:
            print("\nwhat the other threads were doing while the loop waited for the GIL (samples):")
            for place, count in self.others.most_common(8):
                print(f"{count:5d} {place.strip()}")


IDLE = {"select", "poll", "_read_from_self", "wait", "_worker", "get", "run_forever", "_watch", "accept"}


def _idle(frame: Any) -> bool:
    return frame.f_code.co_name in IDLE


GIL = "  (not on the loop: the loop thread waits for the GIL)"


def _where(frame: Any, depth: int = 6) -> str:
    stack = traceback.extract_stack(frame)
    ours = [f for f in stack if f.filename.startswith(str(REPO)) and "/.venv/" not in f.filename]
    keep = ours[-depth:] + ([stack[-1]] if stack and (not ours or stack[-1] is not ours[-1]) else [])
    return "\n".join(f"  {Path(f.filename).name}:{f.lineno} {f.name}: {f.line}" for f in keep)


async def player(ft: FakeThread, user: InjectedUser, note: bytes, count: int) -> None:
    fake = ft.fake
    for _ in range(count):
        message = await ft.call(fake.send_note(user, note))
        replies = await ft.call(
            fake.wait_for(lambda _, m=message: (r := fake.replies_to(m["id"])) and len(r) >= 2 and r, 600)
        )
        ANSWERS[f"{len(note) // 1000} kB note: {replies[-1].content[:70]!r}"] += 1


async def visitor(base: str, note: bytes, index: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(base + "/") as page:
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
        form = aiohttp.FormData()
        form.add_field("player", "111111111111111111")
        form.add_field("audio", note, filename="note.ogg", content_type="audio/ogg")
        headers = {"X-CSRF-Token": csrf[1] if csrf else ""}
        async with session.post(base + "/playground/ask", data=form, headers=headers) as answer:
            body = await answer.json()
            print(f"  web visitor {index}: {answer.status} {str(body.get('error') or body.get('kind'))[:60]}")
            if url := body.get("audio_url"):
                async with session.get(base + url) as audio:
                    await audio.read()


def spoken_notes(long_seconds: float) -> tuple[list[bytes], bytes]:
    """The sample voice notes (real speech), and one long note of them said over and over."""
    from bot.audio import MODEL_RATE, decode
    from bot.config import AudioSettings
    from bot.paths import SAMPLES

    samples = [p.read_bytes() for p in sorted(Path(str(SAMPLES)).glob("*.ogg"))]
    limits = AudioSettings()
    speech = np.concatenate([np.frombuffer(decode(s, limits).segment.raw_data, np.int16) for s in samples])
    repeats = int(long_seconds * MODEL_RATE // len(speech)) + 1
    return samples, encode(np.tile(speech, repeats)[: int(long_seconds * MODEL_RATE)], MODEL_RATE, "ogg")


async def web_probe(base: str, path: str, worst: dict[str, float], stop: asyncio.Event) -> None:
    """GET `path` every 100 ms until `stop`; the slowest answer into worst[path]."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            began = time.perf_counter()
            async with session.get(base + path) as answer:
                await answer.read()
            worst[path] = max(worst.get(path, 0.0), time.perf_counter() - began)
            await asyncio.sleep(0.1)


async def main(args: argparse.Namespace) -> None:
    if args.spoken:
        shorts, long = spoken_notes(args.long_seconds)
    else:
        shorts, long = (
            [encode(speechlike(args.short_seconds), 48_000, "ogg")],
            encode(speechlike(args.long_seconds), 48_000, "ogg"),
        )
    short = shorts[0]
    with tempfile.TemporaryDirectory(prefix="voxdesk-stalls-") as tmp:
        environ = {"VOXDESK_STORAGE_DIR": tmp, "VOXDESK_AGENT_FALLBACK": "apology"}
        ft = FakeThread()
        openai_fake: FakeOpenAI | None = None
        if args.engine == "openai":
            openai_fake = ft.call_sync(FakeOpenAI().start())
            environ |= {
                "VOXDESK_AGENT_ENGINE": "openai",
                "VOXDESK_OPENAI_BASE_URL": openai_fake.base_url,
                "OPENAI_API_KEY": API_KEY,
            }
        elif args.engine == "offline":
            environ |= {"VOXDESK_OFFLINE_VOICE": "en-us", "VOXDESK_OFFLINE_WORKERS": str(args.workers)}
        if args.web:
            environ |= {"VOXDESK_WEB_ENABLED": "true", "VOXDESK_WEB_PORT": str(args.web_port)}
        base = load_settings(REPO / "config.toml", environ=environ)
        await initialise(base, speech=args.engine == "offline")
        try:
            settings = discord_settings(base, ft.fake, flood_notes=100_000, flood_seconds=1.0)
            if args.web:
                settings = settings.replace(web={"playground_turns": 4, "playground_notes": 100})
            stop = asyncio.Event()
            started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            engine = (
                FrontendEngine(use_tools=True, reply_seconds=args.reply_seconds)
                if args.engine == "frontend"
                else None
            )
            loop = asyncio.get_running_loop()
            if args.debug:
                loop.set_debug(True)
                loop.slow_callback_duration = args.threshold
            bot_task = asyncio.create_task(serve(settings, TOKEN, stop=stop, engine=engine, started=started))
            bot = await asyncio.wait_for(started, 300)
            await asyncio.wait_for(bot.wait_until_ready(), 300)
            await player(ft, InjectedUser(700000000000000999, "warm"), short, 1)  # imports, codecs, pages
            watch = StallWatch(args.threshold)
            watch.profile = args.profile
            watch.start()
            began = time.perf_counter()
            players = [InjectedUser(700000000000000000 + i, f"p{i}") for i in range(args.players)]
            work = [
                player(ft, p, long if i % 2 else shorts[i // 2 % len(shorts)], args.notes)
                for i, p in enumerate(players)
            ]
            base_url = f"http://127.0.0.1:{args.web_port}"
            work += [visitor(base_url, long if i % 2 else short, i) for i in range(args.web)]
            probing, worst = asyncio.Event(), {}
            probes = [
                asyncio.create_task(web_probe(base_url, path, worst, probing))
                for path in (("/static/style.css", "/healthz") if args.web else ())
            ]
            await asyncio.gather(*work)
            probing.set()
            await asyncio.gather(*probes)
            wall = time.perf_counter() - began
            await watch.stop()
            print(
                f"engine={args.engine} players={args.players} x{args.notes} web={args.web} "
                f"short={args.short_seconds}s long={args.long_seconds}s: {wall:.1f} s"
            )
            watch.report()
            for path, seconds in worst.items():
                print(f"web GET {path} every 100 ms during the raid: slowest {seconds * 1000:.0f} ms")
            print("\nanswers:", *(f"{n:3d} {a}" for a, n in ANSWERS.most_common()), sep="\n  ")
            assert not ft.fake.violations, ft.fake.violations
            stop.set()
            await bot_task
        finally:
            if openai_fake is not None:
                ft.call_sync(openai_fake.stop())
            ft.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=("frontend", "openai", "offline"), default="frontend")
    parser.add_argument("--players", type=int, default=20)
    parser.add_argument("--notes", type=int, default=1, help="notes per player, one after another")
    parser.add_argument("--short-seconds", type=float, default=3.0)
    parser.add_argument("--long-seconds", type=float, default=100.0)
    parser.add_argument("--reply-seconds", type=float, default=20.0, help="the instant engine's replies")
    parser.add_argument("--workers", type=int, default=1, help="offline speech workers")
    parser.add_argument("--web", type=int, default=0, help="playground uploads sent with the raid")
    parser.add_argument("--web-port", type=int, default=18087)
    parser.add_argument(
        "--spoken", action="store_true", help="real speech: the sample notes, said over and over"
    )
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--profile", action="store_true", help="also sample where the loop thread runs")
    parser.add_argument("--debug", action="store_true", help="also asyncio debug mode (slow)")
    asyncio.run(main(parser.parse_args()))
