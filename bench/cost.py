"""Audio sent to the model per turn: our history strategy vs the seed sample's.

    python bench/cost.py

Ours is measured: the real agent and OpenAI engine run a 20-turn conversation of 10-second voice
notes (each turn one tool call, then the spoken answer) against the local fake OpenAI server,
and every request body it receives is counted: the note's own audio, plus earlier audio replies
referenced by id (which the model reads back as audio input). The seed sample is counted from
its design: every turn re-sends every earlier recording of the player, and a tool turn makes a
second "answer with context" request that carries the current recording again.

Dollars use config.toml's prices for the configured model and OpenAI's rate of 10 audio tokens
per second of input audio; text tokens are left out of both columns (they are small and about
equal).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import running_app
from bot.seed import initialise
from bot.tools.base import ToolContext
from tests.audio_samples import encode, speechlike
from tests.conftest import NOVA, make_settings
from tests.fakes.openai_server import API_KEY, answer, serving, tool_calls

NOTE_SECONDS = 10.0
TURNS = 20
SHOWN = (1, 5, 10, 20)
TOKENS_PER_SECOND = 10


async def measure() -> tuple[list[float], list[float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp)
        base = make_settings(storage)
        await initialise(base)
        note = encode(speechlike(NOTE_SECONDS, lead=0.05, tail=0.05), 48_000, "ogg")
        async with serving() as fake:
            settings = make_settings(
                storage,
                VOXDESK_AGENT_ENGINE="openai",
                VOXDESK_OPENAI_BASE_URL=fake.base_url,
                OPENAI_API_KEY=API_KEY,
            )
            reply_seconds: dict[str, float] = {}
            ours: list[float] = []
            async with running_app(settings) as app:
                for turn in range(TURNS):
                    fake.script = [
                        tool_calls(("get_player_stats", {})),
                        answer(f"Turn {turn}: you have plenty of points and you are doing well today."),
                    ]
                    before = len(fake.chats)
                    reply = await app.agent.respond(ToolContext(user_id=NOVA), note)
                    requests = fake.chats[before:]
                    own = sum(r.audio_bytes for r in requests) * 3 / 4 / 48_000  # base64 → WAV seconds
                    referenced = sum(reply_seconds.get(i, 0.0) for r in requests for i in r.audio_ids)
                    ours.append(own + referenced)
                    history = await app.conversations.history(NOVA)
                    if history and history[-1].audio_id and reply.audio:
                        reply_seconds[history[-1].audio_id] = reply.audio.duration_secs
            sent_note = fake.chats[0].audio_bytes * 3 / 4 / 48_000  # the note as the model receives it
    seed = [sent_note * (n + 1) + sent_note for n in range(TURNS)]
    return ours, seed, settings.usage.prices.get(settings.openai.model, {}).get("audio_in", 0.0)


def main() -> None:
    ours, seed, price = asyncio.run(measure())
    dollars = lambda seconds: seconds * TOKENS_PER_SECOND * price / 1_000_000  # noqa: E731
    print(
        f"conversation of {NOTE_SECONDS:g}-second notes, one tool call per turn; "
        f"audio in at ${price}/M tokens"
    )
    print(f"{'turn':>4} {'ours s':>8} {'ours $':>9} {'seed s':>8} {'seed $':>9} {'seed/ours':>10}")
    for n in SHOWN:
        o, s = ours[n - 1], seed[n - 1]
        print(f"{n:>4} {o:>8.1f} {dollars(o):>9.5f} {s:>8.1f} {dollars(s):>9.5f} {s / o:>9.1f}x")
    total_o, total_s = sum(ours), sum(seed)
    print(
        f"{'all':>4} {total_o:>8.1f} {dollars(total_o):>9.5f} {total_s:>8.1f} {dollars(total_s):>9.5f} "
        f"{total_s / total_o:>9.1f}x  (turns 1-{TURNS})"
    )


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    main()
