"""The playground under load: voice notes uploaded over HTTP against the same turns in-process.

    python bench/web.py [--notes N] [--uploaders 1,10]

On embedded defaults seeded into a temporary directory, with the real offline engine, the six
sample notes are answered by N players at once (one player per uploader: a player's own notes
are answered one at a time, as on Discord), two ways in the same run:

- web: each uploader is a browser's worth of client (its own cookie session and CSRF token)
  posting multipart uploads to /playground/ask on a real socket, then fetching the reply audio;
- cli: `voxdesk ask`'s path, `app.agent.respond` called in-process on the same bytes (the
  baseline: everything but HTTP).

Also /metrics scraped every 100 ms while ten uploaders are busy: how long a scrape takes when
Prometheus asks during load. The playground's per-client rate limit (every uploader is
127.0.0.1), its own turns and its ceiling of notes a minute are raised for the run: the agent's
turns are what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e import pct
from bot import paths
from bot.app import App, running_app
from bot.config import load_settings
from bot.seed import initialise
from bot.tools.base import ToolContext
from bot.web import bound_port, start
from bot.web.playground import DEMO_PLAYERS

REPO = Path(__file__).resolve().parent.parent
NOTES = [p.read_bytes() for p in sorted(paths.SAMPLES.glob("*.ogg"))]
CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


async def cli_uploader(app: App, user_id: str, count: int, out: list[float]) -> None:
    context = ToolContext(user_id=user_id, platform="cli")
    for i in range(count):
        started = time.perf_counter()
        await app.agent.respond(context, NOTES[i % len(NOTES)])
        out.append(time.perf_counter() - started)


async def web_uploader(base: str, user_id: str, count: int, out: list[float]) -> None:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(base, cookie_jar=jar) as http:
        token = CSRF.search(await (await http.get("/")).text()).group(1)  # type: ignore[union-attr]
        for i in range(count):
            form = aiohttp.FormData()
            form.add_field("player", user_id)
            form.add_field("audio", NOTES[i % len(NOTES)], filename="note.ogg", content_type="audio/ogg")
            started = time.perf_counter()
            answer = await http.post("/playground/ask", data=form, headers={"X-CSRF-Token": token})
            body = await answer.json()
            if answer.status != 200:
                raise RuntimeError(f"{answer.status}: {body}")
            await (await http.get(body["audio_url"])).read()
            out.append(time.perf_counter() - started)


async def scraper(base: str, stop: asyncio.Event, out: list[float]) -> None:
    async with aiohttp.ClientSession(base) as http:
        while not stop.is_set():
            started = time.perf_counter()
            await (await http.get("/metrics")).read()
            out.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)


async def row(way: str, uploaders: int, notes: int, app: App, base: str, scrapes: list[float] | None):
    per = max(1, notes // uploaders)
    timings: list[float] = []
    stop = asyncio.Event()
    scraping = asyncio.create_task(scraper(base, stop, scrapes)) if scrapes is not None else None
    started = time.perf_counter()
    if way == "web":
        jobs = [web_uploader(base, DEMO_PLAYERS[i], per, timings) for i in range(uploaders)]
    else:
        jobs = [cli_uploader(app, DEMO_PLAYERS[i], per, timings) for i in range(uploaders)]
    await asyncio.gather(*jobs)
    wall = time.perf_counter() - started
    stop.set()
    if scraping is not None:
        await scraping
    return {"n": len(timings), "rate": len(timings) / wall, "p50": pct(timings, 50), "p95": pct(timings, 95)}


async def main(notes: int, counts: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        env = {
            "VOXDESK_STORAGE_DIR": tmp,
            "VOXDESK_AGENT_FALLBACK": "apology",
            "VOXDESK_WEB_PLAYGROUND_NOTES": "100000",
            "VOXDESK_WEB_PLAYGROUND_TURNS": "1000",
            "VOXDESK_WEB_PLAYGROUND_NOTES_PER_MINUTE": "100000",
        }
        settings = load_settings(REPO / "config.toml", environ=env)
        await initialise(settings)
        async with running_app(settings) as app:
            runner = await start(app, port=0)
            base = f"http://127.0.0.1:{bound_port(runner)}"
            try:
                await row("cli", 2, len(NOTES), app, base, None)  # warm: imports, codecs, workers
                await row("web", 2, len(NOTES), app, base, None)
                results, scrapes = {}, []
                for n in counts:
                    for way in ("web", "cli"):
                        wanted = scrapes if (way == "web" and n == max(counts)) else None
                        results[way, n] = await row(way, n, max(notes, n), app, base, wanted)
                idle: list[float] = []
                stop = asyncio.Event()
                task = asyncio.create_task(scraper(base, stop, idle))
                await asyncio.sleep(2.0)
                stop.set()
                await task
            finally:
                await runner.cleanup()
    print("the six sample notes through the offline agent; web = HTTP upload + reply audio fetch")
    print("uploaders  path  notes  notes/s     p50     p95")
    for n in counts:
        for way in ("web", "cli"):
            r = results[way, n]
            p50, p95 = r["p50"] * 1000, r["p95"] * 1000
            print(f"{n:>9}  {way:<4}  {r['n']:>5}  {r['rate']:>7.2f}  {p50:>4.0f} ms  {p95:>4.0f} ms")
        ratio = results["web", n]["rate"] / results["cli", n]["rate"]
        print(f"{'':>9}  web/cli throughput {ratio:.2f}x")
    for label, values in ((f"during {max(counts)} uploaders", scrapes), ("idle", idle)):
        if values:
            print(
                f"/metrics scrape {label}: {len(values)} scrapes, p50 {pct(values, 50) * 1000:.1f} ms, "
                f"p95 {pct(values, 95) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--notes", type=int, default=30, help="notes per row (default 30)")
    parser.add_argument("--uploaders", default="1,10", help="comma-separated uploader counts")
    args = parser.parse_args()
    asyncio.run(main(args.notes, [int(n) for n in args.uploaders.split(",")]))
