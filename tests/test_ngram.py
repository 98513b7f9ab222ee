"""The language models' arithmetic: every conditional distribution sums to one."""

import math

import pytest

from bot.speech import ngram

SENTENCES = ["how many points do i have", "what is my rank", "what is the status of my ticket", "hello"]


def total(model: ngram.BackoffModel, history: ngram.Gram) -> float:
    words = [w for (w,) in model.order(1) if w != "<s>"]
    return sum(model.prob((*history, w)) for w in words)


@pytest.mark.parametrize("history", [(), ("<s>",), ("what",), ("what", "is"), ("my",), ("points", "do")])
def test_a_trained_model_is_a_distribution_after_every_history(history: ngram.Gram) -> None:
    assert total(ngram.train(SENTENCES), history) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("history", [(), ("<s>",), ("what", "is"), ("my",), ("ticket",), ("the", "game")])
def test_mixing_in_a_general_model_keeps_every_distribution_whole(history: ngram.Gram) -> None:
    general_words = {"game": 0.4, "the": 0.3, "crash": 0.2, "what": 0.1}

    def general(gram: ngram.Gram) -> float:
        return general_words.get(gram[-1], 0.0)  # a unigram model stands in for pocketsphinx's

    mixed = ngram.mix(ngram.train(SENTENCES), general, set(general_words), weight=0.9)
    assert total(mixed, history) == pytest.approx(1.0, abs=1e-9)
    # words only the general model knows are now reachable, at about a tenth of its share
    assert mixed.prob(("crash",)) == pytest.approx(0.1 * 0.2, rel=1e-9)
    assert mixed.prob(("what", "is")) > mixed.prob(("what", "crash")) > 0


def test_the_arpa_text_lists_every_order_with_log_probabilities() -> None:
    model = ngram.train(SENTENCES)
    text = ngram.to_arpa(model)
    assert text.startswith("\\data\\\nngram 1=")
    line = next(x for x in text.splitlines() if x.endswith("\twhat is my"))
    assert float(line.split("\t")[0]) == pytest.approx(math.log10(model.prob(("what", "is", "my"))), abs=1e-4)
