"""`python -m bot run` and `python -m bot sync [--guild ID]`."""

from __future__ import annotations

import asyncio
import logging
import platform
import signal
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import discord

from bot import __version__, logs, stop_signals
from bot.config import ConfigError, NeedsHuman, Settings, require_discord_token, shown_url
from cogs.bot import (
    GATEWAY_RETRIES,
    LIMITED_INTENT_SERVERS,
    MESSAGE_CONTENT_OFF,
    VoxdeskBot,
    point_discord_at,
)
from cogs.replies import limited_for

if TYPE_CHECKING:
    from bot.app import App
    from bot.engines.base import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")
VOXDESK_LOGGERS = ("bot", "cogs")

# The gateway's close code for a token Discord no longer takes (reset in the developer portal).
TOKEN_REFUSED = 4004
# `run`'s exit status when Discord closed the gateway for the Message Content intent (4014): the
# application lost it since the bot logged in. The next start sees that at login and runs without
# it, so a supervisor's restart is the way back.
INTENT_WITHDRAWN = 6
INTENT_WITHDRAWN_LINE = (
    "Discord closed the gateway (4014, disallowed intents): the application lost the Message Content"
    f" intent {{when}} (switched off in the developer portal, or the bot reached"
    f" {LIMITED_INTENT_SERVERS} servers without Discord's approval of it). Stopping after the notes in"
    f" flight (exit status {INTENT_WITHDRAWN});"
    " started again, the bot runs without it, or switch it back on under Bot > Privileged Gateway"
    " Intents."
)
# `run`'s exit status when Discord closed the gateway for what the bot's IDENTIFY says of itself
# (4010 to 4013): a restart sends the same and is refused the same, so a supervisor should not.
GATEWAY_REFUSED = 7
GATEWAY_REFUSALS = {
    4010: "4010, invalid shard: the bot identified with a shard Discord does not take, though voxdesk"
    " runs one connection without shards; report it, with the discord.py version logged at start",
    # discord.py's AutoShardedBot would connect with shards, but the runner stops, drains and
    # closes one gateway connection (close_gateway) and reads its health from it: not one switch.
    4011: "4011, sharding required: the bot is in 2,500 servers or more, where Discord takes only"
    " a connection split into shards, and voxdesk runs one connection without shards; remove the"
    " bot from servers it does not serve to bring it under 2,500",
    4012: "4012, invalid API version: Discord no longer takes the gateway version this discord.py"
    " speaks; upgrade discord.py (its version is logged at start)",
    4013: "4013, invalid intents: the bot asked for gateway intents Discord does not know; upgrade"
    " discord.py (its version is logged at start), or report it",
}


def use_discord_logging(level: int) -> None:
    """discord.py's log format for every logger, ours included. The CLI's plain root handler
    goes, or each line would be printed twice."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler()  # stderr
    if logs.journal_reads(handler.stream):
        discord.utils.setup_logging(handler=handler, formatter=logs.JournalFormatter(), level=level)
    elif _is_terminal(handler.stream):
        discord.utils.setup_logging(handler=handler, level=level)  # in colour
    else:
        # discord.py colours a container's stderr too, which a log collector or `docker logs
        # > file` then stores as escape codes: colour is for a terminal alone.
        discord.utils.setup_logging(handler=handler, formatter=logs.plain_formatter(), level=level)
    logs.install_secret_mask()


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def run(settings: Settings, verbose: bool = False) -> int:
    """Start the bot and run until SIGTERM or Ctrl-C; then finish the notes in flight (bounded by
    discord.shutdown_grace_seconds) and close every client. `verbose` (`voxdesk -v run`) adds
    voxdesk's own DEBUG lines, not discord.py's (each gateway event whole)."""
    token = require_discord_token(settings)
    use_discord_logging(logging.INFO)
    if verbose:
        for name in VOXDESK_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
    log.info("%s", settings.whereabouts())
    log.info(
        "voxdesk %s (Python %s, discord.py %s): %s",
        __version__,
        platform.python_version(),
        discord.__version__,
        settings.in_effect(),
    )
    try:
        asyncio.run(serve(settings, token))
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_TOKEN: copy the bot token again from the developer portal")
        return 2
    except discord.PrivilegedIntentsRequired:
        return INTENT_WITHDRAWN  # said in one line as the gateway closed (_serve)
    except GatewayRefused as exc:
        log.error("%s", exc)
        return GATEWAY_REFUSED
    except GatewayUnreachable:
        log.error("could not connect to Discord's gateway (the line above says why): try again later")
        return DISCORD_REFUSED
    except (aiohttp.ClientError, discord.HTTPException, discord.RateLimited) as exc:
        # Logging in is the one call whose failure ends `run`: once connected, discord.py
        # reconnects by itself. A 5xx comes here after discord.py's own retries, and a rate limit
        # longer than rate_limit_seconds (a supervisor restarting the bot in a loop) at once.
        why = limited_for(exc) if isinstance(exc, discord.RateLimited) else exc
        log.error("could not reach Discord to log in: %s", why)
        return DISCORD_REFUSED
    return 0


async def login(settings: Settings, token: str, app: App | None) -> VoxdeskBot:
    """A logged-in client. Without the Message Content intent granted to the application, asking
    for it would get the connection closed (4014): say so in one line and go on without it."""
    wanted = settings.discord.message_content
    bot = await _logged_in(VoxdeskBot(app, settings.discord, message_content=wanted), token)
    if wanted and (missing := bot.message_content_missing()):
        log.warning(missing)
        await bot.close()
        bot = await _logged_in(VoxdeskBot(app, settings.discord, message_content=False), token)
    elif not wanted:
        log.warning(MESSAGE_CONTENT_OFF.replace("for this application", "(discord.message_content = false)"))
    return bot


TOKEN_CHECK_SECONDS = 10.0


async def try_token(settings: Settings) -> str:
    """DISCORD_TOKEN through discord.py's own login request (GET /users/@me) at the address `run`
    logs in at: a token reset in the portal, or another bot's, is a FAIL at `check` rather than
    `run` stopping on it. Discord out of reach is a `warn`: `run` would meet it too, but the token
    may be good."""
    point_discord_at(settings.discord)
    where = shown_url(discord.http.Route.BASE)
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    try:
        me = await asyncio.wait_for(http.static_login(settings.secrets.discord_token), TOKEN_CHECK_SECONDS)
    except discord.LoginFailure:
        raise ConfigError(
            "Discord refused DISCORD_TOKEN (401): copy the bot token again from the Bot page"
            " of the Discord developer portal (Reset Token)"
        ) from None
    except discord.HTTPException as exc:
        return NeedsHuman(f"DISCORD_TOKEN set, not tried: Discord answered {exc.status}")
    except TimeoutError:
        return NeedsHuman(
            f"DISCORD_TOKEN set, not tried: Discord did not answer within {TOKEN_CHECK_SECONDS:g} s ({where})"
        )
    except (aiohttp.ClientError, OSError) as exc:
        return NeedsHuman(f"DISCORD_TOKEN set, not tried: Discord could not be reached ({where}: {exc})")
    finally:
        await http.close()
    return f"DISCORD_TOKEN accepted by Discord: bot {me.get('username')} ({me.get('id')})"


async def _logged_in(bot: VoxdeskBot, token: str) -> VoxdeskBot:
    try:
        await bot.login(token)
    except BaseException:
        await bot.close()
        raise
    return bot


async def serve(
    settings: Settings,
    token: str,
    stop: asyncio.Event | None = None,
    engine: Engine | None = None,
    started: asyncio.Future[VoxdeskBot] | None = None,
) -> None:
    """Run the bot until `stop` is set, or SIGTERM / SIGINT when no `stop` is given. `engine`
    replaces the configured one (front-end tests, benchmarks); `started` receives the client."""

    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    hurry = asyncio.Event()  # a second signal: the notes in flight are not waited for

    def on_signal() -> None:
        if stop.is_set():
            log.warning("asked again to stop: not waiting for the notes in flight")
            hurry.set()
        stop.set()

    loop = asyncio.get_running_loop()
    try:
        with stop_signals.routed(loop, signals, on_signal):
            await _serve(settings, token, stop, hurry, engine, started)
    finally:
        log.info("stopped")


async def _until_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None when `stop` is set first (`work` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    # asyncio.wait never raises `work`'s own CancelledError, so one raised here is the caller's,
    # and goes on; `await task` under suppress(CancelledError) would swallow both.
    await asyncio.wait({task})
    if not task.cancelled():
        task.result()  # it ended some other way while being stopped: say why
    return None


class GatewayRefused(Exception):
    """Discord closed the gateway for what the bot's IDENTIFY says of itself (GATEWAY_REFUSALS):
    its text is the one line `run` logs."""

    def __init__(self, code: int) -> None:
        super().__init__(
            f"Discord closed the gateway ({GATEWAY_REFUSALS[code]}). Stopped (exit status {GATEWAY_REFUSED})."
        )
        self.code = code


class GatewayUnreachable(Exception):
    """The first connection to Discord's gateway failed (logged in over REST, the websocket
    refused or cut off): `run` exits as when Discord cannot be reached, to be started again."""


async def _serve(
    settings: Settings,
    token: str,
    stop: asyncio.Event,
    hurry: asyncio.Event,
    engine: Engine | None,
    started: asyncio.Future[VoxdeskBot] | None,
) -> None:
    from bot.app import build_app

    # Start-up (speech models, the meaning model) takes seconds: a stop meanwhile ends it there.
    app = await _until_stopped(build_app(settings, engine), stop)
    if app is None:
        log.info("stopped while starting")
        return
    from bot.health import say_what_the_cloud_tools_refuse

    # Beside the login, not before it: a service slow to answer must not hold the bot back.
    probe = asyncio.create_task(say_what_the_cloud_tools_refuse(app))
    web_runner = None
    try:
        bot = await login(settings, token, app)
        if started is not None:
            started.set_result(bot)
        if settings.web.enabled:
            from bot import web

            try:
                web_runner = await web.start(
                    app, discord_ready=bot.gateway_healthy, discord_connected=bot.gateway_connected
                )
            except BaseException:
                # A port another program holds: the client logged in above has its HTTP session
                # open, which nothing below would close.
                await bot.close()
                raise
        try:
            connection = asyncio.create_task(bot.connect(reconnect=True))
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({connection, stopping}, return_when=asyncio.FIRST_COMPLETED)
            # Stopping: a service's answer to the start-up check, come during the drain, would be
            # said in the middle of the shutdown about a bot no longer serving.
            probe.cancel()
            app.news.stop_polling()  # as the probe, a poll's failure said during the drain
            if connection in done:
                if isinstance(connection.exception(), discord.PrivilegedIntentsRequired):
                    # discord.py leaves the client open for this close only: REST still works,
                    # so the notes in flight get their answers before the process stops.
                    ran = GATEWAY_RETRIES.connected_once
                    when = "while the bot ran" if ran else "between the bot's login and its first connection"
                    log.error(INTENT_WITHDRAWN_LINE.format(when=when))
                    await bot.drain(settings.discord.shutdown_grace_seconds, hurry)
                closed = connection.exception()
                if isinstance(closed, discord.ConnectionClosed) and closed.code == TOKEN_REFUSED:
                    # The token was reset in the developer portal while the bot ran: what a start
                    # with that token meets at login, and `run` says so in one line (exit 2).
                    raise discord.LoginFailure(
                        "Discord closed the gateway: 4004, authentication failed"
                    ) from None
                if isinstance(closed, discord.ConnectionClosed) and closed.code in GATEWAY_REFUSALS:
                    # discord.py closed the client: no notes in flight can be answered.
                    raise GatewayRefused(closed.code) from None
                if isinstance(closed, AttributeError) and bot.ws is None:
                    # discord.py 2.x, its first connection failed, reads the session it never had
                    # instead of trying again; the line before this one says why it failed.
                    raise GatewayUnreachable from closed
                connection.result()  # the gateway gave up: raise why
            log.info("shutting down: no new notes")
            await bot.drain(settings.discord.shutdown_grace_seconds, hurry)
        finally:
            stopping.cancel()
            await close_gateway(bot, connection)
    finally:
        probe.cancel()
        await asyncio.wait({probe})  # before the clients it uses close
        if web_runner is not None:
            await web_runner.cleanup()
        await app.aclose()


# Longer than the reader takes to stop once cancelled (a close frame sent): a cancel again would cut
# that short, and the session be left resumable rather than ended with 1000.
CANCEL_AGAIN_SECONDS = 2.0


async def close_gateway(bot: VoxdeskBot, connection: asyncio.Task[None]) -> None:
    """End the gateway session with close code 1000, then close the client.

    Discord ends a session closed with 1000 at once, so the bot shows offline; any other code
    keeps it open for a RESUME and the bot looks online for a while after it is gone.
    Client.close() asks for 1000, but while the connect task is reading, aiohttp hands that close
    to the reader, and discord.py's reader closes with 4000: so the reader is stopped first.
    """
    try:
        # Cancelled again until it ends: a cancel landing as discord.py's connect handshake ends is
        # swallowed by Python 3.11's asyncio.wait_for (it returns the new socket instead), and the
        # task would read the new session on.
        if not connection.done():
            while not connection.done():
                connection.cancel()
                # a cancel of the caller still reaches it (_until_stopped)
                await asyncio.wait({connection}, timeout=CANCEL_AGAIN_SECONDS)
            if not connection.cancelled():
                connection.result()
    finally:
        await bot.close()  # whatever happened above: the HTTP session and the socket must not leak


# `sync`'s exit status when Discord refuses the commands or cannot be reached, and `run`'s when it
# cannot log in for want of Discord (0 to 4 and 130 are the CLI's others, bot/cli.py).
DISCORD_REFUSED = 5
MISSING_ACCESS = 50001


def sync(settings: Settings, guild_id: int | None, clear: bool = False) -> int:
    """Publish the slash commands: globally (can take a while to appear everywhere) or to one
    guild (instant; copies the global commands there, for testing). `clear` with a guild removes
    that guild's copy: once the commands are global too, the guild would show each twice."""
    token = require_discord_token(settings, "sync")
    use_discord_logging(logging.WARNING)
    try:
        names = asyncio.run(sync_commands(settings, token, guild_id, clear))
    except discord.LoginFailure:
        log.error("Discord refused DISCORD_TOKEN: copy the bot token again from the developer portal")
        return 2
    except discord.HTTPException as exc:
        log.error("%s", refused_sync(exc, guild_id))
        return DISCORD_REFUSED
    except discord.RateLimited as exc:
        # Longer than rate_limit_seconds (Discord's 200 command creations a day in a guild): not
        # waited out, as the bot's other requests are not.
        where = f"guild {guild_id}" if guild_id else "Discord (global)"
        log.error(
            "Discord did not take the commands for %s: %s; run sync again after that", where, limited_for(exc)
        )
        return DISCORD_REFUSED
    except aiohttp.ClientError as exc:
        log.error("could not reach Discord to publish the commands: %s", exc)
        return DISCORD_REFUSED
    where = f"guild {guild_id}" if guild_id else "all guilds and DMs (global)"
    if clear:
        print(f"removed the commands of {where}; the global ones stay")
    else:
        print(f"synced {len(names)} command(s) to {where}: {', '.join(sorted(names))}")
    return 0


def refused_sync(exc: discord.HTTPException, guild_id: int | None) -> str:
    """Why Discord refused the commands, in one line for the operator."""
    where = f"guild {guild_id}" if guild_id else "Discord (global)"
    if exc.code == MISSING_ACCESS:
        return (
            f"Discord refused the commands for {where}: Missing Access (50001). The bot must be in "
            "it, invited with the applications.commands scope (docs/discord.md has the link)"
        )
    reason = exc.text or exc.response.reason or "no reason given"
    return f"Discord refused the commands for {where}: HTTP {exc.status}, {reason} ({exc.code})"


async def sync_commands(
    settings: Settings, token: str, guild_id: int | None, clear: bool = False
) -> list[str]:
    bot = await _logged_in(VoxdeskBot(None, settings.discord, message_content=False), token)
    try:  # login ran setup_hook: the extensions have filled the command tree
        guild = discord.Object(id=guild_id) if guild_id else None
        if guild is not None:
            if clear:
                bot.tree.clear_commands(guild=guild)
            else:
                bot.tree.copy_global_to(guild=guild)
        synced = await bot.tree.sync(guild=guild)
        return [c.name for c in synced]
    finally:
        await bot.close()
