"""Voice notes through the real discord.py client and the fake Discord, end to end."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import logging
import os
import signal
import sys
import time
import tracemalloc
import types

import pytest

from bot.audio import decode
from cogs.runner import serve
from cogs.voice import too_fast
from tests.audio_samples import collected, encode, speechlike
from tests.discord_harness import (
    Harness,
    blaze,
    caught_up,
    discord_settings,
    nova,
    quill,
    running_bot,
    send_two_notes,
    voice_note,
)
from tests.fakes.discord_server import (
    ALLOWED_CHANNEL,
    BOT_USER_ID,
    MESSAGE_CONTENT_INTENT,
    OTHER_CHANNEL,
    SEND_VOICE_MESSAGES,
    TOKEN,
    VOICE_FLAG,
    FakeDiscord,
    InjectedUser,
    Received,
    serving,
)
from tests.frontend_engine import FrontendEngine
from tests.test_discord_news import eventually

me = InjectedUser(BOT_USER_ID, "voxdesk", bot=True)  # the bot's own messages, posted earlier


@pytest.fixture
async def fake():
    async with serving() as running:
        yield running


@pytest.fixture
async def harness(settings, fake: FakeDiscord):
    async with running_bot(settings, fake) as h:
        yield h


async def answered(fake: FakeDiscord, message: dict, count: int = 2) -> list[Received]:
    return await fake.wait_for(lambda _: (r := fake.replies_to(message["id"])) and len(r) >= count and r)


def waveformless(fake: FakeDiscord, attachment_id: str) -> dict:
    """A voice message's attachment as a client that drops its waveform uploads it: audio, and
    no voice message to discord.py."""
    url = f"{fake.url}/attachments/1/1/voice-message.ogg"
    return {
        "id": attachment_id,
        "filename": "voice-message.ogg",
        "content_type": "audio/ogg",
        "size": 9000,
        "url": url,
        "proxy_url": url,
        "duration_secs": 1.5,
    }


def assert_voice_message(record: Received, settings) -> None:
    assert record.is_voice_message
    assert record.content == ""
    (upload,) = record.files
    (attachment,) = record.body["attachments"]
    assert attachment["duration_secs"] > 0
    assert 1 <= len(base64.b64decode(attachment["waveform"])) <= 256
    decoded = decode(upload.data, settings.audio)  # the reply is real, decodable audio
    assert abs(decoded.original_seconds - attachment["duration_secs"]) < 0.2


async def test_dm_note_gets_a_voice_message_then_the_transcript(harness: Harness):
    fake = harness.fake
    note = await fake.send_note(nova, voice_note())
    voice, transcript = await answered(fake, note)
    assert_voice_message(voice, harness.settings)
    assert transcript.content.startswith("Nova, you have")  # the tool ran for the speaker
    assert not transcript.flags & VOICE_FLAG
    channel = int(note["channel_id"])
    # "typing…" and the 🎧 go out beside the turn: either may reach Discord after the answer.
    await fake.wait_for(lambda _: fake.sent("typing", channel))
    await fake.wait_for(lambda _: fake.sent("reaction_remove", channel))  # "working" came and went
    assert fake.sent("reaction_add", channel)
    assert fake.violations == []


async def test_a_note_is_answered_in_the_default_voice_when_the_preferences_cannot_be_read(
    harness: Harness, caplog
):
    # preferences.db refusing the read (damaged, its table gone) must not fail the note after its
    # download: the player would hear "something went wrong" for want of a voice and a reply mode.
    import sqlite3

    from bot.app import storage_paths

    with contextlib.closing(sqlite3.connect(storage_paths(harness.settings).preferences)) as other:
        other.execute("DROP TABLE preferences")
        other.commit()
    note = await harness.fake.send_note(nova, voice_note())
    voice, transcript = await answered(harness.fake, note)
    assert_voice_message(voice, harness.settings)
    assert transcript.content.startswith("Nova, you have")
    assert f"could not read the preferences of {nova.id}" in caplog.text


async def test_note_in_an_allowed_guild_channel_is_answered(harness: Harness):
    note = await harness.fake.send_note(blaze, voice_note(), guild=True)
    voice, transcript = await answered(harness.fake, note)
    assert voice.channel_id == ALLOWED_CHANNEL
    assert_voice_message(voice, harness.settings)
    assert transcript.content.startswith("Blaze, you have")
    assert harness.fake.violations == []


async def test_what_a_player_said_in_a_dm_never_shapes_a_public_answer(harness: Harness):
    fake = harness.fake
    _, in_private = await answered(fake, await fake.send_note(nova, voice_note()))
    _, in_public = await answered(fake, await fake.send_note(nova, voice_note(), guild=True))
    assert in_public.channel_id == ALLOWED_CHANNEL
    assert in_private.content.endswith("History 0.")
    assert in_public.content.endswith("History 0.")
    assert harness.engine.turns[-1].history == []
    _, back_in_private = await answered(fake, await fake.send_note(nova, voice_note()))
    assert back_in_private.content.endswith("History 1.")  # the DM conversation goes on


async def test_notes_the_bot_must_not_answer_get_nothing(harness: Harness):
    fake = harness.fake
    elsewhere = await fake.send_note(nova, voice_note(), channel_id=OTHER_CHANNEL)
    robot = await fake.send_note(InjectedUser(555, "otherbot", bot=True), voice_note(), guild=True)
    # A voice message has no text to @mention in: it reaches the bot as a pinging reply to it.
    earlier = await fake.send_message(me, channel_id=OTHER_CHANNEL, guild=True, content="Hi!", dispatch=False)
    mentioned = await fake.send_note(
        quill, voice_note(), channel_id=OTHER_CHANNEL, mention_bot=True, reply_to=earlier
    )
    # The mention in the other channel is answered; by then the two notes before it were judged.
    await answered(fake, mentioned)
    assert fake.replies_to(elsewhere["id"]) == []
    assert fake.replies_to(robot["id"]) == []
    assert not fake.sent("typing", OTHER_CHANNEL)[1:]  # only the one answered note showed typing


async def test_a_note_replying_to_the_bot_unpinged_is_answered_and_one_replying_to_a_player_not(
    harness: Harness,
):
    # In a channel the bot does not watch, a reply to the bot is for it, ping or not; a reply to
    # another player is not.
    fake = harness.fake
    hello = await fake.send_message(me, channel_id=OTHER_CHANNEL, guild=True, content="Hi!", dispatch=False)
    chat = await fake.send_message(blaze, channel_id=OTHER_CHANNEL, guild=True, content="gg", dispatch=False)
    to_player = await fake.send_note(nova, voice_note(), channel_id=OTHER_CHANNEL, reply_to=chat)
    to_bot = await fake.send_note(quill, voice_note(), channel_id=OTHER_CHANNEL, reply_to=hello)
    await answered(fake, to_bot)  # by then the note before it was judged
    assert fake.replies_to(to_player["id"]) == []


async def test_the_bot_resumes_after_a_gateway_reconnect(harness: Harness):
    fake = harness.fake
    await fake.ask_to_reconnect()
    await asyncio.wait_for(fake.resumed.wait(), 30)
    (resume,) = fake.resume_payloads
    assert resume["session_id"] in fake.sessions and len(fake.identify_payloads) == 1
    note = await fake.send_note(nova, voice_note())
    await answered(fake, note)


async def test_a_pdf_named_ogg_gets_a_friendly_error(harness: Harness):
    pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n" + b"0" * 2000
    note = await harness.fake.send_note(nova, pdf, voice=False, filename="question.ogg")
    (reply,) = await answered(harness.fake, note, count=1)
    assert "PDF" in reply.content and "voice note" in reply.content
    assert not reply.files


async def test_refused_voice_message_falls_back_to_a_file_reply(harness: Harness):
    fake = harness.fake
    fake.refuse_voice_in.add(ALLOWED_CHANNEL)
    note = await fake.send_note(nova, voice_note(), guild=True)
    (reply,) = await answered(fake, note, count=1)
    refused = [r for r in fake.received if r.kind == "message" and r.error == 50173]
    assert len(refused) == 1
    assert not reply.flags & VOICE_FLAG
    assert reply.content.startswith("Nova, you have")
    (upload,) = reply.files
    assert decode(upload.data, harness.settings.audio).seconds > 0


async def test_engine_down_gets_a_spoken_or_written_apology(harness: Harness):
    harness.engine.down = True
    note = await harness.fake.send_note(nova, voice_note())
    # Spoken by the app's speaker when it has one (then as a voice message first), always written.
    await harness.fake.wait_for(
        lambda _: any("voice service is down" in r.content for r in harness.fake.replies_to(note["id"]))
    )
    channel = int(note["channel_id"])
    warning = "\N{WARNING SIGN}"
    await harness.fake.wait_for(
        lambda _: [r for r in harness.fake.sent("reaction_add", channel) if r.body["emoji"] == warning]
    )


async def test_without_send_voice_messages_permission_the_reply_is_a_file(settings, fake: FakeDiscord):
    fake.denied[ALLOWED_CHANNEL] = SEND_VOICE_MESSAGES
    async with running_bot(settings, fake) as h:
        note = await h.fake.send_note(nova, voice_note(), guild=True)
        (reply,) = await answered(h.fake, note, count=1)
        assert not reply.flags & VOICE_FLAG and reply.content.startswith("Nova, you have")
        assert len(reply.files) == 1
        assert not [r for r in h.fake.received if r.error is not None]  # it knew, so it did not try


async def test_oversized_note_is_refused_before_download(harness: Harness):
    fake = harness.fake
    note = await fake.send_note(nova, voice_note(), declared_size=50_000_000)
    (reply,) = await answered(fake, note, count=1)
    assert "too big" in reply.content
    assert not fake.sent("cdn")


async def test_a_stalled_download_is_given_up_and_the_players_next_note_answered(settings, fake: FakeDiscord):
    async with running_bot(settings, fake, download_seconds=0.5) as h:
        fake.cdn_stall_seconds = 30
        stalled = await fake.send_note(nova, voice_note())
        (reply,) = await answered(fake, stalled, count=1)
        assert "couldn't download" in reply.content
        fake.cdn_stall_seconds = 0
        await answered(fake, await fake.send_note(nova, voice_note()))  # not held behind it
        assert h.fake.violations == []


class HostClock:
    """The `time` module as a module of the bot's sees it once patched: the host clock set back
    `back` seconds, and `ahead` seconds gone by at once on the clock that cannot go back."""

    def __init__(self) -> None:
        self.back = 0.0
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() - self.back

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead


async def test_a_host_clock_set_back_does_not_hold_the_next_hint_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
):
    # Timed by the host clock, a hint's minute of quiet became an hour and a minute when the
    # clock was set back an hour: a player sending text in a DM was told nothing for that long.
    from discord.ext.commands import cooldowns

    fake = harness.fake
    dm = 940000000000000000 + nova.id % 10**9
    first = await fake.send_message(nova, channel_id=dm, guild=False, content="how many points?")
    await answered(fake, first, count=1)
    clock = HostClock()
    # The module the bot loaded the cog from: an extension is loaded as a module of its own.
    voice = sys.modules[type(harness.bot.get_cog("VoiceNotes")).__module__]
    for module in (voice, cooldowns):
        monkeypatch.setattr(module, "time", clock)
    clock.back, clock.ahead = 3600.0, 61.0  # set back an hour as a minute goes by
    again = await fake.send_message(nova, channel_id=dm, guild=False, content="how many points?")
    (hint,) = await answered(fake, again, count=1)
    assert "I answer voice notes" in hint.content


async def test_a_dm_without_a_voice_note_is_told_how_to_send_one_once_a_minute(harness: Harness, caplog):
    caplog.set_level(logging.INFO, logger="cogs.voice")
    fake = harness.fake
    dm = 940000000000000000 + nova.id % 10**9
    text = await fake.send_message(nova, channel_id=dm, guild=False, content="how many points do i have?")
    (hint,) = await answered(fake, text, count=1)
    assert "I answer voice notes" in hint.content
    url = f"{fake.url}/attachments/{dm}/1/rules.pdf"
    pdf = {"id": "1", "filename": "rules.pdf", "size": 9, "url": url, "proxy_url": url}
    pdf["content_type"] = "application/pdf"
    again = await fake.send_message(nova, channel_id=dm, guild=False, attachments=[pdf])
    chatter = await fake.send_message(blaze, channel_id=ALLOWED_CHANNEL, guild=True, content="gg everyone")
    await answered(fake, await fake.send_note(nova, voice_note()))  # by then the two before were judged
    assert fake.replies_to(again["id"]) == [] and fake.replies_to(chatter["id"]) == []
    assert f"message {again['id']} from {nova.id} has no voice note" in caplog.text


async def test_two_notes_in_one_message_get_the_first_answered_and_a_word_about_the_rest(harness: Harness):
    fake = harness.fake
    one = await fake.send_note(nova, voice_note())
    note = one["attachments"][0]
    two = await send_two_notes(fake, nova, note, channel_id=int(one["channel_id"]), guild=False)
    replies = await answered(fake, two, count=3)
    assert any("one voice note per message" in r.content for r in replies)
    assert sum(r.is_voice_message for r in replies) == 1


async def test_long_transcripts_are_split_at_discords_limit(harness: Harness):
    harness.engine.long_reply = True
    note = await harness.fake.send_note(nova, voice_note())
    replies = await answered(harness.fake, note, count=3)
    text = [r.content for r in replies[1:]]
    assert all(len(t) <= 2000 for t in text)
    assert " ".join(text).startswith("Nova, you have") and "Tip 59" in text[-1]


async def test_a_players_name_shows_as_written_in_the_transcript(settings, fake: FakeDiscord):
    # A name the game holds as markdown made the posted transcript a heading, bold or underlined:
    # "# Big **x** __y__, you have 1234 points." (no ping: mentions are never allowed).
    import sqlite3

    from bot.app import storage_paths
    from tests.conftest import NOVA

    with contextlib.closing(sqlite3.connect(storage_paths(settings).players)) as conn, conn:
        conn.execute(
            "UPDATE players SET player_name = ? WHERE discord_user_id = ?", ("# Big **x** __y__", NOVA)
        )
    async with running_bot(settings, fake) as h:
        note = await h.fake.send_note(nova, voice_note())
        _, transcript = await answered(h.fake, note)
    assert transcript.content.startswith(r"\# Big \*\*x\*\* \_\_y\_\_, you have "), transcript.content


async def test_flooding_player_is_asked_to_slow_down(settings, fake: FakeDiscord):
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600) as h:
        notes = [await h.fake.send_note(nova, voice_note()) for _ in range(3)]
        (slow_down,) = await answered(h.fake, notes[2], count=1)
        assert "faster than I can answer" in slow_down.content
        await answered(h.fake, notes[1])
        # A flood is told once, not once per note: that would flood the channel in turn.
        more = [await h.fake.send_note(nova, voice_note()) for _ in range(5)]
        await answered(h.fake, await h.fake.send_note(blaze, voice_note()))
        assert all(h.fake.replies_to(n["id"]) == [] for n in more)


async def test_a_note_delivered_late_is_told_the_wait_from_when_it_came(settings, fake: FakeDiscord):
    # Timed from when Discord says it was sent, a note the gateway delivers 200 s late would be
    # told to wait 800 s: the player may send again 600 s after it came.
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600) as h:
        for _ in range(2):
            await h.fake.send_note(nova, voice_note())
        late = await h.fake.send_note(nova, voice_note(), ago=200)
        (told,) = await answered(h.fake, late, count=1)
    assert told.content in (too_fast(600), too_fast(601)), told.content


async def test_a_bots_prompt_message_tells_how_late_a_players_notes_came(settings, fake: FakeDiscord):
    # Every message that comes is weighed for lateness, a bot's too: the gateway delivering one
    # player's notes 200 s late, a bot's message that came promptly just before says they are
    # late, and the wait told runs from when they came. Weighed on the player's notes alone, the
    # first of them would set the mark and the wait would be told 200 s longer than it is.
    robot = InjectedUser(555, "otherbot", bot=True)
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=600) as h:
        await h.fake.send_message(robot, channel_id=ALLOWED_CHANNEL, guild=True, content="status: ok")
        for _ in range(2):
            await h.fake.send_note(nova, voice_note(), ago=200)
        late = await h.fake.send_note(nova, voice_note(), ago=200)
        (told,) = await answered(h.fake, late, count=1)
    assert told.content in (too_fast(400), too_fast(401)), told.content


async def test_the_flood_limit_holds_in_any_window_not_only_from_a_players_first_note(harness: Harness):
    # discord.py's Cooldown counts from a window's first use: five notes at its end and five more
    # at the start of the next all passed, ten in two seconds where the limit says five a minute.
    # The cogs' own limits, at times the test gives them (a player is whatever has their id).
    player = types.SimpleNamespace(id=nova.id)
    as_sent = types.SimpleNamespace(author=player, user=player)
    limits = {
        "notes": harness.bot.get_cog("VoiceNotes").flood,
        "filings": harness.bot.get_cog("Grievances").filings,
    }
    for what, limit in limits.items():
        start = 1_000_000.0
        took = [limit.update_rate_limit(as_sent, start)]
        took += [limit.update_rate_limit(as_sent, start + 59) for _ in range(4)]
        took += [limit.update_rate_limit(as_sent, start + 61) for _ in range(5)]
        assert [t is None for t in took] == [True] * 6 + [False] * 4, what
        assert took[-1] == pytest.approx(58.0), what  # when the notes sent at 59 s leave the window


async def test_a_note_a_recheck_answers_holds_the_players_next_notes_back(harness: Harness):
    # A recheck answers a note a gateway gap hid from the live path, sent after notes that had
    # filled the player's window. Not counted because that window was full, it let the player
    # have a whole fresh limit as soon as those older notes left it.
    voice, catch_up = harness.bot.get_cog("VoiceNotes"), harness.bot.get_cog("CatchUp")
    rate, per = harness.bot.discord_settings.flood_notes, harness.bot.discord_settings.flood_seconds
    player = types.SimpleNamespace(id=nova.id)
    as_sent = types.SimpleNamespace(author=player)
    now = time.time()
    assert [voice.flood.update_rate_limit(as_sent, now - per + 5) for _ in range(rate)] == [None] * rate
    hidden = types.SimpleNamespace(
        id=820000000000000001, author=player, created_at=dt.datetime.fromtimestamp(now - per / 3, dt.UTC)
    )
    # Promised an answer (kept at a stop): answered however full the window, and counted.
    assert catch_up._within_flood_limit(voice, [hidden], {hidden.id}) == [hidden.id]
    later = now + 6  # the first notes have left the window; the hidden one has not
    assert voice.flood.get_bucket(as_sent, later).get_tokens(later) == rate - 1


async def test_a_recheck_turns_away_notes_past_what_the_live_limit_already_answered(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
):
    # A player's notes answered live fill their window; the ones a gateway gap hid right after are
    # read back by a recheck. Weighed only against each other, they were all answered: twice
    # flood_notes in one flood_seconds. Live, each would have been turned away.
    voice, catch_up = harness.bot.get_cog("VoiceNotes"), harness.bot.get_cog("CatchUp")
    rate, per = harness.bot.discord_settings.flood_notes, harness.bot.discord_settings.flood_seconds
    player = types.SimpleNamespace(id=nova.id)
    as_sent = types.SimpleNamespace(author=player)
    turned: list[int] = []
    monkeypatch.setattr(voice, "turn_away", lambda message, why, backlog=False: turned.append(message.id))
    now = time.time()
    assert [voice.flood.update_rate_limit(as_sent, now - per / 2) for _ in range(rate)] == [None] * rate
    hidden = [
        types.SimpleNamespace(
            id=820000000000000010 + i,
            author=player,
            created_at=dt.datetime.fromtimestamp(now - per / 4 + i, dt.UTC),
        )
        for i in range(rate)
    ]
    assert catch_up._within_flood_limit(voice, hidden, set()) == []
    assert turned == [m.id for m in hidden]


async def test_notes_turned_away_by_a_second_read_are_told_what_it_counted(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
):
    # A recheck reads a place the first catch-up could not: the notes the first read found filled
    # the player's window, so of those the second finds none is answered, though as many notes as
    # the limit allows are being answered: the count told is of the second read's notes alone.
    from bot.sentences import TOO_MANY_UNSEEN_NONE

    voice, catch_up = harness.bot.get_cog("VoiceNotes"), harness.bot.get_cog("CatchUp")
    rate, per = harness.bot.discord_settings.flood_notes, harness.bot.discord_settings.flood_seconds
    player = types.SimpleNamespace(id=nova.id)
    told: list[str] = []
    monkeypatch.setattr(voice, "turn_away", lambda message, why, backlog=False: told.append(why))
    now = time.time()
    first, second = (
        [
            types.SimpleNamespace(
                id=820000000000000100 + 10 * read + i,
                author=player,
                created_at=dt.datetime.fromtimestamp(now - per / 2 + 10 * read + i, dt.UTC),
            )
            for i in range(rate)
        ]
        for read in range(2)
    )
    assert catch_up._within_flood_limit(voice, first, set()) == [m.id for m in first]
    assert catch_up._within_flood_limit(voice, second, set()) == []
    assert told == [TOO_MANY_UNSEEN_NONE] * rate


async def test_two_bots_of_an_overlapping_deploy_tell_each_word_about_a_note_once(settings, fake):
    # Both get every message: each told the player "too fast", "one note per message" and "I
    # answer voice notes" once of its own, twice in all.
    async with (
        running_bot(settings, fake, flood_notes=2, flood_seconds=600),
        running_bot(settings, fake, flood_notes=2, flood_seconds=600),
    ):
        await fake.wait_for(lambda _: len(fake.identify_payloads) == 2)
        one, _, third = [await fake.send_note(nova, voice_note()) for _ in range(3)]
        note = one["attachments"][0]
        several = await send_two_notes(fake, blaze, note)
        dm = 940000000000000000 + quill.id % 10**9
        text = await fake.send_message(quill, channel_id=dm, guild=False, content="how many points?")
        await answered(fake, several, count=3)
        await answered(fake, text, count=1)
        await answered(fake, third, count=1)
        await answered(fake, await fake.send_note(blaze, voice_note()))  # by then all were told
    assert [r.content for r in fake.replies_to(third["id"])] == [TOO_FAST_TOLD]
    assert sum("one voice note per message" in r.content for r in fake.replies_to(several["id"])) == 1
    assert sum(r.is_voice_message for r in fake.replies_to(several["id"])) == 1
    assert len(fake.replies_to(text["id"])) == 1


TOO_FAST_TOLD = "You're sending notes faster than I can answer. Try again in 600 seconds."


async def test_without_message_content_intent_dms_still_work(settings, fake: FakeDiscord, caplog):
    fake.application_flags = 0  # the intent is not enabled in the developer portal
    caplog.set_level(logging.WARNING, logger="cogs")
    async with running_bot(settings, fake) as h:
        assert not h.fake.identify_payloads[-1]["intents"] & MESSAGE_CONTENT_INTENT
        assert any("Message Content intent is off" in r.message for r in caplog.records)
        unseen = await h.fake.send_note(blaze, voice_note(), guild=True)
        dm = await h.fake.send_note(nova, voice_note())
        await answered(h.fake, dm)
        assert h.fake.replies_to(unseen["id"]) == []  # Discord hid its attachment from the bot


async def test_a_bot_in_100_servers_with_only_the_limited_intent_starts_without_it(
    settings, fake: FakeDiscord, caplog
):
    # The portal's toggle (GATEWAY_MESSAGE_CONTENT_LIMITED) grants the intent to bots in under 100
    # servers only: asked for at 100, Discord closes the first connection with 4014, and the bot
    # would exit at every start, saying the intent was switched off while it ran.
    fake.approximate_guild_count = 100
    caplog.set_level(logging.WARNING, logger="cogs")
    async with running_bot(settings, fake) as h:
        assert not h.fake.identify_payloads[-1]["intents"] & MESSAGE_CONTENT_INTENT
        said = [r.getMessage() for r in caplog.records if "Message Content" in r.getMessage()]
        assert len(said) == 1 and "100 servers" in said[0] and "verif" in said[0], said
        dm = await h.fake.send_note(nova, voice_note())
        await answered(h.fake, dm)


async def test_a_bot_in_100_servers_approved_for_the_intent_keeps_it(settings, fake: FakeDiscord, caplog):
    # GATEWAY_MESSAGE_CONTENT, Discord's approval of a verified app, grants the intent in any
    # number of servers: the limit of 100 is the portal toggle's alone.
    fake.application_flags = 1 << 18
    fake.approximate_guild_count = 150
    caplog.set_level(logging.WARNING, logger="cogs")
    async with running_bot(settings, fake) as h:
        assert h.fake.identify_payloads[-1]["intents"] & MESSAGE_CONTENT_INTENT
        assert not [r for r in caplog.records if "Message Content" in r.getMessage()]


async def test_a_voice_message_without_its_audio_is_told_or_logged_not_dropped(
    settings, fake: FakeDiscord, caplog
):
    # Discord marks both as voice messages and sends no attachment: the player is told to send it
    # again, not how to record a voice message they just recorded.
    from bot.sentences import VOICE_WITHOUT_AUDIO
    from tests.fakes.discord_server import dm_channel_id

    caplog.set_level(logging.INFO, logger="cogs.voice")
    async with running_bot(settings, fake) as h:
        bare = await h.fake.send_message(
            nova, channel_id=dm_channel_id(nova.id), guild=False, flags=VOICE_FLAG
        )
        (told,) = await h.fake.wait_for(lambda _: h.fake.replies_to(bare["id"]))
    assert told.content == VOICE_WITHOUT_AUDIO
    assert f"voice message {bare['id']} from {nova.id} came without its audio: not answered" in caplog.text


async def test_without_message_content_intent_a_watched_channels_notes_are_logged(
    settings, fake: FakeDiscord, caplog
):
    # Discord hides a guild message's attachments, a forward's too: each note says so in the log.
    fake.application_flags = 0  # the intent is not enabled in the developer portal
    caplog.set_level(logging.INFO, logger="cogs.voice")
    async with running_bot(settings, fake) as h:
        note = await h.fake.send_note(blaze, voice_note(), guild=True)
        original = await h.fake.send_note(blaze, voice_note(), channel_id=OTHER_CHANNEL)
        forward = await h.fake.forward(nova, original, channel_id=ALLOWED_CHANNEL)
        hidden = "came without its audio (Discord hides a guild message's attachments without the Message"
        await eventually(lambda: caplog.text.count(hidden) == 2)
    assert f"voice message {note['id']} from {blaze.id} {hidden}" in caplog.text
    assert f"voice message {forward['id']} from {nova.id} {hidden}" in caplog.text
    assert h.fake.sent("message") == []


async def test_twenty_players_three_notes_each_all_answered_in_order(settings, fake: FakeDiscord):
    async with running_bot(settings, fake) as h:
        players = [InjectedUser(800000000000000000 + i, f"player{i}") for i in range(20)]
        notes = {p.id: [] for p in players}
        for round_ in range(3):
            for p in players:
                notes[p.id].append(await h.fake.send_note(p, voice_note(), guild=round_ == 1))

        def all_answered(_):
            return all(len(h.fake.replies_to(n["id"])) >= 2 for ns in notes.values() for n in ns)

        await h.fake.wait_for(all_answered, within=120)
        order = {id(r): i for i, r in enumerate(h.fake.received)}
        for p in players:
            replies = [h.fake.replies_to(n["id"]) for n in notes[p.id]]
            # The turns ran in order: the DM conversation's second turn sees its first; the
            # guild channel's turn is a conversation of its own.
            for (voice, transcript), history in zip(replies, (0, 0, 1), strict=True):
                assert voice.is_voice_message
                assert transcript.content.endswith(f"History {history}.")
            positions = [order[id(r)] for pair in replies for r in pair]
            assert positions == sorted(positions)  # and their replies went out in order
        assert h.fake.violations == []
        # A player's queue is dropped with their last note: a bot that runs for months keeps no
        # lock for every player it ever heard.
        voice = h.bot.get_cog("VoiceNotes")
        for _ in range(200):  # the last turns are marking their notes answered
            if not voice._user_waiting:
                break
            await asyncio.sleep(0.05)
        assert voice._user_locks == {} and voice._user_waiting == {}


async def test_a_players_notes_are_answered_in_the_order_sent_when_the_first_downloads_slowly(
    harness: Harness,
):
    # The second note's download finishes first: only the player's queue keeps it from being
    # answered (and remembered) before the first.
    fake = harness.fake
    first = await fake.send_note(nova, voice_note(), stall=1.5)
    second = await fake.send_note(nova, voice_note())
    replies = await fake.wait_for(
        lambda _: (
            all(len(fake.replies_to(n["id"])) >= 2 for n in (first, second))
            and [fake.replies_to(n["id"]) for n in (first, second)]
        )
    )
    (_, said_first), (_, said_second) = replies
    # The second turn saw the first: the conversation went in the order the player spoke.
    assert said_first.content.endswith("History 0.") and said_second.content.endswith("History 1.")
    order = {id(r): i for i, r in enumerate(fake.received)}
    positions = [order[id(r)] for pair in replies for r in pair]
    assert positions == sorted(positions)


async def test_a_raid_downloads_no_more_notes_than_turns_can_take(settings, fake: FakeDiscord):
    # Each note waiting for a turn would otherwise sit in memory: up to audio.max_bytes a raider.
    settings = settings.replace(agent={"max_concurrent_turns": 2})
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine) as h:
        raiders = [InjectedUser(810000000000000000 + i, f"raider{i}") for i in range(8)]
        notes = [await h.fake.send_note(r, voice_note()) for r in raiders]
        await h.fake.wait_for(lambda _: len(h.fake.sent("cdn")) >= 2, within=20)
        await engine.until_asked(2)  # both turns hold their slots until let go
        # Every other note has come as far as its download: waiting for a slot, not downloading.
        slots = h.bot.get_cog("VoiceNotes")._notes_in_hand  # type: ignore[union-attr]
        await eventually(lambda: len(slots._waiters or ()) == len(notes) - 2 or len(h.fake.sent("cdn")) > 2)
        assert len(h.fake.sent("cdn")) == 2
        engine.hold.set()
        await h.fake.wait_for(lambda _: all(len(h.fake.replies_to(n["id"])) >= 2 for n in notes), within=60)
        assert len(h.fake.sent("cdn")) == 8


async def test_sigterm_finishes_the_turn_in_flight_and_closes_everything(settings, fake: FakeDiscord):
    from tests.frontend_engine import FrontendEngine

    settings = discord_settings(settings, fake)
    loop = asyncio.get_running_loop()
    started: asyncio.Future = loop.create_future()
    # No stop event: serve() listens for SIGTERM / SIGINT itself, as `python -m bot run` does.
    task = asyncio.create_task(serve(settings, TOKEN, engine=FrontendEngine(delay=0.3), started=started))
    unhandled: list[int] = []

    def not_taken_by_serve(signum: int, frame: object) -> None:
        # Only reached if serve() installed no handler: fail the test, never the pytest process.
        unhandled.append(signum)
        loop.call_soon_threadsafe(task.cancel)

    previous = signal.signal(signal.SIGTERM, not_taken_by_serve)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        bot = await asyncio.wait_for(started, 30)
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        note = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        os.kill(os.getpid(), signal.SIGTERM)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
        # Stopped, it gives back the handlers it found: a program's own, asyncio.run's Ctrl-C.
        assert signal.getsignal(signal.SIGTERM) is not_taken_by_serve
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert unhandled == [], "serve() did not handle SIGTERM"
    assert len(fake.replies_to(note["id"])) == 2  # the turn in flight was finished
    assert not bot.accepting and bot.is_closed()
    assert bot.core.closers == []  # App.aclose() closed every store and client
    assert fake.close_codes == [1000]  # the session ended, not left resumable: offline at once


def test_run_without_a_token_says_what_to_do(monkeypatch, capsys, settings):
    from bot.cli import main

    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("VOXDESK_STORAGE_DIR", str(settings.storage_dir))
    assert main(["run"]) == 2
    assert "DISCORD_TOKEN is not set" in capsys.readouterr().err


async def test_a_turn_still_running_after_the_grace_period_is_cancelled_with_a_note(
    settings, fake: FakeDiscord
):
    from tests.frontend_engine import FrontendEngine

    async with running_bot(settings, fake, engine=FrontendEngine(delay=30), shutdown_grace_seconds=0.2) as h:
        note = await h.fake.send_note(nova, voice_note())
        await h.fake.wait_for(lambda rs: any(r.kind == "typing" for r in rs))
        h.stop.set()
        await asyncio.wait_for(h.task, 20)
        (reply,) = h.fake.replies_to(note["id"])
        assert "restarting" in reply.content
        assert h.bot.is_closed()


async def test_a_note_declared_too_long_is_refused_before_download(harness: Harness):
    note = await harness.fake.send_note(nova, voice_note(), duration=600.0)
    (reply,) = await answered(harness.fake, note, count=1)
    assert "too long" in reply.content
    assert not harness.fake.sent("cdn")


async def test_a_player_over_todays_budget_is_told_so_and_others_are_still_answered(
    settings, fake: FakeDiscord
):
    limited = settings.replace(usage={"daily_audio_seconds": 1.0})
    async with running_bot(limited, fake) as h:
        first = await h.fake.send_note(nova, voice_note())
        assert (await answered(h.fake, first))[1].content.startswith("Nova, you have")
        second = await h.fake.send_note(nova, voice_note())
        refused = "used up today's voice answers"
        await h.fake.wait_for(lambda _: any(refused in r.content for r in h.fake.replies_to(second["id"])))
        other = await h.fake.send_note(blaze, voice_note())
        assert (await answered(h.fake, other))[1].content.startswith("Blaze, you have")


async def test_no_reply_in_a_voice_note_exchange_may_ping_anyone(harness: Harness):
    # Discord pings the replied-to player and parses @everyone, roles and users in the content
    # unless told otherwise, and the content is the model's words. Every way a note is answered
    # (voice message and transcript, the file a refused voice message falls back to, an error
    # reply) must say so in its own request.
    fake = harness.fake
    fake.refuse_voice_in.add(ALLOWED_CHANNEL)
    notes = [
        await fake.send_note(nova, voice_note()),
        await fake.send_note(blaze, voice_note(), guild=True),
        await fake.send_note(quill, b"%PDF-1.7\n" + b"0" * 2000, voice=False, filename="question.ogg"),
    ]
    for note, count in zip(notes, (2, 1, 1), strict=True):
        await answered(fake, note, count=count)
    messages = [r for r in fake.received if r.kind == "message"]
    assert sum(r.is_voice_message for r in messages) == 1 and any(r.error == 50173 for r in messages)
    assert len(messages) == 5  # voice and transcript, the refused voice message and its file, the error
    for sent in messages:
        assert sent.body.get("allowed_mentions") == {"parse": [], "replied_user": False}, sent.body


@pytest.mark.parametrize(
    ("filename", "content_type", "fmt"),
    [
        ("question.webm", "video/webm", "webm"),  # what Discord says of an audio-only WebM
        ("question.mp4", "video/mp4", "m4a"),
        ("question.opus", None, "ogg"),  # an extension Discord gives no type
        ("QUESTION.M4A", None, "m4a"),
        # A client or bridge that declares its upload as "bytes of some kind" (Discord keeps the
        # type the uploader declares).
        ("question.m4a", "application/octet-stream", "m4a"),
        ("question.ogg", "application/ogg", "ogg"),
    ],
)
async def test_an_audio_file_discord_does_not_call_audio_is_answered(
    harness: Harness, filename: str, content_type: str | None, fmt: str
):
    data = encode(speechlike(1.5), 48_000, fmt)
    note = await harness.fake.send_note(nova, data, voice=False, filename=filename, content_type=content_type)
    voice, transcript = await answered(harness.fake, note)
    assert_voice_message(voice, harness.settings)
    assert transcript.content.startswith("Nova, you have")


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [("map.png", "image/png"), ("rules.pdf", "application/pdf"), ("notes.txt", None), ("clip", None)],
)
async def test_an_attachment_that_is_not_audio_is_still_no_voice_note(
    harness: Harness, filename: str, content_type: str | None
):
    fake = harness.fake
    note = await fake.send_note(
        nova, b"not audio" * 100, voice=False, filename=filename, content_type=content_type
    )
    (hint,) = await answered(fake, note, count=1)
    assert "I answer voice notes" in hint.content
    assert not fake.sent("cdn")


async def test_a_refused_note_is_logged_with_the_decoders_reason(harness: Harness, caplog):
    caplog.set_level(logging.INFO, logger="cogs.voice")
    cut = voice_note()[:60]  # the upload broke off inside the Opus header
    note = await harness.fake.send_note(nova, cut)
    (reply,) = await answered(harness.fake, note, count=1)
    assert "couldn't read" in reply.content
    (line,) = [r.getMessage() for r in caplog.records if f"note {note['id']} from" in r.getMessage()]
    assert "refused: I couldn't read that audio file" in line
    assert "(EOFError: " in line and "End of file" in line  # FFmpeg's own words, after the player's


async def test_only_a_note_whose_turn_runs_shows_typing_not_the_ones_waiting(settings, fake: FakeDiscord):
    settings = settings.replace(agent={"max_concurrent_turns": 1})  # a raid: one turn at a time
    async with running_bot(settings, fake, engine=FrontendEngine(delay=0.3)):
        notes = [await fake.send_note(player, voice_note()) for player in (nova, blaze, quill)]
        for note in notes:
            await answered(fake, note)
        # "typing…" is work of its own beside the turn: it may reach Discord after the answer.
        channels = [int(n["channel_id"]) for n in notes]
        await fake.wait_for(lambda _: all(fake.sent("typing", c) for c in channels))
    # Typing is sent again every 5 s: one for each waiting note would grow with the square of
    # the queue. Each note types only once its turn has the slot, after the note before it was
    # heard (downloaded); its typing may reach Discord after its own download, or later still.
    # The players' notes take the slot in whichever order their claims finish, not as sent.
    order = [(r.kind, r.channel_id) for r in fake.received if r.kind in ("typing", "cdn")]
    turns = [channel for kind, channel in order if kind == "cdn"]
    assert sorted(turns) == sorted(channels)
    for before, after in itertools.pairwise(turns):
        assert order.index(("typing", after)) > order.index(("cdn", before)), order


async def test_message_content_switched_off_while_running_ends_in_one_line_after_the_notes_in_flight(
    settings, fake: FakeDiscord, caplog
):
    import discord

    caplog.set_level(logging.INFO)
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with running_bot(settings, fake, engine=FrontendEngine(delay=3.0)) as h:
            note = await fake.send_note(nova, voice_note())
            await fake.wait_for(lambda _: fake.sent("typing"))  # its turn is under way
            # Switched off in the portal; the session drops and the bot identifies again: 4014.
            fake.application_flags = 0
            await fake.lose_the_session()
            await asyncio.wait({h.task}, timeout=30)
            assert h.task.done()
    assert len(fake.replies_to(note["id"])) == 2  # the note in flight was answered first
    said = [r for r in caplog.records if "4014" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR
    assert "while the bot ran" in said[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_run_exits_with_its_own_status_when_the_intent_is_withdrawn(monkeypatch, settings):
    import discord

    from cogs import runner

    async def refused(*args, **kwargs):
        raise discord.PrivilegedIntentsRequired(None)

    monkeypatch.setattr(runner, "serve", refused)
    monkeypatch.setattr(runner, "use_discord_logging", lambda level: None)
    assert runner.run(settings.replace(secrets={"discord_token": TOKEN})) == runner.INTENT_WITHDRAWN


async def test_where_only_voice_messages_count_an_audio_file_is_not_invited_again(
    settings, fake: FakeDiscord
):
    async with running_bot(settings, fake, any_audio_attachment=False):
        data = encode(speechlike(1.5), 48_000, "mp3")
        note = await fake.send_note(nova, data, voice=False, filename="q.mp3", content_type="audio/mpeg")
        (hint,) = await answered(fake, note, count=1)
        assert "audio file" in hint.content and "won't do" in hint.content
        assert not fake.sent("cdn")


async def test_grepping_a_notes_id_finds_every_line_about_it_and_its_summary(settings, fake, caplog):
    # The core's lines named the player alone ("engine ... failed for user 1111...", "heard a
    # note → ..."): with several notes of one player in flight, nothing tied them to a note, and
    # the answered line said neither where nor how long the player waited.
    from bot.engines.base import EngineError
    from tests.scripted_engine import ScriptedEngine, answer, calls

    class FailsOnce(ScriptedEngine):
        async def complete(self, turn):
            if not self.seen:
                self.seen.append(turn)
                raise EngineError("service down")
            return await super().complete(turn)

    engine = FailsOnce(
        [calls(("register_grievance", {"category": "wallet", "description": "gems gone"})), answer("Filed.")]
    )
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, engine=engine):
        failed = await fake.send_note(nova, voice_note(), guild=True)
        await answered(fake, failed)
        filed = await fake.send_note(nova, voice_note(), guild=True)
        await answered(fake, filed)
    about_nova = [
        r.getMessage()
        for r in caplog.records
        if r.name.split(".")[0] in ("bot", "cogs") and str(nova.id) in r.getMessage()
    ]
    for note in (failed, filed):
        mine = [line for line in about_nova if note["id"] in line]
        assert mine, about_nova
        (summary,) = [line for line in mine if line.startswith(f"answered note {note['id']} ")]
        assert f"from {nova.id} in {ALLOWED_CHANNEL} as voice" in summary
        assert summary.endswith(" s after it was sent")
    assert all(failed["id"] in line or filed["id"] in line for line in about_nova), about_nova
    assert (
        f"engine scripted failed on note {failed['id']} from {nova.id}: EngineError: service down"
        in about_nova
    )
    assert any(
        line.startswith(f"note {filed['id']} from {nova.id} filed grievance GRV-") for line in about_nova
    )
    assert "gems" not in caplog.text


@pytest.mark.parametrize("cut", ["status", "dropped", "short"])
async def test_a_download_the_cdn_fails_or_cuts_short_is_said_to_be_the_downloads_fault(
    harness: Harness, cut: str, caplog
):
    caplog.set_level(logging.INFO, logger="cogs.voice")
    fake = harness.fake
    data = voice_note(4.0)
    note = await fake.send_note(nova, data, dispatch=False)
    attachment = int(note["attachments"][0]["id"])
    if cut == "status":
        fake.cdn_status[attachment] = 502
    else:
        fake.cdn_cuts[attachment] = (len(data) // 2, cut == "dropped")
    await fake.dispatch("MESSAGE_CREATE", note)
    (reply,) = await answered(fake, note, count=1)
    assert "couldn't download" in reply.content
    assert f"could not download attachment {attachment} of note {note['id']}" in caplog.text


@pytest.mark.parametrize("declared", [True, False], ids=["length declared", "length unsaid"])
async def test_a_download_running_past_the_notes_size_is_given_up_not_read_whole(
    harness: Harness, declared: bool, caplog
):
    # A broken or hostile CDN sending far more than the attachment's size had the bot read it all
    # (for up to download_seconds), to refuse it only once whole, as a file too big.
    caplog.set_level(logging.INFO, logger="cogs.voice")
    fake = harness.fake
    data = voice_note(4.0)
    note = await fake.send_note(nova, data, dispatch=False)
    attachment = int(note["attachments"][0]["id"])
    surplus = 48 * 1024 * 1024
    fake.cdn_surplus[attachment] = (surplus, declared)
    await fake.dispatch("MESSAGE_CREATE", note)
    (reply,) = await answered(fake, note, count=1)
    assert "couldn't download" in reply.content
    assert f"could not download attachment {attachment} of note {note['id']}" in caplog.text
    assert f"ran past its stated {len(data)} bytes" in caplog.text
    # What the CDN got written is what the bot read, and what the sockets' buffers took.
    assert fake.cdn_written[attachment] < 16 * 1024 * 1024


async def test_a_body_a_little_past_the_notes_size_is_answered(harness: Harness):
    # Discord states a file's exact size; the slack past it spares a note from a CDN's few bytes.
    fake = harness.fake
    note = await fake.send_note(nova, voice_note(), dispatch=False)
    fake.cdn_surplus[int(note["attachments"][0]["id"])] = (100, False)
    await fake.dispatch("MESSAGE_CREATE", note)
    await answered(fake, note)


def test_the_wait_a_flooding_player_is_told_is_never_zero_seconds():
    # discord.py's cooldown counts down to the end of its window: in the last half second of it,
    # rounding would tell the player to wait 0 seconds, and the note they send at once is refused.
    assert too_fast(0.3).endswith("Try again in 1 second.")
    assert "in 60 seconds" in too_fast(59.2)


async def test_a_players_queue_is_bounded_when_turns_are_slower_than_the_flood_limit(settings, fake):
    # The flood limit counts notes arriving; when every turn is slow (a raid) a player within it
    # would still queue notes faster than they are answered, for hours and without end.
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine, flood_notes=2, flood_seconds=0.2) as h:
        first = await h.fake.send_note(nova, voice_note())
        await engine.until_asked(1)  # answering, held
        second = await h.fake.send_note(nova, voice_note())
        await asyncio.sleep(0.3)  # past the flood window: only the queue can turn the third away
        third = await h.fake.send_note(nova, voice_note())
        (told,) = await answered(h.fake, third, count=1)
        assert "still answering your earlier notes" in told.content
        other = await h.fake.send_note(blaze, voice_note())  # another player is still queued
        engine.hold.set()
        for note in (first, second, other):
            await answered(h.fake, note)
        assert h.fake.replies_to(third["id"]) == [told]
        voice = h.bot.get_cog("VoiceNotes")
        async with asyncio.timeout(30):
            while voice._backlog:  # noqa: ASYNC110 - the last turns are marking their notes answered
                await asyncio.sleep(0.05)


async def test_notes_turned_away_as_still_answering_spend_no_flood_budget(settings, fake, caplog):
    # Two notes sent while the bot was down, older than the flood window, fill the player's queue
    # at the start without counting toward the live limit. The notes the player sends meanwhile
    # are turned away as "still answering", which answers nothing: once the queue is empty, the
    # note they send at once must not be refused as too fast.
    caplog.set_level(logging.INFO, logger="cogs.voice")
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    old = [await fake.send_note(nova, voice_note(), guild=True, dispatch=False, ago=120) for _ in range(2)]
    async with running_bot(settings, fake, engine=engine, flood_notes=2, flood_seconds=60) as h:
        await engine.until_asked(1)  # the catch-up's notes: one answering, held, one queued
        turned = [await h.fake.send_note(nova, voice_note(), guild=True) for _ in range(2)]
        (told,) = await answered(h.fake, turned[0], count=1)
        assert "still answering your earlier notes" in told.content
        await h.fake.wait_for(lambda _: f"backlog: note {turned[1]['id']} " in caplog.text)
        engine.hold.set()
        for note in old:
            await answered(h.fake, note)
        voice = h.bot.get_cog("VoiceNotes")
        async with asyncio.timeout(30):
            while voice._backlog:  # noqa: ASYNC110 - the last turns are marking their notes answered
                await asyncio.sleep(0.05)
        again = await h.fake.send_note(nova, voice_note(), guild=True)
        replies = await answered(h.fake, again)
        assert replies[0].is_voice_message, [r.content for r in replies]
    assert f"flood: note {again['id']}" not in caplog.text


async def test_answers_waiting_to_be_sent_hold_none_of_their_notes(settings, fake: FakeDiscord):
    # A turn's slot is given back before its answer is sent, and a busy channel's sends wait behind
    # its rate limit: a note kept until then would let a raid hold far more notes than turns.
    settings = settings.replace(agent={"max_concurrent_turns": 2})
    wav = encode(speechlike(3.0), 48_000, "wav")  # 288 KB: larger than anything else a turn keeps
    engine = FrontendEngine()
    fake.posts_held = 100
    tracemalloc.start()
    try:
        async with running_bot(settings, fake, engine=engine) as h:
            raiders = [InjectedUser(820000000000000000 + i, f"raider{i}") for i in range(6)]
            for r in raiders:
                await h.fake.send_note(r, wav, filename="note.wav", content_type="audio/wav", voice=False)
            async with asyncio.timeout(60):
                while len(engine.turns) < len(raiders):  # noqa: ASYNC110 - every turn has its answer, its send held
                    await asyncio.sleep(0.05)
            await h.fake.wait_for(lambda _: len(h.fake.sent("cdn")) == len(raiders))
            held = [t for t in tracemalloc.take_snapshot().traces if t.size >= len(wav)]
            fake.posts_held = 0
            fake.posts_released.set()
            await h.fake.wait_for(lambda _: len(h.fake.sent("message")) >= 2 * len(raiders), within=60)
    finally:
        tracemalloc.stop()
    assert len(held) <= 2, f"{len(held)} notes of {len(wav)} bytes in memory behind held sends"


async def test_a_note_weighed_live_then_given_back_is_not_counted_again_by_a_recheck(harness: Harness):
    # A note answered live whose answer Discord failed is given back to the ledger and the next
    # recheck answers it as promised. The live limit already holds it: counting it again told the
    # player to slow down for their flood_notes-th note, one note short of the limit.
    voice, catch_up = harness.bot.get_cog("VoiceNotes"), harness.bot.get_cog("CatchUp")
    rate = harness.bot.discord_settings.flood_notes
    player = types.SimpleNamespace(id=nova.id)
    as_sent = types.SimpleNamespace(author=player)
    now = time.time()
    given_back = types.SimpleNamespace(
        id=820000000000000100, author=player, created_at=dt.datetime.fromtimestamp(now - 5, dt.UTC)
    )
    assert voice.count_once(given_back.id)  # the live path weighed it ...
    assert voice.flood.update_rate_limit(as_sent, now - 5) is None  # ... and counted it
    assert catch_up._within_flood_limit(voice, [given_back], {given_back.id}) == [given_back.id]
    assert voice.flood.get_bucket(as_sent, now).get_tokens(now) == rate - 1


async def test_the_flood_limit_keeps_a_players_uses_as_far_back_as_a_catch_up_reads(harness: Harness):
    # A note read back was sent up to catch_up_minutes ago (a private thread the bot is added to):
    # weighed against the player's uses kept for flood_seconds only, the notes sent just after it
    # would be forgotten, and it answered as one beyond the limit.
    from cogs.limits import room_for

    voice, limit = harness.bot.get_cog("VoiceNotes"), harness.bot.discord_settings
    rate, per = limit.flood_notes, limit.flood_seconds
    as_sent = types.SimpleNamespace(author=types.SimpleNamespace(id=nova.id))
    now = time.time()
    read_back_sent = now - limit.catch_up_minutes * 60 + 2 * per
    for at in [*(read_back_sent + 1 + i for i in range(rate)), now - 1]:
        assert voice.flood.update_rate_limit(as_sent, at) is None
    uses = voice.flood.get_bucket(as_sent, now).uses()
    assert not room_for(uses, read_back_sent, rate, per)


async def test_a_voice_message_without_its_waveform_is_logged_and_told_not_dropped(
    settings, fake: FakeDiscord, caplog
):
    # Discord flags it a voice message, but its attachment lacks the waveform discord.py takes
    # as one: where only voice messages count, it was dropped in a watched channel with no line,
    # and a DM heard how to record the voice message the player had just recorded.
    from bot.sentences import VOICE_WITHOUT_WAVEFORM
    from tests.fakes.discord_server import dm_channel_id

    caplog.set_level(logging.INFO, logger="cogs.voice")
    async with running_bot(settings, fake, any_audio_attachment=False):
        watched = await fake.send_message(
            blaze,
            channel_id=ALLOWED_CHANNEL,
            guild=True,
            flags=VOICE_FLAG,
            attachments=[waveformless(fake, "1")],
        )
        dm = await fake.send_message(
            nova,
            channel_id=dm_channel_id(nova.id),
            guild=False,
            flags=VOICE_FLAG,
            attachments=[waveformless(fake, "2")],
        )
        (told,) = await fake.wait_for(lambda _: fake.replies_to(dm["id"]))
        await eventually(lambda: f"voice message {watched['id']} from {blaze.id}" in caplog.text)
    assert told.content == VOICE_WITHOUT_WAVEFORM
    assert fake.replies_to(watched["id"]) == []  # told only where a hint may go
    line = "has no waveform, and discord.any_audio_attachment is off: not answered"
    assert f"voice message {dm['id']} from {nova.id} {line}" in caplog.text
    assert f"voice message {watched['id']} from {blaze.id} {line}" in caplog.text
    assert not fake.sent("cdn")


async def test_notes_a_resumed_session_replays_at_once_are_weighed_by_when_they_were_sent(
    settings, fake: FakeDiscord
):
    # A resumed gateway session replays the notes sent during a drop as it comes back. Sent a
    # minute apart, within two a minute, they are weighed by when they were sent: counted as they
    # come, three in a few seconds, the last would be told "too fast". A host clock set back would
    # hold the player at the limit the same way.
    async with running_bot(settings, fake, flood_notes=2, flood_seconds=60) as h:
        await caught_up(h.bot)
        voice = h.bot.get_cog("VoiceNotes")
        for ago in (160, 100, 40):
            note = await h.fake.send_note(nova, voice_note(), ago=ago)
            replies = await answered(h.fake, note, count=1)
            assert replies[0].is_voice_message, [r.content for r in replies]
            await answered(h.fake, note)
            async with asyncio.timeout(30):
                while voice._backlog:  # noqa: ASYNC110 - its turn is marking the note answered
                    await asyncio.sleep(0.05)


async def test_the_flood_limit_keeps_a_players_uses_for_a_note_read_back_later(harness: Harness):
    # Past flood_seconds a bucket with no `keep` is dropped with its uses: a note read back from
    # then (a catch-up, a private thread the bot is added to) is weighed as if none were sent.
    voice = harness.bot.get_cog("VoiceNotes")
    per = harness.bot.discord_settings.flood_seconds
    player = types.SimpleNamespace(id=nova.id)
    as_sent = types.SimpleNamespace(author=player)
    start = 1_000_000.0
    assert voice.flood.update_rate_limit(as_sent, start) is None
    later = start + harness.bot.discord_settings.catch_up_minutes * 60
    assert voice.flood.get_bucket(as_sent, later).uses() == [start]
    assert later - start > per


async def test_a_forwarded_voice_message_without_its_waveform_is_told_as_one(settings, fake: FakeDiscord):
    # The forward's own flags are not the voice message's: its snapshot's are. Told to record a
    # voice message, the player who forwarded one would not know what went wrong.
    from bot.sentences import VOICE_WITHOUT_WAVEFORM

    async with running_bot(settings, fake, any_audio_attachment=False):
        original = await fake.send_message(
            blaze,
            channel_id=OTHER_CHANNEL,
            guild=True,
            flags=VOICE_FLAG,
            attachments=[waveformless(fake, "1")],
        )
        forward = await fake.forward(nova, original)
        (told,) = await fake.wait_for(lambda _: fake.replies_to(forward["id"]))
    assert told.content == VOICE_WITHOUT_WAVEFORM


async def test_a_notes_download_is_let_go_once_decoded_while_the_model_thinks(
    settings, fake: FakeDiscord, monkeypatch
):
    # A download is up to audio.max_bytes (8 MB of WAV), and a turn's model call can take
    # seconds: held through it, every concurrent turn keeps its note in memory for nothing.
    freed: list[int] = []

    class Download(bytes):
        def __del__(self) -> None:  # bytes take no weak reference: a finalizer says it went
            freed.append(len(self))

    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine) as h:
        # The module the bot loaded the cog from: discord.py loads an extension afresh.
        voice = sys.modules[type(h.bot.get_cog("VoiceNotes")).__module__]
        download = voice.download

        async def download_marked(*args: object) -> bytes:
            return Download(await download(*args))

        monkeypatch.setattr(voice, "download", download_marked)
        note = await h.fake.send_note(nova, voice_note())
        await engine.until_asked(1)  # the turn is in the model's call, which waits to be let go
        await collected(freed)
        assert freed, "the note's bytes are still held while the model thinks"
        engine.hold.set()
        assert len(await answered(h.fake, note)) == 2


@pytest.mark.parametrize(
    "filename",
    # The climbing name is joined: the repository's own check refuses a source naming a path
    # beside it.
    [
        "/".join(("..", "..", "etc", "passwd.ogg")),
        "voice\\message.ogg",
        "ボイス メッセージ 🎤.ogg",
        ".ogg",
        "a" * 300 + ".ogg",
    ],
)
async def test_a_voice_message_under_any_filename_is_answered(harness: Harness, filename: str):
    # The name is the uploader's: only its extension may count, and only where the type is unsaid.
    note = await harness.fake.send_note(nova, voice_note(), filename=filename)
    voice, transcript = await answered(harness.fake, note)
    assert_voice_message(voice, harness.settings)
    assert transcript.content.startswith("Nova, you have")


@pytest.mark.parametrize(
    "content_type", [None, "", "image/png", "text/plain; charset=utf-8", "audio/ogg; codecs=opus"]
)
async def test_a_voice_message_answers_whatever_type_it_claims(harness: Harness, content_type: str | None):
    note = await harness.fake.send_note(nova, voice_note(), content_type=content_type)
    voice, _ = await answered(harness.fake, note)
    assert_voice_message(voice, harness.settings)


@pytest.mark.parametrize(
    "missing",
    [("duration_secs",), ("duration_secs", "waveform"), ("duration_secs", "waveform", "content_type")],
)
async def test_a_voice_message_without_its_duration_is_answered(harness: Harness, missing: tuple[str, ...]):
    # Flagged a voice message, the fields that make one to discord.py gone: answered as the
    # audio its type or its name says it is.
    fake = harness.fake
    note = await fake.send_note(nova, voice_note(), dispatch=False)
    for field in missing:
        del note["attachments"][0][field]
    await fake.dispatch("MESSAGE_CREATE", note)
    await answered(fake, note)


@pytest.mark.parametrize("status", [403, 404, 500, 503, 429])
async def test_a_download_the_cdn_refuses_is_said_to_be_the_downloads_fault(
    harness: Harness, status: int, caplog
):
    caplog.set_level(logging.INFO, logger="cogs.voice")
    fake = harness.fake
    note = await fake.send_note(nova, voice_note(), dispatch=False)
    attachment = int(note["attachments"][0]["id"])
    fake.cdn_status[attachment] = status
    await fake.dispatch("MESSAGE_CREATE", note)
    (reply,) = await answered(fake, note, count=1)
    assert "couldn't download" in reply.content
    assert f"could not download attachment {attachment} of note {note['id']}: HTTP {status}" in caplog.text


async def test_a_download_the_cdn_redirects_is_followed(harness: Harness):
    fake = harness.fake
    data = voice_note()
    moved = await fake.send_note(nova, data, dispatch=False)
    note = await fake.send_note(nova, data, dispatch=False)
    fake.cdn_redirects[int(note["attachments"][0]["id"])] = moved["attachments"][0]["url"]
    await fake.dispatch("MESSAGE_CREATE", note)
    await answered(fake, note)


async def test_a_download_redirected_in_a_loop_is_said_to_be_the_downloads_fault(harness: Harness, caplog):
    caplog.set_level(logging.INFO, logger="cogs.voice")
    fake = harness.fake
    note = await fake.send_note(nova, voice_note(), dispatch=False)
    attachment = note["attachments"][0]
    fake.cdn_redirects[int(attachment["id"])] = attachment["url"]
    await fake.dispatch("MESSAGE_CREATE", note)
    (reply,) = await answered(fake, note, count=1)
    assert "couldn't download" in reply.content
    assert f"could not download attachment {attachment['id']} of note {note['id']}" in caplog.text


async def test_a_download_trickling_in_is_given_up_at_its_deadline(settings, fake: FakeDiscord, caplog):
    caplog.set_level(logging.INFO, logger="cogs.voice")
    async with running_bot(settings, fake, download_seconds=0.5):
        note = await fake.send_note(nova, voice_note(), dispatch=False)
        attachment = int(note["attachments"][0]["id"])
        fake.cdn_trickles[attachment] = 0.05
        await fake.dispatch("MESSAGE_CREATE", note)
        (reply,) = await answered(fake, note, count=1)
        assert "couldn't download" in reply.content
        assert f"could not download attachment {attachment} of note {note['id']}: TimeoutError" in caplog.text
