"""A filing process for tests/test_grievance_crashes.py to kill: the grievance tool files
complaints (each its own note), writes each answer to an answers file as the player's reply would
carry it (a key, or that the complaint was kept for later), then pushes to Jira when Jira is on.

`python -m tests.crash_filing` reads a plan's path a line from stdin and runs each plan in a
process forked from itself, voxdesk imported once (an import takes a second on a cold disk, a run
a tenth of that); it writes "<pid>" at each fork and "<pid> <wait status>" at its end. A plan
names the storage, the complaints, those the database refuses (a full disk: kept in the spool),
and `kill_at`: the process SIGKILLs itself at the nth boundary of voxdesk's storage and Jira code
(WATCHED), in any thread, counted from the first filing (from the open, which files the spool,
with `restarted`); 0 runs to the end and prints how many there were. With `one_by_one` the notes
are answered in turn, else all at once. With `sigterm` it stops on SIGTERM as the bot does: what
is filing is cancelled, then the backend closed; it waits for the signal once all is filed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import bot.db
import bot.tools
from bot.config import JiraSettings
from bot.tools import build_tools
from bot.tools.base import ToolContext, ToolError
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.jira_grievances import JiraGrievances
from bot.tools.jira_tracker import TrackerError

# The filing's storage and Jira code: the tool's own (bot/tools/__init__.py) checks words, all
# before the first write, where no kill can lose anything.
WATCHED = (
    *(
        str(Path(bot.tools.__file__).with_name(f"{m}.py"))
        for m in ("grievance_store", "grievance_spool", "jira_grievances", "jira_tracker")
    ),
    bot.db.__file__,
)
_boundaries = 0
_kill_at = 0
_armed = False


def _trace(frame: Any, event: str, arg: object) -> None:
    # A "call" is a function of the filing entered, or one of its coroutines resumed after an
    # await (a commit, a spool write in a thread, a Jira request): the points where what is on
    # disk changes, one at a time.
    global _boundaries
    if event == "call" and _armed and frame.f_code.co_filename.startswith(WATCHED):
        _boundaries += 1
        if _boundaries == _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def refuse(descriptions: set[str]) -> None:
    """The database refuses these complaints as a full disk would, when the tool files them (not
    when the spool is filed): kept in the spool, their players told so without a key."""
    insert = LocalGrievanceStore._insert

    async def _insert(self: LocalGrievanceStore, *args: Any, late: bool = False, **kw: Any) -> str | None:
        if not late and args[2] in descriptions:
            raise sqlite3.OperationalError("database or disk is full")
        return await insert(self, *args, late=late, **kw)

    LocalGrievanceStore._insert = _insert  # type: ignore[method-assign]


async def open_backend(plan: dict[str, Any]) -> LocalGrievanceStore | JiraGrievances:
    jira = plan.get("jira")
    if jira is None:
        return await LocalGrievanceStore.open(plan["db"])
    settings = JiraSettings(**jira["settings"])
    return await JiraGrievances.open(settings, jira["email"], jira["token"], Path(plan["db"]))


def register_tool(backend: LocalGrievanceStore | JiraGrievances) -> Any:
    (tool,) = [t for t in build_tools(None, None, backend) if t.name == "register_grievance"]  # type: ignore[arg-type]
    return tool.handler


async def file_one(handler: Any, complaint: dict[str, str]) -> dict[str, str]:
    """What the player's reply to this complaint's note says: its key, or that it was kept."""
    ctx = ToolContext(user_id=complaint["user_id"], request_id=complaint["request_id"])
    try:
        answer = await handler(
            ctx, {"category": complaint["category"], "description": complaint["description"]}
        )
    except ToolError as exc:
        return {**complaint, "told": str(exc)}
    return {**complaint, "key": answer["ticket_key"]}


async def run(plan: dict[str, Any]) -> None:
    global _armed
    # Counted from the open when it may file a spool an earlier run left (`restarted`), else from
    # the first filing: a new store's making is no point a grievance can be lost at.
    _armed = bool(plan.get("restarted"))
    backend = await open_backend(plan)
    if not _armed:
        _armed = True
    handler = register_tool(backend)
    answers = os.open(plan["answers"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    filing: list[asyncio.Future[None]] = []
    stopped = asyncio.Event()

    def stop() -> None:
        stopped.set()
        for task in filing:
            task.cancel()

    if plan.get("sigterm"):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)

    async def answer(complaint: dict[str, str]) -> None:
        told = await file_one(handler, complaint)
        # The reply, sent: the player has heard it from here on.
        os.write(answers, (json.dumps(told) + "\n").encode())

    try:
        if plan.get("sigterm"):
            print("filing", flush=True)
        if plan.get("one_by_one"):
            for c in plan["complaints"]:
                await answer(c)
        else:
            filing.extend(asyncio.ensure_future(answer(c)) for c in plan["complaints"])
            await asyncio.gather(*filing, return_exceptions=True)
        if isinstance(backend, JiraGrievances):
            try:
                await backend.push_pending()
            except TrackerError as exc:
                print(f"push failed: {exc}", file=sys.stderr)
        if plan.get("sigterm"):
            # Its process lives until the signal comes, so that the signal finds it.
            await asyncio.wait_for(stopped.wait(), 30)
    finally:
        await backend.aclose()
        os.close(answers)


def run_plan(path: str) -> None:
    global _kill_at
    plan = json.loads(Path(path).read_text())
    refuse(set(plan.get("refused", ())))
    _kill_at = int(plan.get("kill_at", 0))
    threading.settrace(_trace)
    sys.settrace(_trace)
    asyncio.run(run(plan))
    sys.settrace(None)
    print(f"boundaries {_boundaries}", flush=True)  # run to the end: how many it passed


def main() -> None:
    for line in sys.stdin:
        path = line.strip()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                out = os.open(Path(path).with_name("out.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(out, 1)
                os.dup2(out, 2)
                sys.stdout = open(1, "w", closefd=False)
                sys.stderr = open(2, "w", closefd=False)
                run_plan(path)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(pid, status, flush=True)


if __name__ == "__main__":
    main()
