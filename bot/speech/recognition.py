"""The recogniser as a stage you can swap: what the offline engine's hearing needs from one.

pocketsphinx (bot/speech/recognizer.py) and Whisper (bot/speech/whisper_recognizer.py) both
turn 16 kHz mono int16 into a `Hypothesis`; the engine's hearing (bot/engines/offline/hearing.py)
votes on its transcripts and never needs to know which one heard them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from bot.speech.recognizer import Hypothesis

POCKETSPHINX = "pocketsphinx"
WHISPER = "whisper"
AUTO = "auto"  # Whisper when its model loads, else pocketsphinx


@runtime_checkable
class SpeechRecognizer(Protocol):
    def recognize(self, pcm: bytes, general: bool = False) -> Hypothesis | None:
        """16 kHz mono int16 → words, runners-up in `alternatives` (best first, text among
        them). `general` asks for a second, wider hearing when the first made no sense; a
        recogniser with nothing wider to offer answers None rather than decode again."""
        ...
