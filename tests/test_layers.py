"""The offline engine's layers import one way only, and the lab stays off the request path.

speech (bot/speech/) ← intent (bot/intent/) ← engines (bot/engines/) ← bot/app.py, with the lab
(bot/lab/) beside them: it may import anything, and nothing that serves a player imports it. An
arrow pointing the other way is how a tangle starts (the lab's evaluation once sat in the engine's
import graph), so these tests read every module's imports, including those inside functions.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot import paths
from bot.config import Settings

from .conftest import REPO
from .discord_harness import bot_process, logged_in, nova, while_it_runs
from .fakes.discord_server import serving

ROOT = REPO
PACKAGES = ("bot", "cogs")  # what ships; both serve players

# Lower numbers sit lower. A module may import its own layer and any below it.
LAYERS = {"bot.speech": 0, "bot.intent": 1, "bot.engines": 2, "bot.app": 3}
LAB = "bot.lab"
# The one request-path module allowed to reach the lab, and only from inside a function: `eval`.
LAB_ON_DEMAND = {"bot.cli"}


@dataclass(frozen=True)
class Arrow:
    source: str  # the importing module
    target: str  # the imported module (or package), resolved to its full dotted name
    line: int
    top_level: bool  # False for an import inside a function or method

    def __str__(self) -> str:
        return f"{self.source}:{self.line} → {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def arrows(path: Path, text: str | None = None) -> list[Arrow]:
    """Every import in a module as full dotted names: `from bot.x import y` as bot.x.y when y is
    a module and bot.x otherwise, relative imports resolved against the module's package."""
    source = module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text, str(path))
    top = {id(node) for node in tree.body}
    found: list[Arrow] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join([*base, *([node.module] if node.module else [])])
            else:
                stem = node.module or ""
            targets = [_submodule_or(stem, alias.name) for alias in node.names]
        else:
            continue
        found += [Arrow(source, t, node.lineno, id(node) in top) for t in targets]
    return found


def _submodule_or(stem: str, name: str) -> str:
    dotted = f"{stem}.{name}"
    as_path = ROOT.joinpath(*dotted.split("."))
    return dotted if as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists() else stem


def all_arrows() -> list[Arrow]:
    modules = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    return [arrow for path in modules for arrow in arrows(path)]


def layer(module: str) -> int | None:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def in_lab(module: str) -> bool:
    return module == LAB or module.startswith(LAB + ".")


def upward(found: list[Arrow]) -> list[Arrow]:
    """Arrows from a layer to a higher one, and from the request path into the lab."""
    bad = []
    for arrow in found:
        if in_lab(arrow.source):
            continue
        if in_lab(arrow.target):
            if not (arrow.source in LAB_ON_DEMAND and not arrow.top_level):
                bad.append(arrow)
            continue
        source, target = layer(arrow.source), layer(arrow.target)
        if source is not None and target is not None and target > source:
            bad.append(arrow)
    return bad


def test_the_walker_reads_the_arrows_it_must_judge() -> None:
    # Guards the walker itself: were it to miss imports, every layer would look clean.
    found = {(a.source, a.target) for a in all_arrows()}
    assert ("bot.engines.offline.engine", "bot.intent.router") in found  # from bot.intent import router
    assert ("bot.engines.offline.engine", "bot.sentences") in found  # a module by name
    assert ("bot.intent.router", "bot.intent.cues") in found  # names from a module
    assert ("bot.intent.router", "bot.speech.confusions") in found  # inside a function
    assert ("bot.app", "bot.engines.offline.engine") in found
    assert ("bot.lab.evaluation", "bot.engines.offline.hearing") in found


def test_the_walker_resolves_relative_imports() -> None:
    router = ROOT / "bot" / "intent" / "router.py"
    found = arrows(router, "from . import cues\nfrom .cues import CUES\nfrom ..engines import base\n")
    assert [a.target for a in found] == ["bot.intent.cues", "bot.intent.cues", "bot.engines.base"]
    assert [str(a) for a in upward(found)] == ["bot.intent.router:3 → bot.engines.base"]


def test_no_layer_imports_one_above_it_and_nothing_serving_players_imports_the_lab() -> None:
    assert [str(a) for a in upward(all_arrows())] == []


def test_no_layer_reaches_one_above_it_even_through_other_modules() -> None:
    # Direct arrows can be clean while speech → some helper → engines is not: follow them all.
    found = all_arrows()
    graph: dict[str, set[str]] = {}
    for arrow in found:
        graph.setdefault(arrow.source, set()).add(arrow.target)
    for rank_name, rank in LAYERS.items():
        starts = [m for m in graph if layer(m) == rank]
        seen: set[str] = set()
        todo = list(starts)
        while todo:
            module = todo.pop()
            for target in graph.get(module, ()):
                if target.startswith(("bot.", "cogs.")) and target not in seen:
                    seen.add(target)
                    todo.append(target)
        above = sorted(m for m in seen if (layer(m) or -1) > rank or in_lab(m))
        assert above == [], f"{rank_name} reaches {above}"


def test_the_design_doc_names_every_module_beneath_the_layers_that_speech_and_intent_use() -> None:
    # docs/design.md lists the modules the lowest layers stand on, the ones a change must keep
    # free of anything above them: one they use unnamed there (bot/db.py, for the speech models'
    # files written whole) is one nobody knows to keep so.
    design = " ".join((ROOT / "docs" / "design.md").read_text(encoding="utf-8").split())
    beneath = design.split("Beneath them all sit modules every layer may use:", 1)[1].split(". ", 1)[0]
    named = {
        name.removesuffix(".py").replace("/", ".") for name in re.findall(r"`(bot/[\w/]+\.py)`", beneath)
    }
    used = {
        arrow.target
        for arrow in all_arrows()
        if layer(arrow.source) in (LAYERS["bot.speech"], LAYERS["bot.intent"])
        and arrow.target.startswith("bot.")
        and layer(arrow.target) is None
    }
    assert used  # the walk found the arrows
    assert sorted(used - named) == []


# Put on PYTHONPATH, this runs first in every interpreter started with it, speech workers included,
# and writes down each lab module that process imports.
LAB_WATCH = """\
import os, sys

class _LabWatch:
    def find_spec(self, name, path=None, target=None):
        if name == "bot.lab" or name.startswith("bot.lab."):
            with open(os.environ["TEST_LAB_WATCH_LOG"], "a") as log:
                log.write(f"{os.getpid()} {name}\\n")
        return None

sys.meta_path.insert(0, _LabWatch())
with open(os.environ["TEST_LAB_WATCH_LOG"] + ".started", "a") as log:
    log.write(f"{os.getpid()}\\n")
"""


def lab_watch(folder: Path) -> tuple[dict[str, str], Path]:
    """Environment that makes every child process log the lab modules it imports, and the log."""
    (folder / "watch").mkdir()
    (folder / "watch" / "sitecustomize.py").write_text(LAB_WATCH, encoding="utf-8")
    log = folder / "lab-imports.log"
    path = os.pathsep.join(filter(None, [str(folder / "watch"), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "TEST_LAB_WATCH_LOG": str(log)}, log


def lab_imports(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def watched_processes(log: Path) -> set[str]:
    """The interpreters that started with the watch on."""
    started = log.with_name(log.name + ".started")
    return set(started.read_text(encoding="utf-8").split()) if started.exists() else set()


def test_the_lab_watch_sees_a_lab_import(tmp_path: Path) -> None:
    # Guards the two tests below: a watch that saw nothing would let them pass on anything.
    env, log = lab_watch(tmp_path)
    subprocess.run(
        [sys.executable, "-c", "import bot.lab.conditions"],
        cwd=REPO,
        env={**os.environ, **env},
        check=True,
        timeout=60,
    )
    assert {"bot.lab", "bot.lab.conditions"} <= {line.split()[1] for line in lab_imports(log)}


def test_ask_does_not_load_the_lab(settings: Settings, tmp_path: Path) -> None:
    env, log = lab_watch(tmp_path)
    note = paths.SAMPLES / "2-how-many-points.ogg"
    done = subprocess.run(
        [sys.executable, "-m", "bot", "ask", str(note), "--json", "--out", str(tmp_path / "out")],
        cwd=REPO,
        env={**os.environ, **env, "VOXDESK_STORAGE_DIR": str(settings.storage_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "get_player_stats" in done.stdout  # it really answered
    # Without --out the reply goes to a new folder in the system's temp directory, left for good.
    assert Path(json.loads(done.stdout)["reply_audio"]).parent == tmp_path / "out"
    assert lab_imports(log) == []


@pytest.mark.timeout(300)  # a real process starts and loads its speech models
async def test_run_does_not_load_the_lab_while_it_answers_a_note(settings: Settings, tmp_path: Path) -> None:
    # `python -m bot run` against the fake Discord, a speech worker beside it, one real note.
    env, log = lab_watch(tmp_path)
    note_bytes = (paths.SAMPLES / "2-how-many-points.ogg").read_bytes()
    async with serving() as fake:
        with bot_process(settings, fake, tmp_path / "bot.log", env) as process:
            await logged_in(fake, process, tmp_path / "bot.log")
            note = await fake.send_note(nova, note_bytes)
            answered = fake.wait_for(
                lambda _: any(r.is_voice_message for r in fake.replies_to(note["id"])), 90
            )
            await while_it_runs(answered, process, tmp_path / "bot.log", "answered the note", 90)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 60) == 0, (tmp_path / "bot.log").read_text()
    transcript = " ".join(r.content for r in fake.replies_to(note["id"]))
    assert "points" in transcript.lower(), transcript  # it really answered
    assert len(watched_processes(log)) >= 2  # the bot and its speech worker were both watched
    assert lab_imports(log) == []
