"""Player stats over ODBC, for real: aioodbc → unixODBC → the SQLite ODBC driver on players.db.

CI installs `unixodbc` and `libsqliteodbc` from Debian; the driver registers itself as `SQLite3`.
The same SQL runs here as on Azure SQL, so these tests pin
the pool, retry, timeout and error handling that production relies on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import inspect
import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aioodbc
import aioodbc.connection
import aioodbc.cursor
import pyodbc
import pytest

from bot import logs, paths
from bot import sentences as say
from bot.app import running_app, storage_paths
from bot.config import ConfigError, OdbcSettings, Settings, odbc_passwords
from bot.tools import Toolbox, build_tools, odbc_stats, stats_sql
from bot.tools.base import ToolCall, ToolContext, ToolError
from bot.tools.embedded import FtsManuals, SqliteStats
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.odbc_stats import (
    LOGIN_BREAKER_SECONDS,
    STUCK_LOGINS,
    AioodbcUnlike,
    OdbcStats,
    OdbcStatsError,
    StatementStuck,
    describe,
    is_transient,
    redact,
    unlike_aioodbc_0_5,
)
from tests.conftest import BLAZE, NOVA, QUILL, UNLINKED, make_settings, summary_from_rows


@pytest.fixture(autouse=True, scope="module")
def sqlite_odbc_driver() -> None:
    # A failure, not a skip: `bash scripts/dev test` installs the driver, and a skipped ODBC path
    # would let CI pass without ever running it.
    if "SQLite3" not in pyodbc.drivers():
        pytest.fail("the SQLite ODBC driver is missing: apt-get install unixodbc libsqliteodbc")


# Short waits keep the fault tests quick; the logic is the same as with production's values.
FAST = OdbcSettings(
    dialect="sqlite", pool_size=2, query_timeout_seconds=5, retries=2, retry_backoff_seconds=0.01
)
PASSWORD = "hunter2"


def odbc_string(db: Path | str, driver: str = "SQLite3", extra: str = "") -> str:
    # Timeout is the SQLite driver's busy wait in ms (it ignores ODBC's query timeout attribute).
    return f"Driver={driver};Database={db};Timeout=200{extra}"


def players_db(settings: Settings) -> Path:
    return storage_paths(settings).players


def linked_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT discord_user_id FROM players ORDER BY player_id")]


def table_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("players", "game_sessions", "achievements")
        }


def handles_on(db: Path) -> list[str]:
    """This process's open descriptors on the database file (and its journal, WAL and shm)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return sorted(t for t in targets if t.startswith(str(db)))


def lock_exclusively(db: Path) -> sqlite3.Connection:
    """Another writer holding the whole file, as a long write transaction would."""
    locker = sqlite3.connect(db, isolation_level=None)
    # In WAL mode readers pass a writer's lock; the rollback journal makes them wait.
    assert locker.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    locker.execute("BEGIN EXCLUSIVE")
    return locker


async def embedded_summary(db: Path, user: str) -> object:
    stats = await SqliteStats.open(db)
    try:
        return await stats.player_summary(user)
    finally:
        await stats.aclose()


@pytest.fixture
async def odbc(settings: Settings) -> AsyncIterator[OdbcStats]:
    stats = await OdbcStats.open(odbc_string(players_db(settings)), FAST)
    try:
        yield stats
    finally:
        await stats.aclose()


@pytest.fixture
async def embedded(settings: Settings) -> AsyncIterator[SqliteStats]:
    stats = await SqliteStats.open(players_db(settings))
    try:
        yield stats
    finally:
        await stats.aclose()


async def toolbox_over(stats: OdbcStats, settings: Settings) -> tuple[Toolbox, list[object]]:
    paths = storage_paths(settings)
    manuals = await FtsManuals.open(paths.manuals)
    grievances = await LocalGrievanceStore.open(paths.grievances)
    return Toolbox(build_tools(stats, manuals, grievances)), [manuals, grievances]


def stats_call(**arguments: object) -> ToolCall:
    return ToolCall(id="c1", name="get_player_stats", arguments=dict(arguments))


# ---- the pure pieces --------------------------------------------------------------------


def driver_error(sqlstate: str, text: str, native: int, function: str = "SQLExecDirectW") -> pyodbc.Error:
    """An error shaped as pyodbc raises them: (SQLSTATE, "[state] text (native) (function)")."""
    return pyodbc.Error(
        sqlstate, f"[{sqlstate}] [Microsoft][ODBC Driver 18 for SQL Server]{text} ({native}) ({function})"
    )


CLOSED = pyodbc.ProgrammingError("Attempt to use a closed connection.")
DEADLOCK = driver_error(
    "40001",
    "[SQL Server]Transaction (Process ID 57) was deadlocked on lock resources with another process"
    " and has been chosen as the deadlock victim. Rerun the transaction.",
    1205,
)
LOCK_TIMEOUT = driver_error("HY000", "[SQL Server]Lock request time out period exceeded.", 1222)

# What ODBC Driver 17.2+ and 18 say when a pooled connection the server or the Azure SQL gateway
# dropped cannot be restored by the driver's own idle connection resiliency (the IMC states).
BROKEN_UNRECOVERABLE = driver_error(
    "IMC06",
    "The connection is broken and recovery is not possible. The connection is marked by the client"
    " driver as unrecoverable. No attempt was made to restore the connection.",
    0,
)
BROKEN_RECOVERY_FAILED = driver_error(
    "IMC01",
    "The connection is broken and recovery is not possible. The client driver attempted to recover"
    " the connection one or more times and all attempts failed. Increase the value of"
    " ConnectRetryCount to increase the number of recovery attempts.",
    0,
)
# A pooled connection the gateway reset, on Linux (errno 104, ECONNRESET).
RESET = pyodbc.OperationalError(
    "08S01",
    "[08S01] [Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: Error code 0x68 (104) (SQLExecDirectW)",
)

TRANSIENT = [
    (driver_error("08S01", "Communication link failure", 104), "sqlserver"),
    (BROKEN_UNRECOVERABLE, "sqlserver"),
    (BROKEN_RECOVERY_FAILED, "sqlserver"),
    (RESET, "sqlserver"),
    (driver_error("08001", "TCP Provider: Timeout error [258].", 258, "SQLDriverConnect"), "sqlserver"),
    (driver_error("08003", "Connection not open", 0), "sqlserver"),
    (driver_error("08004", "Server rejected the connection", 0, "SQLDriverConnect"), "sqlserver"),
    (driver_error("HYT00", "Query timeout expired", 0), "sqlserver"),
    (driver_error("HYT01", "Connection timeout expired", 0, "SQLDriverConnect"), "sqlserver"),
    (driver_error("42000", "[SQL Server]Database 'players' is not currently available.", 40613), "sqlserver"),
    (driver_error("42000", "[SQL Server]The service is currently busy.", 40501), "sqlserver"),
    (driver_error("42000", "[SQL Server]The request limit for the database is 60.", 10928), "sqlserver"),
    (driver_error("HY000", "[SQL Server]Cannot open database requested by the login.", 4060), "sqlserver"),
    (driver_error("HY000", "TCP Provider: An existing connection was forcibly closed", 10054), "sqlserver"),
    (driver_error("HY000", "[SQLite]database is locked (5)", 5), "sqlite"),
    (DEADLOCK, "sqlserver"),
    # A serialization failure by its SQLSTATE alone: a snapshot reader meeting another's DDL.
    (
        driver_error("40001", "[SQL Server]Snapshot isolation transaction failed in database 'x'", 3961),
        "sqlserver",
    ),
    (LOCK_TIMEOUT, "sqlserver"),
    (CLOSED, "sqlserver"),
    (CLOSED, "sqlite"),
    (TimeoutError(), "sqlserver"),
]

# ODBC Driver 18 encrypts by default and checks the server's certificate: one its machine does not
# trust (no CA certificates in the image, a self-signed server), or issued for another name (the
# server reached by an IP address or an alias), fails every connection alike.
UNTRUSTED_CERTIFICATE = [
    pyodbc.OperationalError(
        "08001",
        "[08001] [Microsoft][ODBC Driver 18 for SQL Server]SSL Provider: [error:0A000086:SSL routines::"
        "certificate verify failed:unable to get local issuer certificate] (-1) (SQLDriverConnect); "
        "[08001] [Microsoft][ODBC Driver 18 for SQL Server]Client unable to establish connection (-1)",
    ),
    driver_error(
        "08001",
        "SSL Provider: The certificate chain was issued by an authority that is not trusted.",
        -2146893019,
        "SQLDriverConnect",
    ),
    driver_error(
        "08001", "SSL Provider: The target principal name is incorrect.", -2146893022, "SQLDriverConnect"
    ),
]

# Not worth another attempt: they would fail the same way.
PERMANENT = [
    *[(error, "sqlserver") for error in UNTRUSTED_CERTIFICATE],
    (
        driver_error("28000", "[SQL Server]Login failed for user 'bot'.", 18456, "SQLDriverConnect"),
        "sqlserver",
    ),
    (driver_error("42S02", "[SQL Server]Invalid object name 'players'.", 208), "sqlserver"),
    (driver_error("01000", "[unixODBC][Driver Manager]Can't open lib 'X' : file not found", 0), "sqlserver"),
    (driver_error("HY000", "[SQLite]connect failed", 14, "SQLDriverConnect"), "sqlite"),
    (driver_error("HY000", "[SQLite]database is locked (5)", 5), "sqlserver"),
    (pyodbc.ProgrammingError("No results.  Previous SQL was not a query."), "sqlserver"),
    (ValueError("not a driver error"), "sqlserver"),
]


@pytest.mark.parametrize(
    ("error", "dialect", "transient"),
    [(e, d, True) for e, d in TRANSIENT] + [(e, d, False) for e, d in PERMANENT],
)
def test_transient_errors_are_classified(error: BaseException, dialect: str, transient: bool) -> None:
    assert is_transient(error, dialect) is transient


@pytest.mark.parametrize(
    ("connection_string", "expected"),
    [
        (
            "Driver={ODBC Driver 18 for SQL Server};Server=tcp:x.database.windows.net,1433;"
            "Database=players;Uid=bot;Pwd=hunter2;Encrypt=yes",
            "Driver={ODBC Driver 18 for SQL Server};Server=tcp:x.database.windows.net,1433;"
            "Database=players;Uid=bot;Pwd=***;Encrypt=yes",
        ),
        ("Driver=SQLite3;PASSWORD = hunter2", "Driver=SQLite3;PASSWORD = ***"),
        ("PWD={hun;ter}}2};Encrypt=yes", "PWD=***;Encrypt=yes"),
        ("Driver=SQLite3;Database=/srv/players.db", "Driver=SQLite3;Database=/srv/players.db"),
        (  # Always Encrypted with a Key Vault client secret, and a client certificate's password
            "Uid=bot;Pwd=hunter2;KeyStoreAuthentication=KeyVaultClientSecret;"
            "KeyStorePrincipalId=app;KeyStoreSecret=hunter2;ClientKey=file:/k.pem,hunter2",
            "Uid=bot;Pwd=***;KeyStoreAuthentication=KeyVaultClientSecret;"
            "KeyStorePrincipalId=app;KeyStoreSecret=***;ClientKey=***",
        ),
    ],
)
def test_redact_masks_secrets_only(connection_string: str, expected: str) -> None:
    assert redact(connection_string) == expected
    assert PASSWORD not in redact(connection_string)


def test_describe_names_the_reason_and_hides_the_password() -> None:
    login = pyodbc.Error(
        "28000", "[28000] [SQL Server]Login failed for user 'bot'. (18456) (SQLDriverConnect)"
    )
    assert describe(login).startswith("login failed: check the user and password")
    assert "SQLSTATE 28000" in describe(login) and "(SQLDriverConnect)" not in describe(login)
    echoed = pyodbc.Error("HY000", "[HY000] bad option in 'Uid=bot;PWD=hunter2' (0) (SQLDriverConnect)")
    assert PASSWORD not in describe(echoed)


# Microsoft's driver as a deployer meets it: pyodbc joins the diagnostic records, the first one's
# SQLSTATE standing for all.
SERVER_UNREACHABLE = pyodbc.OperationalError(
    "HYT00",
    "[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Login timeout expired (0) (SQLDriverConnect); "
    "[08001] [Microsoft][ODBC Driver 18 for SQL Server]TCP Provider: Error code 0x2AF9 (11001); "
    "[08001] [Microsoft][ODBC Driver 18 for SQL Server]A network-related or instance-specific error"
    " has occurred while establishing a connection to sqlx.database.windows.net. (11001)",
)
NO_DATABASE = pyodbc.InterfaceError(
    "42000",
    '[42000] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Cannot open database "playrs"'
    " requested by the login. The login failed. (4060) (SQLDriverConnect); [28000] [Microsoft][ODBC"
    " Driver 18 for SQL Server][SQL Server]Login failed for user 'bot'. (18456)",
)


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (SERVER_UNREACHABLE, "server unreachable: check Server= (name and port)"),
        (
            driver_error("08001", "TCP Provider: Error code 0x2749", 10057, "SQLDriverConnect"),
            "server unreachable",
        ),
        (NO_DATABASE, "database does not exist, or the login may not open it: check Database="),
        (
            driver_error("28000", "[SQL Server]Login failed for user 'bot'.", 18456, "SQLDriverConnect"),
            "login failed: check the user and password",
        ),
    ],
    ids=["server unreachable", "connection refused", "no such database", "login refused"],
)
def test_describe_says_which_part_of_the_connection_string_is_wrong(error: pyodbc.Error, said: str) -> None:
    assert describe(error).startswith(said), describe(error)
    assert "VOXDESK_SQL_CONNECTION_STRING" in describe(error)


def test_a_query_timeout_is_no_unreachable_server() -> None:
    timeout = driver_error("HYT00", "Query timeout expired", 0)
    assert not describe(timeout).startswith("server unreachable"), describe(timeout)


@pytest.mark.parametrize("error", UNTRUSTED_CERTIFICATE, ids=["openssl", "schannel", "principal name"])
def test_describe_says_what_to_do_about_an_untrusted_certificate(error: pyodbc.Error) -> None:
    said = describe(error)
    assert said.startswith("the server's TLS certificate is not trusted"), said
    assert "TrustServerCertificate" in said and "SQLSTATE 08001" in said


def _seed_rows(path: Path) -> list[tuple[str, tuple[str, ...], tuple[object, ...]]]:
    """(table, columns, values) of every INSERT in a seed script, with values as Python data."""
    insert = re.compile(r"INSERT INTO (?:dbo\.)?(\w+) \(([^)]*)\) VALUES \((.*)\);$")
    value = re.compile(r"N?'((?:[^']|'')*)'|(-?\d+(?:\.\d+)?)|(NULL)")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("INSERT"):
            continue
        found = insert.match(line)
        assert found, line
        table, columns, values = found.groups()
        parsed: list[object] = []
        for text, number, null in value.findall(values):
            if null:
                parsed.append(None)
            elif number:
                parsed.append(Decimal(number))
            else:
                parsed.append(text.replace("''", "'"))
        names = tuple(c.strip() for c in columns.split(","))
        assert len(parsed) == len(names), line
        rows.append((table, names, tuple(parsed)))
    return rows


def test_sqlite_and_sqlserver_seeds_hold_identical_data() -> None:
    sqlite_rows = _seed_rows(paths.SQL / "sqlite/seed.sql")
    sqlserver_rows = _seed_rows(paths.SQL / "sqlserver/seed.sql")
    assert len(sqlite_rows) > 300
    assert sqlserver_rows == sqlite_rows


def test_sqlserver_schema_has_the_sqlite_tables_and_columns() -> None:
    def columns(path: Path) -> dict[str, list[str]]:
        tables: dict[str, list[str]] = {}
        for name, body in re.findall(
            r"CREATE TABLE (?:IF NOT EXISTS )?(?:dbo\.)?(\w+) \((.*?)\n\s*\);", path.read_text(), re.S
        ):
            tables[name] = [line.split()[0] for line in body.strip().splitlines()]
        return tables

    sqlite = columns(paths.SQL / "sqlite/schema.sql")
    assert set(sqlite) == {"players", "game_sessions", "achievements"}
    assert columns(paths.SQL / "sqlserver/schema.sql") == sqlite
    sqlserver = (paths.SQL / "sqlserver/schema.sql").read_text()
    assert sqlserver.count("IF OBJECT_ID(") == 3 and "cash_won DECIMAL(10, 2)" in sqlserver


@pytest.mark.parametrize("script", ["schema.sql", "seed.sql"])
def test_sqlserver_scripts_turn_quoted_identifier_on_for_the_filtered_index(script: str) -> None:
    # sqlcmd -i runs with QUOTED_IDENTIFIER OFF, and the filtered unique index on players then
    # fails to be made (Msg 1934), letting one Discord id be linked to two players, and so does
    # every insert into players. The setting is read when a batch is parsed, so it must come in a
    # batch of its own first.
    lines = [
        line.split("--")[0].strip() for line in (paths.SQL / "sqlserver" / script).read_text().splitlines()
    ]
    statements = [line for line in lines if line]
    assert statements[:2] == ["SET QUOTED_IDENTIFIER ON;", "GO"]
    assert not any("QUOTED_IDENTIFIER OFF" in line.upper() for line in statements)
    assert any("discord_user_id" in line for line in statements)


# ---- (a) parity with the embedded path ---------------------------------------------------


async def test_every_player_gets_the_same_summary_as_on_the_embedded_path(
    settings: Settings, odbc: OdbcStats, embedded: SqliteStats
) -> None:
    users = [*linked_ids(players_db(settings)), UNLINKED]
    assert len(users) == 13
    for user in users:
        over_odbc = await odbc.player_summary(user)
        assert over_odbc == await embedded.player_summary(user), user
        if user != UNLINKED:
            assert over_odbc is not None and over_odbc.players_ranked == 12
            assert all(isinstance(g.cash_won, float) for g in over_odbc.games)
    assert await odbc.player_summary(UNLINKED) is None


async def test_concurrent_players_share_a_bounded_pool(settings: Settings, odbc: OdbcStats) -> None:
    users = linked_ids(players_db(settings)) * 3
    summaries = await asyncio.gather(*(odbc.player_summary(u) for u in users))
    names = dict(zip(users, (s.player_name for s in summaries if s), strict=True))
    assert names[NOVA] == "Nova" and names[BLAZE] == "Blaze" and names[QUILL] == "Quill"
    assert len({s.player_name for s in summaries if s}) == 12
    assert odbc._pool.size <= FAST.pool_size


# ---- (b) through the real tool ------------------------------------------------------------


async def test_the_stats_tool_answers_with_the_speakers_own_data(settings: Settings, odbc: OdbcStats) -> None:
    toolbox, others = await toolbox_over(odbc, settings)
    try:
        nova = await toolbox.run(ToolContext(user_id=NOVA), stats_call())
        quill = await toolbox.run(ToolContext(user_id=QUILL), stats_call())
        unlinked = await toolbox.run(ToolContext(user_id=UNLINKED), stats_call())
    finally:
        for thing in others:
            await thing.aclose()  # type: ignore[attr-defined]
    assert nova.ok and nova.result["player_name"] == "Nova" and nova.result["linked"] is True
    assert quill.ok and quill.result["player_name"] == "Quill"
    assert nova.result["total_points"] == sum(g["points_earned"] for g in nova.result["games"])
    assert unlinked.ok and unlinked.result["linked"] is False


async def test_config_with_odbc_on_the_sqlite_dialect_runs_the_app(
    settings: Settings, scripted_app_engine
) -> None:
    odbc_settings = make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_STATS="odbc",
        VOXDESK_ODBC_DIALECT="sqlite",
        VOXDESK_SQL_CONNECTION_STRING=odbc_string(players_db(settings)),
    )
    assert odbc_settings.tools.stats == "odbc" and odbc_settings.odbc.dialect == "sqlite"
    async with running_app(odbc_settings, scripted_app_engine) as app:
        assert isinstance(app.stats, OdbcStats)
        blaze = await app.toolbox.run(ToolContext(user_id=BLAZE), stats_call())
    assert blaze.ok and blaze.result["player_name"] == "Blaze"


def test_config_refuses_an_unknown_dialect(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"odbc\.dialect"):
        make_settings(settings.storage_dir, VOXDESK_ODBC_DIALECT="mysql")


# ---- (c) injection and identity -----------------------------------------------------------

EVIL_IDS = [
    "111111111111111111' OR '1'='1",
    "1; DROP TABLE players; --",
    "' OR 1=1 --",
    f"{NOVA}' --",
    "x'; DELETE FROM game_sessions; --",
    "%",
]


async def test_sql_in_a_user_id_finds_nothing_and_changes_nothing(
    settings: Settings, odbc: OdbcStats
) -> None:
    before = table_counts(players_db(settings))
    for evil in EVIL_IDS:
        assert await odbc.player_summary(evil) is None, evil
    assert table_counts(players_db(settings)) == before
    assert await odbc.check() == "ODBC player database: 12 players"
    assert (await odbc.player_summary(NOVA)).player_name == "Nova"  # type: ignore[union-attr]


async def test_a_player_never_sees_another_players_stats(settings: Settings, odbc: OdbcStats) -> None:
    toolbox, others = await toolbox_over(odbc, settings)
    try:
        sneaky = await toolbox.run(ToolContext(user_id=NOVA), stats_call(user_id=BLAZE))
        evil = [await toolbox.run(ToolContext(user_id=e), stats_call()) for e in EVIL_IDS]
    finally:
        for thing in others:
            await thing.aclose()  # type: ignore[attr-defined]
    assert (
        not sneaky.ok and "Invalid arguments" in sneaky.result["error"] and "Blaze" not in str(sneaky.result)
    )
    assert all(r.ok and r.result["linked"] is False for r in evil)
    with sqlite3.connect(players_db(settings)) as conn:
        owners = dict(conn.execute("SELECT discord_user_id, player_name FROM players"))
    for user, name in owners.items():
        summary = await odbc.player_summary(user)
        assert summary is not None and summary.player_name == name
        # Exactly their own games and achievements: the parity test above cannot tell, as both
        # paths run the same SQL.
        assert summary == summary_from_rows(players_db(settings), user), user


# ---- (d) SQL down ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(
            lambda tmp: odbc_string(tmp / "no" / "such" / "dir" / "players.db"), id="unopenable-path"
        ),
        pytest.param(lambda tmp: odbc_string(tmp / "players.db", driver="NoSuchDriver"), id="missing-driver"),
    ],
)
async def test_sql_down_gives_the_friendly_sentence_and_a_log_line(
    tmp_path: Path, broken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # minsize 0: opening never connects, so the bot starts even while the database is down.
    stats = await OdbcStats.open(broken(tmp_path) + f";UID=bot;PWD={PASSWORD}", FAST)
    try:
        with pytest.raises(ToolError) as raised:
            await stats.player_summary(NOVA)
    finally:
        await stats.aclose()
    assert str(raised.value) == say.STATS_UNAVAILABLE
    failed = [r for r in caplog.records if r.getMessage().startswith("player stats query failed")]
    assert len(failed) == 1 and "SQLSTATE" in failed[0].getMessage()
    assert PASSWORD not in caplog.text


async def test_sql_down_keeps_the_other_tools_serving(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    db = players_db(settings)
    stats = await OdbcStats.open(odbc_string(db), FAST)
    toolbox, others = await toolbox_over(stats, settings)
    try:
        db.unlink()  # the database goes away before any connection was made
        stats_result = await toolbox.run(ToolContext(user_id=NOVA), stats_call())
        manuals = await toolbox.run(
            ToolContext(user_id=NOVA),
            ToolCall(id="c2", name="search_manuals", arguments={"query": "pair my controller"}),
        )
    finally:
        for thing in [*others, stats]:
            await thing.aclose()  # type: ignore[attr-defined]
    assert not stats_result.ok and stats_result.result == {"error": say.STATS_UNAVAILABLE}
    assert manuals.ok and manuals.result["passages"]
    assert "player stats query failed" in caplog.text


async def test_sql_down_for_many_players_is_one_error_and_its_end_one_line(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Each player who asked while the database was down added an ERROR of the same words (and a
    # WARNING from the toolbox, and one per retry): the outage is said once, its end once.
    caplog.set_level(logging.INFO)
    db = players_db(settings)
    aside = db.with_name("aside.db")
    stats = await OdbcStats.open(odbc_string(db), FAST)
    toolbox, others = await toolbox_over(stats, settings)
    try:
        db.rename(aside)
        for who in (NOVA, QUILL, NOVA):
            failed = await toolbox.run(ToolContext(user_id=who, request_id="1234"), stats_call())
            assert not failed.ok
        aside.rename(db)
        assert (await toolbox.run(ToolContext(user_id=NOVA), stats_call())).ok
    finally:
        for thing in [*others, stats]:
            await thing.aclose()  # type: ignore[attr-defined]
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("bot.tools")]
    failed_lines = [level for level, m in said if m.startswith("player stats query failed")]
    assert failed_lines == [logging.ERROR, logging.INFO, logging.INFO]
    assert (logging.INFO, "player stats: the database answers again") in said
    assert not [m for level, m in said if level >= logging.WARNING and "query failed" not in m]


async def test_an_azure_failover_asked_about_by_many_players_is_one_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Azure SQL words each refusal afresh: 40613 names the attempt's session tracing id (40501 an
    # incident id), so an outage told by its words was news, at ERROR, with every player who asked.
    async def unavailable(conn: aioodbc.connection.Connection) -> None:
        raise driver_error(
            "HY000",
            "[SQL Server]Database 'players' on server 'studio' is not currently available. Please retry"
            " the connection later. If the problem persists, contact customer support, and provide"
            f" them the session tracing ID of '{{{uuid.uuid4()}}}'.",
            40613,
            "SQLDriverConnect",
        )

    monkeypatch.setattr(aioodbc.connection.Connection, "_connect", unavailable)
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    azure = replace(FAST, dialect="sqlserver")  # where 40613 is retried
    stats = await OdbcStats.open(odbc_string(players_db(settings)), azure)
    now = [0.0]
    stats._breaker.clock = lambda: now[0]
    try:
        for who in (NOVA, QUILL, BLAZE):
            with pytest.raises(ToolError):
                await stats.player_summary(who)
            now[0] += LOGIN_BREAKER_SECONDS  # each logs in again, and is refused in new words
    finally:
        await stats.aclose()
    failed = [r for r in caplog.records if r.getMessage().startswith("player stats query failed")]
    assert [r.levelno for r in failed] == [logging.ERROR, logging.INFO, logging.INFO]
    assert all("not currently available" in r.getMessage() for r in failed)


# What ODBC Driver 18 says when the server does not answer a login within its login timeout (the
# query timeout here): a host that drops the packets, a firewall, a server that is gone.
LOGIN_TIMED_OUT = driver_error("HYT00", "Login timeout expired", 0, "SQLDriverConnect")


def _logins_that_time_out(monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[object]:
    """Every login waits `seconds` for a server that never answers, then fails as the driver fails
    it at its login timeout; the logins begun are counted."""
    begun: list[object] = []

    async def unanswered(conn: aioodbc.connection.Connection) -> None:
        begun.append(conn)
        await asyncio.sleep(seconds)
        raise LOGIN_TIMED_OUT

    monkeypatch.setattr(aioodbc.connection.Connection, "_connect", unanswered)
    return begun


async def test_notes_during_an_outage_do_not_queue_behind_each_others_failing_logins(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # aioodbc's pool logs in holding its lock, one login at a time: with the database unreachable,
    # each note of a raid waited its turn for a login that timed out, one after another, until its
    # own deadline (twice the query timeout), and the database was asked for a login per note.
    # After a login fails the notes are answered at once that stats are unavailable.
    begun = _logins_that_time_out(monkeypatch, 0.3)
    caplog.set_level(logging.DEBUG, logger="bot.tools.odbc_stats")
    down = OdbcSettings(dialect="sqlserver", pool_size=3, query_timeout_seconds=2, retries=2)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), down)
    try:
        raid = [stats.player_summary(who) for who in (NOVA, BLAZE, QUILL, NOVA, BLAZE, QUILL)]
        results = await asyncio.wait_for(asyncio.gather(*raid, return_exceptions=True), 30)  # a guard
    finally:
        await stats.aclose()
    assert all(isinstance(r, ToolError) and str(r) == say.STATS_UNAVAILABLE for r in results), results
    assert len(begun) == 1  # the one login failing answered every note waiting for one
    said = [r for r in caplog.records if r.name == "bot.tools.odbc_stats" and r.levelno >= logging.INFO]
    failed = [r for r in said if r.getMessage().startswith("player stats query failed")]
    assert [r.levelno for r in failed] == [logging.ERROR] and "Login timeout expired" in failed[
        0
    ].getMessage()
    assert not [r for r in said if "retrying" in r.getMessage()]


async def test_logins_are_tried_again_by_one_probe_after_a_few_seconds(
    settings: Settings,
    embedded: SqliteStats,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Held off for good, the database back would go unnoticed: after LOGIN_BREAKER_SECONDS one
    # lookup logs in again, the others answered at once while it does, and one that works ends it.
    connect = aioodbc.connection.Connection._connect
    down = [True]
    begun: list[object] = []
    login_begun, login_may_end = asyncio.Event(), asyncio.Event()

    async def while_down(conn: aioodbc.connection.Connection) -> None:
        begun.append(conn)
        login_begun.set()
        await login_may_end.wait()
        if down[0]:
            raise LOGIN_TIMED_OUT
        await connect(conn)

    monkeypatch.setattr(aioodbc.connection.Connection, "_connect", while_down)
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    now = [0.0]
    stats = await OdbcStats.open(odbc_string(players_db(settings)), replace(FAST, dialect="sqlserver"))
    stats._breaker.clock = lambda: now[0]
    try:
        login_may_end.set()
        with pytest.raises(ToolError):
            await stats.player_summary(NOVA)
        now[0] += LOGIN_BREAKER_SECONDS - 0.1
        with pytest.raises(ToolError):
            await stats.player_summary(QUILL)
        assert len(begun) == 1
        now[0] += 0.1
        login_begun.clear()
        login_may_end.clear()
        probe = asyncio.create_task(stats.player_summary(BLAZE))
        await asyncio.wait_for(login_begun.wait(), 30)
        with pytest.raises(ToolError):  # while the probe logs in
            await stats.player_summary(QUILL)
        login_may_end.set()
        with pytest.raises(ToolError):
            await probe
        assert len(begun) == 2
        down[0] = False
        # The health command logs in whatever the breaker says, and finds the database back.
        assert await stats.check() == "ODBC player database: 12 players"
        assert stats._breaker.held_off() is not None  # the window after the probe's failure
        # ... but the connection the check left idle needs no login: it answers, and ends it.
        assert await stats.player_summary(QUILL) == await embedded.player_summary(QUILL)
        assert stats._breaker.held_off() is None
        now[0] += LOGIN_BREAKER_SECONDS
        assert await stats.player_summary(NOVA) == await embedded.player_summary(NOVA)  # check's
        # The database answers: a login under way, when one is next needed, is no probe that
        # holds off the players who ask meanwhile.
        async with stats._pool.acquire():  # another player's summary holds that connection
            login_begun.clear()
            login_may_end.clear()
            first = asyncio.create_task(stats.player_summary(QUILL))
            await asyncio.wait_for(login_begun.wait(), 30)
            second = asyncio.create_task(stats.player_summary(BLAZE))
            await asyncio.sleep(0)
            login_may_end.set()
            both = await asyncio.wait_for(asyncio.gather(first, second), 30)  # a guard
        assert both == [await embedded.player_summary(QUILL), await embedded.player_summary(BLAZE)]
    finally:
        await stats.aclose()
    said = [r for r in caplog.records if r.name == "bot.tools.odbc_stats"]
    failed = [r.levelno for r in said if r.getMessage().startswith("player stats query failed")]
    assert failed == [logging.ERROR, logging.INFO]  # the first login, and the probe's
    assert [r for r in said if r.getMessage() == "player stats: the database answers again"]


async def test_a_refused_login_leaves_a_connection_kept_from_before_to_answer(
    settings: Settings, embedded: SqliteStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database that refuses new sessions (Azure SQL at its request limit) still answers on those
    # open: a login refused as the pool grew held off every lookup for LOGIN_BREAKER_SECONDS,
    # the one on an idle connection, which needs no login, too.
    connect = aioodbc.connection.Connection._connect
    capped = [False]

    async def capped_logins(conn: aioodbc.connection.Connection) -> None:
        if capped[0]:
            raise driver_error(
                "42000", "[SQL Server]The request limit for the database is 60.", 10928, "SQLDriverConnect"
            )
        await connect(conn)

    monkeypatch.setattr(aioodbc.connection.Connection, "_connect", capped_logins)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), replace(FAST, dialect="sqlserver"))
    stats._breaker.clock = lambda: 0.0  # the breaker's window never ends here
    try:
        assert await stats.player_summary(NOVA) == await embedded.player_summary(NOVA)
        capped[0] = True
        async with stats._pool.acquire():  # another player's summary holds the one connection
            with pytest.raises(ToolError):  # a second one is refused
                await stats.player_summary(QUILL)
        assert stats._pool.freesize == 1
        assert await stats.player_summary(BLAZE) == await embedded.player_summary(BLAZE)
    finally:
        await stats.aclose()


@pytest.mark.parametrize(
    ("error", "answered"),
    [(DEADLOCK, True), (LOCK_TIMEOUT, True), (RESET, False)],
    ids=["deadlock victim", "lock timeout", "connection reset"],
)
async def test_a_blip_on_a_kept_connection_is_retried_on_another_idle_one_while_logins_fail(
    settings: Settings,
    embedded: SqliteStats,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: pyodbc.Error,
    answered: bool,
) -> None:
    # A database refusing new sessions (Azure SQL at its request limit) still answers on those
    # open. A summary chosen as a deadlock victim there was told stats are unavailable, its retry
    # held off as a login would be, though another connection lay idle for it, needing none. A
    # connection found gone takes the idle ones with it: that retry would log in, and is not tried.
    connect = aioodbc.connection.Connection._connect
    capped = [False]

    async def capped_logins(conn: aioodbc.connection.Connection) -> None:
        if capped[0]:
            raise driver_error(
                "42000", "[SQL Server]The request limit for the database is 60.", 10928, "SQLDriverConnect"
            )
        await connect(conn)

    monkeypatch.setattr(aioodbc.connection.Connection, "_connect", capped_logins)
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    stats = await OdbcStats.open(
        odbc_string(players_db(settings)), replace(FAST, dialect="sqlserver", pool_size=3)
    )
    stats._breaker.clock = lambda: 0.0  # the breaker's window never ends here
    try:
        await _open_pooled(stats, 2)
        capped[0] = True
        async with stats._pool.acquire(), stats._pool.acquire():  # other players' summaries
            with pytest.raises(ToolError):  # a third connection is refused its login
                await stats.player_summary(QUILL)
        assert stats._pool.freesize == 2
        assert stats._breaker.held_off() is not None
        failed = _break(monkeypatch, {stats._pool._free[0]}, error)
        if answered:
            assert await stats.player_summary(NOVA) == await embedded.player_summary(NOVA)
        else:
            with pytest.raises(ToolError):
                await stats.player_summary(NOVA)
        assert len(failed) == 1
    finally:
        await stats.aclose()
    retried = [r for r in caplog.records if "transient error" in r.getMessage()]
    assert len(retried) == answered


async def test_a_login_the_driver_never_times_out_holds_off_the_next_ones_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A driver that does not keep its login timeout: the lookup's deadline ends the wait, and the
    # lookups after it are answered at once rather than each wait out a login as stuck.
    begun: list[object] = []

    async def never(conn: aioodbc.connection.Connection) -> None:
        begun.append(conn)
        await asyncio.Event().wait()

    monkeypatch.setattr(aioodbc.connection.Connection, "_connect", never)
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    quick = OdbcSettings(dialect="sqlserver", pool_size=2, query_timeout_seconds=1, retries=2)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), quick)
    try:
        for who in (NOVA, QUILL, BLAZE):
            with pytest.raises(ToolError):
                await asyncio.wait_for(stats.player_summary(who), 30)  # a guard
    finally:
        await stats.aclose()
    assert len(begun) == 1
    failed = [r for r in caplog.records if r.getMessage().startswith("player stats query failed")]
    assert [r.levelno for r in failed] == [logging.ERROR]
    assert "the database did not answer" in failed[0].getMessage()


def _logins_stuck_in_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[str], threading.Event, threading.Event]:
    """Every login stays in the driver, in its thread, past any deadline (a driver that keeps no
    login timeout, a server dropping the packets) until `returns` is set, then fails as the driver
    at last gives up. The logins begun are named by their threads, `logging_in` set at the first."""
    in_driver: list[str] = []
    logging_in, returns = threading.Event(), threading.Event()

    def stuck(*args: object, **kwargs: object) -> pyodbc.Connection:
        in_driver.append(threading.current_thread().name)
        logging_in.set()
        returns.wait(120)  # a guard: set by the test
        raise LOGIN_TIMED_OUT

    monkeypatch.setattr(pyodbc, "connect", stuck)
    return in_driver, logging_in, returns


async def test_one_probe_at_most_logs_in_beside_a_login_still_in_the_driver(
    settings: Settings,
    embedded: SqliteStats,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The lookup's deadline ends its wait for a login, not the login: its thread stays in the
    # driver. A probe each time one is due would leave another there, for as long as the outage
    # lasts, until every thread of the driver's pool was stuck and no statement ran, the database
    # back or not. One goes beside it, the first being past its login timeout; while both are
    # there the lookups are answered at once, and the log says why once.
    connect = pyodbc.connect
    in_driver, _, returns = _logins_stuck_in_the_driver(monkeypatch)
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    now = [0.0]
    quick = OdbcSettings(dialect="sqlserver", pool_size=2, query_timeout_seconds=1, retries=2)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), quick)
    stats._breaker.clock = lambda: now[0]
    try:
        with pytest.raises(ToolError):
            await asyncio.wait_for(stats.player_summary(NOVA), 30)  # a guard
        for who in (QUILL, BLAZE, NOVA):
            now[0] += LOGIN_BREAKER_SECONDS  # a probe is due
            with pytest.raises(ToolError):
                await asyncio.wait_for(stats.player_summary(who), 30)
        assert len(in_driver) == STUCK_LOGINS == 2, in_driver
        failed = [r for r in caplog.records if r.getMessage().startswith("player stats query failed")]
        assert [r.levelno for r in failed] == [logging.ERROR, logging.INFO]  # the first, the probe's
        waiting = [r for r in caplog.records if r.getMessage().startswith("player stats: no login tried")]
        assert [(r.levelno, "2 logins are still in the ODBC driver" in r.getMessage()) for r in waiting] == [
            (logging.INFO, True)
        ]
        monkeypatch.setattr(pyodbc, "connect", connect)  # the database back
        returns.set()  # ... and the stuck login at last out of the driver

        async def answered() -> object:
            # Answered at once that stats are unavailable until the stuck login's thread has
            # returned (a moment after the event); then a probe logs in, and works.
            while True:
                now[0] += LOGIN_BREAKER_SECONDS
                try:
                    return await stats.player_summary(QUILL)
                except ToolError:
                    await asyncio.sleep(0.01)

        assert await asyncio.wait_for(answered(), 30) == await embedded.player_summary(QUILL)
    finally:
        returns.set()
        await stats.aclose()


async def test_the_database_back_while_a_login_is_stuck_in_the_driver_answers(
    settings: Settings, embedded: SqliteStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A login the driver keeps past its login timeout is stuck on the network (a server gone
    # silent, a failover's old address) for minutes, or for good: waited for, the database back
    # meanwhile would go unanswered as long. The probe logs in beside it, and answers.
    connect = pyodbc.connect
    _, _, returns = _logins_stuck_in_the_driver(monkeypatch)
    now = [0.0]
    quick = OdbcSettings(dialect="sqlserver", pool_size=2, query_timeout_seconds=1, retries=2)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), quick)
    stats._breaker.clock = lambda: now[0]
    try:
        with pytest.raises(ToolError):
            await asyncio.wait_for(stats.player_summary(NOVA), 30)  # a guard
        monkeypatch.setattr(pyodbc, "connect", connect)  # the database back; the login still stuck
        now[0] += LOGIN_BREAKER_SECONDS
        answer = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert answer == await embedded.player_summary(QUILL)
    finally:
        returns.set()
        await stats.aclose()


async def test_a_login_cut_with_its_turn_is_waited_for_until_overdue_then_one_beside_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A player's turn cancelled while its lookup logs in leaves the login in the driver, as a
    # deadline does, though the breaker is closed: the next login, a lookup's or `check`'s, waits
    # for it until it has outlasted the login timeout; then one begins beside it, and no third.
    in_driver, logging_in, returns = _logins_stuck_in_the_driver(monkeypatch)
    quick = OdbcSettings(dialect="sqlserver", pool_size=2, query_timeout_seconds=1, retries=2)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), quick)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(asyncio.to_thread(logging_in.wait), 30)  # a guard
        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        with pytest.raises(ToolError):
            await asyncio.wait_for(stats.player_summary(QUILL), 30)  # a guard
        with pytest.raises(OdbcStatsError, match="the database did not answer"):
            await asyncio.wait_for(stats.check(), 30)
        assert len(in_driver) == 2, in_driver  # the cancelled turn's, and the lookup's beside it
    finally:
        returns.set()
        await stats.aclose()


async def test_a_login_cut_with_its_turn_that_then_succeeds_leaves_no_session_open(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lookup's login cut (its turn cancelled, or its deadline) while still in the driver: the
    # driver connection the login makes after all is nobody's. It stayed open, outside the pool
    # and uncounted by it (a session more on the server than the pool's size), held by the
    # breaker's list of login threads until the next login, and past shutdown.
    db = players_db(settings)
    logging_in, returns, returned = threading.Event(), threading.Event(), threading.Event()
    connect = pyodbc.connect

    def slow(*args: Any, **kwargs: Any) -> pyodbc.Connection:
        logging_in.set()
        returns.wait(60)  # a guard: set by the test
        try:
            return connect(*args, **kwargs)
        finally:
            returned.set()

    monkeypatch.setattr(pyodbc, "connect", slow)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    before = handles_on(db)
    stats = await OdbcStats.open(odbc_string(db), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(asyncio.to_thread(logging_in.wait), 30)  # a guard
        turn.cancel()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        assert done and turn.cancelled()
        returns.set()
        await asyncio.wait_for(asyncio.to_thread(returned.wait), 30)  # a guard
        for _ in range(200):  # a guard, not a timing: closed in the login's thread as it returns
            if handles_on(db) == before:
                break
            await asyncio.sleep(0.05)
        assert handles_on(db) == before
        assert stats._pool.size == 0
    finally:
        returns.set()
        await asyncio.wait_for(stats.aclose(), 30)
    assert handles_on(db) == before


async def test_a_login_cut_just_as_it_returns_closes_its_connection_off_the_loop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lookup cut (its turn cancelled, or its deadline) once the driver's login has returned but
    # before the loop has taken the connection it made: that connection, nobody's, is closed, but
    # not on the event loop's thread, where the driver's disconnect, which may wait on the
    # network, would hold every voice and every other player meanwhile.
    db = players_db(settings)
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    closed_on: list[int] = []
    connect = pyodbc.connect
    turns: list[asyncio.Task[Any]] = []

    class Watched:
        """The driver connection the login makes, each close of it told."""

        def __init__(self, conn: pyodbc.Connection) -> None:
            self._conn = conn

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

        def close(self) -> None:
            # Told once done: the file handle the test looks for last is gone by then.
            self._conn.close()
            closed_on.append(threading.get_ident())

    def cut_as_it_returns() -> None:
        login = stats._breaker._threads[-1][0]
        concurrent.futures.wait([login], timeout=30)  # a guard: the loop held until it has returned
        turns[0].cancel()

    def returning(*args: Any, **kwargs: Any) -> Watched:
        made = Watched(connect(*args, **kwargs))
        loop.call_soon_threadsafe(cut_as_it_returns)
        return made

    monkeypatch.setattr(pyodbc, "connect", returning)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    before = handles_on(db)
    stats = await OdbcStats.open(odbc_string(db), one)
    try:
        turns.append(asyncio.create_task(stats.player_summary(NOVA)))
        done, _ = await asyncio.wait(turns, timeout=30)  # a guard, not a timing assertion
        assert done and turns[0].cancelled()
        for _ in range(200):  # a guard, not a timing: closed in a driver thread
            if closed_on:
                break
            await asyncio.sleep(0.05)
        assert len(closed_on) == 1 and closed_on[0] != loop_thread
        assert stats._pool.size == 0
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    assert handles_on(db) == before


async def test_a_statement_in_the_driver_after_its_login_holds_off_no_other_login(
    settings: Settings, embedded: SqliteStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only a login's thread is the breaker's to wait for: a slow statement of the lookup that
    # logged in just before is no login stuck in the driver, and another lookup logs in beside it.
    quick = OdbcSettings(dialect="sqlserver", pool_size=2, query_timeout_seconds=5, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), quick)
    running, ends = threading.Event(), threading.Event()
    execute = aioodbc.cursor.Cursor.execute
    slowed: list[aioodbc.cursor.Cursor] = []

    async def first_slow(cursor: aioodbc.cursor.Cursor, sql: str, *params: object) -> object:
        if not slowed or slowed[0] is cursor:
            slowed.append(cursor)
            # In a driver's thread, as a statement the database is slow to answer.
            await cursor._run_operation(lambda: (running.set(), ends.wait(30)))
        return await execute(cursor, sql, *params)

    monkeypatch.setattr(aioodbc.cursor.Cursor, "execute", first_slow)
    try:
        slow = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(asyncio.to_thread(running.wait), 30)  # a guard
        assert await asyncio.wait_for(stats.player_summary(QUILL), 30) == await embedded.player_summary(QUILL)
        ends.set()
        assert await asyncio.wait_for(slow, 30) == await embedded.player_summary(NOVA)
    finally:
        ends.set()
        await stats.aclose()


async def test_a_database_locked_beyond_the_retries_is_unavailable(
    settings: Settings, odbc: OdbcStats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    locker = lock_exclusively(players_db(settings))
    try:
        with pytest.raises(ToolError, match=re.escape(say.STATS_UNAVAILABLE)):
            await odbc.player_summary(NOVA)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    retried = [r for r in caplog.records if "transient error" in r.getMessage()]
    assert len(retried) == FAST.retries and "database is locked" in retried[0].getMessage()
    assert (await odbc.player_summary(NOVA)).player_name == "Nova"  # type: ignore[union-attr]


async def test_a_failed_query_frees_its_pool_slot_for_waiting_players_and_shutdown(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # One connection, two players: the second waits for the first's connection. When that one
    # fails and is dropped, the waiter must be woken at once, not after its 2 x 5 s wait: then
    # its own query fails on the lock, not its wait for a connection.
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    locker = lock_exclusively(players_db(settings))
    try:
        both = asyncio.gather(stats.player_summary(NOVA), stats.player_summary(BLAZE), return_exceptions=True)
        with caplog.at_level(logging.INFO, logger="bot.tools.odbc_stats"):
            results = await asyncio.wait_for(both, 30)  # a guard, not a timing assertion
        assert all(isinstance(r, ToolError) for r in results)
        failed = [r.getMessage() for r in caplog.records if "query failed" in r.getMessage()]
        assert len(failed) == 2 and all("database is locked" in m for m in failed), failed
        failing = asyncio.create_task(stats.player_summary(QUILL))
        await asyncio.sleep(0)
        await asyncio.wait_for(stats.aclose(), 30)  # closing while a query fails does not hang
        assert isinstance((await asyncio.gather(failing, return_exceptions=True))[0], ToolError)
    finally:
        locker.execute("ROLLBACK")
        locker.close()


async def test_players_handed_a_failed_read_of_every_total_keep_their_own_connections(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three players at once: one reads every total and that statement fails; the two waiting for
    # the read get its error, and all three are answered without a rank. The waiters' own
    # connections answered every statement they sent, the reader's every one after the failed
    # read: all three go back to the pool.
    opened: list[object] = []
    closed: list[object] = []
    connect, close = aioodbc.connection.Connection._connect, aioodbc.connection.Connection.close

    async def counted_connect(conn: aioodbc.connection.Connection) -> None:
        await connect(conn)
        opened.append(conn)

    async def counted_close(conn: aioodbc.connection.Connection) -> None:
        closed.append(conn)
        await close(conn)

    monkeypatch.setattr(aioodbc.connection.Connection, "_connect", counted_connect)
    monkeypatch.setattr(aioodbc.connection.Connection, "close", counted_close)
    # The start's check reads aioodbc's own methods, which these counting wrappers stand in for.
    monkeypatch.setattr(odbc_stats, "unlike_aioodbc_0_5", lambda: None)

    summary = stats_sql.player_summary
    failing = True
    ranked: list[str] = []
    everyone_waits = asyncio.Event()

    async def held(fetch: stats_sql.Fetch, user_id: str, *args: object) -> object:
        async def watched(sql: str, params: tuple[object, ...]) -> list[object]:
            if sql == stats_sql.TOTALS and failing:
                # The reader's statement fails once the others wait for it: a real driver error.
                await everyone_waits.wait()
                return await fetch("SELECT no_such_column FROM players", ())
            rows = await fetch(sql, params)
            if sql == stats_sql.GAMES_BY_TYPE:
                # Ranking comes next, in the same step: the third to get here waits for the read.
                ranked.append(user_id)
                if len(ranked) == 3:
                    everyone_waits.set()
            return rows

        return await summary(watched, user_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(stats_sql, "player_summary", held)
    three = OdbcSettings(dialect="sqlite", pool_size=3, query_timeout_seconds=5, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), three)
    try:
        at_once = asyncio.gather(
            *(stats.player_summary(u) for u in (NOVA, BLAZE, QUILL)), return_exceptions=True
        )
        results = await asyncio.wait_for(at_once, 30)  # a guard, not a timing assertion
        assert all(r is not None and r.rank is None for r in results), results  # type: ignore[union-attr]
        assert (len(opened), len(closed), stats._pool.freesize) == (3, 0, 3)
        failing = False
        again = await asyncio.gather(stats.player_summary(NOVA), stats.player_summary(BLAZE))
        assert [s.player_name for s in again if s] == ["Nova", "Blaze"]
        assert len(opened) == 3  # served by the ones kept: no player logs in again
    finally:
        await stats.aclose()


# ---- (e) transient errors are retried ------------------------------------------------------


async def test_every_players_total_unreadable_leaves_out_the_rank_not_the_players_own_stats(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Every player's total is a pass over every game session: on a big table and a small tier it
    # outlasts the query timeout every time, and with no totals ever read every summary failed,
    # though the speaker's own figures read at once. A failing statement stands in for it here.
    own = await embedded_summary(players_db(settings), NOVA)
    monkeypatch.setattr(stats_sql, "TOTALS", "SELECT no_such_column FROM players")
    caplog.set_level(logging.INFO, logger="bot.tools")
    stats = await OdbcStats.open(odbc_string(players_db(settings)), FAST)
    toolbox, others = await toolbox_over(stats, settings)
    try:
        over_odbc = await stats.player_summary(NOVA)
        embedded = await embedded_summary(players_db(settings), NOVA)
        told = await toolbox.run(ToolContext(user_id=NOVA), stats_call())
        await stats.player_summary(QUILL)
        assert stats._pool.freesize == 1  # its connection answered the statements after: kept
    finally:
        for thing in [*others, stats]:
            await thing.aclose()  # type: ignore[attr-defined]
    assert own is not None and own.rank is not None
    for summary in (over_odbc, embedded):
        assert summary == replace(own, rank=None, players_ranked=None)  # type: ignore[type-var]
    assert told.ok and told.result["total_points"] == own.total_points
    assert "rank" not in told.result and "players_ranked" not in told.result
    warned = [r for r in caplog.records if "without a rank" in r.getMessage()]
    # Once a backend (the embedded one has its own); the players after it, in the hold-off, not.
    assert [r.levelno for r in warned] == [logging.WARNING, logging.WARNING]
    assert "no_such_column" in warned[0].getMessage()


@pytest.mark.parametrize("old_totals", [False, True], ids=["no-totals-yet", "ranked-by-the-last"])
async def test_a_failed_read_of_every_total_logs_no_password(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, old_totals: bool
) -> None:
    # Drivers sometimes echo parts of the connection string in their errors. Every other line of
    # the ODBC backend goes through describe(), which masks each secret keyword's value whatever
    # its length; the read of every total logged the driver's error as it was, where the log's own
    # mask takes the configured password only from 8 characters on.
    connection_string = odbc_string(players_db(settings)) + f";UID=bot;PWD={PASSWORD}"
    monkeypatch.setattr(logs, "_values", frozenset())
    monkeypatch.setattr(logs, "_pattern", None)
    logs.mask_secrets(odbc_passwords(connection_string))  # as loading the settings does
    logs.install_secret_mask(logging.getLogger())
    execute = aioodbc.cursor.Cursor.execute
    refusing = [not old_totals]

    async def totals_refused(cursor: aioodbc.cursor.Cursor, sql: str, *params: object) -> object:
        if sql == stats_sql.TOTALS and refusing[0]:
            raise pyodbc.Error(
                "42000", f"[42000] [SQLite]not authorized for UID=bot;PWD={PASSWORD} (23) (SQLExecDirectW)"
            )
        return await execute(cursor, sql, *params)

    monkeypatch.setattr(aioodbc.cursor.Cursor, "execute", totals_refused)
    caplog.set_level(logging.DEBUG, logger="bot.tools")
    now = [0.0]
    stats = await OdbcStats.open(connection_string, FAST)
    stats._ranking._clock = lambda: now[0]
    try:
        if old_totals:
            assert (await stats.player_summary(NOVA)).rank is not None  # type: ignore[union-attr]
            now[0] += stats_sql.TOTALS_SECONDS
            refusing[0] = True
        for who in (NOVA, QUILL):  # the second in the hold-off the failure began
            assert await stats.player_summary(who) is not None
    finally:
        await stats.aclose()
    told = [r.getMessage() for r in caplog.records if "every player's total" in r.getMessage()]
    assert told and all("not authorized" in m for m in told), told
    assert PASSWORD not in caplog.text


async def test_a_blip_on_the_read_of_every_total_is_retried_not_answered_without_a_rank(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A transient error on that read (a database locked a moment, Azure SQL throttling) on a
    # connection that answers the next statements left the rank out, where the summary's retry,
    # as for any other statement, gives it. A read that outlasts the query timeout, or a blip at
    # every attempt, still leaves the rank out rather than fail the summary.
    own = await embedded_summary(players_db(settings), NOVA)
    assert own is not None
    summary = stats_sql.player_summary
    locked = pyodbc.Error("HY000", "[HY000] database is locked (5) (SQLExecDirectW)")
    timed_out = pyodbc.Error(
        "HYT00", "[HYT00] [Microsoft][ODBC Driver 18 for SQL Server]Query timeout expired (0)"
    )
    blips: list[pyodbc.Error] = []
    reads: list[str] = []

    async def blipping(fetch: stats_sql.Fetch, user_id: str, *args: object) -> object:
        async def once(sql: str, params: tuple[object, ...]) -> list[object]:
            if sql == stats_sql.TOTALS:
                reads.append(sql)
                if blips:
                    raise blips.pop()
            return await fetch(sql, params)

        return await summary(once, user_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(stats_sql, "player_summary", blipping)
    caplog.set_level(logging.INFO, logger="bot.tools")
    stats = await OdbcStats.open(odbc_string(players_db(settings)), FAST)  # 3 attempts
    try:
        blips[:] = [locked]
        assert await stats.player_summary(NOVA) == own and len(reads) == 2
        assert not [r for r in caplog.records if "without a rank" in r.getMessage()]
        stats._ranking = stats_sql.Ranking()  # no totals read: as at a start
        blips[:], reads[:] = [locked] * 3, []
        assert await stats.player_summary(NOVA) == replace(own, rank=None, players_ranked=None)
        assert len(reads) == 3
        stats._ranking = stats_sql.Ranking()
        blips[:], reads[:] = [timed_out], []
        assert await stats.player_summary(NOVA) == replace(own, rank=None, players_ranked=None)
        assert len(reads) == 1  # it would outlast the timeout again: not tried twice
    finally:
        await stats.aclose()


async def test_a_blip_on_the_read_of_every_total_too_near_the_deadline_answers_without_a_rank(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A retry whose backoff would end past the pool deadline is no retry: a summary that meets a
    # blip on that read answers without a rank and holds the read off. Raised for an attempt that
    # never comes, it would tell the player stats are unavailable though their own figures read.
    own = await embedded_summary(players_db(settings), NOVA)
    assert own is not None
    summary = stats_sql.player_summary
    reads: list[str] = []

    async def blipping(fetch: stats_sql.Fetch, user_id: str, *args: object) -> object:
        async def locked(sql: str, params: tuple[object, ...]) -> list[object]:
            if sql == stats_sql.TOTALS:
                reads.append(sql)
                raise pyodbc.Error("HY000", "[HY000] database is locked (5) (SQLExecDirectW)")
            return await fetch(sql, params)

        return await summary(locked, user_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(stats_sql, "player_summary", blipping)
    # A deadline 2 s away and a first backoff of 4 s: the first failure is already the last.
    late = OdbcSettings(
        dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=2, retry_backoff_seconds=4
    )
    stats = await OdbcStats.open(odbc_string(players_db(settings)), late)
    try:
        unranked = replace(own, rank=None, players_ranked=None)
        assert await stats.player_summary(NOVA) == unranked
        assert await stats.player_summary(NOVA) == unranked
    finally:
        await stats.aclose()
    assert len(reads) == 1  # the hold-off began: the second question did not read again


async def test_a_locked_database_is_retried_until_it_frees_up(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")  # retries are INFO
    patient = OdbcSettings(dialect="sqlite", pool_size=2, retries=6, retry_backoff_seconds=0.1)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), patient)
    locker = lock_exclusively(players_db(settings))
    # Another writer holds the file for the first attempts, then lets go.
    asyncio.get_running_loop().call_later(0.8, locker.execute, "ROLLBACK")
    try:
        summary = await stats.player_summary(NOVA)
    finally:
        await stats.aclose()
        locker.close()
    assert summary == await embedded_summary(players_db(settings), NOVA)
    assert any("transient error on attempt 1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("error", [DEADLOCK, LOCK_TIMEOUT], ids=["deadlock 1205", "lock timeout 1222"])
async def test_a_deadlock_or_lock_timeout_on_sql_server_is_retried(
    settings: Settings,
    embedded: SqliteStats,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: pyodbc.Error,
) -> None:
    # A report's write holding the tables: SQL Server makes the summary's read the deadlock
    # victim, or its lock wait runs out. The next attempt finds the locks released.
    execute = aioodbc.cursor.Cursor.execute
    refused: list[str] = []

    async def first_refused(cursor: aioodbc.cursor.Cursor, sql: str, *params: object) -> object:
        if not refused:
            refused.append(sql)
            raise error
        return await execute(cursor, sql, *params)

    monkeypatch.setattr(aioodbc.cursor.Cursor, "execute", first_refused)
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    stats = await OdbcStats.open(odbc_string(players_db(settings)), replace(FAST, dialect="sqlserver"))
    try:
        summary = await stats.player_summary(NOVA)
    finally:
        await stats.aclose()
    assert refused and summary == await embedded.player_summary(NOVA)
    retried = [r.getMessage() for r in caplog.records if "transient error on attempt 1" in r.getMessage()]
    assert len(retried) == 1 and f"SQLSTATE {error.args[0]}" in retried[0], retried


async def test_a_connection_dropped_under_the_pool_is_discarded_and_the_query_retried(
    settings: Settings, embedded: SqliteStats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")  # retries are INFO
    single = OdbcSettings(dialect="sqlite", pool_size=1, retries=1, retry_backoff_seconds=0.01)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), single)
    try:
        assert (await stats.player_summary(BLAZE)).player_name == "Blaze"  # type: ignore[union-attr]
        pool = stats._pool
        assert pool.size == pool.freesize == 1
        async with pool.acquire() as pooled:
            pooled._conn.close()  # the driver connection dies; aioodbc's wrapper does not know
        summary = await stats.player_summary(NOVA)
        assert pool.size == pool.freesize == 1
        async with pool.acquire() as fresh:
            assert fresh is not pooled and not fresh.closed
    finally:
        await stats.aclose()
    assert summary == await embedded.player_summary(NOVA)
    assert any("closed connection" in r.getMessage() for r in caplog.records)


async def _open_pooled(stats: OdbcStats, count: int) -> list[aioodbc.connection.Connection]:
    """`count` connections opened at once and put back idle, as a busy hour leaves the pool."""
    pool = stats._pool
    held = [await pool.acquire() for _ in range(count)]
    for conn in held:
        await pool.release(conn)
    assert pool.size == pool.freesize == count
    return held


def _break(monkeypatch: pytest.MonkeyPatch, broken: set[object], error: pyodbc.Error) -> list[object]:
    """Statements on the `broken` connections fail as the driver fails them on a connection the
    server dropped; closing them works. No TDS server is faked: the error is raised where the
    driver raises it, with its SQLSTATE and native error as msodbcsql gives them."""
    execute = aioodbc.cursor.Cursor.execute
    failed: list[object] = []

    async def on_a_dropped_connection(cursor: aioodbc.cursor.Cursor, sql: str, *params: object) -> object:
        if cursor.connection in broken:
            failed.append(cursor.connection)
            raise error
        return await execute(cursor, sql, *params)

    monkeypatch.setattr(aioodbc.cursor.Cursor, "execute", on_a_dropped_connection)
    return failed


@pytest.mark.parametrize(
    "error", [RESET, BROKEN_UNRECOVERABLE, BROKEN_RECOVERY_FAILED], ids=["08S01 104", "IMC06", "IMC01"]
)
async def test_a_pool_whose_idle_connections_all_dropped_still_answers_the_next_player(
    settings: Settings, embedded: SqliteStats, monkeypatch: pytest.MonkeyPatch, error: pyodbc.Error
) -> None:
    # An Azure SQL failover (or the gateway restarting) drops every session at once: each
    # connection the pool keeps is dead, and more of them than a summary has attempts. Taking them
    # one by one spent every attempt on a corpse, and the player heard stats are unavailable with
    # the database up again; so did the players after, until the last corpse was taken.
    azure = OdbcSettings(
        dialect="sqlserver", pool_size=4, query_timeout_seconds=5, retries=2, retry_backoff_seconds=0.01
    )
    stats = await OdbcStats.open(odbc_string(players_db(settings)), azure)
    try:
        dead = set(await _open_pooled(stats, 4))
        failed = _break(monkeypatch, dead, error)
        summary = await stats.player_summary(NOVA)
        assert summary == await embedded.player_summary(NOVA)
        assert len(failed) == 1  # the first told of the drop; the others were not tried
        assert not any(conn in dead for conn in stats._pool._free)
        assert await stats.player_summary(QUILL) == await embedded.player_summary(QUILL)
    finally:
        await stats.aclose()


# A statement on a connection whose server went silently (a failover whose packets are dropped,
# not reset): nothing answers it, and the driver gives up at the query timeout.
QUERY_TIMED_OUT = driver_error("HYT00", "Query timeout expired", 0)


async def test_a_query_timed_out_is_retried_on_a_fresh_connection_not_an_idle_one(
    settings: Settings, embedded: SqliteStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failover that drops packets rather than resetting sessions leaves every idle connection
    # half-open: a statement on one waits out the query timeout. The deadline (twice the query
    # timeout) leaves room for one retry after that; taken on the next idle connection, as dead,
    # it waited out the timeout too and the player heard stats are unavailable. retries=1 stands
    # for that deadline here, with no wall-clock wait.
    azure = OdbcSettings(
        dialect="sqlserver", pool_size=3, query_timeout_seconds=5, retries=1, retry_backoff_seconds=0.01
    )
    stats = await OdbcStats.open(odbc_string(players_db(settings)), azure)
    try:
        dead = set(await _open_pooled(stats, 3))
        failed = _break(monkeypatch, dead, QUERY_TIMED_OUT)
        assert await stats.player_summary(NOVA) == await embedded.player_summary(NOVA)
        assert len(failed) == 1
        assert not any(conn in dead for conn in stats._pool._free)
    finally:
        await stats.aclose()


async def test_a_query_timed_out_keeps_idle_connections_used_since_it_began(
    settings: Settings, embedded: SqliteStats, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow query, not a dead server: a connection another player used after it began answered
    # then, and is not closed for a reconnect.
    azure = OdbcSettings(
        dialect="sqlserver", pool_size=2, query_timeout_seconds=5, retries=1, retry_backoff_seconds=0.01
    )
    stats = await OdbcStats.open(odbc_string(players_db(settings)), azure)
    try:
        await _open_pooled(stats, 2)
        slow, alive = stats._pool._free  # the first is handed out first
        execute = aioodbc.cursor.Cursor.execute

        async def slow_then_used(cursor: aioodbc.cursor.Cursor, sql: str, *params: object) -> object:
            if cursor.connection is slow:
                alive._last_usage = asyncio.get_running_loop().time() + 1  # used while this ran
                raise QUERY_TIMED_OUT
            return await execute(cursor, sql, *params)

        monkeypatch.setattr(aioodbc.cursor.Cursor, "execute", slow_then_used)
        assert await stats.player_summary(NOVA) == await embedded.player_summary(NOVA)
        assert slow.closed and not alive.closed
    finally:
        await stats.aclose()


async def test_a_connection_idle_past_the_gateways_limit_is_not_handed_to_a_player(
    settings: Settings,
    embedded: SqliteStats,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Azure SQL's gateway (the Proxy connection policy, the default from outside Azure and with a
    # private endpoint) ends a session idle for 30 minutes, TCP keepalives notwithstanding. A
    # connection idle that long is closed and replaced before use, not tried and found dead.
    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    azure = replace(FAST, dialect="sqlserver")
    stats = await OdbcStats.open(odbc_string(players_db(settings)), azure)
    try:
        (idle,) = await _open_pooled(stats, 1)
        idle._last_usage -= 30 * 60  # the loop's clock, as aioodbc reads it: no wall-clock wait
        failed = _break(monkeypatch, {idle}, RESET)
        assert await stats.player_summary(NOVA) == await embedded.player_summary(NOVA)
    finally:
        await stats.aclose()
    assert not failed and idle.closed
    assert not [r for r in caplog.records if "transient error" in r.getMessage()]


async def test_players_waiting_for_a_connection_are_served_in_the_order_they_asked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A raid: every connection busy, players queued for the next one freed. aioodbc's pool gave a
    # freed connection to whoever reached it first, and a note arriving just then overtook a player
    # already waiting, who queued again at the back: a steady raid could hold that player to the
    # deadline and tell them stats are unavailable while later players were answered.
    summary = stats_sql.player_summary
    served: list[str] = []
    later: list[asyncio.Task[object]] = []
    first_may_finish, first_served = asyncio.Event(), asyncio.Event()

    async def held(fetch: stats_sql.Fetch, user_id: str, *args: object) -> object:
        served.append(user_id)
        if user_id == NOVA:
            first_served.set()
            await first_may_finish.wait()
        result = await summary(fetch, user_id, *args)  # type: ignore[arg-type]
        if user_id == NOVA:  # another note arrives as this player's connection is freed
            later.append(asyncio.create_task(stats.player_summary(QUILL)))
        return result

    monkeypatch.setattr(stats_sql, "player_summary", held)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        first = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(first_served.wait(), 30)
        waiting = asyncio.create_task(stats.player_summary(BLAZE))
        for _ in range(10):
            await asyncio.sleep(0)  # BLAZE's turn reaches the wait for a connection
        assert served == [NOVA]
        first_may_finish.set()
        results = await asyncio.wait_for(asyncio.gather(first, waiting), 30)  # a guard, not a timing
        results.append(await asyncio.wait_for(later[0], 30))
    finally:
        await stats.aclose()
    assert [s.player_name for s in results if s] == ["Nova", "Blaze", "Quill"]
    assert served == [NOVA, BLAZE, QUILL]


def _endless_totals(monkeypatch: pytest.MonkeyPatch, below: int) -> str:
    """The read of every total made a count below `below`: minutes on the SQLite driver, which
    ignores the query timeout and which a cancel ends at once."""
    endless = (
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {below})"
        " SELECT COUNT(*) FROM c"
    )
    monkeypatch.setattr(stats_sql, "TOTALS", endless)
    return endless


def _reading(monkeypatch: pytest.MonkeyPatch, sql: str) -> asyncio.Event:
    """Set as a summary begins the statement `sql`."""
    summary = stats_sql.player_summary
    reading = asyncio.Event()

    async def watched(fetch: stats_sql.Fetch, user_id: str, *args: object) -> object:
        async def reads(statement: str, params: tuple[object, ...]) -> list[object]:
            if statement == sql:
                reading.set()
            return await fetch(statement, params)

        return await summary(reads, user_id, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(stats_sql, "player_summary", watched)
    return reading


def _cancel_taken_late(monkeypatch: pytest.MonkeyPatch, waits: bool = False) -> asyncio.Event:
    """A driver slow to take a statement's cancel, or with `waits` a cancel that waits on the
    network: the cancel reaches the driver once the event returned is set."""
    cancel_late = asyncio.Event()
    cancel = odbc_stats._cancel_quietly

    async def late(conn: aioodbc.Connection, cursor: aioodbc.cursor.Cursor) -> None:
        async def later() -> None:
            await cancel_late.wait()
            await cancel(conn, cursor)

        if waits:
            await later()
        else:
            asyncio.get_running_loop().create_task(later())

    monkeypatch.setattr(odbc_stats, "_cancel_quietly", late)
    return cancel_late


def _drops(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, list[aioodbc.Connection]]:
    """Set as a connection with a statement on it begins to close; each such close listed."""
    dropping = asyncio.Event()
    closes: list[aioodbc.Connection] = []
    close = odbc_stats._close_quietly

    async def watched(conn: aioodbc.Connection, *rest: Any) -> None:
        if rest and rest[-1] is not None:
            closes.append(conn)
            dropping.set()
        await close(conn, *rest)

    monkeypatch.setattr(odbc_stats, "_close_quietly", watched)
    return dropping, closes


async def test_a_turn_cancelled_mid_statement_ends_the_statement_and_frees_its_connection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A player's turn cancelled (its deadline, shutdown) while the read of every total runs: the
    # connection is closed as in doubt, and closing waited for the statement to end (on Azure SQL
    # up to the query timeout, the server running it on meanwhile; the SQLite driver ignores that
    # timeout), holding the cancelled turn, its pool slot and shutdown. Once closing has begun the
    # driver takes no cancel: the statement must be cancelled first.
    totals = stats_sql.TOTALS
    reading = _reading(monkeypatch, _endless_totals(monkeypatch, 200000000))
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    before = handles_on(players_db(settings))
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(reading.wait(), 30)
        await asyncio.sleep(0.2)  # the driver is inside the statement (before it, it never starts)
        turn.cancel()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        assert done and turn.cancelled()
        monkeypatch.setattr(stats_sql, "TOTALS", totals)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again is not None and again.player_name == "Quill"
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    # The dropped connection's database file is let go too: else one descriptor more with every
    # turn cancelled mid-statement, for as long as the bot runs.
    assert handles_on(players_db(settings)) == before


@pytest.mark.parametrize("cancel_waits", [False, True], ids=["in_the_close", "in_the_cancel"])
async def test_a_turn_cancelled_again_while_its_connection_drops_hands_that_connection_to_nobody(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, cancel_waits: bool
) -> None:
    # A turn cancelled mid-statement (its deadline), then again while its connection is being
    # dropped (shutdown): dropping waits for the statement's thread, which a driver may let run on
    # past the cancel (Azure SQL up to the query timeout), or for the cancel itself, which may wait
    # on the network. The connection still open, with its
    # statement in the driver, must not go back to the pool for the next player to run a statement
    # beside it on a cursor that is not thread-safe, nor keep its database file open for good.
    totals = stats_sql.TOTALS
    reading = _reading(monkeypatch, _endless_totals(monkeypatch, 200000000))
    cancel_late = _cancel_taken_late(monkeypatch, waits=cancel_waits)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    before = handles_on(players_db(settings))
    loop = asyncio.get_running_loop()
    unread: list[str] = []  # "Task exception was never retrieved": the cancelled statement's
    loop.set_exception_handler(lambda _, context: unread.append(context["message"]))
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(reading.wait(), 30)
        await asyncio.sleep(0.2)  # the driver is inside the statement
        turn.cancel()
        await asyncio.sleep(0.2)  # the turn is dropping its connection, waiting for the statement
        turn.cancel()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        handed_out = [conn for conn in stats._pool._free if not conn.closed]
        cancel_late.set()
        assert done and turn.cancelled()
        assert handed_out == []
        monkeypatch.setattr(stats_sql, "TOTALS", totals)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again is not None and again.player_name == "Quill"
    finally:
        cancel_late.set()
        try:
            await asyncio.wait_for(stats.aclose(), 30)
            gc.collect()
        finally:
            loop.set_exception_handler(None)
    assert handles_on(players_db(settings)) == before
    assert unread == []


async def test_a_statement_the_driver_never_times_out_is_cancelled_at_twice_the_query_timeout(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The driver's query timeout is all that bounded a statement, and a driver may not keep it:
    # the SQLite one ignores it, and ODBC Driver 17 and 18 have been seen to wait minutes past it
    # for a server whose network went away. The player's note waited as long, holding a pool slot.
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000)"
        " SELECT COUNT(*), ? FROM c"
    )
    find_player = stats_sql.FIND_PLAYER
    monkeypatch.setattr(stats_sql, "FIND_PLAYER", endless)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=0)
    before = handles_on(players_db(settings))
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        with caplog.at_level(logging.ERROR, logger="bot.tools.odbc_stats"):
            with pytest.raises(ToolError):
                await asyncio.wait_for(stats.player_summary(NOVA), 30)  # a guard, not a timing assertion
        monkeypatch.setattr(stats_sql, "FIND_PLAYER", find_player)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again is not None and again.player_name == "Quill"
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    said = [r.getMessage() for r in caplog.records if r.name == "bot.tools.odbc_stats"]
    assert [m for m in said if "SQLSTATE HYT00" in m], said
    assert handles_on(players_db(settings)) == before  # the stuck statement's file let go too


async def test_a_read_of_every_total_stuck_past_the_query_timeout_leaves_out_the_rank_alone(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read of every total the driver lets run on (the SQLite one ignores the query timeout; ODBC
    # Driver 18 has been seen to wait minutes past it) is cancelled at twice that timeout, and its
    # connection is not used again. The speaker's achievements were read after it, on that
    # connection: the summary failed, and the retry on a fresh one came past the deadline, so the
    # player heard stats were unavailable though only the rank was. Their own figures answer.
    db = players_db(settings)
    # Read and closed before: SQLite defers closing a file another connection in the process
    # holds a lock on, which would hide whether the dropped connection let its file go.
    own, quill = await embedded_summary(db, NOVA), await embedded_summary(db, QUILL)
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000)"
        " SELECT COUNT(*) FROM c"
    )
    monkeypatch.setattr(stats_sql, "TOTALS", endless)
    one = OdbcSettings(
        dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=2, retry_backoff_seconds=0.01
    )
    before = handles_on(db)
    stats = await OdbcStats.open(odbc_string(db), one)
    try:
        summary = await asyncio.wait_for(stats.player_summary(NOVA), 30)  # a guard, not a timing
        assert summary == replace(own, rank=None, players_ranked=None)  # type: ignore[type-var]
        assert stats._pool.size == 0  # the stuck statement's connection is closed, not pooled
        # The read held off: the next player is answered at once, without a rank, on a fresh one.
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again == replace(quill, rank=None, players_ranked=None)  # type: ignore[type-var]
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    assert handles_on(db) == before  # the stuck statement's connection let its file go too


async def test_a_turn_cancelled_while_a_stuck_statements_connection_drops_closes_it_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The read of every total stuck past the query timeout: the summary answers without the rank,
    # and the connection is dropped, waiting for the cancelled statement's thread, which a driver
    # may let run on. The turn cancelled meanwhile (its deadline) must not begin a second close
    # of the same cursor and connection, from another thread, beside the first.
    _endless_totals(monkeypatch, 2000000000)
    cancel_late = _cancel_taken_late(monkeypatch)
    dropping, closes = _drops(monkeypatch)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(dropping.wait(), 30)
        turn.cancel()
        await asyncio.sleep(0.2)  # the cancelled turn's own way out, had it one, is under way
        cancel_late.set()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        assert done and turn.cancelled()
        assert len(closes) == 1
    finally:
        cancel_late.set()
        await asyncio.wait_for(stats.aclose(), 30)


async def test_a_turn_cancelled_once_while_a_stuck_statements_connection_drops_ends_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The read of every total stuck past the query timeout: the summary answers without the rank,
    # and the connection drops, waiting for the cancelled statement's thread, which a driver may
    # let run on for minutes. One cancel of the turn (its deadline) must end it then, leaving the
    # close to go on by itself, not make it wait for that thread all the same.
    totals = stats_sql.TOTALS
    _endless_totals(monkeypatch, 2000000000)
    cancel_late = _cancel_taken_late(monkeypatch)
    dropping, _ = _drops(monkeypatch)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(dropping.wait(), 30)
        turn.cancel()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        assert done and turn.cancelled()  # the statement still in the driver
        assert stats._closing  # its connection goes back once closed
        cancel_late.set()
        await asyncio.wait_for(asyncio.gather(*stats._closing), 30)
        monkeypatch.setattr(stats_sql, "TOTALS", totals)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)  # its turn given back
        assert again is not None and again.player_name == "Quill"
    finally:
        cancel_late.set()
        await asyncio.wait_for(stats.aclose(), 30)


def _calls_beside(
    monkeypatch: pytest.MonkeyPatch, handle: type, slow: str
) -> tuple[asyncio.Event, list[tuple[str, list[str]]]]:
    """Each call begun on a driver `handle` (a pyodbc cursor or connection) while another of its
    calls is still in the driver; the first `slow` call (a driver slow to make it) sets the event
    returned as it begins. Neither handle is thread-safe: a call beside another may crash."""
    calls: dict[int, list[str]] = {}
    beside: list[tuple[str, list[str]]] = []
    lock = threading.Lock()
    begun = asyncio.Event()
    loop = asyncio.get_running_loop()
    execute = aioodbc.Connection._execute

    def watched(func: Callable[..., Any]) -> Callable[..., Any]:
        owner = getattr(func, "__self__", None)
        if not isinstance(owner, handle):
            return func

        def run(*args: Any, **kwargs: Any) -> Any:
            with lock:
                if calls.get(id(owner)):
                    beside.append((func.__name__, list(calls[id(owner)])))
                calls.setdefault(id(owner), []).append(func.__name__)
            try:
                if func.__name__ == slow and not begun.is_set():
                    loop.call_soon_threadsafe(begun.set)
                    threading.Event().wait(0.3)  # a driver slow to make that call
                return func(*args, **kwargs)
            finally:
                with lock:
                    calls[id(owner)].remove(func.__name__)

        return run

    def _execute(self: aioodbc.Connection, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return execute(self, watched(func), *args, **kwargs)

    monkeypatch.setattr(aioodbc.Connection, "_execute", _execute)
    return begun, beside


async def test_a_turn_cancelled_while_its_statement_is_freed_makes_no_call_on_it_beside(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pyodbc cursor is not thread-safe: a cancel or a second free of its statement, on another
    # of the driver's threads while the first free is still in the driver, may crash the process.
    # The turn cancelled while its answered statement is being freed (a driver slow to free it)
    # must leave that free to end before the connection is dropped.
    freeing, beside = _calls_beside(monkeypatch, pyodbc.Cursor, "close")
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait(
            {turn, asyncio.ensure_future(freeing.wait())}, timeout=30, return_when=asyncio.FIRST_COMPLETED
        )
        assert not turn.done(), turn.result()
        turn.cancel()
        await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        await asyncio.wait_for(asyncio.gather(*stats._closing), 30)
        assert turn.cancelled()
        assert beside == []
    finally:
        await asyncio.wait_for(stats.aclose(), 30)


async def test_a_connection_whose_close_fails_after_its_turn_was_cut_goes_back_to_the_pool(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A dropped connection's closing, left to itself by a turn cancelled twice, failing in a way
    # no one foresaw: the pool must still get its connection back (closed), or with a pool of one
    # no player is served again until the bot restarts.
    totals = stats_sql.TOTALS
    _endless_totals(monkeypatch, 200000000)
    cancel_late = _cancel_taken_late(monkeypatch)
    dropping = asyncio.Event()
    close = odbc_stats._close_quietly

    async def failing(conn: aioodbc.Connection, *rest: Any) -> None:
        if rest and rest[-1] is not None:
            dropping.set()
            await close(conn, *rest)
            raise RuntimeError("the driver manager's own failure")
        await close(conn, *rest)

    monkeypatch.setattr(odbc_stats, "_close_quietly", failing)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(dropping.wait(), 30)
        turn.cancel()
        await asyncio.sleep(0.2)
        turn.cancel()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        assert done and turn.cancelled()
        monkeypatch.setattr(stats_sql, "TOTALS", totals)
        with caplog.at_level(logging.WARNING, logger="bot.tools.odbc_stats"):
            cancel_late.set()
            again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again is not None and again.player_name == "Quill"
        assert [r for r in caplog.records if "closing a dropped connection" in r.getMessage()]
    finally:
        cancel_late.set()
        await asyncio.wait_for(stats.aclose(), 30)


async def test_a_failed_read_of_every_total_frees_its_statement_on_the_kept_connection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A statement the database refuses as it runs (here an integer overflow; on Azure SQL a
    # conversion or arithmetic error) is no sign of a broken connection: the summary answers
    # without the rank, and the connection is kept. Its failed statement was left allocated on
    # it until the garbage collector came by; the connection closed first (idle too long,
    # shutdown), the SQLite driver kept the database file open for good.
    db = players_db(settings)
    monkeypatch.setattr(stats_sql, "TOTALS", "SELECT abs(-9223372036854775807 - 1) FROM players")
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    before = handles_on(db)
    stats = await OdbcStats.open(odbc_string(db), one)
    try:
        summary = await asyncio.wait_for(stats.player_summary(NOVA), 30)  # a guard, not a timing
        assert summary is not None and summary.player_name == "Nova" and summary.rank is None
        assert stats._pool.size == stats._pool.freesize == 1  # kept, not dropped
        kept = stats._pool._free[0]
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again is not None and again.player_name == "Quill"
        assert list(stats._pool._free) == [kept]
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    assert handles_on(db) == before


async def test_a_stuck_statement_whose_cancel_hangs_holds_its_player_no_longer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLCancel may wait on the network itself (a server gone silent), or not take (a driver that
    # ignores it), the statement then staying in the driver: the player whose read of every total
    # was cancelled at twice the query timeout waited for that cancel, and for the close behind
    # it, as long as it lasted. Their own figures answer; the connection closes by itself.
    db = players_db(settings)
    own = await embedded_summary(db, NOVA)
    totals = stats_sql.TOTALS
    _endless_totals(monkeypatch, 2000000000)
    cancel_late = _cancel_taken_late(monkeypatch, waits=True)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=0)
    before = handles_on(db)
    stats = await OdbcStats.open(odbc_string(db), one)
    try:
        summary = await asyncio.wait_for(stats.player_summary(NOVA), 15)  # a guard, not a timing
        assert summary == replace(own, rank=None, players_ranked=None)  # type: ignore[type-var]
        assert [conn for conn in stats._pool._free if not conn.closed] == []
        cancel_late.set()
        await asyncio.wait_for(asyncio.gather(*stats._closing), 30)
        monkeypatch.setattr(stats_sql, "TOTALS", totals)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)  # its turn given back
        assert again is not None and again.player_name == "Quill"
    finally:
        cancel_late.set()
        await asyncio.wait_for(stats.aclose(), 30)
    assert handles_on(db) == before


async def test_a_stuck_statement_whose_cancel_fails_still_has_its_connection_closed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The cancel of a statement stuck past twice the query timeout failing in a way no one
    # foresaw (not a driver error): its connection, the cursor unfreed, went back to the pool
    # open, for the next player, and kept the database file open for good once closed.
    db = players_db(settings)
    totals = stats_sql.TOTALS
    _endless_totals(monkeypatch, 2000000000)
    cancel = odbc_stats._cancel_quietly

    async def failing(conn: aioodbc.Connection, cursor: aioodbc.cursor.Cursor) -> None:
        await cancel(conn, cursor)
        raise RuntimeError("the driver manager's own failure")

    monkeypatch.setattr(odbc_stats, "_cancel_quietly", failing)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=0)
    before = handles_on(db)
    stats = await OdbcStats.open(odbc_string(db), one)
    try:
        with caplog.at_level(logging.WARNING, logger="bot.tools.odbc_stats"):
            summary = await asyncio.wait_for(stats.player_summary(NOVA), 30)  # a guard, not a timing
            await asyncio.wait_for(asyncio.gather(*stats._closing), 30)
        assert summary is not None and summary.rank is None
        assert [conn for conn in stats._pool._free if not conn.closed] == []
        assert [r for r in caplog.records if "the driver manager's own failure" in r.getMessage()]
        monkeypatch.setattr(stats_sql, "TOTALS", totals)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again is not None and again.player_name == "Quill"
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    assert handles_on(db) == before


async def test_a_turn_cancelled_while_its_cursor_is_made_closes_the_connection_after(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A driver connection is not thread-safe either: closed (SQLDisconnect, its handle freed) on
    # one of the driver's threads while another is still allocating a statement on it, the driver
    # manager may use freed memory. The turn cancelled while its cursor is made must leave the
    # making to end, and free what it made, before the connection is dropped.
    begun, beside = _calls_beside(monkeypatch, pyodbc.Connection, "cursor")
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    before = handles_on(players_db(settings))
    stats = await OdbcStats.open(odbc_string(players_db(settings)), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(begun.wait(), 30)
        turn.cancel()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        assert done and turn.cancelled()
        await asyncio.wait_for(asyncio.gather(*stats._closing), 30)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
        assert again is not None and again.player_name == "Quill"
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    assert beside == []
    assert handles_on(players_db(settings)) == before


@pytest.mark.parametrize("cut_at", ["FIND_PLAYER", "GAMES_BY_TYPE", "ACHIEVEMENTS", "TOTALS"])
async def test_a_turn_cancelled_with_a_statement_answered_unread_leaks_no_rows_to_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, cut_at: str
) -> None:
    # One connection, two players: the first's turn cancelled just as a statement of theirs is
    # answered, its rows not yet fetched. The next player on that pool is answered with their own
    # rows only, never what was left unread of the first's.
    db = players_db(settings)
    quill = await embedded_summary(db, QUILL)
    sql = getattr(stats_sql, cut_at)
    answered = asyncio.Event()
    execute = aioodbc.cursor.Cursor.execute
    cut: list[bool] = []

    async def watched(cursor: aioodbc.cursor.Cursor, statement: str, *params: object) -> object:
        done = await execute(cursor, statement, *params)
        if statement == sql and not cut:
            cut.append(True)
            answered.set()
            await asyncio.sleep(0.2)  # the turn is cancelled with the rows unread
        return done

    monkeypatch.setattr(aioodbc.cursor.Cursor, "execute", watched)
    one = OdbcSettings(dialect="sqlite", pool_size=1, query_timeout_seconds=5, retries=0)
    stats = await OdbcStats.open(odbc_string(db), one)
    try:
        turn = asyncio.create_task(stats.player_summary(NOVA))
        await asyncio.wait_for(answered.wait(), 30)
        turn.cancel()
        done, _ = await asyncio.wait({turn}, timeout=10)  # a guard, not a timing assertion
        assert done and turn.cancelled()
        await asyncio.wait_for(asyncio.gather(*stats._closing), 30)
        again = await asyncio.wait_for(stats.player_summary(QUILL), 30)
    finally:
        await asyncio.wait_for(stats.aclose(), 30)
    assert again == quill


async def test_a_full_pool_holds_a_player_twice_the_query_timeout_at_most(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Every connection busy: queueing again after each wait, with backoffs, held a player for
    # (retries + 1) x 2 x the query timeout and more. All attempts share one deadline, so the wait
    # that reaches it is the last: no retry is logged.
    single = OdbcSettings(
        dialect="sqlite", pool_size=1, query_timeout_seconds=1, retries=3, retry_backoff_seconds=0.5
    )
    stats = await OdbcStats.open(odbc_string(players_db(settings)), single)
    try:
        # The one deadline is chosen now: read against the loop's clock after it, never later.
        chosen = stats._pool_deadline() - asyncio.get_running_loop().time()
        assert 0 < chosen <= 2 * single.query_timeout_seconds
        async with stats._pool.acquire():  # another player's long query holds the only one
            with caplog.at_level(logging.WARNING, logger="bot.tools.odbc_stats"):
                with pytest.raises(ToolError):
                    await stats.player_summary(NOVA)
    finally:
        await stats.aclose()
    said = [r.getMessage() for r in caplog.records if r.name == "bot.tools.odbc_stats"]
    assert not [m for m in said if "retrying" in m], said
    assert [m for m in said if m.startswith("player stats query failed")], said


# ---- (f) check -------------------------------------------------------------------------------


async def test_check_counts_the_players(odbc: OdbcStats) -> None:
    assert await odbc.check() == "ODBC player database: 12 players"


@pytest.mark.parametrize("table", ["game_sessions", "achievements"])
async def test_check_fails_when_a_table_a_summary_reads_is_missing(settings: Settings, table: str) -> None:
    with sqlite3.connect(players_db(settings)) as conn:
        conn.execute(f"DROP TABLE {table}")
    stats = await OdbcStats.open(odbc_string(players_db(settings)), FAST)
    try:
        with pytest.raises(OdbcStatsError, match=f"no such table: {table}"):
            await stats.check()
    finally:
        await stats.aclose()


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (lambda tmp: odbc_string(tmp / "no" / "such" / "players.db"), "connect failed"),
        (lambda tmp: odbc_string(tmp / "players.db", driver="NoSuchDriver"), "Can't open lib 'NoSuchDriver'"),
    ],
)
async def test_check_names_the_reason_without_the_password(tmp_path: Path, broken, reason: str) -> None:
    stats = await OdbcStats.open(broken(tmp_path) + f";UID=bot;PWD={PASSWORD}", FAST)
    try:
        with pytest.raises(OdbcStatsError) as raised:
            await stats.check()
    finally:
        await stats.aclose()
    message = str(raised.value)
    assert reason in message and "SQLSTATE" in message
    assert PASSWORD not in message and raised.value.__cause__ is None


@pytest.mark.parametrize(
    ("connection_string", "named"),
    [
        ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:x.database.windows.net,1433", "ODBC Driver 18"),
        ("DRIVER=NoSuchDriver;Database=players.db", "NoSuchDriver"),
        ("Driver=/opt/nowhere/libmsodbcsql-18.so;Server=x", "/opt/nowhere/libmsodbcsql-18.so"),
        ("DSN=players;Server=x", "players"),
    ],
)
async def test_a_driver_that_is_not_installed_is_one_error_line_at_start(
    settings: Settings, connection_string: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The bot starts with the database down (the pool connects on the first question), but a
    # driver that is not installed is no outage that ends: it was said first when a player asked,
    # as "stats unavailable", and never at start where whoever deployed it looks. `check` says it
    # in its stats line alone, not in a log line besides.
    from bot.app import build_stats_backend

    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    odbc = make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_STATS="odbc",
        VOXDESK_SQL_CONNECTION_STRING=f"{connection_string};Uid=bot;Pwd={PASSWORD}",
    )
    checking = await build_stats_backend(odbc, read_only=True)  # as `check` builds it
    try:
        with pytest.raises(OdbcStatsError):
            await checking.check()
    finally:
        await checking.aclose()  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    stats = await build_stats_backend(odbc)
    await stats.aclose()  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert named in errors[0] and "VOXDESK_SQL_CONNECTION_STRING" in errors[0]
    assert PASSWORD not in caplog.text


def _sqlite_driver_files() -> list[str]:
    return [str(p) for p in sorted(Path("/usr/lib").glob("**/odbc/libsqlite3odbc.so"))]


async def test_an_installed_driver_is_no_error_at_start(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.tools.odbc_stats import say_if_the_driver_is_missing

    caplog.set_level(logging.INFO, logger="bot.tools.odbc_stats")
    # By name, braced, and by its library: a file name the loader finds, or its full path.
    drivers = ["SQLite3", "{SQLite3}", "libsqlite3odbc.so"]
    drivers += _sqlite_driver_files()[:1]
    # A file DSN names its driver inside: the connection tells.
    await say_if_the_driver_is_missing(f"FILEDSN=/etc/voxdesk/players.dsn;PWD={PASSWORD}")
    for driver in drivers:
        connection_string = odbc_string(players_db(settings), driver=driver)
        await say_if_the_driver_is_missing(connection_string)
        stats = await OdbcStats.open(connection_string, FAST)
        try:
            assert await stats.check() == "ODBC player database: 12 players"
        finally:
            await stats.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_health_check_line_for_odbc_stats(settings: Settings) -> None:
    from bot.health import check_all

    good = make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_STATS="odbc",
        VOXDESK_ODBC_DIALECT="sqlite",
        VOXDESK_SQL_CONNECTION_STRING=odbc_string(players_db(settings)),
    )
    bad = make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_STATS="odbc",
        VOXDESK_ODBC_DIALECT="sqlite",
        VOXDESK_SQL_CONNECTION_STRING=odbc_string(players_db(settings), driver="NoSuchDriver")
        + f";PWD={PASSWORD}",
    )
    (ok,) = [r for r in await check_all(good) if r.service == "stats"]
    (fail,) = [r for r in await check_all(bad) if r.service == "stats"]
    assert ok.ok and ok.detail == "ODBC player database: 12 players"
    assert not fail.ok and "NoSuchDriver" in fail.detail and PASSWORD not in fail.line()


@pytest.mark.parametrize("dialect", ["sqlite", "sqlserver"])
def test_the_demo_seeds_never_delete_a_studios_players(dialect: str) -> None:
    # Run again over a studio's database, a DELETE would wipe the players it linked or added.
    seed = (paths.SQL / dialect / "seed.sql").read_text().upper()
    assert "DELETE" not in seed and "TRUNCATE" not in seed and "DROP" not in seed
    if dialect == "sqlserver":  # `init` checks for itself that the SQLite players table is empty
        assert "IF EXISTS (SELECT 1 FROM DBO.PLAYERS)" in seed and "SET NOEXEC ON" in seed


@pytest.mark.parametrize("dialect", ["sqlite", "sqlserver"])
async def test_achievements_with_mixed_offsets_are_newest_first_over_odbc_too(
    settings: Settings, embedded: SqliteStats, dialect: str
) -> None:
    # The same order as the embedded path, whichever dialect is named: no dialect's date
    # functions are used for it.
    from tests.test_tools import MIXED_OFFSETS, NEWEST_FIRST

    with sqlite3.connect(players_db(settings)) as conn:
        conn.executemany(
            "INSERT INTO achievements (player_id, name, earned_at) VALUES (1, ?, ?)", MIXED_OFFSETS
        )
    stats = await OdbcStats.open(odbc_string(players_db(settings)), replace(FAST, dialect=dialect))
    try:
        summary = await stats.player_summary(NOVA)
    finally:
        await stats.aclose()
    assert summary is not None and summary.achievements == NEWEST_FIRST
    assert summary == await embedded.player_summary(NOVA)


async def test_names_and_achievement_titles_in_any_script_round_trip(
    settings: Settings, embedded: SqliteStats
) -> None:
    # NVARCHAR on Azure SQL; pyodbc binds a str as wide characters and reads wide columns back as
    # UTF-16, so an emoji (a surrogate pair there) and a CJK title come back whole, as they were.
    name, title = "Zoë 🎮 Ñandú 連勝", "Über-Sieg ★ 連勝 🏆"
    with sqlite3.connect(players_db(settings)) as conn:
        conn.execute(
            "INSERT INTO players (player_id, discord_user_id, player_name) VALUES (99, ?, ?)",
            ("990099", name),
        )
        conn.execute(
            "INSERT INTO achievements (player_id, name, earned_at) VALUES (99, ?, '2026-11-18T03:00:00Z')",
            (title,),
        )
    stats = await OdbcStats.open(odbc_string(players_db(settings)), replace(FAST, dialect="sqlserver"))
    try:
        summary = await stats.player_summary("990099")
    finally:
        await stats.aclose()
    assert summary is not None and summary.player_name == name and summary.achievements == [title]
    assert summary == await embedded.player_summary("990099")


def test_a_cancelled_statement_handed_to_the_players_waiting_for_its_read_stays_itself() -> None:
    # The players waiting for a read of every total get its error anew (stats_sql._again, from its
    # type and arguments). StatementStuck could not be made from its own arguments, so they got a
    # RuntimeError of pyodbc's tuple: a second WARNING for the one failure, in other words.
    stuck = StatementStuck(20)
    again = stats_sql._again(stuck)
    assert type(again) is StatementStuck and again.args == stuck.args
    assert describe(again) == describe(stuck) == "no answer in 20 s, cancelled (0) (SQLSTATE HYT00)"


def test_the_installed_aioodbc_has_the_pool_logins_the_breaker_gates() -> None:
    # _GatedPool gates logins by overriding aioodbc's private Pool._fill_free_pool, which
    # Pool._acquire calls: under another name the override would never run, and no login be gated.
    assert list(inspect.signature(aioodbc.Pool._fill_free_pool).parameters) == ["self", "override_min"]
    assert "_fill_free_pool" in aioodbc.Pool._acquire.__code__.co_names
    assert unlike_aioodbc_0_5() is None


def _fill_free_pool_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioodbc.Pool, "_fill_pool", aioodbc.Pool._fill_free_pool, raising=False)
    monkeypatch.delattr(aioodbc.Pool, "_fill_free_pool")


def _fill_free_pool_of_another_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fill(self: aioodbc.Pool) -> None:
        pass

    monkeypatch.setattr(aioodbc.Pool, "_fill_free_pool", fill)


def _fill_free_pool_no_longer_called(monkeypatch: pytest.MonkeyPatch) -> None:
    async def acquire(self: aioodbc.Pool) -> aioodbc.Connection:
        raise NotImplementedError

    monkeypatch.setattr(aioodbc.Pool, "_acquire", acquire)


@pytest.mark.parametrize(
    "change",
    [_fill_free_pool_renamed, _fill_free_pool_of_another_signature, _fill_free_pool_no_longer_called],
    ids=["renamed", "another signature", "no longer called"],
)
async def test_an_aioodbc_whose_pool_logins_the_breaker_cannot_gate_is_refused_at_start(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, change: Callable[[pytest.MonkeyPatch], None]
) -> None:
    # The pool logs in lazily, so the bot would start, with its breaker silently gating nothing
    # (or each lookup failing on the override's call): said at start, naming what changed.
    change(monkeypatch)
    with pytest.raises(AioodbcUnlike, match=r"aioodbc 0\.5: .*_fill_free_pool.*install aioodbc>=0\.5,<0\.6"):
        stats = await OdbcStats.open(odbc_string(players_db(settings)), FAST)
        await stats.aclose()
