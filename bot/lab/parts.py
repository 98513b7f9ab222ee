"""Teach the part classifier (bot/intent/part_classifier.py): `python -m bot.lab.parts`.

It learns from players' notes with every stretch labelled (data/speech/notes/*.jsonl, one note a
line: {"kind": ..., "segments": [[label, words], ...]}) and from the single-request phrasings
(bot/intent/word_model.training_examples). Each note is cut into parts as the router cuts it, and
each part takes the label of the words in it: a tool when at least PART_TOOL_WORDS of its words
ask for one (the most, when two do), else small talk or aside. With --folds it first reports,
per notes file, how routing does on that file's notes when the classifier learnt from the others.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.intent import cues, part_classifier, router, word_model
from bot.intent.cues import TOOLS
from bot.intent.meaning import MeaningModel, meaning_model
from bot.intent.part_classifier import ANY_SMALLTALK, ASIDE, LABELS, NOTES, WEIGHTS, PartClassifier, features
from bot.intent.word_model import training_examples
from bot.lab.neural_eval import ASKED, ONE_OF_TWO, RIGHT, SMALLTALK, WRONG, verdict
from bot.speech import confusions, domain_corpus, sentence_encoder
from bot.speech.domain_corpus import normalise

PART_TOOL_WORDS = 3
L2 = 1e-3
STEPS = 400
RATE = 0.05


@dataclass(frozen=True)
class Note:
    source: str  # the notes file, or "phrasings"
    kind: str
    words: tuple[str, ...]
    word_labels: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    @property
    def asks(self) -> tuple[str, ...]:
        """The tools the note asks for, in the order asked."""
        return tuple(dict.fromkeys(label for label in self.word_labels if label in TOOLS))


def _note(source: str, kind: str, segments: Iterable[tuple[str, str]]) -> Note:
    words: list[str] = []
    labels: list[str] = []
    for label, said in segments:
        if label not in LABELS:
            raise ValueError(f"{source}: unknown label {label!r}")
        seg = router.tokenize(normalise(said, keep_numbers=True))
        words += seg
        labels += [label] * len(seg)
    return Note(source, kind, tuple(words), tuple(labels))


def load_notes(folder: Path = NOTES) -> list[Note]:
    notes = []
    for path in sorted(folder.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                notes.append(_note(f"{path.name}:{number}", row["kind"], row["segments"]))
    return [n for n in notes if n.words]


def phrasing_notes() -> list[Note]:
    """The phrasings and the domain corpus's sentences, each a note of one request."""
    out = []
    for text, label in training_examples():
        words = tuple(router.tokenize(text))
        out.append(Note("phrasings", "short", words, (label,) * len(words)))
    return out


def training_files(folder: Path = NOTES) -> list[tuple[str, ...]]:
    """The raw examples the weights depend on, for the fingerprint."""
    rows: list[tuple[str, ...]] = [(label, text) for text, label in training_examples()]
    for path in sorted(folder.glob("*.jsonl")):
        rows.append((path.name, path.read_text(encoding="utf-8")))
    return rows


def feature_code() -> list[str]:
    """The source of everything that turns a part into the classifier's numbers or labels it
    for training: a change to any of these files calls for new weights."""
    modules = (cues, router, part_classifier, word_model, confusions, domain_corpus, sentence_encoder)
    files = [Path(module.__file__) for module in modules] + [Path(__file__)]
    return [path.read_text(encoding="utf-8").replace("\r\n", "\n") for path in files]


def current_fingerprint(folder: Path = NOTES) -> str:
    return part_classifier.fingerprint(training_files(folder), feature_code())


def _align(part: list[str], note: Note, start: int) -> tuple[list[str], int]:
    """The labels of `part`'s words, found in order in the note from `start` (a part may skip
    a joiner the router dropped)."""
    labels = []
    at = start
    for word in part:
        while at < len(note.words) and note.words[at] != word:
            at += 1
        labels.append(note.word_labels[at] if at < len(note.words) else ASIDE)
        at += 1
    return labels, at


def part_label(word_labels: list[str]) -> str:
    counts = Counter(word_labels)
    tools = [(counts[t], t) for t in TOOLS if counts[t] >= min(PART_TOOL_WORDS, len(word_labels))]
    if tools:
        return max(tools)[1]
    if counts[ANY_SMALLTALK] > counts[ASIDE] or counts[ANY_SMALLTALK] >= 2:
        return ANY_SMALLTALK
    return ASIDE


def featurise(
    notes: list[Note], vector: Callable[[str], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per part of every note: features, label index, and the note's index."""
    blocks, labels, owners = [], [], []
    for n, note in enumerate(notes):
        pieces = router.parts(list(note.words))
        routed = [router.part_cues(piece) for piece in pieces]
        blocks.append(features([i.said for i, _ in routed], note.text, [c for _, c in routed], vector))
        at = 0
        for piece in pieces:
            word_labels, at = _align(piece, note, at)
            labels.append(LABELS.index(part_label(word_labels)))
            owners.append(n)
    return np.concatenate(blocks), np.array(labels), np.array(owners)


def train(
    x: np.ndarray, y: np.ndarray, l2: float = L2, steps: int = STEPS, balanced: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression with an L2 penalty, by Adam on the whole set; each label weighed by
    the inverse of how often it occurs, so asides (the most common) do not crowd out requests."""
    count = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    balance = np.where(count > 0, len(y) / (len(LABELS) * np.maximum(count, 1)), 0.0)[y]
    balance = balance / balance.mean() if balanced else np.ones(len(y))
    target = np.eye(len(LABELS))[y]
    w = np.zeros((x.shape[1], len(LABELS)))
    b = np.zeros(len(LABELS))
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for step in range(1, steps + 1):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        error = (p - target) * balance[:, None] / len(y)
        for k, (param, grad) in enumerate(((w, x.T @ error + l2 * w), (b, error.sum(axis=0)))):
            m, v = moments[2 * k], moments[2 * k + 1]
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            param -= RATE * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return w.astype(np.float32), b.astype(np.float32)


def route_notes(notes: list[Note], classifier: PartClassifier | None) -> dict[str, Counter[str]]:
    """How the router does on each kind of note with this classifier (None: cue words alone)."""
    tally: dict[str, Counter[str]] = {}
    saved = router.part_classifier
    router.part_classifier = lambda: classifier
    try:
        for note in notes:
            got = router.route_all(note.text)
            tally.setdefault(note.kind, Counter())[verdict(note.asks or (SMALLTALK,), got)] += 1
    finally:
        router.part_classifier = saved
    return tally


def _report(label: str, tally: dict[str, Counter[str]]) -> None:
    cells = []
    for kind, counts in sorted(tally.items()):
        n = sum(counts.values())
        cells.append(
            f"{kind} {n}: right {counts[RIGHT] / n:.0%}, wrong {counts[WRONG] / n:.0%}, "
            f"asked {counts[ASKED] / n:.0%}, one of two {counts[ONE_OF_TWO] / n:.0%}"
        )
    print(f"  {label}: " + "; ".join(cells))


def folds(
    notes: list[Note], phrasings: list[Note], meaning: MeaningModel, vector: Callable[[str], np.ndarray]
) -> None:
    """Each notes file routed by a classifier that learnt from the other files and the
    phrasings, beside the cue-only part rules: how it does on a writer's notes it has not read."""
    for path in sorted(NOTES.glob("*.jsonl")):
        held = [note for note in notes if note.source.startswith(path.name + ":")]
        learnt = [note for note in notes if not note.source.startswith(path.name + ":")]
        x, y, _ = featurise(learnt + phrasings, vector)
        w, b = train(x, y)
        print(f"{path.name} ({len(held)} notes):")
        _report("cue-only part rules", route_notes(held, None))
        _report("part classifier", route_notes(held, PartClassifier(w, b, meaning)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    parser.add_argument("--folds", action="store_true", help="first report each file held out")
    args = parser.parse_args(argv)
    meaning = meaning_model()
    if meaning is None:
        raise SystemExit("the meaning model is not installed (see README: Offline engine)")
    started = time.perf_counter()
    vector = functools.cache(meaning.vector)  # each part is read again in every fold
    notes, phrasings = load_notes(), phrasing_notes()
    if args.folds:
        folds(notes, phrasings, meaning, vector)
    notes += phrasings
    x, y, _ = featurise(notes, vector)
    print(f"{len(notes)} notes, {len(y)} parts: {dict(Counter(LABELS[k] for k in y))}")
    w, b = train(x, y)
    part_classifier.save(args.out, w, b, current_fingerprint())
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
