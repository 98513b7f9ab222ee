"""/healthz and /metrics: what an operator's probes and Prometheus scrape; and /favicon.ico, which
browsers ask for."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot import metrics
from bot.tools.grievance_store import seconds_of
from bot.web import security
from bot.web import state as web_state

PROBE_TIMEOUT = 2.0  # seconds per database: a probe must answer well inside a load balancer's timeout
# /healthz needs no login: its backend probes run at most once in this many seconds, however often
# it is asked, and one probe at a time.
PROBE_EVERY_SECONDS = 2.0

log = logging.getLogger(__name__)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/metrics", metrics_page, name="metrics")
    app.router.add_get("/favicon.ico", favicon, name="favicon")


async def favicon(request: web.Request) -> web.Response:
    """Nothing, said plainly: browsers ask for /favicon.ico whatever a page names (the pages name
    /static/favicon.svg), and a 404 a page would be in the console of every first view."""
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


async def _probe(check: Any) -> BaseException | None:
    """None if it answers, else why not."""
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT)
    except Exception as exc:
        return exc
    return None


class NotReady(Exception):
    """A backend that answers, in a state /healthz must not call ready: its `health_code` is
    what /healthz says."""

    health_code = "not_ready"
    # Every subclass's code, however many there are: the end of one is the backend ready again.
    codes: ClassVar[set[str]] = {health_code}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        NotReady.codes.add(cls.health_code)


class Unfiled(NotReady):
    """Grievances the database refused wait in its spool or in memory, their one copy: the
    database answers a read, but a grievance filed now would wait the same way."""

    health_code = "unfiled"


class SpoolUnreadable(NotReady):
    """The grievance spool cannot be read: what it holds is not known, and may be lost."""

    health_code = "spool_unreadable"


def _reason_code(name: str, failure: BaseException | None, last: dict[str, str | None]) -> str | None:
    """What /healthz, which needs no login, may say: the exception's type, never its text (hosts,
    driver messages). The text is logged once, when the backend's state changes; `check` and the
    desk show it in full."""
    code = None if failure is None else getattr(failure, "health_code", type(failure).__name__)
    was = last.get(name)
    if code != was:
        said = f"{code}: {failure}"[:300]
        if isinstance(failure, NotReady):
            log.warning("healthz: %s answers but is not ready: %s", name, said)
        elif failure is not None:
            log.warning("healthz: %s does not answer: %s", name, said)
        elif was in NotReady.codes:
            log.info("healthz: %s is ready again", name)
        else:
            log.info("healthz: %s answers again", name)
        last[name] = code
    return code


async def healthz(request: web.Request) -> web.Response:
    """Liveness is answering at all (`?live` stops there); readiness is every database answering,
    the engine built, and Discord connected when this process runs the bot. 503 when not ready."""
    if "live" in request.query:
        return web.json_response({"live": True})
    st = web_state(request)
    core = st.core
    started = time.perf_counter()
    checks = dict(await _backends(st))
    checks["engine"] = {"ok": bool(getattr(core.engine, "ready", True)), "name": core.engine.name}
    # The engine may say ready while every note waits behind turns that never end (a hung tool
    # backend, a worker that stopped answering).
    checks["turns"] = {"ok": not core.agent.load().stuck(st.settings.agent.stuck_turn_seconds)}
    if st.discord_ready is not None:
        connected = bool(st.discord_ready())
        checks["discord"] = {"ok": connected}
    ready = all(c["ok"] for c in checks.values())
    body = {
        "live": True,
        "ready": ready,
        "checks": checks,
        "ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return web.json_response(body, status=200 if ready else 503, headers={"Cache-Control": "no-store"})


async def _backends(st: Any) -> dict[str, dict[str, Any]]:
    async def probe() -> dict[str, dict[str, Any]]:
        names = ("stats", "manuals", "grievances")
        # The grievances' own database, never Jira: the outbox keeps every complaint while Jira is
        # down, and a probe every few seconds would spend Jira's rate limit (several calls a check).
        # A backend's `probe`, where its `check` costs more than a probe should (a billed query).
        manuals = getattr(st.core.manuals, "probe", st.core.manuals.check)
        checks = (st.core.stats.check, manuals, lambda: _grievances_kept(st.core.grievances.local_store))
        failures = await asyncio.gather(*(_probe(check) for check in checks))
        codes = [_reason_code(n, failure, st.probed) for n, failure in zip(names, failures, strict=True)]
        return {
            n: {"ok": code is None, **({"error": code} if code else {})}
            for n, code in zip(names, codes, strict=True)
        }

    checks, _ = await st.probes.get(probe, PROBE_EVERY_SECONDS)
    return checks  # type: ignore[no-any-return]


async def _grievances_kept(store: Any) -> None:
    await store.count()  # the database answers; not check(), which reads the spool as well
    unfiled = await store.count_unfiled()  # reads the spool, once a probe
    if store.spool_unreadable:
        raise SpoolUnreadable("the grievance spool cannot be read")
    if unfiled:
        raise Unfiled(f"{unfiled} grievance(s) the database refused wait in its spool or in memory")


async def _grievance_gauges(store: Any) -> None:
    # -1: the database did not answer, visible in the graph rather than a failed scrape.
    try:
        depth = await store.count_pending()
        oldest = await store.oldest_pending()
        age = 0.0 if oldest is None else max(0.0, time.time() - seconds_of(oldest))
    except Exception:
        depth, age = -1, -1.0
    metrics.OUTBOX_DEPTH.set(depth)
    metrics.OUTBOX_OLDEST_SECONDS.set(age)
    metrics.UNFILED.set(await store.count_unfiled())


async def metrics_page(request: web.Request) -> web.Response:
    st = web_state(request)
    # Cost and counts are the studio's business: this machine, or whoever holds the token.
    if not security.metrics_allowed(request, st.settings.secrets.web_metrics_token):
        raise web.HTTPForbidden(
            text="/metrics is served to this machine (asked for by address, localhost or its own"
            " name, through no proxy), or with the metrics token."
        )
    await _grievance_gauges(st.core.grievances.local_store)
    load = st.core.agent.load()
    metrics.TURN_SLOTS.set(load.slots)
    metrics.TURNS_IN_PROGRESS.set(load.turning)
    if st.discord_connected is not None:
        metrics.DISCORD_CONNECTED.set(1 if st.discord_connected() else 0)
    page = metrics.render(discord=st.discord_ready is not None)
    return web.Response(body=page, headers={"Content-Type": CONTENT_TYPE_LATEST})
