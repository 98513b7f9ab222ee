"""What the offline engine's start costs: its hearing workers loading their models, and `check`.

    python bench/worker_start.py [--rounds 5] [--workers 2] [--recognizer whisper]
                                 [--what workers|check] [--checkout DIR ...]

Each start runs in a fresh process, on embedded defaults seeded into a temporary directory
(`offline.voice` en-us unless `--voice` names another), as `voxdesk check` and `run` would start it:

- workers: `WorkerHearing.start()`, the recogniser (`--recognizer`: whisper, tiny.en; or
  pocketsphinx) and whatever else each worker loads, until every worker has answered;
- check: `check_offline_engine`, the offline line of `voxdesk check` (the workers, the reply
  voice, the meaning model in the bot's process, one word spoken).

Reported per start: wall time, CPU of the process itself and of its workers (their rusage once
they have exited), and the largest worker's peak RSS. `--checkout` measures other checkouts of
voxdesk (such as `git archive` of an older commit, unpacked) beside this one, round by round in
turn, so a busy spell on a shared machine falls on each alike; each checkout runs with this
interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _usage() -> tuple[float, float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime, children.ru_maxrss / 1024


async def _one(what: str, storage: Path, workers: int, recognizer: str, voice: str) -> dict[str, float]:
    from bot.config import load_settings
    from bot.engines.offline import engine
    from bot.engines.offline.hearing import WorkerHearing, vote_meaning

    environ = {
        "VOXDESK_STORAGE_DIR": str(storage),
        "VOXDESK_OFFLINE_WORKERS": str(workers),
        "VOXDESK_OFFLINE_RECOGNIZER": recognizer,
        "VOXDESK_OFFLINE_VOICE": voice,
    }
    settings = load_settings(Path.cwd() / "config.toml", environ=environ)
    own, children, _ = _usage()
    started = time.perf_counter()
    if what == "check":
        await engine.check_offline_engine(settings)
    else:
        spec = engine.whisper_spec(settings) if recognizer == "whisper" else None
        meaning = vote_meaning(settings.offline.meaning_model, pocketsphinx=spec is None)
        hearing = WorkerHearing(engine.speech_dir(settings), workers, spec, meaning)
        try:
            await hearing.start()
            wall = time.perf_counter() - started
        finally:
            await hearing.aclose()
    if what == "check":
        wall = time.perf_counter() - started
    own_after, children_after, peak = _usage()
    return {"wall": wall, "cpu": own_after - own, "workers_cpu": children_after - children, "peak_mb": peak}


def _seeded(storage: Path) -> None:
    from bot.config import load_settings
    from bot.seed import initialise

    environ = {"VOXDESK_STORAGE_DIR": str(storage)}
    asyncio.run(initialise(load_settings(Path.cwd() / "config.toml", environ=environ)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recognizer", choices=("whisper", "pocketsphinx"), default="whisper")
    parser.add_argument("--voice", default="en-us")
    parser.add_argument("--what", choices=("workers", "check"), default="workers")
    parser.add_argument("--checkout", action="append", default=[], type=Path)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a child's storage folder
    parser.add_argument("--seed", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed:
        _seeded(args.seed)
        return
    if args.one:
        figures = asyncio.run(_one(args.what, args.one, args.workers, args.recognizer, args.voice))
        print(json.dumps(figures))
        return
    checkouts = [c.resolve() for c in args.checkout] + [ROOT]
    results: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "var"
        subprocess.run([sys.executable, __file__, "--seed", str(storage)], cwd=ROOT, check=True)
        for _ in range(args.rounds):
            for checkout in checkouts:
                child = [sys.executable, __file__, "--one", str(storage), "--what", args.what]
                child += ["--workers", str(args.workers), "--recognizer", args.recognizer]
                child += ["--voice", args.voice]
                env = {**os.environ, "PYTHONPATH": str(checkout)}
                done = subprocess.run(
                    child, cwd=checkout, env=env, capture_output=True, text=True, check=True
                )
                results[checkout].append(json.loads(done.stdout.splitlines()[-1]))
    print(
        f"{args.what}: {args.workers} worker(s), {args.recognizer}, voice {args.voice}, "
        f"{args.rounds} rounds; median (min-max)"
    )
    for checkout, rows in results.items():
        cells = []
        for key, unit in (("wall", "s"), ("cpu", "s"), ("workers_cpu", "s"), ("peak_mb", "MB")):
            values = [row[key] for row in rows]
            low, high = min(values), max(values)
            cells.append(f"{key} {statistics.median(values):.2f} ({low:.2f}-{high:.2f}) {unit}")
        print(f"{checkout}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
