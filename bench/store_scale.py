"""Queries of a big community's stores, each with the index that serves it and without (the
index dropped), in the same run on the same database.

    python bench/store_scale.py [--scale 1.0] [--rounds 5]

Each store is made by its own `open` in a temporary folder, then filled: at scale 1, a month of
1M notes (one in 30 past the prune's cutoff), 500k pieces of ticket news (200k players, each
piece its ticket's newest, kept for ever) and 300k grievances (2% of them open). Each query is
timed as the median of `--rounds` runs; "ratio" is without / with.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import note_ledger, ticket_news
from bot.note_ledger import NoteLedger
from bot.ticket_news import NewsStore
from bot.tools import grievance_store
from bot.tools.grievance_store import LocalGrievanceStore

PLAYERS = 200_000
DAY = 86400.0


async def made(folder: Path) -> None:
    await (await NoteLedger.open(folder / "notes.db")).aclose()
    await (await NewsStore.open(folder / "news.db")).aclose()
    await (await LocalGrievanceStore.open(folder / "grievances.db")).aclose()


def fill_notes(conn: sqlite3.Connection, n: int, now: float) -> float:
    span = 31 * DAY
    conn.executemany(
        "INSERT INTO notes (message_id, place_id, user_id, state, updated_at) VALUES (?, ?, ?, ?, ?)",
        (
            (i, i % 5000, f"u{i % PLAYERS}", "answered" if i % 50 else "expired", now - span + i * span / n)
            for i in range(n)
        ),
    )
    return now - note_ledger.KEEP_SETTLED_SECONDS


def fill_news(conn: sqlite3.Connection, n: int) -> None:
    conn.executemany(
        "INSERT INTO news (user_id, source, ticket, kind, status, text, state, found_at)"
        " VALUES (?, 'jira', ?, 'status', 'resolved', ?, 'sent', '2025-06-01T00:00:00+00:00')",
        ((f"u{i % PLAYERS}", f"GRV-{i}", f"Your ticket GRV-{i} is now resolved.") for i in range(n)),
    )


def fill_grievances(conn: sqlite3.Connection, n: int) -> None:
    rng = random.Random(1)
    conn.executemany(
        "INSERT INTO grievances (local_key, user_id, category, description, status, created_at,"
        " updated_at, push_state) VALUES (?, ?, ?, 'charged twice for gems', ?, ?, ?, 'pushed')",
        (
            (
                f"GRV-{i}",
                f"u{i % PLAYERS}",
                rng.choice(["wallet", "account", "bug", "other"]),
                "open" if i % 50 == 0 else "resolved",
                f"2025-{1 + i * 12 // n:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
                "2025-12-31T00:00:00Z",
            )
            for i in range(n)
        ),
    )


def timed(conn: sqlite3.Connection, sql: str, args: Sequence[Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        conn.execute(sql, args).fetchall()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(
    conn: sqlite3.Connection, index: str, queries: dict[str, tuple[str, Sequence[Any]]], rounds: int
) -> None:
    (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (index,)).fetchone()
    with_index = {label: timed(conn, sql, args, rounds) for label, (sql, args) in queries.items()}
    conn.execute(f"DROP INDEX {index}")
    unnamed = f" INDEXED BY {index}"  # a query that names the index, as it ran before it
    without = {label: timed(conn, sql.replace(unnamed, ""), a, rounds) for label, (sql, a) in queries.items()}
    conn.execute(ddl)
    conn.commit()
    for label in queries:
        a, b = without[label] * 1000, with_index[label] * 1000
        print(f"  {label:<44} without {a:8.2f} ms   with {b:7.2f} ms   ratio {a / b:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    scaled: Callable[[int], int] = lambda n: max(1000, int(n * opts.scale))  # noqa: E731
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="voxdesk-scale-") as name:
        folder = Path(name)
        asyncio.run(made(folder))

        with sqlite3.connect(folder / "notes.db") as conn:
            cutoff = fill_notes(conn, scaled(1_000_000), now)
            conn.commit()
            settled = note_ledger.SETTLED_BEFORE.replace("DELETE", "SELECT COUNT(*)", 1)
            print(f"notes.db, {scaled(1_000_000)} notes: notes_by_age")
            queries = {
                "prune's WHERE (as a COUNT)": (settled, (cutoff,)),
                "a place's newest note answered": (note_ledger.LAST_HANDLED, (7, now)),
            }
            compare(conn, "notes_by_age", queries, opts.rounds)

        with sqlite3.connect(folder / "news.db") as conn:
            fill_news(conn, scaled(500_000))
            conn.commit()
            prune = f"SELECT COUNT(*) FROM news WHERE found_at < ? AND {ticket_news.SUPERSEDED}"
            print(f"news.db, {scaled(500_000)} pieces of news: news_by_user")
            queries = {
                "told(player), the desk's ticket page": (ticket_news.TOLD, ("u777",)),
                "prune's WHERE (as a COUNT)": (prune, ("2026-01-01",)),
            }
            compare(conn, "news_by_user", queries, opts.rounds)

        with sqlite3.connect(folder / "grievances.db") as conn:
            fill_grievances(conn, scaled(300_000))
            conn.commit()
            where, args = grievance_store._staff_where("open", None, None, None, "")
            page = grievance_store.STAFF_PAGE.format(where=where, order="created_at DESC, id DESC")
            print(f"grievances.db, {scaled(300_000)} grievances: grievances_by_status")
            queries = {
                "desk page, status open": (page, (*args, 50, 0)),
                "desk count, status open": (grievance_store.STAFF_COUNT.format(where=where), args),
            }
            compare(conn, "grievances_by_status", queries, opts.rounds)


if __name__ == "__main__":
    main()
