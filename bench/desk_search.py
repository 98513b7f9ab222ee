"""The support desk's search over many tickets: one count and one page, as /desk?q= asks, against
the same search with every description folded in Python and with SQLite's ASCII-only LIKE, in the
same run on the same database.

    python bench/desk_search.py [--tickets 50000] [--rounds 5]

`--tickets` grievances (one in ten with a word outside ASCII, as a community in several languages
writes) are seeded into a temporary grievances.db; each search is timed as the median of
`--rounds` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.tools import grievance_store
from bot.tools.grievance_store import LocalGrievanceStore

WORDS = "refund charged twice lost coins crash login battle pass skin missing gems".split()
ELSEWHERE = ["Écran noir", "MÜNZEN weg", "деньги пропали", "İADE istiyorum", "Straße"]
SEARCHES = ["refund", "charged twice", "écran", "GRV-77", "nothing-matches"]

ALL_IN_PYTHON = "instr(folded(description), ?) > 0 AND ? IS NOT NULL"
ASCII_LIKE = "description LIKE '%' || ? || '%' AND ? IS NOT NULL"


async def timed(store: LocalGrievanceStore, search: str, rounds: int) -> float:
    took = []
    for _ in range(rounds):
        start = time.perf_counter()
        await store.staff_count(search=search)
        await store.staff_list(search=search, limit=100)
        took.append(time.perf_counter() - start)
    return statistics.median(took)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        store = await LocalGrievanceStore.open(Path(folder) / "grievances.db")
        try:
            at = "2026-01-01T00:00:00Z"
            rows = []
            for n in range(args.tickets):
                words = rng.sample(WORDS, 6)
                if n % 10 == 0:
                    words.append(rng.choice(ELSEWHERE))
                rows.append(
                    {"key": f"GRV-{n}", "user_id": str(100 + n % 997), "category": "wallet"}
                    | {"description": " ".join(words).capitalize(), "status": "open"}
                    | {"created_at": at, "updated_at": at}
                )
            await store.seed(rows)
            print(f"{args.tickets} tickets, median of {args.rounds} (count + a page of 100), ms")
            print(f"{'search':<18}{'desk':>8}{'all folded':>12}{'LIKE':>8}  desk/all-folded")
            shipped = grievance_store.DESCRIBED
            for search in SEARCHES:
                figures = []
                for described in (shipped, ALL_IN_PYTHON, ASCII_LIKE):
                    grievance_store.DESCRIBED = described
                    await timed(store, search, 1)  # the pages it reads, into the cache alike
                    figures.append(await timed(store, search, args.rounds) * 1000)
                grievance_store.DESCRIBED = shipped
                desk, folded, like = figures
                print(f"{search:<18}{desk:>8.0f}{folded:>12.0f}{like:>8.0f}  {desk / folded:.2f}x")
        finally:
            await store.aclose()


if __name__ == "__main__":
    asyncio.run(main())
