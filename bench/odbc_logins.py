"""A raid's stats questions on a cold ODBC pool, whose logins aioodbc makes one at a time.

    python bench/odbc_logins.py [--players 8] [--login-seconds 0.2] [--pool-size 5] [--trials 5]

Each trial opens a fresh OdbcStats (no connection yet, as after a start, or once a failover or the
gateway's idle cut closed the pool's) over the SQLite ODBC driver on the demo players, every login
taking `--login-seconds` in its thread before the driver connects (a round trip or few to Azure
SQL, TLS, authentication), and asks for `--players` summaries at once. aioodbc's pool logs in
holding its lock, and a summary's connection goes back to the pool under the same lock, so even
the first player's answer waits behind the logins queued after it. Figures: seconds from the raid
to each player's answer (first, median, last), the medians over the trials, for the pool as
voxdesk opens it (minsize 0), with aioodbc's `minsize` at the pool size, and warm (every
connection open before the raid).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyodbc

from bot import paths
from bot.config import OdbcSettings
from bot.seed import load_sql_script
from bot.tools.odbc_stats import OdbcStats


def slow_logins(seconds: float) -> None:
    connect = pyodbc.connect

    def login(*args: Any, **kwargs: Any) -> pyodbc.Connection:
        time.sleep(seconds)  # in the driver's thread, as a real login blocks it
        return connect(*args, **kwargs)

    pyodbc.connect = login


async def raid(stats: OdbcStats, players: list[str]) -> list[float]:
    began = time.perf_counter()

    async def one(who: str) -> float:
        assert await stats.player_summary(who) is not None
        return time.perf_counter() - began

    return sorted(await asyncio.gather(*(one(who) for who in players)))


async def trial(db: Path, settings: OdbcSettings, players: list[str], pool: str) -> list[float]:
    stats = await OdbcStats.open(f"Driver=SQLite3;Database={db};Timeout=200", settings)
    try:
        if pool == "minsize = pool size":
            stats._pool._minsize = settings.pool_size
        elif pool == "warm":
            held = [await stats._pool.acquire() for _ in range(settings.pool_size)]
            for conn in held:
                await stats._pool.release(conn)
        return await raid(stats, players)
    finally:
        await stats.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=8)
    parser.add_argument("--login-seconds", type=float, default=0.2)
    parser.add_argument("--pool-size", type=int, default=OdbcSettings().pool_size)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    if "SQLite3" not in pyodbc.drivers():
        sys.exit("the SQLite ODBC driver is missing: apt-get install unixodbc libsqliteodbc")
    slow_logins(args.login_seconds)
    settings = OdbcSettings(dialect="sqlite", pool_size=args.pool_size)
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "players.db"
        sql = paths.SQL / "sqlite"
        load_sql_script(db, sql / "schema.sql", sql / "seed.sql")
        with sqlite3.connect(db) as conn:
            linked = [r[0] for r in conn.execute("SELECT discord_user_id FROM players ORDER BY player_id")]
        players = [linked[i % len(linked)] for i in range(args.players)]
        print(
            f"{args.players} players at once, pool of {args.pool_size}, logins of"
            f" {args.login_seconds:g} s, {args.trials} trials (medians, seconds)"
        )
        print(f"{'pool':<22} {'first':>6} {'median':>6} {'last':>6}")
        for pool in ("cold (minsize 0)", "minsize = pool size", "warm"):
            runs = [await trial(db, settings, players, pool) for _ in range(args.trials)]
            first = statistics.median(r[0] for r in runs)
            middle = statistics.median(statistics.median(r) for r in runs)
            last = statistics.median(r[-1] for r in runs)
            print(f"{pool:<22} {first:>6.2f} {middle:>6.2f} {last:>6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
