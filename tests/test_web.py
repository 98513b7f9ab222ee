"""The web front end through aiohttp's test client: every route, its limits and its security."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import re
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet

from bot import paths
from bot import sentences as say
from bot.app import build_app, storage_paths
from bot.config import load_settings
from bot.tools import ticket_rows
from bot.web import STATE, desk, ops, playground
from bot.web.playground import DEMO_PLAYERS
from bot.web.security import RateLimit, hash_password, staff_password_hash, verify_password

from .audio_samples import collected
from .conftest import BLAZE, NOVA, QUILL, REPO, make_settings, speech_pools_started
from .web_helpers import (
    CSRF,
    STAFF_HASH,
    STAFF_PASSWORD,
    VOID,
    Page,
    csrf_of,
    log_in,
    web_client,
    web_settings,
)

NOTE = (paths.SAMPLES / "2-how-many-points.ogg").read_bytes()
FERNET_KEY = Fernet.generate_key().decode()  # sessions that outlive one app, as across a restart


@pytest.fixture
def wsettings(settings):
    return web_settings(settings.storage_dir)


def note_form(player: str = NOVA, data: bytes = NOTE, name: str = "note.ogg") -> FormData:
    form = FormData()
    form.add_field("player", player)
    form.add_field("audio", data, filename=name, content_type="audio/ogg")
    return form


async def ask(client: TestClient, token: str, **form: object):  # type: ignore[no-untyped-def]
    return await client.post("/playground/ask", data=note_form(**form), headers={"X-CSRF-Token": token})


# ---- playground ------------------------------------------------------------------------------


def metric_value(metric: str, page: str) -> float:
    """A sample's value on a /metrics page; 0 when it is not there yet."""
    found = re.search(rf"^{re.escape(metric)} ([0-9.e+-]+)$", page, re.M)
    return float(found.group(1)) if found else 0.0


async def test_playground_answers_a_note_with_the_tool_timings_and_playable_audio(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        page = await client.get("/")
        html = await page.text()
        assert page.status == 200 and "Nova" in html and "Marlow" in html
        token = await csrf_of(client)
        done = await ask(client, token)
        assert done.status == 200, await done.text()
        body = await done.json()
        assert body["player"] == "Nova"
        assert [c["name"] for c in body["tool_calls"]] == ["get_player_stats"]
        assert body["answer"].startswith("Nova, you have 708 points")
        assert body["heard"].startswith("a note of")
        assert {"upload", "decode", "engine", "tools", "encode"} <= set(body["timings_ms"])
        audio = await client.get(body["audio_url"])
        assert audio.status == 200 and audio.content_type == "audio/ogg"
        assert (await audio.read()).startswith(b"OggS")


async def test_the_playground_times_the_upload_alone_not_the_answer_after_it(wsettings, monkeypatch) -> None:
    # The page lists each stage's time: an "upload" that ran on to the answer's end would say a
    # note of a few KB took as long to send as the model took to think.
    from tests.frontend_engine import FrontendEngine

    real, ahead = time.perf_counter, [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: real() + ahead[0])

    class Thinking(FrontendEngine):
        async def complete(self, turn):  # type: ignore[no-untyped-def]
            ahead[0] += 100.0  # the model's call, as long as a clock read over it would find
            return await super().complete(turn)

    async with web_client(wsettings, Thinking()) as (client, _):
        done = await ask(client, await csrf_of(client))
        assert done.status == 200, await done.text()
        timings = (await done.json())["timings_ms"]
    assert timings["engine"] >= 100_000
    assert timings["upload"] < 100_000, timings


async def test_a_playground_note_is_let_go_once_decoded_while_the_model_thinks(
    wsettings, monkeypatch
) -> None:
    # An upload is up to audio.max_bytes: held through the model's call, each playground turn at
    # once would keep its note in memory for nothing once the clip the turn needs is decoded.

    from tests.scripted_engine import ScriptedEngine

    freed: list[int] = []

    class Upload(bytes):
        def __del__(self) -> None:  # bytes take no weak reference: a finalizer says it went
            freed.append(len(self))

    read_note = playground._read_note

    async def read_marked(*args: object, **kwargs: object) -> object:
        got = await read_note(*args, **kwargs)
        if isinstance(got, tuple):
            user_id, data, started = got
            return user_id, Upload(data), started
        return got

    monkeypatch.setattr(playground, "_read_note", read_marked)
    thinking, go_on = asyncio.Event(), asyncio.Event()

    class Thoughtful(ScriptedEngine):
        async def complete(self, turn):  # type: ignore[no-untyped-def]
            thinking.set()
            await go_on.wait()
            return await super().complete(turn)

    async with web_client(wsettings, engine=Thoughtful()) as (client, _):
        asking = asyncio.create_task(ask(client, await csrf_of(client)))
        await thinking.wait()
        await collected(freed)
        assert freed == [len(NOTE)]  # while the model thinks
        go_on.set()
        assert (await asking).status == 200


async def test_playground_answers_are_never_cached(wsettings) -> None:
    # Each carries what a player's note asked and was told, for this browser session alone.
    async with web_client(wsettings) as (client, _):
        token = await csrf_of(client)
        done = await ask(client, token)
        assert done.status == 200 and "Set-Cookie" not in done.headers
        assert done.headers["Cache-Control"] == "no-store"
        refused = await ask(client, token, player="no such player")
        assert refused.status == 400 and refused.headers["Cache-Control"] == "no-store"
        # Reply audio too, whole or in part: a shared cache (a proxy's) must never serve one
        # session's answer to another browser asking the same URL.
        url = (await done.json())["audio_url"]
        for answer in (await client.get(url), await client.get(url, headers={"Range": "bytes=0-9"})):
            assert answer.status in (200, 206)
            assert "no-store" in answer.headers["Cache-Control"]
            assert answer.headers["Cross-Origin-Resource-Policy"] == "same-origin"
        stranger = TestClient(TestServer(client.app))
        async with stranger:
            missing = await stranger.get(url)
            assert missing.status == 404 and missing.headers["Cache-Control"] == "no-store"


async def test_reply_audio_answers_range_requests_so_players_can_seek(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        url = (await (await ask(client, await csrf_of(client))).json())["audio_url"]
        whole = await client.get(url)
        ogg = await whole.read()
        size = len(ogg)
        assert whole.status == 200 and whole.headers["Accept-Ranges"] == "bytes"
        for asked, start, stop in (
            ("bytes=0-99", 0, 100),
            (f"bytes={size - 10}-", size - 10, size),
            ("bytes=-16", size - 16, size),
            (f"bytes=5-{size * 2}", 5, size),
        ):
            part = await client.get(url, headers={"Range": asked})
            assert part.status == 206, asked
            assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}", asked
            assert await part.read() == ogg[start:stop], asked
        past = await client.get(url, headers={"Range": f"bytes={size}-"})
        assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{size}"
        # A suffix of no bytes is unsatisfiable (RFC 9110 14.1.1), not the whole note.
        nothing = await client.get(url, headers={"Range": "bytes=-0"})
        assert nothing.status == 416 and nothing.headers["Content-Range"] == f"bytes */{size}"
        assert (await client.get(url, headers={"Range": "bytes=0-"})).status == 206
        several = await client.get(url, headers={"Range": "bytes=0-1, 5-6"})
        assert several.status == 200 and await several.read() == ogg


async def test_reply_audio_is_served_only_to_the_session_that_asked(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        body = await (await ask(client, await csrf_of(client))).json()
        stranger = TestClient(TestServer(client.app))  # same app, another browser: no cookie
        async with stranger:
            assert (await stranger.get(body["audio_url"])).status == 404
        assert (await client.get("/playground/reply/not-a-token")).status == 404


async def test_only_the_newest_reply_audio_is_kept(wsettings, monkeypatch) -> None:
    monkeypatch.setattr(playground, "MAX_REPLIES", 2)
    async with web_client(wsettings) as (client, _):
        token = await csrf_of(client)
        urls = [(await (await ask(client, token)).json())["audio_url"] for _ in range(3)]
        assert [(await client.get(url)).status for url in urls] == [404, 200, 200]


async def test_reply_audio_kept_is_bounded_in_bytes_the_newest_always_kept(wsettings, monkeypatch) -> None:
    # Two hundred replies were kept whatever their size: a cloud engine's long answers, megabytes
    # each, could hold hundreds of megabytes for pages that may never fetch them.
    from tests.frontend_engine import FrontendEngine

    engine = FrontendEngine(reply_seconds=20.0)
    async with web_client(wsettings, engine) as (client, _):
        token = await csrf_of(client)

        async def asked() -> str:
            return (await (await ask(client, token)).json())["audio_url"]

        first = await asked()
        size = len(await (await client.get(first)).read())
        monkeypatch.setattr(playground, "MAX_REPLY_BYTES", 2 * size + size // 2, raising=False)
        urls = [first, await asked(), await asked()]  # the third is one too many
        kept = [(await client.get(url)).status for url in urls]
        engine.reply_seconds = 80.0  # one reply over the whole bound: its visitor still hears it
        urls.append(await asked())
        fetched = [await client.get(url) for url in urls]
        longest = len(await fetched[-1].read())
    assert kept == [404, 200, 200]
    assert [r.status for r in fetched] == [404, 404, 404, 200] and longest > 2 * size + size // 2


async def test_a_visitors_conversation_is_the_visitors_not_the_players_it_speaks_as(wsettings) -> None:
    # A visitor speaks as a demo (or test) player, whose Discord id that may be: what the visitor
    # said is no data of that player's to export, nor gone with the player's /forget.
    from bot import player_data

    storage = storage_paths(wsettings)
    async with web_client(wsettings) as (client, core):
        token = await csrf_of(client)
        first = await (await ask(client, token)).json()
        forgotten = await core.agent.forget(NOVA)
        second = await (await ask(client, token)).json()
    assert player_data.export(storage, NOVA)["conversations"]["turns"] == []
    assert first["answer"].endswith("History 0.") and second["answer"].endswith("History 1."), second
    assert forgotten == 0
    with sqlite3.connect(storage.conversations) as conn:
        kept = conn.execute("SELECT user_id FROM turns WHERE conversation LIKE 'web:%'").fetchall()
    (owner,) = {user for (user,) in kept}
    assert owner.startswith("web:") and owner.endswith(f":{NOVA}")


async def test_playground_refuses_a_player_it_does_not_offer(wsettings) -> None:
    refused = 'voxdesk_notes_total{frontend="web",outcome="refused",reason="bad_request"}'
    async with web_client(wsettings) as (client, _):
        before = metric_value(refused, await (await client.get("/metrics")).text())
        token = await csrf_of(client)
        done = await ask(client, token, player="424242424242424242")
        # In words the page shows (it shows a JSON answer's "error"), and counted like any request
        # that is not one note and a player.
        assert done.status == 400
        assert await done.json() == {"error": "Choose one of the playground's players."}
        assert metric_value(refused, await (await client.get("/metrics")).text()) == before + 1
        tickets = await client.get("/playground/tickets", params={"player": "424242424242424242"})
        assert tickets.status == 400
        assert await tickets.json() == {"error": "Choose one of the playground's players."}


async def test_production_playground_offers_only_the_configured_test_player(settings) -> None:
    s = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_PLAYERS=BLAZE)
    async with web_client(s) as (client, _):
        html = await (await client.get("/")).text()
        assert "Blaze" in html and "Nova" not in html
        assert (await ask(client, await csrf_of(client), player=NOVA)).status == 400
    off = web_settings(settings.storage_dir, VOXDESK_TOOLS_STATS="sqlite")
    assert off.web.playground_players == []


async def test_a_configured_players_own_tickets_are_never_shown_to_playground_visitors(settings) -> None:
    # A listed id is a Discord account's: what was filed under it came from whoever holds that
    # account (a real player, listed by mistake, or staff testing in a DM), in words that may
    # be a harassment report or payment details. The playground listed them, words and all, to
    # every anonymous visitor. The demo players' tickets (the seed's) are still everyone's.
    s = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_PLAYERS=BLAZE)
    async with web_client(s) as (client, core):
        filed = await core.grievances.register(BLAZE, "wallet", "my card ending 4242 was charged twice")
        view = await (await client.get("/playground/tickets", params={"player": BLAZE})).json()
        assert view == {"player": "Blaze", "tickets": []}
    async with web_client(web_settings(settings.storage_dir)) as (client, core):
        view = await (await client.get("/playground/tickets", params={"player": BLAZE})).json()
        assert filed.key in {t["key"] for t in view["tickets"]}


async def test_the_ticket_tool_tells_no_configured_players_own_tickets_to_a_visitor(settings) -> None:
    from tests.fakes import openai_server
    from tests.fakes.openai_server import answer, tool_calls
    from tests.test_openai import openai_settings
    from tests.test_ticket_privacy import told_by_ticket_tool

    async with openai_server.serving() as fake:
        s = openai_settings(
            settings.storage_dir,
            fake,
            VOXDESK_WEB_STAFF_PASSWORD_HASH=STAFF_HASH,
            VOXDESK_WEB_PLAYGROUND_PLAYERS=BLAZE,
        )
        async with web_client(s, core=await build_app(s)) as (client, core):
            try:
                filed = await core.grievances.register(
                    BLAZE, "wallet", "my card ending 4242 was charged twice"
                )
                fake.script = [
                    tool_calls(("get_grievance_status", {})),
                    answer("{tool:get_grievance_status}"),
                ]
                asked = await ask(client, await csrf_of(client), player=BLAZE)
                assert asked.status == 200, await asked.text()
                told = json.loads(told_by_ticket_tool(fake.chats[-1].body))
                assert told["tickets"] == [] and "4242" not in (await asked.json())["answer"]
                fake.script = [
                    tool_calls(("get_grievance_status", {"ticket_key": filed.key})),
                    answer("{tool:get_grievance_status}"),
                ]
                asked = await ask(client, await csrf_of(client), player=BLAZE)
                told = json.loads(told_by_ticket_tool(fake.chats[-1].body))
                assert told["tickets"] == [] and "4242" not in (await asked.json())["answer"]
            finally:
                await core.aclose()


async def test_on_a_studios_player_database_the_demo_ids_are_nobody_to_speak_as(settings) -> None:
    from types import SimpleNamespace

    from bot.web.playground import allowed_players

    # Their ids may be real people's there: with no test player configured, the playground is off.
    studio = web_settings(
        settings.storage_dir, VOXDESK_TOOLS_STATS="odbc", VOXDESK_SQL_CONNECTION_STRING="DSN=studio"
    )
    async with web_client(settings) as (_, core):  # the embedded players answer, as a studio's would
        assert await allowed_players(SimpleNamespace(settings=studio, stats=core.stats)) == {}  # type: ignore[arg-type]
        assert NOVA in await allowed_players(core)


async def test_a_test_player_added_to_the_database_later_is_offered_by_name(settings) -> None:
    # The names were read once, at start: a test player linked in the database after it (or named
    # while the database was down) was offered as "player <id>" for as long as the bot ran. They
    # are read again, on a page view, at most once a NAMES_SECONDS, without holding that page.
    later = "424242424242424242"
    s = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_PLAYERS=f"{BLAZE},{later}")
    async with web_client(s) as (client, _):
        names = client.app[STATE].player_names
        now = [0.0]
        names.clock = lambda: now[0]
        names.read_at = 0.0
        html = await (await client.get("/")).text()
        assert "Blaze" in html and f"player {later}" in html
        with sqlite3.connect(storage_paths(s).players) as conn:
            conn.execute(
                "INSERT INTO players (player_id, discord_user_id, player_name) VALUES (42, ?, 'Tessa')",
                (later,),
            )
        now[0] += playground.NAMES_SECONDS - 1
        await client.get("/")
        await asyncio.wait_for(names.settled(), 30)  # a guard, not a timing assertion
        assert f"player {later}" in await (await client.get("/")).text()  # not read again so soon
        now[0] += 1
        await client.get("/")  # answered at once, as the names are read again
        await asyncio.wait_for(names.settled(), 30)
        html = await (await client.get("/")).text()
        assert "Tessa" in html and "Blaze" in html and f"player {later}" not in html
        ask_as = await ask(client, await csrf_of(client), player=later)
        assert ask_as.status == 200 and (await ask_as.json())["player"] == "Tessa"


async def test_upload_limits_and_bad_audio_get_the_same_friendly_words_as_discord(settings) -> None:
    s = web_settings(settings.storage_dir, VOXDESK_AUDIO_MAX_BYTES="20000", VOXDESK_AUDIO_MAX_SECONDS="1.0")
    async with web_client(s) as (client, _):
        token = await csrf_of(client)
        big = await ask(client, token, data=b"\0" * 50_000)
        assert big.status == 413
        assert "too big for me" in (await big.json())["error"]
        pdf = await ask(client, token, data=b"%PDF-1.4\n" + bytes(2000))
        assert pdf.status == 422
        assert (await pdf.json())[
            "error"
        ] == "That file looks like a PDF document, not audio. Please send a voice note."
        long = await ask(client, token)  # the sample is longer than one second
        assert long.status == 422
        assert "too long for me" in (await long.json())["error"]
        empty = await ask(client, token, data=b"")
        assert empty.status == 422 and "empty" in (await empty.json())["error"]


async def test_playground_has_a_per_client_rate_limit(settings) -> None:
    s = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_NOTES="2")
    async with web_client(s) as (client, _):
        token = await csrf_of(client)
        assert (await ask(client, token)).status == 200
        assert (await ask(client, token)).status == 200
        third = await ask(client, token)
        assert third.status == 429
        assert "faster than I can answer" in (await third.json())["error"]


def test_rate_limit_window_passes() -> None:
    now = [0.0]
    limit = RateLimit(2, 10.0, clock=lambda: now[0])
    assert limit.retry_after("a") == 0 and limit.retry_after("a") == 0
    assert limit.retry_after("a") == pytest.approx(10.0)
    assert limit.retry_after("b") == 0  # another client is not held back
    now[0] = 10.5
    assert limit.retry_after("a") == 0


async def test_a_players_ticket_view_shows_only_their_own_tickets(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        await core.grievances.register(BLAZE, "wallet", "Blaze's private complaint")
        nova = await (await client.get("/playground/tickets", params={"player": NOVA})).json()
        keys = {t["key"] for t in nova["tickets"]}
        assert keys and all(t["description"] != "Blaze's private complaint" for t in nova["tickets"])
        mine = {g.key for g in await core.grievances.status(NOVA)}
        assert keys == mine


def test_demo_players_are_the_seeds() -> None:
    seed = (paths.SQL / "sqlite" / "seed.sql").read_text()
    assert set(re.findall(r"INSERT INTO players .* VALUES \(\d+, '(\d+)'", seed)) == set(DEMO_PLAYERS)


# ---- CSRF, cookies, escaping, static files ------------------------------------------------------


async def test_state_changes_without_this_sessions_csrf_token_are_refused(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        await csrf_of(client)
        missing = await client.post("/playground/ask", data=note_form())
        assert missing.status == 403
        other = TestClient(TestServer(client.app))
        async with other:
            foreign = await csrf_of(other)  # a real token, of another session
        assert (await ask(client, foreign)).status == 403
        assert (await log_in(client)) == 303
        before = await core.grievances.local_store.staff_get("GRV-10")
        for token in (None, foreign, ""):
            data = {"status": "closed"} | ({"csrf": token} if token is not None else {})
            refused = await client.post("/desk/ticket/GRV-10/status", data=data, allow_redirects=False)
            assert refused.status == 403
        assert (await core.grievances.local_store.staff_get("GRV-10")) == before
        logout = await client.post("/desk/logout", data={}, allow_redirects=False)
        assert logout.status == 403


async def test_a_method_no_route_takes_is_405_not_a_csrf_refusal(wsettings) -> None:
    # The CSRF check ran before the router's answer: a PUT, DELETE or PATCH anywhere was 403
    # "Missing or invalid CSRF token", as if a token would have let it through.
    async with web_client(wsettings) as (client, core):
        token = await csrf_of(client)
        assert (await log_in(client)) == 303
        before = await core.grievances.local_store.staff_get("GRV-10")
        for method, path, allowed in (
            ("PUT", "/playground/ask", "POST"),
            ("DELETE", "/desk/ticket/GRV-10/status", "POST"),
            ("PATCH", "/desk/ticket/GRV-10", "GET,HEAD"),
            ("POST", "/desk", "GET,HEAD"),
            ("PUT", "/static/style.css", "GET,HEAD"),
        ):
            for headers in ({}, {"X-CSRF-Token": token}):  # without a token as with one
                answer = await client.request(method, path, headers=headers, allow_redirects=False)
                assert (answer.status, answer.headers.get("Allow")) == (405, allowed), (method, path, headers)
        assert (await client.post("/nowhere", allow_redirects=False)).status == 404
        # A route that takes the method still wants the token.
        refused = await client.post("/desk/ticket/GRV-10/status", data={"status": "closed"})
        assert refused.status == 403 and "CSRF" in await refused.text()
        assert (await client.post("/playground/ask", data=note_form())).status == 403
        assert (await core.grievances.local_store.staff_get("GRV-10")) == before


async def test_a_playground_page_whose_session_ended_is_told_to_reload(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        token = await csrf_of(client)
        # The page stays open while its session ends: the cookie lapsed, or a restart without
        # VOXDESK_WEB_SESSION_KEY made every cookie unreadable.
        client.session.cookie_jar.clear()
        refused = await ask(client, token)
        assert refused.status == 403
        # JSON, as the page's script reads every answer; else it shows "Something went wrong (403)".
        assert "reload the page" in (await refused.json())["error"]


async def test_a_forged_or_tampered_session_cookie_is_not_a_login(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        assert (await log_in(client)) == 303
        real = next(c for c in client.session.cookie_jar if c.key == "voxdesk_session").value
        for forged in ('{"session": {"staff": true}}', real[:-4] + "AAAA", "gAAAAA" + real[6:][::-1]):
            stranger = TestClient(TestServer(client.app))
            async with stranger:
                stranger.session.cookie_jar.update_cookies({"voxdesk_session": forged})
                desk = await stranger.get("/desk", allow_redirects=False)
                assert desk.status == 303 and desk.headers["Location"] == "/desk/login"
        assert (await client.get("/desk", allow_redirects=False)).status == 200


async def test_a_login_starts_a_session_of_its_own_with_a_new_csrf_token(wsettings) -> None:
    """Whoever made the session a login starts from (a cookie planted by a sibling subdomain,
    which SameSite lets send requests with staff's cookie) knows its CSRF token and its playground
    conversation: neither may go on into the staff session."""
    async with web_client(wsettings) as (client, _):
        before = await csrf_of(client)
        done = await ask(client, before)
        audio = (await done.json())["audio_url"]
        assert (await client.get(audio)).status == 200
        assert await log_in(client) == 303
        after = await csrf_of(client, "/desk")
        assert after != before
        refused = await client.post("/desk/check", data={"csrf": before}, allow_redirects=False)
        assert refused.status == 403
        assert (await client.get(audio)).status == 404


async def test_session_cookie_is_httponly_and_samesite(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        page = await client.get("/")
        cookie = page.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"


def permissions(answer) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {
        feature.strip(): allowed
        for feature, _, allowed in (
            item.partition("=") for item in answer.headers["Permissions-Policy"].split(",")
        )
    }


async def test_the_playground_page_alone_may_use_the_microphone_and_answers_isolate_the_origin(
    wsettings,
) -> None:
    """The playground page records in the browser (getUserMedia), so it may use the microphone, for
    our origin; no other page of ours may (a browser keeps a grant for the whole site), no other
    powerful feature is granted, no other site's window keeps a handle on ours, and no other site
    may load our answers (reply audio, a ticket view) as resources of its own."""
    script = (REPO / "bot" / "web" / "static" / "playground.js").read_text()
    assert "getUserMedia" in script  # what the microphone is granted for
    templates = REPO / "bot" / "web" / "templates"
    recording = {t.name for t in templates.glob("*.html") if 'id="record"' in t.read_text()}
    assert recording == {"playground.html"}  # the only page the script records on
    async with web_client(wsettings) as (client, _):
        token = await csrf_of(client)
        audio = (await (await ask(client, token)).json())["audio_url"]
        page = await client.get("/")
        assert page.status == 200 and permissions(page)["microphone"] == "(self)"
        assert permissions(await client.head("/"))["microphone"] == "(self)"
        await log_in(client)
        for path in (
            "/desk",
            "/desk/login",
            "/desk/charts",
            "/desk/check",
            "/static/playground.js",
            audio,
            "/playground/tickets",
            "/healthz",
            "/no-such-page",
        ):
            got = await client.get(path, allow_redirects=False)
            assert permissions(got)["microphone"] == "()", path
        # The playground's path, refused: no page that records.
        foreign = await client.get("/", headers={"Host": "rebound.example"})
        assert foreign.status == 421 and permissions(foreign)["microphone"] == "()"
        for path in ("/", "/desk", "/desk/login", audio, "/healthz", "/no-such-page"):
            got = await client.get(path, allow_redirects=False)
            policy = permissions(got)
            assert policy["camera"] == policy["geolocation"] == policy["display-capture"] == "()", path
            assert got.headers["Cross-Origin-Opener-Policy"] == "same-origin", path
            assert got.headers["Cross-Origin-Resource-Policy"] == "same-origin", path


async def test_a_script_in_a_grievance_is_shown_as_text(wsettings) -> None:
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    async with web_client(wsettings) as (client, core):
        filed = await core.grievances.register(NOVA, "other", attack)
        await log_in(client)
        for path in ("/desk", f"/desk/ticket/{filed.key}"):
            html = await (await client.get(path)).text()
            assert "<script>alert" not in html and "<img src=x" not in html, path
            assert "&lt;script&gt;alert" in html, path
        token = await csrf_of(client, f"/desk/ticket/{filed.key}")
        await client.post(f"/desk/ticket/{filed.key}/note", data={"csrf": token, "body": attack})
        html = await (await client.get(f"/desk/ticket/{filed.key}")).text()
        assert "<script>alert" not in html and html.count("&lt;script&gt;alert") == 2


@pytest.mark.parametrize(
    "path",
    [
        # joined, so the repository's check for paths that climb out of it does not flag the attack
        "/static/.." + "/config.toml",
        "/static/%2e%2e/%2e%2e/config.toml",
        "/static/..%2f..%2fconfig.toml",
        "/static/%2e%2e%2f__init__.py",
        "/static//etc/passwd",
    ],
)
async def test_static_files_never_leave_the_static_folder(wsettings, path: str) -> None:
    async with web_client(wsettings) as (client, _):
        assert (await client.get("/static/style.css")).status == 200
        got = await client.get(path, allow_redirects=False)
        assert got.status in (403, 404), (path, got.status)
        assert "[storage]" not in await got.text() and "PACKAGE" not in await got.text()


async def test_static_files_answer_a_suffix_of_no_bytes_416_as_reply_audio_does(wsettings) -> None:
    css = (REPO / "bot" / "web" / "static" / "style.css").read_bytes()
    size = len(css)
    async with web_client(wsettings) as (client, _):
        for method in ("GET", "HEAD"):
            # A suffix of no bytes is unsatisfiable (RFC 9110 14.1.1), not the whole file.
            nothing = await client.request(method, "/static/style.css", headers={"Range": "bytes=-0"})
            assert nothing.status == 416, method
            assert nothing.headers["Content-Range"] == f"bytes */{size}", method
            tail = await client.request(method, "/static/style.css", headers={"Range": "bytes=-16"})
            assert tail.status == 206
            assert tail.headers["Content-Range"] == f"bytes {size - 16}-{size - 1}/{size}"
            past = await client.request(method, "/static/style.css", headers={"Range": f"bytes={size}-"})
            assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{size}"
        tail = await client.get("/static/style.css", headers={"Range": "bytes=-16"})
        assert await tail.read() == css[-16:]


async def test_a_missing_static_file_is_the_plain_404_any_unknown_path_gets(wsettings) -> None:
    # aiohttp's FileResponse looks for the file only as it is sent: a missing one was an empty
    # application/octet-stream 404, which a browser offers to download.
    async with web_client(wsettings) as (client, _):
        unknown = await client.get("/no-such-page")
        for path in ("/static/nope.css", "/static/no/such/file.js", "/static/style.css.map"):
            missing = await client.get(path)
            assert missing.status == 404, path
            assert missing.content_type == unknown.content_type == "text/plain", path
            assert await missing.text() == await unknown.text() == "404: Not Found", path
            assert missing.headers["X-Content-Type-Options"] == "nosniff", path
            head = await client.head(path)
            assert (head.status, head.content_type) == (404, "text/plain"), path
        served = await client.get("/static/style.css")
        assert served.status == 200 and served.content_type == "text/css"


async def test_a_suffix_of_no_bytes_for_a_missing_static_file_is_404(wsettings, caplog) -> None:
    # aiohttp's static handler looks for the file only as its answer is sent: asked for no bytes
    # of a file that is not there, a scanner got a 500 and the log an ERROR traceback each time.
    async with web_client(wsettings) as (client, _):
        for method in ("GET", "HEAD"):
            missing = await client.request(method, "/static/nope.css", headers={"Range": "bytes=-0"})
            assert missing.status == 404, method
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_browsers_favicon_request_is_answered_without_a_404_or_a_session(wsettings, caplog) -> None:
    # Every page's first view has the browser ask for /favicon.ico: a 404 each time, in its
    # console and in an access log, and a session cookie made for it.
    async with web_client(wsettings) as (client, _):
        caplog.clear()
        for method in ("GET", "HEAD"):
            icon = await client.request(method, "/favicon.ico")
            assert icon.status == 204, method
            assert "Set-Cookie" not in icon.headers, method
            assert "max-age" in icon.headers.get("Cache-Control", ""), method  # asked once a day
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        # The pages name an icon of their own, a small SVG the static folder serves.
        page = Page(await (await client.get("/desk/login")).text())
        href = page.one("link", rel="icon")["href"]
        svg = await client.get(href)
        assert svg.status == 200 and svg.content_type == "image/svg+xml"
        assert len(await svg.read()) < 400


# ---- the support desk --------------------------------------------------------------------------


async def test_a_login_is_checked_though_the_default_thread_pool_is_taken(wsettings) -> None:
    """Audio decoding and engine work run on asyncio's default thread pool: a login (scrypt, slow
    on purpose) has a pool of its own, so neither waits for the other."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
    release = threading.Event()
    async with web_client(wsettings) as (client, _):
        await csrf_of(client, "/desk/login")
        taken = loop.run_in_executor(None, release.wait)  # the default pool's one thread, held
        try:
            # Not a timing assertion: a guard so a login on the held pool fails the test, not hangs it.
            assert await asyncio.wait_for(log_in(client, "not the password"), 10) == 401
            assert await asyncio.wait_for(log_in(client), 10) == 303
        finally:
            release.set()
            await taken


async def test_a_login_flood_past_the_password_queue_is_refused_at_once(
    wsettings, monkeypatch, caplog
) -> None:
    """Logins from many addresses (each within its own rate limit) queued behind the two password
    threads without end, each holding its connection: past the queue one is refused at once."""
    import threading

    from bot.web import security

    release = threading.Event()
    real_verify = security.verify_password

    def held(password: str, stored: str) -> bool:
        release.wait()
        return real_verify(password, stored)

    monkeypatch.setattr(security, "verify_password", held)
    room = security.PASSWORD_THREADS + security.PASSWORD_QUEUE
    # From one client, under neither its limit nor the shared login's (one try each past that).
    s = wsettings.replace(web={"login_attempts": room + 2, "login_name_attempts": room + 2})
    async with web_client(s) as (client, _):
        token = await csrf_of(client, "/desk/login")
        checks = client.app[STATE].passwords

        async def attempt(password: str = "not the password") -> object:
            return await client.post(
                "/desk/login", data={"csrf": token, "password": password}, allow_redirects=False
            )

        waiting = [asyncio.create_task(attempt()) for _ in range(room)]
        try:
            while checks.taken < room:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.01)
            # Not a timing assertion: a guard so a login queued behind the held ones fails the
            # test, not hangs it.
            refused = await asyncio.wait_for(attempt(STAFF_PASSWORD), 10)
            said = await refused.text()
        finally:
            release.set()
            answered = await asyncio.gather(*waiting)
        assert [a.status for a in answered] == [401] * room  # type: ignore[attr-defined]
        assert await log_in(client) == 303  # free again
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert "checking many logins at once: try again in 5 seconds" in said
    assert sum("staff logins refused" in r.getMessage() for r in caplog.records) == 1
    assert checks.taken == 0


def test_a_password_check_running_when_the_server_stops_logs_no_error(monkeypatch, caplog) -> None:
    """A stop (SIGTERM, a deploy) while a login's scrypt runs: the check ends after the event loop
    has closed, and telling the closed loop that its count is free logged an ERROR traceback
    ("exception calling callback ... Event loop is closed") on an orderly stop."""
    import threading

    from bot.web import security

    started, release = threading.Event(), threading.Event()

    def held(password: str, stored: str) -> bool:
        started.set()
        release.wait()
        return False

    monkeypatch.setattr(security, "verify_password", held)
    checks = security.PasswordChecks()

    async def serve_then_stop() -> None:
        login = asyncio.create_task(checks.verify(STAFF_PASSWORD, STAFF_HASH))
        await asyncio.to_thread(started.wait)
        login.cancel()  # the server's shutdown cancels the request's handler
        await checks.aclose()

    asyncio.run(serve_then_stop())  # and the loop is closed
    release.set()
    checks._pool.shutdown(wait=True)  # the check has ended, its done callback run
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_desk_needs_a_login_and_wrong_passwords_are_rate_limited(settings) -> None:
    s = web_settings(settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="3")
    async with web_client(s) as (client, _):
        for path, then in (
            ("/desk", ""),
            ("/desk/ticket/GRV-10", "?next=/desk/ticket/GRV-10"),
            ("/desk/charts", "?next=/desk/charts"),
            ("/desk/check", "?next=/desk/check"),
        ):
            got = await client.get(path, allow_redirects=False)
            assert got.status == 303 and got.headers["Location"] == "/desk/login" + then, path
        assert [await log_in(client, "wrong") for _ in range(3)] == [401, 401, 401]
        assert await log_in(client) == 429  # the right password too, until the window passes
        assert (await client.get("/desk", allow_redirects=False)).status == 303


def next_field(html: str) -> str | None:
    found = Page(html).all("input", name="next")
    return found[0]["value"] if found else None


async def test_a_login_goes_on_to_the_desk_page_that_asked_for_it(wsettings) -> None:
    # A ticket's link from a colleague, or a page left open past its login, opened the grievance
    # list after the password, whatever page it was.
    async with web_client(wsettings) as (client, _):
        asked = "/desk?status=open&q=season reward"
        sent = await client.get(asked, allow_redirects=False)
        login = sent.headers["Location"]
        assert login.startswith("/desk/login?next=")
        page = await (await client.get(login)).text()
        then = next_field(page)
        assert then == "/desk?status=open&q=season+reward"
        token = CSRF.search(page).group(1)  # type: ignore[union-attr]
        # A wrong password first: the page it gives again still goes on to the same page.
        wrong = await client.post("/desk/login", data={"csrf": token, "password": "wrong", "next": then})
        assert wrong.status == 401 and next_field(await wrong.text()) == then
        form = {"csrf": token, "password": STAFF_PASSWORD, "next": then}
        done = await client.post("/desk/login", data=form, allow_redirects=False)
        assert done.status == 303 and done.headers["Location"] == then
        listed = await client.get(done.headers["Location"])
        assert "1–1 of 1 grievance" in await listed.text()


@pytest.mark.parametrize("asked", ["/desk?q=C%2B%2B", "/desk?q=Q%26A&status=open", "/desk?q=100%25"])
async def test_a_login_goes_on_to_a_search_of_reserved_characters_as_it_was(wsettings, asked: str) -> None:
    # A search for "C++" or "Q&A" went on, after the password, to a search for "C%2B%2B" or
    # "Q%26A": its escapes were escaped again.
    async with web_client(wsettings) as (client, _):
        login = (await client.get(asked, allow_redirects=False)).headers["Location"]
        page = await (await client.get(login)).text()
        assert next_field(page) == asked
        form = {"csrf": CSRF.search(page).group(1), "password": STAFF_PASSWORD, "next": asked}  # type: ignore[union-attr]
        done = await client.post("/desk/login", data=form, allow_redirects=False)
        assert done.status == 303 and done.headers["Location"] == asked


@pytest.mark.parametrize(
    "then",
    [
        "//evil.example/desk",
        "https://evil.example/desk",
        "/desktop",
        "/",
        "/desk/logout",
        # The login page itself: logged in, it would be the password field again, as if refused.
        "/desk/login",
        "/desk/login?next=/desk/ticket/GRV-10",
        # Past MAX_NEXT_CHARS: no page of the desk has a path or search that long.
        "/desk?q=" + "x" * desk.MAX_NEXT_CHARS,
        "/\\evil.example",
        # Dot segments a browser resolves: out of /desk, or to "//evil.example" as a path.
        "/desk/.." + "/playground/tickets",  # joined: test_repository reads "/../" as a folder
        "/desk/%2e%2e/metrics",
        "/desk/..%2f..%2f/evil.example",
        "/desk/./login",
    ],
)
async def test_a_login_goes_on_to_no_page_but_the_desks(wsettings, then: str) -> None:
    async with web_client(wsettings) as (client, _):
        assert next_field(await (await client.get("/desk/login", params={"next": then})).text()) is None
        token = await csrf_of(client, "/desk/login")
        form = {"csrf": token, "password": STAFF_PASSWORD, "next": then}
        done = await client.post("/desk/login", data=form, allow_redirects=False)
        assert done.status == 303 and done.headers["Location"] == "/desk", then


SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}  # as a browser sends with the ticket page's form


async def test_a_note_sent_once_the_login_lapsed_is_given_back_to_add_after_logging_in(settings) -> None:
    # A note written over a long look at a ticket was lost with the page when its login had
    # ended meanwhile: the desk sent the browser to the login page, and the note nowhere.
    hours = web_settings(settings.storage_dir, VOXDESK_WEB_SESSION_HOURS="2")
    note = "Refunded 20 dollars; <b>ledger</b> checked.\nTold the player."
    async with web_client(hours) as (client, core):
        now = [time.time()]
        client.app[STATE].clock = lambda: now[0]
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        now[0] += 2.5 * 3600
        done = await client.post(
            "/desk/ticket/GRV-10/note", data={"csrf": token, "body": note}, headers=SAME_ORIGIN
        )
        assert done.status == 401
        page = Page(await done.text())
        given = page.one("textarea", id="note-body")
        assert given["<text>"] == note and "readonly" in given
        assert page.one("h1")["<text>"] == "Your note on GRV-10 was not saved"
        assert "has ended" in page.text_of("refused")
        assert page.all("a", href="/desk/ticket/GRV-10")  # to open it again: the login, then it
        reopened = await client.get("/desk/ticket/GRV-10", allow_redirects=False)
        assert reopened.headers["Location"] == "/desk/login?next=/desk/ticket/GRV-10"
        assert await core.grievances.local_store.staff_notes("GRV-10") == []


async def test_a_note_or_status_sent_from_a_page_whose_session_ended_says_it_was_not_done(wsettings) -> None:
    # Logged out in another tab, or a cookie past its age: the session the page's token was of
    # is gone, and the CSRF check refused the note with a line of text, the note lost.
    note = "Asked the player for the receipt."
    async with web_client(wsettings) as (client, core):
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        out = await client.post("/desk/logout", data={"csrf": token}, allow_redirects=False)
        assert out.status == 303
        done = await client.post(
            "/desk/ticket/GRV-10/note", data={"csrf": token, "body": note}, headers=SAME_ORIGIN
        )
        assert done.status == 403
        page = Page(await done.text())
        assert page.one("textarea", id="note-body")["<text>"] == note
        # A status change sent from a page of that session is not made either, and says so.
        moved = await client.post(
            "/desk/ticket/GRV-10/status", data={"csrf": token, "status": "resolved"}, headers=SAME_ORIGIN
        )
        assert moved.status == 403
        said = Page(await moved.text())
        assert said.one("h1")["<text>"] == "The status of GRV-10 was not changed"
        assert "was not set to resolved" in said.text_of("refused")
        kept = await core.grievances.local_store.staff_get("GRV-10")
        assert kept is not None and kept.status == "in progress"
        # From another site (a forged form), no words of its own are put on the desk's page.
        forged = await client.post(
            "/desk/ticket/GRV-10/note",
            data={"csrf": "x", "body": "Call 555-0100 now"},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        )
        assert forged.status == 403 and "555-0100" not in await forged.text()
        assert await core.grievances.local_store.staff_notes("GRV-10") == []


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a browser that says neither where the form is from
        {"Origin": "https://evil.example"},  # one without Sec-Fetch-Site (Safari before 16.4)
        {"Origin": "null"},  # a sandboxed frame's, or a data: page's
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain's page
        {"Sec-Fetch-Site": "cross-site", "Origin": "SELF"},  # Sec-Fetch-Site is believed first
    ],
)
async def test_a_note_forged_without_sec_fetch_site_puts_no_words_on_the_desk(wsettings, headers) -> None:
    async with web_client(wsettings) as (client, _):
        here = f"http://{client.host}:{client.port}"
        sent = {k: here if v == "SELF" else v for k, v in headers.items()}
        forged = await client.post(
            "/desk/ticket/GRV-10/note", data={"body": "Call 555-0100 now"}, headers=sent
        )
        assert forged.status == 403 and "555-0100" not in await forged.text(), headers
        # The same form from a page of this host (its Origin alone) is given back.
        ours = await client.post(
            "/desk/ticket/GRV-10/note", data={"body": "Call 555-0100 now"}, headers={"Origin": here}
        )
        assert ours.status == 403 and "555-0100" in await ours.text()


async def test_a_login_refused_for_too_many_tries_says_when_to_try_again(settings) -> None:
    s = web_settings(settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="2", VOXDESK_WEB_LOGIN_SECONDS="90")
    async with web_client(s) as (client, _):
        now = [1000.0]
        client.app[STATE].logins.clock = lambda: now[0]
        assert [await log_in(client, "wrong") for _ in range(2)] == [401, 401]
        waits = []
        for at in (1010.5, 1089.6):  # 79.5 s and 0.4 s left: rounded up, never 0
            now[0] = at
            token = await csrf_of(client, "/desk/login")
            refused = await client.post("/desk/login", data={"csrf": token, "password": STAFF_PASSWORD})
            assert refused.status == 429
            waits.append((refused.headers.get("Retry-After"), await refused.text()))
    assert [w for w, _ in waits] == ["80", "1"]
    assert "try again in 80 seconds" in waits[0][1] and "try again in 1 second." in waits[1][1]


async def test_a_visitor_with_a_csrf_token_but_no_login_can_neither_note_nor_move_a_ticket(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        before = await store.staff_get("GRV-10")
        token = await csrf_of(client)  # the playground's: every visitor's session has one
        for path, data in (("note", {"body": "refund sent"}), ("status", {"status": "resolved"})):
            done = await client.post(f"/desk/ticket/GRV-10/{path}", data={"csrf": token, **data})
            assert done.status == 401, path  # not done, and said so
        assert await store.staff_get("GRV-10") == before
        assert await store.staff_notes("GRV-10") == []


async def test_a_session_without_a_csrf_token_matches_no_token_sent(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        # No page seen: the session holds no token, and what an empty one reads as is no token.
        for sent in ("None", "", "null"):
            done = await client.post(
                "/desk/login", data={"password": STAFF_PASSWORD}, headers={"X-CSRF-Token": sent}
            )
            assert done.status == 403, sent


async def test_desk_is_locked_without_a_staff_password(settings) -> None:
    async with web_client(settings) as (client, _):  # no VOXDESK_WEB_STAFF_PASSWORD_HASH
        assert "No staff password is set" in await (await client.get("/desk/login")).text()
        token = await csrf_of(client, "/")
        done = await client.post("/desk/login", data={"csrf": token, "password": ""}, allow_redirects=False)
        assert done.status == 401


async def test_desk_lists_and_filters_by_status_category_and_age(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        assert await log_in(client) == 303
        html = await (await client.get("/desk")).text()
        assert "GRV-10" in html and "GRV-11" in html
        store = core.grievances.local_store
        rows = await store.staff_list()
        in_progress = await (await client.get("/desk", params={"status": "in progress"})).text()
        for r in rows:
            assert (f">{r.local_key}<" in in_progress) == (r.status == "in progress"), r.local_key
        wallet = await (await client.get("/desk", params={"category": "wallet"})).text()
        for r in rows:
            assert (f">{r.local_key}<" in wallet) == (r.category == "wallet"), r.local_key
        fresh = await core.grievances.register(NOVA, "wallet", "just now")
        recent = await (await client.get("/desk", params={"age": "-1"})).text()
        assert f">{fresh.key}<" in recent and ">GRV-10<" not in recent  # the seed is from 2026-11
        old = await (await client.get("/desk", params={"age": "7"})).text()
        assert f">{fresh.key}<" not in old


async def test_the_desk_lists_grievances_jira_closed_without_a_fix_by_that_status(wsettings) -> None:
    # Jira's copy of an issue staff closed as Won't Do or as a duplicate: a filter by it was
    # refused as a status the desk has not.
    async with web_client(wsettings) as (client, core):
        assert await log_in(client) == 303
        store = core.grievances.local_store
        declined = await store.register(NOVA, "wallet", "charged twice for the battle pass")
        await store.update_status(declined.key, "declined", "2026-12-01T10:00:00Z")
        listed = await client.get("/desk", params={"status": "declined"})
        assert listed.status == 200
        html = await listed.text()
        assert f">{declined.key}<" in html and ">GRV-10<" not in html
        assert (await client.get("/desk", params={"status": "duplicate"})).status == 200


async def test_a_status_staff_cannot_set_is_preselected_by_no_option(wsettings) -> None:
    # A status no option names (one set by hand in the database) selected no option, and the
    # browser showed the first, "open": one click on "Set status" reopened the ticket and told
    # its player so.
    async with web_client(wsettings) as (client, core):
        assert await log_in(client) == 303
        store = core.grievances.local_store
        kept = await store.register(NOVA, "wallet", "charged twice for the battle pass")
        await store.update_status(kept.key, "escalated", "2026-12-01T10:00:00Z")
        html = await (await client.get(f"/desk/ticket/{kept.key}")).text()
        form = html[html.index('<select name="status"') : html.index("</select>")]
        chosen = re.findall(r'<option value="([^"]*)"[^>]*\bselected\b[^>]*>([^<]*)<', form)
        assert chosen == [("", "escalated")], chosen
        assert "required" in form[: form.index(">")], "the form is sent only with a status chosen"
        # Sent anyway (a browser ignoring `required`), it changes nothing.
        token = await csrf_of(client, f"/desk/ticket/{kept.key}")
        sent = await client.post(
            f"/desk/ticket/{kept.key}/status",
            data={"csrf": token, "status": "", "was": "escalated"},
            allow_redirects=False,
        )
        assert sent.status == 400
        assert (await store.staff_get(kept.key)).status == "escalated"  # type: ignore[union-attr]


def offered_statuses(html: str) -> list[str]:
    """The statuses a ticket page's form offers staff to set."""
    form = html[html.index('<select name="status"') : html.index("</select>")]
    return re.findall(r'<option value="([^"]+)"', form)


async def test_staff_close_a_grievance_without_a_fix_and_its_player_hears_so(wsettings) -> None:
    # The desk offered open to closed alone: a complaint staff turned down or found a duplicate
    # of another on the local backend could only be "resolved", and its player waited for a fix.
    async with web_client(wsettings) as (client, core):
        assert await log_in(client) == 303
        store = core.grievances.local_store
        declined = await store.register(NOVA, "wallet", "charged twice for the battle pass")
        duplicate = await store.register(NOVA, "other", "lag spikes every evening")
        after = max([e if isinstance(e, int) else e.id for e in await store.news_events(0)], default=0)
        offered = offered_statuses(await (await client.get(f"/desk/ticket/{declined.key}")).text())
        assert "declined" in offered and "duplicate" in offered, offered
        token = await csrf_of(client, f"/desk/ticket/{declined.key}")
        for ticket, status in ((declined, "declined"), (duplicate, "duplicate")):
            moved = await client.post(
                f"/desk/ticket/{ticket.key}/status",
                data={"csrf": token, "status": status, "was": "open"},
                allow_redirects=False,
            )
            assert moved.status == 303, await moved.text()
        shown = await (await client.get(f"/desk/ticket/{declined.key}")).text()
        assert 'id="ticket-status">declined<' in shown
        listed = await (await client.get("/desk", params={"status": "duplicate"})).text()
        assert f">{duplicate.key}<" in listed and f">{declined.key}<" not in listed
        # Ticket news, the playground (a Discord player's words), and the tool's answer.
        events = [e for e in await store.news_events(after) if not isinstance(e, int)]
        closed = [(declined.key, "declined"), (duplicate.key, "duplicate")]
        assert [(e.local_key, e.status) for e in events] == closed
        assert await core.news.find() >= 2
        told = {i.ticket: i.text for i in await core.news.store.due() if i.user_id == NOVA}
        assert "closed without a fix" in told[declined.key], told
        assert "closed as a duplicate" in told[duplicate.key], told
        view = await (await client.get("/playground/tickets", params={"player": NOVA})).json()
        said = {t["key"]: t["status"] for t in view["tickets"]}
        assert (said[declined.key], said[duplicate.key]) == ("closed without a fix", "closed as a duplicate")
        rows = ticket_rows(await store.status(NOVA, limit=50), private=True)
        ended = {r["ticket_key"]: r["resolution"] for r in rows if "resolution" in r}
        assert ended[declined.key].startswith("declined: staff closed it without a fix"), ended
        assert ended[duplicate.key].startswith("a duplicate: staff closed it without a fix"), ended


async def test_a_grievance_waiting_for_jira_is_not_closed_without_a_fix_on_the_desk(wsettings) -> None:
    # Jira has no status for a refusal: the push would open the issue as To Do, and its player,
    # told it was closed, would hear it open again.
    async with web_client(wsettings) as (client, core):
        assert await log_in(client) == 303
        store = core.grievances.local_store
        pending = (await store.register(NOVA, "wallet", "top-up lost", push_state="pending")).key
        html = await (await client.get(f"/desk/ticket/{pending}")).text()
        offered = offered_statuses(html)
        assert "resolved" in offered and "declined" not in offered and "duplicate" not in offered
        assert "waits to reach Jira" in Page(html).text_of("refusals-wait")
        token = await csrf_of(client, f"/desk/ticket/{pending}")
        refused = await client.post(
            f"/desk/ticket/{pending}/status",
            data={"csrf": token, "status": "declined", "was": "open"},
            allow_redirects=False,
        )
        assert refused.status == 409
        assert "waits to reach Jira" in await refused.text()
        assert (await store.staff_get(pending)).status == "open"  # type: ignore[union-attr]


async def test_the_playground_shows_a_ticket_closed_without_a_fix_in_a_players_words(wsettings) -> None:
    # The playground's ticket list showed the stored word, where Discord players read it plainly.
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        ticket = await store.register(NOVA, "wallet", "charged twice for the battle pass")
        await store.update_status(ticket.key, "duplicate", "2026-12-01T10:00:00Z")
        view = await (await client.get("/playground/tickets", params={"player": NOVA})).json()
    assert {t["key"]: t["status"] for t in view["tickets"]}[ticket.key] == "closed as a duplicate"


@pytest.mark.parametrize(
    ("asked", "named", "without"),
    [
        ({"status": "bogus"}, ["status"], "/desk"),
        ({"status": "Open", "q": "refund", "sort": "oldest"}, ["status"], "/desk?sort=oldest&q=refund"),
        ({"category": "wallets", "status": "open"}, ["category"], "/desk?status=open"),
        ({"status": "done", "category": "x"}, ["status", "category"], "/desk"),
    ],
)
async def test_a_desk_filter_the_desk_has_not_is_refused_naming_it(wsettings, asked, named, without) -> None:
    # Filtered by a status no grievance can have, the list was empty under a filter form that
    # showed "any": as if nothing were filed at all, from a link typed by hand or an old bookmark.
    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        refused = await client.get("/desk", params=asked)
        assert refused.status == 400
        page = Page(await refused.text())
        alerts = " ".join(p["<text>"] for p in page.all("p", role="alert"))
        for name in named:
            assert f"no {name} “{asked[name]}”" in alerts, alerts
        assert page.one("a", id="without")["href"] == without
        # Each status or category the desk has, a link away, the other filters kept.
        hrefs = {a["href"] for a in page.all("a")}
        if "status" in named:
            kept = {k: v for k, v in asked.items() if k not in named}
            for choice in ("open", "in progress", "waiting on player", "resolved", "closed"):
                assert any(f"status={choice.replace(' ', '+')}" in h for h in hrefs), choice
            if "q" in kept:
                assert all("q=refund" in h for h in hrefs if "status=" in h)
        listed = await client.get(without)
        assert listed.status == 200


def test_every_error_a_page_shows_is_announced_as_an_alert() -> None:
    # A refusal page (a note not saved, a status changed meanwhile, a database down) was read by
    # a screen reader as any paragraph, wherever its reading got to. The login's error is the one
    # exception: it is the description of the password field, which has the focus on load, and so
    # is read there (an alert too would say it twice).
    templates = REPO / "bot" / "web" / "templates"
    unannounced = []
    for template in sorted(templates.glob("*.html")):
        for tag in re.findall(r"<[a-z]+ [^>]*class=\"error\"[^>]*>", template.read_text()):
            if 'role="alert"' not in tag and 'id="login-error"' not in tag:
                unannounced.append((template.name, tag))
    assert unannounced == []
    login = (templates / "login.html").read_text()
    assert "{% set password_first = not named or name or error %}" in login
    focused = '{% if password_first %} autofocus{% endif %} required{% if error %} aria-invalid="true"'
    assert focused + ' aria-describedby="login-error"' in login


async def many_grievances(store, count: int) -> None:  # type: ignore[no-untyped-def]
    """`count` more grievances, GRV-100 up, every other one open, filed an hour apart."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(count):
        at = (start + dt.timedelta(hours=i)).isoformat().replace("+00:00", "Z")
        status = "open" if i % 2 else "closed"
        rows.append(
            {
                "key": f"GRV-{100 + i}",
                "user_id": NOVA,
                "category": "other",
                "description": f"complaint number {i}",
                "status": status,
                "created_at": at,
                "updated_at": at,
            }
        )
    await store.seed(rows)


def keys_on(html: str) -> list[str]:
    return re.findall(r'href="/desk/ticket/(GRV-[0-9]+)"', html)


async def test_the_desk_pages_through_every_grievance_with_its_filters_kept(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await many_grievances(store, 2005)  # with the four demo grievances: 2,009
        await log_in(client)
        opened = await store.staff_count("open")
        assert opened == 1004  # 1,002 of ours and the demo GRV-11 and GRV-13
        html = await (await client.get("/desk", params={"status": "open"})).text()
        assert f"1–100 of {opened} grievances" in html
        # Every open grievance is reachable by following the next page, the filter kept in each link.
        seen: list[str] = []
        path: str | None = "/desk?status=open"
        while path:
            html = await (await client.get(path)).text()
            seen += keys_on(html)
            found = re.search(r'href="([^"]+)" rel="next"', html)
            path = found.group(1).replace("&amp;", "&") if found else None
            assert path is None or "status=open" in path
        assert len(seen) == opened == len(set(seen)) and "GRV-11" in seen
        assert "Page 11 of 11" in html and "1001–1004 of 1004" in html
        old = await (await client.get("/desk", params={"status": "open", "sort": "oldest"})).text()
        assert keys_on(old)[:3] == ["GRV-101", "GRV-103", "GRV-105"]  # filed from 1 Jan 2026 on
        aged = await store.staff_count(older_than_days=30)
        html = await (await client.get("/desk", params={"age": "30"})).text()
        assert f"of {aged} grievances" in html
        found = await (await client.get("/desk", params={"q": "grv-11"})).text()
        assert keys_on(found) == ["GRV-11"] and "1–1 of 1 grievance<" in found
        words = await (await client.get("/desk", params={"q": "number 1999"})).text()
        assert keys_on(words) == ["GRV-2099"]
        wild = await (await client.get("/desk", params={"q": "100%"})).text()
        assert keys_on(wild) == [] and "No grievances" in wild
        for odd in ("abc", "0", "99999999999", "²"):
            page = await client.get("/desk", params={"status": "open", "page": odd})
            assert page.status == 200, odd
        last = await (await client.get("/desk", params={"status": "open", "page": "500"})).text()
        assert "Page 11 of 11" in last


async def test_paging_back_to_fewer_than_a_page_shows_the_first_page_whole(wsettings) -> None:
    """?before=N with fewer than a page before N (grievances resolved or filed meanwhile) is the
    first page, a full one with nothing before it; an id too large to be one is no error."""
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await many_grievances(store, 300)  # with the four demo grievances: 152 open
        await log_in(client)
        first = await (await client.get("/desk", params={"status": "open"})).text()
        second = await (await client.get(str(link_of(first, "next")))).text()
        again = await (await client.get(str(link_of(second, "prev")))).text()
        assert keys_on(again) == keys_on(first) and len(keys_on(first)) == 100
        listed = await store.staff_list("open", limit=100)
        for mid in (listed[50].id, listed[99].id):  # 50 before it, and one short of a page
            back = await (await client.get("/desk", params={"status": "open", "before": str(mid)})).text()
            assert "1–100 of 152" in back and 'rel="prev"' not in back, mid
        # Past what int() reads (4,300 digits) too.
        for way, digits in itertools.product(("after", "before"), (20, 5000)):
            odd = await client.get("/desk", params={"status": "open", way: "9" * digits})
            assert odd.status == 200, (way, digits)
        # Next from a page whose last grievance has none after it now (those after it resolved
        # meanwhile): the last page, not the first again.
        oldest = (await store.staff_list("open", limit=200))[-1].id
        end = await (await client.get("/desk", params={"status": "open", "after": str(oldest)})).text()
        assert "101–152 of 152" in end and "Page 2 of 2" in end and 'rel="next"' not in end


def link_of(html: str, rel: str) -> str | None:
    found = re.search(rf'href="([^"]+)" rel="{rel}"', html)
    return found.group(1).replace("&amp;", "&") if found else None


async def test_paging_on_while_grievances_are_filed_and_resolved_shows_each_once(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await many_grievances(store, 400)
        await log_in(client)
        first = await (await client.get("/desk", params={"status": "open"})).text()
        was_open = {r.local_key for r in await store.staff_list("open", limit=1000)}
        assert len(was_open) == 202 and len(keys_on(first)) == 100
        # While one staff member reads the first page of open grievances, players file three more
        # (on top, newest first) and another staff member resolves five on that page.
        for i in range(3):
            await core.grievances.register(NOVA, "wallet", f"filed while the desk was read {i}")
        for key in keys_on(first)[10:15]:
            assert await store.set_status_by_staff(key, "resolved", by="staff")
        seen = keys_on(first)
        html, path = first, link_of(first, "next")
        while path:
            html = await (await client.get(path)).text()
            seen += keys_on(html)
            path = link_of(html, "next")
            assert path is None or "status=open" in path
        # None shown twice (the last of a page again at the top of the next), none skipped.
        assert len(seen) == len(set(seen))
        assert was_open - set(seen) == set()
        assert "Page 3 of 3" in html and "199–200 of 200" in html
        # Previous is the hundred just before the page; the first page once fewer are left.
        shown = [r.local_key for r in await store.staff_list("open", limit=1000)]
        back = await (await client.get(link_of(html, "prev"))).text()  # type: ignore[arg-type]
        assert keys_on(back) == shown[98:198] and "99–198 of 200" in back and "Page 2 of 3" in back
        top = await (await client.get(link_of(back, "prev"))).text()  # type: ignore[arg-type]
        assert keys_on(top) == shown[:100] and "1–100 of 200" in top and "Page 1 of 2" in top


async def test_the_desk_finds_one_status_without_reading_every_grievance(tmp_path) -> None:
    # A year on, "open" is a few thousand among a million resolved: through grievances_by_time the
    # page and its count read them all, on the connection each player's filing waits on.
    from bot.tools import grievance_store

    await (await grievance_store.LocalGrievanceStore.open(tmp_path / "grievances.db")).aclose()
    where, args = grievance_store._staff_where("open", None, None, None, "")
    page = grievance_store.STAFF_PAGE.format(where=where, order="created_at DESC, id DESC")
    with contextlib.closing(sqlite3.connect(tmp_path / "grievances.db")) as conn:
        for query, bound in ((page, (*args, 50, 0)), (grievance_store.STAFF_COUNT.format(where=where), args)):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query, bound)]
            assert any("grievances_by_status (status=?)" in step for step in plan), plan


async def test_the_desk_search_folds_in_python_only_what_sqlite_cannot(tmp_path, monkeypatch) -> None:
    # A search reads every row: a description of ASCII alone is lower-cased by SQLite
    # itself, and only the rest goes through Python's folding, found the same way.
    from bot.tools import grievance_store

    asked: list[str] = []
    real = grievance_store.folded

    def counted(text: str | None) -> str:
        asked.append(text or "")
        return real(text)

    monkeypatch.setattr(grievance_store, "folded", counted)
    store = await grievance_store.LocalGrievanceStore.open(tmp_path / "g.db")
    try:
        at = "2026-01-01T00:00:00Z"
        said = {
            "GRV-1": "REFUND please, charged twice",
            "GRV-2": "Écran noir, refund",
            "GRV-3": "lost coins\nRefund",
            "GRV-4": "Straße refund_x",
            "GRV-5": "nothing here",
        }
        await store.seed(
            [
                {"key": k, "user_id": NOVA, "category": "wallet", "description": d, "status": "open"}
                | {"created_at": at, "updated_at": at}
                for k, d in said.items()
            ]
        )
        for typed, found in (("Refund", {"GRV-1", "GRV-2", "GRV-3", "GRV-4"}), ("strasse", {"GRV-4"})):
            asked.clear()
            rows = await store.staff_list(search=typed)
            assert {r.local_key for r in rows} == found, typed
            described = [a for a in asked if a in said.values()]
            assert sorted(described) == sorted([said["GRV-2"], said["GRV-4"]]), typed
    finally:
        await store.aclose()


async def test_the_desk_finds_words_in_any_case_of_any_alphabet(wsettings) -> None:
    said = {
        "GRV-201": "Écran noir après l'achat du pass",
        "GRV-202": "MEINE MÜNZEN SIND WEG",
        "GRV-203": "ДЕНЬГИ пропали после покупки",
        "GRV-204": "Die Straße der Münzen",
        "GRV-205": "İADE istiyorum",
        "GRV-206": "Ｖｉｐ pass: ｃｏｉｎｓ lost",  # full-width letters, as an IME types them
        "GRV-207": "e\u0301cran fige\u0301",  # accents decomposed, as some keyboards send them
    }
    at = "2026-01-01T00:00:00Z"
    async with web_client(wsettings) as (client, core):
        await core.grievances.local_store.seed(
            [
                {"key": key, "user_id": NOVA, "category": "wallet", "description": text, "status": "open"}
                | {"created_at": at, "updated_at": at}
                for key, text in said.items()
            ]
        )
        await log_in(client)
        for typed, found in (
            ("écran", ["GRV-207", "GRV-201"]),
            ("ÉCRAN", ["GRV-207", "GRV-201"]),
            ("münzen", ["GRV-204", "GRV-202"]),
            ("деньги", ["GRV-203"]),
            ("strasse", ["GRV-204"]),
            ("iade", ["GRV-205"]),
            ("vip coins", ["GRV-206"]),
            ("figé", ["GRV-207"]),
        ):
            page = await (await client.get("/desk", params={"q": typed})).text()
            assert sorted(keys_on(page), reverse=True) == found, typed


async def test_the_desk_finds_a_key_pasted_in_full_width_or_with_another_dash(wsettings) -> None:
    # As a player writes it in a channel, and /grievance status finds it: staff pasting it found
    # no ticket by its key.
    at = "2026-01-01T00:00:00Z"
    async with web_client(wsettings) as (client, core):
        await core.grievances.local_store.seed(
            [
                {"key": key, "user_id": NOVA, "category": "wallet", "description": "gems gone"}
                | {"status": "open", "created_at": at, "updated_at": at}
                for key in ("GRV-401", "GRV-402")
            ]
        )
        await log_in(client)
        for typed in ("ＧＲＶ－４０１", "grv\u2013401", "\u2067GRV-401\u2069"):
            page = await (await client.get("/desk", params={"q": typed})).text()
            assert keys_on(page) == ["GRV-401"], typed


async def test_the_desk_shortens_a_description_without_splitting_a_flag(wsettings) -> None:
    # Jinja's truncate cut Japanese (no spaces) at its 87th character: here, half of the flag.
    said = "ジ" * 86 + "🇯🇵" + "ジェムが消えました" * 5
    at = "2026-01-01T00:00:00Z"
    async with web_client(wsettings) as (client, core):
        await core.grievances.local_store.seed(
            [
                {"key": "GRV-301", "user_id": NOVA, "category": "wallet", "description": said}
                | {"status": "open", "created_at": at, "updated_at": at}
            ]
        )
        await log_in(client)
        page = await (await client.get("/desk", params={"q": "GRV-301"})).text()
    assert "ジ" * 86 + "🇯🇵ジ…" in page


async def test_oldest_first_is_by_the_time_filed_not_the_ticket_number(wsettings) -> None:
    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import iso_at

    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        made = await core.grievances.register(NOVA, "wallet", "filed at once")
        # Refused by a busy database a day earlier and kept: it gets its number only now.
        GrievanceSpool.beside(core.settings.storage_dir / "grievances.db").keep(
            user_id=NOVA,
            category="other",
            description="kept a day",
            at=iso_at(time.time() - 86400),
            state="local_only",
        )
        assert await store.file_spooled() == 1
        kept = (await store.status(NOVA))[0]
        assert int(kept.key.split("-")[1]) > int(made.key.split("-")[1])
        await log_in(client)
        fresh = await (await client.get("/desk", params={"age": "-30", "sort": "oldest"})).text()
        newest = await (await client.get("/desk", params={"age": "-30"})).text()
    assert keys_on(fresh)[-2:] == [kept.key, made.key]
    assert keys_on(newest)[:2] == [made.key, kept.key]


async def test_staff_note_and_status_change_reach_the_player_as_ticket_news(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        store = core.grievances.local_store
        after = max([e if isinstance(e, int) else e.id for e in await store.news_events(0)], default=0)
        page = await client.get("/desk/ticket/GRV-10")
        assert page.status == 200 and "Topped up 20 dollars" in await page.text()
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        noted = await client.post(
            "/desk/ticket/GRV-10/note", data={"csrf": token, "body": "Refund sent"}, allow_redirects=False
        )
        assert noted.status == 303
        moved = await client.post(
            "/desk/ticket/GRV-10/status", data={"csrf": token, "status": "resolved"}, allow_redirects=False
        )
        assert moved.status == 303 and moved.headers["Location"] == "/desk/ticket/GRV-10"
        html = await (await client.get("/desk/ticket/GRV-10")).text()
        assert "Refund sent" in html and 'id="ticket-status">resolved<' in html
        events = [e for e in await store.news_events(after) if not isinstance(e, int)]
        assert [(e.kind, e.local_key, e.status, e.user_id) for e in events] == [
            ("status", "GRV-10", "resolved", NOVA)
        ]
        # ... which the bot's news loop turns into a message for that player
        assert await core.news.find() >= 1
        told = await core.news.store.due()
        assert any(i.user_id == NOVA and i.ticket == "GRV-10" and "resolved" in i.text for i in told)
        view = await (await client.get("/playground/tickets", params={"player": NOVA})).json()
        assert {t["key"]: t["status"] for t in view["tickets"]}["GRV-10"] == "resolved"
        bad = await client.post("/desk/ticket/GRV-10/status", data={"csrf": token, "status": "deleted"})
        assert bad.status == 400
        missing = await client.post("/desk/ticket/GRV-999/status", data={"csrf": token, "status": "open"})
        assert missing.status == 404
        assert (await client.get("/desk/ticket/GRV-999")).status == 404


@pytest.mark.parametrize(
    ("path", "form", "trigger"),
    [
        ("note", {"body": "Refund sent"}, "BEFORE INSERT ON staff_notes"),
        ("status", {"status": "resolved"}, "BEFORE UPDATE OF status ON grievances"),
    ],
)
async def test_a_staff_change_the_database_refuses_leaves_it_free_and_the_desk_current(
    wsettings, path: str, form: dict[str, str], trigger: str
) -> None:
    async with web_client(wsettings) as (client, _):
        await log_in(client)
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        other = sqlite3.connect(wsettings.storage_dir / "grievances.db", timeout=1, isolation_level=None)
        try:
            # The database refuses this one write, as a full disk (or one busy past its timeout) does.
            other.execute(
                f"CREATE TRIGGER refuse {trigger} BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
            )
            refused = await client.post(
                f"/desk/ticket/GRV-10/{path}", data={"csrf": token, **form}, allow_redirects=False
            )
            # Staff are told what was not done and why, and a note is given back to send again.
            assert refused.status == 503
            said = await refused.text()
            assert "database or disk is full" in said
            if path == "note":
                assert "Your note on GRV-10 was not saved" in said
                assert (
                    '<textarea name="body" id="note-body" rows="3" maxlength="4000" required>Refund sent<'
                    in said
                )
            else:
                assert "The status of GRV-10 was not changed" in said
            # The refused write holds no lock: the bot in another process files and moves tickets...
            other.execute("DROP TRIGGER refuse")
            other.execute("UPDATE grievances SET status = 'closed' WHERE local_key = 'GRV-13'")
        finally:
            other.close()
        # ... and the desk shows what they did, and takes the change again.
        assert 'id="ticket-status">closed<' in await (await client.get("/desk/ticket/GRV-13")).text()
        again = await client.post(
            f"/desk/ticket/GRV-10/{path}", data={"csrf": token, **form}, allow_redirects=False
        )
        assert again.status == 303


def status_form(html: str, status: str) -> dict[str, str]:
    """The ticket page's status form as a browser sends it: its hidden fields, and `status` chosen."""
    page = Page(html)
    at = page.elements.index(page.one("form", action="/desk/ticket/GRV-10/status"))
    fields = {}
    for e in page.elements[at + 1 :]:
        if e["<tag>"] == "form":
            break
        if e["<tag>"] == "input" and e.get("type") == "hidden":
            fields[e["name"]] = e["value"]
    return fields | {"status": status}


async def test_a_status_changed_since_the_page_was_loaded_is_not_overwritten_unseen(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        store = core.grievances.local_store
        after = max([e if isinstance(e, int) else e.id for e in await store.news_events(0)], default=0)
        assert (await store.staff_get("GRV-10")).status == "in progress"  # type: ignore[union-attr]
        # Two staff open GRV-10; one resolves it, then the other, from the page loaded before,
        # asks its player for more.
        first = await (await client.get("/desk/ticket/GRV-10")).text()
        second = await (await client.get("/desk/ticket/GRV-10")).text()
        resolved = await client.post(
            "/desk/ticket/GRV-10/status", data=status_form(first, "resolved"), allow_redirects=False
        )
        assert resolved.status == 303
        late = await client.post(
            "/desk/ticket/GRV-10/status", data=status_form(second, "waiting on player"), allow_redirects=False
        )
        # The second is told the status changed under them, and to what, and nothing is changed.
        assert late.status == 409
        said = " ".join(Page(await late.text()).text_of("refused").split())
        assert "it was in progress, and is resolved now" in said and "not set to waiting on player" in said
        assert (await store.staff_get("GRV-10")).status == "resolved"  # type: ignore[union-attr]
        events = [e for e in await store.news_events(after) if not isinstance(e, int)]
        assert [(e.kind, e.status) for e in events] == [("status", "resolved")]
        # Both choosing the same status is no conflict; a page loaded now sets it again.
        same = await client.post(
            "/desk/ticket/GRV-10/status", data=status_form(second, "resolved"), allow_redirects=False
        )
        assert same.status == 303
        fresh = await (await client.get("/desk/ticket/GRV-10")).text()
        again = await client.post(
            "/desk/ticket/GRV-10/status", data=status_form(fresh, "waiting on player"), allow_redirects=False
        )
        assert again.status == 303
        assert (await store.staff_get("GRV-10")).status == "waiting on player"  # type: ignore[union-attr]
        # A form without the status its sender saw (a script), or with one that is no status, sets
        # it whatever it is.
        for was, status in (({}, "open"), ({"was": "bogus"}, "resolved")):
            form = {k: v for k, v in status_form(fresh, status).items() if k != "was"} | was
            done = await client.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
            assert done.status == 303, was
            assert (await store.staff_get("GRV-10")).status == status  # type: ignore[union-attr]


async def test_with_jira_the_desk_is_read_only_and_links_to_the_issue(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await store.mark_pushed("GRV-10", "STUDIO-7")
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        await log_in(client)
        html = await (await client.get("/desk")).text()
        assert 'href="https://studio.atlassian.net/browse/STUDIO-7"' in html and "worked in Jira" in html
        page = await (await client.get("/desk/ticket/GRV-10")).text()
        assert "Set status" not in page and "Add note" not in page and "is worked in Jira" in page
        token = await csrf_of(client, "/desk")
        for action, data in (("status", {"status": "resolved"}), ("note", {"body": "hi"})):
            refused = await client.post(f"/desk/ticket/GRV-10/{action}", data={"csrf": token, **data})
            assert refused.status == 403
        assert (await store.staff_get("GRV-10")).status == "in progress"  # type: ignore[union-attr]


async def test_the_desks_jira_links_carry_no_password_from_jira_url(wsettings) -> None:
    # jira.url may hold user:password@ (a proxy's, say): the links staff hover and click, and the
    # page's source, name the site alone.
    password = "jira-url-pass-123456"
    async with web_client(wsettings) as (client, core):
        await core.grievances.local_store.mark_pushed("GRV-10", "STUDIO-7")
        core.settings = core.settings.replace(
            tools={"grievances": "jira"},
            jira={"url": f"https://voxdesk:{password}@studio.atlassian.net/?token={password}"},
        )
        await log_in(client)
        for path in ("/desk", "/desk/ticket/GRV-10"):
            html = await (await client.get(path)).text()
            assert 'href="https://studio.atlassian.net/browse/STUDIO-7"' in html, path
            assert password not in html, path


def jira_takes_it_back_after_the_look(monkeypatch, store, remote_key: str) -> None:  # type: ignore[no-untyped-def]
    """The bot finds a grievance's issue in Jira again (follow) right after the desk looked
    whether the desk works it: a race between the desk's look and its write."""
    looked = desk._jiras

    async def found_again_meanwhile(request, key):  # type: ignore[no-untyped-def]
        row = await looked(request, key)
        await store.follow(key, remote_key)
        return row

    monkeypatch.setattr(desk, "_jiras", found_again_meanwhile)


async def test_with_jira_a_ticket_jira_no_longer_has_is_worked_on_the_desk(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await store.mark_pushed("GRV-10", "STUDIO-7")
        await store.mark_gone("GRV-10")  # a status lookup found STUDIO-7 deleted
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        await log_in(client)
        page = await (await client.get("/desk/ticket/GRV-10")).text()
        assert "Set status" in page and "Add note" in page and "is worked in Jira" not in page
        # Staff see why the status form is back: the issue it was pushed as is gone from Jira.
        why = Page(page).text_of("gone")
        assert why.startswith("GRV-10 was in Jira as STUDIO-7, but Jira no longer has"), why
        assert "(no longer in Jira)" in page
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        for action, data in (("status", {"status": "resolved"}), ("note", {"body": "refunded"})):
            done = await client.post(
                f"/desk/ticket/GRV-10/{action}", data={"csrf": token, **data}, allow_redirects=False
            )
            assert done.status == 303
        assert (await store.staff_get("GRV-10")).status == "resolved"  # type: ignore[union-attr]


async def test_a_status_set_as_jira_takes_its_ticket_back_is_left_to_jira(wsettings, monkeypatch) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await store.mark_pushed("GRV-10", "STUDIO-7")
        await store.mark_gone("GRV-10")
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        await log_in(client)
        form = status_form(await (await client.get("/desk/ticket/GRV-10")).text(), "resolved")
        jira_takes_it_back_after_the_look(monkeypatch, store, "STUDIO-7")
        refused = await client.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
        assert refused.status == 403 and "worked in Jira" in await refused.text()
        # Jira's status stays the ticket's: the desk's would stand until the issue next changed.
        assert (await store.staff_get("GRV-10")).status == "in progress"  # type: ignore[union-attr]


async def test_a_note_added_as_jira_takes_its_ticket_back_is_given_back(wsettings, monkeypatch) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await store.mark_pushed("GRV-10", "STUDIO-7")
        await store.mark_gone("GRV-10")
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        await log_in(client)
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        jira_takes_it_back_after_the_look(monkeypatch, store, "STUDIO-7")
        note = "Refunded 20 dollars"
        refused = await client.post(
            "/desk/ticket/GRV-10/note", data={"csrf": token, "body": note}, allow_redirects=False
        )
        # Kept here, it would sit on a ticket staff work in Jira, where nobody reads it.
        assert refused.status == 403 and refused.content_type == "text/html"
        page = Page(await refused.text())
        assert page.text_of("refused") == "GRV-10 is worked in Jira, not on the desk: add the note there."
        assert page.one("textarea", id="note-body")["<text>"] == note
        assert page.one("a", href="https://studio.atlassian.net/browse/STUDIO-7")
        assert await store.staff_notes("GRV-10") == []


async def test_a_status_refused_as_its_ticket_is_jiras_gets_a_page_as_a_note_does(
    wsettings, monkeypatch
) -> None:
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await log_in(client)
        form = status_form(await (await client.get("/desk/ticket/GRV-10")).text(), "resolved")
        await store.mark_pushed("GRV-10", "STUDIO-7")
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        pending = (await store.register(NOVA, "wallet", "top-up lost", push_state="pending")).key
        refused = await client.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
        # Staff keep the desk's header and links, and are sent to the issue, as for a note.
        assert refused.status == 403 and refused.content_type == "text/html"
        page = Page(await refused.text())
        assert page.one("h1")["<text>"] == "The status of GRV-10 was not changed"
        assert page.text_of("refused") == "GRV-10 is worked in Jira, not on the desk: set its status there."
        assert page.one("a", href="https://studio.atlassian.net/browse/STUDIO-7")
        waiting = await client.post(
            f"/desk/ticket/{pending}/status", data={**form, "was": "open"}, allow_redirects=False
        )
        assert waiting.status == 403 and waiting.content_type == "text/html"
        assert Page(await waiting.text()).text_of("refused") == (
            f"{pending} is waiting to reach Jira, and is worked there once it does: set its status"
            " there then."
        )
        # Taken back by Jira between the desk's look and its write: the same page.
        await store.mark_gone("GRV-10")
        jira_takes_it_back_after_the_look(monkeypatch, store, "STUDIO-7")
        raced = await client.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
        assert raced.status == 403 and raced.content_type == "text/html"
        assert Page(await raced.text()).one("a", href="https://studio.atlassian.net/browse/STUDIO-7")
        assert (await store.staff_get("GRV-10")).status == "in progress"  # type: ignore[union-attr]


async def test_the_ticket_page_shows_each_status_change_when_and_by_whom(wsettings) -> None:
    # The shared password's login makes the desk's changes "staff"; Jira's, polled back, say so.
    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await log_in(client)
        fresh = Page(await (await client.get("/desk/ticket/GRV-10")).text())
        assert fresh.text_of("no-status-history") == "No status change recorded."
        for status in ("resolved", "open"):
            form = status_form(await (await client.get("/desk/ticket/GRV-10")).text(), status)
            moved = await client.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
            assert moved.status == 303
        await store.mark_pushed("GRV-10", "STUDIO-7")
        await store.update_status("GRV-10", "waiting on player", "2026-12-06T10:00:00Z")
        await store.update_status("GRV-10", "waiting on player", "2026-12-06T10:05:00Z")  # no change
        page = Page(await (await client.get("/desk/ticket/GRV-10")).text())
        said = [" ".join(li["<text>"].split()) for li in page.all("li", **{"class": "status-change"})]
        assert await store.status_history("GRV-11") == []  # each ticket its own
    staff = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC: "
    assert len(said) == 3, said
    assert re.fullmatch(staff + "in progress → resolved, by staff", said[0]), said
    assert re.fullmatch(staff + "resolved → open, by staff", said[1]), said
    assert said[2] == "2026-12-06 10:00 UTC: open → waiting on player, by Jira"


# ---- named staff accounts (VOXDESK_WEB_STAFF) ---------------------------------------------

ALICE_PASSWORD = "alice's own desk password"
BOB_PASSWORD = "bob's own desk password"
ALICE_HASH = hash_password(ALICE_PASSWORD)
BOB_HASH = hash_password(BOB_PASSWORD)


def scrypt_hash(password: str, n: int) -> str:
    """A hash of voxdesk's shape at another cost, as one made by hand would be."""
    salt = b"a salt of sixteen"[:16]
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32)
    enc = base64.urlsafe_b64encode
    return f"scrypt${n}$8$1${enc(salt).decode()}${enc(digest).decode()}"


CHEAPER_HASH = scrypt_hash(BOB_PASSWORD, 2**12)  # a quarter of the cost voxdesk hashes at


def named_settings(storage: Path, staff: str = f"alice:{ALICE_HASH},Bob:{BOB_HASH}", **env: str):  # type: ignore[no-untyped-def]
    return make_settings(storage, VOXDESK_WEB_STAFF=staff, **env)


async def log_in_as(client: TestClient, name: str, password: str) -> int:
    token = await csrf_of(client, "/desk/login")
    form = {"csrf": token, "name": name, "password": password}
    return (await client.post("/desk/login", data=form, allow_redirects=False)).status


def history_of(html: str) -> list[str]:
    return [" ".join(li["<text>"].split()) for li in Page(html).all("li", **{"class": "status-change"})]


async def test_many_clients_failing_one_name_get_one_try_each_and_its_owner_still_logs_in(
    settings, caplog
) -> None:
    s = named_settings(
        settings.storage_dir,
        VOXDESK_WEB_LOGIN_NAME_ATTEMPTS="3",
        VOXDESK_WEB_LOGIN_SECONDS="100",
        VOXDESK_WEB_TRUST_FORWARDED="true",
    )
    async with web_client(s) as (client, _):
        now = [1000.0]
        st = client.app[STATE]
        st.logins.clock = st.client_failures.clock = st.name_failures.clock = lambda: now[0]

        async def attempt(address: str, name: str, password: str) -> tuple[int, str | None]:
            # A login makes a fresh session, and token: each attempt takes the page's.
            form = {"csrf": await csrf_of(client, "/desk/login"), "name": name, "password": password}
            got = await client.post(
                "/desk/login", data=form, headers={"X-Forwarded-For": address}, allow_redirects=False
            )
            return got.status, got.headers.get("Retry-After")

        # An attacker on three addresses, each under the per-client limit (5).
        for n in (1, 2, 3):
            assert await attempt(f"203.0.113.{n}", "alice", "guess") == (401, None)
        now[0] = 1040.0
        # Each has had its try at alice: the right password is not checked, so says nothing.
        assert await attempt("203.0.113.1", "alice", ALICE_PASSWORD) == (429, "60")
        assert await attempt("203.0.113.2", "alice", "guess") == (429, "60")
        # A new address gets one try, no more; the refusals were no tries, and bob is no target.
        assert await attempt("203.0.113.4", "alice", "guess") == (401, None)
        assert await attempt("203.0.113.4", "alice", "guess") == (429, "100")
        assert await attempt("203.0.113.1", "bob", "guess") == (401, None)
        # alice herself, from an address that has not failed: in, whatever the others try.
        assert await attempt("198.51.100.7", "alice", ALICE_PASSWORD) == (303, None)
        # Past its own failures' window a client is checked again, as Retry-After said.
        now[0] = 1141.0
        assert await attempt("203.0.113.2", "alice", ALICE_PASSWORD) == (303, None)
    started = [r.getMessage() for r in caplog.records if "from any client" in r.getMessage()]
    assert started == [
        "staff logins: 3 failed for 'alice' within 100 s, from any client: a client with a failed"
        " login of its own gets no more tries of it until that lapses"
    ]


async def test_a_login_sent_twice_at_once_is_no_failure_while_its_name_is_under_attack(
    settings, monkeypatch
) -> None:
    # A double click on "Log in": the second is sent while the first's check runs, and neither
    # has failed, so neither is refused by the per-name slow-down.
    import threading

    from bot.web import security

    release = threading.Event()
    real_verify = security.verify_password

    def held(password: str, stored: str) -> bool:
        release.wait()
        return real_verify(password, stored)

    s = named_settings(
        settings.storage_dir, VOXDESK_WEB_LOGIN_NAME_ATTEMPTS="2", VOXDESK_WEB_TRUST_FORWARDED="true"
    )
    async with web_client(s) as (client, _):
        for n in (1, 2):  # two addresses' failures: alice is under attack
            forwarded = {"X-Forwarded-For": f"203.0.113.{n}"}
            form = {"csrf": await csrf_of(client, "/desk/login"), "name": "alice", "password": "guess"}
            assert (await client.post("/desk/login", data=form, headers=forwarded)).status == 401
        monkeypatch.setattr(security, "verify_password", held)
        checks = client.app[STATE].passwords
        form = {"csrf": await csrf_of(client, "/desk/login"), "name": "alice", "password": ALICE_PASSWORD}

        async def attempt() -> int:
            sent = await client.post(
                "/desk/login",
                data=form,
                headers={"X-Forwarded-For": "198.51.100.7"},
                allow_redirects=False,
            )
            return sent.status

        first = asyncio.create_task(attempt())
        while checks.taken < 1:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.01)
        second = asyncio.create_task(attempt())
        while checks.taken < 2 and not second.done():  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.01)
        release.set()
        assert await asyncio.gather(first, second) == [303, 303]


async def test_each_staff_member_logs_in_by_name_and_the_ticket_says_who_did_what(settings) -> None:
    from bot import player_data

    s = named_settings(settings.storage_dir)
    async with web_client(s) as (alice, _), TestClient(TestServer(alice.app)) as bob:
        login = Page(await (await alice.get("/desk/login")).text())
        assert login.one("input", name="name")["autocomplete"] == "username"
        assert await log_in_as(alice, "alice", BOB_PASSWORD) == 401  # another's password
        assert await log_in_as(alice, "carol", ALICE_PASSWORD) == 401  # a name with no account
        assert await log_in_as(alice, "alice", ALICE_PASSWORD) == 303
        assert await log_in_as(bob, " BOB ", BOB_PASSWORD) == 303  # a name in any case
        for client, status in ((alice, "resolved"), (bob, "open")):
            form = status_form(await (await client.get("/desk/ticket/GRV-10")).text(), status)
            moved = await client.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
            assert moved.status == 303
        token = await csrf_of(bob, "/desk/ticket/GRV-10")
        note = {"csrf": token, "body": "Refund sent"}
        assert (await bob.post("/desk/ticket/GRV-10/note", data=note, allow_redirects=False)).status == 303
        html = await (await alice.get("/desk/ticket/GRV-10")).text()
    said = history_of(html)
    assert [line.partition("UTC: ")[2] for line in said] == [
        "in progress → resolved, by alice",
        "resolved → open, by bob",
    ], said
    assert Page(html).one("div", **{"class": "meta"})["<text>"].startswith("bob · ")
    assert Page(html).one("button", type="submit", **{"class": "link"})["<text>"] == "Log out alice"
    exported = player_data.export(storage_paths(s), NOVA)["grievances"]
    assert [(c["to_status"], c["changed_by"]) for c in exported["status_changes"]] == [
        ("resolved", "alice"),
        ("open", "bob"),
    ]
    assert [(n["author"], n["body"]) for n in exported["staff_notes"]] == [("bob", "Refund sent")]


async def test_a_name_taken_out_of_voxdesk_web_staff_is_logged_out_at_its_next_request(settings) -> None:
    # A leaver's name is taken out and the desk restarted: their cookie, still readable under the
    # same session key and well within its age, opens nothing; everyone else stays logged in.
    both = named_settings(settings.storage_dir, VOXDESK_WEB_SESSION_KEY=FERNET_KEY)
    alone = named_settings(settings.storage_dir, f"alice:{ALICE_HASH}", VOXDESK_WEB_SESSION_KEY=FERNET_KEY)

    def cookie_of(client: TestClient) -> str:
        return next(c for c in client.session.cookie_jar if c.key == "voxdesk_session").value

    async with web_client(both) as (alice, _), TestClient(TestServer(alice.app)) as bob:
        assert await log_in_as(alice, "alice", ALICE_PASSWORD) == 303
        assert await log_in_as(bob, "bob", BOB_PASSWORD) == 303
        assert (await bob.get("/desk", allow_redirects=False)).status == 200
        cookies = {"alice": cookie_of(alice), "bob": cookie_of(bob)}
    async with web_client(alone) as (client, core):
        for name, cookie in cookies.items():
            async with TestClient(TestServer(client.app)) as browser:
                browser.session.cookie_jar.update_cookies({"voxdesk_session": cookie})
                got = await browser.get("/desk/ticket/GRV-10", allow_redirects=False)
                assert got.status == (200 if name == "alice" else 303), name
                token = await csrf_of(browser, "/desk/login")
                note = {"csrf": token, "body": f"from {name}"}
                await browser.post("/desk/ticket/GRV-10/note", data=note, allow_redirects=False)
        assert await log_in_as(client, "bob", BOB_PASSWORD) == 401
        notes = await core.grievances.local_store.staff_notes("GRV-10")
    assert [(n.author, n.body) for n in notes] == [("alice", "from alice")]


@pytest.mark.parametrize(
    ("staff", "said", "unsaid"),
    [
        (
            f"alice:{ALICE_HASH},bob:{BOB_HASH[:30]}",
            "VOXDESK_WEB_STAFF's entry 2 (bob) is not a hash",
            BOB_HASH[:30],
        ),
        (
            f"alice:{ALICE_HASH},{BOB_PASSWORD}",
            "VOXDESK_WEB_STAFF's entry 2 is not name:hash",
            "desk password",
        ),
        (f"bob smith:{BOB_HASH}", "VOXDESK_WEB_STAFF's entry 1 has no name", "smith"),
        (f"alice:{ALICE_HASH},ALICE:{BOB_HASH}", "VOXDESK_WEB_STAFF's entry 2 names 'alice' again", BOB_HASH),
        (f"jira:{ALICE_HASH}", "VOXDESK_WEB_STAFF's entry 1 is named 'jira'", ALICE_HASH),
        # All of the characters a name may have, but the first: the line says which rule it broke.
        (
            f"_alice:{ALICE_HASH}",
            "VOXDESK_WEB_STAFF's entry 1 has no name of 1 to 32 letters a-z, digits, '.', '_' or"
            " '-', the first a letter or digit,",
            ALICE_HASH,
        ),
        # A hash made by hand at another cost: a login by its name would take a time of its own,
        # unlike a name with no account's, checked at the first entry's cost.
        (
            f"alice:{ALICE_HASH},bob:{CHEAPER_HASH}",
            "VOXDESK_WEB_STAFF's entry 2 (bob) is not a hash from `voxdesk web-password --name bob`",
            CHEAPER_HASH,
        ),
    ],
    ids=["hash-cut-short", "no-name", "name-with-a-space", "twice", "jira", "first-not-a-letter", "cheaper"],
)
async def test_a_malformed_voxdesk_web_staff_is_one_line_at_start_and_in_check(
    settings, staff: str, said: str, unsaid: str
) -> None:
    from bot.config import ConfigError
    from bot.health import check_all

    s = named_settings(settings.storage_dir, staff)
    with pytest.raises(ConfigError) as refused:
        async with web_client(s):
            pass
    assert str(refused.value).startswith(said) and "\n" not in str(refused.value)
    assert unsaid not in str(refused.value)
    line = next(r.line() for r in await check_all(s) if r.service == "web")
    assert line.startswith(f"FAIL  web        secrets  {said}") and unsaid not in line


async def test_web_password_with_a_name_prints_the_entry_that_logs_that_name_in(
    settings, monkeypatch, capsys
) -> None:
    import io

    from bot.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("carol's own desk password\n"))
    assert main(["web-password", "--name", "Carol"]) == 0
    said = capsys.readouterr()
    entry = said.out.strip()
    assert entry.startswith("carol:scrypt$") and said.out.count("\n") == 1
    assert said.err.startswith("add it to VOXDESK_WEB_STAFF")
    staff = f"alice:{ALICE_HASH},{entry}"
    async with web_client(named_settings(settings.storage_dir, staff)) as (client, _):
        assert await log_in_as(client, "carol", "carol's own desk password") == 303
    for refused in ("jira", "carol smith", "", "_carol"):
        assert main(["web-password", "--name", refused]) == 2
        rule = "1 to 32 letters a-z, digits, '.', '_' or '-', the first a letter or digit,"
        assert capsys.readouterr().err.startswith(f"web-password: --name is {rule}"), refused


def test_web_password_asks_in_a_terminal_whose_password_it_hashes(monkeypatch, capsys) -> None:
    # docs/web.md's example asks for two in one line, $(... --name alice),$(... --name bob): each
    # prompt says whose, or bob's could be typed where alice's is asked for.
    import getpass
    import io

    from bot.cli import main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or "a long enough password")
    assert main(["web-password", "--name", "Alice"]) == 0
    assert main(["web-password"]) == 0
    assert capsys.readouterr().out.startswith("alice:scrypt$")
    assert asked == ["password for alice: ", "password: "]


async def test_named_accounts_and_the_shared_password_together_stop_start_up(settings) -> None:
    # A leaver who knew the shared password would keep the desk, whichever names are listed.
    from bot.config import ConfigError

    s = named_settings(settings.storage_dir, VOXDESK_WEB_STAFF_PASSWORD_HASH=STAFF_HASH)
    with pytest.raises(
        ConfigError, match="VOXDESK_WEB_STAFF and VOXDESK_WEB_STAFF_PASSWORD_HASH are both set"
    ):
        async with web_client(s):
            pass


async def test_the_shared_password_logs_in_as_staff_without_a_name(settings) -> None:
    from bot.web.security import password_mark

    wsettings = web_settings(settings.storage_dir, VOXDESK_WEB_SESSION_KEY=FERNET_KEY)
    # A login of a voxdesk before named accounts, whose session holds no name: still the desk's.
    then = int(time.time())
    before = {"staff": True, "since": then, "login": "an-older-login", "password": password_mark(wsettings)}
    older = Fernet(FERNET_KEY.encode()).encrypt(json.dumps({"created": then, "session": before}).encode())
    async with web_client(wsettings) as (client, core):
        async with TestClient(TestServer(client.app)) as browser:
            browser.session.cookie_jar.update_cookies({"voxdesk_session": older.decode()})
            assert (await browser.get("/desk", allow_redirects=False)).status == 200
        assert Page(await (await client.get("/desk/login")).text()).all("input", name="name") == []
        assert await log_in(client) == 303
        form = status_form(await (await client.get("/desk/ticket/GRV-10")).text(), "resolved")
        assert (
            await client.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
        ).status == 303
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        note = {"csrf": token, "body": "Refund sent"}
        assert (await client.post("/desk/ticket/GRV-10/note", data=note, allow_redirects=False)).status == 303
        html = await (await client.get("/desk/ticket/GRV-10")).text()
        history = await core.grievances.local_store.status_history("GRV-10")
    assert history_of(html)[0].endswith("in progress → resolved, by staff")
    assert [c.changed_by for c in history] == ["staff"]
    assert Page(html).one("div", **{"class": "meta"})["<text>"].startswith("staff · ")
    assert Page(html).one("button", type="submit", **{"class": "link"})["<text>"] == "Log out"


async def test_a_named_session_opens_the_desk_only_under_its_own_name_and_password(settings) -> None:
    # Each session's mark is of its account's hash: alice's session with bob's name (made by one
    # holding the session key) opens nothing, nor does a shared password's session of before
    # named accounts (no name, the shared password's mark).
    from bot.web.security import password_mark

    named = named_settings(settings.storage_dir, VOXDESK_WEB_SESSION_KEY=FERNET_KEY)
    shared = web_settings(settings.storage_dir, VOXDESK_WEB_SESSION_KEY=FERNET_KEY)
    fernet = Fernet(FERNET_KEY.encode())
    async with web_client(named) as (client, _):
        assert await log_in_as(client, "alice", ALICE_PASSWORD) == 303
        made = json.loads(fernet.decrypt(next(c for c in client.session.cookie_jar).value.encode()))
        alices = made["session"]
        unnamed = {k: v for k, v in alices.items() if k != "name"}
        sessions = {
            "alice's": alices,
            "alice's renamed bob": alices | {"name": "bob"},
            "alice's in capitals": alices | {"name": "ALICE"},
            "the shared password's, no name": unnamed | {"password": password_mark(shared)},
            "the shared password's, as staff": alices | {"name": "staff", "password": password_mark(shared)},
        }
        opened = {}
        for whose, session in sessions.items():
            cookie = fernet.encrypt(json.dumps(made | {"session": session}).encode()).decode()
            async with TestClient(TestServer(client.app)) as browser:
                browser.session.cookie_jar.update_cookies({"voxdesk_session": cookie})
                opened[whose] = (await browser.get("/desk", allow_redirects=False)).status == 200
    assert opened == {whose: whose == "alice's" for whose in sessions}


async def test_an_unknown_name_is_refused_as_a_wrong_password_is_and_never_logged(
    settings, monkeypatch, caplog
) -> None:
    # Users type passwords into name fields: a name with no account is never logged, and its
    # refusal (the scrypt it costs, status, headers, words) tells nobody which names have one.
    from bot.web import security

    checked: list[str] = []
    real = security.verify_password

    def verify(password: str, stored: str) -> bool:
        checked.append(stored.rpartition("$")[0].rpartition("$")[0])  # scrypt$N$r$p: its cost
        return real(password, stored)

    monkeypatch.setattr(security, "verify_password", verify)
    caplog.set_level(logging.INFO)
    answers = {}
    async with web_client(named_settings(settings.storage_dir)) as (client, _):
        for name in ("bob", "bobs-password-typed-here", "bob's password typed here"):
            token = await csrf_of(client, "/desk/login")
            form = {"csrf": token, "name": name, "password": "not anyone's password"}
            got = await client.post("/desk/login", data=form, allow_redirects=False)
            headers = {k: v for k, v in got.headers.items() if k not in ("Date", "Content-Length")}
            answers[name] = (got.status, headers, (await got.text()).replace(name, "NAME"))
    known, *unknown = answers.values()
    assert known[0] == 401 and all(answer == known for answer in unknown[:1])
    # Not name-shaped: not given back on the page, the only difference there may be.
    assert unknown[1][:2] == known[:2] and "NAME" not in unknown[1][2]
    assert checked == [f"scrypt${security.SCRYPT_N}${security.SCRYPT_R}${security.SCRYPT_P}"] * 3
    assert not [r for r in caplog.records if "typed here" in r.getMessage()]
    logged = [r.getMessage() for r in caplog.records if r.name == "bot.web.desk"]
    unnamed = "staff login failed for client 127.0.0.1"
    assert logged == ["staff login failed for 'bob' from client 127.0.0.1", unnamed, unnamed]


async def test_a_staff_member_acts_under_their_own_name_whatever_the_form_says_and_logs_out_alone(
    settings,
) -> None:
    s = named_settings(settings.storage_dir, VOXDESK_WEB_SESSION_KEY=FERNET_KEY)
    forged = {"name": "bob", "by": "bob", "author": "bob", "changed_by": "bob"}
    async with web_client(s) as (alice, core), TestClient(TestServer(alice.app)) as bob:
        assert await log_in_as(alice, "alice", ALICE_PASSWORD) == 303
        assert await log_in_as(bob, "bob", BOB_PASSWORD) == 303
        form = status_form(await (await alice.get("/desk/ticket/GRV-10")).text(), "resolved") | forged
        moved = await alice.post("/desk/ticket/GRV-10/status", data=form, allow_redirects=False)
        assert moved.status == 303
        note = {"csrf": await csrf_of(alice, "/desk/ticket/GRV-10"), "body": "Refund sent"} | forged
        assert (await alice.post("/desk/ticket/GRV-10/note", data=note, allow_redirects=False)).status == 303
        copy = next(c for c in alice.session.cookie_jar if c.key == "voxdesk_session").value
        token = await csrf_of(alice, "/desk")
        assert (await alice.post("/desk/logout", data={"csrf": token}, allow_redirects=False)).status == 303
        async with TestClient(TestServer(alice.app)) as thief:
            thief.session.cookie_jar.update_cookies({"voxdesk_session": copy})
            assert (await thief.get("/desk", allow_redirects=False)).status == 303
        assert (await bob.get("/desk", allow_redirects=False)).status == 200
        store = core.grievances.local_store
        history, notes = await store.status_history("GRV-10"), await store.staff_notes("GRV-10")
    assert [c.changed_by for c in history] == ["alice"]
    assert [n.author for n in notes] == ["alice"]


async def test_a_ticket_link_as_typed_or_by_its_jira_key_opens_the_ticket(wsettings) -> None:
    # A key typed into the address as a player wrote it, or the Jira key a colleague pasted,
    # was a bare line of text, "No grievance grv-10.", with no way back to the desk.
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        await core.grievances.local_store.mark_pushed("GRV-11", "STUDIO-7")
        for typed, key in (("grv-10", "GRV-10"), ("ＧＲＶ－１０", "GRV-10"), ("STUDIO-7", "GRV-11")):
            sent = await client.get(f"/desk/ticket/{typed}", allow_redirects=False)
            assert sent.status == 303 and sent.headers["Location"] == f"/desk/ticket/{key}", typed
        missing = await client.get("/desk/ticket/GRV-999")
        assert missing.status == 404
        page = Page(await missing.text())
        assert " ".join(page.one("h1")["<text>"].split()) == "No grievance GRV-999"
        assert page.all("a", href="/desk") and page.all("a", href="/desk?q=GRV-999")


async def test_a_key_typed_in_lower_case_is_the_local_key_before_another_tickets_jira_key(wsettings) -> None:
    # The Jira project numbers like the local store (GRV, the default): GRV-10's Jira issue is
    # GRV-11, another ticket than the local GRV-11. GRV-11 opened the local one and grv-11 the
    # other, the earlier filed of the two.
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        await core.grievances.local_store.mark_pushed("GRV-10", "GRV-11")
        assert (await client.get("/desk/ticket/GRV-11", allow_redirects=False)).status == 200
        for typed in ("grv-11", "ＧＲＶ－１１"):
            sent = await client.get(f"/desk/ticket/{typed}", allow_redirects=False)
            assert sent.status == 303 and sent.headers["Location"] == "/desk/ticket/GRV-11", typed


async def test_the_ticket_page_says_what_its_player_will_be_told_and_what_they_were(settings) -> None:
    s = web_settings(settings.storage_dir)
    async with web_client(s) as (client, core):
        await log_in(client)
        alone = await (await client.get("/desk/ticket/GRV-10")).text()
        told = Page(alone).one("p", id="who-is-told")
        assert " ".join(told["<text>"].split()).startswith(
            "The player is sent a DM (ticket news) once voxdesk run on"
        )
        assert "`" not in told["<text>"]  # a command in code, not in Markdown's backticks
        assert "<code>voxdesk run</code>" in alone and "told by the bot" not in alone
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        await client.post("/desk/ticket/GRV-10/status", data={"csrf": token, "status": "resolved"})
        await core.news.find()
        ids = [i.id for i in await core.news.store.due() if i.ticket == "GRV-10"]
        assert await core.news.store.claim(ids) == ids
        await core.news.store.finish(ids, "muted")
        told = await (await client.get("/desk/ticket/GRV-10")).text()
        last = Page(told).text_of("last-news")
        assert last == "Last ticket news for GRV-10: “resolved”, not sent: the player turned /notify off."
        playground = await core.grievances.register("web:abc:" + NOVA, "other", "from the playground")
        page = await (await client.get(f"/desk/ticket/{playground.key}")).text()
        assert "Nobody is told: this player is no Discord user" in page and "Last ticket news" not in page
    async with web_client(s, discord_ready=lambda: True) as (client, _):
        await log_in(client)
        beside = await (await client.get("/desk/ticket/GRV-11")).text()
        assert "The bot sends the player a DM (ticket news) within about 60 seconds" in beside


async def test_times_say_they_are_utc_and_players_words_find_their_own_direction(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        await log_in(client)
        desk = await (await client.get("/desk")).text()
        assert "<th>Filed (UTC)</th>" in desk and '<td class="when">2026-11-14 09:12</td>' in desk
        assert '<td class="desc" dir="auto">' in desk
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        await client.post("/desk/ticket/GRV-10/note", data={"csrf": token, "body": "Refund sent"})
        ticket = await (await client.get("/desk/ticket/GRV-10")).text()
        assert "<dt>Filed</dt><dd>2026-11-14 09:12 UTC</dd>" in ticket
        assert re.search(r"staff · \d{4}-\d\d-\d\d \d\d:\d\d UTC<", ticket)
        assert '<blockquote id="description" dir="auto">' in ticket and '<p dir="auto">Refund sent' in ticket
        playground = await (await client.get("/")).text()
        assert '<dd id="heard" dir="auto">' in playground and "<th>Updated (UTC)</th>" in playground


def contrast(foreground: str, background: str) -> float:
    """WCAG 2's contrast ratio of two #rrggbb or #rgb colours."""

    def luminance(colour: str) -> float:
        hex_ = colour.lstrip("#")
        hex_ = "".join(c * 2 for c in hex_) if len(hex_) == 3 else hex_
        channels = [int(hex_[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_every_status_pill_is_readable_at_wcag_aa() -> None:
    css = (REPO / "bot" / "web" / "static" / "style.css").read_text()
    variables = dict(re.findall(r"--([a-z]+): (#[0-9a-f]+)", css))
    pills = re.findall(r"\.s-([a-z-]+) \{ background: (#[0-9a-f]+); color: ([^;]+); \}", css)
    assert len(pills) == 5
    for name, background, colour in pills:
        colour = variables[colour[6:-1]] if colour.startswith("var(") else colour
        # The pills' text is 0.8rem (12.8 px), not large text: AA asks 4.5:1.
        assert contrast(colour, background) >= 4.5, (name, round(contrast(colour, background), 2))


class JiraLike:
    """What makes ticket news treat a grievance backend as Jira: a local store and Jira's changes."""

    def __init__(self, local_store: object) -> None:
        self.local_store = local_store

    async def updated_issues(self, user_ids: list[str], minutes: int) -> list[object]:
        return []


async def test_with_jira_a_ticket_that_never_goes_there_is_worked_on_the_desk(wsettings) -> None:
    from bot.ticket_news import TicketNews

    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        await store.mark_pushed("GRV-10", "STUDIO-7")
        pending = (await store.register(NOVA, "wallet", "top-up lost", push_state="pending")).key
        await store.record_attempt(pending, "Jira answered 503")
        # GRV-11 was filed while the local backend was in use: 'local_only', it never goes to Jira.
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        await log_in(client)
        listed = await (await client.get("/desk")).text()
        assert "only here" in listed and "waiting to reach Jira" in listed and "Jira answered 503" in listed
        assert "local_only" not in listed and ">pending<" not in listed
        page = await (await client.get("/desk/ticket/GRV-11")).text()
        assert "Set status" in page and "Add note" in page and "only here" in page
        assert "local_only" not in page
        waiting = await (await client.get(f"/desk/ticket/{pending}")).text()
        assert "Set status" not in waiting and "waiting to reach Jira" in waiting
        assert "Jira answered 503" in waiting and "pending" not in waiting
        after = max([e if isinstance(e, int) else e.id for e in await store.news_events(0)], default=0)
        token = await csrf_of(client, "/desk/ticket/GRV-11")
        moved = await client.post(
            "/desk/ticket/GRV-11/status", data={"csrf": token, "status": "resolved"}, allow_redirects=False
        )
        assert moved.status == 303
        noted = await client.post(
            "/desk/ticket/GRV-11/note", data={"csrf": token, "body": "done"}, allow_redirects=False
        )
        assert noted.status == 303
        assert (await store.staff_get("GRV-11")).status == "resolved"  # type: ignore[union-attr]
        refused = await client.post(f"/desk/ticket/{pending}/status", data={"csrf": token, "status": "x"})
        assert refused.status == 403
        missing = await client.post("/desk/ticket/GRV-999/note", data={"csrf": token, "body": "x"})
        assert missing.status == 404
        # The player is told, though Jira is on: that ticket's status is the desk's.
        await store.drop_news_events(after)
        news = TicketNews(core.news.store, JiraLike(store), core.preferences, None, core.settings.news)
        assert await news.find() == 1
        told = await core.news.store.told("222222222222222222")
        assert ("GRV-11", "status", "resolved", "pending") in told


async def test_charts_draw_usage_per_day_and_notes_per_hour(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        await log_in(client)
        empty = await (await client.get("/desk/charts")).text()
        assert "No usage yet" in empty
        await ask(client, await csrf_of(client))
        html = await (await client.get("/desk/charts")).text()
        assert html.count('<svg class="chart"') == 3 and '<rect x="' in html
        assert "notes per hour" in html and "No usage yet" not in html
    # Days are UsageMeter's UTC days: staff anywhere read a day's figures as that day.
    assert re.findall(r"<h2>[^<]*</h2>|<th>Day[^<]*</th>", html) == [
        "<h2>Estimated model cost per day (last 14 days, UTC)</h2>",
        "<h2>Notes per day (last 14 days, UTC)</h2>",
        "<h2>Notes per hour (last 24 hours, UTC)</h2>",
        "<th>Day (UTC)</th>",
    ]


async def check_again(client: TestClient):  # type: ignore[no-untyped-def]
    """The check page's "check again" button: a POST with the page's token, then the page."""
    token = await csrf_of(client, "/desk")  # the session's token, from a page that runs no check
    return await client.post("/desk/check", data={"csrf": token})


async def test_checking_again_is_a_post_with_the_csrf_token(wsettings, monkeypatch) -> None:
    from bot import health

    real, runs = health.check_all, []

    async def counted(settings, live):  # type: ignore[no-untyped-def]
        runs.append(1)
        return await real(settings, live)

    monkeypatch.setattr(health, "check_all", counted)
    async with web_client(wsettings) as (client, _):
        await log_in(client)
        assert (await client.get("/desk/check")).status == 200
        # A GET any page of the same site can have a staff browser send (an <img>): each check speaks
        # a line and asks every backend, billed calls and Jira's rate limit spent at will.
        assert (await client.get("/desk/check?again=1")).status == 200
        assert len(runs) == 1
        refused = await client.post("/desk/check", data={}, allow_redirects=False)
        assert refused.status == 403 and len(runs) == 1
        page = await check_again(client)
        assert page.status == 200 and "(0 s ago)" in await page.text()
        assert len(runs) == 2


async def test_checking_again_once_the_session_ended_goes_to_the_login_and_back(wsettings) -> None:
    # Logged out in another tab (or a cookie past its age, a restart without the session key):
    # "check again" answered "Missing or invalid CSRF token" in plain text, where every other
    # desk page sends a lapsed login to the login page and back.
    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk/check")
        out = await client.post("/desk/logout", data={"csrf": token}, allow_redirects=False)
        assert out.status == 303
        again = await client.post(
            "/desk/check", data={"csrf": token}, headers=SAME_ORIGIN, allow_redirects=False
        )
        assert again.status == 303, await again.text()
        assert again.headers["Location"] == "/desk/login?next=/desk/check"
        # Another site's form is refused as before: no redirect to follow for it.
        forged = await client.post(
            "/desk/check",
            data={"csrf": "x"},
            headers={"Sec-Fetch-Site": "cross-site"},
            allow_redirects=False,
        )
        assert forged.status == 403
        # Logged in again, the login goes on to the check page.
        login = await csrf_of(client, "/desk/login?next=/desk/check")
        done = await client.post(
            "/desk/login",
            data={"csrf": login, "password": STAFF_PASSWORD, "next": "/desk/check"},
            allow_redirects=False,
        )
        assert done.status == 303 and done.headers["Location"] == "/desk/check"
        # A login lapsed with its session still there (session_hours passed) goes the same way.
        now = [time.time() + 9 * 3600]
        client.app[STATE].clock = lambda: now[0]
        token = await csrf_of(client, "/desk/login")
        lapsed = await client.post(
            "/desk/check", data={"csrf": token}, headers=SAME_ORIGIN, allow_redirects=False
        )
        assert lapsed.status == 303
        assert lapsed.headers["Location"] == "/desk/login?next=/desk/check"


async def test_check_page_shows_each_service(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        html = await (await client.get("/desk/check")).text()
        for service in ("engine", "stats", "manuals", "grievances"):
            assert f"<td>{service}</td>" in html
        assert "local grievance store" in html
        assert "the front-end test engine answers" in html  # the running bot's engine, not a new one
        core.engine.down = True  # type: ignore[attr-defined]
        html = await (await check_again(client)).text()
        assert "the model service is unreachable" in html


async def test_the_desk_check_page_names_a_manual_changed_since_the_index(settings, tmp_path) -> None:
    # The running bot answers from the index `init` built: staff on the desk hear of a manual
    # edited since, as `voxdesk check` says it.
    manuals = tmp_path / "manuals"
    shutil.copytree(paths.MANUALS, manuals)
    configured = web_settings(settings.storage_dir, VOXDESK_STORAGE_MANUALS_DIR=str(manuals))
    async with web_client(configured) as (client, _):
        await log_in(client)
        html = await (await client.get("/desk/check")).text()
        assert '<tr class="warn"><td>warn</td><td>manuals</td>' not in html
        refunds = manuals / "refunds.md"
        refunds.write_text(refunds.read_text() + "\nAsk within a month.\n")
        html = await (await check_again(client)).text()
    assert '<tr class="warn"><td>warn</td><td>manuals</td><td>sqlite</td>' in html
    assert "differ from the index (changed refunds.md)" in html


async def test_the_desk_check_page_warns_of_grievance_lines_set_aside(wsettings) -> None:
    # Each .rejected line is a grievance's last copy that only staff can file: the desk, where
    # staff look, says so as `voxdesk check` does, while the bot holds its databases open.
    from bot.tools.grievance_spool import GrievanceSpool

    async with web_client(wsettings) as (client, core):
        await log_in(client)
        rejected = GrievanceSpool.beside(core.settings.storage_dir / "grievances.db").rejected
        rejected.write_text('{"user_id": "1", "descr\n')
        html = await (await client.get("/desk/check")).text()
        made = await core.grievances.register(NOVA, "wallet", "filed after the check")  # still writes
    assert '<tr class="warn"><td>warn</td><td>storage</td><td>sqlite</td>' in html
    assert "none written by a newer voxdesk" in html
    assert "1 grievance line(s) cut short or of a newer voxdesk set aside in" in html and "FAIL" not in html
    assert made.key


async def test_the_desk_checks_the_running_offline_engine_without_new_speech_workers(
    wsettings, monkeypatch
) -> None:
    from bot.app import build_app

    core = await build_app(wsettings)
    pools = speech_pools_started(monkeypatch)
    try:
        async with web_client(wsettings, core=core) as (client, _):
            await log_in(client)
            html = await (await client.get("/desk/check")).text()
            (wsettings.storage_dir / "speech" / "domain.built.json").unlink(missing_ok=True)  # older
            stale = await (await check_again(client)).text()
            css = await (await client.get("/static/style.css")).text()
    finally:
        await core.aclose()
    assert "recogniser" in html and "reply voice" in html and "FAIL" not in html and "warn<" not in html
    assert pools == []  # each set of workers loads every speech model: hundreds of MB
    # Hearing works, on a model `init` should build again: a line of its own colour, not a FAIL.
    assert '<tr class="warn"><td>warn</td><td>engine</td>' in stale and "FAIL" not in stale
    assert (
        "by an older voxdesk: run `voxdesk init`, then restart the bot" in stale
        and "tr.warn td:first-child" in css
    )


async def test_checks_asked_for_at_once_run_once(wsettings, monkeypatch) -> None:
    from bot import health
    from bot.web import Reused

    real, runs, real_get, asked, all_asked = health.check_all, [], Reused.get, [], asyncio.Event()

    async def get(self, make, max_age, again=False):  # type: ignore[no-untyped-def]
        asked.append(1)
        if len(asked) >= 3:
            all_asked.set()
        return await real_get(self, make, max_age, again)

    async def counted(settings, live):  # type: ignore[no-untyped-def]
        runs.append(1)
        # The other two ask while this check runs, however busy the machine.
        await asyncio.wait_for(all_asked.wait(), 30)
        return await real(settings, live)

    monkeypatch.setattr(Reused, "get", get)
    monkeypatch.setattr(health, "check_all", counted)
    async with web_client(wsettings) as (client, _):
        await log_in(client)
        pages = await asyncio.gather(*(check_again(client) for _ in range(3)))
        assert [p.status for p in pages] == [200, 200, 200]
        assert len(runs) == 1  # each check speaks a line and asks every backend
        await check_again(client)
        assert len(runs) == 2


async def test_a_copied_staff_cookie_opens_nothing_after_logout_or_a_new_password(settings) -> None:
    wsettings = web_settings(settings.storage_dir, VOXDESK_WEB_SESSION_KEY=FERNET_KEY)

    async def copied(client: TestClient) -> str:
        return next(c for c in client.session.cookie_jar if c.key == "voxdesk_session").value

    async def desk_with(cookie: str, app: object) -> int:
        async with TestClient(TestServer(app)) as other:  # type: ignore[arg-type]
            other.session.cookie_jar.update_cookies({"voxdesk_session": cookie})
            return (await other.get("/desk", allow_redirects=False)).status

    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        stolen = await copied(client)
        assert await desk_with(stolen, client.app) == 200
        token = await csrf_of(client, "/desk")
        assert (await client.post("/desk/logout", data={"csrf": token}, allow_redirects=False)).status == 303
        assert await desk_with(stolen, client.app) == 303
        assert await log_in(client) == 303
        second = await copied(client)
        assert await desk_with(second, client.app) == 200
    async with web_client(wsettings) as (client, _):  # a restart with the same session key
        assert await desk_with(stolen, client.app) == 303
        assert await desk_with(second, client.app) == 200
    renewed = make_settings(
        settings.storage_dir,
        VOXDESK_WEB_SESSION_KEY=FERNET_KEY,
        VOXDESK_WEB_STAFF_PASSWORD_HASH=hash_password("a new password"),
    )
    async with web_client(renewed) as (client, _):  # a restart with a new staff password
        assert await desk_with(second, client.app) == 303


@pytest.mark.parametrize(
    ("page", "database", "table"),
    [("/desk/charts", "usage", "usage"), ("/desk/ticket/GRV-10", "ticket news", "news")],
)
async def test_a_desk_page_names_the_database_that_did_not_answer(
    settings, page: str, database: str, table: str
) -> None:
    """The desk reads more than the grievance database: the charts read the usage database, a
    ticket the last ticket news about it. Staff sent to look at the grievance database when
    another failed would look in the wrong place."""
    wsettings = web_settings(settings.storage_dir, VOXDESK_USAGE_DAILY_TOKENS="100000")
    async with web_client(wsettings) as (client, _):
        await log_in(client)
        assert (await client.get(page)).status == 200
        other = sqlite3.connect(settings.storage_dir / f"{database.replace('ticket ', '')}.db", timeout=1)
        try:
            # Damaged, say: its table is not where it was.
            other.execute(f"ALTER TABLE {table} RENAME TO {table}_elsewhere")
            shown = await client.get(page)
            said = await shown.text()
        finally:
            other.close()
    assert shown.status == 503
    assert f"The {database} database did not answer" in said
    assert "grievance database" not in said


async def test_a_logout_the_database_refuses_says_so_and_holds_no_lock(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        stolen = next(c for c in client.session.cookie_jar if c.key == "voxdesk_session").value
        token = await csrf_of(client, "/desk")
        other = sqlite3.connect(wsettings.storage_dir / "web.db", timeout=1, isolation_level=None)
        try:
            refuse = "BEFORE INSERT ON ended_logins BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
            other.execute(f"CREATE TRIGGER refuse {refuse}")
            out = await client.post("/desk/logout", data={"csrf": token}, allow_redirects=False)
            # Out in this browser, and told that a copy of the cookie still opens the desk.
            assert out.status == 503
            said = await out.text()
            assert "logged out in this browser" in said and "database or disk is full" in said
            # Logged out: the header offers what it offers anyone, no staff page nor a logout.
            header = Page(said).one("nav")["<text>"].split()
            assert header == ["Playground", "Support", "desk"], header
            assert "/desk/charts" not in said and "/desk/check" not in said and "/desk/logout" not in said
            assert (await client.get("/desk", allow_redirects=False)).status == 303
            other.execute("DROP TRIGGER refuse")  # the refused write holds no lock on web.db
        finally:
            other.close()
        async with TestClient(TestServer(client.app)) as copy:  # the copy, logged out after all
            copy.session.cookie_jar.update_cookies({"voxdesk_session": stolen})
            token = await csrf_of(copy, "/desk")
            assert (
                await copy.post("/desk/logout", data={"csrf": token}, allow_redirects=False)
            ).status == 303
            copy.session.cookie_jar.update_cookies({"voxdesk_session": stolen})
            assert (await copy.get("/desk", allow_redirects=False)).status == 303


async def test_a_staff_session_web_db_cannot_check_is_the_desks_503_logged_once(wsettings, caplog) -> None:
    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk")
        other = sqlite3.connect(wsettings.storage_dir / "web.db", timeout=1, isolation_level=None)
        try:
            # Damaged, say: the logouts' table is not where it was.
            other.execute("ALTER TABLE ended_logins RENAME TO ended_elsewhere")
            caplog.set_level(logging.ERROR)
            shown = await client.get("/desk")
            said = await shown.text()
            logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            note = await client.post(
                "/desk/ticket/GRV-10/note",
                data={"csrf": token, "body": "kept for later"},
                allow_redirects=False,
            )
            noted = await note.text()
            playground = await client.get("/")  # needs no login: served, without the staff links
            public = await playground.text()
        finally:
            other.close()
    assert shown.status == 503, said
    # Whoever holds this cookie may not be staff any more (a copy, a logged-out one): told what
    # was not done, not the database's words, which are for the log.
    assert "The web database did not answer" in said and "This page could not be shown." in said
    assert "no such table" not in said and "ended_logins" not in said
    assert len(logged) == 1 and "web database" in logged[0] and "no such table: ended_logins" in logged[0]
    assert note.status == 503 and "not saved" in noted and "kept for later" in noted
    assert playground.status == 200 and "/desk/charts" not in public


async def test_a_plain_staff_password_keeps_logins_across_a_restart(settings) -> None:
    plain = make_settings(
        settings.storage_dir, VOXDESK_WEB_SESSION_KEY=FERNET_KEY, VOXDESK_WEB_STAFF_PASSWORD=STAFF_PASSWORD
    )
    async with web_client(plain) as (client, _):
        assert await log_in(client) == 303
        cookie = next(c for c in client.session.cookie_jar if c.key == "voxdesk_session").value
    async with web_client(plain) as (client, _):  # its hash is salted afresh at each start
        client.session.cookie_jar.update_cookies({"voxdesk_session": cookie})
        assert (await client.get("/desk", allow_redirects=False)).status == 200


async def test_a_login_lasts_session_hours_however_often_its_cookie_is_rewritten(settings) -> None:
    hours = web_settings(settings.storage_dir, VOXDESK_WEB_SESSION_HOURS="2")
    async with web_client(hours) as (client, _):
        now = [time.time()]
        client.app[STATE].clock = lambda: now[0]
        assert await log_in(client) == 303
        now[0] += 1.2 * 3600
        await client.get("/")  # the playground writes the session: the cookie's age starts again
        rewritten = next(c for c in client.session.cookie_jar if c.key == "voxdesk_session").value
        assert (await client.get("/desk", allow_redirects=False)).status == 200  # not lapsed yet
        now[0] += 1.2 * 3600  # 2.4 h after the login, 1.2 h after the rewrite
        async with TestClient(TestServer(client.app)) as copy:
            copy.session.cookie_jar.update_cookies({"voxdesk_session": rewritten})
            assert (await copy.get("/desk", allow_redirects=False)).status == 303


async def test_a_login_page_whose_session_ended_is_given_again_with_a_new_token(wsettings) -> None:
    # A login page left open while its session ended (a restart without VOXDESK_WEB_SESSION_KEY,
    # a cookie past its age) answered "Missing or invalid CSRF token: reload the page", and a
    # reload sends the same form again, refused again.
    async with web_client(wsettings) as (client, _):
        stale = await csrf_of(client, "/desk/login?next=/desk/ticket/GRV-10")
        client.session.cookie_jar.clear()
        form = {"csrf": stale, "password": STAFF_PASSWORD, "next": "/desk/ticket/GRV-10"}
        refused = await client.post("/desk/login", data=form, headers=SAME_ORIGIN)
        assert refused.status == 403
        page = await refused.text()
        assert 'id="login-error"' in page, page
        assert "type the password again" in Page(page).text_of("login-error")
        assert next_field(page) == "/desk/ticket/GRV-10"
        fresh = CSRF.search(page)
        assert fresh and fresh.group(1) != stale
        form |= {"csrf": fresh.group(1)}
        done = await client.post("/desk/login", data=form, headers=SAME_ORIGIN, allow_redirects=False)
        assert done.status == 303 and done.headers["Location"] == "/desk/ticket/GRV-10"


async def test_a_logout_from_a_tab_already_logged_out_goes_to_the_login_page(wsettings) -> None:
    # Two tabs of the desk, a logout in one, then in the other: "Missing or invalid CSRF token:
    # reload the page", when there was nothing left to log out of.
    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk")
        for tab in ("first", "second"):
            out = await client.post("/desk/logout", data={"csrf": token}, allow_redirects=False)
            assert out.status == 303 and out.headers["Location"] == "/desk/login", tab
        assert (await client.get("/desk", allow_redirects=False)).status == 303
        # A logged-in session's logout still needs its own token: another site's form ends nothing.
        assert await log_in(client) == 303
        forged = await client.post("/desk/logout", data={"csrf": token}, allow_redirects=False)
        assert forged.status == 403
        assert (await client.get("/desk", allow_redirects=False)).status == 200


async def test_a_long_running_desk_forgets_logouts_whose_sessions_have_lapsed(settings) -> None:
    # Pruned only at a start: a desk up for months kept a row per logout for ever.
    hours = web_settings(settings.storage_dir, VOXDESK_WEB_SESSION_HOURS="2")
    async with web_client(hours) as (client, _):
        now = [time.time()]
        client.app[STATE].clock = lambda: now[0]
        for _ in range(3):
            assert await log_in(client) == 303
            token = await csrf_of(client, "/desk")
            out = await client.post("/desk/logout", data={"csrf": token}, allow_redirects=False)
            assert out.status == 303
            now[0] += 2.5 * 3600  # past the longest session: that logout guards nothing now
        with sqlite3.connect(storage_paths(settings).web) as db:
            (rows,) = db.execute("SELECT COUNT(*) FROM ended_logins").fetchone()
    assert rows == 1


async def test_a_logout_is_on_disk_when_it_is_answered_not_only_in_the_wal(settings) -> None:
    # synchronous=NORMAL leaves the last commits to the OS's write-back: a power cut took the
    # logout with it, and a cookie copied before it opened the desk again after the reboot.
    async with web_client(settings) as (client, _):
        logins = client.app[STATE].staff_logins
        full = 2
        assert [tuple(r) for r in await logins._conn.execute_fetchall("PRAGMA synchronous")] == [(full,)]


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"X-CSRF-Token": "\u00e9"}, {"password": "x"}),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"csrf=%C3%A9&password=x"),
        ({"Content-Type": "application/x-www-form-urlencoded; charset=bogus"}, b"csrf=x&password=x"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"csrf=x&password=\xed\xa0\x80"),
    ],
)
async def test_odd_forms_and_tokens_are_refused_not_a_server_error(wsettings, headers, body) -> None:
    async with web_client(wsettings) as (client, _):
        await csrf_of(client, "/desk/login")
        answer = await client.post("/desk/login", data=body, headers=headers, allow_redirects=False)
        assert answer.status in (400, 403)


async def raw_request(client: TestClient, head: bytes) -> tuple[int, bytes]:
    """Status and head of the answer to a request sent as these bytes: aiohttp's client will not
    send a header that is not text, as any other client may."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + b"Connection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[0]


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        # A cookie made of bytes that are not UTF-8 (a sibling site's, or a client's own).
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nCookie: voxdesk_session=\xff\xfe\r\n", 200),
        (b"POST /desk/check HTTP/1.1\r\nHost: localhost\r\nX-CSRF-Token: \xff\xfe\r\n", 403),
        (b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nVia: 1.1 lb\r\nAuthorization: Bearer \xff\r\n", 403),
    ],
    ids=["session-cookie", "csrf-header", "metrics-token"],
)
async def test_header_bytes_that_are_not_text_are_refused_not_a_server_error(
    wsettings, caplog, request_head, status
) -> None:
    tokened = web_settings(wsettings.storage_dir, VOXDESK_WEB_METRICS_TOKEN="scrape-token-0123456789")
    async with web_client(tokened) as (client, _):
        if request_head.startswith(b"POST"):  # a session with a token, so the header is compared
            await csrf_of(client)
            cookie = next(c for c in client.session.cookie_jar if c.key == "voxdesk_session")
            request_head += f"Cookie: voxdesk_session={cookie.value}\r\n".encode()
        with caplog.at_level(logging.ERROR):
            answered, head = await raw_request(client, request_head)
    assert answered == status
    assert b"X-Frame-Options: DENY" in head  # a 500 would come without the page's headers
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /?q=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n",
        b"GET /desk/charts HTTP/1.1\r\nHost: localhost\r\nReferer: " + b"y" * 9000 + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n",
    ],
    ids=["long-query", "long-header", "bad-length"],
)
async def test_a_request_too_odd_to_parse_is_one_warning_not_an_error_traceback(
    wsettings, caplog, request_head
) -> None:
    # aiohttp answers it a 400 before the app sees it, then logs that as an unhandled error with
    # its traceback: every scanner's long URL paged whoever watches the log for errors, and the
    # line held the request's bytes (a query string's tokens with them).
    async with web_client(wsettings) as (client, _):
        with caplog.at_level(logging.INFO):
            answered, _ = await raw_request(client, request_head)
    assert answered == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    (record,) = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert record.levelname == "WARNING"  # as a formatter prints it, not aiohttp's ERROR
    line = record.getMessage()
    assert line.startswith("web: a request that could not be parsed was refused (400): ")
    assert "xxxx" not in line and "yyyy" not in line


async def test_a_first_request_that_is_not_http_stays_at_debug(wsettings, caplog) -> None:
    # aiohttp keeps a connection's first bytes that are no HTTP method at all (TLS to the plain
    # port, a port scanner) at DEBUG: the warning for an unparsable request never makes it louder.
    async with web_client(wsettings) as (client, _):
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            answered, _ = await raw_request(client, b"\x16\x03\x01 / HTTP/1.1\r\nHost: localhost\r\n")
    assert answered == 400
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(r.levelno == logging.DEBUG and r.levelname == "DEBUG" for r in records), records


async def raw_answer(client: TestClient, head: bytes) -> tuple[int, str, str]:
    """Status, head and body of the answer to a request sent as these bytes, with the Host it
    names: aiohttp's client sends the one it connected to."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + b"Connection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head_part, _, body = answer.decode().partition("\r\n\r\n")
    return int(head_part.split()[1]), head_part, body


async def test_a_page_asked_for_under_another_sites_name_is_refused(wsettings, caplog) -> None:
    # A DNS rebinding: evil.example's page has its name point at 127.0.0.1, and a browser on this
    # machine then sends it the playground and the login page as that site's own, to read.
    async with web_client(wsettings) as (client, _):
        caplog.set_level(logging.WARNING)
        for head in (
            b"GET / HTTP/1.1\r\nHost: evil.example\r\n",
            b"GET /desk/login HTTP/1.1\r\nHost: evil.example:8080\r\n",
            b"POST /desk/login HTTP/1.1\r\nHost: EVIL.example.:8080\r\nContent-Length: 0\r\n",
        ):
            status, answered, body = await raw_answer(client, head)
            assert status == 421, (head, answered)
            assert "Set-Cookie" not in answered  # no session, no CSRF token for the other site
            assert "X-Frame-Options: DENY" in answered and "text/html" in answered
            assert "evil.example" in body and "web.allowed_hosts" in body, body
        status, answered, body = await raw_answer(
            client, b"POST /playground/ask HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n"
        )
        assert status == 421 and "application/json" in answered and '"error"' in body, body
        # A name whose bytes are not UTF-8 is refused as any other, not a server error.
        status, answered, _ = await raw_answer(client, b"GET / HTTP/1.1\r\nHost: \xff.example\r\n")
        assert status == 421 and "X-Frame-Options: DENY" in answered
        # This machine's own names, with any port (an SSH tunnel's, say), and no Host at all.
        for host in ("localhost:8080", "127.0.0.1", "[::1]:9000", "LOCALHOST.", "desk.localhost:8080"):
            status, _, _ = await raw_answer(client, f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
            assert status == 200, host
        status, _, _ = await raw_answer(client, b"GET / HTTP/1.0\r\n")
        assert status == 200
        assert (await client.get("/")).status == 200
    # One warning a name, however often it is asked for.
    refused = [r.getMessage() for r in caplog.records if "web.allowed_hosts" in r.getMessage()]
    assert len([line for line in refused if "'evil.example'" in line]) == 1, refused


async def test_the_allowed_host_names_are_the_sites_own_and_this_machines(settings) -> None:
    named = web_settings(settings.storage_dir, VOXDESK_WEB_ALLOWED_HOSTS="support.example.com")
    assert named.web.allowed_hosts == ["support.example.com"]
    async with web_client(named) as (client, _):
        for host, status in (
            ("support.example.com", 200),  # as a reverse proxy passes it on
            ("Support.Example.com.:443", 200),
            ("127.0.0.1:8080", 200),  # Prometheus and probes on this machine
            ("evil.example", 421),
            ("www.support.example.com", 421),
        ):
            got, _, _ = await raw_answer(client, f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
            assert got == status, host
    # Bound beyond loopback with no names listed: any name is served (a studio's LAN box by its
    # address or any name), as is any with "*".
    for env in ({"VOXDESK_WEB_HOST": "0.0.0.0"}, {"VOXDESK_WEB_ALLOWED_HOSTS": "*"}):
        async with web_client(web_settings(settings.storage_dir, **env)) as (client, _):
            got, _, _ = await raw_answer(client, b"GET / HTTP/1.1\r\nHost: evil.example\r\n")
            assert got == 200, env


async def test_a_host_named_not_addressed_off_loopback_serves_any_name(settings, monkeypatch) -> None:
    # web.host given as a name (a studio's LAN box by its own): no loopback address, so reachable
    # from elsewhere by whatever name people use, as 0.0.0.0 is.
    resolving(monkeypatch, "studio-box.lan", "192.0.2.7")
    async with web_client(web_settings(settings.storage_dir, VOXDESK_WEB_HOST="studio-box.lan")) as (
        client,
        _,
    ):
        got, _, _ = await raw_answer(client, b"GET / HTTP/1.1\r\nHost: studio-box\r\n")
        assert got == 200


def resolving(monkeypatch, name: str, *addresses: str) -> None:
    """`name` resolves to these addresses, whatever this machine's /etc/hosts and DNS say; any
    other name as it does."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != name:
            return real(host, port, *args, **kwargs)
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def test_a_host_named_for_loopback_alone_serves_only_this_machines_names(settings, monkeypatch) -> None:
    # Debian's /etc/hosts points the machine's own name at 127.0.1.1, and an operator may write
    # web.host = "myhost": bound to loopback alone, a DNS rebinding must still be refused.
    resolving(monkeypatch, "myhost", "127.0.1.1", "::1")
    async with web_client(web_settings(settings.storage_dir, VOXDESK_WEB_HOST="myhost")) as (client, _):
        got, _, _ = await raw_answer(client, b"GET / HTTP/1.1\r\nHost: evil.example\r\n")
        assert got == 421
        got, _, _ = await raw_answer(client, b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n")
        assert got == 200
    # One address beyond loopback among them, or a name that does not resolve (the server
    # cannot bind it either): reachable from elsewhere, as before.
    resolving(monkeypatch, "lanhost", "127.0.1.1", "192.0.2.7")
    resolving(monkeypatch, "nowhere.invalid")
    for host in ("lanhost", "nowhere.invalid"):
        async with web_client(web_settings(settings.storage_dir, VOXDESK_WEB_HOST=host)) as (client, _):
            got, _, _ = await raw_answer(client, b"GET / HTTP/1.1\r\nHost: evil.example\r\n")
            assert got == 200, host


async def test_refused_host_names_are_logged_up_to_a_bound(wsettings, caplog, monkeypatch) -> None:
    # A scanner tries names by the thousand: a warning each would fill the log.
    from bot.web import security

    monkeypatch.setattr(security, "REFUSED_HOSTS_LOGGED", 2)
    caplog.set_level(logging.WARNING)
    async with web_client(wsettings) as (client, _):
        for n in range(4):
            got, _, _ = await raw_answer(client, f"GET / HTTP/1.1\r\nHost: scan{n}.example\r\n".encode())
            assert got == 421
        # The playground's other JSON route is refused in JSON too: its script reads the error.
        status, answered, body = await raw_answer(
            client, b"GET /playground/tickets HTTP/1.1\r\nHost: scan0.example\r\n"
        )
        assert status == 421 and "application/json" in answered and '"error"' in body, body
    refused = [r.getMessage() for r in caplog.records if "web.allowed_hosts" in r.getMessage()]
    assert len(refused) == 2, refused


async def test_an_allowed_name_is_compared_as_a_browser_sends_it(settings) -> None:
    # A browser sends an internationalised name in its ASCII form, and config.toml's list may
    # hold a name with the blanks around it that TOML keeps: each named none, every page a 421.
    import dataclasses

    named = web_settings(settings.storage_dir, VOXDESK_WEB_ALLOWED_HOSTS="Bücher.example")
    padded = dataclasses.replace(
        named, web=dataclasses.replace(named.web, allowed_hosts=[" desk.example ", "Bücher.example"])
    )
    async with web_client(padded) as (client, _):
        for host, status in (
            ("xn--bcher-kva.example", 200),
            ("XN--BCHER-KVA.example.:443", 200),
            ("desk.example", 200),
            ("bucher.example", 421),
        ):
            got, _, _ = await raw_answer(client, f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
            assert got == status, host


async def test_a_bracketed_address_with_more_after_it_names_no_address(wsettings) -> None:
    # Brackets hold an IPv6 address alone, a port or nothing after them: "[::1]evil.example" is
    # no Host a browser sends, and no address of this machine's either.
    async with web_client(wsettings) as (client, _):
        for host, status in (
            ("[::1]evil.example", 421),
            ("[::1].desk.example:80", 421),
            ("[::1]:8080", 200),
            ("[::1]", 200),
        ):
            got, _, _ = await raw_answer(client, f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
            assert got == status, host


async def test_a_proxy_without_the_sites_name_listed_is_warned_of_at_start(settings, caplog) -> None:
    # A reverse proxy passes the name the browser asked for on: every page would be a 421.
    caplog.set_level(logging.WARNING)
    proxied = web_settings(settings.storage_dir, VOXDESK_WEB_TRUST_FORWARDED="true")
    async with web_client(proxied):
        pass
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("web.allowed_hosts is empty" in line for line in said), said
    caplog.clear()
    named = web_settings(
        settings.storage_dir, VOXDESK_WEB_TRUST_FORWARDED="true", VOXDESK_WEB_ALLOWED_HOSTS="desk.example"
    )
    public = web_settings(
        settings.storage_dir, VOXDESK_WEB_TRUST_FORWARDED="true", VOXDESK_WEB_HOST="0.0.0.0"
    )
    for quiet in (named, public):  # a name listed, or every name served
        async with web_client(quiet):
            pass
    assert not [r for r in caplog.records if "allowed_hosts" in r.getMessage()]


async def test_a_desk_form_is_held_to_what_its_fields_need(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        token = await csrf_of(client, "/desk/login")
        # A form is read before the CSRF check and the login limit: without a cap, anyone could make
        # the server hold several megabytes a request (audio.max_bytes, the app's body limit).
        padded = {"csrf": token, "password": "wrong", "pad": "x" * 200_000}
        assert (await client.post("/desk/login", data=padded)).status == 413
        multipart = FormData({"password": "wrong"})
        multipart.add_field("pad", b"x" * 200_000, filename="pad.bin")
        answer = await client.post("/desk/login", data=multipart, headers={"X-CSRF-Token": token})
        assert answer.status == 413
        assert await log_in(client) == 303
        # The longest note there is, in four-byte characters, percent-encoded, still fits.
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        longest = "\U0001f3ae" * desk.MAX_NOTE_CHARS
        done = await client.post(
            "/desk/ticket/GRV-10/note", data={"csrf": token, "body": longest}, allow_redirects=False
        )
        assert done.status == 303
        assert [n.body for n in await core.grievances.local_store.staff_notes("GRV-10")] == [longest]
        # Written in lines, it is sent with CRLF line breaks, each of which the textarea counts as one.
        lines = "\r\n".join(["Ligne écrite 🎮!"] * 250)  # 3,999 characters with one for each break
        assert len(lines.replace("\r\n", "\n")) == desk.MAX_NOTE_CHARS - 1
        done = await client.post(
            "/desk/ticket/GRV-10/note", data={"csrf": token, "body": lines}, allow_redirects=False
        )
        assert done.status == 303
        assert (await core.grievances.local_store.staff_notes("GRV-10"))[-1].body == lines.replace(
            "\r\n", "\n"
        )


async def test_a_note_of_no_words_or_too_many_is_a_page_of_the_desk(wsettings) -> None:
    # A note of spaces alone passes the textarea's `required`: the desk answered a bare line of
    # text, with no way back to the ticket; one too long (a script's) was lost with it.
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        for body in ("  \r\n  ", "x" * (desk.MAX_NOTE_CHARS + 1)):
            done = await client.post("/desk/ticket/GRV-10/note", data={"csrf": token, "body": body})
            assert done.status == 400
            page = Page(await done.text())
            assert page.one("h1")["<text>"] == "Your note on GRV-10 was not saved"
            assert page.text_of("refused") == f"A note is 1 to {desk.MAX_NOTE_CHARS} characters."
            assert page.all("a", href="/desk/ticket/GRV-10")
            assert page.one("textarea", id="note-body")["<text>"].strip() == body.strip()
        assert await core.grievances.local_store.staff_notes("GRV-10") == []


@pytest.mark.parametrize("path", ["/desk/login", "/playground/ask"])
async def test_a_desk_form_that_never_ends_is_refused_in_time(wsettings, monkeypatch, path: str) -> None:
    """A form is read before the CSRF check, on any path a route takes: a sender that stops
    partway must not hold its connection (and the form so far) for as long as it likes, from as
    many as it likes."""
    from bot.web import security

    monkeypatch.setattr(security, "FORM_SECONDS", 0.5)
    never = asyncio.Event()

    async def stalled_form(token: str):  # type: ignore[no-untyped-def]
        yield f"csrf={token}&password=wrong&pad=".encode()
        await never.wait()

    async with web_client(wsettings) as (client, _):
        token = await csrf_of(client, "/desk/login")
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        posting = client.post(path, data=stalled_form(token), headers=headers)
        # Not a timing assertion: a guard so a form read with no deadline fails the test, not hangs it.
        answer = await asyncio.wait_for(posting, 15)
        assert answer.status == 408, await answer.text()
        assert "took too long" in await answer.text()
        # The rest may never come: the connection is not kept waiting for it.
        assert answer.headers["Connection"] == "close"
        assert await log_in(client) == 303


@pytest.mark.parametrize("path", ["/desk/login", "/playground/ask"])
async def test_one_client_has_only_a_few_forms_read_at_once(settings, path: str) -> None:
    """The 30 s deadline bounds each slow form, not how many one address holds: opening
    connections by the hundred, it would hold a form so far on each."""
    from bot.web import security

    # Behind our proxy, so the test's one address can be several clients.
    wsettings = web_settings(settings.storage_dir, VOXDESK_WEB_TRUST_FORWARDED="true")
    sender = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": "203.0.113.5"}
    go_on = asyncio.Event()

    async def stalled_form(token: str):  # type: ignore[no-untyped-def]
        yield f"csrf={token}&password=wrong&pad=".encode()
        await go_on.wait()

    async with web_client(wsettings) as (client, _):
        reads = client.app[security.FORM_READS]
        token = await csrf_of(client, "/desk/login")
        held = [
            asyncio.create_task(client.post(path, data=stalled_form(token), headers=sender))
            for _ in range(security.FORMS_PER_CLIENT)
        ]

        async def all_being_read() -> None:
            while reads.by_client.get("203.0.113.5") != security.FORMS_PER_CLIENT:  # noqa: ASYNC110 - a counter, no event
                await asyncio.sleep(0.01)

        try:
            # Not a timing assertion: a guard so a stuck read fails the test, not hangs it.
            await asyncio.wait_for(all_being_read(), 15)
            refused = await client.post(path, data={"csrf": token, "password": "wrong"}, headers=sender)
            said = await refused.text()
            assert refused.status == 429, (refused.status, said[:200])
            assert "Too many of your forms are still on their way" in said
            assert refused.headers["Retry-After"] == str(security.FORMS_BUSY_SECONDS)
            assert refused.headers["Connection"] == "close"  # its body was never read
            # Another client is not held up by this one's forms.
            other = {"X-Forwarded-For": "198.51.100.7"}
            form = {"csrf": token, "password": STAFF_PASSWORD}
            logged_in = await client.post("/desk/login", data=form, headers=other, allow_redirects=False)
            assert logged_in.status == 303
        finally:
            go_on.set()
            answered = await asyncio.wait_for(asyncio.gather(*held, return_exceptions=True), 15)
        assert all(getattr(answer, "status", None) not in (None, 429) for answer in answered), answered
        assert reads.by_client == {}  # every form read let go of its count
        token = await csrf_of(client, "/desk/login")
        again = await client.post(path, data={"csrf": token, "password": "wrong"}, headers=sender)
        assert again.status != 429


@pytest.mark.parametrize(
    "head",
    [
        b"POST /nope HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n",
        b"PUT /nope HTTP/1.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n",
        b"DELETE /desk/ticket/GRV-10 HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n",
        # A form is not read for them either: its deadline (30 s) is longer than aiohttp's linger.
        b"POST /nope HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100000\r\n",
        b"PUT /desk/login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100000\r\n",
    ],
    ids=[
        "unknown-path",
        "unknown-path-chunked",
        "method-not-allowed",
        "unknown-path-form",
        "method-not-allowed-form",
    ],
)
async def test_a_stalled_body_no_route_reads_holds_its_connection_only_for_aiohttps_linger(
    wsettings, head
) -> None:
    """A body that is no form, sent to a path or method no route takes, is read by nothing of
    ours: the router's refusal goes out at once, and the connection lasts only as long as aiohttp
    reads on after an answer (lingering_time, 10 s by default; short here) before it closes it."""
    from bot.app import build_app
    from bot.web import build_web
    from tests.frontend_engine import FrontendEngine

    core = await build_app(wsettings, FrontendEngine())  # type: ignore[arg-type]
    server = TestServer(await build_web(core))
    try:
        await server.start_server(lingering_time=0.5)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        # A little of the body, then nothing.
        writer.write(head + b"Host: localhost\r\n\r\n" + (b"1\r\n{\r\n" if b"chunked" in head else b"{"))
        try:
            # Not timing assertions: guards, so a connection held for good fails the test.
            said = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
            assert said.split(b"\r\n")[0].split()[1] in (b"404", b"405"), said
            await asyncio.wait_for(reader.read(), 15)  # the server ends it, the body still owed
            assert reader.at_eof()
        finally:
            writer.close()
    finally:
        await server.close()
        await core.aclose()


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\nHost: loc",
    ],
    ids=["nothing", "part-of-a-head", "part-of-a-second-head"],
)
async def test_a_request_head_not_all_there_in_time_ends_its_connection(wsettings, monkeypatch, sent) -> None:
    """A desk exposed with no proxy in front: a client that connects and sends part of a request
    head (or nothing), then stalls, is let go after HEAD_SECONDS, not held for aiohttp's own hour,
    as many times over as it opens connections (slowloris)."""
    from bot import web
    from bot.app import build_app
    from tests.frontend_engine import FrontendEngine

    monkeypatch.setattr(web, "HEAD_SECONDS", 0.5)
    core = await build_app(wsettings, FrontendEngine())  # type: ignore[arg-type]
    runner = await web.start(core, port=0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", web.bound_port(runner))
        writer.write(sent)
        try:
            # Not a timing assertion: a guard so a connection held for good fails the test.
            said = await asyncio.wait_for(reader.read(), 15)
            assert reader.at_eof()
            # Only the one whole request was answered, the part after it never.
            assert said.count(b"HTTP/1.1 ") == sent.count(b"\r\n\r\n"), said
        finally:
            writer.close()
    finally:
        await runner.cleanup()
        await core.aclose()


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux's socket option")
async def test_a_client_that_stops_reading_its_answers_is_let_go(wsettings, monkeypatch) -> None:
    """A head's deadline does not run while an answer is written: a client that sends requests
    and never reads the answers (its window shut) would hold its connection, and the handler
    writing to it, for good."""
    from bot import web
    from bot.app import build_app
    from tests.frontend_engine import FrontendEngine

    monkeypatch.setattr(web, "SEND_SECONDS", 1.0)
    core = await build_app(wsettings, FrontendEngine())  # type: ignore[arg-type]
    runner = await web.start(core, port=0)
    client = socket.socket()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", web.bound_port(runner)))
        client.setblocking(False)
        # More answers (8 MB) than the kernel's buffers on both sides hold, and none of them read.
        asked = b"GET /static/playground.js HTTP/1.1\r\nHost: localhost\r\n\r\n" * 1000
        await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(client, asked), 15)

        server = runner.server
        assert server is not None

        async def until(done: Callable[[], bool]) -> None:
            while not done():  # noqa: ASYNC110 - server counters, no event
                await asyncio.sleep(0.05)

        # Not timing assertions: guards so a connection held for good fails the test.
        await asyncio.wait_for(until(lambda: server.requests_count > 0), 15)
        await asyncio.wait_for(until(lambda: not server.connections), 15)
        assert server.requests_count < 1000  # let go partway, its answers not all written
    finally:
        client.close()
        await runner.cleanup()
        await core.aclose()


async def test_a_staff_note_sent_as_a_file_is_refused_not_saved_as_its_python_name(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        form = FormData()
        form.add_field("body", b"Refund sent", filename="note.txt", content_type="text/plain")
        answer = await client.post(
            "/desk/ticket/GRV-10/note", data=form, headers={"X-CSRF-Token": token}, allow_redirects=False
        )
        assert answer.status == 400
        assert await core.grievances.local_store.staff_notes("GRV-10") == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/form-data", b"--B\r\n"),
        ("multipart/form-data; boundary=B", b"not multipart at all"),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="audio"; filename="n.ogg"\r\n'
            b"Content-Transfer-Encoding: bogus\r\n\r\nxx\r\n--B--\r\n",
        ),
    ],
)
async def test_a_malformed_playground_upload_is_refused_not_a_server_error(
    wsettings, content_type, body
) -> None:
    async with web_client(wsettings) as (client, _):
        token = await csrf_of(client)
        answer = await client.post(
            "/playground/ask", data=body, headers={"X-CSRF-Token": token, "Content-Type": content_type}
        )
        assert answer.status == 400


async def test_a_playground_request_is_held_to_one_notes_size_whatever_its_parts(settings) -> None:
    small = web_settings(settings.storage_dir, VOXDESK_AUDIO_MAX_BYTES="20000")
    async with web_client(small) as (client, _):
        token = await csrf_of(client)
        padded = note_form(data=NOTE[:1000])
        padded.add_field("junk", b"\0" * 5_000_000, filename="junk.bin")
        answer = await client.post("/playground/ask", data=padded, headers={"X-CSRF-Token": token})
        assert answer.status == 413
        extra = note_form(data=NOTE[:1000])
        extra.add_field("junk", b"x", filename="junk.bin")
        answer = await client.post("/playground/ask", data=extra, headers={"X-CSRF-Token": token})
        assert answer.status == 400


async def test_login_attempts_from_one_ipv6_64_share_a_limit_and_another_64s_not(settings) -> None:
    limited = web_settings(
        settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="3", VOXDESK_WEB_TRUST_FORWARDED="true"
    )
    async with web_client(limited) as (client, _):
        token = await csrf_of(client, "/desk/login")
        statuses = []
        for i in range(5):
            forwarded = {"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"}
            answer = await client.post(
                "/desk/login", data={"csrf": token, "password": "wrong"}, headers=forwarded
            )
            statuses.append(answer.status)
        assert statuses == [401, 401, 401, 429, 429]
        # The next /64 is another subscriber's (in the same /48); an IPv4 address is a client of
        # its own, its neighbour another.
        for other in ("2001:db8:1:3::1", *["203.0.113.7"] * 3, "203.0.113.8"):
            answer = await client.post(
                "/desk/login",
                data={"csrf": token, "password": "wrong"},
                headers={"X-Forwarded-For": other},
            )
            assert answer.status == 401, other


# ---- operations --------------------------------------------------------------------------------


async def test_healthz_is_ready_when_databases_answer_and_discord_is_connected(
    wsettings, monkeypatch
) -> None:
    monkeypatch.setattr(ops, "PROBE_EVERY_SECONDS", 0.0)
    connected = [True]
    async with web_client(wsettings, discord_ready=lambda: connected[0]) as (client, core):
        ok = await client.get("/healthz")
        body = await ok.json()
        assert ok.status == 200 and body["ready"] is True
        assert set(body["checks"]) == {"stats", "manuals", "grievances", "engine", "turns", "discord"}
        connected[0] = False
        down = await client.get("/healthz")
        assert down.status == 503 and (await down.json())["checks"]["discord"] == {"ok": False}
        assert (await client.get("/healthz", params={"live": ""})).status == 200
        await core.manuals.aclose()  # a database gone
        gone = await (await client.get("/healthz")).json()
        assert gone["ready"] is False and gone["checks"]["manuals"]["ok"] is False


async def test_anonymous_healthz_probes_the_backends_at_most_every_few_seconds(wsettings) -> None:
    async with web_client(wsettings) as (client, core):
        runs = []
        real = core.grievances.count  # the grievance database's read, one a probe

        async def counted() -> int:
            runs.append(1)
            return await real()

        core.grievances.count = counted  # type: ignore[method-assign]
        probes = await asyncio.gather(*(client.get("/healthz") for _ in range(20)))
        assert {p.status for p in probes} == {200} and len(runs) == 1


async def test_healthz_asks_jira_nothing_and_stays_ready_while_jira_refuses(settings, monkeypatch) -> None:
    # Grievances wait in the local outbox while Jira is down, so readiness is that database's;
    # probes every 2 s asking Jira would spend its rate limit and fail for a whole 429 hold.
    from tests.fakes.jira_server import running_fake_jira

    monkeypatch.setattr(ops, "PROBE_EVERY_SECONDS", 0.0)
    async with running_fake_jira() as jira:
        on_jira = web_settings(settings.storage_dir).replace(
            tools={"grievances": "jira"},
            jira={"url": jira.url, "push_interval_seconds": 3600, "settle_seconds": 0.0},
            secrets={"jira_email": jira.email, "jira_api_token": jira.token},
        )
        async with web_client(on_jira) as (client, _):
            before = len(jira.received)
            jira.fail("429")
            probes = [await client.get("/healthz") for _ in range(5)]
            assert [p.status for p in probes] == [200] * 5
            assert (await probes[-1].json())["checks"]["grievances"] == {"ok": True}
            assert len(jira.received) == before


async def test_metrics_count_notes_stages_tools_and_the_outbox(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        token = await csrf_of(client)
        before = await (await client.get("/metrics")).text()
        await ask(client, token)
        await ask(client, token, data=b"%PDF-1.4\n" + bytes(100))
        scraped = await client.get("/metrics")
        assert scraped.headers["Content-Type"].startswith("text/plain")
        text = await scraped.text()

    answered = 'voxdesk_notes_total{frontend="web",outcome="answered",reason="answer"}'
    refused = 'voxdesk_notes_total{frontend="web",outcome="refused",reason="bad_audio"}'
    assert metric_value(answered, text) == metric_value(answered, before) + 1
    assert metric_value(refused, text) == metric_value(refused, before) + 1
    tool = 'voxdesk_tool_calls_total{ok="true",tool="get_player_stats"}'
    assert metric_value(tool, text) == metric_value(tool, before) + 1
    for stage in ("download", "decode", "hear", "tools", "speak"):
        count = f'voxdesk_stage_seconds_count{{stage="{stage}"}}'
        assert metric_value(count, text) >= metric_value(count, before) + 1, stage
    assert re.search(r"^voxdesk_grievance_outbox_depth 0\.0$", text, re.M)


# A time support staff wrote with no offset is UTC (bot/instants.py), on a host hours from UTC too.
@pytest.mark.parametrize("offset", ["Z", ""])
async def test_metrics_give_the_oldest_waiting_grievances_age_and_the_unfiled(
    wsettings, far_from_utc, offset
) -> None:
    """An operator's alert: one grievance stuck for a day reads like a steady trickle in depth."""
    from bot.tools.grievance_spool import GrievanceSpool

    async with web_client(wsettings) as (client, core):
        store = core.grievances.local_store
        fresh = await (await client.get("/metrics")).text()
        assert metric_value("voxdesk_grievance_outbox_oldest_seconds", fresh) == 0
        assert metric_value("voxdesk_grievances_unfiled", fresh) == 0
        stuck = await store.register(NOVA, "wallet", "top-up lost", push_state="pending")
        await store.register(NOVA, "other", "lag", push_state="pending")
        day_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        await store._conn.execute(
            "UPDATE grievances SET created_at = ? WHERE local_key = ?",
            (day_ago.strftime("%Y-%m-%dT%H:%M:%S") + offset, stuck.key),
        )
        await store._conn.commit()
        GrievanceSpool.beside(core.settings.storage_dir / "grievances.db").keep(
            user_id=BLAZE, category="wallet", description="refund", at="2026-12-01T10:00:00Z", state="pending"
        )
        text = await (await client.get("/metrics")).text()
    assert metric_value("voxdesk_grievance_outbox_depth", text) == 2
    assert 86_400 <= metric_value("voxdesk_grievance_outbox_oldest_seconds", text) < 86_400 + 600
    assert metric_value("voxdesk_grievances_unfiled", text) == 1


# ---- settings and the command line -------------------------------------------------------------


def test_staff_password_hash_verifies_only_its_password() -> None:
    stored = hash_password("hunter2hunter2")
    assert verify_password("hunter2hunter2", stored)
    assert not verify_password("hunter2hunter3", stored)
    assert not verify_password("hunter2hunter2", "scrypt$garbage")
    assert not verify_password("x", "plain-text-password")


def test_a_staff_password_hash_cut_short_stops_the_web_front_end_at_start(tmp_path: Path) -> None:
    from bot.config import ConfigError
    from bot.web.security import staff_password_hash

    whole = make_settings(tmp_path, VOXDESK_WEB_STAFF_PASSWORD_HASH=STAFF_HASH)
    assert staff_password_hash(whole) == STAFF_HASH
    cut = make_settings(tmp_path, VOXDESK_WEB_STAFF_PASSWORD_HASH=STAFF_HASH.rsplit("$", 1)[0])
    with pytest.raises(ConfigError, match="not a hash from `voxdesk web-password`"):
        staff_password_hash(cut)  # every login would fail, with nothing said


def test_web_settings_and_secrets_come_from_where_they_should(tmp_path: Path) -> None:
    env = {
        "VOXDESK_WEB_STAFF_PASSWORD_HASH": STAFF_HASH,
        "VOXDESK_WEB_SESSION_KEY": "not-a-fernet-key",
        "VOXDESK_WEB_PORT": "9090",
    }
    s = load_settings(REPO / "config.toml", environ=env)
    assert (s.web.host, s.web.port, s.web.enabled) == ("127.0.0.1", 9090, False)
    assert s.secrets.web_staff_password_hash == STAFF_HASH and "STAFF" not in repr(s.secrets)
    assert staff_password_hash(s) == STAFF_HASH
    from bot.config import ConfigError
    from bot.web.security import session_storage

    with pytest.raises(ConfigError, match="VOXDESK_WEB_SESSION_KEY"):
        session_storage(s)
    plain = load_settings(REPO / "config.toml", environ={"VOXDESK_WEB_STAFF_PASSWORD": "pw-from-env-123"})
    assert verify_password("pw-from-env-123", staff_password_hash(plain))
    bad = load_settings(REPO / "config.toml", environ={"VOXDESK_WEB_STAFF_PASSWORD_HASH": "pw"})
    with pytest.raises(ConfigError, match="web-password"):
        staff_password_hash(bad)


def test_the_web_front_end_imports_no_discord() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bot.web, bot.web.desk, bot.web.playground, bot.web.ops; print('discord' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "False"


async def test_voxdesk_web_serves_until_stopped(wsettings, capsys) -> None:
    import asyncio

    import aiohttp

    from bot import web

    stop = asyncio.Event()
    task = asyncio.create_task(web.serve(wsettings.replace(web={"port": 0}), stop))
    out = ""
    # The offline engine starts first: on a busy machine that takes tens of seconds.
    async with asyncio.timeout(50):  # inside pytest-timeout's 60 s
        while "voxdesk web on" not in out and not task.done():
            out += capsys.readouterr().out
            await asyncio.sleep(0.05)
    if task.done():
        task.result()  # it ended before serving: say why
    url = re.search(r"(http://\S+/)", out).group(1)  # type: ignore[union-attr]
    assert url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as http:
        assert (await http.get(url + "healthz")).status == 200
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_voxdesk_web_stopped_by_sigterm_gives_back_the_handlers_it_found(wsettings, capsys) -> None:
    # As `voxdesk web` in a program's own process (a test's): its SIGTERM handler, and
    # asyncio.run's Ctrl-C handler that cancels the command's shutdown, are there again after.
    import asyncio
    import os
    import signal

    from bot import web

    def theirs(signum: int, frame: object) -> None:
        raise AssertionError("serve() did not handle SIGTERM")

    before = signal.signal(signal.SIGTERM, theirs)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        task = asyncio.create_task(web.serve(wsettings.replace(web={"port": 0})))
        out = ""
        async with asyncio.timeout(50):  # inside pytest-timeout's 60 s
            while "voxdesk web on" not in out and not task.done():
                out += capsys.readouterr().out
                await asyncio.sleep(0.05)
        if task.done():
            task.result()  # it ended before serving: say why
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 30)
        assert signal.getsignal(signal.SIGTERM) is theirs
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGTERM, before)


async def test_voxdesk_web_gives_back_the_sigterm_handler_a_program_gave_its_event_loop(
    wsettings, capsys
) -> None:
    # A program serving `voxdesk web` on its own loop, whose SIGTERM it handles on that loop too:
    # after the server, SIGTERM reaches the program's handler again, not asyncio's no-op.
    import asyncio
    import os
    import signal

    from bot import web

    loop = asyncio.get_running_loop()
    theirs = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, theirs.set)
    try:
        task = asyncio.create_task(web.serve(wsettings.replace(web={"port": 0})))
        out = ""
        async with asyncio.timeout(40):
            while "voxdesk web on" not in out and not task.done():
                out += capsys.readouterr().out
                await asyncio.sleep(0.05)
        if task.done():
            task.result()  # it ended before serving: say why
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 30)
        assert not theirs.is_set(), "the server's SIGTERM reached the program's handler"
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(theirs.wait(), 10)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@pytest.mark.timeout(120)  # a real process starts (imports, speech workers): slow on a busy machine
@pytest.mark.parametrize("stop_signal", ["SIGTERM", "SIGINT"])
async def test_voxdesk_web_stops_on_a_signal_with_one_line_and_every_database_closed(
    settings, stop_signal
) -> None:
    # systemctl stop and docker stop send SIGTERM, Ctrl-C SIGINT.
    import os
    import signal
    import sys

    import aiohttp

    env = {**os.environ, "VOXDESK_STORAGE_DIR": str(settings.storage_dir), "VOXDESK_OFFLINE_WORKERS": "1"}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot", "web", "--port", "0"),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        started = (await asyncio.wait_for(process.stdout.readline(), 90)).decode()  # type: ignore[union-attr]
        url = re.search(r"(http://\S+/)", started).group(1)  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as http:
            assert (await http.get(url + "healthz")).status == 200
        process.send_signal(getattr(signal, stop_signal))
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode() == "voxdesk web stopped\n" and err.decode() == ""
    # SQLite removes a database's WAL file when its last connection closes.
    assert sorted(p.name for p in settings.storage_dir.glob("*-wal")) == []


def test_web_password_prints_a_hash_of_the_password_on_stdin() -> None:
    import subprocess
    import sys

    def hashed(typed: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "bot", "web-password"]
        return subprocess.run(command, input=typed, capture_output=True, text=True, cwd=REPO)

    assert verify_password("a long staff password", hashed("a long staff password\n").stdout.strip())
    # From a Windows pipe: the \r is the line's end, not the password's.
    assert verify_password("a long staff password", hashed("a long staff password\r\n").stdout.strip())
    short = hashed("short\n")
    assert short.returncode == 2 and short.stdout == ""
    # Nothing on stdin at all (</dev/null) is no password, not one too short.
    none = hashed("")
    assert (none.returncode, none.stdout) == (2, "")
    assert none.stderr.startswith("web-password: no password on stdin: pipe one in, as in `printf")
    assert none.stderr.endswith(", or run it in a terminal to be asked\n")


async def test_two_browsers_speaking_as_one_player_do_not_share_a_conversation(settings) -> None:
    from aiohttp import FormData
    from aiohttp.test_utils import TestClient, TestServer

    from bot import paths
    from tests.conftest import NOVA
    from tests.frontend_engine import FrontendEngine
    from tests.web_helpers import csrf_of, web_client, web_settings

    def note() -> FormData:
        form = FormData()
        form.add_field("player", NOVA)
        audio = (paths.SAMPLES / "2-how-many-points.ogg").read_bytes()
        form.add_field("audio", audio, filename="n.ogg", content_type="audio/ogg")
        return form

    engine = FrontendEngine()
    async with web_client(web_settings(settings.storage_dir), engine=engine) as (alice, _):
        await alice.post("/playground/ask", data=note(), headers={"X-CSRF-Token": await csrf_of(alice)})
        async with TestClient(TestServer(alice.app)) as bob:
            answer = await bob.post(
                "/playground/ask", data=note(), headers={"X-CSRF-Token": await csrf_of(bob)}
            )
            assert "History 0" in (await answer.json())["answer"]
        # ...and each keeps its own: Alice's next note is answered with her first one in mind.
        again = await alice.post(
            "/playground/ask", data=note(), headers={"X-CSRF-Token": await csrf_of(alice)}
        )
        assert "History 1" in (await again.json())["answer"]


async def test_a_tool_name_the_model_makes_up_is_counted_as_unknown(wsettings) -> None:
    from bot import metrics
    from tests.scripted_engine import ScriptedEngine, answer, calls

    invented = "lookup_every_players_points"
    engine = ScriptedEngine([calls((invented, {}), ("get_player_stats", {})), answer("ok")])
    before = metrics.render().decode()
    async with web_client(wsettings, engine=engine) as (client, core):
        done = await ask(client, await csrf_of(client))
        assert done.status == 200, await done.text()
        text = await (await client.get("/metrics")).text()
        names = {t.name for t in core.toolbox.tools}

    unknown = 'voxdesk_tool_calls_total{ok="false",tool="unknown"}'
    stats = 'voxdesk_tool_calls_total{ok="true",tool="get_player_stats"}'
    assert metric_value(unknown, text) == metric_value(unknown, before) + 1
    assert metric_value(stats, text) == metric_value(stats, before) + 1
    assert invented not in text
    assert names == metrics.TOOLS  # every real tool keeps its own name


async def test_the_discord_gauge_is_on_metrics_only_where_discord_runs(wsettings) -> None:
    async with web_client(wsettings) as (client, _):  # `voxdesk web`: no Discord in the process
        alone = await (await client.get("/metrics")).text()
    async with web_client(wsettings, discord_ready=lambda: True) as (client, _):  # `voxdesk run`
        beside = await (await client.get("/metrics")).text()
    assert "voxdesk_discord_connected" not in alone and "voxdesk_notes_total" in alone
    assert re.search(r"^voxdesk_discord_connected 1\.0$", beside, re.M)
    assert beside.count("# TYPE voxdesk_discord_connected gauge") == 1


async def test_healthz_gives_a_reason_code_not_the_error_text_and_logs_it_once(
    wsettings, monkeypatch, caplog
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="bot.web.ops")
    monkeypatch.setattr(ops, "PROBE_EVERY_SECONDS", 0.0)
    secret = "cannot reach sql-7.corp.internal:1433 as svc_voxdesk"

    async def down() -> str:
        raise ConnectionError(secret)

    async with web_client(wsettings) as (client, core):
        up = core.stats.check
        core.stats.check = down  # type: ignore[method-assign]
        pages = [await client.get("/healthz") for _ in range(3)]
        bodies = [await p.text() for p in pages]
        core.stats.check = up  # type: ignore[method-assign]
        back = await client.get("/healthz")
    assert [p.status for p in pages] == [503] * 3 and back.status == 200
    assert all("corp.internal" not in body for body in bodies)
    assert (await pages[0].json())["checks"]["stats"] == {"ok": False, "error": "ConnectionError"}
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bot.web.ops"]
    assert logged == [
        ("WARNING", f"healthz: stats does not answer: ConnectionError: {secret}"),  # once, not per probe
        ("INFO", "healthz: stats answers again"),
    ]


async def test_healthz_logs_grievances_waiting_unfiled_as_not_ready_not_as_not_answering(
    wsettings, monkeypatch, caplog
) -> None:
    # The database answers while a grievance it refused waits in the spool: "does not answer"
    # would send the operator to a database that is up.
    from bot.tools.grievance_spool import GrievanceSpool

    caplog.set_level(logging.INFO, logger="bot.web.ops")
    monkeypatch.setattr(ops, "PROBE_EVERY_SECONDS", 0.0)
    async with web_client(wsettings) as (client, core):
        GrievanceSpool.beside(core.settings.storage_dir / "grievances.db").keep(
            user_id=NOVA,
            category="wallet",
            description="gems gone",
            at="2026-12-06T04:00:00Z",
            state="local_only",
        )
        waiting = [await client.get("/healthz") for _ in range(2)]
        assert await core.grievances.local_store.file_spooled() == 1
        back = await client.get("/healthz")
    assert [p.status for p in waiting] == [503, 503] and back.status == 200
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bot.web.ops"]
    assert logged == [
        (
            "WARNING",
            "healthz: grievances answers but is not ready: unfiled: 1 grievance(s) the database refused"
            " wait in its spool or in memory",
        ),
        ("INFO", "healthz: grievances is ready again"),
    ]


async def test_healthz_reads_the_spool_once_a_probe_while_grievances_wait(wsettings, monkeypatch) -> None:
    # Each probe read the whole spool twice (the database's check counted it, then the probe
    # again): a full disk's spool grows, and probes come every few seconds.
    from bot.tools.grievance_spool import GrievanceSpool

    async with web_client(wsettings) as (client, core):
        spool = core.grievances.local_store._spool
        assert isinstance(spool, GrievanceSpool)
        spool.keep(
            user_id=NOVA,
            category="wallet",
            description="gems gone",
            at="2026-12-06T04:00:00Z",
            state="local_only",
        )
        reads = []
        lines = spool.lines
        monkeypatch.setattr(spool, "lines", lambda: reads.append(1) or lines())
        page = await client.get("/healthz")
        body = await page.json()
    assert page.status == 503 and body["checks"]["grievances"]["error"] == "unfiled"
    assert len(reads) == 1


def test_healthz_logs_the_end_of_any_not_ready_as_ready_again(caplog) -> None:
    # Each kind of NotReady ends with the backend ready again, not only the two the grievances
    # probe raises today: "answers again" ends a backend that did not answer.
    class Draining(ops.NotReady):
        health_code = "draining"

    caplog.set_level(logging.INFO, logger="bot.web.ops")
    last: dict[str, str | None] = {}
    for failure in (Draining("draining its queue"), None, ops.NotReady("warming up"), None):
        ops._reason_code("stats", failure, last)
    logged = [r.getMessage() for r in caplog.records if r.name == "bot.web.ops"]
    assert logged == [
        "healthz: stats answers but is not ready: draining: draining its queue",
        "healthz: stats is ready again",
        "healthz: stats answers but is not ready: not_ready: warming up",
        "healthz: stats is ready again",
    ]


async def test_a_complaint_filed_in_the_playground_is_its_sessions_alone(settings) -> None:
    import json

    from tests.scripted_engine import ScriptedEngine, calls, tone_wav_reply

    private = "my card ending 4242 and ann@example.com were charged twice"
    complaint = ("register_grievance", {"category": "wallet", "description": private})

    def heard(turn):  # type: ignore[no-untyped-def]
        return tone_wav_reply(json.dumps([r.result for r in turn.rounds[-1].results]))

    engine = ScriptedEngine([calls(complaint), heard])
    async with web_client(web_settings(settings.storage_dir), engine=engine) as (alice, core):
        filed = await ask(alice, await csrf_of(alice))
        assert filed.status == 200, await filed.text()
        key = json.loads((await filed.json())["answer"])[0]["ticket_key"]
        mine = await (await alice.get("/playground/tickets", params={"player": NOVA})).json()
        # the demo player's own tickets are demo data, shown to every visitor
        assert [t["key"] for t in mine["tickets"]] == [key, "GRV-12", "GRV-10"]
        engine.steps = [
            calls(("get_grievance_status", {}), ("get_grievance_status", {"ticket_key": key})),
            heard,
        ]
        async with TestClient(TestServer(alice.app)) as bob:
            seen = await (await bob.get("/playground/tickets", params={"player": NOVA})).json()
            told = await ask(bob, await csrf_of(bob))
            told_bob = (await told.json())["answer"]
        told_alice = (await (await ask(alice, await csrf_of(alice))).json())["answer"]
        as_nova = await core.grievances.status(NOVA)
        (row,) = [r for r in await core.grievances.local_store.staff_list() if r.description == private]
    assert [t["key"] for t in seen["tickets"]] == ["GRV-12", "GRV-10"]
    assert private not in told_bob and f"No ticket {key}" in told_bob
    assert private in told_alice
    assert key not in {g.key for g in as_nova}  # nor on Discord, nor in Jira: not a Discord id
    assert row.user_id != NOVA and not row.user_id.isdigit()


async def test_playground_visitors_file_a_few_complaints_a_day_onto_the_desk(settings) -> None:
    import json

    from tests.scripted_engine import ScriptedEngine, calls, tone_wav_reply

    notes = iter(range(100))

    def two_complaints(turn):  # type: ignore[no-untyped-def]
        n = next(notes)  # new words each note: none is the same complaint told again
        return calls(
            ("register_grievance", {"category": "wallet", "description": f"my gems vanished, note {n}"}),
            ("register_grievance", {"category": "other", "description": f"the shop charged twice, note {n}"}),
        )(turn)

    def told(turn):  # type: ignore[no-untyped-def]
        return tone_wav_reply(json.dumps([r.result for r in turn.rounds[-1].results]))

    limited = web_settings(
        settings.storage_dir,
        VOXDESK_WEB_TRUST_FORWARDED="true",  # each visitor its own address, through our proxy
        VOXDESK_WEB_PLAYGROUND_COMPLAINTS="2",
        VOXDESK_WEB_PLAYGROUND_COMPLAINTS_PER_DAY="3",
    )

    async def results(client, address):  # type: ignore[no-untyped-def]
        headers = {"X-CSRF-Token": await csrf_of(client), "X-Forwarded-For": address}
        got = await client.post("/playground/ask", data=note_form(), headers=headers)
        assert got.status == 200, await got.text()
        return json.loads((await got.json())["answer"])

    engine = ScriptedEngine([two_complaints, told])
    async with web_client(limited, engine=engine) as (client, core):
        first = await results(client, "198.51.100.1")
        spent = await results(client, "198.51.100.1")
        other = await results(client, "203.0.113.7")
        rows = await core.grievances.local_store.staff_list()
    assert all("ticket_key" in r for r in first)
    assert (
        spent
        == [{"error": say.PLAYGROUND_COMPLAINTS_SPENT.format(complaints="2 complaints", wait="24 hours")}] * 2
    )
    # The first visitor's refused ones took nothing from every visitor's allowance.
    assert "ticket_key" in other[0]
    assert other[1] == {"error": say.PLAYGROUND_COMPLAINTS_FULL.format(wait="24 hours")}
    assert len([r for r in rows if r.user_id.startswith("web:")]) == 3


@pytest.mark.parametrize("session_key", [FERNET_KEY, ""], ids=["session-key", "no-session-key"])
async def test_the_playgrounds_complaint_limits_hold_across_a_restart(settings, session_key) -> None:
    # A day's limits a deploy or a crash started afresh would let the desk be buried a restart at
    # a time, as the daily budget, kept in usage.db, never is.
    import json

    from tests.scripted_engine import ScriptedEngine, calls, tone_wav_reply

    notes = iter(range(100))

    def two_complaints(turn):  # type: ignore[no-untyped-def]
        n = next(notes)
        return calls(
            ("register_grievance", {"category": "wallet", "description": f"my gems vanished, note {n}"}),
            ("register_grievance", {"category": "other", "description": f"the shop charged twice, note {n}"}),
        )(turn)

    def told(turn):  # type: ignore[no-untyped-def]
        return tone_wav_reply(json.dumps([r.result for r in turn.rounds[-1].results]))

    limited = web_settings(
        settings.storage_dir,
        VOXDESK_WEB_TRUST_FORWARDED="true",
        VOXDESK_WEB_PLAYGROUND_COMPLAINTS="2",
        VOXDESK_WEB_PLAYGROUND_COMPLAINTS_PER_DAY="3",
        VOXDESK_WEB_SESSION_KEY=session_key,
    )

    async def results(client, address):  # type: ignore[no-untyped-def]
        headers = {"X-CSRF-Token": await csrf_of(client), "X-Forwarded-For": address}
        got = await client.post("/playground/ask", data=note_form(), headers=headers)
        assert got.status == 200, await got.text()
        return json.loads((await got.json())["answer"])

    async with web_client(limited, engine=ScriptedEngine([two_complaints, told])) as (client, _):
        assert all("ticket_key" in r for r in await results(client, "198.51.100.1"))
    async with web_client(limited, engine=ScriptedEngine([two_complaints, told])) as (client, core):
        again = await results(client, "198.51.100.1")
        other = await results(client, "203.0.113.7")
        rows = await core.grievances.local_store.staff_list()
    spent = say.PLAYGROUND_COMPLAINTS_SPENT.format(complaints="2 complaints", wait="24 hours")
    full = say.PLAYGROUND_COMPLAINTS_FULL.format(wait="24 hours")
    if session_key:  # one visitor under one name in every process
        assert again == [{"error": spent}] * 2
        assert "ticket_key" in other[0] and other[1] == {"error": full}
    else:  # each start keys visitors afresh: only every visitor's count together holds
        assert "ticket_key" in again[0] and again[1] == {"error": full}
        assert other == [{"error": full}] * 2
    assert len([r for r in rows if r.user_id.startswith("web:")]) == 3


async def test_a_complaint_count_web_db_refuses_still_holds_until_a_restart(settings, caplog) -> None:
    import json

    from tests.scripted_engine import ScriptedEngine, calls, tone_wav_reply

    complaint = ("register_grievance", {"category": "wallet", "description": "my gems vanished"})

    def told(turn):  # type: ignore[no-untyped-def]
        return tone_wav_reply(json.dumps([r.result for r in turn.rounds[-1].results]))

    limited = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_COMPLAINTS="1")
    caplog.set_level(logging.WARNING)
    engine = ScriptedEngine([calls(complaint), told])
    async with web_client(limited, engine=engine) as (client, _):
        other = sqlite3.connect(settings.storage_dir / "web.db", timeout=1, isolation_level=None)
        try:
            # web.db cannot take it (damaged, say): its table is not where it was.
            other.execute("ALTER TABLE playground_complaints RENAME TO elsewhere")
            first = await (await ask(client, await csrf_of(client))).json()
            second = await (await ask(client, await csrf_of(client))).json()
            await asyncio.gather(*client.server.app[STATE].complaint_log._writes)
        finally:
            other.close()
    assert "ticket_key" in json.loads(first["answer"])[0]
    assert "Not filed" in json.loads(second["answer"])[0]["error"]
    said = [r.getMessage() for r in caplog.records if "complaint's count" in r.getMessage()]
    assert len(said) == 1 and "a restart would forget it" in said[0], said
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_complaint_restored_from_the_future_counts_as_made_now() -> None:
    # The clock stepped back (an NTP correction, a restored VM) since web.db kept a complaint:
    # its time lies ahead, and counted there it would hold the limit for longer than a day.
    now = [1000.0]
    limit = RateLimit(1, playground.DAY, clock=lambda: now[0])
    limit.restore("visitor", -2 * playground.DAY)
    assert limit.spent("visitor")
    now[0] += playground.DAY + 1
    assert not limit.spent("visitor")


async def test_complaint_times_in_the_future_are_kept_as_now_in_web_db(tmp_path) -> None:
    # Else every restart within the days the clock was stepped back would count them afresh.
    from bot.web.security import PlaygroundComplaints

    path = tmp_path / "web.db"
    log = await PlaygroundComplaints.open(path, playground.DAY)
    await log.aclose()
    ahead = time.time() + 2 * playground.DAY
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO playground_complaints (visitor, at) VALUES ('v', ?)", (ahead,))
    log = await PlaygroundComplaints.open(path, playground.DAY)
    try:
        (kept,) = await log.since(0.0)
    finally:
        await log.aclose()
    assert kept[0] == "v" and kept[1] <= time.time()


async def test_the_desk_marks_complaints_from_anonymous_playground_visitors(settings) -> None:
    import json

    from tests.scripted_engine import ScriptedEngine, calls, tone_wav_reply

    complaint = ("register_grievance", {"category": "wallet", "description": "my gems vanished"})

    def told(turn):  # type: ignore[no-untyped-def]
        return tone_wav_reply(json.dumps([r.result for r in turn.rounds[-1].results]))

    mark = "anonymous playground visitor"
    engine = ScriptedEngine([calls(complaint), told])
    async with web_client(web_settings(settings.storage_dir), engine=engine) as (client, _):
        filed = await ask(client, await csrf_of(client))
        key = json.loads((await filed.json())["answer"])[0]["ticket_key"]
        await log_in(client)
        listed = await (await client.get("/desk")).text()
        theirs = await (await client.get(f"/desk/ticket/{key}")).text()
        players = await (await client.get("/desk/ticket/GRV-10")).text()  # a demo player's own
    assert listed.count(mark) == 1
    assert mark in theirs and mark not in players


async def test_a_playground_complaint_the_fallback_finds_again_is_counted_once(settings) -> None:
    # The engine fails after filing the visitor's last allowed complaint; the fallback, running
    # the note again, files it again by its place and finds that same ticket. Counted a second
    # time, it would be refused: the visitor told "Not filed" of a ticket on the desk.
    import json

    from bot.engines.base import EngineError
    from tests.scripted_engine import ScriptedEngine, answer, calls, tone_wav_reply

    complaint = ("register_grievance", {"category": "wallet", "description": "my gems vanished"})

    def fail(turn):  # type: ignore[no-untyped-def]
        raise EngineError("service down")

    def told(turn):  # type: ignore[no-untyped-def]
        return tone_wav_reply(json.dumps([r.result for r in turn.rounds[-1].results]))

    limited = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_COMPLAINTS="1")
    async with web_client(limited, engine=ScriptedEngine([calls(complaint), fail])) as (client, core):
        core.agent.fallback = ScriptedEngine([answer("unused"), calls(complaint), told], name="backup")
        headers = {"X-CSRF-Token": await csrf_of(client)}
        got = await client.post("/playground/ask", data=note_form(), headers=headers)
        assert got.status == 200, await got.text()
        body = await got.json()
        rows = await core.grievances.local_store.staff_list()
    (filed,) = [r for r in rows if r.user_id.startswith("web:")]
    assert body["engine"] == "backup"
    ticket = {"ticket_key": filed.local_key, "status": filed.status, "category": "wallet"}
    assert json.loads(body["answer"]) == [ticket]


def test_a_visitor_allowed_one_complaint_a_day_is_told_of_one_complaint(settings) -> None:
    from types import SimpleNamespace

    from bot.web.playground import _may_file

    limited = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_COMPLAINTS="1")
    st = SimpleNamespace(
        settings=limited,
        complaints=RateLimit(1, playground.DAY),
        all_complaints=RateLimit(100, playground.DAY),
        complaint_log=SimpleNamespace(record=lambda visitor, at, window: None),
        clock=time.time,
    )
    assert _may_file(st, "198.51.100.1") is None  # type: ignore[arg-type]
    refusal = _may_file(st, "198.51.100.1")  # type: ignore[arg-type]
    assert refusal is not None and "takes 1 complaint a day" in refusal


# ---- the playground under a flood ----------------------------------------------------------------


async def test_a_note_that_fails_on_our_side_gets_the_words_discord_players_get(settings) -> None:
    budgeted = web_settings(settings.storage_dir, VOXDESK_USAGE_DAILY_TOKENS="100000")
    failed = 'voxdesk_notes_total{frontend="web",outcome="failed",reason="error"}'
    async with web_client(budgeted) as (client, _):
        before = metric_value(failed, await (await client.get("/metrics")).text())
        token = await csrf_of(client)
        other = sqlite3.connect(settings.storage_dir / "usage.db", timeout=1, isolation_level=None)
        try:
            # The budget's database cannot answer (damaged, say): its table is not where it was.
            other.execute("ALTER TABLE usage RENAME TO usage_elsewhere")
            answer = await ask(client, token)
        finally:
            other.close()
        assert answer.status == 500
        assert await answer.json() == {"error": say.OOPS}
        assert metric_value(failed, await (await client.get("/metrics")).text()) == before + 1


async def test_a_budget_the_playground_cannot_read_is_said_once_not_once_a_visitor(settings, caplog) -> None:
    # usage.db failing would log a traceback at ERROR for every visitor's request, where a
    # Discord note's read of the same budget is said once for the outage.
    budgeted = web_settings(settings.storage_dir, VOXDESK_USAGE_DAILY_TOKENS="100000")
    async with web_client(budgeted) as (client, _):
        token = await csrf_of(client)
        other = sqlite3.connect(settings.storage_dir / "usage.db", timeout=1, isolation_level=None)
        try:
            other.execute("ALTER TABLE usage RENAME TO usage_elsewhere")
            caplog.set_level(logging.DEBUG)
            for _ in range(3):
                assert (await ask(client, token)).status == 500
            other.execute("ALTER TABLE usage_elsewhere RENAME TO usage")
            assert (await ask(client, token)).status == 200
        finally:
            other.close()
    said = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    assert "usage.db is read again" in caplog.text


async def test_a_budget_the_playground_reads_again_ends_its_outage_without_a_turn(settings, caplog) -> None:
    # A visitor's read that works says the outage is over even when no turn follows it (an empty
    # note, an over-budget visitor): else the next outage of the same kind would go unsaid.
    budgeted = web_settings(settings.storage_dir, VOXDESK_USAGE_DAILY_TOKENS="100000")
    async with web_client(budgeted) as (client, _):
        token = await csrf_of(client)
        other = sqlite3.connect(settings.storage_dir / "usage.db", timeout=1, isolation_level=None)
        try:
            caplog.set_level(logging.DEBUG)
            for _ in range(2):
                other.execute("ALTER TABLE usage RENAME TO usage_elsewhere")
                assert (await ask(client, token)).status == 500
                other.execute("ALTER TABLE usage_elsewhere RENAME TO usage")
                assert (await ask(client, token, data=b"")).status == 422
        finally:
            other.close()
    said = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.ERROR, logging.ERROR]
    assert caplog.text.count("usage.db is read again") == 2


async def test_a_ticket_view_the_database_cannot_answer_says_so(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        await csrf_of(client)
        other = sqlite3.connect(wsettings.storage_dir / "grievances.db", timeout=1, isolation_level=None)
        try:
            # The database cannot answer (damaged, say): here its table is not where it was.
            other.execute("ALTER TABLE grievances RENAME TO grievances_elsewhere")
            view = await client.get("/playground/tickets", params={"player": NOVA})
            assert view.status == 503
            assert await view.json() == {"error": say.TICKETS_UNAVAILABLE}
            other.execute("ALTER TABLE grievances_elsewhere RENAME TO grievances")
        finally:
            other.close()
        assert (await client.get("/playground/tickets", params={"player": NOVA})).status == 200


async def test_anonymous_ticket_views_have_a_per_client_rate_limit(settings, monkeypatch) -> None:
    monkeypatch.setattr(playground, "TICKET_VIEWS", 3, raising=False)
    async with web_client(web_settings(settings.storage_dir)) as (client, _):
        views = [await client.get("/playground/tickets", params={"player": NOVA}) for _ in range(4)]
        assert [v.status for v in views] == [200, 200, 200, 429]
        assert int(views[-1].headers["Retry-After"]) >= 1
        assert "faster than I can look" in (await views[-1].json())["error"]


async def test_a_flood_of_ticket_views_costs_jira_one_search_a_player(settings) -> None:
    from tests.fakes.jira_server import running_fake_jira

    async with running_fake_jira() as jira:
        on_jira = web_settings(settings.storage_dir).replace(
            tools={"grievances": "jira"},
            jira={"url": jira.url, "push_interval_seconds": 3600, "settle_seconds": 0.0},
            secrets={"jira_email": jira.email, "jira_api_token": jira.token},
        )
        async with web_client(on_jira) as (client, _):
            before = len(jira.requests_to("/search/jql"))
            views = await asyncio.gather(
                *(client.get("/playground/tickets", params={"player": NOVA}) for _ in range(10))
            )
            assert {v.status for v in views} == {200}
            assert len(jira.requests_to("/search/jql")) == before + 1
            other = await client.get("/playground/tickets", params={"player": BLAZE})
            assert other.status == 200  # each player's tickets are their own look-up
            assert len(jira.requests_to("/search/jql")) == before + 2


async def test_the_playground_has_a_ceiling_of_notes_a_minute_across_every_client(settings) -> None:
    s = web_settings(
        settings.storage_dir,
        VOXDESK_WEB_PLAYGROUND_NOTES="1",  # one a client: the ceiling, not the per-client limit, refuses
        VOXDESK_WEB_PLAYGROUND_NOTES_PER_MINUTE="2",
        VOXDESK_WEB_TRUST_FORWARDED="true",
    )
    async with web_client(s) as (client, _):
        token = await csrf_of(client)
        answers = []
        for i in range(3):
            headers = {"X-CSRF-Token": token, "X-Forwarded-For": f"198.51.100.{i + 1}"}
            answers.append(await client.post("/playground/ask", data=note_form(), headers=headers))
        assert [a.status for a in answers] == [200, 200, 429]
        assert "busy answering other visitors' notes" in (await answers[-1].json())["error"]
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60


async def test_the_playground_reads_only_a_few_uploads_at_once_across_every_client(settings) -> None:
    """Each upload in flight holds up to audio.max_bytes: many clients each sending their per-client
    allowance at once must not make the server hold all of them."""
    from bot.web import STATE

    s = web_settings(
        settings.storage_dir,
        VOXDESK_WEB_PLAYGROUND_TURNS="1",
        VOXDESK_WEB_PLAYGROUND_NOTES="100",
        VOXDESK_WEB_TRUST_FORWARDED="true",
    )
    boundary = "held-upload"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="player"\r\n\r\n{NOVA}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="n.ogg"\r\n'
        "Content-Type: audio/ogg\r\n\r\n"
    ).encode()
    release = asyncio.Event()

    async def held_body():  # type: ignore[no-untyped-def]
        yield head + NOTE[:1000]
        await release.wait()
        yield NOTE[1000:] + f"\r\n--{boundary}--\r\n".encode()

    async with web_client(s) as (client, _):
        st = client.app[STATE]
        token = await csrf_of(client)
        held = [
            asyncio.create_task(
                client.post(
                    "/playground/ask",
                    data=held_body(),
                    headers={
                        "X-CSRF-Token": token,
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "X-Forwarded-For": f"198.51.100.{i + 1}",  # each its own client
                    },
                )
            )
            for i in range(playground.UPLOADS_PER_TURN)
        ]
        while st.playground_uploads < playground.UPLOADS_PER_TURN:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.01)
        one_more = await client.post(
            "/playground/ask",
            data=note_form(),
            headers={"X-CSRF-Token": token, "X-Forwarded-For": "198.51.100.99"},
        )
        assert one_more.status == 429 and one_more.headers["Retry-After"]
        assert "busy answering other visitors' notes" in (await one_more.json())["error"]
        release.set()
        answers = await asyncio.gather(*held)
        assert all(a.status in (200, 429) for a in answers) and st.playground_uploads == 0
        assert (await ask(client, token)).status == 200


async def test_slow_uploads_cannot_hold_the_playground(settings, monkeypatch) -> None:
    """With uploads read a few at once, a slow sender could hold them all: one client holds at most
    two, and each is given a deadline."""
    from bot.web import STATE

    monkeypatch.setattr(playground, "UPLOAD_SECONDS", 0.5)
    s = web_settings(settings.storage_dir, VOXDESK_WEB_PLAYGROUND_NOTES="100")
    boundary = "slow-upload"
    never = asyncio.Event()

    async def stalled_body():  # type: ignore[no-untyped-def]
        yield f"--{boundary}\r\n".encode()
        await never.wait()

    async with web_client(s) as (client, _):
        st = client.app[STATE]
        token = await csrf_of(client)
        headers = {"X-CSRF-Token": token, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        stalled = [
            asyncio.create_task(client.post("/playground/ask", data=stalled_body(), headers=headers))
            for _ in range(playground.UPLOADS_PER_CLIENT)
        ]
        while st.playground_uploads < playground.UPLOADS_PER_CLIENT:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.01)
        third = await ask(client, token)
        assert third.status == 429 and "faster than I can answer" in (await third.json())["error"]
        # Not a timing assertion: a guard so uploads with no deadline fail the test, not hang it.
        answers = await asyncio.wait_for(asyncio.gather(*stalled), 30)
        assert [a.status for a in answers] == [408] * playground.UPLOADS_PER_CLIENT
        assert "took too long to upload" in (await answers[0].json())["error"]
        assert st.playground_uploads == 0 and not st.uploads_by_client
        assert (await ask(client, token)).status == 200


def note_that_never_ends(boundary: str, player: str, never: asyncio.Event):  # type: ignore[no-untyped-def]
    """A playground upload whose player is sent, then the start of its note, and nothing more."""

    async def body():  # type: ignore[no-untyped-def]
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="player"\r\n\r\n{player}\r\n'.encode()
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="n.ogg"\r\n'
            "Content-Type: audio/ogg\r\n\r\n"
        ).encode() + NOTE
        yield bytes(64 * 1024)  # more of the note (a real one goes on arriving): it never ends
        await never.wait()

    return body()


@pytest.mark.parametrize("refused", ["not offered", "over budget"])
async def test_a_refused_player_is_told_before_the_note_is_read(settings, monkeypatch, refused: str) -> None:
    """The player comes before the note in the form: one the playground does not speak as, or a
    visitor whose budget for today is spent, is refused without the note being read."""
    # With the note read first, the upload that never ends is refused only at this deadline: 408.
    monkeypatch.setattr(playground, "UPLOAD_SECONDS", 0.5)
    s = web_settings(settings.storage_dir, VOXDESK_USAGE_DAILY_AUDIO_SECONDS="1")
    boundary, never = "never-ends", asyncio.Event()
    async with web_client(s) as (client, _):
        token = await csrf_of(client)
        player = "424242424242424242" if refused == "not offered" else NOVA
        if refused == "over budget":
            assert (await ask(client, token)).status == 200  # a note of a few seconds spends it
        headers = {"X-CSRF-Token": token, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        answer = await client.post(
            "/playground/ask", data=note_that_never_ends(boundary, player, never), headers=headers
        )
        if refused == "not offered":
            assert answer.status == 400
            assert await answer.json() == {"error": "Choose one of the playground's players."}
        else:
            assert answer.status == 429 and int(answer.headers["Retry-After"]) > 0
            assert (await answer.json())["error"].startswith(say.OVER_BUDGET.split("{")[0])


async def test_each_playground_visitor_has_a_daily_budget_of_their_own(settings) -> None:
    """Not the demo player's, which every visitor shares (one visitor would spend it for all, and
    going through the twelve, the playground for everyone), nor the session's, which a dropped
    cookie starts afresh: the visitor's address's."""
    s = web_settings(
        settings.storage_dir, VOXDESK_USAGE_DAILY_AUDIO_SECONDS="1", VOXDESK_WEB_TRUST_FORWARDED="true"
    )
    alice, bob = "198.51.100.7", "203.0.113.9"

    async def note(client: TestClient, address: str, player: str):  # type: ignore[no-untyped-def]
        token = await csrf_of(client)
        headers = {"X-CSRF-Token": token, "X-Forwarded-For": address}
        return await client.post("/playground/ask", data=note_form(player=player), headers=headers)

    async with web_client(s) as (client, _):
        assert (await note(client, alice, NOVA)).status == 200  # a note of a few seconds spends it
        for player in (NOVA, BLAZE):
            spent = await note(client, alice, player)
            assert spent.status == 429, player
            assert (await spent.json())["error"].startswith(say.OVER_BUDGET.split("{")[0]), player
        async with TestClient(TestServer(client.app)) as alice_without_her_cookie:
            assert (await note(alice_without_her_cookie, alice, QUILL)).status == 429
        async with TestClient(TestServer(client.app)) as other_visitor:
            assert (await note(other_visitor, bob, NOVA)).status == 200
    # Kept under a keyed hash of the address, never the address itself.
    with contextlib.closing(sqlite3.connect(settings.storage_dir / "usage.db")) as db:
        spenders = {row[0] for row in db.execute("SELECT user_id FROM usage")}
    assert len(spenders) == 2 and not any(alice in u or bob in u or NOVA in u for u in spenders)


async def test_a_note_sent_before_its_player_is_refused(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        form = FormData()
        form.add_field("audio", NOTE, filename="note.ogg", content_type="audio/ogg")
        form.add_field("player", NOVA)
        answer = await client.post(
            "/playground/ask", data=form, headers={"X-CSRF-Token": await csrf_of(client)}
        )
        assert answer.status == 400 and await answer.json() == {"error": say.BAD_UPLOAD}


def _part(name: str, value: bytes, filename: str | None = None) -> bytes:
    named = f'; filename="{filename}"' if filename else ""
    return f'--B\r\nContent-Disposition: form-data; name="{name}"{named}\r\n\r\n'.encode() + value + b"\r\n"


@pytest.mark.parametrize(
    ("parts", "status", "error"),
    [
        ([("player", NOVA.encode(), None)], 422, say.EMPTY_NOTE),
        (
            [("player", NOVA.encode(), None), ("audio", NOTE, "a.ogg"), ("audio", NOTE, "b.ogg")],
            400,
            say.BAD_UPLOAD,
        ),
        ([("who", NOVA.encode(), None), ("audio", NOTE, "a.ogg")], 400, say.BAD_UPLOAD),
        ([("player", NOVA.encode(), None), ("file", NOTE, "a.ogg")], 400, say.BAD_UPLOAD),
        (
            [("player", b"\xff\xfe", None), ("audio", NOTE, "a.ogg")],
            400,
            "Choose one of the playground's players.",
        ),
        ([], 400, "Choose one of the playground's players."),
    ],
    ids=["no-file", "two-files", "player-misnamed", "audio-misnamed", "player-not-utf8", "no-parts"],
)
async def test_a_playground_form_that_is_not_one_player_then_one_note_is_told_what_is_wrong(
    wsettings, parts, status: int, error: str
) -> None:
    body = b"".join(_part(*p) for p in parts) + b"--B--\r\n"
    async with web_client(wsettings) as (client, _):
        headers = {"X-CSRF-Token": await csrf_of(client), "Content-Type": "multipart/form-data; boundary=B"}
        answer = await client.post("/playground/ask", data=body, headers=headers)
        assert answer.status == status and await answer.json() == {"error": error}


async def test_a_playground_note_of_no_stated_length_is_refused_once_past_the_limit(settings) -> None:
    # Sent chunked, no Content-Length to refuse it by: read no further than the limit.
    s = web_settings(settings.storage_dir, VOXDESK_AUDIO_MAX_BYTES="200000")
    sent = [0]

    async def body():  # type: ignore[no-untyped-def]
        yield _part("player", NOVA.encode()) + b'--B\r\nContent-Disposition: form-data; name="audio"\r\n\r\n'
        for _ in range(400):  # 26 MB, were it all read
            sent[0] += 1
            yield bytes(64 * 1024)
        yield b"\r\n--B--\r\n"

    async with web_client(s) as (client, _):
        headers = {"X-CSRF-Token": await csrf_of(client), "Content-Type": "multipart/form-data; boundary=B"}
        answer = await client.post("/playground/ask", data=body(), headers=headers)
        assert answer.status == 413 and "too big for me" in (await answer.json())["error"]
    assert sent[0] < 400


async def test_two_sessions_speaking_as_one_player_are_answered_side_by_side(wsettings) -> None:
    """The demo players are shared: one visitor's notes as Nova do not wait for another's."""
    from tests.frontend_engine import FrontendEngine

    inside = 0
    both_in = asyncio.Event()
    met: list[bool] = []  # for each turn: did it meet the other with the engine

    class Holding(FrontendEngine):
        async def complete(self, turn):  # type: ignore[no-untyped-def]
            nonlocal inside
            if not turn.rounds:
                inside += 1
                if inside == 2:
                    both_in.set()
                # Not a timing assertion: a guard so turns kept apart fail the test, not hang it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(both_in.wait(), 30)
                met.append(both_in.is_set())
            return await super().complete(turn)

    async with web_client(wsettings, engine=Holding()) as (alice, _):
        async with TestClient(TestServer(alice.app)) as bob:
            answers = await asyncio.gather(ask(alice, await csrf_of(alice)), ask(bob, await csrf_of(bob)))
            assert [a.status for a in answers] == [200, 200]
    assert met == [True, True]


def test_rate_limit_forgets_idle_clients_from_the_front_and_keeps_a_bounded_number(monkeypatch) -> None:
    from bot.web import security

    monkeypatch.setattr(security, "MAX_CLIENTS", 100, raising=False)
    now = [0.0]
    limit = RateLimit(1, 10.0, clock=lambda: now[0])
    for i in range(150):  # a flood from many addresses, all within one window
        now[0] = i * 0.01
        assert limit.retry_after(f"client {i}") == 0
    assert len(limit._events) == 100  # the longest idle forgotten
    assert limit.retry_after("client 149") > 0  # the newest still held to the limit
    now[0] = 30.0  # the window passed for every one of them
    assert limit.retry_after("late") == 0
    assert list(limit._events) == ["late"]


# ---- response headers, sessions, forms ----------------------------------------------------------


async def test_staff_pages_and_pages_that_set_a_cookie_are_never_cached(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        first = await client.get("/")
        assert "Set-Cookie" in first.headers and first.headers["Cache-Control"] == "no-store"
        locked = await client.get("/desk", allow_redirects=False)
        assert locked.status == 303 and locked.headers["Cache-Control"] == "no-store"
        assert (await client.get("/desk/login")).headers["Cache-Control"] == "no-store"
        assert await log_in(client) == 303
        for path in ("/desk", "/desk/ticket/GRV-10", "/desk/check", "/desk/charts", "/"):
            page = await client.get(path)
            assert page.status == 200 and page.headers.get("Cache-Control") == "no-store", path


@pytest.mark.parametrize("path", ["/broken", "/playground/broken"])
async def test_an_unexpected_error_is_a_plain_500_with_every_security_header(wsettings, caplog, path) -> None:
    from aiohttp import web

    from bot.app import build_app
    from bot.web import build_web
    from tests.frontend_engine import FrontendEngine

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail of the failure")

    core = await build_app(wsettings, FrontendEngine())
    try:
        app = await build_web(core)
        app.router.add_get(path, broken)  # a handler's bug, whichever route it is in
        async with TestClient(TestServer(app)) as client:
            with caplog.at_level(logging.ERROR):
                got = await client.get(path, headers={"Accept": "text/html"})
            body = await got.text()
    finally:
        await core.aclose()
    assert got.status == 500
    assert "secret detail" not in body and "Traceback" not in body
    if path.startswith("/playground/"):
        assert (await got.json())["error"] == say.OOPS  # the words the page shows
    assert "default-src 'self'" in got.headers["Content-Security-Policy"]
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["X-Frame-Options"] == "DENY"
    assert got.headers["Server"] == "voxdesk"
    logged = [r for r in caplog.records if r.exc_info and "secret detail" in str(r.exc_info[1])]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR


async def test_no_answer_names_the_server_software_or_its_version(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        for path in ("/", "/healthz", "/static/style.css", "/no-such-page", "/desk/login"):
            got = await client.get(path)
            assert got.headers["Server"] == "voxdesk", path


async def test_a_request_aiohttp_cannot_parse_names_no_server_software_either(wsettings) -> None:
    # aiohttp answers it (400) before any middleware runs: its answer would name "Python/3.11
    # aiohttp/3.14.5" to anyone who sends one malformed header, a scanner's first probe.
    async with web_client(wsettings) as (client, _):
        reader, writer = await asyncio.open_connection(client.host, client.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\n\r\n")
            await writer.drain()
            head = (await reader.read(4096)).split(b"\r\n\r\n")[0].decode()
        finally:
            writer.close()
    assert head.startswith("HTTP/1.0 400") and "\r\nServer: voxdesk" in head, head
    assert "aiohttp" not in head


async def test_probes_scrapes_static_files_and_404s_start_no_session(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        for path in ("/healthz", "/healthz?live", "/metrics", "/static/style.css", "/no-such-page"):
            got = await client.get(path)
            assert "Set-Cookie" not in got.headers, path
        assert not list(client.session.cookie_jar)
        assert "Set-Cookie" in (await client.get("/")).headers  # a page still starts one


async def test_hsts_is_sent_whenever_cookies_are_secure(settings) -> None:
    async with web_client(web_settings(settings.storage_dir)) as (client, _):
        assert "Strict-Transport-Security" not in (await client.get("/healthz")).headers
    secure = web_settings(settings.storage_dir, VOXDESK_WEB_SECURE_COOKIES="true")
    async with web_client(secure) as (client, _):
        for path in ("/", "/healthz", "/desk/login"):
            got = await client.get(path)
            assert got.headers["Strict-Transport-Security"] == "max-age=31536000", path
        assert "Secure" in (await client.get("/")).headers["Set-Cookie"]


async def test_on_https_a_session_cookie_another_site_could_set_is_not_read(settings) -> None:
    secure = web_settings(settings.storage_dir, VOXDESK_WEB_SECURE_COOKIES="true")
    async with web_client(secure) as (attacker, _):
        page = await attacker.get("/")
        # The __Host- prefix: browsers take it only Secure, for Path=/, with no Domain, and so never
        # from a sibling subdomain (or an answer over plain http) of the site.
        name, _, attributes = page.headers["Set-Cookie"].partition("=")
        assert name == "__Host-voxdesk_session"
        assert "Secure" in attributes and "Path=/" in attributes and "Domain" not in attributes
        planted = page.cookies[name].value
        token = CSRF.search(await page.text()).group(1)  # type: ignore[union-attr]
        # The attacker's own session, set under the plain name for a victim by a sibling subdomain:
        # read as the victim's, the attacker could fetch their reply audio and see what they filed.
        async with TestClient(TestServer(attacker.app)) as victim:
            seen = await victim.get("/", headers={"Cookie": f"voxdesk_session={planted}"})
            assert CSRF.search(await seen.text()).group(1) != token  # type: ignore[union-attr]


async def test_on_https_a_logout_deletes_the_cookie_as_a_browser_takes_it(settings) -> None:
    """A browser takes a __Host- cookie only Secure, for Path=/, with no Domain: its deletion
    too. Refused, the cookie stays in the browser: the playground session at logout is the next
    person's at the machine, and a logout web.db could not record leaves that browser logged in."""
    from http.cookies import SimpleCookie

    secure = web_settings(settings.storage_dir, VOXDESK_WEB_SECURE_COOKIES="true")
    name = "__Host-voxdesk_session"
    async with web_client(secure) as (client, _):
        # As a browser would over https (the test client, on http, keeps a Secure cookie back).
        page = await client.get("/desk/login")
        token = CSRF.search(await page.text()).group(1)  # type: ignore[union-attr]
        cookie = {"Cookie": f"{name}={page.cookies[name].value}"}
        form = {"csrf": token, "password": STAFF_PASSWORD}
        done = await client.post("/desk/login", data=form, headers=cookie, allow_redirects=False)
        assert done.status == 303
        cookie = {"Cookie": f"{name}={done.cookies[name].value}"}
        desk_page = await client.get("/desk", headers=cookie, allow_redirects=False)
        assert desk_page.status == 200
        token = CSRF.search(await desk_page.text()).group(1)  # type: ignore[union-attr]
        cookie = {"Cookie": f"{name}={desk_page.cookies[name].value}"}  # now holding that token
        out = await client.post("/desk/logout", data={"csrf": token}, headers=cookie, allow_redirects=False)
        assert out.status == 303
        deleted = SimpleCookie(out.headers["Set-Cookie"])[name]
        assert deleted.value == "" and deleted["max-age"] == "0"
        assert deleted["secure"] and deleted["path"] == "/" and not deleted["domain"]


async def test_https_with_secure_cookies_forgotten_is_said_once(settings, caplog) -> None:
    """Without web.secure_cookies the cookie has no __Host- prefix: a sibling subdomain can plant
    its own session in a visitor's browser and, holding a copy, see what the visitor files in the
    playground under it. Over plain http (the local demo) that is the price of a working login; a
    site served over https has only forgotten the setting."""
    caplog.set_level(logging.WARNING, logger="bot.web")
    https = {"X-Forwarded-Proto": "https"}

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "web.secure_cookies is off" in r.getMessage()]

    async with web_client(web_settings(settings.storage_dir)) as (client, _):
        assert (await client.get("/")).status == 200
        assert said() == []  # plain http: the demo
        for path in ("/", "/desk/login", "/"):
            assert (await client.get(path, headers=https)).status == 200
        assert len(said()) == 1 and "set web.secure_cookies = true" in said()[0]
    caplog.clear()
    # A client's own X-Forwarded-Proto (its peer no proxy of ours) says nothing of the site.
    elsewhere = web_settings(settings.storage_dir, VOXDESK_WEB_TRUSTED_PROXIES="10.0.0.5")
    async with web_client(elsewhere) as (client, _):
        assert (await client.get("/", headers=https)).status == 200
    secure = web_settings(settings.storage_dir, VOXDESK_WEB_SECURE_COOKIES="true")
    async with web_client(secure) as (client, _):
        assert (await client.get("/", headers=https)).status == 200
    assert said() == []


async def test_a_cookie_set_over_https_is_secure_even_if_secure_cookies_was_forgotten(settings) -> None:
    async with web_client(web_settings(settings.storage_dir)) as (client, _):
        # The local http demo: a Secure cookie would be dropped there, and the desk could not log in.
        assert "Secure" not in (await client.get("/")).headers["Set-Cookie"]
        # Behind a TLS-terminating proxy: the login cookie never goes back over plain http.
        https = {"X-Forwarded-Proto": "https"}
        async with TestClient(TestServer(client.app)) as staff:
            page = await staff.get("/desk/login", headers=https)
            assert "Secure" in page.headers["Set-Cookie"]
            token = CSRF.search(await page.text()).group(1)  # type: ignore[union-attr]
            # As a browser would over https (the test client, on http, keeps a Secure cookie back).
            cookie = page.cookies["voxdesk_session"].value
            done = await staff.post(
                "/desk/login",
                data={"csrf": token, "password": STAFF_PASSWORD},
                headers={**https, "Cookie": f"voxdesk_session={cookie}"},
                allow_redirects=False,
            )
            assert done.status == 303 and "Secure" in done.headers["Set-Cookie"]


UNREADABLE_FORMS = [
    ("multipart/form-data", b"password=x"),  # no boundary
    ("application/x-www-form-urlencoded; charset=bogus", b"password=x"),
    ("multipart/form-data; boundary=B", b"not multipart at all"),
    (
        "multipart/form-data; boundary=B",
        b'--B\r\nContent-Disposition: form-data; name="body"\r\n'
        b"Content-Transfer-Encoding: bogus\r\n\r\nxx\r\n--B--\r\n",
    ),
    ("multipart/form-data; boundary=B", b"--B\r\nno header here\r\n\r\nxx\r\n--B--\r\n"),
]


@pytest.mark.parametrize(("content_type", "body"), UNREADABLE_FORMS)
async def test_an_unreadable_form_with_the_csrf_header_is_refused_not_a_server_error(
    wsettings, caplog, content_type: str, body: bytes
) -> None:
    import logging

    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        headers = {"X-CSRF-Token": token, "Content-Type": content_type}
        caplog.set_level(logging.ERROR)
        for path in ("/desk/ticket/GRV-10/note", "/desk/ticket/GRV-10/status", "/desk/login"):
            answer = await client.post(path, data=body, headers=headers, allow_redirects=False)
            assert answer.status == 400, (path, answer.status)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/desk/login", "application/x-www-form-urlencoded"),
        ("/desk/ticket/GRV-10/note", "application/x-www-form-urlencoded"),
        ("/desk/ticket/GRV-10/status", "multipart/form-data; boundary=B"),
        ("/playground/ask", "multipart/form-data; boundary=B"),
    ],
)
async def test_a_body_that_is_not_the_encoding_it_claims_is_refused_not_a_server_error(
    wsettings, caplog, path: str, content_type: str
) -> None:
    import logging

    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        caplog.set_level(logging.WARNING)
        # aiohttp inflates a gzip body as it is read: bytes that are not gzip fail there.
        headers = {"X-CSRF-Token": token, "Content-Type": content_type, "Content-Encoding": "gzip"}
        answer = await client.post(path, data=b"csrf=x&body=not gzip", headers=headers, allow_redirects=False)
        assert answer.status == 400
        # The parser cannot go on past the broken body: the connection ends with the answer.
        assert answer.headers["Connection"] == "close"
        await answer.read()
        assert (await client.get("/healthz?live")).status == 200  # a new connection serves on
    # One line of ours, no traceback: aiohttp reading on to reuse the connection would log the
    # same error again as an unhandled exception.
    said = [(r.name, r.levelname, bool(r.exc_info)) for r in caplog.records]
    assert said == [("bot.web.security", "WARNING", False)], said
    assert "Content-Encoding" in caplog.records[0].getMessage()


async def test_a_body_that_breaks_after_its_answer_is_one_warning_line(wsettings, caplog) -> None:
    import logging

    async with web_client(wsettings) as (client, _):
        caplog.set_level(logging.WARNING)
        reader, writer = await asyncio.open_connection(client.host, client.port)
        # No CSRF token: refused before any of the body is read; aiohttp reads the rest after.
        writer.write(
            b"POST /playground/ask HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: 100\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 403")
        writer.write(b"not gzip" * 12 + b"....")
        await reader.read()  # the connection ends once aiohttp met the broken rest
        writer.close()
    said = [(r.levelname, bool(r.exc_info), r.getMessage()) for r in caplog.records]
    assert said == [
        (
            "WARNING",
            False,
            "web: a request body broke after its answer (400, message: Can not decode"
            " content-encoding: gzip): connection closed",
        )
    ], said


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"csrf=x&player=1", 400), (b"csrf=" + b"x" * (70 * 1024), 413)],
)
async def test_a_form_the_playground_cannot_check_is_refused_in_json(
    wsettings, body: bytes, status: int
) -> None:
    """A form-encoded request without the CSRF header is read for its token: its refusal is JSON,
    as every answer the page's script reads."""
    async with web_client(wsettings) as (client, _):
        await csrf_of(client)
        charset = "; charset=bogus" if status == 400 else ""
        headers = {"Content-Type": f"application/x-www-form-urlencoded{charset}"}
        answer = await client.post("/playground/ask", data=body, headers=headers)
        assert answer.status == status
        assert answer.content_type == "application/json"
        assert (await answer.json())["error"]
        wrong = await client.get("/playground/ask")  # the router's refusals too, their headers kept
        assert wrong.status == 405 and wrong.headers["Allow"] == "POST" and (await wrong.json())["error"]


# ---- who may see /metrics, whose address counts, what is logged ------------------------------------


@contextlib.asynccontextmanager
async def seen_from(settings, peer: str):  # type: ignore[no-untyped-def]
    """The web app as a client at address `peer` reaches it (the test client's own is loopback)."""
    from aiohttp import web

    from bot.app import build_app
    from bot.web import build_web
    from tests.frontend_engine import FrontendEngine

    @web.middleware
    async def elsewhere(request, handler):  # type: ignore[no-untyped-def]
        return await handler(request.clone(remote=peer))

    core = await build_app(settings, FrontendEngine())
    try:
        app = await build_web(core)
        app.middlewares.insert(0, elsewhere)
        async with TestClient(TestServer(app)) as client:
            yield client
    finally:
        await core.aclose()


async def test_metrics_are_served_to_this_machine_or_with_the_token(settings) -> None:
    plain = web_settings(settings.storage_dir)
    async with web_client(plain) as (client, _):
        assert (await client.get("/metrics")).status == 200  # Prometheus on 127.0.0.1
        # A reverse proxy on this machine connects from loopback too, but says whom for.
        proxied = await client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status == 403 and "voxdesk_notes_total" not in await proxied.text()
        # A proxy that terminates TLS but names no client (HAProxy without `option forwardfor`)
        # still says it is one.
        for header in ("X-Forwarded-Proto", "X-Forwarded-Host", "Via"):
            value = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "desk.example", "Via": "1.1 lb"}[
                header
            ]
            assert (await client.get("/metrics", headers={header: value})).status == 403, header
        # A site whose name a DNS rebinding points at 127.0.0.1 is a loopback peer too, from a
        # browser on this machine, and reads the answer as its own: it names itself, never an address.
        rebound = await client.get("/metrics", headers={"Host": "rebound.example:8080"})
        assert rebound.status == 421 and "voxdesk_" not in await rebound.text()
        # RFC 6761's *.localhost, which browsers answer on loopback without asking DNS, and an
        # IPv6 address as a client without brackets may send it: neither a name DNS chose.
        for host in ("localhost:8080", "127.0.0.1", "[::1]:8080", "prom.localhost:9090", "::1"):
            assert (await client.get("/metrics", headers={"Host": host})).status == 200, host
        # This machine's own name, which Debian's /etc/hosts points at 127.0.1.1: a Prometheus
        # here may scrape it by that name, and no site a DNS answer chose.
        own = await client.get("/metrics", headers={"Host": f"{socket.gethostname().upper()}.:8080"})
        assert own.status == 200, await own.text()
    # Every host name allowed (web.allowed_hosts = ["*"], or the site's own behind a proxy):
    # /metrics still wants this machine's.
    async with web_client(web_settings(settings.storage_dir, VOXDESK_WEB_ALLOWED_HOSTS="*")) as (client, _):
        rebound = await client.get("/metrics", headers={"Host": "rebound.example:8080"})
        assert rebound.status == 403 and "voxdesk_" not in await rebound.text()
        assert "localhost" in await rebound.text()  # the refusal says how it is asked for
    async with seen_from(plain, "203.0.113.9") as outside:
        refused = await outside.get("/metrics")
        assert refused.status == 403 and "voxdesk_" not in await refused.text()
        assert (await outside.get("/healthz")).status == 200
    token = "scrape-token-0123456789"
    tokened = web_settings(settings.storage_dir, VOXDESK_WEB_METRICS_TOKEN=token)
    assert tokened.secrets.web_metrics_token == token and token not in repr(tokened)
    async with seen_from(tokened, "203.0.113.9") as outside:
        scraped = await outside.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status == 200 and "voxdesk_notes_total" in await scraped.text()
        wrong = await outside.get("/metrics", headers={"Authorization": "Bearer not-it"})
        assert wrong.status == 403
        assert (await outside.get("/metrics")).status == 403


async def test_forwarded_for_counts_only_from_a_trusted_proxy(settings) -> None:
    def limited(**env: str):  # type: ignore[no-untyped-def]
        return web_settings(
            settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="2", VOXDESK_WEB_TRUST_FORWARDED="true", **env
        )

    async def statuses(client: TestClient) -> list[int]:
        token = await csrf_of(client, "/desk/login")
        answers = []
        for i in range(3):
            answer = await client.post(
                "/desk/login",
                data={"csrf": token, "password": "wrong"},
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
            )
            answers.append(answer.status)
        return answers

    async with web_client(limited()) as (client, _):  # the proxy on loopback: each its own client
        assert await statuses(client) == [401, 401, 401]
    # The test client (127.0.0.1) is not the proxy: its X-Forwarded-For is its own to forge.
    async with web_client(limited(VOXDESK_WEB_TRUSTED_PROXIES="10.0.0.5")) as (client, _):
        assert await statuses(client) == [401, 401, 429]


async def test_a_proxy_that_adds_its_own_forwarded_for_line_is_the_one_that_counts(settings) -> None:
    from multidict import CIMultiDict

    limited = web_settings(
        settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="2", VOXDESK_WEB_TRUST_FORWARDED="true"
    )
    async with web_client(limited) as (client, _):
        token = await csrf_of(client, "/desk/login")
        answers = []
        for i in range(4):
            # HAProxy's `option forwardfor` adds a header line after the client's own, forged one.
            headers = CIMultiDict([("X-Forwarded-For", f"198.51.100.{i + 1}")])
            headers.add("X-Forwarded-For", "203.0.113.7")
            answer = await client.post(
                "/desk/login", data={"csrf": token, "password": "wrong"}, headers=headers
            )
            answers.append(answer.status)
        assert answers == [401, 401, 429, 429]


@pytest.mark.parametrize("hop", ["203.0.113.50:{port}", "[2001:db8::5]:{port}", "2001:db8::5"])
async def test_a_proxy_that_writes_the_clients_port_too_counts_the_client_once(settings, hop) -> None:
    # Azure Application Gateway writes "address:port": a new source port is no new client.
    limited = web_settings(
        settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="2", VOXDESK_WEB_TRUST_FORWARDED="true"
    )
    async with web_client(limited) as (client, _):
        token = await csrf_of(client, "/desk/login")
        answers = []
        for i in range(3):
            forwarded = {"X-Forwarded-For": hop.format(port=40000 + i)}
            answer = await client.post(
                "/desk/login", data={"csrf": token, "password": "wrong"}, headers=forwarded
            )
            answers.append(answer.status)
        assert answers == [401, 401, 429]


async def test_behind_a_chain_of_trusted_proxies_each_client_counts_once(settings) -> None:
    # A load balancer (10.0.0.4) in front of nginx on loopback: nginx appends the balancer's
    # address after the client's. Keyed on that, every visitor would share one limit, and one of
    # them could lock the playground (or the staff login) for all.
    from multidict import CIMultiDict

    limited = web_settings(
        settings.storage_dir,
        VOXDESK_WEB_LOGIN_ATTEMPTS="2",
        VOXDESK_WEB_TRUST_FORWARDED="true",
        VOXDESK_WEB_TRUSTED_PROXIES="127.0.0.1,10.0.0.0/24",
    )

    async def statuses(client: TestClient, forwarded: list[str]) -> list[int]:
        token = await csrf_of(client, "/desk/login")
        answers = []
        for hops in forwarded:
            headers = CIMultiDict([("X-Forwarded-For", hops)])
            answer = await client.post(
                "/desk/login", data={"csrf": token, "password": "wrong"}, headers=headers
            )
            answers.append(answer.status)
        return answers

    async with web_client(limited) as (client, _):
        chained = [f"198.51.100.{i + 1}, 10.0.0.4" for i in range(3)]
        assert await statuses(client, chained) == [401, 401, 401]
    async with web_client(limited) as (client, _):
        # What the client wrote left of the first address that is no proxy of ours is its own to
        # forge: one client, however it varies it.
        forged = [f"192.0.2.{i + 1}, 10.0.0.9, 203.0.113.7, 10.0.0.4" for i in range(3)]
        assert await statuses(client, forged) == [401, 401, 429]


async def test_a_proxy_whose_forwarded_for_is_ignored_is_said_once(settings, caplog) -> None:
    # Behind a proxy with web.trust_forwarded off, every visitor counts as the proxy: one spends
    # every visitor's limits (and locks staff out), and nothing else in the log says why.
    caplog.set_level(logging.WARNING, logger="bot.web")
    forwarded = {"X-Forwarded-For": "198.51.100.7"}

    def ignored() -> list[str]:
        return [r.getMessage() for r in caplog.records if "trust_forwarded is off" in r.getMessage()]

    async with web_client(web_settings(settings.storage_dir)) as (client, _):
        assert (await client.get("/")).status == 200
        assert ignored() == []  # no proxy: nothing to say
        for _ in range(3):
            assert (await client.get("/", headers=forwarded)).status == 200
        assert len(ignored()) == 1 and "from 127.0.0.1" in ignored()[0]
    caplog.clear()
    # The header from a peer that is no proxy of ours is a client's own: nothing to say either.
    elsewhere = web_settings(settings.storage_dir, VOXDESK_WEB_TRUSTED_PROXIES="10.0.0.5")
    async with web_client(elsewhere) as (client, _):
        assert (await client.get("/", headers=forwarded)).status == 200
    trusted = web_settings(
        settings.storage_dir, VOXDESK_WEB_TRUST_FORWARDED="true", VOXDESK_WEB_ALLOWED_HOSTS="*"
    )
    async with web_client(trusted) as (client, _):
        assert (await client.get("/", headers=forwarded)).status == 200
    assert ignored() == []


async def test_a_forwarding_peer_missing_from_trusted_proxies_is_said_once(settings, caplog) -> None:
    # With web.trust_forwarded on, a proxy not in web.trusted_proxies (another container's address)
    # has its header ignored: every visitor counts as it, one client's 4 forms at once and login
    # lockout every visitor's, and nothing else in the log says why.
    caplog.set_level(logging.WARNING, logger="bot.web")

    def unlisted() -> list[str]:
        return [r.getMessage() for r in caplog.records if "not in web.trusted_proxies" in r.getMessage()]

    elsewhere = web_settings(
        settings.storage_dir,
        VOXDESK_WEB_TRUST_FORWARDED="true",
        VOXDESK_WEB_TRUSTED_PROXIES="10.0.0.5",
        VOXDESK_WEB_ALLOWED_HOSTS="*",
    )
    async with web_client(elsewhere) as (client, _):
        assert (await client.get("/")).status == 200
        assert unlisted() == []  # no header: a client of its own, nothing to say
        for i in range(3):
            forwarded = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            assert (await client.get("/", headers=forwarded)).status == 200
        assert len(unlisted()) == 1  # once a process, not once a request
        said = unlisted()[0]
        assert "from 127.0.0.1" in said and "4 forms at once" in said
        assert "add it to web.trusted_proxies" in said
    caplog.clear()
    # From a listed proxy the header is read: nothing to say.
    listed = web_settings(
        settings.storage_dir, VOXDESK_WEB_TRUST_FORWARDED="true", VOXDESK_WEB_ALLOWED_HOSTS="*"
    )
    async with web_client(listed) as (client, _):
        assert (await client.get("/", headers={"X-Forwarded-For": "198.51.100.7"})).status == 200
    assert unlisted() == []


async def test_failed_staff_logins_and_lockouts_are_logged_without_the_password(settings, caplog) -> None:
    import logging

    s = web_settings(settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="2")
    caplog.set_level(logging.INFO, logger="bot.web")
    async with web_client(s) as (client, _):
        assert [await log_in(client, "guessed-password-1") for _ in range(3)] == [401, 401, 429]
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bot.web.desk"]
    assert logged == [
        ("WARNING", "staff login failed for client 127.0.0.1"),
        ("WARNING", "staff login failed for client 127.0.0.1: locked out for 300 s after 2 failed attempts"),
    ]
    assert "guessed-password-1" not in caplog.text


async def test_a_short_plain_staff_password_stops_the_web_front_end_and_fails_check(settings) -> None:
    from bot import health
    from bot.config import ConfigError

    short = make_settings(settings.storage_dir, VOXDESK_WEB_STAFF_PASSWORD="hunter2")
    with pytest.raises(ConfigError, match="VOXDESK_WEB_STAFF_PASSWORD is shorter than 12 characters"):
        staff_password_hash(short)
    with pytest.raises(ConfigError, match="shorter than 12"):
        async with web_client(short):
            pass
    web_line = await health._one("web", "secrets", lambda: health.check_web_secrets(short))
    assert not web_line.ok and "shorter than 12 characters" in web_line.detail
    long_enough = make_settings(settings.storage_dir, VOXDESK_WEB_STAFF_PASSWORD="twelve chars")
    assert verify_password("twelve chars", staff_password_hash(long_enough))


async def test_a_new_process_serves_the_port_an_old_one_still_serves(wsettings) -> None:
    # A rolling deploy starts the new `voxdesk run` before it stops the old one: with the web
    # front end on, the new one stopped at once ("address already in use", exit 4).
    import socket

    import aiohttp

    from bot import web
    from bot.app import build_app
    from tests.frontend_engine import FrontendEngine

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    core = await build_app(wsettings.replace(web={"port": port}), FrontendEngine())  # type: ignore[arg-type]
    try:
        old = await web.start(core)
        new = await web.start(core)
        await old.cleanup()
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status == 200
        await new.cleanup()
    finally:
        await core.aclose()


async def test_two_processes_on_one_port_without_a_session_key_say_what_they_do_not_share(
    wsettings, caplog
) -> None:
    # Each made a key of its own: a visitor whose connections went to both had two daily
    # budgets, and staff logged in to one were logged out by the other, without a word.
    import socket

    from bot import web
    from bot.app import build_app
    from tests.frontend_engine import FrontendEngine

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    keyed = make_settings(
        wsettings.storage_dir,
        VOXDESK_WEB_PORT=str(port),
        VOXDESK_WEB_SESSION_KEY=FERNET_KEY,
        VOXDESK_WEB_STAFF_PASSWORD_HASH=STAFF_HASH,
    )
    said = []
    for settings in (wsettings.replace(web={"port": port}), keyed):
        core = await build_app(settings, FrontendEngine())  # type: ignore[arg-type]
        try:
            caplog.clear()
            first = await web.start(core)
            alone = caplog.text
            second = await web.start(core)
            said.append((alone, caplog.text))
            await second.cleanup()
            await first.cleanup()
        finally:
            await core.aclose()
    (alone, shared), (keyed_alone, keyed_shared) = said
    assert "VOXDESK_WEB_SESSION_KEY is not set" not in alone
    assert "VOXDESK_WEB_SESSION_KEY is not set: a staff login holds in one process only" in shared
    assert "VOXDESK_WEB_SESSION_KEY" not in keyed_alone + keyed_shared


async def test_another_install_on_the_port_is_refused_as_before(wsettings, seeded_storage, tmp_path) -> None:
    """Staging and production of one user, both on port 8080: the second shared the port without
    a word, and half the desk's logins went to the other's tickets and session key."""
    import errno
    import shutil
    import socket

    import aiohttp

    from bot import web
    from bot.app import build_app
    from tests.frontend_engine import FrontendEngine

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shutil.copytree(seeded_storage, tmp_path / "staging")
    staging = web_settings(tmp_path / "staging", VOXDESK_WEB_PORT=str(port))
    core = await build_app(wsettings.replace(web={"port": port}), FrontendEngine())  # type: ignore[arg-type]
    other = await build_app(staging, FrontendEngine())  # type: ignore[arg-type]
    try:
        serving = await web.start(core)
        with pytest.raises(OSError) as refused:
            await web.start(other)
        assert refused.value.errno == errno.EADDRINUSE
        again = await web.start(core)  # this storage's next process still shares it
        await serving.cleanup()
        async with aiohttp.ClientSession() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status == 200
        await again.cleanup()
        freed = await web.start(other)  # free again: the other install takes it
        await freed.cleanup()
    finally:
        await other.aclose()
        await core.aclose()


@pytest.mark.parametrize("refused", ["every lock", "the shared lock"])
async def test_a_storage_folder_without_locks_serves_without_sharing_the_port(
    wsettings, monkeypatch, caplog, refused
) -> None:
    # A file system without locks (ENOLCK) stopped `voxdesk web` at start with a traceback.
    import errno
    import fcntl
    import socket

    import aiohttp

    from bot import web
    from bot.app import build_app
    from tests.frontend_engine import FrontendEngine

    real_flock = fcntl.flock

    def no_locks(fd: int, operation: int) -> None:
        if refused == "every lock" or operation == fcntl.LOCK_SH:
            raise OSError(errno.ENOLCK, "No locks available")
        real_flock(fd, operation)

    monkeypatch.setattr(web.fcntl, "flock", no_locks)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    core = await build_app(wsettings.replace(web={"port": port}), FrontendEngine())  # type: ignore[arg-type]
    try:
        serving = await web.start(core)
        try:
            async with aiohttp.ClientSession() as http:
                assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status == 200
        finally:
            await serving.cleanup()
    finally:
        await core.aclose()
    assert "not shared with another voxdesk process" in caplog.text


async def test_a_storage_folder_on_smb_still_shares_the_port(wsettings, monkeypatch, caplog) -> None:
    # On SMB the next process of the same storage would warn "not shared" and be refused the port
    # the first one serves, so a rolling restart would stop at start.
    import socket

    import aiohttp

    from bot import web
    from bot.app import build_app
    from tests.conftest import smb_locks
    from tests.frontend_engine import FrontendEngine

    smb_locks(monkeypatch)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    core = await build_app(wsettings.replace(web={"port": port}), FrontendEngine())  # type: ignore[arg-type]
    try:
        first = await web.start(core)
        try:
            second = await web.start(core)
            await first.cleanup()
            async with aiohttp.ClientSession() as http:
                assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status == 200
            await second.cleanup()
        finally:
            await first.cleanup()
    finally:
        await core.aclose()
    assert "not shared" not in caplog.text


async def test_a_grievance_spool_that_cannot_be_read_is_not_ready_and_said_once(
    wsettings, monkeypatch, caplog
) -> None:
    """A spool the bot cannot read may hold grievances: count_unfiled said 0, /healthz ready, and
    every probe and scrape logged the same warning again."""
    from bot.app import storage_paths
    from bot.tools.grievance_spool import GrievanceSpool

    monkeypatch.setattr(ops, "PROBE_EVERY_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="bot.tools.grievance_store")
    async with web_client(wsettings) as (client, _core):
        spool = GrievanceSpool.beside(storage_paths(wsettings).grievances).path
        spool.mkdir()  # unreadable as a file, as a failing disk's sector would be
        pages = [await client.get("/healthz") for _ in range(3)]
        await client.get("/metrics")
        bodies = [await p.json() for p in pages]
        spool.rmdir()
        back = await client.get("/healthz")
    assert [p.status for p in pages] == [503] * 3 and back.status == 200
    assert bodies[0]["checks"]["grievances"] == {"ok": False, "error": "spool_unreadable"}
    store = [r for r in caplog.records if r.name == "bot.tools.grievance_store"]
    said = [(r.levelname, r.getMessage()) for r in store if "spool" in r.getMessage()]
    assert [level for level, _ in said] == ["ERROR", "INFO"], said


def test_a_shortened_line_ends_at_a_word_only_in_its_second_half() -> None:
    # A word's end near the start would show a long description as one word and "…": past half
    # way the cut is at a word's end, else where a character starts.
    from bot.web import shortened

    assert shortened("Refund " + "x" * 40, 20) == "Refund " + "x" * 12 + "…"
    assert shortened("my gems vanished after the update", 20) == "my gems vanished…"


# ---- pages as a screen reader, a keyboard or a phone meets them ---------------------------------


class Untranslated(HTMLParser):
    """Each ticket key in a page's text, and whether a browser's translation leaves it alone
    (translate="no" on it or around it). The page's title, and words a player or staff member
    wrote (dir="auto"), are not the desk's to mark."""

    KEY = re.compile(r"\b(?:GRV|STUDIO)-\d+\b")

    def __init__(self, html: str) -> None:
        super().__init__()
        self.keys: list[tuple[str, bool]] = []
        self._open: list[tuple[str, bool, bool]] = []  # tag, translate="no", someone's own words
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        given = dict(attrs)
        inherited_no = bool(self._open) and self._open[-1][1]
        inherited_words = bool(self._open) and self._open[-1][2]
        no = given.get("translate") == "no" or (inherited_no and given.get("translate") != "yes")
        self._open.append((tag, no, inherited_words or given.get("dir") == "auto" or tag == "title"))

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1][2]:
            return
        for key in self.KEY.findall(data):
            self.keys.append((key, bool(self._open) and self._open[-1][1]))


async def test_ticket_keys_are_left_alone_by_a_browsers_translation(wsettings) -> None:
    # Chrome's translation turns "GRV-12" into "ГРВ-12" or "GRV-12 年": staff then search,
    # quote and tell players a key that names no ticket.
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        pages = {path: await (await client.get(path)).text() for path in ("/desk", "/desk/ticket/GRV-11")}
        await core.grievances.local_store.mark_pushed("GRV-10", "STUDIO-7")
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        for path in ("/desk", "/desk/ticket/GRV-10", "/desk/ticket/GRV-11"):
            pages[f"{path} (Jira)"] = await (await client.get(path)).text()
        token = await csrf_of(client, "/desk")
        for action, data in (("status", {"status": "resolved"}), ("note", {"body": "hi"})):
            refused = await client.post(f"/desk/ticket/GRV-10/{action}", data={"csrf": token, **data})
            assert refused.status == 403
            pages[f"{action} refused"] = await refused.text()
    for path, html in pages.items():
        keys = Untranslated(html).keys
        assert keys, path
        assert [key for key, left_alone in keys if not left_alone] == [], path


async def test_a_wrong_password_is_said_on_the_field_it_is_about(wsettings) -> None:
    # A screen reader lands on the focused field after the page reloads: the error must be its.
    async with web_client(wsettings) as (client, _):
        fresh = Page(await (await client.get("/desk/login")).text()).one("input", name="password")
        assert "aria-invalid" not in fresh and "aria-describedby" not in fresh
        token = await csrf_of(client, "/desk/login")
        refused = await client.post("/desk/login", data={"csrf": token, "password": "wrong"})
        assert refused.status == 401
        page = Page(await refused.text())
        field = page.one("input", name="password")
        assert field["aria-invalid"] == "true"
        assert page.text_of(field["aria-describedby"]) == "That password is not right."


async def test_every_table_says_what_it_lists_and_what_each_column_is(wsettings) -> None:
    # A screen reader names a table by its caption and reads each cell with its column's header.
    async with web_client(wsettings) as (client, _):
        pages = {"/": Page(await (await client.get("/")).text())}
        assert await log_in(client) == 303
        for path in ("/desk", "/desk/charts", "/desk/check"):
            got = await client.get(path)
            assert got.status == 200, path
            pages[path] = Page(await got.text())
    for path, page in pages.items():
        tables = page.all("table")
        assert tables, path
        assert len(page.all("caption")) == len(tables), path
        assert all(c["<text>"].strip() for c in page.all("caption")), path
        assert all(th["<text>"].strip() for th in page.all("th")), path


async def test_a_login_refused_for_now_is_the_login_page_saying_when_to_try_again(settings) -> None:
    # Not a bare line of text: staff keep the page, its links and the field to try again from.
    s = web_settings(settings.storage_dir, VOXDESK_WEB_LOGIN_ATTEMPTS="1", VOXDESK_WEB_LOGIN_SECONDS="90")
    async with web_client(s) as (client, _):
        assert await log_in(client, "wrong") == 401
        token = await csrf_of(client, "/desk/login")
        refused = await client.post("/desk/login", data={"csrf": token, "password": STAFF_PASSWORD})
        assert refused.status == 429 and refused.headers["Retry-After"] == "90"
        assert refused.content_type == "text/html"
        page = Page(await refused.text())
        assert page.one("title")["<text>"] == "Staff login · voxdesk"
        field = page.one("input", name="password")
        assert page.text_of(field["aria-describedby"]) == "Too many login attempts: try again in 90 seconds."


async def test_the_header_says_which_of_its_pages_is_open(wsettings) -> None:
    async with web_client(wsettings) as (client, _):
        assert await log_in(client) == 303
        for path in ("/", "/desk", "/desk/charts", "/desk/check"):
            page = Page(await (await client.get(path)).text())
            current = [a["href"] for a in page.all("a") if a.get("aria-current") == "page"]
            assert current == [path], path
        page = Page(await (await client.get("/desk/ticket/GRV-10")).text())
        assert not [a for a in page.all("a") if "aria-current" in a]  # a ticket: none of the header's


async def test_notes_per_hour_are_there_as_text_not_only_as_bars(wsettings) -> None:
    # A bar's figure is in its SVG <title>: a tooltip for a mouse, nothing for a keyboard or a
    # touch screen, and a screen reader hears only the chart's name. The days' table holds the
    # daily charts' figures; the hours need one too.
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        await ask(client, await csrf_of(client))
        busy = [(hour, n) for hour, n in (await core.agent.budget.by_hour(24)).items() if n]
        html = await (await client.get("/desk/charts")).text()
    page = Page(html)
    assert [c["<text>"] for c in page.all("caption")] == [
        "Notes per hour (last 24 hours, UTC)",
        "Usage per day (UTC)",
    ]
    assert busy and all(f"<td>{hour[:10]} {hour[11:]}:00</td><td>{n}</td>" in html for hour, n in busy)
    # Only the hours with notes: the rest are bars of nothing.
    (table,) = [t for t in html.split("<table")[1:] if "hours-caption" in t]
    assert table.count("<tr><td>") == len(busy)


async def test_the_desks_no_match_row_spans_exactly_the_columns(wsettings) -> None:
    # A cell spanning columns the table lacks puts a screen reader's table reading out of step.
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        for jira in (False, True):
            if jira:
                core.settings = core.settings.replace(
                    tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
                )
            page = Page(await (await client.get("/desk?q=no+such+words+anywhere")).text())
            empty = page.one("td", **{"class": "empty"})
            assert empty["<text>"] == "No grievances match."
            assert int(empty["colspan"]) == len(page.all("th")), jira


async def test_a_note_refused_as_its_ticket_went_to_jira_is_given_back(wsettings) -> None:
    # Written while the grievance was the desk's, sent once it is Jira's: the words are not lost.
    async with web_client(wsettings) as (client, core):
        await log_in(client)
        token = await csrf_of(client, "/desk/ticket/GRV-10")
        await core.grievances.local_store.mark_pushed("GRV-10", "STUDIO-7")
        core.settings = core.settings.replace(
            tools={"grievances": "jira"}, jira={"url": "https://studio.atlassian.net"}
        )
        note = "Refunded <20> dollars;\nsee the wallet log"
        refused = await client.post("/desk/ticket/GRV-10/note", data={"csrf": token, "body": note})
        assert refused.status == 403 and refused.content_type == "text/html"
        page = Page(await refused.text())
        assert page.text_of("refused") == "GRV-10 is worked in Jira, not on the desk: add the note there."
        assert page.one("textarea", id="note-body")["<text>"] == note  # escaped, as sent
        assert page.one("a", href="https://studio.atlassian.net/browse/STUDIO-7")
        assert (await core.grievances.local_store.staff_notes("GRV-10")) == []
        # One still waiting for Jira has no issue to add it to yet.
        store = core.grievances.local_store
        pending = (await store.register(NOVA, "wallet", "top-up lost", push_state="pending")).key
        refused = await client.post(f"/desk/ticket/{pending}/note", data={"csrf": token, "body": note})
        assert refused.status == 403
        assert Page(await refused.text()).text_of("refused") == (
            f"{pending} is waiting to reach Jira, and is worked there once it does: add the note there then."
        )


async def test_the_playground_looks_its_players_up_together_not_one_after_another(settings) -> None:
    from types import SimpleNamespace

    from bot.tools.base import PlayerSummary
    from bot.web.playground import allowed_players

    # Named at start from the studio's database: with it down, each lookup waits out the pool's
    # deadline (twice the query timeout), and one after another they held the web front end's
    # start that many times over.
    ids = [BLAZE, NOVA, QUILL]
    studio = web_settings(
        settings.storage_dir,
        VOXDESK_TOOLS_STATS="odbc",
        VOXDESK_SQL_CONNECTION_STRING="DSN=studio",
        VOXDESK_WEB_PLAYGROUND_PLAYERS=",".join(ids),
    )
    asked: list[str] = []
    everyone_asked = asyncio.Event()

    class SlowStats:
        async def player_summary(self, user_id: str) -> PlayerSummary | None:
            asked.append(user_id)
            if len(asked) == len(ids):
                everyone_asked.set()
            await everyone_asked.wait()
            if user_id == NOVA:
                raise RuntimeError("down")
            return PlayerSummary(
                player_name=f"name of {user_id}", total_points=0, rank=None, players_ranked=None
            )

    core = SimpleNamespace(settings=studio, stats=SlowStats())
    players = await asyncio.wait_for(allowed_players(core), 30)  # type: ignore[arg-type]  # a guard
    assert players == {BLAZE: f"name of {BLAZE}", NOVA: f"player {NOVA}", QUILL: f"name of {QUILL}"}
    assert list(players) == ids


STATIC_FILE = "style.css"


async def test_every_route_answers_head_options_and_a_long_query_without_a_server_error(
    wsettings, caplog
) -> None:
    # Walked from the router, so a route added later is asked too; signed in and out, since the
    # desk's pages answer the two apart. A query far longer than any form sends is read as any.
    async with web_client(wsettings) as (client, _):
        paths = set()
        for resource in client.app.router.resources():
            info = resource.get_info()
            if "prefix" in info:  # the static files' folder
                paths.add(info["prefix"] + "/" + STATIC_FILE)
            paths.add(info.get("path") or info.get("formatter", "").replace("{key}", "GRV-10"))
        paths = {p.replace("{token}", "unknown") for p in paths if p}
        assert "/static/style.css" in paths and "/desk/ticket/GRV-10/note" in paths
        query = "?" + "&".join(f"q{i}={'x' * 50}" for i in range(100))
        caplog.set_level(logging.WARNING)
        for signed_in in (False, True):
            if signed_in:
                assert await log_in(client) == 303
            for path in sorted(paths):
                for method, url in (("HEAD", path), ("OPTIONS", path), ("GET", path + query)):
                    answer = await client.request(method, url, allow_redirects=False)
                    assert answer.status < 500, (method, url, answer.status)
                    assert answer.status != 405 or answer.headers.get("Allow"), (method, url)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(("trusted", "held"), [([], 8), (["127.0.0.1"], 40)], ids=["client", "proxy"])
async def test_one_address_holds_at_most_its_share_of_connections(wsettings, trusted, held) -> None:
    """Each idle connection is held HEAD_SECONDS, each an open file: one client opening them by
    the hundred would run the desk out of descriptors. A proxy of ours (every visitor's connections
    come from its address) is not held to one client's share."""
    import dataclasses

    from bot import web
    from bot.app import build_app
    from tests.frontend_engine import FrontendEngine

    w = dataclasses.replace(wsettings.web, connections_per_address=8, trusted_proxies=trusted)
    settings = dataclasses.replace(wsettings, web=w)
    core = await build_app(settings, FrontendEngine())  # type: ignore[arg-type]
    runner = await web.start(core, port=0)
    opened = []
    try:
        for _ in range(40):
            opened.append(await asyncio.open_connection("127.0.0.1", web.bound_port(runner)))
        answered = 0
        for reader, writer in opened:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            # Not a timing assertion: a guard so a connection never answered or closed fails the test.
            try:
                said = await asyncio.wait_for(reader.read(), 15)
            except ConnectionResetError:  # refused at once: closed unread
                said = b""
            answered += said.startswith(b"HTTP/1.1 ")
        assert answered == held
    finally:
        for _, writer in opened:
            writer.close()
        await runner.cleanup()
        await core.aclose()


@pytest.mark.parametrize(
    ("peers", "held"),
    [
        ([f"2001:db8:1:2::{i + 1:x}" for i in range(12)], 8),
        ([f"2001:db8:1:{i + 1:x}::1" for i in range(12)], 12),
        ([f"::ffff:203.0.113.{i + 1}" for i in range(12)], 12),
        (["::ffff:203.0.113.7"] * 6 + ["203.0.113.7"] * 6, 8),
    ],
    ids=["one-v6-64", "v6-64s", "mapped-v4s", "mapped-is-v4"],
)
def test_the_connection_cap_counts_an_ipv6_client_by_its_64(wsettings, peers, held) -> None:
    """An IPv6 subscriber holds a whole /64 and may open each connection from another address in
    it, as the rate limits know: counted by exact address, one client would have no cap at all.
    Loopback offers one IPv6 address, so the peers here are transports' names alone; the cap's own
    real-socket test is the one above."""
    import dataclasses

    from bot import web

    class Transport:
        def __init__(self, peer: str) -> None:
            self.peer, self.aborted = peer, False

        def get_extra_info(self, name: str) -> object:
            return (self.peer, 443, 0, 0) if name == "peername" else None

        def abort(self) -> None:
            self.aborted = True

    class Server:
        def connection_made(self, handler: object, transport: object) -> None:
            pass

        def connection_lost(self, handler: object, exc: BaseException | None = None) -> None:
            pass

    server = Server()
    w = dataclasses.replace(wsettings.web, connections_per_address=8, trusted_proxies=[])
    web._cap_connections(server, w)  # type: ignore[arg-type]
    transports = [Transport(peer) for peer in peers]
    for handler, transport in enumerate(transports):
        server.connection_made(handler, transport)
    assert sum(not t.aborted for t in transports) == held
    for handler in range(len(transports)):
        server.connection_lost(handler)
    late = Transport(peers[0])
    server.connection_made("late", late)
    assert not late.aborted  # the ones that closed are no longer counted
