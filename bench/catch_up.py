"""A start's catch-up with many DMs known: its requests, and when each note sent while the bot
was down is answered, against the catch-up of an older commit in the same run.

    python bench/catch_up.py [--dms 300] [--latency 0.05,0.1] [--old 5f31c49]

The ledger knows `--dms` DMs (Discord cannot list a bot's DMs: each costs a read), each heard
from a day apart. While the bot was down, three notes were sent: in the DM heard from last, in
the configured channel, and in the DM heard from longest ago. The fake Discord (on its own thread)
answers each history read `--latency` seconds late, as a round trip to Discord takes. Times are
from the catch-up's first request; "reads/s" is the most history reads in any one second (Discord
allows 50 requests a second in all, answers included).

The baseline, "old": `CatchUp._catch_up` as it is at `--old` (by default the commit before reads
were ordered and paced: every place read one after another in the order of its id, unpaced,
and the notes found answered once all are read), taken from git and run in today's bot in place
of today's `_catch_up`; the helpers it calls (`_channel`, `_sort`, `_within_flood_limit`, ...)
and the ledger are today's. It lists the DMs with `NoteLedger.places("dm")`, a read the ledger
no longer has: the bench gives the old code that read, the same rows of the same table (see
`_places`). Any failure of the measured catch-up ends the run with it, not with a wait for
answers that never come.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import FakeThread

from bot.config import load_settings
from bot.note_ledger import NoteLedger
from bot.seed import initialise
from cogs import catch_up
from cogs.runner import serve
from tests.audio_samples import encode, speechlike
from tests.discord_harness import discord_settings
from tests.fakes.discord_server import TOKEN, InjectedUser
from tests.frontend_engine import FrontendEngine

REPO = Path(__file__).resolve().parent.parent
READS = ("history", "get_channel", "archived_threads", "active_threads")


def old_catch_up(rev: str) -> Any:
    """`CatchUp._catch_up` as it was at `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:cogs/catch_up.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("cogs.catch_up_old")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{rev}:cogs/catch_up.py", "exec"), module.__dict__)
    return module.CatchUp._catch_up


async def _places(ledger: NoteLedger, kind: str) -> list[int]:
    """`NoteLedger.places(kind)` as the old catch-up calls it: the ids of the places of that kind,
    from the ledger's places table, which keeps the rows it read. Old code asks only for DMs,
    which `dms()` reads; the old method's order (none) does not matter, as it takes them as a set."""
    if kind != "dm":
        raise NotImplementedError(kind)
    return [place_id for place_id, _ in await ledger.dms()]


async def run(dms: int, latency: float, note: bytes, round_: int, method: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        settings = load_settings(
            REPO / "config.toml", environ={"VOXDESK_STORAGE_DIR": tmp, "VOXDESK_AGENT_FALLBACK": "apology"}
        )
        await initialise(settings, speech=False)
        ft = FakeThread()
        try:
            fake = ft.fake
            fake.history_seconds = latency
            players = [
                InjectedUser(980_000_000_000_000_000 + round_ * 100_000 + i, f"p{i}") for i in range(dms)
            ]
            ledger = await NoteLedger.open(Path(tmp) / "notes.db")
            try:
                for i, player in enumerate(players):  # players[0] heard from last
                    await ledger.remember_place(
                        fake.known_dm(player), "dm", str(player.id), now=time.time() - (i + 1) * 86400.0
                    )
            finally:
                await ledger.aclose()
            sent = {
                "DM heard last": await ft.call(fake.send_note(players[0], note)),
                "channel": await ft.call(fake.send_note(players[1], note, guild=True)),
                "DM heard first": await ft.call(fake.send_note(players[-1], note)),
            }
            before = len(fake.received)
            settings = discord_settings(settings, fake)
            stop = asyncio.Event()
            started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            engine = FrontendEngine(use_tools=False, reply_seconds=1.0)
            task = asyncio.create_task(serve(settings, TOKEN, stop=stop, engine=engine, started=started))
            bot = await asyncio.wait_for(started, 60)
            # Logged in, the cogs loaded afresh (discord.py execs each extension anew), not yet
            # connected: the catch-up begins at READY.
            cog = bot.get_cog("CatchUp")
            failures: list[Exception] = []

            async def measured(self: Any, *args: Any, **kwargs: Any) -> None:
                try:
                    await method(self, *args, **kwargs)
                except Exception as exc:
                    failures.append(exc)
                    raise

            cog._catch_up = types.MethodType(measured, cog)
            if method is not catch_up.CatchUp._catch_up and not hasattr(bot.core.notes, "places"):
                bot.core.notes.places = types.MethodType(_places, bot.core.notes)
            await asyncio.wait_for(bot.wait_until_ready(), 60)
            await asyncio.wait_for(bot.get_cog("CatchUp").caught_up.wait(), 600)
            if failures:
                # Retried at each recheck, it would fail alike: no note would be answered.
                stop.set()
                await task
                raise RuntimeError("the measured catch-up failed") from failures[0]
            notes = list(sent.values())
            await ft.call(fake.wait_for(lambda _: all(fake.replies_to(n["id"]) for n in notes), 120))
            stop.set()
            await task
            received = fake.received[before:]
            reads = [r for r in received if r.kind in READS]
            history = sorted(r.at for r in received if r.kind == "history")
            t0 = reads[0].at
            peak = max(sum(1 for t in history if s <= t < s + 1.0) for s in history)
            answers = {what: fake.replies_to(n["id"])[0].at - t0 for what, n in sent.items()}
            assert not fake.violations, fake.violations
            return {"requests": len(reads), "read_s": history[-1] - t0, "peak": peak, **answers}
        finally:
            ft.close()


async def main(dms: int, latencies: list[float], rev: str) -> None:
    note = encode(speechlike(1.5), 48_000, "ogg")
    new = catch_up.CatchUp._catch_up
    old = old_catch_up(rev)
    columns = ["requests", "read_s", "peak", "DM heard last", "channel", "DM heard first"]
    print(f"{dms} DMs known, one note in each place named; times in s from the catch-up's first request")
    print(
        f"{'latency':>8} {'code':>5} {'requests':>9} {'reads end':>10} {'reads/s':>8} "
        + " ".join(f"{c:>15}" for c in columns[3:])
    )
    round_ = 0
    for latency in latencies:
        results = {}
        for name, method in (("old", old), ("new", new)):
            round_ += 1
            results[name] = r = await run(dms, latency, note, round_, method)
            print(
                f"{latency:>7g}s {name:>5} {r['requests']:>9} {r['read_s']:>9.2f}s {r['peak']:>8} "
                + " ".join(f"{r[c]:>14.2f}s" for c in columns[3:])
            )
        o, n = results["old"], results["new"]
        print(
            f"{'':>8} {'ratio':>5} {n['requests'] / o['requests']:>9.2f} {n['read_s'] / o['read_s']:>10.2f} "
            f"{n['peak'] / o['peak']:>8.2f} " + " ".join(f"{n[c] / o[c]:>15.2f}" for c in columns[3:])
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dms", type=int, default=300, help="DMs the note ledger knows")
    parser.add_argument(
        "--latency", default="0.05,0.1", help="seconds each history read takes, comma-separated"
    )
    parser.add_argument("--old", default="5f31c49", help="the commit whose catch-up is the old one")
    args = parser.parse_args()
    asyncio.run(main(args.dms, [float(x) for x in args.latency.split(",")], args.old))
