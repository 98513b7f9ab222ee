"""The blind neural-voice splits' file is well formed. Structure only: these checks never read a
question's words into an assertion, so a failure shows line numbers and counts, not questions."""

from collections import Counter

from bot import paths

SPLITS_FILE = paths.DATA / "eval" / "neural_splits.tsv"
TOOLS = {"get_player_stats", "search_manuals", "register_grievance", "get_grievance_status"}
SINGLE = {*TOOLS, "smalltalk"}
PER_SPLIT = {"short": 84, "ramble": 18, "double": 18}


def _rows() -> list[tuple[int, list[str]]]:
    lines = SPLITS_FILE.read_text(encoding="utf-8").splitlines()
    return [(n, line.split("\t")) for n, line in enumerate(lines, 1) if line and not line.startswith("# ")]


def test_every_row_has_the_four_columns_and_an_allowed_kind_and_intent() -> None:
    problems = []
    for n, fields in _rows():
        if len(fields) != 4 or not fields[3].strip():
            problems.append(f"line {n}: {len(fields)} columns")
            continue
        split, kind, intents, _ = fields
        if split not in {"nv1", "nv2"} or kind not in PER_SPLIT:
            problems.append(f"line {n}: split or kind")
        elif kind == "double":
            pair = intents.split("+")
            if len(pair) != 2 or not set(pair) <= TOOLS or pair[0] == pair[1]:
                problems.append(f"line {n}: double needs two different tools")
        elif intents not in (TOOLS if kind == "ramble" else SINGLE):
            problems.append(f"line {n}: intent not allowed for {kind}")
    assert problems == []


def test_each_split_has_its_counts_per_kind() -> None:
    counts = Counter((fields[0], fields[1]) for _, fields in _rows())
    expected = {(split, kind): k for split in ("nv1", "nv2") for kind, k in PER_SPLIT.items()}
    assert dict(counts) == expected


def test_rambles_are_forty_to_eighty_words_and_questions_are_spoken_words() -> None:
    problems = []
    for n, (_, kind, _, question) in _rows():
        words = question.split()
        if kind == "ramble" and not 40 <= len(words) <= 80:
            problems.append(f"line {n}: ramble of {len(words)} words")
        if any(ch.isdigit() for w in words if not w.strip(",.?!").startswith("GRV-") for ch in w):
            problems.append(f"line {n}: digits outside a ticket key")
    assert problems == []


def test_no_question_is_asked_twice() -> None:
    questions = Counter(fields[3].lower() for _, fields in _rows())
    assert sum(k > 1 for k in questions.values()) == 0
