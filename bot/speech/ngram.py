"""A small trigram language model in ARPA format, for pocketsphinx, from a list of sentences.

Interpolated absolute discounting, written out in ARPA's backoff form: each seen n-gram stores
its interpolated probability, and each history a backoff weight that makes every conditional
distribution sum to one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

DISCOUNT = 0.7
UNIFORM_SHARE = 0.05  # unigram mass spread evenly, so rare words stay reachable


def build_arpa(sentences: list[str]) -> str:
    grams: list[Counter[tuple[str, ...]]] = [Counter(), Counter(), Counter()]
    for sentence in sentences:
        words = ["<s>", *sentence.split(), "</s>"]
        for i in range(len(words)):
            for n in range(3):
                if i - n >= 0:
                    grams[n][tuple(words[i - n : i + 1])] += 1

    vocab = sorted({g[0] for g in grams[0]})
    total = sum(c for g, c in grams[0].items() if g[0] != "<s>")
    spoken = len(vocab) - 1  # every word but <s> can be predicted
    p1 = {
        w: (1 - UNIFORM_SHARE) * grams[0][(w,)] / total + UNIFORM_SHARE / spoken for w in vocab if w != "<s>"
    }

    def conditional(order: int, lower: dict[tuple[str, ...], float], lower_bow: dict[tuple[str, ...], float]):
        by_history: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
        for gram, count in grams[order].items():
            by_history[gram[:-1]][gram[-1]] = count

        def lower_prob(context: tuple[str, ...], w: str) -> float:
            if order == 1:
                return p1[w]
            key = (*context[1:], w)
            if key in lower:
                return lower[key]
            return lower_bow.get(context[1:], 1.0) * p1[w]

        probs: dict[tuple[str, ...], float] = {}
        bows: dict[tuple[str, ...], float] = {}
        for history, followers in by_history.items():
            seen = sum(followers.values())
            left = DISCOUNT * len(followers) / seen
            for w, count in followers.items():
                probs[(*history, w)] = max(count - DISCOUNT, 0) / seen + left * lower_prob(history, w)
            kept = sum(probs[(*history, w)] for w in followers)
            lower_kept = sum(lower_prob(history, w) for w in followers)
            bows[history] = (1 - kept) / (1 - lower_kept) if lower_kept < 1 else 1.0
        return probs, bows

    p2, bow1 = conditional(1, {}, {})
    p3, bow2 = conditional(2, p2, bow1)

    def log(p: float) -> str:
        return f"{math.log10(p):.4f}" if p > 0 else "-99.0000"

    lines = [
        "\\data\\",
        f"ngram 1={len(vocab)}",
        f"ngram 2={len(p2)}",
        f"ngram 3={len(p3)}",
        "",
        "\\1-grams:",
    ]
    for w in vocab:
        prob = "-99.0000" if w == "<s>" else log(p1[w])
        bow = f"\t{log(bow1[(w,)])}" if (w,) in bow1 else ""
        lines.append(f"{prob}\t{w}{bow}")
    lines += ["", "\\2-grams:"]
    for gram in sorted(p2):
        bow = f"\t{log(bow2[gram])}" if gram in bow2 else ""
        lines.append(f"{log(p2[gram])}\t{' '.join(gram)}{bow}")
    lines += ["", "\\3-grams:"]
    lines += [f"{log(p3[gram])}\t{' '.join(gram)}" for gram in sorted(p3)]
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)
