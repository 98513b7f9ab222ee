"""`voxdesk` and `python -m bot` start here: a module that imports nothing, so a Ctrl-C while
bot.cli loads (numpy, the speech code: the command's first second) ends as one later does."""

from __future__ import annotations

INTERRUPTED = 130  # 128 + SIGINT, the status bot.cli gives a command Ctrl-C stopped


def main() -> int:
    try:
        from bot.cli import main as command

        return command()
    except KeyboardInterrupt:
        return INTERRUPTED
