"""Ticket news in the core: what is news (late filings, late pushes, status changes in the local
store or in Jira), each change told at most once, across restarts, in the player's
reply style, never to a player who turned it off, and a closed-DMs notice at most once.

Real SQLite files, the real `jira` package against the fake Jira; the front end is a recording
`Messenger`, as cogs/news.py is for Discord (tests/test_discord_news.py runs that one)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import sqlite3
import time
import types
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot import metrics, ticket_news
from bot.config import NewsSettings, Settings
from bot.preferences import PreferenceStore
from bot.sentences import DMS_CLOSED_NOTICE
from bot.ticket_news import MAX_QUIET_SECONDS, Delivery, NewsStore, Outcome, TicketNews, plain
from bot.tools import ticket_rows
from bot.tools.grievance_spool import GrievanceSpool
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.jira_grievances import JiraGrievances
from tests.cloud.test_jira_grievances import SHORT_TIMEOUT, Delays, eventually, jira_settings
from tests.conftest import BLAZE, NOVA
from tests.fakes.jira_server import (
    JQL,
    NEWS_JQL,
    FakeJira,
    resolution_field,
    running_fake_jira,
    select_field,
)

# The real clocks, for a test that puts a stepped-back one in bot.ticket_news.
real_time, real_monotonic = time.time, time.monotonic


@dataclass
class Recorder:
    """The front end: records what it was asked to send and answers as scripted."""

    outcomes: list[Outcome] = field(default_factory=list)  # one per DM, then SENT
    dms: list[Delivery] = field(default_factory=list)
    notices: list[tuple[str, str, str]] = field(default_factory=list)

    async def direct(self, delivery: Delivery) -> Outcome:
        self.dms.append(delivery)
        return self.outcomes.pop(0) if self.outcomes else Outcome.SENT

    async def in_channel(self, user_id: str, channel_id: str, text: str) -> bool:
        self.notices.append((user_id, channel_id, text))
        return True

    def texts(self, user_id: str | None = None) -> list[str]:
        return [d.text for d in self.dms if user_id in (None, d.user_id)]


@dataclass
class Parts:
    grievances: Any
    local: LocalGrievanceStore
    preferences: PreferenceStore
    store: NewsStore
    news: TicketNews


@contextlib.asynccontextmanager
async def news_over(
    storage: Path,
    grievances: Any = None,
    speaker: Any = None,
    clock: Callable[[], float] = time.monotonic,
    **settings: Any,
) -> AsyncIterator[Parts]:
    """Ticket news over the stores in `storage`, as bot/app.py builds it; one start of the bot."""
    async with contextlib.AsyncExitStack() as stack:
        if grievances is None:
            grievances = await LocalGrievanceStore.open(storage / "grievances.db")
        stack.push_async_callback(grievances.aclose)
        preferences = await PreferenceStore.open(storage / "preferences.db")
        stack.push_async_callback(preferences.aclose)
        store = await NewsStore.open(storage / "news.db")
        stack.push_async_callback(store.aclose)
        news = TicketNews(store, grievances, preferences, speaker, NewsSettings(**settings), clock=clock)
        yield Parts(grievances, grievances.local_store, preferences, store, news)


def sql(db: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Change (or look into) a database directly, as support staff would with the sqlite3 shell."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(statement, params).fetchall()


def keep_in_spool(storage: Path, user_id: str, description: str, state: str = "local_only") -> None:
    """A grievance the database refused, kept as grievance_store.py keeps it (state "pending" when
    it is going to Jira)."""
    at = "2025-01-31T10:02:00Z"
    GrievanceSpool(storage / "grievances.db.spool.jsonl").keep(
        user_id=user_id, category="wallet", description=description, at=at, state=state
    )


# ---- the local store as the ticket system ---------------------------------------------------


async def test_one_players_many_closed_tickets_hold_back_no_one_elses_news(tmp_path: Path) -> None:
    db, front = tmp_path / "grievances.db", Recorder()
    async with news_over(tmp_path) as p:
        for i in range(250):  # staff close a player's backlog at once
            await p.local.register(NOVA, "other", f"lag spike {i}")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        await p.news.run_once(front)
    assert BLAZE in {d.user_id for d in front.dms}  # in the first round, beside Nova's first ten


async def test_a_new_grievance_database_numbering_from_one_again_still_gets_its_news(tmp_path: Path) -> None:
    db, front = tmp_path / "grievances.db", Recorder()
    async with news_over(tmp_path) as p:
        old = await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved' WHERE local_key = ?", (old.key,))
        assert await p.news.run_once(front) == 1
    for name in ("grievances.db", "grievances.db-wal", "grievances.db-shm"):  # a fresh database
        (tmp_path / name).unlink(missing_ok=True)
    async with news_over(tmp_path) as p:
        new = await p.local.register(BLAZE, "wallet", "lost my skins")
        assert new.key == old.key
        sql(db, "UPDATE grievances SET status = 'resolved' WHERE local_key = ?", (new.key,))
        assert await p.news.run_once(front) == 1
    assert [d.user_id for d in front.dms] == [NOVA, BLAZE]


async def test_a_late_filed_grievance_is_told_once_with_its_key_across_restarts(tmp_path: Path) -> None:
    keep_in_spool(tmp_path, NOVA, "charged twice for the battle pass")
    front = Recorder()
    async with news_over(tmp_path) as p:  # filed from the spool as the store opens
        # Filed the usual way, under its note's filing id as the tool files it: the player heard its key.
        await p.local.register(BLAZE, "other", "filed the usual way", "discord:930000000000000077:other")
        assert await p.news.run_once(front) == 1
        assert await p.news.run_once(front) == 0
    (dm,) = front.dms
    assert dm.user_id == NOVA and dm.mode == "voice_and_text" and dm.audio is None  # no speaker here
    assert dm.text == (
        'The complaint you made on 31 Jan at 10:02 UTC ("charged twice for the battle pass") is now '
        "filed as ticket GRV-1. Its status is open."
    )
    async with news_over(tmp_path) as p:  # a restart
        assert await p.news.run_once(front) == 0
        assert await p.store.told(NOVA) == [("GRV-1", "filed", "open", "sent")]
    assert len(front.dms) == 1


async def test_a_grievance_kept_while_the_bot_runs_is_filed_and_told_within_a_round(tmp_path: Path) -> None:
    front = Recorder()
    async with news_over(tmp_path) as p:
        keep_in_spool(tmp_path, NOVA, "lost my skins")  # kept by a CLI `ask` next to the bot, say
        assert await p.news.run_once(front) == 1  # filed by the round itself, not the next grievance
    assert "filed as ticket GRV-1" in front.texts()[0]


async def test_a_status_set_by_staff_in_the_database_is_told_once_per_status(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        ticket = await p.local.register(NOVA, "wallet", "gems never arrived after paying")
        assert await p.news.run_once(front) == 0  # filed the usual way: the player heard its key
        sql(db, "UPDATE grievances SET status = 'in progress' WHERE local_key = ?", (ticket.key,))
        assert await p.news.run_once(front) == 1
        assert await p.news.run_once(front) == 0
        sql(db, "UPDATE grievances SET status = 'resolved' WHERE local_key = ?", (ticket.key,))
        sql(db, "UPDATE grievances SET status = 'in progress' WHERE local_key = ?", (ticket.key,))
        assert await p.news.run_once(front) == 0  # "in progress" was told already
        sql(db, "UPDATE grievances SET status = '*resolved* <@1>' WHERE local_key = ?", (ticket.key,))
        assert await p.news.run_once(front) == 1
    assert front.texts() == [
        'Your ticket GRV-1 ("gems never arrived after paying") is now in progress.',
        'Your ticket GRV-1 ("gems never arrived after paying") is now resolved 1.',  # no markup, no ping
    ]
    assert sql(db, "SELECT COUNT(*) FROM news_events") == [(0,)]  # read, then dropped


@pytest.mark.parametrize(
    "owner",
    [
        # A playground session's (web:<session>:<player>): the shared player is not the one who filed it.
        f"web:abc:{NOVA}",
        # Not Nova's either, though `$` matches before its line break and int() drops it: a DM to
        # this id reaches Nova.
        f"{NOVA}\n",
        # Nor with a leading zero (`voxdesk ask --user`), which int() drops as well.
        f"0{NOVA}",
    ],
)
async def test_a_ticket_of_no_discord_user_is_news_to_nobody(tmp_path: Path, owner: str) -> None:
    front = Recorder()
    async with news_over(tmp_path) as p:
        ticket = await p.local.register(owner, "wallet", "my card was charged twice", untold=True)
        await p.local.set_status_by_staff(ticket.key, "resolved", by="staff")
        assert await p.news.run_once(front) == 0
        assert await p.store.told(owner) == []
    assert front.dms == []


async def test_a_key_told_in_one_players_answer_holds_back_no_one_elses_news(tmp_path: Path) -> None:
    # A Jira project numbering like the local store: Nova's local GRV-2 is Blaze's Jira GRV-2.
    store = await NewsStore.open(tmp_path / "news.db")
    try:
        assert await store.add(BLAZE, "jira", "GRV-2", "filed", "open", "Your ticket GRV-2 was filed.")
        assert await store.add(NOVA, "local:1", "GRV-2", "filed", "open", "Your ticket GRV-2 was filed.")
        assert await store.told_in_answer(NOVA, "local:1", [("GRV-2", None)]) == 1
        assert [(n.user_id, n.source) for n in await store.due()] == [(BLAZE, "jira")]
    finally:
        await store.aclose()


async def test_a_key_told_in_an_answer_while_its_news_is_claimed_is_not_dmed_too(tmp_path: Path) -> None:
    # Another bot on this storage (its news not held for a turn it is not answering) has claimed
    # the news of a filing and is making its DM's speech when this one's answer tells the key: no
    # DM was tried for it yet, so the news is not sent, and that bot, coming to try it, does not.
    store = await NewsStore.open(tmp_path / "news.db")
    try:
        assert await store.add(NOVA, "local:1", "GRV-2", "filed", "open", "Your ticket GRV-2 was filed.")
        assert await store.add(NOVA, "local:1", "GRV-3", "status", "resolved", "GRV-3 is resolved.")
        ids = [n.id for n in await store.due()]
        assert await store.claim(ids) == ids
        assert await store.told_in_answer(NOVA, "local:1", [("GRV-2", None)]) == 1
        assert not await store.trying(ids)
        await store.give_back(ids)  # as the other bot does, its claim gone
        assert await store.told(NOVA) == [
            ("GRV-2", "filed", "open", "in_answer"),
            ("GRV-3", "status", "resolved", "pending"),
        ]
    finally:
        await store.aclose()


async def test_a_status_that_flips_back_before_a_round_is_not_news(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        ticket = await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved' WHERE local_key = ?", (ticket.key,))
        sql(db, "UPDATE grievances SET status = 'open' WHERE local_key = ?", (ticket.key,))
        assert await p.news.run_once(front) == 0
    assert front.dms == []


async def test_a_ticket_reopened_and_resolved_again_is_told_each_time_and_each_change_once(
    tmp_path: Path,
) -> None:
    db, front = tmp_path / "grievances.db", Recorder()
    async with news_over(tmp_path) as p:
        ticket = await p.local.register(NOVA, "wallet", "charged twice")
        events_read = f"grievance-events-{await p.local.store_id()}"  # ticket news's cursor
        for status in ("resolved", "open", "resolved", "in progress", "resolved"):
            await p.local.set_status_by_staff(ticket.key, status, by="staff")  # what the web desk calls
            (event,) = sql(db, "SELECT id, grievance_id, kind FROM news_events")
            cursor = await p.store.cursor(events_read) or "0"
            assert await p.news.run_once(front) == 1
            # Stopped before its cursor was saved: the same change is read again, and is no news.
            sql(db, "INSERT INTO news_events (id, grievance_id, kind) VALUES (?, ?, ?)", event)
            await p.store.set_cursor(events_read, cursor)
            assert await p.news.run_once(front) == 0
    assert [t.rsplit(" ", 1)[-1] for t in front.texts()] == [
        "resolved.",
        "open.",
        "resolved.",
        "progress.",
        "resolved.",
    ]


async def test_notify_off_sends_nothing_and_keeps_nothing_for_later(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.preferences.set_notify(NOVA, False)
        ticket = await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved' WHERE local_key = ?", (ticket.key,))
        assert await p.news.run_once(front) == 0
        assert front.dms == []
        await p.preferences.set_notify(NOVA, True)
        assert await p.news.run_once(front) == 0  # muted news is not sent once they turn it on
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "muted")]
        sql(db, "UPDATE grievances SET status = 'closed' WHERE local_key = ?", (ticket.key,))
        assert await p.news.run_once(front) == 1  # news from then on is
    assert front.texts() == ['Your ticket GRV-1 ("charged twice") is now closed.']


async def test_news_whose_players_preferences_cannot_be_read_waits_for_them_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/notify unknown is no reason to guess it, nor to leave the news claimed ('sending') with no
    DM tried, which is never sent again, nor to end the round for every player after the first."""
    caplog.set_level(logging.DEBUG, logger="bot.ticket_news")
    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        sql(tmp_path / "preferences.db", "ALTER TABLE preferences RENAME TO kept")
        for _ in range(2):
            assert await p.news.run_once(front) == 0
        assert front.dms == []
        assert sql(tmp_path / "news.db", "SELECT DISTINCT state FROM news") == [("pending",)]
        unread = [r for r in caplog.records if "preferences" in r.getMessage()]
        assert [r.levelno for r in unread] == [logging.ERROR, logging.DEBUG, logging.DEBUG, logging.DEBUG]
        sql(tmp_path / "preferences.db", "ALTER TABLE kept RENAME TO preferences")
        assert await p.news.run_once(front) == 2
    assert sorted(d.user_id for d in front.dms) == sorted([NOVA, BLAZE])
    # Its end said, once: left open, a later outage of the same kind would be logged at DEBUG.
    assert caplog.text.count("ticket news: preferences are read again") == 1


def _novas_preferences_unreadable(prefs_db: Path) -> None:
    """A real SQLite error for Nova's preferences alone: malformed JSON read."""
    sql(prefs_db, "ALTER TABLE preferences RENAME TO kept")
    sql(
        prefs_db,
        "CREATE VIEW preferences AS SELECT * FROM kept"
        f" UNION ALL SELECT '{NOVA}', NULL, 'voice_and_text', json('{{')",
    )


def _novas_preferences_readable(prefs_db: Path) -> None:
    sql(prefs_db, "DROP VIEW preferences")
    sql(prefs_db, "ALTER TABLE kept RENAME TO preferences")


async def test_news_not_given_back_as_both_databases_fail_ends_no_round_and_is_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nova's preferences cannot be read, and news.db refuses to give her claimed news back as
    well: the round goes on to Blaze's news, and Nova's, never tried, goes out once both databases
    answer again (left 'sending', it would never be sent)."""
    db, news_db, prefs_db = tmp_path / "grievances.db", tmp_path / "news.db", tmp_path / "preferences.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        _novas_preferences_unreadable(prefs_db)  # and a write of hers aborted, below
        sql(
            news_db,
            "CREATE TRIGGER refused BEFORE UPDATE OF state ON news WHEN OLD.state = 'claimed'"
            f" AND NEW.state = 'pending' AND OLD.user_id = '{NOVA}'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        assert await p.news.run_once(front) == 1
        assert [d.user_id for d in front.dms] == [BLAZE]
        assert "not given back" in caplog.text
        assert await p.news.run_once(front) == 0  # news.db still refuses: still owed, not lost
        sql(news_db, "DROP TRIGGER refused")
        _novas_preferences_readable(prefs_db)
        assert await p.news.run_once(front) == 1
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
    assert [d.user_id for d in front.dms] == [BLAZE, NOVA]


async def test_news_still_owed_when_the_bot_stops_goes_out_at_the_next_start_and_a_tried_dm_does_not(
    tmp_path: Path,
) -> None:
    """Nova's preferences cannot be read and news.db refuses to give her claimed news back, so it
    is owed when the bot stops (here as Blaze's DM, tried, kills it). No DM was tried for Nova's:
    the next start sends it, once. Blaze's DM may have gone out: never sent again."""
    db, news_db, prefs_db = tmp_path / "grievances.db", tmp_path / "news.db", tmp_path / "preferences.db"

    class Dies(Recorder):
        async def direct(self, delivery: Delivery) -> Outcome:
            await super().direct(delivery)
            raise SystemExit("killed mid-send")  # not an Exception: as a process dying would

    dies = Dies()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        _novas_preferences_unreadable(prefs_db)
        sql(
            news_db,
            "CREATE TRIGGER refused BEFORE UPDATE OF state ON news WHEN NEW.state = 'pending'"
            f" AND OLD.user_id = '{NOVA}' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        with pytest.raises(SystemExit):
            await p.news.run_once(dies)
    assert [d.user_id for d in dies.dms] == [BLAZE]
    sql(news_db, "DROP TRIGGER refused")
    _novas_preferences_readable(prefs_db)
    front = Recorder()
    async with news_over(tmp_path) as p:
        assert await p.news.run_once(front) == 1
        assert await p.news.run_once(front) == 0
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
        assert [s for *_, s in await p.store.told(BLAZE)] == ["sending"]
    assert [d.user_id for d in front.dms] == [NOVA]


async def test_news_whose_dm_news_db_refuses_to_mark_tried_is_not_sent_until_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """news.db refuses to mark Nova's DM tried: unmarked, the DM is not tried (a crash after it
    would leave news that may have gone out looking untried), her news waits, given back, and
    Blaze's goes out in the same round."""
    db, news_db = tmp_path / "grievances.db", tmp_path / "news.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        sql(
            news_db,
            "CREATE TRIGGER refused BEFORE UPDATE OF state ON news WHEN NEW.state = 'sending'"
            f" AND OLD.user_id = '{NOVA}' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        assert await p.news.run_once(front) == 1
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "pending")]
        assert "refused to mark its DM tried" in caplog.text
        sql(news_db, "DROP TRIGGER refused")
        assert await p.news.run_once(front) == 1
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
    assert [d.user_id for d in front.dms] == [BLAZE, NOVA]


async def test_news_a_running_bot_claimed_is_not_given_back_by_a_second_starting(tmp_path: Path) -> None:
    """A bot starting on the same storage (a deploy overlapping the running one, a `voxdesk ask`)
    leaves alone the news the running bot claimed and has not tried yet: that bot sends it, in the
    round it claimed it, and the second finds nothing to send."""
    db = tmp_path / "grievances.db"
    speaking, spoken = asyncio.Event(), asyncio.Event()

    async def speaker(words: str, voice: str) -> Any:
        speaking.set()
        await spoken.wait()  # the first bot's DM in the making while the second starts

    first, second = Recorder(), Recorder()
    async with news_over(tmp_path, speaker=speaker) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        round_ = asyncio.create_task(p.news.run_once(first))
        await asyncio.wait_for(speaking.wait(), 30)
        async with news_over(tmp_path) as q:
            assert await q.news.run_once(second) == 0
        spoken.set()
        assert await round_ == 1
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
    assert (len(first.dms), len(second.dms)) == (1, 0)


async def test_news_claimed_by_a_store_on_the_same_file_is_given_back_only_once_its_lease_is_over(
    tmp_path: Path,
) -> None:
    """Two stores on one news.db, as two processes: opening the second gives back none of the
    first's claim; the claim of one gone without a word (killed) comes back once its lease is
    over, and one whose store closed comes back at once."""
    news_db = tmp_path / "news.db"
    first = await NewsStore.open(news_db)
    try:
        assert await first.add(NOVA, "local:1", "GRV-1", "status", "resolved", "GRV-1 is resolved.")
        assert await first.add(BLAZE, "local:1", "GRV-2", "status", "resolved", "GRV-2 is resolved.")
        nova, blaze = (n.id for n in await first.due())
        assert await first.claim([nova, blaze]) == [nova, blaze]
        second = await NewsStore.open(news_db)
        try:
            assert await second.give_back_untried() == 0
            assert await first.trying([nova]) is True  # still the first's, whose DM goes out
            # The first is killed: its claim of Blaze's news, untried, waits out its lease.
            later = time.time() + ticket_news.CLAIM_LEASE_SECONDS + 1
            assert await second.give_back_untried(now=later, unleased=False) == 1
        finally:
            await second.aclose()
        states = sql(news_db, "SELECT state FROM news ORDER BY id")
        assert states == [("sending",), ("pending",)]
        assert await first.claim([blaze]) == [blaze]
    finally:
        await first.aclose()
    third = await NewsStore.open(news_db)  # the first closed with its claim untried
    try:
        assert sql(news_db, "SELECT state FROM news ORDER BY id") == [("sending",), ("pending",)]
    finally:
        await third.aclose()


async def test_news_claimed_while_a_start_reads_the_leases_is_not_given_back(tmp_path: Path) -> None:
    """A process claims news while another, starting, looks at which claims are leased: the claim
    waits for that look to end, rather than land between it and the giving back."""
    news_db = tmp_path / "news.db"
    starting, running = await NewsStore.open(news_db), await NewsStore.open(news_db)
    try:
        assert await running.add(NOVA, "local:1", "GRV-1", "status", "resolved", "GRV-1 is resolved.")
        ids = [n.id for n in await running.due()]
        real_read = starting._conn.execute_fetchall
        claimed: list[asyncio.Task[list[int]]] = []

        async def read(*args: Any, **kwargs: Any) -> Any:
            rows = await real_read(*args, **kwargs)
            claimed.append(asyncio.create_task(running.claim(ids)))
            await asyncio.wait(claimed, timeout=2)  # through, unless the look holds news.db
            return rows

        starting._conn.execute_fetchall = read  # type: ignore[method-assign]
        assert await starting.give_back_untried() == 0
        starting._conn.execute_fetchall = real_read  # type: ignore[method-assign]
        assert await claimed[0] == ids
        assert await running.trying(ids) is True
    finally:
        await starting.aclose()
        await running.aclose()


async def test_news_a_killed_bot_held_claimed_goes_out_from_a_running_one_once_its_lease_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bot killed with Nova's news claimed, its DM not tried: the bot still running on the
    storage leaves it while the lease could be a live process's, and sends it once it is over,
    with no restart."""
    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        await p.news.find()
        killed = await NewsStore.open(tmp_path / "news.db")
        ids = [n.id for n in await killed.due()]
        assert await killed.claim(ids) == ids
        await killed._conn.close()  # killed: nothing given back
        assert await p.news.run_once(front) == 0
        over = real_time() + ticket_news.CLAIM_LEASE_SECONDS + 1
        monkeypatch.setattr(ticket_news, "time", types.SimpleNamespace(time=lambda: over))
        assert await p.news.run_once(front) == 1
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
    assert len(front.dms) == 1


async def test_news_a_killed_bot_claimed_with_its_clock_a_year_ahead_goes_out_once_a_lease_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bot killed with Nova's news claimed on a host whose clock ran a year ahead (a bad
    real-time clock at boot), since put right: its lease, a year off by the clock now, holds the
    news no longer than a lease taken now would."""
    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        await p.news.find()
        host_clock_set(monkeypatch, 365 * 24 * 3600.0)
        killed = await NewsStore.open(tmp_path / "news.db")
        ids = [n.id for n in await killed.due()]
        assert await killed.claim(ids) == ids
        await killed._conn.close()  # killed: nothing given back
        host_clock_set(monkeypatch, 0.0)
        assert await p.news.run_once(front) == 0  # maybe a live process's, for all this one knows
        host_clock_set(monkeypatch, ticket_news.CLAIM_LEASE_SECONDS + 1)
        assert await p.news.run_once(front) == 1
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
    assert len(front.dms) == 1


async def test_news_db_refusing_to_give_back_a_killed_bots_claim_is_said_once_and_sent_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db, news_db = tmp_path / "grievances.db", tmp_path / "news.db"
    front = Recorder()
    caplog.set_level(logging.INFO, logger="bot.ticket_news")
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        await p.news.find()
        killed = await NewsStore.open(news_db)
        ids = [n.id for n in await killed.due()]
        assert await killed.claim(ids) == ids
        await killed._conn.close()  # killed: nothing given back
        sql(
            news_db,
            "CREATE TRIGGER refused BEFORE UPDATE OF state ON news WHEN OLD.state = 'claimed'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        over = real_time() + ticket_news.CLAIM_LEASE_SECONDS + 1
        monkeypatch.setattr(ticket_news, "time", types.SimpleNamespace(time=lambda: over))
        assert await p.news.run_once(front) == 0
        assert await p.news.run_once(front) == 0  # a round a minute: said once, not each time
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert said == [
            "ticket news: news claimed by a process that is gone not given back: database or disk is full"
        ]
        sql(news_db, "DROP TRIGGER refused")
        assert await p.news.run_once(front) == 1
        assert "claimed by processes that are gone is given back again" in caplog.text
    assert len(front.dms) == 1


async def test_news_claimed_by_a_voxdesk_that_keeps_no_lease_is_given_back_at_the_next_start(
    tmp_path: Path,
) -> None:
    news_db = tmp_path / "news.db"
    store = await NewsStore.open(news_db)
    try:
        assert await store.add(NOVA, "local:1", "GRV-1", "status", "resolved", "GRV-1 is resolved.")
    finally:
        await store.aclose()
    sql(news_db, "UPDATE news SET state = 'claimed'")  # as an older voxdesk claims, naming no claimant
    store = await NewsStore.open(news_db)
    try:
        assert sql(news_db, "SELECT state FROM news") == [("pending",)]
    finally:
        await store.aclose()


async def test_a_dm_of_news_one_piece_of_which_was_given_back_is_tried_for_none(tmp_path: Path) -> None:
    # One DM tells a player's pieces together: a piece another process gave back (and may send
    # itself) leaves the whole DM untried, its other pieces still claimed, none marked tried.
    store = await NewsStore.open(tmp_path / "news.db")
    try:
        assert await store.add(NOVA, "local:1", "GRV-1", "status", "resolved", "GRV-1 is resolved.")
        assert await store.add(NOVA, "local:1", "GRV-2", "status", "resolved", "GRV-2 is resolved.")
        ids = [n.id for n in await store.due()]
        assert await store.claim(ids) == ids
        later = time.time() + ticket_news.CLAIM_LEASE_SECONDS + 1
        other = await NewsStore.open(tmp_path / "news.db")  # a second process, once the lease is over
        try:
            assert await other.give_back_untried(now=later, unleased=False) == 2
            assert await other.claim(ids[:1]) == ids[:1]  # ... whose round claims one of them
            assert await store.trying(ids) is False
            states = sql(tmp_path / "news.db", "SELECT state FROM news ORDER BY id")
            assert states == [("claimed",), ("pending",)]
        finally:
            await other.aclose()
    finally:
        await store.aclose()


def _left_sending(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "being sent when the bot stopped" in r.getMessage()]


async def test_news_a_live_process_is_sending_is_not_said_left_by_a_stopped_bot_at_a_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two stores on one news.db, as two processes: a start while the other is trying a DM says
    nothing of that DM; a start once the other is gone (killed, its lease over) says it was left."""
    news_db = tmp_path / "news.db"
    caplog.set_level(logging.INFO, logger="bot.ticket_news")
    running = await NewsStore.open(news_db)
    try:
        assert await running.add(NOVA, "local:1", "GRV-1", "status", "resolved", "GRV-1 is resolved.")
        ids = [n.id for n in await running.due()]
        assert await running.claim(ids) == ids
        assert await running.trying(ids) is True  # its DM on its way to Discord
        starting = await NewsStore.open(news_db)  # a `voxdesk ask`, a deploy overlapping
        await starting.aclose()
        assert _left_sending(caplog) == []
    finally:
        await running._conn.close()  # killed mid-send: its lease stays, and lapses
    over = real_time() + ticket_news.CLAIM_LEASE_SECONDS + 1
    monkeypatch.setattr(ticket_news, "time", types.SimpleNamespace(time=lambda: over))
    later = await NewsStore.open(news_db)
    await later.aclose()
    assert _left_sending(caplog) == [
        "1 piece(s) of ticket news were being sent when the bot stopped: not resent"
    ]
    assert sql(news_db, "SELECT state FROM news") == [("sending",)]


async def test_news_being_sent_as_a_store_closes_is_said_left_at_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store closed while its DM was tried (a stop whose grace ran out on Discord's answer):
    its lease goes with it, and the next start says what it left, without waiting for a lapse."""
    news_db = tmp_path / "news.db"
    caplog.set_level(logging.INFO, logger="bot.ticket_news")
    store = await NewsStore.open(news_db)
    assert await store.add(NOVA, "local:1", "GRV-1", "status", "resolved", "GRV-1 is resolved.")
    ids = [n.id for n in await store.due()]
    assert await store.claim(ids) == ids
    assert await store.trying(ids) is True
    await store.aclose()
    assert sql(news_db, "SELECT name FROM cursors WHERE name LIKE 'claims:%'") == []
    store = await NewsStore.open(news_db)
    await store.aclose()
    assert len(_left_sending(caplog)) == 1


@contextlib.asynccontextmanager
async def stores_behind_and_ahead(
    news_db: Path, monkeypatch: pytest.MonkeyPatch, skew: list[float]
) -> AsyncIterator[tuple[NewsStore, NewsStore]]:
    """Two stores on `news_db`, as two processes, opened in that order: the one whose clock is
    behind and the one whose clock is not. bot.ticket_news's clock is real time plus `skew[0]`,
    which the test sets to say which process acts (-600 behind, 0 ahead)."""
    monkeypatch.setattr(ticket_news, "time", types.SimpleNamespace(time=lambda: real_time() + skew[0]))
    behind, ahead = await NewsStore.open(news_db), await NewsStore.open(news_db)
    try:
        yield behind, ahead
    finally:
        await behind.aclose()
        await ahead.aclose()


async def claimed_apart(store: NewsStore) -> tuple[int, int]:
    """Nova's news and Blaze's, added to `store` and claimed by it one after the other: their ids."""
    assert await store.add(NOVA, "local:1", "GRV-1", "status", "resolved", "GRV-1 is resolved.")
    assert await store.add(BLAZE, "local:1", "GRV-2", "status", "resolved", "GRV-2 is resolved.")
    nova, blaze = (n.id for n in await store.due())
    assert await store.claim([nova]) == [nova]
    assert await store.claim([blaze]) == [blaze]
    return nova, blaze


async def test_a_claim_taken_over_by_a_process_whose_clock_runs_ahead_is_not_tried_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process's clock is ten minutes behind the other's: its lease, however fresh here,
    looks over there, and the other gives its claim back and claims it for a DM of its own (with
    news held meanwhile and now due: Wren's DM is [held, x], keyed by the held one). That DM
    meets a 5xx (maybe posted) and is claimed again for its retry, under its key. The stale claim
    here must not be tried: its DM, keyed by x alone, would pass Discord's nonce and tell x a
    second time. Nor is the other's claim given back from here."""
    news_db = tmp_path / "news.db"
    skew = [0.0]
    async with stores_behind_and_ahead(news_db, monkeypatch, skew) as (behind, ahead):
        assert await ahead.add(NOVA, "local:1", "GRV-1", "filed", "open", "GRV-1 is filed.", held_for="d:1:")
        assert await ahead.add(NOVA, "local:1", "GRV-2", "status", "resolved", "GRV-2 is resolved.")
        held, x = (i for (i,) in sql(news_db, "SELECT id FROM news ORDER BY id"))
        skew[0] = -600.0
        assert [n.id for n in await behind.due()] == [x]
        assert await behind.claim([x]) == [x]  # its DM in the making, keyed by x
        skew[0] = 0.0
        await ahead.release([held])
        assert await ahead.give_back_untried(unleased=False) == 1
        assert await ahead.claim([held, x]) == [held, x]
        assert await ahead.trying([held, x]) is True
        await ahead.retry([held, x], real_time(), "not sent: Discord unreachable", delivery=held)
        assert await ahead.claim([held, x]) == [held, x]  # its retry round
        skew[0] = -600.0
        assert await behind.trying([x]) is False
        await behind.give_back([x])  # as its round does with a DM it may not try
        skew[0] = 0.0
        assert await ahead.trying([held, x]) is True
        assert sql(news_db, "SELECT state FROM news ORDER BY id") == [("sending",), ("sending",)]


async def test_news_muted_from_a_claim_taken_over_leaves_the_others_taken_over_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, the claims of a process whose clock is behind taken over by another, which
    claims Blaze's news for its DM. Nova's news, muted here straight from its claim, rewrites this
    process's lease: it must not name Blaze's news again, or that claim would pass for this
    process's own and be tried here too; nor is Nova's news, not this process's any more, marked
    here."""
    news_db = tmp_path / "news.db"
    skew = [-600.0]
    async with stores_behind_and_ahead(news_db, monkeypatch, skew) as (behind, ahead):
        nova, blaze = await claimed_apart(behind)
        skew[0] = 0.0
        assert await ahead.give_back_untried(unleased=False) == 2
        assert await ahead.claim([blaze]) == [blaze]
        skew[0] = -600.0
        await behind.finish([nova], "muted")  # Nova has /notify off
        assert await behind.trying([blaze]) is False
        # Nova's news, given back too, is the other's round's to mute: left as it gave it back.
        assert sql(news_db, "SELECT state FROM news WHERE id = ?", (nova,)) == [("pending",)]
        skew[0] = 0.0
        assert await ahead.trying([blaze]) is True


async def test_muted_news_whose_claim_was_taken_over_is_not_said_or_counted_muted_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nova has /notify off. While this process reads her preferences, another, its clock ahead,
    finds this one's lease over and takes her news over: this process marks nothing muted, so it
    neither logs her news muted nor counts a muted DM; the other's round mutes it."""
    caplog.set_level(logging.INFO, logger="bot.ticket_news")
    db = tmp_path / "grievances.db"

    def muted() -> float:
        return metrics.REGISTRY.get_sample_value("voxdesk_ticket_news_total", {"outcome": "muted"}) or 0.0

    async with news_over(tmp_path) as p:
        await p.preferences.set_notify(NOVA, False)
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        await p.news.find()
        other = await NewsStore.open(tmp_path / "news.db")
        real_get = p.preferences.get
        taken: list[int] = []

        async def get(user_id: str) -> Any:
            ahead = real_time() + ticket_news.CLAIM_LEASE_SECONDS + 1
            assert await other.give_back_untried(now=ahead, unleased=False) == 1
            taken.extend(await other.claim([n.id for n in await other.due()]))
            return await real_get(user_id)

        monkeypatch.setattr(p.preferences, "get", get)
        before = muted()
        try:
            assert await p.news.run_once(Recorder()) == 0
            assert len(taken) == 1
            assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "claimed")]
            assert muted() == before
            assert "not sent: /notify is off" not in caplog.text
            said = f"ticket news for {NOVA} not muted here: another process took its claim over (1)"
            assert said in caplog.text
            await other.finish(taken, "muted")  # the other process's round, which mutes it
            assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "muted")]
        finally:
            await other.aclose()


async def test_a_retry_after_a_claim_was_taken_over_leaves_it_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, but Nova's DM, tried here before the takeover, never reached Discord: put back
    for its retry, it rewrites this process's lease, which must not name Blaze's news again, or
    that claim would pass for this process's own and Blaze be told twice."""
    news_db = tmp_path / "news.db"
    skew = [-600.0]
    async with stores_behind_and_ahead(news_db, monkeypatch, skew) as (behind, ahead):
        nova, blaze = await claimed_apart(behind)
        assert await behind.trying([nova]) is True
        skew[0] = 0.0
        assert await ahead.give_back_untried(unleased=False) == 1
        assert await ahead.claim([blaze]) == [blaze]
        skew[0] = -600.0
        await behind.retry([nova], real_time(), "not sent: Discord unreachable", delivery=nova)
        assert await behind.trying([blaze]) is False
        skew[0] = 0.0
        assert await ahead.trying([blaze]) is True


async def test_a_give_back_after_a_claim_was_taken_over_leaves_it_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stop here while Blaze's DM was being made, after the other process took the claim over:
    # giving back what this process claimed leaves the other's claim alone, whose DM goes now.
    news_db = tmp_path / "news.db"
    skew = [-600.0]
    async with stores_behind_and_ahead(news_db, monkeypatch, skew) as (behind, ahead):
        assert await behind.add(BLAZE, "local:1", "GRV-2", "status", "resolved", "GRV-2 is resolved.")
        (blaze,) = (n.id for n in await behind.due())
        assert await behind.claim([blaze]) == [blaze]
        skew[0] = 0.0
        assert await ahead.give_back_untried(unleased=False) == 1
        assert await ahead.claim([blaze]) == [blaze]
        skew[0] = -600.0
        await behind.give_back([blaze])
        assert sql(news_db, "SELECT state FROM news WHERE id = ?", (blaze,)) == [("claimed",)]
        skew[0] = 0.0
        assert await ahead.trying([blaze]) is True


@pytest.mark.parametrize(
    ("outcome", "refused", "said"),
    [
        (Outcome.SENT, "sent", "which Discord took, as sent"),
        (Outcome.RETRY, "pending", "which never reached Discord, for a retry"),
        (Outcome.FAILED, "failed", "which Discord refused or may have taken, as failed"),
        (Outcome.DMS_CLOSED, "dms_closed", "which Discord refused (DMs closed)"),
    ],
)
async def test_news_db_refusing_what_became_of_one_dm_ends_no_round_and_sends_nothing_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, outcome: Outcome, refused: str, said: str
) -> None:
    """Nova's DM is tried, and news.db refuses to record how it went: the round goes on to
    Blaze's news, and Nova's, maybe sent, is never sent again (left 'sending', as a crash there
    would leave it)."""
    db, news_db = tmp_path / "grievances.db", tmp_path / "news.db"
    front = Recorder(outcomes=[outcome])
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        sql(
            news_db,
            f"CREATE TRIGGER refused BEFORE UPDATE OF state ON news WHEN NEW.state = '{refused}'"
            f" AND OLD.user_id = '{NOVA}' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        assert await p.news.run_once(front) == 1
        assert [d.user_id for d in front.dms] == [NOVA, BLAZE]
        # What failed, after what Discord did: the DM is not to be looked for in Discord's errors.
        assert f"news.db failed while recording its DM, {said}: database or disk is full" in caplog.text
        sql(news_db, "DROP TRIGGER refused")
        sql(news_db, "UPDATE news SET next_try_at = 0 WHERE next_try_at IS NOT NULL")
        assert await p.news.run_once(front) == 0
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sending")]
    assert [d.user_id for d in front.dms] == [NOVA, BLAZE]


async def test_a_fault_in_one_players_delivery_is_not_told_as_news_db_refusing_and_ends_no_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making Nova's DM fails, not news.db nor Discord: the log says so, her news, no DM of it
    tried, is given back, and Blaze's goes out."""
    db = tmp_path / "grievances.db"
    real = ticket_news.message_for

    def message_for(items: list[Any]) -> tuple[str, str]:
        if items[0].user_id == NOVA:
            raise KeyError("sentence")
        return real(items)

    monkeypatch.setattr(ticket_news, "message_for", message_for)
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        assert await p.news.run_once(front) == 1
        # No DM of Nova's was tried: hers is pending again, not claimed for as long as this runs.
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "pending")]
    assert [d.user_id for d in front.dms] == [BLAZE]
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert failed == [
        f"ticket news for {NOVA} failed while making its DM, not in news.db: KeyError('sentence');"
        " the round goes on"
    ]


async def test_news_db_refusing_to_mute_news_ends_no_round_and_mutes_it_later(tmp_path: Path) -> None:
    """Nova turned /notify off, and news.db refuses to mark her news muted: the round goes on to
    Blaze's news, and hers, never tried, is muted at a later round, not left claimed."""
    db, news_db = tmp_path / "grievances.db", tmp_path / "news.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.preferences.set_notify(NOVA, False)
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        sql(
            news_db,
            "CREATE TRIGGER refused BEFORE UPDATE OF state ON news WHEN NEW.state = 'muted'"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
        )
        assert await p.news.run_once(front) == 1
        sql(news_db, "DROP TRIGGER refused")
        assert await p.news.run_once(front) == 0
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "muted")]
    assert [d.user_id for d in front.dms] == [BLAZE]


async def test_news_db_refusing_to_mute_news_is_logged_once_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused round after round, the muting is an ERROR once, then DEBUG; its end is said, and a
    later outage is an ERROR again."""
    caplog.set_level(logging.DEBUG, logger="bot.ticket_news")
    db, news_db = tmp_path / "grievances.db", tmp_path / "news.db"
    refuse = (
        "CREATE TRIGGER refused BEFORE UPDATE OF state ON news WHEN NEW.state = 'muted'"
        " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    front = Recorder()
    async with news_over(tmp_path) as p:
        await p.preferences.set_notify(NOVA, False)
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        sql(news_db, refuse)
        for _ in range(3):
            assert await p.news.run_once(front) == 0
        sql(news_db, "DROP TRIGGER refused")
        assert await p.news.run_once(front) == 0
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "muted")]
        await p.local.register(NOVA, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved' WHERE local_key = 'GRV-2'")
        sql(news_db, refuse)
        assert await p.news.run_once(front) == 0
    unmuted = [r.levelno for r in caplog.records if "not marked muted" in r.getMessage()]
    assert unmuted == [logging.ERROR, logging.DEBUG, logging.DEBUG, logging.ERROR]
    assert caplog.text.count("ticket news: news.db marks news muted again") == 1
    assert front.dms == []


async def test_one_dm_carries_all_of_a_players_news(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        for text in ("first problem", "second problem"):
            await p.local.register(NOVA, "other", text)
        sql(db, "UPDATE grievances SET status = 'resolved'")
        assert await p.news.run_once(front) == 2
    (dm,) = front.dms
    assert dm.text.splitlines() == [
        "News about your tickets:",
        '- Your ticket GRV-1 ("first problem") is now resolved.',
        '- Your ticket GRV-2 ("second problem") is now resolved.',
    ]


async def test_a_dm_carries_at_most_ten_pieces_of_news_and_the_rest_follow_oldest_first(
    tmp_path: Path,
) -> None:
    db, front = tmp_path / "grievances.db", Recorder()
    async with news_over(tmp_path) as p:
        for i in range(23):
            await p.local.register(NOVA, "other", f"lag spike {i}")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        assert [await p.news.run_once(front) for _ in range(4)] == [10, 10, 3, 0]
    assert [len(dm.text.splitlines()) for dm in front.dms] == [11, 11, 4]  # a heading, then the news
    assert [item.ticket for dm in front.dms for item in dm.items] == [f"GRV-{n}" for n in range(1, 24)]


async def test_closed_dms_are_told_once_in_the_last_channel_until_a_dm_gets_through(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder(outcomes=[Outcome.DMS_CLOSED, Outcome.DMS_CLOSED])
    async with news_over(tmp_path) as p:
        ticket = await p.local.register(NOVA, "wallet", "charged twice")
        await p.news.record_channel(NOVA, "920000000000000001")
        for status in ("in progress", "resolved", "reopened"):
            sql(db, "UPDATE grievances SET status = ? WHERE local_key = ?", (status, ticket.key))
            await p.news.run_once(front)
        assert front.notices == [(NOVA, "920000000000000001", DMS_CLOSED_NOTICE)]  # once, not per news
        assert [state for *_, state in await p.store.told(NOVA)] == ["dms_closed", "dms_closed", "sent"]
        front.outcomes = [Outcome.DMS_CLOSED]  # closed again after one went through: told again
        sql(db, "UPDATE grievances SET status = 'closed' WHERE local_key = ?", (ticket.key,))
        await p.news.run_once(front)
    assert len(front.notices) == 2


async def test_closed_dms_with_no_known_channel_post_nowhere(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder(outcomes=[Outcome.DMS_CLOSED])
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        await p.news.run_once(front)
    assert front.notices == [] and len(front.dms) == 1


async def test_news_claimed_when_the_bot_died_is_never_sent_again(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"

    class Dies(Recorder):
        async def direct(self, delivery: Delivery) -> Outcome:
            await super().direct(delivery)
            raise SystemExit("killed mid-send")  # not an Exception: as a process dying would

    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        with pytest.raises(SystemExit):
            await p.news.run_once(Dies())
    front = Recorder()
    async with news_over(tmp_path) as p:
        assert await p.news.run_once(front) == 0
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sending")]
    assert front.dms == []


async def test_a_send_that_never_reached_discord_is_tried_again_and_a_maybe_sent_one_is_not(
    tmp_path: Path,
) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder(outcomes=[Outcome.RETRY])
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "charged three times")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        assert await p.news.run_once(front) == 1  # Nova's could not be sent; Blaze's was
        sql(tmp_path / "news.db", "UPDATE news SET next_try_at = 0")  # its retry delay over
        front.outcomes = [Outcome.SENT, Outcome.FAILED]
        sql(db, "UPDATE grievances SET status = 'closed' WHERE user_id = ?", (BLAZE,))
        assert await p.news.run_once(front) == 1  # Nova's again, sent; Blaze's new one maybe sent
        assert [d.user_id for d in front.dms] == [NOVA, BLAZE, NOVA, BLAZE]
        assert await p.news.run_once(front) == 0
        assert [s for *_, s in await p.store.told(BLAZE)] == ["sent", "failed"]


@pytest.mark.parametrize("fast_by", [3600.0, ticket_news.RETRY_SECONDS])
async def test_a_retry_set_by_a_clock_since_stepped_back_waits_no_longer_than_a_retry(
    tmp_path: Path, fast_by: float
) -> None:
    # The host's clock ran fast (an hour, or as little as a retry's wait) when the DM failed; NTP
    # has set it right since.
    db, news_db = tmp_path / "grievances.db", tmp_path / "news.db"
    front = Recorder(outcomes=[Outcome.RETRY])
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        assert await p.news.run_once(front) == 0
        assert await p.news.run_once(front) == 0  # its retry delay not over
        sql(news_db, "UPDATE news SET next_try_at = ?", (time.time() + fast_by + ticket_news.RETRY_SECONDS,))
        assert await p.news.run_once(front) == 1
    assert [d.user_id for d in front.dms] == [NOVA, NOVA]


async def test_a_send_that_never_reaches_discord_is_given_up_after_five_tries(tmp_path: Path) -> None:
    db = tmp_path / "grievances.db"
    front = Recorder(outcomes=[Outcome.RETRY] * 10)
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        for _ in range(7):
            assert await p.news.run_once(front) == 0
            sql(tmp_path / "news.db", "UPDATE news SET next_try_at = 0")  # its retry delay over
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "failed")]
        (why,) = sql(tmp_path / "news.db", "SELECT error FROM news")
    assert len(front.dms) == 5
    assert why == ("not sent: Discord unreachable",)  # the desk and the log can say why


async def test_a_spoken_dm_is_made_by_the_offline_speaker_off_the_event_loop(
    tmp_path: Path, settings: Settings
) -> None:
    from bot.engines.offline.engine import create_speaker

    db = tmp_path / "grievances.db"
    front = Recorder()
    async with news_over(tmp_path, speaker=create_speaker(settings)) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        await p.local.register(BLAZE, "wallet", "charged twice")
        await p.preferences.set_reply_mode(BLAZE, "text")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        assert await p.news.run_once(front) == 2
    nova, blaze = sorted(front.dms, key=lambda d: d.user_id)
    assert nova.audio is not None and nova.audio.ogg.startswith(b"OggS")
    assert 1.0 < nova.audio.duration_secs < 10.0 and nova.mode == "voice_and_text"
    assert blaze.audio is None and blaze.mode == "text"  # text-only players are not spoken to


async def test_dms_arriving_together_load_the_voices_once_and_the_pool_closes_with_the_app(
    settings: Settings, monkeypatch
) -> None:
    """With no offline engine to share (a cloud engine and no offline fallback)."""
    from bot.engines.offline import engine as offline

    loads: list[int] = []
    real_load = offline.load_reply_voices

    def counted(s):  # type: ignore[no-untyped-def]
        loads.append(1)
        return real_load(s)

    monkeypatch.setattr(offline, "load_reply_voices", counted)
    speaker = offline.create_speaker(settings, None)
    try:
        said = await asyncio.gather(*(speaker(f"Ticket {n} is resolved.", None) for n in range(3)))
        assert all(a.ogg.startswith(b"OggS") for a in said)
        assert len(loads) == 1
        pool = speaker._speaker._pool  # type: ignore[union-attr]
    finally:
        await speaker.aclose()
    assert pool._shutdown  # the app's close shut the synthesis threads down


async def test_news_speaks_through_the_offline_engines_speaker_not_a_second_one(
    settings: Settings, caplog
) -> None:
    """The news speaker loaded the voices again: every voice warning was logged twice, and the
    neural voice had a second pool of synthesis threads, one per core, beside the engine's."""
    unknown = settings.replace(offline={"voice": "en_US-lessac-medium"})  # warned of at each load
    caplog.set_level(logging.WARNING)
    from bot.app import running_app

    async with running_app(unknown) as app:
        said = await app.agent.speaker("Ticket GRV-1 is resolved.", None)  # type: ignore[misc]
        assert said.ogg.startswith(b"OggS")
        shared = app.agent.speaker._speaker is app.engine.speaker  # type: ignore[attr-defined]
        pool = app.engine.speaker._pool  # type: ignore[attr-defined]
    warned = [r for r in caplog.records if "en_US-lessac-medium" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert shared
    assert pool._shutdown  # closed once, by its engine


# ---- Jira ----------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeJira]:
    async with running_fake_jira() as server:
        yield server


async def open_jira(fake: FakeJira, storage: Path, **settings: object) -> JiraGrievances:
    return await JiraGrievances.open(
        jira_settings(fake, **settings), fake.email, fake.token, storage / "grievances.db"
    )


async def test_a_status_change_in_jira_is_told_once_by_a_safe_query(fake: FakeJira, tmp_path: Path) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice for the battle pass")
        await p.grievances.register(BLAZE, "other", "lag every evening")
        await p.local.register("cli-user", "other", "from the command line")  # never in JQL
        assert await p.grievances.push_pending() == 2
        assert await p.news.run_once(front) == 0  # pushed at once: the key they heard is fine
        fake.set_status("GRV-101", "In Progress")
        other = fake.add_issue([f"discord-{BLAZE}"], "Made in Jira by staff")
        fake.set_status(other.key, "Done")
        assert await p.news.run_once(front) == 2
        assert await p.news.run_once(front) == 0  # polled again, nothing new
        # The local copy follows, so the player's next question answers the same.
        assert [g.status for g in await p.local.status(NOVA)] == ["in progress"]
    assert sorted(front.texts()) == [
        'Your ticket GRV-101 ("charged twice for the battle pass") is now in progress.',
        'Your ticket GRV-103 ("Made in Jira by staff") is now resolved.',
    ]
    assert {d.user_id: d.items[0].ticket for d in front.dms} == {NOVA: "GRV-101", BLAZE: "GRV-103"}
    news_queries = [q for q in fake.jql if not JQL.match(q)]
    assert news_queries and all(NEWS_JQL.match(q) for q in news_queries)
    assert news_queries[0] == (
        f'project = "GRV" AND labels in ("discord-{NOVA}", "discord-{BLAZE}") AND updated >= "-2m"'
        " ORDER BY updated ASC"
    )
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:  # a restart
        assert await p.news.run_once(front) == 0
    assert len(front.dms) == 2


async def test_many_players_news_is_one_project_wide_query_a_round(fake: FakeJira, tmp_path: Path) -> None:
    # Ticket news asked Jira once per 50 players with a ticket, every poll: 3 queries a minute
    # for 120 players, 200 for 10,000, out of the rate limit players' lookups share. One query
    # for what changed in the project, read for those players, finds the same.
    front = Recorder()
    players = [str(900000000000000000 + i) for i in range(120)]
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        for player in players:
            await p.local.register(player, "other", "lag every evening")
        last = fake.add_issue([f"discord-{players[-1]}"], "Made in Jira by staff")
        fake.set_status(last.key, "Done")
        fake.add_issue(["discord-123456789012345678"], "Someone without a ticket here")
        fake.jql.clear()
        assert await p.news.run_once(front) == 1
    assert [(d.user_id, d.items[0].ticket) for d in front.dms] == [(players[-1], last.key)]
    assert fake.jql == ['project = "GRV" AND updated >= "-2m" ORDER BY updated ASC']


async def test_a_busy_projects_news_is_asked_by_players_labels_not_paged_through(
    fake: FakeJira, tmp_path: Path
) -> None:
    # A project staff use for other work too, a thousand updates in the window (or a week of
    # them after an outage): the project-wide look paged through every one of them, ten
    # searches a round for 60 players whose labels take two, and offsets that shift under
    # issues updated meanwhile.
    front = Recorder()
    players = [str(900000000000000000 + i) for i in range(60)]
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        for player in players:
            await p.local.register(player, "other", "lag every evening")
        for i in range(1000):
            fake.add_issue(["staff"], f"Unrelated work {i}")
        last = fake.add_issue([f"discord-{players[-1]}"], "Made in Jira by staff")
        fake.set_status(last.key, "Done")
        fake.jql.clear()
        assert await p.news.run_once(front) == 1
    assert [(d.user_id, d.items[0].ticket) for d in front.dms] == [(players[-1], last.key)]
    assert len(fake.jql) <= 1 + 2, fake.jql


async def test_an_issue_reopened_in_jira_and_done_again_is_told_each_time_and_each_change_once(
    fake: FakeJira, tmp_path: Path
) -> None:
    db, front = tmp_path / "grievances.db", Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        heard = "open"
        for status in ("Done", "To Do", "Done", "In Progress", "Done"):
            fake.set_status("GRV-101", status)
            polled = await p.store.cursor("jira-polled-at")
            assert await p.news.run_once(front) == 1
            # Stopped after the news was kept, before the local copy and the cursor were: the
            # next poll's window takes in the same change again, and it is no news.
            sql(db, "UPDATE grievances SET status = ?", (heard,))
            if polled is not None:
                await p.store.set_cursor("jira-polled-at", polled)
            assert await p.news.run_once(front) == 0
            heard = (await p.local.status(NOVA))[0].status
        assert (await p.grievances.status(NOVA))[0].status == "resolved"
    assert [t.rsplit(" ", 1)[-1] for t in front.texts()] == [
        "resolved.",
        "open.",
        "resolved.",
        "progress.",
        "resolved.",
    ]


@pytest.mark.parametrize(
    "away, window",
    [
        (3600, "-62m"),  # an hour: 60 m and a bit, +1
        (30 * 24 * 3600, f"-{7 * 24 * 60}m"),  # a month: a week at most (jira_tracker refuses more)
    ],
)
async def test_after_an_outage_the_poll_looks_back_as_far_as_it_was_away_up_to_a_week(
    fake: FakeJira, tmp_path: Path, away: int, window: str
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        await p.news.run_once(front)
        await p.store.set_cursor("jira-polled-at", repr(time.time() - away))  # the bot was down
        fake.set_status("GRV-101", "Done")
        fake.issues["GRV-101"].updated -= dt.timedelta(minutes=50)  # while it was away
        assert await p.news.run_once(front) == 1
    assert fake.jql[-1].endswith(f'updated >= "{window}" ORDER BY updated ASC')


async def test_a_host_clock_stepped_back_between_polls_narrows_no_window(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Ten minutes between two polls (news.poll_seconds), during which NTP stepped a host clock
    # that ran half an hour fast back: by the wall clock the last poll is in the future.
    front, ticks = Recorder(), [1000.0]
    async with news_over(tmp_path, await open_jira(fake, tmp_path), clock=lambda: ticks[0]) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        await p.news.run_once(front)
        ticks[0] += 10 * 60
        await p.store.set_cursor("jira-polled-at", repr(time.time() + 20 * 60))
        fake.set_status("GRV-101", "Done")
        fake.issues["GRV-101"].updated -= dt.timedelta(minutes=8)
        assert await p.news.run_once(front) == 1
    assert fake.jql[-1].endswith('updated >= "-11m" ORDER BY updated ASC')
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


def host_clock_set(monkeypatch: pytest.MonkeyPatch, ahead: float) -> None:
    """The bot's host clock `ahead` seconds off true time (negative: behind), as ticket news reads
    it; Jira's clock (the fake's, true time) and the host's monotonic clock are untouched."""
    shifted = types.SimpleNamespace(**vars(time))
    shifted.time = lambda: time.time() + ahead
    monkeypatch.setattr(ticket_news, "time", shifted)


async def _resolved_while_the_bot_was_down(
    fake: FakeJira, tmp_path: Path, front: Recorder, polled_at: float
) -> None:
    """A complaint filed and pushed (GRV-101), a round that finds nothing, and the bot stops with
    its last poll kept as `polled_at` (its host's time); staff resolve the ticket 10 minutes ago,
    while it is down. What the next start makes of that cursor is each test's own."""
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        await p.news.run_once(front)
        await p.store.set_cursor("jira-polled-at", repr(polled_at))
    fake.set_status("GRV-101", "Done")
    fake.issues["GRV-101"].updated -= dt.timedelta(minutes=10)


async def test_a_change_made_while_the_bot_was_down_is_told_after_its_clock_stepped_back(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bot polled 20 minutes ago and stopped; staff resolved the ticket 10 minutes ago; the
    # bot starts again on a host whose clock was set back half an hour meanwhile (NTP correcting a
    # fast clock, a VM restored): by its own clock, its last poll is still to come.
    front = Recorder()
    await _resolved_while_the_bot_was_down(fake, tmp_path, front, polled_at=time.time() - 20 * 60)
    host_clock_set(monkeypatch, -30 * 60)
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.news.run_once(front) == 1
        assert await p.news.run_once(front) == 0  # a poll reading it again tells nothing
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


async def test_a_cursor_ahead_of_jiras_clock_at_a_start_looks_back_a_week(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cursor kept in the host's time by a host running 20 minutes fast, its clock put right
    # while the bot was down: how long ago that poll was is unknown.
    front = Recorder()
    await _resolved_while_the_bot_was_down(fake, tmp_path, front, polled_at=time.time() + 20 * 60)
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.news.run_once(front) == 1
    assert fake.jql[-1].endswith(f'updated >= "-{7 * 24 * 60}m" ORDER BY updated ASC')
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


async def _filed_then_resolved_in_jira(p: Parts, fake: FakeJira, front: Recorder) -> None:
    """A complaint filed and pushed (GRV-101), a round that finds nothing, then staff resolve it."""
    await p.grievances.register(NOVA, "wallet", "charged twice")
    await p.grievances.push_pending()
    await p.news.run_once(front)
    fake.set_status("GRV-101", "Done")


async def test_status_news_quotes_the_players_words_not_a_description_staff_rewrote(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Staff triage in the issue's description (wiki markup through REST v2, an internal note, a
    # mention). A status answer quotes the player's own words; the DM of the same change quoted
    # the description's first words, the note and the markup's leftovers with them.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        await p.news.run_once(front)
        issue = fake.issues["GRV-101"]
        issue.description = (
            "h3. Triage\n[~accountid:5b10ac8d82e05b22cc7d4ef5] says: refund refused, a known"
            " chargeback abuser\n\nh3. Reported\ncharged twice"
        )
        fake.set_status("GRV-101", "Done")
        assert await p.news.run_once(front) == 1
        (answer,) = await p.grievances.status(NOVA)
    assert answer.description == "charged twice"
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


async def test_no_comment_staff_write_in_jira_reaches_the_player(fake: FakeJira, tmp_path: Path) -> None:
    # Staff answer in an issue's comments, some for staff alone: a note restricted to a role, a
    # Service Management internal note. None is the player's to hear, in a DM or a status
    # answer, of an issue pushed from here or of one staff made for them.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        await p.news.run_once(front)
        made = fake.add_issue([f"discord-{NOVA}"], description="gems for the outage")
        for key in ("GRV-101", made.key):
            fake.comment(key, "restricted: a known chargeback abuser", visibility=("role", "Administrators"))
            fake.comment(key, "internal note: refuse politely", public=False)
            fake.comment(key, "reply to the customer: refund sent")
        fake.set_status("GRV-101", "Done")
        fake.set_status(made.key, "In Progress")
        assert await p.news.run_once(front) == 2
        told = front.texts()
        told += [t.description for t in await p.grievances.status(NOVA)]
        told += [t.description for t in await p.grievances.status(NOVA, made.key)]
    assert sorted(told) == sorted(
        [
            "News about your tickets:\n"
            '- Your ticket GRV-101 ("charged twice") is now resolved.\n'
            f'- Your ticket {made.key} ("gems for the outage") is now in progress.',
            "charged twice",
            "gems for the outage",
            "gems for the outage",
        ]
    )


async def test_jira_down_keeps_the_window_open_until_it_answers(fake: FakeJira, tmp_path: Path) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.fail("500")
        assert await p.news.run_once(front) == 0  # logged, not raised
        fake.recover()
        assert await p.news.run_once(front) == 1
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


async def test_jira_down_for_many_rounds_is_said_once_and_its_end_once(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every round of an outage (one a minute, as long as Jira is down) said the same WARNING.
    front = Recorder()
    caplog.set_level(logging.DEBUG, logger="bot.ticket_news")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.fail("500")
        for _ in range(3):
            assert await p.news.run_once(front) == 0
        fake.fail("401")  # a new reason is news
        assert await p.news.run_once(front) == 0
        fake.recover()
        assert await p.news.run_once(front) == 1
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    failed = [(level, m) for level, m in said if level >= logging.WARNING and "what changed failed" in m]
    assert [level for level, _ in failed] == [logging.WARNING, logging.ERROR], failed
    assert "HTTP 500" in failed[0][1] and "401" in failed[1][1]
    assert (logging.INFO, "ticket news: Jira answers again") in said


async def test_an_expired_token_the_pusher_said_is_not_said_again_by_the_poll(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The API token expires with grievances waiting: the pusher says so, and the poll, a minute
    # on, said the same refusal in a WARNING of its own (players' lookups already keep quiet).
    caplog.set_level(logging.INFO)
    delays = Delays()
    jira = await JiraGrievances.open(
        jira_settings(fake), fake.email, fake.token, tmp_path / "grievances.db", delays.sleep
    )
    async with news_over(tmp_path, jira) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        fake.fail("token_expired")
        await p.grievances.start()
        await delays.next()  # the pusher met the 401 and waits
        assert await p.news.run_once(Recorder()) == 0
        fake.recover()
        delays.let_go()
        await eventually(lambda: "GRV-101" in fake.issues)
        await p.news.run_once(Recorder())  # Jira answers the poll again
    # At ERROR, as a refused OpenAI or Azure key is: it lasts until someone sets a new token.
    warned = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.WARNING and "401" in r.getMessage()
    ]
    assert len(warned) == 1 and warned[0][1].startswith("pushing grievances to Jira failed"), warned
    assert warned[0][0] == "ERROR"


async def test_a_rate_limited_poll_waits_as_long_as_jira_asks(fake: FakeJira, tmp_path: Path) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        # A minute, read from the time chosen rather than waited out: two polls a moment apart
        # fall within it however busy the machine.
        fake.retry_after = "60"
        fake.fail("429", times=1)
        asked = len(fake.received)
        before = time.monotonic()
        assert await p.news.run_once(front) == 0  # rate limited: logged, not raised
        quiet_until = p.news._jira_quiet_until
        assert before + 60 <= quiet_until <= time.monotonic() + 60
        assert await p.news.run_once(front) == 0  # within Retry-After: Jira is not asked
        assert len(fake.received) == asked + 1
        p.news._jira_quiet_until = time.monotonic()  # as if the minute had passed
        p.news._jira._quiet_until = 0.0  # and the grievance backend's hold on every request
        assert await p.news.run_once(front) == 1  # the window stayed open: the change is found
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


async def test_a_poll_while_jira_says_its_rate_limit_is_nearly_spent_goes_every_other_round(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Jira Cloud marks an answer given with less than a fifth of a rate limit's budget left
    # (X-RateLimit-NearLimit: true). The pusher and players' lookups share that budget with the
    # poll, which alone can wait: it asked every round until the 429 came.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.near_limit = True

        def searches() -> int:
            return len(fake.requests_to("/search/jql"))

        asked = searches()
        assert await p.news.run_once(front) == 1  # no word of it yet: polled, and told
        assert searches() == asked + 1
        fake.set_status("GRV-101", "In Progress")
        assert await p.news.run_once(front) == 0  # the last poll's answer said it: no poll
        assert searches() == asked + 1
        assert await p.news.run_once(front) == 1  # the next one polls, and finds the change
        assert searches() == asked + 2
        fake.near_limit = False
        assert await p.news.run_once(front) == 0  # its answer said it: no poll this round
        assert await p.news.run_once(front) == 0
        assert await p.news.run_once(front) == 0
        assert searches() == asked + 4  # nothing said since: every round
    assert front.texts() == [
        'Your ticket GRV-101 ("charged twice") is now resolved.',
        'Your ticket GRV-101 ("charged twice") is now in progress.',
    ]


async def test_players_lookups_near_jira_s_rate_limit_hold_no_poll_off_two_rounds_running(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Each lookup between rounds is one more answer saying the budget is nearly spent: were each
    # to skip the next round, a busy desk's players would hold ticket news off for as long as
    # they kept looking.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.near_limit = True

        def searches() -> int:
            return len(fake.requests_to("/search/jql"))

        asked = searches()
        polled = []
        for _ in range(4):
            await p.news.run_once(front)
            polled.append(searches() - asked)
            await p.grievances.status(NOVA)  # a player's lookup, answered near the limit too
            asked = searches()
        assert polled == [1, 0, 1, 0]


async def test_a_rate_limit_that_goes_on_is_said_once_by_the_poll(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each 429 of one long rate limit asks its own wait: with the wait in the reason, every poll
    # that met one said the outage again at WARNING.
    caplog.set_level(logging.DEBUG, logger="bot.ticket_news")
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.fail("429")
        for wait in ("30", "45", "20"):
            fake.retry_after = wait
            assert await p.news.run_once(front) == 0
            p.news._jira_quiet_until = time.monotonic()  # as if the wait had passed
            p.news._jira._quiet_until = 0.0
        fake.recover()
        assert await p.news.run_once(front) == 1
    failed = [r.getMessage() for r in caplog.records if "what changed failed" in r.getMessage()]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "what changed" in r.getMessage()]
    assert len(failed) == 3 and len(warned) == 1 and "within 30 s" in warned[0].getMessage(), failed


async def test_a_retry_after_in_unix_time_quiets_the_poll_until_then(fake: FakeJira, tmp_path: Path) -> None:
    # Read as seconds, a Retry-After naming the wait's end as a Unix time would quiet the poll for
    # the longest quiet, a quarter hour, for a wait a minute long, and say Jira asked for 56 years.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.retry_after = str(int(time.time()) + 60)
        fake.fail("429", times=1)
        before = time.monotonic()
        assert await p.news.run_once(front) == 0
        quiet_until = p.news._jira_quiet_until
        assert before + 55 <= quiet_until <= time.monotonic() + 60


async def test_a_rate_limited_poll_waits_out_jiras_retry_after_past_the_pushers_backoff_cap(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Ten minutes asked: the grievance backend holds every request back jira.max_backoff_seconds
    # (5 minutes) at most, the poll the whole ten. Polling once the backend's hold is over would
    # only prolong the limit the pusher shares.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.retry_after = "600"
        fake.fail("429", times=1)
        asked = len(fake.received)
        assert await p.news.run_once(front) == 0  # rate limited: quiet for ten minutes
        p.news._jira._quiet_until = 0.0  # as if the backend's five minutes had passed
        assert await p.news.run_once(front) == 0
        assert len(fake.received) == asked + 1


async def test_a_clock_stepped_back_does_not_lengthen_a_rate_limited_polls_wait(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The quiet is timed by the monotonic clock: timed by the wall clock, NTP setting a fast host
    # back an hour during it would silence the poll for that hour more, and every ticket's news
    # from Jira with it.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.retry_after = "60"
        fake.fail("429", times=1)
        assert await p.news.run_once(front) == 0  # rate limited: quiet for a minute
        # The minute passes while the wall clock is set back an hour.
        clock = types.SimpleNamespace(
            time=lambda: real_time() - 3600 + 61, monotonic=lambda: real_monotonic() + 61
        )
        monkeypatch.setattr(ticket_news, "time", clock)
        p.news._jira._quiet_until = 0.0  # the grievance backend's own hold, a minute on
        assert await p.news.run_once(front) == 1
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


async def test_a_retry_after_of_days_quiets_the_poll_for_a_quarter_hour_at_most(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await _filed_then_resolved_in_jira(p, fake, front)
        fake.retry_after = str(7 * 24 * 3600)
        fake.fail("429", times=1)
        asked = len(fake.received)
        before = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="bot.ticket_news"):
            assert await p.news.run_once(front) == 0
        quiet_until = p.news._jira_quiet_until
        assert before + MAX_QUIET_SECONDS <= quiet_until <= time.monotonic() + MAX_QUIET_SECONDS
        assert await p.news.run_once(front) == 0 and len(fake.received) == asked + 1  # quiet meanwhile
        p.news._jira_quiet_until = time.monotonic()  # as if the quarter hour had passed
        p.news._jira._quiet_until = 0.0  # and the grievance backend's hold on every request
        assert await p.news.run_once(front) == 1  # the window stayed open: the change is found
    (capped,) = [r for r in caplog.records if "Retry-After" in r.getMessage()]
    assert capped.levelno == logging.WARNING and "asking again in 900 s" in capped.getMessage()


async def test_a_late_push_tells_the_new_key_and_a_spooled_one_waits_for_its_jira_key(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")  # heard GRV-1
        fake.fail("500", times=1)
        with pytest.raises(Exception, match="500"):
            await p.grievances.push_pending()
        keep_in_spool(tmp_path, BLAZE, "never got my refund", "pending")  # heard no key at all
        assert await p.news.run_once(front) == 0  # Blaze's is filed now, but not in Jira yet: wait
        sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # backoff over
        assert await p.grievances.push_pending() == 2
        assert await p.news.run_once(front) == 2
        assert await p.news.run_once(front) == 0
    assert {d.user_id: d.text for d in front.dms} == {
        NOVA: "Your ticket GRV-1 has now reached our support team as GRV-101: use GRV-101 when you "
        "ask about it. Its status is open.",
        BLAZE: 'The complaint you made on 31 Jan at 10:02 UTC ("never got my refund") is now filed as '
        "ticket GRV-102. Its status is open.",
    }


async def test_an_issue_under_a_new_key_is_told_once_with_that_key_and_its_status(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        assert await p.news.run_once(front) == 0
    fake.rename_project("SUP")  # staff change the project's key, and jira.project with it
    fake.set_status("SUP-101", "Done")
    moved = await JiraGrievances.open(
        jira_settings(fake, project="SUP"), fake.email, fake.token, tmp_path / "grievances.db"
    )
    async with news_over(tmp_path, moved) as p:
        assert await p.news.run_once(front) == 1
        assert await p.news.run_once(front) == 0
        assert [(t.key, t.status) for t in await p.grievances.status(NOVA)] == [("SUP-101", "resolved")]
        assert await p.news.run_once(front) == 0
    assert front.texts() == [
        "Your ticket GRV-101 is now called SUP-101, as our support team renamed the project it is in:"
        " use SUP-101 when you ask about it. Its status is resolved."
    ]


async def test_an_issue_staff_moved_is_told_as_moved_not_as_reaching_the_team(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()  # GRV-101
        assert await p.news.run_once(front) == 0
        fake.move(fake.move("GRV-101", "ENG").key, "GRV")  # to engineering and back: GRV-102
        assert await p.news.run_once(front) == 1
    assert front.texts() == [
        "Our support team moved your ticket GRV-101, and it is now GRV-102: use GRV-102 when you ask"
        " about it. Its status is open."
    ]


async def test_a_late_push_that_keeps_its_number_says_so_rather_than_naming_it_twice(tmp_path: Path) -> None:
    front = Recorder()
    async with running_fake_jira(first_number=1) as fake:  # a Jira project numbering from 1 too
        async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
            await p.grievances.register(NOVA, "wallet", "charged twice")  # heard GRV-1
            fake.fail("500", times=1)
            with pytest.raises(Exception, match="500"):
                await p.grievances.push_pending()
            sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # backoff over
            assert await p.grievances.push_pending() == 1
            assert await p.news.run_once(front) == 1
    assert front.texts() == [
        "Your ticket GRV-1 has now reached our support team, under the same number. Its status is open."
    ]


async def test_a_change_staff_make_while_a_late_made_issue_waits_for_its_push_is_told(
    fake: FakeJira, tmp_path: Path
) -> None:
    # The create's answer was lost, but Jira made the issue; staff resolved it a minute later, and
    # a poll saw it then, while the push waited (jira.max_backoff_seconds) to look for it again:
    # left to the push's news. The push finds it minutes later, past the next poll's window.
    front = Recorder()
    fake.fail("create_then_hang", times=1)
    jira = await open_jira(fake, tmp_path, timeout_seconds=SHORT_TIMEOUT)  # its lost create waits this out
    async with news_over(tmp_path, jira) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")  # heard GRV-1
        with pytest.raises(Exception, match="did not answer"):
            await p.grievances.push_pending()
        fake.set_status("GRV-101", "Done")
        issue = fake.issues["GRV-101"]
        issue.created -= dt.timedelta(minutes=5)
        issue.updated -= dt.timedelta(minutes=4)
        await p.store.set_cursor("jira-polled-at", repr(time.time() - 5 * 60))
        assert await p.news.run_once(front) == 0  # pending: the push's own news tells it
        sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # its wait over
        assert await p.grievances.push_pending() == 1  # found by its label, not made again
        await p.news.run_once(front)
        await p.news.run_once(front)
    assert list(fake.issues) == ["GRV-101"]
    assert front.texts() == [
        "Your ticket GRV-1 has now reached our support team as GRV-101: use GRV-101 when you ask"
        " about it. Its status is resolved."
    ]


@pytest.mark.parametrize(
    ("answered", "still_told"),
    [
        # The answer to her second note names its local GRV-2: her first, Jira's GRV-2, is still
        # to be told.
        ("2", '("charged twice for the pass") is now filed as ticket GRV-2.'),
        # The answer to her first note names its Jira key, GRV-2, her second's local key: the
        # second, Jira's GRV-3, is still to be told.
        ("1", '("a cheater in match five") is now filed as ticket GRV-3.'),
    ],
    ids=["local key told", "jira key told"],
)
async def test_a_key_told_in_an_answer_holds_back_no_news_of_another_ticket_it_names_elsewhere(
    tmp_path: Path, answered: str, still_told: str
) -> None:
    # Jira numbers from 1 too, one issue ahead: Nova's two complaints whose keys she never heard,
    # local GRV-1 and GRV-2, reach Jira as GRV-2 and GRV-3. GRV-2 names one ticket in each space.
    front = Recorder()
    async with running_fake_jira(first_number=1) as fake:
        fake.add_issue([], "made by staff")  # GRV-1
        async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
            await p.grievances.register(NOVA, "wallet", "charged twice for the pass", "discord:1:0", True)
            await p.grievances.register(NOVA, "other", "a cheater in match five", "discord:2:0", True)
            assert await p.grievances.push_pending() == 2
            assert await p.news.find() == 2
            await p.news.heard_in_answer(NOVA, "discord", answered, ["GRV-2"])
            assert await p.news.deliver(front) == 1
    (text,) = front.texts()
    assert still_told in text


async def test_an_untelling_owed_that_ended_half_way_is_finished_at_the_next_start(tmp_path: Path) -> None:
    """A slash command's key recorded as told, then owed back (the answer never went), whose
    untelling got as far as grievances.db before its process ended (news.db closed under it by a
    stop): the next start finishes it, and the key goes by DM, once."""
    front = Recorder()
    async with news_over(tmp_path) as p:
        filed = await p.local.register(NOVA, "wallet", "charged twice", filing_id="discord:7:0", untold=True)
        assert await p.news.find() == 1
        await p.news.heard_in_answer(NOVA, "discord", "7", [filed.key])
        await p.store.owe_untelling(NOVA, "discord", "7", [filed.key])
        await p.local.unheard(NOVA, "discord:7:", [filed.key])  # its news.db half never came
    async with news_over(tmp_path) as p:
        await p.news.run_once(front)
        await p.news.run_once(front)
        assert await p.store.untellings_owed() == []
    (text,) = front.texts(NOVA)
    assert f"is now filed as ticket {filed.key}." in text


async def test_words_written_in_jira_reach_a_dm_as_plain_words_without_a_masked_link(
    fake: FakeJira, tmp_path: Path
) -> None:
    """An issue made in Jira for a player carries whatever its writer typed: in the DM it is
    one line with no markdown, and a masked link shows its address, not other words."""
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")  # a player the poll asks after
        await p.grievances.push_pending()
        words = "**Refund** ready\n# [Claim it here](https://evil.example/r) @here"
        made = fake.add_issue([f"discord-{NOVA}"], description=words)
        fake.set_status(made.key, "Done")
        assert await p.news.run_once(front) == 1
    (text,) = front.texts()
    assert "\n" not in text and "*" not in text and "#" not in text and "@" not in text
    assert not re.search(r"\[[^\]]*\]\(", text), text
    assert "https://evil.example/r" in text


async def test_news_of_an_issue_with_half_an_emoji_in_jira_goes_out(fake: FakeJira, tmp_path: Path) -> None:
    """Jira's strings are Java's: one may end in half an emoji, which its JSON sends as a lone
    "\\ud83d". SQLite takes none: each poll failed on that issue ("asking Jira what changed
    failed"), and its news never went out."""
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.register(BLAZE, "other", "my clan tag is gone")
        await p.grievances.push_pending()  # GRV-101 and GRV-102
        made = fake.add_issue([f"discord-{NOVA}"], summary="Rembours\ud83d", description="Remboursé \ud83d")
        fake.set_status(made.key, "Réglé \ud83d", "indeterminate")
        fake.set_status("GRV-102", "Done")
        assert await p.news.run_once(front) == 2
    assert sorted(front.texts()) == [
        'Your ticket GRV-102 ("my clan tag is gone") is now resolved.',
        'Your ticket GRV-103 ("Remboursé \ufffd") is now in progress.',
    ]


async def test_a_copy_staff_make_of_an_issue_is_told_as_an_issue_of_its_own(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        assert await p.news.run_once(front) == 0
        # Jira's clone keeps the labels, the push's key label included: GRV-102
        copy = fake.add_issue(list(fake.issues["GRV-101"].labels), "Copy of the wallet complaint")
        fake.set_status(copy.key, "Done")
        assert await p.news.run_once(front) == 1
        assert [g.remote_key for g in await p.local.status(NOVA)] == ["GRV-101"]
    assert front.texts() == ['Your ticket GRV-102 ("Copy of the wallet complaint") is now resolved.']


async def test_an_issue_staff_gave_to_another_player_is_news_to_them_not_on_the_first_ones_record(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        mine = await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.register(BLAZE, "other", "my clan tag is gone")
        await p.grievances.push_pending()  # GRV-101 and GRV-102
        assert await p.news.run_once(front) == 0
        issue = fake.issues["GRV-101"]
        issue.labels[issue.labels.index(f"discord-{NOVA}")] = f"discord-{BLAZE}"
        fake.set_status("GRV-101", "Done")
        assert await p.news.run_once(front) == 1
        row = await p.local.staff_get(mine.key)
    assert [d.user_id for d in front.dms] == [BLAZE]
    assert row is not None and row.status == "open"


async def test_an_issue_staff_label_for_a_second_player_is_news_to_neither(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Merged or cloned complaints labelled for two players: each would read the other's words
    # (the issue's summary is the first one's complaint), so neither is told, as neither is
    # shown it when asking (JiraTracker.user_of).
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice for the winter skin")
        await p.grievances.register(BLAZE, "other", "my clan tag is gone")
        await p.grievances.push_pending()  # GRV-101 and GRV-102
        assert await p.news.run_once(front) == 0
        fake.issues["GRV-101"].labels.append(f"discord-{BLAZE}")
        fake.set_status("GRV-101", "Done")
        fake.add_issue([f"discord-{NOVA}", f"discord-{BLAZE}"], summary="Merged: both charged twice")
        fake.set_status("GRV-102", "Done")  # Blaze's own: still told
        assert await p.news.run_once(front) == 1
    assert front.texts() == ['Your ticket GRV-102 ("my clan tag is gone") is now resolved.']
    assert [d.user_id for d in front.dms] == [BLAZE]


async def test_a_resolved_issue_staff_give_to_another_player_is_told_to_them_and_no_more_to_the_first(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Nova was told her issue is resolved; staff then give it to Blaze. He has never heard of it:
    # its status is news to him, whatever Nova was told. Nova hears nothing more of it.
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.register(BLAZE, "other", "my clan tag is gone")
        await p.grievances.push_pending()  # GRV-101 and GRV-102
        fake.set_status("GRV-101", "Done")
        assert await p.news.run_once(front) == 1
        fake.relabel("GRV-101", f"discord-{NOVA}", f"discord-{BLAZE}")
        assert await p.news.run_once(front) == 1
        assert await p.news.run_once(front) == 0
    assert [(d.user_id, d.items[0].ticket, d.items[0].status) for d in front.dms] == [
        (NOVA, "GRV-101", "resolved"),
        (BLAZE, "GRV-101", "resolved"),
    ]


async def test_a_ticket_jira_no_longer_has_is_worked_on_the_desk_and_its_player_told(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        ticket = await p.grievances.register(NOVA, "wallet", "charged twice")
        await p.grievances.push_pending()
        fake.delete("GRV-101")
        asked = await p.grievances.status(NOVA)  # finds it gone
        await p.local.set_status_by_staff(ticket.key, "resolved", by="staff")  # the desk works it now
        assert await p.news.run_once(front) == 1
        assert [t.untracked for t in asked] == [True]
    assert front.texts() == ['Your ticket GRV-101 ("charged twice") is now resolved.']


async def test_a_ticket_resolved_on_the_desk_while_jira_was_off_is_not_told_open_when_it_gets_there(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    fake.fail("500")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        ticket = await p.grievances.register(NOVA, "wallet", "charged twice")
        with pytest.raises(Exception, match="500"):
            await p.grievances.push_pending()
    async with news_over(tmp_path) as p:  # tools.grievances = "local" meanwhile: the desk works it
        await p.local.set_status_by_staff(ticket.key, "resolved", by="staff")
        assert await p.news.run_once(front) == 1
    fake.recover()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:  # Jira on again
        sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # backoff over
        assert await p.grievances.push_pending() == 1  # made as To Do, then moved to Done
        assert fake.transitioned == [("GRV-101", "Done")]
        assert await p.news.run_once(front) == 1  # its new key
        assert await p.news.run_once(front) == 0
        assert [(t.key, t.status) for t in await p.grievances.status(NOVA)] == [("GRV-101", "resolved")]
        assert await p.news.run_once(front) == 0  # Jira agrees with what they were told
        fake.set_status("GRV-101", "In Progress")  # a change made in Jira is news again
        assert await p.news.run_once(front) == 1
    assert front.texts() == [
        'Your ticket GRV-1 ("charged twice") is now resolved.',
        "Your ticket GRV-1 has now reached our support team as GRV-101: use GRV-101 when you ask"
        " about it. Its status is resolved.",
        'Your ticket GRV-101 ("charged twice") is now in progress.',
    ]


async def desk_set_while_jira_was_off(fake: FakeJira, storage: Path, status: str) -> str:
    """A grievance filed while Jira failed, then given `status` on the desk (tools.grievances =
    "local" meanwhile); its local key."""
    fake.fail("500")
    async with news_over(storage, await open_jira(fake, storage)) as p:
        ticket = await p.grievances.register(NOVA, "wallet", "charged twice")
        with pytest.raises(Exception, match="500"):
            await p.grievances.push_pending()
    fake.recover()
    async with news_over(storage) as p:
        await p.local.set_status_by_staff(ticket.key, status, by="staff")
    sql(storage / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # backoff over
    return ticket.key


@pytest.mark.parametrize(
    ("status", "jira_status", "told"),
    [("closed", "Done", "resolved"), ("waiting on player", "In Progress", "in progress")],
)
async def test_a_status_set_on_the_desk_while_jira_was_off_reaches_jira_in_its_words(
    fake: FakeJira, tmp_path: Path, status: str, jira_status: str, told: str
) -> None:
    front = Recorder()
    key = await desk_set_while_jira_was_off(fake, tmp_path, status)
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 1
        assert await p.news.run_once(front) == 1
        assert await p.news.run_once(front) == 0
        row = await p.local.staff_get(key)
    assert fake.issues["GRV-101"].status == jira_status
    assert row is not None and (row.remote_key, row.status) == ("GRV-101", told)
    assert front.texts() == [
        f"Your ticket {key} has now reached our support team as GRV-101: use GRV-101 when you ask"
        f" about it. Its status is {told}."
    ]


async def test_a_status_resolved_on_the_desk_never_reaches_a_done_status_that_says_the_opposite(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jira Software's "Won't Do", Service Management's "Canceled": statuses in the done category
    # that tell staff the grievance was turned down. The workflow may list them first.
    from tests.fakes import jira_server

    monkeypatch.setitem(jira_server.STATUSES, "Won't Do", "done")
    monkeypatch.setitem(jira_server.STATUSES, "Canceled", "done")
    monkeypatch.setattr(
        jira_server, "TRANSITIONS", {"51": "Won't Do", "61": "Canceled", **jira_server.TRANSITIONS}
    )
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 1
    assert fake.transitioned == [("GRV-101", "Done")]
    # With no other way into done, the grievance waits rather than say it was turned down.
    fake.workflow = ("To Do", "In Progress", "Won't Do", "Canceled")
    key = await desk_set_while_jira_was_off(fake, tmp_path, "closed")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 0
        waiting = await p.local.staff_get(key)
    assert waiting is not None and waiting.push_state == "pending"
    assert fake.transitioned == [("GRV-101", "Done")]


async def test_a_desk_status_reaches_a_workflow_in_another_language_by_its_category(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A German site names its statuses and resolutions in German (Jira Cloud's defaults, in
    # their order): the way into done is found by its status category, not by a name.
    from tests.fakes import jira_server

    german = {"Zu erledigen": "new", "In Arbeit": "indeterminate", "Fertig": "done"}
    monkeypatch.setattr(jira_server, "STATUSES", {**jira_server.STATUSES, **german})
    monkeypatch.setattr(jira_server, "TRANSITIONS", {"11": "Zu erledigen", "21": "In Arbeit", "31": "Fertig"})
    fake.screens = {
        "Fertig": (resolution_field(("Fertig", "Wird nicht erledigt", "Duplikat", "Nicht reproduzierbar")),)
    }
    front = Recorder()
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 1
        fake.set_status("GRV-101", "In Arbeit")  # reopened by staff in Jira
        assert await p.news.run_once(front) == 2
        (answer,) = await p.grievances.status(NOVA)
    issue = fake.issues["GRV-101"]
    assert fake.transitioned == [("GRV-101", "Fertig")] and issue.resolution is not None
    assert issue.resolution["name"] == "Fertig"
    assert answer.status == "in progress"
    assert front.texts() == [
        "News about your tickets:\n"
        f"- Your ticket {key} has now reached our support team as GRV-101: use GRV-101 when you ask"
        " about it. Its status is resolved.\n"
        '- Your ticket GRV-101 ("charged twice") is now in progress.'
    ]


async def test_a_poll_that_saw_the_issue_before_its_push_moved_it_keeps_the_desks_status(
    fake: FakeJira, tmp_path: Path
) -> None:
    # The poll's search lands between the push's create and its move; the poll reads the local
    # row after the push finished. The issue it saw (untouched, To Do) is older than that row.
    front = Recorder()
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    jira = await open_jira(fake, tmp_path)
    seen_mid_push: list = []
    give_status = jira._give_status

    async def searched_mid_push(row, remote_key, token):  # type: ignore[no-untyped-def]
        seen_mid_push.extend(await jira.updated_issues(await jira.local_store.users(), 10))
        await give_status(row, remote_key, token)

    jira._give_status = searched_mid_push  # type: ignore[method-assign]
    async with news_over(tmp_path, jira) as p:
        assert await p.grievances.push_pending() == 1
        assert [i.untouched for _, i in seen_mid_push] == [True]
        search = jira.updated_issues

        async def stale_once(users, minutes):  # type: ignore[no-untyped-def]
            jira.updated_issues = search  # type: ignore[method-assign]
            return seen_mid_push

        jira.updated_issues = stale_once  # type: ignore[method-assign]
        await p.news.run_once(front)
        after_stale = await p.local.staff_get(key)
        await p.news.run_once(front)
    assert after_stale is not None and after_stale.status == "resolved"
    assert front.texts() == [
        f"Your ticket {key} has now reached our support team as GRV-101: use GRV-101 when you ask"
        " about it. Its status is resolved."
    ]


async def test_a_desk_status_jira_cannot_take_yet_keeps_the_grievance_waiting_never_made_twice(
    fake: FakeJira, tmp_path: Path
) -> None:
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fake.workflow = ("To Do", "In Progress")  # no way into Done, for now
    async with news_over(tmp_path, await open_jira(fake, tmp_path, settle_seconds=0.0)) as p:
        assert await p.grievances.push_pending() == 0  # made, but not moved: waits
        assert await p.news.run_once(Recorder()) == 0  # its issue in the poll, still To Do
        assert [(t.key, t.status) for t in await p.grievances.status(NOVA)] == [("GRV-101", "resolved")]
        waiting = await p.local.staff_get(key)
        fake.workflow = None  # the Jira admin adds the transition
        sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # its backoff over
        assert await p.grievances.push_pending() == 1  # found by its label, and moved
        pushed = await p.local.staff_get(key)
    assert waiting is not None and waiting.push_state == "pending" and waiting.remote_key is None
    assert waiting.status == "resolved"  # what its player was told, until Jira has it too
    assert "in Jira as GRV-101, but not moved to 'resolved'" in (waiting.last_error or "")
    assert list(fake.issues) == ["GRV-101"] and fake.transitioned == [("GRV-101", "Done")]
    assert pushed is not None and (pushed.push_state, pushed.status) == ("pushed", "resolved")


async def test_a_desk_status_an_account_without_transition_issues_cannot_give_says_so(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Jira lists no transitions at all to an account without the Transition Issues permission.
    # The grievance waited with "its workflow has no transition to a status like 'resolved'",
    # sending staff to a workflow that has one, while the account lacked the permission.
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fake.lacking = frozenset({"TRANSITION_ISSUES"})
    async with news_over(tmp_path, await open_jira(fake, tmp_path, settle_seconds=0.0)) as p:
        assert await p.grievances.push_pending() == 0  # made, but not moved: waits
        waiting = await p.local.staff_get(key)
    assert waiting is not None and waiting.push_state == "pending"
    assert waiting.last_error == (
        "in Jira as GRV-101, but not moved to 'resolved': the Jira account of JIRA_EMAIL lacks the"
        " Transition Issues permission in project GRV, so Jira offers it no transition: grant it in"
        " the project's permissions (Project settings > Access, or its permission scheme)"
    )
    assert list(fake.issues) == ["GRV-101"] and fake.transitioned == []


async def test_desk_statuses_jira_refuses_alike_are_said_in_one_line(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each refused move named its own issue in its reason ("in Jira as GRV-101, but not moved"):
    # the same refusal of every waiting grievance (the account without Transition Issues) was a
    # WARNING each, where a refused create of them all is one line.
    keys = [await desk_set_while_jira_was_off(fake, tmp_path, "resolved") for _ in range(2)]
    fake.lacking = frozenset({"TRANSITION_ISSUES"})
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    async with news_over(tmp_path, await open_jira(fake, tmp_path, settle_seconds=0.0)) as p:
        assert await p.grievances.push_pending() == 0
        rows = [await p.local.staff_get(k) for k in keys]
    errors = [r.last_error if r is not None else None for r in rows]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"2 grievances ({', '.join(keys)})" in said[0], said
    assert "lacks the Transition Issues permission" in said[0]
    assert errors[0] is not None and errors[0].startswith("in Jira as GRV-101, but not moved")
    assert errors[1] is not None and errors[1].startswith("in Jira as GRV-102, but not moved")


async def test_a_desk_status_no_jira_workflow_can_take_is_said_in_one_line(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The refusal named its issue ("GRV-101's workflow has no transition ..."): a workflow without
    # the desk's status refused every waiting grievance alike, and the log said a WARNING each.
    keys = [await desk_set_while_jira_was_off(fake, tmp_path, "resolved") for _ in range(3)]
    fake.workflow = ("To Do", "In Progress")
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    async with news_over(tmp_path, await open_jira(fake, tmp_path, settle_seconds=0.0)) as p:
        assert await p.grievances.push_pending() == 0
        rows = [await p.local.staff_get(k) for k in keys]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"3 grievances ({', '.join(keys)})" in said[0], said
    assert "its workflow has no transition to a status like 'resolved'" in said[0]
    # Each grievance's own error still names its issue, for the desk.
    assert [r.last_error.split(",")[0] if r and r.last_error else None for r in rows] == [
        f"in Jira as GRV-10{i}" for i in (1, 2, 3)
    ]


async def test_a_desk_status_no_jira_workflow_can_take_is_retried_ever_more_rarely(
    fake: FakeJira, tmp_path: Path
) -> None:
    # A workflow with no way into Done refuses the move on every try: asked again after the
    # push's backoff, as a create Jira refuses, not at every sweep.
    await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fake.workflow = ("To Do", "In Progress")
    jira = await open_jira(fake, tmp_path, push_interval_seconds=60.0, max_backoff_seconds=600.0)
    async with news_over(tmp_path, jira) as p:
        assert await p.grievances.push_pending() == 0
    ((due,),) = sql(tmp_path / "grievances.db", "SELECT next_try_at FROM grievances")
    assert due - time.time() > 30


GERMAN_STATUSES = {
    "Zu erledigen": "new",
    "In Arbeit": "indeterminate",
    "Wird nicht erledigt": "done",
    "Fertig": "done",
}
# The English name Jira Cloud lists each of its own statuses with (`untranslatedName`).
GERMAN_UNTRANSLATED = {
    "Zu erledigen": "To Do",
    "In Arbeit": "In Progress",
    "Wird nicht erledigt": "Won't Do",
    "Fertig": "Done",
}
# A German workflow whose only done status is Jira's own "Fertig".
GERMAN_WORKFLOW = {"11": "Zu erledigen", "21": "In Arbeit", "31": "Fertig"}


def on_a_german_site(
    monkeypatch: pytest.MonkeyPatch, *, untranslated: bool, transitions: dict[str, str] | None = None
) -> None:
    """The fake Jira speaks German: its statuses (GERMAN_STATUSES), listed with the English name
    Jira Cloud gives its own where `untranslated`, and its workflow's `transitions` if given."""
    from tests.fakes import jira_server

    monkeypatch.setattr(jira_server, "STATUSES", {**jira_server.STATUSES, **GERMAN_STATUSES})
    if untranslated:
        monkeypatch.setattr(jira_server, "UNTRANSLATED", GERMAN_UNTRANSLATED)
    if transitions is not None:
        monkeypatch.setattr(jira_server, "TRANSITIONS", transitions)


@pytest.mark.parametrize(
    "resolutions",
    [
        # Jira Cloud's own, in German and in its order: "Fertig" named like the done status.
        ("Fertig", "Wird nicht erledigt", "Duplikat", "Kann nicht reproduziert werden"),
        # A scheme whose refusal comes first: read past by jira.refusals.
        ("Wird nicht erledigt", "Duplikat", "Erledigt"),
    ],
)
async def test_a_desk_resolution_reaches_a_german_workflow_as_done_not_as_a_refusal(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resolutions: tuple[str, ...]
) -> None:
    # On a German site Jira's "Won't Do" is "Wird nicht erledigt", in the done category as
    # "Fertig" is, and nothing Jira sends tells the two apart in every language (their ids differ
    # from site to site). Known by English names alone, the desk's "resolved" went to the first
    # done status offered, here the refusal, with the first resolution offered.
    on_a_german_site(
        monkeypatch,
        untranslated=False,
        transitions={"11": "Zu erledigen", "21": "In Arbeit", "51": "Wird nicht erledigt", "31": "Fertig"},
    )
    fake.screens = {"Fertig": (resolution_field(resolutions),), "Wird nicht erledigt": (resolution_field(),)}
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    jira = await open_jira(fake, tmp_path, refusals=["Wird nicht erledigt", "Duplikat"])
    async with news_over(tmp_path, jira) as p:
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    issue = fake.issues["GRV-101"]
    assert fake.transitioned == [("GRV-101", "Fertig")]
    assert issue.resolution is not None and issue.resolution["name"] in ("Fertig", "Erledigt")
    assert pushed is not None and (pushed.push_state, pushed.status) == ("pushed", "resolved")


async def test_jira_s_own_refusal_status_is_known_in_german_by_its_untranslated_name(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jira's own statuses in German, its "Won't Do" offered first, and no jira.refusals: the
    # project's statuses list each with its untranslated name, which says which is the refusal.
    on_a_german_site(
        monkeypatch,
        untranslated=True,
        transitions={"11": "Zu erledigen", "21": "In Arbeit", "51": "Wird nicht erledigt", "31": "Fertig"},
    )
    key = await desk_set_while_jira_was_off(fake, tmp_path, "closed")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    assert fake.transitioned == [("GRV-101", "Fertig")]
    assert pushed is not None and (pushed.push_state, pushed.status) == ("pushed", "resolved")


def resolved_as(fake: FakeJira, key: str, status: str, resolution: str | None) -> None:
    """Staff close an issue in Jira: into done `status`, with `resolution` (None: none set)."""
    fake.set_status(key, status, "done")
    fake.issues[key].resolution = resolution and {
        "self": f"{fake.url}/rest/api/2/resolution/1",
        "id": "1",
        "name": resolution,
        "description": "",
    }


CLOSED_PLAYERS = ("930000000000000001", "930000000000000002", "930000000000000003", "930000000000000004")


async def filed_then_closed_in_jira(
    p: Parts, fake: FakeJira, front: Recorder, closes: list[tuple[str, str | None]]
) -> None:
    """A complaint each from the first CLOSED_PLAYERS, pushed (GRV-101 on), staff close each in
    Jira as `closes` says (done status, resolution), and one round of news tells every player."""
    players = CLOSED_PLAYERS[: len(closes)]
    for player in players:
        await p.grievances.register(player, "wallet", f"charged twice, says {player}")
    assert await p.grievances.push_pending() == len(closes)
    for n, (status, resolution) in enumerate(closes):
        resolved_as(fake, f"GRV-{101 + n}", status, resolution)
    assert await p.news.run_once(front) == len(closes)


async def test_a_ticket_staff_closed_without_a_fix_is_never_told_resolved(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Every done status read "resolved": a player whose complaint staff turned down (Won't Do,
    # Declined) or closed as a duplicate heard it was resolved, and waited for a fix.
    front = Recorder()
    closes = [("Done", "Won't Do"), ("Done", "Duplicate"), ("Won't Do", None), ("Done", "Done")]
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await filed_then_closed_in_jira(p, fake, front, closes)
        # The local copy follows: the desk, and the player when Jira is down, read it alike.
        assert [(await p.local.status(player))[0].status for player in CLOSED_PLAYERS] == [
            "declined",
            "duplicate",
            "declined",
            "resolved",
        ]
        fake.fail("500")
        (declined,) = await p.grievances.status(CLOSED_PLAYERS[0])
        (duplicate,) = await p.grievances.status(CLOSED_PLAYERS[1])
    assert [text.split(" is now ")[1] for text in sorted(front.texts())] == [
        "closed without a fix.",
        "closed as a duplicate.",
        "closed without a fix.",
        "resolved.",
    ]
    assert declined.from_local_record and duplicate.from_local_record
    rows = ticket_rows([declined, duplicate], private=True)
    assert [(r["status"], r["resolution"].split(":")[0]) for r in rows] == [
        ("declined", "declined"),
        ("duplicate", "a duplicate"),
    ]


async def test_a_german_site_s_refusal_is_told_closed_without_a_fix_by_its_untranslated_name(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Wird nicht erledigt" is Jira's own Won't Do, known by the untranslated name the project's
    # statuses list; "Duplikat", a resolution with no untranslated name, by jira.refusals.
    on_a_german_site(monkeypatch, untranslated=True)
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path, refusals=["Duplikat"])) as p:
        closes = [("Wird nicht erledigt", "Fertig"), ("Fertig", "Duplikat"), ("Fertig", "Fertig")]
        await filed_then_closed_in_jira(p, fake, front, closes)
        # A player's own look reads it so too (an issue a key names, from Jira itself).
        resolved_as(fake, "GRV-103", "Wird nicht erledigt", None)
        assert [g.status for g in await p.grievances.status(CLOSED_PLAYERS[2], "GRV-103")] == ["declined"]
    assert [text.split(" is now ")[1] for text in sorted(front.texts())] == [
        "closed without a fix.",
        "closed without a fix.",
        "resolved.",
    ]


async def test_a_german_site_s_duplicate_in_jira_duplicates_is_told_closed_as_a_duplicate(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Duplikat" in jira.refusals was told "closed without a fix": only a refusal named
    # Duplicate in English read as one. jira.duplicates names a site's own; each is a refusal too,
    # never chosen to resolve what the desk closed.
    on_a_german_site(monkeypatch, untranslated=True)
    front = Recorder()
    jira = await open_jira(fake, tmp_path, refusals=["Abgelehnt"], duplicates=["Duplikat"])
    async with news_over(tmp_path, jira) as p:
        closes = [("Fertig", "Duplikat"), ("Fertig", "Abgelehnt"), ("Fertig", "Fertig")]
        await filed_then_closed_in_jira(p, fake, front, closes)
        assert [(await p.local.status(player))[0].status for player in CLOSED_PLAYERS[:3]] == [
            "duplicate",
            "declined",
            "resolved",
        ]
        # A player's own look, from Jira itself, and the tool's answer.
        (looked,) = await p.grievances.status(CLOSED_PLAYERS[0], "GRV-101")
    assert looked.status == "duplicate"
    assert ticket_rows([looked], private=True)[0]["resolution"].startswith("a duplicate")
    assert [text.split(" is now ")[1] for text in sorted(front.texts())] == [
        "closed as a duplicate.",
        "closed without a fix.",
        "resolved.",
    ]


async def test_a_desk_resolution_never_goes_to_jira_as_a_duplicate_in_jira_duplicates(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name in jira.duplicates is a refusal: the desk's "resolved" reaches a scheme that offers
    # "Duplikat" first with the fix after it.
    on_a_german_site(monkeypatch, untranslated=False, transitions=GERMAN_WORKFLOW)
    fake.screens = {"Fertig": (resolution_field(("Duplikat", "Erledigt")),)}
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    async with news_over(tmp_path, await open_jira(fake, tmp_path, duplicates=["Duplikat"])) as p:
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    issue = fake.issues["GRV-101"]
    assert issue.resolution is not None and issue.resolution["name"] == "Erledigt"
    assert pushed is not None and (pushed.push_state, pushed.status) == ("pushed", "resolved")


@pytest.mark.parametrize("refused", [400, 403, 404])
async def test_a_desk_resolution_reaches_jira_where_the_project_s_statuses_cannot_be_listed(
    fake: FakeJira, tmp_path: Path, refused: int
) -> None:
    # The untranslated names are a help, not a need: a site (or proxy) that refuses the project's
    # statuses listing still gets the desk's "resolved", its refusals known by name.
    fake.statuses_refused = refused
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    assert fake.transitioned == [("GRV-101", "Done")]
    assert pushed is not None and (pushed.push_state, pushed.status) == ("pushed", "resolved")


async def test_a_german_done_status_s_resolution_is_the_one_named_like_it_with_no_setting(
    fake: FakeJira, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A workflow whose only done status is Jira's own ("Fertig"), its screen offering the site's
    # resolutions in an admin's order: the one named like that status says the work was done,
    # in whatever language the site speaks; the first offered was the refusal.
    on_a_german_site(monkeypatch, untranslated=False, transitions=GERMAN_WORKFLOW)
    fake.screens = {"Fertig": (resolution_field(("Wird nicht erledigt", "Duplikat", "Fertig")),)}
    await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 1
    issue = fake.issues["GRV-101"]
    assert fake.transitioned == [("GRV-101", "Fertig")]
    assert issue.resolution is not None and issue.resolution["name"] == "Fertig"


async def test_a_studio_s_own_refusal_resolution_is_never_given_to_a_desk_resolution(
    fake: FakeJira, tmp_path: Path
) -> None:
    # A scheme of the studio's own words, none of them English ones voxdesk knows: the first
    # offered was taken, though it says the grievance was turned down.
    fake.screens = {"Done": (resolution_field(("Abgelehnt", "Umgesetzt")),)}
    key = await desk_set_while_jira_was_off(fake, tmp_path, "closed")
    async with news_over(tmp_path, await open_jira(fake, tmp_path, refusals=["abgelehnt"])) as p:
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    issue = fake.issues["GRV-101"]
    assert issue.resolution is not None and issue.resolution["name"] == "Umgesetzt"
    assert pushed is not None and pushed.push_state == "pushed"


async def test_a_desk_status_jira_reached_by_staff_meanwhile_ends_the_push(
    fake: FakeJira, tmp_path: Path
) -> None:
    # The move was refused; before the retry, staff resolved the issue in Jira themselves. The
    # retry finds it there already: pushed, with no transition of its own (Jira offers none
    # from Done to Done, so asking for one would keep it waiting for ever).
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fake.workflow = ("To Do", "In Progress")
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 0
        fake.set_status("GRV-101", "Done")
        sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    assert pushed is not None and (pushed.push_state, pushed.status) == ("pushed", "resolved")
    assert list(fake.issues) == ["GRV-101"] and fake.transitioned == []


@pytest.mark.parametrize(
    ("status", "resolutions", "given"),
    [
        ("resolved", None, "Done"),  # Jira Cloud's own resolutions
        ("closed", ("Won't Do", "Duplicate", "Fixed"), "Fixed"),
        ("resolved", ("Won't Do", "Shipped"), "Shipped"),  # a scheme of the studio's own words
    ],
)
async def test_a_done_transition_that_requires_a_resolution_is_given_one_that_reads_as_done(
    fake: FakeJira, tmp_path: Path, status: str, resolutions: tuple[str, ...] | None, given: str
) -> None:
    # Many workflows put a screen on the way into Done whose Resolution is required: a transition
    # without one is refused with a 400, and the grievance would wait for ever.
    key = await desk_set_while_jira_was_off(fake, tmp_path, status)
    fake.screens = {
        "Done": (
            resolution_field(resolutions),
            select_field(10060, "Root cause", ("Code", "Data"), required=False),  # left alone
            select_field(10070, "Team", ("Ops", "Web"), default="Web"),  # required, has a default
        )
    }
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    issue = fake.issues["GRV-101"]
    assert issue.status == "Done" and issue.resolution is not None and issue.resolution["name"] == given
    assert fake.transitioned == [("GRV-101", "Done")]
    (move,) = fake.requests_to("/transitions", "POST")
    assert set(move.body["fields"]) == {"resolution", "customfield_10070"}
    asked = fake.requests_to("/transitions", "GET")
    assert asked and all(r.query.get("expand") == ["transitions.fields"] for r in asked)
    assert pushed is not None and (pushed.push_state, pushed.remote_key) == ("pushed", "GRV-101")


async def test_a_done_transition_that_requires_a_field_voxdesk_cannot_know_waits_naming_it(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Not tried at all: a transition Jira will refuse is no use asking for at every retry. The
    # grievance waits, the desk shows why (once in the log), and a default the Jira admin gives
    # the field then lets the next retry through.
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fake.screens = {"Done": (resolution_field(), select_field(10050, "Root cause", ("Code", "Data")))}
    jira = await open_jira(fake, tmp_path, push_interval_seconds=60.0, max_backoff_seconds=600.0)
    with caplog.at_level(logging.DEBUG, logger="bot.tools.jira_grievances"):
        async with news_over(tmp_path, jira) as p:
            assert await p.grievances.push_pending() == 0
            first_try = len(fake.received)
            for _ in range(5):  # sweeps before its backoff is over ask Jira nothing
                assert await p.grievances.push_pending() == 0
            swept = len(fake.received)
            ((due,),) = sql(tmp_path / "grievances.db", "SELECT next_try_at FROM grievances")
            sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # backoff over
            assert await p.grievances.push_pending() == 0  # found by its label, still not moved
            retried = len(fake.received)
            waiting = await p.local.staff_get(key)
            fake.screens = {
                "Done": (
                    resolution_field(),
                    select_field(10050, "Root cause", ("Code", "Data"), default="Data"),
                )
            }
            sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")
            assert await p.grievances.push_pending() == 1
    assert swept == first_try and due - time.time() > 30
    assert retried - swept <= 5  # a find, the issue, its transitions, the field's value
    assert waiting is not None and (waiting.push_state, waiting.status) == ("pending", "resolved")
    assert (waiting.last_error or "").startswith(
        "in Jira as GRV-101, but not moved to 'resolved': Jira's transition to Done requires field"
        " Root cause (customfield_10050), which voxdesk cannot fill"
    )
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and "Root cause" in r.getMessage()]
    assert len(said) == 1
    assert len(fake.requests_to("/issue", "POST")) == 1 and list(fake.issues) == ["GRV-101"]
    (move,) = fake.requests_to("/transitions", "POST")  # only once it could succeed
    assert move.body["fields"]["customfield_10050"] == {"id": "20001"}
    issue = fake.issues["GRV-101"]
    assert issue.status == "Done" and issue.resolution is not None and issue.resolution["name"] == "Done"


async def test_a_refusal_longer_than_the_error_kept_is_said_once(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The grievance keeps the first 500 characters of why it waits; a reason naming many
    # required fields is longer, and each retry must still know it as the one said before.
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fields = [
        select_field(10100 + n, f"Root cause analysis by the incident team, part {n}", ("A",))
        for n in range(8)
    ]
    fake.screens = {"Done": (resolution_field(), *fields)}
    jira = await open_jira(fake, tmp_path, push_interval_seconds=60.0, max_backoff_seconds=600.0)
    with caplog.at_level(logging.DEBUG, logger="bot.tools.jira_grievances"):
        async with news_over(tmp_path, jira) as p:
            for _ in range(3):
                assert await p.grievances.push_pending() == 0
                sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")  # backoff over
            waiting = await p.local.staff_get(key)
    assert waiting is not None and len(waiting.last_error or "") == 500
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and "Root cause" in r.getMessage()]
    assert len(said) == 1


async def test_a_done_transition_failing_its_workflow_condition_waits_naming_it(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Jira lists a transition whose condition (an approval, open subtasks) is not met with
    # isAvailable false, and refuses it with a 400 naming nothing: not tried, and the grievance
    # waits saying so, not as if the workflow had no way into Done.
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fake.unavailable = ("Done",)
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 0
        waiting = await p.local.staff_get(key)
        fake.unavailable = ()  # the condition is met in Jira
        sql(tmp_path / "grievances.db", "UPDATE grievances SET next_try_at = NULL")
        assert await p.grievances.push_pending() == 1
        pushed = await p.local.staff_get(key)
    assert waiting is not None and (waiting.push_state, waiting.status) == ("pending", "resolved")
    assert (waiting.last_error or "").startswith(
        "in Jira as GRV-101, but not moved to 'resolved': Jira's transition to Done is not available"
        " for this issue (a condition of its workflow is not met"
    )
    asked = fake.requests_to("/transitions", "GET")
    assert asked and all(r.query.get("includeUnavailableTransitions") == ["true"] for r in asked)
    assert fake.transitioned == [("GRV-101", "Done")]  # one POST, once it could succeed
    assert len(fake.requests_to("/transitions", "POST")) == 1
    assert pushed is not None and (pushed.push_state, pushed.status) == ("pushed", "resolved")


async def test_a_done_screen_offering_only_resolutions_that_read_as_not_done_is_not_guessed_at(
    fake: FakeJira, tmp_path: Path
) -> None:
    # Closing a player's grievance as "Won't Do" would tell staff the opposite of what the desk said.
    key = await desk_set_while_jira_was_off(fake, tmp_path, "resolved")
    fake.screens = {"Done": (resolution_field(("Won't Do", "Duplicate")),)}
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        assert await p.grievances.push_pending() == 0
        waiting = await p.local.staff_get(key)
    assert waiting is not None and waiting.push_state == "pending"
    assert "requires field Resolution (resolution), which voxdesk cannot fill" in (waiting.last_error or "")
    assert fake.requests_to("/transitions", "POST") == [] and fake.issues["GRV-101"].status == "To Do"


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ("GRV-101", "SUP-101", "is now called SUP-101, as our support team renamed the project it is in"),
        ("GRV-101", "ENG-7", "Our support team moved your ticket GRV-101, and it is now ENG-7"),
        ("GRV-101", "GRV-140", "Our support team moved your ticket GRV-101, and it is now GRV-140"),
    ],
)
def test_a_ticket_under_a_new_key_is_told_renamed_only_when_its_number_stays(old, new, said) -> None:
    from bot.ticket_news import moved_text

    assert said in moved_text(old, new, "open")


async def test_late_filings_racing_a_news_round_are_each_told(tmp_path) -> None:
    # A voice turn files the spool (register -> file_spooled) while the news loop reads events on
    # the same connection; an event read between a filing's INSERT and its key was passed over.
    storage = tmp_path
    async with news_over(storage) as p:
        for i in range(20):
            keep_in_spool(storage, NOVA, f"complaint {i}")
            filing = asyncio.create_task(p.local.file_spooled())
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            await p.news._find_in_events(p.local)
            await filing
        await p.news.find()
        await p.news.deliver(Recorder())
    filed = sql(storage / "grievances.db", "SELECT local_key FROM grievances WHERE filed_late = 1")
    told = sql(storage / "news.db", "SELECT ticket FROM news WHERE kind = 'filed'")
    assert len(filed) == 20 and sorted(told) == sorted(filed)


# ---- what news.db keeps ----------------------------------------------------------------------


def days_ago(days: float) -> str:
    """A time as news.db writes one."""
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=days)
    return at.isoformat().replace("+00:00", "Z")


async def test_a_running_bot_forgets_news_told_long_ago_but_each_tickets_last(tmp_path: Path) -> None:
    db, news_db = tmp_path / "grievances.db", tmp_path / "news.db"
    front = Recorder()
    async with news_over(tmp_path) as p:
        ticket = await p.local.register(NOVA, "wallet", "charged twice")
        for status in ("in progress", "resolved"):
            sql(db, "UPDATE grievances SET status = ? WHERE local_key = ?", (status, ticket.key))
            assert await p.news.run_once(front) == 1
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'resolved' WHERE user_id = ?", (BLAZE,))
        await p.news.find()  # found, not delivered yet
        await p.news.record_channel(NOVA, "920000000000000001")
        await p.news.record_channel(BLAZE, "920000000000000002")
        sql(news_db, "UPDATE news SET found_at = ?", (days_ago(100),))
        sql(news_db, "UPDATE last_channel SET at = ? WHERE user_id = ?", (days_ago(100), BLAZE))
        await p.store.housekeeping()  # the recheck calls it every few seconds: it prunes hourly
        assert len(await p.store.told(NOVA)) == 2
        await p.store.housekeeping(time.time() + 3600)
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
        assert [s for *_, s in await p.store.told(BLAZE)] == ["pending"]  # not told yet: kept
        assert await p.store.last_channel(NOVA) == "920000000000000001"
        assert await p.store.last_channel(BLAZE) is None  # silent for 100 days
        assert await p.news.run_once(front) == 1  # Blaze's
        # Reopened: what Nova was last told is still known, so this is news, and so is going back
        # to a status told long ago and forgotten since.
        for status in ("open", "in progress"):
            sql(db, "UPDATE grievances SET status = ? WHERE local_key = ?", (status, ticket.key))
            assert await p.news.run_once(front) == 1
    assert front.texts(NOVA) == [
        'Your ticket GRV-1 ("charged twice") is now in progress.',
        'Your ticket GRV-1 ("charged twice") is now resolved.',
        'Your ticket GRV-1 ("charged twice") is now open.',
        'Your ticket GRV-1 ("charged twice") is now in progress.',
    ]


async def test_each_players_last_news_of_a_ticket_outlives_another_players_later_one(tmp_path: Path) -> None:
    # An issue made in Jira for Nova, told resolved, then given to Blaze and told him. A month on,
    # what Nova was last told stays: given back to her as it is, it is no news to her.
    async with news_over(tmp_path) as p:
        said = "Your ticket GRV-103 is now resolved."
        for user_id, updated in ((NOVA, "t1"), (BLAZE, "t2")):
            assert await p.store.add(
                user_id, "jira", "GRV-103", "status", "resolved", said, marker=updated, heard="open"
            )
        sql(tmp_path / "news.db", "UPDATE news SET state = 'sent', found_at = ?", (days_ago(40),))
        assert await p.store.prune() == 0
        assert not await p.store.add(
            NOVA, "jira", "GRV-103", "status", "resolved", said, marker="t3", heard="open"
        )


async def test_a_players_news_is_found_without_reading_every_players(tmp_path: Path) -> None:
    # The newest piece of each ticket is kept for ever: a year on, news.db holds a row for every
    # ticket, and the desk's ticket page and the prune's look for a newer piece read all of them.
    await (await NewsStore.open(tmp_path / "news.db")).aclose()
    newer = "SELECT 1 FROM news AS later WHERE later.user_id = ? AND later.source = ? AND later.ticket = ?"
    with sqlite3.connect(tmp_path / "news.db") as conn:
        for query, args in ((ticket_news.TOLD, (NOVA,)), (newer, (NOVA, "jira", "GRV-1"))):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, args)]
            assert any("news_by_user (user_id=?" in step for step in plan), plan


async def test_a_clock_stepped_back_does_not_stop_the_pruning_until_it_catches_up(tmp_path: Path) -> None:
    # Pruned at open by a fast clock, then NTP sets it back an hour: the last prune looked an
    # hour in the future, and nothing was pruned until the clock caught up with it.
    async with news_over(tmp_path) as p:
        assert await p.store.claim_closed_notice(NOVA)
        sql(tmp_path / "news.db", "UPDATE dms_closed SET told_at = ?", (days_ago(100),))
        await p.store.housekeeping(time.time() - 3600)
        assert sql(tmp_path / "news.db", "SELECT user_id FROM dms_closed") == []


async def test_with_news_off_the_grievance_events_nobody_reads_do_not_pile_up(tmp_path: Path) -> None:
    # Only ticket news read (and so dropped) the grievance database's events: with it off, a row
    # for every filing kept for later, push and change of status stayed as long as the bot ran.
    db = tmp_path / "grievances.db"

    def events() -> int:
        return sql(db, "SELECT COUNT(*) FROM news_events")[0][0]

    async with news_over(tmp_path, enabled=False) as p:
        for i in range(20):
            await p.local.register(NOVA, "other", f"lag spike {i}")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        assert events() == 20
        await p.news.housekeeping(now=0.0)  # a recheck
        await p.local.register(BLAZE, "wallet", "lost my skins")
        sql(db, "UPDATE grievances SET status = 'in progress' WHERE user_id = ?", (BLAZE,))
        await p.news.housekeeping(now=60.0)  # a process with news on would have read them by now
        assert events() == 21
        await p.news.housekeeping(now=ticket_news.PRUNE_EVERY_SECONDS)
        assert events() == 1  # Blaze's, there for less than that yet


async def test_with_news_on_the_recheck_leaves_the_grievance_events_for_news_to_read(tmp_path: Path) -> None:
    # News reads them (and drops what it read): a round held up past the prune period (Jira
    # rate limiting it, a slow round) must still find every change of status to tell.
    db = tmp_path / "grievances.db"
    async with news_over(tmp_path) as p:
        for i in range(3):
            await p.local.register(NOVA, "other", f"lag spike {i}")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        for now in (0.0, ticket_news.PRUNE_EVERY_SECONDS, 2 * ticket_news.PRUNE_EVERY_SECONDS):
            await p.news.housekeeping(now=now)
        assert sql(db, "SELECT COUNT(*) FROM news_events")[0][0] == 3


async def test_a_closed_dms_notice_is_not_kept_on_record_for_ever(tmp_path: Path) -> None:
    async with news_over(tmp_path) as p:
        assert await p.store.claim_closed_notice(NOVA)
        assert not await p.store.claim_closed_notice(NOVA)  # told once while DMs stay closed
        sql(tmp_path / "news.db", "UPDATE dms_closed SET told_at = ?", (days_ago(100),))
        await p.store.housekeeping(time.time() + 3600)
        assert sql(tmp_path / "news.db", "SELECT user_id FROM dms_closed") == []
        assert await p.store.claim_closed_notice(NOVA)  # a season on, told once more


# news.db as the versions before each change had its marker made it: unique per ticket and status.
OLD_NEWS_DB = """
CREATE TABLE news (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    source TEXT NOT NULL,
    ticket TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    found_at TEXT NOT NULL,
    done_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL,
    error TEXT,
    UNIQUE (source, ticket, kind, status)
);
CREATE INDEX news_by_state ON news (state, id);
CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE last_channel (user_id TEXT PRIMARY KEY, channel_id TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE dms_closed (user_id TEXT PRIMARY KEY, told_at TEXT NOT NULL);
"""


async def test_an_older_news_db_keeps_what_it_told_and_tells_a_reopened_ticket_resolved_again(
    tmp_path: Path,
) -> None:
    db, news_db, front = tmp_path / "grievances.db", tmp_path / "news.db", Recorder()
    store = await LocalGrievanceStore.open(db)
    ticket = await store.register(NOVA, "wallet", "charged twice")
    await store.set_status_by_staff(ticket.key, "resolved", by="staff")
    store_id = await store.store_id()
    await store.aclose()
    with contextlib.closing(sqlite3.connect(news_db)) as conn, conn:
        conn.executescript(OLD_NEWS_DB)
        told = 'Your ticket GRV-1 ("charged twice") is now resolved.'
        conn.execute(  # told by the older version, whose events cursor is past the change
            "INSERT INTO news (id, user_id, source, ticket, kind, status, text, state, found_at)"
            " VALUES (7, ?, ?, 'GRV-1', 'status', 'resolved', ?, 'sent', ?)",
            (NOVA, f"local:{store_id}", told, days_ago(1)),
        )
        conn.execute("UPDATE sqlite_sequence SET seq = 9")  # the two after it pruned
    sql(db, "DELETE FROM news_events")  # read by the older version
    for _ in range(2):  # a second start finds it done
        async with news_over(tmp_path) as p:
            assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]
    async with news_over(tmp_path) as p:
        for status in ("open", "resolved"):
            await p.local.set_status_by_staff(ticket.key, status, by="staff")
            assert await p.news.run_once(front) == 1
        assert [s for _, _, s, _ in await p.store.told(NOVA)] == ["resolved", "open", "resolved"]
    assert [i for (i,) in sql(news_db, "SELECT id FROM news ORDER BY id")] == [7, 10, 11]
    (table,) = sql(news_db, "SELECT sql FROM sqlite_master WHERE name = 'news'")
    assert "UNIQUE (source, ticket, kind, status, marker)" in table[0]
    assert sql(news_db, "SELECT name FROM sqlite_master WHERE tbl_name = 'news' AND type = 'index'") == [
        ("sqlite_autoindex_news_1",),
        ("news_by_state",),
        ("news_by_user",),
    ]
    assert front.texts() == [
        'Your ticket GRV-1 ("charged twice") is now open.',
        'Your ticket GRV-1 ("charged twice") is now resolved.',
    ]


async def test_a_news_db_of_version_1_gets_the_column_that_keeps_a_dms_key(tmp_path: Path) -> None:
    # Version 1 had no news.delivery: a DM tried again took a nonce from the news it carried.
    news_db = tmp_path / "news.db"
    await (await NewsStore.open(news_db)).aclose()
    with contextlib.closing(sqlite3.connect(news_db)) as conn, conn:
        conn.execute("ALTER TABLE news DROP COLUMN delivery")
        conn.execute(
            "INSERT INTO news (id, user_id, source, ticket, kind, status, text, found_at, attempts,"
            " next_try_at) VALUES (4, ?, 'jira', 'GRV-1', 'status', 'resolved', 'told', ?, 1, 0)",
            (NOVA, days_ago(0)),
        )
        conn.execute("PRAGMA user_version = 1")
    store = await NewsStore.open(news_db)
    try:
        (item,) = await store.due()
        assert (item.id, item.delivery) == (4, None)
        await store.retry([4], 0.0, "not sent", delivery=4)
        await store.retry([4], 0.0, "not sent", delivery=9)  # kept from the first failed try
        assert [i.delivery for i in await store.due()] == [4]
    finally:
        await store.aclose()
    assert sql(news_db, "PRAGMA user_version") == [(2,)]


async def test_news_forgotten_at_a_restart_is_not_told_again_when_jira_shows_the_issue_again(
    fake: FakeJira, tmp_path: Path
) -> None:
    front = Recorder()
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:
        await p.grievances.register(BLAZE, "other", "lag every evening")
        await p.grievances.push_pending()
        made = fake.add_issue([f"discord-{BLAZE}"], "Made in Jira by staff")
        for status in ("Done", "In Progress"):
            fake.set_status(made.key, status)
            assert await p.news.run_once(front) == 1
    sql(tmp_path / "news.db", "UPDATE news SET found_at = ?", (days_ago(40),))
    async with news_over(tmp_path, await open_jira(fake, tmp_path)) as p:  # a restart prunes
        fake.issues[made.key].updated = dt.datetime.now(dt.UTC)  # staff comment on it
        assert await p.news.run_once(front) == 0  # in the poll again, with what Blaze was told last
        assert await p.store.told(BLAZE) == [(made.key, "status", "in progress", "sent")]
        fake.set_status(made.key, "Done")  # a real change, to a status told long ago
        assert await p.news.run_once(front) == 1
    assert front.texts() == [
        f'Your ticket {made.key} ("Made in Jira by staff") is now {status}.'
        for status in ("resolved", "in progress", "resolved")
    ]


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        # An address keeps every character: "order_1#top" with spaces would link another page.
        ("see https://shop.example/order_1#top now", "see https://shop.example/order_1#top now"),
        ("[claim] https://shop.example/a_b", "claim https://shop.example/a_b"),
        ("<https://shop.example/a_b> **now**", "https://shop.example/a_b now"),
        # Cut short, an address is left out rather than cut: its "…" would join it, and so would
        # the link Discord makes of what is left.
        ("refund please https://shop.example/" + "x" * 60, "refund please…"),
        ("`code` @everyone *it*", "code everyone it"),
        # Cut short, a flag or an emoji joined from several is left out rather than cut in two.
        ("x" * 58 + "🇫🇷 gone", "x" * 58 + "…"),
        ("x" * 57 + "👨\u200d👩\u200d👧 gone", "x" * 57 + "…"),
        # A direction override would turn the rest of the DM around, "is now open" and all.
        ("\u202edesolc \u2066refund\u2069", "desolc refund"),
        # Whole, an address that ends just where the words are cut is left out too.
        ("refund please https://shop.example/" + "x" * 24 + " and more words here", "refund please…"),
    ],
)
def test_news_words_keep_their_addresses(written: str, shown: str) -> None:
    assert plain(written, 60) == shown


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        # Out of its brackets "x:/@everyone" is no address but text: a mention, to the eye.
        ("<x:/@everyone> now", "x:/ everyone now"),
        ("<a:/#general>", "a:/ general"),
        # Nor a masked link, whose words would hide where it goes; a web address in it is one.
        ("<x:/[claim](https://evil.example)>", "x:/ claim ( https://evil.example)"),
        # A web address needs no brackets: every character kept, "@everyone" is the link's.
        ("<https://shop.example/@everyone>", "https://shop.example/@everyone"),
    ],
)
def test_news_words_make_an_address_only_text_shows_no_mention_or_masked_link(
    written: str, shown: str
) -> None:
    assert plain(written, 60) == shown


@pytest.mark.parametrize(
    ("cut", "state"),
    [
        ("after the claim's commit", "claimed"),
        ("while its speech is made", ""),
        ("after the commit that marks its DM tried", "sending"),
    ],
)
async def test_news_claimed_by_a_round_a_stop_cuts_short_before_its_dm_goes_out_next_start(
    tmp_path: Path, cut: str, state: str
) -> None:
    """A stop landing on the claim's commit once it had gone through, on the speech of the DM, or
    on the commit that marks the DM tried ('sending') before it is: no DM was tried, and the news
    is given back, sent at the next start. Left 'sending', it would never be sent."""
    db = tmp_path / "grievances.db"
    reached, stopped = asyncio.Event(), asyncio.Event()

    async def speaker(words: str, voice: str) -> Any:
        reached.set()
        await asyncio.Event().wait()  # a spoken DM in the making, for as long as the round runs

    async with news_over(tmp_path, speaker=speaker if cut.startswith("while") else None) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        if cut.startswith("after"):
            conn, real_commit = p.store._conn, p.store._conn.commit

            async def commit() -> None:
                await real_commit()
                if sql(tmp_path / "news.db", "SELECT state FROM news") == [(state,)]:
                    reached.set()  # the stop lands as that commit returns
                    await stopped.wait()

            conn.commit = commit  # type: ignore[method-assign]
        front = Recorder()
        round_ = asyncio.create_task(p.news.run_once(front))
        await asyncio.wait_for(reached.wait(), 30)
        round_.cancel()
        stopped.set()
        with pytest.raises(asyncio.CancelledError):
            await round_
        if cut.startswith("after"):
            conn.commit = real_commit  # type: ignore[method-assign]
        assert sql(tmp_path / "news.db", "SELECT state FROM news") == [("pending",)]
    assert front.dms == []
    async with news_over(tmp_path) as p:
        assert await p.news.run_once(front) == 1
        assert await p.store.told(NOVA) == [("GRV-1", "status", "resolved", "sent")]


async def test_news_a_second_cancel_lands_on_while_the_claim_commits_is_pending_once_the_round_ends(
    tmp_path: Path,
) -> None:
    """A stop lands on the claim's commit and a second cancel (the stop out of grace) lands while
    the round waits for that claim to end: were the claim itself cancelled, its commit already
    through, the store would close with the news 'sending', never given back nor sent."""
    db = tmp_path / "grievances.db"
    reached, stopped = asyncio.Event(), asyncio.Event()
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        real_commit = p.store._conn.commit

        async def commit() -> None:
            await real_commit()
            if sql(tmp_path / "news.db", "SELECT state FROM news") == [("claimed",)]:
                reached.set()  # the claim's commit is through; its return waits
                await stopped.wait()

        p.store._conn.commit = commit  # type: ignore[method-assign]
        round_ = asyncio.create_task(p.news.run_once(Recorder()))
        await asyncio.wait_for(reached.wait(), 30)
        round_.cancel()
        await asyncio.sleep(0)  # the first cancel lands before a second is asked for
        round_.cancel()
        stopped.set()
        with pytest.raises(asyncio.CancelledError):
            await round_
        p.store._conn.commit = real_commit  # type: ignore[method-assign]
        assert sql(tmp_path / "news.db", "SELECT state FROM news") == [("pending",)]


async def test_news_a_second_cancel_lands_on_while_given_back_is_pending_once_the_round_ends(
    tmp_path: Path,
) -> None:
    """A stop cuts a round short while a DM is spoken, and a second cancel (the stop out of grace,
    asyncio.run's end) lands while the news is given back. Were the round to end at once, its
    giving back cut loose, the store would close with the news still 'sending': never sent."""
    reached, giving_back, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
    db = tmp_path / "grievances.db"

    async def speaker(words: str, voice: str) -> Any:
        reached.set()
        await asyncio.Event().wait()

    async with news_over(tmp_path, speaker=speaker) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        give_back = p.store.give_back

        async def slow_give_back(ids: list[int], *args: Any) -> None:
            giving_back.set()
            await go.wait()  # the database busy with another process's write
            await give_back(ids, *args)

        p.store.give_back = slow_give_back  # type: ignore[method-assign]
        round_ = asyncio.create_task(p.news.run_once(Recorder()))
        await asyncio.wait_for(reached.wait(), 30)
        round_.cancel()
        await asyncio.wait_for(giving_back.wait(), 30)
        round_.cancel()
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await round_
        assert sql(tmp_path / "news.db", "SELECT state FROM news") == [("pending",)]


@pytest.mark.parametrize("cancels", [1, 2])
async def test_news_a_stop_lands_on_while_news_of_unread_preferences_is_given_back(
    tmp_path: Path, cancels: int
) -> None:
    """A player's preferences cannot be read, and a stop (`cancels` of them) lands while their
    claimed news is given back: once the round ends the news is pending, not left 'sending'."""
    giving_back, go = asyncio.Event(), asyncio.Event()
    db = tmp_path / "grievances.db"
    async with news_over(tmp_path) as p:
        await p.local.register(NOVA, "wallet", "charged twice")
        sql(db, "UPDATE grievances SET status = 'resolved'")
        sql(tmp_path / "preferences.db", "ALTER TABLE preferences RENAME TO kept")
        give_back = p.store.give_back

        async def slow_give_back(ids: list[int], *args: Any) -> None:
            giving_back.set()
            await go.wait()  # the database busy with another process's write
            await give_back(ids, *args)

        p.store.give_back = slow_give_back  # type: ignore[method-assign]
        round_ = asyncio.create_task(p.news.run_once(Recorder()))
        await asyncio.wait_for(giving_back.wait(), 30)
        for _ in range(cancels):
            round_.cancel()
            await asyncio.sleep(0)  # each cancel lands before the next is asked for
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await round_
        assert sql(tmp_path / "news.db", "SELECT state FROM news") == [("pending",)]


async def stopped_while_a_retry_is_written(p: Any, db: Path, front: Recorder, twice: bool) -> None:
    """Nova's resolved ticket news, failed by `front` and its round cancelled (`twice`: a second
    cancel too) while the store writes the retry, which waits until then."""
    reached, go = asyncio.Event(), asyncio.Event()
    await p.local.register(NOVA, "wallet", "charged twice")
    sql(db, "UPDATE grievances SET status = 'resolved'")
    putting_back = p.store.retry

    async def retry(*args: Any) -> None:
        reached.set()
        await go.wait()  # the write under way when the stop lands (the database busy, say)
        await putting_back(*args)

    p.store.retry = retry
    round_ = asyncio.create_task(p.news.run_once(front))
    await asyncio.wait_for(reached.wait(), 30)
    round_.cancel()
    await asyncio.sleep(0)  # the first cancel lands before a second is asked for
    if twice:
        round_.cancel()
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await round_


async def test_news_a_stop_takes_while_its_retry_is_written_is_tried_again_as_it_was(
    tmp_path: Path,
) -> None:
    """A DM Discord failed (a 5xx, a connection broken once the request was out: Discord may have
    made it), its round stopped while the news was put back for a retry: at the next start it goes
    out, and under its first key (its nonce) with nothing but the news it carried. Given back as
    untried news, it went out with later news under the same nonce, which returns the message
    Discord made the first time: the later news marked sent, never told."""
    db = tmp_path / "grievances.db"

    async with news_over(tmp_path) as p:
        front = Recorder(outcomes=[Outcome.RETRY])
        await stopped_while_a_retry_is_written(p, db, front, twice=False)
        await p.local.register(NOVA, "account", "locked out")
    sql(db, "UPDATE grievances SET status = 'resolved'")
    sql(tmp_path / "news.db", "UPDATE news SET next_try_at = 0 WHERE next_try_at IS NOT NULL")  # delay over
    async with news_over(tmp_path) as p:
        assert await p.news.run_once(front) + await p.news.run_once(front) == 2
        assert [s for *_, s in await p.store.told(NOVA)] == ["sent", "sent"]
    first, *again = front.dms
    carried = {d.key: [i.id for i in d.items] for d in again}
    assert len(carried) == 2 and carried[first.key] == [i.id for i in first.items]


async def test_news_a_second_cancel_lands_on_while_its_retry_is_written_is_pending_once_the_round_ends(
    tmp_path: Path,
) -> None:
    """A DM Discord failed, its round stopped while the news was put back for a retry, and a
    second cancel (the stop out of grace, asyncio.run's end) lands on that write: ended at once,
    with its write cut loose, the round would leave the news 'sending' in the store closed after
    it, never sent."""
    async with news_over(tmp_path) as p:
        await stopped_while_a_retry_is_written(
            p, tmp_path / "grievances.db", Recorder(outcomes=[Outcome.RETRY]), twice=True
        )
        assert sql(tmp_path / "news.db", "SELECT state FROM news") == [("pending",)]


@pytest.mark.parametrize("iso", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", "not a date"])
def test_a_time_out_of_range_in_utc_is_told_earlier(iso: str) -> None:
    # Year 1 an hour east of UTC is before year 1 in UTC: astimezone raises OverflowError.
    assert ticket_news.when(iso) == "earlier"


async def test_an_expired_token_a_players_lookup_said_is_not_said_again_by_the_poll(
    fake: FakeJira, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing waits to be pushed, so the pusher asks Jira nothing: a player's status lookup meets
    # the refused token first and says it at ERROR; the poll, a minute on, said it once more.
    # A grievance filed after both waits on the pusher, which said it a third time.
    caplog.set_level(logging.INFO)
    delays = Delays()
    jira = await JiraGrievances.open(
        jira_settings(fake), fake.email, fake.token, tmp_path / "grievances.db", delays.sleep
    )
    async with news_over(tmp_path, jira) as p:
        filed = await p.grievances.register(NOVA, "wallet", "charged twice")
        assert await p.grievances.push_pending() == 1
        fake.fail("token_expired")
        (told,) = await p.grievances.status(NOVA, filed.key)
        assert told.from_local_record
        assert await p.news.run_once(Recorder()) == 0
        await p.grievances.register(NOVA, "other", "lag every evening")
        await p.grievances.start()
        await delays.next()  # the pusher met the 401 and waits
    refused = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.WARNING and "401" in r.getMessage()
    ]
    assert len(refused) == 1 and refused[0][0] == "ERROR", refused
