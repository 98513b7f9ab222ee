"""The playground: record or upload a voice note as a demo (or configured test) player, hear the
reply, and see what was heard, the tools called and the timings. Same agent, same audio limits,
same friendly errors as Discord."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import BodyPartReader, web
from aiohttp_session import get_session

from bot import metrics
from bot import sentences as say
from bot.agent import HandedNote
from bot.app import App
from bot.audio import AudioError, too_big_message
from bot.bounded import remember
from bot.tools.base import ToolContext
from bot.usage import seconds_to_reset
from bot.web import UPLOAD_SLACK, Reused, WebState, byte_range, security
from bot.web import state as web_state

# The demo players of bot/data/sql/sqlite/seed.sql (a test checks the two agree).
DEMO_PLAYERS = (
    "111111111111111111",
    "222222222222222222",
    "333333333333333333",
    "444444444444444444",
    "555555555555555555",
    "666666666666666666",
    "777777777777777777",
    "888888888888888888",
    "999999999999999999",
    "101010101010101010",
    "121212121212121212",
    "131313131313131313",
)
MAX_REPLIES = 200  # reply audio kept in memory for the page to fetch, newest kept
# ... and their bytes together: a cloud engine's long answer is minutes of audio, megabytes of it.
# The newest reply is kept whatever its size (its visitor is about to play it), so memory holds
# at most this and one reply.
MAX_REPLY_BYTES = 64 * 1024 * 1024
CHUNK = 64 * 1024
# The player's part is read in chunks this small (aiohttp reads one more past it to find the part's
# end): a refused player costs no more of the upload than two of them. No smaller than any boundary
# a header line (8190 bytes at most) can carry, which aiohttp requires of a chunk.
PLAYER_CHUNK = 8 * 1024
# The ticket view needs no login, and on Jira each look-up is a search against the studio's quota:
# per client at most this many views in this many seconds, and a player's own tickets (the
# costly part) are looked up at most once in TICKETS_FRESH_SECONDS, however many ask.
TICKET_VIEWS, TICKET_VIEW_SECONDS = 20, 60.0
TICKETS_FRESH_SECONDS = 5.0
ALL = "all"  # the key of WebState.all_notes and WebState.all_complaints
DAY = 24 * 3600.0  # the window of the playground's complaint limits
VISITOR_PREFIX = "web:"  # of the owner a playground session's complaints are filed under
# Retry-After for a note refused because the playground's turns are all taken: about one note's time.
BUSY_SECONDS = 5
# Uploads read at once, every client's together, for each of web.playground_turns: each holds up to
# audio.max_bytes, and the per-client limit alone lets each of many addresses send several at once.
UPLOADS_PER_TURN = 4
# ... and so a few slow senders cannot hold them all: at most this many for one client, each read
# within this many seconds (8 MB on a 1 Mbit/s uplink takes about 64).
UPLOADS_PER_CLIENT = 2
UPLOAD_SECONDS = 120.0

log = logging.getLogger(__name__)


async def allowed_players(core: App, known: dict[str, str] | None = None) -> dict[str, str]:
    """Whom the playground may speak as. The demo players only on the embedded database: on a
    studio's real one those ids may be real people's, so there only configured test players.
    `known`: the names read before, kept for a player whose look-up fails now."""
    ids = list(core.settings.web.playground_players)
    if not ids and core.settings.tools.stats == "sqlite":
        ids = list(DEMO_PLAYERS)
    known = known or {}

    async def name_of(user_id: str) -> str:
        unnamed = f"player {user_id}"
        try:
            summary = await core.stats.player_summary(user_id)
        except Exception:
            return known.get(user_id, unnamed)
        return summary.player_name if summary is not None else unnamed

    # Together: with the database down each waits out the pool's deadline, and the web front end
    # starts only once they have.
    names = await asyncio.gather(*(name_of(user_id) for user_id in ids))
    return dict(zip(ids, names, strict=True))


# The names are read again, on a page view, at most this often: a test player linked in the
# database after the start, or one named while it was down, is offered by name, not as an id.
NAMES_SECONDS = 60.0


class PlayerNames:
    """The names of `players` (WebState.players, changed in place: its ids are the
    configuration's), read again in the background by a page view once NAMES_SECONDS have
    passed since the last read began; the page is served with the names it has."""

    def __init__(self, core: App, players: dict[str, str]) -> None:
        self._core = core
        self.players = players
        self.clock: Callable[[], float] = time.monotonic
        self.read_at = self.clock()
        self._reading: asyncio.Task[None] | None = None

    def refresh(self) -> None:
        if not self.players or self._reading is not None or self.clock() - self.read_at < NAMES_SECONDS:
            return
        self.read_at = self.clock()
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            self.players.update(await allowed_players(self._core, dict(self.players)))
        finally:
            self._reading = None

    async def settled(self) -> None:
        """Once the read under way, if any, has ended."""
        if (reading := self._reading) is not None:
            await asyncio.wait({reading})

    async def aclose(self) -> None:
        if (reading := self._reading) is not None:
            reading.cancel()
            await asyncio.wait({reading})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page, name="playground")
    app.router.add_post("/playground/ask", ask, name="ask")
    app.router.add_get("/playground/reply/{token}", reply_audio, name="reply_audio")
    app.router.add_get("/playground/tickets", tickets, name="tickets")


async def _owner(request: web.Request) -> str:
    """A random id for this browser's session: reply audio is served only to the session that
    asked for it, so one visitor cannot fetch another's answer by guessing."""
    session = await get_session(request)
    owner = session.get("owner")
    if not owner:
        owner = session["owner"] = secrets.token_urlsafe(16)
    return str(owner)


@aiohttp_jinja2.template("playground.html")
async def page(request: web.Request) -> dict[str, Any]:
    st = web_state(request)
    await _owner(request)
    st.player_names.refresh()
    limits = st.settings.audio
    return {
        "players": st.players,
        "max_mb": limits.max_bytes / 1e6,
        "max_seconds": limits.max_seconds,
        "engine": st.core.engine.name,
    }


def _unoffered(request: web.Request, chosen: str | None) -> tuple[str, int] | None:
    """Why the playground does not speak as `chosen` (words and status), or None if it does. As
    JSON, like every answer the page's script reads: it shows an answer's "error"."""
    players = web_state(request).players
    if not players:
        return "The playground is off: set web.playground_players to a test player.", 403
    if chosen not in players:
        return "Choose one of the playground's players.", 400
    return None


def _refused(message: str, status: int, reason: str, retry_after: float | None = None) -> web.Response:
    metrics.note("web", "refused", reason)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


async def ask(request: web.Request) -> web.Response:
    st = web_state(request)
    client = security.client_key(request, st.settings.web)
    wait = st.notes.retry_after(client)
    if wait:
        return _refused(say.TOO_FAST.format(wait=say.wait_of(wait)), 429, "flood", wait)
    owner = await _owner(request)
    limits = st.settings.audio
    if not st.players:
        return _refused(*_unoffered(request, None) or ("", 403), "bad_request")
    if request.content_type != "multipart/form-data":
        return _refused(say.BAD_UPLOAD, 400, "bad_request")
    # The whole body is held to what one note needs: parts are streamed, so aiohttp's
    # client_max_size alone would let a request of any size be read to its end.
    if (request.content_length or 0) > limits.max_bytes + UPLOAD_SLACK:
        return _refused(too_big_message(request.content_length or 0, limits), 413, "too_big")
    if st.playground_uploads >= st.settings.web.playground_turns * UPLOADS_PER_TURN:
        return _refused(say.PLAYGROUND_BUSY.format(wait=say.wait_of(BUSY_SECONDS)), 429, "busy", BUSY_SECONDS)
    if st.uploads_by_client.get(client, 0) >= UPLOADS_PER_CLIENT:
        return _refused(say.TOO_FAST.format(wait=say.wait_of(BUSY_SECONDS)), 429, "flood", BUSY_SECONDS)
    spender = _visitor(st, client)
    st.uploads_by_client[client] = st.uploads_by_client.get(client, 0) + 1
    try:
        async with asyncio.timeout(UPLOAD_SECONDS):
            got = await _read_note(request, spender)
    except TimeoutError:
        return _refused(say.UPLOAD_TOO_SLOW, 408, "too_slow")
    finally:
        st.uploads_by_client[client] -= 1
        if not st.uploads_by_client[client]:
            del st.uploads_by_client[client]
    if isinstance(got, web.Response):
        return got
    user_id, data, upload_seconds = got
    del got
    if not data:
        return _refused(say.EMPTY_NOTE, 422, "empty")
    # Anonymous notes share the agent with Discord players: never more than the playground's own
    # few turns at once, nor more than its ceiling a minute, and refused rather than queued, so a
    # flood of them holds no turn slot and no connection.
    if st.playground_turns >= st.settings.web.playground_turns:
        return _refused(say.PLAYGROUND_BUSY.format(wait=say.wait_of(BUSY_SECONDS)), 429, "busy", BUSY_SECONDS)
    wait = st.all_notes.retry_after(ALL)
    if wait:
        return _refused(say.PLAYGROUND_BUSY.format(wait=say.wait_of(wait)), 429, "busy", wait)
    context = ToolContext(
        user_id=user_id,
        display_name=st.players[user_id],
        platform="web",
        # Per browser session: two visitors speaking as the same demo player never share history.
        conversation=f"web:{owner}",
        request_id=f"web-{uuid.uuid4()}",
        grievance_owner=_grievance_owner(owner, user_id),
        shared_tickets=_demo(st),
        budget_owner=spender,
        private=True,  # the answer goes to this browser session alone
        may_file=lambda: _may_file(st, spender),
    )
    # The agent lets go of the bytes once decoded: nothing here may hold them on.
    handed = HandedNote(data)
    del data
    st.playground_turns += 1
    try:
        reply = await st.core.agent.respond(context, handed)
    except AudioError as exc:
        return _refused(str(exc), 422, "bad_audio")
    except Exception:
        # What a Discord player hears when their note fails on our side, not a bare 500 the
        # page can only call "Something went wrong".
        log.exception("playground note %s failed", context.request_id)
        metrics.note("web", "failed", "error")
        return web.json_response({"error": say.OOPS}, status=500)
    finally:
        st.playground_turns -= 1
    metrics.reply("web", reply.kind)
    audio_url = None
    if reply.audio is not None:
        token = secrets.token_urlsafe(16)
        _keep_reply(st, token, owner, reply.audio.ogg)
        audio_url = str(request.app.router["reply_audio"].url_for(token=token))
    return web.json_response(
        {
            "player": st.players[user_id],
            "heard": reply.user_text,
            "answer": reply.text,
            "kind": reply.kind,
            "engine": reply.engine,
            "tool_calls": [
                {"name": r.call.name, "arguments": r.call.arguments, "ok": r.ok} for r in reply.tool_results
            ],
            "timings_ms": {"upload": round(upload_seconds * 1000, 1), **reply.timings_ms},
            "audio_url": audio_url,
        }
    )


async def _read_note(request: web.Request, spender: str) -> tuple[str, bytes | None, float] | web.Response:
    """(player, note, the seconds its upload took), or the refusal of a body that is not one player and
    then one note, of a player refused (not offered, or over today's budget) before its note is
    read, or of a note over audio.max_bytes."""
    limits = web_state(request).settings.audio
    player, data = None, None
    started = time.perf_counter()
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name not in ("player", "audio"):
                return _refused(say.BAD_UPLOAD, 400, "bad_request")
            if part.name == "player" and player is None:
                player = (await _read_capped(part, 64, PLAYER_CHUNK) or b"").decode(errors="replace")
                if refusal := await _refused_player(request, player, spender):
                    return refusal
            elif part.name == "audio" and data is None and player is not None:
                data = await _read_capped(part, limits.max_bytes)
                if data is None:
                    declared = request.content_length or limits.max_bytes + 1
                    return _refused(too_big_message(declared, limits), 413, "too_big")
            else:  # a second player or note, or a note before its player
                return _refused(say.BAD_UPLOAD, 400, "bad_request")
    except security.UNREADABLE_FORM:  # no boundary, a body that is not multipart, an odd encoding
        return _refused(say.BAD_UPLOAD, 400, "bad_request")
    if player is None:
        return _refused(*_unoffered(request, None) or ("", 400), "bad_request")
    took = time.perf_counter() - started
    metrics.stage("download", took)
    return player, data, took


def _may_file(st: WebState, visitor: str) -> str | None:
    """Whether a playground visitor's complaint (`visitor`: see _visitor) may go onto the desk (it
    is then counted, and kept in web.db), else why not. Anonymous visitors, each within its note
    limits, could otherwise file three a note all day, and from many addresses up to every
    visitor's ceiling of notes: the desk buried."""
    if st.all_complaints.spent(ALL):  # the visitor's own is not spent on a complaint not filed
        wait = st.all_complaints.retry_after(ALL)
        return say.PLAYGROUND_COMPLAINTS_FULL.format(wait=say.long_wait_of(wait))
    if wait := st.complaints.retry_after(visitor):
        count = st.settings.web.playground_complaints
        complaints = "1 complaint" if count == 1 else f"{count} complaints"
        return say.PLAYGROUND_COMPLAINTS_SPENT.format(complaints=complaints, wait=say.long_wait_of(wait))
    st.all_complaints.retry_after(ALL)
    st.complaint_log.record(visitor, st.clock(), DAY)
    return None


def _visitor(st: WebState, client: str) -> str:
    """Whose daily budget a playground note spends: the visitor's address's (client_key: an IPv6
    /64, the client a trusted proxy names). Not the demo player's, which every visitor shares: one
    would spend it for all, and going through the players, the playground for everyone; nor the
    session's, which a dropped cookie starts afresh. Kept as a keyed hash, not the address."""
    return "web:" + hmac.new(st.visitor_key, client.encode(), hashlib.sha256).hexdigest()[:24]


async def _refused_player(request: web.Request, player: str, spender: str) -> web.Response | None:
    """The refusal of a player the playground does not speak as, or of a visitor whose budget for
    today is spent, told before the note is read: a refused note costs no upload."""
    if unoffered := _unoffered(request, player):
        return _refused(*unoffered, "bad_request")
    agent = web_state(request).core.agent
    budget = agent.budget
    if budget is None:
        return None
    try:
        refusal = await budget.refusal(spender)
    except Exception as exc:
        # Refused, where a Discord player's note is answered unchecked (VoiceAgent._turn): anyone
        # on the internet may send these, and an unread budget would hold none of them back. In
        # Discord's words, not a bare 500. Said once for the outage, as a note's read says it: a
        # traceback a visitor would bury the log.
        reason = f"{type(exc).__name__}: {exc}"
        said = "playground: the budget of visitor %s could not be read: %s"
        agent.usage_unread.failed(reason, said, spender, reason, exc_info=exc)
        metrics.note("web", "failed", "error")
        return web.json_response({"error": say.OOPS}, status=500)
    agent.usage_unread.answered()
    if refusal:
        return _refused(refusal, 429, "over_budget", seconds_to_reset())
    return None


async def _read_capped(part: BodyPartReader, limit: int, chunk_size: int = CHUNK) -> bytes | None:
    """The part's bytes, or None as soon as it is over `limit`: a huge upload is never held."""
    chunks, size = [], 0
    while chunk := await part.read_chunk(chunk_size):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _keep_reply(st: WebState, token: str, owner: str, ogg: bytes) -> None:
    """Keep a reply's audio for its page to fetch, letting the oldest go past MAX_REPLIES replies
    or MAX_REPLY_BYTES of them, but never the one just kept."""
    remember(st.replies, token, (owner, ogg), MAX_REPLIES)
    total = sum(len(kept) for _, kept in st.replies.values())
    while total > MAX_REPLY_BYTES and len(st.replies) > 1:
        oldest = next(iter(st.replies))
        total -= len(st.replies.pop(oldest)[1])


async def reply_audio(request: web.Request) -> web.Response:
    st = web_state(request)
    kept = st.replies.get(request.match_info["token"])
    if kept is None or kept[0] != await _owner(request):
        raise web.HTTPNotFound()
    return _ranged(request, kept[1])


def _ranged(request: web.Request, ogg: bytes) -> web.Response:
    """The reply audio whole, or the one byte range asked for. An audio element learns a
    streamed Ogg file's length by asking for its end: served whole only, it shows no duration
    and cannot seek."""
    headers = {"Cache-Control": "private, no-store", "Accept-Ranges": "bytes"}
    wanted = byte_range(request)
    if wanted is None:
        return web.Response(body=ogg, content_type="audio/ogg", headers=headers)
    start, stop, _ = wanted.indices(len(ogg))
    if start >= stop:
        headers["Content-Range"] = f"bytes */{len(ogg)}"
        return web.Response(status=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(ogg)}"
    return web.Response(status=206, body=ogg[start:stop], content_type="audio/ogg", headers=headers)


def _demo(st: WebState) -> bool:
    """Whether the playground's players are the embedded database's demo players, whose tickets
    (demo data) every visitor may read. A configured player's id is a Discord account's: what was
    filed under it came from whoever holds that account, so visitors read only their own."""
    return not st.settings.web.playground_players


def _grievance_owner(owner: str, user_id: str) -> str:
    """Whose complaints this session files as this player: its own (see ToolContext.grievance_owner)."""
    return f"{VISITOR_PREFIX}{owner}:{user_id}"


def from_playground(user_id: str) -> bool:
    """Whether a grievance's player is an anonymous playground session, as the desk marks it."""
    return user_id.startswith(VISITOR_PREFIX)


async def tickets(request: web.Request) -> web.Response:
    """The chosen playground player's tickets as this session would hear them: those it filed and
    a demo player's own (_demo), never another visitor's (readable_grievances' order: the
    session's own first)."""
    st = web_state(request)
    wait = st.ticket_views.retry_after(security.client_key(request, st.settings.web))
    if wait:
        return web.json_response(
            {"error": say.TICKETS_TOO_FAST.format(wait=say.wait_of(wait))},
            status=429,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    owner = await _owner(request)
    user_id = request.query.get("player", "")
    if unoffered := _unoffered(request, user_id):
        return web.json_response({"error": unoffered[0]}, status=unoffered[1])
    grievances = st.core.grievances

    async def look_up() -> list[Any]:
        async with st.ticket_lookup:
            return await grievances.status(user_id)

    try:
        # The session's own are on the local store (no Discord id, never in Jira): cheap, and fresh.
        own = await grievances.status(_grievance_owner(owner, user_id))
        players = []
        if _demo(st):
            players, _ = await st.ticket_lists.setdefault(user_id, Reused()).get(
                look_up, TICKETS_FRESH_SECONDS
            )
    except Exception:
        # The page shows an answer's "error": the words Discord players hear, not a bare 500.
        log.exception("playground: the tickets of player %s could not be read", user_id)
        return web.json_response(
            {"error": say.TICKETS_UNAVAILABLE}, status=503, headers={"Cache-Control": "no-store"}
        )
    found = own + players
    return web.json_response(
        {
            "player": st.players[user_id],
            "tickets": [
                {
                    "key": g.key,
                    "category": g.category,
                    "description": g.description,
                    "status": say.status_said(g.status),  # as a Discord player reads it
                    "updated_at": g.updated_at,
                }
                for g in found
            ],
        },
        headers={"Cache-Control": "no-store"},
    )
