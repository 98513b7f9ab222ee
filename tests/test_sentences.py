"""Every sentence a player reads or hears is written in bot/sentences.py, so wording is reviewed,
changed or translated in one place. The check reads the modules that talk to players and fails on
a string there that reads like a sentence to a person; what is written for the model, for staff or
for the code itself is named below with the reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bot.sentences import long_wait_of, wait_of

from .conftest import REPO

# The modules whose strings reach players: front ends, the agent, audio, tools, engines, news,
# the web playground and the checks in front of it.
SPEAKING = [
    *sorted((REPO / "cogs").glob("*.py")),
    REPO / "bot" / "agent.py",
    REPO / "bot" / "audio.py",
    REPO / "bot" / "ticket_news.py",
    REPO / "bot" / "usage.py",
    REPO / "bot" / "web" / "playground.py",
    # Its refusals of a form or a CSRF token answer the playground's visitors too (/playground/).
    REPO / "bot" / "web" / "security.py",
    *sorted((REPO / "bot" / "tools").glob("*.py")),
    *sorted((REPO / "bot" / "engines").rglob("*.py")),
]
# A capitalised word (not SQL's SELECT), at least three more, and a full stop, question or
# exclamation mark at the end, or a value put in at the end ("Sorry, I couldn't: {reason}").
SENTENCE = re.compile(r"^[A-Z*][a-z'*]*[,:;]?( \S+){3,}.*([.!?]|\{\})$", re.DOTALL)
# Sentences in those modules that no player sees, by file and opening words.
NOT_FOR_PLAYERS = {
    ("bot/audio.py", "Expected a 16-bit mono WAV"): "our own WAVs only; a player's go through decode()",
    ("bot/tools/__init__.py", "The speaker's own game summary"): "a tool's description, for the model",
    ("bot/tools/__init__.py", "Search the game's help manuals"): "a tool's description, for the model",
    ("bot/tools/__init__.py", "File a complaint ticket"): "a tool's description, for the model",
    ("bot/tools/__init__.py", "Status and last update"): "a tool's description, for the model",
    ("bot/tools/__init__.py", "What the player wants to know"): "an argument's description, for the model",
    ("bot/tools/__init__.py", "The problem in the player's"): "an argument's description, for the model",
    ("bot/tools/__init__.py", "A ticket key like GRV-12"): "an argument's description, for the model",
    ("bot/tools/__init__.py", "There is no tool called"): "the model's own mistake, told to the model",
    ("bot/tools/__init__.py", "Invalid arguments for"): "the model's own mistake, told to the model",
    ("bot/tools/jira_tracker.py", "Jira answered HTTP"): "a tracker error for the operator's log",
    ("bot/tools/jira_tracker.py", "Jira call failed"): "a tracker error for the operator's log",
    ("bot/engines/offline/engine.py", "Whisper model"): "`voxdesk check`, for the operator",
    ("bot/tools/jira_grievances.py", "Jira {}: JIRA_EMAIL"): "`voxdesk check`, for the operator",
    ("bot/engines/openai.py", "Azure OpenAI"): "`voxdesk check`, for the operator",
    ("bot/engines/openai.py", "It is now"): "the time, told to the model",
    ("cogs/bot.py", "Message Content intent"): "a warning in the operator's log (off, or unapproved)",
    ("cogs/runner.py", "Discord closed the gateway"): "an error in the operator's log",
    ("bot/web/playground.py", "The playground is off"): "staff trying the bot on the web",
    ("bot/web/playground.py", "Choose one of the playground's"): "staff trying the bot on the web",
}


def written_sentences(path: Path) -> list[tuple[int, str]]:
    """Strings in `path` that read like a sentence, leaving out docstrings and log calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))  # a docstring
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in {"log", "logger", "logging"}
        ):
            skip.update(id(sub) for sub in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):
            skip.update(id(part) for part in node.values)
            text = "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if SENTENCE.match(text.strip()):
            found.append((node.lineno, text.strip()))
    return sorted(found)


def stray(paths: list[Path], root: Path = REPO) -> list[str]:
    out = []
    for path in paths:
        name = path.relative_to(root).as_posix()
        for line, text in written_sentences(path):
            if not any(name == f and text.startswith(start) for f, start in NOT_FOR_PLAYERS):
                out.append(f"{name}:{line}: {text[:70]}")
    return out


def test_no_sentence_for_players_is_written_outside_bot_sentences() -> None:
    assert stray(SPEAKING) == []


def test_the_check_finds_a_sentence_written_in_place(tmp_path: Path) -> None:
    # Guards the check itself: a reply typed inline, plain or formatted, is caught; a log line,
    # a docstring and a word are not.
    module = tmp_path / "cogs" / "talks.py"
    module.parent.mkdir()
    module.write_text(
        '"""A module that talks to players."""\n'
        "def reply(n):\n"
        '    """Says something."""\n'
        '    log.info("Sent %d replies to the player today.", n)\n'
        '    tell("Sorry, I lost your note on the way. Send it again?")\n'
        '    return f"You have {n} tickets open right now."\n'
        '    error = f"Sorry, I could not look that up: {n}"\n'
        'KIND = "voice"\n',
        encoding="utf-8",
    )
    assert stray([module], root=tmp_path) == [
        "cogs/talks.py:5: Sorry, I lost your note on the way. Send it again?",
        "cogs/talks.py:6: You have {} tickets open right now.",
        "cogs/talks.py:7: Sorry, I could not look that up: {}",
    ]


def test_a_wait_a_player_reads_is_rounded_up_and_says_second_alone():
    # Every "try again in ..." and "please wait ..." the bot says: a cooldown's last half second is
    # never "0 seconds", and one is not "1 seconds".
    assert [wait_of(s) for s in (0.0, 0.2, 1.0, 1.01, 59.2, 600)] == [
        "1 second",
        "1 second",
        "1 second",
        "2 seconds",
        "60 seconds",
        "600 seconds",
    ]


def test_a_long_wait_is_said_in_seconds_minutes_or_hours_never_one_minutes():
    # A minute exactly is still seconds: rounded up to minutes it would read "1 minutes".
    assert [long_wait_of(s) for s in (0.5, 60, 60.5, 3600, 3601, 86400)] == [
        "1 second",
        "60 seconds",
        "2 minutes",
        "60 minutes",
        "2 hours",
        "24 hours",
    ]
