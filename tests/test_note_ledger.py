"""The notes ledger's rules, on a real SQLite file: who may answer a note, and when again."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from bot import note_ledger
from bot.audio import ReplyAudio
from bot.config import UsageSettings
from bot.db import NewerSchema
from bot.engines.base import Usage
from bot.note_ledger import SCHEMA_VERSION, NoteLedger
from bot.usage import UsageMeter
from tests.conftest import NOVA
from tests.test_db import refusals_noted


async def open_two(tmp_path) -> tuple[NoteLedger, NoteLedger]:
    return await NoteLedger.open(tmp_path / "notes.db"), await NoteLedger.open(tmp_path / "notes.db")


async def test_a_note_is_answered_by_one_ledger_and_never_again(tmp_path) -> None:
    one, two = await open_two(tmp_path)
    try:
        assert await one.claim(1, 10, "u") and not await two.claim(1, 10, "u")
        await one.answered(1)
        assert not await one.claim(1, 10, "u") and not await two.claim(1, 10, "u")
        assert await two.seen([1, 2]) == {1}
        assert await one.last_handled(10) == 1
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_kept_or_released_note_is_answered_after_the_restart(tmp_path) -> None:
    one, two = await open_two(tmp_path)
    try:
        assert await one.keep_for_restart(5, 10, "u") and not await one.keep_for_restart(5, 10, "u")
        assert await one.claim(6, 10, "u")
        await one.release(6)
        assert [(u.message_id, u.state) for u in await two.unanswered()] == [(5, "pending"), (6, "pending")]
        assert await two.claim(5, 10, "u") and await two.claim(6, 10, "u")
    finally:
        await one.aclose()
        await two.aclose()


def a_dead_pid() -> int:
    return int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
    )


async def test_a_claim_of_a_dead_process_or_a_lapsed_lease_is_taken_again(tmp_path) -> None:
    one, two = await open_two(tmp_path)
    dead = a_dead_pid()
    try:
        await one.claim(7, 10, "u")
        await one._conn.execute("UPDATE notes SET owner = ? WHERE message_id = 7", (f"{dead}:1:gone",))
        assert [u.message_id for u in await two.unanswered()] == [7]
        assert await two.claim(7, 10, "u")
        await two._conn.execute("UPDATE notes SET lease_until = ? WHERE message_id = 7", (time.time() - 1,))
        assert await one.claim(7, 10, "u")  # the live owner's claim lapsed: a turn never takes this long
    finally:
        await one.aclose()
        await two.aclose()


async def died_in_its_turn(ledger: NoteLedger, message_id: int) -> None:
    """The claim of `message_id` (this ledger's) left as a process that died mid-turn leaves it."""
    await ledger._conn.execute(
        "UPDATE notes SET owner = ? WHERE message_id = ?", (f"{a_dead_pid()}:1:gone", message_id)
    )


async def test_a_note_two_processes_died_answering_is_refused_at_the_next_claim(tmp_path, caplog) -> None:
    """A note that crashes the process (native code decoding it) was claimed again at every
    restart, and crashed each: the bot stayed down for every player."""
    one, two = await open_two(tmp_path)
    try:
        assert await one.claim(7, 10, "u") and await one.claim(8, 10, "u")
        await died_in_its_turn(one, 7)
        await died_in_its_turn(one, 8)
        with caplog.at_level(logging.WARNING, logger="bot.note_ledger"):
            assert await two.claim(7, 10, "u"), "a note one crash cut is not answered after the restart"
        # Named at the first death, so the log of a crash says which notes it had in hand.
        assert "note 7 is answered again: the process answering it died (1 of 2)" in caplog.messages
        assert await two.claim(8, 10, "u")
        assert two.crashed_out(7) is None
        await two.answered(8)
        await died_in_its_turn(two, 7)
        assert [u.message_id for u in await one.unanswered()] == [7]
        assert not await one.claim(7, 10, "u"), "a note two processes died in is answered a third time"
        assert one.crashed_out(7) == note_ledger.MAX_CRASHES
        assert one.crashed_out(7) is None, "its player would be told twice"
        assert two.crashed_out(7) is None  # told by the process whose claim refused it
        assert not await two.claim(7, 10, "u") and two.crashed_out(7) is None
        assert await one.unanswered() == [] and await two.seen([7, 8]) == {7, 8}
        rows = await one._conn.execute_fetchall("SELECT state, owner FROM notes WHERE message_id = 7")
        assert [tuple(r) for r in rows] == [("refused", None)]
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_crashing_note_whose_refusal_went_untold_is_refused_again_at_its_next_claim(
    tmp_path,
) -> None:
    """Discord failing the line that tells its player: given back, no turn of it begins again,
    and the next claim (a recheck's, another process's) refuses it to tell them."""
    one, two = await open_two(tmp_path)
    try:
        assert await one.claim(7, 10, "u")
        await one._conn.execute("UPDATE notes SET crashes = ?", (note_ledger.MAX_CRASHES - 1,))
        await died_in_its_turn(one, 7)
        assert not await two.claim(7, 10, "u") and two.crashed_out(7) == note_ledger.MAX_CRASHES
        await two.refusal_untold(7)
        assert [u.message_id for u in await one.unanswered()] == [7]
        assert await one.suspect(7)
        assert not await one.claim(7, 10, "u"), "a note two processes died in is answered a third time"
        assert one.crashed_out(7) == note_ledger.MAX_CRASHES
        assert await two.unanswered() == []
        assert await one.claim(8, 10, "u")
        await one.answered(8)
        await one.refusal_untold(8)  # only a refused note is given back
        rows = await one._conn.execute_fetchall("SELECT message_id, state FROM notes ORDER BY message_id")
        assert [tuple(r) for r in rows] == [(7, "refused"), (8, "answered")]
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_note_a_dead_process_had_in_hand_is_a_suspect_until_it_is_settled(tmp_path) -> None:
    """The front end answers these one at a time (cogs/voice.py), so that a note that crashes the
    process again is not answered beside the others the first crash cut, each then refused too."""
    one, two = await open_two(tmp_path)
    try:
        assert not await two.suspect(7)  # never claimed
        assert await one.claim(7, 10, "u") and await one.claim(8, 10, "u")
        assert not await one.suspect(7) and not await two.suspect(7)  # its process answers it
        await died_in_its_turn(one, 7)
        assert await two.suspect(7) and not await two.suspect(8)
        assert await two.claim(7, 10, "u")
        await two.release(7)  # a stop: given back, still one death counted
        assert await one.suspect(7)
        assert await one.claim(7, 10, "u")
        await one.answered(7)
        assert not await one.suspect(7) and not await two.suspect(7)
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_stop_or_a_lapsed_lease_is_no_crash_of_the_notes_turn(tmp_path) -> None:
    one, two = await open_two(tmp_path)
    try:
        assert await one.claim(7, 10, "u")
        await died_in_its_turn(one, 7)
        assert await two.claim(7, 10, "u")
        await two.release(7)  # a stop cut its turn: given back, nothing died
        assert await one.claim(7, 10, "u")
        await one._conn.execute("UPDATE notes SET lease_until = ? WHERE message_id = 7", (time.time() - 1,))
        assert await two.claim(7, 10, "u")  # a turn stuck under a live process, not a crash
        assert two.crashed_out(7) is None
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_note_a_crash_cut_before_the_upgrade_counts_no_crash_before_it_and_is_answered(
    tmp_path, monkeypatch
) -> None:
    # notes.db as schema version 3 left it: a note claimed by a process that died, no count kept.
    path = tmp_path / "notes.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE notes (message_id INTEGER PRIMARY KEY, place_id INTEGER NOT NULL,"
            " user_id TEXT NOT NULL, state TEXT NOT NULL, owner TEXT, lease_until REAL,"
            " updated_at REAL NOT NULL); PRAGMA user_version = 3;"
        )
        conn.execute(
            "INSERT INTO notes VALUES (7, 10, 'u', 'started', ?, ?, ?)",
            (f"{a_dead_pid()}:1:gone", time.time() + 60, time.time()),
        )
        conn.commit()
    ledger = await NoteLedger.open(path)
    try:
        assert await ledger.claim(7, 10, "u"), "a note one crash cut before the upgrade went unanswered"
        rows = await ledger._conn.execute_fetchall("SELECT crashes FROM notes WHERE message_id = 7")
        assert [tuple(r) for r in rows] == [(1,)]
    finally:
        await ledger.aclose()
    # The voxdesk before the count refuses the file: it would answer such a note at every restart.
    monkeypatch.setattr(note_ledger, "SCHEMA_VERSION", 3)
    with pytest.raises(NewerSchema):
        await NoteLedger.open(path)


async def test_a_ledger_whose_claim_was_taken_over_cannot_settle_the_note(tmp_path) -> None:
    # One's claim lapsed and two answers the note now: one, stopping, giving it back (or saying it
    # answered) must not undo two's claim, or the note is answered again after a restart.
    one, two = await open_two(tmp_path)
    try:
        await one.claim(7, 10, "u")
        await one._conn.execute("UPDATE notes SET lease_until = ? WHERE message_id = 7", (time.time() - 1,))
        assert await two.claim(7, 10, "u")
        await one.release(7)
        assert await one.unanswered() == [] and not await one.claim(7, 10, "u")
        await two.answered(7)
        assert await one.seen([7]) == {7} and not await one.to_answer(7)
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_note_a_live_ledger_answers_is_to_answer_but_not_another_ledgers(tmp_path) -> None:
    # Being answered: its filings' news waits for that answer, and no other process (a restart's
    # catch-up, a recheck) answers it as well.
    one, two = await open_two(tmp_path)
    try:
        await one.claim(5, 10, "u")
        await one.answered(5)
        await one.claim(7, 10, "u")
        assert await two.to_answer(7) and await two.unanswered() == []
        await one.turned_away(8, 10, "u")
        # Catch-up looks for notes after the last one answered: not after one being answered or
        # refused, or a note sent before those and never seen would be passed over.
        assert await one.last_handled(10) == 5
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_process_never_takes_back_its_own_claim_however_old(tmp_path) -> None:
    # Its own claim is a turn of its own still running: a recheck handing it out again once the
    # lease lapsed would answer the note a second time beside that turn.
    one = await NoteLedger.open(tmp_path / "notes.db")
    try:
        assert await one.claim(7, 10, "u")
        await one._conn.execute("UPDATE notes SET lease_until = ? WHERE message_id = 7", (time.time() - 1,))
        assert not await one.claim(7, 10, "u") and await one.unanswered() == []
        assert await one.seen([7]) == {7}
    finally:
        await one.aclose()


async def test_settling_in_bulk_changes_only_the_notes_still_to_answer(tmp_path) -> None:
    # A catch-up's or a recheck's list is read before it settles it: another process may have
    # answered, refused or given up on a note meanwhile, and that stands.
    one = await NoteLedger.open(tmp_path / "notes.db")
    try:
        for message_id in (1, 2, 3):
            await one.claim(message_id, 10, "u")
        await one.answered(1)
        await one.unanswerable(2)
        await one.turned_away(4, 10, "u")
        await one.expire([1, 4])
        await one.answered_before_a_crash([2, 4])
        assert await one.last_handled(10) == 1
        rows = await one._conn.execute_fetchall("SELECT message_id, state FROM notes ORDER BY message_id")
        assert [tuple(r) for r in rows] == [(1, "answered"), (2, "expired"), (3, "started"), (4, "refused")]
        # A note a dead process answered counts as answered where catch-up resumes reading.
        await one.answered_before_a_crash([3])
        assert await one.last_handled(10) == 3
    finally:
        await one.aclose()


async def test_the_last_note_handled_before_a_time_leaves_out_those_answered_since(tmp_path) -> None:
    # A start-up catch-up reads from the newest note answered before its process started.
    one = await NoteLedger.open(tmp_path / "notes.db")
    try:
        await one.claim(1, 10, "u")
        await one.answered(1)
        started = time.time() + 0.005  # after note 1's answer, before note 2's
        await asyncio.sleep(0.01)
        await one.claim(2, 10, "u")
        await one.answered(2)
        assert await one.last_handled(10, answered_before=started) == 1
        assert await one.last_handled(10) == 2
        assert await one.last_handled(10, answered_before=started - 3600) is None
    finally:
        await one.aclose()


async def test_a_note_the_ledger_cannot_record_is_held_by_one_process_while_it_runs(tmp_path) -> None:
    """A full disk refuses both bots' claims of a note both got from Discord: one answers it."""
    one, two = await open_two(tmp_path)
    try:
        assert one.claim_unrecorded(7) and one.claim_unrecorded(7)
        assert not two.claim_unrecorded(7)
        # The disk takes writes again: the note answered unrecorded is not claimed anew elsewhere.
        assert not await two.claim(7, 10, "u")
        assert two.claim_unrecorded(8) and not await one.claim(8, 10, "u")
    finally:
        await one.aclose()
    assert two.claim_unrecorded(7)  # its holder gone, however it went
    await two.aclose()


async def test_a_note_is_answered_where_the_file_system_has_no_such_locks(tmp_path, monkeypatch) -> None:
    import errno

    ledger = await NoteLedger.open(tmp_path / "notes.db")
    real = note_ledger.fcntl.fcntl

    def unsupported(fd: int, command: int, arg: object = 0) -> object:
        if command in (note_ledger.fcntl.F_OFD_SETLK, note_ledger.fcntl.F_OFD_GETLK):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, command, arg)  # type: ignore[arg-type]

    monkeypatch.setattr(note_ledger.fcntl, "fcntl", unsupported)
    try:
        assert await ledger.claim(1, 10, "u")
        assert ledger.claim_unrecorded(2)  # answered twice beats never
    finally:
        await ledger.aclose()


@contextlib.asynccontextmanager
async def another_bot(db: str, claim: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A bot process with the ledger at `db` open, once it has printed what `claim` (an expression
    on `ledger`) gave; killed on leaving, if the test has not killed it."""
    child = (
        "import asyncio, sys\n"
        "from bot.note_ledger import NoteLedger\n"
        "async def main():\n"
        f"    ledger = await NoteLedger.open({db!r})\n"
        f"    print({claim}, flush=True)\n"
        "    sys.stdin.readline()\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", child, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"True\n"
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_note_held_by_a_bot_process_is_let_go_when_it_dies(tmp_path) -> None:
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        async with another_bot(str(tmp_path / "notes.db"), "ledger.claim_unrecorded(7)") as process:
            assert not ledger.claim_unrecorded(7) and not await ledger.claim(7, 10, "u")
            process.kill()
            await process.wait()
            assert ledger.claim_unrecorded(7)
    finally:
        await ledger.aclose()


async def test_a_claim_of_a_process_in_another_pid_namespace_is_its_while_it_runs(tmp_path) -> None:
    """Two containers on one storage volume, each bot its container's pid 1: seen from here, the
    other's pid is this process or none, so its claims looked dead and its notes were answered
    twice."""
    db = str(tmp_path / "notes.db")
    ledger = await NoteLedger.open(db)
    try:
        async with another_bot(db, "await ledger.claim(1, 10, 'u')") as process:
            # Its pid as this namespace sees it: another process's (this one's), started at another
            # time.
            with sqlite3.connect(db) as conn:
                (owner,) = conn.execute("SELECT owner FROM notes WHERE message_id = 1").fetchone()
                seen_from_here = ":".join([str(os.getpid()), "1", *owner.split(":")[2:]])
                conn.execute("UPDATE notes SET owner = ? WHERE message_id = 1", (seen_from_here,))
            assert not await ledger.claim(1, 10, "u")
            process.kill()
            await process.wait()
            assert await ledger.claim(1, 10, "u")  # it went
    finally:
        await ledger.aclose()


async def test_a_claim_of_a_dead_process_whose_pid_is_given_again_is_dead(tmp_path) -> None:
    """A container restarted: the bot is its pid 1 again, and where /proc could not tell when the
    dead one started, its claims passed for alive for their whole lease."""
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        dead = f"{os.getpid()}::a1b2c3:{note_ledger.LIVE_MARKS + 5}"  # its mark went with it
        with sqlite3.connect(tmp_path / "notes.db") as conn:
            conn.execute(
                "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
                " VALUES (1, 10, 'u', 'started', ?, ?, ?)",
                (dead, time.time() + note_ledger.LEASE_SECONDS, time.time()),
            )
        assert await ledger.claim(1, 10, "u")  # its claim went with it
    finally:
        await ledger.aclose()


def test_a_claims_process_running_under_another_user_is_alive(monkeypatch) -> None:
    # os.kill(pid, 0) on another user's process is refused, not failed: that process is there.
    import os

    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    owner = note_ledger._owner_id()
    monkeypatch.setattr(os, "kill", refused)
    assert note_ledger._alive(owner)


def test_a_pid_the_system_gave_a_new_process_is_not_the_claims() -> None:
    # In a container the bot is pid 1 after every restart: a claim of the last one's is dead.
    import os

    pid = os.getpid()
    assert note_ledger._alive(note_ledger._owner_id())
    assert not note_ledger._alive(f"{pid}:1:gone")


def test_a_claim_naming_no_pid_this_system_could_give_is_not_alive() -> None:
    # A claim written by hand, or torn: os.kill refuses a pid past a C int (OverflowError).
    assert not note_ledger._alive("99999999999999999999999:1:gone")
    assert not note_ledger._alive("-5:1:gone")
    assert not note_ledger._alive("x:1:gone")


async def test_expired_notes_stay_unanswered_and_old_settled_ones_are_pruned(tmp_path) -> None:
    one = await NoteLedger.open(tmp_path / "notes.db")
    try:
        await one.keep_for_restart(8, 10, "u")
        await one.expire([8])
        assert not await one.claim(8, 10, "u") and await one.unanswered() == []
        await one.claim(9, 10, "u")
        await one.answered(9)
        old = time.time() - note_ledger.KEEP_SETTLED_SECONDS - 1
        await one._conn.execute("UPDATE notes SET updated_at = ?", (old,))
    finally:
        await one.aclose()
    again = await NoteLedger.open(tmp_path / "notes.db")
    try:
        assert await again.seen([8, 9]) == set()
    finally:
        await again.aclose()


async def test_the_prune_reads_only_the_settled_notes_past_the_cutoff(tmp_path) -> None:
    # A month of a big community's notes is millions of rows: read through notes_by_state, the
    # hourly prune went over every one of them while holding the lock each note's claim waits on.
    # Nor may its index be taken for a place's newest note answered, which a start asks of each.
    await (await NoteLedger.open(tmp_path / "notes.db")).aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "notes.db")) as conn:
        pruned, handled = (
            [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, args)]
            for query, args in ((note_ledger.SETTLED_BEFORE, (0,)), (note_ledger.LAST_HANDLED, (1, 0)))
        )
    assert pruned == ["SEARCH notes USING INDEX notes_by_age (updated_at<?)"]
    assert handled == ["SEARCH notes USING INDEX notes_by_place (place_id=? AND state=?)"]


async def test_every_write_waits_out_a_refusal_sqlite_gives_at_once(tmp_path, monkeypatch) -> None:
    one, two = await open_two(tmp_path)
    try:
        await one.keep_for_restart(1, 10, "nova")
        await one.keep_for_restart(2, 10, "nova")
        # A read left open on one's connection, then a write by the other process: SQLite refuses
        # one's next write at once ("database is locked") until the read ends.
        reading = await one._conn.execute("SELECT message_id FROM notes")
        await reading.fetchone()
        await two.remember_place(20, "dm", "blaze")
        refused = refusals_noted(note_ledger, monkeypatch)

        async def end_the_read() -> None:
            await refused.wait()
            await reading.close()

        ending = asyncio.create_task(end_the_read())
        assert await one.claim(1, 10, "nova")
        assert refused.is_set()  # claimed once the read ended, not before it was refused
        await one.answered(1)
        await one.turned_away(3, 10, "nova")
        await one.remember_place(10, "channel")
        await ending
        assert await two.seen([1, 2, 3]) == {1, 3}
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_place_silent_for_a_year_is_forgotten_and_a_month_is_not(tmp_path) -> None:
    # Read at every start, places must not grow for ever; but a player silent for a month may
    # still send a note while the bot is down, and it must be found.
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        day = 24 * 3600.0
        await ledger.remember_place(10, "dm", "a", now=time.time() - 366 * day)
        await ledger.remember_place(20, "dm", "b", now=time.time() - 40 * day)
        await ledger.remember_place(30, "dm", "c", now=time.time() - 400 * day)
        await ledger.remember_place(30, "dm", "c")  # spoke again today
        await ledger.prune()
        assert sorted(p for p, _ in await ledger.dms()) == [20, 30]
    finally:
        await ledger.aclose()


async def test_a_place_forgotten_as_gone_stays_remembered_if_heard_from_since(tmp_path) -> None:
    # A catch-up forgets a DM Discord answers 404 for; a note heard from there after its read
    # began says the DM is there after all.
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        began = time.time()
        await ledger.remember_place(10, "dm", "a", now=began - 60)
        await ledger.remember_place(20, "dm", "b", now=began + 1)
        await ledger.remember_place(30, "dm", "c", now=began)  # heard as the read began: since
        for place_id in (10, 20, 30):
            await ledger.forget_place(place_id, began)
        assert await ledger.dms() == [(20, "b"), (30, "c")]
    finally:
        await ledger.aclose()


async def test_places_kept_before_their_time_was_are_kept_a_year_from_the_upgrade(tmp_path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "notes.db") as conn:  # the table as an older version made it
        conn.execute("CREATE TABLE places (place_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, user_id TEXT)")
        conn.execute("INSERT INTO places VALUES (10, 'dm', 'a')")
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        await ledger.prune(time.time() + 300 * 24 * 3600.0)
        assert await ledger.dms() == [(10, "a")]
        await ledger.prune(time.time() + 366 * 24 * 3600.0)
        assert await ledger.dms() == []
    finally:
        await ledger.aclose()


async def test_a_running_ledger_forgets_old_settled_notes_without_a_restart(tmp_path) -> None:
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        for message_id in range(1, 201):
            await ledger.claim(message_id, 10, "u")
            await ledger.answered(message_id)
        await ledger.keep_for_restart(500, 10, "u")  # still to answer, however old
        old = time.time() - note_ledger.KEEP_SETTLED_SECONDS - 1
        await ledger._conn.execute(
            "UPDATE notes SET updated_at = ? WHERE message_id <= 100 OR message_id = 500", (old,)
        )
        await ledger.housekeeping()  # the recheck runs every few seconds: pruning is hourly
        assert await ledger.seen(list(range(1, 201))) == set(range(1, 201))
        await ledger.housekeeping(time.time() + note_ledger.PRUNE_EVERY_SECONDS)  # an hour on
        assert await ledger.seen(list(range(1, 201))) == set(range(101, 201))
        assert [u.message_id for u in await ledger.unanswered()] == [500]
    finally:
        await ledger.aclose()


async def test_a_clock_stepped_back_does_not_stop_the_pruning_until_it_catches_up(tmp_path) -> None:
    # The last prune, made before NTP set a fast clock back an hour, looked an hour in the
    # future: no prune until the clock had caught up with it, and after a step of years none for
    # the life of the process.
    ledger = await NoteLedger.open(tmp_path / "notes.db")  # pruned now, by the fast clock
    try:
        await ledger.claim(1, 10, "u")
        await ledger.answered(1)
        stepped_back = time.time() - 3600
        old = stepped_back - note_ledger.KEEP_SETTLED_SECONDS - 1
        await ledger._conn.execute("UPDATE notes SET updated_at = ? WHERE message_id = 1", (old,))
        await ledger.housekeeping(stepped_back)
        assert await ledger.seen([1]) == set()
    finally:
        await ledger.aclose()


# ---- usage.db, which has no ledger of its own to prune it --------------------------------------


async def test_usage_keeps_the_days_the_desk_and_the_budget_read_and_forgets_older_ones(
    tmp_path, monkeypatch
) -> None:
    db = tmp_path / "usage.db"
    today = dt.date.fromisoformat(UsageMeter.today())
    kept = 31  # days: the desk charts 14, a budget reads today's

    def day(n: int) -> str:
        return (today - dt.timedelta(days=n)).isoformat()

    def ninety_days_of_turns() -> None:
        with sqlite3.connect(db) as conn:  # what a bot running all along leaves
            conn.executemany(
                "INSERT INTO usage (day, user_id, turns) VALUES (?, 'p', 1)", [(day(n),) for n in range(90)]
            )
            conn.executemany(
                "INSERT INTO turns_by_hour (hour, turns) VALUES (?, 1)",
                [(day(n) + "T12",) for n in range(90)],
            )

    def oldest_kept() -> tuple[str, str]:
        with sqlite3.connect(db) as conn:
            return (
                conn.execute("SELECT MIN(day) FROM usage").fetchone()[0],
                conn.execute("SELECT MIN(hour) FROM turns_by_hour").fetchone()[0][:10],
            )

    meter = await UsageMeter.open(db, UsageSettings(daily_tokens=100), model="m")
    try:
        ninety_days_of_turns()
        chart = await meter.by_day(14)
        monkeypatch.setattr(UsageMeter, "today", staticmethod(lambda: day(-1)))  # past midnight
        await meter.record(NOVA, "scripted", Usage(text_in=1), 0.0)
        new_day_keeps = day(kept - 2)  # a month, the new day the last
        assert oldest_kept() == (new_day_keeps, new_day_keeps)
        assert await meter.by_day(14) == chart
    finally:
        await meter.aclose()
    monkeypatch.undo()
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM usage")
        conn.execute("DELETE FROM turns_by_hour")
    ninety_days_of_turns()
    meter = await UsageMeter.open(db, UsageSettings(daily_tokens=100), model="m")  # a restart
    await meter.aclose()
    assert oldest_kept() == (day(kept - 1), day(kept - 1))


def full_disk_refuses(ledger_file: sqlite3.Connection, statement: str) -> None:
    """From now on notes.db refuses `statement` ("INSERT", "UPDATE OF state") as a full disk
    does, to every connection, until the trigger `full` is dropped."""
    ledger_file.execute(
        f"CREATE TRIGGER full BEFORE {statement} ON notes"
        " BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
    )


async def test_a_note_whose_release_failed_is_given_back_at_the_next_look(tmp_path) -> None:
    # The release of a note Discord failed under is refused (a full disk): the note must not stay
    # this live process's claim for good, which no recheck hands out; a note marked answered
    # that the ledger refused to record stays its claim (its answer went out).
    one, two = await open_two(tmp_path)
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        assert await one.claim(7, 10, "u") and await one.claim(8, 10, "u")
        full_disk_refuses(outside, "UPDATE OF state")
        for settle in (one.release(7), one.answered(8)):
            with contextlib.suppress(sqlite3.Error):
                await settle
                raise AssertionError("the ledger took the write")
        assert await one.unanswered() == []  # still refused: still claimed, and not answered
        outside.execute("DROP TRIGGER full")
        assert await two.unanswered() == []  # another process leaves a live one's claims alone
        assert [(u.message_id, u.state) for u in await one.unanswered()] == [(7, "pending")]
        assert await one.claim(7, 10, "u") and not await one.claim(8, 10, "u")
        assert await one.unanswered() == []  # given back once: its new turn is not handed out
    finally:
        outside.close()
        await one.aclose()
        await two.aclose()


async def test_a_release_owed_does_not_give_back_a_later_claim_of_the_note(tmp_path) -> None:
    # One's release was refused and its claim lapsed; two took the note and gave it back; one
    # claims it anew, for a turn now running: the old release owed must not give that claim back.
    one, two = await open_two(tmp_path)
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        assert await one.claim(7, 10, "u")
        full_disk_refuses(outside, "UPDATE OF state")
        with contextlib.suppress(sqlite3.Error):
            await one.release(7)
        outside.execute("DROP TRIGGER full")
        await one._conn.execute("UPDATE notes SET lease_until = ? WHERE message_id = 7", (time.time() - 1,))
        assert await two.claim(7, 10, "u")
        await two.release(7)
        assert await one.claim(7, 10, "u")
        assert await one.unanswered() == [] and await two.unanswered() == []
        assert await two.seen([7]) == {7}
    finally:
        outside.close()
        await one.aclose()
        await two.aclose()


async def test_a_note_answered_unrecorded_and_given_back_is_recorded_for_any_recheck(tmp_path) -> None:
    # Its claim was refused (a full disk) and Discord failed its answer: the ledger has no row to
    # give back, and the kernel holds it for this process alone; once the file takes writes, it is
    # listed to answer, by this process or another.
    one, two = await open_two(tmp_path)
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        full_disk_refuses(outside, "INSERT")
        with contextlib.suppress(sqlite3.Error):
            await one.claim(7, 10, "u")
            raise AssertionError("the ledger took the claim")
        assert one.claim_unrecorded(7)
        with contextlib.suppress(sqlite3.Error):
            await one.release_unrecorded(7, 10, "u")
            raise AssertionError("the ledger took the note back")
        assert await one.unanswered() == []  # still refused
        outside.execute("DROP TRIGGER full")
        assert [(u.message_id, u.place_id, u.state) for u in await one.unanswered()] == [(7, 10, "pending")]
        assert await two.claim(7, 10, "u")  # no longer held by one
        assert not await one.claim(7, 10, "u") and await one.unanswered() == []
    finally:
        outside.close()
        await one.aclose()
        await two.aclose()


async def test_a_note_answered_unrecorded_anew_is_not_given_back_by_an_earlier_turn(tmp_path) -> None:
    # Given back while the ledger refused it, then answered unrecorded again (a catch-up read it):
    # the record still owed must not hand the running turn's note out.
    one, two = await open_two(tmp_path)
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        full_disk_refuses(outside, "INSERT")
        assert one.claim_unrecorded(7)
        with contextlib.suppress(sqlite3.Error):
            await one.release_unrecorded(7, 10, "u")
        assert one.claim_unrecorded(7)
        outside.execute("DROP TRIGGER full")
        assert await one.unanswered() == [] and await two.unanswered() == []
        assert not await two.claim(7, 10, "u")  # still held by one's turn
    finally:
        outside.close()
        await one.aclose()
        await two.aclose()


async def test_a_note_answered_unrecorded_given_back_once_the_ledger_takes_writes_is_listed(tmp_path) -> None:
    # The disk took writes again before Discord failed the answer: recorded at once, and let go.
    one, two = await open_two(tmp_path)
    try:
        assert one.claim_unrecorded(7) and not two.claim_unrecorded(7)
        await one.release_unrecorded(7, 10, "u")
        assert [(u.message_id, u.state) for u in await two.unanswered()] == [(7, "pending")]
        assert await two.claim(7, 10, "u")
        assert await one.unanswered() == []  # two's turn, not handed out
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_note_answered_unrecorded_anew_while_its_record_is_written_is_not_given_back(
    tmp_path,
) -> None:
    # A recheck writes the record still owed of a note as a catch-up reads the note again and
    # answers it unrecorded: the write, refused, must not leave the record owed for the new turn,
    # or the next recheck hands out the note that turn is answering.
    one, two = await open_two(tmp_path)
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        full_disk_refuses(outside, "INSERT")
        assert one.claim_unrecorded(7)
        with contextlib.suppress(sqlite3.Error):
            await one.release_unrecorded(7, 10, "u")
        writing, write = asyncio.Event(), one._write

        async def written(sql: str, parameters: tuple[object, ...]) -> object:
            writing.set()
            return await write(sql, parameters)

        one._write = written  # type: ignore[method-assign]
        async with one._lock:  # the recheck's write waits behind another statement
            looking = asyncio.create_task(one.unanswered())
            await writing.wait()
            assert one.claim_unrecorded(7)  # the catch-up's turn
        assert await looking == []
        outside.execute("DROP TRIGGER full")
        assert await one.unanswered() == [] and await two.unanswered() == []
        assert not await two.claim(7, 10, "u")  # still held by one's turn
    finally:
        outside.close()
        await one.aclose()
        await two.aclose()


async def test_a_note_given_back_then_answered_unrecorded_is_not_answered_after_a_restart(tmp_path) -> None:
    # Given back pending (Discord failed its first answer), its next claim refused (a full disk
    # again just then), answered unrecorded: its 'answered' mark must settle the pending row,
    # which no claim of this process's matches, or the restart answers the note a second time.
    one, two = await open_two(tmp_path)
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        assert one.claim_unrecorded(7)
        await one.release_unrecorded(7, 10, "u")
        full_disk_refuses(outside, "UPDATE OF state")
        with contextlib.suppress(sqlite3.Error):
            await one.claim(7, 10, "u")
            raise AssertionError("the ledger took the claim")
        assert one.claim_unrecorded(7) and not await two.claim(7, 10, "u")
        outside.execute("DROP TRIGGER full")
        await one.answered(7)
        await one.aclose()
        one = await NoteLedger.open(tmp_path / "notes.db")  # the restart
        assert await one.unanswered() == [] and await one.seen([7]) == {7}
        assert not await one.claim(7, 10, "u")
    finally:
        outside.close()
        await one.aclose()
        await two.aclose()


async def test_a_note_answered_unrecorded_is_recorded_answered_once_the_ledger_takes_writes(tmp_path) -> None:
    # Its claim refused (a full disk), the disk freed before its answer went out: recorded
    # answered then, so a restart's catch-up, reading past it, does not answer it again.
    one = await NoteLedger.open(tmp_path / "notes.db")
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        full_disk_refuses(outside, "INSERT")
        with contextlib.suppress(sqlite3.Error):
            await one.claim(7, 10, "u")
            raise AssertionError("the ledger took the claim")
        assert one.claim_unrecorded(7, 10, "u")
        outside.execute("DROP TRIGGER full")
        await one.answered(7)
        await one.aclose()
        one = await NoteLedger.open(tmp_path / "notes.db")  # the restart
        assert await one.seen([7]) == {7} and await one.last_handled(10) == 7
        assert not await one.claim(7, 10, "u")
    finally:
        outside.close()
        await one.aclose()


async def test_an_answered_mark_the_ledger_refused_is_made_at_the_next_look(tmp_path) -> None:
    # The note's answer went out and the ledger refused its mark: a note answered unrecorded
    # after it was given back stays 'pending', which a restart answers again; a claimed one
    # stays 'started', which a restart answers again unless it finds the reply.
    one = await NoteLedger.open(tmp_path / "notes.db")
    outside = sqlite3.connect(tmp_path / "notes.db", timeout=30)
    try:
        assert one.claim_unrecorded(7)
        await one.release_unrecorded(7, 10, "u")
        assert await one.claim(8, 10, "u")
        full_disk_refuses(outside, "UPDATE OF state")
        with contextlib.suppress(sqlite3.Error):
            await one.claim(7, 10, "u")
            raise AssertionError("the ledger took the claim")
        assert one.claim_unrecorded(7)
        for mark in (one.answered(7), one.answered(8)):
            with contextlib.suppress(sqlite3.Error):
                await mark
                raise AssertionError("the ledger took the mark")
        assert await one.unanswered() == []  # still refused: neither handed out meanwhile
        outside.execute("DROP TRIGGER full")
        assert await one.unanswered() == []
        states = outside.execute("SELECT message_id, state FROM notes ORDER BY message_id").fetchall()
        assert states == [(7, "answered"), (8, "answered")]
    finally:
        outside.close()
        await one.aclose()


async def test_a_note_claimed_by_a_live_process_is_not_answered_unrecorded_by_another(tmp_path) -> None:
    # One's claim landed; two's failed (busy past its timeout, a disk full since): no lock in the
    # kernel keeps two off the note, only the ledger, which still reads.
    one, two = await open_two(tmp_path)
    try:
        assert await one.claim(7, 10, "u")
        assert not await two.take_unrecorded(7, 10, "u")
        assert await two.take_unrecorded(8, 10, "u")  # no row: answered unrecorded
        await one.answered(7)
        assert not await two.take_unrecorded(7, 10, "u")
        assert await one.keep_for_restart(9, 10, "u") and await two.take_unrecorded(9, 10, "u")
        assert not await one.claim(9, 10, "u")  # held by two's turn
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_note_its_claim_would_refuse_as_crashing_is_not_answered_unrecorded(tmp_path) -> None:
    # A claim the ledger refuses (a disk full since) falls back on answering the note unrecorded,
    # where the ledger still reads: a note given back as its refusal went untold, or a dead
    # process's whose death is its MAX_CRASHES-th, ran a turn again there, uncounted, which may
    # take the bot down at every restart.
    one, two = await open_two(tmp_path)
    try:
        for message_id in (7, 8):
            assert await one.claim(message_id, 10, "u")
            await one._conn.execute(
                "UPDATE notes SET crashes = ? WHERE message_id = ?", (note_ledger.MAX_CRASHES - 1, message_id)
            )
            await died_in_its_turn(one, message_id)
        assert not await two.claim(7, 10, "u") and two.crashed_out(7) == note_ledger.MAX_CRASHES
        await two.refusal_untold(7)
        assert not await two.take_unrecorded(7, 10, "u"), "a note refused as crashing runs a turn"
        assert not await two.take_unrecorded(8, 10, "u"), "a note at its last crash runs a turn"
        assert await one.claim(9, 10, "u")
        await died_in_its_turn(one, 9)  # its first death: answered again, as a claim would
        assert await two.take_unrecorded(9, 10, "u")
        assert not await one.claim(7, 10, "u")  # not held by two
        assert one.crashed_out(7) == note_ledger.MAX_CRASHES
    finally:
        await one.aclose()
        await two.aclose()


def an_answer(user_id: str = "u", audio: bytes = b"OggS spoken") -> note_ledger.KeptAnswer:
    """An answer made for a note, its first piece of words posted before Discord failed."""
    return note_ledger.KeptAnswer(
        user_id=user_id,
        mode="voice_and_text",
        kind="answer",
        engine="openai",
        text="Nova, you have 708 points.",
        names=["Nova"],
        told=["GRV-1"],
        posted={"t0."},
        audio=ReplyAudio(audio, 2.5, "AAEC"),
    )


async def test_an_answer_kept_for_a_note_given_back_is_read_by_another_ledger(tmp_path) -> None:
    # A restart, or another process on this storage, finishes the answer made: not a new one.
    one, two = await open_two(tmp_path)
    try:
        assert await one.claim(6, 10, "u")
        await one.keep_answer(6, an_answer())
        await one.release(6)
        assert await two.claim(6, 10, "u")
        assert await two.kept_answer(6) == an_answer()
        assert await two.kept_answer(7) is None
        sent_again = an_answer()
        sent_again.posted |= {"v", "t1."}  # failed again, further on
        await two.keep_answer(6, sent_again)
        assert (await one.kept_answer(6)).posted == {"v", "t0.", "t1."}
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.parametrize("end", ["answered", "unanswerable", "expired", "answered before a crash", "pruned"])
async def test_a_kept_answer_is_let_go_when_its_note_ends(tmp_path, end: str) -> None:
    # Whichever process or path settles the note: the answer, audio and all, is not kept on.
    one, two = await open_two(tmp_path)
    try:
        for message_id in (6, 7):
            assert await one.claim(message_id, 10, "u")
            await one.keep_answer(message_id, an_answer())
        if end == "answered":
            await one.answered(6)
        elif end == "unanswerable":
            await one.unanswerable(6)
        elif end == "expired":  # too old for the recheck
            await two.expire([6])
        elif end == "answered before a crash":
            await two.answered_before_a_crash([6])
        else:
            await one.answered(6)
            await one.prune(time.time() + note_ledger.KEEP_SETTLED_SECONDS + 1)
        assert await two.kept_answer(6) is None
        assert await two.kept_answer(7) == an_answer()  # another note's, still to send
        with contextlib.closing(sqlite3.connect(tmp_path / "notes.db")) as conn:
            assert conn.execute("SELECT message_id FROM answers").fetchall() == [(7,)]
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_kept_answer_of_a_note_the_ledger_never_recorded_goes_after_a_lease(tmp_path) -> None:
    # Answered unrecorded (the ledger refused its claim) and never given back: no note row settles it.
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        await ledger.keep_answer(6, an_answer())
        await ledger.prune()
        assert await ledger.kept_answer(6) == an_answer()  # its turn may still be sending it
        await ledger.prune(time.time() + note_ledger.LEASE_SECONDS + 1)
        assert await ledger.kept_answer(6) is None
    finally:
        await ledger.aclose()


async def test_a_kept_answers_audio_too_big_to_upload_is_kept_without_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(note_ledger, "MAX_KEPT_AUDIO_BYTES", 8)
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        assert await ledger.claim(6, 10, "u") and await ledger.claim(7, 10, "u")
        await ledger.keep_answer(6, an_answer(audio=b"12345678"))
        await ledger.keep_answer(7, an_answer(audio=b"123456789"))
        assert (await ledger.kept_answer(6)).audio == ReplyAudio(b"12345678", 2.5, "AAEC")
        kept = await ledger.kept_answer(7)
        assert kept is not None and kept.audio is None and kept.text == an_answer().text
    finally:
        await ledger.aclose()


async def test_a_kept_answers_audio_is_kept_up_to_what_discord_takes_without_boosts(tmp_path) -> None:
    # Audio a channel without boosts takes (or a DM) goes again after a restart as a voice message.
    from cogs.replies import DEFAULT_UPLOAD_LIMIT

    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        assert await ledger.claim(6, 10, "u") and await ledger.claim(7, 10, "u")
        await ledger.keep_answer(6, an_answer(audio=bytes(DEFAULT_UPLOAD_LIMIT)))
        await ledger.keep_answer(7, an_answer(audio=bytes(DEFAULT_UPLOAD_LIMIT + 1)))
        kept, over = (await ledger.kept_answer(6)).audio, (await ledger.kept_answer(7)).audio
        assert kept is not None and kept.size == DEFAULT_UPLOAD_LIMIT, "audio Discord takes was dropped"
        assert over is None, "audio over Discord's upload limit was kept"
    finally:
        await ledger.aclose()


async def test_a_ledger_of_schema_version_1_keeps_its_notes_and_keeps_answers_after_the_upgrade(
    tmp_path,
) -> None:
    # notes.db as the last release before kept answers left it: two notes kept for a restart.
    from tests.test_db import user_version
    from tests.test_upgrades import UPGRADES

    path = tmp_path / "notes.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript((UPGRADES / "70e590f" / "notes.sql").read_text(encoding="utf-8"))
    assert user_version(path) == 1
    ledger = await NoteLedger.open(path)
    try:
        assert user_version(path) == SCHEMA_VERSION
        pending = [u.message_id for u in await ledger.unanswered()]
        assert pending == [1311000000000000004, 1311000000000000005]
        assert await ledger.claim(pending[0], 920000000000000001, "u")
        await ledger.keep_answer(pending[0], an_answer())
        await ledger.release(pending[0])
        assert await ledger.kept_answer(pending[0]) == an_answer()
        await ledger.expire([pending[0]])
        assert await ledger.kept_answer(pending[0]) is None
    finally:
        await ledger.aclose()


async def test_parts_posted_late_are_added_to_a_kept_answer_and_bring_back_none_let_go(tmp_path) -> None:
    ledger = await NoteLedger.open(tmp_path / "notes.db")
    try:
        assert await ledger.claim(6, 10, "u")
        await ledger.keep_answer(6, an_answer())
        await ledger.answer_posted(6, {"v", "t0.", "t1."})  # a send given up on went on by itself
        assert (await ledger.kept_answer(6)).posted == {"v", "t0.", "t1."}
        await ledger.answered(6)
        await ledger.answer_posted(6, {"v", "t0.", "t1.", "t2."})
        assert await ledger.kept_answer(6) is None
    finally:
        await ledger.aclose()


async def test_a_read_owed_keeps_its_earliest_start_until_a_read_from_there_pays_it(tmp_path) -> None:
    path = tmp_path / "notes.db"
    ledger = await NoteLedger.open(path)
    try:
        await ledger.owe_reads([10, 11], 100.0)
        await ledger.owe_reads([10], 200.0)  # a later failure does not move the earlier start
    finally:
        await ledger.aclose()
    ledger = await NoteLedger.open(path)  # owed across a restart
    try:
        assert await ledger.owed_reads() == {10: 100.0, 11: 100.0}
        await ledger.read_through(10, 150.0, 0.0)  # began after the notes owed: pays nothing
        await ledger.read_through(11, 150.0, 160.0)  # what it skipped is too old to answer now
        assert await ledger.owed_reads() == {10: 100.0}
        await ledger.read_through(10, 100.0, 0.0)
        assert await ledger.owed_reads() == {}
    finally:
        await ledger.aclose()


async def test_a_listing_owed_is_kept_apart_from_the_place_of_the_same_channel(tmp_path) -> None:
    # A channel's own read and the listing of its archived threads are owed and paid apart, in
    # the same table: the one done leaves the other owed, across a restart too.
    path = tmp_path / "notes.db"
    ledger = await NoteLedger.open(path)
    try:
        await ledger.owe_reads([10], 100.0)
        await ledger.owe_listings([10, 12], 100.0)
        await ledger.owe_listings([10], 200.0)  # a later listing does not move the earlier start
    finally:
        await ledger.aclose()
    ledger = await NoteLedger.open(path)
    try:
        assert await ledger.owed_reads() == {10: 100.0}
        assert await ledger.owed_listings() == {10: 100.0, 12: 100.0}
        await ledger.read_through(10, 100.0, 0.0)
        await ledger.listed_through(12, 150.0, 0.0)  # listed from after the notes owed: pays nothing
        assert await ledger.owed_reads() == {}
        assert await ledger.owed_listings() == {10: 100.0, 12: 100.0}
        await ledger.listed_through(10, 100.0, 0.0)
        await ledger.listed_through(12, 150.0, 160.0)  # what it skipped is too old to answer now
        assert await ledger.owed_listings() == {}
    finally:
        await ledger.aclose()
