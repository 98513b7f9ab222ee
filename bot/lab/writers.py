"""Does the part classifier gain from more writers? `python -m bot.lab.writers`

Every notes file, the shipped ones (data/speech/notes) and the held-back ones (lab/notes), is held
out in turn and routed by classifiers that learnt from a growing set of the other writers: the
four shipped files, then the four of the second round, then the six of the third. Right answers
per kind of note, totalled over the held-out files: how routing grows with writers nobody read.
About 15 minutes on 2 cores: every part of 7,000 notes is read by the sentence encoder once.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bot.intent.meaning import meaning_model
from bot.intent.part_classifier import NOTES, PartClassifier
from bot.lab.neural_eval import RIGHT, WRONG
from bot.lab.parts import featurise, load_notes, phrasing_notes, route_notes, train

MORE_NOTES = Path(__file__).with_name("notes")
# The held-back files in the order they were written: each round is a step of the curve.
ROUNDS = (
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


def steps(shipped: list[str]) -> list[tuple[str, set[str]]]:
    """The training sets of the curve, each a name and its files."""
    out = [(f"{len(shipped)} writers", set(shipped))]
    for files in ROUNDS:
        grown = out[-1][1] | set(files)
        out.append((f"{len(grown)} writers", grown))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    meaning = meaning_model()
    if meaning is None:
        raise SystemExit("the meaning model is not installed (see README: Offline engine)")
    started = time.perf_counter()
    notes = load_notes(NOTES) + load_notes(MORE_NOTES)
    phrasings = phrasing_notes()
    x, y, owner = featurise(notes + phrasings, functools.cache(meaning.vector))
    source = np.array([note.source.split(":")[0] for note in notes + phrasings])[owner]
    files = sorted({note.source.split(":")[0] for note in notes})
    curve = steps(sorted(path.name for path in NOTES.glob("*.jsonl")))
    totals: dict[str, dict[str, Counter[str]]] = {name: {} for name, _ in curve}
    for held in files:
        notes_held = [note for note in notes if note.source.startswith(held + ":")]
        for name, learnt in curve:
            keep = np.array([s == "phrasings" or (s in learnt and s != held) for s in source])
            w, b = train(x[keep], y[keep])
            for kind, counts in route_notes(notes_held, PartClassifier(w, b, meaning)).items():
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
