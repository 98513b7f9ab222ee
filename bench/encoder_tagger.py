"""The word tagger over each sentence encoder: how the two shipped taggers route the spent splits,
and how each would do on a writer it has not read.

    python bench/encoder_tagger.py [--writers]

voxdesk ships a tagger and decider for each encoder (data/speech/tagger-<encoder>.npz, learnt by
`python -m bot.lab.tagger --encoder NAME`): over all-mpnet-base-v2 (its states after layers 8 and
12 of 12, 768 numbers each, beside the note's meaning) and over all-MiniLM-L6-v2 (after layers 4
and 6 of 6, 384 each). The router routes the spent neural splits' questions as text with each in
turn, scored as `python -m bot eval --as-text` scores them; nothing else in the router changes. The
splits nv25-nv30 are never read.

--writers instead holds each notes file out in turn and routes it with a tagger and decider learnt
without it, over each encoder (`python -m bot.lab.tagger --folds`'s figures; 35 minutes on 2
cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.intent import router, word_tagger
from bot.intent.meaning import MeaningModel
from bot.intent.word_tagger import WordTagger
from bot.lab import as_text, neural_eval
from bot.lab import tagger as lab
from bot.lab.neural_eval import ASKED, ONE_OF_TWO, RIGHT, WRONG
from bot.speech.sentence_encoder import MINILM, MPNET

SPENT = {"nv1-nv21": tuple(f"nv{n}" for n in range(1, 22)), "nv22-nv24": ("nv22", "nv23", "nv24")}
ENCODERS = (MINILM, MPNET)  # the baseline first


def held_out(meaning: MeaningModel) -> tuple[list[lab.Note], lab.Folds]:
    """The labelled notes, and a tagger learnt without each notes file in turn over `meaning`,
    as bot.lab.tagger learns them."""
    started = time.perf_counter()
    learning = lab.read_all(meaning)
    read = len(learning.notes) + len(learning.phrasings)
    print(f"  read {read} notes in {time.perf_counter() - started:.0f} s", flush=True)
    return learning.notes, lab.held_out(learning)


def routed(tagger: WordTagger, rows: list[neural_eval.Row]) -> list[as_text.Routed]:
    saved = router.word_tagger
    router.word_tagger = lambda: tagger
    try:
        return as_text.route(as_text.questions_of(rows, []))
    finally:
        router.word_tagger = saved


def table(results: dict[str, list[as_text.Routed]]) -> str:
    """Each tagger's shares by splits and kind, and how many notes only the first or only the
    second gets right (the same questions in the same order)."""
    names = list(results)
    together = list(zip(results[names[0]], results[names[1]], strict=True))
    assert all((a.split, a.kind, a.intents) == (b.split, b.kind, b.intents) for a, b in together)
    lines = [
        "right / wrong tool / asked again / one of two (doubles), % of questions, as text; "
        f"then notes right only with {names[0]}, only with {names[1]}"
    ]
    lines.append(f"{'splits':<10} {'kind':<7} {'n':>5}  " + "".join(f"{name:<28}" for name in names))
    for group, splits in SPENT.items():
        cells = {
            name: {c["kind"]: c for c in as_text.cells([r for r in got if r.split in splits], group)}
            for name, got in results.items()
        }
        for kind in (*neural_eval.KINDS, "all"):
            first = cells[names[0]]
            if kind not in first:
                continue
            shares = [
                "/".join(f"{c[kind][v]:.1%}" for v in (RIGHT, WRONG, ASKED, ONE_OF_TWO))
                for c in cells.values()
            ]
            pairs = [
                (a.verdict == RIGHT, b.verdict == RIGHT)
                for a, b in together
                if a.split in splits and kind in (a.kind, "all")
            ]
            only = f"{sum(a and not b for a, b in pairs)}, {sum(b and not a for a, b in pairs)}"
            row = f"{group:<10} {kind:<7} {first[kind]['notes']:>5}  " + "".join(f"{s:<28}" for s in shares)
            lines.append(row + only)
    return "\n".join(lines)


def by_writer(meaning: MeaningModel) -> dict[str, Counter[str]]:
    """Each notes file routed by a tagger and decider learnt without it, over `meaning`, as
    `python -m bot.lab.tagger --folds` does: how routing does on a writer it has not read."""
    notes, folds = held_out(meaning)
    totals: dict[str, Counter[str]] = {}
    for name, network in folds.networks.items():
        decider = lab.fit_decider(folds.rows[folds.files != name], folds.asked[folds.files != name])
        held = [note for note in notes if note.file == name]
        for kind, counts in lab.route_notes(held, WordTagger(network, meaning, decider)).items():
            totals.setdefault(kind, Counter()).update(counts)
    return totals


def writers_table(results: dict[str, dict[str, Counter[str]]]) -> str:
    lines = [
        "each writer's notes, routed by a tagger learnt without them: right / wrong / asked / one of two, %"
    ]
    lines.append(f"{'kind':<22} {'n':>5}  " + "".join(f"{name:<30}" for name in results))
    for kind in sorted(next(iter(results.values()))):
        shares = []
        for tally in results.values():
            counts = tally.get(kind, Counter())
            n = sum(counts.values())
            shares.append("/".join(f"{counts[v] / max(n, 1):.1%}" for v in (RIGHT, WRONG, ASKED, ONE_OF_TWO)))
        n = sum(next(iter(results.values()))[kind].values())
        lines.append(f"{kind:<22} {n:>5}  " + "".join(f"{cell:<30}" for cell in shares))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", action="store_true", help="instead, each notes file held out in turn")
    args = parser.parse_args()
    if args.writers:
        by_encoder = {}
        for model in ENCODERS:
            started = time.perf_counter()
            print(f"{model.name}: a tagger without each notes file in turn", flush=True)
            by_encoder[model.name] = by_writer(lab.load_meaning(model.name))
            print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        print(writers_table(by_encoder))
        return 0
    rows = neural_eval.load_rows(s for group in SPENT.values() for s in group)
    results = {}
    for model in ENCODERS:
        lab.load_meaning(model.name)
        tagger = word_tagger.word_tagger()
        if tagger is None:
            raise SystemExit(f"the tagger over {model.name} does not load (see the log line above)")
        started = time.perf_counter()
        results[model.name] = routed(tagger, rows)
        each = (time.perf_counter() - started) * 1000 / len(rows)
        print(f"{model.name}: routed {len(rows)} questions, {each:.0f} ms each", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
