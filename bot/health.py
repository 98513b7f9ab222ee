"""`python -m bot check`: try each configured service once and say, in one line each, whether it
answers or exactly why not.

Each backend is built and checked on its own, so one service being down never hides the state of
the others (building the whole app would stop at the first failure).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import Settings

if TYPE_CHECKING:
    from bot.app import App

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 30.0  # seconds per service: longer than any client's own timeout and retries


@dataclass(frozen=True)
class CheckResult:
    service: str
    backend: str
    ok: bool
    detail: str

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark}  {self.service:<10} {self.backend:<8} {self.detail}"


async def _check_backend(build: Callable[[], Awaitable[object]]) -> str:
    backend = await build()
    try:
        return await backend.check()  # type: ignore[attr-defined,no-any-return]
    finally:
        await backend.aclose()  # type: ignore[attr-defined]


async def check_engine(settings: Settings, live: App | None = None) -> str:
    if live is not None:
        if live.engine.name == "offline":
            from bot.engines.offline.engine import OfflineEngine, check_live_offline_engine

            assert isinstance(live.engine, OfflineEngine)
            return await check_live_offline_engine(settings, live.engine)
        return await live.engine.check()
    if settings.agent.engine == "openai":
        from bot.engines.openai import create_openai_engine

        engine = await create_openai_engine(settings, verify=False)
        try:
            return await engine.check()
        finally:
            await engine.aclose()
    from bot.engines.offline.engine import check_offline_engine

    return await check_offline_engine(settings)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


async def _one(service: str, backend: str, run: Callable[[], Awaitable[str]]) -> CheckResult:
    try:
        detail = await asyncio.wait_for(run(), CHECK_TIMEOUT)
    except TimeoutError:
        return CheckResult(service, backend, False, f"no answer within {CHECK_TIMEOUT:.0f} s")
    except Exception as exc:
        log.debug("check of %s failed", service, exc_info=True)
        return CheckResult(service, backend, False, _reason(exc))
    return CheckResult(service, backend, True, detail)


async def check_all(settings: Settings, live: App | None = None) -> list[CheckResult]:
    """One result per service: the engine and the three tool backends, checked concurrently.
    `live`: the running bot's own clients (the desk), rather than a fresh set built and closed."""
    from bot import app

    def backend(name: str, build: Callable[[Settings], Awaitable[object]]) -> Callable[[], Awaitable[str]]:
        if live is not None:
            return getattr(live, name).check  # type: ignore[no-any-return]
        return lambda: _check_backend(lambda: build(settings))

    t = settings.tools
    return list(
        await asyncio.gather(
            _one("engine", settings.agent.engine, lambda: check_engine(settings, live)),
            _one("stats", t.stats, backend("stats", app.build_stats_backend)),
            _one("manuals", t.manuals, backend("manuals", app.build_manuals_backend)),
            _one("grievances", t.grievances, backend("grievances", app.build_grievance_backend)),
        )
    )
