"""Teach the word tagger (bot/intent/word_tagger.py): `python -m bot.lab.tagger`.

It learns from players' notes with every stretch labelled (data/speech/notes/*.jsonl, one note a
line: {"kind": ..., "segments": [[label, words], ...]}), each word taking its stretch's label, and
from the single-request phrasings (bot/intent/word_model.training_examples), every word labelled
with the phrasing's request. Then its decider (which tools a note asks for) learns from the
chances that taggers which did not learn from a notes file give that file's notes, each file held
out in turn. With --folds it also reports, per notes file, how routing does on that file's notes
with a held-out tagger and decider. Each sentence encoder has its own tagger (--encoder, the one
`auto` would use by default): about 13 minutes on 2 cores over all-MiniLM-L6-v2 (more with
--folds), 23 over all-mpnet-base-v2, with nothing else running. The encoder reads 8,700 notes,
and fifteen taggers learn.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.intent import cues, router, word_model, word_tagger
from bot.intent import meaning as meaning_setting
from bot.intent.cues import TOOLS
from bot.intent.meaning import MeaningModel, meaning_model
from bot.intent.word_model import training_examples
from bot.intent.word_tagger import (
    DECIDER_FEATURES,
    LABELS,
    NOTES,
    Decider,
    Network,
    WordTagger,
    decider_features,
    features,
    weights_file,
)
from bot.lab.neural_eval import ASKED, ONE_OF_TWO, RIGHT, SMALLTALK, WRONG, verdict
from bot.speech import confusions, domain_corpus, sentence_encoder
from bot.speech.domain_corpus import normalise
from bot.speech.sentence_encoder import MODELS, Model

HIDDEN = 256
EPOCHS = 6
BATCH = 256
RATE = 1e-3
L2 = 1e-4
DROPOUT = 0.3
SEED = 0  # the same notes give the same weights
DECIDER_STEPS = 3000
DECIDER_RATE = 0.5
DECIDER_L2 = 1e-3


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
    def file(self) -> str:
        return self.source.split(":")[0]

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
    """The source of everything that turns a word into the tagger's numbers or labels it
    for training: a change to any of these files calls for new weights."""
    modules = (cues, router, word_tagger, word_model, confusions, domain_corpus, sentence_encoder)
    files = [Path(module.__file__) for module in modules] + [Path(__file__)]
    return [path.read_text(encoding="utf-8").replace("\r\n", "\n") for path in files]


def current_fingerprint(model: Model, folder: Path = NOTES) -> str:
    return word_tagger.fingerprint(training_files(folder), feature_code(), model)


class Remembering(MeaningModel):
    """The meaning model remembering every note it reads: the lab routes each held-out note again
    after reading it once for its features (about 60 KB a note over all-MiniLM-L6-v2, 500 MB for
    all of them; twice that over all-mpnet-base-v2)."""

    def __init__(self, model: MeaningModel) -> None:
        super().__init__(model.encoder)
        self._read: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def words(self, words: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        if words not in self._read:
            self._read[words] = self.encoder.word_states(list(words))
        return self._read[words]


def featurise(notes: list[Note], meaning: MeaningModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per word of every note: features, label index, and the note's index."""
    rows = [features(note.words, meaning) for note in notes]
    labels = [LABELS.index(label) for note in notes for label in note.word_labels]
    owners = [n for n, note in enumerate(notes) for _ in note.words]
    return np.concatenate(rows), np.array(labels), np.array(owners)


@dataclass(frozen=True)
class Learning:
    """What every tagger learns from: the labelled notes (phrasings after them) read as rows."""

    notes: list[Note]  # the players' notes, which the decider also learns from
    phrasings: list[Note]
    x: np.ndarray  # one row per word, players' notes then phrasings
    y: np.ndarray  # each word's label index
    owner: np.ndarray  # each word's note, an index into notes + phrasings
    source: np.ndarray  # each word's notes file, or "phrasings"


def read_all(meaning: MeaningModel, folder: Path = NOTES) -> Learning:
    notes, phrasings = load_notes(folder), phrasing_notes()
    x, y, owner = featurise(notes + phrasings, meaning)
    source = np.array([note.file for note in notes + phrasings])[owner]
    return Learning(notes, phrasings, x, y, owner, source)


def load_meaning(encoder: str | None) -> Remembering:
    """The named encoder (None: the one `auto` picks), remembering what it reads."""
    meaning_setting.use(encoder or meaning_setting.AUTO)
    loaded = meaning_model()
    if loaded is None:
        raise SystemExit(f"the meaning model is not installed: {meaning_setting.describe()}")
    return Remembering(loaded)


def train(x: np.ndarray, y: np.ndarray, seed: int = SEED) -> Network:
    """One hidden layer of rectifiers with dropout, softmax over LABELS, by Adam on minibatches;
    each label weighed by the inverse of how often it occurs, so asides (the most common) do not
    crowd out requests."""
    rng = np.random.default_rng(seed)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    x = ((x - mean) / scale).astype(np.float32)
    count = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    weight = len(y) / (len(LABELS) * np.maximum(count, 1))
    weight = (weight / weight[y].mean()).astype(np.float32)
    params = [
        rng.normal(0, np.sqrt(2 / x.shape[1]), (x.shape[1], HIDDEN)).astype(np.float32),
        np.zeros(HIDDEN, np.float32),
        rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, len(LABELS))).astype(np.float32),
        np.zeros(len(LABELS), np.float32),
    ]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(y))
        for start in range(0, len(y), BATCH):
            batch = order[start : start + BATCH]
            kept = (rng.random((len(batch), HIDDEN)) > DROPOUT) / (1 - DROPOUT)
            inner = np.maximum(x[batch] @ params[0] + params[1], 0) * kept
            logits = inner @ params[2] + params[3]
            logits -= logits.max(axis=1, keepdims=True)
            error = np.exp(logits)
            error /= error.sum(axis=1, keepdims=True)
            error[np.arange(len(batch)), y[batch]] -= 1
            error *= (weight[y[batch]] / len(batch))[:, None]
            back = (error @ params[2].T) * (inner > 0) * kept
            grads = [
                x[batch].T @ back + L2 * params[0],
                back.sum(0),
                inner.T @ error + L2 * params[2],
                error.sum(0),
            ]
            step += 1
            for k, grad in enumerate(grads):
                first[k] = 0.9 * first[k] + 0.1 * grad
                second[k] = 0.999 * second[k] + 0.001 * grad * grad
                unbiased = np.sqrt(second[k] / (1 - 0.999**step)) + 1e-8
                params[k] -= RATE * (first[k] / (1 - 0.9**step)) / unbiased
    return Network(mean.astype(np.float32), scale.astype(np.float32), *params)


def fit_decider(rows: np.ndarray, asked: np.ndarray) -> Decider:
    """Logistic regression (standardised features, L2, full-batch gradient descent) of whether a
    note asks for a tool, from the tool's decider features."""
    mean, scale = rows.mean(axis=0), rows.std(axis=0) + 1e-6
    z = (rows - mean) / scale
    weights, bias = np.zeros(z.shape[1]), 0.0
    for _ in range(DECIDER_STEPS):
        error = 1.0 / (1.0 + np.exp(-(z @ weights + bias))) - asked
        weights -= DECIDER_RATE * (z.T @ error / len(asked) + DECIDER_L2 * weights)
        bias -= DECIDER_RATE * float(error.mean())
    return Decider(mean, scale, weights, np.array(bias))


@dataclass
class Folds:
    """Each notes file's tagger learnt without it, and the decider features of every note as
    that tagger reads it: the decider learns from chances on notes the tagger has not seen."""

    networks: dict[str, Network]
    rows: np.ndarray  # len(TOOLS) rows per note, in note order
    asked: np.ndarray
    files: np.ndarray  # each row's notes file


def held_out(learning: Learning) -> Folds:
    """A tagger learnt without each notes file in turn, and the decider's rows for that file."""
    notes, x, y, owner, source = learning.notes, learning.x, learning.y, learning.owner, learning.source
    networks, rows = {}, [np.empty((0, DECIDER_FEATURES))] * len(notes)
    for name in sorted({note.file for note in notes}):
        network = networks[name] = train(x[source != name], y[source != name])
        for n, note in enumerate(notes):
            if note.file == name:
                cue = router.route(note.text)
                rows[n] = decider_features(network.probabilities(x[owner == n]), cue.name, cue.scores)
        print(f"  {name}: tagger learnt without it", flush=True)
    asked = [float(tool in note.asks) for note in notes for tool in TOOLS]
    files = [note.file for note in notes for _ in TOOLS]
    return Folds(networks, np.concatenate(rows), np.array(asked), np.array(files))


def route_notes(notes: list[Note], tagger: WordTagger | None) -> dict[str, Counter[str]]:
    """How the router does on each kind of note with this tagger (None: cue words alone)."""
    tally: dict[str, Counter[str]] = {}
    saved = router.word_tagger
    router.word_tagger = lambda: tagger
    try:
        for note in notes:
            got = router.route_all(note.text)
            tally.setdefault(note.kind, Counter())[verdict(note.asks or (SMALLTALK,), got)] += 1
    finally:
        router.word_tagger = saved
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


def report_folds(notes: list[Note], folds: Folds, meaning: MeaningModel) -> None:
    """Each notes file routed by its held-out tagger and a decider that learnt from the other
    files, beside the cue-only part rules: how routing does on a writer's notes it has not read."""
    totals: dict[str, Counter[str]] = {}
    for name, network in folds.networks.items():
        held = [note for note in notes if note.file == name]
        decider = fit_decider(folds.rows[folds.files != name], folds.asked[folds.files != name])
        tally = route_notes(held, WordTagger(network, meaning, decider))
        print(f"{name} ({len(held)} notes):")
        _report("cue-only part rules", route_notes(held, None))
        _report("word tagger and decider", tally)
        for kind, counts in tally.items():
            totals.setdefault(kind, Counter()).update(counts)
    _report("all files held out in turn", totals)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=[model.name for model in MODELS], help="default: auto's")
    parser.add_argument("--out", type=Path, help="default: the shipped weights for the encoder")
    parser.add_argument("--folds", action="store_true", help="also report each file held out")
    args = parser.parse_args(argv)
    meaning = load_meaning(args.encoder)
    model = meaning.encoder.model
    # Taken before learning: an edit to the code or notes while it runs leaves these weights
    # marked as learnt from what was read at the start, so the suite asks for a new learning.
    fingerprint = current_fingerprint(model)
    out = args.out or weights_file(model)
    print(f"learning the word tagger over {model.name}")
    started = time.perf_counter()
    learning = read_all(meaning)
    labels = dict(Counter(LABELS[k] for k in learning.y))
    print(f"{len(learning.notes) + len(learning.phrasings)} notes, {len(learning.y)} words: {labels}")
    folds = held_out(learning)
    if args.folds:
        report_folds(learning.notes, folds, meaning)
    network, decider = train(learning.x, learning.y), fit_decider(folds.rows, folds.asked)
    word_tagger.save(out, network, decider, fingerprint)
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
