"""The neural-voice splits of `python -m bot eval`: questions spoken by every installed neural voice
(the Piper reply voices, and Kokoro's accented English and Hibari's heart from the lab's own extra),
each made into a player's voice note in every listening condition (bot/lab/conditions.py), heard by
the bot's own worker processes and routed with router.decide_all.

A note is scored by what decide_all returns: right (the tools asked for, no other; small talk: no
tool and not unsure), one of two (a two-request note that got one of its tools and nothing else),
asked again (no tool, unsure) or wrong (anything else, an extra tool included).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from bot import audio, paths
from bot.config import AudioSettings
from bot.engines.base import Transcript
from bot.engines.offline.engine import spoken
from bot.engines.offline.hearing import WorkerHearing
from bot.intent import router
from bot.lab import hibari, kokoro
from bot.lab.conditions import CONDITIONS, PINK, Condition, apply, bed_key, load_bed, make_bed
from bot.speech import neural
from bot.speech.domain_corpus import normalise

FILES = (
    paths.DATA / "eval" / "neural_dev.tsv",
    paths.DATA / "eval" / "neural_splits.tsv",
    paths.DATA / "eval" / "neural_splits_2.tsv",
    paths.DATA / "eval" / "neural_splits_3.tsv",
    paths.DATA / "eval" / "neural_splits_4.tsv",
    paths.DATA / "eval" / "neural_splits_5.tsv",
    paths.DATA / "eval" / "neural_splits_6.tsv",
    paths.DATA / "eval" / "neural_splits_7.tsv",
    paths.DATA / "eval" / "neural_splits_8.tsv",
    paths.DATA / "eval" / "neural_splits_9.tsv",
    paths.DATA / "eval" / "neural_splits_10.tsv",
    paths.DATA / "eval" / "neural_splits_11.tsv",
    paths.DATA / "eval" / "neural_splits_12.tsv",
    paths.DATA / "eval" / "neural_splits_13.tsv",
    paths.DATA / "eval" / "neural_splits_14.tsv",
    paths.DATA / "eval" / "neural_splits_15.tsv",
)
SPLITS = ("nvdev", *(f"nv{n}" for n in range(1, 31)))
# Run only by name. nv1 to nv12 and nv15 to nv18 were blind and have been run once each (nv11 and
# nv12 measured the word tagger, nv15 to nv18 its decider). nv13 and nv14 were read by the
# engineer before they were run (their file's header says when). nv19 is smaller and targeted:
# notes that tell of a complaint filed before. nv20 was run once, in the second voice (Kokoro) too;
# nv21 was run once, in all three. nv22 to nv24, three writers' blind splits, were run once,
# together, and are reported pooled as well; so were nv25 to nv27 and nv28 to nv30, three more
# writers' each.
RESERVED = tuple(f"nv{n}" for n in range(1, 31))
KINDS = ("short", "ramble", "double")
SMALLTALK = "smalltalk"

# Per-note variation of the voice, drawn from the row's seed. Piper's defaults for this voice are
# length 1, noise 0.667 and width noise 0.8; these stay where its speech still sounds natural.
LENGTH_SCALE = (0.85, 1.2)
NOISE_SCALE = (0.45, 0.85)
NOISE_W = (0.6, 1.0)

RIGHT, ONE_OF_TWO, WRONG, ASKED = "right", "one of two", "wrong", "asked again"
VERDICTS = (RIGHT, ONE_OF_TWO, WRONG, ASKED)


@dataclass(frozen=True)
class Row:
    split: str
    kind: str
    intents: tuple[str, ...]  # the tools asked for, in order; ("smalltalk",) for none
    text: str
    index: int  # within its split: a new split never changes another's notes

    @property
    def seed(self) -> int:
        return zlib.crc32(f"{self.split}:{self.index}".encode())

    def delivery(self) -> tuple[float, float, float]:
        """Piper's length scale, noise scale and width noise for this row."""
        rng = np.random.default_rng(self.seed)
        return tuple(round(float(rng.uniform(*r)), 3) for r in (LENGTH_SCALE, NOISE_SCALE, NOISE_W))  # type: ignore[return-value]


def load_rows(splits: Iterable[str], files: Iterable[Path] = FILES) -> list[Row]:
    """The rows of the named splits only, in file order."""
    wanted = set(splits)
    rows: list[Row] = []
    counts: dict[str, int] = defaultdict(int)
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            split, kind, intents, text = line.split("\t")
            if split in wanted:
                rows.append(Row(split, kind, tuple(intents.split("+")), text, counts[split]))
                counts[split] += 1
    return rows


def verdict(expected: tuple[str, ...], intents: list[router.Intent]) -> str:
    tools = {i.name for i in intents if i.is_tool}
    unsure = any(i.name == router.UNSURE for i in intents)
    wanted = set(expected) - {SMALLTALK}
    if tools == wanted and (wanted or not unsure):
        return RIGHT
    if not tools:
        return ASKED if unsure else WRONG
    if len(wanted) > 1 and len(tools & wanted) == 1 and tools <= wanted:
        return ONE_OF_TWO
    return WRONG


# ---- recordings -------------------------------------------------------------------------------


class EvalVoice(Protocol):
    """A voice the evaluation speaks its rows in."""

    @property
    def name(self) -> str: ...

    @property
    def packages(self) -> tuple[str, ...]:
        """Its distributions: notes made with other releases of them are made again."""
        ...

    def speaker(self, extra: list[Path]) -> Callable[[Row], tuple[np.ndarray, int]]:
        """Loads the voice (in a recording process) and says a row: 16-bit samples and their rate."""
        ...

    def who(self, row: Row) -> str:
        """Who says the row: the voice itself, or the one of its speakers the row's seed draws."""
        ...


@dataclass(frozen=True)
class PiperEval:
    model: neural.VoiceModel

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.model.package, "piper-tts")

    def who(self, row: Row) -> str:
        return self.name

    def speaker(self, extra: list[Path]) -> Callable[[Row], tuple[np.ndarray, int]]:
        where = neural.installed_folders(self.model, extra)[0]
        files = neural.verified_files(self.model, where)

        def say(row: Row) -> tuple[np.ndarray, int]:
            length, noise, width = row.delivery()
            # A fresh session per note: Piper's own randomness then depends on the row alone.
            voice = neural.seeded(self.model, where, files, row.seed)
            rate_wpm = round(neural.NATURAL_WPM / length)
            speech = voice.synthesize(spoken(row.text), rate_wpm, noise_scale=noise, noise_w=width)
            return np.frombuffer(speech.pcm, dtype=np.int16), speech.rate

        return say


@dataclass(frozen=True)
class KokoroEval:
    """Each row in one of Kokoro's five Japanese voices, drawn from its seed, at its length scale."""

    name: str = kokoro.NAME
    # Its phonemes come from piper-tts's eSpeak.
    packages: tuple[str, ...] = (*kokoro.DISTRIBUTIONS, "piper-tts")

    def speaker(self, extra: list[Path]) -> Callable[[Row], tuple[np.ndarray, int]]:
        voice = kokoro.KokoroVoice()

        def say(row: Row) -> tuple[np.ndarray, int]:
            length = row.delivery()[0]
            return voice.say(spoken(row.text), self.who(row), 1 / length), kokoro.RATE

        return say

    def who(self, row: Row) -> str:
        return kokoro.SPEAKERS[row.seed % len(kokoro.SPEAKERS)]


@dataclass(frozen=True)
class HibariEval:
    """Each row in Hibari's heart voice at its length scale, its noise drawn from the row's seed."""

    name: str = hibari.NAME

    @property
    def packages(self) -> tuple[str, ...]:
        return hibari.distributions()

    def speaker(self, extra: list[Path]) -> Callable[[Row], tuple[np.ndarray, int]]:
        voice = hibari.HibariVoice()

        def say(row: Row) -> tuple[np.ndarray, int]:
            length = row.delivery()[0]
            return voice.say(spoken(row.text), 1 / length, row.seed), hibari.RATE

        return say

    def who(self, row: Row) -> str:
        return self.name


def installed_voices(extra: list[Path]) -> list[EvalVoice]:
    """Every known neural voice with its files installed: a new voice wheel joins by itself."""
    voices: list[EvalVoice] = [
        PiperEval(model) for model in neural.KNOWN.values() if neural.installed_folders(model, extra)
    ]
    if kokoro.installed():
        voices.append(KokoroEval())
    if hibari.installed():
        voices.append(HibariEval())
    return voices


@dataclass(frozen=True)
class Note:
    row: Row
    voice: str
    condition: str

    @property
    def name(self) -> str:
        """Everything that shapes the recording, hashed."""
        c = CONDITIONS[self.condition]
        bed = bed_key() if c.snr_db is not None else ""
        tag = f"{self.row.text}|{self.voice}|{self.row.delivery()}|{self.row.seed}|{c}|{bed}"
        return hashlib.sha1(tag.encode()).hexdigest()[:16] + ".ogg"


def notes(rows: list[Row], voices: list[str]) -> list[Note]:
    return [Note(row, voice, c) for row in rows for voice in voices for c in CONDITIONS]


def environment(voices: list[EvalVoice]) -> str:
    import av

    codec = ".".join(map(str, av.library_versions["libavcodec"]))
    own = [name for voice in voices for name in voice.packages]
    # The noise bed's eSpeak release is in the noisy notes' names (conditions.bed_key).
    packages = ["onnxruntime", *dict.fromkeys(own), "av", "numpy"]
    return "neural notes made with " + ", ".join(
        f"{name} {metadata.version(name)}" + (f" (libavcodec {codec})" if name == "av" else "")
        for name in packages
    )


def recordings(rows: list[Row], voices: list[EvalVoice], cache: Path, extra: list[Path]) -> dict[Note, Path]:
    """Each row in each voice and condition, making any note that is missing. A voice's notes of a
    split are made again when the releases that make them change; the other voices' are kept, so
    a new or upgraded voice costs its own notes only. Each note is a seeded voice's alone (no state
    carries from one to the next), so a note once made is kept whatever else is asked for."""
    names = [v.name for v in voices]
    lines = {v.name: environment([v]) for v in voices}
    folder = cache / "neural"
    by_split: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_split[row.split].append(row)
    manifests: dict[str, dict[str, dict[str, object]]] = {}
    jobs: list[tuple[str, str, list[Row]]] = []  # split, voice, rows to say
    for split, split_rows in by_split.items():
        kept = _read_manifest(folder / split)
        if kept is None:
            # Notes listed under no voice: what made them is unknown, so none is kept.
            for old in (folder / split).glob("*.ogg"):
                old.unlink()
            kept = {}
        for name in names:
            mine = kept.get(name, {})
            if mine.get("made with") != lines[name]:
                for old in mine.get("recordings", []):  # type: ignore[attr-defined]
                    (folder / split / old).unlink(missing_ok=True)
                mine = {"made with": lines[name], "recordings": []}
            kept[name] = mine
            have = set(mine["recordings"])  # type: ignore[call-overload]
            todo = [r for r in split_rows if not {n.name for n in notes([r], [name])} <= have]
            if todo:
                jobs.append((split, name, todo))
        manifests[split] = kept
    if jobs:
        spawn = multiprocessing.get_context("spawn")
        # eSpeak's output depends on what it said before in a process: the bed is made in one of
        # its own, and then read from the cache by every worker.
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            pool.submit(make_bed, cache).result()
        workers = max(1, min(2, os.cpu_count() or 1))
        # Interleaved, so rambles (the long notes) are shared between the workers; a few rows stay
        # in one process, which would otherwise spend longer loading the voice than saying them.
        chunks = [
            (name, rs[k::parts], folder / split)
            for split, name, rs in jobs
            for parts in [max(1, min(workers, len(rs) // 8))]
            for k in range(parts)
        ]
        for split, _, _ in jobs:
            (folder / split).mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(workers, mp_context=spawn, max_tasks_per_child=1) as pool:
            args = (
                [c[0] for c in chunks],
                [c[1] for c in chunks],
                [c[2] for c in chunks],
                [cache] * len(chunks),
                [extra] * len(chunks),
            )
            list(pool.map(_record, *args))
        for split, name, rs in jobs:
            mine = manifests[split][name]
            mine["recordings"] = sorted(set(mine["recordings"]) | {n.name for n in notes(rs, [name])})  # type: ignore[call-overload]
        for split in dict.fromkeys(split for split, _, _ in jobs):
            # Written after the notes: a run cut short makes its notes again.
            (folder / split / "split.json").write_text(json.dumps({"voices": manifests[split]}))
    return {note: folder / note.row.split / note.name for note in notes(rows, names)}


def _read_manifest(folder: Path) -> dict[str, dict[str, object]] | None:
    """Each voice's notes of a split and what made them; None where there is no such record (no
    split.json, or one from before the notes were kept per voice)."""
    try:
        manifest = json.loads((folder / "split.json").read_text())
    except (OSError, ValueError):
        return None
    voices = manifest.get("voices") if isinstance(manifest, dict) else None
    return voices if isinstance(voices, dict) else None


def _record(voice_name: str, rows: list[Row], folder: Path, cache: Path, extra: list[Path]) -> None:
    [voice] = [v for v in installed_voices(extra) if v.name == voice_name]
    say = voice.speaker(extra)
    beds: dict[int, np.ndarray] = {}
    for row in rows:
        samples, rate = say(row)
        if rate not in beds:
            beds[rate] = load_bed(cache, rate)
        for name, condition in CONDITIONS.items():
            note = Note(row, voice.name, name)
            (folder / note.name).write_bytes(apply(samples, rate, condition, row.seed, beds[rate]))


# ---- hearing and scoring ----------------------------------------------------------------------


@dataclass
class Outcome:
    note: Note
    recognizer: str
    heard: str
    intents: tuple[str, ...]
    verdict: str
    errors: int
    words: int
    seconds: float
    audio_seconds: float


async def hear_all(
    hearing: WorkerHearing, label: str, made: dict[Note, Path], limits: AudioSettings
) -> list[Outcome]:
    """Every note through the bot's own workers, as many at a time as there are workers, so each
    note's time is about its own."""
    from bot.lab.evaluation import word_errors

    gate = asyncio.Semaphore(hearing.workers)

    async def one(note: Note, path: Path) -> Outcome:
        decoded = await asyncio.to_thread(lambda: audio.decode(path.read_bytes(), limits))
        async with gate:
            started = time.perf_counter()
            heard: Transcript = await hearing.hear(decoded.segment.raw_data, decoded.segment.frame_rate)
            took = time.perf_counter() - started
        intents = router.decide_all(heard)
        errors, words = word_errors(normalise(note.row.text), heard.text)
        return Outcome(
            note,
            label,
            heard.text,
            tuple(i.name for i in intents),
            verdict(note.row.intents, intents),
            errors,
            words,
            took,
            decoded.seconds,
        )

    return list(await asyncio.gather(*(one(note, path) for note, path in made.items())))


def cells(outcomes: list[Outcome], pooled_as: str | None = None) -> list[dict[str, object]]:
    """Per split, kind (and all kinds), condition, recogniser and voice: the share of each verdict
    and the word error rate. With `pooled_as`, every split's notes count as that one split's."""
    groups: dict[tuple[str, str, str, str, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        split = pooled_as or o.note.row.split
        for kind in (o.note.row.kind, "all"):
            groups[split, kind, o.note.condition, o.recognizer, o.note.voice].append(o)
    return [
        {"split": split, "kind": kind, "condition": condition, "recognizer": recognizer, "voice": voice}
        | _figures(rows)
        for (split, kind, condition, recognizer, voice), rows in groups.items()
    ]


def _figures(rows: list[Outcome]) -> dict[str, object]:
    """A group of notes' count, share of each verdict, word error rate and real-time factor."""
    words = sum(o.words for o in rows)
    return {
        "notes": len(rows),
        **{v: sum(o.verdict == v for o in rows) / len(rows) for v in VERDICTS},
        "word error rate": sum(o.errors for o in rows) / words if words else 0.0,
        "real-time factor": sum(o.seconds for o in rows) / sum(o.audio_seconds for o in rows),
    }


def poolable(splits: Iterable[str]) -> tuple[str, ...]:
    """The blind splits among `splits` when there are several, to be reported pooled as well;
    () otherwise. A seen split would flatter the pooled figures, so it is left out."""
    blind = tuple(s for s in splits if s in RESERVED)
    return blind if len(blind) > 1 else ()


def report(outcomes: list[Outcome], split: str, voices: list[EvalVoice], pooled: tuple[str, ...] = ()) -> str:
    """One split's table: a row per kind and condition, a column group per recogniser and voice;
    then, for a voice of several speakers, each speaker's share right in each condition. With
    `pooled`, those splits' notes together, as if one split named `split`: several writers' splits
    read as one yardstick, less bent by any one writer's way of asking."""
    wanted = set(pooled) or {split}
    mine = [o for o in outcomes if o.note.row.split in wanted]
    if not mine:
        return f"split: {split}: no notes"
    pooled_as = split if pooled else None
    several = len({o.note.voice for o in mine}) > 1
    listeners = list(dict.fromkeys((o.recognizer, o.note.voice) for o in mine))
    recognizers = [f"{r}, {v}" if several else r for r, v in listeners]
    table = {(c["kind"], c["condition"], c["recognizer"], c["voice"]): c for c in cells(mine, pooled_as)}
    per_kind = {
        k: len({(o.note.row.split, o.note.row.index) for o in mine if o.note.row.kind == k}) for k in KINDS
    }
    rows_n = sum(per_kind.values())
    counts = ", ".join(f"{n} {k}" for k, n in per_kind.items() if n)
    conditions = "; ".join(f"{c.name}: " + _describe(c) for c in CONDITIONS.values())
    lines = [
        f"split: {split} ({rows_n} questions: {counts}; voice {', '.join(v.name for v in voices)}), "
        "each in every condition",
        f"  {conditions}",
        "  right / one of two (double only) / wrong tool / asked again, % of notes; word error rate %",
    ]
    group = f"{'right':>5} {'1of2':>4} {'wrong':>5} {'asked':>5} {'WER':>5}"
    lines.append(f"{'':<7} {'':<6} {'n':>3}  " + " | ".join(f"{r:<29}" for r in recognizers))
    lines.append(f"{'kind':<7} {'cond.':<6} {'':>3}  " + " | ".join(f"{group:<29}" for _ in recognizers))
    for kind in (*[k for k in KINDS if per_kind[k]], "all"):
        for condition in CONDITIONS:
            got = [table.get((kind, condition, r, v)) for r, v in listeners]
            n = next((c["notes"] for c in got if c), 0)
            parts = []
            for c in got:
                if c is None:
                    parts.append(f"{'-':<29}")
                    continue
                one = f"{c[ONE_OF_TWO]:.0%}" if kind in ("double", "all") else "-"
                shares = f"{c[RIGHT]:>5.0%} {one:>4} {c[WRONG]:>5.0%} {c[ASKED]:>5.0%}"
                parts.append(f"{shares} {c['word error rate']:>5.1%}".ljust(29))
            lines.append(f"{kind:<7} {condition:<6} {n:>3}  " + " | ".join(parts))
    for (r, v), label in zip(listeners, recognizers, strict=True):
        heard = [o for o in mine if (o.recognizer, o.note.voice) == (r, v)]
        rtf = [o.seconds / o.audio_seconds for o in heard]
        total = sum(o.seconds for o in heard) / sum(o.audio_seconds for o in heard)
        p95, worst = np.percentile(rtf, 95), max(rtf)
        lines.append(f"real-time factor, {label}: overall {total:.3f}, p95 {p95:.3f}, worst {worst:.3f}")
    by_speaker = speaker_cells(mine, voices, pooled_as)
    for voice, recognizer in dict.fromkeys((c["voice"], c["recognizer"]) for c in by_speaker):
        lines += _by_speaker([c for c in by_speaker if (c["voice"], c["recognizer"]) == (voice, recognizer)])
    return "\n".join(lines)


def speaker_cells(
    outcomes: list[Outcome], voices: list[EvalVoice], pooled_as: str | None = None
) -> list[dict[str, object]]:
    """For each voice of several speakers: per split (or all as `pooled_as`), recogniser, speaker
    and condition, all kinds together, the figures `cells` gives a kind. Where such a voice loses
    notes, they say whether one speaker or all of them lose them."""
    out: list[dict[str, object]] = []
    for voice in voices:
        groups: dict[tuple[str, str, str, str], list[Outcome]] = defaultdict(list)
        for o in outcomes:
            if o.note.voice == voice.name:
                split = pooled_as or o.note.row.split
                groups[split, o.recognizer, voice.who(o.note.row), o.note.condition].append(o)
        if len({speaker for _, _, speaker, _ in groups}) < 2:
            continue
        out += [
            {
                "split": split,
                "recognizer": recognizer,
                "voice": voice.name,
                "speaker": speaker,
                "condition": condition,
                **_figures(rows),
            }
            for (split, recognizer, speaker, condition), rows in sorted(groups.items())
        ]
    return out


def _by_speaker(cells: list[dict[str, object]]) -> list[str]:
    """One voice's and recogniser's speaker cells as a table, a row per speaker."""
    first = cells[0]
    lines = [
        f"by speaker, {first['recognizer']}, {first['voice']} (all kinds): right % and word error rate %",
        f"{'speaker':<14} {'n':>3}  " + " ".join(f"{c:<13}" for c in CONDITIONS),
    ]
    for speaker in dict.fromkeys(str(c["speaker"]) for c in cells):
        mine = {c["condition"]: c for c in cells if c["speaker"] == speaker}
        shares = [
            f"{mine[c][RIGHT]:>5.0%} {mine[c]['word error rate']:>6.1%} " if c in mine else f"{'-':<13}"
            for c in CONDITIONS
        ]
        n = max(int(c["notes"]) for c in mine.values())  # type: ignore[call-overload]
        lines.append(f"{speaker:<14} {n:>3}  " + " ".join(shares))
    return lines


def _describe(c: Condition) -> str:
    kind = "pink noise" if c.noise == PINK else "game and crowd noise"
    parts = [f"{kind} at {c.snr_db:g} dB SNR"] if c.snr_db is not None else []
    parts += ["reverb"] * c.reverb + ["phone band"] * c.phone
    parts.append(f"Opus {c.bit_rate // 1000} kb/s")
    return ", ".join(parts)


def misses(outcomes: list[Outcome]) -> list[str]:
    return [
        f"  [{o.note.row.split} {o.note.row.kind} {o.note.condition} {o.recognizer} {o.note.voice}] "
        f"{o.note.row.text!r} "
        f"heard {o.heard!r} → {'+'.join(o.intents)} ({o.verdict})"
        for o in outcomes
        if o.verdict != RIGHT
    ]
