"""A deterministic stand-in for the *model* in front-end tests and benchmarks (never for Discord):
it calls one real tool through the agent's tool loop, then answers with generated speech-like
audio, so everything around it (the Discord client, the cogs, the fake Discord) runs for real."""

from __future__ import annotations

import asyncio

import numpy as np

from bot.audio import pcm_to_wav
from bot.engines.base import AudioClip, EngineError, EngineReply, Transcript, TurnState
from bot.tools.base import ToolCall

VOICES = ["aurora", "basalt", "cinder"]
_PITCH = {"aurora": 240.0, "basalt": 120.0, "cinder": 180.0}


def tone(seconds: float, pitch: float) -> bytes:
    t = np.arange(int(seconds * 24_000)) / 24_000
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    return pcm_to_wav((np.sin(2 * np.pi * pitch * t) * envelope * 9000).astype(np.int16).tobytes(), 24_000)


class FrontendEngine:
    """First step: get_player_stats (unless `use_tools` is off). Final step: says who it heard,
    their points, the voice it speaks in and how many turns of history it saw."""

    def __init__(self, use_tools: bool = True, delay: float = 0.0, reply_seconds: float = 0.6) -> None:
        self.name = "frontend-test"
        self.use_tools = use_tools
        self.delay = delay
        self.reply_seconds = reply_seconds
        self.long_reply = False  # answer with a transcript longer than one Discord message
        self.down = False  # behave like a model service that is unreachable
        self.turns: list[TurnState] = []
        self.asked = 0  # complete() calls begun: a test waits on this rather than on a clock
        self._asking = asyncio.Condition()
        # When given, every step waits for it to be set: a test lets held turns go once it has looked.
        self.hold: asyncio.Event | None = None

    async def until_asked(self, count: int, within: float = 30.0) -> None:
        """Wait until `count` complete() calls have begun (the turns have read their history)."""
        async with asyncio.timeout(within), self._asking:
            await self._asking.wait_for(lambda: self.asked >= count)

    async def transcribe(self, audio: AudioClip) -> Transcript | None:
        return Transcript(f"a note of {audio.seconds:.1f} seconds")

    async def complete(self, turn: TurnState) -> EngineReply:
        if self.down:
            raise EngineError("model service unreachable")
        async with self._asking:
            self.asked += 1
            self._asking.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.use_tools and not turn.rounds and turn.allow_tools:
            return EngineReply(tool_calls=[ToolCall(id="call_stats", name="get_player_stats", arguments={})])
        self.turns.append(turn)
        stats = turn.rounds[0].results[0].result if turn.rounds else {}
        who = stats.get("player_name") or turn.context.display_name or "player"
        points = stats.get("total_points", "no")
        voice = turn.voice or "default"
        text = f"{who}, you have {points} points. Voice {voice}. History {len(turn.history)}."
        if self.long_reply:
            text += " " + " ".join(
                f"Tip {i}: keep your controller charged and your drivers current." for i in range(60)
            )
        return EngineReply(
            text=text, audio=tone(self.reply_seconds, _PITCH.get(voice, 200.0)), audio_format="wav"
        )

    def voices(self) -> list[str]:
        return list(VOICES)

    async def check(self) -> str:
        if self.down:
            raise EngineError("the model service is unreachable")
        return "the front-end test engine answers"

    async def aclose(self) -> None:
        pass
