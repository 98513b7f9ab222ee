"""The repository is the whole project: nothing in it reads beside the clone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.repo_boundary import BoundaryWatch

from .conftest import BOUNDARY, REPO

SOURCES = [
    p
    for folder in ("bot", "cogs", "tests", "bench", "scripts")
    for p in (REPO / folder).rglob("*.py")
    if ".venv" not in p.parts and p.name != "test_repository.py"  # its own examples of what it forbids
]


def _hops(node: ast.AST) -> int | None:
    """How many folders `node` climbs from `Path(__file__)`, or None if it does not start there."""
    hops = 0
    while True:
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            hops, node = hops + 1, node.value
        elif isinstance(node, ast.Attribute) and node.attr in ("resolve", "absolute"):
            node = node.value
        elif isinstance(node, ast.Call) and not node.args and isinstance(node.func, ast.Attribute):
            node = node.func  # .resolve()
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents"
            and isinstance(node.slice, ast.Constant)
        ):
            hops, node = hops + int(node.slice.value) + 1, node.value.value
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Path" and len(node.args) == 1:
            arg = node.args[0]
            return hops if isinstance(arg, ast.Name) and arg.id == "__file__" else None
        else:
            return None


def test_no_module_climbs_out_of_the_repository_from_its_own_file() -> None:
    escapes = []
    for source in SOURCES:
        depth = len(source.relative_to(REPO).parts) - 1  # folders between the repo and the file
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            hops = _hops(node)
            # The outermost expression of a chain counts; its inner parts climb less.
            if hops is not None and hops > depth + 1:
                escapes.append(f"{source.relative_to(REPO)}:{node.lineno} climbs {hops} from its file")
    assert escapes == []


def test_no_source_names_a_path_beside_the_repository() -> None:
    named = []
    for source in SOURCES:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text.startswith("../") or "/../" in text or "shared/specs" in text:
                    named.append(f"{source.relative_to(REPO)}:{node.lineno} {text[:60]!r}")
    assert named == []


def test_the_static_check_catches_a_climb_out(tmp_path: Path) -> None:
    tree = ast.parse('SPECS = Path(__file__).resolve().parents[3] / "shared"')
    assert max(h for n in ast.walk(tree) if (h := _hops(n)) is not None) == 4
    tree = ast.parse("REPO = Path(__file__).resolve().parent.parent")
    assert max(h for n in ast.walk(tree) if (h := _hops(n)) is not None) == 2


def test_reads_beside_the_repository_are_caught(tmp_path: Path) -> None:
    # A watch for a repository inside tmp_path, so the sibling it sees is a real folder here.
    repo = tmp_path / "checkout" / "voxdesk"
    sibling = tmp_path / "checkout" / "shared"
    repo.mkdir(parents=True)
    sibling.mkdir()
    (sibling / "spec.json").write_text("{}")
    watch = BoundaryWatch(repo)  # a clone inside a temporary folder, as CI makes
    for event, path in [
        ("open", sibling / "spec.json"),
        ("os.scandir", sibling),
        ("open", repo / "config.toml"),
        ("open", repo.parent / ".netrc"),
        ("open", Path("/usr/lib/os-release")),
    ]:
        watch.hook(event, (str(path), "r", 0))
    assert watch.take() == [f"open {sibling / 'spec.json'}", f"os.scandir {sibling}"]


@pytest.mark.skipif(BOUNDARY.temp is not None, reason="cloned straight into the temporary directory")
def test_the_watch_is_on_for_this_run() -> None:
    beside = REPO.parent / "a-sibling-that-does-not-exist"
    with pytest.raises(FileNotFoundError):
        open(beside)
    assert BOUNDARY.take() == [f"open {beside}"]
