"""Requests the SDK's client sends on a keep-alive connection the server is closing as idle.

    python bench/keepalive_race.py [--latency 0.025] [--trials 200] [--expiry 5.0 --expiry 4.0]

The server closes a connection idle for 5 s, as uvicorn does by default (vLLM, LiteLLM), and sits
behind a proxy that delays each direction by `--latency` seconds. Each trial asks once, waits an
idle time spread over 4.8-5.2 s, and asks again on the same client: a request the client sent on a
connection whose close was still on its way fails once the whole request was out, and the engine
does not send such a request again. Figures for each keep-alive expiry of the client's pool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx2 as httpx
import openai

from bot.engines import openai as engine

SERVER_KEEPALIVE = 5.0  # uvicorn's timeout_keep_alive
ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 0,
    "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}


class Server(asyncio.Protocol):
    """HTTP/1.1 keep-alive as uvicorn keeps it: a connection is closed once idle SERVER_KEEPALIVE
    seconds after its last response was written, unless a request's bytes came first."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""
        self.idle: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = re.search(rb"(?im)^content-length:\s*(\d+)", self.buffer[:end])
        whole = end + 4 + (int(length[1]) if length else 0)
        if len(self.buffer) < whole:
            return
        self.buffer = self.buffer[whole:]
        body = json.dumps(ANSWER).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.idle = asyncio.get_running_loop().call_later(SERVER_KEEPALIVE, self.transport.close)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Bytes from `reader` to `writer` `delay` seconds late, the end of the stream too."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            at, data = await queue.get()
            await asyncio.sleep(max(0.0, at - loop.time()))
            if not data:
                writer.close()
                return
            try:
                writer.write(data)
                await writer.drain()
            except OSError:
                return

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    await delivering


async def run(expiry: float, latency: float, trials: int) -> tuple[list[tuple[float, str]], int]:
    server = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def carry(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(pipe(client_r, server_w, latency), pipe(server_r, client_w, latency))
        except asyncio.CancelledError:
            pass  # the run is over: asyncio would log a cancelled connection callback as an error

    proxy = await asyncio.start_server(carry, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}/v1"

    async def trial(idle: float) -> str:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=expiry)
        client = openai.AsyncOpenAI(
            api_key="sk-bench",
            base_url=url,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )
        ask = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
        try:
            await client.chat.completions.create(**ask)
            await asyncio.sleep(idle)
            try:
                await client.chat.completions.create(**ask)
            except openai.APIConnectionError as exc:
                return type(exc.__cause__).__name__
            return ""
        finally:
            await client.close()

    idles = [4.8 + 0.4 * i / trials for i in range(trials)]
    results = await asyncio.gather(*(trial(idle) for idle in idles))
    proxy.close()
    server.close()
    return [(idle, why) for idle, why in zip(idles, results, strict=True) if why], trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.025, help="seconds each way")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--expiry", type=float, action="append", help="the client's keep-alive expiry")
    args = parser.parse_args()
    for expiry in args.expiry or [5.0, engine.KEEPALIVE_EXPIRY]:
        failed, trials = asyncio.run(run(expiry, args.latency, args.trials))
        said = f"keep-alive expiry {expiry:g} s, {args.latency * 1000:g} ms each way: "
        said += f"{len(failed)} of {trials} second requests failed"
        if failed:
            idle = [i for i, _ in failed]
            causes = ", ".join(sorted({why for _, why in failed}))
            said += f" ({causes}), idle {min(idle):.3f}-{max(idle):.3f} s"
        print(said)


if __name__ == "__main__":
    main()
