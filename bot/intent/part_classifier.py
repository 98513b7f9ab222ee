"""The part classifier: which stretches of a note ask for something, and for which tool.

The router cuts a note into parts (router.parts). Each part is described by its meaning (the
sentence encoder's vector), the meaning of the whole note around it, and what the cue words make
of it on their own, and a softmax regression says what the part is: a request for one of the
four tools, small talk, or an aside (a story, a filler, the context of another request).

It learns from a few thousand players' notes with every stretch labelled
(data/speech/notes/*.jsonl) and the single-request phrasings, by `python -m bot.lab.parts`,
which writes its weights to data/speech/parts.npz. It replaces the hand-set rules that judged a
part by how it starts and how close it comes to one phrasing, which did not carry over to notes
nobody had read (docs/offline-engine.md).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot import paths
from bot.intent.cues import ADDING_JOINERS, LOSS_WORDS, SMALLTALK, TOOLS, UNSURE
from bot.intent.meaning import MeaningModel, meaning_model
from bot.speech import sentence_encoder

log = logging.getLogger(__name__)

WEIGHTS = paths.SPEECH / "parts.npz"
NOTES = paths.SPEECH / "notes"  # players' notes with every stretch labelled (README.md there)
ASIDE, ANY_SMALLTALK = "aside", "smalltalk"
LABELS = (*TOOLS, ANY_SMALLTALK, ASIDE)
# What the cue words alone route a part to: a tool, small talk of any kind, or unsure.
CUE_KINDS = (*TOOLS, ANY_SMALLTALK, UNSURE)
# The numbers describing a part: its meaning and the note's, the cue kind, the tools' cue scores
# and eleven flags (features()).
FEATURES = 2 * sentence_encoder.DIMENSIONS + len(CUE_KINDS) + len(TOOLS) + 11
CUE_SCALE = 10.0  # cue scores run from 0 to about 10: scaled to sit beside unit-length vectors
WORDS_SCALE = 20.0
# A part about someone else ("my cousin got banned", "he is filing a complaint") is seldom the
# speaker's own request.
OTHER_PEOPLE = re.compile(
    r"(\w+ ){0,3}?(he|she|they|his|her|their"
    r"|my (friend|cousin|brother|sister|mate|buddy|son|daughter|kid)s?)\b"
)


@dataclass(frozen=True)
class PartCues:
    """What the cue router made of one part on its own (router.route with guess off)."""

    kind: str  # one of CUE_KINDS
    clear: bool  # the cues' winner is clear enough to be a request of a several-request note
    starts_like_request: bool  # "what's", "can you", "i want", "tell me" within its first words
    scores: dict[str, float]


def features(
    parts: Sequence[str], note: str, cues: Sequence[PartCues], meaning: Callable[[str], np.ndarray]
) -> np.ndarray:
    """One row of numbers per part, for the classifier: the part's meaning and the note's, what
    the cue words make of it, where it stands in the note, and whether a joiner that adds a
    request ("and also", "oh and") comes right before it."""
    note_vector = meaning(note)
    note_words = len(note.split())
    rows = []
    for i, (part, part_cues) in enumerate(zip(parts, cues, strict=True)):
        words = part.split()
        kind = np.zeros(len(CUE_KINDS), np.float32)
        kind[CUE_KINDS.index(part_cues.kind)] = 1.0
        tool_scores = [max(0.0, part_cues.scores.get(tool, 0.0)) / CUE_SCALE for tool in TOOLS]
        talk = max((part_cues.scores.get(k, 0.0) for k in SMALLTALK), default=0.0)
        flags = [
            float(part_cues.clear),
            float(part_cues.starts_like_request),
            float(i == 0),
            float(i == len(parts) - 1),
            min(len(words), 60) / WORDS_SCALE,
            max(0.0, talk) / CUE_SCALE,
            float(i > 0 and any(f"{joiner} {part}" in note for joiner in ADDING_JOINERS)),
            min(note_words, 120) / (3 * WORDS_SCALE),
            min(len(parts), 10) / 5,
            float(bool(LOSS_WORDS & set(words))),
            float(bool(OTHER_PEOPLE.match(part))),
        ]
        rows.append(
            np.concatenate([meaning(part), note_vector, kind, np.array(tool_scores + flags, np.float32)])
        )
    return np.stack(rows)


def fingerprint(examples: Sequence[tuple[str, ...]], code: Sequence[str]) -> str:
    """What the weights were learnt from: the labelled examples, the encoder's weights, and the
    code that turns a part into numbers (the cue data, the router's functions, `features`)."""
    digest = hashlib.sha256(sentence_encoder.HASHES["model.safetensors"].encode())
    for source in code:
        digest.update(source.encode())
    for example in examples:
        digest.update(("\t".join(example) + "\n").encode())
    return digest.hexdigest()


class PartClassifier:
    def __init__(self, weights: np.ndarray, bias: np.ndarray, meaning: MeaningModel) -> None:
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.meaning = meaning

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Each row's chance of every label in LABELS."""
        logits = features @ self.weights + self.bias
        logits -= logits.max(axis=-1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=-1, keepdims=True)

    def label(self, parts: Sequence[str], note: str, cues: Sequence[PartCues]) -> list[tuple[str, float]]:
        """Each part's most likely label and its probability."""
        chances = self.probabilities(features(parts, note, cues, self.meaning.vector))
        best = chances.argmax(axis=1)
        return [(LABELS[k], float(chances[i, k])) for i, k in enumerate(best)]


def save(path: Path, weights: np.ndarray, bias: np.ndarray, fingerprint: str) -> None:
    np.savez_compressed(
        path,
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        labels=np.array(LABELS),
        fingerprint=np.array(fingerprint),
    )


def shipped_fingerprint(path: Path = WEIGHTS) -> str | None:
    if not path.is_file():
        return None
    with np.load(path) as shipped:
        return str(shipped["fingerprint"])


def part_classifier() -> PartClassifier | None:
    """The classifier; None without the meaning model it reads through, or without its weights
    (the router then judges parts by its cue words alone)."""
    meaning = meaning_model()
    return None if meaning is None else _load(meaning, WEIGHTS)


@functools.lru_cache(maxsize=1)  # a switch of meaning model lets the last one go
def _load(meaning: MeaningModel, path: Path) -> PartClassifier | None:
    try:
        with np.load(path) as shipped:
            if tuple(str(label) for label in shipped["labels"]) != LABELS:
                raise ValueError(f"labels {list(shipped['labels'])} are not {list(LABELS)}")
            weights, bias = shipped["weights"], shipped["bias"]
            if weights.shape != (FEATURES, len(LABELS)) or bias.shape != (len(LABELS),):
                raise ValueError(f"weights {weights.shape} do not fit {FEATURES} features")
            return PartClassifier(weights, bias, meaning)
    except Exception:
        log.warning(
            "part classifier %s could not be loaded: cue words alone judge parts", path, exc_info=True
        )
        return None
