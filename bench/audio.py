"""Decode + trim + resample + WAV for a voice note: our in-process path vs pydub's default, and
the memory it peaks at (tracemalloc) beside reading the whole note's levels at once.

    python bench/audio.py [--repeat N] [--against REV]

The baseline is what the seed design did: `AudioSegment.from_file` (an ffmpeg subprocess per
note), pydub's silence detection, `set_frame_rate`/`set_channels`, `export(format="wav")`.
It needs an `ffmpeg` binary on PATH (apt-get install ffmpeg); our path does not.

With `--against REV`, bot/audio.py as it was at git revision REV is timed instead of the baseline,
turn about with the working tree's in one process, in the thread's CPU time (which other jobs on
the machine disturb less than wall time): the ratio is the change's.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from bot import audio
from bot.config import AudioSettings
from tests.audio_samples import encode, speechlike


def ours(data: bytes) -> bytes:
    return audio.decode(data, AudioSettings(max_seconds=600)).wav()


def pydub_default(data: bytes) -> bytes:
    from pydub import AudioSegment
    from pydub.silence import detect_leading_silence

    segment = AudioSegment.from_file(io.BytesIO(data))
    start = detect_leading_silence(segment, silence_threshold=-40.0)
    end = detect_leading_silence(segment.reverse(), silence_threshold=-40.0)
    segment = segment[start : len(segment) - end]
    segment = segment.set_frame_rate(24_000).set_channels(1).set_sample_width(2)
    out = io.BytesIO()
    segment.export(out, format="wav")
    return out.getvalue()


def whole_note_levels(data: bytes) -> bytes:
    """The baseline for memory: the levels of the whole note read at once, as float32 and squared,
    and the WAV written through the wave module's BytesIO."""
    limits = AudioSettings(max_seconds=600)
    samples = np.frombuffer(audio._decode_pcm(data, audio.MODEL_RATE, limits.max_seconds), dtype=np.int16)
    window = audio.MODEL_RATE // 100
    count = len(samples) // window
    frames = samples[: count * window].astype(np.float32).reshape(count, window)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) / 32768.0
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    loud = np.flatnonzero(level > limits.silence_threshold_db)
    trimmed = samples[max(0, loud[0] - 12) * window : (loud[-1] + 13) * window].tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.MODEL_RATE)
        w.writeframes(trimmed)
    return out.getvalue()


def peak(fn, data: bytes) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(traced peak bytes, WAV bytes) of one call."""
    tracemalloc.start()
    try:
        wav = fn(data)
        _, top = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return top, len(wav)


def timed(fn, data: bytes, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn(data)  # warm-up: imports, codec tables
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(data)
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def audio_at(rev: str, folder: str):  # type: ignore[no-untyped-def]
    """bot/audio.py as it was at git revision `rev`, imported as a module of its own."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "show", f"{rev}:bot/audio.py"], cwd=root, check=True, capture_output=True
    ).stdout
    path = Path(folder) / "audio_then.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("audio_then", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["audio_then"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def against(rev: str, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        then = audio_at(rev, folder)
        limits = AudioSettings(max_seconds=600)
        print(f"\nthread CPU, median of {repeat}, turn about: bot/audio.py at {rev} against now")
        print(f"{'note':>6} {'then ms':>8} {'now ms':>7} {'now/then':>9}")
        for seconds in (10, 60):
            data = encode(speechlike(seconds - 1.0), 48_000, "ogg")
            assert then.decode(data, limits).wav() == audio.decode(data, limits).wav()
            runs: dict[str, list[float]] = {"then": [], "now": []}
            for turn in range(repeat):
                pair = [("then", then), ("now", audio)]
                for name, module in pair if turn % 2 else reversed(pair):
                    started = time.thread_time()
                    module.decode(data, limits).wav()
                    runs[name].append((time.thread_time() - started) * 1000)
            was, now = statistics.median(runs["then"]), statistics.median(runs["now"])
            print(f"{seconds:>5}s {was:>8.1f} {now:>7.1f} {now / was:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--against", metavar="REV", help="also time bot/audio.py at this git revision")
    args = parser.parse_args()
    if args.against:
        against(args.against, args.repeat)
        return
    have_ffmpeg = shutil.which("ffmpeg") is not None
    print(f"median of {args.repeat} runs, Ogg/Opus 48 kHz mono voice notes (as Discord sends them)")
    print(f"{'note':>6} {'ours ms':>9} {'pydub+ffmpeg ms':>16} {'speed-up':>9}")
    for seconds in (10, 60):
        data = encode(speechlike(seconds - 1.0), 48_000, "ogg")
        mine = timed(ours, data, args.repeat)
        if have_ffmpeg:
            base = timed(pydub_default, data, args.repeat)
            print(f"{seconds:>5}s {mine:>9.1f} {base:>16.1f} {base / mine:>8.1f}x")
        else:
            print(f"{seconds:>5}s {mine:>9.1f} {'(no ffmpeg)':>16} {'-':>9}")
    # Every turn decodes at once under a raid: this peak, agent.max_concurrent_turns times.
    print("\ntraced peak while decoding to the WAV, in WAVs of the note (tracemalloc)")
    print(f"{'note':>6} {'WAV MB':>7} {'ours':>6} {'whole-note levels':>18}")
    for seconds in (60, 115):
        data = encode(speechlike(seconds - 1.0), 48_000, "ogg")
        mine, size = peak(ours, data)
        base, _ = peak(whole_note_levels, data)
        print(f"{seconds:>5}s {size / 1e6:>7.2f} {mine / size:>5.1f}x {base / size:>17.1f}x")


if __name__ == "__main__":
    main()
