"""`voxdesk backup`: a copy of a running bot's data that holds every committed grievance."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.backup import backup
from bot.db import DAMAGED
from bot.tools.grievance_spool import GrievanceSpool
from bot.tools.grievance_store import LocalGrievanceStore

from .conftest import smb_locks
from .test_cli import REPO, _on_a_read_only_mount, _without_root_override, voxdesk

NOVA = "111111111111111111"


def _grievances(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM grievances").fetchone()[0]


async def test_a_backup_while_the_store_is_open_holds_every_committed_grievance(settings, tmp_path: Path):
    storage = settings.storage_dir
    store = await LocalGrievanceStore.open(storage / "grievances.db")
    try:
        for i in range(5):
            await store.register(NOVA, "wallet", f"charged twice, time {i}")
        filed = _grievances(storage / "grievances.db")
        plain = tmp_path / "plain.db"
        shutil.copy(storage / "grievances.db", plain)  # what `cp` would keep: the WAL left behind
        assert _grievances(plain) < filed
        GrievanceSpool.beside(storage / "grievances.db").keep(
            "note-1",
            user_id=NOVA,
            category="other",
            description="kept while the disk was full",
            at="x",
            state="local_only",
        )

        at = dt.datetime(2026, 12, 5, 8, 30, tzinfo=dt.UTC)
        folder, lines = backup(settings, tmp_path / "backups", now=at)
    finally:
        await store.aclose()

    assert folder == tmp_path / "backups" / "voxdesk-20261205T083000Z"
    assert _grievances(folder / "grievances.db") == filed
    assert "kept while the disk was full" in (folder / "grievances.db.spool.jsonl").read_text()
    assert {"players.db: copied", "grievances.db: copied", "manuals.db: copied"} <= set(lines)
    for copied in folder.iterdir():
        assert copied.stat().st_mode & 0o777 == 0o600, copied  # players' words: the owner's alone
    with pytest.raises(FileExistsError):  # never over an earlier backup
        backup(settings, tmp_path / "backups", now=at)


async def test_a_backup_leaves_out_the_recent_claims_and_says_why(settings, tmp_path: Path) -> None:
    # grievances-recent.db holds /grievance file's claims of the last 10 minutes: restored, every
    # one would be past that window. A backup that held it alone would be no backup to keep.
    from bot.backup import NOT_COPIED

    from .conftest import make_settings

    storage = settings.storage_dir
    store = await LocalGrievanceStore.open(storage / "grievances.db")
    try:
        await store.claim_words(NOVA, ("wallet", "charged twice"), "discord:1:", 600.0)
    finally:
        await store.aclose()
    assert (storage / "grievances-recent.db").exists()
    folder, lines = backup(settings, tmp_path / "backups")
    assert f"grievances-recent.db: {NOT_COPIED}" in lines
    assert "grievances.db: copied" in lines
    assert not (folder / "grievances-recent.db").exists()
    assert NOT_COPIED == "not copied (claims of the last 10 minutes, of no use once restored)"

    alone = tmp_path / "alone"
    alone.mkdir()
    (storage / "grievances-recent.db").rename(alone / "grievances-recent.db")
    _, nothing = backup(make_settings(alone), tmp_path / "more")
    assert nothing == []


def test_a_backup_holds_the_key_players_are_named_to_openai_by(settings, tmp_path: Path) -> None:
    # Restored without it, the bot makes a new key: every player a stranger to OpenAI's abuse
    # monitoring, one it had flagged too.
    from bot.engines.openai import safety_key

    key = safety_key(settings.storage_dir)
    folder, lines = backup(settings, tmp_path / "backups")
    assert "openai-safety.key: copied (the key players are named to OpenAI by)" in lines
    assert (folder / "openai-safety.key").read_bytes() == key
    assert (folder / "openai-safety.key").stat().st_mode & 0o777 == 0o600


def test_backup_command_names_its_folder(settings, tmp_path: Path) -> None:
    done = voxdesk("backup", str(tmp_path / "b"), storage=settings.storage_dir)
    assert done.returncode == 0, done.stderr
    assert "grievances.db: copied" in done.stdout
    (folder,) = (tmp_path / "b").iterdir()
    assert done.stdout.strip().endswith(f"backup: {folder}")


def test_backup_from_a_storage_dir_that_does_not_exist_fails_in_one_line(tmp_path: Path) -> None:
    # A nightly job with another storage.dir than the bot's (a cron job's working directory, an
    # environment without VOXDESK_STORAGE_DIR) kept empty backups and exited 0, every night.
    storage, into = tmp_path.resolve() / "not-the-storage", tmp_path / "b"
    done = voxdesk("backup", str(into), storage=storage)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        f"backup: storage.dir {storage} does not exist: is storage.dir the bot's storage folder?"
        " nothing was copied\n"
    )
    assert not into.exists() and not storage.exists()


def test_backup_from_a_folder_without_voxdesk_s_databases_fails_in_one_line(tmp_path: Path) -> None:
    storage, into = tmp_path.resolve() / "home", tmp_path / "b"
    storage.mkdir()
    (storage / "notes.txt").write_text("not voxdesk's\n")
    done = voxdesk("backup", str(into), storage=storage)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        f"backup: {storage} holds none of voxdesk's databases: is storage.dir the bot's storage"
        " folder? nothing was copied\n"
    )
    assert not into.exists()


def test_backup_of_a_spool_whose_database_was_lost_keeps_its_grievances(tmp_path: Path) -> None:
    # No database, yet grievances the database refused wait in the spool: a backup, not a
    # storage.dir set wrong.
    storage, into = tmp_path.resolve() / "var", tmp_path / "b"
    storage.mkdir()
    GrievanceSpool.beside(storage / "grievances.db").keep(
        "note-1", user_id=NOVA, category="other", description="kept", at="x", state="local_only"
    )
    done = voxdesk("backup", str(into), storage=storage)
    assert done.returncode == 0, done.stderr
    (folder,) = into.iterdir()
    assert (folder / "grievances.db.spool.jsonl").read_text(encoding="utf-8").count("note-1") == 1


def test_backup_of_lines_set_aside_whose_database_was_lost_keeps_them(tmp_path: Path) -> None:
    # Only .rejected is left: torn lines of grievances, the only copy of those words an operator
    # has. Not a storage.dir set wrong, which would leave them out of every nightly backup.
    storage, into = tmp_path.resolve() / "var", tmp_path / "b"
    storage.mkdir()
    torn = '{"id": "note-3", "user_id": "111111111111111111", "description": "refund never ca'
    GrievanceSpool.beside(storage / "grievances.db").rejected.write_text(torn + "\n")
    done = voxdesk("backup", str(into), storage=storage)
    assert done.returncode == 0, done.stderr
    (folder,) = into.iterdir()
    assert (folder / "grievances.db.spool.jsonl.rejected").read_text() == torn + "\n"


def test_backup_that_finds_nothing_to_copy_after_all_says_so_and_fails(tmp_path: Path) -> None:
    # A spool the bot emptied once it filed every line, and no database: nothing to keep.
    storage, into = tmp_path.resolve() / "var", tmp_path / "b"
    storage.mkdir()
    GrievanceSpool.beside(storage / "grievances.db").path.write_bytes(b"")
    done = voxdesk("backup", str(into), storage=storage)
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    (folder,) = into.iterdir()
    assert done.stderr == f"backup: nothing to copy yet; {folder} is empty\n"
    assert list(folder.iterdir()) == []


def test_backup_of_a_storage_folder_not_yet_initialised_says_there_is_nothing_yet(tmp_path: Path) -> None:
    # The folder a unit's StateDirectory= or a container's new volume makes, before `init`: not a
    # setting known to be wrong, yet no backup either, which a scheduled job must see.
    storage, into = tmp_path.resolve() / "var", tmp_path / "b"
    storage.mkdir()
    done = voxdesk("backup", str(into), storage=storage)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        f"backup: nothing to copy yet; the storage folder {storage} is empty (`voxdesk init` fills it)\n"
    )
    assert not into.exists()


def test_backup_into_a_file_says_dir_is_a_folder(settings, tmp_path: Path) -> None:
    into = tmp_path / "backups"
    into.write_text("")
    done = voxdesk("backup", str(into), storage=settings.storage_dir)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr == f"backup: {into} is a file: DIR names the folder the backups go in\n"
    assert into.read_text() == ""


def test_backup_into_a_folder_this_user_cannot_write_names_that_folder(settings, tmp_path: Path) -> None:
    # It named the hidden `.voxdesk-<UTC time>.partial` folder it could not make there.
    into = tmp_path / "backups"
    into.mkdir(mode=0o500)
    try:
        done = voxdesk("backup", str(into), storage=settings.storage_dir, timeout=120, unprivileged=True)
    finally:
        into.chmod(0o700)
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr == f"backup: {into}: Permission denied; nothing was copied\n"
    assert list(into.iterdir()) == []


def test_the_spool_is_copied_before_the_grievance_database(settings, tmp_path: Path, monkeypatch) -> None:
    # A grievance the running bot files from the spool between the two copies must be in one of
    # them: in the database's copy if that is taken after the spool's.
    from bot import backup as module

    copied: list[str] = []
    real_database, real_locked = module._copy_database, module._copy_locked
    monkeypatch.setattr(module, "_copy_database", lambda s, t: (copied.append(s.name), real_database(s, t)))
    monkeypatch.setattr(module, "_copy_locked", lambda s, t: (copied.append(s.name), real_locked(s, t)))
    GrievanceSpool.beside(settings.storage_dir / "grievances.db").keep(
        "note-2", user_id=NOVA, category="other", description="kept", at="x", state="local_only"
    )
    backup(settings, tmp_path / "b")
    assert copied.index("grievances.db.spool.jsonl") < copied.index("grievances.db")


def test_an_emptied_spool_is_not_said_to_hold_grievances(settings, tmp_path: Path) -> None:
    # The bot empties the spool once it has filed every line, and keeps the file: the backup said
    # it copied grievances not yet in the database when none were waiting.
    spool = GrievanceSpool.beside(settings.storage_dir / "grievances.db")
    spool.path.write_bytes(b"")
    spool.rejected.write_bytes(b"\n")
    folder, lines = backup(settings, tmp_path / "b")
    assert not [line for line in lines if "spool" in line], lines
    assert not list(folder.glob("*spool*"))
    assert "grievances.db: copied" in lines


def test_lines_the_spool_set_aside_are_copied(settings, tmp_path: Path) -> None:
    # A line torn by a crash or a full disk is set aside in .rejected: the only copy of those
    # words an operator has, so a backup restored without it loses them.
    spool = GrievanceSpool.beside(settings.storage_dir / "grievances.db")
    torn = '{"id": "note-3", "user_id": "111111111111111111", "description": "refund never ca'
    spool.rejected.write_text(torn + "\n")
    folder, lines = backup(settings, tmp_path / "b")
    assert f"{spool.rejected.name}: copied (grievances not yet in the database)" in lines
    assert (folder / spool.rejected.name).read_text() == torn + "\n"


def test_a_grievance_being_kept_is_copied_whole_not_in_part(settings, tmp_path: Path, monkeypatch) -> None:
    # The bot appends to the spool under its lock: copied meanwhile, the backup would hold half a
    # line, a complaint's words cut off, which no refile files.
    import threading

    from bot import backup as module

    spool = GrievanceSpool.beside(settings.storage_dir / "grievances.db")
    line = '{"id": "note-4", "user_id": "111111111111111111", "description": "refund never came"}\n'
    copying = threading.Event()
    real = module._write_new
    monkeypatch.setattr(module, "_write_new", lambda target, data: (copying.set(), real(target, data)))
    made: list[Path] = []
    with open(spool.path, "a", encoding="utf-8") as appending:
        fcntl.flock(appending, fcntl.LOCK_EX)
        appending.write(line[:30])
        appending.flush()
        making = threading.Thread(target=lambda: made.append(backup(settings, tmp_path / "b")[0]))
        making.start()
        copying.wait(1.0)  # a copy not waiting for the lock makes it at once
        appending.write(line[30:])
        appending.flush()
        fcntl.flock(appending, fcntl.LOCK_UN)
    making.join()
    assert (made[0] / spool.path.name).read_text() == line


def test_a_backup_sweeps_only_its_own_cut_short_folders(settings, tmp_path: Path) -> None:
    # The folder backups go to may hold others' files: only a `.voxdesk-<time>.partial` is one
    # of voxdesk's, cut short.
    into = tmp_path / "b"
    into.mkdir(mode=0o700)
    theirs = [into / "video.partial", into / ".voxdesk-latest.partial"]
    for path in theirs:
        path.mkdir()
        (path / "kept").write_text("not voxdesk's")
    backup(settings, into)
    assert all((path / "kept").exists() for path in theirs)


KILLED_MID_BACKUP = """
import os, signal, sys
from pathlib import Path
from bot import backup as module
from bot.cli import _settings, build_parser

real = module._copy_database

def copy_then_die(source, target):
    if source.name == "grievances.db":  # the players and manuals are copied by now
        os.kill(os.getpid(), signal.SIGKILL)
    real(source, target)

module._copy_database = copy_then_die
module.backup(_settings(build_parser().parse_args(["backup", sys.argv[1]])), Path(sys.argv[1]))
"""


def test_a_backup_killed_half_way_is_never_taken_for_a_whole_one(settings, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    into = tmp_path / "b"
    env = {**os.environ, "VOXDESK_STORAGE_DIR": str(settings.storage_dir)}
    cwd = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", KILLED_MID_BACKUP, str(into)], env=env, cwd=cwd, timeout=120)
    assert done.returncode == -signal.SIGKILL
    (left,) = into.iterdir()
    assert left.name.startswith(".voxdesk-") and left.name.endswith(".partial")
    assert {p.name for p in left.iterdir()} == {"players.db", "manuals.db"}
    # Players' data nothing else would ever remove: the next backup does, and says so.
    again = voxdesk("backup", str(into), storage=settings.storage_dir)
    assert again.returncode == 0, again.stderr
    (folder,) = into.iterdir()
    assert folder.name.startswith("voxdesk-")
    said = again.stdout.strip().splitlines()
    assert said[0] == f"{left.name}: removed, a backup cut short" and said[-1] == f"backup: {folder}"
    assert _grievances(folder / "grievances.db") == _grievances(settings.storage_dir / "grievances.db")


PAUSED_MID_BACKUP = """
import sys
from pathlib import Path
from bot import backup as module
from bot.cli import _settings, build_parser

real = module._copy_database

def copy_then_wait(source, target):
    if source.name == "grievances.db":
        print("paused", flush=True)
        sys.stdin.readline()
    real(source, target)

module._copy_database = copy_then_wait
folder, _ = module.backup(_settings(build_parser().parse_args(["backup", sys.argv[1]])), Path(sys.argv[1]))
print(folder.name)
"""


def test_a_backup_under_way_keeps_its_folder_while_another_is_made(settings, tmp_path: Path) -> None:
    import subprocess
    import sys

    into = tmp_path / "b"
    env = {**os.environ, "VOXDESK_STORAGE_DIR": str(settings.storage_dir)}
    cwd = Path(__file__).resolve().parent.parent
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_MID_BACKUP, str(into)],
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdin is not None
        assert first.stdout.readline() == "paused\n"
        (under_way,) = into.iterdir()
        made, lines = backup(settings, into, now=dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC))
        assert not [line for line in lines if "cut short" in line]
        assert {p.name for p in under_way.iterdir()} == {"players.db", "manuals.db"}
        first.stdin.write("\n")
        first.stdin.flush()
        theirs = first.stdout.readline().strip()
    finally:
        first.stdin.close()  # type: ignore[union-attr]
        assert first.wait(timeout=120) == 0
    assert sorted(p.name for p in into.iterdir()) == sorted([made.name, theirs])
    assert _grievances(into / theirs / "grievances.db") == _grievances(settings.storage_dir / "grievances.db")


def test_a_backup_that_fails_half_way_leaves_nothing_behind(settings, tmp_path: Path, monkeypatch) -> None:
    import errno

    from bot import backup as module

    real = module._copy_database

    def full_disk(source: Path, target: Path) -> None:
        if source.name == "grievances.db":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(source, target)

    monkeypatch.setattr(module, "_copy_database", full_disk)
    with pytest.raises(OSError):
        backup(settings, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def test_a_damaged_database_fails_the_backup_in_one_line_naming_it(settings, tmp_path: Path) -> None:
    import os

    damaged = settings.storage_dir / "conversations.db"
    damaged.write_bytes(os.urandom(4096))
    done = voxdesk("backup", str(tmp_path / "b"), storage=settings.storage_dir)
    assert done.returncode == 4
    assert done.stderr.strip() == f"backup: failed, nothing kept: {damaged}: file is not a database{DAMAGED}"
    assert list((tmp_path / "b").iterdir()) == []


def test_a_backup_says_which_voxdesk_made_it_and_each_database_s_schema_version(settings, tmp_path: Path):
    import json

    from bot import installed_version
    from bot.app import storage_paths
    from bot.schemas import versions

    folder, _ = backup(settings, tmp_path / "b", now=dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC))
    made = json.loads((folder / "voxdesk-backup.json").read_text())
    copied = {p.name for p in folder.glob("*.db")}
    storage = storage_paths(settings)
    known = {getattr(storage, n).name: v for n, v in versions().items() if f"{n}.db" in copied}
    assert {"players.db", "grievances.db", "manuals.db"} <= copied
    assert made == {"voxdesk": installed_version(), "made_at": "20261205T090000Z", "schema_versions": known}
    assert (folder / "voxdesk-backup.json").stat().st_mode & 0o777 == 0o600


@pytest.fixture
def version_unread():
    """installed_version() worked out again from the metadata a test installs."""
    from bot import installed_version

    installed_version.cache_clear()
    yield
    installed_version.cache_clear()


def _installed(site: Path, version: str, record: str = "", editable_from: Path | None = None) -> None:
    """A voxdesk-`version`.dist-info in `site`, as pip leaves one: a wheel's lists its files in
    RECORD, an editable install's names its checkout in direct_url.json."""
    import json

    info = site / f"voxdesk-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: voxdesk\nVersion: {version}\n")
    (info / "RECORD").write_text(record)
    if editable_from is not None:
        url = {"url": editable_from.as_uri(), "dir_info": {"editable": True}}
        (info / "direct_url.json").write_text(json.dumps(url))


@pytest.mark.parametrize(
    "installed",
    ["a wheel of this code", "this checkout, editable", "another checkout", "another wheel", "nothing"],
)
def test_a_backup_names_the_release_installed_or_says_it_is_unknown(
    settings, tmp_path: Path, monkeypatch, version_unread, installed: str
) -> None:
    # A number written in the code names one release, and every later one made backups that said
    # the same: which release made a backup was not to be told. The installed metadata says, when
    # it is this code's; a checkout run beside another copy's install must not borrow its number.
    import importlib.metadata
    import json

    from .conftest import REPO

    site = tmp_path / "site-packages"
    site.mkdir()
    if installed == "a wheel of this code":
        (site / "bot").symlink_to(REPO / "bot")  # its files where a wheel's go
    elif installed == "another wheel":
        (site / "bot").mkdir()
        (site / "bot" / "__init__.py").write_text("")
    elsewhere = {"this checkout, editable": REPO, "another checkout": tmp_path / "other"}
    record = "bot/__init__.py,,\n" if "wheel" in installed else ""
    _installed(site, "2.3.4", record=record, editable_from=elsewhere.get(installed))
    found = importlib.metadata.PathDistribution(site / "voxdesk-2.3.4.dist-info")

    real = importlib.metadata.distribution

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name != "voxdesk":  # the libraries' own, which some look up as they load
            return real(name)
        if installed == "nothing":
            raise importlib.metadata.PackageNotFoundError(name)
        return found

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    folder, _ = backup(settings, tmp_path / "b")
    made = json.loads((folder / "voxdesk-backup.json").read_text())
    assert made["voxdesk"] == ("2.3.4" if installed.endswith(("this code", "editable")) else "0+unknown")


async def test_an_older_voxdesk_s_backup_restored_as_the_readme_says_is_brought_up_to_date(
    tmp_path: Path, seeded_storage
) -> None:
    # The other way from the test below: 70e590f's web.db is at schema version 1, which this
    # voxdesk migrates as it opens the file. Its backup says so, `check` passes it untouched, and
    # a start brings it to this version's.
    import json

    from bot.schemas import versions

    from .conftest import make_settings
    from .test_upgrades import as_an_older_voxdesk_left, restored_70e590f, rows, started_on

    storage = tmp_path / "var"
    restored_70e590f(storage)
    as_an_older_voxdesk_left(storage, seeded_storage)
    folder, _ = backup(make_settings(storage), tmp_path / "b")
    made = json.loads((folder / "voxdesk-backup.json").read_text())
    assert made["schema_versions"]["web.db"] == 1 < versions()["web"]
    restored = tmp_path / "restored"
    restored.mkdir()
    for kept in folder.iterdir():
        shutil.copy(kept, restored / kept.name)

    checked = voxdesk("check", storage=restored)
    (line,) = [line for line in checked.stdout.splitlines() if line.split()[1:2] == ["storage"]]
    assert not line.startswith("FAIL"), checked.stdout
    assert _user_version(restored / "web.db") == 1  # `check` changes nothing
    await started_on(restored)
    assert _user_version(restored / "web.db") == versions()["web"]
    assert rows(restored / "web.db", "SELECT login FROM ended_logins") == [("GVlj2a54jnxixWKttjGFOQ",)]


def _user_version(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def test_a_newer_voxdesk_s_backup_restored_as_the_readme_says_is_refused_not_read(
    settings, tmp_path: Path
) -> None:
    # The README's restore: stop the bot, copy the backup's files into storage.dir, `check`.
    # Here the backup is made newer by hand: its players.db at a schema version past this one's.
    from bot import paths

    folder, _ = backup(settings, tmp_path / "b")
    with sqlite3.connect(folder / "players.db") as conn:
        conn.execute("DROP TABLE achievements")
        conn.execute("PRAGMA user_version = 7")
    restored = tmp_path / "restored"
    restored.mkdir()
    for kept in folder.iterdir():
        shutil.copy(kept, restored / kept.name)
    line = (
        f"{restored / 'players.db'} was written by a newer voxdesk (schema version 7, this one knows up"
        " to 1): upgrade voxdesk, or restore a backup this version made"
    )
    checked = voxdesk("check", storage=restored)
    assert checked.returncode == 1 and f"FAIL  storage    sqlite   {line}\n" in checked.stdout
    asked = voxdesk("ask", str(paths.SAMPLES / "2-how-many-points.ogg"), storage=restored)
    assert asked.returncode == 4
    assert asked.stderr.strip() == f"a database under the storage folder cannot be used: {line}"
    with sqlite3.connect(restored / "players.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 7


def _at(day: int) -> dt.datetime:
    return dt.datetime(2026, 12, day, 3, 0, tzinfo=dt.UTC)


def _backups(into: Path) -> list[str]:
    return sorted(p.name for p in into.iterdir() if p.name.startswith("voxdesk-20"))


def test_a_backup_keeps_the_newest_backups_and_removes_only_older_ones(settings, tmp_path: Path) -> None:
    from .conftest import make_settings

    into = tmp_path / "b"
    into.mkdir()
    theirs = [into / ".voxdesk-20261201T000000Z.partial", into / "voxdesk-notes", into / "README"]
    theirs[0].mkdir()  # another backup under way, which holds the folder locked while it is
    under_way = os.open(into, os.O_RDONLY)
    fcntl.flock(under_way, fcntl.LOCK_SH)
    theirs[1].mkdir()
    theirs[2].write_text("the studio's own")
    three = make_settings(settings.storage_dir, VOXDESK_STORAGE_KEEP_BACKUPS="3")
    for day in (1, 2, 3):
        _, lines = backup(three, into, now=_at(day))
        assert not any("removed" in line for line in lines)
    _, lines = backup(three, into, now=_at(4))
    assert lines[-1] == "voxdesk-20261201T030000Z: removed, older than the newest 3 (storage.keep_backups)"
    assert _backups(into) == [f"voxdesk-202612{d:02d}T030000Z" for d in (2, 3, 4)]
    # A clock set back: the backup just made is kept all the same, with the newest others.
    made, _ = backup(three, into, now=_at(1))
    assert _backups(into) == [made.name] + [f"voxdesk-202612{d:02d}T030000Z" for d in (3, 4)]
    assert all(p.exists() for p in theirs)
    os.close(under_way)
    everything = make_settings(settings.storage_dir, VOXDESK_STORAGE_KEEP_BACKUPS="0")
    backup(everything, into, now=_at(5))
    assert len(_backups(into)) == 4
    # With none under way, the .partial is one cut short.
    assert not theirs[0].exists() and theirs[1].exists() and theirs[2].exists()


def test_a_backup_while_another_runs_on_smb_leaves_it_be(settings, tmp_path: Path, monkeypatch) -> None:
    # On SMB a backup started while another runs into the same folder would fail with
    # PermissionError, as if the folder were not the operator's to write.
    into = tmp_path / "b"
    into.mkdir()
    theirs = into / ".voxdesk-20261201T000000Z.partial"
    theirs.mkdir()
    flock = smb_locks(monkeypatch)
    under_way = os.open(into, os.O_RDONLY)  # the other backup's hold on the folder
    try:
        flock(under_way, fcntl.LOCK_SH)
        made, lines = backup(settings, into, now=_at(1))
    finally:
        os.close(under_way)
    assert (made / "players.db").is_file()
    assert theirs.is_dir() and not [line for line in lines if "cut short" in line]


def test_an_empty_backup_removes_no_whole_one(settings, tmp_path: Path) -> None:
    from .conftest import make_settings

    into = tmp_path / "b"
    backup(settings, into, now=_at(1))
    nothing = make_settings(tmp_path / "not-the-storage", VOXDESK_STORAGE_KEEP_BACKUPS="1")
    _, lines = backup(nothing, into, now=_at(2))
    assert lines == []
    assert _backups(into) == ["voxdesk-20261201T030000Z", "voxdesk-20261202T030000Z"]


def test_empty_backups_do_not_count_among_the_kept_ones(settings, tmp_path: Path) -> None:
    from .conftest import make_settings

    into = tmp_path / "b"
    two = make_settings(settings.storage_dir, VOXDESK_STORAGE_KEEP_BACKUPS="2")
    backup(two, into, now=_at(1))
    # A cron job started from the wrong folder: storage.dir is empty there, every night.
    nothing = make_settings(tmp_path / "not-the-storage", VOXDESK_STORAGE_KEEP_BACKUPS="2")
    for day in (2, 3):
        backup(nothing, into, now=_at(day))
    backup(two, into, now=_at(4))
    whole = [name for name in _backups(into) if any((into / name).iterdir())]
    assert whole == ["voxdesk-20261201T030000Z", "voxdesk-20261204T030000Z"]


def test_a_backup_removed_in_part_is_never_taken_for_a_whole_one(
    settings, tmp_path: Path, monkeypatch
) -> None:
    import errno

    from bot import backup as module

    from .conftest import make_settings

    one = make_settings(settings.storage_dir, VOXDESK_STORAGE_KEEP_BACKUPS="1")
    into = tmp_path / "b"
    backup(one, into, now=_at(1))
    real = module.shutil.rmtree

    def fails_half_way(path: Path, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return  # the sweep of leftovers asks for no error
        next(Path(path).glob("*.db")).unlink()
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(module.shutil, "rmtree", fails_half_way)
    _, lines = backup(one, into, now=_at(2))
    assert lines[-1] == "voxdesk-20261201T030000Z: not removed: Permission denied"
    assert _backups(into) == ["voxdesk-20261202T030000Z"]  # the part left is no longer named as one
    monkeypatch.setattr(module.shutil, "rmtree", real)
    backup(one, into, now=_at(3))
    assert sorted(p.name for p in into.iterdir()) == ["voxdesk-20261203T030000Z"]


def test_the_backup_command_says_which_older_backups_it_removed(settings, tmp_path: Path) -> None:
    into = tmp_path / "b"
    (into / "voxdesk-20200101T000000Z").mkdir(parents=True)
    (into / "voxdesk-20200101T000000Z" / "players.db").write_bytes(b"")
    done = voxdesk("backup", str(into), storage=settings.storage_dir, VOXDESK_STORAGE_KEEP_BACKUPS="1")
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip().splitlines()
    assert said[-2] == "voxdesk-20200101T000000Z: removed, older than the newest 1 (storage.keep_backups)"
    assert len(_backups(into)) == 1 and said[-1] == f"backup: {into / _backups(into)[0]}"


async def test_a_backup_of_a_database_only_in_its_log_holds_its_grievances(settings, tmp_path: Path):
    # A power cut while grievances.db was made leaves the file empty and every commit in its log;
    # the backup's SQLite connection deleted that log and copied an empty database.
    from .test_db import _crashed_while_made

    path = await _crashed_while_made(settings.storage_dir)
    folder, _ = backup(settings, tmp_path / "backups", now=dt.datetime(2026, 12, 5, 8, 30, tzinfo=dt.UTC))
    assert _grievances(folder / "grievances.db") == 1
    assert _grievances(path) == 1


SHM = "with no process holding it open, SQLite makes a -shm file beside a database to read it"


def test_a_backup_of_a_stopped_bot_s_folder_this_user_cannot_write_says_why(settings, tmp_path: Path) -> None:
    # The same backup works while the bot runs (its -shm files are there to read through) and,
    # once it is stopped (as before an upgrade), failed on "attempt to write a readonly database".
    storage = settings.storage_dir
    storage.chmod(0o500)
    try:
        done = subprocess.run(
            [*_without_root_override(), sys.executable, "-m", "bot", "backup", str(tmp_path / "b")],
            cwd=REPO,
            env={**os.environ, "VOXDESK_STORAGE_DIR": str(storage)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        storage.chmod(0o700)
    assert done.returncode == 4, done.stdout
    assert done.stderr == (
        f"backup: failed, nothing kept: {storage / 'manuals.db'}: attempt to write a readonly database:"
        f" {SHM}; this user cannot write {storage}: run backup as the bot's user\n"
    )


@pytest.mark.parametrize("another_user", [False, True], ids=["mine", "another-user-s"])
def test_a_backup_of_a_database_this_user_cannot_read_says_why(
    settings, tmp_path: Path, another_user: bool
) -> None:
    # A database this user may not read (an `init` run as root, a restore as a person, a mode
    # set wrong): SQLite's "unable to open database file" names no cause. Another user's is said
    # with its owner, once.
    if another_user and os.geteuid() != 0:
        pytest.skip("giving the file to another user needs root")
    manuals = settings.storage_dir / "manuals.db"
    if another_user:
        os.chown(manuals, 65534, -1)
    manuals.chmod(0o600 if another_user else 0o000)
    try:
        done = voxdesk(
            "backup", str(tmp_path / "b"), storage=settings.storage_dir, timeout=120, unprivileged=True
        )
    finally:
        if another_user:
            os.chown(manuals, os.geteuid(), -1)
        manuals.chmod(0o600)
    owner = f" ({manuals} is owned by {pwd.getpwuid(65534).pw_name}, and voxdesk runs as root)"
    assert done.returncode == 4, done.stdout
    assert done.stderr == (
        f"backup: failed, nothing kept: {manuals}: unable to open database file:"
        f" this user cannot read it{owner if another_user else ''}: run backup as the bot's user\n"
    )


def test_a_backup_from_a_read_only_mount_says_why_it_cannot_read_there(settings, tmp_path: Path) -> None:
    mount = tmp_path / "mounted"
    done = _on_a_read_only_mount(
        settings.storage_dir, mount, sys.executable, "-m", "bot", "backup", str(tmp_path / "b")
    )
    assert done.returncode == 4, done.stdout
    assert done.stderr == (
        f"backup: failed, nothing kept: {mount / 'manuals.db'}: unable to open database file (its file"
        f" system is mounted read-only): {SHM}; back up where that file system is mounted read-write\n"
    )


def test_a_backup_disk_without_room_is_named_not_the_database_copied(
    settings, tmp_path: Path, monkeypatch
) -> None:
    # The backups' own disk full (a small volume, a quota): SQLite's "disk I/O error", which it
    # gives when the copy's -shm cannot grow, was said of the storage folder's grievances.db, as if
    # the bot's database were failing, and sent staff to restore a whole one.
    from bot import backup as module

    into = tmp_path / "b"
    real_connect, real_usage = sqlite3.connect, shutil.disk_usage

    def connect(database, *args, **kwargs):
        if Path(database).parent.name.endswith(".partial"):  # the copy: its disk takes no more
            return real_connect(f"{Path(database).as_uri()}?mode=ro", uri=True)
        return real_connect(database, *args, **kwargs)

    def disk_usage(path):
        usage = real_usage(path)
        return usage._replace(free=0) if Path(path).is_relative_to(into) else usage

    monkeypatch.setattr(module.sqlite3, "connect", connect)
    monkeypatch.setattr(module.shutil, "disk_usage", disk_usage)
    with pytest.raises(sqlite3.Error) as failed:
        backup(settings, into)
    said = str(failed.value)
    assert said.startswith(f"{into}: no room for a copy of "), said
    assert str(settings.storage_dir) not in said
    assert "0 KB free on that disk" in said
    assert list(into.iterdir()) == []
