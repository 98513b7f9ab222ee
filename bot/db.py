"""Opening the embedded SQLite databases the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import glob
import logging
import os
import shutil
import sqlite3
import stat
import struct
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

BUSY_SECONDS = 30


def private_dir(folder: Path) -> None:
    """Make `folder` (and its parents) if missing, a new one readable by its owner alone: the
    databases hold players' words, grievances and Discord ids."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def _user(uid: int) -> str:
    import pwd  # POSIX only, as file owners are

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def other_owner(filename: str) -> str:
    """' (<path> is owned by <user>, ...)' when another user than voxdesk's owns the file, or the
    nearest folder above it that can be looked at: `init` run as root, or as a person, before
    `run` as the service's user is the usual cause of a Permission denied."""
    if not hasattr(os, "geteuid"):
        return ""
    me = os.geteuid()
    for place in (Path(filename), *Path(filename).absolute().parents):
        try:
            owner = place.stat().st_uid
        except OSError:  # inside a folder closed to voxdesk: that folder is the one to name
            continue
        if owner == me:
            return ""
        # No chown suggested: the folder found may be a system one above a storage.dir not made yet.
        return f" ({place} is owned by {_user(owner)}, and voxdesk runs as {_user(me)})"
    return ""


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's list of names, to disk: a new file's name is in its folder,
    which a power cut can lose with the file in it unless the folder is synced too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # A file system that syncs no folder (some network and FUSE ones) keeps names as well as
        # it can; failing the write over it, as SQLite and PostgreSQL do not, would lose what the
        # write was keeping (a grievance in the spool).
        if exc.errno not in _NO_FOLDER_SYNC or not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise
    finally:
        os.close(fd)


# What fsync() on a folder says where the file system cannot sync one.
_NO_FOLDER_SYNC = {errno.EINVAL, errno.EBADF, errno.EISDIR, errno.ENOTSUP, errno.EOPNOTSUPP}


def partial_beside(path: Path) -> Path:
    """The name `path` is written under, whole, before it is renamed or linked into place: this
    process's own, so writers starting together never take each other's, and one a killed writer
    left is told by its process id (remove_partials). Made by `new_partial`, which holds it."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.partial")


def new_partial(path: Path, mode: int = 0o666) -> tuple[Path, int]:
    """A new `partial_beside` file for `path` and a descriptor writing it, held (`hold`) until
    closed. Another container's start may sweep it between its making and its lock (its process
    id means nothing there): then it is made again, rather than written whole under no name."""
    while True:
        partial = partial_beside(path)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            hold(fd)
            if _named(partial, fd):
                return partial, fd
        except BaseException:
            os.close(fd)
            partial.unlink(missing_ok=True)
            raise
        os.close(fd)


def _named(partial: Path, fd: int) -> bool:
    # By inode, not link count: NFS renames a file unlinked while open to a .nfs name of its own.
    try:
        return os.stat(partial).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def hold(fd: int) -> None:
    """Lock a `partial_beside` file being written: the kernel lets go when its writer dies, in
    whatever container, where a process id tells nothing of another pid namespace's."""
    with contextlib.suppress(OSError):  # no locks on this file system: its process id says
        fcntl.flock(fd, fcntl.LOCK_EX)


def remove_partials(folder: Path, names: Iterable[str]) -> None:
    """The files written for `names` in `folder` under a `partial_beside` name (or another
    `.<name>.<pid>.….partial`) whose writer is gone: killed (SIGKILL, the OOM killer, a power
    cut), it left them for good, each as large as the file it was writing, and a start killed over
    and over adds one each time. A running process's, or one held locked, is its writer's. One of
    this process's id is a killed one's whose id came round again (a container's process is pid 1
    each time): the caller writes none of its own meanwhile."""
    for name in names:
        for partial in folder.glob(f".{glob.escape(name)}.*.partial"):  # an export's name: any marks
            pid = partial.name[len(name) + 2 :].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and running(int(pid)):
                continue
            _remove_unless_held(partial)


def _remove_unless_held(partial: Path) -> None:
    try:
        # For writing: NFS locks (and so flocks) on its server, where an exclusive lock needs a
        # descriptor that may write; a read-only one gets EBADF, as if no locks were taken there.
        fd = os.open(partial, os.O_RDWR)
    except FileNotFoundError:
        return  # renamed into place meanwhile
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # Another user's (`init` run as root, killed), or a read-only mount: read-only, a lock
        # is still tried on a local disk, and the sweep goes on.
        try:
            fd = os.open(partial, os.O_RDONLY)
        except FileNotFoundError:
            return
    try:
        try:
            if not locked_now(fd):
                return
        except OSError:
            pass  # no locks on this file system: its process id has said
        # Removed under this lock: a writer that locks its file after it finds the name gone
        # (new_partial), where one locking between a let-go and the removal would write on.
        partial.unlink(missing_ok=True)
    finally:
        os.close(fd)


# What a non-blocking lock answers when another holds it: a flock EWOULDBLOCK, or EACCES on CIFS,
# which emulates flock with SMB byte-range locks; an fcntl record lock EAGAIN or EACCES, either of
# which POSIX allows. Not a permission problem: those are refused at open(), before any lock is tried.
LOCK_HELD = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


def locked_now(fd: int) -> bool:
    """Take the exclusive lock on `fd` without waiting: False when another holds it. Any other
    failure (no locks on this file system) is raised."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in LOCK_HELD:
            return False
        raise
    return True


def running(pid: int) -> bool:
    """Whether process `pid` is there, under any user, in this pid namespace."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


def private_file(path: Path | str) -> None:
    """Create a database file readable by its owner alone, if it does not exist yet. SQLite
    gives its -wal and -shm files the database's own mode; an existing file keeps its mode."""
    private_dir(Path(path).parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class NewerSchema(sqlite3.DatabaseError):
    """A database whose schema version is past the one this voxdesk knows."""


# What a newer schema's line tells to do, unless the file's store says otherwise.
UPGRADE = "upgrade voxdesk, or restore a backup this version made"


def newer_schema(path: Path | str, found: int, known: int, remedy: str = UPGRADE) -> NewerSchema | None:
    """The error for a database at schema version `found` when this voxdesk knows up to `known`:
    a newer voxdesk wrote it (a downgrade, or its backup restored here), and running on a schema
    this code does not know would fail in ways that name no cause, or change it past repair."""
    if found <= known:
        return None
    return NewerSchema(
        f"{path} was written by a newer voxdesk (schema version {found}, this one knows up to"
        f" {known}): {remedy}"
    )


def written_by_newer(path: Path | str, known: int, remedy: str = UPGRADE) -> None:
    """Raise `newer_schema`'s error for the database at `path`, read without writing to it (for
    `check`); a file that does not exist yet, or is empty with no log to fill it, is new."""
    file = Path(path)
    if no_database(file):
        return
    with readable(file) as read:
        try:
            conn = sqlite3.connect(read_only_uri(read), uri=True)
        except sqlite3.Error as exc:
            raise naming(path, exc) from exc
        with contextlib.closing(conn):
            refuse_newer(conn, path, known, remedy)


# A database whose every page is in its write-ahead log: a crash (a power cut) while it was being
# made, after the log was synced and before the file's first page was. SQLite takes a file of no
# bytes for a new database and deletes the log beside it on opening, read-only or not, and with
# it every commit (a grievance whose key a player heard); a file that is missing it makes anew,
# empty, and deletes the log the same way. The log's copy of the first page, put (back) in the
# file, makes SQLite read the rest from the log again.
WAL_MAGIC = (0x377F0682, 0x377F0683)
WAL_HEADER = 32
FRAME_HEADER = 24


class LogOnly(sqlite3.DatabaseError):
    """An empty or missing database file beside a write-ahead log that cannot be read back into it."""


def _log_of(file: Path) -> Path:
    return file.with_name(file.name + "-wal")


def only_in_log(file: Path) -> int:
    """The size of the write-ahead log beside `file` when `file` itself is empty or missing and the
    log may hold commits; 0 otherwise. A log of SQLite's in its first round (no checkpoint ever
    restarted it, so the file never held more than a header) with no commit SQLite would keep,
    its header alone or a first commit torn by a crash before it reached the disk, holds nothing:
    a new database, as SQLite reads it."""
    try:
        if file.stat().st_size:
            return 0
    except FileNotFoundError:
        pass
    try:
        with open(_log_of(file), "rb") as log:
            size = os.fstat(log.fileno()).st_size
            scan = _scan(log) if size else None
    except FileNotFoundError:
        return 0
    if scan is not None and scan.first_round and scan.first_page is None:
        return 0
    return size


class _Scan:
    """What SQLite would keep of a log: whether it is in its first round, and the first page as
    the first commit it keeps holding that page left it (None when it keeps no commit)."""

    def __init__(self, first_round: bool, first_page: bytes | None) -> None:
        self.first_round = first_round
        self.first_page = first_page


def _checksum(data: bytes, big_endian: bool, s1: int, s2: int) -> tuple[int, int]:
    """SQLite's WAL checksum of `data` (a multiple of 8 bytes) carried on from (s1, s2)."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for at in range(0, len(words), 2):
        s1 = (s1 + words[at] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[at + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def _scan(log: BinaryIO) -> _Scan | None:
    """Read the log a frame at a time as SQLite recovers it: a frame whose salts are not the
    header's (one of an earlier round) or whose cumulative checksum does not match (torn by a
    crash) ends it, and only frames up to the last commit frame before that end count. None when
    `log` is no log SQLite wrote, or its header is torn."""
    header = log.read(WAL_HEADER)
    if len(header) < WAL_HEADER:
        return None
    magic, _, page_size, round_, salts = *struct.unpack(">IIII", header[:16]), header[16:24]
    if magic not in WAL_MAGIC or page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return None
    big_endian = bool(magic & 1)  # the byte order of the machine that wrote the log
    sums = _checksum(header[:24], big_endian, 0, 0)
    if struct.pack(">II", *sums) != header[24:32]:
        return None
    first_page = None
    while len(frame := log.read(FRAME_HEADER + page_size)) == FRAME_HEADER + page_size:
        number, commit = struct.unpack(">II", frame[:8])
        if frame[8:16] != salts or not number:
            break
        sums = _checksum(frame[:8], big_endian, *sums)
        sums = _checksum(frame[FRAME_HEADER:], big_endian, *sums)
        if struct.pack(">II", *sums) != frame[16:24]:
            break
        if number == 1 and first_page is None:
            first_page = frame[FRAME_HEADER:]
        if commit and first_page is not None:
            # SQLite keeps this commit, whatever follows; it reads page 1 from the log after it.
            return _Scan(round_ == 0, first_page)
    return _Scan(round_ == 0, None)


def _restored_copy(file: Path, into: Path, missing: bool | None = None) -> tuple[Path, bytes]:
    """`file` as its log holds it, copied into folder `into` and checked by SQLite: the copy, and
    the first page that restores it. LogOnly, naming both files, when it cannot be (`missing`:
    whether `file` was found missing, when the caller has since made it)."""
    wal = _log_of(file)
    copy = into / file.name
    logged = copy.with_name(copy.name + "-wal")
    shutil.copyfile(wal, logged)  # the page comes from the copy: the same log, read a frame at a time
    missing = not file.exists() if missing is None else missing
    unreadable = LogOnly(
        f"{file} is {'missing' if missing else 'empty'} and {wal} holds {logged.stat().st_size} bytes"
        " SQLite cannot read back into it: keep both (SQLite deletes such a log on opening), move"
        " them out of the storage folder, and restore a backup or start with a new database"
    )
    with open(logged, "rb") as log:
        scan = _scan(log)
    if scan is None or scan.first_page is None:
        raise unreadable
    copy.write_bytes(scan.first_page)
    try:
        with contextlib.closing(sqlite3.connect(copy)) as conn:
            (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error:
        raise unreadable from None
    if verdict != "ok":
        raise unreadable
    return copy, scan.first_page


@contextlib.contextmanager
def readable(file: Path) -> Iterator[Path]:
    """`file`, or when its commits are only in its log, a restored copy outside the storage folder
    (gone on leaving): what reads it without writing reads the database, not an empty file."""
    if not only_in_log(file):
        yield file
        return
    with tempfile.TemporaryDirectory(prefix="voxdesk-") as folder:
        yield _restored_copy(file, Path(folder))[0]


def restore_from_log(file: Path) -> bool:
    """Put back the first page of a database whose commits are only in its log (see WAL_MAGIC),
    before anything opens it; whether it did. LogOnly when the log cannot restore it."""
    if not only_in_log(file):
        return False
    missing = not file.exists()
    fd = os.open(file, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        # Another voxdesk starting at once (`run` and `web`) waits here, then finds the file
        # restored: were it past the check while this one restored, opened and checkpointed the
        # database, it would put the log's first page over the newer one, or read a log that
        # process is writing.
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = only_in_log(file)
        if not size:
            return False
        try:
            with tempfile.TemporaryDirectory(prefix="voxdesk-") as folder:
                _, page = _restored_copy(file, Path(folder), missing)
        except LogOnly:
            if missing:  # left as it was found, for a human to judge
                file.unlink(missing_ok=True)
            raise
        os.write(fd, page)
        os.fsync(fd)
    finally:
        os.close(fd)
    if missing:
        fsync_path(file.parent)
    log.warning(
        "%s was %s beside its write-ahead log of %d bytes (a crash while it was made): restored"
        " from that log",
        file,
        "missing" if missing else "empty",
        size,
    )
    return True


def read_only_uri(file: Path) -> str:
    """The URI that reads the database at `file` leaving its folder as it was. A read-only
    connection to a WAL database leaves an empty -wal and a -shm beside it. With no -wal or
    -journal there, the file holds every commit and is read as it lies, unlocked; with one (a
    process writing, or one stopped uncleanly), it is read through SQLite's locks."""
    busy = any(file.with_name(file.name + end).exists() for end in ("-wal", "-journal"))
    return file.resolve().as_uri() + ("?mode=ro" if busy else "?mode=ro&immutable=1")


async def open_read_only(path: Path | str, version: int, empty_schema: str = "") -> aiosqlite.Connection:
    """A connection that only reads the database at `path`, for `check`: nothing is created,
    migrated or stamped, so a newer voxdesk's `check` run before an upgrade leaves the folder to
    the version still serving it. A database at a newer version is refused. No file there, or
    one of no bytes with no log to fill it (a store makes a new one there too): an empty
    database in memory, with `empty_schema`, as the store would make one."""
    file = Path(path)
    uri = await asyncio.to_thread(lambda: None if no_database(file) else read_only_uri(file))
    if uri is None:
        conn = await aiosqlite.connect(":memory:")
        if empty_schema:
            await conn.executescript(empty_schema)
    elif await asyncio.to_thread(only_in_log, file):
        conn = await _restored_in_memory(file)
    else:
        try:
            conn = await aiosqlite.connect(uri, uri=True, timeout=BUSY_SECONDS)
        except sqlite3.Error as exc:
            raise naming(path, exc) from exc
    conn.row_factory = aiosqlite.Row
    try:
        await _refuse_newer(conn, path, version)
    except BaseException as exc:
        await _give_up(conn, path, exc)
    return conn


async def _restored_in_memory(file: Path) -> aiosqlite.Connection:
    """The database whose commits are only in its log, restored into memory from a copy."""
    memory = await aiosqlite.connect(":memory:")
    try:
        with tempfile.TemporaryDirectory(prefix="voxdesk-") as folder:
            copy, _ = await asyncio.to_thread(_restored_copy, file, Path(folder))
            async with aiosqlite.connect(read_only_uri(copy), uri=True) as source:
                await source.backup(memory)
    except BaseException as exc:
        await _give_up(memory, file, exc)
    return memory


def no_database(file: Path) -> bool:
    """Whether `file` holds no database yet: missing, or of no bytes with no log to fill it (a
    store opened to write makes a new one there)."""
    return not only_in_log(file) and (not file.exists() or file.stat().st_size == 0)


def kept(file: Path) -> bool:
    """Whether there is a database at `file`: the file, or a log that holds it in its place."""
    return file.exists() or bool(only_in_log(file))


def refuse_newer(
    conn: sqlite3.Connection, path: Path | str, known: int, remedy: str = UPGRADE, remade: bool = False
) -> None:
    """Raise `newer_schema`'s error (or the read's, naming `path` as `naming` does, `remade` too)
    for the database open on `conn`."""
    try:
        (found,) = conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise naming(path, exc, remade=remade) from exc
    refused = newer_schema(path, found, known, remedy)
    if refused is not None:
        raise refused


async def open_sqlite(
    path: Path | str, schema: str = "", *, version: int, autocommit: bool = False, durable: bool = False
) -> aiosqlite.Connection:
    """A WAL-mode connection (readers never wait on the writer), with `schema` applied.
    `autocommit`: each statement commits by itself; transactions only where BEGIN opens one.
    `durable`: every commit is on disk before it returns, not only once the WAL is checkpointed.
    `version`: the schema version `schema` is (SQLite's user_version, 0 in a database made before
    voxdesk kept one); a database at a newer one is refused before anything is written to it."""
    async with opening(path, schema, version=version, autocommit=autocommit, durable=durable) as conn:
        pass  # created or migrated by `schema` alone: stamped on the way out
    return conn


async def stamp_version(conn: aiosqlite.Connection, version: int) -> None:
    """Record that the schema is now at `version`, once it has been created or migrated."""
    (found,) = first(await conn.execute_fetchall("PRAGMA user_version")) or (0,)
    if found < version:
        await conn.execute(f"PRAGMA user_version = {int(version)}")
        if conn.in_transaction:
            await conn.commit()


async def _refuse_newer(conn: aiosqlite.Connection, path: Path | str, known: int) -> None:
    """`refuse_newer` on an aiosqlite connection."""
    (found,) = first(await conn.execute_fetchall("PRAGMA user_version")) or (0,)
    refused = newer_schema(path, found, known)
    if refused is not None:
        raise refused


async def _open(
    path: Path | str, schema: str, autocommit: bool, durable: bool, version: int
) -> aiosqlite.Connection:
    await asyncio.to_thread(restore_from_log, Path(path))
    private_file(path)
    extra = {"isolation_level": None} if autocommit else {}
    # A writer waits up to BUSY_SECONDS for another's transaction (in aiosqlite's thread, not on
    # the event loop): on a saturated machine another process's short claim can take seconds to
    # finish, and giving up would drop a player's note.
    try:
        conn = await aiosqlite.connect(str(path), timeout=BUSY_SECONDS, **extra)
    except sqlite3.Error as exc:
        raise naming(path, exc) from exc
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
        await _refuse_newer(conn, path, version)  # before the switch to WAL, a write in rollback mode
        await _switch_to_wal(conn)
        # NORMAL survives a killed process but not a power cut or a kernel panic, which can take
        # the last seconds of commits with it. That is fine for history or usage; a grievance
        # whose key the player already heard is not to be lost, nor its key given to the next one.
        await conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        # What a store deletes (a /forget, words past their time) is overwritten, not left in the
        # file's free space for a file reader or the next backup: python.org's and uv's SQLite
        # leave it there by default, Debian's does not.
        await conn.execute("PRAGMA secure_delete = ON")
        if schema:
            await conn.executescript(schema)
            await conn.commit()
    except BaseException as exc:
        await _give_up(conn, path, exc)
    return conn


async def _give_up(conn: aiosqlite.Connection, path: Path | str, exc: BaseException) -> NoReturn:
    """Close a connection whose opening failed and raise why, naming the file. A damaged or
    read-only file, a newer schema, a cancel: aiosqlite's worker thread is no daemon, and left
    open it would keep the process from ever exiting. NewerSchema and LogOnly name their files."""
    await conn.close()
    if isinstance(exc, sqlite3.Error) and not isinstance(exc, NewerSchema | LogOnly):
        raise naming(path, exc) from exc
    raise exc


@contextlib.asynccontextmanager
async def opening(
    path: Path | str, schema: str, *, version: int, autocommit: bool = False, durable: bool = False
) -> AsyncIterator[aiosqlite.Connection]:
    """`open_sqlite` for a store's `open`, which has more to do (columns, indexes, pruning): if
    any of that fails (a database locked past BUSY_SECONDS) the connection is closed, or its
    worker thread would keep the process from exiting after the one-line error. The schema is
    stamped `version` once the block has migrated it without an error."""
    conn = await _open(path, schema, autocommit, durable, version)
    try:
        yield conn
        await stamp_version(conn, version)
    except sqlite3.Error as exc:
        await conn.close()
        raise naming(path, exc) from exc
    except BaseException:
        await conn.close()
        raise


@contextlib.asynccontextmanager
async def writing(conn: aiosqlite.Connection, lock: asyncio.Lock) -> AsyncIterator[aiosqlite.Connection]:
    """A store's write to `conn`, committed inside the block, under `lock` (the one every write of
    that store takes turns under). A write the database refuses (busy past BUSY_SECONDS, disk
    full, an I/O error) leaves open the transaction Python's sqlite3 began for it, or that BEGIN
    began: it would hold the database's write lock against every other process, keep this
    connection reading the database as it was at that moment, and have each later write here
    refused as busy, until a restart. Whatever the block leaves open when it fails (or is
    cancelled) is rolled back, before another write of the store can start: a rollback after the
    lock is let go would take that write's statements with it."""
    async with lock:
        try:
            yield conn
        except BaseException:
            await roll_back(conn)
            raise


async def roll_back(conn: aiosqlite.Connection) -> None:
    """Roll back what is open on `conn`, if anything. Shielded: a second cancel must not stop it,
    and aiosqlite still runs the statements already queued, so without it the next commit on the
    connection would commit half a write nobody was told of. A rollback the database refuses too
    (the connection is closed) leaves the error being raised the one to tell."""
    with contextlib.suppress(sqlite3.Error, ValueError):
        await asyncio.shield(conn.rollback())


def naming(path: Path | str, exc: sqlite3.Error, owner: bool = True, remade: bool = False) -> sqlite3.Error:
    """`exc` saying which file it is about: SQLite's own words ("file is not a database",
    "database is locked") do not, and the storage folder holds nine databases. On a file system
    mounted read-only it says so: SQLite's "unable to open database file" (no -shm can be made
    beside a WAL database there) names no cause, and the file's owner and mode are not it.
    Elsewhere a file SQLite may not open or write is said with its owner, when another user's
    (`other_owner`, unless `owner` is False): "attempt to write a readonly database" says nothing
    of the usual cause, an `init` run as root before `run` as the service's user. A damaged file,
    or a folder in the file's place, is said with the way back: a backup's copy of the file, or,
    for a file voxdesk makes anew and no backup holds (`remade`), moving it aside."""
    name = getattr(exc, "sqlite_errorname", "")
    if _a_folder(path):
        why = A_FOLDER_REMADE if remade else A_FOLDER
    elif name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        why = DAMAGED_REMADE if remade else DAMAGED
    elif mounted_read_only(path):
        why = READ_ONLY_MOUNT
    elif owner and name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
        why = other_owner(str(path))
    else:
        why = ""
    return type(exc)(f"{path}: {exc}{why}")


READ_ONLY_MOUNT = " (its file system is mounted read-only)"
# The file is left as found: what SQLite cannot read of it may still be recovered by hand, and a
# store made anew over it would take the lost rows' keys (GRV-15) for the next grievances.
DAMAGED = " (damaged: stop voxdesk, keep this file aside and restore it from a `voxdesk backup`)"
A_FOLDER = (
    " (a folder, where the database file belongs: move it aside, or restore the file from a `voxdesk backup`)"
)
# grievances-recent.db: no backup holds a copy (bot/backup.py), and its claims serve minutes only.
DAMAGED_REMADE = (
    " (damaged: stop voxdesk and move this file aside: no backup holds it, and voxdesk makes it anew)"
)
A_FOLDER_REMADE = (
    " (a folder, where the database file belongs: move it aside, and voxdesk makes the file anew)"
)


def _a_folder(path: Path | str) -> bool:
    """Whether `path` is a folder; False where it cannot be looked at (a folder above it closed to
    voxdesk), which `other_owner` names: Path.is_dir() raises Permission denied there."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def mounted_read_only(path: Path | str) -> bool:
    """Whether `path`, or the nearest folder above it that exists, is on a file system mounted
    read-only (a container's read-only volume or root)."""
    for place in (Path(path), *Path(path).absolute().parents):
        try:
            return bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        except OSError:
            continue
    return False


def prune_due(now: float, pruned_at: float, every: float) -> bool:
    """Whether a store pruned at `pruned_at` is to prune again at `now`, `every` seconds on. A last
    prune in the future is one before the clock was stepped back (NTP correcting a fast host): due
    at once, not only once the clock has caught up, hours or years later."""
    return not 0 <= now - pruned_at < every


def first(rows: Iterable[aiosqlite.Row]) -> aiosqlite.Row | None:
    """The first of a read's rows, or None. Reads on a connection that also writes fetch their
    rows in one step (`execute_fetchall`): a statement left open between awaits holds a read
    transaction, and a write queued meanwhile on the same connection then fails at once
    ("database is locked") while another process writes, instead of waiting its turn."""
    return next(iter(rows), None)


WAL_RETRY_SECONDS = 0.05
T = TypeVar("T")


async def while_locked(action: Callable[[], Awaitable[T]], seconds: float | None = None) -> T:
    """`action`, tried again while SQLite answers "database is locked" at once, without its busy
    wait, until BUSY_SECONDS (or `seconds`) have passed, like any other wait for a lock. It does so
    when a database not yet in WAL mode is switched while another process writes to it, and, now
    and then, to a write on a storage folder two bots share."""
    deadline = time.monotonic() + (BUSY_SECONDS if seconds is None else seconds)
    while True:
        try:
            return await action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(WAL_RETRY_SECONDS)


async def _switch_to_wal(conn: aiosqlite.Connection) -> None:
    # Two bots starting together on one storage folder would otherwise have one fail to start.
    await while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))


async def add_missing_columns(conn: aiosqlite.Connection, table: str, columns: dict[str, str]) -> None:
    """Databases made by an older version lack the newer columns (name -> its SQL definition);
    add them, keeping every row."""
    cursor = await conn.execute(f"PRAGMA table_info({table})")
    have = {row[1] for row in await cursor.fetchall()}
    for name, definition in columns.items():
        if name in have:
            continue
        try:
            await conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
            await conn.commit()
        except sqlite3.OperationalError as exc:  # another process added it a moment ago
            if "duplicate column" not in str(exc):
                raise
