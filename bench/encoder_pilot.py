"""Would a larger sentence encoder read new writers' notes better? A pilot, not the router.

    python bench/encoder_pilot.py

A whole-note softmax regression over each note's sentence vector learns from the labelled
players' notes (bot/data/speech/notes/, short notes and rambles with one request) and is scored on
the spent neural splits' rows of the same kinds: nv1-nv21 (written while the router was built)
and nv22-nv24 (three later writers). The same regression over
all-MiniLM-L6-v2 (6 layers, 384 numbers) and over all-mpnet-base-v2 (12 layers, 768 numbers)
says how much the encoder alone moves the figures. A second table plugs each regression, learnt
from both kinds at once, into the router: where the router (bot/intent/router.py, as shipped)
answers a note with at most one tool, the regression names it (small talk included). The later
splits nv25-nv30 are never read here.

Both encoders are voxdesk's own (bot/speech/sentence_encoder.py), from their installed wheels.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot import paths
from bot.intent import router
from bot.lab import neural_eval
from bot.lab.neural_eval import ASKED, RIGHT, WRONG
from bot.speech import encoder_files, sentence_encoder

LABELS = ("get_player_stats", "search_manuals", "register_grievance", "get_grievance_status", "smalltalk")
KINDS = ("short", "ramble")
TESTS = {"nv1-nv21": tuple(f"nv{n}" for n in range(1, 22)), "nv22-nv24": ("nv22", "nv23", "nv24")}
PENALTY = 0.01  # L2 on standardised numbers; 0.001-0.03 gave the same figures within 0.4 points


class Encoder:
    """An encoder's sentence vector: MiniLM's as the router reads it (the words as said), MPNet's
    from the text, as the pilot read it."""

    def __init__(self, model: sentence_encoder.Model) -> None:
        try:
            self.encoder = sentence_encoder.encoder(encoder_files.read(model))
        except encoder_files.Unavailable as error:
            raise SystemExit(f"{error}: bash scripts/dev setup") from None

    def embed(self, text: str) -> np.ndarray:
        if self.encoder.model is sentence_encoder.MINILM:
            return self.encoder.word_states(text.split())[1]
        return self.encoder.sentence(text)


def _plain(text: str) -> str:
    return re.sub(r"[^a-z0-9' -]", " ", text.lower())


def training_notes() -> list[tuple[str, str, int]]:
    """(kind, words, label) of every labelled short note and ramble that asks one thing."""
    out = []
    for path in sorted((paths.SPEECH / "notes").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            note = json.loads(line)
            labels = {label for label, _ in note["segments"] if label != "aside"}
            if note["kind"] in KINDS and len(labels) == 1 and (label := labels.pop()) in LABELS:
                out.append(
                    (note["kind"], _plain(" ".join(t for _, t in note["segments"])), LABELS.index(label))
                )
    return out


def test_rows(splits: tuple[str, ...]) -> list[neural_eval.Row]:
    return [r for r in neural_eval.load_rows(splits) if r.kind in KINDS]


def as_routed(row: neural_eval.Row, label: int) -> tuple[str, str]:
    """(the router's verdict, the verdict with the regression's tool where the router answers
    with at most one)."""
    intents = router.route_all(row.text)
    shipped = neural_eval.verdict(row.intents, intents)
    if sum(i.is_tool for i in intents) >= 2:
        return shipped, shipped
    named = LABELS[label]
    said = router.Intent(named if named in router.TOOLS else router.GREETING)
    return shipped, neural_eval.verdict(row.intents, [said])


def fit(x: np.ndarray, y: np.ndarray, steps: int = 400, rate: float = 0.5):  # type: ignore[no-untyped-def]
    """Softmax regression on standardised numbers, by gradient descent."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    weights, bias, target = np.zeros((z.shape[1], len(LABELS))), np.zeros(len(LABELS)), np.eye(len(LABELS))[y]
    for _ in range(steps):
        logits = z @ weights + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (p - target) / len(y)
        weights -= rate * (z.T @ grad + PENALTY * weights)
        bias -= rate * grad.sum(0)
    return lambda rows: (((rows - mean) / scale) @ weights + bias).argmax(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    train = training_notes()
    tests = {name: test_rows(splits) for name, splits in TESTS.items()}
    counts = ", ".join(f"{sum(k == kind for k, _, _ in train)} {kind}" for kind in KINDS)
    print(f"right tool, a whole-note regression over the sentence vector learnt from one kind ({counts})")
    print(f"{'encoder':<18} {'kind':<7} " + " ".join(f"{name:>16}" for name in tests) + "   ms per note")
    with_router: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for model in (sentence_encoder.MINILM, sentence_encoder.MPNET):
        name, encoder = model.name, Encoder(model)
        started = time.perf_counter()
        x_train = np.array([encoder.embed(t) for _, t, _ in train])
        x_tests = {k: np.array([encoder.embed(_plain(r.text)) for r in v]) for k, v in tests.items()}
        each = (time.perf_counter() - started) * 1000 / (len(train) + sum(map(len, tests.values())))
        for kind in KINDS:
            mine = [i for i, (k, _, _) in enumerate(train) if k == kind]
            predict = fit(x_train[mine], np.array([train[i][2] for i in mine]))
            cells = []
            for test, rows in tests.items():
                chosen = [i for i, r in enumerate(rows) if r.kind == kind]
                wanted = np.array([LABELS.index(rows[i].intents[0]) for i in chosen])
                right = predict(x_tests[test][chosen]) == wanted
                cells.append(f"{right.mean():>9.1%} of {len(chosen):<4}")
            print(f"{name:<18} {kind:<7} " + " ".join(cells) + f"   {each:.0f}")
        predict = fit(x_train, np.array([y for _, _, y in train]))
        for test, rows in tests.items():
            for row, label in zip(rows, predict(x_tests[test]), strict=True):
                shipped, named = as_routed(row, int(label))
                with_router[name, test, row.kind].append(named)
                if name == "all-MiniLM-L6-v2":  # the router's own verdicts, once
                    with_router["as shipped", test, row.kind].append(shipped)
    print(
        f"\nwith the router, right / wrong / asked again %: as shipped, then each regression (learnt from "
        f"all {len(train)}) naming the tool"
    )
    for test in tests:
        for kind in KINDS:
            cells = []
            for name in ("as shipped", "all-MiniLM-L6-v2", "all-mpnet-base-v2"):
                got = with_router[name, test, kind]
                cells.append(
                    name + " " + "/".join(f"{got.count(v) / len(got):.0%}" for v in (RIGHT, WRONG, ASKED))
                )
            print(f"{test:<10} {kind:<7} " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
