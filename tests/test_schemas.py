"""Each store's schema is the one recorded for its SCHEMA_VERSION in tests/schemas.json.

A store refuses a file a newer voxdesk wrote only if the version moves with the schema: a column
added without a bump would let an older voxdesk run on a file it does not know. When a schema
changes on purpose, bump its version and record it:

    VOXDESK_RECORD_SCHEMAS=1 .venv/bin/python -m pytest -q tests/test_schemas.py

which records only stores whose version is new to the file, never a changed schema under a
version already recorded, but for a plain index added: that needs no new version (an older voxdesk
opens the file and keeps the index up to date), only its recording."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

from bot.app import StoragePaths
from bot.schemas import versions

from .test_db import every_store

RECORDED = Path(__file__).with_name("schemas.json")
RECORD = "VOXDESK_RECORD_SCHEMAS"


def normalised(sql: str) -> str:
    """DDL as SQLite keeps it, with layout and comments out: reindenting a CREATE is no change."""
    sql = re.sub(r"--[^\n]*", "", sql)
    sql = re.sub(r"\s+", " ", sql).strip()
    sql = re.sub(r" ?\( ?", "(", sql)
    sql = re.sub(r" \)", ")", sql)
    return re.sub(r" ?, ?", ", ", sql)


def schema_of(path: Path) -> list[str]:
    """What sqlite_master says of the database at `path`: one line per table, index, view or
    trigger, sorted. SQLite's own objects (autoindexes, sqlite_sequence) and FTS5's shadow tables
    follow from those and from the SQLite library's version, not from voxdesk."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    virtual = [name for _, name, sql in rows if sql.upper().startswith("CREATE VIRTUAL TABLE")]
    return sorted(
        f"{kind} {name}: {normalised(sql)}"
        for kind, name, sql in rows
        if not name.startswith("sqlite_") and not any(name.startswith(f"{v}_") for v in virtual)
    )


# An index of plain columns, by name: one every connection to the file can keep up to date. Not a
# UNIQUE one, which would refuse writes an older voxdesk counts on; nor one of an expression or a
# WHERE, which may call a function the store registers (folded), or one newer than an older
# SQLite's: every write to the table fails where it is unknown (an older voxdesk, the sqlite3
# shell).
_COLUMN = r"\w+(?: COLLATE (?:BINARY|NOCASE|RTRIM))?(?: ASC| DESC)?"
PLAIN_INDEX = re.compile(rf"index (\w+): CREATE INDEX \1 ON \w+\({_COLUMN}(?:, {_COLUMN})*\)", re.IGNORECASE)


def an_index_only(added: list[str], gone: list[str]) -> bool:
    """Whether a schema grew by indexes alone that an older voxdesk of its version keeps."""
    return not gone and all(PLAIN_INDEX.fullmatch(line) for line in added)


async def made_schemas(tmp_path: Path) -> dict[str, tuple[int, list[str]]]:
    """Each store's schema as this voxdesk makes it in a new storage folder, with its version."""
    storage = StoragePaths(tmp_path)
    known = {getattr(storage, name).name: version for name, version in versions().items()}
    made = {}
    for name, open_store in every_store().items():
        await (await open_store(tmp_path / name)).aclose()
        made[name] = (known[name], schema_of(tmp_path / name))
    return made


async def test_every_schema_change_comes_with_a_new_schema_version(tmp_path: Path) -> None:
    storage = StoragePaths(tmp_path)
    assert (
        set(every_store())
        == {p.name for p in storage.databases}
        == {getattr(storage, name).name for name in versions()}
    )
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    made = await made_schemas(tmp_path)
    wrong = []
    for name, (version, schema) in sorted(made.items()):
        entry = recorded.get(name)
        if entry is None or entry["version"] != version:
            if os.environ.get(RECORD):
                recorded[name] = {"version": version, "schema": schema}
                continue
            wrong.append(
                f"{name} is at schema version {version}, not recorded: record its schema ({RECORD}=1)"
            )
        elif entry["schema"] != schema:
            added = [line for line in schema if line not in entry["schema"]]
            gone = [line for line in entry["schema"] if line not in schema]
            if an_index_only(added, gone):
                # An index only: an older voxdesk of this version opens the file and keeps the
                # index up to date with every write. A bump would have it refuse the file.
                if os.environ.get(RECORD):
                    recorded[name] = {"version": version, "schema": schema}
                    continue
                wrong.append(f"{name} has a new index, needing no new version: record ({RECORD}=1): {added}")
                continue
            wrong.append(
                f"schema of {name} changed: bump its SCHEMA_VERSION and record the new schema"
                f" ({RECORD}=1); new: {added}, gone: {gone}"
            )
    if os.environ.get(RECORD) and not wrong:
        RECORDED.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert not wrong, "\n".join(wrong)


def test_only_an_index_every_writer_keeps_goes_without_a_new_version() -> None:
    # Writes to a table with an index on folded(description) fail, "unknown function: folded()",
    # on any connection that has not registered it; a UNIQUE one refuses rows an older voxdesk
    # writes.
    plain = "index by_age: CREATE INDEX by_age ON notes(updated_at, state COLLATE NOCASE DESC)"
    assert an_index_only([plain], [])
    assert not an_index_only([plain], ["table notes: CREATE TABLE notes(a)"])
    for line in (
        "index by_key: CREATE UNIQUE INDEX by_key ON grievances(spool_id)",
        "index by_words: CREATE INDEX by_words ON grievances(folded(description))",
        "index by_open: CREATE INDEX by_open ON grievances(status) WHERE lower(status) = 'open'",
        "index by_value: CREATE INDEX by_value ON cursors(value ->> '$.at')",
        "index by_age: CREATE INDEX by_age ON notes(updated_at COLLATE folded)",
        "table notes2: CREATE TABLE notes2(a)",
    ):
        assert not an_index_only([line], []), line


def test_layout_and_comments_are_no_schema_change() -> None:
    assert (
        normalised("CREATE TABLE t (\n    a TEXT, -- why\n    b INTEGER\n)")
        == "CREATE TABLE t(a TEXT, b INTEGER)"
    )
    assert normalised("CREATE TABLE t (a TEXT)") != normalised("CREATE TABLE t (a TEXT, b TEXT)")


def test_the_schema_versions_are_known_below_the_commands_in_one_table() -> None:
    # `init` and the bot's start refused a newer folder through `check`'s module, and `player`
    # kept a copy of six of the versions of its own.
    import subprocess
    import sys

    from bot import player_data

    from .conftest import REPO

    loaded = "import sys, bot.seed, bot.player_data; print('bot.health' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", loaded], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
    assert not hasattr(player_data, "SCHEMA_VERSIONS")


# Schema versions code that never shipped stamped files with, then took back: grievances.db held
# lately_filed at 2 from 01b5940 to 425d8ca, and such a file is refused as a newer voxdesk's. A
# later change to that schema takes the version after, never one of these: at 2, a file of that
# code would pass for one at the new schema, and its migration would never run on it.
TAKEN_BACK = {"grievances": {2}}


def test_no_store_takes_a_schema_version_that_was_taken_back() -> None:
    for name, taken_back in TAKEN_BACK.items():
        assert versions()[name] not in taken_back, (
            f"{name}'s schema version {versions()[name]} was stamped by code taken back:"
            f" take {max(taken_back) + 1}"
        )
