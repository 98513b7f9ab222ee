"""Speech synthesis with eSpeak NG, the library and data shipped in the espeakng-loader wheel.

Called through ctypes. eSpeak keeps one global engine per process and is not thread-safe, so
every call holds a process-wide lock; callers run `synthesize` in a thread.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import espeakng_loader

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH = 1, 2, 3

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


# Voices that read English replies well: a few accents, each in a male and a female variant.
ENGLISH_VOICES = (
    "en-us",
    "en-us+f3",
    "en-us+m3",
    "en",
    "en+f2",
    "en-gb-scotland",
    "en-gb-x-rp+f4",
    "en-029",
    "en-us+klatt",
)


class SynthError(Exception):
    pass


@dataclass(frozen=True)
class Speech:
    pcm: bytes  # mono int16
    rate: int


class Espeak:
    _lock = threading.Lock()
    _instance: Espeak | None = None

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        data = espeakng_loader.get_data_path().encode()
        self.rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.rate <= 0:
            raise SynthError(f"eSpeak NG failed to start with data at {data.decode()}")
        self._chunks: list[bytes] = []
        # Kept on the instance: ctypes must not garbage-collect a callback C still holds.
        self._callback = _CALLBACK(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def shared(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, samples: ctypes.POINTER(ctypes.c_short), count: int, events: int) -> int:  # type: ignore[valid-type]
        if count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0

    def has_voice(self, voice: str) -> bool:
        with self._lock:
            return self._lib.espeak_SetVoiceByName(voice.encode()) == 0

    def synthesize(self, text: str, voice: str = "en-us", rate_wpm: int = 165, pitch: int = 50) -> Speech:
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SynthError(f"eSpeak NG has no voice {voice!r}")
            self._lib.espeak_SetParameter(_RATE, int(rate_wpm), 0)
            self._lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\x00"
            err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise SynthError(f"eSpeak NG could not speak (error {err})")
            self._lib.espeak_Synchronize()
            pcm = b"".join(self._chunks)
            self._chunks = []
        return Speech(pcm=pcm, rate=self.rate)


def english_voices() -> list[str]:
    engine = Espeak.shared()
    return [v for v in ENGLISH_VOICES if engine.has_voice(v)]
