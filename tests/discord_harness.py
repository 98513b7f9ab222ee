"""The bot as `python -m bot run` starts it (cogs.runner.serve), pointed at the fake Discord by
settings, with the front-end test engine standing in for the model; or the real command in a
child process (`bot_process`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bot.config import Settings
from cogs.bot import VoxdeskBot
from cogs.runner import serve
from tests.audio_samples import encode, speechlike
from tests.conftest import BLAZE, NOVA, QUILL, REPO
from tests.fakes.discord_server import ALLOWED_CHANNEL, TOKEN, VOICE_FLAG, FakeDiscord, InjectedUser
from tests.frontend_engine import FrontendEngine

T = TypeVar("T")

# The demo players as Discord users who send notes to the fake.
nova = InjectedUser(int(NOVA), "nova")
blaze = InjectedUser(int(BLAZE), "blaze")
quill = InjectedUser(int(QUILL), "quill")


@dataclass
class Harness:
    fake: FakeDiscord
    bot: VoxdeskBot
    engine: FrontendEngine
    settings: Settings
    stop: asyncio.Event
    task: asyncio.Task[None]


def discord_settings(settings: Settings, fake: FakeDiscord, **discord: Any) -> Settings:
    return settings.replace(
        discord={
            "api_base": fake.api_base,
            "gateway_url": fake.gateway_url,
            "channels": [ALLOWED_CHANNEL],
            "guild_ready_timeout": 0.05,
            **discord,
        },
        secrets={"discord_token": TOKEN},
    )


@contextlib.asynccontextmanager
async def running_bot(
    settings: Settings, fake: FakeDiscord, engine: FrontendEngine | None = None, **discord: Any
) -> AsyncIterator[Harness]:
    settings = discord_settings(settings, fake, **discord)
    engine = engine or FrontendEngine()
    stop = asyncio.Event()
    started: asyncio.Future[VoxdeskBot] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, TOKEN, stop=stop, engine=engine, started=started))
    done, _ = await asyncio.wait({started, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises why it did not start
    if started not in done:
        raise TimeoutError("the bot did not log in")
    bot = started.result()
    bot.before_identify_hook = _identify_at_once  # type: ignore[method-assign]
    await asyncio.wait_for(bot.wait_until_ready(), 30)
    running = _RUNNING.setdefault(id(fake), [])
    running.append(bot)
    try:
        yield Harness(fake, bot, engine, settings, stop, task)
    finally:
        running.remove(bot)
        stop.set()
        await asyncio.wait_for(task, 60)


async def _identify_at_once(shard_id: int | None, *, initial: bool = False) -> None:
    """discord.py's default waits 5 s before each IDENTIFY but the first, to pace the sessions of
    one token against Discord's limit; the fake sets none. The gap a test sends into is the fake's
    gateway_outage(), held until the test ends it, and no test asserts the wait itself."""


# The bots running_bot started, by the fake they talk to: those `settle` waits for.
_RUNNING: dict[int, list[VoxdeskBot]] = {}


async def settle(fake: FakeDiscord, within: float = 30.0) -> None:
    """Until the bots running_bot started against `fake` have sent all they will for what has
    happened so far (a test then asserts that nothing more came). Each has read every gateway
    event sent it, ended its start's catch-up and its first recheck (with rechecks a second or
    less apart, one begun after this look), and holds no note, command, reaction or send in
    flight; then all again, until a look finds no new request but reads. (A quiet moment in the
    fake's log is no sign: on a busy machine the next send can come later still.)"""
    bots = list(_RUNNING.get(id(fake), ()))
    assert bots, "settle: no bot that running_bot started talks to this fake"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within

    def left() -> float:
        # Every wait and every look again within the one `within`: a bot sending between any two
        # looks would otherwise be looked at until pytest's own timeout.
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"settle: the bot has not settled after {within:g} s{_lately(fake)}")
        return remaining

    while True:
        sends = _sends(fake)
        try:
            await fake.read_by_the_bot(left())
        except TimeoutError:
            raise AssertionError(f"settle: a bot had not read its gateway after {within:g} s") from None
        for bot in (b for b in bots if not b.is_closed()):  # one stopped sends nothing more
            try:
                await caught_up(bot, left())
            except TimeoutError:
                raise AssertionError(
                    f"settle: the start's catch-up had not ended after {within:g} s"
                ) from None
            catch_up: Any = bot.get_cog("CatchUp")
            recheck = catch_up.recheck
            fast = bot.discord_settings.recheck_seconds <= 1.0
            # A recheck begun after this look has ended (or, slow ones, the first).
            ended = recheck.current_loop + (2 if recheck.under_way else 1) if fast else 1
            while not (recheck.current_loop >= ended and not _at_work(bot)):
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(
                        f"settle: the bot is still at work after {within:g} s: {_at_work(bot)}"
                    )
                await asyncio.sleep(0.01)
        if _sends(fake) == sends:
            return
        left()


def _sends(fake: FakeDiscord) -> int:
    return sum(1 for r in fake.received if r.method != "GET")


def _lately(fake: FakeDiscord) -> str:
    recent = [f"{r.method} {r.path}" for r in fake.received if r.method != "GET"][-3:]
    return f" (its latest sends: {', '.join(recent)})" if recent else ""


def _at_work(bot: VoxdeskBot) -> str:
    """What the bot has under way that may still send: "" for nothing."""
    catch_up: Any = bot.get_cog("CatchUp")
    voice: Any = bot.get_cog("VoiceNotes")
    doing = []
    if bot.inflight:
        doing.append(f"{bot.inflight} note(s), command(s) or read(s)")
    if voice is not None and voice._on_their_own:
        doing.append(f"{len(voice._on_their_own)} reaction(s), typing or send(s) given up on")
    if catch_up.recheck.under_way:
        doing.append("a recheck")
    return ", ".join(doing)


@contextlib.contextmanager
def bot_process(
    settings: Settings,
    fake: FakeDiscord,
    log_path: Path,
    env: dict[str, str] | None = None,
    module: str = "bot",
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m bot run`, as an operator starts it, pointed at the fake. `module`: another
    that runs it as bot does, with a fault of the test's (tests.crashing_bot)."""
    env = {
        **os.environ,
        **fake.settings_env(),
        "DISCORD_TOKEN": TOKEN,
        "VOXDESK_STORAGE_DIR": str(settings.storage_dir),
        "VOXDESK_OFFLINE_WORKERS": "1",
        # As conftest's settings: the neural voice's load and speech double a turn, and no test
        # of a process is of the voice.
        "VOXDESK_OFFLINE_VOICE": "en-us",
        **(env or {}),
    }
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "run"], cwd=REPO, env=env, stdout=log_file, stderr=log_file
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def logged_in(
    fake: FakeDiscord, process: subprocess.Popen[bytes], log_path: Path, within: float = 150.0
) -> None:
    """Until `process` (see bot_process) has identified to the fake. A start imports and loads the
    speech models: past a minute on a busy machine, so the bound is the test's own timeout's. A
    process that exits first fails at once; either failure ends with the process's log."""
    identified = asyncio.ensure_future(fake.identified.wait())
    exited = asyncio.ensure_future(asyncio.to_thread(process.wait))  # its thread ends with the kill
    try:
        await asyncio.wait({identified, exited}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        identified.cancel()
        exited.cancel()
    if not fake.identified.is_set():
        code = process.poll()
        why = f"exited with {code}" if code is not None else f"had not logged in after {within:g} s"
        log = await asyncio.to_thread(log_path.read_text)
        raise AssertionError(f"`python -m bot run` {why}; its log ends:\n{log[-4000:]}")


async def while_it_runs(
    work: Awaitable[T], process: subprocess.Popen[bytes], log_path: Path, what: str, within: float
) -> T:
    """`work`'s result, as `logged_in` waits: a process that exits first fails at once, and either
    failure ends with the process's log."""
    waiting = asyncio.ensure_future(work)
    exited = asyncio.ensure_future(asyncio.to_thread(process.wait))  # its thread ends with the kill
    try:
        await asyncio.wait({waiting, exited}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
        if not waiting.done():
            waiting.cancel()
    if waiting.done() and not waiting.cancelled() and not isinstance(waiting.exception(), TimeoutError):
        return waiting.result()  # or raises why it failed (a request the fake refused)
    code = process.poll()
    why = f"exited with {code}" if code is not None else f"had not {what} after {within:g} s"
    log = await asyncio.to_thread(log_path.read_text)
    raise AssertionError(f"`python -m bot run` {why}; its log ends:\n{log[-4000:]}")


async def caught_up(bot: VoxdeskBot, within: float = 30.0) -> None:
    """Until the start's catch-up has read every place. (A quiet moment in the fake's log is no
    sign: the catch-up's first read can come later still.) Until then it is work in flight, and
    reads what a test puts in the channels as its own."""
    await asyncio.wait_for(bot.get_cog("CatchUp").caught_up.wait(), within)  # type: ignore[union-attr]


_NOTES: dict[float, bytes] = {}


async def send_two_notes(
    fake: FakeDiscord,
    who: InjectedUser,
    note: dict[str, Any],
    channel_id: int = ALLOWED_CHANNEL,
    guild: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """One voice message that carries two notes: `note`, a sent note's attachment, twice."""
    attachments = [note, {**note, "id": "2"}]
    return await fake.send_message(
        who, channel_id=channel_id, guild=guild, attachments=attachments, flags=VOICE_FLAG, **kwargs
    )


def voice_note(seconds: float = 1.5) -> bytes:
    """A real Ogg/Opus voice note with speech-like sound (cached: encoding is the slow part)."""
    if seconds not in _NOTES:
        _NOTES[seconds] = encode(speechlike(seconds), 48_000, "ogg")
    return _NOTES[seconds]


def claim_lands_just_after_a_read_looked(ledger: Any, message_id: int) -> None:
    """Make `message_id`'s live claim land in the note ledger just after a read-back (a catch-up,
    a thread's read on joining) looked there for it: the read's `seen` waits for the claim, the
    claim for the read's look. Each wait gives up after 30 s, which only a broken test reaches."""
    looked, claimed = asyncio.Event(), asyncio.Event()
    real_seen, real_claim = ledger.seen, ledger.claim

    async def seen(message_ids: list[int]) -> set[int]:
        known = await real_seen(message_ids)
        if message_id in message_ids:
            looked.set()
            await asyncio.wait_for(claimed.wait(), 30)
        return known

    async def claim(claimed_id: int, *args: object) -> bool:
        if claimed_id != message_id:
            return await real_claim(claimed_id, *args)
        await asyncio.wait_for(looked.wait(), 30)
        mine = await real_claim(claimed_id, *args)
        claimed.set()
        return mine

    ledger.seen, ledger.claim = seen, claim
