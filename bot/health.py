"""`python -m bot check`: try each configured service once and say, in one line each, whether it
answers or exactly why not.

Each backend is built and checked on its own, so one service being down never hides the state of
the others (building the whole app would stop at the first failure).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, NeedsHuman, Settings, check_discord_token_shape
from bot.db import LOCK_HELD, kept, mounted_read_only, naming, no_database, other_owner
from bot.logs import masked

if TYPE_CHECKING:
    from bot.app import App, StoragePaths

log = logging.getLogger(__name__)

# Free space on the storage folder's disk below which `check` warns: the databases' writes and
# the spool's lines are small, but a disk that fills holds new grievances in memory alone.
LOW_DISK_BYTES = 100 * 2**20
CHECK_TIMEOUT = 30.0  # seconds per service: longer than any client's own timeout and retries


@dataclass(frozen=True)
class CheckResult:
    service: str
    backend: str
    ok: bool  # the service works; a `warn` line is ok too
    detail: str
    warn: bool = False

    @property
    def mark(self) -> str:
        return "FAIL" if not self.ok else "warn" if self.warn else "ok"

    def line(self) -> str:
        return f"{self.mark:<4}  {self.service:<10} {self.backend:<8} {self.detail}"


async def _check_backend(build: Callable[[], Awaitable[object]], database: Path) -> str:
    """`database`: the file a local backend reads, named in a read's failure (SQLite's "database
    disk image is malformed" says not which of the folder's nine)."""
    backend = await build()
    try:
        return await backend.check()  # type: ignore[attr-defined,no-any-return]
    except sqlite3.Error as exc:
        if str(database) in str(exc):
            raise
        raise naming(database, exc) from exc
    finally:
        await backend.aclose()  # type: ignore[attr-defined]


async def _check_local_grievances(build: Callable[[], Awaitable[object]], database: Path) -> str:
    """The local store, which `check` reads as empty where it has no database yet: failed, as the
    stats' and manuals' lines are, where its storage folder does not exist at all."""
    from bot.app import NotInitialised

    if not await asyncio.to_thread(database.parent.exists):
        raise NotInitialised(f"{database} does not exist: run `python -m bot init` first")
    return await _check_backend(build, database)


async def check_engine(settings: Settings, live: App | None = None) -> str:
    if live is not None:
        if live.engine.name == "offline":
            return await check_offline(settings, live.engine)
        return priced(settings, live.engine, await live.engine.check())
    if settings.agent.engine == "openai":
        from bot.engines.openai import create_openai_engine

        engine = await create_openai_engine(settings, verify=False, keyed=False)
        try:
            return priced(settings, engine, await engine.check())
        finally:
            await engine.aclose()
    return await check_offline(settings)


async def check_offline(settings: Settings, running: object = None) -> str:
    """The offline engine: the running bot's own one, or a fresh one built and closed; a
    NeedsHuman detail when the speech model `init` built is stale."""
    from bot.engines.offline.engine import (
        OfflineEngine,
        check_live_offline_engine,
        check_offline_engine,
        stale_speech_models,
    )

    if running is None:
        detail = await check_offline_engine(settings)
    else:
        assert isinstance(running, OfflineEngine)
        detail = await check_live_offline_engine(settings, running)
    if stale := await asyncio.to_thread(stale_speech_models, settings):
        return NeedsHuman(f"{detail}; {stale}")
    return detail


def priced(settings: Settings, engine: object, detail: str) -> str:
    """`detail`, and the [usage.prices] rows the engine's tokens are priced by: a name with none
    counts as $0 in the cost estimate, which a studio would rather hear from `check` than from
    its bill. A NeedsHuman `detail` (the engine's models not looked up, say) stays one."""
    warn = isinstance(detail, NeedsHuman)
    billed = getattr(engine, "billed_models", None)
    if billed is not None:
        rows = {name: settings.usage.price_row(name) for name in billed()}
        missing = [name for name, row in rows.items() if row is None]
        if missing:
            detail = (
                f"{detail}; no usage.prices row for {', '.join(missing)}: the cost estimate counts "
                "its tokens as $0 (add a row, or name one in usage.price_as)"
            )
        else:
            detail = f"{detail}; priced as {', '.join(dict.fromkeys(r for r in rows.values() if r))}"
    return NeedsHuman(detail) if warn else detail


async def check_fallback(settings: Settings, live: App | None = None) -> str:
    """The offline engine a failing cloud engine hands notes to; the desk's own one under `live`."""
    if live is None:
        return await check_offline(settings)
    assert live.fallback is not None
    return await check_offline(settings, live.fallback)


def check_discord_token(settings: Settings, for_run: bool) -> str:
    """No network call: what is plainly no bot token, or none at all (cogs.runner.try_token asks)."""
    if settings.secrets.discord_token:
        check_discord_token_shape(settings.secrets.discord_token)
        return "DISCORD_TOKEN set (Discord tries it when `run` logs in)"
    if for_run:
        raise ConfigError("DISCORD_TOKEN not set: `run` needs it")
    return "DISCORD_TOKEN not set: `run` needs it, `ask`/`web` do not"


async def check_web_secrets(settings: Settings) -> str:
    """What the web front end refuses to start with: a session key or staff hash that does not parse,
    a plain staff password too short, or a malformed VOXDESK_WEB_STAFF."""
    from bot.web.security import session_storage, staff_accounts

    s = settings.secrets
    session_storage(settings)
    accounts = await asyncio.to_thread(staff_accounts, settings)  # a plain password is hashed
    stored = bool(accounts)
    key = "session key set" if s.web_session_key else "no session key (sessions end on restart)"
    if s.web_staff and accounts:
        staff = f"{len(accounts)} staff account{'s' if len(accounts) != 1 else ''} ({', '.join(accounts)})"
    elif s.web_staff_password_hash:
        staff = "staff password hash"
    elif stored:
        staff = "plain staff password (prefer the hash)"
    else:
        staff = "no staff password (the desk stays locked)"
    return f"{key}, {staff}"


def check_storage(settings: Settings) -> str:
    """The storage folder's databases a newer voxdesk wrote, read without writing: `check` opens
    only the tool backends' ones, and `run` would stop at the first of the others. And the spool
    lines set aside as unreadable: each is a grievance's last copy, which only staff can file, and
    the log line that told of it may be long gone. Those, and files other users can read, make it
    NeedsHuman: the bot runs on. And the files `run` and `web` only lock, which they make later:
    one they cannot write is NeedsHuman too, a file system that takes no locks a failure."""
    from bot.app import NotInitialised, storage_paths
    from bot.schemas import refuse_newer_databases
    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import empty_store_file, recent_unusable

    paths = storage_paths(settings)
    if not paths.root.exists():
        # Before `init`, or storage.dir set to the wrong folder: this line comes first, and the OS's
        # bare "No such file or directory" said neither.
        raise NotInitialised(f"{paths.root} does not exist: run `python -m bot init` first")
    refuse_newer_databases(paths)
    unusable = recent_unusable(paths.recent_claims)
    spool = GrievanceSpool.beside(paths.grievances)
    if locked := unwritable(paths.root, [*paths.databases, spool.path]):
        if mounted_read_only(locked):
            raise PermissionError(
                f"voxdesk cannot write {locked}: its file system is mounted read-only; `run` would"
                " stop there: mount the storage folder read-write"
            )
        raise PermissionError(
            f"voxdesk cannot write {locked}: `run` would stop there, or keep no grievance; make the"
            " storage folder and its files the bot's user's"
        )
    if cannot := cannot_lock(paths.root):
        raise OSError(cannot)
    found = sum(kept(path) for path in paths.databases)
    said = f"{found} database{'' if found == 1 else 's'}, none written by a newer voxdesk"
    locked_out = False
    for file, why in lock_files(paths).items():
        if file.exists() and (way := _cannot_open(file)):
            said += f"; voxdesk cannot {way} {file}: {why} (make it the bot's user's)"
            locked_out = True
    rejected = spool.rejected
    try:
        set_aside = sum(1 for line in rejected.read_text(errors="replace").splitlines() if line.strip())
    except FileNotFoundError:
        set_aside = 0
    if set_aside:
        said += (
            f"; {set_aside} grievance line(s) cut short or of a newer voxdesk set aside in {rejected}:"
            " file them by hand"
        )
    if shown := open_to_others(paths.root):
        names = ", ".join(p.name for p in shown)
        said += f"; other users of this machine can read {names}: chmod 700 {paths.root}"
    if unusable:
        said += (
            f"; {unusable}; the bot keeps /grievance file's claims in memory: a repeat sent to another"
            " bot on this folder may be filed twice"
        )
    # SQLite takes such a file for a new database, and so does the bot (saying so in its log): a
    # grievances.db truncated by a failed copy or restore would go on as if it never held one; one
    # missing the bot makes anew. The local store's own line says so where it is
    # the grievance store; here, where it is Jira's outbox, whose line a Jira down would fail.
    outbox = settings.tools.grievances != "local"
    lost = ""
    if outbox and empty_store_file(paths.grievances):
        lost = f"{paths.grievances} is an empty file, which the bot takes for a new grievance store:"
    elif outbox and no_database(paths.grievances):
        lost = (
            f"{paths.grievances}, the outbox of grievances on their way to Jira, does not exist: the"
            " bot makes it anew, empty;"
        )
    if lost:
        said += f"; {lost} if it held grievances, restore it from a `voxdesk backup` before starting the bot"
    free = shutil.disk_usage(paths.root).free
    if low := free < LOW_DISK_BYTES:
        said += (
            f"; only {free // 2**20} MB free on the disk of {paths.root}: once it is full, new"
            " grievances are held in memory alone and lost at a stop; free some space"
        )
    return NeedsHuman(said) if set_aside or shown or locked_out or unusable or lost or low else said


DOTENV = Path(".env")  # where bot.config reads it from: the working directory


def _others_can_read(file: Path, st: os.stat_result) -> bool:
    """Whether the mode bits (ACLs aside) let a user other than the owner read the file: its
    read bit and a way through every folder above it (a 0700 home shuts out all beneath it)."""
    folders = [folder.stat() for folder in file.parents]
    by_others = st.st_mode & 0o004 and all(f.st_mode & 0o001 for f in folders)
    # The file's group passes a folder of that group by its group bit, any other by its other bit.
    by_group = st.st_mode & 0o040 and all(
        f.st_mode & 0o001 or (f.st_mode & 0o010 and f.st_gid == st.st_gid) for f in folders
    )
    return bool(by_others or by_group)


def check_dotenv(dotenv: Path = DOTENV) -> str:
    """The `.env` file's modes: it holds every key and token, and a checkout's or an editor's
    umask leaves it readable by every login on the machine (NeedsHuman: the bot runs on)."""
    where = dotenv.resolve()
    st = where.stat()
    if _others_can_read(where, st):
        if st.st_uid == os.geteuid():
            return NeedsHuman(f"other users of this machine can read {where}: chmod 600 {where}")
        # Owned by another (root:voxdesk 0640): the bot may read it through its group, and
        # chmod 600 alone would take its secrets from the bot at the next start.
        return NeedsHuman(
            f"other users of this machine can read {where}, owned by uid {st.st_uid}: chown USER {where}"
            f" && chmod 600 {where}, USER being the one voxdesk runs as"
        )
    return f"{where} readable by its owner alone"


def lock_files(paths: StoragePaths) -> dict[Path, str]:
    """The files `run` and `web` make in the storage folder only to lock, and what comes of one
    they cannot open: each is made and locked later, so the read-only stores `check` opens miss
    it."""
    return {
        paths.holds: "`run` would answer twice a note its ledger cannot record, and could not tell"
        " a live bot's claims from a dead one's by lock",
        paths.serving: "`web` would not share its port with another process serving this storage"
        " folder, so a rolling deploy's new process could not start",
    }


def _cannot_open(file: Path) -> str:
    """What of reading and writing this process may not do to `file` ("" if both), as `run` and
    `web` open their lock files for both."""
    missing = [way for way, mode in (("read", os.R_OK), ("write", os.W_OK)) if not os.access(file, mode)]
    return " or ".join(missing)


def cannot_lock(folder: Path) -> str:
    """Why the file system of `folder` takes none of the locks `run` and `web` take there ("" if
    it does, or cannot be told): a file no name in the folder leads to is locked both ways."""
    from bot.note_ledger import _flock

    if not folder.is_dir() or not hasattr(fcntl, "F_OFD_SETLK"):
        return ""
    fd = _nameless_file(folder)
    if fd is None:
        return ""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, 0))
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in LOCK_HELD:  # held: locks work
            return ""
        return (
            f"the file system of {folder} takes no file locks ({exc.strerror or exc}): `run` would"
            " answer notes twice, and `web` stop at start; keep the storage folder on a local disk"
        )
    finally:
        os.close(fd)
    return ""


def _nameless_file(folder: Path) -> int | None:
    """An open file on `folder`'s file system that no name in it leads to, or None if none can be
    made (the folder not ours: `check` says so before). An unnamed one (O_TMPFILE) where the file
    system has them; NFS and CIFS, where locks are likeliest to be missing, have none, so there a
    uniquely named one, unlinked as soon as it is made. `check` thus writes nothing that outlives
    it but in that instant's kill, and then only an empty dot-file; not testing would pass a
    folder `run` answers notes twice in."""
    try:
        return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:
        pass
    named = folder / f".voxdesk-check-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        fd = os.open(named, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except OSError:
        return None
    try:
        named.unlink()
    except OSError:
        os.close(fd)
        raise
    return fd


def unwritable(folder: Path, files: list[Path]) -> Path | None:
    """`folder`, or the first of `files` (and of each one's -wal and -shm), that exists and this
    process may not write: the stores `check` opens read-only would not find it out."""
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        return folder
    for path in files:
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if file.exists() and not os.access(file, os.W_OK):
                return file
    return None


def open_to_others(folder: Path) -> list[Path]:
    """The files in `folder` other users can read: a folder made before voxdesk made its own
    owner-only keeps its modes, and with them players' words and Discord ids open to every login.
    None when the folder itself lets no one else in, whatever its files' modes."""
    if not folder.is_dir() or not folder.stat().st_mode & 0o011:
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.stat().st_mode & 0o044)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        # Python's "[Errno 13] Permission denied: 'var/players.db'" says neither whose the file is
        # nor whom voxdesk runs as, the usual cause being `init` run as another user.
        owner = other_owner(exc.filename) if isinstance(exc, PermissionError) else ""
        return f"{exc.filename}: {exc.strerror}{owner}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


async def _one(service: str, backend: str, run: Callable[[], Awaitable[str]]) -> CheckResult:
    try:
        detail = await asyncio.wait_for(run(), CHECK_TIMEOUT)
    except TimeoutError:
        return CheckResult(service, backend, False, f"no answer within {CHECK_TIMEOUT:.0f} s")
    except Exception as exc:
        log.debug("check of %s failed", service, exc_info=True)
        return CheckResult(service, backend, False, masked(_reason(exc)))
    # Printed by `check` and shown on the desk, past every log handler: a service's refusal may
    # echo a key, a setting's error the address it names with its password.
    return CheckResult(service, backend, True, masked(detail), warn=isinstance(detail, NeedsHuman))


async def _check_local_manuals(settings: Settings, manuals: object) -> str:
    """The local index's own line, and the manuals of the folder it no longer matches: a manual
    added, changed or removed since `init` built it is answered from the old passages (or not at
    all) until `init` runs again. The index keeps each passage's text, so the folder's manuals
    are cut as `init` cuts them and compared whole."""
    from bot.tools.manual_chunks import chunk_manuals

    detail: str = await manuals.check()  # type: ignore[attr-defined]
    held = await manuals.indexed()  # type: ignore[attr-defined]
    if not held:
        return detail  # the empty index's own line says to run `init`
    folder = settings.manuals_dir
    try:
        chunks = await asyncio.to_thread(chunk_manuals, folder)
    except OSError as exc:
        # The index still answers: only the comparison is lost, not the line.
        return NeedsHuman(f"{detail}; the manuals in {folder} not compared with the index: {_reason(exc)}")
    if not chunks:
        # A folder gone, or one this user may not list (glob then finds nothing): not every manual
        # removed, and `init` refuses a folder that holds none.
        return NeedsHuman(
            f"{detail}; no manuals found in {folder} to compare the index with: check storage.manuals_dir"
        )
    found: dict[str, list[tuple[str, str, str]]] = {}
    for chunk in chunks:
        found.setdefault(chunk.source, []).append((chunk.key, chunk.title, chunk.text))
    differ = [
        ("added", sorted(found.keys() - held.keys())),
        ("changed", sorted(n for n in found.keys() & held.keys() if found[n] != held[n])),
        ("removed", sorted(held.keys() - found.keys())),
    ]
    if not any(names for _, names in differ):
        return detail
    said = "; ".join(f"{how} {', '.join(names)}" for how, names in differ if names)
    return NeedsHuman(
        f"{detail}; the manuals in {folder} differ from the index ({said}): players are answered"
        " from the old passages until `python -m bot init` indexes them again"
    )


# Each tool backend's database, when it is the local one.
DATABASES = {"stats": "players", "manuals": "manuals", "grievances": "grievances"}


class _Compared:
    """A local manuals index whose check compares it with the manuals folder too."""

    def __init__(self, settings: Settings, manuals: object) -> None:
        self._settings, self._manuals = settings, manuals

    async def check(self) -> str:
        return await _check_local_manuals(self._settings, self._manuals)

    async def aclose(self) -> None:
        await self._manuals.aclose()  # type: ignore[attr-defined]


async def check_all(settings: Settings, live: App | None = None, for_run: bool = False) -> list[CheckResult]:
    """One result per service, checked concurrently: the storage folder's databases, the engine,
    its offline fallback, the three tool backends, the Discord token (a FAIL if
    missing only `for_run`), the `.env` file's modes when there is one, and, with the web front end
    on or its secrets set, those secrets. `live`: the running bot's own clients (the desk), rather
    than a fresh set built and closed."""
    from bot import app

    def backend(
        name: str, build: Callable[[Settings, bool], Awaitable[object]]
    ) -> Callable[[], Awaitable[str]]:
        if live is not None:
            if name == "manuals" and settings.tools.manuals == "sqlite":
                return lambda: _check_local_manuals(settings, live.manuals)  # type: ignore[attr-defined]
            return getattr(live, name).check  # type: ignore[no-any-return]
        # Read-only: `check` looks, run before an upgrade too, and a store opened to write would
        # migrate its database (which the version still serving may then refuse) or file the
        # spool, and make files in a storage.dir set wrong.
        database = getattr(app.storage_paths(settings), DATABASES[name])
        if name == "grievances" and settings.tools.grievances == "local":
            return lambda: _check_local_grievances(lambda: build(settings, True), database)
        if name == "manuals" and settings.tools.manuals == "sqlite":

            async def build_manuals() -> object:
                manuals = await build(settings, True)
                return _Compared(settings, manuals)

            return lambda: _check_backend(build_manuals, database)
        return lambda: _check_backend(lambda: build(settings, True), database)

    async def discord() -> str:
        said = check_discord_token(settings, for_run)
        if live is not None or not settings.secrets.discord_token:
            return said  # the desk's bot logged in with it: its gateway state is on /healthz
        from cogs.runner import try_token  # discord.py's login request, where `run` makes it

        return await try_token(settings)

    t, s = settings.tools, settings.secrets
    # In the order to mend them: the storage folder first, where the speech models, the local
    # databases and the grievance spool all live (a folder the bot cannot use fails each of them
    # too, and `init`, which the engine's line may ask for, writes there). Under a running bot
    # too: each database it holds open has its -wal, so the schema read goes read-only through
    # SQLite's locks, which a WAL writer never waits on.
    checks = [
        _one("storage", "sqlite", lambda: asyncio.to_thread(check_storage, settings)),
        _one("engine", settings.agent.engine, lambda: check_engine(settings, live)),
        _one("stats", t.stats, backend("stats", app.build_stats_backend)),
        _one("manuals", t.manuals, backend("manuals", app.build_manuals_backend)),
        _one("grievances", t.grievances, backend("grievances", app.build_grievance_backend)),
        _one("discord", "token", discord),
    ]
    if _has_offline_fallback(settings, live):
        checks.insert(2, _one("fallback", "offline", lambda: check_fallback(settings, live)))
    if await asyncio.to_thread(DOTENV.is_file):
        checks.append(_one("secrets", ".env", lambda: asyncio.to_thread(check_dotenv)))
    if (
        settings.web.enabled
        or s.web_session_key
        or s.web_staff_password_hash
        or s.web_staff_password
        or s.web_staff
    ):
        checks.append(_one("web", "secrets", lambda: check_web_secrets(settings)))
    return list(await asyncio.gather(*checks))


def _has_offline_fallback(settings: Settings, live: App | None) -> bool:
    from bot.app import offline_fallback_wanted

    if live is not None:
        return live.fallback is not None
    return offline_fallback_wanted(settings, settings.agent.engine)


async def say_what_the_cloud_tools_refuse(app: App) -> None:
    """At `run`'s start, the tool backends that are remote services (an ODBC player database,
    Azure AI Search, Jira) tried once as `check` tries them, each failing one a WARNING line
    naming what to mend. They are otherwise first asked when a player needs them: a mistyped
    server, database, jira.project or search.index would go unsaid until then, grievances
    waiting unpushed. The bot serves meanwhile, as it does while any of them is down. An ODBC
    driver that is not installed has its own ERROR line as the backend is built: not said twice."""
    tools, tried = app.settings.tools, []
    if tools.stats == "odbc":
        from bot.tools.odbc_stats import missing_driver

        connection = app.settings.secrets.sql_connection_string
        if await asyncio.to_thread(missing_driver, connection) is None:
            tried.append(_one("stats", tools.stats, app.stats.check))  # type: ignore[attr-defined]
    if tools.manuals == "azure":
        tried.append(_one("manuals", tools.manuals, app.manuals.check))  # type: ignore[attr-defined]
    if tools.grievances == "jira":
        tried.append(_one("grievances", tools.grievances, app.grievances.check))  # type: ignore[attr-defined]
    for result in await asyncio.gather(*tried):
        if not result.ok:
            log.warning("start-up check failed: %s (%s): %s", result.service, result.backend, result.detail)
