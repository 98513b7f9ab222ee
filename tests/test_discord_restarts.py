"""No note goes unanswered across a shutdown, a restart, a crash and two processes at once: the
real discord.py client against the fake Discord, which keeps channel history while the bot is
down and serves it paginated as Discord does."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import itertools
import logging
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import discord
import pytest

from bot.config import Settings
from bot.note_ledger import MAX_CRASHES, NoteLedger
from bot.sentences import (
    COMMAND_CUT_SHORT,
    DMS_CLOSED_NOTICE,
    MAYBE_UNANSWERED_SEND_AGAIN,
    NOTE_CRASHED,
    NOTES_CUT_SHORT,
    ONE_AT_A_TIME,
    RESTARTING,
    RESTARTING_SEND_AGAIN,
    STOPPING_MAYBE_UNANSWERED,
    TOO_FAST,
    TOO_MANY_UNSEEN,
)
from tests.conftest import NOVA
from tests.discord_harness import (
    Harness,
    blaze,
    bot_process,
    caught_up,
    claim_lands_just_after_a_read_looked,
    logged_in,
    nova,
    quill,
    running_bot,
    send_two_notes,
    settle,
    voice_note,
    while_it_runs,
)
from tests.fakes import discord_server
from tests.fakes.discord_server import (
    ALLOWED_CHANNEL,
    BOT_USER_ID,
    OTHER_CHANNEL,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    VOICE_FLAG,
    FakeDiscord,
    InjectedUser,
    Received,
    dm_channel_id,
    message_payload,
    serving,
    user_payload,
)
from tests.frontend_engine import FrontendEngine
from tests.test_discord_news import eventually

T = TypeVar("T")

LATER = "\N{HOURGLASS WITH FLOWING SAND}"
# Of the line to a player whose notes read back are more than the flood limit answers.
TOLD_TOO_MANY = TOO_MANY_UNSEEN.split(";")[0]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serving() as fake:
        yield fake


def answers(fake: FakeDiscord, note: dict) -> int:
    """Voice messages the bot posted for `note` (one per complete answer)."""
    return sum(1 for r in fake.replies_to(note["id"]) if r.is_voice_message)


def kept_for_later(record: Received, note: dict) -> bool:
    return record.kind == "reaction_add" and record.body == {"message_id": note["id"], "emoji": LATER}


async def all_answered(fake: FakeDiscord, notes: list[dict], within: float = 30.0) -> None:
    await fake.wait_for(lambda _: all(answers(fake, n) >= 1 for n in notes), within)


async def rechecks(bot: Any, count: int = 3) -> None:
    """Until `count` more rechecks have run whole: what none of them did, none will. (A sleep
    counts none on a busy machine, and the test would pass without a look.)"""
    await caught_up(bot)
    recheck = bot.get_cog("CatchUp").recheck
    start = recheck.current_loop  # counts the rechecks ended, the one under way not yet
    await eventually(lambda: recheck.current_loop > start + count)


async def kept_by_another_process(settings: Settings, note: dict, channel_id: int, user_id: str) -> None:
    """`note` kept for this bot by another process on its storage (one stopping, or a one-shot)."""
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        await ledger.keep_for_restart(int(note["id"]), channel_id, user_id)
    finally:
        await ledger.aclose()


async def test_settle_waits_out_a_turn_that_sends_nothing_for_a_while(settings, fake) -> None:
    """`settle` is what the tests below trust to say nothing more will come: a turn quiet for
    longer than any quiet moment a wait might take for the end (its model thinking, a busy
    machine) is still waited for, and so is a note the gateway has not yet handed over."""
    async with running_bot(settings, fake, engine=FrontendEngine(delay=0.6)):
        note = await fake.send_note(nova, voice_note())
        await settle(fake)
        assert answers(fake, note) == 1


async def test_settle_as_often_as_a_test_likes_costs_the_bot_nothing(settings, fake) -> None:
    """Each of settle's looks asked the bot for a heartbeat, which discord.py sends within its 110
    gateway sends a minute and awaits in its gateway reader: past that, the bot read no event for
    up to a minute. A look now asks only when the bot has events it has not said it read."""
    async with running_bot(settings, fake):
        for _ in range(120):
            await settle(fake)
        note = await fake.send_note(nova, voice_note())
        await settle(fake)
        assert answers(fake, note) == 1


async def test_settle_gives_up_in_its_time_on_a_bot_that_keeps_sending(
    settings, fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bot that sends something between every two looks never settles: `settle` says so once
    its `within` is spent, rather than looking again until pytest's own timeout kills the test."""
    async with running_bot(settings, fake) as h:
        await settle(fake)
        read = fake.read_by_the_bot

        async def typing_then_read(within: float = 30.0) -> None:
            await h.bot.http.send_typing(ALLOWED_CHANNEL)
            await read(within)

        monkeypatch.setattr(fake, "read_by_the_bot", typing_then_read)
        # The outer bound only keeps a failure of this test short.
        with pytest.raises(AssertionError, match="has not settled after 1 s"):
            await asyncio.wait_for(settle(fake, within=1.0), 30)


async def test_notes_sent_while_the_bot_was_down_are_answered_once_oldest_first(settings, fake) -> None:
    async with running_bot(settings, fake) as h:
        first = await fake.send_note(nova, voice_note())  # a DM: the bot now knows this place
        await all_answered(fake, [first])
    # Down for a deploy: a DM and a channel note, from two players.
    missed = [
        await fake.send_note(nova, voice_note()),
        await fake.send_note(blaze, voice_note(), guild=True),
        await fake.send_note(nova, voice_note()),
    ]
    assert not any(fake.replies_to(n["id"]) for n in missed)
    async with running_bot(settings, fake) as h:
        await all_answered(fake, missed)
        await settle(fake)
    assert [answers(fake, n) for n in [first, *missed]] == [1, 1, 1, 1]
    # Nova's two missed notes in the order she sent them (her conversation grew by one each).
    nova_turns = [t for t in h.engine.turns if t.context.user_id == NOVA]
    assert [len(t.history) for t in nova_turns] == [1, 2]
    order = {id(r): i for i, r in enumerate(fake.received)}
    first_replies = [order[id(fake.replies_to(n["id"])[0])] for n in (missed[0], missed[2])]
    assert first_replies == sorted(first_replies)


async def test_a_message_of_two_notes_sent_while_the_bot_was_down_says_only_the_first_is_answered(
    settings, fake
) -> None:
    # As live: the player hears that the second note will not be, rather than never hear of it.
    note = (await fake.send_note(nova, voice_note(), guild=True, dispatch=False))["attachments"][0]
    two = await send_two_notes(fake, nova, note, dispatch=False)
    async with running_bot(settings, fake):
        await all_answered(fake, [two])
        await settle(fake)
    replies = fake.replies_to(two["id"])
    assert [r.content for r in replies].count(ONE_AT_A_TIME) == 1
    assert sum(r.is_voice_message for r in replies) == 1


async def test_a_note_sent_while_the_gateway_was_away_is_answered_by_the_new_session(
    settings, fake, monkeypatch
) -> None:
    # Five minutes of outage in a moment: the bot's clock reads five minutes back when the
    # gateway goes quiet, and the note missed meanwhile is four minutes old when the bot is
    # back, older than the two minutes of margin catch-up would read before its new session.
    outage, missed_ago = datetime.timedelta(minutes=5), 240.0
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note())  # a DM: the bot now knows this place
        await all_answered(fake, [first])
        channel = int(first["channel_id"])
        identified, reads = len(fake.identify_payloads), len(fake.sent("history", channel))
        fake.gateway_outage()
        with monkeypatch.context() as clock:
            now = discord.utils.utcnow
            clock.setattr(discord.utils, "utcnow", lambda: now() - outage)
            await fake.lose_the_session()
            await fake.wait_for(lambda _: fake.hanging_connections)  # the bot knows it is cut off
        missed = await fake.send_note(nova, voice_note(), ago=missed_ago)  # goes nowhere: kept only
        fake.end_gateway_outage()
        await fake.wait_for(lambda _: len(fake.identify_payloads) > identified and fake.bot_connected, 60)
        read = await fake.wait_for(lambda _: fake.sent("history", channel)[reads:])
        assert int(read[0].body["after"]) < int(missed["id"]), "catch-up began after the missed note"
        await all_answered(fake, [missed])
        after = await fake.send_note(nova, voice_note())
        await all_answered(fake, [after])
        await settle(fake)
        assert [answers(fake, n) for n in (first, missed, after)] == [1, 1, 1]


async def test_a_note_sent_while_the_connection_was_down_is_answered_once_after_the_resume(
    settings, fake
) -> None:
    # Discord kept the session and replays what it missed: no catch-up read is needed or made.
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note())
        await all_answered(fake, [first])
        channel = int(first["channel_id"])
        reads = len(fake.sent("history", channel))
        fake.gateway_outage()
        await fake.drop_connection()
        await fake.wait_for(lambda _: fake.hanging_connections)  # the bot knows it is cut off
        missed = await fake.send_note(nova, voice_note())
        fake.end_gateway_outage()
        await asyncio.wait_for(fake.resumed.wait(), 60)
        await all_answered(fake, [missed])
        await settle(fake)
        assert [answers(fake, n) for n in (first, missed)] == [1, 1]
        assert len(fake.identify_payloads) == 1 and len(fake.sent("history", channel)) == reads


async def test_a_flood_sent_while_the_bot_was_down_is_held_to_the_flood_limit(settings, fake) -> None:
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):
        first = await fake.send_note(nova, voice_note())
        await all_answered(fake, [first])
    flood = [await fake.send_note(nova, voice_note()) for _ in range(6)]
    other = await fake.send_note(blaze, voice_note(), guild=True)
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):
        await all_answered(fake, [*flood[:2], other])
        await settle(fake)
    assert [answers(fake, n) for n in flood] == [1, 1, 0, 0, 0, 0]
    told = [r.content for n in flood[2:] for r in fake.replies_to(n["id"])]
    assert told == [TOO_MANY_UNSEEN.format(count=2)]
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):  # settled, not retried
        await settle(fake)
    assert [answers(fake, n) for n in flood] == [1, 1, 0, 0, 0, 0]


async def test_notes_a_catch_up_answered_count_toward_the_live_flood_limit(settings, fake) -> None:
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):
        first = await fake.send_note(nova, voice_note())
        await all_answered(fake, [first])
    sent_while_down = [await fake.send_note(nova, voice_note()) for _ in range(2)]
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):
        await all_answered(fake, sent_while_down)
        live = await fake.send_note(nova, voice_note())
        told = await fake.wait_for(lambda _: fake.replies_to(live["id"]))
        await settle(fake)
    assert answers(fake, live) == 0
    assert "faster than I can answer" in told[0].content


async def test_notes_kept_for_after_a_restart_are_answered_whatever_the_flood_limit(
    settings, fake, caplog
) -> None:
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0):
        first = await fake.send_note(nova, voice_note())
        await all_answered(fake, [first])
    kept = [await fake.send_note(nova, voice_note()) for _ in range(4)]
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:  # as a draining bot keeps them, with a ⏳ promising an answer after the restart
        for note in kept:
            await ledger.keep_for_restart(int(note["id"]), int(note["channel_id"]), NOVA)
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0, recheck_seconds=0.2) as h:
        await all_answered(fake, kept)
        await rechecks(h.bot)
        await settle(fake)
    assert [answers(fake, n) for n in kept] == [1, 1, 1, 1]
    assert not [r for n in kept for r in fake.replies_to(n["id"]) if TOLD_TOO_MANY in r.content]
    # Answered by the catch-up itself: one it turned away is still kept, and only the recheck's
    # fetch by id would answer it, later and counted as a flood refused.
    assert not [r.getMessage() for r in caplog.records if r.getMessage().startswith("flood:")]


async def test_a_restart_answers_nothing_twice(settings, fake) -> None:
    async with running_bot(settings, fake):
        note = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [note])
    async with running_bot(settings, fake):
        await settle(fake)
    async with running_bot(settings, fake):
        await settle(fake)
    assert answers(fake, note) == 1


async def test_notes_older_than_the_window_get_nothing_and_are_counted(settings, fake, caplog) -> None:
    # Dated, not waited for: a start slower than the window would make `fresh` old too.
    async with running_bot(settings, fake):
        seen = await fake.send_note(nova, voice_note(), guild=True, ago=180)
        await all_answered(fake, [seen])
    stale = [await fake.send_note(nova, voice_note(), guild=True, ago=120) for _ in range(3)]
    fresh = await fake.send_note(nova, voice_note(), guild=True)
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    async with running_bot(settings, fake, catch_up_minutes=1):
        await all_answered(fake, [fresh])
        await settle(fake)
    assert [answers(fake, n) for n in stale] == [0, 0, 0]
    assert "3 note(s) older than" in caplog.text


async def test_a_busy_channel_quiet_since_before_the_window_is_read_from_the_windows_edge(
    settings, fake
) -> None:
    # More chat since the last note answered than is worth counting (COUNT_AT_MOST), all of it
    # older than the window: the count stops, and the window itself is still read.
    from cogs.catch_up import COUNT_AT_MOST

    async with running_bot(settings, fake):
        seen = await fake.send_note(nova, voice_note(), guild=True, ago=180)
        await all_answered(fake, [seen])
    for _ in range(COUNT_AT_MOST + 1):
        await fake.send_message(blaze, channel_id=ALLOWED_CHANNEL, guild=True, content="gg", ago=120)
    fresh = await fake.send_note(nova, voice_note(), guild=True)
    async with running_bot(settings, fake, catch_up_minutes=1):
        await all_answered(fake, [fresh])
        await settle(fake)
    assert answers(fake, seen) == answers(fake, fresh) == 1


async def test_a_quiet_dm_costs_one_request_at_a_start(settings, fake) -> None:
    # Every DM the ledger knows is read at each start (Discord cannot list a bot's DMs): with a
    # channel fetch and a separate count, that would be three requests per player who spoke.
    async with running_bot(settings, fake):
        spoke = [await fake.send_note(player, voice_note(), ago=120) for player in (nova, blaze, quill)]
        await all_answered(fake, spoke)
    dms = {int(n["channel_id"]) for n in spoke}
    late = await fake.send_note(nova, voice_note())  # sent while the bot was down
    before = len(fake.received)
    async with running_bot(settings, fake, catch_up_minutes=1):  # all but `late` are old
        await all_answered(fake, [late])
        await settle(fake)
    asked = [
        r for r in fake.received[before:] if r.channel_id in dms and r.kind in ("history", "get_channel")
    ]
    assert sorted((r.kind, r.channel_id) for r in asked) == sorted(("history", c) for c in dms)
    assert answers(fake, late) == 1 and [answers(fake, n) for n in spoke] == [1, 1, 1]


async def test_a_note_in_the_dm_heard_from_last_is_answered_before_every_dm_is_read(settings, fake) -> None:
    # Discord cannot list a bot's DMs, so a start reads each one the ledger knows, one request
    # each: thousands, for a studio. The player heard from most recently is the likeliest to have
    # sent a note while the bot was down, and must not wait for the players silent for months.
    from cogs.catch_up import READS_AT_ONCE

    day = 24 * 3600.0
    players = [InjectedUser(990_000_000_000_000_000 + i, f"player{i}") for i in range(12)]
    dms = [fake.known_dm(p) for p in players]
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:  # players[0] heard from 12 days ago, ..., players[-1] yesterday; Nova long ago
        for age, (player, dm) in enumerate(zip(reversed(players), reversed(dms), strict=True), start=1):
            await ledger.remember_place(dm, "dm", str(player.id), now=time.time() - age * day)
        await ledger.remember_place(fake.known_dm(nova), "dm", NOVA, now=time.time() - 300 * day)
    finally:
        await ledger.aclose()
    # Sent while the bot was down: by the player heard from last, and by Nova in her DM, then in
    # the channel (her DM, read with the channel, keeps her notes in the order she sent them).
    late = await fake.send_note(players[-1], voice_note())
    nova_dm_note = await fake.send_note(nova, voice_note())
    nova_channel_note = await fake.send_note(nova, voice_note(), guild=True)
    # The DM heard from longest ago is read last: its read is kept under way until the note
    # above is answered, or given up on.
    held = asyncio.Event()
    fake.history_held[dms[0]] = held

    async def release() -> None:
        # Given up on only so that a bot whose note waits for every read fails, not hangs: the
        # note is answered in tenths of a second, and a busy machine must not release the read first.
        with contextlib.suppress(TimeoutError):
            await all_answered(fake, [late], within=20)
        held.set()

    before = len(fake.received)
    async with running_bot(settings, fake) as h:
        releasing = asyncio.create_task(release())
        await caught_up(h.bot)
        await releasing
        await all_answered(fake, [late, nova_dm_note, nova_channel_note])
        await settle(fake)
    received = fake.received[before:]
    answered_at = next(i for i, r in enumerate(received) if r in fake.replies_to(late["id"]))
    (last_read,) = [i for i, r in enumerate(received) if r.kind == "history" and r.channel_id == dms[0]]
    assert answered_at < last_read, "the note waited for every DM to be read"
    # Its DM read among the first, not after those of the players silent for longer.
    assert dms[-1] in [c for c in fake.history_begun if c in dms][:READS_AT_ONCE]
    # One request per place: the channel and each DM, none looked up.
    reads = [(r.kind, r.channel_id) for r in received if r.kind in ("history", "get_channel")]
    places = [ALLOWED_CHANNEL, fake.known_dm(nova), *dms]
    assert sorted(reads) == sorted(("history", c) for c in places)
    order = {id(r): i for i, r in enumerate(received)}
    replied_at = [order[id(fake.replies_to(n["id"])[0])] for n in (nova_dm_note, nova_channel_note)]
    assert replied_at == sorted(replied_at)
    assert [answers(fake, n) for n in (late, nova_dm_note, nova_channel_note)] == [1, 1, 1]


async def known_dms(settings: Settings, fake: FakeDiscord, count: int, first_id: int) -> list[int]:
    """`count` DMs the note ledger knows, each heard from a day before the one before it."""
    players = [InjectedUser(first_id + i, f"player{i}") for i in range(count)]
    dms = [fake.known_dm(p) for p in players]
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        for age, (player, dm) in enumerate(zip(players, dms, strict=True), start=1):
            await ledger.remember_place(dm, "dm", str(player.id), now=time.time() - age * 24 * 3600.0)
    finally:
        await ledger.aclose()
    return dms


async def test_a_catch_up_reads_a_few_dms_at_once_and_no_more(settings, fake) -> None:
    # One request a DM: one after another, each waits out the round trip of the one before (10,000
    # DMs, minutes); all at once, they would take Discord's global rate limit from the answers.
    from cogs.catch_up import READS_AT_ONCE

    dms = await known_dms(settings, fake, READS_AT_ONCE + 3, 991_000_000_000_000_000)
    held = asyncio.Event()
    for dm in dms:
        fake.history_held[dm] = held
    # Answered once the channels are read, as the DM reads begin: by its answer, a read too many
    # would have begun (a reply takes round trips a read's request does not).
    missed = await fake.send_note(nova, voice_note(), guild=True)
    async with running_bot(settings, fake, catch_up_reads_per_second=1000.0) as h:
        await eventually(lambda: answers(fake, missed) == 1 and fake.history_waiting >= READS_AT_ONCE)
        assert fake.history_waiting == READS_AT_ONCE
        held.set()
        await caught_up(h.bot)
    assert sorted(r.channel_id for r in fake.sent("history") if r.channel_id in dms) == sorted(dms)


async def test_a_dm_holding_a_note_kept_for_the_restart_is_read_among_the_first(settings, fake) -> None:
    # Its player was promised an answer (a ⏳) and has waited since the stop: their DM is not read
    # after those of every player heard from more lately.
    from cogs.catch_up import READS_AT_ONCE

    first_id = 993_000_000_000_000_000
    dms = await known_dms(settings, fake, READS_AT_ONCE + 3, first_id)
    kept_in = dms[-1]  # heard from longest ago
    kept = await fake.send_note(InjectedUser(first_id + len(dms) - 1, "player"), voice_note())
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        await ledger.keep_for_restart(int(kept["id"]), kept_in, str(first_id + len(dms) - 1))
    finally:
        await ledger.aclose()
    held = asyncio.Event()
    for dm in dms:
        fake.history_held[dm] = held
    async with running_bot(settings, fake, catch_up_reads_per_second=1000.0) as h:
        await eventually(lambda: fake.history_waiting >= READS_AT_ONCE)
        begun = [c for c in fake.history_begun if c in dms]
        held.set()
        await caught_up(h.bot)
    assert kept_in in begun, begun
    assert answers(fake, kept) == 1


async def test_catch_up_reads_begin_no_faster_than_the_setting_allows(settings, fake) -> None:
    # One read every 100 s: the channel's is the first, and no DM's begins while the bot runs.
    dms = await known_dms(settings, fake, 3, 992_000_000_000_000_000)
    held = asyncio.Event()  # never set: a DM read is counted as it arrives
    for dm in dms:
        fake.history_held[dm] = held
    missed = await fake.send_note(nova, voice_note(), guild=True)  # answered as the DM reads begin
    async with running_bot(settings, fake, catch_up_reads_per_second=0.01, shutdown_grace_seconds=0.1):
        await eventually(lambda: answers(fake, missed) == 1)
        assert fake.history_waiting == 0
    assert fake.sent("history", ALLOWED_CHANNEL)
    assert not [r for r in fake.received if r.kind == "history" and r.channel_id in dms]


async def test_a_channel_the_bot_may_not_read_is_named_in_a_warning_not_passed_over(
    settings, fake, caplog
) -> None:
    missed = await fake.send_note(nova, voice_note(), guild=True)  # sent while the bot was down
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY  # its history reads as an empty list
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    async with running_bot(settings, fake):
        for _ in range(200):  # the catch-up's last line: nothing the fake sees follows it
            if "catch-up: answering" in caplog.text:
                break
            await asyncio.sleep(0.05)
    assert answers(fake, missed) == 0
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(ALLOWED_CHANNEL) in warning.getMessage() and "Read Message History" in warning.getMessage()


async def test_a_channel_discord_failed_to_read_at_the_catch_up_is_read_again(settings, fake, caplog) -> None:
    # Discord's trouble (Cloudflare's ban, a 5xx past discord.py's retries) is not a refusal: the
    # notes sent there while the bot was down are still to answer, at the next recheck.
    missed = await fake.send_note(nova, voice_note(), guild=True)
    fake.history_banned = 1
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await all_answered(fake, [missed])
        await settle(fake)
    assert answers(fake, missed) == 1
    assert "catch-up could not read channel" in caplog.text


async def test_a_note_answered_live_in_a_channel_not_yet_read_again_hides_no_missed_note(
    settings, fake
) -> None:
    # While the channel's history stays unreadable, a note sent there live is answered and becomes
    # the channel's newest note handled; the catch-up read again must still start before the note
    # sent while the bot was down, not after the live one.
    missed = await fake.send_note(nova, voice_note(), guild=True)
    fake.history_banned = 10**6
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await fake.wait_for(lambda rs: sum(r.kind == "history" and r.error == 429 for r in rs) >= 2)
        live = await fake.send_note(blaze, voice_note(), guild=True)
        await all_answered(fake, [live])
        fake.history_banned = 0
        await all_answered(fake, [missed], within=15)
        await settle(fake)
    assert answers(fake, missed) == 1 and answers(fake, live) == 1


async def test_a_note_a_failed_read_left_is_answered_after_a_restart_past_a_live_answer(
    settings, fake
) -> None:
    # The start's read of the channel fails, a note sent there live is answered and becomes its
    # newest note handled, and the bot restarts before a recheck read the channel: the next start
    # must still read from before the note sent while the bot was first down.
    missed = await fake.send_note(nova, voice_note(), guild=True)
    fake.history_banned = 10**6
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        await caught_up(h.bot)
        live = await fake.send_note(blaze, voice_note(), guild=True)
        await all_answered(fake, [live])
        await settle(fake)
    fake.history_banned = 0
    async with running_bot(settings, fake):
        await all_answered(fake, [missed], within=15)
        await settle(fake)
    assert answers(fake, missed) == 1 and answers(fake, live) == 1


async def test_a_note_a_stopped_catch_up_had_not_read_yet_is_answered_after_the_next_restart(
    settings, fake
) -> None:
    # The bot stops while its start's read of a DM is still under way, after answering a note
    # sent there live: the next start must still read from before the note sent while it was
    # first down, not from the live one.
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note())  # a DM: the bot now knows this place
        await all_answered(fake, [first])
    dm = int(first["channel_id"])
    missed = await fake.send_note(nova, voice_note())
    held = asyncio.Event()
    fake.history_held[dm] = held
    # The held read is cut at the stop: a grace would only be waited out whole.
    async with running_bot(settings, fake, shutdown_grace_seconds=0.2):
        await eventually(lambda: fake.history_waiting >= 1)
        live = await fake.send_note(nova, voice_note())
        await all_answered(fake, [live])
    del fake.history_held[dm]
    held.set()
    async with running_bot(settings, fake) as h:
        await all_answered(fake, [missed], within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert [answers(fake, n) for n in (first, missed, live)] == [1, 1, 1]
    # Every place read to the end: the next start reads each from its newest note answered again.
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        assert await ledger.owed_reads() == {}
    finally:
        await ledger.aclose()


async def test_a_note_in_a_dm_a_catch_up_stopped_while_listing_threads_is_answered_after_a_restart(
    settings, fake
) -> None:
    # The bot stops while its start's catch-up still lists the channel's archived threads, before
    # it read any place, after answering a note sent in a DM live: the next start must still read
    # that DM from before the note sent while the bot was first down.
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note())  # a DM: the bot now knows this place
        await all_answered(fake, [first])
    missed = await fake.send_note(nova, voice_note())
    fake.archived_threads_held = held = asyncio.Event()
    # The held listing is cut at the stop: a grace would only be waited out whole.
    async with running_bot(settings, fake, shutdown_grace_seconds=0.2):
        await eventually(lambda: fake.archived_threads_waiting >= 1)
        live = await fake.send_note(nova, voice_note())
        await all_answered(fake, [live])
    fake.archived_threads_held = None
    held.set()
    async with running_bot(settings, fake) as h:
        await all_answered(fake, [missed], within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert [answers(fake, n) for n in (first, missed, live)] == [1, 1, 1]


async def test_a_place_read_from_when_it_was_owed_answers_nothing_its_last_process_handled(
    settings, fake
) -> None:
    # A place carried over from the last process is read from when it was owed, answering every
    # note there the ledger does not know: the notes that process answered, or turned away for
    # flooding, are known, and get nothing more.
    missed = await fake.send_note(quill, voice_note(), guild=True)
    fake.history_banned = 10**6
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0, recheck_seconds=3600.0) as h:
        await caught_up(h.bot)
        answered = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [answered])
        flooding = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda _: fake.replies_to(flooding["id"]))
        assert await note_state(h.bot.core.notes, flooding) == "refused"
        await settle(fake)
    fake.history_banned = 0
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        assert ALLOWED_CHANNEL in await ledger.owed_reads()
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0) as h:
        await all_answered(fake, [missed], within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert [answers(fake, n) for n in (missed, answered, flooding)] == [1, 1, 0]
    assert len(fake.replies_to(flooding["id"])) == 1  # told once, by the process that heard it


async def test_a_start_ups_read_ending_after_an_outage_owed_its_place_leaves_it_owed_for_a_restart(
    settings, fake, monkeypatch
) -> None:
    # The start's read of the channel has its page, and a note sent just after is lost with the
    # gateway's session. The page comes in only once the new session's catch-up has owed the
    # channel again on disk: that read saw none of the gap, so it must not pay what is owed for
    # it. The bot stops before the outage's read of the channel, after answering a note there
    # live: the next start must read the channel from before the note the gateway lost.
    reads = discord.abc.Messageable.history
    ending, ended = asyncio.Event(), asyncio.Event()

    async def late(
        self: discord.abc.Messageable, *args: Any, **kwargs: Any
    ) -> AsyncIterator[discord.Message]:
        async for message in reads(self, *args, **kwargs):
            yield message
        if getattr(self, "id", None) == ALLOWED_CHANNEL and not ended.is_set():
            ending.set()
            await ended.wait()

    monkeypatch.setattr(discord.abc.Messageable, "history", late)
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        await asyncio.wait_for(ending.wait(), 30)  # the start's page of the channel is made
        missed = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        fake.history_held[ALLOWED_CHANNEL] = held = asyncio.Event()
        # What on_ready does on a fresh session after the gateway was away a minute.
        outage = asyncio.create_task(
            h.bot.get_cog("CatchUp").catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        )
        await eventually(lambda: fake.history_waiting >= 1)  # the place is owed on disk again
        ended.set()
        await caught_up(h.bot)
        live = await fake.send_note(blaze, voice_note(), guild=True)
        await all_answered(fake, [live])
        assert await note_state(h.bot.core.notes, live) == "answered"  # the newest note handled
        outage.cancel()  # the stop comes before the outage's read of the channel
        await asyncio.gather(outage, return_exceptions=True)
        await settle(fake)
    del fake.history_held[ALLOWED_CHANNEL]
    held.set()
    assert answers(fake, missed) == 0
    async with running_bot(settings, fake) as h:
        await all_answered(fake, [missed], within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert answers(fake, missed) == answers(fake, live) == 1


async def test_notes_sent_while_down_are_answered_when_the_places_owed_cannot_be_kept(
    settings, fake, monkeypatch, caplog
) -> None:
    # A full disk refuses the catch-up's bookkeeping for a restart: the notes it reads are
    # answered all the same, now, not at a recheck once the disk takes writes again.
    async def full(*_: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(NoteLedger, "owe_reads", full)
    monkeypatch.setattr(NoteLedger, "read_through", full)
    missed = await fake.send_note(nova, voice_note(), guild=True)
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        await all_answered(fake, [missed], within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert answers(fake, missed) == 1
    assert caplog.text.count("could not keep the places the catch-up is to read") == 1


async def test_a_channel_discord_keeps_failing_is_said_once_not_at_every_recheck(
    settings, fake, caplog
) -> None:
    # Met again at every recheck until Discord serves the channel: one line for the channel, one
    # for the catch-up owed, and one when it is read, however many rechecks in between.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    missed = await fake.send_note(nova, voice_note(), guild=True)
    fake.history_banned = 10**6
    async with running_bot(settings, fake, recheck_seconds=0.1):
        await fake.wait_for(lambda rs: sum(r.kind == "history" and r.error == 429 for r in rs) >= 5)
        fake.history_banned = 0
        await all_answered(fake, [missed])
        await settle(fake)
    said = [
        r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING
    ]
    assert len(said) == 2, said  # the channel, and the catch-up owed again
    assert "catch-up: Discord serves every place again" in caplog.text


async def test_a_channel_read_again_at_each_recheck_adds_no_line_each_time(settings, fake, caplog) -> None:
    # One channel fails (503) through many rechecks, each a catch-up of that channel alone that
    # answers nothing: the log says the start-up's catch-up, the trouble, and the note answered
    # once Discord serves the channel, not a line per recheck.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note())  # a DM: the bot now knows this place
        await all_answered(fake, [first])
    missed = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL)
    fake.history_unavailable_in.add(OTHER_CHANNEL)
    caplog.clear()
    async with running_bot(settings, fake, channels=[ALLOWED_CHANNEL, OTHER_CHANNEL], recheck_seconds=0.1):
        await fake.wait_for(lambda rs: sum(r.kind == "history" and r.error == 503 for r in rs) >= 8)
        fake.history_unavailable_in.clear()
        await all_answered(fake, [missed])
        await settle(fake)
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.INFO]
    assert [m for m in said if m.startswith("catch-up: answering")] == [
        "catch-up: answering 0 note(s) sent while I was away, from 3 place(s)",
        "catch-up: answering 1 note(s) sent while I was away, from 1 place(s)",
    ], said


async def test_two_troubles_met_in_turn_at_each_recheck_are_each_said_once(settings, fake, caplog) -> None:
    # Each recheck meets two of Discord's troubles in turn: listing the archived threads is
    # banned (429) and one channel's history fails (503). Each reason is said once, not again each
    # time the other one came between.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    both = [ALLOWED_CHANNEL, OTHER_CHANNEL]
    fake.history_unavailable_in.add(OTHER_CHANNEL)
    fake.archived_threads_banned = 10**6
    async with running_bot(settings, fake, channels=both, recheck_seconds=0.1):
        await fake.wait_for(lambda rs: sum(r.kind == "history" and r.error == 503 for r in rs) >= 6)
        fake.history_unavailable_in.clear()
        fake.archived_threads_banned = 0
        await settle(fake)
    said = [
        r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING
    ]
    troubles = [m for m in said if m.startswith("catch-up could not")]
    assert len(troubles) == 2, troubles
    assert troubles[0].endswith(": 429 error code: 1015") and troubles[1].endswith(
        ": 503 503: Service Unavailable"
    )


async def test_a_cloudflare_ban_over_every_place_is_said_once_and_its_end_once(
    settings, fake, caplog
) -> None:
    # Cloudflare's ban fails every request of the bot's: the catch-up's reads of both channels and
    # the DM, and its listings of their archived threads (public and private, with Manage
    # Threads), through the start-up's pass and three rechecks. One line for the ban, one for the
    # catch-up owed, one when it is read; not one per place.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note())  # a DM: the bot now knows this place
        await all_answered(fake, [first])
    missed = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL)
    passes = 4  # each reads three places and lists twice in each of two channels
    fake.history_banned, fake.archived_threads_banned = 3 * passes, 4 * passes
    caplog.clear()
    async with running_bot(settings, fake, channels=[ALLOWED_CHANNEL, OTHER_CHANNEL], recheck_seconds=0.1):
        await all_answered(fake, [missed])
        await settle(fake)
    assert fake.history_banned == fake.archived_threads_banned == 0 and answers(fake, missed) == 1
    said = [r for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.INFO]
    warned = [r.getMessage() for r in said if r.levelno >= logging.WARNING]
    assert len(warned) == 2, warned
    assert warned[0].endswith(": 429 error code: 1015")
    assert warned[1].startswith("catch-up: 3 place(s) not read")
    ended = [r for r in said if r.getMessage() == "catch-up: Discord serves every place again"]
    assert len(ended) == 1


async def test_a_channel_rate_limited_for_an_hour_at_the_catch_up_is_no_traceback(
    settings, fake, caplog
) -> None:
    # discord.py raises RateLimited (no HTTPException) past rate_limit_seconds: Discord's trouble,
    # said in one line, and the channel read again at the next recheck.
    missed = await fake.send_note(nova, voice_note(), guild=True)
    fake.history_rate_limited, fake.retry_after = 1, 3600.0
    async with running_bot(settings, fake, recheck_seconds=0.1):
        await all_answered(fake, [missed])
        await settle(fake)
    assert answers(fake, missed) == 1
    said = [r for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in said if r.exc_info or r.levelno >= logging.ERROR] == []
    assert "rate limited for 3600 s" in said[0].getMessage()


def _kept_pending(settings, notes: list[dict], authors) -> None:
    """Each of `notes` (by its author in `authors`) left pending in the ledger as a stopped process
    leaves it, in one transaction with no await between, so a recheck finds all or none."""
    now = time.time()
    with contextlib.closing(sqlite3.connect(settings.storage_dir / "notes.db")) as ledger, ledger:
        ledger.executemany(
            "INSERT INTO notes (message_id, place_id, user_id, state, updated_at)"
            " VALUES (?, ?, ?, 'pending', ?)",
            [(int(n["id"]), ALLOWED_CHANNEL, str(w.id), now) for n, w in zip(notes, authors, strict=True)],
        )


async def test_a_kept_note_whose_fetch_is_rate_limited_waits_for_the_next_recheck_alone(
    settings, fake, caplog
) -> None:
    # Fetching the first of two notes another process kept is held for an hour (RateLimited, past
    # rate_limit_seconds): one line for it, the second still answered in the same round, and the
    # first at a later recheck.
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)  # only the recheck finds the notes
        kept = [await fake.send_note(who, voice_note(), guild=True, dispatch=False) for who in (nova, blaze)]
        fake.message_rate_limited, fake.retry_after = 1, 3600.0
        _kept_pending(settings, kept, (nova, blaze))
        await all_answered(fake, kept)
        await settle(fake)
    assert [answers(fake, n) for n in kept] == [1, 1]
    fetched = [(r.path.rsplit("/", 1)[-1], r.error) for r in fake.received if r.kind == "get_message"]
    first, second = (n["id"] for n in kept)
    assert fetched == [(first, 429), (second, None), (first, None)]
    said = [r for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in said] == [f"could not fetch note {first}: rate limited for 3600 s"]
    assert not [r for r in said if r.exc_info]


async def test_kept_notes_whose_fetches_cloudflare_bans_are_one_warning_and_answered_later(
    settings, fake, caplog
) -> None:
    # Cloudflare bans the bot's address while three kept notes wait: the recheck's fetch of each
    # is refused (429, an HTML page). One line says so for the round, not one per note, and a
    # later recheck answers all three.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    who = (nova, blaze, quill)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)  # only the recheck finds the notes
        kept = [await fake.send_note(w, voice_note(), guild=True, dispatch=False) for w in who]
        fake.message_banned = len(kept)
        _kept_pending(settings, kept, who)
        await all_answered(fake, kept)
        await settle(fake)
    assert [answers(fake, n) for n in kept] == [1, 1, 1]
    banned = [r for r in fake.received if r.kind == "get_message" and r.error == 429]
    assert len(banned) == 3
    said = [r for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING]
    first = kept[0]["id"]
    assert [r.getMessage() for r in said] == [
        f"could not fetch note {first}: 429 error code: 1015; nor 2 more note(s) left unanswered,"
        " tried again at the next recheck"
    ]


async def test_kept_notes_are_not_fetched_one_by_one_into_cloudflares_ban(settings, fake, caplog) -> None:
    # Cloudflare's ban lasts (an hour, on Discord): a recheck meets it at its first fetch and tries
    # no further kept note, each another refused request of those that keep the ban. Six refused
    # fetches take six rechecks, not two; once the ban lifts, every note is answered once.
    who = (nova, blaze, quill)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)  # only the recheck finds the notes
        recheck = h.bot.get_cog("CatchUp").recheck  # type: ignore[union-attr]
        kept = [await fake.send_note(w, voice_note(), guild=True, dispatch=False) for w in who]
        fake.message_banned = 10**6
        _kept_pending(settings, kept, who)
        began = recheck.current_loop
        await fake.wait_for(
            lambda got: len([r for r in got if r.kind == "get_message" and r.error == 429]) >= 6
        )
        rounds = recheck.current_loop - began
        fake.message_banned = 0
        await all_answered(fake, kept)
        await settle(fake)
    assert rounds >= 5, rounds
    assert [answers(fake, n) for n in kept] == [1, 1, 1]
    said = [r for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in said] == [
        f"could not fetch note {kept[0]['id']}: 429 error code: 1015; nor 2 more note(s) left unanswered,"
        " tried again at the next recheck"
    ]


async def test_kept_notes_are_not_fetched_one_by_one_into_cloudflares_firewall(settings, fake) -> None:
    # Cloudflare's firewall (its 403 page) refuses the bot's address as its ban does: a recheck
    # meets it at its first fetch and tries no further kept note. Four refused fetches take four
    # rechecks; once it lets the bot through, every note is answered once.
    who = (nova, blaze, quill)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)  # only the recheck finds the notes
        recheck = h.bot.get_cog("CatchUp").recheck  # type: ignore[union-attr]
        kept = [await fake.send_note(w, voice_note(), guild=True, dispatch=False) for w in who]
        fake.message_blocked = 10**6
        _kept_pending(settings, kept, who)
        began = recheck.current_loop
        await fake.wait_for(
            lambda got: len([r for r in got if r.kind == "get_message" and r.error == 403]) >= 4
        )
        rounds = recheck.current_loop - began
        fake.message_blocked = 0
        await all_answered(fake, kept)
        await settle(fake)
    assert rounds >= 3, rounds
    assert [answers(fake, n) for n in kept] == [1, 1, 1]


async def test_a_kept_note_whose_fetch_cloudflare_blocks_with_a_403_page_is_answered_later(
    settings, fake, caplog
) -> None:
    # Cloudflare's firewall answers the recheck's fetch of a kept note with its 403 page (HTML, no
    # Discord error code): Discord's edge, not a refusal of the bot. The note waits for the next
    # recheck, which answers it, rather than being given up.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)  # only the recheck finds the note
        note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        fake.message_blocked = 1
        await kept_by_another_process(settings, note, ALLOWED_CHANNEL, str(nova.id))
        await all_answered(fake, [note], within=15)
        await settle(fake)
    assert answers(fake, note) == 1
    fetched = [r.error for r in fake.received if r.kind == "get_message"]
    assert fetched == [403, None]
    said = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and note["id"] in r.getMessage()
    ]
    assert said == [f"could not fetch note {note['id']}: 403 an HTML page from Discord's edge (Cloudflare)"]


async def test_a_kept_notes_trouble_is_said_when_its_round_ends_on_a_dropped_connection(
    settings, fake, caplog
) -> None:
    # The first kept note's fetch is rate limited for an hour, then the connection drops on the
    # next note's channel lookup and the round ends there. The limit was still met: said once, not
    # held for a summary that never comes (the note is then "said" and every later failure DEBUG).
    # (Cloudflare's ban ends the round itself: see the test above.)
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    who = (nova, blaze)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        catch_up = h.bot.get_cog("CatchUp")
        looked_up = catch_up._channel
        calls = 0

        async def dropped_on_the_second(place_id: int) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise aiohttp.ClientConnectionError("Connection reset by peer")
            return await looked_up(place_id)

        catch_up._channel = dropped_on_the_second
        kept = [await fake.send_note(w, voice_note(), guild=True, dispatch=False) for w in who]
        fake.message_rate_limited, fake.retry_after = 1, 3600.0
        _kept_pending(settings, kept, who)
        await all_answered(fake, kept)
        await settle(fake)
    said = [
        r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING
    ]
    assert f"could not fetch note {kept[0]['id']}: rate limited for 3600 s" in said, said


async def test_a_kept_note_whose_channel_discord_fails_to_look_up_waits_for_the_next_recheck(
    settings, fake, caplog
) -> None:
    # A DM note another process kept; this process has no DM channel cached, and Discord fails its
    # look-up (503) at the recheck: the note is not given up, and a later recheck answers it.
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await settle(fake)  # the start-up catch-up is done: only the recheck finds the note
        note = await fake.send_note(nova, voice_note(), dispatch=False)
        fake.channel_unavailable = 1
        await kept_by_another_process(settings, note, int(note["channel_id"]), str(nova.id))
        await all_answered(fake, [note], within=15)
        await settle(fake)
    assert answers(fake, note) == 1
    looked_up = [r.error for r in fake.received if r.kind == "get_channel"]
    assert looked_up[0] == 503
    said = [
        r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING
    ]
    assert said == [f"could not look up the channel of note {note['id']}: 503 503: Service Unavailable"]


async def test_a_catch_up_owed_for_one_broken_channel_reads_only_that_channel_again(settings, fake) -> None:
    # One channel's history fails (503) at every recheck: the channel read fine and the DM are not
    # read again each time, and the broken one is read, from where it should have been, once back.
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note())  # a DM: the bot now knows this place
        await all_answered(fake, [first])
    missed = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL)
    fake.history_unavailable_in.add(OTHER_CHANNEL)
    before = len(fake.received)
    async with running_bot(settings, fake, channels=[ALLOWED_CHANNEL, OTHER_CHANNEL], recheck_seconds=0.1):

        def failed(rs: list[Received]) -> int:
            return sum(r.kind == "history" and r.error == 503 for r in rs)

        await fake.wait_for(lambda rs: failed(rs) >= 5)
        fake.history_unavailable_in.clear()
        await all_answered(fake, [missed])
        await settle(fake)
    assert answers(fake, missed) == 1
    # Each place read at the start, then only the broken one until it is read.
    reads = [(r.channel_id, r.error) for r in fake.received[before:] if r.kind == "history"]
    dm = dm_channel_id(nova.id)
    assert reads[:3] == [(ALLOWED_CHANNEL, None), (OTHER_CHANNEL, 503), (dm, None)]
    assert set(reads[3:-1]) == {(OTHER_CHANNEL, 503)} and reads[-1] == (OTHER_CHANNEL, None)


async def test_a_note_missed_in_an_outage_is_answered_when_a_start_ups_catch_up_is_owed_too(
    settings, fake
) -> None:
    # The start-up's read of one channel fails (503), so a start-up catch-up is owed; then a new
    # gateway session's read of the other channel fails too, where a note was sent in the gap. A
    # live note there is answered before Discord is back: the owed read from the newest note
    # handled would start past the missed one, so the outage's place is read from the outage.
    fake.history_unavailable_in.add(OTHER_CHANNEL)
    async with running_bot(
        settings, fake, channels=[ALLOWED_CHANNEL, OTHER_CHANNEL], recheck_seconds=3600.0
    ) as h:
        await settle(fake)  # the start's catch-up failed for OTHER_CHANNEL, and its first recheck
        cog = h.bot.get_cog("CatchUp")
        missed = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        fake.history_unavailable_in.add(ALLOWED_CHANNEL)
        # What on_ready does on a fresh session after the gateway was away a minute.
        await cog.catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        live = await fake.send_note(blaze, voice_note(), guild=True)
        await all_answered(fake, [live])
        assert await note_state(h.bot.core.notes, live) == "answered"  # the newest note handled
        fake.history_unavailable_in.clear()
        await cog._recheck()
        await all_answered(fake, [missed], within=15)
        await settle(fake)
        assert cog._failed == []
    assert answers(fake, missed) == answers(fake, live) == 1


async def test_a_start_ups_and_an_outages_catch_up_owed_together_are_said_once(
    settings, fake, caplog
) -> None:
    # Both channels fail (503) at every recheck, one since the start and both since a new gateway
    # session: the two catch-ups owed are tried at each recheck, and what is still unread is said
    # once, not at each of them in turn; Discord serving again is said once too.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")

    def failed(rs: list[Received]) -> int:
        return sum(r.kind == "history" and r.error == 503 for r in rs)

    fake.history_unavailable_in.add(OTHER_CHANNEL)
    both = [ALLOWED_CHANNEL, OTHER_CHANNEL]
    async with running_bot(settings, fake, channels=both, recheck_seconds=0.1) as h:
        cog = h.bot.get_cog("CatchUp")
        await fake.wait_for(lambda rs: failed(rs) >= 2)  # the start's read and a recheck's
        fake.history_unavailable_in.add(ALLOWED_CHANNEL)
        # What on_ready does on a fresh session after the gateway was away a minute.
        await cog.catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        so_far = failed(fake.received)
        await fake.wait_for(lambda rs: failed(rs) >= so_far + 12)  # rechecks of both
        fake.history_unavailable_in.clear()
        await eventually(lambda: not cog._failed)
        await settle(fake)
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.INFO]
    warned = [m for m in said if "not read" in m or "could not" in m]
    assert warned == [
        f"catch-up could not read channel {OTHER_CHANNEL}: 503 503: Service Unavailable",
        f"catch-up: 1 place(s) not read: {OTHER_CHANNEL}; tried again every 0.1 s",
        f"catch-up: 2 place(s) not read: {ALLOWED_CHANNEL}, {OTHER_CHANNEL}; tried again every 0.1 s",
    ]
    assert said.count("catch-up: Discord serves every place again") == 1


async def test_discords_trouble_escaping_a_catch_up_is_one_warning_and_no_traceback(caplog) -> None:
    """A Cloudflare ban (429, an HTML page) or a rate limit past rate_limit_seconds that reaches
    the catch-up's own handler is Discord's trouble, as a 5xx is: said once, tried again."""
    from types import SimpleNamespace

    from cogs.catch_up import CatchUp, Owed

    bot = SimpleNamespace(discord_settings=SimpleNamespace(recheck_seconds=30.0), get_cog=lambda name: None)
    cog = CatchUp(bot)  # type: ignore[arg-type]
    cog.recheck = SimpleNamespace(is_running=lambda: True)  # type: ignore[assignment]
    banned = discord.HTTPException(
        SimpleNamespace(status=429, reason="Too Many Requests"), "error code: 1015"
    )
    failures: list[Exception] = [banned, banned, discord.RateLimited(3600.0), discord.RateLimited(3600.0)]

    async def reading(*owed: object) -> None:
        raise failures.pop(0)

    cog._catch_up = reading  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    while failures:
        await cog.catch_up()
        assert cog._failed == [Owed(None)]
    said = [r for r in caplog.records if r.name == "cogs.catch_up"]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG, logging.WARNING, logging.DEBUG]
    assert not [r for r in said if r.exc_info]


async def test_sigterm_keeps_the_notes_arriving_during_the_drain_for_after_the_restart(
    settings, fake
) -> None:
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the turn in flight lasts until the arriving note is kept
    async with running_bot(settings, fake, engine=engine) as h:
        in_flight = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()  # SIGTERM: serve() stops taking notes and finishes the one in flight
        while h.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
            await asyncio.sleep(0.01)
        arriving = await fake.send_note(blaze, voice_note())
        await fake.wait_for(
            lambda rs: any(
                r.kind == "reaction_add"
                and r.body["message_id"] == arriving["id"]
                and r.body["emoji"] == LATER
                for r in rs
            )
        )
        engine.hold.set()
        await asyncio.wait_for(h.task, 30)
    assert answers(fake, in_flight) == 1  # finished during the drain
    assert answers(fake, arriving) == 0
    assert fake.close_codes[-1] == 1000
    async with running_bot(settings, fake):
        await all_answered(fake, [arriving])
        await settle(fake)
    assert answers(fake, in_flight) == 1 and answers(fake, arriving) == 1


async def test_a_flood_sent_during_the_drain_is_kept_only_to_the_flood_limit(settings, fake) -> None:
    # Each note kept is promised an answer after the restart, whatever the limit then: kept
    # without one, a script sending through the stop's grace would have every note answered.
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the drain lasts until the flood is judged
    async with running_bot(settings, fake, engine=engine, flood_notes=2, flood_seconds=600.0) as h:
        in_flight = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        while h.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
            await asyncio.sleep(0.01)
        flood = [await fake.send_note(blaze, voice_note()) for _ in range(5)]
        await fake.wait_for(lambda rs: all(any(kept_for_later(r, n) for r in rs) for n in flood[:2]))
        told = await fake.wait_for(lambda _: [r for n in flood[2:] for r in fake.replies_to(n["id"])])
        engine.hold.set()
        await asyncio.wait_for(h.task, 30)
    assert len(told) == 1 and "faster than I can answer" in told[0].content
    assert not [n for n in flood[2:] if any(kept_for_later(r, n) for r in fake.received)]
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600.0, recheck_seconds=0.2) as h:
        await all_answered(fake, flood[:2])
        await rechecks(h.bot)
        await settle(fake)
    assert answers(fake, in_flight) == 1
    assert [answers(fake, n) for n in flood] == [1, 1, 0, 0, 0]


async def test_a_note_delivered_late_during_the_drain_is_told_the_wait_from_when_it_came(
    settings, fake
) -> None:
    # As a running bot tells it: timed from when Discord says it was sent, a note the gateway
    # delivers 200 s late would be told to wait 800 s, where the player may send again 600 s
    # after it came.
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the drain lasts until the late note is judged
    async with running_bot(settings, fake, engine=engine, flood_notes=2, flood_seconds=600.0) as h:
        await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        while h.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
            await asyncio.sleep(0.01)
        kept = [await fake.send_note(blaze, voice_note()) for _ in range(2)]
        await fake.wait_for(lambda rs: all(any(kept_for_later(r, n) for r in rs) for n in kept))
        late = await fake.send_note(blaze, voice_note(), ago=200)
        (told,) = await fake.wait_for(lambda _: fake.replies_to(late["id"]))
        engine.hold.set()
        await asyncio.wait_for(h.task, 30)
    assert told.content in (TOO_FAST.format(wait=w) for w in ("600 seconds", "601 seconds")), told.content


async def test_a_note_not_for_the_bot_arriving_during_the_drain_is_not_kept(settings, fake) -> None:
    # Chat in a channel the bot does not watch, not pinging it: neither a ⏳ now nor an answer
    # after the restart, as it would get none from a running bot.
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the turn in flight lasts until the arriving notes are judged
    async with running_bot(settings, fake, engine=engine) as h:
        in_flight = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        while h.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
            await asyncio.sleep(0.01)
        chat = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL, guild=True)
        kept = await fake.send_note(quill, voice_note(), guild=True)  # for the bot: kept
        await fake.wait_for(lambda rs: any(kept_for_later(r, kept) for r in rs))
        engine.hold.set()
        await asyncio.wait_for(h.task, 30)
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await all_answered(fake, [kept])
        await settle(fake)
    assert answers(fake, in_flight) == answers(fake, kept) == 1
    assert fake.replies_to(chat["id"]) == [] and not fake.sent("reaction_add", OTHER_CHANNEL)


async def cut_by_a_stop(
    settings: Settings, fake: FakeDiscord, *players: InjectedUser, guild: bool = True
) -> list[dict]:
    """A note of each of `players`' (in the channel, or with guild=False in their DMs) whose turns
    are all running when the bot stops, its grace too short for them: the notes."""
    async with running_bot(settings, fake, engine=FrontendEngine(delay=30), shutdown_grace_seconds=0.2) as h:
        notes = [await fake.send_note(player, voice_note(), guild=guild) for player in players]
        await fake.wait_for(lambda rs: len([r for r in rs if r.kind == "typing"]) >= len(notes))
        h.stop.set()
        await asyncio.wait_for(h.task, 20)
    return notes


def restarting_line(fake: FakeDiscord, note: dict) -> dict:
    """The message a stop told `note` "restarting" in, its only reply."""
    (line,) = fake.replies_to(note["id"])
    assert line.content == RESTARTING and line.response is not None
    return line.response


def deleted_in_channel(fake: FakeDiscord) -> list[str]:
    """The ids of the messages the bot deleted in the channel, in the order it deleted them."""
    return [r.body["message_id"] for r in fake.sent("message_delete", ALLOWED_CHANNEL)]


def told_gone(note: dict) -> str:
    """What the log says when `note` is found gone and its restarting line taken back."""
    return f"note {note['id']} is gone: the restarting line told it deleted too"


async def given_back_unanswered(
    bot: Any, caplog: pytest.LogCaptureFixture, player: InjectedUser, note: dict
) -> None:
    """Until the bot has said Discord failed the answer to `player`'s `note`: given back for the
    recheck."""
    said = f"note {note['id']} from {player.id} got no answer"
    await eventually(lambda: said in caplog.text)
    assert await note_state(bot.core.notes, note) == "pending"


@contextlib.asynccontextmanager
async def running_without_history(
    settings: Settings, fake: FakeDiscord, **discord: Any
) -> AsyncIterator[Harness]:
    """A bot running, settled, in a channel where it may not read history (no Read Message
    History): Discord refuses its fetch of any note there."""
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake, **discord) as h:
        await settle(fake)
        yield h


async def given_back_unfetchable(
    fake: FakeDiscord, caplog: pytest.LogCaptureFixture, *players: InjectedUser
) -> list[dict]:
    """A note of each of `players`' in the channel, in turn, each answer's posts failed by Discord
    until the bot says it: given back for the recheck. The notes."""
    notes = []
    for count, player in enumerate(players, 1):
        fake.posts_unavailable = 2  # the voice message, then its words as text
        notes.append(await fake.send_note(player, voice_note(), guild=True))
        await eventually(lambda n=count: caplog.text.count("got no answer because Discord failed") == n)
    return notes


async def with_no_answer_kept(h: Harness, notes: list[dict]) -> None:
    """`notes`, given back unfetchable, as if no answer were kept for them (one that met the
    bot's timeout in its guild): a stop has nothing to send them, and asks for them again."""
    voice = h.bot.get_cog("VoiceNotes")
    for note in notes:
        voice._unsent.pop(int(note["id"]), None)  # type: ignore[union-attr]
    with contextlib.closing(sqlite3.connect(h.settings.storage_dir / "notes.db")) as db, db:
        db.executemany("DELETE FROM answers WHERE message_id = ?", [(int(n["id"]),) for n in notes])


async def stored_states(settings: Settings) -> dict[str, str]:
    """Each note's state in the ledger on `settings`' storage, by its id, read at once (unlike
    note_state, which waits a 'started' one out): a note left claimed shows as 'started'."""
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        rows = await ledger._conn.execute_fetchall("SELECT message_id, state FROM notes")
    finally:
        await ledger.aclose()
    return {str(row["message_id"]): row["state"] for row in rows}


async def deleted_as_the_restart_answers_it(settings: Settings, fake: FakeDiscord, note: dict) -> None:
    """A restart answers `note`, told "restarting", and its player deletes it while that turn
    runs: settled unanswered."""
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine, recheck_seconds=3600.0) as h:
        await engine.until_asked(1)
        await fake.delete_message(ALLOWED_CHANNEL, note["id"])
        await fake.read_by_the_bot()
        engine.hold.set()
        assert await note_state(h.bot.core.notes, note) == "expired"
        await settle(fake)


async def test_a_turn_cut_by_the_grace_period_is_answered_after_the_restart(settings, fake) -> None:
    (note,) = await cut_by_a_stop(settings, fake, nova, guild=False)
    assert answers(fake, note) == 0
    assert "restarting" in fake.replies_to(note["id"])[0].content
    assert any(kept_for_later(r, note) for r in fake.received)  # ⏳: an answer comes later
    async with running_bot(settings, fake):
        await all_answered(fake, [note])
        await settle(fake)
    assert answers(fake, note) == 1
    # Answered: the ⏳ goes, or it would promise an answer the player already has. The note's
    # reactions, not every request: "typing…" goes out beside the turn and may come last.
    (*_, last) = [
        r for r in fake.received if r.kind.startswith("reaction") and r.body["message_id"] == note["id"]
    ]
    assert last.kind == "reaction_remove" and last.body["emoji"] == LATER


async def test_a_turn_cut_by_a_stop_whose_note_is_deleted_meanwhile_takes_its_restarting_line_back(
    settings, fake, caplog
) -> None:
    # The stop tells the player "restarting: I'll answer this"; they delete the note while the bot
    # is down. After the restart the note is found gone, and the line, a promise under a question
    # taken back, goes too.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    (note,) = await cut_by_a_stop(settings, fake, nova)
    line = restarting_line(fake, note)
    await fake.delete_message(ALLOWED_CHANNEL, note["id"])
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 2)
        await settle(fake)
    assert answers(fake, note) == 0
    assert deleted_in_channel(fake) == [line["id"]]
    assert int(line["id"]) not in fake.messages[ALLOWED_CHANNEL]
    assert told_gone(note) in caplog.text


async def test_a_turn_cut_by_a_stop_where_the_bot_may_not_read_history_promises_no_answer(
    settings, fake, caplog
) -> None:
    # Without Read Message History no later process may fetch the note back to answer it: the
    # stop does not tell the player "restarting: I'll answer this" (a promise nothing keeps, and a
    # line no later process could find to take back were the note deleted), but to try again; the
    # note is settled, not left for the next start to give up on.
    caplog.set_level(logging.INFO, logger="cogs")
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake, engine=FrontendEngine(delay=30), shutdown_grace_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        await asyncio.wait_for(h.task, 20)
    said = [r.body["content"] for r in fake.received if r.kind == "message"]
    assert said == [f"<@{nova.id}> {COMMAND_CUT_SHORT}"], said
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 2)
        await settle(fake)
    assert answers(fake, note) == 0
    assert [r.getMessage() for r in caplog.records if "could not fetch note" in r.getMessage()] == []


async def test_notes_queued_at_a_stop_where_the_bot_may_not_read_history_are_asked_for_again(
    settings, fake
) -> None:
    # Without Read Message History neither a ⏳ nor a restarting line can go on a note, and no
    # later process may fetch it back: notes still waiting behind their player's turn at a stop
    # would vanish unsaid. Their player is asked once, in a plain message, to send them again.
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake, engine=FrontendEngine(delay=30), shutdown_grace_seconds=0.2) as h:
        notes = [await fake.send_note(nova, voice_note(), guild=True) for _ in range(3)]
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        await asyncio.wait_for(h.task, 20)
    said = sorted(r.body["content"] for r in fake.received if r.kind == "message")
    assert said == sorted([f"<@{nova.id}> {COMMAND_CUT_SHORT}", f"<@{nova.id}> {NOTES_CUT_SHORT}"]), said
    assert not [r for r in fake.received if r.kind.startswith("reaction")]
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        assert [await note_state(ledger, n) for n in notes] == ["expired"] * 3
    finally:
        await ledger.aclose()


async def test_the_players_whose_queued_notes_a_stop_cuts_in_one_place_are_asked_in_one_line(
    settings, fake
) -> None:
    # A raid where the bot may not read history: a line a player would be five lines a channel in
    # Discord's five seconds, the stop waiting on each. The players are named in one line.
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    engine = FrontendEngine(delay=30)
    players = [nova, blaze, quill]
    async with running_bot(settings, fake, engine=engine, shutdown_grace_seconds=0.2) as h:
        for _ in range(2):
            for player in players:
                await fake.send_note(player, voice_note(), guild=True)
        await engine.until_asked(len(players))  # each player's first turn under way
        h.stop.set()
        await asyncio.wait_for(h.task, 20)
    said = [r.body["content"] for r in fake.received if r.kind == "message"]
    assert sorted(m for m in said if m.endswith(COMMAND_CUT_SHORT)) == sorted(
        f"<@{p.id}> {COMMAND_CUT_SHORT}" for p in players
    ), said
    (asked,) = [m for m in said if m.endswith(NOTES_CUT_SHORT)]
    assert sorted(asked.removesuffix(NOTES_CUT_SHORT).split()) == sorted(f"<@{p.id}>" for p in players), asked
    assert len(said) == len(players) + 1, said


async def test_a_note_sent_where_the_bot_may_not_read_history_during_an_overlapping_deploy_is_answered(
    settings, fake
) -> None:
    # The new bot, up while the old one drains, gets the note too and may answer it there (as a
    # plain line naming the player): the old one turning it away first kept it from the new one,
    # and its player was asked to send it again for nothing.
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the old bot's turn in flight: its drain lasts
    async with running_bot(settings, fake, engine=engine) as old:
        await fake.send_note(nova, voice_note())  # in a DM
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        async with running_bot(settings, fake) as new:
            old.stop.set()
            while old.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
                await asyncio.sleep(0.01)
            note = await fake.send_note(blaze, voice_note(), guild=True)
            # The old bot keeps the note for the restart ('pending') as the new one claims it:
            # whichever lands first, it is the new one's answer that settles it.
            judged = await note_state(new.bot.core.notes, note, passing=("started", "pending"))
            engine.hold.set()
            await asyncio.wait_for(old.task, 30)
            await settle(fake)
    assert judged == "answered", judged
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert f"<@{blaze.id}> {RESTARTING_SEND_AGAIN}" not in said, said


async def test_a_note_sent_during_the_drain_where_the_bot_may_not_read_history_is_asked_for_again(
    settings, fake
) -> None:
    # Kept for after the restart, it would get no ⏳ (a reaction needs Read Message History) and no
    # answer (no later process may fetch it back): its player is asked to send it again, once
    # however many they send, and it is not kept.
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the turn in flight lasts until the arriving notes are told
    async with running_bot(settings, fake, engine=engine) as h:
        in_flight = await fake.send_note(nova, voice_note())  # in a DM
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        while h.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
            await asyncio.sleep(0.01)
        arriving = [await fake.send_note(blaze, voice_note(), guild=True) for _ in range(2)]
        judged = [await note_state(h.bot.core.notes, n) for n in arriving]
        engine.hold.set()  # the drain waits for the lines on their way
        await asyncio.wait_for(h.task, 30)
    assert judged == ["refused"] * 2, judged
    said = [r.body["content"] for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert said == [f"<@{blaze.id}> {RESTARTING_SEND_AGAIN}"], said
    assert answers(fake, in_flight) == 1
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 2)
        await settle(fake)
    assert [answers(fake, n) for n in arriving] == [0, 0]


async def test_a_note_discord_failed_where_the_bot_may_not_read_history_is_answered_by_the_recheck(
    settings, fake, caplog
) -> None:
    # Given back for the recheck, which fetches each note it answers: Discord refuses the fetch
    # there (no Read Message History), and the note was given up, its player neither answered
    # nor told, after the log promised it an answer later.
    async with running_without_history(settings, fake, recheck_seconds=0.2) as h:
        (note,) = await given_back_unfetchable(fake, caplog, nova)
        await rechecks(h.bot, 2)
        await settle(fake)
        assert await note_state(h.bot.core.notes, note) == "answered"
    voiced = [r for r in fake.sent("message", ALLOWED_CHANNEL) if r.is_voice_message]
    assert len(voiced) == 1, caplog.text
    assert len(h.engine.turns) == 1  # the answer made is sent again, not heard again
    assert "giving it up" not in caplog.text
    assert not any(r.kind == "get_message" for r in fake.received)


async def test_a_note_discord_failed_where_the_bot_may_not_read_history_is_answered_at_a_stop(
    settings, fake, caplog
) -> None:
    # Given back for a recheck that has not come when the bot stops, its answer kept: no later
    # process can fetch the note, but none needs to, as the answer is made. The stop asked its
    # player to send it again all the same, and a player who did got a second turn (a second
    # complaint filed, perhaps) for a question whose answer Discord would take by then.
    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        (note,) = await given_back_unfetchable(fake, caplog, nova)
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert not any(RESTARTING_SEND_AGAIN in (r.body.get("content") or "") for r in said), said
    assert len([r for r in said if r.is_voice_message]) == 1, caplog.text
    assert len(h.engine.turns) == 1  # the answer made is sent, not heard again
    assert (await stored_states(settings))[note["id"]] == "answered"
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 2)
        await settle(fake)
    assert fake.sent("message", ALLOWED_CHANNEL) == said
    assert "giving it up" not in caplog.text


async def test_a_note_discord_failed_where_the_bot_may_not_read_history_failed_at_a_stop_waits(
    settings, fake, caplog
) -> None:
    # Its kept answer failed by Discord again at the stop: neither sent nor asked for (a line
    # asking for it would meet the same trouble), the note waits with its answer for the next
    # start's recheck, which sends it as it does the answer a killed process kept.
    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        (note,) = await given_back_unfetchable(fake, caplog, nova)
        fake.posts_unavailable = 2  # the voice message, then its words as text, at the stop
    assert not fake.sent("message", ALLOWED_CHANNEL)
    assert (await stored_states(settings))[note["id"]] == "pending"
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 2)
        await settle(fake)
        assert await note_state(h.bot.core.notes, note) == "answered"
        assert not h.engine.turns  # the answer kept is sent, not made again
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert not any(RESTARTING_SEND_AGAIN in (r.body.get("content") or "") for r in said), said
    assert len([r for r in said if r.is_voice_message]) == 1, said
    assert "giving it up" not in caplog.text


async def test_notes_discord_failed_where_the_bot_may_not_read_history_cut_at_a_stop_are_asked_in_one_line(
    settings, fake, caplog, monkeypatch
) -> None:
    # Their kept answers still on their way when the stop's last seconds run out (a raid's, behind
    # the channel's rate limit): their players are asked for the notes in the stop's one line, and
    # the notes settled, not left claimed for the next start to count a crash of.
    monkeypatch.setattr("cogs.bot.FOLLOW_UP_SECONDS", 0.5)
    players = [nova, blaze, quill]
    async with running_without_history(settings, fake, recheck_seconds=3600):
        notes = await given_back_unfetchable(fake, caplog, *players)
        # The first voice message held at the stop: the others wait behind it in the channel's queue.
        fake.posts_held = 1
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    (asked,) = said
    assert sorted(asked.removesuffix(STOPPING_MAYBE_UNANSWERED).split()) == sorted(
        f"<@{p.id}>" for p in players
    )
    states = await stored_states(settings)
    assert [states[n["id"]] for n in notes] == ["expired"] * 3, states


async def test_a_kept_answer_a_stop_cut_on_its_way_is_not_said_unanswerable(
    settings, fake, caplog, monkeypatch
) -> None:
    # Cut by the stop's last seconds with its voice message read whole by Discord, not yet answered:
    # Discord made it, and the stop's line told its player "I'm restarting and can't answer notes
    # here just now. Please send yours again", a second turn asked for a note answered. Nothing
    # tells a part on its way from one not sent, so the line says only what may be so.
    monkeypatch.setattr("cogs.bot.FOLLOW_UP_SECONDS", 0.5)
    async with running_without_history(settings, fake, recheck_seconds=3600):
        (note,) = await given_back_unfetchable(fake, caplog, nova)
        fake.posts_held = 1  # the voice message at the stop: read, its answer held
    fake.posts_released.set()  # Discord ends the request it read whole: the message is made
    await eventually(lambda: any(r.is_voice_message for r in fake.sent("message", ALLOWED_CHANNEL)))
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL) if not r.is_voice_message]
    assert said == [f"<@{nova.id}> {STOPPING_MAYBE_UNANSWERED}"], said
    assert (await stored_states(settings))[note["id"]] == "expired"


async def test_notes_whose_kept_answers_a_stop_cut_are_asked_for_once_its_line_waits_a_rate_limit(
    settings, fake, caplog, monkeypatch
) -> None:
    # The stop's line asking for them met the channel's rate limit (a 429 of a few seconds): the
    # stop went on as soon as the first cut send had settled its note, not waiting for the one
    # sending the line, so the line was never sent and its note was left claimed ('started'), a
    # crash for the next start to count.
    monkeypatch.setattr("cogs.bot.FOLLOW_UP_SECONDS", 0.5)
    players = [nova, blaze, quill]
    async with running_without_history(settings, fake, recheck_seconds=3600):
        notes = await given_back_unfetchable(fake, caplog, *players)
        fake.posts_held = 1  # the first voice message at the stop: the others wait behind it
        fake.posts_rate_limited, fake.retry_after = 1, 3.0  # the line asking, once
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    (asked,) = said
    assert sorted(asked.removesuffix(STOPPING_MAYBE_UNANSWERED).split()) == sorted(
        f"<@{p.id}>" for p in players
    )
    states = await stored_states(settings)
    assert [states[n["id"]] for n in notes] == ["expired"] * 3, states


async def test_two_kept_answers_of_one_player_go_out_one_after_the_other_at_a_stop(
    settings, fake, caplog
) -> None:
    # Two notes of one player given back where the bot may not read history, their answers kept:
    # the stop sent both at once, the second's parts posted while the first's were on their way,
    # where every other path sends a player's answers one after the other, in the order sent.
    fake.throttle(0.1)  # Discord's limits in its headers: discord.py posts a channel's five at once
    async with running_without_history(settings, fake, recheck_seconds=3600):
        notes = await given_back_unfetchable(fake, caplog, nova, nova)
        ids = [n["id"] for n in notes]
        # Another player's note answered, which teaches discord.py the channel's limit.
        other = (await fake.send_note(blaze, voice_note(), guild=True))["id"]
        await fake.wait_for(lambda _: len([r for r in fake.sent() if other in str(r.body.get("nonce"))]) == 2)
        before = len(fake.sent("message", ALLOWED_CHANNEL))

        async def slow_first_post(record: Received) -> None:
            # Discord slow to answer the stop's first post: what else is on its way comes meanwhile.
            fake.after_post = None
            mine = record.body.get("nonce")
            with contextlib.suppress(TimeoutError):
                await fake.wait_for(lambda rs: (rs[-1].body or {}).get("nonce") != mine, 1.0)

        fake.after_post = slow_first_post
    nonces = [str(r.body.get("nonce")) for r in fake.sent("message", ALLOWED_CHANNEL)[before:]]
    owners = [next((i for i in ids if nonce.endswith(i)), nonce) for nonce in nonces]
    assert len(owners) == 4 and set(owners) == set(ids), nonces  # a voice message and words each
    assert owners == sorted(owners, key=ids.index), nonces


async def test_a_kept_answer_nothing_of_which_reaches_its_player_at_a_stop_is_said_at_error(
    settings, fake, caplog
) -> None:
    # Its send at the stop refused whole (Send Messages denied, the bot's cache not told yet):
    # the note was settled with no line naming the channel, where a turn that reaches no one
    # says so at ERROR, for the admin to fix what the channel denies.
    async with running_without_history(settings, fake, recheck_seconds=3600):
        (note,) = await given_back_unfetchable(fake, caplog, nova)
        fake.expect_refusals()
        await fake.deny(ALLOWED_CHANNEL, SEND_MESSAGES, tell_the_bot=False)
    assert not fake.sent("message", ALLOWED_CHANNEL)
    assert (await stored_states(settings))[note["id"]] == "expired"
    said = f"note {note['id']} from {nova.id} got no answer: nothing could be posted in channel "
    said += str(ALLOWED_CHANNEL)
    assert [r.levelno for r in caplog.records if said in r.getMessage()] == [logging.ERROR], caplog.text


async def test_a_kept_answer_where_the_bot_is_known_not_to_post_is_not_sent_at_a_stop(
    settings, fake, caplog
) -> None:
    # Send Messages denied after its answer was kept, the bot's cache told: the stop posted the
    # answer all the same (its voice message, then its words), each refused 403 50013, a request
    # counted toward an address ban and time off the stop's wait, where a note's turn posts
    # nothing there and settles the note with the channel's warning.
    caplog.set_level(logging.INFO)
    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        (note,) = await given_back_unfetchable(fake, caplog, nova)
        await fake.deny(ALLOWED_CHANNEL, SEND_MESSAGES)
        channel = h.bot.get_channel(ALLOWED_CHANNEL)
        await eventually(lambda: not channel.permissions_for(channel.guild.me).send_messages)
    assert fake.refused == [], fake.refused
    assert not fake.sent("message", ALLOWED_CHANNEL)
    assert (await stored_states(settings))[note["id"]] == "expired"
    said = f"note {note['id']} from {nova.id} not answered: no Send Messages permission in channel "
    assert said + str(ALLOWED_CHANNEL) in caplog.text, caplog.text


async def _logged(log_path: Any, text: str, within: float) -> None:
    """Until the bot process's log holds `text`."""
    for _ in range(int(within / 0.1)):
        if text in await asyncio.to_thread(log_path.read_text):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(text)


@pytest.mark.timeout(300)  # real processes start (imports, speech workers): slow on a busy machine
async def test_a_note_discord_failed_where_the_bot_may_not_read_history_is_answered_after_a_crash(
    settings, fake, tmp_path
) -> None:
    # Given back for a recheck the process died before (kill -9, an out-of-memory kill): its copy
    # of the note died with it, Discord refuses the next start's fetch (403), and the note was
    # given up, its player neither answered nor told, though the ledger kept the answer made.
    log_path = tmp_path / "bot.log"
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    env = {"VOXDESK_DISCORD_RECHECK_SECONDS": "3600"}  # no recheck answers it before the kill
    with bot_process(settings, fake, log_path, env) as process:
        await logged_in(fake, process, log_path)
        # The voice message, then its words as text; twice, as the start's first recheck (begun as
        # its catch-up ends, late on a busy host) may come after the give-back and send them again.
        # No settle(fake) waits that recheck out in a child process.
        fake.posts_unavailable = 4
        note = await fake.send_note(nova, voice_note(), guild=True)
        given_back = _logged(log_path, "got no answer because Discord failed", 120)
        await while_it_runs(given_back, process, log_path, "given the note back", 130)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    fake.posts_unavailable = 0
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert not any(r.is_voice_message for r in said)
    fake.identified.clear()
    env = {"VOXDESK_DISCORD_RECHECK_SECONDS": "0.5"}
    with bot_process(settings, fake, log_path, env) as process:
        await logged_in(fake, process, log_path)

        def voiced(_: object) -> bool:
            return any(r.is_voice_message for r in fake.sent("message", ALLOWED_CHANNEL))

        await while_it_runs(fake.wait_for(voiced, 90), process, log_path, "answered the note", 100)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()[-4000:]
    logged = log_path.read_text()
    assert "giving it up" not in logged, logged[-4000:]
    assert f"note {note['id']} from {nova.id}: sending the answer Discord failed" in logged, logged[-4000:]
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert len([r for r in said if r.is_voice_message]) == 1
    assert not any(RESTARTING_SEND_AGAIN in (r.body.get("content") or "") for r in said)
    assert not any(r.kind == "get_message" for r in fake.received)
    assert (await stored_states(settings))[note["id"]] == "answered"


@pytest.mark.timeout(300)  # real processes start (imports, speech workers): slow on a busy machine
async def test_a_note_whose_turn_was_killed_where_the_bot_may_not_read_history_is_asked_for_again(
    settings, fake, tmp_path
) -> None:
    # Its turn cut by a kill before an answer was made: no process may fetch it back (403) to
    # hear it, and the next start gave it up with a warning, its player never told. An answer
    # made is kept before its first post (see ..._killed_once_its_answer_was_out_...), unless the
    # ledger refused it, when it may be out unrecorded: the line asks only if no answer came.
    log_path = tmp_path / "bot.log"
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    fake.cdn_stall_seconds = 60  # the turn starts, then waits on its download: a kill lands mid-turn
    with bot_process(settings, fake, log_path) as process:
        await logged_in(fake, process, log_path)
        note = await fake.send_note(nova, voice_note(), guild=True)
        began = fake.wait_for(lambda rs: any(r.kind == "cdn" for r in rs), 60)
        await while_it_runs(began, process, log_path, "begun the note's turn", 70)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    fake.cdn_stall_seconds = 0
    fake.identified.clear()
    asked = f"<@{nova.id}> {MAYBE_UNANSWERED_SEND_AGAIN}"
    with bot_process(settings, fake, log_path, {"VOXDESK_DISCORD_RECHECK_SECONDS": "0.5"}) as process:
        await logged_in(fake, process, log_path)

        def told(_: object) -> bool:
            return any(r.body.get("content") == asked for r in fake.sent("message", ALLOWED_CHANNEL))

        await while_it_runs(fake.wait_for(told, 90), process, log_path, "asked for the note", 100)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()[-4000:]
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert said == [asked], said
    logged = log_path.read_text()
    assert "giving it up" not in logged, logged[-4000:]
    assert (await stored_states(settings))[note["id"]] == "expired"


async def killed_once_its_voice_message_is_out(
    settings: Settings, fake: FakeDiscord, log_path: Path
) -> dict[str, Any]:
    """A note in a channel where the bot may not read history, answered by a bot process killed
    once Discord took the answer's voice message and its transcript's POST, before the note was
    recorded answered."""
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    fake.posts_before_held, fake.posts_held = 1, 1  # the voice message goes; its transcript waits

    def voiced(_: object) -> bool:
        return any(r.is_voice_message for r in fake.sent("message", ALLOWED_CHANNEL))

    with bot_process(settings, fake, log_path) as process:
        await logged_in(fake, process, log_path)
        note = await fake.send_note(nova, voice_note(), guild=True)
        await while_it_runs(fake.wait_for(voiced, 90), process, log_path, "answered the note", 100)
        held = eventually(lambda: fake.posts_held == 0)  # the transcript's POST reached Discord
        await while_it_runs(held, process, log_path, "sent the transcript", 100)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    return note


@pytest.mark.timeout(300)  # real processes start (imports, speech workers): slow on a busy machine
async def test_a_note_killed_once_its_answer_was_out_where_the_bot_may_not_read_history_is_not_said_lost(
    settings, fake, tmp_path
) -> None:
    # Killed once Discord took the answer's voice message, before the note was recorded answered
    # (here its transcript's POST is held): the next start, which may not read the channel to see
    # the answer, told the player "I'm restarting and can't answer notes here just now. Please
    # send yours again", a second turn asked for a note answered. The answer is kept before its
    # first post there, and the next start sends it under the same nonces: Discord returns the
    # messages it made, and the player gets the answer once, asked nothing.
    log_path = tmp_path / "bot.log"
    note = await killed_once_its_voice_message_is_out(settings, fake, log_path)
    fake.identified.clear()
    with bot_process(settings, fake, log_path, {"VOXDESK_DISCORD_RECHECK_SECONDS": "0.5"}) as process:
        await logged_in(fake, process, log_path)

        async def answered() -> None:
            # The ledger is another process's file: polled, with no event to wait on.
            while (await stored_states(settings))[note["id"]] not in ("answered", "expired"):  # noqa: ASYNC110
                await asyncio.sleep(0.1)

        await while_it_runs(answered(), process, log_path, "settled the note", 100)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()[-4000:]
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert len([r for r in said if r.is_voice_message]) == 1, said
    again = [r.body.get("nonce") for r in fake.received if r.kind == "message_again"]
    assert again == [f"v{note['id']}"], again  # sent again under its nonce: Discord's own returned
    assert not any(MAYBE_UNANSWERED_SEND_AGAIN in (r.body.get("content") or "") for r in said), said
    assert (await stored_states(settings))[note["id"]] == "answered"


@pytest.mark.timeout(300)  # real processes start (imports, speech workers): slow on a busy machine
@pytest.mark.parametrize("posted_long_ago", [True, False])
async def test_a_kept_answer_cut_by_a_kill_past_the_nonce_window_is_not_posted_twice(
    settings, fake, tmp_path, monkeypatch, posted_long_ago
) -> None:
    # As ..._killed_once_its_answer_was_out_..., but its answer was posted longer ago than Discord
    # keeps a nonce (a restart held back, or another container's claim waited out to its lease):
    # sent again, its voice message went out a second time. Nothing says whether it went out the
    # first time, so the line asks only if it did not. A note claimed long before its answer was
    # posted (queued behind its player's others, a raid's turns) is sent again all the same: the
    # answer is kept just before its first post, and its nonces still return what it made.
    if posted_long_ago:
        monkeypatch.setattr(discord_server, "NONCE_SECONDS", 0.0)  # Discord has forgotten the nonces
    log_path = tmp_path / "bot.log"
    note = await killed_once_its_voice_message_is_out(settings, fake, log_path)
    with contextlib.closing(sqlite3.connect(settings.storage_dir / "notes.db")) as db, db:
        # The claim ten minutes older, and with it the answer's keeping (just before its first
        # post) or not: well past any nonce window.
        db.execute(
            "UPDATE notes SET lease_until = lease_until - 600 WHERE message_id = ?", (int(note["id"]),)
        )
        if posted_long_ago:
            db.execute("UPDATE answers SET made_at = made_at - 600 WHERE message_id = ?", (int(note["id"]),))
    fake.identified.clear()
    with bot_process(settings, fake, log_path, {"VOXDESK_DISCORD_RECHECK_SECONDS": "0.5"}) as process:
        await logged_in(fake, process, log_path)

        async def settled() -> None:
            # The ledger is another process's file: polled, with no event to wait on.
            while (await stored_states(settings))[note["id"]] not in ("answered", "expired"):  # noqa: ASYNC110
                await asyncio.sleep(0.1)

        await while_it_runs(settled(), process, log_path, "settled the note", 100)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()[-4000:]
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert len([r for r in said if r.is_voice_message]) == 1, said
    asked = [
        r.body.get("content") for r in said if MAYBE_UNANSWERED_SEND_AGAIN in (r.body.get("content") or "")
    ]
    if posted_long_ago:
        assert asked == [f"<@{nova.id}> {MAYBE_UNANSWERED_SEND_AGAIN}"], said
        assert (await stored_states(settings))[note["id"]] == "expired"
    else:
        assert asked == [], said
        again = [r.body.get("nonce") for r in fake.received if r.kind == "message_again"]
        assert again == [f"v{note['id']}"], again
        assert (await stored_states(settings))[note["id"]] == "answered"


async def test_a_note_a_dead_bot_left_where_the_bot_may_not_read_history_is_asked_for_past_a_5xx(
    settings, fake
) -> None:
    # Kept for a restart by a bot since gone, with no answer made: the recheck asks its player to
    # send it again. Discord failing that line (a 503) settled the note all the same, its player
    # neither answered nor asked.
    note = {"id": str(discord.utils.time_snowflake(discord.utils.utcnow()))}
    await kept_by_another_process(settings, note, ALLOWED_CHANNEL, str(nova.id))
    fake.posts_unavailable = 1  # the line asking for the note
    async with running_without_history(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 3)
        await settle(fake)
        assert await note_state(h.bot.core.notes, note) == "expired"
    asked = f"<@{nova.id}> {RESTARTING_SEND_AGAIN}"
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert said == [asked], said


async def test_a_crashing_note_where_the_bot_may_not_read_history_is_told_past_a_5xx(settings, fake) -> None:
    # A note the bot died answering MAX_CRASHES times, its refusal untold (Discord failed the
    # line): the recheck's claim refuses it again and tells its player. Discord failing that line
    # too left the note refused for good, its player never told.
    note = {"id": str(discord.utils.time_snowflake(discord.utils.utcnow()))}
    await kept_by_another_process(settings, note, ALLOWED_CHANNEL, str(nova.id))
    with contextlib.closing(sqlite3.connect(settings.storage_dir / "notes.db")) as db, db:
        db.execute("UPDATE notes SET crashes = ? WHERE message_id = ?", (MAX_CRASHES, int(note["id"])))
    fake.posts_unavailable = 1  # the line telling the refusal
    async with running_without_history(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 3)
        await settle(fake)
        assert await note_state(h.bot.core.notes, note) == "refused"
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert len(said) == 1 and NOTE_CRASHED in (said[0] or ""), said


async def test_a_note_given_back_where_the_bot_may_not_read_history_is_left_to_its_bot_by_another(
    settings, fake, caplog
) -> None:
    # In a deploy's overlap the new bot's recheck lists the note the old one gave back, which it
    # has no copy of and may not fetch: it gave the note up, and the old bot, the one that could
    # answer it, then found it settled and told its player nothing. The old bot's stop sends the
    # answer it kept, as a stop does (see ..._may_not_read_history_is_answered_at_a_stop).
    async with running_without_history(settings, fake, recheck_seconds=3600) as old:
        (note,) = await given_back_unfetchable(fake, caplog, nova)
        async with running_bot(settings, fake, recheck_seconds=0.2) as new:
            await rechecks(new.bot, 2)
            old.stop.set()
            await asyncio.wait_for(old.task, 30)
            await rechecks(new.bot, 2)
            await settle(fake)
            assert await note_state(new.bot.core.notes, note) == "answered"
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert not any(RESTARTING_SEND_AGAIN in (r.body.get("content") or "") for r in said), said
    assert len([r for r in said if r.is_voice_message]) == 1, said
    assert len(old.engine.turns) == 1 and not new.engine.turns
    assert "giving it up" not in caplog.text


async def test_a_note_given_back_where_the_bot_may_not_read_history_taken_up_as_a_stop_begins_is_answered(
    settings, fake, monkeypatch
) -> None:
    # The recheck takes the note up from the copy as the stop begins, and its claim, coming once
    # the bot no longer takes notes, keeps it for after the restart: no later process can fetch
    # it, and with the copy taken the stop had nothing to ask for, its player never told. The
    # stop sends the answer kept for it, and the recheck's late claim asks for nothing more.
    async with running_without_history(settings, fake, recheck_seconds=0.2) as h:
        ledger = h.bot.core.notes
        looks: list[int] = []
        taken_up, go = asyncio.Event(), asyncio.Event()
        real = ledger.suspect

        async def held_at_its_second_look(message_id: int) -> bool:
            looks.append(message_id)
            if looks.count(message_id) == 2:  # its first turn's look, then the recheck's
                taken_up.set()
                await go.wait()
            return await real(message_id)

        monkeypatch.setattr(ledger, "suspect", held_at_its_second_look)
        fake.posts_unavailable = 2  # the voice message, then its words as text
        await fake.send_note(nova, voice_note(), guild=True)
        await asyncio.wait_for(taken_up.wait(), 30)
        h.stop.set()
        while h.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
            await asyncio.sleep(0.01)
        go.set()
        await asyncio.wait_for(h.task, 30)
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert not any(RESTARTING_SEND_AGAIN in (r.body.get("content") or "") for r in said), said
    assert len([r for r in said if r.is_voice_message]) == 1, said
    assert len(said) == 2, said  # the voice message, then its transcript naming the player


async def test_a_note_given_back_where_the_bot_may_not_read_history_deleted_is_not_asked_for_at_a_stop(
    settings, fake, monkeypatch, caplog
) -> None:
    # Its deletion is settled in the ledger, unless the ledger refuses the write (a full disk):
    # the copy kept for the recheck then had the stop ask its player to send again what they took
    # back.
    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        (note,) = await given_back_unfetchable(fake, caplog, nova)

        async def refused(message_ids: list[int]) -> list[tuple[int, int]]:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(h.bot.core.notes, "withdrawn", refused)
        await fake.delete_message(ALLOWED_CHANNEL, note["id"])
        await eventually(lambda: "could not record deleted messages" in caplog.text)
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert said == [], said


async def test_the_players_whose_given_back_notes_a_stop_asks_for_in_one_place_are_asked_in_one_line(
    settings, fake, caplog
) -> None:
    # Given back as Discord fails, a raid's notes are many at a stop: a line a player, one after
    # another, met the channel's five sends in five seconds, and the stop's wait ran out with
    # most players untold (and the note being asked for left claimed by a process that is gone).
    players = [nova, blaze, quill]
    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        await with_no_answer_kept(h, await given_back_unfetchable(fake, caplog, *players))
    said = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    (asked,) = said
    assert sorted(asked.removesuffix(RESTARTING_SEND_AGAIN).split()) == sorted(f"<@{p.id}>" for p in players)


async def test_given_back_notes_a_stop_ran_out_of_time_asking_for_are_settled_not_left_claimed(
    settings, fake, caplog, monkeypatch
) -> None:
    # Its wait run out as Discord held the line, the stop left the note it was asking for claimed
    # by a process then gone, which the next start counted as a crash in its turn.
    from cogs import bot as bot_module

    monkeypatch.setattr(bot_module, "FOLLOW_UP_SECONDS", 1.0)
    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        notes = await given_back_unfetchable(fake, caplog, nova, blaze)
        await with_no_answer_kept(h, notes)
        fake.posts_held = 1
    assert "closing before every note given back unfetchable was asked for again" in caplog.text
    states = await stored_states(settings)
    assert [states[n["id"]] for n in notes] == ["expired"] * 2, states


async def test_given_back_notes_a_stop_ran_out_of_time_settling_are_settled_all_the_same(
    settings, fake, caplog, monkeypatch
) -> None:
    # Every player asked, the stop's wait ran out as the notes were being settled (a slow disk):
    # the note being settled and those after it were left claimed by a process then gone, which
    # the next start counted as a crash in each one's turn.
    from cogs import bot as bot_module

    # The stop's wait, long enough for the asking on any machine: it runs out when the first
    # note's write begins, not when a short one happens to, which on a loaded machine came while
    # the line was still being sent (no line, and nothing settling to cut).
    budget = 3600.25
    monkeypatch.setattr(bot_module, "FOLLOW_UP_SECONDS", budget)
    timeout = asyncio.timeout
    waits: list[asyncio.Timeout] = []

    def recorded(delay: float | None) -> asyncio.Timeout:
        made = timeout(delay)
        if delay == budget:
            waits.append(made)
        return made

    monkeypatch.setattr(asyncio, "timeout", recorded)
    settling = NoteLedger.unanswerable
    slow = [True]

    async def slow_disk(ledger: NoteLedger, message_id: int) -> None:
        # The first note's write lasts until the stop's wait runs out, which it does now.
        if slow:
            slow.clear()
            (wait,) = waits
            wait.reschedule(asyncio.get_running_loop().time())
            await asyncio.sleep(60)
        await settling(ledger, message_id)

    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        notes = await given_back_unfetchable(fake, caplog, nova, blaze)
        await with_no_answer_kept(h, notes)
        monkeypatch.setattr(NoteLedger, "unanswerable", slow_disk)
    assert "closing before every note given back unfetchable was asked for again" in caplog.text
    (asked,) = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert asked.endswith(RESTARTING_SEND_AGAIN)
    states = await stored_states(settings)
    assert [states[n["id"]] for n in notes] == ["expired"] * 2, states


async def test_a_note_given_back_unfetchable_and_settled_elsewhere_is_not_asked_for_at_a_stop(
    settings, fake, caplog
) -> None:
    # Another process on this storage settled it (gave it up, or answered it) before the stop:
    # the stop's claim of it fails, and its player is not asked to send it again.
    async with running_without_history(settings, fake, recheck_seconds=3600) as h:
        (note,) = await given_back_unfetchable(fake, caplog, nova)
        await h.bot.core.notes.expire([int(note["id"])])
    assert fake.sent("message", ALLOWED_CHANNEL) == []


async def test_a_note_sent_during_the_drain_where_no_other_bot_can_be_told_is_asked_for_again(
    settings, fake, monkeypatch
) -> None:
    # On a file system that takes no locks the ledger cannot tell whether another bot answers
    # Discord beside this one. Kept for a bot that may not be there, the note would be given up
    # unfetched at the next start (no Read Message History), its player never told.
    import errno

    from bot import note_ledger

    real = note_ledger.fcntl.fcntl

    def unsupported(fd: int, command: int, arg: object = 0) -> object:
        if command in (note_ledger.fcntl.F_OFD_SETLK, note_ledger.fcntl.F_OFD_GETLK):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, command, arg)  # type: ignore[arg-type]

    monkeypatch.setattr(note_ledger.fcntl, "fcntl", unsupported)
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the turn in flight lasts until the arriving note is told
    async with running_bot(settings, fake, engine=engine) as h:
        await fake.send_note(nova, voice_note())  # in a DM
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        while h.bot.accepting:  # noqa: ASYNC110 - the bot's own flag; it has no event to wait on
            await asyncio.sleep(0.01)
        arriving = await fake.send_note(blaze, voice_note(), guild=True)
        judged = await note_state(h.bot.core.notes, arriving)
        engine.hold.set()  # the drain waits for the line on its way
        await asyncio.wait_for(h.task, 30)
    assert judged == "refused", judged
    said = [r.body["content"] for r in fake.sent("message", ALLOWED_CHANNEL)]
    assert said == [f"<@{blaze.id}> {RESTARTING_SEND_AGAIN}"], said


async def test_a_gone_notes_take_back_deletes_its_restarting_line_not_an_earlier_reply(
    settings, fake
) -> None:
    # A reply of the bot's to the note before the restarting line (a part of its answer posted
    # before the stop) stays: it was out, and the player may have heard it. Only the line goes.
    (note,) = await cut_by_a_stop(settings, fake, nova)
    line = restarting_line(fake, note)
    part_id = int(note["id"]) + 1
    assert part_id < int(line["id"])
    part = message_payload(
        part_id, ALLOWED_CHANNEL, user_payload(BOT_USER_ID, "voxdesk", bot=True), "Part one."
    )
    part["type"] = 19  # REPLY
    part["message_reference"] = {"type": 0, "message_id": note["id"], "channel_id": str(ALLOWED_CHANNEL)}
    fake.messages[ALLOWED_CHANNEL][part_id] = part
    await fake.delete_message(ALLOWED_CHANNEL, note["id"])
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 2)
        await settle(fake)
    assert deleted_in_channel(fake) == [line["id"]]
    assert part_id in fake.messages[ALLOWED_CHANNEL]


async def test_a_restarting_line_goes_with_its_note_deleted_while_it_waits_after_the_restart(
    settings, fake, caplog
) -> None:
    # Told "restarting", the note waits on after the restart (Discord fails its answer); its player
    # deletes it then, and the bot hears it: settled unanswered, with the line taken back.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    (note,) = await cut_by_a_stop(settings, fake, nova)
    line = restarting_line(fake, note)
    fake.posts_unavailable = 10
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        await given_back_unanswered(h.bot, caplog, nova, note)
        fake.posts_unavailable = 0
        await fake.delete_message(ALLOWED_CHANNEL, note["id"])
        await fake.wait_for(lambda _: fake.sent("message_delete", ALLOWED_CHANNEL))
        assert await note_state(h.bot.core.notes, note) == "expired"
        await settle(fake)
    assert answers(fake, note) == 0
    assert deleted_in_channel(fake) == [line["id"]]
    assert told_gone(note) in caplog.text


async def test_restarting_lines_of_waiting_notes_bulk_deleted_are_looked_for_one_at_a_time(
    settings, fake, caplog
) -> None:
    # A ban deleting a player's recent messages may take many waiting notes at once: their
    # restarting lines are each looked for in the channel's history, one read after another, not
    # all together, and each is still taken back.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    players = (nova, blaze, quill)
    notes = await cut_by_a_stop(settings, fake, *players)
    lines = [restarting_line(fake, note)["id"] for note in notes]
    fake.posts_unavailable = 30
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        for player, note in zip(players, notes, strict=True):
            await given_back_unanswered(h.bot, caplog, player, note)
        fake.posts_unavailable = 0
        catch_up = h.bot.get_cog("CatchUp")
        take_back = catch_up.take_back_restarting
        reading, most = 0, 0

        async def counted(channel: Any, note_id: int) -> None:
            nonlocal reading, most
            reading += 1
            most = max(most, reading)
            try:
                await take_back(channel, note_id)
            finally:
                reading -= 1

        catch_up.take_back_restarting = counted
        held = fake.history_held[ALLOWED_CHANNEL] = asyncio.Event()
        await fake.delete_messages(ALLOWED_CHANNEL, [note["id"] for note in notes])
        await eventually(lambda: fake.history_waiting)
        # Each take-back was begun, if at all, when its read was sent: the first read now waits
        # at Discord, and any begun beside it has entered `counted` by now.
        assert (reading, fake.history_waiting) == (1, 1)
        held.set()
        await fake.wait_for(lambda _: len(fake.sent("message_delete", ALLOWED_CHANNEL)) == len(notes))
        await settle(fake)
    assert most == 1
    assert sorted(deleted_in_channel(fake)) == sorted(lines)
    for note in notes:
        assert answers(fake, note) == 0
        assert told_gone(note) in caplog.text


async def test_a_restarting_line_goes_with_its_note_deleted_as_the_restart_answers_it(
    settings, fake, caplog
) -> None:
    # Told "restarting", the note is answered after the restart; its player deletes it while that
    # turn runs: nothing of the answer is posted, and the line goes too.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    (note,) = await cut_by_a_stop(settings, fake, nova)
    line = restarting_line(fake, note)
    await deleted_as_the_restart_answers_it(settings, fake, note)
    assert answers(fake, note) == 0
    assert deleted_in_channel(fake) == [line["id"]]
    assert told_gone(note) in caplog.text


async def test_a_restarting_line_goes_with_its_note_deleted_as_the_restart_answers_it_reacted_to(
    settings, fake
) -> None:
    # The note carries a player's reaction beside the bot's ⏳: the ⏳ alone says a stop kept it.
    (note,) = await cut_by_a_stop(settings, fake, nova)
    line = restarting_line(fake, note)
    stored = fake.messages[ALLOWED_CHANNEL][int(note["id"])]
    assert [r["emoji"]["name"] for r in stored["reactions"]] == [LATER]
    stored["reactions"].append(
        {
            "count": 1,
            "count_details": {"burst": 0, "normal": 1},
            "me": False,
            "me_burst": False,
            "burst_colors": [],
            "emoji": {"id": None, "name": "👍"},
        }
    )
    await deleted_as_the_restart_answers_it(settings, fake, note)
    assert answers(fake, note) == 0
    assert deleted_in_channel(fake) == [line["id"]]


async def test_two_bots_on_one_storage_answer_each_note_once(settings, fake) -> None:
    live_engine = FrontendEngine(delay=0.3)
    async with (
        running_bot(settings, fake, engine=live_engine),
        running_bot(settings, fake, engine=live_engine),
    ):
        live = [await fake.send_note(p, voice_note(), guild=True) for p in (nova, blaze, nova)]
        await all_answered(fake, live)
        await settle(fake)
    missed = [await fake.send_note(p, voice_note(), guild=True) for p in (blaze, nova, blaze)]
    # Both start at once and both read the same history.
    async with running_bot(settings, fake), running_bot(settings, fake):
        await all_answered(fake, missed)
        await settle(fake)
    assert [answers(fake, n) for n in live + missed] == [1] * 6


@pytest.mark.timeout(180)  # real processes start (imports, speech workers): slow on a busy machine
async def test_a_note_whose_turn_was_killed_is_answered_after_the_restart(settings, fake, tmp_path) -> None:
    log_path = tmp_path / "bot.log"
    fake.cdn_stall_seconds = 60  # the turn starts, then waits on its download: a kill lands mid-turn
    with bot_process(settings, fake, log_path) as process:
        await logged_in(fake, process, log_path)
        note = await fake.send_note(nova, voice_note(), channel_id=ALLOWED_CHANNEL, guild=True)
        await fake.wait_for(lambda rs: any(r.kind == "cdn" for r in rs), 60)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
    assert answers(fake, note) == 0
    fake.cdn_stall_seconds = 0
    fake.identified.clear()
    with bot_process(settings, fake, log_path) as process:
        await logged_in(fake, process, log_path)
        await fake.wait_for(lambda _: answers(fake, note) >= 1, 60)
        process.send_signal(signal.SIGTERM)  # what it still had to send, it sends before it exits
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()
    assert answers(fake, note) == 1, log_path.read_text()


@pytest.mark.timeout(600)  # four real processes start (imports, speech workers), one after another
async def test_a_note_that_kills_the_bot_at_each_turn_is_refused_once_it_killed_it_twice(
    settings, fake, tmp_path
) -> None:
    """A note that crashes native code answered at every restart kept the bot down for every player:
    its second death is its last, and its player is asked for another recording."""
    log_path = tmp_path / "bot.log"
    crashing = voice_note(2.0)  # not voice_note()'s bytes, which the other notes are
    env = {"TEST_CRASHING_NOTE_SHA256": hashlib.sha256(crashing).hexdigest()}
    note: dict | None = None
    for _ in range(MAX_CRASHES):  # killed live first, then by the restart's catch-up
        fake.identified.clear()
        with bot_process(settings, fake, log_path, env, module="tests.crashing_bot") as process:
            await logged_in(fake, process, log_path)
            if note is None:
                note = await fake.send_note(nova, crashing, channel_id=ALLOWED_CHANNEL, guild=True)
            code = await asyncio.to_thread(process.wait, 120)
            assert code == -signal.SIGSEGV, log_path.read_text()[-4000:]
    assert note is not None and answers(fake, note) == 0
    fake.identified.clear()
    with bot_process(settings, fake, log_path, env, module="tests.crashing_bot") as process:
        await logged_in(fake, process, log_path)

        def told(_: object) -> bool:
            return any(r.content == NOTE_CRASHED for r in fake.replies_to(note["id"]))

        await while_it_runs(fake.wait_for(told, 90), process, log_path, "told the player", 100)
        other = await fake.send_note(blaze, voice_note(), channel_id=ALLOWED_CHANNEL, guild=True)
        answered = fake.wait_for(lambda _: answers(fake, other) >= 1, 60)
        await while_it_runs(answered, process, log_path, "answered another note", 70)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()[-4000:]
    assert answers(fake, note) == 0
    assert [r.content for r in fake.replies_to(note["id"])] == [NOTE_CRASHED]
    logged = log_path.read_text()
    assert f"note {note['id']} from {nova.id} not answered: the bot died {MAX_CRASHES} times" in logged


@pytest.mark.timeout(180)  # real processes start (imports, speech workers): slow on a busy machine
async def test_two_bot_processes_starting_together_answer_each_note_once(settings, fake, tmp_path) -> None:
    missed = [await fake.send_note(p, voice_note(), guild=True) for p in (nova, blaze, nova, blaze)]
    log_path = tmp_path / "bots.log"
    with bot_process(settings, fake, log_path) as one, bot_process(settings, fake, log_path) as two:
        await fake.wait_for(lambda _: all(answers(fake, n) >= 1 for n in missed), 90)
        # One bot can answer all four before the other has logged in (each loads its speech
        # models first): the live note must wait for both sessions, or only one gets it.
        await fake.wait_for(lambda _: len(fake.identify_payloads) == 2, 60)
        live = await fake.send_note(blaze, voice_note(), guild=True)  # both sessions get this one
        await fake.wait_for(lambda _: answers(fake, live) >= 1, 60)
        assert len(fake.identify_payloads) == 2  # both were connected
        for process in (one, two):
            process.send_signal(signal.SIGTERM)
        for process in (one, two):
            assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()
    assert [answers(fake, n) for n in [*missed, live]] == [1] * 5, log_path.read_text()


class SlowFor(FrontendEngine):
    """Slow for one player only: their turn is still running when the others' are answered."""

    def __init__(self, user_id: str, delay: float) -> None:
        super().__init__()
        self.slow_user = user_id
        self.slow_delay = delay

    async def complete(self, turn):
        if turn.context.user_id == self.slow_user:
            await asyncio.sleep(self.slow_delay)
        return await super().complete(turn)


async def _stop_while_an_older_note_runs(settings, fake) -> tuple[dict, dict]:
    """Nova's note still running and Blaze's newer one answered in the same channel when the bot
    stops (its grace too short for Nova's turn): the two notes, the older one cut."""
    async with running_bot(settings, fake, engine=SlowFor(NOVA, delay=30), shutdown_grace_seconds=0.5) as h:
        older = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        newer = await fake.send_note(blaze, voice_note(), guild=True)
        await all_answered(fake, [newer])
        h.stop.set()
        await asyncio.wait_for(h.task, 20)
    return older, newer


async def test_a_cut_turn_older_than_a_later_answer_in_its_channel_is_answered_after_the_restart(
    settings, fake
) -> None:
    # Found by bench/soak.py: players are answered in parallel, so in a shared channel a newer
    # note can be answered while an older one is still running when the bot stops.
    older, newer = await _stop_while_an_older_note_runs(settings, fake)
    assert answers(fake, older) == 0
    async with running_bot(settings, fake):
        await all_answered(fake, [older], within=25)
        await settle(fake)
    assert answers(fake, older) == 1 and answers(fake, newer) == 1


async def test_a_cut_note_and_a_later_one_of_its_player_are_answered_in_the_order_sent(
    settings, fake
) -> None:
    # The catch-up itself reads from before the cut note: left to the recheck, which fetches it
    # once the catch-up has queued the rest, it would be answered after its player's later note.
    older, _ = await _stop_while_an_older_note_runs(settings, fake)
    missed = await fake.send_note(nova, voice_note(), guild=True)  # sent while the bot was down
    async with running_bot(settings, fake) as h:
        await all_answered(fake, [older, missed], within=25)
        await settle(fake)
    assert answers(fake, older) == answers(fake, missed) == 1
    order = {id(r): i for i, r in enumerate(fake.received)}
    assert order[id(fake.replies_to(older["id"])[-1])] < order[id(fake.replies_to(missed["id"])[0])]
    assert [len(t.history) for t in h.engine.turns] == [0, 1]  # the missed note heard the older one


async def test_a_kept_note_that_pinged_the_bot_elsewhere_is_answered_first_and_alone_there(
    settings, fake
) -> None:
    # A note kept during a shutdown in a channel the bot does not watch (it pinged the bot) is
    # read there by the catch-up: answered before its player's later note, and the other notes
    # of that channel, which were never for the bot, stay unanswered.
    me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)
    hello = await fake.send_message(me, channel_id=OTHER_CHANNEL, guild=True, content="Hi!", dispatch=False)
    kept = await fake.send_note(
        nova, voice_note(), channel_id=OTHER_CHANNEL, mention_bot=True, reply_to=hello, dispatch=False
    )
    chat = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL, guild=True, dispatch=False)
    later = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
    await kept_by_another_process(settings, kept, OTHER_CHANNEL, NOVA)
    async with running_bot(settings, fake):
        await all_answered(fake, [kept, later], within=25)
        await settle(fake)
    assert answers(fake, kept) == answers(fake, later) == 1 and fake.replies_to(chat["id"]) == []
    order = {id(r): i for i, r in enumerate(fake.received)}
    assert order[id(fake.replies_to(kept["id"])[-1])] < order[id(fake.replies_to(later["id"])[0])]


async def test_a_killed_turn_older_than_a_later_answer_in_its_channel_is_answered_after_the_restart(
    settings, fake
) -> None:
    older = await fake.send_note(nova, voice_note(), guild=True)
    newer = await fake.send_note(blaze, voice_note(), guild=True)
    # What a process killed mid-turn leaves (the soak's SIGKILL): it claimed both notes, answered
    # the newer one and died on the older one.
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        ledger.owner = "4194305:1:killed"  # above Linux's largest pid: no such process
        for note in (older, newer):
            assert await ledger.claim(int(note["id"]), ALLOWED_CHANNEL, str(note["author"]["id"]))
        await ledger.answered(int(newer["id"]))
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake):
        await all_answered(fake, [older], within=25)
        await settle(fake)
    assert answers(fake, older) == 1 and answers(fake, newer) == 0


async def test_a_restarts_first_recheck_leaves_the_killed_turns_the_catch_up_answers(settings, fake) -> None:
    # The first recheck runs as the start-up catch-up's answers claim a killed process's notes:
    # one it listed before its claim landed would have its reply searched for through the raid
    # after it, for a note this process is answering already.
    notes = []
    for player in (nova, blaze):
        notes.append(await fake.send_note(player, voice_note(), guild=True, dispatch=False))
        for n in range(150):
            await fake.send_message(
                quill, channel_id=ALLOWED_CHANNEL, guild=True, content=f"raid {n}", dispatch=False
            )
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        ledger.owner = "4194305:1:killed"  # above Linux's largest pid: no such process
        for note in notes:
            assert await ledger.claim(int(note["id"]), ALLOWED_CHANNEL, str(note["author"]["id"]))
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake):
        await all_answered(fake, notes, within=25)
        await settle(fake)
    searched = [
        r
        for r in fake.received
        if r.kind == "history" and (r.body or {}).get("after") in {n["id"] for n in notes}
    ]
    assert searched == []
    assert [answers(fake, n) for n in notes] == [1, 1]


async def test_a_note_the_old_process_cut_in_an_overlapping_deploy_is_answered_by_the_new_one(
    settings, fake
) -> None:
    # The new process starts while the old one still answers a note (its claim is alive), so
    # neither the live event nor the start-up catch-up may take it; the old one's shutdown then
    # cuts the turn and gives the note back.
    old_engine = SlowFor(NOVA, delay=30)
    async with running_bot(settings, fake, engine=old_engine, shutdown_grace_seconds=0.3) as old:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        async with running_bot(settings, fake, recheck_seconds=0.2):
            old.stop.set()
            await asyncio.wait_for(old.task, 20)
            await all_answered(fake, [note], within=25)
            await settle(fake)
    assert answers(fake, note) == 1


async def test_a_note_turned_away_for_flooding_is_not_answered_after_a_restart(settings, fake) -> None:
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600):
        first = await fake.send_note(nova, voice_note(), guild=True)
        flood = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [first])
        await fake.wait_for(lambda _: fake.replies_to(flood["id"]))  # "slow down"
        await settle(fake)
    async with running_bot(settings, fake):
        await settle(fake)
    assert answers(fake, first) == 1 and answers(fake, flood) == 0


async def test_a_note_answered_just_before_a_kill_is_not_answered_again_by_the_recheck(
    settings, fake
) -> None:
    # Killed after posting the voice message and before marking the note answered: the start-up
    # catch-up sees the reply and leaves the note, and the running bot's recheck must too.
    async with running_bot(settings, fake):
        note = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [note])
        await settle(fake)
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        # The row as the killed process left it: claimed, never marked answered.
        await ledger._conn.execute(
            "UPDATE notes SET state = 'started', owner = ?, lease_until = ? WHERE message_id = ?",
            ("4194305:1:killed", time.time() + 600, int(note["id"])),  # above Linux's largest pid
        )
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot)
        await settle(fake)
    assert answers(fake, note) == 1


@pytest.mark.parametrize("found_by", ["start-up catch-up", "recheck"])
async def test_a_note_answered_unlinked_just_before_a_kill_is_answered_again_not_never(
    settings, fake, found_by
) -> None:
    # Answered as plain messages naming the player (no Read Message History), killed before the
    # note was marked answered; the permission is given back before the restart or the recheck,
    # which may read the channel again: no reply of the bot's points at the note. A line naming
    # the player is not taken for its answer: it may answer another note of theirs or tell them
    # something else (the tests below), and the note would never be answered. Answered again.
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake):
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda _: len(fake.sent("message", ALLOWED_CHANNEL)) >= 2 or None)
        await settle(fake)
    del fake.denied[ALLOWED_CHANNEL]
    killed = "UPDATE notes SET state = 'started', owner = ?, lease_until = ? WHERE message_id = ?"
    row = ("4194305:1:killed", time.time() + 600, int(note["id"]))  # above Linux's largest pid
    if found_by == "start-up catch-up":
        ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
        try:
            await ledger._conn.execute(killed, row)
        finally:
            await ledger.aclose()
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        if found_by == "recheck":
            await settle(fake)
            await h.bot.core.notes._conn.execute(killed, row)
        await rechecks(h.bot)
        await settle(fake)
        assert await note_state(h.bot.core.notes, note) == "answered"
    # Heard again; past the few minutes Discord keeps a nonce, answered twice.
    assert len(h.engine.turns) == 1


async def test_a_killed_turns_note_whose_player_was_only_told_to_slow_down_is_answered(
    settings, fake
) -> None:
    # Where the bot could not reply, it told the player, naming them, that a later note was too
    # many: that line answers nothing, and the note a killed process had started is answered.
    me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)
    async with running_bot(settings, fake, recheck_seconds=0.2) as survivor:
        await settle(fake)
        note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        told = f"<@{nova.id}> " + TOO_FAST.format(wait="a minute")
        await fake.send_message(me, channel_id=ALLOWED_CHANNEL, guild=True, content=told, dispatch=False)
        await survivor.bot.core.notes._conn.execute(
            "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
            " VALUES (?, ?, ?, 'started', ?, ?, ?)",
            (int(note["id"]), ALLOWED_CHANNEL, NOVA, "4194305:1:killed", time.time() + 600, time.time()),
        )
        await all_answered(fake, [note], within=25)
        await settle(fake)
    assert answers(fake, note) == 1


async def found_after_a_kill(
    settings: Settings,
    fake: FakeDiscord,
    found_by: str,
    sql: str,
    sent_and_left: Callable[[FakeDiscord], Awaitable[tuple[T, list[tuple[object, ...]]]]],
    awaited: Callable[[T], list[dict]],
) -> T:
    """What `sent_and_left` sends (while no bot hears it), and the notes.db rows (`sql`) it says a
    killed process left, found by the start-up catch-up (rows written before the bot starts) or
    by a running bot's recheck (written under it); returns once `awaited` notes are answered."""
    if found_by == "start-up catch-up":
        made, rows = await sent_and_left(fake)
        ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
        try:
            await ledger._conn.executemany(sql, rows)
            await ledger._conn.commit()
        finally:
            await ledger.aclose()
        async with running_bot(settings, fake, recheck_seconds=0.2):
            await all_answered(fake, awaited(made), within=25)
            await settle(fake)
        return made
    async with running_bot(settings, fake, recheck_seconds=0.2) as survivor:
        await settle(fake)
        made, rows = await sent_and_left(fake)
        await survivor.bot.core.notes._conn.executemany(sql, rows)
        await all_answered(fake, awaited(made), within=25)
        await settle(fake)
    return made


@pytest.mark.parametrize("found_by", ["start-up catch-up", "recheck"])
@pytest.mark.parametrize(
    "said",
    [
        "dms closed notice",
        "answer to a later note",
        "answer to a later note since deleted",
        "answer to an earlier note",
    ],
)
async def test_a_killed_turns_note_is_answered_though_a_plain_line_after_it_names_its_player(
    settings, fake, found_by, said
) -> None:
    # Plain messages naming the player that answer another note of theirs (a later one, kept or
    # deleted once answered, or an earlier one answered once this one was sent: one player's notes
    # are answered in turn), or tell them their DMs are closed (ticket news, in the channel they
    # last spoke in), must not be taken for the killed turn's answer: the note would be settled as
    # answered and never answered at all.
    me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)
    rows = (
        "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    earlier: list[dict] = []
    later: list[dict] = []

    async def sent_then_named(fake: FakeDiscord) -> dict:
        if said == "answer to an earlier note":
            earlier.append(await fake.send_note(nova, voice_note(), guild=True, dispatch=False))
        note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        text = f"<@{nova.id}> {DMS_CLOSED_NOTICE}"
        if said.startswith("answer to a later note"):
            later.append(await fake.send_note(nova, voice_note(), guild=True, dispatch=False))
        if said != "dms closed notice":
            text = f"<@{nova.id}> You have 1,200 reward points."
        await fake.send_message(me, channel_id=ALLOWED_CHANNEL, guild=True, content=text, dispatch=False)
        if said.endswith("since deleted"):  # the player tidies up once answered
            await fake.delete_message(ALLOWED_CHANNEL, later[0]["id"])
        return note

    def ledger_rows(note: dict) -> list[tuple[object, ...]]:
        now = time.time()
        killed = (int(note["id"]), ALLOWED_CHANNEL, NOVA, "started", "4194305:1:killed", now + 600, now)
        # The earlier note's answer (the plain line) went out, and it was marked, after `note` came.
        return [
            killed,
            *((int(n["id"]), ALLOWED_CHANNEL, NOVA, "answered", None, None, now) for n in earlier + later),
        ]

    async def sent_and_left(fake: FakeDiscord) -> tuple[dict, list[tuple[object, ...]]]:
        note = await sent_then_named(fake)
        return note, ledger_rows(note)

    note = await found_after_a_kill(settings, fake, found_by, rows, sent_and_left, lambda note: [note])
    assert answers(fake, note) == 1
    assert all(answers(fake, n) == 0 for n in earlier)  # answered before the kill: not again


@pytest.mark.parametrize("found_by", ["start-up catch-up", "recheck"])
async def test_a_killed_turns_note_is_answered_though_an_earlier_notes_answer_after_it_is_too_old(
    settings, fake, found_by
) -> None:
    # Two notes of one player, both claimed by a process that answered the first (a plain line:
    # no Read Message History) once the second had come, and died before marking either. Back
    # 30 minutes later, the first is past the catch-up window and given up (expired, not
    # answered): its answer, after the second, was taken for the second's, never answered.
    me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)
    window = 30 * 60  # catch_up_minutes' default
    rows = (
        "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
        " VALUES (?, ?, ?, 'started', ?, ?, ?)"
    )

    async def killed_mid_queue(fake: FakeDiscord) -> tuple[dict, dict, list[tuple[object, ...]]]:
        first = await fake.send_note(nova, voice_note(), guild=True, dispatch=False, ago=window + 15)
        second = await fake.send_note(nova, voice_note(), guild=True, dispatch=False, ago=window - 5)
        text = f"<@{nova.id}> You have 1,200 reward points."
        await fake.send_message(
            me, channel_id=ALLOWED_CHANNEL, guild=True, content=text, dispatch=False, ago=window - 10
        )
        claimed = time.time() - window
        return (
            first,
            second,
            [
                (int(n["id"]), ALLOWED_CHANNEL, NOVA, "4194305:1:killed", claimed + 900, claimed)
                for n in (first, second)
            ],
        )

    async def sent_and_left(fake: FakeDiscord) -> tuple[tuple[dict, dict], list[tuple[object, ...]]]:
        first, second, killed = await killed_mid_queue(fake)
        return (first, second), killed

    first, second = await found_after_a_kill(
        settings, fake, found_by, rows, sent_and_left, lambda notes: [notes[1]]
    )
    assert answers(fake, second) == 1
    assert answers(fake, first) == 0  # too old to answer now


@pytest.mark.parametrize("found_by", ["start-up catch-up", "recheck"])
@pytest.mark.parametrize("told", ["one note per message", "restarting"])
async def test_a_killed_turns_note_is_answered_though_a_reply_told_it_something_else_first(
    settings, fake, found_by, told
) -> None:
    # A reply to the note that is not its answer: "one note per message" goes out as the turn is
    # claimed, before the player's queue and the turn; "restarting", as a stop cuts the turn,
    # before the note is given back. Killed in between, the note was taken for answered by that
    # reply, and never answered.
    me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)

    async def told_then_killed(fake: FakeDiscord) -> dict:
        note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        if told == "one note per message":
            audio = note["attachments"][0]
            several = await send_two_notes(fake, nova, audio, dispatch=False)
            await fake.delete_message(ALLOWED_CHANNEL, note["id"])  # only its audio was wanted
            note = several
        text = ONE_AT_A_TIME if told == "one note per message" else RESTARTING
        await fake.send_message(
            me, channel_id=ALLOWED_CHANNEL, guild=True, content=text, reply_to=note, dispatch=False
        )
        return note

    killed = (
        "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
        " VALUES (?, ?, ?, 'started', ?, ?, ?)"
    )

    async def sent_and_left(fake: FakeDiscord) -> tuple[dict, list[tuple[object, ...]]]:
        note = await told_then_killed(fake)
        return note, [
            (int(note["id"]), ALLOWED_CHANNEL, NOVA, "4194305:1:killed", time.time() + 600, time.time())
        ]

    note = await found_after_a_kill(settings, fake, found_by, killed, sent_and_left, lambda note: [note])
    assert answers(fake, note) == 1


async def test_a_note_answered_by_a_process_killed_beside_a_running_one_is_not_answered_again(
    settings, fake
) -> None:
    # Two processes on one storage; one answers a note and is killed before marking it. The other,
    # running all along (its start-up catch-up long done), finds the row in its recheck.
    async with running_bot(settings, fake):
        note = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [note])
        await settle(fake)
    async with running_bot(settings, fake, recheck_seconds=0.2) as survivor:
        await settle(fake)
        await survivor.bot.core.notes._conn.execute(
            "UPDATE notes SET state = 'started', owner = ?, lease_until = ? WHERE message_id = ?",
            ("4194305:1:killed", time.time() + 600, int(note["id"])),  # above Linux's largest pid
        )
        await rechecks(survivor.bot)
        await settle(fake)
    assert answers(fake, note) == 1


async def note_state(
    ledger: NoteLedger, note: dict, within: float = 30.0, passing: tuple[str, ...] = ("started",)
) -> str:
    """The note's ledger state once the bot has settled it: in none of the `passing` states (a
    claim's 'started'; a note may also be 'pending' on its way to an answer, see the callers)."""
    state = None
    try:
        async with asyncio.timeout(within):
            while True:
                rows = await ledger._conn.execute_fetchall(
                    "SELECT state FROM notes WHERE message_id = ?", (int(note["id"]),)
                )
                if rows and (state := rows[0]["state"]) not in passing:
                    return state
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"note {note['id']} is still {state} after {within:g} s") from None


async def a_killed_turn_answered_behind(fake: FakeDiscord, ledger: NoteLedger, chatter: int) -> dict:
    """A note, `chatter` messages of a raid, then the bot's reply to the note; its row as the
    process killed after the reply left it: claimed, never marked answered."""
    me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)
    note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
    for n in range(chatter):
        await fake.send_message(
            blaze, channel_id=ALLOWED_CHANNEL, guild=True, content=f"raid {n}", dispatch=False
        )
    await fake.send_message(
        me, channel_id=ALLOWED_CHANNEL, guild=True, content="(voice)", reply_to=note, dispatch=False
    )
    await ledger._conn.execute(
        "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
        " VALUES (?, ?, ?, 'started', ?, ?, ?)",
        (int(note["id"]), ALLOWED_CHANNEL, NOVA, "4194305:1:killed", time.time() + 600, time.time()),
    )
    return note


async def test_a_killed_turns_reply_behind_a_busy_channels_chatter_is_not_answered_again(
    settings, fake
) -> None:
    # The reply is within the claim's lease, so the recheck finds it however far back it sits.
    async with running_bot(settings, fake, recheck_seconds=0.2) as survivor:
        await caught_up(survivor.bot)  # only the recheck finds the note
        note = await a_killed_turn_answered_behind(fake, survivor.bot.core.notes, 120)
        assert await note_state(survivor.bot.core.notes, note) == "answered"
        await settle(fake)
    assert answers(fake, note) == 0


@pytest.mark.timeout(600)  # four real processes start (imports, speech workers), one after another
async def test_a_note_in_hand_at_both_deaths_of_another_note_is_still_answered(
    settings, fake, tmp_path
) -> None:
    """The notes a crash cut are taken up again after the restart, the note that crashes native
    code among them: answered beside it, another note would be in hand at its second death too,
    and refused as it is, though it caused neither. They are answered one at a time."""
    log_path = tmp_path / "bot.log"
    crashing = voice_note(2.0)  # not voice_note()'s bytes, which the other note's are
    env = {"TEST_CRASHING_NOTE_SHA256": hashlib.sha256(crashing).hexdigest()}
    fake.identified.clear()
    with bot_process(settings, fake, log_path, env, module="tests.crashing_bot") as process:
        await logged_in(fake, process, log_path)
        # In its turn (its download held) when the crashing note comes.
        good = await fake.send_note(blaze, voice_note(), channel_id=ALLOWED_CHANNEL, guild=True, stall=900)
        began = fake.wait_for(lambda rs: any(r.kind == "cdn" for r in rs), 90)
        await while_it_runs(began, process, log_path, "began the other note's turn", 100)
        bad = await fake.send_note(nova, crashing, channel_id=ALLOWED_CHANNEL, guild=True)
        code = await asyncio.to_thread(process.wait, 120)
        assert code == -signal.SIGSEGV, log_path.read_text()[-4000:]
    fake.cdn_stalls.clear()
    fake.identified.clear()
    with bot_process(settings, fake, log_path, env, module="tests.crashing_bot") as process:
        await logged_in(fake, process, log_path)  # the restart's catch-up takes both up again
        code = await asyncio.to_thread(process.wait, 120)
        assert code == -signal.SIGSEGV, log_path.read_text()[-4000:]
    fake.identified.clear()
    with bot_process(settings, fake, log_path, env, module="tests.crashing_bot") as process:
        await logged_in(fake, process, log_path)

        def told(_: object) -> bool:
            return any(r.content == NOTE_CRASHED for r in fake.replies_to(bad["id"]))

        await while_it_runs(fake.wait_for(told, 90), process, log_path, "told the player", 100)
        answered = fake.wait_for(lambda _: answers(fake, good) >= 1, 60)
        await while_it_runs(answered, process, log_path, "answered the other note", 70)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()[-4000:]
    assert (answers(fake, bad), answers(fake, good)) == (0, 1), log_path.read_text()[-4000:]
    assert not any(r.content == NOTE_CRASHED for r in fake.replies_to(good["id"]))


async def test_a_crashing_notes_refusal_that_discord_fails_is_told_by_a_recheck(
    settings, fake, caplog
) -> None:
    # The note's claim refuses it (a process died in its turn twice) and tells its player once:
    # Discord failing that one line (503) left the note refused for good, its player never told.
    from tests.test_note_ledger import a_dead_pid

    note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:  # as the second process to die in its turn leaves it
        assert await ledger.claim(int(note["id"]), ALLOWED_CHANNEL, str(nova.id))
        await ledger._conn.execute(
            "UPDATE notes SET owner = ?, crashes = ?", (f"{a_dead_pid()}:1:gone", MAX_CRASHES - 1)
        )
    finally:
        await ledger.aclose()
    fake.posts_unavailable = 1  # the refusal's line
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await eventually(lambda: "could not reply in channel" in caplog.text)

        def told(_: object) -> bool:
            return any(r.content == NOTE_CRASHED for r in fake.replies_to(note["id"]))

        await fake.wait_for(told, 30)
        await rechecks(h.bot, 3)
        await settle(fake)
        assert await note_state(h.bot.core.notes, note) == "refused"
    assert [r.content for r in fake.replies_to(note["id"])] == [NOTE_CRASHED]
    assert answers(fake, note) == 0 and h.engine.turns == []
    # Refused twice (at the start's claim, then the recheck's), its ERROR line said once.
    assert caplog.text.count(f"note {note['id']} from {nova.id} not answered: the bot died") == 1


async def test_a_note_a_crash_cut_waiting_behind_another_is_fetched_by_no_recheck(settings, fake) -> None:
    # The notes a dead process had in hand are answered one at a time; one waiting its turn is
    # still claimable in the ledger, and each recheck fetched it again and queued it once more.
    from tests.test_note_ledger import a_dead_pid

    notes = [await fake.send_note(p, voice_note(), guild=True, dispatch=False) for p in (nova, blaze)]
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:  # as a process that died answering both leaves them
        for note, who in zip(notes, (nova, blaze), strict=True):
            assert await ledger.claim(int(note["id"]), ALLOWED_CHANNEL, str(who.id))
        await ledger._conn.execute("UPDATE notes SET owner = ?", (f"{a_dead_pid()}:1:gone",))
    finally:
        await ledger.aclose()
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the first note's turn lasts while the rechecks run
    async with running_bot(settings, fake, engine=engine, recheck_seconds=0.2) as h:
        await rechecks(h.bot, 3)
        fetched = {
            n["id"]: sum(
                1 for r in fake.received if r.kind == "get_message" and r.path.endswith(f"/{n['id']}")
            )
            for n in notes
        }
        engine.hold.set()
        await all_answered(fake, notes)
        await settle(fake)
    assert max(fetched.values()) <= 1, fetched  # the start's catch-up may fetch each once
    assert [answers(fake, n) for n in notes] == [1, 1]


async def test_a_killed_turns_reply_is_looked_for_again_when_discord_fails_the_search(
    settings, fake, caplog
) -> None:
    # Discord fails the read after the note (503) while the recheck looks for the dead process's
    # reply: not knowing is no sign there was none. The note waits for a recheck Discord serves,
    # which finds the reply: it is not answered twice.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    async with running_bot(settings, fake, recheck_seconds=0.2) as survivor:
        await settle(fake)  # the start-up catch-up is done: only the recheck finds the note
        fake.history_unavailable_in.add(ALLOWED_CHANNEL)
        note = await a_killed_turn_answered_behind(fake, survivor.bot.core.notes, 0)
        await fake.wait_for(lambda rs: sum(r.kind == "history" and r.error == 503 for r in rs) >= 3)
        fake.history_unavailable_in.clear()
        assert await note_state(survivor.bot.core.notes, note) == "answered"
        await settle(fake)
    assert answers(fake, note) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [f"could not look for my reply to note {note['id']}: 503 503: Service Unavailable"]


async def test_a_reply_search_past_its_sanity_cap_answers_the_note_and_says_so(
    settings, fake, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="cogs.catch_up")
    async with running_bot(settings, fake, recheck_seconds=0.2) as survivor:
        # load_extension made the cog's module anew: the one the bot runs is in sys.modules.
        monkeypatch.setattr(sys.modules["cogs.catch_up"], "REPLY_SEARCH_AT_MOST", 50)
        await settle(fake)
        note = await a_killed_turn_answered_behind(fake, survivor.bot.core.notes, 120)
        await all_answered(fake, [note], within=25)
        await settle(fake)
    assert answers(fake, note) == 1
    assert f"note {note['id']}: no reply of mine in the 50 messages after it" in caplog.text


async def test_a_killed_turns_note_with_no_reply_within_its_lease_is_answered(settings, fake) -> None:
    # The claim lapsed eight minutes ago; a reply of the bot's to the note posted since is no
    # turn's answer to it (a claim outlives any turn), and the read stops at the lease's end.
    me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)
    async with running_bot(settings, fake, recheck_seconds=0.2) as survivor:
        await settle(fake)
        note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False, ago=600)
        await fake.send_message(
            me, channel_id=ALLOWED_CHANNEL, guild=True, content="(voice)", reply_to=note, dispatch=False
        )
        sent = time.time() - 600
        await survivor.bot.core.notes._conn.execute(
            "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
            " VALUES (?, ?, ?, 'started', ?, ?, ?)",
            (int(note["id"]), ALLOWED_CHANNEL, NOVA, "4194305:1:killed", sent + 120, sent),
        )
        await all_answered(fake, [note], within=25)
        await settle(fake)
    assert answers(fake, note) == 1


async def test_a_running_bot_forgets_old_settled_notes(settings, fake, monkeypatch) -> None:
    # A bot that runs for months prunes its ledger from the recheck, not only at a start.
    from bot import note_ledger

    monkeypatch.setattr(note_ledger, "PRUNE_EVERY_SECONDS", 0.0)  # each recheck, not hourly
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        ledger = h.bot.core.notes
        assert await ledger.claim(5, ALLOWED_CHANNEL, NOVA)
        await ledger.answered(5)
        old = time.time() - note_ledger.KEEP_SETTLED_SECONDS - 1
        await ledger._conn.execute("UPDATE notes SET updated_at = ? WHERE message_id = 5", (old,))

        real, pruned = ledger.prune, asyncio.Event()

        async def prune(now: float | None = None) -> int:
            count = await real(now)
            if count:
                pruned.set()
            return count

        ledger.prune = prune  # type: ignore[method-assign]
        await asyncio.wait_for(pruned.wait(), 30)
        assert not await ledger._conn.execute_fetchall("SELECT 1 FROM notes WHERE message_id = 5")


async def test_a_running_bot_forgets_the_claims_of_complaints_filed_long_ago(settings, fake) -> None:
    # /grievance file's claim on a complaint's words (a hash of player and words) is pruned by the
    # next claim: on a server where nobody files again, from the recheck alone.
    from bot.tools import complaint_key
    from bot.tools.grievance_store import RESUBMIT_SECONDS

    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        store = h.bot.core.grievances.local_store
        words = complaint_key("wallet", "charged twice for gems")
        await store.claim_words(NOVA, words, "discord:1:", RESUBMIT_SECONDS)
        await store.settle_words(NOVA, words, "discord:1:", True, None)
        await store._conn.execute("UPDATE lately_filed SET at = at - ?", (RESUBMIT_SECONDS + 1,))
        await store._conn.commit()
        await rechecks(h.bot)
        assert not await store._conn.execute_fetchall("SELECT 1 FROM lately_filed")


async def test_a_kept_note_deleted_or_left_nowhere_is_given_up_on_not_fetched_again(settings, fake) -> None:
    # Kept for after the restart, then deleted by its player, or its channel deleted: there is
    # nothing to answer, and the recheck must not fetch it again every time until it is old.
    deleted = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
    await fake.delete_message(ALLOWED_CHANNEL, deleted["id"])
    nowhere = discord.utils.time_snowflake(discord.utils.utcnow())  # in a channel deleted since
    gone_channel = 920000000000000099
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        await ledger.keep_for_restart(int(deleted["id"]), ALLOWED_CHANNEL, NOVA)
        await ledger.keep_for_restart(nowhere, gone_channel, str(blaze.id))
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        catch_up = h.bot.get_cog("CatchUp")
        real, rechecks = catch_up.answer_leftovers, asyncio.Semaphore(0)

        async def counted() -> int:
            answered = await real()
            rechecks.release()
            return answered

        catch_up.answer_leftovers = counted
        for _ in range(3):
            await asyncio.wait_for(rechecks.acquire(), 30)
        notes = h.bot.core.notes
        assert not await notes.to_answer(int(deleted["id"])) and not await notes.to_answer(nowhere)
    fetched = [r for r in fake.received if r.kind == "get_message" and r.path.endswith(deleted["id"])]
    assert len(fetched) == 1 and answers(fake, deleted) == 0


async def test_a_kept_note_discord_refuses_to_fetch_is_given_up_with_one_line(settings, fake, caplog) -> None:
    # Another process kept a note from a private thread; the bot was removed from it since, so
    # Discord refuses the fetch (403 50001), and would at every recheck: no answer could go there
    # either. The note is given up at once, in one line, not fetched until it is too old.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    fake.expect_refusals()
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await settle(fake)  # the start-up catch-up is done: only the recheck finds the note
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, joined=True)
        note = await fake.send_note(nova, voice_note(), channel_id=thread, dispatch=False)
        await fake.remove_from_thread(thread)
        await kept_by_another_process(settings, note, thread, str(nova.id))
        assert await expired(h.bot.core.notes, note)
        await settle(fake)  # rechecks go on
    fetched = [
        r for r in fake.refused if r.startswith(f"GET /api/v10/channels/{thread}/messages/{note['id']}")
    ]
    assert len(fetched) == 1 and answers(fake, note) == 0
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("could not fetch note")]
    assert said == [f"could not fetch note {note['id']}: 403 Missing Access; giving it up"]


@pytest.mark.parametrize("told", [True, False], ids=["told", "cache-behind"])
async def test_a_kept_note_in_a_channel_the_bot_may_no_longer_read_is_settled_with_one_line(
    settings, fake, caplog, told
) -> None:
    # An admin took Read Message History from the bot after another process kept a channel note
    # for it: Discord refuses the fetch of one message there (403 50001), as it would at every
    # recheck. The note is settled at once, in one line, not fetched until it is too old. Told of
    # the change, the bot does not ask Discord for what it knows would be refused, and asks its
    # player to send it again (new notes still reach it there); not told, the 403 may as well mean
    # it can no longer post there, and the note is given up.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    caplog.set_level(logging.INFO, logger="cogs.voice")
    fake.expect_refusals()
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await settle(fake)  # the start-up catch-up is done: only the recheck finds the note
        note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        await fake.deny(ALLOWED_CHANNEL, READ_MESSAGE_HISTORY, tell_the_bot=told)
        await kept_by_another_process(settings, note, ALLOWED_CHANNEL, str(nova.id))
        assert await expired(h.bot.core.notes, note)
        await settle(fake)  # rechecks go on
    fetched = [r for r in fake.received if r.kind == "get_message" and r.path.endswith(f"/{note['id']}")]
    assert [r.error for r in fetched] == ([] if told else [50001]) and answers(fake, note) == 0
    said = [r.getMessage() for r in caplog.records if str(note["id"]) in r.getMessage()]
    asked = [r.body.get("content") for r in fake.sent("message", ALLOWED_CHANNEL)]
    if told:
        why = "no Read Message History there, and no answer kept"
        assert said == [f"note {note['id']} from {nova.id} asked for again: {why}"]
        assert asked == [f"<@{nova.id}> {RESTARTING_SEND_AGAIN}"], asked
    else:
        assert said == [f"could not fetch note {note['id']}: 403 Missing Access; giving it up"]
        assert asked == [], asked


async def expired(ledger: NoteLedger, note: dict, within: float = 15.0) -> bool:
    async with asyncio.timeout(within):
        while True:
            rows = await ledger._conn.execute_fetchall(
                "SELECT state FROM notes WHERE message_id = ?", (int(note["id"]),)
            )
            if rows and rows[0]["state"] == "expired":
                return True
            await asyncio.sleep(0.1)


async def test_a_killed_turns_note_whose_reply_search_discord_refuses_is_given_up_in_one_line(
    settings, fake, caplog
) -> None:
    # Another process was killed mid-turn on a note in a private thread; the bot is removed from
    # the thread between the recheck's fetch of the note and its look for a reply. The read is
    # refused (403 Missing Access), as a reply there would be: the note is given up, not answered.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    fake.expect_refusals()
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)  # only the recheck finds the note
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, joined=True)
        # Joining, the bot reads the thread: the note comes after that read.
        await fake.wait_for(lambda rs: any(r.kind == "history" and r.channel_id == thread for r in rs))
        note = await fake.send_note(nova, voice_note(), channel_id=thread, dispatch=False)

        async def removed_after_the_fetch(record: Received) -> None:
            if record.path.endswith(f"/messages/{note['id']}"):
                fake.after_fetch = None
                await fake.remove_from_thread(thread)

        fake.after_fetch = removed_after_the_fetch
        await h.bot.core.notes._conn.execute(
            "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
            " VALUES (?, ?, ?, 'started', ?, ?, ?)",
            (int(note["id"]), thread, NOVA, "4194305:1:killed", time.time() + 600, time.time()),
        )
        assert await expired(h.bot.core.notes, note)
        await settle(fake)
    assert answers(fake, note) == 0
    assert not [r for r in fake.refused if r.startswith(f"POST /api/v10/channels/{thread}/")]
    said = [r.getMessage() for r in caplog.records if str(note["id"]) in r.getMessage()]
    assert said == [f"could not look for my reply to note {note['id']}: 403 Missing Access; giving it up"]


async def test_a_players_reply_to_a_note_a_killed_process_had_is_no_answer(settings, fake) -> None:
    # Another process on the storage claimed the note and was killed mid-turn; meanwhile a player
    # replied to the note. Only a reply of the bot's is its answer: the recheck answers it.
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)  # only the recheck finds the note
        note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        await fake.send_message(
            blaze, channel_id=ALLOWED_CHANNEL, guild=True, content="same here", reply_to=note, dispatch=False
        )
        await h.bot.core.notes._conn.execute(
            "INSERT INTO notes (message_id, place_id, user_id, state, owner, lease_until, updated_at)"
            " VALUES (?, ?, ?, 'started', ?, ?, ?)",
            (int(note["id"]), ALLOWED_CHANNEL, NOVA, "4194305:1:killed", time.time() + 600, time.time()),
        )
        await all_answered(fake, [note], within=25)
        await settle(fake)
    assert answers(fake, note) == 1


async def test_another_bots_notes_sent_while_the_bot_was_down_are_not_answered(settings, fake) -> None:
    robot = InjectedUser(555, "otherbot", bot=True)
    notes = [await fake.send_note(robot, voice_note(), guild=True, dispatch=False) for _ in range(2)]
    player = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
    async with running_bot(settings, fake):
        await all_answered(fake, [player])
        await settle(fake)
    assert [fake.replies_to(n["id"]) for n in notes] == [[], []]


async def test_a_note_is_answered_when_remembering_where_it_came_from_fails(settings, fake, caplog) -> None:
    async with running_bot(settings, fake) as h:

        async def refuse(*_: object) -> None:
            raise sqlite3.OperationalError("database is locked")

        h.bot.core.notes.remember_place = refuse
        note = await fake.send_note(nova, voice_note())
        await all_answered(fake, [note])
    assert answers(fake, note) == 1
    assert "could not remember where note" in caplog.text


async def test_a_busy_ledger_under_many_notes_logs_one_traceback_and_its_end(settings, fake, caplog) -> None:
    # A disk busy or full for a while met every note with a WARNING and its whole traceback.
    caplog.set_level(logging.INFO, logger="cogs.voice")
    async with running_bot(settings, fake) as h:
        kept = h.bot.core.notes.remember_place

        async def refuse(*_: object) -> None:
            raise sqlite3.OperationalError("database is locked")

        h.bot.core.notes.remember_place = refuse
        refused = [await fake.send_note(nova, voice_note()) for _ in range(3)]
        await all_answered(fake, refused)
        h.bot.core.notes.remember_place = kept
        await all_answered(fake, [await fake.send_note(nova, voice_note())])
    said = [r for r in caplog.records if r.name == "cogs.voice" and r.levelno >= logging.INFO]
    failed = [r for r in said if "could not remember where" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING and failed[0].exc_info
    assert sum("where notes came from is remembered again" in r.getMessage() for r in said) == 1


async def test_a_catch_up_that_fails_is_tried_again_and_the_recheck_still_runs(
    settings, fake, caplog
) -> None:
    """A busy disk fails the start-up catch-up: the notes it would have found, and a note another
    process keeps for this one, are still answered while the bot runs, not at some later start."""
    real, calls = NoteLedger.unanswered, []

    async def busy_once(self: NoteLedger) -> list:  # type: ignore[type-arg]
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return await real(self)

    missed = await fake.send_note(nova, voice_note(), guild=True)  # sent while the bot was down
    NoteLedger.unanswered = busy_once  # type: ignore[method-assign]
    try:
        async with running_bot(settings, fake, recheck_seconds=0.2):
            await all_answered(fake, [missed], within=25)
            kept = await fake.send_note(blaze, voice_note(), guild=True, dispatch=False)
            await kept_by_another_process(settings, kept, ALLOWED_CHANNEL, str(blaze.id))
            await all_answered(fake, [kept], within=25)
            await settle(fake)
    finally:
        NoteLedger.unanswered = real  # type: ignore[method-assign]
    assert answers(fake, missed) == answers(fake, kept) == 1
    assert "catch-up failed" in caplog.text


async def test_a_catch_up_failing_each_time_holds_back_no_kept_note(settings, fake, monkeypatch) -> None:
    """A catch-up that fails at every try (here its look-up of the DMs to read) is owed for as
    long as the bot runs: the notes another process keeps for this one are answered meanwhile."""

    tried = asyncio.Event()  # it fails before any request the fake could be waited on for

    async def broken(*_: object) -> list[tuple[int, str | None]]:
        tried.set()
        raise RuntimeError("a look-up that always fails")

    monkeypatch.setattr(NoteLedger, "dms", broken)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        catch_up = h.bot.get_cog("CatchUp")
        await asyncio.wait_for(tried.wait(), 20)
        kept = await fake.send_note(blaze, voice_note(), guild=True, dispatch=False)
        await kept_by_another_process(settings, kept, ALLOWED_CHANNEL, str(blaze.id))
        await all_answered(fake, [kept], within=15)
        await settle(fake)
        assert catch_up._failed  # still owed, still tried
    assert answers(fake, kept) == 1


async def test_a_note_is_answered_when_the_ledger_cannot_record_it(settings, fake, caplog) -> None:
    """A full disk refuses the ledger's writes: the player is answered all the same."""
    async with running_bot(settings, fake) as h:

        async def full(*_: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        h.bot.core.notes.claim = full  # type: ignore[method-assign]
        h.bot.core.notes.answered = full  # type: ignore[method-assign]
        note = await fake.send_note(nova, voice_note())
        await all_answered(fake, [note])
    assert answers(fake, note) == 1
    assert "could not record note" in caplog.text and "could not mark note" in caplog.text


async def test_two_bots_whose_ledger_cannot_record_a_note_answer_it_once(settings, fake, caplog) -> None:
    """The disk fills during an overlapping deploy: both bots get each note and neither ledger
    takes its claim."""

    async def full(*_: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    async with running_bot(settings, fake) as one, running_bot(settings, fake) as two:
        for h in (one, two):
            h.bot.core.notes.claim = full  # type: ignore[method-assign]
            h.bot.core.notes.answered = full  # type: ignore[method-assign]
        notes = [await fake.send_note(p, voice_note(), guild=True) for p in (nova, blaze, quill)]
        await all_answered(fake, notes)
        await settle(fake)
    assert [answers(fake, n) for n in notes] == [1, 1, 1]
    assert "could not record note" in caplog.text


async def test_a_note_answered_unrecorded_before_a_recorded_one_is_not_answered_again(settings, fake) -> None:
    """The disk refused one note's claim, then recovered: after a restart, the catch-up reads the
    channel from before a kept note, and answers there, up to the newest note answered, only the
    notes kept or cut: the unrecorded one is not answered twice."""
    async with running_bot(settings, fake) as h:
        await settle(fake)
        # Kept for after the restart (its process was stopping): the catch-up reads from before it.
        kept = await fake.send_note(blaze, voice_note(), guild=True, dispatch=False)
        ledger = h.bot.core.notes
        await ledger.keep_for_restart(int(kept["id"]), ALLOWED_CHANNEL, str(blaze.id))
        real = ledger.claim

        async def full_once(*args: object) -> bool:
            ledger.claim = real  # type: ignore[method-assign]
            raise sqlite3.OperationalError("database or disk is full")

        ledger.claim = full_once  # type: ignore[method-assign]
        unrecorded = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [unrecorded])
        recorded = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [recorded])
    async with running_bot(settings, fake):
        await all_answered(fake, [kept])
        await settle(fake)
    assert answers(fake, unrecorded) == answers(fake, recorded) == answers(fake, kept) == 1


async def test_a_note_answered_unrecorded_is_not_answered_again_by_a_new_sessions_catch_up(
    settings, fake
) -> None:
    """The disk refuses every claim: a new gateway session's catch-up, which reads every note of
    the last minutes the ledger does not know, must not answer again the one just answered."""
    async with running_bot(settings, fake) as h:

        async def full(*_: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        h.bot.core.notes.claim = full  # type: ignore[method-assign]
        note = await fake.send_note(nova, voice_note(), guild=True)
        await all_answered(fake, [note])
        await settle(fake)
        # What on_ready does on a fresh session after the gateway was away a minute.
        await h.bot.get_cog("CatchUp").catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        await settle(fake)
    assert answers(fake, note) == 1


@pytest.mark.parametrize("answered_by", ["this process", "an earlier process", "this process unrecorded"])
async def test_notes_answered_before_a_new_sessions_catch_up_do_not_count_toward_its_flood_limit(
    settings, fake, answered_by
) -> None:
    """A new gateway session's catch-up reads again the notes answered in the last minutes: the
    ledger (or, when the disk refused their claims, this process) knows them, so the one note
    missed in the gap is answered and its player is not told they sent too many while the bot
    was away. Three notes are the limit: counted twice, the two answered would leave no room."""
    live: list[dict] = []
    if answered_by == "an earlier process":
        async with running_bot(settings, fake, flood_notes=3, flood_seconds=600.0):
            live = [await fake.send_note(nova, voice_note(), guild=True) for _ in range(2)]
            await all_answered(fake, live)
    async with running_bot(settings, fake, flood_notes=3, flood_seconds=600.0) as h:
        await caught_up(h.bot)
        if answered_by == "this process unrecorded":

            async def full(*_: object) -> None:
                raise sqlite3.OperationalError("database or disk is full")

            h.bot.core.notes.claim = full  # type: ignore[method-assign]
        if not live:
            live = [await fake.send_note(nova, voice_note(), guild=True) for _ in range(2)]
            await all_answered(fake, live)
        missed = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        # What on_ready does on a fresh session after the gateway was away a minute.
        await h.bot.get_cog("CatchUp").catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        await all_answered(fake, [missed])
        await settle(fake)
    assert [answers(fake, n) for n in [*live, missed]] == [1, 1, 1]
    told = [r.content for n in [*live, missed] for r in fake.replies_to(n["id"]) if not r.is_voice_message]
    assert not [t for t in told if TOLD_TOO_MANY in t]


async def test_a_note_discord_failed_under_is_answered_by_the_new_sessions_catch_up(settings, fake) -> None:
    # Discord fails under a note's answer (heard live, so weighed) and the session is lost with
    # it: the new session's catch-up finds the note given back and answers it, not the recheck.
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        await caught_up(h.bot)
        await settle(fake)  # and the first recheck
        fake.posts_cut = 1  # the voice message
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await note_state(h.bot.core.notes, note) == "pending"
        await h.bot.get_cog("CatchUp").catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        await all_answered(fake, [note], within=15)
        await settle(fake)
    assert answers(fake, note) == 1


async def test_a_note_a_catch_up_reads_as_it_is_heard_live_is_weighed_against_the_flood_once(
    settings, fake
) -> None:
    """A note sent as a new session's catch-up reads its channel is in that read and comes live
    too; the live claim lands in the ledger just after the catch-up looked there. Over the flood
    limit, it is answered or its player is told they sent too many, not both."""

    def told(note: dict) -> int:
        return len([r for r in fake.replies_to(note["id"]) if TOLD_TOO_MANY in r.content])

    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0) as h:
        await caught_up(h.bot)
        missed = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        as_read = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        claim_lands_just_after_a_read_looked(h.bot.core.notes, int(as_read["id"]))
        # What on_ready does on a fresh session after the gateway was away a minute.
        catching_up = asyncio.create_task(
            h.bot.get_cog("CatchUp").catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        )
        await fake.wait_for(lambda _: fake.sent("history", ALLOWED_CHANNEL)[-1:])
        await fake.dispatch("MESSAGE_CREATE", as_read)
        await catching_up
        await fake.wait_for(lambda _: answers(fake, missed) + told(missed) or None)
        await settle(fake)
    # Each note answered or told, not both; and one of the two answered, as the limit is one.
    assert [answers(fake, n) + told(n) for n in (missed, as_read)] == [1, 1]
    assert answers(fake, missed) + answers(fake, as_read) == 1


async def test_a_turn_cut_while_its_transcript_goes_out_is_not_answered_again(
    settings, fake, monkeypatch, caplog
) -> None:
    """The voice message is out, the transcript waits (Discord's rate limit) when the grace runs
    out: the note is answered, so it is neither told "I'm restarting" nor answered again."""
    import cogs.replies

    real = cogs.replies._send_piece

    async def rate_limited(*piece):  # type: ignore[no-untyped-def]
        await asyncio.sleep(5)
        await real(*piece)

    async with running_bot(settings, fake, shutdown_grace_seconds=0.5) as h:
        monkeypatch.setattr(cogs.replies, "_send_piece", rate_limited)
        note = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda _: answers(fake, note) >= 1 or None)
        h.stop.set()
        await asyncio.wait_for(h.task, 30)
    monkeypatch.setattr(cogs.replies, "_send_piece", real)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await rechecks(h.bot)
        await settle(fake)
    texts = [r.content for r in fake.replies_to(note["id"]) if not r.is_voice_message]
    assert answers(fake, note) == 1 and texts == []
    # Cut, not failed: a stand-in for _send_piece that no longer fits it would fail the turn.
    assert "failed" not in caplog.text


@pytest.mark.timeout(180)  # a real process starts (imports, speech workers): slow on a busy machine
async def test_a_second_sigterm_stops_without_waiting_out_the_grace(settings, fake, tmp_path) -> None:
    log_path = tmp_path / "bot.log"
    fake.cdn_stall_seconds = 600  # the turn waits on its download for as long as the grace
    grace = {"VOXDESK_DISCORD_SHUTDOWN_GRACE_SECONDS": "600"}
    with bot_process(settings, fake, log_path, grace) as process:
        await logged_in(fake, process, log_path)
        note = await fake.send_note(nova, voice_note(), channel_id=ALLOWED_CHANNEL, guild=True)
        await fake.wait_for(lambda rs: any(r.kind == "cdn" for r in rs), 60)
        process.send_signal(signal.SIGTERM)
        await fake.wait_for(lambda _: "finishing 1 note" in log_path.read_text() or None, 30)
        process.send_signal(signal.SIGTERM)  # the operator presses Ctrl-C again
        assert await asyncio.to_thread(process.wait, 60) == 0, log_path.read_text()
    assert "asked again to stop" in log_path.read_text()
    assert any(kept_for_later(r, note) for r in fake.received)  # answered after the restart


@pytest.mark.timeout(180)  # a real process starts (imports, speech workers): slow on a busy machine
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_finishes_the_note_in_flight_closes_every_database_and_exits_0(
    settings, fake, tmp_path, stop_signal
) -> None:
    # systemctl stop and docker stop send SIGTERM, Ctrl-C SIGINT, to `python -m bot run`.
    log_path = tmp_path / "bot.log"
    grace = {"VOXDESK_DISCORD_SHUTDOWN_GRACE_SECONDS": "120"}
    with bot_process(settings, fake, log_path, grace) as process:
        await logged_in(fake, process, log_path)
        note = await fake.send_note(nova, voice_note(), stall=2)  # in flight: its download waits
        await fake.wait_for(lambda rs: any(r.kind == "cdn" for r in rs), 60)
        process.send_signal(stop_signal)
        assert await asyncio.to_thread(process.wait, 90) == 0, log_path.read_text()
    log = log_path.read_text()
    assert answers(fake, note) == 1, log
    assert not any(kept_for_later(r, note) for r in fake.received)
    # SQLite removes a database's WAL file when its last connection closes.
    assert sorted(p.name for p in settings.storage_dir.glob("*-wal")) == []
    assert "Traceback" not in log and "cancelled" not in log, log
    assert "stopped" in log.splitlines()[-1], log


async def test_a_stop_during_start_up_ends_it_before_logging_in(settings, fake, monkeypatch, caplog) -> None:
    import bot.app
    from cogs.runner import serve
    from tests.discord_harness import discord_settings
    from tests.fakes.discord_server import TOKEN

    real, stop = bot.app.build_app, asyncio.Event()

    async def loading(*args: object) -> object:
        stop.set()  # SIGTERM while the speech models load
        await asyncio.sleep(5)
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(bot.app, "build_app", loading)
    with caplog.at_level(logging.INFO, logger="cogs.runner"):
        await asyncio.wait_for(serve(discord_settings(settings, fake), TOKEN, stop=stop), 30)
    assert "stopped while starting" in caplog.text
    assert fake.identify_payloads == []


async def test_a_start_up_being_stopped_when_the_run_is_cancelled_ends_cancelled(
    settings, fake, monkeypatch, caplog
) -> None:
    import bot.app
    from cogs.runner import serve
    from tests.discord_harness import discord_settings
    from tests.fakes.discord_server import TOKEN

    stop, cut, released = asyncio.Event(), asyncio.Event(), asyncio.Event()
    loads: list[asyncio.Task[object]] = []

    async def loading(*args: object) -> object:
        loads.append(asyncio.current_task())  # type: ignore[arg-type]
        stop.set()  # SIGTERM while the speech models load
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cut.set()
            await released.wait()  # what it had opened takes a moment to close
            raise
        raise AssertionError("unreachable")

    monkeypatch.setattr(bot.app, "build_app", loading)
    with caplog.at_level(logging.INFO, logger="cogs.runner"):
        serving = asyncio.create_task(serve(discord_settings(settings, fake), TOKEN, stop=stop))
        await cut.wait()
        serving.cancel()  # the run itself is cancelled while it waits for that
        with pytest.raises(asyncio.CancelledError):
            await serving
    released.set()
    await asyncio.wait(loads)
    assert "stopped while starting" not in caplog.text


async def test_closing_the_gateway_cancelled_ends_cancelled_and_still_closes_the_client() -> None:
    from cogs.runner import close_gateway

    cut, released, closed = asyncio.Event(), asyncio.Event(), []

    class Client:
        async def close(self) -> None:
            closed.append(True)

    async def reading() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cut.set()
            await released.wait()  # the reader takes a moment to stop
            raise

    connection = asyncio.create_task(reading())
    closing = asyncio.create_task(close_gateway(Client(), connection))  # type: ignore[arg-type]
    await cut.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    released.set()
    await asyncio.wait({connection})
    assert closed == [True]


def test_a_catch_up_owed_is_cleared_only_by_one_of_its_kind_that_reads_as_far_back() -> None:
    """A failed start-up catch-up (None: from each place's newest note handled) is owed until
    another start-up's succeeds; a gateway outage's (from a time) until one from as early does.
    Neither pays the other."""
    import datetime

    from cogs.catch_up import _covers

    drop = datetime.datetime(2026, 12, 5, 6, 0, tzinfo=datetime.UTC)
    later = drop + datetime.timedelta(minutes=5)
    assert _covers(None, None) and _covers(drop, later) and _covers(drop, drop)
    assert not _covers(drop, None) and not _covers(None, drop) and not _covers(later, drop)


async def test_a_start_ups_catch_up_and_an_outages_are_owed_apart() -> None:
    """A start-up catch-up fails, then a gateway outage's fails as well: both are owed, as
    neither reads all the other would, and each is paid only by one of its kind."""
    from types import SimpleNamespace

    from cogs.catch_up import CatchUp, Owed

    drop = datetime.datetime(2026, 12, 5, 6, 0, tzinfo=datetime.UTC)
    bot = SimpleNamespace(discord_settings=SimpleNamespace(recheck_seconds=30.0), get_cog=lambda name: None)
    cog = CatchUp(bot)  # type: ignore[arg-type]
    cog.recheck = SimpleNamespace(is_running=lambda: True)  # type: ignore[assignment]
    outcome: list[Exception | None] = []

    async def reading(*owed: object) -> None:
        if failure := outcome.pop(0):
            raise failure

    cog._catch_up = reading  # type: ignore[method-assign]
    outcome += [OSError("disk busy"), OSError("disk busy"), OSError("disk busy"), None, None]
    await cog.catch_up(None)
    await cog.catch_up(drop + datetime.timedelta(minutes=5))
    await cog.catch_up(drop)
    assert cog._failed == [Owed(None), Owed(drop)]
    await cog.catch_up(None)  # the start-up's read succeeds: the outage's is still owed
    assert cog._failed == [Owed(drop)]
    await cog.catch_up(drop)
    assert cog._failed == []


async def test_a_catch_up_pays_nothing_owed_after_it_began() -> None:
    """An outage's catch-up is still reading when the gateway drops again and the next session's
    catch-up fails for one channel: the first may have read that channel before the notes of the
    second outage were sent, so its success does not pay what the second owes."""
    from types import SimpleNamespace

    from cogs.catch_up import CatchUp, Owed, PlacesUnread

    first_drop = datetime.datetime(2026, 12, 5, 6, 0, tzinfo=datetime.UTC)
    second_drop = first_drop + datetime.timedelta(minutes=5)
    bot = SimpleNamespace(discord_settings=SimpleNamespace(recheck_seconds=30.0), get_cog=lambda name: None)
    cog = CatchUp(bot)  # type: ignore[arg-type]
    cog.recheck = SimpleNamespace(is_running=lambda: True)  # type: ignore[assignment]
    reading, read = asyncio.Event(), asyncio.Event()

    async def catching_up(since: datetime.datetime | None, *_: object) -> None:
        if since == first_drop:
            reading.set()
            await read.wait()
        else:
            raise PlacesUnread({OTHER_CHANNEL})

    cog._catch_up = catching_up  # type: ignore[method-assign]
    first = asyncio.create_task(cog.catch_up(first_drop))
    await reading.wait()
    await cog.catch_up(second_drop)
    owed = [Owed(second_drop, frozenset({OTHER_CHANNEL}))]
    assert cog._failed == owed
    read.set()
    await first
    assert cog._failed == owed
    cog._catch_up = lambda *_: asyncio.sleep(0)  # type: ignore[method-assign]
    await cog.catch_up(owed[0].since, owed[0].places, owed[0].listings)  # the recheck's, begun since
    assert cog._failed == []


async def test_places_gone_leave_nothing_owed_in_memory() -> None:
    """Over weeks, many places a catch-up owed a read go (threads deleted, channels the bot no
    longer sees): paid on disk as they are found gone, nor kept owed in memory for ever."""
    from types import SimpleNamespace

    from cogs.catch_up import CatchUp, _Reading

    async def nothing(*_: object) -> None:
        return None

    async def gone(place_id: int) -> None:
        response = SimpleNamespace(status=404, reason="Not Found")
        raise discord.NotFound(response, {"code": 10003, "message": "Unknown Channel"})  # type: ignore[arg-type]

    paid: list[int] = []

    async def read_through(place_id: int, *_: object) -> None:
        paid.append(place_id)

    notes = SimpleNamespace(owe_reads=nothing, read_through=read_through, forget_place=nothing)
    bot = SimpleNamespace(
        discord_settings=SimpleNamespace(recheck_seconds=30.0),
        get_cog=lambda name: None,
        get_channel=lambda place_id: None,
        fetch_channel=gone,
        core=SimpleNamespace(notes=notes),
    )
    cog = CatchUp(bot)  # type: ignore[arg-type]
    now = datetime.datetime.now(datetime.UTC)
    places = range(10_000, 20_000)
    for place_id in places:  # each owed by a catch-up of its own, as weeks of reconnects owe them
        reading = _Reading(None, None, now, now, [], {}, set(), {}, set(), set())  # type: ignore[arg-type]
        await cog._owe_on_disk(notes.owe_reads([place_id], 0.0), [place_id])
        if place_id % 2:
            await cog._read(reading, place_id, {}, set())  # Discord says it is gone (404)
        else:
            await cog._refused(reading, place_id, "404 Not Found", True)
    assert paid == list(places)
    assert len(cog._last_owed) == 0


async def test_discord_out_of_reach_through_many_rechecks_is_one_warning_one_end_and_no_traceback(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The network to Discord is down through many rechecks; each tries the catch-up owed, then
    # finds no note left over, which needs no request of Discord and tells nothing of its reach.
    # An outage of Discord (or of the network) is no bug: one warning, no traceback, and one line
    # when the catch-up reaches Discord again, not a pair per recheck.
    import aiohttp

    reads = discord.abc.Messageable.history
    out_of_reach = True

    def history(self, *args, **kwargs):
        if out_of_reach:
            raise aiohttp.ClientOSError(104, "Connection reset by peer")
        return reads(self, *args, **kwargs)

    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    async with running_bot(settings, fake, recheck_seconds=0.1) as h:
        cog = h.bot.get_cog("CatchUp")
        monkeypatch.setattr(discord.abc.Messageable, "history", history)
        await cog.catch_up()

        def tries() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "could not reach Discord" in r.getMessage()]

        await eventually(lambda: len(tries()) >= 8)
        out_of_reach = False
        await eventually(lambda: not cog._failed)
    said = [r for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.INFO]
    assert tries()[0].levelno == logging.WARNING
    assert [r.levelno for r in tries()].count(logging.WARNING) == 1
    assert (
        tries()[0]
        .getMessage()
        .startswith("catch-up could not reach Discord (ClientOSError: [Errno 104] Connection reset by peer)")
    )
    assert [r.getMessage() for r in said].count("Discord answers the catch-up again") == 1
    assert not [
        r for r in caplog.records if r.name == "cogs.catch_up" and (r.exc_info or r.levelno >= logging.ERROR)
    ]


async def test_a_turn_cut_by_a_stop_is_marked_for_later_not_as_failed(settings, fake) -> None:
    # The cut turn is answered after the restart, which takes its ⏳ off but not a ⚠️: one put on
    # beside the ⏳ would stay on a note that got its answer.
    failed = "\N{WARNING SIGN}"
    (note,) = await cut_by_a_stop(settings, fake, nova, guild=False)
    marks = [
        r.body["emoji"]
        for r in fake.received
        if r.kind == "reaction_add" and r.body["message_id"] == note["id"]
    ]
    assert LATER in marks
    assert failed not in marks, marks


@contextlib.contextmanager
def ledger_refuses(settings: Settings, state: str) -> Iterator[None]:
    """The notes ledger's file refuses to set any note to `state` (as a full disk, or a database
    busy past its timeout, refuses a write), until the block ends."""
    db = sqlite3.connect(settings.storage_dir / "notes.db", timeout=30)
    try:
        db.execute(
            f"CREATE TRIGGER refuse_{state} BEFORE UPDATE OF state ON notes WHEN NEW.state = '{state}'"
            " BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
        )
        yield
    finally:
        db.execute(f"DROP TRIGGER IF EXISTS refuse_{state}")
        db.close()


async def test_a_note_discord_failed_under_whose_release_failed_is_answered_by_the_recheck(
    settings, fake, caplog
) -> None:
    # Discord fails the answer and its apology, and the ledger then refuses to give the note back:
    # it stays claimed by this running process, whose recheck must answer it all the same.
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await settle(fake)
        with ledger_refuses(h.settings, "pending"):
            fake.posts_unavailable = 2  # the voice message, then its words as text
            note = await fake.send_note(nova, voice_note(), guild=True)
            await eventually(lambda: f"could not mark note {note['id']}" in caplog.text)
            # Rechecks while the ledger still refuses: the note is not answered meanwhile.
            rechecks = h.bot.get_cog("CatchUp").recheck
            seen = rechecks.current_loop
            await eventually(lambda: rechecks.current_loop >= seen + 3)
            assert answers(fake, note) == 0 and len(h.engine.turns) == 1
        await all_answered(fake, [note], within=15)
        assert await note_state(h.bot.core.notes, note) == "answered"
        await settle(fake)
    assert answers(fake, note) == 1
    assert len(h.engine.turns) == 1  # the answer made is sent again, not heard again


async def test_a_recheck_that_overran_is_not_made_up_for_by_rechecks_back_to_back(settings, fake) -> None:
    # Aimed at the last recheck's wall-clock time plus the interval (discord.py's tasks.loop), one
    # that overran (a catch-up read through an outage; a host resumed from sleep or a clock set
    # forward, alike) was followed by as many rechecks back to back as it had missed, each asking
    # Discord and writing to disk with no pause between.
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        cog = h.bot.get_cog("CatchUp")
        starts: list[float] = []
        look = cog.answer_leftovers

        async def overrunning() -> int:
            starts.append(time.monotonic())
            if len(starts) == 1:
                await asyncio.sleep(1.0)  # five intervals
            return await look()

        cog.answer_leftovers = overrunning  # type: ignore[method-assign]
        await eventually(lambda: len(starts) >= 5)
    # A lower bound only, which a busy machine cannot break: it spaces the rechecks more.
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts[1:])]
    assert min(gaps) >= 0.2 * 0.9, gaps


async def test_a_recheck_failing_alike_at_every_run_is_said_once(caplog) -> None:
    # A fault that fails every recheck (a bug, a broken file) was a traceback every
    # recheck_seconds for as long as it lasted: 2,880 a day at the default 30 s.
    from cogs.catch_up import Every

    runs = 0

    async def failing() -> None:
        nonlocal runs
        runs += 1
        if runs <= 5:
            raise RuntimeError("the ledger is broken")

    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    every = Every(0.01, failing, "recheck")
    every.start()
    try:
        await eventually(lambda: every.current_loop >= 7)
    finally:
        await every.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info, [r.getMessage() for r in errors]
    again = [r for r in caplog.records if r.levelno == logging.DEBUG and r.name == "cogs.catch_up"]
    assert len(again) == 4 and not any(r.exc_info for r in again)  # no traceback at each run
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == ["recheck works again"]
    await eventually(lambda: not every.is_running())  # cancelled: it ends


async def test_a_recheck_run_that_meets_a_stray_cancellation_does_not_end_the_rechecks() -> None:
    # A run awaiting something another task cancelled got its CancelledError: the recheck ended,
    # unsaid, and the notes kept for it were never answered. Cancelled itself, it still ends.
    from cogs.catch_up import Every

    runs = 0
    held = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()
            await cancelled
        if runs == 3:
            await held.wait()  # cancelled here, mid-run

    every = Every(0.01, work, "recheck")
    every.start()
    try:
        await eventually(lambda: runs >= 3)
    finally:
        await every.stop()
    await eventually(lambda: not every.is_running())
    assert every.current_loop == 2


async def test_a_note_answered_whose_mark_failed_is_not_answered_again_by_the_recheck(
    settings, fake, caplog
) -> None:
    # The answer went out and the ledger refused to mark it answered: still this process's claim,
    # which no recheck hands out again, however many run.
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await settle(fake)
        with ledger_refuses(h.settings, "answered"):
            note = await fake.send_note(nova, voice_note(), guild=True)
            await eventually(lambda: f"could not mark note {note['id']}" in caplog.text)
        rechecks = h.bot.get_cog("CatchUp").recheck
        seen = rechecks.current_loop
        await eventually(lambda: rechecks.current_loop >= seen + 5)
        await settle(fake)
    assert answers(fake, note) == 1 and len(h.engine.turns) == 1


@contextlib.contextmanager
def ledger_refuses_new_notes(settings: Settings) -> Iterator[None]:
    """The notes ledger's file refuses to take in any note (a claim, or a note given back), as a
    full disk refuses a write, until the block ends."""
    db = sqlite3.connect(settings.storage_dir / "notes.db", timeout=30)
    try:
        db.execute(
            "CREATE TRIGGER refuse_new BEFORE INSERT ON notes"
            " BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
        )
        yield
    finally:
        db.execute("DROP TRIGGER IF EXISTS refuse_new")
        db.close()


async def test_a_note_answered_unrecorded_that_discord_failed_is_answered_by_the_recheck(
    settings, fake, caplog
) -> None:
    # The ledger refuses the note's claim, so it is answered unrecorded; Discord fails that answer
    # and its apology: the running bot's recheck must answer it once the ledger takes it again.
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await settle(fake)
        with ledger_refuses_new_notes(h.settings):
            fake.posts_unavailable = 2  # the voice message, then its words as text
            note = await fake.send_note(nova, voice_note(), guild=True)
            await eventually(lambda: "got no answer because Discord failed" in caplog.text)
            assert f"could not record note {note['id']}" in caplog.text
            # Rechecks while the ledger still refuses: the note is not answered meanwhile.
            rechecks = h.bot.get_cog("CatchUp").recheck
            seen = rechecks.current_loop
            await eventually(lambda: rechecks.current_loop >= seen + 3)
            assert answers(fake, note) == 0 and len(h.engine.turns) == 1
        await all_answered(fake, [note], within=15)
        assert await note_state(h.bot.core.notes, note) == "answered"
        seen = rechecks.current_loop
        await eventually(lambda: rechecks.current_loop >= seen + 5)
        await settle(fake)
    assert answers(fake, note) == 1
    assert len(h.engine.turns) == 1  # the answer made is sent again, not heard again


async def test_old_notes_a_start_ups_read_failed_past_are_counted_once(settings, fake, caplog) -> None:
    # A place quiet since before the window: the start-up reads it from the last note answered,
    # counting the notes too old to answer on its first page, and Discord fails the second page.
    # Each recheck reads it again from there: the same notes are no news.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    async with running_bot(settings, fake):
        seen = await fake.send_note(nova, voice_note(), guild=True, ago=180)
        await all_answered(fake, [seen])
    for _ in range(3):
        await fake.send_note(nova, voice_note(), guild=True, ago=120)
    for _ in range(100):
        await fake.send_message(blaze, channel_id=ALLOWED_CHANNEL, guild=True, content="gg", ago=120)
    after_seen = sorted(m for m in fake.messages[ALLOWED_CHANNEL] if m > int(seen["id"]))
    fake.history_unavailable_after[ALLOWED_CHANNEL] = after_seen[99]  # the first page's last
    async with running_bot(settings, fake, catch_up_minutes=1, recheck_seconds=0.1):
        await fake.wait_for(lambda rs: sum(r.kind == "history" and r.error == 503 for r in rs) >= 5)
        fake.history_unavailable_after.clear()
        await eventually(lambda: "catch-up: Discord serves every place again" in caplog.text)
        await settle(fake)
    counted = [r.getMessage() for r in caplog.records if "older than" in r.getMessage()]
    assert counted == ["catch-up: 3 note(s) older than 1 minutes left unanswered"], counted


async def test_places_unread_under_a_catch_up_owed_of_every_place_say_every_place(
    settings, fake, caplog
) -> None:
    # An outage's catch-up failed for the ledger (every place owed from then); a later one is
    # refused one channel by Discord: what is owed is still every place, not "0 place(s)".
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    async with running_bot(settings, fake, recheck_seconds=3600) as h:
        await settle(fake)
        catch_up, ledger = h.bot.get_cog("CatchUp"), h.bot.core.notes
        real = ledger.unanswered

        async def busy() -> None:
            raise sqlite3.OperationalError("database is locked")

        ledger.unanswered = busy  # type: ignore[method-assign]
        earlier = discord.utils.utcnow() - datetime.timedelta(minutes=2)
        await catch_up.catch_up(earlier)
        ledger.unanswered = real  # type: ignore[method-assign]
        fake.history_unavailable_in.add(ALLOWED_CHANNEL)
        await catch_up.catch_up(earlier + datetime.timedelta(minutes=1))
        fake.history_unavailable_in.clear()
    owed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("catch-up: ")]
    owed = [m for m in owed if "tried again every" in m]
    assert owed == ["catch-up: every place to read again; tried again every 3600 s"], owed


async def test_a_note_given_back_then_answered_unrecorded_is_not_answered_again_after_a_restart(
    settings, fake, caplog
) -> None:
    # Discord failed its first answer, unrecorded, and the note was given back 'pending' once the
    # ledger took new notes again; the recheck's claim of it is refused in turn, so it is answered
    # unrecorded again: that answer must settle its row, or the restart answers it a second time.
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await settle(fake)
        with ledger_refuses(h.settings, "started"):
            with ledger_refuses_new_notes(h.settings):
                fake.posts_unavailable = 2  # the voice message, then its words as text
                note = await fake.send_note(nova, voice_note(), guild=True)
                await eventually(lambda: f"could not mark note {note['id']}" in caplog.text)
            await all_answered(fake, [note], within=15)
            await rechecks(h.bot)  # (no settle: without its row settled, each recheck fetches it)
        assert caplog.text.count(f"could not record note {note['id']}") == 2
        assert len(h.engine.turns) == 1  # sent again, not heard again
    async with running_bot(settings, fake, recheck_seconds=0.2) as again:
        await rechecks(again.bot)
        await settle(fake)
    assert answers(fake, note) == 1 and len(again.engine.turns) == 0


async def test_a_note_another_bot_claimed_is_not_answered_when_this_ones_claim_fails(
    settings, fake, caplog
) -> None:
    # A bot overlapping this one on the same storage claimed the note; this one's claim fails (a
    # database busy past its timeout): no lock in the kernel holds the note, only the ledger's row.
    caplog.set_level(logging.INFO, logger="cogs.voice")
    async with running_bot(settings, fake) as h:
        await settle(fake)
        other = await NoteLedger.open(h.settings.storage_dir / "notes.db")
        try:
            note = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
            assert await other.claim(int(note["id"]), ALLOWED_CHANNEL, NOVA)

            async def busy(*_: object) -> bool:
                raise sqlite3.OperationalError("database is locked")

            h.bot.core.notes.claim = busy  # type: ignore[method-assign]
            await fake.dispatch("MESSAGE_CREATE", note)
            elsewhere = f"note {note['id']} from {nova.id} is answered elsewhere"
            await eventually(lambda: elsewhere in caplog.text or h.engine.turns)
            await settle(fake)
        finally:
            await other.aclose()
    assert answers(fake, note) == 0 and len(h.engine.turns) == 0


async def test_a_grievance_housekeeping_that_fails_at_every_recheck_is_said_once_in_a_line(
    settings, fake, caplog
) -> None:
    # A claims file the store can no longer write (a full disk) fails every recheck: a traceback at
    # each one would bury the log; said once, again only after it worked in between.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    async with running_bot(settings, fake, channels=[ALLOWED_CHANNEL], recheck_seconds=3600.0) as h:
        await settle(fake)
        cog = h.bot.get_cog("CatchUp")
        store = h.bot.core.grievances.local_store
        works = store.housekeeping

        async def fails(now: float | None = None) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        store.housekeeping = fails
        caplog.clear()
        for _ in range(3):
            await cog._recheck()
        store.housekeeping = works
        await cog._recheck()
        store.housekeeping = fails
        await cog._recheck()
    said = [r for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.WARNING]
    assert [r.exc_info for r in said] == [None, None], [r.getMessage() for r in said]
    assert all("database or disk is full" in r.getMessage() for r in said)


async def test_kept_notes_are_answered_while_a_guild_is_in_an_outage(settings, fake, caplog) -> None:
    # The guild is unavailable at the start (READY lists it so, no GUILD_CREATE comes), while the
    # REST API answers for its channels: a channel fetched by id has a guild with no member for
    # the bot, whose permissions there are not known. A channel note kept by another process
    # waits for its guild; the notes kept after it (a DM) are answered all the same.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    in_channel = await fake.send_note(blaze, voice_note(), guild=True, dispatch=False)
    in_dm = await fake.send_note(nova, voice_note(), dispatch=False)
    await kept_by_another_process(settings, in_channel, ALLOWED_CHANNEL, str(blaze.id))
    await kept_by_another_process(settings, in_dm, dm_channel_id(nova.id), str(nova.id))
    fake.guild_withheld = True
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await all_answered(fake, [in_dm])
        await rechecks(h.bot)
        assert answers(fake, in_channel) == 0
        rows = await h.bot.core.notes._conn.execute_fetchall(
            "SELECT state FROM notes WHERE message_id = ?", (int(in_channel["id"]),)
        )
        assert [r["state"] for r in rows] != ["expired"]  # not given up: its guild comes back
        await fake.dispatch("GUILD_CREATE", fake.guild_payload())
        await all_answered(fake, [in_channel])
    assert "failed" not in caplog.text, caplog.text


async def test_a_note_queued_as_a_new_session_begins_in_a_guild_outage_is_answered(
    settings, fake, caplog
) -> None:
    # The session is lost while a player's second channel note waits behind the first, and the
    # new session's READY lists the guild unavailable, with no channels, its GUILD_CREATE held back
    # by an outage (only late, without one). The channel is not gone: nothing said it was, and the
    # REST API still answers for it. Judged gone, the note would be settled as unanswerable for good.
    caplog.set_level(logging.INFO, logger="cogs.voice")
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine):
        first = await fake.send_note(nova, voice_note(), guild=True)
        await engine.until_asked(1)
        queued = await fake.send_note(nova, voice_note(), guild=True)
        await fake.read_by_the_bot()
        identified = len(fake.identify_payloads)
        fake.guild_withheld = True
        await fake.lose_the_session()
        await fake.wait_for(lambda _: len(fake.identify_payloads) > identified and fake.bot_connected, 60)
        await fake.read_by_the_bot()  # READY parsed: the guild is unavailable to the bot
        engine.hold.set()
        await all_answered(fake, [first])
        await settle(fake)
        assert [answers(fake, n) for n in (first, queued)] == [1, 1]
        await fake.dispatch("GUILD_CREATE", fake.guild_payload())  # the outage ends
        await settle(fake)
        assert [answers(fake, n) for n in (first, queued)] == [1, 1]
    assert "is gone" not in caplog.text


async def test_a_token_revoked_while_running_stops_the_bot_as_a_refused_token_not_a_crash(
    settings, fake
) -> None:
    """Discord closes the gateway with 4004 when the token is reset: `run` stopped on "an error it
    does not handle" with a traceback (exit 1); it is the refused token's one line and exit 2."""
    with pytest.raises(discord.LoginFailure):
        async with running_bot(settings, fake) as h:
            await fake.revoke_token()
            await asyncio.wait({h.task}, timeout=30)


async def _first_connection_refused(settings: Settings, fake: FakeDiscord, code: int) -> BaseException:
    """What serve() ends on when Discord closes the bot's first IDENTIFY with `code`."""
    from cogs.runner import serve
    from tests.discord_harness import TOKEN, discord_settings

    fake.identify_refused_with = code
    task = asyncio.create_task(
        serve(discord_settings(settings, fake), TOKEN, stop=asyncio.Event(), engine=FrontendEngine())
    )
    await asyncio.wait({task}, timeout=60)
    assert task.done(), "serve() went on after the gateway refused the bot"
    assert fake.identify_payloads, "the bot never identified"
    assert task.exception() is not None
    return task.exception()


@pytest.mark.parametrize("code", [4010, 4011, 4012, 4013])
async def test_a_gateway_refusing_the_bots_identify_ends_in_one_line_saying_what_to_do(
    settings, fake, code
) -> None:
    """4010 to 4013 (a bot in 2,500 servers without shards, intents or a gateway version Discord
    does not take) ended `run` on "an error it does not handle", a ConnectionClosed traceback and
    exit 1; a restart sends the same IDENTIFY, so each is one line and an exit status of its own."""
    from cogs.runner import GATEWAY_REFUSED, GatewayRefused

    refused = await _first_connection_refused(settings, fake, code)
    assert isinstance(refused, GatewayRefused), repr(refused)
    line = str(refused)
    assert f"({code}, " in line and f"exit status {GATEWAY_REFUSED}" in line and "\n" not in line, line
    if code == 4011:
        assert "2,500 servers" in line and "without shards" in line, line


def test_run_exits_with_its_own_status_when_the_gateway_refuses_the_bot(
    monkeypatch, settings, caplog
) -> None:
    from cogs import runner
    from cogs.runner import GatewayRefused
    from tests.discord_harness import TOKEN

    async def refused(*args, **kwargs):
        raise GatewayRefused(4011)

    monkeypatch.setattr(runner, "serve", refused)
    monkeypatch.setattr(runner, "use_discord_logging", lambda level: None)
    caplog.set_level(logging.INFO, logger="cogs")
    assert runner.run(settings.replace(secrets={"discord_token": TOKEN})) == runner.GATEWAY_REFUSED == 7
    (said,) = [r for r in caplog.records if "4011" in r.getMessage()]
    assert said.levelno == logging.ERROR and said.exc_info is None
    assert "sharding required" in said.getMessage()


async def test_the_message_content_intent_refused_at_the_first_identify_is_not_said_withdrawn_while_running(
    settings, fake, caplog
) -> None:
    """Granted at login, refused at the first IDENTIFY (switched off in the portal in between):
    the one line said it was switched off "while the bot ran", before it had run at all."""
    caplog.set_level(logging.INFO)
    refused = await _first_connection_refused(settings, fake, 4014)
    assert isinstance(refused, discord.PrivilegedIntentsRequired), repr(refused)
    (said,) = [r.getMessage() for r in caplog.records if "4014" in r.getMessage()]
    assert "while the bot ran" not in said, said
    assert "between the bot's login and its first connection" in said, said


async def test_voice_messages_without_a_note_sent_while_the_bot_was_down_are_said_as_live(
    settings, fake, caplog
) -> None:
    # A voice message with no audio, or with an attachment lacking its waveform where only voice
    # messages count: live, it is a line in the log and the player in a DM is asked to send it
    # again. Read back by the catch-up it is said and told the same, or the player waits for an
    # answer that never comes.
    from bot.sentences import VOICE_WITHOUT_AUDIO

    caplog.set_level(logging.INFO, logger="cogs.voice")
    (dm,) = await known_dms(settings, fake, 1, 993_000_000_000_000_000)
    player = InjectedUser(993_000_000_000_000_000, "player0")
    bare = await fake.send_message(player, channel_id=dm, guild=False, flags=VOICE_FLAG, dispatch=False)
    url = f"{fake.url}/attachments/1/1/voice-message.ogg"
    unshaped = {"id": "1", "filename": "voice-message.ogg", "content_type": "audio/ogg", "size": 9000}
    watched = await fake.send_message(
        blaze,
        channel_id=ALLOWED_CHANNEL,
        guild=True,
        flags=VOICE_FLAG,
        attachments=[{**unshaped, "url": url, "proxy_url": url}],
        dispatch=False,
    )
    async with running_bot(settings, fake, any_audio_attachment=False):
        (told,) = await fake.wait_for(lambda _: fake.replies_to(bare["id"]))
        await settle(fake)
    assert told.content == VOICE_WITHOUT_AUDIO
    assert f"voice message {bare['id']} from {player.id} came without its audio: not answered" in caplog.text
    line = f"voice message {watched['id']} from {blaze.id} has no waveform"
    assert caplog.text.count(line) == 1
    assert fake.replies_to(watched["id"]) == []  # told only where a hint may go


async def test_fetches_of_notes_another_process_left_wait_their_turn_in_the_catch_ups_pace(
    settings, fake
) -> None:
    # A process stopped in a raid leaves hundreds of notes kept: fetched back to back, they would
    # take the global rate limit the answers need, which the catch-up's reads are paced to leave
    # them. One read every 100 s: the start's read of the channel takes the first.
    async with running_bot(
        settings, fake, recheck_seconds=0.2, catch_up_reads_per_second=0.01, shutdown_grace_seconds=0.1
    ) as h:
        await caught_up(h.bot)  # only the recheck finds the note
        catch_up = h.bot.get_cog("CatchUp")
        turn = catch_up._next_read
        kept = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)
        await kept_by_another_process(settings, kept, ALLOWED_CHANNEL, NOVA)
        fetched = lambda: [r for r in fake.received if r.kind == "get_message"]  # noqa: E731
        await eventually(lambda: catch_up._next_read > turn or fetched())
        assert not fetched()


async def test_a_reconnect_as_the_bot_starts_does_not_end_the_starts_catch_up(
    settings, fake, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh gateway session while the start's catch-up still reads: the outage's catch-up, ending
    # first, must neither set caught_up nor start the recheck, whose fetches of the notes left over
    # the start's read is about to claim would be spent for nothing.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    reading, release = asyncio.Event(), asyncio.Event()
    real = NoteLedger.last_handled

    async def last_handled(self: NoteLedger, *args: Any, **kwargs: Any) -> int | None:
        reading.set()  # only a start's catch-up asks: an outage's reads from when it began
        await asyncio.wait_for(release.wait(), 30)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(NoteLedger, "last_handled", last_handled)
    async with running_bot(settings, fake) as h:
        catch_up = h.bot.get_cog("CatchUp")
        try:
            await asyncio.wait_for(reading.wait(), 30)
            await fake.lose_the_session()
            await eventually(lambda: "catch-up: answering 0 note(s)" in caplog.text)
            assert not catch_up.caught_up.is_set()
            assert not catch_up.recheck.is_running()
        finally:
            release.set()
        await caught_up(h.bot)
        assert catch_up.recheck.is_running()


async def test_a_recheck_under_way_has_ended_when_the_catch_up_unloads(settings, fake) -> None:
    """Bot.close() unloads the catch-up, then closes the HTTP session, and the app its stores. An
    unload that only cancelled the recheck would leave a run cut short going on (its rollback,
    what its cancel awaits) after the unload returned, against what close() is closing."""
    from cogs.catch_up import Every

    async with running_bot(settings, fake) as h:
        catch_up: Any = h.bot.get_cog("CatchUp")
        await caught_up(h.bot)
        await catch_up.cog_unload()  # the start's recheck
        at_work, wound_up = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            at_work.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0)  # a rollback's round trip to the database's thread
                wound_up.set()
                raise

        recheck = catch_up.recheck = Every(60.0, run, "recheck")
        recheck.start()
        await asyncio.wait_for(at_work.wait(), 30)
        await catch_up.cog_unload()
        assert wound_up.is_set() and not recheck.under_way and not recheck.is_running()


async def test_a_recheck_whose_run_swallows_its_stop_still_ends() -> None:
    """The catch-up's unload waits for its recheck to end. A run that swallows the cancel (Python
    3.11's asyncio.wait_for does when its inner future ends as the cancel lands) would sleep and
    run again: the unload, and with it the bot's close, would wait for ever."""
    from cogs.catch_up import Every

    started = asyncio.Event()

    async def run() -> None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()

    recheck = Every(3600.0, run, "recheck")
    recheck.start()
    await started.wait()
    stopping = asyncio.create_task(recheck.stop())
    done, _ = await asyncio.wait({stopping}, timeout=30)  # a hang's bound, not a speed
    if not done:
        recheck._task.cancel()  # type: ignore[union-attr]  # what the unload never did again
        await stopping
    assert done and not recheck.is_running()


async def test_a_recheck_is_under_way_from_its_runs_start_to_its_end() -> None:
    """`under_way` is what the harness's settle waits on (a recheck that may still send), and a
    run that fails or is cut must not leave it set."""
    from cogs.catch_up import Every

    started, finish = asyncio.Event(), asyncio.Event()
    runs: list[bool] = []

    async def run() -> None:
        started.set()
        await finish.wait()
        runs.append(True)
        raise ConnectionError("Discord out of reach")  # a failed run ends too

    recheck = Every(60.0, run, "recheck")
    assert not recheck.under_way
    recheck.start()
    await started.wait()
    assert recheck.under_way
    finish.set()
    await eventually(lambda: recheck.current_loop >= 1)
    assert runs == [True] and not recheck.under_way
    await recheck.stop()


async def test_a_given_back_note_whose_claim_a_stop_ran_out_of_time_in_is_not_left_claimed(
    settings, fake, caplog, monkeypatch
) -> None:
    # The stop's wait ran out as a note given back unfetchable was being claimed (a slow disk):
    # its COMMIT went through while the await of it was cut. Left 'started' by a process then
    # gone, the next start counted a crash in that note's turn, as for a note being settled.
    from cogs import bot as bot_module

    monkeypatch.setattr(bot_module, "FOLLOW_UP_SECONDS", 2.0)
    claiming = NoteLedger.claim
    slow = [True]

    async def slow_disk(ledger: NoteLedger, message_id: int, place_id: int, user_id: str) -> bool:
        mine = await claiming(ledger, message_id, place_id, user_id)
        if slow:
            slow.clear()
            await asyncio.sleep(60)  # the await of the COMMIT the thread has made
        return mine

    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake, recheck_seconds=3600):
        await settle(fake)
        notes = []
        for count, player in enumerate([nova, blaze], 1):
            fake.posts_unavailable = 2  # the voice message, then its words as text
            notes.append(await fake.send_note(player, voice_note(), guild=True))
            await eventually(lambda n=count: caplog.text.count("got no answer because Discord failed") == n)
        monkeypatch.setattr(NoteLedger, "claim", slow_disk)
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        rows = await ledger._conn.execute_fetchall("SELECT message_id, state FROM notes")
        states = {str(row["message_id"]): row["state"] for row in rows}
        assert "started" not in [states[n["id"]] for n in notes], states
    finally:
        await ledger.aclose()


async def test_an_answer_the_ledger_refuses_to_keep_before_its_first_post_still_goes_out(
    settings, fake, caplog, monkeypatch
) -> None:
    # Where the bot may not read history the answer is kept before its first post; a ledger that
    # refuses that write (a full disk) costs only what a kill in the send would find, not the
    # answer, and the note is settled as answered.
    caplog.set_level(logging.INFO)
    kept = NoteLedger.keep_answer

    async def full_disk(ledger: NoteLedger, message_id: int, answer: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(NoteLedger, "keep_answer", full_disk)
    async with running_without_history(settings, fake) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await eventually(lambda: f"answered note {note['id']}" in caplog.text)
        monkeypatch.setattr(NoteLedger, "keep_answer", kept)
        assert h.bot.get_cog("VoiceNotes")._unsent.get(int(note["id"])) is None  # type: ignore[union-attr]
    said = fake.sent("message", ALLOWED_CHANNEL)
    assert len([r for r in said if r.is_voice_message]) == 1, said
    refused = f"could not keep the answer to note {note['id']} in the ledger: database or disk is full"
    assert [r.levelno for r in caplog.records if refused in r.getMessage()] == [logging.ERROR], caplog.text
    assert (await stored_states(settings))[note["id"]] == "answered"
