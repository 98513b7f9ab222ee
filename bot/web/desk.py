"""The support desk, for staff only: grievances listed and filtered, opened, noted and moved
between statuses (local backend; with Jira as the ticket system, links to each issue and only the
grievances that never go to Jira are worked here), usage and notes charts, and the `check`
results."""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import logging
import math
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session
from markupsafe import Markup
from yarl import URL

from bot import sentences as say
from bot.config import Settings, shown_url
from bot.ticket_news import USER_ID
from bot.tools.grievance_store import (
    CATEGORIES,
    REFUSALS,
    STAFF_STATUSES,
    STATUSES,
    LocalGrievanceStore,
    StaffRow,
    StatusChanged,
    WaitsForJira,
    WorkedInJira,
)
from bot.web import charts, security
from bot.web import state as web_state

MAX_NOTE_CHARS = 4000
PAGE_SIZE = 100
MAX_SEARCH_CHARS = 200
MAX_REASON_CHARS = 300  # of a database's refusal, as the desk shows it
CHECK_CACHE_SECONDS = 30.0
LOGIN_BUSY_SECONDS = 5  # Retry-After of a login refused while every password check is taken
# ?age=…: created within the last N days ("-N"), or longer ago than N days ("N").
AGES = {
    "": "any age",
    "-1": "last 24 hours",
    "-7": "last 7 days",
    "7": "older than 7 days",
    "30": "older than 30 days",
}

SORTS = {"": "newest first", "oldest": "oldest first"}

# A grievance's way to Jira in staff's words, not the store's push_state.
JIRA_STATES = {"local_only": "only here", "pending": "waiting to reach Jira", "pushed": "in Jira"}

# A piece of ticket news's state (bot/ticket_news.py's news table), as staff read it.
NEWS_STATES = {
    "pending": "waiting to be sent",
    "held": "waiting: the note it was filed from is to be answered, which tells its number",
    "claimed": "about to be sent",
    "sending": "being sent",
    "sent": "sent",
    "muted": "not sent: the player turned /notify off",
    "dms_closed": "not sent: the player's DMs are closed",
    "failed": "could not be sent",
    "in_answer": "not sent: the answer to the player's note told its number",
}

# Who made a status change (grievance_store.StatusChange.changed_by), as its page says: a staff
# account's name, "staff" for the shared password's login, or Jira. No player can set a status.
CHANGED_BY = {"staff": "by staff", "jira": "by Jira"}


def by_whom(changed_by: str) -> str:
    return CHANGED_BY.get(changed_by) or f"by {changed_by}"


Handler = Callable[[web.Request], Awaitable[Any]]

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/desk/login", login_page, name="login")
    app.router.add_post("/desk/login", login)
    app.router.add_post("/desk/logout", logout, name="logout")
    app.router.add_get("/desk", desk, name="desk")
    app.router.add_get("/desk/ticket/{key}", ticket, name="ticket")
    app.router.add_post("/desk/ticket/{key}/note", add_note, name="note")
    app.router.add_post("/desk/ticket/{key}/status", set_status, name="status")
    app.router.add_get("/desk/charts", charts_page, name="charts")
    app.router.add_get("/desk/check", check_page, name="check")
    app.router.add_post("/desk/check", check_again)


def staff_only(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> Any:
        try:
            if not await logged_in(request):
                if (not_done := await form_not_done(request, 401)) is not None:
                    return not_done
                raise web.HTTPSeeOther(_login_then(request))
            return await handler(request)
        except sqlite3.Error as exc:
            return await _unavailable(request, exc)

    wrapped.staff_only = True  # type: ignore[attr-defined]
    return wrapped


async def login_instead(request: web.Request) -> web.HTTPSeeOther | None:
    """For a staff form of this site the CSRF check refused as its session had ended (logged out
    in another tab, a cookie past its age, a restart without the session key): the login page,
    going back to the page it was sent from, as a lapsed login still in its session is sent, not
    a line about a token that a reload only sends again. None for another route, or a login."""
    if not getattr(request.match_info.handler, "staff_only", False):
        return None
    try:
        if await logged_in(request):
            return None
    except sqlite3.Error:
        return None  # the refusal stands: a login web.db cannot confirm is no login to send on
    return web.HTTPSeeOther(_login_then(request))


@contextlib.contextmanager
def _reading(database: str) -> Iterator[None]:
    """A read of a database other than the grievance one: a refusal names it, or staff would be
    sent to look at the grievance database."""
    try:
        yield
    except sqlite3.Error as exc:
        exc.database = database  # type: ignore[attr-defined]
        raise


async def _unavailable(request: web.Request, exc: sqlite3.Error) -> web.Response:
    """What staff see when a database refuses (busy past its timeout, disk full,
    damaged): what was not done, and why, rather than a bare server error; a note they wrote is
    given back to send again, not lost with the page."""
    route = request.match_info.route.resource
    name = route.name if route is not None else None
    key = request.match_info.get("key")
    database = getattr(exc, "database", "grievance")
    log.error("desk: %s %s: the %s database did not answer: %s", request.method, request.path, database, exc)
    note = None
    if name == "note":
        what = f"Your note on {key} was not saved"
        with contextlib.suppress(web.HTTPException):
            sent = (await security.read_form(request)).get("body", "")
            note = sent if isinstance(sent, str) else ""
    elif name == "status":
        what = f"The status of {key} was not changed"
    else:
        what = "This page could not be shown"
    router = request.app.router
    context = {
        "database": database,
        "what": what,
        "reason": _reason_shown(request, exc),
        "key": key,
        "ticket_url": str(router["ticket"].url_for(key=key)) if key else None,
        "note_url": str(router["note"].url_for(key=key)) if key else None,
        "note": note,
    }
    return aiohttp_jinja2.render_template("unavailable.html", request, context, status=503)


def _reason_shown(request: web.Request, exc: sqlite3.Error) -> str | None:
    """A database's own words (which name files, tables and columns) for a confirmed staff login
    only; None for anyone else: a cookie whose login web.db cannot confirm may be a copied one,
    or a logged-out one, and the log has the words."""
    if request.get(LOGGED_IN) is not True:
        return None
    return str(exc)[:MAX_REASON_CHARS] or type(exc).__name__


# What logged_in found for this request: every page's template context asks before its handler
# does, and a web.db that cannot answer is then one refusal, said and logged once, not two reads.
LOGGED_IN = web.RequestKey("logged_in", object)
STAFF_NAME = web.RequestKey("staff_name", str)  # whose login it is, once logged_in found one


async def logged_in(request: web.Request) -> bool:
    """A staff session made with today's password and not ended by a logout. Raises the
    sqlite3.Error of a web.db that cannot say whether the login was ended."""
    found = request.get(LOGGED_IN)
    if found is None:
        try:
            found = await _logged_in(request)
        except sqlite3.Error as exc:
            exc.database = "web"  # type: ignore[attr-defined]
            found = exc
        request[LOGGED_IN] = found
    if isinstance(found, sqlite3.Error):
        raise found
    return bool(found)


async def _logged_in(request: web.Request) -> bool:
    session = await get_session(request)
    st = web_state(request)
    login = session.get("login")
    # A session with no name is the shared password's: a named account's always has one.
    name = session.get("name", security.SHARED_LOGIN)
    # A name taken out of VOXDESK_WEB_STAFF has no account here: its sessions end at once.
    account = st.staff.get(name) if isinstance(name, str) else None
    if not session.get("staff") or not isinstance(login, str) or account is None:
        return False
    if not hmac.compare_digest(str(session.get("password")), account.mark):
        return False
    # However often the cookie is rewritten (each write restarts its max-age), a login lasts
    # session_hours from the password typed: a logout's record is kept that long, no longer.
    since = session.get("since")
    if not isinstance(since, int) or st.clock() > _lapses_at(since, st.settings):
        return False
    if await st.staff_logins.ended(login):
        return False
    request[STAFF_NAME] = name
    return True


def staff_name(request: web.Request) -> str:
    """Who is logged in, for a handler behind staff_only: what their notes and changes are under."""
    return request[STAFF_NAME]


def _lapses_at(since: float, settings: Settings) -> float:
    """When a login made at `since` (unix time) ends by itself."""
    return since + settings.web.session_hours * 3600


def _store(request: web.Request) -> LocalGrievanceStore:
    return web_state(request).core.grievances.local_store  # type: ignore[attr-defined,no-any-return]


def _jira_site(request: web.Request) -> str:
    # Links staff hover, click and save: jira.url's user:password@ and query stay out of them.
    return shown_url(web_state(request).settings.jira.url).rstrip("/")


def _jira_on(request: web.Request) -> bool:
    return web_state(request).settings.tools.grievances == "jira"


# ---- login ---------------------------------------------------------------------------------

MAX_NEXT_CHARS = 2000  # of the page a login goes on to


def _login_then(request: web.Request) -> str:
    """The login page, and the desk page to go on to after it: the one asked for (a link to a
    ticket from a colleague, a page left open past its login), or for a form sent, the page it was
    sent from, rather than the grievance list every time."""
    login = request.app.router["login"].url_for()
    key = request.match_info.get("key")
    if key is not None:
        then = str(request.app.router["ticket"].url_for(key=key))
    elif request.method in ("GET", "HEAD"):
        then = request.rel_url.path_qs
    else:
        then = request.path
    then = _next_page(then)
    return str(login.with_query(next=then) if then and then != "/desk" else login)


def _next_page(value: object) -> str | None:
    """`next` as a path of this site's desk, or None: never another site (`//host`, `https:`),
    which would make the login page a way to send staff anywhere once they log in."""
    if not isinstance(value, str) or not value.startswith("/desk") or len(value) > MAX_NEXT_CHARS:
        return None
    try:
        url = URL(value)
    except ValueError:
        return None
    if url.absolute or not (url.path == "/desk" or url.path.startswith("/desk/")):
        return None
    if url.path in ("/desk/login", "/desk/logout"):
        return None
    # A browser resolves "." and ".." (sent encoded too: %2e%2e, ..%2f) in the Location it is
    # sent to: "/desk/../x" is /x, and "/desk/../..//host" the path //host. No desk page has one.
    if any(part in (".", "..") for part in url.path.split("/")):
        return None
    # As encoded: decoded, a query's %26 or %2B (a search for "Q&A", "C++") would be escaped again.
    return url.raw_path_qs


@aiohttp_jinja2.template("login.html")
async def login_page(request: web.Request) -> dict[str, Any]:
    return {
        "configured": bool(web_state(request).staff),
        "named": web_state(request).named_staff,
        "name": None,
        "error": None,
        "next": _next_page(request.query.get("next")),
    }


async def login(request: web.Request) -> web.StreamResponse:
    st = web_state(request)
    client = security.client_key(request, st.settings.web)
    wait = st.logins.retry_after(client)
    if wait:
        # Rounded up, as the playground's: a browser or script told to wait 0 seconds would not.
        seconds = max(1, math.ceil(wait))
        error = f"Too many login attempts: try again in {say.wait_of(seconds)}."
        return _login_refused(request, error, 429, seconds)
    form = await security.read_form(request)
    then = _next_page(form.get("next"))
    password = form.get("password")
    name = security.account_name(form.get("name") if st.named_staff else security.SHARED_LOGIN)
    account = st.staff.get(name)
    # Each name of an account's shape is counted, whether or not it has one: a slow-down for
    # accounts alone would tell which names have one.
    tried = name if security.STAFF_NAME.fullmatch(name) or name == security.SHARED_LOGIN else None
    if tried is not None and st.name_failures.spent(tried) and st.client_failures.held(client):
        # Many clients' failures for this name (an attacker spread over many addresses): one try
        # each until their failures lapse, where the client limit gives login_attempts. A client
        # with no failure is checked as ever, so the real person's right password always opens
        # the desk, whatever others try. No password was checked: not counted as an attempt.
        st.logins.take_back(client)
        seconds = max(1, math.ceil(st.client_failures.held(client)))
        error = f"Too many failed logins for this name: try again in {say.wait_of(seconds)}."
        return _login_refused(request, error, 429, seconds)
    ok = bool(st.staff) and isinstance(password, str) and bool(password)
    if ok:
        # An unknown name costs the check a known one does: how long a refusal takes tells nobody
        # which names have an account.
        stored = (account or next(iter(st.staff.values()))).password_hash
        try:
            ok = await st.passwords.verify(str(password), stored) and account is not None
        except security.PasswordsBusy:
            # 503, not 429: the server is busy, not this client too quick (it may be staff, caught in
            # another's flood).
            error = (
                f"The desk is checking many logins at once: try again in {say.wait_of(LOGIN_BUSY_SECONDS)}."
            )
            return _login_refused(request, error, 503, LOGIN_BUSY_SECONDS)
    if not ok or account is None:
        # Who tried, never what they typed: a name only when it is an account's (a password typed
        # into the name field is none). The attempt that uses up the window says so once, rather
        # than a line for each refused try after it.
        who = f"client {client}"
        if account is not None and st.named_staff:  # the right name, a wrong password
            who = f"{name!r} from {who}"
        if st.logins.spent(client):
            log.warning(
                "staff login failed for %s: locked out for %.0f s after %d failed attempts",
                who,
                st.settings.web.login_seconds,
                st.settings.web.login_attempts,
            )
        else:
            log.warning("staff login failed for %s", who)
        st.client_failures.retry_after(client)
        if tried is not None and not st.name_failures.spent(tried):
            st.name_failures.retry_after(tried)
            if st.name_failures.spent(tried):  # said once as it starts, not at each try after
                # A name only when it is an account's, as above.
                named = f"{name!r}" if account is not None else "a name with no account"
                named = named if st.named_staff else "the shared password"
                log.warning(
                    "staff logins: %d failed for %s within %.0f s, from any client: a client with a"
                    " failed login of its own gets no more tries of it until that lapses",
                    st.settings.web.login_name_attempts,
                    named,
                    st.settings.web.login_seconds,
                )
        wrong = "That name and password do not match." if st.named_staff else "That password is not right."
        return _login_refused(request, wrong, 401)
    st.logins.forget(client)
    st.client_failures.forget(client)
    if st.named_staff:
        log.info("staff login: %r from client %s", name, client)
    # A fresh session (and CSRF token) at login: a cookie planted before it is worth nothing after.
    session = await new_session(request)
    session["staff"] = True
    session["since"] = int(st.clock())
    session["login"] = secrets.token_urlsafe(16)
    session["name"] = name
    session["password"] = account.mark
    raise web.HTTPSeeOther(then or str(request.app.router["desk"].url_for()))


async def login_expired(request: web.Request) -> web.Response:
    """A login sent from a page whose session has ended since (a restart without a session key, a
    cookie past its age): the login page again, with a token of now, not a refusal a reload would
    only send again."""
    from bot.web import _template_context

    await security.read_form(request)  # its `next`, kept
    error = "This page had expired (the desk restarted, or it was open a long time): type the password again."
    # Refused before the template's context was made: its token, made now, goes on the page.
    return _login_refused(request, error, 403, page=await _template_context(request))


def _login_refused(
    request: web.Request,
    error: str,
    status: int,
    retry_after: int | None = None,
    page: dict[str, object] | None = None,
) -> web.Response:
    """The login page again with why, not a bare line of text: staff keep the page's links and the
    field to try again from, and the error is read out on that field."""
    form = request.get(security.FORM)
    st = web_state(request)
    typed = security.account_name(form.get("name") if form is not None else None)
    context = (page or {}) | {
        "configured": bool(st.staff),
        "named": st.named_staff,
        # Given back to correct, whether or not it is an account's (which would tell who has one),
        # when it has a name's shape: a sentence pasted into the field is not put on the page.
        "name": typed if security.STAFF_NAME.fullmatch(typed) else None,
        "error": error,
        "next": _next_page(form.get("next")) if form is not None else None,
    }
    page = aiohttp_jinja2.render_template("login.html", request, context, status=status)
    if retry_after is not None:
        page.headers["Retry-After"] = str(retry_after)
    return page


async def logout(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    login = session.get("login")
    if isinstance(login, str):
        # Until the login would have lapsed by itself: a copy of the cookie opens nothing meanwhile.
        since = session.get("since")
        st = web_state(request)
        lapses = _lapses_at(since if isinstance(since, int) else st.clock(), st.settings)
        try:
            await st.staff_logins.end(login, lapses, st.clock())
        except sqlite3.Error as exc:
            # Out in this browser all the same; told that a copied cookie is not out yet.
            log.error("desk: could not record a staff logout: %s", exc)
            session.invalidate()
            at = dt.datetime.fromtimestamp(lapses, dt.UTC).isoformat()
            context = {
                "reason": _reason_shown(request, exc),
                "lapses": at,
                # The page's context was made before the logout, as staff: this browser is not now.
                "staff": False,
            }
            return aiohttp_jinja2.render_template("logged_out.html", request, context, status=503)
    session.invalidate()
    raise web.HTTPSeeOther(str(request.app.router["login"].url_for()))


# ---- grievances ------------------------------------------------------------------------------


@staff_only
@aiohttp_jinja2.template("desk.html")
async def desk(request: web.Request) -> dict[str, Any] | web.Response:
    q = request.query
    status = q.get("status", "")
    category = q.get("category", "")
    if (refused := _unknown_filters(request, status, category)) is not None:
        return refused
    age = q.get("age", "")
    if age not in AGES:
        age = ""
    sort = q.get("sort", "")
    if sort not in SORTS:
        sort = ""
    search = q.get("q", "").strip()[:MAX_SEARCH_CHARS]
    older = newer = None
    if age.startswith("-"):
        newer = float(age[1:])
    elif age:
        older = float(age)
    filters = (status or None, category or None, older, newer)
    store = _store(request)
    oldest = sort == "oldest"
    total = await store.staff_count(*filters, search=search)
    pages = max(1, -(-total // PAGE_SIZE))
    # Next and Previous go from the grievance at the page's end: grievances filed meanwhile (on
    # top, newest first) or moved out of a status filter by other staff shift no other across it.
    after, before = _row_id(q.get("after", "")), _row_id(q.get("before", ""))
    rows: list[StaffRow] = []
    if after is not None or before is not None:
        rows = await store.staff_list(
            *filters, PAGE_SIZE, search=search, oldest_first=oldest, after=after, before=before
        )
        if before is not None and len(rows) < PAGE_SIZE:
            rows = []  # fewer than a page lie before it: the first page, a full one
    if rows:
        ahead = await store.staff_count(*filters, search=search, ahead_of=rows[0].id, oldest_first=oldest)
    else:
        # A page asked for by number, or one whose neighbour left this filter, with nothing past it.
        page = pages if after is not None else 1 if before is not None else _page_number(q.get("page", ""))
        page = min(page, pages)
        ahead = (page - 1) * PAGE_SIZE
        rows = await store.staff_list(*filters, PAGE_SIZE, search=search, offset=ahead, oldest_first=oldest)
    last = ahead + len(rows)
    # Counted from this page: after paging on, the pages before it need not be full ones.
    page = -(-ahead // PAGE_SIZE) + 1
    pages = page + -(-max(0, total - last) // PAGE_SIZE)
    chosen = {"status": status, "category": category, "age": age, "sort": sort, "q": search}
    # The filters stay in the page links; empty ones are left out so the links stay short.
    kept = {k: v for k, v in chosen.items() if v}
    return {
        "rows": rows,
        "statuses": STATUSES,
        "categories": CATEGORIES,
        "ages": AGES,
        "sorts": SORTS,
        "chosen": chosen,
        "total": total,
        "first": ahead + 1 if rows else 0,
        "last": last,
        "page": page,
        "pages": pages,
        "previous_page": _desk_url(request, kept, before=rows[0].id) if rows and ahead > 0 else None,
        "next_page": _desk_url(request, kept, after=rows[-1].id) if rows and last < total else None,
        "jira_on": _jira_on(request),
        "jira_states": JIRA_STATES,
        "jira_url": _jira_site(request),
    }


def _unknown_filters(request: web.Request, status: str, category: str) -> web.Response | None:
    """A status or category the desk has not (a link typed by hand, one from before a status was
    renamed) refused with a page that names it and links to those it has: filtered by it the list
    was empty under a filter form showing "any", as if no grievance were filed at all."""
    unknown = [
        (name, value, choices)
        for name, value, choices in (("status", status, STATUSES), ("category", category, CATEGORIES))
        if value and value not in choices
    ]
    if not unknown:
        return None
    q = request.query
    kept = {k: q[k] for k in ("status", "category", "age", "sort", "q") if q.get(k)}
    for name, _, _ in unknown:
        kept.pop(name)
    context = {
        "unknown": [
            (name, value, [(c, _desk_url(request, kept | {name: c})) for c in choices])
            for name, value, choices in unknown
        ],
        "without": _desk_url(request, kept),
    }
    return aiohttp_jinja2.render_template("filter_refused.html", request, context, status=400)


def _page_number(value: str) -> int:
    """?page=N, 1 for anything that is not a plain page number (a page past the last is cut)."""
    if value.isascii() and value.isdigit() and len(value) <= 6:
        return max(1, int(value))
    return 1


def _row_id(value: str) -> int | None:
    """?after=N or ?before=N: a grievance's id, None for anything else."""
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _desk_url(request: web.Request, kept: dict[str, str], **next_to: int) -> str:
    query = kept | {k: str(v) for k, v in next_to.items()}
    return str(request.app.router["desk"].url_for().with_query(query))


@staff_only
@aiohttp_jinja2.template("ticket.html")
async def ticket(request: web.Request) -> dict[str, Any] | web.Response:
    store = _store(request)
    key = request.match_info["key"]
    row = await store.staff_get(key)
    if row is None:
        # A key as a player typed it ("grv-10"), or the Jira key a colleague pasted: its ticket.
        found = await store.staff_key(key)
        if found is not None and found != key:
            raise web.HTTPSeeOther(str(request.app.router["ticket"].url_for(key=found)))
        context = {"key": key, "search": _desk_url(request, {"q": key[:MAX_SEARCH_CHARS]})}
        return aiohttp_jinja2.render_template("no_ticket.html", request, context, status=404)
    return {
        "g": row,
        "notes": await store.staff_notes(key),
        "history": await store.status_history(key),
        "by_whom": by_whom,
        # A refusal has no Jira status a push could give the issue of one waiting to go there.
        "statuses": [s for s in STAFF_STATUSES if not (row.push_state == "pending" and s in REFUSALS)],
        "waits_for_jira": row.push_state == "pending",
        # A ticket Jira no longer has is worked here, as on the local backend.
        "jira_on": _jira_on(request) and row.gone_at is None,
        "gone": row.gone_at is not None,
        "jira_project": web_state(request).settings.jira.project,
        "workable": _workable(request, row),
        "told": _who_is_told(request, row),
        "last_news": await _last_news(request, row),
        "news_states": NEWS_STATES,
        "jira_states": JIRA_STATES,
        "jira_url": _jira_site(request),
    }


def _back_to(request: web.Request, key: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(str(request.app.router["ticket"].url_for(key=key)))


def _who_is_told(request: web.Request, row: StaffRow) -> str:
    """What becomes of a status change for this ticket's player (markup: a command in code, not
    a Markdown backtick the page would show as one)."""
    st = web_state(request)
    if not USER_ID.match(row.user_id):
        return (
            "Nobody is told: this player is no Discord user (a playground session or the command"
            " line); they see the new status when they ask."
        )
    if st.discord_ready is None:
        # `voxdesk web` alone: the change waits in the grievance database for the bot's news loop.
        return Markup(
            "The player is sent a DM (ticket news) once <code>voxdesk run</code> on this storage looks"
            " for news; this web process sends none. Not if they turned /notify off."
        )
    every = round(st.settings.news.poll_seconds)
    return (
        f"The bot sends the player a DM (ticket news) within about {every} seconds,"
        " unless they turned /notify off."
    )


async def _last_news(request: web.Request, row: StaffRow) -> tuple[str, str, str] | None:
    """(ticket, status told, state) of the newest ticket news about this grievance, if any."""
    keys = {row.local_key, row.remote_key}
    with _reading("ticket news"):
        told = await web_state(request).core.news.store.told(row.user_id)
    found = [(ticket, status, state) for ticket, _, status, state in told if ticket in keys]
    return found[-1] if found else None


def _workable(request: web.Request, row: StaffRow) -> bool:
    """Worked on the desk: every grievance on the local backend; with Jira on, those that never go
    there (filed while the local backend was in use, or by no Discord user), or nobody could, and
    those Jira no longer has (deleted, or moved out of the project)."""
    return not _jira_on(request) or row.desk_works


async def _jiras(request: web.Request, key: str) -> StaffRow | None:
    """The grievance if Jira, not the desk, works it (it went there since the page was shown)."""
    if not _jira_on(request):
        return None
    row = await _store(request).staff_get(key)
    if row is None:
        raise web.HTTPNotFound(text=f"No grievance {key}.")
    return None if _workable(request, row) else row


async def form_not_done(request: web.Request, status: int) -> web.Response | None:
    """What a ticket page's note or status change sent once the login it was opened under had
    ended (lapsed, logged out in another tab) is told: that it was not done, and for a note, the
    note back to copy, rather than the login page or a line of text, and the note lost with the
    page, maybe a long look at the ticket's worth. None for any other form."""
    name = request.match_info.route.name
    if request.method != "POST" or name not in ("note", "status"):
        return None
    form = await security.read_form(request)
    sent, wanted = form.get("body", ""), form.get("status")
    context = {
        "key": request.match_info["key"],
        "note": (sent if isinstance(sent, str) else "") if name == "note" else None,
        "wanted": wanted if wanted in STAFF_STATUSES else None,
        "hours": web_state(request).settings.web.session_hours,
        "staff": False,
    }
    return aiohttp_jinja2.render_template("form_logged_out.html", request, context, status=status)


def _note_refused(request: web.Request, key: str, sent: object, jiras: StaffRow) -> web.Response:
    """The note written is given back to add in Jira, not lost with the page."""
    context = {
        "key": key,
        "note": sent if isinstance(sent, str) else "",
        "g": jiras,
        "jira_url": _jira_site(request),
    }
    return aiohttp_jinja2.render_template("note_refused.html", request, context, status=403)


@staff_only
async def add_note(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    jiras = await _jiras(request, key)
    sent = (await security.read_form(request)).get("body", "")
    if jiras is not None:
        return _note_refused(request, key, sent, jiras)
    # A file in its place would be kept as the name Python gives it (its temporary file's path).
    # A browser sends each line break of a textarea as CRLF, yet its maxlength counts one as one
    # character: counted as sent, a note the page lets through would be refused.
    body = sent.replace("\r\n", "\n").strip() if isinstance(sent, str) else ""
    if not body or len(body) > MAX_NOTE_CHARS:
        # A page of the desk, the note given back: spaces alone pass the textarea's `required`.
        note = sent if isinstance(sent, str) else ""
        context = {"key": key, "note": note, "why": f"A note is 1 to {MAX_NOTE_CHARS} characters."}
        return aiohttp_jinja2.render_template("note_refused.html", request, context, status=400)
    try:
        if not await _store(request).add_staff_note(key, staff_name(request), body, jira=_jira_on(request)):
            raise web.HTTPNotFound(text=f"No grievance {key}.")
    except WorkedInJira as taken:
        # Its issue found in Jira again just after the look above.
        return _note_refused(request, key, sent, taken.row)
    raise _back_to(request, key)


def _status_refused(request: web.Request, key: str, jiras: StaffRow) -> web.Response:
    """A page, as for a refused note: staff keep the desk's links, and are sent to the issue."""
    context = {"key": key, "g": jiras, "jiras": True, "jira_url": _jira_site(request)}
    return aiohttp_jinja2.render_template("status_refused.html", request, context, status=403)


@staff_only
async def set_status(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    jiras = await _jiras(request, key)
    if jiras is not None:
        return _status_refused(request, key, jiras)
    form = await security.read_form(request)
    status = str(form.get("status", ""))
    if status not in STAFF_STATUSES:
        raise web.HTTPBadRequest(text="Unknown status.")
    # The status the page showed: another staff member's change since then is not overwritten
    # unseen. A form without it (a script) sets the status whatever it is.
    was = form.get("was")
    # One of Jira's copy (a grievance Jira no longer has, worked here again) is held to it too.
    was = was if isinstance(was, str) and was in STATUSES else None
    # The store's trigger records the change as ticket news: the player is told by the bot.
    try:
        done = await _store(request).set_status_by_staff(
            key, status, was, jira=_jira_on(request), by=staff_name(request)
        )
        if not done:
            raise web.HTTPNotFound(text=f"No grievance {key}.")
    except WorkedInJira as taken:
        # Its issue found in Jira again just after the look above.
        return _status_refused(request, key, taken.row)
    except StatusChanged as changed:
        context = {"key": key, "wanted": status, "was": was, "g": changed.row}
        return aiohttp_jinja2.render_template("status_refused.html", request, context, status=409)
    except WaitsForJira as waiting:
        context = {"key": key, "wanted": status, "g": waiting.row, "waits": True}
        return aiohttp_jinja2.render_template("status_refused.html", request, context, status=409)
    web_state(request).ticket_lists.clear()  # the playground shows the new status at once
    raise _back_to(request, key)


# ---- charts and check ------------------------------------------------------------------------


@staff_only
@aiohttp_jinja2.template("charts.html")
async def charts_page(request: web.Request) -> dict[str, Any]:
    meter = web_state(request).core.agent.budget
    with _reading("usage"):
        days: list[dict[str, Any]] = await meter.by_day(14) if hasattr(meter, "by_day") else []  # type: ignore[union-attr]
        hours: dict[str, int] = await meter.by_hour(24) if hasattr(meter, "by_hour") else {}  # type: ignore[union-attr]
    return {
        "cost_chart": charts.bars(
            [(d["day"][5:], float(d["cost_usd"] or 0)) for d in days], "US dollars per day", "${:.4f}"
        ),
        "turns_chart": charts.bars(
            [(d["day"][5:], float(d["turns"])) for d in days], "notes per day", "{:.0f}"
        ),
        "hours_chart": charts.bars(
            [(h[11:] + "h", float(n)) for h, n in hours.items()], "notes per hour", "{:.0f}"
        ),
        "days": days,
        # The bars' figures as text too: their tooltips are a mouse's alone.
        "hours": [(f"{h[:10]} {h[11:]}:00", n) for h, n in hours.items() if n],
    }


async def _checked(request: web.Request, again: bool = False) -> tuple[list[object], float]:
    from bot.health import check_all

    st = web_state(request)

    async def check() -> list[object]:
        return list(await check_all(st.settings, live=st.core))

    # "Check again" pressed in two tabs, or twice, is answered by one check that ended after.
    return await st.check.get(check, CHECK_CACHE_SECONDS, again=again)


@staff_only
@aiohttp_jinja2.template("check.html")
async def check_page(request: web.Request) -> dict[str, Any]:
    results, age = await _checked(request)
    return {"results": results, "age": round(age)}


@staff_only
async def check_again(request: web.Request) -> web.StreamResponse:
    # A POST with the page's token, not a GET: each check speaks a line and asks every backend
    # (billed calls, Jira's rate limit), and a page of the same site (SameSite lets its requests
    # carry staff's cookie) could have a staff browser GET it without end.
    await _checked(request, again=True)
    raise web.HTTPSeeOther(str(request.app.router["check"].url_for()))
