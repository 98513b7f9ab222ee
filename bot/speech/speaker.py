"""Speaking a reply: its text → 48 kHz Ogg/Opus, sentence by sentence.

A neural voice costs about 80 ms of a core per second of speech, most of a reply's work. So:

- each sentence is synthesised as a job of its own on a small pool (one thread per core, each
  running onnxruntime on one thread): one reply alone uses every core, and many replies at once
  never run more ONNX sessions than there are cores;
- sentences are encoded to Ogg/Opus in order as they come, while later ones are still being
  synthesised, and straight from the voice's 22.05 kHz PCM (no WAV to decode again);
- the PCM of each sentence is kept in a bounded cache keyed by voice, rate and the sentence's
  words, so the sentences a bot says again and again (greetings, thanks, "say that again") are
  synthesised once.

eSpeak NG voices are cheap (about 1 ms a second of speech) and speak a reply whole: their pauses
between sentences come from seeing the whole text. When a neural voice fails on any sentence,
eSpeak speaks the whole reply instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor

from bot.audio import REPLY_OPUS_COMPLEXITY, OggOpusWriter, ReplyAudio
from bot.speech.neural import NeuralVoice, speakable_pieces
from bot.speech.speakable import speakable
from bot.speech.voices import FALLBACK, ReplyVoices, espeak_speech

log = logging.getLogger(__name__)

# Replies that may wait for their sentences at once. A waiting reply holds a thread that does
# little but encode; the synthesis pool, not this, bounds the CPU.
REPLIES_AT_ONCE = 32

# Players the sentence cache keeps apart for /forget. A greeting every player hears is never
# evicted, and the players it was said to would be kept for as long as the process lives: past
# this many, the least recently spoken to go, and every sentence said to them goes with them.
MAX_PLAYERS = 10_000

# A sentence's PCM is keyed by what shapes it: the voice (a neural voice's name stands for one
# model, checked by SHA-256 at load), the speaking rate and the words.
CacheKey = tuple[str, int, str]


def sentences(text: str) -> list[str]:
    """The text split after each sentence's closing mark (a sentence too long for one Piper run
    cut at its clauses); Piper speaks each sentence on its own anyway (with its own loudness), so
    the audio is what one call on the whole text gives."""
    return speakable_pieces(text)


class SentenceCache:
    """The most recently used sentences' PCM, up to `max_bytes` (0: off). Thread-safe.

    A sentence may name a player's points or tickets, so each is kept with the players it was
    said to, and `forget` drops a player's: /forget leaves none of their words in memory. Those
    players are the MAX_PLAYERS most recently spoken to: a sentence said to one gone goes too."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.enabled = max_bytes > 0
        self.hits = 0
        self.misses = 0
        # How many `forget`s there have been: a reply begun before one keeps nothing after it,
        # since the player forgotten may be the one it was spoken for.
        self.forgets = 0
        self._size = 0
        self._items: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._said_to: dict[CacheKey, set[str]] = {}
        self._sentences_of: OrderedDict[str, set[CacheKey]] = OrderedDict()  # the least recent first
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> bytes | None:
        if not self.enabled:
            return None
        with self._lock:
            pcm = self._items.get(key)
            if pcm is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return pcm

    def put(self, key: CacheKey, pcm: bytes, player: str = "", since: int | None = None) -> None:
        """`player`: who the sentence was said to ("" for none); `since`: `forgets` when the
        reply began (None: whatever it is now)."""
        if not self.enabled or len(pcm) > self.max_bytes:
            return
        with self._lock:
            if since is not None and since != self.forgets:
                return
            if key not in self._items:
                self._items[key] = pcm
                self._size += len(pcm)
            self._own(key, player)
            while self._size > self.max_bytes:
                self._drop(next(iter(self._items)))

    def said_to(self, player: str, keys: list[CacheKey], since: int) -> None:
        """The cached sentences of `keys` were said to `player` too (a reply that found them here
        or waited for another reply's synthesis)."""
        if not player:
            return
        with self._lock:
            if since != self.forgets:
                return
            for key in keys:
                if key in self._items:
                    self._own(key, player)

    def forget(self, player: str) -> int:
        """Drop every sentence said to `player`; how many went."""
        with self._lock:
            self.forgets += 1
            keys = self._sentences_of.pop(player, set())
            for key in keys:
                self._drop(key)
            return len(keys)

    def clear(self) -> None:
        with self._lock:
            self.forgets += 1
            self._items.clear()
            self._said_to.clear()
            self._sentences_of.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._items)

    def _own(self, key: CacheKey, player: str) -> None:
        if not player:
            return
        sentences = self._sentences_of.get(player)
        if sentences is None:
            # A player no longer kept apart could not be forgotten: what was said to them goes
            # too. A greeting goes once the players it was said to since its last synthesis have.
            while len(self._sentences_of) >= MAX_PLAYERS:
                for gone in self._sentences_of.popitem(last=False)[1]:
                    self._drop(gone)
            if key not in self._items:
                return
            sentences = self._sentences_of[player] = set()
        else:
            self._sentences_of.move_to_end(player)
        sentences.add(key)
        self._said_to.setdefault(key, set()).add(player)

    def _drop(self, key: CacheKey) -> None:
        pcm = self._items.pop(key, None)
        if pcm is not None:
            self._size -= len(pcm)
        for player in self._said_to.pop(key, ()):
            sentences = self._sentences_of.get(player)
            if sentences is not None:
                sentences.discard(key)
                if not sentences:
                    del self._sentences_of[player]


class SpeakerClosed(RuntimeError):
    """The speaker was closed before a reply it was asked for was spoken."""


class ReplySpeaker:
    """`speak` blocks while the reply is synthesised: on the event loop, await `speak_soon`."""

    def __init__(self, voices: ReplyVoices, rate_wpm: int, cache_bytes: int = 0, threads: int = 0) -> None:
        self.voices = voices
        self.rate_wpm = rate_wpm
        self.cache = SentenceCache(cache_bytes)
        # False: the whole reply in one synthesis, handed to the agent as a WAV: the baseline
        # bench/offline.py measures this path against.
        self.by_sentence = True
        self._pool = ThreadPoolExecutor(threads or os.cpu_count() or 1, thread_name_prefix="voxdesk-speak")
        self._replies = ThreadPoolExecutor(REPLIES_AT_ONCE, thread_name_prefix="voxdesk-reply")
        self._in_flight: dict[CacheKey, Future[bytes]] = {}
        self._lock = threading.Lock()

    async def speak_soon(
        self, text: str, voice: str | None, keep: bool = True, player: str = ""
    ) -> ReplyAudio:
        """`speak` on the speaker's own threads: a raid's replies waiting for synthesis hold none
        of asyncio's default threads, which decoding, routing and the grievance spool share."""
        try:
            loop = asyncio.get_running_loop()
            waiting = loop.run_in_executor(self._replies, self.speak, text, voice, keep, player)
        except RuntimeError:  # the pool has shut down: the same news as a reply cut off by closing
            raise SpeakerClosed("the speaker closed before this reply was spoken") from None
        try:
            return await waiting
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # The speaker closed under this reply; its caller was not cancelled, so it hears an error
            # it can answer, not a cancellation it would take for its own.
            raise SpeakerClosed("the speaker closed before this reply was spoken") from None

    def speak(self, text: str, voice: str | None, keep: bool = True, player: str = "") -> ReplyAudio:
        """`keep`: whether the sentences synthesised go into the cache. Ticket news and apologies
        share this speaker but say what is rarely said twice: they read the cache, and keeping
        their sentences would only evict replies' greetings and thanks. `player`: who the reply
        is for, whose /forget (`forget`) drops its sentences from the cache."""
        text = speakable(text)
        name = self.voices.resolve(voice)
        neural = self.voices.neural.get(name)
        if neural is not None:
            try:
                return self._neural(name, text, keep, player)
            except CancelledError:
                raise  # closing: no eSpeak stand-in for a reply that will not be sent
            except Exception:
                log.exception("neural voice %s failed; eSpeak %s speaks this reply", name, FALLBACK)
                name = FALLBACK
        speech = espeak_speech(text, name, self.rate_wpm)
        writer = OggOpusWriter(speech.rate, REPLY_OPUS_COMPLEXITY)
        writer.write(speech.pcm)
        return writer.finish()

    def _neural(self, name: str, text: str, keep: bool = True, player: str = "") -> ReplyAudio:
        voice = self.voices.neural[name]
        since = self.cache.forgets
        keys = [(name, self.rate_wpm, sentence) for sentence in sentences(text)]
        ready: dict[CacheKey, bytes] = {}
        jobs: dict[CacheKey, Future[bytes]] = {}
        with self._lock:
            for key in keys:
                if key in ready or key in jobs:
                    continue
                pcm = self.cache.get(key)
                if pcm is not None:
                    ready[key] = pcm
                    continue
                # A sentence another reply is synthesising right now (several players greeting the
                # bot at once) is waited for, not synthesised twice; only while the cache is on,
                # since sharing it is caching it.
                job = self._in_flight.get(key) if self.cache.enabled else None
                if job is None:
                    try:
                        job = self._pool.submit(self._synthesize, voice, key, keep, player, since)
                    except RuntimeError:  # the pool has shut down: the speaker is closing
                        raise CancelledError from None
                    if self.cache.enabled:
                        self._in_flight[key] = job
                jobs[key] = job
        writer = OggOpusWriter(voice.rate, REPLY_OPUS_COMPLEXITY)
        try:
            for key in keys:
                writer.write(ready[key] if key in ready else jobs[key].result())
            self.cache.said_to(player, keys, since)
            return writer.finish()
        except BaseException:
            # Jobs are left to finish (another reply may share them); what they make is cached.
            writer.close()
            raise

    def _synthesize(
        self, voice: NeuralVoice, key: CacheKey, keep: bool = True, player: str = "", since: int | None = None
    ) -> bytes:
        try:
            pcm = voice.synthesize(key[2], key[1]).pcm
            if keep:
                self.cache.put(key, pcm, player, since)
            return pcm
        finally:
            with self._lock:
                self._in_flight.pop(key, None)

    def forget(self, player: str) -> int:
        """Drop the cached sentences said to `player` (their /forget); how many went."""
        return self.cache.forget(player)

    def close(self) -> None:
        self._replies.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
