"""Secrets masked in every log line, whichever library's logger the line came from."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pyodbc
import pytest

from bot import cli, logs
from bot.logs import MASK

from .conftest import make_settings

KEY = "sk-live-0123456789abcdef"


@pytest.fixture
def root_log(monkeypatch) -> io.StringIO:  # at the level pytest set: WARNING and up pass
    """The root logger printing to a buffer through one plain handler, masking only KEY."""
    monkeypatch.setattr(logs, "_values", frozenset())
    monkeypatch.setattr(logs, "_pattern", None)
    logs.mask_secrets([KEY])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    logs.install_secret_mask()
    return out


@pytest.mark.parametrize(
    "name", ["bot.engines.openai", "openai._base_client", "httpx", "discord.http", "jira"]
)
def test_a_secret_is_masked_in_any_loggers_line_wherever_it_appears(root_log, name, monkeypatch) -> None:
    at_default_level(logging.getLogger(name), monkeypatch)
    logging.getLogger(name).warning("refused %s (401: key %s is wrong)", "us", KEY + "!" + KEY)
    assert root_log.getvalue() == f"WARNING {name} refused us (401: key {MASK}!{MASK} is wrong)\n"


def at_default_level(logger: logging.Logger, monkeypatch) -> None:
    """Whatever level an earlier test left `logger` at (a JIRA(logging=False) client sets jira's to
    CRITICAL), and whatever it then remembered of it: a logger keeps, per level, whether a line
    of that level passes, and only setLevel forgets that."""
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(logger, "_cache", {})


def test_a_secret_is_masked_in_jiras_lines_after_a_quiet_jira_client_warned(root_log, monkeypatch) -> None:
    jira = logging.getLogger("jira")
    monkeypatch.setattr(jira, "level", jira.level)  # put back as it was, after the test
    monkeypatch.setattr(jira, "_cache", dict(jira._cache))
    jira.setLevel(logging.CRITICAL)  # as JIRA(logging=False) leaves it for the whole process
    jira.warning("a warning of its client, dropped")
    test_a_secret_is_masked_in_any_loggers_line_wherever_it_appears(root_log, "jira", monkeypatch)


def test_a_secret_in_an_exception_is_masked_in_its_traceback(root_log) -> None:
    try:
        raise RuntimeError(f"Error code: 401 - {{'message': 'Incorrect API key provided: {KEY}'}}")
    except RuntimeError:
        logging.getLogger("openai").exception("could not check the model with key %s", KEY)
    text = root_log.getvalue()
    assert KEY not in text
    assert f"with key {MASK}\nTraceback" in text and f"provided: {MASK}'}}" in text


def test_a_secret_is_masked_as_a_repr_or_json_spells_it(root_log) -> None:
    # A password holds what a repr or JSON escapes: a driver's error is a tuple of its SQLSTATE
    # and words, printed as their repr, and a service's JSON body escapes it again.
    password = "pa\\ss'w0rd\"-4321"
    logs.mask_secrets([password])
    try:
        raise pyodbc.Error("28000", f"[28000] Login failed (PWD={password})")
    except pyodbc.Error:
        logging.getLogger("aioodbc").exception("login failed for %r", {"pwd": password})
    logging.getLogger("httpx").warning("answered %s", json.dumps({"error": f"bad password {password}"}))
    text = root_log.getvalue()
    assert "w0rd" not in text, text
    assert text.count(MASK) == 3, text


def test_a_secret_past_ascii_is_masked_as_json_escapes_it(root_log) -> None:
    # A JSON body escapes what is past ASCII (\u00e9), which a repr keeps as it is, and a tab:
    # a service quoting the password back spells it so.
    password = "mot-de-passe-\u00e9t\u00e9\t-4321"
    logs.mask_secrets([password])
    logging.getLogger("httpx").warning("answered %s", json.dumps({"error": f"bad password {password}"}))
    text = root_log.getvalue()
    assert "4321" not in text, text
    assert text.count(MASK) == 1, text


def test_a_secret_holding_a_control_character_is_masked_however_it_is_spelled(root_log) -> None:
    # A control character in a password is spelled "\\x01" by a repr, "\\u0001" by JSON, and
    # "\\x01" by the handlers themselves where it is logged as it is (one_line), a C1 one
    # ("\\x85") likewise, and JSON written with ensure_ascii=False keeps what is past ASCII.
    for password in ("pass\x01word-4321", "p\u00e4ss\x01\x85word-4321", "pass\x1b'\"\\word-4321"):
        logs.mask_secrets([password])
        try:
            raise pyodbc.Error("28000", f"[28000] Login failed (PWD={password})")
        except pyodbc.Error:
            logging.getLogger("aioodbc").exception("login failed for %r", {"pwd": password})
        logging.getLogger("httpx").warning("answered %s", json.dumps({"error": f"bad {password}"}))
        said = json.dumps({"error": f"bad {password}"}, ensure_ascii=False)
        logging.getLogger("httpx").warning("answered %s", said)
        logging.getLogger("bot").warning("as it is: %s", password)
    text = root_log.getvalue()
    assert "word-4321" not in text, text
    assert text.count(MASK) == 15, text
    assert logs.masked("pass\x01word-4321") == MASK


def test_a_secret_holding_a_tab_is_masked_as_a_repr_spells_it(root_log) -> None:
    # The handlers leave a tab as it is, but a repr (a driver's error, a tuple of its words)
    # spells it "\\t", and "\\x01" where JSON writes "\\u0001"; with both quotes in the
    # password the repr escapes its apostrophe too.
    for password in ("pass\t\x01'word-4321", "pass\t'\"word-4321"):
        logs.mask_secrets([password])
        logging.getLogger("aioodbc").warning("login failed: %r", ("28000", f"PWD={password}"))
    text = root_log.getvalue()
    assert "word-4321" not in text, text
    assert text.count(MASK) == 2, text


def test_an_interactions_token_in_a_discord_address_is_masked(root_log, monkeypatch) -> None:
    # discord.py answers a slash command at /interactions/<id>/<token>/callback and follows it up
    # at /webhooks/<application>/<token>: its webhook adapter logs each address at DEBUG, which an
    # operator may ask discord's loggers for by name. The token posts and edits as the bot there.
    from discord.webhook.async_ import Route

    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OmZha2UtdG9rZW4tMDEyMw"
    webhook = logging.getLogger("discord.webhook.async_")
    at_default_level(webhook, monkeypatch)
    for path in (
        "/interactions/{webhook_id}/{webhook_token}/callback",
        "/webhooks/{webhook_id}/{webhook_token}",
    ):
        url = Route("POST", path, webhook_id=123456789, webhook_token=token).url
        webhook.warning("Webhook ID %s with %s %s has returned status code %s", 123456789, "POST", url, 204)
    text = root_log.getvalue()
    assert "MTIzNDU2Nzg5Om" not in text, text
    assert (
        f"/interactions/123456789/{MASK}/callback has" in text and f"/webhooks/123456789/{MASK} has" in text
    )


def test_a_line_without_a_secret_is_left_as_it_was(root_log) -> None:
    try:
        raise ValueError("nothing to hide")
    except ValueError:
        logging.getLogger("bot").error("%d notes, %s", 3, "sk-live-0123", exc_info=True)
    assert root_log.getvalue().startswith("ERROR bot 3 notes, sk-live-0123\nTraceback")
    assert root_log.getvalue().endswith("ValueError: nothing to hide\n")


def test_discord_pys_formatter_and_a_second_handler_print_the_masked_traceback(root_log) -> None:
    # discord.py's formatter renders the exception afresh from exc_info, then drops exc_text.
    import discord.utils

    second = io.StringIO()
    coloured = logging.StreamHandler(second)
    coloured.setFormatter(discord.utils._ColourFormatter())
    logging.getLogger().handlers.insert(0, coloured)
    logs.install_secret_mask()
    try:
        raise RuntimeError(KEY)
    except RuntimeError:
        logging.getLogger("discord.client").exception("login failed")
    for text in (second.getvalue(), root_log.getvalue()):
        assert KEY not in text and f"RuntimeError: {MASK}" in text


def test_a_short_secret_is_masked_as_a_word_of_its_own_and_a_longer_one_whole(root_log) -> None:
    # A password under 8 characters was left as it was, printed wherever a driver quoted it. It is
    # masked where it stands alone, not inside a longer word (masked everywhere, "a" would take
    # that letter out of every line).
    logs.mask_secrets(["hun", "hunter2", KEY + "-and-more"])
    logging.getLogger("bot").warning("hun hunter2 %s-and-more, hunter22 and 'hunter2'", KEY)
    assert root_log.getvalue() == f"WARNING bot {MASK} {MASK} {MASK}, hunter22 and '{MASK}'\n"


def test_a_secret_of_one_or_two_characters_is_not_masked(root_log) -> None:
    # Masked even as a word of its own, "x" or "ab" took that word from every line ("*** = ***
    # at ***.example"), and no mask hides a value guessed in a few thousand tries: start-up
    # warns of it instead (test_config).
    logs.mask_secrets(["x", "ab", "a", "hunter2"])
    logging.getLogger("bot").warning("x = ab at ab.example: a x-ray, hunter2")
    assert root_log.getvalue() == f"WARNING bot x = ab at ab.example: a x-ray, {MASK}\n"


def test_settings_mask_a_short_password_a_drivers_error_quotes(root_log, tmp_path) -> None:
    # Start-up warned of a SQL or proxy password under 8 characters, and the log printed it.
    make_settings(
        tmp_path,
        VOXDESK_SQL_CONNECTION_STRING="Driver={ODBC Driver 18};Server=db;UID=bot;PWD=hunter2;",
        HTTPS_PROXY="http://bot:p%40ss@proxy.example:3128",
        OPENAI_CUSTOM_HEADERS="X-Debug: 1",  # a flag as often as a secret: no word of it masked
    )
    logging.getLogger("pyodbc").warning("login failed: ('PWD=hunter2;', 'p@ss') after 1 try")
    *warned, said = root_log.getvalue().splitlines()
    assert said == f"WARNING pyodbc login failed: ('PWD={MASK};', '{MASK}') after 1 try"
    assert len(warned) == 2 and not re.search(r"hunter2|p@ss", root_log.getvalue())


def test_settings_mask_each_secret_the_odbc_password_and_an_address_password(root_log, tmp_path) -> None:
    make_settings(
        tmp_path,
        DISCORD_TOKEN="MTIz.discord-token-value",
        JIRA_API_TOKEN="jira-token-value",
        VOXDESK_SQL_CONNECTION_STRING="Driver={ODBC Driver 18};Server=db;UID=bot;PWD={pa;ss}}word1};",
        VOXDESK_OPENAI_BASE_URL="https://svc:proxy-pass%21@proxy.example/v1",
    )
    said = "MTIz.discord-token-value jira-token-value pa;ss}word1 proxy-pass! proxy-pass%21"
    logging.getLogger("discord.gateway").warning(said)
    assert root_log.getvalue() == f"WARNING discord.gateway {' '.join([MASK] * 5)}\n"


def test_settings_mask_each_staff_accounts_hash_not_only_the_whole_variable(root_log, tmp_path) -> None:
    # A line quoting one entry's hash (a stored hash is what a password is guessed against offline)
    # holds no whole VOXDESK_WEB_STAFF; the names are no secret.
    alice, bob = (
        "scrypt$16384$8$1$YWxpY2Utc2FsdA==$YWxpY2UtZGlnZXN0",
        "scrypt$16384$8$1$Ym9iLXNhbHQ=$Ym9iLWRpZ2VzdA==",
    )
    make_settings(tmp_path, VOXDESK_WEB_STAFF=f"alice:{alice}, bob:{bob}")
    logging.getLogger("bot.web").warning("alice's %s, bob's %s", alice, bob)
    assert root_log.getvalue() == f"WARNING bot.web alice's {MASK}, bob's {MASK}\n"


def test_settings_mask_every_secret_keyword_of_the_odbc_connection_string(root_log, tmp_path) -> None:
    # The ODBC backend scrubs these keywords' values from its own lines (odbc_stats.redact); the
    # log's mask took PWD alone, so a library quoting one of the others printed it.
    make_settings(
        tmp_path,
        VOXDESK_SQL_CONNECTION_STRING=(
            "Driver={ODBC Driver 18};Server=db;Authentication=ActiveDirectoryServicePrincipal;"
            "UID=app;ClientSecret=client-secret-0123;KeyStoreSecret={ks;secret-4567};"
            "AccessToken=access-token-89ab;ClientKey=file:/k.pem,key-pass-cdef"
        ),
    )
    said = "client-secret-0123 ks;secret-4567 access-token-89ab file:/k.pem,key-pass-cdef"
    logging.getLogger("aioodbc").warning(said)
    assert root_log.getvalue() == f"WARNING aioodbc {' '.join([MASK] * 4)}\n"


def test_settings_mask_jiras_basic_auth_header_a_jiraerror_prints(root_log, tmp_path, monkeypatch) -> None:
    # str(JIRAError) prints the request's headers: the Authorization header's basic auth is the
    # email and API token in base64, which masking the token as written left readable.
    import requests
    from jira import JIRAError

    at_default_level(logging.getLogger("jira"), monkeypatch)
    make_settings(tmp_path, JIRA_EMAIL="bot@studio.example", JIRA_API_TOKEN="ATATT-jira-token-0123")
    sent = requests.Request(
        "GET",
        "https://studio.atlassian.net/rest/api/2/myself",
        auth=("bot@studio.example", "ATATT-jira-token-0123"),
    ).prepare()
    logging.getLogger("jira").warning("%s", JIRAError("refused", status_code=401, request=sent))
    text = root_log.getvalue()
    assert "Basic ***" in text and "Ym90QHN0dWRpby" not in text, text


def test_settings_mask_what_the_clients_read_from_the_environment_themselves(root_log, tmp_path) -> None:
    # The openai SDK sends OPENAI_CUSTOM_HEADERS with every request; httpx and requests take a
    # proxy, with its password, from HTTPS_PROXY.
    make_settings(
        tmp_path,
        OPENAI_CUSTOM_HEADERS="X-Gateway-Key: gateway-key-0123\nAuthorization: Bearer proxy-bearer-4567",
        HTTPS_PROXY="http://bot:proxy-pass-89@proxy.example:3128",
        OPENAI_ADMIN_KEY="sk-admin-abcdef012345",
    )
    said = "gateway-key-0123 proxy-bearer-4567 proxy-pass-89 sk-admin-abcdef012345 X-Gateway-Key"
    logging.getLogger("openai._base_client").warning(said)
    assert root_log.getvalue() == f"WARNING openai._base_client {' '.join([MASK] * 4)} X-Gateway-Key\n"


def test_settings_mask_the_service_principals_secret_azure_identity_reads(root_log, tmp_path) -> None:
    # search.auth = "entra": azure-identity reads the service principal's secret (or its
    # certificate's password) from the environment; a library quoting it must not print it.
    make_settings(
        tmp_path,
        AZURE_CLIENT_SECRET="entra-secret-0123",
        AZURE_CLIENT_CERTIFICATE_PASSWORD="cert-pass-4567",
        AZURE_CLIENT_ID="11111111-2222-3333-4444-555555555555",
    )
    said = "entra-secret-0123 cert-pass-4567 11111111-2222-3333-4444-555555555555"
    logging.getLogger("azure.identity").warning(said)
    assert root_log.getvalue() == (
        f"WARNING azure.identity {MASK} {MASK} 11111111-2222-3333-4444-555555555555\n"
    )


def test_settings_mask_a_credential_in_an_addresss_query_string(root_log, tmp_path) -> None:
    # A gateway keyed by its query string (API Management's ?subscription-key=, a proxy's ?key=):
    # the address's user:password@ was masked, its query's key was not, and a library's error
    # quoting the request's address (aiohttp's ClientResponseError) printed it.
    make_settings(
        tmp_path,
        VOXDESK_OPENAI_BASE_URL="https://gw.example/v1?api-version=2025-01-01&api-key=gw-key-0123%2B",
        VOXDESK_SEARCH_ENDPOINT="https://search.example/?Subscription-Key=sub-key-4567",
        VOXDESK_JIRA_URL="https://jira.example?password=jira-pass-89ab;code=func-code-cdef",
        HTTPS_PROXY="http://proxy.example:3128/?token=proxy-token-0123",
    )
    said = (
        "gw-key-0123%2B gw-key-0123+ sub-key-4567 jira-pass-89ab func-code-cdef proxy-token-0123 2025-01-01"
    )
    logging.getLogger("aiohttp.client").warning(said)
    assert root_log.getvalue() == f"WARNING aiohttp.client {' '.join([MASK] * 6)} 2025-01-01\n"


def _log_a_secret_in_worker() -> None:
    logging.getLogger("bot.hearing_test").warning("a worker saw %s", KEY)


@pytest.mark.timeout(180)
async def test_speech_workers_mask_the_bots_secrets(settings, monkeypatch, capfd) -> None:
    import asyncio

    from bot.engines.offline.hearing import WorkerHearing

    monkeypatch.setattr(logs, "_values", frozenset())
    monkeypatch.setattr(logs, "_pattern", None)
    logs.mask_secrets([KEY])
    hearing = WorkerHearing(settings.storage_dir / "speech", workers=1)
    try:
        await hearing.start()
        await asyncio.get_running_loop().run_in_executor(hearing._pool, _log_a_secret_in_worker)
    finally:
        await hearing.aclose()
    err = capfd.readouterr().err
    assert f"a worker saw {MASK}" in err and KEY not in err


def test_runs_discord_log_handler_masks_too(monkeypatch) -> None:
    # `run` swaps the CLI's root handler for discord.py's.
    from cogs.runner import use_discord_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(io.StringIO())])
    monkeypatch.setattr(root, "level", root.level)
    use_discord_logging(logging.INFO)
    assert root.handlers and all(logs.SECRET_MASK in h.filters for h in root.handlers)


def test_a_traceback_without_a_secret_is_left_to_the_handlers_formatter(root_log) -> None:
    class Terse(logging.Formatter):
        def formatException(self, ei) -> str:
            return f"({ei[0].__name__})"

    logging.getLogger().handlers[0].setFormatter(Terse("%(message)s"))
    try:
        raise ValueError("nothing to hide")
    except ValueError:
        logging.getLogger("bot").exception("failed")
    assert root_log.getvalue() == "failed\n(ValueError)\n"


def _run_logging_to(stream, monkeypatch) -> None:
    """`run`'s log handler, printing to `stream` as stderr, in a container (as discord.py sees it)."""
    import sys

    import discord.utils

    from cogs.runner import use_discord_logging

    monkeypatch.setattr(discord.utils, "is_docker", lambda: True)
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    use_discord_logging(logging.INFO)


def test_runs_log_in_a_container_has_no_colour_codes(monkeypatch) -> None:
    # `docker logs`, a log collector, or `> bot.log`: escape codes there are noise to grep through.
    out = io.StringIO()
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    _run_logging_to(out, monkeypatch)
    logging.getLogger("cogs.voice").warning("could not reply to note %s", 42)
    line = out.getvalue()
    assert "\x1b[" not in line
    assert line.endswith("] [WARNING ] cogs.voice: could not reply to note 42\n")


def test_runs_log_under_systemd_gives_the_journal_each_lines_priority(monkeypatch, tmp_path) -> None:
    import os

    with open(tmp_path / "journal", "w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        _run_logging_to(stream, monkeypatch)
        logging.getLogger("bot.tools.jira_grievances").warning("Jira down")
        logging.getLogger("cogs.voice").info("answered note 1")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("cogs.bot").error("work in flight failed", exc_info=True)
        stream.seek(0)
        lines = stream.read().splitlines()
    assert lines[0] == "<4>[WARNING ] bot.tools.jira_grievances: Jira down"
    assert lines[1] == "<6>[INFO    ] cogs.voice: answered note 1"
    assert lines[2] == "<3>[ERROR   ] cogs.bot: work in flight failed"
    assert len(lines) > 4 and all(line.startswith("<3>") for line in lines[3:])  # the traceback
    assert lines[-1] == "<3>ValueError: boom"


def test_run_logs_the_engine_and_backends_in_effect_at_start_without_secrets(tmp_path, monkeypatch, caplog):
    # settings.whereabouts() said where the settings came from; nothing said which engine, model
    # or grievance tracker those settings amounted to, nor which voxdesk was running.
    import discord

    from bot import __version__
    from cogs import runner

    settings = make_settings(
        tmp_path,
        VOXDESK_AGENT_ENGINE="openai",
        VOXDESK_AGENT_FALLBACK="offline",
        OPENAI_API_KEY=KEY,
        VOXDESK_OPENAI_BASE_URL="https://svc:proxy-pass-0123@proxy.example/v1",
        VOXDESK_TOOLS_GRIEVANCES="jira",
        VOXDESK_JIRA_URL="https://studio.atlassian.net",
        JIRA_EMAIL="bot@studio.example",
        JIRA_API_TOKEN="jira-token-value",
        DISCORD_TOKEN="MTIz.discord-token-value",
    )

    async def served(*args, **kwargs) -> None:
        return None

    monkeypatch.setattr(runner, "serve", served)
    monkeypatch.setattr(runner, "use_discord_logging", lambda level: None)
    caplog.set_level(logging.INFO, logger="cogs.runner")
    assert runner.run(settings) == 0
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("voxdesk ")]
    assert f"voxdesk {__version__} (Python " in line and f"discord.py {discord.__version__}" in line
    assert "engine openai (gpt-audio-1.5 at https://proxy.example/v1, voice alloy, " in line
    assert "transcripts gpt-4o-mini-transcribe), fallback offline" in line
    assert "stats sqlite, manuals sqlite, grievances jira (https://studio.atlassian.net, project GRV)" in line
    assert "web off" in line
    for secret in (KEY, "proxy-pass-0123", "jira-token-value", "MTIz.discord-token-value"):
        assert secret not in line


def test_verbose_run_logs_voxdesks_debug_lines(tmp_path, monkeypatch, caplog) -> None:
    # `-v` ("log more") did nothing for `run`, which logged INFO whatever it was told.
    from bot.cli import main
    from cogs import runner

    for name in ("bot", "cogs"):
        at_default_level(logging.getLogger(name), monkeypatch)

    async def served(*args, **kwargs) -> None:
        logging.getLogger("bot.agent").debug("a debug line")

    monkeypatch.setattr(runner, "serve", served)
    monkeypatch.setattr(runner, "use_discord_logging", lambda level: None)
    monkeypatch.setenv("DISCORD_TOKEN", "MTIz.discord-token-value")
    monkeypatch.setenv("VOXDESK_STORAGE_DIR", str(tmp_path))
    monkeypatch.setattr(logging.getLogger(), "handlers", list(logging.getLogger().handlers))
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    assert main(["-v", "run"]) == 0
    assert "a debug line" in [r.getMessage() for r in caplog.records]


def test_runs_log_into_a_file_under_systemd_has_no_priorities(monkeypatch, tmp_path) -> None:
    # A unit whose start script sends stderr to a file still passes JOURNAL_STREAM on: the
    # journal reads another file, and `<4>` in this one would be noise.
    import os

    with open(tmp_path / "journal", "w") as journal, open(tmp_path / "bot.log", "w+") as stream:
        st = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        _run_logging_to(stream, monkeypatch)
        logging.getLogger("cogs.voice").warning("could not reply to note %s", 42)
        stream.seek(0)
        line = stream.read()
    assert line.startswith("[") and "\x1b[" not in line
    assert line.endswith("] [WARNING ] cogs.voice: could not reply to note 42\n")


@pytest.mark.parametrize("name", ["bot", "discord"])
def test_an_operators_handler_on_a_named_logger_prints_lines_as_the_roots_do(
    root_log, monkeypatch, name
) -> None:
    # A logging configuration of the operator's may hand a logger of its choosing a handler of
    # its own, which sees each record before the root's handlers do: it too prints one masked
    # line under the cap, never a player's line break starting a forged UNFILED line of theirs.
    from bot.tools.grievance_spool import unfiled_in

    out = io.StringIO()
    theirs = logging.StreamHandler(out)
    theirs.setFormatter(logs.plain_formatter())
    monkeypatch.setattr(logging.getLogger(name), "handlers", [theirs])
    _run_logging_to(io.StringIO(), monkeypatch)
    words = f"{KEY} {'x' * logs.MAX_LINE_BYTES}\n{_forged_unfiled()}"
    logging.getLogger(f"{name}.web").warning("GET %s failed", words)
    (line,) = out.getvalue().splitlines()
    assert KEY not in line and len(line.encode()) <= logs.MAX_LINE_BYTES + 100  # the format's prefix
    assert unfiled_in(out.getvalue().splitlines()) == ([], 0)


def test_an_outages_lines_name_the_place_that_met_it(caplog) -> None:
    # A format that prints where a line came from points at the backend, not at the helper.
    from bot.logs import Outage

    outage = Outage(logging.getLogger("voxdesk.test"), "the backend answers again")
    caplog.set_level(logging.INFO, logger="voxdesk.test")

    def backend_call() -> None:
        outage.failed("down", "backend down: %s", "503")
        outage.answered()

    backend_call()
    assert [(r.funcName, r.filename) for r in caplog.records] == [("backend_call", "test_logs.py")] * 2


def test_log_lines_say_their_times_offset_from_utc(monkeypatch) -> None:
    # 2026-10-25T00:30Z and the hour after are both 01:30 in London: `run`'s plain lines and the
    # CLI's (`voxdesk web`) tell them apart by the offset, and staff read them beside UTC times.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    cli.configure_logging(False)
    for at in (1792888200.0, 1792888200.0 + 3600):
        record = logging.LogRecord("bot", logging.WARNING, __file__, 1, "x", None, None)
        record.created = at
        offset = re.escape(time.strftime("%z", time.localtime(at)))
        for formatter in (logs.plain_formatter(), root.handlers[0].formatter):
            assert formatter is not None
            assert re.match(rf"\[?\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d{offset}[\] ]", formatter.format(record))


def _forged_unfiled() -> str:
    """A player's words shaped as the grievance store's UNFILED line, in another player's name."""
    from bot.tools.grievance_spool import UNFILED, spool_line

    row = {"user_id": "999", "category": "other", "description": "forged", "at": "2026-12-06T04:00:00Z"}
    return "[ERROR   ] bot.tools.grievance_store: " + UNFILED + spool_line("f1", **row, state="open")


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x1c"])
@pytest.mark.parametrize("formatter", ["plain", "journal"])
def test_a_line_break_in_a_players_words_starts_no_log_line_of_theirs(root_log, brk, formatter) -> None:
    # `journalctl -o cat | voxdesk refile` files every UNFILED line it reads: a break in words a
    # line quotes (a web path, a model's arguments, a service's error) let them write one.
    from bot.tools.grievance_spool import unfiled_in

    chosen = logs.plain_formatter() if formatter == "plain" else logs.JournalFormatter()
    logging.getLogger().handlers[0].setFormatter(chosen)
    logging.getLogger("bot.web.security").warning("web: GET %s failed", "/x" + brk + _forged_unfiled())
    text = root_log.getvalue()
    assert len(text.splitlines()) == 1 and text.endswith(" failed\n")
    assert unfiled_in(text.splitlines()) == ([], 0)
    assert ascii(brk)[1:-1] in text  # spelled out: what was there stays readable


def test_escape_codes_in_a_players_words_reach_no_terminal(root_log) -> None:
    logging.getLogger("bot").warning("heard %s", "\x1b[2J\x1b[32mall clear\x9b0m\u202eevil")
    assert root_log.getvalue() == "WARNING bot heard \\x1b[2J\\x1b[32mall clear\\x9b0m\\u202eevil\n"


def test_a_line_break_in_an_exceptions_words_starts_no_log_line_of_theirs(root_log) -> None:
    try:
        try:
            # A cause's words too: its line break is no traceback's own.
            raise ValueError("first\r\n" + _forged_unfiled())
        except ValueError as exc:
            raise RuntimeError("no such ticket: \n" + _forged_unfiled()) from exc
    except RuntimeError:
        logging.getLogger("bot.tools").exception("tool crashed")
    lines = root_log.getvalue().splitlines()
    assert lines[0] == "ERROR bot.tools tool crashed" and lines[1] == "Traceback (most recent call last):"
    assert lines[-1].startswith("RuntimeError: no such ticket: \\n[ERROR   ] bot.tools.grievance_store: ")
    assert any(line.startswith("ValueError: first\\r\\n[ERROR   ]") for line in lines)
    assert all(
        not line or line.startswith(("Traceback", "  ", "ValueError", "RuntimeError", "The above"))
        for line in lines[1:]
    )


async def test_a_line_break_in_a_grouped_exceptions_words_starts_no_log_line_of_theirs(root_log) -> None:
    # A TaskGroup raises its tasks' failures as an ExceptionGroup, whose traceback prints each
    # member (and a member's cause, and a group within it) behind a margin: "    | ".
    import asyncio

    from bot.tools.grievance_spool import UNFILED, unfiled_in

    async def lookup() -> None:
        try:
            raise ValueError("first\r\n" + _forged_unfiled())
        except ValueError as exc:
            raise RuntimeError("no such ticket: \n" + _forged_unfiled()) from exc

    async def nested() -> None:
        raise ExceptionGroup("both\n" + _forged_unfiled(), [OSError("disk\n" + _forged_unfiled())])

    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(lookup())
            tasks.create_task(nested())
    except ExceptionGroup:
        logging.getLogger("bot.tools").exception("tools crashed")
    lines = root_log.getvalue().splitlines()
    marked = [line for line in lines if logs.unmarked(UNFILED) in line]  # the mark spelled out
    said = {
        "ValueError: first\\r\\n",
        "RuntimeError: no such ticket: \\n",
        "ExceptionGroup: both\\n",
        "OSError: disk\\n",
    }
    assert {next((s for s in said if s in line), "") for line in marked} == said
    # Each member's words stay on the line its exception's name starts, behind the margin.
    assert all(re.match(r"[ |]*(ValueError|RuntimeError|ExceptionGroup|OSError): ", line) for line in marked)
    assert unfiled_in(lines) == ([], 0)


def test_a_traceback_handed_on_as_text_keeps_only_its_own_line_breaks(root_log) -> None:
    """A record carrying its traceback as text alone (formatted by an earlier handler, or sent
    from another process) has no exception to tell its words from the traceback's: every
    character that breaks or recolours a line but the traceback's own line feeds is spelled out."""
    text = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: a\x0bb\x1b[2Jc\u2028d'
    record = logging.makeLogRecord({"name": "bot.tools", "levelno": logging.ERROR, "levelname": "ERROR"})
    record.msg, record.exc_text = "tool crashed", text
    logging.getLogger("bot.tools").handle(record)
    assert root_log.getvalue().splitlines()[1:] == [
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        "ValueError: a\\x0bb\\x1b[2Jc\\u2028d",
    ]


def test_an_exception_whose_context_loops_back_is_logged(root_log) -> None:
    # A library may set __context__ by hand into a loop: Python's traceback stops where it comes
    # round again, and so must the look for each exception's words (else pytest-timeout ends it).
    first, second = ValueError("first\nline"), RuntimeError("second")
    first.__context__, second.__context__ = second, first
    logging.getLogger("bot").error("failed", exc_info=second)
    assert "ValueError: first\\nline" in root_log.getvalue()


def test_a_secret_in_a_records_stack_is_masked(root_log) -> None:
    """A record's stack (stack_info=True), printed after its message, quotes each frame's code,
    which may hold what a line was called with."""
    record = logging.makeLogRecord({"name": "bot", "levelno": logging.WARNING, "levelname": "WARNING"})
    record.msg = "slow"
    record.stack_info = f'Stack (most recent call last):\n  File "x.py", line 1\n    login("{KEY}")'
    logging.getLogger("bot").handle(record)
    assert KEY not in root_log.getvalue()
    assert root_log.getvalue().endswith(f'    login("{MASK}")\n')


def _store_line(formatter: logging.Formatter) -> str:
    """The grievance store's UNFILED line as `formatter` prints it."""
    from bot.tools.grievance_spool import UNFILED, spool_line

    row = {"user_id": "123", "category": "wallet", "description": "gems", "at": "2026-12-06T04:00:00Z"}
    message = UNFILED + spool_line("f2", **row, state="open")
    record = logging.LogRecord(
        "bot.tools.grievance_store", logging.ERROR, __file__, 1, "%s%s", ("", message), None
    )
    return formatter.format(record)


def _cli_formatter() -> logging.Formatter:
    return logging.Formatter("%(asctime)s %(levelname)-8s %(name)s %(message)s", logs.PLAIN_DATES)


def _colour_formatter() -> logging.Formatter:
    import discord.utils

    return discord.utils._ColourFormatter()


@pytest.mark.parametrize(
    "formatter", [logs.plain_formatter, logs.JournalFormatter, _cli_formatter, _colour_formatter]
)
@pytest.mark.parametrize(
    "before",
    [
        "",
        "Dec 06 04:00:00 bots-host voxdesk[812]: ",
        "2026-12-06T04:00:00+0000 bots-host python3[9]: ",
        "2026-12-06T04:00:00.123456789Z ",
        "Dec  6 04:00:00 bots-host voxdesk[812]: ",
        "Sun 2026-12-06 04:00:00 UTC bots-host voxdesk[812]: ",
        "[ 8123.456789] bots-host voxdesk[812]: ",
        "1796529600.123456 bots-host voxdesk[812]: ",  # journalctl -o short-unix
        "[    5.123456 <    0.000123>] bots-host voxdesk[812]: ",  # journalctl -o short-delta
        "[12345.123456 <12345.123456>] bots-host voxdesk[812]: ",
    ],
)
def test_refile_finds_the_stores_line_in_every_log_format_and_a_players_in_none(formatter, before) -> None:
    from bot.tools.grievance_spool import unfiled_in

    line = before + _store_line(formatter()).removeprefix("<3>" if before else "")
    rows, unreadable = unfiled_in([line])
    assert [r["id"] for r in rows] == ["f2"] and unreadable == 0, line
    # The same words quoted at the end of another line, whatever its format and level.
    for quoting in ("web: GET /x", "tool file failed for note 1 from 2: no such ticket:", "RuntimeError: x"):
        for forged in (_forged_unfiled(), _forged_unfiled().removeprefix("[ERROR   ] ")):
            assert unfiled_in([f"{line.partition('UNFILED')[0]}{quoting} {forged}"]) == ([], 0)
            assert unfiled_in([f"{quoting} {forged}"]) == ([], 0)


@pytest.fixture
def operators_debug_log(monkeypatch) -> Iterator[io.StringIO]:
    """The root logger at DEBUG, printing to a buffer, as an operator's own logging configuration
    leaves it before voxdesk's CLI configures its log (basicConfig then keeps it as it is)."""
    out = io.StringIO()
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.StreamHandler(out)])
    # Through setLevel, which makes every logger forget which levels it let through.
    loggers = [logging.getLogger(name) for name in ("aiosqlite", "openai", "discord", "jira", "bot")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.DEBUG)
    configure = cli.configure_logging

    def configured_from_here(*args: Any, **kwargs: Any) -> None:
        # What is logged before voxdesk configures its log is the operator's configuration's, not
        # these tests': an aiosqlite connection an earlier test left closing in its thread logs
        # "operation ... completed" there at DEBUG.
        configure(*args, **kwargs)
        out.seek(0)
        out.truncate()

    monkeypatch.setattr(cli, "configure_logging", configured_from_here)
    yield out
    logging.getLogger().setLevel(root_level)
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


async def test_sql_parameters_stay_out_of_a_log_an_operator_set_to_debug(operators_debug_log) -> None:
    # aiosqlite logs each statement at DEBUG with its parameters: a grievance's words, a
    # player's conversation. Players' words are at voxdesk's own DEBUG alone.
    import aiosqlite

    cli.configure_logging(False)
    async with aiosqlite.connect(":memory:") as conn:
        await conn.execute("CREATE TABLE grievances (description TEXT)")
        await conn.execute("INSERT INTO grievances VALUES (?)", ("charged twice for gems",))
    logging.getLogger("bot.tools").debug("a debug line of voxdesk's own")
    text = operators_debug_log.getvalue()
    assert "charged twice for gems" not in text
    assert "a debug line of voxdesk's own" in text


@pytest.mark.parametrize(
    "name",
    [
        "openai._base_client",  # openai 1.x: "Request options: {...}", a turn's messages and audio
        "discord.gateway",  # each event whole, a player's message among them
        "discord.http",  # each request's payload, a reply's words
        "jira.resilientsession",  # a response's body on a retry: grievances' descriptions
    ],
)
def test_libraries_debug_lines_stay_out_of_a_log_an_operator_set_to_debug(operators_debug_log, name) -> None:
    cli.configure_logging(False)
    logging.getLogger(name).debug("%s", {"content": "charged twice for gems"})
    logging.getLogger(name).info("connected")
    assert operators_debug_log.getvalue() == "connected\n"


def test_a_librarys_debug_lines_an_operator_asks_for_by_name_are_logged(operators_debug_log) -> None:
    logging.getLogger("aiosqlite").setLevel(logging.DEBUG)
    cli.configure_logging(False)
    logging.getLogger("aiosqlite").debug("executing")
    assert operators_debug_log.getvalue() == "executing\n"


def test_a_librarys_info_lines_stay_out_of_a_one_shot_commands_warning_log(operators_debug_log) -> None:
    # A command's log at WARNING (`voxdesk sync` without -v): the libraries held at INFO under a
    # DEBUG root are left to follow it, or discord.py's "logging in using static token" shows.
    logging.getLogger().setLevel(logging.WARNING)
    cli.configure_logging(False)
    logging.getLogger("discord.client").info("logging in using static token")
    logging.getLogger("discord.client").warning("a warning")
    assert operators_debug_log.getvalue() == "a warning\n"


def _journal_json(message: object, **fields: str) -> str:
    """An entry as `journalctl -o json` prints it: one compact object a line, the journal's own
    fields first, each value a string (a byte array for a message that is not UTF-8 text)."""
    entry = {
        "__CURSOR": "s=5b1e;i=1c2;b=9f3a;m=4c4b40;t=5f1c;x=7d1",
        "__REALTIME_TIMESTAMP": "1796529600123456",
        "__MONOTONIC_TIMESTAMP": "5123456",
        "_BOOT_ID": "9f3a",
        "PRIORITY": "3",
        "_TRANSPORT": "stdout",
        "SYSLOG_IDENTIFIER": "voxdesk",
        "_COMM": "voxdesk",
        "_SYSTEMD_UNIT": "voxdesk.service",
        "MESSAGE": message,
        **fields,
    }
    return json.dumps(entry, separators=(",", ":"))


@pytest.mark.parametrize("formatter", [logs.JournalFormatter, logs.plain_formatter])
@pytest.mark.parametrize(
    "names",
    [
        {},
        {"SYSLOG_IDENTIFIER": "python3", "_COMM": "python3", "_SYSTEMD_UNIT": "bot.service"},
        {"SYSLOG_IDENTIFIER": "grievance-bot", "_COMM": "grievance-bot"},  # voxdesk.service's own
        # docker's journald log driver: the container's lines, tagged with its id
        {
            "SYSLOG_IDENTIFIER": "4f2a9c1b7e3d",
            "_COMM": "dockerd",
            "_SYSTEMD_UNIT": "docker.service",
            "CONTAINER_NAME": "studio-voxdesk-1",
        },
    ],
)
@pytest.mark.parametrize("seq", ["", "\x1e", "data: "])  # journalctl -o json, json-seq, json-sse
def test_refile_finds_the_stores_line_in_the_journals_json(formatter, names, seq) -> None:
    from bot.tools.grievance_spool import unfiled_in

    # What the journal keeps: the line as logged, without the priority it took as the level.
    message = _store_line(formatter()).removeprefix("<3>")
    for logged in (message, list(message.encode())):  # a message journalctl deems binary: bytes
        assert unfiled_in([seq + _journal_json(logged, **names) + "\n"]) == (
            [json.loads(message.partition("GRIEVANCE, re-file it with `voxdesk refile LOG`: ")[2])],
            0,
        )


def test_refile_files_no_players_words_from_the_journals_json() -> None:
    from bot.tools.grievance_spool import unfiled_in

    shown: list[str] = []
    # Another line of the bot's quoting them, whatever its prefix.
    for quoting in ("[WARNING ] bot.web.security: web: GET /x ", "RuntimeError: x ", ""):
        line = _journal_json(quoting + _forged_unfiled().removeprefix("" if quoting else "[ERROR   ] "))
        assert unfiled_in([line], shown.append) == ([], 0)
    # Another program's entries, a player's words logged whole (a game server's chat).
    others = [
        {"SYSLOG_IDENTIFIER": "gameserver", "_COMM": "gameserver", "_SYSTEMD_UNIT": "gameserver.service"},
        {"SYSLOG_IDENTIFIER": "gameserver", "_COMM": "python3", "_SYSTEMD_UNIT": "gameserver.service"},
        {
            "SYSLOG_IDENTIFIER": "4f2a9c1b7e3d",
            "_COMM": "dockerd",
            "_SYSTEMD_UNIT": "docker.service",
            "CONTAINER_NAME": "studio-gameserver-1",
        },
    ]
    for names in others:
        line = _journal_json(_forged_unfiled(), **names)
        assert unfiled_in([line], shown.append) == ([], 0)
        assert shown[-1] == line  # shown to staff, who file it by hand if the bot logged it
    # Lines of JSON that are no journal's: a log shipper's, a chat log's.
    for line in (
        json.dumps({"log": _forged_unfiled() + "\n", "stream": "stderr", "source": "chat"}),
        json.dumps({"message": _forged_unfiled(), "MESSAGE": _forged_unfiled(), "user": "999"}),
    ):
        assert unfiled_in([line], shown.append) == ([], 0)
        assert shown[-1] == line
    # Shown once a line, however many of its fields hold the mark: refile counts what it shows.
    shown.clear()
    both = json.dumps({"message": _forged_unfiled(), "MESSAGE": _forged_unfiled(), "user": "999"})
    assert unfiled_in([both], shown.append) == ([], 0)
    assert shown == [both]


def test_refile_files_no_json_line_journalctl_did_not_print() -> None:
    # journalctl prints __REALTIME_TIMESTAMP with every entry: an object without it, whatever names
    # it gives (a chat log's line a player wrote whole as JSON), is no journal entry of voxdesk's.
    from bot.tools.grievance_spool import unfiled_in

    forged = json.loads(_journal_json(_forged_unfiled()))
    del forged["__REALTIME_TIMESTAMP"]
    line = json.dumps(forged)
    shown: list[str] = []
    assert unfiled_in([line], shown.append) == ([], 0)
    assert shown == [line]  # shown to staff, never filed


def test_refile_files_no_players_words_from_the_rest_of_a_line_the_journal_cut() -> None:
    # journald keeps a line over LineMax (48K) as several entries, each with the bot's names: the
    # next one starts in the middle of the line, where a player's words a DEBUG line quotes may
    # sit, shaped as the store's line. _LINE_BREAK on the entry before says where it was cut.
    from bot.tools.grievance_spool import unfiled_in

    cut = {"_STREAM_ID": "a1b2", "_LINE_BREAK": "line-max"}
    head = _journal_json("[DEBUG   ] bot.agent: heard " + "x" * 100, **cut)
    other_stream = _journal_json("[INFO    ] cogs.voice: answered", _STREAM_ID="c3d4")
    rest = _journal_json(_forged_unfiled(), _STREAM_ID="a1b2")
    shown: list[str] = []
    assert unfiled_in([head, other_stream, rest], shown.append) == ([], 0)
    assert shown == [rest]  # shown to staff, who file it by hand if the bot logged it
    # The stream's next entry starts a line of its own again: the store's there is filed.
    logged = _store_line(logs.plain_formatter())
    after = _journal_json(logged, _STREAM_ID="a1b2")
    filed, unreadable = unfiled_in([head, rest, after], shown.append)
    assert (len(filed), unreadable) == (1, 0)


def test_refile_says_when_the_journals_json_left_a_message_out() -> None:
    # journalctl -o json prints a field over 4096 bytes as null unless told --all: a grievance
    # of many words in another alphabet (each character \\uXXXX in the line) is one.
    from bot.tools.grievance_spool import unfiled_in

    left_out: list[str] = []
    theirs = _journal_json(None, SYSLOG_IDENTIFIER="gameserver", _COMM="gameserver", _SYSTEMD_UNIT="x")
    spaced = json.dumps(json.loads(_journal_json(None)), separators=(", ", " : "))  # older journalctls'
    lines = [_journal_json(None), theirs, _journal_json("[INFO    ] cogs.voice: answered"), spaced]
    assert unfiled_in(lines, left_out=left_out.append) == ([], 0)
    assert left_out == [lines[0], spaced]


def _journal_outputs_refile_does_not_read() -> dict[str, str]:
    """The store's line as journalctl's export, verbose and json-pretty outputs print its entry."""
    entry = json.loads(_journal_json(_store_line(logs.JournalFormatter())[3:]))
    cursor, fields = entry["__CURSOR"], [f"{k}={v}" for k, v in entry.items() if k != "__CURSOR"]
    return {
        "export": "".join(f"{line}\n" for line in [f"__CURSOR={cursor}", *fields, ""]),
        "verbose": f"Sun 2026-12-06 04:00:00.123456 UTC [{cursor}]\n"
        + "".join(f"    {field}\n" for field in fields if not field.startswith("__")),
        "json-pretty": json.dumps(entry, indent="\t", separators=(",", " : ")) + "\n",
    }


@pytest.mark.parametrize("name", ["export", "verbose", "json-pretty"])
def test_refile_says_which_journal_output_it_does_not_read(name) -> None:
    # `journalctl -o export` and `-o verbose` print a grievance in a field of an entry whose
    # names are on other lines: read on, refile would find nothing, or show the line, as if done.
    from bot.tools.grievance_spool import UnreadFormat, unfiled_in

    before = "[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n"
    for text in (
        _journal_outputs_refile_does_not_read()[name],
        before + _journal_outputs_refile_does_not_read()[name],
    ):
        with pytest.raises(UnreadFormat) as told:
            unfiled_in(text.splitlines(keepends=True))
        assert str(told.value) == name
    spaced = json.dumps(json.loads(_journal_outputs_refile_does_not_read()["json-pretty"]), indent=8)
    with pytest.raises(UnreadFormat):
        unfiled_in(spaced.splitlines())


def test_refile_files_no_store_line_with_words_after_its_grievance() -> None:
    # The store's line is a record's whole message, so nothing follows its grievance on it: one
    # with more after it (another writer's words run on to it in a shared file) files nothing.
    from bot.tools.grievance_spool import unfiled_in

    line = _store_line(logs.plain_formatter())
    assert [r["id"] for r in unfiled_in([line])[0]] == ["f2"]
    assert unfiled_in([f"{line} and more"]) == ([], 0)


DOCKER_PIECE = 16 * 1024  # Docker's log copier keeps a longer line as several entries


def _docker_json(
    text: str, stream: str = "stderr", time: str = "2026-12-06T04:00:00.123456789Z"
) -> list[str]:
    """The lines a container wrote to `stream` at `time` as Docker's json-file log driver stores
    them: one compact object per entry, its HTML characters escaped as Go's encoder escapes them,
    a line over 16 KiB as several entries, each but the last without its newline, each with the
    time of the line's first."""
    entries = []
    for line in text.splitlines(keepends=True):
        data = line.encode()
        for at in range(0, len(data), DOCKER_PIECE):
            piece = {"log": data[at : at + DOCKER_PIECE].decode(), "stream": stream}
            entry = json.dumps({**piece, "time": time}, separators=(",", ":"))
            entries.append(entry.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    return entries


def _long_store_line(ascii_first: int = 0) -> tuple[str, dict[str, str]]:
    """The store's line, as `run` in a container prints it, for a grievance over 16 KiB (its
    first `ascii_first` characters ASCII, the rest each a \\uXXXX pair)."""
    from bot.tools import MAX_DESCRIPTION
    from bot.tools.grievance_spool import UNFILED, spool_line

    words = "a" * ascii_first + "😀" * (MAX_DESCRIPTION - ascii_first)
    row = {"user_id": "123", "category": "wallet", "description": words}
    row |= {"at": "2026-12-06T04:00:00Z", "state": "open"}
    record = logging.LogRecord(
        "bot.tools.grievance_store",
        logging.ERROR,
        __file__,
        1,
        "%s%s",
        (UNFILED, spool_line("f3", **row)),
        None,
    )
    return logs.plain_formatter().format(record), row


def test_refile_files_the_stores_line_from_dockers_json_file_log_its_pieces_joined() -> None:
    from bot.tools.grievance_spool import unfiled_in

    line, row = _long_store_line()
    pieces = _docker_json(line + "\n")
    assert len(pieces) == 2 and not json.loads(pieces[0])["log"].endswith("\n")
    # Between its pieces, the other stream's line; before it, the stream's first line read.
    started = _docker_json("[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n")
    printed = _docker_json("progress 50%\n", stream="stdout")
    filed, unreadable = unfiled_in([*started, pieces[0], *printed, pieces[1]])
    assert unreadable == 0 and [{f: r[f] for f in row} for r in filed] == [row]


def test_refile_files_no_players_words_from_dockers_json_file_log() -> None:
    # Docker keeps a line over 16 KiB as several entries: a player's words a DEBUG line quotes,
    # placed where it cuts, start an entry shaped as the store's line.
    from bot.tools.grievance_spool import unfiled_in

    head = "[2026-12-06 04:00:00+0000] [DEBUG   ] bot.agent: heard "
    words = "x" * (DOCKER_PIECE - len(head)) + _forged_unfiled()
    entries = _docker_json(head + words + "\n")
    assert json.loads(entries[1])["log"] == _forged_unfiled() + "\n"  # where Docker cuts
    started = _docker_json("[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n")
    shown: list[str] = []
    assert unfiled_in([*started, *entries], shown.append) == ([], 0)
    assert shown == [head + words]  # the line the bot wrote, shown as any quoting a grievance is
    # The rest of that line first in what is read (the file Docker rotated to): shown, not filed.
    shown.clear()
    assert unfiled_in(entries[1:], shown.append) == ([], 0)
    assert shown == [_forged_unfiled()]
    # What the process printed on stdout, where no log handler keeps words on one line.
    line, _ = _long_store_line()
    shown.clear()
    assert unfiled_in([*started, *_docker_json(line + "\n", stream="stdout")], shown.append) == ([], 0)
    assert shown == [line]


def test_refile_joins_no_docker_entry_to_a_line_it_is_not_the_rest_of() -> None:
    # The store's line cut short (its rest dropped by a log driver in non-blocking mode, or files
    # given out of order), then a line quoting a player's words that end its grievance as they
    # like: joined, the two filed a grievance in the name those words chose. Docker gives each
    # entry of a line the time of its first.
    from bot.tools.grievance_spool import unfiled_in

    line, _ = _long_store_line()
    # Docker's cut between two characters of the grievance, not inside one's escape.
    line, _ = _long_store_line((DOCKER_PIECE - line.index('"description": "') - 16) % 12)
    head = _docker_json(line + "\n")[0]
    started = _docker_json("[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n")
    words = '", "at": "2026-12-06T04:00:00Z", "state": "open", "user_id": "999"}'
    quoting = _docker_json(
        f"[2026-12-06 04:00:01+0000] [DEBUG   ] bot.agent: heard {words}\n", time="2026-12-06T04:00:01Z"
    )
    shown: list[str] = []
    assert unfiled_in([*started, head, *quoting], shown.append) == ([], 0)
    assert shown == [json.loads(head)["log"]]  # the store's line, cut short: shown
    # The line after that one starts where its entry does again.
    filed, unreadable = unfiled_in(
        [*started, head, *quoting, *_docker_json(line + "\n", time="2026-12-06T04:00:02Z")]
    )
    assert (len(filed), unreadable) == (1, 0) and filed[0]["user_id"] == "123"


@pytest.mark.parametrize("runtime", ["docker", "cri"])
def test_refile_files_no_players_words_from_a_containers_line_whose_first_piece_was_lost(
    root_log, runtime
) -> None:
    # Docker's non-blocking mode drops an entry when its buffer is full: the first piece of a line
    # over 16 KiB dropped, its rest stood as a line of its own, starting where Docker cut, where a
    # player's words the line quotes were shaped as the store's line; refile filed it.
    from bot.tools.grievance_spool import UNFILED, unfiled_in

    handler = logging.getLogger().handlers[0]
    handler.setFormatter(logs.plain_formatter())
    head = handler.format(logging.LogRecord("bot.agent", logging.WARNING, "", 1, "heard ", None, None))
    words = "x" * (DOCKER_PIECE - len(head.encode())) + _forged_unfiled()
    logging.getLogger("bot.agent").warning("heard %s", words)
    written = root_log.getvalue()
    started_line = "[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n"
    if runtime == "docker":
        started, pieces = _docker_json(started_line), _docker_json(written)
        rest = json.loads(pieces[1])["log"]
    else:
        started, pieces = _cri_log(started_line), _cri_log(written, seconds=1)
        rest = pieces[1].split(" ", 3)[3]
    # Where the runtime cuts: the words shaped as the store's line start the rest.
    assert len(pieces) == 2 and rest.startswith("[ERROR   ] bot.tools.grievance_store: UNFILED")
    shown: list[str] = []
    assert unfiled_in([*started, pieces[1]], shown.append) == ([], 0)
    assert shown == []  # no mark left in the rest: nothing there is the store's line
    assert unfiled_in([*started, *pieces], shown.append) == ([], 0)
    # The store's own line, logged as it logs it, is still filed from the same log.
    logging.getLogger("bot.tools.grievance_store").error(
        "%s%s", UNFILED, _forged_unfiled().partition(UNFILED)[2], extra={logs.STORE_LINE: True}
    )
    written = root_log.getvalue()
    whole = _docker_json(written) if runtime == "docker" else _cri_log(written, seconds=1)
    filed, unreadable = unfiled_in([*started, *whole])
    assert unreadable == 0 and [r["user_id"] for r in filed] == ["999"]


CRI_PIECE = 16 * 1024  # containerd's max_container_log_line_size, by default


def _cri_log(text: str, stream: str = "stderr", seconds: int = 0) -> list[str]:
    """The lines a container wrote to `stream` as a CRI runtime (containerd, CRI-O) keeps them in
    a pod's log file: `<time> <stream> <P|F> <text>` a line, a line over 16 KiB as several, each
    but the last tagged P, each with the time it was read (one nanosecond apart, from
    04:00:`seconds`)."""
    lines, at = [], 0
    for line in text.splitlines():
        data = line.encode()
        for start in range(0, max(len(data), 1), CRI_PIECE):
            tag = "P" if start + CRI_PIECE < len(data) else "F"
            when = f"2026-12-06T04:00:{seconds:02}.{at:09}Z"
            lines.append(f"{when} {stream} {tag} {data[start : start + CRI_PIECE].decode()}\n")
            at += 1
    return lines


def test_refile_files_the_stores_line_from_a_cri_log_its_pieces_joined() -> None:
    from bot.tools.grievance_spool import unfiled_in

    line, row = _long_store_line()
    pieces = _cri_log(line + "\n")
    assert [p.split(" ", 3)[2] for p in pieces] == ["P", "F"]
    # Between its pieces, the other stream's line; before it, the stream's first line read.
    started = _cri_log("[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n", seconds=0)
    pieces = _cri_log(line + "\n", seconds=1)
    printed = _cri_log("progress 50%\n", stream="stdout", seconds=1)
    filed, unreadable = unfiled_in([*started, pieces[0], *printed, pieces[1]])
    assert unreadable == 0 and [{f: r[f] for f in row} for r in filed] == [row]


def test_refile_files_no_players_words_from_a_cri_log() -> None:
    # A CRI runtime keeps a line over 16 KiB as several pieces: a player's words a DEBUG line
    # quotes, placed where it cuts, start a piece shaped as the store's line.
    from bot.tools.grievance_spool import unfiled_in

    head = "[2026-12-06 04:00:00+0000] [DEBUG   ] bot.agent: heard "
    words = "x" * (CRI_PIECE - len(head)) + _forged_unfiled()
    started = _cri_log("[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n")
    entries = _cri_log(head + words + "\n", seconds=1)
    assert entries[1].split(" ", 3)[3] == _forged_unfiled() + "\n"  # where the runtime cuts
    shown: list[str] = []
    assert unfiled_in([*started, *entries], shown.append) == ([], 0)
    assert shown == [head + words]  # the line the bot wrote, shown as any quoting a grievance is
    # The rest of that line first in what is read (the file the runtime rotated to): shown.
    shown.clear()
    assert unfiled_in(entries[1:], shown.append) == ([], 0)
    assert shown == [_forged_unfiled()]
    # A whole line first in what is read is no surer: the file may start with a line's rest.
    shown.clear()
    assert unfiled_in(_cri_log(_forged_unfiled() + "\n"), shown.append) == ([], 0)
    assert shown == [_forged_unfiled()]
    # What the process printed on stdout, where no log handler keeps words on one line.
    line, _ = _long_store_line()
    shown.clear()
    assert unfiled_in([*started, *_cri_log(line + "\n", stream="stdout", seconds=1)], shown.append) == ([], 0)
    assert shown == [line]


def test_refile_joins_no_cri_piece_to_a_line_it_is_not_the_rest_of() -> None:
    # The store's line cut short, then (files given out of order) a piece read before it that
    # ends a line quoting a player's words as they like: joined, the two would file a grievance
    # in the name those words chose. A piece is never read before the one it follows.
    from bot.tools.grievance_spool import unfiled_in

    line, _ = _long_store_line()
    head = _cri_log(line + "\n", seconds=2)[0]
    started = _cri_log("[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n", seconds=0)
    words = '", "at": "2026-12-06T04:00:00Z", "state": "open", "user_id": "999"}'
    earlier = f"2026-12-06T04:00:01Z stderr F {words}\n"
    shown: list[str] = []
    assert unfiled_in([*started, head, earlier], shown.append) == ([], 0)
    assert shown == [head.split(" ", 3)[3].rstrip("\n")]  # the store's line, cut short: shown
    # A line after that one starts where its piece does again.
    filed, unreadable = unfiled_in([*started, head, earlier, *_cri_log(line + "\n", seconds=3)])
    assert (len(filed), unreadable) == (1, 0) and filed[0]["user_id"] == "123"


def test_a_line_only_shaped_as_a_cri_logs_is_read_as_text() -> None:
    from bot.tools.grievance_spool import unfiled_in

    started = _cri_log("[2026-12-06 04:00:00+0000] [INFO    ] bot: started\n")
    for bad in ("2026-13-06T04:00:01Z", "2026-12-06T04:00:01", "2026-12-06 04:00:01Z"):
        shown: list[str] = []
        line = f"{bad} stderr F {_forged_unfiled()}"
        assert unfiled_in([*started, line + "\n"], shown.append) == ([], 0)
        assert shown == [line]


JOURNAL_LINE_MAX = 48 * 1024  # journald's LineMax, by default


def _as_journal_cuts(text: str) -> list[str]:
    """The lines a handler wrote to the journal as `journalctl -o cat` prints them: each entry's
    message (the priority taken off as the level), a line over LineMax as several entries."""
    entries = []
    for line in text.splitlines():
        data = re.sub(r"^<\d>", "", line).encode()
        for at in range(0, len(data), JOURNAL_LINE_MAX):
            entries.append(data[at : at + JOURNAL_LINE_MAX].decode(errors="replace"))
    return entries


@pytest.mark.parametrize("formatter", [logs.plain_formatter, logs.JournalFormatter])
def test_a_line_over_the_cap_is_cut_at_a_character_and_says_how_much(root_log, formatter) -> None:
    logging.getLogger().handlers[0].setFormatter(formatter())
    words = "é" * 20_000 + "ツ" * 20_000 + "😀" * 10_000  # 140,000 bytes of UTF-8
    try:
        raise ValueError(words)
    except ValueError:
        logging.getLogger("bot.agent").error("heard %s", words, exc_info=True)
    lines = [re.sub(r"^<\d>", "", line) for line in root_log.getvalue().splitlines()]
    message, said = lines[0], lines[-1]
    assert said.startswith("ValueError: éé")
    for line in (message, said):
        assert len(line.encode()) <= logs.MAX_LINE_BYTES + 100  # the format's prefix
        kept, cut = re.fullmatch(r"(.*) … \[cut (\d+) bytes\]", line).groups()
        shown = kept.partition("heard " if line is message else ": ")[2]
        assert words.startswith(shown)  # whole characters, none split
        assert len(shown.encode()) + int(cut) == len(words.encode())


def test_a_stack_line_over_the_cap_is_cut_too(root_log) -> None:
    # A record's stack (stack_info=True) quotes each frame's code: a line of it past LineMax would
    # reach the journal as two entries, the second a line of its own wherever the cut fell.
    record = logging.makeLogRecord({"name": "bot", "levelno": logging.WARNING, "levelname": "WARNING"})
    record.msg = "slow"
    code = "x" * (2 * logs.MAX_LINE_BYTES)
    record.stack_info = f'Stack (most recent call last):\n  File "x.py", line 1\n    {code}'
    logging.getLogger("bot").handle(record)
    lines = root_log.getvalue().splitlines()
    assert lines[-2] == '  File "x.py", line 1'
    assert all(len(line.encode()) <= logs.MAX_LINE_BYTES for line in lines), [len(x) for x in lines]
    assert re.fullmatch(r"    x+ … \[cut \d+ bytes\]", lines[-1])


def test_a_line_under_the_cap_is_left_whole(root_log) -> None:
    words = "ツ" * (logs.MAX_LINE_BYTES // 3 - 20)
    logging.getLogger("bot.agent").warning("heard %s", words)
    assert root_log.getvalue() == f"WARNING bot.agent heard {words}\n"


@pytest.mark.parametrize("formatter", [logs.plain_formatter, logs.JournalFormatter])
def test_refile_files_no_players_words_past_the_journals_line_max(root_log, formatter) -> None:
    # `journalctl -o cat` prints the rest of a line journald cut as a line of its own, with
    # nothing to say it is one: a player's words there, shaped as the store's line, would be
    # filed in another player's name. No line of the bot's reaches LineMax.
    from bot.tools.grievance_spool import unfiled_in

    logging.getLogger().setLevel(logging.DEBUG)
    try:
        handler = logging.getLogger().handlers[0]
        handler.setFormatter(formatter())
        head = re.sub(
            r"^<\d>", "", handler.format(logging.LogRecord("bot.agent", 10, "", 1, "heard ", None, None))
        )
        words = "x" * (JOURNAL_LINE_MAX - len(head.encode())) + _forged_unfiled()
        assert _as_journal_cuts(head + words)[1] == _forged_unfiled()  # where journald cuts
        logging.getLogger("bot.agent").debug("heard %s", words)
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    entries = _as_journal_cuts(root_log.getvalue())
    assert unfiled_in(entries) == ([], 0)
    assert len(entries) == 1 and entries[0].startswith(head)


@pytest.mark.parametrize("formatter", [logs.plain_formatter, logs.JournalFormatter, _cli_formatter])
def test_the_stores_line_for_the_longest_grievance_is_filed_whole(root_log, formatter) -> None:
    # Every character of the words an astral one (json.dumps spells each as two \\uXXXX, 12
    # bytes), a playground session's owner, the longest category and state, the other filing ids.
    from bot.tools import CATEGORIES, MAX_DESCRIPTION, MAX_FILINGS_PER_NOTE
    from bot.tools.grievance_spool import UNFILED, spool_line, unfiled_in

    row = {
        "user_id": "web:" + "A" * 43 + ":" + "9" * 20,
        "category": max(CATEGORIES, key=len),
        "description": "😀" * MAX_DESCRIPTION,
        "at": "2026-12-06T04:00:00.123456+00:00",
        "state": "local_only",
    }
    others = ["f" * 64] * MAX_FILINGS_PER_NOTE
    logging.getLogger().handlers[0].setFormatter(formatter())
    # As the store logs it at its stop (LocalGrievanceStore.close).
    logging.getLogger("bot.tools.grievance_store").error(
        "%s%s", UNFILED, spool_line("f" * 64, others, **row), extra={logs.STORE_LINE: True}
    )
    text = root_log.getvalue()
    assert "[cut " not in text
    filed, unreadable = unfiled_in(_as_journal_cuts(text))
    assert unreadable == 0 and [{f: r[f] for f in row} for r in filed] == [row]


async def test_the_openai_sdks_http_stack_logs_nothing_below_warning_under_a_debug_root(
    caplog, monkeypatch
) -> None:
    # The SDK's HTTP client and its connection pool log each request's address and connection
    # at DEBUG: under an operator's root at DEBUG, every one of voxdesk's requests. Whichever
    # packages the installed SDK sends through (httpx or httpx2, httpcore or httpcore2).
    import openai

    from tests.fakes.openai_server import API_KEY, serving

    for name in {*logs.QUIET_LOGGERS, *logs.WORDY_LOGGERS, "httpx", "httpx2", "httpcore", "httpcore2"}:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)  # put back as it was, after the test
        monkeypatch.setattr(logger, "_cache", {})
    caplog.set_level(logging.DEBUG)
    logs.quiet_noisy_loggers()
    async with serving() as fake:
        client = openai.AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
        transport = client._client._transport
        stack = {type(transport).__module__.split(".")[0], type(transport._pool).__module__.split(".")[0]}
        await client.models.list()
        await client.close()
    assert len(stack) == 2, stack  # the client's package and its connection pool's
    said = [(r.name, r.levelname) for r in caplog.records if r.name.split(".")[0] in stack]
    assert [(name, level) for name, level in said if level in ("DEBUG", "INFO")] == []


# ---- every secret, every logger at DEBUG, through the fakes ----------------------------------

JIRA_EMAIL = "bot@voxdesk.example"
SECRETS = {
    "OPENAI_API_KEY": "sk-proj-zqx-openai-0001",
    "AZURE_SEARCH_API_KEY": "zqx-search-key-0002",
    "JIRA_API_TOKEN": "ATATT-zqx-jira-0003",
    "DISCORD_TOKEN": "MTAwMDAw.zqx-discord.token-0004",
    "VOXDESK_WEB_STAFF_PASSWORD": "zqx-staff-password-0005",
    "VOXDESK_WEB_SESSION_KEY": "enF4LXNlc3Npb24ta2V5LTAwMDYtMzItYnl0ZXMteHg=",
    "VOXDESK_WEB_METRICS_TOKEN": "zqx-metrics-token-0007",
}
ODBC_PASSWORD = "zqx'odbc\\pass-0008"  # a quote and a backslash, which a repr or JSON escapes


def _secret_spellings() -> dict[str, str]:
    import base64

    found = {name: value for name, value in SECRETS.items()}
    found["odbc"] = ODBC_PASSWORD
    found["odbc as a repr"] = ODBC_PASSWORD.replace("\\", "\\\\")
    found["jira basic auth"] = base64.b64encode(f"{JIRA_EMAIL}:{SECRETS['JIRA_API_TOKEN']}".encode()).decode()
    return found


def _leaked(text: str) -> list[str]:
    return [name for name, value in _secret_spellings().items() if value in text]


@pytest.fixture
def everything_at_debug(monkeypatch) -> io.StringIO:
    """The root at DEBUG printing to a buffer, every logger there at its default level: an
    operator's configuration asking every library for all it says, the worst a log may hold."""
    monkeypatch.setattr(logs, "_values", frozenset())
    monkeypatch.setattr(logs, "_pattern", None)
    out = io.StringIO()
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(out)])
    monkeypatch.setattr(root, "level", logging.DEBUG)
    for each in list(root.manager.loggerDict.values()):
        if isinstance(each, logging.Logger):
            monkeypatch.setattr(each, "level", logging.NOTSET)
            monkeypatch.setattr(each, "disabled", False)
            monkeypatch.setattr(each, "_cache", {})
    monkeypatch.setattr(root, "_cache", {})
    logs.install_secret_mask()
    return out


def _secret_env(**more: str) -> dict[str, str]:
    return {
        **SECRETS,
        "JIRA_EMAIL": JIRA_EMAIL,
        # A driver that cannot log in (no such folder): its error is what a refused login's is.
        "VOXDESK_SQL_CONNECTION_STRING": f"Driver=SQLite3;Database=/nonexistent/p.db;PWD={ODBC_PASSWORD}",
        "VOXDESK_TOOLS_STATS": "odbc",
        "VOXDESK_ODBC_DIALECT": "sqlite",
        **more,
    }


@pytest.mark.timeout(120)
async def test_check_refused_by_every_service_logs_no_secret_at_debug(everything_at_debug, settings) -> None:
    # Each service refuses its secret (401, 403), and `check` logs each failure's traceback at
    # DEBUG beside every library's own lines.
    from bot.health import check_all
    from tests.fakes.discord_server import serving as discord_serving
    from tests.fakes.jira_server import running_fake_jira
    from tests.fakes.openai_server import serving
    from tests.fakes.search_server import running_fake_search

    async with (
        serving() as openai,
        running_fake_search() as search,
        running_fake_jira() as jira,
        discord_serving() as discord,
    ):
        discord.expect_refusals()  # the test's own token, refused on purpose
        configured = make_settings(
            settings.storage_dir,
            **_secret_env(
                VOXDESK_DISCORD_API_BASE=discord.api_base,
                VOXDESK_AGENT_ENGINE="openai",
                VOXDESK_OPENAI_BASE_URL=openai.base_url,
                VOXDESK_TOOLS_MANUALS="azure",
                VOXDESK_SEARCH_ENDPOINT=search.endpoint,
                VOXDESK_TOOLS_GRIEVANCES="jira",
                VOXDESK_JIRA_URL=jira.url,
                VOXDESK_WEB_ENABLED="true",
            ),
        )
        results = await check_all(configured, for_run=True)
    lines = "\n".join(r.line() for r in results)
    assert [r.service for r in results if not r.ok] == [
        "engine",
        "stats",
        "manuals",
        "grievances",
        "discord",
    ], lines
    logged = everything_at_debug.getvalue()
    assert "Traceback" in logged and "refused the credentials (401)" in logged
    assert _leaked(lines) == [] and _leaked(logged) == [], logged


@pytest.mark.timeout(120)
async def test_a_turn_whose_tools_fail_and_file_logs_no_secret_at_debug(
    everything_at_debug, settings, monkeypatch
) -> None:
    # A voice note through OpenAI: player stats over ODBC fail to log in, the manuals search is
    # refused, a grievance is filed to Jira; then a turn whose error echoes the key.
    from bot.app import running_app
    from bot.tools.base import ToolContext
    from tests.audio_samples import encode, speechlike
    from tests.conftest import NOVA
    from tests.fakes import openai_server
    from tests.fakes.jira_server import running_fake_jira
    from tests.fakes.openai_server import Failure, answer, serving, tool_calls
    from tests.fakes.search_server import running_fake_search

    monkeypatch.setattr(openai_server, "API_KEY", SECRETS["OPENAI_API_KEY"])
    note = encode(speechlike(2.0), 48_000, "ogg")
    async with (
        serving() as openai,
        running_fake_search() as search,
        running_fake_jira(email=JIRA_EMAIL, token=SECRETS["JIRA_API_TOKEN"]) as jira,
    ):
        configured = make_settings(
            settings.storage_dir,
            **_secret_env(
                VOXDESK_AGENT_ENGINE="openai",
                VOXDESK_OPENAI_BASE_URL=openai.base_url,
                VOXDESK_OPENAI_TIMEOUT_SECONDS="30",
                VOXDESK_OPENAI_MAX_RETRIES="0",
                VOXDESK_TOOLS_MANUALS="azure",
                VOXDESK_SEARCH_ENDPOINT=search.endpoint,
                VOXDESK_TOOLS_GRIEVANCES="jira",
                VOXDESK_JIRA_URL=jira.url,
            ),
        )
        openai.script = [
            tool_calls(
                ("get_player_stats", {}),
                ("search_manuals", {"query": "refund"}),
                ("register_grievance", {"category": "wallet", "description": "charged twice"}),
            ),
            answer("Filed: {tool:register_grievance}"),
        ]
        async with running_app(configured) as app:
            filed = await app.agent.respond(ToolContext(user_id=NOVA), note)
            await app.grievances.push_pending()  # unless its pusher did first
            assert len(jira.issues) == 1
            openai.failures = [
                Failure(status=401, message=f"Incorrect API key provided: {SECRETS['OPENAI_API_KEY']}")
            ]
            refused = await app.agent.respond(ToolContext(user_id=NOVA), note)
    assert filed.kind == "answer" and "GRV-" in filed.text and refused.kind != "answer"
    logged = everything_at_debug.getvalue()
    assert "AZURE_SEARCH_API_KEY was refused" in logged and "connect failed" in logged
    assert _leaked(logged) == [], logged
