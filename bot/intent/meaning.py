"""The meaning model: a sentence encoder (bot/speech/sentence_encoder.py, all-mpnet-base-v2 or
all-MiniLM-L6-v2) as the router uses it, loaded once per process and remembering the last notes it has read.

Cue words judge the words a player used; the encoder's vectors carry what they meant, so "has
anybody replied to that ticket" sits near "any news on my complaint" with no word in common.
The word tagger (bot/intent/word_tagger.py) reads each word's meaning in its note to tell which
words ask for something.
"""

from __future__ import annotations

import functools
import logging
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from bot.speech import encoder_files, sentence_encoder
from bot.speech.sentence_encoder import MINILM, MODELS, MPNET, SentenceEncoder

log = logging.getLogger(__name__)

# Notes remembered (each about 6 KB a word through all-mpnet-base-v2, 3 KB through MiniLM): the
# N-best vote and the engine's turns route the same words more than once within a process.
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
    """offline.meaning_model: auto (all-mpnet-base-v2 when its wheels are installed, else
    all-MiniLM-L6-v2), off, one of the two by name, or the folder of a copy of either's files."""
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
        named = _NAMES.get(_setting)
        if _setting == AUTO or named:
            wanted = [named] if named else list(MODELS)
            if any(encoder_files.installed(m) for m in wanted):
                why = "could not be loaded (the log says why)"
            else:
                why = f"not installed ({encoder_files.install_hint(wanted[-1])})"
        else:
            why = f"not loaded from {_setting} (the log says why)"
        return f"meaning model {why}; cue words alone meanwhile"
    encoder = model.encoder
    line = f"meaning model {encoder.model.name} ({encoder.where}), licence: {encoder.model.licence}"
    if _setting == AUTO and encoder.model is not MPNET:
        if encoder_files.installed(MPNET):
            line += f"; {MPNET.name} could not be loaded (the log says why)"
        else:
            hint = encoder_files.install_hint(MPNET)
            line += f"; the word tagger reads new writers better through {MPNET.name} ({hint})"
    return line


@functools.cache
def meaning_model() -> MeaningModel | None:
    """The model, loaded once per process; None when it is switched off or cannot be had (the
    router then judges by cue words alone): an optional model never stops the bot."""
    if _setting == OFF:
        return None
    if _setting == AUTO or (_setting in _NAMES and not Path(_setting).is_dir()):
        encoder = _installed(_setting)
    else:
        encoder = _from_folder(Path(_setting))
    return None if encoder is None else MeaningModel(encoder)


_NAMES = {model.name: model for model in MODELS}
# What a model that is there but cannot be read gives: a changed file, a broken zip, a short read.
_UNREADABLE = (encoder_files.Unavailable, ValueError, OSError, zipfile.BadZipFile)


def _installed(setting: str) -> SentenceEncoder | None:
    """The named model from its wheels; with `auto`, the first of MODELS whose wheels are
    installed and load, each one that does not giving a log line."""
    if setting == AUTO:
        candidates = [model for model in MODELS if encoder_files.installed(model)]
        if candidates and MPNET not in candidates:
            log.info(
                "meaning model %s is not installed (%s): its word tagger reads new writers' notes better",
                MPNET.name,
                encoder_files.install_hint(MPNET),
            )
        if not candidates:
            hint = encoder_files.install_hint(MINILM)
            log.info("no meaning model installed (%s): routing on cue words alone", hint)
    else:
        candidates = [_NAMES[setting]]
    for model in candidates:
        try:
            encoder = sentence_encoder.encoder(encoder_files.read(model))
        except _UNREADABLE as error:
            log.warning("meaning model %s could not be loaded: %s", model.name, error)
            continue
        except Exception:
            log.warning("meaning model %s could not be loaded", model.name, exc_info=True)
            continue
        log.info("meaning model %s (%s)", model.name, encoder.where)
        return encoder
    return None


def _from_folder(folder: Path) -> SentenceEncoder | None:
    """Whichever of MODELS the folder holds a copy of, by its files' hashes."""
    problems: dict[str, str | None] = {}
    try:
        contents = encoder_files.read_folder(folder)
        for model in MODELS:
            # One model at a time: each check hashes the 90-438 MB of weights.
            problems[model.name] = sentence_encoder.mismatch(model, contents)
            if problems[model.name] is None:
                encoder = sentence_encoder.encoder(sentence_encoder.Files(model, contents, str(folder)))
                log.info("meaning model %s (%s)", model.name, folder)
                return encoder
    except Exception:
        log.warning("meaning model from %s could not be loaded", folder, exc_info=True)
        return None
    why = "; ".join(f"not {name}: {problem}" for name, problem in problems.items())
    log.warning("meaning model: %s holds neither model (%s)", folder, why)
    return None
