"""Grievances in Jira through the real `jira` package against the fake Jira: the outbox never
loses or duplicates a grievance, status answers are the speaker's own, and nothing a player
says reaches JQL."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import re
import shutil
import sqlite3
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from jira import JIRA, JIRAError

from bot import sentences as say
from bot.app import build_grievance_backend, running_app
from bot.backup import backup
from bot.config import ConfigError, JiraSettings
from bot.tools import CATEGORIES, Toolbox, build_tools, jira_grievances
from bot.tools.base import Grievance, ToolCall, ToolContext, ToolError
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.jira_grievances import JiraGrievances
from bot.tools.jira_tracker import TrackerError, explain, iso_utc, status_words, summary_for
from tests.conftest import BLAZE, NOVA, QUILL, make_settings
from tests.fakes import jira_server
from tests.fakes.jira_server import FakeJira, running_fake_jira, select_field

# The two JQL forms voxdesk may send, with only digits or a local key inside the quotes.
OUR_JQL = re.compile(
    r'^project = "GRV" AND labels = "(discord-[0-9]+" ORDER BY created DESC|voxdesk-[0-9a-f]{8}-GRV-[0-9]+")$'
)
PUSH_LABEL = re.compile(r"^voxdesk-[0-9a-f]{8}-(GRV-[0-9]+)$")  # voxdesk-<grievance store id>-<local key>


def pushed_keys(fake: FakeJira) -> list[str]:
    """The local keys Jira's issues were pushed for, one entry per issue label."""
    return sorted(m[1] for i in fake.issues.values() for x in i.labels if (m := PUSH_LABEL.match(x)))


# The client's timeout is long enough for any request the fake answers: on a busy machine (CI's
# xdist workers, each with its fake Jira) an answered request can take more than a second. It is
# shorter than the fake's hang, which a client then always gives up on first. A test of a hang or
# of a timeout names SHORT_TIMEOUT, which it waits out, and is no slower for this one.
TIMEOUT = 10.0
SHORT_TIMEOUT = 0.5
FAST = {
    "push_interval_seconds": 0.05,
    "timeout_seconds": TIMEOUT,
    "max_backoff_seconds": 0.2,
    "settle_seconds": 0.0,
}


def jira_settings(fake: FakeJira, **changes: object) -> JiraSettings:
    return JiraSettings(**{"url": fake.url, **FAST, **changes})  # type: ignore[arg-type]


@pytest.fixture
async def fake() -> AsyncIterator[FakeJira]:
    async with running_fake_jira() as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "grievances.db"


async def open_backend(
    fake: FakeJira, db: Path, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, **changes: object
) -> JiraGrievances:
    return await JiraGrievances.open(jira_settings(fake, **changes), fake.email, fake.token, db, sleep)


class Delays:
    """The pusher's sleep after a failure: keeps each delay it chose, and returns only when the
    test lets it, so a test reads the delays instead of timing them."""

    def __init__(self) -> None:
        self.chosen: list[float] = []
        self._asked: asyncio.Queue[float] = asyncio.Queue()
        self._go = asyncio.Semaphore(0)

    async def sleep(self, delay: float) -> None:
        self.chosen.append(delay)
        self._asked.put_nowait(delay)
        await self._go.acquire()

    async def next(self) -> float:
        """The delay the pusher asks for next (it is still waiting it out)."""
        return await self._asked.get()

    def let_go(self) -> None:
        """End the delay being waited out, as if its time had passed."""
        self._go.release()


async def eventually(condition: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def creates(fake: FakeJira) -> int:
    return len(fake.requests_to("/issue", "POST"))


def assert_only_our_jql(fake: FakeJira) -> None:
    assert fake.bad_jql == [] and fake.unexpected == []
    assert fake.jql and all(OUR_JQL.match(q) for q in fake.jql)


def sql(db: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Look into (or change) the grievance database directly, as an operator would."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        return conn.execute(statement, params).fetchall()


async def local_rows(db: Path) -> dict[str, tuple[str, str | None]]:
    rows = sql(db, "SELECT local_key, push_state, remote_key FROM grievances")
    return {k: (state, remote) for k, state, remote in rows}


async def expire_claims(db: Path) -> None:
    """As if every pusher's claim and retry delay had run out."""
    sql(db, "UPDATE grievances SET next_try_at = NULL")


async def pushed_after_a_backup(fake: FakeJira, db: Path, backup_dir: Path) -> tuple[Grievance, Path]:
    """Nova's "gems never arrived" filed after a backup of `db` was taken (into `backup_dir`) and
    pushed to Jira as GRV-101: it, and the backup's file."""
    backend = await open_backend(fake, db)
    await backend.aclose()
    saved = backup_dir / "backup.db"
    with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(saved)) as dst:
        src.backup(dst)
    backend = await open_backend(fake, db)
    try:
        lost = await backend.register(NOVA, "wallet", "gems never arrived")
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    return lost, saved


def restore(db: Path, saved: Path) -> None:
    """The restore: `saved`'s file alone at `db`, none of the lost database's left beside it."""
    for leftover in db.parent.glob(f"{db.name}*"):
        leftover.unlink()
    saved.rename(db)


def rate_limit_ends(backend: JiraGrievances) -> None:
    """As if the Retry-After of Jira's last 429 had run out (the rows' own delays: expire_claims)."""
    backend._quiet_until = 0.0


async def next_try(db: Path, key: str) -> float:
    return float(sql(db, "SELECT next_try_at FROM grievances WHERE local_key = ?", (key,))[0][0])


async def eventually_pushed(db: Path, key: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while (await local_rows(db)).get(key, ("",))[0] != "pushed":
        assert time.monotonic() < deadline, f"{key} was not pushed in time"
        await asyncio.sleep(0.05)


# ---- filing and pushing -------------------------------------------------------------------------


async def test_register_answers_with_a_local_key_then_the_issue_reaches_jira(fake, db) -> None:
    backend = await open_backend(fake, db)
    try:
        ticket = await backend.register(
            NOVA, "wallet", "I was charged twice for the battle pass\nplease refund"
        )
        assert ticket.key == ticket.local_key == "GRV-1" and ticket.status == "open"
        assert fake.issues == {}  # nothing sent yet: the player already has a key
        assert await backend.push_pending() == 1
        (issue,) = fake.issues.values()
        assert issue.key == "GRV-101" and issue.project == "GRV" and issue.issue_type == "Task"
        assert issue.labels[:2] == ["wallet", f"discord-{NOVA}"] and pushed_keys(fake) == ["GRV-1"]
        assert issue.summary == "Wallet: I was charged twice for the battle pass please refund"
        assert issue.description == "I was charged twice for the battle pass\nplease refund"
        assert await backend.push_pending() == 0  # pushed once only

        mine = await backend.status(NOVA)
        assert [(t.key, t.local_key, t.status, t.from_local_record) for t in mine] == [
            ("GRV-101", "GRV-1", "open", False)
        ]
        fake.set_status("GRV-101", "In Progress")
        by_remote = await backend.status(NOVA, "GRV-101")
        by_local = await backend.status(NOVA, "GRV-1")
        assert (
            [(t.key, t.status) for t in by_remote]
            == [(t.key, t.status) for t in by_local]
            == [("GRV-101", "in progress")]
        )
        assert by_local[0].description.startswith("I was charged twice")
    finally:
        await backend.aclose()
    assert await local_rows(db) == {"GRV-1": ("pushed", "GRV-101")}
    assert_only_our_jql(fake)
    assert not fake.requests_to("/search")  # never the removed search


async def test_the_background_pusher_pushes_soon_after_register(fake, db) -> None:
    # An hour's sweep: only the wake-up can explain a push within the wait, however busy the machine.
    backend = await open_backend(fake, db, push_interval_seconds=3600.0)
    await backend.start()
    try:
        # The first is pushed by the round the start begins; the second comes after that round
        # listed what was pending, so only its wake-up pushes it.
        first = await backend.register(NOVA, "other", "lag spikes every evening")
        await eventually_pushed(db, first.local_key)
        await backend.register(NOVA, "other", "voice chat cuts out")
        await eventually(lambda: len(fake.issues) == 2, within=30.0)
    finally:
        await backend.aclose()


class WatchedEvent(asyncio.Event):
    """An event that tells when someone first waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self) -> bool:
        self.waited.set()
        return await super().wait()


async def test_closing_as_a_grievance_wakes_the_pusher_still_stops_it(fake, db) -> None:
    # A stop arriving in the same moment as a wake-up (a filing just before shutdown) once left
    # the pusher running and aclose() waiting for it for ever.
    backend = await open_backend(fake, db, push_interval_seconds=30.0)
    backend._wake = wake = WatchedEvent()
    await backend.start()
    # The pusher has found nothing and waits to be woken: a wake before that is no race.
    await asyncio.wait_for(wake.waited.wait(), 30)
    wake.set()
    closing = asyncio.ensure_future(backend.aclose())
    done, _ = await asyncio.wait({closing}, timeout=30.0)  # a guard against the hang, not a timing
    if not done:  # cancelling it would also cancel the pusher again, and hide the hang
        closing.cancel()
    assert done, "aclose() is still waiting for the pusher, which took the stop for a wake-up"


async def test_a_close_cancelled_while_it_stops_the_pusher_ends_cancelled_and_closed(fake, db) -> None:
    # A shutdown whose grace ran out cancels whoever is closing the backend: they must not carry
    # on as if the close had finished in time, and what can be released still is.
    fake.fail("hang")
    backend = await open_backend(fake, db, timeout_seconds=30.0)
    await backend.start()
    await backend.register(NOVA, "wallet", "gems never arrived")
    await eventually(lambda: len(fake.received) == 1)  # a push in flight
    closing = asyncio.create_task(backend.aclose())
    await asyncio.sleep(0)  # the close has cancelled the pusher and waits for it to end
    assert not closing.done()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    with pytest.raises(TrackerError, match="closed"):
        backend._tracker.server_info()
    with pytest.raises(RuntimeError, match="shutdown"):
        backend._push_threads.submit(print)
    with pytest.raises(ValueError, match="closed"):
        await backend.local_store.count_pending()
    assert sql(db, "SELECT push_state FROM grievances") == [("pending",)]  # for the next start


async def test_jira_down_ten_grievances_acknowledged_at_once_all_pushed_once(fake, db) -> None:
    fake.fail("hang")  # Jira takes the pusher's request and answers nothing until released
    backend = await open_backend(fake, db, timeout_seconds=30.0)
    await backend.start()
    try:
        first = await backend.register(NOVA, "reward_points", "points missing, match 0")
        await eventually(lambda: len(fake.received) == 1)  # the pusher is waiting on Jira
        tickets = [first] + await asyncio.gather(
            *(backend.register(NOVA, "reward_points", f"points missing, match {i}") for i in range(1, 10))
        )
        # Every player has their key while Jira still sits on the one request: filing waits for
        # no push, not even one that failed.
        assert len(fake.received) == 1 and fake.issues == {}
        assert sql(db, "SELECT COUNT(*), SUM(attempts) FROM grievances WHERE push_state = 'pending'") == [
            (10, 0)
        ]
        keys = [t.key for t in tickets]
        assert len(set(keys)) == 10 and all(k.startswith("GRV-") for k in keys)
        fake.fail("500")
        fake.release()
        await eventually(lambda: len(fake.received) > 3)  # the pusher retries against a failing Jira
        assert fake.issues == {}
        fake.recover()
        await eventually(lambda: len(fake.issues) == 10)
        assert await backend.push_pending() == 0  # after the pusher's round: nothing left to push twice
    finally:
        await backend.aclose()
    assert creates(fake) == 10
    assert pushed_keys(fake) == sorted(keys)
    assert {state for state, _ in (await local_rows(db)).values()} == {"pushed"}


async def test_a_round_pushes_every_pending_grievance_batch_after_batch(fake, db, monkeypatch) -> None:
    # More grievances than one batch (an outage's backlog): a round that stopped after the first
    # would leave the rest to later rounds, a push interval apart, unseen by staff meanwhile.
    from bot.tools import jira_grievances

    monkeypatch.setattr(jira_grievances, "PUSH_BATCH", 3)
    backend = await open_backend(fake, db)
    try:
        for i in range(7):
            await backend.register(NOVA, "other", f"lag spike {i}")
        assert await backend.push_pending() == 7
    finally:
        await backend.aclose()
    assert creates(fake) == 7


async def test_pending_grievances_are_pushed_after_a_restart(fake, db) -> None:
    fake.fail("hang")  # Jira times out while these are filed
    first = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT)
    await first.start()
    keys = [(await first.register(BLAZE, "wallet", f"refund {i} missing")).key for i in range(3)]
    await asyncio.sleep(0.2)
    await first.aclose()  # shut down with all three pending
    assert {state for state, _ in (await local_rows(db)).values()} == {"pending"}

    fake.recover()
    second = await open_backend(fake, db)
    await second.start()
    try:
        await eventually(lambda: len(fake.issues) == 3)
        listed = await second.status(BLAZE)
    finally:
        await second.aclose()
    assert creates(fake) == 3
    assert sorted(t.local_key for t in listed) == sorted(keys)
    assert all(t.key == t.remote_key and t.key.startswith("GRV-1") for t in listed)


async def test_a_timeout_after_jira_created_the_issue_does_not_duplicate_it(fake, db) -> None:
    fake.fail("create_then_hang", times=1)
    backend = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT)
    await backend.start()
    try:
        ticket = await backend.register(NOVA, "gaming_experience", "the game froze during the final")
        await eventually(lambda: len(fake.issues) == 1)
        await eventually_pushed(db, ticket.key)
        await asyncio.sleep(0.2)
    finally:
        await backend.aclose()
    assert creates(fake) == 1 and len(fake.issues) == 1
    assert (await local_rows(db))[ticket.key] == ("pushed", "GRV-101")
    assert len(fake.requests_to("/search/jql")) >= 2  # looked again, found it, did not create


@pytest.mark.parametrize("hidden", [False, True], ids=["shown", "hidden"])
async def test_a_pusher_stopped_between_create_and_its_look_up_files_once_after_a_restart(
    fake, db, hidden
) -> None:
    # Jira made the issue and answered the create; the process stopped before the one look-up that
    # follows it (_shown), the row still pending under its claim. After the restart the push looks
    # for the issue by its key label, which Jira leaves a hidden issue out of.
    fake.secure_new = hidden
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        fake.fail("create_then_hang_next")
        push = asyncio.create_task(backend.push_pending())
        await eventually(lambda: bool(fake.requests_to("/issue/GRV-101", "GET")))
        push.cancel()  # stopped there, as a kill would
        await asyncio.wait({push})
        fake.release()
    finally:
        await backend.aclose()
    assert creates(fake) == 1
    assert (await local_rows(db))[filed.key] == ("pending", None)
    await expire_claims(db)
    again = await open_backend(fake, db)
    try:
        await again.push_pending()
        await expire_claims(db)
        await again.push_pending()  # a second round: none may make another
        (told,) = await again.status(NOVA, filed.key)
    finally:
        await again.aclose()
    assert creates(fake) == 1, sorted(fake.issues)
    assert (await local_rows(db))[filed.key] == ("pushed", "GRV-101")
    assert told.key == "GRV-101" and told.hidden == hidden


def _linked(text: str) -> str:
    return re.sub(r"https://\S+", lambda m: f"[{m[0]}|{m[0]}|smart-link]", text)


@pytest.mark.parametrize(
    ("words", "stored"),
    [
        ("receipt at https://store.example.com/r/12", _linked),
        (
            "mail billing@example.com",
            lambda t: t.replace("billing@example.com", "[billing@example.com|mailto:b]"),
        ),
    ],
)
def test_a_link_jira_wrote_back_reads_as_the_words_it_shows(words: str, stored: Callable[[str], str]) -> None:
    # The words alone tell a lost create's issue apart when it is not "made since the grievance"
    # by the store's clock (Jira's clock behind this host's): read otherwise, a second is made.
    from bot.tools.jira_tracker import _gist

    assert _gist(stored(words)) == _gist(words)


@pytest.mark.parametrize(
    ("words", "stored"),
    [
        # A bare address: Jira Cloud keeps it as a link and writes it back as markup.
        ("charged twice, receipt at https://store.example.com/r/12", _linked),
        (
            "charged twice, mail billing@example.com",
            lambda t: t.replace("billing@example.com", "[billing@example.com|mailto:billing@example.com]"),
        ),
        # Accents written decomposed (as a Mac keyboard may send them) stored composed.
        ("cafe\u0301 reward never came", lambda t: unicodedata.normalize("NFC", t)),
        # A rewrite no rule reads (a wiki emoticon kept as an emoji): the issue, made since the
        # grievance was, is its push all the same.
        ("charged twice (y) for gems", lambda t: t.replace("(y)", ":thumbsup:")),
    ],
)
async def test_a_lost_create_answer_finds_the_issue_in_the_words_jira_cloud_wrote_back(
    fake, db, words: str, stored: Callable[[str], str]
) -> None:
    # After a create whose answer was lost, the push looks for its issue by its key label and its
    # words; Jira writing those words back otherwise made the push create a second issue.
    fake.stored_description = stored
    fake.fail("create_then_hang", times=1)
    backend = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT)
    await backend.start()
    try:
        ticket = await backend.register(NOVA, "wallet", words)
        await eventually_pushed(db, ticket.key)
    finally:
        await backend.aclose()
    assert creates(fake) == 1 and len(fake.issues) == 1
    assert (await local_rows(db))[ticket.key] == ("pushed", "GRV-101")


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("hang_then_create", "did not answer"),
        ("504_then_create", "HTTP 504"),
        ("502_then_create", "HTTP 502"),
    ],
)
async def test_a_create_jira_makes_only_after_the_push_gave_up_is_not_made_twice(
    fake, db, mode: str, said: str
) -> None:
    # Jira busy: the create outlasts the client's timeout (or the gateway's, which answers 504,
    # or a proxy between them cuts it off: a 502), and Jira makes the issue afterwards. Its
    # search showing no such issue yet proves nothing while that create may still be under way.
    fake.fail(mode, times=1)
    # settle_seconds is 0 here
    backend = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT, max_backoff_seconds=60.0)
    try:
        ticket = await backend.register(NOVA, "wallet", "charged twice for the season pass")
        with pytest.raises(TrackerError, match=said):
            await backend.push_pending()
        assert fake.issues == {}  # still being made
        assert await backend.push_pending() == 0  # no second create meanwhile
        assert await next_try(db, ticket.key) >= time.time() + 30.0
        fake.release()  # Jira finishes the first create
        await eventually(lambda: len(fake.issues) == 1)
        await expire_claims(db)  # as if the longest backoff had passed
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    assert creates(fake) == 1 and len(fake.issues) == 1
    assert (await local_rows(db))[ticket.key] == ("pushed", "GRV-101")


async def test_a_status_lookup_on_a_slow_jira_answers_within_one_timeout(fake, db) -> None:
    # Jira answering each request just inside the timeout: a listing that follows each pushed
    # grievance Jira's search does not show (two requests each) kept the player waiting for all
    # of them in turn, several timeouts long. The lookups past one timeout are the local record's.
    backend = await open_backend(fake, db, timeout_seconds=1.0)
    try:
        for i in range(4):
            await backend.register(NOVA, "wallet", f"charge {i} missing")
        assert await backend.push_pending() == 4
        for key in list(fake.issues):
            fake.delete(key)  # each then looked up by its key, then by its label
        fake.delay_seconds = 0.4
        sent = len(fake.received)
        listed = await backend.status(NOVA)
    finally:
        fake.delay_seconds = 0.0
        await backend.aclose()
    assert len(listed) == 4 and any(g.from_local_record for g in listed)
    assert len(fake.received) - sent < 1 + 4 * 2  # not every lookup was asked for


async def test_one_issues_write_limit_holds_back_neither_lookups_nor_other_pushes(fake, db) -> None:
    # Jira Cloud limits writes to one issue (a 429 with RateLimit-Reason jira-per-issue-on-write):
    # that issue's transition waits, and every lookup and other push goes on. Held back too, they
    # would have players told their tickets from the local record for as long as Jira asked.
    fake.retry_after = "30"
    fake.fail("429_issue_write", times=1)
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        resolved = await backend.register(NOVA, "wallet", "charged twice for the season pass")
        assert await backend.local_store.set_status_by_staff(resolved.key, "resolved", by="staff")
        with contextlib.suppress(TrackerError):
            await backend.push_pending()  # made, but not moved: it waits
        assert fake.transitioned == [] and len(fake.issues) == 1
        assert await next_try(db, resolved.key) >= time.time() + 25.0  # as long as Jira asked
        await backend.register(NOVA, "other", "voice chat cuts out every evening")
        assert await backend.push_pending() == 1
        listed = await backend.status(NOVA)
    finally:
        await backend.aclose()
    assert len(listed) == 2 and not any(g.from_local_record for g in listed)


async def test_one_issues_write_limit_is_logged_as_a_hold_not_a_refusal(fake, db, caplog) -> None:
    # A 429 on one issue's writes is Jira asking for a pause, which passes by itself: told as
    # "Jira refused grievance", a WARNING, it would send staff looking for a field or a workflow
    # to fix.
    fake.retry_after = "30"
    fake.fail("429_issue_write", times=1)
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        held = await backend.register(NOVA, "wallet", "charged twice for the season pass")
        assert await backend.local_store.set_status_by_staff(held.key, "resolved", by="staff")
        with caplog.at_level(logging.DEBUG, logger="bot.tools.jira_grievances"):
            assert await backend.push_pending() == 0
    finally:
        await backend.aclose()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if held.key in r.getMessage()]
    assert not [m for _, m in said if "refused" in m], said
    (hold,) = [(level, m) for level, m in said if "write limit" in m]
    assert hold[0] == logging.INFO and "within 30 s" in hold[1], said


async def test_a_listing_while_the_push_waits_to_find_its_issue_tells_jiras_status(fake, db) -> None:
    # Jira made the issue, but the create's answer was lost: the push looks for it again only
    # after the longest backoff. Staff resolved it meanwhile; the player asks for their tickets.
    fake.fail("create_then_hang", times=1)
    backend = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT, max_backoff_seconds=60.0)
    try:
        await backend.register(NOVA, "wallet", "charged twice for the season pass")
        with pytest.raises(TrackerError, match="did not answer"):
            await backend.push_pending()
        fake.set_status("GRV-101", "Done")
        (listed,) = await backend.status(NOVA)
    finally:
        await backend.aclose()
    assert (listed.key, listed.status, listed.from_local_record) == ("GRV-101", "resolved", False)


@pytest.mark.parametrize("clause", ["labels", "updated"])
async def test_a_custom_field_under_a_fields_clause_name_stands_in_for_no_field(fake, db, clause) -> None:
    # The jira package maps the fields a search asks for through every field's JQL clause names:
    # a custom field an admin named "labels" took the place of the issue's labels (whose player
    # it is), and one named "updated" of the time news is found by.
    fake.custom_fields = [
        {"id": "customfield_10100", "name": clause, "custom": True, "clauseNames": ["cf[10100]", clause]}
    ]
    issue = fake.add_issue([f"discord-{NOVA}"], summary="filed by staff")
    issue.values["customfield_10100"] = None
    backend = await open_backend(fake, db)
    try:
        (listed,) = await backend.status(NOVA)
        updated = await asyncio.to_thread(backend._tracker.updated_in_project, 60)
    finally:
        await backend.aclose()
    assert listed.key == issue.key and not listed.from_local_record
    assert updated is not None and [i.key for i in updated] == [issue.key]
    assert updated[0].version and updated[0].updated_at and updated[0].labels == (f"discord-{NOVA}",)
    for search in fake.requests_to("/search/jql"):
        asked = search.body["fields"] if search.body else search.query["fields"]
        assert "customfield_10100" not in ",".join(asked), asked


async def test_a_push_cancelled_mid_way_is_not_duplicated_after_restart(fake, db) -> None:
    fake.fail("create_then_hang")
    first = await open_backend(fake, db, timeout_seconds=10.0)
    await first.start()
    ticket = await first.register(NOVA, "wallet", "gems never arrived")
    await eventually(lambda: len(fake.issues) == 1)  # Jira has it; its answer has not come back
    await first.aclose()  # cancels the push in flight
    fake.recover()
    fake.release()  # the abandoned request's thread gets its answer, which nobody reads

    second = await open_backend(fake, db)
    try:
        # The first pusher's claim is on disk and outlasts the create it may have made, so the
        # restarted one leaves the row alone until Jira's search can show that issue...
        assert await second.push_pending() == 0
        # Meanwhile the player's list shows it once, by its Jira key, not also as pending.
        listed = await second.status(NOVA)
        assert [(t.local_key, t.key) for t in listed] == [(ticket.key, "GRV-101")]
        await expire_claims(db)  # ...which is 3 x timeout + settle later; here, at once
        assert await second.push_pending() == 1
    finally:
        await second.aclose()
    assert creates(fake) == 1 and len(fake.issues) == 1
    assert (await local_rows(db))[ticket.key] == ("pushed", "GRV-101")


async def test_two_pushers_on_one_database_never_push_the_same_grievance(fake, db) -> None:
    # The running bot and a CLI `ask` on the same storage: their claims go through the database.
    one, two = await open_backend(fake, db), await open_backend(fake, db)
    try:
        tickets = [await one.register(NOVA, "wallet", f"charge {i}") for i in range(10)]
        pushed = await asyncio.gather(one.push_pending(), two.push_pending())
    finally:
        await one.aclose()
        await two.aclose()
    assert sum(pushed) == 10 and creates(fake) == 10
    assert pushed_keys(fake) == sorted(t.key for t in tickets)


async def test_the_same_local_key_from_another_database_is_not_taken_for_ours(fake, tmp_path) -> None:
    # A fresh storage dir numbers its grievances from GRV-1 again; its GRV-1 is a new grievance,
    # not the GRV-1 another database pushed long ago.
    old = await open_backend(fake, tmp_path / "old.db")
    new = await open_backend(fake, tmp_path / "new.db")
    try:
        await old.register(NOVA, "wallet", "an old grievance")
        await old.push_pending()
        ticket = await new.register(BLAZE, "other", "a new grievance")
        assert ticket.key == "GRV-1"
        assert await new.push_pending() == 1
        (mine,) = await new.status(BLAZE)
    finally:
        await old.aclose()
        await new.aclose()
    assert creates(fake) == 2 and mine.description == "a new grievance" and mine.remote_key == "GRV-102"


async def test_after_a_restore_from_a_backup_a_reused_key_is_not_taken_for_the_lost_grievances(
    fake, db, tmp_path
) -> None:
    # A backup restored (or the last commits lost to a power cut) numbers new grievances from
    # where the backup was: the next one is GRV-1 again, under the same store id, while Jira
    # still has the lost GRV-1's issue. That issue is another player's complaint, not the new
    # one's push; the new one gets its own, and an answer lost after its create finds it again.
    lost, saved = await pushed_after_a_backup(fake, db, tmp_path)
    # A restore comes well after the issue it loses the grievance of was made.
    made = fake.issues["GRV-101"]
    made.created = made.updated = made.created - dt.timedelta(minutes=5)
    restore(db, saved)

    fake.fail("create_then_hang", times=1)
    backend = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT)
    await backend.start()
    try:
        ticket = await backend.register(BLAZE, "gaming_experience", "the lobby *kicks* me out\n")
        assert ticket.key == lost.key
        await eventually(lambda: len(fake.issues) == 2)
        # Handed back as Jira may: other line ends, its markup's characters escaped.
        fake.issues["GRV-102"].description = "the lobby \\*kicks\\* me out\r\n"
        await eventually_pushed(db, ticket.key)
        (mine,) = await backend.status(BLAZE)
        (theirs,) = await backend.status(NOVA)
    finally:
        await backend.aclose()
    assert creates(fake) == 2 and len(fake.issues) == 2
    assert (mine.description, mine.remote_key) == ("the lobby *kicks* me out\n", "GRV-102")
    assert (theirs.key, theirs.description) == ("GRV-101", "gems never arrived")


async def test_after_a_restore_a_lost_grievance_is_still_found_by_the_key_its_player_heard(
    fake, db, tmp_path
) -> None:
    # Nova heard GRV-1 for a grievance filed after the backup; its issue reached Jira, and the
    # restore lost its row. Asked by GRV-1, Jira's issue of her key label answers, not "no such
    # ticket", and never Blaze's new GRV-1 of the restored database.
    lost, saved = await pushed_after_a_backup(fake, db, tmp_path)
    fake.set_status("GRV-101", "In Progress")
    restore(db, saved)
    backend = await open_backend(fake, db)
    try:
        reused = await backend.register(BLAZE, "other", "voice chat cuts out")
        assert reused.key == lost.key and await backend.push_pending() == 1
        hers = await backend.status(NOVA, lost.key)
        his = await backend.status(BLAZE, lost.key)
    finally:
        await backend.aclose()
    assert [(t.key, t.local_key, t.status, t.description) for t in hers] == [
        ("GRV-101", "GRV-1", "in progress", "gems never arrived")
    ]
    assert [(t.key, t.description) for t in his] == [("GRV-102", "voice chat cuts out")]


async def test_after_a_restore_a_players_lost_issue_is_not_shown_as_their_new_pending_grievance(
    fake, db, tmp_path
) -> None:
    # Nova's GRV-1 reached Jira as GRV-101, then a restore lost its row and gave GRV-1 to her next
    # grievance, still waiting for Jira. GRV-101 carries GRV-1's key label, but it was made
    # before that grievance, in other words: not its push. Her list shows both, each in its own
    # words, and GRV-101 asked by its key is the lost one, not the new one under its key.
    lost, saved = await pushed_after_a_backup(fake, db, tmp_path)
    fake.set_status("GRV-101", "In Progress")
    made = fake.issues["GRV-101"]
    made.created = made.updated = made.created - dt.timedelta(minutes=5)
    restore(db, saved)
    backend = await open_backend(fake, db)  # not started: the new grievance waits for Jira
    try:
        waiting = await backend.register(NOVA, "other", "voice chat cuts out")
        assert waiting.key == lost.key
        listed = await backend.status(NOVA)
        by_key = await backend.status(NOVA, "GRV-101")
        # Ticket news finds GRV-101 changed: an issue of hers, not the waiting grievance's push
        # (which would hold its news back for that push to tell, and then never tell it).
        ((whose, changed),) = await backend.updated_issues([NOVA], 60)
        followed = await backend.follow_issue(whose, changed)
    finally:
        await backend.aclose()
    assert followed == (None, False)
    assert sorted((t.key, t.status, t.description) for t in listed) == [
        ("GRV-1", "open", "voice chat cuts out"),
        ("GRV-101", "in progress", "gems never arrived"),
    ]
    assert [(t.key, t.description) for t in by_key] == [("GRV-101", "gems never arrived")]


async def test_a_key_no_local_grievance_could_have_found_nowhere_is_no_ticket(fake, db) -> None:
    # Only a key of the local store's shape is looked for again by its label: another project's
    # key, or one numbered past any local key, found in neither place is no ticket, not a fault.
    backend = await open_backend(fake, db)
    try:
        for key in ("SUP-5", "GRV-1234567890"):
            assert await backend.status(NOVA, key) == [], key
    finally:
        await backend.aclose()


async def test_a_storage_folder_restored_from_voxdesk_backup_pushes_nothing_twice(fake, tmp_path) -> None:
    # Two grievances waited for Jira at the backup (one tried, one not) and reached it since, and
    # a third was filed and pushed after it. Restored, the two are found in Jira by their labels,
    # the third's key goes to a new grievance that gets an issue of its own, and the third's
    # player still finds theirs by the key they heard.
    storage = tmp_path / "var"
    storage.mkdir()
    db = storage / "grievances.db"
    fake.fail("500")
    backend = await open_backend(fake, db)
    try:
        await backend.register(NOVA, "wallet", "tried while Jira failed")
        with pytest.raises(TrackerError):
            await backend.push_pending()
        await backend.register(BLAZE, "other", "never tried")
        folder, _ = backup(make_settings(storage), tmp_path / "backups")
    finally:
        await backend.aclose()
    fake.recover()
    await expire_claims(db)
    backend = await open_backend(fake, db)
    try:
        assert await backend.push_pending() == 2
        lost = await backend.register(NOVA, "other", "filed after the backup")
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    for leftover in storage.glob("grievances.db*"):
        leftover.unlink()
    shutil.copy(folder / "grievances.db", db)
    await expire_claims(db)
    backend = await open_backend(fake, db)
    try:
        assert await backend.push_pending() == 2  # found, not made again
        reused = await backend.register(QUILL, "wallet", "filed after the restore")
        assert await backend.push_pending() == 1
        hers = await backend.status(NOVA, lost.key)
    finally:
        await backend.aclose()
    assert reused.key == lost.key == "GRV-3" and creates(fake) == 4
    assert await local_rows(db) == {
        "GRV-1": ("pushed", "GRV-101"),
        "GRV-2": ("pushed", "GRV-102"),
        "GRV-3": ("pushed", "GRV-104"),
    }
    assert [(t.key, t.description) for t in hers] == [("GRV-103", "filed after the backup")]


@pytest.mark.parametrize(
    "jira_ahead_minutes",
    [
        # The restore's reused GRV-1 filed by the player whose lost GRV-1 Jira still has: an issue
        # made before the new grievance, in other words, is not its push.
        pytest.param(-5, id="made_before"),
        # A host back from a power cut or a restore runs on its hardware clock until NTP syncs it:
        # minutes behind Jira's. The lost GRV-1's issue then looks made since the new GRV-1 was
        # filed, and must still not be taken for its push, or the new grievance never reaches Jira.
        pytest.param(5, id="bot_clock_behind_jiras"),
    ],
)
async def test_after_a_restore_the_same_players_lost_issue_is_not_taken_for_their_new_grievance(
    fake, db, tmp_path, jira_ahead_minutes
) -> None:
    _, saved = await pushed_after_a_backup(fake, db, tmp_path)
    made = fake.issues["GRV-101"]
    made.created = made.updated = made.created + dt.timedelta(minutes=jira_ahead_minutes)
    restore(db, saved)
    backend = await open_backend(fake, db)
    try:
        ticket = await backend.register(NOVA, "other", "voice chat cuts out every evening")
        assert ticket.key == "GRV-1" and await backend.push_pending() == 1
    finally:
        await backend.aclose()
    assert creates(fake) == 2 and (await local_rows(db))[ticket.key] == ("pushed", "GRV-102")


async def test_ten_grievances_survive_an_outage_a_restart_and_a_lost_answer(fake, db) -> None:
    fake.fail("500")
    first = await open_backend(fake, db)
    await first.start()
    tickets = await asyncio.gather(*(first.register(NOVA, "wallet", f"charge {i}") for i in range(10)))
    await asyncio.sleep(0.3)
    await first.aclose()  # the bot restarts while Jira is still down
    assert fake.issues == {}

    fake.fail("create_then_hang", times=1)  # Jira is back, but the first answer gets lost
    second = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT)
    await second.start()
    try:
        await eventually(lambda: len(fake.issues) == 10)
        for ticket in tickets:
            await eventually_pushed(db, ticket.key)
    finally:
        await second.aclose()
    assert pushed_keys(fake) == sorted(t.key for t in tickets)  # each exactly once
    assert creates(fake) == 10


async def test_a_hanging_jira_never_blocks_the_event_loop(fake, db) -> None:
    backend = await open_backend(fake, db, timeout_seconds=30.0)
    await backend.register(NOVA, "other", "x")
    fake.fail("hang")
    try:
        asking = asyncio.create_task(backend.status(NOVA))
        # The fake runs on this loop: it takes the request only while the lookup waits in a thread.
        await eventually(lambda: len(fake.received) == 1)
        assert not asking.done()  # Jira still holds the request, and the loop turns meanwhile
        fake.release()  # Jira gives up (504): the answer comes from the local record
        (ticket,) = await asking
    finally:
        await backend.aclose()
    assert ticket.from_local_record


async def test_backoff_spaces_out_retries_and_is_capped(fake, db) -> None:
    fake.fail("500")
    delays = Delays()
    backend = await open_backend(fake, db, delays.sleep)  # interval 0.05 s, max backoff 0.2 s
    await backend.register(QUILL, "other", "x")
    await backend.start()
    try:
        requests_before = []
        for _ in range(6):
            await delays.next()
            requests_before.append(len(fake.received))
            if len(requests_before) < 6:
                delays.let_go()
        # doubling from the push interval, capped at max_backoff_seconds
        assert delays.chosen == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2]
        assert requests_before == [1, 2, 3, 4, 5, 6]  # one try per delay, none in between
        fake.recover()
        delays.let_go()  # the sixth delay, as long as a delay ever gets, is over
        await eventually(lambda: len(fake.issues) == 1)
        assert len(delays.chosen) == 6  # pushed at the first try after it
    finally:
        await backend.aclose()


async def test_a_rate_limited_push_waits_as_long_as_jira_asks(fake, db) -> None:
    fake.retry_after = "3"  # far longer than the pusher's own 0.05 s first delay
    fake.fail("429", times=1)
    delays = Delays()
    backend = await open_backend(fake, db, delays.sleep, max_backoff_seconds=10.0)
    ticket = await backend.register(QUILL, "other", "x")
    started = time.time()
    await backend.start()
    try:
        assert await delays.next() == 3.0
        assert len(fake.received) == 1  # the 429; nothing more while Jira asked us to wait
        due = await next_try(db, ticket.key)
        assert started + 3.0 <= due <= time.time() + 3.0  # a flush or a second pusher waits too
        assert await backend.push_pending() == 0 and len(fake.received) == 1
        await expire_claims(db)  # as if the 3 s had passed
        rate_limit_ends(backend)
        delays.let_go()
        await eventually_pushed(db, ticket.key)
    finally:
        await backend.aclose()
    assert len(fake.issues) == 1 and delays.chosen == [3.0]


async def test_a_429_without_retry_after_waits_until_its_rate_limit_reset(fake, db) -> None:
    # Jira Cloud's 429 "may be accompanied by Retry-After and X-RateLimit-Reset": without the first,
    # the second (when the limit resets, to the minute) is the wait. The pusher's own first delay,
    # a fraction of a second, asks again at once, and a request before the reset only prolongs it.
    fake.retry_after = ""
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3)
    fake.rate_limit_reset = reset.strftime("%Y-%m-%dT%H:%MZ")
    fake.fail("429", times=1)
    delays = Delays()
    backend = await open_backend(fake, db, delays.sleep, max_backoff_seconds=600.0)
    ticket = await backend.register(QUILL, "other", "x")
    await backend.start()
    try:
        assert 120.0 < await delays.next() <= 180.0
        assert len(fake.received) == 1  # the 429; nothing more until the reset
        assert await next_try(db, ticket.key) > time.time() + 120.0
    finally:
        await backend.aclose()


def test_a_rate_limit_reset_past_or_unreadable_is_no_wait() -> None:
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%MZ")
    # A time without its zone (a proxy's or compatible server's) is no instant to wait for.
    unzoned = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M")
    for reset in (past, "soon", "", unzoned):
        response = requests.Response()
        response.status_code = 429
        response.headers["X-RateLimit-Reset"] = reset
        error = explain(JIRAError(status_code=429, text="busy", response=response), "https://jira", 15.0)
        assert (error.status, error.retry_after) == (429, None), reset


@pytest.mark.parametrize("status", ["429", "503"])
async def test_while_jira_rate_limits_no_lookup_or_push_asks_it_before_retry_after_ends(
    fake, db, status: str
) -> None:
    # Jira answers a request sent before its Retry-After ends with another 429 and a Retry-After
    # as long or longer: players asking after their tickets would keep grievances out of it. A
    # 503 at a resource limit carries a Retry-After too, to be heeded the same way.
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        pushed = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.retry_after = "30"
        fake.fail(status, times=1)
        (first,) = await backend.status(NOVA)  # the lookup that meets the 429
        asked = len(fake.received)
        again = await backend.status(NOVA)
        mine = await backend.status(NOVA, pushed.key)
        waiting = await backend.register(NOVA, "other", "lag every evening")
        with pytest.raises(TrackerError, match=status):
            await backend.push_pending()
        with pytest.raises(TrackerError, match=status):
            await backend.updated_issues([NOVA], 5)  # ticket news's poll
        assert len(fake.received) == asked  # nothing was asked of Jira meanwhile
        assert await next_try(db, waiting.key) >= time.time() + 20.0
    finally:
        await backend.aclose()
    assert first.from_local_record and [t.from_local_record for t in again + mine] == [True, True]


async def test_a_grievance_filed_while_jira_rate_limits_is_kept_and_pushed_once_the_wait_ends(
    fake, db
) -> None:
    # A player's lookup meets the 429; a grievance filed then wakes the pusher, which asks Jira
    # nothing until the Retry-After ends, nor does a restart meanwhile, and then files it.
    fake.retry_after = "30"
    delays = Delays()
    backend = await open_backend(fake, db, delays.sleep, max_backoff_seconds=60.0)
    await backend.register(NOVA, "wallet", "charged twice")
    assert await backend.push_pending() == 1
    fake.fail("429", times=1)
    (looked_up,) = await backend.status(NOVA)
    asked = len(fake.received)
    await backend.start()
    try:
        waiting = await backend.register(NOVA, "other", "lag every evening")
        assert 25.0 < await delays.next() <= 30.0  # what is left of the Retry-After
        assert len(fake.received) == asked
    finally:
        await backend.aclose()
    assert looked_up.from_local_record and (await local_rows(db))[waiting.key] == ("pending", None)
    restarted = await open_backend(fake, db)
    try:
        assert await restarted.push_pending() == 0  # its row waits out the Retry-After too
        assert len(fake.received) == asked
        await expire_claims(db)  # as if the 30 s had passed
        assert await restarted.push_pending() == 1
    finally:
        await restarted.aclose()
    assert (await local_rows(db))[waiting.key] == ("pushed", "GRV-102") and len(fake.issues) == 2


async def test_a_raid_of_grievances_a_429_cuts_short_loses_none_and_files_each_once(fake, db) -> None:
    # Twelve players complain at once; Jira's limit is met part way through the round. What went
    # stays pushed, the rest wait in the store, Jira is asked nothing until its Retry-After ends,
    # and then each is filed once: none lost, none twice.
    fake.retry_after = "30"
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        filed = await asyncio.gather(
            *(backend.register(str(10**17 + n), "other", f"lag every evening, server {n}") for n in range(12))
        )
        fake.fail("429", times=1, after=9)
        with pytest.raises(TrackerError, match="429"):
            await backend.push_pending()
        rows = await local_rows(db)
        first = [k for k, (state, _) in rows.items() if state == "pushed"]
        asked = len(fake.received)
        with pytest.raises(TrackerError, match="429"):
            await backend.push_pending()  # within the Retry-After: nothing is sent
        assert len(fake.received) == asked
        waiting = [g.key for g in filed if g.key not in first]
        assert await next_try(db, waiting[0]) >= time.time() + 20.0  # the one that met the 429
        await expire_claims(db)  # as if the 30 s had passed
        rate_limit_ends(backend)
        assert await backend.push_pending() == len(waiting)
    finally:
        await backend.aclose()
    assert 1 <= len(first) < 12 and len(rows) == 12
    assert pushed_keys(fake) == sorted(g.key for g in filed) and len(fake.issues) == 12
    assert {state for state, _ in (await local_rows(db)).values()} == {"pushed"}


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_neither_seconds_nor_a_date_is_no_wait_and_raises_nothing_else(status: int) -> None:
    # requests reads header bytes as Latin-1: a stray byte can read as "²", which str.isdigit
    # takes for a digit and float() refuses. That ValueError escaped the TrackerError every
    # caller expects: a lookup failed instead of answering from the local record, and a push
    # took it for its own grievance's fault.
    response = requests.Response()
    response.status_code = status
    response.headers["Retry-After"] = "\xb2"
    error = explain(JIRAError(status_code=status, text="busy", response=response), "https://jira", 15.0)
    assert (error.status, error.retry_after, error.maybe_done) == (status, None, status != 429)


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
async def test_a_retry_after_of_days_holds_pushes_back_no_longer_than_the_longest_backoff(
    fake, db, caplog, as_date: bool
) -> None:
    week = dt.timedelta(days=7)
    when = email.utils.format_datetime(dt.datetime.now(dt.UTC) + week, usegmt=True)
    fake.retry_after = when if as_date else str(int(week.total_seconds()))
    fake.fail("429", times=1)
    delays = Delays()
    backend = await open_backend(fake, db, delays.sleep, max_backoff_seconds=10.0)
    ticket = await backend.register(QUILL, "other", "x")
    await backend.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bot.tools.jira_grievances"):
            assert await delays.next() == 10.0
        assert await next_try(db, ticket.key) <= time.time() + 10.0  # a flush or a restart waits no longer
        await expire_claims(db)
        rate_limit_ends(backend)
        delays.let_go()
        await eventually_pushed(db, ticket.key)
    finally:
        await backend.aclose()
    (capped,) = [r for r in caplog.records if "Retry-After" in r.getMessage()]
    assert capped.levelno == logging.WARNING
    assert "pushing again in 10 s instead" in capped.getMessage()


async def test_a_rate_limit_that_goes_on_is_said_once_whatever_wait_each_429_asks(fake, db, caplog) -> None:
    # Jira Cloud's Retry-After differs from one 429 to the next (and one read from
    # X-RateLimit-Reset differs with every second it is read in): the outage line, said again for
    # each "new" reason, came back at WARNING with every 429 of one long rate limit.
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.fail("429")
        for wait in ("3", "5", "2"):
            fake.retry_after = wait
            (told,) = await backend.status(NOVA)
            assert told.from_local_record
            rate_limit_ends(backend)
        fake.retry_after = ""
        for minutes in (2, 3):
            reset = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
            fake.rate_limit_reset = reset.strftime("%Y-%m-%dT%H:%MZ")
            assert (await backend.status(NOVA))[0].from_local_record
            rate_limit_ends(backend)
    finally:
        await backend.aclose()
    said = [r.getMessage() for r in caplog.records if "429" in r.getMessage()]
    assert len(said) == 1 and "it asks for no request within 3 s" in said[0], said


async def test_lookups_a_rate_limit_holds_back_say_it_no_more_than_its_429_did(fake, db, caplog) -> None:
    # A lookup inside the wait a 429 asked is refused here, not sent; refused with the 429's whole
    # text as its reason, it was a new outage line next to the 429's own.
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.retry_after = "30"
        fake.fail("429")
        for _ in range(3):
            (told,) = await backend.status(NOVA)
            assert told.from_local_record
    finally:
        await backend.aclose()
    said = [r.getMessage() for r in caplog.records if "429" in r.getMessage()]
    assert len(said) == 1 and "it asks for no request within 30 s" in said[0], said


async def test_an_overloaded_jira_that_goes_on_is_said_once_whatever_wait_each_503_asks(
    fake, db, caplog
) -> None:
    # Jira Cloud at a resource limit answers 503 with a Retry-After, as a 429 does: each wait
    # asked is no new outage.
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.fail("503")
        for wait in ("3", "5", "2"):
            fake.retry_after = wait
            (told,) = await backend.status(NOVA)
            assert told.from_local_record
            rate_limit_ends(backend)
    finally:
        await backend.aclose()
    said = [r.getMessage() for r in caplog.records if "503" in r.getMessage()]
    assert len(said) == 1 and "it asks for no request within 3 s" in said[0], said


async def test_a_retry_after_of_days_holds_lookups_back_no_longer_than_the_longest_backoff(
    fake, db, caplog
) -> None:
    # The hold a 429 sets on every request, a player's lookup's as well as a push's: a week asked
    # would leave every player told their tickets from the local record for a week. Cut short
    # silently: the line saying so is the push's, and a lookup has no push to speak of.
    backend = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.retry_after = str(7 * 24 * 3600)
        fake.fail("429", times=1)
        (told,) = await backend.status(NOVA)  # the lookup that meets the 429
        held = backend._quiet_until - time.monotonic()
    finally:
        await backend.aclose()
    assert told.from_local_record and 0 < held <= 60.0
    assert "Retry-After" not in caplog.text


async def test_a_grievance_that_cannot_go_to_jira_stays_local_and_holds_up_nothing(fake, db) -> None:
    backend = await open_backend(fake, db)
    try:
        await backend.register("not-a-discord-id", "other", "from the command line")
        await backend.register(NOVA, "other", "a normal one")
        assert await backend.push_pending() == 1
        rows = await local_rows(db)
    finally:
        await backend.aclose()
    assert rows == {"GRV-1": ("local_only", None), "GRV-2": ("pushed", "GRV-101")}


# ---- status -------------------------------------------------------------------------------------


def jira_env(fake: FakeJira, token: str | None = None, **changes: object) -> dict[str, str]:
    return {
        "VOXDESK_TOOLS_GRIEVANCES": "jira",
        "VOXDESK_JIRA_URL": fake.url,
        "JIRA_EMAIL": fake.email,
        "JIRA_API_TOKEN": token or fake.token,
        **{f"VOXDESK_JIRA_{k.upper()}": str(v) for k, v in {**FAST, **changes}.items()},
    }


async def tool(app, user: str, name: str, **arguments: object) -> dict:
    result = await app.toolbox.run(
        ToolContext(user_id=user), ToolCall(id="c1", name=name, arguments=arguments)
    )
    return result.result


async def test_status_while_jira_is_down_comes_from_the_local_record_with_a_note(
    fake, settings, scripted_app_engine
) -> None:
    # Its lookups on a hanging Jira each wait out the timeout.
    settings = make_settings(settings.storage_dir, **jira_env(fake, timeout_seconds=SHORT_TIMEOUT))
    async with running_app(settings, scripted_app_engine) as app:
        filed = await tool(app, NOVA, "register_grievance", category="wallet", description="double charge")
        assert filed == {"ticket_key": "GRV-14", "status": "open", "category": "wallet"}
        await eventually(lambda: len(fake.issues) == 1)
        await eventually_pushed(settings.storage_dir / "grievances.db", "GRV-14")
        fake.set_status("GRV-101", "Done")
        up = await tool(app, NOVA, "get_grievance_status", ticket_key="GRV-101")
        assert [(t["ticket_key"], t["status"]) for t in up["tickets"]] == [("GRV-101", "resolved")]
        assert "note" not in up["tickets"][0]

        for mode in ("500", "hang"):
            fake.fail(mode)
            one = await tool(app, NOVA, "get_grievance_status", ticket_key="GRV-14")
            listed = await tool(app, NOVA, "get_grievance_status")
            fake.recover()
            assert [(t["ticket_key"], t["status"]) for t in one["tickets"]] == [("GRV-101", "resolved")]
            assert "unreachable" in one["tickets"][0]["note"]
            # the Jira ticket (its last known status) and the two demo tickets filed before Jira
            assert {t["ticket_key"] for t in listed["tickets"]} == {"GRV-101", "GRV-10", "GRV-12"}
            assert all("unreachable" in t["note"] for t in listed["tickets"])

        fake.fail("500")
        unknown = await tool(app, NOVA, "get_grievance_status", ticket_key="GRV-150")
        assert "unreachable" in unknown["error"]  # not "no such ticket": we cannot know


async def test_grievances_filed_before_jira_was_on_or_after_it_was_off_stay_answerable(fake, db) -> None:
    # A studio on the local store adds Jira, later drops it, then adds it back: what was filed
    # locally stays local (worked on the desk), what Jira has is answered by either key from the
    # record, and what still waited for Jira when it went is pushed when it returns.
    async def asked(backend: object, key: str | None = None) -> list[tuple[str, str]]:
        tools = Toolbox(build_tools(None, None, backend))  # type: ignore[arg-type]
        args = {} if key is None else {"ticket_key": key}
        got = await tools.run(
            ToolContext(user_id=NOVA), ToolCall(id="1", name="get_grievance_status", arguments=args)
        )
        return sorted((t["ticket_key"], t["status"]) for t in got.result["tickets"])

    store = await LocalGrievanceStore.open(db)  # tools.grievances = "local"
    try:
        before = await store.register(NOVA, "wallet", "filed before Jira")
        await store.set_status_by_staff(before.key, "in progress", by="staff")
    finally:
        await store.aclose()
    backend = await open_backend(fake, db)  # Jira on
    try:
        pushed = await backend.register(NOVA, "other", "filed with Jira on")
        assert await backend.push_pending() == 1 and pushed_keys(fake) == [pushed.key]
        assert await asked(backend, before.key) == [(before.key, "in progress")]
        assert await asked(backend) == [(before.key, "in progress"), ("GRV-101", "open")]
        fake.fail("500")
        waiting = await backend.register(NOVA, "other", "filed while Jira failed")
        with pytest.raises(TrackerError):
            await backend.push_pending()
    finally:
        await backend.aclose()
    fake.recover()
    fake.set_status("GRV-101", "In Progress")
    store = await LocalGrievanceStore.open(db)  # Jira dropped: its last known status answers
    try:
        assert await asked(store, pushed.key) == await asked(store, "GRV-101") == [("GRV-101", "open")]
        assert await asked(store) == [(before.key, "in progress"), ("GRV-101", "open"), (waiting.key, "open")]
    finally:
        await store.aclose()
    await expire_claims(db)
    backend = await open_backend(fake, db)  # Jira back
    try:
        assert await backend.push_pending() == 1
        listed = await asked(backend)
    finally:
        await backend.aclose()
    assert listed == [(before.key, "in progress"), ("GRV-101", "in progress"), ("GRV-102", "open")]
    assert await local_rows(db) == {
        before.key: ("local_only", None),
        pushed.key: ("pushed", "GRV-101"),
        waiting.key: ("pushed", "GRV-102"),
    }
    assert pushed_keys(fake) == [pushed.key, waiting.key]


async def test_jira_lists_the_speakers_tickets_with_pending_ones_merged_in(fake, db) -> None:
    staff_filed = fake.add_issue([f"discord-{NOVA}", "wallet"], summary="Refund follow-up")  # GRV-101
    fake.add_issue([f"discord-{BLAZE}", "other"])  # someone else's
    backend = await open_backend(fake, db)
    try:
        await backend.register(NOVA, "wallet", "first")
        await backend.push_pending()  # GRV-1 -> GRV-103
        await backend.register(NOVA, "other", "second, not in Jira yet")  # GRV-2, pending
        listed = await backend.status(NOVA)
    finally:
        await backend.aclose()
    by_key = {t.key: t for t in listed}
    assert set(by_key) == {"GRV-2", "GRV-103", staff_filed.key}
    assert (by_key["GRV-2"].local_key, by_key["GRV-2"].remote_key) == ("GRV-2", None)
    assert (by_key["GRV-103"].local_key, by_key["GRV-103"].description) == ("GRV-1", "first")
    staff = by_key[staff_filed.key]
    assert (staff.local_key, staff.category, staff.description) == ("", "wallet", "Refund follow-up")
    assert not any(t.from_local_record for t in listed) and {t.status for t in listed} == {"open"}


async def test_a_player_never_sees_another_players_tickets(fake, settings, scripted_app_engine) -> None:
    settings = make_settings(settings.storage_dir, **jira_env(fake))
    fake.add_issue([f"discord-{NOVA}", "other"], summary="filed by support for Nova")  # GRV-101
    async with running_app(settings, scripted_app_engine) as app:
        await tool(app, NOVA, "register_grievance", category="wallet", description="Nova's problem")
        await eventually(lambda: len(fake.issues) == 2)
        await eventually_pushed(settings.storage_dir / "grievances.db", "GRV-14")
        assert PUSH_LABEL.match(fake.issues["GRV-102"].labels[-1])[1] == "GRV-14"  # type: ignore[index]
        nova = await tool(app, NOVA, "get_grievance_status")
        assert {"GRV-101", "GRV-102"} <= {t["ticket_key"] for t in nova["tickets"]}
        for key in ("GRV-101", "GRV-102", "GRV-14", "GRV-10"):  # Jira keys, Nova's local key, a demo key
            theirs = await tool(app, BLAZE, "get_grievance_status", ticket_key=key)
            assert theirs["tickets"] == [] and f"No ticket {key}" in theirs["message"]
        blaze = await tool(app, BLAZE, "get_grievance_status")
        assert {t["ticket_key"] for t in blaze["tickets"]} == {"GRV-11"}  # Blaze's own demo ticket
    assert_only_our_jql(fake)


async def test_an_issue_labelled_for_two_players_is_shown_to_neither(fake, db) -> None:
    # Staff merging two complaints into one issue label it for both; each would read the other's.
    issue = fake.add_issue(["wallet", f"discord-{NOVA}", f"discord-{BLAZE}"], description="Nova's card 4242")
    backend = await open_backend(fake, db)
    try:
        for player in (NOVA, BLAZE):
            assert await backend.status(player) == []
            assert await backend.status(player, issue.key) == []
    finally:
        await backend.aclose()


async def test_jql_in_model_arguments_changes_nothing(fake, settings, scripted_app_engine) -> None:
    settings = make_settings(settings.storage_dir, **jira_env(fake))
    sneaky = "') OR labels is not EMPTY --"
    async with running_app(settings, scripted_app_engine) as app:
        too_long = await tool(app, NOVA, "get_grievance_status", ticket_key='GRV-1" OR project = X')
        assert "Invalid arguments" in too_long["error"]  # longer than a key may be
        refused = await tool(app, NOVA, "get_grievance_status", ticket_key='GRV-1" OR 1=1')
        assert refused["tickets"] == [] and "not a ticket key" in refused["message"]
        filed = await tool(app, NOVA, "register_grievance", category="other", description=sneaky)
        await eventually(lambda: len(fake.issues) == 1)
        await eventually_pushed(settings.storage_dir / "grievances.db", filed["ticket_key"])
        blaze = await tool(app, BLAZE, "get_grievance_status")
        # the backend itself, bypassing the tool's key check, refuses to query with such keys
        direct = [await app.grievances.status(NOVA, k) for k in ('GRV-1" OR project = X', "GRV-1 OR 1=1")]
        not_digits = await app.grievances.status('1" OR labels is not EMPTY', None)
    (issue,) = fake.issues.values()
    assert issue.description == sneaky and issue.summary == f"Other: {sneaky}"
    assert issue.labels[:2] == ["other", f"discord-{NOVA}"] and pushed_keys(fake) == [filed["ticket_key"]]
    assert {t["ticket_key"] for t in blaze["tickets"]} == {"GRV-11"}
    assert direct == [[], []] and not_digits == []
    assert_only_our_jql(fake)


async def test_an_id_or_key_with_a_line_break_after_it_reaches_no_jql_nor_label(fake, db) -> None:
    # A pattern's `$` also matches before a final line break: "<id>\n" would pass for a Discord id
    # (a label and JQL with the break in them) and "GRV-1\n" for a key (a request for it).
    backend = await open_backend(fake, db)
    try:
        ticket = await backend.register(f"{NOVA}\n", "wallet", "charged twice for the battle pass")
        assert await backend.push_pending() == 0  # no Discord user's: kept local
        (mine,) = await backend.status(f"{NOVA}\n")
        assert mine.key == ticket.key
        assert await backend.status(NOVA) == []
        assert await backend.status(NOVA, "GRV-101\n") == []
    finally:
        await backend.aclose()
    assert fake.issues == {} and not [r for r in fake.received if "/issue/" in r.path]
    assert sql(db, "SELECT push_state FROM grievances") == [("local_only",)]
    assert_only_our_jql(fake)  # Nova's own listing, by digits alone


async def test_a_players_words_reach_jira_as_words_not_wiki_markup(fake, db) -> None:
    """Jira reads a v2 description as wiki markup: a player's words must not mention (and so mail)
    a staff member, show them an image from elsewhere, hide a link's address or run a macro. Read
    back, they are the player's words again."""
    words = (
        "[~accountid:557058:staff-lead] my refund!\n"
        "!https://evil.example/pixel.png! [Refund form|https://evil.example/f] "
        "{html}<img src=x>{html} C:\\games\\ \\[~accountid:557058:other\\]"
    )
    backend = await open_backend(fake, db)
    try:
        ticket = await backend.register(NOVA, "wallet", words)
        assert await backend.push_pending() == 1
        (issue,) = fake.issues.values()
        # Each mark is escaped by an odd run of backslashes, so none of them is markup.
        assert not re.search(r"(?<!\\)(\\\\)*[\[\]{}!|]", issue.description), issue.description
        assert "https://evil.example/pixel.png" in issue.description
        (mine,) = await backend.status(NOVA, ticket.key)
        assert mine.description == words
        # An issue staff copy in Jira is read from Jira: the words, not their escaped form.
        copy = fake.add_issue([f"discord-{NOVA}", "wallet"], description=issue.description)
        (copied,) = await backend.status(NOVA, copy.key)
        assert copied.description == words
    finally:
        await backend.aclose()


async def test_control_characters_a_player_typed_reach_jira_as_a_mark_and_stay_in_the_record(
    fake, db
) -> None:
    """Jira keeps text fields as XML 1.0 and refuses an issue with a NUL or another control
    character in it: the grievance would wait for ever. Jira gets U+FFFD in their place (the fake
    refuses them as Jira does); the local record keeps the words as the player gave them."""
    words = "my gems\x00 vanished\x07 after the\x1b patch\x7f\x0b\tagain\r\nplease"
    backend = await open_backend(fake, db)
    try:
        ticket = await backend.register(NOVA, "wallet", words)
        assert await backend.push_pending() == 1
        (issue,) = fake.issues.values()
        shown = "my gems\ufffd vanished\ufffd after the\ufffd patch\ufffd\ufffd\tagain\r\nplease"
        assert issue.description == shown
        assert (
            issue.summary
            == "Wallet: my gems\ufffd vanished\ufffd after the\ufffd patch\ufffd\ufffd again please"
        )
    finally:
        await backend.aclose()
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT description FROM grievances WHERE local_key = ?", (ticket.key,))
        assert kept.fetchone()[0] == words


async def test_status_categories_become_plain_words(fake, db) -> None:
    backend = await open_backend(fake, db)
    try:
        await backend.register(NOVA, "other", "x")
        await backend.push_pending()
        seen = []
        for status, category in [
            ("To Do", None),
            ("In Progress", None),
            ("Waiting for support", "indeterminate"),
            ("Done", None),
            ("Won't fix", "done"),
            ("Reopened", "new"),
        ]:
            fake.set_status("GRV-101", status, category)
            (ticket,) = await backend.status(NOVA, "GRV-101")
            seen.append(ticket.status)
    finally:
        await backend.aclose()
    # A done status that turns the grievance down is no fix: never "resolved".
    assert seen == ["open", "in progress", "in progress", "resolved", "declined", "open"]
    assert status_words({"name": "Triage", "statusCategory": {"key": "undefined"}}) == "triage"


def test_summaries_are_one_short_line() -> None:
    long = "word " * 100
    assert summary_for("reward_points", "missing\npoints\tagain") == "Reward points: missing points again"
    assert len(summary_for("other", long)) <= 120 and "\n" not in summary_for("other", long)
    assert set(CATEGORIES) >= {"wallet", "other"}
    # A description in a script without spaces is one long word, cut where the summary is full:
    # not inside a flag (its first letter alone shows as a boxed "F" in Jira) nor an accent.
    for cluster in ("🇫🇷", "e\u0301"):
        unspaced = "課金" * 55 + cluster + "課金" * 20  # "Other: " and 110 characters, then it
        assert summary_for("other", unspaced) == "Other: " + "課金" * 55 + " …", cluster


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://studio.atlassian.net", True),
        ("http://bot:token@10.0.0.5:8080/jira", True),
        ("ftp://studio.atlassian.net", True),
        ("studio.atlassian.net", True),
        ("https://studio.atlassian.net", False),
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
    ],
)
def test_a_jira_url_that_would_send_the_token_in_clear_is_a_config_error(
    tmp_path: Path, url: str, refused: bool
) -> None:
    env = {"VOXDESK_TOOLS_GRIEVANCES": "jira", "VOXDESK_JIRA_URL": url, "JIRA_EMAIL": "a@b.c"}
    env["JIRA_API_TOKEN"] = "t0ken"
    if not refused:
        assert make_settings(tmp_path, **env).jira.url == url
        return
    with pytest.raises(ConfigError) as raised:
        make_settings(tmp_path, **env)
    message = str(raised.value)
    assert message.startswith("jira.url = ") and "is not https" in message
    assert "token" not in message.replace("API_TOKEN", "")  # no credentials from the URL either


# ---- check ----------------------------------------------------------------------------------------


async def test_check_says_who_and_what_is_pending(fake, db) -> None:
    backend = await open_backend(fake, db)
    try:
        await backend.register(NOVA, "other", "x")
        line = await backend.check()
    finally:
        await backend.aclose()
    assert line == f"Jira {fake.url}: JIRA_EMAIL and JIRA_API_TOKEN accepted, project GRV, 1 pending"


async def test_check_with_jira_counts_the_grievances_waiting_in_the_spool(fake, db) -> None:
    # Refused by the outbox's database, they are not pending either: a line counting the pending
    # alone would count none of them.
    from bot.tools.grievance_spool import GrievanceSpool

    spool = GrievanceSpool.beside(db)
    spool.keep(user_id=NOVA, category="other", description="x", at="2026-12-06T04:00:00Z", state="pending")
    backend = await JiraGrievances.open(jira_settings(fake), fake.email, fake.token, db, read_only=True)
    try:
        line = await backend.check()
    finally:
        await backend.aclose()
    assert line == (
        f"Jira {fake.url}: JIRA_EMAIL and JIRA_API_TOKEN accepted, project GRV, no outbox: {db} does"
        f" not exist; grievance(s) the database refused wait unfiled: 1 in {spool.path}"
    )


@pytest.mark.parametrize("found", ["no file", "a file of no bytes"])
async def test_check_with_jira_says_a_missing_outbox_is_missing_not_empty(fake, db, found) -> None:
    # "0 pending" read as an outbox that had pushed everything: with storage.dir set wrong, or the
    # database lost, what waited there for Jira is gone, and the bot starts a new one.
    if found == "a file of no bytes":
        db.touch()
    backend = await JiraGrievances.open(jira_settings(fake), fake.email, fake.token, db, read_only=True)
    try:
        line = await backend.check()
    finally:
        await backend.aclose()
    why = "is a file of no bytes" if found == "a file of no bytes" else "does not exist"
    assert (
        line == f"Jira {fake.url}: JIRA_EMAIL and JIRA_API_TOKEN accepted, project GRV, no outbox: {db} {why}"
    )
    assert db.exists() == (found == "a file of no bytes")


async def test_check_with_jira_only_reads_the_outbox(fake, tmp_path: Path) -> None:
    # The outbox of an older voxdesk: `check` neither migrates it nor gives it a store id.
    from bot.health import check_all
    from tests.test_cli import _files
    from tests.test_upgrades import restore

    storage = tmp_path / "var"
    restore("aa6a9dc", storage)
    before = _files(storage)
    results = {r.service: r for r in await check_all(make_settings(storage, **jira_env(fake)))}
    assert results["grievances"].ok, results["grievances"].line()
    assert "JIRA_EMAIL and JIRA_API_TOKEN accepted, project GRV, 0 pending" in results["grievances"].detail
    assert _files(storage) == before


async def test_check_names_the_credentials_when_jira_refuses_them(fake, settings) -> None:
    wrong = make_settings(settings.storage_dir, **jira_env(fake, token="not-the-token"))
    backend = await build_grievance_backend(wrong)
    try:
        with pytest.raises(TrackerError) as refused:
            await backend.check()
    finally:
        await backend.aclose()
    assert str(refused.value) == "Jira refused the credentials (401): check JIRA_EMAIL and JIRA_API_TOKEN"
    assert "not-the-token" not in str(refused.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"project": "NOPE"},
            "Jira has no project NOPE this account can see (404): check jira.project, and that the"
            " account has the Browse projects permission there",
        ),
        (
            {"issue_type": "Epic"},
            "Jira project GRV has no issue type 'Epic': set jira.issue_type to one of Task (10001),"
            " Bug (10002)",
        ),
    ],
)
async def test_check_names_a_wrong_project_or_issue_type(fake, db, changes, expected) -> None:
    backend = await open_backend(fake, db, **changes)
    try:
        with pytest.raises(TrackerError) as failed:
            await backend.check()
    finally:
        await backend.aclose()
    assert str(failed.value) == expected


@pytest.mark.parametrize("issue_type", ["Aufgabe", "10001", "Task"])
async def test_a_site_in_another_language_takes_grievances_as_the_type_check_accepts(
    fake, db, issue_type: str
) -> None:
    # A German site lists its project's Task as "Aufgabe", and Jira reads a create's type name
    # in its untranslated form alone: check passed "Aufgabe" and Jira refused every filing of it
    # ("The issue type selected is invalid"). The default "Task", which filing took, failed check
    # until check read the untranslated name Jira gives beside the shown one. By the type's id,
    # as check finds it, each is filed.
    fake.type_names = {"Task": "Aufgabe"}
    backend = await open_backend(fake, db, issue_type=issue_type)
    try:
        assert "project GRV" in await backend.check()
        await backend.register(NOVA, "wallet", "charged twice for the pass")
        assert await backend.push_pending() == 1
        (ticket,) = await backend.status(NOVA)
    finally:
        await backend.aclose()
    (create,) = fake.requests_to("/issue", "POST")
    assert create.body["fields"]["issuetype"] == {"id": "10001"}
    assert ticket.key == "GRV-101" and fake.issues["GRV-101"].issue_type == "Task"
    assert len(fake.requests_to("/issuetypes/10001", "GET")) == 1  # check read Task's create screen


async def test_check_fails_a_type_name_filing_would_send_jira_by_name(fake, db) -> None:
    # A name the project lists neither as shown nor untranslated is refused by check, naming the
    # types as the account sees them; filing sends it as it is, for Jira to read.
    fake.type_names = {"Task": "Aufgabe"}
    fake.expect_violations()  # the create of a type Jira does not have
    backend = await open_backend(fake, db, issue_type="Story")
    try:
        with pytest.raises(TrackerError, match=r"no issue type 'Story': .* one of Aufgabe \(10001\), Bug"):
            await backend.check()
        await backend.register(NOVA, "wallet", "charged twice for the pass")
        assert await backend.push_pending() == 0
    finally:
        await backend.aclose()
    (create,) = fake.requests_to("/issue", "POST")
    assert create.body["fields"]["issuetype"] == {"name": "Story"}


async def test_a_type_removed_from_the_project_is_looked_up_again_once_it_is_back(
    fake, db, monkeypatch
) -> None:
    # The id a create looked up is kept; a refusal of it (an admin took the type out of the
    # project) asks again, so the type given back, under another id, is found.
    fake.expect_violations()  # the create of a type the project no longer has
    backend = await open_backend(fake, db, issue_type="Bug")
    try:
        await backend.register(NOVA, "wallet", "charged twice for the pass")
        assert await backend.push_pending() == 1
        await backend.register(NOVA, "other", "lag every evening since the patch")
        monkeypatch.setattr(jira_server, "ISSUE_TYPES", {"10001": "Task"})
        assert await backend.push_pending() == 0
        monkeypatch.setattr(jira_server, "ISSUE_TYPES", {"10001": "Task", "10005": "Bug"})
        await expire_claims(db)
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    sent = [c.body["fields"]["issuetype"] for c in fake.requests_to("/issue", "POST")]
    assert sent == [{"id": "10002"}, {"id": "10002"}, {"id": "10005"}]


@pytest.mark.parametrize(
    ("lacking", "named"),
    [
        ({"CREATE_ISSUES"}, "the Create Issues permission in project GRV: grant it"),
        (
            {"CREATE_ISSUES", "TRANSITION_ISSUES"},
            "the Create Issues and Transition Issues permissions in project GRV: grant them",
        ),
    ],
)
async def test_check_names_a_permission_the_account_lacks_in_the_project(fake, db, lacking, named) -> None:
    # An account that can browse the project but not create issues in it passed `check`: every
    # grievance then waited on a refusal found only at the first push. One that cannot transition
    # issues leaves each status the desk set while its grievance waited off its issue.
    fake.lacking = frozenset(lacking)
    backend = await open_backend(fake, db)
    try:
        with pytest.raises(TrackerError) as failed:
            await backend.check()
        fake.lacking = frozenset()
        line = await backend.check()
    finally:
        await backend.aclose()
    assert str(failed.value) == (
        f"the Jira account of JIRA_EMAIL lacks {named} in the project's permissions"
        " (Project settings > Access, or its permission scheme)"
    )
    assert line.endswith("project GRV, 0 pending")


async def test_check_names_what_the_create_screen_lacks_or_requires(fake, db) -> None:
    # Each would make every filing a 400: said by `check` before a player files, not found at the
    # first push. The fake refuses those pushes as Jira would.
    fake.hidden_on_create = frozenset({"labels"})
    fake.on_create = (select_field(10080, "Severity", ("Low", "High")),)
    fake.expect_violations()  # the pushes it predicts are refused
    backend = await open_backend(fake, db)
    try:
        with pytest.raises(TrackerError) as failed:
            await backend.check()
        await backend.register(NOVA, "wallet", "x")
        assert await backend.push_pending() == 0
        fake.hidden_on_create = frozenset()
        fake.on_create = (select_field(10080, "Severity", ("Low", "High"), default="Low"),)
        line = await backend.check()
    finally:
        await backend.aclose()
    assert str(failed.value) == (
        "Jira refuses every filing: on the create screen for Task in project GRV, add labels to it"
        " (voxdesk sets them on every issue); give Severity (customfield_10080) a default or make it"
        " optional (voxdesk cannot fill it)"
    )
    assert line.endswith("project GRV, 1 pending")


async def test_check_reads_the_create_screen_of_a_type_configured_by_its_id(fake, db) -> None:
    # jira.issue_type may name the type by its id, as check lists it: its create screen is read
    # as a name's is, not passed over as a type the project lacks.
    fake.on_create = (select_field(10080, "Severity", ("Low", "High")),)
    backend = await open_backend(fake, db, issue_type="10001")
    try:
        with pytest.raises(TrackerError, match=r"give Severity \(customfield_10080\) a default"):
            await backend.check()
    finally:
        await backend.aclose()


async def test_a_field_jira_requires_of_every_filing_is_said_in_one_line_and_all_wait(
    fake, db, caplog
) -> None:
    # An admin makes a field required on the create screen: Jira refuses every push alike. The
    # log said one warning per grievance, hundreds for a day's backlog; the studio needs one line,
    # and every grievance kept pending until the field is fixed.
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    fake.on_create = (select_field(10080, "Severity", ("Low", "High")),)
    fake.expect_violations()  # the pushes are refused, as Jira refuses them
    backend = await open_backend(fake, db)
    try:
        keys = [(await backend.register(NOVA, "wallet", f"charge {i} missing")).key for i in range(5)]
        assert await backend.push_pending() == 0
        keys.append((await backend.register(NOVA, "other", "lag spikes every evening")).key)
        assert await backend.push_pending() == 0  # the new one, refused alike
    finally:
        await backend.aclose()
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "5 grievances" in said[0] and "Severity is required" in said[0], said
    rows = await local_rows(db)
    assert fake.issues == {} and all(rows[k][0] == "pending" for k in keys)


async def test_a_refusal_said_before_a_restart_is_said_again_after_it(fake, db, caplog) -> None:
    # The grievances keep the refusal as their last error. A restarted bot (what an operator does
    # first about a backlog) met only refusals it had "said already", and its log told nothing of
    # why every grievance waited until a new one was filed.
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    fake.on_create = (select_field(10080, "Severity", ("Low", "High")),)
    fake.expect_violations()  # the pushes are refused, as Jira refuses them
    backend = await open_backend(fake, db)
    try:
        for i in range(3):
            await backend.register(NOVA, "wallet", f"charge {i} missing")
        assert await backend.push_pending() == 0
    finally:
        await backend.aclose()
    caplog.clear()
    await expire_claims(db)
    backend = await open_backend(fake, db)  # the next process, on the same database
    try:
        assert await backend.push_pending() == 0
        await expire_claims(db)
        assert await backend.push_pending() == 0  # its next round: said already
    finally:
        await backend.aclose()
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "3 grievances" in said[0] and "Severity is required" in said[0], said


async def test_refusals_remembered_as_said_are_only_so_many(fake, db, caplog, monkeypatch) -> None:
    # Each way Jira refused grievances was remembered as said for the life of the process: a
    # refusal naming its issue, or a create screen an admin keeps changing, one more each.
    monkeypatch.setattr(jira_grievances, "MAX_REFUSALS", 2, raising=False)
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    fake.expect_violations()  # the pushes are refused, as Jira refuses them
    backend = await open_backend(fake, db)
    try:
        await backend.register(NOVA, "wallet", "charged twice")
        for i in range(4):
            fake.on_create = (select_field(10080 + i, f"Severity {i}", ("Low", "High")),)
            assert await backend.push_pending() == 0
            await expire_claims(db)
        said, told = list(backend._refusals_said), list(backend._refusals_told)
    finally:
        await backend.aclose()
    assert len([r for r in caplog.records if "is required" in r.getMessage()]) == 4
    assert len(said) == len(told) == 2 and said == told
    assert "Severity 2 is required" in said[0] and "Severity 3 is required" in said[1], said


async def test_an_issue_type_the_project_no_longer_has_is_named_with_its_setting(fake, db, caplog) -> None:
    # An admin renames or removes the issue type jira.issue_type names: every filing is refused,
    # and the line said "The issue type selected is invalid.", naming neither the type nor the
    # setting that chose it.
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    fake.expect_violations()  # the pushes are refused, as Jira refuses them
    backend = await open_backend(fake, db, issue_type="Grievance")
    try:
        ticket = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 0
    finally:
        await backend.aclose()
    said = (
        "Jira project GRV takes no issue type 'Grievance' (400: The issue type selected is invalid.):"
        " set jira.issue_type to one it has (voxdesk check lists them)"
    )
    assert sql(db, "SELECT last_error FROM grievances WHERE local_key = ?", (ticket.key,)) == [(said,)]
    assert [r.getMessage() for r in caplog.records] == [
        f"Jira refused grievance ({ticket.key}): {said} (kept pending, tried again later)"
    ]


async def test_a_field_jira_requires_is_named_with_its_id(fake, db) -> None:
    # Jira's 400 keys each error by the field's id ({"customfield_10080": "Severity is required."});
    # the client's message keeps the words alone. Two custom fields may share a name (one per
    # team-managed project, or an app's beside an admin's): the id says which to fix.
    fake.on_create = (
        select_field(10080, "Severity", ("Low", "High")),
        select_field(10081, "Severity", ("S1", "S2"), default="S2"),
    )
    fake.expect_violations()
    backend = await open_backend(fake, db)
    try:
        ticket = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 0
    finally:
        await backend.aclose()
    ((error,),) = sql(db, "SELECT last_error FROM grievances WHERE local_key = ?", (ticket.key,))
    assert error == "Jira answered HTTP 400: Severity is required. (customfield_10080)"


def test_a_page_for_people_without_a_title_is_told_as_one_not_as_its_markup() -> None:
    response = requests.Response()
    response.status_code = 503
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response._content = b"<html><body><div class='x'>" + b"<p>down</p>" * 50 + b"</div></body></html>"
    error = explain(JIRAError(status_code=503, text=response.text, response=response), "https://jira", 15.0)
    assert str(error) == "Jira answered HTTP 503: an HTML page"


async def test_a_page_for_people_in_jiras_place_is_told_by_its_title(fake, db) -> None:
    # While a site is down or in maintenance Atlassian's edge answers with an HTML page. Its first
    # 200 characters, all markup, were the reason the log, the desk and the player's export kept.
    backend = await open_backend(fake, db)
    try:
        ticket = await backend.register(NOVA, "wallet", "charged twice")
        fake.fail("unavailable_page", times=1)
        with pytest.raises(TrackerError) as failed:
            await backend.push_pending()
    finally:
        await backend.aclose()
    said = "Jira answered HTTP 503: Atlassian Cloud Notifications - Page Unavailable"
    assert str(failed.value) == said
    assert sql(db, "SELECT last_error FROM grievances WHERE local_key = ?", (ticket.key,)) == [(said,)]


async def test_an_expired_api_token_is_refused_credentials_not_an_empty_jira(fake, db) -> None:
    # Jira Cloud answers a request with an expired or revoked API token as one made by nobody:
    # a search finds nothing, an issue "does not exist", and only X-Seraph-LoginReason says why.
    # Taken at its word, every pushed grievance a player asked after was marked gone from Jira
    # (worked on the desk from then on), and ticket news heard of no change, silently.
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.fail("token_expired")
        listed = await backend.status(NOVA)
        one = await backend.status(NOVA, filed.key)
        with pytest.raises(TrackerError) as news:
            await backend.updated_issues([NOVA], 5)
        waiting = await backend.register(NOVA, "other", "lag every evening")
        with pytest.raises(TrackerError) as push:
            await backend.push_pending()
        row = await backend.local_store.staff_get(filed.key)
    finally:
        await backend.aclose()
    for told in (listed, one):
        assert [(t.key, t.from_local_record, t.untracked) for t in told] == [("GRV-101", True, False)]
    assert row is not None and row.gone_at is None
    refused = "Jira refused the credentials (401): check JIRA_EMAIL and JIRA_API_TOKEN"
    assert (news.value.status, str(news.value)) == (401, refused)
    assert (push.value.status, str(push.value)) == (401, refused)
    assert (await local_rows(db))[waiting.key] == ("pending", None)


async def test_grievances_filed_while_the_token_is_refused_go_once_after_a_restart_with_a_new_one(
    fake, db
) -> None:
    backend = await open_backend(fake, db)
    try:
        first = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.fail("token_expired")
        waiting = [await backend.register(NOVA, "other", f"lag number {n}") for n in range(2)]
        for _ in range(2):
            with pytest.raises(TrackerError, match="refused the credentials"):
                await backend.push_pending()
            await expire_claims(db)
    finally:
        await backend.aclose()
    fake.recover()
    fake.token = "a-new-api-token"
    backend = await JiraGrievances.open(jira_settings(fake), fake.email, fake.token, db)
    try:
        assert await backend.push_pending() == 2
        assert await backend.push_pending() == 0
        (told,) = await backend.status(NOVA, first.key)
    finally:
        await backend.aclose()
    rows = await local_rows(db)
    assert [rows[g.key] for g in (first, *waiting)] == [
        ("pushed", "GRV-101"),
        ("pushed", "GRV-102"),
        ("pushed", "GRV-103"),
    ]
    assert sorted(fake.issues) == ["GRV-101", "GRV-102", "GRV-103"]
    assert not told.from_local_record and told.key == "GRV-101"


async def test_an_expired_token_a_player_meets_first_is_one_error_line(fake, db, caplog) -> None:
    # Nothing waits to be pushed, so the pusher asks Jira nothing: the players' lookups meet the
    # refused token first, and said it at WARNING, where a refused OpenAI or Azure key is an ERROR.
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.fail("token_expired")
        with caplog.at_level(logging.INFO, logger="bot.tools.jira_grievances"):
            for _ in range(3):
                (told,) = await backend.status(NOVA, filed.key)
                assert told.from_local_record
    finally:
        await backend.aclose()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [
        (
            "ERROR",
            "Jira status lookup failed, answering from the local record: Jira refused the"
            " credentials (401): check JIRA_EMAIL and JIRA_API_TOKEN",
        )
    ]


@pytest.mark.parametrize("reason", ["AUTHENTICATED_FAILED", "AUTHENTICATION_DENIED"])
def test_a_login_jira_refused_or_holds_for_a_captcha_is_refused_credentials(reason) -> None:
    # After failed logins Jira asks for a CAPTCHA first (AUTHENTICATION_DENIED), and answers as to
    # nobody meanwhile, as it does an expired token: an empty search is no empty Jira either way.
    from bot.tools.jira_tracker import JiraTracker

    response = requests.Response()
    response.status_code, response.url = 200, "https://jira.example/rest/api/3/search/jql"
    response.headers["X-Seraph-LoginReason"] = reason
    with pytest.raises(JIRAError) as refused:
        JiraTracker._refuse_failed_login(response)
    assert refused.value.status_code == 401
    response.headers["X-Seraph-LoginReason"] = "OK"
    JiraTracker._refuse_failed_login(response)


async def test_an_account_that_lost_browse_permission_holds_every_push_and_says_so(fake, db) -> None:
    # Without Browse projects Jira Cloud answers as if the project did not exist: an issue is a
    # 404, and JQL or a create naming the project a 400 "The value 'GRV' does not exist for the
    # field 'project'". Each grievance was refused as if for its own content, and retried on
    # its own; the operator read that the project does not exist.
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        fake.fail("no_browse")
        (told,) = await backend.status(NOVA, filed.key)
        waiting = await backend.register(NOVA, "other", "lag every evening")
        with pytest.raises(TrackerError) as push:
            await backend.push_pending()
        with pytest.raises(TrackerError) as news:
            await backend.updated_issues([NOVA], 5)
        row = await backend.local_store.staff_get(filed.key)
    finally:
        await backend.aclose()
    assert (told.key, told.from_local_record, told.untracked) == ("GRV-101", True, False)
    assert row is not None and row.gone_at is None
    assert not push.value.row_only and str(push.value) == str(news.value)
    assert str(push.value) == (
        "Jira shows this account no project GRV (400): check jira.project, and that the account"
        " has the Browse projects permission there"
    )
    assert (await local_rows(db))[waiting.key] == ("pending", None)


HIDDEN = (
    "Jira hides from this account the issues it files in project GRV ({key} answers 404 right"
    " after its create): an issue security level the account is not in, so their statuses and"
    " ticket news go unread; add the account (or Reporter) to the level issues get there by default"
)


async def test_issues_security_hides_from_the_account_are_said_not_taken_as_deleted(fake, db, caplog) -> None:
    # An issue security scheme whose default level leaves the bot's account out: Jira Cloud makes
    # each issue (201), then hides it from the account, a search leaving it out with a 200 and its
    # key answering 404. Each pushed grievance a player asked after was marked gone from Jira, as if
    # staff had deleted its issue, at INFO; ticket news heard nothing, and `check` passed.
    fake.secure_new = True
    backend = await open_backend(fake, db)
    try:
        with caplog.at_level(logging.INFO):
            filed = await backend.register(NOVA, "wallet", "charged twice")
            await backend.register(NOVA, "other", "lag every evening")
            assert await backend.push_pending() == 2
            (told,) = await backend.status(NOVA, filed.key)
            listed = await backend.status(NOVA)
        row = await backend.local_store.staff_get(filed.key)
    finally:
        await backend.aclose()
    checking = await JiraGrievances.open(jira_settings(fake), fake.email, fake.token, db, read_only=True)
    try:
        with pytest.raises(TrackerError) as checked:
            await checking.check()
    finally:
        await checking.aclose()
    assert (await local_rows(db))[filed.key] == ("pushed", "GRV-101")
    assert len(fake.requests_to("/issue", "POST")) == 2
    assert row is not None and row.gone_at is None
    assert (told.key, told.from_local_record, told.untracked) == ("GRV-101", True, False)
    assert all(t.from_local_record and not t.untracked for t in listed)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [("ERROR", HIDDEN.format(key="GRV-101"))]
    assert str(checked.value) == HIDDEN.format(key="GRV-102")  # the newest: still hidden


async def test_a_player_asking_after_a_hidden_ticket_hears_it_is_filed_not_unreachable(
    fake, db, caplog
) -> None:
    # A security level hides the bot's own issues from it: a player asking after theirs heard "the
    # ticket system is unreachable", and after a restart staff heard nothing of why.
    fake.secure_new = True
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    caplog.clear()
    backend = await open_backend(fake, db)
    tools = Toolbox(build_tools(None, None, backend))  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO):
            asks = [
                await tools.run(
                    ToolContext(user_id=NOVA, private=True),
                    ToolCall(id=str(n), name="get_grievance_status", arguments=arguments),
                )
                for n, arguments in enumerate([{"ticket_key": "GRV-101"}, {}, {"ticket_key": filed.key}])
            ]
    finally:
        await backend.aclose()
    assert all(a.ok for a in asks), [a.result for a in asks]
    notes = [t.get("note") for a in asks for t in a.result["tickets"]]
    assert notes == [say.HIDDEN_NOTE] * 3
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [("ERROR", HIDDEN.format(key="GRV-101"))]


async def test_issues_jira_shows_the_account_again_clear_what_check_says(fake, db) -> None:
    fake.secure_new = True
    backend = await open_backend(fake, db)
    try:
        await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.push_pending() == 1
        with pytest.raises(TrackerError) as checked:
            await backend.check()
        fake.secure_new = False
        await backend.register(NOVA, "other", "lag every evening")
        assert await backend.push_pending() == 1
        line = await backend.check()
    finally:
        await backend.aclose()
    assert str(checked.value) == HIDDEN.format(key="GRV-101")
    assert line.endswith("project GRV, 0 pending")


async def test_the_account_let_into_the_level_is_not_told_hidden_by_what_was_kept(fake, db, caplog) -> None:
    # The admin adds the account to the level: Jira shows it every issue again. With no grievance
    # filed since, `check` went on failing with the kept key, and an issue staff then deleted was
    # answered from the local record for ever rather than taken for deleted. A level hiding them
    # again later is said again.
    fake.secure_new = True
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        await backend.register(NOVA, "other", "lag every evening")
        assert await backend.push_pending() == 2  # GRV-102 kept as hidden
        fake.secure_new = False
        for issue in fake.issues.values():
            issue.secured = False
        await backend.check()
        fake.delete("GRV-101")
        (told,) = await backend.status(NOVA, filed.key)
        fake.secure_new = True
        await backend.register(NOVA, "other", "lag every morning")
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    assert (told.from_local_record, told.untracked) == (False, True)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said == [HIDDEN.format(key="GRV-101"), HIDDEN.format(key="GRV-103")]


async def test_a_hidden_issue_given_the_desks_status_is_filed_once(fake, db) -> None:
    # Its move to the status staff set while it waited is a 404: the grievance stayed pending, and
    # each round's search by its key label, which Jira leaves the hidden issue out of, made another.
    fake.secure_new = True
    backend = await open_backend(fake, db)
    try:
        held = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.local_store.set_status_by_staff(held.key, "in progress", by="staff")
        assert await backend.push_pending() == 1
        await expire_claims(db)
        assert await backend.push_pending() == 0
    finally:
        await backend.aclose()
    assert len(fake.requests_to("/issue", "POST")) == 1
    assert (await local_rows(db))[held.key] == ("pushed", "GRV-101")


async def test_check_names_browse_projects_to_an_account_that_lacks_it(fake, db) -> None:
    # Jira Cloud answers the project as if it did not exist: `check` sent the operator to
    # jira.project alone, while the pushes' own line names the permission.
    fake.fail("no_browse")
    backend = await open_backend(fake, db)
    try:
        with pytest.raises(TrackerError) as failed:
            await backend.check()
    finally:
        await backend.aclose()
    assert str(failed.value) == (
        "Jira has no project GRV this account can see (404): check jira.project, and that the"
        " account has the Browse projects permission there"
    )


@pytest.mark.parametrize("failure", ["500", "429", "hang"])
async def test_a_hidden_issue_whose_look_up_fails_is_still_filed_once(fake, db, failure) -> None:
    # The look-up after the create fails (Jira busy, rate limited, slow): the issue was taken as
    # shown, its move to the desk's status was a 404, the grievance stayed pending, and the next
    # round's search by its label, which Jira leaves the hidden issue out of, made another.
    fake.secure_new = True
    fake.retry_after = "1"
    backend = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT)
    try:
        held = await backend.register(NOVA, "wallet", "charged twice")
        assert await backend.local_store.set_status_by_staff(held.key, "in progress", by="staff")
        # serverInfo, the search by its label, the project, the create: then the look-up fails.
        fake.fail(failure, times=1, after=4)
        with contextlib.suppress(TrackerError):
            await backend.push_pending()
        fake.recover()
        for _ in range(2):
            await expire_claims(db)
            rate_limit_ends(backend)
            with contextlib.suppress(TrackerError):
                await backend.push_pending()
    finally:
        await backend.aclose()
    assert len(fake.requests_to("/issue", "POST")) == 1
    assert (await local_rows(db))[held.key] == ("pushed", "GRV-101")


async def test_check_when_jira_is_down_or_slow(fake, db) -> None:
    backend = await open_backend(fake, db, timeout_seconds=0.3)
    try:
        fake.fail("hang")
        with pytest.raises(TrackerError, match=r"did not answer within 0\.3 s"):
            await backend.check()
        fake.recover()
        await fake.stop()
        with pytest.raises(TrackerError) as refused:
            await backend.check()
    finally:
        await backend.aclose()
    # The first request of a check is the one a wrong address fails: the line names the setting.
    assert re.fullmatch(
        r"cannot connect to Jira at http://127\.0\.0\.1:\d+: connection refused or host unknown:"
        r" check jira\.url",
        str(refused.value),
    ), str(refused.value)


async def test_check_names_jira_url_when_it_answers_404_as_no_jira_does(fake, db) -> None:
    # A site name mistyped, or an address with a path no Jira serves: "Jira answered HTTP 404"
    # left the operator to guess it was the address.
    fake.expect_violations()  # the REST API asked for under a path it does not serve, on purpose
    backend = await open_backend(fake, db, url=f"{fake.url}/wiki")
    try:
        with pytest.raises(TrackerError) as refused:
            await backend.check()
    finally:
        await backend.aclose()
    assert str(refused.value).startswith("Jira answered HTTP 404: ")
    assert str(refused.value).endswith(": check jira.url")


DID_NOT_ANSWER = ": Jira did not answer; the bot keeps trying, and files what waits once it does"


@pytest.mark.parametrize("failure", ["500", "503"])
async def test_check_says_a_jira_answering_5xx_at_start_did_not_answer(fake, db, failure) -> None:
    # Jira down a while as the bot starts: the start-up line must not send the operator to a
    # jira.url that is right, and says the pusher goes on trying.
    fake.fail(failure)
    backend = await open_backend(fake, db)
    try:
        with pytest.raises(TrackerError) as refused:
            await backend.check()
    finally:
        await backend.aclose()
    assert str(refused.value).startswith(f"Jira answered HTTP {failure}")
    assert str(refused.value).endswith(DID_NOT_ANSWER), str(refused.value)


async def test_check_says_a_jira_dropping_the_connection_did_not_answer(fake, db) -> None:
    # A connection made and reset before any answer: an address that reached something. Its
    # reason starts "cannot connect", which alone was taken for a wrong jira.url.
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.transport.abort()  # a reset, not an answer

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = await open_backend(fake, db, url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TrackerError) as refused:
            await backend.check()
    finally:
        await backend.aclose()
        server.close()
        await server.wait_closed()
    assert re.fullmatch(
        rf"cannot connect to Jira at http://127\.0\.0\.1:{port}: connection lost{re.escape(DID_NOT_ANSWER)}",
        str(refused.value),
    ), str(refused.value)


async def test_check_names_jira_url_when_its_scheme_does_not_match_the_server(fake, db) -> None:
    # https:// to a port that speaks plain HTTP: the TLS handshake fails before any request goes,
    # an address to mend, not a Jira down a while. requests' SSLError is a ConnectionError.
    backend = await open_backend(fake, db, url=fake.url.replace("http://", "https://"))
    try:
        with pytest.raises(TrackerError) as refused:
            await backend.check()
    finally:
        await backend.aclose()
    assert re.fullmatch(
        r"cannot connect to Jira at https://127\.0\.0\.1:\d+:"
        r" TLS failed \(WRONG_VERSION_NUMBER\): check jira\.url",
        str(refused.value),
    ), str(refused.value)


# ---- the fake itself, through the real client ------------------------------------------------------


async def test_fake_pages_the_enhanced_search_and_refuses_what_cloud_refuses(fake) -> None:
    for n in range(5):
        fake.add_issue([f"discord-{NOVA}"], summary=f"issue {n}")
    jql = f'project = "GRV" AND labels = "discord-{NOVA}" ORDER BY created DESC'
    fake.expect_violations()  # the removed search and the foreign JQL, on purpose

    def use_the_client() -> tuple[list[str], int, int | None, int | None]:
        client = JIRA(server=fake.url, basic_auth=(fake.email, fake.token), max_retries=0)
        try:
            keys: list[str] = []
            token = None
            while True:
                page = client.enhanced_search_issues(jql, nextPageToken=token, maxResults=2, json_result=True)
                keys += [i["key"] for i in page["issues"]]  # type: ignore[index]
                token = page.get("nextPageToken")  # type: ignore[union-attr]
                if not token:
                    break
            removed = requests.get(
                f"{fake.url}/rest/api/2/search", params={"jql": jql}, auth=(fake.email, fake.token), timeout=5
            ).status_code
            statuses: list[int | None] = []
            for attempt in (
                lambda: client.enhanced_search_issues("project = GRV OR 1=1", maxResults=1),
                lambda: JIRA(server=fake.url, basic_auth=(fake.email, "wrong"), max_retries=0),
            ):
                try:
                    attempt()
                except JIRAError as exc:
                    statuses.append(exc.status_code)
            return keys, removed, *statuses  # type: ignore[return-value]
        finally:
            client.close()

    keys, removed, bad_jql, unauthorised = await asyncio.to_thread(use_the_client)
    assert keys == [f"GRV-{n}" for n in range(105, 100, -1)]
    assert (removed, bad_jql, unauthorised) == (410, 400, 401)
    assert fake.bad_jql == ["project = GRV OR 1=1"]
    removed_reason, jql_reason = fake.violations
    assert "has been removed" in removed_reason and "OR 1=1" in jql_reason


async def test_fake_reads_paging_and_fields_as_cloud_does(fake) -> None:
    """A junk or negative startAt or maxResults is Jira's 400 (not a 500 of the fake's own); a
    search page holds at most 100 issues with fields beyond id and key, 5000 with those alone;
    and a search naming no fields gives each issue's id alone."""
    for n in range(120):
        fake.add_issue([f"discord-{NOVA}"], summary=f"issue {n}")
    jql = f'project = "GRV" AND labels = "discord-{NOVA}"'
    fake.expect_violations()  # the junk paging, on purpose
    auth = (fake.email, fake.token)

    def ask() -> dict[str, Any]:
        def get(path: str, **params: str) -> requests.Response:
            return requests.get(f"{fake.url}/rest/api/3/{path}", params=params, auth=auth, timeout=5)

        meta = "issue/createmeta/GRV/issuetypes/10001"
        return {
            "meta": [get(meta, **p).status_code for p in ({"startAt": "x"}, {"maxResults": "-1"}, {})],
            "search": [get("search/jql", jql=jql, maxResults=m).status_code for m in ("ten", "-5", "0")],
            "fields": len(get("search/jql", jql=jql, fields="summary", maxResults="1000").json()["issues"]),
            "keys": len(get("search/jql", jql=jql, fields="key", maxResults="1000").json()["issues"]),
            "bare": get("search/jql", jql=jql, maxResults="1").json()["issues"],
        }

    got = await asyncio.to_thread(ask)
    assert got["meta"] == [400, 400, 200] and got["search"] == [400, 400, 400]
    assert (got["fields"], got["keys"]) == (100, 120)
    assert got["bare"] == [{"id": next(iter(fake.issues.values())).id}]


async def test_ticket_news_reads_every_page_of_a_players_updated_issues(fake, db) -> None:
    """Jira pages a search of full issues by 100 at most, whatever maxResults asks: a reader of
    one page would miss the rest of the news."""
    for n in range(130):
        fake.add_issue([f"discord-{NOVA}"], summary=f"issue {n}")
    backend = await open_backend(fake, db)
    try:
        found = await asyncio.to_thread(backend._tracker.updated_for_users, [NOVA], 10)
    finally:
        await backend.aclose()
    assert len({i.key for i in found}) == 130


async def test_fake_moves_an_issue_only_by_a_transition_its_workflow_offers(fake) -> None:
    issue = fake.add_issue([f"discord-{NOVA}"])
    fake.expect_violations()  # the transition to the status it is in, on purpose

    def use_the_client() -> tuple[list[str], str, int | None]:
        client = JIRA(server=fake.url, basic_auth=(fake.email, fake.token), max_retries=0)
        try:
            offered = [t["to"]["statusCategory"]["key"] for t in client.transitions(issue.key)]
            client.transition_issue(issue.key, "Done")  # by name, as the client finds its id
            status = client.issue(issue.key).fields.status.name
            try:
                client.transition_issue(issue.key, "31")  # Done again: not offered from Done
                refused = None
            except JIRAError as exc:
                refused = exc.status_code
            return offered, status, refused
        finally:
            client.close()

    offered, status, refused = await asyncio.to_thread(use_the_client)
    assert offered == ["indeterminate", "done"] and status == "Done" and refused == 400
    assert fake.transitioned == [(issue.key, "Done")] and issue.updated > issue.created
    assert len(fake.violations) == 1 and "not offered from Done" in fake.violations[0]


async def test_a_wrong_jira_url_is_unreachable_not_not_found(fake, db) -> None:
    # Every path under a wrong jira.url answers 404: that is "Jira unreachable", never "no such
    # ticket", so status falls back to the local record and the pusher backs off.
    fake.expect_violations()
    backend = await JiraGrievances.open(
        jira_settings(fake, url=f"{fake.url}/not-jira"), fake.email, fake.token, db
    )
    try:
        ticket = await backend.register(NOVA, "wallet", "double charge")
        with pytest.raises(TrackerError):
            await backend.push_pending()
        (listed,) = await backend.status(NOVA)
        (one,) = await backend.status(NOVA, ticket.key)
        with pytest.raises(ToolError, match="unreachable"):  # a Jira key needs Jira: not "not found"
            await backend.status(NOVA, "GRV-101")
    finally:
        await backend.aclose()
    assert listed.from_local_record and listed.key == ticket.key
    assert one.key == ticket.key


async def test_a_grievance_jira_refuses_is_retried_ever_more_rarely_and_holds_up_nothing(fake, db) -> None:
    backend = await open_backend(fake, db, push_interval_seconds=60.0, max_backoff_seconds=600.0)
    try:
        refused = await backend.register(NOVA, "wallet", "refused once")
        other = await backend.register(NOVA, "other", "goes through")
        fake.fail("reject_create", times=1)
        before = time.time()
        assert await backend.push_pending() == 1  # the refusal does not stop the round
        rows = await local_rows(db)
        assert rows[refused.key] == ("pending", None) and rows[other.key][0] == "pushed"
        due = await next_try(db, refused.key)
        assert before + 60 <= due <= time.time() + 60  # first refusal: one push interval
        assert await backend.push_pending() == 0 and creates(fake) == 2  # not retried before then
        await expire_claims(db)
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    assert (await local_rows(db))[refused.key][0] == "pushed" and creates(fake) == 3


async def test_a_lapsed_claim_cannot_be_renewed_or_overwritten_by_its_old_holder(db) -> None:
    # Pusher A's claim ran out while its find was slow; pusher B claimed the row. A must not
    # create (renew fails), and A's late failure must not undo B's claim.
    store = await LocalGrievanceStore.open(db, initial_state="pending")
    try:
        key = (await store.register(NOVA, "wallet", "slow find")).local_key
        a_token = time.time() + 0.05
        assert await store.claim(key, a_token)
        await asyncio.sleep(0.1)
        b_token = time.time() + 60
        assert await store.claim(key, b_token)  # A's claim had lapsed
        assert not await store.renew(key, a_token, time.time() + 60)
        await store.record_attempt(key, "A timed out", None, a_token)
        assert await next_try(db, key) == b_token and not await store.claim(key, time.time() + 60)
        assert await store.renew(key, b_token, b_token + 1)
    finally:
        await store.aclose()


@pytest.mark.parametrize("left", ["refusal's retry", "dead pusher's claim"])
async def test_a_grievance_due_before_the_clock_was_set_back_waits_no_longer_than_a_push_can(
    fake, db, monkeypatch, left: str
) -> None:
    # Its retry (or the claim of a pusher that died mid-create) was set by a fast clock that NTP
    # then set back an hour: the row read as due an hour off, and the player's grievance reached
    # staff an hour late.
    from bot.tools import grievance_store
    from tests.test_discord_voice import HostClock

    clock = HostClock()
    for module in (jira_grievances, grievance_store):
        monkeypatch.setattr(module, "time", clock)
    backend = await open_backend(fake, db, push_interval_seconds=60.0, max_backoff_seconds=600.0)
    # Nothing the pusher sets lies further off: its claim's timeouts, Jira's search lag and the
    # longest backoff together.
    longest = 3 * TIMEOUT + 0.0 + 600.0
    try:
        ticket = await backend.register(NOVA, "wallet", "charged twice for the season pass")
        if left == "refusal's retry":
            fake.fail("reject_create", times=1)
            assert await backend.push_pending() == 0
        else:
            assert await backend.local_store.claim(ticket.key, clock.time() + 2 * TIMEOUT + 600.0)
        clock.back = 3600.0
        assert await backend.push_pending() == 0  # what it waits for may still be under way
        clock.back -= longest + 1.0
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    assert (await local_rows(db))[ticket.key][0] == "pushed"
    assert len(fake.issues) == 1


async def test_a_create_under_way_as_the_clock_is_set_back_is_not_made_again_by_another_pusher(
    fake, db, monkeypatch
) -> None:
    # The claim that reads as set before a step may be a live pusher's, its create still in
    # Jira's hands: another pusher on the database finds no issue of its label yet, and taking
    # the row at once would make a second.
    from bot.tools import grievance_store
    from tests.test_discord_voice import HostClock

    clock = HostClock()
    for module in (jira_grievances, grievance_store):
        monkeypatch.setattr(module, "time", clock)
    fake.fail("hang_then_create", times=1)
    one = await open_backend(fake, db, timeout_seconds=10.0, max_backoff_seconds=60.0)
    two = await open_backend(fake, db, max_backoff_seconds=60.0)
    try:
        ticket = await one.register(NOVA, "wallet", "charged twice for the season pass")
        pushing = asyncio.create_task(one.push_pending())
        await eventually(lambda: creates(fake) == 1)
        clock.back = 3600.0
        assert await two.push_pending() == 0
        fake.release()  # Jira answers the first create
        assert await pushing == 1
    finally:
        await one.aclose()
        await two.aclose()
    assert creates(fake) == 1 and len(fake.issues) == 1
    assert (await local_rows(db))[ticket.key] == ("pushed", "GRV-101")


async def test_a_key_told_at_filing_that_is_also_a_jira_key_of_theirs_finds_both(fake, db) -> None:
    """A real Jira project numbers from 1, like the local store: the GRV-2 told at filing may be
    another of the player's tickets' Jira key. The player hears both, never only the other."""
    fake.first_number = 2  # local GRV-1 becomes Jira GRV-2, local GRV-2 becomes GRV-3
    backend = await open_backend(fake, db)
    try:
        first = await backend.register(NOVA, "wallet", "wallet empty")
        second = await backend.register(NOVA, "other", "cheater in match five")
        assert (first.key, second.key) == ("GRV-1", "GRV-2")
        assert await backend.push_pending() == 2
        asked = await backend.status(NOVA, "GRV-2")
        assert sorted((t.key, t.description) for t in asked) == [
            ("GRV-2", "wallet empty"),
            ("GRV-3", "cheater in match five"),
        ]
        assert [t.description for t in await backend.status(NOVA, "GRV-3")] == ["cheater in match five"]
        assert await backend.status(BLAZE, "GRV-2") == []
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    "odd",
    [
        {"status": "Done"},  # a bare name where Jira sends an object
        {"status": {"name": "Done", "statusCategory": "done"}},
        {"labels": [{"name": f"discord-{NOVA}"}]},
        {"created": 1738317600},
    ],
)
async def test_an_answer_of_an_unexpected_shape_is_a_tracker_error_not_a_crash(
    fake, db, odd: dict[str, object]
) -> None:
    import dataclasses

    from tests.fakes.jira_server import FakeIssue

    class OddIssue(FakeIssue):
        def json(self, base: str, wanted: set[str] | None = None) -> dict[str, Any]:
            raw = super().json(base, wanted)
            raw["fields"].update(odd)
            return raw

    backend = await open_backend(fake, db)
    tools = Toolbox(build_tools(None, None, backend))  # type: ignore[arg-type]
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice for the battle pass")
        await backend.push_pending()
        (issue,) = fake.issues.values()
        fake.issues[issue.key] = OddIssue(**dataclasses.asdict(issue))
        with pytest.raises(TrackerError, match="unexpected shape"):
            await asyncio.to_thread(backend._tracker.get_for_user, issue.key, NOVA)
        one = await tools.run(
            ToolContext(user_id=NOVA, private=True),
            ToolCall(id="1", name="get_grievance_status", arguments={"ticket_key": issue.key}),
        )
        listed = await backend.status(NOVA)
    finally:
        await backend.aclose()
    assert one.ok, one.result
    assert [(t["ticket_key"], t["summary"]) for t in one.result["tickets"]] == [
        (issue.key, "charged twice for the battle pass")
    ]
    assert "unreachable" in one.result["tickets"][0]["note"]
    assert [(t.local_key, t.from_local_record) for t in listed] == [(filed.local_key, True)]


async def test_a_complaint_filed_as_a_shared_player_stays_local_and_its_filers(fake, db) -> None:

    backend = await open_backend(fake, db)
    tools = Toolbox(build_tools(None, None, backend))  # type: ignore[arg-type]

    def visitor(session: str) -> ToolContext:
        return ToolContext(user_id=NOVA, platform="web", grievance_owner=f"web:{session}:{NOVA}")

    complaint = {"category": "wallet", "description": "card 4242 charged twice"}
    try:
        filed = await tools.run(
            visitor("a"), ToolCall(id="1", name="register_grievance", arguments=complaint)
        )
        assert filed.ok, filed.result
        assert await backend.push_pending() == 0
        listed = {
            session: (
                await tools.run(visitor(session), ToolCall(id="2", name="get_grievance_status", arguments={}))
            )
            for session in ("a", "b")
        }
        as_nova = await backend.status(NOVA)
    finally:
        await backend.aclose()
    assert creates(fake) == 0 and fake.issues == {}
    assert (await local_rows(db))[filed.result["ticket_key"]] == ("local_only", None)
    assert [t["ticket_key"] for t in listed["a"].result["tickets"]] == [filed.result["ticket_key"]]
    assert listed["b"].result["tickets"] == [] and as_nova == []


async def test_issues_under_a_changed_project_key_are_each_found_once_by_their_label(fake, db) -> None:
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        await backend.push_pending()
        assert [t.key for t in await backend.status(NOVA)] == ["GRV-101"]
    finally:
        await backend.aclose()
    fake.rename_project("SUP")  # staff change the project's key, and jira.project with it
    fake.set_status("SUP-101", "Done")
    backend = await open_backend(fake, db, project="SUP")
    try:
        listed = await backend.status(NOVA)
        by_local_key = await backend.status(NOVA, filed.key)
        by_old_key = await backend.status(NOVA, "GRV-101")  # Jira answers it with SUP-101
        row = await backend.local_store.staff_get(filed.key)
    finally:
        await backend.aclose()
    for found in (listed, by_local_key, by_old_key):
        assert [(t.key, t.local_key, t.status) for t in found] == [("SUP-101", "GRV-1", "resolved")]
    assert row is not None and (row.remote_key, row.status) == ("SUP-101", "resolved")
    assert row.gone_at is None and not any(t.untracked for t in listed)


async def test_an_issue_deleted_or_moved_out_of_the_project_is_the_local_records_until_it_returns(
    fake, db
) -> None:
    backend = await open_backend(fake, db)
    tools = Toolbox(build_tools(None, None, backend))  # type: ignore[arg-type]
    try:
        moved = await backend.register(NOVA, "wallet", "charged twice")
        deleted = await backend.register(NOVA, "other", "lag every evening")
        await backend.push_pending()  # GRV-101, GRV-102
        escalated = fake.move("GRV-101", "ENG")  # to engineering's project, and resolved there
        fake.set_status(escalated.key, "Done")
        fake.delete("GRV-102")
        listed = await tools.run(
            ToolContext(user_id=NOVA), ToolCall(id="1", name="get_grievance_status", arguments={})
        )
        asked = len(fake.received)
        one = await backend.status(NOVA, "GRV-101")
        asked_again = len(fake.received) - asked
        rows = [await backend.local_store.staff_get(g.key) for g in (moved, deleted)]
        fake.move(escalated.key, "GRV")  # staff move it back: GRV-103
        back = await backend.status(NOVA)
        row_back = await backend.local_store.staff_get(moved.key)
    finally:
        await backend.aclose()
    assert sorted((t["ticket_key"], t["status"], t.get("note")) for t in listed.result["tickets"]) == [
        ("GRV-101", "open", "from our local record; the ticket system no longer has this ticket"),
        ("GRV-102", "open", "from our local record; the ticket system no longer has this ticket"),
    ]
    assert [(t.key, t.untracked) for t in one] == [("GRV-101", True)]
    assert asked_again == 0  # known to be gone: Jira is not asked again
    assert all(r is not None and r.gone_at is not None and r.remote_key for r in rows)
    assert sorted((t.key, t.status, t.untracked) for t in back) == [
        ("GRV-102", "open", True),
        ("GRV-103", "resolved", False),
    ]
    assert row_back is not None and (row_back.remote_key, row_back.gone_at) == ("GRV-103", None)


async def test_a_copy_staff_make_of_an_issue_is_an_issue_of_its_own(fake, db) -> None:
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        await backend.push_pending()
        # Jira's clone keeps the labels, the push's key label included: GRV-102
        copy = fake.add_issue(list(fake.issues["GRV-101"].labels), "Copy of the wallet complaint")
        fake.set_status(copy.key, "Done")
        listed = await backend.status(NOVA)
        by_copy = await backend.status(NOVA, copy.key)
        row = await backend.local_store.staff_get(filed.key)
    finally:
        await backend.aclose()
    assert sorted((t.key, t.status) for t in listed) == [("GRV-101", "open"), ("GRV-102", "resolved")]
    assert [(t.key, t.status) for t in by_copy] == [("GRV-102", "resolved")]
    assert row is not None and (row.remote_key, row.status) == ("GRV-101", "open")


async def test_an_issue_staff_labelled_for_another_player_too_is_told_to_neither(fake, db) -> None:
    # Staff merged two players' complaints into Nova's pushed issue (Blaze's label added) and
    # resolved it: Nova hears her local record, not the status of an issue Blaze shares.
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        await backend.push_pending()  # GRV-101
        fake.issues["GRV-101"].labels.append(f"discord-{BLAZE}")
        fake.set_status("GRV-101", "Done")
        (told,) = await backend.status(NOVA, filed.key)
        row = await backend.local_store.staff_get(filed.key)
    finally:
        await backend.aclose()
    assert (told.key, told.status, told.untracked) == ("GRV-101", "open", True)
    assert row is not None and row.status == "open"


async def test_a_push_whose_answer_was_lost_takes_no_issue_staff_gave_another_player_meanwhile(
    fake, db
) -> None:
    # Jira made Nova's issue but its answer was lost; before the push looked again, staff gave
    # that issue to Blaze. It is his now: Nova's grievance gets an issue of its own.
    fake.fail("create_then_hang", times=1)
    backend = await open_backend(fake, db, timeout_seconds=SHORT_TIMEOUT)
    try:
        ticket = await backend.register(NOVA, "wallet", "charged twice for the season pass")
        with pytest.raises(TrackerError):
            await backend.push_pending()
        issue = fake.issues["GRV-101"]
        issue.labels[issue.labels.index(f"discord-{NOVA}")] = f"discord-{BLAZE}"
        await expire_claims(db)  # as if the wait for a create Jira did not answer had passed
        assert await backend.push_pending() == 1
    finally:
        await backend.aclose()
    assert (await local_rows(db))[ticket.key] == ("pushed", "GRV-102")
    assert f"discord-{NOVA}" in fake.issues["GRV-102"].labels


async def test_the_outage_line_tells_when_the_grievance_is_next_tried(fake, db, caplog) -> None:
    # A 5xx may have made the issue: the row waits out Jira's search lag (settle_seconds) before
    # it is tried again, however soon the pusher's next round (0.05 s here).
    fake.fail("500")
    delays = Delays()
    backend = await open_backend(fake, db, delays.sleep, settle_seconds=30.0)
    await backend.register(QUILL, "other", "x")
    caplog.set_level(logging.WARNING, logger="bot.tools.jira_grievances")
    await backend.start()
    try:
        assert await delays.next() == 0.05
    finally:
        await backend.aclose()
    (line,) = [r.getMessage() for r in caplog.records if "pushing grievances" in r.getMessage()]
    assert line.endswith("; 1 pending, next try in 30.0 s"), line


async def test_an_outage_is_logged_once_and_its_end_once(fake, db, caplog) -> None:
    # Every retry said the same WARNING (one every settle_seconds, 30 s, for as long as Jira was
    # down), and nothing said when Jira took grievances again.
    fake.fail("500")
    delays = Delays()
    backend = await open_backend(fake, db, delays.sleep)
    await backend.register(QUILL, "other", "x")
    caplog.set_level(logging.DEBUG, logger="bot.tools.jira_grievances")
    await backend.start()
    try:
        for _ in range(4):
            await delays.next()
            delays.let_go()
        fake.fail("401")  # a new reason is news: someone must change the token
        for _ in range(2):
            await delays.next()
            delays.let_go()
        await delays.next()
        fake.recover()
        delays.let_go()
        await eventually(lambda: len(fake.issues) == 1)
        await eventually(lambda: any("again" in r.getMessage() for r in caplog.records))
    finally:
        await backend.aclose()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    failed = [(level, m) for level, m in said if level >= logging.WARNING and "pushing grievances" in m]
    assert [level for level, _ in failed] == [logging.WARNING, logging.ERROR], failed
    assert "HTTP 500" in failed[0][1] and "401" in failed[1][1]
    (back,) = [m for level, m in said if level == logging.INFO and "again" in m]
    assert (
        back.startswith("Jira takes grievances again after ") and "(7 failed push round(s)); 1 pushed" in back
    )


async def test_status_asked_again_and_again_during_an_outage_warns_once(fake, db, caplog) -> None:
    # Each player who asked for their tickets while Jira was down added the same WARNING.
    backend = await open_backend(fake, db)
    caplog.set_level(logging.INFO, logger="bot.tools.jira_grievances")
    try:
        await backend.register(NOVA, "wallet", "first")
        await backend.push_pending()  # GRV-1 -> GRV-101
        fake.fail("500")
        for who in (NOVA, BLAZE, NOVA):
            await backend.status(who)
        await backend.status(NOVA, "GRV-1")
        fake.recover()
        await backend.status(NOVA)
        fake.fail("500")  # a new outage is news again
        await backend.status(NOVA)
    finally:
        await backend.aclose()
    failed = [r for r in caplog.records if "answering from the local record" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.WARNING] + [logging.INFO] * 3 + [logging.WARNING]


async def test_a_complaint_kept_while_the_database_refused_it_reaches_jira_unprompted(
    fake: FakeJira, db: Path, monkeypatch
) -> None:
    # Kept in the spool, it has no local key, so the pusher (which labels each issue with one)
    # cannot push it until it is filed; it was filed only by the next filing, a status lookup,
    # ticket news's poll or a restart: with news off and nobody filing, it never reached Jira.
    backend = await open_backend(fake, db)
    try:
        real = LocalGrievanceStore._insert

        async def refused(*args: object, **kwargs: object) -> str | None:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(LocalGrievanceStore, "_insert", refused)
        with pytest.raises(ToolError, match="kept"):
            await backend.register(BLAZE, "wallet", "Gems gone after the update", "discord:9:0")
        monkeypatch.setattr(LocalGrievanceStore, "_insert", real)
        await backend.start()
        await eventually(lambda: pushed_keys(fake) == ["GRV-1"])
        (issue,) = fake.issues.values()
        assert issue.description == "Gems gone after the update" and f"discord-{BLAZE}" in issue.labels
    finally:
        await backend.aclose()


async def test_a_password_in_jira_url_stays_out_of_the_error_the_desk_and_export_show(tmp_path) -> None:
    # requests quotes a URL it cannot parse whole (a typo'd port), jira.url's user:password@ with
    # it; the log masks that, but the reason is also kept with the grievance, where the desk
    # shows it and `player export` hands it to the player.
    from bot import player_data
    from bot.app import storage_paths

    password = "jira-url-pass-123456"
    settings = make_settings(
        tmp_path,
        VOXDESK_TOOLS_GRIEVANCES="jira",
        VOXDESK_JIRA_URL=f"http://voxdesk:{password}@127.0.0.1:99999",
        JIRA_EMAIL="bot@studio.example",
        JIRA_API_TOKEN="jira-token-0123456789",
    )
    db = storage_paths(settings).grievances
    s = settings.secrets
    backend = await JiraGrievances.open(settings.jira, s.jira_email, s.jira_api_token, db)
    try:
        ticket = await backend.register(NOVA, "wallet", "I was charged twice for the battle pass")
        with contextlib.suppress(ToolError, TrackerError):
            await backend.push_pending()
        kept = await backend.local_store.staff_get(ticket.local_key)
    finally:
        await backend.aclose()
    assert kept is not None and "InvalidURL" in (kept.last_error or "")
    assert password not in (kept.last_error or "")
    assert password not in str(player_data.export(storage_paths(settings), NOVA))


@pytest.mark.parametrize(
    ("jira", "stored"),
    [
        ("2026-03-29T01:30:00.000+0100", "2026-03-29T00:30:00Z"),  # Europe/London's first BST hour
        ("2026-03-29T01:30:00.000+01:00", "2026-03-29T00:30:00Z"),
        ("2026-03-29T01:30:00+0100", "2026-03-29T00:30:00Z"),  # no milliseconds
        ("2026-12-31T23:30:00.000-0330", "2027-01-01T03:00:00Z"),  # America/St_Johns, New Year
        ("2027-01-01T13:44:59.999+1345", "2026-12-31T23:59:59Z"),  # Pacific/Chatham
        ("2026-10-25T01:30:00.000Z", "2026-10-25T01:30:00Z"),
        ("2026-03-29T01:30:00.000", "2026-03-29T01:30:00.000"),  # no offset: no instant to tell
    ],
)
def test_a_jira_time_is_stored_as_its_instant_in_utc(jira: str, stored: str) -> None:
    assert iso_utc(jira) == stored


async def test_a_status_staff_set_while_a_push_was_cut_short_after_its_create_is_kept(fake, db) -> None:
    # The push stopped after Jira answered its create, before its look-up; while the bot was down
    # staff moved the issue. Ticket news leaves a pending row's issue to its push, whose news tells
    # the status: the push that ends it takes Jira's, not the first one the create gave.
    backend = await open_backend(fake, db)
    try:
        filed = await backend.register(NOVA, "wallet", "charged twice")
        fake.fail("create_then_hang_next")
        push = asyncio.create_task(backend.push_pending())
        await eventually(lambda: bool(fake.requests_to("/issue/GRV-101", "GET")))
        push.cancel()
        await asyncio.wait({push})
        fake.release()
    finally:
        await backend.aclose()
    fake.set_status("GRV-101", "In Progress")
    await expire_claims(db)
    again = await open_backend(fake, db)
    try:
        assert await again.push_pending() == 1
    finally:
        await again.aclose()
    assert creates(fake) == 1
    assert sql(
        db, "SELECT push_state, remote_key, status FROM grievances WHERE local_key = ?", (filed.key,)
    ) == [("pushed", "GRV-101", "in progress")]
