"""The bench scripts the docs cite run as cited: each imports and reads its arguments, every flag a
doc gives one is its own, and the catch-up's baseline (an older commit's code) still runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from .conftest import REPO

OLD_CATCH_UP = "5f31c49"  # bench/catch_up.py's default --old

BENCH = REPO / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py"))
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# `python bench/x.py --a 1 --b`, perhaps after an environment variable, perhaps across lines.
CITED = re.compile(r"`(?:\w+=\S+\s+)?python\s+bench/([\w.]+\.py)([^`]*)`")

# Each script as `python bench/x.py --help` runs it (its folder first on sys.path), all in one
# process: the imports they share are paid once. A script that does not read --help runs in full.
# The flags are those its parser reads, not its help's text, which quotes commands of its own.
HELP = """
import argparse, contextlib, io, json, runpy, sys
out, bench, names = sys.argv[1], sys.argv[2], sys.argv[3:]
path0 = list(sys.path)
results = {}
flags = []
parse = argparse.ArgumentParser.parse_known_args

def recorded(self, *args, **kwargs):
    flags.extend(self._option_string_actions)
    return parse(self, *args, **kwargs)

argparse.ArgumentParser.parse_known_args = recorded
for name in names:
    sys.argv, sys.path[:] = [f"{bench}/{name}", "--help"], [bench, *path0[1:]]
    printed = io.StringIO()
    flags.clear()
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(f"{bench}/{name}", run_name="__main__")
        said = "ran without reading --help"
    except SystemExit as exc:
        said = printed.getvalue()
        said = said if exc.code in (0, None) and said.startswith("usage:") else f"exit {exc.code}"
    except BaseException as exc:
        said = f"{type(exc).__name__}: {exc}"
    results[name] = {"said": said, "flags": sorted(set(flags))}
with open(out, "w") as f:
    json.dump(results, f)
"""


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "helps.json"
    subprocess.run(
        [sys.executable, "-c", HELP, str(out), str(BENCH), *SCRIPTS],
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.read_text())


def citations() -> list[tuple[str, str, list[str]]]:
    """(where, script, flags) of each bench command the README and docs/ give."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in CITED.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append((f"{doc.name}:{line}", m.group(1), re.findall(r"--[\w-]+", m.group(2))))
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_bench_script_imports_and_reads_its_arguments(
    helps: dict[str, dict[str, Any]], script: str
) -> None:
    assert helps[script]["said"].startswith("usage:"), helps[script]["said"]


def test_every_flag_the_docs_give_a_bench_script_is_its_own(helps: dict[str, dict[str, Any]]) -> None:
    cited = citations()
    assert len(cited) > 20  # the pattern still finds the docs' commands
    wrong = [
        (where, script, flag)
        for where, script, flags in cited
        for flag in flags
        if flag not in helps.get(script, {}).get("flags", ())
    ]
    assert not wrong, wrong


def test_the_catch_up_bench_runs_against_its_old_commit() -> None:
    # The old commit's catch-up reads the ledger as it was; a read dropped since fails every
    # attempt of it, which the bench says at once.
    held = subprocess.run(
        ["git", "cat-file", "-e", f"{OLD_CATCH_UP}^{{commit}}"], cwd=REPO, capture_output=True, check=False
    )
    if held.returncode != 0:
        pytest.skip(f"needs commit {OLD_CATCH_UP} (a shallow clone or an unpacked sdist has none)")
    done = subprocess.run(
        [sys.executable, "bench/catch_up.py", "--dms", "2", "--latency", "0.05"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [r[1] for r in rows if r and r[0] == "0.05s"] == ["old", "new"], done.stdout
