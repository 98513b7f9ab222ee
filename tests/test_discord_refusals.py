"""Discord refusing or failing while the bot answers notes, as Discord answers: rate limits, its
edge's 502 after a message was posted, Cloudflare's ban, an upload over the channel's limit, and
reactions and typing held up. Every note gets exactly one answer."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import discord
import pytest

import cogs.replies
from bot import sentences as say
from tests.conftest import NOVA
from tests.discord_harness import blaze, caught_up, nova, quill, running_bot, settle, voice_note
from tests.fakes.discord_server import (
    ALLOWED_CHANNEL,
    ATTACH_FILES,
    SEND_MESSAGES,
    SEND_VOICE_MESSAGES,
    FakeDiscord,
    dm_channel_id,
    serving,
)
from tests.frontend_engine import FrontendEngine
from tests.test_discord_news import dms, eventually, fast, news_states, sql, staff
from tests.test_discord_replies import (
    HOURGLASS,
    SaysNothingAloud,
    note_state,
    replies,
    settled,
    warnings_logged,
)


@pytest.fixture
async def fake():
    async with serving() as running:
        yield running


@pytest.mark.parametrize("guild", [False, True], ids=["dm", "channel"])
async def test_a_voice_message_discord_posted_but_answered_502_for_is_posted_once(
    settings, fake: FakeDiscord, guild: bool
):
    # Discord's edge answers 502 after the message was made; discord.py sends the POST again.
    fake.posts_lost = 1
    async with running_bot(settings, fake) as h:
        note = await fake.send_note(nova, voice_note(), guild=guild)
        voice, transcript = await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert [r.is_voice_message for r in fake.replies_to(note["id"])] == [True, False]
    assert [r.kind for r in fake.received if r.kind == "message_again"] == ["message_again"]
    assert len(h.engine.turns) == 1


@pytest.mark.parametrize("file", [False, True], ids=["voice message", "file"])
async def test_audio_discord_posted_as_the_connection_broke_is_not_posted_again_later(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, file: bool
):
    # The audio is posted, but its connection breaks before Discord's answer: the bot cannot
    # know, and sends the answer again once posts go out. The audio Discord has is not posted a
    # second time; the transcript follows it.
    if file:
        fake.refuse_voice_in.add(ALLOWED_CHANNEL)
    fake.posts_cut_after = 1
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda _: fake.sent("message_again"))
        assert await settled(settings, note) == "answered"
    assert len(h.engine.turns) == 1  # sent again, not heard again
    audio = [r for r in fake.replies_to(note["id"]) if r.files]
    assert len(audio) == 1, [(r.content[:40], r.flags) for r in fake.replies_to(note["id"])]
    assert any(r.content.startswith("Nova, you have") for r in fake.replies_to(note["id"]))
    # Discord's trouble, in one line each: no traceback, which would say the bot had a bug.
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_cloudflares_ban_on_the_answer_leaves_the_note_for_later_not_given_up(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # 429 as an HTML page without Via: discord.py does not retry it. Discord's trouble, which
    # passes, not a channel that refuses the bot: the note is answered once posts go out again.
    caplog.set_level(logging.INFO)
    fake.posts_banned = 1  # the answer: an apology would meet the ban too, and none is tried
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        voice, transcript = await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert len(h.engine.turns) == 1  # sent again, not heard again
    assert [(r.kind, r.error) for r in fake.received if r.error is not None] == [("message", 429)]


async def test_a_kept_answer_the_recheck_sends_counts_as_sending_not_as_waiting_for_a_turn(
    settings, fake: FakeDiscord
):
    # The answer Discord refused is kept and sent by the recheck, with no turn to wait for: counted
    # in voxdesk_notes_waiting while its send stalled, it read as a queue behind busy turn slots.
    from bot import metrics

    def waiting() -> float | None:
        return metrics.REGISTRY.get_sample_value("voxdesk_notes_waiting")

    def sends() -> float:
        return metrics.REGISTRY.get_sample_value("voxdesk_stage_seconds_count", {"stage": "send"}) or 0.0

    fake.posts_banned = 1  # the first send: the answer is kept for the recheck
    fake.posts_held, fake.posts_before_held = 1, 1  # the recheck's send: held until released
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await eventually(lambda: fake.posts_held == 0)  # the recheck's POST, held by Discord
        sent_before = sends()
        assert waiting() == 0.0
        fake.posts_released.set()
        await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
        assert sends() == sent_before + 1  # the resend is timed as a send
    assert len(h.engine.turns) == 1


@pytest.mark.parametrize(
    "declared", [{"declared_size": 50_000_000}, {"duration": 600.0}], ids=["too big", "too long"]
)
async def test_a_note_refused_before_its_turn_is_not_waiting_for_one_while_told_so(
    settings, fake: FakeDiscord, declared: dict[str, Any]
):
    # Its refusal needs no turn: counted in voxdesk_notes_waiting while the refusal's send
    # stalled behind Discord, it read as a queue behind busy turn slots.
    from bot import metrics

    def waiting() -> float | None:
        return metrics.REGISTRY.get_sample_value("voxdesk_notes_waiting")

    fake.posts_held = 1  # the refusal: held until released
    async with running_bot(settings, fake) as h:
        note = await fake.send_note(nova, voice_note(), guild=True, **declared)
        await eventually(lambda: fake.posts_held == 0)  # the refusal's POST, held by Discord
        assert waiting() == 0.0
        assert metrics.REGISTRY.get_sample_value("voxdesk_notes_oldest_waiting_seconds") == 0.0
        fake.posts_released.set()
        (told,) = await replies(fake, note, 1)
        assert await settled(settings, note) == "answered"  # its refusal reached the player
    assert "too" in told.content
    assert h.engine.turns == []


@pytest.mark.parametrize("mode", ["voice_and_text", "voice", "file"])
async def test_an_answer_whose_upload_discord_fails_goes_out_as_its_words(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, mode: str
):
    # 503 on the audio's upload (discord.py does not retry a 503): the answer was made, and its
    # words reach the player, not a "try again" apology that settles the note unanswered.
    caplog.set_level(logging.INFO)
    fake.posts_unavailable = 1
    async with running_bot(settings, fake) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), mode)
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    assert [r.content[:14] for r in fake.replies_to(note["id"])] == ["Nova, you have"]
    assert [(r.error, bool(r.files)) for r in fake.received if r.error is not None] == [(0, True)]
    assert len(h.engine.turns) == 1
    assert [line for line in warnings_logged(caplog) if str(note["id"]) in line] == [
        f"cogs.replies: Discord failed the {'file reply' if mode == 'file' else 'voice message'}"
        f" answering note {note['id']} (HTTP 503, code 0): sending its words as text"
    ]


async def test_a_file_answer_whose_later_words_discord_fails_repeats_none_of_them(
    settings, fake: FakeDiscord
):
    # The file goes out with the answer's first piece of words; Discord then fails the second
    # piece (503). The upload did not fail: its words are not sent again as text (the first
    # piece twice), and the player, who has the answer, is not answered a second time.
    engine = FrontendEngine()
    engine.long_reply = True  # words of two pieces

    async def fail_after_the_file(record) -> None:
        if record.files:
            fake.after_post = None
            fake.posts_unavailable = 1

    fake.after_post = fail_after_the_file
    async with running_bot(settings, fake, engine=engine, recheck_seconds=0.2) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "file")
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    posted = fake.sent("message", ALLOWED_CHANNEL)
    assert [(bool(r.files), (r.content or "")[:14]) for r in posted] == [(True, "Nova, you have")]
    assert len(h.engine.turns) == 1


async def test_an_answer_of_audio_alone_whose_upload_discord_fails_is_answered_later(
    settings, fake: FakeDiscord
):
    # An answer with no words (a compatible server's audio without its transcript), and Discord
    # fails its upload (503): there are no words to send instead. The "try again" sentence went
    # in their place, and the note was settled as answered.
    from bot.engines.base import EngineReply

    class AudioAlone(FrontendEngine):
        async def complete(self, turn):
            reply = await super().complete(turn)
            if reply.tool_calls:
                return reply
            return EngineReply(text="", audio=reply.audio, audio_format=reply.audio_format)

    fake.posts_unavailable = 1
    async with running_bot(settings, fake, engine=AudioAlone(), recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await replies(fake, note, 1)
        assert await settled(settings, note) == "answered"
    assert [r.is_voice_message for r in fake.replies_to(note["id"])] == [True]
    assert len(h.engine.turns) == 1  # the answer made is sent again, not heard again


async def test_a_text_answer_discord_fails_is_answered_later_not_apologised_for(settings, fake: FakeDiscord):
    # The words are all the answer (the text style), and Discord fails them (503): the recheck
    # answers the note once posts go out. An apology that got through would tell the player to
    # try again, and settle the note with no answer.
    fake.posts_unavailable = 1
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "text")
        note = await fake.send_note(nova, voice_note(), guild=True)
        await replies(fake, note, 1)
        assert await settled(settings, note) == "answered"
    assert [r.content[:14] for r in fake.replies_to(note["id"])] == ["Nova, you have"]
    assert len(h.engine.turns) == 1  # the answer made is sent again, not heard again


class NumbersItsAnswers(FrontendEngine):
    """Answers of two Discord messages whose every sentence says which of its answers it is in:
    a piece of one posted beside a piece of another shows."""

    def __init__(self, first: int = 1) -> None:
        super().__init__(use_tools=False)
        self.first = first  # the number of its first answer: another process's go on from there

    async def complete(self, turn):
        reply = await super().complete(turn)
        count = self.first - 1 + len(self.turns)
        reply.text = " ".join(f"Answer {count}, tip {i}: keep your controller charged." for i in range(60))
        return reply


def fail_after_the_first_piece_of_words(fake: FakeDiscord, mode: str) -> None:
    """Discord fails the answer's audio (503) where it has one, then the piece of its words after
    the first: the first piece is all the player has of it."""
    if mode != "text":
        fake.posts_unavailable = 1

    async def fail_after_the_first_piece(record) -> None:
        if record.content:
            fake.after_post = None
            fake.posts_unavailable = 1

    fake.after_post = fail_after_the_first_piece


def one_answer_whole(fake: FakeDiscord, note: dict, mode: str) -> None:
    """The note's answer was posted once, every piece of it, all of the first answer made."""
    words = [r.content for r in fake.replies_to(note["id"]) if r.content]
    told = " ".join(words)
    assert len(words) == 2 and told.count("tip 0:") == 1 and told.count("tip 59:") == 1, words
    assert set(re.findall(r"Answer (\d+),", told)) == {"1"}, words
    if mode != "text":
        assert len([r for r in fake.replies_to(note["id"]) if r.files]) == 1


@pytest.mark.parametrize("nonces", ["kept", "forgotten"])
@pytest.mark.parametrize("mode", ["text", "voice_and_text", "file"])
async def test_an_answer_partly_posted_before_discord_failed_is_finished_not_made_again(
    settings, fake: FakeDiscord, monkeypatch, mode: str, nonces: str
):
    # The first piece of the words is posted; Discord fails the second (503). The recheck ran a
    # new turn, whose first piece Discord returned by its nonce (the first answer's) and whose
    # second it posted: the player read half of one answer and half of another. In the voice
    # and file styles the audio's upload fails first, and its words go as text the same way; the
    # file sent then carries no words the player has. Discord's outage may outlast the minutes
    # it keeps a nonce: the first piece is not posted again then either.
    fail_after_the_first_piece_of_words(fake, mode)
    if nonces == "forgotten":
        monkeypatch.setattr("tests.fakes.discord_server.NONCE_SECONDS", 0.0)
    async with running_bot(settings, fake, engine=NumbersItsAnswers(), recheck_seconds=0.2) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), mode)
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda _: any("tip 59:" in r.content for r in fake.replies_to(note["id"])))
        assert await settled(settings, note) == "answered"
    one_answer_whole(fake, note, mode)
    assert len(h.engine.turns) == 1  # the answer made is the one sent: not heard, nor billed, again


@pytest.mark.parametrize("nonces", ["kept", "forgotten"])
@pytest.mark.parametrize("mode", ["text", "voice_and_text", "file"])
async def test_an_answer_partly_posted_before_a_restart_is_finished_after_it_not_made_again(
    settings, fake: FakeDiscord, monkeypatch, mode: str, nonces: str
):
    # Discord fails the answer part way (its first piece of words posted), and the bot restarts
    # before its recheck. The answer was kept in memory alone: the start's catch-up made a new
    # one, whose first piece Discord returned by its nonce (the first answer's) and whose second
    # it posted, half of one answer and half of another. Past the minutes Discord keeps a nonce
    # the first piece came again as well. The answer kept in the ledger is finished instead.
    fail_after_the_first_piece_of_words(fake, mode)
    if nonces == "forgotten":
        monkeypatch.setattr("tests.fakes.discord_server.NONCE_SECONDS", 0.0)
    async with running_bot(settings, fake, engine=NumbersItsAnswers(), recheck_seconds=3600.0) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), mode)
        await settle(fake)  # the start's first recheck over: none sends the answer before the restart
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"  # given back for the recheck
        assert len(h.engine.turns) == 1
    async with running_bot(settings, fake, engine=NumbersItsAnswers(first=2), recheck_seconds=0.2) as h:
        await fake.wait_for(lambda _: any("tip 59:" in r.content for r in fake.replies_to(note["id"])))
        assert await settled(settings, note) == "answered"
    one_answer_whole(fake, note, mode)
    assert h.engine.turns == []  # not heard, nor billed, again
    assert sql(settings.storage_dir / "notes.db", "SELECT COUNT(*) FROM answers") == [
        (0,)
    ]  # let go once answered


async def test_an_answer_from_the_ledger_that_discord_fails_again_is_finished_from_where_it_got(
    settings, fake: FakeDiscord, monkeypatch
):
    # The answer kept before a restart, with none of it posted, is sent by the next process, and
    # Discord fails it again after its first piece. That piece goes into the answer kept for the
    # next recheck; read again from the ledger as it was, the first piece would go twice once
    # Discord no longer knows its nonce.
    monkeypatch.setattr("tests.fakes.discord_server.NONCE_SECONDS", 0.0)
    fake.posts_unavailable = 1  # the first piece of words: nothing of the answer is out
    async with running_bot(settings, fake, engine=NumbersItsAnswers(), recheck_seconds=3600.0) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "text")
        await settle(fake)  # the start's first recheck over: none sends the answer before the restart
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
    assert fake.replies_to(note["id"]) == []
    # Kept as the player's: `player forget` erases their answers by it.
    assert sql(settings.storage_dir / "notes.db", "SELECT user_id FROM answers") == [(str(nova.id),)]
    fail_after_the_first_piece_of_words(fake, "text")
    async with running_bot(settings, fake, engine=NumbersItsAnswers(first=2), recheck_seconds=0.2) as h:
        await fake.wait_for(lambda _: any("tip 59:" in r.content for r in fake.replies_to(note["id"])))
        assert await settled(settings, note) == "answered"
    one_answer_whole(fake, note, "text")
    assert h.engine.turns == []


async def test_an_answer_partly_posted_is_finished_by_the_new_process_of_an_overlapping_deploy(
    settings, fake: FakeDiscord
):
    # The old process made the answer and Discord failed it part way; the new one, on the same
    # storage, answers the note first (the old one's recheck is further off). It made a new answer
    # to follow the old one's first pieces.
    fail_after_the_first_piece_of_words(fake, "voice_and_text")
    async with running_bot(settings, fake, engine=NumbersItsAnswers(), recheck_seconds=3600.0) as old:
        await old.bot.core.preferences.set_reply_mode(str(nova.id), "voice_and_text")
        await settle(fake)  # the old one's first recheck over: its next is 3600 s off
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
        async with running_bot(settings, fake, engine=NumbersItsAnswers(first=2), recheck_seconds=0.2) as new:
            await eventually(lambda: note_state(settings, note) == "answered")
    one_answer_whole(fake, note, "voice_and_text")
    assert (len(old.engine.turns), new.engine.turns) == (1, [])


async def test_an_answer_forgotten_in_memory_for_newer_ones_is_finished_not_made_again(
    settings, fake: FakeDiscord
):
    # More than MAX_UNSENT answers waited for the recheck, and this one was forgotten in memory
    # for newer ones: the recheck made a new answer, whose second piece followed the first's.
    fail_after_the_first_piece_of_words(fake, "text")
    async with running_bot(settings, fake, engine=NumbersItsAnswers(), recheck_seconds=3600.0) as h:
        voice, catch_up = h.bot.get_cog("VoiceNotes"), h.bot.get_cog("CatchUp")
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "text")
        await settle(fake)  # the start's first recheck over: answer_leftovers below is the only one
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "pending"
        voice._unsent.clear()
        await catch_up.answer_leftovers()
        await eventually(lambda: note_state(settings, note) == "answered")
    one_answer_whole(fake, note, "text")
    assert len(h.engine.turns) == 1


@pytest.mark.parametrize("global_", [False, True], ids=["route bucket", "global"])
async def test_rate_limits_on_the_send_route_are_waited_out_and_answer_once(
    settings, fake: FakeDiscord, global_: bool
):
    fake.posts_rate_limited = 3
    fake.posts_limit_global = global_
    async with running_bot(settings, fake) as h:
        notes = [await fake.send_note(player, voice_note(), guild=True) for player in (nova, blaze)]
        for note in notes:
            await replies(fake, note, 2)
            assert await settled(settings, note) == "answered"
    for note in notes:
        assert [r.is_voice_message for r in fake.replies_to(note["id"])] == [True, False]
    assert len(h.engine.turns) == 2
    assert len([r for r in fake.received if r.error == 429]) == 3


@pytest.mark.parametrize("mode", ["voice_and_text", "voice", "file"])
async def test_an_answer_over_the_upload_limit_still_sends_its_transcript(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, mode: str
):
    caplog.set_level(logging.INFO)
    fake.upload_limit = 1000  # smaller than any spoken reply
    async with running_bot(settings, fake) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), mode)
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    tried = [r for r in fake.received if r.kind == "message"]
    assert [r.content[:14] for r in tried if r.error is None] == ["Nova, you have"]
    assert {r.error for r in tried if r.files} == {40005}
    assert warnings_logged(caplog) == []


@pytest.mark.parametrize("guild", [False, True], ids=["dm", "channel"])
async def test_an_answer_over_the_upload_limit_discord_py_knows_is_not_uploaded(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, monkeypatch, guild: bool
):
    # The guild's limit as discord.py keeps it from the gateway (by its boost level), a DM's the
    # default: the spoken reply is over it, so its transcript goes out and nothing is refused.
    caplog.set_level(logging.INFO)
    fake.upload_limit = 1000
    monkeypatch.setattr(discord.Guild, "filesize_limit", property(lambda guild: fake.upload_limit))
    monkeypatch.setattr(cogs.replies, "DEFAULT_UPLOAD_LIMIT", fake.upload_limit)
    async with running_bot(settings, fake):
        note = await fake.send_note(nova, voice_note(), guild=guild)
        assert await settled(settings, note) == "answered"
    tried = [r for r in fake.received if r.kind == "message"]
    assert [(r.content[:14], r.error, r.files) for r in tried] == [("Nova, you have", None, [])]
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.replies"]
    assert len(said) == 1 and "over channel" in said[0] and "upload limit (1000)" in said[0]
    assert warnings_logged(caplog) == []


@pytest.mark.parametrize("known", [False, True], ids=["refused 413", "limit known"])
@pytest.mark.parametrize("mode", ["voice", "file"])
async def test_an_answer_of_audio_alone_over_the_upload_limit_is_told_it_cannot_go(
    settings, fake: FakeDiscord, monkeypatch, mode: str, known: bool
):
    # Audio with no words to send instead, too big for any upload here: the player is told so,
    # not that something went wrong, which has them ask again for an answer that goes no better.
    fake.upload_limit = 1000  # smaller than a second of speech
    if known:
        monkeypatch.setattr(discord.Guild, "filesize_limit", property(lambda guild: fake.upload_limit))
    async with running_bot(settings, fake, engine=SaysNothingAloud("", 1.0)) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), mode)
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    posted = [r for r in fake.sent("message", ALLOWED_CHANNEL) if r.error is None]
    assert [(r.content, r.files) for r in posted] == [(say.SPOKEN_ANSWER_TOO_BIG, [])]
    assert {r.error for r in fake.sent("message", ALLOWED_CHANNEL) if r.files} <= {40005}


@pytest.mark.parametrize(
    "voice", ["refused", "denied", "file refused"], ids=["voice refused", "voice denied", "file refused"]
)
async def test_an_answer_of_audio_alone_where_no_audio_may_go_is_told_why(
    settings, fake: FakeDiscord, voice: str
):
    # Neither a voice message nor a file may go out in the channel: the player is told that its
    # permissions keep the spoken answer out, which a moderator can change.
    if voice == "denied":
        fake.denied[ALLOWED_CHANNEL] = SEND_VOICE_MESSAGES | ATTACH_FILES
    else:
        fake.refuse_voice_in.add(ALLOWED_CHANNEL)
        if voice == "refused":
            fake.denied[ALLOWED_CHANNEL] = ATTACH_FILES
    async with running_bot(settings, fake, engine=SaysNothingAloud("", 1.0)):
        if voice == "file refused":  # discord.py has not heard of the change yet
            fake.expect_refusals()
            await fake.deny(ALLOWED_CHANNEL, ATTACH_FILES, tell_the_bot=False)
        note = await fake.send_note(nova, voice_note(), guild=True)
        assert await settled(settings, note) == "answered"
    posted = [r for r in fake.sent("message", ALLOWED_CHANNEL) if r.error is None]
    assert [(r.content, r.files) for r in posted] == [(say.SPOKEN_ANSWER_NOT_ALLOWED, [])]


@pytest.mark.parametrize("known", [False, True], ids=["refused 413", "limit known"])
@pytest.mark.parametrize("mode", ["voice_and_text", "voice", "file"])
async def test_ticket_news_over_the_upload_limit_reaches_the_player_as_text(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, monkeypatch, mode: str, known: bool
):
    caplog.set_level(logging.INFO)
    fake.upload_limit = 1000  # smaller than any spoken news
    if known:
        monkeypatch.setattr(cogs.replies, "DEFAULT_UPLOAD_LIMIT", fake.upload_limit)
    settings = fast(settings)
    async with running_bot(settings, fake) as h:
        await h.bot.core.preferences.set_reply_mode(NOVA, mode)
        await staff(
            settings.storage_dir / "grievances.db",
            "UPDATE grievances SET status = 'resolved' WHERE local_key = 'GRV-10'",
        )
        (dm,) = await fake.wait_for(lambda _: dms(fake, NOVA))
        await eventually(lambda: news_states(settings, NOVA) == [("GRV-10", "resolved", "sent")])
    assert dm.content.startswith("Your ticket GRV-10 (") and not dm.files
    refused = [r.error for r in fake.received if r.kind == "message" and r.error is not None]
    assert refused == ([] if known else [40005])
    assert warnings_logged(caplog) == []


async def test_a_dm_answer_refused_as_dms_opened_too_fast_is_answered_later(settings, fake: FakeDiscord):
    # Discord's limit on the DMs a bot opens (403 40003) passes: the note is answered by the
    # recheck, neither told "try again" nor given up on as a DM that refuses the bot.
    fake.dms_too_fast = 1  # the answer's voice message
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note())
        voice, transcript = await replies(fake, note, 2)
        assert await settled(settings, note) == "answered"
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert len(h.engine.turns) == 1  # the recheck sends the answer made, not a new one


async def test_held_reactions_and_typing_do_not_hold_the_answers(settings, fake: FakeDiscord):
    # Discord holds every reaction and typing request (a rate limit's queue under a raid): the
    # notes are answered and settled all the same; the 🎧 goes on and off once Discord takes it.
    fake.reactions_held, fake.typing_held = asyncio.Event(), asyncio.Event()
    async with running_bot(settings, fake):
        notes = [await fake.send_note(player, voice_note(), guild=True) for player in (nova, blaze)]
        for note in notes:
            await replies(fake, note, 2)
            assert await settled(settings, note) == "answered"
        assert not [r for r in fake.received if r.kind.startswith("reaction")]
        fake.reactions_held.set()
        fake.typing_held.set()
        for note in notes:
            await fake.wait_for(
                lambda _, note=note: reactions(fake, note) == ["reaction_add", "reaction_remove"]
            )
    assert fake.violations == []


def reactions(fake: FakeDiscord, note: dict[str, Any]) -> list[str]:
    return [
        r.kind for r in fake.received if r.kind.startswith("reaction") and r.body["message_id"] == note["id"]
    ]


async def test_a_raid_into_a_channel_that_denies_send_messages_is_one_warning(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    fake.denied[ALLOWED_CHANNEL] = SEND_MESSAGES
    async with running_bot(settings, fake) as h:
        notes = [await fake.send_note(player, voice_note(), guild=True) for player in (nova, blaze, quill)]
        for note in notes:
            assert await settled(settings, note) == "expired"  # given up on: no recheck tries it again
        assert h.engine.turns == []
    assert len(warnings_logged(caplog)) == 1, warnings_logged(caplog)
    logged = [r.getMessage() for r in caplog.records if r.name == "cogs.voice"]
    assert all(any(note["id"] in line for line in logged) for note in notes)  # each note, at info
    assert [r for r in fake.received if r.error is not None] == []


async def test_ticket_news_discord_posted_but_answered_502_for_is_sent_once(settings, fake: FakeDiscord):
    # The news's voice message is made, Discord's edge answers 502, discord.py sends it again.
    settings = fast(settings)
    fake.posts_lost = 1
    async with running_bot(settings, fake):
        await staff(
            settings.storage_dir / "grievances.db",
            "UPDATE grievances SET status = 'resolved' WHERE local_key = 'GRV-10'",
        )
        await eventually(lambda: news_states(settings, NOVA) == [("GRV-10", "resolved", "sent")])
    voice, text = dms(fake, NOVA)
    assert voice.is_voice_message and text.content.endswith("is now resolved.")
    assert [r.kind for r in fake.received if r.kind == "message_again"] == ["message_again"]


async def test_a_stop_counts_the_notes_in_flight_not_their_reactions(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    fake.reactions_held = asyncio.Event()  # the 🎧 is still on its way when the stop comes
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine) as h:
        await caught_up(h.bot)  # a start's catch-up still reading is work in flight too
        note = await fake.send_note(nova, voice_note(), guild=True)
        await engine.until_asked(1)
        h.stop.set()
        await eventually(lambda: [r for r in caplog.records if "finishing" in r.getMessage()])
        fake.reactions_held.set()
        engine.hold.set()  # the turn ends within the grace
        await replies(fake, note, 2)
    (finishing,) = [r.getMessage() for r in caplog.records if "finishing" in r.getMessage()]
    assert finishing.startswith("finishing 1 note(s) in flight"), finishing


async def test_a_stop_counts_a_slash_command_in_flight_apart_from_the_notes(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # Nova's /forget waits behind her note's turn when the stop comes: one note, one command.
    caplog.set_level(logging.INFO)
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine) as h:
        await caught_up(h.bot)
        note = await fake.send_note(nova, voice_note())
        await engine.until_asked(1)
        forget = await fake.slash(nova, "forget", [], guild=False)
        await fake.wait_for(lambda _: fake.interaction_records(forget) or None, 30)  # deferred
        h.stop.set()
        await eventually(lambda: [r for r in caplog.records if "finishing" in r.getMessage()])
        engine.hold.set()
        await replies(fake, note, 2)
        await fake.interaction_answer(forget)
    (finishing,) = [r.getMessage() for r in caplog.records if "finishing" in r.getMessage()]
    assert finishing.startswith("finishing 1 note(s) and 1 slash command(s) in flight"), finishing


async def test_a_stop_while_the_starts_catch_up_reads_counts_no_note_for_it(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # The catch-up's read waits out a 429 of 10 s when the stop comes, and no note is in flight:
    # the log said "finishing 1 note(s)" and "cancelled 1 note(s)" of the read itself.
    caplog.set_level(logging.INFO)
    fake.history_rate_limited, fake.retry_after = 1, 10.0
    async with running_bot(settings, fake, shutdown_grace_seconds=0.2) as h:
        await fake.wait_for(lambda got: [r for r in got if r.kind == "history" and r.error == 429])
        h.stop.set()
        await asyncio.wait_for(h.task, 30)
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.bot"]
    assert not [line for line in said if "note(s)" in line], said


@pytest.mark.parametrize("failure", ["503", "rate limited for an hour"])
async def test_ticket_news_discord_failed_to_take_is_sent_on_a_later_round(
    settings, fake: FakeDiscord, failure: str
):
    # 503 on the news's first message (discord.py does not retry a 503), or a rate limit longer
    # than the bot waits out: Discord's trouble, not the player's; the news is tried again, not
    # given up on.
    settings = fast(settings)
    news = settings.storage_dir / "news.db"
    if failure == "503":
        fake.posts_unavailable = 1
    else:
        fake.posts_rate_limited, fake.retry_after = 1, 3600.0
    async with running_bot(settings, fake):
        await staff(
            settings.storage_dir / "grievances.db",
            "UPDATE grievances SET status = 'resolved' WHERE local_key = 'GRV-10'",
        )
        await eventually(lambda: sql(news, "SELECT attempts FROM news WHERE state = 'pending'") == [(1,)])
        await staff(news, "UPDATE news SET next_try_at = 0")  # its 30 s are up
        await eventually(lambda: news_states(settings, NOVA) == [("GRV-10", "resolved", "sent")])
    voice, text = dms(fake, NOVA)
    assert voice.is_voice_message and text.content.endswith("is now resolved.")


async def test_a_turn_ending_while_its_typing_waits_out_the_global_limit_leaves_rest_working(
    settings, fake: FakeDiscord
):
    # discord.py waits out a global 429 with every request held back until it is over; a request
    # cancelled while it waits never says it is over, and no request goes out again.
    fake.typing_rate_limited, fake.typing_limit_global, fake.retry_after = 1, True, 1.0
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine) as h:
        try:
            note = await fake.send_note(nova, voice_note(), guild=True)
            await fake.wait_for(lambda got: [r for r in got if r.kind == "typing" and r.error == 429])
            engine.hold.set()  # the turn ends while discord.py waits out the limit
            await replies(fake, note, 2)
            later = await fake.send_note(blaze, voice_note(), guild=True)
            await replies(fake, later, 2)
        finally:
            h.bot.http._global_over.set()  # what a regression leaves stuck: the test fails, not hangs


async def test_a_text_answer_discord_posted_as_the_connection_broke_is_not_posted_again_later(
    settings, fake: FakeDiscord
):
    # /replies text: the answer is posted, its connection breaks before Discord's answer, and the
    # recheck sends the answer again: the text Discord has is not posted a second time.
    fake.posts_cut_after = 1
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "text")
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda _: fake.sent("message_again"))
        assert await settled(settings, note) == "answered"
    assert len(h.engine.turns) == 1  # sent again, not heard again
    answers = [r for r in fake.replies_to(note["id"]) if r.content.startswith("Nova, you have")]
    assert len(answers) == 1, [r.content[:40] for r in fake.replies_to(note["id"])]


async def test_a_stop_while_the_headphones_wait_out_the_global_limit_ends(settings, fake: FakeDiscord):
    # The 🎧 goes out beside the turn, and a stop cancels it with the turn. A request cancelled
    # while discord.py waits out a global 429 leaves every request after it waiting for ever, the
    # stop's "restarting" among them, and the stop with them.
    fake.reactions_rate_limited, fake.reactions_limit_global, fake.retry_after = 1, True, 5.0
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine, shutdown_grace_seconds=0.2) as h:
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda got: [r for r in got if r.kind == "reaction_add" and r.error == 429])
        await engine.until_asked(1)
        h.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(h.task), 15)
        finally:
            h.bot.http._global_over.set()
    assert "restarting" in fake.replies_to(note["id"])[0].content


def hourglass_on(note: dict[str, Any]) -> Any:
    return lambda got: [
        r
        for r in got
        if r.kind == "reaction_add" and r.body["message_id"] == note["id"] and r.body["emoji"] == HOURGLASS
    ]


@pytest.mark.parametrize("global_", [False, True], ids=["route bucket", "global"])
async def test_a_rate_limit_of_an_hour_is_not_waited_out_and_the_note_is_answered_later(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, global_: bool
):
    # Discord asks for an hour's wait on the answer. Waited out, it would hold the player's next
    # note (and the note's claim) as long: the note gets its ⏳ instead, the next note is answered,
    # and the recheck answers the first once posts go out.
    fake.posts_rate_limited, fake.posts_limit_global, fake.retry_after = 1, global_, 3600.0
    async with running_bot(settings, fake, recheck_seconds=0.2) as h:
        try:
            first = await fake.send_note(nova, voice_note(), guild=True)
            await fake.wait_for(hourglass_on(first))
            second = await fake.send_note(nova, voice_note())
            await replies(fake, second, 2)
            voice, transcript = await replies(fake, first, 2)
            assert await settled(settings, first) == "answered"
            assert await settled(settings, second) == "answered"
        finally:
            h.bot.http._global_over.set()  # what a regression leaves waiting: the test fails, not hangs
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert [r.is_voice_message for r in fake.replies_to(first["id"])] == [True, False]
    assert len(h.engine.turns) == 2  # the first's answer sent again, not heard again
    assert [(r.kind, r.error) for r in fake.received if r.error is not None] == [("message", 429)]
    # Discord's trouble, in one line: no traceback, which would say the bot had a bug.
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_a_stalled_answer_leaves_the_note_for_later_and_is_posted_once(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # Discord takes the voice message's POST and never answers it (an upload stalled on its side;
    # discord.py's session would wait 300 s). After send_seconds the note gets its ⏳ and the
    # player's next note is answered; the recheck sends the first's answer once the POST ends, and
    # the message it made is found by the answer's nonce, or known posted: nothing is posted twice.
    fake.posts_held = 1
    async with running_bot(settings, fake, recheck_seconds=0.2, send_seconds=2.0):
        first = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(hourglass_on(first))
        second = await fake.send_note(nova, voice_note())  # a DM: another channel's rate-limit bucket
        await replies(fake, second, 2)
        assert await settled(settings, second) == "answered"
        assert fake.replies_to(first["id"]) == []
        fake.posts_released.set()
        voice, transcript = await replies(fake, first, 2)
        await eventually(lambda: note_state(settings, first) == "answered")  # by the recheck
    assert voice.is_voice_message and transcript.content.startswith("Nova, you have")
    assert [r.is_voice_message for r in fake.replies_to(first["id"])] == [True, False]
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_a_stalled_answer_that_went_out_late_is_not_posted_again_after_a_restart(
    settings, fake: FakeDiscord, monkeypatch
):
    # Discord answers the voice message's POST only after send_seconds: the note is given back,
    # its answer kept with nothing posted, and the send goes on by itself and posts it all. The
    # ledger's copy still said nothing was posted: the recheck after a restart, past Discord's
    # nonce window, posted the whole answer a second time.
    monkeypatch.setattr("tests.fakes.discord_server.NONCE_SECONDS", 0.0)
    fake.posts_held = 1
    async with running_bot(settings, fake, recheck_seconds=3600.0, send_seconds=1.0):
        await settle(fake)  # the start's first recheck over: none comes while the POST stalls
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(hourglass_on(note))
        assert await settled(settings, note) == "pending"
        fake.posts_released.set()
        await replies(fake, note, 2)
        kept = "SELECT posted FROM answers"
        await eventually(
            lambda: sql(settings.storage_dir / "notes.db", kept) == [('["t0.", "v"]',)], within=10
        )
    async with running_bot(settings, fake, recheck_seconds=0.2):
        await eventually(lambda: note_state(settings, note) == "answered")
        await settle(fake)
    assert [r.is_voice_message for r in fake.replies_to(note["id"])] == [True, False]


async def test_a_stalled_answer_that_went_out_late_is_not_posted_again_past_its_nonce(
    settings, fake: FakeDiscord, monkeypatch
):
    # The voice message's POST stalls past send_seconds: the note is given back, its answer kept.
    # The POST then ends, and the transcript follows it. The recheck comes after the minutes
    # Discord keeps a nonce: it knows both posted, and posts neither again.
    fake.posts_held = 1
    async with running_bot(settings, fake, recheck_seconds=3600.0, send_seconds=2.0) as h:
        catch_up = h.bot.get_cog("CatchUp")
        await settle(fake)  # the start's first recheck over: answer_leftovers below is the only one
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(hourglass_on(note))
        assert await settled(settings, note) == "pending"
        fake.posts_released.set()
        await replies(fake, note, 2)  # the stalled send, ended late
        monkeypatch.setattr("tests.fakes.discord_server.NONCE_SECONDS", 0.0)
        await catch_up.answer_leftovers()
        await eventually(lambda: note_state(settings, note) == "answered")
    assert [r.is_voice_message for r in fake.replies_to(note["id"])] == [True, False]
    assert len(h.engine.turns) == 1


async def test_a_stalled_transcript_after_the_voice_message_marks_no_failure(settings, fake: FakeDiscord):
    # The voice message went out; its transcript's POST stalls. The note is answered (and marked
    # so in the ledger): a ⚠️ would tell the player it failed, with no apology to say why.
    failed = "\N{WARNING SIGN}"
    fake.posts_held, fake.posts_before_held = 1, 1
    async with running_bot(settings, fake, recheck_seconds=0.2, send_seconds=1.0):
        note = await fake.send_note(nova, voice_note(), guild=True)
        await fake.wait_for(lambda _: [r for r in fake.replies_to(note["id"]) if r.is_voice_message])
        assert await settled(settings, note) == "answered"
        fake.posts_released.set()
        await replies(fake, note, 2)
        await fake.wait_for(
            lambda got: [r for r in got if r.kind == "reaction_remove" and r.body["message_id"] == note["id"]]
        )
    marks = [
        r.body["emoji"]
        for r in fake.received
        if r.kind == "reaction_add" and r.body["message_id"] == note["id"]
    ]
    assert failed not in marks, marks


async def test_a_stop_while_a_player_is_told_how_to_send_a_note_counts_no_note_for_it(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # A DM of text is told how to send a voice note; that word waits out a 429 of 10 s when the
    # stop comes, and no note is in flight: the log said "finishing 1 note(s)" and "cancelled 1
    # note(s)" of the word itself.
    caplog.set_level(logging.INFO)
    fake.posts_rate_limited, fake.retry_after = 1, 10.0
    async with running_bot(settings, fake, shutdown_grace_seconds=0.2) as h:
        await caught_up(h.bot)
        await fake.send_message(nova, channel_id=dm_channel_id(nova.id), guild=False, content="hello?")
        await fake.wait_for(lambda got: [r for r in got if r.kind == "message" and r.error == 429])
        h.stop.set()
        await asyncio.wait_for(h.task, 30)
    said = [r.getMessage() for r in caplog.records if r.name == "cogs.bot"]
    assert not [line for line in said if "note(s)" in line], said


@pytest.mark.parametrize("then", ["deleted", "locked", "too old"])
async def test_an_answer_kept_for_the_recheck_is_let_go_when_its_note_ends_otherwise(
    settings, fake: FakeDiscord, monkeypatch, then: str
):
    # Discord fails the answer (503): it is kept, audio and all, for the recheck to send. The
    # note then ends another way (deleted by its player, its thread locked by a moderator, too
    # old for the recheck): the answer must not stay in memory until MAX_UNSENT newer ones push
    # it out, as a note settled by another process would keep it too.
    import datetime

    fake.posts_unavailable = 1
    async with running_bot(settings, fake, recheck_seconds=3600.0) as h:
        voice, catch_up = h.bot.get_cog("VoiceNotes"), h.bot.get_cog("CatchUp")
        await h.bot.core.preferences.set_reply_mode(str(nova.id), "text")  # no words sent instead
        thread = await fake.add_thread(ALLOWED_CHANNEL, "refund help")
        # The recheck's first run begins as the start's catch-up ends: on a busy host, after the
        # note is given back, and it sends the kept answer. Over before the note, it leaves the
        # answer kept, as the next run comes 3600 s later.
        await settle(fake)
        note = await fake.send_note(nova, voice_note(), channel_id=thread)
        assert await settled(settings, note) == "pending"  # given back for the recheck
        assert int(note["id"]) in voice._unsent
        if then == "deleted":
            await fake.delete_message(thread, note["id"])
            # Let go as Discord tells of the deletion (which the ledger records after), not only
            # at the next recheck: its words are the player's, who took the note back.
            await eventually(lambda: note_state(settings, note) == "expired")
            assert int(note["id"]) not in voice._unsent
        elif then == "locked":
            await fake.lock_thread(thread)
        else:
            later = discord.utils.utcnow() + datetime.timedelta(seconds=1)
            monkeypatch.setattr(catch_up, "_cutoff", lambda: later)
        await catch_up.answer_leftovers()
        await eventually(lambda: note_state(settings, note) == "expired")
        assert int(note["id"]) not in voice._unsent
    assert fake.replies_to(note["id"]) == []
