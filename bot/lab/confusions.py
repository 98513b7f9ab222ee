"""Build the confusion model (bot/data/speech/confusions.json) from synthetic speech.

    python -m bot.lab.confusions var    # rebuild it (about 10 minutes on two cores)

eSpeak speaks labelled sentences, the recogniser hears them, clean and with noise, and what it
heard is counted per label (bot/speech/confusions.py holds the model itself). Training uses the
domain corpus, the phrasings (bot/speech/phrasings.py) and the evaluation set's tune, dev and
first eight held-out splits, in their voices; never the newer held-out splits or their voices.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bot import audio
from bot.config import AudioSettings
from bot.engines.offline.hearing import hear
from bot.intent import router
from bot.intent.word_model import corpus_examples
from bot.lab.evaluation import NOISE_SNR_DB, VOICES, add_noise, load_questions, recording
from bot.lab.samples import speak_pcm
from bot.speech import phrasings
from bot.speech.confusions import MODEL_PATH, train
from bot.speech.recognizer import Recognizer

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


def _corpus_examples(rng: random.Random, per_list: int) -> list[tuple[str, str]]:
    """The corpus's sentences, small talk labelled by its kind as the router reads it."""
    return [(text, _label(text, label)) for text, label in corpus_examples(rng, per_list)]


def _phrasing_examples() -> list[tuple[str, str]]:
    return [(text, _label(text, intent)) for text, intent in phrasings.load()]


def _label(text: str, intent: str) -> str:
    """The model's label: a tool name, or for small talk its kind ("greeting", "thanks", ...),
    which the router reads from the true words; "what can you do" when it cannot, as the router
    itself answers small talk of no clear kind."""
    if intent != "smalltalk":
        return intent
    kind = router.route(text).name
    return kind if kind in router.SMALLTALK else router.CAPABILITIES


def build(storage: Path, out: Path = MODEL_PATH, per_list: int = 120, seed: int = 7) -> str:
    rng = random.Random(seed)
    voices = sorted({v for split in TRAINING_SPLITS for v in VOICES[split]})
    sentences = [
        (
            "say",
            (text, label, voices[i % len(voices)], rng.choice([145, 160, 175]), rng.choice([40, 50, 62]), i),
        )
        for i, (text, label) in enumerate(_corpus_examples(rng, per_list) + _phrasing_examples())
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
    router.use_confusions(False)  # learn from the router's own decisions, not the model's
    _worker.update(recognizer=Recognizer(storage / "speech"), storage=storage)


def _hear(job: tuple[str, tuple]) -> list[tuple[str, str]]:
    """(what was heard, label) for one utterance, clean and with noise."""
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
