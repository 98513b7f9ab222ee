"""The word tagger: which words of a note ask for something, and for which tool.

Each word is read in its note by the sentence encoder (its states after a middle and the last
layer), beside the meaning of the whole note and where the word stands, and a small network
(one hidden layer) says what the word is part of: a request for one of the four tools, small
talk, or an aside (a story, a filler, the context of another request). A tool is asked for when
its chance, summed over the note's words, comes to REQUEST_WORDS words' worth.

It learns from 7,000 players' notes by fourteen writers, every word labelled
(data/speech/notes/), and the single-request phrasings, by `python -m bot.lab.tagger`, which
writes its weights to data/speech/tagger.npz. Reading words in context, it tells a request from
an aside that mentions the same things better than a classifier of cut-out parts did
(docs/offline-engine.md, "The word tagger").
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot import paths
from bot.intent.cues import TOOLS
from bot.intent.meaning import MeaningModel, meaning_model
from bot.speech import sentence_encoder

log = logging.getLogger(__name__)

WEIGHTS = paths.SPEECH / "tagger.npz"
NOTES = paths.SPEECH / "notes"  # players' notes with every word labelled (README.md there)
ASIDE, ANY_SMALLTALK = "aside", "smalltalk"
LABELS = (*TOOLS, ANY_SMALLTALK, ASIDE)
# A word's numbers: its states after two layers, the note's meaning, where it stands, how long
# the note is.
FEATURES = 3 * sentence_encoder.DIMENSIONS + 2
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


def features(words: Sequence[str], meaning: MeaningModel) -> np.ndarray:
    """One row of FEATURES numbers per word."""
    states, note = meaning.words(tuple(words))
    count = len(words)
    place = np.arange(count, dtype=np.float32) / max(count - 1, 1)
    length = np.full(count, min(count, LONG_NOTE) / (LONG_NOTE / 2), np.float32)
    around = np.repeat(note[None], count, axis=0)
    return np.concatenate([states, around, place[:, None], length[:, None]], axis=1)


@dataclass(frozen=True)
class Request:
    tool: str
    words: float  # the tool's chance summed over the note's words
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


class WordTagger:
    def __init__(self, network: Network, meaning: MeaningModel) -> None:
        self.network = network
        self.meaning = meaning

    def probabilities(self, words: Sequence[str]) -> np.ndarray:
        """Each word's chance of every label in LABELS."""
        return self.network.probabilities(features(words, self.meaning))

    def requests(self, words: Sequence[str]) -> list[Request]:
        """The tools the note asks for, surest first: the surest if it reaches REQUEST_WORDS,
        and any other that reaches the second request's bar for a note this long."""
        chances = self.probabilities(words)
        likeliest = chances.argmax(axis=1)
        found = []
        for k, tool in enumerate(TOOLS):
            mass = float(chances[:, k].sum())
            if mass >= REQUEST_WORDS:
                runs = _runs([i for i, best in enumerate(likeliest) if best == k] or list(range(len(words))))
                stretches = [words[first : last + 1] for first, last in runs]
                longest = max(range(len(runs)), key=lambda r: len(stretches[r]))
                said = tuple(" ".join(stretch) for stretch in stretches)
                found.append(Request(tool, mass, said, said[longest], runs[longest][0]))
        found.sort(key=lambda r: r.words, reverse=True)
        second = SECOND_REQUEST_WORDS + SECOND_PER_WORD * len(words)
        return [r for i, r in enumerate(found) if i == 0 or r.words >= second]


def _runs(places: list[int]) -> list[tuple[int, int]]:
    """Places in the note as stretches (first, last), broken where more than MAX_GAP words come
    between."""
    runs: list[tuple[int, int]] = []
    for place in places:
        if runs and place - runs[-1][1] <= MAX_GAP + 1:
            runs[-1] = (runs[-1][0], place)
        else:
            runs.append((place, place))
    return runs


def fingerprint(examples: Sequence[tuple[str, ...]], code: Sequence[str]) -> str:
    """What the weights were learnt from: the labelled examples, the encoder's weights, and the
    code that turns a word into numbers and labels it."""
    digest = hashlib.sha256(sentence_encoder.HASHES["model.safetensors"].encode())
    for source in code:
        digest.update(source.encode())
    for example in examples:
        digest.update(("\t".join(example) + "\n").encode())
    return digest.hexdigest()


def save(path: Path, network: Network, fingerprint: str) -> None:
    np.savez_compressed(path, labels=np.array(LABELS), fingerprint=np.array(fingerprint), **network.arrays())


def shipped_fingerprint(path: Path = WEIGHTS) -> str | None:
    if not path.is_file():
        return None
    with np.load(path) as shipped:
        return str(shipped["fingerprint"])


def word_tagger() -> WordTagger | None:
    """The tagger; None without the meaning model it reads through, or without its weights (the
    router then judges a note's parts by its cue words alone)."""
    meaning = meaning_model()
    return None if meaning is None else _load(meaning, WEIGHTS)


@functools.lru_cache(maxsize=1)  # a switch of meaning model lets the last one go
def _load(meaning: MeaningModel, path: Path) -> WordTagger | None:
    try:
        with np.load(path) as shipped:
            if tuple(str(label) for label in shipped["labels"]) != LABELS:
                raise ValueError(f"labels {list(shipped['labels'])} are not {list(LABELS)}")
            network = Network(*(shipped[name] for name in Network.__dataclass_fields__))
        hidden = network.hidden.shape[1]
        shapes = [network.mean.shape, network.scale.shape, network.hidden.shape]
        shapes += [network.hidden_bias.shape, network.out.shape, network.out_bias.shape]
        labels = len(LABELS)
        fitting = [(FEATURES,), (FEATURES,), (FEATURES, hidden), (hidden,), (hidden, labels), (labels,)]
        if shapes != fitting:
            raise ValueError(f"weights {shapes} do not fit {FEATURES} features")
        return WordTagger(network, meaning)
    except Exception:
        log.warning("word tagger %s could not be loaded: cue words alone judge parts", path, exc_info=True)
        return None
