"""Shared pieces of the web front end's tests: a core with the instant front-end engine, the web
app over it behind aiohttp's test client, and a staff login."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
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


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """A served page's elements, in order, as an assistive technology walks them: each with its
    tag, attributes and all the text inside it."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[dict[str, str]] = []
        self._open: list[dict[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {k: v or "" for k, v in attrs} | {"<tag>": tag, "<text>": ""}
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()["<tag>"] != tag:
            pass

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["<text>"] += data

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            e for e in self.elements if e["<tag>"] == tag and all(e.get(k) == v for k, v in attrs.items())
        ]

    def one(self, tag: str, **attrs: str) -> dict[str, str]:
        found = self.all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, found)
        return found[0]

    def text_of(self, element_id: str) -> str:
        return " ".join(next(e for e in self.elements if e.get("id") == element_id)["<text>"].split())
