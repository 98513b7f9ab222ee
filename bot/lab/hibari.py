"""Hibari's "heart": an American woman's voice, the evaluation's third neural voice, beside Piper's
joe (an American man) and Kokoro's accented Japanese voices.

Lab only: it never speaks to a player. `hibari-tts` (Apache-2.0) ships one voice inside its wheel,
a 7.5M-parameter model its author distilled from Kokoro-82M's af_heart; its other voices download
on first use and are never asked for here. The text becomes phonemes through the package's own
lexicons and letter-to-sound model (no eSpeak). The voice model is read once, compared by SHA-256
with the bytes measured with, and those bytes are what onnxruntime runs; no upstream hash covers
it (docs/offline-engine.md).
"""

from __future__ import annotations

import importlib.resources
import importlib.util

import numpy as np

from bot import audio
from bot.speech.neural import checked

NAME = "hibari-heart"
DISTRIBUTIONS = ("hibari-tts",)
VOICE = "heart"
# hibari/assets/hibari.onnx as hibari-tts 0.2.1 ships it (7,936,868 bytes). The package's own
# voices.json gives the same value; no hash published apart from the package covers it, so it is
# pinned to the file measured with: another release is refused, not trusted.
MODEL_SHA256 = "5f70741d4e900f4e85d0037498736cc1b3e1b9a63a13546a5da1e63abf4fccd8"
RATE = 24_000


def installed() -> bool:
    return importlib.util.find_spec("hibari") is not None


def distributions() -> tuple[str, ...]:
    """The releases its samples depend on: Hibari does its FFTs with scipy where scipy is installed
    and with numpy otherwise, and the two round differently."""
    return DISTRIBUTIONS + (("scipy",) if importlib.util.find_spec("scipy") else ())


class HibariVoice:
    """One onnxruntime session on one thread (the lab runs a voice per core)."""

    def __init__(self) -> None:
        from hibari import Hibari

        model = (importlib.resources.files("hibari") / "assets" / "hibari.onnx").read_bytes()
        checked_model = checked(model, MODEL_SHA256, "hibari-tts's heart voice")
        self.tts = Hibari(voice=VOICE, model=checked_model, threads=1)

    def say(self, text: str, speed: float, seed: int) -> np.ndarray:
        """16-bit samples at RATE. The model adds noise drawn from `seed`: a text, speed and seed
        always give the same samples."""
        wave = self.tts(text, speed=speed, seed=seed)
        return audio.pcm16(wave)
