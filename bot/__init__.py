"""voxdesk: answers gamers' voice notes with voice notes. The core; it never imports discord."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.metadata import Distribution
    from pathlib import Path

# PEP 440's "version unknown": code run from a checkout that is not what was installed. A number
# written here would be a release's only until the next, and then a lie.
UNKNOWN_VERSION = "0+unknown"


def __getattr__(name: str) -> str:
    # Worked out when first asked, not at import: bot.entry imports this package before a Ctrl-C
    # can end a command quietly, and most commands never ask.
    if name == "__version__":
        return installed_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def installed_version() -> str:
    """The version pip installed this code as, from the voxdesk distribution's metadata; or
    UNKNOWN_VERSION when that metadata describes other files: none installed (a checkout run with
    `python -m bot`), or another copy's (a checkout run in a venv that installed a release, or
    another checkout), whose version would name a release that did not write the backup."""
    import importlib.metadata
    from pathlib import Path

    package = Path(__file__).resolve().parent
    try:
        dist = importlib.metadata.distribution("voxdesk")
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN_VERSION
    return dist.version if _is_this_code(dist, package) else UNKNOWN_VERSION


def _is_this_code(dist: Distribution, package: Path) -> bool:
    """Whether the distribution `dist` installed the package folder `package`: a wheel's files
    list this very __init__.py, and an editable install names the checkout holding it."""
    import json
    from pathlib import Path
    from urllib.parse import unquote, urlsplit

    for file in dist.files or ():
        if file.parts == ("bot", "__init__.py"):
            return Path(dist.locate_file(file)).resolve() == package / "__init__.py"
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    url = urlsplit(direct.get("url", "")) if isinstance(direct, dict) else None
    if url is None or url.scheme != "file" or not direct.get("dir_info", {}).get("editable"):
        return False
    return (Path(unquote(url.path)).resolve() / "bot") == package
