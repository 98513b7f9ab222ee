"""What a studio installing the wheel or building from the sdist gets, checked on file lists and
metadata rather than by building (building needs setuptools from PyPI)."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _tracked(*folders: str) -> list[str]:
    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout's file list (an unpacked sdist has none)")
    out = subprocess.run(
        ["git", "ls-files", "--", *folders], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_every_package_the_code_imports_is_a_declared_dependency() -> None:
    # A package that only arrives as another dependency's dependency leaves with it; the meaning
    # model's tokenizers came through faster-whisper alone.
    declared = _names(PROJECT["dependencies"])
    extras = {name: _names(requirements) for name, requirements in PROJECT["optional-dependencies"].items()}
    # The extras' packages are imported only where the extra is installed (neural voice, lab).
    optional = set().union(*(extras[name] for name in ("neural", "multilingual", "eval-voices")))
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for source in (REPO / "bot").rglob("*.py"), (REPO / "cogs").rglob("*.py"):
        for path in source:
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top in sys.stdlib_module_names or top in ("bot", "cogs"):
                        continue
                    dists = {canonicalize_name(d) for d in providers.get(top, [top])}
                    if not dists & (declared | optional):
                        undeclared.append(f"{path.relative_to(REPO)}: {module} ({', '.join(sorted(dists))})")
    assert undeclared == []


def test_the_test_tools_are_not_runtime_dependencies() -> None:
    runtime = _names(PROJECT["dependencies"])
    assert not runtime & {"pytest", "pytest-asyncio", "pytest-timeout", "pytest-xdist", "playwright", "build"}


def _floors() -> dict[str, Version]:
    pins = {}
    for line in (REPO / ".ci" / "floors.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_ci_installs_the_oldest_release_pyproject_allows_of_every_dependency() -> None:
    # CI answers the sample notes with these pins installed; a floor raised in one place and not
    # the other would test a version nobody declares.
    pins = _floors()
    wrong = []
    for line in PROJECT["dependencies"]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"python_version": "3.11"}):
            continue
        name = canonicalize_name(requirement.name)
        floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
        pin = pins.pop(name, None)
        if pin is None or len(floors) != 1 or pin not in requirement.specifier:
            wrong.append(f"{line}: pinned {pin}")
        elif pin.release[: len(floors[0].release)] != floors[0].release:
            wrong.append(f"{line}: pinned {pin}, not the floor's release")
    assert wrong == []
    assert pins == {}, "pinned but not a dependency"


def _package_data_patterns() -> list[str]:
    setuptools = PYPROJECT["tool"]["setuptools"]
    return [
        f"{package}/{pattern}"
        for package, patterns in setuptools["package-data"].items()
        for pattern in patterns
    ]


def _matches(path: str, pattern: str) -> bool:
    # setuptools' globs: "**" crosses folders, "*" stays within one.
    regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(regex, path) is not None


def test_every_file_the_package_reads_at_run_time_goes_into_the_wheel() -> None:
    # bot/paths.py and the web front end (templates, static files) read these from the installed
    # package; a file left out of package-data is there in a checkout and missing from a wheel.
    patterns = _package_data_patterns()
    assert _matches("bot/data/sql/sqlite/seed.sql", "bot/data/**/*")
    assert not _matches("bot/web/static/img/logo.png", "bot/web/static/*")
    left_out = [
        path
        for path in _tracked("bot", "cogs")
        if not path.endswith(".py") and not any(_matches(path, p) for p in patterns)
    ]
    assert left_out == []
    packages = {p.rpartition("/")[0] for p in _tracked("bot", "cogs") if p.endswith(".py")}
    assert all((REPO / package / "__init__.py").is_file() for package in packages)


def _sdist_files() -> set[str]:
    """The files setuptools puts in the sdist beside its defaults, from MANIFEST.in, by setuptools'
    own reading of it."""
    from setuptools.command.egg_info import FileList

    files = FileList()
    files.allfiles = _tracked(".")
    manifest = REPO / "MANIFEST.in"
    lines = manifest.read_text(encoding="utf-8").splitlines() if manifest.is_file() else []
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            files.process_template_line(line)
    return set(files.files)


def test_the_sdist_carries_the_tests_with_what_they_need_and_the_sample_config() -> None:
    # setuptools alone ships tests/test*.py without conftest.py, the fakes or the samples: a
    # packager running the tests from an unpacked sdist gets import errors.
    files = _sdist_files()
    missing = sorted(p for p in [*_tracked("tests"), "config.toml", ".ci/floors.txt"] if p not in files)
    assert missing == []
    assert not {p for p in files if fnmatch.fnmatch(p, "*.pyc") or p.startswith((".venv/", "var/"))}


def test_the_sdist_carries_every_file_the_readme_links_to() -> None:
    # The README is the sdist's (and PyPI's) description: a doc or picture it links is read there.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {p.split("#")[0] for p in re.findall(r"\]\(([^)#:]+(?:#[^)]*)?)\)", readme)}
    assert "docs/web-playground.png" in linked
    assert sorted(linked - _sdist_files()) == []
