"""The agent's four tools and the toolbox that validates and runs them."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Iterable
from typing import Any

import jsonschema

from bot import sentences as say
from bot.tools.base import (
    DECLINED,
    DUPLICATE,
    JSON,
    MAX_LISTED,
    MAX_NESTING,
    UNPARSED,
    Filing,
    Grievance,
    GrievanceBackend,
    ManualsBackend,
    StatsBackend,
    Tool,
    ToolCall,
    ToolContext,
    ToolError,
    ToolResult,
    too_deep,
)

log = logging.getLogger(__name__)

CATEGORIES = ("wallet", "reward_points", "gaming_experience", "usage_history", "other")
# \Z, not $: $ also matches before a final line break, which would pass "GRV-1\n" or "<id>\n".
TICKET_KEY = re.compile(r"^[A-Z][A-Z0-9_]{1,9}-[1-9][0-9]{0,8}\Z")
# A Discord user's id (a snowflake): only one can be sent a DM. Never with a leading zero, which
# Discord never gives and int() drops: news for "0<id>" would be DMed to <id>.
USER_ID = re.compile(r"^[1-9][0-9]{0,19}\Z")
MAX_DESCRIPTION = 2000
MIN_DESCRIPTION_WORDS, MIN_DESCRIPTION_LETTERS = 2, 6
# A note is one player speaking for a minute or two: more tickets than this from one note, or more
# calls than this in one round, is a model looping (or a player asking it to), and each ticket
# reaches the desk and Jira, each stats call one of the database pool's few connections.
MAX_FILINGS_PER_NOTE = 3
MAX_CALLS_PER_ROUND = 8
# A manual section as a passage the model reads, about a minute and a half of speech: a studio's
# manual with no `##` sections is one passage of the whole file, which would be sent, and billed,
# with every step of the turn, and leave the turn too big for the history (MAX_HISTORY_CHARS).
MAX_PASSAGE_CHARS = 1500
# An argument error is read by the model and kept in the history: it shows a value only in part.
SHOWN_CHARS = 80
# A ticket's words in a list of tickets: the start of them, marked "…" when there is more.
SUMMARY_SHOWN = 200
MAX_ERROR_CHARS = 300


def filing_id(platform: str, request_id: str, nth: int) -> str:
    """What files one complaint of a turn once, however often the turn runs: its platform and
    request (a Discord note's message id), and which of its complaints it is."""
    return f"{platform}:{request_id}:{nth}"


def filing_turn(platform: str, request_id: str) -> str:
    """What every filing id of a turn starts with ("platform:request:", `Filing.turn`)."""
    return filing_id(platform, request_id, 0)[:-1]


# How alike two complaints' words must be (0 to 1, see `likeness`) to be one complaint filed again,
# and how much more alike a complaint of the same category counts.
SAME_COMPLAINT = 0.5
SAME_CATEGORY = 0.1
# Words that say nothing of which complaint it is.
COMMON_WORDS = frozenset(
    "the and was were for with that this have has had not but are you your our they them then than"
    " from into just very also its his her she him who what when why how all any can did does got"
    " get been being there their about after again still".split()
)


def _telling_words(text: str) -> set[str]:
    # The first five letters of each word: "charged" and "charge", "arrived" and "arrive" agree.
    return {w[:5] for w in re.findall(r"[^\W_]+", text.lower()) if len(w) > 2 and w not in COMMON_WORDS}


def likeness(a: str, b: str) -> float:
    """How alike two descriptions of a complaint are, 0 to 1 (the Dice coefficient of their
    telling words): a model asked afresh words the same complaint a little differently."""
    x, y = _telling_words(a), _telling_words(b)
    if not x or not y:
        return float(" ".join(a.lower().split()) == " ".join(b.lower().split()))
    return 2 * len(x & y) / (len(x) + len(y))


def _alike(description: str, category: str, earlier: tuple[str, str, str]) -> float:
    _, filed_category, filed_description = earlier
    return likeness(description, filed_description) + (SAME_CATEGORY if category == filed_category else 0.0)


def same_complaint(category: str, description: str, earlier: tuple[str, str, str]) -> bool:
    """Whether a complaint is the one an earlier filing (filing id, category, description) filed,
    worded afresh: as alike as `filing_for` needs to give it that filing."""
    return _alike(description, category, earlier) >= SAME_COMPLAINT


def filing_for(ctx: ToolContext, nth: int, category: str, earlier: list[tuple[str, str, str]]) -> str:
    """The filing id of complaint `nth` of this run of the turn (ctx.complaints[nth]), given what
    earlier runs of the turn filed (`earlier`: filing id, category, description, in filing
    order), so that a complaint filed again keeps its own ticket whatever order the model files
    them in this time: the earlier filing most like it, unless chosen already or the favourite
    of another complaint of this run that likes it better; else the one at its place, if it may
    be this complaint worded afresh (a telling word in common) and no other
    complaint of this run is that one; else a new id. Runs with no await, so complaints filed
    side by side choose one after another."""
    taken = set(ctx.filings.values())
    free = [f for f in earlier if f[0] not in taken]

    def favourite(k: int) -> tuple[str | None, float]:
        scored = [(_alike(ctx.complaints[k], ctx.filed[k], f), f[0]) for f in free]
        score, chosen = max(scored, default=(0.0, None))
        return (chosen, score) if score >= SAME_COMPLAINT else (None, 0.0)

    rivals = [favourite(k) for k in ctx.complaints if k != nth and k not in ctx.filings]
    candidates = [
        (score, f[0])
        for f in free
        if (score := _alike(ctx.complaints[nth], category, f)) >= SAME_COMPLAINT
        and not any(chosen == f[0] and better > score for chosen, better in rivals)
    ]
    if candidates:
        return max(candidates)[1]
    platform, request = ctx.platform, ctx.request_id
    at_place = filing_id(platform, request, nth)
    filed_there = next((f for f in earlier if f[0] == at_place), None)
    others = [k for k in ctx.complaints if k != nth]
    # A complaint the earlier runs never heard (no word in common with the filing at its place;
    # a category is shared by many), filed first in a round of its own, must not take that
    # filing: the complaint it is, filed in a later round, would find it taken and take another's.
    its_place = filed_there is None or (
        likeness(ctx.complaints[nth], filed_there[2]) > 0
        and not any(_alike(ctx.complaints[k], ctx.filed[k], filed_there) >= SAME_COMPLAINT for k in others)
    )
    if at_place not in taken and its_place:
        return at_place
    used = taken | {f[0] for f in earlier}
    k = nth
    while filing_id(platform, request, k) in used:
        k += 1
    return filing_id(platform, request, k)


def filed_in(filing: str) -> tuple[str, str] | None:
    """(platform, request id) of the turn a `filing_id` names; None for an id of another kind
    (a spool line's own, grievance_spool.py). Ids filed by older versions name the category too
    (platform:request:category:nth)."""
    parts = filing.split(":")
    if len(parts) not in (3, 4) or not parts[-1].isdigit() or not all(parts[:2]):
        return None
    return parts[0], parts[1]


def _record_note(ticket: Grievance) -> str:
    """Why a ticket's status is the local record's: gone from the tracker, hidden from the bot's
    account there, or the tracker is unreachable."""
    if ticket.untracked:
        return say.UNTRACKED_NOTE
    return say.HIDDEN_NOTE if ticket.hidden else say.LOCAL_RECORD_NOTE


async def readable_grievances(
    grievances: GrievanceBackend, ctx: ToolContext, key: str | None = None, limit: int = MAX_LISTED
) -> list[Grievance]:
    """The speaker's tickets (only the one `key` names, with a key; else the `limit` newest); as a
    shared player (see ToolContext.grievance_owner), the speaker's own first, then the player's
    if they are shared (ToolContext.shared_tickets)."""
    if not ctx.grievance_owner:
        return await grievances.status(ctx.user_id, key, limit)
    own = await grievances.status(ctx.grievance_owner, key, limit)
    if not ctx.shared_tickets:
        return own
    if key is not None and own:  # found: no need to ask after the player's (Jira may be slow)
        return own
    return own + await grievances.status(ctx.user_id, key, limit)


# How a finished ticket ended, as get_grievance_status tells the model: one closed without a fix
# must not be told as resolved, and its status word alone may not say why.
RESOLUTIONS = {
    "resolved": "fixed: staff dealt with it",
    "closed": "closed by staff; the record does not say whether anything was changed",
    DECLINED: "declined: staff closed it without a fix, deciding not to act on it",
    DUPLICATE: "a duplicate: staff closed it without a fix, as another ticket covers the same problem",
}


def ticket_rows(tickets: Iterable[Grievance], *, private: bool) -> list[JSON]:
    """Tickets as get_grievance_status answers them (and the slash commands show them); what
    each says only in an answer the speaker alone reads (`private`, see ToolContext.private)."""
    return [
        {
            "ticket_key": t.key,
            "category": t.category,
            "status": t.status,
            **({"resolution": RESOLUTIONS[t.status]} if t.status in RESOLUTIONS else {}),
            "last_update": t.updated_at,
            **({"summary": clipped(t.description, SUMMARY_SHOWN)} if private else {}),
            **({"note": _record_note(t)} if t.untracked or t.from_local_record else {}),
        }
        for t in tickets
    ]


def heard_in_public(results: list[JSON]) -> list[JSON]:
    """Tool results of an earlier turn, fit to be sent again for a turn whose answer others read:
    no ticket's words. A public place's stored turns can hold them from an older voxdesk, which
    gave them everywhere, and the model would read them out there."""
    kept: list[JSON] = []
    for r in results:
        found = r.get("result")
        tickets = found.get("tickets") if isinstance(found, dict) else None
        if r.get("name") == "get_grievance_status" and isinstance(tickets, list):
            words = [
                {k: v for k, v in t.items() if k != "summary"} if isinstance(t, dict) else t for t in tickets
            ]
            r = {**r, "result": {**found, "tickets": words}}
        kept.append(r)
    return kept


def build_tools(
    stats: StatsBackend,
    manuals: ManualsBackend,
    grievances: GrievanceBackend,
    manual_results: int = 3,
) -> list[Tool]:
    """The four tools, bound to whichever backends the config chose."""

    async def get_player_stats(ctx: ToolContext, args: JSON) -> JSON:
        summary = await stats.player_summary(ctx.user_id)
        if summary is None:
            return {
                "linked": False,
                "message": say.NOT_LINKED,
            }
        return {
            "linked": True,
            "player_name": summary.player_name,
            "total_points": summary.total_points,
            # Left out rather than null when unread: nothing for a model to read out as a rank.
            **(
                {"rank": summary.rank, "players_ranked": summary.players_ranked}
                if summary.rank is not None
                else {}
            ),
            "games": [vars(g) for g in summary.games],
            "achievements": summary.achievements,
            "achievement_count": summary.achievement_count,
        }

    async def search_manuals(ctx: ToolContext, args: JSON) -> JSON:
        passages = await manuals.search(args["query"], manual_results)
        return {
            "passages": [
                {
                    "title": p.title,
                    "text": passage_text(p.text),
                    "source": p.source,
                    **({"excerpt": p.excerpt} if p.excerpt else {}),
                }
                for p in passages
            ],
        }

    async def register_grievance(ctx: ToolContext, args: JSON) -> JSON:
        description = args["description"].strip()[:MAX_DESCRIPTION]
        category = args["category"]
        if too_short(description):
            raise ToolError(say.DESCRIPTION_TOO_SHORT)
        words = complaint_key(category, description)
        if (same := ctx.filed_words.get(words)) is not None:
            return dict(await asyncio.shield(same))
        ctx.filed_words[words] = filed = asyncio.get_running_loop().create_future()
        try:
            answer = await _register(ctx, description, category)
        except BaseException as exc:
            del ctx.filed_words[words]  # a later call may try again
            if isinstance(exc, Exception):
                filed.set_exception(exc)
                filed.exception()  # a call waiting on it is told; none need be
            else:
                filed.cancel()
            raise
        filed.set_result(answer)
        return dict(answer)

    async def _register(ctx: ToolContext, description: str, category: str) -> JSON:
        if len(ctx.filed) >= MAX_FILINGS_PER_NOTE:
            raise ToolError(say.TOO_MANY_FILINGS.format(count=MAX_FILINGS_PER_NOTE))
        if ctx.may_file is not None and len(ctx.filed) not in ctx.allowed_places:
            if refusal := ctx.may_file():
                raise ToolError(refusal)
            ctx.allowed_places.add(len(ctx.filed))
        # The note, and which of its complaints: the same note heard again (its answer never
        # reached the player, or a restart cut it) finds the tickets it filed the first time, each
        # complaint its own by its words (filing_for), whatever order they come in this time.
        # Counted before any await, so every complaint filed side by side is known to the others.
        nth = len(ctx.filed)
        ctx.filed.append(category)
        ctx.complaints[nth] = description
        owner = ctx.grievance_owner or ctx.user_id
        filing = None
        if ctx.request_id:

            def choose(earlier: list[tuple[str, str, str]]) -> str:
                chosen = ctx.filings[nth] = filing_for(ctx, nth, category, earlier)
                return chosen

            turn = filing_turn(ctx.platform, ctx.request_id)
            filing = Filing(turn, choose, lambda: sorted(ctx.filings.values()))
        ticket = await grievances.register(owner, category, description, filing, untold=ctx.answered_once)
        # Key and category, never the words: the log outlives every prune and /forget.
        log.info("%s filed grievance %s (%s)", ctx.who, ticket.key, ticket.category)
        return {"ticket_key": ticket.key, "status": ticket.status, "category": ticket.category}

    async def get_grievance_status(ctx: ToolContext, args: JSON) -> JSON:
        # Models fill optional fields with "": that is no key, not a wrong one.
        key = typed_key(args.get("ticket_key") or "") or None
        if key is not None:
            if not TICKET_KEY.match(key):
                return {"tickets": [], "message": say.NOT_A_TICKET_KEY.format(key=key)}
        found = ticket_rows(
            await readable_grievances(grievances, ctx, key, MAX_LISTED + 1), private=ctx.private
        )
        if key is not None and not found:
            return {"tickets": [], "message": say.NO_SUCH_TICKET.format(key=key)}
        # Said once, for the model to tell the player why it cannot say what a ticket is about.
        kept = {"words": say.TICKET_WORDS_KEPT} if found and not ctx.private else {}
        if len(found) > MAX_LISTED:
            # The newest are listed; an answer counting them would tell the player too few.
            return {"tickets": found[:MAX_LISTED], "more_tickets": True, **kept}
        return {"tickets": found, **kept}

    return [
        Tool(
            name="get_player_stats",
            description=(
                "The speaker's own game summary: games played, points earned and cash won by "
                "game type, total points, achievements and usually rank. With no rank in the "
                "result the rank is unknown just now: say so if asked, never guess or work one "
                "out. Only ever the speaker's data."
            ),
            parameters={"type": "object", "properties": {}, "additionalProperties": False},
            handler=get_player_stats,
        ),
        Tool(
            name="search_manuals",
            description=(
                "Search the game's help manuals (controllers, accounts, passwords, two-factor "
                "authentication, refunds, missing purchases, cheaters, system requirements, "
                "crashes, parental controls, seasons and battle pass)."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "query": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 300,
                        # The manuals are English, and so are both indexes' analyzers: a
                        # question put in the player's Spanish or Japanese finds nothing.
                        "description": (
                            "What the player wants to know, in a few words of English (the "
                            "manuals' language), whatever language the player speaks."
                        ),
                    }
                },
                "required": ["query"],
                "additionalProperties": False,
            },
            handler=search_manuals,
        ),
        Tool(
            name="register_grievance",
            description=(
                "File a complaint ticket for the speaker and return its key. Use when the player "
                "reports a problem they want the support team to handle."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "category": {"type": "string", "enum": list(CATEGORIES)},
                    "description": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_DESCRIPTION,
                        "description": (
                            f"The problem in the player's own words: at least {MIN_DESCRIPTION_WORDS}"
                            f" words and {MIN_DESCRIPTION_LETTERS} letters (a Chinese or Japanese"
                            " character counts as two letters), or the ticket is refused; ask the"
                            " player what went wrong before filing less."
                        ),
                    },
                },
                "required": ["category", "description"],
                "additionalProperties": False,
            },
            handler=register_grievance,
        ),
        Tool(
            name="get_grievance_status",
            description=(
                "Status and last update of the speaker's own tickets, or of one ticket of "
                "theirs when a key such as GRV-12 is given."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "ticket_key": {
                        "type": "string",
                        "maxLength": 20,
                        "description": "A ticket key like GRV-12; omit for all the speaker's tickets.",
                    }
                },
                "additionalProperties": False,
            },
            handler=get_grievance_status,
        ),
    ]


def well_formed(value: Any) -> Any:
    """The model's arguments with every string valid Unicode: JSON may carry a lone surrogate
    ("\\ud83d"), which SQLite and UTF-8 cannot encode, so the complaint would be neither filed nor
    kept. Split pairs are joined; a lone half becomes U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {well_formed(k): well_formed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [well_formed(v) for v in value]
    return value


# Where a sentence ends in scripts written without spaces (Chinese, Japanese): a piece may end
# after one, its mark kept, and the closing brackets and quotes right after it ("。」"): a piece
# that began with one would close nothing.
SENTENCE_END = re.compile("[。！？][」』）〕］｝〉》】〙〗〛”’]*")


def passage_text(text: str, limit: int = MAX_PASSAGE_CHARS) -> str:
    """`text` whole, or its first `limit` characters or so, ending with a sentence where one
    ends in the second half of them (a Chinese or Japanese one too), else with a word, else
    where a character ends: never inside a flag, an emoji or an accented letter."""
    if len(text) <= limit:
        return text
    cut = text[: cluster_start(text, limit - 2)]
    end = max(cut.rfind(mark) + 1 for mark in (". ", "! ", "? "))
    # Past the cut, a closing bracket would be left out of its sentence: not an end there.
    ended = (e for found in SENTENCE_END.finditer(text, 0, len(cut) + 1) if (e := found.end()) <= len(cut))
    end = max(end, max(ended, default=0))
    if end > limit // 2:
        return cut[:end] + " …"
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + " …"


# Characters that draw nothing yet are no spaces: Hangul's fillers are letters (Lo), and the
# blank braille pattern a symbol; Discord users type them for a name or message that looks empty.
_FILLERS = "\u115f\u1160\u3164\uffa0"
_DRAWN_AS_NOTHING = _FILLERS + "\u2800"


def blank(text: str) -> bool:
    """Nothing a person could read: spaces of any kind, and invisible marks (zero-width ones,
    Hangul fillers)."""
    return all(
        c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs") or c in _DRAWN_AS_NOTHING for c in text
    )


def complaint_key(category: str, description: str) -> tuple[str, str]:
    """What makes two filings one complaint, sent twice: the category and the words, case and
    spacing aside."""
    return category, " ".join(description.casefold().split())


# Scripts written without spaces between words, by code point: Han (Chinese, and Japanese
# kanji), kana; and Thai, Lao, Myanmar and Khmer, alphabets whose words run together.
_IDEOGRAPHIC = (
    (0x3040, 0x30FF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF66, 0xFF9F),
    (0x20000, 0x3FFFF),
)
_RUN_TOGETHER = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF))
# Letters of a run-together alphabet per word, about: "เงิน" (money), "หาย" (lost).
_LETTERS_PER_WORD = 4
# The leading consonants of Hangul syllables decomposed (NFD): one per syllable. Korean is written
# with spaces, but between phrases: a noun and its verb ("환불해주세요", "please refund") or two
# nouns ("결제오류", "payment error") run together, and chat often drops the spaces altogether.
_HANGUL_SYLLABLE_STARTS = ((0x1100, 0x115F), (0xA960, 0xA97F))
# Hangul syllables per word, about: "환불" (refund), "결제" (payment), "로그인" (login).
_SYLLABLES_PER_WORD = 3
_APOSTROPHES = "'\u2019"
# Invisible format characters that end a word as a space does (a zero-width space, often in
# pasted text; a byte order mark); the others (a joiner, a soft hyphen, a direction mark) do not.
_INVISIBLE_SPACES = "\u200b\ufeff"


def _within(c: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= ord(c) <= high for low, high in ranges)


def _word_runs(text: str) -> list[str]:
    """The runs of letters, digits and marks of `text`: any other character (a space, "-", "/",
    "_") ends a word, but an apostrophe between letters ("can't") and a zero-width (non-)joiner
    inside a Persian or Indic word do not."""
    runs, run = [], ""
    for i, c in enumerate(text):
        kind = unicodedata.category(c)
        inside = c in _APOSTROPHES and run and text[i + 1 : i + 2].isalnum()
        if kind[0] in "LNM" or (kind == "Cf" and c not in _INVISIBLE_SPACES) or inside:
            run += c
        elif run:
            runs.append(run)
            run = ""
    return [*runs, run] if run else runs


def too_short(text: str) -> bool:
    """Too little for staff to act on ("a", "lag", "refund"): fewer than two words or six letters
    and digits. Words are split by spaces and punctuation ("lag/crash" is two), and counted so in
    every script written with spaces (Arabic, Devanagari too; a vowel sign counts as a letter), but
    in Korean each three syllables of a word, or fewer left over, count as a word ("환불", "refund",
    is one; "환불해주세요", "please refund", two), and a syllable as the letters it is made of. Of
    a script without spaces, a Chinese or Japanese character counts as two letters and
    each two of them, or one left over, as a word ("没到账", "not credited", tells as much as "gems
    gone"); a Thai, Lao, Khmer or Myanmar letter as one, and each four of them, or fewer left over,
    as a word."""
    words = letters = 0
    for run in _word_runs(unicodedata.normalize("NFD", text)):
        ideographs = together = spaced = syllables = 0
        for c in run:
            kind = unicodedata.category(c)
            if (kind[0] not in "LN" and "VOWEL SIGN" not in unicodedata.name(c, "")) or c in _FILLERS:
                continue  # a mark (an accent, a virama, a vowel above a Thai letter), a joiner, a filler
            if _within(c, _IDEOGRAPHIC):
                ideographs += 1
            elif _within(c, _RUN_TOGETHER):
                together += 1
            else:
                spaced += 1
                syllables += _within(c, _HANGUL_SYLLABLE_STARTS)
        words += -(-ideographs // 2) - (-together // _LETTERS_PER_WORD)
        words += max(1, -(-syllables // _SYLLABLES_PER_WORD)) if spaced else 0
        letters += 2 * ideographs + together + spaced
    return words < MIN_DESCRIPTION_WORDS or letters < MIN_DESCRIPTION_LETTERS


# Dashes a phone keyboard or a copy from a web page puts where a key's hyphen goes: the
# hyphen, non-breaking hyphen, figure dash, en and em dash, horizontal bar, minus sign, and the
# long-vowel mark a Japanese keyboard types for "-" while it writes kana.
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc", "-"))


def typed_key(text: str) -> str:
    """A ticket key as a player typed it, in the form keys have: "grv-12" is GRV-12, and so is
    "ＧＲＶ－１２", as a Japanese, Chinese or Korean keyboard types it in full width. Characters
    that draw nothing are left out: a key copied from Arabic or Hebrew text brings direction
    marks or isolates with it, and the refusal, which shows the key without them, named a key
    that looked right. Digits of any script are the key's digits: an Arabic or Persian keyboard
    types "GRV-١٢" or "GRV-۱۲", which NFKC leaves as they are."""
    shown = unicodedata.normalize("NFKC", text).translate(_DASHES)
    kept = (c if (digit := unicodedata.decimal(c, None)) is None else str(digit) for c in shown)
    return "".join(c for c in kept if unicodedata.category(c) != "Cf").strip().upper()


def clipped(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: cluster_start(text, limit)] + "…"


_ZWJ = "\u200d"


def _extends(c: str) -> bool:
    """A character drawn as part of the one before it: a combining mark, a zero-width joiner, a
    variation selector, an emoji's skin tone, a tag of a subdivision flag, or the vowel or final
    consonant of a Hangul syllable sent decomposed (as macOS and iOS may)."""
    point = ord(c)
    return (
        unicodedata.category(c) in ("Mn", "Me", "Mc")
        or c == _ZWJ
        or 0x1160 <= point <= 0x11FF
        or 0xD7B0 <= point <= 0xD7FF
        or 0xFE00 <= point <= 0xFE0F
        or 0x1F3FB <= point <= 0x1F3FF
        or 0xE0020 <= point <= 0xE007F
        or 0xE0100 <= point <= 0xE01EF
    )


def _conjunct(text: str, at: int) -> bool:
    """Whether a letter at `at` joins the one before a virama: Hindi's "क्ष" is drawn as one
    character, and cut after its virama it reads as another word's "क्"."""
    return unicodedata.combining(text[at - 1]) == 9 and text[at].isalpha()


def _regional(c: str) -> bool:
    return 0x1F1E6 <= ord(c) <= 0x1F1FF


def cluster_start(text: str, at: int) -> int:
    """`at`, or the nearest place before it where a character a reader sees as one starts: a
    cut there leaves no accent without its letter, no half of a flag (two regional letters) and
    no piece of an emoji joined from several ("👨‍👩‍👧"). `at` itself when no such place is
    before it (a single cluster longer than the cut), and 0 for a cut before the start: as a
    slice's end, a negative one would keep all but the last characters."""
    if at <= 0:
        return 0
    cut = at
    while 0 < cut < len(text) and (_extends(text[cut]) or text[cut - 1] == _ZWJ or _conjunct(text, cut)):
        cut -= 1
    if 0 < cut < len(text) and _regional(text[cut]):
        before = cut
        while before > 0 and _regional(text[before - 1]):
            before -= 1
        cut -= (cut - before) % 2
    return cut if cut > 0 else at


def invalid_arguments(arguments: JSON, schema: JSON) -> str | None:
    """What is wrong with the model's arguments for a tool's schema, for the model to read; None
    when nothing is."""
    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError as exc:
        # jsonschema quotes the whole offending value (a megabyte of query, say)
        shown = repr(exc.instance)
        message = exc.message.replace(shown, clipped(shown))
        return clipped(message, MAX_ERROR_CHARS)
    # minLength counts spaces: a description of nothing else would file an empty ticket
    for name, spec in schema.get("properties", {}).items():
        value = arguments.get(name)
        if spec.get("minLength") and isinstance(value, str) and blank(value):
            return f"{name!r} is blank"
    return None


def _argument_problem(arguments: Any, schema: JSON, nested: bool) -> str | None:
    if nested:
        return f"nested more than {MAX_NESTING} deep"
    if isinstance(arguments, dict) and set(arguments) == {UNPARSED}:
        return "not valid JSON"
    return invalid_arguments(arguments, schema)


class Toolbox:
    """Validates the model's arguments against each tool's schema and runs the handler.

    A failing tool becomes a result the model can talk about ({"error": ...}), never an
    exception that would lose the player's turn.
    """

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = {t.name: t for t in tools}

    @property
    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def specs(self) -> list[JSON]:
        return [t.spec() for t in self._tools.values()]

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    async def run(self, ctx: ToolContext, call: ToolCall) -> ToolResult:
        started = time.perf_counter()
        tool = self._tools.get(call.name)
        nested = too_deep(call.arguments)
        arguments = {} if nested else well_formed(call.arguments)
        ok = False
        if tool is None:
            log.warning(
                "the model called a tool that does not exist (%r) for %s",
                clipped(call.name),
                ctx.who,
            )
            result: JSON = {"error": f"There is no tool called {clipped(call.name)}."}
        elif problem := _argument_problem(arguments, tool.parameters, nested):
            # What is wrong may quote the player's words: only at DEBUG, as one line.
            log.warning("the model called %s with invalid arguments for %s", call.name, ctx.who)
            log.debug("invalid arguments for %s: %r", call.name, problem)
            result = {"error": f"Invalid arguments for {call.name}: {problem}"}
        else:
            try:
                result = await tool.handler(ctx, arguments)
                ok = True
            except ToolError as exc:
                # The player's sentence (a service down, too many filings): the backend logged
                # why at WARNING or ERROR, once; this ties it to the note.
                log.info("tool %s failed for %s: %s", call.name, ctx.who, exc)
                result = {"error": str(exc)}
            except Exception:
                log.exception("tool %s crashed for %s", call.name, ctx.who)
                # Heard by the player as it stands (the offline engine reads it out): no tool name.
                result = {"error": say.TOOL_BROKEN}
        elapsed = (time.perf_counter() - started) * 1000
        if nested:  # kept in the history without them: it could not be stored nor sent again
            call = ToolCall(id=call.id, name=call.name, arguments={})
        return ToolResult(call=call, result=result, ok=ok, elapsed_ms=elapsed)

    async def run_all(self, ctx: ToolContext, calls: list[ToolCall]) -> list[ToolResult]:
        """Several calls of one round run concurrently; results keep the calls' order. Calls past
        MAX_CALLS_PER_ROUND are not run: each gets an error result, so every call is answered."""
        ran = list(await asyncio.gather(*(self.run(ctx, c) for c in calls[:MAX_CALLS_PER_ROUND])))
        if len(calls) > MAX_CALLS_PER_ROUND:
            log.warning(
                "%d tool calls in one round for user %s: ran the first %d",
                len(calls),
                ctx.user_id,
                MAX_CALLS_PER_ROUND,
            )
        refused = {"error": say.TOO_MANY_CALLS.format(count=MAX_CALLS_PER_ROUND)}
        return ran + [
            ToolResult(call=c, result=refused, ok=False, elapsed_ms=0.0) for c in calls[MAX_CALLS_PER_ROUND:]
        ]
