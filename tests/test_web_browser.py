"""The web front end in a real headless Chromium (Debian's `chromium`) through Playwright.

One browser for the module, started with a fake microphone that plays a spoken question. With
VOXDESK_SCREENSHOTS=1 each page is saved into docs/ (docs/web-*.png)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from bot import paths
from bot.app import App, build_app
from bot.audio import decode, pcm_to_wav
from bot.tools.base import ToolContext
from bot.web import bound_port, start

from .conftest import NOVA, REPO
from .web_helpers import STAFF_PASSWORD, web_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("VOXDESK_SCREENSHOTS") == "1"
QUESTION = paths.SAMPLES / "2-how-many-points.ogg"
LEAD_IN, TAIL = 0.5, 1.5  # seconds of silence around the question in the fake microphone's file

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def spoken_question(folder: Path) -> tuple[Path, float]:
    """The sample question as 48 kHz mono WAV (what Chromium's fake capture reads), padded with
    silence so a recording that starts a moment late still has all of it."""
    from bot.config import AudioSettings

    pcm = np.frombuffer(
        decode(QUESTION.read_bytes(), AudioSettings(), rate=48_000).segment.raw_data, np.int16
    )
    pad = lambda seconds: np.zeros(int(seconds * 48_000), np.int16)  # noqa: E731
    samples = np.concatenate([pad(LEAD_IN), pcm, pad(TAIL)])
    path = folder / "question.wav"
    path.write_bytes(pcm_to_wav(samples.tobytes(), 48_000))
    return path, len(samples) / 48_000


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[object, float]]:
    from playwright.async_api import async_playwright

    wav, seconds = spoken_question(tmp_path_factory.mktemp("mic"))
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield chromium, seconds
        finally:
            await chromium.close()


@contextlib.asynccontextmanager
async def serving(core: App) -> AsyncIterator[str]:
    """`core`'s web front end on a port the OS chooses, as its base address; stopped, and `core`
    closed, after."""
    runner = await start(core, port=0)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()
        await core.aclose()


async def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if SCREENSHOTS:
        await page.screenshot(path=str(REPO / "docs" / f"web-{name}.png"), full_page=True)


async def test_a_spoken_question_from_the_microphone_is_answered_aloud(browser, settings) -> None:
    chromium, seconds = browser
    core = await build_app(web_settings(settings.storage_dir))  # the real offline engine
    async with serving(core) as base:
        page = await chromium.new_page(viewport={"width": 1100, "height": 900})
        await page.goto(base + "/")
        await page.select_option("#player", NOVA)
        focused = "document.activeElement.id || document.activeElement.tagName"
        await page.click("#record")
        await page.wait_for_selector("body[data-state=recording]")
        assert await page.evaluate(focused) == "stop"  # not lost with the Record button disabled
        await page.wait_for_timeout(int(seconds * 1000) + 300)
        await page.click("#stop")
        assert await page.evaluate(focused) == "record"
        await page.wait_for_selector("body[data-state=answered]", timeout=30_000)
        await page.wait_for_selector("body[data-played=yes]", timeout=30_000)  # the reply is playing
        assert await page.evaluate(focused) == "result"  # the reply, read next
        assert await page.get_attribute("#answer", "aria-live") == "polite"
        # Served in ranges, the reply has a length the audio control can show and seek in.
        assert await page.evaluate("Number.isFinite(document.getElementById('reply').duration)")
        assert await page.inner_text("#tools") == "get_player_stats {}"
        assert "708 points" in await page.inner_text("#answer")
        assert "points" in await page.inner_text("#heard")
        assert "decode" in await page.inner_text("#timings")
        await page.evaluate("document.getElementById('reply').pause()")
        await shot(page, "playground")
        # A note refused after that one: its error stands alone, not beside the earlier reply.
        pdf = {"name": "note.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n" + bytes(2000)}
        await page.set_input_files("#upload", files=[pdf])
        await page.wait_for_selector("body[data-state=error]", timeout=30_000)
        assert "looks like a PDF" in await page.inner_text("#status")
        assert await page.locator("#result").is_hidden()


async def test_staff_resolve_a_ticket_and_the_player_sees_it(browser, settings) -> None:
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    for _ in range(3):  # some usage for the charts
        await core.agent.respond(ToolContext(user_id=NOVA, platform="web"), QUESTION.read_bytes())
    await core.grievances.register(NOVA, "wallet", 'My wallet shows <b>0</b> after "top-up"')
    async with serving(core) as base:
        player = await chromium.new_page(viewport={"width": 1100, "height": 900})
        await player.goto(base + "/")
        await player.select_option("#player", NOVA)
        await player.click("#refresh-tickets")
        row = player.locator("#tickets tr[data-key='GRV-10'] td:nth-child(3)")
        assert await row.inner_text() == "in progress"

        staff = await (await chromium.new_context(viewport={"width": 1100, "height": 800})).new_page()
        await staff.goto(base + "/desk")
        assert staff.url.endswith("/desk/login")
        await shot(staff, "login")
        await staff.fill("input[name=password]", STAFF_PASSWORD)
        await staff.click("button[type=submit]")
        await staff.wait_for_url(base + "/desk")
        assert "<b>0</b>" in await staff.inner_text("table")  # shown as text, not markup
        await shot(staff, "desk")
        await staff.click("text=GRV-10")
        await staff.select_option("#new-status", "resolved")
        await staff.click("#set-status")
        await staff.wait_for_selector("#ticket-status:text('resolved')")
        await staff.fill("textarea[name=body]", "Refunded the 20 dollars; told the player.")
        await staff.click("text=Add note")
        await staff.wait_for_selector("text=Refunded the 20 dollars")
        await shot(staff, "ticket")
        await staff.goto(base + "/desk/charts")
        assert await staff.locator("svg.chart rect").count() >= 2
        await shot(staff, "charts")
        await staff.goto(base + "/desk/check")
        assert await staff.locator("tr.fail").count() == 0
        assert await staff.locator("tr.ok").count() >= 4  # engine, stats, manuals, grievances, and more
        await shot(staff, "check")
        await staff.click("#check-again")  # a form with the page's token, back to the page checked
        await staff.wait_for_url(base + "/desk/check")
        assert await staff.locator("tr.ok").count() >= 4

        await player.click("#refresh-tickets")
        await player.wait_for_selector("#tickets tr[data-key='GRV-10'] td:text('resolved')")
        await shot(player, "player-tickets")


async def test_long_words_and_right_to_left_text_keep_the_pages_readable(browser, settings) -> None:
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    unbroken = await core.grievances.register(NOVA, "other", "refund" * 900)  # 5,400 characters, no space
    arabic = await core.grievances.register(NOVA, "wallet", "محفظتي فارغة بعد الشحن")
    async with serving(core) as base:
        staff = await (await chromium.new_context(viewport={"width": 1100, "height": 800})).new_page()
        await staff.goto(base + "/desk/login")
        await staff.fill("input[name=password]", STAFF_PASSWORD)
        await staff.click("button[type=submit]")
        await staff.wait_for_url(base + "/desk")
        page_width = "document.documentElement.scrollWidth"
        assert await staff.evaluate(page_width) <= 1100
        cell = staff.locator(f"tr:has(a:text-is('{unbroken.key}')) td.desc")
        assert await cell.evaluate("td => td.scrollWidth <= td.clientWidth")  # nothing cut off
        table = staff.locator("table.grid")
        assert await table.evaluate("t => t.scrollWidth <= t.clientWidth")
        # ... while keys, player ids, categories, statuses and times stay on one line each.
        for short in (
            "td:nth-child(1) a",
            "td:nth-child(2) code",
            "td:nth-child(3)",
            ".status",
            "td:nth-child(5)",
        ):
            lines = await staff.locator(f"tbody {short}").evaluate_all(
                "found => found.map((e) => e.getClientRects().length)"
            )
            assert lines and set(lines) == {1}, (short, lines)
        rtl = staff.locator(f"tr:has(a:text-is('{arabic.key}')) td.desc")
        assert await rtl.evaluate("td => getComputedStyle(td).direction") == "rtl"

        await staff.goto(f"{base}/desk/ticket/{unbroken.key}")
        assert await staff.evaluate(page_width) <= 1100
        # The form's fields have names of their own, not a placeholder's.
        assert await staff.get_by_label("New status").count() == 1
        assert await staff.get_by_label("A note for other staff (the player never sees it)").count() == 1
        await staff.goto(f"{base}/desk/ticket/{arabic.key}")
        assert await staff.locator("#description").evaluate("q => getComputedStyle(q).direction") == "rtl"


# Streams the page opened are kept where the test can see whether they were stopped.
KEEP_STREAMS = """
window.streams = [];
if (navigator.mediaDevices) {
  const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => { const s = await open(c); streams.push(s); return s; };
}
"""
ALL_STOPPED = "streams.every((s) => s.getTracks().every((t) => t.readyState === 'ended'))"


@pytest.mark.parametrize(
    "browser_lacks",
    [
        "delete window.MediaRecorder;",
        "window.MediaRecorder = class { constructor() { throw new TypeError('no codec'); } };",
        # plain http off localhost: no secure context, so no mediaDevices
        "Object.defineProperty(Navigator.prototype, 'mediaDevices', { get: () => undefined });",
    ],
)
async def test_a_browser_that_cannot_record_says_so_and_lets_go_of_the_microphone(
    browser, settings, browser_lacks: str
) -> None:
    from playwright.async_api import expect

    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    async with serving(core) as base:
        context = await chromium.new_context()
        await context.add_init_script(KEEP_STREAMS + browser_lacks)
        page = await context.new_page()
        await page.goto(base + "/")
        await page.click("#record")
        await page.wait_for_selector("#status:text('cannot record here')", timeout=30_000)
        assert await page.inner_text("#status") == "This browser cannot record here; upload a file instead."
        # Said of the upload field it points to, and of the button that could not record.
        upload = page.get_by_label("Upload a voice note")
        assert await upload.get_attribute("aria-invalid") == "true"
        await expect(upload).to_have_accessible_description(
            "This browser cannot record here; upload a file instead."
        )
        await expect(page.locator("#record")).to_have_accessible_description(
            "This browser cannot record here; upload a file instead."
        )
        assert await page.evaluate(ALL_STOPPED)
        assert await page.is_enabled("#record") and await page.is_disabled("#stop")
        await context.close()


async def test_a_refused_note_is_tied_to_the_upload_field_until_the_next_is_answered(
    browser, settings
) -> None:
    # The status line announces the refusal once; a screen reader that comes back to the upload
    # field (to try another file) then hears it is invalid, and why, from the field itself.
    from playwright.async_api import expect

    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    async with serving(core) as base:
        page = await (await chromium.new_context()).new_page()
        await page.goto(base + "/")
        upload = page.get_by_label("Upload a voice note")
        await expect(upload).not_to_have_attribute("aria-invalid", "true")
        await expect(upload).to_have_accessible_description("")
        pdf = {"name": "note.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n" + bytes(2000)}
        await upload.set_input_files(files=[pdf])
        await page.wait_for_selector("body[data-state=error]", timeout=30_000)
        refusal = await page.inner_text("#status")
        assert "looks like a PDF" in refusal
        await expect(upload).to_have_attribute("aria-invalid", "true")
        await expect(upload).to_have_accessible_description(refusal)
        # A note answered: the field is no longer said to be wrong.
        note = {"name": "note.ogg", "mimeType": "audio/ogg", "buffer": QUESTION.read_bytes()}
        await upload.set_input_files(files=[note])
        await page.wait_for_selector("body[data-state=answered]", timeout=30_000)
        await expect(upload).not_to_have_attribute("aria-invalid", "true")
        await expect(upload).to_have_accessible_description("")
        # Showing tickets says something else in the status line: no note error to tie then.
        await page.route("**/playground/ask", lambda route: route.abort())
        await upload.set_input_files(files=[note])
        await page.wait_for_selector("#status:text('Could not reach voxdesk')")
        await expect(upload).to_have_attribute("aria-invalid", "true")
        await page.click("#refresh-tickets")
        await page.wait_for_selector("#status:text('tickets')")
        await expect(upload).not_to_have_attribute("aria-invalid", "true")
        await expect(upload).to_have_accessible_description("")


# What sticks out past the window's right edge: the page then scrolls sideways on a phone, and the
# staff links that spill out of the dark header are light text on the light page.
STICKING_OUT = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > width + 1 && !e.closest(".scroll"))
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : ""));
}"""


async def test_every_page_fits_a_phone_without_scrolling_sideways(browser, settings) -> None:
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    await core.agent.respond(ToolContext(user_id=NOVA, platform="web"), QUESTION.read_bytes())
    grievance = await core.grievances.register(NOVA, "wallet", "My wallet shows 0 after a top-up")
    async with serving(core) as base:
        # 320 CSS pixels: WCAG 2.2's reflow width (1.4.10), a small phone held upright.
        phone = await (await chromium.new_context(viewport={"width": 320, "height": 640})).new_page()
        await phone.goto(base + "/")
        await phone.select_option("#player", NOVA)
        await phone.click("#refresh-tickets")
        await phone.wait_for_selector("#tickets tr[data-key]")
        assert await phone.evaluate(STICKING_OUT) == [], "/"
        await phone.goto(base + "/desk/login")
        await phone.fill("input[name=password]", STAFF_PASSWORD)
        await phone.click("button[type=submit]")
        await phone.wait_for_url(base + "/desk")
        for path in ("/desk", f"/desk/ticket/{grievance.key}", "/desk/charts", "/desk/check"):
            await phone.goto(base + path)
            assert await phone.evaluate(STICKING_OUT) == [], path
            # A wide table scrolls in its own box, which a keyboard can reach to scroll.
            for box in await phone.locator(".scroll").all():
                assert await box.get_attribute("tabindex") == "0", path
                assert await box.get_attribute("role") == "region", path
                assert await box.get_attribute("aria-labelledby"), path


async def test_controls_and_headings_are_named_by_their_words_alone(browser, settings) -> None:
    # A screen reader says "black circle Record" for "● Record", and reads a button inside a
    # heading as part of the heading's name.
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    grievance = await core.grievances.register(NOVA, "wallet", "My wallet shows 0 after a top-up")
    async with serving(core) as base:
        page = await (await chromium.new_context()).new_page()
        await page.goto(base + "/")
        for name in ("Record", "Stop and send", "Show this player's tickets"):
            assert await page.get_by_role("button", name=name, exact=True).count() == 1, name
        assert await page.get_by_role("heading", name="Tickets", exact=True).count() == 1
        await page.goto(base + "/desk/login")
        await page.fill("input[name=password]", STAFF_PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(base + "/desk")
        await page.goto(f"{base}/desk/ticket/{grievance.key}")
        assert await page.get_by_role("link", name="All grievances", exact=True).count() == 1
        await page.goto(base + "/desk/check")
        assert await page.get_by_role("heading", name="Services", level=1, exact=True).count() == 1
        assert await page.get_by_role("button", name="check again", exact=True).count() == 1


async def test_showing_tickets_is_said_aloud_and_a_failure_leaves_no_other_players_list(
    browser, settings
) -> None:
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    async with serving(core) as base:
        page = await (await chromium.new_context()).new_page()
        await page.goto(base + "/")
        await page.select_option("#player", NOVA)
        await page.click("#refresh-tickets")
        await page.wait_for_selector("#tickets tr[data-key]")
        shown = await page.locator("#tickets tr[data-key]").count()
        # The list appears silently; the status line is what a screen reader hears.
        assert await page.inner_text("#status") == f"Nova has {shown} ticket{'s' if shown != 1 else ''}."
        assert await page.inner_text("#tickets caption") == "Tickets of Nova"
        # Keys as they are: a browser's translation would make "GRV-10" a key that names nothing.
        keys = page.locator("#tickets tr[data-key] td:first-child")
        assert set(await keys.evaluate_all("cells => cells.map((c) => c.getAttribute('translate'))")) == {
            "no"
        }
        # Another player chosen: Nova's list is not left standing under that player's name.
        await page.select_option("#player", index=1)
        assert await page.locator("#tickets").is_hidden()
        await page.select_option("#player", NOVA)
        # Another player's tickets asked for while voxdesk cannot be reached: said, and Nova's go.
        await page.route("**/playground/tickets*", lambda route: route.abort())
        await page.select_option("#player", index=1)
        await page.click("#refresh-tickets")
        await page.wait_for_selector("#status:text('Could not reach voxdesk')")
        assert await page.locator("#tickets").is_hidden()


async def test_a_players_tickets_that_come_after_another_player_was_chosen_are_not_shown(
    browser, settings
) -> None:
    # Nova's list asked for, then another player chosen before it came: it came all the same,
    # under "Speak as" set to the other player, saying it was Nova's in a caption no one sees.
    import asyncio

    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    async with serving(core) as base:
        page = await (await chromium.new_context()).new_page()
        await page.goto(base + "/")
        await page.select_option("#player", NOVA)
        release = asyncio.Event()

        async def held(route) -> None:
            await release.wait()
            await route.continue_()

        await page.route("**/playground/tickets*", held)
        async with page.expect_response("**/playground/tickets*"):
            await page.click("#refresh-tickets")
            await page.select_option("#player", index=1)
            release.set()
        # The answer's body read and handled: a turn of the page's event loop or two.
        await page.evaluate("() => new Promise((done) => setTimeout(done, 300))")
        assert await page.locator("#tickets").is_hidden()
        assert "Nova has" not in await page.inner_text("#status")


async def test_a_keyboard_skips_the_header_to_the_page_in_one_key(browser, settings) -> None:
    # Staff tab past six header links and buttons on every desk page otherwise (WCAG 2.4.1).
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    async with serving(core) as base:
        page = await (await chromium.new_context()).new_page()
        await page.goto(base + "/desk/login")
        await page.fill("input[name=password]", STAFF_PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(base + "/desk")
        skip = page.get_by_role("link", name="Skip to the page", exact=True)
        assert not await skip.evaluate("a => a.getBoundingClientRect().bottom > 0")  # out of sight
        await page.keyboard.press("Tab")
        assert await skip.evaluate("a => a === document.activeElement")
        assert await skip.evaluate("a => a.getBoundingClientRect().bottom > 0")  # seen once focused
        await page.keyboard.press("Enter")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.name") == "status"  # the first filter


async def test_the_playground_says_it_needs_javascript_where_it_is_off(browser, settings) -> None:
    # Everything on it is the script's: without it, "Ready." beside buttons that did nothing.
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    async with serving(core) as base:
        off = await (await chromium.new_context(java_script_enabled=False)).new_page()
        await off.goto(base + "/")
        assert "needs JavaScript" in await off.inner_text("#status")
        for control in ("#record", "#upload", "#refresh-tickets"):
            assert await off.is_disabled(control), control
        on = await (await chromium.new_context()).new_page()
        await on.goto(base + "/")
        await on.wait_for_selector("#status:text('Ready.')")
        for control in ("#record", "#upload", "#refresh-tickets"):
            assert await on.is_enabled(control), control
        assert await on.is_disabled("#stop")


# Every control of a page, and what a screen reader would call it: a label of its own (for= or
# around it), aria-label(ledby), or a button's words. Hidden fields are no control.
UNNAMED_CONTROLS = """() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((e) => e.type !== "hidden")
  .filter((e) => !(
    (e.labels && [...e.labels].some((l) => l.textContent.trim()))
    || (e.getAttribute("aria-label") || "").trim()
    || e.getAttribute("aria-labelledby")
    || (e.tagName === "BUTTON" && e.textContent.trim())
  ))
  .map((e) => e.outerHTML.slice(0, 120))"""
TABLES_WITHOUT_HEADERS = """() => [...document.querySelectorAll("table")]
  .filter((t) => !t.querySelector("thead th") || !t.querySelector("caption"))
  .map((t) => t.id || t.className)"""


async def test_every_page_has_a_language_a_title_named_controls_and_headed_tables(browser, settings) -> None:
    # What a screen reader needs of each page before anything else (WCAG 3.1.1, 2.4.2, 4.1.2,
    # 1.3.1): the refusal pages too, which are not the pages a change is tested on.
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    grievance = await core.grievances.register(NOVA, "wallet", "My wallet shows 0 after a top-up")
    async with serving(core) as base:
        page = await (await chromium.new_context()).new_page()
        # Nothing a page asks for by itself (its icon: /favicon.ico or the one it names) fails.
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.on("console", lambda m: failed.append(m.text) if m.type == "error" else None)
        paths = ["/", "/desk/login"]
        for path in paths:
            await page.goto(base + path)
            await check_page_basics(page, path)
        await page.fill("input[name=password]", STAFF_PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(base + "/desk")
        for path in (
            "/desk",
            f"/desk/ticket/{grievance.key}",
            "/desk/charts",
            "/desk/check",
        ):
            await page.goto(base + path)
            await check_page_basics(page, path)
        assert failed == []
        for path in ("/desk/ticket/GRV-99999", "/desk?status=bogus"):  # refusals: 404, 400
            await page.goto(base + path)
            await check_page_basics(page, path)


async def check_page_basics(page, path: str) -> None:  # type: ignore[no-untyped-def]
    assert await page.evaluate("document.documentElement.lang") == "en", path
    assert (await page.title()).strip(), path
    assert await page.evaluate(UNNAMED_CONTROLS) == [], path
    assert await page.evaluate(TABLES_WITHOUT_HEADERS) == [], path


# The focused element's outline as the browser draws it: "none" or no width is no focus seen.
FOCUS_SHOWN = """() => {
  const e = document.activeElement;
  const s = getComputedStyle(e);
  return [e.id || e.name || e.textContent.trim().slice(0, 30),
          e.matches(":focus-visible") && s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0];
}"""


async def tab_to(page, selector: str, seen: list[tuple[str, bool]]) -> None:  # type: ignore[no-untyped-def]
    """Tab until the element `selector` finds has the focus, each stop's outline noted in `seen`."""
    for _ in range(60):
        await page.keyboard.press("Tab")
        seen.append(tuple(await page.evaluate(FOCUS_SHOWN)))
        if await page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"never reached {selector}: {seen}")


async def test_a_keyboard_alone_moves_a_ticket_and_notes_it_the_focus_always_in_sight(
    browser, settings
) -> None:
    # Staff who work without a mouse log in, set a status and add a note by Tab, letters and
    # Enter or Space alone, seeing at each stop where the focus is (WCAG 2.1.1, 2.4.7): the style
    # sheet draws no outline of its own, and one rule taking the browser's away would hide it.
    from tests.frontend_engine import FrontendEngine

    chromium, _ = browser
    core = await build_app(web_settings(settings.storage_dir), FrontendEngine())
    grievance = await core.grievances.register(NOVA, "wallet", "My wallet shows 0 after a top-up")
    async with serving(core) as base:
        page = await (await chromium.new_context()).new_page()
        await page.goto(f"{base}/desk/ticket/{grievance.key}")
        assert "/desk/login?next=" in page.url
        # The password field takes the focus on load (autofocus), once the page is parsed.
        await page.wait_for_function("document.activeElement.name === 'password'")
        await page.keyboard.type(STAFF_PASSWORD)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/desk/ticket/{grievance.key}")
        seen: list[tuple[str, bool]] = []
        await tab_to(page, "#new-status", seen)
        await page.keyboard.type("r")  # the first status starting with r: resolved
        await tab_to(page, "#set-status", seen)
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#ticket-status:text('resolved')")
        await tab_to(page, "#note-body", seen)
        await page.keyboard.type("Refunded by keyboard alone.")
        await tab_to(page, "form[action$='/note'] button", seen)
        await page.keyboard.press(" ")
        await page.wait_for_selector("text=Refunded by keyboard alone.")
        assert [name for name, shown in seen if not shown] == [], seen
        store = core.grievances.local_store
        assert [n.body for n in await store.staff_notes(grievance.key)] == ["Refunded by keyboard alone."]
        # From the list (its filters, its table's scrolling box) to a ticket, as surely in sight.
        await page.goto(f"{base}/desk")
        await tab_to(page, f"a[href='/desk/ticket/{grievance.key}']", seen)
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{base}/desk/ticket/{grievance.key}")
        assert [name for name, shown in seen if not shown] == [], seen
