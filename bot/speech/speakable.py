"""What of a reply's text the voices say aloud; the written reply keeps every word.

A reply's text carries what players and tools put in it: display names, ticket summaries, a
cloud model's words. Three kinds of character are not said:

- characters no synthesiser can take: a lone surrogate (from a name cut mid-character) makes
  both Piper and eSpeak NG raise, a NUL ends eSpeak's text there and makes Piper raise; control,
  format, private-use and unassigned characters go with them (a control character becomes a
  space, so the words either side stay apart);
- emoji and pictographs: the voices read them by name ("video game" for 🎮, "heavy black heart"
  for ❤️), which no one wants to hear, and voice assistants skip them too. Symbols older than
  the arrows block (© ® ° ™) stay: they read as words;
- letters of scripts other than Latin: every voice here is English, and eSpeak reads 李明 as
  "Chinese letter, Chinese letter". A name in another script is left out of the spoken sentence
  ("李明, you have 120 points" is said "you have 120 points"), and the written text still has it.

Nor are the marks of Markdown, which a cloud model's answer, a studio's manual or a name may
carry: the voices read them by name ("asterisk, asterisk, resolved, asterisk, asterisk" for
**resolved**, "hash hash" for a heading). Emphasis, code spans, headings, bullets and quotes lose
their marks, a link is said by its words, and an address (https://support.example.com/refunds,
which the voices spelled "h t t p s colon slash slash") by its host and path alone.

A reply with nothing left to say after that (a lone 👍, a sentence all in Chinese) is read as the
voice can rather than sent as silence: only the characters no synthesiser can take are dropped.

The written reply (`writable`) loses only lone surrogates and control characters.
"""

from __future__ import annotations

import re
import unicodedata

# Categories no synthesiser is given: surrogates, private use, unassigned; format characters
# (zero-width joiners, bidi marks, soft hyphens, emoji tags) have no sound of their own.
_NEVER = frozenset({"Cs", "Co", "Cn", "Cf"})
_KEPT_CONTROLS = frozenset("\n\t")
# The arrows block onwards: arrows, dingbats, the pictographs, emoticons, flags' letters. Below
# it: © ® ° ™ and the like, which the voices say as the words they stand for.
_FIRST_PICTOGRAPH = 0x2190
_EMOJI_PARTS = frozenset(
    [
        *map(chr, range(0xFE00, 0xFE10)),  # variation selectors (❤ as ❤️)
        *map(chr, range(0x1F3FB, 0x1F400)),  # skin tones
        "\u20e3",  # the keycap around 1️⃣
    ]
)
# Full-width forms are ASCII as typed on a CJK keyboard: ＧＲＶ－１２ is the ticket key GRV-12, and
# eSpeak read each character as its code point in hex.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
# Control characters that end a line (a lone CR, vertical tab, form feed, NEL): dropped, they
# ran the last word of one line into the first of the next.
_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x85]")
# Embeddings, overrides and isolates: one left open (a name that starts with U+202E, say) turns
# the rest of the line around, "Nova, you have 708 points" shown as "stniop 807 evah uoy ,avoN",
# and lets words someone else wrote make the bot's message say something else.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NO_BIDI_CONTROLS = dict.fromkeys(map(ord, BIDI_CONTROLS))
_SPACES = re.compile(r"[ \t]+")
_SPACE_BEFORE_MARK = re.compile(r" +(?=[,;:.!?])")
# A clause mark left at a sentence's start once the name before it is gone: ", you have".
# Not across line breaks: tried from every one of a run of them, that was quadratic.
_ORPHAN_MARK = re.compile(r"(^|[.!?]\s|\n)[ \t]*[,;:]+\s*")
# And one left before a sentence's end once the name after it is gone: "Thanks, ." .
_MARK_BEFORE_END = re.compile(r"[,;:]+(?=[.!?])")


# Markdown's marks, as a model or a manual writes them. A lone underscore stays: it is inside
# names (xX_Sniper99_Xx), which the voices say well; a pair is emphasis only at a word's edge.
# A link's words hold no bracket: tried from every "[" of a text of them, a match running to the
# text's end was quadratic (100 KB of "[" took two minutes).
_LINK = re.compile(r"\[([^\[\]\n]+)\]\(\s*<?[^()\s]*(?:\([^()\s]*\)[^()\s]*)*>?(?:\s+\"[^\"]*\")?\s*\)")
# Not within an email address: help@www.example.com is said whole.
_ADDRESS = re.compile(r"<?(?<![\w@.-])(?:https?://|www\.)[^\s<>]+>?", re.IGNORECASE)
_ADDRESS_END = ".,;:!?)]}'\""
# A star between figures is a product, not emphasis: "5 * 3" was said "5 3", and "2*4" "24".
_TIMES = re.compile(r"(?<=\d)[ \t]*\*[ \t]*(?=\d)")
_MARKS = re.compile(r"[*`]+|~~|(?<!\w)__+|__+(?!\w)")
_LINE_MARKS = re.compile(r"^[ \t]*(?:#{1,6}|>+|[-*+•])[ \t]+", re.MULTILINE)


def speakable(text: str) -> str:
    """`text` as the English voices should say it."""
    printable = _printable(text)
    said = _tidy(_readable(_unmarked(printable)))
    if any(c.isalnum() for c in said):
        return said
    return _tidy(printable)


def writable(text: str) -> str:
    """`text` for the written reply: without lone surrogates, which no UTF-8 store or JSON body
    takes (the turn was not saved), control characters but line breaks and tabs, and direction
    overrides. Everything that shows stays, zero-width joiners too (they hold emoji sequences
    together), and the marks (LRM, RLM) that set where a neutral character goes."""
    lines = without_overrides(_LINE_BREAKS.sub("\n", _without_surrogates(text)))
    return "".join(c for c in lines if c in _KEPT_CONTROLS or unicodedata.category(c) != "Cc")


def without_overrides(text: str) -> str:
    """`text` without the direction controls (BIDI_CONTROLS) that would turn a line around."""
    return text.translate(_NO_BIDI_CONTROLS)


def _unmarked(text: str) -> str:
    """`text` without Markdown's marks, a link said by its words and an address by its place."""
    text = _LINK.sub(r"\1", text)
    text = _ADDRESS.sub(_said_address, text)
    text = _LINE_MARKS.sub("", text)
    return _MARKS.sub("", _TIMES.sub(" times ", text))


def _said_address(match: re.Match[str]) -> str:
    """An address as its host and path: no scheme, "www.", query or fragment, which the voices
    spell out character by character, and none of the punctuation that ends the sentence."""
    address = match.group(0).strip("<>")
    kept = address.rstrip(_ADDRESS_END)
    after = address[len(kept) :]
    place = re.sub(r"^(?:https?://)?(?:www\.)?", "", kept, flags=re.IGNORECASE)
    place = re.split(r"[?#]", place, maxsplit=1)[0].rstrip("/")
    return place + after


def _printable(text: str) -> str:
    out = []
    for c in unicodedata.normalize("NFC", _without_surrogates(text).translate(_FULL_WIDTH)):
        kind = unicodedata.category(c)
        if kind == "Cc" and c not in _KEPT_CONTROLS:
            out.append(" ")
        elif kind not in _NEVER:
            out.append(c)
    return "".join(out)


def _without_surrogates(text: str) -> str:
    # Before normalising: NFC of a lone surrogate is defined, but encoding one is not.
    return "".join(c for c in text if not "\ud800" <= c <= "\udfff")


def _readable(text: str) -> str:
    out = []
    dropped_letter = False
    for c in text:
        kind = unicodedata.category(c)
        if kind[0] == "M" and c not in _EMOJI_PARTS:
            if not dropped_letter:  # an accent stays with a Latin letter, goes with another
                out.append(c)
            continue
        dropped_letter = False
        if c in _EMOJI_PARTS or (kind == "So" and ord(c) >= _FIRST_PICTOGRAPH):
            continue
        if kind[0] in "LN" and not _latin(c):
            # Ⅳ and ① stand for IV and 1: a level or a step, not a word in another script.
            folded = unicodedata.normalize("NFKC", c)
            if folded.isascii() and folded.isalnum():
                out.append(folded)
                continue
            dropped_letter = True
            continue
        out.append(c)
    return "".join(out)


def _latin(c: str) -> bool:
    """A letter or number an English voice reads: ASCII, or a Latin letter (é, ß, ø), or a sign
    such as ½ or µ from Latin-1."""
    return ord(c) < 0x250 or unicodedata.name(c, "").startswith("LATIN")


def _tidy(text: str) -> str:
    text = _SPACE_BEFORE_MARK.sub("", _SPACES.sub(" ", text))
    return _MARK_BEFORE_END.sub("", _ORPHAN_MARK.sub(r"\1", text)).strip()
