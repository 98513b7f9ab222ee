"""Catching reads beside the repository: a clone has nothing next to it (no ../shared, no
sibling checkout), so a test or module that reads there passes here and fails for every user.

An audit hook sees every file and directory the test process opens. Paths in the folder that
holds the repository, other than the repository itself, are recorded, except dot-files and
dot-folders there (a home directory's .netrc or .cache, read by HTTP and packaging libraries)
and, for a clone straight into it, the temporary directory.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

_EVENTS = {"open", "os.listdir", "os.scandir", "glob.glob"}


class BoundaryWatch:
    def __init__(self, repo: Path) -> None:
        self.repo = str(repo.resolve())
        self.beside = str(repo.resolve().parent)
        temp = os.path.realpath(tempfile.gettempdir())
        # pytest's own files live in the temporary directory: exempt it only where it lies beside
        # the repository (a clone straight into /tmp). A clone inside a temporary folder of its
        # own (as CI makes) keeps everything next to it watched.
        self.temp = temp if temp == self.beside or temp.startswith(self.beside + os.sep) else None
        self.reads: list[str] = []

    def outside(self, path: str) -> bool:
        path = os.path.abspath(path)
        if not path.startswith(self.beside + os.sep) or path == self.repo:
            return False
        if path.startswith(self.repo + os.sep):
            return False
        if self.temp and (path == self.temp or path.startswith(self.temp + os.sep)):
            return False
        first = path[len(self.beside) + 1 :].split(os.sep, 1)[0]
        return not first.startswith(".")

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in _EVENTS or not args:
            return
        target = args[0]
        if isinstance(target, (str, bytes, os.PathLike)):
            path = os.fsdecode(target)
            if self.outside(path):
                self.reads.append(f"{event} {path}")

    def take(self) -> list[str]:
        reads, self.reads = self.reads, []
        return reads


def install(repo: Path) -> BoundaryWatch:
    watch = BoundaryWatch(repo)
    sys.addaudithook(watch.hook)  # audit hooks cannot be removed: one per process
    return watch
