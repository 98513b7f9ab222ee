"""Speech recognition with pocketsphinx and the English acoustic model its wheel ships.

Two language models: the domain model built by `build_domain_model` at `init` time (what
players ask this bot), and the wheel's general English model as a fallback for the rest.
Decoders are not thread-safe; each sits behind its own lock and callers run `recognize` in a
thread, so the event loop never waits on a decode.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pocketsphinx

from bot.speech.domain_corpus import domain_sentences
from bot.speech.ngram import build_arpa

log = logging.getLogger(__name__)

RATE = 16_000
MODEL = Path(pocketsphinx.get_model_path()) / "en-us"
ACOUSTIC = MODEL / "en-us"
GENERAL_LM = MODEL / "en-us.lm.bin"
CMUDICT = MODEL / "cmudict-en-us.dict"


@dataclass(frozen=True)
class Hypothesis:
    text: str
    model: str  # "domain" or "general"
    log_prob: float  # pocketsphinx's path score; higher is better, comparable within one model


def build_domain_model(manuals_dir: Path, out_dir: Path) -> tuple[int, int]:
    """Write domain.arpa and domain.dict to `out_dir`; returns (sentences, words)."""
    pronunciations: dict[str, list[str]] = {}
    for line in CMUDICT.read_text(encoding="utf-8").splitlines():
        entry, _, phones = line.partition(" ")
        word = entry.split("(", 1)[0]
        pronunciations.setdefault(word, []).append(f"{entry} {phones.strip()}")
    sentences = [
        s for s in dict.fromkeys(domain_sentences(manuals_dir)) if all(w in pronunciations for w in s.split())
    ]
    words = sorted({w for s in sentences for w in s.split()})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "domain.arpa").write_text(build_arpa(sentences), encoding="utf-8")
    (out_dir / "domain.dict").write_text(
        "\n".join(line for w in words for line in pronunciations[w]) + "\n", encoding="utf-8"
    )
    return len(sentences), len(words)


def _decoder(lm: Path, dictionary: Path) -> pocketsphinx.Decoder:
    config = pocketsphinx.Config(
        hmm=str(ACOUSTIC), lm=str(lm), dict=str(dictionary), samprate=RATE, loglevel="FATAL"
    )
    return pocketsphinx.Decoder(config)


class Recognizer:
    def __init__(self, model_dir: Path) -> None:
        arpa, dictionary = model_dir / "domain.arpa", model_dir / "domain.dict"
        if not arpa.exists():
            raise FileNotFoundError(f"{arpa} is missing: run `python -m bot init` to build the speech models")
        # One decoder per core: decodes of different players run in parallel threads.
        self._domain: queue.SimpleQueue[pocketsphinx.Decoder] = queue.SimpleQueue()
        for _ in range(max(1, min(4, os.cpu_count() or 1))):
            self._domain.put(_decoder(arpa, dictionary))
        self._general: pocketsphinx.Decoder | None = None
        self._general_lock = threading.Lock()

    def recognize(self, pcm: bytes, general: bool = False) -> Hypothesis:
        """16 kHz mono int16 → words. `general` uses the wide English model (slower, looser)."""
        if general:
            with self._general_lock:
                if self._general is None:
                    self._general = _decoder(GENERAL_LM, CMUDICT)
                return self._decode(self._general, pcm, "general")
        decoder = self._domain.get()
        try:
            return self._decode(decoder, pcm, "domain")
        finally:
            self._domain.put(decoder)

    @staticmethod
    def _decode(decoder: pocketsphinx.Decoder, pcm: bytes, model: str) -> Hypothesis:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is None:
            return Hypothesis("", model, float("-inf"))
        words = [w for w in hyp.hypstr.split() if not w.startswith(("<", "[", "++"))]
        return Hypothesis(" ".join(w.split("(")[0] for w in words), model, float(hyp.score))


def to_16k(pcm: bytes, rate: int) -> bytes:
    """Resample mono int16 to the acoustic model's 16 kHz."""
    if rate == RATE:
        return pcm
    from bot.audio import resample

    return resample(np.frombuffer(pcm, dtype=np.int16), rate, RATE).tobytes()
