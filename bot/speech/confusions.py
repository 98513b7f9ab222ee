"""How the recogniser mishears each kind of question, learnt once from synthetic speech.

A quarter of the words pocketsphinx hears are wrong, and its mistakes are not random: "tell me
my stats" tends to come out as "daily my credits grievance". This is a naive Bayes model over
the words the recogniser produced (not the words spoken), trained on eSpeak recordings of
labelled questions. The router asks it only when its own cues leave it unsure, and takes its
answer only when the model is confident; otherwise the player is still asked to rephrase.

This module is what the request path needs: the model, loading it, training it from examples.
Building the shipped model from recordings is lab work, in bot/lab/confusions.py.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from bot import paths

MODEL_PATH = paths.CONFUSIONS
SMOOTHING = 0.5


def features(text: str) -> list[str]:
    words = text.split()
    return words + [f"{a}_{b}" for a, b in itertools.pairwise(words)]


@dataclass
class Confusions:
    counts: dict[str, dict[str, int]]  # label -> feature -> count
    documents: dict[str, int]  # label -> training utterances

    @functools.cached_property
    def _vocabulary(self) -> int:
        return len({f for per in self.counts.values() for f in per})

    @functools.cached_property
    def _totals(self) -> dict[str, int]:
        return {label: sum(per.values()) for label, per in self.counts.items()}

    def predict(self, text: str) -> tuple[str, float]:
        """The most likely label for what the recogniser heard, and its posterior probability."""
        posteriors = self.posteriors(text)
        best = max(posteriors, key=posteriors.__getitem__)
        return best, posteriors[best]

    def posteriors(self, text: str) -> dict[str, float]:
        """Every label's posterior probability for these words."""
        found = features(text)
        all_documents = sum(self.documents.values())
        scores = {}
        for label, per in self.counts.items():
            denominator = self._totals[label] + SMOOTHING * self._vocabulary
            log_p = math.log(self.documents[label] / all_documents)
            log_p += sum(math.log((per.get(f, 0) + SMOOTHING) / denominator) for f in found)
            scores[label] = log_p
        top = max(scores.values())
        total = sum(math.exp(s - top) for s in scores.values())
        return {label: math.exp(s - top) / total for label, s in scores.items()}

    def to_json(self) -> str:
        return json.dumps({"counts": self.counts, "documents": self.documents}, sort_keys=True, indent=0)

    @classmethod
    def from_json(cls, text: str) -> Confusions:
        raw = json.loads(text)
        return cls(raw["counts"], raw["documents"])


@functools.cache
def load(path: Path = MODEL_PATH) -> Confusions | None:
    try:
        return Confusions.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def train(examples: list[tuple[str, str]]) -> Confusions:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    documents: Counter[str] = Counter()
    for heard, label in examples:
        if heard.strip():
            counts[label].update(features(heard))
            documents[label] += 1
    return Confusions({label: dict(c) for label, c in counts.items()}, dict(documents))
