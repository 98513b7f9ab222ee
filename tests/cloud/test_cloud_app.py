"""The whole bot switched to all three cloud backends by configuration alone: the demo's voice notes
through real decoding, the offline engine and the agent, answered the same as on the embedded
defaults; `check` naming each service's state; one service down leaving the others serving."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import paths
from bot.app import running_app, storage_paths
from bot.config import Settings
from bot.health import check_all
from bot.tools.azure_manuals import index_manuals
from bot.tools.base import ToolContext
from tests.cloud.test_jira_grievances import eventually, expire_claims, pushed_keys
from tests.conftest import NOVA, make_settings
from tests.fakes.jira_server import FakeJira, running_fake_jira
from tests.fakes.search_server import FakeSearch, running_fake_search

SAMPLES = sorted(paths.SAMPLES.glob("*.ogg"))


@pytest.fixture
async def services() -> AsyncIterator[tuple[FakeSearch, FakeJira]]:
    async with running_fake_search() as search, running_fake_jira() as jira:
        yield search, jira


def copy_of(seeded: Path, where: Path) -> Path:
    shutil.copytree(seeded, where)
    return where


def embedded_settings(storage: Path) -> Settings:
    return make_settings(storage)


def cloud_env(storage: Path, search: FakeSearch, jira: FakeJira) -> dict[str, str]:
    # Timeouts long enough for any request the fakes answer, on a busy machine too.
    players = storage_paths(make_settings(storage)).players
    return {
        "VOXDESK_TOOLS_STATS": "odbc",
        "VOXDESK_ODBC_DIALECT": "sqlite",
        "VOXDESK_SQL_CONNECTION_STRING": f"Driver=SQLite3;Database={players};Timeout=200",
        "VOXDESK_TOOLS_MANUALS": "azure",
        "VOXDESK_SEARCH_ENDPOINT": search.endpoint,
        "VOXDESK_SEARCH_TIMEOUT_SECONDS": "10",
        "VOXDESK_SEARCH_RETRIES": "1",
        "AZURE_SEARCH_API_KEY": search.api_key,
        "VOXDESK_TOOLS_GRIEVANCES": "jira",
        "VOXDESK_JIRA_URL": jira.url,
        "VOXDESK_JIRA_TIMEOUT_SECONDS": "10",
        "VOXDESK_JIRA_PUSH_INTERVAL_SECONDS": "0.05",
        "VOXDESK_JIRA_MAX_BACKOFF_SECONDS": "0.2",
        "VOXDESK_JIRA_SETTLE_SECONDS": "0",
        "JIRA_EMAIL": jira.email,
        "JIRA_API_TOKEN": jira.token,
    }


async def cloud_settings(storage: Path, search: FakeSearch, jira: FakeJira, **env: str) -> Settings:
    settings = make_settings(storage, **{**cloud_env(storage, search, jira), **env})
    await index_manuals(settings.search, settings.secrets.azure_search_api_key, paths.MANUALS)
    return settings


async def answers(settings: Settings) -> list[tuple[str, list[str], str]]:
    """(note, tools called, answer) for every demo note, as player Nova, in one conversation."""
    rows = []
    async with running_app(settings) as app:
        for note in SAMPLES:
            reply = await app.agent.respond(ToolContext(user_id=NOVA, platform="cli"), note.read_bytes())
            rows.append((note.name, [c["name"] for c in reply.tool_calls], reply.text))
    return rows


async def test_the_demo_notes_get_the_same_answers_on_the_cloud_backends(
    services, seeded_storage: Path, tmp_path: Path
) -> None:
    search, jira = services
    embedded = await answers(embedded_settings(copy_of(seeded_storage, tmp_path / "embedded")))
    cloud_storage = copy_of(seeded_storage, tmp_path / "cloud")
    settings = await cloud_settings(cloud_storage, search, jira)
    cloud = await answers(settings)

    assert [tools for _, tools, _ in cloud] == [tools for _, tools, _ in embedded]
    for (note, _, here), (_, _, there) in zip(embedded, cloud, strict=True):
        if note.startswith("5-ticket-status"):
            continue  # the new ticket is named by its Jira key once pushed; compared below
        assert there == here, note
    filed = next(text for note, _, text in cloud if note.startswith("4-"))
    assert "GRV-14" in filed  # the player hears the local key at once, whatever Jira is doing

    # The grievance reached Jira exactly once, labelled so status finds it for Nova only.
    (issue,) = jira.issues.values()
    assert f"discord-{NOVA}" in issue.labels and pushed_keys(jira) == ["GRV-14"]
    status = next(text for note, _, text in cloud if note.startswith("5-ticket-status"))
    assert "GRV-12" in status and "GRV-10" in status  # the older local tickets are still listed


async def test_check_says_every_cloud_service_is_reachable(
    services, seeded_storage: Path, tmp_path: Path
) -> None:
    search, jira = services
    settings = await cloud_settings(copy_of(seeded_storage, tmp_path / "s"), search, jira)
    lines = {r.service: r for r in await check_all(settings)}
    assert all(r.ok for r in lines.values()), [r.line() for r in lines.values()]
    assert "ODBC player database: 12 players" in lines["stats"].detail
    assert "Azure AI Search index 'manuals'" in lines["manuals"].detail
    assert f"Jira {jira.url}: JIRA_EMAIL and JIRA_API_TOKEN accepted" in lines["grievances"].detail


async def test_check_names_wrong_credentials_for_each_service(
    services, seeded_storage: Path, tmp_path: Path
) -> None:
    search, jira = services
    storage = copy_of(seeded_storage, tmp_path / "s")
    await cloud_settings(storage, search, jira)  # index the manuals with the right key
    wrong = make_settings(
        storage,
        **{
            **cloud_env(storage, search, jira),
            "VOXDESK_SQL_CONNECTION_STRING": "Driver=NoSuchDriver;Database=x;UID=sa;PWD=hunter2",
            "AZURE_SEARCH_API_KEY": "not-the-key",
            "JIRA_API_TOKEN": "not-the-token",
        },
    )
    lines = {r.service: r for r in await check_all(wrong)}
    assert not lines["stats"].ok and not lines["manuals"].ok and not lines["grievances"].ok
    assert "hunter2" not in lines["stats"].detail and "NoSuchDriver" in lines["stats"].detail
    assert "AZURE_SEARCH_API_KEY was refused" in lines["manuals"].detail
    assert "Jira refused the credentials (401)" in lines["grievances"].detail
    assert lines["engine"].ok  # the offline engine does not depend on any of them


async def test_with_every_cloud_service_down_the_player_still_gets_answers_and_no_grievance_is_lost(
    services, seeded_storage: Path, tmp_path: Path
) -> None:
    search, jira = services
    storage = copy_of(seeded_storage, tmp_path / "s")
    settings = await cloud_settings(storage, search, jira)
    (storage / "players.db").rename(storage / "players.db.away")  # the SQL database is gone
    search.fail_with(500)
    jira.fail("500")
    rows = await answers(settings)
    by_note = {note.split("-", 1)[1]: text for note, _, text in rows}
    assert "unavailable right now" in by_note["how-many-points.ogg"].lower()
    assert "unavailable right now" in by_note["pair-controller.ogg"].lower()
    assert "GRV-14" in by_note["charged-twice.ogg"]  # acknowledged at once, from the local outbox
    assert "GRV-14" in by_note["ticket-status.ogg"]  # from the local record while Jira is down
    assert not jira.issues

    jira.recover()
    # A push the shutdown cut off keeps its claim for three Jira timeouts (Jira may still make
    # that issue). As if they had run out: the restart's pusher resumes what was left pending.
    await expire_claims(storage_paths(settings).grievances)
    async with running_app(settings):
        await eventually(lambda: bool(jira.issues), within=15.0)
    assert len(jira.issues) == 1 and pushed_keys(jira) == ["GRV-14"]


async def test_run_names_a_wrong_jira_project_and_search_index_as_it_starts(
    services, seeded_storage: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `check` named both, but `run` asked neither service until a player needed it: a bot started
    # with a mistyped project or index logged nothing of either, grievances waiting unpushed.
    from tests.discord_harness import running_bot
    from tests.fakes.discord_server import serving

    search, jira = services
    settings = await cloud_settings(copy_of(seeded_storage, tmp_path / "s"), search, jira)
    wrong = settings.replace(jira={"project": "NOPE"}, search={"index": "nope"})
    caplog.set_level(logging.WARNING, logger="bot.health")

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "bot.health"]

    async with serving() as discord, running_bot(wrong, discord):
        await eventually(lambda: len(said()) >= 2)
    assert sorted(said()) == [
        "start-up check failed: grievances (jira): Jira has no project NOPE this account can see"
        " (404): check jira.project, and that the account has the Browse projects permission there",
        f"start-up check failed: manuals (azure): index 'nope' not found at {search.endpoint}: set"
        " search.index to the index's name, or run `python -m bot index-manuals` to make it",
    ]
    assert "Traceback" not in caplog.text


async def test_a_start_up_check_still_out_when_run_stops_says_nothing_during_the_shutdown(
    services, seeded_storage: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Jira hangs at start; the stop comes with a note in flight, and Jira answers during the drain.
    # A start-up check cancelled only after the drain says that answer as a WARNING in the middle
    # of the shutdown (seen 9.4 s after "shutting down"), about a bot no longer serving.
    import asyncio

    from tests.discord_harness import caught_up, nova, running_bot, voice_note
    from tests.fakes.discord_server import serving
    from tests.frontend_engine import FrontendEngine

    search, jira = services
    # Longer than the test: it is the test that ends the hang.
    jira.hang_seconds = 600
    settings = await cloud_settings(
        copy_of(seeded_storage, tmp_path / "s"), search, jira, VOXDESK_JIRA_TIMEOUT_SECONDS="600"
    )
    caplog.set_level(logging.INFO)
    jira.fail("hang")
    engine = FrontendEngine()
    engine.hold = asyncio.Event()

    def start_up_check() -> list[asyncio.Task[object]]:
        return [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "say_what_the_cloud_tools_refuse"
        ]

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records]

    async with serving() as discord, running_bot(settings, discord, engine=engine) as h:
        await caught_up(h.bot)
        assert start_up_check()  # still waiting for Jira
        await discord.send_note(nova, voice_note(), guild=True)
        await engine.until_asked(1)
        h.stop.set()
        await eventually(lambda: "shutting down: no new notes" in said())
        jira.fail("500")
        jira.release()  # Jira answers now, while the note in flight holds the drain
        await eventually(lambda: not start_up_check())
        engine.hold.set()
    lines = said()
    after = lines[lines.index("shutting down: no new notes") :]
    assert not [line for line in after if line.startswith("start-up check")], after


@pytest.mark.parametrize(
    ("database", "driver", "said"),
    [
        (
            "missing/players.db",
            "SQLite3",
            "start-up check failed: stats (odbc): database does not exist or cannot be opened: check"
            " Database= in VOXDESK_SQL_CONNECTION_STRING",
        ),
        ("players.db", "NoSuchDriver", None),  # its own ERROR line as the backend is built
    ],
    ids=["no such database", "no such driver"],
)
async def test_run_names_a_player_database_it_cannot_open_as_it_starts(
    services,
    seeded_storage: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    database: str,
    driver: str,
    said: str | None,
) -> None:
    # `check` tried the connection, but `run` did not: a wrong server or database went unsaid
    # until the first player asked for their stats. A wrong jira.project beside it is said in
    # the same pass, so its line shows the pass has ended.
    from tests.discord_harness import running_bot
    from tests.fakes.discord_server import serving

    search, jira = services
    password = "hunter2-odbc"
    wrong_odbc = f"Driver={driver};Database={tmp_path / database};Timeout=200;UID=bot;PWD={password}"
    settings = await cloud_settings(
        copy_of(seeded_storage, tmp_path / "s"),
        search,
        jira,
        VOXDESK_SQL_CONNECTION_STRING=wrong_odbc,
        VOXDESK_JIRA_PROJECT="NOPE",
    )
    caplog.set_level(logging.INFO)

    def said_at_start() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "bot.health"]

    async with serving() as discord, running_bot(settings, discord):
        await eventually(lambda: any("grievances (jira)" in line for line in said_at_start()))
    stats_lines = [line for line in said_at_start() if "stats (odbc)" in line]
    assert len(stats_lines) == (1 if said else 0), stats_lines
    assert all(line.startswith(f"{said} ([SQLite]connect failed (14)") for line in stats_lines)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([e for e in errors if "NoSuchDriver" in e]) == (0 if said else 1), errors
    assert password not in caplog.text and "Traceback" not in caplog.text


async def test_a_ticket_news_poll_still_out_when_run_stops_says_nothing_during_the_shutdown(
    services, seeded_storage: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Ticket news asks Jira what changed; Jira hangs, the stop comes with a note in flight, and
    # Jira answers during the drain: the poll's failure was a WARNING in the middle of the shutdown.
    import asyncio

    from bot.tools.grievance_store import LocalGrievanceStore
    from tests.discord_harness import caught_up, nova, running_bot, voice_note
    from tests.fakes.discord_server import serving
    from tests.frontend_engine import FrontendEngine

    search, jira = services
    jira.hang_seconds = 600  # longer than the test: it is the test that ends the hang
    storage = copy_of(seeded_storage, tmp_path / "s")
    settings = await cloud_settings(
        storage,
        search,
        jira,
        VOXDESK_JIRA_TIMEOUT_SECONDS="600",
        VOXDESK_NEWS_ENABLED="true",
        VOXDESK_NEWS_POLL_SECONDS="0.05",
    )
    store = await LocalGrievanceStore.open(storage_paths(settings).grievances)
    try:  # a player whose tickets the poll asks Jira about
        await store.register(NOVA, "wallet", "charged twice")
    finally:
        await store.aclose()
    caplog.set_level(logging.INFO)
    engine = FrontendEngine()
    engine.hold = asyncio.Event()

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records]

    async with serving() as discord, running_bot(settings, discord, engine=engine) as h:
        await caught_up(h.bot)
        await eventually(lambda: bool(jira.requests_to("/search/jql")))  # a poll got its answer
        jira.fail("hang")
        polls = len(jira.requests_to("/search/jql"))
        await eventually(lambda: len(jira.requests_to("/search/jql")) > polls)  # and the next hangs
        await discord.send_note(nova, voice_note(), guild=True)
        await engine.until_asked(1)
        h.stop.set()
        await eventually(lambda: "shutting down: no new notes" in said())
        jira.fail("500")
        jira.release()  # Jira answers now, while the note in flight holds the drain
        await asyncio.sleep(0.5)
        engine.hold.set()
    lines = said()
    after = lines[lines.index("shutting down: no new notes") :]
    assert not [line for line in after if line.startswith("ticket news: asking Jira")], after
