"""Regenerate the demo voice notes in data/samples/: `python -m bot.speech.samples`.

Spoken by eSpeak NG and encoded like a Discord voice message (Ogg/Opus, 48 kHz mono).
"""

from __future__ import annotations

from bot import paths
from bot.audio import reply_from_pcm
from bot.engines.offline import speak_pcm

SAMPLES = paths.SAMPLES

# file name → (question, voice); numbered so the demo plays them in conversation order
NOTES = {
    "1-hello.ogg": ("Hello! What can you do?", "en-us+f2"),
    "2-how-many-points.ogg": ("How many points do I have?", "en-us+m2"),
    "3-pair-controller.ogg": ("How do I pair my controller?", "en-us+f5"),
    "4-charged-twice.ogg": ("I want to complain, I was charged twice for gems.", "en-us+klatt3"),
    "5-ticket-status.ogg": ("What is the status of my tickets?", "en-us+f2"),
    "6-thanks.ogg": ("Thank you!", "en-us+m6"),
}


def main() -> None:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    for name, (question, voice) in NOTES.items():
        pcm, rate = speak_pcm(question, voice, 160)
        (SAMPLES / name).write_bytes(reply_from_pcm(pcm, rate).ogg)
        print(f"{name}: {question!r} ({voice})")


if __name__ == "__main__":
    main()
