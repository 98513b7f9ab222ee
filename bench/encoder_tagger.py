"""Would the word tagger read new writers' notes better over all-mpnet-base-v2? A measurement,
not the router.

    python bench/encoder_tagger.py --mpnet FOLDER [--keep FILE | --writers]

A word tagger and its decider learn exactly as `python -m bot.lab.tagger` teaches the shipped ones
(the same labelled notes and phrasings, network, seed, and fifteen taggers each learnt without one
notes file for the decider to learn from), but read every word through all-mpnet-base-v2 (its
states after layers 8 and 12 of 12, 768 numbers each, beside the note's meaning) instead of
all-MiniLM-L6-v2 (after layers 4 and 6 of 6, 384 each). The router then routes the spent neural
splits' questions as text with each tagger in turn, scored as `python -m bot eval --as-text`
scores them: the shipped tagger is the baseline in the same run. Nothing else in the router
changes. The blind splits nv25-nv27 are never read.

all-mpnet-base-v2's files and where they come from: bench/mpnet.py. --keep saves the
learnt tagger (about 30 minutes on 2 cores) and reuses it when the file is already there.
--writers instead holds each notes file out in turn and routes it with a tagger and decider learnt
without it, over each encoder (`python -m bot.lab.tagger --folds`'s figures; 35 minutes).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpnet import MPNet

from bot.intent import router, word_tagger
from bot.intent.meaning import MeaningModel, meaning_model
from bot.intent.word_tagger import LABELS, Decider, Network, WordTagger
from bot.lab import as_text, neural_eval
from bot.lab import tagger as lab
from bot.lab.neural_eval import ASKED, ONE_OF_TWO, RIGHT, WRONG

SPENT = {"nv1-nv21": tuple(f"nv{n}" for n in range(1, 22)), "nv22-nv24": ("nv22", "nv23", "nv24")}


def held_out(meaning: MeaningModel) -> tuple[list[lab.Note], np.ndarray, np.ndarray, lab.Folds]:
    """The labelled notes, every word's features and labels over `meaning`, and a tagger learnt
    without each notes file in turn, as bot.lab.tagger learns them."""
    notes, phrasings = lab.load_notes(), lab.phrasing_notes()
    started = time.perf_counter()
    x, y, owner = lab.featurise(notes + phrasings, meaning)
    print(f"  read {len(notes) + len(phrasings)} notes in {time.perf_counter() - started:.0f} s", flush=True)
    source = np.array([note.file for note in notes + phrasings])[owner]
    return notes, x, y, lab.held_out(notes, x, owner, y, source)


def learn(meaning: MeaningModel) -> WordTagger:
    """A tagger and decider learnt as bot.lab.tagger learns the shipped ones, over `meaning`."""
    _, x, y, folds = held_out(meaning)
    return WordTagger(lab.train(x, y), meaning, lab.fit_decider(folds.rows, folds.asked))


def load(path: Path, meaning: MeaningModel) -> WordTagger:
    with np.load(path) as kept:
        if tuple(str(label) for label in kept["labels"]) != LABELS:
            raise SystemExit(f"{path}: labels are not {LABELS}")
        network = Network(*(kept[name] for name in Network.__dataclass_fields__))
        decider = Decider(*(kept[f"decider_{name}"] for name in Decider.__dataclass_fields__))
    return WordTagger(network, meaning, decider)


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
    notes, _, _, folds = held_out(meaning)
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
    parser.add_argument("--mpnet", type=Path, required=True, help="all-mpnet-base-v2's folder")
    parser.add_argument("--keep", type=Path, help="save the learnt tagger here, or reuse it")
    parser.add_argument("--writers", action="store_true", help="instead, each notes file held out in turn")
    args = parser.parse_args()
    shipped = word_tagger.word_tagger()
    minilm = meaning_model()
    if shipped is None or minilm is None:
        raise SystemExit("the shipped tagger or all-MiniLM-L6-v2 is missing: bash scripts/dev setup")
    mpnet = lab.Remembering(MeaningModel(MPNet(args.mpnet)))  # type: ignore[arg-type]
    if args.writers:
        by_encoder = {}
        for name, meaning in (
            ("all-MiniLM-L6-v2 (shipped)", lab.Remembering(minilm)),
            ("all-mpnet-base-v2", mpnet),
        ):
            started = time.perf_counter()
            print(f"{name}: a tagger without each notes file in turn", flush=True)
            by_encoder[name] = by_writer(meaning)
            print(f"  {time.perf_counter() - started:.0f} s", flush=True)
        print(writers_table(by_encoder))
        return 0
    if args.keep and args.keep.is_file():
        tagger = load(args.keep, mpnet)
        print(f"tagger over all-mpnet-base-v2 read from {args.keep}")
    else:
        started = time.perf_counter()
        print("learning a tagger over all-mpnet-base-v2", flush=True)
        tagger = learn(mpnet)
        print(f"  learnt in {time.perf_counter() - started:.0f} s", flush=True)
        if args.keep:
            word_tagger.save(args.keep, tagger.network, tagger.decider, "all-mpnet-base-v2")  # type: ignore[arg-type]
    rows = neural_eval.load_rows(s for group in SPENT.values() for s in group)
    results = {}
    for name, chosen in (("all-MiniLM-L6-v2 (shipped)", shipped), ("all-mpnet-base-v2", tagger)):
        started = time.perf_counter()
        results[name] = routed(chosen, rows)
        each = (time.perf_counter() - started) * 1000 / len(rows)
        print(f"{name}: routed {len(rows)} questions, {each:.0f} ms each", flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
