"""What a ticket says reaches the model only where the speaker alone reads the answer: a note in a
guild channel or thread hears the key, category and status of each ticket, a DM its words too.
The real discord.py client against the fake Discord, the real openai SDK against the fake
OpenAI server, which records what the tool told the model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from bot import paths
from bot import sentences as say
from bot.turns import PastTurn
from cogs.bot import VoxdeskBot
from cogs.runner import serve
from cogs.voice import read_by_speaker_alone
from tests.discord_harness import blaze, discord_settings, nova, running_bot, voice_note
from tests.fakes import openai_server
from tests.fakes.discord_server import ALLOWED_CHANNEL, TOKEN, FakeDiscord
from tests.fakes.discord_server import serving as discord_serving
from tests.fakes.openai_server import API_KEY, FakeOpenAI, answer, tool_calls
from tests.test_discord_restarts import all_answered
from tests.test_openai import openai_settings

from .conftest import NOVA, REPO

# Filed in a DM: words a player would not have read out to a channel.
COMPLAINT = "Vex keeps sending me slurs since I reported him, and my card ending 4242 was charged twice"
WORDS = ("Vex", "slurs", "4242", "Topped up")  # the last of a demo ticket of Nova's


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    async with discord_serving() as fake:
        yield fake


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with openai_server.serving() as fake:
        yield fake


@contextlib.asynccontextmanager
async def bot_on_openai(
    storage: Path, discord_fake: FakeDiscord, openai_fake: FakeOpenAI
) -> AsyncIterator[VoxdeskBot]:
    """The bot as `python -m bot run` starts it, with the engine its settings choose: OpenAI."""
    settings = discord_settings(openai_settings(storage, openai_fake), discord_fake)
    stop = asyncio.Event()
    started: asyncio.Future[VoxdeskBot] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, TOKEN, stop=stop, started=started))
    done, _ = await asyncio.wait({started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    bot = started.result()
    await asyncio.wait_for(bot.wait_until_ready(), 30)
    try:
        yield bot
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def ask_ticket_status(
    bot: VoxdeskBot, discord_fake: FakeDiscord, openai_fake: FakeOpenAI, **where: object
) -> tuple[str, str]:
    """Nova's note asking after her tickets, sent `where`: (what the ticket tool told the model,
    the transcript posted in answer, which quotes it)."""
    openai_fake.script = [tool_calls(("get_grievance_status", {})), answer("{tool:get_grievance_status}")]
    chats = len(openai_fake.chats)
    note = await discord_fake.send_note(nova, voice_note(), **where)  # type: ignore[arg-type]
    replies = await discord_fake.wait_for(
        lambda _: (r := discord_fake.replies_to(note["id"])) and len(r) >= 2 and r
    )
    _, second = openai_fake.chats[chats:]
    return told_by_ticket_tool(second.body), replies[-1].content


def told_by_ticket_tool(chat: dict) -> str:
    """What get_grievance_status answered, as the next chat request carries it to the model."""
    asked = next(
        c["id"]
        for m in chat["messages"]
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or []
        if c["function"]["name"] == "get_grievance_status"
    )
    (told,) = [m["content"] for m in chat["messages"] if m.get("tool_call_id") == asked]
    return told


@pytest.mark.parametrize("place", ["channel", "thread"])
async def test_a_note_in_a_guild_place_hears_no_words_of_a_ticket_and_why(
    settings, discord_fake, openai_fake, place
) -> None:
    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as bot:
        filed = await bot.core.grievances.register(NOVA, "wallet", COMPLAINT)
        where = (
            {"guild": True}
            if place == "channel"
            else {"channel_id": await discord_fake.add_thread(ALLOWED_CHANNEL, "help")}
        )
        told, posted = await ask_ticket_status(bot, discord_fake, openai_fake, **where)
    result = json.loads(told)
    assert filed.key in [t["ticket_key"] for t in result["tickets"]]
    assert [w for w in WORDS if w in told] == []
    assert [w for w in WORDS if w in posted] == []  # nor in the transcript the channel reads
    assert result["words"] == say.TICKET_WORDS_KEPT
    mine = next(t for t in result["tickets"] if t["ticket_key"] == filed.key)
    assert {"category": mine["category"], "status": mine["status"]} == {
        "category": "wallet",
        "status": "open",
    }
    assert mine["last_update"]
    assert openai_fake.violations == [] and discord_fake.violations == []


async def test_the_same_note_in_a_dm_hears_what_each_ticket_says(settings, discord_fake, openai_fake) -> None:
    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as bot:
        filed = await bot.core.grievances.register(NOVA, "wallet", COMPLAINT)
        told, _ = await ask_ticket_status(bot, discord_fake, openai_fake)
    result = json.loads(told)
    summaries = {t["ticket_key"]: t["summary"] for t in result["tickets"]}
    assert summaries[filed.key] == COMPLAINT
    assert "words" not in result
    assert openai_fake.violations == [] and discord_fake.violations == []


class _State:
    """Enough of discord.py's connection state for a partial channel to be made."""

    def _get_guild(self, guild_id: int | None) -> None:
        return None


def test_only_a_dm_is_read_by_the_speaker_alone() -> None:
    state = _State()
    # After a restart, catch-up reads a DM through a partial channel of the private type.
    dm_after_restart = discord.PartialMessageable(state=state, id=1, type=discord.ChannelType.private)  # type: ignore[arg-type]
    # A note from a guild channel discord.py has not cached: a partial channel with no type.
    uncached_guild_channel = discord.PartialMessageable(state=state, id=2, guild_id=3)  # type: ignore[arg-type]
    unknown = discord.PartialMessageable(state=state, id=4)  # type: ignore[arg-type]
    assert read_by_speaker_alone(dm_after_restart)
    assert not read_by_speaker_alone(uncached_guild_channel)
    assert not read_by_speaker_alone(unknown)
    assert not read_by_speaker_alone(object())


async def test_voxdesk_ask_on_the_command_line_hears_what_each_ticket_says(settings, openai_fake) -> None:
    openai_fake.script = [tool_calls(("get_grievance_status", {})), answer("{tool:get_grievance_status}")]
    env = {
        **os.environ,
        "VOXDESK_STORAGE_DIR": str(settings.storage_dir),
        "VOXDESK_AGENT_ENGINE": "openai",
        "VOXDESK_AGENT_FALLBACK": "apology",
        "VOXDESK_OPENAI_BASE_URL": openai_fake.base_url,
        "OPENAI_API_KEY": API_KEY,
    }
    sample = str(paths.SAMPLES / "5-ticket-status.ogg")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "ask", sample, "--user", NOVA, "--json",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, err.decode()
    told = json.loads(told_by_ticket_tool(openai_fake.chats[-1].body))
    assert {t["ticket_key"]: t["summary"] for t in told["tickets"]}["GRV-10"].startswith(
        "Topped up 20 dollars"
    )
    assert "words" not in told
    assert "Topped up 20 dollars" in json.loads(out)["reply_text"]


async def test_only_dms_are_private_live_and_caught_up_after_a_restart(settings, discord_fake) -> None:
    fake = discord_fake
    async with running_bot(settings, fake) as h:
        live = [
            await fake.send_note(nova, voice_note()),
            await fake.send_note(blaze, voice_note(), guild=True),
        ]
        live.append(
            await fake.send_note(nova, voice_note(), channel_id=await fake.add_thread(ALLOWED_CHANNEL, "x"))
        )
        await all_answered(fake, live)
        before = {t.context.request_id: t.context.private for t in h.engine.turns}
    # Sent while the bot was down: read back by catch-up, a DM's through a partial channel.
    missed = [await fake.send_note(nova, voice_note()), await fake.send_note(blaze, voice_note(), guild=True)]
    async with running_bot(settings, fake) as h:
        await all_answered(fake, missed)
        after = {t.context.request_id: t.context.private for t in h.engine.turns}
    assert [before[n["id"]] for n in live] == [True, False, False]
    assert [after[n["id"]] for n in missed] == [True, False]


async def test_a_ticket_s_words_a_channel_s_history_kept_from_before_are_not_sent_again(
    settings, discord_fake, openai_fake
) -> None:
    # A conversation in a guild channel written before ticket words were kept from public
    # places holds them in a tool result: its next turn there must not hand them to the model.
    async with bot_on_openai(settings.storage_dir, discord_fake, openai_fake) as bot:
        filed = await bot.core.grievances.register(NOVA, "wallet", COMPLAINT)
        ticket = {"ticket_key": filed.key, "category": "wallet", "status": "open", "summary": COMPLAINT}
        call = {"id": "call_before", "name": "get_grievance_status", "arguments": {}, "ok": True}
        earlier = PastTurn(
            user_text="what about my tickets",
            reply_text=f"{filed.key} is open.",
            tool_results=[{**call, "result": {"tickets": [ticket]}}],
        )
        await bot.core.conversations.append(NOVA, earlier, conversation=str(ALLOWED_CHANNEL))
        openai_fake.script = [answer("Anything else?")]
        note = await discord_fake.send_note(nova, voice_note(), guild=True)
        await all_answered(discord_fake, [note])
    (chat,) = openai_fake.chats
    # The words sent, not the note's audio (base64 may hold "Vex" by chance).
    sent = json.dumps(
        [
            [p for p in m["content"] if p.get("type") != "input_audio"]
            if isinstance(m["content"], list)
            else m
            for m in chat.body["messages"]
        ]
    )
    assert "call_before" in sent and filed.key in sent  # the history went, without the words
    assert [w for w in WORDS if w in sent] == []
    assert openai_fake.violations == [] and discord_fake.violations == []
