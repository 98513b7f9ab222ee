"""What every voxdesk process does to its log: the bot's, and its speech workers'.

Our own lines never carry a secret, but a third party's text can: an OpenAI-compatible server
whose 401 echoes the key, a client library's exception. So the handlers (the root's, and
any other logger's there when voxdesk configures its log) mask every configured secret value in a
record's message, exception and stack text, whichever library's logger the record came from. A
logger's own filter would miss its children; a handler's sees every record it prints.

The same handlers keep a record's message on one line: a player's words, a web path or a
service's error quoted in it could otherwise start a line of their own (one `voxdesk refile`
would read as the grievance store's) or send a terminal escape codes. They keep each line they
write under journald's LineMax too (MAX_LINE_BYTES), and the grievance store's marks in its own
record alone (unmarked).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
from collections.abc import Iterable
from typing import TextIO

MASK = "***"
# Shorter values are masked only where they stand as a word of their own: a short password is
# still a secret, but masked wherever its letters appear it would mask them in every line.
MIN_SECRET_CHARS = 8
# Shorter still, not at all: as a word, "a" or "ab" would go from every line ("*** = *** at
# ***.example"), and no mask keeps a value guessed in a few thousand tries.
MIN_MASKED_CHARS = 3

# Loggers that say too much at INFO, which `run` logs. HTTP clients log every request's whole
# address (which may carry a proxy's user and password: openai.base_url =
# "https://user:pass@proxy/v1"), and their connection pools each connection's host at DEBUG;
# the openai SDK sends through httpx and httpcore, or, in its newer releases, httpx2 and
# httpcore2. faster-whisper logs a line for every note it hears.
QUIET_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "azure.core.pipeline.policies.http_logging_policy",
    "faster_whisper",
)

# Loggers whose DEBUG lines carry players' words or voice: aiosqlite's each SQL statement with
# its parameters (a grievance's words, a conversation), openai 1.x's each request's options (a
# turn's messages, a note's audio in base64), discord.py's gateway events whole and requests'
# payloads (messages, replies), jira's response bodies on a retry (grievances). `voxdesk -v run`
# raises voxdesk's own loggers alone, but an operator's logging configuration may set the root's
# level to DEBUG (and speech workers follow the root's): these stay at INFO then, as players'
# words belong in voxdesk's own DEBUG lines alone, whose places and one-line form are known. A
# level set on one of them by name is the operator asking for its lines, and is kept.
WORDY_LOGGERS = ("aiosqlite", "openai", "discord", "jira")

_values: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def mask_secrets(values: Iterable[str]) -> None:
    """Mask these values (besides those given before) in every line the masking handlers print.
    Values given before stay masked: a key replaced in the settings may still be in flight."""
    global _values, _pattern
    wanted = _values | {s for v in values if len(v) >= MIN_MASKED_CHARS for s in spellings(v)}
    if wanted == _values:
        return
    # Longest first: a secret that contains another is masked whole.
    alternatives = [
        re.escape(v) for v in sorted(wanted, key=lambda v: (-len(v), v)) if len(v) >= MIN_SECRET_CHARS
    ]
    if short := sorted((v for v in wanted if len(v) < MIN_SECRET_CHARS), key=lambda v: (-len(v), v)):
        # After every longer one, which is masked whole first where the two overlap.
        alternatives.append(rf"(?<!\w)(?:{'|'.join(map(re.escape, short))})(?!\w)")
    _values, _pattern = frozenset(wanted), re.compile("|".join(alternatives))


def spellings(value: str) -> set[str]:
    """`value` as written, and as a repr or JSON spells it inside a longer string: a password may
    hold a backslash, a quote or a control character, and a driver's error (a tuple of its words,
    printed as their repr) or a service's JSON body quoting it escapes them. Each also as the
    masking handlers print it (one_line spells a control character out before masking), and
    JSON's as a body written with ensure_ascii=False leaves what is past ASCII."""
    doubled = value.replace("\\", "\\\\")
    # A repr escapes each character as its own repr does, and its delimiting quote: an
    # apostrophe, when the string holds both quotes. A double quote it never escapes.
    in_repr = "".join(c if c in "'\"" else repr(c)[1:-1] for c in value)
    written = {
        value,
        doubled,
        doubled.replace("'", "\\'"),
        doubled.replace('"', '\\"'),
        in_repr,
        in_repr.replace("'", "\\'"),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    return written | {one_line(each) for each in written}


def masked_values() -> tuple[str, ...]:
    """The values masked so far, for a worker process to mask the same."""
    return tuple(sorted(_values))


# A Discord interaction's token in the addresses discord.py answers and follows it up at
# (/interactions/<id>/<token>/callback, /webhooks/<application id>/<token>/...), which its webhook
# adapter logs at DEBUG: for 15 minutes it posts, edits and deletes as the bot there.
_DISCORD_ROUTE_TOKEN = re.compile(r"(/(?:interactions|webhooks)/\d+/)[^/?#\s'\"]+")


def masked(text: str) -> str:
    """`text` with every secret value replaced by MASK: for what no masking handler prints (a
    command's own error line, `check`'s lines, an exception's traceback on stderr). An
    interaction's token in a Discord address too, though no setting holds it."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "/interactions/" in text or "/webhooks/" in text:
        text = _DISCORD_ROUTE_TOKEN.sub(rf"\g<1>{MASK}", text)
    return text


# Before the spool line of a grievance a process held in memory, the disk refusing it (logged as it
# is held, and again at a stop that could write it nowhere): the one copy a killed process leaves,
# or one a stop leaves, is in the log, off the storage folder, and
# `voxdesk refile` finds it there by this mark.
UNFILED = "UNFILED GRIEVANCE, re-file it with `voxdesk refile LOG`: "
# The mark of an older voxdesk (7de950c and before) on such a line, which names no filing id.
LOST_AT_SHUTDOWN = "grievance held in memory lost at shutdown: "
# Set (logging's extra=) on the grievance store's own record of such a line: the one record whose
# marks the masking handlers keep as they are.
STORE_LINE = "voxdesk_store_line"
_MARKS = re.compile(f"{re.escape(UNFILED)}|{re.escape(LOST_AT_SHUTDOWN)}")


def unmarked(text: str) -> str:
    """`text` with each of the grievance store's marks spelled with its first space as "\\x20".
    Wherever a reader cuts a line (a container runtime keeps one over 16 KiB as pieces, and
    Docker's non-blocking mode may drop the first, leaving the rest to stand as a line of its own),
    the rest holds no mark another record's words supplied, so `voxdesk refile` finds none to file
    in a name those words chose."""
    while _MARKS.search(text):
        text = _MARKS.sub(lambda mark: mark.group().replace(" ", "\\x20", 1), text)
    return text


# What a player's or a service's words may hold that a log reader takes for more than text: a line
# break (CR, LF, NEL, U+2028/2029, which journald, editors and `refile` split on) starts a line of
# their own making, such as a forged UNFILED grievance; ESC and the C1 controls (CSI) recolour or
# rewrite a terminal; bidi overrides reorder what a reader sees. Tab is left: it is only space.
_BUT_LF = "\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNPRINTABLE = re.compile(f"[\n{_BUT_LF}]")
# A formatted traceback's own line breaks are LF: all else is spelled out in it too.
_IN_TRACEBACK = re.compile(f"[{_BUT_LF}]")
# What a group's traceback prints before each line of a member's ("    | "), deeper for a group
# within it: textwrap.indent's, after every break str.splitlines finds.
_MARGIN = r"(?: *\| )?"


# journald keeps a line over LineMax (48K bytes by default) as several entries, and a reader of
# `journalctl -o cat` or a short format sees the rest as a line of its own, starting wherever the
# cut fell: in a player's words a DEBUG line quotes, which could be shaped as the grievance
# store's UNFILED line. No line a masking handler writes comes near it; the store's UNFILED line
# for the longest grievance (tests/test_logs.py sizes it) fits whole, prefix and all.
MAX_LINE_BYTES = 32 * 1024
_CUT_ROOM = 40  # for the marker, " … [cut N bytes]"
# A character written as at most this many bytes: UTF-8's four, or a lone surrogate spelled
# "\udc80" by a stream's backslashreplace.
_MAX_CHAR_BYTES = 6


def capped(text: str) -> str:
    """`text` (one line) cut at a character to at most MAX_LINE_BYTES bytes written, with a marker
    saying how many were cut."""
    if len(text) * _MAX_CHAR_BYTES <= MAX_LINE_BYTES:
        return text
    # As stderr writes a lone surrogate: spelled out, at six bytes.
    encoded = text.encode("utf-8", "backslashreplace")
    if len(encoded) <= MAX_LINE_BYTES:
        return text
    kept = encoded[: MAX_LINE_BYTES - _CUT_ROOM].decode("utf-8", "ignore")  # a split character goes
    return f"{kept} … [cut {len(encoded) - len(kept.encode())} bytes]"


def _capped_lines(text: str) -> str:
    return "\n".join(map(capped, text.split("\n")))


def _escape(match: re.Match[str]) -> str:
    return ascii(match.group())[1:-1]  # as repr() spells it: "\\n", "\\x1b", "\\u2028"


def one_line(text: str) -> str:
    """`text` with every character that could break or recolour a log line spelled as an escape."""
    return _UNPRINTABLE.sub(_escape, text)


def _exception_text(text: str, exc: BaseException | None) -> str:
    """A formatted traceback with each exception's own words (which may quote a player's) on one
    line, the traceback's own line breaks kept: those of its causes, its contexts and, in a group
    (asyncio.TaskGroup's), its members, however deep."""
    seen: set[int] = set()
    waiting = [exc]
    while waiting:
        exc = waiting.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        said = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
        if _UNPRINTABLE.search(said):
            # A group's member is printed behind a margin, put after each of its line breaks.
            shown = _MARGIN.join(map(re.escape, said.splitlines(keepends=True)))
            text = re.sub(shown, one_line(said).replace("\\", "\\\\"), text)
        waiting += [exc.__cause__, exc.__context__]
        if isinstance(exc, BaseExceptionGroup):
            waiting += exc.exceptions
    return _IN_TRACEBACK.sub(_escape, text)


class SecretMask(logging.Filter):
    """Replaces each secret value in a record with MASK, spells out what could break or recolour
    its line (one_line: a record's message is one line, its traceback's breaks its own) and cuts
    each of its lines to MAX_LINE_BYTES (capped); lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit: the handler reports that when it formats
            return True
        if getattr(record, STORE_LINE, False):
            # The store's line is the grievance itself, its one copy, which `voxdesk refile` files
            # as the player's words: a secret there is only a player's word (a short password is
            # an ordinary one, "summer"), as the grievances database holds it, and "***" filed in
            # its place would be words no player said.
            clean = capped(one_line(message))
        else:
            clean = capped(unmarked(masked(one_line(message))))
        if clean != message:
            record.msg, record.args = clean, None
        text = record.exc_text
        if record.exc_info and not text:
            text = _plain.formatException(record.exc_info)
        if text:
            exc = record.exc_info[1] if record.exc_info else None
            clean = _capped_lines(unmarked(masked(_exception_text(text, exc))))
            if clean != text:
                # Without exc_info, so a formatter that renders the exception afresh (discord.py's
                # does, in colour) prints the clean text. The stash outlives a formatter that
                # clears exc_text after printing, for the next handler.
                record.exc_info, record.exc_text = None, clean
                record.voxdesk_masked_exc_text = clean
        elif not record.exc_info and not text:
            record.exc_text = getattr(record, "voxdesk_masked_exc_text", None)
        if record.stack_info:
            record.stack_info = _capped_lines(unmarked(masked(record.stack_info)))
        return True


_plain = logging.Formatter()
SECRET_MASK = SecretMask()


def install_secret_mask(logger: logging.Logger | None = None) -> None:
    """Mask secrets in every handler any logger has now (or this logger has); call it again after
    adding one. Adding the same filter twice keeps one. Not the root's alone: a handler an
    operator's logging configuration gave a logger of voxdesk's or a library's sees each record
    before the root's handlers do, and would print it as logged, a player's line break and all."""
    if logger is not None:
        loggers = [logger]
    else:
        root = logging.getLogger()
        known = list(root.manager.loggerDict.values())  # a copy: another thread may add a logger
        loggers = [root, *(each for each in known if isinstance(each, logging.Logger))]
    for each in loggers:
        for handler in list(each.handlers):
            handler.addFilter(SECRET_MASK)


def quiet_noisy_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Only under a root below INFO: at INFO set on them, a root at WARNING (a one-shot command's
    # log) would let their INFO lines through.
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        return
    for name in WORDY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


class Outage:
    """A backend's outage as its log tells it: the first failure, and one for a new reason, at
    `level`; the same reason again at `quiet` (a long outage would fill the log with it); its end
    once, at INFO, as `recovery` (none if None). A backend asked on every retry or request would
    otherwise say the same thing hundreds of times an hour."""

    def __init__(
        self,
        log: logging.Logger,
        recovery: str | None = None,
        level: int = logging.WARNING,
        quiet: int = logging.DEBUG,
        beside: Outage | list[Outage] | None = None,
    ) -> None:
        self.log, self.recovery, self.level, self.quiet = log, recovery, level, quiet
        # Other views of the same backend (a list others may still join): what one of them said
        # is no news here either.
        self.beside = beside
        self.reason = ""  # the last failure's, while failing
        self.since: float | None = None  # time.monotonic() at the first failure
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.since is not None

    def seconds(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def failed(
        self,
        reason: str,
        msg: str,
        *args: object,
        level: int | None = None,
        exc_info: BaseException | bool | None = None,
    ) -> None:
        """Log a failure, `msg % args`: at `level` (this call's if given) if `reason` is news, then
        with `exc_info`'s traceback (as `logging` takes it); at `quiet` without one, which would
        otherwise print the same traceback every time."""
        news = not self.failing or reason != self.reason
        others = [self.beside] if isinstance(self.beside, Outage) else self.beside or []
        if news and any(o is not self and o.failing and o.reason == reason for o in others):
            news = False
        if self.since is None:
            self.since = time.monotonic()
        self.failures += 1
        self.reason = reason
        if news:
            self.log.log(level or self.level, msg, *args, exc_info=exc_info, stacklevel=2)
        else:
            self.log.log(self.quiet, msg, *args, stacklevel=2)

    def answered(self, *args: object) -> None:
        """The backend answers: the recovery line (`recovery % args`) if it was failing."""
        if self.since is None:
            return
        if self.recovery is not None:
            self.log.info(self.recovery, *args, stacklevel=2)
        self.reason, self.since, self.failures = "", None, 0


# discord.py's plain format, which `run` prints in (cogs/runner.py).
PLAIN_FORMAT = "[{asctime}] [{levelname:<8}] {name}: {message}"
# The host's local time with its offset: the hour a DST change repeats reads twice otherwise, and
# staff match a line to the desk's and the grievances' UTC times without knowing the host's zone.
PLAIN_DATES = "%Y-%m-%d %H:%M:%S%z"


def plain_formatter() -> logging.Formatter:
    return logging.Formatter(PLAIN_FORMAT, PLAIN_DATES, style="{")


def syslog_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    return 6 if levelno >= logging.INFO else 7


class JournalFormatter(logging.Formatter):
    """For a stderr that systemd's journal reads. Each line starts with its record's syslog
    priority ("<4>"), which the journal takes as the line's level: without it every line, an
    ERROR's too, is stored at the unit's default (info) and `journalctl -p warning` finds none.
    A traceback's lines carry it too, since the journal reads line by line. No time: the journal
    stamps each line itself."""

    def __init__(self) -> None:
        super().__init__("[{levelname:<8}] {name}: {message}", style="{")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return prefix + super().format(record).replace("\n", "\n" + prefix)


def journal_reads(stream: TextIO) -> bool:
    """Whether systemd's journal reads `stream`: systemd names the journal's socket, as
    device:inode, in JOURNAL_STREAM (also passed on to a child whose stderr went elsewhere,
    hence the comparison)."""
    wanted = os.environ.get("JOURNAL_STREAM")
    if not wanted:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file behind it (a test's buffer)
        return False
    return wanted == f"{st.st_dev}:{st.st_ino}"
