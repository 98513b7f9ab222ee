"""Shared fixtures: settings on a temporary storage dir, seeded once per session and copied."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot import logs
from bot.config import Settings, load_settings
from bot.tools.base import GameSummary, PlayerSummary
from tests import repo_boundary

REPO = Path(__file__).resolve().parent.parent
BOUNDARY = repo_boundary.install(REPO)
NOVA = "111111111111111111"  # demo player 1
BLAZE = "222222222222222222"  # demo player 2
QUILL = "333333333333333333"
UNLINKED = "999000999000999000"  # a Discord user with no player profile


def make_settings(storage: Path, **env: str) -> Settings:
    environ = {
        "VOXDESK_STORAGE_DIR": str(storage),
        "VOXDESK_AGENT_FALLBACK": "apology",
        # eSpeak: 80x faster to speak than the neural voice; tests of the voice itself ask for it.
        "VOXDESK_OFFLINE_VOICE": "en-us",
        # One speech worker: each loads every speech model (hundreds of MB), and tests start many
        # engines. Tests of several workers ask for them.
        "VOXDESK_OFFLINE_WORKERS": "1",
        **env,
    }
    return load_settings(REPO / "config.toml", environ=environ)


@pytest.fixture
def far_from_utc(monkeypatch):
    """The host's zone hours from UTC (a POSIX zone, needing no tzdata), for what must not
    depend on where the bot runs."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def sqlite_without_secure_delete(monkeypatch):
    """SQLite as python.org's macOS and Windows Pythons (and uv's) build it: without
    SQLITE_SECURE_DELETE, so a deleted row's bytes stay in the file's free space unless the
    connection asks otherwise. Debian's build has it on, which would hide a store that never asks."""
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)


def residue(folder: Path, words: bytes, but: tuple[str, ...] = ()) -> list[str]:
    """The files in `folder` (its databases, their logs, the spool) whose bytes hold `words`.
    Read by another process: closing a file in this one would drop every lock this process's
    open databases hold on it (POSIX record locks), and another connection would then take
    itself for the last one and checkpoint and delete their write-ahead logs."""
    read = (
        "import sys, pathlib\n"
        "folder, words, but = pathlib.Path(sys.argv[1]), sys.argv[2].encode(), sys.argv[3:]\n"
        "for f in sorted(folder.iterdir()):\n"
        "    if f.is_file() and f.name not in but and words in f.read_bytes(): print(f.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", read, str(folder), words.decode(), *but],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


@pytest.fixture(scope="session")
def seeded_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded databases as `python -m bot init` leaves them, built once."""
    import asyncio

    from bot.seed import initialise

    storage = tmp_path_factory.mktemp("seeded")
    asyncio.run(initialise(make_settings(storage)))
    return storage


@pytest.fixture
def settings(tmp_path: Path, seeded_storage: Path) -> Settings:
    storage = tmp_path / "var"
    shutil.copytree(seeded_storage, storage)
    return make_settings(storage)


@pytest.fixture
def scripted_app_engine():
    from tests.scripted_engine import ScriptedEngine

    return ScriptedEngine()


@pytest.fixture(autouse=True)
def _nothing_read_beside_the_repository():
    BOUNDARY.take()
    yield
    reads = BOUNDARY.take()
    if reads:
        pytest.fail("read outside the repository (a clone has nothing beside it): " + "; ".join(reads[:5]))


# The log's mask is process-wide and only grows, as a key replaced in the settings may still be in
# flight: a test's short secret (the password "token" in a Jira address) would mask that word in
# every later test's log lines, in whichever xdist worker happens to run both, once any test has
# left a masking handler on the root logger.
@pytest.fixture(autouse=True)
def _secrets_masked_for_their_test_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_values", logs._values)
    monkeypatch.setattr(logs, "_pattern", logs._pattern)


# A child process inherits an ignored SIGINT or SIGTERM and the blocked-signal mask from the test
# process that starts it: one test leaving them changed makes a later test's Ctrl-C or stop signal
# to its child go nowhere, in whichever xdist worker happens to run both.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_signal_state() -> tuple[list[Any], set[int]]:
    return [signal.getsignal(s) for s in _STOP_SIGNALS], signal.pthread_sigmask(signal.SIG_BLOCK, ())


def _handler_name(handler: Any) -> str:
    if handler in (signal.SIG_DFL, signal.SIG_IGN):
        return signal.Handlers(handler).name
    return getattr(handler, "__qualname__", None) or repr(handler)


def _signal_names(signals: set[int]) -> str:
    names = {s.value: s.name for s in signal.Signals}
    return ", ".join(names.get(s, str(s)) for s in sorted(signals)) or "none"


@pytest.fixture(autouse=True)
def _stop_signals_left_as_found():
    (handlers, mask) = _stop_signal_state()
    yield
    (handlers_after, mask_after) = _stop_signal_state()
    if handlers_after == handlers and mask_after == mask:
        return
    changed = [
        f"{s.name} handler {_handler_name(h)} -> {_handler_name(a)}"
        for s, h, a in zip(_STOP_SIGNALS, handlers, handlers_after, strict=True)
        if a != h
    ]
    if mask_after != mask:
        changed.append(f"blocked signals {_signal_names(mask)} -> {_signal_names(mask_after)}")
    # Put back, so the tests after this one run as they would alone.
    for s, h in zip(_STOP_SIGNALS, handlers, strict=True):
        if h is not None:  # None: set outside Python, which cannot set it back
            signal.signal(s, h)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    pytest.fail(
        "left the stop signals changed, which every child process started later inherits: "
        + "; ".join(changed)
    )


# Every aiosqlite connection a test opens, so one left open can be closed after the test: its
# worker thread is not a daemon, and a store a failed assertion skipped closing would otherwise
# keep pytest from exiting at the end of the run.
_CONNECTIONS: weakref.WeakSet[aiosqlite.Connection] = weakref.WeakSet()
_connection_init = aiosqlite.Connection.__init__


def _tracked_init(self: aiosqlite.Connection, *args: object, **kwargs: object) -> None:
    _connection_init(self, *args, **kwargs)  # type: ignore[arg-type]
    _CONNECTIONS.add(self)


aiosqlite.Connection.__init__ = _tracked_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _no_store_left_open(request: pytest.FixtureRequest):
    before = set(_CONNECTIONS)
    yield
    left = [c for c in _CONNECTIONS if c not in before and c._connection is not None]
    for connection in left:
        with warnings.catch_warnings():  # stop() asks for an event loop it does not need here
            warnings.simplefilter("ignore")
            connection.stop()
    if left and not request.node.stash.get(_CALL_FAILED, True):
        pytest.fail(f"{len(left)} SQLite connection(s) left open: close stores in finally or a fixture")


def summary_from_rows(players_db: Path, user_id: str) -> PlayerSummary | None:
    """The speaker's summary worked out in Python from every row of the players database, not
    with the bot's SQL: a query that lets another player's rows in (a lost `WHERE player_id`)
    gives the bot a different answer from this one, where comparing two backends that share
    that SQL would not notice."""
    with contextlib.closing(sqlite3.connect(players_db)) as conn:
        players = conn.execute("SELECT player_id, discord_user_id, player_name FROM players").fetchall()
        sessions = conn.execute(
            "SELECT player_id, game_type, points_earned, cash_won FROM game_sessions"
        ).fetchall()
        earned = conn.execute("SELECT player_id, name, earned_at FROM achievements").fetchall()
    mine = [(pid, name) for pid, discord_id, name in players if discord_id == user_id]
    if not mine:
        return None
    ((player_id, player_name),) = mine
    totals = {pid: 0 for pid, _, _ in players}
    by_type: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for pid, game_type, points, cash in sessions:
        totals[pid] += points
        if pid == player_id:
            by_type[game_type].append((points, cash))
    games = [
        GameSummary(
            game_type=game_type,
            games_played=len(rows),
            points_earned=sum(p for p, _ in rows),
            cash_won=round(sum(c for _, c in rows), 2),
        )
        for game_type, rows in sorted(by_type.items())
    ]
    # Newest first, ties by name: two stable sorts, the tie-breaker first.
    newest_first = sorted((a for a in earned if a[0] == player_id), key=lambda a: a[1])

    # By the instant, a time without an offset in UTC: text puts "03:00+05:00" after "23:00Z".
    def instant(at: str) -> dt.datetime:
        when = dt.datetime.fromisoformat(at)
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)

    newest_first.sort(key=lambda a: instant(a[2]), reverse=True)
    return PlayerSummary(
        player_name=player_name,
        total_points=totals[player_id],
        rank=1 + sum(total > totals[player_id] for total in totals.values()),
        players_ranked=len(players),
        games=games,
        achievements=[name for _, name, _ in newest_first[:10]],  # the newest ten, as the bot promises
        achievement_count=len(newest_first),
    )


def smb_locks(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, int], None]:
    """fcntl.flock as on a CIFS mount, which emulates it with SMB byte-range locks and refuses a
    lock another holds with EACCES, not EWOULDBLOCK. Returns the real flock, for the other holder."""
    real = fcntl.flock

    def smb_flock(fd: int, operation: int) -> None:
        try:
            real(fd, operation)
        except BlockingIOError:
            raise PermissionError(errno.EACCES, "Permission denied") from None

    monkeypatch.setattr(fcntl, "flock", smb_flock)
    return real


def speech_pools_started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker counts of the speech-worker pools started from now on (each worker loads every
    speech model: hundreds of MB), calling through to the real pools."""
    from bot.engines.offline import hearing

    pools: list[int] = []
    real = hearing.WorkerHearing._new_pool

    def counted(self: hearing.WorkerHearing, workers: int):  # type: ignore[no-untyped-def]
        pools.append(workers)
        return real(self, workers)

    monkeypatch.setattr(hearing.WorkerHearing, "_new_pool", counted)
    return pools


def pytest_sessionstart(session: pytest.Session) -> None:
    """all-mpnet-base-v2 inflated into the user's cache once, before any test: on a fresh machine
    every process that routes (the xdist workers, each engine's speech worker, each `python -m bot`)
    would otherwise inflate its 438 MB at once, side by side, until one had kept it."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller has done it
        return
    from bot.speech import encoder_files
    from bot.speech.sentence_encoder import MPNET

    kept = encoder_files.cache_folder(MPNET)
    if encoder_files.installed(MPNET) and not all((kept / name).is_file() for name in encoder_files.FILES):
        # A model that cannot be read is for the tests that use it to report, with their names.
        with contextlib.suppress(Exception):
            encoder_files.read(MPNET)
