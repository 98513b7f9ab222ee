"""Trigram language models in ARPA format for pocketsphinx.

`train` makes a model from a list of sentences with interpolated absolute discounting; `mix`
interpolates it with a general model (pocketsphinx's English one) over a wider vocabulary;
`to_arpa` writes either in ARPA's backoff form: each listed n-gram stores its probability, and
each history a backoff weight that makes its conditional distribution sum to one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

DISCOUNT = 0.7
UNIFORM_SHARE = 0.05  # unigram mass spread evenly, so rare words stay reachable

Gram = tuple[str, ...]


@dataclass
class BackoffModel:
    probs: dict[Gram, float]  # every listed n-gram of every order → P(last word | the others)
    bows: dict[Gram, float] = field(default_factory=dict)  # history → backoff weight

    def prob(self, gram: Gram) -> float:
        if gram in self.probs:
            return self.probs[gram]
        if len(gram) == 1:
            return 0.0
        return self.bows.get(gram[:-1], 1.0) * self.prob(gram[1:])

    def order(self, n: int) -> list[Gram]:
        return [g for g in self.probs if len(g) == n]


def train(sentences: Iterable[str]) -> BackoffModel:
    grams: list[Counter[Gram]] = [Counter(), Counter(), Counter()]
    for sentence in sentences:
        words = ["<s>", *sentence.split(), "</s>"]
        for i in range(len(words)):
            for n in range(3):
                if i - n >= 0:
                    grams[n][tuple(words[i - n : i + 1])] += 1

    total = sum(c for g, c in grams[0].items() if g[0] != "<s>")
    spoken = len(grams[0]) - 1  # every word but <s> can be predicted
    model = BackoffModel({(w,): 0.0 for (w,) in grams[0]})
    for (w,), count in grams[0].items():
        if w != "<s>":
            model.probs[(w,)] = (1 - UNIFORM_SHARE) * count / total + UNIFORM_SHARE / spoken

    for order in (1, 2):
        by_history: dict[Gram, dict[str, int]] = defaultdict(dict)
        for gram, count in grams[order].items():
            by_history[gram[:-1]][gram[-1]] = count
        found: dict[Gram, float] = {}
        for history, followers in by_history.items():
            seen = sum(followers.values())
            left = DISCOUNT * len(followers) / seen
            for w, count in followers.items():
                found[(*history, w)] = max(count - DISCOUNT, 0) / seen + left * model.prob((*history[1:], w))
        model.probs.update(found)
        _set_backoffs(model, order)
    return model


def mix(
    domain: BackoffModel, general: Callable[[Gram], float], vocabulary: set[str], weight: float
) -> BackoffModel:
    """`weight` × the domain model + (1 − weight) × a general one, over both vocabularies.

    The general model is only queried (`general(gram)` is its probability of the gram's last
    word after the others), so the mix lists the domain model's n-grams plus unigrams for the
    general vocabulary; backoff weights are recomputed so every distribution sums to one again.
    """
    words = (vocabulary | {w for (w,) in domain.order(1)}) - {"<s>"}
    general_total = sum(general((w,)) for w in words)
    mixed = BackoffModel({("<s>",): 0.0})
    for w in words:
        mixed.probs[(w,)] = weight * domain.prob((w,)) + (1 - weight) * general((w,)) / general_total
    for order in (2, 3):
        for gram in domain.order(order):
            mixed.probs[gram] = weight * domain.prob(gram) + (1 - weight) * general(gram)
        _set_backoffs(mixed, order - 1)
    return mixed


def _set_backoffs(model: BackoffModel, history_length: int) -> None:
    """Backoff weights for every history of this length that has listed followers."""
    followers: dict[Gram, list[Gram]] = defaultdict(list)
    for gram in model.probs:
        if len(gram) == history_length + 1:
            followers[gram[:-1]].append(gram)
    for history, grams in followers.items():
        kept = sum(model.probs[g] for g in grams)
        if kept >= 1:  # a mix can list more than a whole distribution: leave some to back off with
            for g in grams:
                model.probs[g] *= 0.99 / kept
            kept = 0.99
        lower_kept = sum(model.prob(g[1:]) for g in grams)
        model.bows[history] = (1 - kept) / (1 - lower_kept) if lower_kept < 1 else 1.0


def to_arpa(model: BackoffModel) -> str:
    def log(p: float) -> str:
        return f"{math.log10(p):.4f}" if p > 0 else "-99.0000"

    orders = [sorted(model.order(n)) for n in (1, 2, 3)]
    lines = ["\\data\\", *(f"ngram {n}={len(grams)}" for n, grams in enumerate(orders, 1))]
    for n, grams in enumerate(orders, 1):
        lines += ["", f"\\{n}-grams:"]
        for gram in grams:
            bow = f"\t{log(model.bows[gram])}" if gram in model.bows else ""
            lines.append(f"{log(model.probs[gram])}\t{' '.join(gram)}{bow}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)
