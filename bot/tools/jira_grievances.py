"""Grievances in Jira Cloud, behind an outbox so none is ever lost.

A grievance is committed to the local store first and the player hears its local key (GRV-14)
at once. A background task pushes pending grievances to Jira, oldest first, backing off while
Jira is down, and records the Jira key against the local one; a restart resumes with whatever
is still pending. Before creating an issue the pusher looks for one labelled with the local
key, so a push whose answer was lost (a timeout after Jira created the issue, a cancelled push)
is never created twice; an issue of that label is taken for the grievance's only if it is the
same player's in the same words, since a database restored from a backup gives its keys again.

Status answers come from Jira when it answers, merged with the player's grievances that have
not reached it yet, and from the local record, marked `from_local_record`, when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from bot import sentences as say
from bot.bounded import remember
from bot.config import JiraSettings
from bot.logs import Outage
from bot.tools import CATEGORIES
from bot.tools.base import Filing, Grievance, ToolError
from bot.tools.grievance_store import (
    MAX_ERROR_CHARS,
    MAX_LISTED,
    LocalGrievanceStore,
    PendingGrievance,
    StaffRow,
)
from bot.tools.jira_tracker import (
    LOCAL_KEY,
    PER_ISSUE_LIMIT,
    STATUS_CATEGORIES,
    USER_ID,
    JiraTracker,
    RemoteIssue,
    TrackerError,
    hidden_reason,
    permission_reason,
    type_id_named,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PUSH_BATCH = 200
JIRA_THREADS = 8
NEWS_BATCH = 50  # players' labels in a ticket-news query, keeping its JQL string short
# Ways Jira refused grievances remembered as said: a refusal may name its grievance's issue, so
# one a grievance would otherwise be kept for the process's life.
MAX_REFUSALS = 1000
# What a proxy in front of Jira answers when it stopped waiting for a request Jira may still be
# working on: a 504 (it timed out), or a 502 (a proxy behind it cut the connection, which the
# outer one tells as a bad gateway). Neither says Jira stopped.
GATEWAY_GAVE_UP = (502, 504)
# When (time.monotonic) the player's status lookup under way stops waiting for Jira; None: no lookup.
_lookup_until: contextvars.ContextVar[float | None] = contextvars.ContextVar("lookup_until", default=None)


class JiraGrievances:
    """A GrievanceBackend: the local store as an outbox in front of a Jira project."""

    def __init__(
        self,
        settings: JiraSettings,
        tracker: JiraTracker,
        store: LocalGrievanceStore,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`sleep` waits out the pusher's delays after a failure (a test passes one that records
        the delay chosen instead of waiting it out)."""
        self._settings = settings
        self._tracker = tracker
        self._store = store
        self._wake = asyncio.Event()
        self._push_lock = asyncio.Lock()  # the pusher and an explicit flush never push the same row
        self._task: asyncio.Task[None] | None = None
        self._sleep = sleep
        # The views of one Jira outage (this pusher's, players' lookups', ticket news'): each says
        # a refusal none of the others said, so an expired token is one line however it is met.
        self._outages: list[Outage] = []
        self._push_outage = Outage(
            log,
            "Jira takes grievances again after %.0f s (%d failed push round(s)); %d pushed",
            beside=self._outages,
        )
        # A player asking for their tickets during an outage is told from the local record: news
        # once, not every time.
        self._lookup_outage = Outage(log, quiet=logging.INFO, beside=self._outages)
        self._outages += (self._push_outage, self._lookup_outage)
        # Jira's blocking calls get threads of their own: a hanging Jira then cannot use up the
        # loop's default pool that audio decoding and the other backends rely on.
        self._threads = ThreadPoolExecutor(JIRA_THREADS, thread_name_prefix="jira")
        self._push_threads = ThreadPoolExecutor(1, thread_name_prefix="jira-push")
        # Until when (time.monotonic) a Retry-After (a 429's, a 503's) holds every request back,
        # and the answer that asked for it.
        self._quiet_until = 0.0
        self._quiet_for: TrackerError | None = None
        # The refusals of grievances the last push round said (push_pending), and those this
        # process said (its newest MAX_REFUSALS): a refusal its grievances kept from before a
        # restart is news to its log.
        self._refusals_said: dict[str, None] = {}
        self._refusals_told: dict[str, None] = {}
        # Whether this process said that Jira hides the issues it files from the account (_shown).
        self._hidden_said = False

    @classmethod
    async def open(
        cls,
        settings: JiraSettings,
        email: str,
        api_token: str,
        local_path: Path,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        read_only: bool = False,
    ) -> JiraGrievances:
        """No request is made: opening works while Jira is down (grievances then wait locally).
        `read_only`: for `check`, which pushes nothing (LocalGrievanceStore.open)."""
        store = await LocalGrievanceStore.open(local_path, initial_state="pending", read_only=read_only)
        try:
            # voxdesk-<store id>-GRV-14: local keys repeat across databases (a new storage dir, a
            # staging bot on the same project), so the label that finds a push again names both.
            # The id is made at the first open that may write; `check` labels no issue.
            store_id = "" if read_only else await store.store_id()
            key_label_prefix = f"{settings.key_label_prefix}{store_id}-"
            tracker = JiraTracker(
                settings.url,
                email,
                api_token,
                settings.project,
                settings.issue_type,
                settings.timeout_seconds,
                settings.user_label_prefix,
                key_label_prefix,
                tuple(settings.refusals),
                tuple(settings.duplicates),
            )
        except BaseException:
            await store.aclose()
            raise
        return cls(settings, tracker, store, sleep)

    # ---- GrievanceBackend ----------------------------------------------------------------------

    async def register(
        self,
        user_id: str,
        category: str,
        description: str,
        filing_id: str | Filing | None = None,
        untold: bool = False,
    ) -> Grievance:
        if not USER_ID.match(user_id):
            # Not a Discord id (a CLI user, say): Jira could never list it for its owner, so it
            # stays a local ticket instead of failing to push for ever.
            return await self._store.register(
                user_id, category, description, filing_id, push_state="local_only", untold=untold
            )
        grievance = await self._store.register(user_id, category, description, filing_id, untold=untold)
        self._wake.set()
        return grievance

    async def status(self, user_id: str, key: str | None = None, limit: int = MAX_LISTED) -> list[Grievance]:
        if not USER_ID.match(user_id):  # not a Discord id (a CLI user, say): Jira holds none of theirs
            return await self._store.status(user_id, key, limit)
        # A lookup asks Jira several things in turn (a listing, then each pushed grievance it does
        # not show): on a slow Jira each may take up to the timeout, and the player waits for the
        # sum. One timeout in all; what is left unasked is answered from the local record.
        until = _lookup_until.set(time.monotonic() + self._settings.timeout_seconds)
        try:
            if key is None:
                return await self._list(user_id, limit)
            return await self._one(user_id, key)
        finally:
            _lookup_until.reset(until)

    @property
    def outages(self) -> list[Outage]:
        """The views of a Jira outage (the pusher's, the players' lookups'): what one said, another
        view of Jira (ticket news, which joins the list) need not say again, nor they after it."""
        return self._outages

    @property
    def near_limit_answers(self) -> int:
        """How many of Jira's answers said little of its rate limit's budget is left
        (X-RateLimit-NearLimit): ticket news polls less while the count grows."""
        return self._tracker.near_limit_answers

    def jira_now(self) -> float | None:
        """Jira's own clock now (unix seconds), as its answers' Date headers tell it; None before
        any (JiraTracker.jira_now)."""
        return self._tracker.jira_now()

    @property
    def local_store(self) -> LocalGrievanceStore:
        """The outbox, which holds every grievance (ticket news reads its events)."""
        return self._store

    async def updated_issues(self, user_ids: list[str], minutes: int) -> list[tuple[str, RemoteIssue]]:
        """(player, issue) for these players' issues updated in Jira in the last `minutes`: from one
        query, or one per NEWS_BATCH players when they are more and the project's changes fill more
        than a page. Raises TrackerError when Jira fails."""
        ids = [u for u in user_ids if USER_ID.match(u)]
        if not ids:
            return []
        issues = None
        if len(ids) > NEWS_BATCH:
            # More players than one short query names: what changed in the whole project, read
            # for theirs, is one query a round, unless the project is busier than one page.
            issues = await self._in_thread(self._tracker.updated_in_project, minutes)
        if issues is None:
            issues = []
            for start in range(0, len(ids), NEWS_BATCH):
                batch = ids[start : start + NEWS_BATCH]
                issues += await self._in_thread(self._tracker.updated_for_users, batch, minutes)
        players = set(ids)
        return [(u, i) for i in issues if (u := self._tracker.user_of(i)) in players]

    async def check(self) -> str:
        """One line if Jira answers with these credentials and the project can take our issues;
        otherwise raises with the exact reason."""
        try:
            await self._in_thread(self._tracker.server_info)
        except TrackerError as exc:
            # The first request, which asks for no project nor credentials: a connection nothing
            # answers, or a 404 for Jira's own REST API, is the address that is wrong. A server
            # error or a dropped connection is the service, down a while, that the pusher retries.
            if exc.status == 404 or exc.unreached:
                raise TrackerError(f"{exc}: check jira.url", exc.status, maybe_done=False) from exc
            if exc.dropped or (exc.status is not None and exc.status >= 500):
                raise TrackerError(
                    f"{exc}: Jira did not answer; the bot keeps trying, and files what waits once it does",
                    exc.status,
                    maybe_done=False,
                ) from exc
            raise
        await self._in_thread(self._tracker.myself)  # the credentials, refused here if wrong
        types = await self._in_thread(self._tracker.issue_types)
        project, issue_type = self._settings.project, self._settings.issue_type
        if type_id_named(types, issue_type) is None:
            # The type a create names, found as filing finds it. By its id too: Jira shows the
            # names in the account's language, which may change.
            raise TrackerError(
                f"Jira project {project} has no issue type {issue_type!r}: set jira.issue_type to one of "
                + ", ".join(f"{t.get('name')} ({t.get('id')})" for t in types)
            )
        if permissions := await self._in_thread(self._tracker.lacking_permissions):
            raise TrackerError(permission_reason(project, permissions))
        # Kept by a pusher: asked again, as the account may have been let into the level since.
        if (hidden := await self._store.hidden_issue()) and not await self._in_thread(
            self._tracker.shows, hidden
        ):
            raise TrackerError(hidden_reason(project, hidden))
        lacking, unfillable = await self._in_thread(self._tracker.create_screen_gaps)
        if lacking or unfillable:
            raise TrackerError(create_screen_reason(project, issue_type, lacking, unfillable))
        # Not "0 pending" where the outbox is missing: a storage.dir set wrong, or the database
        # lost with what waited in it. The storage line says what to do, Jira down or not.
        if absent := self._store.absent:
            waiting = f"no outbox: {absent}"
        else:
            waiting = f"{await self._store.count_pending()} pending"
        # Not the account's address: JIRA_EMAIL is masked wherever a secret is (a person's
        # address, kept out of logs), and Jira answers for no other account than that one.
        return await self._store.with_unfiled(
            f"Jira {self._tracker.shown_url}: JIRA_EMAIL and JIRA_API_TOKEN accepted, project {project},"
            f" {waiting}"
        )

    async def aclose(self) -> None:
        """Stops the pusher and closes the store. A push cancelled half-way is safe: its issue, if
        Jira made one, is found by its label before anything is created again.

        A cancel of the caller (a shutdown whose grace ran out) is raised, after the client, the
        threads and the store are closed all the same: nothing else would ever close them."""
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                # asyncio.wait never raises the pusher's own CancelledError, so one raised here
                # is the caller's, and goes on; `await task` would make the two look alike.
                await asyncio.wait({task})
                if not task.cancelled():
                    task.result()  # it ended some other way: say why
        finally:
            # Even when cancelled mid-wait, the pusher is not left using the store: it was
            # cancelled first, and it ends at its next await without touching the store again.
            self._tracker.close()
            # calls still blocked in a thread end by the client's timeout; nobody waits for them
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._push_threads.shutdown(wait=False, cancel_futures=True)
            await self._store.aclose()

    async def _in_thread(self, call: Callable[..., T], *args: object, pushing: bool = False) -> T:
        # Jira answers a request sent before a 429's Retry-After ends with another 429, and a
        # Retry-After as long or longer: whoever asks (a push, a player's lookup, ticket news)
        # meets the answer it gave, and asks nothing, until it ends (up to the longest backoff).
        quiet = self._quiet_until - time.monotonic()
        if quiet > 0 and (said := self._quiet_for) is not None:
            raise TrackerError(str(said), said.status, maybe_done=False, retry_after=quiet, gist=said.gist)
        # Pushes get a thread of their own: status lookups hanging on a slow Jira must not delay
        # a create past the claim that protects it.
        pool = self._push_threads if pushing else self._threads
        until = None if pushing else _lookup_until.get()
        try:
            if until is None:
                return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(call, *args))
            try:
                if (left := until - time.monotonic()) <= 0:
                    raise TimeoutError
                answer = asyncio.get_running_loop().run_in_executor(pool, functools.partial(call, *args))
                # Past the lookup's time the call goes on in its thread until the client's
                # timeout; nobody waits for it.
                return await asyncio.wait_for(answer, left)
            except TimeoutError:
                raise TrackerError(
                    f"Jira at {self._tracker.shown_url} did not answer the lookup within"
                    f" {self._settings.timeout_seconds:g} s",
                    maybe_done=False,
                ) from None
        except TrackerError as exc:
            # A limit on one issue's writes holds back only that grievance (its row's due time).
            if exc.retry_after is not None and exc.limit != PER_ISSUE_LIMIT:
                until = time.monotonic() + self._rate_limited_for(exc.retry_after, warn=False)
                if until > self._quiet_until:
                    self._quiet_until, self._quiet_for = until, exc
            raise

    # ---- the pusher ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start pushing in the background, beginning with what a previous run left pending."""
        if self._task is None:
            self._task = asyncio.create_task(self._pusher(), name="jira-grievance-pusher")
            # A grievance the database refused has no local key to label its issue with until it
            # is filed from the spool: filed each push interval, it goes in the round after.
            await self._store.start(self._settings.push_interval_seconds)

    async def push_pending(self) -> int:
        """Push every pending grievance now, oldest first, and return how many reached Jira.

        Raises TrackerError when Jira as a whole fails (down, timing out, refusing the
        credentials); what was not pushed stays pending. A grievance Jira refuses on its own
        (a 400) keeps its error and stays pending while the others go on.
        """
        total = 0
        # Each way Jira refused grievances this round: the grievances it met, and whether one of
        # them had not met it before (the same refusal on each retry, until someone changes Jira's
        # screen or workflow, is news once).
        refused: dict[str, tuple[list[str], bool]] = {}
        async with self._push_lock:
            if brought := await self._store.bring_back(self._longest_wait()):
                log.warning(
                    "%d grievance(s) waited for Jira further off than any push wait (the clock was"
                    " set back?): tried within %g s",
                    brought,
                    self._longest_wait(),
                )
            try:
                while True:
                    rows = await self._store.pending(PUSH_BATCH)
                    pushed = 0
                    for row in rows:
                        try:
                            if await self._push_one(row) is not None:
                                pushed += 1
                        except TrackerError as exc:
                            if not exc.row_only:
                                raise
                            if exc.limit == PER_ISSUE_LIMIT:
                                # A pause Jira asks of this issue's writes, not a refusal: nothing
                                # for staff to fix, and it passes by itself.
                                log.info(
                                    "grievance %s waits for Jira's write limit on its issue: %s",
                                    row.local_key,
                                    exc,
                                )
                                continue
                            # By its gist: a refused move names its grievance's issue.
                            keys, new = refused.get(exc.gist, ([], False))
                            keys.append(row.local_key)
                            refused[exc.gist] = (keys, new or str(exc)[:MAX_ERROR_CHARS] != row.last_error)
                            log.debug("Jira refused grievance %s: %s (it stays pending)", row.local_key, exc)
                    total += pushed
                    if len(rows) < PUSH_BATCH or pushed == 0:
                        return total
            finally:
                self._say_refusals(refused, total)

    def _say_refusals(self, refused: dict[str, tuple[list[str], bool]], pushed: int) -> None:
        """One line for each way Jira refused grievances in a round, with how many: a field made
        required on the create screen refuses every grievance alike, and a line each would bury
        the log. A refusal said is said again only once Jira took grievances without it, and
        then only for a grievance it had not met before; one the grievances met before this
        process began is said at its first round."""
        for reason, (keys, new) in refused.items():
            if reason in self._refusals_said or (not new and reason in self._refusals_told):
                continue
            remember(self._refusals_said, reason, None, MAX_REFUSALS)
            remember(self._refusals_told, reason, None, MAX_REFUSALS)
            shown = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
            many = f"{len(keys)} grievances" if len(keys) > 1 else "grievance"
            log.warning("Jira refused %s (%s): %s (kept pending, tried again later)", many, shown, reason)
        if pushed:
            self._refusals_said = {r: None for r in self._refusals_said if r in refused}

    async def _push_one(self, row: PendingGrievance) -> str | None:
        """Push one row; None if another pusher holds it (or it can never go to Jira). Every
        failure is recorded on the row with the time it is due again, and re-raised."""
        s = self._settings
        # The claim outlasts a find, a create and Jira's search catching up with that create, so
        # a pusher that dies mid-create (or another process) never creates the issue again.
        token = time.time() + 3 * s.timeout_seconds + s.settle_seconds
        if not await self._store.claim(row.local_key, token):
            return None
        if not USER_ID.match(row.user_id):  # filed before such grievances were kept local
            await self._store.keep_local(row.local_key)
            log.info("grievance %s is not a Discord user's: kept local, not pushed", row.local_key)
            return None
        creating = False
        shown: bool | None = True  # of the issue a create made; None: Jira did not say
        try:
            pushes = await self._in_thread(
                self._tracker.pushes_of_local_key,
                row.local_key,
                row.user_id,
                row.description,
                # A grievance no push took before has made no issue: one of its key label made
                # since it was filed is a lost grievance's, seen through a clock behind Jira's.
                row.created_at if row.tried else "",
                pushing=True,
            )
            found = pushes[0] if pushes else None
            remote_key = found.key if found is not None else None
            if found is not None:
                # Found, not taken from the kept key: a status staff set while the push was cut
                # short is copied below, as ticket news leaves a pending row's issue to its push.
                log.info("grievance %s was already in Jira as %s", row.local_key, remote_key)
            elif (made := await self._store.created_issue(row.local_key)) is not None:
                # A create Jira answered, its push stopped before the grievance was marked pushed,
                # and the search leaves the issue out (hidden from the account, or not indexed
                # yet): filed all the same, and another create would make a second.
                log.info("grievance %s was already in Jira as %s (its push cut short)", row.local_key, made)
                remote_key = made
                shown = await self._shown(made)
            else:
                # The find may have been slow: create only while the row is still ours, and
                # hold it long enough for the create and for Jira to finish it (a push cut off
                # mid-create never learns whether Jira is still making the issue).
                renewed = time.time() + 2 * s.timeout_seconds + self._unanswered_create_seconds()
                if not await self._store.renew(row.local_key, token, renewed):
                    log.warning("claim on grievance %s lapsed before its create: next round", row.local_key)
                    return None
                token = renewed
                creating = True
                remote_key = await self._in_thread(
                    self._tracker.create,
                    row.local_key,
                    row.user_id,
                    row.category,
                    row.description,
                    pushing=True,
                )
                await self._store.note_created(row.local_key, remote_key)
                shown = await self._shown(remote_key)
        except ValueError as exc:  # a value that may not go into JQL or a label
            error = TrackerError(str(exc), row_only=True, maybe_done=False)
            due = time.time() + s.max_backoff_seconds
            await self._store.record_attempt(row.local_key, str(error), due, token)
            raise error from None
        except TrackerError as exc:
            if exc.maybe_done:
                # Jira may have made the issue; its search index lags, so let it show the label
                # before looking again. A create Jira did not answer itself (a timeout, or a 504 or
                # 502: a proxy in front of it gave up) may still be under way there: a search
                # before it ends finds nothing, and the issue comes after.
                unanswered = creating and exc.status in (None, *GATEWAY_GAVE_UP)
                wait = self._unanswered_create_seconds() if unanswered else s.settle_seconds
                if exc.retry_after is not None:  # a 503 at a resource limit
                    wait = max(wait, self._rate_limited_for(exc.retry_after))
                due: float | None = time.time() + wait
            elif exc.row_only:
                # Refused on its own (a 4xx about its content): retried ever more rarely, so it
                # never holds up the grievances behind it.
                due = time.time() + self._refused_backoff(row.attempts)
                if exc.retry_after is not None:  # one issue's write limit
                    due = max(due, time.time() + self._rate_limited_for(exc.retry_after))
            elif exc.retry_after is not None:
                due = time.time() + self._rate_limited_for(exc.retry_after)
            else:
                due = None  # Jira as a whole failed: the pusher's own backoff applies
            await self._store.record_attempt(row.local_key, str(exc), due, token)
            raise
        # An issue Jira hides from the account is not moved (its key is a 404 to it) but counts as
        # filed: kept pending, each round's search by its label, which leaves it out, made another.
        if shown is not False and STATUS_CATEGORIES.get(row.status, "new") != "new":
            try:
                await self._give_status(row, remote_key, token)
            except TrackerError as exc:
                if shown is not None:
                    raise
                # Whether Jira shows the issue it made is unknown: kept pending, a hidden one would
                # be left out of the next round's search by its label, which made another.
                if exc.status == 404:  # the move's own look-up: hidden
                    await self._hidden(remote_key)
                else:
                    log.warning(
                        "grievance %s: in Jira as %s, left at its first status: %s",
                        row.local_key,
                        remote_key,
                        exc,
                    )
        elif found is not None:
            # Made by an earlier create whose answer was lost, maybe long ago (a create Jira did
            # not answer is looked for only after the longest backoff): a change staff made to it
            # meanwhile was left by ticket news to this push's own news, which tells this status.
            await self._store.update_status(row.local_key, found.status, found.updated_at)
        await self._store.mark_pushed(row.local_key, remote_key)
        log.info("grievance %s pushed to Jira as %s", row.local_key, remote_key)
        return remote_key

    async def _shown(self, remote_key: str) -> bool | None:
        """Whether Jira shows the account the issue a create of its own has just made, said once
        in the log, and kept for `check`, when not: an issue security level the account is not in
        hides each one, and every status lookup and ticket news round would otherwise read them
        as deleted, or never changed. None when Jira does not answer."""
        try:
            shown = await self._in_thread(self._tracker.shows, remote_key, pushing=True)
        except TrackerError:
            return None
        if shown:
            if await self._store.hidden_issue() is not None:
                await self._shown_again(remote_key)
            self._hidden_said = False
            return True
        await self._hidden(remote_key)
        return False

    async def _hidden(self, remote_key: str) -> None:
        """Jira hides `remote_key`, an issue a create of its own has just made (_shown)."""
        await self._store.note_hidden(remote_key)
        self._say_hidden(remote_key)

    def _say_hidden(self, remote_key: str) -> None:
        """The one log line for staff while Jira hides what the bot files, however often asked."""
        if not self._hidden_said:
            self._hidden_said = True
            log.error("%s", hidden_reason(self._settings.project, remote_key))

    async def _give_status(self, row: PendingGrievance, remote_key: str, token: float) -> None:
        """Move the issue just made (or found) for `row` to the status staff set on the desk while
        it waited: its player was told that status, and Jira's is the ticket's from now on. Jira's
        words for it (a "closed" is "resolved" there) are kept as the local copy. Raises
        TrackerError when Jira fails or its workflow has no way there; the row stays pending,
        due again once Jira's search shows the issue, so the retry finds it rather than making
        another, and moves it only if it still has to. (A status Jira has no category for, set
        by hand in the database, is left as Jira makes the issue.)"""
        s = self._settings
        try:
            issue = await self._in_thread(self._tracker.move_to, remote_key, row.status, pushing=True)
            if issue is None:
                raise TrackerError(
                    f"{remote_key}'s workflow has no transition to a status like {row.status!r}",
                    row_only=True,
                    maybe_done=False,
                    # Without the issue: every grievance a workflow refuses alike is one line.
                    gist=f"its workflow has no transition to a status like {row.status!r}",
                )
        except TrackerError as exc:
            wait = s.settle_seconds
            if exc.row_only:  # retried ever more rarely, as a create Jira refuses
                wait = max(wait, self._refused_backoff(row.attempts))
            if exc.retry_after is not None:
                wait = max(wait, self._rate_limited_for(exc.retry_after))
            reason = f"in Jira as {remote_key}, but not moved to {row.status!r}: {exc}"
            await self._store.record_attempt(row.local_key, reason, time.time() + wait, token)
            raise TrackerError(
                reason,
                exc.status,
                maybe_done=False,
                row_only=exc.row_only,
                retry_after=exc.retry_after,
                limit=exc.limit,
                gist=f"in Jira, but not moved to {row.status!r}: {exc.gist}",
            ) from None
        await self._store.update_status(row.local_key, issue.status, issue.updated_at)
        log.info(
            "grievance %s: %s moved to %s, as staff set it while it waited",
            row.local_key,
            remote_key,
            issue.status,
        )

    def _longest_wait(self) -> float:
        """Longer than any claim or retry wait a push sets on its row: the claim's timeouts,
        Jira's search lag, and the longest backoff (which caps a refusal's and a Retry-After's)."""
        s = self._settings
        return 3 * s.timeout_seconds + s.settle_seconds + s.max_backoff_seconds

    def _unanswered_create_seconds(self) -> float:
        """How long after a create Jira did not answer its issue may still appear: Jira goes on
        making it after the client gave up, and its search lags behind that. As long as the
        longest backoff (a busy Jira is asked no sooner anyway), and never less than the lag."""
        s = self._settings
        return max(s.settle_seconds, s.max_backoff_seconds)

    def _refused_backoff(self, attempts: int) -> float:
        """How long a grievance Jira refused on its own waits before its next try, after
        `attempts`: doubling from the push interval up to max_backoff_seconds."""
        s = self._settings
        return min(s.max_backoff_seconds, s.push_interval_seconds * 2.0 ** min(attempts, 30))

    def _rate_limited_for(self, retry_after: float, warn: bool = True) -> float:
        """How long a 429 holds pushes (and lookups) back: as long as Jira asks, up to
        max_backoff_seconds. A Retry-After of days (a proxy's, or an HTTP date from a clock far
        off) would otherwise silence every push for days, while asking once per longest backoff
        costs Jira nothing. `warn`: log a wait cut short, as the push's record of it does; the
        hold the same 429 sets on every request, and the pusher's pause, need not say it twice."""
        cap = self._settings.max_backoff_seconds
        if retry_after <= cap or not warn:
            return min(retry_after, cap)
        log.warning(
            "Jira asked for no request within %g s (Retry-After): pushing again in %g s instead",
            retry_after,
            cap,
        )
        return cap

    async def _pusher(self) -> None:
        interval = self._settings.push_interval_seconds
        backoff = 0.0
        while True:
            self._wake.clear()  # a grievance registered from here on wakes the next round
            try:
                pushed = await self.push_pending()
            except Exception as exc:  # never dies: the grievances wait in the store
                cap = self._settings.max_backoff_seconds
                backoff = min(cap, max(interval, backoff * 2))
                # A 429's Retry-After is a floor, since asking sooner only earns another 429, up
                # to the longest backoff (_rate_limited_for; the push's record logged a longer one).
                asked = getattr(exc, "retry_after", None)
                wait = backoff if asked is None else max(backoff, self._rate_limited_for(asked, warn=False))
                pending = await self._pending_count()
                # Told as the soonest row's due time: a round after `wait` pushes none held back
                # longer (Jira's search lag after a 5xx, a refusal's own backoff).
                told = max(wait, await self._due_in())
                if isinstance(exc, TrackerError):
                    self._push_outage.failed(
                        exc.gist,
                        "pushing grievances to Jira failed: %s; %d pending, next try in %.1f s",
                        exc,
                        pending,
                        told,
                        level=exc.level,
                    )
                else:
                    log.exception(
                        "the grievance pusher failed; %d pending, next try in %.1f s", pending, told
                    )
                # new grievances do not cut a backoff short: Jira is the problem, not the queue
                await self._sleep(wait)
                continue
            backoff = 0.0
            # A round with nothing due (rows waiting out Jira's search lag) proves nothing: Jira
            # is back once it took a grievance, or nothing is left pending (another pusher on
            # this database pushed them).
            down = self._push_outage
            if down.failing and (pushed or await self._pending_count() == 0):
                down.answered(down.seconds(), down.failures, pushed)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that lands
            # as the wake does, and the pusher would outlive aclose() (which then never returns).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def _due_in(self) -> float:
        """Seconds until the soonest pending grievance is due (0 when one is, or unknown)."""
        try:
            due = await self._store.next_due()
        except Exception:
            return 0.0
        return 0.0 if due is None else max(0.0, due - time.time())

    async def _pending_count(self) -> int:
        try:
            return await self._store.count_pending()
        except Exception:
            return -1

    # ---- status --------------------------------------------------------------------------------

    async def _one(self, user_id: str, key: str) -> list[Grievance]:
        """Every ticket of the speaker's that `key` names: the one told at filing (by its local
        key) and the Jira issue of that key. Both, when a Jira project numbers like the local
        store: GRV-5 told at filing, and GRV-5 another of theirs in Jira."""
        local = await self._store.status(user_id, key)  # scoped to the speaker
        gone = await self._store.gone(user_id)
        by_remote = {g.remote_key: g for g in local if g.remote_key}
        told = [g for g in local if g.local_key == key]
        found = [g for g in told if g.remote_key is None]  # not in Jira yet: the local record is all
        # The Jira issue of that key (pushed from here, or made by staff), unless it is a key told
        # at filing that Jira's project cannot have; and the Jira issue the told one became.
        maybe_in_jira = not told or key.rsplit("-", 1)[0] == self._settings.project
        lookups = [(key, by_remote.get(key))] if maybe_in_jira else []
        lookups += [(g.remote_key, g) for g in told if g.remote_key not in (None, key)]
        unreachable = False
        for remote_key, row in lookups:
            if row is not None and row.local_key in gone:
                # Worked on the desk now; a listing or the news poll finds its issue if it comes back.
                found.append(dataclasses.replace(row, untracked=True))
                continue
            if not unreachable:  # one lookup that failed is enough to wait for
                try:
                    if row is not None:
                        found.append(await self._follow(row, user_id))
                    elif (issue := await self._issue(remote_key, user_id)) is not None:
                        found.append(await self._merged(issue, await self._row_of(user_id, issue, gone)))
                    self._lookup_outage.answered()
                    continue
                except TrackerError as exc:
                    self._lookup_failed("status lookup", exc)
                    unreachable = True
            if row is not None:
                found.append(dataclasses.replace(row, from_local_record=True))
        if unreachable and not found:
            raise ToolError(say.TICKETS_UNREACHABLE)
        if not found and LOCAL_KEY.match(key):
            # A key heard at filing that no row of theirs holds: a restore from a backup lost the
            # row (and may give the key to another's grievance), while its issue, pushed before,
            # still carries the key's label.
            try:
                issues = await self._in_thread(self._tracker.pushes_for_player, key, user_id)
            except TrackerError as exc:
                self._lookup_failed("status lookup", exc)
                raise ToolError(say.TICKETS_UNREACHABLE) from None
            found = [await self._merged(issue, None) for issue in issues]
        return _once_each(found)

    async def _list(self, user_id: str, limit: int) -> list[Grievance]:
        local = await self._store.status(user_id, limit=limit)
        gone = await self._store.gone(user_id)
        # Each issue with its grievance: by the key it was pushed as, or, for one moved to another
        # key or one Jira made but the store has not yet marked pushed, by its key label.
        unmatched = {g.local_key: g for g in local}
        merged = []
        try:
            for issue in await self._in_thread(self._tracker.list_for_user, user_id, limit):
                row = next((g for g in unmatched.values() if g.remote_key == issue.key), None)
                if row is None:
                    row = await self._row_of(user_id, issue, gone)
                if row is not None:
                    unmatched.pop(row.local_key, None)
                merged.append(await self._merged(issue, row))
        except TrackerError as exc:
            self._lookup_failed("ticket listing", exc)
            return [_from_record(g, gone) for g in local]
        self._lookup_outage.answered()
        # Jira lists neither what is still pending nor what was pushed moments ago (its search
        # index lags), nor an issue deleted or moved out of the project: a pushed one is looked up
        # by its key, unless it would not be shown anyway, below the newest.
        unreachable = False
        for g in unmatched.values():
            if g.local_key in gone:
                merged.append(dataclasses.replace(g, untracked=True))
            elif g.remote_key is None:
                merged.append(g)
            elif unreachable:
                merged.append(dataclasses.replace(g, from_local_record=True))
            elif sum(m.created_at > g.created_at for m in merged) < limit:
                try:
                    merged.append(await self._follow(g, user_id))
                except TrackerError as exc:
                    self._lookup_failed("status lookup", exc)
                    unreachable = True
                    merged.append(dataclasses.replace(g, from_local_record=True))
        merged = _once_each(merged)
        merged.sort(key=lambda g: g.created_at, reverse=True)
        return merged[:limit]

    def _lookup_failed(self, what: str, exc: TrackerError) -> None:
        self._lookup_outage.failed(
            exc.gist, "Jira %s failed, answering from the local record: %s", what, exc, level=exc.level
        )

    async def _issue(self, key: str, user_id: str) -> RemoteIssue | None:
        return await self._in_thread(self._tracker.get_for_user, key, user_id)

    async def _row_of(self, user_id: str, issue: RemoteIssue, gone: set[str]) -> Grievance | None:
        """The speaker's grievance an issue is the push of, by its key label: None for an issue
        made in Jira, or a copy staff made of one of ours (Jira's clone keeps the labels)."""
        local_key = self._tracker.local_key_of(issue)
        if not local_key:
            return None
        row = next(
            (g for g in await self._store.status(user_id, local_key) if g.local_key == local_key), None
        )
        if row is None or row.remote_key == issue.key or local_key in gone:
            return row
        if row.remote_key is None:
            # Waiting for Jira: the issue is its push only if made for it, as the push will find
            # it. A key a restore from a backup gave again also labels the lost grievance's issue.
            return (
                row if self._tracker.may_be_push_of(issue, user_id, row.description, row.created_at) else None
            )
        return row if await self._moved_to(row.remote_key, issue, user_id) else None

    async def _moved_to(self, old_key: str, issue: RemoteIssue, user_id: str) -> bool:
        """Whether `issue`, found by a grievance's key label under another key than `old_key`, is
        that grievance's issue moved, rather than a copy: Jira answers the old key with it, or
        with nothing of the player's in the project any more."""
        old = await self._issue(old_key, user_id)
        return old is None or old.key == issue.key

    async def _follow(self, row: Grievance, user_id: str) -> Grievance:
        """A pushed grievance as Jira has it now, wherever its issue went: by the key it was pushed
        as (Jira answers a moved issue's old key with it), else by its key label in the project.
        Neither found: Jira no longer has it (deleted, or moved out of the project), and its
        status is the local record's, which staff work on the desk. Raises TrackerError when Jira
        fails."""
        assert row.remote_key is not None
        issue = await self._issue(row.remote_key, user_id)
        if issue is None:
            issue = await self._in_thread(self._tracker.issue_of_local_key, row.local_key)
            if issue is not None and self._tracker.user_of(issue) != user_id:
                # Still in Jira, relabelled by staff for more than this player: nobody's to see.
                return dataclasses.replace(row, untracked=True)
        if issue is None and await self._still_hidden():
            # Jira hides what it files from the account (_shown): not found is no sign it is gone.
            return dataclasses.replace(row, from_local_record=True, hidden=True)
        if issue is None:
            if await self._store.mark_gone(row.local_key):
                log.info(
                    "grievance %s: Jira no longer has %s in project %s; it is worked on the desk",
                    row.local_key,
                    row.remote_key,
                    self._settings.project,
                )
            return dataclasses.replace(row, untracked=True)
        return await self._merged(issue, row)

    async def _still_hidden(self) -> bool:
        """Whether Jira still hides the issue a push kept as hidden (_shown): the account may have
        been let into the level since, with no grievance filed to clear it. Raises TrackerError
        when Jira fails."""
        if (hidden := await self._store.hidden_issue()) is None:
            return False
        if not await self._in_thread(self._tracker.shows, hidden):
            self._say_hidden(hidden)  # after a restart, a player's ask is the first to find it
            return True
        await self._shown_again(hidden)
        return False

    async def _shown_again(self, remote_key: str) -> None:
        """Jira shows the account `remote_key`, after hiding the issues it filed: the kept key
        goes, and a level hiding them again is news to the log."""
        await self._store.note_hidden(None)
        self._hidden_said = False
        log.info("Jira shows this account the issues it files again (%s)", remote_key)

    async def follow_issue(self, user_id: str, issue: RemoteIssue) -> tuple[StaffRow | None, bool]:
        """For ticket news: the grievance an updated issue is the push of (by its key, or by its
        key label if it moved), and whether its key changed; a moved or returned issue is
        followed as in a status answer."""
        row = await self._store.row_of_issue(user_id, issue.key, self._tracker.local_key_of(issue))
        if (
            row is not None
            and row.remote_key is None
            and not self._tracker.may_be_push_of(issue, user_id, row.description, row.created_at)
        ):
            # Found by a key label alone, which a restore from a backup gives again: the issue of
            # a grievance the restore lost, its news the player's as for one made in Jira.
            return None, False
        if row is None or row.remote_key is None or row.push_state != "pushed":
            return row, False
        moved = row.remote_key != issue.key
        if moved and row.gone_at is None and not await self._moved_to(row.remote_key, issue, user_id):
            return None, False  # a copy staff made: an issue of its own
        if moved or row.gone_at is not None:
            await self._store.follow(row.local_key, issue.key)
        return row, moved

    async def _merged(self, issue: RemoteIssue, row: Grievance | None) -> Grievance:
        """Jira's status and key with the player's own words and filing time from the store. A
        pushed grievance whose issue moved to another key follows it, and one that seemed gone
        from Jira is tracked there again."""
        if row is not None and row.remote_key is None:
            # Made by a push not finished yet (maybe minutes ago: one whose create went
            # unanswered): a status the desk set while it waited is still the ticket's, as that
            # push gives it to the issue; otherwise Jira's, which that push keeps.
            if STATUS_CATEGORIES.get(row.status, "new") != "new":
                return dataclasses.replace(row, key=issue.key, remote_key=issue.key)
            return dataclasses.replace(
                row, key=issue.key, remote_key=issue.key, status=issue.status, updated_at=issue.updated_at
            )
        if row is not None:
            await self._store.follow(row.local_key, issue.key)
            await self._store.update_status(row.local_key, issue.status, issue.updated_at)
            return dataclasses.replace(
                row, key=issue.key, remote_key=issue.key, status=issue.status, updated_at=issue.updated_at
            )
        return Grievance(
            key=issue.key,
            category=next((x for x in issue.labels if x in CATEGORIES), "other"),
            description=issue.description or issue.summary,
            status=issue.status,
            created_at=issue.created_at,
            updated_at=issue.updated_at,
            local_key=self._tracker.local_key_of(issue),
            remote_key=issue.key,
        )


def create_screen_reason(project: str, issue_type: str, lacking: list[str], unfillable: list[str]) -> str:
    """Why Jira would refuse every filing, for `check`: the create screen's gaps by name."""
    fixes = []
    if lacking:
        fixes.append(f"add {', '.join(lacking)} to it (voxdesk sets them on every issue)")
    if unfillable:
        fixes.append(f"give {', '.join(unfillable)} a default or make it optional (voxdesk cannot fill it)")
    return (
        f"Jira refuses every filing: on the create screen for {issue_type} in project {project}, "
        + "; ".join(fixes)
    )


def _from_record(g: Grievance, gone: set[str]) -> Grievance:
    """A grievance answered from the local record while Jira is unreachable; said so, unless
    Jira no longer has it anyway."""
    if g.local_key in gone:
        return dataclasses.replace(g, untracked=True)
    return dataclasses.replace(g, from_local_record=True)


def _once_each(found: list[Grievance]) -> list[Grievance]:
    """Each ticket once, when two lookups led to the same one (an old key and its new one)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for g in found:
        mark = (g.local_key, g.key)
        if mark not in seen:
            seen.add(mark)
            kept.append(g)
    return kept
