"""Would asking again when the decider is unsure turn wrong answers into questions back?

`python -m bot.lab.abstention --split nv22 --split nv23 --split nv24` routes each question's own
words (as `voxdesk eval --as-text` does) and then replays two rules over the decider's chances
(bot/intent/word_tagger.py), without changing the router:

- ask again: a note answered with one tool whose chance is below a bar is asked again instead;
- second request: of a note's two tools, the less sure is dropped when its chance is below a bar.

A bar that moved wrong answers to questions back, and few right ones, would be worth shipping;
the table says whether the decider's chances can tell its mistakes from its right answers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.intent import meaning, router
from bot.intent.word_tagger import decider_features, word_tagger
from bot.lab import neural_eval
from bot.lab.neural_eval import ASKED, KINDS, RIGHT, SMALLTALK, WRONG

ASK_BARS = (0.0, 0.8, 0.9, 0.95, 0.98)
SECOND_BARS = (0.5, 0.6, 0.7, 0.8, 0.9)  # 0.5 is the decider's own (ASKED_CHANCE)


@dataclass(frozen=True)
class Decided:
    kind: str
    asked: tuple[str, ...]  # what the note asks for, as its split labels it
    tools: tuple[str, ...]  # the tools the router answered with
    unsure: bool  # the router asked again
    chances: dict[str, float]  # the decider's chance behind each tool answered

    @property
    def wanted(self) -> set[str]:
        return set(self.asked) - {SMALLTALK}


def decide(rows: Sequence[neural_eval.Row]) -> list[Decided]:
    tagger = word_tagger()
    if tagger is None or tagger.decider is None:
        raise SystemExit(
            "the word tagger is not loaded: install the sentence encoders (bash scripts/dev setup)"
        )
    out = []
    for row in rows:
        intents = router.route_all(row.text)
        whole = router.route(row.text)
        words = router.tokenize(row.text)
        rows_ = decider_features(tagger.probabilities(words), whole.name, whole.scores)
        decided = dict(zip(router.TOOLS, map(float, tagger.decider.chances(rows_)), strict=True))
        # A status check that took a filing's place stands on the filing's chance.
        chances = {i.name: decided[i.rather_than or i.name] for i in intents if i.is_tool}
        out.append(
            Decided(
                row.kind,
                row.intents,
                tuple(i.name for i in intents if i.is_tool),
                any(i.name == router.UNSURE for i in intents),
                chances,
            )
        )
    return out


def verdict(d: Decided, ask_bar: float, second_bar: float) -> str:
    tools = list(d.tools)
    if len(tools) == 2:
        weaker = min(tools, key=d.chances.__getitem__)
        if d.chances[weaker] < second_bar:
            tools.remove(weaker)
    if len(tools) == 1 and d.chances[tools[0]] < ask_bar:
        return ASKED
    said = [router.Intent(tool) for tool in tools] + ([router.Intent(router.UNSURE)] if d.unsure else [])
    return neural_eval.verdict(d.asked, said)


def table(decided: list[Decided], rules: list[tuple[str, float, float]]) -> list[str]:
    present = [k for k in KINDS if any(d.kind == k for d in decided)]
    head = "  ".join(f"{k + ' right/wrong/asked':<24}" for k in present)
    lines = [f"{'rule':<22}  {head}"]
    for label, ask_bar, second_bar in rules:
        cells = []
        for kind in present:
            mine = [verdict(d, ask_bar, second_bar) for d in decided if d.kind == kind]
            shares = [mine.count(v) / len(mine) for v in (RIGHT, WRONG, ASKED)]
            cells.append(f"{'/'.join(f'{s:.0%}' for s in shares) + f' of {len(mine)}':<24}")
        lines.append(f"{label:<22}  " + "  ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.lab.abstention", description=__doc__.splitlines()[0])
    parser.add_argument("--split", action="append", required=True, help="a neural split (repeatable)")
    args = parser.parse_args(argv)
    meaning.use("auto")
    decided = decide(neural_eval.load_rows(args.split))
    rules = [("as shipped", 0.0, 0.5)]
    rules += [(f"ask again below {b}", b, 0.5) for b in ASK_BARS[1:]]
    rules += [(f"second request {b}", 0.0, b) for b in SECOND_BARS[1:]]
    print(f"splits: {', '.join(args.split)}; each question's own words, right / wrong / asked again")
    print("(a two-request note neither right nor wrong has one of its two answered)")
    print("\n".join(table(decided, rules)))
    ones = [(verdict(d, 0.0, 0.5), d.chances[d.tools[0]]) for d in decided if len(d.tools) == 1]
    medians = {v: float(np.median([c for w, c in ones if w == v] or [np.nan])) for v in (RIGHT, WRONG)}
    print(
        f"notes answered with one tool: median chance behind it {medians[RIGHT]:.3f} when right, "
        f"{medians[WRONG]:.3f} when wrong"
    )
    print("wrong answers as shipped: " + ", ".join(f"{n} {what}" for what, n in wrong_kinds(decided).items()))
    return 0


def wrong_kinds(decided: list[Decided]) -> dict[str, int]:
    """How the notes answered wrongly as shipped went wrong."""
    kinds = {"a second request not asked": 0, "one wrong tool": 0, "a tool for small talk": 0, "other": 0}
    for d in decided:
        if verdict(d, 0.0, 0.5) != WRONG:
            continue
        if len(d.tools) == 2 and d.wanted & set(d.tools):
            kinds["a second request not asked"] += 1
        elif len(d.tools) == 1 and not d.wanted:
            kinds["a tool for small talk"] += 1
        elif len(d.tools) == 1:
            kinds["one wrong tool"] += 1
        else:
            kinds["other"] += 1
    return kinds


if __name__ == "__main__":
    raise SystemExit(main())
