"""The word tagger: which words of a note ask for something, and for which tool.

Each word is read in its note by the sentence encoder (its states after a middle and the last
layer), beside the meaning of the whole note and where the word stands, and a small network
(one hidden layer) says what the word is part of: a request for one of the four tools, small
talk, or an aside (a story, a filler, the context of another request). A tool is asked for when
its chance, summed over the note's words, comes to REQUEST_WORDS words' worth.

It learns from 7,000 players' notes by fourteen writers, every word labelled
(data/speech/notes/), and the single-request phrasings, by `python -m bot.lab.tagger`, which
writes its weights for each sentence encoder to data/speech/tagger-<encoder>.npz. Reading words
in context, it tells a request from an aside that mentions the same things better than a
classifier of cut-out parts did (docs/offline-engine.md, "The word tagger").
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot import paths
from bot.intent.cues import TOOLS, UNSURE
from bot.intent.meaning import MeaningModel, meaning_model
from bot.speech.sentence_encoder import Model

log = logging.getLogger(__name__)

NOTES = paths.SPEECH / "notes"  # players' notes with every word labelled (README.md there)
ASIDE, ANY_SMALLTALK = "aside", "smalltalk"
LABELS = (*TOOLS, ANY_SMALLTALK, ASIDE)
LONG_NOTE = 120  # words; a longer note counts as this long
# Chosen by routing four writers' notes held out from taggers that learnt from the other
# thirteen files (docs/offline-engine.md, "The word tagger"): a tool is asked for when its chance
# summed over the note's words reaches REQUEST_WORDS. Most notes ask one thing, so a second tool
# must reach SECOND_REQUEST_WORDS plus SECOND_PER_WORD for each word of the note: a ramble's aside
# says more words about a tool than a two-request note's short second question does.
REQUEST_WORDS = 1.5
SECOND_REQUEST_WORDS = 1.5
SECOND_PER_WORD = 0.05
MAX_GAP = 1  # a word tagged otherwise ("what's my uh rank") does not break a stretch
# The decider (`python -m bot.lab.tagger` learns it from the tagger's chances on notes it did not
# learn from, each writer's file held out in turn) says which tools a note asks for: those it
# gives at least ASKED_CHANCE, two at most (a third is rarer than a false second).
DECIDER_FEATURES = 16
ASKED_CHANCE = 0.5
MAX_REQUESTS = 2
CUE_SCORE_CAP = 8.0  # a cue score past this says nothing more


def weights_file(model: Model) -> Path:
    """Where the tagger that reads through `model` keeps its weights."""
    return paths.SPEECH / f"tagger-{model.name}.npz"


def feature_count(model: Model) -> int:
    """A word's numbers: its states after two layers, the note's meaning, where it stands, how
    long the note is."""
    return 3 * model.dimensions + 2


def features(words: Sequence[str], meaning: MeaningModel) -> np.ndarray:
    """One row per word, of feature_count(meaning.encoder.model) numbers."""
    states, note = meaning.words(tuple(words))
    count = len(words)
    place = np.arange(count, dtype=np.float32) / max(count - 1, 1)
    length = np.full(count, min(count, LONG_NOTE) / (LONG_NOTE / 2), np.float32)
    around = np.repeat(note[None], count, axis=0)
    return np.concatenate([states, around, place[:, None], length[:, None]], axis=1)


@dataclass(frozen=True)
class Request:
    tool: str
    words: float  # the decider's chance of it; without the decider, its chance summed over the words
    stretches: tuple[str, ...]  # the unbroken stretches of words likeliest for it, in order
    said: str  # the longest of them: the words that ask for it (its search, its ticket)
    start: int  # where that one starts in the note


@dataclass(frozen=True)
class Network:
    """Standardise, one hidden layer of rectifiers, softmax over LABELS."""

    mean: np.ndarray
    scale: np.ndarray
    hidden: np.ndarray
    hidden_bias: np.ndarray
    out: np.ndarray
    out_bias: np.ndarray

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        inner = np.maximum(((rows - self.mean) / self.scale) @ self.hidden + self.hidden_bias, 0.0)
        logits = inner @ self.out + self.out_bias
        logits -= logits.max(axis=-1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=-1, keepdims=True)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name), np.float32) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Decider:
    """Logistic regression over a tool's DECIDER_FEATURES numbers: the chance the note asks for it."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def chances(self, rows: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(((rows - self.mean) / self.scale) @ self.weights + self.bias)))

    def arrays(self) -> dict[str, np.ndarray]:
        fields = self.__dataclass_fields__
        return {f"decider_{name}": np.asarray(getattr(self, name), np.float32) for name in fields}


def decider_features(chances: np.ndarray, cue_pick: str, cue_scores: Mapping[str, float]) -> np.ndarray:
    """One row of DECIDER_FEATURES numbers per tool, in TOOLS order: how much of the note its
    words' chances give it, how sure and how unbroken they are, how long the note is and how much
    of it is aside or small talk, and what the cue words make of the whole note."""
    count = len(chances)
    mass = chances.sum(axis=0)
    likeliest = chances.argmax(axis=1)
    top = max(float(mass[: len(TOOLS)].max()), 1e-6)
    rows = []
    for k, tool in enumerate(TOOLS):
        other = max(float(mass[j]) for j in range(len(TOOLS)) if j != k)
        mine = likeliest == k
        rows.append(
            [
                mass[k],
                mass[k] / count,
                mass[k] / top,
                float(mass[k] >= top),
                chances[:, k].max(),
                mine.sum(),
                max((last - first + 1 for first, last in _runs(np.flatnonzero(mine), gap=0)), default=0),
                min(count, LONG_NOTE) / (LONG_NOTE / 2),
                mass[LABELS.index(ASIDE)] / count,
                mass[LABELS.index(ANY_SMALLTALK)] / count,
                float(cue_pick == tool),
                min(cue_scores.get(tool, 0.0), CUE_SCORE_CAP),
                other,
                np.log1p(mass[k]),
                float(cue_pick == UNSURE),
                float(cue_pick in TOOLS),
            ]
        )
    return np.array(rows, np.float32)


class WordTagger:
    def __init__(self, network: Network, meaning: MeaningModel, decider: Decider | None = None) -> None:
        self.network = network
        self.meaning = meaning
        self.decider = decider

    def probabilities(self, words: Sequence[str]) -> np.ndarray:
        """Each word's chance of every label in LABELS."""
        return self.network.probabilities(features(words, self.meaning))

    def requests(
        self, words: Sequence[str], cue_pick: str = "", cue_scores: Mapping[str, float] | None = None
    ) -> list[Request]:
        """The tools the note asks for, surest first. With the decider: each tool it gives at
        least ASKED_CHANCE, at most MAX_REQUESTS of them, judged from the words' chances and
        what the cue words make of the whole note (`cue_pick`, `cue_scores`). Without it: the
        surest tool if it reaches REQUEST_WORDS, and any other that reaches the second request's
        bar for a note this long."""
        chances = self.probabilities(words)
        if self.decider is not None:
            sure = self.decider.chances(decider_features(chances, cue_pick, cue_scores or {}))
            asked = [k for k in np.argsort(-sure, kind="stable") if sure[k] >= ASKED_CHANCE][:MAX_REQUESTS]
            return [_request(words, chances, int(k), float(sure[k])) for k in asked]
        mass = chances[:, : len(TOOLS)].sum(axis=0)
        tools = [k for k in range(len(TOOLS)) if mass[k] >= REQUEST_WORDS]
        found = [_request(words, chances, k, float(mass[k])) for k in tools]
        found.sort(key=lambda r: r.words, reverse=True)
        second = SECOND_REQUEST_WORDS + SECOND_PER_WORD * len(words)
        return [r for i, r in enumerate(found) if i == 0 or r.words >= second]


def _request(words: Sequence[str], chances: np.ndarray, k: int, sure: float) -> Request:
    """Tool k's request: the stretches of words likeliest for it, the longest of them said."""
    likeliest = chances.argmax(axis=1)
    runs = _runs([i for i, best in enumerate(likeliest) if best == k] or list(range(len(words))))
    stretches = [words[first : last + 1] for first, last in runs]
    longest = max(range(len(runs)), key=lambda r: len(stretches[r]))
    said = tuple(" ".join(stretch) for stretch in stretches)
    return Request(TOOLS[k], sure, said, said[longest], runs[longest][0])


def _runs(places: Sequence[int], gap: int = MAX_GAP) -> list[tuple[int, int]]:
    """Places in the note as stretches (first, last), broken where more than `gap` words come
    between."""
    runs: list[tuple[int, int]] = []
    for place in places:
        if runs and place - runs[-1][1] <= gap + 1:
            runs[-1] = (runs[-1][0], place)
        else:
            runs.append((place, place))
    return runs


def fingerprint(examples: Sequence[tuple[str, ...]], code: Sequence[str], model: Model) -> str:
    """What the weights were learnt from: the labelled examples, the encoder's weights, and the
    code that turns a word into numbers and labels it."""
    digest = hashlib.sha256(model.hashes["model.safetensors"].encode())
    for source in code:
        digest.update(source.encode())
    for example in examples:
        digest.update(("\t".join(example) + "\n").encode())
    return digest.hexdigest()


def save(path: Path, network: Network, decider: Decider, fingerprint: str) -> None:
    arrays = network.arrays() | decider.arrays()
    np.savez_compressed(path, labels=np.array(LABELS), fingerprint=np.array(fingerprint), **arrays)


def shipped_fingerprint(model: Model) -> str | None:
    path = weights_file(model)
    if not path.is_file():
        return None
    with np.load(path) as shipped:
        return str(shipped["fingerprint"])


def word_tagger() -> WordTagger | None:
    """The tagger; None without the meaning model it reads through, or without its weights (the
    router then judges a note's parts by its cue words alone)."""
    meaning = meaning_model()
    return None if meaning is None else _load(meaning, weights_file(meaning.encoder.model))


@functools.lru_cache(maxsize=1)  # a switch of meaning model lets the last one go
def _load(meaning: MeaningModel, path: Path) -> WordTagger | None:
    try:
        with np.load(path) as shipped:
            if tuple(str(label) for label in shipped["labels"]) != LABELS:
                raise ValueError(f"labels {list(shipped['labels'])} are not {list(LABELS)}")
            network = Network(*(shipped[name] for name in Network.__dataclass_fields__))
            decider = Decider(*(shipped[f"decider_{name}"] for name in Decider.__dataclass_fields__))
        hidden = network.hidden.shape[1]
        shapes = [network.mean.shape, network.scale.shape, network.hidden.shape]
        shapes += [network.hidden_bias.shape, network.out.shape, network.out_bias.shape]
        labels, count = len(LABELS), feature_count(meaning.encoder.model)
        fitting = [(count,), (count,), (count, hidden), (hidden,), (hidden, labels), (labels,)]
        if shapes != fitting:
            raise ValueError(f"weights {shapes} do not fit {count} features")
        decider_shapes = [decider.mean.shape, decider.scale.shape, decider.weights.shape, decider.bias.shape]
        if decider_shapes != [(DECIDER_FEATURES,)] * 3 + [()]:
            raise ValueError(f"decider weights {decider_shapes} do not fit {DECIDER_FEATURES} features")
        return WordTagger(network, meaning, decider)
    except Exception:
        log.warning("word tagger %s could not be loaded: cue words alone judge parts", path, exc_info=True)
        return None
