"""Addresses as Discord finds them in text, found in time linear in the text's length.

discord.utils' pattern for them, `<[^: >]+:/[^ >]+>|(?:https?|steam)://[^\\s<]+[^<.,:;"'\\]\\s]`,
is kept as `PATTERN`, and `Addresses` finds exactly what it finds. The regular expression itself
takes quadratic time: from each "<" it runs on to the next ":", " " or ">" before it fails, so
32,000 "<" took 7 s, with the event loop blocked; a possessive or atomic form runs on just as far.
A failed run is the same for every start inside it, so `Addresses` remembers where each ended.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

PATTERN = r"<[^: >]+:/[^ >]+>|(?:https?|steam)://[^\s<]+[^<.,:;\"'\]\s]"
_SCHEMES = ("https://", "http://", "steam://")
# Where an address may start, and the characters that end each run the pattern takes.
_START = re.compile(r"<|https?://|steam://")
# What may not end an address out of angle brackets, besides a space and "<", which end its run.
_NOT_LAST = frozenset(".,:;\"']")


class _Next:
    """The first place at or after a given one where a character of a class is (the text's
    length if none); asked of places that do not go back, it reads each character once."""

    def __init__(self, text: str, chars: str) -> None:
        self._text = text
        self._pattern = re.compile(chars)
        self._asked, self._found = 0, -1

    def at(self, start: int) -> int:
        if not self._asked <= start <= self._found:
            found = self._pattern.search(self._text, start)
            self._asked, self._found = start, found.start() if found else len(self._text)
        return self._found


class Addresses:
    """The addresses of one text: `end(at)` is where the pattern's match at `at` ends, -1 where
    it has none; asked at places that do not go back, it takes linear time in all."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._name_end = _Next(text, r"[: >]")  # the run of "<[^: >]+"
        self._path_end = _Next(text, r"[ >]")  # of ":/[^ >]+>"
        self._run_end = _Next(text, r"[\s<]")  # of "https://[^\s<]+"
        self._last_before: tuple[int, int] = (-1, -1)  # a run's end, its last character that may end

    def end(self, at: int) -> int:
        text = self._text
        if text.startswith("<", at):
            colon = self._name_end.at(at + 1)
            if colon == at + 1 or not text.startswith(":/", colon):
                return -1
            close = self._path_end.at(colon + 2)
            return close + 1 if close > colon + 2 and text.startswith(">", close) else -1
        scheme = next((s for s in _SCHEMES if text.startswith(s, at)), None)
        if scheme is None:
            return -1
        start = at + len(scheme)
        stop = self._run_end.at(start)
        if self._last_before[0] != stop:
            last = stop - 1  # never below the scheme's "/", which may end one
            while last >= start and text[last] in _NOT_LAST:
                last -= 1
            self._last_before = (stop, last)
        last = self._last_before[1]
        return last + 1 if last > start else -1

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Where each address starts and ends, as `re.finditer(PATTERN, text)` finds them."""
        at = 0
        while found := _START.search(self._text, at):
            start = found.start()
            end = self.end(start)
            if end > 0:
                yield start, end
                at = end
            else:
                at = start + 1
