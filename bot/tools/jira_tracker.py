"""Jira Cloud for grievances, through the synchronous `jira` package.

Every method here blocks on HTTP: the outbox runs them in threads of its own, never on the
event loop. JQL is built only from values checked against strict patterns (project key, digits-only
user id, local key), each quoted, so nothing a player or the model says can reach a query.

Grievances are found again by labels: the category, `discord-<user id>` (whose tickets these
are) and `voxdesk-<database id>-GRV-14` (which local grievance this issue is the push of).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import logging
import re
import ssl
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from jira import JIRA, JIRAError
from urllib3.exceptions import NewConnectionError

from bot import logs
from bot.config import JIRA_PROJECT_KEY, shown_url
from bot.retry_after import http_date, seconds_named
from bot.tools import TICKET_KEY, USER_ID, cluster_start, well_formed
from bot.tools.base import DECLINED, DUPLICATE
from bot.tools.grievance_store import KEY_PREFIX, iso_at

log = logging.getLogger(__name__)

# \Z, not $: $ also matches before a final line break, which would pass "<id>\n".
PROJECT_KEY = JIRA_PROJECT_KEY
LOCAL_KEY = re.compile(rf"^{KEY_PREFIX}-[1-9][0-9]{{0,8}}\Z")
LABEL_PREFIX = re.compile(r"^[a-z][a-z0-9_-]{0,30}\Z")
SEARCH_FIELDS = ["summary", "description", "labels", "status", "resolution", "created", "updated"]
STATUS_WORDS = {"new": "open", "indeterminate": "in progress", "done": "resolved"}
# What a done issue reads as: "resolved", or, closed without a fix, DECLINED or DUPLICATE.
DONE_WORDS = (STATUS_WORDS["done"], DECLINED, DUPLICATE)
# How long the project's statuses' untranslated names are trusted before a done status not among
# them has them listed again: an admin adds statuses rarely, and players ask often.
UNTRANSLATED_SECONDS = 300.0
# The status category a local status (the desk's, grievance_store.STAFF_STATUSES) is in Jira. A
# refusal has none: the desk sets one only on a grievance that never waits for a push.
STATUS_CATEGORIES = {
    "open": "new",
    "in progress": "indeterminate",
    "waiting on player": "indeterminate",
    "resolved": "done",
    "closed": "done",
}
# A transition into done may require a resolution: one named like these, in this order, says what
# staff meant ("Done" is Jira Cloud's own); failing those, any but one that reads as not done.
# A done status named like one of those (Won't Do, Canceled) is not taken either.
DONE_RESOLUTIONS = ("done", "fixed", "resolved", "complete", "completed")
NOT_DONE_RESOLUTIONS = (
    "won't do",
    "won't fix",
    "duplicate",
    "cannot reproduce",
    "incomplete",
    "declined",
    "rejected",
    "invalid",
    "not a bug",
    "won't implement",
    "obsolete",
    "works as designed",
    "working as intended",
    "cancelled",
    "canceled",
    "withdrawn",
    "abandoned",
    "out of scope",
    "unresolved",
)
SUMMARY_WORDS = 12
SUMMARY_CHARS = 120
REASON_CHARS = 200
MAX_WINDOW_MINUTES = 7 * 24 * 60  # how far back ticket news looks, at most
PROJECT_NEWS_PAGE = 100  # issues in a project-wide look for ticket news: one page, the client's
# jira.issue_type as an issue type's id (10001) rather than its name.
ISSUE_TYPE_ID = re.compile(r"^[0-9]{1,18}\Z")
# Issues one key label is looked up among: ours, and those of grievances an older copy of the
# database filed under the same key (each restore from a backup can add one).
MAX_SAME_KEY = 20


# What create() sets beside the project and the issue type: each must be on the create screen.
CREATE_FIELDS = ("summary", "description", "labels")
# Required on every create screen with no default shown, yet filled by Jira (with the caller).
FILLED_BY_JIRA = ("reporter",)
CREATE_META_PAGE = 50
# The project permissions voxdesk uses, by Jira's keys: its issues found again (Browse projects is
# checked by the project answering at all), made, and moved to a status the desk set while a
# grievance waited.
TRANSITION_ISSUES = "TRANSITION_ISSUES"
NEEDED_PERMISSIONS = ("CREATE_ISSUES", TRANSITION_ISSUES)


class TrackerError(Exception):
    """Jira did not do what was asked. `str()` is a one-line reason with no secrets in it.

    `maybe_done` is False only when the request certainly had no effect (refused with a 4xx, or
    no connection was made); after a create that failed with `maybe_done`, the issue may exist.
    """

    def __init__(
        self,
        reason: str,
        status: int | None = None,
        maybe_done: bool = True,
        row_only: bool | None = None,
        retry_after: float | None = None,
        limit: str = "",
        gist: str | None = None,
        unreached: bool = False,
        dropped: bool = False,
    ) -> None:
        super().__init__(reason)
        # How the connection failed, by the exception's type rather than its words: none was made
        # (refused, host unknown, none within the timeout: a wrong jira.url as likely as not), or
        # one made went without an answer (reset, or a read timeout: the service, not the address).
        self.unreached = unreached
        self.dropped = dropped
        # The reason without what differs between answers alike: the wait Jira asked for, new with
        # each 429, and the issue a refused move names. One outage or one refusal of many
        # grievances is then said once (logs.Outage tells a new reason as news).
        self.gist = reason if gist is None else gist
        self.status = status
        self.maybe_done = maybe_done
        # Seconds Jira asked us to wait before the next request (a 429's Retry-After), if it said.
        self.retry_after = retry_after
        # Which of Jira Cloud's rate limits a 429 met (its RateLimit-Reason): PER_ISSUE_LIMIT, on
        # writes to one issue, holds back that issue's alone.
        self.limit = limit
        # Jira refused this one request (a 4xx about its content), not every request: the outbox
        # goes on with the next grievance instead of backing off.
        self.row_only = (
            row_only
            if row_only is not None
            else status is not None and 400 <= status < 500 and status not in (401, 403, 404, 429)
        )

    @property
    def level(self) -> int | None:
        """The level this failure's outage is said at, when not the log's usual WARNING: a refused
        token (401) at ERROR, as a refused OpenAI or Azure key is, since it lasts until someone
        sets a new one."""
        return logging.ERROR if self.status == 401 else None


class _FieldsByName(JIRA):
    """The client, asking a search for the fields named as they are named. The jira package maps
    them through every field's JQL clause names (GET /field), the last field of a name winning: a
    custom field an admin named "labels" or "updated" would be asked for in their place, its value
    read as the issue's labels (whose player it is) or its last change. Field ids do not avoid it:
    a system field's id is its clause name."""

    @property
    def _fields_cache(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class RemoteIssue:
    key: str
    summary: str
    description: str
    labels: tuple[str, ...]
    status: str  # plain words: "open", "in progress", "resolved" (or DONE_WORDS' others)
    created_at: str  # ISO 8601, UTC, like the local store's
    updated_at: str
    # `updated` as Jira wrote it, to the millisecond: which edit of the issue this is
    version: str = ""
    untouched: bool = False  # never changed since it was made: `updated` is `created`


def type_id_named(types: list[Any], issue_type: str) -> str | None:
    """The id of the issue type, of a project's `issueTypes`, that jira.issue_type names: by its
    id, by its name as Jira shows it to the account (its site's language, an admin's
    translation), or by the untranslated name Jira Cloud gives beside it (`untranslatedName`,
    "Task" where the account sees "Aufgabe"), the one a create by name takes."""
    for t in types:
        if not isinstance(t, dict) or t.get("id") is None:
            continue
        if issue_type in (str(t["id"]), t.get("name"), t.get("untranslatedName")):
            return str(t["id"])
    return None


def status_words(
    status: dict[str, Any] | None,
    resolution: dict[str, Any] | None = None,
    refusals: frozenset[str] = frozenset(),
    untranslated: dict[str, str] | None = None,
    duplicates: frozenset[str] = frozenset(),
) -> str:
    """Jira's status category (to-do / in-progress / done) as the words a player hears. A done
    issue whose status or resolution turns the grievance down (NOT_DONE_RESOLUTIONS, `refusals`:
    jira.refusals, folded; a status also by its untranslated name, `untranslated` by status id)
    reads DECLINED, or DUPLICATE for a duplicate (Duplicate, or one of `duplicates`: jira.duplicates,
    folded): staff closed it without a fix, and a player told "resolved" would wait for one."""
    status = status or {}
    category = (status.get("statusCategory") or {}).get("key", "")
    if category == "done":
        names = (
            status.get("name"),
            status.get("untranslatedName"),
            (untranslated or {}).get(str(status.get("id"))),
            resolution.get("name") if isinstance(resolution, dict) else None,
        )
        said = [str(name) for name in names if name]
        if any(folded(name) == "duplicate" or folded(name) in duplicates for name in said):
            return DUPLICATE
        if any(_not_done(name, refusals) for name in said):
            return DECLINED
    return STATUS_WORDS.get(category) or str(status.get("name") or "open").lower()


def iso_utc(jira_time: str | None) -> str:
    """Jira's 2025-01-31T10:00:00.000+0000 as 2025-01-31T10:00:00Z. A time written otherwise (no
    milliseconds, an offset with a colon) is read too: the store's times compare as text, and
    the desk shows them as UTC. One with no offset names no instant, and is kept as it is."""
    if not jira_time:
        return ""
    try:
        when = dt.datetime.fromisoformat(jira_time)
    except ValueError:
        return jira_time
    if when.tzinfo is None:
        return jira_time
    return iso_at(when.timestamp())


# A link as Jira Cloud writes one back in wiki markup: a bare address or e-mail the player wrote
# is kept as a link node and handed back as [words|address] or [words|address|smart-link].
_LINK = re.compile(r"\[([^\[\]|]*)(?:\|[^\[\]|]*){0,2}\]")


def _gist(text: str) -> str:
    # Jira may hand a description back otherwise than it was sent (line ends, blanks, its markup's
    # characters escaped, a bare address made a link, composed or decomposed accents): its letters
    # and digits, links read as the words they show, tell two complaints apart.
    shown = unicodedata.normalize("NFKC", _LINK.sub(r"\1", text)).casefold()
    return "".join(ch for ch in unicodedata.normalize("NFKC", shown) if ch.isalnum())


# Jira keeps text fields as XML 1.0, which has no C0 control character but tab, line feed and
# carriage return, nor U+FFFE/U+FFFF: an issue with one is refused (a 500 or a 400), so a player's
# stray NUL would hold their grievance back for ever. DEL is valid XML but nothing a reader sees.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
NOT_TEXT_MARK = "\ufffd"


def jira_text(text: str) -> str:
    """`text` with what Jira refuses in a text field replaced by U+FFFD, which shows staff that
    something stood there."""
    return _NOT_TEXT.sub(NOT_TEXT_MARK, text)


def summary_for(category: str, description: str) -> str:
    """ "Wallet: charged twice for the battle pass …", one line, at most SUMMARY_CHARS."""
    words = description.split()  # split() also drops newlines and tabs, which summaries may not hold
    text = " ".join(words[:SUMMARY_WORDS])
    if len(words) > SUMMARY_WORDS:
        text += " …"
    summary = f"{category.replace('_', ' ').capitalize()}: {text}" if text else category
    if len(summary) <= SUMMARY_CHARS:
        return summary
    return summary[: cluster_start(summary, SUMMARY_CHARS - 2)].rstrip() + " …"


# Jira (REST v2) reads a description as wiki markup: [~accountid:...] mentions a staff member and
# mails them, !https://...! shows whoever opens the issue an image from anywhere, [words|address]
# hides a link's address, {macro} runs a macro. A backslash makes each of those marks itself. A
# backslash cannot be written as itself (two are a line break): it goes as its full-width twin.
_WIKI_MARKS = re.compile(r"[\[\]{}!|]")
_WIKI_ESCAPED = re.compile(r"\\([\[\]{}!|])")
BACKSLASH_TWIN = "\uff3c"


def wiki_literal(text: str) -> str:
    """A player's words as Jira wiki markup that links, embeds, mentions and runs macros with
    nothing: `[ ] { } ! |` escaped. Text effects (`*bold*`, `-struck-`, `h1.`) still render; they
    do nothing but change how the words look."""
    return _WIKI_MARKS.sub(r"\\\g<0>", text.replace("\\", BACKSLASH_TWIN))


def from_wiki_literal(text: str) -> str:
    """A description as the words it shows: the inverse of `wiki_literal`."""
    return _WIKI_ESCAPED.sub(r"\1", text).replace(BACKSLASH_TWIN, "\\")


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """A response's Retry-After in seconds: whole seconds (what Jira Cloud sends) or an HTTP date.
    As Jira said it, however long: each caller bounds the wait it makes of it."""
    return seconds_named(response.headers.get("Retry-After") if response is not None else None)


def rate_limit_reset_seconds(response: requests.Response | None) -> float | None:
    """Seconds until a 429's X-RateLimit-Reset (yyyy-MM-ddTHH:mmZ, when Jira Cloud's limit
    resets): the wait it names when it sends no Retry-After. None when it names no time to come."""
    value = response.headers.get("X-RateLimit-Reset") if response is not None else None
    try:
        when = dt.datetime.fromisoformat((value or "").strip())
    except ValueError:
        return None
    if when.tzinfo is None:  # no instant
        return None
    seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    return seconds if seconds > 0 else None


def screen_values(
    transition: dict[str, Any], status: str, category: str, refusals: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], list[str]]:
    """What a transition's screen (from `expand=transitions.fields`) needs: the values the bot
    gives its required fields, and the ids of those it cannot fill. A resolution it fills only to
    reach done; a field with a default, with that default. `refusals`: jira.refusals, folded."""
    values: dict[str, Any] = {}
    missing: list[str] = []
    for field_id, meta in (transition.get("fields") or {}).items():
        if not isinstance(meta, dict) or not meta.get("required"):
            continue
        if field_id == "resolution" and category == "done":
            target = str(_target_name(transition) or "")
            resolution = done_resolution(meta.get("allowedValues") or [], status, target, refusals)
            if resolution is not None:
                values[field_id] = resolution
                continue
        elif meta.get("hasDefaultValue") and meta.get("defaultValue") is not None:
            values[field_id] = settable(meta["defaultValue"])
            continue
        missing.append(str(field_id))
    return values, missing


def done_resolution(
    allowed: list[Any], status: str, target: str = "", refusals: frozenset[str] = frozenset()
) -> dict[str, str] | None:
    """The resolution, of those a screen offers, that says the grievance was dealt with: the one
    named like the done status the transition leads to (`target`: Jira's own Done status and
    resolution share a name in every language, "Fertig" on a German site), or like the desk's
    status, or one of DONE_RESOLUTIONS; failing those, the first that reads as no refusal. None
    that is a refusal: NOT_DONE_RESOLUTIONS, or `refusals` (jira.refusals, folded)."""
    named = {
        folded(str(v.get("name", ""))): v for v in allowed if isinstance(v, dict) and v.get("id") is not None
    }
    fine = {name: v for name, v in named.items() if not _not_done(name, refusals)}
    for name in (target, status, *DONE_RESOLUTIONS):
        if folded(name) in fine:
            return {"id": str(fine[folded(name)]["id"])}
    return {"id": str(next(iter(fine.values()))["id"])} if fine else None


def _reads_as_not_done(
    transition: dict[str, Any],
    refusals: frozenset[str] = frozenset(),
    untranslated: dict[str, str] | None = None,
) -> bool:
    """Whether a transition, by its name or its status's (as shown, or untranslated: `untranslated`
    by status id), leads to a "done" that is a refusal."""
    to = transition.get("to") or {}
    names = (transition.get("name"), to.get("name"), (untranslated or {}).get(str(to.get("id"))))
    return any(_not_done(str(name), refusals) for name in names if name)


def folded(name: str) -> str:
    """A status's or resolution's name as names are compared: case and a typographic apostrophe
    ("Won’t Do") aside."""
    return " ".join(name.split()).casefold().replace("\u2019", "'")


def _not_done(name: str, refusals: frozenset[str] = frozenset()) -> bool:
    return folded(name) in NOT_DONE_RESOLUTIONS or folded(name) in refusals


def settable(value: Any) -> Any:
    """A field's default as a transition sets it: an option or other object by its id."""
    if isinstance(value, list):
        return [settable(v) for v in value]
    if isinstance(value, dict) and value.get("id") is not None:
        return {"id": str(value["id"])}
    return value


def required_reason(transition: dict[str, Any], missing: list[str]) -> str:
    """Why a transition was not tried, for the desk and the log: the fields it lacks by name and id."""
    meta = transition.get("fields") or {}
    named = ", ".join(f"{(meta.get(f) or {}).get('name') or f} ({f})" for f in missing)
    to = _target_name(transition)
    word = "field" if len(missing) == 1 else "fields"
    return (
        f"Jira's transition to {to} requires {word} {named}, which voxdesk cannot fill: give it a default "
        "or make it optional on that transition's screen, or move the issue in Jira"
    )


def _target_name(transition: dict[str, Any]) -> Any:
    """The status a transition leads to, by name (the transition's own name when Jira gives none)."""
    return (transition.get("to") or {}).get("name") or transition.get("name")


def permission_reason(project: str, lacking: list[str], why: str = "") -> str:
    """Why Jira refuses what voxdesk asks (`why`, said after the project): the project
    permissions the account lacks, by Jira's names ("Create Issues")."""
    many = len(lacking) > 1
    return (
        f"the Jira account of JIRA_EMAIL lacks the {' and '.join(lacking)} permission{'s' if many else ''}"
        f" in project {project}{why}: grant {'them' if many else 'it'} in the project's permissions"
        " (Project settings > Access, or its permission scheme)"
    )


def hidden_reason(project: str, key: str) -> str:
    """Why Jira shows the account none of the issues it files: `key`, one it made, was a 404."""
    return (
        f"Jira hides from this account the issues it files in project {project} ({key} answers 404"
        " right after its create): an issue security level the account is not in, so their statuses"
        " and ticket news go unread; add the account (or Reporter) to the level issues get there by"
        " default"
    )


def unavailable_reason(transition: dict[str, Any]) -> str:
    """Why a transition that fails its workflow condition was not tried, for the desk and the log."""
    to = _target_name(transition)
    return (
        f"Jira's transition to {to} is not available for this issue (a condition of its workflow is "
        "not met, such as an approval or open subtasks): meet it or move the issue in Jira"
    )


# X-Seraph-LoginReason when Jira did not take the credentials sent and answered as to nobody
# (AUTHENTICATION_DENIED: it asks for a CAPTCHA first).
LOGIN_REFUSED = ("AUTHENTICATED_FAILED", "AUTHENTICATION_DENIED")

# Jira Cloud's RateLimit-Reason on a 429 that limits writes to one issue alone
# (https://developer.atlassian.com/cloud/jira/platform/rate-limiting).
PER_ISSUE_LIMIT = "jira-per-issue-on-write"


def error_text(exc: JIRAError) -> str:
    """Jira's error body in one line. Its `errors` name each field by id ({"customfield_10010":
    "Severity is required."}), which the client's message drops: two fields may share a name (a
    team-managed project's own beside a company-wide one), and the id says which one to fix."""
    try:
        body = exc.response.json() if exc.response is not None else None
    except ValueError:  # not JSON: a page for people, Atlassian's edge's while the site is down
        return _page_title(exc.response) or str(exc.text or "")
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, dict) or not errors:
        return str(exc.text or "")
    messages = body.get("errorMessages") if isinstance(body, dict) else None
    said = [str(m) for m in messages if m] if isinstance(messages, list) else []
    return ", ".join([*said, *(f"{message} ({field})" for field, message in errors.items())])


def field_error(exc: JIRAError, field_id: str) -> str | None:
    """What Jira's 4xx says of one field (its `errors` by field id), in one line; None if nothing."""
    try:
        body = exc.response.json() if exc.response is not None else None
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    said = errors.get(field_id) if isinstance(errors, dict) else None
    return " ".join(logs.masked(str(said)).split())[:REASON_CHARS] if said else None


# Jira's answer to JQL or a create naming a project the account cannot browse (without Browse
# projects a project is as if it did not exist: its issues are 404s, not 403s).
_NO_PROJECT = re.compile(r"The value '([A-Z][A-Z0-9_]{1,9})' does not exist for the field 'project'")
_TITLE = re.compile(r"<title[^>]*>([^<]*)</title>", re.IGNORECASE)


def _page_title(response: requests.Response | None) -> str:
    """An HTML page's title ("Atlassian Cloud Notifications - Page Unavailable"), or, failing one,
    what it is: its markup would fill the reason and leave no room for what it says."""
    if response is None or "html" not in response.headers.get("Content-Type", "").lower():
        return ""
    found = _TITLE.search(response.text[:100_000])
    title = " ".join(html.unescape(found[1]).split()) if found else ""
    return title or "an HTML page"


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl module's own error under requests' SSLError (through urllib3's MaxRetryError and
    SSLError), which names what TLS refused."""
    seen: BaseException | None = exc
    for _ in range(5):
        if isinstance(seen, ssl.SSLError):
            return seen
        inner = getattr(seen, "reason", None) or (seen.args[0] if seen is not None and seen.args else None)
        seen = inner if isinstance(inner, BaseException) else None
    return None


def explain(exc: BaseException, url: str, timeout: float) -> TrackerError:
    """Any failure of the client as a TrackerError with a short reason. `str(JIRAError)` is not
    used: it carries whole response headers and bodies."""
    if isinstance(exc, TrackerError):
        return exc
    if isinstance(exc, JIRAError):
        status = exc.status_code
        text = " ".join(logs.masked(error_text(exc)).split())[:REASON_CHARS]
        # Jira Cloud sends a Retry-After with a 429, and with a 503 at a resource limit.
        retry_after = retry_after_seconds(exc.response) if status in (429, 503) else None
        if status == 429 and retry_after is None:
            # Jira Cloud's 429 may come without a Retry-After: asked again before this reset, it
            # answers with another 429.
            retry_after = rate_limit_reset_seconds(exc.response)
        headers = exc.response.headers if exc.response is not None and status == 429 else {}
        limit = str(headers.get("RateLimit-Reason") or headers.get("X-RateLimit-Reason") or "")
        hidden = _NO_PROJECT.search(text) if status == 400 else None
        gist = None
        if status == 401:
            reason = "Jira refused the credentials (401): check JIRA_EMAIL and JIRA_API_TOKEN"
        elif hidden is not None:
            reason = (
                f"Jira shows this account no project {hidden[1]} (400): check jira.project, and that"
                " the account has the Browse projects permission there"
            )
        elif status == 403:
            reason = f"Jira refused access (403): the account lacks a permission ({text or 'no detail'})"
        elif status == 429 and limit == PER_ISSUE_LIMIT:
            reason = "Jira is limiting writes to this issue (429)"
            if retry_after is not None:
                reason += f": it asks for none within {retry_after:g} s"
        elif status == 429 and retry_after is not None:
            reason = "Jira is rate limiting this account (429)"
            gist = reason
            reason += f": it asks for no request within {retry_after:g} s"
        else:
            reason = f"Jira answered HTTP {status}: {text or 'no detail'}"
            if retry_after is not None:
                gist = reason
                reason += f" (it asks for no request within {retry_after:g} s)"
        return TrackerError(
            reason,
            status,
            maybe_done=not (status is not None and 400 <= status < 500),
            # One issue's writes limited: the grievance waits, the others go on. A project the
            # account cannot see refuses every request alike.
            row_only=True if limit == PER_ISSUE_LIMIT else False if hidden is not None else None,
            retry_after=retry_after,
            limit=limit,
            gist=gist,
            # The client's own "Empty Response!": no HTTP answer came at all.
            unreached=status is None,
        )
    if isinstance(exc, requests.ConnectTimeout):
        return TrackerError(
            f"cannot connect to Jira at {url}: no answer within {timeout:g} s",
            maybe_done=False,
            unreached=True,
        )
    if isinstance(exc, requests.Timeout):
        return TrackerError(f"Jira at {url} did not answer within {timeout:g} s", dropped=True)
    if isinstance(exc, requests.exceptions.SSLError) and not isinstance(
        cause := _ssl_cause(exc), ssl.SSLEOFError
    ):
        # TLS refused before any request went (https:// to a port that speaks plain HTTP, a
        # certificate this host does not trust): the address or the trust store to mend, not a
        # Jira down a while. An EOF mid-TLS is a connection dropped, as a reset is.
        detail = (
            getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or "handshake failed"
        )
        return TrackerError(f"cannot connect to Jira at {url}: TLS failed ({detail})", unreached=True)
    if isinstance(exc, requests.ConnectionError):
        refused = isinstance(getattr(exc.args[0] if exc.args else None, "reason", None), NewConnectionError)
        detail = "connection refused or host unknown" if refused else "connection lost"
        return TrackerError(
            f"cannot connect to Jira at {url}: {detail}",
            maybe_done=not refused,
            unreached=refused,
            dropped=not refused,
        )
    # Kept with the grievance for the desk and the player's export, past every log handler's mask:
    # requests quotes a URL it cannot parse (a typo'd port) with jira.url's user:password@.
    return TrackerError(f"Jira call failed: {type(exc).__name__}: {logs.masked(str(exc))[:REASON_CHARS]}")


class JiraTracker:
    """Grievance operations on one Jira project. Blocking: call from a worker thread."""

    def __init__(
        self,
        url: str,
        email: str,
        api_token: str,
        project: str,
        issue_type: str,
        timeout: float,
        user_label_prefix: str = "discord-",
        key_label_prefix: str = "voxdesk-",
        refusals: tuple[str, ...] = (),
        duplicates: tuple[str, ...] = (),
    ) -> None:
        if not PROJECT_KEY.match(project):
            raise ValueError(f"jira.project = {project!r} is not a Jira project key like GRV: fix it")
        for name, prefix in (
            ("user_label_prefix", user_label_prefix),
            ("key_label_prefix", key_label_prefix),
        ):
            if not LABEL_PREFIX.match(prefix):
                raise ValueError(f"jira.{name} = {prefix!r}: use lower-case letters, digits, - or _")
        self.url = url.rstrip("/")
        self.shown_url = shown_url(self.url)  # for messages and logs
        self.project = project
        self.issue_type = issue_type
        # The configured type's id in the project, once a create has looked it up (or as
        # configured: an id names one type on any site, in any language).
        self._type_id: str | None = issue_type if ISSUE_TYPE_ID.match(issue_type) else None
        self.timeout = timeout
        self.user_label_prefix = user_label_prefix
        self.key_label_prefix = key_label_prefix
        # jira.refusals: the names of a site's done statuses and resolutions that say a grievance
        # was turned down, in its language (no field of Jira's tells one from a fix: both are in
        # the done category, and their ids differ from site to site).
        # jira.duplicates: those of a site's refusals that say another issue covers the same
        # problem (a player told just "closed without a fix" would not know to follow that one).
        self.duplicates = frozenset(folded(name) for name in duplicates)
        self.refusals = frozenset(folded(name) for name in refusals) | self.duplicates
        # The project's statuses' untranslated names by id (_untranslated_statuses), and when
        # they were last listed: a done status on a site in another language is a refusal or
        # not by them.
        self._untranslated: dict[str, str] = {}
        self._untranslated_at: float | None = None
        self._auth = (email, api_token)
        # requests sessions are not documented as thread-safe: each thread borrows a client of its own
        self._idle: list[JIRA] = []
        self._lock = threading.Lock()
        self._closed = False
        # How many of Jira's answers said X-RateLimit-NearLimit: true.
        self.near_limit_answers = 0
        # Jira's clock as its latest answer's Date header read it: (unix seconds, the
        # time.monotonic() the answer came at). See jira_now.
        self._jira_date: tuple[float, float] | None = None

    # ---- labels and JQL, from validated values only -------------------------------------------

    def user_label(self, user_id: str) -> str:
        if not USER_ID.match(user_id):
            raise ValueError("a user id must be digits only")
        return f"{self.user_label_prefix}{user_id}"

    def key_label(self, local_key: str) -> str:
        if not LOCAL_KEY.match(local_key):
            raise ValueError(f"a local key must look like {KEY_PREFIX}-12")
        return f"{self.key_label_prefix}{local_key}"

    def _jql(self, label: str, newest_first: bool = False) -> str:
        # `label` comes from user_label/key_label, so it holds no quote, space or operator
        jql = f'project = "{self.project}" AND labels = "{label}"'
        return jql + " ORDER BY created DESC" if newest_first else jql

    def _updated_jql(self, labels: list[str] | None, minutes: int) -> str:
        # labels from user_label (None: every issue of the project); `minutes` a bounded int. A
        # relative date ("-5m") is measured from Jira's own clock: an absolute one would be read in
        # the account's time zone.
        if not 1 <= minutes <= MAX_WINDOW_MINUTES:
            raise ValueError(f"a window of 1 to {MAX_WINDOW_MINUTES} minutes")
        quoted = ", ".join(f'"{label}"' for label in labels or [])
        of = f" AND labels in ({quoted})" if labels is not None else ""
        return f'project = "{self.project}"{of} AND updated >= "-{minutes}m" ORDER BY updated ASC'

    # ---- operations ----------------------------------------------------------------------------

    def create(self, local_key: str, user_id: str, category: str, description: str) -> str:
        """Create the issue for local grievance `local_key`; returns its key (GRV-101), not its id."""
        description = jira_text(description)  # the local record keeps the player's words as given
        fields = {
            # dicts, not names: the client would otherwise look the project and type up first
            "project": {"key": self.project},
            "summary": summary_for(category, description),
            "description": wiki_literal(description),  # never interpreted as a query either
            "labels": [category, self.user_label(user_id), self.key_label(local_key)],
        }
        with self._client() as client:
            fields["issuetype"] = self._issue_type_field(client)
            try:
                issue = client.create_issue(fields=fields, prefetch=False)
            except JIRAError as exc:
                # jira.issue_type names a type the project no longer has (renamed or removed by
                # an admin): Jira's words alone name neither the type nor the setting.
                said = field_error(exc, "issuetype") if exc.status_code == 400 else None
                if said is None:
                    raise
                if not ISSUE_TYPE_ID.match(self.issue_type):
                    self._type_id = None  # looked up again: an admin may give the project the type back
                raise TrackerError(
                    f"Jira project {self.project} takes no issue type {self.issue_type!r} (400: {said}):"
                    " set jira.issue_type to one it has (voxdesk check lists them)",
                    400,
                    maybe_done=False,
                ) from None
        return str(issue.key)

    def move_to(self, key: str, status: str) -> RemoteIssue | None:
        """Give issue `key` the local `status` (one set on the desk while the grievance waited to
        reach Jira) as staff would in Jira: by a transition into a status of its category, the
        one named like it if the workflow has one, filling what its screen requires that the bot
        can (a resolution, a field's default). The issue as it is then (as it was, when it is in
        that category already); None when its workflow offers no such transition. Raises a
        TrackerError naming the field when every such transition requires one the bot cannot
        fill and the issue does not hold, or naming the condition when every one fails its
        workflow's condition."""
        category = STATUS_CATEGORIES.get(status)
        if category is None:
            raise ValueError(f"no Jira status category for {status!r}")
        fields = ",".join(SEARCH_FIELDS)
        with self._client() as client:
            issue = self._to_issue(client.issue(key, fields=fields).raw, client)
            # One staff closed without a fix in Jira is done too: their word, not the desk's.
            if issue.status == STATUS_WORDS[category] or (category == "done" and issue.status in DONE_WORDS):
                return issue
            # Those failing a workflow condition too (Jira leaves them out unless asked), so a
            # grievance held back by one waits naming it rather than as if Jira had no way there.
            # The client's transitions() passes no such parameter.
            listed = client._get_json(
                f"issue/{key}/transitions",
                params={"expand": "transitions.fields", "includeUnavailableTransitions": "true"},
            )["transitions"]
            # Jira lists none at all to an account without Transition Issues: told as a workflow
            # with no way there, staff would look for a fault in a workflow that has none.
            if not listed and (lacking := self._lacking(client, (TRANSITION_ISSUES,), issueKey=key)):
                reason = permission_reason(self.project, lacking, ", so Jira offers it no transition")
                raise TrackerError(reason, 403, maybe_done=False, row_only=True)
            # Won't Do, Canceled, Declined are done statuses too: one would tell staff the
            # grievance the desk resolved was turned down. Jira's own are known in any language
            # by their untranslated names.
            untranslated = self._untranslated_statuses(client) if category == "done" else {}
            into = [
                t
                for t in listed
                if ((t.get("to") or {}).get("statusCategory") or {}).get("key") == category
                and not (category == "done" and _reads_as_not_done(t, self.refusals, untranslated))
            ]
            # Jira refuses a transition whose condition is not met with a 400 that names nothing.
            offered = [t for t in into if t.get("isAvailable", True) is not False]
            if not offered:
                if into:
                    raise TrackerError(unavailable_reason(into[0]), 400, maybe_done=False, row_only=True)
                return None
            named = [
                t for t in offered if status in (str(t.get("name")).lower(), str(t["to"].get("name")).lower())
            ]
            ranked = named + [t for t in offered if t not in named]
            plans = [(t, *screen_values(t, status, category, self.refusals)) for t in ranked]
            unfilled = sorted({f for _, _, missing in plans for f in missing})
            if unfilled and all(missing for _, _, missing in plans):
                # A required field the issue holds already (set when it was made, or by staff)
                # needs nothing from us.
                held = client.issue(key, fields=",".join(unfilled)).raw.get("fields") or {}
                plans = [
                    (t, values, [f for f in missing if held.get(f) in (None, "", [], {})])
                    for t, values, missing in plans
                ]
            chosen = next(((t, values) for t, values, missing in plans if not missing), None)
            if chosen is None:
                transition, _, missing = plans[0]
                raise TrackerError(required_reason(transition, missing), 400, maybe_done=False, row_only=True)
            transition, values = chosen
            client.transition_issue(key, str(transition["id"]), fields=values or None)
            return self._to_issue(client.issue(key, fields=fields).raw, client)

    def _untranslated_statuses(self, client: JIRA) -> dict[str, str]:
        """The untranslated name of each of the project's statuses, by id: Jira Cloud lists them
        (GET project/{key}/statuses) with an `untranslatedName`, Jira's own statuses' English
        one on a site in any language ("Won't Do" for "Wird nicht erledigt")."""
        found: dict[str, str] = {}
        try:
            listed = client._get_json(f"project/{self.project}/statuses")
        except JIRAError as exc:
            if exc.status_code not in (400, 403, 404):
                raise
            # The names alone (English ones, jira.refusals) then tell a refusal: a listing refused
            # must not hold the desk's status change back for good.
            log.info(
                "Jira lists no statuses of %s (%s): refusals known by name only",
                self.project,
                exc.status_code,
            )
            with self._lock:
                self._untranslated_at = time.monotonic()
            return found
        for issue_type in listed if isinstance(listed, list) else []:
            for status in (issue_type.get("statuses") or []) if isinstance(issue_type, dict) else []:
                if (
                    isinstance(status, dict)
                    and status.get("id") is not None
                    and status.get("untranslatedName")
                ):
                    found[str(status["id"])] = str(status["untranslatedName"])
        with self._lock:
            self._untranslated, self._untranslated_at = found, time.monotonic()
        return found

    def _untranslated_names(self, status: dict[str, Any], client: JIRA | None) -> dict[str, str]:
        """The untranslated names to read a done `status` by: those listed last, listed again
        when this status is not among them and they are UNTRANSLATED_SECONDS old (with `client`,
        or a client of its own). A listing that fails leaves the names alone to tell a refusal."""
        with self._lock:
            known, at = self._untranslated, self._untranslated_at
        fresh = at is not None and time.monotonic() - at < UNTRANSLATED_SECONDS
        name = folded(str(status.get("name") or ""))
        # A status whose own name reads as a fix or a refusal needs no other.
        plain = name in DONE_RESOLUTIONS or _not_done(name, self.refusals)
        if plain or fresh or str(status.get("id")) in known:
            return known
        try:
            if client is not None:
                return self._untranslated_statuses(client)
            with self._client() as own:
                return self._untranslated_statuses(own)
        except (JIRAError, TrackerError) as exc:
            log.info("Jira lists no statuses of %s (%s): refusals known by name only", self.project, exc)
            with self._lock:
                self._untranslated_at = time.monotonic()
            return known

    def _key_labelled(self, local_key: str, limit: int = MAX_SAME_KEY) -> list[RemoteIssue]:
        """The project's issues carrying `local_key`'s key label, whoever's they are."""
        return self._search(self._jql(self.key_label(local_key)), limit=limit)

    def pushes_of_local_key(
        self, local_key: str, user_id: str, description: str, created_at: str = ""
    ) -> list[RemoteIssue]:
        """The issues pushed for `local_key` that are this grievance's: of this player, and in
        these words or made since the grievance was (`created_at`, as the store writes times). A
        key label can name another grievance's issue too: one filed under the same key before the
        database was restored from a backup, or lost to a power cut, and so made before this
        grievance was; Jira may hand the words back otherwise than any rule here reads them."""
        issues = self._key_labelled(local_key)
        ours = [i for i in issues if self.may_be_push_of(i, user_id, description, created_at)]
        if len(ours) < len(issues):
            others = ", ".join(i.key for i in issues if i not in ours)
            log.warning(
                "%s's key label is also on %s, another grievance's (a database restored from a backup?)",
                local_key,
                others,
            )
        return ours

    def may_be_push_of(
        self, issue: RemoteIssue, user_id: str, description: str, created_at: str = ""
    ) -> bool:
        """Whether `issue`, found by a grievance's key label, may be that grievance's push: of its
        player, and in its words or made since it was filed (`created_at`, as the store writes
        times), not a grievance's filed under the same key before a restore from a backup."""
        return self.user_of(issue) == user_id and (
            _gist(issue.description) == _gist(description)
            or (bool(created_at) and bool(issue.created_at) and issue.created_at >= created_at)
        )

    def pushes_for_player(self, local_key: str, user_id: str) -> list[RemoteIssue]:
        """Every issue of the project pushed for `local_key` that is `user_id`'s alone: after a
        restore from a backup, a key can label issues of several grievances."""
        issues = self._key_labelled(local_key)
        return [i for i in issues if self.user_of(i) == user_id]

    def issue_of_local_key(self, local_key: str) -> RemoteIssue | None:
        """The issue of our project pushed for `local_key` (by its key label), whatever its key
        is now: an issue moved or renumbered keeps its labels."""
        issues = self._key_labelled(local_key, limit=2)
        return issues[0] if issues else None

    def in_project(self, issue: RemoteIssue) -> bool:
        return issue.key.rsplit("-", 1)[0] == self.project

    def list_for_user(self, user_id: str, limit: int) -> list[RemoteIssue]:
        found = self._search(self._jql(self.user_label(user_id), newest_first=True), limit)
        return [issue for issue in found if self.user_of(issue) == user_id]

    def updated_for_users(self, user_ids: list[str], minutes: int) -> list[RemoteIssue]:
        """Every issue of these players (by their labels) updated in the last `minutes`, least
        recently updated first; all pages (ticket news needs each one, not the newest few)."""
        if not user_ids:
            return []
        jql = self._updated_jql([self.user_label(u) for u in user_ids], minutes)
        with self._client() as client:
            found = client.enhanced_search_issues(jql, maxResults=0, fields=list(SEARCH_FIELDS))
        return [self._to_issue(issue.raw) for issue in found or []]  # type: ignore[union-attr]

    def updated_in_project(self, minutes: int) -> list[RemoteIssue] | None:
        """Every issue of the project updated in the last `minutes`, least recently updated
        first, if one page of PROJECT_NEWS_PAGE holds them; None if not. A busy project (shared
        with other work, or a week of it after an outage) would take more pages than its players'
        labels take queries, each moving under issues updated while it is read."""
        jql = self._updated_jql(None, minutes)
        with self._client() as client:
            found = client.enhanced_search_issues(
                jql, maxResults=PROJECT_NEWS_PAGE, fields=list(SEARCH_FIELDS)
            )
        if getattr(found, "nextPageToken", None):
            return None
        return [self._to_issue(issue.raw) for issue in found or []]  # type: ignore[union-attr]

    def local_key_of(self, issue: RemoteIssue) -> str:
        """The local key an issue was pushed for, from its key label; "" without one."""
        prefix = self.key_label_prefix
        return next((x[len(prefix) :] for x in issue.labels if x.startswith(prefix)), "")

    def user_of(self, issue: RemoteIssue) -> str | None:
        """The player an issue is for, from its discord-<id> label. An issue staff labelled for
        two players (merged or cloned complaints) is neither's: each would read the other's words."""
        prefix = self.user_label_prefix
        ids = [
            x[len(prefix) :] for x in issue.labels if x.startswith(prefix) and USER_ID.match(x[len(prefix) :])
        ]
        return ids[0] if len(ids) == 1 else None  # two players' labels: tell neither

    def get_for_user(self, key: str, user_id: str) -> RemoteIssue | None:
        """One issue of our project, only if it is the speaker's alone (`user_of`): someone
        else's key finds nothing. Jira answers a moved issue's old key with the issue under its
        new one: an old key of ours finds it in our project, and one moved out of it finds
        nothing, as a deleted one does."""
        if not TICKET_KEY.match(key):
            return None
        try:
            with self._client(not_found=True) as client:
                raw = client.issue(key, fields=",".join(SEARCH_FIELDS)).raw
        except JIRAError as exc:
            if exc.status_code == 404:
                return None
            raise
        issue = self._to_issue(raw)
        return issue if self.in_project(issue) and self.user_of(issue) == user_id else None

    def shows(self, key: str) -> bool:
        """Whether Jira shows the account issue `key`, one it has just made. Jira Cloud makes an
        issue an account may create and then hides it from that account when an issue security
        level it is not in falls on it: a search leaves it out (with a 200), and its key, as a
        deleted one's, answers 404."""
        try:
            with self._client(not_found=True) as client:
                client.issue(key, fields="labels")
        except JIRAError:  # only a 404 gets here
            return False
        return True

    def server_info(self) -> dict[str, Any]:
        with self._client() as client:
            return client.server_info()

    def myself(self) -> dict[str, Any]:
        with self._client() as client:
            return client.myself()

    def create_screen_gaps(self) -> tuple[list[str], list[str]]:
        """What makes every create() a 400 for the configured issue type: (the fields it sets that
        the create screen lacks, the required fields there with no default that it does not set,
        each as "Name (id)"). Nothing when the project has no such issue type."""
        with self._client() as client:
            types = client.project(self.project).raw.get("issueTypes", [])
            type_id = type_id_named(types, self.issue_type)
            if type_id is None:
                return [], []
            found: list[dict[str, Any]] = []
            while True:
                page = client._get_json(
                    f"issue/createmeta/{self.project}/issuetypes/{type_id}",
                    params={"startAt": len(found), "maxResults": CREATE_META_PAGE},
                )
                # Cloud names the page's items "fields"; Data Center, "values".
                items = page.get("fields", page.get("values")) or []
                found += items
                total = page.get("total")
                if not items or page.get("isLast") or (total is not None and len(found) >= total):
                    break
        ids = [f.get("fieldId") or f.get("key") for f in found]
        lacking = [f for f in CREATE_FIELDS if f not in ids]
        sent = {"project", "issuetype", *CREATE_FIELDS, *FILLED_BY_JIRA}
        unfillable = [
            f"{f.get('name')} ({field_id})"
            for f, field_id in zip(found, ids, strict=True)
            if f.get("required") and not f.get("hasDefaultValue") and field_id not in sent
        ]
        return lacking, unfillable

    def lacking_permissions(self) -> list[str]:
        """The names of NEEDED_PERMISSIONS the account does not hold in the project, as Jira
        names them ("Create Issues"). One Jira does not say it lacks is taken as held."""
        with self._client() as client:
            return self._lacking(client, NEEDED_PERMISSIONS, projectKey=self.project)

    @staticmethod
    def _lacking(client: JIRA, keys: tuple[str, ...], **where: str) -> list[str]:
        answer = client.my_permissions(permissions=",".join(keys), **where)
        held = answer.get("permissions") or {}
        lacking = []
        for key in keys:
            permission = held.get(key) or {}
            if permission.get("havePermission") is False:
                lacking.append(str(permission.get("name") or key))
        return lacking

    def issue_types(self) -> list[dict[str, Any]]:
        """The issue types of the configured project, as Jira lists them (`id`, `name` as Jira
        shows it to the account, `untranslatedName`); raises with 404 when the project is not
        visible."""
        try:
            with self._client(not_found=True) as client:
                raw = client.project(self.project).raw
        except JIRAError as exc:  # only a 404 gets here
            raise TrackerError(
                f"Jira has no project {self.project} this account can see (404): check jira.project,"
                " and that the account has the Browse projects permission there",
                exc.status_code,
                maybe_done=False,
            ) from None
        return [t for t in raw.get("issueTypes", []) if isinstance(t, dict)]

    def _issue_type_field(self, client: JIRA) -> dict[str, str]:
        """The issue type a create names: by its id in the project. Jira reads a type's name
        against every type of the site and in its untranslated form alone: on a site in another
        language the project lists "Aufgabe", a create naming "Aufgabe" is refused, and in a
        site of team-managed projects, each with a "Task" of its own, a name may mean several.
        A configured name the project does not list goes as the name, for Jira to read."""
        if self._type_id is None:
            types = client.project(self.project).raw.get("issueTypes", [])
            self._type_id = type_id_named(types, self.issue_type)
        return {"id": self._type_id} if self._type_id is not None else {"name": self.issue_type}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()

    # ---- internals -----------------------------------------------------------------------------

    def _search(self, jql: str, limit: int) -> list[RemoteIssue]:
        # The enhanced search (/search/jql): the old /search is gone on Cloud. One page of `limit`.
        with self._client() as client:
            page = client.enhanced_search_issues(jql, maxResults=limit, fields=list(SEARCH_FIELDS))
        return [self._to_issue(issue.raw) for issue in page or []][:limit]  # type: ignore[union-attr]

    def _to_issue(self, raw: dict[str, Any], client: JIRA | None = None) -> RemoteIssue:
        """An issue from Jira's answer. An answer of another shape (a changed API, an odd field)
        is a TrackerError like any other failure of Jira's, so status lookups fall back to the
        local record instead of failing. Its text is made valid Unicode: Jira's strings are
        Java's, which may hold half an emoji (a summary cut by an automation, say), sent as a
        lone "\\ud83d" that SQLite cannot store, nor a DM carry. A done one's status is read by
        its resolution and its status's untranslated name too (`client`, one in hand, lists them)."""
        try:
            fields = well_formed(raw.get("fields") or {})
            status = fields.get("status") or {}
            done = (status.get("statusCategory") or {}).get("key") == "done"
            untranslated = self._untranslated_names(status, client) if done else {}
            description = fields.get("description")
            labels = fields.get("labels") or []
            # user_of reads labels as strings: anything else would decide whose issue this is wrongly
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise TypeError(f"labels are not a list of strings: {str(labels)[:80]}")
            return RemoteIssue(
                key=str(raw["key"]),
                summary=str(fields.get("summary") or ""),
                description=from_wiki_literal(description) if isinstance(description, str) else "",
                labels=tuple(labels),
                status=status_words(
                    status, fields.get("resolution"), self.refusals, untranslated, self.duplicates
                ),
                created_at=iso_utc(fields.get("created")),
                updated_at=iso_utc(fields.get("updated")),
                version=str(fields.get("updated") or ""),
                untouched=bool(fields.get("updated")) and fields.get("updated") == fields.get("created"),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:REASON_CHARS]
            raise TrackerError(f"Jira call failed: an answer of an unexpected shape ({detail})") from None

    @contextlib.contextmanager
    def _client(self, not_found: bool = False) -> Iterator[JIRA]:
        """A connected client for one operation; every failure becomes a TrackerError, except
        that with `not_found` a 404 from the operation itself is re-raised as a JIRAError so
        the caller can tell "no such issue" from "Jira unreachable"."""
        with self._lock:
            if self._closed:
                raise TrackerError("the Jira client is closed", maybe_done=False)
            client = self._idle.pop() if self._idle else None
        if client is None:
            try:
                client = self._connect()
            except Exception as exc:  # a 404 here means a wrong jira.url, never "not found"
                raise explain(exc, self.shown_url, self.timeout) from None
        try:
            yield client
        except Exception as exc:
            if not_found and isinstance(exc, JIRAError) and exc.status_code == 404:
                raise
            raise explain(exc, self.shown_url, self.timeout) from None
        finally:
            with self._lock:
                keep = not self._closed
                if keep:
                    self._idle.append(client)
            if not keep:
                client.close()

    def jira_now(self) -> float | None:
        """Jira's own clock now, in unix seconds, as its answers tell it (None before an answer with
        a Date header): the latest one's Date, and the time since by this host's monotonic clock,
        which no step of the host's wall clock moves. Never ahead of Jira's: a Date is whole
        seconds, stamped before its answer travelled."""
        with self._lock:
            said = self._jira_date
        if said is None:
            return None
        date, at = said
        return date + (time.monotonic() - at)

    def _note_date(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # Any answer, an error's too: each reads the same clock.
        date = http_date(response.headers.get("Date"))
        if date is None:
            return  # none (a proxy dropping it), or one unreadable: the last one read stands
        with self._lock:
            self._jira_date = (date, time.monotonic())

    def _note_near_limit(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # Jira Cloud marks an answer given with less than a fifth of a rate limit's budget left;
        # whoever can wait (the ticket news poll) reads the count and asks less.
        if response.headers.get("X-RateLimit-NearLimit", "").strip().lower() == "true":
            with self._lock:
                self.near_limit_answers += 1

    @staticmethod
    def _refuse_failed_login(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # Jira Cloud answers a request whose API token expired or was revoked as one made by
        # nobody: a search finds nothing, an issue "does not exist", and only this header says
        # why. Taken at its word, every pushed issue would seem deleted, and no ticket changed.
        said = response.headers.get("X-Seraph-LoginReason", "")
        if any(reason in said for reason in LOGIN_REFUSED):
            raise JIRAError(
                "the credentials were not accepted",
                status_code=401,
                url=response.url,
                response=response,
            )

    def _connect(self) -> JIRA:
        # get_server_info: the client asks serverInfo whether this is Cloud, and only then runs
        # the enhanced search. max_retries=0: the library's retries on a dropped connection or a
        # 429 sleep 20 s and more inside the thread; the outbox does its own retrying with backoff,
        # waiting at least as long as a 429's Retry-After asks (TrackerError.retry_after).
        client = _FieldsByName(
            server=self.url,
            basic_auth=self._auth,
            timeout=self.timeout,
            max_retries=0,
            get_server_info=True,
            logging=False,
        )
        client._session.hooks["response"].append(self._refuse_failed_login)
        client._session.hooks["response"].append(self._note_near_limit)
        client._session.hooks["response"].append(self._note_date)
        if client.deploymentType != "Cloud":
            client.close()
            raise TrackerError(
                f"{self.shown_url} is Jira {client.deploymentType or 'Server'}, not Jira Cloud: "
                "set jira.url to your https://<site>.atlassian.net",
                maybe_done=False,
            )
        return client
