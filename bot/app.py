"""The composition root: every client and store is built here, from Settings, and nowhere else.

Front ends (the CLI, the Discord cogs) call `build_app` and use what it returns; tests point the
same code at local fakes through Settings (base URLs, storage dir), not by patching internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from bot.agent import Budget, Speaker, VoiceAgent
from bot.config import Settings
from bot.conversations import ConversationStore
from bot.db import kept
from bot.engines.base import Engine
from bot.note_ledger import NoteLedger, holds_beside
from bot.preferences import PreferenceStore
from bot.ticket_news import Answering, NewsStore, TicketNews
from bot.tools import Toolbox, build_tools
from bot.tools.base import GrievanceBackend, ManualsBackend, StatsBackend
from bot.tools.grievance_store import recent_beside

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0  # at shutdown, how long pending grievances may take to reach Jira
MESSAGE_ID = re.compile(r"[0-9]{1,20}")  # a Discord snowflake


@dataclass(frozen=True)
class StoragePaths:
    root: Path

    @property
    def players(self) -> Path:
        return self.root / "players.db"

    @property
    def manuals(self) -> Path:
        return self.root / "manuals.db"

    @property
    def grievances(self) -> Path:
        return self.root / "grievances.db"

    @property
    def recent_claims(self) -> Path:
        """/grievance file's claims of the last minutes (`lately_filed`), attached to grievances.db's
        connection: a file of its own, so grievances.db keeps a schema an older voxdesk opens."""
        return recent_beside(self.grievances)

    @property
    def conversations(self) -> Path:
        return self.root / "conversations.db"

    @property
    def preferences(self) -> Path:
        return self.root / "preferences.db"

    @property
    def notes(self) -> Path:
        return self.root / "notes.db"

    @property
    def usage(self) -> Path:
        return self.root / "usage.db"

    @property
    def holds(self) -> Path:
        """Locked, never written: the notes ledger's kernel locks (`bot.note_ledger._Holds`)."""
        return holds_beside(self.notes)

    @property
    def serving(self) -> Path:
        """Locked, never written, by each process serving the web front end on this storage."""
        return self.root / "web.serving"

    @property
    def news(self) -> Path:
        return self.root / "news.db"

    @property
    def web(self) -> Path:
        return self.root / "web.db"

    @property
    def speech(self) -> Path:
        return self.root / "speech"

    @property
    def databases(self) -> list[Path]:
        """Every SQLite file voxdesk keeps (the speech folder is rebuilt by `init`)."""
        names = ("players", "manuals", "grievances", "conversations", "preferences", "notes", "usage")
        return [getattr(self, name) for name in (*names, "news", "web", "recent_claims")]


def storage_paths(settings: Settings) -> StoragePaths:
    return StoragePaths(settings.storage_dir)


@dataclass
class App:
    settings: Settings
    agent: VoiceAgent
    toolbox: Toolbox
    engine: Engine
    stats: StatsBackend
    manuals: ManualsBackend
    grievances: GrievanceBackend
    conversations: ConversationStore
    preferences: PreferenceStore
    notes: NoteLedger
    news: TicketNews
    fallback: Engine | None = None
    closers: list[object] = field(default_factory=list)

    async def aclose(self) -> None:
        """Close every client once, even if one of them fails to close. A cancel (Ctrl-C as `ask`
        closes) cuts short the client it lands in and is raised once the others are closed too:
        the grievance store, closed last, logs what the disk refused (its one copy), and an
        aiosqlite thread left open would keep the process from exiting."""
        self.agent.idle_trim.close()
        cancelled: asyncio.CancelledError | None = None
        try:
            await self._flush_grievances()
        except asyncio.CancelledError as exc:
            cancelled = exc
        for thing in reversed(self.closers):
            try:
                await thing.aclose()  # type: ignore[attr-defined]
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
                log.warning("closing %s cut short", type(thing).__name__)
            except Exception:
                log.exception("closing %s failed", type(thing).__name__)
        self.closers.clear()
        if cancelled is not None:
            raise cancelled

    async def _flush_grievances(self) -> None:
        # A one-shot `ask` that filed a grievance should not leave it for the next run to push;
        # whatever does not make it in time stays pending in the local store, never lost.
        flush = getattr(self.grievances, "push_pending", None)
        if flush is None:
            return
        try:
            await asyncio.wait_for(flush(), FLUSH_SECONDS)
        except Exception as exc:
            log.info("grievances left pending at shutdown: %s", str(exc) or type(exc).__name__)


class NotInitialised(Exception):
    pass


async def build_stats_backend(settings: Settings, read_only: bool = False) -> StatsBackend:
    if settings.tools.stats == "odbc":
        from bot.tools.odbc_stats import OdbcStats, say_if_the_driver_is_missing

        if not read_only:  # `check` says so in its own line, from the connection it tries
            await say_if_the_driver_is_missing(settings.secrets.sql_connection_string)
        return await OdbcStats.open(settings.secrets.sql_connection_string, settings.odbc)
    path = storage_paths(settings).players
    # kept(), as `check` and `backup` ask: a file a crash left only in its log is restored on opening.
    if not kept(path):
        raise NotInitialised(f"{path} does not exist: run `python -m bot init` first")
    from bot.tools.embedded import SqliteStats, has_players_table

    # An empty file (a failed first `init`, a copy cut short) opens as a database with no tables:
    # said at start, not as "stats unavailable" to every player who asks.
    if not await asyncio.to_thread(has_players_table, path):
        raise NotInitialised(
            f'{path} has no players table: run `python -m bot init`, or set tools.stats = "odbc"'
            " for the studio's own player database"
        )
    return await SqliteStats.open(path, read_only)


async def build_manuals_backend(settings: Settings, read_only: bool = False) -> ManualsBackend:
    if settings.tools.manuals == "azure":
        from bot.tools.azure_manuals import AzureSearchManuals

        return await AzureSearchManuals.open(settings.search, settings.secrets.azure_search_api_key)
    path = storage_paths(settings).manuals
    if not kept(path):
        raise NotInitialised(f"{path} does not exist: run `python -m bot init` first")
    from bot.tools.embedded import FtsManuals

    return await FtsManuals.open(path, read_only)


async def build_grievance_backend(settings: Settings, read_only: bool = False) -> GrievanceBackend:
    """With Jira on, grievances still go to the local store first (the outbox); a background task
    started by `build_app` pushes them to Jira. `read_only`: for `check`, which only looks (the
    store's database neither migrated nor made, its spool not filed)."""
    path = storage_paths(settings).grievances
    if settings.tools.grievances == "jira":
        from bot.tools.jira_grievances import JiraGrievances

        s = settings.secrets
        return await JiraGrievances.open(
            settings.jira, s.jira_email, s.jira_api_token, path, read_only=read_only
        )
    from bot.tools.grievance_store import LocalGrievanceStore

    return await LocalGrievanceStore.open(path, read_only=read_only)


def offline_fallback_wanted(settings: Settings, engine: str) -> bool:
    """Whether an offline engine stands behind `engine` (the one that answers players)."""
    return settings.agent.fallback == "offline" and engine != "offline"


async def build_engine(settings: Settings, name: str) -> Engine:
    if name == "openai":
        from bot.engines.openai import create_openai_engine

        return await create_openai_engine(settings)
    from bot.engines.offline.engine import create_offline_engine

    return await create_offline_engine(settings)


def build_speaker(settings: Settings, *engines: Engine | None) -> Speaker | None:
    from bot.engines.offline.engine import create_speaker

    return create_speaker(settings, *engines)


async def build_budget(settings: Settings, engine: Engine | None = None) -> Budget | None:
    """`engine`: the one built, whose start-up lookup may have found a model not offered."""
    from bot.usage import UsageMeter

    o = settings.openai
    chat = o.azure_deployment if o.provider == "azure" else o.model  # what a request names
    meter = await UsageMeter.open(storage_paths(settings).usage, settings.usage, chat)
    if settings.agent.engine == "openai":
        # The names priced as configured. An Azure deployment's answers name its model, known from
        # the first answer (or from `check`), and told of then if it has no row.
        not_offered = getattr(engine, "not_offered", set())
        meter.expect(
            [m for m in (chat if o.provider == "openai" else "", o.transcribe_model) if m not in not_offered]
        )
    return meter


def note_to_answer(notes: NoteLedger) -> Answering:
    """Whether a turn is a Discord voice note still to be answered: only those are answered again
    after a restart (a slash command is not), and the ledger knows them by message id."""

    async def to_answer(platform: str, request_id: str) -> bool:
        if platform != "discord" or not MESSAGE_ID.fullmatch(request_id):
            return False
        return await notes.to_answer(int(request_id))

    return to_answer


async def build_app(settings: Settings, engine: Engine | None = None, one_shot: bool = False) -> App:
    """Everything the bot needs, built from settings. `engine` replaces the configured engine
    (benchmarks and front-end tests use an instant one). `one_shot`: for a command that ends
    after its turns (`ask`, `demo`), which holds no refused grievance to file later."""
    from bot.schemas import refuse_newer_databases

    # Before any store opens: each would make or migrate its file, and a version that then stops
    # at a later store's newer schema would leave the folder half its own.
    refuse_newer_databases(storage_paths(settings))
    async with contextlib.AsyncExitStack() as undo:
        closers: list[object] = []

        async def keep(thing):  # type: ignore[no-untyped-def]
            closers.append(thing)
            undo.push_async_callback(thing.aclose)
            return thing

        stats = await keep(await build_stats_backend(settings))
        manuals = await keep(await build_manuals_backend(settings))
        grievances = await keep(await build_grievance_backend(settings))
        if one_shot:
            grievances.local_store.hold_none()  # type: ignore[attr-defined]
        start = getattr(grievances, "start", None)  # the spool's refiler, and the Jira outbox's pusher
        if start is not None:
            await start()
        paths = storage_paths(settings)
        conversations = await keep(
            await ConversationStore.open(
                paths.conversations,
                settings.conversations.max_turns,
                settings.conversations.idle_minutes,
                answered_minutes=settings.discord.catch_up_minutes,
            )
        )
        preferences = await keep(await PreferenceStore.open(paths.preferences))
        notes = await keep(await NoteLedger.open(paths.notes))
        if engine is None:
            engine = await keep(await build_engine(settings, settings.agent.engine))
        fallback = None
        if offline_fallback_wanted(settings, engine.name):
            fallback = await keep(await build_engine(settings, "offline"))
        budget = await build_budget(settings, engine)
        if budget is not None and hasattr(budget, "aclose"):
            await keep(budget)
        toolbox = Toolbox(build_tools(stats, manuals, grievances, settings.tools.manual_results))
        speaker = build_speaker(settings, engine, fallback)
        if speaker is not None and hasattr(speaker, "aclose"):
            await keep(speaker)
        news_store = await keep(await NewsStore.open(paths.news))
        news = TicketNews(news_store, grievances, preferences, speaker, settings.news, note_to_answer(notes))
        agent = VoiceAgent(
            engine=engine,
            toolbox=toolbox,
            conversations=conversations,
            audio_settings=settings.audio,
            agent_settings=settings.agent,
            fallback=fallback,
            speaker=speaker,
            budget=budget,
        )
        undo.pop_all()
        return App(
            settings=settings,
            agent=agent,
            toolbox=toolbox,
            engine=engine,
            stats=stats,
            manuals=manuals,
            grievances=grievances,
            conversations=conversations,
            preferences=preferences,
            notes=notes,
            news=news,
            fallback=fallback,
            closers=closers,
        )
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, engine: Engine | None = None, one_shot: bool = False
) -> AsyncIterator[App]:
    app = await build_app(settings, engine, one_shot)
    try:
        yield app
    finally:
        await app.aclose()
