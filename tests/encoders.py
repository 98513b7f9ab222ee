"""Routing examples run under each sentence encoder's word tagger, each with its known misses.

The router reads notes through all-mpnet-base-v2 when its wheels are installed and through
all-MiniLM-L6-v2 otherwise (bot/intent/meaning.py): an example is checked under both, so a change
that breaks either reading fails, and a miss that one of them mends is seen (strict xfail)."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest

from bot.intent import meaning
from bot.speech import encoder_files
from bot.speech.sentence_encoder import MODELS, Model


def each_encoder(misses: Mapping[str, str] | None = None) -> pytest.MarkDecorator:
    """Parametrise a test's `encoder` over MODELS; `misses`: model name -> why it misses."""
    params = []
    for model in MODELS:
        marks = [
            pytest.mark.skipif(not encoder_files.installed(model), reason=encoder_files.install_hint(model))
        ]
        if misses and model.name in misses:
            marks.append(pytest.mark.xfail(strict=True, reason=misses[model.name]))
        params.append(pytest.param(model, marks=marks, id=model.name))
    return pytest.mark.parametrize("encoder", params)


@contextmanager
def reading_through(model: Model) -> Iterator[None]:
    meaning.use(model.name)
    try:
        yield
    finally:
        meaning.use(meaning.AUTO)
