"""Speaking a reply sentence by sentence: the sentence cache, encoding as it goes, the fallback to
eSpeak when the neural voice fails, and the settings that switch it (bot/speech/speaker.py)."""

import asyncio
import logging
import os
import re
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import numpy as np
import pytest

from bot import audio
from bot.app import running_app
from bot.engines.base import EngineReply, TurnState
from bot.engines.offline.engine import spoken
from bot.lab.samples import speak_pcm
from bot.speech import neural, speaker, voices
from bot.speech.speakable import speakable
from bot.speech.speaker import ReplySpeaker, SentenceCache, sentences
from bot.speech.voices import ReplyVoices
from bot.tools.base import ToolContext

from .conftest import NOVA
from .test_discord_news import eventually

JOE = neural.JOE.name


@pytest.fixture(scope="module")
def reply_voices() -> ReplyVoices:
    loaded = ReplyVoices.load("auto", [])
    assert JOE in loaded.neural, "the dev extra installs the neural voice"
    return loaded


@pytest.fixture
def piper_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts Piper was asked to speak, calling through to the real voice."""
    asked: list[str] = []
    real = neural.NeuralVoice.synthesize

    def spy(self: neural.NeuralVoice, text: str, rate_wpm: int = neural.NATURAL_WPM):  # type: ignore[no-untyped-def]
        asked.append(text)
        return real(self, text, rate_wpm)

    monkeypatch.setattr(neural.NeuralVoice, "synthesize", spy)
    return asked


def test_a_reply_is_split_after_each_sentence() -> None:
    assert sentences("Hi Nova! You have 1,200 points.  Rank 3 of 9?\nThanks.") == [
        "Hi Nova!",
        "You have 1,200 points.",
        "Rank 3 of 9?",
        "Thanks.",
    ]
    assert sentences("Version 2.5 is out") == ["Version 2.5 is out"]
    assert sentences("  ") == []


def test_the_cache_keys_on_voice_rate_and_words_and_keeps_the_recent_ones() -> None:
    cache = SentenceCache(max_bytes=10)
    cache.put((JOE, 165, "Hello."), b"aaaa")
    assert cache.get((JOE, 165, "Hello.")) == b"aaaa"
    assert cache.get((JOE, 200, "Hello.")) is None  # another pace is other audio
    assert cache.get(("en-us", 165, "Hello.")) is None  # another voice too
    assert cache.get((JOE, 165, "Hello!")) is None
    cache.put((JOE, 165, "Two."), b"bbbb")
    cache.get((JOE, 165, "Hello."))  # used: now the most recent
    cache.put((JOE, 165, "Three."), b"cccc")  # 12 bytes > 10: the least recently used goes
    assert cache.get((JOE, 165, "Two.")) is None
    assert cache.get((JOE, 165, "Hello.")) == b"aaaa"
    assert cache.get((JOE, 165, "Three.")) == b"cccc"
    cache.put((JOE, 165, "Huge."), b"x" * 11)  # larger than the whole cache: not kept
    assert cache.get((JOE, 165, "Huge.")) is None
    assert (cache.hits, cache.misses) == (4, 5)


def test_a_cache_of_zero_bytes_keeps_nothing() -> None:
    cache = SentenceCache(max_bytes=0)
    cache.put((JOE, 165, "Hello."), b"aaaa")
    assert cache.get((JOE, 165, "Hello.")) is None and len(cache) == 0


def test_the_ogg_written_piece_by_piece_is_the_ogg_of_the_whole() -> None:
    pcm, rate = speak_pcm("How many points do I have? And what is my rank?", "en-us", 165)
    assert rate != audio.REPLY_RATE  # resampled on the way, with its state kept across pieces
    whole = audio.reply_from_pcm(pcm, rate)
    writer = audio.OggOpusWriter(rate)
    third = len(pcm) // 6 * 2
    for piece in (pcm[:third], pcm[third : 2 * third], pcm[2 * third :]):
        writer.write(piece)
    pieces = writer.finish()
    # The same Opus stream (each Ogg file has a random serial number, so the bytes differ there).
    decoded = [audio._decode_pcm(reply.ogg, audio.REPLY_RATE, 60.0) for reply in (whole, pieces)]
    assert decoded[0] == decoded[1]
    assert (pieces.duration_secs, pieces.waveform) == (whole.duration_secs, whole.waveform)


def test_the_opus_complexity_is_the_encoders() -> None:
    pcm, rate = speak_pcm("How many points do I have?", "en-us", 165)
    samples = np.frombuffer(pcm, dtype=np.int16)
    fast, slow = audio.OggOpusWriter(rate, complexity=5), audio.OggOpusWriter(rate, complexity=10)
    fast.write(samples.tobytes())
    slow.write(samples.tobytes())
    decoded = [audio._decode_pcm(w.finish().ogg, audio.REPLY_RATE, 60.0) for w in (fast, slow)]
    assert decoded[0] != decoded[1]


def test_each_sentence_is_synthesised_once_and_then_comes_from_the_cache(reply_voices, piper_texts) -> None:
    speaking = ReplySpeaker(reply_voices, 165, cache_bytes=8_000_000)
    try:
        first = speaking.speak("Thanks for asking. You have 40 points. Thanks for asking.", JOE)
        assert sorted(piper_texts) == ["Thanks for asking.", "You have 40 points."]
        again = speaking.speak("Thanks for asking. You have 41 points.", JOE)
        assert piper_texts[2:] == ["You have 41 points."]  # only the new sentence
        speaking.speak("Thanks for asking.", JOE)
        assert len(piper_texts) == 3  # all from the cache
        speaking.rate_wpm = 200
        speaking.speak("Thanks for asking.", JOE)
        assert piper_texts[3:] == ["Thanks for asking."]  # another pace: spoken afresh
    finally:
        speaking.close()
    for reply in (first, again):
        assert reply.ogg.startswith(b"OggS") and reply.duration_secs > 1.0
    assert first.duration_secs > again.duration_secs  # three sentences against two


def test_what_is_said_without_keeping_reads_the_cache_and_fills_none_of_it(reply_voices, piper_texts) -> None:
    """Ticket news and apologies share the engine's speaker; their sentences must not evict its
    replies' greetings and thanks."""
    speaking = ReplySpeaker(reply_voices, 165, cache_bytes=8_000_000)
    try:
        speaking.speak("Thanks for asking.", JOE)
        speaking.speak("Thanks for asking. Ticket GRV-1 is resolved.", JOE, keep=False)
    finally:
        speaking.close()
    assert piper_texts == ["Thanks for asking.", "Ticket GRV-1 is resolved."]
    assert len(speaking.cache) == 1 and speaking.cache.hits == 1


def test_a_neural_voice_that_fails_on_a_sentence_gives_the_whole_reply_in_espeak(
    reply_voices, monkeypatch, caplog
) -> None:
    real = neural.NeuralVoice.synthesize

    def broken(self, text, rate_wpm=neural.NATURAL_WPM):  # type: ignore[no-untyped-def]
        if "points" in text:
            raise RuntimeError("onnxruntime fell over")
        return real(self, text, rate_wpm)

    espoken: list[str] = []
    real_espeak = voices.espeak_speech

    def espeak(text, voice, rate_wpm, pitch=50):  # type: ignore[no-untyped-def]
        espoken.append(text)
        return real_espeak(text, voice, rate_wpm, pitch)

    monkeypatch.setattr(neural.NeuralVoice, "synthesize", broken)
    monkeypatch.setattr(speaker, "espeak_speech", espeak)
    speaking = ReplySpeaker(reply_voices, 165, cache_bytes=8_000_000)
    try:
        with caplog.at_level(logging.ERROR):
            reply = speaking.speak("Hello there. You have 40 points. Goodbye.", JOE)
    finally:
        speaking.close()
    assert espoken == ["Hello there. You have 40 points. Goodbye."]
    assert f"neural voice {JOE} failed" in caplog.text
    assert reply.ogg.startswith(b"OggS") and reply.duration_secs > 2.0


def test_what_the_voices_are_given_drops_what_they_cannot_or_should_not_say() -> None:
    assert speakable("Nova\ud800, you have 40 points.") == "Nova, you have 40 points."
    assert speakable("Nova\x00Star, hi\x07!") == "Nova Star, hi!"
    assert speakable(
        "\U0001f3aeNova\u200d, GG \u2764\ufe0f 1\ufe0f\u20e3 \U0001f44d\U0001f3fd\U0001f1ec\U0001f1e7!"
    ) == ("Nova, GG 1!")
    assert speakable("\u674e\u660e, you have 40 points.") == "you have 40 points."
    assert speakable("Thanks, \u674e\u660e. Bye \u674e\u660e!") == "Thanks. Bye!"
    assert (
        speakable("Zo\u00eb \u00a9 20\u00b0C\u2122, line one\nline two")
        == "Zo\u00eb \u00a9 20\u00b0C\u2122, line one\nline two"
    )
    # Nothing left to say: read as the voice can, never silence.
    assert speakable("\U0001f44d") == "\U0001f44d" and speakable("\u4f60\u597d\u3002") == "\u4f60\u597d\u3002"


def test_markdown_marks_are_not_given_to_the_voices() -> None:
    """Piper said "asterisk, asterisk, resolved, asterisk, asterisk" for **resolved**, and "hash,
    hash" for a heading; a bullet's star was "master risk" to Whisper's ears in eSpeak's."""
    assert speakable("Your status is **resolved** and your ticket is `GRV-12`.") == (
        "Your status is resolved and your ticket is GRV-12."
    )
    assert speakable("## Refunds\n- **Open** one\n* _Two_ ~~three~~\n> quoted") == (
        "Refunds\nOpen one\n_Two_ three\nquoted"
    )
    assert speakable("__Nova__, you have 40 points.") == "Nova, you have 40 points."
    # A lone underscore is part of a name, and a number's list mark stays a number.
    assert speakable("xX_Sniper99_Xx, step 1. first") == "xX_Sniper99_Xx, step 1. first"


def test_an_address_is_said_by_its_place_and_a_link_by_its_words() -> None:
    """Piper spelled "h t t p s colon slash slash" out, and eSpeak a string of letters."""
    assert speakable("See https://support.example.com/refunds for details.") == (
        "See support.example.com/refunds for details."
    )
    assert speakable("Go to <https://www.example.com/help/?id=7&x=2#top>.") == "Go to example.com/help."
    assert speakable("Read [the refund guide](https://example.com/refunds) first.") == (
        "Read the refund guide first."
    )
    assert speakable("(see www.example.com/a_b)") == "(see example.com/a_b)"


def test_a_star_between_figures_is_said_as_times() -> None:
    """Taken for emphasis, "5 * 3 = 15" was said "5 3 = 15": a sum a player asked about, lost."""
    assert speakable("A win is 5 * 3 = 15 points, or 2*4 with a bonus.") == (
        "A win is 5 times 3 = 15 points, or 2 times 4 with a bonus."
    )
    assert speakable("**5** points, *3* stars") == "5 points, 3 stars"


def test_an_email_address_at_a_www_host_is_said_whole() -> None:
    """Its "www." was dropped as an address's: "me@www.example.com" was said "me@example.com",
    an address that is not the player's to write to."""
    assert speakable("Write to help@www.example.com today.") == "Write to help@www.example.com today."
    assert speakable("Or see www.example.com.") == "Or see example.com."


@pytest.mark.parametrize("voice", [JOE, "en-us"])
def test_a_markdown_reply_is_heard_without_its_marks(reply_voices, voice) -> None:
    """Heard by the bot's own Whisper: before, "asterisk" four times and "hash" twice, and the
    address as "h t t p s colon slash slash" (Piper) or a run of letters (eSpeak)."""
    from bot.speech import whisper_recognizer as whisper

    try:
        listener = whisper.WhisperRecognizer(whisper.resolve_model("tiny.en"))
    except whisper.WhisperUnavailable as exc:
        pytest.skip(str(exc))
    said = reply_voices.speak(
        "## Refunds\nYour ticket is **resolved**. See https://support.example.com/refunds.", voice, 165
    )
    samples = np.frombuffer(said.pcm, dtype=np.int16)
    heard = listener.recognize(audio.resample(samples, said.rate, whisper.RATE).tobytes())
    assert heard is not None
    words = set(re.findall(r"[a-z]+", heard.text.lower()))
    # eSpeak's "resolved" is "renowned" to tiny.en's ears: only Piper's words are held to the letter.
    assert {"resolved", "refunds"} <= words if voice == JOE else {"ticket"} <= words, heard.text
    assert not {"asterisk", "asterisks", "hash", "colon", "http", "https"} & words, heard.text


def test_full_width_latin_and_digits_are_read_as_the_ascii_they_stand_for() -> None:
    """Typed on a CJK keyboard: the ticket key and the points were left out as another script
    (eSpeak had read each character's code point in hex)."""
    assert (
        speakable(
            "Ticket \uff27\uff32\uff36\uff0d\uff11\uff12 is resolved,"
            " you have \uff11\uff12\uff10\u3000points."
        )
        == "Ticket GRV-12 is resolved, you have 120 points."
    )
    assert speakable("Level \u2163 boss, step \u2460.") == "Level IV boss, step 1."


@pytest.mark.parametrize("voice", [JOE, "en-us"])
def test_a_reply_with_a_lone_surrogate_or_a_nul_is_spoken_whole_by_its_own_voice(
    reply_voices, piper_texts, voice, caplog
) -> None:
    """From a player's display name cut mid-character, or a tool's result: Piper and eSpeak both
    raised on the surrogate (no reply spoken at all), and eSpeak stopped at the NUL."""
    speaking = ReplySpeaker(reply_voices, 165)
    try:
        with caplog.at_level(logging.ERROR):
            nul = speaking.speak("Nova\x00Star, you have 40 points and rank 3 of 9 players.", voice)
            plain = speaking.speak("Nova Star, you have 40 points and rank 3 of 9 players.", voice)
            surrogate = speaking.speak("Nova Star\ud800, you have 40 points.", voice)
            said = reply_voices.speak("Nova Star\ud800, you have 40 points.", voice, 165)
    finally:
        speaking.close()
    assert caplog.records == []  # the voice asked for spoke, with no fallback
    assert nul.duration_secs == pytest.approx(plain.duration_secs, abs=0.05 if voice == "en-us" else 0.6)
    assert surrogate.duration_secs > 1.5 and len(said.pcm) / 2 / said.rate > 1.5
    if voice == JOE:
        assert piper_texts[0] == "Nova Star, you have 40 points and rank 3 of 9 players."


@pytest.mark.parametrize("voice", [JOE, "en-us"])
def test_emoji_and_names_in_other_scripts_are_not_read_aloud(reply_voices, piper_texts, voice) -> None:
    """eSpeak said "video game" for the emoji and "Chinese letter" for each character of the name."""
    speaking = ReplySpeaker(reply_voices, 165)
    try:
        named = speaking.speak("\U0001f3ae\u674e\u660e, you have 40 points.", voice)
        plain = speaking.speak("You have 40 points.", voice)
    finally:
        speaking.close()
    if voice == JOE:
        assert piper_texts == ["you have 40 points.", "You have 40 points."]
    else:
        assert named.duration_secs == pytest.approx(plain.duration_secs, abs=0.05)


def test_an_espeak_voice_speaks_the_reply_whole(reply_voices, piper_texts) -> None:
    speaking = ReplySpeaker(reply_voices, 165, cache_bytes=8_000_000)
    try:
        reply = speaking.speak("Hello there. You have 40 points.", "en-us")
    finally:
        speaking.close()
    assert piper_texts == [] and len(speaking.cache) == 0
    assert reply.duration_secs > 1.0


def test_a_voice_no_offline_engine_has_speaks_in_the_default_voice(reply_voices, piper_texts, caplog) -> None:
    """A player's /voice choice made while the OpenAI engine answered ("alloy") reaches the offline
    fallback, the apologies and ticket news: the default voice speaks, as for a neural voice that
    is gone, not eSpeak's plainest voice with a warning a reply."""
    speaking = ReplySpeaker(reply_voices, 165)
    try:
        with caplog.at_level(logging.WARNING):
            reply = speaking.speak("You have 40 points.", "alloy")
            speaking.speak("You have 41 points.", "alloy")
            chosen = speaking.speak("You have 40 points.", "en-us+f3")
    finally:
        speaking.close()
    assert piper_texts == ["You have 40 points.", "You have 41 points."] and reply.duration_secs > 1.0
    assert reply_voices.describe("alloy").name == JOE
    assert chosen.duration_secs > 1.0 and reply_voices.resolve("en-us+f3") == "en-us+f3"
    assert [r.getMessage() for r in caplog.records] == [f"no reply voice 'alloy' here; {JOE} speaks instead"]


def test_an_offline_voice_no_engine_has_is_told_once_not_at_every_reply(caplog) -> None:
    """offline.voice naming a Piper voice voxdesk does not know, or a typo: said at start."""
    caplog.set_level(logging.WARNING)
    lacking = ReplyVoices.load("en_US-lessac-medium", [])
    speaking = ReplySpeaker(lacking, 165)
    try:
        for n in range(3):
            speaking.speak(f"Reply {n}.", None)
    finally:
        speaking.close()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "en_US-lessac-medium" in said[0] and "en-us" in said[0]
    assert lacking.default == "en-us" and lacking.fell_back() == "eSpeak NG has no voice en_US-lessac-medium"
    assert ReplyVoices.load("en-us+f3", []).fell_back() == ""


async def test_the_settings_choose_the_speaking_path(settings, piper_texts) -> None:
    turn = TurnState(ToolContext(user_id=NOVA), audio=None, text="hi", history=[], tools=[], voice=JOE)
    on = settings.replace(offline={"voice": "auto", "sentence_cache_mb": 3})
    async with running_app(on) as app:
        engine = app.agent.engine
        assert engine.speaker.cache.max_bytes == 3_000_000 and engine.speaker.by_sentence  # type: ignore[attr-defined]
        step: EngineReply = await engine._say("Hello there. Hello there.", turn)  # type: ignore[attr-defined]
        # Ready to send: encoded as it was spoken, and the repeated sentence spoken once.
        assert step.reply_audio is not None and step.audio is None
        assert piper_texts == ["Hello there."]
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "hello")
        assert reply.audio is not None and reply.audio.ogg.startswith(b"OggS")
    off = settings.replace(offline={"voice": "auto", "sentence_cache_mb": 0, "speak_by_sentence": False})
    async with running_app(off) as app:
        engine = app.agent.engine
        assert not engine.speaker.cache.enabled and not engine.speaker.by_sentence  # type: ignore[attr-defined]
        before = len(piper_texts)
        step = await engine._say("Hello there. Hello there.", turn)  # type: ignore[attr-defined]
        # The earlier path: the whole reply in one synthesis, a WAV for the agent to encode.
        assert step.reply_audio is None and step.audio_format == "wav" and step.audio
        assert piper_texts[before:] == ["Hello there. Hello there."]


def test_replies_at_once_share_a_sentence_being_synthesised(reply_voices, monkeypatch) -> None:
    asked: list[str] = []
    real = neural.NeuralVoice.synthesize

    def slow(self, text, rate_wpm=neural.NATURAL_WPM):  # type: ignore[no-untyped-def]
        asked.append(text)
        time.sleep(0.3)  # still in flight when the other replies ask for it
        return real(self, text, rate_wpm)

    monkeypatch.setattr(neural.NeuralVoice, "synthesize", slow)
    speaking = ReplySpeaker(reply_voices, 165, cache_bytes=8_000_000)
    try:
        with ThreadPoolExecutor(3) as players:
            replies = list(players.map(lambda _: speaking.speak("Hi! Welcome back.", JOE), range(3)))
    finally:
        speaking.close()
    assert sorted(asked) == ["Hi!", "Welcome back."]
    assert len({r.duration_secs for r in replies}) == 1


class Held:
    """The real voice, held at each synthesis until `set`: a raid's backlog."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.entered = threading.Event()

    def set(self) -> None:
        self.go.set()

    async def backlog(self) -> None:
        """Until a synthesis is held: the raid's replies, handed to the speaker's threads at once,
        wait behind it. (A pause would not do: on a busy machine the raid may not have begun.)"""
        await eventually(self.entered.is_set)


@pytest.fixture
def go(monkeypatch: pytest.MonkeyPatch) -> Held:
    held_voice = Held()
    real = neural.NeuralVoice.synthesize

    def held(self, text, rate_wpm=neural.NATURAL_WPM):  # type: ignore[no-untyped-def]
        held_voice.entered.set()
        held_voice.go.wait(30)
        return real(self, text, rate_wpm)

    monkeypatch.setattr(neural.NeuralVoice, "synthesize", held)
    return held_voice


async def test_replies_waiting_for_their_voice_leave_the_default_threads_free(reply_voices, go: Held):
    # A raid: more replies wait for synthesis than asyncio has default threads. Decoding,
    # routing and the grievance spool, which run there, must not queue behind them. Two more
    # than ThreadPoolExecutor's default bound on this machine: each is synthesised once let go.
    speaking = ReplySpeaker(reply_voices, 165, threads=1)
    raid_size = min(32, (os.cpu_count() or 1) + 4) + 2
    try:
        raid = [asyncio.create_task(speaking.speak_soon(f"Reply number {n}.", JOE)) for n in range(raid_size)]
        await go.backlog()
        probe = asyncio.create_task(asyncio.to_thread(lambda: "decoded"))
        done, _ = await asyncio.wait({probe}, timeout=20)  # the held voices wait 30 s
        go.set()
        assert done, "a job on asyncio's default threads queued behind replies waiting for their voice"
        replies = await asyncio.gather(*raid)
    finally:
        speaking.close()
    assert all(reply.ogg.startswith(b"OggS") for reply in replies)


async def test_closing_the_speaker_in_a_raid_ends_replies_with_an_error(reply_voices, go: Held, caplog):
    # At shutdown, replies still waiting are neither spoken again by eSpeak (the app would wait
    # for them) nor handed a cancellation their callers would take for their own.
    speaking = ReplySpeaker(reply_voices, 165, threads=1)
    raid = [asyncio.create_task(speaking.speak_soon(f"Reply number {n}.", JOE)) for n in range(40)]
    await go.backlog()
    with caplog.at_level(logging.ERROR):
        speaking.close()
        go.set()
        ended = await asyncio.gather(*raid, return_exceptions=True)
    closed = [e for e in ended if isinstance(e, speaker.SpeakerClosed)]
    assert len(closed) >= 38, [type(e).__name__ for e in ended]
    assert all(isinstance(e, speaker.SpeakerClosed | audio.ReplyAudio) for e in ended)
    with caplog.at_level(logging.ERROR), pytest.raises(CancelledError):
        speaking.speak("Too late.", JOE)  # a reply that reaches the pool after it shut down
    with pytest.raises(speaker.SpeakerClosed):
        await speaking.speak_soon("Later still.", JOE)  # one asked for after the close
    assert "failed" not in caplog.text


def test_forgetting_a_player_drops_the_sentences_said_to_them_alone(reply_voices, piper_texts) -> None:
    """A reply's sentences may name the player's points or tickets: after their /forget the
    cache holds none of them, while another player's stay."""
    speaking = ReplySpeaker(reply_voices, 165, cache_bytes=8_000_000)
    try:
        speaking.speak("Thanks for asking. You have 40 points.", JOE, player="nova")
        speaking.speak("Thanks for asking. Ticket GRV-7 is open.", JOE, player="rex")  # one from the cache
        assert speaking.forget("rex") == 2
        assert [key[2] for key in speaking.cache._items] == ["You have 40 points."]
        speaking.speak("Ticket GRV-7 is open.", JOE, player="nova")
        assert piper_texts[-1] == "Ticket GRV-7 is open."  # spoken afresh, not from the cache
        assert speaking.forget("nova") == 2 and len(speaking.cache) == 0
    finally:
        speaking.close()


def test_a_sentence_of_a_reply_begun_before_a_forget_is_not_kept() -> None:
    """A reply still being synthesised when its player forgets (its turn cancelled, its thread
    still running) caches nothing afterwards: it may be the forgotten player's."""
    cache = SentenceCache(max_bytes=100)
    since = cache.forgets
    cache.put((JOE, 165, "One."), b"aaaa", "nova", since)
    cache.forget("nova")
    cache.put((JOE, 165, "You have 40 points."), b"bbbb", "nova", since)
    cache.said_to("nova", [(JOE, 165, "One.")], since)
    assert len(cache) == 0
    cache.put((JOE, 165, "One."), b"aaaa", "rex", cache.forgets)
    assert cache.get((JOE, 165, "One.")) == b"aaaa"


def test_evicted_sentences_leave_no_player_behind() -> None:
    cache = SentenceCache(max_bytes=8)
    cache.put((JOE, 165, "One."), b"aaaa", "nova")
    cache.put((JOE, 165, "Two."), b"bbbb", "rex")
    cache.put((JOE, 165, "Three."), b"cccc", "rex")  # "One." goes
    assert cache._sentences_of == {"rex": {(JOE, 165, "Two."), (JOE, 165, "Three.")}}
    assert cache.forget("nova") == 0 and len(cache) == 2


async def test_slash_forget_empties_the_offline_engines_cache_of_the_player(settings, piper_texts) -> None:
    on = settings.replace(offline={"voice": "auto", "sentence_cache_mb": 3})
    async with running_app(on) as app:
        cache = app.agent.engine.speaker.cache  # type: ignore[attr-defined]
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "how many points do I have")
        assert reply.audio is not None
        said = {key[2] for key in cache._items}
        assert said and said <= set(sentences(speakable(spoken(reply.text))))
        await app.agent.forget(NOVA)
        assert len(cache) == 0


def _reply(cache: SentenceCache, key: tuple[str, int, str], player: str) -> bool:
    """What ReplySpeaker._neural does with one sentence for `player`: whether it was synthesised."""
    since = cache.forgets
    missed = cache.get(key) is None
    if missed:
        cache.put(key, key[2].encode(), player, since)
    cache.said_to(player, [key], since)
    return missed


def test_the_players_a_cache_tells_apart_are_bounded_and_the_oldest_take_their_sentences() -> None:
    """A greeting every player hears stays cached for weeks: the players it was said to are kept
    for /forget, and a big community's hundreds of thousands must not all stay in memory. The
    least recently spoken to go past MAX_PLAYERS, and every sentence said to them goes too, so a
    /forget of theirs afterwards has nothing left to drop."""
    cache = SentenceCache(max_bytes=1_000_000)
    hello, points = (JOE, 165, "Hello there."), (JOE, 165, "You have 40 points.")
    _reply(cache, points, "nova")
    players = 3 * speaker.MAX_PLAYERS
    synthesised = 0
    for n in range(players):
        synthesised += _reply(cache, hello, f"player-{n}")
    assert len(cache._sentences_of) <= speaker.MAX_PLAYERS
    assert sum(len(heard) for heard in cache._said_to.values()) <= speaker.MAX_PLAYERS
    assert synthesised <= 3  # once, then again each time the players it was said to went
    assert cache.get(points) is None and cache.forget("nova") == 0  # went with nova
    assert cache.forget("player-0") == 0
    last = f"player-{players - 1}"
    assert hello in cache._sentences_of[last]
    assert cache.forget(last) == 1 and cache.get(hello) is None


def test_a_live_players_sentences_stay_while_others_come_and_go() -> None:
    cache = SentenceCache(max_bytes=1_000_000)
    points = (JOE, 165, "You have 40 points.")
    _reply(cache, points, "nova")
    for n in range(3 * speaker.MAX_PLAYERS):
        _reply(cache, (JOE, 165, f"Ticket GRV-{n} is open."), f"player-{n}")
        if n % (speaker.MAX_PLAYERS // 4) == 0:
            assert not _reply(cache, points, "nova")  # nova keeps coming back: from the cache
    assert len(cache._sentences_of) <= speaker.MAX_PLAYERS
    assert len(cache) <= speaker.MAX_PLAYERS + 1  # the players gone took their tickets along
    assert cache.get(points) is not None and cache.forget("nova") == 1
