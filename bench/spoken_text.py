"""Time to make a reply's text speakable (`said_aloud`: spoken() then speakable()) for texts
built to make a regular expression backtrack: each must take time in proportion to its length.

    python bench/spoken_text.py [--chars N]

A cloud model's answer, a studio's manual or a ticket's summary is such a text. Each shape is
timed at N/10 and N characters: a ratio near 10 is linear, near 100 quadratic.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES: dict[str, Callable[[int], str]] = {
    "open brackets": lambda n: "[" * n,
    "link never closed": lambda n: "[a](" + "x" * n,
    "line breaks": lambda n: "\n" * n,
    "line breaks and spaces": lambda n: "\n " * (n // 2) + "x",
    "figures and commas": lambda n: "1," * (n // 2) + "1.5 dollars",
    "stars": lambda n: "*" * n,
    "underscores": lambda n: "_" * n + "a",
    "address": lambda n: "https://" + "a" * n,
    "ticket keys": lambda n: "AB-" * (n // 3),
    "clock-like": lambda n: "1:" * (n // 2),
    "date-like": lambda n: "2026-" * (n // 5),
    "products": lambda n: "1 *" * (n // 3),
    "graphics cards": lambda n: "GTX 1050 Ti " * (n // 12),
    "graphics cards, plural": lambda n: "RTX 3080s GTX 1080 Tis " * (n // 23),
    "weapons' names": lambda n: "MAC-10s AK47s UMP" * (n // 17),
}


def seconds(text: str) -> float:
    from bot.engines.offline.engine import said_aloud

    started = time.perf_counter()
    said_aloud(text)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=100_000)
    args = parser.parse_args()
    print(f"{'shape':24} {args.chars // 10:>10} ch {args.chars:>10} ch  ratio")
    for name, make in SHAPES.items():
        small, large = seconds(make(args.chars // 10)), seconds(make(args.chars))
        print(f"{name:24} {small:11.4f} s {large:11.4f} s {large / max(small, 1e-6):6.1f}")


if __name__ == "__main__":
    main()
