"""Per-player limits that hold in any window of their length, as the docs state them."""

from __future__ import annotations

import bisect
import time
from typing import Any

from discord.ext import commands


class Limits(commands.CooldownMapping):
    """discord.py's CooldownMapping, given the time of every use: its own default is time.time(),
    while each limit here runs on time.monotonic() or on Discord's timestamps, and a call left to
    the default would weigh a use on one clock against uses counted on another."""

    def copy(self) -> Limits:
        # discord.py's builds a bare CooldownMapping, which would take time.time() again.
        copied = type(self)(self._cooldown, self._type)
        copied._cache = self._cache.copy()
        return copied

    def get_bucket(self, message: Any, current: float) -> commands.Cooldown | None:
        return super().get_bucket(message, current)

    def update_rate_limit(self, message: Any, current: float, tokens: int = 1) -> float | None:
        return super().update_rate_limit(message, current, tokens)


class InAnyWindow(commands.Cooldown):
    """At most `rate` uses in any `per` seconds. discord.py's Cooldown counts in windows that start
    at the first use: `rate` uses at the end of one window and `rate` more at the start of the next
    all pass, twice the limit within a second. This keeps the times of the uses: one more is
    allowed once the oldest of the newest `rate` is `per` seconds old. Times may come out of order
    (a catch-up counts notes by when they were sent, after live ones counted as they came).

    `keep`: how long before the newest use the others are kept, and the player's bucket with
    them, for `uses()`: a note read back that long after it was sent (a catch-up, a private thread
    the bot is added to) is weighed with the uses around it, however many came since."""

    __slots__ = ("_times", "keep")

    def __init__(self, rate: float, per: float, keep: float = 0.0) -> None:
        super().__init__(rate, per)
        self.keep = max(float(per), keep)
        self._times: list[float] = []  # oldest first

    def copy(self) -> InAnyWindow:
        return self.__class__(self.rate, self.per, self.keep)

    def _within(self, current: float) -> list[float]:
        return [t for t in self._times if t > current - self.per]

    # `current` is required, unlike discord.py's (time.time() when left out): see Limits.
    def get_tokens(self, current: float) -> int:
        return max(0, self.rate - len(self._within(current)))

    def get_retry_after(self, current: float) -> float:
        return self._wait(current, 1) if self.get_tokens(current) == 0 else 0.0

    def _wait(self, current: float, tokens: int) -> float:
        within = self._within(current)
        freed = len(within) + tokens - self.rate  # uses that must leave the window first
        if freed > len(within):
            return self.per  # more than the limit at once: never, as far as one window goes
        return within[freed - 1] + self.per - current

    def _used(self, current: float) -> None:
        # The mapping drops a bucket `per` after its `_last`: set so that it lives `keep` past
        # the newest use.
        self._last = max(self._last, current + self.keep - self.per)

    def update_rate_limit(self, current: float, *, tokens: int = 1) -> float | None:
        self._used(current)
        if self.get_tokens(current) < tokens:
            return self._wait(current, tokens)
        self.count(current, tokens)
        return None

    def uncount(self, current: float) -> None:
        """Give back a use counted at `current` that turned out to cost nothing."""
        if current in self._times:
            self._times.remove(current)

    def count(self, current: float, tokens: int = 1) -> None:
        """Count uses decided elsewhere (notes a catch-up answered by its own weighing), even in a
        window already full: a use newer than the oldest kept holds the next ones back longer."""
        self._used(current)
        for _ in range(tokens):
            bisect.insort(self._times, current)
        del self._times[: bisect.bisect_left(self._times, self._times[-1] - self.keep)]

    def uses(self) -> list[float]:
        """The times of the uses counted within `keep` of the newest, oldest first."""
        return list(self._times)

    def reset(self) -> None:
        super().reset()
        self._times.clear()


class Lateness:
    """How late messages reach the bot, for a wait told to a player to run from when their note
    came, not from when Discord says it was sent. Read on no clock the host's owner can set: the
    gap from Discord's stamp to time.monotonic() at arrival is the lateness plus the two clocks'
    offset, and the smallest gap of the messages of the last `keep` seconds (those that came
    promptly, as near as can be told) is that offset plus no more than their own lateness. Their
    difference is never more than the note's true lateness, so a wait less it is never shorter
    than needed; kept no longer than `keep`, for the clocks' drift to stay out of it."""

    __slots__ = ("_floor", "_floor_at", "keep")

    def __init__(self, keep: float = 600.0) -> None:
        self.keep = keep
        self._floor: float | None = None
        self._floor_at = 0.0

    def of(self, sent: float, now: float | None = None) -> float:
        """The lateness of a message Discord stamped `sent` (seconds since the epoch), arrived at
        `now` (time.monotonic()): 0 when none came sooner of late."""
        now = time.monotonic() if now is None else now
        gap = now - sent
        if self._floor is None or gap <= self._floor or now - self._floor_at > self.keep:
            self._floor, self._floor_at = gap, now
        return gap - self._floor


def room_for(times: list[float], at: float, rate: int, per: float) -> bool:
    """Whether one more use at `at` leaves every window of `per` seconds that holds it at most
    `rate` uses, beside `times` (in any order, before it or after it: a catch-up weighs notes sent
    before live ones it comes after)."""
    ends = [at, *(t for t in times if at <= t < at + per)]
    return all(sum(1 for t in times if end - per < t <= end) < rate for end in ends)
