"""Words someone else wrote (a ticket's summary, category, status) shown in Discord as written,
and a reply's words with no masked link but every address as the model wrote it.

Discord reads a backslash before a punctuation mark as the mark itself, and `@` followed by a
zero-width space as no mention: each expected string below is what Discord shows as plain text.
"""

from __future__ import annotations

import pytest

from cogs.replies import as_posted, literal, without_masked_links

ZWSP = "\u200b"


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        # Masked links: every one on the line, not only the first.
        ("[claim](https://evil.example)", r"\[claim](https://evil.example)"),
        (
            "[a](https://x.example) or [b](https://y.example)",
            r"\[a](https://x.example) or \[b](https://y.example)",
        ),
        ("[https://safe.example](https://evil.example)", r"\[https://safe.example](https://evil.example)"),
        (r"\[a](https://x.example)", r"\\\[a](https://x.example)"),  # the typed backslash stays one
        # Mentions, and the other tags Discord draws as something else than their text.
        ("@everyone and @here", f"@{ZWSP}everyone and @{ZWSP}here"),
        ("<@123456789012345678> said yes", rf"\<@{ZWSP}123456789012345678> said yes"),
        ("<@&123456789012345678>", rf"\<@{ZWSP}&123456789012345678>"),
        ("<#123456789012345678>", r"\<#123456789012345678>"),
        ("<:gem:123456789012345678>", r"\<:gem:123456789012345678>"),
        ("<a:gem:123456789012345678>", r"\<a:gem:123456789012345678>"),
        ("<t:1700000000:R>", r"\<t:1700000000:R>"),
        ("</grievance file:123456789012345678>", r"\</grievance file:123456789012345678>"),
        # What only means something at a line's start, and a new line that would make one.
        ("# FREE NITRO", r"\# FREE NITRO"),
        ("### FREE NITRO", r"\### FREE NITRO"),
        ("-# small print", r"\-# small print"),
        ("- item", r"\- item"),
        ("* item", r"\* item"),
        ("1. item", r"1\. item"),
        ("12) item", r"12\) item"),
        ("> quoted", r"\> quoted"),
        (">>> quoted", r"\>>> quoted"),
        ("refund\n# FREE NITRO\n> fake staff", "refund # FREE NITRO > fake staff"),
        ("refund 2. please", "refund 2. please"),
        # Inline marks.
        ("```py\nprint(1)```", r"\`\`\`py print(1)\`\`\`"),
        ("`code`", r"\`code\`"),
        ("||spoiler||", r"\|\|spoiler\|\|"),
        ("~~gone~~", r"\~\~gone\~\~"),
        ("__under__ **bold** *it* _it_", r"\_\_under\_\_ \*\*bold\*\* \*it\* \_it\_"),
        (r"back\slash", r"back\\slash"),
        # Links as written: a backslash in one would change where it goes.
        ("see https://example.com/a_b#top?x=[1]", "see https://example.com/a_b#top?x=[1]"),
        ("see <https://example.com/a_b>", "see <https://example.com/a_b>"),
        # A link runs on to the next "<", a backslash before it included: the tag after a link
        # is kept apart by a zero-width space, not a backslash the link would take in.
        (
            "see https://example.com/x<#123456789012345678>",
            f"see https://example.com/x<{ZWSP}#123456789012345678>",
        ),
        (r"https://example.com/x\<t:1700000000:R>", rf"https://example.com/x\<{ZWSP}t:1700000000:R>"),
        # "]" cannot end a link, but "]\" can: the escape itself made this one longer.
        (
            "(https://example.com)]<:gem:123456789012345678>",
            rf"(https://example.com)]\<{ZWSP}:gem:123456789012345678>",
        ),
        # A direction override would turn the rest of the bot's line around: "GRV-3 · open"
        # after "\u202eLost gems" showed as "nepo · 3-VRG". Arabic and its marks stay.
        ("\u202eLost gems \u2067x", "Lost gems x"),
        (
            "\u0627\u0633\u062a\u0631\u062f\u0627\u062f\u200f 20$",
            "\u0627\u0633\u062a\u0631\u062f\u0627\u062f\u200f 20$",
        ),
    ],
)
def test_words_someone_wrote_show_as_written(written: str, shown: str) -> None:
    assert literal(written) == shown


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("[claim](https://evil.example)", r"\[claim\](https://evil.example)"),
        ("[https://safe.example](https://evil.example)", r"\[https://safe.example](https://evil.example)"),
        ("[a](https://x.example/[b])", r"\[a\](https://x.example/[b])"),
        (r"\[a](https://x.example)", r"\\\[a\](https://x.example)"),
        ("[a](<https://x.example>)", r"\[a\](<https://x.example>)"),
        (r"back\slash [note] **bold** _it_", r"back\\slash \[note\] **bold** _it_"),
        # Addresses as written: a backslash in one would change where a player's click goes.
        ("see https://example.com/a_b#top?x=[1]&y=a\\b", "see https://example.com/a_b#top?x=[1]&y=a\\b"),
        ("see <https://example.com/[a]\\b>", "see <https://example.com/[a]\\b>"),
        ("(https://example.com/x[2]), then [this]", r"(https://example.com/x[2]), then \[this\]"),
        # "]" cannot end a link, but "]\" can: escaped after one, it would change where it goes.
        ("[see https://x.example/a].] [b]", r"\[see https://x.example/a].] \[b\]"),
    ],
)
def test_a_reply_keeps_its_addresses_but_no_masked_link(written: str, shown: str) -> None:
    assert without_masked_links(written) == shown


@pytest.mark.parametrize(
    ("written", "names", "shown"),
    [
        ("# Big **x**, you have 3 points", ["# Big **x**"], r"\# Big \*\*x\*\*, you have 3 points"),
        # An address holding the name stays as written, or the player's click goes elsewhere.
        (
            "dark_knight, see https://game.example/u/dark_knight?x=[1]&y=2",
            ["dark_knight"],
            r"dark\_knight, see https://game.example/u/dark_knight?x=[1]&y=2",
        ),
        ("_ : <https://x.example/a_b> and [a_b]", ["_"], r"\_ : <https://x.example/a_b> and \[a\_b\]"),
        # In code, where Discord reads no mark, a backslash would show.
        ("`dark_knight`, dark_knight", ["dark_knight"], r"`dark_knight`, dark\_knight"),
        ("```\n**x** *\n``` **x**", ["**x**"], "```\n**x** *\n``` \\*\\*x\\*\\*"),
        ("``a `**x**` b`` **x**", ["**x**"], "``a `**x**` b`` \\*\\*x\\*\\*"),
        (
            "`**x**` (in code as the name holds it)",
            ["`**x**`"],
            r"\`\*\*x\*\*\` (in code as the name holds it)",
        ),
        # A backtick Discord shows as text (in an escaped name, in an address) opens no code.
        ("**b**` wrote `ls` as **b**`.", ["**b**`"], r"\*\*b\*\*\` wrote `ls` as \*\*b\*\*\`."),
        ("https://x.example/` then **n** and `y`", ["**n**"], r"https://x.example/` then \*\*n\*\* and `y`"),
        ("Hi Bob and **x**\n# Big", ["Bob ", "**x**\n"], "Hi Bob and \\*\\*x\\*\\*\n# Big"),
        ("see https://x.example/a.] [b]", ["."], r"see https://x.example/a.] \[b\]"),
        # A name that begins another is not taken for the longer one's start: its marks stay escaped.
        ("Top: *x* beat *x", ["*x", "*x*"], r"Top: \*x\* beat \*x"),
        # An address that starts within a name is Discord's from there, and stays as written.
        ("**Bob**https://x.example/a] ok", ["**Bob**h"], r"\*\*Bob\*\*https://x.example/a] ok"),
        ("Ana<https://x.example/a_b>", ["Ana<"], "Ana<https://x.example/a_b>"),
        # A link runs on to the "<" of a name right after it: a backslash there would end it.
        ("see https://x.example<b> now", ["<b>"], f"see https://x.example<{ZWSP}b> now"),
        ("https://x.example).<b>", [".", "<b>"], f"https://x.example).<{ZWSP}b>"),
        (
            "<https://x.example><b> or https://x.example <b>",
            ["<b>"],
            r"<https://x.example>\<b> or https://x.example \<b>",
        ),
    ],
)
def test_a_players_name_shows_as_written_but_not_in_an_address_or_code(
    written: str, names: list[str], shown: str
) -> None:
    assert as_posted(written, names) == shown
