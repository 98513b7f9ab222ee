"""Speech recognition with pocketsphinx and the English acoustic model its wheel ships.

Two language models: the domain model built by `build_domain_model` at `init` time (what
players ask this bot), and the wheel's general English model as a fallback for the rest.
Decoders are not thread-safe, so each sits behind its own lock; the bot runs recognisers in
worker processes (bot/engines/offline/hearing.py), since a decode holds the GIL throughout.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pocketsphinx

from bot.db import fsync_path, new_partial, remove_partials
from bot.speech import ngram
from bot.speech.domain_corpus import domain_sentences

log = logging.getLogger(__name__)

RATE = 16_000
MODEL = Path(pocketsphinx.get_model_path()) / "en-us"
ACOUSTIC = MODEL / "en-us"
GENERAL_LM = MODEL / "en-us.lm.bin"
CMUDICT = MODEL / "cmudict-en-us.dict"


# Chosen on the evaluation set's tune and dev splits (never the held-out one): the second,
# flat-lexicon pass made short questions worse, and a higher word insertion penalty keeps the
# decoder from filling pauses with small words. Scoring each frame against the 8 best Gaussians of
# each codebook rather than 4 heard a question or two more in most seen splits (heldout6-8, 10,
# 13: +8 clean and +6 noisy of 360) for about 12% more decoding time; 16 was worse.
TUNING = {"loglevel": "FATAL", "fwdflat": False, "wip": 2.0, "topn": 8}


# How many distinct transcripts to read off the lattice after the best one. With a quarter of
# the words wrong, the right intent is often in the runners-up when the best path is garbled.
ALTERNATIVES = 10

# A long note's runners-up fill its pauses with "i", "a" and "are": on a 110 s note the best
# transcript had 180 words and each runner-up 2,121, and routing them took 9 s against 0.17 s for
# the best alone, in a hearing worker and again in the bot. No note of the evaluation's splits is
# this long (the longest, 385 characters, is 32 s even in Kokoro's voice at the slowest length
# scale the splits draw), so what is left out only past it moves none of their figures.
LONG_NOTE_SECONDS = 60.0
# A long note's runner-up with this many times the best's words is the best with its pauses
# filled (1.6 to 12 times in the long notes measured).
FILLED_PAUSES = 1.5


@dataclass(frozen=True)
class Hypothesis:
    text: str
    model: str  # "domain" or "general"
    log_prob: float  # pocketsphinx's path score; higher is better, comparable within one model
    alternatives: tuple[str, ...] = ()  # distinct transcripts, best first (text among them)
    # False when the recogniser itself doubts what it heard (its own measure, such as Whisper's
    # token probabilities): the note is then not acted on, however well the words route.
    sure: bool = True


# The domain model knows only the words of its corpus, and players use many more. Mixing in
# pocketsphinx's general English model, over its most common words, lets the recogniser hear
# those while the domain model still shapes what it expects. Chosen on seen evaluation splits
# (heldout5-7): 5000 words at a tenth of the mass heard more than none or a fifth, and listing
# the general model's own bigrams as well made noisy speech worse.
GENERAL_WORDS = 5000
DOMAIN_WEIGHT = 0.9


def build_domain_model(
    manuals_dir: Path, out_dir: Path, general_words: int = GENERAL_WORDS, weight: float = DOMAIN_WEIGHT
) -> tuple[int, int]:
    """Write domain.arpa and domain.dict to `out_dir`, and what they were built from (BUILT);
    returns (sentences, words)."""
    pronunciations: dict[str, list[str]] = {}
    for line in CMUDICT.read_text(encoding="utf-8").splitlines():
        entry, _, phones = line.partition(" ")
        word = entry.split("(", 1)[0]
        pronunciations.setdefault(word, []).append(f"{entry} {phones.strip()}")
    corpus = _corpus(manuals_dir)
    sentences = [s for s in corpus if all(w in pronunciations for w in s.split())]
    model = ngram.train(sentences)
    if general_words and weight < 1:
        model = _with_general_english(model, set(pronunciations), general_words, weight)
    words = sorted(w for (w,) in model.order(1) if w not in ("<s>", "</s>"))
    texts = {
        "domain.dict": "\n".join(line for w in words for line in pronunciations[w]) + "\n",
        "domain.arpa": ngram.to_arpa(model),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # The record first, naming the pair by their hashes: a worker starting while the two files are
    # renamed one after the other finds a pair the record does not name and reads again
    # (_open_pair), and a build cut short leaves a pair that does not pass for the one recorded.
    built = {
        "inputs": _fingerprint(corpus, general_words, weight),
        "sentences": len(sentences),
        "files": {name: _sha256(text.encode()) for name, text in texts.items()},
    }
    remove_partials(out_dir, [BUILT, *texts])
    _replace(out_dir / BUILT, json.dumps(built) + "\n")
    for name, text in texts.items():
        _replace(out_dir / name, text)
    return len(sentences), len(words)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _replace(path: Path, text: str) -> None:
    """Write `path` whole under another name, on disk, then rename it over: a speech worker
    starting while `init` runs beside the bot reads the old file or the new one, never half of
    either, and a power cut after the build leaves the new file, not an empty one by its name.
    The other name carries this process's id, for the next build to tell a killed one's."""
    partial, fd = new_partial(path)
    try:
        with open(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
            os.replace(partial, path)  # still held: never taken for a killed build's meanwhile
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)  # the new name


# What the domain model in a folder was built from. Hearing uses the model until `init` builds
# it again, so one built before an upgrade or new manuals goes on hearing the old questions.
BUILT = "domain.built.json"


def _corpus(manuals_dir: Path) -> list[str]:
    """The sentences a domain model is built from, once each: read by the build and by the
    check of what it was built from alike, or the check stops matching the build."""
    return list(dict.fromkeys(domain_sentences(manuals_dir)))


def _fingerprint(corpus: list[str], general_words: int, weight: float) -> str:
    """A hash of what build_domain_model reads: the corpus (this voxdesk's sentences and the
    manuals'), how it mixes in general English, and the pocketsphinx wheel whose dictionary
    and general model it mixes from."""
    inputs = [version("pocketsphinx"), general_words, weight, corpus]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()


def built_from_current_inputs(model_dir: Path, manuals_dir: Path) -> bool:
    """Whether the domain model in `model_dir` is the one build_domain_model would build now
    (with its defaults). False too for one that records nothing: an older voxdesk built it."""
    built = _record(model_dir)
    if built is None:
        return False
    current = _fingerprint(_corpus(manuals_dir), GENERAL_WORDS, DOMAIN_WEIGHT)
    files = built.get("files")
    if isinstance(files, dict):  # recorded since the pair is named by its hashes
        fds = _opened(model_dir)
        try:
            if not _named(fds, files):
                return False  # a build cut short between its files
        finally:
            _close(fds)
    return built.get("inputs") == current


def _record(model_dir: Path) -> dict[str, object] | None:
    try:
        built = json.loads((model_dir / BUILT).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return built if isinstance(built, dict) else None


# The model and its dictionary, in the order the decoder takes them.
PAIR = ("domain.arpa", "domain.dict")
# How often a worker reads the pair again when it is not the one the record names: a build renames
# the two files within milliseconds of each other, so only one cut short stays unnamed this long.
PAIR_TRIES, PAIR_WAIT = 40, 0.05


def _opened(model_dir: Path) -> list[int]:
    fds: list[int] = []
    try:
        for name in PAIR:
            fds.append(os.open(model_dir / name, os.O_RDONLY))
    except BaseException:
        _close(fds)
        raise
    return fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _named(fds: list[int], files: dict[str, object]) -> bool:
    """Whether the opened files are the pair the record names."""
    for name, fd in zip(PAIR, fds, strict=True):
        with os.fdopen(os.dup(fd), "rb") as f:
            f.seek(0)
            if files.get(name) != _sha256(f.read()):
                return False
    return True


def _open_pair(model_dir: Path) -> list[int]:
    """Descriptors of domain.arpa and domain.dict of one build, as the record names them: a
    decoder reading the new dictionary with the old model (a worker starting between a build's
    two renames) mishears the words either lacks. A folder of an older voxdesk records no hashes:
    its pair is taken as it is."""
    for _ in range(PAIR_TRIES):
        built = _record(model_dir)
        fds = _opened(model_dir)
        files = built.get("files") if built is not None else None
        try:
            if built is None or not isinstance(files, dict) or _named(fds, files):
                return fds
        except BaseException:
            _close(fds)
            raise
        _close(fds)
        time.sleep(PAIR_WAIT)
    log.warning(
        "%s and %s are not the pair %s names (an `init` cut short?): hearing with them; run"
        " `voxdesk init` again",
        model_dir / PAIR[0],
        model_dir / PAIR[1],
        model_dir / BUILT,
    )
    return _opened(model_dir)


def _domain_decoder(model_dir: Path) -> pocketsphinx.Decoder:
    fds = _open_pair(model_dir)
    try:
        # Through the descriptors checked, never the names: the names may be another build's by
        # the time the decoder opens them. Each opens the file the descriptor holds.
        lm, dictionary = (Path(f"/proc/self/fd/{fd}") for fd in fds)
        if not lm.exists():  # no /proc: the names, as the check read them a moment ago
            lm, dictionary = (model_dir / name for name in PAIR)
        return _decoder(lm, dictionary)
    finally:
        _close(fds)


def _with_general_english(
    domain: ngram.BackoffModel, pronounceable: set[str], size: int, weight: float
) -> ngram.BackoffModel:
    general = pocketsphinx.NGramModel.readfile(str(GENERAL_LM))
    scale = math.log(1.0001)  # pocketsphinx's log base

    def probability(gram: ngram.Gram) -> float:
        return math.exp(general.prob(list(reversed(gram))) * scale)  # it takes the word first

    words = [w for w in pronounceable if w.replace("'", "").isalpha()]
    common = sorted(words, key=lambda w: general.prob([w]), reverse=True)[:size]
    return ngram.mix(domain, probability, set(common), weight)


def _decoder(lm: Path, dictionary: Path) -> pocketsphinx.Decoder:
    config = pocketsphinx.Config(hmm=str(ACOUSTIC), lm=str(lm), dict=str(dictionary), samprate=RATE, **TUNING)
    return pocketsphinx.Decoder(config)


def require_models(model_dir: Path) -> None:
    for name in ("domain.arpa", "domain.dict"):
        if not (model_dir / name).exists():
            raise FileNotFoundError(
                f"{model_dir / name} is missing: run `python -m bot init` to build the speech models"
            )


class Recognizer:
    """One domain decoder and, once needed, one general one. pocketsphinx holds the GIL while it
    decodes, so parallel decoding takes processes (see bot/engines/offline/hearing.py)."""

    def __init__(self, model_dir: Path) -> None:
        require_models(model_dir)
        self._domain = _domain_decoder(model_dir)
        self._domain_lock = threading.Lock()
        self._general: pocketsphinx.Decoder | None = None
        self._general_lock = threading.Lock()

    def recognize(self, pcm: bytes, general: bool = False) -> Hypothesis:
        """16 kHz mono int16 → words. `general` uses the wide English model (slower, looser);
        the domain model also lists its runners-up."""
        if general:
            with self._general_lock:
                if self._general is None:
                    self._general = _decoder(GENERAL_LM, CMUDICT)
                return self._decode(self._general, pcm, "general")
        with self._domain_lock:
            return self._decode(self._domain, pcm, "domain", ALTERNATIVES)

    @staticmethod
    def _decode(decoder: pocketsphinx.Decoder, pcm: bytes, model: str, alternatives: int = 0) -> Hypothesis:
        # The front end's cepstral mean and noise estimates otherwise carry over from the last
        # note this decoder heard, often another player's: the same note would be heard
        # differently depending on who spoke before.
        decoder.reinit_feat()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is None:
            return Hypothesis("", model, float("-inf"))
        text = _words(hyp.hypstr)
        found = [text]
        if alternatives:
            longest = _longest_runner_up(text, len(pcm) / 2 / RATE)
            # The N-best search repeats transcripts that differ only in fillers or pronunciation
            # variants; a bounded read keeps a noisy utterance from walking a huge lattice.
            for other in itertools.islice(decoder.nbest(), 3 * alternatives):
                if other is None or len(found) > alternatives:
                    break
                candidate = _words(other.hypstr)
                if candidate and candidate not in found and len(candidate.split()) <= longest:
                    found.append(candidate)
        return Hypothesis(text, model, float(hyp.score), tuple(found))


def _longest_runner_up(best: str, seconds: float) -> float:
    """How many words a runner-up of the best transcript `best` of a note `seconds` long may have."""
    if seconds <= LONG_NOTE_SECONDS:
        return math.inf
    return FILLED_PAUSES * len(best.split())


def _words(hypstr: str) -> str:
    """Spoken words only: no silences, noises or pronunciation-variant suffixes."""
    words = [w for w in hypstr.split() if not w.startswith(("<", "[", "++"))]
    return " ".join(w.split("(")[0] for w in words)


def to_16k(pcm: bytes, rate: int) -> bytes:
    """Resample mono int16 to the acoustic model's 16 kHz."""
    if rate == RATE:
        return pcm
    from bot.audio import resample

    return resample(np.frombuffer(pcm, dtype=np.int16), rate, RATE).tobytes()
