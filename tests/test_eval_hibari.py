"""The evaluation's third voice: Hibari's heart (bot/lab/hibari.py), for real, heard by the bot's
Whisper."""

from __future__ import annotations

import pytest

from bot import audio
from bot.lab import hibari, neural_eval
from bot.speech import whisper_recognizer as whisper
from bot.speech.domain_corpus import normalise
from bot.speech.neural import VoiceRefused
from tests.eval_voices import calls_per_row

pytestmark = pytest.mark.skipif(not hibari.installed(), reason="voxdesk[eval-voices] is not installed")


@pytest.fixture(scope="module")
def voice() -> hibari.HibariVoice:
    return hibari.HibariVoice()


def test_hibari_says_english_that_whisper_hears_word_for_word(voice) -> None:  # type: ignore[no-untyped-def]
    said = "how many points have i got right now and is my refund ticket done yet"
    samples = voice.say(said, 1.0, 7)
    assert 2.0 < len(samples) / hibari.RATE < 8.0
    listener = whisper.WhisperRecognizer(whisper.resolve_model("tiny.en"))
    heard = listener.recognize(audio.resample(samples, hibari.RATE, whisper.RATE).tobytes())
    assert heard is not None and normalise(heard.text) == said


def test_the_same_row_is_said_the_same_way_its_seed_varies_it_and_speed_its_length(voice) -> None:  # type: ignore[no-untyped-def]
    first = voice.say("what is the weather like", 1.0, 3)
    assert (voice.say("what is the weather like", 1.0, 3) == first).all()
    assert not (voice.say("what is the weather like", 1.0, 4) == first).all()
    slow = voice.say("what is the weather like", 0.8, 3)
    assert len(slow) > 1.15 * len(first)


def test_a_model_that_is_not_the_one_measured_with_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(hibari, "MODEL_SHA256", "0" * 64)
    with pytest.raises(VoiceRefused, match="hibari-tts's heart voice has SHA-256 5f70741d4e900f4e"):
        hibari.HibariVoice()


def test_hibari_joins_the_evaluation_with_each_rows_pace_and_seed(monkeypatch) -> None:
    rows = neural_eval.load_rows(["nvdev"])[:6]
    asked, made_with = calls_per_row(monkeypatch, hibari.NAME, hibari.HibariVoice, hibari.RATE, rows)
    assert "hibari-tts 0.2.1" in made_with
    assert [round(1 / speed, 3) for _, speed, _ in asked] == [r.delivery()[0] for r in rows]
    assert [seed for _, _, seed in asked] == [r.seed for r in rows]


def test_whether_scipy_does_hibaris_ffts_is_part_of_what_made_the_notes(monkeypatch) -> None:
    util = hibari.importlib.util
    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name: name == "scipy" or real(name))
    assert hibari.distributions() == ("hibari-tts", "scipy")
    monkeypatch.setattr(util, "find_spec", lambda name: None if name == "scipy" else real(name))
    assert hibari.distributions() == ("hibari-tts",)
