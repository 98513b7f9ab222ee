"""Freed heap handed back to the system once no turn runs or waits.

A raid's turns allocate on many threads at once (decoding, synthesis, Opus encoding, SQLite),
and glibc's malloc gives each thread an arena of its own, up to eight per core. What a turn frees
stays in its arena's heap, free for malloc to use again but still resident: after raids the bot
process's RSS stays hundreds of MB above what Python's objects hold (docs/offline-engine.md,
"Memory across raids"). `malloc_trim(0)` returns every arena's free pages to the system; it
costs milliseconds, so it runs once the turns have gone quiet for a while, on a thread, not
after every note.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# Seconds with no turn running or waiting before the heap is trimmed: past the sends that
# follow a raid's last turns, short of a quiet spell's first minute.
IDLE_SECONDS = 10.0


def _glibc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def trim_all() -> object:
        return trim(0)

    return trim_all


class IdleTrim:
    """`busy()` as a turn starts, `idle()` once none runs or waits: the trim runs `after_seconds`
    later unless a turn starts first. Only on the event loop's thread."""

    def __init__(self, after_seconds: float = IDLE_SECONDS, trim: Callable[[], object] | None = None) -> None:
        self.after_seconds = after_seconds
        self.trim = trim if trim is not None else _glibc_trim()
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Future[object]] = set()

    def busy(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def idle(self) -> None:
        if self.trim is None:
            return
        self.busy()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a turn's cleanup run as its loop is gone: nothing left to trim for
            return
        self._timer = loop.call_later(self.after_seconds, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.trim is None or self._running:
            return
        # Off the loop: it walks every arena's heap, tens of milliseconds after a large raid.
        try:
            running = asyncio.get_running_loop().run_in_executor(None, self.trim)
        except RuntimeError:  # the loop's threads already shut down: the process is ending
            return
        self._running.add(running)
        running.add_done_callback(self._done)

    def _done(self, running: asyncio.Future[object]) -> None:
        self._running.discard(running)
        if not running.cancelled() and running.exception() is not None:
            log.warning("trimming the heap failed: %r", running.exception())

    def close(self) -> None:
        self.busy()
