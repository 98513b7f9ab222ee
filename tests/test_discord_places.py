"""Voice notes from the places a guild has beside its text channels: threads under a watched
channel, forum posts, a thread archived while its note is answered. The real discord.py client
against the fake Discord, which keeps threads as Discord does (THREAD_CREATE, active threads in
GUILD_CREATE, a message unarchiving the thread it is posted in unless it is locked)."""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest

from bot.note_ledger import NoteLedger
from bot.sentences import DOWNLOAD_FAILED, ONE_AT_A_TIME, TOO_MANY_UNSEEN
from tests.discord_harness import (
    blaze,
    caught_up,
    claim_lands_just_after_a_read_looked,
    nova,
    quill,
    running_bot,
    settle,
    voice_note,
)
from tests.fakes.discord_server import (
    ADD_REACTIONS,
    ALLOWED_CHANNEL,
    BOT_USER_ID,
    GUILD_ANNOUNCEMENT,
    GUILD_FORUM,
    GUILD_STAGE_VOICE,
    GUILD_VOICE,
    MANAGE_THREADS,
    OTHER_CHANNEL,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
    VOICE_FLAG,
    FakeDiscord,
    Received,
    dm_channel_id,
    now_iso,
    serving,
)
from tests.frontend_engine import FrontendEngine
from tests.test_discord_news import eventually
from tests.test_discord_replies import settled
from tests.test_discord_restarts import TOLD_TOO_MANY, note_state, rechecks

FORUM = 920000000000000077


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with serving() as fake:
        yield fake


def voice_replies(fake: FakeDiscord, note: dict) -> list[Received]:
    return [r for r in fake.replies_to(note["id"]) if r.is_voice_message]


async def answered(fake: FakeDiscord, note: dict, within: float = 30.0) -> list[Received]:
    """The voice message and the transcript that answer `note`."""
    return await fake.wait_for(lambda _: (r := fake.replies_to(note["id"])) and len(r) >= 2 and r, within)


@pytest.mark.parametrize("private", [False, True], ids=["public", "private"])
async def test_a_note_in_a_thread_of_a_watched_channel_is_answered_in_the_thread(settings, fake, private):
    # A private thread shows only to its members: the player invited the bot as they made it.
    async with running_bot(settings, fake):
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help", private=private, joined=private)
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        voice, transcript = await answered(fake, note)
        assert voice.is_voice_message and voice.channel_id == thread
        assert transcript.channel_id == thread and transcript.content.startswith("Nova, you have")


async def asking_the_bot(fake: FakeDiscord, thread: int, dispatch: bool = True) -> dict:
    """Nova's note that @mentions the bot in `thread`, which adds it there: an audio file, since a
    voice message carries no text. `dispatch` False: its MESSAGE_CREATE never reaches the bot."""
    return await fake.send_note(
        nova,
        voice_note(),
        channel_id=thread,
        voice=False,
        filename="question.ogg",
        content="are you there?",
        mention_bot=True,
        dispatch=dispatch,
    )


async def test_notes_sent_before_a_player_adds_the_bot_to_their_private_thread_are_left(settings, fake):
    # Discord shows a private thread only to its members and to who may manage threads (the
    # invite does not ask for Manage Threads): the notes sent before the bot is in it were the
    # members' among themselves, not questions for the bot. Adding it asks it in from then on:
    # the note that mentions it is answered, and every note after, not the ones before.
    async with running_bot(settings, fake):
        # The start's catch-up has chosen the places it reads: this thread is not among them.
        await fake.wait_for(lambda _: fake.sent("history", ALLOWED_CHANNEL))
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        among_them = await fake.send_note(blaze, voice_note(), channel_id=thread, ago=5)
        asking = await asking_the_bot(fake, thread)
        voice, transcript = await answered(fake, asking)
        assert voice.channel_id == transcript.channel_id == thread
        later = await fake.send_note(nova, voice_note(), channel_id=thread)
        await answered(fake, later)
        await fake.wait_for(lambda _: fake.sent("history", thread))  # the read on joining
        await settle(fake)
    assert len(voice_replies(fake, asking)) == len(voice_replies(fake, later)) == 1
    assert fake.replies_to(among_them["id"]) == []


async def test_a_note_its_mention_added_the_bot_with_is_answered_though_its_event_was_lost(settings, fake):
    # The mention that adds the bot to a private thread may come before the bot is a member, and
    # its MESSAGE_CREATE not to it: the read of the thread on joining finds it.
    async with running_bot(settings, fake):
        await fake.wait_for(lambda _: fake.sent("history", ALLOWED_CHANNEL))
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        asking = await asking_the_bot(fake, thread, dispatch=False)
        voice, _ = await answered(fake, asking)
        await settle(fake)
    assert voice.channel_id == thread and len(voice_replies(fake, asking)) == 1


@pytest.mark.parametrize("archived", [False, True], ids=["active", "archived"])
async def test_a_start_answers_a_private_thread_s_notes_sent_once_the_bot_was_added_not_before(
    settings, fake, archived
):
    # While the bot was down, players talked in a private thread among themselves, then one added
    # the bot and asked it something. The start's catch-up reads the thread (active: the guild's
    # threads with the bot's membership; archived: the joined listing, which carries none that
    # discord.py keeps, so the membership is asked for) from when the bot was added.
    thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, tell_the_bot=False, ago=600)
    among_them = await fake.send_note(blaze, voice_note(), channel_id=thread, ago=300)
    await fake.add_to_thread(thread)  # no bot connected: no event goes out
    asked = await fake.send_note(nova, voice_note(), channel_id=thread)
    if archived:
        await fake.archive_thread(thread)
    async with running_bot(settings, fake) as h:
        voice, _ = await answered(fake, asked)
        await caught_up(h.bot)
        await settle(fake)
    assert voice.channel_id == thread and len(voice_replies(fake, asked)) == 1
    assert fake.replies_to(among_them["id"]) == []
    assert bool(fake.sent("get_thread_member", thread)) is archived


async def test_a_note_sent_while_the_bot_was_out_of_a_private_thread_is_left_when_it_is_re_added(
    settings, fake
):
    # Removed from a private thread, the bot hears nothing of it: what its members said meanwhile
    # was not for it. Added back, it answers the notes from then on.
    async with running_bot(settings, fake):
        await fake.wait_for(lambda _: fake.sent("history", ALLOWED_CHANNEL))
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, joined=True)
        first = await fake.send_note(nova, voice_note(), channel_id=thread)
        await answered(fake, first)
        await fake.remove_from_thread(thread)
        meanwhile = await fake.send_note(nova, voice_note(), channel_id=thread, ago=1)
        await fake.add_to_thread(thread)
        await fake.wait_for(lambda _: len(fake.sent("history", thread)) >= 1)  # the read on joining
        after = await fake.send_note(nova, voice_note(), channel_id=thread)
        await answered(fake, after)
        await settle(fake)
    assert len(voice_replies(fake, first)) == len(voice_replies(fake, after)) == 1
    assert fake.replies_to(meanwhile["id"]) == []


async def test_a_flood_read_back_far_behind_the_players_newest_live_note_is_held_to_the_limit(settings, fake):
    # The live limit keeps uses catch_up_minutes + flood_seconds back from the newest: a live note
    # stamped later than the read began (a long catch-up, a host clock behind Discord's) puts
    # the oldest notes read back beyond that, and each one counted would drop at once. Read back
    # here as the notes that asked the bot into a private thread, whose events never reached it.
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=60.0) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        members = fake.threads[thread]["members"]
        members[BOT_USER_ID] = now_iso()  # each mention's add is one, told once all are sent
        flood = [
            await fake.send_note(
                nova,
                voice_note(),
                channel_id=thread,
                voice=False,
                filename="question.ogg",
                content="are you there?",
                mention_bot=True,
                dispatch=False,
                ago=1790 - i,
            )
            for i in range(4)
        ]
        del members[BOT_USER_ID]
        live = await fake.send_note(nova, voice_note(), guild=True, ago=-120)
        await answered(fake, live)
        await fake.add_to_thread(thread)
        states = [await settled(settings, note) for note in flood]
        await settle(fake)
    assert [len(voice_replies(fake, note)) for note in flood] == [1, 1, 0, 0], states
    # Told once (a hint a minute): the bot was not away, the notes were in a thread it could not see.
    told = [r.content for note in flood[2:] for r in fake.replies_to(note["id"])]
    assert told == [TOO_MANY_UNSEEN.format(count=2)] and "away" not in told[0]


async def test_a_private_thread_the_bot_was_added_back_to_while_the_gateway_was_away_answers(settings, fake):
    # The add went to a session Discord dropped: no thread_join tells of it, but the new session's
    # GUILD_CREATE lists the thread, and the note sent meanwhile is the new session's catch-up's.
    async with running_bot(settings, fake) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, joined=True)
        await fake.remove_from_thread(thread)
        identified = len(fake.identify_payloads)
        fake.gateway_outage()
        await fake.lose_the_session()
        await fake.wait_for(lambda _: fake.hanging_connections)
        await fake.add_to_thread(thread)  # goes nowhere: the session is lost
        missed = await fake.send_note(nova, voice_note(), channel_id=thread)
        fake.end_gateway_outage()
        await fake.wait_for(lambda _: len(fake.identify_payloads) > identified and fake.bot_connected, 60)
        assert await settled(settings, missed) == "answered"
    assert len(voice_replies(fake, missed)) == 1


async def test_a_live_note_from_a_private_thread_shows_the_bot_is_back_in_it(settings, fake):
    # Until discord.py's "ready" (guild_ready_timeout after a new session's last GUILD_CREATE) the
    # bot cannot have looked at the threads it sees: a note it is sent from the thread is proof.
    async with running_bot(settings, fake) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, joined=True)
        await fake.remove_from_thread(thread)
        fake.threads[thread]["members"][BOT_USER_ID] = now_iso()  # added back, its events lost
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        assert await settled(settings, note) == "answered"
    assert len(voice_replies(fake, note)) == 1


async def test_a_note_in_a_public_thread_the_bot_was_removed_from_is_answered(settings, fake):
    # Out of a public thread, the bot still sees it and may post there (its message adds it back):
    # only a private thread is shut to it.
    async with running_bot(settings, fake) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help", joined=True)
        await fake.remove_from_thread(thread)
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        assert await settled(settings, note) == "answered"
    assert len(voice_replies(fake, note)) == 1


@pytest.mark.parametrize("trouble", ["rate limited for an hour", "503"])
async def test_a_private_thread_discord_fails_to_read_on_joining_is_read_at_the_recheck(
    settings, fake, caplog, trouble
):
    # Discord fails the read of the thread the bot was just added to: the note that added it (its
    # event lost) is owed as
    # a failed place of a catch-up, read again at the recheck, with no traceback.
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await settle(fake)  # the start's catch-up is done: it does not read this thread
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        if trouble == "503":
            fake.history_unavailable_in.add(thread)
        else:
            fake.history_rate_limited, fake.retry_after = 1, 3600.0
        waiting = await asking_the_bot(fake, thread, dispatch=False)
        await fake.wait_for(lambda rs: [r for r in rs if r.kind == "history" and r.channel_id == thread])
        fake.history_unavailable_in.clear()
        voice, _ = await answered(fake, waiting, within=15)
        await settle(fake)
    assert voice.channel_id == thread and len(voice_replies(fake, waiting)) == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    warned = [
        r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno == logging.WARNING
    ]
    assert warned[0].startswith(f"could not read thread {thread} the bot was added to: ")
    assert warned[0].endswith("; tried again every 0.2 s")


async def test_a_note_both_read_back_on_joining_and_heard_live_is_weighed_against_the_flood_once(
    settings, fake
):
    # The note whose mention adds the bot to a private thread is in the history the bot reads on
    # joining, and its MESSAGE_CREATE comes too; the live event's claim lands in the ledger just
    # after the read-back looked there. At one note allowed, weighed twice it would be answered
    # and its player told they sent too many as well.
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0) as h:
        await fake.wait_for(lambda _: fake.sent("history", ALLOWED_CHANNEL))
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        fake.history_held[thread] = held = asyncio.Event()
        as_added = await asking_the_bot(fake, thread, dispatch=False)
        claim_lands_just_after_a_read_looked(h.bot.core.notes, int(as_added["id"]))
        held.set()
        await fake.dispatch("MESSAGE_CREATE", as_added)
        assert await settled(settings, as_added) == "answered"
        await settle(fake)
    assert fake.sent("history", thread)
    assert len(voice_replies(fake, as_added)) == 1
    assert not [r for r in fake.replies_to(as_added["id"]) if TOLD_TOO_MANY in r.content]


async def test_with_manage_threads_a_note_in_any_private_thread_is_answered(settings, fake):
    # A thread moderator sees every private thread: no player needs to add it, and its reply
    # makes it a member.
    fake.bot_permissions |= MANAGE_THREADS
    async with running_bot(settings, fake):
        thread = await fake.add_thread(ALLOWED_CHANNEL, "staff only", private=True)
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        voice, _ = await answered(fake, note)
        assert voice.channel_id == thread
    assert BOT_USER_ID in fake.threads[thread]["members"]
    assert len(voice_replies(fake, note)) == 1


async def test_a_note_in_a_forum_post_is_answered_in_the_post(settings, fake):
    fake.guild_channels[FORUM] = "ask-support"
    fake.channel_types[FORUM] = GUILD_FORUM
    async with running_bot(settings, fake, channels=[FORUM]):
        post = await fake.add_thread(FORUM, "my wallet is empty")
        note = await fake.send_note(blaze, voice_note(), channel_id=post)
        voice, _ = await answered(fake, note)
        assert voice.channel_id == post


async def test_notes_in_threads_and_forum_posts_sent_while_the_bot_was_down_are_answered(settings, fake):
    fake.guild_channels[FORUM] = "ask-support"
    fake.channel_types[FORUM] = GUILD_FORUM
    # Made while no bot was connected: a restarted bot knows them from GUILD_CREATE's active
    # threads, and their notes only from the threads' history.
    thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help", tell_the_bot=False)
    post = await fake.add_thread(FORUM, "my wallet is empty", tell_the_bot=False)
    in_thread = await fake.send_note(nova, voice_note(), channel_id=thread, ago=60)
    in_post = await fake.send_note(blaze, voice_note(), channel_id=post, ago=50)
    async with running_bot(settings, fake, channels=[ALLOWED_CHANNEL, FORUM]):
        await answered(fake, in_thread)
        await answered(fake, in_post)
        assert len(voice_replies(fake, in_thread)) == len(voice_replies(fake, in_post)) == 1


async def test_notes_in_threads_archived_while_the_bot_was_down_are_answered_unless_locked(
    settings, fake, caplog
):
    # A moderator archived them after their notes came: GUILD_CREATE lists active threads only,
    # and Discord lists the archived ones per channel, newest archive first.
    # The server made the bot a thread moderator: it sees every private thread, and Discord lists
    # all the archived ones to it.
    caplog.set_level(logging.INFO)
    fake.bot_permissions |= MANAGE_THREADS
    fake.guild_channels[FORUM] = "ask-support"
    fake.channel_types[FORUM] = GUILD_FORUM
    thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help", tell_the_bot=False)
    private = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, tell_the_bot=False)
    post = await fake.add_thread(FORUM, "my wallet is empty", tell_the_bot=False)
    locked = await fake.add_thread(ALLOWED_CHANNEL, "case closed", tell_the_bot=False)
    old = await fake.add_thread(ALLOWED_CHANNEL, "last month", tell_the_bot=False)
    sent = [(thread, nova, 120), (private, blaze, 110), (post, quill, 100), (locked, nova, 90)]
    notes = {
        where: await fake.send_note(who, voice_note(), channel_id=where, ago=ago) for where, who, ago in sent
    }
    await fake.send_note(blaze, voice_note(), channel_id=old, ago=40 * 60)  # before the 30-minute window
    for where in (thread, private, post):
        await fake.archive_thread(where, ago=30)
    await fake.archive_thread(locked, locked=True, ago=30)
    await fake.archive_thread(old, ago=35 * 60)
    async with running_bot(settings, fake, channels=[ALLOWED_CHANNEL, FORUM]):
        for where in (thread, private, post):
            voice, transcript = await answered(fake, notes[where])
            assert voice.is_voice_message and voice.channel_id == transcript.channel_id == where
            assert not fake.threads[where]["archived"]  # the reply unarchived it, as on Discord
    assert not fake.replies_to(notes[locked]["id"]) and fake.threads[locked]["archived"]
    # Neither the locked thread nor one archived before the window is read; nothing is refused
    # (no reaction or typing in a thread still archived).
    assert not [r for r in fake.received if r.kind == "history" and r.channel_id in (locked, old)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and str(locked) in r.getMessage()]
    listed = [r for r in fake.received if r.kind == "archived_threads"]
    assert sorted(r.path.rsplit("/", 1)[-1] for r in listed) == ["private", "public", "public"]


async def missed_in_an_archived_thread(fake: FakeDiscord, banned: int) -> tuple[int, dict]:
    """A thread archived while the bot was down, after Nova sent a note in it, and the next
    `banned` listings of the channel's archived threads banned by Cloudflare: the thread and the
    note."""
    thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help", tell_the_bot=False)
    missed = await fake.send_note(nova, voice_note(), channel_id=thread, ago=60)
    await fake.archive_thread(thread, ago=30)
    fake.archived_threads_banned = banned
    return thread, missed


async def answered_again_unread(fake: FakeDiscord, bot: Any, thread: int, missed: dict) -> dict:
    """Once the bot settles, every banned listing tried and `missed` still unread, Nova posts in
    the thread again (active again) and is answered live: that note."""
    await settle(fake)
    assert fake.archived_threads_banned == 0 and not fake.replies_to(missed["id"])
    again = await fake.send_note(nova, voice_note(), channel_id=thread)
    await answered(fake, again)
    assert await note_state(bot.core.notes, again) == "answered"
    return again


async def test_threads_discord_failed_to_list_at_the_catch_up_are_listed_and_read_again(
    settings, fake, caplog
):
    # Cloudflare's ban on both listings of the channel's archived threads: the catch-up is owed for
    # that channel's threads, listed again at the next recheck (the channel itself, read fine, is
    # not read again), and the note in the archived thread is answered.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    thread, note = await missed_in_an_archived_thread(fake, banned=2)
    async with running_bot(settings, fake, recheck_seconds=0.2):
        voice, _ = await answered(fake, note, within=15)
        await settle(fake)
    assert voice.channel_id == thread and len(voice_replies(fake, note)) == 1
    listed = [r.error for r in fake.received if r.kind == "archived_threads"]
    assert listed == [429, 429, None, None]
    channel_reads = [r for r in fake.received if r.kind == "history" and r.channel_id == ALLOWED_CHANNEL]
    assert [r.error for r in channel_reads] == [None]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [
        f"catch-up could not list the archived threads of channel {ALLOWED_CHANNEL}: 429 error code: 1015",
        f"catch-up: archived threads not listed in {ALLOWED_CHANNEL}; tried again every 0.2 s",
    ]


async def test_a_thread_discord_failed_to_list_and_active_again_by_the_recheck_is_still_read(settings, fake):
    # The start's listing of the channel's archived threads is banned, so the thread archived
    # while the bot was down, and its note, are not read. Its player posts again there before
    # the listing is tried again: the thread is active, no longer listed, and the live note was
    # answered. The note sent while the bot was down is still answered.
    # The start's two listings are banned, and its first recheck's.
    thread, missed = await missed_in_an_archived_thread(fake, banned=4)
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        again = await answered_again_unread(fake, h.bot, thread, missed)
        await h.bot.get_cog("CatchUp")._recheck()
        await answered(fake, missed, within=15)
        await settle(fake)
    assert len(voice_replies(fake, missed)) == len(voice_replies(fake, again)) == 1


async def test_a_thread_discord_failed_to_list_is_read_after_a_restart_past_a_live_answer(settings, fake):
    # The start's listing of the channel's archived threads is banned, and its first recheck's, so
    # the thread archived while the bot was down is not read. Its player posts there again (the
    # thread is active again) and is answered, which makes that note the thread's newest handled;
    # the bot restarts before another recheck. The next start must still read the thread from
    # before the note sent while the bot was first down.
    # The start's two listings are banned, and its first recheck's.
    thread, missed = await missed_in_an_archived_thread(fake, banned=4)
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        again = await answered_again_unread(fake, h.bot, thread, missed)
        await settle(fake)
    async with running_bot(settings, fake) as h:
        await answered(fake, missed, within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert len(voice_replies(fake, missed)) == len(voice_replies(fake, again)) == 1


async def test_a_thread_owed_a_read_before_its_channels_listing_was_owed_is_read_from_the_earlier(
    settings, fake
):
    # One start failed to read the thread (owed from then); a later one stopped before it listed
    # the channel's archived threads (owed from later). The next start reads the thread from the
    # earlier of the two, or the note sent between them is never answered.
    thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help", tell_the_bot=False)
    missed = await fake.send_note(nova, voice_note(), channel_id=thread, ago=60)
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        await ledger.owe_reads([thread], time.time() - 100)
        await ledger.owe_listings([ALLOWED_CHANNEL], time.time() - 20)
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake) as h:
        await answered(fake, missed, within=15)
        await caught_up(h.bot)
        assert await h.bot.core.notes.owed_reads() == {}
        await settle(fake)
    assert len(voice_replies(fake, missed)) == 1


async def test_a_listing_owed_for_a_channel_no_longer_watched_is_not_kept_for_ever(settings, fake):
    # An earlier process owed the listing of a channel's archived threads; the channel is not
    # watched any more: no catch-up lists it again, and the start lets the row go.
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        await ledger.owe_listings([OTHER_CHANNEL, ALLOWED_CHANNEL], time.time() - 60)
    finally:
        await ledger.aclose()
    async with running_bot(settings, fake) as h:
        await caught_up(h.bot)
        assert await h.bot.core.notes.owed_listings() == {}
        assert await h.bot.core.notes.owed_reads() == {}
        await settle(fake)
    assert not [r for r in fake.received if r.kind == "archived_threads" and r.channel_id == OTHER_CHANNEL]


async def test_a_place_owed_that_the_bot_may_not_read_and_no_longer_watches_is_let_go(settings, fake, caplog):
    # An earlier process owed a read of a channel then watched; it is watched no more, and an admin
    # took Read Message History from the bot there. Only its row in owed_reads has a start read
    # it: kept, every start would read it and warn of it for ever. The first start lets it go.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        await ledger.owe_reads([OTHER_CHANNEL], time.time() - 60)
    finally:
        await ledger.aclose()
    await fake.deny(OTHER_CHANNEL, READ_MESSAGE_HISTORY)
    for _ in range(2):
        async with running_bot(settings, fake) as h:
            await caught_up(h.bot)
            assert await h.bot.core.notes.owed_reads() == {}
            await settle(fake)
    said = [r.getMessage() for r in caplog.records if str(OTHER_CHANNEL) in r.getMessage()]
    assert said == [f"catch-up skips channel {OTHER_CHANNEL}: no Read Message History permission"], said


@pytest.mark.parametrize("told", [True, False], ids=["told", "cache-behind"])
async def test_a_watched_channel_the_bot_may_not_read_stays_owed_and_is_warned_of_once(
    settings, fake, caplog, told
):
    # The bot may not read a watched channel's history: an admin took Read Message History from
    # it while it was down (discord.py knows), or View Channel while it ran (it does not yet, and
    # Discord refuses the read). The notes sent there meanwhile stay owed, and the catch-ups of
    # this process (a start's, a new gateway session's) say so once, with what to do. Once the
    # bot may read there again, the next start answers them, past a note answered live since.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    fake.expect_refusals()  # the reads with the bot's cache behind
    if told:
        missed = await fake.send_note(nova, voice_note(), guild=True)
        await fake.deny(ALLOWED_CHANNEL, READ_MESSAGE_HISTORY)
    async with running_bot(settings, fake) as h:
        catch_up = h.bot.get_cog("CatchUp")
        await caught_up(h.bot)
        if told:
            # Heard live all the same: the newest note answered there, after the one missed.
            live = await fake.send_note(blaze, voice_note(), guild=True)
            assert await settled(settings, live) == "answered"
        else:
            missed = await fake.send_note(nova, voice_note(), guild=True, dispatch=False)  # in a gap
            await fake.deny(ALLOWED_CHANNEL, VIEW_CHANNEL, tell_the_bot=False)
        for _ in range(2):  # what on_ready does on a fresh session after the gateway was away
            await catch_up.catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        assert ALLOWED_CHANNEL in await h.bot.core.notes.owed_reads()
        await settle(fake)
    refused = [r for r in fake.received if r.kind == "history" and r.error == 50001]
    assert len(refused) == (0 if told else 2)
    said = [r.getMessage() for r in caplog.records if f"channel {ALLOWED_CHANNEL}:" in r.getMessage()]
    read = [m for m in said if "cannot read" in m]
    assert len(read) == 1 and "Read Message History" in read[0], said
    # Behind, the cache has the bot list the channel's archived threads too: refused, said once.
    assert len([m for m in said if "list the archived threads" in m]) == (0 if told else 1), said
    assert not voice_replies(fake, missed)
    fake.denied.pop(ALLOWED_CHANNEL)
    async with running_bot(settings, fake) as h:
        await answered(fake, missed, within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert len(voice_replies(fake, missed)) == 1


async def test_a_thread_whose_read_discord_answers_unknown_channel_is_no_longer_owed(settings, fake, caplog):
    # A thread is deleted in a gateway gap, the bot's cache still holding it: the new session's
    # catch-up reads it, and Discord answers 404 Unknown Channel. It can never be read again, so
    # it is owed no more, in one line.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    fake.expect_refusals()  # the read with the bot's cache behind
    async with running_bot(settings, fake) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        await fake.send_note(nova, voice_note(), channel_id=thread, dispatch=False)
        await fake.delete_thread(thread, tell_the_bot=False)
        await h.bot.get_cog("CatchUp").catch_up(discord.utils.utcnow() - datetime.timedelta(minutes=1))
        assert thread not in await h.bot.core.notes.owed_reads()
        await settle(fake)
    said = [r.getMessage() for r in caplog.records if str(thread) in r.getMessage()]
    assert said == [f"catch-up skips channel {thread}: 404 Unknown Channel"], said


@pytest.mark.parametrize("answer", ["404", "503"])
async def test_a_dm_discord_answers_unknown_channel_for_is_read_by_no_later_start(settings, fake, answer):
    # The ledger remembers a player's DM, and Discord answers its read 404 Unknown Channel (the
    # player deleted their account): no later start reads it again. Discord failing it (a 503)
    # only holds it back: the next start reads it again.
    dm = dm_channel_id(quill.id)
    if answer == "503":
        fake.known_dm(quill)
        fake.history_unavailable_in.add(dm)
    ledger = await NoteLedger.open(settings.storage_dir / "notes.db")
    try:
        await ledger.remember_place(dm, "dm", str(quill.id))
    finally:
        await ledger.aclose()
    reads = []
    for _ in range(2):
        async with running_bot(settings, fake) as h:
            await caught_up(h.bot)
            await settle(fake)
        reads.append(len([r for r in fake.received if r.kind == "history" and r.channel_id == dm]))
    assert reads[0] >= 1
    if answer == "404":
        assert reads[1] == reads[0], reads
    else:
        assert reads[1] > reads[0], reads


async def test_a_host_clock_stepped_back_after_the_start_leaves_no_note_sent_while_down_unread(
    settings, fake
):
    # The host's clock read an hour fast when the bot started, and NTP set it right before a live
    # note was answered: that answer's time is before the start by the ledger's clock. The read
    # the recheck owes still begins before the note sent while the bot was down.
    # The start's two listings are banned, and its first recheck's.
    thread, missed = await missed_in_an_archived_thread(fake, banned=4)
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        catch_up = h.bot.get_cog("CatchUp")
        catch_up._started_at += 3600  # the start as the fast clock stamped it
        await settle(fake)
        assert fake.archived_threads_banned == 0 and not fake.replies_to(missed["id"])
        again = await fake.send_note(nova, voice_note(), channel_id=thread)
        await answered(fake, again)
        await catch_up._recheck()
        await answered(fake, missed, within=15)
        await settle(fake)
    assert len(voice_replies(fake, missed)) == len(voice_replies(fake, again)) == 1


@pytest.mark.parametrize("stepped_back", [False, True], ids=["steady-clock", "clock-stepped-back"])
async def test_a_start_reading_a_thread_after_a_live_answer_there_leaves_no_note_sent_while_down(
    settings, fake, monkeypatch, stepped_back
):
    # The start's catch-up reads the thread only once a live note there is answered (it reads
    # place after place, at its pace): the newest note answered there is one after the note sent
    # while the bot was down, and the read must begin before that one all the same. So too with
    # the host's clock an hour fast at the start and set right before the live answer (NTP at
    # boot): that answer is stamped before the start by the ledger's clock.
    thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help", tell_the_bot=False)
    missed = await fake.send_note(nova, voice_note(), channel_id=thread, ago=60)
    reading, release = asyncio.Event(), asyncio.Event()
    owed_reads = NoteLedger.owed_reads

    async def owed_reads_once_released(self: NoteLedger) -> dict[int, float]:
        reading.set()  # the start's catch-up begins: no place is read yet
        await asyncio.wait_for(release.wait(), 30)
        return await owed_reads(self)

    monkeypatch.setattr(NoteLedger, "owed_reads", owed_reads_once_released)
    async with running_bot(settings, fake) as h:
        try:
            await asyncio.wait_for(reading.wait(), 30)
            if stepped_back:
                h.bot.get_cog("CatchUp")._started_at += 3600  # the start as the fast clock stamped it
            live = await fake.send_note(blaze, voice_note(), channel_id=thread)
            await answered(fake, live)
        finally:
            release.set()
        await answered(fake, missed, within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert len(voice_replies(fake, missed)) == len(voice_replies(fake, live)) == 1


async def test_a_note_in_a_thread_archived_during_a_gateway_outage_is_answered_by_the_new_session(
    settings, fake
):
    # Discord forgot the session: neither the note nor the THREAD_UPDATE reached the bot, and the
    # new session's GUILD_CREATE lists active threads only.
    async with running_bot(settings, fake) as h:
        # The start's catch-up is not this test's: one still reading would hold the thread as it
        # was before the outage.
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        first = await fake.send_note(nova, voice_note(), channel_id=thread)
        await answered(fake, first)
        # Its 🎧 comes off after the answer: in an archived thread that would be refused.
        await fake.wait_for(lambda _: fake.sent("reaction_remove", thread))
        identified = len(fake.identify_payloads)
        fake.gateway_outage()
        await fake.lose_the_session()
        await fake.wait_for(lambda _: fake.hanging_connections)  # the bot knows it is cut off
        missed = await fake.send_note(blaze, voice_note(), channel_id=thread)  # goes nowhere
        await fake.archive_thread(thread)
        fake.end_gateway_outage()
        await fake.wait_for(lambda _: len(fake.identify_payloads) > identified and fake.bot_connected, 60)
        voice, _ = await answered(fake, missed)
        assert voice.channel_id == thread and not fake.threads[thread]["archived"]
    assert len(voice_replies(fake, first)) == len(voice_replies(fake, missed)) == 1


async def test_without_manage_threads_the_private_archived_threads_the_bot_joined_are_caught_up(
    settings, fake, caplog
):
    # Discord lists all private archived threads only to who may manage threads (403 50013
    # otherwise), and with Read Message History alone those the bot joined: the ones a player
    # invited or mentioned it in. The one it was never added to is not its to answer.
    caplog.set_level(logging.INFO)
    await fake.deny(ALLOWED_CHANNEL, MANAGE_THREADS, tell_the_bot=False)
    public = await fake.add_thread(ALLOWED_CHANNEL, "refund help", tell_the_bot=False, ago=120)
    joined = await fake.add_thread(
        ALLOWED_CHANNEL, "my account", private=True, joined=True, tell_the_bot=False, ago=120
    )
    staff = await fake.add_thread(ALLOWED_CHANNEL, "staff only", private=True, tell_the_bot=False, ago=120)
    in_public = await fake.send_note(nova, voice_note(), channel_id=public, ago=60)
    in_joined = await fake.send_note(blaze, voice_note(), channel_id=joined, ago=50)
    in_staff = await fake.send_note(quill, voice_note(), channel_id=staff, ago=40)
    for thread in (public, joined, staff):
        await fake.archive_thread(thread, ago=30)
    async with running_bot(settings, fake):
        await answered(fake, in_public)
        voice, _ = await answered(fake, in_joined)
        assert voice.channel_id == joined and not fake.threads[joined]["archived"]
    assert len(voice_replies(fake, in_public)) == len(voice_replies(fake, in_joined)) == 1
    assert not fake.replies_to(in_staff["id"]) and fake.threads[staff]["archived"]
    assert not [r for r in fake.received if r.channel_id == staff]
    listed = [r for r in fake.received if r.kind == "archived_threads"]
    assert sorted(r.path.split(f"/{ALLOWED_CHANNEL}/", 1)[1] for r in listed) == [
        "threads/archived/public",
        "users/@me/threads/archived/private",
    ]
    assert all(r.error is None for r in listed)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_joined_private_threads_are_listed_to_the_end_past_the_window_edge(settings, fake):
    # That listing comes newest thread first, not newest archive first: a thread made before 101
    # others, all archived before the 30-minute window, was archived inside it, on the last page.
    await fake.deny(ALLOWED_CHANNEL, MANAGE_THREADS, tell_the_bot=False)
    long_running = await fake.add_thread(
        ALLOWED_CHANNEL, "since May", private=True, joined=True, tell_the_bot=False, ago=180
    )
    note = await fake.send_note(nova, voice_note(), channel_id=long_running, ago=120)
    await fake.archive_thread(long_running, ago=60)
    settled_cases = []
    for i in range(101):
        case = await fake.add_thread(
            ALLOWED_CHANNEL, f"case {i}", private=True, joined=True, tell_the_bot=False
        )
        await fake.archive_thread(case, ago=40 * 60)
        settled_cases.append(case)
    async with running_bot(settings, fake):
        voice, _ = await answered(fake, note)
        assert voice.channel_id == long_running
    pages = [r for r in fake.received if r.kind == "archived_threads" and "/users/@me/" in r.path]
    # Two pages of 100 and 2 (101 + 1), then no more: has_more ends it, the second page starts
    # below the first page's last thread id, not at a timestamp.
    assert [(len(r.response["threads"]), r.response["has_more"]) for r in pages] == [(100, True), (2, False)]
    assert "before" not in pages[0].body and pages[1].body["before"] == str(settled_cases[1])
    # The threads archived before the window are not read.
    assert not [r for r in fake.received if r.kind == "history" and r.channel_id in settled_cases]
    assert len(voice_replies(fake, note)) == 1


async def test_a_thread_archived_while_its_note_is_answered_still_gets_the_answer(settings, fake):
    # A moderator archives the thread mid-turn: Discord unarchives it for the reply, and the
    # "working" reaction comes off once it is active again.
    async with running_bot(settings, fake, engine=FrontendEngine(delay=1.0)):
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        # The 🎧 and "typing…" go out beside the turn, in either order: archived after both.
        await fake.wait_for(lambda _: fake.sent("typing", thread) and fake.sent("reaction_add", thread))
        await fake.archive_thread(thread)
        voice, _ = await answered(fake, note)
        assert voice.channel_id == thread
        assert not fake.threads[thread]["archived"]
        await fake.wait_for(lambda _: fake.sent("reaction_remove", thread))


async def test_a_voice_note_forwarded_to_the_bot_is_answered_as_the_forwarders(settings, fake):
    # Recorded in a channel the bot does not watch, then forwarded to it by DM: the forward has no
    # attachment of its own, only the original's in its snapshot.
    async with running_bot(settings, fake):
        original = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL)
        forward = await fake.forward(nova, original)
        voice, transcript = await answered(fake, forward)
        assert voice.is_voice_message and voice.channel_id == int(forward["channel_id"])
        assert transcript.content.startswith("Nova, you have")  # identity is the forwarder's
        assert fake.replies_to(original["id"]) == []


async def test_a_voice_answer_of_the_bots_forwarded_back_to_it_is_not_answered_as_a_question(settings, fake):
    # Discord's copy of a forward names nobody: the bot heard its own words as the player's
    # question and answered them, a turn spent on nothing the player asked.
    from bot.sentences import OWN_ANSWER

    async with running_bot(settings, fake) as h:
        note = await fake.send_note(nova, voice_note())
        voice, _ = await answered(fake, note)
        asked = len(h.engine.turns)
        forward = await fake.forward(nova, voice.response)
        (told,) = await fake.wait_for(lambda _: fake.replies_to(forward["id"]))
        await settle(fake)
    assert told.content == OWN_ANSWER
    assert fake.replies_to(forward["id"]) == [told]
    assert len(h.engine.turns) == asked


@pytest.mark.parametrize("origin", ["another server", "a DM between players", "a channel it may not read"])
async def test_a_forward_from_where_the_bot_cannot_read_is_answered_without_asking_for_its_original(
    settings, fake, origin
):
    # Most forwards carry a note from a server the bot is not in or a DM with a friend: fetching
    # each one's original to tell the bot's own answers would be a 403 each, which Discord counts
    # toward the invalid requests that get the bot's address refused for an hour.
    async with running_bot(settings, fake):
        recorded = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL)
        original = dict(recorded)
        if origin == "another server":
            original |= {"channel_id": "930000000000000001", "guild_id": "930000000000000002"}
        elif origin == "a DM between players":
            original = {k: v for k, v in original.items() if k != "guild_id"}
            original["channel_id"] = "930000000000000003"
        else:
            await fake.deny(OTHER_CHANNEL, READ_MESSAGE_HISTORY)
        forward = await fake.forward(nova, original)
        voice, _ = await answered(fake, forward)
        assert voice.is_voice_message
    assert [r for r in fake.received if r.kind == "get_message"] == []  # refused ones too


async def test_a_forward_whose_original_is_gone_is_answered_as_the_forwarders(settings, fake):
    # The fetch that tells the bot's own answers fails (the original deleted since): the note the
    # forward carries is answered all the same.
    async with running_bot(settings, fake):
        original = await fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL)
        await fake.delete_message(OTHER_CHANNEL, original["id"])
        forward = await fake.forward(nova, original)
        voice, _ = await answered(fake, forward)
        assert voice.is_voice_message
    assert [r.error for r in fake.received if r.kind == "get_message"] == [10008]


@pytest.mark.parametrize(
    "kind", [GUILD_VOICE, GUILD_STAGE_VOICE, GUILD_ANNOUNCEMENT], ids=["voice", "stage", "news"]
)
async def test_a_note_in_a_voice_stage_or_announcement_channels_chat_is_answered(settings, fake, kind):
    chat = 920000000000000088
    fake.guild_channels[chat] = "lobby"
    fake.channel_types[chat] = kind
    async with running_bot(settings, fake, channels=[chat]):
        note = await fake.send_note(nova, voice_note(), channel_id=chat)
        voice, transcript = await answered(fake, note)
        assert voice.is_voice_message and voice.channel_id == transcript.channel_id == chat


async def test_a_note_whose_thread_is_locked_mid_turn_is_given_up_on_without_retries(settings, fake, caplog):
    fake.expect_refusals()  # the bot learns of the lock only from Discord's 50083
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, engine=FrontendEngine(delay=1.0)):
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        # The 🎧 and "typing…" go out beside the turn, in either order: locked after both.
        await fake.wait_for(lambda _: fake.sent("typing", thread) and fake.sent("reaction_add", thread))
        await fake.archive_thread(thread, locked=True)
        assert await settled(settings, note) == "expired"  # given up on: not tried again
    assert not fake.sent("message", thread)
    # the answer, refused; no apology or reaction tried after it, to be refused the same way
    assert len(fake.refused) == 1 and "/messages:" in fake.refused[0], fake.refused
    said = [r.getMessage() for r in caplog.records if str(note["id"]) in r.getMessage()]
    assert any(f"not answered: thread {thread} is locked" in line for line in said), said


async def test_a_thread_denying_send_messages_in_threads_is_logged_by_that_permission_and_parent(
    settings, fake, caplog
):
    # Threads have no permissions of their own: the denial sits on the parent channel, where
    # Send Messages itself is granted, and the line must send the admin there.
    caplog.set_level(logging.INFO)
    fake.denied[ALLOWED_CHANNEL] = SEND_MESSAGES_IN_THREADS
    async with running_bot(settings, fake) as h:
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        assert await settled(settings, note) == "expired"
        # Another thread under it: the same denial, said once for the channel, not per thread.
        other = await fake.send_note(
            blaze, voice_note(), channel_id=await fake.add_thread(ALLOWED_CHANNEL, "x")
        )
        assert await settled(settings, other) == "expired"
        assert h.engine.turns == []
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and str(note["id"]) in said[0], said
    assert (
        f"no Send Messages in Threads permission in thread {thread} of channel {ALLOWED_CHANNEL}" in said[0]
    )
    assert not fake.sent("message", thread)


async def test_a_note_whose_thread_is_locked_open_mid_turn_is_given_up_on_without_retries(settings, fake):
    # Locked and not archived: the thread stays open, and Discord takes messages there from thread
    # moderators alone (160005); an apology would be refused the same way.
    fake.expect_refusals()
    async with running_bot(settings, fake, engine=FrontendEngine(delay=1.0)):
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        await fake.wait_for(lambda _: fake.sent("typing", thread) and fake.sent("reaction_add", thread))
        await fake.lock_thread(thread)
        assert await settled(settings, note) == "expired"
    assert len(fake.refused) == 1 and "locked thread" in fake.refused[0], fake.refused


async def test_a_lock_the_bot_has_not_heard_of_yet_costs_no_apology(settings, fake):
    # The answer's refusal (160005) comes before THREAD_UPDATE: the refusal alone must tell that
    # an apology would be refused the same way.
    fake.expect_refusals()
    async with running_bot(settings, fake, engine=FrontendEngine(delay=1.0)):
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        await fake.wait_for(lambda _: fake.sent("typing", thread) and fake.sent("reaction_add", thread))
        fake.threads[thread]["locked"] = True  # no THREAD_UPDATE yet
        assert await settled(settings, note) == "expired"
    assert [r.error for r in fake.received if r.kind == "message"] == [160005], fake.refused


async def test_notes_queued_in_a_thread_locked_open_cost_no_turn_and_no_request(settings, fake, caplog):
    caplog.set_level(logging.INFO)
    engine = FrontendEngine(delay=1.0)
    async with running_bot(settings, fake, engine=engine) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        first = await fake.send_note(nova, voice_note(), channel_id=thread)
        queued = await fake.send_note(nova, voice_note(), channel_id=thread)
        await fake.wait_for(lambda _: fake.sent("typing", thread) and fake.sent("reaction_add", thread))
        fake.expect_refusals()  # the first note's answer, going out as the lock came
        await fake.lock_thread(thread)
        assert await settled(settings, first) == "expired"
        assert await settled(settings, queued) == "expired"
    assert len(engine.turns) == 1  # the queued note was not heard
    assert len(fake.refused) <= 1, fake.refused
    said = [r.getMessage() for r in caplog.records if str(queued["id"]) in r.getMessage()]
    assert any(f"thread {thread} is locked" in line for line in said), said


async def test_a_thread_moderator_answers_a_note_in_a_thread_locked_open(settings, fake):
    # A lock keeps out whoever may not manage threads: a bot that may is not shut out by it.
    fake.bot_permissions |= MANAGE_THREADS
    async with running_bot(settings, fake):
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        await fake.lock_thread(thread)
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        voice, _ = await answered(fake, note)
        assert voice.channel_id == thread


async def test_notes_queued_in_a_private_thread_the_bot_is_removed_from_cost_no_turn(settings, fake, caplog):
    # Out of a private thread (no Manage Threads), the bot may neither see nor post there: Discord
    # refuses with Missing Access until a player adds it back.
    caplog.set_level(logging.INFO)
    engine = FrontendEngine(delay=1.0)
    async with running_bot(settings, fake, engine=engine) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, joined=True)
        first = await fake.send_note(nova, voice_note(), channel_id=thread)
        queued = await fake.send_note(nova, voice_note(), channel_id=thread)
        # The catch-up's read of the thread the bot was added to, too: else a busy machine has it
        # after the removal, one more refusal than the answer's.
        await fake.wait_for(
            lambda _: all(fake.sent(kind, thread) for kind in ("typing", "reaction_add", "history"))
        )
        fake.expect_refusals()  # the first note's answer, going out as the bot was removed
        await fake.remove_from_thread(thread)
        assert await settled(settings, first) == "expired"
        assert await settled(settings, queued) == "expired"
    assert len(engine.turns) == 1  # the queued note was not heard
    assert len(fake.refused) <= 1, fake.refused
    said = [r.getMessage() for r in caplog.records if str(queued["id"]) in r.getMessage()]
    assert any(f"the bot is no longer in private thread {thread}" in line for line in said), said


async def test_a_note_whose_channel_is_deleted_mid_turn_is_given_up_on(settings, fake, caplog):
    fake.expect_refusals()
    chat = 920000000000000099
    fake.guild_channels[chat] = "temporary"
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, engine=FrontendEngine(delay=1.0), channels=[chat]):
        note = await fake.send_note(nova, voice_note(), channel_id=chat)
        await fake.wait_for(lambda _: fake.sent("typing", chat))
        await fake.delete_channel(chat)
        assert await settled(settings, note) == "expired"
        later = await fake.send_note(nova, voice_note())  # the player's next note, in a DM
        await answered(fake, later)


async def test_a_dm_note_from_a_player_who_then_closes_dms_is_given_up_on(settings, fake):
    async with running_bot(settings, fake, engine=FrontendEngine(delay=1.0)):
        note = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda _: fake.sent("typing"))
        fake.dms_closed.add(nova.id)  # 403 50007 from now on
        assert await settled(settings, note) == "expired"
    assert not fake.replies_to(note["id"])


async def test_add_reactions_taken_away_mid_raid_costs_no_answer_and_no_refused_reaction(settings, fake):
    async with running_bot(settings, fake):
        first = await fake.send_note(nova, voice_note(), guild=True)
        await answered(fake, first)
        # Its 🎧 goes out beside the turn, and may come after the answer: denied only after it.
        await fake.wait_for(lambda _: fake.sent("reaction_remove", ALLOWED_CHANNEL))
        await fake.deny(ALLOWED_CHANNEL, ADD_REACTIONS)  # an admin's change, which the bot is told
        raid = [await fake.send_note(player, voice_note(), guild=True) for player in (nova, blaze)]
        for note in raid:
            await answered(fake, note)
        reacted = {r.body["message_id"] for r in fake.received if r.kind == "reaction_add"}
        assert not reacted & {n["id"] for n in raid}


def waits_out_the_timeout(caplog: pytest.LogCaptureFixture, note: dict) -> bool:
    return any("timed out" in r.getMessage() and str(note["id"]) in r.getMessage() for r in caplog.records)


async def test_a_note_sent_while_the_bot_is_timed_out_is_answered_once_the_timeout_ends(
    settings, fake, caplog
):
    # A moderator's timeout leaves the bot View Channel and Read Message History alone, until a
    # time Discord names (or until a moderator lifts it): the note waits rather than be given up.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        await fake.time_out_the_bot(600.0)
        note = await fake.send_note(nova, voice_note(), guild=True)
        await eventually(lambda: waits_out_the_timeout(caplog, note))
        await rechecks(h.bot)  # which leave it alone while the timeout lasts
        assert not fake.sent("message", ALLOWED_CHANNEL)
        await fake.time_out_the_bot(0.0)  # lifted
        voice, transcript = await answered(fake, note)
        await settle(fake)
        assert len(h.engine.turns) == 1
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert [r for r in fake.received if r.error is not None] == []  # nothing tried while timed out
    assert not [r for r in fake.received if r.kind == "get_message"][1:]  # one fetch, once lifted
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "timed out" in said[0], said


async def test_a_timeout_longer_than_catch_up_minutes_says_its_note_waits_for_a_lift(settings, fake, caplog):
    # An hour's timeout ends after the recheck stops answering the note (catch_up_minutes, 30):
    # the line must not promise an answer once it ends, only if a moderator lifts it sooner.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        await fake.time_out_the_bot(3600.0)
        note = await fake.send_note(nova, voice_note(), guild=True)
        await eventually(lambda: waits_out_the_timeout(caplog, note))
        await fake.time_out_the_bot(0.0)  # lifted sooner
        await answered(fake, note)
        await settle(fake)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "this note is answered only if it is lifted before" in said[0], said


async def test_a_timeout_ending_within_a_recheck_of_the_notes_window_promises_no_answer(
    settings, fake, caplog
):
    # A timeout running its course ends with no event: the first recheck after its end answers
    # the note, up to recheck_seconds later, and by then a note near catch_up_minutes is too old.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, catch_up_minutes=1.0, recheck_seconds=30.0) as h:
        await caught_up(h.bot)
        await fake.time_out_the_bot(45.0)  # ends 15 s before the note's window does
        note = await fake.send_note(nova, voice_note(), guild=True)
        await eventually(lambda: waits_out_the_timeout(caplog, note))
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "this note is answered only if it is lifted before" in said[0], said


async def test_a_flood_hint_is_not_posted_while_the_bot_is_timed_out(settings, fake, caplog):
    # "Too fast" is a post like any: Discord refuses it (50013) while the timeout lasts.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, flood_notes=1, flood_seconds=600.0, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        await fake.time_out_the_bot(600.0)
        first = await fake.send_note(nova, voice_note(), guild=True)
        await eventually(lambda: waits_out_the_timeout(caplog, first))
        second = await fake.send_note(nova, voice_note(), guild=True)
        await eventually(lambda: any(f"flood: note {second['id']}" in r.getMessage() for r in caplog.records))
        await settle(fake)
        await fake.time_out_the_bot(0.0)
        await answered(fake, first)
        await settle(fake)
    assert not fake.refused, fake.refused


async def test_a_note_whose_answer_meets_the_bots_timeout_is_answered_once_it_ends(settings, fake, caplog):
    # The timeout comes during the turn: its answer, and an apology, would be refused (50013),
    # requests Discord counts toward the invalid ones that get the bot's address banned.
    caplog.set_level(logging.INFO)
    engine = FrontendEngine(delay=0.5)
    async with running_bot(settings, fake, engine=engine, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        note = await fake.send_note(nova, voice_note(), guild=True)
        # the 🎧 out first: queued behind the reaction limit, it would meet the timeout
        await fake.wait_for(
            lambda _: fake.sent("typing", ALLOWED_CHANNEL) and fake.sent("reaction_add", ALLOWED_CHANNEL)
        )
        await fake.time_out_the_bot(600.0)
        await eventually(lambda: waits_out_the_timeout(caplog, note))
        await fake.time_out_the_bot(0.0)
        voice, _ = await answered(fake, note)
        await settle(fake)
    assert not fake.refused, fake.refused
    assert voice.is_voice_message and len([r for r in fake.replies_to(note["id"]) if r.is_voice_message]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "given up on"


async def test_a_refusal_that_meets_the_bots_timeout_is_not_posted(settings, fake, caplog):
    # The timeout comes while the note downloads: "could not download" would be refused (50013) as
    # an answer would; the note waits, and the recheck downloads it again once the timeout ends.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, download_seconds=1.0, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        note = await fake.send_note(nova, voice_note(), guild=True, stall=30.0)
        # the "typing…" out first, as the 🎧: sent after the timeout, Discord would refuse it
        await fake.wait_for(
            lambda _: (
                fake.sent("cdn")
                and fake.sent("typing", ALLOWED_CHANNEL)
                and fake.sent("reaction_add", ALLOWED_CHANNEL)
            )
        )
        await fake.time_out_the_bot(600.0)
        await eventually(lambda: waits_out_the_timeout(caplog, note))
        fake.cdn_stalls.clear()
        await fake.time_out_the_bot(0.0)
        voice, _ = await answered(fake, note)
        await settle(fake)
    assert not fake.refused, fake.refused
    assert voice.is_voice_message
    assert DOWNLOAD_FAILED not in [r.content for r in fake.replies_to(note["id"])]


async def test_a_note_queued_behind_one_that_meets_the_bots_timeout_costs_no_turn(settings, fake, caplog):
    # The second note's turn would only compute an answer the timeout keeps from going out.
    caplog.set_level(logging.INFO)
    engine = FrontendEngine(delay=0.5)
    async with running_bot(settings, fake, engine=engine, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        first = await fake.send_note(nova, voice_note(), guild=True)
        queued = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(
            lambda _: fake.sent("typing", ALLOWED_CHANNEL) and fake.sent("reaction_add", ALLOWED_CHANNEL)
        )
        await fake.time_out_the_bot(600.0)
        await eventually(
            lambda: waits_out_the_timeout(caplog, first) and waits_out_the_timeout(caplog, queued)
        )
        assert len(engine.turns) == 1  # the first note's, under way as the timeout came
        await fake.time_out_the_bot(0.0)
        await answered(fake, first)
        await answered(fake, queued)
        await settle(fake)
    assert not fake.refused, fake.refused


async def test_a_note_too_big_queued_behind_one_that_meets_the_bots_timeout_is_refused_after_it(
    settings, fake, caplog
):
    # Its refusal needs no turn slot, but it is a post all the same: made while the bot is timed
    # out, Discord refuses it (50013). It waits, and is told once the timeout ends: counted as
    # refused then, once, not also for the refusal the timeout kept from being posted.
    from bot import metrics

    def too_big() -> float:
        labels = {"frontend": "discord", "outcome": "refused", "reason": "too_big"}
        return metrics.REGISTRY.get_sample_value("voxdesk_notes_total", labels) or 0.0

    caplog.set_level(logging.INFO)
    engine = FrontendEngine(delay=0.5)
    before = too_big()
    async with running_bot(settings, fake, engine=engine, recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        first = await fake.send_note(nova, voice_note(), guild=True)
        big = await fake.send_note(nova, voice_note(), guild=True, declared_size=50_000_000)
        await fake.wait_for(
            lambda _: fake.sent("typing", ALLOWED_CHANNEL) and fake.sent("reaction_add", ALLOWED_CHANNEL)
        )
        await fake.time_out_the_bot(600.0)
        await eventually(lambda: waits_out_the_timeout(caplog, first) and waits_out_the_timeout(caplog, big))
        await fake.time_out_the_bot(0.0)
        await answered(fake, first)
        await fake.wait_for(lambda _: fake.replies_to(big["id"]))
        await settle(fake)
    assert not fake.refused, fake.refused
    assert len(fake.replies_to(big["id"])) == 1
    assert too_big() - before == 1


@pytest.mark.parametrize("cut", [False, True], ids=["said", "its post cut off"])
async def test_a_message_of_two_notes_meeting_the_bots_timeout_says_one_at_a_time_once(
    settings, fake, caplog, cut: bool
):
    # "One at a time" goes out as the turn is claimed, before the answer meets the timeout; the
    # recheck answering the note once the timeout ends must not say it again. Its post cut off, it
    # never reached the player: that answer says it, or the player never learns the other note
    # went unheard.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, engine=FrontendEngine(delay=0.5), recheck_seconds=0.2) as h:
        await caught_up(h.bot)
        audio = (await fake.send_note(nova, voice_note(), guild=True, dispatch=False))["attachments"][0]
        fake.posts_cut = 1 if cut else 0
        if cut:
            # The turn's 🎧 and "typing…" on their way after the cut post's warning, as on a loaded
            # machine: a timeout then would meet them in flight and Discord refuse them (50013)
            # before its event tells the bot, which no look of the bot's can spare.
            fake.reactions_held, fake.typing_held = asyncio.Event(), asyncio.Event()
        two = await fake.send_message(
            nova,
            channel_id=ALLOWED_CHANNEL,
            guild=True,
            attachments=[audio, {**audio, "id": "2"}],
            flags=VOICE_FLAG,
        )
        if cut:
            await eventually(lambda: f"could not reply in channel {ALLOWED_CHANNEL}" in caplog.text)
            fake.reactions_held.set()
            fake.typing_held.set()
        # The timeout meets the answer, once the turn's requests are answered.
        await fake.wait_for(
            lambda _: (
                fake.sent("typing", ALLOWED_CHANNEL)
                and fake.sent("reaction_add", ALLOWED_CHANNEL)
                and (cut or [r for r in fake.replies_to(two["id"]) if r.content == ONE_AT_A_TIME])
            )
        )
        await fake.time_out_the_bot(600.0)
        await eventually(lambda: waits_out_the_timeout(caplog, two))
        await fake.time_out_the_bot(0.0)
        await answered(fake, two)
        await settle(fake)
    assert len(voice_replies(fake, two)) == 1
    assert [r.content for r in fake.replies_to(two["id"])].count(ONE_AT_A_TIME) == 1


async def test_typing_stops_once_the_bot_learns_it_is_timed_out_mid_turn(settings, fake, caplog, monkeypatch):
    # "typing…" goes again every TYPING_EVERY s while a turn lasts (a slow agent takes longer than
    # one): once discord.py has the bot's timeout, each more is refused (50013), into the rate limit.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, engine=FrontendEngine(delay=1.5), recheck_seconds=0.2) as h:
        monkeypatch.setattr(sys.modules["cogs.voice"], "TYPING_EVERY", 0.2)  # loaded by the bot
        await caught_up(h.bot)
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda _: fake.sent("typing", ALLOWED_CHANNEL))
        await fake.time_out_the_bot(600.0)
        await fake.read_by_the_bot()
        await eventually(lambda: waits_out_the_timeout(caplog, note))
        await fake.time_out_the_bot(0.0)
        await answered(fake, note)
        await settle(fake)
    assert [f"{r.kind} {r.path}" for r in fake.received if r.error is not None] == []


async def test_notes_still_queued_when_the_bot_is_kicked_cost_no_turn_and_no_request(settings, fake, caplog):
    fake.expect_refusals()  # the note whose answer was going out when the kick came
    caplog.set_level(logging.INFO)
    engine = FrontendEngine(delay=1.0)
    async with running_bot(settings, fake, engine=engine):
        first = await fake.send_note(nova, voice_note(), guild=True)
        queued = [await fake.send_note(nova, voice_note(), guild=True) for _ in range(2)]
        await fake.wait_for(  # the first one's turn: its 🎧 and "typing…" go out in either order
            lambda _: fake.sent("typing", ALLOWED_CHANNEL) and fake.sent("reaction_add", ALLOWED_CHANNEL)
        )
        await fake.kick_the_bot()
        for note in [first, *queued]:
            assert await settled(settings, note) == "expired"
    assert len(engine.turns) <= 1  # the queued notes were not heard
    asked = [r for r in fake.received if r.error == 50001]
    assert all(r.body is None or r.body.get("message_id") not in {n["id"] for n in queued} for r in asked)
    assert not [r for r in asked if r.kind in ("typing", "cdn")][1:]
    assert len(asked) <= 2, [f"{r.kind} {r.path}" for r in asked]


async def test_notes_still_queued_when_their_thread_is_deleted_cost_no_turn_and_no_request(
    settings, fake, caplog
):
    # The parent channel stays: only THREAD_DELETE says the thread is gone (discord.py drops an
    # archived thread from its cache the same way, and that one still takes a reply).
    fake.expect_refusals()  # the answer that was going out when the thread went
    caplog.set_level(logging.INFO)
    engine = FrontendEngine(delay=1.0)
    async with running_bot(settings, fake, engine=engine) as h:
        await caught_up(h.bot)  # a start's catch-up still reading would read the deleted thread too
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        first = await fake.send_note(nova, voice_note(), channel_id=thread)
        queued = [await fake.send_note(nova, voice_note(), channel_id=thread) for _ in range(2)]
        await fake.wait_for(  # the first one's turn: its 🎧 and "typing…" go out in either order
            lambda _: fake.sent("typing", thread) and fake.sent("reaction_add", thread)
        )
        await fake.delete_thread(thread)
        for note in [first, *queued]:
            assert await settled(settings, note) == "expired"
        later = await fake.send_note(nova, voice_note(), guild=True)  # the parent channel stays
        await answered(fake, later)
    assert len(engine.turns) == 2  # the first note's and the later one's: the queued were not heard
    # Refused: at most the first note's answer, and nothing about the queued ones.
    assert len(fake.refused) <= 1 and all("/messages" in r for r in fake.refused), fake.refused
    assert not [
        r for r in caplog.records if r.levelno >= logging.ERROR and str(queued[0]["id"]) in r.getMessage()
    ]


async def test_a_private_thread_discord_failed_to_read_on_joining_is_read_after_a_restart(settings, fake):
    # The read of the private thread a player just added the bot to is banned (the note whose
    # mention added it never reached the bot), a note sent there live is answered, which makes it
    # the thread's newest note handled, and the bot restarts before a recheck read the thread:
    # the next start must still read it from before the note that added the bot.
    async with running_bot(settings, fake, recheck_seconds=3600.0):
        await settle(fake)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        fake.history_banned = 1
        waiting = await asking_the_bot(fake, thread, dispatch=False)
        await fake.wait_for(lambda rs: [r for r in rs if r.kind == "history" and r.channel_id == thread])
        live = await fake.send_note(nova, voice_note(), channel_id=thread)
        await answered(fake, live)
        await settle(fake)
    assert not fake.replies_to(waiting["id"])
    async with running_bot(settings, fake) as h:
        await answered(fake, waiting, within=15)
        await caught_up(h.bot)
        await settle(fake)
    assert len(voice_replies(fake, waiting)) == len(voice_replies(fake, live)) == 1


async def test_a_private_thread_the_bot_leaves_before_its_read_on_joining_is_owed_no_read(settings, fake):
    # Owed on disk as the bot is added, the thread's read waits its turn (one read every 5 s), and
    # the bot is removed meanwhile: Discord would refuse any read of it, so nothing stays owed
    # there for each later start to try and warn of.
    async with running_bot(settings, fake, catch_up_reads_per_second=0.2) as h:
        await caught_up(h.bot)
        ledger = h.bot.core.notes
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        await fake.add_to_thread(thread)
        for _ in range(300):  # a table, no event: looked at every 50 ms for 15 s
            if thread in await ledger.owed_reads():
                break
            await asyncio.sleep(0.05)
        await fake.remove_from_thread(thread)
        for _ in range(300):
            if thread not in (owed := await ledger.owed_reads()):
                break
            await asyncio.sleep(0.05)
        await settle(fake)
    assert thread not in owed and not fake.sent("history", thread)


async def test_a_private_thread_discord_failed_to_read_on_joining_says_its_end_once_read(
    settings, fake, caplog
):
    # Its trouble was said (a warning); once the recheck reads it, the end of that trouble is too.
    caplog.set_level(logging.INFO, logger="cogs.catch_up")
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await settle(fake)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        fake.history_unavailable_in.add(thread)
        waiting = await asking_the_bot(fake, thread, dispatch=False)
        await fake.wait_for(lambda rs: [r for r in rs if r.kind == "history" and r.channel_id == thread])
        fake.history_unavailable_in.clear()
        await answered(fake, waiting, within=15)
        await settle(fake)
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.catch_up" and r.levelno >= logging.INFO]
    trouble = [m for m in said if m.startswith(f"could not read thread {thread}")]
    ended = [m for m in said if m == "catch-up: Discord serves every place again"]
    assert len(trouble) == len(ended) == 1, said


async def test_a_private_thread_whose_read_on_joining_loses_the_connection_is_read_at_the_recheck(
    settings, fake, caplog, monkeypatch
):
    # The connection to Discord breaks under the read of the thread the bot was just added to (a
    # reset, not an answer of Discord's): the note that added it (its event lost) was lost, the
    # read's traceback logged,
    # and the thread, remembered as read, was never read again.
    import aiohttp
    import discord

    reads = discord.abc.Messageable.history
    broken: set[int] = set()

    def history(self, *args, **kwargs):
        if self.id in broken:
            broken.discard(self.id)
            raise aiohttp.ClientOSError(104, "Connection reset by peer")
        return reads(self, *args, **kwargs)

    monkeypatch.setattr(discord.abc.Messageable, "history", history)
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await settle(fake)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        broken.add(thread)
        waiting = await asking_the_bot(fake, thread, dispatch=False)
        voice, _ = await answered(fake, waiting, within=15)
        await settle(fake)
    # The read on joining is the one that broke: the answer is the recheck's.
    assert f"the read of thread {thread} the bot was added to could not reach Discord" in caplog.text
    assert voice.channel_id == thread and len(voice_replies(fake, waiting)) == 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_the_read_of_a_thread_the_bot_is_added_to_waits_its_turn_in_the_catch_ups_pace(settings, fake):
    # A read on joining that took its request at once would let players (or a script) adding the
    # bot to many private threads spend the global rate limit the answers need, which the
    # catch-up's reads are paced to leave them. One read every 100 s: the start's read of the
    # channel takes the first.
    async with running_bot(settings, fake, catch_up_reads_per_second=0.01, shutdown_grace_seconds=0.1) as h:
        await caught_up(h.bot)
        catch_up = h.bot.get_cog("CatchUp")
        turn = catch_up._next_read
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True)
        await fake.send_note(nova, voice_note(), channel_id=thread)
        await fake.add_to_thread(thread)
        await eventually(lambda: catch_up._next_read > turn or fake.sent("history", thread))
        assert not fake.sent("history", thread)


async def test_a_note_queued_in_a_public_thread_the_bot_is_removed_from_is_still_answered(settings, fake):
    # Removed from a public thread, the bot still sees it and may post there (a post joins it
    # again): only a private thread is out of its reach until a player adds it back.
    engine = FrontendEngine(delay=1.0)
    async with running_bot(settings, fake, engine=engine) as h:
        await caught_up(h.bot)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=False, joined=True)
        first = await fake.send_note(nova, voice_note())
        queued = await fake.send_note(nova, voice_note(), channel_id=thread)
        await fake.wait_for(lambda _: fake.sent("typing"))  # the first note's turn, in a DM
        voice_cog = h.bot.get_cog("VoiceNotes")

        async def both_taken() -> None:  # the thread's note queued, behind the first
            while voice_cog._backlog.get(nova.id) != 2:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.01)

        await asyncio.wait_for(both_taken(), 10)
        await fake.remove_from_thread(thread)
        await answered(fake, first)
        voice, _ = await answered(fake, queued)
    assert voice.channel_id == thread and len(engine.turns) == 2


async def test_a_watched_channel_refused_again_after_a_good_read_is_warned_of_again(settings, fake, caplog):
    # Said once a process, a refusal an admin mended and that came back later (a role edited
    # again) would only be logged at DEBUG: the notes it strands said nowhere.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    fake.expect_refusals()  # the reads with the bot's cache behind
    async with running_bot(settings, fake) as h:
        catch_up = h.bot.get_cog("CatchUp")
        await caught_up(h.bot)
        since = discord.utils.utcnow() - datetime.timedelta(minutes=1)
        for denied in (True, True, False, True):
            if denied:
                await fake.deny(ALLOWED_CHANNEL, VIEW_CHANNEL, tell_the_bot=False)
            else:
                fake.denied.pop(ALLOWED_CHANNEL)
            await catch_up.catch_up(since)
        await settle(fake)
    said = [r for r in caplog.records if f"cannot read channel {ALLOWED_CHANNEL}:" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG, logging.WARNING], said


async def test_a_watched_channel_whose_archived_threads_discord_refuses_to_list_is_warned_of_once(
    settings, fake, caplog
):
    # The bot's cache behind (View Channel taken while it runs), Discord refuses the listing of a
    # watched channel's archived threads at every catch-up of the process: said once, as its
    # refused read is, and again once a listing went through and is refused later. One listing
    # refused is enough: its other listing would be refused too, each 403 toward Cloudflare's ban.
    caplog.set_level(logging.DEBUG, logger="cogs.catch_up")
    fake.expect_refusals()  # the reads and listings with the bot's cache behind
    async with running_bot(settings, fake) as h:
        catch_up = h.bot.get_cog("CatchUp")
        await caught_up(h.bot)
        since = discord.utils.utcnow() - datetime.timedelta(minutes=1)
        for denied in (True, True, False, True):
            if denied:
                await fake.deny(ALLOWED_CHANNEL, VIEW_CHANNEL, tell_the_bot=False)
            else:
                fake.denied.pop(ALLOWED_CHANNEL)
            await catch_up.catch_up(since)
        await settle(fake)
    refused = [r for r in fake.received if r.kind == "archived_threads" and r.error == 50001]
    assert len(refused) == 3, refused
    said = [r for r in caplog.records if f"archived threads of channel {ALLOWED_CHANNEL}:" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG, logging.WARNING], said
