"""The one set of player-stats SQL, shared by the embedded (SQLite) and ODBC (Azure SQL) paths.

Queries use qmark (`?`) parameters, which both sqlite3 and pyodbc accept. The only dialect
difference they need, a row limit, lives in `limit_rows`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.tools.base import GameSummary, PlayerSummary

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

# Rank 1 is the most points; players with no games count as zero points.
RANK = (
    "SELECT COUNT(*) FROM ("
    " SELECT p.player_id, COALESCE(SUM(g.points_earned), 0) AS total"
    " FROM players p LEFT JOIN game_sessions g ON g.player_id = p.player_id"
    " GROUP BY p.player_id) ranked WHERE ranked.total > ?"
)

PLAYER_COUNT = "SELECT COUNT(*) FROM players"

ACHIEVEMENT_COUNT = "SELECT COUNT(*) FROM achievements WHERE player_id = ?"
ACHIEVEMENTS = "SELECT {top}name FROM achievements WHERE player_id = ? ORDER BY earned_at DESC, name{limit}"


def limit_rows(template: str, n: int, dialect: str) -> str:
    """SQLite says `LIMIT n` at the end; SQL Server says `TOP n` after SELECT."""
    if dialect == "sqlserver":
        return template.format(top=f"TOP {int(n)} ", limit="")
    return template.format(top="", limit=f" LIMIT {int(n)}")


async def player_summary(fetch: Fetch, user_id: str, dialect: str) -> PlayerSummary | None:
    """The speaker's summary, or None when their Discord id is linked to no player."""
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
    better = (await fetch(RANK, (total,)))[0][0]
    count = (await fetch(PLAYER_COUNT, ()))[0][0]
    achievements = [
        str(row[0]) for row in await fetch(limit_rows(ACHIEVEMENTS, MAX_ACHIEVEMENTS, dialect), (player_id,))
    ]
    (earned,) = (await fetch(ACHIEVEMENT_COUNT, (player_id,)))[0]
    return PlayerSummary(
        player_name=str(player_name),
        total_points=total,
        rank=int(better) + 1,
        players_ranked=int(count),
        games=games,
        achievements=achievements,
        achievement_count=int(earned),
    )
