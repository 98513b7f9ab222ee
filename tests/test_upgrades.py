"""A storage folder an older voxdesk wrote, opened by this one: nothing of a player's is lost.

Each folder under tests/upgrades/ was recorded from the commit it is named after, run for a while
on its own code: the demo grievances, complaints filed through its `ask` and its Python API (one
of them in several lines, quoted, non-ASCII), a status set by staff, preferences, conversation
turns, a spool line it filed itself, one still waiting in the spool at the upgrade, and a torn
line it set aside in the spool's .rejected (aa6a9dc, older, kept no spool and no filing ids);
d623801's news.db holds ticket news under its old key; 7de950c's (news.db schema 1, spool lines
with a format) a DM of three pieces of news Discord never answered, to be tried again, and one
that failed. 70e590f's (the last release before notes.db kept guild channels under no player's
id) also holds notes.db, with a guild channel kept under the id of the first player heard there,
notes answered and two kept for a restart; news of a DM refused and a status change no round read
yet; a player's /forget; web.db's staff logouts (one lapsed) and usage.db's turns, a playground's
among them.
The databases are kept as SQL (`iterdump`), so the fixture is readable and no binary file moves
with SQLite's version."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from bot import sentences as say
from bot.config import NewsSettings
from bot.conversations import ConversationStore
from bot.preferences import PreferenceStore
from bot.ticket_news import Delivery, NewsStore, Outcome, TicketNews
from bot.tools.grievance_spool import GrievanceSpool
from bot.tools.grievance_store import SCHEMA_VERSION, LocalGrievanceStore

from .conftest import make_settings
from .test_cli import _files
from .test_db import every_store, user_version
from .test_schemas import schema_of

UPGRADES = Path(__file__).with_name("upgrades")
OLD_VERSIONS = sorted(p.name for p in UPGRADES.iterdir() if p.is_dir())
NOVA, ARIA = "111111111111111111", "222222222222222222"


def restore(version: str, storage: Path) -> None:
    """The storage folder `version` left, made from its recorded SQL and spool files."""
    storage.mkdir()
    for dump in (UPGRADES / version).glob("*.sql"):
        with sqlite3.connect(storage / f"{dump.stem}.db") as conn:
            conn.executescript(dump.read_text(encoding="utf-8"))
    for kept in (UPGRADES / version).glob("grievances.db.spool.jsonl*"):
        shutil.copy(kept, storage / kept.name)


def rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def unquoted(schema: list[str]) -> list[str]:
    return [line.replace('"', "") for line in schema]


GRIEVANCE = "SELECT local_key, user_id, category, description, status, created_at FROM grievances ORDER BY id"


def test_every_old_version_has_its_fixture() -> None:
    assert OLD_VERSIONS == ["2717903", "70e590f", "7de950c", "aa6a9dc", "d623801"]
    for version in OLD_VERSIONS:
        assert re.fullmatch(r"[0-9a-f]{7}", version)
        assert (UPGRADES / version / "grievances.sql").exists()


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_an_upgrade_keeps_every_grievance_and_files_the_waiting_spool_line_once(
    version: str, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    restore(version, old)
    before = rows(old / "grievances.db", GRIEVANCE)
    spool = GrievanceSpool.beside(old / "grievances.db")
    waiting = spool.lines() if spool.path.exists() else []  # aa6a9dc kept no spool
    set_aside = spool.rejected.read_text(encoding="utf-8") if spool.rejected.exists() else None
    assert len(before) >= 7

    for _ in range(2):  # a second start files nothing again
        store = await LocalGrievanceStore.open(old / "grievances.db")
        await store.aclose()

    after = rows(old / "grievances.db", GRIEVANCE)
    assert after[: len(before)] == before  # same key, owner, words, status and time
    last = int(before[-1][0].removeprefix("GRV-"))
    assert after[len(before) :] == [
        (f"GRV-{last + n}", line["user_id"], line["category"], line["description"], "open", line["at"])
        for n, line in enumerate(waiting, 1)
    ]
    assert not spool.waiting()
    if set_aside is not None:
        assert spool.rejected.read_text(encoding="utf-8") == set_aside  # staff's to file, untouched
    assert user_version(old / "grievances.db") == SCHEMA_VERSION

    store = await LocalGrievanceStore.open(old / "grievances.db")
    try:
        told = {g.key: (g.description, g.status) for g in await store.status(NOVA, limit=50)}
        mine = {key: (words, status) for key, owner, _, words, status, _ in after if owner == NOVA}
        assert told == mine
        assert await store.status(ARIA, max(mine)) == []  # Nova's, not Aria's
    finally:
        await store.aclose()


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_an_upgraded_folder_has_the_schema_of_a_new_one(version: str, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    restore(version, old)
    new.mkdir()
    stores = every_store()
    for db in sorted(old.glob("*.db")):
        for folder in (old, new):
            await (await stores[db.name](folder / db.name)).aclose()
        # A table made again and renamed (news.db's) is named in quotes: the same table.
        assert unquoted(schema_of(old / db.name)) == unquoted(schema_of(new / db.name)), db.name
        assert user_version(old / db.name) == user_version(new / db.name), db.name


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_an_upgrade_keeps_preferences_and_conversations(version: str, tmp_path: Path) -> None:
    old = tmp_path / "old"
    restore(version, old)
    # The player was talking when the bot stopped for the upgrade, a minute ago: the recorded
    # turns are moved to then, or opening the store would drop them as idle for days.
    with sqlite3.connect(old / "conversations.db") as conn:
        conn.execute("UPDATE turns SET at = at - (SELECT MAX(at) FROM turns) + ?", (time.time() - 60,))
    turns = rows(old / "conversations.db", "SELECT user_id, user_text, reply_text, at FROM turns ORDER BY id")
    assert turns

    chosen = rows(
        old / "preferences.db", "SELECT user_id, voice, reply_mode FROM preferences ORDER BY user_id"
    )
    assert (NOVA, "en-us+f3") in [(user, voice) for user, voice, _ in chosen]
    preferences = await PreferenceStore.open(old / "preferences.db")
    try:
        kept = [(user, *vars(await preferences.get(user)).values()) for user, *_ in chosen]
    finally:
        await preferences.aclose()
    assert [row[:3] for row in kept] == chosen

    conversations = await ConversationStore.open(old / "conversations.db", 10, 30)
    try:
        heard = await conversations.history(NOVA)
    finally:
        await conversations.aclose()
    assert [(t.user_text, t.reply_text) for t in heard] == [
        (said, replied) for user, said, replied, _ in turns if user == NOVA
    ]


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_staff_close_an_old_versions_grievances_without_a_fix(version: str, tmp_path: Path) -> None:
    # A refusal is a status word, not a schema change: every grievance an older voxdesk kept is
    # there after staff decline one and mark another a duplicate, and the schema stays one an
    # older voxdesk opens after a rollback.
    old = tmp_path / "old"
    restore(version, old)
    before = rows(old / "grievances.db", GRIEVANCE)
    store = await LocalGrievanceStore.open(old / "grievances.db")
    try:
        opened = rows(old / "grievances.db", GRIEVANCE)  # with the spool's line filed
        first, second = [key for key, owner, *_ in opened if owner == NOVA][:2]
        assert await store.set_status_by_staff(first, "declined", by="staff")
        assert await store.set_status_by_staff(second, "duplicate", by="staff")
        said = {g.key: say.status_said(g.status) for g in await store.status(NOVA, limit=50)}
    finally:
        await store.aclose()
    assert (said[first], said[second]) == ("closed without a fix", "closed as a duplicate")
    after = rows(old / "grievances.db", GRIEVANCE)
    closed = {first: "declined", second: "duplicate"}
    assert after == [(k, u, c, d, closed.get(k, s), t) for k, u, c, d, s, t in opened]
    assert after[: len(before)] == [(k, u, c, d, closed.get(k, s), t) for k, u, c, d, s, t in before]
    assert user_version(old / "grievances.db") == SCHEMA_VERSION == 1


async def test_ticket_news_found_under_the_old_key_is_kept_and_still_due(tmp_path: Path) -> None:
    old = tmp_path / "old"
    restore("d623801", old)
    before = rows(old / "news.db", "SELECT id, user_id, ticket, status, text, state FROM news ORDER BY id")
    assert [state for *_, state in before] == ["sent", "pending"]

    news = await NewsStore.open(old / "news.db")
    try:
        due = await news.due()
    finally:
        await news.aclose()
    after = rows(old / "news.db", "SELECT id, user_id, ticket, status, text, state FROM news ORDER BY id")
    assert after == before
    assert [(n.user_id, n.text) for n in due] == [(ARIA, "GRV-18 is now in progress")]


async def test_a_dm_an_older_voxdesk_tried_is_tried_again_under_its_nonce(tmp_path: Path) -> None:
    # 7de950c sent Nova's DM of news 1, 2 and 3 with the nonce below; Discord never answered, so
    # it may have posted it. Tried again under another nonce, Nova would be told it all twice;
    # the same at a try after this voxdesk's own try failed too.
    from cogs.news import _nonce

    old = tmp_path / "old"
    restore("7de950c", old)
    told: list[tuple[str, list[int], str]] = []
    outcomes = [Outcome.RETRY, Outcome.SENT]

    class Messenger:
        async def direct(self, delivery: Delivery) -> Outcome:
            told.append((delivery.user_id, [i.id for i in delivery.items], _nonce(delivery)))
            return outcomes.pop(0)

        async def in_channel(self, user_id: str, channel_id: str, text: str) -> bool:
            return True

    news, preferences = (
        await NewsStore.open(old / "news.db"),
        await PreferenceStore.open(old / "preferences.db"),
    )
    try:
        sent = []
        for _ in range(3):
            sent.append(await TicketNews(news, None, preferences, None, NewsSettings()).deliver(Messenger()))
            rows(old / "news.db", "UPDATE news SET next_try_at = 0 WHERE state = 'pending'")  # 30 s later
    finally:
        await news.aclose()
        await preferences.aclose()
    assert sent == [0, 3, 0]
    assert told == [(NOVA, [1, 2, 3], "82117ca5c2608a273c5")] * 2
    states = rows(old / "news.db", "SELECT id, state FROM news ORDER BY id")
    assert states == [(1, "sent"), (2, "sent"), (3, "sent"), (4, "failed")]
    assert user_version(old / "news.db") == 2


def test_the_fixtures_spool_lines_are_an_old_versions() -> None:
    for spool in UPGRADES.glob("*/grievances.db.spool.jsonl"):
        line = json.loads(spool.read_text(encoding="utf-8"))
        assert set(line) - {"format"} == {"id", "user_id", "category", "description", "at", "state"}
        assert line.get("format", 1) == 1


def as_an_older_voxdesk_left(storage: Path, seeded: Path) -> None:
    """`version`'s folder with init's players.db and manuals.db as it left them: no schema
    version, not in WAL mode."""
    for name in ("players.db", "manuals.db"):
        shutil.copy(seeded / name, storage / name)
        with contextlib.closing(sqlite3.connect(storage / name)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA user_version = 0")


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_check_leaves_an_older_voxdesks_folder_as_it_was(
    version: str, tmp_path: Path, seeded_storage
) -> None:
    # `check` is run before an upgrade: the stores it opens to count must not migrate their
    # databases (the version still serving may then refuse them), nor file the spool.
    from bot.health import check_all

    storage = tmp_path / "var"
    restore(version, storage)
    as_an_older_voxdesk_left(storage, seeded_storage)
    before = _files(storage)
    results = {r.service: r for r in await check_all(make_settings(storage))}
    for service in ("stats", "manuals", "grievances"):
        assert results[service].ok, results[service].line()
    assert "12 players" in results["stats"].detail
    assert _files(storage) == before


async def test_check_makes_no_file_in_a_storage_folder_set_wrong(tmp_path: Path) -> None:
    from bot.health import check_all

    results = {r.service: r for r in await check_all(make_settings(tmp_path / "nothing-here"))}
    missing = tmp_path / "nothing-here" / "grievances.db"
    assert results["grievances"].detail == f"{missing} does not exist: run `python -m bot init` first"
    assert not results["grievances"].ok  # as the stats' and manuals' lines: not an empty store
    assert not (tmp_path / "nothing-here").exists()


async def test_check_takes_an_empty_grievances_db_as_the_bot_does(settings) -> None:
    # A file of no bytes (a crash as it was made, a `touch`) is a new store to the bot, which
    # starts on it: read-only, `check` failed it with "no such table: grievances".
    from bot.health import check_all

    (settings.storage_dir / "grievances.db").write_bytes(b"")
    results = {r.service: r for r in await check_all(settings)}
    # Not "0 grievances", though: a copy cut short leaves such a file, and `run` starts anew there.
    assert results["grievances"].ok and results["grievances"].warn
    assert "grievances.db is a file of no bytes; `run` makes it anew" in results["grievances"].detail
    assert (settings.storage_dir / "grievances.db").stat().st_size == 0


def test_a_domain_model_7de950c_built_is_heard_with_not_rebuilt(settings, monkeypatch, caplog) -> None:
    # 7de950c's domain.built.json names no file hashes: its pair is the current model, read as it
    # is, neither waited on as a build cut short nor refused.
    from bot.engines.offline.engine import speech_dir
    from bot.speech import recognizer

    folder = speech_dir(settings)
    recognizer.build_domain_model(settings.manuals_dir, folder)
    record = json.loads((folder / "domain.built.json").read_text(encoding="utf-8"))
    old = {"inputs": record["inputs"], "sentences": record["sentences"]}
    (folder / "domain.built.json").write_text(json.dumps(old) + "\n", encoding="utf-8")
    loaded: list[str] = []
    monkeypatch.setattr(recognizer, "_decoder", lambda lm, dictionary: loaded.append(lm.name) or object())
    monkeypatch.setattr(time, "sleep", lambda seconds: pytest.fail("waited on a pair it takes as it is"))

    assert recognizer.built_from_current_inputs(folder, settings.manuals_dir)
    recognizer.Recognizer(folder)
    assert loaded and "not the pair" not in caplog.text


async def test_a_grievance_7de950c_lost_at_shutdown_is_refiled_once(tmp_path: Path) -> None:
    # 7de950c logged a grievance the full disk still refused at shutdown under its own mark, with
    # no filing id: the log is its one copy, and `refile` after the upgrade must find it there.
    from .test_cli import voxdesk

    old = tmp_path / "old"
    restore("7de950c", old)
    words = 'the shop took my gems twice, "again" «ünïcode»'
    row = {"user_id": ARIA, "category": "wallet", "description": words, "at": "2026-12-06T05:30:00Z"}
    lost = json.dumps({**row, "state": "local_only"})
    log_file = tmp_path / "voxdesk.log"
    log_file.write_text(
        f"<3>2026-12-06 05:31:00 ERROR    bot.tools.grievance_store grievance held in memory lost at"
        f" shutdown: {lost}\n",
        encoding="utf-8",
    )
    before = rows(old / "grievances.db", GRIEVANCE)

    for _ in range(2):  # the log read twice files it once
        done = voxdesk("refile", str(log_file), storage=old)
        assert done.returncode == 0, done.stderr
        assert "1 unfiled grievance(s) found" in done.stdout

    after = rows(old / "grievances.db", GRIEVANCE)
    last = int(before[-1][0].removeprefix("GRV-"))
    assert after[: len(before)] == before
    # The spool's line waiting since 7de950c, then the one from the log.
    assert [(key, owner, words) for key, owner, _, words, _, _ in after[len(before) :]][-1:] == [
        (f"GRV-{last + 2}", ARIA, words)
    ]


# 70e590f's folder: where its notes came from (a guild channel under its first speaker's id), notes
# answered and kept for a restart, web logouts, a /forget.
GUILD_CHANNEL, NOVA_DM, ARIA_DM = 920000000000000001, 930000000000000001, 930000000000000002
ANSWERED = [1311000000000000001, 1311000000000000002, 1311000000000000003]
KEPT_FOR_RESTART = [1311000000000000004, 1311000000000000005]


def restored_70e590f(storage: Path) -> None:
    """70e590f's folder as its bot stopped for the upgrade a minute ago: the recorded times moved
    to then, or opening the stores would prune what has since aged past their limits."""
    restore("70e590f", storage)
    shift = (
        time.time() - 60 - max(row[0] for row in rows(storage / "notes.db", "SELECT updated_at FROM notes"))
    )
    for db, sql in (
        ("notes.db", "UPDATE notes SET updated_at = updated_at + ?"),
        ("notes.db", "UPDATE places SET heard_at = heard_at + ?"),
        ("conversations.db", "UPDATE turns SET at = at + ?"),
        ("web.db", "UPDATE ended_logins SET until = until + ?"),
    ):
        with contextlib.closing(sqlite3.connect(storage / db)) as conn, conn:
            conn.execute(sql, (shift,))


async def started_on(storage: Path) -> None:
    """What a start of this voxdesk does to each database: opened (migrated, pruned), closed."""
    for name, open_store in every_store().items():
        if name != "grievances-recent.db":  # the grievance store's, opened with it
            await (await open_store(storage / name)).aclose()


async def test_a_guild_channel_70e590f_kept_under_a_player_is_not_theirs(
    tmp_path: Path, seeded_storage
) -> None:
    from .test_cli import voxdesk

    storage = tmp_path / "var"
    restored_70e590f(storage)
    as_an_older_voxdesk_left(storage, seeded_storage)
    assert rows(storage / "notes.db", f"SELECT user_id FROM places WHERE place_id = {GUILD_CHANNEL}") == [
        (NOVA,)
    ]
    await started_on(storage)

    done = voxdesk("player", "export", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    held = json.loads(done.stdout)
    assert [p["place_id"] for p in held["notes"]["places"]] == [NOVA_DM]
    # Her notes in the guild channel are hers all the same.
    assert sorted(n["message_id"] for n in held["notes"]["notes"]) == [
        ANSWERED[0],
        ANSWERED[1],
        KEPT_FOR_RESTART[1],
    ]

    done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "kept 3 note id(s) and 1 DM channel(s)" in done.stdout
    # Everyone's place: catch-up still reads it after a restart.
    assert rows(storage / "notes.db", "SELECT place_id, kind FROM places ORDER BY place_id") == [
        (GUILD_CHANNEL, "channel"),
        (NOVA_DM, "dm"),
        (ARIA_DM, "dm"),
    ]


async def test_notes_70e590f_answered_or_kept_for_a_restart_stay_so(tmp_path: Path) -> None:
    from bot.note_ledger import NoteLedger

    storage = tmp_path / "var"
    restored_70e590f(storage)
    await started_on(storage)

    notes = await NoteLedger.open(storage / "notes.db")
    try:
        await notes.housekeeping()
        assert [(n.message_id, n.place_id, n.user_id) for n in await notes.unanswered()] == [
            (KEPT_FOR_RESTART[0], GUILD_CHANNEL, ARIA),
            (KEPT_FOR_RESTART[1], NOVA_DM, NOVA),
        ]
        assert await notes.seen(ANSWERED) == set(ANSWERED)  # never answered twice
        assert [await notes.claim(m, GUILD_CHANNEL, ARIA) for m in (ANSWERED[2], KEPT_FOR_RESTART[0])] == [
            False,
            True,
        ]
        assert rows(storage / "notes.db", "SELECT place_id FROM places WHERE kind = 'channel'") == [
            (GUILD_CHANNEL,)
        ]
        assert sorted(await notes.dms()) == [(NOVA_DM, NOVA), (ARIA_DM, ARIA)]
        assert await notes.last_handled(GUILD_CHANNEL) == ANSWERED[2]
    finally:
        await notes.aclose()


async def test_news_70e590f_left_is_told_once_with_what_it_had_not_read(tmp_path: Path) -> None:
    # Nova's DM was refused (pending), a status staff set after the last round was unread, and the
    # spool line still waiting is filed at the start: each told once, to its player only, and
    # the third player (news off) nothing.
    storage = tmp_path / "var"
    restored_70e590f(storage)
    await started_on(storage)
    told: list[tuple[str, list[tuple[str, str, str]]]] = []

    class Messenger:
        async def direct(self, delivery: Delivery) -> Outcome:
            told.append((delivery.user_id, [(i.ticket, i.kind, i.status) for i in delivery.items]))
            return Outcome.SENT

        async def in_channel(self, user_id: str, channel_id: str, text: str) -> bool:
            return True

    news, preferences, grievances = (
        await NewsStore.open(storage / "news.db"),
        await PreferenceStore.open(storage / "preferences.db"),
        await LocalGrievanceStore.open(storage / "grievances.db"),
    )
    try:
        for _ in range(2):
            rows(storage / "news.db", "UPDATE news SET next_try_at = 0 WHERE state = 'pending'")
            await TicketNews(news, grievances, preferences, None, NewsSettings(enabled=True)).run_once(
                Messenger()
            )
    finally:
        await news.aclose()
        await preferences.aclose()
        await grievances.aclose()
    # Nova's DM tried again as it was (its news, under its key); the news found since, a DM after it.
    assert told == [
        (NOVA, [("GRV-14", "status", "in progress")]),
        (ARIA, [("GRV-15", "status", "waiting on player")]),
        (NOVA, [("GRV-19", "filed", "open")]),
    ]


async def test_a_logout_and_a_forget_70e590f_kept_still_hold(tmp_path: Path) -> None:
    from bot.conversations import PastTurn
    from bot.web.security import StaffLogins

    storage = tmp_path / "var"
    restored_70e590f(storage)
    await started_on(storage)

    logins = await StaffLogins.open(storage / "web.db")
    try:
        # A cookie copied before the logout opens nothing; the logout long lapsed is gone.
        assert await logins.ended("GVlj2a54jnxixWKttjGFOQ")
        assert not await logins.ended("pZ8rX1aLb0")
    finally:
        await logins.aclose()
    assert rows(storage / "web.db", "SELECT login FROM ended_logins") == [("GVlj2a54jnxixWKttjGFOQ",)]

    (forgotten_at,) = rows(storage / "conversations.db", f"SELECT at FROM turns WHERE user_id = '{ARIA}'")[0]
    conversations = await ConversationStore.open(storage / "conversations.db", 10, 30)
    try:
        late = PastTurn(user_text="how many points do i have", reply_text="1357 points", tool_results=[])
        # The answer to a note sent before Aria's /forget is not kept; one sent after it is.
        assert not await conversations.append(ARIA, late, sent_at=forgotten_at - 5)
        assert await conversations.append(ARIA, late, sent_at=forgotten_at + 5)
        assert [t.user_text for t in await conversations.history(ARIA)] == [late.user_text]
    finally:
        await conversations.aclose()


async def test_events_70e590f_left_unread_wait_an_hour_with_news_off(tmp_path: Path) -> None:
    # Started with news off, this voxdesk drops the grievance events nothing reads, but only those
    # there a whole PRUNE_EVERY_SECONDS: a process with news on (a deploy switching it on) reads
    # the status 70e590f left unread first. Nova's news in news.db is never dropped.
    from bot.ticket_news import PRUNE_EVERY_SECONDS

    storage = tmp_path / "var"
    restored_70e590f(storage)
    await started_on(storage)
    events = "SELECT id FROM news_events ORDER BY id"
    unread = rows(storage / "grievances.db", events)
    pending = "SELECT id FROM news WHERE state = 'pending'"
    assert len(unread) == 2 and rows(storage / "news.db", pending) == [
        (1,)
    ]  # GRV-15's status, GRV-19's filing

    news, preferences, grievances = (
        await NewsStore.open(storage / "news.db"),
        await PreferenceStore.open(storage / "preferences.db"),
        await LocalGrievanceStore.open(storage / "grievances.db"),
    )
    try:
        off = TicketNews(news, grievances, preferences, None, NewsSettings(enabled=False))
        await off.housekeeping(now=1000.0)
        await off.housekeeping(now=1000.0 + PRUNE_EVERY_SECONDS - 1)
        assert rows(storage / "grievances.db", events) == unread
        await off.housekeeping(now=1000.0 + PRUNE_EVERY_SECONDS)
        assert rows(storage / "grievances.db", events) == []
    finally:
        await news.aclose()
        await preferences.aclose()
        await grievances.aclose()
    assert rows(storage / "news.db", pending) == [(1,)]


@pytest.mark.parametrize("version", OLD_VERSIONS)
def test_export_and_forget_read_a_folder_no_store_has_opened_since_the_upgrade(
    version: str, tmp_path: Path
) -> None:
    # A player's request handled right after installing this voxdesk, before the bot started on
    # the folder: its databases are as the older voxdesk left them, without the columns a store
    # adds as it opens (aa6a9dc's turns have no `conversation`, 2717903's preferences no `notify`).
    # A forget stopped at one of them would leave the player erased from some databases only.
    from bot.app import StoragePaths
    from bot.player_data import export, forget

    old = tmp_path / "old"
    restore(version, old)
    storage = StoragePaths(old)
    mine = f"WHERE user_id = '{NOVA}'"
    turns = rows(old / "conversations.db", f"SELECT user_text, reply_text FROM turns {mine}")
    chosen = rows(old / "preferences.db", f"SELECT voice FROM preferences {mine}")
    assert turns and chosen

    held = export(storage, NOVA)
    assert [(t["user_text"], t["reply_text"]) for t in held["conversations"]["turns"]] == turns
    assert held["conversations"]["latest_forget"] == []
    assert [p["voice"] for p in held["preferences"]["preferences"]] == [voice for (voice,) in chosen]

    said = forget(storage, NOVA)
    # Where turns have their `conversation` column, the erasure's time is kept in their place.
    assert said[0].startswith(f"conversations.db: {len(turns)} turn(s) of conversation erased")
    assert said[1] == "preferences.db: 1 row(s) of settings erased"
    # No words left: at most the erasure's own mark, with none.
    left = rows(old / "conversations.db", f"SELECT user_text, reply_text FROM turns {mine}")
    assert all(not user_text and not reply_text for user_text, reply_text in left), left
    assert rows(old / "preferences.db", f"SELECT 1 FROM preferences {mine}") == []
