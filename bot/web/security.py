"""Staff passwords, sessions, CSRF, rate limits and response headers for the web front end.

Sessions are aiohttp-session's EncryptedCookieStorage (Fernet: AES with an HMAC), so a cookie
can be neither read nor forged without the key; CSRF tokens live in the session and every
request that changes something must echo one (form field or X-CSRF-Token header).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import socket
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp_jinja2
import aiosqlite
from aiohttp import web, web_response
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_request import FileField
from aiohttp_session import get_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet
from multidict import MultiDictProxy

from bot import sentences as say
from bot.config import ConfigError, Settings, WebSettings
from bot.db import first, opening, writing
from bot.logs import Outage

CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
COOKIE = "voxdesk_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# scrypt at n=2^14, r=8: about 16 MB and 50 ms a try, OWASP's floor for scrypt.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
# Threads checking staff passwords at once (each scrypt holds 16 MB while it runs).
PASSWORD_THREADS = 2
# Logins waiting for those threads, beyond the ones they run: a flood from many addresses (each
# under its own rate limit) is refused at once past these, rather than queued without end, each
# queued one holding its connection and its form.
PASSWORD_QUEUE = 16
MIN_PASSWORD_CHARS = 12  # `voxdesk web-password` and a plain VOXDESK_WEB_STAFF_PASSWORD alike
# A year: browsers keep to https for the host that long after one answer over TLS.
HSTS = "max-age=31536000"
# No powerful feature for anyone, the microphone included: a browser keeps a grant for the whole
# site, and only the playground page records, so no other page (a desk page showing what players
# wrote) may use one, whatever got onto it.
PERMISSIONS_POLICY = (
    "microphone=(), camera=(), display-capture=(), geolocation=(), payment=(), usb=(),"
    " serial=(), hid=(), midi=()"
)
# ... but the playground page, which records a note (getUserMedia): the microphone for our origin.
RECORDING_POLICY = PERMISSIONS_POLICY.replace("microphone=()", "microphone=(self)", 1)
# The routes whose page records from the microphone.
RECORDING_ROUTES = frozenset({"playground"})
# What reading a form the client sent wrong raises: bytes that are not text or a charset nobody
# has (ValueError, LookupError), aiohttp's multipart parser on a missing boundary, a transfer
# encoding it does not know (RuntimeError) or a part's broken header, and a body that is not the
# Content-Encoding it claims (RequestPayloadError: aiohttp inflates gzip and deflate as it reads).
UNREADABLE_FORM = (ValueError, LookupError, RuntimeError, HttpProcessingError, web.RequestPayloadError)
# The largest form the desk takes: a staff note of 4,000 four-byte characters, percent-encoded
# (48 KB), and its token. A form is read before the CSRF check and any rate limit, so the app's own
# body limit (a whole voice note) would let anyone make the server hold megabytes a request.
FORM_MAX_BYTES = 64 * 1024
# ... and within this many seconds (64 KB at 56 kbit/s takes about ten): a form is read on any
# route's path once a session has a token, and a sender that stops partway would hold its
# connection for good, as many times over as it opens connections.
FORM_SECONDS = 30.0
FORM = web.RequestKey("form", MultiDictProxy)  # the form read_form read, for the handler after it
# ... and at most this many being read at once for one client: a deadline alone lets one address
# open connections by the hundred, each holding a form so far for FORM_SECONDS. A person, even
# with a few tabs, sends one at a time.
FORMS_PER_CLIENT = 4
FORMS_BUSY_SECONDS = 5  # Retry-After past it: a form takes about this long on a slow line

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    enc = base64.urlsafe_b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${enc(salt).decode()}${enc(digest).decode()}"


def hash_parses(stored: str) -> bool:
    """The shape `voxdesk web-password` prints: scrypt$N$r$p$salt$digest, base64 for the last two."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(part.isdigit() for part in parts[1:4]):
        return False
    try:
        return all(base64.urlsafe_b64decode(part) for part in parts[4:])
    except (binascii.Error, ValueError):
        return False


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        dec = base64.urlsafe_b64decode
        tried = hashlib.scrypt(
            password.encode(), salt=dec(salt), n=int(n), r=int(r), p=int(p), dklen=len(dec(digest))
        )
    except ValueError:
        return False
    return hmac.compare_digest(tried, dec(digest))


class PasswordsBusy(Exception):
    """Every password thread busy and the queue for them full."""


class PasswordChecks:
    """Staff password checks (scrypt, slow on purpose) on threads of their own, not asyncio's
    default pool, where notes are decoded and the offline engine works: a burst of logins waits
    for these few threads and never delays a note, nor a busy pool a login."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(PASSWORD_THREADS, thread_name_prefix="voxdesk-password")
        self.taken = 0  # checks running or queued
        # A flood refuses many logins a second: its start said once, and its end.
        self._refusing = Outage(log, "staff logins: password checks are free again")

    async def verify(self, password: str, stored: str) -> bool:
        """Raises PasswordsBusy when PASSWORD_THREADS checks run and PASSWORD_QUEUE more wait."""
        if self.taken >= PASSWORD_THREADS + PASSWORD_QUEUE:
            said = "staff logins refused: %d password checks running or waiting"
            self._refusing.failed("busy", said, self.taken)
            raise PasswordsBusy
        self._refusing.answered()
        loop = asyncio.get_running_loop()
        self.taken += 1
        # Counted until the thread is done with it, not until its login stops waiting: a client
        # that hangs up leaves its check running, and leaving the count would let the queue grow.
        job = self._pool.submit(verify_password, password, stored)
        job.add_done_callback(lambda _: self._free(loop))
        return await asyncio.wrap_future(job)

    def _free(self, loop: asyncio.AbstractEventLoop) -> None:
        # A check still running when the server stops ends after its loop has closed: no count
        # is left to keep then, and call_soon_threadsafe's RuntimeError would be logged as an
        # ERROR traceback on an orderly stop.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._done)

    def _done(self) -> None:
        self.taken -= 1

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def password_mark(settings: Settings) -> str:
    """What a staff session records of the password it logged in with: a new password ends every
    session made with the old one, though the cookies stay readable. Made from the setting, not
    from the hash of a plain password, which is salted afresh at each start."""
    s = settings.secrets
    return _mark(s.web_staff_password_hash or s.web_staff_password)


def _mark(secret: str) -> str:
    return hmac.new(secret.encode(), b"voxdesk staff session", hashlib.sha256).hexdigest()[:32]


# web.db's, raised with each change to the schema or to what its stores' `open` migrates: an
# older voxdesk then refuses the file instead of running on a schema it does not know.
WEB_SCHEMA_VERSION = 2
WEB_SCHEMA = """
CREATE TABLE IF NOT EXISTS ended_logins (login TEXT PRIMARY KEY, until REAL NOT NULL);
-- The playground's complaints let onto the desk (unix time), each under the keyed hash its
-- visitor's budget is kept under, never the address.
CREATE TABLE IF NOT EXISTS playground_complaints (visitor TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS playground_complaints_at ON playground_complaints (at);
"""


class StaffLogins:
    """Staff logins ended by a logout, on disk until the session would have lapsed anyway.

    Sessions live in the encrypted cookie alone, so without this list a cookie copied before a
    logout would open the desk until it expired. Synced to disk at each logout (FULL): a logout
    a power cut took would open the desk to that copy again, and logouts are few."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> StaffLogins:
        async with opening(path, WEB_SCHEMA, version=WEB_SCHEMA_VERSION, durable=True) as conn:
            await conn.execute("DELETE FROM ended_logins WHERE until < ?", (time.time(),))
            await conn.commit()
            return cls(conn)

    async def end(self, login: str, until: float, now: float | None = None) -> None:
        """Record a logout until `until`; the logouts whose sessions have lapsed by `now` (the
        clock sessions are dated by) guard nothing, and a desk up for months would keep them all."""
        lapsed = time.time() if now is None else now
        async with writing(self._conn, self._write_lock):
            await self._conn.execute("DELETE FROM ended_logins WHERE until < ?", (lapsed,))
            await self._conn.execute(
                "INSERT OR IGNORE INTO ended_logins (login, until) VALUES (?, ?)", (login, until)
            )
            await self._conn.commit()

    async def ended(self, login: str) -> bool:
        rows = await self._conn.execute_fetchall("SELECT 1 FROM ended_logins WHERE login = ?", (login,))
        return first(rows) is not None

    async def aclose(self) -> None:
        await self._conn.close()


class PlaygroundComplaints:
    """The complaints the playground let onto the desk in the last day, in web.db: read back at
    start, so the daily limits on them hold across a restart, as a visitor's budget (usage.db)
    does. Written behind the count: the check counts a complaint before it is filed, with no
    await between, so side-by-side complaints of one note each see the others."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._write_lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()
        self._refusing = Outage(log, "web.db keeps the playground's complaint counts again")

    @classmethod
    async def open(cls, path: Path, window: float) -> PlaygroundComplaints:
        async with opening(path, WEB_SCHEMA, version=WEB_SCHEMA_VERSION) as conn:
            now = time.time()
            await conn.execute("DELETE FROM playground_complaints WHERE at < ?", (now - window,))
            # A time ahead of now is the clock stepped back since: counted from then, the limits
            # would last past a day, anew at each restart until the clock caught up.
            await conn.execute("UPDATE playground_complaints SET at = ? WHERE at > ?", (now, now))
            await conn.commit()
            return cls(conn)

    async def since(self, since: float) -> list[tuple[str, float]]:
        """(visitor, unix time) of each complaint kept from `since` on, oldest first."""
        rows = await self._conn.execute_fetchall(
            "SELECT visitor, at FROM playground_complaints WHERE at >= ? ORDER BY at", (since,)
        )
        return [(str(visitor), float(at)) for visitor, at in rows]

    def record(self, visitor: str, at: float, window: float) -> None:
        """Keep a complaint let through at `at`; those older than `window` by then go."""
        task = asyncio.get_running_loop().create_task(self._write(visitor, at, window))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, visitor: str, at: float, window: float) -> None:
        try:
            async with writing(self._conn, self._write_lock):
                await self._conn.execute("DELETE FROM playground_complaints WHERE at < ?", (at - window,))
                await self._conn.execute(
                    "INSERT INTO playground_complaints (visitor, at) VALUES (?, ?)", (visitor, at)
                )
                await self._conn.commit()
        except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite's, closed under it
            # Still counted in memory: only a restart before the day is out forgets it.
            said = "web.db did not keep a playground complaint's count (%s): a restart would forget it"
            self._refusing.failed(type(exc).__name__, said, exc)
            return
        self._refusing.answered()

    async def aclose(self) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._conn.close()


def staff_password_hash(settings: Settings) -> str:
    """The staff password's hash, or "" when the desk has no password (it then stays locked)."""
    s = settings.secrets
    if s.web_staff_password_hash:
        # Refused at start, not at every login: a hash cut short in a .env would lock staff out.
        if not hash_parses(s.web_staff_password_hash):
            raise ConfigError(
                "VOXDESK_WEB_STAFF_PASSWORD_HASH is not a hash from `voxdesk web-password`: make one"
            )
        return s.web_staff_password_hash
    if s.web_staff_password:
        if len(s.web_staff_password) < MIN_PASSWORD_CHARS:
            raise ConfigError(
                f"VOXDESK_WEB_STAFF_PASSWORD is shorter than {MIN_PASSWORD_CHARS} characters: choose a "
                "longer one (or set VOXDESK_WEB_STAFF_PASSWORD_HASH from `voxdesk web-password`)"
            )
        return hash_password(s.web_staff_password)
    return ""


# A staff account's name, as VOXDESK_WEB_STAFF and the login form give it (in any case) and the
# ticket history shows it.
STAFF_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
STAFF_NAME_RULE = "1 to 32 letters a-z, digits, '.', '_' or '-', the first a letter or digit"  # as said
# What the ticket history already says of a change: the shared password's login, and Jira's.
RESERVED_NAMES = frozenset({"staff", "jira"})
SHARED_LOGIN = "staff"  # the name a session of the shared staff password acts under


def account_name(typed: object) -> str:
    """A staff name as typed (VOXDESK_WEB_STAFF, `web-password --name`, the login form) as its
    account is kept: one rule for all three, or a name would log in as no account."""
    return typed.strip().lower() if isinstance(typed, str) else ""


@dataclass(frozen=True)
class StaffAccount:
    password_hash: str
    mark: str  # see password_mark: a new password for this name ends its sessions


def staff_accounts(settings: Settings) -> dict[str, StaffAccount]:
    """Who may log in to the desk, by name: each of VOXDESK_WEB_STAFF's, or the shared password
    alone as "staff"; none when neither is set (the desk then stays locked). Refused at start, and
    by `voxdesk check`, in one line naming the entry at fault by its place, never its hash."""
    s = settings.secrets
    if not s.web_staff:
        stored = staff_password_hash(settings)
        return {SHARED_LOGIN: StaffAccount(stored, password_mark(settings))} if stored else {}
    if s.web_staff_password_hash or s.web_staff_password:
        # A leaver who knew the shared password would keep the desk: one or the other.
        shared = (
            "VOXDESK_WEB_STAFF_PASSWORD_HASH" if s.web_staff_password_hash else "VOXDESK_WEB_STAFF_PASSWORD"
        )
        raise ConfigError(
            f"VOXDESK_WEB_STAFF and {shared} are both set: named accounts replace the shared"
            f" password, which anyone who knew it could still log in with; unset {shared}"
        )
    accounts: dict[str, StaffAccount] = {}
    for place, entry in enumerate(s.web_staff.split(","), 1):
        if not entry.strip():  # a comma at the end, or two together
            continue
        typed, colon, stored = entry.partition(":")
        name, stored = account_name(typed), stored.strip()
        where = f"VOXDESK_WEB_STAFF's entry {place}"
        if not colon:
            raise ConfigError(f"{where} is not name:hash: add each from `voxdesk web-password --name NAME`")
        if not STAFF_NAME.fullmatch(name):
            raise ConfigError(f"{where} has no name of {STAFF_NAME_RULE}, before its ':'")
        if name in RESERVED_NAMES:
            raise ConfigError(
                f"{where} is named {name!r}, which the ticket history keeps for itself: rename it"
            )
        if name in accounts:
            raise ConfigError(f"{where} names {name!r} again: keep one entry each")
        # At voxdesk's own cost only: a name with no account is checked against another's hash,
        # so a login's time tells which names have one unless every account's costs the same.
        if not hash_parses(stored) or stored.split("$")[1:4] != [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]:
            raise ConfigError(
                f"{where} ({name}) is not a hash from `voxdesk web-password --name {name}`: make one"
            )
        accounts[name] = StaffAccount(stored, _mark(stored))
    return accounts


def visitor_key(settings: Settings) -> bytes:
    """The key of the hash a playground visitor's address is kept under (their daily budget): from
    the session key, so every process and restart keeps one visitor under one name; without one, a
    key of this process's (budgets then start afresh at a restart)."""
    key = settings.secrets.web_session_key
    if not key:
        return secrets.token_bytes(32)
    return hmac.new(key.encode(), b"voxdesk playground visitor", hashlib.sha256).digest()


def session_storage(settings: Settings) -> EncryptedCookieStorage:
    key = settings.secrets.web_session_key
    if key:
        try:
            Fernet(key.encode())
        except ValueError:
            raise ConfigError(
                "VOXDESK_WEB_SESSION_KEY is not a Fernet key: make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
            ) from None
    else:
        key = Fernet.generate_key().decode()  # sessions then end when the process stops
    return _SessionCookies(
        key,
        cookie_name=session_cookie(settings.web),
        httponly=True,
        samesite="Strict",
        secure=settings.web.secure_cookies,
        max_age=int(settings.web.session_hours * 3600),
    )


def session_cookie(settings: WebSettings) -> str:
    """The session cookie's name. On https (secure_cookies) with the __Host- prefix: a browser
    then keeps it only Secure, for Path=/ and with no Domain, so neither a sibling subdomain nor an
    answer over plain http can set one, or shadow this one, for a visitor or staff. Not on the
    local http demo, where a browser would refuse it."""
    return f"__Host-{COOKIE}" if settings.secure_cookies else COOKIE


class _SessionCookies(EncryptedCookieStorage):
    def load_cookie(self, request: web.Request) -> str | None:
        # A Fernet token is ASCII. A cookie that is not (its bytes not UTF-8: the client's own, or
        # set by a sibling site) is no session, as an unreadable token is: aiohttp-session would
        # raise encoding it, and every page would be a 500 for that browser.
        cookie = super().load_cookie(request)
        return cookie if cookie is not None and cookie.isascii() else None

    def save_cookie(
        self, response: web.StreamResponse, cookie_data: str, *, max_age: int | None = None
    ) -> None:
        if cookie_data:
            super().save_cookie(response, cookie_data, max_age=max_age)
            return
        # A session ended (a logout) is deleted with the attributes it was set with: aiohttp-session
        # drops Secure, and a browser refuses a __Host- cookie without it, keeping the session.
        params = self.cookie_params
        response.del_cookie(
            self.cookie_name,
            domain=params["domain"],
            path=params["path"],
            secure=params["secure"],
            httponly=params["httponly"],
            samesite=params["samesite"],
        )


async def csrf_token(request: web.Request) -> str:
    session = await get_session(request)
    token = session.get(CSRF_FIELD)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return str(token)


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse any state-changing request whose token is missing or not this session's."""
    if request.method in SAFE_METHODS:
        return await handler(request)
    if request.match_info.http_exception is not None:
        # The router's own refusal (no route has the path, or none of its routes takes the method:
        # a 405 with its Allow) changes nothing, and no token would have let it through. Its body
        # is not read, a form's neither: the refusal goes out at once, and aiohttp reads on after
        # it for lingering_time (10 s) at most, then ends the connection, where a form's read
        # would hold a sender that stops partway for FORM_SECONDS.
        return await handler(request)
    session = await get_session(request)
    expected = session.get(CSRF_FIELD)
    if not expected:  # nothing could match: refused before its token is read from the body
        return await _csrf_refused(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type == "application/x-www-form-urlencoded":
        sent = (await read_form(request)).get(CSRF_FIELD)  # type: ignore[assignment]
    # Tokens are ASCII, which compare_digest needs of a str: anything else (a header's bytes that
    # are not UTF-8 come as surrogates no codec takes) is a forgery, not a 500.
    if not isinstance(sent, str) or not sent.isascii() or not hmac.compare_digest(sent, str(expected)):
        return await _csrf_refused(request)
    return await handler(request)


def _same_origin(request: web.Request) -> bool:
    """Whether the browser says the request comes from a page of this site (a form of ours),
    not another's."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("Origin")
    return origin is not None and origin.partition("://")[2] == request.host


async def _csrf_refused(request: web.Request) -> web.Response:
    from bot.web.desk import form_not_done, logged_in, login_instead

    if request.match_info.route.name == "logout":
        # Logged out in another tab, or a login lapsed: nothing is left to log out of, so the login
        # page, as a logout goes on to, not a refusal to reload. A logged-in session's logout still
        # needs its token: another site's form ends no login.
        with contextlib.suppress(sqlite3.Error):
            if not await logged_in(request):
                raise web.HTTPSeeOther(str(request.app.router["login"].url_for()))
    # A ticket page's note or status change sent once its session has ended (logged out in
    # another tab, a cookie past its age, a restart without a session key) is told so, a note given
    # back to copy, not lost with the page; another of the desk's forms (check again) goes to the
    # login page and back. Only to a page of this site, so another's forged form puts no words here.
    if _same_origin(request):
        if request.method == "POST" and request.path == request.app.router["login"].url_for().path:
            from bot.web.desk import login_expired

            return await login_expired(request)
        if (not_done := await form_not_done(request, 403)) is not None:
            return not_done
        if (login := await login_instead(request)) is not None:
            raise login
    # The playground's script reads its answers as JSON and shows their "error": in plain text
    # a page whose session ended (a lapsed cookie, a restart without a session key) would only
    # say "Something went wrong (403)", never to reload it.
    if request.path.startswith("/playground/"):
        return web.json_response({"error": say.CSRF_REFUSED}, status=403)
    return web.Response(status=403, text=say.CSRF_REFUSED)


@web.middleware
async def playground_json_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal under /playground/ as JSON, with its "error" the words the page shows: the
    CSRF check's own refusal of a form it cannot read (400) or that is too big (413) among them."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith("/playground/"):
            raise
        kept = {k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")}
        answer = web.json_response({"error": exc.text or exc.reason}, status=exc.status, headers=kept)
        if exc.keep_alive is False:  # a body not read to its end (read_form's 408) ends its connection
            answer.force_close()
        return answer


class FormReads:
    """The forms being read now, by client (client_key): FORMS_PER_CLIENT at most each."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.by_client: dict[str, int] = {}

    @contextlib.contextmanager
    def reading(self, request: web.Request) -> Iterator[None]:
        client = client_key(request, self.settings)
        held = self.by_client.get(client, 0)
        if held >= FORMS_PER_CLIENT:
            wait = say.wait_of(FORMS_BUSY_SECONDS)
            refused = web.HTTPTooManyRequests(
                text=say.FORMS_AT_ONCE.format(wait=wait), headers={"Retry-After": str(FORMS_BUSY_SECONDS)}
            )
            # Its body is not read: aiohttp would otherwise wait for it to keep the connection.
            refused.force_close()
            raise refused
        self.by_client[client] = held + 1
        try:
            yield
        finally:
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]


FORM_READS = web.AppKey("form_reads", FormReads)


async def read_form(request: web.Request) -> Mapping[str, str | bytes | FileField]:
    """The request's form; 400 for one that cannot be read, never a server error, 413 for one over
    FORM_MAX_BYTES, as soon as it passes that, with or without a Content-Length, 408 for one not
    all there within FORM_SECONDS, and 429 while FORMS_PER_CLIENT of this client's are being read."""
    form = request.get(FORM)
    if form is None:
        with request.config_dict[FORM_READS].reading(request):
            try:
                async with asyncio.timeout(FORM_SECONDS):
                    form = await request.clone(client_max_size=FORM_MAX_BYTES).post()
            except UNREADABLE_FORM:
                raise web.HTTPBadRequest(text=say.FORM_UNREADABLE) from None
            except TimeoutError:
                refused = web.HTTPRequestTimeout(text=say.FORM_TOO_SLOW)
                # The rest of the body may never come: not waited for to keep the connection.
                refused.force_close()
                raise refused from None
        request[FORM] = form
    return form


@web.middleware
async def broken_body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body that broke as it was read (not the gzip its Content-Encoding says, broken chunked
    framing) ends its connection with the answer given, said in one warning line. aiohttp would
    otherwise read the rest to keep the connection, meet the same error, and log it at ERROR with
    a traceback; and its parser cannot go on past the break to a next request anyway."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _end_broken_body(request, exc)
        raise
    _end_broken_body(request, response)
    return response


def _end_broken_body(request: web.Request, response: web.StreamResponse) -> None:
    broke = request.content.exception()
    if broke is None or response.prepared:
        return
    response.force_close()
    # Nothing more to read: aiohttp then closes the connection after the answer.
    request.content.feed_eof()
    log.warning(
        "web: %s %s: its body (Content-Encoding: %s) could not be read (%s): answered %d",
        request.method,
        request.path,
        request.headers.get("Content-Encoding", "none"),
        " ".join(str(broke).split()),  # aiohttp's words for it span two lines
        response.status,
    )


class BrokenBodyAfterAnswer(logging.Filter):
    """aiohttp.server's traceback for a body that broke after the answer (one refused before its
    body was read, then the rest not the gzip it claimed): the client's fault, in one warning line.
    aiohttp reads on to keep the connection, meets the error and logs it as unhandled."""

    def filter(self, record: logging.LogRecord) -> bool:
        broke = record.exc_info[1] if record.exc_info else None
        if isinstance(broke, RequestPayloadError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = (
                "web: a request body broke after its answer (%s): connection closed",
                (" ".join(str(broke).split()),),
            )
            record.exc_info = record.exc_text = None
        return True


class UnparsableRequest(logging.Filter):
    """aiohttp.server's traceback for a request it answered 400 before the app was reached (a URL
    or header over its 8190 bytes, a malformed line): the client's fault, in one warning line that
    names the kind of fault alone. aiohttp's words quote the request's bytes, a query string's
    tokens with them, and at ERROR every scanner's long URL would page whoever watches for errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        bad = record.exc_info[1] if record.exc_info else None
        if isinstance(bad, BadHttpMessage):
            # Never louder: aiohttp keeps a first request that is not HTTP at all at debug.
            level = min(record.levelno, logging.WARNING)
            record.levelno, record.levelname = level, logging.getLevelName(level)
            record.msg, record.args = (
                "web: a request that could not be parsed was refused (400): %s",
                (type(bad).__name__,),
            )
            record.exc_info = record.exc_text = None
        return True


def quiet_client_faults() -> None:
    server_log = logging.getLogger("aiohttp.server")
    for kind in (BrokenBodyAfterAnswer, UnparsableRequest):
        if not any(isinstance(f, kind) for f in server_log.filters):
            server_log.addFilter(kind())


# What every answer says it is served by: no software's name or version, a scanner's list of flaws.
SERVER = "voxdesk"


def name_no_software() -> None:
    """The Server header aiohttp gives the answers no middleware sees: the 400 of a request it
    cannot parse, made before the app is reached, would name aiohttp and Python with their versions.
    The default every answer takes, in aiohttp's response module alone (its client's User-Agent
    is another's)."""
    web_response.SERVER_SOFTWARE = SERVER


SERVER_ERROR = "500 Internal Server Error: something went wrong on our side. Please try again."


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An exception no handler expected, answered here rather than by aiohttp: its own 500 comes
    after every middleware, without the headers the others add (CSP, nosniff, no framing), and
    logs the traceback again. A plain sentence, never the exception's words; the traceback once,
    in the log. Under /playground/ as JSON with an "error", which the page's script shows."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("web: %s %s failed", request.method, request.path)
        if request.path.startswith("/playground/"):
            return web.json_response({"error": say.OOPS}, status=500)
        return web.Response(status=500, text=SERVER_ERROR)


def headers_middleware(
    settings: WebSettings,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def secured(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _secure(request, exc, settings)
            raise
        _secure(request, response, settings)
        return response

    return secured


def _secure(request: web.Request, response: web.StreamResponse, settings: WebSettings) -> None:
    if response.prepared:
        return
    h = response.headers
    # Staff pages, the playground page (it carries the session's CSRF token) and anything that sets
    # the session cookie: never kept by a browser's or a proxy's cache, where the next person at the
    # machine, or behind the proxy, could be shown it.
    if request.path == "/" or request.path.startswith("/desk") or response.cookies:
        h["Cache-Control"] = "no-store"
    # The playground's answers (what a note asked and was told, reply audio) are one session's.
    elif request.path.startswith("/playground/"):
        h.setdefault("Cache-Control", "no-store")
    # A session cookie that came over TLS (here, or to a proxy that says so) must never go back over
    # plain http, whatever secure_cookies says. The header is believed from anyone: a client that
    # forges it only withholds its own cookie from itself over http.
    cookie = response.cookies.get(COOKIE)
    if cookie is not None and not cookie["secure"] and _over_tls(request):
        cookie["secure"] = True
    # secure_cookies says the site is served over https: browsers are then told to keep to it.
    if settings.secure_cookies:
        h.setdefault("Strict-Transport-Security", HSTS)
    # No inline script, no third party: every script and style is ours, served from /static.
    h.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; style-src 'self';"
        " script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none';"
        " form-action 'self'",
    )
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault(
        "Permissions-Policy", RECORDING_POLICY if _records(request, response) else PERMISSIONS_POLICY
    )
    # No window of another site's keeps a handle on ours (window.opener), and no other site may
    # load our answers (reply audio, a ticket view's JSON) into its page as a resource.
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    h["Server"] = SERVER


def _records(request: web.Request, response: web.StreamResponse) -> bool:
    """The answer is a page that records from the microphone: a refusal on its path (a 421 for a
    name not ours, a 405) is no such page."""
    resource = request.match_info.route.resource
    return resource is not None and resource.name in RECORDING_ROUTES and response.status < 400


def _over_tls(request: web.Request) -> bool:
    """Asked for over https: TLS here, or a reverse proxy's X-Forwarded-Proto (its last value)."""
    return request.secure or _forwarded_https(request)


def _forwarded_https(request: web.Request) -> bool:
    proto = ",".join(request.headers.getall("X-Forwarded-Proto", ())).split(",")[-1]
    return proto.strip().lower() == "https"


# Clients a rate limit keeps track of at once. Past it the longest idle is forgotten (and may go
# again sooner): a flood from many addresses costs bounded memory and constant time a request.
MAX_CLIENTS = 50_000


class RateLimit:
    """At most `count` events per `seconds` per key (a client), in memory: one process's view,
    which is what a limit in front of one process's agent needs."""

    def __init__(self, count: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.seconds = seconds
        self.clock = clock
        # By last event, oldest first: the clients idle for a whole window are at the front.
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """0 if `key` may go now (and the event is counted), else seconds until it may."""
        now = self.clock()
        self._prune(now)
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
        while events and events[0] <= now - self.seconds:
            events.popleft()
        if len(events) >= self.count:
            return events[0] + self.seconds - now
        events.append(now)
        self._events.move_to_end(key)
        while len(self._events) > MAX_CLIENTS:
            self._events.popitem(last=False)
        return 0.0

    def restore(self, key: str, age: float) -> None:
        """Count an event of `key`'s `age` seconds ago, one kept across a restart: restored oldest
        first, as they happened."""
        events = self._events.setdefault(key, deque())
        # A negative age is a clock stepped back since the event: counted as now, not ahead.
        events.append(self.clock() - max(age, 0.0))
        self._events.move_to_end(key)
        while len(self._events) > MAX_CLIENTS:
            self._events.popitem(last=False)

    def spent(self, key: str) -> bool:
        """`key` has no event left in the current window."""
        events = self._events.get(key)
        now = self.clock()
        return events is not None and sum(1 for t in events if t > now - self.seconds) >= self.count

    def held(self, key: str) -> float:
        """Seconds until `key` has no event left in the window: 0 when it has none now."""
        events = self._events.get(key)
        return max(0.0, events[-1] + self.seconds - self.clock()) if events else 0.0

    def take_back(self, key: str) -> None:
        """Uncount `key`'s latest event: one retry_after counted for what turned out no attempt."""
        events = self._events.get(key)
        if events:
            events.pop()

    def forget(self, key: str) -> None:
        self._events.pop(key, None)

    def _prune(self, now: float) -> None:
        while self._events:
            key, events = next(iter(self._events.items()))
            if events and events[-1] > now - self.seconds:
                return
            del self._events[key]


def client_key(request: web.Request, settings: WebSettings) -> str:
    """Who the client is for rate limits: its address or, when it is one of our reverse proxies
    (`trust_forwarded`, and the peer in `trusted_proxies`), the last address in X-Forwarded-For
    that is not one of those proxies too: the one our outermost proxy added (earlier ones are the
    client's to forge, and so is the whole header from a peer that is not our proxy)."""
    address = request.remote or "unknown"
    proxies = tuple(settings.trusted_proxies)
    if settings.trust_forwarded and is_trusted(address, proxies):
        # Every line of the header, in order: a proxy may add its own line (HAProxy's `option
        # forwardfor` does) after the one the client sent, and the first line alone is forged.
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        # Behind a chain (a load balancer, then nginx) the last hop is the balancer, the same for
        # every visitor: one of them would spend the limits of all.
        for hop in reversed(hops):
            address = _without_port(hop)
            if not is_trusted(address, proxies):
                break
    return subscriber(address)


def _without_port(hop: str) -> str:
    """A forwarded address without the client's source port some proxies add to it (Azure
    Application Gateway: "203.0.113.5:51234", "[2001:db8::5]:51234"): a new port each connection
    must not make a new client."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    address, colon, port = hop.rpartition(":")
    if colon and address.count(".") == 3 and port.isdigit():
        return address
    return hop


@functools.lru_cache(maxsize=64)
def _networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def is_trusted(address: str, proxies: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in _networks(proxies))


# What a reverse proxy adds: the client it forwards for, or at least that it is one (a TLS terminator
# that names no client still says which scheme or host it was asked for, or that it passed it on).
FORWARDING_HEADERS = (
    "X-Forwarded-For",
    "Forwarded",
    "X-Real-IP",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Ssl",
    "Via",
    "CF-Connecting-IP",
    "True-Client-IP",
)


def metrics_allowed(request: web.Request, token: str) -> bool:
    """/metrics is for Prometheus: a peer on this machine that no proxy forwarded (the request a
    reverse proxy on the same host passes on comes from loopback too, but says whom for), or
    anyone with the bearer token when one is set."""
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # As the bytes that were sent: a header that is not UTF-8 comes as surrogates, which UTF-8
        # alone will not encode.
        sent = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() == "bearer" and hmac.compare_digest(sent, token.encode()):
            return True
    if any(h in request.headers for h in FORWARDING_HEADERS):
        return False
    # A site whose name a DNS rebinding has pointed at 127.0.0.1 reaches this from loopback too,
    # through a browser on this machine, and may read the answer as its own: it names itself.
    # Prometheus here asks for an address, localhost or this machine's own name.
    if not _names_this_machine(request.host):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name a Host header asks for ("Desk.Example.:8080", "[::1]:8080"), as names compare:
    without its port or final dot, in lower case."""
    if host.startswith("["):
        name, _, after = host[1:].partition("]")
        if after and not re.fullmatch(r":\d*", after):
            return host.lower()  # no address: as a whole, it names nothing served here
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    else:
        name = host
    return name.rstrip(".").lower()


def _names_this_machine(host: str) -> bool:
    """A Host header of an address ("127.0.0.1:8080", "[::1]:8080"), localhost or this machine's
    own name (Debian's /etc/hosts points it at 127.0.1.1, and a Prometheus here may scrape by it):
    no name a DNS answer chose."""
    name = _host_name(host)
    if name == "localhost" or name.endswith(".localhost") or name == socket.gethostname().rstrip(".").lower():
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def ignored_proxy_middleware(
    settings: WebSettings,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Say once when a request comes through a reverse proxy (a peer in web.trusted_proxies that
    sends X-Forwarded-For) while web.trust_forwarded is off: every visitor then counts as the
    proxy, and one of them spends the limits of all (the playground's notes, budget and
    complaints, the staff login lockout), with nothing else to show why."""
    proxies = tuple(settings.trusted_proxies)
    said = False

    @web.middleware
    async def ignored_proxy(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal said
        if not said and "X-Forwarded-For" in request.headers and is_trusted(request.remote or "", proxies):
            said = True
            log.warning(
                "web: requests come through a reverse proxy (X-Forwarded-For from %s) but"
                " web.trust_forwarded is off: every client counts as the proxy, sharing one rate"
                " limit, playground budget and staff login lockout; set web.trust_forwarded = true",
                request.remote,
            )
        return await handler(request)

    return ignored_proxy


def unlisted_proxy_middleware(
    settings: WebSettings,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """With web.trust_forwarded on, say once when X-Forwarded-For comes from a peer that is not in
    web.trusted_proxies: the header is ignored, so behind a proxy missing from that list (another
    container's, a load balancer's address) every visitor counts as it, and one of them spends the
    limits of all (the rate limits, the forms read at once, the playground's budget and complaints,
    the staff login lockout). It may instead be a client reaching this server around the proxy,
    which is worth knowing too. With trust_forwarded off such a header is a client's own and says
    nothing (see ignored_proxy_middleware)."""
    proxies = tuple(settings.trusted_proxies)
    said = False

    @web.middleware
    async def unlisted_proxy(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal said
        if (
            not said
            and "X-Forwarded-For" in request.headers
            and not is_trusted(request.remote or "", proxies)
        ):
            said = True
            log.warning(
                "web: a request with X-Forwarded-For came from %s, which is not in"
                " web.trusted_proxies: the header is ignored, and if %s is your reverse proxy every"
                " client counts as it, sharing one rate limit, playground budget, %d forms at once"
                " and staff login lockout; add it to web.trusted_proxies (if it is not, a client"
                " reaches this server around the proxy)",
                request.remote,
                request.remote,
                FORMS_PER_CLIENT,
            )
        return await handler(request)

    return unlisted_proxy


def plain_cookies_middleware(
    settings: WebSettings,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """With web.secure_cookies off, say once when a request comes over https (TLS here, or a
    proxy of ours, in web.trusted_proxies, saying so in X-Forwarded-Proto): the site is then served
    over https, and the setting was forgotten. Its session cookie has no __Host- prefix, so a
    sibling subdomain can plant one of its own in a visitor's browser and read, under it, what that
    visitor's playground session files; and no HSTS keeps browsers to https. A client's own
    X-Forwarded-Proto is believed for no warning: it would say nothing of the site."""
    proxies = tuple(settings.trusted_proxies)
    said = False

    @web.middleware
    async def plain_cookies(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal said
        if not said and (
            request.secure or (_forwarded_https(request) and is_trusted(request.remote or "", proxies))
        ):
            said = True
            log.warning(
                "web: the site is served over https but web.secure_cookies is off: its session"
                " cookie is not __Host-, so a sibling subdomain can plant a session of its own in a"
                " visitor's browser (and read what the visitor files in the playground under it),"
                " and browsers are not told to keep to https (HSTS); set web.secure_cookies = true"
            )
        return await handler(request)

    return plain_cookies


# Refused host names logged, each once: a scanner trying names by the thousand logs this many.
REFUSED_HOSTS_LOGGED = 100


def allowed_host_middleware(
    settings: WebSettings, loopback: bool
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Answer only the host names the site is asked for by (web.allowed_hosts) and this machine's
    own, so a DNS rebinding (another site's name pointed at this machine's address, from a browser
    that can reach it) cannot have a browser read the playground or the login page as that site's.
    A browser sends the name it was asked for, and cannot forge another. An address, localhost or
    this machine's name is no site's: a page can be another site's only under a name DNS chose.
    `loopback`: web.host reaches this machine's loopback alone (loopback_only)."""
    names = frozenset(_listed_name(name) for name in settings.allowed_hosts)
    # Bound beyond loopback with no names listed: reachable from elsewhere by any name already,
    # so it is asked for by whatever name or address people use (a studio's LAN box).
    anyone = "*" in settings.allowed_hosts or (not names and not loopback)
    if settings.trust_forwarded and not names and not anyone:
        # Said at start: behind a proxy that passes the site's name on, every page would be a 421.
        log.warning(
            "web.trust_forwarded is on (a reverse proxy) but web.allowed_hosts is empty: requests"
            " for the site's name are refused (421) unless the proxy sends Host: localhost; list it"
            ' there (allowed_hosts = ["support.example.com"])'
        )
    logged: set[str] = set()

    @web.middleware
    async def allowed_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        # No Host at all (HTTP/1.0, a script): no browser, which always sends the page's.
        if anyone or host is None or _host_name(host) in names or _names_this_machine(host):
            return await handler(request)
        # As ASCII: a header's bytes that are not UTF-8 come as surrogates no page can be sent in.
        shown = _host_name(host)[:253].encode("ascii", "backslashreplace").decode()
        if shown not in logged and len(logged) < REFUSED_HOSTS_LOGGED:
            logged.add(shown)
            log.warning(
                "web: refused requests for the host name %r (421): not in web.allowed_hosts; if it"
                " is this site's name (a reverse proxy passes it on), list it there",
                shown,
            )
        return _misdirected(request, shown)

    return allowed_host


def _listed_name(name: str) -> str:
    """A web.allowed_hosts name as a Host header carries it: a browser sends an internationalised
    name in its ASCII form ("xn--bcher-kva.example"), and TOML keeps blanks around a name."""
    name = _host_name(name.strip())
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:  # a label IDNA refuses (empty, over 63 characters): as written
        return name


MISDIRECTED = (
    "421 Misdirected Request: this voxdesk is not served under the name {name}. Open it by its own"
    " address; if you run it and {name} is its name, add that name to web.allowed_hosts in config.toml."
)


def _misdirected(request: web.Request, name: str) -> web.Response:
    said = MISDIRECTED.format(name=name)
    if request.path.startswith("/playground/"):  # the page's script reads JSON (see errors_middleware)
        return web.json_response({"error": said}, status=421)
    page = aiohttp_jinja2.get_env(request.app).get_template("misdirected.html").render(said=said)
    return web.Response(status=421, text=page, content_type="text/html")


async def loopback_only(host: str) -> bool:
    """web.host is an address or name of this machine's loopback alone, reached from this machine
    only. A name is resolved (off the loop), as the server binds it: every address it gives must
    be loopback, as Debian's /etc/hosts makes the machine's own name (127.0.1.1). One that does
    not resolve counts as beyond loopback: the server cannot bind it either."""
    name = host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(name).is_loopback
    try:
        found = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # gaierror, or a label IDNA refuses
        return False
    try:
        return bool(found) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in found)
    except ValueError:  # an address family ipaddress does not read: not known to be loopback
        return False


def subscriber(address: str) -> str:
    # One IPv6 subscriber holds a whole /64 and may use a new address for every request.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
