"""Real encoded audio for tests, made in-process with PyAV's encoders."""

from __future__ import annotations

import io

import av
import numpy as np

# container format, codec, file suffix
FORMATS = {
    "ogg": ("ogg", "libopus", ".ogg"),
    "mp3": ("mp3", "libmp3lame", ".mp3"),
    "m4a": ("ipod", "aac", ".m4a"),
    "wav": ("wav", "pcm_s16le", ".wav"),
    "webm": ("webm", "libopus", ".webm"),
    "flac": ("flac", "flac", ".flac"),
}


def speechlike(seconds: float, rate: int = 48_000, lead: float = 0.5, tail: float = 0.5) -> np.ndarray:
    """Silence, then `seconds` of syllable-like tone bursts, then silence (int16 mono)."""
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t)  # ~3 syllables a second
    voiced = 0.4 * envelope * (np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 360 * t))
    pad = lambda s: np.zeros(int(s * rate))  # noqa: E731
    signal = np.concatenate([pad(lead), voiced, pad(tail)])
    return (np.clip(signal, -1, 1) * 20000).astype(np.int16)


def encode(
    samples: np.ndarray, rate: int, fmt: str, layout: str = "mono", options: dict[str, str] | None = None
) -> bytes:
    """`samples` (int16 mono) on every channel of `layout`, encoded as `fmt` with the codec's
    `options`; given packed, since PyAV 18 miscounts the planes of a planar eight-channel frame."""
    container_format, codec, _ = FORMATS[fmt]
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        codec_rate = 48_000 if codec == "libopus" else rate
        stream = container.add_stream(codec, rate=codec_rate, layout=layout)
        if options:
            stream.codec_context.options = options
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name if stream.codec_context.format else "s16",
            layout=layout,
            rate=codec_rate,
        )
        channels = av.AudioLayout(layout).nb_channels
        packed = np.repeat(samples[:, None], channels, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = rate
        for resampled in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def constant_flac(seconds: int, rate: int, layout: str = "7.1", level: int = 5000) -> bytes:
    """A FLAC of a constant level on every channel, its sign turned every FLAC block: FLAC stores
    each block of it in a few bytes, so a long, high-rate, many-channel file is tiny on disk and
    huge decoded, and the turns make it a slow square wave, not a DC offset heard as silence.
    Encoded a second at a time so making it never holds the decoded size in memory."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout=layout)
        stream.codec_context.format = "s16"
        stream.codec_context.open()
        block = stream.codec_context.frame_size
        channels = av.AudioLayout(layout).nb_channels
        for n in range(seconds):
            turns = (np.arange(n * rate, (n + 1) * rate) // block) % 2
            second = np.where(turns == 0, level, -level).astype(np.int16)
            # Packed samples: PyAV 18 miscounts the planes of a planar 7.1 frame.
            packed = np.repeat(second, channels).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
            frame.sample_rate = rate
            frame.pts = n * rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


async def collected(freed: list[int], tries: int = 500) -> None:
    """Collect garbage until a note's bytes are `freed` (their finalizer appends to it), or give
    up after `tries` short waits. The decoding thread hands back its result before it lets go of
    the work item holding the note, so the event loop can get there first on a busy machine."""
    import asyncio
    import gc

    for _ in range(tries):
        gc.collect()
        if freed:
            return
        await asyncio.sleep(0.01)
