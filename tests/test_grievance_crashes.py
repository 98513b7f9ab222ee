"""Complaints filed by a process killed at many points of the filing path, then by the bot
restarted on the same storage: every complaint ends up filed exactly once, in its owner's words,
under the key its player was told, with one Jira issue each, and the spool left empty.

The filing process (tests/crash_filing.py) SIGKILLs itself at the nth boundary of voxdesk's
storage and Jira code (a function entered, or a coroutine resumed after an await): without Jira at
every one of a run's, with it at many spread over the run, some killed a second time as they
restart. Boundaries fall between the store's commit and the reply, between the spool's filing and
its emptying, between Jira's create and the mark of the push. One complaint meets a full disk and
goes to the spool. The restart answers each note whose player heard nothing (as the note ledger
has the bot do), then pushes what is pending. A raid stopped by SIGTERM keeps every complaint its
player heard a key or "kept" for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.tools.grievance_spool import GrievanceSpool
from bot.tools.grievance_store import LocalGrievanceStore
from bot.tools.jira_grievances import JiraGrievances
from tests.cloud.test_jira_grievances import FAST, creates, pushed_keys
from tests.conftest import BLAZE, NOVA, QUILL
from tests.crash_filing import file_one, open_backend, register_tool
from tests.fakes.jira_server import FakeJira, running_fake_jira

ROOT = Path(__file__).resolve().parent.parent
COMPLAINTS = [
    {
        "user_id": NOVA,
        "request_id": "9001",
        "category": "wallet",
        "description": "my gems from the march bundle never arrived",
    },
    {
        "user_id": BLAZE,
        "request_id": "9002",
        "category": "reward_points",
        "description": "tournament points vanished after the final round",
    },
    {
        "user_id": QUILL,
        "request_id": "9003",
        "category": "gaming_experience",
        "description": "matchmaking keeps dropping me into empty lobbies",
    },
    {
        "user_id": NOVA,
        "request_id": "9004",
        "category": "usage_history",
        "description": "playtime history shows sessions I never played",
    },
]
# The disk is full as this one is filed: kept in the spool, which the next filing files.
REFUSED = [COMPLAINTS[1]["description"]]
# A raid: six players, two complaints each, all filed at once.
RAID = [
    {
        "user_id": str(400000000000000000 + p),
        "request_id": str(9100 + 2 * p + n),
        "category": "other",
        "description": f"player {p} lost {thing} after the patch went live",
    }
    for p in range(6)
    for n, thing in enumerate(("their skins", "the ranked badges"))
]
KILLS = 40  # kill points of a run with Jira, spread over its boundaries


def plan_for(storage: Path, jira: FakeJira | None, **more: object) -> dict[str, Any]:
    storage.mkdir(parents=True, exist_ok=True)
    plan: dict[str, Any] = {
        "db": str(storage / "grievances.db"),
        "answers": str(storage / "answers.jsonl"),
        "complaints": COMPLAINTS,
        "refused": REFUSED,
        **more,
    }
    if jira is not None:
        plan["jira"] = {"settings": {"url": jira.url, **FAST}, "email": jira.email, "token": jira.token}
    return plan


class Filer:
    """tests/crash_filing.py waiting for plans: each run in a process of its own, forked."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def start(self, plan: dict[str, Any]) -> int:
        path = Path(plan["db"]).with_name("plan.json")
        path.write_text(json.dumps(plan))
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{path}\n".encode())
        await self.process.stdin.drain()
        return int(await asyncio.wait_for(self.process.stdout.readline(), 30))

    async def ended(self, pid: int) -> int:
        """The run's exit code (-9: killed)."""
        assert self.process.stdout is not None
        ended, status = map(int, (await asyncio.wait_for(self.process.stdout.readline(), 30)).split())
        assert ended == pid
        return os.waitstatus_to_exitcode(status)

    async def run(self, plan: dict[str, Any]) -> tuple[int, str]:
        code = await self.ended(await self.start(plan))
        return code, Path(plan["db"]).with_name("out.txt").read_text()


@pytest.fixture
async def filer() -> AsyncIterator[Filer]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.crash_filing",
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield Filer(process)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def told(plan: dict[str, Any]) -> list[dict[str, str]]:
    path = Path(plan["answers"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def rows(plan: dict[str, Any]) -> list[tuple[str, str, str, str, str | None]]:
    with contextlib.closing(sqlite3.connect(plan["db"])) as conn:
        return conn.execute(
            "SELECT local_key, user_id, description, push_state, remote_key FROM grievances ORDER BY id"
        ).fetchall()


def unanswered(plan: dict[str, Any]) -> list[dict[str, str]]:
    """The notes whose player heard no answer: those the restarted bot answers (its note ledger
    settles a note once its answer is out; one answered is never run again)."""
    heard = {a["request_id"] for a in told(plan)}
    return [c for c in plan["complaints"] if c["request_id"] not in heard]


async def restart(plan: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The bot started again on the storage: each note unanswered answered (its turn re-run), and
    what is pending pushed. What each note's player was told, by note, the first time or now."""
    backend = await open_backend(plan)
    try:
        handler = register_tool(backend)
        again = {a["request_id"]: a for a in told(plan)}
        again |= {c["request_id"]: await file_one(handler, c) for c in unanswered(plan)}
        if isinstance(backend, JiraGrievances):
            store = backend.local_store
            for _ in range(5):
                # As if the killed pusher's claims had run out (3 x timeout + settle later).
                await store._conn.execute("UPDATE grievances SET next_try_at = NULL")
                await store._conn.commit()
                await backend.push_pending()
                if not await store.count_pending():
                    break
        return again
    finally:
        await backend.aclose()


def assert_each_filed_once(
    plan: dict[str, Any], again: dict[str, dict[str, str]], jira: FakeJira | None
) -> None:
    what = f"kill_at={plan.get('kill_at')}: "
    found = rows(plan)
    by_key = {r[0]: r for r in found}
    for c in plan["complaints"]:
        theirs = [r for r in found if (r[1], r[2]) == (c["user_id"], c["description"])]
        assert len(theirs) == 1, what + f"{c['request_id']} filed {len(theirs)} times: {found}"
        # Told its ticket (by its Jira key once pushed), or that it was kept for later.
        assert again[c["request_id"]].get("key", theirs[0][0]) in (theirs[0][0], theirs[0][4]), (
            what + f"{again[c['request_id']]} {found}"
        )
    assert len(found) == len(plan["complaints"]), what + str(found)
    for answer in told(plan):
        if "key" in answer:  # the player heard this key: it is theirs, in their words
            row = by_key.get(answer["key"]) or next((r for r in found if r[4] == answer["key"]), None)
            assert row is not None and (row[1], row[2]) == (answer["user_id"], answer["description"]), (
                what + f"told {answer}, filed {found}"
            )
    spool = GrievanceSpool.beside(plan["db"])
    assert not spool.waiting(), what + spool.path.read_text()
    assert not list(spool.path.parent.glob("*.rejected*")), what + "a spool line was set aside"
    if jira is not None:
        assert creates(jira) == len(jira.issues) == len(plan["complaints"]), what + f"{creates(jira)} creates"
        assert pushed_keys(jira) == sorted(r[0] for r in found), what + str(pushed_keys(jira))
        assert all(r[3] == "pushed" and r[4] in jira.issues for r in found), what + str(found)
        for r in found:
            assert jira.issues[r[4]].description == r[2], what + f"{r[4]} is not {r[0]}'s words"


async def new_storage(tmp_path: Path) -> Path:
    """An empty grievance store, made once and copied for each run: a new store's making takes
    many syncs, and is no point a grievance can be lost at."""
    made = tmp_path / "new"
    made.mkdir()
    store = await LocalGrievanceStore.open(made / "grievances.db")
    await store.aclose()
    return made


async def boundaries_run(filer: Filer, storage: Path, jira: bool) -> int:
    """The boundaries a whole filing passes (tests/crash_filing.py), counted by a run killed at none."""
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(running_fake_jira()) if jira else None
        code, out = await filer.run(plan_for(storage, fake, one_by_one=True))
    assert code == 0, out
    (total,) = [int(line.split()[1]) for line in out.splitlines() if line.startswith("boundaries ")]
    return total


@pytest.mark.timeout(120)  # a process forked, killed and filed again per kill point
@pytest.mark.parametrize("jira", [False, True], ids=["local", "jira"])
async def test_a_filing_killed_anywhere_files_each_complaint_once_after_the_restart(
    filer, tmp_path, jira
) -> None:
    new = await new_storage(tmp_path)
    shutil.copytree(new, tmp_path / "whole")
    total = await boundaries_run(filer, tmp_path / "whole", jira)
    # Without Jira at each boundary; with it (three times as many, most of them its requests') at
    # as many, spread over the run.
    kills = (
        range(1, total + 1) if not jira else sorted({round(total * (n + 0.5) / KILLS) for n in range(KILLS)})
    )
    chance = random.Random(37)
    for n, kill_at in enumerate(kills):
        async with contextlib.AsyncExitStack() as stack:
            fake = await stack.enter_async_context(running_fake_jira()) if jira else None
            storage = shutil.copytree(new, tmp_path / f"killed-{kill_at}")
            plan = plan_for(storage, fake, kill_at=kill_at, one_by_one=True)
            code, out = await filer.run(plan)
            assert code in (-signal.SIGKILL, 0), out
            if n % 3 == 1:
                # Killed again as it restarts: filing the spool, or a note answered again.
                again_at = chance.randint(1, total)
                restarted = {
                    "kill_at": again_at,
                    "refused": [],
                    "restarted": True,
                    "complaints": unanswered(plan),
                }
                code, out = await filer.run({**plan, **restarted})
                assert code in (-signal.SIGKILL, 0), out
                plan["kill_at"] = f"{kill_at}, then {again_at}"
            again = await restart(plan)
            assert_each_filed_once(plan, again, fake)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("jira", [False, True], ids=["local", "jira"])
async def test_sigterm_mid_raid_keeps_every_answered_grievance_then_files_each_once(
    filer, tmp_path, jira
) -> None:
    new = await new_storage(tmp_path)
    for heard in (0, 1, 3, 5, 8, 11):  # the stop comes once this many players heard their answer
        async with contextlib.AsyncExitStack() as stack:
            fake = await stack.enter_async_context(running_fake_jira()) if jira else None
            refused = [RAID[3]["description"]]
            storage = shutil.copytree(new, tmp_path / f"stopped-{heard}")
            plan = plan_for(storage, fake, sigterm=True, complaints=RAID, refused=refused)
            pid = await filer.start(plan)
            out = Path(plan["db"]).with_name("out.txt")
            # Another process's files: no event to wait on.
            while "filing" not in (out.read_text() if out.exists() else "") or len(told(plan)) < heard:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            os.kill(pid, signal.SIGTERM)
            assert await filer.ended(pid) == 0, out.read_text()
            found = {r[0]: r for r in rows(plan)}
            spooled = GrievanceSpool.beside(plan["db"])
            kept = [line["description"] for line in spooled.lines()] if spooled.waiting() else []
            for answer in told(plan):
                if "key" in answer:
                    assert answer["key"] in found, f"after {heard}: told {answer}, filed {found}"
                    assert found[answer["key"]][1:3] == (answer["user_id"], answer["description"])
                else:  # told it was kept for later: in the spool, or filed from it at the stop
                    assert answer["description"] in kept + [r[2] for r in found.values()], answer
            again = await restart(plan)
            assert_each_filed_once(plan, again, fake)
