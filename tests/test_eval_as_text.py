"""`voxdesk eval --as-text`: the router alone on the questions' own words, scored as spoken notes
are, with no voice and no recogniser."""

from __future__ import annotations

import json

from bot.intent import router
from bot.lab import as_text, evaluation
from bot.lab.neural_eval import ASKED, ONE_OF_TWO, RIGHT, WRONG

STATS, MANUALS, STATUS = router.STATS, router.MANUALS, router.STATUS


def test_each_question_is_routed_from_its_own_words_and_scored() -> None:
    routed = as_text.route(
        [
            ("nvdev", "short", (STATS,), "how many points do i have"),
            ("nvdev", "short", (MANUALS,), "how many points do i have"),  # labelled for another tool
            ("nvdev", "short", ("smalltalk",), "thank you so much"),
            ("nvdev", "double", (STATS, STATUS), "what's my score, and is my refund ticket done"),
        ]
    )
    assert [r.verdict for r in routed] == [RIGHT, WRONG, RIGHT, RIGHT]


def test_the_report_gives_each_kind_and_the_short_notes_by_what_they_asked() -> None:
    routed = [
        as_text.Routed("nv30", "short", (STATS,), RIGHT),
        as_text.Routed("nv30", "short", (STATS,), WRONG),
        as_text.Routed("nv30", "short", (STATS,), WRONG),
        as_text.Routed("nv30", "short", ("smalltalk",), ASKED),
        as_text.Routed("nv30", "double", (STATS, STATUS), ONE_OF_TWO),
        as_text.Routed("nv31", "short", (STATS,), RIGHT),
    ]
    text = as_text.report(routed, "nv30")
    assert "short      4    25%     -    50%    25%" in text
    assert "double     1     0%  100%     0%     0%" in text
    assert "all        5    20%   20%    40%    20%" in text
    assert "get_player_stats 33% of 3, smalltalk 0% of 1" in text
    pooled = as_text.report(routed, "nv30+nv31", ("nv30", "nv31"))
    assert "short      5    40%" in pooled and "get_player_stats 50% of 4" in pooled


async def test_the_eval_routes_words_without_speech_models_or_voices(settings) -> None:
    # No recogniser and no voice: it runs where the speech models were never built.
    from bot.engines.offline.engine import speech_dir

    (speech_dir(settings) / "domain.arpa").unlink()
    figures = json.loads(await evaluation.run_eval(settings, ("nvdev", "dev"), as_json=True, words_only=True))
    cells = {(c["split"], c["kind"]): c for c in figures["as text"]}
    assert {"short", "ramble", "double", "all"} <= {kind for split, kind in cells if split == "nvdev"}
    assert cells["dev", "short"]["notes"] == cells["dev", "all"]["notes"] > 0  # eSpeak: short notes
    assert cells["nvdev", "short"][RIGHT] > 0.8


def test_the_abstention_rules_replay_over_the_deciders_chances() -> None:
    from bot.lab.abstention import Decided, verdict

    sure = {STATS: 0.97, MANUALS: 0.1, router.REGISTER: 0.65, STATUS: 0.02}
    one = Decided("short", (STATS,), (STATS,), False, sure)
    assert verdict(one, 0.0, 0.5) == RIGHT
    assert verdict(one, 0.98, 0.5) == ASKED  # asked again below the bar
    extra = Decided("short", (STATS,), (STATS, router.REGISTER), False, sure)
    assert verdict(extra, 0.0, 0.5) == WRONG
    assert verdict(extra, 0.0, 0.7) == RIGHT  # the less sure second request dropped
    both = Decided("double", (STATS, router.REGISTER), (STATS, router.REGISTER), False, sure)
    assert verdict(both, 0.0, 0.5) == RIGHT
    assert verdict(both, 0.0, 0.7) == ONE_OF_TWO
    smalltalk = Decided("short", ("smalltalk",), (), False, sure)
    assert verdict(smalltalk, 0.9, 0.5) == RIGHT


def test_as_text_refuses_what_only_hearing_gives(capsys) -> None:  # type: ignore[no-untyped-def]
    from bot.cli import main

    assert main(["eval", "--as-text", "--recognizer", "whisper", "--split", "nvdev"]) == 2
    assert main(["eval", "--as-text", "--human"]) == 2
    assert "no recogniser" in capsys.readouterr().err
