"""Audio in and out, in memory and in-process (PyAV's bundled FFmpeg; no subprocess, no system
ffmpeg).

In: any common container/codec → mono 16-bit PCM at the model's rate → silence trimmed → WAV.
Out: Ogg/Opus at 48 kHz (what Discord voice messages carry), its duration and its waveform.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import logging
import math
import os
import struct
import warnings
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import av
import numpy as np
from av.audio.plane import AudioPlane

with warnings.catch_warnings():
    # pydub warns when no ffmpeg binary is on PATH; we never ask it to run one.
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment

from bot import sentences as say
from bot.config import AudioSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

MODEL_RATE = 24_000
REPLY_RATE = 48_000
WAVEFORM_MAX = 256  # Discord shows at most 256 one-byte amplitude samples
# libopus's effort, 0-10 (FFmpeg's compression_level). Notes the lab and the tests make keep
# FFmpeg's default, 10: the recogniser's figures were measured on those bytes, and a note encoded
# otherwise is heard differently. Spoken replies, which only people hear, use 5: a 9 s reply
# encoded in 52 ms against 140-170 ms, the same SNR against the source (19-20 dB), a file 30%
# larger (48 KB against 37 KB). That holds for a cloud engine's audio that arrives in another
# format too; Ogg/Opus from a cloud engine goes out as it came.
OPUS_COMPLEXITY = 10
REPLY_OPUS_COMPLEXITY = 5
_ENCODE_BLOCK = 48_000  # samples handed to the encoder at a time: one second
_WINDOW_MS = 10
_PAD_MS = 120  # keep a breath of silence around speech so words are not clipped
_LEVEL_WINDOWS = 500  # windows whose levels trim_silence reads at once: 5 s

# Files people attach by mistake; recognised by their first bytes so the reply can say so.
_NOT_AUDIO_MAGIC = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"PK\x03\x04": "a ZIP archive",
    b"\x7fELF": "a program",
    b"MZ": "a program",
}


# Notes are decoded and replies encoded on threads of their own: in asyncio's default ones, a
# raid's notes would queue everything else sent there behind every note's decoding (the web front
# end's static files, the grievance spool, routing). One a core: the work is the CPU's, and a
# thread more only slows every note and the event loop, each holding its note's samples meanwhile.
_THREADS = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="voxdesk-audio")


async def off_loop(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` on the audio threads."""
    return await asyncio.get_running_loop().run_in_executor(_THREADS, functools.partial(work, *args))


class AudioError(Exception):
    """Bad input; the message is written for the player and can be shown as is."""


@dataclass(frozen=True)
class ReplyAudio:
    ogg: bytes  # Ogg/Opus, 48 kHz mono
    duration_secs: float
    waveform: str  # base64 of at most 256 amplitude bytes

    @property
    def size(self) -> int:
        return len(self.ogg)


@dataclass(frozen=True)
class DecodedAudio:
    segment: AudioSegment  # 16-bit mono at MODEL_RATE, trimmed
    original_seconds: float

    @property
    def seconds(self) -> float:
        return len(self.segment) / 1000.0

    def wav(self) -> bytes:
        return pcm_to_wav(self.segment.raw_data, self.segment.frame_rate)


def decode(data: bytes, limits: AudioSettings, rate: int = MODEL_RATE) -> DecodedAudio:
    """Bytes of an audio file → trimmed mono PCM. Raises AudioError for anything unusable."""
    if not data:
        raise AudioError(say.EMPTY_NOTE)
    if len(data) > limits.max_bytes:
        raise AudioError(too_big_message(len(data), limits))
    for magic, what in _NOT_AUDIO_MAGIC.items():
        if data.startswith(magic):
            raise AudioError(say.NOT_AUDIO.format(what=what))
    data = _wav_audio_alone(data)
    try:
        return _decode_track(data, limits, rate, 0)
    except AudioError as exc:
        if str(exc) not in _NOTHING_ON_TRACK:
            raise
        # Its traceback would keep the track's decoded samples while the next is decoded.
        first = exc.with_traceback(None)
    # The first track holds nothing to hear: a screen recorder's (OBS's) desktop audio, say,
    # with the player's microphone on the next. What the player is told when no other track is
    # heard either is what the first track alone would have them told.
    for track in range(1, min(_decodable_tracks(data), MAX_TRACKS)):
        try:
            decoded = _decode_track(data, limits, rate, track)
        except AudioError:
            continue
        log.info("audio track 1 of the file holds nothing to hear: heard track %d", track + 1)
        return decoded
    raise first


# Chunks a WAV may have before its audio: fmt, fact, LIST, bext, iXML, JUNK... a recorder writes a
# handful. FFmpeg walks a seekable WAV's chunks from its header to its end, the ones after the audio
# too, and megabytes of zeros are a chunk every 8 bytes: ~0.75 s of CPU an open, for every open.
MAX_WAV_CHUNKS = 64
# RF64 and BW64 (EBU's WAV past 4 GiB) are the same walk, the data chunk's size in a ds64 chunk
# that must come first: its riff size, then its data size (8 bytes each).
_WIDE_WAV = (b"RF64", b"BW64")
_WAV_FORMAT = (b"fmt ", b"XMA2")  # FFmpeg takes XMA2's chunk in place of fmt


def _wav_audio_alone(data: bytes) -> bytes:
    """A RIFF (or RF64, BW64) WAVE file up to the end of its data chunk, or of its format chunk
    where that follows (FFmpeg reads it wherever it is), what follows them (metadata, or junk) left
    unread; any other file as it is. Raises AudioError for a WAV whose data and format chunks are
    not among its first MAX_WAV_CHUNKS."""
    kind = data[:4]
    if (kind != b"RIFF" and kind not in _WIDE_WAV) or data[8:12] != b"WAVE":
        return data
    at, wide_size, data_end, format_end = 12, None, None, None
    for _ in range(MAX_WAV_CHUNKS):
        if at + 8 > len(data):
            return data  # cut before its audio: FFmpeg says what it makes of that
        tag, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        if kind in _WIDE_WAV and wide_size is None:
            if tag != b"ds64" or size < 24 or at + 24 > len(data):
                return data  # FFmpeg refuses it
            wide_size = int.from_bytes(data[at + 16 : at + 24], "little")
        if tag == b"data" and data_end is None:
            size = size if wide_size is None else wide_size  # an RF64's own is 0xFFFFFFFF, or anything
            if size == 0 or (wide_size is None and size == 0xFFFFFFFF):
                # A WAV written as a stream, its length unsaid: the rest is its audio.
                return data
            data_end = at + 8 + size
        elif tag in _WAV_FORMAT and format_end is None:
            format_end = at + 8 + size
        if data_end is not None and format_end is not None:
            end = max(data_end, format_end)
            return data[:end] if end < len(data) else data
        at += 8 + size + (size & 1)  # a chunk of odd size is padded to an even one
    missing = "data" if data_end is None else "fmt"
    raise AudioError(say.UNREADABLE) from ValueError(f"no {missing} chunk among its first {MAX_WAV_CHUNKS}")


def _decode_track(data: bytes, limits: AudioSettings, rate: int, track: int) -> DecodedAudio:
    pcm = _decode_pcm(data, rate, limits.max_seconds, track=track)
    samples = np.frombuffer(pcm, dtype=np.int16)
    original = len(samples) / rate
    # Shorter than the least speech it must hold, however loud: whether that shows as a window or
    # two of sound or none depends on its rate, and the player's fault is the same.
    if original * 1000 < limits.min_speech_ms:
        raise AudioError(say.TOO_SHORT)
    trimmed = trim_silence(samples, rate, limits.silence_threshold_db, limits.min_speech_ms)
    segment = AudioSegment(data=trimmed.tobytes(), sample_width=2, frame_rate=rate, channels=1)
    return DecodedAudio(segment=segment, original_seconds=original)


def too_big_message(size: int, limits: AudioSettings) -> str:
    """What a player is told about a file over audio.max_bytes, whichever front end took it. The
    size is rounded up and the limit down, to 0.1 MB: rounded to the nearest, a file just over
    the limit would read as one within it ("8.0 MB ... under 8 MB")."""
    size_mb = -(-size // 100_000) / 10
    limit_mb = limits.max_bytes // 100_000 / 10
    return say.TOO_BIG.format(size_mb=f"{size_mb:.1f}", limit_mb=f"{limit_mb:g}")


def too_long_message(max_seconds: float) -> str:
    """What a player is told about a note over audio.max_seconds, whichever front end took it."""
    limit = f"{max_seconds / 60:g} minutes" if max_seconds >= 120 else f"{max_seconds:g} seconds"
    return say.TOO_LONG.format(limit=limit)


def _too_long(limits_seconds: float) -> AudioError:
    return AudioError(too_long_message(limits_seconds))


# Decoded samples (all channels) resampled per call: ten seconds of 48 kHz mono. Counted in
# samples, not seconds: ten seconds of a crafted 655 kHz, 8-channel FLAC (87 KB) once took 1.3 GB.
FIFO_VALUES = 10 * 48_000
# No voice note comes near these; a file that claims more is crafted or broken.
MAX_RATE = 192_000
MAX_CHANNELS = 8
# Below this a file holds no speech (telephone audio is 8 kHz): a 1 Hz WAV's 100 samples last
# 100 s and, resampled, are a slow wobble that would be called silence.
MIN_RATE = 4_000


def _implausible(rate: int | None, channels: int | None) -> bool:
    return not MIN_RATE <= (rate or MIN_RATE) <= MAX_RATE or (channels or 0) > MAX_CHANNELS


# Packets a note may hold for each second of the longest allowed: Opus's shortest frame, 2.5 ms,
# makes 400 a second, and no voice codec's is shorter. Each packet costs the decoding loop some
# microseconds whatever it holds: 8 MB of Matroska blocks of one sample each is a million packets,
# five seconds of sound that cost seconds of CPU (a whole 8 MB WAV decodes in a twentieth of one).
PACKETS_PER_SECOND = 500


def _opus_seconds(packet: av.Packet) -> float:
    """The sound an Opus packet holds, by its first bytes (RFC 6716, 3.1); each stream of a
    multichannel packet holds as much. Its decoding costs that much whether or not FFmpeg then
    drops what it decoded, which it does to a short Ogg/Opus note repeated (the same stream
    again, serial and all) after its first copy: the sound heard then bounds nothing, and at
    120 ms and eight channels a packet of a hundred bytes costs the decoder a quarter of a
    millisecond, 8 MB of them 16 s of CPU within the limit of packets above."""
    head = bytes(memoryview(packet)[:2])
    if not head:
        return 0.0
    config = head[0] >> 3
    if config < 12:  # SILK
        frame_ms = (10, 20, 40, 60)[config % 4]
    elif config < 16:  # hybrid
        frame_ms = (10, 20)[config % 2]
    else:  # CELT
        frame_ms = (2.5, 5, 10, 20)[config % 4]
    code = head[0] & 3
    frames = (1, 2, 2)[code] if code < 3 else (head[1] & 0x3F if len(head) > 1 else 0)
    # More than 120 ms is no Opus packet: the decoder refuses it at its first bytes, at no cost,
    # and a damaged one (up to 63 frames of 60 ms) counted would refuse a short note as too long.
    held = frames * frame_ms
    return held / 1000 if held <= 120 else 0.0


# Times a note's format may change (rate or channels): recordings joined into one file, a few. Each
# change costs a resampler made and flushed, many times its frame's decoding: 0.6 MB of AAC frames
# turning between 96 and 88.2 kHz would cost 4.4 s of CPU before the length limit stops them.
MAX_FORMAT_CHANGES = 20


# A stereo note whose mono mix is this much quieter than its louder channel has one channel
# phase-inverted (some phones' two microphones): the mix cancels the speech, so the louder
# channel is taken alone. Ordinary stereo mixes at 0.7 or more of it, speech in one channel at 0.5.
CANCELLED_MIX = 0.25
# Float samples that are NaN or infinite hold no sound. A few (a stray one from an editor's bad
# plugin) are zeroed, which no one hears; more than this share of a note is not a recording.
NON_FINITE_SHARE = 0.01
_FLOAT_FORMATS = {"flt": np.float32, "fltp": np.float32, "dbl": np.float64, "dblp": np.float64}


def _zero_non_finite(frame: av.AudioFrame) -> tuple[av.AudioFrame, int]:
    """The frame with NaN and infinite samples zeroed, and how many there were.

    Its samples are read and written a plane at a time, each plane taken by its index, never
    through frame.planes, to_ndarray() or from_ndarray(): PyAV counts nine planes in a planar
    eight-channel frame. PyAV 18 reads or writes one past the last, which kills the process (an
    841-byte 7.1 Ogg/Opus note would); PyAV 19 raises on it, which refuses the note."""
    dtype = _FLOAT_FORMATS.get(frame.format.name)
    if dtype is None:
        return frame, 0
    channels = len(frame.layout.channels)
    planes, count = (channels, frame.samples) if frame.format.is_planar else (1, frame.samples * channels)
    # A decoder's planes are padded past their samples: `count` reads the samples alone.
    values = [np.frombuffer(AudioPlane(frame, i), dtype=dtype, count=count) for i in range(planes)]
    finite = [np.isfinite(plane) for plane in values]
    bad = sum(count - int(np.count_nonzero(ok)) for ok in finite)
    if not bad:
        return frame, 0
    clean = av.AudioFrame(format=frame.format.name, layout=frame.layout, samples=frame.samples)
    for i, (plane, ok) in enumerate(zip(values, finite, strict=True)):
        AudioPlane(clean, i).update(np.where(ok, plane, 0).astype(dtype))
    clean.sample_rate = frame.sample_rate
    return clean, bad


class _StereoLevels:
    """Energy of each channel of a note's stereo frames and of their mix, from every 8th sample:
    enough to tell a cancelled mix. It costs a stereo note's decoding about 40 ms of CPU a minute
    of audio, less than keeping the channels apart through the resampler; voice messages are mono."""

    STEP = 8

    def __init__(self) -> None:
        self.mix = 0.0
        self.channels = np.zeros(2)

    def add(self, frame: av.AudioFrame) -> None:
        values = frame.to_ndarray()
        if frame.format.is_planar:
            pair = values[:, :: self.STEP]
        else:
            pair = values.reshape(-1, 2)[:: self.STEP].T
        # Float and integer frames on one scale, for a note whose format changes midway.
        scale = 1.0 if frame.format.name in _FLOAT_FORMATS else 1.0 / 2 ** (8 * frame.format.bytes - 1)
        pair = pair.astype(np.float64) * scale
        mix = (pair[0] + pair[1]) * 0.5
        self.mix += float(np.dot(mix, mix))
        self.channels += np.einsum("ij,ij->i", pair, pair)

    def cancelled(self) -> int | None:
        """The louder channel, when the mix cancels (CANCELLED_MIX); else None."""
        louder = int(np.argmax(self.channels))
        if self.mix < CANCELLED_MIX**2 * self.channels[louder]:
            log.info(
                "stereo mix at %.2f of the louder channel's level: taking channel %d alone",
                math.sqrt(self.mix / self.channels[louder]),
                louder,
            )
            return louder
        return None


# The demuxers a note may be read with (FFmpeg's names). FFmpeg otherwise probes every format it
# has, and some read other files: a 65-byte "ffconcat" text named .ogg would have the bot decode
# an audio file from its own disk as the player's note.
DEMUXERS = "ogg,matroska,mov,mp3,wav,flac,aac,amr"
# A tag that is not UTF-8 (a recorder writing Latin-1) must not make a note unreadable. PyAV 19
# decodes tags with surrogateescape and no longer takes metadata_errors; before it, the default
# "strict" raised on such a tag.
_OPEN_OPTIONS = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}


# Audio tracks of one file tried in turn while each holds nothing to hear (see decode): each is
# a decoding of the note, so a file of many silent tracks costs a few at most (OBS records up
# to six).
MAX_TRACKS = 4
# What decoding says of a track with no sound above the silence threshold, or too little.
_NOTHING_ON_TRACK = frozenset({say.SILENT, say.NOTHING_HEARD, say.TOO_SHORT})


def _decodable(container: av.container.InputContainer) -> list[av.AudioStream]:
    """The file's audio streams FFmpeg has a decoder for, in the file's order. A codec FFmpeg
    does not know (a WAV's unknown format tag, a phone's new codec) has no decoder, and PyAV
    gives its stream no codec context, nor a rate: another audio stream may still be heard."""
    return [s for s in container.streams.audio if s.codec_context is not None]


def _decodable_tracks(data: bytes) -> int:
    try:
        with av.open(
            io.BytesIO(data), mode="r", options={"format_whitelist": DEMUXERS}, **_OPEN_OPTIONS
        ) as container:
            return len(_decodable(container))
    except (av.FFmpegError, ValueError, IndexError, EOFError):
        return 0


def _decode_pcm(
    data: bytes, rate: int, max_seconds: float, channel: int | None = None, track: int = 0
) -> bytes:
    """Decoded, mixed to mono and resampled; or, given `channel`, that channel of stereo alone.
    `track`: which of the file's decodable audio streams, in the file's order."""
    unreadable = AudioError(say.UNREADABLE)
    chunks: list[bytes] = []
    stereo = _StereoLevels()
    decoded_seconds = 0.0
    decoded_values = non_finite = 0
    try:
        with av.open(
            io.BytesIO(data), mode="r", options={"format_whitelist": DEMUXERS}, **_OPEN_OPTIONS
        ) as container:
            if not container.streams.audio:
                # Read, and only pictures (a screen recording sent muted) or nothing: a list of
                # formats to convert to would not help.
                raise AudioError(say.NO_SOUND_TRACK)
            decodable = _decodable(container)
            if not decodable:
                raise unreadable from ValueError("no decoder for the file's audio codec")
            stream = decodable[track]
            # Before the stated length: a 1 Hz file is no note, however long it says it is.
            if _implausible(stream.rate, None):
                raise unreadable
            declared = _declared_seconds(container, stream)
            if declared is not None and declared > max_seconds + 1:
                raise _too_long(max_seconds)
            resampler: av.AudioResampler | None = None

            def resampler_for(frame: av.AudioFrame) -> av.AudioResampler:
                layout = "stereo" if channel is not None and len(frame.layout.channels) == 2 else "mono"
                return av.AudioResampler(format="s16", layout=layout, rate=rate)

            def keep(out: av.AudioFrame) -> None:
                values = out.to_ndarray()
                if len(out.layout.channels) == 2:
                    values = values.reshape(-1, 2)[:, channel]
                chunks.append(values.tobytes())

            # Decoded frames are gathered in a FIFO and resampled a few seconds at a time: one
            # resampler call per 20 ms Opus frame cost more than the decoding itself.
            fifo = av.AudioFifo()

            def drain() -> None:
                nonlocal non_finite
                if fifo.samples:
                    # Checked here, a few seconds at a time: frame by frame, the check's own calls
                    # cost a fifth of a note's decoding.
                    frame, bad_values = _zero_non_finite(fifo.read())
                    non_finite += bad_values
                    if channel is None and len(frame.layout.channels) == 2:
                        stereo.add(frame)
                    for out in resampler.resample(frame):
                        keep(out)

            def flush() -> None:
                if resampler is not None:
                    for out in resampler.resample(None):
                        keep(out)

            # Packet by packet, not container.decode(): a damaged packet (a garbled frame, a cut
            # last frame, a second file's tag between two mp3s) costs its few milliseconds, not
            # the note.
            packets = bad = changes = 0
            fifo_shape: tuple[str, int, str, int] | None = None  # the FIFO's frames: format, rate, layout
            first_bad: av.InvalidDataError | None = None
            most_packets = PACKETS_PER_SECOND * max_seconds
            opus = stream.codec_context.name == "opus"
            held_seconds = 0.0  # the sound an Opus note's packets hold, heard or not
            for packet in container.demux(stream):
                packets += packet.size > 0  # the last, empty packet only flushes the decoder
                if opus and packet.size:
                    held_seconds += _opus_seconds(packet)
                    if held_seconds > max_seconds + 1:
                        raise _too_long(max_seconds)
                if packets > most_packets:
                    raise unreadable from ValueError(f"more than {most_packets:.0f} packets")
                try:
                    frames = packet.decode()
                except av.InvalidDataError as exc:
                    bad += 1
                    first_bad = first_bad or exc
                    continue
                for frame in frames:
                    # Read once a frame: each read of `channels` makes a tuple of new objects.
                    channels = len(frame.layout.channels)
                    if _implausible(frame.sample_rate, channels):
                        raise unreadable
                    decoded_values += frame.samples * channels
                    if resampler is None:
                        resampler = resampler_for(frame)
                    frame.pts = None  # the FIFO would insist on gapless timestamps; we need none
                    # The FIFO refuses a frame of another format or rate, but PyAV 18's takes one
                    # of other channels as if it had its first frame's: a stereo mp3 with a mono
                    # one after it read planes that are not there and killed the bot. So the
                    # channels are compared here.
                    shape = (frame.format.name, frame.sample_rate, frame.layout.name, channels)
                    try:
                        if fifo_shape not in (None, shape):
                            raise ValueError(f"{fifo_shape} then {shape}")
                        fifo.write(frame)
                    except ValueError:
                        # The format changed mid-stream (two files joined, 44.1 kHz then 22.05,
                        # or stereo then mono): finish the old one, then a FIFO and a resampler
                        # set up for the new one.
                        changes += 1
                        if changes > MAX_FORMAT_CHANGES:
                            raise unreadable from ValueError(f"format changed {changes} times")
                        drain()
                        flush()
                        fifo = av.AudioFifo()
                        resampler = resampler_for(frame)
                        fifo.write(frame)
                    fifo_shape = shape
                    decoded_seconds += frame.samples / frame.sample_rate
                    if decoded_seconds > max_seconds:
                        raise _too_long(max_seconds)
                    if fifo.samples * channels >= FIFO_VALUES:
                        drain()
            if bad:
                log.info("skipped %d of %d audio packets the decoder refused: %s", bad, packets, first_bad)
                # Mostly damage, or nothing but: what is left is not the player's note.
                if not decoded_seconds or 2 * bad > packets:
                    raise unreadable from first_bad
            drain()  # counts the last samples' NaN and infinite values
            if non_finite:
                log.info("%d of %d decoded samples were NaN or infinite", non_finite, decoded_values)
                if non_finite > NON_FINITE_SHARE * decoded_values:
                    raise unreadable
            flush()
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise unreadable from exc
    if not chunks:
        # Samples the resampler kept back (a few at 48 kHz) are a note too short, not a silent one.
        raise AudioError(say.TOO_SHORT if decoded_seconds else say.SILENT)
    if channel is None and (louder := stereo.cancelled()) is not None:
        # Rare enough (one phone's recordings) to decode twice rather than keep every note's
        # channels apart, which cost a third more on each stereo note.
        return _decode_pcm(data, rate, max_seconds, channel=louder, track=track)
    return b"".join(chunks)


# Demuxers of bare frames: nothing in the file states its length (an mp3's Xing header does,
# when it has one and FFmpeg believes it), so FFmpeg divides the file's size by the first frame's
# bit rate. By that a 60 s VBR mp3 that starts with silence lasts 230 s, a 3 s one with junk after
# its frames 878 s, and two mp3s joined less than they hold. Such a length refuses nothing: the
# decoded seconds bound these notes, and decoding 2 minutes of mp3 takes under 0.1 s.
ESTIMATED_LENGTH = {"mp3", "aac", "amr"}


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if container.format.name in ESTIMATED_LENGTH:
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def trim_silence(samples: np.ndarray, rate: int, threshold_db: float, min_speech_ms: int) -> np.ndarray:
    """Cut leading and trailing silence; refuse audio with less speech than `min_speech_ms`."""
    window = rate * _WINDOW_MS // 1000
    count = len(samples) // window
    if count == 0:
        raise AudioError(say.TOO_SHORT)
    windows = samples[: count * window].reshape(count, window)
    # A few seconds of windows at a time: the note whole as float32, and squared, would be four
    # times its PCM on top of it, for every turn decoding at once.
    rms = np.empty(count, dtype=np.float32)
    # Levels about the note's mean: a recorder's DC offset (a cheap microphone's 3% of full
    # scale is -30 dBFS) is no sound, and counted it would make every window of silence loud.
    offset = np.float32(np.mean(samples, dtype=np.float64))
    for at in range(0, count, _LEVEL_WINDOWS):
        frames = windows[at : at + _LEVEL_WINDOWS].astype(np.float32) - offset
        rms[at : at + _LEVEL_WINDOWS] = np.sqrt(np.mean(frames * frames, axis=1))
    rms /= 32768.0
    with np.errstate(divide="ignore"):
        level = 20 * np.log10(np.maximum(rms, 1e-10))
    loud = np.flatnonzero(level > threshold_db)
    if len(loud) == 0 or len(loud) * _WINDOW_MS < min_speech_ms:
        raise AudioError(say.NOTHING_HEARD)
    pad = _PAD_MS // _WINDOW_MS
    start = max(0, loud[0] - pad) * window
    end = min(len(samples), (loud[-1] + 1 + pad) * window)
    return samples[start:end]


def pcm_to_wav(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    # The header the wave module writes, joined to the samples: one copy of them, where its
    # BytesIO and getvalue() would make two.
    size = len(pcm)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + size,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        channels,
        rate,
        rate * channels * 2,
        channels * 2,
        16,
        b"data",
        size,
    )
    return header + pcm


def wav_to_pcm(data: bytes) -> tuple[bytes, int]:
    """A 16-bit mono WAV → (samples, rate). Used for our own WAVs; others go through decode()."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise AudioError("Expected a 16-bit mono WAV.")
        return w.readframes(w.getnframes()), w.getframerate()


# ---- reply ----------------------------------------------------------------------------------


# Speech; Discord's own voice messages are about this.
OPUS_BIT_RATE = 32_000


def reply_from_pcm(
    pcm: bytes, rate: int, bit_rate: int = OPUS_BIT_RATE, complexity: int = OPUS_COMPLEXITY
) -> ReplyAudio:
    """Mono 16-bit PCM at any rate → Ogg/Opus 48 kHz with duration and waveform."""
    writer = OggOpusWriter(rate, complexity, bit_rate)
    writer.write(pcm)
    return writer.finish()


class OggOpusWriter:
    """Encodes a reply to 48 kHz Ogg/Opus piece by piece as its PCM arrives (a sentence at a time),
    so encoding overlaps the synthesis of the sentences after it; `finish` gives the ReplyAudio.

    Each piece is resampled from `rate` to 48 kHz by one resampler that keeps its state across
    pieces: one long resample, not a click at every sentence boundary.
    """

    def __init__(self, rate: int, complexity: int = OPUS_COMPLEXITY, bit_rate: int = OPUS_BIT_RATE) -> None:
        self.rate = rate
        self._resampler = (
            None if rate == REPLY_RATE else av.AudioResampler(format="s16", layout="mono", rate=REPLY_RATE)
        )
        self._out = io.BytesIO()
        self._container = av.open(self._out, mode="w", format="ogg")
        self._stream = self._container.add_stream("libopus", rate=REPLY_RATE, layout="mono")
        self._stream.bit_rate = bit_rate
        self._stream.codec_context.options = {"compression_level": str(complexity)}
        self._written = 0
        self._closed = False
        self._pieces: list[np.ndarray] = []  # 48 kHz samples, for the waveform and the duration

    def write(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16)
        if samples.size == 0:
            return
        if self._resampler is None:
            self._encode(samples)
            return
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = None  # the resampler would insist on gapless timestamps; it needs none
        for out in self._resampler.resample(frame):
            self._encode(out.to_ndarray().reshape(-1))

    def _encode(self, samples: np.ndarray) -> None:
        self._pieces.append(samples)
        for start in range(0, len(samples), _ENCODE_BLOCK):
            block = samples[start : start + _ENCODE_BLOCK]
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = REPLY_RATE
            frame.pts = self._written
            self._written += len(block)
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def finish(self) -> ReplyAudio:
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                self._encode(out.to_ndarray().reshape(-1))
        if not self._written:
            # Ogg writes its header with the first packet: no sound (a reply of punctuation
            # spoken) would be 0 bytes, which no player opens. One Opus frame of silence instead.
            self._encode(np.zeros(REPLY_RATE // 50, dtype=np.int16))
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()
        samples = np.concatenate(self._pieces) if self._pieces else np.zeros(0, dtype=np.int16)
        return ReplyAudio(
            ogg=self._out.getvalue(),
            duration_secs=round(len(samples) / REPLY_RATE, 2),
            waveform=waveform(samples),
        )

    def close(self) -> None:
        """Abandon a reply half written (its voice failed and another speaks it)."""
        if not self._closed:
            self._closed = True
            self._container.close()


def reply_from_encoded(data: bytes, fmt: str) -> ReplyAudio:
    """An engine's reply audio → what Discord wants, re-encoding only when it is not Ogg/Opus."""
    if fmt == "pcm16":  # OpenAI's raw format: 24 kHz mono little-endian
        return reply_from_pcm(data, MODEL_RATE, complexity=REPLY_OPUS_COMPLEXITY)
    samples = np.frombuffer(_decode_pcm(data, REPLY_RATE, max_seconds=3600.0), dtype=np.int16)
    duration = round(len(samples) / REPLY_RATE, 2)
    if fmt == "ogg_opus" and data.startswith(b"OggS"):
        return ReplyAudio(ogg=data, duration_secs=duration, waveform=waveform(samples))
    ogg = _encode_ogg_opus(samples, REPLY_OPUS_COMPLEXITY)
    return ReplyAudio(ogg=ogg, duration_secs=duration, waveform=waveform(samples))


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples, full scale at ±1, as 16-bit: clipped, not wrapped."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=dst)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = src
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


def _encode_ogg_opus(samples: np.ndarray, complexity: int) -> bytes:
    writer = OggOpusWriter(REPLY_RATE, complexity)
    writer.write(samples.astype(np.int16, copy=False).tobytes())
    return writer.finish().ogg


def waveform(samples: np.ndarray, max_points: int = WAVEFORM_MAX) -> str:
    """Discord's voice-message waveform: peak amplitude per bucket, 0-255, base64."""
    if len(samples) == 0:
        return base64.b64encode(bytes([0])).decode()
    # Discord's own clients use about 10 points a second, capped at 256.
    points = max(1, min(max_points, math.ceil(len(samples) / REPLY_RATE * 10)))
    buckets = np.array_split(np.abs(samples.astype(np.int32)), points)
    peaks = [int(b.max()) if len(b) else 0 for b in buckets]
    top = max(peaks) or 1
    scaled = bytes(min(255, round(p * 255 / top)) for p in peaks)
    return base64.b64encode(scaled).decode()
