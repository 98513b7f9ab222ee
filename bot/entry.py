"""`voxdesk` and `python -m bot` start here: a module that imports nothing of voxdesk's at its
top, so a Ctrl-C while bot.cli loads (numpy, the speech code: the command's first second) ends
as one later does."""

from __future__ import annotations

import sys

INTERRUPTED = 130  # 128 + SIGINT, the status bot.cli gives a command Ctrl-C stopped


def _printing_never_fails() -> None:
    # What an ASCII journal or PYTHONIOENCODING cannot encode (a folder's "ä", a note's name that
    # is no UTF-8) is spelled as an escape: a print that fails ends the command after its work is
    # done, a turn run and a complaint perhaps filed. In --json the escape reads back as the name.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # None: started without that stream
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main() -> int:
    try:
        _printing_never_fails()
        from bot.cli import main as command

        return command()
    except KeyboardInterrupt:
        return INTERRUPTED
