"""The fakes refuse what the real services refuse, say why, and make the test fail with that
reason at once, not after a timeout. Each test sends a request the real service would refuse."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import threading
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import discord
import pytest
from aiohttp import web

from tests.audio_samples import encode, speechlike
from tests.discord_harness import blaze, nova, running_bot, voice_note
from tests.fakes import discord_server, openai_server, openapi, search_server
from tests.fakes.discord_server import (
    ALLOWED_CHANNEL,
    ATTACH_FILES,
    BOT_USER_ID,
    EPHEMERAL_FLAG,
    MANAGE_THREADS,
    OTHER_CHANNEL,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    TOKEN,
    VOICE_FLAG,
    FakeDiscord,
    dm_channel_id,
)
from tests.fakes.openapi import component_errors, request_errors, response_errors
from tests.fakes.strict import FakeRefused

OPENAI = "openai-openapi.json"
DISCORD = "discord-openapi.json"
CHAT = {
    "model": "gpt-audio-1.5",
    "messages": [{"role": "user", "content": "hi"}],
    "modalities": ["text", "audio"],  # an audio model refuses a request without audio
    "audio": {"voice": "alloy", "format": "wav"},
}
MESSAGES = "/channels/{channel_id}/messages"


def chat_errors(**changes: Any) -> list[str]:
    return component_errors(OPENAI, "CreateChatCompletionRequest", {**CHAT, **changes})


def message_errors(body: dict[str, Any]) -> list[str]:
    return request_errors(DISCORD, MESSAGES, "post", "application/json", body)


# ---- closed schemas -------------------------------------------------------------------------


async def test_two_users_get_two_dm_channels_whatever_their_ids() -> None:
    first, second = 111111111111111111, 1111111111111111111  # equal modulo 10**9
    async with discord_server.serving() as fake:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bot {discord_server.TOKEN}"}) as http:
            opened = []
            for user in (first, second):
                async with http.post(
                    f"{fake.api_base}/users/@me/channels", json={"recipient_id": str(user)}
                ) as r:
                    opened.append((await r.json())["id"])
    assert opened[0] != opened[1]
    assert opened == [str(discord_server.dm_channel_id(first)), str(discord_server.dm_channel_id(second))]


def test_unknown_fields_are_refused_at_every_level() -> None:
    assert chat_errors(temperature=0.5, modalities=["text", "audio"]) == []  # both halves of an allOf
    assert chat_errors(foo=1) == ["<body>: Unevaluated properties are not allowed ('foo' was unexpected)"]
    assert chat_errors(messages=[{"role": "user", "content": "hi", "foo": 1}]) == [
        "messages/0: Unevaluated properties are not allowed ('foo' was unexpected)"
    ]
    assert chat_errors(audio={"voice": "alloy", "format": "opus", "speed": 2}) == [
        "audio: Unevaluated properties are not allowed ('speed' was unexpected)"
    ]
    assert message_errors({"content": "x", "spoiler": True}) == [
        "<body>: Unevaluated properties are not allowed ('spoiler' was unexpected)"
    ]


def test_free_form_objects_stay_open() -> None:
    # A function's parameters are a JSON Schema of the caller's own: any property goes.
    parameters = {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": False}
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    assert chat_errors(tools=[tool], metadata={"anything": "goes"}) == []
    renamed = {**tool, "function": {**tool["function"], "strictly": True}}
    assert chat_errors(tools=[renamed]) == [
        "tools/0/function: Unevaluated properties are not allowed ('strictly' was unexpected)"
    ]


def test_openapi_3_0_nullable_allows_null_and_only_there() -> None:
    assert chat_errors(max_completion_tokens=None, frequency_penalty=None) == []  # `nullable: true`
    assert chat_errors(max_completion_tokens=10) == []
    assert chat_errors(model=None) == ["model: None is not valid under any of the given schemas"]
    assert chat_errors(messages=None) == ["messages: None is not of type 'array'"]


# ---- OpenAI ---------------------------------------------------------------------------------


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "get_player_stats", "arguments": "{}"}}


async def chat_error(fake: openai_server.FakeOpenAI, messages: list[dict[str, Any]]) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {openai_server.API_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.base_url}/chat/completions", json={**CHAT, "messages": messages}, headers=headers
        ) as response,
    ):
        return response.status, (await response.json()).get("error", {})


async def chat(fake: openai_server.FakeOpenAI, messages: list[dict[str, Any]]) -> tuple[int, str]:
    status, error = await chat_error(fake, messages)
    return status, error.get("message", "")


async def test_a_tool_result_must_answer_a_call_just_made() -> None:
    user = {"role": "user", "content": "how many points"}
    asked = {"role": "assistant", "content": None, "tool_calls": [call("call_a"), call("call_b")]}
    result_a = {"role": "tool", "tool_call_id": "call_a", "content": "{}"}
    result_b = {"role": "tool", "tool_call_id": "call_b", "content": "{}"}
    async with openai_server.serving() as fake:
        fake.expect_violations()
        assert (await chat(fake, [user, asked, result_a, result_b]))[0] == 200
        assert fake.violations == []
        status, message = await chat(fake, [user, result_a])  # no call before it
        assert status == 400 and "must be a response to a preceding message with 'tool_calls'" in message
        status, message = await chat(fake, [user, asked, result_a, result_a, result_b])  # a twice
        assert status == 400 and "no open call 'call_a'" in message
        status, message = await chat(fake, [user, asked, result_a, user])  # call_b never answered
        assert status == 400 and "not answered: call_b" in message
        assert len(fake.violations) == 3


def note(data: bytes | str, fmt: str) -> list[dict[str, Any]]:
    encoded = data if isinstance(data, str) else base64.b64encode(data).decode()
    part = {"type": "input_audio", "input_audio": {"data": encoded, "format": fmt}}
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": [part]}]


async def test_a_notes_audio_must_be_strict_base64_of_the_format_it_declares() -> None:
    wav, mp3 = encode(speechlike(0.5), 16_000, "wav"), encode(speechlike(0.5), 16_000, "mp3")
    tag_size = int.from_bytes(bytes(b & 0x7F for b in mp3[6:10]))  # ID3's syncsafe size
    bare_mp3 = mp3[10 + tag_size :]  # no tag: it starts with a frame sync
    async with openai_server.serving() as fake:
        fake.expect_violations()
        for data, fmt in [(wav, "wav"), (mp3, "mp3"), (bare_mp3, "mp3")]:
            assert (await chat(fake, note(data, fmt)))[0] == 200
        assert fake.violations == []
        refused = [
            (wav[44:], "wav", "not valid wav"),  # raw PCM labelled wav
            (mp3, "wav", "not valid wav"),
            (wav, "mp3", "not valid mp3"),
            (base64.b64encode(wav).decode() + "*", "wav", "Invalid base64"),
            (base64.b64encode(wav).decode().replace("+", "-"), "wav", "Invalid base64"),  # base64url
        ]
        for data, fmt, reason in refused:
            status, error = await chat_error(fake, note(data, fmt))
            assert (status, error["type"], error["param"]) == (
                400,
                "invalid_request_error",
                "messages[1].content[0].input_audio",
            )
            assert reason in error["message"]
            assert fake.violations[-1] == f"messages[1].content[0].input_audio: {error['message']}"
        assert len(fake.violations) == len(refused)


async def test_the_fake_answers_other_requests_while_it_checks_a_chat_request(monkeypatch) -> None:
    """Checking a request against the spec takes a while on a long note: on the event loop, which
    the test's own clients share, it would hold their timers and their other requests. A check
    held until the fake has answered another request lets go only if it runs off the loop; on it,
    nothing could answer, and only its wait running out would end it."""
    checking, let_go = threading.Event(), threading.Event()
    released: list[bool] = []
    check = openai_server.component_errors

    def held(*args: Any) -> list[str]:
        checking.set()
        released.append(let_go.wait(10))  # a guard against hanging the test, not a measure
        return check(*args)

    monkeypatch.setattr(openai_server, "component_errors", held)
    headers = {"Authorization": f"Bearer {openai_server.API_KEY}"}
    async with openai_server.serving() as fake, aiohttp.ClientSession() as session:
        asking = asyncio.create_task(chat(fake, note(encode(speechlike(0.5), 16_000, "wav"), "wav")))
        await asyncio.to_thread(checking.wait, 10)
        async with session.get(f"{fake.base_url}/models", headers=headers) as listed:
            answered = listed.status
        let_go.set()
        assert await asking == (200, "")
    assert (answered, released) == (200, [True])


def test_a_refusal_of_a_large_body_names_its_fault_not_the_whole_body() -> None:
    """A reason quoting a 30 MB note whole would be no reason to read, and building the copies
    of it (one for each alternative a oneOf tried) took the check seconds."""
    audio = {"type": "input_audio", "input_audio": {"data": "UklG" * 1_000_000, "format": "ogg"}}
    errors = chat_errors(messages=[{"role": "user", "content": [audio]}])
    assert errors and errors[0].startswith("messages/0/content/0/input_audio/format: 'ogg'")
    assert max(map(len, errors)) < 2000, [e[:200] for e in errors]
    # What every alternative tried builds its message from: the string in brief.
    (shown,) = openapi._briefly_shown([audio["input_audio"]["data"]])
    assert repr(shown) == "<4000000 characters: 'UklGUklGUklGUklGUklGUklGUklGUklGUklGUklG'…>"


# ---- Discord --------------------------------------------------------------------------------


async def discord_post(
    fake: FakeDiscord, path: str, body: dict[str, Any], audio: bytes | None = None, part: str = "files[0]"
) -> Any:
    headers = {"Authorization": f"Bot {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        if audio is None:
            request = session.post(f"{fake.api_base}{path}", json=body, headers=headers)
        else:
            form = aiohttp.FormData()
            form.add_field("payload_json", json.dumps(body), content_type="application/json")
            form.add_field(part, audio, filename="voice-message.ogg", content_type="audio/ogg")
            request = session.post(f"{fake.api_base}{path}", data=form, headers=headers)
        async with request as response:
            return await response.json()


@pytest.fixture
async def refusing_discord():
    async with discord_server.serving() as fake:
        fake.expect_violations()
        yield fake


async def test_azure_serves_only_the_documented_api_versions() -> None:
    """Azure answers an api-version it does not serve, or none, with a bare 404 (no deployment
    named); the bot's default is one it serves."""
    from bot.config import OpenAISettings

    assert OpenAISettings().api_version in openai_server.AZURE_API_VERSIONS
    async with openai_server.serving() as fake, aiohttp.ClientSession() as http:
        url = f"{fake.azure_endpoint}/openai/deployments/voxdesk-audio/chat/completions"
        headers = {"api-key": openai_server.AZURE_KEY}
        for query in ({"api-version": "2024-13-01-preview"}, {}):
            async with http.post(url, params=query, headers=headers, json={}) as response:
                assert response.status == 404, query
                assert await response.json() == {"error": {"code": "404", "message": "Resource not found"}}
        version = {"api-version": OpenAISettings().api_version}
        async with http.get(
            f"{fake.azure_endpoint}/openai/models", params=version, headers=headers
        ) as response:
            assert response.status == 200


async def test_azure_refuses_fields_its_api_version_does_not_document() -> None:
    """OpenAI's spec knows fields Azure's api-version does not (a top-level safety_identifier, an
    earlier reply named by its audio id): Azure's 400 names them, and the fake records the refusal;
    `model`, which the SDK always sends and no Azure schema lists, is taken."""
    from bot.engines.openai import SILENCE

    async with openai_server.serving() as fake, aiohttp.ClientSession() as http:
        fake.expect_violations()
        url = f"{fake.azure_endpoint}/openai/deployments/voxdesk-audio/chat/completions"
        headers = {"api-key": openai_server.AZURE_KEY}
        version = {"api-version": "2025-01-01-preview"}
        note = {"type": "input_audio", "input_audio": {"data": SILENCE, "format": "wav"}}
        body = {
            "model": "voxdesk-audio",
            "modalities": ["text"],
            "max_completion_tokens": 16,
            "messages": [{"role": "user", "content": [note]}],
        }
        async with http.post(url, params=version, headers=headers, json=body) as response:
            assert response.status == 200, await response.text()
            answered = await response.json()
        # As Azure answers: its content filter's verdicts on the prompt and the answer with it.
        assert (
            answered["prompt_filter_results"][0]["content_filter_results"]["jailbreak"]["filtered"] is False
        )
        assert answered["choices"][0]["content_filter_results"]["violence"]["filtered"] is False
        refused = [
            ({**body, "safety_identifier": "voxdesk-1"}, "supplied: safety_identifier "),
            (
                {
                    **body,
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "audio": {"id": "audio_1"}},
                        {"role": "user", "content": [note]},
                    ],
                },
                "supplied: messages[1].audio ",
            ),
        ]
        for sent, named in refused:
            async with http.post(url, params=version, headers=headers, json=sent) as response:
                assert response.status == 400
                error = (await response.json())["error"]
            assert named in error["message"] and error["code"] is None
        assert len(fake.violations) == 2
        transcribe = f"{fake.azure_endpoint}/openai/deployments/gpt-4o-mini-transcribe/audio/transcriptions"
        form = aiohttp.FormData({"model": "gpt-4o-mini-transcribe", "chunking_strategy": "auto"})
        form.add_field("file", base64.b64decode(SILENCE), filename="n.wav")
        async with http.post(transcribe, params=version, headers=headers, data=form) as response:
            assert response.status == 400
            assert "supplied: chunking_strategy " in (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    ("mentions", "reason"),
    [
        ({"parse": ["users"], "users": ["1"]}, "parse:['users'] and users: [ids] are mutually exclusive"),
        ({"parse": ["roles"], "roles": ["1"]}, "parse:['roles'] and roles: [ids] are mutually exclusive"),
        ({"parse": ["channels"]}, "'channels' is not valid"),
        ({"users": [str(n) for n in range(1, 102)]}, "is too long"),
        ({"replied_user": "yes"}, "'yes' is not of type 'boolean', 'null'"),
        ({"parse": [], "everyone": True}, "('everyone' was unexpected)"),
    ],
)
async def test_allowed_mentions_are_checked(
    refusing_discord: FakeDiscord, mentions: dict, reason: str
) -> None:
    fake = refusing_discord
    answer = await discord_post(
        fake, f"/channels/{ALLOWED_CHANNEL}/messages", {"content": "hi", "allowed_mentions": mentions}
    )
    assert answer["code"] == 50035 and reason in answer["message"]
    (violation,) = fake.violations
    assert reason in violation
    ok = {"parse": ["everyone"], "users": ["1"], "roles": [], "replied_user": False}
    assert "id" in await discord_post(
        fake, f"/channels/{ALLOWED_CHANNEL}/messages", {"content": "hi", "allowed_mentions": ok}
    )


async def test_an_interactions_webhook_is_there_after_its_first_response_for_15_minutes() -> None:
    async with discord_server.serving() as fake:
        fake.expect_refusals()
        fresh = await fake.slash(nova, "forget")
        stale = await fake.slash(nova, "forget", ago=15 * 60 + 5)  # its token has run out
        app = discord_server.APPLICATION_ID

        async def call(method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
            async with (
                aiohttp.ClientSession() as session,
                session.request(method, f"{fake.api_base}{path}", json=body) as response,
            ):
                return response.status, await response.json()

        def webhook(interaction: str, application: int = app) -> str:
            return f"/webhooks/{application}/interaction-token-{interaction}"

        def callback(interaction: str) -> str:
            return f"/interactions/{interaction}/interaction-token-{interaction}/callback"

        said = {"content": "hi", "flags": EPHEMERAL_FLAG}
        status, answer = await call("POST", webhook(fresh), said)  # nothing answered yet
        assert (status, answer["code"]) == (404, 10015)
        status, answer = await call("PATCH", webhook(fresh) + "/messages/@original", said)
        assert (status, answer["code"]) == (404, 10015)
        for interaction in (fresh, stale):
            status, _ = await call(
                "POST", callback(interaction), {"type": 5, "data": {"flags": EPHEMERAL_FLAG}}
            )
            assert status == 200  # the fake does not time first responses unless told to
        assert (await call("POST", webhook(fresh), said))[0] == 200
        assert (await call("PATCH", webhook(fresh) + "/messages/@original", said))[0] == 200
        assert (await call("POST", webhook(fresh, application=app + 1), said))[1]["code"] == 10015
        unknown = str(int(fresh) + 1)
        assert (await call("POST", callback(unknown), {"type": 5}))[1]["code"] == 10062
        status, answer = await call("POST", webhook(stale), said)
        assert (status, answer["code"]) == (401, 50027)
        status, answer = await call("GET", webhook(stale) + "/messages/@original")
        assert (status, answer["code"]) == (401, 50027)
        assert len(fake.refused) == 6


async def test_only_settable_flags_are_taken(refusing_discord: FakeDiscord) -> None:
    fake = refusing_discord
    channel = f"/channels/{ALLOWED_CHANNEL}/messages"
    refused = await discord_post(fake, channel, {"content": "secret", "flags": EPHEMERAL_FLAG})
    assert refused["code"] == 50035 and "flags: 64 sets 64, not settable here" in refused["message"]
    assert "id" in await discord_post(fake, channel, {"content": "quiet", "flags": (1 << 12) | (1 << 2)})
    callback = "/interactions/{0}/interaction-token-{0}/callback"
    first, second = await fake.slash(nova, "forget"), await fake.slash(nova, "forget")
    answered = await discord_post(
        fake, callback.format(first), {"type": 4, "data": {"content": "only you", "flags": EPHEMERAL_FLAG}}
    )
    assert answered["interaction"]["response_message_ephemeral"]
    deferred = await discord_post(fake, callback.format(second), {"type": 5, "data": {"flags": 1 << 2}})
    assert deferred["code"] == 50035 and "data.flags: 4 sets 4" in deferred["message"]
    followup = f"/webhooks/{discord_server.APPLICATION_ID}/interaction-token-{first}"
    crossposted = await discord_post(fake, followup, {"content": "x", "flags": 1})
    assert crossposted["code"] == 50035
    assert len(fake.violations) == 3


async def test_an_attachment_names_its_upload_by_the_part_not_the_order(
    refusing_discord: FakeDiscord,
) -> None:
    """attachments[].id is the n of the files[n] part it describes: a lone upload sent as files[1]
    is no attachment 0, whatever the order of the parts."""
    fake = refusing_discord
    channel = f"/channels/{ALLOWED_CHANNEL}/messages"
    body = {"content": "your reply", "attachments": [{"id": "0", "filename": "reply.ogg"}]}
    refused = await discord_post(fake, channel, body, voice_note(), part="files[1]")
    assert refused["code"] == 50035 and "no uploaded files[0]" in refused["message"]
    assert "id" in await discord_post(fake, channel, body, voice_note(), part="files[0]")
    assert len(fake.violations) == 1


async def test_a_voice_message_declares_the_duration_of_its_audio(refusing_discord: FakeDiscord) -> None:
    fake = refusing_discord
    note = voice_note(1.5)  # with half a second of silence either side: 2.5 s

    def body(seconds: float) -> dict[str, Any]:
        attachment = {
            "id": "0",
            "filename": "voice-message.ogg",
            "duration_secs": seconds,
            "waveform": "AAAA",
        }
        return {"flags": VOICE_FLAG, "attachments": [attachment]}

    path = f"/channels/{ALLOWED_CHANNEL}/messages"
    assert "id" in await discord_post(fake, path, body(2.5), note)
    assert "id" in await discord_post(fake, path, body(3.3), note)  # within a second
    refused = await discord_post(fake, path, body(30.0), note)
    assert refused["code"] == 50035
    assert "duration_secs: 30.0 s, but the audio lasts 2.50 s" in refused["message"]
    assert len(fake.violations) == 1


# ---- Discord: history, DMs, deletions, sessions ---------------------------------------------


async def test_archived_threads_are_listed_newest_archive_first_in_pages_as_discord_does(settings) -> None:
    async with discord_server.serving() as fake:
        fake.bot_permissions |= MANAGE_THREADS  # a thread moderator: all private archived threads
        threads = [await fake.add_thread(OTHER_CHANNEL, f"case {i}", tell_the_bot=False) for i in range(105)]
        for i, thread in enumerate(threads):  # archived in the reverse order of their making
            await fake.archive_thread(thread, ago=1000 - i)
        secret = await fake.add_thread(OTHER_CHANNEL, "private", private=True, tell_the_bot=False)
        await fake.archive_thread(secret, ago=5000)
        active = await fake.add_thread(OTHER_CHANNEL, "still open", tell_the_bot=False)
        async with running_bot(settings, fake) as h:
            channel = h.bot.get_channel(OTHER_CHANNEL)
            assert isinstance(channel, discord.TextChannel)
            listed = [t async for t in channel.archived_threads(limit=None)]
            assert [t.id for t in listed] == threads[::-1]  # across two pages of 100
            assert all(t.archived and t.parent_id == OTHER_CHANNEL for t in listed)
            assert [t.id async for t in channel.archived_threads(private=True)] == [secret]
            middle = listed[50].archive_timestamp
            older = [t.id async for t in channel.archived_threads(before=middle, limit=None)]
            assert older == threads[53::-1]  # archived before it, not itself
            assert active not in [t.id for t in listed]
        # The bot's own catch-up lists the channel it answers in meanwhile: not these pages.
        pages = [r for r in fake.received if r.kind == "archived_threads" and r.channel_id == OTHER_CHANNEL]
        assert [len(r.response["threads"]) for r in pages[:2]] == [100, 5]
        assert [r.response["has_more"] for r in pages[:2]] == [True, False]
        served = fake.archived_threads_payload(OTHER_CHANNEL, "public", None, 2)
        assert component_errors(DISCORD, "ThreadsResponse", served) == []


async def test_joined_private_archived_threads_are_listed_by_id_in_pages_as_discord_does(settings) -> None:
    async with discord_server.serving() as fake:
        joined = [
            await fake.add_thread(OTHER_CHANNEL, f"case {i}", private=True, joined=True, tell_the_bot=False)
            for i in range(103)
        ]
        for i, thread in enumerate(joined):  # archived in the order of their making: newest id last
            await fake.archive_thread(thread, ago=1000 - i)
        await fake.archive_thread(joined[0], ago=1)  # archived last, made first: listed last all the same
        not_joined = await fake.add_thread(OTHER_CHANNEL, "staff only", private=True, tell_the_bot=False)
        public = await fake.add_thread(OTHER_CHANNEL, "open", joined=True, tell_the_bot=False)
        mentioned = await fake.add_thread(OTHER_CHANNEL, "help me", private=True, tell_the_bot=False)
        await fake.send_message(nova, channel_id=mentioned, guild=True, content="help", mention_bot=True)
        for thread in (not_joined, public, mentioned):
            await fake.archive_thread(thread, ago=2000)
        await fake.deny(OTHER_CHANNEL, MANAGE_THREADS, tell_the_bot=False)  # not needed here
        async with running_bot(settings, fake) as h:
            channel = h.bot.get_channel(OTHER_CHANNEL)
            assert isinstance(channel, discord.TextChannel)
            listed = [t.id async for t in channel.archived_threads(private=True, joined=True, limit=None)]
            assert listed == [mentioned, *joined[::-1]]  # newest id first, across two pages of 100
            middle = discord.Object(joined[50])
            below = [t.id async for t in channel.archived_threads(private=True, joined=True, before=middle)]
            assert below == joined[49::-1]  # made before it, not itself
            mine = [
                r
                for r in fake.received
                if r.kind == "archived_threads" and "/users/@me/" in r.path and r.channel_id == OTHER_CHANNEL
            ]
            pages = [(len(r.response["threads"]), r.response["has_more"]) for r in mine[:2]]
            assert pages == [(100, True), (4, False)]
            assert mine[1].body["before"] == str(joined[4])  # the last id of the first page
            assert mine[2].body["before"] == str(joined[50])
            await fake.deny(OTHER_CHANNEL, READ_MESSAGE_HISTORY)
            fake.expect_refusals()
            with pytest.raises(discord.Forbidden) as missing:
                await channel.archived_threads(private=True, joined=True).__anext__()
            assert missing.value.code == 50013
        assert fake.refused == [
            f"GET joined private archived threads in channel {OTHER_CHANNEL} without permission 0x10000"
        ]
        served = fake.joined_archived_threads_payload(OTHER_CHANNEL, None, 2)
        assert component_errors(DISCORD, "ThreadsResponse", served) == []
        assert [m["id"] for m in served["members"]] == [str(mentioned), str(joined[-1])]


def test_the_fake_bot_has_what_the_documented_invite_grants() -> None:
    # Not Manage Threads: what the bot sees of private threads follows from it.
    invite = (Path(__file__).parents[1] / "docs" / "discord.md").read_text()
    assert f"&permissions={discord_server.INVITE_PERMISSIONS}\n" in invite
    assert not discord_server.INVITE_PERMISSIONS & MANAGE_THREADS


async def test_a_private_thread_shows_only_to_its_members_and_thread_moderators(settings) -> None:
    # "Private threads are only synced to you if you are a member or a moderator" (Discord's
    # threads topic): the bot, invited without Manage Threads, is not told of one it is not in,
    # at start-up, by event, or by the active-threads listing, and reading it is Missing Access.
    async with discord_server.serving() as fake:
        public = await fake.add_thread(OTHER_CHANNEL, "open", tell_the_bot=False)
        joined = await fake.add_thread(OTHER_CHANNEL, "mine", private=True, joined=True, tell_the_bot=False)
        unseen = await fake.add_thread(OTHER_CHANNEL, "staff only", private=True, tell_the_bot=False)
        async with running_bot(settings, fake) as h:
            guild = h.bot.get_guild(discord_server.GUILD_ID)
            assert guild is not None
            assert {t.id for t in guild.threads} == {public, joined}  # GUILD_CREATE's threads
            assert guild.get_thread(joined).me is not None and guild.get_thread(public).me is None
            listed = await guild.active_threads()
            assert {t.id for t in listed} == {public, joined}
            assert [t.id for t in listed if t.members] == [joined]  # its member object, the bot's
            later = await fake.add_thread(OTHER_CHANNEL, "also staff", private=True)  # no THREAD_CREATE
            heard: list[int] = []

            async def hear(message: discord.Message) -> None:
                heard.append(message.channel.id)

            h.bot.add_listener(hear, "on_message")
            for place in (unseen, later, public):
                await fake.send_message(nova, channel_id=place, guild=True, content="anyone?")
            await fake.wait_for(lambda _: public in heard)  # one socket: the others would be first
            assert heard == [public] and guild.get_thread(later) is None
            fake.expect_refusals()
            with pytest.raises(discord.Forbidden) as hidden:
                await h.bot.fetch_channel(unseen)
            assert hidden.value.code == 50001
            assert fake.refused == [f"GET /api/v10/channels/{unseen}: a private thread the bot is not in"]
            # Mentioning the bot adds it: THREAD_CREATE (with its thread member), then the message.
            joined_event = asyncio.create_task(h.bot.wait_for("thread_join", timeout=30))
            await fake.send_message(nova, channel_id=unseen, guild=True, content="help", mention_bot=True)
            assert (await joined_event).id == unseen
            await fake.wait_for(lambda _: heard.count(unseen) == 1)
            thread = guild.get_thread(unseen)
            assert thread is not None and thread.me is not None
            assert (await h.bot.fetch_channel(unseen)).id == unseen
        served = fake.thread_payload(unseen, member=True)
        assert component_errors(DISCORD, "ThreadResponse", served) == []


async def test_a_thread_moderator_sees_every_private_thread_and_joins_one_by_posting(settings) -> None:
    async with discord_server.serving() as fake:
        fake.bot_permissions |= MANAGE_THREADS
        staff = await fake.add_thread(OTHER_CHANNEL, "staff only", private=True, tell_the_bot=False)
        async with running_bot(settings, fake) as h:
            guild = h.bot.get_guild(discord_server.GUILD_ID)
            assert guild is not None
            thread = guild.get_thread(staff)
            assert thread is not None and thread.me is None  # seen, not a member
            joined_event = asyncio.create_task(h.bot.wait_for("thread_join", timeout=30))
            await thread.send("Looking into it.")  # "You can join a thread by sending a message in it"
            assert (await joined_event).id == staff
            assert BOT_USER_ID in fake.threads[staff]["members"]
            # A moderator who loses Manage Threads keeps the private threads it is a member of.
            await fake.deny(OTHER_CHANNEL, MANAGE_THREADS)
            assert fake.bot_sees(staff)
            hidden = await fake.add_thread(OTHER_CHANNEL, "staff again", private=True)
            assert not fake.bot_sees(hidden)


async def test_the_joined_listing_takes_a_thread_id_before_not_a_timestamp(refusing_discord) -> None:
    fake = refusing_discord
    headers = {"Authorization": f"Bot {TOKEN}"}
    url = f"{fake.api_base}/channels/{ALLOWED_CHANNEL}/users/@me/threads/archived/private"
    async with aiohttp.ClientSession(headers=headers) as session:
        for query, status in (
            ({"before": "2026-12-06T00:00:00+00:00"}, 400),
            ({"before": "1", "limit": "1"}, 400),
            ({"before": "920000000000000001", "limit": "2"}, 200),
        ):
            async with session.get(url, params=query) as response:
                assert response.status == status, query
    assert len(fake.violations) == 2 and "is not snowflake" in fake.violations[0]


async def test_a_thread_member_is_served_as_the_spec_says_while_they_are_one(refusing_discord) -> None:
    # "Get Thread Member": the member object while the player is in the thread (posting joins it),
    # 404 Unknown Member once a moderator removed them; a channel that is no thread is refused.
    fake = refusing_discord
    thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", private=True, joined=True)
    await fake.send_message(nova, channel_id=thread, guild=True, content="hi")
    headers = {"Authorization": f"Bot {TOKEN}"}
    url = f"{fake.api_base}/channels/{thread}/thread-members/{nova.id}"
    async with aiohttp.ClientSession(headers=headers) as session:
        for query in ({}, {"with_member": "true"}):
            async with session.get(url, params=query) as response:
                assert response.status == 200
                served = await response.json()
            assert component_errors(DISCORD, "ThreadMemberResponse", served) == []
            assert served["user_id"] == str(nova.id) and ("member" in served) == bool(query)
        fake.remove_player_from_thread(thread, nova.id)
        async with session.get(url) as response:
            assert (response.status, (await response.json())["code"]) == (404, 10007)
        assert fake.violations == [] and fake.refused == []
        fake.expect_refusals()
        async with session.get(
            f"{fake.api_base}/channels/{ALLOWED_CHANNEL}/thread-members/{nova.id}"
        ) as response:
            assert response.status == 400
    assert [r.error for r in fake.received if r.kind == "get_thread_member"] == [None, None, 10007, 50024]


async def test_a_guild_member_is_served_with_every_field_the_spec_requires(settings) -> None:
    # GET /guilds/{id}/members/{user}, GUILD_CREATE's members, GUILD_MEMBER_UPDATE and the thread
    # member THREAD_MEMBERS_UPDATE adds: each a GuildMemberResponse, as the thread-member answer is.
    async with discord_server.serving() as fake:
        thread = await fake.add_thread(ALLOWED_CHANNEL, "my account", tell_the_bot=False)
        path = f"/guilds/{discord_server.GUILD_ID}/members/{nova.id}"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as session:
            async with session.get(f"{fake.api_base}{path}") as response:
                served = await response.json()
        assert response_errors(DISCORD, path, "GET", 200, "application/json", served) == []
        assert served["communication_disabled_until"] is None  # the bot's timeout is not the player's
        async with running_bot(settings, fake) as h:
            joined = asyncio.create_task(h.bot.wait_for("thread_join", timeout=30))
            await fake.add_to_thread(thread)
            assert (await joined).id == thread
            await fake.time_out_the_bot(60)
            await fake.read_by_the_bot()
            assert h.bot.get_guild(discord_server.GUILD_ID).me.timed_out_until is not None
        assert fake.off_spec_answers == ()


async def test_an_answer_off_the_spec_fails_the_test_whatever_it_expects(monkeypatch) -> None:
    # The fake's fault, not the bot's: expect_violations() does not excuse it.
    async def application(self: FakeDiscord, request: web.Request) -> web.Response:
        return web.json_response({"id": str(discord_server.APPLICATION_ID), "name": "voxdesk"})

    monkeypatch.setattr(FakeDiscord, "_application", application)
    with pytest.raises(FakeRefused, match=r"answered off spec: GET /api/v10/oauth2/applications/@me 200: "):
        async with discord_server.serving() as fake:
            fake.expect_violations()
            async with aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as session:
                async with session.get(f"{fake.api_base}/oauth2/applications/@me") as response:
                    assert response.status == 200

    async def models(self: openai_server.FakeOpenAI, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "gpt-audio-1.5"}]})

    monkeypatch.setattr(openai_server.FakeOpenAI, "_models", models)
    with pytest.raises(FakeRefused, match=r"answered off spec: GET /v1/models 200: data/0: 'object'"):
        async with openai_server.serving() as openai:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{openai.base_url}/models") as response:
                    assert response.status == 200


async def test_history_pages_newest_first_and_discord_py_reads_it_all(settings) -> None:
    async with discord_server.serving() as fake:
        # Chatter in a channel the bot does not answer, posted before it starts: kept, not sent.
        posted = [
            await fake.send_message(blaze, channel_id=OTHER_CHANNEL, guild=True, content=f"gg {i}")
            for i in range(150)
        ]
        ids = [int(m["id"]) for m in posted]
        async with running_bot(settings, fake) as h:
            channel = h.bot.get_channel(OTHER_CHANNEL)
            assert isinstance(channel, discord.TextChannel)
            after_first = [m.id async for m in channel.history(after=discord.Object(ids[0]), limit=None)]
            assert after_first == ids[1:]  # oldest first across two pages of 100
            # The bot's own catch-up reads the channels it answers meanwhile: not these pages.
            mine = [r for r in fake.received if r.kind == "history" and r.channel_id == OTHER_CHANNEL]
            pages = [r for r in mine if "after" in r.body]
            assert [len(r.response["messages"]) for r in pages] == [100, 49]
            assert [m.id async for m in channel.history(limit=None)] == ids[::-1]
            assert [m.id async for m in channel.history(before=discord.Object(ids[10]))] == ids[9::-1]
            around = [m.id async for m in channel.history(around=discord.Object(ids[75]), limit=11)]
            assert sorted(around) == ids[70:81]
            assert (await channel.fetch_message(ids[3])).content == "gg 3"
            await fake.delete_message(OTHER_CHANNEL, ids[3])
            with pytest.raises(discord.NotFound) as gone:
                await channel.fetch_message(ids[3])
            assert gone.value.code == 10008
            assert ids[3] not in [m.id async for m in channel.history(limit=10, after=discord.Object(ids[0]))]
        # The bot's client was never given the chatter: it only read it back.
        assert not [r for r in fake.received if r.kind == "message"]


async def test_history_limit_is_1_to_100_and_anchors_are_exclusive(refusing_discord: FakeDiscord) -> None:
    fake = refusing_discord

    async def history(query: dict[str, str], channel: int = ALLOWED_CHANNEL) -> tuple[int, Any]:
        headers = {"Authorization": f"Bot {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            url = f"{fake.api_base}/channels/{channel}/messages"
            async with session.get(url, params=query) as response:
                return response.status, await response.json()

    assert (await history({}))[0] == (await history({"limit": "100"}))[0] == 200
    for malformed in ({"limit": "101"}, {"limit": "0"}, {"before": "5", "after": "1"}):
        status, answer = await history(malformed)
        assert (status, answer["code"]) == (400, 50035), malformed
    status, answer = await history({}, channel=1)
    assert (status, answer["code"]) == (404, 10003)
    assert len(fake.violations) == 3


async def test_notes_sent_while_the_bot_is_down_are_in_the_history_only(settings) -> None:
    async with discord_server.serving() as fake:
        missed_dm = await fake.send_note(nova, voice_note())
        missed_guild = await fake.send_note(blaze, voice_note(), guild=True)
        # With no catch-up window the bot leaves what it missed alone: this test reads the fake.
        async with running_bot(settings, fake, catch_up_minutes=0) as h:
            later = await fake.send_note(nova, voice_note())
            await fake.wait_for(lambda _: len(fake.replies_to(later["id"])) >= 2)
            dm = await h.bot.fetch_channel(dm_channel_id(nova.id))
            assert isinstance(dm, discord.DMChannel) and dm.recipient and dm.recipient.id == nova.id
            in_dm = [m.id async for m in dm.history(limit=None, oldest_first=True)]
            assert in_dm[:2] == [int(missed_dm["id"]), int(later["id"])]  # then the bot's two replies
            guild = await h.bot.fetch_channel(ALLOWED_CHANNEL)
            assert [m.id async for m in guild.history(limit=None)] == [int(missed_guild["id"])]
        assert fake.replies_to(missed_dm["id"]) == fake.replies_to(missed_guild["id"]) == []


async def test_a_dm_the_bot_opens_is_the_players_dm_and_closed_dms_refuse(settings) -> None:
    async with discord_server.serving() as fake, running_bot(settings, fake) as h:
        fake.dms_closed.add(blaze.id)
        dm = await h.bot.create_dm(discord.Object(nova.id))
        assert dm.id == dm_channel_id(nova.id)
        sent = await dm.send("Your ticket GRV-10 was updated.")
        assert sent.channel.id == dm.id and fake.sent("message", dm.id)
        closed = await h.bot.create_dm(discord.Object(blaze.id))  # opening works; sending does not
        with pytest.raises(discord.Forbidden) as refused:
            await closed.send("Your ticket GRV-11 was updated.")
        assert refused.value.code == 50007 and refused.value.text == "Cannot send messages to this user"
        with pytest.raises(discord.NotFound) as unknown:
            await h.bot.fetch_channel(123)
        assert unknown.value.code == 10003


async def test_a_reply_to_a_deleted_message_is_refused_unless_it_may_stand_alone(settings) -> None:
    async with discord_server.serving() as fake, running_bot(settings, fake) as h:
        fake.expect_refusals()
        chat = await fake.send_message(nova, channel_id=ALLOWED_CHANNEL, guild=True, content="hi")
        deleted = asyncio.create_task(h.bot.wait_for("raw_message_delete", timeout=30))
        await fake.delete_message(ALLOWED_CHANNEL, chat["id"])
        assert (await deleted).message_id == int(chat["id"])  # MESSAGE_DELETE reached the bot
        channel = h.bot.get_channel(ALLOWED_CHANNEL)
        assert isinstance(channel, discord.TextChannel)
        note = channel.get_partial_message(int(chat["id"]))
        with pytest.raises(discord.HTTPException) as refused:
            await channel.send("answer", reference=note)  # fail_if_not_exists defaults to true
        assert refused.value.status == 400 and refused.value.code == 50035
        assert "In message_reference: Unknown message" in refused.value.text
        (reason,) = fake.refused
        assert "REPLIES_UNKNOWN_MESSAGE" in reason
        posted = await channel.send("answer", reference=note.to_reference(fail_if_not_exists=False))
        assert posted.reference is None and posted.type is discord.MessageType.default
        with pytest.raises(discord.NotFound) as no_reaction:
            await note.add_reaction("\N{WARNING SIGN}")
        assert no_reaction.value.code == 10008
        assert fake.violations == []


async def test_the_bot_deletes_its_own_message_and_no_one_elses(settings) -> None:
    # Discord's Delete Message: one's own needs no permission, and its MESSAGE_DELETE reaches the
    # bot too; another's needs Manage Messages, which the bot is not given.
    async with discord_server.serving() as fake, running_bot(settings, fake) as h:
        fake.expect_refusals()
        chat = await fake.send_message(nova, channel_id=ALLOWED_CHANNEL, guild=True, content="hi")
        channel = h.bot.get_channel(ALLOWED_CHANNEL)
        assert isinstance(channel, discord.TextChannel)
        mine = await channel.send("answer")
        deleted = asyncio.create_task(h.bot.wait_for("raw_message_delete", timeout=30))
        await mine.delete()
        assert (await deleted).message_id == mine.id
        assert mine.id not in fake.messages[ALLOWED_CHANNEL]
        with pytest.raises(discord.NotFound) as again:
            await mine.delete()
        assert again.value.code == 10008
        with pytest.raises(discord.Forbidden) as refused:
            await channel.get_partial_message(int(chat["id"])).delete()
        assert refused.value.code == 50013 and int(chat["id"]) in fake.messages[ALLOWED_CHANNEL]
        assert [r.error for r in fake.received if r.kind == "message_delete"] == [None, 10008, 50013]
        assert fake.violations == []


async def test_a_channel_denying_the_bot_refuses_what_discord_refuses(settings) -> None:
    async with discord_server.serving() as fake, running_bot(settings, fake) as h:
        fake.expect_refusals()
        note = await fake.send_note(nova, voice_note(), channel_id=OTHER_CHANNEL, dispatch=False)
        await fake.deny(OTHER_CHANNEL, READ_MESSAGE_HISTORY)
        channel = h.bot.get_channel(OTHER_CHANNEL)
        assert isinstance(channel, discord.TextChannel) and h.bot.user is not None
        await fake.wait_for(lambda _: not channel.permissions_for(channel.guild.me).read_message_history)
        assert [m async for m in channel.history(limit=None)] == []  # 200 and nothing, not a 403
        partial = channel.get_partial_message(int(note["id"]))
        # Discord's own code for a reply without the history it points into; Missing Permissions
        # for the reaction.
        refusals = [
            (channel.send("answer", reference=partial), 160002),
            (partial.add_reaction("\N{HEADPHONE}"), 50013),
        ]
        for refused, code in refusals:
            with pytest.raises(discord.Forbidden) as missing:
                await refused
            assert missing.value.code == code
        await channel.send("answer")  # a plain message needs no history
        await fake.deny(OTHER_CHANNEL, ATTACH_FILES)
        with pytest.raises(discord.Forbidden):
            await channel.send("answer", file=discord.File(io.BytesIO(b"OggS"), "reply.ogg"))
        await fake.deny(OTHER_CHANNEL, SEND_MESSAGES)
        for refused in (channel.send("answer"), channel.typing().__aenter__()):
            with pytest.raises(discord.Forbidden):
                await refused
        assert len(fake.refused) == 5 and all("without permission" in r for r in fake.refused)
        assert fake.violations == []


async def test_a_voice_message_mentions_the_bot_only_as_a_pinging_reply() -> None:
    async with discord_server.serving() as fake:
        bot = discord_server.InjectedUser(BOT_USER_ID, "voxdesk", bot=True)
        with pytest.raises(ValueError, match="pinging reply"):
            await fake.send_note(nova, voice_note(), channel_id=OTHER_CHANNEL, mention_bot=True)
        earlier = await fake.send_message(bot, channel_id=OTHER_CHANNEL, guild=True, content="Hi")
        note = await fake.send_note(
            nova, voice_note(), channel_id=OTHER_CHANNEL, mention_bot=True, reply_to=earlier
        )
        assert note["content"] == "" and note["type"] == 19
        assert note["message_reference"]["message_id"] == earlier["id"]
        assert [u["id"] for u in note["mentions"]] == [str(BOT_USER_ID)]
        text = await fake.send_message(nova, channel_id=OTHER_CHANNEL, guild=True, mention_bot=True)
        assert text["content"] == f"<@{BOT_USER_ID}>"  # a mention is written in the text


async def test_a_reply_to_a_gone_message_fails_a_test_that_does_not_expect_it() -> None:
    reply = {"content": "x", "message_reference": {"message_id": "42"}}
    with pytest.raises(FakeRefused, match="REPLIES_UNKNOWN_MESSAGE"):
        async with discord_server.serving() as fake:
            answer = await discord_post(fake, f"/channels/{ALLOWED_CHANNEL}/messages", reply)
            assert answer["errors"]["message_reference"]["_errors"][0]["code"] == "REPLIES_UNKNOWN_MESSAGE"
    assert fake.violations == []  # Discord's answer, not a malformed request


async def test_an_upload_is_served_with_the_content_type_it_was_sent_with(
    refusing_discord: FakeDiscord,
) -> None:
    fake = refusing_discord
    body = {"content": "spoken reply", "attachments": [{"id": "0", "filename": "voice-message.ogg"}]}
    answer = await discord_post(fake, f"/channels/{ALLOWED_CHANNEL}/messages", body, voice_note())
    assert answer["attachments"][0]["content_type"] == "audio/ogg"
    (record,) = fake.sent("message")
    assert [f.content_type for f in record.files] == ["audio/ogg"]


async def gateway_session(fake: FakeDiscord, close_code: int, resume: str | None = None) -> dict[str, Any]:
    """Identify (or resume) on the fake's gateway, close with `close_code`; the last event seen."""
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as ws:
        assert (await ws.receive_json())["op"] == 10
        if resume is None:
            await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 0, "properties": {}}})
        else:
            await ws.send_json({"op": 6, "d": {"token": TOKEN, "session_id": resume, "seq": 0}})
        event = await ws.receive_json()
        await ws.close(code=close_code)
        return event


async def test_a_session_closed_with_1000_ends_and_the_code_is_kept() -> None:
    async with discord_server.serving() as fake:
        ready = await gateway_session(fake, 4000)
        session_id = ready["d"]["session_id"]
        assert (await gateway_session(fake, 1000, resume=session_id))["t"] == "RESUMED"  # 4000: resumable
        assert (await gateway_session(fake, 1000, resume=session_id))["op"] == 9  # 1000: ended
        await fake.wait_for(lambda _: len(fake.close_codes) == 3)
        assert fake.close_codes == [4000, 1000, 1000]


async def test_a_session_identifying_or_resuming_wakes_a_waiter() -> None:
    # A test waits for a bot's session with wait_for(identify_payloads): a bot that identifies
    # and then sends nothing must still end the wait.
    async with discord_server.serving() as fake:
        for payloads in (fake.identify_payloads, fake.resume_payloads):
            looked = asyncio.Event()

            def arrived(_: object, payloads: list[Any] = payloads, looked: asyncio.Event = looked) -> bool:
                looked.set()
                return bool(payloads)

            waiting = asyncio.create_task(fake.wait_for(arrived, within=600))
            await looked.wait()  # the waiter found none and waits on the fake's condition
            async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as ws:
                assert (await ws.receive_json())["op"] == 10
                if payloads is fake.identify_payloads:
                    await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 0, "properties": {}}})
                else:
                    session_id = next(iter(fake.sessions))
                    await ws.send_json({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": 0}})
                await asyncio.wait_for(waiting, 30)  # the socket still open: nothing else is sent
                await ws.close(code=4000)


async def test_a_session_refused_identifying_or_resuming_wakes_a_waiter() -> None:
    # An identify refused for the Message Content intent (4014) or a resume of an unknown session
    # (op 9) is recorded too: a test waiting on it must not wait for some later request.
    async with discord_server.serving() as fake:
        fake.application_flags = 0
        for payloads in (fake.identify_payloads, fake.resume_payloads):
            looked = asyncio.Event()

            def arrived(_: object, payloads: list[Any] = payloads, looked: asyncio.Event = looked) -> bool:
                looked.set()
                return bool(payloads)

            waiting = asyncio.create_task(fake.wait_for(arrived, within=600))
            await looked.wait()
            async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as ws:
                assert (await ws.receive_json())["op"] == 10
                if payloads is fake.identify_payloads:
                    content = discord_server.MESSAGE_CONTENT_INTENT
                    await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": content, "properties": {}}})
                    # Answered as discord.py answers it: unread, the fake's close waits out
                    # aiohttp's 10 s for the close frame before it wakes anyone.
                    closing = await ws.receive()
                    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 4014)
                else:
                    await ws.send_json({"op": 6, "d": {"token": TOKEN, "session_id": "none", "seq": 0}})
                    assert (await ws.receive_json())["op"] == 9
                await asyncio.wait_for(waiting, 30)
                await ws.close(code=4000)


# ---- failing fast ---------------------------------------------------------------------------


async def test_a_refusal_fails_the_test_when_the_fake_stops() -> None:
    with pytest.raises(FakeRefused, match=r"(?s)FakeDiscord refused 1 request.*'spoiler' was unexpected"):
        async with discord_server.serving() as fake:
            await discord_post(
                fake, f"/channels/{ALLOWED_CHANNEL}/messages", {"content": "x", "spoiler": True}
            )
    with pytest.raises(ZeroDivisionError) as failed:  # the test's own failure stays, the reason is added
        async with discord_server.serving() as fake:
            await discord_post(
                fake, f"/channels/{ALLOWED_CHANNEL}/messages", {"content": "x", "spoiler": True}
            )
            1 / 0  # noqa: B018
    assert "'spoiler' was unexpected" in "\n".join(failed.value.__notes__)
    async with discord_server.serving() as fake:  # declared: passes
        fake.expect_violations()
        await discord_post(fake, f"/channels/{ALLOWED_CHANNEL}/messages", {"content": "x", "spoiler": True})


async def test_a_waiter_gives_up_at_the_first_refusal_with_its_reason() -> None:
    async with discord_server.serving() as fake:
        # Waiting up to 10 minutes: only the refusal can end it (a timeout raises TimeoutError).
        waiting = asyncio.create_task(fake.wait_for(lambda received: fake.sent("message"), within=600))
        await asyncio.sleep(0.05)
        await discord_post(fake, f"/channels/{ALLOWED_CHANNEL}/messages", {"content": "x", "spoiler": True})
        with pytest.raises(FakeRefused, match="'spoiler' was unexpected"):
            await asyncio.wait_for(waiting, 60)
        fake.expect_violations()  # seen: not again at the end


def _payload_json_not_json() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("payload_json", "{not json", content_type="application/json")
    form.add_field("files[0]", b"OggS", filename="voice-message.ogg", content_type="audio/ogg")
    return form


@pytest.mark.parametrize(
    ("method", "path", "send", "answer", "reason"),
    [
        (
            "PATCH",
            "/channels/{channel}/messages/1",
            {"json": {"content": "x"}},
            (404, 0, "404: Not Found"),
            "PATCH /api/v10/channels/{channel}/messages/1: not an endpoint the fake serves",
        ),
        (
            "DELETE",
            "/channels/{channel}/messages/1/reactions/x",
            {},
            (404, 0, "404: Not Found"),
            "DELETE /api/v10/channels/{channel}/messages/1/reactions/x: not an endpoint the fake serves",
        ),
        (
            "POST",
            "/users/@me/channels",
            {"data": b"{", "headers": {"Content-Type": "application/json"}},
            (400, 50109, "The request body contains invalid JSON."),
            "POST /api/v10/users/@me/channels: the body is not JSON",
        ),
        (
            "POST",
            "/channels/{channel}/messages",
            {"data": _payload_json_not_json},
            (400, 50109, "The request body contains invalid JSON."),
            "POST /api/v10/channels/{channel}/messages: the body is not JSON",
        ),
        (
            "POST",
            "/channels/abc/messages",
            {"json": {"content": "x"}},
            (400, 50035, "Invalid Form Body"),
            "POST /api/v10/channels/abc/messages: channel_id: Value 'abc' is not snowflake.",
        ),
        (
            "POST",
            "/channels/{channel}/typing",
            {},
            (500, 0, "500: Internal Server Error"),
            "POST /api/v10/channels/{channel}/typing: the fake failed on it: RuntimeError('broken')",
        ),
    ],
    ids=[
        "no-such-route",
        "no-such-method",
        "body-not-json",
        "payload-json-not-json",
        "not-a-snowflake",
        "fake-crashed",
    ],
)
async def test_a_request_the_fake_cannot_serve_ends_a_waiter_with_its_reason(
    method: str, path: str, send: dict[str, Any], answer: tuple[int, int, str], reason: str, monkeypatch
) -> None:
    """Unknown endpoints, unreadable bodies and the fake's own failures are all kept as reasons,
    so a test waiting for a reply fails on them rather than on a bare timeout."""
    path, reason = path.format(channel=ALLOWED_CHANNEL), reason.format(channel=ALLOWED_CHANNEL)
    send = {k: v() if callable(v) else v for k, v in send.items()}

    async def broken(*_: object) -> NoReturn:
        raise RuntimeError("broken")

    monkeypatch.setattr(FakeDiscord, "_typing", broken)
    async with discord_server.serving() as fake:
        waiting = asyncio.create_task(fake.wait_for(lambda received: fake.sent("message")))
        await asyncio.sleep(0)
        headers = {"Authorization": f"Bot {TOKEN}", **send.pop("headers", {})}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{fake.api_base}{path}", headers=headers, **send) as response,
        ):
            body = await response.json()
        assert (response.status, body["code"], body["message"]) == answer
        with pytest.raises(FakeRefused, match=re.escape(reason)):
            await waiting  # at once: a timeout would raise TimeoutError instead
        (violation,) = fake.violations
        assert violation.startswith(reason)
        fake.expect_violations()  # seen: not again at the end


async def test_a_stalled_download_ends_when_the_fake_stops() -> None:
    fake = await FakeDiscord().start()
    fake.attachments[1] = b"OggS"
    fake.cdn_stall_seconds = 600
    session = aiohttp.ClientSession()
    download = asyncio.create_task(session.get(f"{fake.url}/attachments/{ALLOWED_CHANNEL}/1/a.ogg"))
    try:
        await fake.wait_for(lambda _: fake.sent("cdn"))
        await asyncio.wait_for(fake.stop(), 60)  # not the 10-minute stall
    finally:
        download.cancel()
        await session.close()


# ---- Azure AI Search ------------------------------------------------------------------------


async def search(fake: search_server.FakeSearch, text: str, query_type: str = "simple") -> int:
    index = {
        "name": "manuals",
        "fields": [
            {"name": "key", "type": "Edm.String", "key": True},
            {"name": "text", "type": "Edm.String", "searchable": True},
        ],
    }
    params = {"api-version": "2026-04-01"}
    headers = {"api-key": fake.api_key}
    async with aiohttp.ClientSession(headers=headers) as session:
        if "manuals" not in fake.indexes:
            async with session.post(f"{fake.endpoint}/indexes", json=index, params=params) as response:
                assert response.status == 201
        body = {"search": text, "queryType": query_type}
        url = f"{fake.endpoint}/indexes('manuals')/docs/search.post.search"
        async with session.post(url, json=body, params=params) as response:
            return response.status


@pytest.mark.parametrize(
    "text",
    ['"refund"', "refund -controller", "refund | password", "crash*", "(refund)", "a+b", "back\\slash"],
)
async def test_query_syntax_in_a_simple_search_is_flagged(text: str) -> None:
    async with search_server.running_fake_search() as fake:
        fake.expect_violations()
        assert await search(fake, text) == 200  # as the service would: simple syntax always parses
        (violation,) = fake.violations
        assert f"search {text!r} holds query syntax" in violation
        assert await search(fake, "refund controller") == 200 and await search(fake, "*") == 200
        assert len(fake.violations) == 1


async def test_a_document_key_ending_in_a_line_break_is_a_400() -> None:
    # As the service refuses it: its keys hold letters, digits, _ - = only.
    async with search_server.running_fake_search() as fake:
        fake.expect_violations()
        await search(fake, "refund")  # makes the index
        url = f"{fake.endpoint}/indexes('manuals')/docs/search.index"
        params = {"api-version": "2026-04-01"}
        async with aiohttp.ClientSession(headers={"api-key": fake.api_key}) as session:
            for key, status in (("ok-1", 200), ("ok-1\n", 400)):
                body = {"value": [{"@search.action": "upload", "key": key, "text": "x"}]}
                async with session.post(url, json=body, params=params) as response:
                    assert response.status == status, key
        assert "Invalid document key: 'ok-1\n'" in fake.violations[0]


@pytest.mark.parametrize("named", ["index", "field"])
async def test_an_index_or_field_name_ending_in_a_line_break_is_a_400(named: str) -> None:
    # As the service refuses them: "$" let a final line break through, as \Z does not.
    index = {
        "name": "manuals",
        "fields": [
            {"name": "key", "type": "Edm.String", "key": True},
            {"name": "text", "type": "Edm.String", "searchable": True},
        ],
    }
    if named == "index":
        index["name"] = "manuals\n"
    else:
        index["fields"][1]["name"] = "text\n"  # type: ignore[index]
    async with search_server.running_fake_search() as fake:
        fake.expect_violations()
        async with aiohttp.ClientSession(headers={"api-key": fake.api_key}) as session:
            params = {"api-version": "2026-04-01"}
            async with session.post(f"{fake.endpoint}/indexes", json=index, params=params) as response:
                assert response.status == 400
        assert fake.indexes == {}
        assert len(fake.violations) == 1


@pytest.mark.parametrize("text", ["(refund", "refund)", '"refund', "refund AND", "OR refund"])
async def test_full_lucene_that_does_not_parse_is_a_400(text: str) -> None:
    async with search_server.running_fake_search() as fake:
        fake.expect_violations()
        assert await search(fake, text, "full") == 400
        assert "Failed to parse query string" in fake.violations[0]


async def test_the_fake_refuses_to_serve_an_api_version_it_has_no_fields_for() -> None:
    """Served, an api-version missing from AZURE_FIELDS would fail each Azure request with a
    KeyError inside the fake (a 500 a test would read as the bot's fault)."""
    with pytest.raises(ValueError, match=r"2024-10-21, which AZURE_FIELDS has no fields for"):
        openai_server.FakeOpenAI(api_versions=frozenset({"2024-10-21", "2025-01-01-preview"}))
    fake = openai_server.FakeOpenAI()
    fake.api_versions = frozenset({"2024-10-21"})
    with pytest.raises(ValueError, match="AZURE_FIELDS has no fields for"):
        await fake.start()


async def test_azure_refuses_a_reply_voice_or_format_its_api_version_does_not_list() -> None:
    """OpenAI's spec takes any voice name; Azure's 2025-01-01-preview lists six voices (three of
    them OpenAI's audio models') and five formats (no aac)."""
    from bot.engines.openai import SILENCE

    async with openai_server.serving() as fake, aiohttp.ClientSession() as http:
        fake.expect_violations()
        url = f"{fake.azure_endpoint}/openai/deployments/voxdesk-audio/chat/completions"
        note = {"type": "input_audio", "input_audio": {"data": SILENCE, "format": "wav"}}
        body = {
            "model": "voxdesk-audio",
            "modalities": ["text", "audio"],
            "messages": [{"role": "user", "content": [note]}],
        }
        answered = []
        for audio in (
            {"voice": "shimmer", "format": "opus"},
            {"voice": "ash", "format": "opus"},
            {"voice": "alloy", "format": "aac"},
        ):
            async with http.post(
                url,
                params={"api-version": "2025-01-01-preview"},
                headers={"api-key": openai_server.AZURE_KEY},
                json={**body, "audio": audio},
            ) as response:
                error = (await response.json()).get("error") or {}
                answered.append((response.status, error.get("param"), error.get("code")))
    assert answered == [
        (200, None, None),
        (400, "audio.voice", "invalid_value"),
        (400, "audio.format", "invalid_value"),
    ]
    assert "Invalid value: 'ash'" in fake.violations[0] and "'aac'" in fake.violations[1]


async def test_a_throttled_fake_limits_a_channels_posts_as_discord_does() -> None:
    # Each answer states its bucket; the post past the limit is a 429 with Discord's body and
    # headers (Via, which discord.py needs to trust it), counted as an invalid request; another
    # channel's bucket is its own.
    async with discord_server.serving() as fake:
        fake.throttle(1000.0)  # windows of 5000 s: none resets within the test
        channel, other = discord_server.ALLOWED_CHANNEL, discord_server.OTHER_CHANNEL
        answers = []
        async with aiohttp.ClientSession(headers={"Authorization": f"Bot {TOKEN}"}) as http:
            for where in [channel] * 6 + [other]:
                async with http.post(
                    f"{fake.api_base}/channels/{where}/messages", json={"content": "x"}
                ) as r:
                    answers.append((r.status, dict(r.headers), await r.json()))
    assert [(s, h["X-RateLimit-Remaining"]) for s, h, _ in answers] == [
        (200, "4"),
        (200, "3"),
        (200, "2"),
        (200, "1"),
        (200, "0"),
        (429, "0"),
        (200, "4"),
    ]
    _, headers, body = answers[5]
    assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Scope"] == "user" and headers["Via"]
    assert body["global"] is False and 4990 < body["retry_after"] <= 5000
    assert openapi.component_errors(DISCORD, "RatelimitedResponse", body) == []
    assert fake.invalid == [f"POST /api/v10/channels/{channel}/messages 429"]
