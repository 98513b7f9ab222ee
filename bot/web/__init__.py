"""The web front end: a thin aiohttp adapter over the same core as the CLI and Discord.

Playground (bot/web/playground.py), support desk (desk.py), /healthz, /metrics and /favicon.ico
(ops.py). It never imports discord: `voxdesk run` hands it a callable that says whether Discord is
connected.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import setup as setup_sessions

from bot import stop_signals
from bot.app import App, storage_paths
from bot.config import Settings, WebSettings
from bot.db import locked_now
from bot.tools import cluster_start
from bot.web import security

if TYPE_CHECKING:  # playground imports this module
    from bot.web.playground import PlayerNames

log = logging.getLogger(__name__)

PACKAGE = resources.files(__package__)
UPLOAD_SLACK = 64 * 1024  # multipart framing and form fields around a note of audio.max_bytes
# A request head (its line and headers) must be all there within this many seconds of the
# connection opening, or of the answer before it on the connection: aiohttp's keepalive_timeout,
# which bounds both, is an hour by default, and a desk served with no proxy in front would hold a
# connection that many seconds for each client that sends part of a head and stops (slowloris).
# Bodies have deadlines of their own: security.FORM_SECONDS, playground.UPLOAD_SECONDS, and
# aiohttp's lingering_time (10 s) for one no handler reads.
HEAD_SECONDS = 30.0
# ... and an answer's bytes must be taken (acknowledged, into a window the client keeps open)
# within this many seconds of being sent: HEAD_SECONDS does not run while an answer is written,
# and aiohttp has no deadline of its own there, so a client that asks and never reads would hold
# its connection, and the handler writing to it, for good. Kept by the kernel (TCP_USER_TIMEOUT,
# Linux), as it bounds sendfile too; nginx's send_timeout is as long.
SEND_SECONDS = 60.0


T = TypeVar("T")


class Reused(Generic[T]):
    """A costly result made one caller at a time, and reused while it is fresh enough."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._made: tuple[float, T] | None = None

    async def get(
        self, make: Callable[[], Awaitable[T]], max_age: float, again: bool = False
    ) -> tuple[T, float]:
        """The result and its age in seconds. `again`: one made after this call began (callers
        asking again together share one)."""
        asked_at = time.monotonic()
        async with self._lock:
            made = self._made
            if made is None or asked_at - made[0] > max_age or (again and made[0] < asked_at):
                result = await make()
                self._made = made = (time.monotonic(), result)
        return made[1], time.monotonic() - made[0]


@dataclass
class WebState:
    core: App
    # Who may log in, by name (security.staff_accounts): none, and the desk stays locked.
    staff: dict[str, security.StaffAccount]
    staff_logins: security.StaffLogins
    logins: security.RateLimit  # staff login attempts, per client, forgotten at a login
    # Failed staff logins alone, per client (not those in flight: a double click is no failure),
    # and per name tried, every client's together: desk.login's per-name slow-down.
    client_failures: security.RateLimit
    name_failures: security.RateLimit
    notes: security.RateLimit  # per client
    all_notes: security.RateLimit  # every client's together, under the one key ALL
    ticket_views: security.RateLimit  # per client
    complaints: security.RateLimit  # filed from the playground, per visitor (playground._visitor)
    all_complaints: security.RateLimit  # filed from the playground, every visitor's, under ALL
    complaint_log: security.PlaygroundComplaints  # both, kept in web.db across a restart
    players: dict[str, str]  # who the playground may speak as: user id → name
    player_names: PlayerNames  # reads the names of `players` again
    visitor_key: bytes  # keys the hash a playground visitor's budget is kept under
    passwords: security.PasswordChecks
    discord_ready: Callable[[], bool] | None = None  # None: no Discord in this process
    # Whether the gateway is connected this instant (the gauge); discord_ready forgives a reconnect.
    discord_connected: Callable[[], bool] | None = None
    clock: Callable[[], float] = time.time  # unix time, by which a staff login lapses
    replies: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # token → (owner, ogg)
    # The desk's service check (each speaks a line and asks every backend) and /healthz's backend
    # probes: one at a time, and reused while fresh.
    check: Reused[list[object]] = field(default_factory=lambda: Reused())
    probes: Reused[dict[str, dict[str, object]]] = field(default_factory=lambda: Reused())
    # Each backend's last probe: None when it answered, else the reason code /healthz gave.
    probed: dict[str, str | None] = field(default_factory=dict)
    playground_turns: int = 0  # playground notes with the agent now
    uploads_by_client: dict[str, int] = field(default_factory=dict)  # notes being read, by client_key
    # Each playground player's own tickets, as the backend (Jira, maybe) last gave them.
    ticket_lists: dict[str, Reused[list[Any]]] = field(default_factory=dict)
    # One ticket look-up of the playground's at a time: anonymous visitors never take more than one
    # of the Jira threads Discord players' look-ups need.
    ticket_lookup: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def named_staff(self) -> bool:
        """VOXDESK_WEB_STAFF's accounts, logged in to by name, not the shared password's login."""
        return bool(self.staff) and security.SHARED_LOGIN not in self.staff

    @property
    def playground_uploads(self) -> int:
        """Playground notes being read now, every client's."""
        return sum(self.uploads_by_client.values())


STATE = web.AppKey("state", WebState)


def state(request: web.Request) -> WebState:
    return request.app[STATE]


async def build_web(
    core: App,
    discord_ready: Callable[[], bool] | None = None,
    discord_connected: Callable[[], bool] | None = None,
) -> web.Application:
    from bot.web import desk, ops, playground

    settings = core.settings
    w = settings.web
    security.quiet_client_faults()
    security.name_no_software()
    loopback = await security.loopback_only(w.host)
    app = web.Application(
        client_max_size=settings.audio.max_bytes + UPLOAD_SLACK,
        # On the app, not the runner: whichever serves it (`start`, a test's server) bounds heads.
        handler_args={"keepalive_timeout": HEAD_SECONDS},
        middlewares=[
            security.broken_body_middleware,
            security.headers_middleware(w),
            security.errors_middleware,
            # Before the session starts: a page refused for its host name sets no cookie.
            security.allowed_host_middleware(w, loopback),
            static_files,
        ],
    )
    if w.trust_forwarded:
        app.middlewares.append(security.unlisted_proxy_middleware(w))
    else:
        app.middlewares.append(security.ignored_proxy_middleware(w))
    if not w.secure_cookies:
        app.middlewares.append(security.plain_cookies_middleware(w))
    from bot.app import storage_paths

    staff_logins = await security.StaffLogins.open(storage_paths(settings).web)
    core.closers.append(staff_logins)  # closed with the core, whichever runners served the app
    complaint_log = await security.PlaygroundComplaints.open(storage_paths(settings).web, playground.DAY)
    core.closers.append(complaint_log)
    complaints = security.RateLimit(w.playground_complaints, playground.DAY)
    all_complaints = security.RateLimit(w.playground_complaints_per_day, playground.DAY)
    now = time.time()
    for visitor, at in await complaint_log.since(now - playground.DAY):
        complaints.restore(visitor, now - at)
        all_complaints.restore(playground.ALL, now - at)
    passwords = security.PasswordChecks()
    core.closers.append(passwords)
    players = await playground.allowed_players(core)
    player_names = playground.PlayerNames(core, players)

    async def stop_reading_names(_: web.Application) -> None:
        await player_names.aclose()

    app[STATE] = WebState(
        core=core,
        staff=security.staff_accounts(settings),
        staff_logins=staff_logins,
        logins=security.RateLimit(w.login_attempts, w.login_seconds),
        client_failures=security.RateLimit(w.login_attempts, w.login_seconds),
        name_failures=security.RateLimit(w.login_name_attempts, w.login_seconds),
        notes=security.RateLimit(w.playground_notes, w.playground_seconds),
        all_notes=security.RateLimit(w.playground_notes_per_minute, 60.0),
        ticket_views=security.RateLimit(playground.TICKET_VIEWS, playground.TICKET_VIEW_SECONDS),
        complaints=complaints,
        all_complaints=all_complaints,
        complaint_log=complaint_log,
        players=players,
        player_names=player_names,
        visitor_key=security.visitor_key(settings),
        passwords=passwords,
        discord_ready=discord_ready,
        discord_connected=discord_connected or discord_ready,
    )
    app.on_cleanup.append(stop_reading_names)
    app.on_response_prepare.append(_bound_sending)

    app[security.FORM_READS] = security.FormReads(w)
    # Sessions before CSRF: the token is checked against the session's.
    setup_sessions(app, security.session_storage(settings))
    app.middlewares.append(security.playground_json_middleware)
    app.middlewares.append(security.csrf_middleware)
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("bot.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        context_processors=[_template_context],
    )
    env.filters["utc"] = utc_minute
    env.filters["shortened"] = shortened
    env.tests["from_playground"] = playground.from_playground
    playground.add_routes(app)
    desk.add_routes(app)
    ops.add_routes(app)
    # follow_symlinks off and aiohttp's own normalisation: nothing outside static/ is served.
    app.router.add_static("/static", str(PACKAGE / "static"), follow_symlinks=False, name="static")
    return app


async def _bound_sending(request: web.Request, _: web.StreamResponse) -> None:
    """The connection is ended by the kernel once bytes sent on it go SEND_SECONDS untaken."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: elsewhere aiohttp's own (none) holds
        # A client already gone: its answer fails as it is written, not here.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(SEND_SECONDS * 1000))


def byte_range(request: web.Request) -> slice | None:
    """The one byte range asked for, or None for the whole: no Range, or one that cannot be read
    or asks for several (RFC 9110 lets a server ignore it). `bytes=-0`, a suffix of no bytes, is
    slice(0, 0), unsatisfiable (RFC 9110 14.1.1): aiohttp reads it as slice(0, None), the whole."""
    try:
        wanted = request.http_range
    except ValueError:
        return None
    if wanted.start is None and wanted.stop is None:
        return None
    suffix = request.headers.get("Range", "").partition("=")[2].startswith("-")
    if suffix and wanted.start == 0:
        return slice(0, 0)
    return wanted


# The static folder's files, as the package was installed: each is served without a look for it
# here (a thread hop per stylesheet, on the pool a raid's work queues in), only other names are.
STATIC_FILES = frozenset(entry.name for entry in (PACKAGE / "static").iterdir() if entry.is_file())


@web.middleware
async def static_files(request: web.Request, handler: security.Handler) -> web.StreamResponse:
    """A /static name that is no file there is the plain 404 (403 for no regular file) every other
    path gets: aiohttp's FileResponse looks for the file only as it is sent, and answers a missing
    one with an empty `application/octet-stream`. `Range: bytes=-0` is 416, as on reply audio:
    FileResponse sends the whole file as a 206 for it."""
    response = await handler(request)
    route = request.match_info.route.resource
    if (
        route is None
        or route.name != "static"
        or not isinstance(response, web.FileResponse)
        or response.prepared
    ):
        return response
    name = request.match_info["filename"]
    # If-Range: aiohttp may ignore the Range, left to it.
    nothing = "If-Range" not in request.headers and byte_range(request) == slice(0, 0)
    if name in STATIC_FILES and not nothing:
        return response
    # The path the handler took (it refused any outside the folder), as aiohttp sizes it.
    found = Path(route.get_info()["directory"], name)
    try:
        info = await asyncio.to_thread(found.stat)
    except PermissionError:
        raise web.HTTPForbidden() from None
    except OSError:
        raise web.HTTPNotFound() from None
    if not stat.S_ISREG(info.st_mode):
        raise web.HTTPForbidden()
    if not nothing:
        return response
    headers = {"Content-Range": f"bytes */{info.st_size}", "Accept-Ranges": "bytes"}
    return web.Response(status=416, headers=headers)


def utc_minute(iso: str | None, suffix: bool = True) -> str:
    """A stored time (ISO 8601, UTC) as staff read it: "2026-11-14 09:12 UTC". Staff may sit in
    any time zone, so the zone is said rather than converted."""
    if not iso:
        return ""
    shown = iso[:16].replace("T", " ")
    return f"{shown} UTC" if suffix else shown


def shortened(text: str | None, limit: int) -> str:
    """`text` in at most `limit` characters and a "…": cut at a word's end in its second half,
    else (Chinese, Japanese, a long address) where a character a reader sees as one starts:
    Jinja's truncate cuts anywhere, a flag into a boxed letter, an emoji into its parts."""
    text = text or ""
    if len(text) <= limit:
        return text
    cut = cluster_start(text, limit - 1)
    space = text.rfind(" ", 0, cut + 1)
    if space > cut // 2:
        cut = space
    return text[:cut].rstrip() + "…"


# Routes that render no page: aiohttp-jinja2 runs the context processor before every handler, and
# its CSRF token would start a session (a Set-Cookie) on each probe, scrape and static file.
NO_PAGE_ROUTES = frozenset({"healthz", "metrics", "static", "favicon"})


async def _template_context(request: web.Request) -> dict[str, object]:
    from bot.web.desk import STAFF_NAME, logged_in

    route = request.match_info.route
    name = route.resource.name if route.resource is not None else None
    if request.match_info.http_exception is not None or name in NO_PAGE_ROUTES:
        return {}
    try:
        staff = await logged_in(request)
    except sqlite3.Error:
        # Not said here: a page that needs the login refuses with the desk's 503 (and logs it);
        # one that does not (the playground, the login page) is shown without the staff links.
        staff = False
    # A named account's login says whose it is, on a machine staff may share.
    who = request.get(STAFF_NAME) if staff and state(request).named_staff else None
    return {"csrf": await security.csrf_token(request), "staff": staff, "who": who, "here": request.path}


async def start(
    core: App,
    discord_ready: Callable[[], bool] | None = None,
    port: int | None = None,
    discord_connected: Callable[[], bool] | None = None,
) -> web.AppRunner:
    """Serve on web.host:web.port (or `port`; 0 picks a free one) until the runner is cleaned up."""
    app = await build_web(core, discord_ready, discord_connected)
    w = core.settings.web
    chosen = w.port if port is None else port
    # Shared with another voxdesk process serving this storage folder (a rolling deploy starts the
    # new one before the old one stops): the kernel spreads connections over both. SO_REUSEPORT
    # would share it with any process of this user that set it too, another voxdesk install's
    # (its own tickets, sessions and staff) or a stale one's: the port must be free otherwise.
    serving = _Serving.take(storage_paths(core.settings).serving)
    if serving.shared and not core.settings.secrets.web_session_key:
        # Each process then has a key of its own, made at its start, and connections go to
        # either: sharing one would mean keeping it where the budgets' hashes of addresses are.
        log.warning(
            "another voxdesk process serves this storage folder on the web port, and"
            " VOXDESK_WEB_SESSION_KEY is not set: a staff login holds in one process only, and a"
            " playground visitor has a daily budget in each; set the same key for both"
        )

    async def stop_serving(_: web.Application) -> None:
        serving.close()

    app.on_cleanup.append(stop_serving)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    assert runner.server is not None
    _cap_connections(runner.server, w)
    reuse = hasattr(socket, "SO_REUSEPORT")
    try:
        if reuse and chosen and not serving.shared:
            await _refuse_taken(w.host, chosen)
        site = web.TCPSite(runner, w.host, chosen, reuse_port=reuse)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("web front end on %s", ", ".join(str(a) for a in runner.addresses))
    return runner


def _cap_connections(server: web.Server, w: WebSettings) -> None:
    """An address holds at most web.connections_per_address connections open: beyond them one is
    closed (reset) as it opens. An IPv6 client counts as its /64, as the rate limits count it: it
    may open each connection from another address in it. Each open connection is a file
    descriptor, idle ones held up to HEAD_SECONDS, and one client opening them by the hundred
    would leave none for anyone else. A peer in web.trusted_proxies is not counted: every
    visitor's connections come from it. No middleware sees a connection before its first request,
    so this is aiohttp's own bookkeeping of them (the server's connection_made and
    connection_lost), wrapped on this server alone: processes sharing the port (SO_REUSEPORT)
    each count their own."""
    proxies = tuple(w.trusted_proxies)
    held: collections.Counter[str] = collections.Counter()
    counted: dict[object, str] = {}
    made, lost = server.connection_made, server.connection_lost
    warned = False

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        nonlocal warned
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else ""
        if not address or security.is_trusted(address, proxies):
            return
        address = security.subscriber(address)
        if held[address] >= w.connections_per_address:
            if not warned:
                warned = True
                log.warning(
                    "web: a client has %d connections open, web.connections_per_address: more"
                    " from it are closed as they open (said once a process)",
                    held[address],
                )
            transport.abort()
            return
        held[address] += 1
        counted[handler] = address

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        address = counted.pop(handler, None)
        if address is not None:
            held[address] -= 1
            if not held[address]:
                del held[address]
        lost(handler, exc)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]


class _Serving:
    """A shared lock on `web.serving` in the storage folder while this process serves the web
    front end: held by another, that one serves the same storage, and the port is shared."""

    def __init__(self, fd: int | None, shared: bool) -> None:
        self._fd, self.shared = fd, shared

    @classmethod
    def take(cls, path: Path) -> _Serving:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # a port in use is then refused, as without SO_REUSEPORT
            log.warning("could not open %s: %s", path, exc)
            return cls(None, False)
        try:
            shared = not locked_now(fd)
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError as exc:
            # A file system without locks (ENOLCK: some network mounts): serving goes on, as on
            # one this process cannot open the file in, only without sharing the port.
            os.close(fd)
            log.warning(
                "could not lock %s (%s): the web port is not shared with another voxdesk process",
                path,
                exc.strerror or exc,
            )
            return cls(None, False)
        return cls(fd, shared)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def _refuse_taken(host: str | list[str] | None, port: int) -> None:
    """Raise EADDRINUSE where another socket has `port` (bound without SO_REUSEPORT, as aiohttp
    binds): what the bind itself would say without sharing."""
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
    probe.close()
    await probe.wait_closed()


def bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """`voxdesk web`: the web front end alone, until SIGTERM / Ctrl-C (or `stop`)."""
    from bot.app import running_app

    signals = (signal.SIGTERM, signal.SIGINT) if stop is None else ()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    with stop_signals.routed(loop, signals, stop.set):
        log.info("%s", settings.whereabouts())
        async with running_app(settings) as core:
            runner = await start(core)
            host, port = runner.addresses[0][:2]
            print(f"voxdesk web on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
            try:
                await stop.wait()
            finally:
                await runner.cleanup()
    # The start's line has a counterpart, so an operator's journal says the stop was clean.
    print("voxdesk web stopped", flush=True)
