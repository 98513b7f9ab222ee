"""Where voxdesk's own files are: the data that ships inside the package (system prompt,
manuals, seed SQL, demo grievances, sample notes, speech models, evaluation set).

Every module asks here instead of walking up from its own `__file__`, so a checkout and an
installed wheel find the same files, from any working directory. Operators point at their own
files with settings (`storage.dir`, `storage.manuals_dir`, `agent.system_prompt_file`), not by
editing these.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_data() -> Path:
    root = resources.files(__package__) / "data"
    # The speech models and SQLite need real files; a zipped install has none to give them.
    if not isinstance(root, Path) or not root.is_dir():
        raise RuntimeError(f"voxdesk's data folder is missing ({root}): reinstall the package unzipped")
    return root


DATA = _package_data()
SYSTEM_PROMPT = DATA / "prompts" / "system.md"
MANUALS = DATA / "manuals"
SQL = DATA / "sql"
GRIEVANCES = DATA / "grievances.json"
SAMPLES = DATA / "samples"
SPEECH = DATA / "speech"
PHRASINGS = SPEECH / "phrasings"
CONFUSIONS = SPEECH / "confusions.json"
EVAL_QUESTIONS = DATA / "eval" / "questions.tsv"
