"""VoxdeskBot: the discord.py client, its intents, its extensions and its orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot import sentences as say
from bot.bounded import remember
from bot.config import DiscordSettings
from cogs.interactions import AUTOCOMPLETE_NOT_AN_ERROR, arrived, first_response_left
from cogs.replies import limited_for

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)


def _log_failure(task: asyncio.Task[Any]) -> None:
    # Said now, not when the task is collected ("exception was never retrieved"), if ever.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("work in flight failed: %s", task.get_coro(), exc_info=exc)


# What discord.py raises for a command whose name or options are not the ones this version
# publishes. A TransformerError is one too: Discord checks every option against the published
# definition (choices, lengths, types) before sending it.
OUTDATED_COMMAND = (
    app_commands.CommandNotFound,
    app_commands.CommandSignatureMismatch,
    app_commands.TransformerError,
)

SUBCOMMAND_TYPES = (1, 2)  # a subcommand, a group of them: its options are within it


def _options(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The options typed for the command itself, within its subcommand if any."""
    options = data.get("options", [])
    while options and options[0].get("type") in SUBCOMMAND_TYPES:
        options = options[0].get("options", [])
    return list(options)


def _retyped(command: app_commands.Command[Any, ..., Any], data: dict[str, Any]) -> bool:
    """Whether an option of the interaction is not one `command` declares, or comes typed
    otherwise: a version published before (a number where a word is now, an option renamed).
    discord.py passes a plain `str` parameter whatever value came, and the command would fail on
    it; an option it does not know it drops, and the command would run without what was asked."""
    declared = {p.display_name: p.type.value for p in command.parameters}
    return any(declared.get(o.get("name")) != o.get("type") for o in _options(data))


def _suggests(command: app_commands.Command[Any, ..., Any] | None, data: dict[str, Any]) -> bool:
    """Whether `command` has suggestions for the option being typed in, as this version types it.
    Not for a command or an option of another version, which Discord still offers: discord.py
    takes the one for an error of the command (and its answer, which an autocomplete refuses),
    the other for an error to log with its traceback, at each keystroke."""
    if not isinstance(command, app_commands.Command) or _retyped(command, data):
        return False
    focused = next((o.get("name") for o in _options(data) if o.get("focused")), None)
    params = {p.display_name: p for p in command.parameters}
    return focused in params and params[focused].autocomplete


class VoxdeskTree(app_commands.CommandTree):
    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        arrived(interaction)  # first in the task that sends its first response, for its 3 s
        kind, command = interaction.type, interaction.command
        data = dict(interaction.data or {})
        if kind is discord.InteractionType.application_command:
            if isinstance(command, app_commands.Command) and _retyped(command, data):
                raise app_commands.CommandSignatureMismatch(command)
            return True
        if kind is not discord.InteractionType.autocomplete or _suggests(command, data):
            return True
        # Typing in an option of that old version: no suggestions. Sending the command tells the
        # player and the log, once, rather than a line per keystroke.
        log.debug("autocomplete for /%s is not this version's: no suggestions", data.get("name", "?"))
        with contextlib.suppress(discord.HTTPException, discord.RateLimited, aiohttp.ClientError):
            await interaction.response.autocomplete([])
        return False


EXTENSIONS = ("cogs.voice", "cogs.catch_up", "cogs.grievance", "cogs.settings", "cogs.news")

# The library's own endpoints, kept so an empty setting always means "the real Discord".
_DEFAULT_API_BASE = discord.http.Route.BASE
_DEFAULT_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY

# The voice notes a bot without the Message Content intent still sees.
_WITHOUT_CONTENT = (
    "guild voice notes are only seen when they reply to the bot with the ping on (DMs still work)"
)
MESSAGE_CONTENT_OFF = (
    f"Message Content intent is off for this application: {_WITHOUT_CONTENT}; enable it under"
    " Bot > Privileged Gateway Intents."
)
# Discord's application flags: the portal's toggle (GATEWAY_MESSAGE_CONTENT_LIMITED) is the intent
# "for bots in under 100 servers"; from then on only GATEWAY_MESSAGE_CONTENT, Discord's approval of
# a verified app, grants it, and an IDENTIFY asking for it without that is closed with 4014.
LIMITED_INTENT_SERVERS = 100
MESSAGE_CONTENT_UNAPPROVED = (
    f"Message Content intent: the application has it for bots in under {LIMITED_INTENT_SERVERS}"
    f" servers only, and the bot is in {{servers}}: {_WITHOUT_CONTENT}; a verified app needs"
    " Discord's approval of the intent (developer portal, App Verification)."
)


def discord_api_base(settings: DiscordSettings) -> str:
    """Where discord.py's REST calls go: `discord.api_base`, or the library's own address when it
    is empty. `check` tries the token at the same place `run` logs in."""
    return settings.api_base.rstrip("/") or _DEFAULT_API_BASE


def point_discord_at(settings: DiscordSettings) -> None:
    """Send discord.py's REST calls and gateway connection to the configured endpoints.

    discord.py 2.7 has no per-client option for either: every REST route (including interaction
    callbacks and webhooks) is built from the class attribute `discord.http.Route.BASE`, and a
    non-sharded client connects to `DiscordWebSocket.DEFAULT_GATEWAY` (only AutoShardedClient
    asks GET /gateway/bot). Those two class attributes are the library's single sources for the
    endpoints (Route.BASE is also what discord.py's own `_set_api_version` rewrites, and what
    REST proxies such as nirn-proxy are pointed at), so setting them is configuration rather than
    patching behaviour; the client is otherwise untouched. Attachment and CDN URLs come from
    the payloads themselves. A bot process runs one client, so process-wide is the right scope.
    """
    discord.http.Route.BASE = discord_api_base(settings)
    gateway = settings.gateway_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway) if gateway else _DEFAULT_GATEWAY


class _OwnLookups:
    """The running loop as aiohttp's ThreadedResolver uses it, with getaddrinfo and getnameinfo
    in threads of their own. Whatever else a resolver asks of its loop is the running loop's:
    aiohttp 3.9 (which pyproject allows) asks it is_running() as the resolver is made."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: ThreadPoolExecutor) -> None:
        self._loop, self._threads = loop, threads

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        return await self._loop.run_in_executor(
            self._threads, functools.partial(socket.getaddrinfo, *args, **kwargs)
        )

    async def getnameinfo(self, sockaddr: Any, flags: int = 0) -> Any:
        return await self._loop.run_in_executor(self._threads, socket.getnameinfo, sockaddr, flags)


def discord_connector(threads: ThreadPoolExecutor) -> aiohttp.TCPConnector:
    """discord.py's own connector (no limit on connections), whose name lookups do not queue in
    the loop's default executor. Without aiodns, aiohttp looks discord.com up there, behind
    every `asyncio.to_thread` of a raid's speech work: a slash command's first response, due
    3 s after Discord made it, waited for a connection until the speech was done."""
    loop = asyncio.get_running_loop()
    resolver = aiohttp.ThreadedResolver(loop=_OwnLookups(loop, threads))  # type: ignore[arg-type]
    return aiohttp.TCPConnector(limit=0, resolver=resolver)


def _by_webhook(url: yarl.URL) -> bool:
    """Whether a request went through discord.py's webhook layer: an interaction's first response
    (its callback), its follow-ups and the edits of its original response."""
    return "/interactions/" in url.path or "/webhooks/" in url.path


def _first_response_left(url: yarl.URL) -> float:
    """For an interaction's first response (POST /interactions/{id}/{token}/callback), the
    seconds left of the 3 s Discord takes it in (`interactions.first_response_left`); for any
    other request, no limit."""
    parts = url.parts
    if len(parts) < 4 or parts[-1] != "callback" or parts[-4] != "interactions" or not parts[-3].isdigit():
        return math.inf
    return first_response_left(int(parts[-3]))


def webhook_rate_limit(cap: Callable[[], float]) -> aiohttp.TraceConfig:
    """The bot's cap on waiting out a rate limit, for the requests discord.py's webhook layer
    makes. That layer has no `max_ratelimit_timeout` of its own and waits out any 429, up to five
    times: a slash command's answer would hang for as long as Discord asks, holding the command
    (and a stop waiting for it). Past `cap()` seconds it raises discord.RateLimited instead, as
    the client's own requests do. A first response limited for longer than is left of Discord's
    3 s for it raises too, however short the wait: retried after those 3 s, it would only be
    refused as "Unknown interaction". A 429 without `Via` (Cloudflare's ban) discord.py raises
    itself. Raised in the trace's end of request, aiohttp closes the response and passes it on."""

    async def on_request_end(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        response = params.response
        if response.status != 429 or not response.headers.get("Via") or not _by_webhook(params.url):
            return
        try:
            retry_after = float((await response.json(content_type=None))["retry_after"])
        except (ValueError, KeyError, TypeError, aiohttp.ClientError):
            return  # not Discord's rate limit body: discord.py decides
        if retry_after > min(cap(), _first_response_left(params.url)):
            raise discord.RateLimited(retry_after)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


class SendClock:
    """When the request a send has out went to Discord; None while it has none out: waiting its
    turn in discord.py's rate limiter, or between discord.py's tries. `began`: when its latest
    request went, kept once it is over (a cancelled request ends too); None again when Discord
    refused it for a rate limit (429): discord.py waits, and it is as if it had not gone yet."""

    def __init__(self) -> None:
        self.out_since: float | None = None
        self.began: float | None = None


# The clock of the send whose task this is (see `timed_requests`); None outside such a task.
SENDING: contextvars.ContextVar[SendClock | None] = contextvars.ContextVar("voxdesk_sending", default=None)
# How long a stop waits for what the work it cut short starts as it ends: database writes.
FOLLOW_UP_SECONDS = 10.0
MAX_POSTING = 1000  # channels remembered with when Discord last answered a message POST there


def _posted_in(method: str, url: yarl.URL) -> int | None:
    """The channel of a message POST (/channels/{id}/messages), else None."""
    parts = url.parts
    if method != "POST" or len(parts) < 4 or parts[-1] != "messages" or parts[-3] != "channels":
        return None
    return int(parts[-2]) if parts[-2].isdigit() else None


def timed_requests(trace: aiohttp.TraceConfig, posts_answered: dict[int, float]) -> aiohttp.TraceConfig:
    """`trace`, also keeping each request's time out on the SENDING clock of the task that makes it
    (aiohttp calls a trace's callbacks in that task, so they see its context), and in
    `posts_answered` when Discord last answered (or failed) a message POST in each channel."""

    async def out(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
        if (clock := SENDING.get()) is not None:
            clock.out_since = clock.began = time.monotonic()

    async def back(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
        if (clock := SENDING.get()) is not None:
            clock.out_since = None
            if getattr(getattr(params, "response", None), "status", None) == 429:
                clock.began = None
        if (channel := _posted_in(params.method, params.url)) is not None:
            posts_answered.pop(channel, None)  # the newest last: the oldest are forgotten first
            remember(posts_answered, channel, time.monotonic(), MAX_POSTING)

    trace.on_request_start.append(out)
    trace.on_request_end.insert(0, back)  # before a callback that raises for a webhook's 429
    trace.on_request_exception.append(back)
    return trace


# discord.py's line for each attempt its gateway reconnect makes after a failure (discord/client.py).
RECONNECT_LINE = "Attempting a reconnect in %.2fs"


class GatewayRetries(logging.Filter):
    """discord.py logs each reconnect attempt after a failure (a connection refused, a handshake
    answered 5xx, a connect timing out) at ERROR with its traceback: one per backoff step for
    the whole of an outage, for what it handles itself. Each is kept at DEBUG, its reason kept
    for the bot's own line, said once past discord.gateway_grace_seconds, and its end once.
    On discord.py's client logger.

    Before the bot's first connection no outage is followed (nor said), and discord.py ends its
    connect task after a failed first connect: the line is then the only one with the reason."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""  # the last attempt's failure
        self.connected_once = False  # set by the bot at its first ready

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != RECONNECT_LINE or not self.connected_once:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        self.reason = f"{type(exc).__name__}: {exc}"[:200] if exc is not None else "no reason given"
        log.debug("Discord gateway: %s; reconnecting in %.2f s", self.reason, *record.args)
        return False


GATEWAY_RETRIES = GatewayRetries()


def make_intents(message_content: bool) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True  # channels and permissions, to know where a voice message may go
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = message_content  # privileged: attachments of un-mentioned guild messages
    return intents


# Voice *messages* are ordinary uploads; the bot never joins voice channels, so the libraries for
# voice connections (PyNaCl, davey) are not needed and their start-up warnings would mislead.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


class VoxdeskBot(commands.Bot):
    """One client over one App. `app` is None only for `sync`, which needs the command tree and
    nothing else."""

    def __init__(self, app: App | None, settings: DiscordSettings, *, message_content: bool = True) -> None:
        point_discord_at(settings)
        # Channel → when Discord last answered a message POST there (time.monotonic()): an answer
        # waiting its turn in discord.py's rate limiter is moving while this does (see _bounded).
        self.posts_answered: dict[int, float] = {}
        super().__init__(
            command_prefix=commands.when_mentioned,  # required; never used (see on_message)
            help_command=None,
            tree_cls=VoxdeskTree,
            intents=make_intents(message_content),
            guild_ready_timeout=settings.guild_ready_timeout,
            allowed_mentions=discord.AllowedMentions.none(),
            max_messages=None,  # we never look at old messages; do not cache them
            # Waiting out minutes of a rate limit would hold a player's queue and the note's claim
            # for as long: past this, discord.RateLimited, and the note is answered later.
            max_ratelimit_timeout=settings.rate_limit_seconds,
            # The same cap, as discord.py keeps it (no less than 30 s; none for 0), on slash
            # commands' answers.
            # And how long each request of an answer has been out, for send_seconds.
            http_trace=timed_requests(
                webhook_rate_limit(lambda: self.http.max_ratelimit_timeout or math.inf), self.posts_answered
            ),
        )
        self.app = app
        self.discord_settings = settings
        self.accepting = True  # False once shutdown starts: new notes are left alone
        self._inflight: set[asyncio.Task[Any]] = set()
        self._aside: set[asyncio.Task[Any]] = set()  # of them, what is no note or command itself
        self._commands: set[asyncio.Task[Any]] = set()  # of them, the slash commands' answers
        self._finishing: set[asyncio.Task[Any]] = set()  # of them, aside work a stop lets finish
        # Of those, what a stop leaves undone if it does not wait one out, as its log line says it.
        self._undone: dict[asyncio.Task[Any], str] = {}
        # What a stop already waited FOLLOW_UP_SECONDS for: close() does not wait for it again.
        self._waited_out: set[asyncio.Task[Any]] = set()
        self._later: set[asyncio.Task[Any]] = set()  # see `later`
        self._closing = False  # set as close() starts: `later` takes nothing more
        self.tree.on_error = self._on_app_command_error  # type: ignore[method-assign]
        self._lookups = ThreadPoolExecutor(2, thread_name_prefix="voxdesk-dns")
        # discord.py's is_ready() stays true through any outage once the first READY came: the
        # gateway's own state is kept here, from its connect and disconnect events.
        self._gateway_down_since: float | None = time.monotonic()  # None while connected
        self._gateway_down_said: asyncio.TimerHandle | None = None
        self._gateway_outage_said = False
        AUTOCOMPLETE_NOT_AN_ERROR.started()
        logging.getLogger("discord.app_commands.tree").addFilter(AUTOCOMPLETE_NOT_AN_ERROR)
        GATEWAY_RETRIES.reason, GATEWAY_RETRIES.connected_once = "", False
        logging.getLogger("discord.client").addFilter(GATEWAY_RETRIES)

    async def login(self, token: str) -> None:
        self.http.connector = discord_connector(self._lookups)
        await super().login(token)

    async def close(self) -> None:
        self._closing = True
        if self._gateway_down_said is not None:
            self._gateway_down_said.cancel()
        if self._later:
            log.info(
                "stopping: %d slash command answer(s) waiting out a rate limit are not sent", len(self._later)
            )
        for task in self._later:
            task.cancel()
        await asyncio.gather(*self._later, return_exceptions=True)
        # A slash command that arrived while a drain waited for the work it cut short to tell its
        # players (the gateway is open until the drain ends): left running, it would go on past
        # the HTTP session and the databases it needs, its player told nothing and a filing
        # neither filed nor kept; cut short now, it is kept and its player told.
        await self._cut_short("that arrived as the bot stopped")
        await super().close()
        self._lookups.shutdown(wait=False, cancel_futures=True)

    @property
    def core(self) -> App:
        if self.app is None:
            raise RuntimeError("this client was built without an App (sync only)")
        return self.app

    async def setup_hook(self) -> None:
        if self.app is not None:
            self.core.notes.answer_discord()
        for name in EXTENSIONS:
            await self.load_extension(name)

    def message_content_missing(self) -> str | None:
        """After login: why the application may not receive message content, as the log says it;
        None when it may (approved, or the portal's toggle on in under 100 servers)."""
        app = self.application
        flags = app.flags if app else None
        if flags is None or not (flags.gateway_message_content or flags.gateway_message_content_limited):
            return MESSAGE_CONTENT_OFF
        servers = app.approximate_guild_count if app else 0
        if not flags.gateway_message_content and servers >= LIMITED_INTENT_SERVERS:
            return MESSAGE_CONTENT_UNAPPROVED.format(servers=servers)
        return None

    async def on_message(self, message: discord.Message, /) -> None:
        """No text commands: slash commands only. commands.Bot's own handler would read every
        message that mentions the bot as one and log "command not found" for it; the cogs'
        listeners (the voice notes) are called whatever this does."""

    def gateway_connected(self) -> bool:
        """Whether the gateway is connected now (a session ready or resumed, and not dropped since)."""
        return self._gateway_down_since is None and not self.is_closed()

    def gateway_healthy(self) -> bool:
        """What /healthz says of Discord: ready once, and not disconnected for longer than
        `gateway_grace_seconds`, so a reconnect discord.py makes in seconds does not flap it."""
        if self.is_closed() or not self.is_ready():
            return False
        down = self._gateway_down_since
        return down is None or time.monotonic() - down <= self.discord_settings.gateway_grace_seconds

    async def on_disconnect(self) -> None:
        if self._gateway_down_since is None and not self._closing:
            self._gateway_down_since = time.monotonic()
            grace = self.discord_settings.gateway_grace_seconds
            self._gateway_down_said = asyncio.get_running_loop().call_later(grace, self._say_gateway_down)

    def _say_gateway_down(self) -> None:
        if self._gateway_down_since is None or self.is_closed():
            return
        self._gateway_outage_said = True
        log.warning(
            "Discord gateway disconnected for %.0f s and still reconnecting%s: notes are not heard"
            " until it is back (/healthz says not ready)",
            time.monotonic() - self._gateway_down_since,
            f" (last attempt: {GATEWAY_RETRIES.reason})" if GATEWAY_RETRIES.reason else "",
        )

    def _gateway_back(self) -> None:
        if self._gateway_down_said is not None:
            self._gateway_down_said.cancel()
            self._gateway_down_said = None
        if self._gateway_outage_said and self._gateway_down_since is not None:
            log.info(
                "Discord gateway connected again after %.0f s away",
                time.monotonic() - self._gateway_down_since,
            )
        self._gateway_outage_said = False
        self._gateway_down_since = None
        GATEWAY_RETRIES.reason, GATEWAY_RETRIES.connected_once = "", True

    async def on_resumed(self) -> None:
        self._gateway_back()

    async def on_ready(self) -> None:
        self._gateway_back()
        log.info(
            "ready as %s (%s) in %d guild(s); answering DMs%s",
            self.user,
            self.user.id if self.user else "?",
            len(self.guilds),
            f" and channels {list(self.discord_settings.channels)}" if self.discord_settings.channels else "",
        )

    # ---- work in flight, for a graceful shutdown ---------------------------------------

    def track(
        self,
        work: Coroutine[Any, Any, Any],
        awaited: bool = False,
        aside: bool = False,
        command: bool = False,
        finish: bool = False,
        undone: str | None = None,
    ) -> asyncio.Task[Any]:
        """Work in flight that a stop waits for. Its failure is logged here unless it is
        `awaited` by a caller that reports it (a slash command's error handler). `aside`: not a
        note or a command of its own (a reaction on one, a catch-up's read, whose notes are tracked
        each on its own), left out of the counts a stop logs. `command`: a slash command's answer,
        counted apart from the notes. `finish`: aside work a stop does not cancel but waits for,
        up to FOLLOW_UP_SECONDS (a short write that keeps a player's news); `undone`, what is
        lost for good should it not end by then, for the stop's log line."""
        task = asyncio.create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        kinds = ((self._aside, aside or finish), (self._commands, command), (self._finishing, finish))
        for kind, yes in kinds:
            if yes:
                kind.add(task)
                task.add_done_callback(kind.discard)
        if undone is not None:
            self._undone[task] = undone
            task.add_done_callback(lambda done: self._undone.pop(done, None))
        if not awaited:
            task.add_done_callback(_log_failure)
        return task

    def later(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Work that mostly waits, for minutes (a slash command's answer sent once Discord's rate
        limit on it ends): not in flight, so a stop does not wait for it; closing cancels it. None,
        `work` dropped, once closing has begun: what close() already cancelled would miss it, and
        it would run on past the client's end."""
        if self._closing:
            work.close()
            return None
        task = asyncio.create_task(work)
        self._later.add(task)
        task.add_done_callback(self._later.discard)
        task.add_done_callback(_log_failure)
        return task

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def drain(self, grace_seconds: float, hurry: asyncio.Event | None = None) -> int:
        """Stop taking notes and wait up to `grace_seconds` for the turns in flight, or until
        `hurry` is set. Returns how many had to be cancelled."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        hurry = hurry or asyncio.Event()
        if work := self._counted(self._inflight):
            log.info("finishing %s in flight (up to %.0f s)", work, grace_seconds)
        hurried = asyncio.create_task(hurry.wait())
        try:
            # Work in flight may start more (a catch-up answering what it found): wait for that too.
            while self._inflight and not hurry.is_set() and (left := deadline - loop.time()) > 0:
                first = asyncio.FIRST_COMPLETED
                await asyncio.wait({*self._inflight, hurried}, timeout=left, return_when=first)
        finally:
            hurried.cancel()
        cut = await self._cut_short(f"still running after {grace_seconds:.0f} s")
        # Once no turn can give another note back: those given back where no later process may
        # fetch them are asked for again now, while Discord can still be told.
        voice = self.get_cog("VoiceNotes")
        if voice is not None:
            try:
                async with asyncio.timeout(FOLLOW_UP_SECONDS):
                    await voice.ask_given_back_again()  # type: ignore[attr-defined]
            except TimeoutError:
                log.warning("closing before every note given back unfetchable was asked for again")
        return cut

    async def _cut_short(self, why: str) -> int:
        """Cancel the work in flight and wait while what was cut short tells its players; the
        notes and slash commands among it are said in one line, `why` ending it. Returns how
        many they were."""
        pending = set(self._inflight) - self._finishing
        cut = len(pending - self._aside)
        said = self._counted(pending)
        for task in pending:
            task.cancel()
        if cut:
            log.warning("cancelled %s %s", said, why)
        await asyncio.gather(*pending, return_exceptions=True)
        await self._follow_ups(pending)
        return cut

    async def _follow_ups(self, seen: set[asyncio.Task[Any]]) -> None:
        """Wait for the aside work that the cut work's awaiters start as it ends (a filing's key
        given back to ticket news), and for the work a stop lets finish, up to FOLLOW_UP_SECONDS:
        the stores close next, under it. A note or command arriving meanwhile is not waited for:
        close() cuts it short."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_UP_SECONDS
        seen, waiting = set(seen) | self._waited_out, set[asyncio.Task[Any]]()
        while True:
            await asyncio.sleep(0)  # the awaiters of what just ended run their handlers
            started = (self._inflight & self._aside) - seen
            seen |= started
            if not (waiting := {task for task in waiting | started if not task.done()}):
                return
            if (left := deadline - loop.time()) <= 0:
                log.warning("closing with %d task(s) still ending the work cut short", len(waiting))
                for task in waiting & self._undone.keys():
                    log.error("closing before %s", self._undone[task])
                self._waited_out |= waiting
                return
            await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)

    def _counted(self, tasks: set[asyncio.Task[Any]]) -> str:
        """The notes and slash commands among `tasks`, as a stop's log line says them; empty for none."""
        commands = len(tasks & self._commands)
        notes = len(tasks - self._aside) - commands
        said = [f"{n} {what}(s)" for n, what in ((notes, "note"), (commands, "slash command")) if n]
        return " and ".join(said)

    async def _on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, OUTDATED_COMMAND):
            # Discord still offers the commands as they were before this version (sync not run
            # since, or the player's client has not fetched them again): nothing failed here.
            data = interaction.data or {}
            log.warning(
                "slash command /%s is not this version's (%s): run `voxdesk sync` to publish the commands",
                data.get("name", "?"),
                type(error).__name__,
            )
            text = say.COMMAND_OUTDATED
        elif isinstance(limited := getattr(error, "original", error), discord.RateLimited):
            # Its answer met a rate limit longer than rate_limit_seconds: so would the apology.
            log.warning(
                "slash command %s not answered: %s",
                interaction.command and interaction.command.name,
                limited_for(limited),
            )
            return
        else:
            log.error(
                "slash command %s failed", interaction.command and interaction.command.name, exc_info=error
            )
            text = say.COMMAND_FAILED
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except (discord.HTTPException, discord.RateLimited, aiohttp.ClientError) as exc:
            # Raised, it would end discord.py's task for the interaction: "Task exception was
            # never retrieved", a second traceback for the one failure.
            log.warning("could not tell the player about the failed command: %s", exc)
