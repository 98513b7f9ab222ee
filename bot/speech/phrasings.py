"""How players word each kind of request, as labelled examples.

The router's cue words catch the phrasings its authors thought of; players find others ("yo
is my report done", "could you look into a double charge"). data/speech/phrasings/*.tsv holds
hundreds of labelled utterances written in several registers (casual, polite, terse, rambly),
none taken from the evaluation set. They feed the domain language model (so the recogniser
knows their words) and a naive Bayes model over their words that the router weighs alongside
its cues (bot/intent/word_model.py).
"""

from __future__ import annotations

from pathlib import Path

from bot import paths
from bot.speech.domain_corpus import normalise

PHRASINGS_DIR = paths.PHRASINGS
SMALLTALK = "smalltalk"  # one label for greetings, thanks, goodbyes and "what can you do"


def load(directory: Path = PHRASINGS_DIR) -> list[tuple[str, str]]:
    """(normalised utterance, intent) pairs from every phrasings file."""
    out = []
    for path in sorted(directory.glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and not line.startswith("#"):
                intent, text = line.split("\t")
                out.append((normalise(text), intent))
    return out
