"""How the recogniser mishears each kind of question, learnt once from synthetic speech.

A quarter of the words pocketsphinx hears are wrong, and its mistakes are not random: "tell me
my stats" tends to come out as "daily my credits grievance". This is a naive Bayes model over
the words the recogniser produced (not the words spoken), trained on eSpeak recordings of
labelled questions. The router asks it only when its own cues leave it unsure, and takes its
answer only when the model is confident; otherwise the player is still asked to rephrase.

    python -m bot.speech.confusions     # rebuild data/speech/confusions.json (a few minutes)

Training uses the domain corpus, the phrasings (bot/speech/phrasings.py) and the evaluation set's
tune, dev and first eight held-out splits, in their voices; never the newer held-out splits or
their voices.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import random
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot import paths

MODEL_PATH = paths.CONFUSIONS
TRAINING_SPLITS = (
    "tune",
    "dev",
    "heldout",
    "heldout2",
    "heldout3",
    "heldout4",
    "heldout5",
    "heldout6",
    "heldout7",
    "heldout8",
)
SMOOTHING = 0.5


def features(text: str) -> list[str]:
    words = text.split()
    return words + [f"{a}_{b}" for a, b in itertools.pairwise(words)]


@dataclass
class Confusions:
    counts: dict[str, dict[str, int]]  # label -> feature -> count
    documents: dict[str, int]  # label -> training utterances

    @functools.cached_property
    def _vocabulary(self) -> int:
        return len({f for per in self.counts.values() for f in per})

    @functools.cached_property
    def _totals(self) -> dict[str, int]:
        return {label: sum(per.values()) for label, per in self.counts.items()}

    def predict(self, text: str) -> tuple[str, float]:
        """The most likely label for what the recogniser heard, and its posterior probability."""
        posteriors = self.posteriors(text)
        best = max(posteriors, key=posteriors.__getitem__)
        return best, posteriors[best]

    def posteriors(self, text: str) -> dict[str, float]:
        """Every label's posterior probability for these words."""
        found = features(text)
        all_documents = sum(self.documents.values())
        scores = {}
        for label, per in self.counts.items():
            denominator = self._totals[label] + SMOOTHING * self._vocabulary
            log_p = math.log(self.documents[label] / all_documents)
            log_p += sum(math.log((per.get(f, 0) + SMOOTHING) / denominator) for f in found)
            scores[label] = log_p
        top = max(scores.values())
        total = sum(math.exp(s - top) for s in scores.values())
        return {label: math.exp(s - top) / total for label, s in scores.items()}

    def to_json(self) -> str:
        return json.dumps({"counts": self.counts, "documents": self.documents}, sort_keys=True, indent=0)

    @classmethod
    def from_json(cls, text: str) -> Confusions:
        raw = json.loads(text)
        return cls(raw["counts"], raw["documents"])


@functools.cache
def load(path: Path = MODEL_PATH) -> Confusions | None:
    try:
        return Confusions.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def train(examples: list[tuple[str, str]]) -> Confusions:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    documents: Counter[str] = Counter()
    for heard, label in examples:
        if heard.strip():
            counts[label].update(features(heard))
            documents[label] += 1
    return Confusions({label: dict(c) for label, c in counts.items()}, dict(documents))


# ---- building: synthesise, recognise, count ------------------------------------------------


def corpus_examples(
    rng: random.Random, per_list: int, smalltalk_label: str | None = None
) -> list[tuple[str, str]]:
    from bot.engines import offline_router as router
    from bot.speech import domain_corpus as corpus

    labelled = {
        router.STATS: corpus.STATS
        + [f.format(x=x) for f in corpus.STATS_FRAMES for x in corpus.STATS_THINGS],
        router.STATUS: corpus.STATUS
        + [f.format(x=x) for f in corpus.STATUS_FRAMES for x in corpus.STATUS_OBJECTS],
        router.REGISTER: corpus.GRIEVANCE
        + corpus.INCIDENTS
        + [f"{x} {p}" for x in corpus.PROBLEM_SUBJECTS for p in corpus.PROBLEMS],
        router.MANUALS: corpus.MANUAL_FACTS
        + [q.format(x=t) for q in corpus.MANUAL_QUESTIONS for t in corpus.MANUAL_TASKS],
    }
    examples = [
        (s, label)
        for label, sentences in labelled.items()
        for s in rng.sample(sentences, min(per_list, len(sentences)))
    ]
    examples += [(s, smalltalk_label or _label(s, "smalltalk")) for s in corpus.SMALLTALK]
    return examples


def _phrasing_examples() -> list[tuple[str, str]]:
    from bot.speech import phrasings

    return [(text, _label(text, intent)) for text, intent in phrasings.load()]


def _label(text: str, intent: str) -> str:
    """The model's label: a tool name, or for small talk its kind ("greeting", "thanks", ...),
    which the router reads from the true words; "what can you do" when it cannot, as the router
    itself answers small talk of no clear kind."""
    from bot.engines import offline_router as router

    if intent != "smalltalk":
        return intent
    kind = router.route(text).name
    return kind if kind in router.SMALLTALK else router.CAPABILITIES


def build(storage: Path, out: Path = MODEL_PATH, per_list: int = 120, seed: int = 7) -> str:
    from bot.evaluation import VOICES, load_questions

    rng = random.Random(seed)
    voices = sorted({v for split in TRAINING_SPLITS for v in VOICES[split]})
    sentences = [
        (
            "say",
            (text, label, voices[i % len(voices)], rng.choice([145, 160, 175]), rng.choice([40, 50, 62]), i),
        )
        for i, (text, label) in enumerate(corpus_examples(rng, per_list) + _phrasing_examples())
    ]
    questions = [("ask", (q,)) for q in load_questions() if q.split in TRAINING_SPLITS]
    # pocketsphinx holds the GIL while it decodes: one process per core.
    with ProcessPoolExecutor(os.cpu_count() or 1, initializer=_start_worker, initargs=(storage,)) as pool:
        examples = [pair for pairs in pool.map(_hear, sentences + questions, chunksize=8) for pair in pairs]
    model = train(examples)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(model.to_json() + "\n", encoding="utf-8")
    return f"{len(examples)} recognised utterances → {out}"


_worker: dict[str, Any] = {}  # this worker process's recogniser and storage directory


def _start_worker(storage: Path) -> None:
    from bot.engines import offline_router as router
    from bot.speech.recognizer import Recognizer

    router.use_confusions(False)  # learn from the router's own decisions, not the model's
    _worker.update(recognizer=Recognizer(storage / "speech"), storage=storage)


def _hear(job: tuple[str, tuple]) -> list[tuple[str, str]]:
    """(what was heard, label) for one utterance, clean and with noise."""
    import numpy as np

    from bot import audio
    from bot.config import AudioSettings
    from bot.engines.offline import speak_pcm
    from bot.engines.offline_hearing import hear
    from bot.evaluation import NOISE_SNR_DB, add_noise, recording

    recognizer = _worker["recognizer"]
    kind, args = job
    if kind == "say":
        text, label, voice, speed, pitch, seed = args
        pcm, rate = speak_pcm(text, voice, speed, pitch)
        samples = np.frombuffer(pcm, dtype=np.int16)
        return [
            (hear(recognizer, x.tobytes(), rate).text, label)
            for x in (samples, add_noise(samples, NOISE_SNR_DB, seed))
        ]
    (q,) = args
    label = _label(q.text, q.intent)
    notes = [recording(q, noisy, _worker["storage"] / "eval") for noisy in (False, True)]
    decoded = [audio.decode(note, AudioSettings()) for note in notes]
    return [(hear(recognizer, d.segment.raw_data, d.segment.frame_rate).text, label) for d in decoded]


if __name__ == "__main__":
    import sys

    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "var")))
