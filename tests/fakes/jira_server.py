"""A fake Jira Cloud on 127.0.0.1 for the real `jira` package.

It serves what the client calls for our operations (server info, myself, the field list, a
project, its statuses (each with its `untranslatedName`: UNTRANSLATED), create issue, get issue,
an issue's transitions and performing one (a team-managed project's workflow: To Do, In Progress,
Done, each reached from the others; `workflow` leaves some out; `screens` puts fields on a
transition, required or not, listed by `expand=transitions.fields` and checked when the transition
is made; `unavailable` makes a transition fail its workflow
condition: listed, with `isAvailable` false, only for `includeUnavailableTransitions=true`, and
refused when made), the enhanced JQL search with `nextPageToken` paging, its pages no longer
than Cloud's and its issues the id alone unless `fields` names more; a junk or negative
`startAt` or `maxResults` is a 400)
under /rest/api/2 and /rest/api/3, checks HTTP basic auth, answers the removed
`/rest/api/*/search` with 410, and accepts only the JQL forms voxdesk sends (one label, or for
ticket news a list of players' labels and a relative `updated` window, which it applies): anything
else is a 400 and is recorded in `bad_jql`, so a test notices unexpected JQL. Every request
refused as one Jira would refuse (bad JQL, an issue it would not create, the removed search, an
endpoint the fake does not serve) is kept in `violations`, which fail the test when the fake
stops. Switches make it fail: 500 for everything, a hang past the client's timeout, 401, 429 with
Jira Cloud's Retry-After (rate limited; `near_limit` marks every answer given with
X-RateLimit-NearLimit: true), 503 with one (a resource limit), 503 with Atlassian's
HTML "Page Unavailable" page (the site down or in maintenance), an API token expired or revoked
(answered as an anonymous request is, with X-Seraph-LoginReason: AUTHENTICATED_FAILED), "create the issue,
then hang" (a timeout after Jira has already created the issue), "create the issue, answer, then
hang the next request" (the look-up that follows a create) and "hang, then create the
issue" (a create Jira is slow to make: the issue comes when the hang ends, after the client, or
with a 504 the gateway, gave up; or with a 502 a proxy between them cut it off).
With `secure_new`, each issue made is hidden from the account, as an issue security level it is
not in hides it: searches leave it out, and its key answers 404.
Issues can be moved to another project, a project's key changed, or an issue deleted, as staff
do in Jira: an old key still answers with the moved issue, under its new key, as Jira's does.
A site in another language shows its issue types' translated names (`type_names`), each with its
`untranslatedName`, and a create naming a type takes only that untranslated name, as Jira Cloud's
does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.strict import Strict, checked

EMAIL = "bot@voxdesk.example"
TOKEN = "jira-test-token"
PROJECT = "GRV"
ISSUE_TYPES = {"10001": "Task", "10002": "Bug"}
# status name -> (statusCategory key, statusCategory id, statusCategory name)
CATEGORIES = {"new": (2, "To Do"), "indeterminate": (4, "In Progress"), "done": (3, "Done")}
STATUSES = {"To Do": "new", "In Progress": "indeterminate", "Done": "done"}
# A site in another language: the untranslated name of each status shown otherwise ({"Fertig":
# "Done"}), as a project's statuses list it (`untranslatedName`); a status an admin made is
# named the same in both.
UNTRANSLATED: dict[str, str] = {}
# The workflow of a Jira Cloud team-managed project: a global transition into each status, named
# after it, offered from every other status. id -> status it leads to.
TRANSITIONS = {"11": "To Do", "21": "In Progress", "31": "Done"}
# What Jira refuses in a text field: XML 1.0 has no C0 control but tab, line feed and carriage
# return, nor U+FFFE/U+FFFF; DEL is refused too, as voxdesk never means to send one.
NOT_XML_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
FIELDS = ("summary", "description", "labels", "status", "created", "updated", "issuetype", "project")
# A Jira Cloud site's resolutions, as a field's allowedValues list them.
RESOLUTIONS = (
    ("10000", "Done"),
    ("10001", "Won't Do"),
    ("10002", "Duplicate"),
    ("10003", "Cannot Reproduce"),
)
# Jira's built-in project permissions a caller may ask about: key -> (id, name).
PERMISSIONS = {
    "BROWSE_PROJECTS": ("10", "Browse Projects"),
    "CREATE_ISSUES": ("11", "Create Issues"),
    "EDIT_ISSUES": ("12", "Edit Issues"),
    "TRANSITION_ISSUES": ("46", "Transition Issues"),
    "ADD_COMMENTS": ("15", "Add Comments"),
}
FAIL_MODES = (
    "500",
    "hang",
    "401",
    "429",
    "503",
    "unavailable_page",
    "token_expired",
    "no_browse",
    "create_then_hang",
    "hang_then_create",
    "504_then_create",
    "502_then_create",
    "reject_create",
    "429_issue_write",
    "create_then_hang_next",
)

# What Atlassian's edge answers, whatever was asked, while a site is unavailable.
UNAVAILABLE_PAGE = """<!DOCTYPE html>
<html lang="en">
    <head>
        <meta charset="utf-8">
        <meta name="description" content="">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Atlassian Cloud Notifications - Page Unavailable</title>
        <link rel="stylesheet" href="/_edge/resources/aui-prototyping.css">
    </head>
    <body><h1>Page unavailable</h1><p>Your Atlassian Cloud site is currently unavailable.</p></body>
</html>
"""

# Page sizes Jira Cloud keeps to whatever maxResults asks: createmeta's fields, and the enhanced
# search's issues with fields beyond id and key, or with those alone.
CREATE_META_MOST = 200
SEARCH_MOST = 100
SEARCH_MOST_IDS = 5000

BODY = web.RequestKey("body", object)  # the parsed JSON body, read once by the middleware

# The only JQL voxdesk sends: one project, one label, optionally newest first.
JQL = re.compile(
    r'^project = "(?P<project>[A-Z][A-Z0-9_]{1,9})" AND labels = "(?P<label>[A-Za-z0-9_-]{1,255})"'
    r"(?P<order> ORDER BY created DESC)?$"
)
# Ticket news (bot/ticket_news.py): players' labels (or the whole project), updated in the last
# minutes, oldest first.
NEWS_JQL = re.compile(
    r'^project = "(?P<project>[A-Z][A-Z0-9_]{1,9})"'
    r'(?: AND labels in \((?P<labels>"[A-Za-z0-9_-]{1,255}"(?:, "[A-Za-z0-9_-]{1,255}"){0,99})\))?'
    r' AND updated >= "-(?P<minutes>[1-9][0-9]{0,5})m" ORDER BY updated ASC$'
)


def jira_time(when: dt.datetime) -> str:
    """Jira's timestamp format: 2025-01-31T10:00:00.000+0000."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}" + when.strftime("%z")


def status_id(name: str, category: str) -> str:
    """A status's id: one of its own for each of STATUSES, as each status has in Jira (one set
    by hand, with its category, shares its category's)."""
    return str(10000 + list(STATUSES).index(name)) if name in STATUSES else str(10 + CATEGORIES[category][0])


def status_json(name: str, category: str) -> dict[str, Any]:
    """A status as Jira shows it, with its category (to-do / in-progress / done)."""
    cat_id, cat_name = CATEGORIES[category]
    return {
        "id": status_id(name, category),
        "name": name,
        "statusCategory": {"id": cat_id, "key": category, "name": cat_name},
    }


@dataclass(frozen=True)
class ScreenField:
    """A field on a transition's screen: `key` is its id ("resolution", "customfield_10050");
    `allowed`, the values it takes (None: any); `default`, its context's default value, which a
    new issue gets and the transition metadata shows."""

    key: str
    name: str
    required: bool = True
    allowed: tuple[dict[str, Any], ...] | None = None
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    default: Any = None

    def json(self) -> dict[str, Any]:
        """As `expand=transitions.fields` shows it (Jira Cloud's FieldMetadata)."""
        meta: dict[str, Any] = {
            "required": self.required,
            "schema": self.schema,
            "name": self.name,
            "key": self.key,
            "hasDefaultValue": self.default is not None,
            "operations": ["set"],
        }
        if self.allowed is not None:
            meta["allowedValues"] = list(self.allowed)
        if self.default is not None:
            meta["defaultValue"] = self.default
        return meta


def resolution_field(names: tuple[str, ...] | None = None, required: bool = True) -> ScreenField:
    """The Resolution field on a screen, offering the site's resolutions (or those `names`)."""
    chosen = [(i, n) for i, n in RESOLUTIONS if names is None or n in names]
    chosen += [(str(10100 + k), n) for k, n in enumerate(names or ()) if n not in dict(RESOLUTIONS).values()]
    allowed = tuple(
        {"self": f"/rest/api/2/resolution/{i}", "id": i, "name": n, "description": ""} for i, n in chosen
    )
    return ScreenField(
        "resolution", "Resolution", required, allowed, {"type": "resolution", "system": "resolution"}
    )


def select_field(
    number: int, name: str, options: tuple[str, ...], required: bool = True, default: str | None = None
) -> ScreenField:
    """A single-select custom field (customfield_<number>) with these options."""
    allowed = tuple(
        {
            "self": f"/rest/api/2/customFieldOption/{20000 + k}",
            "value": v,
            "id": str(20000 + k),
            "disabled": False,
        }
        for k, v in enumerate(options)
    )
    schema = {
        "type": "option",
        "custom": "com.atlassian.jira.plugin.system.customfieldtypes:select",
        "customId": number,
    }
    chosen = next((a for a in allowed if a["value"] == default), None)
    return ScreenField(f"customfield_{number}", name, required, allowed, schema, chosen)


@dataclass
class FakeIssue:
    id: str
    key: str
    project: str
    issue_type: str
    summary: str
    description: Any
    labels: list[str]
    created: dt.datetime
    updated: dt.datetime
    status: str = "To Do"
    category: str = "new"  # the status category key
    resolution: dict[str, Any] | None = None  # as Jira shows it: {"id", "name", ...}, or None
    values: dict[str, Any] = field(default_factory=dict)  # custom fields, by id
    comments: list[dict[str, Any]] = field(default_factory=list)  # as the comment field lists them
    # At an issue security level the account is no member of: Jira hides the issue from it.
    secured: bool = False

    def json(self, base: str, wanted: set[str] | None = None) -> dict[str, Any]:
        type_id = next(i for i, n in ISSUE_TYPES.items() if n == self.issue_type)
        fields = {
            "summary": self.summary,
            "description": self.description,
            "labels": list(self.labels),
            "issuetype": {"id": type_id, "name": self.issue_type},
            "project": {"id": "10000", "key": self.project, "name": "Grievances"},
            "status": status_json(self.status, self.category),
            "created": jira_time(self.created),
            "updated": jira_time(self.updated),
            "resolution": self.resolution,
            "comment": {
                "comments": [dict(c) for c in self.comments],
                "maxResults": len(self.comments),
                "total": len(self.comments),
                "startAt": 0,
            },
            **self.values,
        }
        if wanted is not None:
            fields = {k: v for k, v in fields.items() if k in wanted}
            # A custom field asked for by id and never set is there, as null.
            fields.update({k: None for k in wanted if k.startswith("customfield_") and k not in fields})
        return {
            "id": self.id,
            "key": self.key,
            "self": f"{base}/rest/api/2/issue/{self.id}",
            "fields": fields,
        }


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeJira(Strict):
    email: str = EMAIL
    token: str = TOKEN
    project: str = PROJECT
    first_number: int = 101  # issue numbers start here, so GRV-101 is never mistaken for local GRV-1
    hang_seconds: float = 30.0  # a hang lasts this long unless the server stops first
    delay_seconds: float = 0.0  # every answer this late: a slow Jira, still within the timeout
    retry_after: str = "1"  # a 429's Retry-After: whole seconds, as Jira Cloud sends it ("": none)
    # A 429's X-RateLimit-Reset as sent (None: Retry-After's end, to the minute).
    rate_limit_reset: str | None = None
    near_limit: bool = False  # answers carry X-RateLimit-NearLimit: true
    issues: dict[str, FakeIssue] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # a moved issue's old key -> its key
    numbered: dict[str, int] = field(default_factory=dict)  # per project, the last number given out
    received: list[Received] = field(default_factory=list)
    jql: list[str] = field(default_factory=list)  # every JQL string received, well-formed or not
    bad_jql: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # requests to endpoints we do not serve
    transitioned: list[tuple[str, str]] = field(default_factory=list)  # (key, status) of each transition
    # The statuses the workflow has a transition into (None: every one in TRANSITIONS).
    workflow: tuple[str, ...] | None = None
    # The fields on the screen of the transition into a status, by status name (none: no screen).
    screens: dict[str, tuple[ScreenField, ...]] = field(default_factory=dict)
    # The statuses whose transition fails a workflow condition (an approval, a subtask still open).
    unavailable: tuple[str, ...] = ()
    # The create screen: fields an admin took off it (setting one is a 400), and fields put on it.
    hidden_on_create: frozenset[str] = frozenset()
    on_create: tuple[ScreenField, ...] = ()
    # What Jira Cloud hands back of a description it was sent (it keeps rich text as a document
    # and writes it back as wiki markup): None, as sent.
    stored_description: Callable[[str], str] | None = None
    # Project permissions the account lacks, as GET mypermissions tells them (Jira's keys:
    # "CREATE_ISSUES", "TRANSITION_ISSUES"). Without TRANSITION_ISSUES an issue's transitions are
    # listed as none, as Jira documents; how Jira refuses other operations without their
    # permission is not modelled.
    lacking: frozenset[str] = frozenset()
    # The project's issue security scheme gives each issue made from now on a default level of
    # which the account is no member: Jira Cloud still makes it (201, with its key), then hides it
    # from the account, as from anyone outside the level: a search leaves it out with a 200, and
    # its key answers 404 "Issue does not exist or you do not have permission to see it."
    secure_new: bool = False
    # Fields /field lists besides Jira's own: an admin's custom fields, as Jira describes them
    # ({"id": "customfield_10100", "name": ..., "custom": True, "clauseNames": [...]}).
    custom_fields: list[dict[str, Any]] = field(default_factory=list)
    # A site in another language (or whose admin translated an issue type): the names Jira shows
    # the account for its issue types ({"Task": "Aufgabe"}). A create naming the type takes only
    # its untranslated name, as Jira Cloud's does; by id, any type of the project.
    type_names: dict[str, str] = field(default_factory=dict)
    # The status a project's statuses listing answers instead of the list (403, 404: a Jira
    # Server/Data Center or a proxy that does not serve it), or None.
    statuses_refused: int | None = None
    violations: list[str] = field(default_factory=list)
    violations_expected: bool = False
    port: int = 0
    _failure: str | None = None
    _failures_left: int | None = None
    _passing: int = 0  # requests answered before the failure `fail` set begins
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _late: list[asyncio.Task[None]] = field(default_factory=list)  # issues Jira is still making
    _runner: web.AppRunner | None = None

    # ---- lifecycle and test controls -------------------------------------------------------

    async def start(self) -> FakeJira:
        app = web.Application(middlewares=[self._middleware])
        api = "/rest/api/{version:[23]}"
        app.router.add_get(f"{api}/serverInfo", self._server_info)
        app.router.add_get(f"{api}/myself", self._myself)
        app.router.add_get(f"{api}/field", self._fields)
        app.router.add_get(f"{api}/project/{{key}}", self._project)
        app.router.add_get(f"{api}/project/{{key}}/statuses", self._project_statuses)
        app.router.add_get(f"{api}/mypermissions", self._my_permissions)
        app.router.add_post(f"{api}/issue", self._create)
        app.router.add_get(f"{api}/issue/createmeta/{{key}}/issuetypes/{{type}}", self._create_meta)
        app.router.add_get(f"{api}/issue/{{key}}", self._issue)
        app.router.add_get(f"{api}/issue/{{key}}/transitions", self._transitions)
        app.router.add_post(f"{api}/issue/{{key}}/transitions", self._transition)
        app.router.add_get(f"{api}/search/jql", self._search)
        app.router.add_post(f"{api}/search/jql", self._search)
        app.router.add_route("*", f"{api}/search", self._removed_search)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]  # port 0: the OS chose one
        return self

    async def stop(self) -> None:
        self._released.set()  # hanging handlers return at once
        await asyncio.gather(*self._late)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, mode: str, times: int | None = None, after: int = 0) -> None:
        """Fail from now on: "500", "hang", "401", "429", "503" (with a Retry-After, as Jira Cloud
        answers at a resource limit), "unavailable_page" (a 503 with Atlassian's HTML page, as while
        the site is down or in maintenance), "token_expired" (an expired or revoked API token:
        what anyone may read answers as to nobody, the rest is a 401), "no_browse" (the account
        lost Browse projects: the project and its issues answer as if they did not exist),
        "create_then_hang", "hang_then_create",
        "504_then_create" (Atlassian's gateway gives up on a slow create at once, while Jira
        makes the issue when the hang ends), "502_then_create" (the same, a proxy behind the
        gateway cutting the connection) or "reject_create" (a 400 about the issue's content;
        these five affect only issue creation), or "429_issue_write" (Jira Cloud's per-issue
        write limit, on transitions only); `times` requests, or until `recover()`. `after`: the
        failures of every request ("500" to "unavailable_page") begin after that many answered."""
        if mode not in FAIL_MODES:
            raise ValueError(f"unknown failure mode {mode!r}: choose one of {', '.join(FAIL_MODES)}")
        self._failure, self._failures_left, self._passing = mode, times, after

    def recover(self) -> None:
        self._failure, self._failures_left = None, None

    def release(self) -> None:
        """End the hangs in progress now (their clients may long have given up)."""
        self._released.set()
        self._released = asyncio.Event()

    def set_status(self, key: str, status: str, category: str | None = None) -> None:
        """Move an issue, e.g. set_status("GRV-101", "In Progress") or a custom status name with
        its category ("new", "indeterminate", "done")."""
        issue = self.issues[key]
        issue.status = status
        issue.category = category or STATUSES[status]
        _touch(issue)

    def comment(
        self, key: str, body: str, visibility: tuple[str, str] | None = None, public: bool = True
    ) -> None:
        """Staff comment on an issue, as Jira's comment field then lists it: `visibility` ("role",
        "Administrators") restricts who may read it; `public` False is a Service Management
        internal note (jsdPublic false), which only agents see."""
        issue = self.issues[key]
        _touch(issue)
        when = jira_time(issue.updated)
        author = {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Staff", "active": True}
        made: dict[str, Any] = {
            "self": f"{self.url}/rest/api/2/issue/{issue.id}/comment/{10000 + len(issue.comments)}",
            "id": str(10000 + len(issue.comments)),
            "author": author,
            "body": body,
            "updateAuthor": author,
            "created": when,
            "updated": when,
            "jsdPublic": public,
        }
        if visibility is not None:
            made["visibility"] = {"type": visibility[0], "value": visibility[1], "identifier": visibility[1]}
        issue.comments.append(made)

    def relabel(self, key: str, old: str, new: str) -> None:
        """Replace one label of an issue, as staff editing it in Jira do (giving an issue to another
        player: discord-<id> to discord-<other id>)."""
        issue = self.issues[key]
        issue.labels[issue.labels.index(old)] = new
        _touch(issue)

    def move(self, key: str, project: str) -> FakeIssue:
        """Move an issue to another project, as Jira's "Move" does: the next key there, and its
        old key answers with it."""
        issue = self.issues.pop(key)
        self._rekey(issue, project, f"{project}-{self._next_number(project)}")
        return issue

    def rename_project(self, project: str) -> None:
        """Change the project's key (GRV to SUP): every issue keeps its number under the new key,
        and its old key answers with it."""
        old, self.project = self.project, project
        for issue in [i for i in self.issues.values() if i.project == old]:
            del self.issues[issue.key]
            self._rekey(issue, project, f"{project}-{issue.key.rsplit('-', 1)[1]}")
        self.numbered[project] = max(self.numbered.get(project, 0), self.numbered.get(old, 0))

    def delete(self, key: str) -> None:
        del self.issues[key]

    def _next_number(self, project: str) -> int:
        # Jira never gives a number out twice, whatever was moved or deleted since.
        number = max(self.first_number, self.numbered.get(project, 0) + 1)
        self.numbered[project] = number
        return number

    def _rekey(self, issue: FakeIssue, project: str, key: str) -> None:
        old = issue.key
        issue.project, issue.key = project, key
        _touch(issue)
        self.issues[key] = issue
        for earlier, now in list(self.aliases.items()):
            if now == old:
                self.aliases[earlier] = key
        self.aliases[old] = key

    def add_issue(
        self, labels: list[str], summary: str = "filed in Jira", description: str = ""
    ) -> FakeIssue:
        """An issue created in Jira directly (by support staff, say), not by voxdesk."""
        return self._new_issue(self.project, "Task", summary, description, labels)

    def requests_to(self, suffix: str, method: str | None = None) -> list[Received]:
        return [r for r in self.received if r.path.endswith(suffix) and method in (None, r.method)]

    # ---- plumbing ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            text = await request.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                return _errors(400, self.refuse(f"{request.method} {request.path}: the body is not JSON."))
        query = {k: request.query.getall(k) for k in request.query}
        self.received.append(Received(request.method, request.path, query, body))
        request[BODY] = body
        if self._failure == "token_expired":
            self._take_failure()
            return await self._anonymous(request, handler)
        if self._failure == "no_browse" and self._authorised(request):
            self._take_failure()
            return await self._not_browsing(request, handler)
        if not self._authorised(request):
            return _unauthorised()
        failing = ("500", "hang", "401", "429", "503", "unavailable_page")
        failure = None
        if self._failure in failing and self._passing > 0:
            self._passing -= 1  # answered as usual, before the failure begins
        elif self._failure in failing:
            failure = self._take_failure()
        if failure == "401":
            return _unauthorised()
        if failure == "429":
            # Jira Cloud's rate limiting: the request had no effect; try again after Retry-After.
            response = _errors(429, "Rate limit exceeded.")
            self._rate_limit_headers(response)
            response.headers["RateLimit-Reason"] = "jira-quota-tenant-based"
            return response
        if failure == "503":
            # Jira Cloud at a resource limit: the request had no effect; try again after Retry-After.
            response = _errors(503, "Service unavailable: a resource limit was reached (scripted).")
            response.headers["Retry-After"] = self.retry_after
            return response
        if failure == "unavailable_page":
            # Atlassian's edge while the site is down or in maintenance: a page for people, not JSON.
            return web.Response(status=503, text=UNAVAILABLE_PAGE, content_type="text/html")
        if failure == "500":
            return _errors(500, "Internal server error (scripted).")
        if failure == "hang":
            await self._hang()
            return _errors(504, "Gateway timeout (scripted hang).")
        if self.delay_seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.delay_seconds)
        response = await handler(request)
        if self.near_limit and response.status < 400:
            # Jira Cloud's word, on an answer it gave, that less than a fifth of a budget is left.
            response.headers["X-RateLimit-NearLimit"] = "true"
        return response

    def _rate_limit_headers(self, response: web.Response) -> None:
        """A 429's headers as Jira Cloud sends them: Retry-After in seconds (not always there), and
        X-RateLimit-Reset, the request's time plus that wait, to the minute (yyyy-MM-ddTHH:mmZ),
        here rounded up so that it never ends the wait early."""
        if self.rate_limit_reset is not None:
            response.headers["X-RateLimit-Reset"] = self.rate_limit_reset
        elif self.retry_after.isdigit():
            ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=int(self.retry_after), minutes=1)
            response.headers["X-RateLimit-Reset"] = ends.strftime("%Y-%m-%dT%H:%MZ")
        if self.retry_after:
            response.headers["Retry-After"] = self.retry_after

    async def _anonymous(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A request whose API token expired or was revoked, as Jira Cloud answers it: as one
        made by nobody, saying so only in X-Seraph-LoginReason. What anyone may read answers
        (server info; a search, which finds nothing nobody may see; an issue, which "does not
        exist"), and the rest is a 401."""
        path = request.path.split("/rest/api/", 1)[-1].split("/", 1)[-1]
        if path == "serverInfo":
            response: web.StreamResponse = await handler(request)
        elif path == "search/jql":
            response = web.json_response({"issues": [], "isLast": True})
        elif request.method == "GET" and re.fullmatch(r"issue/[^/]+(/transitions)?", path):
            response = _errors(404, "Issue does not exist or you do not have permission to see it.")
        else:
            response = _errors(
                401, "You are not authenticated. Authentication required to perform this operation."
            )
        response.headers["X-Seraph-LoginReason"] = "AUTHENTICATED_FAILED"
        return response

    async def _not_browsing(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """A request of an account without the project's Browse projects permission, as Jira
        Cloud answers it: the project and its issues are as if they did not exist (a 404, not a
        403), and JQL or a create naming the project is refused as naming no project."""
        path = request.path.split("/rest/api/", 1)[-1].split("/", 1)[-1]
        unknown = f"The value '{self.project}' does not exist for the field 'project'."
        if path == "search/jql" or (path == "issue" and request.method == "POST"):
            return _errors(400, unknown)
        if path.startswith("issue/"):
            return _errors(404, "Issue does not exist or you do not have permission to see it.")
        if path.startswith("project/"):
            return _errors(404, f"No project could be found with key '{self.project}'.")
        return await handler(request)

    def _take_failure(self) -> str | None:
        mode = self._failure
        if self._failures_left is not None:
            self._failures_left -= 1
            if self._failures_left <= 0:
                self.recover()
        return mode

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == (self.email, self.token)

    async def _hang(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), self.hang_seconds)

    def _new_issue(
        self, project: str, issue_type: str, summary: str, description: Any, labels: list[str]
    ) -> FakeIssue:
        number = self._next_number(project)
        now = dt.datetime.now(dt.UTC)
        issue = FakeIssue(
            id=str(20000 + len(self.issues)),
            key=f"{project}-{number}",
            project=project,
            issue_type=issue_type,
            summary=summary,
            description=description,
            labels=labels,
            created=now,
            updated=now,
            secured=self.secure_new,
        )
        # A custom field's default is the new issue's value, whichever screen shows the field.
        for f in (f for fields in self.screens.values() for f in fields):
            if f.key.startswith("customfield_") and f.default is not None:
                issue.values.setdefault(f.key, f.default)
        self.issues[issue.key] = issue
        return issue

    def _find(self, key_or_id: str) -> FakeIssue | None:
        """An issue the account may see, by key or id (None: one that does not exist, or hidden)."""
        key_or_id = self.aliases.get(key_or_id, key_or_id)
        found = self.issues.get(key_or_id) or next(
            (i for i in self.issues.values() if i.id == key_or_id), None
        )
        return None if found is None or found.secured else found

    # ---- endpoints -----------------------------------------------------------------------

    async def _server_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "baseUrl": self.url,
                "displayUrl": self.url,
                "version": "1001.0.0-SNAPSHOT",
                "versionNumbers": [1001, 0, 0],
                "deploymentType": "Cloud",
                "buildNumber": 100280,
                "serverTitle": "Fake Jira",
            }
        )

    async def _myself(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "self": f"{self.url}/rest/api/2/user?accountId=5b10ac8d82e05b22cc7d4ef5",
                "accountId": "5b10ac8d82e05b22cc7d4ef5",
                "accountType": "atlassian",
                "emailAddress": self.email,
                "displayName": "VoxDesk Bot",
                "active": True,
            }
        )

    async def _fields(self, request: web.Request) -> web.Response:
        clauses = {"created": ["created", "createdDate"], "updated": ["updated", "updatedDate"]}
        return web.json_response(
            [
                {
                    "id": f,
                    "key": f,
                    "name": f.capitalize(),
                    "custom": False,
                    "clauseNames": clauses.get(f, [f]),
                }
                for f in FIELDS
            ]
            + self.custom_fields
        )

    async def _project(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key != self.project:
            return _errors(404, f"No project could be found with key '{key}'.")
        # Jira Cloud lists each type's name in the account's language, and beside it the name a
        # create by name takes (undocumented, but in every answer of Cloud's issue types).
        types = [
            {"id": i, "name": self.type_names.get(n, n), "untranslatedName": n, "subtask": False}
            for i, n in ISSUE_TYPES.items()
        ]
        return web.json_response(
            {
                "self": f"{self.url}/rest/api/2/project/10000",
                "id": "10000",
                "key": key,
                "name": "Grievances",
                "issueTypes": types,
            }
        )

    async def _project_statuses(self, request: web.Request) -> web.Response:
        """The statuses of each issue type of the project, as Jira Cloud lists them: each with
        its name in the account's language and its `untranslatedName`."""
        key = request.match_info["key"]
        if key != self.project:
            return _errors(404, f"No project could be found with key '{key}'.")
        if self.statuses_refused is not None:
            return _errors(self.statuses_refused, "The project's statuses cannot be listed.")
        statuses = [
            {
                "self": f"{self.url}/rest/api/2/status/{status_id(name, category)}",
                "description": "",
                "iconUrl": f"{self.url}/images/icons/statuses/generic.png",
                **status_json(name, category),
                "untranslatedName": UNTRANSLATED.get(name, name),
            }
            for name, category in STATUSES.items()
        ]
        return web.json_response(
            [
                {
                    "self": f"{self.url}/rest/api/2/issuetype/{i}",
                    "id": i,
                    "name": self.type_names.get(n, n),
                    "subtask": False,
                    "statuses": statuses,
                }
                for i, n in ISSUE_TYPES.items()
            ]
        )

    async def _my_permissions(self, request: web.Request) -> web.Response:
        """The caller's permissions in a project: Cloud answers only those `permissions` names."""
        keys = [k for k in request.query.get("permissions", "").split(",") if k]
        if not keys:
            return _errors(400, self.refuse("mypermissions: the 'permissions' query parameter is required."))
        project = request.query.get("projectKey")
        if project is not None and project != self.project:
            return _errors(404, f"No project could be found with key '{project}'.")
        issue = request.query.get("issueKey")
        if issue is not None and self._find(issue) is None:
            return _errors(404, "Issue does not exist or you do not have permission to see it.")
        unknown = [k for k in keys if k not in PERMISSIONS]
        if unknown:
            return _errors(400, self.refuse(f"mypermissions: no permission {unknown[0]!r} exists."))
        return web.json_response(
            {
                "permissions": {
                    k: {
                        "id": PERMISSIONS[k][0],
                        "key": k,
                        "name": PERMISSIONS[k][1],
                        "type": "PROJECT",
                        "description": f"Ability to {PERMISSIONS[k][1].lower()}.",
                        "havePermission": k not in self.lacking,
                    }
                    for k in keys
                }
            }
        )

    async def _create(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            return _errors(400, self.refuse("create issue: the request must carry a fields object."))
        fields = body["fields"]
        errors: dict[str, str] = {}
        screen = {f.key for f in self.on_create}
        for name in fields:
            known = name in ("project", "issuetype", "summary", "description", "labels") or name in screen
            if not known or name in self.hidden_on_create:
                errors[name] = (
                    f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                )
        project = fields.get("project") or {}
        if project.get("key", project.get("id")) not in (self.project, "10000"):
            errors["project"] = "Specify a valid project ID or key"
        issue_type = fields.get("issuetype") or {}
        type_name = issue_type.get("name") or ISSUE_TYPES.get(str(issue_type.get("id")))
        if not issue_type:
            errors["issuetype"] = "Specify an issue type"
        elif type_name not in ISSUE_TYPES.values():
            errors["issuetype"] = "The issue type selected is invalid."
        summary = fields.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif len(summary) > 255 or "\n" in summary or "\r" in summary:
            errors["summary"] = "Summary must be less than 255 characters and on one line."
        description = fields.get("description")
        plain = request.match_info["version"] == "2"
        if description is not None and plain != isinstance(description, str):
            # v2 takes text (wiki markup); v3 takes an Atlassian Document Format object
            errors["description"] = (
                "Operation value must be a string"
                if plain
                else "Operation value must be an Atlassian Document"
            )
        for name in ("summary", "description"):
            text = fields.get(name)
            if isinstance(text, str) and NOT_XML_TEXT.search(text):
                errors[name] = (
                    "Illegal character in the text: Jira keeps it as XML 1.0, which has no such character."
                )
        labels = fields.get("labels", [])
        if not isinstance(labels, list) or any(not isinstance(x, str) or not x or " " in x for x in labels):
            errors["labels"] = "Labels cannot contain spaces and must be non-empty strings."
        for spec in self.on_create:
            if spec.required and spec.default is None and spec.key not in fields:
                errors[spec.key] = f"{spec.name} is required."
        for name, error in errors.items():
            self.refuse(f"create issue: {name}: {error}")
        if self._failure == "reject_create":  # scripted, so not a violation
            self._take_failure()
            errors["labels"] = "The label 'wallet' is not allowed in this project."
        if errors:
            return web.json_response({"errorMessages": [], "errors": errors}, status=400)
        if self.stored_description is not None and isinstance(description, str):
            description = self.stored_description(description)
        if self._failure in ("504_then_create", "502_then_create"):
            gave_up = self._failure == "504_then_create"
            self._take_failure()
            made = (self.project, type_name, summary, description, list(labels))
            self._late.append(asyncio.create_task(self._make_late(*made)))
            if gave_up:
                return _errors(504, "Gateway timeout: the request took too long (scripted).")
            return _errors(502, "Bad gateway: the upstream connection was reset (scripted).")
        if self._failure == "hang_then_create":
            # Jira still at work on a create its client gave up on: the issue is made at the end.
            self._take_failure()
            await self._hang()
        issue = self._new_issue(self.project, type_name, summary, description, list(labels))
        created = {"id": issue.id, "key": issue.key, "self": f"{self.url}/rest/api/2/issue/{issue.id}"}
        if self._failure == "create_then_hang":
            self._take_failure()
            await self._hang()
        if self._failure == "create_then_hang_next":
            # The create answered, and the request after it (the pusher's look-up of the new
            # issue) hangs: a test stops the pusher there, as a crash between the two would.
            self.fail("hang", times=1)
        return web.json_response(created, status=201)

    async def _make_late(self, *made: Any) -> None:
        await self._hang()
        self._new_issue(*made)

    async def _create_meta(self, request: web.Request) -> web.Response:
        """Jira Cloud's page of the create screen's fields for a project and issue type."""
        if request.match_info["key"] not in (self.project, "10000"):
            return _errors(404, f"No project could be found with key '{request.match_info['key']}'.")
        if request.match_info["type"] not in ISSUE_TYPES:
            return _errors(404, "The issue type selected is invalid.")
        standard = [
            ScreenField("issuetype", "Issue Type", schema={"type": "issuetype", "system": "issuetype"}),
            ScreenField("project", "Project", schema={"type": "project", "system": "project"}),
            ScreenField("summary", "Summary", schema={"type": "string", "system": "summary"}),
            ScreenField(
                "description", "Description", False, schema={"type": "string", "system": "description"}
            ),
            ScreenField(
                "labels", "Labels", False, schema={"type": "array", "items": "string", "system": "labels"}
            ),
            # As Jira shows it: required with no default, though a create without it gets the caller.
            ScreenField("reporter", "Reporter", schema={"type": "user", "system": "reporter"}),
        ]
        shown = [f for f in [*standard, *self.on_create] if f.key not in self.hidden_on_create]
        try:
            start = _count(request.query.get("startAt"), "startAt", 0)
            size = min(_count(request.query.get("maxResults"), "maxResults", 50), CREATE_META_MOST)
        except ValueError as exc:
            return _errors(400, self.refuse(f"createmeta: {exc}"))
        page = [{**f.json(), "fieldId": f.key} for f in shown[start : start + size]]
        return web.json_response({"startAt": start, "maxResults": size, "total": len(shown), "fields": page})

    async def _issue(self, request: web.Request) -> web.Response:
        issue = self._find(request.match_info["key"])
        if issue is None:
            return _errors(404, "Issue does not exist or you do not have permission to see it.")
        return web.json_response(self._issue_json(issue, _wanted_fields(request.query.getall("fields", []))))

    def _issue_json(self, issue: FakeIssue, wanted: set[str] | None) -> dict[str, Any]:
        """An issue as the account sees it: its type named in the site's language."""
        shown = issue.json(self.url, wanted)
        issue_type = shown["fields"].get("issuetype")
        if isinstance(issue_type, dict) and issue_type.get("name") in self.type_names:
            shown["fields"]["issuetype"] = {**issue_type, "name": self.type_names[issue_type["name"]]}
        return shown

    def _offered(self, issue: FakeIssue) -> dict[str, str]:
        """The transitions the issue's workflow offers from its status (`workflow`, if set, limits
        them: a project whose workflow has no way into some status)."""
        return {
            i: to
            for i, to in TRANSITIONS.items()
            if to != issue.status and (self.workflow is None or to in self.workflow)
        }

    async def _transitions(self, request: web.Request) -> web.Response:
        issue = self._find(request.match_info["key"])
        if issue is None:
            return _errors(404, "Issue does not exist or you do not have permission to see it.")
        expand = {e.strip() for v in request.query.getall("expand", []) for e in v.split(",")}
        with_fields = "transitions.fields" in expand  # Jira ignores what it cannot expand
        # Jira Cloud leaves out a transition that fails a condition unless asked for it.
        with_unavailable = request.query.get("includeUnavailableTransitions", "").lower() == "true"
        return web.json_response(
            {
                "expand": "transitions",
                "transitions": [
                    {
                        "id": i,
                        "name": to,
                        "to": {
                            "self": f"{self.url}/rest/api/2/status/{status_id(to, STATUSES[to])}",
                            "description": "",
                            "iconUrl": f"{self.url}/images/icons/statuses/generic.png",
                            **status_json(to, STATUSES[to]),
                        },
                        "hasScreen": bool(self.screens.get(to)),
                        "isGlobal": True,
                        "isInitial": False,
                        "isAvailable": to not in self.unavailable,
                        "isConditional": False,
                        "isLooped": False,
                        **(
                            {"fields": {f.key: f.json() for f in self.screens.get(to, ())}}
                            if with_fields
                            else {}
                        ),
                    }
                    for i, to in self._offered(issue).items()
                    if (with_unavailable or to not in self.unavailable)
                    # Jira lists none to an account without the permission to make them.
                    and "TRANSITION_ISSUES" not in self.lacking
                ],
            }
        )

    async def _transition(self, request: web.Request) -> web.Response:
        issue = self._find(request.match_info["key"])
        if issue is None:
            return _errors(404, "Issue does not exist or you do not have permission to see it.")
        if self._failure == "429_issue_write":
            # Jira Cloud's per-issue write limit: this issue only, every other request goes on.
            self._take_failure()
            response = _errors(429, "Rate limit exceeded for writes to this issue.")
            self._rate_limit_headers(response)
            response.headers["RateLimit-Reason"] = "jira-per-issue-on-write"
            return response
        body = request[BODY]
        transition = body.get("transition") if isinstance(body, dict) else None
        if not isinstance(transition, dict) or not isinstance(transition.get("id"), (str, int)):
            return _errors(400, self.refuse("transition issue: the request must carry a transition id."))
        unknown = set(body) - {"transition", "fields", "update", "historyMetadata", "properties"}
        if unknown:
            return _errors(400, self.refuse(f"transition issue: unknown fields {sorted(unknown)}."))
        if body.get("update"):
            return _errors(400, self.refuse("transition issue: voxdesk sends no update operations."))
        to = self._offered(issue).get(str(transition["id"]))
        if to is None:
            # Scripted (a workflow without that way) or asked wrongly: refused as Jira refuses it.
            if str(transition["id"]) not in TRANSITIONS or self.workflow is None:
                self.refuse(f"transition issue: {transition['id']!r} is not offered from {issue.status}.")
            return _errors(400, f"Transition id '{transition['id']}' is not valid for this issue.")
        if to in self.unavailable:
            # voxdesk reads isAvailable first: trying a transition that fails its condition is a slip.
            self.refuse(f"transition issue: {transition['id']!r} fails its workflow condition.")
            return _errors(400, f"Transition id '{transition['id']}' is not valid for this issue.")
        sent = body.get("fields") or {}
        if not isinstance(sent, dict):
            return _errors(400, self.refuse("transition issue: fields must be an object."))
        errors = self._screen_errors(issue, to, sent)
        if errors:
            return web.json_response({"errorMessages": [], "errors": errors}, status=400)
        for name, value in sent.items():
            if name == "resolution":
                issue.resolution = self._allowed_value(self._screen(to)[name], value)
            else:
                issue.values[name] = self._allowed_value(self._screen(to)[name], value)
        issue.status, issue.category = to, STATUSES[to]
        _touch(issue)
        self.transitioned.append((issue.key, to))
        return web.Response(status=204)

    def _screen(self, to: str) -> dict[str, ScreenField]:
        return {f.key: f for f in self.screens.get(to, ())}

    @staticmethod
    def _allowed_value(spec: ScreenField, value: Any) -> Any:
        """The allowed value `value` names (by id, by name for a resolution, by value for an
        option), or None; the value itself for a field that takes any."""
        if spec.allowed is None:
            return value
        if not isinstance(value, dict):
            return None
        return next(
            (
                a
                for a in spec.allowed
                if ("id" in value and str(value["id"]) == a["id"])
                or ("name" in value and value["name"] == a.get("name"))
                or ("value" in value and value["value"] == a.get("value"))
            ),
            None,
        )

    def _screen_errors(self, issue: FakeIssue, to: str, sent: dict[str, Any]) -> dict[str, str]:
        """Jira's `errors` for a transition into `to` with these fields: one not on its screen or a
        value it does not offer (each a violation: voxdesk reads the screen first), or a required
        field neither sent nor held by the issue (the workflow's rule, answered as Jira does; its
        words vary between sites and fields, its key is the field's id)."""
        screen = self._screen(to)
        errors: dict[str, str] = {}
        for name, value in sent.items():
            spec = screen.get(name)
            if spec is None:
                errors[name] = (
                    f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                )
            elif self._allowed_value(spec, value) is None:
                errors[name] = (
                    f"Could not find valid 'id' or 'name' in {name} object."
                    if name == "resolution"
                    else f"Specify a valid 'id' or 'name' for {spec.name}"
                )
        for name, error in errors.items():
            self.refuse(f"transition issue to {to}: {name}: {error}")
        for spec in screen.values():
            held = issue.resolution if spec.key == "resolution" else issue.values.get(spec.key)
            if spec.required and spec.key not in sent and held in (None, "", []):
                errors[spec.key] = f"{spec.name} is required."
        return errors

    async def _search(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = dict(request[BODY] or {}) if request.method == "POST" else {}
        if request.method == "GET":
            params = {k: request.query.getall(k) for k in request.query}
            params = {k: (v if k == "fields" else v[-1]) for k, v in params.items()}
        jql = params.get("jql")
        if not isinstance(jql, str):
            return _errors(
                400,
                self.refuse("Unbounded JQL queries are not allowed here. Please add a search restriction."),
            )
        self.jql.append(jql)
        match = JQL.match(jql)
        news = NEWS_JQL.match(jql) if match is None else None
        if match is None and news is None:
            self.bad_jql.append(jql)
            return _errors(
                400,
                self.refuse(
                    f"Error in the JQL Query: unexpected query {jql!r} (the fake accepts only ours)."
                ),
            )
        wanted = _wanted_fields(params.get("fields") or [])
        try:
            limit = _count(params.get("maxResults"), "maxResults", 50)
            if limit < 1:
                raise ValueError("maxResults must be at least 1")
            start = (
                int(base64.urlsafe_b64decode(params["nextPageToken"]).decode())
                if params.get("nextPageToken")
                else 0
            )
        except (ValueError, binascii.Error) as exc:
            return _errors(400, self.refuse(f"search: invalid maxResults or nextPageToken ({exc})."))
        # Jira gives fewer than asked for, and says so only by the next page's token: at most
        # SEARCH_MOST_IDS a page for ids or keys alone, SEARCH_MOST with any other field.
        limit = min(limit, SEARCH_MOST_IDS if wanted is not None and wanted <= {"id", "key"} else SEARCH_MOST)
        if news is not None:
            labels = set(re.findall(r'"([^"]+)"', news["labels"] or ""))
            since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=int(news["minutes"]))
            found = [
                i
                for i in self.issues.values()
                if i.project == news["project"]
                and not i.secured
                and (news["labels"] is None or labels & set(i.labels))
                and i.updated >= since
            ]
            found.sort(key=lambda i: (i.updated, int(i.id)))
        else:
            assert match is not None
            found = [
                i
                for i in self.issues.values()
                if i.project == match["project"] and match["label"] in i.labels and not i.secured
            ]
            if match["order"]:
                found.sort(key=lambda i: (i.created, int(i.id)), reverse=True)
        page = found[start : start + limit]
        if not params.get("fields"):
            # The enhanced search's default is the issue's id alone, not the fields /issue gives.
            result: dict[str, Any] = {"issues": [{"id": i.id} for i in page]}
        else:
            result = {"issues": [self._issue_json(i, wanted) for i in page]}
        if start + limit < len(found):
            result["nextPageToken"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            result["isLast"] = False
        else:
            result["isLast"] = True
        return web.json_response(result)

    async def _removed_search(self, request: web.Request) -> web.Response:
        return _errors(
            410,
            self.refuse(
                f"{request.path}: the requested API has been removed. Please migrate to the "
                "/rest/api/3/search/jql API."
            ),
        )

    async def _unknown(self, request: web.Request) -> web.Response:
        self.unexpected.append(f"{request.method} {request.path}")
        return _errors(404, self.refuse(f"The fake Jira does not serve {request.method} {request.path}."))


def _touch(issue: FakeIssue) -> None:
    """A change to an issue: its `updated`, to Jira's millisecond, is later than before, as a
    change made after an issue was created (or changed) is in Jira, however fast a test makes it."""
    issue.updated = max(dt.datetime.now(dt.UTC), issue.updated + dt.timedelta(milliseconds=1))


def _count(value: object, name: str, default: int) -> int:
    """A paging parameter as Jira reads it: a whole number, not negative; anything else is its
    400 (a bare int() would make a junk value the fake's own 500)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,9}", value.strip()):
        raise ValueError(f"{name} must be a whole number of at least 0, not {value!r}")
    number = int(value)
    if number < 0:
        raise ValueError(f"{name} must be at least 0, not {number}")
    return number


def _wanted_fields(values: list[str] | str) -> set[str] | None:
    names = {
        n.strip()
        for v in ([values] if isinstance(values, str) else values)
        for n in v.split(",")
        if n.strip()
    }
    if not names or "*all" in names or "*navigable" in names:
        return None
    return names


def _errors(status: int, message: str) -> web.Response:
    return web.json_response({"errorMessages": [message], "errors": {}}, status=status)


def _unauthorised() -> web.Response:
    return web.Response(status=401, text="Client must be authenticated to access this resource.")


@contextlib.asynccontextmanager
async def running_fake_jira(**options: Any) -> AsyncIterator[FakeJira]:
    """A running fake Jira, stopped at the end; fails if it refused a request as malformed."""
    async with checked(await FakeJira(**options).start()) as fake:
        yield fake
