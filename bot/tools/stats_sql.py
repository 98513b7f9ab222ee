"""The one set of player-stats SQL, shared by the embedded (SQLite) and ODBC (Azure SQL) paths.

Queries use qmark (`?`) parameters, which both sqlite3 and pyodbc accept, and nothing either
dialect lacks: no row limit (TOP or LIMIT), no date function.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import logging
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.instants import instant
from bot.logs import Outage
from bot.tools.base import GameSummary, PlayerSummary

log = logging.getLogger(__name__)

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[Sequence[Any]]]]

MAX_ACHIEVEMENTS = 10

FIND_PLAYER = "SELECT player_id, player_name FROM players WHERE discord_user_id = ?"

# Cash is cast to FLOAT (a double on both dialects) because SQLite stores 0.00 as the integer 0,
# and an ODBC driver that types a computed column from its first row (the SQLite one does) would
# then truncate every later sum to an integer: 50.97 read back as 50.
GAMES_BY_TYPE = (
    "SELECT game_type, COUNT(*), COALESCE(SUM(points_earned), 0), "
    "CAST(COALESCE(SUM(cash_won), 0) AS FLOAT) "
    "FROM game_sessions WHERE player_id = ? GROUP BY game_type ORDER BY game_type"
)

# Every player's total points, players with no games at zero: what a rank is counted among.
TOTALS = (
    "SELECT COALESCE(SUM(g.points_earned), 0) FROM players p"
    " LEFT JOIN game_sessions g ON g.player_id = p.player_id GROUP BY p.player_id"
)
# Seconds the totals are read again after at most. Reading them is a pass over every game session
# (about a second on two million): once a question, a raid asking for its points would queue
# behind it on the few database connections.
TOTALS_SECONDS = 60.0

PLAYER_COUNT = "SELECT COUNT(*) FROM players"
# The other tables a summary reads, with the columns it reads: a backend's `check` fails when one
# is missing, not the first player's question. WHERE 1 = 0 reads no row on any database.
COLUMNS_READ = (
    "SELECT player_id, game_type, points_earned, cash_won FROM game_sessions WHERE 1 = 0",
    "SELECT player_id, name, earned_at FROM achievements WHERE 1 = 0",
)

# Every one of the player's, sorted here by the instant: earned_at is text, and
# "2026-11-18T03:00:00+05:00" (22:00 UTC on the 17th) sorts after "2026-11-17T23:00:00Z" as text
# though it is earlier. Parsing in SQL takes each dialect's own function (SQLite's julianday, SQL
# Server's datetimeoffset), a query the SQLite driver that tests the ODBC path could not run.
ACHIEVEMENTS = "SELECT name, earned_at FROM achievements WHERE player_id = ?"


class Ranking:
    """Every player's total points, sorted, read at most once a TOTALS_SECONDS by whichever summary
    needs them first; the others wait for that read. A rank counts the totals above the speaker's
    own, which is read afresh: only other players' points may be up to a minute old.

    A read that fails (typically one that timed out) is not tried again by each player who
    waited for it, one query timeout after another: they get its error, or the last totals read
    when there are any. Nor by each player after them: once it failed for good (no retry of the
    summary's left to try it), the totals are read again only `seconds` later; until then a
    summary is answered at once, by the last totals read, or without a rank.

    `describe` words a failed read for the log: the backend's own, which masks what its driver
    may quote of a connection string."""

    def __init__(
        self,
        seconds: float = TOTALS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        describe: Callable[[BaseException], str] = str,
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self.describe = describe
        self._totals = array("q")
        self._read_at: float | None = None
        self._read: asyncio.Future[None] | None = None  # the read under way, done when it ends
        # The last read that failed for good, and when (by the clock), until one answers.
        self._failure: Exception | None = None
        self._failed_at: float | None = None
        # Summaries answered without a rank: a read that outlasts the query timeout does every time.
        self.unread = Outage(log, "every player's total is read again: ranks are back", quiet=logging.INFO)
        # Ranks by the last totals read: a read outlasting the query timeout fails at each try, a
        # minute apart, for as long as the table is that big.
        self.stale = Outage(log, "every player's total is read again", quiet=logging.INFO)

    async def place(
        self, fetch: Fetch, total: int, retried: Callable[[Exception], bool] | None = None
    ) -> tuple[int, int]:
        """(rank, players ranked) of a player with `total` points; 1 is the most points.
        `retried`: whether the backend would try a summary again after this failure (a blip)."""
        totals = await self._current(fetch, retried)
        better = len(totals) - bisect.bisect_right(totals, total)
        # A player the totals were read before: ranked among them all the same.
        return better + 1, max(len(totals), better + 1)

    async def _current(self, fetch: Fetch, retried: Callable[[Exception], bool] | None) -> array[int]:
        while self._read_at is None or self._clock() - self._read_at >= self._seconds:
            if self._read is not None:
                read = self._read
                # Not shielded: a read cancelled with its reader's turn would be raised here, in a
                # turn nobody cancelled. asyncio.wait raises neither its outcome nor cancels it.
                await asyncio.wait({read})
                if read.cancelled():
                    continue  # the reader's turn was cancelled: another reads
                if (failed := read.exception()) is not None:
                    if self._read_at is not None:
                        return self._totals
                    raise _again(failed)
                continue
            if self._failed_at is not None and self._clock() - self._failed_at < self._seconds:
                if self._read_at is not None:
                    return self._totals
                raise TotalsUnread(self._failure, self.describe)
            # Each waiter reads the outcome itself; an error none waited for is no news.
            read = self._read = asyncio.get_running_loop().create_future()
            read.add_done_callback(lambda f: f.cancelled() or f.exception())
            try:
                rows = await fetch(TOTALS, ())
                self._totals = array("q", sorted(int(row[0]) for row in rows))
                self._read_at = self._clock()
                read.set_result(None)
                self._failure = self._failed_at = None
                self.stale.answered()
            except Exception as exc:
                read.set_exception(exc)
                if self._read_at is None:
                    raise
                # A blip the backend would retry passes: the next question reads again, as a
                # retried summary would, rather than ranking by totals a minute older.
                if retried is None or not retried(exc):
                    self.failed_for_good(exc)
                said = "every player's total could not be read, ranking by the last read: %s"
                self.stale.failed(type(exc).__name__, said, self.describe(exc))
                return self._totals
            finally:
                self._read = None
                if not read.done():
                    read.cancel()
        return self._totals

    def failed_for_good(self, exc: Exception) -> None:
        """A read of every total failed, and the summary that asked will not try it again."""
        self._failure, self._failed_at = exc, self._clock()


class TotalsUnread(Exception):
    """Every player's total, not read again so soon after a read that failed: `failure`'s."""

    def __init__(self, failure: Exception | None, describe: Callable[[BaseException], str] = str) -> None:
        super().__init__(describe(failure) if failure is not None else "not read")


def _again(exc: Exception) -> Exception:
    """An error like `exc`, for another caller to raise: its backend tells what went wrong by its
    type and arguments (a pyodbc SQLSTATE), and raising one instance in many tasks would tangle
    their tracebacks."""
    try:
        return type(exc)(*exc.args)
    except Exception:
        return RuntimeError(str(exc))


async def player_summary(
    fetch: Fetch,
    user_id: str,
    ranking: Ranking,
    retried: Callable[[Exception], bool] | None = None,
) -> PlayerSummary | None:
    """The speaker's summary, or None when their Discord id is linked to no player. A failure of
    the read of every total for which `retried` is true is raised, for the backend to try the
    summary again; any other answers the summary without a rank."""
    found = await fetch(FIND_PLAYER, (user_id,))
    if not found:
        return None
    player_id, player_name = found[0][0], found[0][1]
    games = [
        GameSummary(
            game_type=str(row[0]),
            games_played=int(row[1]),
            points_earned=int(row[2]),
            cash_won=round(float(row[3]), 2),
        )
        for row in await fetch(GAMES_BY_TYPE, (player_id,))
    ]
    total = sum(g.points_earned for g in games)
    # The speaker's own rows before the read of every total: a read that fails, or outlasts the
    # query timeout and leaves its connection unfit for another statement, costs the rank alone.
    earned = await fetch(ACHIEVEMENTS, (player_id,))
    rank: int | None
    ranked: int | None
    try:
        rank, ranked = await ranking.place(fetch, total, retried)
        ranking.unread.answered()
    except Exception as exc:
        if retried is not None and retried(exc):
            raise  # a blip (a lock, throttling): the backend's next attempt reads the rank too
        # Typically the pass over every game session outlasting the query timeout, as it may on
        # every try on a big table: the speaker's own figures, read before it, still answer. A
        # connection the failure leaves unfit is the backend's to drop.
        if isinstance(exc, TotalsUnread):
            # The hold-off after a read that failed for good, which was said then: each question
            # answered without a rank until the next read is no news, and this failure no new one.
            log.debug("every player's total is not read again yet, answering without a rank: %s", exc)
        else:
            said = "every player's total could not be read, answering without a rank: %s"
            ranking.unread.failed(type(exc).__name__, said, ranking.describe(exc))
            ranking.failed_for_good(exc)
        rank = ranked = None
    # Newest first, ties by name: two stable sorts, the tie-breaker first.
    newest_first = sorted(earned, key=lambda row: str(row[0]))
    newest_first.sort(key=lambda row: earned_at_instant(row[1]), reverse=True)
    achievements = [str(row[0]) for row in newest_first[:MAX_ACHIEVEMENTS]]
    return PlayerSummary(
        player_name=str(player_name),
        total_points=total,
        rank=rank,
        players_ranked=ranked,
        games=games,
        achievements=achievements,
        achievement_count=len(earned),
    )


def earned_at_instant(value: Any) -> float:
    """An achievement's earned_at as Unix seconds: ISO 8601 text (with "Z" or an offset; without
    one, UTC), or a date-time or date column's value. One that is none of those sorts as the oldest."""
    if isinstance(value, str):
        try:
            return instant(value.strip()).timestamp()
        except ValueError:
            return -math.inf
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, dt.date):  # a DATE column's: that day's start in UTC, as "2026-11-18" is
        return dt.datetime.combine(value, dt.time(), dt.UTC).timestamp()
    return -math.inf
