"""Splitting long transcripts at Discord's 2000-character limit."""

from __future__ import annotations

from cogs.replies import split_message


def test_short_text_is_one_piece():
    assert split_message("  hello there  ") == ["hello there"]
    assert split_message("") == []


def test_cuts_at_paragraph_line_or_word_breaks():
    words = " ".join(f"word{i}" for i in range(1000))
    pieces = split_message(words)
    assert all(len(p) <= 2000 for p in pieces)
    assert " ".join(pieces) == words  # nothing lost, no word cut in half
    paragraphs = ("a" * 1500) + "\n\n" + ("b" * 1500)
    assert split_message(paragraphs) == ["a" * 1500, "b" * 1500]


def test_text_without_breaks_is_cut_hard():
    pieces = split_message("x" * 4500)
    assert [len(p) for p in pieces] == [2000, 2000, 500]
