"""The web front end beside the Discord bot: `voxdesk run` serves it when web.enabled, its
/healthz follows the gateway, and /metrics counts what the voice cog did."""

from __future__ import annotations

import logging
import re
import socket

import aiohttp
import pytest

from bot import metrics
from tests.discord_harness import nova, running_bot, voice_note
from tests.fakes.discord_server import FakeDiscord, serving


@pytest.fixture
async def fake():
    async with serving() as running:
        yield running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} ([0-9.e+-]+)$", metrics.render().decode(), re.M)
    return float(found.group(1)) if found else 0.0


async def test_run_serves_the_web_front_end_with_discord_in_its_health(settings, fake: FakeDiscord):
    port = free_port()
    s = settings.replace(web={"enabled": True, "port": port})
    answered = ("voxdesk_notes_total", 'frontend="discord",outcome="answered",reason="answer"')
    too_big = ("voxdesk_notes_total", 'frontend="discord",outcome="refused",reason="too_big"')
    sends = ("voxdesk_stage_seconds_count", 'stage="send"')
    downloads = ("voxdesk_stage_seconds_count", 'stage="download"')
    whole = ("voxdesk_note_seconds_count", 'frontend="discord"')  # arrival to answer sent
    before = {k: sample(*k) for k in (answered, too_big, sends, downloads, whole)}
    async with running_bot(s, fake) as h, aiohttp.ClientSession() as http:
        health = await http.get(f"http://127.0.0.1:{port}/healthz")
        body = await health.json()
        assert health.status == 200 and body["checks"]["discord"] == {"ok": True}
        note = await fake.send_note(nova, voice_note())
        await fake.wait_for(lambda _: len(fake.replies_to(note["id"])) >= 2)
        big = await fake.send_note(nova, voice_note(), declared_size=50_000_000)
        await fake.wait_for(lambda _: fake.replies_to(big["id"]))
        scraped = await (await http.get(f"http://127.0.0.1:{port}/metrics")).text()
        assert "voxdesk_discord_connected 1.0" in scraped
        h.stop.set()
    after = {k: sample(*k) for k in before}
    assert after[answered] == before[answered] + 1
    assert after[too_big] == before[too_big] + 1
    assert after[sends] == before[sends] + 1 and after[downloads] == before[downloads] + 1
    assert after[whole] == before[whole] + 1  # the answered note alone: a refusal is no answer
    with pytest.raises(aiohttp.ClientConnectionError):  # stopped with the bot
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")


async def test_playground_notes_never_take_the_turns_discord_players_need(settings, fake: FakeDiscord):
    """Anonymous playground notes have turns of their own (web.playground_turns, below the agent's):
    one more is refused at once, not queued, and a Discord player's note is answered meanwhile."""
    import asyncio

    from bot.web.playground import DEMO_PLAYERS
    from tests.frontend_engine import FrontendEngine

    web_in = 0
    two_in, three_in, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    class HoldingWeb(FrontendEngine):
        async def complete(self, turn):  # type: ignore[no-untyped-def]
            nonlocal web_in
            if turn.context.platform == "web" and not turn.rounds:
                web_in += 1
                (two_in if web_in == 2 else three_in if web_in == 3 else asyncio.Event()).set()
                await release.wait()
            return await super().complete(turn)

    port = free_port()
    s = settings.replace(
        web={"enabled": True, "port": port, "playground_turns": 2}, agent={"max_concurrent_turns": 3}
    )
    base = f"http://127.0.0.1:{port}"

    async def playground_note(player: str) -> tuple[int, str, dict]:
        # A visitor of its own; unsafe: the jar keeps cookies of an address such as 127.0.0.1.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            page = await (await browser.get(base + "/")).text()
            token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            form = aiohttp.FormData()
            form.add_field("player", player)
            form.add_field("audio", voice_note(), filename="n.ogg", content_type="audio/ogg")
            answer = await browser.post(base + "/playground/ask", data=form, headers={"X-CSRF-Token": token})
            return answer.status, answer.headers.get("Retry-After", ""), await answer.json()

    async with running_bot(s, fake, engine=HoldingWeb()) as h:
        held = [asyncio.create_task(playground_note(p)) for p in DEMO_PLAYERS[:2]]
        try:
            await asyncio.wait_for(two_in.wait(), 30)  # a guard, not a timing assertion
            third = asyncio.create_task(playground_note(DEMO_PLAYERS[2]))
            entered = asyncio.create_task(three_in.wait())
            await asyncio.wait({third, entered}, return_when=asyncio.FIRST_COMPLETED)
            entered.cancel()
            assert third.done(), "a third playground note took one of the agent's turns"
            status, retry_after, body = third.result()
            assert status == 429 and int(retry_after) >= 1
            assert "busy answering other visitors' notes" in body["error"]
            note = await fake.send_note(nova, voice_note())  # answered while both are held
            await fake.wait_for(lambda _: len(fake.replies_to(note["id"])) >= 2)
        finally:
            release.set()
        assert [status for status, _, _ in await asyncio.gather(*held)] == [200, 200]
        h.stop.set()


async def _health(http: aiohttp.ClientSession, port: int) -> tuple[int, dict]:
    answer = await http.get(f"http://127.0.0.1:{port}/healthz")
    return answer.status, await answer.json()


async def _until(check, within: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Until `check()` (a coroutine) is true; a guard against a broken test, not a timing bound."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{check.__name__}: not so after {within:g} s"
        await asyncio.sleep(0.05)


async def test_a_gateway_away_past_the_grace_makes_healthz_not_ready_until_it_is_back(
    settings, fake: FakeDiscord, caplog
):
    """discord.py keeps is_ready() true through any outage: /healthz must follow the gateway."""
    caplog.set_level(logging.INFO, "cogs.bot")
    port = free_port()
    s = settings.replace(web={"enabled": True, "port": port})
    async with running_bot(s, fake, gateway_grace_seconds=0.2) as h, aiohttp.ClientSession() as http:
        assert (await _health(http, port))[0] == 200
        fake.gateway_outage()
        await fake.drop_connection()
        await fake.wait_for(lambda _: fake.hanging_connections >= 1)

        async def down() -> bool:
            return (await _health(http, port))[0] == 503

        await _until(down)
        assert (await _health(http, port))[1]["checks"]["discord"] == {"ok": False}
        scraped = await (await http.get(f"http://127.0.0.1:{port}/metrics")).text()
        assert "voxdesk_discord_connected 0.0" in scraped
        fake.end_gateway_outage()

        async def up() -> bool:
            return (await _health(http, port))[0] == 200

        await _until(up)
        h.stop.set()
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "cogs.bot"]
    away = [m for lvl, m in said if lvl == "WARNING" and "Discord gateway" in m]
    back = [m for lvl, m in said if lvl == "INFO" and "Discord gateway" in m]
    assert len(away) == 1 and len(back) == 1, said


async def test_a_short_reconnect_keeps_healthz_ready_while_the_metric_says_disconnected(
    settings, fake: FakeDiscord
):
    """No flapping: a reconnect within the grace is no outage to a load balancer, but the gauge
    tells the truth at once."""
    port = free_port()
    s = settings.replace(web={"enabled": True, "port": port})
    async with running_bot(s, fake) as h, aiohttp.ClientSession() as http:
        fake.gateway_outage()
        await fake.drop_connection()
        await fake.wait_for(lambda _: fake.hanging_connections >= 1)
        status, body = await _health(http, port)
        assert status == 200 and body["checks"]["discord"] == {"ok": True}
        scraped = await (await http.get(f"http://127.0.0.1:{port}/metrics")).text()
        assert "voxdesk_discord_connected 0.0" in scraped
        fake.end_gateway_outage()

        async def back() -> bool:
            page = await (await http.get(f"http://127.0.0.1:{port}/metrics")).text()
            return "voxdesk_discord_connected 1.0" in page

        await _until(back)
        h.stop.set()


async def test_every_turn_slot_held_makes_healthz_not_ready_and_the_queue_shows_in_metrics(
    settings, fake: FakeDiscord
):
    """The engine says ready, Discord is connected, but no note is answered: every slot is held by
    a turn that does not end. /healthz says so, and /metrics shows the notes waiting behind."""
    import asyncio

    from tests.discord_harness import blaze, quill
    from tests.frontend_engine import FrontendEngine

    inside, release = asyncio.Semaphore(0), asyncio.Event()

    class Hanging(FrontendEngine):
        async def complete(self, turn):  # type: ignore[no-untyped-def]
            if not turn.rounds:
                inside.release()
                await release.wait()
            return await super().complete(turn)

    port = free_port()
    s = settings.replace(
        web={"enabled": True, "port": port, "playground_turns": 1},
        agent={"max_concurrent_turns": 2, "stuck_turn_seconds": 0.2},
    )
    async with running_bot(s, fake, engine=Hanging()) as h, aiohttp.ClientSession() as http:
        notes = [await fake.send_note(user, voice_note()) for user in (nova, blaze)]
        for _ in notes:
            await asyncio.wait_for(inside.acquire(), 30)
        third = await fake.send_note(quill, voice_note())

        async def stuck() -> bool:
            status, body = await _health(http, port)
            return status == 503 and body["checks"]["turns"] == {"ok": False}

        await _until(stuck)

        async def queued() -> bool:
            nonlocal page
            page = await (await http.get(f"http://127.0.0.1:{port}/metrics")).text()
            return "voxdesk_notes_waiting 1.0" in page

        page = ""
        await _until(queued)  # the third note downloaded and waiting for a slot
        assert "voxdesk_turns_in_progress 2.0" in page and "voxdesk_turn_slots 2.0" in page
        waited = re.search(r"^voxdesk_notes_oldest_waiting_seconds ([0-9.e+-]+)$", page, re.M)
        assert waited and float(waited.group(1)) > 0
        release.set()
        await fake.wait_for(lambda _: all(len(fake.replies_to(n["id"])) >= 2 for n in [*notes, third]))
        status, body = await _health(http, port)
        assert status == 200 and body["checks"]["turns"] == {"ok": True}
        page = await (await http.get(f"http://127.0.0.1:{port}/metrics")).text()
        assert "voxdesk_notes_waiting 0.0" in page and "voxdesk_turns_in_progress 0.0" in page
        h.stop.set()


def test_the_oldest_waiting_note_is_timed_from_the_first_to_wait_not_the_latest(monkeypatch) -> None:
    # A queue of a note waiting 10 minutes and one arrived just now is a 10-minute wait: timed from
    # the latest, a stuck queue that keeps filling would look like one moving.
    import types

    from bot import metrics

    now = [1000.0]
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    waiting = metrics.Waiting()
    waiting.enter("first")
    now[0] += 600
    waiting.enter("latest")
    assert waiting.oldest_seconds() == 600
    waiting.leave("first")
    assert waiting.oldest_seconds() == 0


async def test_a_grievance_the_database_refuses_makes_healthz_not_ready_and_is_counted(
    settings, fake: FakeDiscord
):
    """The database reads (its probe answers) but takes no grievance: each one filed waits in the
    spool or in memory, its only copy, and /healthz must not call that ready. /metrics counts it
    kept, then filed late, and the ticket news DM that tells its player the key."""
    import sqlite3

    from bot.app import storage_paths
    from bot.sentences import KEPT_FOR_LATER
    from tests.discord_harness import blaze
    from tests.test_discord_commands import ask, sub

    counted = {r: ("voxdesk_grievances_total", f'result="{r}"') for r in ("filed", "kept", "filed_late")} | {
        "news": ("voxdesk_ticket_news_total", 'outcome="sent"')
    }
    before = {k: sample(*v) for k, v in counted.items()}
    port = free_port()
    s = settings.replace(web={"enabled": True, "port": port}, news={"poll_seconds": 0.2})
    async with running_bot(s, fake) as h, aiohttp.ClientSession() as http:
        assert (await _health(http, port))[0] == 200
        # The bot's own writes (the refiler trying the kept grievance again) hold the database's
        # lock for moments that a loaded machine stretches past sqlite3's 5 s default wait.
        with sqlite3.connect(storage_paths(s).grievances, timeout=60) as conn:  # reads yes, writes no
            conn.execute(
                "CREATE TRIGGER refused BEFORE INSERT ON grievances"
                " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
            )
        words = "Bought 500 gems, the wallet never showed them."
        filed = await ask(fake, blaze, "grievance", sub("file", category="wallet", description=words))
        assert filed == KEPT_FOR_LATER

        async def refused() -> bool:
            status, body = await _health(http, port)
            return status == 503 and body["checks"]["grievances"] == {"ok": False, "error": "unfiled"}

        await _until(refused)
        with sqlite3.connect(storage_paths(s).grievances, timeout=60) as conn:
            conn.execute("DROP TRIGGER refused")
        other = "My skin from the event never arrived."
        filed = await ask(fake, blaze, "grievance", sub("file", category="other", description=other))
        assert filed.startswith("Filed ticket")  # the kept one filed first

        async def ready() -> bool:
            return (await _health(http, port))[0] == 200

        await _until(ready)
        await _until(_more(counted["news"], before["news"]))  # the kept one's key, by DM
        h.stop.set()
    after = {k: sample(*v) for k, v in counted.items()}
    assert {k: after[k] - before[k] for k in counted} == {"filed": 1, "kept": 1, "filed_late": 1, "news": 1}


def _more(metric: tuple[str, str], than: float):  # type: ignore[no-untyped-def]
    async def grown() -> bool:
        return sample(*metric) > than

    return grown


async def test_a_stop_as_the_gateway_comes_back_from_an_outage_is_not_lost(settings, fake: FakeDiscord):
    """A stop meeting discord.py's reconnect as its handshake ends: Python 3.11's wait_for swallows
    that cancel, and the bot read the new session on until the supervisor killed it."""
    import asyncio

    port = free_port()
    s = settings.replace(web={"enabled": True, "port": port})
    async with running_bot(s, fake) as h, aiohttp.ClientSession() as http:
        fake.gateway_outage()
        await fake.drop_connection()
        await fake.wait_for(lambda _: fake.hanging_connections >= 1)
        assert (await _health(http, port))[0] == 200
        fake.end_gateway_outage()
        h.stop.set()
        done, _ = await asyncio.wait({h.task}, timeout=30)  # a guard: a lost stop never ends
        assert done, "the bot did not stop"


async def test_a_gateway_outage_discord_py_retries_is_one_warning_and_its_end_not_errors(
    settings, fake: FakeDiscord, caplog
):
    """discord.py logged each reconnect attempt of an outage at ERROR with a traceback, for what
    it handles itself; the outage is one WARNING naming why, and its end one INFO line."""
    caplog.set_level(logging.INFO)
    async with running_bot(settings, fake, gateway_grace_seconds=0.2) as h:
        fake.refuse_gateway()
        await fake.drop_connection()
        await fake.wait_for(lambda _: fake.gateway_refusals >= 1)

        async def said() -> bool:
            return "Discord gateway disconnected" in caplog.text

        await _until(said)
        fake.refuse_gateway(False)

        async def back() -> bool:
            return h.bot.gateway_connected()

        await _until(back)
        h.stop.set()
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    gateway = [(r.levelname, r.getMessage()) for r in caplog.records if "Discord gateway" in r.getMessage()]
    assert [level for level, _ in gateway] == ["WARNING", "INFO"], gateway
    assert "(last attempt: WSServerHandshakeError: 503" in gateway[0][1]


async def test_why_the_gateway_refused_the_first_connection_is_logged(settings, fake: FakeDiscord, caplog):
    """discord.py's reconnect line after a failed connect is kept at DEBUG during an outage of a
    connected bot; before its first connection no outage line follows, and discord.py 2.7 then
    ends the connect task on its own AttributeError: that line is the only one saying why."""
    import asyncio
    import contextlib

    from cogs.runner import serve
    from tests.discord_harness import TOKEN, discord_settings
    from tests.frontend_engine import FrontendEngine

    caplog.set_level(logging.INFO)
    fake.refuse_gateway()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(discord_settings(settings, fake), TOKEN, stop=stop, engine=FrontendEngine())
    )
    try:

        async def said_or_ended() -> bool:
            return "WSServerHandshakeError: 503" in caplog.text or task.done()

        await _until(said_or_ended, within=30)
        assert "WSServerHandshakeError: 503" in caplog.text
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)


async def test_a_web_port_taken_at_start_closes_the_logged_in_client(settings, fake: FakeDiscord):
    """`run` logs in to Discord, then starts the web front end: a port another program holds
    stopped the start, and the client logged in was left open (its HTTP session unclosed)."""
    import asyncio
    import errno

    from cogs.runner import serve
    from tests.discord_harness import TOKEN, discord_settings
    from tests.frontend_engine import FrontendEngine

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = discord_settings(settings.replace(web={"enabled": True, "port": port}), fake)
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        with pytest.raises(OSError) as refused:
            await serve(s, TOKEN, stop=asyncio.Event(), engine=FrontendEngine(), started=started)
    assert refused.value.errno == errno.EADDRINUSE
    assert started.result().is_closed()
