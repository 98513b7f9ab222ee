"""What an evaluation voice asks its model for, row by row: the voice as `python -m bot eval`
finds it installed, its model's `say` recorded instead of run after one real note."""

from __future__ import annotations

from typing import Any

import pytest

from bot.lab import neural_eval


def calls_per_row(
    monkeypatch: pytest.MonkeyPatch, name: str, model: type, rate: int, rows: list[neural_eval.Row]
) -> tuple[list[tuple[Any, ...]], str]:
    """The arguments `model.say` gets for each row, and the notes' made-with line."""
    voices = {v.name: v for v in neural_eval.installed_voices([])}
    assert name in voices
    say = voices[name].speaker([])
    samples, said_rate = say(rows[0])
    assert said_rate == rate and len(samples) > rate
    asked: list[tuple[Any, ...]] = []
    monkeypatch.setattr(model, "say", lambda self, *args: asked.append(args) or samples)
    for row in rows:
        say(row)
    return asked, neural_eval.environment(list(voices.values()))
