"""`python -m bot ...` / `voxdesk ...`: the command-line front end over the same core."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import itertools
import json
import logging
import os
import select
import signal
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from bot import logs, paths
from bot.app import NotInitialised
from bot.audio import AudioError
from bot.config import ConfigError, Settings, check_port, load_settings, pasted_path
from bot.db import other_owner
from bot.engines.base import SpeechModelsUnavailable
from bot.entry import INTERRUPTED
from bot.tools.base import AioodbcUnlike

log = logging.getLogger("bot")

DEMO_USER = "111111111111111111"  # Nova, a linked demo player (bot/data/sql/sqlite/seed.sql)


def _complain(line: str) -> None:
    """A command's error line on stderr, where no log handler masks: an exception's text (a
    service's reply, a setting's address) may carry a secret. Each line is cut as the log's are
    (logs.capped): a journal reading stderr splits one over its LineMax, and what follows the cut
    (a log line refile shows, in words a player chose) reads as a line of its own."""
    print("\n".join(map(logs.capped, logs.masked(line).split("\n"))), file=sys.stderr)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_init(args: argparse.Namespace) -> int:
    from bot.seed import initialise

    for line in asyncio.run(initialise(_settings(args))):
        print(line)
    return 0


def _cannot_take_reply(folder: Path) -> tuple[str, int]:
    """Why `folder` cannot take the reply's file, and the status, or ("", 0). Asked before the
    turn: found after it, a complaint was perhaps filed, and the note asked again files it twice.
    A missing folder is not made here but where it would be made is tried: a turn that fails
    leaves no folder behind."""
    there = folder
    while not there.exists() and not there.is_symlink() and there.parent != there:
        there = there.parent
    if not there.is_dir():
        if there != folder:  # a file where one of its parents would be
            return f"{folder}: Not a directory", 4
        what = "a file" if there.is_file() else "no folder"
        # The caller's mistake, as a folder given for NOTE is: a wrong argument.
        return f"{folder} is {what}: --out names the folder the reply goes in", 2
    try:
        with tempfile.TemporaryFile(dir=there):  # a file made there and gone: a read-only mount too
            pass
    except OSError as exc:  # named after the folder, not the temporary file's name
        return _why(exc, str(there)), 4
    return "", 0


def _why(exc: OSError, filename: str) -> str:
    owner = other_owner(filename) if isinstance(exc, PermissionError) else ""
    return f"{filename}: {exc.strerror or exc}{owner}"


def _reply_name(note: str, n: int = 1) -> str:
    return Path(note).stem + ("-reply.ogg" if n == 1 else f"-reply-{n}.ogg")


def _write_reply(folder: Path, note: str, ogg: bytes) -> Path:
    """The reply's file in `folder`, made now if missing: `<note>-reply.ogg`, or where something
    has that name (an earlier reply, asked again to compare), the first free `<note>-reply-2.ogg`,
    `-3`…; never written over, as a player's earlier answer may be the one kept."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = folder / _reply_name(note, n)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        with open(fd, "wb") as out:
            out.write(ogg)
        return path
    raise AssertionError("unreachable")


def cmd_ask(args: argparse.Namespace) -> int:
    from bot.app import running_app
    from bot.tools.base import ToolContext

    settings = _settings(args)
    if Path(args.file).is_dir():  # the OS's "Is a directory" says not what to give instead
        _complain(
            f"ask: {args.file} is a folder: NOTE names one audio file (demo --samples DIR answers a folder's)"
        )
        return 2  # a wrong argument, as demo's --samples naming a file is
    data = Path(args.file).read_bytes()
    problem, status = _cannot_take_reply(Path(args.out)) if args.out else ("", 0)
    if problem:
        _complain(f"ask: {problem}; the note was not asked")
        return status

    refused: list[dict[str, str]] = []

    async def ask() -> dict[str, object]:
        # Private: the answer is printed for whoever runs this, who reads the databases anyway.
        async with running_app(settings, one_shot=True) as app:
            reply = await app.agent.respond(
                ToolContext(user_id=args.user, platform="cli", private=True), data, args.voice
            )
            refused.extend(app.grievances.local_store.refused)  # type: ignore[attr-defined]
        audio_path = None
        if reply.audio is not None:
            out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="voxdesk-"))
            audio_path = _write_reply(out_dir, args.file, reply.audio.ogg)
        return {
            "user_text": reply.user_text,
            "reply_text": reply.text,
            "tool_calls": reply.tool_calls,
            "reply_audio": str(audio_path) if audio_path else None,
            "engine": reply.engine,
            "timings_ms": reply.timings_ms,
        }

    result = asyncio.run(ask())
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"heard:  {result['user_text'] or '(not transcribed)'}")
        for call in result["tool_calls"]:  # type: ignore[attr-defined]
            print(f"tool:   {call['name']} {json.dumps(call['arguments'])}")
        print(f"reply:  {result['reply_text']}")
        audio = result["reply_audio"]
        taken = (
            f" ({_reply_name(args.file)} was there already)"
            if audio and Path(audio).name != _reply_name(args.file)
            else ""
        )
        print(f"audio:  {audio}{taken}")
        print(f"engine: {result['engine']}")
    if refused:
        # The note is still there to ask again: nothing kept a copy that would file it twice.
        again = "; ask this note again once the disk takes writes"
        _say_not_filed(settings, refused, "ask: the complaint", again)
        return 4
    return 0


def _say_not_filed(settings: Settings, refused: list[dict[str, str]], which: str, again: str = "") -> None:
    """The complaints a one-shot command's grievances.db and spool both refused (running_app's
    one_shot), on stderr with their words: no process is left to file them."""
    from bot.app import storage_paths

    db = storage_paths(settings).grievances
    for row in refused:
        _complain(
            f"{which} was NOT filed: {db} and its spool refused it{again};"
            f" its words ({row['category']}): {row['description']}"
        )


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.app import running_app
    from bot.tools.base import ToolContext

    settings = _settings(args)
    samples = sorted(Path(args.samples).glob("*.ogg"))
    if not samples:  # a wrong argument (status 2), as a `player` id that is no Discord id
        folder = Path(args.samples)
        _complain(
            f"demo: no .ogg samples in {folder}: --samples names a folder of .ogg voice notes"
            if folder.is_dir()
            else f"demo: {folder} is no folder: --samples names a folder of .ogg voice notes"
        )
        return 2

    refused: dict[str, list[dict[str, str]]] = {}  # by note

    async def demo() -> list[tuple[str, str, str, str, str]]:
        rows = []
        # One-shot as `ask`: a complaint the disk refuses is said not filed, not held for a
        # process about to end.
        async with running_app(settings, one_shot=True) as app:
            store = app.grievances.local_store  # type: ignore[attr-defined]
            for path in samples:
                ctx = ToolContext(user_id=args.user, platform="cli", private=True)
                try:
                    reply = await app.agent.respond(ctx, path.read_bytes())
                except AudioError as exc:
                    rows.append((path.name, "-", "-", f"(bad audio) {exc}", "-"))
                    continue
                finally:
                    if store.refused:
                        refused[path.name] = list(store.refused)
                        store.refused.clear()
                tools = ", ".join(c["name"] for c in reply.tool_calls) or "-"
                rows.append((path.name, reply.user_text or "?", tools, reply.text, reply.engine))
        return rows

    rows = asyncio.run(demo())
    print(f"demo player {args.user}, engine {settings.agent.engine}\n")
    for name, heard, tools, answer, engine in rows:
        print(f"note:   {name}")
        print(f"heard:  {heard}")
        print(f"tool:   {tools}")
        print(f"answer: {answer}")
        print(f"engine: {engine}")
        print()
    for name, rows_refused in refused.items():
        _say_not_filed(settings, rows_refused, f"demo: the complaint of {name}")
    return 4 if refused else 0


def cmd_eval(args: argparse.Namespace) -> int:
    # Imported here: the lab (bot/lab/) is never loaded by the commands that serve players.
    from bot.lab.evaluation import DEFAULT_SPLITS, POCKETSPHINX, WHISPER, run_eval

    if args.as_text and (args.recognizer or args.human or args.misses):
        _complain("eval: --as-text routes the questions' words: no recogniser, human clips or misses")
        return 2
    splits = tuple(args.split) if args.split else DEFAULT_SPLITS
    recognizers = {"both": (POCKETSPHINX, WHISPER), None: ()}.get(args.recognizer, (args.recognizer,))
    text = asyncio.run(
        run_eval(
            _settings(args),
            splits,
            verbose=args.misses,
            recognizers=recognizers,
            human=args.human,
            as_json=args.json,
            words_only=args.as_text,
        )
    )
    print(text)
    return 0


class _EvalSplits:
    """The evaluation's split names for `eval --split`, read from the lab only when a name is
    checked (or listed after a wrong one), so building the parser for `run` or `ask` does not
    load bot.lab."""

    def _names(self) -> tuple[str, ...]:
        from bot.lab.evaluation import EVERY_SPLIT

        return EVERY_SPLIT

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def cmd_check(args: argparse.Namespace) -> int:
    from bot.health import check_all

    settings = _settings(args)
    if said := _storage_in_a_file(settings.storage_dir):
        # As every other command refuses it: each line's own "players.db: Not a directory" named
        # neither the setting nor what to mend.
        _complain(said)
        return 2
    print(settings.whereabouts())
    results = asyncio.run(check_all(settings, for_run=args.run))
    for result in results:
        print(result.line())
    return 0 if all(r.ok for r in results) else 1


def cmd_backup(args: argparse.Namespace) -> int:
    from bot.app import storage_paths
    from bot.backup import MANIFEST, backup
    from bot.db import kept
    from bot.tools.grievance_spool import GrievanceSpool

    settings = _settings(args)
    into, storage = Path(args.into).resolve(), settings.storage_dir.resolve()
    if not storage.exists():
        # Said before DIR is touched: a nightly job from the wrong folder, or with another
        # storage.dir than the bot's, would otherwise keep empty backups and exit 0.
        _complain(f"backup: {_not_the_storage(storage)} nothing was copied")
        return 2
    if into.is_relative_to(storage):  # lost with the folder it is meant to bring back
        _complain(f"backup: {args.into} is inside the storage folder {storage}: give a folder elsewhere")
        return 2
    if into.exists() and not into.is_dir():  # OSError's own words, "File exists", say nothing of it
        _complain(f"backup: {args.into} is a file: DIR names the folder the backups go in")
        return 2  # a wrong argument, as demo's --samples naming a file is
    found = storage_paths(settings)
    spool = GrievanceSpool.beside(found.grievances)
    # The spool too: grievances the database refused, kept where that database was lost.
    if not any(kept(db) for db in found.databases) and not any(
        held.exists() for held in (spool.path, spool.rejected)
    ):
        if any(storage.iterdir()):  # the bot's `init` makes its databases before anything else
            _complain(f"backup: {_not_the_storage(storage)} nothing was copied")
            return 2
        # Status 1, as `check` fails a service: no setting is known to be wrong (a fresh install
        # not yet through `init`), yet nothing is kept, which a scheduled backup must not hide.
        _complain(
            f"backup: nothing to copy yet; the storage folder {storage} is empty (`voxdesk init` fills it)"
        )
        return 1
    if into.is_dir():
        try:
            with tempfile.TemporaryFile(dir=into):  # found making it, the hidden .partial is named
                pass
        except OSError as exc:
            _complain(f"backup: {_why(exc, str(into))}; nothing was copied")
            return 4
    try:
        folder, lines = backup(settings, Path(args.into))
    except sqlite3.Error as exc:  # the source or the copy: the message names which file
        _complain(f"backup: failed, nothing kept: {exc}")
        return 4
    for line in lines:
        print(line)
    if not (folder / MANIFEST).exists():  # a storage folder emptied meanwhile, say
        _complain(f"backup: nothing to copy yet; {folder} is empty")
        return 1
    print(f"backup: {folder}")
    return 0


def _export_refused(out: Path, user_id: str) -> str:
    """Why `--out` cannot be the new file an export is written to, or "": said before a player's
    data is read, in words that say what to give instead (the OSError's own say "File exists")."""
    if out.is_dir():
        return (
            f"{out} is a folder: --out names the new file the export is written to,"
            f" such as {out / (user_id + '.json')}"
        )
    if out.exists() or out.is_symlink():
        return _written_over(out)
    if not out.parent.is_dir():
        return f"{out.parent} is no folder: make it first, or give a file in one that is"
    try:
        with tempfile.TemporaryFile(dir=out.parent):  # found writing it, the hidden .partial is named
            pass
    except OSError as exc:
        return _why(exc, str(out.parent))
    return ""


def _written_over(out: Path) -> str:
    return (
        f"{out} exists, and an export never overwrites a file: give a new file's name, or move"
        " that one away first"
    )


def _not_the_storage(storage: Path) -> str:
    """Why `storage`, holding none of voxdesk's databases, is taken for a storage.dir set wrong:
    said alike by every command that refuses it."""
    if not storage.exists():
        return f"storage.dir {storage} does not exist: is storage.dir the bot's storage folder?"
    return f"{storage} holds none of voxdesk's databases: is storage.dir the bot's storage folder?"


def cmd_player(args: argparse.Namespace) -> int:
    from bot import player_data
    from bot.app import storage_paths
    from bot.db import kept

    storage = storage_paths(_settings(args))
    try:
        # The id first: the refusal of a folder as --out suggests a file named after it.
        player_data.checked(args.user_id)
        if args.out and args.action == "forget":  # taken for a record of the erasure, none is made
            _complain("player forget: --out is for export; forget writes no file, it prints what it erased")
            return 2
        if not any(kept(db) for db in storage.databases):
            # A storage.dir set wrong: "0 erased" in every database would read as the player
            # forgotten, and an export of nothing as a player of whom nothing is kept.
            _complain(f"player {args.action}: {_not_the_storage(storage.root)}")
            return 2
        if (
            args.action == "export"
            and args.out
            and (refused := _export_refused(Path(args.out), args.user_id))
        ):
            _complain(f"player export: {refused}")
            # A folder given for the file is a wrong argument; a file there already, or a folder
            # that cannot take it, one that cannot be used.
            return 2 if Path(args.out).is_dir() else 4
        exported = player_data.export(storage, args.user_id)
        if args.action == "export":
            text = json.dumps(exported, indent=2, default=str)
            if args.out:
                try:
                    player_data.write_private(Path(args.out), text + "\n")
                except FileExistsError:  # made meanwhile: by another export, say
                    _complain(f"player export: {_written_over(Path(args.out))}")
                    return 4
                print(f"player {args.user_id}: written to {args.out}")
            else:
                print(text)
        else:
            for line in player_data.forget(storage, args.user_id):
                print(line)
            print(player_data.FORGET_NOTE)
        if player_data.nothing_kept(exported):
            # Said, not refused: an export of nothing is the true answer to a request, and tests
            # and fakes use short ids. But a mistyped id read as a player of whom nothing is kept,
            # and "0 erased" in every database as a player forgotten.
            _complain(f"player {args.action}: {player_data.unknown(args.user_id, storage)}")
    except player_data.NotAPlayerId as exc:
        _complain(f"player {args.action}: {exc}")
        return 2
    return 0


# Marked lines refile passes over that it shows whole; the count says how many there were.
PASSED_OVER_SHOWN = 5


def cmd_refile(args: argparse.Namespace) -> int:
    from bot.app import storage_paths
    from bot.db import kept
    from bot.schemas import refuse_newer_databases
    from bot.tools.grievance_spool import FIELDS, GrievanceSpool, UnreadFormat, unfiled_in
    from bot.tools.grievance_store import LocalGrievanceStore

    reading = ""

    def lines() -> Iterator[str]:
        nonlocal reading
        for name in args.logs or ["-"]:
            reading = "stdin" if name == "-" else name
            if name == "-":
                if sys.stdin.isatty():  # run by hand with no log named: say what it waits for
                    _complain("refile: reading stdin, as in: journalctl -u voxdesk -o cat | voxdesk refile")
                # As a named log is read: a line cut inside a character (journald's LineMax) must
                # not stop the grievances after it, whatever the locale made of stdin.
                log = open(
                    sys.stdin.fileno(), encoding="utf-8", errors="replace", newline="\n", closefd=False
                )
            else:
                log = open(name, encoding="utf-8", errors="replace", newline="\n")
            with log:
                # A line ends at "\n" alone, as journald, Docker and the log handlers end one: a
                # "\r" in what a library printed (no handler's record) starts no line of its own,
                # where words after it could be shaped as the store's line.
                for line in log:
                    yield line[:-2] + "\n" if line.endswith("\r\n") else line

    storage = storage_paths(_settings(args))
    if folders := [name for name in args.logs if name != "-" and Path(name).is_dir()]:
        # Said before any log is read: the OS's "Is a directory" came after the logs before it.
        _complain(f"refile: {folders[0]} is a folder: LOG names a log file, or - for stdin")
        return 2  # a wrong argument, as demo's --samples naming a file is
    path = storage.grievances
    if not kept(path):
        # The bot made it when it started: without it this is not its storage folder, and a
        # database made here would hold grievances no bot reads. Said before a journal is read.
        raise NotInitialised(f"{path} does not exist: is storage.dir the bot's storage folder?")
    # Before a line is kept in its spool: the newer voxdesk that wrote it is the one to refile.
    refuse_newer_databases(storage, ["grievances"])
    passed_over: list[str] = []  # the first PASSED_OVER_SHOWN, to show
    how_many = 0

    def pass_over(line: str) -> None:
        nonlocal how_many
        how_many += 1
        if len(passed_over) < PASSED_OVER_SHOWN:
            passed_over.append(line)

    left_out = 0

    def leave_out(entry: str) -> None:  # counted, not shown: the entry holds no line to show
        nonlocal left_out
        left_out += 1

    try:
        rows, unreadable = unfiled_in(lines(), pass_over, leave_out)
    except UnreadFormat as exc:
        _complain(
            f"refile: {reading} is journalctl's -o {exc} output, which refile does not read; nothing"
            f" was filed: give it -o cat, short (and its variants), json, json-seq or json-sse, as"
            f" in: journalctl -u voxdesk -o json --all | voxdesk refile"
        )
        return 2
    spool = GrievanceSpool.beside(path)
    for row in rows:
        # Each under its own filing id: a line re-filed twice (the log read again) files once.
        spool.keep(row["id"], others=row.get("others"), **{f: row[f] for f in FIELDS})

    async def file() -> int:
        store = await LocalGrievanceStore.open(path)  # files the spool
        try:
            return await store.count_unfiled()
        finally:
            await store.aclose()

    waiting = asyncio.run(file()) if rows else 0
    print(f"refile: {len(rows)} unfiled grievance(s) found, kept in {spool.path}")
    if rows:
        print(
            f"refile: {waiting} still waiting there (the bot files them at its next grievance or start)"
            if waiting
            else "refile: filed; ticket news tells each player the key of theirs"
        )
    # The store's line keeps a secret as the player's word it is (bot/logs.py), but an older
    # voxdesk's log masked it there too: "***" for a password that is an ordinary word. Filed all
    # the same (the rest is the player's), and named, as a player may write "***" as well.
    if starred := [row["id"] for row in rows if any(logs.MASK in row[f] for f in FIELDS)]:
        more = ", ..." if len(starred) > PASSED_OVER_SHOWN else ""
        _complain(
            f"refile: {len(starred)} grievance(s) filed with {logs.MASK} in their words"
            f" ({', '.join(starred[:PASSED_OVER_SHOWN])}{more}): an older voxdesk's log masked a"
            " word of the player's there that was also a secret (a password that is an ordinary"
            " word), or the player wrote it; check each with its player"
        )
    for line in passed_over:
        # Spelled out: the log's colours, or a player's escape codes, stay off the terminal.
        _complain(f"refile: not filed: {logs.one_line(line)}")
    if passed_over:
        # A prefix refile does not know may stand before the store's own line (its last copy), as
        # a player's words may copy one inside another record: staff look, it files neither.
        _complain(
            f"refile: {how_many} marked line(s) not filed: the grievance store's line comes"
            " first in its log record, after a reader's time, host and unit; read the log without"
            " another prefix (journalctl -o cat, docker compose logs --no-log-prefix) or, for JSON,"
            " as voxdesk's journal entries (journalctl -u voxdesk -o json --all) or as its"
            " container's json-file log with the files Docker rotated before it, oldest first"
            " (ID-json.log.1 ID-json.log), as a pod's log file the same way (0.log.DATE 0.log,"
            " gunzipped), or file a line the store did log by hand (one inside another record is"
            " words that copy it)"
        )
    if left_out:
        _complain(
            f"refile: {left_out} journal entry(s) of voxdesk's without a message (journalctl's JSON"
            " leaves out a field over 4096 bytes), and a grievance may be one: read the journal"
            " with -o json --all"
        )
    if unreadable:
        _complain(
            f"refile: {unreadable} marked line(s) could not be read: copy each grievance from the log by hand"
        )
    return 1 if unreadable or how_many or left_out or starred else 0


def cmd_index_manuals(args: argparse.Namespace) -> int:
    from bot.tools.azure_manuals import SearchServiceError, index_manuals
    from bot.tools.manual_chunks import chunk_manuals

    settings = _settings(args)
    if not settings.search.endpoint:
        raise ConfigError("search.endpoint is empty: set it to https://<service>.search.windows.net")
    # Run before tools.manuals is switched to azure, so load_settings has not looked at it.
    if problems := pasted_path(settings.search.endpoint, "search.endpoint", "indexes", "search.index"):
        raise ConfigError(problems[0])
    if settings.search.auth == "key" and not settings.secrets.azure_search_api_key:
        raise ConfigError("AZURE_SEARCH_API_KEY is not set: set an admin key in the environment or .env")
    key = settings.secrets.azure_search_api_key
    manuals = Path(args.manuals) if args.manuals else settings.manuals_dir
    if not chunk_manuals(manuals):  # a wrong argument or setting, as `init` refuses the setting
        if not args.manuals:
            raise ConfigError(f"storage.manuals_dir {manuals} holds no manuals: fix the setting")
        # In demo's words for its --samples: a path that is no folder is said to be none.
        _complain(
            f"index-manuals: no manuals (*.md) with sections found in {manuals}: --manuals names a"
            " folder of *.md manuals"
            if manuals.is_dir()
            else f"index-manuals: {manuals} is no folder: --manuals names a folder of *.md manuals"
        )
        return 2
    try:
        print(asyncio.run(index_manuals(settings.search, key, manuals)))
    except SearchServiceError as exc:
        _complain(f"index-manuals: {exc}")
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cogs.runner import run

    return run(_settings(args), verbose=args.verbose)


def cmd_web(args: argparse.Namespace) -> int:
    from bot import web

    settings = _settings(args)
    if args.port is not None:
        check_port(args.port, f"--port {args.port}")
        settings = settings.replace(web={"port": args.port})
    try:
        asyncio.run(web.serve(settings))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # asyncio's "error while attempting to bind on address (...)" says not what to do.
        _complain(
            f"web: port {settings.web.port} is in use by another program: stop it, or serve on"
            " another port with --port (or web.port)"
        )
        return 4
    return 0


def cmd_web_password(args: argparse.Namespace) -> int:
    import getpass

    from bot.web.security import (
        MIN_PASSWORD_CHARS,
        RESERVED_NAMES,
        STAFF_NAME,
        STAFF_NAME_RULE,
        account_name,
        hash_password,
    )

    name = account_name(args.name) if args.name is not None else None
    # Refused before the password is asked for: a hash under a name start-up refuses is no use.
    if name is not None and (not STAFF_NAME.fullmatch(name) or name in RESERVED_NAMES):
        _complain(
            f"web-password: --name is {STAFF_NAME_RULE}, and neither {' nor '.join(sorted(RESERVED_NAMES))}"
        )
        return 2
    # Whose, when named: docs/web.md's example asks for two in one line.
    prompt = f"password for {name}: " if name is not None else "password: "
    typed = sys.stdin.readline() if not sys.stdin.isatty() else getpass.getpass(prompt) + "\n"
    if not typed:  # stdin at its end at once (</dev/null, a cron job): no password, not a short one
        _complain(
            "web-password: no password on stdin: pipe one in, as in"
            " `printf '%s\\n' \"$PASSWORD\" | voxdesk web-password`, or run it in a terminal to be asked"
        )
        return 2
    password = typed.rstrip("\r\n")
    if len(password) < MIN_PASSWORD_CHARS:
        _complain(f"web-password: use a staff password of {MIN_PASSWORD_CHARS} characters or more")
        return 2
    if name is None:
        print(hash_password(password))
        return 0
    # The entry alone on stdout, for a script to join to the others; where it goes, on stderr.
    print(f"{name}:{hash_password(password)}")
    print(
        "add it to VOXDESK_WEB_STAFF (in the environment or .env), after a comma if others are there,"
        " or in place of this name's old entry",
        file=sys.stderr,
    )
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from cogs.runner import sync

    if args.clear and args.guild is None:
        _complain("sync: --clear removes one guild's copy of the commands: give it --guild ID")
        return 2
    return sync(_settings(args), args.guild, args.clear)


def _user_path(text: str) -> str:
    """A path argument with "~" the home folder, as config.toml's paths have it: quoted, or passed
    by a unit or script no shell reads, Path("~/x") is a folder named "~" in the working one.
    Never empty: Path("") is the working folder, so `backup "$DIR"` with DIR unset backed up into
    wherever it ran, and an empty --out or --config was taken as none given."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no file or folder: give one")
    return os.path.expanduser(text)


def _speaker(text: str) -> str:
    """A --user as `player` takes one: any other text was answered as a player of that name, and a
    complaint in the note filed under an id no `player` command can name."""
    from bot.player_data import NotAPlayerId, checked

    try:
        return checked(text)
    except NotAPlayerId as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


SPEAKER_HELP = f"Discord user id of the speaker (default: demo player Nova, {DEMO_USER})"

# name → (handler, help, argument adder)
COMMANDS: dict[
    str, tuple[Callable[[argparse.Namespace], int], str, Callable[[argparse.ArgumentParser], None]]
] = {
    "init": (
        cmd_init,
        "create and seed the embedded databases, index the manuals, build the speech models",
        lambda p: None,
    ),
    "ask": (
        cmd_ask,
        "answer one voice note file and write the spoken reply",
        lambda p: (
            p.add_argument(
                "file",
                metavar="NOTE",
                type=_user_path,
                help="an audio file: ogg, mp3, m4a, wav, webm, flac, amr",
            ),
            p.add_argument("--user", metavar="ID", default=DEMO_USER, type=_speaker, help=SPEAKER_HELP),
            p.add_argument("--voice", metavar="NAME", default=None, help="reply voice (engine-specific)"),
            p.add_argument(
                "--out",
                metavar="DIR",
                default=None,
                type=_user_path,
                help="folder for the reply audio, made if missing (default: a new one in the temp"
                " directory); an earlier reply there is kept, this one numbered -2, -3...",
            ),
            p.add_argument("--json", action="store_true", help="print one JSON object"),
        ),
    ),
    "demo": (
        cmd_demo,
        "answer every sample voice note voxdesk ships: what was heard, the tools, the answer",
        lambda p: (
            p.add_argument(
                "--samples",
                metavar="DIR",
                default=str(paths.SAMPLES),
                type=_user_path,
                help="folder of .ogg voice notes, each answered (default: the samples)",
            ),
            p.add_argument("--user", metavar="ID", default=DEMO_USER, type=_speaker, help=SPEAKER_HELP),
        ),
    ),
    "eval": (
        cmd_eval,
        "measure the offline engine on the spoken evaluation set",
        lambda p: (
            p.add_argument(
                "--split",
                action="append",
                choices=_EvalSplits(),
                metavar="SPLIT",
                help="one split (repeatable): %(choices)s; default: all but the reserved blind ones",
            ),
            p.add_argument("--misses", action="store_true", help="list every miss"),
            p.add_argument(
                "--recognizer",
                choices=("pocketsphinx", "whisper", "both"),
                help="who hears the notes (both: side by side); default: offline.recognizer",
            ),
            p.add_argument(
                "--human",
                action="store_true",
                help="also word error rate on Debian's pocketsphinx-testdata clips of people reading",
            ),
            p.add_argument(
                "--as-text",
                action="store_true",
                help="route each question's own words: the router alone, no voice, no recogniser",
            ),
            p.add_argument("--json", action="store_true", help="the figures as JSON"),
        ),
    ),
    "check": (
        cmd_check,
        "try each configured service once and say why one is not reachable",
        lambda p: p.add_argument(
            "--run", action="store_true", help="also fail on what `run` alone needs: DISCORD_TOKEN"
        ),
    ),
    "backup": (
        cmd_backup,
        "copy every database, the grievance spool and openai-safety.key into a new folder under"
        " DIR (safe while running; take one before an upgrade, the way back to the version before)",
        lambda p: p.add_argument(
            "into",
            metavar="DIR",
            type=_user_path,
            help="where the dated backup folder is made; older ones there past the newest"
            " storage.keep_backups (7) are removed",
        ),
    ),
    "player": (
        cmd_player,
        "a player's data on their request: export it as JSON, or forget it (grievances are kept)",
        lambda p: (
            p.add_argument(
                "action",
                choices=("export", "forget"),
                # Errors name an argument by its metavar, else by this internal name: "required:
                # action" and "argument action: invalid choice" said a word no usage line shows.
                metavar="export|forget",
                help="export: everything kept about them; forget: erase what only serves the bot",
            ),
            p.add_argument("user_id", metavar="DISCORD_ID", help="the player's Discord user id"),
            p.add_argument(
                "--out",
                metavar="FILE",
                default=None,
                type=_user_path,
                help="export: write the JSON to this new file",
            ),
        ),
    ),
    "refile": (
        cmd_refile,
        "file the grievances a full disk left logged as UNFILED: voxdesk refile LOG, or - for stdin",
        lambda p: p.add_argument(
            "logs",
            nargs="*",
            type=_user_path,
            metavar="LOG",
            help="log files to read (journalctl's -o cat, short and json output, Docker's json-file"
            " logs and Kubernetes' or Podman's CRI logs too); - or none: stdin",
        ),
    ),
    "index-manuals": (
        cmd_index_manuals,
        "create the Azure AI Search index if missing and upload the manuals (re-runs update)",
        lambda p: p.add_argument(
            "--manuals",
            metavar="DIR",
            default=None,
            type=_user_path,
            help="folder of *.md manuals (default: storage.manuals_dir)",
        ),
    ),
    "run": (
        cmd_run,
        "start the Discord bot (needs DISCORD_TOKEN); also the web front end if web.enabled",
        lambda p: None,
    ),
    "web": (
        cmd_web,
        "serve the web front end alone: playground, support desk, /healthz, /metrics",
        lambda p: p.add_argument(
            "--port", type=int, default=None, help="the port to serve on, instead of web.port"
        ),
    ),
    "web-password": (
        cmd_web_password,
        "hash a staff password (read from stdin or asked) for VOXDESK_WEB_STAFF_PASSWORD_HASH, or"
        " with --name an account's entry for VOXDESK_WEB_STAFF",
        lambda p: p.add_argument(
            "--name",
            default=None,
            help="the staff member's name on the desk: prints NAME:HASH for VOXDESK_WEB_STAFF",
        ),
    ),
    "sync": (
        cmd_sync,
        "publish the slash commands, globally or to one guild (or remove that guild's copy)",
        lambda p: (
            p.add_argument(
                "--guild", metavar="ID", type=int, default=None, help="guild id: instant, for testing"
            ),
            p.add_argument(
                "--clear",
                action="store_true",
                help="with --guild: remove that guild's copy (after testing there, once synced globally)",
            ),
        ),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxdesk", description="voxdesk: voice notes in, voice notes out")
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        type=_user_path,
        help="config file (default: VOXDESK_CONFIG, else config.toml in the working directory, "
        "else the built-in settings)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log more: INFO lines; with run, voxdesk's DEBUG lines, which hold players' words",
    )
    # Not required=True: argparse's "the following arguments are required: COMMAND" named none.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (handler, help_text, add_arguments) in COMMANDS.items():
        # The line the command list shows, as `voxdesk NAME --help` says it too.
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler, usage_of=p)
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-8s %(name)s %(message)s",
        datefmt=logs.PLAIN_DATES,
    )
    logs.quiet_noisy_loggers()
    # The values come with the settings, loaded after this.
    logs.install_secret_mask()


# Commands that stop themselves on SIGTERM, finishing what is in flight.
STOP_ON_THEIR_OWN = ("run", "web")
TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class _Terminated:
    """SIGTERM taken as Ctrl-C is: the speech workers ignore both (the bot finishes its notes
    before they go), so a command SIGTERM killed outright (`timeout`, `kill`) left them running,
    holding their models' memory and the pipes of whoever read its output. Interrupted, the
    command's own shutdown stops them."""

    seen = False

    @classmethod
    def handle(cls, signum: int, frame: object) -> None:
        cls.seen = True
        interrupt = signal.getsignal(signal.SIGINT)
        if callable(interrupt):  # asyncio.run's: cancels the command and shuts down its workers
            interrupt(signal.SIGINT, frame)
        else:  # SIGINT ignored, as in a background job of a script
            raise KeyboardInterrupt


READER_GONE = 141  # 128 + SIGPIPE, as a shell reports `... | head` ending a command's output


def _reader_gone() -> bool:
    """Whether whoever read the output closed it (`| head`), not a pipe of the command's own."""
    poller = select.poll()
    for stream in (sys.stdout, sys.stderr):
        try:
            poller.register(stream.fileno(), select.POLLOUT)
        except (AttributeError, OSError, ValueError):
            continue
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, where a closed pipe is a message and status 120
    except BrokenPipeError:
        if not _reader_gone():
            raise
        # What is left unwritten goes nowhere, so the flush at exit says nothing.
        for stream in (sys.stdout, sys.stderr):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        return READER_GONE


@contextlib.contextmanager
def _sigterm_as_interrupt(command: str) -> Iterator[None]:
    """SIGTERM taken as Ctrl-C while `command` runs (not `run` or `web`, which stop on their own),
    the handler before it put back after: main() called in another program's process (a test's)
    leaves it as it found it."""
    if command in STOP_ON_THEIR_OWN or threading.current_thread() is not threading.main_thread():
        yield
        return
    _Terminated.seen = False
    before = signal.signal(signal.SIGTERM, _Terminated.handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        parser.error(f"give a command: {', '.join(COMMANDS)} (voxdesk --help says what each does)")
    if unknown:
        # After the command, said with its own usage: the top one shows none of its options.
        given = sys.argv[1:] if argv is None else argv
        before = given[: given.index(args.command)] if args.command in given else given
        wrong = parser if any(u in before for u in unknown) else args.usage_of
        wrong.error(f"unrecognized arguments: {' '.join(unknown)}{_goes_before(unknown, args.command)}")
    configure_logging(args.verbose)
    with _sigterm_as_interrupt(args.command):
        return _handled(args)


# voxdesk's own options, which argparse takes before the command only: the command's usage shown
# for one written after it lists no such option, as if voxdesk had none.
_OWN_OPTIONS = {"--config": "--config FILE", "-v": "-v", "--verbose": "--verbose"}


def _goes_before(unknown: list[str], command: str) -> str:
    """'; --config goes before the command, as in ...' for voxdesk's own options among `unknown`."""
    misplaced = list(dict.fromkeys(u.split("=", 1)[0] for u in unknown if u.split("=", 1)[0] in _OWN_OPTIONS))
    if not misplaced:
        return ""
    verb = "goes" if len(misplaced) == 1 else "go"
    example = " ".join(_OWN_OPTIONS[name] for name in misplaced)
    return f"; {' and '.join(misplaced)} {verb} before the command, as in `voxdesk {example} {command}`"


def _file_in_the_way(path: str, args: argparse.Namespace) -> tuple[str, int] | None:
    """What to say, and the status, where a file stands where `path` needs a folder: the OS's
    "players.db: Not a directory" says neither which file nor that storage.dir names it."""
    blocking = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
    if blocking is None:
        return None
    with contextlib.suppress(ConfigError):
        # A setting, not a file's fault: storage.dir names the file, or a folder inside it.
        storage = _settings(args).storage_dir
        if blocking.resolve() in (storage.resolve(), *storage.resolve().parents):
            return _storage_in_a_file(storage), 2
    return f"{blocking} is a file, where {path} needs a folder: move it away, or give another path", 4


def _storage_in_a_file(storage: Path) -> str:
    """Why storage.dir can hold no databases, where it names a file or a folder inside one, or
    "": said alike by every command, a setting to mend (status 2)."""
    blocking = next((p for p in (storage, *storage.parents) if p.exists() and not p.is_dir()), None)
    if blocking is None:
        return ""
    if blocking.resolve() == storage.resolve():
        return f"storage.dir {storage} is a file: set storage.dir to a folder (made if missing)"
    return f"storage.dir {storage} is under {blocking}, a file: set storage.dir to a folder (made if missing)"


def _handled(args: argparse.Namespace) -> int:
    try:
        return args.handler(args)
    except ConfigError as exc:
        _complain(f"config error: {exc}")
        return 2
    except AudioError as exc:
        _complain(str(exc))
        return 3
    except NotInitialised as exc:
        _complain(str(exc))
        return 2
    except (SpeechModelsUnavailable, AioodbcUnlike) as exc:  # installed wrong: a restart mends neither
        _complain(str(exc))
        return 4
    except FileNotFoundError as exc:
        _complain(f"{exc.filename}: no such file" if exc.filename else str(exc))
        return 4
    except NotADirectoryError as exc:
        if exc.filename and (said := _file_in_the_way(exc.filename, args)):
            _complain(said[0])
            return said[1]
        _complain(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        return 4
    except OSError as exc:  # unreadable, a folder where a file was meant, a port in use
        if isinstance(exc, BrokenPipeError) and _reader_gone():
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        owner = other_owner(exc.filename) if isinstance(exc, PermissionError) and exc.filename else ""
        _complain(f"{where}{exc.strerror or exc}{owner}")
        return 4
    except sqlite3.Error as exc:
        _complain(f"a database under the storage folder cannot be used: {exc}")
        return 4
    except KeyboardInterrupt:
        return TERMINATED if _Terminated.seen else INTERRUPTED
    except Exception:
        # Through the log's handler, which masks the traceback: Python's own hook would print a
        # library's exception (a refused request's address, a server's echo of the key) as it is.
        log.critical("voxdesk stopped on an error it does not handle", exc_info=True)
        return 1
