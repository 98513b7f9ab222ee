"""Slash commands through the real discord.py client and the fake Discord."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import os
import re
import sqlite3
import sys
import threading
import time
from asyncio.subprocess import PIPE
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import discord
import pytest
from aiohttp import web

from bot import conversations, note_ledger, ticket_news
from bot.config import Settings
from bot.engines.base import EngineReply, TurnState
from bot.sentences import (
    BLANK_DESCRIPTION,
    COMMAND_FAILED,
    COMMAND_OUTDATED,
    CUT_SHORT_BY_RESTART,
    DESCRIPTION_TOO_SHORT,
    FORGOTTEN,
    NOT_A_NOTE,
    NOTHING_TO_FORGET,
    SLASH_ALREADY_FILED,
    STILL_BUSY,
    TICKETS_HEADING_NEWEST,
)
from bot.tools.base import ToolCall
from cogs.runner import sync_commands
from tests.conftest import BLAZE, REPO
from tests.discord_harness import (
    Harness,
    blaze,
    discord_settings,
    nova,
    quill,
    running_bot,
    settle,
    voice_note,
)
from tests.fakes.discord_server import (
    EPHEMERAL_FLAG,
    GUILD_ID,
    OTHER_CHANNEL,
    TOKEN,
    VOICE_FLAG,
    DiscordError,
    FakeDiscord,
    InjectedUser,
    Received,
    dm_channel_id,
    serving,
)
from tests.frontend_engine import FrontendEngine


@pytest.fixture
async def fake():
    async with serving() as running:
        yield running


@pytest.fixture
async def harness(settings, fake: FakeDiscord):
    async with running_bot(settings, fake) as h:
        yield h


def sub(name: str, **options: object) -> list[dict]:
    return [
        {"name": name, "type": 1, "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()]}
    ]


def option(name: str, value: object, focused: bool = False) -> dict:
    return {"name": name, "type": 3, "value": value, **({"focused": True} if focused else {})}


def private_text(answer: Received) -> str:
    """The text of an ephemeral answer, checking that it is ephemeral."""
    if answer.kind == "callback":
        data = answer.body["data"]
        assert data["flags"] & EPHEMERAL_FLAG
        return data["content"]
    return answer.body["content"]  # the edit of a deferred ephemeral response


async def ask(fake: FakeDiscord, user: InjectedUser, name: str, options: list[dict], **kw: object) -> str:
    interaction = await fake.slash(user, name, options, **kw)
    return private_text(await fake.interaction_answer(interaction))


async def reply_to_note(fake: FakeDiscord, user: InjectedUser, count: int = 2) -> list[Received]:
    note = await fake.send_note(user, voice_note())
    return await fake.wait_for(lambda _: (r := fake.replies_to(note["id"])) and len(r) >= count and r)


async def test_grievance_status_shows_only_the_callers_tickets_privately(harness: Harness):
    text = await ask(harness.fake, nova, "grievance", sub("status"))
    assert "GRV-10" in text and "GRV-12" in text
    assert "GRV-11" not in text and "GRV-13" not in text  # Blaze's and Quill's
    # Asked in a guild channel, answered ephemerally (`ask` checks): the caller alone reads the
    # tickets' words, which a voice note there does not hear.
    assert "Topped up 20 dollars" in text
    one = await ask(harness.fake, nova, "grievance", sub("status", ticket="GRV-10"))
    assert "Topped up 20 dollars" in one
    other = await ask(harness.fake, nova, "grievance", sub("status", ticket="GRV-11"))
    assert "No ticket GRV-11 was found for you" in other
    listed = await ask(harness.fake, blaze, "grievance", sub("list"))
    assert "GRV-11" in listed and "GRV-10" not in listed
    assert harness.fake.violations == []


async def test_another_players_ticket_key_is_answered_as_a_key_nobody_has(harness: Harness):
    # Keys count up: were another's answered otherwise than one never given out, a player could
    # walk them to learn which exist, and how many tickets others file.
    fake = harness.fake
    nobodys = await ask(fake, nova, "grievance", sub("status", ticket="GRV-99"))
    for theirs in ("GRV-11", "grv-13"):  # Blaze's, Quill's
        answer = await ask(fake, nova, "grievance", sub("status", ticket=theirs))
        assert answer == nobodys.replace("GRV-99", theirs.upper()), answer
    assert fake.violations == []


async def finds_grv_10(harness: Harness, *typed_keys: str) -> None:
    """/grievance status finds Nova's GRV-10 under each of `typed_keys`."""
    for typed in typed_keys:
        text = await ask(harness.fake, nova, "grievance", sub("status", ticket=typed))
        assert "GRV-10" in text and "Topped up 20 dollars" in text, typed
    assert harness.fake.violations == []


async def test_a_ticket_key_typed_in_full_width_or_with_a_dash_is_found(harness: Harness):
    # A Japanese, Chinese or Korean keyboard types Latin letters and digits in full width; a
    # phone's keyboard or a copy from a web page may give an en dash or a minus for the hyphen.
    await finds_grv_10(harness, "ＧＲＶ－１０", "ｇｒｖ－１０", "GRV\u201310", "GRV\u221210")


async def test_a_ticket_key_copied_from_right_to_left_text_or_typed_in_kana_is_found(harness: Harness):
    # Copied out of an Arabic or Hebrew message, a key carries the marks or isolates that kept it
    # left-to-right there: refused, the reply (which drops isolates) showed "GRV-10" as no key.
    # A Japanese keyboard writing kana types "ー" for "-".
    await finds_grv_10(
        harness, "\u2067GRV-10\u2069", "\u200fGRV-10\u200e", "\u200bGRV-10", "ＧＲＶー１０", "GRV\u201410"
    )


async def test_a_ticket_key_typed_with_arabic_or_persian_digits_is_found(harness: Harness):
    # An Arabic or Persian keyboard types its own digits, which NFKC keeps: read as they come, the
    # player would be told "not a ticket key".
    await finds_grv_10(harness, "GRV-١٠", "GRV-۱۰", "\u2067GRV-١٠\u2069", "GRV-१०")


async def test_grievance_file_then_status(harness: Harness):
    filed = await ask(
        harness.fake,
        blaze,
        "grievance",
        sub("file", category="wallet", description="Bought 500 gems, wallet never showed them."),
    )
    assert filed.startswith("Filed ticket `GRV-")
    key = filed.split("`")[1]
    status = await ask(harness.fake, blaze, "grievance", sub("status", ticket=key))
    assert key in status and "wallet" in status
    assert key not in await ask(harness.fake, nova, "grievance", sub("list"))


async def test_the_log_names_a_filing_by_command_a_slash_command_not_a_note(harness: Harness, caplog):
    caplog.set_level(logging.INFO, logger="bot.tools")
    interaction = await harness.fake.slash(
        blaze, "grievance", sub("file", category="wallet", description="Bought 500 gems, none came.")
    )
    assert private_text(await harness.fake.interaction_answer(interaction)).startswith("Filed ticket `GRV-")
    (line,) = [r.getMessage() for r in caplog.records if "filed grievance" in r.getMessage()]
    assert line.startswith(f"slash command {interaction} from {blaze.id} filed grievance GRV-"), line


async def test_a_filing_the_disk_refuses_is_held_and_the_player_told_so(harness: Harness, monkeypatch):
    import errno
    import sqlite3

    from bot.sentences import HELD_FOR_LATER
    from bot.tools import grievance_spool
    from bot.tools.grievance_store import LocalGrievanceStore

    async def full_database(*args: object, **kwargs: object) -> str | None:
        raise sqlite3.OperationalError("database or disk is full")

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalGrievanceStore, "_insert", full_database)
    monkeypatch.setattr(grievance_spool.os, "write", full_disk)
    filing = sub("file", category="wallet", description="Gems gone.")
    said = await ask(harness.fake, blaze, "grievance", filing)
    assert said == HELD_FOR_LATER  # as it stands: not "Sorry, I couldn't file that: I couldn't..."


async def test_history_a_read_only_disk_refuses_is_said_once_by_file_and_kept_again_after(
    harness: Harness, caplog
):
    """conversations.db turns read-only while the bot runs (a disk remounted read-only, a file
    chowned away): every note is answered without its turn kept, and the log says so once, naming
    the file, rather than an ERROR a note naming none; the first turn kept again says it ended."""
    from bot.app import storage_paths

    fake = harness.fake
    store = harness.bot.core.conversations
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")
    await store._conn.execute("PRAGMA query_only = ON")  # SQLite's own SQLITE_READONLY on each write
    caplog.clear()
    caplog.set_level(logging.INFO, logger="bot.agent")
    for _ in range(2):  # answered from the history as it was: one turn, however many notes
        assert (await reply_to_note(fake, nova))[1].content.endswith("History 1.")
    assert (await reply_to_note(fake, blaze))[1].content.endswith("History 0.")
    path = storage_paths(harness.settings).conversations
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"{path}: attempt to write a readonly database" in errors[0], errors
    await store._conn.execute("PRAGMA query_only = OFF")  # the disk takes writes again
    caplog.clear()
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 1.")
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 2.")
    said = [r.getMessage() for r in caplog.records if r.name == "bot.agent"]
    assert said == ["conversations.db is written again"], said


async def test_a_turn_a_forget_drops_while_history_is_refused_is_no_sign_the_disk_is_back(
    harness: Harness, caplog
):
    """A turn sent before its player's /forget writes nothing (its transaction only reads): while
    conversations.db is refused, that is no "written again", nor is the next refusal news."""
    from bot.conversations import FORGOTTEN

    fake = harness.fake
    store = harness.bot.core.conversations
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")
    # Nova's /forget, already on disk, is later than any note nova sends during this test.
    await store._conn.execute(
        "INSERT INTO turns (user_id, conversation, at, reply_text) VALUES (?, ?, ?, '')",
        (str(nova.id), FORGOTTEN, time.time() + 3600),
    )
    await store._conn.commit()
    # SQLite's own SQLITE_FULL on a write that needs a page more; a read-only database would
    # refuse the transaction's BEGIN IMMEDIATE too, a full disk does not.
    (pages,) = (await store._conn.execute_fetchall("PRAGMA page_count"))[0]
    await store._conn.execute(f"PRAGMA max_page_count = {pages}")
    with contextlib.suppress(sqlite3.OperationalError):  # the room left in those pages, filled
        for _ in range(10_000):
            await store._conn.execute(
                "INSERT INTO turns (user_id, conversation, at, reply_text) VALUES ('0', 'filler', ?, ?)",
                (time.time(), "x" * 50),
            )
            await store._conn.commit()  # one at a time: SQLITE_FULL rolls back its transaction
    caplog.clear()
    caplog.set_level(logging.INFO, logger="bot.agent")
    await reply_to_note(fake, blaze)  # refused: said
    await reply_to_note(fake, nova)  # dropped by the /forget: nothing written
    await reply_to_note(fake, blaze)  # refused alike: no news
    said = [r.getMessage() for r in caplog.records if r.name == "bot.agent" and r.levelno >= logging.INFO]
    assert "conversations.db is written again" not in said, said
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1, said


async def test_a_complaint_a_read_only_store_and_a_full_spool_refuse_is_logged_by_file_then_filed(
    harness: Harness, monkeypatch, caplog
):
    """grievances.db turns read-only while the bot runs and the disk has no room for the spool's
    line either: the player hears no key, only that it is held; the first ERROR names the database,
    SQLite's cause, the spool and the disk's cause (no path in an ENOSPC of its own), so staff know
    which disk to free; once it takes writes again the next filing files both, each once."""
    import errno

    from bot.app import storage_paths
    from bot.sentences import HELD_FOR_LATER
    from bot.tools import grievance_spool

    def full_disk(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    fake = harness.fake
    conn = harness.bot.core.grievances.local_store._conn
    await conn.execute("PRAGMA query_only = ON")  # SQLite's own SQLITE_READONLY on each write
    monkeypatch.setattr(grievance_spool, "_write_all", full_disk)
    caplog.clear()
    said = await ask(fake, blaze, "grievance", sub("file", category="wallet", description="Gems gone."))
    assert said == HELD_FOR_LATER
    assert "GRV-14" not in await ask(fake, blaze, "grievance", sub("list"))
    paths = storage_paths(harness.settings)
    store = "bot.tools.grievance_store"
    # Then the grievance as `voxdesk refile` files it, should the process be killed before a stop.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == store]
    error, unfiled = [r.getMessage() for r in errors]
    assert unfiled.startswith(grievance_spool.UNFILED) and "Gems gone." in unfiled, unfiled
    assert f"{paths.grievances}: attempt to write a readonly database" in error, error
    assert f"{paths.grievances}.spool.jsonl ([Errno 28] No space left on device)" in error, error
    await conn.execute("PRAGMA query_only = OFF")  # room again
    monkeypatch.undo()
    filing = sub("file", category="reward_points", description="Badge gone.")
    again = await ask(fake, blaze, "grievance", filing)
    assert again.startswith("Filed ticket `GRV-15`"), again
    mine = [g.description for g in await harness.bot.core.grievances.local_store.status(BLAZE)]
    assert mine.count("Gems gone.") == 1 and mine.count("Badge gone.") == 1, mine


async def test_a_command_both_bots_of_an_overlapping_deploy_get_is_answered_and_filed_once(
    settings, fake: FakeDiscord, caplog
):
    # Both sessions get the interaction; Discord takes one first response and refuses the other's
    # (40060), which was raised as a failed command: an error and its traceback in the log for
    # every command of a deploy.
    fake.expect_violations()  # the second acknowledgement, which neither bot can know is second
    async with running_bot(settings, fake) as one, running_bot(settings, fake):
        await fake.wait_for(lambda _: len(fake.identify_payloads) == 2)
        filing = sub("file", category="wallet", description="Gems gone during a deploy.")
        said = await ask(fake, blaze, "grievance", filing)
        assert said.startswith("Filed ticket `GRV-")
        assert "GRV-" in await ask(fake, blaze, "grievance", sub("list"))
        typing = await fake.slash(nova, "voice", [option("voice", "ba", focused=True)], autocomplete=True)
        await fake.wait_for(lambda _: len(fake.interaction_records(typing)) == 2)
        filed = await one.bot.core.grievances.local_store.status(BLAZE)
    assert [g.description for g in filed].count("Gems gone during a deploy.") == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert set(fake.violations) == {ACKNOWLEDGED}  # nothing else refused, unseen


async def test_a_first_response_discord_took_but_answered_502_is_the_bots_own(
    settings, fake: FakeDiscord, caplog
):
    """The edge timed out on Discord's busy backend after it took the deferral: discord.py sent it
    again and was refused 40060, taken for another bot process's answer though none runs. The
    complaint was never filed, and the player saw "thinking…" until the token ran out."""
    fake.expect_violations()  # the deferral sent again: Discord refuses it
    fake.callbacks_lost = 1
    async with running_bot(settings, fake) as h:
        filing = sub("file", category="wallet", description="Gems gone at the edge.")
        said = await ask(fake, blaze, "grievance", filing)
        filed = await h.bot.core.grievances.local_store.status(BLAZE)
    assert said.startswith("Filed ticket `GRV-")
    assert [g.description for g in filed].count("Gems gone at the edge.") == 1
    assert "taken as this one's own response" in caplog.text
    assert fake.violations == [ACKNOWLEDGED]  # the deferral sent again, and nothing else


ACKNOWLEDGED = "Interaction has already been acknowledged."


async def test_slow_commands_are_deferred_first(settings, fake: FakeDiscord):
    async with running_bot(settings, fake, defer_after_seconds=0.0) as h:
        interaction = await h.fake.slash(nova, "grievance", sub("list"))
        answer = await h.fake.interaction_answer(interaction)
        (callback,) = [r for r in h.fake.interaction_records(interaction) if r.kind == "callback"]
        assert callback.body["type"] == 5 and callback.body["data"]["flags"] & EPHEMERAL_FLAG
        assert answer.kind == "edit_original" and "GRV-10" in answer.body["content"]
        assert h.fake.violations == []


async def test_forget_clears_the_conversation(harness: Harness):
    fake = harness.fake
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 1.")
    said = await ask(fake, nova, "forget", [], guild=False)
    assert "forgotten" in said
    # What stays is said, and who can erase more.
    assert "I keep your tickets" in said and "support team can erase" in said
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")


async def test_forget_with_no_conversation_still_says_what_stays(harness: Harness):
    """A player asking to be forgotten before they ever spoke has tickets, choices and figures
    kept all the same: "nothing to forget" alone would tell them nothing is kept."""
    said = await ask(harness.fake, nova, "forget", [], guild=False)
    assert said.startswith("There was no conversation to forget")
    assert "I keep your tickets" in said and "support team can erase" in said


async def test_forget_says_for_how_long_the_news_and_channels_it_keeps_stay(harness: Harness):
    """Told news is kept a month but each ticket's latest piece, which stays for good (a change
    is compared with it), and the channels a player is reached in stay 90 days (where they last
    sent a note, their closed-DMs notice) to a year (their DM channel): "a month of their news"
    alone would tell them less than is kept."""
    said = await ask(harness.fake, nova, "forget", [], guild=False)
    day = 24 * 3600
    assert "the latest of each for good" in said
    assert ticket_news.KEEP_CHANNEL_SECONDS == 90 * day and note_ledger.KEEP_PLACE_SECONDS == 365 * day
    assert "where to reach you (90 days to a year)" in said


async def test_forget_while_a_note_is_answered_still_starts_the_next_afresh(settings, fake: FakeDiscord):
    engine = FrontendEngine()
    async with running_bot(settings, fake, engine=engine):
        assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")
        engine.hold = asyncio.Event()
        asked = engine.asked
        note = await fake.send_note(nova, voice_note())
        await engine.until_asked(asked + 1)  # its turn has read the history and waits for the model
        forget = await fake.slash(nova, "forget", [], guild=False)
        # Deferred: the reset is waiting behind the turn in flight, which may now go on.
        await fake.wait_for(lambda _: fake.interaction_records(forget) or None, 30)
        engine.hold.set()
        assert "forgotten" in private_text(await fake.interaction_answer(forget))
        await fake.wait_for(lambda _: len(fake.replies_to(note["id"])) >= 2)
        engine.hold = None
        assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")


async def test_a_forget_is_kept_for_the_catch_up_window_not_only_the_idle_limit(settings, fake):
    # The catch-up answers notes sent up to catch_up_minutes before: a /forget's row pruned at a
    # shorter idle limit let such a note sent before it be remembered.
    settings = settings.replace(conversations={"idle_minutes": 5}, discord={"catch_up_minutes": 45})
    async with running_bot(settings, fake) as h:
        assert h.bot.core.conversations.forget_seconds == 45 * 60 + conversations.ANSWER_MARGIN_SECONDS


async def test_a_bot_that_hears_no_more_notes_still_drops_a_conversation_gone_idle(settings, fake):
    # Pruning came only with the next note: on a quiet server the last words stayed for ever.
    settings = settings.replace(conversations={"idle_minutes": 0.02})  # 1.2 s
    db = settings.storage_dir / "conversations.db"

    def turns() -> int:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0]

    async with running_bot(settings, fake, recheck_seconds=0.2):
        await reply_to_note(fake, nova)
        assert turns() >= 1
        # The recheck (every 0.2 s) prunes once it is idle; no note comes to prune from.
        deadline = asyncio.get_running_loop().time() + 30
        while turns():
            assert asyncio.get_running_loop().time() < deadline, "the idle conversation is still kept"
            await asyncio.sleep(0.1)


async def test_sync_with_a_refused_token_says_so_in_one_line(settings, fake: FakeDiscord):
    env = {
        **os.environ,
        "DISCORD_TOKEN": "not-the.token",
        "VOXDESK_DISCORD_API_BASE": fake.api_base,
        "VOXDESK_STORAGE_DIR": str(settings.storage_dir),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "sync", env=env, cwd=REPO, stdout=PIPE, stderr=PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 2 and b"Traceback" not in err
    assert b"Discord refused DISCORD_TOKEN" in err


async def test_voice_autocompletes_and_changes_the_next_reply(harness: Harness):
    fake = harness.fake
    interaction = await fake.slash(nova, "voice", [option("voice", "ba", focused=True)], autocomplete=True)
    (suggestions,) = await fake.wait_for(
        lambda _: [r for r in fake.interaction_records(interaction) if r.kind == "callback"]
    )
    assert suggestions.body == {"type": 8, "data": {"choices": [{"name": "basalt", "value": "basalt"}]}}
    assert "I don't know the voice" in await ask(fake, nova, "voice", [option("voice", "robot")])
    assert "basalt" in await ask(fake, nova, "voice", [option("voice", "basalt")])
    voice, transcript = await reply_to_note(fake, nova)
    assert "Voice basalt." in transcript.content
    assert voice.is_voice_message
    assert "Voice default." in (await reply_to_note(fake, blaze))[1].content  # only Nova's changed


async def test_a_voice_that_is_not_one_is_named_short_and_as_typed(harness: Harness):
    """Discord takes up to 6000 characters for the option: the answer names what was typed in a
    line, its marks shown, not a page of it over four messages."""
    typed = "**loud** <@222222222222222222> " + "x" * 5000
    text = await ask(harness.fake, nova, "voice", [option("voice", typed)])
    assert text.startswith("I don't know the voice") and len(text) < 300
    assert "\\*\\*loud\\*\\*" in text and "<@2" not in text


async def test_voice_offers_the_offline_engines_neural_voice(settings, fake: FakeDiscord):
    from bot.engines.offline.engine import create_offline_engine
    from bot.speech.neural import JOE

    async def suggested(typed: str) -> list[str]:
        typing = [option("voice", typed, focused=True)]
        interaction = await fake.slash(nova, "voice", typing, autocomplete=True)
        (answer,) = await fake.wait_for(
            lambda _: [r for r in fake.interaction_records(interaction) if r.kind == "callback"]
        )
        return [choice["value"] for choice in answer.body["data"]["choices"]]

    engine = await create_offline_engine(settings)
    try:
        async with running_bot(settings, fake, engine=engine):  # type: ignore[arg-type]
            assert (await suggested(""))[0] == JOE.name  # the natural voice first, eSpeak's after
            assert "en-us" in await suggested("")
            assert await suggested("joe") == [JOE.name]
            assert JOE.name in await ask(fake, nova, "voice", [option("voice", JOE.name)])
    finally:
        await engine.aclose()


async def test_replies_text_only_voice_only_and_file(harness: Harness):
    fake = harness.fake
    assert "text only" in await ask(fake, nova, "replies", [option("style", "text")])
    note = await fake.send_note(nova, voice_note())
    (text,) = await fake.wait_for(lambda _: fake.replies_to(note["id"]))
    assert text.content.startswith("Nova, you have") and not text.files

    assert "voice message only" in await ask(fake, nova, "replies", [option("style", "voice")])
    note = await fake.send_note(nova, voice_note())
    await fake.wait_for(lambda _: fake.sent("reaction_remove", int(note["channel_id"]))[1:])  # 2nd note done
    (voice,) = fake.replies_to(note["id"])
    assert voice.flags & VOICE_FLAG and voice.content == ""

    assert "audio file" in await ask(fake, nova, "replies", [option("style", "file")])
    note = await fake.send_note(nova, voice_note())
    await fake.wait_for(lambda _: fake.sent("reaction_remove", int(note["channel_id"]))[2:])  # 3rd note done
    (file_reply,) = fake.replies_to(note["id"])
    assert not file_reply.flags & VOICE_FLAG
    assert file_reply.content.startswith("Nova, you have")
    (upload,) = file_reply.files
    assert upload.filename == "reply.ogg" and upload.data.startswith(b"OggS")


async def test_sync_publishes_the_command_tree(settings, fake: FakeDiscord):
    names = await sync_commands(discord_settings(settings, fake), TOKEN, GUILD_ID)
    assert sorted(names) == ["forget", "grievance", "notify", "replies", "voice"]
    stored = {c["name"]: c for c in fake.commands[str(GUILD_ID)]}
    assert {o["name"] for o in stored["grievance"]["options"]} == {"status", "list", "file"}
    assert any(o.get("autocomplete") for o in stored["voice"]["options"])
    assert await sync_commands(discord_settings(settings, fake), TOKEN, None)
    assert sorted(c["name"] for c in fake.commands["global"]) == [
        "forget",
        "grievance",
        "notify",
        "replies",
        "voice",
    ]
    assert fake.violations == []


async def test_filing_by_command_is_held_to_the_flood_limit(settings, fake: FakeDiscord):
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):
        filed = [
            await ask(fake, blaze, "grievance", sub("file", category="wallet", description=f"Problem {i}."))
            for i in range(3)
        ]
        assert [text.startswith("Filed ticket") for text in filed] == [True, True, False]
        assert "Please wait" in filed[2]
        assert (
            await ask(fake, nova, "grievance", sub("file", category="other", description="Lag spikes."))
        ).startswith("Filed ticket")  # another player's limit is their own
        listed = await ask(fake, blaze, "grievance", sub("list"))
        assert "Problem 1." in listed and "Problem 2." not in listed


async def test_a_repeat_told_its_first_ticket_spends_none_of_the_filing_limit(settings, fake: FakeDiscord):
    # A repeat files nothing: it used one of the player's flood_notes filings all the same, and
    # their next real complaint was told to slow down.
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):
        words = "Bought 500 gems, the wallet never showed them."
        file = sub("file", category="wallet", description=words)
        filed = await ask(fake, blaze, "grievance", file)
        key = filed.split("`")[1]
        again = [await ask(fake, blaze, "grievance", file) for _ in range(2)]
        assert again == [SLASH_ALREADY_FILED.format(ticket_key=key)] * 2
        other = sub("file", category="other", description="My friends list is empty since today.")
        assert (await ask(fake, blaze, "grievance", other)).startswith("Filed ticket")


async def test_ticket_lookups_by_command_are_held_to_a_per_player_limit(settings, fake: FakeDiscord):
    """Each lookup searches Jira, when it is on, in threads every player shares: a script
    re-running /grievance status is told to wait, and the other players are not."""
    from discord.ext import commands

    from bot.sentences import NOT_A_TICKET_KEY
    from cogs.limits import Limits

    async with running_bot(settings, fake) as h:
        cog = h.bot.get_cog("Grievances")
        assert cog is not None
        cog.lookups = Limits(commands.Cooldown(2, 600.0), lambda i: i.user.id)
        not_a_key = await ask(fake, nova, "grievance", sub("status", ticket="refund"))
        assert not_a_key == NOT_A_TICKET_KEY.format(key="refund")  # looks nothing up: not counted
        looked = [
            await ask(fake, nova, "grievance", sub("status")),
            await ask(fake, nova, "grievance", sub("list")),
            await ask(fake, nova, "grievance", sub("status", ticket="GRV-10")),
        ]
        assert ["GRV-10" in text for text in looked] == [True, True, False]
        assert looked[2].startswith("You're asking for tickets faster than I can look")
        assert "GRV-1" in await ask(fake, blaze, "grievance", sub("list"))


async def test_settings_commands_are_held_to_a_per_player_limit(settings, fake: FakeDiscord, caplog):
    """Each /voice, /replies and /notify writes a row: a script re-running them is told to wait,
    what it asked is not written, and the other players are not held."""
    from cogs.settings import CHANGES

    caplog.set_level(logging.INFO, logger="cogs.settings")
    changes = [
        ("voice", [option("voice", "basalt")]),
        ("replies", [option("style", "text")]),
        ("notify", [option("news", "on")]),
    ]
    async with running_bot(settings, fake) as h:
        said = [await ask(fake, nova, *changes[i % 3]) for i in range(CHANGES)]
        assert not any(text.startswith("You're changing your settings") for text in said), said
        refused = await ask(fake, nova, "notify", [option("news", "off")])
        assert refused.startswith("You're changing your settings faster than I can keep up. Try again in")
        assert (await h.bot.core.preferences.get(str(nova.id))).notify  # the refused "off" is not kept
        for refused_change in (
            ("voice", [option("voice", "cinder")]),
            ("replies", [option("style", "file")]),
        ):
            refused = await ask(fake, nova, *refused_change)
            assert refused.startswith("You're changing your settings faster than I can keep up."), refused
        kept = await h.bot.core.preferences.get(str(nova.id))
        assert (kept.voice, kept.reply_mode) == ("basalt", "text")  # nor the refused voice and style
        assert (await ask(fake, blaze, "notify", [option("news", "off")])).startswith("No more ticket news")
    assert any(r.getMessage() == f"flood: /notify from {nova.id} refused" for r in caplog.records)
    assert fake.violations == []


async def test_forget_is_held_to_a_stricter_per_player_limit(harness: Harness):
    """Each /forget erases rows and empties the conversations' write-ahead log: past its limit
    the player is told to wait, and nothing is forgotten."""
    from cogs.settings import CHANGES, FORGETS

    assert FORGETS < CHANGES
    fake = harness.fake
    for _ in range(FORGETS):
        assert "afresh" in await ask(fake, nova, "forget", [], guild=False)
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")
    refused = await ask(fake, nova, "forget", [], guild=False)
    assert refused.startswith("You've asked me to forget several times just now. Try again in")
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 1.")  # not forgotten
    assert "afresh" in await ask(fake, blaze, "forget", [], guild=False)
    assert fake.violations == []


async def test_a_host_clock_set_back_holds_no_player_longer_at_the_settings_limits(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
):
    # Timed by the host clock, a clock set back an hour would tell a player past the /forget
    # limit to wait an hour and a minute, not a minute.
    from cogs.settings import FORGET_SECONDS, FORGETS
    from tests.test_discord_voice import HostClock

    fake, cog = harness.fake, harness.bot.get_cog("PlayerSettings")
    assert cog is not None
    for _ in range(FORGETS):
        assert "afresh" in await ask(fake, nova, "forget", [], guild=False)
    clock = HostClock()
    clock.back = 3600.0
    # The module the bot loaded the cog from: an extension is loaded as a module of its own.
    monkeypatch.setattr(sys.modules[type(cog).__module__], "time", clock)
    refused = await ask(fake, nova, "forget", [], guild=False)
    assert refused.startswith("You've asked me to forget several times just now. Try again in"), refused
    wait = int(re.search(r"(\d+) seconds?", refused)[1])
    assert wait <= FORGET_SECONDS, refused


async def test_a_complaint_whose_filing_died_before_the_clock_was_set_back_is_filed_when_sent_again(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
):
    # Killed mid-filing, its host's fast clock then set back an hour at the reboot: the dead
    # filing's claim on the words read as live for that hour, and the player sending them again
    # waited until the command gave up, told their complaint was kept, with nothing kept.
    from bot.tools import complaint_key, grievance_store
    from cogs import interactions
    from tests.test_discord_voice import HostClock

    described = "Bought 500 gems, the wallet never showed them."
    words = complaint_key("wallet", described)
    dead = await grievance_store.LocalGrievanceStore.open(settings.storage_dir / "grievances.db")
    try:
        await dead.claim_words(str(nova.id), words, "discord:1:", grievance_store.RESUBMIT_SECONDS)
        dead.stop_renewing(str(nova.id), words, "discord:1:")
    finally:
        await dead.aclose()
    clock = HostClock()
    clock.back = 3600.0
    monkeypatch.setattr(grievance_store, "time", clock)
    monkeypatch.setattr(interactions, "GIVE_UP_SECONDS", 2.0)  # Discord's 14 minutes, scaled down
    async with running_bot(settings, fake) as h:
        said = await ask(fake, nova, "grievance", sub("file", category="wallet", description=described))
        store = h.bot.core.grievances.local_store
        unfiled = await store.count_unfiled()
    assert said.startswith("Filed ticket `GRV-"), said
    assert unfiled == 0


async def test_a_repeat_given_up_on_while_another_bot_files_its_words_keeps_the_complaint(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
):
    # The other bot of a deploy still filing the same words (its lease renewed) when the repeat's
    # command gives up: the player is told the complaint is kept, and it must be, for that other
    # filing may yet fail.
    from bot.sentences import STILL_BUSY_FILING
    from bot.tools import complaint_key, grievance_store
    from cogs import interactions

    described = "Bought 500 gems, the wallet never showed them."
    words = complaint_key("wallet", described)
    monkeypatch.setattr(interactions, "GIVE_UP_SECONDS", 2.0)  # Discord's 14 minutes, scaled down
    other = await grievance_store.LocalGrievanceStore.open(settings.storage_dir / "grievances.db")
    try:
        await other.claim_words(str(nova.id), words, "discord:1:", grievance_store.RESUBMIT_SECONDS)
        async with running_bot(settings, fake) as h:
            said = await ask(fake, nova, "grievance", sub("file", category="wallet", description=described))
            unfiled = await h.bot.core.grievances.local_store.count_unfiled()
    finally:
        other.stop_renewing(str(nova.id), words, "discord:1:")
        await other.aclose()
    assert said == STILL_BUSY_FILING
    assert unfiled == 1


@pytest.mark.parametrize("first", ["the other filing", "the spool"])
async def test_a_repeat_given_up_on_while_another_bot_files_its_words_is_not_filed_twice(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, first: str
):
    # The repeat's complaint is kept in case the other bot's filing fails; that filing landing,
    # before the spool is filed or after, the complaint is one ticket, not two.
    from bot.tools import complaint_key, filing_id, grievance_store
    from cogs import interactions

    described = "Bought 500 gems, the wallet never showed them."
    words = complaint_key("wallet", described)
    monkeypatch.setattr(interactions, "GIVE_UP_SECONDS", 2.0)  # Discord's 14 minutes, scaled down
    database = settings.storage_dir / "grievances.db"
    other = await grievance_store.LocalGrievanceStore.open(database)
    try:
        await other.claim_words(str(nova.id), words, "discord:1:", grievance_store.RESUBMIT_SECONDS)
        async with running_bot(settings, fake) as h:
            await ask(fake, nova, "grievance", sub("file", category="wallet", description=described))
            store = h.bot.core.grievances.local_store
            if first == "the spool":
                await store.file_spooled()
            await other.register(str(nova.id), "wallet", described, filing_id("discord", "1", 0))
            await other.settle_words(str(nova.id), words, "discord:1:", True, None)
            await store.file_spooled()
    finally:
        other.stop_renewing(str(nova.id), words, "discord:1:")
        await other.aclose()
    with contextlib.closing(sqlite3.connect(database)) as db:
        filed = db.execute("SELECT spool_id FROM grievances WHERE description = ?", (described,)).fetchall()
    assert filed == [("discord:1:0",)]


async def test_a_host_clock_set_back_holds_no_player_longer_at_the_ticket_limits(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
):
    # Timed by the host clock, a clock set back an hour would tell a player who has just filed to
    # wait an hour and ten minutes for the next ticket or lookup, not ten minutes.
    import cogs.limits
    from cogs.limits import InAnyWindow, Limits
    from tests.test_discord_voice import HostClock

    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0) as h:
        cog = h.bot.get_cog("Grievances")
        assert cog is not None
        cog.lookups = Limits(InAnyWindow(1, 600.0), lambda i: i.user.id)
        first = sub("file", category="wallet", description="Bought 500 gems, the wallet never showed them.")
        assert (await ask(fake, nova, "grievance", first)).startswith("Filed ticket")
        assert "GRV-" in await ask(fake, nova, "grievance", sub("list"))
        clock = HostClock()
        clock.back = 3600.0
        # The module the bot loaded the cog from: an extension is loaded as a module of its own.
        for module in (sys.modules[type(cog).__module__], cogs.limits):
            monkeypatch.setattr(module, "time", clock)
        other = sub("file", category="other", description="My friends list is empty since today.")
        filed = await ask(fake, nova, "grievance", other)
        looked = await ask(fake, nova, "grievance", sub("list"))
    assert filed.startswith("You've filed several tickets just now")
    assert looked.startswith("You're asking for tickets faster than I can look")
    waits = [int(re.search(r"(\d+) seconds", told)[1]) for told in (filed, looked)]
    assert all(wait <= 600 for wait in waits), waits


async def test_a_long_ticket_list_continues_in_follow_ups(settings, fake: FakeDiscord):
    async with running_bot(settings, fake, flood_notes=20) as harness:
        await _a_long_ticket_list_continues_in_follow_ups(harness)


async def _a_long_ticket_list_continues_in_follow_ups(harness: Harness) -> None:
    fake = harness.fake
    for i in range(14):
        description = f"Problem number {i}: " + "the store charged me twice and the items never arrived. " * 3
        assert await ask(fake, blaze, "grievance", sub("file", category="wallet", description=description))
    interaction = await fake.slash(blaze, "grievance", sub("list"))
    first = await fake.interaction_answer(interaction)
    follow_ups = await fake.wait_for(
        lambda _: [r for r in fake.interaction_records(interaction) if r.kind == "followup"]
    )
    texts = [private_text(first)] + [r.body["content"] for r in follow_ups]
    assert all(len(t) <= 2000 for t in texts)
    assert all(r.body["flags"] & EPHEMERAL_FLAG for r in follow_ups)
    assert texts[0].startswith("**Your tickets**") and "Problem number 13" in texts[0]
    assert fake.violations == []


def _pings(record: Received) -> dict:
    """The allowed_mentions of whatever message an interaction record carries."""
    body = record.body.get("data", record.body) if record.kind == "callback" else record.body
    return body.get("allowed_mentions")


async def test_ticket_words_in_every_part_of_a_long_list_ping_nobody_and_stay_words(
    settings, fake: FakeDiscord
):
    """A ticket's summary is what a player typed (or staff wrote in Jira): in the list's first
    answer and in each follow-up it pings nobody, cannot leave its quote for a heading, and a
    masked link in it shows its address rather than hiding it."""
    async with running_bot(settings, fake, flood_notes=20):
        for i in range(14):
            words = (
                f"Problem {i} @everyone @here <@&{GUILD_ID}>\n# FREE NITRO\n"
                "[claim your gems](https://evil.example/x) "
            )
            assert await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words * 2))
        interaction = await fake.slash(blaze, "grievance", sub("list"))
        await fake.interaction_answer(interaction)
        follow_ups = await fake.wait_for(
            lambda _: [r for r in fake.interaction_records(interaction) if r.kind == "followup"]
        )
        answers = [r for r in fake.interaction_records(interaction) if r.kind != "typing"]
    assert follow_ups
    for record in answers:
        assert _pings(record) is not None, f"{record.kind} lets Discord ping whoever it names"
        assert _pings(record).get("parse") == [] and not _pings(record).get("roles"), record.kind
        assert not _pings(record).get("users"), record.kind
    texts = [private_text(answers[0])] + [r.body["content"] for r in follow_ups]
    lines = [line for text in texts for line in text.splitlines()]
    assert not [line for line in lines if line.lstrip().startswith("#")]  # no heading
    mention = re.compile(r"(?<!\\)(@everyone|@here|<@)")  # shown as typed, not as a mention
    assert not [line for line in lines if mention.search(line)]
    masked = re.compile(r"(?<!\\)\[[^\]\n]*\]\([^)\n]*\)")
    assert not [line for line in lines if masked.search(line)]
    assert "https://evil.example/x" in texts[0]  # the address is shown, as written
    assert fake.violations == []


def writes_held(db: Path) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """(holder, held, release): a thread that, started, holds `db`'s write lock, as staff's update
    from the desk does, setting `held` once it has it and letting go when `release` is set."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, timeout=30)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        conn.execute("COMMIT")
        conn.close()

    return threading.Thread(target=hold), held, release


@pytest.mark.parametrize("grace, filed_now", [(10.0, True), (0.5, False)])
async def test_a_filing_in_flight_at_a_stop_is_finished_or_kept_and_the_player_told(
    settings, fake: FakeDiscord, grace: float, filed_now: bool
):
    """Staff hold the grievance database (an UPDATE from the desk) while a player files and the
    bot is told to stop: the stop waits for the filing; if its grace runs out the filing is kept
    in the spool and filed at the next start, and the player is told either way."""
    from bot.tools.grievance_store import LocalGrievanceStore

    db = settings.storage_dir / "grievances.db"
    holder, held, release = writes_held(db)

    words = "Bought 500 gems during the stop, none came."
    async with running_bot(settings, fake, shutdown_grace_seconds=grace) as h:
        holder.start()
        await asyncio.to_thread(held.wait, 10)
        interaction = await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
        await fake.wait_for(lambda _: fake.interaction_records(interaction) or None, 10)  # deferred
        h.stop.set()
        if filed_now:
            await asyncio.sleep(1.0)  # the stop waits with the filing, well within its grace
            release.set()
            answer = (await fake.interaction_answer(interaction)).body
        else:
            try:  # told while the database is still held: only the grace running out tells it
                answer = (await fake.interaction_answer(interaction)).body
            finally:
                release.set()
    holder.join()
    said = answer.get("content") or answer["data"]["content"]
    if filed_now:
        assert said.startswith("Filed ticket `GRV-")
    else:
        assert said == CUT_SHORT_BY_RESTART
    store = await LocalGrievanceStore.open(db)  # as the next start opens it: the spool is filed
    try:
        assert [g.description for g in await store.status(str(blaze.id))].count(words) == 1
    finally:
        await store.aclose()


async def test_grievance_status_with_a_key_that_is_not_one_says_so_in_players_words(harness: Harness):
    from bot.sentences import NOT_A_TICKET_KEY

    for typed, shown in [
        ("GRV-12 (the refund one)", "GRV-12 (the refund one)"),  # longer than a key may be
        ("grv12", "grv12"),
        ("GRV-1" + "0" * 200, "GRV-1" + "0" * 75 + "…"),
    ]:
        text = await ask(harness.fake, nova, "grievance", sub("status", ticket=typed))
        assert text == NOT_A_TICKET_KEY.format(key=shown)
        assert "get_grievance_status" not in text and "'" not in text
    assert "GRV-12" in await ask(harness.fake, nova, "grievance", sub("status", ticket=" grv-12 "))
    assert harness.fake.violations == []


async def test_a_failing_command_tells_the_player_and_logs_once(harness: Harness, monkeypatch, caplog):
    async def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(harness.bot.core.preferences, "set_reply_mode", full_disk)
    with caplog.at_level("ERROR"):
        answer = await ask(harness.fake, nova, "replies", [option("style", "text")])
    assert answer == COMMAND_FAILED
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "replies" in failures[0].getMessage() and "No space left" in str(failures[0].exc_info[1])


async def test_settings_a_read_only_disk_refuses_are_said_once_by_file_and_the_player_told(
    harness: Harness, caplog
):
    """preferences.db turns read-only while the bot runs (a disk remounted read-only, a file
    chowned away): every /voice, /replies and /notify tells its player the choice is not saved,
    and the log says so once, naming the file, rather than a traceback a command; the first
    choice saved again says it ended."""
    from bot.app import storage_paths
    from bot.sentences import NEWS_OFF, REPLY_STYLE_CHOSEN, REPLY_STYLES, SETTING_NOT_SAVED

    fake = harness.fake
    store = harness.bot.core.preferences
    voice = harness.bot.core.agent.voices()[0]
    await store._conn.execute("PRAGMA query_only = ON")  # SQLite's own SQLITE_READONLY on each write
    caplog.clear()
    caplog.set_level(logging.INFO)
    for player in (nova, blaze):
        assert await ask(fake, player, "replies", [option("style", "text")]) == SETTING_NOT_SAVED
        assert await ask(fake, player, "notify", [option("news", "off")]) == SETTING_NOT_SAVED
        assert await ask(fake, player, "voice", [option("voice", voice)]) == SETTING_NOT_SAVED
    path = storage_paths(harness.settings).preferences
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert f"{path}: attempt to write a readonly database" in errors[0].getMessage()
    assert errors[0].exc_info is None  # the file and SQLite's words say it: no traceback
    assert (await store.get(str(nova.id))).reply_mode == "voice_and_text"  # as it was
    await store._conn.execute("PRAGMA query_only = OFF")  # the disk takes writes again
    caplog.clear()
    said = await ask(fake, nova, "replies", [option("style", "text")])
    assert said == REPLY_STYLE_CHOSEN.format(style=REPLY_STYLES["text"])
    assert await ask(fake, nova, "notify", [option("news", "off")]) == NEWS_OFF
    logged = [r.getMessage() for r in caplog.records if r.name == "cogs.settings"]
    assert logged == ["preferences.db is written again"], logged


async def test_a_forget_a_read_only_disk_refuses_is_said_once_by_file_and_the_player_told(
    harness: Harness, caplog
):
    """conversations.db refuses a /forget: its player hears that nothing was erased, each time,
    and the log says so once, naming the file; the next /forget that goes through says it ended."""
    from bot.app import storage_paths
    from bot.sentences import NOT_FORGOTTEN

    fake = harness.fake
    store = harness.bot.core.conversations
    assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")
    await store._conn.execute("PRAGMA query_only = ON")
    caplog.clear()
    caplog.set_level(logging.INFO)
    for player in (nova, nova, blaze):
        assert await ask(fake, player, "forget", []) == NOT_FORGOTTEN
    path = storage_paths(harness.settings).conversations
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert f"{path}: attempt to write a readonly database" in errors[0].getMessage()
    assert errors[0].exc_info is None
    await store._conn.execute("PRAGMA query_only = OFF")
    caplog.clear()
    assert await ask(fake, nova, "forget", []) == FORGOTTEN
    logged = [r.getMessage() for r in caplog.records if r.name in ("cogs.settings", "bot.agent")]
    assert logged == ["conversations.db is written again"], logged


async def test_conversations_db_refusing_notes_and_forgets_alike_is_said_once(harness: Harness, caplog):
    """A read-only conversations.db refuses a note's turn and a /forget alike: one outage of one
    file, said once at ERROR and ended once. The turn's save and /forget each kept their own,
    so the log said it twice, and a /forget that went through said it ended while the next note
    said so again."""
    from bot.sentences import NOT_FORGOTTEN

    fake = harness.fake
    store = harness.bot.core.conversations
    await store._conn.execute("PRAGMA query_only = ON")
    caplog.clear()
    caplog.set_level(logging.INFO)
    await reply_to_note(fake, nova)  # its turn is not saved
    for player in (nova, blaze):
        assert await ask(fake, player, "forget", []) == NOT_FORGOTTEN
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    await store._conn.execute("PRAGMA query_only = OFF")
    caplog.clear()
    assert await ask(fake, nova, "forget", []) == NOTHING_TO_FORGET  # the turn was never saved
    await reply_to_note(fake, nova)
    assert await ask(fake, nova, "forget", []) == FORGOTTEN  # in nova's turn order: after its save
    ended = [r.getMessage() for r in caplog.records if "written again" in r.getMessage()]
    assert ended == ["conversations.db is written again"], ended


async def test_grievance_list_shows_every_ticket_open_ones_first(settings, fake: FakeDiscord):
    from bot.tools.grievance_store import LocalGrievanceStore

    async with running_bot(settings, fake, flood_notes=20) as h:
        filed = [
            (await ask(fake, blaze, "grievance", sub("file", category="wallet", description=f"Problem {i}.")))
            for i in range(12)
        ]
        keys = ["GRV-11"] + [text.split("`")[1] for text in filed]  # GRV-11: his seeded ticket
        store = h.bot.core.grievances
        assert isinstance(store, LocalGrievanceStore)
        assert await store.set_status_by_staff(keys[-1], "resolved", by="staff")  # his newest: done
        listed = await ask(fake, blaze, "grievance", sub("list"))
        assert listed.startswith("**Your tickets** (13)\n")
        shown = [line.split("`")[1] for line in listed.splitlines() if line.startswith("`")]
        assert sorted(shown) == sorted(keys)
        assert shown[-1] == keys[-1] and shown[0] == keys[-2]  # open ones first, newest first
        assert listed == await ask(fake, blaze, "grievance", sub("status"))  # no key: the same list
        for i in range(12, 60):  # past what one answer lists
            await store.register(BLAZE, "wallet", f"Problem {i}.")
        interaction = await fake.slash(blaze, "grievance", sub("list"))
        first = private_text(await fake.interaction_answer(interaction))

        def shown() -> list[str]:
            follow_ups = [
                r.body["content"] for r in fake.interaction_records(interaction) if r.kind == "followup"
            ]
            lines = [line for text in [first, *follow_ups] for line in text.splitlines()]
            return [line.split("`")[1] for line in lines if line.startswith("`")]

        newest = await fake.wait_for(lambda _: len(shown()) >= 50 and shown())
    assert first.startswith(TICKETS_HEADING_NEWEST.format(count=50))
    assert len(newest) == 50 and "GRV-11" not in newest  # 61 in all: his oldest are left out


async def test_a_ticket_staff_declined_on_the_desk_is_told_closed_without_a_fix(harness: Harness):
    # The local backend's desk could not decline a ticket: its player read "resolved" and waited.
    store = harness.bot.core.grievances
    for key, status in (("GRV-10", "declined"), ("GRV-12", "duplicate")):
        assert await store.set_status_by_staff(key, status, by="staff")  # type: ignore[union-attr]
    declined = await ask(harness.fake, nova, "grievance", sub("status", ticket="GRV-10"))
    assert "closed without a fix" in declined and "declined" not in declined, declined
    listed = await ask(harness.fake, nova, "grievance", sub("list"))
    assert "closed without a fix" in listed and "closed as a duplicate" in listed, listed
    assert "resolved" not in listed, listed


async def test_ticket_times_are_discord_timestamps(harness: Harness):
    text = await ask(harness.fake, nova, "grievance", sub("status", ticket="GRV-10"))
    updated = dt.datetime(2026, 11, 18, 16, 40, tzinfo=dt.UTC)  # bot/data/grievances.json
    assert f"updated <t:{int(updated.timestamp())}:f>" in text  # shown in each player's time zone


async def test_a_command_that_reached_the_bot_late_is_deferred_within_discords_3_s(
    settings, fake: FakeDiscord, monkeypatch
):
    """Discord's 3 s run from when it made the interaction (the time in its id), not from when
    the event reached the bot: one that arrives 1.5 s late has 1.5 s left."""
    fake.first_response_within = 3.0
    async with running_bot(settings, fake) as h:  # defer_after_seconds 2.0
        listing, status = asyncio.Event(), h.bot.core.grievances.status

        async def slow_status(*args: object, **kwargs: object) -> object:
            await listing.wait()
            return await status(*args, **kwargs)

        monkeypatch.setattr(h.bot.core.grievances, "status", slow_status)
        interaction = await fake.slash(nova, "grievance", sub("list"), ago=1.5)
        (first,) = await fake.wait_for(
            lambda _: [r for r in fake.interaction_records(interaction) if r.kind == "callback"]
        )
        assert first.error is None and first.body["type"] == 5  # "thinking…", in time
        listing.set()
        assert "GRV-10" in private_text(await fake.interaction_answer(interaction))


async def test_a_command_is_answered_in_time_while_speech_work_fills_the_default_executor(
    settings, fake: FakeDiscord
):
    """A raid's speech work (decoding, hearing, routing, speaking) runs in the loop's default
    executor. Discord is reached by name, and the bot's connection to it is new (the edge closed
    the last one) with the name's cache expired (aiohttp keeps one 10 s): that lookup must not
    wait behind the speech, or the first response misses Discord's 3 s."""
    fake.first_response_within = 3.0
    by_name = fake.api_base.replace("127.0.0.1", "localhost")
    async with running_bot(settings, fake, api_base=by_name) as h:
        loop, speech_done = asyncio.get_running_loop(), threading.Event()
        speaking = [loop.run_in_executor(None, speech_done.wait) for _ in range(64)]  # all its threads
        try:
            fake.keep_alive = False
            h.bot.http.connector.clear_dns_cache()
            interaction = await fake.slash(nova, "grievance", sub("list"))
            (first,) = await fake.wait_for(
                lambda _: [r for r in fake.interaction_records(interaction) if r.kind == "callback"]
            )
        finally:
            speech_done.set()
            await asyncio.gather(*speaking)
        assert first.error is None
        assert "GRV-10" in private_text(await fake.interaction_answer(interaction))


async def test_the_bots_own_lookups_are_a_loop_to_every_aiohttp_pyproject_allows() -> None:
    """aiohttp 3.9 asks the loop a ThreadedResolver is given whether it is running, as the
    resolver is made: the bot stopped at login there, with an AttributeError."""
    from concurrent.futures import ThreadPoolExecutor

    from cogs.bot import discord_connector

    threads = ThreadPoolExecutor(1)
    connector = discord_connector(threads)
    try:
        lookups = connector._resolver._loop  # what aiohttp holds as its loop
        assert lookups.is_running() and lookups.get_debug() == asyncio.get_running_loop().get_debug()
        assert (await connector._resolver.resolve("localhost", 443))[0]["port"] == 443
    finally:
        await connector.close()
        threads.shutdown()


async def test_a_filing_discord_no_longer_takes_is_not_filed_and_not_an_error(
    settings, fake: FakeDiscord, caplog
):
    from bot.tools.grievance_store import LocalGrievanceStore

    fake.first_response_within = 3.0
    fake.expect_refusals()  # the bot cannot know before it asks
    words = "Heard by nobody: the event came too late."
    with caplog.at_level("WARNING"):
        async with running_bot(settings, fake):
            interaction = await fake.slash(
                blaze, "grievance", sub("file", category="wallet", description=words), ago=4.0
            )
            await fake.wait_for(lambda _: fake.interaction_records(interaction))
        # stopped: whatever the command started has finished
    assert [r.error for r in fake.interaction_records(interaction)] == [10062]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("10062" in r.getMessage() for r in caplog.records if r.name == "cogs.interactions")
    store = await LocalGrievanceStore.open(settings.storage_dir / "grievances.db")
    try:  # the player saw "the application did not respond" and will file it again
        assert words not in [g.description for g in await store.status(BLAZE, limit=100)]
    finally:
        await store.aclose()


async def test_a_filing_discord_no_longer_takes_spends_none_of_the_filing_limit(settings, fake: FakeDiscord):
    # The player saw "the application did not respond": their next try files, not "please wait".
    fake.first_response_within = 3.0
    fake.expect_refusals()
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0):
        words = sub("file", category="wallet", description="Gems bought on Monday never arrived.")
        late = await fake.slash(blaze, "grievance", words, ago=4.0)
        await fake.wait_for(lambda _: fake.interaction_records(late))
        assert [r.error for r in fake.interaction_records(late)] == [10062]
        assert (await ask(fake, blaze, "grievance", words)).startswith("Filed ticket")
        other = sub("file", category="other", description="Lag spikes every evening.")
        refused = await ask(fake, blaze, "grievance", other)
        assert "Please wait" in refused  # the filing that went through is counted


def dms_to(fake: FakeDiscord, player: InjectedUser) -> list[Received]:
    """The messages with words the bot sent `player` by DM."""
    return [m for m in fake.sent("message", dm_channel_id(player.id)) if m.content]


async def dmed_by_the_next_start(
    settings: Settings, fake: FakeDiscord, player: InjectedUser
) -> list[Received]:
    """The DMs to `player` of a start whose ticket news runs every 0.1 s, once it has sent any."""
    async with running_bot(settings.replace(news={"poll_seconds": 0.1}), fake):
        return await fake.wait_for(lambda _: dms_to(fake, player))


def answers_held_once_told(
    monkeypatch: pytest.MonkeyPatch, news: ticket_news.TicketNews, answers: int = 1
) -> asyncio.Event:
    """Each filing's answer, once `news` recorded its key as told in it, held for good (its
    request never goes): an event set once `answers` answers are held."""
    heard = news.heard_in_answer
    held: list[object] = []
    told = asyncio.Event()

    async def heard_then_held(*args: object) -> None:
        await heard(*args)  # type: ignore[arg-type]
        held.append(args[0])
        if len(held) == answers:
            told.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(news, "heard_in_answer", heard_then_held)
    return told


async def test_a_filing_whose_answer_is_lost_reaches_the_player_by_dm(settings, monkeypatch, caplog):
    async def token_gone(self: FakeDiscord, request: object) -> NoReturn:
        raise DiscordError(401, 50027, "Invalid Webhook Token")

    # The answer cannot reach the player once "thinking…" is shown (Discord lost the token).
    monkeypatch.setattr(FakeDiscord, "_edit_original", token_gone)
    monkeypatch.setattr(FakeDiscord, "_followup", token_gone)
    words = "Charged twice, and nobody told me the ticket."
    async with serving() as fake:
        async with running_bot(settings.replace(news={"poll_seconds": 0.1}), fake):
            with caplog.at_level("WARNING"):
                await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
                dms = await fake.wait_for(lambda _: dms_to(fake, blaze))
    (key,) = [r.args[0] for r in caplog.records if r.name == "cogs.grievance"]
    assert dms[0].content.endswith(f'("{words}") is now filed as ticket {key}. Its status is open.')
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def _hold_answers(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Events: an answer to a command reached the fake (which holds it), and let it through. For
    a fake served after this call: a fake binds its routes when it starts."""
    answering, release = asyncio.Event(), asyncio.Event()
    edit_original = FakeDiscord._edit_original

    async def slow_edit(self: FakeDiscord, request: web.Request) -> web.Response:
        await request.read()  # all of it, in case the bot goes away meanwhile
        answering.set()
        await release.wait()
        return await edit_original(self, request)

    monkeypatch.setattr(FakeDiscord, "_edit_original", slow_edit)
    return answering, release


async def test_a_filing_whose_process_ends_as_its_answer_reaches_discord_is_told_once(settings, monkeypatch):
    """The filing is committed and its answer sent; the process ends before Discord answers that
    request (a stop whose grace runs out while Discord is slow to take the answer; a kill is the
    same): the player reads the key in the answer, and the next start does not DM it again."""
    answering, release = _hold_answers(monkeypatch)
    words = "Charged twice, told the ticket once."
    news = {"poll_seconds": 3600.0}  # rounds run here, when the test says
    async with serving() as fake:
        async with running_bot(settings, fake, shutdown_grace_seconds=0.2) as h:
            interaction = await fake.slash(
                blaze, "grievance", sub("file", category="wallet", description=words)
            )
            await asyncio.wait_for(answering.wait(), 30)  # filed: its answer is on its way
            h.stop.set()
            await asyncio.wait_for(h.task, 30)
        release.set()
        said = private_text(await fake.interaction_answer(interaction))
        assert said.startswith("Filed ticket `GRV-")
        async with running_bot(settings.replace(news=news), fake) as h:
            await h.bot.core.news.run_once(h.bot.get_cog("TicketNewsDesk"))  # type: ignore[arg-type]
        assert dms_to(fake, blaze) == []


async def test_a_filing_whose_stop_cuts_its_answer_waiting_out_a_rate_limit_reaches_the_player_by_dm(
    settings,
):
    """The answer never went: Discord rate limited it (429, waited out by discord.py) and the
    stop's grace ran out meanwhile. Recorded as told before it was sent, the filing is untold
    again, and the next start DMs its key."""
    words = "Charged twice, the answer never came."
    async with serving() as fake:
        fake.edits_rate_limited, fake.retry_after = 1, 20.0
        async with running_bot(settings, fake, shutdown_grace_seconds=0.2) as h:
            await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
            await fake.wait_for(lambda _: [r for r in fake.received if r.kind == "edit_original"])
            h.stop.set()
            await asyncio.wait_for(h.task, 30)
        dms = await dmed_by_the_next_start(settings, fake, blaze)
    assert re.search(rf'\("{words}"\) is now filed as ticket GRV-\d+\. Its status is open\.$', dms[0].content)


async def test_a_filing_whose_stop_cuts_it_once_told_before_its_answer_goes_reaches_the_player_by_dm(
    settings, monkeypatch
):
    """The filing is recorded as told in its answer, and the stop's grace runs out before that
    answer's request goes (the defer went long before): untold again, the next start DMs its key.
    The untelling, begun as the cut answer ends, ran where the stop did not wait for it, and
    news.db closed under it: the key went by no DM."""
    words = "Charged twice, cut before the answer."
    async with serving() as fake:
        async with running_bot(settings, fake, shutdown_grace_seconds=0.2, defer_after_seconds=0.0) as h:
            news = h.bot.core.news
            unheard = news.unheard_in_answer
            told = answers_held_once_told(monkeypatch, news)

            async def unheard_slowly(*args: object) -> None:
                await asyncio.sleep(0.3)  # a busy database: the stop must wait for it all the same
                await unheard(*args)  # type: ignore[arg-type]

            monkeypatch.setattr(news, "unheard_in_answer", unheard_slowly)
            interaction = await fake.slash(
                blaze, "grievance", sub("file", category="wallet", description=words)
            )
            await asyncio.wait_for(told.wait(), 30)
            assert [r.kind for r in fake.interaction_records(interaction)] == ["callback"]  # the defer
            h.stop.set()
            await asyncio.wait_for(h.task, 30)
        dms = await dmed_by_the_next_start(settings, fake, blaze)
    assert re.search(rf'\("{words}"\) is now filed as ticket GRV-\d+\. Its status is open\.$', dms[0].content)


async def test_three_filings_a_stop_cuts_once_told_reach_all_players_by_dm(settings, monkeypatch):
    """Three filings cut as above, whose untellings end one after the other: the stop waits for
    the slowest too, not only for the first to end, or news.db closes under it. Three, since a
    stop waits at two points (its drain, then the client's close): a wait that ended at the first
    untelling to end would still see two of them through."""
    words = [
        (blaze, "Charged twice, cut before the answer."),
        (nova, "Lost my skins, cut before the answer."),
        (quill, "Banned by mistake, cut before the answer."),
    ]
    # Apart by more than the rest of a stop takes: each untelling ends on its own.
    slowness = {str(blaze.id): 0.1, str(nova.id): 0.8, str(quill.id): 1.5}
    async with serving() as fake:
        async with running_bot(settings, fake, shutdown_grace_seconds=0.2, defer_after_seconds=0.0) as h:
            news = h.bot.core.news
            unheard = news.unheard_in_answer
            told = answers_held_once_told(monkeypatch, news, len(words))

            async def unheard_slowly(user_id: str, *args: object) -> None:
                await asyncio.sleep(slowness[user_id])
                await unheard(user_id, *args)  # type: ignore[arg-type]

            monkeypatch.setattr(news, "unheard_in_answer", unheard_slowly)
            for player, said in words:
                await fake.slash(player, "grievance", sub("file", category="wallet", description=said))
            await asyncio.wait_for(told.wait(), 30)
            h.stop.set()
            await asyncio.wait_for(h.task, 30)
        async with running_bot(settings.replace(news={"poll_seconds": 0.1}), fake):
            for player, said in words:
                dms = await fake.wait_for(lambda _, p=player: dms_to(fake, p))
                assert re.search(rf'\("{said}"\) is now filed as ticket GRV-\d+\.', dms[0].content)


async def test_a_stop_waits_for_an_untelling_that_hangs_no_longer_than_its_bound_and_says_so(
    settings, monkeypatch, caplog
):
    """An untelling on a database that does not answer holds the stop FOLLOW_UP_SECONDS at most,
    and the log says what the stop did not wait out: which ticket, whose, and that it is DMed
    after the next start."""
    monkeypatch.setattr("cogs.bot.FOLLOW_UP_SECONDS", 0.3)
    never = asyncio.Event()
    async with serving() as fake:
        async with running_bot(settings, fake, shutdown_grace_seconds=0.2, defer_after_seconds=0.0) as h:
            news = h.bot.core.news
            told = answers_held_once_told(monkeypatch, news)

            async def unheard_never(*args: object) -> None:
                await never.wait()

            monkeypatch.setattr(news, "unheard_in_answer", unheard_never)
            words = "Charged twice, and the database hangs."
            await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
            await asyncio.wait_for(told.wait(), 30)
            with caplog.at_level(logging.WARNING, logger="cogs.bot"):
                h.stop.set()
                await asyncio.wait_for(h.task, 30)
    assert "closing with 1 task(s) still ending the work cut short" in caplog.text
    undone = [r.getMessage() for r in caplog.records if r.getMessage().startswith("closing before")]
    assert len(undone) == 1
    assert re.fullmatch(
        rf"closing before giving ticket\(s\) GRV-\d+ back to ticket news: filed for user {blaze.id},"
        r" whose answer never told them, they will be DMed after the next start \(unless keeping"
        r" that was refused or cut, as logged\)",
        undone[0],
    )


async def test_a_stop_that_cuts_an_untelling_before_it_is_kept_says_it_is_not_dmed(
    settings, monkeypatch, caplog
):
    """news.db itself locked as long as the stop waits: the untelling's record of what it owes
    is cut too, and the key is DMed neither now nor after the next start. The log said it would be."""
    monkeypatch.setattr("cogs.bot.FOLLOW_UP_SECONDS", 0.3)
    never = asyncio.Event()
    async with serving() as fake:
        async with running_bot(settings, fake, shutdown_grace_seconds=0.2, defer_after_seconds=0.0) as h:
            news = h.bot.core.news
            told = answers_held_once_told(monkeypatch, news)

            async def kept_never(*args: object) -> str:
                await never.wait()
                return ""

            monkeypatch.setattr(news.store, "owe_untelling", kept_never)
            words = "Charged twice, and news.db hangs."
            await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
            await asyncio.wait_for(told.wait(), 30)
            with caplog.at_level(logging.WARNING):
                h.stop.set()
                await asyncio.wait_for(h.task, 30)
                # Let finish past the stop's wait, it is cancelled as the process ends
                # (asyncio.run() cancels what is left).
                left = [t for t in asyncio.all_tasks() if "unheard_in_answer" in t.get_coro().__qualname__]
                assert len(left) == 1
                left[0].cancel()
                await asyncio.gather(*left, return_exceptions=True)
    cut = [r.getMessage() for r in caplog.records if r.name == "bot.ticket_news"]
    assert len(cut) == 1 and re.fullmatch(
        rf"closing before keeping that {blaze.id} request \d+ owes tickets \['GRV-\d+'\] to news: they"
        r" are not DMed \(/grievance status lists them\)",
        cut[0],
    ), cut


async def test_an_untelling_a_stop_cuts_behind_another_process_lock_is_done_at_the_next_start(
    settings, monkeypatch, caplog
):
    """Staff hold grievances.db (an UPDATE from the desk) while a stop cuts a filing told before
    its answer went: its untelling waits for the lock longer than the stop waits for it. Owed on
    disk before it waited, it is done at the next start: the player gets the key by DM, once."""
    from bot.app import storage_paths

    # The stop's wait leaves the owed write, a short one, time on a loaded machine too; the lock
    # outlasts the untelling's wait for it, which outlasts the stop's: cut short either way, and
    # the test does not wait the 30 s.
    monkeypatch.setattr("cogs.bot.FOLLOW_UP_SECONDS", 2.0)
    monkeypatch.setattr("bot.db.BUSY_SECONDS", 6)
    words = "Charged twice, and staff hold the database."
    holder, held, release = writes_held(storage_paths(settings).grievances)
    async with serving() as fake:
        try:
            async with running_bot(settings, fake, shutdown_grace_seconds=0.2, defer_after_seconds=0.0) as h:
                told = answers_held_once_told(monkeypatch, h.bot.core.news)
                await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
                await asyncio.wait_for(told.wait(), 30)
                holder.start()
                assert await asyncio.to_thread(held.wait, 30)
                with caplog.at_level(logging.WARNING, logger="cogs.bot"):
                    h.stop.set()
                    await asyncio.wait_for(h.task, 30)
        finally:
            release.set()
            await asyncio.to_thread(holder.join, 30)
        assert [r for r in caplog.records if r.getMessage().startswith("closing before giving ticket")]
        async with running_bot(settings.replace(news={"poll_seconds": 3600.0}), fake) as h:
            desk = h.bot.get_cog("TicketNewsDesk")
            for _ in range(2):  # the second round finds nothing left to tell
                await h.bot.core.news.run_once(desk)  # type: ignore[arg-type]
            assert await h.bot.core.news.store.untellings_owed() == []
        dms = dms_to(fake, blaze)
    assert len(dms) == 1
    assert re.search(rf'\("{words}"\) is now filed as ticket GRV-\d+\. Its status is open\.$', dms[0].content)


def _refuse_answers(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Events: an answer to a command reached the fake, which holds it; let it go, refused as
    Discord refuses an answer whose token is gone. For a fake served after this call."""
    answering, release = asyncio.Event(), asyncio.Event()

    async def refused(self: FakeDiscord, request: web.Request) -> NoReturn:
        await request.read()
        answering.set()
        await release.wait()
        raise DiscordError(401, 50027, "Invalid Webhook Token")

    monkeypatch.setattr(FakeDiscord, "_edit_original", refused)
    monkeypatch.setattr(FakeDiscord, "_followup", refused)
    return answering, release


@pytest.mark.parametrize(
    ("grace", "slowness"), [(30.0, 0.3), (0.3, 1.0)], ids=["within the grace", "past the grace"]
)
async def test_a_filing_whose_answer_discord_refuses_as_the_bot_stops_reaches_the_player_by_dm(
    settings, monkeypatch, grace: float, slowness: float
):
    """Discord refuses the answer (the token gone) while a stop waits for it: the key is given
    back to ticket news as the answer ends. That ran where the stop did not wait for it, news.db
    closed under it, and the key went by no DM; and one still being written when the grace ran
    out was cancelled with the work cut short."""
    answering, release = _refuse_answers(monkeypatch)
    words = "Gems bought as the bot stopped."
    async with serving() as fake:
        async with running_bot(settings, fake, shutdown_grace_seconds=grace) as h:
            news = h.bot.core.news
            unheard = news.unheard_in_answer

            async def unheard_slowly(*args: object) -> None:
                await asyncio.sleep(slowness)  # a busy database: the stop waits for it all the same
                await unheard(*args)  # type: ignore[arg-type]

            monkeypatch.setattr(news, "unheard_in_answer", unheard_slowly)
            await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
            await asyncio.wait_for(answering.wait(), 30)  # filed: its answer is on its way
            h.stop.set()
            await asyncio.sleep(0.1)  # the stop is waiting for the answer
            release.set()
            await asyncio.wait_for(h.task, 30)
        dms = await dmed_by_the_next_start(settings, fake, blaze)
    assert re.search(rf'\("{words}"\) is now filed as ticket GRV-\d+\. Its status is open\.$', dms[0].content)


@pytest.mark.parametrize("found", ["before the answer", "after it"])
async def test_a_filing_whose_answer_discord_refuses_is_dmed_once_whenever_news_finds_it(
    settings, monkeypatch, found: str
):
    """The filing is recorded as told before its answer goes; Discord then refuses the answer
    (the token gone): the key goes by DM once, whether a round of news had found the filing while
    the answer was on its way (held for it) or finds it only after."""
    answering, release = _refuse_answers(monkeypatch)
    news = {"poll_seconds": 3600.0}  # rounds run here, when the test says
    words = "Gems bought, never arrived."
    async with serving() as fake:
        async with running_bot(settings.replace(news=news), fake) as h:
            desk = h.bot.get_cog("TicketNewsDesk")
            await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
            await asyncio.wait_for(answering.wait(), 30)  # filed: its answer is on its way
            if found == "before the answer":
                await h.bot.core.news.run_once(desk)  # type: ignore[arg-type]
            release.set()
            await settle(fake)
            await h.bot.core.news.run_once(desk)  # type: ignore[arg-type]
            await h.bot.core.news.run_once(desk)  # type: ignore[arg-type]
            dms = dms_to(fake, blaze)
    assert len(dms) == 1
    assert re.search(rf'\("{words}"\) is now filed as ticket GRV-\d+\. Its status is open\.$', dms[0].content)


async def test_a_filing_whose_answer_reached_the_player_is_no_news(settings, monkeypatch):
    """Its key is told in the answer: a round of ticket news while the answer is on its way holds
    it, and no DM repeats it then, after, or from the next process."""
    answering, release = _hold_answers(monkeypatch)
    news = {"poll_seconds": 3600.0}  # rounds run here, when the test says
    async with serving() as fake:
        async with running_bot(settings.replace(news=news), fake) as h:
            desk = h.bot.get_cog("TicketNewsDesk")
            interaction = await fake.slash(
                blaze, "grievance", sub("file", category="wallet", description="Gems gone.")
            )
            await asyncio.wait_for(answering.wait(), 30)  # filed: its answer is on its way
            await h.bot.core.news.run_once(desk)  # type: ignore[arg-type]
            release.set()
            said = private_text(await fake.interaction_answer(interaction))
            assert said.startswith("Filed ticket `GRV-")
        async with running_bot(settings.replace(news=news), fake) as h:
            await h.bot.core.news.run_once(h.bot.get_cog("TicketNewsDesk"))  # type: ignore[arg-type]
        assert dms_to(fake, blaze) == []


class GatedEngine(FrontendEngine):
    """Each turn waits at the model until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def complete(self, turn: TurnState) -> EngineReply:
        self.waiting.set()
        await self.gate.wait()
        return await super().complete(turn)


async def test_forget_does_not_wait_for_other_players_turns(settings, fake: FakeDiscord):
    engine = GatedEngine()
    async with running_bot(settings.replace(agent={"max_concurrent_turns": 1}), fake, engine=engine):
        try:
            note = await fake.send_note(blaze, voice_note())
            await engine.waiting.wait()  # Blaze's turn holds the only turn slot
            assert await ask(fake, nova, "forget", [], guild=False) in (FORGOTTEN, NOTHING_TO_FORGET)
        finally:
            engine.gate.set()
        await fake.wait_for(lambda _: len(fake.replies_to(note["id"])) >= 2)


async def _a_note_waits_and_its_player_forgets(fake: FakeDiscord, engine: GatedEngine) -> tuple[dict, dict]:
    """Blaze's note holds the only turn slot; Nova's waits for it, then Nova uses /forget. Both
    notes, Blaze's and the waiting one."""
    others = await fake.send_note(blaze, voice_note())
    await engine.waiting.wait()
    waiting = await fake.send_note(nova, voice_note())
    await fake.wait_for(  # its 🎧: it waits for the slot
        lambda rs: any(r.kind == "reaction_add" and r.body["message_id"] == waiting["id"] for r in rs)
    )
    assert await ask(fake, nova, "forget", [], guild=False) in (FORGOTTEN, NOTHING_TO_FORGET)
    return others, waiting


async def test_forget_also_forgets_a_note_sent_before_it_that_waits_for_a_turn(settings, fake: FakeDiscord):
    # Under a raid a note waits for a turn slot: answered after the reset, it was remembered, and
    # the player's next note after /forget did not start afresh.
    engine = GatedEngine()
    async with running_bot(settings.replace(agent={"max_concurrent_turns": 1}), fake, engine=engine):
        others, waiting = await _a_note_waits_and_its_player_forgets(fake, engine)
        engine.gate.set()
        await fake.wait_for(lambda _: all(len(fake.replies_to(n["id"])) >= 2 for n in (others, waiting)))
        assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")


async def test_forget_still_holds_for_a_note_sent_before_it_that_the_next_process_answers(
    settings, fake: FakeDiscord
):
    # The /forget was held by the process it reached alone: the note waiting when that process
    # stopped, answered by the next one's catch-up, was remembered there.
    engine = GatedEngine()
    one_slot = settings.replace(agent={"max_concurrent_turns": 1})
    async with running_bot(one_slot, fake, engine=engine, shutdown_grace_seconds=0.3) as h:
        others, waiting = await _a_note_waits_and_its_player_forgets(fake, engine)
        h.stop.set()
        await asyncio.wait_for(h.task, 30)
    (cut,) = fake.replies_to(waiting["id"])  # the stop cut it: the next process answers it
    assert cut.body["content"].startswith("I'm restarting")
    async with running_bot(one_slot, fake):
        # The words after "I'm restarting", then the voice reply.
        await fake.wait_for(lambda _: all(len(fake.replies_to(n["id"])) >= 3 for n in (others, waiting)))
        assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")


async def test_forget_holds_for_a_note_sent_before_it_that_the_other_bot_of_a_deploy_answers(
    settings, fake: FakeDiscord
):
    # An overlapping deploy: the old process took the /forget, the new one answers the note the
    # old one's stop cut, and knew nothing of the /forget.
    engine = GatedEngine()
    one_slot = settings.replace(agent={"max_concurrent_turns": 1})
    async with running_bot(one_slot, fake, engine=engine, shutdown_grace_seconds=0.3) as old:
        others, waiting = await _a_note_waits_and_its_player_forgets(fake, engine)
        async with running_bot(one_slot, fake, recheck_seconds=0.2):
            old.stop.set()
            await asyncio.wait_for(old.task, 30)
            # The words after "I'm restarting", then the voice reply.
            await fake.wait_for(lambda _: all(len(fake.replies_to(n["id"])) >= 3 for n in (others, waiting)))
            assert (await reply_to_note(fake, nova))[1].content.endswith("History 0.")


async def test_a_command_still_waiting_near_the_tokens_end_tells_the_player(
    settings, fake: FakeDiscord, monkeypatch
):
    from cogs import interactions

    # Discord's token lasts 15 minutes and the bot gives up at 14: scaled down to a second here.
    monkeypatch.setattr(interactions, "GIVE_UP_SECONDS", 1.0)
    engine = GatedEngine()
    async with running_bot(settings, fake, engine=engine):
        try:
            note = await fake.send_note(nova, voice_note())
            await engine.waiting.wait()  # Nova's own turn: her /forget waits for it
            interaction = await fake.slash(nova, "forget", [], guild=False)
            answer = await fake.interaction_answer(interaction)
        finally:
            engine.gate.set()
        await fake.wait_for(lambda _: len(fake.replies_to(note["id"])) >= 2)
    assert answer.kind == "edit_original" and answer.body["content"] == STILL_BUSY


async def test_a_host_clock_ahead_of_discords_gives_no_command_up_early(
    settings, fake: FakeDiscord, monkeypatch
):
    # By a clock 20 minutes ahead every interaction looks past its token's 15 minutes: a deferred
    # command was given up as soon as it was deferred, a filing among them, and the player told
    # "still busy" for each. Discord takes no first response after 3 s: the token is its own.
    ahead = discord.utils.utcnow

    async with running_bot(settings, fake, defer_after_seconds=0.0):
        monkeypatch.setattr(discord.utils, "utcnow", lambda: ahead() + dt.timedelta(minutes=20))
        listed = await ask(fake, nova, "grievance", sub("list"))
        words = sub("file", category="wallet", description="Gems bought on Monday never arrived.")
        filed = await ask(fake, nova, "grievance", words)
    assert "GRV-10" in listed
    assert filed.startswith("Filed ticket")
    assert fake.violations == []


@pytest.mark.parametrize(("late", "counted"), [(2.0, 2.0), (1200.0, 3.0)])
async def test_an_interaction_that_reached_the_bot_late_has_that_much_less_of_its_token(
    monkeypatch, late: float, counted: float
):
    # Its token's deadlines run from when Discord made it, as far back as Discord's 3 s for a
    # first response: a later answer would be refused, an earlier one is a clock running ahead.
    from types import SimpleNamespace

    from cogs import interactions

    now = discord.utils.utcnow()
    monkeypatch.setattr(discord.utils, "utcnow", lambda: now)
    interaction = SimpleNamespace(created_at=now - dt.timedelta(seconds=late))
    loop = asyncio.get_running_loop()
    before = loop.time()
    made = interactions.made_at(interaction)  # type: ignore[arg-type]
    after = loop.time()
    assert before - counted <= made <= after - counted


async def test_a_connection_to_discord_lost_as_the_bot_answers_is_a_line_not_a_stray_traceback(
    harness: Harness, caplog
):
    """discord.py's webhook layer raises aiohttp's errors as they are: one escaping the command's
    error handler, or the empty suggestions for a command from before an upgrade, ended discord.py's
    task for the interaction ("Task exception was never retrieved", whenever it was collected);
    one sending suggestions was logged with its traceback at each keystroke."""
    fake = harness.fake
    with caplog.at_level("WARNING"):
        for cuts, name, options, autocomplete in (
            (2, "notify", [option("news", "on")], False),  # the answer, then the apology for it
            (1, "replies", [option("style", "x", focused=True)], True),
            (1, "voice", [option("voice", "ba", focused=True)], True),
        ):
            fake.callbacks_cut = cuts
            interaction = await fake.slash(nova, name, options, autocomplete=autocomplete)
            await fake.wait_for(lambda _, i=interaction, n=cuts: len(fake.interaction_records(i)) >= n)

        def ended(*lines: str) -> bool:
            gc.collect()  # a task that ended with an exception no one retrieved says so as it goes
            return sum(line in caplog.text for line in lines) >= 2

        # Told, or its task ended unretrieved; both suggestions said, in a line or a traceback.
        await _until(lambda: ended("slash command notify failed", "could not tell", "never retrieved"))
        suggestions = ("an autocomplete was not answered", "Ignoring exception in autocomplete")
        await _until(lambda: ended(*suggestions, *suggestions))
        await settle(fake)
        gc.collect()
        await asyncio.sleep(0)
    said = [(r.name, r.levelname, r.getMessage().splitlines()[0]) for r in caplog.records]
    assert [s for s in said if s[1] == "ERROR"] == [("cogs.bot", "ERROR", "slash command notify failed")]
    assert [r for r in caplog.records if r.exc_info and r.name != "cogs.bot"] == []
    assert "could not tell the player about the failed command: Server disconnected" in caplog.text
    assert fake.violations == []


async def test_a_stop_landing_while_a_command_given_up_rolls_back_is_not_swallowed() -> None:
    """A command given up near its token's end has its work cancelled and waited for (a filing
    rolls back and spools). A stop out of grace landing in that wait, taken for the work's own
    cancel and dropped, would have the command tell the player and end as if never stopped."""
    from cogs.interactions import _cancelled

    rolling_back = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            rolling_back.set()
            await asyncio.Event().wait()  # the rollback, which the stop's cancel reaches too
        return "never"

    working = asyncio.ensure_future(work())
    await asyncio.sleep(0)
    giving_up = asyncio.ensure_future(_cancelled(working))
    await rolling_back.wait()
    giving_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await giving_up
    assert working.cancelled()

    # The work's own cancel, in a caller handling a cancel already, is still no news.
    at_work = asyncio.Event()

    async def cut_then_given_up() -> str:
        working = asyncio.ensure_future(asyncio.Event().wait())
        try:
            at_work.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await _cancelled(working)
            return "went on to tell the player"
        return "never"

    cut = asyncio.ensure_future(cut_then_given_up())
    await at_work.wait()
    cut.cancel()
    assert await cut == "went on to tell the player"


async def test_a_command_discord_still_shows_from_before_an_upgrade(harness: Harness, caplog):
    with caplog.at_level("WARNING"):
        removed = await ask(harness.fake, nova, "tickets", [])
        reshaped = await ask(harness.fake, nova, "notify", [{"name": "news", "type": 5, "value": True}])
    assert removed == reshaped == COMMAND_OUTDATED
    told = [r for r in caplog.records if r.name == "cogs.bot"]
    assert [r.levelname for r in told] == ["WARNING", "WARNING"]
    assert all("voxdesk sync" in r.getMessage() and not r.exc_info for r in told)


async def test_an_option_an_old_version_typed_otherwise_is_told_as_an_upgrade(harness: Harness, caplog):
    # Options that came as numbers once: discord.py hands a plain `str` parameter whatever came.
    retyped = [
        (
            "grievance",
            [{"name": "status", "type": 1, "options": [{"name": "ticket", "type": 4, "value": 7}]}],
        ),
        ("voice", [{"name": "voice", "type": 4, "value": 2}]),
    ]
    with caplog.at_level("WARNING"):
        typing = [{"name": "voice", "type": 4, "value": 2, "focused": True}]
        suggesting = await harness.fake.slash(nova, "voice", typing, autocomplete=True)
        suggested = await harness.fake.interaction_answer(suggesting)
        told = [await ask(harness.fake, nova, name, options) for name, options in retyped]
    assert suggested.body["data"]["choices"] == []
    assert told == [COMMAND_OUTDATED] * 2
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname) for r in lines] == [("cogs.bot", "WARNING")] * 2
    assert all("voxdesk sync" in r.getMessage() and not r.exc_info for r in lines)


async def test_a_mention_in_words_is_answered_and_not_taken_for_a_text_command(harness: Harness, caplog):
    with caplog.at_level("ERROR"):
        message = await harness.fake.send_message(
            nova, channel_id=OTHER_CHANNEL, guild=True, content="what are my tickets?", mention_bot=True
        )
        (hint,) = await harness.fake.wait_for(lambda _: harness.fake.replies_to(message["id"]))
    assert hint.content == NOT_A_NOTE  # the voice cog's listener still hears messages
    assert caplog.records == []


async def test_a_blank_description_is_refused_in_plain_words_and_not_counted(settings, fake: FakeDiscord):
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0):
        # Hangul fillers are letters that draw nothing, what Discord users type for an empty look:
        # three "words" of them filed a ticket nobody could read.
        fillers = ("\u3164" * 3 + " ") * 3, "\uffa0\u115f\u1160 " * 3, "\u2800" * 8
        for blank in ("\u00a0" * 6, "\u3000" * 5, "\u200b \u2003\u200b \u00a0", *fillers):
            text = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=blank))
            assert text == BLANK_DESCRIPTION
        filed = await ask(fake, blaze, "grievance", sub("file", category="wallet", description="Gems gone."))
        assert filed.startswith("Filed ticket")  # the blanks did not use up his one filing


async def test_a_description_too_short_to_act_on_is_refused_with_what_to_add_and_not_counted(
    settings, fake: FakeDiscord
):
    # "a    " passed Discord's minimum length, and a word alone ("Refund") made a ticket staff
    # could do nothing with.
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0):
        for short in ("a    ", "Refund", "lag!!", "\u00a0x\u00a0y\u00a0"):
            text = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=short))
            assert text == DESCRIPTION_TOO_SHORT
        filed = await ask(fake, blaze, "grievance", sub("file", category="wallet", description="Gems gone."))
        assert filed.startswith("Filed ticket")  # the short ones did not use up his one filing


async def filed_twice_at_once(fake: FakeDiscord, words: str) -> list[str]:
    """Blaze's answers to one complaint sent twice at once (a double submit)."""
    both = await asyncio.gather(
        *(fake.slash(blaze, "grievance", sub("file", category="wallet", description=words)) for _ in range(2))
    )
    return [private_text(await fake.interaction_answer(i)) for i in both]


async def test_the_same_complaint_filed_twice_is_told_the_first_ticket_until_it_is_resolved(
    settings, fake: FakeDiscord
):
    # A double submit (sent again while the first was filing, or once its slow answer came)
    # opened two tickets for one complaint, on the desk and in Jira.
    async with running_bot(settings, fake) as h:
        words = "Bought 500 gems, the wallet never showed them."
        said = await filed_twice_at_once(fake, words)
        (key,) = {text.split("`")[1] for text in said}
        assert sorted(t.startswith("Filed ticket") for t in said) == [False, True]
        assert SLASH_ALREADY_FILED.format(ticket_key=key) in said
        again = await ask(
            fake,
            blaze,
            "grievance",
            sub("file", category="wallet", description="  bought 500 GEMS, the wallet never  showed them."),
        )
        assert again == SLASH_ALREADY_FILED.format(ticket_key=key)
        other = await ask(fake, nova, "grievance", sub("file", category="wallet", description=words))
        assert other.startswith("Filed ticket") and key not in other  # another player's own
        store = h.bot.core.grievances.local_store
        assert [g.description for g in await store.status(BLAZE)].count(words) == 1
        assert await store.set_status_by_staff(key, "resolved", by="staff")
        reopened = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words))
        assert reopened.startswith("Filed ticket") and key not in reopened  # it came back: a new one
        assert [g.description for g in await store.status(BLAZE)].count(words) == 2


async def test_a_repeat_after_a_restart_is_told_the_first_ticket(settings, fake: FakeDiscord):
    # The memory of what was filed lately was the process's own: a restart (or the new bot of a
    # deploy, on the same storage folder) filed the repeat as a ticket of its own.
    words = "Bought 500 gems, the wallet never showed them."
    async with running_bot(settings, fake):
        filed = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words))
    key = filed.split("`")[1]
    async with running_bot(settings, fake) as h:
        again = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words))
        assert again == SLASH_ALREADY_FILED.format(ticket_key=key)
        store = h.bot.core.grievances.local_store
        assert [g.description for g in await store.status(BLAZE)].count(words) == 1


async def test_a_repeat_cut_short_while_its_first_ticket_is_looked_up_is_kept(
    settings, fake: FakeDiscord, monkeypatch
):
    # Its first ticket resolved, the complaint had come back; a stop whose grace ran out during
    # the lookup of that ticket told the player it was kept and will be filed, and kept nothing.
    from bot.tools.grievance_store import LocalGrievanceStore

    words = "Bought 500 gems, the wallet never showed them."
    async with running_bot(settings, fake) as h:
        filed = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words))
        store = h.bot.core.grievances.local_store
        assert await store.set_status_by_staff(filed.split("`")[1], "resolved", by="staff")
    looking = asyncio.Event()

    async def slow_lookup(*_: object, **__: object) -> list[object]:
        looking.set()
        await asyncio.Event().wait()  # a lookup that outlasts the stop's grace
        return []

    async with running_bot(settings, fake, shutdown_grace_seconds=0.5) as h:
        monkeypatch.setattr(h.bot.core.grievances.local_store, "status", slow_lookup)
        interaction = await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
        await asyncio.wait_for(looking.wait(), 30)
        h.stop.set()
        said = private_text(await fake.interaction_answer(interaction))
    assert said == CUT_SHORT_BY_RESTART
    store = await LocalGrievanceStore.open(settings.storage_dir / "grievances.db")  # the next start
    try:
        assert [g.description for g in await store.status(BLAZE)].count(words) == 2
    finally:
        await store.aclose()


async def test_two_repeats_at_once_after_the_first_ticket_was_resolved_file_one(settings, fake: FakeDiscord):
    # Each repeat looked the resolved ticket up, each found it finished, and each filed.
    async with running_bot(settings, fake) as h:
        words = "Bought 500 gems, the wallet never showed them."
        filed = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words))
        key = filed.split("`")[1]
        store = h.bot.core.grievances.local_store
        assert await store.set_status_by_staff(key, "resolved", by="staff")
        said = await filed_twice_at_once(fake, words)
        (new,) = {text.split("`")[1] for text in said}
        assert new != key and sorted(t.startswith("Filed ticket") for t in said) == [False, True]
        assert [g.description for g in await store.status(BLAZE)].count(words) == 2


async def test_the_same_complaint_sent_twice_while_the_database_refuses_it_is_kept_once(
    settings, fake: FakeDiscord
):
    # A double submit while grievances.db refused writes kept both in the spool: two tickets
    # for one complaint once the database took them again.
    from bot.app import storage_paths
    from bot.sentences import KEPT_FOR_LATER

    with sqlite3.connect(storage_paths(settings).grievances) as conn:
        conn.execute("ALTER TABLE grievances RENAME TO grievances_away")  # filing fails
    async with running_bot(settings, fake) as h:
        words = "Bought 500 gems, the wallet never showed them."
        said = await filed_twice_at_once(fake, words)
        again = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words))
        assert said == [KEPT_FOR_LATER, KEPT_FOR_LATER] and again == KEPT_FOR_LATER
        assert await h.bot.core.grievances.local_store.count_unfiled() == 1


async def test_sync_clear_removes_the_guild_copy_of_the_commands(settings, fake: FakeDiscord):
    s = discord_settings(settings, fake)
    await sync_commands(s, TOKEN, GUILD_ID)  # tried out in one guild
    await sync_commands(s, TOKEN, None)  # then published everywhere: that guild shows each twice
    assert await sync_commands(s, TOKEN, GUILD_ID, clear=True) == []
    assert fake.commands[str(GUILD_ID)] == []
    assert len(fake.commands["global"]) == 5
    assert fake.violations == []


async def test_sync_refused_for_a_guild_says_why_in_one_line(settings, monkeypatch):
    original = FakeDiscord._sync

    async def missing_access(self: FakeDiscord, request: web.Request) -> web.Response:
        if request.match_info.get("guild_id"):  # the bot is not in it with applications.commands
            raise DiscordError(403, 50001, "Missing Access")
        return await original(self, request)

    monkeypatch.setattr(FakeDiscord, "_sync", missing_access)
    async with serving() as fake:
        env = {
            **os.environ,
            **fake.settings_env(),
            "DISCORD_TOKEN": TOKEN,
            "VOXDESK_STORAGE_DIR": str(settings.storage_dir),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "sync",
            "--guild",
            "123456789012345678",
            env=env,
            cwd=REPO,
            stdout=PIPE,
            stderr=PIPE,
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 5  # not a documented status of anything else
    (line,) = err.decode().strip().splitlines()
    assert "Missing Access (50001)" in line and "applications.commands" in line


async def test_sync_rate_limited_for_long_says_so_in_one_line(settings, monkeypatch):
    """Discord holds an application to 200 command creations a day in a guild: a sync past that
    (a deploy script re-running it, `--clear` and back) is answered with a 429 of hours, which
    the bot's client does not wait out (rate_limit_seconds)."""

    async def limited(self: FakeDiscord, request: web.Request) -> web.Response:
        self.retry_after = 7200.0
        return self._rate_limited("commands", global_=False)

    monkeypatch.setattr(FakeDiscord, "_sync", limited)
    async with serving() as fake:
        env = {
            **os.environ,
            **fake.settings_env(),
            "DISCORD_TOKEN": TOKEN,
            "VOXDESK_STORAGE_DIR": str(settings.storage_dir),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "sync", "--guild", str(GUILD_ID), env=env, cwd=REPO, stderr=PIPE
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 5
    said = err.decode()
    assert "Traceback" not in said  # discord.py's own warning of the 429, then why sync stopped
    (line,) = [line for line in said.splitlines() if "ERROR" in line]
    assert "rate limited for 7200 s" in line and f"guild {GUILD_ID}" in line


async def test_a_filing_whose_answer_discord_rate_limits_for_long_reaches_the_player_by_dm(
    settings, fake: FakeDiscord, caplog
):
    """The edit that tells a filed ticket's key meets a 429 of an hour: not waited out (the bot's
    rate_limit_seconds, as for its other requests), the key goes by DM."""
    fake.edits_rate_limited = 1
    fake.retry_after = 3600.0
    words = "Paid for the battle pass, never got it."
    async with running_bot(settings.replace(news={"poll_seconds": 0.1}), fake):
        with caplog.at_level("WARNING"):
            interaction = await fake.slash(
                blaze, "grievance", sub("file", category="wallet", description=words)
            )
            dms = await fake.wait_for(lambda _: dms_to(fake, blaze))
    (key,) = re.findall(r"ticket (GRV-\d+)", dms[0].content)
    assert dms[0].content.endswith(f'("{words}") is now filed as ticket {key}. Its status is open.')
    assert [(r.kind, r.error) for r in fake.interaction_records(interaction)] == [
        ("callback", None),
        ("edit_original", 429),
    ]
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.grievance"]
    assert len(said) == 1 and "rate limited for 3600 s" in said[0]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def _until(condition: Callable[[], object], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_deferred_answer_discord_rate_limits_past_the_cap_is_sent_when_the_limit_ends(
    settings, fake: FakeDiscord, caplog
):
    """The edit that puts a deferred answer in place meets a 429 longer than the bot waits out,
    ending well within the token's 15 minutes: the player gets the answer once the limit ends,
    not "thinking…" until Discord gives up. (The cap, 30 s at least in discord.py, is lowered so
    that the limit here is a second.)"""
    async with running_bot(settings, fake, defer_after_seconds=0.0) as h:
        h.bot.http.max_ratelimit_timeout = 0.5
        fake.edits_rate_limited, fake.retry_after = 1, 1.0
        with caplog.at_level("WARNING"):
            interaction = await fake.slash(nova, "grievance", sub("list"))
            answer = await fake.wait_for(
                lambda _: [
                    r
                    for r in fake.interaction_records(interaction)
                    if r.kind == "edit_original" and not r.error
                ]
            )
    assert "GRV-10" in private_text(answer[0])
    records = fake.interaction_records(interaction)
    assert [(r.kind, r.error) for r in records] == [
        ("callback", None),
        ("edit_original", 429),
        ("edit_original", None),
    ]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [
        f"/grievance list of user {nova.id}: answer rate limited for 1 s; sent when the limit ends"
    ]


async def test_follow_ups_discord_rate_limits_past_the_cap_are_sent_when_the_limit_ends(
    settings, fake: FakeDiscord, caplog
):
    """A long list's first part is out and its follow-up meets a 429 longer than the bot waits
    out, ending well within the token's life: the rest of the list goes once the limit ends,
    as a deferred answer's whole would, rather than never. (The cap lowered to make it a second.)"""
    async with running_bot(settings, fake, flood_notes=20) as h:
        for i in range(14):  # a list longer than one message: its tail goes in follow-ups
            description = f"Problem number {i}: " + "the store charged me twice, items never came. " * 3
            assert await ask(
                fake, blaze, "grievance", sub("file", category="wallet", description=description)
            )
        h.bot.http.max_ratelimit_timeout = 0.5
        fake.followups_rate_limited, fake.retry_after = 1, 1.0
        with caplog.at_level("WARNING"):
            interaction = await fake.slash(blaze, "grievance", sub("list"))
            await fake.wait_for(
                lambda _: [
                    r for r in fake.interaction_records(interaction) if r.kind == "followup" and not r.error
                ]
            )
    records = [(r.kind, r.error) for r in fake.interaction_records(interaction)]
    assert records[:3] == [("callback", None), ("followup", 429), ("followup", None)], records
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [
        f"/grievance list of user {blaze.id}: answer rate limited for 1 s; sent when the limit ends"
    ]


async def test_an_answer_sent_later_stops_at_its_tokens_end_under_waited_out_limits(
    settings, fake: FakeDiscord, caplog, monkeypatch
):
    """A deferred answer put aside for a limit past the cap meets, when it is sent, 429s short
    enough for discord.py to wait out, one after another: it must not go on past the token's
    end, where Discord refuses it. Scaled down: a token of 2.5 s, given up at 2 s, a cap of 0.5 s."""
    from cogs import interactions
    from tests.fakes import discord_server

    for module in (interactions, discord_server):
        monkeypatch.setattr(module, "TOKEN_SECONDS", 2.5)
    monkeypatch.setattr(interactions, "GIVE_UP_SECONDS", 2.0)
    async with running_bot(settings, fake, defer_after_seconds=0.0) as h:
        h.bot.http.max_ratelimit_timeout = 0.5
        fake.edits_rate_limited, fake.retry_after = 1, 1.0
        with caplog.at_level("WARNING"):
            interaction = await fake.slash(nova, "grievance", sub("list"))
            await fake.wait_for(
                lambda _: [r for r in fake.interaction_records(interaction) if r.error == 429]
            )
            # While the answer waits out that second: each try then is limited for less than the cap.
            fake.edits_rate_limited, fake.retry_after = 4, 0.45
            await _until(lambda: "answer not sent after its rate limit" in caplog.text)
    edits = [r.error for r in fake.interaction_records(interaction) if r.kind == "edit_original"]
    assert None not in edits and 50027 not in edits, edits
    said = [r.getMessage() for r in caplog.records if "not sent after" in r.getMessage()]
    assert said == [
        f"/grievance list of user {nova.id}: answer not sent after its rate limit:"
        " its token ran out with 1 of 1 piece(s) unsent"
    ]


async def test_an_answer_put_aside_once_the_bot_closes_is_dropped_not_sent(settings, fake: FakeDiscord):
    """An answer whose edit met its rate limit while the bot was closing (a command the stop did
    not wait for: the gateway gave up) is put aside after close() cancelled what waited: it must
    be dropped, not sent minutes later through a closed client."""
    async with running_bot(settings, fake) as h:
        bot = h.bot
    ran = asyncio.Event()

    async def answer_later() -> None:
        ran.set()

    assert bot.later(answer_later()) is None
    await asyncio.sleep(0.05)
    assert not ran.is_set()


async def test_a_deferred_answer_waiting_out_a_rate_limit_does_not_hold_a_stop(
    settings, fake: FakeDiscord, caplog
):
    """Ten minutes of a rate limit on the edit: the command ends at once, and a stop meanwhile
    closes the bot rather than wait for the edit."""
    with caplog.at_level("INFO"):
        async with running_bot(settings, fake, defer_after_seconds=0.0, shutdown_grace_seconds=600) as h:
            h.bot.http.max_ratelimit_timeout = 0.5
            fake.edits_rate_limited, fake.retry_after = 1, 600.0
            interaction = await fake.slash(nova, "grievance", sub("list"))
            await fake.wait_for(
                lambda _: [r for r in fake.interaction_records(interaction) if r.error == 429]
            )
            await _until(lambda: h.bot.inflight == 0)
        # running_bot's exit waited for the stop, which did not wait for the edit's ten minutes
    assert [(r.kind, r.error) for r in fake.interaction_records(interaction)] == [
        ("callback", None),
        ("edit_original", 429),
    ]
    assert "stopping: 1 slash command answer(s) waiting out a rate limit are not sent" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.parametrize("limited", ["callbacks", "followups"])
async def test_a_command_whose_answer_discord_rate_limits_for_long_ends_with_one_warning(
    settings, fake: FakeDiscord, caplog, limited: str
):
    """A first response, or a follow-up, met by a 429 of an hour: the command ends at once with a
    warning; nothing more is asked of the limited route (the apology would meet the same limit)."""
    async with running_bot(settings, fake, flood_notes=20) as h:
        if limited == "followups":
            for i in range(14):  # a list longer than one message: its tail goes in follow-ups
                description = f"Problem number {i}: " + "the store charged me twice, items never came. " * 3
                assert await ask(
                    fake, blaze, "grievance", sub("file", category="wallet", description=description)
                )
        setattr(fake, f"{limited}_rate_limited", 1)
        fake.retry_after = 3600.0
        with caplog.at_level("WARNING"):
            interaction = await fake.slash(blaze, "grievance", sub("list"))
            await fake.wait_for(
                lambda _: [r for r in fake.interaction_records(interaction) if r.error == 429]
            )
            await _until(lambda: h.bot.inflight == 0)
            again = await fake.slash(blaze, "grievance", sub("list"))  # answered as usual
            assert private_text(await fake.interaction_answer(again)).startswith("**Your")
    records = fake.interaction_records(interaction)
    assert [r.error for r in records].count(429) == 1
    assert [r.kind for r in records if r.error is None] == ([] if limited == "callbacks" else ["callback"])
    said = [r.getMessage() for r in caplog.records if "rate limited for 3600 s" in r.getMessage()]
    assert len(said) == 1, said
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_first_response_limited_past_discords_3_s_is_not_waited_out(
    settings, fake: FakeDiscord, caplog
):
    """A 429 on the first response asking for 1.5 s, under the cap, with 1 s left of Discord's
    3 s: waited out, the retry would only be refused as "Unknown interaction" (10062)."""
    fake.first_response_within = 3.0
    fake.expect_refusals()  # a retry past the 3 s, should the bot make one
    async with running_bot(settings, fake) as h:
        fake.callbacks_rate_limited, fake.retry_after = 1, 1.5
        with caplog.at_level("WARNING"):
            interaction = await fake.slash(nova, "grievance", sub("list"), ago=2.0)
            await fake.wait_for(lambda _: fake.interaction_records(interaction))
            await _until(lambda: h.bot.inflight == 0)
    assert [r.error for r in fake.interaction_records(interaction)] == [429]
    assert [r for r in caplog.records if "not answered, rate limited for 2 s" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_first_response_not_noted_as_arrived_has_no_more_than_3_s_by_a_clock_behind(monkeypatch):
    # A response the command tree took no note of: by a host clock a minute behind Discord's, the
    # time in its id is a minute ahead, which must count no time gone, not a minute more to wait.
    from cogs.interactions import FIRST_RESPONSE_SECONDS, first_response_left

    made = discord.utils.time_snowflake(discord.utils.utcnow())
    behind = discord.utils.utcnow
    monkeypatch.setattr(discord.utils, "utcnow", lambda: behind() - dt.timedelta(minutes=1))
    assert 0 < first_response_left(made) <= FIRST_RESPONSE_SECONDS


async def test_a_host_clock_behind_discords_waits_out_no_first_response_past_its_3_s(
    settings, fake: FakeDiscord, caplog, monkeypatch
):
    """By a host clock a minute behind Discord's every interaction is brand new: a deferral sent
    1 s after a late event reached the bot, met by a 429 of 2.5 s, was waited out and retried 4 s
    after Discord made the interaction, only to be refused as "Unknown interaction". The seconds
    since the event reached the bot count whatever the host's clock says."""
    fake.first_response_within = 3.0
    fake.expect_refusals()  # a retry past the 3 s, should the bot make one
    engine = GatedEngine()
    behind = discord.utils.utcnow
    async with running_bot(settings, fake, engine=engine, defer_after_seconds=1.0) as h:
        try:
            note = await fake.send_note(nova, voice_note())
            await engine.waiting.wait()  # Nova's own turn: her /forget waits for it, then defers
            monkeypatch.setattr(discord.utils, "utcnow", lambda: behind() - dt.timedelta(minutes=1))
            fake.callbacks_rate_limited, fake.retry_after = 1, 2.5
            with caplog.at_level("WARNING", logger="cogs.interactions"):
                interaction = await fake.slash(nova, "forget", [], guild=False, ago=0.5)
                await _until(lambda: [r for r in caplog.records if interaction in r.getMessage()])
        finally:
            engine.gate.set()
        await fake.wait_for(lambda _: len(fake.replies_to(note["id"])) >= 2)
        await _until(lambda: h.bot.inflight == 0)
    assert [(r.kind, r.error) for r in fake.interaction_records(interaction)] == [("callback", 429)]
    (said,) = [r.getMessage() for r in caplog.records if interaction in r.getMessage()]
    assert said.endswith("not answered, rate limited for 2 s"), said


async def test_a_first_response_refused_as_late_says_how_long_the_bot_held_it_whatever_its_clock(
    monkeypatch, caplog
):
    """By a host clock behind Discord's, "Discord no longer takes interaction ... (10062)" said
    it was 0.0 s after Discord made it, however long the bot had held the interaction."""
    from types import SimpleNamespace

    from cogs import interactions

    behind = discord.utils.utcnow
    made = discord.utils.time_snowflake(behind())
    monkeypatch.setattr(discord.utils, "utcnow", lambda: behind() - dt.timedelta(minutes=1))
    interaction = SimpleNamespace(
        id=made, command=None, user=SimpleNamespace(id=1), created_at=discord.utils.snowflake_time(made)
    )
    refused = discord.HTTPException(
        SimpleNamespace(status=404, reason="Not Found"), {"code": 10062, "message": "Unknown interaction"}
    )

    async def response() -> None:
        raise refused

    held = interactions.ARRIVED.set((made, time.monotonic() - 4.0))  # it reached the bot 4 s ago
    try:
        with caplog.at_level("WARNING", logger="cogs.interactions"):
            assert not await interactions._first_response(interaction, response())  # type: ignore[arg-type]
    finally:
        interactions.ARRIVED.reset(held)
    (said,) = [r.getMessage() for r in caplog.records if r.name == "cogs.interactions"]
    seconds = re.search(r"\(10062\), ([0-9.]+) s after it made it", said)
    assert seconds is not None and float(seconds[1]) >= 4.0, said


async def test_suggestions_discord_rate_limits_for_long_are_one_warning_not_a_traceback(
    harness: Harness, caplog
):
    fake = harness.fake
    fake.callbacks_rate_limited, fake.retry_after = 1, 3600.0
    with caplog.at_level("WARNING"):
        interaction = await fake.slash(
            nova, "voice", [option("voice", "ba", focused=True)], autocomplete=True
        )
        await fake.wait_for(lambda _: fake.interaction_records(interaction))
        await _until(lambda: [r for r in caplog.records if "autocomplete" in r.getMessage()])
    (said,) = [r for r in caplog.records if "autocomplete" in r.getMessage()]
    assert said.levelname == "WARNING" and "rate limited for 3600 s" in said.getMessage()
    assert said.exc_info is None


async def test_suggestions_refused_as_late_in_a_row_are_one_warning_until_one_is_taken(
    settings, fake: FakeDiscord, caplog
):
    # Under load every keystroke's suggestions come late: a warning each filled the log.
    fake.first_response_within = 3.0
    fake.expect_refusals()
    typing = [option("voice", "ba", focused=True)]

    def said() -> list[tuple[str, bool]]:
        return [
            (r.levelname, "10062" in r.getMessage())
            for r in caplog.records
            if "autocomplete" in r.getMessage()
        ]

    async with running_bot(settings, fake):
        with caplog.at_level("INFO", logger="cogs.interactions"):
            for n, ago in enumerate((3.5, 3.5, 3.5, 0.0, 3.5), start=1):
                await fake.slash(nova, "voice", typing, autocomplete=True, ago=ago)
                await _until(lambda n=n: len(said()) == n)  # type: ignore[misc]
    assert said() == [("WARNING", True), ("INFO", True), ("INFO", True), ("INFO", False), ("WARNING", True)]


async def test_an_answer_rate_limited_for_less_than_the_cap_is_waited_out(harness: Harness):
    """discord.py's own wait, as before: the cap reads the 429's body, and leaves it readable."""
    fake = harness.fake
    fake.callbacks_rate_limited = 1  # for retry_after: 0.05 s
    interaction = await fake.slash(nova, "grievance", sub("status"))
    answer = await fake.wait_for(
        lambda _: [r for r in fake.interaction_records(interaction) if r.error is None]
    )
    assert "GRV-10" in private_text(answer[0])
    assert [r.error for r in fake.interaction_records(interaction)] == [429, None]


async def test_suggestions_discord_no_longer_takes_are_one_warning_not_a_traceback(
    settings, fake: FakeDiscord, caplog
):
    """Suggestions sent after Discord's 3 s for them (the event reached the bot late) are refused
    as "Unknown interaction": the player typed on, nothing failed here."""
    fake.first_response_within = 3.0
    fake.expect_refusals()
    async with running_bot(settings, fake):
        with caplog.at_level("WARNING"):
            typing = [option("voice", "ba", focused=True)]
            interaction = await fake.slash(nova, "voice", typing, autocomplete=True, ago=3.5)
            await fake.wait_for(lambda _: fake.interaction_records(interaction))
            await _until(lambda: [r for r in caplog.records if "autocomplete" in r.getMessage()])
    assert [r.error for r in fake.interaction_records(interaction)] == [10062]
    (said,) = [r for r in caplog.records if "autocomplete" in r.getMessage()]
    assert said.levelname == "WARNING" and "10062" in said.getMessage()
    assert said.exc_info is None


async def test_a_repeat_sent_while_a_long_filing_runs_is_told_its_ticket_not_filed_again(
    settings, fake: FakeDiscord, monkeypatch
):
    # The claims database refuses, so this process's memory alone tells a repeat. The first
    # filing runs past the repeat window (a busy database): a window run from the filing's start
    # would take the repeat for a new complaint and file a second ticket.
    words = "Bought 500 gems, the wallet never showed them."
    async with running_bot(settings, fake) as h:
        monkeypatch.setattr(sys.modules["cogs.grievance"], "RESUBMIT_SECONDS", 1.0)
        store = h.bot.core.grievances.local_store

        async def refused(*_: object, **__: object) -> NoReturn:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(store, "claim_words", refused)
        toolbox, filing, release = h.bot.core.toolbox, asyncio.Event(), asyncio.Event()
        run = toolbox.run

        async def slow_first(context: object, call: ToolCall) -> object:
            if call.name == "register_grievance" and not filing.is_set():
                filing.set()
                await asyncio.wait_for(release.wait(), 30)
            return await run(context, call)

        monkeypatch.setattr(toolbox, "run", slow_first)
        first = await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
        await asyncio.wait_for(filing.wait(), 30)
        await asyncio.sleep(1.1)  # the first filing runs past the window
        repeat = await fake.slash(blaze, "grievance", sub("file", category="wallet", description=words))
        await fake.wait_for(lambda _: fake.interaction_records(repeat) or None)  # deferred, at work
        release.set()
        said = [private_text(await fake.interaction_answer(i)) for i in (first, repeat)]
        assert [g.description for g in await store.status(BLAZE)].count(words) == 1
    key = said[0].split("`")[1]
    assert said[1] == SLASH_ALREADY_FILED.format(ticket_key=key)


async def test_typing_in_a_command_from_before_an_upgrade_gets_no_suggestions_and_no_log_line(
    harness: Harness, caplog
):
    """Discord still offers a removed command, or an option that had suggestions once: each
    keystroke in it asks for suggestions. An autocomplete takes only suggestions, and a line a
    keystroke would fill the log; sending the command tells the player and the log once."""
    fake = harness.fake
    typed = [
        ("tickets", [option("ticket", "GRV", focused=True)]),  # a command this version lacks
        ("grievance", [{"name": "status", "type": 1, "options": [option("ticket", "GRV", focused=True)]}]),
        ("voice", [option("name", "ba", focused=True)]),  # an option renamed since
    ]
    with caplog.at_level("WARNING"):
        answers = []
        for name, options in typed:
            interaction = await fake.slash(nova, name, options, autocomplete=True)
            answers.append(await fake.interaction_answer(interaction))
    assert [(a.body["type"], a.body["data"]["choices"]) for a in answers] == [(8, [])] * 3
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_an_option_this_version_does_not_have_is_told_as_an_upgrade(harness: Harness, caplog):
    """An option renamed or removed since: discord.py drops what it does not declare, and the
    command ran without it (all of a player's tickets for the one they named)."""
    renamed = [{"name": "status", "type": 1, "options": [option("key", "GRV-12")]}]
    with caplog.at_level("WARNING"):
        told = await ask(harness.fake, nova, "grievance", renamed)
    assert told == COMMAND_OUTDATED
    (line,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "voxdesk sync" in line.getMessage() and not line.exc_info


async def test_a_filing_arriving_while_a_stop_tells_the_others_is_kept_and_told_too(
    settings, fake: FakeDiscord
):
    """A stop whose grace ran out cuts the commands in flight short and waits while each tells its
    player, the gateway still open: a command arriving then came after the stop's last look. It
    ran on past the client's end, its player told nothing."""
    from bot.tools.grievance_store import LocalGrievanceStore

    db = settings.storage_dir / "grievances.db"
    holder, held, release = writes_held(db)

    first, late = "Bought 500 gems before the stop, none came.", "Bought 900 gems as the bot stopped."
    fake.edits_held = asyncio.Event()
    try:
        async with running_bot(settings, fake, shutdown_grace_seconds=0.5) as h:
            holder.start()
            await asyncio.to_thread(held.wait, 10)
            cut = await fake.slash(blaze, "grievance", sub("file", category="wallet", description=first))
            await fake.wait_for(lambda _: fake.interaction_records(cut) or None, 10)  # deferred
            h.stop.set()
            await fake.wait_for(lambda _: fake.edits_waiting >= 1, 10)  # the grace ran out: told
            arriving = await fake.slash(nova, "grievance", sub("file", category="wallet", description=late))
            await fake.wait_for(lambda _: fake.interaction_records(arriving) or None, 10)  # deferred
            fake.edits_held.set()
            # Told while the database is still held: only being cut short tells it.
            told = [private_text(await fake.interaction_answer(i, within=10)) for i in (cut, arriving)]
            release.set()
    finally:
        fake.edits_held.set()
        release.set()
    holder.join()
    assert told == [CUT_SHORT_BY_RESTART] * 2
    store = await LocalGrievanceStore.open(db)  # as the next start opens it: the spool is filed
    try:
        assert [g.description for g in await store.status(str(nova.id))].count(late) == 1
    finally:
        await store.aclose()
