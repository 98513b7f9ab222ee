"""A raid of voice notes leaves the bot answering everyone else: its notes' audio work runs off the
event loop, and off the threads the rest of the bot waits on. bench/stalls.py measures it."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from bot import audio, paths
from bot.app import running_app
from bot.tools.base import ToolContext
from tests.fakes import openai_server

from .conftest import NOVA
from .test_openai import openai_settings
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


async def test_the_openai_engine_turns_audio_to_and_from_base64_off_the_loop(settings, monkeypatch) -> None:
    # Each is a long note's or reply's megabytes: ~10 ms for 2 minutes of speech, every player's
    # note and the heartbeat waiting. Recorded: the threads every sizeable one ran on.
    threads: list[tuple[str, int]] = []
    for name in ("b64encode", "b64decode"):
        real = getattr(base64, name)

        def spy(data, *args, real=real, name=name, **kwargs):  # type: ignore[no-untyped-def]
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if len(data) > 50_000 and not caller.startswith("tests."):  # the fake OpenAI's own
                threads.append((name, threading.get_ident()))
            return real(data, *args, **kwargs)

        monkeypatch.setattr(base64, name, spy)
    async with openai_server.serving() as fake:
        fake.script = [openai_server.answer("Here is your answer, " + "and more of it " * 20)]
        wav = openai_settings(settings.storage_dir, fake, VOXDESK_OPENAI_REPLY_FORMAT="wav")
        async with running_app(wav) as app:
            reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.engine == "openai" and reply.audio is not None
    assert {name for name, _ in threads} == {"b64encode", "b64decode"}
    assert threading.get_ident() not in {thread for _, thread in threads}


async def test_a_complaint_empties_the_grievance_spool_off_the_loop(tmp_path, monkeypatch) -> None:
    # A complaint files what the spool kept first, holding the writers' lock: the spool's fsync on
    # the loop would hold every player's note for as long as the disk takes.
    import json

    from bot.tools.grievance_spool import GrievanceSpool
    from bot.tools.grievance_store import LocalGrievanceStore

    db, spool = tmp_path / "grievances.db", tmp_path / "grievances.db.spool.jsonl"
    finished_on: list[int] = []
    finish = GrievanceSpool.finish

    def spy(self, fd):  # type: ignore[no-untyped-def]
        finished_on.append(threading.get_ident())
        finish(self, fd)

    monkeypatch.setattr(GrievanceSpool, "finish", spy)
    store = await LocalGrievanceStore.open(db)
    try:
        kept = {"id": "a1", "user_id": NOVA, "category": "wallet", "description": "kept", "at": "x"}
        spool.write_text(json.dumps({**kept, "state": "local_only"}) + "\n")
        await store.register(NOVA, "wallet", "charged twice")
        assert sorted(g.description for g in await store.status(NOVA)) == ["charged twice", "kept"]
    finally:
        await store.aclose()
    assert spool.read_text() == ""
    assert finished_on and threading.get_ident() not in finished_on


async def test_a_raids_notes_are_decoded_no_more_at_once_than_there_are_cores() -> None:
    # Decoding is CPU work: threads past the cores only slow every note and the event loop down,
    # and each decode holds its note's samples all the while (a 120 s note's are 23 MB).
    cores = os.cpu_count() or 1
    go_on = threading.Event()
    names: set[str] = set()

    def work() -> None:
        names.add(threading.current_thread().name)
        go_on.wait(30)

    jobs = [asyncio.ensure_future(audio.off_loop(work)) for _ in range(cores + 4)]
    await asyncio.sleep(0)  # each job handed to the audio threads, all of them still held
    go_on.set()
    await asyncio.gather(*jobs)
    assert len(names) <= cores, sorted(names)
