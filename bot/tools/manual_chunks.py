"""Cutting the game manuals into passages a voice assistant can read out.

Both the local FTS5 index and the Azure AI Search index are built from these chunks, so a
passage has the same stable key everywhere and a re-index updates rather than duplicates.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bot.config import ConfigError


@dataclass(frozen=True)
class Chunk:
    key: str  # "<file stem>-<n>": stable while the manual keeps its sections in order
    title: str  # "<manual title>: <section heading>"
    text: str
    source: str  # the manual's file name


_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def chunk_manual(path: Path) -> list[Chunk]:
    """One chunk per `##` section; text before the first section joins the first chunk."""
    # A file name that is not UTF-8 (a zip made on Windows, unpacked here) comes with a lone
    # surrogate for each such byte, which neither SQLite nor a JSON body can take.
    name = Path(os.fsencode(path.name).decode("utf-8", "replace"))
    # The key tells such bytes apart ("caf\xe9"), where U+FFFD would make "café" and "cafè" in
    # Latin-1 one key, and the second's passages replace the first's in Azure Search; a name's
    # own backslash is doubled, so one spelling out "\xe9" is no such byte.
    stem = os.fsencode(path.stem).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    title = name.stem.replace("-", " ").capitalize()
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in _read_manual(path).splitlines():
        match = _HEADING.match(line.strip())
        if match and len(match.group(1)) == 1:
            title = match.group(2).strip()
        elif match:
            sections.append((match.group(2).strip(), []))
        else:
            sections[-1][1].append(line)
    intro = sections[0][1]
    if len(sections) > 1 and "".join(intro).strip():
        heading, lines = sections[1]
        sections = [(heading, [*intro, *lines]), *sections[2:]]
    chunks = []
    for heading, lines in sections:
        text = _clean(" ".join(lines))
        if not text:
            continue
        n = len(chunks) + 1
        chunks.append(
            Chunk(
                key=f"{stem}-{n}",
                title=f"{title}: {heading}" if heading else title,
                text=text,
                source=name.name,
            )
        )
    return chunks


def _read_manual(path: Path) -> str:
    try:
        # Notepad's UTF-8 begins with a byte-order mark: else the "# Title" line is read as text.
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        # Notepad's "ANSI" or PowerShell 5's UTF-16: `init` stopped on a traceback naming no file.
        raise ConfigError(f"storage.manuals_dir: {path} is not UTF-8 text: save it as UTF-8") from None


def chunk_manuals(folder: Path | str) -> list[Chunk]:
    return [c for path in sorted(Path(folder).glob("*.md")) for c in chunk_manual(path)]


def _clean(text: str) -> str:
    text = re.sub(r"[*_`>]", "", text)  # markdown emphasis reads badly aloud
    text = re.sub(r"^\s*[-+]\s+|\s[-+]\s+(?=\w)", " ", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip()
