"""Soak: players keep sending voice notes while the bot is restarted and killed. Is every note
answered, and answered once?

    python bench/soak.py                                    # 10 players, 10 minutes
    python bench/soak.py --duration 60 --restart-every 20 --kill-at 30   # a 1-minute smoke

The bot is a real `python -m bot run` subprocess, as an operator starts it: the offline engine
and the embedded defaults, storage in a temporary directory seeded by `python -m bot init`. It is
pointed at the fake Discord (tests/fakes/discord_server.py), which runs in this process on
127.0.0.1, keeps every channel's history while the bot is down, and serves it paginated as
Discord does. Every `--restart-every` seconds the bot gets SIGTERM and, once it has exited and
`--down-seconds` have passed, is started again; once, at `--kill-at`, it gets SIGKILL instead
(then the same restart). Each player sends one of the sample voice notes (real speech, so the
offline engine answers them for real) every `--interval` seconds (uniform, seeded), in a DM or
in the configured guild channel. Their first note is a DM, sent while the bot is up: Discord
lets a bot read only the DMs it knows of, and it learns of one from a note it handled there.

When the sending stops, the bot (restarted if it is down) is given up to `--catch-up-seconds`
to answer everything, then a quiet spell to post anything it still would, then SIGTERM.
A note counts as answered when a voice message, or the audio-file fallback, replies to it.
Exit status 1 if any note is never answered or answered more than once, or the fake refused a
request as the real Discord would.

One deliberate change from the defaults: `discord.flood_notes` is raised (`--flood-notes`);
at the default five notes a minute per player the bot would turn away half of a player's notes
on purpose, which is not what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.paths import SAMPLES
from tests.fakes.discord_server import ALLOWED_CHANNEL, TOKEN, FakeDiscord, InjectedUser, Received
from tests.fakes.strict import FakeRefused

REPO = Path(__file__).resolve().parent.parent
# The seeded demo players (bot/data/sql/sqlite/seed.sql), so stats questions get real answers.
DEMO_PLAYERS = [int(d * 18) for d in "123456789"] + [int("10" * 9), int("12" * 9), int("13" * 9)]
PHASES = ("up", "stopping", "down")


@dataclass
class Note:
    message_id: int
    player: int
    where: str  # dm | guild
    sample: str
    sent_at: float  # the fake's clock (time.perf_counter) when it stored the message
    phase: str  # the bot's state when it was sent: up | stopping (SIGTERM sent, not exited) | down
    start: int  # how many times the bot had been started when it was sent


@dataclass
class Tally:
    starts: int = 0
    terms: int = 0
    kills: int = 0
    exit_codes: list[int] = field(default_factory=list)
    cut_by_kill: int = 0  # notes a killed process had claimed and not answered: answered after it
    events: list[str] = field(default_factory=list)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def is_answer(record: Received) -> bool:
    """A voice message, or the audio-file reply a channel that refuses voice messages gets; the
    text-only replies (restarting, something went wrong, a hint) are not answers."""
    return record.is_voice_message or any(u.filename.endswith(".ogg") for u in record.files)


def ogg_seconds(data: bytes) -> float:
    import io

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.codec_context.sample_rate


class BotProcess:
    """`python -m bot run` pointed at the fake, started and stopped as an operator would."""

    def __init__(self, fake: FakeDiscord, env: dict[str, str], log: TextIO, clock: float) -> None:
        self.fake = fake
        self.env = env
        self.log = log
        self.clock = clock
        self.process: asyncio.subprocess.Process | None = None
        self.phase = "down"
        self.tally = Tally()

    def mark(self, text: str) -> None:
        """A line in the bot's log and on the console, so the log can be read against the run."""
        line = f"[soak t={time.perf_counter() - self.clock:7.1f}s] {text}"
        self.log.write(f"===== {line}\n")
        self.log.flush()
        self.tally.events.append(line)
        print(line, flush=True)

    async def start(self, within: float = 120.0) -> None:
        self.fake.identified.clear()
        # A session of its own: a Ctrl-C on the bench is not a SIGINT to the bot, and the bot's
        # decoding workers can be found (and ended) by its process group when it is killed.
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.tally.starts += 1
        self.mark(f"start #{self.tally.starts}: pid {self.process.pid}")
        started = time.perf_counter()
        await asyncio.wait_for(self.fake.identified.wait(), within)
        self.phase = "up"
        self.mark(f"pid {self.process.pid} connected after {time.perf_counter() - started:.1f} s")

    async def term(self, within: float = 60.0) -> None:
        process = self._running()
        self.phase = "stopping"
        self.tally.terms += 1
        self.mark(f"SIGTERM #{self.tally.terms} to pid {process.pid}")
        process.send_signal(signal.SIGTERM)
        started = time.perf_counter()
        try:
            code = await asyncio.wait_for(process.wait(), within)
        except TimeoutError:
            self.mark(f"pid {process.pid} still running {within:g} s after SIGTERM: SIGKILL")
            process.kill()
            code = await asyncio.wait_for(process.wait(), 10)
        self._exited(process, code, time.perf_counter() - started)

    async def kill(self) -> None:
        process = self._running()
        self.phase = "stopping"
        self.tally.kills += 1
        self.mark(f"SIGKILL #{self.tally.kills} to pid {process.pid}")
        process.kill()
        code = await asyncio.wait_for(process.wait(), 10)
        self._exited(process, code, 0.0)
        cut = self.claims_of(process.pid)
        self.mark(f"pid {process.pid} was killed holding {cut} note(s) it had claimed and not answered")
        self.tally.cut_by_kill += cut
        await asyncio.sleep(1.0)
        # A decoding worker outliving its bot would hold memory (not notes) until it noticed.
        if self._group_alive(process.pid):
            self.mark(f"pid {process.pid}'s decoding workers outlived it: ending its process group")
            self.end_group(process.pid)

    def claims_of(self, pid: int) -> int:
        """Notes process `pid` had claimed in the bot's ledger and not answered or released."""
        path = Path(self.env["VOXDESK_STORAGE_DIR"]) / "notes.db"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM notes WHERE state = 'started' AND owner LIKE ?", (f"{pid}:%",)
            ).fetchone()
        return int(count)

    def _exited(self, process: asyncio.subprocess.Process, code: int, seconds: float) -> None:
        self.phase = "down"
        self.tally.exit_codes.append(code)
        self.mark(f"pid {process.pid} exited with {code} after {seconds:.1f} s")

    def _running(self) -> asyncio.subprocess.Process:
        assert self.running and self.process is not None, "the bot is not running"
        return self.process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    @staticmethod
    def end_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    async def cleanup(self) -> None:
        """Whatever happened: nothing this bench started keeps running."""
        if self.process is not None:
            if self.process.returncode is None:
                self.process.kill()
                await asyncio.wait_for(self.process.wait(), 10)
            self.end_group(self.process.pid)


class Soak:
    def __init__(self, args: argparse.Namespace, fake: FakeDiscord, bot: BotProcess) -> None:
        self.args = args
        self.fake = fake
        self.bot = bot
        self.notes: list[Note] = []
        self.samples = {p.name: p.read_bytes() for p in sorted(Path(str(SAMPLES)).glob("*.ogg"))}
        self.durations = {name: ogg_seconds(data) for name, data in self.samples.items()}
        ids = DEMO_PLAYERS + [700000000000000000 + i for i in range(max(0, args.players - len(DEMO_PLAYERS)))]
        self.players = [InjectedUser(ids[i], f"player{i + 1}") for i in range(args.players)]

    async def player(self, index: int, user: InjectedUser, deadline: float) -> None:
        rng = random.Random(f"{self.args.seed}:{index}")
        lo, hi = self.args.interval
        await asyncio.sleep(rng.uniform(0, hi))
        first = True
        while time.perf_counter() < deadline:
            where = "dm" if first or rng.random() < self.args.dm_share else "guild"
            name = rng.choice(sorted(self.samples))
            message = await self.fake.send_note(
                user,
                self.samples[name],
                channel_id=ALLOWED_CHANNEL if where == "guild" else None,
                guild=where == "guild",
                duration=self.durations[name],
            )
            self.notes.append(
                Note(
                    int(message["id"]),
                    user.id,
                    where,
                    name,
                    self.fake.dispatched_at[message["id"]],
                    self.bot.phase,
                    self.bot.tally.starts,
                )
            )
            first = False
            await asyncio.sleep(rng.uniform(lo, hi))

    async def operator(self, started: float) -> None:
        """SIGTERM every --restart-every seconds, SIGKILL once at --kill-at; each time the bot
        is started again after --down-seconds. One event at a time, in order."""
        duration = self.args.duration
        period = self.args.restart_every
        events = [(period * k, "term") for k in range(1, int(duration // period) + 1)]
        events = [e for e in events if e[0] < duration]
        kill_at = self.args.kill_at
        if kill_at is not None and 0 < kill_at < duration:
            events = [e for e in events if abs(e[0] - kill_at) > 1e-9] + [(kill_at, "kill")]
        for at, what in sorted(events):
            await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
            if what == "kill":
                await self.bot.kill()
            else:
                await self.bot.term()
            await asyncio.sleep(self.args.down_seconds)
            await self.bot.start()

    def answers(self, note: Note) -> list[Received]:
        return [r for r in self.fake.replies_to(note.message_id) if is_answer(r)]

    def unanswered(self) -> list[Note]:
        return [n for n in self.notes if not self.answers(n)]

    async def run(self) -> None:
        await self.bot.start()
        started = time.perf_counter()
        deadline = started + self.args.duration
        operator = asyncio.create_task(self.operator(started))
        await asyncio.gather(*(self.player(i, p, deadline) for i, p in enumerate(self.players)))
        self.bot.mark(f"sending stopped: {len(self.notes)} notes sent")
        await operator  # a restart under way at the deadline finishes first
        if not self.bot.running:
            await self.bot.start()
        # A refusal the fake records ends the wait too: report() names it.
        with contextlib.suppress(TimeoutError, FakeRefused):
            await self.fake.wait_for(lambda _: not self.unanswered(), self.args.catch_up_seconds)
        left = len(self.unanswered())
        self.bot.mark(f"catch-up over: {left} note(s) unanswered")
        await self.quiet(self.args.quiet_seconds)
        await self.bot.term()

    async def quiet(self, seconds: float, at_most: float = 60.0) -> None:
        """Until the fake has received nothing for `seconds`: a second answer would arrive now."""
        until = time.perf_counter() + at_most
        count = -1
        while count != len(self.fake.received) and time.perf_counter() < until:
            count = len(self.fake.received)
            await asyncio.sleep(seconds)


def log_lines(log_path: Path, message_id: int, limit: int = 12) -> list[str]:
    """The bot's log lines that name a note."""
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if str(message_id) in ln]
    return lines[-limit:] or ["(the bot's log never names it)"]


def ledger_rows(storage: Path, note: Note) -> list[str]:
    """What the bot's note ledger says of a note, and of the newest note answered in its place
    (where the catch-up after a start resumes reading that place's history)."""
    path = storage / "notes.db"
    if not path.exists():
        return ["(no ledger)"]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT place_id, state, owner, updated_at FROM notes WHERE message_id = ?", (note.message_id,)
        ).fetchone()
        if row is None:
            return ["ledger: no row for this note"]
        place, state, owner, _ = row
        (last,) = conn.execute(
            "SELECT MAX(message_id) FROM notes WHERE place_id = ? AND state = 'answered'", (place,)
        ).fetchone()
    newer = "newer" if last and last > note.message_id else "older"
    return [f"ledger: state {state}, owner {owner}; newest answered in place {place}: {last} ({newer})"]


def report(
    soak: Soak, args: argparse.Namespace, log_path: Path, storage: Path, command: str, wall: float
) -> int:
    notes = soak.notes
    counts = Counter(min(len(soak.answers(n)), 2) for n in notes)
    lost = [n for n in notes if not soak.answers(n)]
    doubled = [n for n in notes if len(soak.answers(n)) >= 2]
    tally = soak.bot.tally
    fake = soak.fake
    codes = Counter("none (no close frame)" if c is None else str(c) for c in fake.close_codes)
    latency: dict[str, list[float]] = {p: [] for p in PHASES}
    for n in notes:
        answers = soak.answers(n)
        if answers:
            latency[n.phase].append(answers[0].at - n.sent_at)
    refused = fake.unexpected_violations
    apologies = sum(
        1 for n in notes for r in fake.replies_to(n.message_id) if "went wrong on my side" in r.content
    )

    print()
    print(f"command: {command}")
    print(f"date: {datetime.date.today().isoformat()}, wall time {wall / 60:.1f} min, bot log {log_path}")
    print()
    print("| players | sending for | notes sent (DM / channel) | answered once | answered twice+ | lost |")
    print("| --- | --- | --- | --- | --- | --- |")
    dms = sum(1 for n in notes if n.where == "dm")
    print(
        f"| {args.players} | {args.duration / 60:g} min | {len(notes)} ({dms} / {len(notes) - dms}) | "
        f"{counts[1]} | {counts[2]} | {counts[0]} |"
    )
    print()
    print("| SIGTERM + restart | SIGKILL + restart | bot starts | close codes seen | exit codes |")
    print("| --- | --- | --- | --- | --- |")
    code_text = ", ".join(f"{c} x{k}" for c, k in sorted(codes.items()))
    exits = ", ".join(f"{c} x{k}" for c, k in sorted(Counter(tally.exit_codes).items()))
    print(f"| {tally.terms} | {tally.kills} | {tally.starts} | {code_text} | {exits} |")
    print("(the last SIGTERM ends the run; exit code -9 is the SIGKILL)")
    if tally.kills:
        print(f"the SIGKILL cut {tally.cut_by_kill} turn(s) mid-way (claimed, not answered)")
    print()
    print("| note sent while the bot was | notes | p50 to first answer | p95 | worst |")
    print("| --- | --- | --- | --- | --- |")
    for phase, label in zip(PHASES, ("up", "stopping (SIGTERM sent)", "down or starting"), strict=True):
        values = latency[phase]
        sent = sum(1 for n in notes if n.phase == phase)
        if values:
            print(
                f"| {label} | {sent} | {statistics.median(values):.1f} s | {pct(values, 95):.1f} s | "
                f"{max(values):.1f} s |"
            )
        else:
            print(f"| {label} | {sent} | - | - | - |")
    print()
    if apologies:
        print(f"{apologies} 'something went wrong' repl(ies) (not answers)")
    if refused:
        print(f"the fake refused {len(refused)} request(s) as Discord would:")
        for reason in refused[:10]:
            print(f"  - {reason}")
    for label, bad in (("LOST", lost), ("ANSWERED TWICE+", doubled)):
        for n in bad[:20]:
            t = n.sent_at - soak.bot.clock
            replies = [
                f"{'answer' if is_answer(r) else repr(r.content[:40])} at t={r.at - soak.bot.clock:.1f}s"
                for r in fake.replies_to(n.message_id)
            ]
            print(
                f"{label}: note {n.message_id} from {n.player} in {n.where} ({n.sample}) sent at t={t:.1f}s "
                f"while {n.phase}, after start #{n.start}; replies: {replies or 'none'}"
            )
            for line in [*ledger_rows(storage, n), *log_lines(log_path, n.message_id)]:
                print(f"    {line}")
    return 1 if lost or doubled or refused else 0


async def main(args: argparse.Namespace, command: str, log: TextIO) -> int:
    fake = await FakeDiscord().start()
    log_path = Path(log.name)
    with tempfile.TemporaryDirectory(prefix="voxdesk-soak-") as storage:
        env = {
            **os.environ,
            **fake.settings_env(),
            "DISCORD_TOKEN": TOKEN,
            "VOXDESK_STORAGE_DIR": storage,
            "VOXDESK_OFFLINE_WORKERS": str(args.workers),
            "VOXDESK_DISCORD_FLOOD_NOTES": str(args.flood_notes),
        }
        init = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "init",
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await init.communicate()
        if init.returncode:
            print(output.decode(errors="replace"))
            await fake.stop()
            return 2
        bot = BotProcess(fake, env, log, time.perf_counter())
        soak = Soak(args, fake, bot)
        print(
            f"{args.players} players, one note every {args.interval[0]:g}-{args.interval[1]:g} s for "
            f"{args.duration:g} s; SIGTERM every {args.restart_every:g} s, SIGKILL at {args.kill_at} s; "
            f"fake Discord on {fake.url}; bot log {log_path}",
            flush=True,
        )
        wall = time.perf_counter()
        try:
            await soak.run()
        finally:
            await bot.cleanup()
            await fake.stop()
        return report(soak, args, log_path, Path(storage), command, time.perf_counter() - wall)


def interval(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    low, high = float(lo), float(hi or lo)
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError("want LOW-HIGH seconds, 0 < LOW <= HIGH")
    return low, high


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--players", type=int, default=10)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of sending (default 600)")
    parser.add_argument(
        "--interval", type=interval, default=(4.0, 8.0), help="seconds between a player's notes, LOW-HIGH"
    )
    parser.add_argument("--restart-every", type=float, default=120.0, help="seconds between SIGTERMs")
    parser.add_argument(
        "--kill-at", type=float, default=None, help="SIGKILL at this second (default: half the duration)"
    )
    parser.add_argument("--down-seconds", type=float, default=5.0, help="how long the bot stays down")
    parser.add_argument("--catch-up-seconds", type=float, default=180.0, help="at most, after the sending")
    parser.add_argument("--quiet-seconds", type=float, default=5.0, help="nothing received this long: done")
    parser.add_argument("--dm-share", type=float, default=0.5, help="share of notes sent in DMs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="offline.workers for the bot (0: per core)")
    parser.add_argument("--flood-notes", type=int, default=1000, help="discord.flood_notes for the bot")
    parser.add_argument(
        "--log", default=str(Path(tempfile.gettempdir()) / "voxdesk-soak-bot.log"), help="the bot's log"
    )
    parsed = parser.parse_args()
    if parsed.kill_at is None:
        parsed.kill_at = parsed.duration / 2
    shown = " ".join(["python bench/soak.py", *sys.argv[1:]])
    with open(parsed.log, "w") as bot_log:
        sys.exit(asyncio.run(main(parsed, shown, bot_log)))
