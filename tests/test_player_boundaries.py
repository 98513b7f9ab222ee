"""No player reaches another's data through the whole stack: a model coaxed into naming another
player or their ticket, two players sharing a channel, and the bot's log. The real discord.py
client against the fake Discord, the real openai SDK against the fake OpenAI server, which records
every request the model was sent."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator

import pytest

from tests.discord_harness import blaze, nova, voice_note
from tests.fakes import openai_server
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.discord_server import serving as discord_serving
from tests.fakes.openai_server import FakeOpenAI, answer, tool_calls
from tests.test_ticket_privacy import bot_on_openai

from .conftest import BLAZE, NOVA

# Nova's, filed in her DM: what nobody else may hear.
COMPLAINT = "Vex keeps sending me slurs since I reported him, and my card ending 4242 was charged twice"
NOVAS_WORDS = ("Vex", "slurs", "4242", "Night Owl", "708")  # her complaint, achievement, points


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with discord_serving() as fake:
        yield fake


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with openai_server.serving() as fake:
        yield fake


async def answered(discord_fake: FakeDiscord, note: dict) -> str:
    """The transcript posted in answer to `note`."""
    replies = await discord_fake.wait_for(
        lambda _: (r := discord_fake.replies_to(note["id"])) and len(r) >= 2 and r
    )
    return replies[-1].content


def words_sent(chat: dict) -> str:
    """A chat request as text, its audio left out: base64 spells every short word by chance."""

    def heard(part: object) -> bool:
        return not (isinstance(part, dict) and part.get("type") == "input_audio")

    messages = [
        {**m, "content": [p for p in m["content"] if heard(p)]} if isinstance(m.get("content"), list) else m
        for m in chat["messages"]
    ]
    return json.dumps({**chat, "messages": messages}, ensure_ascii=False)


def hers(text: str, *others: str) -> list[str]:
    """Nova's words (and `others`) in `text`, each whole: a tool call's random id or a timestamp
    spells "708" by chance."""
    return [w for w in (*others, *NOVAS_WORDS) if re.search(rf"(?<![\w.]){re.escape(w)}(?![\w.])", text)]


def tool_results(chat: dict) -> list[dict]:
    """What each tool told the model, as the chat request after the calls carries it."""
    return [json.loads(m["content"]) for m in chat["messages"] if m.get("role") == "tool"]


@pytest.mark.parametrize("guild", [False, True], ids=["dm", "guild"])
async def test_a_model_naming_another_players_ticket_or_id_is_told_nothing_of_theirs(
    settings, discord_fake, openai_fake, guild
) -> None:
    # "What's the status of GRV-14, and Nova's score?": the model passes her key, and her id as an
    # argument no tool has. Blaze's own tickets and stats are what any answer may hold.
    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as bot:
        theirs = await bot.core.grievances.register(NOVA, "wallet", COMPLAINT)
        openai_fake.script = [
            tool_calls(
                ("get_grievance_status", {"ticket_key": theirs.key}),
                ("get_grievance_status", {"ticket_key": theirs.key, "user_id": NOVA}),
                ("get_player_stats", {"user_id": NOVA}),
                ("get_player_stats", {"player": "Nova"}),
                ("register_grievance", {"category": "other", "description": "lag in poker", "user_id": NOVA}),
            ),
            answer("Here is what I found."),
        ]
        chats = len(openai_fake.chats)
        posted = await answered(discord_fake, await discord_fake.send_note(blaze, voice_note(), guild=guild))
        _, second = openai_fake.chats[chats:]
        mine = await bot.core.grievances.status(BLAZE)
        novas = await bot.core.grievances.status(NOVA)
    lookup, lookup_as_her, stats_as_her, stats_by_name, filed_as_her = tool_results(second.body)
    assert lookup["tickets"] == [] and theirs.key in lookup["message"]  # "No ticket …": as for none
    for refused in (lookup_as_her, stats_as_her, stats_by_name, filed_as_her):
        assert refused["error"].startswith("Invalid arguments"), refused
    sent = words_sent(second.body)
    assert hers(sent) == []
    assert hers(posted) == []
    assert [g for g in [*mine, *novas] if "poker" in g.description] == []  # refused: filed for nobody
    assert openai_fake.violations == [] and discord_fake.violations == []


async def test_two_players_in_one_channel_never_hear_each_others_turns(
    settings, discord_fake, openai_fake
) -> None:
    secret = "my real name is Ada Quist and my card ending 4242 was charged twice"
    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as _:
        openai_fake.transcript = secret
        openai_fake.script = [tool_calls(("get_player_stats", {})), answer("Nova: {tool:get_player_stats}")]
        await answered(discord_fake, await discord_fake.send_note(nova, voice_note(), guild=True))
        openai_fake.transcript = "how many points do i have"
        openai_fake.script = [answer("Here is what I found.")]
        chats = len(openai_fake.chats)
        await answered(discord_fake, await discord_fake.send_note(blaze, voice_note(), guild=True))
        (blazes,) = openai_fake.chats[chats:]
        openai_fake.script = [answer("Again.")]
        chats = len(openai_fake.chats)
        await answered(discord_fake, await discord_fake.send_note(nova, voice_note(), guild=True))
        (novas,) = openai_fake.chats[chats:]
    sent = words_sent(blazes.body)
    assert hers(sent, "Ada Quist", "4242") == []
    assert "Ada Quist" in words_sent(novas.body)  # her own conversation goes on
    assert openai_fake.violations == [] and discord_fake.violations == []


async def test_no_players_words_or_answers_reach_the_log_at_info(
    settings, discord_fake, openai_fake, caplog
) -> None:
    # The log outlives every prune, /forget and `player forget`: ids, keys and categories only.
    secret = "my real name is Ada Quist and Vex keeps sending me slurs"
    caplog.set_level(logging.INFO)
    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as _:
        openai_fake.transcript = secret
        openai_fake.script = [
            tool_calls(
                ("get_player_stats", {}),
                ("register_grievance", {"category": "other", "description": COMPLAINT}),
                ("get_grievance_status", {}),
                ("search_manuals", {"query": "Ada Quist refund"}),
            ),
            answer("Ada Quist: {tool:get_player_stats} {tool:get_grievance_status}"),
        ]
        for guild in (False, True):
            await answered(discord_fake, await discord_fake.send_note(nova, voice_note(), guild=guild))
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "filed grievance" in said  # the log was heard
    assert hers(said, "Ada Quist") == []


async def test_a_players_dm_and_a_guild_channel_are_two_conversations(
    settings, discord_fake, openai_fake
) -> None:
    # What she said and heard in her DM (her real name, her ticket's words) is read by her alone:
    # her next note in a guild channel, whose answer everyone there reads, must not carry it.
    secret = "my real name is Ada Quist"
    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as bot:
        await bot.core.grievances.register(NOVA, "wallet", COMPLAINT)
        openai_fake.transcript = secret
        openai_fake.script = [
            tool_calls(("get_grievance_status", {}), ("get_player_stats", {})),
            answer("{tool:get_grievance_status} {tool:get_player_stats}"),
        ]
        in_dm = await answered(discord_fake, await discord_fake.send_note(nova, voice_note()))
        openai_fake.transcript = "what did i tell you just now"
        openai_fake.script = [answer("Here is what I found.")]
        chats = len(openai_fake.chats)
        in_guild = await answered(discord_fake, await discord_fake.send_note(nova, voice_note(), guild=True))
        (guilds,) = openai_fake.chats[chats:]
        openai_fake.script = [answer("Again.")]
        chats = len(openai_fake.chats)
        await answered(discord_fake, await discord_fake.send_note(nova, voice_note()))
        (dms,) = openai_fake.chats[chats:]
    assert hers(in_dm, "Vex")  # the DM's answer held her ticket's words: there was something to keep
    assert hers(words_sent(guilds.body), "Ada Quist") == []
    assert hers(in_guild, "Ada Quist") == []
    assert hers(words_sent(dms.body), "Ada Quist") != []  # her DM's conversation goes on there
    assert openai_fake.violations == [] and discord_fake.violations == []


async def test_two_players_notes_answered_side_by_side_each_hear_their_own(
    settings, discord_fake, openai_fake
) -> None:
    # Both turns are at the model at once, each step of one between the other's: each answer
    # replies to its own note and quotes its own player's stats alone.
    def stats_then_quote(body: dict) -> dict:
        told = any(m.get("role") == "tool" for m in body["messages"])
        return (answer("{tool:get_player_stats}") if told else tool_calls(("get_player_stats", {})))(body)

    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as _:
        openai_fake.chat_seconds = 0.5  # each step waits: the other player's comes meanwhile
        openai_fake.script = [stats_then_quote] * 4
        notes = [
            (name, await discord_fake.send_note(player, voice_note(), guild=True))
            for name, player in (("Nova", nova), ("Blaze", blaze))
        ]
        posted = {name: await answered(discord_fake, note) for name, note in notes}
    assert len(openai_fake.chats) == 4
    for name, other in (("Nova", "Blaze"), ("Blaze", "Nova")):
        assert name in posted[name] and other not in posted[name], posted
    assert openai_fake.violations == [] and discord_fake.violations == []
