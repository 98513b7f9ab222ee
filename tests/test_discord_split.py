"""Splitting long transcripts at Discord's 2000-character limit."""

from __future__ import annotations

import random
import re

import pytest

from cogs.replies import _inline_code, split_message, without_masked_links


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


def test_a_hard_cut_leaves_flags_emoji_and_accents_whole():
    # Discord counts code points; a reader sees clusters of them. Cut at the 2000th, a flag
    # showed as two letters in two messages, a family emoji as a man, then a woman and a girl.
    for cluster in ("🇯🇵", "👨\u200d👩\u200d👧", "👍🏽", "e\u0301\u0302"):
        text = "あ" * 1999 + cluster + "い" * 10
        first, second = split_message(text)
        assert first == "あ" * 1999 and second == cluster + "い" * 10, cluster


def test_japanese_is_cut_after_a_sentence():
    sentence = "ジェムが全部消えました。"  # "all my gems are gone.": 12 characters, no spaces
    pieces = split_message(sentence * 300)
    assert all(p.endswith("。") and len(p) <= 2000 for p in pieces)
    assert "".join(pieces) == sentence * 300


def test_a_closing_quote_stays_with_the_sentence_it_closes():
    # 「ジェムが消えました。」 cut after its 。 began the next message with a lone 」.
    quoted = "「ジェムが全部消えました。」"  # 14 characters
    pieces = split_message(quoted * 200)
    assert all(p.endswith("。」") and len(p) <= 2000 for p in pieces)
    assert "".join(pieces) == quoted * 200
    # Its closing mark one past the limit: the piece ends at the sentence before.
    first, rest = "あ" * 1000 + "。", "い" * 986 + quoted + "う" * 100
    assert split_message(first + rest) == [first, rest]


def test_a_hard_cut_leaves_no_escape_without_its_mark():
    # A backslash left at a piece's end would leave the next piece's "[" unescaped: a masked link
    # the reply's escaping had prevented. 1999 x's, then an escaped backslash, then an escaped "[".
    text = without_masked_links("x" * 1999 + "\\[claim](https://evil.example)")
    first, second = split_message(text)
    assert first == "x" * 1999
    assert second == r"\\\[claim\](https://evil.example)"
    first, second = split_message(without_masked_links("x" * 1999 + "[claim](https://evil.example)"))
    assert (first, second) == ("x" * 1999, r"\[claim\](https://evil.example)")


def test_a_hard_cut_leaves_addresses_whole():
    # An address keeps its brackets unescaped (a backslash would change where it goes); its tail
    # in a piece of its own would be no address, and its brackets a masked link.
    link = "https://a.example/" + "y" * 600 + "[claim](https://evil.example)"
    first, second = split_message(without_masked_links("x" * 1500 + link))
    assert (first, second) == ("x" * 1500, link)
    # An address longer than a whole piece cannot stay whole: its brackets past the cut are escaped.
    link = "https://a.example/" + "y" * 2000 + "[claim](https://evil.example)"
    first, second = split_message(link)
    assert first == link[:2000]
    assert second == "y" * 18 + r"\[claim\](https://evil.example)"


def test_an_address_cut_in_two_opens_no_masked_link_nor_tag():
    # Its tail is text: a bracket the address has escaped, given one more backslash alone, would
    # be open again ("\\[" is a backslash, then "["), and the masked link after it work.
    link = "https://a.example/" + "y" * 2000 + r"\[claim\](https://evil.example)"
    first, second = split_message(link)
    assert first == link[:2000]
    assert second == "y" * 18 + r"\\\[claim\\\](https://evil.example)"
    # One in angle brackets is none without its ">": its head is text too, and a "<" in it is
    # kept from starting a tag.
    link = "<a:/[claim](https://evil.example)<@&123456789012345678" + "y" * 2000 + ">"
    first, second = split_message(link)
    head = "<\u200ba:/\\[claim\\](https://evil.example)<\u200b@&123456789012345678"
    assert first == head + "y" * (2000 - len(head))
    assert second == "y" * len(head) + ">"


def _code(pieces: list[str]) -> list[str]:
    return [line for piece in pieces for line in piece.splitlines() if not line.startswith("```")]


def test_a_code_block_cut_in_two_is_closed_and_opened_again_with_its_language():
    # Each message is read on its own: the first showed its code as a block to the end, the
    # second showed the rest as text and opened a block at the fence that closed it.
    code = [f"    total_{i} = compute({i})" for i in range(120)]
    text = "Try this:\n```python\n" + "\n".join(code) + "\n```\nThen restart the game."
    pieces = split_message(text)
    assert len(pieces) == 2 and all(len(p) <= 2000 for p in pieces)
    assert pieces[0].startswith("Try this:\n```python\n") and pieces[0].endswith("\n```")
    assert pieces[1].startswith("```python\n    total_") and pieces[1].endswith("```\nThen restart the game.")
    assert all(p.count("```") == 2 for p in pieces)
    assert _code(pieces) == ["Try this:", *code, "Then restart the game."]  # indentation kept


def test_a_block_without_a_language_cut_hard_is_opened_again_without_one():
    text = "```\n" + "x" * 4500 + "\n```"
    pieces = split_message(text)
    assert all(len(p) <= 2000 and p.count("```") == 2 for p in pieces)
    assert pieces[1].startswith("```\nx") and "".join(_code(pieces)) == "x" * 4500
    # Fences escaped (a player's words, shown as written) open no block to close.
    assert "```" not in "".join(split_message(r"\`\`\`" + " word" * 500))


def test_an_address_longer_than_a_piece_is_made_text_once():
    # What is left of an address made text, read as one still, would be made text again at each
    # piece, its "<" and escapes doubled: 8,000 "<" in one address would be 149 messages.
    pieces = split_message("<" * 8000 + "a:/b>")
    assert len(pieces) == 9 and "".join(pieces) == "<\u200b" * 8000 + "a:/b>"
    pieces = split_message("<" + "[" * 5000 + ":/b>")
    assert "".join(pieces) == "<\u200b" + "\\[" * 5000 + ":/b>"


def test_a_cut_falls_before_inline_code_rather_than_within_it():
    # Cut at its last space, `like this` would be a stray backtick ending one message and another
    # opening the next, which pairs with the next backtick and shows the text between as code.
    text = "x" * 1980 + " run `voxdesk sync --guild 1` then `voxdesk run` again"
    first, second = split_message(text)
    assert first == "x" * 1980 + " run"
    assert second == "`voxdesk sync --guild 1` then `voxdesk run` again"
    # Two backticks hold one: the span runs to the next two.
    text = "x" * 1990 + " use ``a ` b c`` now"
    assert split_message(text) == ["x" * 1990 + " use", "``a ` b c`` now"]
    # An escaped backtick opens none: the cut is at the last space.
    assert split_message(r"aaaaaa \`b c` d", limit=12) == [r"aaaaaa \`b", "c` d"]


def test_inline_code_longer_than_half_a_piece_is_closed_and_opened_again():
    code = " ".join(f"arg{i}" for i in range(400))  # 2,289 characters of code
    text = "Run `" + code + "` and wait."
    pieces = split_message(text)
    assert all(len(p) <= 2000 for p in pieces)
    assert all(p.count("`") == 2 for p in pieces), pieces
    assert pieces[0].startswith("Run `arg0 ") and pieces[0].endswith("`")
    assert pieces[1].startswith("`arg") and pieces[1].endswith("` and wait.")
    assert [w.strip("`") for p in pieces for w in p.split()] == ["Run", *code.split(), "and", "wait."]


def test_inline_code_opening_with_a_space_is_not_cut_just_after_its_mark():
    # Cut at the space after the opening backtick, no code came before the cut to close: that
    # backtick alone ended one message, and the code's closing one, unpaired, a later one.
    text = "x" * 1980 + "` " + "y" * 3000 + "` done"
    pieces = split_message(text)
    assert all(len(p) <= 2000 for p in pieces)
    assert all(p.count("`") == 2 for p in pieces), [p[:5] + "…" + p[-5:] for p in pieces]
    assert "".join(pieces).replace("`", "") == text.replace("`", "")


def test_a_hard_cut_just_after_inline_codes_opening_backticks_falls_before_them():
    # Words with no break for a whole piece, then inline code at the limit: cut hard just after
    # its opening backticks, they ended one message alone and the closing ones, unpaired, the next.
    for ticks in ("`", "``"):
        text = "x" * (2000 - len(ticks)) + f"{ticks}code here{ticks} done"
        assert split_message(text) == ["x" * (2000 - len(ticks)), f"{ticks}code here{ticks} done"]


def test_inline_code_in_a_code_block_is_the_blocks():
    # Backticks within a block are code; the block alone is closed and opened again.
    lines = [f"echo `date` {i}" for i in range(200)]
    pieces = split_message("```sh\n" + "\n".join(lines) + "\n```")
    assert all(len(p) <= 2000 and p.count("```") == 2 for p in pieces)
    assert _code(pieces) == lines


def test_inline_code_cut_right_after_its_opening_backtick_goes_whole_to_the_next_piece():
    # Cut right after its opening backtick, a piece would end in that backtick alone and the next
    # begin with the code and its closing one: each would show a stray backtick.
    assert split_message("aaa`aa`aa`a`", 11) == ["aaa`aa`aa", "`a`"]
    assert split_message("a ``a``", 6) == ["a", "``a``"]


def test_inline_code_starting_the_text_with_blanks_is_cut_and_the_text_all_sent():
    # The cut falls among the code's leading blanks, none of its code before it: moved before the
    # span, it would fall at the text's start and make an empty piece, the same text again for ever.
    pieces = split_message("`     `aaaaaaaa", 4)
    assert all(0 < len(p) <= 4 for p in pieces), pieces
    assert "".join(pieces).replace("`", "").replace(" ", "") == "aaaaaaaa"


_TICK_RUN = re.compile(r"\\.|`+", re.DOTALL)


def _unpaired_backticks(piece: str) -> list[int]:
    """Where `piece` has a run of backticks that opens or closes no inline code."""
    spans = _inline_code(piece)
    return [
        run.start()
        for run in _TICK_RUN.finditer(piece)
        if not run[0].startswith("\\") and not any(s <= run.start() < e for s, e, _ in spans)
    ]


def test_every_piece_of_text_with_paired_inline_code_has_its_code_paired():
    # Seeded, so a failure is the same on every run: words, spaces and inline code of one or two
    # backticks (never two spans touching, which would make a fence), cut at small limits. The
    # code may hold blanks and end in them: cut there, what is left of it is not opened again as
    # empty code ("``"), which Discord shows as two backticks. Code starting with blanks is not
    # generated: at the start of a piece too long for it, no cut leaves a part of it that is not.
    rng = random.Random(36)
    for _ in range(20_000):
        parts: list[str] = []
        for _ in range(rng.randint(1, 6)):
            if (parts and parts[-1].endswith("`")) or rng.random() < 0.5:
                parts.append(rng.choice(["a" * rng.randint(1, 5), " "]))
            else:
                ticks = "`" * rng.choice([1, 1, 2])
                code = "a" + "".join(rng.choice("a ") for _ in range(rng.randint(0, 4)))
                parts.append(ticks + code + ticks)
        text, limit = "".join(parts), rng.randint(6, 14)
        pieces = split_message(text, limit)
        assert all(len(p) <= limit for p in pieces), (text, limit, pieces)
        assert not any(_unpaired_backticks(p) for p in pieces), (text, limit, pieces)
        assert "".join(pieces).replace("`", "").replace(" ", "") == text.replace("`", "").replace(" ", "")


def _subsequence(small: str, big: str) -> bool:
    left = iter(big)
    return all(c in left for c in small)


@pytest.mark.timeout(10)
def test_a_code_block_no_piece_can_hold_is_cut_hard_rather_than_for_ever():
    # At 4 characters a block's closing fence alone fills a piece: cut for its code at a line's
    # end within none, the piece was empty and the text the same, appended for ever.
    pieces = split_message("aaaa```aaaa`aaaaaaa`a`", 4)
    assert all(0 < len(p) <= 4 for p in pieces), pieces
    assert "".join(pieces).replace("`", "").replace("\n", "") == "a" * 16


@pytest.mark.timeout(10)
@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_no_piece_can_be_cut_within_is_refused(limit):
    # No piece fits within it: the split would send nothing and go on for ever.
    with pytest.raises(ValueError, match="at least one character"):
        split_message("a few words", limit)


@pytest.mark.timeout(30)
def test_every_text_is_split_in_pieces_within_the_limit_however_small():
    # Seeded, so a failure is the same on every run: words, blanks, line breaks and runs of one to
    # three backticks, at limits down to one character, where no rule of code can hold and a
    # hard cut must: each step sends something, so the split ends, and nothing but the marks
    # and blanks it adds or drops changes.
    rng = random.Random(37)
    tokens = ["a", "aa", "aaaa", " ", "\n", "`", "``", "```"]
    for _ in range(20_000):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(1, 12)))
        limit = rng.randint(1, 12)
        pieces = split_message(text, limit)
        assert all(0 < len(p) <= limit for p in pieces), (text, limit, pieces)
        kept = re.sub(r"[`\s]", "", text)
        assert _subsequence(kept, re.sub(r"[`\s]", "", "".join(pieces))), (text, limit, pieces)
