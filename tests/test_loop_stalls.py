"""A raid of voice notes leaves the bot answering everyone else: its notes' audio work runs off the
event loop, and off the threads the rest of the bot waits on. bench/stalls.py measures it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from bot import audio, paths
from bot.tools.base import ToolContext

from .conftest import NOVA
from .web_helpers import web_client

NOTE = (paths.SAMPLES / "2-how-many-points.ogg").read_bytes()


async def test_the_web_serves_its_files_while_a_note_is_decoded(settings, monkeypatch) -> None:
    # asyncio's default threads as a raid leaves them: each busy with a note. Here there is one.
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    decoding, go_on = asyncio.Event(), threading.Event()
    decode = audio.decode

    def held_decode(*args, **kwargs):  # type: ignore[no-untyped-def]
        loop.call_soon_threadsafe(decoding.set)
        go_on.wait(30)
        return decode(*args, **kwargs)

    monkeypatch.setattr(audio, "decode", held_decode)
    async with web_client(settings) as (client, core):
        note = asyncio.create_task(core.agent.respond(ToolContext(user_id=NOVA), NOTE))
        try:
            await asyncio.wait_for(decoding.wait(), 30)
            # aiohttp opens and reads a static file in the default threads.
            async with asyncio.timeout(10):
                page = await client.get("/static/style.css")
                assert page.status == 200 and "body" in await page.text()
        finally:
            go_on.set()
        reply = await note
    assert reply.audio is not None
