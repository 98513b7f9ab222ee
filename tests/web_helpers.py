"""Shared pieces of the web front end's tests: a core with the instant front-end engine, the web
app over it behind aiohttp's test client, and a staff login."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from bot.app import App, build_app
from bot.config import Settings
from bot.web import build_web
from bot.web.security import hash_password

from .conftest import make_settings

STAFF_PASSWORD = "correct horse battery staple"
STAFF_HASH = hash_password(STAFF_PASSWORD)
CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


def web_settings(storage: Path, **env: str) -> Settings:
    return make_settings(storage, VOXDESK_WEB_STAFF_PASSWORD_HASH=STAFF_HASH, **env)


@contextlib.asynccontextmanager
async def web_client(
    settings: Settings,
    engine: object | None = None,
    discord_ready: Callable[[], bool] | None = None,
    core: App | None = None,
) -> AsyncIterator[tuple[TestClient, App]]:
    from tests.frontend_engine import FrontendEngine

    own = core is None
    if core is None:
        core = await build_app(settings, engine or FrontendEngine())  # type: ignore[arg-type]
    try:
        client = TestClient(TestServer(await build_web(core, discord_ready)))
        await client.start_server()
        try:
            yield client, core
        finally:
            await client.close()
    finally:
        if own:
            await core.aclose()


async def csrf_of(client: TestClient, path: str = "/") -> str:
    page = await client.get(path)
    found = CSRF.search(await page.text())
    assert found, f"no CSRF token on {path}"
    return found.group(1)


async def log_in(client: TestClient, password: str = STAFF_PASSWORD) -> int:
    token = await csrf_of(client, "/desk/login")
    done = await client.post("/desk/login", data={"csrf": token, "password": password}, allow_redirects=False)
    return done.status
