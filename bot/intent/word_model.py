"""The phrasings' word model: naive Bayes over how players word each kind of request.

The router's cue words catch the phrasings their authors thought of; players find others ("yo
is my report done", "could you look into a double charge"). This model, learnt from the labelled
phrasings (bot/speech/phrasings.py) and a sample of the domain corpus's own sentences, is weighed
in alongside the cues. It lives with the router because its labels are the router's intents; the
words and the naive Bayes model it is built from belong to the speech layer below.
"""

from __future__ import annotations

import functools
import random

from bot.intent.cues import MANUALS, REGISTER, STATS, STATUS
from bot.speech import domain_corpus as corpus
from bot.speech import phrasings
from bot.speech.confusions import Confusions, train


def corpus_examples(
    rng: random.Random, per_list: int, smalltalk_label: str = phrasings.SMALLTALK
) -> list[tuple[str, str]]:
    """The domain corpus's sentences labelled by intent: up to `per_list` of each tool's, drawn
    with `rng`, and all of its small talk under `smalltalk_label`."""
    labelled = {
        STATS: corpus.STATS + [f.format(x=x) for f in corpus.STATS_FRAMES for x in corpus.STATS_THINGS],
        STATUS: corpus.STATUS + [f.format(x=x) for f in corpus.STATUS_FRAMES for x in corpus.STATUS_OBJECTS],
        REGISTER: corpus.GRIEVANCE
        + corpus.INCIDENTS
        + [f"{x} {p}" for x in corpus.PROBLEM_SUBJECTS for p in corpus.PROBLEMS],
        MANUALS: corpus.MANUAL_FACTS
        + [q.format(x=t) for q in corpus.MANUAL_QUESTIONS for t in corpus.MANUAL_TASKS],
    }
    examples = [
        (s, label)
        for label, sentences in labelled.items()
        for s in rng.sample(sentences, min(per_list, len(sentences)))
    ]
    examples += [(s, smalltalk_label) for s in corpus.SMALLTALK]
    return examples


def training_examples() -> list[tuple[str, str]]:
    """The phrasings and a sample of the domain corpus's own sentences (the same number per
    intent, so no intent wins on volume), labelled: what both learnt models learn from."""
    return phrasings.load() + corpus_examples(random.Random(11), per_list=40)


@functools.cache
def word_model() -> Confusions:
    """Naive Bayes over words and word pairs, from the training examples."""
    return train(training_examples())
