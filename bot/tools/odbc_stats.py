"""Player stats over ODBC (Azure SQL in production, the SQLite ODBC driver in tests) with aioodbc.

The queries are the embedded path's, from `bot.tools.stats_sql`; only the dialect name differs.
One summary runs on one pooled connection; a transient failure (a dropped connection, Azure SQL
throttling or failover) discards that connection and retries the whole summary on a fresh one;
a connection found gone discards the idle others with it, which the same drop ended, and a
statement that outlasts the query timeout those idle since it began, which a server gone silent
would leave half-open. A login that fails holds off every other for a few seconds (`LoginBreaker`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import math
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aioodbc
import aioodbc.cursor
import pyodbc

from bot import sentences as say
from bot.config import OdbcSettings
from bot.logs import Outage
from bot.tools import stats_sql
from bot.tools.base import AioodbcUnlike, PlayerSummary, ToolError
from bot.tools.stats_sql import Fetch

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF_SECONDS = 4.0
# Azure SQL's gateway ends a session idle for 30 minutes (with the Proxy connection policy, the
# default from outside Azure and through a private endpoint; TCP keepalives do not count). A
# pooled connection idle this long is closed before an acquire rather than handed to a player
# to fail on.
IDLE_SECONDS = 20 * 60.0

# Connection-level SQLSTATEs: link failure, cannot connect, no connection, rejected, timeouts;
# and 40001, a serialization failure (a deadlock victim, a snapshot conflict), whatever native
# error a driver gives with it: the summary only reads, so it runs again as it is.
TRANSIENT_SQLSTATES = frozenset({"08S01", "08001", "08003", "08004", "HYT00", "HYT01", "40001"})
# Microsoft's driver (17.2 and later, 18) restores a dropped idle connection itself, and says
# IMC01 to IMC06 ("The connection is broken and recovery is not possible") when it cannot: that
# connection is gone, but a fresh one may well open.
BROKEN_SQLSTATE_PREFIX = "IMC"
# A statement that outlasted odbc.query_timeout_seconds (SQL_ATTR_QUERY_TIMEOUT).
QUERY_TIMEOUTS = frozenset({"HYT00"})
# Times the query timeout a statement runs before it is cancelled here: a driver does not always
# keep that timeout (the SQLite one ignores it; Microsoft's has been seen to wait minutes past it
# for a server whose network went away), and the player's note would wait as long.
STUCK_STATEMENT_TIMEOUTS = 2
# Azure SQL's documented transient errors (database unavailable, failover, throttling, network),
# and SQL Server's deadlock victim (1205) and lock timeout (1222): the summary only reads, so
# running it again once the other transaction has its locks is what SQL Server itself advises.
AZURE_TRANSIENT_ERRORS = frozenset(
    {4060, 40197, 40501, 40613, 49918, 49919, 49920, 4221, 10928, 10929, 10053, 10054, 10060, 233, 64}
    | {1205, 1222}
)
# The ones that say the connection itself is gone, not the statement refused: a dropped link, a
# connection not open, one the driver could not restore (IMC), a TCP reset or abort (10054, 10053,
# 64, 233), the service reconfigured under it (40197, a failover). What ends one session this way
# (a failover, the gateway restarting) has ended every other the pool keeps idle.
LOST_SQLSTATES = frozenset({"08S01", "08003"})
LOST_ERRORS = frozenset({10053, 10054, 64, 233, 40197})
# SQLite's "busy" and "locked": another writer holds the file; waiting is the cure.
SQLITE_TRANSIENT_ERRORS = frozenset({5, 6})
# Seconds after a failed login in which a lookup is answered at once that stats are unavailable,
# rather than log in again: aioodbc's pool logs in one at a time, holding its lock, so with the
# database unreachable each note of a raid waited its turn for a login that timed out, to its own
# deadline. Then one lookup logs in to probe; the others are answered at once until it is done.
LOGIN_BREAKER_SECONDS = 5.0
# Logins a driver that does not keep its login timeout may hold in its threads at once. One in
# the driver past that timeout is stuck on the network (a server gone silent, a failover's old
# address): while it stays, minutes or for good, a second may see whether the database is back;
# no third, so that a dead network leaves two threads of the driver's pool stuck at most.
STUCK_LOGINS = 2
# pyodbc's own words when the driver connection under a pooled one has gone away.
_CLOSED_CONNECTION = "attempt to use a closed connection"

# pyodbc messages end in "(native error) (ODBC function)", e.g. "... (40613) (SQLDriverConnect)".
_NATIVE_ERROR = re.compile(r"\((\d+)\)")
# Every keyword of the SQL Server and SQLite drivers whose value is (or holds) a secret: ClientKey
# is "file:<path>,<password>", KeyStoreSecret an Always Encrypted client secret.
_SECRET_VALUE = re.compile(
    r"(?i)\b(pwd|password|keystoresecret|clientkey|clientsecret|accesstoken)(\s*=\s*)"
    r"(\{(?:[^}]|\}\})*\}?|[^;]*)"
)


def redact(connection_string: str) -> str:
    """The connection string with secret values masked, fit for a log line."""
    return _SECRET_VALUE.sub(r"\1\2***", connection_string)


# ODBC Driver 18 encrypts by default and verifies the server's certificate (OpenSSL's words on
# Linux, Schannel's on Windows): one not trusted, or issued for another name than the one
# connected to, refuses every connection alike, under SQLSTATE 08001 as a network failure does.
_UNTRUSTED_CERTIFICATE = re.compile(
    r"(?i)certificate verify failed|issued by an authority that is not trusted"
    r"|target principal name is incorrect"
)


def is_transient(exc: BaseException, dialect: str = "sqlserver") -> bool:
    """Whether another attempt on a fresh connection may succeed where this one failed."""
    if isinstance(exc, TimeoutError):  # waiting for a pooled connection or a login
        return True
    if not isinstance(exc, pyodbc.Error):
        return False
    if len(exc.args) < 2:  # pyodbc's own errors carry only a message
        return bool(exc.args) and str(exc.args[0]).lower().startswith(_CLOSED_CONNECTION)
    sqlstate, message = str(exc.args[0]), str(exc.args[1])
    if _UNTRUSTED_CERTIFICATE.search(message):
        return False
    if sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith(BROKEN_SQLSTATE_PREFIX):
        return True
    codes = {int(n) for n in _NATIVE_ERROR.findall(message)}
    transient = SQLITE_TRANSIENT_ERRORS if dialect == "sqlite" else AZURE_TRANSIENT_ERRORS
    return bool(codes & transient)


def _timed_out(exc: BaseException) -> bool:
    """Whether `exc`, raised by a statement, is the driver's query timeout."""
    return isinstance(exc, pyodbc.Error) and bool(exc.args) and str(exc.args[0]) in QUERY_TIMEOUTS


def is_connection_lost(exc: BaseException) -> bool:
    """Whether `exc`, raised by a statement, says its connection is gone."""
    if not isinstance(exc, pyodbc.Error):
        return False
    if len(exc.args) < 2:
        return bool(exc.args) and str(exc.args[0]).lower().startswith(_CLOSED_CONNECTION)
    sqlstate = str(exc.args[0])
    if sqlstate in LOST_SQLSTATES or sqlstate.startswith(BROKEN_SQLSTATE_PREFIX):
        return True
    return bool({int(n) for n in _NATIVE_ERROR.findall(str(exc.args[1]))} & LOST_ERRORS)


_HINTS = {
    "28000": "login failed: check the user and password in VOXDESK_SQL_CONNECTION_STRING",
    "IM002": "no such ODBC driver or data source: check Driver= in VOXDESK_SQL_CONNECTION_STRING",
    # Microsoft's driver: a server name that does not resolve, a port closed or filtered.
    "08001": "server unreachable: check Server= (name and port) in VOXDESK_SQL_CONNECTION_STRING,"
    " and that its firewall lets this machine in",
}
# SQL Server's 4060 comes first, before the 18456 ("Login failed") that follows it, for a
# Database= the server has no such database by, or one the login may not open.
_NO_DATABASE = re.compile(r"\(4060\)")
_NO_DATABASE_HINT = (
    "database does not exist, or the login may not open it: check Database= in VOXDESK_SQL_CONNECTION_STRING"
)
# The SQLite driver's SQLITE_CANTOPEN at connect: a file in a folder that does not exist, or one
# this user may not read.
_SQLITE_CANNOT_OPEN = re.compile(r"\[SQLite\]connect failed \(14\)")
_SQLITE_CANNOT_OPEN_HINT = (
    "database does not exist or cannot be opened: check Database= in VOXDESK_SQL_CONNECTION_STRING"
)
# Microsoft's driver says HYT00 "Login timeout expired" before the 08001 of a server that never
# answered; HYT00 alone is also a statement's query timeout, which is no connection failure.
_LOGIN_TIMEOUT = "Login timeout expired"
_UNTRUSTED_HINT = (
    "the server's TLS certificate is not trusted: connect by the name it was issued for"
    " (<server>.database.windows.net) with CA certificates installed, or, for a server with a"
    " self-signed one, add TrustServerCertificate=yes to VOXDESK_SQL_CONNECTION_STRING"
)
# unixODBC's words for a driver it cannot load (not installed, or a wrong library path), under
# the general warning SQLSTATE 01000 rather than IM002.
_DRIVER_NOT_LOADED = "Can't open lib"


# Driver=, DSN= and FileDSN= with their values: {braced}, a brace inside written twice, or up to
# the next ";".
_DRIVER_OR_DSN = re.compile(r"(?i)(?:^|;)\s*(driver|dsn|filedsn)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)")
# A driver named by its library rather than by its name in odbcinst.ini: the loader searches it.
_LIBRARY = re.compile(r"(?i)[/\\]|\.(so|dylib|dll)(\.\d+)*$")


def missing_driver(connection_string: str) -> str | None:
    """Why the driver manager will not find the connection string's driver or data source, or None
    when it will as far as can be told without connecting: what `describe` says of IM002 and
    "Can't open lib", told at start rather than at the first player's question."""
    given: dict[str, str] = {}
    for keyword, value in _DRIVER_OR_DSN.findall(connection_string):
        value = value.strip()
        if value.startswith("{") and value.endswith("}"):
            value = value[1:-1].replace("}}", "}")
        given.setdefault(keyword.lower(), value)  # ODBC takes a keyword's first value
    if (driver := given.get("driver")) is not None:
        if os.path.isabs(driver):
            return None if os.path.exists(driver) else f"the ODBC driver library {driver} does not exist"
        installed = pyodbc.drivers()
        if _LIBRARY.search(driver) or driver.lower() in {d.lower() for d in installed}:
            return None
        return f"ODBC driver '{driver}' is not installed (installed: {', '.join(installed) or 'none'})"
    if "filedsn" in given:  # the file names the driver: the connection tells
        return None
    sources = {name.lower() for name in pyodbc.dataSources()}
    if (dsn := given.get("dsn")) is not None:
        return None if dsn.lower() in sources else f"no ODBC data source named '{dsn}'"
    return None if "default" in sources else "neither Driver= nor DSN= is given"


async def say_if_the_driver_is_missing(connection_string: str) -> None:
    """One ERROR line at start when the driver cannot be loaded. The bot starts all the same, as
    with the database down, its other tools serving; a player asking hears stats are unavailable."""
    if (missing := await asyncio.to_thread(missing_driver, connection_string)) is not None:
        log.error(
            "player stats: %s: check VOXDESK_SQL_CONNECTION_STRING; until then players hear"
            " their stats are unavailable",
            redact(missing),
        )


def describe(exc: BaseException) -> str:
    """One readable line for a driver error, with any password scrubbed out."""
    if isinstance(exc, TimeoutError):
        return "no connection from the pool in time (the database did not answer)"
    if isinstance(exc, pyodbc.Error) and len(exc.args) >= 2:
        sqlstate, message = str(exc.args[0]), str(exc.args[1])
        # Drop the "[08001] " prefix that repeats the SQLSTATE, and the ODBC function name.
        message = re.sub(r"^\[\w+\]\s*", "", message)
        message = re.sub(r"\s*\(SQL\w+\)\s*$", "", message)
        if sqlstate == "01000" and _DRIVER_NOT_LOADED in message:
            hint = _HINTS["IM002"]
        elif _UNTRUSTED_CERTIFICATE.search(message):
            hint = _UNTRUSTED_HINT
        elif _NO_DATABASE.search(message):
            hint = _NO_DATABASE_HINT
        elif _SQLITE_CANNOT_OPEN.search(message):
            hint = _SQLITE_CANNOT_OPEN_HINT
        elif _LOGIN_TIMEOUT in message:
            hint = _HINTS["08001"]
        else:
            hint = _HINTS.get(sqlstate, "")
        text = f"{hint} ({message}, SQLSTATE {sqlstate})" if hint else f"{message} (SQLSTATE {sqlstate})"
    else:
        text = str(exc) or type(exc).__name__
    return redact(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)


def _cause(exc: BaseException) -> str:
    """What an outage is, to tell a new one from the same one going on: a driver error's SQLSTATE
    and native error numbers, not its words, which Azure SQL makes new with every attempt (40613
    names the session tracing id, 40501 an incident id)."""
    if isinstance(exc, pyodbc.Error) and len(exc.args) >= 2:
        codes = sorted({int(n) for n in _NATIVE_ERROR.findall(str(exc.args[1]))})
        if codes:
            return f"SQLSTATE {exc.args[0]} {codes}"
    return describe(exc)


class StatementStuck(pyodbc.OperationalError):
    """A statement the driver let run past its query timeout, cancelled here: told as the query
    timeout the driver should have raised, and retried and logged as one."""

    def __init__(self, seconds: float | str | None, *rest: object) -> None:
        if isinstance(seconds, str):  # made again from its arguments (stats_sql._again)
            super().__init__(seconds, *rest)
            return
        super().__init__("HYT00", f"[HYT00] no answer in {seconds or 0:g} s, cancelled (0)")


class OdbcStatsError(Exception):
    """`check()` could not reach the database; the message is the driver's reason, scrubbed."""


# What of aioodbc this module reaches beneath its API, as aioodbc 0.5 has it (pyproject.toml keeps
# it below 0.6): each name, the method of aioodbc's that uses or sets it, and what relies on it. A
# release that renamed one would have every login go ungated (`_GatedPool._fill_free_pool` no
# longer called), or fail each lookup, or leave a dead connection in the pool: refused at start
# instead, naming it. Looked up when checked, so that a release lacking one of those methods is
# refused as well, not an AttributeError at import.
_AIOODBC_PARTS = (
    ("_fill_free_pool", "Pool._acquire", "the pool's logins, which the login breaker gates"),
    ("_free", "Pool.__init__", "the pool's idle connections, which dead ones are taken from"),
    ("_cond", "Pool.__init__", "the pool's waiters, woken when a failed query frees its slot"),
    ("_execute", "Connection.close", "a connection's executor, a stuck statement cancelled on"),
    ("_conn", "Connection.__init__", "a connection's driver connection, let go once broken"),
    ("_impl", "cursor.Cursor.__init__", "a cursor's statement, which a stuck one is cancelled by"),
)


def unlike_aioodbc_0_5() -> str | None:
    """What of aioodbc this module relies on the installed release lacks; None when nothing."""
    version = getattr(aioodbc, "__version__", "?")
    for name, where, what in _AIOODBC_PARTS:
        user: Any = aioodbc
        for part in where.split("."):
            user = getattr(user, part, None)
        code = getattr(user, "__code__", None)
        if code is None or name not in code.co_names:
            return f"aioodbc {version}'s {where} uses no {name} ({what})"
    fill = getattr(aioodbc.Pool, "_fill_free_pool", None)
    if fill is None or list(inspect.signature(fill).parameters) != ["self", "override_min"]:
        return f"aioodbc {version} has no Pool._fill_free_pool(self, override_min), the logins gated"
    return None


class LoginsHeldOff(Exception):
    """A lookup answered without a login, `failure` being the last login's, which failed less than
    LOGIN_BREAKER_SECONDS ago or is being tried again by another lookup."""

    def __init__(self, failure: BaseException) -> None:
        super().__init__(describe(failure))
        self.failure = failure


class LoginBreaker:
    """Whether a lookup may log in. Closed while logins work; open for `seconds` after one fails,
    every lookup that would log in answered at once meanwhile; then the first to log in probes,
    the others answered at once until its login ends, bounded by the driver's login timeout and
    the lookup's deadline: it closes the breaker, or opens it again. A login a lookup's deadline
    or cancellation left in the driver, which does not keep its login timeout, holds off the next
    (`in_driver`): no probe is due, and another login waits for it, until it returns or has been
    there longer than `login_timeout`; then one more may begin, STUCK_LOGINS in all at most."""

    def __init__(
        self,
        seconds: float = LOGIN_BREAKER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        login_timeout: float = 0.0,
    ) -> None:
        self.seconds = seconds
        self.clock = clock
        self.login_timeout = login_timeout  # the driver's, 0 for none: no login is then overdue
        self.failure: BaseException | None = None  # the last login's, while logins fail
        self._failed_at = 0.0
        self._probe: asyncio.Task[Any] | None = None  # the lookup logging in to probe
        self._cut: asyncio.Task[Any] | None = None  # the last lookup whose login was cancelled
        # The logins' threads that may still be in the driver, each with clock() when it began.
        self._threads: list[tuple[concurrent.futures.Future[Any], float]] = []
        self._said_stuck = False  # that probes wait for a login stuck in the driver, this outage

    def login_thread(self, thread: concurrent.futures.Future[Any]) -> None:
        """`thread` runs a login, its lookup's wait for it bounded, the driver's call not."""
        self._threads = [(t, at) for t, at in self._threads if not t.done()]
        self._threads.append((thread, self.clock()))

    def in_driver(self) -> list[concurrent.futures.Future[Any]]:
        """The threads of logins still in the driver that hold off a new one (one of them to
        return first): none when there are none, or when the one there is overdue."""
        self._threads = [(t, at) for t, at in self._threads if not t.done()]
        if len(self._threads) < STUCK_LOGINS and self.overdue_in() == 0:
            return []
        return [t for t, _ in self._threads]

    def overdue_in(self) -> float | None:
        """Seconds until the one login in the driver has outlasted the login timeout (0 when it
        has, or there is none), None when it never will be or another may not begin beside it."""
        live = [at for t, at in self._threads if not t.done()]
        if not live:
            return 0.0
        if len(live) >= STUCK_LOGINS or self.login_timeout <= 0:
            return None
        return max(0.0, live[0] + self.login_timeout - self.clock())

    def probing(self) -> bool:
        """Whether a lookup is logging in to probe (it holds the pool's lock until that ends)."""
        return self._probe is not None and not self._probe.done()

    def held_off(self) -> LoginsHeldOff | None:
        """What the current lookup is answered with at once, or None if it may go on."""
        if self.failure is None:
            return None
        task = asyncio.current_task()
        if self._probe is not None and not self._probe.done():
            return None if self._probe is task else LoginsHeldOff(self.failure)
        if self.clock() - self._failed_at < self.seconds:
            return LoginsHeldOff(self.failure)
        if self.in_driver():
            if not self._said_stuck:
                self._said_stuck = True
                log.info(
                    "player stats: no login tried while %s still in the ODBC driver, which did not"
                    " keep its login timeout: players hear stats are unavailable until one returns",
                    "an earlier login is" if len(self._threads) == 1 else f"{len(self._threads)} logins are",
                )
            return LoginsHeldOff(self.failure)
        return None

    def logging_in(self) -> None:
        """The current lookup is about to log in: refused while held off, else the probe if the
        breaker was open."""
        if (refusal := self.held_off()) is not None:
            raise refusal
        if self.failure is not None:
            self._probe = asyncio.current_task()

    def answered(self) -> None:
        """The database answered: a login, or a lookup on a connection kept from before (else a
        login after it would still probe, holding off whoever asked meanwhile)."""
        self.failure, self._probe, self._said_stuck = None, None, False

    def failed(self, exc: BaseException) -> None:
        self.failure, self._failed_at, self._probe = exc, self.clock(), None

    def cancelled(self) -> None:
        """The current lookup's login was cancelled: by its deadline (`cut_short` tells), or with
        its turn, which says nothing of the database: another lookup probes."""
        task = self._cut = asyncio.current_task()
        if self._probe is task:
            self._probe = None

    def cut_short(self) -> bool:
        """Whether the current lookup's wait for a connection ended in a login, cancelled."""
        cut, self._cut = self._cut, None
        return cut is not None and cut is asyncio.current_task()


# Set by `check`, which logs in whatever the breaker says, and tells it nothing: the health
# command wants the state now, and changes none.
_UNGATED: contextvars.ContextVar[bool] = contextvars.ContextVar("odbc_ungated", default=False)
# Set while aioodbc logs in: the breaker that the login's thread is handed to (_DriverThreads).
_LOGGING_IN: contextvars.ContextVar[LoginBreaker | None] = contextvars.ContextVar(
    "odbc_logging_in", default=None
)
# Set while aioodbc logs in: the threads of this lookup's logins, each listed as submitted.
_LOGINS: contextvars.ContextVar[list[concurrent.futures.Future[Any]] | None] = contextvars.ContextVar(
    "odbc_logins", default=None
)


class _DriverThreads(ThreadPoolExecutor):
    """The threads the driver's calls block, aioodbc's `Connection._execute` submitting each; a
    login's (submitted while _GatedPool logs in) handed to the breaker, which knows it by the
    future of its thread, not the lookup's wait for it."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        thread = super().submit(fn, *args, **kwargs)
        if (breaker := _LOGGING_IN.get()) is not None:
            breaker.login_thread(thread)
        if (logins := _LOGINS.get()) is not None:
            logins.append(thread)
        return thread


def _close_when_made(login: concurrent.futures.Future[Any], threads: ThreadPoolExecutor) -> None:
    """Close the driver connection `login`'s thread makes, if it makes one: its lookup was cut
    while it was in the driver, and nobody takes it. Else it stays open, outside the pool and
    uncounted by it (a session more on the server), until the last reference to it goes."""
    loop_thread = threading.get_ident()

    def close(done: concurrent.futures.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        if threading.get_ident() == loop_thread:
            # Returned before its lookup was cut, and called here at once: the driver's disconnect
            # may wait on the network, holding the loop. ThreadPoolExecutor's own submit: this is
            # no login, for the breaker to wait for or to list.
            try:
                ThreadPoolExecutor.submit(threads, close, done)
                return
            except RuntimeError:  # the threads shut down: no other thread to close it on
                pass
        try:
            done.result().close()  # in the login's own thread as it returns, or another driver thread
        except pyodbc.Error as exc:
            log.debug("closing a login nobody waited for: %s", describe(exc))

    login.add_done_callback(close)


async def _returned(threads: Sequence[concurrent.futures.Future[Any]], seconds: float | None) -> None:
    """Once one of `threads` has returned, or after `seconds` (None: no limit); cancelling the
    wait leaves them be."""
    mirrors = [asyncio.wrap_future(thread) for thread in threads]
    for mirror in mirrors:
        # Its outcome was its own lookup's to take, or nobody's: not "never retrieved" at exit.
        mirror.add_done_callback(lambda done: done.cancelled() or done.exception())
    await asyncio.wait(mirrors, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)


class _GatedPool(aioodbc.Pool):
    """aioodbc's pool with its logins let through, or refused, by a LoginBreaker."""

    def __init__(self, breaker: LoginBreaker, *, executor: ThreadPoolExecutor, **kwargs: Any) -> None:
        super().__init__(executor=executor, **kwargs)
        self.breaker = breaker
        self._driver_threads = executor

    async def _fill_free_pool(self, override_min: bool) -> None:
        # aioodbc logs in here (minsize is 0) when no connection is free and the pool has room.
        if self._free or not override_min or self.size >= self.maxsize:
            await super()._fill_free_pool(override_min)
            return
        gated = not _UNGATED.get()
        if gated:
            self.breaker.logging_in()
        try:
            while earlier := self.breaker.in_driver():
                # One its lookup gave up on (cancelled with its turn, or `check`'s deadline; a
                # probe is refused instead): the driver may not keep its login timeout, and a
                # login begun beside it might stay there too. Once it is overdue, one may.
                await _returned(earlier, self.breaker.overdue_in())
            logins: list[concurrent.futures.Future[Any]] = []
            logging_in, listing = _LOGGING_IN.set(self.breaker), _LOGINS.set(logins)
            try:
                await super()._fill_free_pool(override_min)
            except asyncio.CancelledError:
                for login in logins:
                    _close_when_made(login, self._driver_threads)
                raise
            finally:
                _LOGINS.reset(listing)
                _LOGGING_IN.reset(logging_in)
        except asyncio.CancelledError:
            if gated:
                self.breaker.cancelled()
            raise
        except Exception as exc:
            if gated:
                self.breaker.failed(exc)
            raise
        if gated:
            self.breaker.answered()


class OdbcStats:
    """StatsBackend over any ODBC database holding the tables of data/sql/*/schema.sql."""

    def __init__(self, pool: _GatedPool, executor: ThreadPoolExecutor, settings: OdbcSettings) -> None:
        self._pool = pool
        self._breaker = pool.breaker
        self._executor = executor
        self._settings = settings
        self._ranking = stats_sql.Ranking(describe=describe)
        # One a connection, handed out in the order players asked: aioodbc's pool gives a freed
        # connection to whoever reaches it first, and under a raid a note arriving just then
        # overtook one already waiting, who queued again at the back, up to the deadline.
        self._turns = asyncio.Semaphore(settings.pool_size)
        # Connections a turn cancelled while they closed, given back to the pool once closed.
        self._closing: set[asyncio.Task[None]] = set()
        # Each player asking while queries fail is no news to the log.
        self._outage = Outage(log, "player stats: the database answers again", logging.ERROR, logging.INFO)

    @classmethod
    async def open(cls, connection_string: str, settings: OdbcSettings) -> OdbcStats:
        """A pool that connects lazily (minsize 0): the bot starts, and serves its other tools, even
        while the database is down; the first question connects, and `check` reports reachability."""
        if unlike := unlike_aioodbc_0_5():
            raise AioodbcUnlike(
                f"player stats over ODBC need aioodbc 0.5: {unlike}; install aioodbc>=0.5,<0.6"
            )
        timeout = settings.query_timeout_seconds

        async def configure(conn: pyodbc.Connection) -> None:
            conn.timeout = timeout  # SQL_ATTR_QUERY_TIMEOUT on every statement of this connection

        # The driver's calls block a thread each; their own pool keeps a stuck database from
        # starving the default executor the audio work runs on.
        executor = _DriverThreads(max_workers=settings.pool_size * 2, thread_name_prefix="odbc")
        pool = _GatedPool(
            LoginBreaker(login_timeout=timeout),
            dsn=connection_string,
            minsize=0,
            maxsize=settings.pool_size,
            echo=False,
            pool_recycle=-1,
            autocommit=True,  # read-only queries: no transaction to commit on every release
            timeout=timeout,  # login timeout
            executor=executor,
            after_created=configure,
        )
        log.info(
            "player stats over ODBC (%s dialect, pool of %d): %s",
            settings.dialect,
            settings.pool_size,
            redact(connection_string),
        )
        return cls(pool, executor, settings)

    async def player_summary(self, user_id: str) -> PlayerSummary | None:
        async def summary_of(fetch: Fetch, retried: Callable[[Exception], bool]) -> PlayerSummary | None:
            def blip(exc: Exception) -> bool:
                # One the summary is tried again after, but a query timeout: a read that outlasts
                # the timeout would do so again, and the last attempt answers without the rank.
                return retried(exc) and not (
                    isinstance(exc, pyodbc.Error) and str(exc.args[0]) in QUERY_TIMEOUTS
                )

            return await stats_sql.player_summary(fetch, user_id, self._ranking, blip)

        try:
            summary = await self._with_retries(summary_of)
        except LoginsHeldOff as held:
            exc, cause = held.failure, _cause(held.failure)
            if self._outage.failing and self._outage.reason == cause:
                # Said when the login failed, or by the probe: no news with each note of a raid.
                log.debug("player stats unavailable, no login tried: %s", describe(exc))
            else:  # the lookup whose login failed, its retry held off
                self._outage.failed(cause, "player stats query failed: %s", describe(exc))
            raise ToolError(say.STATS_UNAVAILABLE) from None
        except (pyodbc.Error, TimeoutError) as exc:
            self._outage.failed(_cause(exc), "player stats query failed: %s", describe(exc))
            raise ToolError(say.STATS_UNAVAILABLE) from None
        self._outage.answered()
        return summary

    async def check(self) -> str:
        """One attempt, no retries: the health command wants the state right now."""

        async def probe(fetch: Fetch) -> list[Sequence[Any]]:
            rows = await fetch(stats_sql.PLAYER_COUNT, ())
            for sql in stats_sql.COLUMNS_READ:
                await fetch(sql, ())
            return rows

        ungated = _UNGATED.set(True)
        try:
            rows = await self._attempt(probe, self._pool_deadline())
        except (pyodbc.Error, TimeoutError) as exc:
            # `from None`: the driver's original error is not carried along to a log unscrubbed.
            raise OdbcStatsError(describe(exc)) from None
        finally:
            _UNGATED.reset(ungated)
        return f"ODBC player database: {rows[0][0]} players"

    async def aclose(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _with_retries(self, work: Callable[[Fetch, Callable[[Exception], bool]], Awaitable[T]]) -> T:
        """`work` on a pooled connection, tried again after a transient failure. It is handed
        whether a failure would be tried again: the summary asks it before the failure reaches
        here, and both go by one decision, or a failure the summary raised for a retry that never
        comes would fail it instead of answering without a rank, and hold off no read of every
        total."""
        retries = max(0, self._settings.retries)
        loop = asyncio.get_running_loop()
        # All attempts together wait for connections until one deadline: when the pool is full,
        # queueing again after each wait would hold the player (4 x 2 x 10 s and the backoffs by
        # default) while the ones ahead are served.
        deadline = self._pool_deadline()
        decided: list[tuple[int, BaseException, float | None]] = []

        def retry_in(exc: BaseException, attempt: int) -> float | None:
            """Seconds before the attempt after this failure of `attempt`, None if there is none:
            decided once, though asked again later (the deadline may have come nearer meanwhile)."""
            for tried, seen, then in decided:
                if tried == attempt and seen is exc:
                    return then
            wait = min(MAX_BACKOFF_SECONDS, self._settings.retry_backoff_seconds * 2**attempt)
            late = deadline is not None and loop.time() + wait >= deadline
            again = attempt < retries and not late and is_transient(exc, self._settings.dialect)
            if again and self._breaker.held_off() is not None:
                # A login failed (this one's or another's): the next attempt is held off, unless
                # a connection idle in the pool serves it, which needs no login. One found gone,
                # or a statement timed out, takes the idle ones with it (`drop`).
                lost = is_connection_lost(exc) or _timed_out(exc)
                again = not lost and self._held_off() is None
            decided.append((attempt, exc, wait if again else None))
            return decided[-1][2]

        for attempt in range(retries + 1):

            def retried(exc: Exception, attempt: int = attempt) -> bool:
                return retry_in(exc, attempt) is not None

            try:
                return await self._attempt(functools.partial(work, retried=retried), deadline)
            except (pyodbc.Error, TimeoutError) as exc:
                wait = retry_in(exc, attempt)
                if wait is None:
                    raise
                # A retry that works is routine; one that does not ends in the one line above.
                log.info(
                    "player stats: transient error on attempt %d of %d, retrying in %.2f s: %s",
                    attempt + 1,
                    retries + 1,
                    wait,
                    describe(exc),
                )
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _pool_deadline(self) -> float | None:
        """Loop time until which a lookup may wait for pooled connections: twice the query
        timeout from now; None when queries have no timeout."""
        limit = self._settings.query_timeout_seconds
        return asyncio.get_running_loop().time() + 2 * limit if limit > 0 else None

    async def _attempt(self, work: Callable[[Fetch], Awaitable[T]], deadline: float | None) -> T:
        # A full pool or a login the driver does not time out itself must not hold a player
        # forever; a running statement is bounded by the driver's query timeout, and by
        # STUCK_STATEMENT_TIMEOUTS of it when the driver does not keep that.
        gated = not _UNGATED.get()
        if gated and (refusal := self._held_off()) is not None:
            raise refusal
        await self._discard_idle(unused_since=asyncio.get_running_loop().time() - IDLE_SECONDS)
        try:
            async with asyncio.timeout_at(deadline):
                await self._turns.acquire()
                try:
                    if gated and (refusal := self._held_off()) is not None:
                        raise refusal  # held off while it waited for a turn
                    conn = await self._pool.acquire()
                except BaseException:
                    self._turns.release()
                    raise
        except TimeoutError as exc:
            if gated and self._breaker.cut_short():
                # A login the driver did not time out itself: the next one would hang as long.
                self._breaker.failed(exc)
            raise
        in_doubt = False  # a statement on this connection failed or was abandoned
        running: aioodbc.cursor.Cursor | None = None  # its cursor, made before it runs
        statement: asyncio.Future[Any] | None = None  # its run in the driver, or its freeing
        freeing = False  # `statement` is its cursor's close, the rows read
        making = False  # `statement` is its cursor being made, nothing run on it yet
        started = 0.0  # loop time the last statement was begun at
        limit = self._settings.query_timeout_seconds
        stuck_after = STUCK_STATEMENT_TIMEOUTS * limit if limit > 0 else None
        stuck = False  # a statement on it ran past stuck_after and was cancelled
        failure: BaseException | None = None  # the last statement's, if it failed
        closing: asyncio.Future[None] | None = None  # the connection's, once dropped

        async def drop(exc: BaseException, cancel: bool = False, within: float | None = None) -> None:
            """Close the connection, in an unknown state after `exc`, so that the pool drops it
            (a closed connection is not put back) and the next attempt opens a fresh one; first
            cancel its statement if `cancel`. Once: dropped again, it waits for the first. With
            `within`, waited for that many seconds at most, then left to close by itself."""
            nonlocal closing
            if closing is None:
                # Shielded: the turn cancelled while the cancel or the statement's thread runs
                # on, the connection would go back to the pool open, that statement still in the
                # driver, or a second close of it would begin beside the first.
                closing = asyncio.ensure_future(dropping(exc, cancel))
            if within is None:
                await asyncio.shield(closing)
                return
            await asyncio.wait({closing}, timeout=within)
            if closing.done() and not closing.cancelled() and (failed := closing.exception()) is not None:
                log.warning("player stats: closing a dropped connection: %s", describe(failed))

        async def dropping(exc: BaseException, cancel: bool) -> None:
            cursor, pending = running, statement
            if making and statement is not None:
                # Cut while its cursor was made: the driver allocating a statement on the
                # connection while another thread closes it may use what that close freed.
                await asyncio.wait({statement})
                made = not statement.cancelled() and statement.exception() is None
                cursor, pending = (statement.result() if made else None), None
            try:
                if cancel and cursor is not None and pending is not None and not freeing:
                    await _cancel_quietly(conn, cursor)
            finally:
                # Whatever the cancel's outcome: else the connection goes back to the pool open,
                # its statement unfreed, for the next player.
                await _close_quietly(conn, cursor, pending)
            if is_connection_lost(exc):
                # Else each idle one would be handed to the next attempt, and to the next
                # player, to fail in turn: more of them than a summary has attempts.
                await self._discard_idle()
            elif _timed_out(exc):
                # A server gone silent (a failover dropping packets rather than resetting
                # sessions) is told from a slow one only by this timeout, and every connection
                # idle since the statement began may be as dead: the one retry the deadline
                # leaves would wait out the timeout again on the next. One used since then
                # answered, and stays.
                await self._discard_idle(unused_since=started)

        try:

            async def fetch(sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
                nonlocal in_doubt, running, statement, freeing, making, started, stuck, failure
                if stuck:
                    # The cancelled statement's thread may still be in the driver: the connection
                    # is not used again, and the summary fails over to a fresh one.
                    raise StatementStuck(stuck_after)
                in_doubt = True
                started = asyncio.get_running_loop().time()
                # Made apart from this turn too: cut meanwhile, the drop waits for it and frees
                # what it made before it closes the connection.
                statement, making = asyncio.ensure_future(_cursor(conn)), True
                try:
                    cursor = running = await asyncio.shield(statement)
                except BaseException as exc:
                    if statement.done() and (statement.cancelled() or statement.exception() is not None):
                        failure, statement, making = exc, None, False  # nothing made to free
                    raise
                making = False
                # Run apart from this turn: abandoned (cancelled, or stuck), it goes on in its
                # thread, and its cursor is closed only once it has returned (`drop`).
                statement = asyncio.ensure_future(_rows(cursor, sql, params))
                try:
                    async with asyncio.timeout(stuck_after):
                        rows = await asyncio.shield(statement)
                except TimeoutError:
                    stuck = True
                    failure = StatementStuck(stuck_after)
                    # The cancel may itself wait on the network, or not take, the close behind it
                    # waiting for the statement: the player waits one query timeout more at most.
                    await drop(failure, cancel=True, within=limit)
                    raise failure from None
                except BaseException as exc:
                    failure = exc
                    if statement.done():
                        # Refused by the database, not cut with this turn: freed now, as an
                        # answered one is. Left to the garbage collector, a connection kept after
                        # it and later closed first keeps the SQLite driver's file open for good.
                        statement, freeing = asyncio.ensure_future(_free_quietly(cursor)), True
                        await asyncio.shield(statement)
                        running, statement, freeing = None, None, False
                    raise
                # Freed apart from this turn too: cut meanwhile, the drop waits for it, rather
                # than cancel or free the statement from another thread while it is freed.
                statement = asyncio.ensure_future(cursor.close())
                freeing = True
                await asyncio.shield(statement)
                in_doubt, running, statement, freeing, failure = False, None, None, False, None
                return rows

            result = await work(fetch)
            if gated:
                self._breaker.answered()
            lost = failure is not None and (is_connection_lost(failure) or _timed_out(failure))
            if in_doubt and lost and closing is None:
                # The summary answered without its last statement, the read of every total: a
                # connection that read says is gone, or that ran out of time (the statement maybe
                # still in the driver), is not handed out again. One refused a statement is kept.
                await drop(failure)
            return result
        except BaseException as exc:
            # A connection whose statement went wrong is in an unknown state. An error from
            # elsewhere, such as another player's failed read of every total handed to this one,
            # leaves it idle and healthy.
            # One dropped already (the turn cancelled while the answered summary's connection
            # closed) is left closing: dropped again, the turn would wait for it all the same,
            # that cancel spent, for as long as a stuck statement stays in the driver.
            if in_doubt and closing is None:
                # Abandoned while it may still run (the player's turn cancelled): closing would
                # wait for it to end, and once closing has begun the driver takes no cancel.
                # SQLCancel, the one call ODBC lets another thread make on a running statement,
                # ends it now, on the server too.
                await drop(exc, cancel=not isinstance(exc, pyodbc.Error))
            raise
        finally:
            if closing is not None and not closing.done():
                # Still the pool's until closed: counted in its size, and waited for at shutdown.
                task = asyncio.get_running_loop().create_task(self._give_back(conn, closing))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            else:
                await self._give_back(conn)

    async def _give_back(self, conn: aioodbc.Connection, closing: asyncio.Future[None] | None = None) -> None:
        try:
            if closing is not None:
                await asyncio.wait({closing})  # its failure or not, the connection goes back
                if not closing.cancelled() and (exc := closing.exception()) is not None:
                    log.warning("player stats: closing a dropped connection: %s", describe(exc))
            await self._pool.release(conn)
            if conn.closed:
                # aioodbc's release() wakes waiters only for a connection that goes back
                # open; without this wait_closed() at shutdown, and a player waiting in the
                # pool, would wait for ever after a failed query.
                async with self._pool._cond:
                    self._pool._cond.notify_all()
        finally:
            self._turns.release()  # even if cancelled above: else the pool shrinks for good

    def _held_off(self) -> LoginsHeldOff | None:
        """The breaker's answer for a lookup about to take a connection: none while one is idle
        in the pool, which needs no login (a database refusing new sessions, at its request
        limit, still answers on those open), unless a probe is logging in, holding the pool's
        lock. A lookup that finds none idle after all is held off at its login (_GatedPool)."""
        refusal = self._breaker.held_off()
        if refusal is not None and self._pool.freesize and not self._breaker.probing():
            return None
        return refusal

    async def _discard_idle(self, unused_since: float = math.inf) -> None:
        """Close the pool's idle connections last used at or before loop time `unused_since` (every
        one by default), so that the next acquire opens a fresh one rather than take a dead one."""
        free = self._pool._free
        stale = [conn for conn in free if conn.last_usage <= unused_since]
        for conn in stale:
            free.remove(conn)  # no longer the pool's: nobody is handed it while it closes
        await asyncio.gather(*(_close_quietly(conn) for conn in stale))


async def _rows(cursor: aioodbc.cursor.Cursor, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    await cursor.execute(sql, *params)
    return list(await cursor.fetchall())


async def _cursor(conn: aioodbc.Connection) -> aioodbc.cursor.Cursor:
    return await conn.cursor()


async def _free_quietly(cursor: aioodbc.cursor.Cursor, what: str = "freeing a failed ODBC statement") -> None:
    try:
        await cursor.close()
    except pyodbc.Error as exc:  # the connection underneath was already gone
        log.debug("%s: %s", what, describe(exc))


async def _cancel_quietly(conn: aioodbc.Connection, cursor: aioodbc.cursor.Cursor) -> None:
    try:
        # On the connection's executor, not the loop: the driver may wait on the network.
        await conn._execute(cursor._impl.cancel)
    except pyodbc.Error as exc:  # the statement had ended, or the connection had gone
        log.debug("cancelling an abandoned ODBC statement: %s", describe(exc))


async def _close_quietly(
    conn: aioodbc.Connection,
    cursor: aioodbc.cursor.Cursor | None = None,
    statement: asyncio.Future[Any] | None = None,
) -> None:
    if statement is not None:
        # A pyodbc cursor is not thread-safe: closed while its statement's thread is still in
        # the driver, it crashes the process. Closing the connection waits as long for that
        # thread (the driver manager holds the connection until the statement returns).
        await asyncio.wait({statement})
        if not statement.cancelled():
            statement.exception()  # its failure was the turn's to tell, and was told
    if cursor is not None:
        # Its statement first: a connection closed with one still allocated (interrupted, or not
        # read to its end) keeps the SQLite driver's database file open for good, pyodbc freeing a
        # statement only while its connection is open: a descriptor more with each statement
        # cancelled or stuck, until the bot runs out of them.
        await _free_quietly(cursor, "closing an abandoned ODBC statement")
    try:
        await conn.close()
    except pyodbc.Error as exc:  # the driver connection underneath was already gone
        log.debug("closing a broken ODBC connection: %s", describe(exc))
        # aioodbc forgets its driver connection only when close() succeeds; without this the pool
        # would take the dead connection back and hand it to the next player.
        conn._conn = None
