"""A scripted stand-in for the *model* (not for any service) to test the agent's own logic:
the tool loop, its bound, ordering and fallback. Engines themselves are tested against fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from bot.engines.base import AudioClip, EngineError, EngineReply, Transcript, TurnState
from bot.tools.base import ToolCall

Step = Callable[[TurnState], EngineReply]


def tone_wav_reply(text: str) -> EngineReply:
    from bot.audio import pcm_to_wav

    t = np.arange(12_000) / 24_000
    pcm = (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16).tobytes()
    return EngineReply(text=text, audio=pcm_to_wav(pcm, 24_000), audio_format="wav")


class ScriptedEngine:
    def __init__(self, steps: list[Step] | None = None, name: str = "scripted", delay: float = 0.0) -> None:
        self.name = name
        self.steps = steps
        self.delay = delay
        self.seen: list[TurnState] = []  # one entry per step; the same object within a turn
        self.allowed: list[bool] = []  # allow_tools as it was at each step
        self.heard_text = "scripted words"

    async def transcribe(self, audio: AudioClip) -> Transcript | None:
        return Transcript(self.heard_text)

    async def complete(self, turn: TurnState) -> EngineReply:
        self.seen.append(turn)
        self.allowed.append(turn.allow_tools)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.steps is None:
            return tone_wav_reply(f"answer {len(turn.history)}")
        step = self.steps[min(len(turn.rounds), len(self.steps) - 1)]
        return step(turn)

    def voices(self) -> list[str]:
        return ["a", "b"]

    async def check(self) -> str:
        return "scripted"

    async def aclose(self) -> None:
        pass


class BrokenEngine(ScriptedEngine):
    async def complete(self, turn: TurnState) -> EngineReply:
        raise EngineError("service down")


def calls(*pairs: tuple[str, dict]) -> Step:
    def step(turn: TurnState) -> EngineReply:
        return EngineReply(
            tool_calls=[ToolCall(id=f"call_{i}", name=n, arguments=a) for i, (n, a) in enumerate(pairs)]
        )

    return step


def answer(text: str) -> Step:
    return lambda turn: tone_wav_reply(text)
