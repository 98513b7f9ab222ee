"""Resident memory across raids of voice notes: does the bot process's RSS settle, and what bounds it?

    python bench/memory.py [--raids 5] [--notes 40] [--players 8] [--passes 1]

Each variant runs in a process of its own (MALLOC_ARENA_MAX is read once, as the process starts),
on embedded defaults seeded into a temporary directory, through the whole offline agent as
bench/offline.py's `+cache` row drives it (decode, hear in worker processes, route, tools, speak,
encode). After a warm-up raid it answers `--raids` raids of `--notes` notes from `--players`
players at once; after each raid it waits `--settle` seconds (past the idle trim's wait) and
reads the process's VmRSS (anonymous and file-backed; the anonymous part by kind of mapping),
glibc's own count of what malloc holds, hands out and keeps free (mallinfo2), its
thread count and the hearing workers' summed RSS; with `--traced`, also the Python objects'
memory (tracemalloc, started after the warm-up).

Variants, taking turns pass by pass (the second pass in reverse order), so a busy spell on a
shared machine falls on each alike:

- base: glibc's defaults, the idle trim switched off (the bot before it trimmed);
- arena2: MALLOC_ARENA_MAX=2 in the environment (glibc makes at most two malloc arenas instead of
  eight per core, so the threads' freed memory is pooled in fewer heaps);
- trim: the bot's idle trim (bot/heap.py): malloc_trim(0) once no turn has run or waited for
  `IDLE_SECONDS` (glibc hands every arena's free pages back); the other variants switch it off;
- arena2+trim: both.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.heap import IDLE_SECONDS

ROOT = Path(__file__).resolve().parent.parent

VARIANTS: dict[str, tuple[dict[str, str], bool]] = {
    "base": ({}, False),
    "arena2": ({"MALLOC_ARENA_MAX": "2"}, False),
    "trim": ({}, True),
    "arena2+trim": ({"MALLOC_ARENA_MAX": "2"}, True),
}


def status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (kB) and Threads of a process, from /proc."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


HEAP_MAX = 64 * 2**20  # glibc's threads' arenas are heaps of this size, aligned to it


def anon_where() -> dict[str, float]:
    """The process's anonymous resident memory (MB) by kind of mapping, from /proc/self/smaps:
    the main arena ([heap]), the threads' arenas (mappings at a 64 MB boundary), Python's own
    arenas for small objects (1 MB or 256 KB; neighbours the kernel merged count as the rest), and
    the rest (large allocations malloc maps one by one, native libraries' own maps, stacks)."""
    where = {"main_arena": 0.0, "thread_arenas": 0.0, "pymalloc": 0.0, "other": 0.0}
    name, size, kind = "", 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            start = int(head[0].split("-")[0], 16)
            name = head[5] if len(head) > 5 else ""
            kind = None
            if name == "[heap]":
                kind = "main_arena"
            elif not name:
                kind = "thread_arenas" if start % HEAP_MAX == 0 else "unsized"
        elif head and head[0] == "Size:":
            size = int(head[1])
        elif head and head[0] == "Anonymous:" and kind is not None:
            if kind == "unsized":
                kind = "pymalloc" if size in (256, 1024) else "other"
            where[kind] += int(head[1]) / 1024
    return where


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def malloc_figures(libc: ctypes.CDLL) -> dict[str, float]:
    """glibc's own count over every arena (MB): what malloc has from the system, what of it is
    handed out, what is free and kept; empty where the C library has no mallinfo2."""
    try:
        mallinfo2 = libc.mallinfo2
    except AttributeError:
        return {}
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return {
        "malloc_mb": (info.arena + info.hblkhd) / 2**20,
        "in_use_mb": (info.uordblks + info.hblkhd) / 2**20,
        "free_mb": info.fordblks / 2**20,
    }


async def measure(trim: bool, raids: int, notes: int, players: int, settle: float, traced: bool) -> None:
    from bench.offline import raid, set_mode
    from bot.app import running_app
    from bot.config import load_settings
    from bot.seed import initialise

    libc = ctypes.CDLL("libc.so.6")
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        settings = load_settings(
            ROOT / "config.toml",
            environ={"VOXDESK_STORAGE_DIR": tmp, "VOXDESK_AGENT_FALLBACK": "apology"},
        )
        await initialise(settings)
        async with running_app(settings) as app:
            set_mode(app, "+cache")
            await raid(app, 2, 6)  # imports, codecs, SQLite, the ONNX session's first runs

            def row(label: str, **more: float) -> None:
                pool = app.agent.engine.hearing._pool  # type: ignore[attr-defined]
                workers = 0
                for pid in list(getattr(pool, "_processes", {}) or {}):
                    try:
                        workers += status(pid)["VmRSS"]
                    except (OSError, KeyError):
                        pass
                mine = status()
                python_bytes, _ = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
                print(
                    json.dumps(
                        {
                            "at": label,
                            "rss_mb": mine["VmRSS"] / 1024,
                            "anon_mb": mine["RssAnon"] / 1024,
                            "file_mb": mine["RssFile"] / 1024,
                            **malloc_figures(libc),
                            **anon_where(),
                            "threads": mine["Threads"],
                            "traced_mb": python_bytes / 2**20,
                            "workers_mb": workers / 1024,
                            **more,
                        }
                    ),
                    flush=True,
                )

            # The agent's own idle hook trims (bot/heap.py); the variants without it switch it off.
            trims: list[float] = []
            idle = app.agent.idle_trim
            if trim and idle.trim is not None:
                trim_heap = idle.trim

                def timed_trim() -> None:
                    started = time.perf_counter()
                    trim_heap()
                    trims.append((time.perf_counter() - started) * 1000)

                idle.trim = timed_trim
            else:
                idle.trim = None
            await asyncio.sleep(settle)
            if traced:
                tracemalloc.start()
            row("warm", trim_ms=max(trims, default=0.0), trims=len(trims))
            for i in range(raids):
                trims.clear()
                result = await raid(app, players, notes)
                await asyncio.sleep(settle)
                row(
                    f"raid {i + 1}",
                    notes=len(result["timings"]),
                    notes_per_s=len(result["timings"]) / result["wall"],
                    cpu_per_note=result["cpu"] / len(result["timings"]),
                    others=result["others"],
                    trim_ms=max(trims, default=0.0),
                    trims=len(trims),
                )


def run_variant(name: str, args: argparse.Namespace) -> list[dict[str, float]]:
    env_extra, _ = VARIANTS[name]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    command = [
        sys.executable,
        __file__,
        "--variant",
        name,
        "--raids",
        str(args.raids),
        "--notes",
        str(args.notes),
        "--players",
        str(args.players),
        "--settle",
        str(args.settle),
        *(["--traced"] if args.traced else []),
    ]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or len(rows) != args.raids + 1:
        sys.exit(f"{name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    for r in rows:
        print(
            f"  {name:<12} {r['at']:<8} RSS {r['rss_mb']:6.1f} MB (anon {r['anon_mb']:6.1f}, file "
            f"{r['file_mb']:5.1f}); malloc holds {r.get('malloc_mb', 0):6.1f}, in use "
            f"{r.get('in_use_mb', 0):6.1f}, free {r.get('free_mb', 0):5.1f}; threads {r['threads']:3d}; "
            f"{r.get('notes_per_s', 0):.2f} notes/s, {r.get('cpu_per_note', 0):.2f} CPU s a note; "
            f"trim {r['trim_ms']:.0f} ms; anon: main arena {r['main_arena']:.0f}, threads' arenas "
            f"{r['thread_arenas']:.0f}, pymalloc {r['pymalloc']:.0f}, other {r['other']:.0f}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--raids", type=int, default=5)
    parser.add_argument("--notes", type=int, default=40, help="notes per raid")
    parser.add_argument("--players", type=int, default=8, help="players sending at once")
    parser.add_argument(
        "--settle",
        type=float,
        default=IDLE_SECONDS + 2,
        help="seconds after a raid before reading (past the idle trim's wait)",
    )
    parser.add_argument("--passes", type=int, default=1, help="passes over the variants")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument(
        "--traced",
        action="store_true",
        help="also tracemalloc (slower, and its tables are resident too)",
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        _, trim = VARIANTS[args.variant]
        asyncio.run(measure(trim, args.raids, args.notes, args.players, args.settle, args.traced))
        return
    names = args.only.split(",")
    runs: dict[str, list[list[dict[str, float]]]] = {n: [] for n in names}
    for p in range(args.passes):
        for name in names if p % 2 == 0 else reversed(names):
            runs[name].append(run_variant(name, args))
    print()
    print(
        f"command: python bench/memory.py {' '.join(sys.argv[1:])}; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    labels = [r["at"] for r in runs[names[0]][0]]
    print(
        f"| variant | pass | {' | '.join(labels)} | grown | malloc in use / free, last | notes/s | "
        "CPU s/note | threads | workers | trim |"
    )
    print("| --- | --- |" + " --- |" * (len(labels) + 7))
    for name in names:
        for p, rows in enumerate(runs[name]):
            raids = rows[1:]
            last = rows[-1]
            cells = " | ".join(f"{r['rss_mb']:.0f}" for r in rows)
            traced = f" (traced {last['traced_mb']:.1f})" if args.traced else ""
            print(
                f"| {name} | {p + 1} | {cells} | {last['rss_mb'] - rows[0]['rss_mb']:+.0f} MB | "
                f"{last.get('in_use_mb', 0):.0f} / {last.get('free_mb', 0):.0f} MB{traced} | "
                f"{statistics.mean(r['notes_per_s'] for r in raids):.2f} | "
                f"{statistics.mean(r['cpu_per_note'] for r in raids):.2f} | {last['threads']} | "
                f"{last['workers_mb']:.0f} MB | {max(r['trim_ms'] for r in rows):.0f} ms |"
            )
    print("(RSS in MB of the bot process after the warm-up raid and after each raid; malloc: glibc's")
    print("mallinfo2 over every arena; CPU: the bot's and its hearing workers'; workers: their summed RSS)")


if __name__ == "__main__":
    main()
