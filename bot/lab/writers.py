"""Does the word tagger gain from more writers? `python -m bot.lab.writers`

Every notes file (data/speech/notes) is held out in turn and routed by taggers that learnt from a
growing set of the other writers: the four of the first round, then the four of the second, then
the six of the third. Right answers per kind of note, totalled over the held-out files: how
routing grows with writers nobody read, over the meaning model `auto` gives (--encoder for the
other). About 20 minutes on 2 cores over all-MiniLM-L6-v2; about twice that over
all-mpnet-base-v2, with twice the memory.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from bot.intent.word_tagger import NOTES, WordTagger
from bot.lab.neural_eval import RIGHT, WRONG
from bot.lab.tagger import load_meaning, read_all, route_notes, train
from bot.speech.sentence_encoder import MODELS

# The files in the order they were written: each round is a step of the curve.
ROUNDS = (
    ("casual-mobile.jsonl", "mmo-rpg.jsonl", "run-on-speech.jsonl", "shooters.jsonl"),
    ("competitive.jsonl", "formal-roundabout.jsonl", "heated.jsonl", "second-language.jsonl"),
    (
        "kids.jsonl",
        "older-returning.jsonl",
        "party-chat.jsonl",
        "regional.jsonl",
        "support-precise.jsonl",
        "terse-slips.jsonl",
    ),
)


def steps() -> list[tuple[str, set[str]]]:
    """The training sets of the curve, each a name and its files."""
    out: list[tuple[str, set[str]]] = []
    for files in ROUNDS:
        grown = (out[-1][1] if out else set()) | set(files)
        out.append((f"{len(grown)} writers", grown))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=[model.name for model in MODELS], help="default: auto's")
    args = parser.parse_args(argv)
    meaning = load_meaning(args.encoder)
    started = time.perf_counter()
    learning = read_all(meaning, NOTES)
    notes, x, y, source = learning.notes, learning.x, learning.y, learning.source
    files = sorted({note.file for note in notes})
    curve = steps()
    totals: dict[str, dict[str, Counter[str]]] = {name: {} for name, _ in curve}
    for held in files:
        notes_held = [note for note in notes if note.file == held]
        for name, learnt in curve:
            keep = np.array([s == "phrasings" or (s in learnt and s != held) for s in source])
            network = train(x[keep], y[keep])
            for kind, counts in route_notes(notes_held, WordTagger(network, meaning)).items():
                totals[name].setdefault(kind, Counter()).update(counts)
        print(f"{held} done", flush=True)
    print(f"{len(files)} files held out in turn, {time.perf_counter() - started:.0f} s")
    for name, tally in totals.items():
        cells = [
            f"{kind} {c[RIGHT] / sum(c.values()):.1%} (wrong {c[WRONG] / sum(c.values()):.1%})"
            for kind, c in sorted(tally.items())
        ]
        print(f"learnt from {name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
