"""Posting the agent's answer: a native voice message, the transcript, or a file reply."""

from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import discord
from discord.http import Route

from bot import addresses
from bot import sentences as say
from bot.addresses import Addresses
from bot.audio import ReplyAudio
from bot.speech.speakable import without_overrides
from bot.tools import SENTENCE_END, cluster_start

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000  # characters a bot may put in one message
VOICE_MESSAGE_FLAG = discord.MessageFlags.voice.flag  # 8192
VOICE_FILENAME = "voice-message.ogg"
FILE_FILENAME = "reply.ogg"
NO_PINGS = {"parse": [], "replied_user": False}  # the model's words must not ping anyone, nor the note
Upload = tuple[str, bytes]  # filename, Ogg/Opus bytes
# Discord's answers that mean "no voice messages here": fall back to a file reply.
MISSING_PERMISSIONS = 50013
# Discord's refusal of a reply where the bot lacks Read Message History: its own code, not 50013.
REPLY_WITHOUT_HISTORY = 160002
VOICE_REFUSED_CODES = {50173, MISSING_PERMISSIONS}  # cannot send voice messages in this channel
TOO_LARGE = 413  # "Request entity too large" (40005): the audio is over the channel's upload limit
# Discord's limit on the DMs a bot opens (403, "You are opening direct messages too fast"): a burst
# of ticket news meets it, and it passes.
DMS_TOO_FAST = 40003
# Discord's upload limit where nothing raises it: a guild below boost level 2, and a DM, whose
# limit is the sender's (a bot has no Nitro). discord.py's own default for Guild.filesize_limit.
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
# Shorter than this a reply has no words to hear (a voice spoke only punctuation): its text goes
# out alone, and Discord is not asked to take an empty voice message, which it refuses.
MIN_VOICE_SECONDS = 0.1


# An address as Discord finds one in text (discord.utils' own pattern for it): its characters are
# never escaped, since a backslash in one would change where it goes. As a regular expression
# it takes time quadratic in a text's length (see bot.addresses): only `literal` uses it so, on a
# line of a ticket or a name, as discord.utils.escape_markdown does before it.
_LINK = addresses.PATTERN
# A masked link needs both brackets; with the backslash escaped too, none can be made. Within an
# address Discord reads no masked link, so the brackets there can stay.
_MARK_OR_ADDRESS = re.compile(r"[\\\[\]]|<|https?://|steam://")
# What a link's run may hold after its address: what cannot end one (bot.addresses).
_AFTER_LINK = re.compile(r"[.,:;\"'\]]*")
# Code, inline or a block, as Discord finds it: its text is shown as it is, marks and all.
_CODE = re.compile(r"```[\s\S]*?```|``[\s\S]+?``|`[^`]+`")
# What discord.utils.escape_markdown and escape_mentions leave working in words someone else
# wrote, escaped here with a backslash (Discord reads one before any punctuation mark as the mark
# itself). escape_markdown escapes the "[" of the first masked link on a line only (its pattern
# runs to the last ")"), so every "[" not yet escaped is: no link opens without one. Neither
# touches the tags of channels, custom emoji, timestamps and slash commands ("<#id>",
# "<:name:id>", "<t:0:R>", "</cmd:id>"), so every "<" is; nor an ordered list ("1. "). Links are
# kept as written, with escape_markdown's own pattern for them: a backslash in one would change
# where it goes. A link runs on to the next space or "<", and takes in a backslash before a "<"
# as its own: the tag after it would be read. A zero-width space after that "<" keeps it apart,
# for a link as written and for one an escape made longer ("(https://x.example)]" + "\\<").
_LEFT_BY_LIBRARY = re.compile(
    rf"(?P<link>{_LINK})(?P<tag><?)"
    r"|(?<!\\)(?P<escaped>(?:\\\\)*)(?P<mark>[\[<])"
    r"|^(?P<number>\d+)(?P<dot>[.)])(?=\s)"
)
_TAG_AFTER_LINK = re.compile(rf"(?P<link>{_LINK})<(?!\u200b)")
# What ends the run of characters a link takes in ("https?://[^\s<]+"), and an escaped "<" that
# does in a name's `literal` after the characters a link may take in but not end with.
_RUN_STOP = re.compile(r"[\s<]")
_STOP_ESCAPED = re.compile(r"^([^\s<\\]*)\\<")
_ADDRESS_START = re.compile(r"<|https?://|steam://")


def _escape_left(found: re.Match[str]) -> str:
    if found["link"]:
        return found["link"] + ("<\u200b" if found["tag"] else "")
    if found["mark"]:
        return f"{found['escaped']}\\{found['mark']}"
    return f"{found['number']}\\{found['dot']}"


def literal(text: str) -> str:
    """Words a player typed or someone wrote in Jira, as one line that shows exactly as written: a
    new line cannot end a quote or start a heading, `[x](https://...)` shows its address, and
    no mention, emoji, timestamp or list is made of it, nor does a direction override turn the
    rest of the line around."""
    one_line = " ".join(without_overrides(text).split())
    escaped = discord.utils.escape_mentions(discord.utils.escape_markdown(one_line))
    escaped = _LEFT_BY_LIBRARY.sub(_escape_left, escaped)
    return _TAG_AFTER_LINK.sub(lambda found: f"{found['link']}<\u200b", escaped)


def without_masked_links(text: str) -> str:
    """A reply's words with every other mark as it was, but no masked link: a link whose words
    hide where it goes would be the bot vouching for an address nobody checked (what a player
    asked the model to repeat, or a manual's text)."""
    found = Addresses(text)
    pieces: list[str] = []
    at = seek = 0
    while mark := _MARK_OR_ADDRESS.search(text, seek):
        start = mark.start()
        if text[start] in "\\[]":
            pieces += [text[at:start], "\\"]
            at, seek = start, start + 1
        else:
            end = found.end(start)
            if end > 0 and text[start] != "<":
                # A "]" in the run the link takes in but cannot end with stays: escaped, the
                # backslash would end the link. It closes no masked link, nothing after it being "(".
                end = _AFTER_LINK.match(text, end).end()
            seek = end if end > 0 else start + 1
    return "".join(pieces) + text[at:]


def as_posted(text: str, names: Iterable[str] = ()) -> str:
    """A reply's words as posted: `without_masked_links`, but each of `names` (a player's name as
    the game holds it, put into the words as it is) `literal`, or a name such as "# Big" or
    "**x**" would make the line a heading or bold. Not within an address, which stays as written
    (a backslash in one would change where it goes), nor in code, where Discord reads no mark and
    would show the backslashes."""
    shown = sorted({name for name in names if name.strip()}, key=len, reverse=True)
    if not shown:
        return without_masked_links(text)
    # One pass from the start, as Discord reads: what begins first holds what follows it, so a
    # backtick in an escaped name or in an address opens no code, and code found on the text as
    # a whole (from such a backtick) would hide a later name. At one place an address comes
    # first, then a name: code that starts with a name holding backticks is that name, escaped.
    links = Addresses(text)
    name = re.compile("|".join(map(re.escape, shown)))
    starts = re.compile(f"{name.pattern}|<|https?://|steam://|`")
    pieces: list[str] = []
    at = seek = 0
    run_from = -1  # where the last address not in angle brackets ends
    in_run = False
    while found := starts.search(text, seek):
        start = found.start()
        end = links.end(start) if text[start] in "<hs" else -1
        if end > 0 and text[start] != "<":
            run_from = end
        if end < 0 and (named := name.match(text, start)):
            if run_from >= 0:  # read on from the last name, in linear time
                run_from = -1 if _RUN_STOP.search(text, run_from, start) else start
            # An address that starts within the name (one ending in "h" before "ttps://") is
            # Discord's from there: the name is shown up to it, the address as written.
            cut = _address_within(links, text, start, named.end())
            shown_name = _as_name(text[start:cut])
            if run_from >= 0:
                # Discord's link runs on to the name's "<": the backslash before it would be the
                # address's last character ("https://x.example\"), so a zero-width space after
                # the "<" keeps the tag apart, as `literal` does after a link.
                shown_name = _STOP_ESCAPED.sub("\\g<1><\u200b", shown_name, count=1)
            pieces += [_text_after(text[at:start], in_run), shown_name]
            # A name a link's run holds ("." after "https://x.example") leaves the run open.
            in_run = run_from >= 0 and not _RUN_STOP.search(text, start, cut)
            at = end = cut
        elif end < 0:
            code = _CODE.match(text, start) if text[start] == "`" else None
            end = code.end() if code else start + 1
        seek = end
    return "".join(pieces) + _text_after(text[at:], in_run)


def _text_after(text: str, in_run: bool) -> str:
    """`without_masked_links`, for text after a name; `in_run`: that name was in a link's run,
    whose characters that cannot end a link stay as `without_masked_links` leaves them after one."""
    kept = _AFTER_LINK.match(text).end() if in_run else 0
    return text[:kept] + without_masked_links(text[kept:])


def _address_within(links: Addresses, text: str, start: int, stop: int) -> int:
    """Where the first address of `links` after `start` and before `stop` starts; `stop` if none."""
    at = start + 1
    while (inner := _ADDRESS_START.search(text, at, stop + len("https://"))) and inner.start() < stop:
        if links.end(inner.start()) > 0:
            return inner.start()
        at = inner.start() + 1
    return stop


def _as_name(word: str) -> str:
    """`literal`, with the spaces around `word` kept: `literal` drops them, and a name held as
    "Bob " would run into the word after it."""
    if not word.strip():
        return word
    return word[: len(word) - len(word.lstrip())] + literal(word) + word[len(word.rstrip()) :]


def _as_text(address: str) -> str:
    """Part of an address cut in two, which Discord reads as text: its backslashes and brackets
    escaped, so that neither a bracket nor one the address had escaped opens a masked link, and
    a zero-width space after each "<", so that no tag is read either."""
    return re.sub(r"[\\\[\]]", r"\\\g<0>", address).replace("<", "<\u200b")


def _hard_cut(text: str, limit: int, as_text: int) -> tuple[int, str, int]:
    """Where to cut `text` with no break near `limit`, the text then, and how much of its
    beginning is an address made text (`as_text`, given for what is left of one: it may still read
    as an address, and made text again its "<" and escapes would double at each piece). Each
    piece is read by
    Discord on its own, so the cut falls neither inside an address (whose tail would be none, and
    whose brackets, kept as written, would open a masked link) nor between a backslash and the
    mark it escapes, nor inside a character drawn from several (a flag, an accented letter, an
    emoji joined from others). An address longer than a piece is cut, what is past the cut read
    as text; and what is before it too for one in angle brackets, which is none without its
    ">"."""
    cut = cluster_start(text, limit)
    for begin, end in Addresses(text):
        if begin >= cut:
            break
        if begin < as_text:
            continue
        if end > cut:
            if begin > 0:
                cut = begin
            else:
                start = 0 if text.startswith("<") else cut
                made = _as_text(text[start:end])
                text, as_text = text[:start] + made + text[end:], start + len(made)
                cut = cluster_start(text, limit)
            break
    backslashes = len(text[:cut]) - len(text[:cut].rstrip("\\"))
    if backslashes % 2 and cut > backslashes:
        cut -= 1  # the mark goes with its backslash
    return cut, text, as_text


# A code block's fences, and any escaped character, which opens none (escape_markdown's "\`\`\`"):
# an opening fence's language tag is Discord's, up to the end of its line.
_FENCE = re.compile(r"\\.|```(?P<tag>[a-z0-9_+\-.#]{1,20}(?=\n))?", re.IGNORECASE | re.DOTALL)
_CLOSE_FENCE = "\n```"


def _open_block(text: str) -> str | None:
    """The language tag ("" for none) of a code block `text` leaves open; None if it leaves none."""
    tag = None
    for found in _FENCE.finditer(text):
        if not found[0].startswith("\\"):
            tag = (found["tag"] or "") if tag is None else None
    return tag


# A run of backticks, or an escaped character (an escaped backtick opens no inline code).
_TICKS = re.compile(r"\\.|`+", re.DOTALL)


def _inline_code(text: str) -> list[tuple[int, int, int]]:
    """Discord's inline code spans in `text`, outside code blocks: (start, end, backticks). One
    runs from a run of one or two backticks to the next run of as many, across lines too; within
    it a backslash is its own character, and a run of three or more is a code block's fence."""
    spans: list[tuple[int, int, int]] = []
    pos = 0
    while (found := _TICKS.search(text, pos)) is not None:
        run, pos = found[0], found.end()
        if run.startswith("\\"):
            continue
        if len(run) >= 3:
            closing = text.find("```", pos)
            if closing < 0:
                break
            pos = closing + 3
            continue
        closing = re.compile(f"(?<!`){run}(?!`)").search(text, pos)
        if closing is not None:
            spans.append((found.start(), closing.end(), len(run)))
            pos = closing.end()
    return spans


def _cut_code(spans: list[tuple[int, int, int]], cut: int) -> int:
    """The backticks of the inline code span a cut at `cut` falls within, its opening backticks
    before the cut; 0 for none. A cut just after them holds none of its code: cut again that
    many characters sooner, it falls before them."""
    return next((ticks for start, end, ticks in spans if start < cut < end), 0)


def _code_at(spans: list[tuple[int, int, int]], cut: int) -> tuple[int, int, int] | None:
    """The inline code span a cut at `cut` falls within, some of its code before the cut."""
    return next((span for span in spans if span[0] + span[2] < cut < span[1]), None)


def _off_code_marks(text: str, spans: list[tuple[int, int, int]], cut: int) -> int:
    """Where a cut at `cut` goes instead when it falls in an inline code span with none of its code
    but blanks before it (within or right after its opening backticks): before the span, which
    goes whole to the next piece; closed and opened again there, the piece would end in empty
    code, which Discord shows as its backticks. One within its closing backticks goes before them.
    `cut` itself where it falls in no span, or the span starts the text."""
    for start, end, ticks in spans:
        if start < cut < end:
            if start > 0 and not text[start + ticks : cut].strip():
                return start
            return min(cut, end - ticks)
    return cut


def _break(text: str, limit: int, as_text: int, code: bool = False) -> tuple[int, str, int]:
    """Where to cut `text` into a piece of at most `limit` characters, the text then and how much
    of it is an address made text (see `_hard_cut`). In `code`, at a line's end only: a line cut
    at a space would go on as another. Else not within inline code if a break outside one is near
    the end: its code, cut, is a closing mark in one piece and an opening one in the next."""
    window = text[:limit]
    if code:
        cut = window.rfind("\n")
    else:
        ended = (e for found in SENTENCE_END.finditer(text, 0, limit + 1) if (e := found.end()) <= limit)
        breaks = [*(i for i, c in enumerate(window) if c in " \n"), *ended]
        spans = _inline_code(text)
        cut = max((b for b in breaks if not any(s < b < e for s, e, _ in spans)), default=-1)
        if cut < limit // 2:
            # Code longer than half a piece: cut within it, after some of its code. A cut just
            # after its opening backticks (code that starts with a space) has none before it to
            # close, and would leave them alone at the piece's end, the closing ones unpaired.
            cut = max((b for b in breaks if not any(s < b <= s + t for s, _, t in spans)), default=-1)
    if cut < limit // 2:  # no good break near the end: cut hard rather than make tiny pieces
        return _hard_cut(text, limit, as_text)
    return cut, text, as_text


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at a paragraph, line, word or sentence break
    when possible. Each message is read on its own: a code block cut in two is closed at the end
    of one piece and opened again, with its language, at the start of the next; else the first
    showed the code as a block to its end and the second the rest as text, then opened a block
    at the fence that closed it. Inline code is cut only when longer than half a piece, and then
    closed and opened again the same way, never so that a piece holds only blanks of it (or
    none, cut right after its opening backticks): it would show as stray backticks. A limit too
    small for these rules (a few characters, where a block's fences fill a piece) is cut hard."""
    if limit < 1:
        raise ValueError(f"a piece holds at least one character, not {limit}")
    text = text.strip()
    pieces: list[str] = []
    # The length of the fence a piece was given to open its block again: a cut within it would
    # give the next piece the same fence and the same text again, for ever.
    reopened = as_text = 0
    while len(text) > limit:
        cut, cut_text, made = _break(text, limit, as_text)
        if _open_block(cut_text[:cut]) is not None:
            cut, cut_text, made = _break(text, limit - len(_CLOSE_FENCE), as_text, code=True)
        elif ticks := _cut_code(_inline_code(cut_text), cut):
            cut, cut_text, made = _break(text, limit - ticks, as_text)
        text = cut_text
        cut = _off_code_marks(text, _inline_code(text), cut)
        tag = _open_block(text[:cut]) if cut > reopened else None
        piece, rest = text[:cut].rstrip(), text[cut:]
        if tag is None:
            rest, reopened = rest.lstrip(), 0
            if (span := _code_at(_inline_code(text), cut)) is not None:
                # Inline code cut in two is closed and opened again, as a code block is: else
                # each piece shows a stray backtick, and the next one pairs with a later one.
                _, end, ticks = span
                piece += "`" * ticks
                if text[cut : end - ticks].strip():
                    rest, reopened = "`" * ticks + rest, ticks
                else:  # only blanks of it left: opened again, it would be empty code
                    rest = text[end:].lstrip()
        else:
            # A code line keeps its indentation: only the break cut at goes.
            rest = rest[1:] if rest[:1] in ("\n", " ") else rest
            piece += _CLOSE_FENCE
            rest, reopened = f"```{tag}\n{rest}", len(tag) + 4
        if not piece or len(piece) > limit or len(rest) >= len(text):
            # A limit too small for the rules of code (a block's closing fence alone fills a
            # piece) leaves no room to cut within: the cut sends nothing, or less than the fence
            # that opens the block again, and the same text comes round for ever; or, sought
            # within a negative room, it falls from the end. Cut hard at the limit there, rules
            # or not: every step then leaves less text (only an address made text grows it, once
            # each: as_text) and no piece is past the limit.
            cut, text, made = _hard_cut(text, limit, made)
            cut = cut or limit  # a first character drawn from more than `limit`
            piece, rest, reopened = text[:cut].rstrip(), text[cut:].lstrip(), 0
        pieces.append(piece)
        as_text = max(0, made - (len(text) - len(rest) + reopened)) + reopened
        text = rest
    if text:
        pieces.append(text)
    return pieces


def _permissions(message: discord.Message) -> discord.Permissions | None:
    """The bot's permissions where `message` was posted, as discord.py keeps them from the
    gateway; None in a DM, where there are none to lack."""
    channel = message.channel
    guild = message.guild
    if guild is None or not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return None
    return channel.permissions_for(guild.me)


def timed_out_until(guild: discord.Guild | None) -> datetime.datetime | None:
    """When the bot's timeout in `guild` ends, if a moderator timed it out (discord.py keeps it
    from the bot's GUILD_MEMBER_UPDATE); None when it is not, or in a DM."""
    me = guild.me if guild is not None else None
    if me is None or not me.is_timed_out():
        return None
    return me.timed_out_until


def may_read_history(channel: object) -> bool:
    """False when discord.py knows the bot may not read `channel`'s history: a guild channel where
    it lacks Read Message History, or View Channel, without which discord.py grants it nothing."""
    if not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return True
    return channel.permissions_for(channel.guild.me).read_message_history


def voice_message_allowed(message: discord.Message) -> bool:
    """False when the bot knows it lacks the Send Voice Messages permission where it would reply."""
    perms = _permissions(message)
    return perms is None or perms.send_voice_messages


def may_send(message: discord.Message) -> bool:
    """False when the bot knows it may post nothing where `message` was posted."""
    perms = _permissions(message)
    if perms is None:
        return True
    in_thread = isinstance(message.channel, discord.Thread)
    return perms.send_messages_in_threads if in_thread else perms.send_messages


def may_link(message: discord.Message) -> bool:
    """Whether a reply may point at `message`: Discord refuses a reply (403 160002) where the bot
    lacks Read Message History, and a reaction too (403 50013)."""
    perms = _permissions(message)
    return perms is None or perms.read_message_history


def may_react(message: discord.Message) -> bool:
    """Whether the bot may put its own reaction on `message` (and so have one to take off)."""
    perms = _permissions(message)
    return perms is None or (perms.read_message_history and perms.add_reactions)


def upload_limit(guild: discord.Guild | None) -> int:
    """The largest upload Discord takes in `guild`, by the boost level discord.py keeps from the
    gateway; in a DM (None), the default."""
    limit = getattr(guild, "filesize_limit", None)
    return limit if isinstance(limit, int) else DEFAULT_UPLOAD_LIMIT


def may_attach(message: discord.Message) -> bool:
    perms = _permissions(message)
    return perms is None or perms.attach_files


def reply_reference(message: discord.Message) -> discord.MessageReference:
    """A reference to the note that lets the reply stand alone if the player deleted the note
    meanwhile: by default Discord refuses a reply to a gone message (REPLIES_UNKNOWN_MESSAGE),
    and the player would get no answer at all."""
    return message.to_reference(fail_if_not_exists=False)


class Withdrawn(Exception):
    """The player deleted the note while its answer was going out: the parts not posted yet are
    not posted (see `send_answer`'s `stop`)."""


class NoteGone(Withdrawn):
    """Discord posted a part sent as a reply to the note as a message of its own: the note was
    gone, though the bot heard no deletion (one in a gateway session lost without a RESUME, whose
    events nobody is sent again)."""


def _go_on(stop: Callable[[], bool] | None) -> None:
    if stop is not None and stop():
        raise Withdrawn


async def _taken_back(
    message: discord.Message,
    kind: str,
    stop: Callable[[], bool] | None,
    delete: Callable[[], Awaitable[None]],
    alone: bool,
) -> None:
    """After a part of the note's answer is posted: if the player deleted the note while its POST
    was under way, the part is deleted too and Withdrawn raised. It went up as the player took the
    question back, and would stand alone saying in the channel what they withdrew; they cannot
    have heard it first. Kept when Discord refuses its deletion, or the connection breaks under
    it: it is out, or may be, and answers the note. `alone`: sent as a reply, it came back as a
    message of its own (see `reply_reference`): the note may be gone, its deletion unheard, and
    is fetched to know (the message may be one an earlier POST of the part made, unlinked, which
    Discord returns for its nonce); gone, the part is deleted and NoteGone raised. `stop` None: a
    line not about the note, which stands alone as well."""
    if stop is None:
        return
    withdrawn = stop()
    if not withdrawn and not (alone and await _gone(message)):
        return
    try:
        await delete()
    except discord.NotFound:
        pass  # gone already (a moderator's doing)
    except (discord.HTTPException, aiohttp.ClientError, ConnectionError) as exc:
        log.warning(
            "could not delete the %s posted for note %s as its player deleted the note: %s",
            kind,
            message.id,
            exc,
        )
        return
    if not withdrawn:
        log.info("note %s was deleted unheard: its answer's %s, posted alone, deleted too", message.id, kind)
        raise NoteGone
    log.info("note %s deleted while its answer's %s was being posted: that deleted too", message.id, kind)
    raise Withdrawn


async def _gone(message: discord.Message) -> bool:
    """Whether Discord says the note is deleted (404 to its fetch). Any other failure says nothing:
    what is posted stays, as an answer."""
    try:
        await message.channel.fetch_message(message.id)
    except discord.NotFound:
        return True
    except (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, ConnectionError) as exc:
        log.info("note %s: could not fetch it to see whether it is gone: %r", message.id, exc)
    return False


def _alone(linked: bool, made: dict[str, Any] | discord.Message) -> bool:
    """Whether a part sent as a reply (`linked`) came back as a message of its own."""
    if isinstance(made, discord.Message):
        return linked and made.reference is None
    return linked and not made.get("message_reference")


def discords_trouble(exc: BaseException) -> bool:
    """A failure on Discord's side, which passes: a 5xx once discord.py's retries are spent, a 429
    discord.py does not wait out (Cloudflare's ban of the bot's address after too many refused
    requests, an HTML page without `Via`), a 403 from Cloudflare's firewall rather than the API
    (an HTML page, not Discord's JSON error with its `code`), or a rate limit longer than
    `rate_limit_seconds` (discord.RateLimited), or Discord's limit on opening DMs (403 40003, no 429
    that discord.py would wait out). Not a refusal of this bot (403 Missing
    Access, 404 Unknown Channel) that trying again would meet."""
    if isinstance(exc, discord.RateLimited):
        return True
    if not isinstance(exc, discord.HTTPException):
        return False
    if exc.status == 403 and (exc.code == DMS_TOO_FAST or from_the_edge(exc)):
        return True
    return exc.status >= 500 or exc.status == 429


def from_the_edge(exc: discord.HTTPException) -> bool:
    """Whether Discord's edge (Cloudflare) answered, not its API: discord.py reads the body as
    Discord's error only when it is JSON, and every error of the API's carries a `code`."""
    headers = getattr(exc.response, "headers", None)
    if headers is None:
        return exc.code == 0
    return headers.get("Content-Type", "").partition(";")[0].strip() != "application/json"


def limited_for(exc: discord.RateLimited) -> str:
    """A rate limit discord.py did not wait out, as the log says it."""
    return f"rate limited for {exc.retry_after:.0f} s"


def _refused_for_permissions(exc: discord.HTTPException) -> bool:
    return exc.status == 403 and exc.code == MISSING_PERMISSIONS


def _link_refused(exc: discord.HTTPException) -> bool:
    """Whether Discord refused a reply for its link: Read Message History missing (160002), or
    another permission (50013) that a plain message may not need."""
    return exc.status == 403 and exc.code in (MISSING_PERMISSIONS, REPLY_WITHOUT_HISTORY)


async def _linked_if_allowed(message: discord.Message, send: Callable[[bool], Awaitable[None]]) -> None:
    """`send(linked)` as a reply where the bot may reply, else as a plain message. A reply Discord
    refuses for missing permissions though discord.py thought them granted (an update it has not
    had yet) goes out once more without the link."""
    linked = may_link(message)
    try:
        await send(linked)
    except discord.HTTPException as exc:
        if not linked or not _link_refused(exc):
            raise
        log.info("reply to note %s refused (%s): posting it without the link", message.id, exc.code)
        await send(False)


def _pieces(message: discord.Message, text: str, linked: bool) -> list[str]:
    """`text` cut at Discord's limit; without a reply link the first piece names the player (the
    client's AllowedMentions.none() and NO_PINGS keep it from pinging them)."""
    if linked:
        return split_message(text)
    name = f"{message.author.mention} "
    pieces = split_message(text, MESSAGE_LIMIT - len(name))
    return [name + pieces[0], *pieces[1:]] if pieces else [name.strip()]


async def post_reply(
    client: discord.Client,
    message: discord.Message,
    payload: dict[str, Any],
    upload: Upload | None = None,
    linked: bool = True,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Post one reply to `message` with at most one audio upload; `linked` False: a plain message;
    returns the message posted.
    With a `nonce`, Discord returns the message an earlier POST with it made, if any, rather than
    make a second (discord.py's own sends set a random one, this route none).

    discord.py 2.7 can neither send voice messages nor say what type an upload is (discord.File
    goes out as application/octet-stream), so these requests go through the client's own HTTP
    layer (its session, rate limiting and retries) with a raw route and a multipart form.
    Raises discord.HTTPException as any other send would.
    """
    body = {**payload, "allowed_mentions": NO_PINGS}
    if nonce is not None:
        body |= {"nonce": nonce, "enforce_nonce": True}
    if linked:
        body["message_reference"] = reply_reference(message).to_dict()
    form: list[dict[str, Any]] = [{"name": "payload_json", "value": json.dumps(body)}]
    if upload is not None:
        filename, data = upload
        form.append({"name": "files[0]", "value": data, "filename": filename, "content_type": "audio/ogg"})
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=message.channel.id)
    return await client.http.request(route, form=form)


async def send_voice_message(
    client: discord.Client,
    message: discord.Message,
    reply: ReplyAudio,
    posted: set[str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Post `reply` as a native voice message answering `message`: flag 8192, no content, one
    Ogg/Opus attachment with `duration_secs` and `waveform`. `posted`, `stop`: see `send_answer`."""
    if posted is not None and "v" in posted:
        return
    _go_on(stop)
    attachment = {
        "id": "0",
        "filename": VOICE_FILENAME,
        "duration_secs": reply.duration_secs,
        "waveform": reply.waveform,
    }
    payload = {"flags": VOICE_MESSAGE_FLAG, "attachments": [attachment]}
    upload = (VOICE_FILENAME, reply.ogg)
    made: list[tuple[bool, dict[str, Any]]] = []

    async def send(linked: bool) -> None:
        made.append(
            (linked, await post_reply(client, message, payload, upload, linked, _nonce(message, "v")))
        )

    # Without the link it cannot name the player (a voice message has no text): its transcript does.
    await _linked_if_allowed(message, send)
    linked, voice = made[-1]
    await _taken_back(message, "voice message", stop, _deleting(client, voice), _alone(linked, voice))
    if posted is not None:
        posted.add("v")


# How long Discord is taken to keep a nonce: it checks one "for uniqueness in the past few
# minutes", how many unsaid; two, the fewest those words allow.
NONCE_SECONDS = 120.0


def _nonce(message: discord.Message, kind: str) -> str:
    """The same for every POST of one part of a note's answer (its voice message, its file, each
    piece of its text): Discord posts a message that its edge then answered 502 for (or whose
    connection broke), discord.py sends the POST again, and the note may be answered again after
    a Discord failure; Discord makes one message of them all, within the few minutes it keeps a
    nonce. 25 characters at most: a snowflake's 19 or 20 digits and `kind`'s few."""
    return f"{kind}{message.id}"


async def send_file(
    client: discord.Client,
    message: discord.Message,
    text: str,
    reply: ReplyAudio,
    out: Callable[[], None] = lambda: None,
    posted: set[str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """The spoken reply as an Ogg/Opus file where a voice message cannot go, with the first piece
    of `text`; the rest of `text` follows as plain messages, replies where allowed. `out` is
    called once the file is out, before the rest follows. `posted`, `stop`: see `send_answer`."""
    posted = set() if posted is None else posted

    async def send(linked: bool) -> None:
        first, *rest = _pieces(message, text, linked) or [""]
        payload: dict[str, Any] = {
            "attachments": [{"id": "0", "filename": FILE_FILENAME, "description": "spoken reply"}]
        }
        # The first piece went as text before (the upload failed, and the words went instead):
        # the file comes without it.
        words = bool(first) and "t0." not in posted
        if words:
            payload["content"] = first
        if "f" not in posted:
            _go_on(stop)
            upload = (FILE_FILENAME, reply.ogg)
            made = await post_reply(client, message, payload, upload, linked, _nonce(message, "f"))
            await _taken_back(message, "file", stop, _deleting(client, made), _alone(linked, made))
            posted.update({"f", "t0."} if words else {"f"})
        out()
        await _send_rest(message, rest, linked, answer=True, posted=posted, stop=stop)

    await _linked_if_allowed(message, send)


async def send_text(
    message: discord.Message,
    text: str,
    answer: bool = False,
    posted: set[str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Reply with `text` split at Discord's limit; where the bot may not reply, a plain message
    that names the player. `answer`: the note's answer, whose pieces are posted once however
    often they are sent (see _nonce); not a line that tells the player something else. `posted`,
    `stop`: see `send_answer`."""
    posted = set() if posted is None else posted

    async def send(linked: bool) -> None:
        pieces = _pieces(message, text, linked)
        if not pieces:
            return
        if not answer or "t0." not in posted:  # a refused first piece is sent again unlinked
            _go_on(stop)
            made = await _send_piece(message, pieces[0], linked, _nonce(message, "t0.") if answer else None)
            await _taken_back(message, "text", stop, made.delete, _alone(linked, made))
            posted.add("t0.")
        await _send_rest(message, pieces[1:], linked, answer, posted, stop)

    await _linked_if_allowed(message, send)


async def _send_rest(
    message: discord.Message,
    pieces: list[str],
    linked: bool,
    answer: bool = False,
    posted: set[str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """The pieces after the first. A link refused now (Read Message History taken away mid-send)
    sends the rest without it: sending the whole reply again would repeat what went out. `answer`:
    they are a note's answer, each piece with its nonce, those in `posted` left out."""
    posted = set() if posted is None else posted
    for index, piece in enumerate(pieces, start=1):
        kind = f"t{index}."
        if answer and kind in posted:
            continue
        _go_on(stop)
        nonce = _nonce(message, kind) if answer else None
        try:
            made = await _send_piece(message, piece, linked, nonce)
        except discord.HTTPException as exc:
            if not linked or not _link_refused(exc):
                raise
            log.info("reply to note %s refused (%s) mid-send: the rest goes unlinked", message.id, exc.code)
            linked = False
            made = await _send_piece(message, piece, linked, nonce)
        await _taken_back(message, "text", stop, made.delete, _alone(linked, made))
        posted.add(kind)


async def _send_piece(
    message: discord.Message, piece: str, linked: bool, nonce: str | None = None
) -> discord.Message:
    # The client's AllowedMentions.none() plus mention_author=False: the same NO_PINGS the raw
    # route sends, so no reply of any kind pings anyone. No nonce: discord.py sets a random one.
    if linked:
        reference = reply_reference(message)
        return await message.channel.send(
            content=piece, reference=reference, mention_author=False, nonce=nonce
        )
    return await message.channel.send(content=piece, nonce=nonce)


def _deleting(client: discord.Client, made: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    """The deletion of a message `post_reply` made."""
    return lambda: client.http.delete_message(made["channel_id"], made["id"])


def _upload_failed(message: discord.Message, exc: discord.HTTPException, what: str, words: bool) -> bool:
    """Whether Discord failed under an answer's upload (a 5xx its retries did not outlast, or a
    503, which discord.py does not retry), said in the log: the answer's words go as text
    instead, so the player has the answer that was made now. A text refused too is Discord
    failing for every post, and the note is answered again later, as is one with no words."""
    if exc.status < 500:
        return False
    log.warning(
        "Discord failed the %s answering note %s (HTTP %s, code %s): %s",
        what,
        message.id,
        exc.status,
        exc.code,
        "sending its words as text" if words else "it has no words to send instead",
    )
    return True


async def send_answer(
    client: discord.Client,
    message: discord.Message,
    text: str,
    audio: ReplyAudio | None,
    mode: str,
    answered: Callable[[], None] = lambda: None,
    names: Iterable[str] = (),
    posted: set[str] | None = None,
    stop: Callable[[], bool] | None = None,
) -> str:
    """Answer with the player's chosen style (voice_and_text | voice | file | text); returns how it
    went out: voice | file | text. A refused voice message falls back to the file style.
    `answered` is called once the voice message or file is out, before the rest of its words follow. `names`:
    the player names the words may hold, shown as written (see `as_posted`). `posted`: the parts
    of this answer Discord took when it was sent before (their nonces' kinds), not sent again,
    and where each part Discord takes now is added: an answer Discord failed part way through is
    sent again whole, and posts only the rest, even past the minutes Discord keeps a nonce.
    `stop`: asked before each part is posted; True (the player deleted the note) raises
    Withdrawn, what is out left as it is. Asked again once a part is posted: one whose POST was
    under way as the note was deleted is deleted too, as is one Discord posted alone, the note
    gone unheard (NoteGone; see `_taken_back`)."""
    posted = set() if posted is None else posted
    text = as_posted(text, names)
    words = bool(text.strip())
    # Where no words came, the audio is all the answer there is, whatever style was chosen.
    if (
        audio is None
        or (mode == "text" and words)
        or not audio.ogg
        or audio.duration_secs < MIN_VOICE_SECONDS
    ):
        # Nothing to hear and nothing to read would be a note marked answered with nothing sent.
        await send_text(message, text if words else say.OOPS, answer=True, posted=posted, stop=stop)
        return "text"
    # Discord would refuse an upload over the limit (413, 40005) as a voice message and as a
    # file alike: the text goes instead, below.
    too_large = audio.size > (limit := upload_limit(message.guild))
    failed: discord.HTTPException | None = None  # Discord's 5xx under the audio's upload
    if too_large:
        log.info(
            "reply to note %s: its audio (%d bytes) is over channel %s's upload limit (%d): sending the text",
            message.id,
            audio.size,
            message.channel.id,
            limit,
        )
    # A voice message carries no text: where it cannot be a reply, only the words posted after it
    # say whom it answers; without them, the file style's words name the player.
    if (
        not too_large
        and mode != "file"
        and voice_message_allowed(message)
        and (may_link(message) or (mode == "voice_and_text" and words))
    ):
        try:
            await send_voice_message(client, message, audio, posted, stop)
        except discord.HTTPException as exc:
            too_large = exc.status == TOO_LARGE
            failed = exc if _upload_failed(message, exc, "voice message", words) else None
            if exc.code not in VOICE_REFUSED_CODES and not too_large and failed is None:
                raise
            if failed is None:
                where, instead = message.channel.id, "the text" if too_large else "a file"
                log.info("voice message refused in channel %s (%s): sending %s", where, exc.code, instead)
        else:
            answered()
            if mode == "voice_and_text" and words:
                await send_text(message, text, answer=True, posted=posted, stop=stop)
            return "voice"
    # The same audio as a file would be over the limit too, or meet the same failing upload.
    if may_attach(message) and not too_large and failed is None:
        file_out = False

        def file_posted() -> None:
            nonlocal file_out
            file_out = True
            answered()

        try:
            await send_file(
                client, message, text if mode != "voice" else "", audio, file_posted, posted, stop
            )
        except discord.HTTPException as exc:
            if file_out:
                # The file went out with the first piece of the words: what failed is a piece
                # after it, and the words sent again as text would repeat what the player has.
                raise
            failed = exc if _upload_failed(message, exc, "file reply", words) else None
            too_large = exc.status == TOO_LARGE
            if failed is None and not _refused_for_permissions(exc) and not too_large:
                raise
            if failed is None:
                log.info(
                    "file reply refused in channel %s (%s): sending the text", message.channel.id, exc.code
                )
        else:
            return "file"
    if failed is not None and not words:
        # No words to send instead: the "try again" sentence would settle the note unanswered,
        # where the recheck answers it once Discord takes uploads again.
        raise failed
    # Where no audio can go, the words are all the answer there is, whatever style was chosen.
    # Without them, the player is told why: "something went wrong, try again" would have them
    # ask for an answer that goes out no better.
    unsent = say.SPOKEN_ANSWER_TOO_BIG if too_large else say.SPOKEN_ANSWER_NOT_ALLOWED
    await send_text(message, text if words else unsent, answer=True, posted=posted, stop=stop)
    return "text"
