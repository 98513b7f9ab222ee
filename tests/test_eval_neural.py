"""The neural-voice evaluation: its listening conditions do what they claim, its scoring rules, and
its blind splits stay out of a plain run. Synthetic signals and a couple of nvdev rows only; no
test reads a blind row's words (failures show counts)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from bot import audio
from bot.config import AudioSettings
from bot.intent import router
from bot.lab import conditions, neural_eval
from bot.lab.neural_eval import ASKED, ONE_OF_TWO, RIGHT, WRONG, verdict

RATE = 22050
STATS, MANUALS, STATUS = router.STATS, router.MANUALS, router.STATUS


def _band_energy(samples: np.ndarray, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def _pcm(note: bytes) -> bytes:
    return audio.decode(note, AudioSettings()).segment.raw_data


def _db(ratio: float) -> float:
    return 10 * np.log10(ratio)


# ---- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [15.0, 5.0])
def test_noise_is_mixed_at_the_ratio_asked_measured_on_the_speech_present(snr_db: float) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(RATE * 4) / RATE
    # Half the note is silence: measured over the whole note, the ratio would be 3 dB off.
    talking = (t % 1.0) < 0.5
    speech = 8000 * np.sin(2 * np.pi * 220 * t) * talking
    noise = rng.standard_normal(len(t)) * 50 + 400 * np.sin(2 * np.pi * 3 * t)
    mixed = conditions.mix_at_snr(speech, noise, snr_db)
    speech_power = np.mean(speech[talking] ** 2)
    noise_power = np.mean((mixed - speech) ** 2)
    assert abs(_db(speech_power / noise_power) - snr_db) < 1.0


def test_pink_noise_has_the_same_power_in_every_octave() -> None:
    pink = conditions.pink_noise(RATE * 4, np.random.default_rng(3))
    octaves = [_band_energy(pink, RATE, low, 2 * low) for low in (125, 250, 500, 1000, 2000)]
    assert max(octaves) / min(octaves) < 1.3  # white noise would double in each octave


def test_the_pink_condition_is_the_issues_hard_yardstick() -> None:
    pink, hard = conditions.CONDITIONS["pink"], conditions.CONDITIONS["hard"]
    assert pink.noise == conditions.PINK and hard.noise == conditions.CROWD
    assert (pink.snr_db, pink.phone, pink.bit_rate) == (hard.snr_db, hard.phone, hard.bit_rate)


def test_a_pink_condition_mixes_pink_noise_not_the_crowd_bed() -> None:
    t = np.arange(RATE * 2) / RATE
    speech = (8000 * np.sin(2 * np.pi * 200 * t)).astype(np.int16)
    bed = 20000 * np.sin(2 * np.pi * 1000 * np.arange(RATE * 10) / RATE)  # a tone no pink noise has
    wide = conditions.Condition("pink-wide", 5.0, reverb=False, phone=False, bit_rate=64_000)
    heard = {}
    for noise in (conditions.PINK, conditions.CROWD):
        note = conditions.apply(speech, RATE, dataclasses.replace(wide, noise=noise), 5, bed)
        decoded = audio.decode(note, AudioSettings())
        rate = decoded.segment.frame_rate
        pcm = np.frombuffer(decoded.segment.raw_data, np.int16).astype(np.float64)
        room_tone = pcm[int(0.05 * rate) : int(0.3 * rate)]  # before the speech: only noise
        heard[noise] = (room_tone, rate)
    room_tone, rate = heard[conditions.PINK]
    octaves = [_band_energy(room_tone, rate, low, 2 * low) for low in (250, 500, 1000, 2000)]
    assert max(octaves) / min(octaves) < 2.5, octaves
    crowd_tone, rate = heard[conditions.CROWD]
    assert _band_energy(crowd_tone, rate, 900, 1100) > 0.8 * _band_energy(crowd_tone, rate, 100, 8000)


def test_the_phone_band_keeps_300_to_3400_hz_and_removes_what_is_outside() -> None:
    rng = np.random.default_rng(2)
    white = rng.standard_normal(RATE * 2) * 3000
    phone = conditions.phone_band(white, RATE)
    assert len(phone) == len(white)
    inside = _band_energy(phone, RATE, 400, 3300) / _band_energy(white, RATE, 400, 3300)
    above = _band_energy(phone, RATE, 3650, RATE / 2) / _band_energy(white, RATE, 3650, RATE / 2)
    below = _band_energy(phone, RATE, 20, 240) / _band_energy(white, RATE, 20, 240)
    assert inside > 0.7
    assert _db(above) < -30 and _db(below) < -30


def test_reverb_lengthens_the_tail_and_decays_at_its_rt60() -> None:
    rng = np.random.default_rng(3)
    burst = np.concatenate([rng.standard_normal(RATE // 20) * 5000, np.zeros(RATE // 2)])
    wet = conditions.reverberate(burst, RATE, rt60=0.5, seed=7)
    after = slice(RATE // 20 + RATE // 10, RATE // 20 + 3 * RATE // 10)  # 100-300 ms after the burst
    assert len(wet) > len(burst)
    assert np.mean(burst[after] ** 2) == 0
    assert _db(np.mean(wet[after] ** 2) / np.mean(burst[: RATE // 20] ** 2)) > -40
    # 60 dB in 0.5 s: 18 dB between windows 0.15 s apart.
    response = conditions.room_impulse(RATE, 0.5, seed=7)
    early = np.mean(response[int(0.05 * RATE) : int(0.10 * RATE)] ** 2)
    late = np.mean(response[int(0.20 * RATE) : int(0.25 * RATE)] ** 2)
    assert abs(_db(early / late) - 18) < 4


def test_the_opus_bitrate_setting_changes_the_note() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(RATE * 3) / RATE
    signal = 6000 * np.sin(2 * np.pi * 300 * t) + rng.standard_normal(len(t)) * 2000
    low = conditions.encode(signal, RATE, 12_000)
    high = conditions.encode(signal, RATE, 32_000)
    assert len(low) < 0.6 * len(high)
    for note in (low, high):
        assert abs(audio.decode(note, AudioSettings()).seconds - 3) < 0.1


def test_the_crowd_talks_about_nothing_the_router_listens_for() -> None:
    from bot.intent.cues import CATEGORY_CUES, CUES
    from bot.speech.domain_corpus import normalise

    crowd = " " + " ".join(normalise(t) for t in conditions.CROWD_TEXTS) + " "
    cues = {cue for table in (*CUES.values(), *CATEGORY_CUES.values()) for cue in table}
    assert [cue for cue in cues if f" {cue} " in crowd] == []


# ---- scoring ----------------------------------------------------------------------------------


def _said(*names: str) -> list[router.Intent]:
    return [router.Intent(name) for name in names]


def test_a_two_request_note_is_right_only_with_both_tools() -> None:
    both = (STATS, STATUS)
    assert verdict(both, _said(STATUS, STATS)) == RIGHT  # in either order
    assert verdict(both, _said(STATS)) == ONE_OF_TWO
    assert verdict(both, _said(STATS, router.UNSURE)) == ONE_OF_TWO
    assert verdict(both, _said(STATS, MANUALS)) == WRONG  # one right, one not asked for
    assert verdict(both, _said(MANUALS)) == WRONG
    assert verdict(both, _said(router.UNSURE)) == ASKED
    assert verdict(both, _said(router.GREETING)) == WRONG


def test_a_one_request_note_is_right_with_exactly_its_tool() -> None:
    assert verdict((STATS,), _said(STATS)) == RIGHT
    assert verdict((STATS,), _said(STATS, MANUALS)) == WRONG  # an extra tool is a wrong answer
    assert verdict((STATS,), _said(MANUALS)) == WRONG
    assert verdict((STATS,), _said(router.UNSURE)) == ASKED
    assert verdict((STATS,), _said(router.THANKS)) == WRONG


def test_small_talk_is_right_with_no_tool_and_no_doubt() -> None:
    assert verdict(("smalltalk",), _said(router.GREETING)) == RIGHT
    assert verdict(("smalltalk",), _said(router.UNSURE)) == ASKED
    assert verdict(("smalltalk",), _said(STATS)) == WRONG


def test_the_report_counts_one_of_two_apart_from_right_and_wrong() -> None:
    row = neural_eval.Row("nvdev", "double", (STATS, STATUS), "a", 0)
    outcomes = [
        neural_eval.Outcome(neural_eval.Note(row, "v", "clean"), "r", "", (), v, 1, 4, 0.1, 1.0)
        for v in (RIGHT, ONE_OF_TWO, ONE_OF_TWO, WRONG)
    ]
    [cell] = [c for c in neural_eval.cells(outcomes) if c["kind"] == "double"]
    assert (cell[RIGHT], cell[ONE_OF_TWO], cell[WRONG], cell[ASKED]) == (0.25, 0.5, 0.25, 0.0)
    assert cell["word error rate"] == 0.25


def test_each_voice_is_reported_apart() -> None:
    row = neural_eval.Row("nvdev", "short", (STATS,), "a", 0)
    outcomes = [
        neural_eval.Outcome(neural_eval.Note(row, voice, "clean"), "whisper", "", (), v, 0, 4, 0.1, 1.0)
        for voice, v in (("joe", RIGHT), ("joe", RIGHT), ("kokoro", WRONG), ("kokoro", ASKED))
    ]
    short = {c["voice"]: c for c in neural_eval.cells(outcomes) if c["kind"] == "short"}
    assert (short["joe"][RIGHT], short["kokoro"][RIGHT], short["kokoro"][WRONG]) == (1.0, 0.0, 0.5)
    table = neural_eval.report(outcomes, "nvdev", [_Voice("joe"), _Voice("kokoro")])
    assert "whisper, joe" in table and "whisper, kokoro" in table
    [line] = [x for x in table.splitlines() if x.startswith("short   clean")]
    assert line.split()[3:5] == ["100%", "-"] and line.split("|")[1].split()[:4] == ["0%", "-", "50%", "50%"]


@dataclasses.dataclass(frozen=True)
class _Voice:
    """A voice as the report sees it: one speaker unless told who says each row."""

    name: str
    speakers: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()

    def speaker(self, extra):  # type: ignore[no-untyped-def]
        raise AssertionError("the report says nothing")

    def who(self, row: neural_eval.Row) -> str:
        return self.speakers[row.index % len(self.speakers)] if self.speakers else self.name


def test_a_voice_of_several_speakers_is_reported_per_speaker() -> None:
    rows = [neural_eval.Row("nvdev", "short", (STATS,), "a", i) for i in range(4)]
    kokoro = _Voice("kokoro", ("amy", "bob"))  # amy says rows 0 and 2, bob rows 1 and 3

    def outcome(row: neural_eval.Row, voice: str, condition: str, v: str, errors: int):  # type: ignore[no-untyped-def]
        note = neural_eval.Note(row, voice, condition)
        return neural_eval.Outcome(note, "whisper", "", (), v, errors, 4, 0.1, 1.0)

    outcomes = [outcome(r, "joe", "clean", RIGHT, 0) for r in rows] + [
        outcome(rows[0], "kokoro", "clean", RIGHT, 0),
        outcome(rows[2], "kokoro", "clean", RIGHT, 1),
        outcome(rows[1], "kokoro", "clean", WRONG, 4),
        outcome(rows[3], "kokoro", "clean", ASKED, 2),
        outcome(rows[0], "kokoro", "pink", WRONG, 4),
        outcome(rows[1], "kokoro", "pink", RIGHT, 0),
    ]
    table = neural_eval.report(outcomes, "nvdev", [_Voice("joe"), kokoro]).splitlines()
    assert not any("by speaker, whisper, joe" in x for x in table)
    start = table.index("by speaker, whisper, kokoro (all kinds): right % and word error rate %")
    amy, bob = (x.split() for x in table[start + 2 : start + 4])
    # name, notes, then right and WER per condition: clean, noisy, hard, pink
    assert amy == ["amy", "2", "100%", "12.5%", "-", "-", "0%", "100.0%"]
    assert bob == ["bob", "2", "0%", "75.0%", "-", "-", "100%", "0.0%"]
    cells = neural_eval.speaker_cells(outcomes, [_Voice("joe"), kokoro])
    assert {c["voice"] for c in cells} == {"kokoro"}  # one speaker: nothing to tell apart
    amy_clean = next(c for c in cells if (c["speaker"], c["condition"]) == ("amy", "clean"))
    assert (amy_clean["notes"], amy_clean[RIGHT], amy_clean["word error rate"]) == (2, 1.0, 0.125)


def test_several_splits_are_also_reported_pooled_as_one() -> None:
    # Two writers' splits: each has its own row 0 and row 1, so rows are told apart by split too.
    rows = [neural_eval.Row(split, "short", (STATS,), "a", i) for split in ("nva", "nvb") for i in range(2)]
    kokoro = _Voice("kokoro", ("amy", "bob"))
    verdicts = {("nva", 0): RIGHT, ("nva", 1): RIGHT, ("nvb", 0): RIGHT, ("nvb", 1): WRONG}
    outcomes = [
        neural_eval.Outcome(
            neural_eval.Note(r, "kokoro", "clean"),
            "whisper",
            "",
            (),
            verdicts[r.split, r.index],
            0,
            4,
            0.1,
            1.0,
        )
        for r in rows
    ]
    pooled = neural_eval.report(outcomes, "nva+nvb", [kokoro], ("nva", "nvb")).splitlines()
    assert pooled[0].startswith("split: nva+nvb (4 questions: 4 short;")
    [line] = [x for x in pooled if x.startswith("short   clean")]
    assert line.split()[2:4] == ["4", "75%"]
    start = pooled.index("by speaker, whisper, kokoro (all kinds): right % and word error rate %")
    amy, bob = (x.split()[:3] for x in pooled[start + 2 : start + 4])
    assert (amy, bob) == (["amy", "2", "100%"], ["bob", "2", "50%"])  # bob: row 1 of each split
    [alone] = [
        x for x in neural_eval.report(outcomes, "nvb", [kokoro]).splitlines() if x.startswith("short   clean")
    ]
    assert alone.split()[2:4] == ["2", "50%"]
    [cell] = [c for c in neural_eval.cells(outcomes, "nva+nvb") if c["kind"] == "short"]
    assert (cell["split"], cell["notes"], cell[RIGHT]) == ("nva+nvb", 4, 0.75)
    by_speaker = neural_eval.speaker_cells(outcomes, [kokoro], "nva+nvb")
    assert {(c["split"], c["speaker"], c["notes"]) for c in by_speaker} == {
        ("nva+nvb", "amy", 2),
        ("nva+nvb", "bob", 2),
    }
    # Only blind splits are pooled, and only several of them.
    assert neural_eval.poolable(["nvdev", "nv22", "nv23"]) == ("nv22", "nv23")
    assert neural_eval.poolable(["nvdev", "nv22"]) == ()


# ---- splits -----------------------------------------------------------------------------------


def test_the_blind_neural_splits_run_only_when_named() -> None:
    from bot.lab.evaluation import DEFAULT_SPLITS, EVERY_SPLIT

    blind = {"nv1", "nv2", "nv3", "nv4", "nv5", "nv6", "nv7", "nv8", "nv9", "nv10", "nv11", "nv12"}
    blind |= {"nv13", "nv14", "nv15", "nv16", "nv17", "nv18", "nv19", "nv20", "nv21"}
    blind |= {"nv22", "nv23", "nv24", "nv25", "nv26", "nv27", "nv28", "nv29", "nv30"}
    assert blind == set(neural_eval.RESERVED)
    assert not set(neural_eval.RESERVED) & set(DEFAULT_SPLITS)
    assert "nvdev" in DEFAULT_SPLITS and set(neural_eval.SPLITS) <= set(EVERY_SPLIT)
    rows = neural_eval.load_rows(DEFAULT_SPLITS)
    assert sum(r.split in neural_eval.RESERVED for r in rows) == 0
    assert {r.split for r in rows} == {"nvdev"}


def test_each_row_has_its_own_delivery_within_range() -> None:
    rows = neural_eval.load_rows(["nvdev"])
    deliveries = [r.delivery() for r in rows]
    assert len(set(deliveries)) == len(rows)
    for (low, high), values in zip(
        (neural_eval.LENGTH_SCALE, neural_eval.NOISE_SCALE, neural_eval.NOISE_W),
        zip(*deliveries, strict=True),
        strict=True,
    ):
        assert low <= min(values) and max(values) <= high


def test_a_voices_notes_name_only_the_releases_that_make_them() -> None:
    line = neural_eval.environment([_Voice("made-up", packages=("pytest",))])
    assert "pytest " in line and "onnxruntime " in line and "av " in line
    # The Piper voices and Kokoro phonemise with piper-tts's eSpeak; a voice that does not is not
    # made again when piper-tts or the noise bed's eSpeak is upgraded.
    assert "piper-tts" not in line and "espeakng-loader" not in line
    assert all("piper-tts" in neural_eval.PiperEval(m).packages for m in neural_eval.neural.KNOWN.values())
    assert "piper-tts" in neural_eval.KokoroEval().packages


def test_another_espeak_release_makes_another_noise_bed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = conditions.metadata.version
    before = conditions.bed_key()
    monkeypatch.setattr(
        conditions.metadata, "version", lambda name: "0.0.1" if name == "espeakng-loader" else real(name)
    )
    conditions.bed_key.cache_clear()
    try:
        assert conditions.bed_key() != before
    finally:
        conditions.bed_key.cache_clear()


@pytest.mark.timeout(120)  # every installed voice is loaded in processes of its own, twice
def test_recordings_are_made_once_the_same_way_and_in_every_condition(tmp_path) -> None:  # type: ignore[no-untyped-def]
    voices = neural_eval.installed_voices([])
    if not voices:
        pytest.skip("no neural voice installed")
    rows = neural_eval.load_rows(["nvdev"])[:2]
    # A voice installed later costs its own notes only: the others' are kept.
    before = neural_eval.recordings(rows, voices[:-1], tmp_path, [])
    kept = {note: path.stat().st_mtime_ns for note, path in before.items()}
    made = neural_eval.recordings(rows, voices, tmp_path, [])
    assert {note: made[note].stat().st_mtime_ns for note in before} == kept
    assert len(made) == 2 * len(voices) * len(conditions.CONDITIONS)
    first = {note: path.read_bytes() for note, path in made.items()}
    heard = {note: _pcm(data) for note, data in first.items()}
    stamps = {note: path.stat().st_mtime_ns for note, path in made.items()}
    assert neural_eval.recordings(rows, voices, tmp_path, []) == made
    neural_eval.recordings(rows[:1], voices, tmp_path, [])  # a part of what was made
    assert {note: path.stat().st_mtime_ns for note, path in made.items()} == stamps  # not made again
    # One voice's releases change: its notes are made again, the other voices' kept.
    manifest_path = tmp_path / "neural" / "nvdev" / "split.json"
    manifest = json.loads(manifest_path.read_text())
    upgraded = voices[-1].name  # the quickest to make again where Hibari is installed
    manifest["voices"][upgraded]["made with"] = "neural notes made with an older release"
    manifest_path.write_text(json.dumps(manifest))
    neural_eval.recordings(rows, voices, tmp_path, [])
    remade = {note.voice for note, path in made.items() if path.stat().st_mtime_ns != stamps[note]}
    assert remade == {upgraded}
    stamps = {note: path.stat().st_mtime_ns for note, path in made.items()}
    for path in made.values():
        path.unlink()
    (tmp_path / "neural" / "nvdev" / "split.json").unlink()
    again = neural_eval.recordings(rows, voices, tmp_path, [])
    # The audio, not the bytes: Ogg gives each stream a random serial number.
    assert {note: _pcm(path.read_bytes()) for note, path in again.items()} == heard
    sizes = {c: sum(len(b) for n, b in first.items() if n.condition == c) for c in conditions.CONDITIONS}
    assert sizes["hard"] < sizes["noisy"] < sizes["clean"]  # 12, 16 and 32 kb/s


async def test_the_eval_says_the_speech_models_are_missing_before_voicing(settings, monkeypatch) -> None:
    from bot.engines.offline.engine import speech_dir
    from bot.lab import evaluation

    (speech_dir(settings) / "domain.arpa").unlink()

    def voicing(*args, **kwargs):
        raise AssertionError("notes voiced before the speech models were checked")

    monkeypatch.setattr(neural_eval, "recordings", voicing)
    monkeypatch.setattr(evaluation, "evaluate", voicing)
    with pytest.raises(FileNotFoundError, match="python -m bot init"):
        await evaluation.run_eval(settings, ("nvdev",), recognizers=("pocketsphinx",))
