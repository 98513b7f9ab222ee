"""A fake Discord: a real HTTP + WebSocket server on 127.0.0.1 that the unmodified discord.py
client talks to, pointed at it by configuration (`discord.api_base`, `discord.gateway_url`).

REST: gateway discovery, the bot's user and application, channels and DM channels, channel
messages (create as JSON or multipart with `payload_json`, with `enforce_nonce` returning the
message a nonce made before rather than a second one; read one, read the history with
before/after/around/limit, delete one of the bot's own, MESSAGE_DELETE following), a channel's
public and private archived threads and the private ones the bot joined, the guild's active
threads, typing, reactions, interaction callbacks, follow-up webhooks and the original response,
application command sync, and a CDN path serving attachment bytes.
Gateway: HELLO, IDENTIFY -> READY + GUILD_CREATE, heartbeats and ACKs, RESUME, zlib-stream
compression, and dispatches of MESSAGE_CREATE / MESSAGE_DELETE / MESSAGE_DELETE_BULK /
INTERACTION_CREATE that tests inject. What a test injects while no bot is connected is kept in
the history only, as Discord keeps what players post while a bot is down, and replayed to a
session that RESUMEs, as Discord replays the events a dropped connection missed; each session's
close code is kept in `close_codes`.

Every message players and the bot create is kept per channel, so a bot can read back what it
missed, and a player can delete one (`delete_message`), a moderator several at once
(`delete_messages`): a reply to one is then refused with REPLIES_UNKNOWN_MESSAGE unless it says
`fail_if_not_exists: false`, as on Discord. A channel or thread an admin deletes
(`delete_channel`, `delete_thread`) answers 404 10003 to every request.

The bot has the permissions docs/discord.md's invite grants (`bot_permissions`), less what a
channel's overwrites deny (`deny`). A private thread shows only to its members and to a bot with
Manage Threads, as on Discord: one the bot is not in is left out of GUILD_CREATE and the
active-threads listing, no event about it or its messages reaches the bot, and a request for it
is 403 Missing Access. A player mentioning the bot in a thread, `add_to_thread`, or the bot's own
message there adds it: THREAD_CREATE, then THREAD_MEMBERS_UPDATE;
`remove_from_thread` takes it out. A player's message in a thread makes them a member of it, and
`remove_player_from_thread` takes them out; one thread member is read by GET
/channels/{id}/thread-members/{user}.

Every message and interaction body is validated against the official OpenAPI description
(`tests/fakes/specs/discord-openapi.json.gz`) plus the rules Discord applies to voice messages; a
body that the real service would refuse gets the real error code and is kept in `violations`
so a test can fail on it. Answers Discord gives to well-formed requests that a careful bot
never provokes (a reply to a deleted message, a post to a channel that does not exist) are kept
in `refused` and fail the test too, unless it calls `expect_refusals()`. A request for an endpoint
the fake does not serve (404), a body that is not JSON (50109), or one the fake itself fails on
(500) is kept in `violations` with its method and path.

Discord's own trouble on a message POST is a test's to switch on: 503, a 502 after the message
was posted, a lost connection, a rate limit (per bucket or global, with Discord's headers),
Cloudflare's ban (429 as an HTML page), an upload over the channel's limit (413, 40005), and
on a DM, its limit on the DMs a bot opens (403, 40003).
Typing, reactions and an interaction's answers (its callback, follow-ups and edits) may be
rate-limited too, and reaction and typing requests held unanswered. `throttle()` makes the fake
limit as Discord does under load instead: per-channel buckets for message POSTs, reactions and
typing, each answer carrying the bucket's X-RateLimit-* headers, and a 429 for a request over one.
Every 401, 403 and 429 but a shared one is kept in `invalid`: Discord counts them toward the
10,000 in 10 minutes that have Cloudflare refuse the bot's address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import io
import itertools
import json
import re
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import pytest
from aiohttp import WSMsgType, web

from tests.fakes.openapi import component_errors, request_errors, response_errors
from tests.fakes.strict import FakeRefused, Strict, checked

SPEC = "discord-openapi.json"

APPLICATION_ID = 900000000000000001
BOT_USER_ID = APPLICATION_ID  # a bot's user id is its application id
CONNECTION_CUT = -1  # Received.error of a request whose connection the fake closed unanswered
GUILD_ID = 910000000000000001
ALLOWED_CHANNEL = 920000000000000001  # put this one in settings.discord.channels
OTHER_CHANNEL = 920000000000000002
TOKEN = "fake-bot-token.for-tests-only"

MESSAGE_CONTENT_INTENT = 1 << 15
# The gateway's close codes for an IDENTIFY it refuses, with Discord's reasons (its docs' table of
# gateway close codes).
GATEWAY_REFUSALS = {
    4010: b"Invalid shard.",
    4011: b"Sharding required.",
    4012: b"Invalid API version.",
    4013: b"Invalid intent(s).",
    4014: b"Disallowed intent(s).",
}
VOICE_FLAG = 1 << 13  # IS_VOICE_MESSAGE
EPHEMERAL_FLAG = 1 << 6
SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS, COMPONENTS_V2 = 1 << 2, 1 << 12, 1 << 15
# The flags a request may set, per Discord's docs for each endpoint; the others (CROSSPOSTED,
# LOADING, ...) are Discord's to set.
MESSAGE_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | VOICE_FLAG | COMPONENTS_V2
INTERACTION_FLAGS = MESSAGE_FLAGS | EPHEMERAL_FLAG  # a callback's message and follow-ups
DEFERRED_FLAGS = EPHEMERAL_FLAG  # "the only valid flag" on a deferred callback
EDIT_FLAGS = SUPPRESS_EMBEDS | COMPONENTS_V2 | EPHEMERAL_FLAG  # EPHEMERAL is ignored on an edit
MENTION_TYPES = {"users", "roles", "everyone"}
AUTOCOMPLETE_RESULT = 8  # the interaction callback type of an autocomplete's suggestions
SEND_MESSAGES, ATTACH_FILES, READ_MESSAGE_HISTORY = 1 << 11, 1 << 15, 1 << 16
VIEW_CHANNEL = 1 << 10
ADD_REACTIONS = 1 << 6
SEND_VOICE_MESSAGES = 1 << 46
SEND_MESSAGES_IN_THREADS = 1 << 38
MANAGE_THREADS = 1 << 34
PUBLIC_THREAD, PRIVATE_THREAD, GUILD_FORUM = 11, 12, 15
GUILD_VOICE, GUILD_ANNOUNCEMENT, GUILD_STAGE_VOICE = 2, 5, 13
ALL_PERMISSIONS = (1 << 51) - 1
# What docs/discord.md's invite URL grants the bot: View Channels, Send Messages (and in threads),
# Send Voice Messages, Attach Files, Read Message History, Add Reactions, Use Application Commands.
# Not Manage Threads, which decides what the bot sees of private threads.
INVITE_PERMISSIONS = 70645769669696
CONTENT_LIMIT = 2000  # what a bot may send, tighter than the spec's 4000 (Nitro users)
TOKEN_SECONDS = 15 * 60  # "Interaction tokens are valid for 15 minutes"
NONCE_SECONDS = 120.0  # "checked for uniqueness in the past few minutes"
# The per-channel limits a bot meets under a raid, as Discord's headers state them (its docs publish
# no figures): 5 messages in 5 s, one reaction in 0.25 s ("1 per 0.25 s", the reaction endpoints'
# own bucket, PUT and DELETE alike), 5 typing requests in 5 s; 50 requests a second in all.
ROUTE_LIMITS = {"messages": (5, 5.0), "reactions": (1, 0.25), "typing": (5, 5.0)}
GLOBAL_LIMIT = (50, 1.0)
# Statuses Discord counts as invalid requests: "401, 403, or 429" (a 429 of scope shared aside).
INVALID_STATUSES = frozenset({401, 403, 429})

DISCORD_EPOCH_MS = 1420070400000
DM_CHANNEL_BASE = 940000000000000000
_last_snowflake = 0


def snowflake() -> int:
    """An id as Discord makes them, with the milliseconds since Discord's epoch in the top bits:
    ordering messages by id is ordering them by time, and `history(after=<datetime>)` (which
    discord.py turns into an id) finds what was posted after that moment. Increasing, unique."""
    global _last_snowflake
    _last_snowflake = max(_last_snowflake + 1, (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22)
    return _last_snowflake


_backdated = itertools.count()


def past_snowflake(seconds_ago: float) -> int:
    """An id made `seconds_ago` seconds before now, for a message a test dates in the past. Its
    worker bits are set, which `snowflake()` never does, so it is unique beside those."""
    ms = int((time.time() - seconds_ago) * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (1 << 17) | (next(_backdated) % (1 << 12))


def snowflake_iso(snowflake_id: int) -> str:
    """The moment an id was made, as the ISO timestamp Discord puts beside it."""
    ms = (snowflake_id >> 22) + DISCORD_EPOCH_MS
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat()


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


_DM_CHANNELS: dict[int, int] = {}


def dm_channel_id(user_id: int) -> int:
    """The id of the bot's DM channel with a user: the same for every way it is reached (a note
    the player sends, a slash command in DMs, the bot opening the DM itself), and one per user,
    as on Discord: two players never share one, whatever their ids."""
    return _DM_CHANNELS.setdefault(user_id, DM_CHANNEL_BASE + len(_DM_CHANNELS))


def message_payload(
    message_id: int,
    channel_id: int,
    author: dict[str, Any],
    content: str = "",
    *,
    attachments: list[dict[str, Any]] | None = None,
    mentions: list[dict[str, Any]] | None = None,
    kind: int = 0,
    flags: int = 0,
) -> dict[str, Any]:
    """A message object as Discord sends one, with the fields every message has."""
    return {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": snowflake_iso(message_id),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": mentions or [],
        "mention_roles": [],
        "attachments": attachments or [],
        "embeds": [],
        "pinned": False,
        "type": kind,
        "flags": flags,
        "components": [],
    }


def user_payload(user_id: int, name: str, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name.title(),
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
        "primary_guild": None,
    }


def member_payload(user: dict[str, Any], *, timed_out_until: str | None = None) -> dict[str, Any]:
    """A guild member as Discord sends one, with every field the spec's GuildMemberResponse
    requires: what GET /guilds/{id}/members/{user} answers, and what a thread member's `member`,
    GUILD_CREATE's `members` and GUILD_MEMBER_UPDATE carry."""
    return {
        "user": user,
        "avatar": None,
        "banner": None,
        "communication_disabled_until": timed_out_until,
        "flags": 0,
        "joined_at": now_iso(),
        "nick": None,
        "pending": False,
        "premium_since": None,
        "roles": [],
        "mute": False,
        "deaf": False,
    }


# ---- validation against the spec ----------------------------------------------------------


def spec_errors(path: str, method: str, content_type: str, body: Any) -> list[str]:
    return request_errors(SPEC, path, method, content_type, body)


def event_errors(event: str, data: dict[str, Any]) -> list[str]:
    """What the spec does not allow in the parts of a gateway event that are REST objects (the
    spec describes REST alone): its guild members and thread members."""
    parts: list[tuple[str, str, Any]] = []
    if event == "GUILD_CREATE":
        parts += [(f"members/{i}", "GuildMemberResponse", m) for i, m in enumerate(data.get("members", []))]
    elif event == "GUILD_MEMBER_UPDATE":
        parts.append(("", "GuildMemberResponse", {k: v for k, v in data.items() if k != "guild_id"}))
    elif event == "THREAD_MEMBERS_UPDATE":
        for i, added in enumerate(data.get("added_members", [])):
            # `presence` is the event's own, beside the thread member (Discord's gateway docs).
            member = {k: v for k, v in added.items() if k != "presence"}
            parts.append((f"added_members/{i}", "ThreadMemberResponse", member))
    errors = []
    for where, schema, part in parts:
        for error in component_errors(SPEC, schema, part):
            inside, _, reason = error.partition(": ")
            path = "/".join(p for p in (where, "" if inside == "<body>" else inside) if p) or "<event>"
            errors.append(f"{path}: {reason}")
    return errors


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json", as Discord sends: discord.py compares the header verbatim.
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


class DiscordError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors  # per field, as Discord details an Invalid Form Body
        return _json(body, status=self.status)


def _keep_own_reaction(message: dict[str, Any], emoji: str, added: bool) -> None:
    """The bot's reaction as a message read back shows it: counted, with `me` true."""
    others = [r for r in message.get("reactions", []) if r["emoji"]["name"] != emoji]
    if added:
        others.append(
            {
                "count": 1,
                "count_details": {"burst": 0, "normal": 1},
                "me": True,
                "me_burst": False,
                "burst_colors": [],
                "emoji": {"id": None, "name": emoji},
            }
        )
    message["reactions"] = others


def _cloudflare_page(status: int, text: str) -> web.Response:
    """An answer from Discord's edge rather than its API: an HTML page, no JSON, no `Via`."""
    return web.Response(text=text, status=status, content_type="text/html")


def _unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def _unknown_webhook() -> DiscordError:
    return DiscordError(404, 10015, "Unknown Webhook")


def _unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


# ---- what the fake received ---------------------------------------------------------------


@dataclass
class Upload:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Received:
    """One request a test may assert on."""

    # message | typing | reaction_add | reaction_remove | callback | followup | edit_original | sync
    # | cdn | history | get_message | get_channel | get_member | open_dm | archived_threads
    # | active_threads | get_thread_member
    # | message_again (a message POST whose enforced nonce made Discord return the message it made)
    # | message_delete (the bot deleting a message of its own)
    kind: str
    method: str
    path: str
    channel_id: int | None = None
    body: Any = None
    files: list[Upload] = field(default_factory=list)
    response: dict[str, Any] | None = None  # what the fake answered (e.g. the created message)
    # The Discord error code the fake answered with; 429 for a rate limit or Cloudflare's ban
    # (Discord gives no code for either), CONNECTION_CUT for no answer at all.
    error: int | None = None
    at: float = field(default_factory=time.perf_counter)  # when it arrived

    @property
    def flags(self) -> int:
        return int((self.body or {}).get("flags") or 0)

    @property
    def is_voice_message(self) -> bool:
        return self.kind == "message" and bool(self.flags & VOICE_FLAG) and self.error is None

    @property
    def content(self) -> str:
        return (self.body or {}).get("content") or ""

    @property
    def reply_to(self) -> int | None:
        ref = (self.body or {}).get("message_reference") or {}
        return int(ref["message_id"]) if ref.get("message_id") else None


@dataclass
class InjectedUser:
    id: int
    name: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        return user_payload(self.id, self.name, self.bot)


class FakeDiscord(Strict):
    def __init__(self) -> None:
        self.received: list[Received] = []
        # Replies indexed by the message they answer: many waiters re-check on every request,
        # and scanning all of `received` each time made the fake, not the bot, the bottleneck
        # of bench/e2e.py at 50 users.
        self._replies: dict[int, list[Received]] = {}
        self.violations: list[str] = []  # requests the real Discord would have refused
        self.violations_expected = False
        # Well-formed requests Discord refuses because of what they point at (a reply to a
        # deleted message, a post to no channel): a careful bot never makes them, so they fail
        # the test unless it calls expect_refusals().
        self.refused: list[str] = []
        self.refusals_expected = False
        self.messages: dict[int, dict[int, dict[str, Any]]] = {}  # channel id → message id → message
        self.dm_channels: dict[int, dict[str, Any]] = {}  # DM channel id → its recipient (user payload)
        self.dms_closed: set[int] = set()  # users who do not take DMs from the bot: 50007
        # Discord's limit on the DMs a bot opens: while above 0, each message POST to a DM channel
        # is refused 403 40003 "You are opening direct messages too fast", counting down.
        self.dms_too_fast = 0
        # Users who left the guild (or were kicked or banned): the guild knows them no more
        # (10007), and sharing no server with the bot, they take no DMs from it either (50007).
        self.left_members: set[int] = set()
        self.token_revoked = False  # see revoke_token
        self._gateway_refusing = False  # see refuse_gateway
        # A close code the gateway answers every IDENTIFY with (one of GATEWAY_REFUSALS), as Discord
        # refuses a bot in 2,500 servers without shards (4011) or intents it does not know (4013).
        self.identify_refused_with: int | None = None
        self.gateway_refusals = 0
        self.close_codes: list[int | None] = []  # per gateway session the client ended: its close code
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id → synced commands
        self.attachments: dict[int, bytes] = {}
        self.cdn_stall_seconds = 0.0  # > 0: the CDN accepts a download, then sends nothing this long
        self.cdn_stalls: dict[int, float] = {}  # attachment id → the same, for that one download
        self.cdn_status: dict[int, int] = {}  # attachment id → an error status the CDN answers with
        # Attachment id → (bytes sent, Content-Length declared): the CDN sends that much of the file
        # and drops the connection, or, declaring no length, ends the body there as if it were all.
        self.cdn_cuts: dict[int, tuple[int, bool]] = {}
        # Attachment id → (zero bytes sent after the file, Content-Length declared): a broken or
        # hostile CDN sending more than the attachment's size. `cdn_written` keeps how much of such
        # a body the CDN got written before the client let go (its socket buffers included).
        self.cdn_surplus: dict[int, tuple[int, bool]] = {}
        self.cdn_written: dict[int, int] = {}
        # Attachment id → where the CDN redirects its download (302) instead of sending it.
        self.cdn_redirects: dict[int, str] = {}
        # Attachment id → seconds between the bytes of a download sent one at a time: a trickle
        # that never stalls long enough for a read timeout, yet would take hours to finish.
        self.cdn_trickles: dict[int, float] = {}
        self._stopping = asyncio.Event()  # set on stop: stalled downloads end at once
        self._gateway_up = asyncio.Event()  # cleared by gateway_outage(): connections hang
        self._gateway_up.set()
        self.hanging_connections = 0  # clients waiting on the gateway while it is down
        self.dispatched_at: dict[str, float] = {}  # message id → when MESSAGE_CREATE went out
        self.refuse_voice_in: set[int] = set()  # channels that answer 50173 to voice messages
        # Discord refuses an interaction's first response later than 3 s after it made the
        # interaction (10062 Unknown interaction): set to 3.0 to hold the bot to that. None: the
        # fake does not time callbacks (a slow test machine would fail tests about other things).
        self.first_response_within: float | None = None
        self.interactions: set[str] = set()  # ids of the interactions dispatched: their tokens work
        self.autocompletes: set[str] = set()  # of them, the autocomplete requests
        # False: every REST answer closes its connection (as a busy edge does), so each request
        # the bot makes next opens a new one, looking up the API's host name if it has none cached.
        self.keep_alive = True
        # Discord's own trouble: while above 0, each message POST is answered 503 and counts it down.
        self.posts_unavailable = 0
        # An edge that times out on a busy backend: while above 0, each interaction callback is
        # taken but answered 502 (discord.py sends it again, and is refused 40060), counting down.
        self.callbacks_lost = 0
        # Discord's edge losing the answer: while above 0, each message POST is posted (stored, and
        # sent to the channel) but answered 502 Bad Gateway with Cloudflare's HTML page, which
        # discord.py retries; counts down. Only `enforce_nonce` keeps the retry from posting again.
        self.posts_lost = 0
        # The same, but the connection drops instead of the 502, which discord.py does not retry.
        self.posts_cut_after = 0
        # A connection broken under the bot's DELETE of a message: while above 0, each such DELETE
        # is dropped unanswered (its connection closed, the message left as it was), counting down.
        self.deletes_cut = 0
        # Rate limits, answered as Discord does (429 with `retry_after`, X-RateLimit-* headers and
        # `Via`, which discord.py needs to trust it): while above 0, each message POST is refused
        # so and counts it down. `posts_limit_global` makes them the global limit.
        self.posts_rate_limited = 0
        self.posts_limit_global = False
        self.retry_after = 0.05
        # See throttle(): None, or the factor Discord's windows are scaled by (a test's time).
        self.throttle_scale: float | None = None
        self._windows: dict[tuple[str, int], list[float]] = {}  # (bucket, channel) → [reset, used]
        self.throttled: list[Received] = []  # requests throttle() answered 429
        self.invalid: list[str] = []  # "METHOD path status" of each request Discord counts invalid
        self.typing_rate_limited = 0  # the same for typing requests
        self.typing_limit_global = False
        self.reactions_rate_limited = 0  # the same for reaction requests
        self.reactions_limit_global = False
        # The same for an interaction's first response (its callback), its follow-ups and the
        # edits of its original response: discord.py's webhook layer, not its HTTP client.
        self.callbacks_rate_limited = 0
        self.followups_rate_limited = 0
        self.edits_rate_limited = 0
        # Not None: each edit of an original response waits, read, until it is set (Discord slow
        # to answer), counted in `edits_waiting`.
        self.edits_held: asyncio.Event | None = None
        self.edits_waiting = 0
        # Cloudflare's ban (too many invalid requests): 429 with an HTML page and no `Via`, which
        # discord.py does not retry; while above 0, each message POST is refused so, counting down.
        self.posts_banned = 0
        # The same ban on reading a channel's history: while above 0, each history GET is refused
        # so, counting down.
        self.history_banned = 0
        self.history_rate_limited = 0  # history GETs answered with a 429 of `retry_after`, counting down
        # Channels whose history Discord fails to serve (503, as when the store behind one
        # channel's messages is down) while they are in the set.
        self.history_unavailable_in: set[int] = set()
        # Channel → message id: a read of its history after a message at or past that id fails the
        # same way (a read that fails past its first page).
        self.history_unavailable_after: dict[int, int] = {}
        # Channel → event: a read of its history waits for the event before Discord answers it
        # (a read still under way while something else happens).
        self.history_held: dict[int, asyncio.Event] = {}
        self.history_waiting = 0  # history reads held that way right now
        self.history_begun: list[int] = []  # the channel of each history read, as it arrives
        self.history_seconds = 0.0  # how long each history read takes to answer (a round trip, for benches)
        self.message_rate_limited = 0  # the same 429 for GETs of one message by id, counting down
        self.message_banned = 0  # Cloudflare's ban on GETs of one message by id, counting down
        # Cloudflare's 403 page (its firewall blocking a request) for GETs of one message by id,
        # counting down: an HTML page, not Discord's JSON error with a `code`.
        self.message_blocked = 0
        self.channel_unavailable = 0  # GETs of a channel by id answered 503, counting down
        # The guild in an outage: READY lists it unavailable and no GUILD_CREATE follows, while
        # the REST API still answers for its channels.
        self.guild_withheld = False
        # Cloudflare's ban on listing archived threads (any of the three listings), counting down.
        self.archived_threads_banned = 0
        # Set: each listing of archived threads waits for it before Discord answers it (a catch-up
        # still listing while something else happens).
        self.archived_threads_held: asyncio.Event | None = None
        self.archived_threads_waiting = 0  # listings held that way right now
        # The channel's upload limit in bytes (10 MiB for a server without boosts, as for a bot's
        # DMs): a message with a larger file is refused 413, 40005.
        self.upload_limit = 10 * 1024 * 1024
        # While set and not yet set off, reaction and typing requests wait for it, unanswered, as
        # requests queue behind a rate limit on Discord's side.
        self.reactions_held: asyncio.Event | None = None
        # A stalled upload: while above 0, each message POST is read, then waits unanswered until
        # `posts_released` is set (or the fake stops) and goes on as any other; counts down.
        self.posts_held = 0
        self.posts_released = asyncio.Event()
        self.posts_before_held = 0  # message POSTs that go on as usual before `posts_held` applies
        self.typing_held: asyncio.Event | None = None
        # (author, nonce) → the message a POST with `enforce_nonce` created, and when.
        self._nonces: dict[tuple[int, str], tuple[float, dict[str, Any]]] = {}
        # The connection to Discord drops: while above 0, each reaction (typing, message POST)
        # request's connection is closed with no answer (discord.py retries only a reset, so the
        # client sees it), and counts it down.
        self.reactions_cut = 0
        self.typing_cut = 0
        self.posts_cut = 0
        self.callbacks_cut = 0  # an interaction's first response (or suggestions), alike
        # Called once each message POST is stored: a test acting between two pieces of a reply.
        self.after_post: Callable[[Received], Awaitable[None]] | None = None
        # Called once each GET of one message is answered: a test acting between the bot's fetch
        # of a note and its next request about it.
        self.after_fetch: Callable[[Received], Awaitable[None]] | None = None
        # Guild channel id → the permissions its overwrites deny @everyone, the bot included (see
        # deny()). Discord refuses what they forbid with 403 50013, a history read without
        # Read Message History is an empty list, and a GET of one message 403 50001.
        self.denied: dict[int, int] = {}
        # The bot's permissions in the guild (its role), before any channel's overwrites: what the
        # invite asks for. A test adds MANAGE_THREADS for a server that made the bot a moderator.
        self.bot_permissions = INVITE_PERMISSIONS
        self.identified = asyncio.Event()
        self.identify_payloads: list[dict[str, Any]] = []
        self.resume_payloads: list[dict[str, Any]] = []
        self.resumed = asyncio.Event()
        self.sessions: dict[str, int] = {}  # session id → intents, for RESUME
        self.missed: dict[str, list[tuple[str, dict[str, Any]]]] = {}  # session id → events to replay
        self.guild_channels = {ALLOWED_CHANNEL: "voice-help", OTHER_CHANNEL: "general"}
        self.left_guild = False  # the bot was kicked: its guild's channels answer 403 50001
        # A moderator timed the bot out until then (time.time()): it keeps only View Channel and
        # Read Message History in the guild's channels, as any member timed out.
        self.timed_out_until = 0.0
        self.channel_types: dict[int, int] = {}  # guild channel id → its type, when not 0 (text)
        # Thread id → {"parent_id", "name", "type", "archived", "locked", "archive_timestamp",
        # "members": user id → when they joined} (see add_thread()).
        self.threads: dict[int, dict[str, Any]] = {}
        self.deleted_channels: set[int] = set()  # channels and threads deleted: 404 10003 for any request
        # GATEWAY_MESSAGE_CONTENT granted in the developer portal; clear it to test the fallback.
        self.application_flags = 1 << 19
        # The application's `approximate_guild_count`. Discord's application flags: the limited
        # flag (1 << 19, the portal's toggle) is "Intent required for bots in under 100 servers to
        # receive message content"; from 100 on only GATEWAY_MESSAGE_CONTENT (1 << 18, approval
        # for a verified app) grants it, and an IDENTIFY asking for it otherwise is closed 4014.
        self.approximate_guild_count = 1
        self._changed = asyncio.Condition()
        self._sockets: list[_GatewaySession] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=30 * 1024 * 1024, middlewares=[self._errors])
        r = app.router
        r.add_get("/api/v10/gateway/bot", self._gateway_bot)
        r.add_get("/api/v10/gateway", self._gateway_bot)
        r.add_get("/api/v10/users/@me", self._me)
        r.add_get("/api/v10/oauth2/applications/@me", self._application)
        r.add_post("/api/v10/users/@me/channels", self._create_dm)
        r.add_get("/api/v10/channels/{channel_id}", self._get_channel)
        r.add_post("/api/v10/channels/{channel_id}/messages", self._create_message)
        r.add_get("/api/v10/channels/{channel_id}/messages", self._history)
        r.add_get("/api/v10/channels/{channel_id}/messages/{message_id}", self._get_message)
        r.add_delete("/api/v10/channels/{channel_id}/messages/{message_id}", self._delete_own_message)
        r.add_get("/api/v10/channels/{channel_id}/threads/archived/{kind}", self._archived_threads)
        r.add_get(
            "/api/v10/channels/{channel_id}/users/@me/threads/archived/private", self._joined_archived_threads
        )
        r.add_get("/api/v10/guilds/{guild_id}/threads/active", self._active_threads)
        r.add_get("/api/v10/guilds/{guild_id}/members/{user_id}", self._get_member)
        r.add_get("/api/v10/channels/{channel_id}/thread-members/{user_id}", self._get_thread_member)
        r.add_post("/api/v10/channels/{channel_id}/typing", self._typing)
        r.add_put("/api/v10/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._react)
        r.add_delete(
            "/api/v10/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._react
        )
        r.add_post("/api/v10/interactions/{interaction_id}/{token}/callback", self._callback)
        r.add_post("/api/v10/webhooks/{application_id}/{token}", self._followup)
        r.add_patch("/api/v10/webhooks/{application_id}/{token}/messages/@original", self._edit_original)
        r.add_get("/api/v10/webhooks/{application_id}/{token}/messages/@original", self._get_original)
        r.add_put("/api/v10/applications/{application_id}/commands", self._sync)
        r.add_put("/api/v10/applications/{application_id}/guilds/{guild_id}/commands", self._sync)
        r.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        r.add_get("/gateway", self._gateway)
        r.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]  # port 0: the OS chose one
        return self

    async def stop(self) -> None:
        # Before the cleanup, which would otherwise wait for every stalled download to finish.
        self._stopping.set()
        self._gateway_up.set()
        for session in list(self._sockets):
            await session.close(1000, b"")
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def settings_env(self) -> dict[str, str]:
        """`VOXDESK_*` variables that point the bot here."""
        return {
            "VOXDESK_DISCORD_API_BASE": self.api_base,
            "VOXDESK_DISCORD_GATEWAY_URL": self.gateway_url,
            "VOXDESK_DISCORD_CHANNELS": str(ALLOWED_CHANNEL),
            "VOXDESK_DISCORD_GUILD_READY_TIMEOUT": "0.05",
        }

    # ---- refusals that are Discord's answer, not a malformed request ----------------------

    def expect_refusals(self) -> None:
        """This test makes the bot point at what is gone on purpose: `refused` does not fail it."""
        self.refusals_expected = True

    def _refuse_as_discord(self, reason: str, error: DiscordError) -> NoReturn:
        self.refused.append(reason)
        raise error

    @property
    def unexpected_violations(self) -> list[str]:
        # Refusals end a waiter and fail the test at the end exactly as violations do.
        refused = (
            []
            if self.refusals_expected
            else [f"{r} (Discord's answer; expect_refusals())" for r in self.refused]
        )
        return [*super().unexpected_violations, *refused]

    # ---- waiting on what arrives -----------------------------------------------------

    async def _record(self, item: Received) -> None:
        async with self._changed:
            self.received.append(item)
            if item.kind == "message" and item.error is None and item.reply_to is not None:
                self._replies.setdefault(item.reply_to, []).append(item)
            self._changed.notify_all()

    async def changed(self) -> None:
        """Wake the waiters (`wait_for`) for a change outside `received`: a session identified."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[Received]], Any], within: float = 20.0) -> Any:
        """Wait until `predicate(self.received)` is truthy, and return its value. A request refused
        as malformed ends the wait at once with the reason: what was awaited may never come."""

        async def until() -> Any:
            async with self._changed:
                while not (value := predicate(self.received)):
                    if self.unexpected_violations:
                        raise FakeRefused(self, self.unexpected_violations)
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(until(), within)

    def sent(self, kind: str = "message", channel_id: int | None = None) -> list[Received]:
        return [
            r
            for r in self.received
            if r.kind == kind and r.error is None and (channel_id is None or r.channel_id == channel_id)
        ]

    def replies_to(self, message_id: int | str) -> list[Received]:
        """Messages the bot posted in reply to a message, in the order they arrived."""
        return list(self._replies.get(int(message_id), ()))

    # ---- injecting events ------------------------------------------------------------

    @property
    def bot_connected(self) -> bool:
        return any(session.ready for session in self._sockets)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to every ready session. A session whose connection dropped gets it when
        it RESUMEs; with none (the bot is down, or its session ended or was forgotten) it goes
        nowhere, as on Discord: a bot learns of it from the history. An event about a private
        thread the bot may not see goes nowhere either: "Clients will not be informed of a thread
        through the gateway if they do not have permission to view that thread" (Discord's threads
        topic), nor of the messages in it."""
        if self._about_unseen_thread(data):
            return
        held = set()
        for session in list(self._sockets):
            if session.ready:
                held.add(session.session_id)
                await session.dispatch(event, data)
        for session_id in self.sessions.keys() - held:
            self.missed.setdefault(session_id, []).append((event, data))

    async def read_by_the_bot(self, within: float = 30.0) -> None:
        """Until every ready session has read each event sent it so far. Discord's heartbeat
        request (op 1) is answered at once with the sequence the client last read, and a client
        reads its gateway in order: that answer means every event before it was parsed and
        handed to the bot's listeners. Only a session with events its client has not yet said it
        read is asked: discord.py answers within its 110 gateway sends a minute, and its reader
        awaits the answer, so a test that asked at every look stalled the bot's gateway."""
        asked = [
            (session, session.sequence)
            for session in list(self._sockets)
            if session.ready and not session.ws.closed and session.beat < session.sequence
        ]
        for session, _ in asked:
            await session.send({"op": 1, "d": None})

        def read() -> bool:
            return all(session.ws.closed or session.beat >= sequence for session, sequence in asked)

        await self.wait_for(lambda _: read(), within)

    def _about_unseen_thread(self, data: dict[str, Any]) -> bool:
        place = data.get("channel_id") or (data.get("id") if "parent_id" in data else None)
        return place is not None and not self.bot_sees(int(place))

    def bot_sees(self, channel_id: int) -> bool:
        """Whether Discord shows the bot this channel or thread. "Private threads are only synced
        to you if you are a member or a moderator" (Discord's threads topic: "You must be invited
        to the thread to be able to view or participate in it, or be a moderator (MANAGE_THREADS
        permission)"); everything else the fake keeps is visible."""
        thread = self.threads.get(channel_id)
        if thread is None or thread["type"] != PRIVATE_THREAD:
            return True
        return BOT_USER_ID in thread["members"] or self._bot_may(channel_id, MANAGE_THREADS)

    async def send_note(
        self,
        author: InjectedUser,
        audio: bytes,
        *,
        channel_id: int | None = None,
        guild: bool = False,
        voice: bool = True,
        filename: str = "voice-message.ogg",
        content_type: str = "audio/ogg",
        duration: float = 3.0,
        content: str = "",
        mention_bot: bool = False,
        reply_to: dict[str, Any] | None = None,
        declared_size: int | None = None,
        dispatch: bool = True,
        ago: float = 0.0,
        stall: float = 0.0,
    ) -> dict[str, Any]:
        """A player's message with one attachment, stored and dispatched as MESSAGE_CREATE; `ago`
        seconds > 0 dates it (its id and timestamp) that far in the past, `stall` seconds > 0 is
        how long the CDN sends nothing once the attachment's download begins."""
        attachment_id = snowflake()
        if stall:
            self.cdn_stalls[attachment_id] = stall
        channel = channel_id or (ALLOWED_CHANNEL if guild else dm_channel_id(author.id))
        self.attachments[attachment_id] = audio
        # Discord's CDN serves a file under its name percent-encoded: a "/" in it is no new segment.
        url = f"{self.url}/attachments/{channel}/{attachment_id}/{urllib.parse.quote(filename, safe='')}"
        attachment: dict[str, Any] = {
            "id": str(attachment_id),
            "filename": filename,
            "size": declared_size if declared_size is not None else len(audio),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if voice:
            attachment["duration_secs"] = duration
            attachment["waveform"] = base64.b64encode(bytes(range(0, 250, 5))).decode()
        return await self.send_message(
            author,
            channel_id=channel,
            guild=guild or self.in_guild(channel),
            content=content,
            attachments=[attachment],
            flags=VOICE_FLAG if voice else 0,
            mention_bot=mention_bot,
            reply_to=reply_to,
            dispatch=dispatch,
            ago=ago,
        )

    async def send_message(
        self,
        author: InjectedUser,
        *,
        channel_id: int,
        guild: bool,
        content: str = "",
        attachments: list[dict[str, Any]] | None = None,
        flags: int = 0,
        mention_bot: bool = False,
        reply_to: dict[str, Any] | None = None,
        dispatch: bool = True,
        ago: float = 0.0,
    ) -> dict[str, Any]:
        """A player's message, kept in the channel's history and dispatched as MESSAGE_CREATE to
        a connected bot (only kept while none is). `dispatch` False: kept only, as a message whose
        event went to another bot process. `reply_to`: a message it replies to; with
        `mention_bot`, a reply that pings its author, else a mention written in the content.

        A voice message has no content, so the only way it mentions the bot is as a pinging reply
        to one of the bot's messages: asking for another is an error in the test."""
        voice = bool(flags & VOICE_FLAG)
        pings_reply = reply_to is not None and mention_bot
        if pings_reply and int(reply_to["author"]["id"]) != BOT_USER_ID:  # type: ignore[index]
            raise ValueError("mention_bot with reply_to: the reply must be to one of the bot's messages")
        if mention_bot and not pings_reply:
            if voice:
                raise ValueError("a voice message cannot mention the bot except as a pinging reply_to")
            content = f"<@{BOT_USER_ID}> {content}".strip()
        message_id = past_snowflake(ago) if ago else snowflake()
        message = message_payload(
            message_id,
            channel_id,
            author.payload(),
            content,
            attachments=attachments,
            mentions=[user_payload(BOT_USER_ID, "voxdesk", bot=True)] if mention_bot else [],
            kind=19 if reply_to is not None else 0,  # REPLY
            flags=flags,
        )
        if reply_to is not None:
            message["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": str(channel_id),
                **({"guild_id": str(GUILD_ID)} if guild else {}),
            }
            message["referenced_message"] = self._as_read(reply_to)
        if guild:
            message["guild_id"] = str(GUILD_ID)
            message["member"] = {
                "roles": [],
                "joined_at": now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        elif not self.in_guild(channel_id):
            self.dm_channels.setdefault(channel_id, author.payload())
        if self.threads.get(channel_id, {}).get("archived"):
            # A player's message unarchives the thread, as the bot's own would.
            await self._unarchive(channel_id)
        if channel_id in self.threads:
            # Posting in a thread joins it, as the bot's own message does (see add_to_thread()).
            self.threads[channel_id]["members"].setdefault(author.id, now_iso())
        self._store(message)
        if mention_bot and channel_id in self.threads:
            # "If you mention someone from within a thread, they will be added to the thread
            # automatically"; a private thread "will only appear for someone if they're added
            # manually, or are @mentioned within the thread itself" (Discord's threads launch post).
            # Added by the message, which is in the thread's history by then.
            await self.add_to_thread(channel_id)
        if dispatch:
            self.dispatched_at[message["id"]] = time.perf_counter()
            await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def forward(
        self, author: InjectedUser, original: dict[str, Any], *, channel_id: int | None = None
    ) -> dict[str, Any]:
        """`author` forwards `original` (by default to their DM with the bot): a message of its
        own with no content or attachments, a FORWARD reference, and the original's content,
        attachments and flags in `message_snapshots`."""
        channel = channel_id or dm_channel_id(author.id)
        guild = self.in_guild(channel)
        message_id = snowflake()
        snapshot = {
            key: original[key]
            for key in (
                "type",
                "content",
                "embeds",
                "attachments",
                "timestamp",
                "edited_timestamp",
                "flags",
                "components",
            )
        }
        message = message_payload(message_id, channel, author.payload()) | {
            "message_reference": {
                "type": 1,  # FORWARD
                "message_id": original["id"],
                "channel_id": original["channel_id"],
                **({"guild_id": original["guild_id"]} if "guild_id" in original else {}),
            },
            "message_snapshots": [{"message": {**snapshot, "mentions": [], "mention_roles": []}}],
        }
        if guild:
            message["guild_id"] = str(GUILD_ID)
        else:
            self.dm_channels.setdefault(channel, author.payload())
        self._store(message)
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def deny(self, channel_id: int, permissions: int, *, tell_the_bot: bool = True) -> None:
        """An admin denies @everyone (the bot too) `permissions` in a guild channel's overwrites;
        a connected bot hears of it by CHANNEL_UPDATE, as discord.py keeps its permissions up to
        date. `tell_the_bot` False: the bot's cache is behind (an event it has not had yet)."""
        self.denied[channel_id] = self.denied.get(channel_id, 0) | permissions
        if tell_the_bot:
            await self.dispatch("CHANNEL_UPDATE", self.channel_payload(channel_id))

    def in_guild(self, channel_id: int) -> bool:
        return channel_id in self.guild_channels or channel_id in self.threads

    def _denied(self, channel_id: int) -> int:
        """What the overwrites deny: a thread has none of its own and takes its parent's."""
        thread = self.threads.get(channel_id)
        return self.denied.get(thread["parent_id"] if thread else channel_id, 0)

    def _bot_may(self, channel_id: int, permission: int) -> bool:
        """Whether the bot has `permission` there: its role's, less the overwrites' denials. A DM
        has no roles or overwrites."""
        if not self.in_guild(channel_id):
            return True
        if time.time() < self.timed_out_until and permission & ~(VIEW_CHANNEL | READ_MESSAGE_HISTORY):
            return False
        return not (permission & ~self.bot_permissions or self._denied(channel_id) & permission)

    async def add_to_thread(self, thread_id: int) -> None:
        """A player adds the bot to a thread (by mentioning it, or by "Add members"). "Whenever a
        user is added to a private thread, the Gateway also sends a Thread Create event", sent
        for a public one too, and "A Thread Members Update Gateway Event is always sent when the
        current user is added to or removed from a thread" (Discord's threads topic). No event
        when it already is a member."""
        members = self.threads[thread_id]["members"]
        if BOT_USER_ID in members:
            return
        members[BOT_USER_ID] = now_iso()
        await self.dispatch("THREAD_CREATE", self.thread_payload(thread_id))
        await self._tell_joined(thread_id)

    async def remove_from_thread(self, thread_id: int) -> None:
        """A player removes the bot from a thread: THREAD_MEMBERS_UPDATE with the bot among
        `removed_member_ids`, and from then on a private thread shows to it no more."""
        if BOT_USER_ID not in self.threads[thread_id]["members"]:
            return
        update = {
            "id": str(thread_id),
            "guild_id": str(GUILD_ID),
            "member_count": len(self.threads[thread_id]["members"]) - 1,
            "removed_member_ids": [str(BOT_USER_ID)],
        }
        await self.dispatch("THREAD_MEMBERS_UPDATE", update)
        del self.threads[thread_id]["members"][BOT_USER_ID]

    def remove_player_from_thread(self, thread_id: int, user_id: int) -> None:
        """A moderator removes a player from a thread: a private one shows to them no more. No
        event reaches the bot: THREAD_MEMBERS_UPDATE for another user needs the Server Members
        intent, which the bot does not ask for."""
        self.threads[thread_id]["members"].pop(user_id, None)

    async def _tell_joined(self, thread_id: int) -> None:
        """THREAD_MEMBERS_UPDATE with the bot among `added_members`: without the Guild Members
        intent, the only one Discord sends."""
        added = {**self._bot_thread_member(thread_id), "member": self._bot_member(), "presence": None}
        update = {
            "id": str(thread_id),
            "guild_id": str(GUILD_ID),
            "member_count": len(self.threads[thread_id]["members"]),
            "added_members": [added],
        }
        await self.dispatch("THREAD_MEMBERS_UPDATE", update)

    def _bot_thread_member(self, thread_id: int) -> dict[str, Any]:
        return {
            "id": str(thread_id),
            "user_id": str(BOT_USER_ID),
            "join_timestamp": self.threads[thread_id]["members"][BOT_USER_ID],
            "flags": 0,
        }

    def _bot_member(self) -> dict[str, Any]:
        until = self.timed_out_until
        timed_out = (
            datetime.datetime.fromtimestamp(until, datetime.UTC).isoformat() if until > time.time() else None
        )
        return member_payload(user_payload(BOT_USER_ID, "voxdesk", bot=True), timed_out_until=timed_out)

    async def time_out_the_bot(self, seconds: float) -> None:
        """A moderator times the bot out for `seconds` (0: lifts its timeout): GUILD_MEMBER_UPDATE
        with its `communication_disabled_until` (sent for the bot's own member whatever its
        intents). Nothing is sent when a timeout runs out: clients compare the time with their
        clock."""
        self.timed_out_until = time.time() + seconds if seconds > 0 else 0.0
        await self.dispatch("GUILD_MEMBER_UPDATE", {"guild_id": str(GUILD_ID), **self._bot_member()})

    async def add_thread(
        self,
        parent_id: int,
        name: str,
        *,
        private: bool = False,
        archived: bool = False,
        joined: bool = False,
        tell_the_bot: bool = True,
        ago: float = 0.0,
    ) -> int:
        """A thread a player starts under a guild channel (a post, under a forum channel): the
        bot hears of it by THREAD_CREATE unless `tell_the_bot` is False (made while it was down;
        an active one is in the next GUILD_CREATE's `threads`), or the thread is private and the
        bot neither joined nor may manage threads. `joined`: the player invited the bot as they
        made it (`add_to_thread`, or a message mentioning it, adds it later). `ago` seconds > 0:
        made that far in the past (its id, and the bot's join). Returns its id."""
        thread_id = past_snowflake(ago) if ago else snowflake()
        self.threads[thread_id] = {
            "parent_id": parent_id,
            "name": name,
            "type": PRIVATE_THREAD if private else PUBLIC_THREAD,
            "archived": archived,
            "locked": False,
            # "Timestamp when the thread's archive status was last changed": made, for a new one.
            "archive_timestamp": snowflake_iso(thread_id),
            "members": {BOT_USER_ID: snowflake_iso(thread_id)} if joined else {},
        }
        if tell_the_bot:
            await self.dispatch("THREAD_CREATE", {**self.thread_payload(thread_id), "newly_created": True})
            if joined:
                await self._tell_joined(thread_id)
        return thread_id

    async def archive_thread(self, thread_id: int, *, locked: bool = False, ago: float = 0.0) -> None:
        """A moderator archives (and maybe locks) a thread, `ago` seconds > 0 that far in the past:
        THREAD_UPDATE to a connected bot (kept for a RESUME while none is, as every event)."""
        at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=ago)
        self.threads[thread_id].update(archived=True, locked=locked, archive_timestamp=at.isoformat())
        await self.dispatch("THREAD_UPDATE", self.channel_payload(thread_id))

    async def lock_thread(self, thread_id: int) -> None:
        """A moderator locks a thread and leaves it open: only those who may manage threads post
        in it from then on. THREAD_UPDATE to a connected bot."""
        self.threads[thread_id]["locked"] = True
        await self.dispatch("THREAD_UPDATE", self.channel_payload(thread_id))

    async def _unarchive(self, thread_id: int) -> None:
        self.threads[thread_id].update(archived=False, archive_timestamp=now_iso())
        await self.dispatch("THREAD_UPDATE", self.channel_payload(thread_id))

    async def _post_in_thread(self, channel_id: int, path: str) -> None:
        """ "Sending a message will automatically unarchive the thread, unless the thread has been
        locked by a moderator" (Discord's threads topic); a locked one refuses with 50083, and one
        locked but left open takes messages from thread moderators alone (160005)."""
        thread = self.threads.get(channel_id)
        if thread is None:
            return
        if thread["locked"] and not thread["archived"] and not self._bot_may(channel_id, MANAGE_THREADS):
            # Locked and left open: "Thread is locked" to all but thread moderators.
            self._refuse_as_discord(
                f"POST {path}: a message in a locked thread", DiscordError(403, 160005, "Thread is locked")
            )
        if not thread["archived"]:
            return
        if thread["locked"]:
            self._refuse_as_discord(
                f"POST {path}: a message in a locked archived thread",
                DiscordError(400, 50083, "Operation cannot be performed on an archived thread"),
            )
        await self._unarchive(channel_id)

    def _check_view(self, channel_id: int, what: str) -> None:
        """Without View Channel a guild channel shows the bot nothing: Missing Access, whatever
        else its role allows there."""
        if not self._bot_may(channel_id, VIEW_CHANNEL):
            refusal = DiscordError(403, 50001, "Missing Access")
            self._refuse_as_discord(f"{what} in channel {channel_id} without View Channel", refusal)

    def _check_permission(self, channel_id: int, permission: int, what: str) -> None:
        if channel_id in self.threads and permission == SEND_MESSAGES:
            permission = SEND_MESSAGES_IN_THREADS  # what a thread asks instead of Send Messages
        if not self._bot_may(channel_id, permission):
            # A careful bot knows its channel permissions from the guild cache and asks no such thing.
            self._refuse_as_discord(
                f"{what} in channel {channel_id} without permission {permission:#x}",
                DiscordError(403, 50013, "Missing Permissions"),
            )

    async def kick_the_bot(self) -> None:
        """An admin removes the bot from the guild: GUILD_DELETE (not unavailable) to a connected
        bot, and 403 Missing Access for the guild's channels from then on."""
        self.left_guild = True
        await self.dispatch("GUILD_DELETE", {"id": str(GUILD_ID)})

    async def delete_channel(self, channel_id: int) -> None:
        """An admin deletes a guild channel: CHANNEL_DELETE to a connected bot, and every request
        for it answered 404 10003 from then on."""
        payload = self.channel_payload(channel_id)
        del self.guild_channels[channel_id]
        self.messages.pop(channel_id, None)
        self.deleted_channels.add(channel_id)
        await self.dispatch("CHANNEL_DELETE", payload)

    async def delete_thread(self, thread_id: int, *, tell_the_bot: bool = True) -> None:
        """A moderator deletes a thread, its parent staying: THREAD_DELETE to a connected bot,
        whose payload is "a subset of the channel object, containing just the id, guild_id,
        parent_id, and type fields", and every request for it answered 404 10003 from then on.
        `tell_the_bot` False: the bot's cache is behind (an event it has not had yet)."""
        seen = self.bot_sees(thread_id)
        thread = self.threads.pop(thread_id)
        self.messages.pop(thread_id, None)
        self.deleted_channels.add(thread_id)
        payload = {
            "id": str(thread_id),
            "guild_id": str(GUILD_ID),
            "parent_id": str(thread["parent_id"]),
            "type": thread["type"],
        }
        if seen and tell_the_bot:
            await self.dispatch("THREAD_DELETE", payload)

    async def delete_message(self, channel_id: int, message_id: int | str) -> None:
        """A player deletes a message: gone from the history, MESSAGE_DELETE to a connected bot."""
        channel_id, message_id = int(channel_id), int(message_id)
        if self.messages.get(channel_id, {}).pop(message_id, None) is None:
            raise KeyError(f"no message {message_id} in channel {channel_id} to delete")
        event = {"id": str(message_id), "channel_id": str(channel_id)}
        if self.in_guild(channel_id):
            event["guild_id"] = str(GUILD_ID)
        await self.dispatch("MESSAGE_DELETE", event)

    async def delete_messages(self, channel_id: int, message_ids: list[int | str]) -> None:
        """A moderator deletes several messages of a guild channel at once (Bulk Delete Messages,
        or a ban that deletes the player's recent messages): gone from the history, one
        MESSAGE_DELETE_BULK (`ids`, `channel_id`, `guild_id`) to a connected bot. Discord bulk
        deletes in guild channels only."""
        channel_id, ids = int(channel_id), [int(m) for m in message_ids]
        if not self.in_guild(channel_id):
            raise ValueError(f"channel {channel_id} is no guild channel: Discord bulk deletes there only")
        stored = self.messages.get(channel_id, {})
        for message_id in ids:
            if stored.pop(message_id, None) is None:
                raise KeyError(f"no message {message_id} in channel {channel_id} to delete")
        event = {"ids": [str(m) for m in ids], "channel_id": str(channel_id), "guild_id": str(GUILD_ID)}
        await self.dispatch("MESSAGE_DELETE_BULK", event)

    def _store(self, message: dict[str, Any]) -> None:
        self.messages.setdefault(int(message["channel_id"]), {})[int(message["id"])] = message

    def known_dm(self, user: InjectedUser) -> int:
        """The DM channel the bot and `user` have had (Discord keeps it, whatever it holds)."""
        return self._open_dm(user.payload())

    def _open_dm(self, recipient: dict[str, Any]) -> int:
        channel_id = dm_channel_id(int(recipient["id"]))
        self.dm_channels.setdefault(channel_id, recipient)
        return channel_id

    async def slash(
        self,
        user: InjectedUser,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        guild: bool = True,
        autocomplete: bool = False,
        ago: float = 0.0,
    ) -> str:
        """A slash command (or its autocomplete request) dispatched as INTERACTION_CREATE; returns
        the interaction id, whose callback and follow-ups can then be awaited. `ago` seconds > 0:
        Discord made the interaction that long before it reaches the bot (its id says when)."""
        interaction_id = str(past_snowflake(ago) if ago else snowflake())
        self.interactions.add(interaction_id)
        if autocomplete:
            self.autocompletes.add(interaction_id)
        channel_id = ALLOWED_CHANNEL if guild else self._open_dm(user.payload())
        data: dict[str, Any] = {
            "id": interaction_id,
            "application_id": str(APPLICATION_ID),
            "type": 4 if autocomplete else 2,
            "data": {"id": str(snowflake()), "name": name, "type": 1, "options": options or []},
            "channel_id": str(channel_id),
            "channel": {"id": str(channel_id), "type": 0 if guild else 1},
            "token": f"interaction-token-{interaction_id}",
            "version": 1,
            "app_permissions": str(
                self.bot_permissions & ~self._denied(channel_id) if guild else ALL_PERMISSIONS
            ),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)} if guild else {"1": str(user.id)},
            "context": 0 if guild else 1,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild:
            data["guild_id"] = str(GUILD_ID)
            data["guild_locale"] = "en-US"
            data["channel"].update({"guild_id": str(GUILD_ID), "name": "voice-help", "position": 0})
            data["member"] = {
                "user": user.payload(),
                "roles": [],
                "joined_at": now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": str(ALL_PERMISSIONS),
            }
        else:
            data["user"] = user.payload()
        await self.dispatch("INTERACTION_CREATE", data)
        return interaction_id

    async def ask_to_reconnect(self) -> None:
        """Gateway op 7 RECONNECT, as Discord sends before moving a session: the client should
        come back and RESUME rather than IDENTIFY again."""
        self.resumed.clear()
        for session in list(self._sockets):
            await session.send({"op": 7, "d": None})

    async def lose_the_session(self) -> None:
        """The connection drops and Discord forgets the session, as after a long outage: the
        client's RESUME is refused (op 9) and it identifies afresh. Events meanwhile go nowhere."""
        self.sessions.clear()
        self.missed.clear()
        for session in list(self._sockets):
            await session.close(4000, b"Unknown error.")

    async def drop_connection(self) -> None:
        """The connection drops and Discord keeps the session: the client RESUMEs it and is sent
        the events it missed meanwhile."""
        for session in list(self._sockets):
            await session.close(4000, b"Unknown error.")

    async def revoke_token(self) -> None:
        """The bot's token reset in the developer portal: Discord refuses it from now on (REST 401)
        and closes the gateway with 4004, Authentication failed."""
        self.token_revoked = True
        for session in list(self._sockets):
            await session.close(4004, b"Authentication failed.")

    def refuse_gateway(self, refusing: bool = True) -> None:
        """The gateway's edge answers each connection 503 before any websocket (Cloudflare in an
        outage), counted in `gateway_refusals`, until called with False."""
        self._gateway_refusing = refusing

    def gateway_outage(self) -> None:
        """The gateway goes away: a client connecting meanwhile hangs, no HELLO, until
        `end_gateway_outage()`, so a test can act while the bot knows it is disconnected."""
        self._gateway_up.clear()

    def end_gateway_outage(self) -> None:
        self._gateway_up.set()

    def interaction_records(self, interaction_id: str) -> list[Received]:
        token = f"interaction-token-{interaction_id}"
        return [r for r in self.received if interaction_id in r.path or token in r.path]

    async def interaction_answer(self, interaction_id: str, within: float = 20.0) -> Received:
        """The message the player finally sees: the callback's message, or after a deferral the
        edit of the original response or a follow-up."""

        def done(records: list[Received]) -> Received | None:
            for r in self.interaction_records(interaction_id):
                if r.error is not None:
                    continue
                if r.kind == "callback" and r.body.get("type") in (4, 8):
                    return r
                if r.kind in ("edit_original", "followup"):
                    return r
            return None

        return await self.wait_for(done, within)

    # ---- gateway ---------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        if self._gateway_refusing:
            async with self._changed:
                self.gateway_refusals += 1
                self._changed.notify_all()
            raise web.HTTPServiceUnavailable()
        if not self._gateway_up.is_set():
            async with self._changed:
                self.hanging_connections += 1
                self._changed.notify_all()
            await self._gateway_up.wait()
            self.hanging_connections -= 1
            if self._stopping.is_set():
                raise web.HTTPServiceUnavailable()
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress")
        if compress not in (None, "zlib-stream"):
            await ws.close(code=4000, message=b"unsupported compression")
            return ws
        session = _GatewaySession(self, ws, zlib_stream=compress == "zlib-stream")
        self._sockets.append(session)
        try:
            await session.run()
        finally:
            self._sockets.remove(session)
        if not session.closed_by_fake:
            if session.client_close_code in (1000, 1001):
                # Discord ends a session closed with 1000 or 1001 at once (the bot shows offline)
                # and will not RESUME it; any other close keeps it resumable for a while.
                self.sessions.pop(session.session_id, None)
                self.missed.pop(session.session_id, None)
            async with self._changed:
                self.close_codes.append(session.client_close_code)
                self._changed.notify_all()
        return ws

    def ready_payload(self, session_id: str) -> dict[str, Any]:
        return {
            "v": 10,
            "user": {
                **user_payload(BOT_USER_ID, "voxdesk", bot=True),
                "verified": True,
                "mfa_enabled": False,
                "flags": 0,
            },
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APPLICATION_ID), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "shard": [0, 1],
        }

    def _last_message_id(self, channel_id: int) -> str | None:
        stored = self.messages.get(channel_id)
        return str(max(stored)) if stored else None

    def thread_payload(self, thread_id: int, *, member: bool = False) -> dict[str, Any]:
        """A thread as a listing or an event shows it; `member`: as a channel read or GUILD_CREATE
        shows it, with "the thread member object for the current user as a property on the channel, if
        the current user is a member of the thread" (Discord's threads topic)."""
        thread = self.threads[thread_id]
        stored = self.messages.get(thread_id, {})
        joined = member and BOT_USER_ID in thread["members"]
        return {
            **({"member": self._bot_thread_member(thread_id)} if joined else {}),
            "id": str(thread_id),
            "type": thread["type"],
            "guild_id": str(GUILD_ID),
            "parent_id": str(thread["parent_id"]),
            "owner_id": str(1),
            "name": thread["name"],
            "last_message_id": self._last_message_id(thread_id),
            "message_count": len(stored),
            "total_message_sent": len(stored),
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": thread["archived"],
                "auto_archive_duration": 1440,
                "archive_timestamp": thread["archive_timestamp"],
                "locked": thread["locked"],
                **({"invitable": True} if thread["type"] == PRIVATE_THREAD else {}),
            },
        }

    def channel_payload(self, channel_id: int) -> dict[str, Any]:
        """A guild channel, thread or DM channel as Discord describes it; 10003 for any other id."""
        if channel_id in self.threads:
            return self.thread_payload(channel_id, member=True)
        if channel_id in self.dm_channels:
            return {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": self._last_message_id(channel_id),
                "flags": 0,
                "recipients": [self.dm_channels[channel_id]],
            }
        if channel_id not in self.guild_channels:
            raise _unknown_channel()
        denied = self.denied.get(channel_id, 0)
        overwrites = [{"id": str(GUILD_ID), "type": 0, "allow": "0", "deny": str(denied)}] if denied else []
        kind = self.channel_types.get(channel_id, 0)
        return {
            "id": str(channel_id),
            "type": kind,
            **({"available_tags": [], "default_reaction_emoji": None} if kind == GUILD_FORUM else {}),
            **(
                {"bitrate": 64000, "user_limit": 0, "rtc_region": None}
                if kind in (GUILD_VOICE, GUILD_STAGE_VOICE)
                else {}
            ),
            "guild_id": str(GUILD_ID),
            "flags": 0,
            "name": self.guild_channels[channel_id],
            "position": list(self.guild_channels).index(channel_id),
            "permission_overwrites": overwrites,
            "nsfw": False,
            "topic": None,
            "last_message_id": self._last_message_id(channel_id),
            "rate_limit_per_user": 0,
            "parent_id": None,
        }

    def guild_payload(self) -> dict[str, Any]:
        channels = [self.channel_payload(cid) for cid in self.guild_channels]
        return {
            "id": str(GUILD_ID),
            "name": "Voxdesk Test Arena",
            "icon": None,
            "owner_id": "1",
            "unavailable": False,
            "member_count": 3,
            "large": False,
            "features": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "roles": [
                {
                    "id": str(GUILD_ID),  # @everyone shares the guild's id
                    "name": "@everyone",
                    "permissions": str(self.bot_permissions),  # the bot has no role of its own here
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "stickers": [],
            "channels": channels,
            # "All active threads in the guild that current user has permission to view"
            "threads": [self.thread_payload(t, member=True) for t in self._active_threads_seen()],
            "members": [self._bot_member()],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": now_iso(),
        }

    def _active_threads_seen(self) -> list[int]:
        return [t for t, v in self.threads.items() if not v["archived"] and self.bot_sees(t)]

    # ---- REST ------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        api = request.path.startswith("/api/")
        if api and "/webhooks/" not in request.path and "/interactions/" not in request.path:
            if self.token_revoked or request.headers.get("Authorization") != f"Bot {TOKEN}":
                return self._counted(request, _json({"message": "401: Unauthorized", "code": 0}, status=401))
        try:
            for name, value in request.match_info.items():
                if name.endswith("_id") and not value.isdigit():  # as Discord checks a snowflake
                    said = f"Value {value!r} is not snowflake."
                    self.refuse(f"{request.method} {request.path}: {name}: {said}")
                    errors = {name: {"_errors": [{"code": "NUMBER_TYPE_COERCE", "message": said}]}}
                    raise DiscordError(400, 50035, "Invalid Form Body", errors)
            channel = request.match_info.get("channel_id", "")
            # The CDN still serves what was posted there: its URLs are not the bot's membership.
            if self.left_guild and api and channel.isdigit() and self.in_guild(int(channel)):
                self._refuse_as_discord(
                    f"{request.method} {request.path}: the bot is no longer in the guild",
                    DiscordError(403, 50001, "Missing Access"),
                )
            if api and channel.isdigit() and int(channel) in self.deleted_channels:
                self._refuse_as_discord(
                    f"{request.method} {request.path}: a deleted channel", _unknown_channel()
                )
            if api and channel.isdigit() and not self.bot_sees(int(channel)):
                # A private thread the bot was not added to, without Manage Threads: Discord
                # answers as for any channel the bot may not view.
                self._refuse_as_discord(
                    f"{request.method} {request.path}: a private thread the bot is not in",
                    DiscordError(403, 50001, "Missing Access"),
                )
            if api and (over := await self._over_a_limit(request)) is not None:
                return self._closing(over, api, request)
            response = await handler(request)
            if api:
                self._check_answer(request, response)
                self._limit_headers(request, response)
        except DiscordError as exc:
            response = exc.response()
        except json.JSONDecodeError as exc:
            self.refuse(f"{request.method} {request.path}: the body is not JSON ({exc})")
            response = DiscordError(400, 50109, "The request body contains invalid JSON.").response()
        except web.HTTPException:
            raise
        except Exception as exc:
            # A request the fake cannot take (a body it did not foresee): without
            # a reason kept here, the bot would retry the bare 500 and the test time out mutely.
            self.refuse(f"{request.method} {request.path}: the fake failed on it: {exc!r}")
            if request.path == "/gateway":
                raise  # the socket is open already: no HTTP answer can follow
            response = _json({"message": "500: Internal Server Error", "code": 0}, status=500)
        else:
            return self._closing(response, api, request)
        async with self._changed:  # a waiter may be waiting for what was just refused
            self._changed.notify_all()
        return self._closing(response, api, request)

    def _check_answer(self, request: web.Request, response: web.StreamResponse) -> None:
        """Hold a successful answer to the spec: Discord's errors (4XX) have no schema there, and
        an answer to a connection the fake cut goes to nobody."""
        if not isinstance(response, web.Response) or not 200 <= response.status < 300:
            return
        if request.transport is None or request.transport.is_closing():
            return
        raw = response.body
        body = json.loads(raw) if isinstance(raw, bytes) and raw else None
        path = request.path.removeprefix("/api/v10")
        content_type = response.content_type if body is not None else ""
        for error in response_errors(SPEC, path, request.method, response.status, content_type, body):
            self.answered_off_spec(f"{request.method} {request.path} {response.status}: {error}")

    def _closing(self, response: web.StreamResponse, api: bool, request: web.Request) -> web.StreamResponse:
        if api and not self.keep_alive:
            response.force_close()
        return self._counted(request, response) if api else response

    def _counted(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """`response`, kept in `invalid` if Discord would count it toward Cloudflare's ban."""
        shared = response.headers.get("X-RateLimit-Scope") == "shared"
        if response.status in INVALID_STATUSES and not shared:
            self.invalid.append(f"{request.method} {request.path} {response.status}")
        return response

    # ---- Discord's rate limits under load (throttle) ------------------------------------

    def throttle(self, scale: float) -> None:
        """Limit as Discord does (ROUTE_LIMITS per channel, GLOBAL_LIMIT in all), each window
        `scale` times as long as Discord's: a test's raid meets the same limits in less time."""
        self.throttle_scale = scale

    @staticmethod
    def _bucket_of(request: web.Request) -> str | None:
        path, method = request.path, request.method
        if method == "POST" and path.endswith("/messages"):
            return "messages"
        if method in ("PUT", "DELETE") and "/reactions/" in path:
            return "reactions"
        if method == "POST" and path.endswith("/typing"):
            return "typing"
        return None

    def _take(self, key: tuple[str, int], limit: int, seconds: float) -> tuple[int, float]:
        """One use of the window at `key`: (uses left after it, or -1 when none was left; when the
        window resets, by time.monotonic())."""
        assert self.throttle_scale is not None
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now >= window[0]:
            window = self._windows[key] = [now + seconds * self.throttle_scale, 0]
        if window[1] >= limit:
            return -1, window[0]
        window[1] += 1
        return limit - int(window[1]), window[0]

    async def _over_a_limit(self, request: web.Request) -> web.Response | None:
        """A 429 as Discord answers a request over its route's bucket or the global limit (not
        interactions': "not bound to the bot's Global Rate Limit"); None to go on, its bucket's
        state kept for `_limit_headers`."""
        if self.throttle_scale is None or "/webhooks/" in request.path or "/interactions/" in request.path:
            return None
        left, reset = self._take(("global", 0), *GLOBAL_LIMIT)
        bucket = self._bucket_of(request)
        channel = request.match_info.get("channel_id", "")
        if left >= 0 and bucket is not None and channel.isdigit():
            limit = ROUTE_LIMITS[bucket][0]
            left, reset = self._take((bucket, int(channel)), *ROUTE_LIMITS[bucket])
            request["limit"] = (bucket, limit, max(left, 0), reset)
        if left >= 0:
            return None
        retry_after = max(reset - time.monotonic(), 0.001)
        scope = "user" if "limit" in request else "global"
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(retry_after, 3),
            "global": scope == "global",
            "code": 0,
        }
        for error in component_errors(SPEC, "RatelimitedResponse", body):
            self.answered_off_spec(f"{request.method} {request.path} 429: {error}")
        headers = {
            "Content-Type": "application/json",
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Scope": scope,
        }
        if scope == "global":
            headers["X-RateLimit-Global"] = "true"
        response = web.Response(body=json.dumps(body).encode(), status=429, headers=headers)
        self._limit_headers(request, response)
        kind = {"messages": "message", "typing": "typing"}.get(self._bucket_of(request) or "", "")
        if "/reactions/" in request.path:
            kind = "reaction_add" if request.method == "PUT" else "reaction_remove"
        record = Received(
            kind or "other", request.method, request.path, int(channel) if channel.isdigit() else None
        )
        if "emoji" in request.match_info:
            record.body = {
                "message_id": request.match_info["message_id"],
                "emoji": request.match_info["emoji"],
            }
        record.error = 429
        self.throttled.append(record)
        await self._record(record)
        return response

    def _limit_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """The X-RateLimit-* headers of the request's bucket, as Discord sends on every answer."""
        if "limit" not in request:
            return
        bucket, limit, left, reset = request["limit"]
        after = max(reset - time.monotonic(), 0.0)
        response.headers.update(
            {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(left),
                "X-RateLimit-Reset": f"{time.time() + after:.3f}",
                "X-RateLimit-Reset-After": f"{after:.3f}",
                "X-RateLimit-Bucket": f"fake-{bucket}-bucket",
            }
        )

    async def _unknown(self, request: web.Request) -> NoReturn:
        self.refuse(f"{request.method} {request.path}: not an endpoint the fake serves")
        raise DiscordError(404, 0, "404: Not Found")

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    async def _me(self, request: web.Request) -> web.Response:
        return _json(
            {
                **user_payload(BOT_USER_ID, "voxdesk", bot=True),
                "verified": True,
                "mfa_enabled": False,
                "locale": "en-US",
            }
        )

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(APPLICATION_ID),
                "name": "voxdesk",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user_payload(1, "owner"),
                "verify_key": "0" * 64,
                "type": None,
                "flags": self.application_flags,
                "approximate_guild_count": self.approximate_guild_count,
                "flags_new": str(self.application_flags),
                "redirect_uris": [],
                "team": None,
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "eligible_oauth2_scopes": [],
            }
        )

    async def _read_body(self, request: web.Request) -> tuple[str, Any, list[Upload]]:
        """(content type, JSON body, uploaded files) for JSON and multipart requests alike."""
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            body: Any = None
            files: list[Upload] = []
            while (part := await reader.next()) is not None:
                name = part.name or ""
                data = await part.read()  # type: ignore[union-attr]
                if name == "payload_json":
                    body = json.loads(data)
                elif re.fullmatch(r"files\[\d+\]", name):
                    files.append(
                        Upload(name, part.filename or "", part.headers.get("Content-Type", ""), bytes(data))
                    )
                else:
                    self._violate(50035, f"Invalid Form Body: unexpected form field {name!r}")
            return "multipart/form-data", body if body is not None else {}, files
        if request.content_type == "application/json":
            return "application/json", await request.json(), []
        self._violate(50035, f"Invalid Form Body: unsupported content type {request.content_type}")

    def _check(self, spec_path: str, method: str, content_type: str, body: Any) -> None:
        errors = spec_errors(spec_path, method, content_type, body)
        if errors:
            for e in errors:
                self.refuse(f"{method.upper()} {spec_path}: {e}")
            raise DiscordError(400, 50035, "Invalid Form Body: " + "; ".join(errors[:3]))

    def _check_fields(self, body: dict[str, Any], allowed_flags: int, where: str = "") -> None:
        """Flags and allowed_mentions of any message a bot sends, beyond their types."""
        flags = int(body.get("flags") or 0)
        if flags & ~allowed_flags:
            self._violate(50035, f"{where}flags: {flags} sets {flags & ~allowed_flags}, not settable here")
        mentions = body.get("allowed_mentions") or {}
        parse = mentions.get("parse") or []
        if set(parse) - MENTION_TYPES:
            self._violate(50035, f"{where}allowed_mentions.parse: {parse} is not users, roles, everyone")
        for kind in ("users", "roles"):
            ids = mentions.get(kind) or []
            if kind in parse and ids:
                self._violate(
                    50035,
                    f"{where}allowed_mentions: parse:[{kind!r}] and {kind}: [ids] are mutually exclusive",
                )
            if len(ids) > 100:
                self._violate(50035, f"{where}allowed_mentions.{kind}: at most 100 ids")
        if not isinstance(mentions.get("replied_user", False), bool):
            self._violate(50035, f"{where}allowed_mentions.replied_user: must be a boolean")

    def _check_message(self, body: dict[str, Any], files: list[Upload], channel_id: int | None) -> None:
        """What Discord checks beyond the schema: bot content limit, non-empty, attachment ids,
        flags and mentions, and the voice-message rules."""
        self._check_fields(body, MESSAGE_FLAGS)
        content = body.get("content") or ""
        if len(content) > CONTENT_LIMIT:
            self._violate(50035, f"content: Must be {CONTENT_LIMIT} or fewer in length.")
        declared = body.get("attachments") or []
        # An attachment's id names the upload by its part, files[id]: not by the order of uploads.
        file_ids = {m[1] for f in files if (m := re.fullmatch(r"files\[(\d+)\]", f.field))}
        for a in declared:
            if str(a["id"]) not in file_ids:
                self._violate(50035, f"attachments: id {a['id']} refers to no uploaded files[{a['id']}]")
        if not (content or files or body.get("embeds") or body.get("sticker_ids") or body.get("poll")):
            self._violate(50006, "Cannot send an empty message")
        flags = int(body.get("flags") or 0)
        if not flags & VOICE_FLAG:
            return
        if content:
            self._violate(50161, "Voice messages cannot have content")
        if len(files) != 1 or len(declared) != 1:
            self._violate(50159, "Voice messages must have a single audio attachment")
        attachment = declared[0]
        if attachment.get("duration_secs") is None or attachment.get("waveform") is None:
            self._violate(50160, "Voice messages must have supporting metadata (duration_secs and waveform)")
        try:
            wave = base64.b64decode(attachment["waveform"], validate=True)
        except ValueError:
            self._violate(50035, "attachments.0.waveform: not base64")
        if not 1 <= len(wave) <= 256:
            self._violate(50035, "attachments.0.waveform: 1 to 256 samples")
        seconds = _ogg_opus_seconds(files[0].data)
        if seconds is None:
            self._violate(50159, "Voice messages must have a single audio attachment (Ogg/Opus)")
        declared_seconds = float(attachment["duration_secs"])
        # The player sees this duration on the voice message's player; it must be the audio's.
        if abs(declared_seconds - seconds) > max(1.0, 0.1 * seconds):
            self._violate(
                50035,
                f"attachments.0.duration_secs: {declared_seconds} s, but the audio lasts {seconds:.2f} s",
            )
        self._check_permission(channel_id, SEND_VOICE_MESSAGES, "POST a voice message")
        if channel_id in self.refuse_voice_in:
            # Not a malformed request: the channel refuses voice messages, as Discord may.
            raise DiscordError(403, 50173, "Cannot send voice messages in this channel")

    def _violate(self, code: int, message: str, status: int = 400) -> NoReturn:
        raise DiscordError(status, code, self.refuse(message))

    def _message_response(
        self, channel_id: int, body: dict[str, Any], files: list[Upload], *, keep_reference: bool = True
    ) -> dict[str, Any]:
        message_id = snowflake()
        attachments = []
        for declared, upload in zip(body.get("attachments") or [{} for _ in files], files, strict=False):
            attachment_id = snowflake()
            self.attachments[attachment_id] = upload.data
            url = f"{self.url}/attachments/{channel_id}/{attachment_id}/{upload.filename}"
            item = {
                "id": str(attachment_id),
                "filename": upload.filename,
                "size": len(upload.data),
                "url": url,
                "proxy_url": url,
                # What the client declared for the part: Discord serves the file with it.
                "content_type": upload.content_type or "application/octet-stream",
            }
            for key in ("duration_secs", "waveform"):
                if declared.get(key) is not None:
                    item[key] = declared[key]
            attachments.append(item)
        response = message_payload(
            message_id,
            channel_id,
            user_payload(BOT_USER_ID, "voxdesk", bot=True),
            body.get("content") or "",
            attachments=attachments,
            flags=int(body.get("flags") or 0),
        )
        reference = body.get("message_reference") if keep_reference else None
        if reference:
            response["type"] = 19  # REPLY
            response["message_reference"] = {
                "type": 0,
                "message_id": str(reference["message_id"]),
                "channel_id": str(channel_id),
                **({"guild_id": str(GUILD_ID)} if self.in_guild(channel_id) else {}),
            }
        return response

    async def _create_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        content_type, body, files = await self._read_body(request)
        record = Received("message", request.method, request.path, channel_id, body, files)
        if self.posts_held > 0 and self.posts_before_held > 0:
            self.posts_before_held -= 1
        elif self.posts_held > 0:
            self.posts_held -= 1
            await self._until_released(self.posts_released)
        if self.posts_cut > 0:
            self.posts_cut -= 1
            return await self._cut(request, record)
        if self.posts_banned > 0:
            self.posts_banned -= 1
            record.error = 429
            await self._record(record)
            return _cloudflare_page(429, "error code: 1015")
        if self.posts_rate_limited > 0:
            self.posts_rate_limited -= 1
            record.error = 429
            await self._record(record)
            return self._rate_limited("messages", global_=self.posts_limit_global)
        try:
            self._check("/channels/{channel_id}/messages", "post", content_type, body)
            if body.get("enforce_nonce") and body.get("nonce") is None:
                self._violate(50035, "enforce_nonce: a nonce is required")
            if self.posts_unavailable > 0:
                self.posts_unavailable -= 1
                raise DiscordError(503, 0, "503: Service Unavailable")
            if (made := self._made_with_nonce(body)) is not None:
                # "If another message was created by the same author with the same nonce, that
                # message will be returned and no new message will be created."
                again = Received("message_again", request.method, request.path, channel_id, body, files)
                again.response = made
                await self._record(again)
                return await self._answer_posted(request, made)
            self._check_permission(channel_id, SEND_MESSAGES, "POST a message")
            if body.get("message_reference"):
                # "the current user must have the READ_MESSAGE_HISTORY permission" to reply; Discord
                # refuses with a code of its own for it, not Missing Permissions.
                if not self._bot_may(channel_id, READ_MESSAGE_HISTORY):
                    self._refuse_as_discord(
                        f"POST a reply in channel {channel_id} without permission {READ_MESSAGE_HISTORY:#x}",
                        DiscordError(403, 160002, "Cannot reply without permission to read message history"),
                    )
            if files and not int(body.get("flags") or 0) & VOICE_FLAG:
                # A voice message is an upload too, but gated by Send Voice Messages alone
                # (discord-api-docs#6082).
                self._check_permission(channel_id, ATTACH_FILES, "POST an upload")
            self._check_message(body, files, channel_id)
            if any(len(f.data) > self.upload_limit for f in files):
                raise DiscordError(413, 40005, "Request entity too large")
            self._check_recipient(channel_id, request.path)
            keep_reference = self._reference_stands(channel_id, body, request.path)
            await self._post_in_thread(channel_id, request.path)
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        record.response = self._message_response(channel_id, body, files, keep_reference=keep_reference)
        if body.get("nonce") is not None:
            record.response["nonce"] = body["nonce"]
            if body.get("enforce_nonce"):
                self._nonces[(BOT_USER_ID, str(body["nonce"]))] = (time.monotonic(), record.response)
        self._store(record.response)
        await self._record(record)
        if channel_id in self.threads:
            # "You can join a thread by sending a message in it" (Discord's help on threads).
            await self.add_to_thread(channel_id)
        if self.after_post is not None:
            await self.after_post(record)
        return await self._answer_posted(request, record.response)

    async def _answer_posted(self, request: web.Request, message: dict[str, Any]) -> web.Response:
        """The created message, unless the answer is to be lost on its way back."""
        if self.posts_lost > 0:
            self.posts_lost -= 1
            return _cloudflare_page(502, "<html><head><title>502 Bad Gateway</title></head></html>")
        if self.posts_cut_after > 0:
            self.posts_cut_after -= 1
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=204)  # never sent: the connection is gone
        return _json(message)

    def _made_with_nonce(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The message the bot created with this nonce "in the past few minutes", if it asked
        Discord to enforce it."""
        if not body.get("enforce_nonce") or body.get("nonce") is None:
            return None
        made = self._nonces.get((BOT_USER_ID, str(body["nonce"])))
        if made is None or time.monotonic() - made[0] > NONCE_SECONDS:
            return None
        return made[1]

    def _rate_limited(self, bucket: str, *, global_: bool) -> web.Response:
        """A 429 as Discord sends one: the JSON body with `retry_after`, the bucket's headers,
        and `Via`, without which discord.py takes it for Cloudflare's ban."""
        body = {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": global_}
        headers = {
            "Content-Type": "application/json",
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(self.retry_after))),
            "X-RateLimit-Scope": "global" if global_ else "user",
        }
        if global_:
            headers["X-RateLimit-Global"] = "true"
        else:
            headers.update(
                {
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": f"{time.time() + self.retry_after:.3f}",
                    "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
                    "X-RateLimit-Bucket": f"fake-{bucket}-bucket",
                }
            )
        return web.Response(body=json.dumps(body).encode(), status=429, headers=headers)

    def _check_recipient(self, channel_id: int, path: str) -> None:
        """The channel exists, and if it is a DM its user takes DMs from the bot."""
        if self.in_guild(channel_id):
            return
        recipient = self.dm_channels.get(channel_id)
        if recipient is None:
            self._refuse_as_discord(f"POST {path}: no such channel", _unknown_channel())
        if int(recipient["id"]) in self.dms_closed | self.left_members:
            # The user closed their DMs or blocked the bot: Discord's answer, not the bot's error.
            raise DiscordError(403, 50007, "Cannot send messages to this user")
        if self.dms_too_fast > 0:
            self.dms_too_fast -= 1
            raise DiscordError(403, 40003, "You are opening direct messages too fast.")

    def _reference_stands(self, channel_id: int, body: dict[str, Any], path: str) -> bool:
        """Whether the message keeps its reply reference. One to a message that is gone is
        refused, unless `fail_if_not_exists` is false: then Discord posts a plain message."""
        reference = body.get("message_reference")
        if not reference:
            return True
        where = int(reference.get("channel_id") or channel_id)
        if int(reference["message_id"]) in self.messages.get(where, {}):
            return True
        if reference.get("fail_if_not_exists") is False:
            return False
        errors = {
            "message_reference": {
                "_errors": [{"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}]
            }
        }
        self._refuse_as_discord(
            f"POST {path}: REPLIES_UNKNOWN_MESSAGE, a reply to message {reference['message_id']}, "
            "which no longer exists, without fail_if_not_exists: false",
            DiscordError(400, 50035, "Invalid Form Body", errors),
        )

    def _stored(self, channel_id: int, message_id: str) -> dict[str, Any]:
        if not message_id.isdigit():
            self._violate(50035, f"message_id: {message_id!r} is not a snowflake")
        message = self.messages.get(channel_id, {}).get(int(message_id))
        if message is None:
            raise _unknown_message()
        return message

    def _as_read(self, message: dict[str, Any]) -> dict[str, Any]:
        """A stored message as REST returns it: no `member` or `guild_id` (fields of the gateway's
        MESSAGE_CREATE alone), and without the Message Content intent granted, the content of
        others' guild messages hidden."""
        message = {k: v for k, v in message.items() if k not in ("member", "guild_id")}
        granted = self.application_flags & ((1 << 19) | (1 << 18))
        if granted or int(message["author"]["id"]) == BOT_USER_ID:
            return message
        return _without_content(message)

    async def _get_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        record = Received("get_message", request.method, request.path, channel_id)
        try:
            # Unlike a history read (an empty page), one message of a guild channel "requires the
            # VIEW_CHANNEL and READ_MESSAGE_HISTORY permissions": without them, Missing Access.
            if not self._bot_may(channel_id, VIEW_CHANNEL | READ_MESSAGE_HISTORY):
                self._refuse_as_discord(
                    f"GET message in channel {channel_id} without View Channel and Read Message History",
                    DiscordError(403, 50001, "Missing Access"),
                )
            message = self._as_read(self._stored(channel_id, request.match_info["message_id"]))
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        if self.message_banned > 0:
            self.message_banned -= 1
            record.error = 429
            await self._record(record)
            return _cloudflare_page(429, "error code: 1015")
        if self.message_blocked > 0:
            self.message_blocked -= 1
            record.error = 403
            await self._record(record)
            return _cloudflare_page(
                403,
                "<!DOCTYPE html>\n<html><head><title>Attention Required! | Cloudflare</title></head></html>",
            )
        if self.message_rate_limited > 0:
            self.message_rate_limited -= 1
            record.error = 429
            await self._record(record)
            return self._rate_limited("message", global_=False)
        record.response = message
        await self._record(record)
        if self.after_fetch is not None:
            await self.after_fetch(record)
        return _json(message)

    async def _delete_own_message(self, request: web.Request) -> web.Response:
        """The bot deletes a message: one of its own needs no permission, as on Discord. Anyone
        else's needs Manage Messages, which the invite does not ask for (and in a DM cannot be
        done at all): the bot has no call to, and such a request fails the test. 204, and the
        MESSAGE_DELETE Discord sends every session that sees the channel, the bot's too."""
        channel_id = int(request.match_info["channel_id"])
        record = Received("message_delete", request.method, request.path, channel_id)
        record.body = {"message_id": request.match_info["message_id"]}
        try:
            message = self._stored(channel_id, request.match_info["message_id"])
            if int(message["author"]["id"]) != BOT_USER_ID:
                self._refuse_as_discord(
                    f"DELETE {request.path}: a message the bot did not post",
                    DiscordError(403, 50013, "Missing Permissions"),
                )
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        if self.deletes_cut > 0:
            self.deletes_cut -= 1
            await self._record(record)
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=204)  # never sent: the connection is gone
        del self.messages[channel_id][int(message["id"])]
        await self._record(record)
        event = {"id": message["id"], "channel_id": str(channel_id)}
        if self.in_guild(channel_id):
            event["guild_id"] = str(GUILD_ID)
        await self.dispatch("MESSAGE_DELETE", event)
        return web.Response(status=204)

    async def _history(self, request: web.Request) -> web.Response:
        """GET /channels/{id}/messages: at most `limit` (1-100, default 50) messages, newest
        first whatever the anchor; `after` takes the oldest ones after it, `around` about half
        each side of it (itself included)."""
        channel_id = int(request.match_info["channel_id"])
        self.history_begun.append(channel_id)
        if held := self.history_held.get(channel_id):
            self.history_waiting += 1
            try:
                await held.wait()
            finally:
                self.history_waiting -= 1
        if self.history_seconds:
            await asyncio.sleep(self.history_seconds)
        record = Received("history", request.method, request.path, channel_id, dict(request.query))
        try:
            anchor, at, limit = self._history_query(request)
            if not self.in_guild(channel_id) and channel_id not in self.dm_channels:
                raise _unknown_channel()
            # Without View Channel a guild channel shows the bot nothing: Missing Access (without
            # Read Message History alone, an empty page; see below).
            if not self._bot_may(channel_id, VIEW_CHANNEL):
                self._refuse_as_discord(
                    f"GET messages in channel {channel_id} without View Channel",
                    DiscordError(403, 50001, "Missing Access"),
                )
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        if self.history_banned > 0:
            self.history_banned -= 1
            record.error = 429
            await self._record(record)
            return _cloudflare_page(429, "error code: 1015")
        if self.history_rate_limited > 0:
            self.history_rate_limited -= 1
            record.error = 429
            await self._record(record)
            return self._rate_limited("history", global_=False)
        past = self.history_unavailable_after.get(channel_id)
        if channel_id in self.history_unavailable_in or (
            past is not None and anchor == "after" and at >= past
        ):
            record.error = 503
            await self._record(record)
            return _json({"message": "503: Service Unavailable", "code": 0}, status=503)
        # Without Read Message History Discord answers 200 with no messages, not an error.
        hidden = not self._bot_may(channel_id, READ_MESSAGE_HISTORY)
        ids = [] if hidden else sorted(self.messages.get(channel_id, {}))
        if anchor == "before":
            chosen = [i for i in ids if i < at][-limit:]
        elif anchor == "after":
            chosen = [i for i in ids if i > at][:limit]
        elif anchor == "around":
            newer = [i for i in ids if i > at][: limit // 2]
            chosen = [i for i in ids if i <= at][-(limit - len(newer)) :] + newer
        else:
            chosen = ids[-limit:]
        stored = self.messages.get(channel_id, {})
        page = [self._as_read(stored[i]) for i in reversed(chosen)]
        record.response = {"messages": [m["id"] for m in page]}
        await self._record(record)
        return _json(page)

    def _history_query(self, request: web.Request) -> tuple[str | None, int, int]:
        """(before | after | around | None, its message id, limit); a malformed query is a 50035."""
        query = request.query
        anchors = [name for name in ("before", "after", "around") if name in query]
        if len(anchors) > 1:
            self._violate(50035, f"GET messages: {', '.join(anchors)} are mutually exclusive")
        at = 0
        for name in anchors:
            if not query[name].isdigit():
                self._violate(50035, f'{name}: Value "{query[name]}" is not snowflake.')
            at = int(query[name])
        raw = query.get("limit", "50")
        if not raw.lstrip("-").isdigit():
            self._violate(50035, f'limit: Value "{raw}" is not int.')
        limit = int(raw)
        if not 1 <= limit <= 100:
            bound = "less than or equal to 100" if limit > 100 else "greater than or equal to 1"
            self._violate(50035, f"limit: int value should be {bound}.")
        return (anchors[0] if anchors else None), at, limit

    async def _archived_threads(self, request: web.Request) -> web.Response:
        """GET /channels/{id}/threads/archived/public|private, as Discord documents it: a channel's
        archived threads of that kind (a forum's posts are public ones), "ordered by
        archive_timestamp, in descending order", those archived before `before` (an ISO 8601
        timestamp) when given, at most `limit` (2-100 in the spec, 50 by default), and `has_more`.
        Read Message History is required, and for private threads Manage Threads as well."""
        channel_id = int(request.match_info["channel_id"])
        kind = request.match_info["kind"]
        await self._archived_threads_wait()
        record = Received("archived_threads", request.method, request.path, channel_id, dict(request.query))
        try:
            if kind not in ("public", "private"):
                await self._unknown(request)
            if channel_id not in self.guild_channels:
                raise _unknown_channel()
            before, limit = self._archived_query(request)
            self._check_view(channel_id, f"GET {kind} archived threads")
            self._check_permission(channel_id, READ_MESSAGE_HISTORY, f"GET {kind} archived threads")
            if kind == "private":
                self._check_permission(channel_id, MANAGE_THREADS, "GET private archived threads")
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        if banned := await self._archived_threads_ban(record):
            return banned
        body = self.archived_threads_payload(channel_id, kind, before, limit)
        record.response = {"threads": [t["id"] for t in body["threads"]], "has_more": body["has_more"]}
        await self._record(record)
        return _json(body)

    async def _archived_threads_wait(self) -> None:
        if (held := self.archived_threads_held) is None:
            return
        self.archived_threads_waiting += 1
        try:
            await held.wait()
        finally:
            self.archived_threads_waiting -= 1

    async def _archived_threads_ban(self, record: Received) -> web.Response | None:
        if self.archived_threads_banned <= 0:
            return None
        self.archived_threads_banned -= 1
        record.error = 429
        await self._record(record)
        return _cloudflare_page(429, "error code: 1015")

    def archived_threads_payload(
        self, channel_id: int, kind: str, before: datetime.datetime | None, limit: int
    ) -> dict[str, Any]:
        wanted = PRIVATE_THREAD if kind == "private" else PUBLIC_THREAD
        archived = sorted(
            (
                (datetime.datetime.fromisoformat(t["archive_timestamp"]), thread_id)
                for thread_id, t in self.threads.items()
                if t["parent_id"] == channel_id and t["archived"] and t["type"] == wanted
            ),
            reverse=True,
        )
        chosen = [thread_id for at, thread_id in archived if before is None or at < before]
        return self._threads_page(chosen, limit)

    async def _active_threads(self, request: web.Request) -> web.Response:
        """GET /guilds/{id}/threads/active: "all active threads in a guild that the current user
        can access, includes public & private threads" (Discord's threads topic), with a thread
        member object for each the bot joined."""
        record = Received("active_threads", request.method, request.path, None)
        if int(request.match_info["guild_id"]) != GUILD_ID or self.left_guild:
            record.error = 10004
            await self._record(record)
            self._refuse_as_discord(
                f"GET {request.path}: not the bot's guild", DiscordError(404, 10004, "Unknown Guild")
            )
        threads = self._active_threads_seen()
        members = [self._bot_thread_member(t) for t in threads if BOT_USER_ID in self.threads[t]["members"]]
        body = {"threads": [self.thread_payload(t) for t in threads], "members": members}
        record.response = {"threads": [str(t) for t in threads]}
        await self._record(record)
        return _json(body)

    async def _joined_archived_threads(self, request: web.Request) -> web.Response:
        """GET /channels/{id}/users/@me/threads/archived/private ("List Joined Private Archived
        Threads"), as Discord documents it: the channel's archived private threads the bot has
        joined, "ordered by their id, in descending order", those whose id is below `before` (a
        snowflake here, where the other listings take a timestamp) when given, at most `limit`
        (2-100, 50 by default), and `has_more`. Read Message History is all it requires."""
        channel_id = int(request.match_info["channel_id"])
        await self._archived_threads_wait()
        record = Received("archived_threads", request.method, request.path, channel_id, dict(request.query))
        try:
            if channel_id not in self.guild_channels:
                raise _unknown_channel()
            before, limit = self._joined_archived_query(request)
            self._check_view(channel_id, "GET joined private archived threads")
            self._check_permission(channel_id, READ_MESSAGE_HISTORY, "GET joined private archived threads")
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        if banned := await self._archived_threads_ban(record):
            return banned
        body = self.joined_archived_threads_payload(channel_id, before, limit)
        record.response = {"threads": [t["id"] for t in body["threads"]], "has_more": body["has_more"]}
        await self._record(record)
        return _json(body)

    def joined_archived_threads_payload(
        self, channel_id: int, before: int | None, limit: int
    ) -> dict[str, Any]:
        joined = sorted(
            (
                thread_id
                for thread_id, t in self.threads.items()
                if t["parent_id"] == channel_id
                and t["archived"]
                and t["type"] == PRIVATE_THREAD
                and BOT_USER_ID in t["members"]
            ),
            reverse=True,
        )
        return self._threads_page([t for t in joined if before is None or t < before], limit)

    def _threads_page(self, chosen: list[int], limit: int) -> dict[str, Any]:
        page = chosen[:limit]
        # "a thread member object for each returned thread the current user has joined"
        members = [
            {"id": str(t), "user_id": str(BOT_USER_ID), "join_timestamp": joined_at, "flags": 0}
            for t in page
            if (joined_at := self.threads[t]["members"].get(BOT_USER_ID)) is not None
        ]
        return {
            "threads": [self.thread_payload(t) for t in page],
            "members": members,
            "has_more": len(chosen) > limit,
        }

    def _joined_archived_query(self, request: web.Request) -> tuple[int | None, int]:
        """(before, limit) of the joined private archived threads listing, `before` a thread id
        (the spec's SnowflakeType); a malformed query is a 50035."""
        query = request.query
        before = None
        if "before" in query:
            if re.fullmatch(r"0|[1-9][0-9]*", query["before"]) is None:
                self._violate(50035, f'before: Value "{query["before"]}" is not snowflake.')
            before = int(query["before"])
        return before, self._archived_limit(query.get("limit", "50"))

    def _archived_query(self, request: web.Request) -> tuple[datetime.datetime | None, int]:
        """(before, limit) of an archived threads listing; a malformed query is a 50035."""
        query = request.query
        before = None
        if "before" in query:
            try:
                before = datetime.datetime.fromisoformat(query["before"])
            except ValueError:
                self._violate(50035, f'before: Value "{query["before"]}" is not a valid ISO8601 timestamp.')
            if before.tzinfo is None:
                before = before.replace(tzinfo=datetime.UTC)
        return before, self._archived_limit(query.get("limit", "50"))

    def _archived_limit(self, raw: str) -> int:
        if not raw.lstrip("-").isdigit():
            self._violate(50035, f'limit: Value "{raw}" is not int.')
        limit = int(raw)
        if not 2 <= limit <= 100:  # the spec's bounds
            bound = "less than or equal to 100" if limit > 100 else "greater than or equal to 2"
            self._violate(50035, f"limit: int value should be {bound}.")
        return limit

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        record = Received("get_channel", request.method, request.path, channel_id)
        try:
            record.response = self.channel_payload(channel_id)
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        if self.channel_unavailable > 0:
            self.channel_unavailable -= 1
            record.error, record.response = 503, None
            await self._record(record)
            return _json({"message": "503: Service Unavailable", "code": 0}, status=503)
        await self._record(record)
        return _json(record.response)

    async def _get_member(self, request: web.Request) -> web.Response:
        """GET /guilds/{id}/members/{user}: a member of the guild (no privileged intent needed for
        one); 10007 for a user who is not, or no longer, in it."""
        user_id = int(request.match_info["user_id"])
        record = Received("get_member", request.method, request.path, None)
        if int(request.match_info["guild_id"]) != GUILD_ID or self.left_guild:
            record.error = 50001
            await self._record(record)
            raise DiscordError(403, 50001, "Missing Access")
        if user_id in self.left_members:
            record.error = 10007
            await self._record(record)
            raise DiscordError(404, 10007, "Unknown Member")
        member = member_payload(user_payload(user_id, f"player{user_id}"))
        record.response = member
        await self._record(record)
        return _json(member)

    async def _get_thread_member(self, request: web.Request) -> web.Response:
        """GET /channels/{id}/thread-members/{user} ("Get Thread Member"): "a thread member object
        for the specified user if they are a member of the thread", with their guild member when
        `with_member` is true; 404 10007 otherwise. The middleware answers for a thread the bot
        may not see; a channel that is no thread is refused as Discord refuses the thread-members
        routes there (50024)."""
        channel_id, user_id = int(request.match_info["channel_id"]), int(request.match_info["user_id"])
        record = Received("get_thread_member", request.method, request.path, channel_id, dict(request.query))
        try:
            if set(request.query) - {"with_member"}:
                self._violate(
                    50035, f"unknown query parameters: {sorted(set(request.query) - {'with_member'})}"
                )
            with_member = request.query.get("with_member", "false")
            if with_member not in ("true", "false", "True", "False"):
                self._violate(50035, f'with_member: Value "{with_member}" is not bool.')
            if channel_id not in self.threads:
                if channel_id not in self.guild_channels and channel_id not in self.dm_channels:
                    raise _unknown_channel()
                self._refuse_as_discord(
                    f"GET {request.path}: not a thread",
                    DiscordError(400, 50024, "Cannot execute action on this channel type"),
                )
            joined_at = self.threads[channel_id]["members"].get(user_id)
            if joined_at is None:
                raise DiscordError(404, 10007, "Unknown Member")
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        body: dict[str, Any] = {
            "id": str(channel_id),
            "user_id": str(user_id),
            "join_timestamp": joined_at,
            "flags": 0,
        }
        if with_member.lower() == "true" and user_id not in self.left_members:
            body["member"] = member_payload(user_payload(user_id, f"player{user_id}"))
        record.response = body
        await self._record(record)
        return _json(body)

    async def _create_dm(self, request: web.Request) -> web.Response:
        """POST /users/@me/channels: the bot's DM channel with a user, made once and returned
        again after. Opening one works even when the user takes no DMs; sending then fails."""
        body = await request.json()
        record = Received("open_dm", request.method, request.path, None, body)
        try:
            self._check("/users/@me/channels", "post", "application/json", body)
            if body.get("recipient_id") is None:
                self._violate(50035, "recipient_id: This field is required")
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        user_id = int(body["recipient_id"])
        known = self.dm_channels.get(dm_channel_id(user_id))
        channel_id = self._open_dm(known or user_payload(user_id, f"player{user_id % 10_000}"))
        record.channel_id = channel_id
        record.response = self.channel_payload(channel_id)
        await self._record(record)
        return _json(record.response)

    async def _until_released(self, held: asyncio.Event | None) -> None:
        if held is None:
            return
        stopping = asyncio.ensure_future(self._stopping.wait())
        released = asyncio.ensure_future(held.wait())
        try:
            await asyncio.wait({stopping, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            released.cancel()

    async def _cut(self, request: web.Request, record: Received) -> web.Response:
        """Close the request's connection with no answer, as a connection to Discord drops."""
        record.error = CONNECTION_CUT
        await self._record(record)
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=204)  # never sent: the connection is gone

    async def _typing(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        record = Received("typing", request.method, request.path, channel_id)
        await self._until_released(self.typing_held)
        if self.typing_rate_limited > 0:
            self.typing_rate_limited -= 1
            record.error = 429
            await self._record(record)
            return self._rate_limited("typing", global_=self.typing_limit_global)
        if self.typing_cut > 0:
            self.typing_cut -= 1
            return await self._cut(request, record)
        try:
            self._check_permission(channel_id, SEND_MESSAGES, "POST typing")
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        await self._record(record)
        return web.Response(status=204)

    async def _react(self, request: web.Request) -> web.Response:
        kind = "reaction_add" if request.method == "PUT" else "reaction_remove"
        channel_id = int(request.match_info["channel_id"])
        body = {"message_id": request.match_info["message_id"], "emoji": request.match_info["emoji"]}
        record = Received(kind, request.method, request.path, channel_id, body)
        await self._until_released(self.reactions_held)
        if self.reactions_rate_limited > 0:
            self.reactions_rate_limited -= 1
            record.error = 429
            await self._record(record)
            return self._rate_limited("reactions", global_=self.reactions_limit_global)
        if self.reactions_cut > 0:
            self.reactions_cut -= 1
            return await self._cut(request, record)
        try:
            if kind == "reaction_add":  # "requires the READ_MESSAGE_HISTORY permission"
                self._check_permission(channel_id, READ_MESSAGE_HISTORY, "PUT a reaction")
                # and ADD_REACTIONS "if nobody else has reacted to the message using this emoji"
                self._check_permission(channel_id, ADD_REACTIONS, "PUT a reaction")
            message = self._stored(channel_id, body["message_id"])  # a deleted message takes none
            if self.threads.get(channel_id, {}).get("archived"):
                # "Users cannot edit messages, add reactions, ... in archived threads"
                self._refuse_as_discord(
                    f"{request.method} {request.path}: a reaction in an archived thread",
                    DiscordError(400, 50083, "Operation cannot be performed on an archived thread"),
                )
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        _keep_own_reaction(message, body["emoji"], kind == "reaction_add")
        await self._record(record)
        return web.Response(status=204)

    async def _callback(self, request: web.Request) -> web.Response:
        interaction_id = request.match_info["interaction_id"]
        if request.match_info["token"] != f"interaction-token-{interaction_id}":
            self._violate(50027, "Invalid Webhook Token", status=401)
        content_type, body, files = await self._read_body(request)
        record = Received("callback", request.method, request.path, None, body, files)
        if self.callbacks_cut > 0:
            self.callbacks_cut -= 1
            return await self._cut(request, record)
        if self.callbacks_rate_limited > 0:
            self.callbacks_rate_limited -= 1
            return await self._interaction_rate_limited(record)
        try:
            self._check(
                "/interactions/{interaction_id}/{interaction_token}/callback", "post", content_type, body
            )
            if interaction_id not in self.interactions:
                self._refuse_as_discord(
                    f"POST {request.path}: no interaction was made with this id",
                    DiscordError(404, 10062, "Unknown interaction"),
                )
            made = ((int(interaction_id) >> 22) + DISCORD_EPOCH_MS) / 1000
            late = self.first_response_within is not None and time.time() - made > self.first_response_within
            if late:
                self._refuse_as_discord(
                    f"POST {request.path}: a first response {time.time() - made:.1f} s after the "
                    "interaction was made",
                    DiscordError(404, 10062, "Unknown interaction"),
                )
            # An autocomplete request takes suggestions (8) and nothing else; a command, no
            # suggestions: Discord answers 50035 "In type: Value must be one of {8}." and the like.
            suggesting = interaction_id in self.autocompletes
            if suggesting != (body.get("type") == AUTOCOMPLETE_RESULT):
                allowed = "{8}" if suggesting else "{4, 5, 9, 10, 12}"
                self._violate(50035, f"type: Value must be one of {allowed}.")
            if body.get("type") == 4 and len((body.get("data") or {}).get("content") or "") > CONTENT_LIMIT:
                self._violate(50035, f"data.content: Must be {CONTENT_LIMIT} or fewer in length.")
            if body.get("type") in (4, 5):
                allowed = INTERACTION_FLAGS if body["type"] == 4 else DEFERRED_FLAGS
                self._check_fields(body.get("data") or {}, allowed, "data.")
            if any(
                r.kind == "callback" and r.error is None for r in self.interaction_records(interaction_id)
            ):
                self._violate(40060, "Interaction has already been acknowledged.")
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        await self._record(record)
        data = body.get("data") or {}
        answer: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_loading": body["type"] == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL_FLAG),
            }
        }
        if body["type"] in (4, 5):
            message = self._message_response(ALLOWED_CHANNEL, data, files)
            message["interaction_metadata"] = {
                "id": interaction_id,
                "type": 2,
                "user": user_payload(1, "x"),
                "authorizing_integration_owners": {"0": str(GUILD_ID)},  # installed to the guild
            }
            answer["interaction"]["response_message_id"] = message["id"]
            if body["type"] == 4:
                # The created message is in `resource` only "if type is either
                # CHANNEL_MESSAGE_WITH_SOURCE or UPDATE_MESSAGE" (Discord's docs).
                answer["resource"] = {"type": body["type"], "message": message}
        record.response = answer
        if self.callbacks_lost > 0:
            self.callbacks_lost -= 1
            return _json({"message": "502: Bad Gateway", "code": 0}, status=502)
        return _json(answer)

    async def _followup(self, request: web.Request) -> web.Response:
        content_type, body, files = await self._read_body(request)
        record = Received("followup", request.method, request.path, None, body, files)
        if self.followups_rate_limited > 0:
            self.followups_rate_limited -= 1
            return await self._interaction_rate_limited(record)
        try:
            self._check_token(request)
            self._check("/webhooks/{webhook_id}/{webhook_token}", "post", content_type, body)
            if len(body.get("content") or "") > CONTENT_LIMIT:
                self._violate(50035, f"content: Must be {CONTENT_LIMIT} or fewer in length.")
            self._check_fields(body, INTERACTION_FLAGS)
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        record.response = self._message_response(ALLOWED_CHANNEL, body, files)
        await self._record(record)
        return _json(record.response)

    async def _edit_original(self, request: web.Request) -> web.Response:
        content_type, body, files = await self._read_body(request)
        record = Received("edit_original", request.method, request.path, None, body, files)
        if self.edits_rate_limited > 0:
            self.edits_rate_limited -= 1
            return await self._interaction_rate_limited(record)
        if self.edits_held is not None:
            async with self._changed:
                self.edits_waiting += 1
                self._changed.notify_all()
            await self.edits_held.wait()
        try:
            self._check_token(request)
            self._check(
                "/webhooks/{webhook_id}/{webhook_token}/messages/@original", "patch", content_type, body
            )
            if len(body.get("content") or "") > CONTENT_LIMIT:
                self._violate(50035, f"content: Must be {CONTENT_LIMIT} or fewer in length.")
            self._check_fields(body, EDIT_FLAGS)
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        record.response = self._message_response(ALLOWED_CHANNEL, body, files)
        await self._record(record)
        return _json(record.response)

    async def _interaction_rate_limited(self, record: Received) -> web.Response:
        record.error = 429
        await self._record(record)
        return self._rate_limited("interaction", global_=False)

    def _check_token(self, request: web.Request) -> None:
        """An interaction's webhook (follow-ups, the original response) exists once the interaction
        has its first response, for the token's 15 minutes from when Discord made it; before that
        response Discord knows no such webhook (10015, discord.py's "Unknown Webhook" for a
        follow-up sent before responding)."""
        token = request.match_info["token"]
        interaction_id = token.removeprefix("interaction-token-")
        where = f"{request.method} {request.path}"
        if (
            request.match_info["application_id"] != str(APPLICATION_ID)
            or interaction_id not in self.interactions
        ):
            self._refuse_as_discord(
                f"{where}: no interaction of this application has this token", _unknown_webhook()
            )
        made = ((int(interaction_id) >> 22) + DISCORD_EPOCH_MS) / 1000
        if time.time() - made > TOKEN_SECONDS:
            self._refuse_as_discord(
                f"{where}: {time.time() - made:.0f} s after the interaction was made, past its token's life",
                DiscordError(401, 50027, "Invalid Webhook Token"),
            )
        if not any(
            r.kind == "callback" and r.error is None for r in self.interaction_records(interaction_id)
        ):
            self._refuse_as_discord(f"{where}: before the interaction's first response", _unknown_webhook())

    async def _get_original(self, request: web.Request) -> web.Response:
        self._check_token(request)
        token = request.match_info["token"]
        for r in reversed(self.received):
            if token in r.path and r.response is not None:
                message = r.response.get("resource", {}).get("message", r.response)
                return _json(message)
        raise DiscordError(404, 10008, "Unknown Message")

    async def _sync(self, request: web.Request) -> web.Response:
        guild_id = request.match_info.get("guild_id")
        spec_path = (
            "/applications/{application_id}/guilds/{guild_id}/commands"
            if guild_id
            else "/applications/{application_id}/commands"
        )
        body = await request.json()
        record = Received("sync", request.method, request.path, None, body)
        try:
            if request.match_info["application_id"] != str(APPLICATION_ID):
                raise DiscordError(404, 10002, "Unknown Application")
            self._check(spec_path, "put", "application/json", body)
        except DiscordError as exc:
            record.error = exc.code
            await self._record(record)
            raise
        stored = [
            {
                "id": str(snowflake()),
                "application_id": str(APPLICATION_ID),
                "version": str(snowflake()),
                "type": 1,
                "description": "",
                "default_member_permissions": None,
                "dm_permission": True,
                "nsfw": False,
                **({"guild_id": guild_id} if guild_id else {}),
                **command,
                # A command sent without them is installed to the guild: Discord answers so.
                "integration_types": command.get("integration_types") or [0],
            }
            for command in body
        ]
        self.commands[guild_id or "global"] = stored
        record.response = {"commands": stored}
        await self._record(record)
        return _json(stored)

    async def _cdn(self, request: web.Request) -> web.Response:
        attachment_id = int(request.match_info["attachment_id"])
        data = self.attachments.get(attachment_id)
        await self._record(
            Received("cdn", request.method, request.path, int(request.match_info["channel_id"]))
        )
        if data is None:
            return web.Response(status=404, text="Not Found")
        stall = self.cdn_stall_seconds or self.cdn_stalls.get(attachment_id, 0.0)
        if stall:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), stall)
        if attachment_id in self.cdn_status:
            return web.Response(status=self.cdn_status[attachment_id], text="Bad Gateway")
        if attachment_id in self.cdn_redirects:
            raise web.HTTPFound(self.cdn_redirects[attachment_id])
        if attachment_id in self.cdn_trickles:
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            response.content_length = len(data)
            await response.prepare(request)
            with contextlib.suppress(ConnectionError):
                for i in range(len(data)):
                    await response.write(data[i : i + 1])
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.cdn_trickles[attachment_id])
                    if self._stopping.is_set():
                        break
            return response
        if attachment_id in self.cdn_cuts:
            sent, declared = self.cdn_cuts[attachment_id]
            response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
            if declared:
                response.content_length = len(data)
            await response.prepare(request)
            await response.write(data[:sent])
            if declared:
                assert request.transport is not None
                request.transport.close()
            else:
                await response.write_eof()
            return response
        if attachment_id in self.cdn_surplus:
            return await self._cdn_surplus(request, attachment_id, data)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _cdn_surplus(self, request: web.Request, attachment_id: int, data: bytes) -> web.StreamResponse:
        extra, declared = self.cdn_surplus[attachment_id]
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if declared:
            response.content_length = len(data) + extra
        await response.prepare(request)
        self.cdn_written[attachment_id] = 0
        chunk = bytes(64 * 1024)
        try:
            await response.write(data)
            self.cdn_written[attachment_id] += len(data)
            while extra > 0:
                await response.write(chunk[:extra])
                self.cdn_written[attachment_id] += min(extra, len(chunk))
                extra -= len(chunk)
            await response.write_eof()
        except ConnectionError:
            pass  # the client let go of the body
        return response


class _GatewaySession:
    HEARTBEAT_MS = 41_250

    def __init__(self, fake: FakeDiscord, ws: web.WebSocketResponse, zlib_stream: bool) -> None:
        self.fake = fake
        self.ws = ws
        self.sequence = 0
        self.ready = False
        self.intents = 0
        self.session_id = f"fake-session-{snowflake()}"
        self.closed_by_fake = False
        self.client_close_code: int | None = None  # None: the client dropped without a close frame
        self.beat = -1  # the sequence the client's latest heartbeat said it had read
        self._compressor = zlib.compressobj() if zlib_stream else None
        self._lock = asyncio.Lock()

    async def close(self, code: int, reason: bytes) -> None:
        self.closed_by_fake = True
        await self.ws.close(code=code, message=reason)

    async def send(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload)
        async with self._lock:  # one zlib stream: frames must go out in the order compressed
            if self._compressor is None:
                await self.ws.send_str(text)
            else:
                data = self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        for error in event_errors(event, data):
            self.fake.answered_off_spec(f"{event}: {error}")
        if event == "MESSAGE_CREATE" and not self.intents & MESSAGE_CONTENT_INTENT:
            data = _without_content(data)
        self.sequence += 1
        await self.send({"op": 0, "t": event, "s": self.sequence, "d": data})

    async def run(self) -> None:
        await self.send({"op": 10, "d": {"heartbeat_interval": self.HEARTBEAT_MS}})
        while True:
            msg = await self.ws.receive()
            if msg.type == WSMsgType.CLOSE:
                self.client_close_code = int(msg.data)  # aiohttp has already answered the close
                return
            if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            op, data = payload.get("op"), payload.get("d")
            if op == 1:  # heartbeat
                self.beat = data if isinstance(data, int) else 0
                await self.send({"op": 11})
                await self.fake.changed()  # read_by_the_bot waits on it
            elif op == 2:  # identify
                if data.get("token") != TOKEN:
                    await self.close(4004, b"Authentication failed.")
                    return
                self.fake.identify_payloads.append(data)
                if (refused := self.fake.identify_refused_with) is not None:
                    await self.close(refused, GATEWAY_REFUSALS[refused])
                    await self.fake.changed()  # a test waiting on identify_payloads: it came, refused
                    return
                self.intents = int(data.get("intents") or 0)
                self.fake.sessions[self.session_id] = self.intents
                flags = self.fake.application_flags
                granted = flags & (1 << 18) or (flags & (1 << 19) and self.fake.approximate_guild_count < 100)
                if self.intents & MESSAGE_CONTENT_INTENT and not granted:
                    await self.close(4014, b"Disallowed intent(s).")
                    await self.fake.changed()  # a test waiting on identify_payloads: it came, refused
                    return
                await self.dispatch("READY", self.fake.ready_payload(self.session_id))
                if not self.fake.guild_withheld:
                    await self.dispatch("GUILD_CREATE", self.fake.guild_payload())
                self.ready = True
                self.fake.identified.set()
                await self.fake.changed()  # a test waiting on identify_payloads
            elif op == 6:  # resume
                self.fake.resume_payloads.append(data)
                if data.get("token") != TOKEN:
                    await self.close(4004, b"Authentication failed.")
                    await self.fake.changed()  # a test waiting on resume_payloads: it came, refused
                    return
                if data.get("session_id") not in self.fake.sessions:
                    await self.send({"op": 9, "d": False})  # invalid session: identify afresh
                    await self.fake.changed()  # a test waiting on resume_payloads: it came, refused
                    continue
                self.session_id = data["session_id"]
                self.intents = self.fake.sessions[self.session_id]
                self.sequence = int(data.get("seq") or 0)
                for event, missed in self.fake.missed.pop(self.session_id, []):
                    await self.dispatch(event, missed)  # the replay comes before RESUMED
                await self.dispatch("RESUMED", {})
                self.ready = True
                self.fake.resumed.set()
                await self.fake.changed()  # a test waiting on resume_payloads
            elif op in (3, 4, 8):  # presence, voice state, request members: accepted, nothing to do
                continue
            else:
                await self.close(4001, b"Unknown opcode.")
                return


def _without_content(message: dict[str, Any]) -> dict[str, Any]:
    """What Discord delivers without the Message Content intent: guild messages that do not
    mention the bot arrive with no content, attachments or embeds."""
    mentioned = any(int(u["id"]) == BOT_USER_ID for u in message.get("mentions", []))
    if "guild_id" not in message or mentioned:
        return message
    hidden = {"content": "", "attachments": [], "embeds": []}
    snapshots = [{"message": {**s["message"], **hidden}} for s in message.get("message_snapshots", [])]
    return {**message, **hidden, **({"message_snapshots": snapshots} if snapshots else {})}


def _ogg_opus_seconds(data: bytes) -> float | None:
    """How long the audio lasts, if it is an Ogg container whose first stream is Opus that
    actually decodes; None otherwise."""
    if not data.startswith(b"OggS") or b"OpusHead" not in data[:100]:
        return None
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            if stream.codec_context.name != "opus":
                return None
            samples = sum(frame.samples for frame in container.decode(stream))
            return samples / stream.codec_context.sample_rate if samples else None
    except (av.FFmpegError, IndexError):
        return None


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeDiscord]:
    """A running fake Discord, stopped at the end; fails if it refused a request as malformed."""
    async with checked(await FakeDiscord().start()) as fake:
        yield fake


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A running fake Discord; `settings_env()` gives the settings that point the bot at it."""
    async with serving() as fake:
        yield fake
