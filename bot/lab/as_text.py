"""The router alone: each question's own words routed as the bot routes a transcript, with no
voice and no recogniser (`voxdesk eval --as-text`).

Beside the spoken figures, these say how much of a miss is the router's: a note routed wrongly
from its own words is wrong however well it is heard. Scored as the spoken notes are (see
neural_eval.verdict); the eSpeak splits' questions count as short notes of one request.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from bot.intent import router
from bot.lab import neural_eval
from bot.lab.neural_eval import ASKED, KINDS, ONE_OF_TWO, RIGHT, SMALLTALK, VERDICTS, WRONG


@dataclass(frozen=True)
class Routed:
    split: str
    kind: str
    intents: tuple[str, ...]  # what was asked
    verdict: str


def route(questions: Sequence[tuple[str, str, tuple[str, ...], str]]) -> list[Routed]:
    """(split, kind, intents asked, words) → each question's verdict, routed with no history."""
    return [
        Routed(split, kind, intents, neural_eval.verdict(intents, router.route_all(text)))
        for split, kind, intents, text in questions
    ]


def cells(routed: list[Routed], pooled_as: str | None = None) -> list[dict[str, object]]:
    """Per split (or all as `pooled_as`) and kind (and all kinds): the count and each verdict's
    share."""
    groups: dict[tuple[str, str], list[Routed]] = defaultdict(list)
    for r in routed:
        for kind in (r.kind, "all"):
            groups[pooled_as or r.split, kind].append(r)
    return [
        {"split": split, "kind": kind, "notes": len(rows)}
        | {v: sum(r.verdict == v for r in rows) / len(rows) for v in VERDICTS}
        for (split, kind), rows in groups.items()
    ]


def report(routed: list[Routed], split: str, pooled: tuple[str, ...] = ()) -> str:
    """One split's (or, with `pooled`, those splits' together) shares by kind, and its short
    notes' share right by what they asked."""
    wanted = set(pooled) or {split}
    mine = [r for r in routed if r.split in wanted]
    if not mine:
        return f"split: {split} as text: no questions"
    table = {c["kind"]: c for c in cells(mine, split)}
    lines = [
        f"split: {split} as text: the questions' own words routed, no voice and no recogniser",
        "  right / one of two (double only) / wrong tool / asked again, % of questions",
        f"{'kind':<7} {'n':>4} {'right':>6} {'1of2':>5} {'wrong':>6} {'asked':>6}",
    ]
    for kind in (*[k for k in KINDS if k in table], "all"):
        c = table[kind]
        one = f"{c[ONE_OF_TWO]:.0%}" if kind in ("double", "all") else "-"
        lines.append(f"{kind:<7} {c['notes']:>4} {c[RIGHT]:>6.0%} {one:>5} {c[WRONG]:>6.0%} {c[ASKED]:>6.0%}")
    short = [r for r in mine if r.kind == "short"]
    asked: Counter[str] = Counter(r.intents[0] for r in short)
    right: Counter[str] = Counter(r.intents[0] for r in short if r.verdict == RIGHT)
    order = [*router.TOOLS, SMALLTALK]
    by_intent = ", ".join(f"{i} {right[i] / asked[i]:.0%} of {asked[i]}" for i in order if asked[i])
    lines.append(f"short, right by what was asked: {by_intent}")
    return "\n".join(lines)


def questions_of(
    neural_rows: Sequence[neural_eval.Row], espeak: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, tuple[str, ...], str]]:
    """The questions to route: the neural splits' rows as they are, and each eSpeak question
    (split, intent, words) as a short note."""
    return [(r.split, r.kind, r.intents, r.text) for r in neural_rows] + [
        (split, "short", (intent,), text) for split, intent, text in espeak
    ]
