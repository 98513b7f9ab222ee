"""The web front end beside the Discord bot: `voxdesk run` serves it when web.enabled, its
/healthz follows the gateway, and /metrics counts what the voice cog did."""

from __future__ import annotations

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
    before = {k: sample(*k) for k in (answered, too_big, sends, downloads)}
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
    with pytest.raises(aiohttp.ClientConnectionError):  # stopped with the bot
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")
