"""Memories a long-running process keeps of ids it has seen, bounded so they never outgrow it."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memory: dict[K, V], key: K, value: V, most: int) -> None:
    """Put `key` in `memory`, then forget the oldest entries beyond `most` (dicts keep insertion
    order, so the oldest come first)."""
    memory[key] = value
    while len(memory) > most:
        del memory[next(iter(memory))]
