"""Finding addresses as Discord does, in linear time."""

from __future__ import annotations

import random
import re

import pytest

from bot.addresses import PATTERN, Addresses
from bot.ticket_news import plain
from cogs.replies import split_message, without_masked_links

# Pieces that make and break addresses of both kinds: brackets, the scheme's parts, spaces of
# several kinds, the punctuation an address may not end with, and escapes.
_PARTS = [
    "<",
    ">",
    ":",
    "/",
    ":/",
    " ",
    "\n",
    "\t",
    "\u3000",
    "a",
    "é",
    ".",
    ",",
    ";",
    "'",
    '"',
    "]",
    "[",
    "\\",
]
_PARTS += ["http://", "https://", "steam://", "https:/", "htt", "s", "(", ")"]


def test_the_same_addresses_are_found_as_by_discords_pattern() -> None:
    by_pattern = re.compile(PATTERN)
    # A link's run past its address (what cannot end one, "]" among them) stays as written too:
    # a backslash there would end the link.
    angled, bare = PATTERN.split("|", 1)
    marks = re.compile(rf"(?P<link>{angled}|{bare}[.,:;\"'\]]*)|[\\\[\]]")
    shuffled = random.Random(7)
    for _ in range(20_000):
        text = "".join(shuffled.choice(_PARTS) for _ in range(shuffled.randrange(40)))
        assert list(Addresses(text)) == [found.span() for found in by_pattern.finditer(text)], text
        assert without_masked_links(text) == marks.sub(lambda f: f["link"] or f"\\{f[0]}", text), text


@pytest.mark.timeout(20)  # the pattern itself took minutes; what is found is checked below
@pytest.mark.parametrize("text", ["<" * 64_000, "<a:/" * 16_000])
def test_text_no_address_can_be_made_of_is_read_once(text: str) -> None:
    # From each "<" the pattern ran on to the next ":", " " or ">" before it failed: 32,000 "<"
    # in a reply (max_reply_tokens = 0: no cap) took 11.5 s to split, the event loop blocked.
    assert "".join(split_message(text)) == text
    assert without_masked_links(text) == text
    assert plain(text, 50) == plain(text[:400], 50)
