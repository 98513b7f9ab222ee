"""Memory and time to speak a reply with no full stop in the neural voice: cut into pieces of at
most `MAX_PIECE_CHARS` (what the bot does) vs one Piper run for the whole sentence (baseline).

    python bench/long_reply.py [--items N]

A manual's bullet list read as one line, or a cloud model's unpunctuated text, is such a reply.
Each way runs in a process of its own, so its peak resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(way: str, items: int) -> dict[str, float]:
    from bot.config import load_settings
    from bot.engines.offline.engine import load_reply_voices
    from bot.speech import neural

    voices = load_reply_voices(load_settings())
    voice = next(iter(voices.neural.values()))
    if way == "one run":
        neural.speakable_pieces = lambda text: [text]  # type: ignore[assignment] # one Piper run
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = " ".join(f"item {i} gives players a reward and a badge" for i in range(items))
    started = time.perf_counter()
    speech = voice.synthesize(text)
    return {
        "chars": len(text),
        "seconds": time.perf_counter() - started,
        "audio_seconds": len(speech.pcm) / 2 / speech.rate,
        "rss_before_mb": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=30, help="bullets in the sentence (30: 1,279 chars)")
    parser.add_argument("--way", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way, args.items)))
        return
    results = {}
    for way in ("pieces", "one run"):
        out = subprocess.run(
            [sys.executable, __file__, "--items", str(args.items), "--way", way],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        results[way] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, base = results["pieces"], results["one run"]
    print(f"{ours['chars']} characters, no full stop, {ours['audio_seconds']:.0f} s of speech")
    print("way       synthesis  peak RSS  RSS before")
    for way, r in results.items():
        print(f"{way:<9} {r['seconds']:7.1f} s  {r['peak_rss_mb']:5.0f} MB  {r['rss_before_mb']:5.0f} MB")
    grown = (ours["peak_rss_mb"] - ours["rss_before_mb"]) / (base["peak_rss_mb"] - base["rss_before_mb"])
    faster = ours["seconds"] / base["seconds"]
    print(f"memory grown while speaking: {grown:.2f}x the one run's; time {faster:.2f}x")


if __name__ == "__main__":
    main()
