"""`voxdesk backup DIR`: a consistent copy of every database and the grievance spool, safe while
the bot runs, and the key players are named to OpenAI by.

A copy of a running bot's files can catch a database half written, and a copy of its `*.db`
files alone misses what sits in their write-ahead logs (`*.db-wal`) until SQLite moves it:
recent grievances, for one. SQLite's online backup copies each database as one transaction
sees it, WAL included, and waits for a writer's transaction (up to db.BUSY_SECONDS) rather than
copying half of it.

Each backup says in voxdesk-backup.json which voxdesk made it (the installed release's version,
or 0+unknown from a checkout not installed) and each database's schema version: restored into an
older voxdesk, a database past the version it knows is refused (`check` says so, from the
database's own stamp), one before it is brought up to date as it opens, and the file tells before
restoring which version a backup needs."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path

from bot import installed_version
from bot.app import StoragePaths, storage_paths
from bot.config import Settings
from bot.db import (
    BUSY_SECONDS,
    fsync_path,
    kept,
    locked_now,
    mounted_read_only,
    naming,
    other_owner,
    private_dir,
    private_file,
    restore_from_log,
)
from bot.tools.grievance_spool import GrievanceSpool
from bot.tools.grievance_store import RESUBMIT_SECONDS


def backup(settings: Settings, into: Path, now: dt.datetime | None = None) -> tuple[Path, list[str]]:
    """Copy into a new folder `into`/voxdesk-<UTC time>: (that folder, one line per file).

    The copies are made in `.voxdesk-<UTC time>.partial` and on disk before it takes its name: a
    backup killed half-way (a full disk, a reboot, Ctrl-C) never looks like one to restore from,
    which would bring back some databases and not the grievances."""
    storage = storage_paths(settings)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    folder = into / f"voxdesk-{stamp}"
    private_dir(into)
    if folder.exists():
        raise FileExistsError(errno.EEXIST, "an earlier backup is there", str(folder))
    under_way = os.open(into, os.O_RDONLY | os.O_DIRECTORY)
    try:
        swept = _sweep_cut_short(into, under_way)
        partial = into / f".voxdesk-{stamp}.partial"
        partial.mkdir(mode=0o700)  # never into another backup under way
        try:
            lines, versions = _copy_all(storage, partial)
            if lines:
                _write_manifest(partial, stamp, versions)
            for copied in partial.iterdir():
                fsync_path(copied)
            fsync_path(partial)
        except Exception:
            shutil.rmtree(partial, ignore_errors=True)  # a full disk is not to be kept full
            raise
        partial.rename(folder)
        fsync_path(into)
    finally:
        os.close(under_way)
    if lines:  # an empty backup (storage.dir set wrong, say) never takes a whole one's place
        lines += _prune(into, folder, settings.storage.keep_backups)
    return folder, swept + lines


CUT_SHORT = re.compile(r"\.voxdesk-[0-9]{8}T[0-9]{6}Z\.partial")


def _sweep_cut_short(into: Path, under_way: int) -> list[str]:
    """Remove the `.partial` folders of backups cut short (they hold players' data, and nothing
    else removes them), one line each, then hold `into` locked shared until this backup is done.

    Every backup holds that shared lock on the folder `into` (flock, which the kernel drops when
    a process dies however it dies): the exclusive lock is had only when no backup is under way
    there, and then every `.partial` is one cut short. With another under way, none is touched."""
    if not locked_now(under_way):
        fcntl.flock(under_way, fcntl.LOCK_SH)
        return []
    lines = []
    try:
        for left in sorted(p for p in into.iterdir() if CUT_SHORT.fullmatch(p.name)):
            try:
                shutil.rmtree(left)
            except OSError as exc:
                lines.append(f"{left.name}: a backup cut short, not removed: {exc.strerror or exc}")
                continue
            lines.append(f"{left.name}: removed, a backup cut short")
    finally:
        # Not atomic: another backup may sweep meanwhile, before this one has a folder to lose.
        fcntl.flock(under_way, fcntl.LOCK_SH)
    return lines


BACKUP_NAME = re.compile(r"voxdesk-[0-9]{8}T[0-9]{6}Z")


def _prune(into: Path, made: Path, keep: int) -> list[str]:
    """Remove `into`'s backups past the newest `keep` (`made` among them whatever its time says);
    one line per backup removed. Each is renamed out of the backups' names first: one removed in
    part (a kill, a file it cannot delete) is never taken for a whole one to restore from. An
    empty folder (a backup that found nothing to copy) is no backup to keep: counted, nightly
    ones from a wrong storage.dir would crowd out the whole ones."""
    if keep <= 0:
        return []
    older = sorted(
        (p for p in into.iterdir() if BACKUP_NAME.fullmatch(p.name) and p != made and _holds_files(p)),
        reverse=True,
    )
    lines = []
    for old in older[keep - 1 :]:
        try:
            going = into / f".{old.name}.removing"
            old.rename(going)
            shutil.rmtree(going)
        except OSError as exc:
            lines.append(f"{old.name}: not removed: {exc.strerror or exc}")
            continue
        lines.append(f"{old.name}: removed, older than the newest {keep} (storage.keep_backups)")
    for left in into.glob(".voxdesk-*.removing"):  # one an earlier run did not finish
        shutil.rmtree(left, ignore_errors=True)
    return lines


def _holds_files(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:  # one it cannot read is counted: better kept than removed unseen
        return True


def _copy_all(storage: StoragePaths, folder: Path) -> tuple[list[str], dict[str, int]]:
    """One line per file copied, and each database copied with its schema version."""
    lines, versions = [], {}
    # The spool first: a grievance the bot files from it meanwhile is then in the database's copy
    # (or in both, and filed once by its id); the other way round it could be in neither.
    spool = GrievanceSpool.beside(storage.grievances)
    for held in (spool.path, spool.rejected):
        if held.exists() and _copy_locked(held, folder / held.name):
            lines.append(f"{held.name}: copied (grievances not yet in the database)")
    for db in storage.databases:
        if db == storage.recent_claims:
            continue  # said after the copies: it alone does not make a backup that holds files
        if kept(db):
            try:
                versions[db.name] = _copy_database(db, folder / db.name)
            except NoRoom:
                raise
            except sqlite3.Error as exc:
                raise _unreadable(db, exc) from exc
            lines.append(f"{db.name}: copied")
    if lines and kept(storage.recent_claims):
        lines.append(f"{storage.recent_claims.name}: {NOT_COPIED}")
    if lines and (key := _safety_key(storage)) is not None:
        # Restored without it, every player would be named to OpenAI anew (a new key is made).
        _write_new(folder / key.name, key.read_bytes())
        lines.append(f"{key.name}: copied (the key players are named to OpenAI by)")
    return lines, versions


def _unreadable(db: Path, exc: sqlite3.Error) -> sqlite3.Error:
    """`exc` naming `db`, and why this user could not read it where that is the cause: SQLite's
    "attempt to write a readonly database" or "unable to open database file", from a backup,
    which only reads, says none."""
    if getattr(exc, "sqlite_errorname", "") not in ("SQLITE_READONLY_DIRECTORY", "SQLITE_CANTOPEN"):
        return naming(db, exc)
    if not os.access(db, os.R_OK):
        why = f"this user cannot read it{other_owner(str(db))}: run backup as the bot's user"
    elif mounted_read_only(db):  # which naming() says
        why = f"{_SHM}; back up where that file system is mounted read-write"
    elif not os.access(db.parent, os.W_OK):
        owner = other_owner(str(db.parent))
        why = f"{_SHM}; this user cannot write {db.parent}{owner}: run backup as the bot's user"
    else:
        return naming(db, exc)
    return type(exc)(f"{naming(db, exc, owner=False)}: {why}")


# A WAL database is read through its -shm file, made beside it when no connection has it open:
# the same backup works while the bot runs, and fails once it is stopped (as before an upgrade).
_SHM = "with no process holding it open, SQLite makes a -shm file beside a database to read it"


def _safety_key(storage: StoragePaths) -> Path | None:
    from bot.engines.openai import SAFETY_KEY_FILE

    key = storage.root / SAFETY_KEY_FILE
    return key if key.is_file() else None


# /grievance file's claims of the last RESUBMIT_SECONDS: restored, every one would be past that
# window, which a repeat ignores and the next claim drops; a folder restored without the file
# makes it anew, empty.
NOT_COPIED = f"not copied (claims of the last {RESUBMIT_SECONDS / 60:g} minutes, of no use once restored)"


MANIFEST = "voxdesk-backup.json"


def _write_manifest(folder: Path, stamp: str, versions: dict[str, int]) -> None:
    made = {
        "voxdesk": installed_version(),
        "made_at": stamp,
        "schema_versions": dict(sorted(versions.items())),
    }
    fd = os.open(folder / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        json.dump(made, out, indent=2)
        out.write("\n")


class NoRoom(sqlite3.OperationalError):
    """The disk a backup is written to is full: naming the database copied, SQLite's "disk I/O
    error" or "database or disk is full" would send staff to a storage folder that is whole."""


# Room a copy needs past its database's bytes: its -shm file (SQLite's first 32 KiB) and its -wal.
COPY_ROOM = 2**20


def _copy_database(source: Path, target: Path) -> int:
    """Copy `source` to `target`; the schema version of the copy, as the copy says it."""
    restore_from_log(source)  # opened as it is, SQLite would delete the log that holds its commits
    private_file(target)
    try:
        with (
            contextlib.closing(sqlite3.connect(source, timeout=BUSY_SECONDS)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
            (version,) = dst.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        # SQLite says neither which file failed nor, always, that a disk is full (a copy's -shm it
        # cannot grow is an I/O error): the copy's disk without room for it is the cause.
        size = source.stat().st_size
        if (free := shutil.disk_usage(target.parent).free) < size + COPY_ROOM:
            raise NoRoom(
                f"{target.parent.parent}: no room for a copy of {source.name} ({size // 1024} KB;"
                f" {free // 1024} KB free on that disk): {exc}"
            ) from exc
        raise
    return int(version)


def _copy_locked(source: Path, target: Path) -> bool:
    """The spool under its own lock, so a grievance being appended is copied whole or not at all;
    whether it held any. One that holds none (the bot empties it once it has filed every line)
    is not copied: the backup would say grievances wait in it."""
    with open(source, "rb") as src:
        fcntl.flock(src, fcntl.LOCK_SH)
        data = src.read()
    if not data.strip():
        return False
    _write_new(target, data)
    return True


def _write_new(target: Path, data: bytes) -> None:
    """`data` as a new file readable by its owner alone; an existing one is an error, not
    overwritten."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(data)
