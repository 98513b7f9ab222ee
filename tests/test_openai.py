"""The OpenAI engine through the real `openai` SDK, over HTTP, against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import openai
import pytest

from bot import paths
from bot import sentences as say
from bot.app import running_app
from bot.engines.base import PastTurn
from bot.engines.openai import names_players
from bot.tools.base import ToolContext
from tests.audio_samples import encode, speechlike
from tests.fakes.openai_server import (
    API_KEY,
    AZURE_KEY,
    Failure,
    Held,
    answer,
    audio_reply,
    filtered,
    refusal,
    serving,
    spoken_audio,
    tool_calls,
)

from .conftest import BLAZE, NOVA, QUILL, make_settings, speech_pools_started

NOTE = encode(speechlike(2.0), 48_000, "ogg")


@pytest.fixture
async def fake():
    async with serving() as server:
        yield server


def openai_settings(storage: Path, fake, **env: str):
    # The fake reads and checks each request against the API's spec, and makes an answer's audio,
    # before it answers: seconds on a busy machine, for a raid's requests in turn more. The read
    # timeout is long enough that none times out there; a test of a timeout names its own.
    defaults = {
        "VOXDESK_AGENT_ENGINE": "openai",
        "VOXDESK_OPENAI_BASE_URL": fake.base_url,
        "VOXDESK_OPENAI_TIMEOUT_SECONDS": "30",
        "VOXDESK_OPENAI_MAX_RETRIES": "2",
        "OPENAI_API_KEY": API_KEY,
    }
    return make_settings(storage, **{**defaults, **env})


def azure_settings(storage: Path, fake, deployment: str = "voxdesk-audio", **env: str):
    return make_settings(
        storage,
        VOXDESK_AGENT_ENGINE="openai",
        VOXDESK_OPENAI_PROVIDER="azure",
        VOXDESK_OPENAI_AZURE_ENDPOINT=fake.azure_endpoint,
        VOXDESK_OPENAI_AZURE_DEPLOYMENT=deployment,
        AZURE_OPENAI_API_KEY=AZURE_KEY,
        **env,
    )


@pytest.fixture
def storage(settings) -> Path:
    return settings.storage_dir


async def test_plain_question_is_answered_with_audio_and_text(storage, fake) -> None:
    fake.script = [answer("Hi there, ask me about your points.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.engine == "openai" and reply.kind == "answer"
    assert reply.text == "Hi there, ask me about your points."
    assert reply.user_text == fake.transcript  # from the concurrent transcription request
    assert reply.audio is not None and reply.audio.ogg.startswith(b"OggS")
    assert reply.audio.duration_secs > 1
    (chat,) = fake.chats
    assert chat.body["modalities"] == ["text", "audio"]
    assert chat.body["audio"] == {"voice": "alloy", "format": "opus"}
    assert chat.body["model"] == "gpt-audio-1.5"
    assert {t["function"]["name"] for t in chat.body["tools"]} == {
        "get_player_stats",
        "search_manuals",
        "register_grievance",
        "get_grievance_status",
    }
    assert "functions" not in chat.body
    # A summary leaves the rank out when not every player's total could be read.
    (stats,) = [t["function"] for t in chat.body["tools"] if t["function"]["name"] == "get_player_stats"]
    assert "rank is unknown" in stats["description"] and "never guess" in stats["description"]
    assert chat.body["messages"][0]["role"] == "system"
    assert "markdown" in chat.body["messages"][0]["content"]
    assert chat.body["messages"][-1]["content"][0]["type"] == "input_audio"
    assert len(fake.transcriptions) == 1
    assert fake.violations == []


async def test_a_player_speaking_spanish_is_answered_in_spanish(storage, fake) -> None:
    fake.transcript = "¿Cuántos puntos tengo?"
    fake.script = [answer("Tienes 708 puntos, Nova.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.user_text, reply.text) == ("¿Cuántos puntos tengo?", "Tienes 708 puntos, Nova.")
    # The model speaks every language; a prompt asking for English answers a Spanish note in
    # English, which the player may not understand.
    system = " ".join(fake.chats[0].body["messages"][0]["content"].split())
    assert "English." not in system and "spoken English" not in system
    assert "in the language the player speaks to you" in system
    # The manuals are English: "requisitos del sistema" finds none of them.
    (search,) = [
        t["function"] for t in fake.chats[0].body["tools"] if t["function"]["name"] == "search_manuals"
    ]
    assert "in a few words of English" in search["parameters"]["properties"]["query"]["description"]


class SteppingClock:
    """The openai engine's `time`, whose time() moves an hour at each read."""

    def __init__(self, start: float) -> None:
        self.now = start

    def time(self) -> float:
        at, self.now = self.now, self.now + 3600
        return at

    def __getattr__(self, name: str):
        return getattr(time, name)


async def test_the_model_is_told_the_time_in_utc_the_same_on_every_step_of_a_turn(
    storage, fake, monkeypatch, far_from_utc
) -> None:
    # Tools give times ending in Z; without the date the model cannot say how long ago one was.
    # The clock moves an hour at each read and the host is not on UTC: a note taken again on the
    # second step, or in the host's zone, says another hour.
    from bot.engines import openai as engine

    monkeypatch.setattr(engine, "time", SteppingClock(1_796_000_000))  # Monday 2026-11-30 00:53 UTC
    fake.script = [tool_calls(("get_grievance_status", {})), answer("Nothing new.")]
    async with running_app(openai_settings(storage, fake)) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    notes = []
    for chat in fake.chats:
        messages = chat.body["messages"]
        (user,) = [i for i, m in enumerate(messages) if m["role"] == "user"]
        assert messages[user - 1]["role"] == "system" and messages[user - 1] != messages[0]
        notes.append(messages[user - 1]["content"])
    assert len(notes) == 2 and notes[0] == notes[1]
    assert notes[0].startswith("It is now Monday 2026-11-30 00:53 UTC."), notes[0]
    assert fake.violations == []


async def test_a_tool_result_reaches_the_spoken_answer(storage, fake) -> None:
    fake.script = [tool_calls(("get_player_stats", {})), answer("Your stats: {tool:get_player_stats}")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert [c["name"] for c in reply.tool_calls] == ["get_player_stats"]
    points = reply.tool_results[0].result["total_points"]
    assert f'"total_points": {points}' in reply.text
    second = fake.chats[1].body["messages"]
    assert (
        second[-2]["role"] == "assistant"
        and second[-2]["tool_calls"][0]["function"]["name"] == "get_player_stats"
    )
    assert second[-1]["role"] == "tool"
    # the note's audio goes once; the next step carries the player's transcribed words instead
    assert [c.audio_bytes > 0 for c in fake.chats] == [True, False]
    assert second[-3] == {"role": "user", "content": fake.transcript}
    assert len(fake.chats) == 2  # no extra "answer with context" request
    assert fake.violations == []


async def test_two_tools_in_one_round(storage, fake) -> None:
    fake.script = [
        tool_calls(("get_player_stats", {}), ("get_grievance_status", {})),
        answer("{tool:get_grievance_status}"),
    ]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert [c["name"] for c in reply.tool_calls] == ["get_player_stats", "get_grievance_status"]
    tool_messages = [m for m in fake.chats[1].body["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 2
    assert "GRV-10" in reply.text


async def test_a_made_up_tool_name_the_api_would_refuse_never_goes_back_to_it(storage, fake) -> None:
    # Some models call "multi_tool_use.parallel"; the API answers 400 to a message naming it.
    bundled = {"tool_uses": [{"recipient_name": "functions.get_player_stats", "parameters": {}}]}
    fake.script = [tool_calls(("multi_tool_use.parallel", bundled)), answer("First."), answer("Second.")]
    async with running_app(openai_settings(storage, fake)) as app:
        first = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        second = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (first.engine, first.text, second.engine, second.text) == ("openai", "First.", "openai", "Second.")
    assert not first.tool_results[0].ok
    assert fake.violations == []


async def test_tool_calls_without_an_id_or_sharing_one_each_get_their_own(storage, fake) -> None:
    """A compatible server may leave a call's id out, or give two calls one: every result still
    answers its own call, and the next step is a request the API takes."""

    def call(call_id: str | None, name: str) -> dict:
        return {"type": "function", "function": {"name": name, "arguments": "{}"}} | (
            {"id": call_id} if call_id else {}
        )

    calls = [
        call(None, "get_player_stats"),
        call("c1", "get_player_stats"),
        call("c1", "get_grievance_status"),
    ]
    fake.compatible_server = True
    fake.script = [lambda body: {"content": None, "tool_calls": calls}, answer("Done.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.engine, reply.kind, reply.text) == ("openai", "answer", "Done.")
    ids = [m["tool_call_id"] for m in fake.chats[1].body["messages"] if m["role"] == "tool"]
    assert len(ids) == len(set(ids)) == 3 and ids[1] == "c1"
    assert [r.ok for r in reply.tool_results] == [True, True, True]
    assert fake.violations == []


async def test_tool_calls_of_another_shape_are_answered_as_errors_not_a_failed_turn(storage, fake) -> None:
    """A compatible server may send a call's arguments as a JSON object rather than its text, or
    a call with no function (a custom tool's): the turn failed on them, the fallback answered, and
    the calls made by the model were never answered."""
    as_object = {"name": "search_manuals", "arguments": {"query": "refund"}}
    calls = [
        {"id": "c1", "type": "function", "function": as_object},
        {"id": "c2", "type": "custom", "custom": {"name": "lookup", "input": "refund"}},
    ]
    fake.compatible_server = True
    fake.script = [lambda body: {"content": None, "tool_calls": calls}, answer("Done.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.engine, reply.kind, reply.text) == ("openai", "answer", "Done.")
    searched, made_up = reply.tool_results
    assert searched.ok and searched.call.arguments == {"query": "refund"}
    assert not made_up.ok and made_up.call.name == "lookup"
    sent = next(m for m in fake.chats[1].body["messages"] if m.get("tool_calls"))["tool_calls"]
    sent_arguments = [json.loads(c["function"]["arguments"]) for c in sent]
    assert sent_arguments == [{"query": "refund"}, {"_unparsed": "refund"}]
    assert fake.violations == []


async def test_no_request_carries_two_calls_of_one_id_across_a_players_turns(storage, fake) -> None:
    # A call without an id got one numbered by its round and place, the same in every turn, and a
    # compatible server may number each answer's calls from call_0: the player's history went
    # back with two calls (and two results) under each such id.
    def call(call_id: str | None, name: str) -> dict:
        return {"type": "function", "function": {"name": name, "arguments": "{}"}} | (
            {"id": call_id} if call_id else {}
        )

    calls = [call(None, "get_player_stats"), call("call_0", "get_grievance_status")]
    asked = [lambda body: {"content": None, "tool_calls": calls}, answer("Done.")]
    fake.compatible_server = True
    fake.script = asked * 3
    async with running_app(openai_settings(storage, fake)) as app:
        for _ in range(3):
            reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
            assert reply.text == "Done." and [r.ok for r in reply.tool_results] == [True, True]
    messages = fake.chats[-1].body["messages"]
    made = [c["id"] for m in messages for c in m.get("tool_calls", [])]
    assert len(made) == len(set(made)) == 6
    answered = []
    for i, message in enumerate(messages):
        if message["role"] == "tool":
            # each result answers a call of the assistant message just before its run of results
            asker = next(m for m in reversed(messages[:i]) if m["role"] == "assistant")
            assert message["tool_call_id"] in [c["id"] for c in asker["tool_calls"]]
            answered.append(message["tool_call_id"])
    assert sorted(answered) == sorted(made)
    assert fake.violations == []


async def test_a_history_of_a_servers_long_call_ids_is_not_refused_by_openai(storage, fake) -> None:
    # vLLM names a call "chatcmpl-tool-" and 32 hex digits, and takes the id back. The studio then
    # moves to OpenAI, which refuses any call id over 40 characters (string_above_max_length): each
    # later note of a player who had a tool called went to the fallback until the turn aged out.
    long_ids = [f"chatcmpl-tool-{n}{'0' * 31}" for n in range(2)]
    calls = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}
        for call_id, name in zip(long_ids, ["get_player_stats", "get_grievance_status"], strict=True)
    ]
    fake.compatible_server = True
    fake.script = [lambda body: {"content": None, "tool_calls": calls}, answer("Done.")]
    async with running_app(openai_settings(storage, fake)) as app:
        first = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        assert first.engine == "openai" and [r.ok for r in first.tool_results] == [True, True]
        fake.compatible_server = False  # now OpenAI itself, with the player's history
        fake.script = [answer("You have 708 points.")]
        again = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (again.engine, again.text) == ("openai", "You have 708 points.")
    messages = fake.chats[-1].body["messages"]
    (asked,) = [m for m in messages if m.get("tool_calls")]
    sent = [c["id"] for c in asked["tool_calls"]]
    assert len(set(sent)) == 2 and all(len(i) <= 40 for i in sent)
    # each result still goes back under its own call's id
    results = [(m["tool_call_id"], json.loads(m["content"])) for m in messages if m["role"] == "tool"]
    assert [i for i, _ in results] == sent
    assert results == [(i, r.result) for i, r in zip(sent, first.tool_results, strict=True)]
    assert fake.violations == []


def test_calls_of_one_id_in_two_rounds_of_a_past_turn_each_keep_their_own_result() -> None:
    # A past turn's rounds go back as one assistant message: a server numbering each answer's
    # calls from call_0 gives two of them one id there.
    from bot.engines.base import TurnState
    from bot.engines.openai import build_messages

    def result(name: str, points: int) -> dict:
        return {"id": "call_0", "name": name, "arguments": {}, "result": {"points": points}}

    past = PastTurn("hi", "You have 5.", [result("get_player_stats", 5), result("get_grievance_status", 7)])
    turn = TurnState(ToolContext(user_id=NOVA), None, "again", [past], [])
    messages = build_messages("system", turn)
    (asked,) = [m for m in messages if m.get("tool_calls")]
    assert [c["id"] for c in asked["tool_calls"]] == ["call_0", "call_0_2"]
    results = [(m["tool_call_id"], json.loads(m["content"])) for m in messages if m["role"] == "tool"]
    assert results == [("call_0", {"points": 5}), ("call_0_2", {"points": 7})]


def test_a_repeated_call_id_of_the_longest_length_keeps_to_it_with_its_suffix() -> None:
    from bot.engines.base import TurnState
    from bot.engines.openai import build_messages

    longest = "c" * 40

    def result(name: str, points: int) -> dict:
        return {"id": longest, "name": name, "arguments": {}, "result": {"points": points}}

    past = PastTurn("hi", "You have 5.", [result("get_player_stats", 5), result("get_grievance_status", 7)])
    turn = TurnState(ToolContext(user_id=NOVA), None, "again", [past], [])
    messages = build_messages("system", turn)
    (asked,) = [m for m in messages if m.get("tool_calls")]
    sent = [c["id"] for c in asked["tool_calls"]]
    assert sent[0] == longest and len(sent[1]) <= 40 and sent[1] != longest
    results = [(m["tool_call_id"], json.loads(m["content"])) for m in messages if m["role"] == "tool"]
    assert results == [(sent[0], {"points": 5}), (sent[1], {"points": 7})]
    assert build_messages("system", turn) == messages  # the same on every step


@pytest.mark.parametrize("depth", [600, 5000])
async def test_arguments_nested_hundreds_deep_are_an_error_for_the_model_not_a_failed_turn(
    storage, fake, depth
) -> None:
    deep = {
        "type": "function",
        "function": {"name": "search_manuals", "arguments": "[" * depth + "]" * depth},
    }
    deep_query = '{"query": ' + "[" * depth + "]" * depth + "}"
    calls = [
        {"id": "c1", **deep},
        {"id": "c2", "type": "function", "function": {"name": "search_manuals", "arguments": deep_query}},
        {"id": "c3", "type": "function", "function": {"name": "get_player_stats", "arguments": "{}"}},
    ]
    fake.script = [lambda body: {"content": None, "tool_calls": calls}, answer("Done.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        (kept,) = await app.conversations.history(NOVA)
    assert (reply.engine, reply.kind, reply.text) == ("openai", "answer", "Done.")
    assert [r.ok for r in reply.tool_results] == [False, False, True]
    assert len(kept.tool_results) == 3
    assert fake.violations == []


async def test_calls_the_toolbox_refuses_are_logged_and_bad_json_is_named(storage, fake, caplog) -> None:
    """A model calling a tool that does not exist, or with arguments that are not JSON or break
    the schema, is told why and the player answered; staff see one line a call, without the
    arguments (they may quote the player) but at DEBUG."""

    def call(call_id: str, name: str, arguments: str) -> dict:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    calls = [
        call("c1", "register_grievance", '{"category": "wallet", "description": "my gems vanish'),
        call("c2", "search_manuals", '{"query": "my gems", "player_id": "222222222222222222"}'),
        call("c3", "get_points_of\nplayer", "{}"),
    ]
    fake.script = [lambda body: {"content": None, "tool_calls": calls}, answer("Done.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.kind, reply.text) == ("answer", "Done.")
    errors = [r.result["error"] for r in reply.tool_results]
    assert errors[0] == "Invalid arguments for register_grievance: not valid JSON"
    assert "player_id" in errors[1] and errors[2].startswith("There is no tool called")
    logged = [
        r.getMessage() for r in caplog.records if r.name == "bot.tools" and r.levelno == logging.WARNING
    ]
    assert logged == [
        f"the model called register_grievance with invalid arguments for user {NOVA}",
        f"the model called search_manuals with invalid arguments for user {NOVA}",
        f"the model called a tool that does not exist ('get_points_of\\nplayer') for user {NOVA}",
    ]
    assert "gems" not in caplog.text


async def test_the_rounds_bound_forces_an_answer(storage, fake) -> None:
    fake.script = [tool_calls(("search_manuals", {"query": "refund"}))] * 3 + [answer("Done.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert len(reply.tool_calls) == 3 and reply.text == "Done."
    assert [c.body.get("tool_choice") for c in fake.chats] == [None, None, None, "none"]


@pytest.mark.parametrize(
    ("script", "logged"),
    [
        # Tools past the bound (the API was told tool_choice "none"), with no words: nothing to say.
        (
            [tool_calls(("search_manuals", {"query": "refund"}))] * 4,
            "said nothing after 3 tool rounds (agent.max_tool_rounds = 3)",
        ),
        (
            [tool_calls(("search_manuals", {"query": "refund"}))] * 3
            + [lambda body: {"content": None, "_finish_reason": "length"}],
            "cut off at its length limit before a word",
        ),
        (
            [lambda body: {"content": "", "_finish_reason": "length"}],
            "cut off at its length limit before a word",
        ),
    ],
    ids=["tools past the bound", "length after tools", "length at once"],
)
async def test_a_model_that_answers_with_nothing_is_not_said_to_be_down(
    storage, fake, caplog, script, logged
) -> None:
    """The service answered, with nothing to say: "my voice service is down, try in a few
    minutes" would mislead the player, who had better ask again now, more simply."""
    steps = len(script)
    fake.script = list(script)
    async with running_app(openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="apology")) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.kind, reply.text) == ("apology", say.NO_ANSWER_MADE)
    assert reply.audio is not None  # spoken by the offline synthesizer
    assert len(fake.chats) == steps
    assert f"answered with neither words nor audio: {logged}" in caplog.text


# 5 s: SHORT_WAIT, the longest wait a turn waits out itself.
@pytest.mark.parametrize("asked", [0.2, 5.0])
async def test_a_short_rate_limit_is_waited_out_and_tried_again(storage, fake, monkeypatch, asked) -> None:
    import types

    from bot.engines import openai as engine_module
    from bot.engines.openai import create_openai_engine

    # The engine's clock moves only by the waits it asks for: on a busy machine the wall clock
    # also moves between the 429 and the wait, and the wait chosen would look shorter.
    now = [time.monotonic()]
    clock = types.SimpleNamespace(monotonic=lambda: now[0], time=time.time)
    monkeypatch.setattr(engine_module, "time", clock)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds
        await asyncio.sleep(0)

    # 0.2 s, not the 1 s a 429 naming no wait pauses for: the wait is the one the provider asked.
    fake.failures = [Failure(status=429, retry_after=asked)]
    fake.script = [answer("Back again.")]
    settings = openai_settings(storage, fake)
    engine = await create_openai_engine(settings, sleep=sleep)
    try:
        async with running_app(settings, engine) as app:
            reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    finally:
        await engine.aclose()
    assert reply.engine == "openai" and reply.text == "Back again."
    assert len(fake.chats) == 2
    assert waits == [pytest.approx(asked)], waits


@pytest.mark.parametrize(
    "failure",
    [Failure(status=500), Failure(malformed=True), Failure(hang=5)],
    ids=["500", "malformed", "hang"],
)
async def test_persistent_failure_falls_back_to_the_offline_engine(storage, fake, failure) -> None:
    fake.failures = [failure] * 3
    settings = openai_settings(
        storage,
        fake,
        VOXDESK_AGENT_FALLBACK="offline",
        VOXDESK_OPENAI_TIMEOUT_SECONDS="0.5",
        VOXDESK_OPENAI_MAX_RETRIES="1",
    )
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.engine == "offline"
    assert reply.audio is not None and reply.text


async def test_persistent_failure_without_fallback_apologises(storage, fake) -> None:
    fake.failures = [Failure(status=500)] * 3
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_MAX_RETRIES="1")) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.kind == "apology" and "Sorry" in reply.text
    assert reply.audio is not None  # spoken by the offline synthesizer


async def test_refusals_are_passed_on_politely(storage, fake) -> None:
    fake.script = [refusal("I can't help with that.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.kind == "refusal" and reply.text.startswith("Sorry")


async def test_a_refusal_that_quotes_the_player_is_logged_on_one_line(storage, fake, caplog) -> None:
    """A refusal may repeat what the player said, new lines and all: in the log it is one line,
    so a player cannot add lines of their own making to it, and only at DEBUG: `run` logs INFO,
    and a log outlives /forget."""
    caplog.set_level(logging.DEBUG)
    forged = "cogs.voice: answered note 1 from 222222222222222222 as voice (reply, openai)"
    fake.script = [refusal(f"I can't say:\n{forged}\r\x1b[2Kdone")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.kind == "refusal"
    refused = [r for r in caplog.records if r.name == "bot.engines.openai" and "refused" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO, logging.DEBUG]
    info, logged = (r.getMessage() for r in refused)
    assert forged not in info and "I can't say" not in info
    assert forged in logged  # staff who log DEBUG still see what it said
    assert not any(c in logged for c in "\n\r\x1b"), logged


@pytest.mark.parametrize("transcript", [" \n ", 42], ids=["blanks", "a number"])
async def test_a_transcript_of_blanks_gives_way_to_the_words_in_the_content(
    storage, fake, transcript
) -> None:
    """A compatible server may put the words in `content` and leave the audio's transcript blank
    (or give one of another type): the player who reads their answers gets the words, and the
    history keeps them."""
    spoken = base64.b64encode(spoken_audio("You have forty points.", "opus")).decode()

    def blank_transcript(body):
        audio = {"id": "audio_blank", "data": spoken, "expires_at": int(time.time()) + 3600}
        return {"content": "You have forty points.", "audio": {**audio, "transcript": transcript}}

    fake.compatible_server = not isinstance(transcript, str)  # off the API's spec
    fake.script = [blank_transcript]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        (kept,) = await app.conversations.history(NOVA)
    assert (reply.kind, reply.text) == ("answer", "You have forty points.")
    assert reply.audio is not None and reply.audio.ogg.startswith(b"OggS")
    assert kept.reply_text == "You have forty points."


@pytest.mark.parametrize("data", ["abc", "not base64 at all é", "UklGRg"])
async def test_reply_audio_that_is_not_base64_still_gives_the_answer(storage, fake, caplog, data) -> None:
    """The model answered, its audio is garbled: the player hears its words in the bot's own
    voice, not that the service is down (nor a fallback filing the complaint a second time)."""
    filing = {"category": "wallet", "description": "my gems vanished after the update"}
    fake.script = [tool_calls(("register_grievance", filing)), audio_reply("Filed as GRV-14.", data)]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA, request_id="n1"), NOTE)
        (kept,) = await app.conversations.history(NOVA)
    assert (reply.engine, reply.kind, reply.text) == ("openai", "answer", "Filed as GRV-14.")
    assert reply.audio is not None and reply.audio.duration_secs > 0.3  # the offline voice says it
    assert kept.reply_text == "Filed as GRV-14."
    assert "reply audio is not base64" in caplog.text


async def test_a_long_answer_in_text_alone_goes_as_text_not_spoken_in_the_bots_voice(
    storage, fake, caplog
) -> None:
    """A model may answer in text alone, as long as its token limit allows: spoken whole in the
    bot's own voice it held the synthesiser for minutes, for audio longer than Discord uploads (and
    past eSpeak's limit, a voice message of silence)."""
    from bot.agent import MAX_SPOKEN_CHARS

    # One character over: the bound is the constant's, not some way past it; at it, spoken.
    long = ("Your points come from matches, trivia and poker, counted every night. " * 60)[
        : MAX_SPOKEN_CHARS + 1
    ]
    fake.script = [lambda body: {"content": long}, lambda body: {"content": long[:MAX_SPOKEN_CHARS]}]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        at_bound = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.engine, reply.kind, reply.text) == ("openai", "answer", long)
    assert reply.audio is None  # the front ends send the words, whatever the reply style
    assert f"an answer of {len(long)} characters came without audio to send" in caplog.text
    assert at_bound.audio is not None and at_bound.audio.duration_secs > 0.5


async def test_an_answer_longer_than_a_reply_is_sent_with_is_cut_and_keeps_the_history(
    storage, fake, caplog
) -> None:
    """With openai.max_reply_tokens 0 a model may answer tens of thousands of characters: posted
    as dozens of Discord messages, and kept whole, more than the history holds, so the player's
    next note was answered with no history at all."""
    from bot.engines.openai import MAX_ANSWER_CHARS

    long = "Your points add up. " * 3000
    fake.script = [answer("Hello."), lambda body: {"content": long}, answer("Third.")]
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_MAX_REPLY_TOKENS="0")) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.kind == "answer" and 0 < len(reply.text) <= MAX_ANSWER_CHARS + 1
    assert reply.text.startswith("Your points add up.") and reply.text.endswith("…")
    assert f"a reply of 60000 characters, over the {MAX_ANSWER_CHARS} one is sent with" in caplog.text
    said = [m.get("content") for m in fake.chats[2].body["messages"] if m["role"] == "assistant"]
    assert said == ["Hello.", f"{reply.text} {say.CUT_OFF}"]


async def test_an_answer_cut_inside_a_code_block_closes_the_block(storage, fake) -> None:
    """A reply cut off inside a code block left it open: Discord showed the fence as text and
    the code after it as markdown, a '# comment' line as a heading."""
    from bot.engines.openai import MAX_ANSWER_CHARS

    long = "Run this:\n```python\n" + "# add up the points\ntotal = total + 1\n" * 2000
    fake.script = [lambda body: {"content": long}]
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_MAX_REPLY_TOKENS="0")) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert len(reply.text) <= MAX_ANSWER_CHARS + 5
    assert reply.text.count("```") == 2 and reply.text.endswith("\n```")


async def test_only_an_answer_cut_inside_a_code_block_is_given_a_closing_fence(storage, fake) -> None:
    """An answer that is whole says what it means to, an odd fence and all; and a fence escaped
    with a backslash opens no block, so a cut after one leaves nothing open to close."""
    whole = "Type ``` on a line of its own to start a code block."
    escaped = "Type \\``` to show three backticks. " + "Your points add up. " * 3000
    fake.script = [lambda body: {"content": whole}, lambda body: {"content": escaped}]
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_MAX_REPLY_TOKENS="0")) as app:
        first = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        cut = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert first.text == whole
    assert cut.text.startswith("Type \\``` to show") and cut.text.endswith("…")
    assert cut.text.count("```") == 1


@pytest.mark.parametrize(
    "reference",
    [
        {"expires_at": "soon"},
        {"id": 12345},
        {"expires_at": 2**64},  # more than SQLite stores: the turn would be lost from the history
        {"expires_at": -(2**64)},  # less than SQLite stores, and no time a reply was kept till
        {"expires_at": (int(time.time()) + 3600) * 1000},  # milliseconds: never expired by ours
    ],
    ids=["text", "numeric-id", "past-int64", "before-int64", "milliseconds"],
)
async def test_an_audio_reference_of_another_type_does_not_fail_the_players_next_notes(
    storage, fake, reference
) -> None:
    """A compatible server's audio id or expiry that is not what the API gives (an expiry further
    off than a provider keeps audio is no Unix time in seconds) is not kept to be sent back: the
    next notes would each fail on it until the conversation went idle."""
    spoken = base64.b64encode(spoken_audio("Hello there.", "opus")).decode()
    audio = {
        "id": "audio_1",
        "data": spoken,
        "expires_at": int(time.time()) + 3600,
        "transcript": "Hello there.",
    }
    fake.compatible_server = True
    fake.script = [lambda body: {"content": None, "audio": {**audio, **reference}}, answer("Second.")]
    async with running_app(openai_settings(storage, fake)) as app:
        first = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        (kept,) = await app.conversations.history(NOVA)
        second = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (first.kind, second.kind, second.text) == ("answer", "answer", "Second.")
    assert (kept.audio_id, kept.audio_expires_at) == (None, None)
    assert {"role": "assistant", "content": "Hello there."} in fake.chats[1].body["messages"]


async def past_audio_replies(app, now: float, *replies: tuple[str, float]) -> None:
    """Nova's past turns at `now`, one per (audio id, when it expires), its reply "reply for <id>"."""
    for audio_id, expires in replies:
        await app.conversations.append(
            NOVA,
            PastTurn(
                user_text="q",
                reply_text=f"reply for {audio_id}",
                audio_id=audio_id,
                audio_expires_at=int(expires),
                at=now,
            ),
        )


async def test_expired_audio_ids_are_not_sent(storage, fake) -> None:
    now = time.time()
    fake.issued_audio["audio_live"] = int(now + 3000)
    async with running_app(openai_settings(storage, fake)) as app:
        await past_audio_replies(app, now, ("audio_old", now - 10), ("audio_live", now + 3000))
        fake.script = [answer("ok")]
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    messages = fake.chats[0].body["messages"]
    assert fake.chats[0].audio_ids == ["audio_live"]
    assert {"role": "assistant", "content": "reply for audio_old"} in messages


async def test_another_players_name_still_returns_the_speakers_data(storage, fake) -> None:
    fake.transcript = "show me Blaze's points"
    fake.script = [
        tool_calls(("get_player_stats", {"player": "Blaze"})),
        tool_calls(("get_player_stats", {})),
        answer("{tool:get_player_stats}"),
    ]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    refused, own = reply.tool_results
    assert not refused.ok and "Invalid arguments" in refused.result["error"]
    assert own.result["player_name"] == "Nova"
    assert "Blaze" not in json.dumps([r.result for r in reply.tool_results])


async def test_azure_provider_builds_the_deployment_url(storage, fake) -> None:
    settings = azure_settings(storage, fake)
    fake.script = [answer("From Azure.")]
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.text == "From Azure."
    (chat,) = fake.chats
    assert chat.path == "/openai/deployments/voxdesk-audio/chat/completions"
    assert chat.query["api-version"] == "2025-01-01-preview"
    assert chat.headers["api-key"] == AZURE_KEY
    assert "safety_identifier" not in chat.body  # its API version documents none
    assert fake.transcriptions[0].path == "/openai/deployments/gpt-4o-mini-transcribe/audio/transcriptions"

    from bot.health import check_engine

    assert "reachable, deployment voxdesk-audio" in await check_engine(settings)


async def test_on_azure_earlier_replies_go_as_their_words_not_their_audio_ids(storage, fake) -> None:
    """Azure's api-version documents no `audio` in an assistant message (OpenAI's does): named by its
    audio id, the player's last reply had every later note of theirs refused with a 400 while the
    id lived, an hour. On Azure each earlier reply goes as its transcript."""
    settings = azure_settings(storage, fake)
    assert settings.openai.audio_history_turns == 1  # the default, which OpenAI gets
    fake.script = [answer("You have 100 points."), answer("You are level 3.")]
    async with running_app(settings) as app:
        first = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        second = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert first.text == "You have 100 points." and fake.issued_audio  # an id given, as OpenAI gives
    assert (second.engine, second.kind, second.text) == ("openai", "answer", "You are level 3.")
    assert [c.audio_ids for c in fake.chats] == [[], []]
    assert {"role": "assistant", "content": "You have 100 points."} in fake.chats[1].body["messages"]


async def test_on_azure_a_voice_its_api_version_refuses_is_neither_offered_nor_sent(
    storage, fake, caplog
) -> None:
    """Azure's 2025-01-01-preview takes six voices, three of them OpenAI's: a player who picked
    another (before the switch to Azure, from the ten /voice offers OpenAI's) would have each
    note refused with a 400 and be told the voice service is down. /voice offers Azure's; one
    picked before speaks in the configured voice, said once."""
    fake.script = [answer("From Azure."), answer("Again.")]
    async with running_app(azure_settings(storage, fake)) as app:
        assert app.agent.voices() == ["alloy", "echo", "shimmer"]
        replies = [await app.agent.respond(ToolContext(user_id=NOVA), NOTE, voice="ash") for _ in "ab"]
        shimmer = await app.agent.respond(ToolContext(user_id=BLAZE), NOTE, voice="shimmer")
    assert [(r.engine, r.kind) for r in [*replies, shimmer]] == [("openai", "answer")] * 3
    assert [c.body["audio"]["voice"] for c in fake.chats] == ["alloy", "alloy", "shimmer"]
    (told,) = [r for r in caplog.records if "a player's voice" in r.getMessage()]
    assert told.levelno == logging.WARNING and "ash is not one" in told.getMessage()


@pytest.mark.parametrize(
    ("setting", "value"),
    [("VOXDESK_OPENAI_REPLY_FORMAT", "aac"), ("VOXDESK_OPENAI_VOICE", "coral")],
)
async def test_on_azure_a_reply_format_or_voice_its_spec_does_not_list_is_said_not_refused(
    storage, fake, caplog, setting, value
) -> None:
    """Azure's 2025-01-01-preview specification lists neither aac nor coral, and its
    gpt-4o-audio-preview refuses them: every note would go to the fallback while `check` (which asks
    for text alone) says all is well. But its gpt-audio deployments take both (Microsoft's audio
    quickstart: ten voices, aac too), so a start refused for them would stop a studio that works."""
    settings = azure_settings(storage, fake, **{setting: value})
    assert value in (settings.openai.voice, settings.openai.reply_format)
    (said,) = [r for r in caplog.records if f"= '{value}' is not" in r.getMessage()]
    assert said.levelno == logging.WARNING and "2025-01-01-preview" in said.getMessage()
    caplog.clear()
    openai_settings(storage, fake, **{setting: value})  # OpenAI's own takes it
    assert not [r for r in caplog.records if f"= '{value}' is not" in r.getMessage()]


async def test_on_azure_audio_history_turns_is_said_to_go_unused(storage, fake, caplog) -> None:
    azure_settings(storage, fake)
    (said,) = [r for r in caplog.records if "audio_history_turns" in r.getMessage()]
    assert said.levelno == logging.WARNING
    assert "openai.audio_history_turns = 1 is not used on Azure" in said.getMessage()
    caplog.clear()
    azure_settings(storage, fake, VOXDESK_OPENAI_AUDIO_HISTORY_TURNS="0")
    openai_settings(storage, fake)
    # Answering offline, with Azure's settings kept for a later switch: no request goes to Azure.
    make_settings(
        storage,
        VOXDESK_AGENT_ENGINE="offline",
        VOXDESK_OPENAI_PROVIDER="azure",
        VOXDESK_OPENAI_AZURE_ENDPOINT=fake.azure_endpoint,
        VOXDESK_OPENAI_AZURE_DEPLOYMENT="voxdesk-audio",
    )
    assert not [r for r in caplog.records if "audio_history_turns" in r.getMessage()]


async def test_on_azure_an_api_version_of_unknown_voices_is_said_unchecked(storage, fake, caplog) -> None:
    # Not in AZURE_REPLY_AUDIO: every voice and format passed without a word, and /voice offered
    # all ten, while the version may refuse some of them on every note.
    from bot.config import OPENAI_VOICES, reply_audio_choices

    newer = azure_settings(storage, fake, VOXDESK_OPENAI_API_VERSION="2025-04-01-preview")
    (said,) = [r for r in caplog.records if "could not be checked" in r.getMessage()]
    assert said.levelno == logging.WARNING
    assert said.getMessage().startswith("openai.api_version = '2025-04-01-preview' is not one whose")
    assert reply_audio_choices(newer.openai, "voice") == OPENAI_VOICES
    caplog.clear()
    azure_settings(storage, fake)
    openai_settings(storage, fake, VOXDESK_OPENAI_API_VERSION="2025-04-01-preview")
    assert not [r for r in caplog.records if "could not be checked" in r.getMessage()]


async def test_openai_knows_each_player_by_one_name_that_is_not_their_discord_id(storage, fake) -> None:
    # For its abuse monitoring: a name per player, the same after a restart, which OpenAI cannot
    # turn back into the Discord id (a hash of the id alone it could, by trying ids).
    named = openai_settings(storage, fake, VOXDESK_OPENAI_SAFETY_IDENTIFIER="on")
    async with running_app(named) as app:
        for who in (NOVA, BLAZE):
            await app.agent.respond(ToolContext(user_id=who), NOTE)
    async with running_app(named) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    nova, blaze, nova_again = (c.body.get("safety_identifier") for c in fake.chats)
    assert nova == nova_again != blaze and nova and blaze
    assert NOVA not in nova and BLAZE not in blaze
    unkeyed = {hashlib.sha256(who.encode()).hexdigest() for who in (NOVA, BLAZE)}
    assert not any(name.removeprefix("voxdesk-") in h for name in (nova, blaze) for h in unkeyed)
    assert fake.violations == []  # the spec's field, within its 64 characters


# Empty, or cut to 4 bytes: 2**32 keys, as few as it takes to try each with every likely id.
@pytest.mark.parametrize("kept", [b"", bytes(range(4))], ids=["empty", "4 bytes"])
async def test_a_key_file_too_short_to_hide_the_id_names_no_one(storage, fake, caplog, kept) -> None:
    # An empty key (a cut-short restore) would make the name a plain hash of the Discord id,
    # which OpenAI could turn back by trying ids.
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "openai-safety.key").write_bytes(kept)
    fake.script = [answer("You have 120 points.")]
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_SAFETY_IDENTIFIER="on")) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.engine == "openai" and reply.text == "You have 120 points."
    (chat,) = fake.chats
    assert "safety_identifier" not in chat.body
    warned = [r.getMessage() for r in caplog.records if "openai-safety.key" in r.getMessage()]
    assert len(warned) == 1 and f"holds {len(kept)} bytes" in warned[0]


# A process killed while it makes the key: after its file of the key was made (nothing in it
# yet), or after that file was linked into place and before it was unlinked.
KILLED_MAKING_THE_KEY = """
import os, signal, sys
from pathlib import Path
from bot.engines import openai as o
point = sys.argv[2]
real_write, real_link = os.write, os.link
def write(fd, data):
    if point == "made":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_write(fd, data)
def link(made, path):
    real_link(made, path)
    os.kill(os.getpid(), signal.SIGKILL)
o.os.write, o.os.link = write, link
o.safety_key(Path(sys.argv[1]))
"""


@pytest.mark.parametrize("point", ["made", "linked"])
def test_a_process_killed_making_the_safety_key_leaves_no_copy_of_it_behind(tmp_path: Path, point) -> None:
    # Its file being made holds the key (or part of it) under another name: nothing else removes
    # it, and it would outlive the key removed to give every player a new name.
    import signal
    import subprocess
    import sys

    from bot.engines.openai import SAFETY_KEY_FILE, safety_key

    killed = subprocess.run([sys.executable, "-c", KILLED_MAKING_THE_KEY, str(tmp_path), point], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert len(list(tmp_path.iterdir())) == (2 if point == "linked" else 1)
    linked = (tmp_path / SAFETY_KEY_FILE).read_bytes() if point == "linked" else None
    key = safety_key(tmp_path)
    assert key is not None and len(key) == 32 and key == (linked or key)
    assert [p.name for p in tmp_path.iterdir()] == [SAFETY_KEY_FILE]


def test_a_safety_key_another_process_made_meanwhile_is_the_one_used(tmp_path: Path, monkeypatch) -> None:
    # Two processes starting together (a deploy overlapping the old one) both find no key and make
    # one each: the second to link its own uses the first's, rather than name no player at all.
    import os

    from bot.engines import openai as engine

    theirs = b"k" * engine.SAFETY_KEY_BYTES
    real_link = os.link

    def linked_first(made, path, **kwargs):  # type: ignore[no-untyped-def]
        Path(path).write_bytes(theirs)
        return real_link(made, path, **kwargs)

    monkeypatch.setattr(os, "link", linked_first)
    assert engine.safety_key(tmp_path) == theirs
    assert [p.name for p in tmp_path.iterdir()] == [engine.SAFETY_KEY_FILE]


def test_a_new_safety_key_is_synced_with_its_folder(tmp_path: Path, monkeypatch) -> None:
    # Its name lost to a power cut, the next start makes a new key: every player a new name.
    from bot.engines import openai as engine

    synced: list[Path] = []
    real_sync = engine.fsync_path
    monkeypatch.setattr(engine, "fsync_path", lambda p: (synced.append(p), real_sync(p)))
    assert engine.safety_key(tmp_path) is not None
    assert synced == [tmp_path]


@pytest.mark.parametrize("setting", ["auto", "off"])
async def test_a_compatible_server_is_sent_no_safety_identifier_unless_asked(storage, fake, setting) -> None:
    # A compatible server or gateway may refuse a field it does not know, and with it every note.
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_SAFETY_IDENTIFIER=setting)) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    (chat,) = fake.chats
    assert "safety_identifier" not in chat.body


async def test_check_makes_no_safety_key(fake, tmp_path: Path) -> None:
    # `check` looks and writes nothing: it made the key, and with it the folder of a storage.dir
    # set wrong, or failed the engine's line on a folder it may not write.
    from bot.health import check_engine

    wrong = tmp_path / "not-the-storage"
    settings = openai_settings(wrong, fake, VOXDESK_OPENAI_SAFETY_IDENTIFIER="on")
    assert "model gpt-audio-1.5 available" in await check_engine(settings)
    assert not wrong.exists()


# The arguments AsyncCompletions.create takes in openai 1.91, pyproject's floor (.ci/floors.txt):
# one it lacks is a TypeError there on every note, which this suite's newer SDK never shows.
FLOOR_CREATE_ARGUMENTS = frozenset(
    "audio extra_body extra_headers extra_query frequency_penalty function_call functions logit_bias"
    " logprobs max_completion_tokens max_tokens messages metadata modalities model n"
    " parallel_tool_calls prediction presence_penalty reasoning_effort response_format seed"
    " service_tier stop store stream stream_options temperature timeout tool_choice tools"
    " top_logprobs top_p user web_search_options".split()
)


async def test_a_chat_request_names_only_arguments_the_oldest_allowed_sdk_takes(storage, fake) -> None:
    # openai 1.91 has no safety_identifier argument: every note to api.openai.com (where "auto"
    # sends one) was a TypeError, answered by the fallback.
    from bot.engines.base import TurnState
    from bot.engines.openai import create_openai_engine

    settings = openai_settings(
        storage, fake, VOXDESK_OPENAI_SAFETY_IDENTIFIER="on", VOXDESK_OPENAI_MAX_REPLY_TOKENS="500"
    )
    engine = await create_openai_engine(settings, verify=False)
    try:
        turn = TurnState(ToolContext(user_id=NOVA), None, "hi", [], [], allow_tools=False)
        request = engine._request(turn, 1)
    finally:
        await engine.aclose()
    assert set(request) <= FLOOR_CREATE_ARGUMENTS, set(request) - FLOOR_CREATE_ARGUMENTS
    assert request["extra_body"]["safety_identifier"].startswith("voxdesk-")


@pytest.mark.parametrize(
    ("provider", "setting", "base_url", "named"),
    [
        ("openai", "auto", "https://api.openai.com/v1/", True),
        ("openai", "auto", "https://eu.api.openai.com/v1/", True),  # data residency: OpenAI's own
        ("openai", "auto", "https://api.openai.com.example.net/v1/", False),
        ("openai", "auto", "https://litellm.example.net/v1/", False),
        ("openai", "off", "https://api.openai.com/v1/", False),
        ("openai", "on", "http://127.0.0.1:8000/v1/", True),
        ("azure", "on", "https://studio.openai.azure.com/openai/", False),
    ],
)
def test_which_services_are_sent_a_safety_identifier(provider, setting, base_url, named) -> None:
    assert names_players(provider, setting, base_url) is named


async def test_audio_sent_per_request_stays_flat_over_ten_turns(storage, fake) -> None:
    fake.script = [answer(f"answer {i}") for i in range(10)]
    async with running_app(openai_settings(storage, fake)) as app:
        for _ in range(10):
            await app.agent.respond(ToolContext(user_id=BLAZE), NOTE)
    sent = [c.audio_bytes for c in fake.chats]
    assert len(sent) == 10 and len(set(sent)) == 1  # one note's audio, never the past ones
    assert [len(c.audio_ids) for c in fake.chats] == [0] + [1] * 9  # only the latest reply by audio
    # history bounded at 8 turns, then the time note and the note itself
    assert len(fake.chats[-1].body["messages"]) == 1 + 8 * 2 + 2


async def test_transcription_can_be_switched_off(storage, fake) -> None:
    fake.script = [answer("ok")]
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_TRANSCRIBE_MODEL="")) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert fake.transcriptions == [] and reply.user_text is None


async def test_daily_budget_refuses_politely_once_spent(storage, fake) -> None:
    fake.script = [answer("first"), answer("second")]
    settings = openai_settings(storage, fake, VOXDESK_USAGE_DAILY_AUDIO_SECONDS="1")
    async with running_app(settings) as app:
        first = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        second = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        other = await app.agent.respond(ToolContext(user_id=BLAZE), NOTE)
        spent = await app.agent.budget.today_for(NOVA)  # type: ignore[union-attr]
    assert first.text == "first"
    assert second.kind == "over_budget" and "help again in " in second.text
    assert other.text == "second"
    assert len(fake.chats) == 2
    assert spent["audio_in"] > 0 and spent["cost_usd"] > 0 and spent["audio_seconds"] > 2


@pytest.mark.parametrize("fallback", ["offline", "apology"])
async def test_tokens_spent_before_the_engine_failed_count_against_the_budget(
    storage, fake, fallback
) -> None:
    # Step one is billed (a tool call); step two answers with neither words nor audio.
    fake.script = [tool_calls(("get_player_stats", {})), lambda body: {"content": None}]
    settings = openai_settings(
        storage, fake, VOXDESK_AGENT_FALLBACK=fallback, VOXDESK_USAGE_DAILY_TOKENS="1000000"
    )
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        spent = await app.agent.budget.today_for(NOVA)  # type: ignore[union-attr]
    assert reply.engine == ("offline" if fallback == "offline" else "none")
    assert sum(spent[k] for k in ("text_in", "text_out", "audio_in", "audio_out")) > 0
    assert spent["cost_usd"] > 0
    assert spent["turns"] == (1 if fallback == "offline" else 0)  # an apology is no answered turn


async def test_start_up_warns_about_unknown_and_retired_models(storage, fake, caplog) -> None:
    from bot.engines.openai import create_openai_engine

    for model in ("gpt-4o-audio-preview", "no-such-model"):
        engine = await create_openai_engine(openai_settings(storage, fake, VOXDESK_OPENAI_MODEL=model))
        await engine.aclose()
    assert "gpt-4o-audio-preview is shut down" in caplog.text
    assert "no-such-model is not offered" in caplog.text


async def test_a_transcription_model_openai_does_not_serve_is_said_at_start_and_by_check(
    storage, fake, caplog
) -> None:
    """Each note's transcription is then a 404, and every turn is kept without the player's words
    ("(a voice note)" to the model on later notes): a warning a note that named neither the model
    nor the setting, with `check` passing."""
    from bot.engines.openai import create_openai_engine
    from bot.health import check_engine

    settings = openai_settings(storage, fake, VOXDESK_OPENAI_TRANSCRIBE_MODEL="gpt-4o-mini-transcibe")
    engine = await create_openai_engine(settings)
    await engine.aclose()
    assert (
        "model gpt-4o-mini-transcibe is not offered by this provider: check openai.transcribe_model"
        in caplog.text
    )
    with pytest.raises(
        RuntimeError, match=r"does not offer model gpt-4o-mini-transcibe: check openai\.transcribe_model"
    ):
        await check_engine(settings)


async def test_a_transcription_model_not_served_said_at_start_up_is_not_said_again_by_the_notes(
    storage, fake, caplog
) -> None:
    """Start-up's lookup names the transcription model OpenAI does not serve; each note's 404 was
    then a warning of its own, saying it again."""
    from bot.audio import pcm_to_wav
    from bot.engines.base import AudioClip
    from bot.engines.openai import create_openai_engine

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    typo = "gpt-4o-mini-transcibe"
    engine = await create_openai_engine(openai_settings(storage, fake, VOXDESK_OPENAI_TRANSCRIBE_MODEL=typo))
    clip = AudioClip(wav=pcm_to_wav(bytes(48_000), 24_000), seconds=1.0)
    heard = [await engine.transcribe(clip) for _ in range(2)]
    fake.models = [*fake.models, typo]  # the provider serves it after all
    heard.append(await engine.transcribe(clip))
    await engine.aclose()
    assert [h is None for h in heard] == [True, True, False]
    told = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in told] == ["WARNING", "INFO"], told
    assert "check openai.transcribe_model" in told[0][1]  # start-up's, which says what to do
    assert typo in told[1][1]


async def test_a_transcription_model_the_project_may_not_use_is_one_warning_at_start_up(
    storage, fake, caplog
) -> None:
    """OpenAI's 403 for a model the key's project is not allowed: each note's transcription is
    then refused, and every turn kept without the player's words. Start-up said only "could not
    check model ...: PermissionDeniedError" at INFO, as for a provider not answering."""
    from bot.engines.openai import create_openai_engine

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    fake.denied_models = ["gpt-4o-mini-transcribe"]
    engine = await create_openai_engine(openai_settings(storage, fake))
    await engine.aclose()
    (told,) = [r for r in caplog.records if "gpt-4o-mini-transcribe" in r.getMessage()]
    assert told.levelno == logging.WARNING
    assert "403: Project `proj_fake` does not have access" in told.getMessage()
    assert "openai.transcribe_model" in told.getMessage()
    assert engine.ready  # the chat answers: the words feed the history only


@pytest.mark.parametrize("status", [403, 401])
async def test_a_key_that_may_not_read_models_is_one_warning_and_stays_ready(
    storage, fake, caplog, status
) -> None:
    """A restricted key given Models: None lacks the api.model.read scope: OpenAI refuses each
    model lookup (403, "Missing scopes: api.model.read"; some missing scopes it answers 401) while
    chats and transcriptions are answered. The lookup could not check the models, which is no
    refusal of them: start-up logged the chat's ERROR and /healthz said not ready until a chat
    succeeded, which an orchestrator reads as unhealthy."""
    from bot.engines.openai import create_openai_engine
    from tests.web_helpers import web_client

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    fake.reads_models, fake.scope_status = False, status
    settings = openai_settings(storage, fake)
    engine = await create_openai_engine(settings)
    async with web_client(settings, engine=engine) as (client, core):
        ready = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
        fake.script = [answer("You have 100 points.")]
        reply = await core.agent.respond(ToolContext(user_id=NOVA), NOTE)
    await engine.aclose()
    told = [r for r in caplog.records if r.name == "bot.engines.openai" and r.levelno >= logging.INFO]
    assert [r.levelname for r in told] == ["WARNING"], [r.getMessage() for r in told]
    (line,) = told
    for named in ("api.model.read", "gpt-audio-1.5", "gpt-4o-mini-transcribe", "Models: Read"):
        assert named in line.getMessage()
    assert ready is True
    assert reply.engine == "openai"


async def test_a_chat_model_the_project_may_not_use_is_an_error_at_start_up_and_not_ready(
    storage, fake, caplog
) -> None:
    """OpenAI's 403 model_not_found for a model the key's project is not allowed: every note's chat
    would be refused, which start-up says as an error and /healthz as not ready."""
    from bot.engines.openai import create_openai_engine

    fake.denied_models = ["gpt-audio-1.5"]
    engine = await create_openai_engine(openai_settings(storage, fake))
    await engine.aclose()
    (told,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    said = told.getMessage()
    assert "may not use model gpt-audio-1.5 (403: Project `proj_fake` does not have access" in said
    assert not engine.ready


async def test_check_names_the_model_a_key_may_not_use_or_may_not_look_up(storage, fake) -> None:
    """`check` said "the key may not use this (403)", naming neither the model nor why; a key
    that may not read models (no api.model.read scope) passes with a warning, as it may well use
    them."""
    from bot.health import NeedsHuman, _one, check_engine

    settings = openai_settings(storage, fake)
    fake.denied_models = ["gpt-4o-mini-transcribe"]
    with pytest.raises(RuntimeError) as refused:
        await check_engine(settings)
    assert "may not use model gpt-4o-mini-transcribe (403: Project `proj_fake`" in str(refused.value)
    assert "openai.transcribe_model" in str(refused.value)
    fake.denied_models = ["gpt-audio-1.5"]
    with pytest.raises(RuntimeError, match=r"may not use model gpt-audio-1\.5 \(403.*openai\.model"):
        await check_engine(settings)
    fake.denied_models, fake.reads_models = [], False
    detail = await check_engine(settings)
    assert isinstance(detail, NeedsHuman), detail
    assert "api.model.read" in detail and "gpt-audio-1.5" in detail and "gpt-4o-mini-transcribe" in detail
    assert (await _one("engine", "openai", lambda: check_engine(settings))).mark == "warn"


async def test_the_desks_check_passes_once_the_key_may_read_models_again(storage, fake) -> None:
    """The desk checks the running bot's own engine: a key given Models: Read after a check that
    found it without was still a `warn` at every later check, until the bot restarted."""
    from bot.app import running_app
    from bot.health import NeedsHuman, check_engine

    fake.reads_models = False
    async with running_app(openai_settings(storage, fake)) as app:
        unread = await check_engine(app.settings, app)
        fake.reads_models = True
        read = await check_engine(app.settings, app)
    assert isinstance(unread, NeedsHuman) and "api.model.read" in unread, unread
    assert not isinstance(read, NeedsHuman) and "api.model.read" not in read, read


async def test_a_transcription_refused_on_every_note_is_one_warning_until_it_is_answered(
    storage, fake, caplog
) -> None:
    """A transcription OpenAI refuses (403: the project may not use the model) on every note was a
    bare "transcription failed: PermissionDeniedError" warning a note: staff hear once which model
    and why, then nothing until transcriptions are answered again, which is said once."""
    from bot.audio import pcm_to_wav
    from bot.engines.base import AudioClip
    from bot.engines.openai import create_openai_engine

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    engine = await create_openai_engine(openai_settings(storage, fake), verify=False)
    clip = AudioClip(wav=pcm_to_wav(bytes(48_000), 24_000), seconds=1.0)
    fake.denied_models = ["gpt-4o-mini-transcribe"]
    heard = [await engine.transcribe(clip) for _ in range(3)]
    fake.denied_models = []
    heard.append(await engine.transcribe(clip))
    fake.denied_models = ["gpt-4o-mini-transcribe"]
    heard.append(await engine.transcribe(clip))
    await engine.aclose()
    assert [h is None for h in heard] == [True, True, True, False, True]
    told = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in told] == ["WARNING", "INFO", "WARNING"], told
    refused = told[0][1]
    assert "gpt-4o-mini-transcribe" in refused and "403: Project `proj_fake` does not have access" in refused
    assert "gpt-4o-mini-transcribe" in told[1][1]


async def test_a_transcription_model_refused_at_start_up_is_not_said_again_by_the_first_note(
    storage, fake, caplog
) -> None:
    """Start-up's lookup and the notes' transcriptions meet the same 403: start-up's warning said
    it, and the first note's refusal said it again as news."""
    from bot.audio import pcm_to_wav
    from bot.engines.base import AudioClip
    from bot.engines.openai import create_openai_engine

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    fake.denied_models = ["gpt-4o-mini-transcribe"]
    engine = await create_openai_engine(openai_settings(storage, fake))
    clip = AudioClip(wav=pcm_to_wav(bytes(48_000), 24_000), seconds=1.0)
    heard = [await engine.transcribe(clip) for _ in range(2)]
    fake.denied_models = []
    heard.append(await engine.transcribe(clip))
    await engine.aclose()
    assert [h is None for h in heard] == [True, True, False]
    told = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in told] == ["WARNING", "INFO"], told
    assert "openai.transcribe_model" in told[0][1]  # start-up's, which says what to do
    assert "gpt-4o-mini-transcribe" in told[1][1]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (Failure(status=503, message="The server is overloaded"), "503 The server is overloaded"),
        (
            Failure(status=404, code="model_not_found", message="The model `x` does not exist"),
            "404 The model `x` does not exist",
        ),
        (Failure(hang=600), "timed out after 1 s"),
        (Failure(drop=True), "connection lost (RemoteProtocolError"),
    ],
    ids=["503", "404", "timeout", "dropped"],
)
async def test_a_transcription_failing_on_every_note_is_one_warning_naming_model_and_reason(
    storage, fake, caplog, monkeypatch, failure, reason
) -> None:
    """A transcription failing on every note otherwise than refused (a 5xx, a 404 for a model
    OpenAI does not serve, a timeout, a lost connection) was a bare "transcription failed:
    InternalServerError" warning a note, naming neither the model nor the cause: an hour's outage
    under a raid, hundreds of them. It is said once, as a refusal is, and its end once."""
    from bot.audio import pcm_to_wav
    from bot.engines import openai as engine_module
    from bot.engines.base import AudioClip

    monkeypatch.setattr(engine_module, "TRANSCRIBE_TIMEOUT", 1.0)
    caplog.set_level(logging.INFO, logger="bot")
    engine = await engine_module.create_openai_engine(openai_settings(storage, fake), verify=False)
    clip = AudioClip(wav=pcm_to_wav(bytes(48_000), 24_000), seconds=1.0)
    # Two in a row: a third would pause transcriptions (the breaker), which says so itself.
    fake.transcription_failures = [failure, failure]
    heard = [await engine.transcribe(clip) for _ in range(3)]
    fake.transcription_failures = [failure]
    heard.append(await engine.transcribe(clip))
    await engine.aclose()
    assert [h is None for h in heard] == [True, True, False, True]
    told = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in told] == ["WARNING", "INFO", "WARNING"], told
    assert "gpt-4o-mini-transcribe" in told[0][1] and reason in told[0][1], told
    assert "gpt-4o-mini-transcribe" in told[1][1]


async def test_the_pause_after_transcriptions_timing_out_names_their_own_deadline(
    storage, fake, caplog, monkeypatch
) -> None:
    """Three transcriptions in a row out of time pause them (the breaker), and its line said "the
    last at the turn's deadline": a transcription has a deadline of its own, not
    openai.turn_deadline_seconds, which an operator would raise for nothing."""
    from bot.audio import pcm_to_wav
    from bot.engines import openai as engine_module
    from bot.engines.base import AudioClip

    monkeypatch.setattr(engine_module, "TRANSCRIBE_TIMEOUT", 1.0)
    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    engine = await engine_module.create_openai_engine(openai_settings(storage, fake), verify=False)
    clip = AudioClip(wav=pcm_to_wav(bytes(48_000), 24_000), seconds=1.0)
    fake.transcription_failures = [Failure(hang=600)] * 3
    heard = [await engine.transcribe(clip) for _ in range(3)]
    await engine.aclose()
    assert heard == [None] * 3
    (paused,) = [r.getMessage() for r in caplog.records if "transcription paused for" in r.getMessage()]
    assert "turn's deadline" not in paused, paused
    assert "the last at the transcription's deadline of 1 s" in paused, paused


async def test_a_transcription_model_named_as_the_chat_model_is_looked_up_and_told_once(
    storage, fake, caplog
) -> None:
    """One model for both: start-up and `check` ask for it once, and a model the provider does
    not serve is named once, as openai.model, not a second time as openai.transcribe_model."""
    from bot.engines.openai import create_openai_engine
    from bot.health import check_engine

    same = {"VOXDESK_OPENAI_MODEL": "no-such-model", "VOXDESK_OPENAI_TRANSCRIBE_MODEL": "no-such-model"}
    engine = await create_openai_engine(openai_settings(storage, fake, **same))
    await engine.aclose()
    looked_up = [r.path for r in fake.received if "/models" in r.path]
    assert looked_up == ["/v1/models/no-such-model"]
    assert "model no-such-model is not offered by this provider: check openai.model" in caplog.text
    assert "openai.transcribe_model" not in caplog.text
    fake.received.clear()
    served = fake.models[0]
    both = {"VOXDESK_OPENAI_MODEL": served, "VOXDESK_OPENAI_TRANSCRIBE_MODEL": served}
    await check_engine(openai_settings(storage, fake, **both))
    assert [r.path for r in fake.received if "/models" in r.path] == [f"/v1/models/{served}"]


@pytest.mark.parametrize("setting", ["openai.model", "openai.transcribe_model"])
async def test_a_model_the_provider_does_not_offer_is_one_line_at_start_up(
    storage, fake, caplog, setting: str
) -> None:
    """A mistyped model was two WARNING lines as the bot started: the provider not offering it,
    and its missing usage.prices row, which told the studio to add a price for the typo."""
    caplog.set_level(logging.WARNING)
    variable = "VOXDESK_" + setting.upper().replace(".", "_")
    settings = openai_settings(storage, fake, **{variable: "gpt-audio-typo"})
    async with running_app(settings):
        pass
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [f"model gpt-audio-typo is not offered by this provider: check {setting}"]


async def test_a_turn_on_a_model_openai_does_not_serve_is_answered_by_the_fallback(
    storage, fake, caplog
) -> None:
    """OpenAI answers a chat on a model it does not serve with 404 model_not_found: the player
    still gets an answer, and the log names the model to fix. The defaults are models it serves."""
    from bot.config import OpenAISettings

    defaults = OpenAISettings()
    assert {defaults.model, defaults.transcribe_model} <= set(fake.models)
    settings = openai_settings(storage, fake, VOXDESK_OPENAI_MODEL="gpt-audio-15")
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.engine == "none" and reply.text  # the apology, the default fallback
    assert [c.body["model"] for c in fake.chats] == ["gpt-audio-15"]
    assert "model gpt-audio-15 is not offered by this provider: check openai.model" in caplog.text
    assert "engine openai failed" in caplog.text and "404" in caplog.text


# The offline engine a `python -m bot` here loads beside OpenAI's, as conftest's settings have it:
# one speech worker (not one per core, each loading every speech model) and eSpeak's voice (the
# neural one's load doubles a start). No test of the command is of the offline engine.
LIGHT_FALLBACK = {"VOXDESK_OFFLINE_WORKERS": "1", "VOXDESK_OFFLINE_VOICE": "en-us"}


async def test_cli_ask_json_runs_a_full_turn_on_any_compatible_server(storage, fake) -> None:
    import asyncio
    import os
    import sys

    from .conftest import REPO

    fake.script = [tool_calls(("get_player_stats", {})), answer("You have {tool:get_player_stats}")]
    env = {
        **os.environ,
        "VOXDESK_STORAGE_DIR": str(storage),
        "VOXDESK_AGENT_ENGINE": "openai",
        "OPENAI_BASE_URL": fake.base_url,  # the SDK's own variable, not ours
        "OPENAI_API_KEY": API_KEY,
        **LIGHT_FALLBACK,
    }
    note = paths.SAMPLES / "2-how-many-points.ogg"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "ask",
        str(note),
        "--json",
        "--out",
        str(storage / "out"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["engine"] == "openai"
    assert result["user_text"] == fake.transcript
    assert result["tool_calls"] == [{"name": "get_player_stats", "arguments": {}}]
    assert Path(result["reply_audio"]).read_bytes().startswith(b"OggS")  # noqa: ASYNC240


async def test_the_sdk_sends_the_organization_and_project_the_readme_says_it_reads(
    storage, fake, monkeypatch
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-studio")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_voxdesk")
    fake.script = [answer("Hi there.")]
    async with running_app(openai_settings(storage, fake)) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    # Header names are case-insensitive; SDK releases differ in the case they send.
    headers = [(r.path, {k.lower(): v for k, v in r.headers.items()}) for r in fake.received]
    sent = {(path, h.get("openai-organization"), h.get("openai-project")) for path, h in headers}
    assert sent == {
        ("/v1/models/gpt-audio-1.5", "org-studio", "proj_voxdesk"),  # the models looked up at start-up
        ("/v1/models/gpt-4o-mini-transcribe", "org-studio", "proj_voxdesk"),
        ("/v1/chat/completions", "org-studio", "proj_voxdesk"),
        ("/v1/audio/transcriptions", "org-studio", "proj_voxdesk"),
    }


async def test_a_key_a_server_echoes_is_masked_in_the_cli_log(storage, fake) -> None:
    # An OpenAI-compatible server whose 401 says the key it was given: start-up logs its message.
    import asyncio
    import os
    import sys

    from bot.logs import MASK

    from .conftest import REPO

    fake.echo_key = True
    marker = "sk-marker-5f1e9a7c3b"
    env = {
        **os.environ,
        "VOXDESK_STORAGE_DIR": str(storage),
        "VOXDESK_AGENT_ENGINE": "openai",
        "VOXDESK_AGENT_FALLBACK": "apology",
        "VOXDESK_OPENAI_MAX_RETRIES": "0",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": marker,
        **LIGHT_FALLBACK,
    }
    note = paths.SAMPLES / "2-how-many-points.ogg"
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot", "-v", "ask", str(note), "--json", "--out", str(storage / "out")),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    out, err = stdout.decode(), stderr.decode()
    assert process.returncode == 0, err
    assert f"Incorrect API key provided: {MASK}" in err  # the server did echo it
    assert marker not in out + err


async def test_check_names_a_refused_key_and_a_missing_model(storage, fake) -> None:
    from bot.health import check_engine

    assert "available" in await check_engine(openai_settings(storage, fake))
    with pytest.raises(RuntimeError, match=r"refused the API key \(401\)"):
        await check_engine(openai_settings(storage, fake, OPENAI_API_KEY="sk-wrong"))
    # Named with its own setting, never Azure's deployment one.
    with pytest.raises(RuntimeError, match=r"does not offer model no-such-model: check openai\.model$"):
        await check_engine(openai_settings(storage, fake, VOXDESK_OPENAI_MODEL="no-such-model"))
    # A proxy's credentials in the address stay out of what `check` prints.
    guarded = fake.base_url.replace("http://", "http://svc:s3cret@")
    with pytest.raises(RuntimeError) as refused:
        await check_engine(
            openai_settings(storage, fake, OPENAI_API_KEY="sk-wrong", VOXDESK_OPENAI_BASE_URL=guarded)
        )
    assert "s3cret" not in str(refused.value) and "refused the API key" in str(refused.value)


async def test_a_proxy_password_in_the_address_stays_out_of_the_log(storage, fake, caplog) -> None:
    from bot.cli import configure_logging
    from bot.health import check_engine

    configure_logging(verbose=True)  # as `run` and `-v` log: INFO and up
    caplog.set_level(logging.INFO)
    guarded = fake.base_url.replace("http://", "http://svc:s3cret@")
    with contextlib.suppress(RuntimeError):  # the fake wants the key, not the proxy's Basic auth
        await check_engine(openai_settings(storage, fake, VOXDESK_OPENAI_BASE_URL=guarded))
    assert [r.getMessage() for r in caplog.records if "s3cret" in r.getMessage()] == []
    assert not [r.getMessage() for r in caplog.records if "s3cret" in r.getMessage()]


async def test_a_refused_key_is_an_error_at_start_and_healthz_not_ready_until_a_call_succeeds(
    storage, fake, caplog
) -> None:
    from bot.engines.openai import create_openai_engine
    from tests.web_helpers import web_client

    settings = openai_settings(storage, fake, OPENAI_API_KEY="sk-wrong")
    engine = await create_openai_engine(settings)
    (refused,) = [r for r in caplog.records if "refused the API key" in r.getMessage()]
    assert refused.levelname == "ERROR" and "(401: Incorrect API key)" in refused.getMessage()
    async with web_client(settings, engine=engine) as (client, core):
        down = await client.get("/healthz")
        assert down.status == 503 and (await down.json())["checks"]["engine"]["ok"] is False
        engine.client.api_key = API_KEY  # the key put right (a rotated key that had not yet propagated)
        fake.script = [answer("Hello again.")]
        reply = await core.agent.respond(ToolContext(user_id=NOVA), NOTE)
        assert reply.engine == "openai"
        up = await client.get("/healthz")
        assert up.status == 200 and (await up.json())["checks"]["engine"] == {"ok": True, "name": "openai"}
    await engine.aclose()


async def test_a_key_refused_at_start_up_is_not_tried_on_the_transcription_model_too(
    storage, fake, caplog
) -> None:
    # The key is refused for every model: a second lookup would only wait, and log a second line.
    from bot.engines.openai import create_openai_engine

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    engine = await create_openai_engine(openai_settings(storage, fake, OPENAI_API_KEY="sk-wrong"))
    try:
        lines = [r.getMessage() for r in caplog.records if r.name == "bot.engines.openai"]
        assert [line for line in lines if "refused the API key" in line] != []
        assert [line for line in lines if engine.transcribe_model in line] == []
    finally:
        await engine.aclose()


async def test_check_on_azure_fails_on_a_deployment_that_does_not_exist(storage, fake) -> None:
    from bot.health import check_engine

    def azure(deployment: str):  # type: ignore[no-untyped-def]
        return azure_settings(storage, fake, deployment)

    with pytest.raises(RuntimeError, match=r"has no deployment voxdes-audio: check openai\.azure_deployment"):
        await check_engine(azure("voxdes-audio"))
    assert "deployment voxdesk-audio answers" in await check_engine(azure("voxdesk-audio"))
    probe = fake.chats[0]
    assert probe.path == "/openai/deployments/voxdesk-audio/chat/completions"
    # Audio in, text out, one token: an audio model refuses a request without audio either way.
    assert probe.body["max_completion_tokens"] == 1 and probe.body["modalities"] == ["text"]
    assert probe.audio_bytes > 0
    assert fake.violations == []


async def test_check_tries_the_offline_fallback_run_would_build(storage, fake, monkeypatch) -> None:
    import shutil

    from bot.health import check_all

    settings = openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="offline")
    async with running_app(settings) as app:  # the desk's path: the running bot's own fallback
        pools = speech_pools_started(monkeypatch)
        live = {r.service: r for r in await check_all(settings, live=app)}
    assert live["fallback"].ok and "offline speech" in live["fallback"].detail and pools == []
    shutil.rmtree(storage / "speech")  # `run` would now stop building the fallback
    lines = {r.service: r for r in await check_all(settings)}
    assert lines["engine"].ok and "available" in lines["engine"].detail
    assert not lines["fallback"].ok and "python -m bot init" in lines["fallback"].detail


async def test_the_fake_refuses_a_request_with_no_audio_as_audio_models_do(fake) -> None:
    fake.expect_violations()
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="gpt-audio-1.5", messages=[{"role": "user", "content": "Say OK."}], modalities=["text"]
        )
    await client.close()
    assert "either input content or output modality contain audio" in str(refused.value)
    assert len(fake.violations) == 1


async def test_an_audio_id_the_provider_does_not_know_is_sent_again_as_text(storage, fake, caplog) -> None:
    # Issued under another key (or provider, or model): this fake never gave it out.
    stranger = PastTurn(
        user_text="q",
        reply_text="the earlier answer",
        audio_id="audio_elsewhere",
        audio_expires_at=int(time.time()) + 3000,
    )
    fake.script = [answer("Still here."), answer("And again.")]
    async with running_app(openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="apology")) as app:
        await app.conversations.append(NOVA, stranger)
        first = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        second = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (first.engine, first.text, second.text) == ("openai", "Still here.", "And again.")
    refused, resent, following = fake.chats
    assert refused.audio_ids == ["audio_elsewhere"]
    assert (
        resent.audio_ids == []
        and {"role": "assistant", "content": "the earlier answer"} in resent.body["messages"]
    )
    assert len(following.audio_ids) == 1 and following.audio_ids[0] in fake.issued_audio  # its own reply's
    assert "Assistant audio audio_elsewhere not found" in caplog.text
    assert fake.violations == []


async def test_an_audio_id_refused_among_several_sends_only_that_reply_as_text(storage, fake) -> None:
    # The API names the one it refused (content.messages[i].audio.id): the others it holds go by reference
    # again from the next note on, rather than as their text for the rest of the conversation.
    now = time.time()
    fake.issued_audio["audio_live"] = int(now + 3000)
    settings = openai_settings(storage, fake, VOXDESK_OPENAI_AUDIO_HISTORY_TURNS="2")
    async with running_app(settings) as app:
        await past_audio_replies(app, now, ("audio_elsewhere", now + 3000), ("audio_live", now + 3000))
        fake.script = [answer("ok"), answer("again")]
        replies = [await app.agent.respond(ToolContext(user_id=NOVA), NOTE) for _ in range(2)]
    assert [r.engine for r in replies] == ["openai"] * 2
    refused, resent, following = fake.chats
    assert (refused.audio_ids, resent.audio_ids) == (["audio_elsewhere", "audio_live"], [])
    assert following.audio_ids[0] == "audio_live" and len(following.audio_ids) == 2


async def test_a_provider_that_takes_no_audio_id_back_is_sent_none_after_the_first(
    storage, fake, caplog
) -> None:
    # Its own id refused: the provider keeps no audio, and each note would pay one refused request.
    fake.takes_audio_back = False
    async with running_app(openai_settings(storage, fake)) as app:
        replies = [
            await app.agent.respond(ToolContext(user_id=who), NOTE) for who in (NOVA, BLAZE, NOVA, BLAZE)
        ]
    assert [r.engine for r in replies] == ["openai"] * 4
    assert [len(c.audio_ids) for c in fake.chats] == [0, 0, 1, 0, 0]  # Blaze's reply id never sent
    assert len([r for r in caplog.records if "audio" in r.getMessage() and "refused" in r.getMessage()]) == 1


async def test_a_provider_whose_created_is_in_milliseconds_is_judged_by_this_hosts_clock(
    storage, fake, caplog
) -> None:
    # Its `created` read as seconds would put its clock 50,000 years ahead: every id it gave would
    # seem long expired by it, and a refusal one conversation's alone, each paying for one.
    fake.takes_audio_back = False
    fake.created_as = lambda seconds: seconds * 1000
    async with running_app(openai_settings(storage, fake)) as app:
        replies = [
            await app.agent.respond(ToolContext(user_id=who), NOTE) for who in (NOVA, BLAZE, NOVA, BLAZE)
        ]
    assert [r.engine for r in replies] == ["openai"] * 4
    assert [len(c.audio_ids) for c in fake.chats] == [0, 0, 1, 0, 0]  # Blaze's reply id never sent
    assert "expired by its clock" not in caplog.text


async def test_one_players_audio_id_expired_by_the_providers_clock_leaves_the_others_theirs(
    storage, fake, caplog
) -> None:
    # This host's clock is two minutes behind the provider's: an id expired by the provider's clock
    # has a minute left by this one's, and is sent and refused. Nova's conversation goes on as
    # text; Blaze's reply, which the provider holds, still goes by reference.
    fake.clock_ahead = 120
    async with running_app(openai_settings(storage, fake)) as app:
        fake.audio_ttl = 0
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        fake.audio_ttl = 3600
        replies = [await app.agent.respond(ToolContext(user_id=who), NOTE) for who in (BLAZE, NOVA, BLAZE)]
    assert [r.engine for r in replies] == ["openai"] * 3
    given = list(fake.issued_audio)  # Nova's first reply's, Blaze's, Nova's second
    assert [c.audio_ids for c in fake.chats] == [[], [], [given[0]], [], [given[1]]]
    assert "expired by its clock" in caplog.text


async def test_one_expired_id_among_several_pauses_no_other_players_references(storage, fake, caplog) -> None:
    # Two replies by reference, the older one the provider holds for an hour yet, the newer one
    # expired by its clock (this host's is two minutes behind). The API names the refused one as
    # "content.messages[i].audio.id": read as naming none, both counted as refused, and the held one
    # made it "a provider that holds no audio", every player's references paused for 15 minutes.
    fake.clock_ahead = 120
    settings = openai_settings(storage, fake, VOXDESK_OPENAI_AUDIO_HISTORY_TURNS="2")
    async with running_app(settings) as app:
        for who in (NOVA, BLAZE):
            await app.agent.respond(ToolContext(user_id=who), NOTE)
        fake.audio_ttl = 0
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        fake.audio_ttl = 3600
        replies = [await app.agent.respond(ToolContext(user_id=who), NOTE) for who in (NOVA, BLAZE)]
    assert [r.engine for r in replies] == ["openai"] * 2
    held, blazes, expired = list(fake.issued_audio)[:3]
    assert [c.audio_ids for c in fake.chats] == [[], [], [held], [held, expired], [], [blazes]]
    assert "expired by its clock" in caplog.text and "before its expiry" not in caplog.text


async def test_a_provider_that_took_no_audio_id_back_is_sent_one_again_after_a_pause(
    storage, fake, monkeypatch
) -> None:
    # Its refusal is no reason to send none until a restart: it may hold them again later.
    from bot.engines import openai as engine

    fake.takes_audio_back = False
    monkeypatch.setattr(engine, "AUDIO_REFUSED_PAUSE", 0.0, raising=False)
    async with running_app(openai_settings(storage, fake)) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)  # refused, and sent again as text
        fake.takes_audio_back = True
        last = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert last.engine == "openai"
    assert [len(c.audio_ids) for c in fake.chats] == [0, 1, 0, 1]


async def test_the_fake_refuses_an_audio_id_it_never_issued_as_the_api_does(fake) -> None:
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "audio": {"id": "audio_unknown"}},
        {"role": "user", "content": "and?"},
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model="gpt-audio-1.5",
            messages=messages,  # type: ignore[arg-type]
            modalities=["text", "audio"],
            audio={"voice": "alloy", "format": "wav"},
        )
    await client.close()
    assert refused.value.code == "audio_not_found"
    assert refused.value.param == "content.messages[1].audio.id"  # as the API names the place
    assert fake.violations == []  # the client cannot know: not a malformed request


async def test_a_reply_cut_off_at_its_token_limit_goes_out_and_is_kept_as_cut_off(
    storage, fake, caplog
) -> None:
    fake.script = [answer("Your points come from matches and then", finish_reason="length"), answer("ok")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        (kept,) = await app.conversations.history(NOVA)
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.engine == "openai" and reply.kind == "answer"
    assert reply.text == "Your points come from matches and then" and reply.audio is not None
    assert "reply cut off at openai.max_reply_tokens" in caplog.text
    assert (
        kept.reply_text == f"Your points come from matches and then {say.CUT_OFF}" and kept.audio_id is None
    )
    assert {"role": "assistant", "content": kept.reply_text} in fake.chats[1].body["messages"]
    assert fake.chats[0].body["max_completion_tokens"] == 2048  # openai.max_reply_tokens


async def test_the_token_limit_is_a_setting_and_the_fake_stops_there(storage, fake) -> None:
    fake.script = [answer("one two three four five six seven eight nine ten eleven twelve")]
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_MAX_REPLY_TOKENS="40")) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        (kept,) = await app.conversations.history(NOVA)
    assert fake.chats[0].body["max_completion_tokens"] == 40
    assert reply.text.startswith("one two") and len(reply.text.split()) < 12  # the words it had tokens for
    assert reply.audio is not None and kept.reply_text.endswith(say.CUT_OFF)


async def test_a_request_openai_refuses_says_why_in_the_log(storage, fake, caplog) -> None:
    # More tokens than the model answers with, for longer answers: `check` passes (it looks the
    # model up), and every note goes to the fallback with only "OpenAI answered 400" to go on.
    settings = openai_settings(
        storage, fake, VOXDESK_OPENAI_MAX_REPLY_TOKENS="32000", VOXDESK_AGENT_FALLBACK="offline"
    )
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.engine == "offline" and len(fake.chats) == 1  # a 400 is not asked again
    (line,) = [r.getMessage() for r in caplog.records if "engine openai failed" in r.getMessage()]
    assert "400" in line and "max_tokens is too large: 32000" in line
    assert fake.violations == []


@pytest.mark.parametrize("provider", ["openai", "azure"])
async def test_a_blocked_prompt_is_a_refusal_not_an_engine_failure(storage, fake, caplog, provider) -> None:
    env = {"VOXDESK_AGENT_FALLBACK": "offline"}
    if provider == "azure":
        env |= {
            "VOXDESK_OPENAI_PROVIDER": "azure",
            "VOXDESK_OPENAI_AZURE_ENDPOINT": fake.azure_endpoint,
            "VOXDESK_OPENAI_AZURE_DEPLOYMENT": "voxdesk-audio",
            "AZURE_OPENAI_API_KEY": AZURE_KEY,
        }
        fake.failures = [Failure(content_filter=True)]  # Azure's 400 content_filter
    else:
        fake.script = [filtered()]  # a 200 with finish_reason content_filter and nothing said
    async with running_app(openai_settings(storage, fake, **env)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.engine, reply.kind, reply.text) == ("openai", "refusal", say.REFUSAL)
    assert reply.audio is not None  # the refusal is spoken
    assert len(fake.chats) == 1
    assert "failed" not in caplog.text  # neither an engine failure nor the fallback engine


@pytest.mark.parametrize("refused", [filtered(), refusal("I can't continue with this.")])
async def test_a_refusal_after_a_complaint_was_filed_still_tells_its_ticket(storage, fake, refused) -> None:
    """The step that reads the complaint's words is blocked or refused: the player still hears
    the ticket it got, or would file it again."""
    threat = {"category": "other", "description": "a player said he would find me and hurt me"}
    fake.script = [tool_calls(("register_grievance", threat)), refused]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA, request_id="n1"), NOTE)
        (kept,) = await app.conversations.history(NOVA)
    key = reply.tool_results[0].result["ticket_key"]
    assert reply.kind == "refusal" and reply.text.endswith(say.REFUSAL)
    assert key in reply.text and reply.told_keys == [key] and key in kept.reply_text
    assert reply.audio is not None and reply.audio.duration_secs > 3  # the whole of it, spoken


QUERIES = [
    "pair my controller", "refund", "two-factor authentication", "cheating", "game crashing",
    "forgot my password", "controller stick drifting", "gems never arrived", "PC requirements",
    "limit play time", "season end", "lost phone authenticator", "account locked", "money back",
]  # fmt: skip


def carried(messages: list[dict]) -> tuple[int, dict]:
    """The characters of history and tool results a request carries (every message but the
    system prompt, the time note and the player's note), and that note."""
    last_system = max(i for i, m in enumerate(messages) if m["role"] == "system")
    size = 0
    for m in messages[1:last_system] + messages[last_system + 2 :]:
        size += len(m.get("content") or "") if isinstance(m.get("content"), str) else 0
        size += sum(len(c["function"]["arguments"]) for c in m.get("tool_calls") or [])
    return size, messages[last_system + 1]


async def test_a_turns_tool_results_and_its_history_fit_what_a_request_carries(storage, fake) -> None:
    """Ten rounds of eight searches come to more than a request carries of history (48,000
    characters), before any history at all: the newest results go, the oldest are left out, the
    oldest earlier turns before them, and the player's note always."""
    from bot.conversations import MAX_HISTORY_CHARS

    passage = {"passages": [{"title": "Refunds", "text": "Refunds take 14 days. " * 150}]}
    rounds = [
        tool_calls(*[("search_manuals", {"query": QUERIES[(8 * r + i) % len(QUERIES)]}) for i in range(8)])
        for r in range(10)
    ]
    fake.script = [*rounds, answer("Done.")]
    settings = openai_settings(storage, fake, VOXDESK_AGENT_MAX_TOOL_ROUNDS="10")
    async with running_app(settings) as app:
        for i in range(8):  # 8 turns of about 5,000 characters: history as the store reads it
            past = PastTurn(
                f"question {i}",
                f"answer {i}",
                [
                    {
                        "id": f"old{i}",
                        "name": "search_manuals",
                        "arguments": {"query": "refund"},
                        "result": passage,
                        "ok": True,
                    }
                ],
                at=time.time(),
            )
            await app.conversations.append(NOVA, past)
        assert len(await app.conversations.history(NOVA)) == 8
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "tell me everything")
    assert reply.text == "Done." and len(reply.tool_calls) == 80
    sizes = []
    for chat in fake.chats:
        size, note = carried(chat.body["messages"])
        sizes.append(size)
        assert note == {"role": "user", "content": "tell me everything"}
    # The first request carries every earlier turn: nothing is left out before it must be.
    assert sum(m["role"] == "user" for m in fake.chats[0].body["messages"]) == 9
    assert "Left out" not in json.dumps(fake.chats[0].body["messages"])
    assert max(sizes) <= MAX_HISTORY_CHARS, sizes
    last = fake.chats[-1].body["messages"]
    newest = [m["content"] for m in last[-8:]]
    assert all(m["role"] == "tool" for m in last[-8:]) and all("passages" in c for c in newest)
    assert fake.violations == []


def test_a_result_bigger_than_the_budget_and_long_made_up_arguments_are_left_out_alone() -> None:
    # A newest result over the whole budget goes as the stand-in, while an older one that fits
    # goes whole; a call left out with arguments a looping model made up sends them as {}.
    from bot.engines.base import Round
    from bot.engines.openai import fitted
    from bot.tools.base import ToolCall, ToolResult

    def result(n: int, size: int, query: str = "refund") -> ToolResult:
        return ToolResult(ToolCall(f"c{n}", "search_manuals", {"query": query}), {"text": "x" * size})

    old, looped, huge = result(1, 2_000), result(2, 30_000, "y" * 5_000), result(3, 60_000)
    rounds = [Round([r.call], [r]) for r in (old, looped, huge)]
    history = [PastTurn(f"question {i}", "answer", at=float(i)) for i in range(3)]
    kept, shown = fitted(history, rounds, budget=40_000)
    assert kept == history  # small: still room for them
    (first,), (second,), (third,) = (r.results for r in shown)
    assert first.result == old.result and second.result == looped.result  # whole: they fit
    assert third.result == {"error": say.RESULT_LEFT_OUT} and third.call == huge.call
    kept, shown = fitted(history, rounds, budget=20_000)
    (first,), (second,), (third,) = (r.results for r in shown)
    assert first.result == old.result and second.result == third.result == {"error": say.RESULT_LEFT_OUT}
    assert shown[1].calls == [replace(looped.call, arguments={})]  # its 5,000 made-up characters
    assert [c.id for rnd in shown for c in rnd.calls] == [res.call.id for rnd in shown for res in rnd.results]
    assert rounds[1].calls[0].arguments == {"query": "y" * 5_000}  # what the turn keeps is untouched


async def test_words_said_with_tool_calls_go_back_with_them(storage, fake) -> None:
    fake.script = [tool_calls(("get_player_stats", {}), said="Let me look that up."), answer("Done.")]
    async with running_app(openai_settings(storage, fake)) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    (asked,) = [m for m in fake.chats[1].body["messages"] if m.get("tool_calls")]
    # An audio model says them in its audio's transcript only, with no content.
    assert asked["content"] == "Let me look that up."


async def test_the_transcription_request_counts_in_the_usage(storage, fake) -> None:
    fake.script = [answer("Here you are.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        spent = await app.agent.budget.today_for(NOVA)  # type: ignore[union-attr]
    billed = sum(u["total_tokens"] for u in fake.billed)
    assert len(fake.billed) == 2  # the chat request and the transcription
    assert reply.usage is not None and reply.usage.total == billed
    assert sum(spent[k] for k in ("text_in", "text_out", "audio_in", "audio_out")) == billed


async def test_usage_a_compatible_server_sends_null_or_leaves_out_fails_no_turn(storage, fake) -> None:
    """Null counts and no details are what some compatible servers send: the answer goes out, the
    player's words are kept, and what was counted is charged."""

    def sparse(usage: dict) -> dict:
        if usage.get("type") == "tokens":  # a transcription's
            return {"type": "tokens", "input_tokens": None, "output_tokens": usage["output_tokens"]}
        return {"prompt_tokens": None, "completion_tokens": usage["completion_tokens"], "total_tokens": None}

    fake.usage_as = sparse
    fake.script = [tool_calls(("get_player_stats", {})), answer("Counted all the same.")]
    async with running_app(openai_settings(storage, fake)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        spent = await app.agent.budget.today_for(NOVA)  # type: ignore[union-attr]
    assert (reply.engine, reply.text, reply.user_text) == ("openai", "Counted all the same.", fake.transcript)
    counted = sum(u.get("completion_tokens") or u.get("output_tokens") or 0 for u in fake.billed)
    assert len(fake.billed) == 3 and counted > 0
    assert reply.usage is not None and (reply.usage.total, reply.usage.text_out) == (counted, counted)
    assert sum(spent[k] for k in ("text_in", "text_out", "audio_in", "audio_out")) == counted


SIGNATURES = {"wav": b"RIFF", "mp3": b"ID3", "flac": b"fLaC", "aac": b"\xff\xf1", "opus": b"OggS"}


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "aac", "opus", "pcm16"])
async def test_each_reply_format_comes_as_real_audio_in_that_format(storage, fake, fmt) -> None:
    if fmt in SIGNATURES:
        assert spoken_audio("a few words", fmt).startswith(SIGNATURES[fmt])
    fake.script = [answer("one two three four five six seven eight nine")]  # about 3.3 s
    async with running_app(openai_settings(storage, fake, VOXDESK_OPENAI_REPLY_FORMAT=fmt)) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert fake.chats[0].body["audio"]["format"] == fmt
    assert reply.audio is not None and reply.audio.duration_secs == pytest.approx(3.33, abs=0.15)


# USD per 1M tokens, simple enough to price a turn by hand. openai.model's row is not what an
# Azure deployment runs, nor what a transcription costs.
PRICES = {
    "gpt-audio-1.5": {"text_in": 7.0, "text_out": 7.0, "audio_in": 7.0, "audio_out": 7.0},
    "gpt-audio": {"text_in": 1.0, "text_out": 2.0, "audio_in": 3.0, "audio_out": 4.0},
    "gpt-4o-mini-transcribe": {"text_in": 5.0, "text_out": 6.0, "audio_in": 8.0},
}


def billed_apart(fake) -> tuple[dict, dict]:
    """The chat answer's usage and the transcription's, as the fake billed them."""
    (chat,) = [u for u in fake.billed if "prompt_tokens" in u]
    (heard,) = [u for u in fake.billed if "input_tokens" in u]
    return chat, heard


def chat_cost(chat: dict, row: dict[str, float]) -> float:
    audio_in = chat["prompt_tokens_details"]["audio_tokens"]
    audio_out = chat["completion_tokens_details"]["audio_tokens"]
    return (
        (chat["prompt_tokens"] - audio_in) * row["text_in"]
        + (chat["completion_tokens"] - audio_out) * row["text_out"]
        + audio_in * row["audio_in"]
        + audio_out * row["audio_out"]
    ) / 1_000_000


def transcription_cost(heard: dict, row: dict[str, float]) -> float:
    audio = heard["input_token_details"]["audio_tokens"]
    return (
        (heard["input_tokens"] - audio) * row["text_in"]
        + heard["output_tokens"] * row["text_out"]
        + audio * row["audio_in"]
    ) / 1_000_000


@pytest.mark.parametrize("transcribe", ["gpt-4o-mini-transcribe", "voxdesk-transcribe"])
async def test_an_azure_turn_is_priced_by_its_deployments_model_and_the_transcription_by_its_own(
    storage, fake, transcribe
) -> None:
    # The deployment runs gpt-audio (its answers say gpt-audio-2025-08-28). The transcription's
    # deployment is known by its name alone: one named otherwise than its model is priced by the
    # row usage.price_as names.
    fake.deployments["voxdesk-transcribe"] = "gpt-4o-mini-transcribe"
    usage: dict = {"prices": PRICES}
    if transcribe == "voxdesk-transcribe":
        usage["price_as"] = {"voxdesk-transcribe": "gpt-4o-mini-transcribe"}
    settings = azure_settings(storage, fake, VOXDESK_OPENAI_TRANSCRIBE_MODEL=transcribe).replace(usage=usage)
    fake.script = [answer("From Azure.")]
    async with running_app(settings) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        spent = await app.agent.budget.today_for(NOVA)  # type: ignore[union-attr]
    chat, heard = billed_apart(fake)
    assert chat["prompt_tokens_details"]["audio_tokens"] > 0 and heard["output_tokens"] > 0
    # The answer at gpt-audio's $1/$2/$3/$4 a million text in/out, audio in/out; the transcription
    # at $8 a million audio in and $6 text out. A run: (36060*1 + 3*2 + 22*3 + 15*4) / 1M for the
    # answer and (23*8 + 8*6) / 1M for the transcription, $0.036424 (all at $7: $0.252917).
    expected = chat_cost(chat, PRICES["gpt-audio"]) + transcription_cost(
        heard, PRICES["gpt-4o-mini-transcribe"]
    )
    assert spent["cost_usd"] == pytest.approx(expected, rel=1e-9)
    # The budget still counts every token, whatever its price.
    assert spent["text_in"] + spent["text_out"] + spent["audio_in"] + spent["audio_out"] == (
        chat["total_tokens"] + heard["total_tokens"]
    )


async def test_an_openai_turns_transcription_is_priced_by_its_own_row(storage, fake) -> None:
    settings = openai_settings(storage, fake).replace(usage={"prices": PRICES})
    fake.script = [answer("Here you are.")]
    async with running_app(settings) as app:
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        spent = await app.agent.budget.today_for(NOVA)  # type: ignore[union-attr]
    chat, heard = billed_apart(fake)
    expected = chat_cost(chat, PRICES["gpt-audio-1.5"]) + transcription_cost(
        heard, PRICES["gpt-4o-mini-transcribe"]
    )
    assert spent["cost_usd"] == pytest.approx(expected, rel=1e-9)


async def test_a_model_with_no_price_row_is_told_once_at_start_or_first_turn_and_by_check(
    storage, fake, caplog
) -> None:
    from bot.health import check_engine

    fake.deployments |= {"voxdesk-mini": "gpt-audio-mini-2025-12-15", "voxdesk-transcribe": "x"}
    transcribe = "voxdesk-transcribe"
    settings = azure_settings(storage, fake, "voxdesk-mini", VOXDESK_OPENAI_TRANSCRIBE_MODEL=transcribe)
    fake.script = [answer("one"), answer("two")]

    def told(name: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelname == "WARNING" and f"no usage.prices row for model {name}:" in r.getMessage()
        ]

    async with running_app(settings) as app:
        # The transcription's deployment is priced by its name: known at start.
        assert len(told("voxdesk-transcribe")) == 1 and told("gpt-audio-mini-2025-12-15") == []
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        spent = await app.agent.budget.today_for(NOVA)  # type: ignore[union-attr]
    assert len(told("voxdesk-transcribe")) == 1 and len(told("gpt-audio-mini-2025-12-15")) == 1
    assert spent["cost_usd"] == 0 and spent["audio_in"] > 0
    detail = await check_engine(settings)
    assert "deployment voxdesk-mini answers as gpt-audio-mini-2025-12-15" in detail
    assert "no usage.prices row for gpt-audio-mini-2025-12-15, voxdesk-transcribe" in detail
    assert "priced as gpt-audio, gpt-4o-mini-transcribe" in await check_engine(
        azure_settings(storage, fake, VOXDESK_OPENAI_TRANSCRIBE_MODEL="gpt-4o-mini-transcribe")
    )


async def test_words_outside_ascii_go_to_the_model_as_words_not_escapes(storage, fake) -> None:
    """A manual, a player's name or a complaint in Cyrillic or kana is read by the model as written:
    as \\u escapes each letter costs six characters, several tokens, and a history the store keeps
    to its character budget would be several times that many tokens."""
    searched = {
        "id": "call_ru",
        "name": "search_manuals",
        "arguments": {"query": "контроллер не подключается"},
        "result": {
            "passages": [{"title": "Контроллер", "text": "Зажмите кнопку сопряжения.", "source": "ru.md"}]
        },
        "ok": True,
    }
    # Ending in half an emoji's surrogate pair, valid JSON as a model's arguments arrive.
    gems = json.loads('"ジェムが届いていません、昨日買いました \\ud83d"')
    fake.script = [
        tool_calls(("register_grievance", {"category": "wallet", "description": gems})),
        answer("ok"),
    ]
    async with running_app(openai_settings(storage, fake)) as app:
        await app.conversations.append(
            NOVA, PastTurn(user_text="q", reply_text="ok", tool_results=[searched], at=time.time())
        )
        await app.agent.respond(ToolContext(user_id=NOVA, request_id="n1"), NOTE)
    sent = json.dumps(fake.chats[1].body["messages"], ensure_ascii=False)
    assert "Зажмите кнопку сопряжения." in sent  # a result of an earlier turn
    assert "контроллер не подключается" in sent  # the arguments of its call
    assert "ジェムが届いていません、昨日買いました \ufffd" in sent  # this turn's call
    assert "\\\\u" not in sent  # no escape of an escape anywhere


async def test_a_blocked_complaint_in_the_history_does_not_refuse_the_players_next_notes(
    storage, fake
) -> None:
    """Azure's prompt filter reads the whole prompt: a threat the player reported, kept in the
    history for half an hour, would have every later note of theirs refused, "how many points do I
    have" too. A note refused with its history is asked again without it, and the conversation
    goes on from that note: kept, the turns the filter read had each later note refused first."""
    env = {
        "VOXDESK_OPENAI_PROVIDER": "azure",
        "VOXDESK_OPENAI_AZURE_ENDPOINT": fake.azure_endpoint,
        "VOXDESK_OPENAI_AZURE_DEPLOYMENT": "voxdesk-audio",
        "AZURE_OPENAI_API_KEY": AZURE_KEY,
    }
    fake.blocked_words = ["hurt me"]
    threat = "a player said he would find me and hurt me"
    filed = {
        "id": "call_filed",
        "name": "register_grievance",
        "arguments": {"category": "other", "description": threat},
        "result": {"ticket_key": "GRV-1", "status": "open"},
        "ok": True,
    }
    # Answered by the offline fallback while OpenAI was down: no filter read it then.
    reported = PastTurn(threat, "Filed as GRV-1.", tool_results=[filed], at=time.time(), engine="offline")
    fake.script = [answer("You have 100 points."), answer("You are level 3.")]
    async with running_app(openai_settings(storage, fake, **env)) as app:
        await app.conversations.append(NOVA, reported)
        me = ToolContext(user_id=NOVA, request_id="n2")
        later = await app.agent.respond_text(me, "how many points do I have")
        before = len(fake.chats)
        third = await app.agent.respond_text(replace(me, request_id="n3"), "what level am I")
        kept = await app.conversations.history(NOVA)
    assert (later.kind, later.text) == ("answer", "You have 100 points.")
    # The note went once with its history, refused, and once without it.
    assert ["hurt me" in json.dumps(c.body["messages"]) for c in fake.chats[:2]] == [True, False]
    assert (third.kind, third.text) == ("answer", "You are level 3.")
    assert len(fake.chats) == before + 1  # no refused request first
    assert "how many points do I have" in json.dumps(fake.chats[-1].body["messages"])
    assert [t.user_text for t in kept] == ["how many points do I have", "what level am I"]


async def test_a_note_the_fallback_answered_after_the_filter_refused_its_history_starts_afresh(
    storage, fake
) -> None:
    """The filter refused the history, and the request asked again without it lost its connection:
    the offline fallback answers, and kept with the history, the turns the filter read had the
    player's next note refused first."""
    env = {
        "VOXDESK_OPENAI_PROVIDER": "azure",
        "VOXDESK_OPENAI_AZURE_ENDPOINT": fake.azure_endpoint,
        "VOXDESK_OPENAI_AZURE_DEPLOYMENT": "voxdesk-audio",
        "AZURE_OPENAI_API_KEY": AZURE_KEY,
        "VOXDESK_AGENT_FALLBACK": "offline",
    }
    fake.blocked_words = ["hurt me"]
    reported = PastTurn("a player said he would find me and hurt me", "Reported.", at=time.time())
    fake.script = [Failure(drop=True), answer("You are level 3.")]
    async with running_app(openai_settings(storage, fake, **env)) as app:
        await app.conversations.append(NOVA, reported)
        me = ToolContext(user_id=NOVA, request_id="n2")
        first = await app.agent.respond_text(me, "how many points do I have")
        before = len(fake.chats)
        later = await app.agent.respond_text(replace(me, request_id="n3"), "what level am I")
        kept = await app.conversations.history(NOVA)
    assert (first.engine, before) == ("offline", 2)
    assert (later.engine, later.text, len(fake.chats)) == ("openai", "You are level 3.", before + 1)
    assert [t.user_text for t in kept] == ["how many points do I have", "what level am I"]


async def test_a_blocked_turn_is_kept_without_the_words_the_filter_refused(storage, fake) -> None:
    """The filter refused the turn's own words (no history went with them): kept, they would have
    the player's next note refused first, and answered without the turns before it."""
    env = {
        "VOXDESK_OPENAI_PROVIDER": "azure",
        "VOXDESK_OPENAI_AZURE_ENDPOINT": fake.azure_endpoint,
        "VOXDESK_OPENAI_AZURE_DEPLOYMENT": "voxdesk-audio",
        "AZURE_OPENAI_API_KEY": AZURE_KEY,
    }
    fake.blocked_words = ["hurt me"]
    fake.transcript = "a player said he would find me and hurt me"
    threat = {"category": "other", "description": "a player said he would find me and hurt me"}
    fake.script = [tool_calls(("register_grievance", threat)), answer("You have 100 points.")]
    async with running_app(openai_settings(storage, fake, **env)) as app:
        me = ToolContext(user_id=NOVA, request_id="n1")
        reported = await app.agent.respond(me, NOTE)
        before = len(fake.chats)
        later = await app.agent.respond_text(replace(me, request_id="n2"), "how many points do I have")
        kept = await app.conversations.history(NOVA)
    (key,) = reported.told_keys
    assert reported.kind == "refusal" and reported.tool_results[0].result["ticket_key"] == key
    assert later.text == "You have 100 points." and len(fake.chats) == before + 1
    assert [t.user_text for t in kept] == [None, "how many points do I have"]
    assert key in kept[0].reply_text and "hurt me" not in json.dumps([t.tool_results for t in kept])


async def test_an_exhausted_quota_is_not_waited_for_and_says_so(storage, fake, caplog) -> None:
    """OpenAI's 429 insufficient_quota is no rate limit: no wait cures it, only credit. Retried and
    logged as "rate limited", each note waited through doubling pauses for the fallback, and the
    operator read of a rate limit."""
    from bot.engines.openai import create_openai_engine
    from tests.web_helpers import web_client

    fake.failures = [Failure(status=429, code="insufficient_quota")] * 6
    settings = openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="offline")
    engine = await create_openai_engine(settings)
    async with web_client(settings, engine=engine) as (client, core):
        first = await core.agent.respond(ToolContext(user_id=NOVA), NOTE)
        second = await core.agent.respond(ToolContext(user_id=BLAZE), NOTE)
        health = await (await client.get("/healthz")).json()
    await engine.aclose()
    assert first.engine == second.engine == "offline"
    assert len(fake.chats) == 1  # not asked again, for this note nor the next
    assert health["checks"]["engine"]["ok"] is False
    (said,) = [r for r in caplog.records if "insufficient_quota" in r.getMessage()]
    assert said.levelno >= logging.WARNING and "billing" in said.getMessage()


async def test_check_on_azure_names_the_api_version_azure_does_not_serve(storage, fake) -> None:
    """Azure answers an api-version it does not serve with a bare 404: the operator is sent to
    openai.api_version, not to a deployment that exists, and a turn gets the fallback."""
    from bot.health import check_engine

    # Retired, and before audio.
    settings = azure_settings(storage, fake, VOXDESK_OPENAI_API_VERSION="2023-05-15")
    with pytest.raises(RuntimeError, match=r"404 'Resource not found' .*check openai\.api_version") as caught:
        await check_engine(settings)
    assert "no deployment" not in str(caught.value)


async def test_check_on_azure_fails_on_a_transcription_deployment_that_does_not_exist(storage, fake) -> None:
    """Azure has no deployment lookup: a transcription deployment that does not exist would fail
    every note's transcription, one warning each, and every turn would be kept without the player's
    words, while `check` said all was well."""
    from bot.health import check_engine

    def azure(transcribe: str):  # type: ignore[no-untyped-def]
        return azure_settings(storage, fake, VOXDESK_OPENAI_TRANSCRIBE_MODEL=transcribe)

    with pytest.raises(RuntimeError, match=r"no deployment voxdesk-hearing: check openai\.transcribe_model"):
        await check_engine(azure("voxdesk-hearing"))
    assert "deployment voxdesk-audio answers" in await check_engine(azure("gpt-4o-mini-transcribe"))
    assert [t.path for t in fake.transcriptions][-1] == (
        "/openai/deployments/gpt-4o-mini-transcribe/audio/transcriptions"
    )
    assert "deployment voxdesk-audio answers" in await check_engine(azure(""))  # none to check
    assert fake.violations == []


async def test_a_model_lookup_that_hangs_at_start_up_is_not_waited_for_and_tried_again(
    storage, fake, caplog
) -> None:
    """The lookup only decides a warning. With the SDK's retries and the reply's read timeout
    (90 s by default), a provider hanging at start-up held the bot, the offline fallback with it,
    three reads and their backoffs: minutes with no note answered."""
    from bot.engines.openai import create_openai_engine

    caplog.set_level(logging.INFO, "bot.engines.openai")
    fake.model_failures = [Failure(hang=30)] * 3
    settings = openai_settings(storage, fake, VOXDESK_OPENAI_CONNECT_TIMEOUT_SECONDS="0.5")
    engine = await create_openai_engine(settings)
    await engine.aclose()
    lookups = [{k.lower(): v for k, v in r.headers.items()} for r in fake.received if "/models/" in r.path]
    assert len(lookups) == 1  # not tried again
    assert lookups[0]["x-stainless-read-timeout"] == "0.5"  # not openai.timeout_seconds (30 here)
    assert "could not check model gpt-audio-1.5: APITimeoutError" in caplog.text


async def test_an_exhausted_quota_pauses_only_until_credit_answers_and_other_429s_stay_ready(
    storage, fake, caplog
) -> None:
    """The pause an exhausted quota sets ends: once it is over, the request that OpenAI answers
    makes the bot ready again and says so. A rate limit's 429 is not mistaken for one."""
    from bot.engines.openai import create_openai_engine
    from tests.web_helpers import web_client

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    fake.failures = [Failure(status=429, code="insufficient_quota")]
    settings = openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="offline")
    engine = await create_openai_engine(settings)
    async with web_client(settings, engine=engine) as (client, core):
        spent = await core.agent.respond(ToolContext(user_id=NOVA), NOTE)
        assert (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"] is False
        engine.chat_gate.until = 0.0  # the pause's 300 s are over: credit was added meanwhile
        fake.script = [answer("You have 100 points.")]
        paid = await core.agent.respond(ToolContext(user_id=NOVA), NOTE)
        healthy = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
        fake.failures = [Failure(status=429, retry_after=60)]
        limited = await core.agent.respond(ToolContext(user_id=BLAZE), NOTE)
        still = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
    await engine.aclose()
    assert (spent.engine, paid.engine, limited.engine) == ("offline", "openai", "offline")
    assert paid.text == "You have 100 points."
    assert healthy is True and still is True
    assert any(
        "answers again" in r.getMessage() and "insufficient_quota" in r.getMessage() for r in caplog.records
    )


async def test_a_late_answer_of_a_request_out_before_an_exhausted_quota_leaves_it_spent(
    storage, fake, caplog
) -> None:
    """A 200 of a request out before OpenAI's 429 insufficient_quota came (a long generation the
    quota let in before it ran out) tells nothing of the credit now: /healthz still says not
    ready, the log does not say OpenAI answers again, and the quota stays spent (after the pause
    one request looks for credit first)."""
    from bot.engines.openai import create_openai_engine
    from tests.web_helpers import web_client

    caplog.set_level(logging.INFO, logger="bot.engines.openai")
    late_in = asyncio.Event()
    fake.script = [
        Held(late_in, answer("You have 100 points.")),
        Failure(status=429, code="insufficient_quota"),
    ]
    settings = openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="offline")
    engine = await create_openai_engine(settings)
    async with web_client(settings, engine=engine) as (client, core):
        out = asyncio.create_task(core.agent.respond(ToolContext(user_id=NOVA), NOTE))
        while not fake.chats:  # out first, so that the 429 is the other's
            assert not out.done(), out
            await asyncio.sleep(0.01)
        spent = await core.agent.respond(ToolContext(user_id=BLAZE), NOTE)
        late_in.set()
        late = await out
        health = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
        still_spent = engine.chat_gate.spent
    await engine.aclose()
    assert (late.engine, late.text, spent.engine) == ("openai", "You have 100 points.", "offline")
    assert (health, still_spent) == (False, True)
    assert not any("answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_late_answer_of_a_request_out_before_a_refused_key_leaves_it_not_ready(
    storage, fake, status
) -> None:
    """A 200 of a request out before OpenAI refused the key (401: revoked; 403: no longer allowed
    the model) tells nothing of the key now: /healthz still says not ready. A request sent after
    the refusal that succeeds makes it ready again."""
    from bot.engines.openai import create_openai_engine
    from tests.web_helpers import web_client

    late_in = asyncio.Event()
    fake.script = [
        Held(late_in, answer("You have 100 points.")),
        Failure(status=status, code="invalid_api_key", error_type="invalid_request_error"),
    ]
    settings = openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="offline")
    engine = await create_openai_engine(settings)
    async with web_client(settings, engine=engine) as (client, core):
        out = asyncio.create_task(core.agent.respond(ToolContext(user_id=NOVA), NOTE))
        while not fake.chats:  # out first, so that the refusal is the other's
            assert not out.done(), out
            await asyncio.sleep(0.01)
        refused = await core.agent.respond(ToolContext(user_id=BLAZE), NOTE)
        late_in.set()
        late = await out
        health = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
        fake.script = [answer("Hello again.")]
        after = await core.agent.respond(ToolContext(user_id=BLAZE), NOTE)
        healthy = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
    await engine.aclose()
    assert (late.engine, refused.engine, after.engine) == ("openai", "offline", "openai")
    assert (health, healthy) == (False, True)


@pytest.mark.parametrize(
    "refusal",
    [
        Failure(status=403, code="model_not_allowed", error_type="invalid_request_error"),
        Failure(status=429, code="insufficient_quota", error_type="insufficient_quota"),
    ],
    ids=["403", "insufficient_quota"],
)
async def test_a_refused_transcription_alone_leaves_healthz_ready_and_a_refused_key_does_not(
    storage, fake, refusal
) -> None:
    """The transcription feeds the history only (a turn is kept without the words) and goes with
    the chat's key: a key or a quota refused for both is told by the note's chat request, and a
    transcription refused while the chat answers (a project not allowed the transcription model)
    leaves every note answered by OpenAI, which /healthz says by staying ready."""
    from bot.engines.openai import create_openai_engine
    from tests.web_helpers import web_client

    settings = openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="offline")
    engine = await create_openai_engine(settings)
    async with web_client(settings, engine=engine) as (client, core):
        fake.transcription_failures = [refusal]
        fake.script = [answer("You have 100 points.")]
        heard_not = await core.agent.respond(ToolContext(user_id=NOVA), NOTE)
        ready = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
        fake.transcription_failures = [refusal]
        fake.failures = [refusal]  # the key or the account refused for the chat too
        refused = await core.agent.respond(ToolContext(user_id=BLAZE), NOTE)
        not_ready = (await (await client.get("/healthz")).json())["checks"]["engine"]["ok"]
    await engine.aclose()
    assert (heard_not.engine, heard_not.user_text, refused.engine) == ("openai", None, "offline")
    assert (ready, not_ready) == (True, False)


async def test_after_an_exhausted_quotas_pause_one_request_looks_for_credit(storage, fake) -> None:
    """When the pause ends, the notes that come while the first request is out do not each go to
    OpenAI for a 429 of their own: the fallback answers them until that one's outcome."""
    from bot.engines.openai import SHORT_WAIT, create_openai_engine
    from tests.web_helpers import web_client

    # The look at whether credit was added is slow to come back, so the other notes come during it.
    fake.failures = [Failure(status=429, code="insufficient_quota")]
    fake.failures += [Failure(status=429, code="insufficient_quota", hang=1)] * 3
    settings = openai_settings(storage, fake, VOXDESK_AGENT_FALLBACK="offline")
    engine = await create_openai_engine(settings)
    async with web_client(settings, engine=engine) as (_, core):
        spent = await core.agent.respond(ToolContext(user_id=NOVA), NOTE)
        engine.chat_gate.until = 0.0  # the pause's 300 s are over
        looking = asyncio.create_task(core.agent.respond(ToolContext(user_id=NOVA), NOTE))

        async def sent() -> None:
            while len(fake.chats) < 2:  # noqa: ASYNC110 - the fake records requests, with no event
                await asyncio.sleep(0.01)

        await asyncio.wait_for(sent(), 30)  # a guard, not a timing assertion
        meanwhile = await asyncio.gather(
            *(core.agent.respond(ToolContext(user_id=who), NOTE) for who in (BLAZE, QUILL))
        )
        looked = await looking
        paused_again = engine.chat_gate.wait()
    await engine.aclose()
    assert [r.engine for r in (spent, *meanwhile, looked)] == ["offline"] * 4
    assert len(fake.chats) == 2  # the first 429 and the one look: the others waited for its outcome
    assert paused_again > SHORT_WAIT  # no credit yet: paused again


@pytest.mark.parametrize("hanging", ["model lookup", "azure chat", "azure transcription"])
async def test_check_asks_each_service_once_and_briefly(storage, fake, hanging) -> None:
    """`check` answers within moments when a service hangs: with the reply's 90 s read timeout
    and two retries, one probe could outlast check's 30 s for the service, and its line said only
    "no answer" rather than which service hung."""
    from bot.engines.openai import PROBE_TIMEOUT
    from bot.health import check_engine

    azure = {
        "VOXDESK_OPENAI_PROVIDER": "azure",
        "VOXDESK_OPENAI_AZURE_ENDPOINT": fake.azure_endpoint,
        "VOXDESK_OPENAI_AZURE_DEPLOYMENT": "voxdesk-audio",
        "AZURE_OPENAI_API_KEY": AZURE_KEY,
    }
    env = {} if hanging == "model lookup" else azure
    # Answered at once, with openai.timeout_seconds at its default: each probe asks briefly, once.
    await check_engine(openai_settings(storage, fake, VOXDESK_OPENAI_TIMEOUT_SECONDS="90", **env))
    probes = [{k.lower(): v for k, v in r.headers.items()} for r in fake.received]
    assert len(probes) == 2  # the chat model and the transcription model's
    assert {p["x-stainless-read-timeout"] for p in probes} == {str(PROBE_TIMEOUT)}
    fake.received.clear()
    never = [Failure(hang=600)] * 3  # the fake stops at the test's end: "never" answers
    if hanging == "model lookup":
        fake.model_failures = never
    elif hanging == "azure chat":
        fake.failures = never
    else:
        fake.transcription_failures = never
    hung = {"model lookup": "model gpt-audio-1.5", "azure chat": "deployment voxdesk-audio"}
    named = hung.get(hanging, "deployment gpt-4o-mini-transcribe")
    with pytest.raises(RuntimeError, match=rf"did not answer within 1 s \({named}\)"):
        await check_engine(openai_settings(storage, fake, VOXDESK_OPENAI_TIMEOUT_SECONDS="1", **env))
    assert len(fake.received) == (1 if hanging != "azure transcription" else 2)  # not tried again


async def test_check_names_the_azure_deployment_that_refused_its_probe(storage, fake) -> None:
    """A transcription deployment running a chat model answers its probe 400: "answered 400"
    alone sent the studio to the chat deployment, which `check` had just found answering."""
    from bot.health import check_engine

    fake.transcription_failures = [Failure(status=400, code="OperationNotSupported")]
    settings = azure_settings(storage, fake, VOXDESK_OPENAI_TRANSCRIBE_MODEL="gpt-4o-mini-transcribe")
    with pytest.raises(RuntimeError, match=r"answered 400 \(deployment gpt-4o-mini-transcribe\)"):
        await check_engine(settings)


async def test_the_notes_base64_is_let_go_once_the_engine_has_answered(storage, fake) -> None:
    # 1.33 times the note's WAV (7.7 MB for a 120 s note): each step of a tool round sends it
    # again, but held on through the transcript's wait, the reply's encoding and the saving of
    # history, it is a second copy of every note being answered at once.
    from bot import audio
    from bot.engines.base import AudioClip, TurnState
    from bot.engines.openai import ENCODED, create_openai_engine

    settings = openai_settings(storage, fake)
    decoded = audio.decode(NOTE, settings.audio)
    clip = AudioClip(wav=decoded.wav(), seconds=decoded.seconds)
    fake.script = [tool_calls(("get_player_stats", {})), answer("Done.")]
    engine = await create_openai_engine(settings, verify=False)
    try:
        turn = TurnState(ToolContext(user_id=NOVA), clip, None, [], [])
        step = await engine.complete(turn)
        assert step.tool_calls and ENCODED in turn.scratch  # the next step sends it again
        turn.allow_tools = False
        final = await engine.complete(turn)
    finally:
        await engine.aclose()
    assert final.text == "Done."
    assert ENCODED not in turn.scratch


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("Café support. Be brief.\n".encode("cp1252"), None),  # Notepad's "ANSI"
        ("Be brief.\n".encode("utf-16"), None),  # PowerShell 5's `>`
        (b"\xef\xbb\xbfBe brief.\r\n", "Be brief."),  # Notepad's UTF-8, with a byte-order mark
    ],
)
async def test_a_system_prompt_file_not_in_utf8_is_one_line_naming_the_setting(
    storage, fake, tmp_path: Path, written: bytes, read: str | None
) -> None:
    # A prompt saved on Windows stopped `run` and `ask` with a UnicodeDecodeError's traceback, and
    # `check` said "'utf-8' codec can't decode byte 0xe9", naming neither the file nor the setting.
    from bot.config import ConfigError
    from bot.engines.openai import create_openai_engine

    prompt = tmp_path / "prompt.md"
    prompt.write_bytes(written)
    settings = openai_settings(storage, fake, VOXDESK_AGENT_SYSTEM_PROMPT_FILE=str(prompt))
    if read is None:
        with pytest.raises(ConfigError) as caught:
            await create_openai_engine(settings, verify=False)
        assert str(caught.value) == (
            f"agent.system_prompt_file = {prompt} is not UTF-8 text: save it as UTF-8"
            "; set by VOXDESK_AGENT_SYSTEM_PROMPT_FILE (the environment or .env)"
        )
        return
    engine = await create_openai_engine(settings, verify=False)
    try:
        assert engine.system_prompt == read
    finally:
        await engine.aclose()


async def test_a_playground_visitor_is_one_name_to_openai_whatever_their_sessions(storage, fake) -> None:
    # A visitor shares the demo player with everyone, so the player is no one's name; nor is the
    # browser session, which a dropped cookie starts afresh and would have abuse monitoring see a
    # new person each time. The visitor's address (the key their budget and complaints go by) is.
    from aiohttp.test_utils import TestClient, TestServer

    from tests.web_helpers import STAFF_HASH, csrf_of, web_client

    named = openai_settings(
        storage,
        fake,
        VOXDESK_OPENAI_SAFETY_IDENTIFIER="on",
        VOXDESK_WEB_STAFF_PASSWORD_HASH=STAFF_HASH,
        VOXDESK_WEB_TRUST_FORWARDED="true",
    )
    form = {"player": NOVA}

    async def asked(client: TestClient, address: str) -> None:
        data = aiohttp.FormData(form)
        data.add_field("audio", NOTE, filename="note.ogg", content_type="audio/ogg")
        headers = {"X-CSRF-Token": await csrf_of(client), "X-Forwarded-For": address}
        assert (await client.post("/playground/ask", data=data, headers=headers)).status == 200

    async with running_app(named) as app, web_client(named, core=app) as (client, _):
        other_browser = TestClient(TestServer(client.app))
        async with other_browser:
            await asked(client, "198.51.100.7")
            await asked(other_browser, "198.51.100.7")
            await asked(other_browser, "203.0.113.9")
    first, again, elsewhere = (c.body.get("safety_identifier") for c in fake.chats)
    assert first == again != elsewhere and first and elsewhere
