"""Cutting the game manuals into passages a voice assistant can read out.

Both the local FTS5 index and the Azure AI Search index are built from these chunks, so a
passage has the same stable key everywhere and a re-index updates rather than duplicates.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


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
    # Latin-1 one key, and the second's passages replace the first's in Azure Search.
    stem = os.fsencode(path.stem).decode("utf-8", "backslashreplace")
    title = name.stem.replace("-", " ").capitalize()
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in path.read_text(encoding="utf-8").splitlines():
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


def chunk_manuals(folder: Path | str) -> list[Chunk]:
    return [c for path in sorted(Path(folder).glob("*.md")) for c in chunk_manual(path)]


def _clean(text: str) -> str:
    text = re.sub(r"[*_`>]", "", text)  # markdown emphasis reads badly aloud
    text = re.sub(r"^\s*[-+]\s+|\s[-+]\s+(?=\w)", " ", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip()
