"""The voices the offline engine replies in: the neural voices that are installed and pass their
checks, then eSpeak NG's English voices, which always work and take over whenever a neural voice
cannot speak.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bot.speech import neural
from bot.speech.speakable import speakable
from bot.speech.synth import Espeak, Speech, english_voices

log = logging.getLogger(__name__)

AUTO = "auto"  # `offline.voice`: the first neural voice installed, else eSpeak's en-us
FALLBACK = "en-us"
ESPEAK_LICENCE = "GPL-3.0-or-later"
# A voice name asked for that no voice here has is logged the first time; a studio's players
# name a handful (another engine's voices), never more than this.
UNKNOWN_TOLD = 32


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    engine: str  # "Piper" or "eSpeak NG"
    licence: str


def espeak_voice(voice: str) -> str:
    """The eSpeak voice that speaks for `voice`: FALLBACK for a name eSpeak does not have."""
    return voice if Espeak.shared().has_voice(voice) else FALLBACK


def espeak_speech(text: str, voice: str, rate_wpm: int, pitch: int = 50) -> Speech:
    speaking = espeak_voice(voice)
    if speaking != voice:
        log.warning("no eSpeak voice %r; using %s", voice, FALLBACK)
    return Espeak.shared().synthesize(text, speaking, rate_wpm, pitch)


class ReplyVoices:
    def __init__(
        self,
        neural_voices: dict[str, neural.NeuralVoice],
        refused: dict[str, str],
        espeak_voices: list[str],
        configured: str,
    ) -> None:
        self.neural = neural_voices
        self.refused = refused
        self.espeak = espeak_voices
        self.configured = configured  # offline.voice, as set
        self.default = self._pick(configured)
        self._told: set[str] = set()  # names no voice here has, each logged once

    @classmethod
    def load(cls, configured: str, folders: list[Path]) -> ReplyVoices:
        """Blocking (hashing and loading a model takes about half a second the first time in a
        process): call it in a thread."""
        voices, refused = neural.load_installed(folders)
        return cls(voices, refused, english_voices(), configured)

    def _pick(self, configured: str) -> str:
        if configured == AUTO:
            return next(iter(self.neural), FALLBACK)
        if configured in self.neural:
            return configured
        if configured in neural.KNOWN:
            why = self.refused.get(configured, "not installed (pip install 'voxdesk[neural]')")
            log.warning("reply voice %s unavailable, eSpeak %s speaks instead: %s", configured, FALLBACK, why)
            return FALLBACK
        if not Espeak.shared().has_voice(configured):
            # Told once here, not by eSpeak at every reply: a Piper voice voxdesk does not know, a typo.
            known = ", ".join(neural.KNOWN)
            said = "offline.voice %r is neither a neural voice voxdesk knows (%s) nor eSpeak's; %s speaks"
            log.warning(said, configured, known, FALLBACK)
            return FALLBACK
        return configured

    def fell_back(self) -> str:
        """Why replies are not spoken in the voice offline.voice names, in a few words ("" when
        they are): for the start of the log and `check`."""
        configured, info = self.configured, self.describe()
        if configured == info.name or (configured == AUTO and info.engine == "Piper"):
            return ""
        if configured == AUTO:
            refused = f" (refused: {', '.join(self.refused)})" if self.refused else ""
            return f"offline.voice is auto and no neural voice loads{refused}"
        if configured in neural.KNOWN:
            return f"{configured} did not load"
        return f"eSpeak NG has no voice {configured}"

    def in_effect(self) -> str:
        """The voice replies are spoken in, for the start of the log: `auto`, or a voice that
        cannot speak, resolves only here, once the installed neural voices passed their checks."""
        info, why = self.describe(), self.fell_back()
        if not why:
            return f"replies in voice {info.name} ({info.engine})"
        return f"replies in voice {info.name}: fell back to {info.engine}, {why}"

    def names(self) -> list[str]:
        """What /voice offers: neural voices first, as the better ones."""
        return [*self.neural, *self.espeak]

    def resolve(self, voice: str | None) -> str:
        """The voice that will speak a reply asked for in `voice` (a player's choice, or none)."""
        if not voice or voice == self.default or voice in self.neural:
            return voice or self.default
        if voice in neural.KNOWN or not Espeak.shared().has_voice(voice):
            # A player's neural voice that is gone (uninstalled, refused), or a voice of another
            # engine (an OpenAI voice chosen with /voice while that engine answered, heard again
            # from its offline fallback, apologies and ticket news): the default, not en-us.
            if voice not in neural.KNOWN and voice not in self._told and len(self._told) < UNKNOWN_TOLD:
                self._told.add(voice)
                log.warning("no reply voice %r here; %s speaks instead", voice, self.default)
            return self.default
        return voice

    def describe(self, voice: str | None = None) -> VoiceInfo:
        """The voice that speaks for `voice`: an eSpeak name it does not have speaks as FALLBACK."""
        name = self.resolve(voice)
        if name in self.neural:
            return VoiceInfo(name, "Piper", self.neural[name].model.licence)
        return VoiceInfo(espeak_voice(name), "eSpeak NG", ESPEAK_LICENCE)

    def speak(self, text: str, voice: str | None, rate_wpm: int) -> Speech:
        """Blocking: call it in a thread."""
        text = speakable(text)
        name = self.resolve(voice)
        speaker = self.neural.get(name)
        if speaker is not None:
            try:
                return speaker.synthesize(text, rate_wpm)
            except Exception:
                log.exception("neural voice %s failed; eSpeak %s speaks this reply", name, FALLBACK)
                name = FALLBACK
        return espeak_speech(text, name, rate_wpm)
