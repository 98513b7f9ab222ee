"""`voxdesk player export|forget`: one player's data, on the real stores, and nobody else's."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bot.app import storage_paths
from bot.audio import ReplyAudio
from bot.config import UsageSettings
from bot.conversations import FORGOTTEN, ConversationStore
from bot.engines.base import PastTurn, Usage
from bot.note_ledger import KeptAnswer, NoteLedger
from bot.preferences import PreferenceStore
from bot.ticket_news import NewsStore
from bot.tools.grievance_spool import GrievanceSpool
from bot.tools.grievance_store import LocalGrievanceStore
from bot.usage import UsageMeter

from .conftest import BLAZE, NOVA, QUILL, residue
from .test_cli import voxdesk


async def _fill(storage: Path, user_id: str, words: str, notify: bool = True, forgot: bool = False) -> None:
    """What a season of notes leaves behind for `user_id`, through each store's own API
    (`forgot`: with a /forget a minute before those notes)."""
    paths_ = storage_paths_of(storage)
    conversations = await ConversationStore.open(paths_.conversations, max_turns=10, idle_minutes=60)
    if forgot:
        await conversations.reset(user_id, sent_at=time.time() - 60)
    await conversations.append(user_id, PastTurn(user_text=words, reply_text="Filed as GRV-1."), "dm")
    await conversations.append(user_id, PastTurn(user_text="and my points", reply_text="708."), "555")
    await conversations.aclose()
    prefs = await PreferenceStore.open(paths_.preferences)
    await prefs.set_voice(user_id, "en-gb")
    await prefs.set_notify(user_id, notify)
    await prefs.aclose()
    meter = await UsageMeter.open(paths_.usage, UsageSettings(), model="m")
    await meter.record(user_id, "offline", Usage(text_in=10), 3.0)
    await meter.aclose()
    grievances = await LocalGrievanceStore.open(paths_.grievances)
    filed = await grievances.register(user_id, "wallet", words)
    assert await grievances.add_staff_note(filed.key, "staff", f"called back about: {words}")
    assert await grievances.set_status_by_staff(filed.key, "in progress", by="staff")
    await grievances.aclose()
    news = await NewsStore.open(paths_.news)
    for status in ("in_progress", "resolved"):
        await news.add(user_id, "local:x", filed.key, "status", status, f"{filed.key} is {status}")
        await news.finish([i.id for i in await news.due() if i.user_id == user_id], "sent")
    await news.set_last_channel(user_id, "555")
    assert await news.claim_closed_notice(user_id)
    await news.aclose()
    ledger = await NoteLedger.open(paths_.notes)
    message_id = 9_000 + int(user_id[0])
    assert await ledger.claim(message_id, 777, user_id)
    await ledger.answered(message_id)
    # A note whose answer Discord failed part way: the answer is kept, words and voice, for the
    # recheck to finish.
    waiting = 8_000 + int(user_id[0])
    assert await ledger.claim(waiting, 777, user_id)
    spoken = ReplyAudio(f"OggS {words}".encode(), 1.5, "AAEC")
    answer = KeptAnswer(
        user_id, "voice_and_text", "answer", "offline", f"About {words}: GRV-1.", [], [], {"v"}, spoken
    )
    await ledger.keep_answer(waiting, answer)
    await ledger.release(waiting)
    await ledger.aclose()


def _spool(storage: Path, user_id: str, words: str) -> None:
    """A grievance the database refused, kept for later (the next store to open files it)."""
    GrievanceSpool.beside(storage_paths_of(storage).grievances).keep(
        user_id=user_id, category="other", description=words, at="2026-12-05", state="open"
    )


def storage_paths_of(storage: Path):  # type: ignore[no-untyped-def]
    from tests.conftest import make_settings

    return storage_paths(make_settings(storage))


# A player's turns of conversation, not the row keeping when they last used /forget or were erased.
KEPT_WORDS = "SELECT COUNT(*) FROM turns WHERE user_id = ? AND conversation != ?"


def _count(db: Path, sql: str, *args: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchone()[0]


async def test_export_holds_everything_kept_about_a_player_and_nothing_of_another(settings, tmp_path) -> None:
    storage = settings.storage_dir
    await _fill(storage, NOVA, "nova was charged twice for gems", forgot=True)
    await _fill(storage, BLAZE, "blaze lost a tournament prize", forgot=True)
    _spool(storage, NOVA, "nova was charged twice for gems (kept)")
    _spool(storage, BLAZE, "blaze was kicked (kept)")
    rejected = GrievanceSpool.beside(storage_paths_of(storage).grievances).rejected
    cut_short = [f'{{"id": "a1", "user_id": "{who}", "category": "wallet", "descr' for who in (NOVA, BLAZE)]
    rejected.write_text("\n".join(cut_short) + "\n")
    out = tmp_path / "nova.json"
    done = voxdesk("player", "export", NOVA, "--out", str(out), storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    held = json.loads(out.read_text())
    assert held["user_id"] == NOVA
    assert [t["user_text"] for t in held["conversations"]["turns"]] == [
        "nova was charged twice for gems",
        "and my points",
    ]
    assert [t["conversation"] for t in held["conversations"]["latest_forget"]] == [FORGOTTEN]
    assert held["preferences"]["preferences"][0]["voice"] == "en-gb"
    assert held["usage"]["usage"][0]["text_in"] == 10
    assert [n["status"] for n in held["news"]["news"]] == ["in_progress", "resolved"]
    assert held["news"]["last_channel"][0]["channel_id"] == "555"
    assert [(n["place_id"], n["state"]) for n in held["notes"]["notes"]] == [
        (777, "pending"),
        (777, "answered"),
    ]
    (kept,) = held["notes"]["answers"]
    assert (kept["text"], kept["posted"]) == ("About nova was charged twice for gems: GRV-1.", '["v"]')
    assert base64.b64decode(kept["audio"]) == b"OggS nova was charged twice for gems"
    descriptions = [g["description"] for g in held["grievances"]["grievances"]]
    assert "nova was charged twice for gems" in descriptions
    assert [g["description"] for g in held["grievances"]["waiting_in_spool"]] == [
        "nova was charged twice for gems (kept)"
    ]
    assert held["grievances"]["unreadable_spool_lines"] == [cut_short[0]]
    assert [n["body"] for n in held["grievances"]["staff_notes"]] == [
        "called back about: nova was charged twice for gems"
    ]
    (mine,) = [
        g["id"]
        for g in held["grievances"]["grievances"]
        if g["description"] == "nova was charged twice for gems"
    ]
    assert [
        (c["grievance_id"], c["from_status"], c["to_status"], c["changed_by"])
        for c in held["grievances"]["status_changes"]
    ] == [(mine, "open", "in progress", "staff")]
    assert "blaze" not in out.read_text() and BLAZE not in out.read_text()


async def test_export_holds_the_news_of_a_players_tickets_ticket_news_has_not_read_yet(settings) -> None:
    # A Jira issue moved to another project: until ticket news reads its event (news off, or the
    # bot stopped), the key the player knew is kept there alone, the grievance holding the new one.
    from bot import player_data

    paths_ = storage_paths_of(settings.storage_dir)
    grievances = await LocalGrievanceStore.open(paths_.grievances)
    for user_id, old, new in ((NOVA, "OLD-5", "SUP-5"), (BLAZE, "OLD-6", "SUP-6")):
        filed = await grievances.register(user_id, "wallet", "charged twice")
        await grievances.mark_pushed(filed.key, old)
        await grievances.follow(filed.key, new)
    await grievances.aclose()
    held = player_data.export(paths_, NOVA)
    (mine,) = [g["id"] for g in held["grievances"]["grievances"] if g["remote_key"] == "SUP-5"]
    assert [(e["grievance_id"], e["kind"], e["was"]) for e in held["grievances"]["news_events"]] == [
        (mine, "pushed", None),
        (mine, "moved", "OLD-5"),
    ]
    assert "OLD-6" not in json.dumps(held)


async def test_export_and_forget_cover_a_players_keys_owed_back_to_ticket_news(settings) -> None:
    # A stop cut the untelling of a /grievance file's key whose answer never went: owed on disk,
    # under the player's id, until the next start gives it back.
    from bot import player_data

    storage = settings.storage_dir
    paths_ = storage_paths_of(storage)
    news = await NewsStore.open(paths_.news)
    for user_id, request, key in ((NOVA, "70", "GRV-7"), (BLAZE, "71", "GRV-8"), (NOVA, "72", "GRV-9")):
        await news.owe_untelling(user_id, "discord", request, [key])
    await news.aclose()
    held = player_data.export(paths_, NOVA)
    owed = [(row["name"], json.loads(row["value"])) for row in held["news"]["untellings_owed"]]
    assert owed == [(f"untell:{NOVA}:discord:70", ["GRV-7"]), (f"untell:{NOVA}:discord:72", ["GRV-9"])]
    assert "GRV-8" not in json.dumps(held)
    done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    # Still to DM, as news still to send is: the player's own tickets, no words.
    assert "kept: 2 record(s) of ticket keys an answer never told, still to DM" in done.stdout
    news = await NewsStore.open(paths_.news)
    assert sorted((user_id, keys) for _, user_id, _, _, keys in await news.untellings_owed()) == sorted(
        [(NOVA, ["GRV-7"]), (BLAZE, ["GRV-8"]), (NOVA, ["GRV-9"])]
    )
    await news.aclose()


async def test_forget_keeps_a_players_newest_news_of_a_ticket_staff_gave_another(settings) -> None:
    # Each player's newest piece of a ticket is what a change is compared with: a newer piece of
    # the same Jira issue for the player staff gave it to is no reason to erase Nova's.
    storage = settings.storage_dir
    news = await NewsStore.open(storage_paths_of(storage).news)
    for user_id, status in ((NOVA, "resolved"), (BLAZE, "reopened")):
        assert await news.add(user_id, "jira", "GRV-9", "status", status, f"GRV-9 is {status}")
        await news.finish([i.id for i in await news.due() if i.user_id == user_id], "sent")
    await news.aclose()
    done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "news.db: 0 piece(s) of ticket news" in done.stdout
    assert _count(storage_paths_of(storage).news, "SELECT COUNT(*) FROM news WHERE user_id = ?", NOVA) == 1


async def test_forget_erases_the_words_of_the_news_it_keeps_once_told(settings) -> None:
    # The newest piece of a ticket stays for its status; its words quote the ticket's description,
    # which grievances.db keeps for the studio anyway. News still to send keeps the words it carries.
    storage = settings.storage_dir
    paths_ = storage_paths_of(storage)
    news = await NewsStore.open(paths_.news)
    for user_id, ticket in ((NOVA, "GRV-9"), (BLAZE, "GRV-8")):
        assert await news.add(user_id, "jira", ticket, "status", "resolved", f'{ticket} ("charged twice")')
        await news.finish([i.id for i in await news.due() if i.user_id == user_id], "sent")
    # Claimed by a bot killed before its DM was tried: sent later, words and all.
    assert await news.add(NOVA, "jira", "GRV-6", "status", "open", 'GRV-6 ("lost my pet")')
    assert await news.claim([i.id for i in await news.due() if i.ticket == "GRV-6"])
    assert await news.add(NOVA, "jira", "GRV-7", "status", "open", 'GRV-7 ("locked out")')
    await news._conn.close()  # killed: a store closing would give its claim back
    done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    # Said as it is: the pieces still to send are sent with their words, and keep them after.
    assert "its words erased if told: 2 still to send keeps them" in done.stdout
    with contextlib.closing(sqlite3.connect(paths_.news)) as conn:
        rows = conn.execute("SELECT user_id, ticket, state, text FROM news ORDER BY ticket").fetchall()
    assert rows == [
        (NOVA, "GRV-6", "claimed", 'GRV-6 ("lost my pet")'),
        (NOVA, "GRV-7", "pending", 'GRV-7 ("locked out")'),
        (BLAZE, "GRV-8", "sent", 'GRV-8 ("charged twice")'),
        (NOVA, "GRV-9", "sent", ""),
    ]
    news = await NewsStore.open(paths_.news)
    assert not await news.add(NOVA, "jira", "GRV-9", "status", "resolved", "again", marker="2", heard="open")
    await news.aclose()


async def test_forget_erases_what_serves_the_bot_keeps_the_record_and_says_which(settings) -> None:
    storage = settings.storage_dir
    await _fill(storage, NOVA, "nova was charged twice for gems", forgot=True)
    await _fill(storage, BLAZE, "blaze lost a tournament prize", notify=False, forgot=True)
    _spool(storage, NOVA, "nova was charged twice for gems (kept)")
    paths_ = storage_paths_of(storage)
    blaze_before = json.loads(voxdesk("player", "export", BLAZE, storage=storage, timeout=60).stdout)
    novas = _count(paths_.grievances, "SELECT COUNT(*) FROM grievances WHERE user_id = ?", NOVA)

    done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    said = done.stdout
    assert "conversations.db: 2 turn(s) of conversation erased, and when they last used /forget" in said
    assert "preferences.db: 1 row(s) of settings erased" in said
    assert "usage.db: 1 day(s) of usage erased" in said
    assert "news.db: 1 piece(s) of ticket news and 2 channel note(s) erased; kept: 1" in said
    assert f"grievances.db: kept {novas} grievance(s), 1 waiting in the spool" in said
    assert "and 1 status change(s) of them: the studio's record" in said
    assert "notes.db: 1 answer(s) not yet wholly sent erased; kept 2 note id(s)" in said
    assert "backups" in said

    # What stays is the erasure's time, no words: a turn of a note sent before it is not kept.
    assert _count(paths_.conversations, "SELECT COUNT(*) FROM turns WHERE user_id = ?", NOVA) == 1
    assert _count(paths_.conversations, KEPT_WORDS, NOVA, FORGOTTEN) == 0
    assert _count(paths_.preferences, "SELECT COUNT(*) FROM preferences WHERE user_id = ?", NOVA) == 0
    assert _count(paths_.usage, "SELECT COUNT(*) FROM usage WHERE user_id = ?", NOVA) == 0
    assert _count(paths_.notes, "SELECT COUNT(*) FROM answers WHERE user_id = ?", NOVA) == 0
    # The newest news of the ticket stays, or a poll would tell its status again.
    told = "SELECT COUNT(*) FROM news WHERE user_id = ? AND status = 'resolved'"
    assert _count(paths_.news, told, NOVA) == 1
    assert _count(paths_.news, "SELECT COUNT(*) FROM last_channel WHERE user_id = ?", NOVA) == 0
    assert _count(paths_.grievances, "SELECT COUNT(*) FROM grievances WHERE user_id = ?", NOVA) >= 1
    # A ticket's history is the studio's record with it.
    histories = "SELECT COUNT(*) FROM meta WHERE name LIKE 'status_history:%'"
    assert _count(paths_.grievances, histories) == 2

    # Nothing of another player's went.
    blaze_after = json.loads(voxdesk("player", "export", BLAZE, storage=storage, timeout=60).stdout)
    blaze_before.pop("exported_at"), blaze_after.pop("exported_at")
    assert blaze_after == blaze_before

    # A player who switched ticket news off keeps that choice through an erasure; another
    # player's choices stay theirs.
    prefs = await PreferenceStore.open(paths_.preferences)
    await prefs.set_voice(QUILL, "en-us")
    await prefs.set_reply_mode(QUILL, "text")
    await prefs.aclose()
    done = voxdesk("player", "forget", BLAZE, storage=storage, timeout=60)
    assert "kept: ticket news off, as they chose" in done.stdout
    prefs = await PreferenceStore.open(paths_.preferences)
    chosen, quills = await prefs.get(BLAZE), await prefs.get(QUILL)
    await prefs.aclose()
    assert (chosen.voice, chosen.notify) == (None, False)
    assert (quills.voice, quills.reply_mode) == ("en-us", "text")
    # Blaze's ticket news off is no reason to keep Quill's settings.
    done = voxdesk("player", "forget", QUILL, storage=storage, timeout=60)
    assert "preferences.db: 1 row(s) of settings erased" in done.stdout


def test_an_id_that_is_no_discord_id_is_refused_in_one_line(settings) -> None:
    done = voxdesk("player", "forget", "1 OR 1=1", storage=settings.storage_dir, timeout=60)
    assert done.returncode == 2
    assert "is not a Discord user id" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("action", ["export", "forget"])
@pytest.mark.parametrize("user_id", ["42", "123456789012345678"])
def test_an_id_of_whom_nothing_is_kept_is_said_to_be_no_player_here(settings, action, user_id) -> None:
    # Any digits pass as an id (tests and fakes use short ones), so a mistyped one was answered as
    # a player of whom nothing is kept: an export of empty lists, "0 erased" in every database,
    # status 0 and not a word. Still done (an empty export is the true answer), but said.
    done = voxdesk("player", action, user_id, storage=settings.storage_dir, timeout=60)
    assert done.returncode == 0, done.stderr
    if action == "export":
        assert json.loads(done.stdout)["user_id"] == user_id
    hint = " (a Discord user id has 17 to 20 digits)" if len(user_id) < 17 else ""
    assert done.stderr == (
        f"player {action}: no such player here: voxdesk keeps nothing about {user_id} in"
        f" {settings.storage_dir}{hint}\n"
    )
    known = voxdesk("player", action, NOVA, storage=settings.storage_dir, timeout=60)
    assert (known.returncode, known.stderr) == (0, "")


@pytest.mark.parametrize(("digits", "hinted"), [(16, True), (17, False), (20, False), (21, True)])
def test_the_hint_of_an_ids_length_is_given_outside_a_snowflakes_alone(settings, digits, hinted) -> None:
    # Discord's ids since 2015 have 17 to 20 digits: a miss of one at either end is hinted.
    from bot import player_data

    said = player_data.unknown("1" * digits, storage_paths(settings))
    assert said.endswith(" (a Discord user id has 17 to 20 digits)") == hinted, said


def test_a_player_kept_in_the_points_database_alone_is_a_player_here(settings) -> None:
    # A player a studio linked who has filed, said and set nothing yet: a player all the same,
    # not "no such player here".
    from bot import player_data

    storage = storage_paths(settings)
    linked = "575757575757575757"
    with contextlib.closing(sqlite3.connect(storage.players)) as conn, conn:
        conn.execute(
            "INSERT INTO players (player_id, discord_user_id, player_name) VALUES (900, ?, 'Wren')", (linked,)
        )
    held = player_data.export(storage, linked)
    assert [name for name in [*player_data.BY_USER, "players"] if any(held[name].values())] == ["players"]
    assert not player_data.nothing_kept(held)


def test_export_never_overwrites_a_file(settings, tmp_path) -> None:
    there = tmp_path / "there.json"
    there.write_text("{}")
    done = voxdesk("player", "export", NOVA, "--out", str(there), storage=settings.storage_dir, timeout=60)
    assert done.returncode == 4 and there.read_text() == "{}"
    # "File exists" alone read as a failure to make it, not as a refusal to write over it.
    assert done.stderr == (
        f"player export: {there} exists, and an export never overwrites a file: give a new file's"
        " name, or move that one away first\n"
    )


@pytest.mark.parametrize("out", ["a folder", "in no folder"])
def test_export_to_a_folder_or_into_a_missing_one_says_what_to_give(settings, tmp_path, out) -> None:
    # A folder was "File exists"; a file in a missing folder, "no such file" naming the hidden
    # .partial file the export is first written to.
    exports = tmp_path / "exports"
    exports.mkdir()
    given = exports if out == "a folder" else exports / "2026" / "nova.json"
    done = voxdesk("player", "export", NOVA, "--out", str(given), storage=settings.storage_dir, timeout=60)
    said = {
        "a folder": f"{exports} is a folder: --out names the new file the export is written to,"
        f" such as {exports / (NOVA + '.json')}",
        "in no folder": f"{exports / '2026'} is no folder: make it first, or give a file in one that is",
    }[out]
    status = 2 if out == "a folder" else 4  # a wrong argument; a folder that cannot take it
    assert (done.returncode, done.stdout, done.stderr) == (status, "", f"player export: {said}\n")
    assert list(exports.iterdir()) == []


def test_export_into_a_folder_this_user_cannot_write_names_that_folder(settings, tmp_path) -> None:
    # Refused as the export was written, the line named the hidden .partial file
    # (".nova.json.<pid>.<random>.partial: Permission denied"), after the player's data was read.

    exports = tmp_path / "exports"
    exports.mkdir(mode=0o500)
    command = ["player", "export", NOVA, "--out", str(exports / "nova.json")]
    try:
        done = voxdesk(*command, storage=settings.storage_dir, timeout=120, unprivileged=True)
    finally:
        exports.chmod(0o700)
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr == f"player export: {exports}: Permission denied\n"
    assert list(exports.iterdir()) == []


def test_export_to_a_folder_for_an_id_that_is_no_discord_id_suggests_no_file_by_it(
    settings, tmp_path
) -> None:
    # The folder's refusal came first and offered "<folder>/../x.json" as the file to give: a path
    # out of that folder, for an id the export refuses anyway.
    exports = tmp_path / "exports"
    exports.mkdir()
    upward = f"{os.pardir}/x"  # built, as the repository's sources name no path beside it
    storage = settings.storage_dir
    done = voxdesk("player", "export", upward, "--out", str(exports), storage=storage, timeout=60)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"player export: '{upward}' is not a Discord user id (digits only, e.g. 111111111111111111)\n"
    )
    assert list(exports.iterdir()) == []


# `player export --out` killed half-way through writing the player's data (SIGKILL, a reboot).
KILLED_MID_EXPORT = """
import builtins, os, signal, sys
from bot import player_data
from bot.cli import main
class Half:
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *_):
        self.f.close()
    def write(self, text):
        self.f.write(text[: len(text) // 2])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
player_data.open = lambda *a, **k: Half(builtins.open(*a, **k))
sys.exit(main(["player", "export", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_an_export_killed_half_way_leaves_no_file_that_looks_whole_and_is_made_again(
    settings, tmp_path
) -> None:
    # Half a player's data under the name asked for reads as their export (staff send it on),
    # and an export run again refused it as a file it never overwrites.
    import os
    import signal
    import subprocess
    import sys

    from .conftest import REPO

    exports = tmp_path / "exports"
    exports.mkdir()
    out = exports / "nova.json"
    env = {**os.environ, "VOXDESK_STORAGE_DIR": str(settings.storage_dir)}
    child = [sys.executable, "-c", KILLED_MID_EXPORT, NOVA, str(out)]
    killed = subprocess.run(child, cwd=REPO, env=env, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()
    done = voxdesk("player", "export", NOVA, "--out", str(out), storage=settings.storage_dir, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["user_id"] == NOVA
    assert [p.name for p in exports.iterdir()] == ["nova.json"]


def test_an_export_to_a_file_system_without_hard_links_is_written_and_never_overwrites(
    tmp_path, monkeypatch
) -> None:
    # A USB stick (FAT, exFAT) or an SMB share takes no hard link: link() says EPERM there, and
    # the export is written in place instead, which works there.
    import errno
    import os

    from bot import player_data

    def no_hard_links(*_args, **_kwargs) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    out = tmp_path / "nova.json"
    player_data.write_private(out, '{"user_id": "nova"}\n')
    assert out.read_text() == '{"user_id": "nova"}\n'
    assert out.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["nova.json"]
    with pytest.raises(FileExistsError):
        player_data.write_private(out, "another player's data\n")
    assert out.read_text() == '{"user_id": "nova"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["nova.json"]


def test_an_export_without_hard_links_never_replaces_a_file_made_while_it_was_written(
    tmp_path, monkeypatch
) -> None:
    # Another export of the same name (a second `export` run) may make the file after this one
    # found the name free: claimed with O_EXCL, the name is refused rather than written over.
    import errno
    import os

    from bot import player_data

    out = tmp_path / "nova.json"

    def no_hard_links(*_args, **_kwargs) -> None:
        out.write_text("the other export\n")
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    with pytest.raises(FileExistsError):
        player_data.write_private(out, '{"user_id": "nova"}\n')
    assert out.read_text() == "the other export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["nova.json"]


async def test_export_and_forget_refuse_a_database_a_newer_voxdesk_wrote_and_touch_nothing(settings) -> None:
    # A downgrade, or a newer install's backup restored here: its usage.db may keep a player's rows
    # where this voxdesk does not look, and a forget half done would erase some databases only.
    storage = settings.storage_dir
    await _fill(storage, NOVA, "nova was charged twice for gems")
    paths_ = storage_paths_of(storage)
    with sqlite3.connect(paths_.usage) as db:
        db.execute("PRAGMA user_version = 99")
    line = (
        f"{paths_.usage} was written by a newer voxdesk (schema version 99, this one knows up to 1):"
        " upgrade voxdesk, or restore a backup this version made"
    )
    for action in ("export", "forget"):
        done = voxdesk("player", action, NOVA, storage=storage, timeout=60)
        assert done.returncode == 4, (action, done.stdout, done.stderr)
        assert done.stderr.strip() == f"a database under the storage folder cannot be used: {line}"
        assert done.stdout == ""
    # conversations.db comes before usage.db: nothing was erased from it either.
    assert _count(paths_.conversations, "SELECT COUNT(*) FROM turns WHERE user_id = ?", NOVA) == 2
    assert _count(paths_.usage, "SELECT COUNT(*) FROM usage WHERE user_id = ?", NOVA) == 1
    with sqlite3.connect(paths_.usage) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99


async def test_export_and_forget_refuse_a_newer_recent_claims_file_and_say_it_may_go(settings) -> None:
    # No backup holds grievances-recent.db, so "restore a backup" leaves a studio nowhere to go;
    # its claims serve ten minutes, and deleting it with the bots stopped costs no more than that.
    from bot.tools.grievance_store import RECENT_REMEDY

    storage = settings.storage_dir
    await _fill(storage, NOVA, "nova was charged twice for gems")
    recent = storage_paths_of(storage).recent_claims
    with contextlib.closing(sqlite3.connect(recent)) as db:
        db.execute("PRAGMA user_version = 99")
    line = f"{recent} was written by a newer voxdesk (schema version 99, this one knows up to 1): "
    assert "delete the file" in RECENT_REMEDY and "restore a backup" not in RECENT_REMEDY
    for action in ("export", "forget"):
        done = voxdesk("player", action, NOVA, storage=storage, timeout=60)
        assert done.returncode == 4, (action, done.stdout, done.stderr)
        assert (
            done.stderr.strip()
            == f"a database under the storage folder cannot be used: {line}{RECENT_REMEDY}"
        )
        assert done.stdout == ""
    assert (
        _count(storage_paths_of(storage).conversations, "SELECT COUNT(*) FROM turns WHERE user_id = ?", NOVA)
        == 2
    )


async def test_a_storage_folder_with_url_marks_in_its_name_is_read_and_erased(tmp_path) -> None:
    # The databases are opened by URI: unquoted, "#" or "?" in the folder's name ended the path
    # there, and forget erased nothing from a stray empty database, saying it had.
    storage = tmp_path / "clan #2 at 100%?"
    storage.mkdir()
    await _fill(storage, NOVA, "nova was charged twice for gems")
    done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "conversations.db: 2 turn(s) of conversation erased" in done.stdout
    conversations = storage_paths_of(storage).conversations
    assert _count(conversations, KEPT_WORDS, NOVA, FORGOTTEN) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [storage.name]  # no stray file beside it


def test_export_reads_the_spool_as_its_filing_does_torn_lines_included(settings) -> None:
    """The export reads the spool with the reader that files it: a line torn by a crash (here
    inside a character) that names the player is theirs to see before the next filing sets it
    aside in .rejected, and after, once; a grievance kept after it is waiting, whole."""
    from bot import player_data

    paths_ = storage_paths_of(settings.storage_dir)
    spool = GrievanceSpool.beside(paths_.grievances)
    spool.path.parent.mkdir(parents=True, exist_ok=True)
    torn = f'{{"id": "b2", "user_id": "{NOVA}", "description": "caf'.encode() + "\u00e9".encode()[:1]
    spool.path.write_bytes(torn + b"\n")
    _spool(settings.storage_dir, NOVA, "nova was charged twice (kept)")
    shown_torn = torn.decode("utf-8", errors="replace")

    held = player_data.export(paths_, NOVA)["grievances"]
    assert [g["description"] for g in held["waiting_in_spool"]] == ["nova was charged twice (kept)"]
    assert held["unreadable_spool_lines"] == [shown_torn]
    assert player_data.export(paths_, BLAZE)["grievances"]["unreadable_spool_lines"] == []

    taken = spool.take()  # what a filing does first: the torn line goes to .rejected
    assert taken is not None
    spool.release(taken[0])
    assert spool.rejected.read_text(encoding="utf-8", errors="replace").splitlines() == [shown_torn]
    held = player_data.export(paths_, NOVA)["grievances"]
    assert held["unreadable_spool_lines"] == [shown_torn]  # in both files, shown once
    # A line that is no grievance is not one waiting to be filed: said apart, for staff.
    said = " ".join(player_data.forget(paths_, NOVA))
    assert ", 1 waiting in the spool, 1 unreadable spool line(s) naming them, set aside" in said


async def test_an_export_reads_grievances_only_in_their_log_and_keeps_them(settings) -> None:
    # A power cut while grievances.db was made leaves the file empty and every commit in its log,
    # which SQLite deletes when it opens such a file: the export found none, and none were left.
    from bot import player_data

    from .test_db import _crashed_while_made

    path = await _crashed_while_made(settings.storage_dir)
    paths_ = storage_paths(settings)
    held = player_data.export(paths_, "111111111111111111")["grievances"]["grievances"]
    assert [g["description"] for g in held] == ["charged twice for the season pass"]
    assert path.stat().st_size > 0


async def _file_by_command(storage: Path, user_id: str, description: str, turn: str) -> None:
    """What `/grievance file` leaves behind: the ticket, and its claim on the words (a hash, in
    lately_filed) that tells a repeat within the resubmit window the first ticket."""
    from bot.tools import complaint_key
    from bot.tools.grievance_store import RESUBMIT_SECONDS, Lately

    store = await LocalGrievanceStore.open(storage_paths_of(storage).grievances)
    words = complaint_key("wallet", description)
    assert await store.claim_words(user_id, words, turn, RESUBMIT_SECONDS) == Lately()
    await store.register(user_id, "wallet", description, f"{turn}0")
    await store.settle_words(user_id, words, turn, True, None)
    await store.aclose()


async def test_export_and_forget_cover_the_claims_of_complaints_filed_by_command(settings) -> None:
    # lately_filed keeps a hash of each /grievance file's player and words: neither export showed
    # it nor forget erased it, and with nobody filing after them it stayed for ever.
    storage = settings.storage_dir
    await _file_by_command(storage, NOVA, "Charged twice  for GEMS", "discord:1:")
    await _file_by_command(storage, BLAZE, "charged twice for gems", "discord:2:")
    await _file_by_command(storage, QUILL, "kicked from the tournament", "discord:3:")
    grievances, recent = storage_paths_of(storage).grievances, storage_paths_of(storage).recent_claims
    with sqlite3.connect(recent) as db:  # Quill filed long ago: a claim no repeat reads
        db.execute("UPDATE lately_filed SET at = at - 601 WHERE turn = 'discord:3:'")

    held = json.loads(voxdesk("player", "export", NOVA, storage=storage, timeout=60).stdout)
    assert [c["turn"] for c in held["grievances"]["lately_filed"]] == ["discord:1:"]
    novas = _count(grievances, "SELECT COUNT(*) FROM grievances WHERE user_id = ?", NOVA)

    done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "grievances-recent.db: 1 claim(s) of a complaint filed lately erased" in done.stdout
    left = "SELECT turn FROM lately_filed ORDER BY turn"
    with sqlite3.connect(recent) as db:
        # Blaze's, for the same words, is Blaze's; Quill's was of no more use to anyone.
        assert [r[0] for r in db.execute(left)] == ["discord:2:"]
    assert _count(grievances, "SELECT COUNT(*) FROM grievances WHERE user_id = ?", NOVA) == novas


async def test_a_running_bot_forgets_the_claims_of_complaints_past_the_resubmit_window(settings) -> None:
    # Each claim prunes the old ones: on a server where nobody files again, the last player's
    # claim (a hash of their id and words) was kept for ever.
    import time

    from bot.tools.grievance_store import RESUBMIT_SECONDS

    storage = settings.storage_dir
    await _file_by_command(storage, NOVA, "charged twice for gems", "discord:1:")
    await _file_by_command(storage, BLAZE, "kicked from the tournament", "discord:2:")
    grievances, recent = storage_paths_of(storage).grievances, storage_paths_of(storage).recent_claims
    with sqlite3.connect(recent) as db:
        db.execute("UPDATE lately_filed SET at = at - ? WHERE turn = 'discord:1:'", (RESUBMIT_SECONDS + 1,))
    store = await LocalGrievanceStore.open(grievances)
    try:
        await store.housekeeping(time.time())
    finally:
        await store.aclose()
    assert _count(recent, "SELECT COUNT(*) FROM lately_filed WHERE turn = 'discord:1:'") == 0
    assert _count(recent, "SELECT COUNT(*) FROM lately_filed WHERE turn = 'discord:2:'") == 1


async def test_export_holds_the_players_stats_the_embedded_database_keeps_and_forget_says_they_stay(
    settings,
) -> None:
    # players.db (the embedded stats) keeps a player's name, games and achievements under their
    # Discord id in the storage folder: the export, "every row kept under the player's id", left
    # them out, and forget kept them without a word.
    from bot import player_data

    await _fill(settings.storage_dir, NOVA, "nova was charged twice for gems")
    paths_ = storage_paths_of(settings.storage_dir)
    with sqlite3.connect(paths_.players) as db:
        (player_id, name) = db.execute(
            "SELECT player_id, player_name FROM players WHERE discord_user_id = ?", (NOVA,)
        ).fetchone()
        games = db.execute("SELECT COUNT(*) FROM game_sessions WHERE player_id = ?", (player_id,)).fetchone()[
            0
        ]
        earned = db.execute("SELECT COUNT(*) FROM achievements WHERE player_id = ?", (player_id,)).fetchone()[
            0
        ]
    assert games and earned

    held = player_data.export(paths_, NOVA)["players"]
    assert [p["player_name"] for p in held["players"]] == [name]
    assert len(held["game_sessions"]) == games and {g["player_id"] for g in held["game_sessions"]} == {
        player_id
    }
    assert len(held["achievements"]) == earned and {a["player_id"] for a in held["achievements"]} == {
        player_id
    }

    said = " ".join(player_data.forget(paths_, NOVA))
    assert f"players.db: kept 1 player record(s), {games} game(s) and {earned} achievement(s)" in said
    with sqlite3.connect(paths_.players) as db:
        assert (
            db.execute("SELECT COUNT(*) FROM game_sessions WHERE player_id = ?", (player_id,)).fetchone()[0]
            == games
        )


async def test_a_guild_channel_players_share_is_in_no_players_export(settings) -> None:
    """A DM is one player's place; a guild channel is everyone's who speaks there: the first to
    send a note in it must not find it in their export, with the time of another's latest note."""
    from bot import player_data
    from tests.discord_harness import blaze, nova, running_bot, voice_note
    from tests.fakes.discord_server import ALLOWED_CHANNEL, dm_channel_id, serving

    async with serving() as fake, running_bot(settings, fake):
        for who, guild in ((nova, True), (blaze, True), (nova, False)):
            note = await fake.send_note(who, voice_note(), guild=guild)
            await fake.wait_for(lambda _, n=note: len(fake.replies_to(n["id"])) >= 2)
    paths_ = storage_paths_of(settings.storage_dir)
    for player, dms in ((NOVA, [dm_channel_id(int(NOVA))]), (BLAZE, [])):
        assert [p["place_id"] for p in player_data.export(paths_, player)["notes"]["places"]] == dms
    said = player_data.forget(paths_, NOVA)
    assert any("1 DM channel(s)" in line for line in said), said
    with sqlite3.connect(paths_.notes) as conn:  # read by a restart's catch-up, and nobody's
        kept = conn.execute("SELECT kind, user_id FROM places WHERE place_id = ?", (ALLOWED_CHANNEL,))
        assert kept.fetchall() == [("channel", None)]


async def test_a_guild_channel_an_older_voxdesk_kept_under_a_player_is_not_theirs(settings) -> None:
    from bot import player_data

    paths_ = storage_paths_of(settings.storage_dir)
    ledger = await NoteLedger.open(paths_.notes)
    try:
        await ledger.remember_place(920, "channel", NOVA)  # a guild channel as an older voxdesk kept it
        await ledger.remember_place(940, "dm", NOVA)
    finally:
        await ledger.aclose()
    assert [p["place_id"] for p in player_data.export(paths_, NOVA)["notes"]["places"]] == [940]
    said = player_data.forget(paths_, NOVA)
    assert any("1 DM channel(s)" in line for line in said), said


def _earned(players_db: Path, user_id: str, name: str, at: str) -> None:
    """The achievement `name`, earned `at` as a studio wrote it, for the player of `user_id`."""
    with sqlite3.connect(players_db) as db:
        db.execute(
            "INSERT INTO achievements (player_id, name, earned_at)"
            " SELECT player_id, ?, ? FROM players WHERE discord_user_id = ?",
            (name, at, user_id),
        )


async def test_every_time_in_an_export_is_iso_8601_in_utc(settings, far_from_utc) -> None:
    # Turns, notes and claims keep Unix seconds: 1765000000.0 beside "2026-12-05T06:00:00Z" in one
    # file, which a player cannot read as a date. A studio's players.db may write its own offset,
    # or none (UTC, as bot/instants.py reads it, whatever the host's zone).
    import datetime as dt

    from bot import player_data

    storage = settings.storage_dir
    await _fill(storage, NOVA, "nova was charged twice for gems")
    await _file_by_command(storage, NOVA, "charged twice for gems", "discord:1:")
    paths_ = storage_paths_of(storage)
    _earned(paths_.players, NOVA, "Early Bird", "2026-11-18T03:00:00+05:00")
    _earned(paths_.players, NOVA, "No Offset", "2026-11-17T22:30:00")
    with sqlite3.connect(paths_.players) as db:
        db.execute("UPDATE game_sessions SET played_at = '2026-08-27T20:00:00' WHERE session_id = 1")
    with sqlite3.connect(paths_.news) as db:
        db.execute("UPDATE news SET next_try_at = 1765000000.5")
    with sqlite3.connect(paths_.conversations) as db:  # an INTEGER column: whole seconds stay int
        db.execute("UPDATE turns SET audio_expires_at = 1765000000")

    held = player_data.export(paths_, NOVA)
    times: list[tuple[str, object]] = []

    def walk(value: object, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif (key == "at" or key.endswith(("_at", "_until"))) and value is not None:
            times.append((key, value))

    walk(held)
    named = {k for k, _ in times}
    assert {
        "exported_at",
        "at",
        "updated_at",
        "lease_until",
        "next_try_at",
        "earned_at",
        "audio_expires_at",
    } <= named
    for key, value in times:
        assert isinstance(value, str) and value.endswith("Z"), (key, value)
        assert dt.datetime.fromisoformat(value.replace("Z", "+00:00")).utcoffset() == dt.timedelta(0)
    earned = {a["name"]: a["earned_at"] for a in held["players"]["achievements"]}
    assert earned["Early Bird"] == "2026-11-17T22:00:00Z"
    assert earned["No Offset"] == "2026-11-17T22:30:00Z"
    played = {g["session_id"]: g["played_at"] for g in held["players"]["game_sessions"]}
    assert played[1] == "2026-08-27T20:00:00Z"
    assert {n["next_try_at"] for n in held["news"]["news"]} == {"2025-12-06T05:46:40Z"}


async def test_an_achievement_date_alone_is_exported_as_a_date(settings) -> None:
    # A studio's DATE column holds a day, not an instant: read as midnight UTC it was exported as
    # "2026-11-18T00:00:00Z", a time the player never earned it at (and a day early west of UTC).
    from bot import player_data

    await _fill(settings.storage_dir, NOVA, "nova was charged twice for gems")
    paths_ = storage_paths_of(settings.storage_dir)
    _earned(paths_.players, NOVA, "Day Only", "2026-11-18")
    with sqlite3.connect(paths_.players) as db:
        db.execute("UPDATE game_sessions SET played_at = '2026-08-27' WHERE session_id = 1")

    held = player_data.export(paths_, NOVA)
    earned = {a["name"]: a["earned_at"] for a in held["players"]["achievements"]}
    assert earned["Day Only"] == "2026-11-18"
    played = {g["session_id"]: g["played_at"] for g in held["players"]["game_sessions"]}
    assert played[1] == "2026-08-27"


async def test_an_achievement_time_before_year_1_in_utc_is_exported_as_written(settings) -> None:
    # 0001-01-01T00:00:00+05:00 parses, but in UTC it falls in year 0, which no datetime holds:
    # the export would stop with OverflowError rather than show the studio's text.
    from bot import player_data

    await _fill(settings.storage_dir, NOVA, "nova was charged twice for gems")
    paths_ = storage_paths_of(settings.storage_dir)
    _earned(paths_.players, NOVA, "Placeholder", "0001-01-01T00:00:00+05:00")

    held = player_data.export(paths_, NOVA)
    earned = [a["earned_at"] for a in held["players"]["achievements"] if a["name"] == "Placeholder"]
    assert earned == ["0001-01-01T00:00:00+05:00"]


def test_an_export_whose_file_another_made_meanwhile_is_refused_in_the_same_words(
    settings, tmp_path, monkeypatch, capsys
) -> None:
    # Free when --out was looked at, taken when the export is linked to it (a second export).
    from bot import cli, player_data

    out = tmp_path / "nova.json"
    written = player_data.write_private

    def taken_meanwhile(path: Path, text: str) -> None:
        path.write_text("the other export\n")
        written(path, text)

    monkeypatch.setattr(player_data, "write_private", taken_meanwhile)
    monkeypatch.setenv("VOXDESK_STORAGE_DIR", str(settings.storage_dir))
    assert cli.main(["player", "export", NOVA, "--out", str(out)]) == 4
    said = capsys.readouterr()
    assert (said.out, said.err) == (
        "",
        f"player export: {out} exists, and an export never overwrites a file:"
        " give a new file's name, or move that one away first\n",
    )
    assert out.read_text() == "the other export\n"


def _novas_news(storage: Path) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(storage_paths_of(storage).news)) as conn:
        return [row[0].encode() for row in conn.execute("SELECT text FROM news WHERE user_id = ?", (NOVA,))]


async def test_forget_leaves_no_erased_words_in_the_files_on_any_sqlite_build(
    settings, sqlite_without_secure_delete
) -> None:
    # A deleted row's bytes stay in its page's free space unless the connection deleting it asks
    # SQLite to overwrite them: Debian's SQLite does by default, python.org's and uv's do not.
    # There the erased words were in conversations.db and news.db for `strings` to read, and in
    # every backup made after the erasure.
    from bot import player_data

    storage = settings.storage_dir
    await _fill(storage, BLAZE, "blaze lost a tournament prize")
    await _fill(storage, NOVA, "nova zebracorn was charged twice")
    told = _novas_news(storage)
    assert len(told) == 2
    player_data.forget(storage_paths_of(storage), NOVA)
    # grievances.db keeps their grievance, words and all: the studio's record.
    assert residue(storage, b"zebracorn", but=("grievances.db",)) == []
    for words in told:
        assert residue(storage, words) == [], words
    # Blaze's turns, and the answer kept for a note of theirs still to finish.
    assert residue(storage, b"blaze lost a tournament prize", but=("grievances.db",)) == [
        "conversations.db",
        "notes.db",
    ]


async def test_forget_while_the_bot_runs_leaves_no_erased_words_in_the_files(settings) -> None:
    # The running bot keeps its databases open, so the erasure went into their write-ahead logs
    # and the pages of the database files that held the words stayed as they were until SQLite's
    # next checkpoint, which a quiet bot may not reach for days.
    storage = settings.storage_dir
    await _fill(storage, BLAZE, "blaze lost a tournament prize")
    await _fill(storage, NOVA, "nova zebracorn was charged twice")
    told = _novas_news(storage)
    paths_ = storage_paths_of(storage)
    conversations = await ConversationStore.open(paths_.conversations, max_turns=10, idle_minutes=60)
    news = await NewsStore.open(paths_.news)
    notes = await NoteLedger.open(paths_.notes)
    try:
        assert residue(storage, b"zebracorn", but=("grievances.db",)) == ["conversations.db", "notes.db"]
        done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
        assert done.returncode == 0, done.stderr
        assert residue(storage, b"zebracorn", but=("grievances.db",)) == []
        for words in told:
            assert residue(storage, words) == [], words
        assert [t.user_text for t in await conversations.history(BLAZE, "dm")] == [
            "blaze lost a tournament prize"
        ]
        kept = await notes.kept_answer(8_000 + int(BLAZE[0]))
        assert kept is not None and kept.text == "About blaze lost a tournament prize: GRV-1."
    finally:
        await conversations.aclose()
        await news.aclose()
        await notes.aclose()


async def test_a_turn_being_answered_as_a_player_is_erased_is_not_kept(settings) -> None:
    # `player forget` while the bot answers the player's note: the turn, saved after the erasure,
    # brought the player's words back. /forget keeps its time for the store to refuse such a turn;
    # the erasure does the same.
    storage = settings.storage_dir
    paths_ = storage_paths_of(storage)
    conversations = await ConversationStore.open(paths_.conversations, max_turns=10, idle_minutes=60)
    try:
        sent = time.time() - 5  # the note, sent before the erasure and answered after it
        done = voxdesk("player", "forget", NOVA, storage=storage, timeout=60)
        assert done.returncode == 0, done.stderr
        said = PastTurn(user_text="nova zebracorn was charged twice", reply_text="Filed as GRV-9.")
        assert not await conversations.append(NOVA, said, "dm", sent_at=sent)
        assert await conversations.history(NOVA, "dm") == []
        # A note sent after it is theirs to keep, as after /forget.
        assert await conversations.append(NOVA, said, "dm", sent_at=time.time() + 1)
        # Another player's turn of that moment is kept.
        assert await conversations.append(BLAZE, said, "dm", sent_at=sent)
    finally:
        await conversations.aclose()
    assert residue(storage, b"zebracorn") == ["conversations.db"]


async def test_forget_names_a_database_the_bots_reading_kept_its_erasure_from_settling(
    settings, monkeypatch
) -> None:
    # A read the bot holds open keeps the log from being emptied: the command says so rather than
    # leave the words in the files unsaid. Its busy wait shortened, or the test waits 30 s.
    from bot import player_data

    monkeypatch.setattr(player_data, "BUSY_SECONDS", 0.2)
    await _fill(settings.storage_dir, NOVA, "nova zebracorn was charged twice")
    paths_ = storage_paths_of(settings.storage_dir)
    with contextlib.closing(sqlite3.connect(paths_.conversations, isolation_level=None)) as reading:
        reading.execute("BEGIN")
        reading.execute("SELECT COUNT(*) FROM turns").fetchone()
        said = player_data.forget(paths_, NOVA)
        reading.execute("COMMIT")
    (unsettled,) = [line for line in said if "next checkpoint" in line]
    assert unsettled.startswith("conversations.db: the bot was reading")
    again = player_data.forget(paths_, NOVA)
    assert not [line for line in again if "next checkpoint" in line]
    assert residue(settings.storage_dir, b"zebracorn", but=("grievances.db",)) == []


def test_export_leaves_the_storage_folder_as_it_was(settings) -> None:
    # A read-only connection to a WAL database with no log beside it (a bot stopped cleanly, a
    # folder restored from a backup) made an empty -wal and a -shm beside each it read.
    from bot import player_data

    from .test_cli import _files

    before = _files(settings.storage_dir)
    assert player_data.export(storage_paths_of(settings.storage_dir), NOVA)["user_id"] == NOVA
    assert _files(settings.storage_dir) == before


def test_forget_refuses_an_out_it_would_not_write(settings, tmp_path, monkeypatch, capsys) -> None:
    # An operator giving `--out` for a record of the erasure would find no file: refused, not taken.
    from bot import cli

    monkeypatch.setenv("VOXDESK_STORAGE_DIR", str(settings.storage_dir))
    assert cli.main(["player", "forget", NOVA, "--out", str(tmp_path / "forgot.txt")]) == 2
    said = capsys.readouterr()
    assert (said.out, said.err) == (
        "",
        "player forget: --out is for export; forget writes no file, it prints what it erased\n",
    )
    assert not (tmp_path / "forgot.txt").exists()


@pytest.mark.parametrize("missing", [True, False])
@pytest.mark.parametrize("action", ["export", "forget"])
def test_a_storage_folder_with_no_databases_is_refused_not_reported_empty(
    tmp_path, monkeypatch, capsys, action, missing
) -> None:
    # storage.dir set wrong: "0 turn(s) erased" of every database, status 0, would read as the
    # player forgotten, and an export as a player of whom nothing is kept. One that does not exist
    # is said so, in backup's words for it.
    from bot import cli

    nowhere = tmp_path / "var"
    if not missing:
        nowhere.mkdir()
        (nowhere / "notes.txt").write_text("not voxdesk's\n")
    monkeypatch.setenv("VOXDESK_STORAGE_DIR", str(nowhere))
    assert cli.main(["player", action, NOVA]) == 2
    said = capsys.readouterr()
    why = (
        f"storage.dir {nowhere} does not exist" if missing else f"{nowhere} holds none of voxdesk's databases"
    )
    assert (said.out, said.err) == (
        "",
        f"player {action}: {why}: is storage.dir the bot's storage folder?\n",
    )
    assert nowhere.exists() is not missing
