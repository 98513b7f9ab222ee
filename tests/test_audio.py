import base64
import io
import os
import struct
import subprocess
import sys
import tracemalloc
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from bot import audio
from bot.config import AudioSettings
from tests.audio_samples import FORMATS, constant_flac, encode, speechlike

LIMITS = AudioSettings()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_decodes_trims_and_resamples(fmt: str) -> None:
    data = encode(speechlike(2.0, lead=0.8, tail=0.8), 48_000, fmt)
    decoded = audio.decode(data, LIMITS)
    assert decoded.segment.frame_rate == 24_000
    assert decoded.segment.channels == 1
    assert decoded.segment.sample_width == 2
    assert decoded.original_seconds == pytest.approx(3.6, abs=0.1)
    # 0.8 s of silence each side is cut down to the 120 ms pad
    assert decoded.seconds == pytest.approx(2.0 + 0.24, abs=0.08)
    with wave.open(io.BytesIO(decoded.wav())) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
        assert w.getnframes() == len(decoded.segment.raw_data) // 2


def test_a_note_whose_tag_is_not_utf8_is_decoded() -> None:
    # A recorder writing its title in Latin-1: PyAV before 19 raised on the tag unless told to
    # ignore it, and PyAV 19 refuses to be told.
    data = encode(speechlike(1.5, rate=16_000), 16_000, "wav")
    name = b"Caf\xe9 note\x00"
    info = b"INFO" + b"INAM" + struct.pack("<I", len(name)) + name
    body = data[12:] + b"LIST" + struct.pack("<I", len(info)) + info
    tagged = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
    assert audio.decode(tagged, LIMITS).seconds == pytest.approx(1.74, abs=0.08)


def test_sample_rate_of_input_does_not_matter() -> None:
    data = encode(speechlike(1.5, rate=16_000), 16_000, "wav")
    assert audio.decode(data, LIMITS).seconds == pytest.approx(1.74, abs=0.08)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n" * 50, "PDF"),
        (b"\x89PNG\r\n\x1a\n" + bytes(500), "PNG"),
        (bytes(range(256)) * 40, "couldn't read"),
        (b"OggS" + bytes(3000), "couldn't read"),
    ],
)
def test_bad_input_raises_one_friendly_error(data: bytes, says: str) -> None:
    with pytest.raises(audio.AudioError, match=says):
        audio.decode(data, LIMITS)


@pytest.mark.parametrize(
    ("size", "max_bytes", "told"),
    [
        (8_040_000, 8_000_000, "(8.1 MB). Please keep voice notes under 8 MB."),
        (8_000_001, 8_000_000, "(8.1 MB). Please keep voice notes under 8 MB."),
        (7_650_000, 7_600_000, "(7.7 MB). Please keep voice notes under 7.6 MB."),
        (25_000_000, 8_000_000, "(25.0 MB). Please keep voice notes under 8 MB."),
    ],
)
def test_a_file_just_over_the_limit_is_told_a_size_over_it(size: int, max_bytes: int, told: str) -> None:
    # Rounded to the nearest 0.1 MB, 8.04 MB read "(8.0 MB) ... under 8 MB".
    assert audio.too_big_message(size, AudioSettings(max_bytes=max_bytes)).endswith(told)


def test_truncated_voice_note_is_refused_or_decoded_never_crashes() -> None:
    data = encode(speechlike(2.0), 48_000, "ogg")
    for cut in (10, 100, len(data) // 3):
        try:
            audio.decode(data[:cut], LIMITS)
        except audio.AudioError:
            pass


def test_silence_only_is_refused() -> None:
    silent = np.zeros(48_000 * 3, dtype=np.int16)
    with pytest.raises(audio.AudioError, match="couldn't hear anything"):
        audio.decode(encode(silent, 48_000, "ogg"), LIMITS)


def test_a_click_shorter_than_the_least_speech_is_nothing_heard() -> None:
    # 50 ms of sound in two seconds of silence is louder than the threshold, but less than
    # audio.min_speech_ms (250) of it: a knock on the microphone, not a question.
    click = np.zeros(48_000 * 2, dtype=np.int16)
    click[48_000 : 48_000 + 2_400] = speechlike(0.05, lead=0.0, tail=0.0)
    with pytest.raises(audio.AudioError, match="couldn't hear anything"):
        audio.decode(encode(click, 48_000, "wav"), LIMITS)
    assert audio.decode(encode(click, 48_000, "wav"), AudioSettings(min_speech_ms=0)).seconds < 0.5


def test_a_recorders_dc_offset_is_not_heard_as_speech() -> None:
    # 1000 of 32768 is -30 dBFS, over the -40 taken for silence, but no sound at all.
    offset = lambda samples: (samples.astype(np.int32) + 1000).astype(np.int16)  # noqa: E731
    with pytest.raises(audio.AudioError, match="couldn't hear anything"):
        audio.decode(encode(offset(np.zeros(48_000 * 3, dtype=np.int16)), 48_000, "wav"), LIMITS)
    voice = offset(speechlike(2.0, lead=0.8, tail=0.8))
    assert audio.decode(encode(voice, 48_000, "wav"), LIMITS).seconds == pytest.approx(2.24, abs=0.08)


def test_silence_is_refused_when_no_least_speech_is_asked_for() -> None:
    # audio.min_speech_ms = 0 is accepted by the settings: a silent note is still nothing heard.
    silent = np.zeros(48_000 * 3, dtype=np.int16)
    with pytest.raises(audio.AudioError, match="couldn't hear anything"):
        audio.decode(encode(silent, 48_000, "ogg"), AudioSettings(min_speech_ms=0))


def test_over_the_byte_limit_is_refused_before_decoding() -> None:
    limits = AudioSettings(max_bytes=1000)
    with pytest.raises(audio.AudioError, match="too big"):
        audio.decode(encode(speechlike(2.0), 48_000, "wav"), limits)


def test_a_note_of_exactly_the_byte_limit_is_decoded() -> None:
    # Discord's and the web's front ends take a note of audio.max_bytes, and download it whole:
    # decoding must not then tell the player it is too big.
    data = encode(speechlike(2.0), 48_000, "wav")
    assert audio.decode(data, AudioSettings(max_bytes=len(data))).seconds > 2.0
    with pytest.raises(audio.AudioError, match="too big"):
        audio.decode(data, AudioSettings(max_bytes=len(data) - 1))


@pytest.mark.parametrize("fmt", ["ogg", "wav", "mp3"])
def test_over_the_length_limit_is_refused(fmt: str) -> None:
    limits = AudioSettings(max_seconds=5)
    with pytest.raises(audio.AudioError, match="too long"):
        audio.decode(encode(speechlike(8.0, rate=16_000), 16_000, fmt), limits)


def test_reply_is_48k_ogg_opus_with_matching_duration_and_waveform() -> None:
    pcm = speechlike(3.0, rate=24_000, lead=0, tail=0).tobytes()
    reply = audio.reply_from_pcm(pcm, 24_000)
    assert reply.ogg.startswith(b"OggS")
    assert reply.duration_secs == pytest.approx(3.0, abs=0.02)
    points = base64.b64decode(reply.waveform)
    assert 1 <= len(points) <= 256
    assert len(points) == 30  # ten a second
    assert max(points) == 255
    back = audio.decode(reply.ogg, LIMITS, rate=48_000)
    assert back.original_seconds == pytest.approx(3.0, abs=0.05)


def test_waveform_follows_the_loudness_and_caps_at_256_points() -> None:
    rate = 48_000
    quiet_then_loud = np.concatenate([np.full(rate, 1000), np.full(rate, 20000)]).astype(np.int16)
    points = base64.b64decode(audio.waveform(quiet_then_loud))
    assert len(points) == 20
    assert all(p < 20 for p in points[:10]) and all(p == 255 for p in points[10:])
    long = np.full(rate * 60, 5000, dtype=np.int16)
    assert len(base64.b64decode(audio.waveform(long))) == 256


def test_ogg_opus_reply_is_passed_through_without_reencoding() -> None:
    first = audio.reply_from_pcm(speechlike(1.0, rate=24_000).tobytes(), 24_000)
    again = audio.reply_from_encoded(first.ogg, "ogg_opus")
    assert again.ogg is first.ogg
    assert again.duration_secs == pytest.approx(first.duration_secs, abs=0.03)


def test_a_reply_said_to_be_ogg_opus_that_is_not_ogg_is_encoded_to_it() -> None:
    # An engine's format and its bytes may disagree (a proxy's WAV labelled as asked): passed
    # through, Discord would be sent a voice message no player can open.
    pcm = speechlike(1.0, rate=24_000, lead=0, tail=0).tobytes()
    reply = audio.reply_from_encoded(audio.pcm_to_wav(pcm, 24_000), "ogg_opus")
    assert reply.ogg.startswith(b"OggS")
    assert reply.duration_secs == pytest.approx(1.0, abs=0.03)


def test_wav_and_pcm16_replies_are_encoded_once_to_opus() -> None:
    pcm = speechlike(1.0, rate=24_000, lead=0, tail=0).tobytes()
    for data, fmt in ((audio.pcm_to_wav(pcm, 24_000), "wav"), (pcm, "pcm16")):
        reply = audio.reply_from_encoded(data, fmt)
        assert reply.ogg.startswith(b"OggS")
        assert reply.duration_secs == pytest.approx(1.0, abs=0.03)


def test_cloud_replies_are_encoded_with_the_replies_effort_not_the_notes() -> None:
    # Re-encoding a cloud engine's PCM costs a third at complexity 5 of what it does at 10.
    pcm = speechlike(1.0, rate=24_000).tobytes()
    # Each Ogg stream has a random serial number, so the files are compared by size: libopus
    # packs the same audio differently at each effort.
    spoken = len(audio.reply_from_pcm(pcm, 24_000, complexity=audio.REPLY_OPUS_COMPLEXITY).ogg)
    as_a_note = len(audio.reply_from_pcm(pcm, 24_000).ogg)
    assert spoken != as_a_note
    assert len(audio.reply_from_encoded(pcm, "pcm16").ogg) == spoken
    assert len(audio.reply_from_encoded(audio.pcm_to_wav(pcm, 24_000), "wav").ogg) == spoken


def test_a_playlist_naming_a_file_on_the_bots_disk_is_not_audio() -> None:
    # FFmpeg's safe mode refuses absolute paths in a playlist, not paths relative to the bot's
    # working directory.
    sample = os.path.relpath(Path(audio.__file__).parent / "data" / "samples" / "2-how-many-points.ogg")
    assert audio.decode(Path(sample).read_bytes(), LIMITS).seconds > 1
    for script in (f"ffconcat version 1.0\nfile {sample}\n", f"#EXTM3U\n#EXTINF:2,\n{sample}\n"):
        with pytest.raises(audio.AudioError, match="couldn't read"):
            audio.decode(script.encode(), LIMITS)


def test_a_crafted_sample_rate_is_refused_before_it_is_decoded() -> None:
    # FLAC allows up to 655 kHz: 87 KB of it, eight channels, once cost 1.3 GB to decode.
    data = encode(speechlike(1.0, rate=384_000), 384_000, "flac")
    with pytest.raises(audio.AudioError, match="couldn't read"):
        audio.decode(data, LIMITS)
    assert audio.decode(encode(speechlike(1.0, rate=96_000), 96_000, "flac"), LIMITS).seconds > 1


def test_more_than_eight_channels_are_refused() -> None:
    def wav(channels: int) -> bytes:
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(16_000)
            w.writeframes(np.repeat(speechlike(1.0, rate=16_000)[:, None], channels, axis=1).tobytes())
        return out.getvalue()

    assert audio.decode(wav(8), LIMITS).seconds > 1
    # Not 9: FFmpeg's resampler happens to refuse that layout itself, and would hide a lost limit.
    with pytest.raises(audio.AudioError, match="couldn't read"):
        audio.decode(wav(16), LIMITS)


def test_a_file_that_holds_more_than_it_declares_is_stopped_while_decoding() -> None:
    # A FLAC header states how many samples follow; this one says one second and holds nine, so
    # it passes the check on the declared length and only counting the decoded seconds stops it.
    data = bytearray(encode(speechlike(8.0, rate=16_000), 16_000, "flac"))
    streaminfo = slice(8 + 10, 8 + 18)  # after "fLaC" and the block header: rate, channels, bits, total
    fields = int.from_bytes(data[streaminfo], "big")
    assert fields & (2**36 - 1) == 9 * 16_000
    data[streaminfo] = ((fields & ~(2**36 - 1)) | 16_000).to_bytes(8, "big")
    with av.open(io.BytesIO(bytes(data))) as container:
        assert container.duration == 1_000_000  # the lie is what the demuxer believes
    with pytest.raises(audio.AudioError, match="too long"):
        audio.decode(bytes(data), AudioSettings(max_seconds=5))


def _ogg_crc(page: bytes) -> int:
    """The CRC-32 an Ogg page carries (polynomial 0x04C11DB7, not reflected, over the page with
    its CRC field zeroed)."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


def _ogg_stating(seconds: int) -> bytes:
    """Two seconds of Ogg/Opus whose last page's granule position (the length FFmpeg reads)
    says `seconds`."""
    data = bytearray(encode(speechlike(1.0), 48_000, "ogg"))
    last = data.rfind(b"OggS")
    data[last + 6 : last + 14] = (48_000 * seconds).to_bytes(8, "little")
    data[last + 22 : last + 26] = bytes(4)
    data[last + 22 : last + 26] = _ogg_crc(bytes(data[last:])).to_bytes(4, "little")
    return bytes(data)


def _flac_stating(seconds: int) -> bytes:
    """Two seconds of FLAC whose STREAMINFO's total samples say `seconds`."""
    data = bytearray(encode(speechlike(1.0, rate=16_000), 16_000, "flac"))
    streaminfo = slice(8 + 10, 8 + 18)  # after "fLaC" and the block header: rate, channels, bits, total
    fields = int.from_bytes(data[streaminfo], "big")
    data[streaminfo] = ((fields & ~(2**36 - 1)) | 16_000 * seconds).to_bytes(8, "big")
    return bytes(data)


@pytest.mark.parametrize("stating", [_ogg_stating, _flac_stating], ids=["ogg", "flac"])
def test_a_header_stating_too_long_a_note_refuses_it_before_its_frames(stating) -> None:
    data = stating(600)
    with av.open(io.BytesIO(data)) as container:
        assert container.duration == 600_000_000  # what the demuxer believes
    # Its frames hold two seconds: decoding them could not find it too long, only the header.
    assert audio.decode(data, AudioSettings(max_seconds=1000)).original_seconds == pytest.approx(2, abs=0.1)
    with pytest.raises(audio.AudioError, match="too long"):
        audio.decode(data, LIMITS)


def test_a_header_stating_a_second_past_the_limit_is_let_decode_and_more_is_not() -> None:
    # A container's stated length may round up past what it holds: one second of slack, no more.
    limits = AudioSettings(max_seconds=60)
    assert audio.decode(_ogg_stating(61), limits).original_seconds == pytest.approx(2, abs=0.1)
    with pytest.raises(audio.AudioError, match="too long"):
        audio.decode(_ogg_stating(62), limits)


def test_waveform_is_the_peak_of_each_bucket_not_its_average() -> None:
    # Two seconds, twenty buckets: the first ten silent but for one click each (every other one
    # negative), the last ten a steady level below the clicks. A mean or RMS would make the clicks
    # vanish and the steady half the loudest.
    samples = np.zeros(2 * 48_000, dtype=np.int16)
    samples[48_000:] = 8000
    for bucket in range(10):
        samples[bucket * 4800 + 100] = 20000 if bucket % 2 else -20000
    assert list(base64.b64decode(audio.waveform(samples))) == [255] * 10 + [102] * 10


# Run in a child so its peak resident memory (ru_maxrss, KiB on Linux) is this decode's alone.
# The child's own peak (VmHWM, its address space since exec), not getrusage's ru_maxrss: Linux
# carries the parent's peak into that across fork and exec, so a test process grown past the
# limit (the neural voice's ONNX session alone is about 350 MB) failed this for a decoder at 80 MB.
_DECODE_AND_MEASURE = """
import sys
from bot import audio
from bot.config import AudioSettings
decoded = audio.decode(open(sys.argv[1], "rb").read(), AudioSettings())
status = open("/proc/self/status").read()
print(decoded.original_seconds, status.split("VmHWM:")[1].split()[0])
"""
DECODE_PEAK_MB = 400


def test_decoding_a_long_192khz_eight_channel_flac_stays_under_400_mb(tmp_path) -> None:
    # 110 s at 192 kHz on 8 channels, just inside every limit: 169 million samples, 338 MB as
    # 16-bit, from a 50 KB file. Gathered whole before resampling it peaked at 2.5 GB; resampled
    # 480,000 values at a time it peaks near 80 MB, most of that the interpreter and libraries.
    data = constant_flac(110, 192_000, layout="7.1")
    assert len(data) < 200_000
    note = tmp_path / "crafted.flac"
    note.write_bytes(data)
    child = subprocess.run(
        [sys.executable, "-c", _DECODE_AND_MEASURE, str(note)], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    seconds, peak_kib = child.stdout.split()
    assert float(seconds) == pytest.approx(110, abs=0.01)  # decoded to the end, not refused
    assert int(peak_kib) / 1024 < DECODE_PEAK_MB


def test_a_long_note_decodes_to_its_wav_holding_no_more_than_two_copies_of_it() -> None:
    # Every turn decodes at once under a raid: a note of the longest kind (115 s) whose levels
    # are read as float32, and squared, all at once peaks at five times its WAV, 28 MB a turn.
    data = encode(speechlike(115.0), 48_000, "ogg")
    tracemalloc.start()
    try:
        wav = audio.decode(data, AudioSettings()).wav()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(wav) > 5_000_000
    assert peak <= 2.2 * len(wav), f"peak {peak / len(wav):.1f} times the {len(wav)} bytes of the WAV"


@pytest.mark.parametrize(("size", "channels"), [(9600, 1), (9601, 1), (19200, 2), (0, 1)])
def test_a_wav_is_written_as_the_wave_module_writes_it(size: int, channels: int) -> None:
    pcm = bytes(n % 251 for n in range(size))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(24_000)
        w.writeframes(pcm)
    assert audio.pcm_to_wav(pcm, 24_000, channels) == out.getvalue()


def _garbled(data: bytes, at: int, count: int = 56, sync: bytes = b"") -> bytes:
    """`count` bytes overwritten from `at`, or inside the first frame after `at` that starts with
    `sync` (its header kept, so the demuxer still hands the frame to the decoder)."""
    out = bytearray(data)
    start = out.find(sync, at) + 4 if sync else at
    out[start : start + count] = bytes((n * 37 + 11) % 256 for n in range(count))
    return bytes(out)


MP3_SYNC = b"\xff\xfb"  # an MPEG-1 layer III frame header, as LAME writes it at 48 kHz


def _damaged(kind: str) -> tuple[bytes, float]:
    """A note damaged in one place, and how many seconds of it are still there."""
    note = speechlike(2.0)  # three seconds with its silences
    if kind == "mp3, one frame garbled":
        mp3 = encode(note, 48_000, "mp3")
        return _garbled(mp3, len(mp3) // 2, sync=MP3_SYNC), 3.0
    if kind == "mp3 sent twice, tag and all":
        mp3 = encode(note, 48_000, "mp3")
        return mp3 + mp3, 6.0
    if kind == "m4a, 40 bytes garbled":
        m4a = encode(note, 48_000, "m4a")
        return _garbled(m4a, len(m4a) // 2, count=40), 3.0
    flac = encode(note, 48_000, "flac")
    return flac[: len(flac) // 2], 1.15  # the first half of the file: its last frame cut


@pytest.mark.parametrize(
    "kind", ["mp3, one frame garbled", "mp3 sent twice, tag and all", "m4a, 40 bytes garbled", "flac cut"]
)
def test_a_damaged_packet_costs_its_frame_not_the_note(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    data, seconds = _damaged(kind)
    with caplog.at_level("INFO", logger="bot.audio"):
        decoded = audio.decode(data, LIMITS)
    assert decoded.original_seconds == pytest.approx(seconds, abs=0.1)
    assert any("packets the decoder refused" in r.getMessage() for r in caplog.records)


def test_a_note_mostly_damaged_is_refused_with_the_decoders_reason() -> None:
    mp3 = encode(speechlike(2.0), 48_000, "mp3")
    frame = mp3.find(MP3_SYNC, len(mp3) // 4)  # every frame of the last three quarters
    while frame >= 0:
        mp3 = _garbled(mp3, frame, sync=MP3_SYNC)
        frame = mp3.find(MP3_SYNC, frame + 4)
    with pytest.raises(audio.AudioError, match="couldn't read") as refused:
        audio.decode(mp3, LIMITS)
    assert isinstance(refused.value.__cause__, av.InvalidDataError)


def _adts(samples: np.ndarray, rate: int, layout: str = "mono") -> bytes:
    """Raw AAC in ADTS frames, which carry their own sample rate and channels: what .aac files
    are. `samples` (int16 mono) on every channel of `layout`."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="adts") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        packed = np.repeat(samples[:, None], av.AudioLayout(layout).nb_channels, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        frame.sample_rate = rate
        for resampled in resampler.resample(frame) + resampler.resample(None):
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["mp3", "aac"])
def test_a_note_whose_sample_rate_changes_midway_is_decoded_whole(fmt: str) -> None:
    # Two recordings joined, each at its own rate: 1.5 s of sound with 0.5 s of silence either
    # side, so 2.5 s each. AAC adds its encoder's priming and padding, under 0.1 s a part.
    def part(rate: int) -> bytes:
        samples = speechlike(1.5, rate=rate)
        return encode(samples, rate, "mp3") if fmt == "mp3" else _adts(samples, rate)

    first, second = (44_100, 22_050) if fmt == "mp3" else (44_100, 16_000)
    decoded = audio.decode(part(first) + part(second), LIMITS)
    assert decoded.original_seconds == pytest.approx(5.0, abs=0.2)


# Run in a child: the failure this guards against is the process killed, not an exception.
_DECODE_NOTE = """
import sys
from bot import audio
from bot.config import AudioSettings

print(audio.decode(open(sys.argv[1], "rb").read(), AudioSettings()).original_seconds)
"""


@pytest.mark.parametrize(
    "layouts", [("stereo", "mono"), ("mono", "stereo")], ids=["stereo-mono", "mono-stereo"]
)
@pytest.mark.parametrize("fmt", ["mp3", "aac"])
def test_a_note_whose_channels_change_midway_is_decoded_whole(fmt: str, layouts, tmp_path) -> None:
    # Two recordings joined at one rate, one stereo and one mono: PyAV 18's FIFO took the
    # second's frames as if they had the first's channels and read planes that are not there,
    # which killed the bot (found fuzzing ADTS; `cat a.mp3 b.mp3` makes one too).
    def part(layout: str) -> bytes:
        samples = speechlike(1.5, rate=44_100)
        return encode(samples, 44_100, "mp3", layout) if fmt == "mp3" else _adts(samples, 44_100, layout)

    note = tmp_path / f"joined.{fmt}"
    note.write_bytes(part(layouts[0]) + part(layouts[1]))
    child = subprocess.run(
        [sys.executable, "-c", _DECODE_NOTE, str(note)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert float(child.stdout) == pytest.approx(5.0, abs=0.2)


def test_a_note_whose_format_turns_at_every_frame_is_unreadable() -> None:
    # Each turn costs a resampler made and flushed; recordings joined turn a few times, not at
    # every one of a file's 90 frames.
    def frames(rate: int) -> list[bytes]:
        with av.open(io.BytesIO(_adts(speechlike(1.0, rate=rate), rate)), format="aac") as container:
            return [bytes(packet) for packet in container.demux(audio=0) if packet.size]

    turning = b"".join(a + b for a, b in zip(frames(96_000), frames(88_200), strict=False))
    with pytest.raises(audio.AudioError, match="couldn't read") as refused:
        audio.decode(turning, LIMITS)
    assert "format changed 21 times" in str(refused.value.__cause__)


def _vbr_mp3_without_xing(samples: np.ndarray, rate: int) -> bytes:
    """A VBR mp3 with no Xing header, which states the frame count: what FFmpeg writes to a pipe."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp3", options={"write_xing": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.codec_context.flags |= av.codec.context.Flags.qscale
        stream.codec_context.qscale = 2
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=rate)
        for resampled in resampler.resample(frame) + resampler.resample(None):
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return out.getvalue()


def _ffmpegs_length(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        return container.duration / 1_000_000


@pytest.mark.parametrize("kind", ["vbr without xing, silence first", "junk after the frames"])
def test_an_mp3s_estimated_length_refuses_nothing(kind: str) -> None:
    # FFmpeg has no stated length for these and divides the file's size by the first frame's bit
    # rate: a quiet first frame or bytes that are not frames make a short note look long.
    limits = AudioSettings(max_seconds=10)
    if kind.startswith("vbr"):
        note = speechlike(6.0, rate=44_100, lead=3.0, tail=0.0).astype(np.float64)
        note[3 * 44_100 :] += np.random.default_rng(0).normal(0, 6000, 6 * 44_100)  # dear to encode
        data = _vbr_mp3_without_xing(note.clip(-32768, 32767).astype(np.int16), 44_100)
    else:
        data = encode(speechlike(8.0), 48_000, "mp3") + np.random.default_rng(0).bytes(100_000)
    assert _ffmpegs_length(data) > 2 * limits.max_seconds  # what the length check used to trust
    assert audio.decode(data, limits).original_seconds == pytest.approx(9.0, abs=0.1)
    with pytest.raises(audio.AudioError, match="too long"):  # the decoded seconds still count
        audio.decode(data, AudioSettings(max_seconds=8))


def test_a_raw_amr_note_is_decoded() -> None:
    # AMR-NB in its own file ("#!AMR"), as old phones and some recorders save voice. Recorded once
    # (PyAV 18's libopencore_amrnb, two seconds of speechlike()): PyAV 19 decodes AMR, but has no
    # encoder for it.
    note = (Path(__file__).parent / "samples" / "speechlike-2s.amr").read_bytes()
    assert note.startswith(b"#!AMR\n")
    assert audio.decode(note, LIMITS).original_seconds == pytest.approx(3.0, abs=0.05)


def test_a_reply_with_no_sound_is_still_an_ogg_a_player_can_open() -> None:
    # A voice given only punctuation writes no PCM; an Ogg stream with no packet has no header.
    reply = audio.reply_from_pcm(b"", 22_050)
    assert reply.ogg.startswith(b"OggS")
    assert reply.duration_secs == 0.02  # one Opus frame of silence
    with av.open(io.BytesIO(reply.ogg)) as container:
        assert container.streams.audio[0].codec_context.name == "opus"


def test_a_note_with_no_frames_or_too_short_to_judge_is_told_which() -> None:
    # "Record it again" for a file with no sound at all; "too short" for a blip under the 10 ms a
    # loudness window takes, rather than "I couldn't hear anything".
    with pytest.raises(audio.AudioError, match="no sound in it"):
        audio.decode(audio.pcm_to_wav(b"", 24_000), LIMITS)
    blip = np.full(120, 8000, dtype=np.int16)  # 5 ms at 24 kHz
    with pytest.raises(audio.AudioError, match="too short"):
        audio.decode(audio.pcm_to_wav(blip.tobytes(), 24_000), LIMITS)


@pytest.mark.parametrize("rate", [8_000, 16_000, 24_000, 44_100, 48_000])
@pytest.mark.parametrize("samples", [1, 10, 100, 1_000])
def test_a_note_shorter_than_the_least_speech_is_too_short_at_any_rate(rate: int, samples: int) -> None:
    # A tap on the record button: at 48 kHz its few samples were all kept back by the resampler
    # and the player heard their note "has no sound in it"; at 8 kHz, resampled past one window,
    # "I couldn't hear anything". Whatever its rate, a note shorter than audio.min_speech_ms
    # cannot hold what the bot would hear.
    tone = (np.sin(np.arange(samples) / 3) * 20_000).astype(np.int16)
    assert samples / rate * 1000 < LIMITS.min_speech_ms
    with pytest.raises(audio.AudioError, match="too short"):
        audio.decode(audio.pcm_to_wav(tone.tobytes(), rate), LIMITS)


@pytest.mark.parametrize("rate", [16_000, 24_000, 48_000])
def test_a_note_as_long_as_the_least_speech_is_not_too_short(rate: int) -> None:
    # audio.min_speech_ms is the least a note may hold: one of exactly that length is heard.
    samples = rate * LIMITS.min_speech_ms // 1000
    tone = (np.sin(np.arange(samples) / 3) * 20_000).astype(np.int16)
    decoded = audio.decode(audio.pcm_to_wav(tone.tobytes(), rate), LIMITS)
    assert decoded.original_seconds * 1000 == pytest.approx(LIMITS.min_speech_ms)


def _picture_only(container_format: str, codec: str) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for n in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = n
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(("container_format", "codec"), [("mp4", "mpeg4"), ("webm", "libvpx")])
def test_a_video_with_no_sound_track_is_told_so_not_called_unreadable(container_format, codec) -> None:
    # "couldn't read that audio file, send an ogg, mp3, m4a..." would have the player convert a
    # file that was read: there is simply nothing in it to hear.
    with pytest.raises(audio.AudioError, match="no sound track"):
        audio.decode(_picture_only(container_format, codec), LIMITS)


def _stereo_wav(left: np.ndarray, right: np.ndarray, rate: int) -> bytes:
    return audio.pcm_to_wav(np.stack([left, right], axis=1).astype("<i2").tobytes(), rate, channels=2)


def test_a_stereo_note_with_one_channel_inverted_is_heard_not_cancelled(caplog) -> None:
    # Some phones record two microphones with one phase-inverted: mixed to mono they cancel.
    voice = speechlike(2.0, rate=16_000)
    inverted = _stereo_wav(voice, -voice, 16_000)
    with caplog.at_level("INFO", logger="bot.audio"):
        decoded = audio.decode(inverted, LIMITS)
    assert decoded.seconds == pytest.approx(2.24, abs=0.08)
    assert "taking channel" in caplog.text
    # Ordinary stereo keeps FFmpeg's mix: half of each channel.
    normal = audio.decode(_stereo_wav(voice, voice // 2, 16_000), LIMITS)
    alone = audio.decode(encode(voice, 16_000, "wav"), LIMITS)
    level = lambda d: np.abs(np.frombuffer(d.segment.raw_data, np.int16)).max()  # noqa: E731
    assert level(normal) == pytest.approx(0.75 * level(alone), rel=0.01)


def _float_wav(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_note_of_nan_or_infinite_samples_is_unreadable_not_loud(value, caplog) -> None:
    with caplog.at_level("INFO", logger="bot.audio"), pytest.raises(audio.AudioError, match="couldn't read"):
        audio.decode(_float_wav(np.full(32_000, value), 16_000), LIMITS)
    assert "NaN or infinite" in caplog.text


def test_a_note_of_more_than_a_few_nan_samples_is_unreadable() -> None:
    # A stray bad sample is zeroed; a note with a twentieth of its samples NaN is not a recording.
    voice = speechlike(2.0, rate=16_000, lead=0.8, tail=0.8) / 32768.0
    voice[::20] = np.nan
    with pytest.raises(audio.AudioError, match="couldn't read"):
        audio.decode(_float_wav(voice, 16_000), LIMITS)


def test_a_few_nan_samples_in_a_good_note_are_zeroed() -> None:
    voice = speechlike(2.0, rate=16_000, lead=0.8, tail=0.8) / 32768.0
    voice[:3] = np.nan  # in the leading silence: left as they are, they would be heard as speech
    voice[-3:] = np.inf
    assert audio.decode(_float_wav(voice, 16_000), LIMITS).seconds == pytest.approx(2.24, abs=0.08)


def test_nan_samples_are_looked_for_a_few_seconds_at_a_time(monkeypatch) -> None:
    # Counted, not timed: a 30 s note is 1,500 Opus frames, and the look's own calls, frame by
    # frame, cost a fifth of its decoding; every note of a raid is decoded.
    looks = []

    def counted(frame: av.AudioFrame) -> tuple[av.AudioFrame, int]:
        looks.append(frame.samples)
        return zero_non_finite(frame)

    zero_non_finite = audio._zero_non_finite
    monkeypatch.setattr(audio, "_zero_non_finite", counted)
    decoded = audio.decode(encode(speechlike(30.0), 48_000, "ogg"), LIMITS)
    # Every decoded sample was looked at.
    assert sum(looks) / 48_000 == pytest.approx(decoded.original_seconds, abs=0.05)
    assert len(looks) <= 5


def test_a_few_nan_samples_in_a_stereo_float_note_are_zeroed() -> None:
    # A packed float frame holds every channel in its one plane: read as one plane a channel, a
    # stereo float WAV would be read past its planes.
    voice = speechlike(2.0, rate=16_000, lead=0.8, tail=0.8) / 32768.0
    both = np.repeat(voice[:, None], 2, axis=1)
    both[:3, 0] = np.nan  # in the leading silence: left as they are, they would be heard as speech
    both[-3:, 1] = np.inf
    out = io.BytesIO()
    with av.open(out, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_f32le", rate=16_000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            both.astype(np.float32).reshape(1, -1), format="flt", layout="stereo"
        )
        frame.sample_rate = 16_000
        frame.pts = 0
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    assert audio.decode(out.getvalue(), LIMITS).seconds == pytest.approx(2.24, abs=0.08)


@pytest.mark.parametrize(("rate", "samples"), [(1, 100), (1, 200), (3_000, 9_000)])
def test_a_sample_rate_too_low_for_speech_is_unreadable(rate: int, samples: int) -> None:
    # 100 samples at 1 Hz last 100 s, under the limit, and decoded to a slow wobble called
    # silence; 200 state 200 s, over it, but the file is no note at all, whatever its length.
    wobble = (np.sin(np.arange(samples) * 2 * np.pi * 0.3) * 20000).astype(np.int16)
    with pytest.raises(audio.AudioError, match="couldn't read"):
        audio.decode(audio.pcm_to_wav(wobble.tobytes(), rate), LIMITS)


def test_telephone_rate_is_still_heard() -> None:
    assert audio.decode(encode(speechlike(1.5, rate=8_000), 8_000, "wav"), LIMITS).seconds > 1


# Run in a child: the failure this guards against is the process killed, not an exception.
_DECODE_SURROUND = """
import sys
import av
import numpy as np
from av.audio.plane import AudioPlane
from bot import audio
from bot.config import AudioSettings

print(audio.decode(open(sys.argv[1], "rb").read(), AudioSettings()).seconds)
frame = av.AudioFrame(format="fltp", layout="7.1", samples=480)
for n in range(8):
    AudioPlane(frame, n).update(np.full(480, np.nan if n == 7 else 0.5, dtype=np.float32))
frame.sample_rate = 48_000
clean, bad = audio._zero_non_finite(frame)
print(bad, *(float(np.frombuffer(AudioPlane(clean, n), np.float32, count=480).sum()) for n in (0, 7)))
"""


@pytest.mark.parametrize("layout", ["5.1", "7.1"])
def test_a_surround_opus_note_is_heard_and_its_bad_samples_zeroed(layout: str, tmp_path) -> None:
    # Opus decodes to planar float, whose samples are checked for NaN: at eight channels PyAV
    # counts a ninth plane that is not there. PyAV 18's to_ndarray() reads it, and a 1 KB note
    # kills the bot; PyAV 19's frame.planes raises, and the note is refused.
    note = tmp_path / "surround.ogg"
    note.write_bytes(encode(speechlike(2.0, lead=0.8, tail=0.8), 48_000, "ogg", layout))
    child = subprocess.run(
        [sys.executable, "-c", _DECODE_SURROUND, str(note)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    heard, zeroed = child.stdout.splitlines()
    assert float(heard) == pytest.approx(2.24, abs=0.08)
    assert zeroed.split() == ["480", "240.0", "0.0"]


def test_a_note_in_a_codec_ffmpeg_does_not_know_is_unreadable() -> None:
    # A WAV's format tag names its codec; FFmpeg has no decoder for this one, and PyAV then gives
    # the stream no codec context to ask its sample rate of.
    data = bytearray(encode(speechlike(1.0, rate=16_000), 16_000, "wav"))
    tag = data.find(b"fmt ") + 8
    data[tag : tag + 2] = struct.pack("<H", 0x7777)
    with pytest.raises(audio.AudioError, match="couldn't read") as refused:
        audio.decode(bytes(data), LIMITS)
    assert "no decoder" in str(refused.value.__cause__)


def _tracks(*tracks: np.ndarray, rate: int = 48_000) -> bytes:
    """An MP4 of one AAC track for each of `tracks` (int16 mono), in that order, as OBS records
    one with several audio tracks (the muxer flags the first default)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        streams = [container.add_stream("aac", rate=rate, layout="mono") for _ in tracks]
        for stream, samples in zip(streams, tracks, strict=True):
            resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for resampled in resampler.resample(frame) + resampler.resample(None):
                for packet in stream.encode(resampled):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return out.getvalue()


def test_a_recording_whose_first_track_is_silent_is_heard_from_the_next() -> None:
    # An OBS recording sent as a note: desktop audio on the first track (nothing was playing),
    # the player's microphone on the second. Only the first was decoded, and the player was told
    # nothing could be heard.
    speech = speechlike(3.0)
    silent = np.zeros_like(speech)
    data = _tracks(silent, speech)
    with av.open(io.BytesIO(data)) as container:
        assert len(container.streams.audio) == 2
    heard = audio.decode(data, LIMITS)
    alone = audio.decode(_tracks(speech), LIMITS)
    assert heard.seconds == pytest.approx(alone.seconds, abs=0.05)
    assert heard.segment.rms == pytest.approx(alone.segment.rms, rel=0.05)


def test_a_recording_with_nothing_on_any_track_is_told_so_as_one_track_would_be() -> None:
    silent = np.zeros(48_000 * 2, dtype=np.int16)
    with pytest.raises(audio.AudioError) as one:
        audio.decode(_tracks(silent), LIMITS)
    with pytest.raises(audio.AudioError) as several:
        audio.decode(_tracks(silent, silent, silent), LIMITS)
    assert str(several.value) == str(one.value)


def test_a_recording_is_heard_from_its_fourth_track_and_no_later_one() -> None:
    # OBS records up to six tracks: the player's microphone may be the fourth. Each silent track
    # tried is another decoding of the note, so a fifth is never reached.
    speech = speechlike(3.0)
    silent = np.zeros_like(speech)
    heard = audio.decode(_tracks(silent, silent, silent, speech), LIMITS)
    assert heard.seconds == pytest.approx(audio.decode(_tracks(speech), LIMITS).seconds, abs=0.05)
    with pytest.raises(audio.AudioError) as unheard:
        audio.decode(_tracks(silent, silent, silent, silent, speech), LIMITS)
    with pytest.raises(audio.AudioError) as one:
        audio.decode(_tracks(silent), LIMITS)
    assert str(unheard.value) == str(one.value)


def test_a_recording_with_sound_on_its_first_track_is_heard_from_it() -> None:
    # Which of two tracks with sound is the player's no cheap measure tells (a game's voices are
    # speech too): the first is heard, and no other is decoded.
    speech = speechlike(3.0)
    desktop = speechlike(1.0, lead=0.0, tail=0.0)
    heard = audio.decode(_tracks(desktop, speech), LIMITS)
    assert heard.seconds == pytest.approx(audio.decode(_tracks(desktop), LIMITS).seconds, abs=0.05)


def _matroska_pcm(samples: np.ndarray, rate: int, per_packet: int) -> bytes:
    """`samples` as 16-bit PCM in Matroska, `per_packet` samples to a block."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        for at in range(0, len(samples), per_packet):
            frame = av.AudioFrame.from_ndarray(
                samples[at : at + per_packet].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = at
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def test_an_opus_note_whose_packets_hold_more_than_the_limit_is_too_long_however_little_is_heard() -> None:
    # A short Ogg/Opus note repeated is the same stream again, serial and all: FFmpeg decodes
    # every copy and drops what it decoded after the first, so the sound heard stays short while
    # every packet costs its decoding (8 MB of 120 ms 7.1 packets cost 16 s of CPU).
    limits = AudioSettings(max_seconds=5)
    note = encode(speechlike(1.0, lead=0, tail=0), 48_000, "ogg", options={"frame_duration": "120"})
    assert audio.decode(note * 4, limits).original_seconds < 4  # four copies, some of them heard
    assert audio.decode(note * 5, limits).original_seconds < 4  # 5.4 s held: within the second's slack
    for copies in (6, 20):  # 6.5 s held is past it
        with pytest.raises(audio.AudioError, match="too long"):
            audio.decode(note * copies, limits)


def _opus_damaged(note: bytes, packets: set[int]) -> bytes:
    """The Ogg/Opus `note` with these packets' first bytes garbled into a TOC claiming 63 frames
    of 60 ms: no Opus packet (120 ms at most), which the decoder refuses."""
    out = io.BytesIO()
    with av.open(io.BytesIO(note)) as src, av.open(out, "w", format="ogg") as dst:
        stream = src.streams.audio[0]
        copy = dst.add_stream_from_template(stream)
        for index, packet in enumerate(src.demux(stream)):
            if not packet.size:
                continue
            if index in packets:
                garbled = av.Packet(bytes([0x1B, 0x3F]) + bytes(packet)[2:])
                garbled.pts, garbled.dts, garbled.time_base = packet.pts, packet.dts, packet.time_base
                packet = garbled
            packet.stream = copy
            dst.mux(packet)
    return out.getvalue()


def test_an_opus_packet_garbled_into_more_than_any_packet_holds_counts_no_sound() -> None:
    # Two damaged packets of a three-second note each claim 3.78 s: counted, the note would be
    # refused as too long; the decoder refuses them at their first bytes, and the rest is heard.
    note = _opus_damaged(encode(speechlike(2.0), 48_000, "ogg"), {40, 80})
    assert audio.decode(note, AudioSettings(max_seconds=5)).original_seconds == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize(
    ("toc", "seconds"),
    [
        ((0 << 3 | 0,), 0.010),  # SILK, 10 ms
        ((11 << 3 | 1,), 0.120),  # SILK, two of 60 ms: as much as a packet holds
        ((13 << 3 | 0,), 0.020),  # hybrid, 20 ms
        ((15 << 3 | 2,), 0.040),  # hybrid, two of 20 ms told apart by their lengths
        ((16 << 3 | 0,), 0.0025),  # CELT, 2.5 ms
        ((18 << 3 | 0,), 0.010),  # CELT, 10 ms
        ((19 << 3 | 3, 6), 0.120),  # CELT, six of 20 ms, counted in the second byte
        ((19 << 3 | 3, 0x80 | 0x40 | 6), 0.120),  # its VBR and padding flags count no frames
        ((19 << 3 | 3, 7), 0.0),  # 140 ms: no Opus packet
        ((19 << 3 | 3,), 0.0),  # the count's byte missing
    ],
)
def test_an_opus_packet_holds_the_sound_its_first_bytes_say(toc: tuple[int, ...], seconds: float) -> None:
    # RFC 6716, 3.1: the TOC byte's configuration names the frames' length, its code how many.
    packet = av.Packet(bytes(toc) + bytes(8))
    assert audio._opus_seconds(packet) == pytest.approx(seconds)


def test_a_note_of_more_tiny_packets_than_any_codec_makes_is_unreadable() -> None:
    # Within five seconds a note may hold 2,500 packets; this one's 2.5 s come in blocks of four
    # samples, 10,000 of them, each costing the decoding loop more than its sound.
    limits = AudioSettings(max_seconds=5)
    voice = speechlike(1.5, rate=16_000)
    assert audio.decode(_matroska_pcm(voice, 16_000, 320), limits).seconds > 1.5
    with pytest.raises(audio.AudioError, match="couldn't read") as refused:
        audio.decode(_matroska_pcm(voice, 16_000, 4), limits)
    assert "more than 2500 packets" in str(refused.value.__cause__)
    # Opus's shortest frames, for as long as a note may last, are still a note.
    finest = encode(speechlike(3.8), 48_000, "ogg", options={"frame_duration": "2.5"})
    assert audio.decode(finest, limits).original_seconds == pytest.approx(4.8, abs=0.05)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF], ids=["zero", "all-ones"])
def test_a_wav_written_as_a_stream_is_heard_whole(size: int) -> None:
    # A recorder writing as it goes leaves the data chunk's size unsaid (0, or 0xFFFFFFFF): the
    # rest of the file is its audio, not a chunk to cut the file at.
    pcm = speechlike(2.0).tobytes()
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48_000, 96_000, 2, 16)
    streamed = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + fmt + b"data" + struct.pack("<I", size) + pcm
    heard = audio.decode(streamed, LIMITS)
    assert heard.original_seconds == pytest.approx(
        audio.decode(_wav_with(b"", pcm, b""), LIMITS).original_seconds
    )


def test_a_wav_with_a_chunk_of_odd_size_before_its_audio_is_cut_at_its_audio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A chunk of odd size is followed by a pad byte: counted out, the walk lands a byte early and
    # never finds the data chunk, and FFmpeg is handed what follows the audio too.
    pcm = speechlike(2.0).tobytes()
    odd = b"LIST" + struct.pack("<I", 13) + b"INFOISFT" + struct.pack("<I", 1) + b"v" + b"\0"
    bare = _wav_with(odd, pcm, b"")
    sizes = _opened_sizes(monkeypatch)
    decoded = audio.decode(_wav_with(odd, pcm, bytes(100_000)), LIMITS)
    assert decoded.seconds == pytest.approx(audio.decode(bare, LIMITS).seconds)
    assert sizes and max(sizes) <= len(bare)


def test_a_wav_is_heard_with_its_audio_up_to_the_last_chunk_looked_at() -> None:
    # fmt and 62 empty chunks put the data chunk 64th, the last one looked for; one more puts it
    # past the walk, which refuses it rather than hand FFmpeg a file of a chunk every 8 bytes.
    pcm = speechlike(2.0).tobytes()
    empty = b"JUNK" + struct.pack("<I", 0)
    last = audio.MAX_WAV_CHUNKS - 2
    assert audio.decode(_wav_with(empty * last, pcm, b""), LIMITS).seconds > 1.5
    with pytest.raises(audio.AudioError, match="couldn't read") as refused:
        audio.decode(_wav_with(empty * (last + 1), pcm, b""), LIMITS)
    assert "no data chunk among its first" in str(refused.value.__cause__)


def _wav_with(before_data: bytes, pcm: bytes, after_data: bytes) -> bytes:
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48_000, 96_000, 2, 16)
    body = b"WAVE" + fmt + before_data + b"data" + struct.pack("<I", len(pcm)) + pcm + after_data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _opened_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each file FFmpeg is handed to open while the test runs."""
    sizes: list[int] = []
    real_open = av.open

    def spied(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(len(file.getbuffer()))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(audio.av, "open", spied)
    return sizes


def test_what_follows_a_wavs_audio_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # FFmpeg walks a seekable WAV's chunks to its end after the audio: megabytes of zeros there
    # are a chunk every 8 bytes, ~0.75 s of CPU an open for a 2 s note. Only the audio is opened.
    pcm = speechlike(2.0).tobytes()
    bare = _wav_with(b"", pcm, b"")
    sizes = _opened_sizes(monkeypatch)
    decoded = audio.decode(_wav_with(b"", pcm, bytes(7_000_000)), LIMITS)
    assert decoded.seconds == pytest.approx(audio.decode(bare, LIMITS).seconds)
    assert sizes and max(sizes) <= len(bare)


def test_a_wav_whose_audio_is_behind_a_run_of_empty_chunks_is_refused_unopened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Megabytes of zeros before the data chunk cost FFmpeg the same walk; no recorder writes more
    # than a handful of chunks before it.
    sizes = _opened_sizes(monkeypatch)
    with pytest.raises(audio.AudioError, match="couldn't read") as refused:
        audio.decode(_wav_with(bytes(7_000_000), speechlike(2.0).tobytes(), b""), LIMITS)
    assert "no data chunk among its first" in str(refused.value.__cause__)
    assert sizes == []
    # A few chunks of metadata before the audio, as recorders write them, are heard.
    listed = b"LIST" + struct.pack("<I", 26) + b"INFOISFT" + struct.pack("<I", 14) + b"voxdesk test\0\0"
    assert audio.decode(_wav_with(listed * 10, speechlike(2.0).tobytes(), listed), LIMITS).seconds > 1.5


def test_a_wav_whose_format_follows_its_audio_is_heard(monkeypatch: pytest.MonkeyPatch) -> None:
    # FFmpeg reads a seekable WAV's fmt chunk wherever it is: cut at the end of its data chunk,
    # the WAV lost the fmt chunk after it, and a file FFmpeg hears was refused as unreadable.
    pcm = speechlike(2.0).tobytes()
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48_000, 96_000, 2, 16)
    data = b"data" + struct.pack("<I", len(pcm)) + pcm
    body = b"WAVE" + data + fmt
    wav = b"RIFF" + struct.pack("<I", len(body)) + body
    assert audio.decode(wav, LIMITS).original_seconds == pytest.approx(3.0, abs=0.01)
    sizes = _opened_sizes(monkeypatch)
    assert audio.decode(wav + bytes(7_000_000), LIMITS).original_seconds == pytest.approx(3.0, abs=0.01)
    assert sizes and max(sizes) <= len(wav)


@pytest.mark.parametrize("kind", [b"RF64", b"BW64"])
def test_what_follows_an_rf64_wavs_audio_is_not_read(monkeypatch: pytest.MonkeyPatch, kind: bytes) -> None:
    # RF64 and BW64 (a WAV past 4 GiB, as broadcast recorders write it) are the same walk for
    # FFmpeg, the data chunk's size in the ds64 chunk that leads them: zeros after the audio cost
    # the same CPU at every open.
    pcm = speechlike(2.0).tobytes()
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, 0, len(pcm), len(pcm) // 2, 0)
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48_000, 96_000, 2, 16)
    bare = kind + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + ds64 + fmt + b"data" + b"\xff" * 4 + pcm
    sizes = _opened_sizes(monkeypatch)
    decoded = audio.decode(bare + bytes(7_000_000), LIMITS)
    assert decoded.original_seconds == pytest.approx(3.0, abs=0.01)
    assert sizes and max(sizes) <= len(bare)
