"""CPU the openai SDK spends on the event loop turning a chat request that carries a long note
into its HTTP request (the body's JSON, as the installed SDK encodes it), per request.

    python bench/request_json.py [--seconds 120] [--repeat 15]

The request is the OpenAI engine's for a first step: the embedded system prompt, the time note
and the note's WAV (24 kHz, 16-bit mono) in base64; random bytes stand for the audio, whose
base64 is as long whatever it holds. The SDK's own request builder is timed (process CPU time),
whichever release is installed: openai 1.x hands the body to httpx's JSON encoder, later releases
encode it themselves; json.dumps of the same body is printed beside it for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from openai._models import FinalRequestOptions

from bot.config import load_settings
from bot.engines.openai import WAV_BYTES_A_SECOND, _base64, read_system_prompt, time_note


def cpu_ms(work: Callable[[], object], repeat: int) -> list[float]:
    spent = []
    for _ in range(repeat):
        began = time.process_time()
        work()
        spent.append((time.process_time() - began) * 1000)
    return spent


def main(args: argparse.Namespace) -> None:
    encoded = _base64(os.urandom(int(args.seconds * WAV_BYTES_A_SECOND)))
    note = {"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}}
    body = {
        "model": "gpt-audio",
        "messages": [
            {"role": "system", "content": read_system_prompt(load_settings())},
            {"role": "system", "content": time_note(time.time())},
            {"role": "user", "content": [note]},
        ],
        "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
    }
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url="http://127.0.0.1:9/v1")
    options = FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=body)
    print(f"openai {openai.__version__}, a {args.seconds:g} s note ({len(encoded) / 1e6:.2f} MB of base64)")
    for name, work in (
        ("the SDK's request", lambda: client._build_request(options)),
        ("json.dumps alone", lambda: json.dumps(body)),
    ):
        spent = cpu_ms(work, args.repeat)
        print(f"{name:<18} median {statistics.median(spent):5.1f} ms CPU, min {min(spent):5.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeat", type=int, default=15)
    main(parser.parse_args())
