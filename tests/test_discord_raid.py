"""A raid under Discord's rate limits: the fake limits as Discord does under load (per-channel
buckets with their headers, 429s past them), every time of the bot's that Discord's limits are
weighed against scaled as theirs are, and the notes of many players in one channel and in DMs
answered through the real discord.py client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.discord_harness import caught_up, running_bot, settle, voice_note
from tests.fakes.discord_server import FakeDiscord, InjectedUser, serving
from tests.frontend_engine import FrontendEngine
from tests.test_discord_news import eventually
from tests.test_discord_replies import note_state

# Discord's windows in a test: 5 messages a channel in 0.25 s, a reaction in 12.5 ms.
SCALE = 0.05
RAIDERS = [InjectedUser(700000000000000100 + i, f"raider{i}") for i in range(30)]
IN_DMS = [InjectedUser(700000000000000200 + i, f"caller{i}") for i in range(6)]


@pytest.fixture
async def fake():
    async with serving() as running:
        running.throttle(SCALE)
        yield running


def scaled(**discord: Any) -> dict[str, Any]:
    """The bot's times Discord's limits are weighed against, scaled as the fake's windows are; a
    recheck every 0.5 s, which `settle` waits for, so a note given back is answered before it ends."""
    return {"send_seconds": 60.0 * SCALE, "recheck_seconds": 0.5} | discord


async def raid(fake: FakeDiscord) -> list[tuple[InjectedUser, dict[str, Any]]]:
    """Two notes from each raider in the watched channel and from each caller in their DM."""
    notes = []
    for _ in range(2):
        notes += [(p, await fake.send_note(p, voice_note(), guild=True)) for p in RAIDERS]
        notes += [(p, await fake.send_note(p, voice_note())) for p in IN_DMS]
    return notes


async def test_a_raid_under_discords_rate_limits_answers_every_note_once_in_order(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, **scaled()) as h:
        notes = await raid(fake)
        await settle(fake, within=120)
    voice = {n["id"]: [r for r in fake.replies_to(n["id"]) if r.is_voice_message] for _, n in notes}
    assert {i: len(v) for i, v in voice.items() if len(v) != 1} == {}
    assert {n["id"]: note_state(settings, n) for _, n in notes if note_state(settings, n) != "answered"} == {}
    for player in {p.id for p, _ in notes}:
        # The whole answer to a player's first note (its voice message and its words) before any
        # of the second's.
        first, second = [fake.replies_to(n["id"]) for p, n in notes if p.id == player]
        assert max(r.at for r in first) < min(r.at for r in second), player
    # Each note heard once: an answer waiting its turn behind the channel's limit is on its way,
    # and heard again it would be a second billed turn, its POSTs two more in the same queue.
    assert len(h.engine.turns) == len(notes)
    assert [
        r.getMessage() for r in caplog.records if r.name == "cogs.voice" and r.levelno >= logging.WARNING
    ] == []


async def test_an_answer_waiting_its_turn_behind_the_channels_limit_is_not_heard_again(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
):
    # Eight answers of two messages each in one channel, five messages a window of 1.5 s: the last
    # wait in discord.py's rate limiter for three windows to pass, longer than send_seconds, the
    # queue moving at each. They are on their way, not stalled: no note gets a ⏳ or is heard twice.
    fake.throttle(0.3)
    async with running_bot(settings, fake, send_seconds=2.0, recheck_seconds=0.2) as h:
        notes = [await fake.send_note(player, voice_note(), guild=True) for player in RAIDERS[:8]]
        await settle(fake, within=60)
    assert [[r.is_voice_message for r in fake.replies_to(n["id"])] for n in notes] == [[True, False]] * 8
    assert len(h.engine.turns) == 8
    marks = {r.body["emoji"] for r in fake.received if r.kind == "reaction_add" and r.error is None}
    assert marks == {"\N{HEADPHONE}"}
    logged = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "cogs.voice"
    ]
    assert logged == []


async def test_notes_in_hand_in_one_channel_share_one_typing(settings, fake: FakeDiscord):
    # Discord shows the bot typing in a channel, not per note: three notes in hand there at once
    # (their turns held until all three have begun) keep one "typing…" going, not three.
    engine = FrontendEngine()
    engine.hold = asyncio.Event()
    async with running_bot(settings, fake, engine=engine, **scaled()):
        notes = [await fake.send_note(player, voice_note(), guild=True) for player in RAIDERS[:3]]
        await engine.until_asked(3)
        engine.hold.set()
        await settle(fake, within=60)
    assert [len(fake.replies_to(n["id"])) for n in notes] == [2, 2, 2]
    typing = [r for r in fake.received if r.kind == "typing" and r.error is None]
    # One a TYPING_EVERY (5 s) while the notes are in hand: fewer than one a note, however slow
    # the machine, unless the hold outlasts 10 s.
    assert len(typing) < len(notes), len(typing)


async def test_each_answer_of_a_raid_in_one_channel_is_its_own_players_alone(settings, fake: FakeDiscord):
    # Notes of many players in one channel at once, answered side by side: each answer (its voice
    # message and its words) replies to that player's note and says that player's name alone.
    async with running_bot(settings, fake, **scaled()):
        notes = await raid(fake)
        await settle(fake, within=120)
    for player, note in notes:
        replies = fake.replies_to(note["id"])
        assert [r.is_voice_message for r in replies] == [True, False], player.name
        words = replies[-1].content.lower()  # the fake shows a name capitalised
        assert words.startswith(f"{player.name}, you have"), (player.name, words)
        others = {p.name for p, _ in notes if p.id != player.id}
        assert not {w.strip(",.") for w in words.split()} & others, (player.name, words)


async def test_a_message_post_that_fails_on_its_way_is_out_no_longer_and_moves_its_channel() -> None:
    # A POST whose connection fails (refused, dropped) is answered by no one: discord.py waits
    # before its next try, which must not count as a request out to Discord all that while, and
    # the channel's queue moved (its turn is over).
    import contextvars
    import socket

    import aiohttp

    from cogs.bot import SENDING, SendClock, timed_requests

    with socket.socket() as spare:  # a port nothing listens on
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    posts_answered: dict[int, float] = {}
    clock = SendClock()

    async def post() -> None:
        trace = timed_requests(aiohttp.TraceConfig(), posts_answered)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.post(f"http://127.0.0.1:{port}/api/v10/channels/123/messages")

    context = contextvars.copy_context()
    context.run(SENDING.set, clock)
    await asyncio.create_task(post(), context=context)
    assert clock.out_since is None
    assert list(posts_answered) == [123]


@pytest.mark.parametrize("reconnect", ["moved", "resumed", "identified afresh"])
async def test_a_raids_notes_in_hand_across_a_gateway_reconnect_are_each_answered_once(
    settings, fake: FakeDiscord, caplog: pytest.LogCaptureFixture, reconnect
):
    # Turns under way and notes queued behind them when the gateway drops, or Discord asks the bot
    # to reconnect (op 7, moving the session). Resumed, Discord replays the events of the gap, and
    # only those; its session lost, the bot identifies afresh
    # and its catch-up reads the channel back from before the drop, where it meets the notes in
    # hand too (claimed: left to their turns) beside those sent in the gap. Either way each note
    # is heard once and answered once, and none is told it is one too many.
    caplog.set_level(logging.INFO)
    engine = FrontendEngine()
    engine.hold = asyncio.Event()  # the turns in hand last until the new session is up
    async with running_bot(settings, fake, engine, **scaled()) as h:
        await caught_up(h.bot)  # the start's catch-up: said before the count below
        in_hand = []
        for _ in range(2):
            in_hand += [await fake.send_note(p, voice_note(), guild=True) for p in RAIDERS[:6]]
        await engine.until_asked(1)
        await fake.read_by_the_bot()
        identified = len(fake.identify_payloads)
        caught_ups = lambda: caplog.text.count("catch-up: answering")  # noqa: E731
        before = caught_ups()
        fake.resumed.clear()
        if reconnect == "moved":
            await fake.ask_to_reconnect()
            await asyncio.wait_for(fake.resumed.wait(), 60)
            in_gap = [await fake.send_note(p, voice_note(), guild=True) for p in RAIDERS[6:9]]
        else:
            fake.gateway_outage()
            if reconnect == "resumed":
                await fake.drop_connection()
            else:
                await fake.lose_the_session()
            await fake.wait_for(lambda _: fake.hanging_connections)  # the bot knows it is cut off
            in_gap = [await fake.send_note(p, voice_note(), guild=True) for p in RAIDERS[6:9]]
            fake.end_gateway_outage()
        if reconnect != "identified afresh":
            await asyncio.wait_for(fake.resumed.wait(), 60)
        else:
            await fake.wait_for(lambda _: len(fake.identify_payloads) > identified and fake.bot_connected, 60)
            await eventually(lambda: caught_ups() > before)  # the new session's read met them
        engine.hold.set()
        await settle(fake, within=120)
    notes = in_hand + in_gap
    # Each note's voice message and its words, no more: no line telling a player of too many.
    replies = [[r.is_voice_message for r in fake.replies_to(n["id"])] for n in notes]
    assert replies == [[True, False]] * len(notes), replies
    assert {n["id"]: note_state(settings, n) for n in notes if note_state(settings, n) != "answered"} == {}
    assert len(h.engine.turns) == len(notes)
    afresh = reconnect == "identified afresh"
    assert len(fake.identify_payloads) == identified + afresh
    assert caught_ups() == before + afresh
    logged = [
        r.getMessage() for r in caplog.records if r.name == "cogs.voice" and r.levelno >= logging.WARNING
    ]
    assert logged == []
