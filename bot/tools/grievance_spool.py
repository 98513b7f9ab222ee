"""Grievances the local database refused, kept on disk until it takes them.

One JSON line per grievance, each with an id of its own that the database keeps in a unique
column: filing is idempotent, so a crash between filing and emptying the spool, or two processes
filing at once (the bot and a one-shot `python -m bot ask` share var/), never files one twice.
An exclusive flock on the file orders appending and filing across processes, so a line appended
while another process files the spool waits for it and is not emptied away unread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from operator import eq, le
from pathlib import Path
from typing import Any

from bot.db import fsync_path, locked_now
from bot.logs import LOST_AT_SHUTDOWN, UNFILED

log = logging.getLogger(__name__)

FIELDS = ("user_id", "category", "description", "at", "state")
# Each line's format, as the SQLite stores keep a schema version: raised with any change a reader
# must know of (a field's meaning, one dropped). A line of a later format, left by a newer voxdesk
# (a downgrade, its spool restored here), is set aside with the torn ones, not filed on what its
# fields mean to this one. A line without one is of the first format, written before it was kept.
FORMAT = 1

# What may come before the mark on the grievance store's own line: a log format's prefix
# (bot/logs.py: the journal's, `run`'s plain or colour one, the CLI's), after what a reader
# adds in front (journalctl's time, host and unit; `docker logs -t`'s time; the "<3>" priority
# a file under systemd keeps), and nothing a message could supply.
_STORE_LOGGER = r"bot\.tools\.grievance_store"
_WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)?(?:[+-]\d{4})?"
_ISO = r"\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d)?"
# journalctl's short, short-precise, short-iso, short-full, short-monotonic, short-delta and
# short-unix times, a syslog file's.
_READ_AT = (
    rf"(?:[A-Z][a-z]{{2}} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?|[A-Z][a-z]{{2}} {_WHEN} [\w+:-]+"
    rf"|{_ISO}|\[ *\d+\.\d+(?: < *\d+\.\d+>)?\]|\d+\.\d+)"
)
_OWN_PREFIX = (
    r"(?:<\d>)?"
    rf"(?:(?:\[{_WHEN}\] )?\[[A-Z]+ *\] {_STORE_LOGGER}: |{_WHEN} [A-Z]+ +{_STORE_LOGGER} )"
)
_RECORD_START = re.compile(rf"(?:{_READ_AT} [^\s:]+ [\w.@-]+(?:\[\d+\])?: |{_ISO} )?{_OWN_PREFIX}")
# A journal entry's message (`journalctl -o json`) is the line as logged: the format's prefix
# alone, no reader's.
_JOURNAL_MESSAGE_START = re.compile(_OWN_PREFIX)
# Names of the program that logged a journal entry, which journald, systemd, docker or the
# program set (never the words logged): its SYSLOG_IDENTIFIER (the unit's SyslogIdentifier=, else
# the executable's name, as `voxdesk` or `python3`), else its command's name; or its unit or
# container named for voxdesk. `journalctl -o json` without -u holds every program's lines, and
# another's (a game server's chat) may be a player's words logged whole, shaped as the store's.
_OUR_PROGRAM = re.compile(r"voxdesk[\w.@-]*|python[\d.]*", re.IGNORECASE)
_OUR_PLACES = ("_SYSTEMD_UNIT", "_SYSTEMD_USER_UNIT", "CONTAINER_NAME")
# A line of JSON: no line of the bot's own log starts so, as each starts with its format's prefix
# and a player's words start none (bot/logs.py). A reader's (journalctl -o json; json-seq after
# an RS, json-sse after "data: ") or another program's.
_JSON_LINE = re.compile(r"(?:\x1e|data: )?\{")
# A journal entry's message that holds no mark as text and is worth reading all the same: bytes
# (journalctl's JSON for a message that is no UTF-8 text) or null (over 4096 bytes, left out).
_MESSAGE_NOT_TEXT = re.compile(r'"MESSAGE"\s*:\s*[\[n]')  # spaced too, as older journalctls print
_NO_PREFIX = re.compile("(?!)")
# A line of Docker's json-file log driver ({"log": ..., "stream": ..., "time": ...}, one object a
# line, in the order Docker writes its fields), which holds what the container wrote as it wrote
# it: the line as logged, no reader's prefix.
_DOCKER_LINE = re.compile(r'\{\s*"log"\s*:')
_DOCKER_FIELDS = frozenset({"log", "stream", "time", "attrs"})
# Where voxdesk's log handlers write. A container's stdout holds what else its process prints (a
# library's print()), whose words no handler keeps on one line.
_DOCKER_OURS = "stderr"
# Docker keeps a line over 16 KiB as several entries, each but the last without its newline. The
# grievance store's line is under MAX_LINE_BYTES (bot/logs.py): a line longer than this is none,
# and is not held whole in memory.
_DOCKER_LONGEST = 4 * 32 * 1024
# A line of a CRI runtime's container log (containerd's, CRI-O's: Kubernetes' and Podman's
# under it), `<RFC 3339 time> <stream> <P|F> <text>`: the container's line as it wrote it, no
# reader's prefix, a long one as several pieces, each but the last tagged P (partial), with
# the time it was read (not the line's first, as Docker's are).
_CRI_LINE = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) (stdout|stderr) ([PF]) (.*)\n?"
)
# The first line of each entry of a journalctl output that holds its entries' fields as text of
# its own, which is not the lines the bot logged: a grievance there is quoted in a field, and its
# entry's names are on other lines. Named by the option that prints it.
_UNREAD_FORMATS = (
    ("export", re.compile(r"__CURSOR=s=[\da-f]+;i=[\da-f]+;b=[\da-f]+;m=[\da-f]+;t=[\da-f]+;x=[\da-f]+\s*")),
    (
        "verbose",
        re.compile(
            r"[A-Z][a-z]{2} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+"
            r" \[s=[\da-f]+;i=[\da-f]+;b=[\da-f]+;m=[\da-f]+;t=[\da-f]+;x=[\da-f]+\]\s*"
        ),
    ),
    ("json-pretty", re.compile(r'\s+"__CURSOR"\s*:\s*"s=[\da-f]+;i=[\da-f]+;')),
)
# discord.py's colours, on a terminal's log copied to a file.
_COLOUR = re.compile(r"\x1b\[[\d;]*m")


class GrievanceSpool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected = path.with_name(path.name + ".rejected")
        # Torn lines .rejected refused (its file or folder unwritable), by the taken descriptor:
        # written back by finish(), so the grievances beside them are filed and emptied away.
        self._unset: dict[int, list[str]] = {}
        # Those already logged as refused, so a refiler's round every 30 s says nothing new.
        self._unset_said: set[str] = set()

    @classmethod
    def beside(cls, database: Path | str) -> GrievanceSpool:
        """The spool of the grievance database at `database`."""
        return cls(Path(f"{database}.spool.jsonl"))

    def keep(
        self, filing_id: str | None = None, *, wait: bool = True, others: list[str] | None = None, **row: str
    ) -> bool:
        """Append one grievance, on disk (fsynced) before returning; `filing_id` (else a fresh
        one) is what files it once. Blocking: run in a thread. With `wait` False, False at once
        when another holder has the lock, nothing written: on the event loop, the holder may be
        this process's own filing of the spool, which waits for that very loop. `others`: the
        filing ids other complaints of its run chose, kept with a grievance kept before it chose."""
        line = spool_line(filing_id or uuid.uuid4().hex, others, **row) + "\n"
        fd = _open_to_append(self.path)
        try:
            if wait:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process files the spool
            elif not locked_now(fd):
                return False
            size = os.fstat(fd).st_size
            if not size:
                # The file's name on disk before the first line in it: the keep that made the file
                # may have died (or found the disk full) before syncing its folder, and a keep
                # after that one finds a file it did not make.
                fsync_path(self.path.parent)
            elif os.pread(fd, 1, size - 1) != b"\n":
                # The last line was cut short (a crash, a full disk): end it, or this grievance
                # would be glued to it and set aside with it as unreadable.
                line = "\n" + line
            try:
                _write_all(fd, line.encode())
                os.fsync(fd)
            except OSError:
                # None of a line the disk took in part stays: set aside in .rejected, it would be
                # taken for a grievance's last copy, while the caller keeps this one whole (held in
                # memory, then here) and staff filing it by hand would file it twice.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)  # and with it the lock
        return True

    def waiting(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def lines(self) -> list[dict[str, Any]]:
        """The grievances waiting, read without the lock (a line being appended meanwhile is torn
        and skipped; take() sets torn lines aside). Blocking: run in a thread."""
        return _read_rows(self.path)[0]

    def contents(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The grievances waiting, and the lines that are none: those set aside in .rejected, then
        those torn in the spool and not set aside yet. Read under a shared lock, so a line being
        appended is read whole or not at all; it waits for a filing of the spool under way, so
        not for a process that may be filing it itself. Blocking: run in a thread."""
        rows, torn = _read_rows(self.path, shared=True)
        return rows, list(dict.fromkeys([*_read_lines(self.rejected, shared=True), *torn]))

    def take(self) -> tuple[int, list[dict[str, Any]]] | None:
        """Lock the spool and read its grievances: (the locked descriptor, rows), or None when it
        is empty or another process is filing it. Blocking: run in a thread."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            locked = locked_now(fd)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return None
        try:
            rows = self._read(fd)
        except BaseException:
            # Still locked, the descriptor would hold the lock for the life of the process: every
            # later keep() would wait for ever, and no take() would get the spool again.
            self._unset.pop(fd, None)
            os.close(fd)
            raise
        if not rows:
            if fd in self._unset:  # only lines .rejected refuses: left as they are
                self.release(fd)
            else:
                self.finish(fd)
            return None
        return fd, rows

    def _read(self, fd: int) -> list[dict[str, Any]]:
        rows, torn = _read_rows(fd)
        if torn:
            try:
                self._set_aside(torn)
            except OSError as exc:
                # Kept in the spool rather than lost, and in the log once: never a reason to leave
                # the grievances beside them unfiled.
                self._unset[fd] = torn
                for line in dict.fromkeys(torn):
                    if line not in self._unset_said:
                        self._unset_said.add(line)
                        log.error("unreadable line in %s left there, %s: %r", self.path, exc, line)
        return rows

    def _set_aside(self, torn: list[str]) -> None:
        # Lines cut short by a crash or a full disk: never a reason to stop. They stay in the spool
        # until it is filed and emptied, and while the database refuses it every retry reads them
        # again: each goes to .rejected once.
        kept = _open_to_append(self.rejected)
        with open(kept, "a+", encoding="utf-8") as out:  # a grievance's words: owner only
            out.seek(0)
            before = out.read()
            already = set(before.splitlines())
            new = [line for line in dict.fromkeys(torn) if line not in already]
            if not new:
                return
            if not before:
                # Its name on disk before finish() empties the spool (see keep()): whoever made
                # the file may have died before syncing its folder.
                fsync_path(self.rejected.parent)
            for line in new:
                log.error("unreadable line in %s moved to %s: %r", self.path, self.rejected, line)
            end = "\n" if before and not before.endswith("\n") else ""  # a copy the disk took in part
            out.write(end + "".join(line + "\n" for line in new))
            out.flush()
            # On disk before finish() empties the spool, which is synced: else a power cut could
            # leave a line in neither file.
            os.fsync(out.fileno())

    def finish(self, fd: int) -> None:
        """Empty the spool taken with `take`, its grievances filed, and let it go; torn lines
        .rejected refused stay. Written over the start before the rest is cut off: a crash between
        leaves lines filed already, which file nothing again, or a torn one, set aside."""
        left = self._unset.pop(fd, [])
        try:
            kept = "".join(line + "\n" for line in left).encode()
            view = memoryview(kept)
            while view:
                view = view[os.pwrite(fd, view, len(kept) - len(view)) :]
            os.ftruncate(fd, len(kept))
            os.fsync(fd)
        finally:
            os.close(fd)

    def release(self, fd: int) -> None:
        """Let the spool go unfiled, to be tried again."""
        self._unset.pop(fd, None)
        os.close(fd)


def spool_line(filing_id: str, others: list[str] | None = None, **row: str) -> str:
    """One grievance as a line of the spool (without its newline): ASCII, json.dumps escapes the
    rest."""
    kept: dict[str, Any] = {"id": filing_id, "format": FORMAT, **{f: row[f] for f in FIELDS}}
    if others:
        kept["others"] = others
    return json.dumps(kept)


class UnreadFormat(ValueError):
    """A log in a journalctl output format refile does not read; its argument names the format."""


def unfiled_in(
    lines: Iterable[str],
    passed_over: Callable[[str], None] | None = None,
    left_out: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The grievances logged as UNFILED in a log's lines, each once, and how many marked lines
    are none (cut, or mangled on their way to the log). Read a line at a time: a journal of
    months is gigabytes. The lines may be text (a log file, `journalctl -o cat`, any of its
    short formats) or `journalctl -o json` (json-seq, json-sse), whose entries' messages are read as the
    text lines they are. `passed_over` is called with each line that ends in a marked grievance but
    is not filed, as what comes before the mark is no prefix of the store's own line, or as it is
    a line of JSON that is no entry the bot's process logged to the journal, or the rest of a line
    of its the journal cut (_LINE_BREAK). Lines of Docker's json-file log driver are read as the
    lines the container wrote, its pieces of a long line joined, and so are the lines of a CRI
    runtime's container log (Kubernetes', Podman's: `<time> stderr F <text>`, P for a piece of
    a longer line): the store's line is filed from stderr alone, never from a stream's first
    line read (it may be the rest of one cut before), nor from pieces whose times say they are
    not one line's; those are passed over. `left_out` with each
    entry of the bot's process journalctl printed without its message (a field over 4096 bytes,
    without --all). Raises UnreadFormat at the first entry of journalctl's export, verbose or
    json-pretty output, rather than read on and find nothing."""
    found: dict[str, dict[str, Any]] = {}
    unreadable = 0

    def read(text: str, starts: re.Pattern[str], line: str) -> bool:
        """Files the store's line `text` holds; whether `line` was shown as passed over."""
        nonlocal unreadable
        mark = next((m for m in (UNFILED, LOST_AT_SHUTDOWN) if m in text), None)
        if mark is None:
            return False
        at = text.find(mark)
        rest = text[at + len(mark) :].strip()
        kept, more = _json_at_start(rest)
        if more:
            # The store's line is a record's whole message, which every log format ends a line
            # with. Text after it is another line quoting a player's words (a model's arguments
            # at DEBUG), which must not file a ticket in anyone's name.
            return False
        if not starts.fullmatch(_COLOUR.sub("", text[:at])):
            # The store's line is a record's whole message, so only a log format's own prefix
            # comes before the mark. Anything else is a line quoting words shaped like one (a
            # player's in a web path, a tool's error, a traceback): filing it would file a ticket
            # in whatever name the words chose. Yet it may be the store's line behind a prefix
            # of a reader this does not know (`docker compose logs`, a log shipper's), its last
            # copy: the caller says so rather than pass it over without a word.
            # So too a grievance quoted in JSON this cannot read (journalctl -o json-pretty's).
            if passed_over is not None and (isinstance(kept, dict) or rest.startswith('{\\"')):
                passed_over(line.rstrip("\r\n"))
                return True
            return False
        if mark is LOST_AT_SHUTDOWN and isinstance(kept, dict) and "id" not in kept:
            # An id of its words, so the log read again files it once.
            kept["id"] = hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:32]
        row = _valid(kept)
        if row is None:
            unreadable += 1
            return False
        found.setdefault(row["id"], row)
        return False

    # Each container stream's line so far (its pieces without an end: Docker's entries without a
    # newline, a CRI log's P lines), by log format and stream: its text (None for one longer than
    # any of the store's), its last piece's time, and whether its start is known. A stream not in
    # `started` has no line read to its end yet: its first piece may be the rest of a line whose
    # start is not in what is read (a file the runtime rotated in the middle of a line, a `tail`
    # of the file), starting wherever the runtime cut it, in words the line quotes; so that line
    # is shown, not filed.
    pieces: dict[tuple[str, str], tuple[str | None, Any, bool]] = {}
    started: set[tuple[str, str]] = set()

    def container_line(
        stream: tuple[str, str], piece: str, ends: bool, at: object, follows: Callable[[Any, Any], bool]
    ) -> None:
        """One piece of a container's line; `follows(last, at)`: whether a piece read at `at` may be
        the rest of one read at `last`."""
        so_far, last_at, whole = pieces.pop(stream, ("", at, stream in started))
        if not follows(last_at, at):
            # Not the rest of that line, which is lost (a piece the runtime dropped, files given
            # out of their order): where this one starts is not known either.
            _cut_short(so_far, passed_over)
            so_far, whole = "", False
        text = None if so_far is None or len(so_far) + len(piece) > _DOCKER_LONGEST else so_far + piece
        if not ends:
            pieces[stream] = (text, at, whole)
            return
        started.add(stream)
        if text is not None and (UNFILED in text or LOST_AT_SHUTDOWN in text):
            line = text.rstrip("\r\n")
            ours = whole and stream[1] == _DOCKER_OURS
            read(line, _JOURNAL_MESSAGE_START if ours else _NO_PREFIX, line)

    # The streams (_STREAM_ID) whose last entry journald ended mid-line (_LINE_BREAK: a line
    # over LineMax, or a NUL): the stream's next entry is the rest of that line, which starts
    # wherever the cut fell, in words the line quotes too.
    cut: set[str] = set()
    for line in lines:
        if _DOCKER_LINE.match(line):
            entry = _json_object(line)
            if entry is not None and _docker_entry(entry):
                piece = entry["log"]
                # Docker gives each entry of a line the time of its first.
                container_line(("docker", entry["stream"]), piece, piece.endswith("\n"), entry["time"], eq)
                continue
        cri = _CRI_LINE.fullmatch(line)
        if cri is not None and (at := _cri_time(*cri.group(1, 2, 3))) is not None:
            # Each piece is given the time it was read: a later piece is never earlier.
            container_line(("cri", cri[4]), cri[6], cri[5] == "F", at, le)
            continue
        if line.startswith(("_", " ", "\t", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")):
            for name, first in _UNREAD_FORMATS:
                if first.fullmatch(line) or (name == "json-pretty" and first.match(line)):
                    raise UnreadFormat(name)
        marked = UNFILED in line or LOST_AT_SHUTDOWN in line
        entry = None
        json_at = _JSON_LINE.match(line)
        if json_at and (marked or cut or "_LINE_BREAK" in line or _MESSAGE_NOT_TEXT.search(line)):
            entry = _json_object(line[json_at.end() - 1 :])
        if entry is None:
            if marked:
                read(line, _RECORD_START, line)
            continue
        stream, continued = entry.get("_STREAM_ID"), False
        if isinstance(stream, str):
            continued = stream in cut
            if entry.get("_LINE_BREAK") in (None, "eof"):  # eof: the stream ended there
                cut.discard(stream)
            else:
                cut.add(stream)
        message, ours = entry.get("MESSAGE"), _ours(entry)
        if isinstance(message, list) and all(type(b) is int and 0 <= b < 256 for b in message):
            message = bytes(message).decode("utf-8", errors="replace")
        if ours and isinstance(message, str):
            read(message, _NO_PREFIX if continued else _JOURNAL_MESSAGE_START, line)
        elif ours and message is None:
            if left_out is not None:
                left_out(line.rstrip("\r\n"))
        else:
            # Another program's entry, or JSON that is no journal's (a log shipper's, a chat
            # log's), whose fields a player's words may fill: shown, never filed.
            for text in _strings(entry):
                if read(text, _NO_PREFIX, line):
                    break  # once a line, however many fields hold a mark: refile counts each shown
    for text, _, _ in pieces.values():  # lines whose end is not in what is read (in the next file)
        _cut_short(text, passed_over)
    return list(found.values()), unreadable


def _cut_short(text: str | None, passed_over: Callable[[str], None] | None) -> None:
    """Show a Docker line whose rest is not read, if it holds a mark: the store's, its grievance
    cut short, may be one."""
    if text is not None and passed_over is not None and (UNFILED in text or LOST_AT_SHUTDOWN in text):
        passed_over(text)


def _cri_time(when: str, fraction: str | None, offset: str) -> int | None:
    """A CRI log line's time in nanoseconds since the epoch (None for no date), to order its
    pieces: its nine digits of fraction are more than datetime keeps."""
    try:
        seconds = datetime.fromisoformat(when + ("+00:00" if offset == "Z" else offset)).timestamp()
    except ValueError:
        return None
    return int(seconds) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def _docker_entry(entry: dict[str, Any]) -> bool:
    """Whether an object is a line of Docker's json-file log driver."""
    return (
        entry.keys() <= _DOCKER_FIELDS
        and isinstance(entry.get("log"), str)
        and entry.get("stream") in ("stdout", "stderr")
        and isinstance(entry.get("time"), str)
    )


def _json_object(text: str) -> dict[str, Any] | None:
    """The object `text` holds; None for text that holds none."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        return None
    return value if isinstance(value, dict) else None


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON value, however deep."""
    waiting = [value]
    while waiting:
        value = waiting.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            waiting += value.values()
        elif isinstance(value, list):
            waiting += value


def _ours(entry: dict[str, Any]) -> bool:
    """Whether an object is a journal entry the bot's process logged, by the names the journal
    keeps of its program (_OUR_PROGRAM); False for one journalctl did not print (without
    __REALTIME_TIMESTAMP, which it prints with every entry)."""
    if not isinstance(entry.get("__REALTIME_TIMESTAMP"), str):
        return False
    program = entry.get("SYSLOG_IDENTIFIER", entry.get("_COMM"))
    if isinstance(program, str) and _OUR_PROGRAM.fullmatch(program):
        return True
    return any(isinstance(entry.get(k), str) and "voxdesk" in entry[k].lower() for k in _OUR_PLACES)


def _json_at_start(rest: str) -> tuple[Any, bool]:
    """The JSON value `rest` starts with (None for none), and whether text follows it."""
    try:
        kept, end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None, False
    return kept, bool(rest[end:])


def _write_all(fd: int, data: bytes) -> None:
    # A nearly full disk may take part of a write: the rest is written or its error raised, so
    # a grievance is never reported kept while half of it is on disk.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_lines(source: Path | int, *, shared: bool = False) -> list[str]:
    """The lines of the spool or of .rejected, by path or by a descriptor that holds the lock;
    with `shared`, read under a shared lock, so a line being appended is read whole or not at
    all. keep() writes ASCII (json.dumps escapes the rest): a byte that is no UTF-8 is a line cut
    inside a character, read as a torn line (set aside like any), not a reason to stop filing."""
    try:
        with open(source, encoding="utf-8", errors="replace", closefd=not isinstance(source, int)) as f:
            if shared:
                fcntl.flock(f, fcntl.LOCK_SH)
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _read_rows(source: Path | int, *, shared: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The grievances in the spool, and its torn lines (any line not blank that is none)."""
    rows: list[dict[str, Any]] = []
    torn: list[str] = []
    for line in _read_lines(source, shared=shared):
        row = _parse(line)
        if row is not None:
            rows.append(row)
        elif line.strip():
            torn.append(line)
    return rows, torn


def _parse(line: str) -> dict[str, Any] | None:
    try:
        return _valid(json.loads(line))
    except ValueError:
        return None


def _valid(row: object) -> dict[str, Any] | None:
    """A spool line's record if it is one this voxdesk can file, else None."""
    if not isinstance(row, dict) or not all(isinstance(row.get(f), str) for f in ("id", *FIELDS)):
        return None
    known = row.get("format", 1)
    if type(known) is not int or known > FORMAT:
        return None
    return row


def _open_to_append(path: Path) -> int:
    """A descriptor appending to `path`, owner-only, made if missing."""
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
