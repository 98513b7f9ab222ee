"""`routed`: stop signals handled on the running event loop while a server runs, the handlers
found before put back after."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def routed(
    loop: asyncio.AbstractEventLoop, signals: tuple[int, ...], handler: Callable[[], None]
) -> Iterator[None]:
    """`handler` on `loop` for each of `signals` while the block runs. asyncio's own removal
    leaves SIGINT to default_int_handler and the rest to SIG_DFL, whatever was there: asyncio.run's
    Ctrl-C handler, which cancels the command's shutdown gracefully, or the SIGTERM handler of a
    program (a test) that called the server in its own process, set by signal.signal or on this
    same loop by add_signal_handler."""
    before: dict[int, tuple[object, Any]] = {}
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows / not main thread
            found, on_loop = signal.getsignal(sig), _loop_handler(loop, sig)
            loop.add_signal_handler(sig, handler)
            before[sig] = (found, on_loop)
    try:
        yield
    finally:
        for sig, (found, on_loop) in before.items():
            if on_loop is not None:
                # Adding it again replaces this block's: the loop's wakeup and Python's handler stay.
                loop.add_signal_handler(sig, on_loop._callback, *on_loop._args)
                continue
            loop.remove_signal_handler(sig)
            if found is not None:  # None: set outside Python, which cannot set it back
                signal.signal(sig, found)  # type: ignore[arg-type]


def _loop_handler(loop: asyncio.AbstractEventLoop, sig: int) -> Any:
    """The handle a caller's add_signal_handler left on `loop` for `sig`, if any: asyncio's Unix
    loops keep them in `_signal_handlers` and give no public way to read one back, and adding
    this block's would drop it for good."""
    handle = getattr(loop, "_signal_handlers", {}).get(sig)
    if handle is None or handle.cancelled() or not hasattr(handle, "_callback"):
        return None
    return handle
