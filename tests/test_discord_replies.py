"""Every reply reaches the player, however the note fares: through the real discord.py client and
the fake Discord, which refuses a reply to a deleted message unless it may stand alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from bot import audio
from bot.engines.base import EngineError, EngineReply, TurnState
from tests.discord_harness import blaze, nova, running_bot, settle, voice_note
from tests.fakes.discord_server import (
    ALLOWED_CHANNEL,
    ATTACH_FILES,
    CONNECTION_CUT,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    FakeDiscord,
    Received,
    serving,
)
from tests.frontend_engine import FrontendEngine
from tests.test_discord_news import eventually
from tests.test_discord_restarts import caught_up, rechecks

WARNING_SIGN = "\N{WARNING SIGN}"


@pytest.fixture
async def fake():
    async with serving() as running:
        yield running


async def replies(fake: FakeDiscord, message: dict[str, Any], count: int) -> list[Received]:
    return await fake.wait_for(lambda _: (r := fake.replies_to(message["id"])) and len(r) >= count and r)


async def reactions_settled(fake: FakeDiscord, message: dict[str, Any], kinds: int) -> list[Received]:
    """The reactions the bot tried on a message once `kinds` attempts have come in: the last
    thing it does for a note, so the answer is over."""

    def tried(records: list[Received]) -> list[Received] | None:
        mine = [r for r in records if r.kind.startswith("reaction") and r.body["message_id"] == message["id"]]
        return mine if len(mine) >= kinds else None

    return await fake.wait_for(tried)


def stood_alone(reply: Received) -> bool:
    """Posted (its request asked to reply to the note) as a plain message: the note was gone."""
    assert reply.response is not None
    return (
        reply.reply_to is not None
        and "message_reference" not in reply.response
        and not reply.response["type"]
    )


def warnings_logged(caplog: pytest.LogCaptureFixture, but: str = "") -> list[str]:
    """Warnings and errors from any logger, except the ones saying `but` (the test's own doing)."""
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    return [line for line in logged if not but or but not in line]


@pytest.mark.parametrize("how", ["dm", "guild", "guild bulk delete"])
async def test_a_note_deleted_mid_turn_gets_no_answer_and_is_settled(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, how: str
):
    # The player (or a moderator, all at once) deletes the note while its turn runs: the question
    # is withdrawn. An answer posted now would stand alone and say, in public in a channel, what
    # the player took back; nothing is posted, and the ledger settles it so no recheck answers it.
    caplog.set_level(logging.INFO)
    guild = how.startswith("guild")
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the answer waits until the note is gone, however slow the machine
    async with running_bot(settings, fake, engine=engine, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=guild)
        # Downloaded, and the 🎧 on (it goes out beside the turn): the turn is running.
        await fake.wait_for(lambda _: fake.sent("cdn") and fake.sent("reaction_add"))
        channel = int(note["channel_id"])
        if how == "guild bulk delete":
            chatter = await fake.send_message(blaze, channel_id=channel, guild=True, content="spam")
            await fake.delete_messages(channel, [note["id"], chatter["id"]])
        else:
            await fake.delete_message(channel, note["id"])
        await fake.read_by_the_bot()
        engine.hold.set()
        assert await settled(settings, note) == "expired"
        await rechecks(h.bot, 2)  # nothing left over for the recheck to fetch and answer
        await settle(fake)
    assert fake.replies_to(note["id"]) == []
    assert [r.kind for r in fake.received if r.kind.startswith("reaction")] == ["reaction_add"]
    assert not fake.sent("get_message")
    assert warnings_logged(caplog) == []
    assert fake.refused == []
    assert f"note {note['id']} from {nova.id} not answered: its player deleted it" in caplog.text


async def queued_behind_a_held_note(settings, fake: FakeDiscord, engine: FrontendEngine) -> tuple[dict, dict]:
    """Nova's note, its turn held at `engine`, and her next one, claimed and waiting behind it:
    the two notes."""
    first = await fake.send_note(nova, voice_note(), guild=True)
    await engine.until_asked(1)
    queued = await fake.send_note(nova, voice_note(), guild=True)
    await eventually(lambda: note_state(settings, queued) == "started")
    return first, queued


async def chatter_deleted(fake: FakeDiscord, count: int) -> None:
    """A moderator clears `count` chat messages of the channel, a hundred at a time."""
    ids = []
    for _ in range(count):  # only their deletions reach the bot
        chat = await fake.send_message(blaze, channel_id=ALLOWED_CHANNEL, guild=True, dispatch=False)
        ids.append(chat["id"])
    for start in range(0, count, 100):
        await fake.delete_messages(ALLOWED_CHANNEL, ids[start : start + 100])
    await fake.read_by_the_bot()


async def test_a_queued_note_deleted_before_a_purge_of_chat_is_not_answered(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # The player's second note waits behind their first; they delete it, and then the moderators
    # of a busy guild delete more chat than the bot remembers deletions of. The queued note's
    # deletion is not forgotten for theirs: nothing is posted for it, and it is settled.
    caplog.set_level(logging.INFO)
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine, recheck_seconds=3600.0) as h:
        first, queued = await queued_behind_a_held_note(settings, fake, engine)
        await fake.delete_message(ALLOWED_CHANNEL, queued["id"])
        await chatter_deleted(fake, loaded_voice(h.bot).MAX_DELETED + 1)
        engine.hold.set()
        assert await settled(settings, first) == "answered"
        assert await settled(settings, queued) == "expired"
        await settle(fake)
    assert fake.replies_to(queued["id"]) == []
    assert len(h.engine.turns) == 1
    assert warnings_logged(caplog) == []
    assert f"note {queued['id']} from {nova.id} not answered: its player deleted it" in caplog.text


async def test_a_note_read_back_and_deleted_before_a_purge_of_chat_is_not_answered(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # A start's catch-up reads a note sent while the bot was down, and still reads another place
    # before it answers what it found; the player deletes the note meanwhile, and then the
    # moderators of a busy guild delete more chat than the bot remembers deletions of. The note's
    # deletion is not forgotten for theirs: nothing is posted for it.
    caplog.set_level(logging.INFO)
    missed = await fake.send_note(nova, voice_note(), guild=True)
    thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
    fake.history_held[thread] = held = asyncio.Event()
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        # The channel read through (its row owed on disk gone), the thread's read still waiting.
        await eventually(lambda: fake.history_waiting and ALLOWED_CHANNEL not in owed_reads(settings))
        await fake.delete_message(ALLOWED_CHANNEL, missed["id"])
        await chatter_deleted(fake, loaded_voice(h.bot).MAX_DELETED + 1)
        del fake.history_held[thread]
        held.set()
        await caught_up(h.bot)
        await settle(fake)
    assert fake.replies_to(missed["id"]) == []
    assert h.engine.turns == []
    assert warnings_logged(caplog) == []


async def test_a_note_deleted_as_its_read_is_served_and_before_a_purge_of_chat_is_not_answered(
    settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # As above, but the player deletes the note as Discord serves the channel's read: the bot
    # hears the deletion before the page that holds the note. Then the purge: the deletion heard
    # first is not forgotten for theirs either.
    caplog.set_level(logging.INFO)
    serve, running = FakeDiscord._history, []

    def heard() -> bool:
        return int(missed["id"]) in running[0].get_cog("VoiceNotes")._deleted

    async def served_then_deleted(self: FakeDiscord, request: Any) -> Any:
        page = await serve(self, request)
        channel = int(request.match_info["channel_id"])
        if channel == ALLOWED_CHANNEL and int(missed["id"]) in self.messages.get(channel, {}):
            await self.delete_message(ALLOWED_CHANNEL, missed["id"])
            await eventually(heard)
        return page

    monkeypatch.setattr(FakeDiscord, "_history", served_then_deleted)  # bound as the fake starts
    async with serving() as fake:
        missed = await fake.send_note(nova, voice_note(), guild=True)
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        fake.history_held[thread] = held = asyncio.Event()
        fake.history_held[ALLOWED_CHANNEL] = begun = asyncio.Event()  # until the test has the bot
        async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
            running.append(h.bot)
            begun.set()
            await eventually(lambda: fake.history_waiting and ALLOWED_CHANNEL not in owed_reads(settings))
            await chatter_deleted(fake, loaded_voice(h.bot).MAX_DELETED + 1)
            del fake.history_held[thread]
            held.set()
            await caught_up(h.bot)
            await settle(fake)
    assert fake.replies_to(missed["id"]) == []
    assert h.engine.turns == []
    assert warnings_logged(caplog) == []


async def test_a_note_deleted_as_the_recheck_fetches_it_is_not_answered(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # Given back when Discord failed its answer, the note is fetched by the recheck; the player
    # deletes it as Discord serves it, and the bot hears the deletion before the fetch's answer,
    # before the note is scheduled again. It is not answered, by what the bot heard alone: the
    # ledger's write of the deletion comes later.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, recheck_seconds=3600.0, shutdown_grace_seconds=0.1) as h:
        monkeypatch.setattr(loaded_voice(h.bot), "WITHDRAWALS_EVERY", 3600.0)
        fake.posts_unavailable = 10
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
        fake.posts_unavailable = 0

        async def deleted_as_it_is_served(record: Received) -> None:
            fake.after_fetch = None
            await fake.delete_message(ALLOWED_CHANNEL, note["id"])
            await fake.read_by_the_bot()

        fake.after_fetch = deleted_as_it_is_served
        assert await h.bot.get_cog("CatchUp").answer_leftovers() == 1
        assert await settled(settings, note, but="pending") == "expired"  # by its turn: no reply after
    assert [r for r in fake.replies_to(note["id"]) if r.error is None] == []
    assert f"note {note['id']} from {nova.id} not answered: its player deleted it" in caplog.text


def posted_and_deleted(fake: FakeDiscord, reply: Received) -> bool:
    """Whether the bot deleted `reply` after posting it: a DELETE of it that Discord took, and
    the message gone from the channel."""
    assert reply.response is not None
    deleted = [r.body["message_id"] for r in fake.sent("message_delete", reply.channel_id)]
    gone = int(reply.response["id"]) not in fake.messages.get(int(reply.channel_id or 0), {})
    return deleted == [reply.response["id"]] and gone


@pytest.mark.parametrize("where", ["dm", "guild"])
async def test_a_note_deleted_while_its_transcript_is_posted_keeps_only_its_voice_message(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, where: str
):
    # The voice message is out when the deletion comes: the player may have heard it, so it stays
    # and answers the note. The transcript, on its way as the note went, would repeat it in
    # writing where the player took the question back: deleted once Discord has posted it.
    caplog.set_level(logging.INFO)
    gone: list[dict[str, Any]] = []

    async def delete_while_the_transcript_is_posted(record: Received) -> None:
        if not record.is_voice_message:
            fake.after_post = None
            await fake.delete_message(record.channel_id, gone[0]["id"])
            await fake.read_by_the_bot()

    fake.after_post = delete_while_the_transcript_is_posted
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        gone.append(await fake.send_note(nova, voice_note(), guild=where == "guild"))
        assert await settled(settings, gone[0]) == "answered"
        await rechecks(h.bot, 2)
        await settle(fake)
    voice, transcript = fake.replies_to(gone[0]["id"])
    assert voice.is_voice_message and posted_and_deleted(fake, transcript)
    assert int(voice.response["id"]) in fake.messages[voice.channel_id]
    assert len(h.engine.turns) == 1
    assert warnings_logged(caplog) == []
    assert fake.refused == []
    said = f"note {gone[0]['id']} deleted while its answer's text was being posted: that deleted too"
    assert said in caplog.text


@pytest.mark.parametrize("where", ["dm", "guild"])
async def test_a_voice_message_posted_as_its_note_was_deleted_is_deleted_too(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, where: str
):
    # The player deletes the note while the voice message's upload is under way: Discord posts it
    # an instant after the question was taken back, where it would stand alone and say in public
    # what the player withdrew. It is deleted as soon as Discord answers the POST, the transcript
    # never goes, and the note is settled unanswered.
    caplog.set_level(logging.INFO)
    gone: list[dict[str, Any]] = []

    async def delete_while_the_voice_message_is_posted(record: Received) -> None:
        if record.is_voice_message:
            fake.after_post = None
            await fake.delete_message(record.channel_id, gone[0]["id"])
            await fake.read_by_the_bot()

    fake.after_post = delete_while_the_voice_message_is_posted
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        gone.append(await fake.send_note(nova, voice_note(), guild=where == "guild"))
        assert await settled(settings, gone[0]) == "expired"
        await rechecks(h.bot, 2)
        await settle(fake)
    (voice,) = fake.replies_to(gone[0]["id"])
    assert voice.is_voice_message and posted_and_deleted(fake, voice)
    assert len(h.engine.turns) == 1
    assert warnings_logged(caplog) == []
    assert fake.refused == []
    said = f"note {gone[0]['id']} deleted while its answer's voice message was being posted: that deleted too"
    assert said in caplog.text


async def test_a_voice_message_whose_deletion_breaks_off_answers_its_deleted_note(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # The note is deleted while its voice message is posted, and the connection breaks under the
    # bot's DELETE of it: the voice message may stand, so it answers the note, as one Discord
    # refused to delete does. The broken DELETE is no failure of the answer: the note is not
    # given back as "answered again later", to be settled unanswered under a voice message.
    caplog.set_level(logging.INFO)
    gone: list[dict[str, Any]] = []

    async def delete_while_the_voice_message_is_posted(record: Received) -> None:
        if record.is_voice_message:
            fake.after_post = None
            await fake.delete_message(record.channel_id, gone[0]["id"])
            await fake.read_by_the_bot()

    fake.after_post = delete_while_the_voice_message_is_posted
    # Twice: aiohttp sends an idempotent request again once when a reused connection breaks.
    fake.deletes_cut = 2
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        gone.append(await fake.send_note(nova, voice_note(), guild=True))
        assert await settled(settings, gone[0]) == "answered"
        await rechecks(h.bot, 2)
        await settle(fake)
    (voice,) = fake.replies_to(gone[0]["id"])
    assert voice.is_voice_message and int(voice.response["id"]) in fake.messages[voice.channel_id]
    assert len(fake.sent("message_delete", voice.channel_id)) in (1, 2)
    assert len(h.engine.turns) == 1
    cut = f"could not delete the voice message posted for note {gone[0]['id']}"
    assert [line for line in warnings_logged(caplog) if cut not in line] == []
    assert cut in caplog.text


async def test_a_note_kept_for_later_and_then_deleted_is_settled_unanswered(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # Discord fails the answer (503 past discord.py's retries): the note waits for the recheck.
    # The player deletes it meanwhile: the ledger settles it at once, and the recheck neither
    # fetches it nor posts the answer kept for it.
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        fake.posts_unavailable = 10
        await settle(fake)  # the start's first recheck over: none fetches the note before its deletion
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
        fake.posts_unavailable = 0
        await fake.delete_message(ALLOWED_CHANNEL, note["id"])
        assert await settled(settings, note, but="pending") == "expired"
        catch_up = h.bot.get_cog("CatchUp")
        assert await catch_up.answer_leftovers() == 0
        await settle(fake)
    assert [r for r in fake.replies_to(note["id"]) if r.error is None] == []
    assert not fake.sent("get_message")


async def test_a_file_reply_posted_as_its_note_was_deleted_is_deleted_too(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # Where a voice message is refused the spoken reply goes as a file with the transcript's first
    # piece: posted as the note was deleted, it goes too, and nothing of the answer stays.
    caplog.set_level(logging.INFO)
    fake.refuse_voice_in.add(ALLOWED_CHANNEL)

    async def delete_while_the_file_is_posted(record: Received) -> None:
        fake.after_post = None
        assert record.files and record.reply_to is not None
        await fake.delete_message(record.channel_id, record.reply_to)
        await fake.read_by_the_bot()

    fake.after_post = delete_while_the_file_is_posted
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "expired"
        await rechecks(h.bot, 2)
        await settle(fake)
    (file_reply,) = [r for r in fake.replies_to(note["id"]) if r.error is None]
    assert file_reply.files and posted_and_deleted(fake, file_reply)
    assert warnings_logged(caplog) == []
    said = f"note {note['id']} deleted while its answer's file was being posted: that deleted too"
    assert said in caplog.text


@pytest.mark.parametrize("where", ["dm", "guild"])
async def test_a_refusal_posted_as_its_note_was_deleted_is_deleted_too(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, where: str
):
    # "Too big" for a note the player deletes as it goes out: it would stand alone, answering
    # nothing there is. Deleted once Discord has posted it; the note is settled unanswered.
    caplog.set_level(logging.INFO)

    async def delete_while_the_refusal_is_posted(record: Received) -> None:
        fake.after_post = None
        assert record.reply_to is not None  # the note's, which may be answered before send_note returns
        await fake.delete_message(record.channel_id, record.reply_to)
        await fake.read_by_the_bot()

    fake.after_post = delete_while_the_refusal_is_posted
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=where == "guild", declared_size=50_000_000)
        assert await settled(settings, note) == "expired"
        await rechecks(h.bot, 2)
        await settle(fake)
    (refusal,) = fake.replies_to(note["id"])
    assert "too big" in refusal.content and posted_and_deleted(fake, refusal)
    assert not fake.sent("cdn")
    assert warnings_logged(caplog) == []
    assert fake.refused == []


async def session_lost(fake: FakeDiscord, meanwhile: Callable[[], Awaitable[Any]]) -> None:
    """The gateway goes away long enough for Discord to forget the bot's session: what happens
    `meanwhile` sends the bot no event, now or after, and it identifies afresh."""
    identified = len(fake.identify_payloads)
    fake.gateway_outage()
    await fake.lose_the_session()
    await fake.wait_for(lambda _: fake.hanging_connections)  # the bot knows it is cut off
    await meanwhile()
    fake.end_gateway_outage()
    await fake.wait_for(lambda _: len(fake.identify_payloads) > identified and fake.bot_connected, 60)


async def test_a_queued_note_deleted_in_a_lost_gateway_session_gets_no_answer(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # The note waits behind its player's first; they delete it while the bot's gateway session is
    # lost, and no MESSAGE_DELETE ever comes. Its answer, posted as a reply to a gone message,
    # stands alone (see reply_reference): Discord's answer says the note may be gone, its fetch
    # (404) that it is, and the answer is deleted, nothing more posted, the note settled unanswered.
    caplog.set_level(logging.INFO)
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine, recheck_seconds=0.2) as h:
        first, queued = await queued_behind_a_held_note(settings, fake, engine)
        await session_lost(fake, lambda: fake.delete_message(ALLOWED_CHANNEL, queued["id"]))
        engine.hold.set()
        assert await settled(settings, first) == "answered"
        assert await settled(settings, queued) == "expired"
        await rechecks(h.bot, 2)
        await settle(fake)
    (voice,) = fake.replies_to(queued["id"])  # no transcript after it
    assert voice.is_voice_message and stood_alone(voice) and posted_and_deleted(fake, voice)
    # Its 🎧, tried as its turn began (the note gone, unknown to the bot): no ⚠️ after.
    tried = [
        r for r in fake.received if r.kind.startswith("reaction") and r.body["message_id"] == queued["id"]
    ]
    assert [(r.kind, r.body["emoji"]) for r in tried] == [("reaction_add", "\N{HEADPHONE}")]
    assert warnings_logged(caplog) == []
    assert fake.refused == []
    assert f"note {queued['id']} from {nova.id} not answered: its player deleted it" in caplog.text


async def test_a_note_sent_and_deleted_in_a_lost_gateway_session_is_not_answered_by_the_catch_up(
    settings, fake: FakeDiscord
):
    # Neither its MESSAGE_CREATE nor its MESSAGE_DELETE reaches the bot: the new session's
    # catch-up reads the channel, where the note is no more.
    async with running_bot(settings, fake) as h:
        await caught_up(h.bot)
        gone: list[dict[str, Any]] = []

        async def sent_and_deleted() -> None:
            gone.append(await fake.send_note(nova, voice_note(), guild=True))
            await fake.delete_message(ALLOWED_CHANNEL, gone[0]["id"])

        reads = len(fake.sent("history", ALLOWED_CHANNEL))
        await session_lost(fake, sent_and_deleted)
        later = await fake.send_note(nova, voice_note(), guild=True)
        await replies(fake, later, 2)
        await fake.wait_for(lambda _: fake.sent("history", ALLOWED_CHANNEL)[reads:])  # the catch-up's read
        await settle(fake)
    assert fake.replies_to(gone[0]["id"]) == []
    assert note_state(settings, gone[0]) is None


def loaded_voice(bot: Any) -> ModuleType:
    """The cogs.voice module the running bot took its cog from: discord.py loads an extension
    afresh, so the one this file imports is another, and a setting patched there reaches no bot."""
    return sys.modules[type(bot.get_cog("VoiceNotes")).__module__]


def counting_withdrawals(monkeypatch: pytest.MonkeyPatch, bot: Any) -> list[list[int]]:
    """The message ids of each write the bot makes to settle deleted messages in its ledger."""
    ledger, calls = bot.core.notes, []
    withdrawn = ledger.withdrawn

    async def counted(message_ids: list[int]) -> list[tuple[int, int]]:
        calls.append(list(message_ids))
        return await withdrawn(message_ids)

    monkeypatch.setattr(ledger, "withdrawn", counted)
    return calls


async def test_a_burst_of_deletions_is_settled_in_one_ledger_write(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
):
    # A moderator clears a channel one message at a time, a note kept for later among them: one
    # MESSAGE_DELETE each, mostly for no note, and one write settles them all, the note too.
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        # The burst falls in it however slow the machine.
        monkeypatch.setattr(loaded_voice(h.bot), "WITHDRAWALS_EVERY", 5.0)
        fake.posts_unavailable = 10
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
        fake.posts_unavailable = 0
        chatter = [
            await fake.send_message(blaze, channel_id=ALLOWED_CHANNEL, guild=True, content=f"spam {n}")
            for n in range(9)
        ]
        await fake.read_by_the_bot()
        calls = counting_withdrawals(monkeypatch, h.bot)
        for message in [*chatter[:4], note, *chatter[4:]]:
            await fake.delete_message(ALLOWED_CHANNEL, message["id"])
        assert await settled(settings, note, but="pending") == "expired"
        await settle(fake)
    deleted = [int(m["id"]) for m in [*chatter[:4], note, *chatter[4:]]]
    assert calls == [deleted]


async def test_a_deletion_heard_as_the_bot_stops_is_settled_before_the_ledger_closes(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
):
    # The stop cuts the wait for more deletions short: the one heard is written, not lost, and a
    # restart's recheck does not answer the note.
    async with running_bot(settings, fake, recheck_seconds=3600.0, shutdown_grace_seconds=0.1) as h:
        # Only the stop ends the wait, however slow the machine.
        monkeypatch.setattr(loaded_voice(h.bot), "WITHDRAWALS_EVERY", 3600.0)
        fake.posts_unavailable = 10
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
        fake.posts_unavailable = 0
        calls = counting_withdrawals(monkeypatch, h.bot)
        await fake.delete_message(ALLOWED_CHANNEL, note["id"])
        await fake.read_by_the_bot()
        assert note_state(settings, note) == "pending"  # still waiting for more deletions
    assert calls == [[int(note["id"])]]
    assert note_state(settings, note) == "expired"


async def test_a_deletion_whose_write_a_stop_cancels_before_it_begins_is_settled_all_the_same(
    settings, fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
):
    # A task cancelled before its first step never runs its body: the batch's own write at a cut
    # was skipped, and the deletion heard in that instant was never written to the ledger.
    async with running_bot(settings, fake, recheck_seconds=3600.0, shutdown_grace_seconds=0.1) as h:
        fake.posts_unavailable = 10
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
        fake.posts_unavailable = 0
        calls = counting_withdrawals(monkeypatch, h.bot)
        h.bot.get_cog("VoiceNotes")._deleted_now([int(note["id"])])  # type: ignore[union-attr]
        await h.bot._cut_short("as the test stops it")  # the batch's task has not begun
        assert note_state(settings, note) == "pending"
    assert calls == [[int(note["id"])]]
    assert note_state(settings, note) == "expired"


class DownOnceHeld(FrontendEngine):
    """A model service that fails the turn once the test lets it go on."""

    async def complete(self, turn: TurnState) -> EngineReply:
        await super().complete(turn)
        raise EngineError("model service unreachable")


async def test_no_apology_goes_out_for_a_note_deleted_before_its_turn_failed(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # "The voice service is down, try again" answers a question the player took back: not posted.
    caplog.set_level(logging.INFO)
    engine = DownOnceHeld()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine):
        note = await fake.send_note(nova, voice_note(), guild=True)
        await engine.until_asked(1)
        await fake.delete_message(ALLOWED_CHANNEL, note["id"])
        await fake.read_by_the_bot()
        engine.hold.set()
        assert await settled(settings, note) == "expired"
        await settle(fake)
    assert fake.replies_to(note["id"]) == []
    assert fake.refused == []
    assert warnings_logged(caplog, but="model service unreachable") == []


async def test_a_hint_for_a_deleted_message_goes_out(settings, fake: FakeDiscord):
    async with running_bot(settings, fake):
        dm = 940000000000000000 + nova.id % 10**9
        text = await fake.send_message(nova, channel_id=dm, guild=False, content="how many points?")
        await fake.delete_message(dm, text["id"])
        (hint,) = await replies(fake, text, 1)
        assert "I answer voice notes" in hint.content and stood_alone(hint)


async def test_the_file_fallback_is_uploaded_as_ogg_audio(settings, fake: FakeDiscord):
    fake.refuse_voice_in.add(ALLOWED_CHANNEL)
    async with running_bot(settings, fake):
        note = await fake.send_note(nova, voice_note(), guild=True)
        (reply,) = await replies(fake, note, 1)
        (upload,) = reply.files
        assert (upload.filename, upload.content_type) == ("reply.ogg", "audio/ogg")
        assert reply.response is not None
        (attachment,) = reply.response["attachments"]
        assert attachment["content_type"] == "audio/ogg"  # what players' clients are told it is
        assert reply.body["attachments"] == [
            {"id": "0", "filename": "reply.ogg", "description": "spoken reply"}
        ]
        assert reply.body["message_reference"]["fail_if_not_exists"] is False


class SaysNothingAloud(FrontendEngine):
    """Answers in words a voice cannot say (punctuation), spoken as the offline engine speaks: PCM
    through the reply encoder, here no sound at all or a 50 ms click."""

    def __init__(self, words: str, seconds: float) -> None:
        super().__init__(use_tools=False)
        self.words = words
        self.seconds = seconds

    async def complete(self, turn: TurnState) -> EngineReply:
        pcm = np.full(int(self.seconds * 22_050), 3000, dtype=np.int16).tobytes()
        return EngineReply(text=self.words, reply_audio=audio.reply_from_pcm(pcm, 22_050))


@pytest.mark.parametrize("seconds", [0.0, 0.05])
async def test_a_reply_with_nothing_to_hear_goes_out_as_its_words(
    settings, fake: FakeDiscord, seconds: float
):
    async with running_bot(settings, fake, engine=SaysNothingAloud("...!?", seconds)):
        note = await fake.send_note(nova, voice_note())
        await reactions_settled(fake, note, 2)  # 🎧 on, then off: answered, and no ⚠
        (reply,) = fake.replies_to(note["id"])
        assert reply.content == "...!?" and not reply.files and not reply.is_voice_message
    assert fake.refused == [] and fake.violations == []


async def test_a_reply_with_nothing_to_hear_or_read_is_an_apology_not_silence(settings, fake: FakeDiscord):
    from bot.sentences import OOPS

    async with running_bot(settings, fake, engine=SaysNothingAloud("", 0.0)):
        note = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda _: fake.replies_to(note["id"]) or None)
        (reply,) = fake.replies_to(note["id"])
        assert reply.content == OOPS


@pytest.mark.parametrize("words", ["", " \n "], ids=["none", "blanks"])
@pytest.mark.parametrize("linked", [True, False], ids=["linked", "unlinked"])
async def test_a_reply_with_nothing_to_read_goes_out_as_audio_in_the_text_style(
    settings, fake: FakeDiscord, words: str, linked: bool
):
    """A model's audio whose transcript came empty: the player who reads their answers gets it to
    hear, not "something went wrong". Where it cannot be a reply, the file names them."""
    if not linked:
        fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake, engine=SaysNothingAloud(words, 1.0)) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "text")
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    (reply,) = fake.sent("message", ALLOWED_CHANNEL)
    if linked:
        assert reply.is_voice_message and reply.reply_to is not None
    else:
        assert not reply.is_voice_message and reply.reply_to is None
        assert reply.content == f"<@{nova.id}>" and reply.files[0].data.startswith(b"OggS")
    assert fake.violations == []


async def test_a_voice_and_text_reply_of_blank_words_unlinked_names_the_player_once(
    settings, fake: FakeDiscord
):
    """Unlinked, a voice message names nobody; the words after it would have been a bare
    mention. The file style's words name the player instead."""
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake, engine=SaysNothingAloud(" \n ", 1.0)):
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    sent = fake.sent("message", ALLOWED_CHANNEL)
    assert [(r.is_voice_message, r.content, len(r.files)) for r in sent] == [(False, f"<@{nova.id}>", 1)]


class SaysTheStartAloud(SaysNothingAloud):
    """A reply too long to say whole, as the offline engine speaks it: its start, then "There's
    more in the written reply"."""

    async def complete(self, turn: TurnState) -> EngineReply:
        reply = await super().complete(turn)
        return dataclasses.replace(reply, spoken_in_part=True)


@pytest.mark.parametrize("in_part", [True, False], ids=["in_part", "whole"])
async def test_a_voice_only_player_is_sent_the_words_a_voice_says_are_written(
    settings, fake: FakeDiscord, in_part: bool
):
    """Told "There's more in the written reply" with no written reply sent, a player who asked for
    voice alone had the rest of the answer nowhere."""
    words = "Tip 1: reload behind cover. Tip 2: crouch to steady your aim."
    engine = (SaysTheStartAloud if in_part else SaysNothingAloud)(words, 1.0)
    async with running_bot(settings, fake, engine=engine) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "voice")
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    sent = fake.sent("message", ALLOWED_CHANNEL)
    assert sent[0].is_voice_message
    assert [r.content for r in sent[1:]] == ([words] if in_part else [])


class RepeatsAfterThePlayer(FrontendEngine):
    """A model talked into saying what a player (or a manual's text) told it to."""

    WORDS = (
        "Your reward is ready: [claim your 500 gems](https://evil.example/gems) "
        "\\[or here](https://evil.example/2) @everyone, rules at https://wiki.example/gems?tier=[2]&ask=a\\b"
    )

    def __init__(self) -> None:
        super().__init__(use_tools=False)

    async def complete(self, turn: TurnState) -> EngineReply:
        reply = await super().complete(turn)
        reply.text = self.WORDS
        return reply


@pytest.mark.parametrize("where", ["transcript", "file fallback"])
async def test_a_masked_link_in_a_reply_shows_its_address_in_the_channel(
    settings, fake: FakeDiscord, where: str
):
    """A link whose words hide where it goes would be the bot vouching for it: the players in the
    channel see the address, and nobody is pinged."""
    if where == "file fallback":
        fake.refuse_voice_in.add(ALLOWED_CHANNEL)
    async with running_bot(settings, fake, engine=RepeatsAfterThePlayer()):
        note = await fake.send_note(nova, voice_note(), guild=True)
        sent = await replies(fake, note, 2 if where == "transcript" else 1)
    (text,) = [r for r in sent if r.content]
    # Discord reads [words](address) as a link unless its "[" is escaped by an odd run of "\"
    assert not re.search(r"(?<!\\)(\\\\)*\[[^\]]*\]\(", text.content), text.content
    assert "https://evil.example/gems" in text.content and "https://evil.example/2" in text.content
    assert "https://wiki.example/gems?tier=[2]&ask=a\\b" in text.content  # as written: it goes where it says
    assert text.body["allowed_mentions"]["parse"] == []
    assert fake.violations == []


def note_state(settings, note: dict[str, Any]) -> str | None:
    """The note's state in the bot's ledger (pending, started, answered, expired, refused)."""
    with contextlib.closing(sqlite3.connect(settings.storage_dir / "notes.db")) as conn:
        row = conn.execute("SELECT state FROM notes WHERE message_id = ?", (int(note["id"]),)).fetchone()
    return row[0] if row else None


def owed_reads(settings) -> set[int]:
    """The places the bot's catch-up owes a read in its ledger (see NoteLedger.owed_reads)."""
    with contextlib.closing(sqlite3.connect(settings.storage_dir / "notes.db")) as conn:
        return {row[0] for row in conn.execute("SELECT place_id FROM owed_reads")}


async def settled(settings, note: dict[str, Any], but: str = "started") -> str:
    """The note's state once the bot has settled it (the ledger is a file: it is polled); once it
    is other than `but`, if given."""
    for _ in range(400):
        state = note_state(settings, note)
        if state not in (None, "started", but):
            return state
        await asyncio.sleep(0.05)
    raise TimeoutError(f"note {note['id']} is still {state}")


def in_channel(fake: FakeDiscord, count: int) -> Any:
    return lambda _: (sent := fake.sent("message", ALLOWED_CHANNEL)) and len(sent) >= count and sent


@pytest.mark.parametrize("known", [True, False], ids=["permissions known", "not yet known"])
async def test_without_read_message_history_the_answer_goes_out_unlinked_naming_the_player(
    settings, fake: FakeDiscord, known: bool
):
    if known:
        fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake):
        if not known:  # denied after the bot connected, and it has not heard: Discord refuses
            fake.expect_refusals()
            await fake.deny(ALLOWED_CHANNEL, READ_MESSAGE_HISTORY, tell_the_bot=False)
        note = await fake.send_note(nova, voice_note(), guild=True)
        voice, transcript = await fake.wait_for(in_channel(fake, 2))
        assert await settled(settings, note) == "answered"
    assert voice.is_voice_message and transcript.content.startswith(f"<@{nova.id}> Nova, you have")
    assert voice.reply_to is None and transcript.reply_to is None
    assert transcript.body["allowed_mentions"]["parse"] == []  # named, not pinged
    refused = [r for r in fake.received if r.error is not None]
    if known:  # no reply, no reaction was tried: each would be refused
        assert refused == [] and not fake.sent("reaction_add", ALLOWED_CHANNEL)
    else:  # each message is refused once as a reply, then goes out plain
        assert len([r for r in refused if r.kind == "message"]) == 2


@pytest.mark.parametrize("known", [True, False], ids=["permissions known", "not yet known"])
async def test_without_send_messages_a_note_is_given_up_on_and_logged_not_answered(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, known: bool
):
    caplog.set_level(logging.INFO)
    if known:
        fake.denied[ALLOWED_CHANNEL] = SEND_MESSAGES
    async with running_bot(settings, fake) as h:
        if not known:
            fake.expect_refusals()
            await fake.deny(ALLOWED_CHANNEL, SEND_MESSAGES, tell_the_bot=False)
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "expired"  # given up on: no restart tries it again
        if known:  # no turn is spent on an answer that cannot go out
            assert h.engine.turns == []
    assert not fake.sent("message", ALLOWED_CHANNEL)
    problems = warnings_logged(caplog)
    assert any(str(note["id"]) in line for line in problems), problems
    if known:
        assert [r for r in fake.received if r.error is not None] == []


@pytest.mark.parametrize("known", [True, False], ids=["permissions known", "not yet known"])
async def test_without_attach_files_the_file_fallback_is_the_transcript_alone(
    settings, fake: FakeDiscord, known: bool
):
    fake.refuse_voice_in.add(ALLOWED_CHANNEL)  # no voice message here: the fallback is a file
    if known:
        fake.denied[ALLOWED_CHANNEL] = ATTACH_FILES
    async with running_bot(settings, fake):
        if not known:
            fake.expect_refusals()
            await fake.deny(ALLOWED_CHANNEL, ATTACH_FILES, tell_the_bot=False)
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    (reply,) = fake.replies_to(note["id"])[-1:]
    assert reply.content.startswith("Nova, you have") and not reply.files
    assert [r.content for r in fake.sent("message", ALLOWED_CHANNEL)] == [reply.content]  # no sorry line


HOURGLASS = "\N{HOURGLASS WITH FLOWING SAND}"


async def test_a_note_discord_failed_to_take_the_answer_for_is_answered_when_discord_is_back(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    fake.posts_unavailable = 2  # the voice message, then its words: 503 each, not retried
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note())
        voice, transcript = await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
        await fake.wait_for(
            lambda got: any(r.kind == "reaction_remove" and r.body["emoji"] == HOURGLASS for r in got)
        )
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert len(h.engine.turns) == 1  # the answer made is sent again, not heard again
    assert [(r.kind, r.error) for r in fake.received if r.error is not None] == [("message", 0)] * 2
    assert any(f"note {note['id']}" in line and "answered again" in line for line in warnings_logged(caplog))


async def test_a_note_answered_again_before_its_hourglass_reached_discord_loses_the_hourglass(
    settings, fake: FakeDiscord
):
    # Discord holds the note's reactions (a raid's queue on the channel's reaction limit) while
    # the recheck fetches the note and answers it: the fetched note shows no ⏳ yet, and a ⏳
    # landing after it would tell the player an answer is still to come.
    fake.posts_unavailable = 2  # the voice message, then its words: the note is left for the recheck
    fake.reactions_held = asyncio.Event()
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
        assert len(h.engine.turns) == 1 and not fake.sent("reaction_add")
        fake.reactions_held.set()
        await fake.wait_for(
            lambda got: any(
                r.kind == "reaction_remove" and r.body == {"message_id": note["id"], "emoji": HOURGLASS}
                for r in got
            )
        )
    assert fake.messages[ALLOWED_CHANNEL][int(note["id"])].get("reactions", []) == []


async def test_a_note_whose_reaction_loses_the_connection_is_answered_and_marked(settings, fake: FakeDiscord):
    # The 🎧 put on the note loses its connection to Discord (twice: aiohttp sends a PUT again
    # once when a kept-alive connection closes). A reaction is decoration: the note is answered
    # all the same, and marked answered, not left claimed by a bot that will never answer it.
    fake.reactions_cut = 2
    async with running_bot(settings, fake) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        voice, transcript = await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
        assert len(h.engine.turns) == 1
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert next(r.kind for r in fake.received if r.error == CONNECTION_CUT) == "reaction_add"


async def test_a_note_whose_typing_loses_the_connection_is_answered(settings, fake: FakeDiscord):
    # "typing…" is decoration too: its request losing the connection costs nothing else.
    fake.typing_cut = 1
    async with running_bot(settings, fake):
        note = await fake.send_note(nova, voice_note(), guild=True)
        voice, transcript = await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
        # "typing…" goes out beside the turn: its request may reach Discord after the answer.
        await fake.wait_for(lambda got: [r for r in got if r.kind == "typing" and r.error == CONNECTION_CUT])
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert next(r.kind for r in fake.received if r.error == CONNECTION_CUT) == "typing"


async def test_a_note_whose_answer_went_out_before_discord_failed_is_not_answered_again(
    settings, fake: FakeDiscord
):
    # The voice message is out; then Discord fails the transcript (503, past discord.py's
    # retries). The player has their answer: no apology for it, and it is not given again later.
    async def fail_after_the_voice_message(record: Received) -> None:
        if record.is_voice_message:
            fake.after_post = None
            fake.posts_unavailable = 1

    fake.after_post = fail_after_the_voice_message
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
        await reactions_settled(fake, note, 2)
    assert [r.is_voice_message for r in fake.replies_to(note["id"])] == [True]
    assert [(r.kind, r.error) for r in fake.received if r.error is not None] == [("message", 0)]
    assert len(h.engine.turns) == 1


async def test_a_note_whose_answer_loses_the_connection_is_answered_later_with_no_apology(
    settings, fake: FakeDiscord
):
    # The connection to Discord drops under the voice message: the note is Discord's trouble, not
    # the player's, and the recheck answers it once posts go out. An apology that got through
    # would tell the player to try again, and settle the note with no answer.
    fake.posts_cut = 1
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        voice, transcript = await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
        assert len(h.engine.turns) == 1  # the answer made is sent again, not heard again
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert [r.kind for r in fake.received if r.error == CONNECTION_CUT] == ["message"]


async def test_a_link_refused_mid_reply_sends_the_rest_unlinked_without_repeating(
    settings, fake: FakeDiscord
):
    engine = FrontendEngine()
    engine.long_reply = True  # a transcript of two pieces

    async def deny_after_the_first_piece(posted: Received) -> None:
        if len(fake.sent("message", ALLOWED_CHANNEL)) == 2:  # the voice message, then piece one
            # The 🎧 goes out beside the turn, and a late one would be refused as well.
            await fake.wait_for(lambda _: fake.sent("reaction_add", ALLOWED_CHANNEL))
            await fake.deny(ALLOWED_CHANNEL, READ_MESSAGE_HISTORY, tell_the_bot=False)

    fake.after_post = deny_after_the_first_piece
    fake.expect_refusals()
    async with running_bot(settings, fake, engine=engine):
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    voice, *pieces = fake.sent("message", ALLOWED_CHANNEL)
    assert voice.is_voice_message and [p.reply_to is not None for p in pieces] == [True, False]
    assert len([r for r in fake.received if r.error == 160002]) == 1  # Discord's code for it
    told = " ".join(p.content for p in pieces)
    assert told.startswith("Nova, you have") and told.count("Tip 59:") == 1 and told.count("Tip 0:") == 1


async def test_voice_only_without_read_message_history_is_a_file_naming_the_player(
    settings, fake: FakeDiscord
):
    fake.denied[ALLOWED_CHANNEL] = READ_MESSAGE_HISTORY
    async with running_bot(settings, fake) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "voice")
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    (reply,) = fake.sent("message", ALLOWED_CHANNEL)
    assert not reply.is_voice_message and reply.reply_to is None
    assert reply.content == f"<@{nova.id}>" and reply.files[0].data.startswith(b"OggS")
