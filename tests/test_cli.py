import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import typing
from pathlib import Path

import pytest

from bot import health, paths
from bot.config import ConfigError, Settings, load_settings
from bot.db import A_FOLDER, DAMAGED
from bot.tools import grievance_store

from .conftest import NOVA, REPO, make_settings


def voxdesk(
    *args: str, storage: Path, timeout: float = 300, cwd: Path = REPO, unprivileged: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """`unprivileged`: with file modes applied to it, as a service's user has them. One speech
    worker and eSpeak's voice, as conftest's settings have: a command that loads the engine
    (`ask`, `check`, `demo`) otherwise starts one per core, each loading every speech model, and
    loads and speaks the neural voice, which doubles an `ask`. No test here is of the voice."""
    environ = {
        **os.environ,
        "VOXDESK_STORAGE_DIR": str(storage),
        "VOXDESK_OFFLINE_WORKERS": "1",
        "VOXDESK_OFFLINE_VOICE": "en-us",
        **env,
    }
    return subprocess.run(
        [*(_without_root_override() if unprivileged else []), sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_ask_with_a_pdf_exits_nonzero_with_the_reason_and_no_traceback(settings, tmp_path: Path) -> None:
    pdf = tmp_path / "note.ogg"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(2000))
    done = voxdesk("ask", str(pdf), "--json", storage=settings.storage_dir)
    assert done.returncode == 3
    assert done.stdout == ""
    assert "looks like a PDF document" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("given", ["empty", "missing", "a file"])
def test_demo_with_no_notes_to_answer_is_a_wrong_argument(tmp_path: Path, given) -> None:
    # Status 1, which the README gives a failed `check` line or an upload, not a wrong argument.
    samples = tmp_path / "notes"
    if given == "empty":
        samples.mkdir()
    elif given == "a file":
        samples.write_bytes(b"OggS")
    done = voxdesk("demo", "--samples", str(samples), storage=tmp_path / "var")
    assert (done.returncode, done.stdout) == (2, "")
    why = "no .ogg samples in" if given == "empty" else "is no folder:"
    assert done.stderr.startswith(f"demo: {why}" if given == "empty" else f"demo: {samples} {why}")
    assert done.stderr.endswith(": --samples names a folder of .ogg voice notes\n")
    assert done.stderr.count("\n") == 1


def test_ask_before_init_says_to_run_init(tmp_path: Path) -> None:
    note = tmp_path / "n.ogg"
    note.write_bytes(b"OggS")
    done = voxdesk("ask", str(note), storage=tmp_path / "empty")
    assert done.returncode == 2
    assert "python -m bot init" in done.stderr


def test_sync_without_a_token_names_sync(tmp_path: Path) -> None:
    # "`run` needs it" answered `voxdesk sync`, as if the wrong command had been typed.
    done = voxdesk("sync", storage=tmp_path, DISCORD_TOKEN="")
    assert done.returncode == 2
    assert done.stderr == (
        "config error: DISCORD_TOKEN is not set but `sync` needs it: set it in the environment or .env\n"
    )


def test_bad_setting_exits_with_one_line(tmp_path: Path) -> None:
    done = voxdesk("init", storage=tmp_path, VOXDESK_AGENT_ENGINE="gpt")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "agent.engine" in done.stderr


def test_run_and_check_refuse_an_application_id_given_as_the_token_without_asking_discord(
    tmp_path: Path,
) -> None:
    # The portal shows the application id and the client secret beside the token: Discord's
    # refusal named no cause, and `check` passed it as set.
    nowhere = "http://127.0.0.1:9"  # nothing listens: a login tried would be exit 5, not 2
    env = {"DISCORD_TOKEN": "912345678901234567", "VOXDESK_DISCORD_API_BASE": nowhere}
    ran = voxdesk("run", storage=tmp_path, **env)
    said = "DISCORD_TOKEN is a number, such as the application id: it is not a bot token"
    assert ran.returncode == 2
    assert ran.stderr.startswith(f"config error: {said}; copy the token from the Bot page")
    assert ran.stderr.count("\n") == 1
    settings = load_settings(REPO / "config.toml", environ=env)
    with pytest.raises(ConfigError, match=said):
        health.check_discord_token(settings, for_run=False)


def test_index_manuals_refuses_an_index_address_as_the_endpoint(tmp_path: Path) -> None:
    # Run before tools.manuals = "azure" (so start-up's own check is not made): the upload went to
    # .../indexes('manuals')/docs/indexes/manuals... and failed as a service error.
    done = voxdesk(
        "index-manuals",
        storage=tmp_path,
        AZURE_SEARCH_API_KEY="k" * 32,
        VOXDESK_SEARCH_ENDPOINT="http://127.0.0.1:9/indexes('manuals')/docs?api-version=2024-07-01",
    )
    assert (done.returncode, done.stderr) == (
        2,
        "config error: search.endpoint = \"http://127.0.0.1:9/indexes('manuals')/docs\" holds a request's"
        " path or query: set it to http://127.0.0.1:9 alone (the rest goes in search.index)\n",
    )


def test_index_manuals_with_entra_auth_asks_for_no_key(tmp_path: Path) -> None:
    # search.auth = "entra": the identity's token stands in for AZURE_SEARCH_API_KEY, whose absence
    # stopped the command before it looked at the manuals.
    empty = tmp_path / "manuals"
    empty.mkdir()
    done = voxdesk(
        "index-manuals",
        "--manuals",
        str(empty),
        storage=tmp_path,
        VOXDESK_SEARCH_AUTH="entra",
        VOXDESK_SEARCH_ENDPOINT="http://127.0.0.1:9",
    )
    said = f"index-manuals: no manuals (*.md) with sections found in {empty}: --manuals names a folder"
    assert (done.returncode, done.stderr) == (2, said + " of *.md manuals\n")


@pytest.mark.parametrize("given", ["--manuals", "storage.manuals_dir", "--manuals missing"])
def test_index_manuals_of_a_folder_without_manuals_is_a_wrong_argument(tmp_path: Path, given) -> None:
    # Status 1, a failed upload's, where `init` refuses the same storage.manuals_dir with 2. A
    # --manuals that is no folder is said so, as demo says it of --samples.
    empty = tmp_path / "manuals"
    if given != "--manuals missing":
        empty.mkdir()
    given = given.split()[0]
    chosen = ["--manuals", str(empty)] if given == "--manuals" else []
    env = {} if given == "--manuals" else {"VOXDESK_STORAGE_MANUALS_DIR": str(empty)}
    done = voxdesk(
        "index-manuals",
        *chosen,
        storage=tmp_path,
        AZURE_SEARCH_API_KEY="k" * 32,
        VOXDESK_SEARCH_ENDPOINT="http://127.0.0.1:9",
        **env,
    )
    said = (
        f"index-manuals: no manuals (*.md) with sections found in {empty}: --manuals names a folder"
        " of *.md manuals"
        if given == "--manuals"
        else f"config error: storage.manuals_dir {empty} holds no manuals: fix the setting"
    )
    if not empty.exists():
        said = f"index-manuals: {empty} is no folder: --manuals names a folder of *.md manuals"
    assert (done.returncode, done.stdout, done.stderr) == (2, "", said + "\n")


@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
def test_a_damaged_database_is_one_line_and_the_process_ends(settings) -> None:
    # aiosqlite's worker thread is no daemon: a connection left open by a failed open once kept
    # `ask`, `check`, `web` and `run` from ever exiting.
    players = settings.storage_dir / "players.db"
    players.write_bytes(os.urandom(8192))
    sample = str(paths.SAMPLES / "2-how-many-points.ogg")
    done = voxdesk("ask", sample, storage=settings.storage_dir)
    assert done.returncode == 4 and "Traceback" not in done.stderr
    # Which of the storage folder's nine databases: the one to restore from a backup.
    damaged = f"{players}: file is not a database{DAMAGED}"
    assert done.stderr.strip() == f"a database under the storage folder cannot be used: {damaged}"
    checked = voxdesk("check", storage=settings.storage_dir)
    assert checked.returncode == 1 and f"FAIL  stats      sqlite   {damaged}" in checked.stdout


async def test_check_names_the_database_whose_pages_are_damaged(settings) -> None:
    # Header whole, table pages garbled: the schema version reads, the count does not, and
    # SQLite's words alone do not say which of the folder's databases to restore.
    from bot import health
    from bot.tools.grievance_store import LocalGrievanceStore

    grievances = settings.storage_dir / "grievances.db"
    store = await LocalGrievanceStore.open(grievances)
    for i in range(40):
        await store.register("111111111111111111", "other", f"lag spike number {i} " * 20)
    await store.aclose()
    with sqlite3.connect(grievances) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
    whole = grievances.read_bytes()  # every page but the first, which holds the schema, garbled
    grievances.write_bytes(whole[:page] + b"\xff" * (len(whole) - page))
    results = {r.service: r for r in await health.check_all(settings)}
    line = results["grievances"]
    assert not line.ok and line.detail.startswith(f"{grievances}: "), line.detail


@pytest.mark.parametrize("broken", ["garbage", "truncated", "a folder"])
async def test_a_broken_grievance_store_is_refused_naming_it_and_the_backup_and_left_as_found(
    settings, broken: str
) -> None:
    # Every grievance the studio holds is in that file: the bot must neither start on it nor make a
    # new store over it, and the line must say the way back, not SQLite's words alone.
    from bot.tools.grievance_store import LocalGrievanceStore

    grievances = settings.storage_dir / "grievances.db"
    with sqlite3.connect(grievances) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    whole = grievances.read_bytes()
    if broken == "garbage":
        grievances.write_bytes(os.urandom(len(whole)))
    elif broken == "truncated":
        grievances.write_bytes(whole[: len(whole) // 2])
    else:
        grievances.unlink()
        grievances.mkdir()
    kept = None if broken == "a folder" else grievances.read_bytes()
    why = A_FOLDER if broken == "a folder" else DAMAGED
    with pytest.raises(sqlite3.Error) as refused:
        await LocalGrievanceStore.open(grievances)
    said = str(refused.value)
    assert said.startswith(f"{grievances}: ") and said.endswith(why), said
    assert "voxdesk backup" in why
    line = {r.service: r for r in await health.check_all(settings)}["grievances"]
    detail = line.detail  # SQLite's own words differ between a read-only open and a store's
    assert not line.ok and detail.startswith(f"{grievances}: ") and detail.endswith(why), detail
    if kept is None:
        assert grievances.is_dir() and not any(grievances.iterdir())
    else:
        assert grievances.read_bytes() == kept


NEWER_SCHEMAS = {
    "conversations.db": [
        "CREATE TABLE turns (id INTEGER PRIMARY KEY, said TEXT NOT NULL, heard_by TEXT NOT NULL)"
    ],
    # A players table still, and the stats' other tables gone: read on, every player would hear
    # "stats unavailable" rather than the bot stop.
    "players.db": [
        "CREATE TABLE players (player_id INTEGER PRIMARY KEY, discord_user_id TEXT, player_name TEXT)"
    ],
}


@pytest.mark.parametrize("name", NEWER_SCHEMAS)
@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
def test_a_database_a_newer_voxdesk_wrote_stops_the_bot_in_one_line_and_check_says_it(settings, name) -> None:
    # A downgrade, or a newer install's backup restored into this one.
    talk = settings.storage_dir / name
    talk.unlink(missing_ok=True)
    with sqlite3.connect(talk) as db:
        for sql in NEWER_SCHEMAS[name]:
            db.execute(sql)
        db.execute("PRAGMA user_version = 99")
    line = (
        f"{talk} was written by a newer voxdesk (schema version 99, this one knows up to 1):"
        " upgrade voxdesk, or restore a backup this version made"
    )
    sample = str(paths.SAMPLES / "2-how-many-points.ogg")
    asked = voxdesk("ask", sample, storage=settings.storage_dir)
    assert asked.returncode == 4, asked.stderr
    assert asked.stderr.strip() == f"a database under the storage folder cannot be used: {line}"
    # `run` builds every store before it logs in: no Discord is reached (nor needed) here.
    ran = voxdesk(
        "run",
        storage=settings.storage_dir,
        DISCORD_TOKEN="x.y.z",
        VOXDESK_DISCORD_API_BASE="http://127.0.0.1:9",
    )
    assert ran.returncode == 4 and "Traceback" not in ran.stderr
    assert (
        ran.stderr.strip().splitlines()[-1] == f"a database under the storage folder cannot be used: {line}"
    )
    checked = voxdesk("check", storage=settings.storage_dir)
    assert checked.returncode == 1 and f"FAIL  storage    sqlite   {line}\n" in checked.stdout
    if name == "players.db":  # nor does `init` apply this version's schema to it
        inited = voxdesk("init", storage=settings.storage_dir)
        assert inited.returncode == 4, inited.stderr
        assert inited.stderr.strip() == f"a database under the storage folder cannot be used: {line}"
    with sqlite3.connect(talk) as db:  # left as the newer voxdesk made it
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
        assert names == [sql.split()[2] for sql in NEWER_SCHEMAS[name]]


def _files(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folder` with its modification time and SHA-256."""
    return {
        str(f.relative_to(folder)): (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


@pytest.mark.parametrize("var", ["initialised", "new"])
def test_init_refuses_a_newer_grievances_db_before_writing_anything(settings, var: str) -> None:
    # init wrote players.db and manuals.db first, then stopped at grievances.db: half an init by
    # a version that refuses to run on what it left.
    storage = settings.storage_dir
    grievances = storage / "grievances.db"
    if var == "new":  # a newer install's grievances copied into a folder this one never made
        for f in storage.iterdir():
            if f != grievances:
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    with contextlib.closing(sqlite3.connect(grievances)) as db:
        db.execute("PRAGMA user_version = 99")
    before = _files(storage)
    inited = voxdesk("init", storage=storage)
    assert inited.returncode == 4, inited.stderr
    assert inited.stderr.strip() == (
        f"a database under the storage folder cannot be used: {grievances} was written by a newer"
        f" voxdesk (schema version 99, this one knows up to {grievance_store.SCHEMA_VERSION}): upgrade"
        " voxdesk, or restore a backup this version made"
    )
    assert inited.stdout == ""
    assert _files(storage) == before


@pytest.mark.parametrize("command", ["ask", "run"])
def test_a_newer_database_opened_last_stops_ask_and_run_before_they_write_any(settings, command) -> None:
    # The stores open one by one: a newer usage.db was refused only after conversations.db,
    # notes.db and preferences.db were made (or migrated) by a version that then would not run.
    storage = settings.storage_dir
    usage = storage / "usage.db"
    with contextlib.closing(sqlite3.connect(usage)) as db:
        db.execute("PRAGMA user_version = 99")
    before = _files(storage)
    args = [str(paths.SAMPLES / "2-how-many-points.ogg")] if command == "ask" else []
    ran = voxdesk(
        command, *args, storage=storage, DISCORD_TOKEN="x.y.z", VOXDESK_DISCORD_API_BASE="http://127.0.0.1:9"
    )
    assert ran.returncode == 4, ran.stderr
    assert (
        ran.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"a database under the storage folder cannot be used: {usage} was written by a newer voxdesk"
        )
    )
    assert _files(storage) == before


@pytest.mark.parametrize("players_db", ["empty file", "no players table"])
@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
def test_a_players_database_without_players_is_one_line_for_check_ask_and_run(settings, players_db) -> None:
    # A failed first `init` leaves an empty file; a studio's copy cut short, a database without
    # the table. Run went on and told every player "stats unavailable"; check said "no such table".
    players = settings.storage_dir / "players.db"
    players.unlink()
    if players_db == "empty file":
        players.touch()
    else:
        with sqlite3.connect(players) as db:
            db.execute("CREATE TABLE scores (player TEXT, points INTEGER)")
    line = (
        f'{players} has no players table: run `python -m bot init`, or set tools.stats = "odbc"'
        " for the studio's own player database"
    )
    checked = voxdesk("check", storage=settings.storage_dir)
    assert checked.returncode == 1 and f"FAIL  stats      sqlite   {line}\n" in checked.stdout
    asked = voxdesk("ask", str(paths.SAMPLES / "2-how-many-points.ogg"), storage=settings.storage_dir)
    assert asked.returncode == 2 and asked.stderr.strip() == line
    ran = voxdesk(
        "run",
        storage=settings.storage_dir,
        DISCORD_TOKEN="x.y.z",
        VOXDESK_DISCORD_API_BASE="http://127.0.0.1:9",
    )
    assert ran.returncode == 2 and ran.stderr.strip().splitlines()[-1] == line
    if players_db == "empty file":
        assert players.stat().st_size == 0  # still what `init` takes for a new one


def test_run_that_cannot_reach_discord_says_so_and_exits_5(settings) -> None:
    # A firewall, a proxy, DNS or Discord's own outage at start: status 4 and "Connect call failed"
    # told the operator of a file, database or speech model, and not which service failed.
    ran = voxdesk(
        "run",
        storage=settings.storage_dir,
        DISCORD_TOKEN="x.y.z",
        VOXDESK_DISCORD_API_BASE="http://127.0.0.1:9/api/v10",
        VOXDESK_OFFLINE_WORKERS="1",
    )
    last = ran.stderr.strip().splitlines()[-1]
    assert ran.returncode == 5 and "Traceback" not in ran.stderr, ran.stderr
    assert "could not reach Discord" in last and "127.0.0.1:9" in last, last


async def test_run_whose_login_discord_rate_limits_for_long_says_so_and_exits_5(
    settings, monkeypatch
) -> None:
    """A 429 of hours on logging in (a supervisor restarting the bot in a loop) is not waited out
    (rate_limit_seconds): one line and status 5, as for any Discord that cannot be reached."""
    import asyncio

    from tests.fakes.discord_server import TOKEN, FakeDiscord, serving

    async def limited(self: FakeDiscord, request: object) -> object:
        self.retry_after = 7200.0
        return self._rate_limited("me", global_=False)

    monkeypatch.setattr(FakeDiscord, "_me", limited)
    async with serving() as fake:
        env = {**os.environ, **fake.settings_env(), "DISCORD_TOKEN": TOKEN, "VOXDESK_OFFLINE_WORKERS": "1"}
        env["VOXDESK_STORAGE_DIR"] = str(settings.storage_dir)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=env, cwd=REPO, stderr=subprocess.PIPE
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
    said = err.decode()
    assert process.returncode == 5 and "Traceback" not in said, said
    assert "could not reach Discord to log in: rate limited for 7200 s" in said, said


def test_a_store_that_fails_after_opening_its_file_is_one_line_and_the_process_ends(settings) -> None:
    # Opening a store does more than open its file (columns, indexes, pruning); a failure there
    # (here an index the rows break; in life a database locked past its wait) left the connection
    # open, and its worker thread kept `ask` and `run` alive for ever after the error line.
    with sqlite3.connect(settings.storage_dir / "grievances.db") as db:
        db.execute("DROP INDEX grievances_by_spool_id")
        db.execute("UPDATE grievances SET spool_id = 'same'")
    sample = str(paths.SAMPLES / "2-how-many-points.ogg")
    done = voxdesk("ask", sample, storage=settings.storage_dir, timeout=120)
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert "UNIQUE constraint failed" in done.stderr


@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
def test_files_and_ports_that_cannot_be_used_are_one_line(settings, tmp_path: Path) -> None:
    bad_toml = tmp_path / "config.toml"
    bad_toml.write_bytes(b"[agent]\nengine = '\xff'\n")
    config = voxdesk("--config", str(bad_toml), "check", storage=settings.storage_dir)
    assert (
        config.returncode == 2 and "is not valid TOML" in config.stderr and "Traceback" not in config.stderr
    )
    port = voxdesk("web", "--port", "99999", storage=settings.storage_dir)
    assert port.returncode == 2 and "--port 99999" in port.stderr and "Traceback" not in port.stderr


def test_init_refuses_a_manuals_folder_with_no_manuals(settings, tmp_path: Path) -> None:
    done = voxdesk("init", storage=settings.storage_dir, VOXDESK_STORAGE_MANUALS_DIR=str(tmp_path / "nope"))
    assert done.returncode == 2 and "holds no manuals" in done.stderr
    with sqlite3.connect(settings.storage_dir / "manuals.db") as conn:  # the index is left as it was
        assert conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0] > 0


def test_init_is_idempotent_and_never_drops_a_filed_grievance_or_a_linked_player(settings) -> None:
    db = settings.storage_dir / "grievances.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO grievances (local_key, user_id, category, description, created_at, updated_at)"
            " VALUES ('GRV-99', '5', 'other', 'keep me', 'x', 'x')"
        )
        conn.execute("UPDATE grievances SET status = 'resolved' WHERE local_key = 'GRV-11'")
        conn.execute("DELETE FROM grievances WHERE local_key = 'GRV-12'")  # staff cleared a demo row
    players = settings.storage_dir / "players.db"
    with sqlite3.connect(players) as conn:  # a studio links a real player and adds one
        conn.execute("UPDATE players SET discord_user_id = '424242424242424242' WHERE player_id = 1")
        conn.execute(
            "INSERT INTO players (player_id, discord_user_id, player_name) VALUES (99, '9090', 'Real')"
        )
    import asyncio

    from bot.seed import initialise

    lines = asyncio.run(initialise(settings, speech=False))
    assert any("13 kept" in line for line in lines), lines
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT local_key, status FROM grievances").fetchall())
    assert rows["GRV-99"] == "open"
    assert rows["GRV-11"] == "resolved"  # a re-run does not reset what happened to a ticket
    assert "GRV-12" not in rows  # nor bring back a demo ticket staff removed
    assert json.loads(paths.GRIEVANCES.read_text())[0]["key"] == "GRV-10"
    with sqlite3.connect(players) as conn:
        linked = conn.execute("SELECT player_id, discord_user_id FROM players WHERE player_id IN (1, 99)")
        assert linked.fetchall() == [(1, "424242424242424242"), (99, "9090")]
        assert conn.execute("SELECT COUNT(*) FROM game_sessions").fetchone()[0] == 277


def test_init_after_a_studio_empties_the_players_brings_no_demo_data_back(settings) -> None:
    import asyncio

    from bot.seed import initialise

    with sqlite3.connect(settings.storage_dir / "players.db") as conn:  # stats live elsewhere now
        for table in ("achievements", "game_sessions", "players"):
            conn.execute(f"DELETE FROM {table}")
    with sqlite3.connect(settings.storage_dir / "grievances.db") as conn:
        conn.execute("DELETE FROM grievances WHERE local_key = 'GRV-12'")
    lines = asyncio.run(initialise(settings, speech=False))
    assert any("players: 0 kept" in line for line in lines), lines
    with sqlite3.connect(settings.storage_dir / "grievances.db") as conn:
        assert not conn.execute("SELECT 1 FROM grievances WHERE local_key = 'GRV-12'").fetchall()


async def test_init_brings_no_demo_data_to_a_folder_the_bot_filed_grievances_in(tmp_path: Path) -> None:
    # A studio on its own stats and manuals (ODBC, Azure AI Search) and the OpenAI engine needs no
    # `init` until it turns the offline engine on, or runs `init` as the README says at an upgrade:
    # its folder has no players.db, yet it is no new one. The demo tickets would have been shown
    # on the desk among its players' (GRV-10 to GRV-13), and its next player told GRV-14.
    from bot.seed import initialise
    from bot.tools.grievance_store import LocalGrievanceStore

    storage = tmp_path / "var"
    store = await LocalGrievanceStore.open(storage / "grievances.db")
    try:
        filed = await store.register("424242424242424242", "billing", "charged twice for gems")
    finally:
        await store.aclose()
    lines = await initialise(make_settings(storage), speech=False)
    with contextlib.closing(sqlite3.connect(storage / "grievances.db")) as conn:
        keys = [k for (k,) in conn.execute("SELECT local_key FROM grievances ORDER BY id")]
    assert keys == [filed.key]
    assert any(line.startswith("grievances: kept in") for line in lines), lines
    assert any("players: 0 kept" in line for line in lines), lines


# `init` killed as it seeds the demo tickets into a new var/ (SIGKILL, a reboot).
KILLED_SEEDING_TICKETS = """
import os, signal, sys
from bot.cli import main
from bot.tools.grievance_store import LocalGrievanceStore
async def seed(self, rows):
    os.kill(os.getpid(), signal.SIGKILL)
LocalGrievanceStore.seed = seed
sys.exit(main(["init"]))
"""


def test_init_killed_before_the_demo_tickets_went_in_seeds_them_when_run_again(tmp_path: Path) -> None:
    # The demo players without their tickets: the README's "what happened to my refund ticket?"
    # would find none, and no later init brings them, the folder being no new one any more.
    import asyncio
    import signal

    from bot.seed import initialise

    storage = tmp_path / "var"
    env = {**os.environ, "VOXDESK_STORAGE_DIR": str(storage)}
    killed = subprocess.run([sys.executable, "-c", KILLED_SEEDING_TICKETS], cwd=REPO, env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    lines = asyncio.run(initialise(make_settings(storage), speech=False))
    assert any("12 demo players" in line for line in lines), lines
    with contextlib.closing(sqlite3.connect(storage / "grievances.db")) as conn:
        keys = [k for (k,) in conn.execute("SELECT local_key FROM grievances ORDER BY id")]
    assert keys == [g["key"] for g in json.loads(paths.GRIEVANCES.read_text())]


def test_init_seeds_demo_players_into_a_new_database_in_one_transaction(tmp_path: Path) -> None:
    from bot.seed import load_sql_script

    db = tmp_path / "players.db"
    broken = tmp_path / "broken.sql"
    broken.write_text((paths.SQL / "sqlite" / "seed.sql").read_text() + "INSERT INTO nowhere VALUES (1);\n")
    load_sql_script(db, paths.SQL / "sqlite" / "schema.sql")
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        load_sql_script(db, broken)
    with sqlite3.connect(db) as conn:  # all or nothing: no reader sees half a seed
        assert conn.execute("SELECT COUNT(*) FROM players").fetchone()[0] == 0
    assert db.stat().st_mode & 0o777 == 0o600


def test_ask_json_runs_one_full_turn(settings) -> None:
    note = paths.SAMPLES / "2-how-many-points.ogg"
    done = voxdesk(
        "ask", str(note), "--json", "--out", str(settings.storage_dir / "out"), storage=settings.storage_dir
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"user_text", "reply_text", "tool_calls", "reply_audio", "engine", "timings_ms"}
    assert result["engine"] == "offline"
    assert result["tool_calls"] == [{"name": "get_player_stats", "arguments": {}}]
    assert "Nova" in result["reply_text"]
    assert Path(result["reply_audio"]).read_bytes().startswith(b"OggS")
    assert result["timings_ms"]["decode"] > 0


def test_demo_answers_every_sample_with_the_right_tool(settings) -> None:
    done = voxdesk("demo", storage=settings.storage_dir)
    assert done.returncode == 0, done.stderr
    tools = [line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith("tool:")]
    assert tools == [
        "-",
        "get_player_stats",
        "search_manuals",
        "register_grievance",
        "get_grievance_status",
        "-",
    ]


SEARCH_PASSWORD = "search-proxy-pass-1234"
UNHANDLED = """
import sys
from bot import cli

def refused(args):
    settings = cli._settings(args)
    raise RuntimeError("refused https://gateway.example/v1?key=" + settings.secrets.openai_api_key)

cli.COMMANDS["check"] = (refused, *cli.COMMANDS["check"][1:])
sys.exit(cli.main(["check"]))
"""


@pytest.mark.parametrize("command", ["check", "index-manuals", "unhandled"])
def test_what_the_cli_prints_itself_is_masked_too(settings, command) -> None:
    # No log handler sees a command's own error line, `check`'s lines or Python's traceback of an
    # error nothing handles: a setting's address with its password, a library's echo of a key.
    env = {
        "VOXDESK_TOOLS_MANUALS": "azure",
        "VOXDESK_SEARCH_ENDPOINT": f"http://voxdesk:{SEARCH_PASSWORD}@search.example",
        "AZURE_SEARCH_API_KEY": "azure-search-key-5678",
        "OPENAI_API_KEY": "sk-live-0123456789abcdef",
        "DISCORD_TOKEN": "",
    }
    if command == "unhandled":
        done = subprocess.run(
            [sys.executable, "-c", UNHANDLED],
            cwd=REPO,
            env={**os.environ, "VOXDESK_STORAGE_DIR": str(settings.storage_dir), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 1
        assert "RuntimeError: refused https://gateway.example/v1?key=***" in done.stderr, done.stderr
    else:
        done = voxdesk(command, storage=settings.storage_dir, **env)
        assert done.returncode == 1
        said = done.stdout + done.stderr
        assert "search.endpoint 'http://voxdesk:***@search.example' must use https" in said
    for value in (SEARCH_PASSWORD, env["OPENAI_API_KEY"]):
        assert value not in done.stdout + done.stderr


def test_check_on_the_embedded_defaults_says_every_service_is_ok(settings) -> None:
    done = voxdesk("check", storage=settings.storage_dir, DISCORD_TOKEN="")
    assert done.returncode == 0, done.stdout + done.stderr
    where, *lines = done.stdout.splitlines()
    assert where == f"settings from {REPO / 'config.toml'}, data in {settings.storage_dir}"
    assert [line.split()[:2] for line in lines] == [
        ["ok", "storage"],
        ["ok", "engine"],
        ["ok", "stats"],
        ["ok", "manuals"],
        ["ok", "grievances"],
        ["ok", "discord"],
    ]
    assert "12 players" in done.stdout
    assert "DISCORD_TOKEN not set: `run` needs it, `ask`/`web` do not" in lines[-1]


def test_check_before_init_names_what_is_missing(tmp_path: Path) -> None:
    done = voxdesk("check", storage=tmp_path / "empty")
    assert done.returncode == 1
    assert done.stdout.startswith(f"settings from {REPO / 'config.toml'}, data in {tmp_path / 'empty'}\n")
    assert "FAIL  engine" in done.stdout and "python -m bot init" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_check_before_init_says_so_on_the_storage_line(tmp_path: Path) -> None:
    # The storage line comes first, in the order to mend them: before init (or with storage.dir
    # set to a folder that is not there) it says what to do, not the OS's bare "No such file".
    from bot.health import check_storage

    missing = tmp_path / "empty"
    with pytest.raises(Exception) as caught:
        check_storage(make_settings(missing))
    assert str(caught.value) == f"{missing} does not exist: run `python -m bot init` first"
    assert not missing.exists()  # check looks, and makes nothing


def test_check_elsewhere_says_it_runs_on_built_in_settings(tmp_path: Path) -> None:
    # A service started from / would run on built-in settings with its data in /var: say so.
    done = voxdesk("check", storage=tmp_path / "data", cwd=tmp_path, PYTHONPATH=str(REPO))
    where = f"built-in settings (no config.toml in {tmp_path}: --config or VOXDESK_CONFIG)"
    assert done.stdout.startswith(f"{where}, data in {tmp_path / 'data'}\n"), done.stdout + done.stderr


async def test_check_points_at_driver_when_the_odbc_driver_library_is_missing(settings) -> None:
    # unixODBC answers SQLSTATE 01000 "Can't open lib '...' : file not found", not IM002.
    from bot.app import build_stats_backend
    from bot.tools.odbc_stats import OdbcStatsError

    from .conftest import make_settings

    odbc = make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_STATS="odbc",
        VOXDESK_SQL_CONNECTION_STRING="Driver=/nonexistent/libvoxdesk-odbc.so;Database=x;PWD=hunter2",
    )
    stats = await build_stats_backend(odbc)
    try:
        with pytest.raises(OdbcStatsError) as caught:
            await stats.check()
    finally:
        await stats.aclose()  # type: ignore[attr-defined]
    detail = str(caught.value)
    assert detail.startswith("no such ODBC driver or data source: check Driver=")
    assert "Can't open lib '/nonexistent/libvoxdesk-odbc.so'" in detail and "hunter2" not in detail


@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
def test_run_and_check_refuse_an_aioodbc_unlike_0_5_in_one_line(tmp_path: Path) -> None:
    # The CLI runs in its own process, where no monkeypatch reaches: a sitecustomize on its
    # PYTHONPATH renames the pool method the login breaker gates, as an aioodbc release might.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import aioodbc\n"
        "aioodbc.Pool._fill_pool = aioodbc.Pool._fill_free_pool\n"
        "del aioodbc.Pool._fill_free_pool\n"
    )
    storage = tmp_path / "var"
    env = {
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
        "VOXDESK_TOOLS_STATS": "odbc",
        "VOXDESK_SQL_CONNECTION_STRING": f"Driver=SQLite3;Database={tmp_path / 'players.db'}",
        "DISCORD_TOKEN": "x.y.z",
        "VOXDESK_DISCORD_API_BASE": "http://127.0.0.1:9",
    }
    said = "player stats over ODBC need aioodbc 0.5: aioodbc "
    ran = voxdesk("run", storage=storage, **env)
    assert ran.returncode == 4, ran.stderr
    assert "Traceback" not in ran.stderr and "CRITICAL" not in ran.stderr
    line = ran.stderr.splitlines()[-1]
    assert line.startswith(said) and "_fill_free_pool" in line and line.endswith("install aioodbc>=0.5,<0.6")
    checked = voxdesk("check", storage=storage, **env)
    assert checked.returncode == 1
    assert "Traceback" not in checked.stderr
    stats = [row for row in checked.stdout.splitlines() if row.split()[1:3] == ["stats", "odbc"]]
    assert len(stats) == 1 and stats[0].startswith("FAIL") and said in stats[0], checked.stdout


async def test_check_says_what_run_needs_beyond_the_services(settings) -> None:
    from cryptography.fernet import Fernet

    from bot.health import check_all

    from .conftest import make_settings

    async def lines(**env: str) -> dict[str, str]:
        checked = await check_all(make_settings(settings.storage_dir, **env), for_run=True)
        return {r.service: r.line() for r in checked if r.service in ("discord", "web")}

    missing = await lines(DISCORD_TOKEN="")
    assert missing == {"discord": "FAIL  discord    token    DISCORD_TOKEN not set: `run` needs it"}
    web = await lines(
        DISCORD_TOKEN="x.y.z",
        VOXDESK_DISCORD_API_BASE="http://127.0.0.1:9",  # nothing listens: the token is not tried
        VOXDESK_WEB_ENABLED="true",
        VOXDESK_WEB_SESSION_KEY=Fernet.generate_key().decode(),
        VOXDESK_WEB_STAFF_PASSWORD_HASH="scrypt$16384$8$1$c2FsdA==",  # cut short in a copy and paste
    )
    assert web["discord"].startswith("warn  discord    token    DISCORD_TOKEN set, not tried")
    assert web["web"].startswith("FAIL  web        secrets  VOXDESK_WEB_STAFF_PASSWORD_HASH is not a hash")
    bad_key = await lines(VOXDESK_WEB_ENABLED="true", VOXDESK_WEB_SESSION_KEY="not-a-key")
    assert "VOXDESK_WEB_SESSION_KEY is not a Fernet key" in bad_key["web"]


async def test_check_tries_the_discord_token_as_run_would_log_in(settings) -> None:
    # A token reset in the developer portal, or one of another bot, passed `check` as "set", and
    # `run` then stopped on Discord's refusal: a deploy's `check --run` said nothing of it.
    from bot.health import check_all
    from tests.fakes.discord_server import BOT_USER_ID, TOKEN, serving

    async def line(token: str, api_base: str) -> str:
        env = {"DISCORD_TOKEN": token, "VOXDESK_DISCORD_API_BASE": api_base}
        checked = await check_all(make_settings(settings.storage_dir, **env), for_run=True)
        return next(r.line() for r in checked if r.service == "discord")

    reset = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.old-token-reset-in-the-portal-000000"
    async with serving() as fake:
        fake.expect_refusals()  # the reset token's 401, on purpose
        good = await line(TOKEN, fake.api_base)
        refused = await line(reset, fake.api_base)
    unreachable = await line(TOKEN, "http://127.0.0.1:9/api/v10")
    assert good == f"ok    discord    token    DISCORD_TOKEN accepted by Discord: bot voxdesk ({BOT_USER_ID})"
    assert refused == (
        "FAIL  discord    token    Discord refused DISCORD_TOKEN (401): copy the bot token again from"
        " the Bot page of the Discord developer portal (Reset Token)"
    )
    assert unreachable.startswith(
        "warn  discord    token    DISCORD_TOKEN set, not tried: Discord could not be reached (http://127.0.0.1:9"
    )
    assert TOKEN not in good + refused + unreachable and "old-token" not in refused


async def test_check_tries_the_discord_token_where_run_logs_in_with_no_api_base_set(
    settings, monkeypatch
) -> None:
    # With discord.api_base unset, as a deployment has it, `run` logs in at discord.py's own
    # address; `check` asked "/users/@me" with no host and said Discord could not be reached,
    # never trying the token. The library's address is pointed at the fake here.
    import cogs.bot
    from bot.health import check_all
    from tests.fakes.discord_server import BOT_USER_ID, TOKEN, serving

    async with serving() as fake:
        monkeypatch.setattr(cogs.bot, "_DEFAULT_API_BASE", fake.api_base)
        env = {"DISCORD_TOKEN": TOKEN, "VOXDESK_DISCORD_API_BASE": ""}
        checked = await check_all(make_settings(settings.storage_dir, **env), for_run=True)
    line = next(r.line() for r in checked if r.service == "discord")
    assert line == f"ok    discord    token    DISCORD_TOKEN accepted by Discord: bot voxdesk ({BOT_USER_ID})"


def test_check_says_how_many_grievance_lines_were_set_aside(settings) -> None:
    # Each is the last copy of a grievance nobody filed; the ERROR line logged when it was set
    # aside may be rotated away by the time anyone looks.
    from bot.health import check_storage

    assert check_storage(settings).endswith("none written by a newer voxdesk")
    rejected = settings.storage_dir / "grievances.db.spool.jsonl.rejected"
    rejected.write_text(
        '{"id": "a1", "user_id": "111111111111111111", "category": "wal\n{"id": "b2", "user\n'
    )
    assert check_storage(settings).endswith(
        f"; 2 grievance line(s) cut short or of a newer voxdesk set aside in {rejected}: file them by hand"
    )


def test_check_names_the_databases_other_users_can_read(settings) -> None:
    # A storage folder made before voxdesk made its own owner-only: an upgrade keeps its modes.
    from bot.health import check_storage

    storage = settings.storage_dir
    assert "other users" not in check_storage(settings)
    (storage / "grievances.db").chmod(0o644)
    assert "other users" not in check_storage(settings)  # the folder lets no one else in
    storage.chmod(0o755)
    assert check_storage(settings).endswith(
        f"; other users of this machine can read grievances.db: chmod 700 {storage}"
    )


@pytest.fixture
def open_folder() -> typing.Iterator[Path]:
    """A 0755 folder every user can reach: pytest's own base folder is 0700, which keeps a file
    under tmp_path from other users whatever its modes."""
    folder = Path(tempfile.mkdtemp(prefix="voxdesk-open-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
def test_check_warns_of_a_dotenv_file_other_users_can_read(settings, open_folder: Path) -> None:
    # .env holds every key and token; voxdesk reads it from the working directory, where a
    # checkout's or an editor's umask leaves it 0644 for every login on the machine.
    secret = "sk-SECRET-dotenv-123456"
    dotenv = open_folder / "service" / ".env"
    dotenv.parent.mkdir()
    dotenv.write_text(f"JIRA_API_TOKEN={secret}\n")
    dotenv.parent.chmod(0o755)
    dotenv.chmod(0o644)
    storage = settings.storage_dir
    done = voxdesk("check", storage=storage, cwd=dotenv.parent, PYTHONPATH=str(REPO), JIRA_API_TOKEN="")
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    (line,) = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["secrets"]]
    assert line.split()[:3] == ["warn", "secrets", ".env"]
    assert f"other users of this machine can read {dotenv}: chmod 600 {dotenv}" in line
    assert secret not in said
    dotenv.chmod(0o600)
    done = voxdesk("check", storage=storage, cwd=dotenv.parent, PYTHONPATH=str(REPO), JIRA_API_TOKEN="")
    (line,) = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["secrets"]]
    assert line.split()[:3] == ["ok", "secrets", ".env"] and f"{dotenv} readable by its owner alone" in line


def _without_root_override() -> list[str]:
    """What runs a command with file modes applied to it: root reads and writes any file."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root, and no setpriv to drop the override of file modes")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


CHECK_STORAGE = """
import sys
from bot.config import load_settings
from bot.health import check_storage
print(check_storage(load_settings("config.toml", environ={"VOXDESK_STORAGE_DIR": sys.argv[1]})))
"""


def _check_storage_unprivileged(storage) -> subprocess.CompletedProcess[str]:
    """`check`'s storage line as a user root's override of file modes does not reach."""
    return subprocess.run(
        [*_without_root_override(), sys.executable, "-c", CHECK_STORAGE, str(storage)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("locked", ["grievances.db", "folder"])
def test_check_fails_a_storage_folder_the_bot_cannot_write(settings, locked) -> None:
    # `check` opens the stores read-only: a grievances.db left owned by another user (an `init`
    # run as root) or a folder made read-only passed, and the bot then stopped at `run`, or
    # kept no complaint.
    storage = settings.storage_dir
    target = storage if locked == "folder" else storage / "grievances.db"
    target.chmod(0o500 if locked == "folder" else 0o400)
    try:
        done = _check_storage_unprivileged(storage)
    finally:
        target.chmod(0o700 if locked == "folder" else 0o600)
    assert done.returncode == 1, done.stdout
    assert f"voxdesk cannot write {target}" in done.stderr, done.stderr


def _on_a_read_only_mount(storage: Path, mount: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """`command` run with `storage` bind-mounted read-only at `mount`, in a mount namespace of
    its own (a user namespace lets one be made without root); skipped where none can be."""
    mount.mkdir()
    remount = 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'
    unshare = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", remount, "sh"]
    probe = [*unshare, str(storage), str(mount), "true"]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True, timeout=60).returncode:
        pytest.skip("no mount namespace to mount the storage folder read-only in")
    return subprocess.run(
        [*unshare, str(storage), str(mount), *command],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(mount)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_storage_folder_on_a_read_only_mount_is_said_to_be_one(settings, tmp_path: Path) -> None:
    # A container's volume mounted read-only: `check` told to give the folder to the bot's user,
    # which owns it already, and `ask` or `run` stopped on SQLite's "unable to open database file".
    mount = tmp_path / "mounted"
    checked = _on_a_read_only_mount(
        settings.storage_dir, mount, sys.executable, "-c", CHECK_STORAGE, str(mount)
    )
    assert checked.returncode == 1, checked.stdout
    assert f"voxdesk cannot write {mount}: its file system is mounted read-only" in checked.stderr
    assert "bot's user's" not in checked.stderr
    note = str(paths.SAMPLES / "1-hello.ogg")
    asked = _on_a_read_only_mount(
        settings.storage_dir, tmp_path / "again", sys.executable, "-m", "bot", "ask", note
    )
    assert asked.returncode == 4, asked.stdout
    assert asked.stderr.strip().endswith("(its file system is mounted read-only)"), asked.stderr


def test_a_storage_folder_another_user_owns_is_named_with_its_owner(settings) -> None:
    # `init` as root (or a person), `ask` or `run` as the service's user: "var/players.db:
    # Permission denied" named a file the user could not even look at, and not why.
    if os.geteuid() != 0:
        pytest.skip("giving the folder to another user needs root")
    storage = settings.storage_dir
    os.chown(storage, 65534, -1)
    try:
        done = subprocess.run(
            [
                *_without_root_override(),
                sys.executable,
                "-m",
                "bot",
                "player",
                "export",
                "111111111111111111",
            ],
            cwd=REPO,
            env={**os.environ, "VOXDESK_STORAGE_DIR": str(storage)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.chown(storage, 0, -1)
    assert done.returncode == 4
    owner = pwd.getpwuid(65534).pw_name
    assert done.stderr.endswith(
        f": Permission denied ({storage} is owned by {owner}, and voxdesk runs as root)\n"
    )


@pytest.mark.parametrize(
    ("name", "consequence"),
    [
        ("notes.db.holds", "`run` would answer twice a note"),
        ("web.serving", "`web` would not share its port"),
    ],
)
@pytest.mark.parametrize(("mode", "way"), [(0o400, "write"), (0o200, "read"), (0o000, "read or write")])
def test_check_warns_of_a_lock_file_the_bot_cannot_write(settings, name, consequence, mode, way) -> None:
    # `run` and `web` make these only to lock them, after `check` passed: one left owned by
    # another user (a `run` as root) was a WARNING in the log, and a note answered twice later.
    # They open it to read and write: the line says which of the two is refused.
    storage = settings.storage_dir
    target = storage / name
    target.touch()
    target.chmod(mode)
    done = _check_storage_unprivileged(storage)
    assert done.returncode == 0, done.stderr
    assert f"; voxdesk cannot {way} {target}: {consequence}" in done.stdout, done.stdout


def test_check_finds_the_storage_folder_takes_locks_without_making_a_file_there(settings) -> None:
    from bot.health import cannot_lock

    before = _files(settings.storage_dir)
    assert cannot_lock(settings.storage_dir) == ""
    assert _files(settings.storage_dir) == before


@pytest.mark.parametrize("locks", [True, False])
def test_check_tests_locks_where_the_file_system_has_no_unnamed_files(settings, monkeypatch, locks) -> None:
    # NFS and CIFS refuse O_TMPFILE, and are where locks are likeliest missing: the test of
    # locks passed there untried. Where locks work, "" alone cannot tell a lock taken from none
    # tried: the refusal and the lock taken on the named stand-in are what show it.
    import errno
    import fcntl

    from bot.health import cannot_lock

    opened, lock = os.open, fcntl.fcntl
    refused: list[object] = []
    locked: list[int] = []

    def no_unnamed_files(path, flags, *args):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            refused.append(path)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return opened(path, flags, *args)

    def maybe_locks(fd, cmd, *args):
        if cmd == fcntl.F_OFD_SETLK:
            if not locks:
                raise OSError(errno.ENOLCK, "No locks available")
            locked.append(fd)
        return lock(fd, cmd, *args)

    monkeypatch.setattr(os, "open", no_unnamed_files)
    monkeypatch.setattr(fcntl, "fcntl", maybe_locks)
    before = _files(settings.storage_dir)
    said = cannot_lock(settings.storage_dir)
    assert _files(settings.storage_dir) == before
    assert refused == [settings.storage_dir]
    if locks:
        assert said == ""
        assert len(locked) == 1, "no lock was tried on the named stand-in for the unnamed file"
    else:
        assert said.startswith(f"the file system of {settings.storage_dir} takes no file locks (No locks")


def test_checking_the_databases_versions_leaves_the_storage_folder_as_it_was(settings) -> None:
    # A read-only connection to a WAL database left an empty -wal and a -shm beside each, in a
    # folder just restored from a backup with none.
    from bot.health import check_storage

    before = _files(settings.storage_dir)
    # players, manuals, grievances and the grievance store's grievances-recent.db
    assert check_storage(settings) == "4 databases, none written by a newer voxdesk"
    assert _files(settings.storage_dir) == before


async def test_check_leaves_a_wal_mode_players_db_with_no_log_beside_it(settings) -> None:
    # The bot's stats store puts players.db in WAL mode; stopped cleanly, it leaves no -wal. The
    # stats backend's look for its players table must not leave one (and a -shm) there.
    players = settings.storage_dir / "players.db"
    with contextlib.closing(sqlite3.connect(players)) as db:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    before = _files(settings.storage_dir)
    results = {r.service: r for r in await health.check_all(settings)}
    assert results["stats"].ok, results["stats"].detail
    assert _files(settings.storage_dir) == before


@pytest.mark.parametrize("found", ["no storage folder", "no file", "a file of no bytes"])
async def test_check_says_a_missing_grievance_database_is_missing_not_empty(tmp_path: Path, found) -> None:
    # "0 grievances" read as a store nobody had complained to: with storage.dir set wrong, or the
    # database lost, the first grievance `run` files starts it anew.
    storage = tmp_path / "var"
    grievances = storage / "grievances.db"
    if found != "no storage folder":
        storage.mkdir()
    if found == "a file of no bytes":
        grievances.touch()
    before = _files(tmp_path)
    line = {r.service: r for r in await health.check_all(make_settings(storage))}["grievances"]
    assert "0 grievances" not in line.detail
    if found == "no storage folder":
        assert line.line() == (
            f"FAIL  grievances local    {grievances} does not exist: run `python -m bot init` first"
        )
    else:
        why = "is a file of no bytes" if found == "a file of no bytes" else "does not exist"
        assert line.line() == (
            f"warn  grievances local    local grievance store: {grievances} {why}; `run` makes it"
            " anew, empty: restore it from a backup first if grievances were kept there"
        )
    assert _files(tmp_path) == before and storage.exists() == (found != "no storage folder")
    store = await grievance_store.LocalGrievanceStore.open(grievances)  # as `run` makes it
    await store.aclose()
    line = {r.service: r for r in await health.check_all(make_settings(storage))}["grievances"]
    assert line.line() == "ok    grievances local    local grievance store: 0 grievances"


async def test_checks_storage_line_counts_one_database_in_the_singular(tmp_path: Path) -> None:
    from bot.health import check_storage
    from bot.preferences import PreferenceStore

    from .conftest import make_settings

    settings = make_settings(tmp_path / "var")
    await (await PreferenceStore.open(settings.storage_dir / "preferences.db")).aclose()
    assert check_storage(settings) == "1 database, none written by a newer voxdesk"
    # The grievance store keeps its recent claims in a file of its own: two more.
    store = await grievance_store.LocalGrievanceStore.open(settings.storage_dir / "grievances.db")
    await store.aclose()
    assert check_storage(settings) == "3 databases, none written by a newer voxdesk"


@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
def test_check_warns_of_what_needs_a_person_and_still_exits_0(settings) -> None:
    # A deploy script or an ExecStartPre stops on exit 1: the bot runs fine with these, so they
    # must stand out without failing it.
    storage = settings.storage_dir
    (storage / "grievances.db.spool.jsonl.rejected").write_text('{"id": "a1", "user\n')
    (storage / "speech" / "domain.built.json").unlink(missing_ok=True)  # as an older voxdesk left it
    done = voxdesk("check", storage=storage, DISCORD_TOKEN="")
    assert done.returncode == 0, done.stdout + done.stderr
    marks = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()[1:]}
    assert marks == {s: "ok" for s in ("stats", "manuals", "grievances", "discord")} | {
        "engine": "warn",
        "storage": "warn",
    }
    assert (
        "warn  storage    sqlite   4 databases, none written by a newer voxdesk; 1 grievance" in done.stdout
    )
    assert (
        f"; the speech model in {storage / 'speech'} was built from other manuals or by an older"
        in done.stdout
    )
    failed = voxdesk("check", "--run", storage=storage, DISCORD_TOKEN="")  # a FAIL among them fails
    assert failed.returncode == 1 and "FAIL  discord" in failed.stdout and "warn  storage" in failed.stdout


def test_check_says_when_the_speech_model_init_built_is_stale(settings, tmp_path: Path) -> None:
    # pocketsphinx hears with the model until `init` builds it again: after an upgrade, or new
    # manuals, it goes on expecting the old questions.
    from bot.engines.offline.engine import stale_speech_models

    from .conftest import make_settings

    manuals = tmp_path / "manuals"
    shutil.copytree(paths.MANUALS, manuals)
    copied = make_settings(settings.storage_dir, VOXDESK_STORAGE_MANUALS_DIR=str(manuals))
    assert stale_speech_models(settings) == stale_speech_models(copied) == ""  # as init built it
    first = sorted(manuals.glob("*.md"))[0]
    first.write_text(first.read_text() + "\nRespawn timers reset when the map changes.\n")
    stale = f"the speech model in {settings.storage_dir / 'speech'} was built from other manuals or by"
    assert stale_speech_models(copied).startswith(stale)
    (settings.storage_dir / "speech" / "domain.built.json").unlink()
    assert stale_speech_models(settings).endswith(
        "an older voxdesk: run `voxdesk init`, then restart the bot"
    )


def test_help_says_where_the_settings_come_from_in_the_order_they_are_read() -> None:
    # An installed voxdesk run by a service manager reads config.toml from wherever it was started.
    from bot.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "default: VOXDESK_CONFIG, else config.toml in the working directory" in text


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_check_says_chown_for_a_dotenv_file_another_user_owns(open_folder: Path) -> None:
    # root:voxdesk 0640 is how a service user is often let read its secrets: the bot reads .env
    # through its group, so "chmod 600" alone would take .env from the bot at the next start.
    dotenv = open_folder / ".env"
    dotenv.write_text("JIRA_API_TOKEN=sk-SECRET-dotenv-123456\n")
    dotenv.chmod(0o640)
    os.chown(dotenv, 65534, 65534)
    said = health.check_dotenv(dotenv)
    assert isinstance(said, health.NeedsHuman)
    assert f"chown USER {dotenv} && chmod 600 {dotenv}, USER being the one voxdesk runs as" in said
    assert "uid 65534" in said


def test_check_finds_a_dotenv_file_in_a_closed_folder_readable_by_its_owner_alone(tmp_path: Path) -> None:
    # A 0644 .env under a 0700 home (or a 0700 pytest folder) is out of other users' reach: no
    # folder on the way lets them through, so there is nothing to chmod.
    home = tmp_path / "home"
    service = home / "voxdesk"
    service.mkdir(parents=True)
    home.chmod(0o700)
    service.chmod(0o755)
    dotenv = service / ".env"
    dotenv.write_text("JIRA_API_TOKEN=sk-SECRET-dotenv-123456\n")
    dotenv.chmod(0o644)
    said = health.check_dotenv(dotenv)
    assert not isinstance(said, health.NeedsHuman), said
    assert said == f"{dotenv} readable by its owner alone"


def _break_recent_claims(recent: Path, broken: str) -> None:
    for log_file in (f"{recent}-wal", f"{recent}-shm"):
        Path(log_file).unlink(missing_ok=True)
    if broken == "not a database":
        recent.write_bytes(b"not sqlite " * 500)
    elif broken == "torn":
        recent.write_bytes(recent.read_bytes()[:1000])
    else:
        with contextlib.closing(sqlite3.connect(recent)) as db:
            db.execute("PRAGMA user_version = 9")


def on_jira(settings: Settings) -> Settings:
    """`settings`' storage, its grievances going to Jira: grievances.db is Jira's outbox."""
    return make_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_GRIEVANCES="jira",
        VOXDESK_JIRA_URL="https://studio.atlassian.net",
        JIRA_EMAIL="bot@studio.example",
        JIRA_API_TOKEN="jira-token-value",
    )


def test_check_warns_of_a_grievance_store_of_no_bytes_before_the_bot_makes_it_new(settings) -> None:
    # SQLite takes it for a new database and so does the bot, saying so in its log only once it
    # has made it one: `check` before a start is where a truncated copy or restore can be caught.
    # As Jira's outbox it has no line of its own; as the local store, that store's line says it
    # (test_check_says_a_missing_grievance_database_is_missing_not_empty), not this one too.
    grievances = settings.storage_dir / "grievances.db"
    for log_file in (f"{grievances}-wal", f"{grievances}-shm"):
        Path(log_file).unlink(missing_ok=True)
    grievances.write_bytes(b"")
    local = health.check_storage(settings)
    assert "empty file" not in str(local), local
    said = health.check_storage(on_jira(settings))
    assert isinstance(said, health.NeedsHuman), said
    assert f"{grievances} is an empty file" in said and "voxdesk backup" in said, said
    assert grievances.read_bytes() == b""


def test_check_warns_of_a_missing_jira_outbox_on_the_storage_line(settings) -> None:
    # Jira's own line says "no outbox" only where Jira answers: the storage line says what to do
    # before a start, as it does for an outbox of no bytes, with Jira down too.
    grievances = settings.storage_dir / "grievances.db"
    for file in (grievances, Path(f"{grievances}-wal"), Path(f"{grievances}-shm")):
        file.unlink(missing_ok=True)
    assert "grievances.db" not in str(health.check_storage(settings))  # the local store's line says it
    said = health.check_storage(on_jira(settings))
    assert isinstance(said, health.NeedsHuman), said
    assert (
        f"; {grievances}, the outbox of grievances on their way to Jira, does not exist: the bot"
        " makes it anew, empty; if it held grievances, restore it from a `voxdesk backup` before"
        " starting the bot"
    ) in said, said
    assert not grievances.exists()


@pytest.mark.parametrize("broken", ["not a database", "torn", "newer schema"])
@pytest.mark.timeout(180)  # real processes start one after another (imports, speech workers)
async def test_check_warns_of_a_recent_claims_file_the_bot_runs_without(settings, broken: str) -> None:
    # The store keeps /grievance file's claims in memory then: the bot runs on, and a deploy script
    # stopping on check's exit 1 would keep it down for a file that only tells a repeat its ticket.
    from bot.app import storage_paths

    recent = storage_paths(settings).recent_claims
    await (await grievance_store.LocalGrievanceStore.open(settings.storage_dir / "grievances.db")).aclose()
    _break_recent_claims(recent, broken)
    kept = recent.read_bytes()
    done = voxdesk("check", storage=settings.storage_dir, DISCORD_TOKEN="")
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.split()[1:2] == ["storage"]]
    assert line.startswith("warn  storage    sqlite   "), line
    assert f"{recent}" in line and "may be filed twice" in line, line
    sample = str(paths.SAMPLES / "2-how-many-points.ogg")
    asked = voxdesk("ask", sample, storage=settings.storage_dir)
    assert asked.returncode == 0, asked.stderr
    assert recent.read_bytes() == kept


async def test_a_damaged_recent_claims_file_is_not_said_to_be_restored_from_a_backup(settings) -> None:
    # No backup holds grievances-recent.db (`backup` says "not copied"), yet a damaged one was
    # said, by `check` and in the bot's log, with "restore it from a `voxdesk backup`": advice
    # nobody could follow, where moving the file aside is all it takes.
    import aiosqlite

    from bot.app import storage_paths

    recent = storage_paths(settings).recent_claims
    await (await grievance_store.LocalGrievanceStore.open(settings.storage_dir / "grievances.db")).aclose()
    _break_recent_claims(recent, "not a database")
    said = grievance_store.recent_unusable(recent)
    assert said is not None and said.startswith(f"{recent}: file is not a database"), said
    assert "voxdesk backup" not in said and "makes it anew" in said, said
    async with aiosqlite.connect(":memory:") as conn:
        with pytest.raises(sqlite3.Error) as opening:
            await grievance_store._attach_recent(conn, recent)
    assert "voxdesk backup" not in str(opening.value) and "makes it anew" in str(opening.value)


def test_checks_lines_name_the_other_user_who_owns_a_folder_they_cannot_open(settings) -> None:
    # `init` as root, `check` as the service's user: each line said "[Errno 13] Permission
    # denied: 'var/players.db'", Python's words, naming neither the owner nor who voxdesk runs as.
    if os.geteuid() != 0:
        pytest.skip("giving the folder to another user needs root")
    storage = settings.storage_dir
    os.chown(storage, 65534, -1)
    try:
        done = subprocess.run(
            [*_without_root_override(), sys.executable, "-m", "bot", "check"],
            cwd=REPO,
            env={**os.environ, "VOXDESK_STORAGE_DIR": str(storage)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.chown(storage, 0, -1)
    owner = pwd.getpwuid(65534).pw_name
    why = f"Permission denied ({storage} is owned by {owner}, and voxdesk runs as root)"
    (line,) = [line for line in done.stdout.splitlines() if " storage " in line]
    assert line.startswith("FAIL") and line.endswith(f"{storage}/players.db: {why}"), done.stdout
    assert "[Errno" not in done.stdout


NAMING = """
import sqlite3, sys
from bot.db import naming
try:
    sqlite3.connect(sys.argv[1]).execute("SELECT 1")
except sqlite3.Error as exc:
    print(naming(sys.argv[1], exc))
"""


def test_a_database_in_a_folder_closed_to_voxdesk_is_named_with_the_folders_owner(tmp_path: Path) -> None:
    # Whether the database is a folder is asked first, and a folder voxdesk may not enter refuses
    # that question too (Permission denied): the error naming the database raised it instead.
    if os.geteuid() != 0:
        pytest.skip("giving the folder to another user needs root")
    closed = tmp_path / "storage"
    closed.mkdir(mode=0o700)
    os.chown(closed, 65534, -1)
    try:
        done = subprocess.run(
            [*_without_root_override(), sys.executable, "-c", NAMING, str(closed / "notes.db")],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.chown(closed, 0, -1)
    owner = pwd.getpwuid(65534).pw_name
    assert done.stderr == ""
    assert done.stdout == (
        f"{closed}/notes.db: unable to open database file"
        f" ({closed} is owned by {owner}, and voxdesk runs as root)\n"
    )


def test_a_database_another_user_owns_and_sqlite_refuses_is_named_with_its_owner(settings) -> None:
    # Files another user owns that this one may read but not write (`init` as root, umask 022;
    # `ask` or `run` as the service's user): SQLite's "attempt to write a readonly database" was
    # all it said, where a folder it could not open at all was named with its owner.
    if os.geteuid() != 0:
        pytest.skip("giving the files to another user needs root")
    storage = settings.storage_dir
    files = [storage, *storage.glob("*.db")]
    for path in files:
        os.chown(path, 65534, -1)
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        done = subprocess.run(
            [*_without_root_override(), sys.executable, "-m", "bot", "player", "forget", NOVA],
            cwd=REPO,
            env={**os.environ, "VOXDESK_STORAGE_DIR": str(storage)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for path in files:
            os.chown(path, 0, -1)
            path.chmod(0o700 if path.is_dir() else 0o600)
    owner = pwd.getpwuid(65534).pw_name
    refused = storage / "grievances-recent.db"
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr == (
        f"a database under the storage folder cannot be used: {refused}: attempt to write a readonly"
        f" database ({refused} is owned by {owner}, and voxdesk runs as root)\n"
    )


def test_a_database_another_user_owns_and_sqlite_cannot_open_is_named_with_its_owner(settings) -> None:
    # Another user's database this one may not even read (their umask 077): SQLite's "unable to
    # open database file" names no cause either.
    if os.geteuid() != 0:
        pytest.skip("giving the files to another user needs root")
    refused = settings.storage_dir / "grievances-recent.db"
    os.chown(refused, 65534, -1)
    try:
        done = voxdesk("player", "forget", NOVA, storage=settings.storage_dir, timeout=120, unprivileged=True)
    finally:
        os.chown(refused, 0, -1)
    owner = pwd.getpwuid(65534).pw_name
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr == (
        f"a database under the storage folder cannot be used: {refused}: unable to open database"
        f" file ({refused} is owned by {owner}, and voxdesk runs as root)\n"
    )


def test_check_warns_of_a_storage_folder_on_a_nearly_full_disk(settings, monkeypatch) -> None:
    # A full disk is how grievances end up held in memory alone: `check` said nothing of it.
    real = shutil.disk_usage
    free = {"bytes": 10 * 2**20}

    def usage(path):
        total, used, _ = real(path)
        return type(real(path))(total, used, free["bytes"])

    monkeypatch.setattr(shutil, "disk_usage", usage)
    said = health.check_storage(settings)
    assert isinstance(said, health.NeedsHuman), said
    assert f"only 10 MB free on the disk of {settings.storage_dir}" in said
    free["bytes"] = 10 * 2**30
    assert "free on the disk" not in health.check_storage(settings)


async def test_run_in_2500_servers_without_shards_says_so_in_one_line_and_exits_7(settings) -> None:
    """Discord closes an IDENTIFY without shards from a bot in 2,500 servers with 4011: `run`
    ended on "an error it does not handle", a ConnectionClosed traceback and status 1."""
    import asyncio

    from tests.fakes.discord_server import TOKEN, serving

    async with serving() as fake:
        fake.identify_refused_with = 4011
        env = {**os.environ, **fake.settings_env(), "DISCORD_TOKEN": TOKEN, "VOXDESK_OFFLINE_WORKERS": "1"}
        env["VOXDESK_STORAGE_DIR"] = str(settings.storage_dir)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=env, cwd=REPO, stderr=subprocess.PIPE
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
    said = err.decode()
    assert process.returncode == 7, said
    assert "Traceback" not in said and "does not handle" not in said, said
    (line,) = [line for line in said.splitlines() if "4011" in line]
    assert "sharding required" in line and "2,500 servers" in line, said


async def test_run_whose_first_gateway_connection_is_refused_says_so_and_exits_5(settings) -> None:
    """Logged in over REST, the gateway's edge refusing the websocket (a Discord incident, a
    firewall): one line and status 5, as for any Discord that cannot be reached, not discord.py's
    own AttributeError and status 1."""
    import asyncio

    from tests.fakes.discord_server import TOKEN, serving

    async with serving() as fake:
        fake.refuse_gateway()
        env = {**os.environ, **fake.settings_env(), "DISCORD_TOKEN": TOKEN, "VOXDESK_OFFLINE_WORKERS": "1"}
        env["VOXDESK_STORAGE_DIR"] = str(settings.storage_dir)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=env, cwd=REPO, stderr=subprocess.PIPE
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
    said = err.decode()
    assert process.returncode == 5, said
    assert "AttributeError" not in said, said
    assert "could not connect to Discord's gateway" in said and "503" in said, said


def _processes_in_session(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def test_a_command_run_in_another_programs_process_leaves_its_sigterm_handler(capsys) -> None:
    # main() takes SIGTERM as Ctrl-C while a command runs; called in a test's process (or any
    # program's), it puts back the handler it found.
    from bot.cli import main

    def theirs(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGTERM, theirs)
    try:
        assert main(["eval", "--as-text", "--recognizer", "whisper", "--split", "nvdev"]) == 2
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_command_run_in_another_programs_thread_runs_without_a_sigterm_handler() -> None:
    # Only the main thread may set a signal handler: main() called in another thread (a test
    # runner's, a program's worker) would fail on it before running the command.
    from bot.cli import main

    done: list[int] = []
    worker = threading.Thread(
        target=lambda: done.append(main(["eval", "--as-text", "--recognizer", "whisper", "--split", "nvdev"]))
    )
    worker.start()
    worker.join()
    assert done == [2]


def test_sigterm_stops_a_command_with_its_speech_workers(settings) -> None:
    # The workers ignore SIGTERM; a command killed by it (`timeout`, `kill`) left them running.
    note = paths.SAMPLES / "4-charged-twice.ogg"
    done = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--samples", str(note.parent)],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(settings.storage_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for _ in range(1200):  # until a worker is up
            if len(_children(done.pid)) >= 2:  # the resource tracker and a worker at least
                break
            subprocess.run(["sleep", "0.1"], check=True)
        done.send_signal(signal.SIGTERM)
        _, stderr = done.communicate(timeout=45)  # to the end: no worker holds its pipes
        assert done.returncode == 143, stderr
        assert "Traceback" not in stderr
        for _ in range(300):
            if not _processes_in_session(done.pid):
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert _processes_in_session(done.pid) == []
    finally:
        for pid in _processes_in_session(done.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_sigterm_stops_a_command_run_with_ctrl_c_ignored(tmp_path) -> None:
    # A script's background job runs with SIGINT ignored: there SIGTERM, taken as Ctrl-C, is
    # Ctrl-C itself rather than nothing. refile reading a terminal waits until it is stopped.
    import pty

    (tmp_path / "grievances.db").touch()  # the bot's storage folder: refile goes on to read
    terminal, its_end = pty.openpty()
    with subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec "$0" -m bot refile', sys.executable],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(tmp_path)},
        stdin=its_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as refile:
        os.close(its_end)
        said = ""
        while "refile: reading stdin" not in said:  # SIGTERM is taken as Ctrl-C from here on
            line = refile.stderr.readline()
            assert line, said
            said += line
        refile.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            refile.wait(timeout=30)
        if refile.returncode is None:  # SIGTERM did nothing: end what it reads, for the test to end
            os.write(terminal, b"\x04")
        _, rest = refile.communicate(timeout=60)
    os.close(terminal)
    assert refile.returncode == 143, said + rest
    assert "Traceback" not in said + rest


@pytest.mark.parametrize("buffered", ["", "1"])
@pytest.mark.parametrize("command", [["init"], ["player", "export", "111111111111111111"]])
def test_output_whose_reader_went_away_ends_quietly(settings, command, buffered) -> None:
    # `voxdesk ... | head`: a "Broken pipe" line and status 4, or Python's own message and 120.
    done = subprocess.Popen(
        [sys.executable, "-m", "bot", *command],
        cwd=REPO,
        env={**os.environ, "VOXDESK_STORAGE_DIR": str(settings.storage_dir), "PYTHONUNBUFFERED": buffered},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done.stdout.close()
    stderr = done.stderr.read()
    assert (done.wait(timeout=120), stderr) == (141, "")


@pytest.mark.parametrize("inside", [".", "backups"])
def test_backup_refuses_a_folder_inside_the_storage_folder(settings, inside) -> None:
    storage = settings.storage_dir
    before = sorted(p.name for p in storage.iterdir())
    done = voxdesk("backup", str(storage / inside), storage=storage)
    assert done.returncode == 2, done.stderr
    assert "inside the storage folder" in done.stderr
    assert sorted(p.name for p in storage.iterdir()) == before


# Ctrl-C as `bot.cli` is imported (its first second, loading numpy and the speech code): a real
# SIGINT, sent as the import reaches bot.app, then the command started as pip's bin/voxdesk
# starts it from pyproject.toml's entry point, or as `python -m bot`. Sent to the main thread: sent
# to the process, the kernel may hand it to a math library's thread, and the main thread then
# sees it only at some later point, on a loaded machine after the import (and --help) is done.
INTERRUPTED_WHILE_IMPORTING = """
import importlib.abc, runpy, signal, sys, threading, tomllib

# As a terminal's command has it: the test process's SIGINT may be ignored or blocked when this
# starts (both are inherited), and Ctrl-C would then never reach the import.
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "bot.app":
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
how, sys.argv = sys.argv[1], ["voxdesk", "--help"]
if how == "-m":
    runpy.run_module("bot", run_name="__main__", alter_sys=True)
else:
    with open("pyproject.toml", "rb") as f:
        module, _, function = tomllib.load(f)["project"]["scripts"]["voxdesk"].partition(":")
    exec(f"import sys\\nfrom {module} import {function}\\nsys.exit({function}())")
"""


@pytest.mark.parametrize("how", ["console-script", "-m"])
def test_ctrl_c_while_the_cli_is_imported_exits_130_quietly(how: str) -> None:
    # A traceback of importlib's frames and an exit by SIGINT, where any later Ctrl-C is status 130.
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_IMPORTING, how],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr, done.stdout) == (130, "", "")


def test_check_prints_a_storage_folder_its_output_cannot_encode(seeded_storage: Path, tmp_path: Path) -> None:
    # A service's journal or a cron mail read in ASCII: the first line, the folder's name, was a
    # UnicodeEncodeError and "an error it does not handle".
    storage = tmp_path / "vär"
    shutil.copytree(seeded_storage, storage)
    done = voxdesk("check", storage=storage, DISCORD_TOKEN="", PYTHONIOENCODING="ascii")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].endswith(f"data in {tmp_path}/v\\xe4r")


NOT_UTF8 = os.fsdecode(b"n\xc3\xb6te-\xff")  # "nöte-" and a byte no UTF-8 name holds


@pytest.mark.parametrize(("encoding", "as_json"), [("ascii", False), ("utf-8", True)])
def test_ask_prints_names_its_output_cannot_encode_after_the_turn(
    settings, tmp_path: Path, encoding: str, as_json: bool
) -> None:
    # The reply was made (and a complaint perhaps filed), then printing its file's name failed.
    note = tmp_path / f"{NOT_UTF8}.ogg"
    shutil.copy(paths.SAMPLES / "2-how-many-points.ogg", note)
    out = tmp_path / "réponses"
    args = ["--json"] if as_json else []
    done = voxdesk(
        "ask", str(note), "--out", str(out), *args, storage=settings.storage_dir, PYTHONIOENCODING=encoding
    )
    assert done.returncode == 0, done.stderr
    reply = out / f"{NOT_UTF8}-reply.ogg"
    assert reply.read_bytes().startswith(b"OggS")
    if as_json:  # the name escaped as JSON reads it back: the reply's own file
        assert json.loads(done.stdout)["reply_audio"] == str(reply)
    else:
        assert f"audio:  {str(reply).encode('ascii', 'backslashreplace').decode()}\n" in done.stdout


def _grievances(storage: Path) -> int:
    with contextlib.closing(sqlite3.connect(storage / "grievances.db")) as db:
        return db.execute("SELECT COUNT(*) FROM grievances").fetchone()[0]


@pytest.mark.parametrize("out", ["a file", "inside a file"])
def test_ask_refuses_an_out_it_cannot_write_the_reply_into_before_the_turn(settings, tmp_path, out) -> None:
    # Found after the turn, the complaint was filed already, and the note asked again (with a
    # better --out) filed it a second time.
    note = paths.SAMPLES / "4-charged-twice.ogg"
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    folder = {"a file": taken, "inside a file": taken / "replies"}[out]
    before = _grievances(settings.storage_dir)
    done = voxdesk("ask", str(note), "--out", str(folder), storage=settings.storage_dir, timeout=120)
    assert _grievances(settings.storage_dir) == before, done.stderr
    # A file given as --out is a wrong argument; a file where its parent would be, in the way.
    assert (done.returncode, done.stdout) == ({"a file": 2, "inside a file": 4}[out], ""), done.stderr
    said = {
        "a file": f"{taken} is a file: --out names the folder the reply goes in",
        "inside a file": f"{folder}: Not a directory",
    }[out]
    assert done.stderr == f"ask: {said}; the note was not asked\n"
    assert taken.read_text() == "not a folder"


FULL_DISK = """
import errno, sqlite3, sys
from bot import cli
from bot.tools import grievance_spool
from bot.tools.grievance_store import LocalGrievanceStore

async def full_database(*args, **kwargs):
    raise sqlite3.OperationalError("database or disk is full")

def full_disk(fd, data):
    raise OSError(errno.ENOSPC, "No space left on device")

LocalGrievanceStore._insert = full_database
grievance_spool._write_all = full_disk
sys.exit(cli.main(sys.argv[1:]))
"""


def _on_a_full_disk(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A one-shot command whose grievances.db and spool both refuse to write (FULL_DISK)."""
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK, *args],
        cwd=REPO,
        env={
            **os.environ,
            "VOXDESK_STORAGE_DIR": str(storage),
            "VOXDESK_OFFLINE_WORKERS": "1",
            "VOXDESK_OFFLINE_VOICE": "en-us",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ask_says_a_complaint_the_disk_refused_is_not_filed_and_prints_its_words(settings, tmp_path) -> None:
    # grievances.db and its spool both refused the complaint (a full disk): the reply promised to
    # hold it and file it later, and the process ended with it at once, status 0.
    from bot.sentences import HELD_FOR_LATER, NOT_FILED

    note = paths.SAMPLES / "4-charged-twice.ogg"
    before = _grievances(settings.storage_dir)
    done = _on_a_full_disk(settings.storage_dir, "ask", str(note), "--json", "--out", str(tmp_path / "out"))
    reply = json.loads(done.stdout)["reply_text"]
    assert HELD_FOR_LATER not in reply
    assert NOT_FILED in reply
    db = settings.storage_dir / "grievances.db"
    said = (
        f"ask: the complaint was NOT filed: {db} and its spool refused it; ask this note again once"
        " the disk takes writes; its words (wallet): i want to complain i was charged twice for gems\n"
    )
    assert done.returncode == 4, done.stderr
    assert done.stderr.endswith(said), done.stderr
    assert "UNFILED GRIEVANCE" not in done.stderr  # not held for a `refile` as well: filed once
    # Asked again with room on the disk, it is filed.
    again = voxdesk("ask", str(note), "--json", "--out", str(tmp_path / "out"), storage=settings.storage_dir)
    assert again.returncode == 0, again.stderr
    assert _grievances(settings.storage_dir) == before + 1


def test_demo_says_a_complaint_the_disk_refused_is_not_filed_and_prints_its_words(settings, tmp_path) -> None:
    # `demo` ends with its turns as `ask` does: sample 4's complaint, refused by grievances.db and
    # its spool, was answered "I'm holding on to it and will file it", status 0, and went with
    # the process.
    from bot.sentences import HELD_FOR_LATER, NOT_FILED

    samples = tmp_path / "samples"
    samples.mkdir()
    shutil.copy(paths.SAMPLES / "4-charged-twice.ogg", samples)
    before = _grievances(settings.storage_dir)
    done = _on_a_full_disk(settings.storage_dir, "demo", "--samples", str(samples))
    assert HELD_FOR_LATER not in done.stdout
    assert NOT_FILED in done.stdout, done.stdout
    db = settings.storage_dir / "grievances.db"
    said = (
        f"demo: the complaint of 4-charged-twice.ogg was NOT filed: {db} and its spool refused it;"
        " its words (wallet): i want to complain i was charged twice for gems\n"
    )
    assert done.returncode == 4, done.stderr
    assert done.stderr.endswith(said), done.stderr
    assert "UNFILED GRIEVANCE" not in done.stderr
    assert _grievances(settings.storage_dir) == before


def test_ask_keeps_an_earlier_reply_and_names_the_new_one_it_numbered(settings, tmp_path) -> None:
    # Asked again to compare, the same note's reply went over the first: the earlier answer, or a
    # file the operator had kept under that name, was lost without a word.
    note = paths.SAMPLES / "2-how-many-points.ogg"
    out = tmp_path / "replies"
    out.mkdir()
    (out / "2-how-many-points-reply.ogg").write_bytes(b"the earlier reply")
    (out / "2-how-many-points-reply-2.ogg").mkdir()  # a folder by that name is passed over too
    done = voxdesk("ask", str(note), "--out", str(out), storage=settings.storage_dir, timeout=120)
    assert done.returncode == 0, done.stderr
    new = out / "2-how-many-points-reply-3.ogg"
    assert f"audio:  {new} (2-how-many-points-reply.ogg was there already)\n" in done.stdout
    assert (out / "2-how-many-points-reply.ogg").read_bytes() == b"the earlier reply"
    assert new.read_bytes().startswith(b"OggS")


def test_ask_makes_no_out_folder_for_a_turn_that_fails(settings, tmp_path) -> None:
    # The folder was made before the turn, and a note that could not be heard left it behind empty.
    pdf = tmp_path / "note.ogg"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(2000))
    out = tmp_path / "new" / "replies"
    done = voxdesk("ask", str(pdf), "--out", str(out), storage=settings.storage_dir)
    assert done.returncode == 3, done.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("missing", [False, True])
def test_ask_refuses_an_out_folder_it_may_not_write_before_the_turn(settings, tmp_path, missing) -> None:
    # The folder (or, missing, the one it would be made in) is there and a folder: only writing
    # in it tells (root's override aside).
    locked = tmp_path / "replies"
    locked.mkdir(mode=0o500)
    out = locked / "today" if missing else locked
    before = _grievances(settings.storage_dir)
    note = paths.SAMPLES / "4-charged-twice.ogg"
    done = voxdesk(
        "ask", str(note), "--out", str(out), storage=settings.storage_dir, timeout=120, unprivileged=True
    )
    assert _grievances(settings.storage_dir) == before, done.stderr
    assert (done.returncode, done.stderr) == (
        4,
        f"ask: {locked}: Permission denied; the note was not asked\n",
    )


def test_ask_refuses_an_out_folder_it_may_not_write_in_before_the_turn(settings, tmp_path) -> None:
    # A folder of earlier replies made read-only (or another user's): found after the turn, the
    # complaint the note makes was filed already, and asking again files it twice.
    replies = tmp_path / "replies"
    replies.mkdir()
    kept = replies / "4-charged-twice-reply.ogg"
    kept.write_bytes(b"an earlier reply")
    replies.chmod(0o500)
    before = _grievances(settings.storage_dir)
    note = paths.SAMPLES / "4-charged-twice.ogg"
    try:
        done = voxdesk(
            "ask",
            str(note),
            "--out",
            str(replies),
            storage=settings.storage_dir,
            timeout=120,
            unprivileged=True,
        )
    finally:
        replies.chmod(0o700)
    assert _grievances(settings.storage_dir) == before, done.stderr
    assert (done.returncode, done.stderr) == (
        4,
        f"ask: {replies}: Permission denied; the note was not asked\n",
    )
    assert sorted(p.name for p in replies.iterdir()) == [kept.name]


@pytest.mark.parametrize("command", ["ask", "player export"])
def test_a_quoted_tilde_in_out_is_the_home_folder(settings, tmp_path, command) -> None:
    # `--out '~/replies'` (quoted, or from a unit or script no shell reads) was a folder named "~"
    # in the working one, as the settings' paths are not.
    home = tmp_path / "home"
    (home / "exports").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    # The encoders' files stay where they were unpacked, under the real home's cache.
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    if command == "ask":
        args = ["ask", str(paths.SAMPLES / "2-how-many-points.ogg"), "--json", "--out", "~/replies"]
        written = home / "replies" / "2-how-many-points-reply.ogg"
    else:
        args = ["player", "export", "111111111111111111", "--out", "~/exports/nova.json"]
        written = home / "exports" / "nova.json"
    done = voxdesk(
        "--config",
        str(REPO / "config.toml"),
        *args,
        storage=settings.storage_dir,
        cwd=work,
        PYTHONPATH=str(REPO),
        HOME=str(home),
        XDG_CACHE_HOME=cache,
    )
    assert list(work.iterdir()) == [], done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    if command == "ask":
        assert json.loads(done.stdout)["reply_audio"] == str(written)
    else:
        assert done.stdout == f"player 111111111111111111: written to {written}\n"
    assert written.stat().st_size > 0


def test_backup_refuses_a_folder_inside_the_storage_folder_named_from_where_it_runs(settings) -> None:
    # `cd /srv/voxdesk && voxdesk backup var/backups`: a path from the working directory is
    # inside the storage folder as much as a whole one.
    storage = settings.storage_dir
    before = sorted(p.name for p in storage.iterdir())
    done = voxdesk(
        "backup", f"{storage.name}/backups", storage=storage, cwd=storage.parent, PYTHONPATH=str(REPO)
    )
    assert done.returncode == 2, done.stderr
    assert "inside the storage folder" in done.stderr
    assert sorted(p.name for p in storage.iterdir()) == before


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--config", "~/x", "check"], "config"),
        (["ask", "~/x"], "file"),
        (["demo", "--samples", "~/x"], "samples"),
        (["index-manuals", "--manuals", "~/x"], "manuals"),
        (["backup", "~/x"], "into"),
        (["refile", "~/x"], "logs"),
    ],
)
def test_every_path_argument_takes_a_quoted_tilde_as_the_home_folder(
    monkeypatch, tmp_path, args, name
) -> None:
    # As --out does: `backup '~/backups'` from a unit or script no shell reads made a folder named
    # "~" in the working one.
    from bot.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    value = getattr(build_parser().parse_args(args), name)
    assert value == ([str(tmp_path / "x")] if name == "logs" else str(tmp_path / "x"))


def test_backup_into_an_empty_path_is_refused_before_anything_is_copied(settings, tmp_path: Path) -> None:
    # `voxdesk backup "$BACKUP_DIR"` with the variable unset: Path("") is the working folder, and
    # the players' data went wherever the job ran.
    work = tmp_path / "work"
    work.mkdir()
    done = voxdesk("backup", "", storage=settings.storage_dir, cwd=work, PYTHONPATH=str(REPO))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines()[-1] == (
        "voxdesk backup: error: argument DIR: an empty path names no file or folder: give one"
    )
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "", "check"],
        ["ask", ""],
        ["ask", "n.ogg", "--out", ""],
        ["demo", "--samples", ""],
        ["index-manuals", "--manuals", ""],
        ["backup", ""],
        ["player", "export", NOVA, "--out", ""],
        ["refile", "-", ""],
    ],
)
def test_every_path_argument_refuses_an_empty_path(capsys, args) -> None:
    # An empty --out or --config was taken as none given, an empty NOTE or --samples as the
    # working folder: a script's unset variable, never what was meant.
    from bot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(": an empty path names no file or folder: give one\n")


def test_every_argument_an_error_names_is_named_so_in_the_usage_above_it(capsys) -> None:
    # `voxdesk player` said "required: action, DISCORD_ID" under a usage showing {export,forget}:
    # argparse names a positional argument by its metavar, else by its internal name.
    import argparse

    from bot.cli import build_parser, main

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in commands.choices.items():
        usage = parser.format_usage()
        for action in parser._actions:
            if not action.option_strings:
                shown = argparse._get_action_name(action)
                assert f" {shown}" in usage or f"[{shown}" in usage, (name, action.dest)
    with pytest.raises(SystemExit):
        main(["player"])
    usage, error = capsys.readouterr().err.splitlines()
    assert error == "voxdesk player: error: the following arguments are required: export|forget, DISCORD_ID"
    assert usage.endswith(" export|forget DISCORD_ID")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["ask", "{folder}"],
            "ask: {folder} is a folder: NOTE names one audio file (demo --samples DIR answers a folder's)",
        ),
        (["refile", "-", "{folder}"], "refile: {folder} is a folder: LOG names a log file, or - for stdin"),
        (
            ["player", "export", NOVA, "--out", "{folder}"],
            "player export: {folder} is a folder: --out names the new file the export is written to,"
            " such as {folder}/" + NOVA + ".json",
        ),
        (
            ["ask", str(paths.SAMPLES / "2-how-many-points.ogg"), "--out", "{file}"],
            "ask: {file} is a file: --out names the folder the reply goes in; the note was not asked",
        ),
        (["backup", "{file}"], "backup: {file} is a file: DIR names the folder the backups go in"),
    ],
)
def test_a_path_of_the_wrong_kind_is_a_wrong_argument(settings, tmp_path: Path, args, said) -> None:
    # The OS's "/tmp: Is a directory" said what was wrong, not what to give instead. A folder given
    # for a file, or a file for a folder, is the caller's to mend, as a `demo --samples` that is
    # no folder is: status 2, not 4, which says a file or database cannot be used.
    folder, file = tmp_path / "notes", tmp_path / "a-file"
    folder.mkdir()
    file.write_text("kept")
    done = voxdesk(*(a.format(folder=folder, file=file) for a in args), storage=settings.storage_dir)
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        said.format(folder=folder, file=file) + "\n",
    )
    assert list(folder.iterdir()) == [] and file.read_text() == "kept"


@pytest.mark.parametrize("args", [[], ["-v"], ["--config", "config.toml"]])
def test_no_command_names_the_commands_to_give(capsys, args) -> None:
    # "the following arguments are required: COMMAND" named none of them.
    from bot.cli import COMMANDS, main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    usage, error = capsys.readouterr().err.splitlines()
    assert usage.startswith("usage: voxdesk ")
    assert error == (
        f"voxdesk: error: give a command: {', '.join(COMMANDS)} (voxdesk --help says what each does)"
    )
    assert "init, ask, demo, eval, check, backup, player, refile" in error


# Each command's own refusals of what it was given, and the start of the one line each says.
REFUSALS = {
    "ask": (["ask", "{folder}"], ""),
    "demo": (["demo", "--samples", "{folder}"], ""),
    "eval": (["eval", "--as-text", "--misses"], ""),
    "backup": (["backup", "{storage}/backups"], ""),
    "player export": (["player", "export", "not-an-id"], ""),
    "player forget": (["player", "forget", NOVA, "--out", "{folder}/nova.json"], ""),
    "refile": (["refile", "{folder}"], ""),
    "index-manuals": (["index-manuals", "--manuals", "{folder}"], ""),
    "web-password": (["web-password"], "short\n"),
    "sync": (["sync", "--clear"], ""),
}


@pytest.mark.parametrize("refused", REFUSALS)
def test_each_commands_refusal_is_one_line_after_its_name(
    settings, tmp_path, monkeypatch, capsys, refused
) -> None:
    # They began "backup: ", "config error: " or with nothing ("--as-text routes...", "use a staff
    # password of..."): a cron job's mail or a script's log did not say which command refused.
    import io

    from bot.cli import main

    folder = tmp_path / "empty"
    folder.mkdir()
    args, typed = REFUSALS[refused]
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    monkeypatch.setenv("VOXDESK_STORAGE_DIR", str(settings.storage_dir))
    monkeypatch.setenv("VOXDESK_SEARCH_ENDPOINT", "https://studio.search.windows.net")
    monkeypatch.setenv("AZURE_SEARCH_API_KEY", "k" * 32)
    status = main([a.format(folder=folder, storage=settings.storage_dir) for a in args])
    said = capsys.readouterr()
    assert (status, said.out) == (2, "")
    assert said.err.startswith(f"{refused}: ") and said.err.count("\n") == 1, said.err


def test_web_on_a_port_in_use_says_what_to_do(settings, monkeypatch, capsys) -> None:
    # asyncio's "error while attempting to bind on address ('127.0.0.1', 8080): address already
    # in use" named the cause, not the --port that mends it.
    import errno

    from bot import web
    from bot.cli import main

    async def taken(settings) -> None:
        raise OSError(errno.EADDRINUSE, "error while attempting to bind on address: address already in use")

    monkeypatch.setattr(web, "serve", taken)
    monkeypatch.setenv("VOXDESK_STORAGE_DIR", str(settings.storage_dir))
    assert main(["web", "--port", "18080"]) == 4
    assert capsys.readouterr().err == (
        "web: port 18080 is in use by another program: stop it, or serve on another port with --port"
        " (or web.port)\n"
    )


@pytest.mark.parametrize(
    "args", [["init"], ["check"], ["backup", "{tmp}/b"], ["player", "forget", NOVA], ["refile", "{tmp}/log"]]
)
def test_a_storage_dir_that_is_a_file_is_said_to_be_a_setting(tmp_path: Path, args) -> None:
    # Each said "<storage.dir>/players.db: Not a directory", status 4: neither that storage.dir
    # names a file nor that the setting is what to mend.
    storage = tmp_path / "var"
    storage.write_text("")
    (tmp_path / "log").write_text("")
    done = voxdesk(*(a.format(tmp=tmp_path) for a in args), storage=storage)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"storage.dir {storage} is a file: set storage.dir to a folder (made if missing)\n"


@pytest.mark.parametrize("command", ["init", "check"])
def test_a_storage_dir_under_a_file_is_said_to_be_a_setting(tmp_path: Path, command) -> None:
    # storage.dir naming a folder inside a file was "move it away, or give another path", status
    # 4: as for storage.dir naming the file itself, the setting is what to mend. `check` said
    # "<storage.dir>/players.db: Not a directory" on each line, status 1.
    (tmp_path / "afile").write_text("")
    storage = tmp_path / "afile" / "var"
    done = voxdesk(command, storage=storage)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"storage.dir {storage} is under {tmp_path / 'afile'}, a file: set storage.dir to a folder"
        " (made if missing)\n"
    )


def test_backup_under_a_file_names_the_file_in_the_way(settings, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    done = voxdesk("backup", str(tmp_path / "afile" / "b"), storage=settings.storage_dir)
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr == (
        f"{tmp_path / 'afile'} is a file, where {tmp_path / 'afile' / 'b'} needs a folder: move it away,"
        " or give another path\n"
    )


def test_refile_still_reads_stdin_from_a_dash() -> None:
    from bot.cli import build_parser

    assert build_parser().parse_args(["refile", "-", "~"]).logs == ["-", os.path.expanduser("~")]


def test_backup_into_a_quoted_tilde_makes_no_folder_named_tilde(settings, tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    done = voxdesk(
        "backup", "~/backups", storage=settings.storage_dir, cwd=work, PYTHONPATH=str(REPO), HOME=str(home)
    )
    assert done.returncode == 0, done.stderr
    assert list(work.iterdir()) == []
    (folder,) = (home / "backups").iterdir()
    assert done.stdout.endswith(f"backup: {folder}\n")


def test_each_command_s_help_says_what_it_does(capsys) -> None:
    # A command's own --help is where its user looks for what it does, not only `voxdesk --help`'s
    # list of commands.
    from bot.cli import COMMANDS, main

    for name, (_, does, _) in COMMANDS.items():
        with pytest.raises(SystemExit) as ended:
            main([name, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert ended.value.code == 0
        assert shown.startswith(f"usage: voxdesk {name} ")
        assert " ".join(does.split()) in shown, name


@pytest.mark.parametrize(
    ("args", "usage"),
    [(["check", "--bogus"], "voxdesk check [-h] [--run]"), (["--bogus", "check"], "voxdesk [-h]")],
)
def test_an_unknown_argument_is_said_with_the_usage_of_where_it_was_given(capsys, args, usage) -> None:
    # The usage shown is the command's, whose options the mistaken one is among, not voxdesk's.
    from bot.cli import main

    with pytest.raises(SystemExit) as ended:
        main(args)
    said = capsys.readouterr().err
    assert ended.value.code == 2
    assert said.startswith(f"usage: {usage}")
    assert said.endswith(": error: unrecognized arguments: --bogus\n")


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (
            ["check", "--config", "x.toml"],
            "--config goes before the command, as in `voxdesk --config FILE check`",
        ),
        (
            ["check", "--config=x.toml"],
            "--config goes before the command, as in `voxdesk --config FILE check`",
        ),
        (["run", "-v"], "-v goes before the command, as in `voxdesk -v run`"),
        (
            ["demo", "--verbose", "--config", "x.toml"],
            "--verbose and --config go before the command, as in `voxdesk --verbose --config FILE demo`",
        ),
    ],
)
def test_voxdesks_own_options_after_the_command_say_where_they_go(capsys, args, hint) -> None:
    # "voxdesk check --config x.toml" read "unrecognized arguments: --config x.toml" under check's
    # usage, which lists no --config: nothing said voxdesk takes it, before the command.
    from bot.cli import main

    with pytest.raises(SystemExit) as ended:
        main(args)
    said = capsys.readouterr().err
    assert ended.value.code == 2
    assert said.endswith(f"; {hint}\n"), said


@pytest.mark.parametrize("command", [["ask", "note.ogg"], ["demo"]])
def test_a_speaker_that_is_no_discord_id_is_refused_before_the_note_is_asked(capsys, command) -> None:
    # `ask --user nova` answered as a player "nova": a complaint in the note was filed under that
    # id (labelled discord-nova in Jira), which no `player` command could then name.
    from bot.cli import build_parser

    with pytest.raises(SystemExit) as ended:
        build_parser().parse_args([*command, "--user", "nova"])
    assert ended.value.code == 2
    assert capsys.readouterr().err.endswith(
        "argument --user: 'nova' is not a Discord user id (digits only, e.g. 111111111111111111)\n"
    )
    assert build_parser().parse_args([*command, "--user", "222222222222222222"]).user == "222222222222222222"


async def test_check_names_the_manuals_the_local_index_no_longer_matches(settings, tmp_path: Path) -> None:
    # The index holds what `init` cut from the manuals folder then: a manual added, changed or
    # removed since was answered from the old passages, and `check` said "ok" all the same.
    from bot.seed import initialise

    manuals = tmp_path / "manuals"
    shutil.copytree(paths.MANUALS, manuals)
    configured = make_settings(settings.storage_dir, VOXDESK_STORAGE_MANUALS_DIR=str(manuals))
    line = {r.service: r for r in await health.check_all(configured)}["manuals"]
    assert line.mark == "ok", line.line()

    (manuals / "cross-play.md").write_text("# Cross-play\n\n## Turning it on\n\nSettings, then Online.\n")
    refunds = manuals / "refunds.md"
    refunds.write_text(refunds.read_text().replace("14 days", "30 days", 1) + "\nAsk within a month.\n")
    (manuals / "crashes.md").unlink()
    line = {r.service: r for r in await health.check_all(configured)}["manuals"]
    assert line.mark == "warn", line.line()
    assert line.detail.endswith(
        f"; the manuals in {manuals} differ from the index (added cross-play.md; changed refunds.md;"
        " removed crashes.md): players are answered from the old passages until `python -m bot init`"
        " indexes them again"
    ), line.detail

    await initialise(configured, speech=False)
    line = {r.service: r for r in await health.check_all(configured)}["manuals"]
    assert line.mark == "ok", line.line()


async def test_check_says_a_manuals_folder_it_cannot_read_rather_than_every_manual_removed(
    settings, tmp_path: Path
) -> None:
    # A manuals folder gone (the index restored from a backup to a host without it) or unreadable
    # (glob lists nothing there) read as every manual removed, with `init` to run, which refuses a
    # folder that holds no manuals; a manual it cannot read failed the whole line, the index fine.
    from bot.seed import initialise

    manuals = tmp_path / "manuals"
    shutil.copytree(paths.MANUALS, manuals)
    configured = make_settings(settings.storage_dir, VOXDESK_STORAGE_MANUALS_DIR=str(manuals))
    await initialise(configured, speech=False)

    shutil.rmtree(manuals)
    line = {r.service: r for r in await health.check_all(configured)}["manuals"]
    assert line.mark == "warn", line.line()
    assert line.detail == (
        f"local manuals index: 46 passages; no manuals found in {manuals} to compare the index with:"
        " check storage.manuals_dir"
    ), line.detail

    shutil.copytree(paths.MANUALS, manuals)
    (manuals / "faq.md").symlink_to(tmp_path / "nowhere.md")  # a link to a manual moved away
    line = {r.service: r for r in await health.check_all(configured)}["manuals"]
    assert line.mark == "warn", line.line()
    assert line.detail.startswith(
        f"local manuals index: 46 passages; the manuals in {manuals} not compared with the index:"
        f" {manuals / 'faq.md'}: "
    ), line.detail
