import dataclasses
import logging
import os
import re
import tomllib
from pathlib import Path

import pytest

from bot.config import OPENAI_SDK_ENV, SECTIONS, ConfigError, Secrets, load_settings, require_discord_token

from .conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_repo_config_loads_with_no_secrets() -> None:
    settings = load_settings(REPO / "config.toml", environ={})
    assert settings.agent.engine == "offline"
    assert settings.tools.stats == "sqlite"


def test_environment_overrides_every_kind_of_setting(tmp_path: Path) -> None:
    env = {
        "VOXDESK_STORAGE_DIR": "/tmp/x",
        "VOXDESK_AGENT_MAX_TOOL_ROUNDS": "5",
        "VOXDESK_AUDIO_MAX_SECONDS": "30.5",
        "VOXDESK_DISCORD_ANSWER_MENTIONS": "false",
        "VOXDESK_DISCORD_CHANNELS": "1, 2,3",
    }
    settings = load_settings(REPO / "config.toml", environ=env)
    assert settings.storage.dir == "/tmp/x"
    assert settings.agent.max_tool_rounds == 5
    assert settings.audio.max_seconds == 30.5
    assert settings.discord.answer_mentions is False
    assert settings.discord.channels == [1, 2, 3]


def test_text_settings_from_the_environment_lose_a_line_ends_carriage_return() -> None:
    # A CRLF file from a Windows editor sourced by a shell (`set -a; . ./voxdesk.env`) leaves a
    # "\r" on every value: numbers and lists were read, but a text setting kept it, and the data
    # went to a folder named "voxdesk\r" and every request asked for a model "gpt-audio\r".
    env = {
        "VOXDESK_STORAGE_DIR": "/srv/voxdesk\r",
        "VOXDESK_OPENAI_MODEL": "gpt-audio \r",
        "VOXDESK_AGENT_ENGINE": "offline\r",
        "VOXDESK_JIRA_PROJECT": " GRV",
    }
    settings = load_settings(REPO / "config.toml", environ=env)
    assert settings.storage.dir == "/srv/voxdesk"
    assert settings.openai.model == "gpt-audio"
    assert settings.agent.engine == "offline"
    assert settings.jira.project == "GRV"


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"VOXDESK_STORAGE_DIR": '"/srv/voxdesk"'}, "storage.dir: VOXDESK_STORAGE_DIR = '\"/srv/voxdesk\"'"),
        ({"VOXDESK_OPENAI_MODEL": "'gpt-audio' "}, "openai.model: VOXDESK_OPENAI_MODEL = \"'gpt-audio' \""),
        # Numbers, switches and lists too: "'\"3\"' is not an integer" left the quotes to be spotted.
        (
            {"VOXDESK_AGENT_MAX_TOOL_ROUNDS": '"3"'},
            "agent.max_tool_rounds: VOXDESK_AGENT_MAX_TOOL_ROUNDS = '\"3\"'",
        ),
        ({"VOXDESK_WEB_ENABLED": "'true'"}, "web.enabled: VOXDESK_WEB_ENABLED = \"'true'\""),
        (
            {"VOXDESK_DISCORD_CHANNELS": '"123,456"'},
            "discord.channels: VOXDESK_DISCORD_CHANNELS = '\"123,456\"'",
        ),
    ],
)
def test_a_setting_in_quotes_from_the_environment_is_refused(env: dict, said: str) -> None:
    # docker run --env-file keeps quotes as part of the value: storage.dir was a folder named
    # '"/srv/voxdesk"' inside the container's working directory, not the volume, and the data
    # was gone with the container.
    with pytest.raises(ConfigError) as caught:
        load_settings(REPO / "config.toml", environ=env)
    assert str(caught.value) == (
        f"{said} is in quotes, which are kept as part of the value (docker's --env-file keeps"
        " them): remove them"
    )


@pytest.mark.parametrize(
    ("env", "toml", "said"),
    [
        (
            {"VOXDESK_OPENAI_BASE_URL": '"https://bot:proxy-pass-0123@gw.example/v1"'},
            "",
            "openai.base_url: VOXDESK_OPENAI_BASE_URL = '\"https://bot:***@gw.example/v1\"' is in quotes",
        ),
        (
            # Both quotes in the value: its repr escapes the password's apostrophe, which the
            # password's own repr does not.
            {"VOXDESK_OPENAI_BASE_URL": '"https://bot:it\'s-pass-0123@gw.example/v1"'},
            "",
            "openai.base_url: VOXDESK_OPENAI_BASE_URL = '\"https://bot:***@gw.example/v1\"' is in quotes",
        ),
        (
            {"VOXDESK_JIRA_URL": "'https://jira.example/?api-version=2&token=query-key%2B4567'"},
            "",
            "jira.url: VOXDESK_JIRA_URL = \"'https://jira.example/?api-version=2&token=***'\" is in quotes",
        ),
        (
            {},
            '[jira]\nurl = ["https://bot:list-pass%2189ab@jira.example"]\n',
            "jira.url = ['https://bot:***@jira.example'] in ",
        ),
    ],
)
def test_a_refused_settings_value_is_quoted_without_its_addresss_credentials(
    tmp_path: Path, env: dict, toml: str, said: str
) -> None:
    # Said before the settings' secrets are masked: docker's --env-file keeps the quotes of
    # OPENAI_BASE_URL="https://user:pass@gateway/v1", and the refusal printed the password.
    config = write(tmp_path, toml) if toml else REPO / "config.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=env)
    assert said in str(caught.value)
    assert not re.search(r"pass-0123|4567|89ab", str(caught.value)), caught.value


def test_a_secret_in_quotes_is_a_warning_naming_it_not_its_value(caplog: pytest.LogCaptureFixture) -> None:
    # Sent with its quotes, it is refused by the service with a 401 that names no cause.
    caplog.set_level(logging.WARNING, logger="bot.config")
    load_settings(REPO / "config.toml", environ={"JIRA_API_TOKEN": '"ATATT-secret-1234"'})
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == (
        "JIRA_API_TOKEN is in quotes, which are sent as part of it (docker's --env-file keeps"
        " them): remove them unless they belong to it"
    )
    # Said once, as what it is: not also as a key of another service's for lacking "sk-" first.
    caplog.clear()
    env = {"VOXDESK_AGENT_ENGINE": "openai", "OPENAI_API_KEY": "'sk-proj-secret-5678'"}
    load_settings(REPO / "config.toml", environ=env)
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("OPENAI_API_KEY is in quotes") and "secret-5678" not in said


def test_a_secret_too_short_to_mask_in_the_log_is_a_warning_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The log's mask hides a value under 8 characters only where it stands as a word of its own
    # (masked everywhere, its letters would go from every line), and such a password is easily
    # guessed: the operator is told.
    caplog.set_level(logging.WARNING, logger="bot.config")
    env = {
        "VOXDESK_SQL_CONNECTION_STRING": "Driver={ODBC Driver 18};Server=db;UID=bot;PWD=hunter2;",
        "HTTPS_PROXY": "http://bot:p%40ss@proxy.example:3128",
        "JIRA_API_TOKEN": "tok",
        "AZURE_SEARCH_API_KEY": "k" * 32,
        "OPENAI_BASE_URL": "https://bot:long-enough-password@gw.example/v1",
    }
    load_settings(REPO / "config.toml", environ=env)
    said = [r.getMessage() for r in caplog.records]
    tail = (
        " is shorter than 8 characters: the log masks it only as a word of its own (not inside a"
        " longer one), and it is easily guessed; give it its full length"
    )
    assert said == [
        "JIRA_API_TOKEN" + tail,
        "a password in VOXDESK_SQL_CONNECTION_STRING" + tail,
        "the password in HTTPS_PROXY" + tail,
    ]
    assert not re.search(r"hunter2|p@ss|p%40ss|tok\b", caplog.text)


def test_a_secret_too_short_to_mask_at_all_is_a_warning_saying_so(caplog: pytest.LogCaptureFixture) -> None:
    # Under 3 characters the log does not mask a value even as a word of its own (it would take
    # "a" or "ab" from every line): the warning must not say it is masked.
    caplog.set_level(logging.WARNING, logger="bot.config")
    env = {
        "VOXDESK_SQL_CONNECTION_STRING": "Driver={ODBC Driver 18};Server=db;UID=bot;PWD=ab;",
        "AZURE_SEARCH_API_KEY": "k" * 32,
    }
    load_settings(REPO / "config.toml", environ=env)
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "a password in VOXDESK_SQL_CONNECTION_STRING is shorter than 3 characters: the log does not"
        " mask it (it would mask that word in every line), and it is guessed at once; give it its"
        " full length"
    ]


def test_each_place_a_short_secret_may_be_set_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    # Braced, a password is found written and unbraced (named once); a proxy's is counted as
    # it is sent, unquoted (6 characters, 8 as written); a token of 8 is long enough to mask.
    caplog.set_level(logging.WARNING, logger="bot.config")
    env = {
        "VOXDESK_SQL_CONNECTION_STRING": "Driver={ODBC Driver 18};Server=db;UID=bot;PWD={hunt};",
        "HTTPS_PROXY": "http://bot:abcd%40e@proxy.example:3128",
        "JIRA_API_TOKEN": "tok45678",
        "AZURE_CLIENT_SECRET": "sec",
        "VOXDESK_WEB_METRICS_TOKEN": "met",
        "VOXDESK_OPENAI_BASE_URL": "https://bot:gw@gw.example/v1",
        "AZURE_SEARCH_API_KEY": "k" * 32,
    }
    load_settings(REPO / "config.toml", environ=env)
    named = [r.getMessage().partition(" is shorter than ")[0] for r in caplog.records]
    assert named == [
        "VOXDESK_WEB_METRICS_TOKEN",
        "a password in VOXDESK_SQL_CONNECTION_STRING",
        "AZURE_CLIENT_SECRET",
        "the password in HTTPS_PROXY",
        "the password in openai.base_url",
    ]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\nmax_tool_rounds = 7\n")
    assert load_settings(environ={"VOXDESK_CONFIG": str(path)}).agent.max_tool_rounds == 7


def test_a_config_path_from_the_environment_loses_a_line_ends_carriage_return(tmp_path: Path) -> None:
    # As every VOXDESK_* value does: from a CRLF file sourced by a shell, "config file
    # /etc/voxdesk/config.toml not found" named a file that plainly exists (the "\r" unseen).
    path = write(tmp_path, "[agent]\nmax_tool_rounds = 7\n")
    assert load_settings(environ={"VOXDESK_CONFIG": f"{path}\r"}).agent.max_tool_rounds == 7


def test_a_config_path_from_the_environment_starting_with_a_tilde_is_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A unit's Environment= does not expand "~", as --config's shell may not: Path("~/x") is a
    # file in a folder named "~" in the working one.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    write(home, "[agent]\nmax_tool_rounds = 7\n")
    assert load_settings(environ={"VOXDESK_CONFIG": "~/config.toml"}).agent.max_tool_rounds == 7


@pytest.mark.parametrize(
    ("text", "env", "names"),
    [
        ("[agent]\nengin = 'openai'\n", {}, "agent.engin"),
        ("[agnt]\nengine = 'openai'\n", {}, "[agnt]"),
        ("[agent]\nmax_tool_rounds = 'three'\n", {}, "agent.max_tool_rounds"),
        ("[agent]\nengine = 'gpt'\n", {}, "agent.engine"),
        ("", {"VOXDESK_AGENT_MAX_TOOL_ROUNDS": "many"}, "agent.max_tool_rounds"),
        ("[agent]\nengine = 'openai'\n", {}, "OPENAI_API_KEY"),
        ("[tools]\ngrievances = 'jira'\n", {"JIRA_EMAIL": "a@b.c"}, "JIRA_API_TOKEN"),
        # Jira's project keys are upper case: the client refused one at the backend's build, and
        # `run` stopped there on a traceback, status 1.
        (
            "[tools]\ngrievances = 'jira'\n[jira]\nproject = 'grv'\n",
            {},
            "jira.project = 'grv': Jira project keys are upper case: set it to 'GRV'",
        ),
        ("[tools]\ngrievances = 'jira'\n", {"VOXDESK_JIRA_PROJECT": "G-RV"}, "not a Jira project key"),
        ("[tools]\nstats = 'odbc'\n", {}, "VOXDESK_SQL_CONNECTION_STRING"),
        ("[agent\n", {}, "not valid TOML"),
        # Values of the right type that would break the bot later, not at load:
        ("", {"VOXDESK_CONVERSATIONS_MAX_TURNS": "-1"}, "conversations.max_turns"),  # SQLite LIMIT -1: all
        ("", {"VOXDESK_AGENT_MAX_CONCURRENT_TURNS": "0"}, "agent.max_concurrent_turns"),  # no turn, ever
        ("", {"VOXDESK_TOOLS_MANUAL_RESULTS": "-1"}, "tools.manual_results"),
        ("", {"VOXDESK_AUDIO_SILENCE_THRESHOLD_DB": "6"}, "audio.silence_threshold_db"),
        ("", {"VOXDESK_WEB_PORT": "70000"}, "web.port"),
        ("", {"VOXDESK_WEB_PLAYGROUND_TURNS": "0"}, "web.playground_turns"),  # no playground note, ever
        ("", {"VOXDESK_WEB_PLAYGROUND_NOTES_PER_MINUTE": "0"}, "web.playground_notes_per_minute"),
        # Under `voxdesk run` anonymous visitors would hold every turn Discord players need.
        ("[web]\nenabled = true\nplayground_turns = 8\n", {}, "below agent.max_concurrent_turns"),
        ("", {"VOXDESK_WEB_TRUSTED_PROXIES": "127.0.0.1,my-proxy"}, "web.trusted_proxies"),
        # A name, as the Host header carries it: an address pasted whole would match no request.
        ("", {"VOXDESK_WEB_ALLOWED_HOSTS": "https://support.example.com/"}, "web.allowed_hosts"),
        # Another framework's patterns for every subdomain: names compare whole, so every page
        # would be a 421, the subdomains' too.
        ("", {"VOXDESK_WEB_ALLOWED_HOSTS": "*.example.com"}, "web.allowed_hosts: '*.example.com'"),
        ("[web]\nallowed_hosts = ['.example.com']\n", {}, "list each name whole"),
        ("", {"VOXDESK_OPENAI_VOICE": "Alloy"}, "openai.voice"),
        # Each round is one more billed request carrying the whole prompt: a looping model ran on.
        ("", {"VOXDESK_AGENT_MAX_TOOL_ROUNDS": "1000"}, "agent.max_tool_rounds = 1000: it is 0 to 10"),
        # A wait of inf never ends (a grievance never pushed); nan passes every range check.
        ("", {"VOXDESK_JIRA_MAX_BACKOFF_SECONDS": "inf"}, "max_backoff_seconds = inf: it must be finite"),
        ("[jira]\nsettle_seconds = nan\n", {}, "jira.settle_seconds = nan: it must be finite"),
        ("", {"VOXDESK_DISCORD_DEFER_AFTER_SECONDS": "10"}, "discord.defer_after_seconds"),
        # Each worker loads every speech model: 100 under Whisper ran out of memory at start, and
        # the log blamed the Whisper model.
        ("", {"VOXDESK_OFFLINE_WORKERS": "100"}, "offline.workers = 100: at most 16"),
        # discord.py waits out any limit up to 30 s: 10 acted as 30.
        ("[discord]\nrate_limit_seconds = 10\n", {}, "discord.rate_limit_seconds = 10: discord.py waits out"),
        ('[usage.prices."gpt-audio-1.5"]\ntext_in = "2.5"\n', {}, "usage.prices.'gpt-audio-1.5'.text_in"),
        ('[usage.prices."gpt-audio-1.5"]\ntext_inn = 2.5\n', {}, "usage.prices.'gpt-audio-1.5'.text_inn"),
        # TOML takes nan and inf: a nan cost (inf times no tokens is one) is stored as NULL, which
        # cost_usd refuses, so no turn's usage would be recorded and no daily budget hold.
        ('[usage.prices."gpt-audio-1.5"]\ntext_in = nan\n', {}, "usage.prices.'gpt-audio-1.5'.text_in = nan"),
        (
            '[usage.prices."gpt-audio-1.5"]\naudio_out = inf\n',
            {},
            "usage.prices.'gpt-audio-1.5'.audio_out = inf",
        ),
        ("[usage.price_as]\nvoxdesk-audio = 'gpt-audio-15'\n", {}, "usage.price_as.'voxdesk-audio'"),
        # A Windows path in "double quotes": "\v" is no TOML escape.
        ('[storage]\ndir = "C:\\voxdesk\\var"\n', {}, "write a Windows path in 'single quotes'"),
        # Copied from a Windows machine: elsewhere a folder named so in the working directory.
        ("[storage]\ndir = 'C:\\voxdesk\\var'\n", {}, "storage.dir = C:\\voxdesk\\var is a Windows path"),
        ("", {"VOXDESK_STORAGE_MANUALS_DIR": "D:/manuals"}, "storage.manuals_dir = D:/manuals is a Windows"),
        # Addresses pasted whole from a portal or a browser: every request would be a 404.
        (
            "[agent]\nengine = 'openai'\n[openai]\nprovider = 'azure'\nazure_deployment = 'audio'\n"
            "azure_endpoint = 'https://st.openai.azure.com/openai/deployments/audio/chat/completions"
            "?api-version=2025-01-01-preview'\n",
            {"AZURE_OPENAI_API_KEY": "k" * 32},
            "set it to https://st.openai.azure.com alone (the rest goes in openai.azure_deployment",
        ),
        (
            "[tools]\nmanuals = 'azure'\n[search]\nendpoint = \"https://st.search.windows.net/indexes('manuals')\"\n",
            {"AZURE_SEARCH_API_KEY": "k" * 32},
            "set it to https://st.search.windows.net alone (the rest goes in search.index)",
        ),
        (
            "[tools]\ngrievances = 'jira'\n[jira]\nurl = 'https://st.atlassian.net/jira/software/projects/GRV'\n",
            {"JIRA_EMAIL": "a@b.c", "JIRA_API_TOKEN": "t" * 16},
            "jira.url = 'https://st.atlassian.net/jira/software/projects/GRV' has a path: set it to"
            " https://st.atlassian.net alone",
        ),
        # The query alone, as a REST example shows the service's address.
        (
            "[tools]\nmanuals = 'azure'\n[search]\nendpoint = 'https://st.search.windows.net/?api-version=2024-07-01'\n",
            {"AZURE_SEARCH_API_KEY": "k" * 32},
            "set it to https://st.search.windows.net alone (the rest goes in search.index)",
        ),
        (
            "[tools]\nmanuals = 'azure'\n[search]\nendpoint = 'https://st.search.windows.net'\n"
            "auth = 'managed-identity'\n",
            {},
            "search.auth = 'managed-identity': choose one of key, entra",
        ),
        # An index name Azure AI Search refuses: `check` said to run index-manuals, which said
        # the service refused the name.
        (
            "[tools]\nmanuals = 'azure'\n[search]\nendpoint = 'https://st.search.windows.net'\n"
            "index = 'Game Manuals'\n",
            {"AZURE_SEARCH_API_KEY": "k" * 32},
            "search.index = 'Game Manuals' is no Azure AI Search index name: lowercase letters, digits"
            " and dashes, a letter or digit first, at most 128",
        ),
        # Over 128 characters the service refuses the name as it does 'Game Manuals'.
        (
            "[tools]\nmanuals = 'azure'\n[search]\nendpoint = 'https://st.search.windows.net'\n"
            f"index = '{'m' * 129}'\n",
            {"AZURE_SEARCH_API_KEY": "k" * 32},
            f"search.index = '{'m' * 129}' is no Azure AI Search index name",
        ),
        # An unclosed "[" is an IPv6 host to urllib, which raises: a traceback would name no setting.
        (
            "[tools]\ngrievances = 'jira'\n[jira]\nurl = 'https://[mysite.atlassian.net'\n",
            {"JIRA_EMAIL": "a@b.c", "JIRA_API_TOKEN": "t" * 16},
            "jira.url cannot be read as an address (Invalid IPv6 URL)",
        ),
        (
            "",
            {"VOXDESK_OPENAI_BASE_URL": "http://[::1:8080/v1"},
            "openai.base_url cannot be read as an address",
        ),
        (
            "",
            {"OPENAI_BASE_URL": "http://user:pw@[gateway/v1"},
            "OPENAI_BASE_URL cannot be read as an address",
        ),
        # Without a scheme urlsplit finds no host, and passes it; the start's log line reads it
        # as a host (shown_url), and raised.
        (
            "",
            {"OPENAI_BASE_URL": "user:pw@[gateway/v1"},
            "OPENAI_BASE_URL cannot be read as an address",
        ),
    ],
)
def test_bad_settings_stop_with_one_line_naming_the_key(
    tmp_path: Path, text: str, env: dict, names: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=env)
    message = str(caught.value)
    assert names in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[agent]\nmax_tool_rounds = 20\n", "agent.max_tool_rounds = 20: it is 0 to 10"),
        ("[agent]\nengine = 'gpt'\n", "agent.engine = 'gpt': choose one of offline, openai"),
        ("[offline]\nlanguages = 'en,sp'\n", "offline.languages = 'en,sp'"),
        ("[web]\nport = 70000\n", "web.port = 70000: a port is 0 to 65535"),
    ],
)
def test_a_value_out_of_range_names_where_it_was_set(tmp_path: Path, text: str, said: str) -> None:
    # The file may be any of several (--config, VOXDESK_CONFIG), and a VOXDESK_* variable in a
    # unit or .env overrides it: a message naming the setting alone sent the operator to a
    # config.toml that holds a good value.
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(said)
    assert str(caught.value).endswith(f"; set in {path}")
    key = said.split(" ", 1)[0]
    var = "VOXDESK_" + key.replace(".", "_").upper()
    value = tomllib.loads(text)[key.split(".")[0]][key.split(".")[1]]
    good = write(tmp_path, f"[{key.split('.')[0]}]\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(good, environ={var: str(value)})
    assert str(caught.value).startswith(said)
    assert str(caught.value).endswith(f"; set by {var} (the environment or .env)")


def test_an_address_urllib_refuses_is_named_without_its_password(tmp_path: Path) -> None:
    # urllib's reason for a character that NFKC turns into one of / ? # @ : quotes the whole
    # netloc, user:password@ and all: the config error printed the proxy's password.
    password = "s3cr\uff03t-pw"
    env = {"OPENAI_BASE_URL": f"https://gateway:{password}@llm.example/v1"}
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, ""), environ=env)
    message = str(caught.value)
    assert message.startswith("OPENAI_BASE_URL cannot be read as an address")
    assert "NFKC" in message and password not in message and "gateway" not in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://st.openai.azure.com/",
        "https://apim.azure-api.net/openai-gateway",
        "https://apim.azure-api.net/a/",
    ],
)
def test_an_azure_endpoint_with_a_gateways_prefix_is_kept(tmp_path: Path, endpoint: str) -> None:
    text = "[agent]\nengine = 'openai'\n[openai]\nprovider = 'azure'\nazure_deployment = 'a'\n"
    text += f"azure_endpoint = '{endpoint}'\n"
    settings = load_settings(write(tmp_path, text), environ={"AZURE_OPENAI_API_KEY": "k" * 32})
    assert settings.openai.azure_endpoint == endpoint


@pytest.mark.parametrize("url", ["https://st.atlassian.net", "https://st.atlassian.net/"])
def test_a_jira_cloud_site_given_alone_is_taken(tmp_path: Path, url: str) -> None:
    # The check for a board's address pasted whole must not refuse the site's own.
    text = f"[tools]\ngrievances = 'jira'\n[jira]\nurl = '{url}'\n"
    settings = load_settings(
        write(tmp_path, text), environ={"JIRA_EMAIL": "a@b.c", "JIRA_API_TOKEN": "t" * 16}
    )
    assert settings.jira.url == url


def test_a_config_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    # Notepad's and PowerShell's UTF-8 begins with one: "not valid TOML (Invalid statement (at
    # line 1, column 1))" named no cause.
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf[agent]\r\nmax_tool_rounds = 5\r\n")
    assert load_settings(path, environ={}).agent.max_tool_rounds == 5


def test_a_misspelt_key_or_a_wrong_type_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\nengin = 'offline'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(f"unknown setting agent.engin in {path}: did you mean engine? ")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "[agent]\nmax_tool_rounds = '5'\n"), environ={})
    assert str(caught.value) == f"agent.max_tool_rounds = '5' in {path} is not an integer: fix it"
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, ""), environ={"VOXDESK_AGENT_MAX_TOOL_ROUNDS": "x"})
    assert (
        str(caught.value)
        == "agent.max_tool_rounds: VOXDESK_AGENT_MAX_TOOL_ROUNDS = 'x' is not an integer: fix it"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("[agnet]\nengine = 'offline'\n", "unknown section [agnet] in {}: did you mean [agent]? known are "),
        ("engine = 'offline'\n[agent]\n", "engine in {} is outside any section: put it under [agent]"),
        ("timeout_seconds = 5\n", "timeout_seconds in {} is outside any section: put it under its [section]"),
    ],
)
def test_a_misspelt_section_or_a_key_outside_one_says_where_it_goes(
    tmp_path: Path, text: str, said: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(said.format(path))


def test_a_path_setting_starting_with_a_tilde_is_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither TOML nor a unit's Environment= expands "~": Path("~/voxdesk") is a folder named "~".
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings(
        write(tmp_path, "[storage]\ndir = '~/voxdesk'\nmanuals_dir = '~/manuals'\n"),
        environ={"VOXDESK_AGENT_SYSTEM_PROMPT_FILE": "~/prompt.md"},
    )
    assert settings.storage_dir == tmp_path / "home" / "voxdesk"
    assert settings.manuals_dir == tmp_path / "home" / "manuals"
    assert settings.system_prompt_path == tmp_path / "home" / "prompt.md"


def test_a_relative_storage_folder_from_the_root_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A unit with no WorkingDirectory= runs in /: "var" was the system's /var, init wrote there.
    config = write(tmp_path, "")
    monkeypatch.chdir("/")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert str(caught.value).startswith(
        "storage.dir = var is relative and the working directory is / (a service with no"
        " WorkingDirectory=?), so the data would go in /var: set WorkingDirectory="
    )
    settings = load_settings(config, environ={"VOXDESK_STORAGE_DIR": str(tmp_path / "var")})
    assert settings.storage_dir == tmp_path / "var"


def test_a_working_directory_since_removed_is_one_line_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, "")
    gone = tmp_path / "release-41"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(ConfigError, match="the working directory no longer exists"):
        load_settings(config, environ={})
    # Every path absolute: the speech workers' spawn asks os.getcwd() all the same.
    with pytest.raises(ConfigError, match="the working directory no longer exists"):
        load_settings(config, environ={"VOXDESK_STORAGE_DIR": str(tmp_path / "var")})


def test_an_azure_key_given_as_openai_api_key_is_a_warning_saying_where_it_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # api.openai.com refuses it with a 401 that names no cause.
    config = write(tmp_path, "[agent]\nengine = 'openai'\n")
    caplog.set_level(logging.WARNING, logger="bot.config")
    load_settings(config, environ={"OPENAI_API_KEY": "0123456789abcdef0123456789abcdef"})
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("OPENAI_API_KEY does not begin with sk- as OpenAI's keys do: for an Azure")
    assert "0123456789abcdef" not in said
    caplog.clear()
    load_settings(config, environ={"OPENAI_API_KEY": "sk-proj-0123456789abcdef"})
    load_settings(
        config, environ={"OPENAI_API_KEY": "lm-studio", "OPENAI_BASE_URL": "http://127.0.0.1:1234/v1"}
    )
    assert caplog.records == []


def test_more_speech_workers_than_cores_is_a_warning_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    caplog.set_level(logging.WARNING, logger="bot.config")
    assert load_settings(write(tmp_path, ""), environ={"VOXDESK_OFFLINE_WORKERS": "2"}).offline.workers == 2
    assert caplog.records == []
    assert load_settings(write(tmp_path, ""), environ={"VOXDESK_OFFLINE_WORKERS": "8"}).offline.workers == 8
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("offline.workers = 8 is more than this machine's 2 cores")


def test_every_missing_secret_is_named_in_one_error(tmp_path: Path) -> None:
    text = "[agent]\nengine = 'openai'\n[tools]\nstats = 'odbc'\nmanuals = 'azure'\ngrievances = 'jira'\n"
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={"JIRA_EMAIL": "a@b.c"})
    message = str(caught.value)
    for name in (
        "OPENAI_API_KEY",
        "VOXDESK_SQL_CONNECTION_STRING",
        "AZURE_SEARCH_API_KEY",
        "search.endpoint",
        "JIRA_API_TOKEN",
        "jira.url",
    ):
        assert name in message
    assert "JIRA_EMAIL" not in message and "\n" not in message


def test_kubernetes_service_links_are_ignored_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    # What a pod is given for a Service "voxdesk" and a Service "voxdesk-web" in its namespace.
    links = {
        "VOXDESK_SERVICE_HOST": "10.0.0.1",
        "VOXDESK_SERVICE_PORT": "8080",
        "VOXDESK_SERVICE_PORT_HTTP": "8080",
        "VOXDESK_PORT": "tcp://10.0.0.1:8080",
        "VOXDESK_PORT_8080_TCP": "tcp://10.0.0.1:8080",
        "VOXDESK_PORT_8080_TCP_PROTO": "tcp",
        "VOXDESK_PORT_8080_TCP_PORT": "8080",
        "VOXDESK_PORT_8080_TCP_ADDR": "10.0.0.1",
        "VOXDESK_WEB_SERVICE_HOST": "10.0.0.5",
        "VOXDESK_WEB_SERVICE_PORT": "8080",
        "VOXDESK_WEB_PORT": "tcp://10.0.0.5:8080",
        "VOXDESK_WEB_PORT_8080_TCP": "tcp://10.0.0.5:8080",
        "VOXDESK_WEB_PORT_8080_TCP_ADDR": "10.0.0.5",
    }
    caplog.set_level(logging.INFO, logger="bot.config")
    settings = load_settings(REPO / "config.toml", environ={**links, "VOXDESK_AGENT_MAX_TOOL_ROUNDS": "5"})
    assert settings.web.port == 8080 and settings.agent.max_tool_rounds == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "VOXDESK_WEB_PORT holds a service address" in warnings[0]
    assert "web.port" in warnings[0]
    (info,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert all(name in info for name in links)
    # A port given as a number is still the setting.
    assert load_settings(REPO / "config.toml", environ={"VOXDESK_WEB_PORT": "9090"}).web.port == 9090


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("VOXDESK_WEB_PROT", "did you mean VOXDESK_WEB_PORT (web.port)?"),
        ("VOXDESK_AGENT_ENGIN", "did you mean VOXDESK_AGENT_ENGINE (agent.engine)?"),
        ("VOXDESK_NOPE_X", "VOXDESK_<SECTION>_<KEY>"),
    ],
)
def test_an_unknown_voxdesk_name_is_a_warning_naming_the_closest_setting(
    key: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(REPO / "config.toml", environ={key: "openai"})
    assert settings.agent.engine == "offline"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{key} names no setting, ignored") and named in warning


def test_entra_auth_needs_no_search_key(tmp_path: Path) -> None:
    # The identity's token stands in for the key; the endpoint is still needed.
    text = (
        "[tools]\nmanuals = 'azure'\n[search]\nendpoint = 'https://st.search.windows.net'\nauth = 'entra'\n"
    )
    assert load_settings(write(tmp_path, text), environ={}).search.auth == "entra"
    with pytest.raises(ConfigError, match="AZURE_SEARCH_API_KEY is not set"):
        load_settings(write(tmp_path, text.replace("'entra'", "'key'")), environ={})


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("text", "env", "where"),
    [
        ("", {"VOXDESK_STORAGE_DIR": ""}, "set by VOXDESK_STORAGE_DIR (the environment or .env)"),
        ("[storage]\ndir = ''\n", {}, "set in"),
    ],
)
def test_an_empty_storage_folder_is_refused(tmp_path: Path, text: str, env: dict, where: str) -> None:
    # compose's `VOXDESK_STORAGE_DIR: ${DATA_DIR}` with DATA_DIR unset gives "": the databases
    # went into the working directory, among config.toml and .env, with no word of it.
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ=env)
    message = str(caught.value)
    assert message.startswith("storage.dir is empty: name the data folder") and where in message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "[openai]\nengine = 'openai'\n",
            "unknown setting openai.engine in {path}: engine belongs under [agent]; ",
        ),
        (
            "[agent]\nmodel = 'gpt-audio'\n",
            "unknown setting agent.model in {path}: model belongs under [openai]; ",
        ),
        ("[tools]\nvoice = 'alloy'\n", "voice belongs under [openai] or [offline]; "),
    ],
)
def test_a_setting_in_another_section_is_named_with_its_own(tmp_path: Path, text: str, said: str) -> None:
    # "unknown setting openai.engine: known keys are provider, base_url, ..." listed twenty keys
    # and not the one section that has it.
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert said.format(path=path) in str(caught.value)


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("offline.voice", "auto"),
        ("offline.whisper_model", "tiny.en"),
        ("offline.meaning_model", "auto"),
        ("openai.model", "gpt-audio-1.5"),
        ("openai.api_version", "2025-01-01-preview"),
        ("search.index", "manuals"),
        ("jira.project", "GRV"),
        ("jira.issue_type", "Task"),
    ],
)
def test_a_setting_that_names_something_is_not_empty(key: str, default: str) -> None:
    # compose's `VOXDESK_OFFLINE_VOICE: ${VOICE}` with VOICE unset gives "": `check` passed,
    # saying "eSpeak NG has no voice ", "no Whisper model in ." or "meaning model not loaded
    # from ", and a Jira project or an OpenAI model of "" had every request refused.
    var = "VOXDESK_" + key.replace(".", "_").upper()
    with pytest.raises(ConfigError) as caught:
        load_settings(REPO / "config.toml", environ={var: " "})
    assert str(caught.value) == (
        f"{key} is empty: name one (the default is {default!r}); set by {var} (the environment or .env)"
    )


def test_a_config_path_naming_a_folder_says_so(tmp_path: Path) -> None:
    # VOXDESK_CONFIG=/etc/voxdesk (the folder, not the file in it) was "not found": the operator
    # looked at a folder that plainly exists.
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"VOXDESK_CONFIG": str(tmp_path)})
    assert str(caught.value) == (
        f"config file {tmp_path} is a folder: name the file, such as {tmp_path / 'config.toml'}"
    )


def test_secrets_come_only_from_the_environment_and_never_print(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set OPENAI_API_KEY in the environment"):
        load_settings(write(tmp_path, "[secrets]\nopenai_api_key = 'sk-x'\n"), environ={})
    settings = load_settings(
        write(tmp_path, "[agent]\nengine = 'openai'\n"), environ={"OPENAI_API_KEY": "sk-very-secret"}
    )
    assert settings.secrets.openai_api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)


def test_a_password_in_a_service_address_is_not_in_the_settings_repr(tmp_path: Path) -> None:
    # A gateway's or a fake's credentials ride in the address (https://user:pass@host): the log
    # masks them, but a settings object printed (a REPL, a test's failure, an error reporter)
    # showed them whole.
    env = {
        "VOXDESK_OPENAI_BASE_URL": "https://gateway:pw-in-url-1234@llm.example/v1",
        "VOXDESK_SEARCH_ENDPOINT": "https://admin:search-pass-5678@search.example",
        "VOXDESK_JIRA_URL": "http://me%40x.y:jira-pass-9012@localhost:8080",
        "VOXDESK_DISCORD_API_BASE": "http://bot:discord-pass-3456@127.0.0.1:9/api/v10",
        "VOXDESK_DISCORD_GATEWAY_URL": "wss://gw.example/?v=10&api-key=gateway-key-7890",
    }
    settings = load_settings(write(tmp_path, ""), environ=env)
    shown = repr(settings)
    assert "wss://gw.example/?v=10&api-key=***" in shown
    for secret in (
        "pw-in-url-1234",
        "search-pass-5678",
        "jira-pass-9012",
        "discord-pass-3456",
        "gateway-key-7890",
    ):
        assert secret not in shown and secret not in repr(settings.openai) + repr(settings.jira)
    assert "https://gateway:***@llm.example/v1" in shown and "model='gpt-audio-1.5'" in shown
    assert settings.openai.base_url == env["VOXDESK_OPENAI_BASE_URL"]


@pytest.mark.parametrize(
    ("text", "env_var"),
    [
        ("[openai]\napi_key = 'sk-SECRET123456'\n", "OPENAI_API_KEY"),
        ("[openai]\nazure_api_key = 'sk-SECRET123456'\n", "AZURE_OPENAI_API_KEY"),
        ("[discord]\ntoken = 'sk-SECRET123456'\n", "DISCORD_TOKEN"),
        ("[jira]\napi_token = 'sk-SECRET123456'\n", "JIRA_API_TOKEN"),
        ("[search]\napi_key = 'sk-SECRET123456'\n", "AZURE_SEARCH_API_KEY"),
        ("[odbc]\nconnection_string = 'Driver=x;PWD=sk-SECRET123456'\n", "VOXDESK_SQL_CONNECTION_STRING"),
        ("[web]\nstaff_password = 'sk-SECRET123456'\n", "VOXDESK_WEB_STAFF_PASSWORD"),
        ("[web]\nsession_key = 'sk-SECRET123456'\n", "VOXDESK_WEB_SESSION_KEY"),
        ("[secrets]\nopenai_api_key = 'sk-SECRET123456'\n", "OPENAI_API_KEY"),
        ("openai_api_key = 'sk-SECRET123456'\n", "OPENAI_API_KEY"),
        ("DISCORD_TOKEN = 'sk-SECRET123456'\n", "DISCORD_TOKEN"),
        # Named as the services' pages name them: "unknown setting discord.bot_token" said not where.
        ("[discord]\nbot_token = 'sk-SECRET123456'\n", "DISCORD_TOKEN"),
        ("DISCORD_BOT_TOKEN = 'sk-SECRET123456'\n", "DISCORD_TOKEN"),
        ("[openai]\nkey = 'sk-SECRET123456'\n", "OPENAI_API_KEY"),
        ("[openai]\nazure_key = 'sk-SECRET123456'\n", "AZURE_OPENAI_API_KEY"),
        ("[search]\nkey = 'sk-SECRET123456'\n", "AZURE_SEARCH_API_KEY"),
        ("[jira]\ntoken = 'sk-SECRET123456'\n", "JIRA_API_TOKEN"),
        ("[jira]\npassword = 'sk-SECRET123456'\n", "JIRA_API_TOKEN"),
        ("[web]\npassword = 'sk-SECRET123456'\n", "VOXDESK_WEB_STAFF_PASSWORD"),
        # TOML's bare keys take "-", as other tools' settings spell them ("api-key").
        ("[openai]\napi-key = 'sk-SECRET123456'\n", "OPENAI_API_KEY"),
        ("[secrets]\ndiscord-token = 'sk-SECRET123456'\n", "DISCORD_TOKEN"),
        # In a table of its own (or a dotted key, or an inline table, which TOML reads alike): was
        # "unknown section [secrets]" or "unknown setting openai.azure", naming no variable.
        ("[secrets.openai]\napi_key = 'sk-SECRET123456'\n", "OPENAI_API_KEY"),
        ("[secrets]\ndiscord = {token = 'sk-SECRET123456'}\n", "DISCORD_TOKEN"),
        ("[openai.azure]\napi_key = 'sk-SECRET123456'\n", "AZURE_OPENAI_API_KEY"),
        ("[openai]\nazure.api_key = 'sk-SECRET123456'\n", "AZURE_OPENAI_API_KEY"),
        ("[discord.bot]\ntoken = 'sk-SECRET123456'\n", "DISCORD_TOKEN"),
        ("[jira.auth]\njira_api_token = 'sk-SECRET123456'\n", "JIRA_API_TOKEN"),
    ],
)
def test_a_secret_in_the_config_file_is_refused_naming_its_variable(
    tmp_path: Path, text: str, env_var: str
) -> None:
    # "unknown setting openai.api_key: known keys are ..." left a studio guessing where it goes.
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    message = str(caught.value)
    assert f"set {env_var} in the environment or .env" in message
    assert "SECRET123456" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("key", "env_var"),
    [
        ("VOXDESK_OPENAI_API_KEY", "OPENAI_API_KEY"),  # was "did you mean VOXDESK_OPENAI_API_VERSION"
        ("VOXDESK_DISCORD_TOKEN", "DISCORD_TOKEN"),
        ("VOXDESK_JIRA_API_TOKEN", "JIRA_API_TOKEN"),
        ("VOXDESK_SEARCH_API_KEY", "AZURE_SEARCH_API_KEY"),
    ],
)
def test_a_secret_under_a_voxdesk_name_is_a_warning_naming_its_variable(
    key: str, env_var: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(REPO / "config.toml", environ={key: "sk-SECRET123456"})
    assert settings.secrets == Secrets()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == f"{key} names no setting, ignored: a secret is read from {env_var}"


def test_dotenv_file_supplies_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\n")
    write(tmp_path, "[agent]\nengine = 'openai'\n")
    settings = load_settings()
    assert settings.secrets.openai_api_key == "sk-from-dotenv"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_dotenv_supplies_a_secret_the_environment_has_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compose's `OPENAI_API_KEY: ${OPENAI_API_KEY}` or a unit's `Environment=OPENAI_API_KEY=` pass
    # it empty: .env was skipped, and start-up said "OPENAI_API_KEY is not set ... or .env".
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-from-the-environment")
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\nJIRA_API_TOKEN=jira-from-dotenv\n")
    write(tmp_path, "[agent]\nengine = 'openai'\n")
    settings = load_settings()
    assert settings.secrets.openai_api_key == "sk-from-dotenv"
    assert settings.secrets.jira_api_token == "jira-from-the-environment"  # the environment wins


def test_dotenv_keeps_a_secret_with_a_dollar_brace_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "")  # recorded, so the test's end removes what .env sets
    monkeypatch.delenv("OPENAI_API_KEY")
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-a${b}c$d\n")
    write(tmp_path, "[agent]\nengine = 'openai'\n")
    assert load_settings().secrets.openai_api_key == "sk-a${b}c$d"


def test_a_dotenv_file_powershell_wrote_is_one_line_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PowerShell 5's `"DISCORD_TOKEN=..." > .env` writes UTF-16: every command stopped with
    # python-dotenv's UnicodeDecodeError and its traceback.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes("DISCORD_TOKEN=a.b.c\r\n".encode("utf-16"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"{tmp_path / '.env'} is not UTF-8 text (PowerShell 5's > writes UTF-16): save it as UTF-8"
    )


def test_a_nul_in_a_dotenv_value_is_one_line_naming_the_key_not_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.environ refuses a NUL ("embedded null byte"): start-up would stop with a traceback.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / ".env").write_bytes(b"OPENAI_API_KEY=sk-secret\x00tail\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"{tmp_path / '.env'}: the value of OPENAI_API_KEY holds a NUL character, which no environment"
        " variable can: remove it"
    )


def test_a_powershell_line_in_dotenv_is_a_warning_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    (tmp_path / ".env").write_text('$env:DISCORD_TOKEN = "MTIz.abc.def"\n')
    caplog.set_level(logging.WARNING, logger="bot.config")
    assert load_settings().secrets.discord_token == ""
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"{tmp_path / '.env'}: '$env:DISCORD_TOKEN' is not a variable's name, ignored")
    assert "$env:DISCORD_TOKEN" not in os.environ


def test_a_dotenv_line_python_dotenv_cannot_parse_is_a_warning_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # python-dotenv's own line ("could not parse statement starting at line 2") names no file.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    (tmp_path / ".env").write_text("# the bot's token\nDISCORD_TOKEN MTIz.abc.def\n")
    caplog.set_level(logging.WARNING)
    assert load_settings().secrets.discord_token == ""
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"{tmp_path / '.env'}: line 2 could not be read, ignored: write NAME=value")


def test_a_dotenv_line_with_no_name_is_a_warning_that_never_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An Atlassian API token pasted on the line after `JIRA_API_TOKEN=`: python-dotenv reads its
    # part before the "=" as a variable's name, and the warning went to the journal with it.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JIRA_API_TOKEN", raising=False)
    body = "ATATT3xFfGF0Zx-7q_Lm9PqRsTuVwXyZ"
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN=MTIz.abc.def\nJIRA_API_TOKEN=\n{body}=1A2B3C4D\n")
    caplog.set_level(logging.WARNING, logger="bot.config")
    load_settings()
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"{tmp_path / '.env'} line 3 holds no NAME=value, ignored")
    assert body[:8] not in caplog.text
    assert body not in os.environ


def test_a_dotenv_line_of_a_token_alone_is_a_warning_that_never_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A Discord bot token (no "=" in it) pasted on the line after `DISCORD_TOKEN=`: python-dotenv
    # reads it as a name with no value, and nothing was said but "DISCORD_TOKEN is not set".
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    token = "MTIzNDU2Nzg5MDEy.GaBcDe.fGhIjKlMnOpQrStUvWxYz0123456789abcd"
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN=\n{token}\nOPENAI_BASE_URL\n")
    caplog.set_level(logging.WARNING, logger="bot.config")
    assert load_settings().secrets.discord_token == ""
    # A name alone (python-dotenv's "declared, no value") is no mistake: said nothing of.
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"{tmp_path / '.env'} line 2 holds no NAME=value, ignored")
    assert token[:8] not in caplog.text


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # Azure AI Search's admin key: 52 letters and digits, the form of a variable's name too.
        ("AZURE_SEARCH_API_KEY", "AbCdEf0123456789AbCdEf0123456789AbCdEf0123456789AbCd"),
        # An Azure OpenAI key: 32 hex digits, here beginning with a letter.
        ("OPENAI_API_KEY", "a1b2c3d4e5f60718293a4b5c6d7e8f90"),
    ],
)
def test_a_dotenv_line_of_a_key_of_letters_and_digits_alone_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str, key: str
) -> None:
    # Pasted on the line after `NAME=`, it reads to python-dotenv as a name declared with no value,
    # as OPENAI_BASE_URL alone does: nothing was said but that the key is not set.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(f"DISCORD_TOKEN=MTIz.abc.def\n{name}=\n{key}\nOPENAI_BASE_URL\n")
    caplog.set_level(logging.WARNING, logger="bot.config")
    load_settings()
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"{tmp_path / '.env'} line 3 holds no NAME=value, ignored")
    assert key[:8] not in caplog.text
    assert key not in os.environ


def test_a_secret_in_the_environment_and_otherwise_in_dotenv_says_which_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A token renewed in .env while the unit or a shell profile still exports the old one: Discord
    # refused the old one and nothing said it was the one sent.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "MTIz.old-token.from-the-environment")
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-token-value")
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=MTIz.new-token.in-dotenv\nJIRA_API_TOKEN=jira-token-value \n"
    )
    caplog.set_level(logging.WARNING, logger="bot.config")
    settings = load_settings()
    assert settings.secrets.discord_token == "MTIz.old-token.from-the-environment"
    (said,) = [r.getMessage() for r in caplog.records]  # the same token, blank aside, is no news
    assert said == (
        f"DISCORD_TOKEN is set in the environment and, to another value, in {tmp_path / '.env'}:"
        " the environment's is used"
    )


def test_a_setting_in_the_environment_and_otherwise_in_dotenv_says_which_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # `.env` says VOXDESK_AGENT_ENGINE=openai, a unit's Environment= or a shell profile still says
    # offline: the bot answered offline and nothing said which of the two was read.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VOXDESK_AGENT_ENGINE", "offline")
    monkeypatch.setenv("VOXDESK_AGENT_MAX_TOOL_ROUNDS", "4")
    (tmp_path / ".env").write_text("VOXDESK_AGENT_ENGINE=openai\nVOXDESK_AGENT_MAX_TOOL_ROUNDS= 4\n")
    caplog.set_level(logging.WARNING, logger="bot.config")
    settings = load_settings()
    assert settings.agent.engine == "offline"
    (said,) = [r.getMessage() for r in caplog.records]  # the same value, blank aside, is no news
    assert said == (
        f"VOXDESK_AGENT_ENGINE is set in the environment and, to another value, in {tmp_path / '.env'}:"
        " the environment's is used"
    )


@pytest.mark.parametrize(
    ("token", "said"),
    [
        (
            "912345678901234567",
            "DISCORD_TOKEN is a number, such as the application id: it is not a bot token",
        ),
        ("aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE", "DISCORD_TOKEN has no dot, like the client secret"),
        ("Bot MTIz.abc.def", 'DISCORD_TOKEN begins with "Bot "'),
        ('"MTIz.abc.def"', "DISCORD_TOKEN holds quotes, spaces or other characters"),
    ],
)
def test_what_is_plainly_no_bot_token_is_refused_before_discord_is_asked(token: str, said: str) -> None:
    settings = load_settings(REPO / "config.toml", environ={"DISCORD_TOKEN": token})
    with pytest.raises(ConfigError) as caught:
        require_discord_token(settings)
    assert str(caught.value).startswith(said)
    assert token.strip('"').removeprefix("Bot ") not in str(caught.value)


def test_shown_url_drops_credentials_and_query() -> None:
    from bot.config import shown_url

    assert shown_url("https://svc:s3cret@proxy.example:8443/v1?key=abc") == "https://proxy.example:8443/v1"
    assert shown_url("https://acme.atlassian.net") == "https://acme.atlassian.net"
    # Without a scheme urlsplit finds no host: it takes the user for a scheme and the password
    # for part of the path, which the start-up line would print.
    assert shown_url("svc:s3cret@proxy.example:8443/v1?key=abc") == "proxy.example:8443/v1"
    assert shown_url("acme.atlassian.net") == "acme.atlassian.net"
    assert shown_url("//svc:s3cret@proxy.example/v1") == "//proxy.example/v1"


def test_an_install_without_config_toml_behaves_like_the_checkout(tmp_path, monkeypatch) -> None:
    # An installed wheel run from an empty folder has no config.toml: the defaults must be the file's.
    monkeypatch.chdir(tmp_path)
    from_file = load_settings(REPO / "config.toml", environ={})
    built_in = load_settings(None, environ={})
    assert built_in.source == "defaults"
    assert dataclasses.replace(built_in, source=from_file.source) == from_file


# Settings config.toml leaves out on purpose: they exist for the tests' fake Discord (README).
FOR_TESTS_ONLY = {("discord", "api_base"), ("discord", "gateway_url"), ("discord", "guild_ready_timeout")}


def test_config_toml_lists_every_setting_the_code_reads_and_no_other() -> None:
    # The README calls config.toml the full reference: a setting added to the code alone is one
    # no studio finds, and a key in the file alone stops start-up.
    toml = tomllib.loads((REPO / "config.toml").read_text())
    in_file = {(section, key) for section, table in toml.items() for key in table}
    in_code = {(section, f.name) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert in_file - in_code == set()
    assert in_code - in_file == FOR_TESTS_ONLY


def test_the_readme_names_every_secret_and_only_variables_voxdesk_reads() -> None:
    readme = (REPO / "README.md").read_text()
    secrets_table = readme[readme.index("| secret (environment only) |") :].split("\n\n", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", secrets_table))
    # Besides voxdesk's secrets, only the openai SDK's own variables, which build_client leaves to it.
    assert named == {*Secrets.ENV.values(), *OPENAI_SDK_ENV}
    settings = {
        f"VOXDESK_{s}_{f.name}".upper() for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
    }
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    mentioned = {
        name for doc in docs for name in re.findall(r"\bVOXDESK_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text())
    }
    # A Kubernetes service link the README says is ignored, the browser tests' own switch, and a
    # trial docs/offline-engine.md says was not kept.
    not_read = {"VOXDESK_SERVICE_HOST", "VOXDESK_SCREENSHOTS", "VOXDESK_OFFLINE_DENOISE"}
    assert mentioned - settings - set(Secrets.ENV.values()) - {"VOXDESK_CONFIG"} == not_read


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_system_prompt_file_not_found_names_the_setting_and_where_it_was_set(
    tmp_path: Path, kind: str
) -> None:
    # `run`, `ask` and `check` said "<path>: no such file" alone: the operator was left to find
    # which setting named it, and in which of the config files and VOXDESK_* variables.
    from bot.engines.openai import read_system_prompt

    prompt = tmp_path / "prompts" / "support.md"
    if kind == "folder":
        prompt.mkdir(parents=True)
    what = "is a folder" if kind == "folder" else "does not exist"
    said = (
        f"agent.system_prompt_file = {prompt} {what}: name the prompt's file, or leave it empty"
        " for the prompt voxdesk ships"
    )
    path = write(tmp_path, f"[agent]\nsystem_prompt_file = '{prompt}'\n")
    with pytest.raises(ConfigError) as caught:
        read_system_prompt(load_settings(path, environ={}))
    assert str(caught.value) == f"{said}; set in {path}"
    var = "VOXDESK_AGENT_SYSTEM_PROMPT_FILE"
    with pytest.raises(ConfigError) as caught:
        read_system_prompt(load_settings(write(tmp_path, ""), environ={var: str(prompt)}))
    assert str(caught.value) == f"{said}; set by {var} (the environment or .env)"


def test_a_setting_changed_in_code_is_not_said_to_be_set_by_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\nsystem_prompt_file = 'a.md'\nmax_tool_rounds = 2\n")
    settings = load_settings(path, environ={})
    assert settings.where_set("agent.system_prompt_file") == f"; set in {path}"
    changed = settings.replace(agent={"system_prompt_file": "b.md"})
    assert changed.where_set("agent.system_prompt_file") == ""
    assert changed.where_set("agent.max_tool_rounds") == f"; set in {path}"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("voxdesk_agent_engine", ": set VOXDESK_AGENT_ENGINE (agent.engine)"),
        ("Voxdesk_Openai_Model", ": set VOXDESK_OPENAI_MODEL (openai.model)"),
        ("voxdesk_sql_connection_string", ": set VOXDESK_SQL_CONNECTION_STRING"),
        ("voxdesk_config", ": set VOXDESK_CONFIG"),
        ("voxdesk_nothing", ""),
    ],
)
def test_a_lower_case_voxdesk_variable_is_a_warning_naming_it_not_its_value(
    caplog: pytest.LogCaptureFixture, name: str, hint: str
) -> None:
    # Names are case-sensitive: voxdesk_agent_engine=openai in a unit or .env was not read, and
    # the bot answered offline with no word of it.
    caplog.set_level(logging.WARNING, logger="bot.config")
    settings = load_settings(REPO / "config.toml", environ={name: "openai-s3cret"})
    assert settings.agent.engine == "offline"
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == f"{name} is not read: variable names are upper case{hint}"
    assert "s3cret" not in caplog.text


def test_a_name_set_twice_in_dotenv_is_a_warning_naming_its_lines_not_its_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The later line is read: an operator who renewed the token on the first saw nothing change.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "")  # recorded, so the test's end removes what .env sets
    monkeypatch.delenv("DISCORD_TOKEN")
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=MTIz.new-token.first\n# the old one\nexport DISCORD_TOKEN=MTIz.old-token.second\n"
    )
    caplog.set_level(logging.WARNING, logger="bot.config")
    settings = load_settings()
    assert settings.secrets.discord_token == "MTIz.old-token.second"
    (said,) = [r.getMessage() for r in caplog.records]
    assert said == (
        f"{tmp_path / '.env'}: DISCORD_TOKEN is set on line 1 and again on line 3: .env gives line 3's"
    )
    assert "token" not in caplog.text.replace("DISCORD_TOKEN", "")


def test_a_jira_project_is_not_checked_with_jira_off(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "[jira]\nproject = 'grv'\n"), environ={}).jira.project == "grv"
