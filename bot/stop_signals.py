"""`routed`: stop signals handled on the running event loop while a server runs, the handlers
found before put back after."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def routed(
    loop: asyncio.AbstractEventLoop, signals: tuple[int, ...], handler: Callable[[], None]
) -> Iterator[None]:
    """`handler` on `loop` for each of `signals` while the block runs. asyncio's own removal
    leaves SIGINT to default_int_handler and the rest to SIG_DFL, whatever was there: asyncio.run's
    Ctrl-C handler, which cancels the command's shutdown gracefully, or the SIGTERM handler of a
    program (a test) that called the server in its own process."""
    before: dict[int, object] = {}
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not main thread
            found = signal.getsignal(sig)
            loop.add_signal_handler(sig, handler)
            before[sig] = found
    try:
        yield
    finally:
        for sig, found in before.items():
            loop.remove_signal_handler(sig)
            if found is not None:  # None: set outside Python, which cannot set it back
                signal.signal(sig, found)  # type: ignore[arg-type]
