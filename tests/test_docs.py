"""What the README and docs/ tell a studio, held to the code: metric names and labels, the reasons
a note is counted under, the alert rules, each setting's default where the docs give it, and the
Python versions claimed."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import tomllib
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from bot import metrics
from bot.config import SECTIONS

from .conftest import REPO

WEB_MD = (REPO / "docs" / "web.md").read_text(encoding="utf-8")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _served() -> dict[str, tuple[str, ...]]:
    """Each metric /metrics serves, by the name Prometheus stores, with its label names."""
    served = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            served[name] = tuple(value._labelnames)
    return served


def _metrics_table() -> dict[str, tuple[str, str]]:
    """docs/web.md's metrics table: name → (its labels cell, what it says of them)."""
    table = WEB_MD[WEB_MD.index("| metric | labels |") :].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(voxdesk_\w+)` \|([^|]*)\|([^|]*)\|", table, re.M)
    return {name: (labels.strip(), said.strip()) for name, labels, said in rows}


def test_the_metrics_table_names_every_metric_served_with_its_labels_and_no_other() -> None:
    table, served = _metrics_table(), _served()
    assert set(table) == set(served)
    for name, (cell, _) in table.items():
        # A label is named in backticks at the start of the cell or after a comma.
        named = tuple(re.findall(r"(?:^|, )`(\w+)`", cell))
        assert named == served[name], name


def test_the_alert_rules_ask_for_metrics_that_are_served() -> None:
    rules = WEB_MD[WEB_MD.index("groups:") :].split("```", 1)[0]
    asked = set(re.findall(r"\bvoxdesk_\w+", rules))
    assert asked
    assert asked <= set(_served())


def _reasons_counted() -> set[tuple[str, str]]:
    """(outcome, reason) of every literal count in bot/ and cogs/: metrics.note(frontend, outcome,
    reason), the playground's _refused(message, status, reason), and the agent's reply kinds."""
    counted = set(metrics._REPLY_OUTCOMES.values())
    for path in [*(REPO / "bot").rglob("*.py"), *(REPO / "cogs").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
            if name == "note" and len(args) == 3 and None not in args[1:]:
                counted.add((args[1], args[2]))
            elif name == "_refused" and len(args) >= 3 and isinstance(args[2], str):
                counted.add(("refused", args[2]))
    return counted


def test_every_reason_a_note_is_counted_under_is_in_the_metrics_table() -> None:
    cell = _metrics_table()["voxdesk_notes_total"][1]
    said = {}
    for part in cell.split("; "):
        outcome, reasons = part.split(": ", 1)
        said[outcome.strip()] = set(re.findall(r"(?:^|, )(\w+)", re.sub(r"\([^)]*\)", "", reasons)))
    documented = {(outcome, reason) for outcome, reasons in said.items() for reason in reasons}
    counted = _reasons_counted()
    assert len(counted) > 10  # the scan found the calls
    assert counted - documented == set()
    assert documented - counted == set()


def _default(section: str, key: str) -> object:
    return getattr(SECTIONS[section](), key)


def _as_docs_write_it(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return json.dumps(value)
    return value if isinstance(value, str) else repr(value)


def test_the_settings_tables_in_docs_give_every_key_with_the_codes_default() -> None:
    for doc, section in (("discord.md", "discord"), ("web.md", "web")):
        text = (REPO / "docs" / doc).read_text(encoding="utf-8")
        fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
        listed = {}
        for keys, cell in re.findall(r"^\| ((?:`\w+`(?:, )?)+) \| ([^|]+) \|", text, re.M):
            names = re.findall(r"`(\w+)`", keys)
            if not set(names) <= fields:
                continue
            values = [""] * len(names) if cell.strip() == "empty" else re.findall(r"`([^`]*)`", cell)
            listed.update(zip(names, values, strict=True))
        assert set(listed) == fields, doc
        for key, said in listed.items():
            assert said == _as_docs_write_it(_default(section, key)), f"{doc}: {section}.{key}"


def test_a_number_in_brackets_after_a_setting_is_its_default() -> None:
    # "`openai.timeout_seconds` (90)", "`news.poll_seconds` (60 s; ...": the figure a studio reads.
    found = 0
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for section, key, figure in re.findall(r"`(\w+)\.(\w+)` \((\d[\d_,.]*)(?: s)?[;),]", text):
            if section in SECTIONS:
                found += 1
                said = float(figure.replace(",", "").replace("_", ""))
                assert said == _default(section, key), f"{doc.name}: {section}.{key} ({figure})"
    assert found > 5


def test_the_python_versions_the_readme_names_are_the_ones_the_package_declares() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert project["requires-python"] == f">={declared[0]}"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    claim = re.search(r"Python ((?:3\.\d+(?:, | or ))*3\.\d+)", readme)
    assert claim is not None
    assert re.split(r", | or ", claim.group(1)) == declared


def test_the_formats_ask_and_the_readme_name_are_those_players_are_told_of() -> None:
    from bot import sentences
    from bot.cli import build_parser

    told = set(re.findall(r"\b(ogg|mp3|m4a|wav|webm|flac|amr|aac|opus|3gp)\b", sentences.UNREADABLE))
    ask = build_parser()._subparsers._group_actions[0].choices["ask"]  # type: ignore[union-attr]
    file_help = next(a.help for a in ask._actions if a.dest == "file")
    assert set(file_help.split(": ", 1)[1].split(", ")) == told
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    audio = " ".join(readme[readme.index("## Audio") :].split("\n\n", 2)[1].split()).lower()
    assert all(re.search(rf"\b{name}\b", audio) for name in told), audio


def test_config_toml_comments_every_setting_and_names_each_choice_a_setting_takes() -> None:
    from bot.config import CHOICES

    section, commented = "", {}
    lines = (REPO / "config.toml").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if header := re.match(r"\[([\w.\"-]+)\]", line):
            section = header.group(1)
        elif key := re.match(r"(\w+) *= *[^#]*?(#.*)?$", line):
            if section.startswith("usage.prices."):
                continue  # the rows' block comment says what a price is
            # A comment on the line, and the lines of comment that carry it on.
            said = [key.group(2) or ""]
            for more in lines[number + 1 :]:
                if not re.match(r" +#", more):
                    break
                said.append(more)
            commented[(section, key.group(1))] = " ".join(said)
    assert [k for k, comment in commented.items() if not comment] == []
    for (section, key), choices in CHOICES.items():
        named = set(re.findall(r"[\w.-]+", commented[(section, key)]))
        assert set(choices) <= named, f"{section}.{key}: {set(choices) - named}"


def test_backup_help_says_it_removes_older_backups() -> None:
    # A studio pointing `backup` at a folder of its own backups loses the older ones: say so where
    # the command is looked up, with the setting that keeps them.
    from bot.cli import build_parser
    from bot.engines.openai import SAFETY_KEY_FILE

    backup = build_parser()._subparsers._group_actions[0].choices["backup"]  # type: ignore[union-attr]
    text = " ".join(backup.format_help().split())
    assert f"storage.keep_backups ({_default('storage', 'keep_backups')}) are removed" in text
    # What a backup holds besides the databases, named where the command is looked up, in the
    # design's line for backup.py and in the README: restored without the key, every player gets
    # a new safety_identifier.
    commands = build_parser()._subparsers._group_actions[0]._choices_actions  # type: ignore[union-attr]
    said = next(a.help for a in commands if a.dest == "backup")
    assert f"the grievance spool and {SAFETY_KEY_FILE} into a new folder" in said
    design = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").split())
    module = design.split("backup.py `voxdesk backup`:", 1)[1].split(" player_data.py ", 1)[0]
    assert f"the spool and {SAFETY_KEY_FILE}" in module, module
    assert f"the grievance spool and `{SAFETY_KEY_FILE}`" in _readme()
    # An upgrade raises schema versions an older voxdesk refuses: the backup is the way back.
    listed = " ".join(build_parser().format_help().split())
    assert "take one before an upgrade" in listed


def test_demo_help_says_which_notes_of_its_folder_it_answers() -> None:
    # "folder of voice notes": a folder of .mp3 or .m4a notes, which `ask` answers, was "no .ogg
    # samples" to `demo`, which reads its folder's *.ogg alone.
    from bot.cli import build_parser

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]  # type: ignore[union-attr]
    text = " ".join(demo.format_help().split())
    assert "--samples DIR folder of .ogg voice notes, each answered (default: the samples)" in text


def test_config_toml_says_the_ranges_the_loader_holds_settings_to() -> None:
    from bot.config import MAX_DEFER_SECONDS, MIN_RATE_LIMIT_SECONDS, POSITIVE

    text = (REPO / "config.toml").read_text(encoding="utf-8")
    header = " ".join(line.lstrip("# ") for line in text.split("\n\n", 1)[0].splitlines())
    # silence_threshold_db, the one number the loader takes below 0, is told as the exception to
    # the rule, not after a rule that admits none.
    assert "none may be negative but audio.silence_threshold_db, which is 0 or below (dBFS)." in header
    assert "none may be negative," not in header
    assert f"discord.defer_after_seconds is at most {MAX_DEFER_SECONDS:g}" in header
    assert f"discord.rate_limit_seconds at least {MIN_RATE_LIMIT_SECONDS:g}" in header
    assert "web.playground_turns (with web.enabled) below agent.max_concurrent_turns" in header
    # A setting the loader refuses at 0 must not say what 0 would do.
    section = ""
    for line in text.splitlines():
        if header_line := re.match(r"\[([\w.\"-]+)\]", line):
            section = header_line.group(1)
        elif key := re.match(r"(\w+) *=[^#]*#(.*)$", line):
            if (section, key.group(1)) in POSITIVE:
                assert not re.search(r"\b0(\.0)?\b *(:|=|keeps|switches|means|off)", key.group(2)), line


def test_verbose_help_warns_that_run_then_logs_players_words() -> None:
    # The README's promise that the log holds no player's words holds only without -v on run.
    from bot.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "DEBUG lines, which hold players' words" in text
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "(those are at DEBUG, which `voxdesk -v run` adds)" in readme


def test_the_readmes_first_screen_gives_the_two_commands_scripts_dev_and_ci_run() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in first.splitlines() if line.strip()]
    assert commands == ["bash scripts/dev demo", "bash scripts/dev test"]
    assert readme.index("```sh") < readme.index("\n## ")  # before the first section: the first screen
    dev = (REPO / "scripts" / "dev").read_text(encoding="utf-8")
    demo = dev.split("    demo)\n", 1)[1].split(";;", 1)[0]
    assert "-m bot init" in demo and "-m bot demo" in demo
    test = dev.split("    test)\n", 1)[1].split(";;", 1)[0]
    assert "pytest" in test and "ruff check" in test
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "\nbash scripts/dev test\n" in ci and "\nbash scripts/dev demo " in ci


def test_every_setting_the_docs_name_exists() -> None:
    import importlib

    fields = {s: {f.name for f in dataclasses.fields(cls)} for s, cls in SECTIONS.items()}
    # `web.serving` is a file in storage.dir; `audio.reply_from_pcm` and the like are bot/audio.py's.
    modules = {"audio": importlib.import_module("bot.audio")}
    unknown = []
    for doc in [*DOCS, REPO / "config.toml"]:
        text = doc.read_text(encoding="utf-8")
        for section, key in re.findall(r"`(\w+)\.(\w+)(?:`| =)", text):
            if section not in fields or key in fields[section] or (section, key) == ("web", "serving"):
                continue
            if section in modules and hasattr(modules[section], key):
                continue
            unknown.append(f"{doc.name}: {section}.{key}")
    assert unknown == []


def _stub_pythons(folder: Path, **versions: str) -> dict[str, str]:
    """Commands on an otherwise empty PATH, each answering scripts/pick-python's version question."""
    folder.mkdir()
    for name, version in versions.items():
        stub = folder / name.replace("_", ".")
        stub.write_text(f"#!/bin/sh\necho {version}\n")
        stub.chmod(0o755)
    return {"PATH": str(folder), "HOME": str(folder)}


def test_scripts_dev_picks_a_python_voxdesk_is_tested_on_and_says_what_it_does_with_a_newer(
    tmp_path: Path,
) -> None:
    # It took any python3 from 3.11 on, 3.14 too, while the README and the classifiers say 3.11 to
    # 3.13: a newer one was set up untested, with dependencies built from source, and nothing said.
    import subprocess

    classifiers = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "classifiers"
    ]
    tested = [c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".* :: 3\.\d+", c)]
    assert tested == ["3.11", "3.12", "3.13"]
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "(Python 3.11, 3.12 or 3.13: `scripts/dev` picks one of those, and a newer one only when" in readme
    dev = (REPO / "scripts" / "dev").read_text(encoding="utf-8")
    assert 'python="$(bash scripts/pick-python)"' in dev

    def pick(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", str(REPO / "scripts" / "pick-python")], env=env, capture_output=True, text=True
        )

    both = pick(_stub_pythons(tmp_path / "both", python3="3.14", python3_12="3.12"))
    assert (both.returncode, both.stdout) == (0, "python3.12\n"), both.stderr
    only = _stub_pythons(tmp_path / "newer", python3="3.14")
    refused = pick(only)
    assert refused.returncode == 1 and not refused.stdout
    assert "voxdesk needs Python 3.11, 3.12 or 3.13; found python3 is 3.14." in refused.stderr
    assert "set PYTHON to a newer one to try it untested" in refused.stderr
    asked = pick({**only, "PYTHON": "python3"})
    assert (asked.returncode, asked.stdout) == (0, "python3\n")
    assert "PYTHON=python3 is Python 3.14, newer than voxdesk is tested on" in asked.stderr
    older = pick({**_stub_pythons(tmp_path / "older", python3="3.10"), "PYTHON": "python3"})
    assert older.returncode == 1 and "voxdesk needs 3.11, 3.12 or 3.13" in older.stderr


def test_scripts_dev_passes_over_a_python_that_cannot_make_a_venv() -> None:
    # Debian and Ubuntu leave venv's ensurepip out of pythonX.Y until pythonX.Y-venv is installed,
    # and scripts/dev installs python3-venv, the default python3's: a python3.13 found first
    # (Ubuntu 24.04 with a 3.13 added) failed `-m venv` where python3 (3.12) would have worked.
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        stubs = Path(folder) / "stubs"
        env = _stub_pythons(stubs, python3="3.12", python3_13="3.13")
        bare = stubs / "python3.13"
        bare.write_text('#!/bin/sh\ncase "$*" in *ensurepip*) exit 1 ;; esac\necho 3.13\n')
        picked = subprocess.run(
            ["/bin/bash", str(REPO / "scripts" / "pick-python")], env=env, capture_output=True, text=True
        )
        assert (picked.returncode, picked.stdout) == (0, "python3\n"), picked.stderr
        (stubs / "python3").unlink()
        none = subprocess.run(
            ["/bin/bash", str(REPO / "scripts" / "pick-python")], env=env, capture_output=True, text=True
        )
    assert none.returncode == 1 and not none.stdout
    assert "python3.13 is 3.13 without venv (install python3.13-venv)" in none.stderr


def test_scripts_dev_sets_up_in_the_venv_it_made_when_no_python_can_make_one(tmp_path: Path) -> None:
    # It stopped at pick-python's refusal (python3.12-venv removed, say) though the .venv it made
    # before runs and has pip: `bash scripts/dev test` failed on a machine that needed no new venv.
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("dev", "pick-python"):
        shutil.copy(REPO / "scripts" / name, repo / "scripts" / name)
    stubs = tmp_path / "stubs"
    env = _stub_pythons(stubs)
    for tool in ("bash", "dirname", "rm"):
        (stubs / tool).symlink_to(shutil.which(tool))
    (stubs / "dpkg").symlink_to(shutil.which("true"))  # every system package is there
    (stubs / "python3").write_text('#!/bin/sh\ncase "$*" in *ensurepip*) exit 1 ;; esac\necho 3.12\n')
    (stubs / "python3").chmod(0o755)

    def dev() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", str(repo / "scripts" / "dev"), "setup"], env=env, capture_output=True, text=True
        )

    refused = dev()  # no .venv: nothing to set up in
    assert refused.returncode == 1 and "python3 is 3.12 without venv" in refused.stderr, refused.stderr
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    calls = tmp_path / "calls"
    (venv / "python").write_text(
        f'#!/bin/sh\necho "$*" >>{calls}\ncase "$*" in *version_info*) echo 3.12 ;; esac\n'
        '[ "$*" != "-m pip --version" ] || [ ! -e "$(dirname "$0")/no-pip" ]\n'
    )
    (venv / "python").chmod(0o755)
    (venv / "no-pip").touch()
    assert dev().returncode == 1  # a .venv without pip will not do
    (venv / "no-pip").unlink()
    done = dev()
    assert done.returncode == 0, done.stderr
    assert "using .venv as made, with Python 3.12: no Python here could make a new one" in done.stderr
    installs = [line for line in calls.read_text().splitlines() if line.startswith("-m pip install")]
    assert installs[:2] == ["-m pip install -q --upgrade pip", "-m pip install -q --prefer-binary -e ."]


def test_scripts_dev_does_not_set_up_in_a_venv_of_a_python_it_would_not_pick(tmp_path: Path) -> None:
    # With no Python here able to make a venv, it set up in any .venv that ran and had pip: one of
    # 3.10 went on to pip's own refusal of voxdesk, one of 3.14 was used untested though PYTHON
    # did not name it (README: "a newer one only when `PYTHON=` names it").
    import shutil
    import subprocess

    stubs = tmp_path / "stubs"
    env = _stub_pythons(stubs)
    for tool in ("bash", "dirname"):
        (stubs / tool).symlink_to(shutil.which(tool))
    (stubs / "dpkg").symlink_to(shutil.which("true"))
    (stubs / "python3").write_text('#!/bin/sh\ncase "$*" in *ensurepip*) exit 1 ;; esac\necho 3.12\n')
    (stubs / "python3").chmod(0o755)
    for made in ("3.10", "3.14"):
        repo = tmp_path / made
        (repo / "scripts").mkdir(parents=True)
        for name in ("dev", "pick-python"):
            shutil.copy(REPO / "scripts" / name, repo / "scripts" / name)
        venv = repo / ".venv" / "bin"
        venv.mkdir(parents=True)
        calls = tmp_path / f"calls-{made}"
        calls.touch()
        (venv / "python").write_text(
            f'#!/bin/sh\necho "$*" >>{calls}\ncase "$*" in *version_info*) echo {made} ;; esac\n'
        )
        (venv / "python").chmod(0o755)
        done = subprocess.run(
            ["/bin/bash", str(repo / "scripts" / "dev"), "setup"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 1, (made, done.stderr)
        assert "python3 is 3.12 without venv" in done.stderr and "using .venv" not in done.stderr, done.stderr
        assert [line for line in calls.read_text().splitlines() if "pip install" in line] == [], made


def _scripts_dev_with_a_venv_of_stubs(
    tmp_path: Path, python_also: str = ""
) -> tuple[Path, dict[str, str], Path]:
    """A repository of scripts/dev, pick-python and pyproject.toml on a machine of stubs (every
    system package there, a Python 3.12), whose .venv's python writes each of its calls to a
    file and says 3.12 when asked its version, then runs the shell lines `python_also`: the
    repository, its environment, and that file."""
    import shutil

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("scripts/dev", "scripts/pick-python", "pyproject.toml"):
        shutil.copy(REPO / name, repo / name)
    stubs = tmp_path / "stubs"
    env = _stub_pythons(stubs, python3="3.12")
    for tool in ("bash", "dirname", "sha256sum", "rm"):
        (stubs / tool).symlink_to(shutil.which(tool))
    (stubs / "dpkg").symlink_to(shutil.which("true"))  # every system package is there
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    calls = tmp_path / "calls"
    (venv / "python").write_text(
        f'#!/bin/sh\necho "$*" >>{calls}\ncase "$*" in *version_info*) echo 3.12 ;; esac\n' + python_also
    )
    (venv / "python").chmod(0o755)
    return repo, env, calls


def test_scripts_dev_installs_again_only_once_pyproject_toml_changed(tmp_path: Path) -> None:
    # It upgraded pip and installed everything on every run: a second `bash scripts/dev test`
    # needed the network as the first did.
    import shutil
    import subprocess

    repo, env, calls = _scripts_dev_with_a_venv_of_stubs(tmp_path)
    (repo / ".venv" / "bin" / "ruff").symlink_to(shutil.which("true"))  # `test` lints: here, nothing

    def installs(what: str) -> list[str]:
        calls.write_text("")
        done = subprocess.run(
            ["/bin/bash", str(repo / "scripts" / "dev"), what], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return [line for line in calls.read_text().splitlines() if line.startswith("-m pip install")]

    first = installs("setup")
    assert first[:2] == ["-m pip install -q --upgrade pip", "-m pip install -q --prefer-binary -e ."]
    assert installs("setup") == [] and installs("demo") == []
    assert "-m pip install -q --prefer-binary -e .[dev]" in installs("test")  # the dev tools: new
    assert installs("test") == [] and installs("demo") == []  # which serve the demo too
    with (repo / "pyproject.toml").open("a") as pyproject:
        pyproject.write("# a dependency changed\n")
    assert "-m pip install -q --prefer-binary -e .[dev]" in installs("test")
    assert installs("test") == []
    (repo / ".venv" / "voxdesk-installed").unlink()  # as the script's comment says, to install again
    assert "-m pip install -q --upgrade pip" in installs("demo")


def test_scripts_dev_installs_again_after_an_install_that_did_not_finish(tmp_path: Path) -> None:
    # A `test` install cut short (pip failed or was killed) left the `demo` install's stamp in
    # place: the next `demo` installed nothing over a half-upgraded .venv.
    import subprocess

    cut = tmp_path / "cut"
    repo, env, calls = _scripts_dev_with_a_venv_of_stubs(
        tmp_path, f'case "$*" in *".[dev]"*) [ ! -e {cut} ] ;; esac\n'
    )

    def dev(what: str) -> tuple[int, list[str]]:
        calls.write_text("")
        done = subprocess.run(
            ["/bin/bash", str(repo / "scripts" / "dev"), what], env=env, capture_output=True, text=True
        )
        return done.returncode, [
            line for line in calls.read_text().splitlines() if line.startswith("-m pip install")
        ]

    assert dev("setup")[0] == 0
    cut.touch()
    assert dev("test")[0] != 0
    cut.unlink()
    code, installs = dev("setup")
    assert code == 0 and "-m pip install -q --prefer-binary -e ." in installs


def test_the_readme_gives_the_cap_on_a_manual_passage_the_model_reads() -> None:
    # A studio's manual section past it is read only in part: the README said nothing of it.
    from bot.tools import MAX_PASSAGE_CHARS

    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    said = f"{MAX_PASSAGE_CHARS:,} characters or so"
    tool = readme.split("| `search_manuals(query)` |", 1)[1].split(" |", 1)[0]
    assert said in tool
    folder = readme.split("| `storage.manuals_dir` |", 1)[1].split(" |", 2)[1]  # past the default
    assert said in folder


def test_scripts_dev_installs_wheels_a_python_it_picks_has_before_newer_sources() -> None:
    # pocketsphinx 5.1.1 has wheels for cp311 and cp313, none for cp312: on Ubuntu 24.04's 3.12,
    # pip took its sdist and failed with no C compiler (`pip download --only-binary=:all:
    # --python-version 3.12` finds only 5.0.3 and 5.0.4).
    dev = (REPO / "scripts" / "dev").read_text(encoding="utf-8")
    installs = [line for line in dev.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    voxdesk = [line for line in installs if " -e " in line]
    assert len(voxdesk) == 2 and all("--prefer-binary" in line for line in voxdesk), voxdesk
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "`pip install --prefer-binary dist/voxdesk-*.whl`" in readme


def test_ci_installs_the_wheel_preferring_wheels_as_the_readme_says() -> None:
    # .ci/run installed the built wheel, and again at the floors, without --prefer-binary: on a
    # Python some newest dependency has no wheel for (pocketsphinx 5.1.1 on 3.12), CI built it from
    # source, or failed for want of a compiler, where the README's own command does not.
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    installs = [line for line in ci.splitlines() if "pip install" in line]
    resolving = [line for line in installs if "--no-deps" not in line]
    assert len(resolving) == 2, installs  # the wheel, and the wheel at its floors
    assert all("--prefer-binary" in line for line in resolving), resolving


def test_config_toml_and_the_discord_doc_give_the_floor_the_loader_holds_rate_limit_seconds_to() -> None:
    from bot.config import MIN_RATE_LIMIT_SECONDS

    said = f"{MIN_RATE_LIMIT_SECONDS:g} at least"
    line = next(
        line
        for line in (REPO / "config.toml").read_text(encoding="utf-8").splitlines()
        if line.startswith("rate_limit_seconds =")
    )
    assert said in line.split("#", 1)[1], line
    row = next(
        line
        for line in (REPO / "docs" / "discord.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `rate_limit_seconds` |")
    )
    assert f"({said}:" in row and "less is refused" in row, row


def _readme() -> str:
    return " ".join((REPO / "README.md").read_text(encoding="utf-8").split())


def test_the_readme_tells_a_studio_to_back_up_before_an_upgrade_an_older_voxdesk_refuses() -> None:
    # A raised schema version makes an upgrade one-way for the databases it opens: a studio must
    # hear, before upgrading, that going back means a backup and what it leaves out.
    from bot.tools.grievance_store import SCHEMA_VERSION

    readme = _readme()
    upgrading = readme.split("**Upgrading, and going back.**", 1)[1].split("## ", 1)[0]
    assert "take a `voxdesk backup` before installing a newer voxdesk" in upgrading
    assert f"`grievances.db` is at schema version {SCHEMA_VERSION} " in upgrading
    # The claims of /grievance file are in a file of their own: a rollback keeps grievances.db.
    assert "`grievances-recent.db`, which a voxdesk from before it ignores" in upgrading
    assert "needs no restore for `grievances.db`" in upgrading
    assert "exit status 4" in upgrading
    # Going back restores only what the older voxdesk refuses, never grievances.db needlessly.
    assert "only the databases the older voxdesk refuses" in upgrading
    assert "grievances filed since are not in the restored `grievances.db`" in upgrading


def test_web_md_gives_the_form_limits_the_code_keeps() -> None:
    from bot.web.security import FORM_MAX_BYTES, FORM_SECONDS

    said = " ".join(WEB_MD.split())  # its lines wrap anywhere
    assert f"one over {FORM_MAX_BYTES // 1024} KB" in said
    assert f"not all there within {FORM_SECONDS:g} seconds is 408" in said


def test_web_md_gives_the_time_a_request_head_and_an_answer_have() -> None:
    from bot.web import HEAD_SECONDS, SEND_SECONDS

    said = " ".join(WEB_MD.split())
    assert f"must be all there within {HEAD_SECONDS:g} seconds of its connection opening" in said
    assert f"An answer being sent is held to {SEND_SECONDS:g} seconds" in said


def test_the_readme_and_web_md_give_the_quota_pause_and_the_refile_round_the_code_keeps() -> None:
    from bot.engines.openai import LONGEST_PAUSE
    from bot.tools.grievance_store import REFILE_SECONDS

    readme = _readme()
    quota = readme.split("A 429 `insufficient_quota`", 1)[1].split(" - ", 1)[0]
    assert f"requests pause for {LONGEST_PAUSE / 60:g} minutes" in quota
    # The same bound caps any 429's pause, however long a wait the 429 names.
    limited = readme.split("- A 429 pauses requests for every turn", 1)[1].split(" - ", 1)[0]
    assert f"row), {LONGEST_PAUSE / 60:g} minutes at most," in limited
    assert f"by the running bot within {REFILE_SECONDS:g} seconds" in readme
    unfiled = _metrics_table()["voxdesk_grievances_unfiled"][1]
    assert f"within {REFILE_SECONDS:g} s" in unfiled
    # OpenAIEngine.ready is False after a spent quota as after a refused key: /healthz says so.
    healthz = next(line for line in WEB_MD.splitlines() if line.startswith("| `/healthz` |"))
    assert "insufficient_quota" in healthz


def test_the_figures_the_docs_give_for_retries_checks_and_catch_up_are_the_codes() -> None:
    # Each a constant a studio tunes its proxies, probes and alerts by, quoted in prose.
    from bot.agent import A_MINUTE_OR_SO, TRANSCRIPT_GRACE
    from bot.engines.openai import (
        AUDIO_REFUSED_PAUSE,
        KEEPALIVE_EXPIRY,
        PROBE_TIMEOUT,
        SHORT_WAIT,
        TRANSCRIBE_TIMEOUT,
    )
    from bot.health import LOW_DISK_BYTES
    from bot.web.desk import LOGIN_BUSY_SECONDS
    from bot.web.security import PASSWORD_QUEUE
    from cogs.catch_up import READS_AT_ONCE

    readme = _readme()
    assert f"An idle connection is let go after {KEEPALIVE_EXPIRY:g} s," in readme
    assert f"a 429 asking to wait a few seconds ({SHORT_WAIT:g} at most) is tried again" in readme
    assert f"is sent again after that wait, not sooner, if it is {SHORT_WAIT:g} s at most." in readme
    assert f"has {TRANSCRIBE_TIMEOUT:g} s of its own" in readme
    assert f"named a wait of more than {A_MINUTE_OR_SO / 60:g} minutes" in readme
    assert f"the answer waits for it at most {TRANSCRIPT_GRACE:g} s once ready" in readme
    assert f"transcripts for {AUDIO_REFUSED_PAUSE / 60:g} minutes, then an id is tried again" in readme
    assert f"sent once and waits {PROBE_TIMEOUT:g} s at most (`openai.timeout_seconds` if shorter)" in readme
    assert f"less than {LOW_DISK_BYTES // 2**20} MB free" in readme
    discord = " ".join((REPO / "docs" / "discord.md").read_text(encoding="utf-8").split())
    assert f"Up to {READS_AT_ONCE} places are read at once" in discord
    web = " ".join(WEB_MD.split())
    assert f"At most {PASSWORD_QUEUE} more wait for them" in web
    assert (
        f'try again in {LOGIN_BUSY_SECONDS} seconds." on the login page and'
        f" `Retry-After: {LOGIN_BUSY_SECONDS}`"
    ) in web


def test_the_design_doc_names_every_script_and_the_grievance_schema_version() -> None:
    from bot.tools.grievance_store import RECENT_SCHEMA_VERSION, SCHEMA_VERSION

    design = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").split())
    for script in sorted(p for p in (REPO / "scripts").iterdir() if p.is_file()):
        assert f"scripts/{script.name}" in design, script.name
    # CI's files too: what CI runs is what a change must keep passing.
    for ci in sorted(p for p in (REPO / ".ci").iterdir() if p.is_file()):
        assert f".ci/{ci.name}" in design, ci.name
    assert f"grievances.db (schema version {SCHEMA_VERSION}:" in design
    assert f"grievances-recent.db attached (schema version {RECENT_SCHEMA_VERSION}:" in design


def test_the_design_docs_layout_names_every_module_of_the_core_its_speech_and_the_cogs() -> None:
    # The layout is where a newcomer finds a module: a module added without a line there (the
    # flood limit's cogs/limits.py, the voices' speakable.py) is one they will not find.
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    layout = design[design.index("## Layout") : design.index("## Rules that keep it simple")]
    named = set(re.findall(r"[\w/]+\.py\b", layout))
    for folder in ("bot", "bot/speech", "cogs"):
        for module in sorted((REPO / folder).glob("*.py")):
            if module.name != "__init__.py":
                assert module.name in {Path(n).name for n in named}, f"{folder}/{module.name}"


def test_the_flood_limit_is_told_as_holding_in_any_window_of_its_length() -> None:
    # cogs/limits.py counts the notes of the last flood_seconds, not of a window opened by a first
    # note (where 5 a minute let 10 through in 2 s): the docs must not promise the latter.
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "`/grievance file` tickets) in any `discord.flood_seconds`" in readme
    discord = " ".join((REPO / "docs" / "discord.md").read_text(encoding="utf-8").split())
    assert "at most `flood_notes` notes in any `flood_seconds`" in discord
    config = (REPO / "config.toml").read_text(encoding="utf-8")
    assert re.search(r"^flood_seconds = [\d.]+ +# \.\.\. in any window of this many seconds$", config, re.M)


def test_config_toml_says_who_a_budget_is_and_what_is_retried_or_waited_out() -> None:
    # Comments a studio tunes by: the playground's budget is each visitor's address's
    # (bot/web/playground.py), a request dropped once sent is not retried (it may be billed), and
    # a create Jira did not answer, or a 504, waits past max_backoff_seconds, as do its 429s/503s.
    comments: dict[str, str] = {}
    section, key = "", ""
    for line in (REPO / "config.toml").read_text(encoding="utf-8").splitlines():
        if header := re.match(r"\[([\w.\"-]+)\]", line):
            section = header.group(1)
        elif found := re.match(r"(\w+) *=[^#]*#(.*)$", line):
            key = f"{section}.{found.group(1)}"
            comments[key] = found.group(2)
        elif more := re.match(r" +#(.*)$", line):
            comments[key] += more.group(1)
    said = {k: " ".join(v.split()) for k, v in comments.items()}
    for budget in ("usage.daily_audio_seconds", "usage.daily_tokens"):
        assert "in the web playground, per visitor's address" in said[budget]
    retried = said["openai.max_retries"]
    assert "not after a read timeout, a 502/504, or a connection dropped once the request went out" in retried
    # Gate.failed: a 408's or a 5xx's Retry-After (a proxy's maintenance page may name an hour)
    # pauses requests no longer than the breaker does.
    assert "the longest a 408's or a 5xx's Retry-After pauses requests" in said["openai.breaker_seconds"]
    assert "Retry-After" in said["jira.max_backoff_seconds"]
    assert "504" in said["jira.max_backoff_seconds"]
    assert "but a 504" in said["jira.settle_seconds"]
    assert "no Retry-After longer than this" in said["search.timeout_seconds"]
    # A search call's hard ceiling, its tries and their backoff together (azure_manuals._budget).
    from bot.config import SearchSettings
    from bot.tools.azure_manuals import _budget

    beyond_retries = _budget(SearchSettings(timeout_seconds=1.0, retries=0))
    assert f"waits at most (retries + {beyond_retries:g}) times this" in said["search.timeout_seconds"]


def test_the_discord_doc_says_which_attachments_are_taken_for_audio() -> None:
    # A player whose client uploads a .m4a as application/octet-stream is answered: the studio
    # reading the setting should know which files that covers.
    from cogs.voice import AUDIO_EXTENSIONS, UNTYPED

    row = next(
        line
        for line in (REPO / "docs" / "discord.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `any_audio_attachment` |")
    )
    named = set(re.findall(r"`([^`]+)`", row))
    extensions = next(word for word in named if word.startswith(".ogg "))
    assert set(extensions.split()) == AUDIO_EXTENSIONS, row
    assert UNTYPED <= named, row
    # VoiceNotes.say_voiceless tells a voice message that came without its audio (or, with this
    # setting off, without its waveform) in a DM and to a mention alike, not in a DM alone.
    discord = " ".join((REPO / "docs" / "discord.md").read_text(encoding="utf-8").split())
    assert "a player in a DM, or who mentioned the bot where the intent shows the attachments," in discord
    assert "`any_audio_attachment` off, one whose attachment lacks a voice message's waveform" in discord


def test_the_discord_doc_gives_how_long_a_repeat_check_waits_for_a_busy_database() -> None:
    from bot.tools.grievance_store import CLAIM_WAIT_SECONDS

    row = next(
        line
        for line in (REPO / "docs" / "discord.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `/grievance file category description` |")
    )
    assert f"with the database busy past {CLAIM_WAIT_SECONDS:g} s the filing goes ahead" in row


def test_every_note_count_names_its_reason_literally_so_the_table_check_sees_it() -> None:
    # _reasons_counted reads literals: a reason passed in a variable (a refusal a new path adds)
    # would be counted on /metrics and missed by the table's check. Only the playground's
    # _refused, which forwards its callers' literals (read above), may pass a variable.
    funnels = {("bot/web/playground.py", "_refused")}
    unread = []
    for path in [*(REPO / "bot").rglob("*.py"), *(REPO / "cogs").rglob("*.py")]:
        where = path.relative_to(REPO).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if not (node.func.attr == "note" and getattr(node.func.value, "id", "") == "metrics"):
                    continue
                literal = len(node.args) == 3 and all(isinstance(a, ast.Constant) for a in node.args[1:])
                if not literal and (where, function.name) not in funnels:
                    unread.append(f"{where}:{node.lineno} in {function.name}")
    assert not unread, unread


def test_the_readmes_exit_statuses_give_every_way_run_ends_on_discord() -> None:
    # `run` exits DISCORD_REFUSED when the gateway's first connection fails as when logging in does
    # (a restart mends both), and 2 when Discord closes the gateway on a token reset while it runs
    # (as at login: a restart does not): a unit's RestartPreventExitStatus is set by this list.
    from cogs.runner import DISCORD_REFUSED, INTENT_WITHDRAWN

    statuses = _exit_statuses()
    assert statuses[INTENT_WITHDRAWN].startswith("`run` stopped because the application lost"), statuses
    refused = statuses[DISCORD_REFUSED]
    assert refused.startswith("Discord refused `sync`"), refused
    assert "by `run` logging in or making its first gateway connection" in refused, refused
    configuration = statuses[2]
    assert configuration.startswith("a configuration error"), configuration
    token = "Discord refusing `DISCORD_TOKEN` too, at login or once it is reset while `run` runs"
    assert token in configuration, configuration


def _exit_statuses() -> dict[int, str]:
    """The README's table of exit statuses: status → when."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| status | when |") :].split("\n\n", 1)[0]
    return {int(n): said.strip() for n, said in re.findall(r"^\| (\d+) \|(.*)\|$", table, re.M)}


def test_the_limits_the_docs_give_for_answers_status_history_and_the_gateway_are_the_codes() -> None:
    # Each a bound a studio meets in the log or on the desk, quoted in prose.
    from bot.agent import MAX_SPOKEN_CHARS
    from bot.engines.openai import AUDIO_KEPT_AT_MOST, MAX_ANSWER_CHARS
    from bot.tools.grievance_store import STATUS_CHANGES_KEPT, STATUS_HISTORY
    from cogs.bot import LIMITED_INTENT_SERVERS
    from cogs.replies import MESSAGE_LIMIT
    from cogs.runner import GATEWAY_REFUSALS, GATEWAY_REFUSED

    readme = _readme()
    design = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").split())
    discord = " ".join((REPO / "docs" / "discord.md").read_text(encoding="utf-8").split())
    web = " ".join(WEB_MD.split())
    assert f"the engine sent no audio it can use ({MAX_SPOKEN_CHARS:,}; a longer one goes as text)" in design
    assert MAX_ANSWER_CHARS == 5 * MESSAGE_LIMIT
    assert f"({MAX_ANSWER_CHARS:,}: five Discord messages' worth)" in design
    assert f"words run past {MAX_ANSWER_CHARS:,} characters (five Discord messages' worth;" in readme
    assert AUDIO_KEPT_AT_MOST == 24 * 3600
    assert "Nor is an id kept whose expiry is more than a day ahead" in readme
    assert f"bounded to its newest {STATUS_CHANGES_KEPT} changes" in design
    assert f"its newest {STATUS_CHANGES_KEPT} changes, in the grievance database's `meta` table" in web
    assert f"(a row `{STATUS_HISTORY}<id>`, so its schema stays version 1)" in web
    # The exit status a unit's RestartPreventExitStatus names, for every refusal that ends `run` so.
    first, last = min(GATEWAY_REFUSALS), max(GATEWAY_REFUSALS)
    assert set(GATEWAY_REFUSALS) == set(range(first, last + 1))
    assert _exit_statuses()[GATEWAY_REFUSED].startswith("`run` stopped because Discord's gateway refused")
    assert f"({first} to {last}: among them a bot in 2,500 servers or more" in readme
    assert "2,500 servers or more" in GATEWAY_REFUSALS[4011]
    assert f"RestartPreventExitStatus=2 4 {GATEWAY_REFUSED}" in readme
    assert f"it exits 2, 4 or {GATEWAY_REFUSED} for, which a restart does not mend" in readme
    assert f"with 4011: `run` says so in one line and exits with status {GATEWAY_REFUSED}," in discord
    assert f"so too in {LIMITED_INTENT_SERVERS} servers or more, where the toggle no longer" in discord
    assert f"or {LIMITED_INTENT_SERVERS} servers reached without Discord's approval of it" in readme


def test_scripts_dev_refuses_an_unknown_word_before_it_sets_anything_up(tmp_path: Path) -> None:
    # `bash scripts/dev tests` (a plural, a typo) installed system packages and every pip package,
    # and only then said its usage.
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("dev", "pick-python"):
        shutil.copy(REPO / "scripts" / name, repo / "scripts" / name)
    stubs = tmp_path / "stubs"
    env = _stub_pythons(stubs, python3="3.12")
    for tool in ("bash", "dirname"):
        (stubs / tool).symlink_to(shutil.which(tool))
    calls = tmp_path / "calls"
    calls.touch()
    (stubs / "dpkg").write_text(f'#!/bin/sh\necho "dpkg $*" >>{calls}\n')
    (stubs / "dpkg").chmod(0o755)
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(
        f'#!/bin/sh\necho "python $*" >>{calls}\ncase "$*" in *version_info*) echo 3.12 ;; esac\n'
    )
    (venv / "python").chmod(0o755)
    done = subprocess.run(
        ["/bin/bash", str(repo / "scripts" / "dev"), "tests"], env=env, capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (2, "usage: bash scripts/dev [demo|test|setup]\n")
    assert calls.read_text() == ""


def test_the_design_doc_names_every_error_of_the_engine_protocol() -> None:
    # The agent and the front ends tell a player and the log apart by these: an error added to
    # bot/engines/base.py (NoteTooLarge, a note over the token limit on its own) without a word in
    # the layout is one a newcomer reading it does not know to handle.
    import inspect

    from bot.engines import base

    errors = {
        name
        for name, value in vars(base).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == base.__name__
    }
    design = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").split())
    line = design.split("base.py (the protocol,", 1)[1].split(" openai.py (", 1)[0]
    assert len(errors) > 3  # the scan found them
    assert sorted(name for name in errors if not re.search(rf"\b{name}\b", line)) == []


def test_the_design_doc_names_every_kind_of_metric_served() -> None:
    # bot/metrics.py's line in the layout says what it holds: a gauge (the outbox, the notes
    # waiting) is a kind a studio alerts on differently from a counter.
    kinds = {value._type for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)}
    design = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").split())
    line = design.split("bot/metrics.py ", 1)[1].split(" tests/ ", 1)[0]
    assert kinds >= {"counter", "histogram"}
    assert sorted(kind for kind in kinds if f"{kind}s" not in line) == []


def test_the_readmes_settings_tables_give_each_key_the_codes_default() -> None:
    # A studio reads its defaults from the README's tables by service: held to the code as
    # docs/discord.md's and docs/web.md's are, and every setting in one of the three.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tables = readme[readme.index("### Settings by service") : readme.index("### Start-up checks")]
    listed = {}
    for keys, cell in re.findall(r"^\| ((?:`\w+\.\w+`(?:, )?)+) \| ([^|]+) \|", tables, re.M):
        names = [tuple(name.split(".")) for name in re.findall(r"`(\w+\.\w+)`", keys)]
        values = [""] * len(names) if cell.startswith("empty") else re.findall(r"`([^`]*)`", cell)
        listed.update(zip(names, values[: len(names)], strict=True))
    wrong = {
        f"{section}.{key}": said
        for (section, key), said in listed.items()
        if said != _as_docs_write_it(_default(section, key))
    }
    assert wrong == {}
    elsewhere = {
        (section, f.name)
        for section in ("discord", "web")
        for f in dataclasses.fields(SECTIONS[section])
        if f"`{f.name}`" in (REPO / "docs" / f"{section}.md").read_text(encoding="utf-8")
    }
    # The fake Discord's own, and the price tables the README gives in prose below its table.
    untabled = {("discord", "api_base"), ("discord", "gateway_url"), ("discord", "guild_ready_timeout")}
    untabled |= {("usage", "prices"), ("usage", "price_as")}
    every = {(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert every - set(listed) - elsewhere - untabled == set()
    assert set(listed) - every == set()
