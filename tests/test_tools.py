import asyncio
import contextlib
import io
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bot import logs
from bot import sentences as say
from bot.app import running_app, storage_paths
from bot.tools import CATEGORIES, filed_in, filing_id
from bot.tools.base import ToolCall, ToolContext, ToolError
from bot.tools.embedded import fts_query
from bot.tools.grievance_store import LocalGrievanceStore

from .conftest import BLAZE, NOVA, QUILL, UNLINKED, summary_from_rows


class LockWaitedFor(asyncio.Lock):
    """An asyncio.Lock whose `waited` is set once `count` acquirers wait for it while it is held:
    a test's "the filing now waits for the lock", not a sleep that guesses it."""

    def __init__(self, count: int = 1) -> None:
        super().__init__()
        self._count = count
        self.waited = asyncio.Event()

    async def acquire(self) -> bool:
        if self.locked():
            self._count -= 1
            if self._count <= 0:
                self.waited.set()
        return await super().acquire()


async def until_flock_waited_for(path: Path, within: float = 30.0) -> None:
    """Until a flock request waits for `path`'s lock: Linux's /proc/locks marks one with "->"."""
    st = os.stat(path)
    lock = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"

    def waited() -> bool:
        lines = Path("/proc/locks").read_text().splitlines()
        return any(" -> " in line and line.split()[-3] == lock for line in lines)

    async with asyncio.timeout(within):
        while not waited():  # noqa: ASYNC110 - the kernel's lock table: no event to await
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def store_and_locker(tmp_path: Path) -> AsyncIterator[tuple[LocalGrievanceStore, sqlite3.Connection]]:
    """A grievance store that waits 0.1 s for its database (not the production 30 s), and another
    process's connection to hold that database with ("BEGIN EXCLUSIVE")."""
    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    await store._conn.execute("PRAGMA busy_timeout=100")
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        yield store, locker
    finally:
        locker.close()
        await store.aclose()


def call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(id="c1", name=name, arguments=dict(arguments))


async def run(app, user: str, name: str, *, private: bool = False, **arguments: object) -> dict:
    result = await app.toolbox.run(ToolContext(user_id=user, private=private), call(name, **arguments))
    return result.result


def complaint_filer(grievances):
    """register_grievance on `grievances` as a turn runs it: (ctx, category, description) -> key."""
    from bot.tools import build_tools

    (tool,) = [t for t in build_tools(None, None, grievances) if t.name == "register_grievance"]

    async def file(ctx: ToolContext, category: str, description: str) -> str:
        return (await tool.handler(ctx, {"category": category, "description": description}))["ticket_key"]

    return file


async def test_player_stats_are_the_speakers_own(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        nova = await run(app, NOVA, "get_player_stats")
        blaze = await run(app, BLAZE, "get_player_stats")
    assert nova["player_name"] == "Nova" and blaze["player_name"] == "Blaze"
    assert nova["total_points"] == sum(g["points_earned"] for g in nova["games"])
    assert {g["game_type"] for g in nova["games"]} <= {"battle_royale", "poker", "racing", "trivia"}
    assert all(g["games_played"] > 0 for g in nova["games"])
    assert 1 <= nova["rank"] <= nova["players_ranked"] == 12
    assert nova["achievements"]


async def test_a_summary_holds_the_speakers_achievements_and_points_and_no_one_elses(
    settings, scripted_app_engine
) -> None:
    # Nova has one achievement and Blaze two others; Rook's five include Nova's "Night Owl", so
    # only an exact list tells "mine" from "someone's".
    players_db = storage_paths(settings).players
    with sqlite3.connect(players_db) as conn:
        users = [user for (user,) in conn.execute("SELECT discord_user_id FROM players")]
    assert len(users) == 12
    async with running_app(settings, scripted_app_engine) as app:
        nova = await run(app, NOVA, "get_player_stats")
        blaze = await run(app, BLAZE, "get_player_stats")
        summaries = {u: await app.stats.player_summary(u) for u in users}
    assert nova["achievements"] == ["Night Owl"] and nova["total_points"] == 708
    assert blaze["achievements"] == ["Quiz Master", "Ten Win Streak"]
    assert [g["game_type"] for g in blaze["games"]] == ["poker", "racing", "trivia"]
    for user, summary in summaries.items():
        assert summary == summary_from_rows(players_db, user), user


def test_an_achievements_time_in_any_form_sorts_by_its_instant(far_from_utc) -> None:
    # A SQL Server datetime column comes as a datetime with no zone: UTC, as text with none is,
    # never the host's zone. A value that is no time sorts as the oldest, not the newest.
    import datetime as dt
    import math

    from bot.tools.stats_sql import earned_at_instant

    at = earned_at_instant("2026-11-18T03:00:00Z")
    assert earned_at_instant(dt.datetime(2026, 11, 18, 3)) == at
    assert earned_at_instant(dt.datetime(2026, 11, 18, 4, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == at
    assert earned_at_instant("yesterday") == earned_at_instant(None) == -math.inf


def test_an_achievement_date_alone_sorts_as_that_day_not_as_the_oldest() -> None:
    # A studio's DATE column comes through ODBC as a date with no time: sorted as the oldest,
    # every achievement of such a table was listed by name, not newest first.
    import datetime as dt

    from bot.tools.stats_sql import earned_at_instant

    day = earned_at_instant(dt.date(2026, 11, 18))
    assert day == earned_at_instant("2026-11-18") == earned_at_instant("2026-11-18T00:00:00Z")
    assert earned_at_instant(dt.date(2026, 11, 17)) < day < earned_at_instant("2026-11-18T03:00:00Z")


async def test_a_name_stored_in_latin_1_is_read_not_refused(settings, scripted_app_engine, caplog) -> None:
    # A players table filled from a Latin-1 source holds "José" as the bytes 4A 6F 73 E9, which
    # are not UTF-8: read strictly, every look-up of that player failed as a database outage.
    with sqlite3.connect(storage_paths(settings).players) as conn:
        conn.execute("UPDATE players SET player_name = CAST(X'4A6F73E9' AS TEXT) WHERE player_id = 1")
        conn.execute(
            "UPDATE achievements SET name = CAST(X'4E75697420626C616E6368E965' AS TEXT) WHERE player_id = 1"
        )
    async with running_app(settings, scripted_app_engine) as app:
        nova = await run(app, NOVA, "get_player_stats")
    assert nova["player_name"] == "Jos\ufffd" and nova["achievements"] == ["Nuit blanch\ufffde"]
    assert nova["total_points"] == 708 and "query failed" not in caplog.text


# Nova's Night Owl (2026-08-17) and three from one evening, each written with another offset: as
# text "2026-11-18T03:00:00+05:00" (22:00 UTC on the 17th) sorts first, though it is the oldest.
MIXED_OFFSETS = [
    ("Late Night", "2026-11-18T03:00:00+05:00"),
    ("Evening", "2026-11-17T23:00:00Z"),
    ("No Offset", "2026-11-17T22:30:00"),  # read as UTC
]
NEWEST_FIRST = ["Evening", "No Offset", "Late Night", "Night Owl"]


async def test_achievements_written_with_mixed_offsets_are_newest_first_by_the_instant(
    settings, scripted_app_engine, far_from_utc
) -> None:
    # On a host hours from UTC: "No Offset" read in the host's zone would sort last.
    players_db = storage_paths(settings).players
    with sqlite3.connect(players_db) as conn:
        conn.executemany(
            "INSERT INTO achievements (player_id, name, earned_at) VALUES (1, ?, ?)", MIXED_OFFSETS
        )
    async with running_app(settings, scripted_app_engine) as app:
        nova = await run(app, NOVA, "get_player_stats")
        summary = await app.stats.player_summary(NOVA)
    assert nova["achievements"] == NEWEST_FIRST and nova["achievement_count"] == 4
    assert summary == summary_from_rows(players_db, NOVA)


async def test_a_player_with_more_than_ten_achievements_gets_the_newest_ten(
    settings, scripted_app_engine
) -> None:
    players_db = storage_paths(settings).players
    earned = [(f"Medal {n:02d}", f"2026-11-{n:02d}T18:00:00Z") for n in range(1, 12)]
    with sqlite3.connect(players_db) as conn:  # Nova's Night Owl (2026-08-17) and eleven newer
        conn.executemany("INSERT INTO achievements (player_id, name, earned_at) VALUES (1, ?, ?)", earned)
    async with running_app(settings, scripted_app_engine) as app:
        nova = await run(app, NOVA, "get_player_stats")
        summary = await app.stats.player_summary(NOVA)
    assert nova["achievements"] == [f"Medal {n:02d}" for n in range(11, 1, -1)]
    assert nova["achievement_count"] == 12
    assert summary == summary_from_rows(players_db, NOVA)


async def test_ranks_are_a_permutation_by_points(settings, scripted_app_engine) -> None:
    users = [f"{d}" * 18 for d in "12345678"] + [
        "999999999999999999",
        "101010101010101010",
        "121212121212121212",
        "131313131313131313",
    ]
    async with running_app(settings, scripted_app_engine) as app:
        stats = [await run(app, u, "get_player_stats") for u in users]
    by_points = sorted(stats, key=lambda s: -s["total_points"])
    assert [s["rank"] for s in by_points] == sorted(s["rank"] for s in stats)
    assert by_points[0]["rank"] == 1


async def test_a_raid_asking_for_points_reads_every_players_total_once(settings, scripted_app_engine) -> None:
    """A rank is every player's total against the speaker's: a query over every game session,
    about a second on two million of them (the other queries of a summary take well under a
    millisecond). A raid of players asking at once reads them once, not once a player, and each
    is still ranked as the freshly read totals say."""
    users = [f"{d}" * 18 for d in "12345678"] + ["999999999999999999", "101010101010101010"]
    statements: list[str] = []
    async with running_app(settings, scripted_app_engine) as app:
        await app.stats._conn.set_trace_callback(statements.append)
        raid = await asyncio.gather(*(app.stats.player_summary(u) for u in users * 3))
    every_total = [s for s in statements if "GROUP BY p.player_id" in s]
    assert len(every_total) == 1, every_total
    players_db = storage_paths(settings).players
    assert raid[: len(users)] == [summary_from_rows(players_db, u) for u in users]


async def test_a_failed_read_of_every_total_fails_its_waiters_rather_than_each_trying_in_turn() -> None:
    """The read that fails is typically one that timed out: the players who waited for it, each
    reading again in turn, would wait one query timeout more for every player ahead of them. They
    are told as the reader is; once totals were read, the last ones answer instead."""
    from bot.tools.stats_sql import TOTALS, Ranking

    reads: list[str] = []
    release = asyncio.Event()
    failing = True

    async def fetch(sql: str, params: object) -> list[tuple[int]]:
        assert sql == TOTALS
        reads.append(sql)
        await release.wait()
        if failing:
            raise sqlite3.OperationalError("interrupted")
        return [(10,), (30,), (20,)]

    now = [0.0]
    ranking = Ranking(seconds=60.0, clock=lambda: now[0])
    raid = [asyncio.create_task(ranking.place(fetch, 25)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    outcomes = await asyncio.gather(*raid, return_exceptions=True)
    assert len(reads) == 1
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes), outcomes
    failing = False
    assert await ranking.place(fetch, 25) == (2, 3)  # the next asks afresh
    now[0] += 61
    failing = True
    release.clear()
    raid = [asyncio.create_task(ranking.place(fetch, 25)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*raid) == [(2, 3)] * 5  # the last totals read
    assert len(reads) == 3  # one failed read for them all


async def test_ranking_by_the_last_totals_for_many_questions_is_one_warning(caplog) -> None:
    """Once totals were read, a read that then fails (outlasting the query timeout, every time)
    ranks by the last ones, read again a minute later: said once at WARNING, not once a question."""
    from bot.tools.stats_sql import TOTALS, Ranking

    failing = False

    async def fetch(sql: str, params: object) -> list[tuple[int]]:
        assert sql == TOTALS
        if failing:
            raise sqlite3.OperationalError("interrupted")
        return [(10,), (30,), (20,)]

    now = [0.0]
    ranking = Ranking(seconds=60.0, clock=lambda: now[0])
    assert await ranking.place(fetch, 25) == (2, 3)
    now[0] += 61
    failing = True
    with caplog.at_level(logging.INFO, logger="bot.tools.stats_sql"):
        for _ in range(2):
            for _ in range(3):  # read once, then not again so soon
                assert await ranking.place(fetch, 25) == (2, 3)
            now[0] += 61
        failing = False
        assert await ranking.place(fetch, 25) == (2, 3)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO, logging.INFO], said
    assert "ranking by the last read: interrupted" in said[0][1]
    assert said[-1][1] == "every player's total is read again"


def nova_alone(totals: Callable[[], list[tuple[int]]]):  # type: ignore[no-untyped-def]
    """A stats query for a database holding Nova's summary, whose read of every total is
    `totals()`."""
    from bot.tools.stats_sql import FIND_PLAYER, GAMES_BY_TYPE, TOTALS

    async def fetch(sql: str, params: object) -> list[tuple[object, ...]]:
        if sql == FIND_PLAYER:
            return [(1, "Nova")]
        if sql == GAMES_BY_TYPE:
            return [("arena", 2, 25, 0.0)]
        if sql == TOTALS:
            return list(totals())
        return []

    return fetch


async def test_a_blip_on_reading_every_total_holds_off_no_read_of_them(caplog) -> None:
    """Old totals, and their read again meets a blip (a deadlock victim, a lock): the next
    question reads them again, as the backend retries a summary that meets one. Only a read that
    failed for good (the query timeout) holds off the next for a minute, or one blip kept ranks a
    minute older than they need be."""
    from bot.tools import stats_sql
    from bot.tools.stats_sql import TOTALS, Ranking

    totals = [[(10,), (30,), (20,)]]
    reads: list[str] = []

    class Deadlock(Exception):
        pass

    def read_totals() -> list[tuple[int]]:
        reads.append(TOTALS)
        if len(reads) == 2:
            raise Deadlock("chosen as the deadlock victim")
        return totals[0]

    fetch = nova_alone(read_totals)

    def blip(exc: Exception) -> bool:
        return isinstance(exc, Deadlock)

    now = [0.0]
    ranking = Ranking(seconds=60.0, clock=lambda: now[0])
    first = await stats_sql.player_summary(fetch, NOVA, ranking, blip)
    now[0] += 61
    totals[0] = [(10,), (30,), (20,), (40,)]  # another player has passed Nova meanwhile
    with caplog.at_level(logging.INFO, logger="bot.tools.stats_sql"):
        blipped = await stats_sql.player_summary(fetch, NOVA, ranking, blip)
        after = await stats_sql.player_summary(fetch, NOVA, ranking, blip)
    assert first is not None and (first.rank, first.players_ranked) == (2, 3)
    assert blipped is not None and (blipped.rank, blipped.players_ranked) == (2, 3)  # the last read
    assert after is not None and (after.rank, after.players_ranked) == (3, 4)
    assert len(reads) == 3


async def test_old_totals_whose_read_again_fails_for_good_hold_off_the_next_read_for_odbc_too() -> None:
    """A backend that retries blips (ODBC) names them: a failure that is none (the query timeout)
    still holds off the next read for a minute, or every question would wait that timeout again."""
    from bot.tools.stats_sql import TOTALS, Ranking

    reads: list[str] = []
    failing = False

    class Deadlock(Exception):
        pass

    async def fetch(sql: str, params: object) -> list[tuple[int]]:
        assert sql == TOTALS
        reads.append(sql)
        if failing:
            raise sqlite3.OperationalError("interrupted")
        return [(10,), (30,), (20,)]

    def blip(exc: Exception) -> bool:
        return isinstance(exc, Deadlock)

    now = [0.0]
    ranking = Ranking(seconds=60.0, clock=lambda: now[0])
    assert await ranking.place(fetch, 25, blip) == (2, 3)
    now[0] += 61
    failing = True
    assert [await ranking.place(fetch, 25, blip) for _ in range(3)] == [(2, 3)] * 3  # the last read
    assert len(reads) == 2


async def test_while_every_total_cannot_be_read_a_question_does_not_wait_to_read_it_again(caplog) -> None:
    """A read of every total that outlasts the query timeout does so on each try: with none ever
    read, each stats question waited that timeout before answering without a rank, and with old
    totals, before ranking by them. Once one failed, the next are answered at once, until it is
    time to read the totals again."""
    from bot.tools import stats_sql
    from bot.tools.stats_sql import TOTALS, Ranking

    reads: list[str] = []
    failing = True

    def read_totals() -> list[tuple[int]]:
        reads.append(TOTALS)
        if failing:
            raise sqlite3.OperationalError("interrupted")  # the query timeout, as SQLite says it
        return [(10,), (30,), (25,)]

    fetch = nova_alone(read_totals)

    now = [0.0]
    ranking = Ranking(seconds=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="bot.tools.stats_sql"):
        unranked = [await stats_sql.player_summary(fetch, NOVA, ranking) for _ in range(3)]
        assert len(reads) == 1
        now[0] += 61
        failing = False
        ranked = await stats_sql.player_summary(fetch, NOVA, ranking)
    assert [(s.rank, s.total_points) for s in unranked if s] == [(None, 25)] * 3
    assert ranked is not None and (ranked.rank, ranked.players_ranked) == (2, 3)
    assert len(reads) == 2
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    # Said once, with the failure's own words; the questions held off after it not at all.
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO], said
    assert "answering without a rank: interrupted" in said[0][1]


async def test_a_hold_off_of_the_read_of_every_total_is_said_once_not_once_a_question(caplog) -> None:
    """While the totals are held off after a read that failed, every stats question is answered
    without a rank: each logged the failure again at INFO in its words, as though the totals had
    been read and failed once more. One line a hold-off: the read that failed, a minute apart."""
    from bot.tools import stats_sql
    from bot.tools.stats_sql import TOTALS, Ranking

    reads: list[str] = []

    def read_totals() -> list[tuple[int]]:
        reads.append(TOTALS)
        if len(reads) < 3:
            raise sqlite3.OperationalError("interrupted")
        return [(10,), (30,), (25,)]

    fetch = nova_alone(read_totals)

    now = [0.0]
    ranking = Ranking(seconds=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="bot.tools.stats_sql"):
        for _ in range(2):  # two hold-offs, five questions each
            for _ in range(5):
                assert (await stats_sql.player_summary(fetch, NOVA, ranking)).rank is None  # type: ignore[union-attr]
            now[0] += 61
        assert (await stats_sql.player_summary(fetch, NOVA, ranking)).rank == 2  # type: ignore[union-attr]
    assert len(reads) == 3
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    unread = [m for _, m in said if "could not be read" in m]
    assert len(unread) == 2 and all(m.endswith("answering without a rank: interrupted") for m in unread), said
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO, logging.INFO], said
    assert said[-1][1] == "every player's total is read again: ranks are back"


async def test_a_cancelled_reader_of_every_total_leaves_its_waiters_to_read_them() -> None:
    """The player whose summary reads the totals may have their turn cancelled (a shutdown, a
    page closed on the playground): the players who waited for that read are not cancelled with
    it, one of them reads instead."""
    from bot.tools.stats_sql import TOTALS, Ranking

    reads: list[str] = []
    reading, release = asyncio.Event(), asyncio.Event()

    async def fetch(sql: str, params: object) -> list[tuple[int]]:
        assert sql == TOTALS
        reads.append(sql)
        reading.set()
        await release.wait()
        return [(10,), (30,), (20,)]

    ranking = Ranking()
    reader = asyncio.create_task(ranking.place(fetch, 25))
    await reading.wait()
    waiters = [asyncio.create_task(ranking.place(fetch, 25)) for _ in range(3)]
    await asyncio.sleep(0)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    release.set()
    assert await asyncio.gather(*waiters, return_exceptions=True) == [(2, 3)] * 3
    assert len(reads) == 2  # the cancelled read, and one for the waiters


async def test_a_model_cannot_ask_for_another_players_stats(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        sneaky = await app.toolbox.run(
            ToolContext(user_id=NOVA), call("get_player_stats", user_id=BLAZE, player="Blaze")
        )
        own = await run(app, NOVA, "get_player_stats")
    assert not sneaky.ok and "Invalid arguments" in sneaky.result["error"]
    assert "Blaze" not in str(sneaky.result)
    assert own["player_name"] == "Nova"


async def test_a_stats_database_that_fails_says_stats_are_unavailable(
    settings, scripted_app_engine, caplog
) -> None:
    from bot import sentences as say

    players = storage_paths(settings).players
    with sqlite3.connect(players) as conn:
        conn.execute("ALTER TABLE achievements RENAME TO achievements_away")
    async with running_app(settings, scripted_app_engine) as app:
        with caplog.at_level(logging.INFO, logger="bot.tools.embedded"):
            results = [await run(app, who, "get_player_stats") for who in (NOVA, BLAZE, QUILL)]
            with sqlite3.connect(players) as conn:
                conn.execute("ALTER TABLE achievements_away RENAME TO achievements")
            assert (await run(app, NOVA, "get_player_stats"))["player_name"] == "Nova"
    assert results == [{"error": say.STATS_UNAVAILABLE}] * 3  # not "that part of me isn't working"
    # Said once, as on ODBC: not an ERROR for every player who asks meanwhile.
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bot.tools.embedded"]
    assert [level for level, _ in said] == [logging.ERROR, logging.INFO, logging.INFO, logging.INFO]
    assert "no such table: achievements" in said[0][1]
    assert said[-1][1] == "player stats: the database answers again"


async def test_a_running_bots_check_counts_the_grievances_held_in_its_memory(tmp_path: Path) -> None:
    # Refused by the database and by the spool's disk too, a grievance's one copy is in memory:
    # the running bot's check line (the desk's, /healthz) says so beside those spooled.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        store._held["f1"] = {"user_id": NOVA, "category": "wallet", "description": "gems gone"}
        said = await store.with_unfiled("local grievance store: 0 grievances")
    finally:
        store._held.clear()
        await store.aclose()
    assert said.endswith("; grievance(s) the database refused wait unfiled: 1 in this process's memory"), said


@pytest.mark.parametrize("table", ["game_sessions", "achievements"])
async def test_check_of_the_embedded_stats_fails_when_a_table_a_summary_reads_is_missing(
    settings, table
) -> None:
    # Only the players table was counted: check said all was well while every question failed.
    from bot.health import check_all

    with sqlite3.connect(storage_paths(settings).players) as conn:
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    lines = {r.service: r for r in await check_all(settings)}
    assert not lines["stats"].ok and f"no such table: {table}" in lines["stats"].detail


async def test_check_counts_the_grievances_waiting_in_the_spool(settings) -> None:
    # Grievances the database refused wait in the spool, their one copy: counting only the
    # database's rows, `check` would say all is well while /healthz is not ready for them.
    from bot.health import check_all
    from bot.tools.grievance_spool import GrievanceSpool

    spool = GrievanceSpool.beside(storage_paths(settings).grievances)
    for words in ("gems gone", "skin never came"):
        spool.keep(
            user_id=NOVA, category="wallet", description=words, at="2026-12-06T04:00:00Z", state="local_only"
        )
    line = {r.service: r for r in await check_all(settings)}["grievances"]
    assert line.ok and line.warn, line.line()
    # `check` is a process of its own: the bot's memory is not one it can count, nor say it did.
    assert line.detail.endswith(f"; grievance(s) the database refused wait unfiled: 2 in {spool.path}"), (
        line.detail
    )
    assert len(spool.lines()) == 2  # counted, not filed: `check` writes nothing


async def test_unlinked_user_gets_a_polite_answer(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        result = await run(app, UNLINKED, "get_player_stats")
    assert result == {
        "linked": False,
        "message": "This Discord account is not linked to a player profile yet.",
    }


async def test_grievance_keys_count_up_and_status_is_scoped(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        first = await run(app, BLAZE, "register_grievance", category="wallet", description="charged twice")
        second = await run(app, BLAZE, "register_grievance", category="other", description="lag spikes")
        assert first["ticket_key"] == "GRV-14" and second["ticket_key"] == "GRV-15"
        mine = await run(app, BLAZE, "get_grievance_status")
        assert [t["ticket_key"] for t in mine["tickets"]] == ["GRV-15", "GRV-14", "GRV-11"]
        one = await run(app, BLAZE, "get_grievance_status", ticket_key="grv-14")
        assert [t["ticket_key"] for t in one["tickets"]] == ["GRV-14"]
        assert one["tickets"][0]["status"] == "open"
        # Nova's ticket, asked for by Blaze: nothing, not even that it exists
        theirs = await run(app, BLAZE, "get_grievance_status", ticket_key="GRV-10")
        assert theirs["tickets"] == [] and "No ticket GRV-10" in theirs["message"]
        nova = await run(app, NOVA, "get_grievance_status")
        assert {t["ticket_key"] for t in nova["tickets"]} == {"GRV-10", "GRV-12"}


async def test_a_ticket_closed_without_a_fix_is_told_so_by_every_answer(
    settings, scripted_app_engine
) -> None:
    # The local copy of an issue staff closed in Jira as Won't Do, or as a duplicate: the model
    # read only "status", and the offline engine and /grievance said the stored word as it was.
    from bot.engines.offline.engine import render
    from bot.intent import router
    from cogs.grievance import describe_tickets

    async with running_app(settings, scripted_app_engine) as app:
        declined = await run(app, BLAZE, "register_grievance", category="wallet", description="charged twice")
        duplicate = await run(app, BLAZE, "register_grievance", category="other", description="lag spikes")
        with contextlib.closing(sqlite3.connect(storage_paths(settings).grievances)) as conn, conn:
            for key, status in ((declined["ticket_key"], "declined"), (duplicate["ticket_key"], "duplicate")):
                conn.execute("UPDATE grievances SET status = ? WHERE local_key = ?", (status, key))
        one = await run(app, BLAZE, "get_grievance_status", ticket_key=declined["ticket_key"])
        both = await run(app, BLAZE, "get_grievance_status", private=True)
    (ticket,) = one["tickets"]
    assert ticket["status"] == "declined"
    assert ticket["resolution"].startswith("declined: staff closed it without a fix")
    assert "is closed without a fix, last updated" in render(router.STATUS, one, "")
    rows = describe_tickets(both)
    assert "**closed without a fix**" in rows and "**closed as a duplicate**" in rows
    assert "resolved" not in rows


async def test_ticket_words_are_told_only_where_the_speaker_alone_hears_them(
    settings, scripted_app_engine
) -> None:
    secret = "the admin Vex harasses me in voice chat, card 4242 charged twice"
    async with running_app(settings, scripted_app_engine) as app:
        filed = await run(app, NOVA, "register_grievance", category="other", description=secret)
        public = await run(app, NOVA, "get_grievance_status")
        one = await run(app, NOVA, "get_grievance_status", ticket_key=filed["ticket_key"])
        private = await run(app, NOVA, "get_grievance_status", private=True)
        none = await run(app, BLAZE, "get_grievance_status", ticket_key="GRV-10")
    for result in (public, one):
        assert result["tickets"][0]["ticket_key"] == filed["ticket_key"]
        assert result["words"] == say.TICKET_WORDS_KEPT
        for ticket in result["tickets"]:
            # A finished one says how it ended too: no words of the player's either.
            assert set(ticket) - {"resolution"} == {"ticket_key", "category", "status", "last_update"}
        assert "Vex" not in str(result) and "Topped up" not in str(result)  # nor a demo ticket's
    assert {t["ticket_key"]: t["summary"] for t in private["tickets"]}[filed["ticket_key"]] == secret
    assert "words" not in private
    assert "words" not in none  # nothing was kept back


async def test_a_long_ticket_is_listed_with_a_mark_that_there_is_more(settings, scripted_app_engine) -> None:
    # Cut silently at 200 characters, the list showed a sentence stopping mid-word as if that were
    # all the player wrote, and could split an emoji or a flag.
    before = ("ガチャで購入したジェムが反映されません。" * 10)[:199]  # "gems bought in gacha are missing."
    words = before + "🇯🇵" + "サポートをお願いします。" * 5
    async with running_app(settings, scripted_app_engine) as app:
        await run(app, NOVA, "register_grievance", category="wallet", description=words)
        listed = await run(app, NOVA, "get_grievance_status", private=True)
    shown = listed["tickets"][0]["summary"]
    assert shown == before + "…"  # the flag across the cut left out whole


async def test_concurrent_grievances_get_distinct_keys(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        results = await asyncio.gather(
            *(
                run(app, QUILL, "register_grievance", category="other", description=f"problem number {i}")
                for i in range(20)
            )
        )
        keys = [r["ticket_key"] for r in results]
        assert len(set(keys)) == 20
        listed = await run(app, QUILL, "get_grievance_status")
    assert len(listed["tickets"]) == 10  # the newest ten
    assert listed["more_tickets"] is True  # and the answer knows there are more than ten


async def test_ten_tickets_are_all_of_them(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        seeded = len((await run(app, QUILL, "get_grievance_status"))["tickets"])
        for i in range(10 - seeded):
            await run(app, QUILL, "register_grievance", category="other", description=f"problem number {i}")
        listed = await run(app, QUILL, "get_grievance_status")
    assert len(listed["tickets"]) == 10 and "more_tickets" not in listed


@pytest.mark.parametrize("category", ["refund", "", "WALLET", "wallet; DROP TABLE grievances"])
async def test_unknown_categories_and_injection_are_refused(settings, scripted_app_engine, category) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        result = await app.toolbox.run(
            ToolContext(user_id=NOVA), call("register_grievance", category=category, description="it broke")
        )
        after = await run(app, NOVA, "get_grievance_status")
    assert not result.ok
    assert len(after["tickets"]) == 2
    assert set(CATEGORIES) == {"wallet", "reward_points", "gaming_experience", "usage_history", "other"}


async def test_ticket_key_that_is_not_a_key_is_refused(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        result = await run(app, NOVA, "get_grievance_status", ticket_key="GRV-10' OR '1'='1")
    assert result["tickets"] == [] and "not a ticket key" in result["message"]


def test_a_ticket_in_any_project_jira_allows_has_a_key_players_may_ask_after() -> None:
    from bot.tools import TICKET_KEY
    from bot.tools.jira_tracker import PROJECT_KEY

    for project in ("GRV", "MY_PROJ", "A1"):  # Jira project keys may hold digits and underscores
        assert PROJECT_KEY.match(project) and TICKET_KEY.match(f"{project}-12")


async def test_manual_search_ranks_the_right_manual_first(settings, scripted_app_engine) -> None:
    expectations = {
        "how do I pair my controller": "controller",
        "I forgot my password": "password",
        "set up two factor authentication": "two-factor",
        "can I get a refund": "refund",
        "someone is cheating, how do I report them": "cheat",
        "the game keeps crashing": "crash",
        "what are the minimum requirements for my pc": "requirements",
        "how does the battle pass work": "battle",
        "limit my kid's play time": "parental",
        "I bought gems but they never arrived": "purchases",
    }
    async with running_app(settings, scripted_app_engine) as app:
        for question, expected_source in expectations.items():
            result = await run(app, NOVA, "search_manuals", query=question)
            passages = result["passages"]
            assert passages, question
            assert expected_source in passages[0]["source"], (question, passages[0]["source"])
            assert passages[0]["title"]


async def test_a_manual_with_one_long_section_gives_a_passage_of_bounded_size(
    settings, scripted_app_engine, tmp_path
) -> None:
    """A studio's FAQ with no `##` sections is one passage of the whole file: the model is given
    its beginning, cut where a sentence ends, not all of it with every step of the turn."""
    from bot.tools.embedded import FtsManuals
    from bot.tools.manual_chunks import chunk_manuals

    faq = tmp_path / "manuals" / "faq.md"
    faq.parent.mkdir()
    sentences = [f"Answer {i}: restart the launcher and verify the files of the game." for i in range(400)]
    faq.write_text("# Launcher FAQ\n\n" + " ".join(sentences) + "\n", encoding="utf-8")
    manuals = await FtsManuals.open(storage_paths(settings).manuals)
    try:
        await manuals.rebuild(chunk_manuals(faq.parent))
    finally:
        await manuals.aclose()
    async with running_app(settings, scripted_app_engine) as app:
        (passage,) = (await run(app, NOVA, "search_manuals", query="launcher verify files"))["passages"]
    assert len(" ".join(sentences)) > 25_000
    assert 750 < len(passage["text"]) <= 1500  # bot.tools.MAX_PASSAGE_CHARS
    assert passage["text"].startswith("Answer 0: restart") and passage["text"].endswith("game. …")


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        # The cut fell between the two regional letters of a flag: half a flag reads as a letter.
        ("x" + "\U0001f1ef\U0001f1f5" * 800, "x" + "\U0001f1ef\U0001f1f5" * 748 + " …"),
        # An emoji joined from several, cut after its joiner.
        (
            "ab" + "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 400,
            "ab" + "\U0001f468\u200d\U0001f469\u200d\U0001f467" * 299 + " …",
        ),
        # Chinese and Japanese sentences end with "。", "！", "？" and no space: a cut at spaces alone
        # falls mid-sentence.
        (
            "这是一个很长的句子。" * 80 + "最后一句话「好吗？」" * 80,
            "这是一个很长的句子。" * 80 + "最后一句话「好吗？」" * 69 + " …",
        ),
    ],
)
def test_a_long_passage_is_cut_where_a_character_or_a_sentence_ends(text: str, kept: str) -> None:
    from bot.tools import passage_text

    assert passage_text(text, 1500) == kept


async def test_a_manual_whose_file_name_is_not_utf8_is_indexed(tmp_path: Path) -> None:
    """ "guía.md" zipped on Windows (Latin-1) and unpacked here: the name's byte comes as a lone
    surrogate, which the index's rebuild, run by `voxdesk seed`, must take without raising."""
    from bot.tools.embedded import FtsManuals
    from bot.tools.manual_chunks import chunk_manuals

    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / os.fsdecode(b"gu\xeda.md")).write_text("## Start\nPress start to begin.\n", encoding="utf-8")
    manuals = await FtsManuals.open(tmp_path / "manuals.db")
    try:
        await manuals.rebuild(chunk_manuals(folder))
        (passage,) = await manuals.search("press start", 3)
    finally:
        await manuals.aclose()
    assert (passage.text, passage.source) == ("Press start to begin.", "gu\ufffda.md")


def test_manuals_whose_names_differ_in_bytes_that_are_not_utf8_keep_keys_of_their_own(
    tmp_path: Path,
) -> None:
    # "café.md" and "cafè.md" in Latin-1: both names read "caf\ufffd" with U+FFFD for the byte, and
    # as keys the second's passages overwrote the first's in Azure Search.
    from bot.tools.azure_manuals import document_key
    from bot.tools.manual_chunks import chunk_manuals

    for name in (b"caf\xe9.md", b"caf\xe8.md"):
        (tmp_path / os.fsdecode(name)).write_text("## Start\nPress start.\n", encoding="utf-8")
    chunks = chunk_manuals(tmp_path)
    assert [c.source for c in chunks] == ["caf\ufffd.md"] * 2
    assert len({document_key(c.key) for c in chunks}) == 2
    for c in chunks:
        c.key.encode()  # no lone surrogate: SQLite and a JSON body take it


def test_a_name_spelling_out_a_byte_with_a_backslash_keeps_a_key_of_its_own(tmp_path: Path) -> None:
    # The byte E9 of a Latin-1 "café.md" is written \xe9 in its key, as a name holding a
    # backslash, an x, an e and a 9 spells it: both went to one Azure document, the second
    # manual's passages replacing the first's.
    from bot.tools.azure_manuals import document_key
    from bot.tools.manual_chunks import chunk_manuals

    for name in (b"caf\xe9.md", b"caf\\xe9.md"):
        (tmp_path / os.fsdecode(name)).write_text("## Start\nPress start.\n", encoding="utf-8")
    chunks = chunk_manuals(tmp_path)
    assert len(chunks) == 2 and len({c.source for c in chunks}) == 2
    assert len({document_key(c.key) for c in chunks}) == 2, [c.key for c in chunks]


async def test_manuals_edited_or_removed_reach_a_running_bot_at_init_not_before(settings, tmp_path) -> None:
    # What README says of storage.manuals_dir: the bot answers from the index, never the files; a
    # re-run of `init` drops a removed manual's passages and a shortened one's extra sections,
    # and the running bot's connection answers from the rebuilt index at the next question.
    from bot.app import build_manuals_backend
    from bot.seed import initialise

    from .conftest import make_settings

    manuals = tmp_path / "manuals"
    manuals.mkdir()
    (manuals / "refunds.md").write_text(
        "# Refunds\n\n## Window\n\nRefunds within 14 days.\n\n## Gems\n\nGem refunds.\n"
    )
    (manuals / "old-policy.md").write_text(
        "# Old policy\n\n## Triple\n\nThe old refund policy pays triple.\n"
    )
    studio = make_settings(settings.storage_dir, VOXDESK_STORAGE_MANUALS_DIR=str(manuals))
    await initialise(studio, speech=False)
    running = await build_manuals_backend(studio)
    try:
        assert {p.source for p in await running.search("refund", 5)} == {"refunds.md", "old-policy.md"}
        (manuals / "old-policy.md").unlink()
        (manuals / "refunds.md").write_text("# Refunds\n\n## Window\n\nRefunds within 30 days.\n")
        assert len(await running.search("refund", 5)) == 3  # the files alone change nothing
        await initialise(studio, speech=False)
        found = await running.search("refund", 5)
    finally:
        await running.aclose()
    assert [(p.source, p.text) for p in found] == [("refunds.md", "Refunds within 30 days.")]


async def test_a_question_the_manuals_do_not_cover_finds_no_passage(settings, scripted_app_engine) -> None:
    # Each shares one everyday word with some manual ("change", "than", "last", the "s" of
    # "what's"), which alone ranked a passage about something else first.
    off_topic = [
        "how do I change my Minecraft skin",
        "how do I beat the final boss in Elden Ring",
        "final mass in l than reading",  # the same question as Whisper once heard it
        "who won the football last night",
        "what's the weather like tomorrow",
        # Spanish and French function words are no words of the manuals' either: "no" and "nos"
        # (stemmed "no") met a passage's "no", "à" (folded "a") its "a", and with "USB" made two
        # words in common.
        "¿por qué no funciona el USB de mi impresora?",
        "comment brancher nos écouteurs USB à la télé",
        # English words that are French or Spanish ones too ("car", "ai" of "j'ai", "os"): the
        # word no manual uses is what says these are about something else.
        "how do I change my car",
        "how do I change the AI",
        "can I change my OS",
    ]
    # A misheard or one-word question on a manual's subject is still answered.
    on_topic = {
        "how do i pear my controler": "controller",
        "um how can i get a refund": "refund",
        "refunds": "refund",
        "someone is cheating, how do I report them": "cheat",
    }
    async with running_app(settings, scripted_app_engine) as app:
        found = {q: (await run(app, NOVA, "search_manuals", query=q))["passages"] for q in off_topic}
        answered = {q: (await run(app, NOVA, "search_manuals", query=q))["passages"] for q in on_topic}
        kid = (await run(app, NOVA, "search_manuals", query="limit my kid's play time"))["passages"]
    assert found == {q: [] for q in off_topic}
    firsts = {q: passages[0]["source"] if passages else "" for q, passages in answered.items()}
    assert all(on_topic[q] in source for q, source in firsts.items()), firsts
    # Not only a first passage: one that shares only "time" (or the "s" of "kid's") is left out too.
    assert [p["title"] for p in kid] == ["Parental controls: Play time limits"]


async def test_a_damaged_manuals_index_is_one_error_naming_the_file_and_the_fix(
    settings, scripted_app_engine, caplog
) -> None:
    from bot.health import check_all

    manuals = storage_paths(settings).manuals
    with sqlite3.connect(manuals) as conn:  # the FTS5 index's own pages lost, as a bad disk does
        pages = conn.execute("SELECT id, block FROM passages_data").fetchall()
        conn.execute("DELETE FROM passages_data")
    checked = {r.service: r for r in await check_all(settings)}["manuals"]
    async with running_app(settings, scripted_app_engine) as app:
        with caplog.at_level(logging.INFO, logger="bot.tools"):
            results = [
                await run(app, who, "search_manuals", query="pair my controller") for who in (NOVA, BLAZE)
            ]
            with sqlite3.connect(manuals) as conn:
                conn.executemany("INSERT INTO passages_data (id, block) VALUES (?, ?)", pages)
            assert (await run(app, NOVA, "search_manuals", query="pair my controller"))["passages"]
    assert results == [{"error": say.MANUALS_UNAVAILABLE}] * 2  # not "that part of me isn't working"
    said = [(r.levelno, r.getMessage(), r.exc_info) for r in caplog.records if r.name.startswith("bot.tools")]
    assert [level for level, _, _ in said if level >= logging.WARNING] == [logging.ERROR]
    assert not any(exc_info for _, _, exc_info in said)  # no traceback for every question
    fix = "stop the bot, delete the file and run `python -m bot init`"
    assert str(manuals) in said[0][1] and fix in said[0][1]
    assert said[-1][1] == "manuals search: the local index answers again"
    assert not checked.ok and str(manuals) in checked.detail and fix in checked.detail


def test_fts_query_quotes_every_term_so_nothing_is_syntax() -> None:
    assert fts_query('refund" OR title:* NEAR(a b)') == '"refund" OR "title" OR "near" OR "b"'
    assert fts_query("how do I") == ""
    # Letters of any script stay inside their words, composed, never syntax.
    assert (
        fts_query('Pokémon" OR Ñandú* NEAR(Łódź) "cafe\u0301"')
        == '"pokémon" OR "ñandú" OR "near" OR "łódź" OR "café"'
    )


async def test_a_grievance_database_from_before_the_outbox_columns_opens_with_every_row(tmp_path) -> None:
    import sqlite3

    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    with sqlite3.connect(db) as conn:  # the table as the first release made it
        conn.execute(
            "CREATE TABLE grievances (id INTEGER PRIMARY KEY AUTOINCREMENT, local_key TEXT UNIQUE,"
            " user_id TEXT NOT NULL, category TEXT NOT NULL, description TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'open', created_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
            " remote_key TEXT, push_state TEXT NOT NULL DEFAULT 'local_only',"
            " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT)"
        )
        conn.execute(
            "INSERT INTO grievances (local_key, user_id, category, description, created_at, updated_at,"
            " push_state) VALUES ('GRV-1', ?, 'wallet', 'old one', 'x', 'x', 'pending')",
            (NOVA,),
        )
    store = await LocalGrievanceStore.open(db, initial_state="pending")
    try:
        assert [g.key for g in await store.status(NOVA)] == ["GRV-1"]
        assert [p.local_key for p in await store.pending()] == ["GRV-1"]
        assert await store.claim("GRV-1", until=9e12) and not await store.claim("GRV-1", until=9e12)
        assert (await store.register(NOVA, "other", "new one")).key == "GRV-2"
    finally:
        await store.aclose()


async def test_a_grievance_database_from_before_moves_were_followed_records_a_move(tmp_path) -> None:
    import sqlite3

    from bot.tools.grievance_store import GrievanceEvent, LocalGrievanceStore

    db = tmp_path / "grievances.db"
    with sqlite3.connect(db) as conn:  # the tables as the versions before made them
        conn.executescript(
            "CREATE TABLE grievances (id INTEGER PRIMARY KEY AUTOINCREMENT, local_key TEXT UNIQUE,"
            " user_id TEXT NOT NULL, category TEXT NOT NULL, description TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'open', created_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
            " remote_key TEXT, push_state TEXT NOT NULL DEFAULT 'local_only',"
            " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);"
            "CREATE TABLE news_events (id INTEGER PRIMARY KEY AUTOINCREMENT, grievance_id INTEGER NOT NULL,"
            " kind TEXT NOT NULL);"
        )
        conn.execute(
            "INSERT INTO grievances (local_key, user_id, category, description, created_at,"
            " updated_at, remote_key, push_state)"
            " VALUES ('GRV-1', ?, 'wallet', 'old one', 'x', 'x', 'GRV-101', 'pushed')",
            (NOVA,),
        )
    for _ in range(2):  # opened again, nothing more to add
        store = await LocalGrievanceStore.open(db, initial_state="pending")
        await store.aclose()
    store = await LocalGrievanceStore.open(db, initial_state="pending")
    try:
        await store.follow("GRV-1", "SUP-101")
        events = [e for e in await store.news_events(0) if isinstance(e, GrievanceEvent)]
        assert [(e.kind, e.was, e.remote_key) for e in events] == [("moved", "GRV-101", "SUP-101")]
        assert await store.mark_gone("GRV-1") and await store.gone(NOVA) == {"GRV-1"}
    finally:
        await store.aclose()


async def test_a_grievance_the_database_refuses_is_kept_and_filed_later(tmp_path, caplog) -> None:
    import sqlite3

    from bot.tools.base import ToolError
    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    await store._conn.execute("PRAGMA busy_timeout=100")  # not the production 5 s wait
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        assert (await store.register(NOVA, "wallet", "first")).key == "GRV-1"
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the database
        with pytest.raises(ToolError, match="kept every word"):
            await store.register(NOVA, "wallet", "charged twice for gems")
        assert "charged twice for gems" in (tmp_path / "grievances.db.spool.jsonl").read_text()
        locker.execute("ROLLBACK")
        assert (await store.register(BLAZE, "other", "next one")).key == "GRV-3"  # the kept one first
        assert [(g.key, g.description) for g in await store.status(NOVA)] == [
            ("GRV-2", "charged twice for gems"),
            ("GRV-1", "first"),
        ]
        locker.execute("BEGIN EXCLUSIVE")  # and across a restart
        with pytest.raises(ToolError):
            await store.register(QUILL, "other", "lag spikes every evening")
        await store.aclose()
        locker.execute("ROLLBACK")
        store = await LocalGrievanceStore.open(db)
        assert [g.description for g in await store.status(QUILL)] == ["lag spikes every evening"]
        assert (tmp_path / "grievances.db.spool.jsonl").read_text() == ""  # filed, emptied
    finally:
        locker.close()
        await store.aclose()


STORE_WRITES = {
    "update_status": lambda s: s.update_status("GRV-1", "resolved", "2026-12-01T10:00:00Z"),
    "keep_local": lambda s: s.keep_local("GRV-1"),
    "mark_pushed": lambda s: s.mark_pushed("GRV-1", "VOX-1"),
    "record_attempt": lambda s: s.record_attempt("GRV-1", "Jira said no"),
    "claim": lambda s: s.claim("GRV-1", 1.0),
    "renew": lambda s: s.renew("GRV-1", 1.0, 2.0),
    "follow": lambda s: s.follow("GRV-1", "VOX-2"),
    "mark_gone": lambda s: s.mark_gone("GRV-1"),
    "drop_news_events": lambda s: s.drop_news_events(0),
    "add_staff_note": lambda s: s.add_staff_note("GRV-1", "staff", "called the player"),
    "set_status_by_staff": lambda s: s.set_status_by_staff("GRV-1", "closed", by="staff"),
}


@pytest.mark.parametrize("write", STORE_WRITES.values(), ids=STORE_WRITES.keys())
async def test_a_write_the_database_refuses_leaves_no_transaction_open(tmp_path, write) -> None:
    # Left open, the next read would hold this process to the database as it was then (another
    # process's changes unseen) and have every later write here refused as busy.
    async with store_and_locker(tmp_path) as (store, locker):
        await store.register(NOVA, "wallet", "charged twice")
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await write(store)
        locker.execute("ROLLBACK")
        await store.status(NOVA)  # the desk's next page, say
        locker.execute("UPDATE grievances SET description = 'charged three times' WHERE local_key = 'GRV-1'")
        assert [g.description for g in await store.status(NOVA)] == ["charged three times"]
        await write(store)


async def test_a_tickets_status_history_is_its_newest_changes_each_said_by_whom(tmp_path) -> None:
    from bot.app import StoragePaths
    from bot.db import written_by_newer
    from bot.tools.grievance_store import SCHEMA_VERSION, STATUS_CHANGES_KEPT

    from .test_db import user_version

    async with store_and_locker(tmp_path) as (store, locker):
        await store.register(NOVA, "wallet", "charged twice")
        await store.register(NOVA, "wallet", "charged three times")
        # Jira's word on a status unchanged (only its time) is no change.
        await store.update_status("GRV-1", "open", "2026-12-01T10:00:00Z")
        await store.update_status("GRV-1", "closed", "2026-12-01T11:00:00Z")
        assert await store.set_status_by_staff("GRV-2", "resolved", by="staff")
        assert not await store.set_status_by_staff("GRV-9", "resolved", by="staff")
        # Whoever changes a status says who: a desk route that forgot would record "staff".
        with pytest.raises(TypeError, match="'by'"):
            await store.set_status_by_staff("GRV-2", "open")  # type: ignore[call-arg]
        history = await store.status_history("GRV-1")
        assert [(c.at, c.from_status, c.to_status, c.changed_by) for c in history] == [
            ("2026-12-01T11:00:00Z", "open", "closed", "jira")
        ]
        for n in range(STATUS_CHANGES_KEPT):
            await store.set_status_by_staff("GRV-1", "open" if n % 2 else "in progress", by="staff")
        history = await store.status_history("GRV-1")
        assert len(history) == STATUS_CHANGES_KEPT and history[0].from_status == "closed"
        assert [(c.from_status, c.changed_by) for c in await store.status_history("GRV-2")] == [
            ("open", "staff")
        ]
        # A history edited by hand into something else is no history, not a desk that fails.
        locker.execute("UPDATE meta SET value = '{\"not\": 1}' WHERE name = 'status_history:2'")
        assert await store.status_history("GRV-2") == []
    # Kept in grievances.db as it is: the schema an older voxdesk opens after a rollback.
    assert SCHEMA_VERSION == user_version(tmp_path / "grievances.db") == 1
    written_by_newer(StoragePaths(tmp_path).grievances, 1)


async def test_kept_grievances_the_database_still_refuses_stay_in_the_spool(tmp_path) -> None:
    # Each filing first files the spool; the database still refusing, what is in the spool stays
    # there (emptied unfiled, those complaints would be lost though their players heard "kept").

    from bot.tools.base import ToolError

    async with store_and_locker(tmp_path) as (store, locker):
        locker.execute("BEGIN EXCLUSIVE")
        for words in ("charged twice for gems", "lag spikes every evening"):
            with pytest.raises(ToolError, match="kept every word"):
                await store.register(NOVA, "other", words)
        kept = (tmp_path / "grievances.db.spool.jsonl").read_text()
        locker.execute("ROLLBACK")
        await store.register(NOVA, "other", "refund missing")
        filed = [g.description for g in await store.status(NOVA)]
    assert "charged twice for gems" in kept and "lag spikes every evening" in kept
    assert sorted(filed) == ["charged twice for gems", "lag spikes every evening", "refund missing"]


async def test_a_note_whose_grievance_was_kept_files_it_once_when_answered_again(tmp_path) -> None:
    # The database refused the note's complaint (kept in the spool); the note's turn, run again
    # after the restart, files it under the same filing id: once, not a second ticket.

    from bot.tools.base import ToolError

    async with store_and_locker(tmp_path) as (store, locker):
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ToolError, match="kept every word"):
            await store.register(NOVA, "wallet", "charged twice", filing_id("discord", "42", 0))
        locker.execute("ROLLBACK")
        again = await store.register(NOVA, "wallet", "charged twice", filing_id("discord", "42", 0))
        filed = await store.status(NOVA)
    assert [g.key for g in filed] == [again.key]


async def test_the_grievance_spool_files_each_line_once_and_sets_aside_a_torn_one(tmp_path) -> None:
    import json

    from bot.tools.grievance_store import LocalGrievanceStore

    db, spool = tmp_path / "grievances.db", tmp_path / "grievances.db.spool.jsonl"
    kept = {
        "id": "a1",
        "user_id": NOVA,
        "category": "wallet",
        "description": "kept",
        "at": "x",
        "state": "local_only",
    }
    # As if a crash came between filing the spool and emptying it: the line is there again.
    for _ in range(2):
        spool.write_text(json.dumps(kept) + "\n" + '{"id": "b2", "user_id": "1", "categ\n')
        store = await LocalGrievanceStore.open(db)
        assert [g.description for g in await store.status(NOVA)] == ["kept"]
        await store.aclose()
    assert spool.read_text() == ""
    rejected = tmp_path / "grievances.db.spool.jsonl.rejected"
    assert rejected.read_text().count('"b2"') == 1  # the same torn line, set aside once
    assert rejected.stat().st_mode & 0o777 == 0o600  # a grievance's words, as in the spool


async def test_a_spool_line_finds_its_turns_grievances_without_reading_every_one(tmp_path) -> None:
    # After an outage the spool may hold hundreds of lines, and a year holds a million grievances:
    # each line read them all, holding the lock every player's filing waits on.
    from bot.tools import filing_turn, grievance_store

    await (await LocalGrievanceStore.open(tmp_path / "grievances.db")).aclose()
    turn = filing_turn("discord", "7")
    args = (turn, grievance_store.after_prefix(turn), len(turn), turn)
    with contextlib.closing(sqlite3.connect(tmp_path / "grievances.db")) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + grievance_store.IN_TURN, args)]
        ids = [filing_id("discord", r, n) for r in ("7", "70", "6", "8") for n in (0, 1)]
        ids += ["discord:7;", turn]  # just past the range, and its bound
        conn.executemany(
            "INSERT INTO grievances (user_id, category, description, created_at, updated_at, spool_id)"
            " VALUES ('u', 'bug', 'crash', '', '', ?)",
            [(i,) for i in ids],
        )
        found = sorted(row[0] for row in conn.execute(grievance_store.IN_TURN, args))
    assert plan == ["SEARCH grievances USING INDEX grievances_by_spool_id (spool_id>? AND spool_id<?)"], plan
    assert found == sorted(i for i in ids if i.startswith(turn))


async def test_a_spool_line_of_a_newer_format_is_set_aside_not_filed(tmp_path) -> None:
    # A newer voxdesk's line (a downgrade): its fields may mean what this version cannot know.
    import json

    from bot.tools.grievance_spool import FORMAT
    from bot.tools.grievance_store import LocalGrievanceStore

    db, spool = tmp_path / "grievances.db", tmp_path / "grievances.db.spool.jsonl"
    line = {"user_id": NOVA, "category": "wallet", "at": "x", "state": "local_only"}
    newer = {"id": "n1", "format": FORMAT + 1, "description": "newer", **line}
    older = {"id": "o1", "description": "older, from before lines had a format", **line}
    spool.write_text("".join(json.dumps(row) + "\n" for row in (newer, older)))
    store = await LocalGrievanceStore.open(db)
    try:
        assert [g.description for g in await store.status(NOVA)] == [older["description"]]
    finally:
        await store.aclose()
    rejected = tmp_path / "grievances.db.spool.jsonl.rejected"
    assert [json.loads(x)["id"] for x in rejected.read_text().splitlines()] == ["n1"]


def test_a_spool_line_says_its_format(tmp_path) -> None:
    import json

    from bot.tools.grievance_spool import FORMAT, GrievanceSpool

    spool = GrievanceSpool(tmp_path / "grievances.db.spool.jsonl")
    spool.keep("k1", user_id=NOVA, category="wallet", description="d", at="x", state="local_only")
    assert json.loads(spool.path.read_text())["format"] == FORMAT == 1


async def test_a_torn_line_is_set_aside_once_while_the_database_refuses_the_spool(tmp_path, caplog) -> None:
    # Each retry reads the spool again, torn line and all, until its filing goes through: the line
    # went to .rejected (and to the log) once per retry.
    import json
    import sqlite3

    from bot.tools.grievance_store import LocalGrievanceStore

    db, spool = tmp_path / "grievances.db", tmp_path / "grievances.db.spool.jsonl"
    rejected = tmp_path / "grievances.db.spool.jsonl.rejected"
    store = await LocalGrievanceStore.open(db)
    await store._conn.execute("PRAGMA busy_timeout=100")  # not the production 30 s wait
    kept = {"id": "a1", "user_id": NOVA, "category": "wallet", "description": "kept", "at": "x"}
    spool.write_text(
        '{"id": "b2", "user_id": "1", "categ\n' + json.dumps({**kept, "state": "local_only"}) + "\n"
    )
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the database
        for _ in range(3):
            assert await store.file_spooled() == 0
        assert rejected.read_text() == '{"id": "b2", "user_id": "1", "categ\n'
        locker.execute("ROLLBACK")
        assert await store.file_spooled() == 1
        assert [g.description for g in await store.status(NOVA)] == ["kept"]
    finally:
        locker.close()
        await store.aclose()
    assert spool.read_text() == "" and rejected.read_text() == '{"id": "b2", "user_id": "1", "categ\n'
    assert sum("unreadable line" in r.getMessage() for r in caplog.records) == 1


async def test_a_line_torn_inside_a_character_is_set_aside_and_the_store_opens(tmp_path) -> None:
    # A crash or a full disk can cut a line inside a multi-byte character: reading the spool raised
    # UnicodeDecodeError, and the grievance store (and so the bot) would not open.
    import json

    from bot.tools.grievance_store import LocalGrievanceStore

    spool = tmp_path / "grievances.db.spool.jsonl"
    kept = {"id": "a1", "user_id": NOVA, "category": "wallet", "description": "caf\u00e9", "at": "x"}
    torn = b'{"id": "b2", "description": "caf' + "\u00e9".encode()[:1]
    spool.write_bytes(torn + b"\n" + json.dumps({**kept, "state": "local_only"}).encode() + b"\n")
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        assert [g.description for g in await store.status(NOVA)] == ["caf\u00e9"]
    finally:
        await store.aclose()
    assert spool.read_text() == ""
    rejected = (tmp_path / "grievances.db.spool.jsonl.rejected").read_text()
    assert rejected == '{"id": "b2", "description": "caf\ufffd\n'


async def test_a_torn_line_is_synced_in_rejected_before_the_spool_is_emptied(tmp_path, monkeypatch) -> None:
    import os

    from bot.tools import grievance_spool
    from bot.tools.grievance_store import LocalGrievanceStore

    spool = tmp_path / "grievances.db.spool.jsonl"
    spool.write_text('{"id": "a1", "user_id": "1111\n')
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(grievance_spool.os, "fsync", fsync)
    await (await LocalGrievanceStore.open(tmp_path / "grievances.db")).aclose()
    # Set aside, its new name in the folder first (else a power cut could lose the file with it:
    # a line of a newer voxdesk's is a whole grievance), then emptied.
    assert synced == [tmp_path.name, f"{spool.name}.rejected", spool.name]
    spool.write_text('{"id": "a2", "user_id": "1111\n')
    synced.clear()
    await (await LocalGrievanceStore.open(tmp_path / "grievances.db")).aclose()
    assert synced == [f"{spool.name}.rejected", spool.name]  # added to: its name is on disk


async def test_a_grievance_kept_after_a_torn_line_is_not_set_aside_with_it(tmp_path) -> None:
    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import LocalGrievanceStore

    spool = tmp_path / "grievances.db.spool.jsonl"
    spool.write_text('{"id": "a1", "user_id": "1111')  # a crash cut this line, newline and all
    GrievanceSpool(spool).keep(
        user_id=BLAZE, category="wallet", description="charged twice", at="t", state="local_only"
    )
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        assert [g.description for g in await store.status(BLAZE)] == ["charged twice"]
    finally:
        await store.aclose()
    assert (tmp_path / "grievances.db.spool.jsonl.rejected").read_text() == '{"id": "a1", "user_id": "1111\n'


def test_a_torn_line_set_aside_after_one_cut_in_rejected_starts_a_line_of_its_own(tmp_path) -> None:
    # .rejected's last copy was cut by a full disk, newline and all: the next torn line glued to
    # it would make the two one line, neither's words whole where an operator reads them.
    from bot.tools.grievance_spool import GrievanceSpool

    spool = GrievanceSpool(tmp_path / "grievances.db.spool.jsonl")
    spool.rejected.write_text('{"id": "a1", "user_id": "1111')
    spool.path.write_text('{"id": "b2", "user_id": "2222\n')
    assert spool.take() is None  # nothing to file: the torn line set aside, the spool emptied
    assert spool.rejected.read_text().splitlines() == [
        '{"id": "a1", "user_id": "1111',
        '{"id": "b2", "user_id": "2222',
    ]


async def test_a_torn_line_the_full_disk_cannot_set_aside_leaves_the_spool_unlocked(
    tmp_path, monkeypatch
) -> None:
    # A full disk tears a line and then refuses its copy to .rejected: the spool stayed locked by
    # a descriptor nobody closed, every later keep() in the process waited for ever, and nothing
    # was filed from the spool again until a restart.
    import errno
    import json
    import os

    from bot.tools import grievance_spool
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    spool = tmp_path / "grievances.db.spool.jsonl"
    good = {
        "id": "a2",
        "user_id": NOVA,
        "category": "wallet",
        "description": "kept",
        "at": "x",
        "state": "local_only",
    }
    spool.write_text('{"id": "a1", "user_id": "1111\n' + json.dumps(good) + "\n")
    real_open = os.open

    def full_disk(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if str(path).endswith(".rejected"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    try:
        monkeypatch.setattr(grievance_spool.os, "open", full_disk)
        assert await store.file_spooled() == 1  # the torn line left in the spool
        monkeypatch.undo()
        assert await store.file_spooled() == 0  # and set aside now
        assert [g.description for g in await store.status(NOVA)] == ["kept"]
        assert spool.read_text() == ""
    finally:
        await store.aclose()


async def test_a_torn_line_rejected_cannot_take_leaves_the_grievances_beside_it_filed(
    tmp_path, monkeypatch, caplog
) -> None:
    # .rejected unwritable (a file or folder of another owner): the spool was never filed, and said
    # so every 30 s. The torn line stays in the spool, said once; the grievances beside it are filed.
    import errno
    import json
    import logging
    import os

    from bot.tools import grievance_spool
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    spool = tmp_path / "grievances.db.spool.jsonl"
    rejected = tmp_path / "grievances.db.spool.jsonl.rejected"
    torn = '{"id": "a1", "user_id": "1111'
    good = {"id": "a2", "user_id": NOVA, "category": "wallet", "description": "kept", "at": "x"}
    spool.write_text(torn + "\n" + json.dumps({**good, "state": "local_only"}) + "\n")
    real_open = os.open

    def not_ours(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if str(path).endswith(".rejected"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode)

    try:
        with monkeypatch.context() as m:
            m.setattr(grievance_spool.os, "open", not_ours)
            caplog.clear()
            assert await store.file_spooled() == 1
            for _ in range(3):  # the refiler's rounds
                assert await store.file_spooled() == 0
            assert spool.read_text() == torn + "\n"
            said = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(said) == 1 and torn in said[0].getMessage(), [r.getMessage() for r in said]
        assert [g.description for g in await store.status(NOVA)] == ["kept"]
        assert await store.file_spooled() == 0  # .rejected writable again: set aside there
        assert spool.read_text() == "" and rejected.read_text() == torn + "\n"
    finally:
        await store.aclose()


async def test_a_spool_filing_cancelled_twice_lets_the_spool_go(tmp_path, monkeypatch) -> None:
    # A shutdown cancels the filing of the spool, and cancels again (a second SIGTERM) while it
    # rolls back: the spool's lock must not stay with a descriptor nobody will close.
    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    spool = GrievanceSpool.beside(tmp_path / "grievances.db")
    spool.keep("a1", user_id=NOVA, category="wallet", description="kept", at="x", state="local_only")

    async def cancelled(*args: object, **kwargs: object) -> None:
        raise asyncio.CancelledError

    try:
        monkeypatch.setattr(store, "_insert", cancelled)
        monkeypatch.setattr(store, "_rollback_cut_short", cancelled)
        with pytest.raises(asyncio.CancelledError):
            await store.file_spooled()
        monkeypatch.undo()
        assert await store.file_spooled() == 1
    finally:
        await store.aclose()


async def test_a_spool_the_disk_will_not_empty_is_filed_once_and_filing_goes_on(
    tmp_path, monkeypatch
) -> None:
    # file_spooled() runs before every filing and must never raise: an I/O error emptying the
    # spool after its grievances were committed would turn the next complaint into an apology.
    import errno

    from bot.tools import grievance_spool
    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    GrievanceSpool.beside(tmp_path / "grievances.db").keep(
        "a1", user_id=NOVA, category="wallet", description="kept", at="x", state="local_only"
    )

    def failing(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    try:
        monkeypatch.setattr(grievance_spool.os, "ftruncate", failing)
        assert await store.file_spooled() == 1
        monkeypatch.undo()
        filed = await store.register(NOVA, "other", "lag spikes")
        assert filed.key
        assert [g.description for g in await store.status(NOVA)].count("kept") == 1
    finally:
        await store.aclose()


def test_a_spool_line_the_disk_takes_in_part_is_finished_or_refused(tmp_path, monkeypatch) -> None:
    import errno
    import json
    import os

    from bot.tools import grievance_spool

    real_write = os.write
    monkeypatch.setattr(grievance_spool.os, "write", lambda fd, data: real_write(fd, data[:10]))
    spool = grievance_spool.GrievanceSpool(tmp_path / "g.spool.jsonl")
    spool.keep(user_id=BLAZE, category="wallet", description="charged twice", at="t", state="local_only")
    assert json.loads(spool.path.read_text())["description"] == "charged twice"

    def full_disk(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(grievance_spool.os, "write", full_disk)
    with pytest.raises(OSError):  # so the player hears it was not kept
        spool.keep(user_id=BLAZE, category="wallet", description="lost my gems", at="t", state="local_only")


def test_a_spool_line_the_full_disk_took_in_part_leaves_no_part_to_set_aside(tmp_path, monkeypatch) -> None:
    """A keep the full disk refused half-way left the part it took: set aside in .rejected as a
    grievance's last copy (staff file those by hand, `check` warns of them), while the grievance
    itself, held in memory, was kept whole and filed once the disk took it: a second ticket."""
    import errno
    import os

    from bot.tools import grievance_spool

    spool = grievance_spool.GrievanceSpool(tmp_path / "g.spool.jsonl")
    row = {"user_id": BLAZE, "category": "wallet", "at": "t", "state": "local_only"}
    spool.keep("discord:1:0", description="charged twice", **row)
    before = spool.path.read_bytes()
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(grievance_spool.os, "write", full_disk)
    with pytest.raises(OSError):
        spool.keep("discord:2:0", description="lost my gems", **row)
    monkeypatch.setattr(grievance_spool.os, "write", real_write)
    assert spool.path.read_bytes() == before
    spool.keep("discord:2:0", description="lost my gems", **row)  # held, kept once the disk takes it
    taken = spool.take()
    assert taken is not None
    spool.release(taken[0])
    assert [r["id"] for r in taken[1]] == ["discord:1:0", "discord:2:0"]
    assert not spool.rejected.exists()


def fill_the_disk(store: LocalGrievanceStore, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The grievance database and its spool refuse every write, as on a full disk; what it
    returns frees the disk."""
    import errno

    from bot.tools import grievance_spool

    real_insert, real_write = store._insert, grievance_spool.os.write

    async def full_database(*args: object, **kwargs: object) -> str | None:
        raise sqlite3.OperationalError("database or disk is full")

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_insert", full_database)
    monkeypatch.setattr(grievance_spool.os, "write", full_disk)

    def free() -> None:
        monkeypatch.setattr(store, "_insert", real_insert)
        monkeypatch.setattr(grievance_spool.os, "write", real_write)

    return free


async def test_a_grievance_neither_the_database_nor_the_disk_takes_is_held_and_filed_later(
    tmp_path, monkeypatch
) -> None:
    # A full or read-only disk refuses the database and the spool alike: the player heard "try
    # again later" and the complaint was in the log alone. It is held in memory and filed, and
    # told by ticket news, once the disk takes it again.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        free = fill_the_disk(store, monkeypatch)
        with pytest.raises(ToolError) as told:
            await store.register(NOVA, "wallet", "charged twice", "discord:42:0")
        assert str(told.value) == say.HELD_FOR_LATER
        assert await store.file_spooled() == 0 and await store.status(NOVA) == []  # still full

        free()
        assert await store.file_spooled() == 1 and await store.file_spooled() == 0
        (filed,) = await store.status(NOVA)
        assert filed.description == "charged twice"
        (event,) = await store.news_events(0)
        assert event.kind == "filed_late" and event.spool_id == "discord:42:0"
    finally:
        await store.aclose()


async def test_a_grievance_whose_commit_is_refused_is_filed_late_and_told_by_news(
    tmp_path, monkeypatch
) -> None:
    # The row went in and its commit was refused (a full disk): the player hears it is kept for
    # later. Left open, the row would be committed by the next write on the connection as one
    # filed on time, the spool's copy would find it and file nothing, and no ticket news would
    # ever tell the player its key.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        real_commit = store._conn.commit
        refusals = [sqlite3.OperationalError("database or disk is full")]

        async def refused_once() -> None:
            if refusals:
                raise refusals.pop()
            await real_commit()

        monkeypatch.setattr(store._conn, "commit", refused_once)
        with pytest.raises(ToolError) as told:
            await store.register(NOVA, "wallet", "charged twice", "discord:42:0")
        assert str(told.value) == say.KEPT_FOR_LATER
        assert await store.file_spooled() == 1
        (filed,) = await store.status(NOVA)
        assert filed.description == "charged twice"
        (event,) = await store.news_events(0)
        assert event.kind == "filed_late" and event.spool_id == "discord:42:0"
    finally:
        await store.aclose()


async def test_a_grievance_held_in_memory_is_filed_by_the_refiler_and_let_go(tmp_path, monkeypatch) -> None:
    # Nothing waits in the spool (the disk refused it too): the refiler must file what memory
    # holds all the same, or it waits for another player's complaint or a stop, and a kill loses
    # it. Filed, it is no longer held, nor said to wait unfiled.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        free = fill_the_disk(store, monkeypatch)
        with pytest.raises(ToolError) as told:
            await store.register(NOVA, "wallet", "charged twice", "discord:42:0")
        assert str(told.value) == say.HELD_FOR_LATER
        free()
        await store.start(every=0.02)
        deadline = asyncio.get_running_loop().time() + 20
        # Not status(), which files what is kept itself.
        while not await store.staff_count():
            assert asyncio.get_running_loop().time() < deadline, "the held complaint was never filed"
            await asyncio.sleep(0.02)
        assert await store.check() == "local grievance store: 1 grievances"
    finally:
        await store.aclose()


async def test_check_with_jira_removed_says_how_many_grievances_still_wait_for_it(tmp_path) -> None:
    # Jira dropped (tools.grievances = "local") while grievances waited in its outbox: they are
    # kept and go once Jira is on again, and the operator who removed it is told so.
    db = tmp_path / "grievances.db"
    outbox = await LocalGrievanceStore.open(db, initial_state="pending")  # as Jira's backend opens it
    try:
        await outbox.register(NOVA, "wallet", "charged twice")
        await outbox.register(BLAZE, "other", "lag every evening")
    finally:
        await outbox.aclose()
    store = await LocalGrievanceStore.open(db)
    try:
        await store.register(NOVA, "other", "filed with Jira off")
        said = await store.check()
    finally:
        await store.aclose()
    assert said == (
        "local grievance store: 3 grievances; 2 wait for Jira, which is off: they go to Jira"
        " once tools.grievances is jira again"
    )
    # None waiting, none said: the line is the count alone.
    alone = await LocalGrievanceStore.open(tmp_path / "local.db")
    try:
        await alone.register(NOVA, "other", "filed with Jira never on")
        assert await alone.check() == "local grievance store: 1 grievances"
    finally:
        await alone.aclose()


async def test_a_complaint_kept_both_chosen_and_unchosen_is_filed_once(tmp_path) -> None:
    # A turn's complaint kept under the id it chose, and kept again by a run of the turn that
    # could not choose: the chosen line is filed first, and the unchosen one, matched against
    # it, files nothing. The other way round the unchosen one would take the turn's next id and
    # the player would have two tickets for one complaint.
    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import UNCHOSEN, utc_now

    spool = GrievanceSpool.beside(tmp_path / "grievances.db")
    words = "charged twice for gems"
    row = {"user_id": NOVA, "category": "wallet", "description": words, "state": "local_only"}
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        spool.keep(f"discord:42:{UNCHOSEN}0f3a", at=utc_now(), **row)
        spool.keep("discord:42:0", at=utc_now(), **row)
        assert await store.file_spooled() == 1
        assert [g.description for g in await store.status(NOVA)] == [words]
    finally:
        await store.aclose()


async def test_a_grievance_memory_has_no_room_for_is_not_told_it_is_held(tmp_path, monkeypatch) -> None:
    # The database and the disk refuse it and memory holds as many as it may: told "held for
    # later", the player would wait for a ticket nothing keeps. The refusal is the database's.
    from bot.tools import grievance_store

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        fill_the_disk(store, monkeypatch)
        monkeypatch.setattr(grievance_store, "MAX_HELD", 0)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            await store.register(NOVA, "wallet", "charged twice", "discord:42:0")
        assert not store._held
    finally:
        await store.aclose()


async def test_a_grievance_held_while_the_disk_was_full_is_listed_once_the_disk_takes_it(
    tmp_path, monkeypatch
) -> None:
    # The player heard "ask me about your tickets in a little while; if it isn't there, tell me
    # again": asked once the disk took writes again, it was not there until ticket news's next
    # poll (a minute; never, with news off), and telling it again filed it twice.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        free = fill_the_disk(store, monkeypatch)
        with pytest.raises(ToolError):
            await store.register(NOVA, "wallet", "charged twice", "discord:42:0")
        assert await store.status(NOVA) == []  # still full
        free()
        (listed,) = await store.status(NOVA)
        assert listed.description == "charged twice"
        assert [g.key for g in await store.status(NOVA, listed.key)] == [listed.key]
    finally:
        await store.aclose()


async def test_a_grievance_whose_first_read_the_database_refuses_is_kept(tmp_path, monkeypatch) -> None:
    # Before filing, a complaint chooses its filing id from what its turn filed before: a damaged
    # page or a failing disk refusing that read lost the complaint ("that part of me isn't
    # working") where a refused write keeps it in the spool.
    from bot import sentences as say
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:

        async def damaged(*args: object) -> None:
            raise sqlite3.DatabaseError("database disk image is malformed")

        monkeypatch.setattr(store, "_filings_of_turn", damaged)
        with pytest.raises(ToolError, match=say.KEPT_FOR_LATER[:30]):
            await complaint_filer(store)(
                ToolContext(user_id=NOVA, request_id="42"), "wallet", "charged twice"
            )
        monkeypatch.undo()
        assert await store.file_spooled() == 1
        assert [g.description for g in await store.status(NOVA)] == ["charged twice"]
    finally:
        await store.aclose()


async def test_a_filing_cancelled_while_the_database_is_busy_is_kept_once_not_half_done(
    tmp_path, monkeypatch
) -> None:
    # A shutdown's grace running out cancels the turn while another process holds the database:
    # aiosqlite still runs the queued INSERT, and the next commit (anyone's) would commit it
    # keyless. The filing is rolled back and kept in the spool; its filing id files it once.
    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    await store._conn.execute("PRAGMA busy_timeout=1000")  # not the production 30 s wait
    real_execute, queued = store._conn.execute, asyncio.Event()

    def execute(sql: str, *args: object) -> object:
        if sql.startswith("INSERT INTO grievances"):
            queued.set()  # handed to aiosqlite's thread, which waits on the busy database
        return real_execute(sql, *args)

    monkeypatch.setattr(store._conn, "execute", execute)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        task = asyncio.create_task(store.register(NOVA, "wallet", "charged twice", "discord:42:wallet:0"))
        await asyncio.wait_for(queued.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        locker.execute("ROLLBACK")
        await store.register(BLAZE, "other", "lag")  # files the spool first
        (kept,) = await store.status(NOVA)
        assert kept.description == "charged twice"
        again = await store.register(NOVA, "wallet", "charged twice", "discord:42:wallet:0")  # re-run
        assert again.key == kept.key and [g.key for g in await store.status(NOVA)] == [again.key]
        keyless = locker.execute("SELECT count(*) FROM grievances WHERE local_key IS NULL").fetchone()
        assert keyless == (0,)
    finally:
        locker.close()
        await store.aclose()


async def test_a_filing_with_no_filing_id_stopped_after_its_commit_landed_is_filed_once(
    tmp_path, monkeypatch
) -> None:
    # A CLI `ask` (no note, so no filing id) stopped with Ctrl-C while its commit ran: aiosqlite
    # commits all the same, and the copy kept for the cut-short filing must not file it again.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        real_commit = store._conn.commit

        async def landed_then_stopped() -> None:
            await real_commit()
            raise asyncio.CancelledError

        with monkeypatch.context() as m:
            m.setattr(store._conn, "commit", landed_then_stopped)
            with pytest.raises(asyncio.CancelledError):
                await store.register(NOVA, "wallet", "charged twice")
        assert store._spool.waiting()  # kept: the stop may have come before the commit
        await store.file_spooled()
        listed = [g.description for g in await store.status(NOVA)]
    finally:
        await store.aclose()
    assert listed == ["charged twice"]


async def test_a_grievance_is_on_disk_when_its_key_is_told_not_only_in_the_wal(tmp_path) -> None:
    # synchronous=NORMAL in WAL mode leaves the last commits to the OS's write-back: a power cut
    # takes them, and with them the next filing reuses the key the player was told.
    from bot.conversations import ConversationStore
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    history = await ConversationStore.open(tmp_path / "conversations.db", 8, 30.0)
    try:
        full, normal = 2, 1
        assert [tuple(r) for r in await store._conn.execute_fetchall("PRAGMA synchronous")] == [(full,)]
        # History is cheap to lose: its commits are not made to wait for the disk.
        assert [tuple(r) for r in await history._conn.execute_fetchall("PRAGMA synchronous")] == [(normal,)]
    finally:
        await history.aclose()
        await store.aclose()


async def test_a_grievance_store_emptied_to_no_bytes_is_said_at_start(tmp_path, caplog) -> None:
    # A damaged file stops the start with its name; an emptied one is a valid new database to
    # SQLite, and the bot went on as if no grievance had ever been filed.
    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    for _ in range(2):  # made new, then opened again: nothing to say
        await (await LocalGrievanceStore.open(db)).aclose()
    assert "empty file" not in caplog.text
    db.write_bytes(b"")
    await (await LocalGrievanceStore.open(db)).aclose()
    (said,) = [r.getMessage() for r in caplog.records if "empty file" in r.getMessage()]
    assert said.startswith(f"{db} was an empty file") and "restore it from a backup" in said


async def test_a_row_filed_without_its_key_gets_it_when_the_store_opens(tmp_path) -> None:
    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    await store.aclose()
    with sqlite3.connect(db) as conn:  # as a filing cut short by an older version left it
        conn.execute("DROP TRIGGER grievance_key")
        conn.execute(
            "INSERT INTO grievances (user_id, category, description, created_at, updated_at)"
            " VALUES (?, 'wallet', 'charged twice', 'x', 'x')",
            (NOVA,),
        )
    store = await LocalGrievanceStore.open(db)
    try:
        assert [g.key for g in await store.status(NOVA)] == ["GRV-1"]
    finally:
        await store.aclose()


async def test_a_grievance_kept_while_another_process_files_the_spool_waits_for_it(tmp_path) -> None:
    import fcntl
    import os
    import threading

    from bot.tools.grievance_spool import GrievanceSpool

    spool = GrievanceSpool(tmp_path / "g.spool.jsonl")
    spool.keep(user_id=NOVA, category="other", description="first", at="x", state="local_only")
    taken = spool.take()  # this process is "filing": it holds the lock
    assert taken is not None and [r["description"] for r in taken[1]] == ["first"]
    assert spool.take() is None  # a second filer stands aside
    other = threading.Thread(
        target=spool.keep,
        kwargs={
            "user_id": BLAZE,
            "category": "other",
            "description": "second",
            "at": "x",
            "state": "local_only",
        },
    )
    other.start()
    await until_flock_waited_for(spool.path)  # waiting, not appending to what is about to be emptied
    assert other.is_alive()
    spool.finish(taken[0])
    other.join(5)
    assert not other.is_alive()
    taken = spool.take()
    assert taken is not None and [r["description"] for r in taken[1]] == ["second"]
    spool.release(taken[0])
    fd = os.open(spool.path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: free to lock
    os.close(fd)


async def test_a_note_heard_again_files_its_grievance_once(settings, scripted_app_engine) -> None:
    # A turn re-run for the same note (the bot was killed mid-turn and answers it after the
    # restart) must find the ticket it filed, not file a second one.
    note = ToolContext(user_id=NOVA, request_id="930000000000000123")
    again = ToolContext(user_id=NOVA, request_id="930000000000000123")
    other_note = ToolContext(user_id=NOVA, request_id="930000000000000124")
    complaint = call("register_grievance", category="wallet", description="charged twice")
    async with running_app(settings, scripted_app_engine) as app:
        first = (await app.toolbox.run(note, complaint)).result
        second = (
            await app.toolbox.run(
                again, call("register_grievance", category="wallet", description="I was charged twice")
            )
        ).result
        third = (await app.toolbox.run(other_note, complaint)).result
        listed = await run(app, NOVA, "get_grievance_status")
    assert second["ticket_key"] == first["ticket_key"]
    assert third["ticket_key"] != first["ticket_key"]
    keys = [t["ticket_key"] for t in listed["tickets"]]
    assert keys.count(first["ticket_key"]) == 1 and len(keys) == len(set(keys))


async def test_a_filing_id_never_returns_another_players_ticket(tmp_path) -> None:
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        await store.register(NOVA, "wallet", "mine", filing_id="discord:1:wallet")
        with pytest.raises(RuntimeError):
            await store.register(BLAZE, "wallet", "theirs", filing_id="discord:1:wallet")
    finally:
        await store.aclose()


async def test_a_key_heard_in_an_answer_is_the_speakers_ticket_not_anothers_jira_key(tmp_path) -> None:
    # A Jira project numbering like the local store: Blaze's GRV-1 reached Jira as GRV-2, the local
    # key Nova is told. Her hearing GRV-2 leaves Blaze's ticket, whose key he never heard, to news.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        blaze = await store.register(BLAZE, "wallet", "blaze's pass", filing_id="discord:1:0", untold=True)
        nova = await store.register(NOVA, "wallet", "nova's pass", filing_id="discord:2:0", untold=True)
        assert (blaze.key, nova.key) == ("GRV-1", "GRV-2")
        await store.mark_pushed("GRV-1", "GRV-2")
        assert await store.heard(NOVA, "discord:2:", ["GRV-2"]) == [("GRV-2", None)]
        assert await store.heard(BLAZE, "discord:1:", ["GRV-1"]) == [("GRV-1", "GRV-2")]
    finally:
        await store.aclose()


async def test_a_key_heard_at_filing_is_that_ticket_not_the_jira_key_of_an_untold_one(tmp_path) -> None:
    # A Jira project numbering like the local store: Nova's GRV-1, filed late (she never heard its
    # key), reached Jira as GRV-2; then she files again and hears the new ticket's local GRV-2.
    # Her first ticket's key is still untold: ticket news is to tell it.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        late = await store.register(
            NOVA, "wallet", "charged twice for the pass", filing_id="discord:1:0", untold=True
        )
        await store.mark_pushed(late.key, "GRV-2")
        new = await store.register(NOVA, "other", "a cheater in match five", filing_id="discord:2:0")
        assert (late.key, new.key) == ("GRV-1", "GRV-2")
        assert await store.heard(NOVA, "discord:2:", ["GRV-2"]) == []
        assert await store.heard(NOVA, "discord:1:", ["GRV-1"]) == [("GRV-1", "GRV-2")]
    finally:
        await store.aclose()


async def test_a_jira_key_heard_at_filing_is_not_the_local_key_of_another_untold_ticket(tmp_path) -> None:
    # A Jira project numbering like the local store: Nova's note, cut by a restart, was filed late
    # as GRV-1 and reached Jira as GRV-2; another complaint of hers, from another note, was filed
    # late as GRV-2. The note answered again tells its ticket's Jira key, GRV-2: her other ticket's
    # key is still untold, and ticket news is to tell it.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        answered = await store.register(NOVA, "wallet", "charged twice", filing_id="discord:7:0", untold=True)
        other = await store.register(NOVA, "other", "a cheater", filing_id="discord:8:0", untold=True)
        await store.mark_pushed(answered.key, "GRV-2")
        assert (answered.key, other.key) == ("GRV-1", "GRV-2")
        assert await store.heard(NOVA, "discord:7:", ["GRV-2"]) == [("GRV-1", "GRV-2")]
        assert await store.heard(NOVA, "discord:8:", ["GRV-2"]) == [("GRV-2", None)]
    finally:
        await store.aclose()


async def test_a_jira_key_heard_that_is_the_local_key_of_another_filing_of_the_turn_tells_neither(
    tmp_path,
) -> None:
    # One note, two complaints, a Jira project numbering like the local store: the first, filed
    # late as GRV-1, reached Jira as GRV-2; the second is GRV-2 here and was told at filing. The
    # answer's GRV-2 is the second's: the first's key is still untold.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        late = await store.register(NOVA, "wallet", "charged twice", filing_id="discord:7:0", untold=True)
        await store.mark_pushed(late.key, "GRV-2")
        told = await store.register(NOVA, "other", "a cheater", filing_id="discord:7:1")
        assert (late.key, told.key) == ("GRV-1", "GRV-2")
        assert await store.heard(NOVA, "discord:7:", ["GRV-2"]) == []
        assert await store.heard(NOVA, "discord:7", ["GRV-1"]) == []  # a prefix of discord:70: too
        assert await store.heard(NOVA, "", ["GRV-1"]) == []
        assert await store.heard(NOVA, "discord:7:", ["GRV-1"]) == [("GRV-1", "GRV-2")]
    finally:
        await store.aclose()


async def test_alike_complaints_of_two_players_under_one_turn_are_each_their_own(tmp_path) -> None:
    # A turn's filing ids ("platform:request:") are one player's; should two players' ever meet,
    # neither is taken for the other's filing, kept or filed.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    file = complaint_filer(store)
    try:
        nova = await file(ToolContext(user_id=NOVA, request_id="1"), "wallet", "charged twice for my pass")
        blaze = await file(ToolContext(user_id=BLAZE, request_id="1"), "wallet", "charged twice for the pass")
        (theirs,) = await store.status(BLAZE)
    finally:
        await store.aclose()
    assert blaze != nova and theirs.key == blaze
    assert theirs.description == "charged twice for the pass"


async def test_a_kept_complaint_under_another_players_filing_id_is_filed_though_its_words_match(
    tmp_path,
) -> None:
    # Two players say the very same words; should their filings ever meet under one id, the kept
    # one is not taken for the other's ticket filed before.
    from bot.tools.grievance_spool import GrievanceSpool

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    file = complaint_filer(store)
    try:
        nova = await file(ToolContext(user_id=NOVA, request_id="1"), "wallet", "charged twice for my pass")
        GrievanceSpool.beside(tmp_path / "grievances.db").keep(
            filing_id("discord", "1", 0),
            user_id=BLAZE,
            category="wallet",
            description="charged twice for my pass",
            at="2026-12-05T23:00:00Z",
            state="local_only",
        )
        assert await store.file_spooled() == 1
        (theirs,) = await store.status(BLAZE)
    finally:
        await store.aclose()
    assert theirs.key != nova and theirs.description == "charged twice for my pass"


async def test_two_complaints_of_one_category_in_one_note_are_two_tickets_once(
    settings, scripted_app_engine
) -> None:
    def turn() -> ToolContext:  # each run of the note's turn has a context of its own
        return ToolContext(user_id=NOVA, request_id="930000000000000125")

    deposit = call("register_grievance", category="wallet", description="deposit never arrived")
    refund = call("register_grievance", category="wallet", description="refund missing")
    async with running_app(settings, scripted_app_engine) as app:
        first = turn()
        keys = [(await app.toolbox.run(first, c)).result["ticket_key"] for c in (deposit, refund)]
        again = turn()
        rerun = [(await app.toolbox.run(again, c)).result["ticket_key"] for c in (deposit, refund)]
        listed = await run(app, NOVA, "get_grievance_status", private=True)
    assert keys[0] != keys[1] and rerun == keys
    descriptions = {t["ticket_key"]: t["summary"] for t in listed["tickets"]}
    assert descriptions[keys[1]] == "refund missing"


async def test_a_note_answered_again_with_its_complaints_in_the_other_order_keeps_each_ones_key(
    settings, scripted_app_engine
) -> None:
    # A cloud model answering the note again files the same two complaints, the other way round
    # and worded a little differently, side by side in one round.
    def turn() -> ToolContext:
        return ToolContext(user_id=NOVA, request_id="930000000000000131")

    gems = call("register_grievance", category="wallet", description="My gems vanished after the update")
    points = call(
        "register_grievance", category="reward_points", description="Weekly reward points never arrived"
    )
    points_again = call(
        "register_grievance",
        category="reward_points",
        description="The weekly reward points have not arrived",
    )
    gems_again = call(
        "register_grievance", category="other", description="Gems vanished after the latest update"
    )
    lag = call("register_grievance", category="gaming_experience", description="Lag spikes every evening")
    async with running_app(settings, scripted_app_engine) as app:
        before = len(await app.grievances.status(NOVA, limit=100))
        first = [r.result["ticket_key"] for r in await app.toolbox.run_all(turn(), [gems, points])]
        again = [
            r.result["ticket_key"] for r in await app.toolbox.run_all(turn(), [points_again, gems_again])
        ]
        # A third run: a complaint the earlier runs never filed comes first, where gems were.
        third = [r.result["ticket_key"] for r in await app.toolbox.run_all(turn(), [lag, gems_again])]
        listed = {g.key: g.description for g in await app.grievances.status(NOVA, limit=100)}
    assert again == [first[1], first[0]]
    assert third[1] == first[0] and third[0] not in first
    assert len(listed) == before + 3
    assert listed[third[0]] == "Lag spikes every evening"


def test_a_complaint_worded_again_is_alike_and_two_complaints_are_not() -> None:
    from bot.tools import SAME_COMPLAINT, likeness

    assert likeness("charged twice", "I was charged twice") >= SAME_COMPLAINT
    assert (
        likeness("Charged twice for the battle pass", "Player was charged twice for battle pass")
        >= SAME_COMPLAINT
    )
    assert likeness("deposit never arrived", "refund missing") < SAME_COMPLAINT
    assert likeness("my gems vanished from my wallet", "my wallet was charged twice") < SAME_COMPLAINT
    # "arrived" and "arriving" are one word; words too short to tell are compared as they are
    assert likeness("refund not arriving", "refund never arrived") >= SAME_COMPLAINT
    assert likeness("my xp", "My  XP") == 1.0 and likeness("my xp", "my hp") == 0.0


def _filings(earlier: list[tuple[str, str, str]], complaints: list[tuple[str, str]], side_by_side: bool):
    """The filing ids register_grievance chooses for `complaints` (category, words) of a run of
    turn discord:7 that earlier runs filed `earlier` under: filed side by side in one round (all
    counted before any chooses), or one round after another."""
    from bot.tools import filing_for

    ctx = ToolContext(user_id=NOVA, request_id="7")

    def count(category: str, words: str) -> int:
        nth = len(ctx.filed)
        ctx.filed.append(category)
        ctx.complaints[nth] = words
        return nth

    def choose(nth: int, category: str) -> str:
        ctx.filings[nth] = filing_for(ctx, nth, category, earlier)
        return ctx.filings[nth]

    if side_by_side:
        places = [count(*c) for c in complaints]
        return [choose(n, c[0]) for n, c in zip(places, complaints, strict=True)]
    return [choose(count(*c), c[0]) for c in complaints]


GEMS = ("wallet", "gems vanished after the update")
POINTS = ("reward_points", "weekly reward points never arrived")
FILED = [("discord:7:0", *GEMS), ("discord:7:1", *POINTS)]


@pytest.mark.parametrize(
    ("earlier", "complaints", "side_by_side", "chosen"),
    [
        pytest.param(  # the most alike of two alike filings, not merely one alike enough
            [
                ("discord:7:0", "wallet", "charged twice for the battle pass"),
                ("discord:7:1", "wallet", "charged twice for the skin bundle"),
            ],
            [("wallet", "charged twice for the skin bundle")],
            False,
            ["discord:7:1"],
            id="most-alike",
        ),
        pytest.param(  # one filing heard as two complaints: the second is a ticket of its own
            [("discord:7:0", "wallet", "gems vanished and reward points missing after update")],
            [GEMS, ("wallet", "reward points missing after the update")],
            False,
            ["discord:7:0", "discord:7:1"],
            id="split-in-two",
        ),
        pytest.param(  # a new complaint first, side by side with the gems: gems keep theirs
            FILED,
            [("wallet", "items vanished after the update"), GEMS],
            True,
            ["discord:7:2", "discord:7:0"],
            id="rival-likes-it-better",
        ),
        pytest.param(  # a complaint already given its filing does not stand in another's way
            [
                ("discord:7:0", "wallet", "gems vanished after the update"),
                ("discord:7:1", "wallet", "gems missing from wallet after the update"),
            ],
            [("wallet", "gems vanished from wallet after the update"), ("wallet", "wallet gems gone")],
            False,
            ["discord:7:0", "discord:7:1"],
            id="chosen-is-no-rival",
        ),
        pytest.param(  # a third complaint's place went to a new one: it is new too, not that one
            FILED,
            [
                ("gaming_experience", "Lag spikes every evening"),
                GEMS,
                ("gaming_experience", "my controller keeps disconnecting"),
            ],
            True,
            ["discord:7:2", "discord:7:0", "discord:7:3"],
            id="place-taken",
        ),
    ],
)
def test_each_complaint_of_a_run_again_finds_its_own_filing_or_a_new_one(
    earlier, complaints, side_by_side, chosen
) -> None:
    # A wrong choice tells a player another complaint's key, and files theirs never (an earlier
    # filing chosen twice) or twice (a new id for a complaint filed before).
    assert _filings(earlier, complaints, side_by_side) == chosen


@pytest.mark.parametrize("blank", ["   ", " \n\t ", "\u200b\u200b\u200b\ufeff", "\u00a0\u2003 \u200d"])
async def test_a_blank_description_or_query_is_refused_not_filed_or_searched(
    settings, scripted_app_engine, blank
) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        before = await app.grievances.status(NOVA)
        filed = await app.toolbox.run(
            ToolContext(user_id=NOVA), call("register_grievance", category="wallet", description=blank)
        )
        searched = await app.toolbox.run(ToolContext(user_id=NOVA), call("search_manuals", query=blank))
        after = await app.grievances.status(NOVA)
    assert not filed.ok and filed.result["error"].startswith("Invalid arguments for register_grievance: ")
    assert "description" in filed.result["error"]
    assert not searched.ok and searched.result["error"].startswith("Invalid arguments for search_manuals: ")
    assert after == before


async def test_an_argument_error_shows_only_the_start_of_a_huge_value(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        nova = ToolContext(user_id=NOVA)
        long_query = await app.toolbox.run(nova, call("search_manuals", query="x" * 1_000_000))
        odd_name = await app.toolbox.run(nova, call("search_manuals", query="refund", **{"y" * 100_000: 1}))
    error = long_query.result["error"]
    assert not long_query.ok and error.startswith("Invalid arguments for search_manuals: 'xxx")
    assert error.endswith("is too long") and len(error) < 200
    assert not odd_name.ok and odd_name.result["error"].startswith("Invalid arguments for search_manuals: ")
    assert len(odd_name.result["error"]) <= 400


@pytest.mark.parametrize("blank", ["", "  "])
async def test_a_blank_ticket_key_is_no_key(settings, scripted_app_engine, blank) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        given = await run(app, NOVA, "get_grievance_status", ticket_key=blank)
        omitted = await run(app, NOVA, "get_grievance_status")
    assert given == omitted and {t["ticket_key"] for t in given["tickets"]} == {"GRV-10", "GRV-12"}


async def test_a_key_that_is_not_one_is_quoted_for_people_not_python(settings, scripted_app_engine) -> None:
    async with running_app(settings, scripted_app_engine) as app:
        result = await run(app, NOVA, "get_grievance_status", ticket_key="grv12")
    assert result == {"tickets": [], "message": "“GRV12” is not a ticket key like GRV-12."}


async def test_a_lone_surrogate_in_the_models_words_is_filed_and_searched_as_a_replacement_mark(
    settings, scripted_app_engine
) -> None:
    import json

    # Valid JSON, as the model's arguments arrive: half of an emoji's surrogate pair.
    description = json.loads('"charged twice \\ud83d for the pass"')
    query = json.loads('"refund \\udc00"')
    async with running_app(settings, scripted_app_engine) as app:
        nova = ToolContext(user_id=NOVA, request_id="930000000000000126")
        filed = await app.toolbox.run(
            nova, call("register_grievance", category="wallet", description=description)
        )
        searched = await app.toolbox.run(nova, call("search_manuals", query=query))
        listed = await run(app, NOVA, "get_grievance_status", private=True)
    assert filed.ok, filed.result
    summaries = {t["ticket_key"]: t["summary"] for t in listed["tickets"]}
    assert summaries[filed.result["ticket_key"]] == "charged twice \ufffd for the pass"
    assert searched.ok and searched.result["passages"], searched.result


async def test_a_filing_cancelled_while_it_waits_for_the_writers_lock_is_kept(tmp_path) -> None:
    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    store._write_lock = lock = LockWaitedFor()
    try:
        async with lock:  # another filing of this process holds it
            task = asyncio.create_task(store.register(NOVA, "wallet", "charged twice", "discord:43:wallet:0"))
            await asyncio.wait_for(lock.waited.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await store.aclose()
    store = await LocalGrievanceStore.open(db)  # the next start files the spool
    try:
        assert [g.description for g in await store.status(NOVA)] == ["charged twice"]
    finally:
        await store.aclose()


async def test_a_read_in_flight_never_makes_a_filing_give_up_on_a_busy_database(
    tmp_path, monkeypatch
) -> None:
    """Staff hold the database for a moment while another coroutine reads this store: the filing
    waits its turn. A read whose statement stayed open between awaits held a read transaction,
    and SQLite then refuses the same connection's write at once rather than wait."""
    import aiosqlite

    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    earlier = [await store.register(NOVA, "other", f"lag in match {n}") for n in (1, 2)]
    reading, release, inserting = asyncio.Event(), asyncio.Event(), asyncio.Event()
    listing: asyncio.Task[list] | None = None
    real = aiosqlite.Connection._execute

    # Every aiosqlite call, execute_fetchall or a cursor's, is one job handed to the connection's
    # thread here: the reader is held between its listing's first job and whatever it awaits next,
    # which is where a statement left open (rows fetched in a later await) holds a read transaction.
    async def slow_reader(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        sql = args[0] if args and isinstance(args[0], str) else ""
        if sql.startswith("INSERT INTO grievances"):
            inserting.set()
        done = await real(self, fn, *args, **kwargs)
        if asyncio.current_task() is listing and sql.startswith("SELECT") and not reading.is_set():
            reading.set()
            await release.wait()
        return done

    monkeypatch.setattr(aiosqlite.Connection, "_execute", slow_reader)
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        # Staff set a status by hand: a write, so a read transaction begun before it commits can
        # never become a write after, however long it waits.
        locker.execute("BEGIN IMMEDIATE")
        locker.execute("UPDATE grievances SET status = 'in progress' WHERE local_key = ?", (earlier[0].key,))
        listing = asyncio.create_task(store.status(NOVA))
        await asyncio.wait_for(reading.wait(), 30)
        filing = asyncio.create_task(store.register(NOVA, "wallet", "charged twice"))
        await asyncio.wait_for(inserting.wait(), 30)
        locker.execute("COMMIT")
        ticket = await filing  # not "kept for later"
        release.set()
        assert ticket.key and len(await listing) == 2
        assert [g.key for g in await store.status(NOVA)] == [ticket.key, *(g.key for g in reversed(earlier))]
    finally:
        release.set()
        locker.close()
        await store.aclose()


def test_a_filing_id_names_its_turn_in_this_format_and_the_older_one() -> None:
    assert filed_in(filing_id("discord", "1001", 2)) == ("discord", "1001")
    assert filed_in("discord:1001:wallet:0") == ("discord", "1001")  # filed by an older version
    assert filed_in("3f2a9c0e1b7d4e8f9a6b5c4d3e2f1a0b") is None  # a spool line's own id
    assert filed_in("discord:1001:wallet") is None


async def test_a_turn_run_again_after_an_upgrade_finds_what_the_older_version_filed(tmp_path) -> None:
    # Older versions named the category in the filing id; a note cut by the restart that upgraded
    # is answered again with the new ids, and must not file its complaints a second time.
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    file, again = complaint_filer(store), ToolContext(user_id=NOVA, request_id="42")
    try:
        gems = await store.register(NOVA, "wallet", "gems gone", "discord:42:wallet:0")
        points = await store.register(NOVA, "reward_points", "no points", "discord:42:reward_points:0")
        await store.register(NOVA, "other", "lag", "discord:41:other:0")  # another note's
        # its place and a word in common, too few for its words alone (bot/tools, likeness)
        first = await file(again, "wallet", "my gems never arrived after the purchase")
        second = await file(again, "reward_points", "no points")
        third = await file(again, "other", "and lag")
        assert (first, second) == (gems.key, points.key)
        assert third not in (gems.key, points.key)  # a complaint the older run never filed
        assert len(await store.status(NOVA)) == 4
    finally:
        await store.aclose()


async def test_a_new_complaint_first_in_a_turn_run_again_after_an_upgrade_is_filed(tmp_path) -> None:
    # The older version's filings are taken by place where their words fit: a complaint the older
    # run never heard, filed first, took the first of them (another complaint's ticket) and was
    # never filed.
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    file, again = complaint_filer(store), ToolContext(user_id=NOVA, request_id="42")
    try:
        charged = await store.register(NOVA, "wallet", "charged twice for the pass", "discord:42:wallet:0")
        crashes = await store.register(NOVA, "other", "game crashes at loading", "discord:42:other:0")
        name = await file(again, "other", "cannot change my display name")
        told = [await file(again, "wallet", "charged twice for the pass")]
        told.append(await file(again, "other", "game crashes at loading"))
        listed = {g.key: g.description for g in await store.status(NOVA)}
    finally:
        await store.aclose()
    assert told == [charged.key, crashes.key]
    assert name not in told and listed[name] == "cannot change my display name" and len(listed) == 3


def test_a_new_spool_file_is_synced_with_its_folder(tmp_path, monkeypatch) -> None:
    # fsync of the file alone leaves its name to the folder's next write-back: a power cut then
    # loses the file and the grievance the player was told is kept.
    import os
    import stat

    from bot.tools import grievance_spool

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(grievance_spool.os, "fsync", fsync)
    spool = grievance_spool.GrievanceSpool(tmp_path / "g.spool.jsonl")
    spool.keep(user_id=BLAZE, category="wallet", description="charged twice", at="t", state="local_only")
    # The folder first: a keep killed between its line and its folder's sync would leave the next
    # keep a file with lines in it, whose name nothing syncs.
    assert synced == ["folder", "file"]
    spool.keep(user_id=BLAZE, category="wallet", description="again", at="t", state="local_only")
    assert synced == ["folder", "file", "file"]  # the name is on disk already


def test_a_spool_file_whose_maker_was_killed_before_syncing_its_folder_is_synced_by_the_next_keep(
    tmp_path, monkeypatch
) -> None:
    # The first keep made the file and died (SIGKILL, the OOM killer) before its folder's sync:
    # the file's name may be in no folder on disk, and a power cut then takes the spool, and the
    # grievance the next keep was told is kept, with it.
    import signal

    from bot.tools import grievance_spool

    path = tmp_path / "g.spool.jsonl"
    made_then_killed = (
        "import os, signal, sys\n"
        "from bot.tools import grievance_spool as s\n"
        "real = s._open_to_append\n"
        "def made(path):\n"
        "    real(path)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "s._open_to_append = made\n"
        "s.GrievanceSpool(s.Path(sys.argv[1])).keep(user_id='1', category='wallet', description='d',"
        " at='t', state='local_only')\n"
    )
    killed = subprocess.run([sys.executable, "-c", made_then_killed, str(path)], timeout=60)
    assert killed.returncode == -signal.SIGKILL and path.exists() and path.stat().st_size == 0
    synced: list[Path] = []
    real_sync = grievance_spool.fsync_path
    monkeypatch.setattr(grievance_spool, "fsync_path", lambda p: (synced.append(p), real_sync(p)))
    spool = grievance_spool.GrievanceSpool(path)
    spool.keep(user_id=BLAZE, category="wallet", description="charged twice", at="t", state="local_only")
    assert synced == [tmp_path]


def test_a_spool_on_a_file_system_that_syncs_no_folders_keeps_each_grievance(tmp_path, monkeypatch) -> None:
    # Some network and FUSE file systems refuse fsync on a folder (EINVAL): every keep into an
    # empty spool syncs its folder, and failing on it would lose each grievance the database
    # refused there.
    import errno
    import json
    import stat

    from bot.tools import grievance_spool

    real_fsync = os.fsync

    def no_folder_sync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folder_sync)
    spool = grievance_spool.GrievanceSpool(tmp_path / "g.spool.jsonl")
    assert spool.keep(user_id=BLAZE, category="wallet", description="twice", at="t", state="local_only")
    assert json.loads(spool.path.read_text())["description"] == "twice"


async def test_one_note_files_at_most_three_tickets(settings, scripted_app_engine) -> None:
    # A model looping (or a player asking it to) must not flood the desk and Jira from one note.
    note = ToolContext(user_id=NOVA, request_id="930000000000000141")
    complaints = ["deposit missing", "refund missing", "gems vanished", "points gone"]
    async with running_app(settings, scripted_app_engine) as app:
        before = len(await app.grievances.status(NOVA, limit=100))
        results = [
            await app.toolbox.run(note, call("register_grievance", category="wallet", description=d))
            for d in complaints
        ]
        after = len(await app.grievances.status(NOVA, limit=100))
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[-1].result["error"].startswith("Not filed: one note files at most 3 tickets.")
    assert after == before + 3


async def test_a_shared_player_lists_the_speakers_own_tickets_then_the_players(
    settings, scripted_app_engine
) -> None:
    # The web playground's visitor speaking as Nova: their own complaint first, then Nova's demo
    # tickets, which everyone is shown; another visitor's complaint is never among them. A player
    # whose tickets are not shared (a configured test player's) has only the speaker's own listed.
    me = ToolContext(user_id=NOVA, grievance_owner=f"web:me:{NOVA}", shared_tickets=True)
    other = ToolContext(user_id=NOVA, grievance_owner=f"web:other:{NOVA}", shared_tickets=True)
    unshared = ToolContext(user_id=NOVA, grievance_owner=f"web:me:{NOVA}")
    complaint = call("register_grievance", category="wallet", description="charged twice")
    async with running_app(settings, scripted_app_engine) as app:
        mine = (await app.toolbox.run(me, complaint)).result["ticket_key"]
        theirs = (await app.toolbox.run(other, complaint)).result["ticket_key"]
        listed = (await app.toolbox.run(me, call("get_grievance_status"))).result
        demo = (await app.toolbox.run(me, call("get_grievance_status", ticket_key="GRV-12"))).result
        alone = (await app.toolbox.run(unshared, call("get_grievance_status"))).result
        none = (await app.toolbox.run(unshared, call("get_grievance_status", ticket_key="GRV-12"))).result
    assert [t["ticket_key"] for t in listed["tickets"]] == [mine, "GRV-12", "GRV-10"]
    assert theirs not in {t["ticket_key"] for t in listed["tickets"]}
    assert [t["ticket_key"] for t in demo["tickets"]] == ["GRV-12"]
    assert [t["ticket_key"] for t in alone["tickets"]] == [mine] and none["tickets"] == []


async def test_a_new_complaint_first_in_a_note_answered_again_round_by_round_is_filed(
    settings, scripted_app_engine
) -> None:
    # Answered again (a restart cut the turn), the model hears a complaint it missed the first
    # time and files it first, each complaint in a round of its own: it is a new ticket, not the
    # one filed first before, and the complaints filed before keep their own keys.
    def turn() -> ToolContext:
        return ToolContext(user_id=NOVA, request_id="930000000000000151")

    gems = call("register_grievance", category="wallet", description="My gems vanished after the update")
    points = call(
        "register_grievance", category="reward_points", description="Weekly reward points never arrived"
    )
    lag = call("register_grievance", category="gaming_experience", description="Lag spikes every evening")
    async with running_app(settings, scripted_app_engine) as app:
        before = len(await app.grievances.status(NOVA, limit=100))
        first = turn()
        filed = [(await app.toolbox.run(first, c)).result["ticket_key"] for c in (gems, points)]
        again = turn()
        rerun = [(await app.toolbox.run(again, c)).result["ticket_key"] for c in (lag, gems, points)]
        listed = {g.key: g.description for g in await app.grievances.status(NOVA, limit=100)}
    assert rerun[1:] == filed and rerun[0] not in filed
    assert len(listed) == before + 3 and listed[rerun[0]] == "Lag spikes every evening"


async def test_a_new_complaint_of_the_same_category_first_in_a_re_run_is_filed(
    settings, scripted_app_engine
) -> None:
    # The same category is no sign of the same complaint: a wallet complaint the first run never
    # heard, filed first, must not take the wallet ticket filed then.
    def turn() -> ToolContext:
        return ToolContext(user_id=NOVA, request_id="930000000000000152")

    charged = call("register_grievance", category="wallet", description="Charged twice for the battle pass")
    gems = call("register_grievance", category="wallet", description="My gems vanished yesterday")
    async with running_app(settings, scripted_app_engine) as app:
        before = len(await app.grievances.status(NOVA, limit=100))
        filed = (await app.toolbox.run(turn(), charged)).result["ticket_key"]
        again = turn()
        rerun = [(await app.toolbox.run(again, c)).result["ticket_key"] for c in (gems, charged)]
        listed = {g.key: g.description for g in await app.grievances.status(NOVA, limit=100)}
    assert rerun[1] == filed and rerun[0] != filed
    assert len(listed) == before + 2 and listed[rerun[0]] == "My gems vanished yesterday"


@pytest.mark.parametrize(
    "line",
    [
        '{"id": "x", "user_id": "1", "categ',  # cut short by a crash
        '{"id": "x", "user_id": "1", "category": "other", "description": "lag", "at": "x"}',  # no state
    ],
)
def test_a_spool_of_unreadable_lines_alone_is_emptied_and_let_go(tmp_path, line: str) -> None:
    # Only a line that cannot be filed: set aside once, the spool emptied and its lock let go, or
    # every grievance kept after it would wait on that lock for ever.
    import fcntl
    import os

    from bot.tools.grievance_spool import GrievanceSpool

    spool = GrievanceSpool(tmp_path / "g.spool.jsonl")
    spool.path.write_text(line + "\n")
    assert spool.take() is None
    fd = os.open(spool.path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError while held
    finally:
        os.close(fd)
    assert not spool.waiting() and spool.take() is None
    assert spool.rejected.read_text() == line + "\n"


def test_a_spool_another_holds_on_smb_is_busy_not_an_error(tmp_path, monkeypatch) -> None:
    # On SMB the refiler's round would fail with PermissionError while another process files the
    # spool, and a grievance cut short by a stop be logged as one that could not be kept.
    import errno
    import fcntl
    import os

    from bot.tools.grievance_spool import GrievanceSpool

    from .conftest import smb_locks

    spool = GrievanceSpool(tmp_path / "g.spool.jsonl")
    row = {"user_id": NOVA, "category": "wallet", "description": "gems gone", "at": "2026-12-06T04:00:00Z"}
    assert spool.keep(state="local_only", **row)
    flock = smb_locks(monkeypatch)
    other = os.open(spool.path, os.O_RDWR)  # another process filing the spool
    try:
        flock(other, fcntl.LOCK_EX)
        assert spool.take() is None
        assert spool.keep(wait=False, state="local_only", **row) is False
    finally:
        os.close(other)
    taken = spool.take()
    assert taken is not None and len(taken[1]) == 1
    spool.release(taken[0])

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)  # not "busy": said, not waited out for ever
    with pytest.raises(OSError, match="No locks"):
        spool.take()


async def test_a_complaint_heard_as_two_when_answered_again_files_the_second(
    settings, scripted_app_engine
) -> None:
    # Both words of the one filing of the first run: the first of the two takes it, and the
    # second, though alike too, is a ticket of its own (a filing chosen once is taken).
    def turn() -> ToolContext:
        return ToolContext(user_id=NOVA, request_id="930000000000000161")

    both = call(
        "register_grievance",
        category="wallet",
        description="gems vanished and reward points missing after update",
    )
    gems = call("register_grievance", category="wallet", description="gems vanished after the update")
    points = call(
        "register_grievance", category="wallet", description="reward points missing after the update"
    )
    async with running_app(settings, scripted_app_engine) as app:
        (first,) = [(await app.toolbox.run(turn(), both)).result["ticket_key"]]
        again = turn()
        rerun = [(await app.toolbox.run(again, c)).result["ticket_key"] for c in (gems, points)]
        listed = {g.key: g.description for g in await app.grievances.status(NOVA, limit=100)}
    assert rerun[0] == first and rerun[1] != first
    assert listed[rerun[1]] == "reward points missing after the update"


async def test_a_run_again_sees_its_turns_complaints_kept_in_the_spool_and_files_each_once(tmp_path) -> None:
    # The database refused a note's complaint (kept in the spool under the turn's first filing);
    # the turn, run again while it still refuses, files a complaint the first run never heard
    # first. Choosing from the database alone, it was given the spooled complaint's filing: one
    # complaint was lost and the other filed twice when the spool was filed.

    async with store_and_locker(tmp_path) as (store, locker):
        file = complaint_filer(store)
        locker.execute("BEGIN EXCLUSIVE")
        for run in (
            [("wallet", "charged twice for the pass")],
            [("other", "game crashes at loading"), ("wallet", "charged twice for the pass")],
        ):
            ctx = ToolContext(user_id=NOVA, request_id="42")
            for category, words in run:
                with pytest.raises(ToolError):
                    await file(ctx, category, words)
        locker.execute("ROLLBACK")
        assert await store.file_spooled() == 2
        listed = sorted(g.description for g in await store.status(NOVA))
    assert listed == ["charged twice for the pass", "game crashes at loading"]


async def test_a_run_again_sees_its_turns_complaints_held_in_memory_and_files_each_once(
    tmp_path, monkeypatch
) -> None:
    # As with the spool: the database and the disk refuse everything, and the complaint is held by
    # its filing id. Run again, the note's model files only a complaint the first run never heard:
    # given that filing id, it took the held complaint's place in memory, which was lost.
    import errno

    from bot.tools import grievance_spool
    from bot.tools.grievance_store import LocalGrievanceStore

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    file = complaint_filer(store)

    async def full_database(*args: object, **kwargs: object) -> str | None:
        raise sqlite3.OperationalError("database or disk is full")

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        with monkeypatch.context() as full:
            full.setattr(store, "_insert", full_database)
            full.setattr(grievance_spool.os, "write", full_disk)
            for category, words in (
                ("wallet", "charged twice for the pass"),
                ("other", "game crashes at loading"),
            ):
                with pytest.raises(ToolError):
                    await file(ToolContext(user_id=NOVA, request_id="42"), category, words)
        assert await store.file_spooled() == 2
        listed = sorted(g.description for g in await store.status(NOVA))
    finally:
        await store.aclose()
    assert listed == ["charged twice for the pass", "game crashes at loading"]


async def test_a_kept_complaint_whose_filing_id_another_took_is_filed_under_a_new_one(tmp_path) -> None:
    # A spool line whose filing id names a row of other words (given to another complaint while
    # the line waited unseen, by a version before this one or another process): it was dropped as
    # filed before. Filed under the turn's next filing, told by ticket news; once, however often
    # the spool is read.
    from bot.tools.grievance_store import LocalGrievanceStore, utc_now

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        charged = await store.register(NOVA, "wallet", "charged twice", filing_id("discord", "42", 0))
        line = {
            "user_id": NOVA,
            "category": "other",
            "description": "game crashes",
            "at": utc_now(),
            "state": "local_only",
        }
        for _ in range(2):  # again: the spool read again after a crash before it was emptied
            store._spool.keep(filing_id("discord", "42", 0), **line)
            store._spool.keep(filing_id("discord", "42", 0), **{**line, "description": "charged twice"})
            await store.file_spooled()
        listed = {g.key: g.description for g in await store.status(NOVA)}
        events = await store.news_events(0)
    finally:
        await store.aclose()
    assert (
        sorted(listed.values()) == ["charged twice", "game crashes"]
        and listed[charged.key] == "charged twice"
    )
    assert [(e.kind, e.description, e.spool_id) for e in events] == [
        ("filed_late", "game crashes", filing_id("discord", "42", 1))
    ]


async def test_a_complaint_cut_short_before_it_chose_is_filed_by_its_words(tmp_path) -> None:
    # A shutdown cut a run again of a note before either complaint chose its filing (the writers'
    # lock held): kept under their places in that run, the one the first run never heard took the
    # first run's filing (its complaint dropped), and the other was filed a second time.
    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    try:
        file = complaint_filer(store)
        charged = await file(
            ToolContext(user_id=NOVA, request_id="42"), "wallet", "charged twice for the pass"
        )
        cut = ToolContext(user_id=NOVA, request_id="42")
        store._write_lock = lock = LockWaitedFor(2)
        async with lock:  # another filing holds it; the shutdown's grace runs out
            tasks = [
                asyncio.create_task(file(cut, "other", "game crashes at loading")),
                asyncio.create_task(file(cut, "wallet", "charged twice for the pass")),
            ]
            await asyncio.wait_for(lock.waited.wait(), 30)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await store.aclose()
    store = await LocalGrievanceStore.open(db)  # the restart files the spool
    try:
        listed = {g.key: g.description for g in await store.status(NOVA)}
        file, again = complaint_filer(store), ToolContext(user_id=NOVA, request_id="42")
        told = [await file(again, "other", "game crashes at loading")]
        told.append(await file(again, "wallet", "charged twice for the pass"))
        after = {g.key: g.description for g in await store.status(NOVA)}
    finally:
        await store.aclose()
    assert sorted(listed.values()) == ["charged twice for the pass", "game crashes at loading"]
    assert after == listed and told[1] == charged and listed[told[0]] == "game crashes at loading"


async def test_a_filing_cut_short_while_this_process_files_the_spool_is_held_not_waited_for(
    tmp_path,
) -> None:
    # The spool's lock held by this process's own file_spooled, waiting on a busy database for the
    # event loop: a cut-short filing that waited for that lock on the loop froze the bot. A guard
    # thread lets the lock go after a while, so that without the fix the test fails, not hangs.
    import fcntl
    import os
    import threading

    from bot.tools.grievance_store import LocalGrievanceStore

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    store._spool.keep("discord:1:0", user_id=NOVA, category="wallet", description="kept earlier",
                      at="2026-01-01T00:00:00Z", state="local_only")  # fmt: skip
    fd = os.open(store._spool.path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    back, guard_fired = threading.Event(), threading.Event()

    def guard() -> None:
        if not back.wait(10):
            guard_fired.set()
            fcntl.flock(fd, fcntl.LOCK_UN)

    threading.Thread(target=guard, daemon=True).start()
    try:
        store._write_lock = lock = LockWaitedFor()
        async with lock:  # the filing of the spool holds it
            task = asyncio.create_task(store.register(NOVA, "other", "slash command complaint"))
            await asyncio.wait_for(lock.waited.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        back.set()
        held = [row["description"] for row in store._held.values()]
    finally:
        back.set()
        os.close(fd)
        await store.aclose()  # writes what it holds to the spool
    assert not guard_fired.is_set() and held == ["slash command complaint"]
    store = await LocalGrievanceStore.open(db)
    try:
        filed = sorted(g.description for g in await store.status(NOVA))
    finally:
        await store.aclose()
    assert filed == ["kept earlier", "slash command complaint"]


async def test_a_complaint_kept_before_it_chose_is_not_dropped_as_its_own_runs_other(
    tmp_path, monkeypatch, caplog
) -> None:
    # One note, two complaints alike but distinct; the second's choosing read refused, it is kept
    # before it chose. The first's filing, chosen by that same run, is no filing of the second.
    import logging

    from bot.tools.grievance_store import UNCHOSEN, LocalGrievanceStore, utc_now

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        file, ctx = complaint_filer(store), ToolContext(user_id=NOVA, request_id="42")
        gem = await file(ctx, "wallet", "charged twice for the gem pack")

        async def damaged(*_: object) -> None:
            raise sqlite3.DatabaseError("database disk image is malformed")

        with monkeypatch.context() as m:
            m.setattr(store, "_filings_of_turn", damaged)
            with pytest.raises(ToolError):
                await file(ctx, "wallet", "charged twice for the coin pack")
        assert await store.file_spooled() == 1
        # A run of its own that never chose the gem pack's filing: that one is it, filed before.
        store._spool.keep(f"discord:42:{UNCHOSEN}x", user_id=NOVA, category="wallet",
                          description="charged two times for the gem pack", at=utc_now(),
                          state="local_only")  # fmt: skip
        with caplog.at_level(logging.INFO, logger="bot.tools.grievance_store"):
            assert await store.file_spooled() == 0
        listed = {g.key: g.description for g in await store.status(NOVA)}
    finally:
        await store.aclose()
    assert sorted(listed.values()) == ["charged twice for the coin pack", "charged twice for the gem pack"]
    assert listed[gem] == "charged twice for the gem pack"
    assert "filed before as discord:42:0" in caplog.text


@pytest.mark.parametrize("between", ["_filings_of_turn", "_spooled"])
async def test_a_filing_whose_id_another_process_takes_meanwhile_chooses_again(
    tmp_path, monkeypatch, between
) -> None:
    # Another process on the same storage (a one-shot `ask`) files the spool between this run's
    # read of its turn and its insert, under the very id this run chose for a new complaint.
    from bot.tools.grievance_store import UNCHOSEN, LocalGrievanceStore, utc_now

    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    other = None
    try:
        file = complaint_filer(store)
        charged = await file(
            ToolContext(user_id=NOVA, request_id="42"), "wallet", "charged twice for the pass"
        )
        crashes = {"category": "other", "description": "game crashes at loading"}
        store._spool.keep(
            f"discord:42:{UNCHOSEN}a", user_id=NOVA, at=utc_now(), state="local_only", **crashes
        )
        real = getattr(store, between)

        async def then_the_other_files(*args):
            nonlocal other
            found = await real(*args)
            if other is None:
                other = await LocalGrievanceStore.open(db)  # opening files the spool
            return found

        async def spool_busy() -> int:  # the other process held the spool at this one's try
            return 0

        monkeypatch.setattr(store, between, then_the_other_files)
        monkeypatch.setattr(store, "file_spooled", spool_busy)
        again = ToolContext(user_id=NOVA, request_id="42")
        told = await file(again, "gaming_experience", "cannot change my display name")
        listed = {g.key: g.description for g in await store.status(NOVA)}
    finally:
        if other is not None:
            await other.aclose()
        await store.aclose()
    assert sorted(listed.values()) == [
        "cannot change my display name",
        "charged twice for the pass",
        "game crashes at loading",
    ]
    assert listed[told] == "cannot change my display name" and listed[charged] == "charged twice for the pass"


async def test_a_filing_whose_every_choice_is_taken_meanwhile_is_never_told_another_key(
    tmp_path, monkeypatch
) -> None:
    # Each id this run chooses is taken when it inserts, MAX_CHOICES times over: its read never
    # shows the rows that took them (as if another process filed each between read and insert).
    from bot.tools.grievance_store import MAX_CHOICES

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        others = {}
        for n in range(MAX_CHOICES):
            others[n] = (
                await store.register(NOVA, "wallet", f"refund {n} missing", filing_id("discord", "42", n))
            ).key

        async def nothing_seen(*_: object) -> tuple[list, dict]:
            return [], {}

        with monkeypatch.context() as m:
            m.setattr(store, "_filings_of_turn", nothing_seen)
            with pytest.raises(ToolError) as told:
                await complaint_filer(store)(
                    ToolContext(user_id=NOVA, request_id="42"), "other", "game crashes"
                )
        assert str(told.value) == say.KEPT_FOR_LATER
        assert await store.file_spooled() == 1
        listed = {g.key: g.description for g in await store.status(NOVA)}
    finally:
        await store.aclose()
    assert sorted(listed.values()) == ["game crashes", *(f"refund {n} missing" for n in range(MAX_CHOICES))]
    assert all(listed[key] == f"refund {n} missing" for n, key in others.items())


async def test_a_complaint_kept_twice_under_its_filing_in_new_words_is_filed_once(tmp_path) -> None:
    # A note answered again while the database still refused writes: the same complaint, worded
    # afresh, kept a second time under the filing it chose the first time.
    async with store_and_locker(tmp_path) as (store, locker):
        file = complaint_filer(store)
        locker.execute("BEGIN EXCLUSIVE")
        for words in ("charged twice for the battle pass", "I was charged two times for my battle pass"):
            with pytest.raises(ToolError):
                await file(ToolContext(user_id=NOVA, request_id="42"), "wallet", words)
        assert [line["id"] for line in store._spool.lines()] == [filing_id("discord", "42", 0)] * 2
        locker.execute("ROLLBACK")
        assert await store.file_spooled() == 1
        listed = [g.description for g in await store.status(NOVA)]
    assert listed == ["charged twice for the battle pass"]


@pytest.mark.parametrize(
    "offered",
    [
        ("Not a Bug", "Won't Do"),
        ("Won’t Implement", "Duplicate"),
        ("Obsolete", "Works as Designed"),
        ("Cancelled", "Withdrawn", "Out of Scope"),
        ("Unresolved", "Won't Fix"),
    ],
)
def test_a_done_screen_s_resolution_is_none_that_reads_as_not_done(offered: tuple[str, ...]) -> None:
    # Closing a player's grievance as "Not a Bug" tells staff the opposite of what the desk said.
    from bot.tools.jira_tracker import done_resolution

    allowed = [{"id": str(i), "name": name} for i, name in enumerate(offered, 1)]
    assert done_resolution(allowed, "resolved") is None
    assert done_resolution([*allowed, {"id": "9", "name": "Ban lifted"}], "resolved") == {"id": "9"}


async def test_a_complaint_too_short_to_act_on_is_not_filed_and_the_player_told_what_to_add(
    tmp_path,
) -> None:
    # A model (or the offline engine) filing "a" or a word alone made a ticket staff could do
    # nothing with.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        file = complaint_filer(store)
        for short in ("a    ", "refund", "ok ok", "退款"):
            with pytest.raises(ToolError) as told:
                await file(ToolContext(user_id=NOVA, request_id="42"), "wallet", short)
            assert str(told.value) == say.DESCRIPTION_TOO_SHORT
        assert await store.status(NOVA) == []
        # Three characters of an unspaced script tell as much as "gems gone": "not credited",
        # "crashed", "crashes on start".
        enough = ("Gems gone.", "我的钱没了", "没到账", "闪退了", "起動しない")
        for words in enough:
            assert await file(ToolContext(user_id=NOVA), "wallet", words)
        assert len(await store.status(NOVA)) == len(enough)
    finally:
        await store.aclose()


def test_a_grievance_the_disk_still_refuses_at_shutdown_is_logged_to_refile_and_filed_once(
    settings, monkeypatch, caplog
) -> None:
    # Held in memory while the disk was full, it was lost at shutdown if the disk still refused
    # it: its words alone were in the log, with no way back into the store.
    import logging

    from bot.tools.grievance_spool import UNFILED

    from .test_cli import voxdesk

    path = settings.storage_dir / "grievances.db"

    async def held_at_shutdown() -> None:
        store = await LocalGrievanceStore.open(path)
        free = fill_the_disk(store, monkeypatch)
        try:
            with pytest.raises(ToolError) as told:
                await complaint_filer(store)(
                    ToolContext(user_id=NOVA, request_id="42"), "wallet", "charged twice for gems"
                )
            assert str(told.value) == say.HELD_FOR_LATER  # no key the store may never give
        finally:
            await store.aclose()  # the disk still full
            free()

    with caplog.at_level(logging.ERROR):
        asyncio.run(held_at_shutdown())
    held, logged = [r for r in caplog.records if UNFILED in r.getMessage()]
    assert held.getMessage() == logged.getMessage()  # as it was held, and again at the stop
    assert logged.levelno == logging.ERROR
    # The one record whose mark the log's handlers keep (logs.unmarked spells out any other's).
    assert getattr(logged, logs.STORE_LINE) is True
    log_file = settings.storage_dir.parent / "voxdesk.log"
    log_file.write_text(f"<3>2026-12-06 04:00:00 ERROR    {logged.name} {logged.getMessage()}\n")

    for _ in range(2):  # the log read twice files it once
        done = voxdesk("refile", str(log_file), storage=settings.storage_dir)
        assert done.returncode == 0, done.stderr
        assert "1 unfiled grievance(s) found" in done.stdout

    async def filed() -> tuple[list[tuple[str, str]], list[str]]:
        store = await LocalGrievanceStore.open(path)
        try:
            mine = [g.description for g in await store.status(NOVA)]
            return [(e.kind, e.spool_id or "") for e in await store.news_events(0)], mine
        finally:
            await store.aclose()

    events, mine = asyncio.run(filed())
    assert mine.count("charged twice for gems") == 1
    assert [kind for kind, _ in events] == ["filed_late"]  # ticket news tells the player its key


@contextlib.contextmanager
def store_log_through_the_mask() -> Iterator[io.StringIO]:
    """The grievance store's log lines as a deployment's masking handler writes them."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logs.plain_formatter())
    store_log = logging.getLogger("bot.tools.grievance_store")
    store_log.addHandler(handler)
    logs.install_secret_mask(store_log)
    try:
        yield written
    finally:
        store_log.removeHandler(handler)


def novas_filed_words(path: Path) -> list[str]:
    """The words of each grievance the store at `path` holds for Nova."""

    async def filed() -> list[str]:
        store = await LocalGrievanceStore.open(path)
        try:
            return [g.description for g in await store.status(NOVA)]
        finally:
            await store.aclose()

    return asyncio.run(filed())


def test_a_grievance_held_in_memory_is_in_the_log_for_refile_before_any_stop(settings, monkeypatch) -> None:
    # Held in memory while the disk was full, its one copy was the ERROR line quoting it (masked,
    # with no filing id) until a stop logged its UNFILED line: a process killed first (SIGKILL, the
    # OOM killer, a stop's timeout) left none that `refile` files, though the player heard it would
    # be filed.
    from bot.tools.grievance_spool import UNFILED

    from .test_cli import voxdesk

    logs.mask_secrets(["refund"])
    said = "no refund for the gems I was charged twice"
    path = settings.storage_dir / "grievances.db"
    before_stop = ""

    async def held() -> None:
        nonlocal before_stop
        store = await LocalGrievanceStore.open(path)
        free = fill_the_disk(store, monkeypatch)
        try:
            with pytest.raises(ToolError) as told:
                await complaint_filer(store)(ToolContext(user_id=NOVA, request_id="42"), "wallet", said)
            assert str(told.value) == say.HELD_FOR_LATER
            before_stop = written.getvalue()  # all a process killed now leaves
        finally:
            await store.aclose()  # the disk still full: the stop's line too
            free()

    with store_log_through_the_mask() as written:
        asyncio.run(held())
    # The line giving both refusals quotes the grievance for an operator, masked as any line is.
    (refused,) = [line for line in before_stop.splitlines() if "could be neither filed" in line]
    assert "no *** for the gems" in refused and UNFILED not in refused
    log_file = settings.storage_dir.parent / "voxdesk.log"
    log_file.write_text(before_stop)
    done = voxdesk("refile", str(log_file), storage=settings.storage_dir)
    assert (done.returncode, done.stderr) == (0, "")
    assert "1 unfiled grievance(s) found" in done.stdout
    log_file.write_text(written.getvalue())  # the stop's line as well: the same grievance
    done = voxdesk("refile", str(log_file), storage=settings.storage_dir)
    assert (done.returncode, done.stderr) == (0, "")
    assert "1 unfiled grievance(s) found" in done.stdout
    assert novas_filed_words(path).count(said) == 1  # its words as the player said them, filed once


def test_a_held_grievance_the_bot_filed_since_is_not_filed_again_from_its_log_line(
    settings, monkeypatch, caplog
) -> None:
    # Its UNFILED line is logged as it is held: once the disk takes it, the bot files it from
    # memory, and a `refile` of that log later files nothing more.
    from bot.tools.grievance_spool import UNFILED

    from .test_cli import voxdesk

    path = settings.storage_dir / "grievances.db"
    said = "charged twice for gems, then the disk was freed"

    async def held_then_filed() -> None:
        store = await LocalGrievanceStore.open(path)
        free = fill_the_disk(store, monkeypatch)
        try:
            with pytest.raises(ToolError):
                await complaint_filer(store)(ToolContext(user_id=NOVA, request_id="42"), "wallet", said)
        finally:
            free()
        try:
            await store.file_spooled()  # as the refiler does
            assert await store.count_unfiled() == 0
        finally:
            await store.aclose()

    with caplog.at_level(logging.ERROR):
        asyncio.run(held_then_filed())
    (logged,) = [r for r in caplog.records if UNFILED in r.getMessage()]  # none at the stop
    log_file = settings.storage_dir.parent / "voxdesk.log"
    log_file.write_text(f"[ERROR   ] {logged.name}: {logged.getMessage()}\n")
    done = voxdesk("refile", str(log_file), storage=settings.storage_dir)
    assert (done.returncode, done.stderr) == (0, "")

    async def filed() -> list[str]:
        store = await LocalGrievanceStore.open(path)
        try:
            return [g.description for g in await store.status(NOVA)]
        finally:
            await store.aclose()

    assert asyncio.run(filed()).count(said) == 1


def test_a_secret_the_players_words_hold_stays_theirs_in_the_stores_unfiled_line(
    settings, monkeypatch
) -> None:
    # A SQL or proxy password that is an ordinary word ("refund") is masked wherever it stands as
    # a word: the store's UNFILED line, the one copy of a grievance the disk refused at a stop, read
    # "***" for the player's word, and `refile` filed the altered complaint as theirs.
    from bot.tools.grievance_spool import UNFILED

    from .test_cli import voxdesk

    logs.mask_secrets(["refund", "hunter2-but-longer"])
    said = "no refund for the gems I was charged twice; my note says hunter2-but-longer"
    path = settings.storage_dir / "grievances.db"

    async def held_at_shutdown() -> None:
        store = await LocalGrievanceStore.open(path)
        free = fill_the_disk(store, monkeypatch)
        try:
            with pytest.raises(ToolError):
                await complaint_filer(store)(ToolContext(user_id=NOVA, request_id="42"), "wallet", said)
            # any other line: masked
            logging.getLogger("bot.tools.grievance_store").warning("a refund of %s", "hunter2-but-longer")
        finally:
            await store.aclose()  # the disk still full
            free()

    with store_log_through_the_mask() as written:
        asyncio.run(held_at_shutdown())
    lines = written.getvalue().splitlines()
    assert [line for line in lines if line.endswith("a *** of ***")]
    held, unfiled = [line for line in lines if UNFILED in line]
    assert held == unfiled  # as it was held, and again at the stop
    log_file = settings.storage_dir.parent / "voxdesk.log"
    log_file.write_text(unfiled + "\n")
    done = voxdesk("refile", str(log_file), storage=settings.storage_dir)
    assert done.returncode == 0, done.stderr
    assert said in novas_filed_words(path)


async def test_a_cancel_while_the_app_closes_still_logs_a_grievance_the_disk_refuses(
    settings, scripted_app_engine, monkeypatch, caplog
) -> None:
    # `ask` hit by Ctrl-C as it closes (or a stop cut short) meets the cancel in whichever client
    # is closing then: App.aclose still closes every client after it, or the grievance store
    # never writes the complaint it holds in memory to the log, its one copy.
    from bot.tools.grievance_spool import UNFILED

    closing = asyncio.Event()

    class SlowToClose:  # a client closed before the stores, as the engine and news store are
        async def aclose(self) -> None:
            closing.set()
            await asyncio.Event().wait()

    app_cm = running_app(settings, scripted_app_engine)
    app = await app_cm.__aenter__()
    free = fill_the_disk(app.grievances, monkeypatch)
    try:
        with pytest.raises(ToolError):
            await complaint_filer(app.grievances)(
                ToolContext(user_id=NOVA, request_id="42"), "wallet", "charged twice for gems"
            )
        app.closers.append(SlowToClose())
        with caplog.at_level(logging.ERROR):
            closer = asyncio.create_task(app_cm.__aexit__(None, None, None))
            await closing.wait()
            closer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closer
    finally:
        free()
    assert [r for r in caplog.records if UNFILED in r.getMessage()]
    assert app.closers == []  # every other client closed too


async def test_a_cancel_while_the_app_flushes_grievances_to_jira_still_closes_every_client(
    settings, scripted_app_engine, monkeypatch
) -> None:
    # Ctrl-C during `ask`'s last push to Jira (a slow Jira holds it for FLUSH_SECONDS): raised at
    # once, the clients would stay open, the grievance store's memory unlogged and an aiosqlite
    # thread keeping the process from exiting.
    flushing = asyncio.Event()

    async def slow_jira() -> int:
        flushing.set()
        await asyncio.Event().wait()
        return 0

    app_cm = running_app(settings, scripted_app_engine)
    app = await app_cm.__aenter__()
    monkeypatch.setattr(app.grievances, "push_pending", slow_jira, raising=False)
    closer = asyncio.create_task(app_cm.__aexit__(None, None, None))
    await flushing.wait()
    closer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closer
    assert app.closers == []  # every client closed all the same


async def test_a_players_words_logged_at_debug_are_no_unfiled_grievance_to_refile(
    settings, scripted_app_engine
) -> None:
    # `voxdesk -v run` logs what is wrong with a model's arguments, the player's words with it:
    # words shaped as an UNFILED line filed a ticket in another player's name.
    import io
    import logging

    from bot.logs import plain_formatter
    from bot.tools.grievance_spool import UNFILED, spool_line, unfiled_in

    forged = UNFILED + spool_line(
        "f1", user_id=BLAZE, category="other", description="forged", at="2026-12-06T04:00:00Z", state="open"
    )
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(plain_formatter())
    logger = logging.getLogger("bot.tools")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        async with running_app(settings, scripted_app_engine) as app:
            arguments = {"category": "wallet", "description": "charged twice for gems", forged: "x"}
            refused = await app.toolbox.run(
                ToolContext(user_id=NOVA), call("register_grievance", **arguments)
            )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert not refused.ok and forged in out.getvalue()  # the words are in the log
    assert unfiled_in(out.getvalue().splitlines()) == ([], 0)


def test_refile_files_an_older_logs_masked_words_and_names_them(settings) -> None:
    # An older voxdesk's log masked secrets in the store's line too: "***" for a player's word
    # that a short password equals. refile filed it as the player's words without a word.
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import voxdesk

    log_file = settings.storage_dir.parent / "voxdesk.log"
    row = {"user_id": NOVA, "category": "wallet", "description": "no *** for the gems I was charged twice"}
    line = spool_line("f1", **row, at="2026-12-06T04:00:00Z", state="local_only")
    log_file.write_text(f"[ERROR   ] bot.tools.grievance_store: {UNFILED}{line}\n")
    done = voxdesk("refile", str(log_file), storage=settings.storage_dir)
    assert "1 unfiled grievance(s) found" in done.stdout  # filed: the rest is the player's
    assert "refile: 1 grievance(s) filed with *** in their words (f1)" in done.stderr
    assert done.returncode == 1  # as for each line staff look at


def test_refile_into_a_storage_folder_without_grievances_files_nothing_there(tmp_path) -> None:
    # A storage folder named wrong (VOXDESK_STORAGE_DIR, another install) got a new grievances.db
    # the bot never reads, and the operator was told the grievance was filed.
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import voxdesk

    wrong = tmp_path / "elsewhere"
    wrong.mkdir()
    log_file = tmp_path / "voxdesk.log"
    row = {"user_id": NOVA, "category": "wallet", "description": "charged twice for gems"}
    log_file.write_text(UNFILED + spool_line("f1", **row, at="2026-12-06T04:00:00Z", state="open") + "\n")
    done = voxdesk("refile", str(log_file), storage=wrong)
    assert done.returncode == 2, done.stdout
    assert "grievances.db does not exist" in done.stderr and "filed" not in done.stdout
    assert list(wrong.iterdir()) == []


async def test_refile_into_a_newer_voxdesks_grievances_db_refuses_before_keeping_any(tmp_path) -> None:
    # A rollback, then a journal's UNFILED line refiled with this voxdesk: it kept the grievance in
    # the spool, then stopped on the newer grievances.db with the refusal alone, saying nothing of
    # the line it had written into that folder; as `player` and `init` do, it refuses first.
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import voxdesk

    await (await LocalGrievanceStore.open(tmp_path / "grievances.db")).aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "grievances.db")) as conn:
        conn.execute("PRAGMA user_version = 99")
    log_file = tmp_path.parent / "voxdesk.log"
    row = {"user_id": NOVA, "category": "wallet", "description": "charged twice for gems"}
    line = spool_line("f1", **row, at="2026-12-06T04:00:00Z", state="open")
    log_file.write_text(f"[ERROR   ] bot.tools.grievance_store: {UNFILED}{line}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    done = voxdesk("refile", str(log_file), storage=tmp_path)
    assert done.returncode == 4, done.stdout
    assert "written by a newer voxdesk (schema version 99" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_refile_run_by_hand_on_a_terminal_says_it_reads_stdin(tmp_path) -> None:
    # With no log named it reads stdin: on a terminal it sat silent, as if hung.
    import pty

    from .test_cli import REPO

    (tmp_path / "grievances.db").touch()  # the bot's storage folder: refile goes on to read
    terminal, its_end = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "bot", "refile"],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(tmp_path)},
        stdin=its_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as refile:
        os.close(its_end)
        os.write(terminal, b"\x04")  # Ctrl-D: the end of what is typed
        _, said = refile.communicate(timeout=120)
    os.close(terminal)
    assert "refile: reading stdin" in said


def _grievance_storage(tmp_path: Path) -> Path:
    """A storage folder holding an empty grievances.db, as the bot's is before refile files."""
    storage = tmp_path / "storage"
    storage.mkdir()

    async def made() -> None:
        await (await LocalGrievanceStore.open(storage / "grievances.db")).aclose()

    asyncio.run(made())
    return storage


def test_refile_reads_a_journal_on_stdin_past_a_line_that_is_not_utf8(tmp_path) -> None:
    # A journal line cut inside a character (journald's LineMax), piped in on a host whose locale
    # makes stdin strict: refile stopped on it with a traceback, and the grievance after it was
    # never filed. A log file named on the command line was read past it already.
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import REPO

    storage = _grievance_storage(tmp_path)
    row = {"user_id": NOVA, "category": "wallet", "description": "charged twice for gems"}
    unfiled = "[ERROR   ] bot.tools.grievance_store: " + UNFILED  # as `journalctl -o cat` shows it
    unfiled += spool_line("f1", **row, at="2026-12-06T04:00:00Z", state="open")
    journal = b"gems \xe2\x82\n" + unfiled.encode() + b"\n"
    done = subprocess.run(
        [sys.executable, "-m", "bot", "refile"],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(storage), "PYTHONIOENCODING": "utf-8:strict"},
        input=journal,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"1 unfiled grievance(s) found" in done.stdout


@pytest.mark.parametrize("given", ["file", "stdin"])
def test_refile_starts_no_line_at_a_carriage_return(tmp_path, given) -> None:
    # A library's print() is no log record: a "\r" in what it printed (a progress bar, a player's
    # words it quotes) stays in the log, and refile, reading with Python's universal newlines,
    # took it for a line's end, so words after it shaped as the store's line were filed. A line
    # ending in CRLF (a log copied through Windows) is still read.
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import REPO
    from .test_logs import _forged_unfiled

    storage = _grievance_storage(tmp_path)
    row = {"user_id": NOVA, "category": "wallet", "description": "charged twice for gems"}
    unfiled = "[ERROR   ] bot.tools.grievance_store: " + UNFILED
    unfiled += spool_line("f2", **row, at="2026-12-06T04:00:00Z", state="open")
    printed = f"heard 50%\r{_forged_unfiled()}"
    journal = f"{printed}\n{unfiled}\r\n".encode()
    log_file = tmp_path / "voxdesk.log"
    log_file.write_bytes(journal)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "refile", str(log_file) if given == "file" else "-"],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(storage)},
        input=journal if given == "stdin" else None,
        capture_output=True,
        timeout=120,
    )
    done = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())
    assert done.returncode == 1, done.stderr
    assert "1 unfiled grievance(s) found" in done.stdout
    assert f"refile: not filed: {printed.replace(chr(13), chr(92) + 'r')}\n" in done.stderr

    async def filed() -> list[str]:
        store = await LocalGrievanceStore.open(storage / "grievances.db")
        try:
            return [g.description for g in await store.status("999")] + [
                g.description for g in await store.status(NOVA)
            ]
        finally:
            await store.aclose()

    assert asyncio.run(filed()) == [row["description"]]


@pytest.mark.parametrize(
    "before",
    [
        "voxdesk-bot-1  | [2026-12-06 04:00:00+0000] ",  # docker compose logs
        "[pod/voxdesk-7d9c4/bot] [2026-12-06 04:00:00+0000] ",  # kubectl logs --prefix
    ],
)
def test_refile_says_which_store_line_it_passes_over_behind_a_prefix_it_does_not_know(
    tmp_path, before
) -> None:
    # The grievance's last copy, behind a prefix refile does not take: passed over without a
    # word, it said "0 unfiled grievance(s) found" and exited 0, and the operator kept nothing.
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import voxdesk

    storage = _grievance_storage(tmp_path)
    row = {"user_id": NOVA, "category": "wallet", "description": "charged twice for gems"}
    line = f"{before}[ERROR   ] bot.tools.grievance_store: {UNFILED}"
    line += spool_line("f1", **row, at="2026-12-06T04:00:00Z", state="open")
    log_file = tmp_path / "voxdesk.log"
    log_file.write_text(f"{line}\n")
    done = voxdesk("refile", str(log_file), storage=storage)
    assert done.returncode == 1, done.stderr
    assert "0 unfiled grievance(s) found" in done.stdout  # not filed: it may be words copying one
    assert f"refile: not filed: {line}\n" in done.stderr
    assert "refile: 1 marked line(s) not filed" in done.stderr


def test_refile_files_the_journals_json_and_says_which_entries_it_left_out(tmp_path) -> None:
    # `journalctl -o json` quotes each line in an object: refile found no grievance in one, said
    # "0 unfiled grievance(s) found" and exited 0. An entry journalctl left the message out of
    # (over 4096 bytes, without --all) may be one too.
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import voxdesk
    from .test_logs import _journal_json

    storage = _grievance_storage(tmp_path)
    row = {"user_id": NOVA, "category": "wallet", "description": "charged twice for gems"}
    line = "[ERROR   ] bot.tools.grievance_store: " + UNFILED
    line += spool_line("f1", **row, at="2026-12-06T04:00:00Z", state="open")
    log_file = tmp_path / "voxdesk.json"
    log_file.write_text(_journal_json(line) + "\n")
    done = voxdesk("refile", str(log_file), storage=storage)
    assert done.returncode == 0, done.stderr
    assert "1 unfiled grievance(s) found" in done.stdout

    log_file.write_text(_journal_json(None) + "\n")
    done = voxdesk("refile", str(log_file), storage=storage)
    assert done.returncode == 1, done.stderr
    assert "refile: 1 journal entry(s) of voxdesk's without a message" in done.stderr
    assert "-o json --all" in done.stderr


@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_refile_files_a_containers_log_with_the_files_its_runtime_rotated_before_it(tmp_path, runtime):
    # `docker compose` keeps a container's lines in json-file logs, Kubernetes and Podman in CRI
    # logs (`<time> stderr F <text>`), both of which refile reads. A line over 16 KiB is kept as
    # pieces, and the runtime may rotate the file between them.
    from .test_cli import voxdesk
    from .test_logs import _cri_log, _docker_json, _long_store_line

    storage = _grievance_storage(tmp_path)
    line, row = _long_store_line()
    started_line = "[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n"
    if runtime == "docker":
        started = [f"{entry}\n" for entry in _docker_json(started_line)]
        head, rest = (f"{entry}\n" for entry in _docker_json(line + "\n"))
        rotated, current = tmp_path / "c0ffee-json.log.1", tmp_path / "c0ffee-json.log"
        hint = "ID-json.log.1 ID-json.log"
    else:
        started = _cri_log(started_line)
        head, rest = _cri_log(line + "\n", seconds=1)
        rotated, current = tmp_path / "0.log.20261206-040001", tmp_path / "0.log"
        hint = "0.log.DATE 0.log"
    rotated.write_text("".join([*started, head]))
    current.write_text(rest)
    done = voxdesk("refile", str(rotated), storage=storage)
    assert done.returncode == 1, done.stderr  # a line whose end is in the next file: shown
    assert "0 unfiled grievance(s) found" in done.stdout
    assert "refile: 1 marked line(s) not filed" in done.stderr and hint in done.stderr
    done = voxdesk("refile", str(rotated), str(current), storage=storage)
    assert done.returncode == 0, done.stderr
    assert "1 unfiled grievance(s) found" in done.stdout

    async def filed() -> list[str]:
        store = await LocalGrievanceStore.open(storage / "grievances.db")
        try:
            return [g.description for g in await store.status(row["user_id"])]
        finally:
            await store.aclose()

    assert asyncio.run(filed()) == [row["description"]]


def test_refiles_own_lines_start_no_grievance_where_the_journal_cuts_them(tmp_path) -> None:
    # refile run by a unit (or a container's stderr) writes to the journal: a line it shows whole,
    # another program's over LineMax, was cut by journald where a player's words placed the
    # store's line, which the next `journalctl -o cat | voxdesk refile` filed.
    from bot import logs
    from bot.tools.grievance_spool import unfiled_in

    from .test_cli import voxdesk
    from .test_logs import JOURNAL_LINE_MAX, _as_journal_cuts, _forged_unfiled

    storage = _grievance_storage(tmp_path)
    said = "refile: not filed: chat-1  | "
    line = f"chat-1  | {'x' * (JOURNAL_LINE_MAX - len(said) - 1)} {_forged_unfiled()}"
    log_file = tmp_path / "voxdesk.log"
    log_file.write_text(f"{line}\n")
    done = voxdesk("refile", str(log_file), storage=storage)
    assert done.returncode == 1, done.stderr
    assert "refile: 1 marked line(s) not filed" in done.stderr
    assert unfiled_in(_as_journal_cuts(done.stderr)) == ([], 0)
    assert all(len(shown.encode()) <= logs.MAX_LINE_BYTES for shown in done.stderr.splitlines())


def test_refile_given_journal_output_it_does_not_read_says_so_and_files_nothing(tmp_path) -> None:
    from bot.tools.grievance_spool import UNFILED, GrievanceSpool, spool_line

    from .test_cli import voxdesk
    from .test_logs import _journal_outputs_refile_does_not_read

    storage = _grievance_storage(tmp_path)
    row = {"user_id": NOVA, "category": "wallet", "description": "charged twice for gems"}
    line = "[ERROR   ] bot.tools.grievance_store: " + UNFILED
    line += spool_line("f1", **row, at="2026-12-06T04:00:00Z", state="open")
    text_log, exported = tmp_path / "voxdesk.log", tmp_path / "voxdesk.export"
    text_log.write_text(f"{line}\n")
    exported.write_text(_journal_outputs_refile_does_not_read()["export"])
    done = voxdesk("refile", str(text_log), str(exported), storage=storage)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"refile: {exported} is journalctl's -o export output, which refile does not read; nothing"
        " was filed: give it -o cat, short (and its variants), json, json-seq or json-sse, as in:"
        " journalctl -u voxdesk -o json --all | voxdesk refile"
    ]
    assert not GrievanceSpool.beside(storage / "grievances.db").waiting()


def test_refile_shows_the_first_lines_it_passes_over_spelled_out_and_counts_them_all(tmp_path) -> None:
    # `docker compose logs` colours its prefix: shown as read, the escape codes reached the
    # terminal. A journal of many such lines is a count past the first few shown.
    from bot import logs
    from bot.cli import PASSED_OVER_SHOWN
    from bot.tools.grievance_spool import UNFILED, spool_line

    from .test_cli import voxdesk

    storage = _grievance_storage(tmp_path)
    lines = []
    for n in range(PASSED_OVER_SHOWN + 2):
        row = {"user_id": NOVA, "category": "wallet", "description": f"charged twice for gems, {n}"}
        line = f"\x1b[36mvoxdesk-bot-1  |\x1b[0m [ERROR   ] bot.tools.grievance_store: {UNFILED}"
        lines.append(line + spool_line(f"f{n}", **row, at="2026-12-06T04:00:00Z", state="open"))
    log_file = tmp_path / "voxdesk.log"
    log_file.write_text("".join(f"{line}\n" for line in lines))
    done = voxdesk("refile", str(log_file), storage=storage)
    assert done.returncode == 1, done.stderr
    shown = [line for line in done.stderr.splitlines() if line.startswith("refile: not filed: ")]
    assert shown == [f"refile: not filed: {logs.one_line(line)}" for line in lines[:PASSED_OVER_SHOWN]]
    assert "\x1b" not in done.stderr
    assert f"refile: {len(lines)} marked line(s) not filed" in done.stderr


def test_refile_into_a_folder_not_the_bots_says_so_before_reading_a_journal(tmp_path) -> None:
    # `journalctl | voxdesk refile` with the storage folder named wrong: refused at once, not
    # after months of journal were read (here stdin stays open, as a follow would).
    from .test_cli import REPO

    with subprocess.Popen(
        [sys.executable, "-m", "bot", "refile"],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(tmp_path)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as refile:
        try:
            status = refile.wait(timeout=60)
        finally:
            refile.kill()
        said = refile.stderr.read()
    assert status == 2 and "grievances.db does not exist" in said


async def test_two_processes_claiming_one_complaint_at_once_file_it_once_and_a_restart_knows_it(
    tmp_path,
) -> None:
    # /grievance file's memory of what was filed lately was one process's: a second bot on the
    # storage folder, or the same bot restarted, filed a repeat as a ticket of its own.
    from bot.tools.grievance_store import Lately, LocalGrievanceStore

    db = tmp_path / "grievances.db"
    one, two = await LocalGrievanceStore.open(db), await LocalGrievanceStore.open(db)
    words = ("wallet", "gems gone after the update")
    try:
        claims = await asyncio.gather(
            one.claim_words(BLAZE, words, "discord:1:", 600.0),
            two.claim_words(BLAZE, words, "discord:2:", 600.0),
        )
        assert sorted(c.busy for c in claims) == [False, True]  # the other's filing is under way
        first, other = (one, two) if not claims[0].busy else (two, one)
        turn = "discord:1:" if first is one else "discord:2:"
        filed = await first.register(BLAZE, "wallet", "Gems gone after the update", f"{turn}0")
        await first.settle_words(BLAZE, words, turn, True, None)
        assert await other.claim_words(BLAZE, words, "discord:3:", 600.0) == Lately(key=filed.key)
        # Another player's same words are theirs to file: no key of Blaze's is told them.
        assert await other.claim_words(NOVA, words, "discord:4:", 600.0) == Lately()
        # Resolved: the next repeat files, once.
        finished = frozenset({filed.key})
        again = await asyncio.gather(
            one.claim_words(BLAZE, words, "discord:5:", 600.0, finished),
            two.claim_words(BLAZE, words, "discord:6:", 600.0, finished),
        )
        assert sorted(c.busy for c in again) == [False, True]
    finally:
        await one.aclose()
        await two.aclose()
    restarted = await LocalGrievanceStore.open(db)
    try:
        assert (await restarted.claim_words(BLAZE, words, "discord:7:", 600.0)).busy
        # Past the window a claim whose lease is live still holds: its filing may still run.
        assert (await restarted.claim_words(BLAZE, words, "discord:8:", 0.0)).busy
        await restarted._conn.execute("UPDATE lately_filed SET lease_until = ?", (time.time() - 1,))
        await restarted._conn.commit()
        # Past the window and the lease nothing is told: a complaint made again later is a new one.
        assert await restarted.claim_words(BLAZE, words, "discord:9:", 0.0) == Lately()
    finally:
        await restarted.aclose()


async def test_a_claim_whose_filing_died_before_the_clock_was_set_back_lets_a_repeat_file(
    tmp_path, monkeypatch
) -> None:
    # A bot killed mid-filing, its host's fast clock set back an hour at the reboot (NTP): the dead
    # filing's lease read as live for that hour, each repeat of /grievance file was told to wait,
    # and the command gave up telling the player their complaint was kept, with nothing kept.
    from bot.tools import grievance_store
    from bot.tools.grievance_store import FILING_LEASE_SECONDS, Lately, LocalGrievanceStore
    from tests.test_discord_voice import HostClock

    db = tmp_path / "grievances.db"
    words = ("wallet", "gems gone after the update")
    dead = await LocalGrievanceStore.open(db)
    try:
        assert await dead.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
        dead.stop_renewing(BLAZE, words, "discord:1:")  # killed: neither filed nor settled
    finally:
        await dead.aclose()
    clock = HostClock()
    clock.back = 3600.0
    monkeypatch.setattr(grievance_store, "time", clock)
    restarted = await LocalGrievanceStore.open(db)
    try:
        # A lease this clock could have set ends within FILING_LEASE_SECONDS of it: held so long.
        assert (await restarted.claim_words(BLAZE, words, "discord:2:", 600.0)) == Lately()
        [(until,)] = await restarted._conn.execute_fetchall("SELECT lease_until FROM lately_filed")
        assert until <= clock.time() + FILING_LEASE_SECONDS
    finally:
        await restarted.aclose()


async def test_a_filing_running_past_the_resubmit_window_holds_off_a_repeat_on_another_bot(
    tmp_path,
) -> None:
    # A /grievance file queued behind a busy database runs past the 10-minute window while its
    # lease is renewed; a repeat reaching another bot on the folder was filed as a second ticket.
    from bot.tools.grievance_store import RESUBMIT_SECONDS, Lately, LocalGrievanceStore

    db = tmp_path / "grievances.db"
    one, two = await LocalGrievanceStore.open(db), await LocalGrievanceStore.open(db)
    words = ("wallet", "gems gone after the update")
    try:
        assert not (await one.claim_words(BLAZE, words, "discord:1:", RESUBMIT_SECONDS)).busy
        # What the renewer leaves after the window: the claim made long ago, its lease live.
        await one._conn.execute("UPDATE lately_filed SET at = at - ?", (RESUBMIT_SECONDS + 1,))
        await one._conn.commit()
        assert (await two.claim_words(BLAZE, words, "discord:2:", RESUBMIT_SECONDS)).busy
        filed = await one.register(BLAZE, "wallet", "Gems gone after the update", "discord:1:0")
        await one.settle_words(BLAZE, words, "discord:1:", True, None)
        assert await two.claim_words(BLAZE, words, "discord:3:", RESUBMIT_SECONDS) == Lately(key=filed.key)
    finally:
        await one.aclose()
        await two.aclose()


async def test_an_older_voxdesk_opens_grievances_db_and_a_claim_locks_the_recent_file_too(
    tmp_path, monkeypatch
) -> None:
    # lately_filed in grievances.db raised its schema to 2: a voxdesk rolled back refused the file,
    # and going back meant a backup without the grievances filed since. The claims are in a file
    # of their own, attached: a claim must still hold the write lock of both, or two processes
    # could each read no claim and each file.
    import bot.db
    from bot.app import StoragePaths
    from bot.tools import grievance_store
    from bot.tools.grievance_store import Lately

    from .test_db import user_version
    from .test_schemas import schema_of

    db = tmp_path / "grievances.db"
    recent = tmp_path / "grievances-recent.db"
    store = await LocalGrievanceStore.open(db)
    words = ("wallet", "gems gone after the update")
    try:
        assert await store.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
        # An older voxdesk knew grievances.db at schema version 1, and no lately_filed in it.
        assert user_version(db) == 1
        assert bot.db.newer_schema(db, user_version(db), 1) is None
        bot.db.written_by_newer(db, 1)
        assert not [line for line in schema_of(db) if "lately_filed" in line]
        assert StoragePaths(tmp_path).recent_claims == recent
        assert user_version(recent) == 1 and recent.stat().st_mode & 0o777 == 0o600
        with contextlib.closing(sqlite3.connect(recent)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT turn FROM lately_filed").fetchall() == [("discord:1:",)]

        # A claim's BEGIN IMMEDIATE takes the attached file's write lock, not only grievances.db's.
        other = sqlite3.connect(recent, timeout=0, isolation_level=None)
        try:
            await store._conn.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await store._conn.rollback()
            # And a claim waits for another's write to the attached file.
            monkeypatch.setattr(bot.db, "BUSY_SECONDS", 3600)
            monkeypatch.setattr(grievance_store, "CLAIM_WAIT_SECONDS", 0.2)
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await asyncio.wait_for(store.claim_words(NOVA, words, "discord:2:", 600.0), 30)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert await store.claim_words(NOVA, words, "discord:3:", 600.0) == Lately()
    finally:
        await store.aclose()


async def _a_store_closed_with_its_claims_file(tmp_path: Path) -> tuple[Path, Path]:
    """grievances.db and grievances-recent.db made by a store and closed, the claims file whole
    without its log, for a test to break or change as it likes."""
    db = tmp_path / "grievances.db"
    recent = tmp_path / "grievances-recent.db"
    await (await LocalGrievanceStore.open(db)).aclose()
    for log_file in (f"{recent}-wal", f"{recent}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(log_file)
    return db, recent


@pytest.mark.parametrize("broken", ["not a database", "torn", "newer schema"])
async def test_a_broken_recent_claims_file_never_stops_a_grievance_from_being_filed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    """grievances-recent.db only tells a repeat the first ticket: a torn or foreign one, or one a
    newer voxdesk wrote, leaves the claims to this process's memory, said in one line."""
    from bot.tools.grievance_store import Lately

    db, recent = await _a_store_closed_with_its_claims_file(tmp_path)
    if broken == "not a database":
        recent.write_bytes(b"not sqlite " * 500)
    elif broken == "torn":
        recent.write_bytes(recent.read_bytes()[:1000])
    else:
        with contextlib.closing(sqlite3.connect(recent)) as conn:
            conn.execute("PRAGMA user_version = 9")
    kept = recent.read_bytes()
    caplog.set_level("WARNING")
    store = await LocalGrievanceStore.open(db)
    words = ("wallet", "gems gone after the update")
    try:
        assert await store.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
        filed = await store.register(BLAZE, "wallet", "gems gone after the update", "discord:1:")
        await store.settle_words(BLAZE, words, "discord:1:", True, None)
        assert await store.claim_words(BLAZE, words, "discord:2:", 600.0) == Lately(key=filed.key)
    finally:
        await store.aclose()
    said = [r.getMessage() for r in caplog.records if "grievances-recent.db" in r.getMessage()]
    assert len(said) == 1 and "filed twice" in said[0], said
    assert recent.read_bytes() == kept  # left as it was found, for whoever looks into it


async def test_a_recent_claims_file_that_could_not_serve_is_tried_again_at_each_housekeeping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Claims kept in memory because grievances-recent.db could not serve stayed there until a
    restart, though the file was deleted or fixed meanwhile: a repeat sent to another bot on the
    folder was filed twice."""
    from bot.tools.grievance_store import Lately

    db, recent = await _a_store_closed_with_its_claims_file(tmp_path)
    recent.write_bytes(b"not sqlite " * 500)
    caplog.set_level("INFO")
    first_bot = await LocalGrievanceStore.open(db)
    second_bot = None
    words = ("wallet", "gems gone after the update")
    try:
        await first_bot.housekeeping()  # still broken: said at the start only
        assert recent.read_bytes() == b"not sqlite " * 500
        assert await first_bot.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
        filed = await first_bot.register(BLAZE, "wallet", "gems gone after the update", "discord:1:")
        await first_bot.settle_words(BLAZE, words, "discord:1:", True, None)
        recent.unlink()
        await first_bot.housekeeping()
        await first_bot.housekeeping()  # said once
        second_bot = await LocalGrievanceStore.open(db)
        # The claim made in memory went to the file with the others.
        assert await second_bot.claim_words(BLAZE, words, "discord:2:", 600.0) == Lately(key=filed.key)
    finally:
        await first_bot.aclose()
        if second_bot is not None:
            await second_bot.aclose()
    said = [r.getMessage() for r in caplog.records if "grievances-recent.db" in r.getMessage()]
    assert len(said) == 2 and "filed twice" in said[0] and said[1].endswith(f"{recent} again"), said


async def test_a_claim_made_in_memory_outlives_a_stale_one_in_the_claims_file_that_serves_again(
    tmp_path: Path,
) -> None:
    """grievances-recent.db fixed by a copy from a backup, which holds the same words claimed long
    ago: the claim made in memory since, not the stale one, is what a repeat is told of. Kept
    behind the stale row, it was pruned with it, and the repeat filed the complaint again."""
    from bot.tools.grievance_store import Lately, claims_of

    db, recent = await _a_store_closed_with_its_claims_file(tmp_path)
    with contextlib.closing(sqlite3.connect(recent)) as conn, conn:
        conn.execute(
            "INSERT INTO lately_filed (words_hash, turn, at, lease_until) VALUES (?, ?, ?, 0)",
            (*claims_of(BLAZE, [("wallet", "gems gone after the update")]), "discord:0:", time.time() - 3600),
        )
    backup = recent.read_bytes()
    recent.write_bytes(b"not sqlite " * 500)
    first_bot = await LocalGrievanceStore.open(db)
    second_bot = None
    words = ("wallet", "gems gone after the update")
    try:
        assert await first_bot.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
        filed = await first_bot.register(BLAZE, "wallet", "gems gone after the update", "discord:1:")
        await first_bot.settle_words(BLAZE, words, "discord:1:", True, None)
        other = ("account", "locked out of my account")
        assert await first_bot.claim_words(BLAZE, other, "discord:3:", 600.0) == Lately()
        recent.write_bytes(backup)  # the copy from last night's backup
        with contextlib.closing(sqlite3.connect(recent)) as conn, conn:
            # Another bot's claim of the same words, newer than the one made in memory: it stays.
            conn.execute(
                "INSERT INTO lately_filed (words_hash, turn, at, lease_until) VALUES (?, ?, ?, 0)",
                (*claims_of(BLAZE, [other]), "discord:4:", time.time()),
            )
        await first_bot.housekeeping()
        second_bot = await LocalGrievanceStore.open(db)
        assert await second_bot.claim_words(BLAZE, words, "discord:2:", 600.0) == Lately(key=filed.key)
        with contextlib.closing(sqlite3.connect(recent)) as conn:
            kept = conn.execute(
                "SELECT turn FROM lately_filed WHERE words_hash = ?", claims_of(BLAZE, [other])
            )
            assert kept.fetchall() == [("discord:4:",)]
    finally:
        await first_bot.aclose()
        if second_bot is not None:
            await second_bot.aclose()


async def test_a_grievances_db_at_the_unreleased_schema_2_is_refused_in_one_line_untouched(tmp_path) -> None:
    # For one day of unreleased code, grievances.db held lately_filed at schema version 2. Nobody
    # runs on such a file: it is refused as any file of a newer voxdesk is, and left as it was.
    from bot.db import NewerSchema

    db = tmp_path / "grievances.db"
    await (await LocalGrievanceStore.open(db)).aclose()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE lately_filed (words_hash TEXT PRIMARY KEY, turn TEXT NOT NULL)")
        conn.execute("PRAGMA user_version = 2")
        conn.commit()
    before = db.read_bytes()
    with pytest.raises(NewerSchema, match="schema version 2, this one knows up to 1") as refused:
        await LocalGrievanceStore.open(db)
    assert "\n" not in str(refused.value)
    assert db.read_bytes() == before


# Words split by punctuation are words; Arabic and Devanagari are written with spaces and counted
# as Latin is (a Devanagari vowel sign as a letter); Hangul too, but each three syllables of a word
# count as a word (a syllable as the letters it is made of), since Korean runs a noun and its verb
# or two nouns together; Chinese and Japanese characters count as two letters, each two of them
# a word; Thai, Lao, Khmer and Myanmar letters as one, each four of them a word.
@pytest.mark.parametrize(
    "words, short",
    [
        ("cant-login", False),
        ("lag/crash", False),
        ("gems_gone", False),
        ("Refund", True),
        ("lag!!", True),
        ("don't", True),
        ("\u00a0x\u00a0y\u00a0", True),
        # A zero-width space is a space (text pasted from a web page); a joiner is not.
        ("gems\u200bgone", False),
        ("Gems\u200dgone", True),
        ("Gems gone.", False),
        # Korean: "refund"; "login"; "please refund" in one word, as "please refund" is let
        # through; "payment error" and "refund request", compound nouns written as one word or
        # two; "I paid but the item didn't come in", a chat line typed without spaces.
        ("환불", True),
        ("로그인", True),
        ("환불해주세요", False),
        ("please refund", False),
        ("결제오류", False),
        ("결제 오류", False),
        ("환불요청", False),
        ("환불 요청", False),
        ("결제했는데아이템이안들어왔어요", False),
        # Arabic: "refund" (one word); "the amount did not reach me".
        ("استرداد", True),
        ("الاسترداد", True),
        ("لم يصلني المبلغ", False),
        # Devanagari: "refund"; "the money was not received"; "not received".
        ("रिफंडचाहिए", True),
        ("पैसे नहीं मिले", False),
        ("नहीं मिला", False),
        # Chinese and Japanese: "refund"; "not credited"; "won't start".
        ("退款", True),
        ("没到账", False),
        ("起動しない", False),
        ("返金", True),
        # Thai: "refund" (one word); "money lost"; "did not get the money".
        ("คืนเงิน", True),
        ("เงินหาย", False),
        ("ไม่ได้รับเงิน", False),
    ],
)
def test_too_short_counts_words_and_letters_by_how_each_script_is_written(words: str, short: bool) -> None:
    from bot.tools import too_short

    assert too_short(words) is short


def test_the_filing_tools_schema_tells_the_model_the_least_it_files() -> None:
    from bot.tools import MIN_DESCRIPTION_LETTERS, MIN_DESCRIPTION_WORDS, build_tools

    (tool,) = [t for t in build_tools(None, None, None) if t.name == "register_grievance"]  # type: ignore[arg-type]
    said = tool.parameters["properties"]["description"]["description"]
    assert f"at least {MIN_DESCRIPTION_WORDS} words and {MIN_DESCRIPTION_LETTERS} letters" in said
    assert "ask" in said.lower()


async def test_a_complaint_kept_in_the_spool_is_filed_while_nothing_else_happens(
    tmp_path, monkeypatch
) -> None:
    # Kept while the database refused it, it was filed only by the next filing, a player's look
    # at their tickets, ticket news's poll or a restart: with news off and a quiet desk, never.
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        real = LocalGrievanceStore._insert

        async def refused(*args: object, **kwargs: object) -> str | None:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(LocalGrievanceStore, "_insert", refused)
        with pytest.raises(ToolError, match="kept"):
            await store.register(BLAZE, "wallet", "Gems gone after the update", "discord:9:0")
        monkeypatch.setattr(LocalGrievanceStore, "_insert", real)
        await store.start(every=0.02)
        deadline = asyncio.get_running_loop().time() + 20
        # Filed, then taken off the spool: the row is committed before the spool is emptied, so
        # a look between the two sees it in both.
        while not (await store.staff_count() and await store.count_unfiled() == 0):
            assert asyncio.get_running_loop().time() < deadline, (
                f"the kept complaint was never filed and taken off the spool: {await store.staff_count()}"
                f" filed, {await store.count_unfiled()} unfiled"
            )
            await asyncio.sleep(0.02)
        assert await store.staff_count() == 1 and await store.count_unfiled() == 0
    finally:
        await store.aclose()


async def test_a_spool_filing_stopped_while_it_takes_the_spool_lets_it_go(tmp_path, monkeypatch) -> None:
    # The spool was taken in a thread that a stop does not stop: the lock it took was on a
    # descriptor nobody closed, so every later keep() of a grievance waited for ever.
    import threading

    from bot.tools.grievance_spool import GrievanceSpool

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    spool = GrievanceSpool.beside(tmp_path / "grievances.db")
    row = {"user_id": BLAZE, "category": "wallet", "description": "Gems gone after the update"}
    row |= {"at": "2026-12-06T07:00:00+00:00", "state": "local_only"}
    assert spool.keep("discord:9:0", **row)
    real, inside, go, taken = GrievanceSpool.take, threading.Event(), threading.Event(), threading.Event()

    def slow_take(self: GrievanceSpool):  # type: ignore[no-untyped-def]
        inside.set()
        go.wait()
        try:
            return real(self)
        finally:
            taken.set()

    monkeypatch.setattr(GrievanceSpool, "take", slow_take)
    try:
        filing = asyncio.ensure_future(store.file_spooled())
        await asyncio.to_thread(inside.wait)
        filing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await filing
        go.set()
        await asyncio.to_thread(taken.wait)
        monkeypatch.setattr(GrievanceSpool, "take", real)
        deadline = asyncio.get_running_loop().time() + 20
        while not spool.keep("discord:10:0", wait=False, **row):
            assert asyncio.get_running_loop().time() < deadline, "the spool stayed locked"
            await asyncio.sleep(0.02)
        assert await store.file_spooled() == 2
    finally:
        go.set()
        await store.aclose()


async def test_a_repeat_after_a_restart_lost_a_complaint_held_in_memory_files_it(
    tmp_path, monkeypatch
) -> None:
    # Refused by the database and the disk, a complaint is held in memory and its player told to
    # tell it again if a restart loses it; told again after one, the repeat heard "held" once more
    # (the record of the first filing outlives the memory that held it) and nothing was filed.
    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import Lately

    db, words = tmp_path / "grievances.db", ("wallet", "gems gone after the update")

    async def refused(*args: object, **kwargs: object) -> str | None:
        raise sqlite3.OperationalError("database is locked")

    def full(*args: object, **kwargs: object) -> bool:
        raise OSError(28, "No space left on device")

    store = await LocalGrievanceStore.open(db)
    with monkeypatch.context() as m:
        try:
            assert await store.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
            m.setattr(LocalGrievanceStore, "_insert", refused)
            m.setattr(GrievanceSpool, "keep", full)
            with pytest.raises(ToolError, match=say.HELD_FOR_LATER):
                await store.register(BLAZE, "wallet", "Gems gone after the update", "discord:1:0")
            await store.settle_words(BLAZE, words, "discord:1:", False, say.HELD_FOR_LATER)
            # Told "held" while this process holds it.
            held = await store.claim_words(BLAZE, words, "discord:2:", 600.0)
            assert held == Lately(kept=say.HELD_FOR_LATER)
        finally:
            await store.aclose()  # the disk still full: the held complaint is lost, and logged
    restarted = await LocalGrievanceStore.open(db)
    try:
        assert await restarted.claim_words(BLAZE, words, "discord:3:", 600.0) == Lately()
    finally:
        await restarted.aclose()


async def test_a_claim_on_a_busy_database_gives_up_soon_and_leaves_the_filing_its_full_wait(
    tmp_path, monkeypatch
) -> None:
    # /grievance file claims its words, then files: each waited the database's full busy wait
    # (30 s), so a player whose complaint the busy database refused heard "kept" after a minute,
    # and every other filing of the process queued behind both waits.
    import bot.db
    from bot.tools import grievance_store

    monkeypatch.setattr(bot.db, "BUSY_SECONDS", 3600)
    monkeypatch.setattr(grievance_store, "CLAIM_WAIT_SECONDS", 0.2)
    db = tmp_path / "grievances.db"
    store = await LocalGrievanceStore.open(db)
    holder = sqlite3.connect(db)
    try:
        holder.execute("BEGIN IMMEDIATE")
        claim = store.claim_words(BLAZE, ("wallet", "gems gone after the update"), "discord:1:", 600.0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            # A guard, not a measure: without a wait of its own the claim waits the hour.
            await asyncio.wait_for(claim, 30)
        # The filing that follows waits as long as ever.
        assert [tuple(r) for r in await store._conn.execute_fetchall("PRAGMA busy_timeout")] == [
            (3600 * 1000,)
        ]
    finally:
        holder.rollback()
        holder.close()
        await store.aclose()


async def test_a_stop_cut_short_while_the_refiler_ends_still_keeps_what_memory_holds(
    tmp_path, monkeypatch
) -> None:
    # aclose waited for the refiler, whose rollback waits for a busy database, before it wrote
    # the grievances held in memory to the spool (or the log): a stop whose grace ran out then
    # (a cancel of aclose) lost them without a line anywhere, and left the database open.
    from bot.tools.grievance_spool import GrievanceSpool

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    inside, rolled_back = asyncio.Event(), asyncio.Event()

    async def busy_filing() -> int:
        inside.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.shield(rolled_back.wait())  # the rollback waits for the busy database
            raise
        return 0

    row = {"user_id": BLAZE, "category": "wallet", "description": "Gems gone after the update"}
    row |= {"at": "2026-12-06T07:00:00+00:00", "state": "local_only"}
    assert store._hold("discord:1:0", row)  # refused by the database and the disk meanwhile
    monkeypatch.setattr(store, "file_spooled", busy_filing)
    await store.start(every=0.01)
    await asyncio.wait_for(inside.wait(), 30)
    closing = asyncio.ensure_future(store.aclose())
    await asyncio.sleep(0)  # aclose runs to its wait for the refiler
    assert store._refiler is None and not closing.done()
    closing.cancel()
    rolled_back.set()
    with pytest.raises(asyncio.CancelledError):
        await closing
    spool = GrievanceSpool.beside(tmp_path / "grievances.db")
    assert [line["id"] for line in spool.lines()] == ["discord:1:0"]


async def test_a_claim_cancelled_while_its_short_wait_is_set_gives_the_connection_its_full_wait(
    tmp_path,
) -> None:
    # aiosqlite runs a statement already queued even when its caller is cancelled: a claim
    # stopped while setting its own short busy wait (a shutdown, a player's command timing out
    # behind another statement on the connection) would leave every later write of the store,
    # filings included, refused after the claim's seconds instead of the database's wait.
    import threading

    import bot.db

    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    release = threading.Event()
    try:
        # Another statement of the connection under way: the claim's queues behind it.
        busy = asyncio.ensure_future(store._conn._execute(release.wait))
        claim = asyncio.ensure_future(
            store.claim_words(BLAZE, ("wallet", "gems gone after the update"), "discord:1:", 600.0)
        )
        while store._conn._tx.empty():  # noqa: ASYNC110 - aiosqlite's queue has no event
            await asyncio.sleep(0)
        claim.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await claim
        await busy
        assert [tuple(r) for r in await store._conn.execute_fetchall("PRAGMA busy_timeout")] == [
            (int(bot.db.BUSY_SECONDS * 1000),)
        ]
    finally:
        release.set()
        await store.aclose()


@pytest.mark.parametrize("logs_too", [False, True])
async def test_a_recent_claims_file_deleted_under_a_running_store_is_made_anew_at_housekeeping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, logs_too: bool
) -> None:
    """Deleted while the bot runs, grievances-recent.db lived on in the inode the store held: a
    second bot on the folder made a new file, and a repeat sent to each was filed twice."""
    from bot.tools.grievance_store import Lately

    db = tmp_path / "grievances.db"
    recent = tmp_path / "grievances-recent.db"
    first_bot = await LocalGrievanceStore.open(db)
    second_bot = None
    try:
        for gone in [recent] + ([Path(f"{recent}-wal"), Path(f"{recent}-shm")] if logs_too else []):
            gone.unlink(missing_ok=True)
        second_bot = await LocalGrievanceStore.open(db)
        caplog.set_level("INFO")
        await first_bot.housekeeping()
        await first_bot.housekeeping()  # said once
        words = ("wallet", "gems gone after the update")
        assert await first_bot.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
        filed = await first_bot.register(BLAZE, "wallet", "gems gone after the update", "discord:1:")
        await first_bot.settle_words(BLAZE, words, "discord:1:", True, None)
        assert await second_bot.claim_words(BLAZE, words, "discord:2:", 600.0) == Lately(key=filed.key)
    finally:
        await first_bot.aclose()
        if second_bot is not None:
            await second_bot.aclose()
    # The file alone deleted: the second bot restores it from the log left beside it (bot.db says so).
    said = [r.getMessage() for r in caplog.records if r.name == "bot.tools.grievance_store"]
    assert len(said) == 1 and "deleted or replaced" in said[0], said


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "never came to pass"
        await asyncio.sleep(0.02)


async def test_a_claim_is_renewed_while_its_filing_runs_and_lapses_once_let_go(tmp_path, monkeypatch) -> None:
    """A /grievance file queued behind a busy database ran past its claim's lease: a repeat sent
    to another bot on the folder then filed a second ticket while the first was still filing. The
    process filing it renews the claim, so only a stopped filing's (or dead process's) lapses."""
    import time

    from bot.tools import grievance_store
    from bot.tools.grievance_store import Lately

    monkeypatch.setattr(grievance_store, "FILING_LEASE_SECONDS", 1.0)
    db = tmp_path / "grievances.db"

    def lease(turn: str) -> float:
        with contextlib.closing(sqlite3.connect(tmp_path / "grievances-recent.db")) as conn:
            row = conn.execute("SELECT lease_until FROM lately_filed WHERE turn = ?", (turn,)).fetchone()
            return float(row[0]) if row else 0.0

    one, two = await LocalGrievanceStore.open(db), await LocalGrievanceStore.open(db)
    words, other_words = ("wallet", "gems gone after the update"), ("other", "lag every evening")
    try:
        assert await one.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()
        first = lease("discord:1:")
        # Past its first lease, still filing: renewed, and the repeat waits for it.
        await until(lambda: time.time() > first and lease("discord:1:") > time.time() + 0.5)
        assert (await two.claim_words(BLAZE, words, "discord:2:", 600.0)).busy
        filed = await one.register(BLAZE, "wallet", "Gems gone after the update", "discord:1:0")
        await one.settle_words(BLAZE, words, "discord:1:", True, None)
        assert await two.claim_words(BLAZE, words, "discord:3:", 600.0) == Lately(key=filed.key)
        assert lease("discord:1:") == 0.0  # settled: never renewed again

        # A filing cut short: let go, its claim lapses and a repeat files.
        assert await one.claim_words(BLAZE, other_words, "discord:4:", 600.0) == Lately()
        one.stop_renewing(BLAZE, other_words, "discord:4:")
        await until(lambda: time.time() > lease("discord:4:"))
        assert await two.claim_words(BLAZE, other_words, "discord:5:", 600.0) == Lately()
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_claim_is_still_renewed_after_a_round_failed_other_than_on_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal round failing with neither sqlite3.Error nor OSError (a symlink loop at the
    claims file's path: RuntimeError from Path.resolve) must not end the renewing task, unsaid
    until the task is collected: the claims of filings still running would lapse, and a repeat
    sent to another bot on the folder file a second ticket."""
    from bot.tools import grievance_store
    from bot.tools.grievance_store import Lately

    monkeypatch.setattr(grievance_store, "FILING_LEASE_SECONDS", 1.0)
    recent, aside = tmp_path / "grievances-recent.db", tmp_path / "aside.db"

    def lease() -> float:
        with contextlib.closing(sqlite3.connect(recent)) as conn:
            row = conn.execute("SELECT lease_until FROM lately_filed WHERE turn = 'discord:1:'").fetchone()
            return float(row[0]) if row else 0.0

    one = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        with caplog.at_level(logging.ERROR, logger="bot.tools.grievance_store"):
            assert await one.claim_words(BLAZE, ("wallet", "gems gone"), "discord:1:", 600.0) == Lately()
            recent.rename(aside)
            recent.symlink_to(recent.name)  # the same file back, through a link to itself
            await until(lambda: "could not renew" in caplog.text)
            recent.unlink()
            aside.rename(recent)
        first = lease()
        await until(lambda: lease() > first)
    finally:
        await one.aclose()


async def test_a_claim_made_in_memory_is_renewed_once_the_claims_file_serves_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A /grievance file claimed while grievances-recent.db could not serve, still filing when the
    file serves again: housekeeping copied the claim in, but only claims made with the file
    attached were renewed. Its lease lapsed while its filing ran, and a repeat sent to another bot
    on the folder filed a second ticket."""
    from bot.tools import grievance_store
    from bot.tools.grievance_store import Lately

    monkeypatch.setattr(grievance_store, "FILING_LEASE_SECONDS", 1.0)
    db, recent = await _a_store_closed_with_its_claims_file(tmp_path)
    recent.write_bytes(b"not sqlite " * 500)
    one = await LocalGrievanceStore.open(db)
    two = None
    words = ("wallet", "gems gone after the update")

    def lease() -> float:
        with contextlib.closing(sqlite3.connect(recent)) as conn:
            row = conn.execute("SELECT lease_until FROM lately_filed WHERE turn = 'discord:1:'").fetchone()
            return float(row[0]) if row else 0.0

    try:
        assert await one.claim_words(BLAZE, words, "discord:1:", 600.0) == Lately()  # in memory
        recent.unlink()
        await one.housekeeping()  # the file serves again, with the claim copied in
        first = lease()
        assert first > 0
        # Past its first lease, still filing: renewed, and a repeat to another bot waits for it.
        await until(lambda: time.time() > first and lease() > time.time() + 0.5)
        two = await LocalGrievanceStore.open(db)
        assert (await two.claim_words(BLAZE, words, "discord:2:", 600.0)).busy
    finally:
        await one.aclose()
        if two is not None:
            await two.aclose()


async def test_a_store_id_read_while_another_call_makes_it_is_the_one_kept(tmp_path) -> None:
    """store_id read outside the writers' lock: while a first call had inserted its id and not yet
    committed, a second call on the connection read that id; the first cut short (a shutdown) and
    rolled back, the second's caller went on with an id the database never kept (ticket news's
    cursor and sources under it), and the next call made another."""
    store = await LocalGrievanceStore.open(tmp_path / "grievances.db")
    try:
        await store._write_lock.acquire()
        making = asyncio.create_task(store.store_id())
        await until(lambda: store._write_lock._waiters)  # read none, waits its turn to make one
        store._write_lock.release()
        reading = asyncio.create_task(store.store_id())
        await asyncio.sleep(0)  # the first has queued its insert, the second its read
        making.cancel()
        with pytest.raises(asyncio.CancelledError):
            await making
        told = await reading
        assert told == await store.store_id()
    finally:
        await store.aclose()


def test_words_clipped_for_a_reply_keep_each_flag_and_accent_whole() -> None:
    from bot.tools import clipped

    assert clipped("GRV-" + "🇯🇵" * 5, 7) == "GRV-🇯🇵…"
    assert clipped("cafe\u0301 au lait", 4) == "caf…"


def test_words_clipped_keep_hindi_conjuncts_and_decomposed_hangul_whole() -> None:
    # "नमस्ते" cut at 4 kept "नमस्", a dead consonant the player never wrote; "한국" as macOS may
    # send it (six jamo) cut at 4 left a syllable without its vowel.
    from bot.tools import clipped

    assert clipped("नमस्ते दोस्त", 4) == "नम…"
    hanguk = "\u1112\u1161\u11ab\u1100\u116e\u11a8"  # 한국 decomposed: 한 is its first three
    assert clipped(hanguk + " game", 4) == "\u1112\u1161\u11ab…"


def test_a_cut_to_nothing_keeps_nothing() -> None:
    # A limit of 0 asked cluster_start for the place before the first character: it answered -1,
    # and text[:-1] kept all of it but its last character.
    from bot.ticket_news import plain
    from bot.tools import cluster_start
    from bot.web import shortened

    assert [cluster_start("", 0), cluster_start("abc", -1), cluster_start("🇯🇵", 1)] == [0, 0, 1]
    assert shortened("hello world", 0) == "…" and plain("hello world", 0) == "…"


def test_a_cut_inside_a_conjunct_keeps_it_whole_or_leaves_it_out() -> None:
    # Devanagari's "क्ष" is one character to a reader: cut after its virama, a ticket's words
    # would end in "क्", which reads as another word.
    from bot.tools import clipped, cluster_start

    words = "मेरा क्षेत्र"
    at = words.index("ष")
    assert cluster_start(words, at) == words.index("क्ष")
    assert clipped(words, at) == "मेरा …"


async def test_check_says_a_spool_it_cannot_read_wants_a_person(settings, caplog) -> None:
    # A spool that cannot be read may hold grievances the database refused: counting none,
    # `check` would say all is well while /healthz is not ready for it. Said once, in its line: an
    # ERROR logged besides would say it twice, as if `check` itself had failed.
    from bot.health import check_all
    from bot.tools.grievance_spool import GrievanceSpool

    caplog.set_level(logging.INFO)
    spool = GrievanceSpool.beside(storage_paths(settings).grievances)
    spool.path.mkdir()  # unreadable as a file, as a failing disk's sector would be
    line = {r.service: r for r in await check_all(settings)}["grievances"]
    assert line.ok and line.warn, line.line()
    assert line.detail.endswith(
        f"; {spool.path} cannot be read, and may hold grievances the database refused"
    ), line.detail
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_key_or_id_with_a_line_break_after_it_is_not_one() -> None:
    # `$` would match before a final line break: "GRV-1\n" would pass as a key.
    from bot.tools import TICKET_KEY
    from bot.tools.jira_tracker import KEY_PREFIX, LABEL_PREFIX, LOCAL_KEY, PROJECT_KEY, USER_ID

    checked = [
        (TICKET_KEY, "GRV-1"),
        (PROJECT_KEY, "GRV"),
        (USER_ID, "111111111111111111"),
        (LOCAL_KEY, f"{KEY_PREFIX}-1"),
        (LABEL_PREFIX, "voxdesk"),
    ]
    for pattern, good in checked:
        assert pattern.match(good) and not pattern.match(good + "\n"), pattern.pattern


def test_a_manual_not_in_utf8_is_one_line_naming_it_and_a_bom_is_no_text(tmp_path: Path) -> None:
    # A manual saved on Windows (Notepad's "ANSI") stopped `init` and `index-manuals` with a
    # UnicodeDecodeError's traceback naming no file; one with Notepad's byte-order mark had its
    # "# Title" line read as text, so its passages were titled after the file instead.
    from bot.config import ConfigError
    from bot.tools.manual_chunks import chunk_manuals

    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "cafe.md").write_bytes(b"\xef\xbb\xbf# Caf\xc3\xa9 guide\r\n## Hours\r\nOpen at noon.\r\n")
    (chunk,) = chunk_manuals(folder)
    assert (chunk.title, chunk.text) == ("Café guide: Hours", "Open at noon.")
    (folder / "shop.md").write_bytes("# Shop\n## Prices\nTen € a month.\n".encode("cp1252"))
    with pytest.raises(ConfigError) as caught:
        chunk_manuals(folder)
    assert str(caught.value) == (
        f"storage.manuals_dir: {folder / 'shop.md'} is not UTF-8 text: save it as UTF-8"
    )
