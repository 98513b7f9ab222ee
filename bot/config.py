"""Settings: `config.toml` for behaviour, the environment (or `.env`) for secrets.

Every setting can be overridden with `VOXDESK_<SECTION>_<KEY>`; secrets can only come from the
environment, so a config file can be committed and shared without leaking anything. Other
`VOXDESK_*` names (a typo, Kubernetes' service links for a Service named voxdesk) and `voxdesk_*`
in lower case are logged and ignored: a pod cannot choose which of those it is given.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import difflib
import io
import ipaddress
import logging
import math
import os
import re
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from bot import logs, paths

log = logging.getLogger(__name__)

ENV_PREFIX = "VOXDESK_"
DEFAULT_CONFIG = Path("config.toml")


def shown_url(url: str) -> str:
    """A service address fit for a log line or `check`: any user:password@ and query string
    (where a proxy's credentials or a key may ride along) removed."""
    # Without a scheme urlsplit finds no host ("svc:pass@proxy" reads as scheme "svc"): a
    # setting written so is read as the host it names, and shown without the scheme it lacks.
    schemeless = "://" not in url and not url.startswith("//")
    parts = urllib.parse.urlsplit("//" + url if schemeless else url)
    host = parts.netloc.rpartition("@")[2]
    shown = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    return shown.removeprefix("//") if schemeless else shown


class ConfigError(Exception):
    """A setting is wrong; the message names the key and what to do, in one line."""


class NeedsHuman(str):
    """A check's detail for a service that works but wants a person's hand: its line says `warn`,
    and `check` still exits 0, so a deploy script or ExecStartPre does not stop on it. Here, below
    every backend, so a backend's own check can say it without reaching for `bot.health`."""


# user:password@ in an address; the password runs to the authority's last "@", as urllib reads it.
_URL_PASSWORD = re.compile(r"(//[^/?#:]*:)[^/?#]*@")


class _HoldsAddresses:
    """A section whose repr shows the password of each address in it as ***: the log masks
    them, but a settings object printed elsewhere (a REPL, a failing test, an error reporter)
    is not. Its dataclass is declared with repr=False, which would otherwise replace this."""

    def __repr__(self) -> str:
        addresses = {key for section, key in ADDRESS_SETTINGS if SECTIONS[section] is type(self)}
        shown = []
        for f in dataclasses.fields(typing.cast(typing.Any, self)):
            value = getattr(self, f.name)
            if f.name in addresses and isinstance(value, str):
                value = _URL_PASSWORD.sub(r"\1***@", value)
                for secret in query_secrets(value):
                    value = value.replace(secret, "***")
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__qualname__}({', '.join(shown)})"


@dataclass(frozen=True)
class StorageSettings:
    dir: str = "var"  # SQLite files, the grievance spool, built speech models
    manuals_dir: str = ""  # the game manuals (*.md) to index; empty: the ones voxdesk ships
    keep_backups: int = 7  # `voxdesk backup DIR` keeps the newest this many in DIR; 0 keeps all


@dataclass(frozen=True)
class AudioSettings:
    max_bytes: int = 8_000_000
    max_seconds: float = 120.0
    silence_threshold_db: float = -40.0  # below this (dBFS) counts as silence when trimming
    min_speech_ms: int = 250  # less voiced audio than this is treated as "nothing said"


@dataclass(frozen=True)
class AgentSettings:
    engine: str = "offline"  # offline | openai
    fallback: str = "offline"  # when the engine fails: offline | apology
    max_tool_rounds: int = 3
    max_concurrent_turns: int = 8
    # Every turn slot held this long (each by a turn that began it so long ago) makes /healthz not
    # ready: longer than a slow model's turn (openai.turn_deadline_seconds is 120) and its tools.
    stuck_turn_seconds: float = 300.0
    system_prompt_file: str = ""  # empty: the prompt voxdesk ships


@dataclass(frozen=True)
class ConversationSettings:
    max_turns: int = 8
    idle_minutes: float = 30.0


@dataclass(frozen=True, repr=False)
class OpenAISettings(_HoldsAddresses):
    provider: str = "openai"  # openai | azure
    base_url: str = ""  # empty: OPENAI_BASE_URL if set, else api.openai.com
    model: str = "gpt-audio-1.5"
    voice: str = "alloy"
    reply_format: str = "opus"
    transcribe_model: str = "gpt-4o-mini-transcribe"  # "" switches transcription off
    # Latest replies sent back by audio id; older ones as their text. Azure gets none by id.
    audio_history_turns: int = 1
    # Tokens a reply may use, audio and transcript together (max_completion_tokens); 0: the model's
    # own limit. Speech is about 20 audio tokens and 3 transcript tokens a second: 2048 is about 90.
    max_reply_tokens: int = 2048
    # A reply comes whole once generated: reading it may take as long as the longest reply
    # max_reply_tokens allows; connecting is quick or the service is unreachable.
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 90.0
    # A turn's requests together (tool steps, retries, waits): past it the fallback answers.
    turn_deadline_seconds: float = 120.0
    # Retries of a request the server never had whole (no connection made, a connect timeout, one
    # lost while it was written, a 408), a 5xx but a gateway's 502 or 504, or a 429 asking for a
    # short wait; a reply that timed out, or whose connection dropped once the request was out, is
    # not asked for again (it may have been generated and billed).
    max_retries: int = 2
    # After timeouts, connection failures, 408s or 5xx in a row, requests pause this long (the
    # fallback answers), then one request sees whether the service is back. A 408's or a 5xx's
    # Retry-After pauses them no longer than this: it is often a proxy's page, not the provider's.
    breaker_seconds: float = 30.0
    azure_endpoint: str = ""
    azure_deployment: str = ""
    api_version: str = "2025-01-01-preview"
    # Each player named to OpenAI's abuse monitoring by a keyed hash (safety_identifier): auto
    # (only to api.openai.com and its regions: a compatible server or gateway may refuse a field
    # it does not know) | on | off. Azure's API version documents no such field: it is never sent there.
    safety_identifier: str = "auto"


@dataclass(frozen=True)
class OfflineSettings:
    voice: str = "auto"  # auto: the neural voice when voxdesk[neural] is installed, else eSpeak's en-us
    rate_wpm: int = 165
    workers: int = 0  # speech decoding processes; 0: one per core, up to four
    # Replies' sentences kept as audio, so those said again are not synthesised again; 0: none.
    sentence_cache_mb: int = 16
    # Speak a reply sentence by sentence, on every core, encoding as it goes; false: the whole reply
    # in one synthesis (the baseline bench/offline.py measures against).
    speak_by_sentence: bool = True
    # Which recogniser hears notes: auto (Whisper when its model loads, else
    # pocketsphinx) | pocketsphinx (ships in its wheel) | whisper.
    recognizer: str = "auto"
    whisper_model: str = "tiny.en"  # a faster-whisper model name (fetched by its loader) or a folder
    # Which languages players speak: en (English only) | any (Whisper detects each note's language
    # and translates any other into English before routing; needs a multilingual model, base from
    # voxdesk[multilingual]) | a list such as "en,es,fr,de" (the same, detection limited to those).
    # Replies are in English whatever the player spoke.
    languages: str = "en"
    # What reads the words of a note in their meaning: auto (all-mpnet-base-v2 when its wheels
    # are installed, else all-MiniLM-L6-v2) | all-mpnet-base-v2 | all-MiniLM-L6-v2 | off (cue
    # words alone) | a folder holding a copy of either's files.
    meaning_model: str = "auto"

    def language_codes(self) -> tuple[str, ...] | None:
        """The languages Whisper may hear a note as, English first; None: any it knows."""
        if self.languages.strip().lower() == ANY_LANGUAGE:
            return None
        codes = [code.strip().lower() for code in self.languages.split(",") if code.strip()]
        return ("en", *dict.fromkeys(c for c in codes if c != "en"))


ANY_LANGUAGE = "any"
# Whisper's language codes (faster-whisper's tokenizer lists the same), so a typo in
# offline.languages is named when the settings load, not when a Spanish note is misheard.
WHISPER_LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi "
    "hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no "
    "oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo "
    "zh yue".split()
)


# USD per 1M tokens, as published; also in config.toml, so an install without one estimates alike.
# The transcribe models' audio_in is unverified here: config.toml says so, by their rows.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    **{
        model: {"text_in": text_in, "text_out": text_out, "audio_in": audio_in, "audio_out": audio_out}
        for model, (text_in, text_out, audio_in, audio_out) in {
            "gpt-audio-1.5": (2.5, 10.0, 32.0, 64.0),
            "gpt-audio": (2.5, 10.0, 32.0, 64.0),
            "gpt-4o-mini-audio-preview": (0.15, 0.6, 10.0, 20.0),
        }.items()
    },
    "gpt-4o-mini-transcribe": {"text_in": 1.25, "text_out": 5.0, "audio_in": 3.0},
    "gpt-4o-transcribe": {"text_in": 2.5, "text_out": 10.0, "audio_in": 6.0},
}
# A snapshot's date: OpenAI answers a request for "gpt-audio" as "gpt-audio-2025-08-28".
SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class UsageSettings:
    daily_audio_seconds: float = 0.0  # per user; 0 means no budget
    daily_tokens: int = 0  # per user; 0 means no budget
    # USD per 1M tokens, by model: {"gpt-audio-1.5": {"text_in": .., "text_out": .., ...}}
    prices: dict[str, dict[str, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    # Names priced by another's row: an Azure deployment (the transcription's is known by its
    # deployment name alone), or a model name a provider reports that has no row of its own.
    price_as: dict[str, str] = field(default_factory=dict)

    def price_row(self, model: str) -> str | None:
        """The row of `prices` tokens billed by `model` are priced by: the one `price_as` names for
        it, else its own, else its snapshot's undated name's; None when there is none."""
        for name in dict.fromkeys((model, SNAPSHOT_DATE.sub("", model))):
            row = self.price_as.get(name, name)
            if row in self.prices:
                return row
        return None


@dataclass(frozen=True)
class ToolsSettings:
    stats: str = "sqlite"  # sqlite | odbc
    manuals: str = "sqlite"  # sqlite | azure
    grievances: str = "local"  # local | jira
    manual_results: int = 3


@dataclass(frozen=True)
class OdbcSettings:
    pool_size: int = 5
    query_timeout_seconds: int = 10
    retries: int = 3  # extra attempts on transient errors (dropped connections, Azure SQL throttling)
    retry_backoff_seconds: float = 0.5  # first wait between attempts; doubles each time, at most 4 s
    dialect: str = "sqlserver"  # sqlserver | sqlite


@dataclass(frozen=True, repr=False)
class SearchSettings(_HoldsAddresses):
    endpoint: str = ""
    index: str = "manuals"
    semantic_configuration: str = ""
    # key: AZURE_SEARCH_API_KEY; entra: a Microsoft Entra ID token from azure-identity's
    # DefaultAzureCredential (managed identity, workload identity, or AZURE_CLIENT_ID,
    # AZURE_TENANT_ID and AZURE_CLIENT_SECRET), for services with key authentication disabled.
    auth: str = "key"
    # entra: the audience of the token asked for, a sovereign cloud's (https://search.azure.us
    # for Azure Government); empty: the public cloud's, https://search.azure.com.
    audience: str = ""
    timeout_seconds: float = 5.0  # per request, connecting and reading
    retries: int = 2  # the SDK's own retries on 5xx, throttling and dropped connections


@dataclass(frozen=True, repr=False)
class JiraSettings(_HoldsAddresses):
    url: str = ""
    project: str = "GRV"
    issue_type: str = "Task"
    push_interval_seconds: float = 15.0  # the sweep for pending grievances, and the first retry delay
    timeout_seconds: float = 15.0
    max_backoff_seconds: float = 300.0  # retry delays double from push_interval_seconds up to this
    settle_seconds: float = 30.0  # after a create whose outcome is unknown, wait for Jira's search index
    user_label_prefix: str = "discord-"  # label discord-<user id> finds a player's tickets
    key_label_prefix: str = "voxdesk-"  # label voxdesk-<database id>-GRV-14 finds the push of GRV-14
    # Names of done statuses and resolutions that say a grievance was turned down, besides the
    # English ones voxdesk knows (Won't Do, Duplicate, Declined...): a site's own, in its language.
    refusals: list[str] = field(default_factory=list)
    # Those of them that say another issue covers the same problem, besides Duplicate: told
    # "closed as a duplicate", not "closed without a fix"; refusals too, listed here alone.
    duplicates: list[str] = field(default_factory=list)


@dataclass(frozen=True, repr=False)
class DiscordSettings(_HoldsAddresses):
    channels: list[int] = field(default_factory=list)  # guild channels answered without a mention
    # Answer in any channel a note that mentions the bot or replies to it, as it comes: a catch-up
    # reads only `channels`, their threads and DMs (Discord lets a bot search for no mention), so
    # one sent elsewhere while the bot was down, or whose event the gateway lost, goes unanswered.
    answer_mentions: bool = True
    any_audio_attachment: bool = True  # not only native voice messages
    api_base: str = ""  # empty: discord.py's default; tests point it at a local fake
    gateway_url: str = ""
    shutdown_grace_seconds: float = 20.0
    message_content: bool = True  # ask for the privileged intent (falls back with a warning if not granted)
    guild_ready_timeout: float = 2.0  # seconds discord.py waits for GUILD_CREATEs before "ready"
    defer_after_seconds: float = 2.0  # slash commands slower than this are deferred (Discord allows 3)
    flood_notes: int = 5  # at most this many notes per user queued, and as many ...
    flood_seconds: float = 60.0  # ... in this many seconds; more get a "slow down" reply
    download_seconds: float = 30.0  # a voice note not downloaded by then is given up on
    # A message POST of an answer Discord has not answered this long after it went out is left to
    # the recheck (discord.py's session only gives up after 300 s, and the player's later notes
    # wait behind it); its turn in the rate limiter counts only while its channel's queue stands.
    send_seconds: float = 60.0
    # A rate limit longer than this is not waited out: the note is answered later (discord.py
    # raises RateLimited past it, and takes no less than 30 s).
    rate_limit_seconds: float = 30.0
    # On start, notes sent this recently while the bot was down are answered; older ones are not.
    catch_up_minutes: float = 30.0
    # How often a running bot looks for notes another process on the same storage left unanswered.
    recheck_seconds: float = 30.0
    # Catch-up reads begun a second at most (one request each for most places): Discord allows
    # 50 requests a second in all, and the answers need the rest.
    catch_up_reads_per_second: float = 20.0
    # The gateway away longer than this makes /healthz not ready: discord.py reconnects within
    # seconds when Discord moves a session or a connection drops, which is no outage.
    gateway_grace_seconds: float = 60.0


@dataclass(frozen=True)
class NewsSettings:
    enabled: bool = True  # DM players when a kept grievance is filed late or a ticket's status changes
    poll_seconds: float = 60.0  # how often the bot looks for ticket news (the local store and Jira)


@dataclass(frozen=True)
class WebSettings:
    enabled: bool = False  # `voxdesk run` also serves the web front end
    host: str = "127.0.0.1"  # loopback: put a TLS reverse proxy in front (docs/web.md)
    port: int = 8080
    # Who the playground may speak as; empty: the demo players, and only on the embedded player
    # database (in production list a test player's id here, or the playground is off).
    playground_players: list[str] = field(default_factory=list)
    playground_notes: int = 10  # per client: at most this many notes ...
    playground_seconds: float = 60.0  # ... in this many seconds
    # Playground notes answered at once, whoever sent them; more get "busy, try again". Below
    # agent.max_concurrent_turns under `voxdesk run`: Discord players always keep a turn slot.
    playground_turns: int = 2
    playground_notes_per_minute: int = 30  # every client's notes together; more get "busy"
    # Complaints the playground files onto the desk in any 24 hours: per client, and every client's
    # together (anonymous visitors; each note may file up to three).
    playground_complaints: int = 5
    playground_complaints_per_day: int = 100
    login_attempts: int = 5  # failed staff logins per client ...
    login_seconds: float = 300.0  # ... in this many seconds, then 429 until the window passes
    # Failed logins for one name, every client's together, in login_seconds: past them a client
    # with a failed login of its own in that window tries that name no more until it lapses.
    login_name_attempts: int = 10
    session_hours: float = 8.0  # a staff login lasts this long
    secure_cookies: bool = False  # true behind HTTPS: the browser then sends cookies only over TLS
    trust_forwarded: bool = False  # behind a reverse proxy: the client is X-Forwarded-For's last hop
    # ... when the request comes from one of these addresses or networks (the proxy's own)
    trusted_proxies: list[str] = field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Host names the site is asked for by (its public name behind a proxy), besides this machine's
    # own; empty: only those on a loopback host, any elsewhere; "*": any (docs/web.md).
    allowed_hosts: list[str] = field(default_factory=list)
    # Connections one address holds open at once (idle ones up to 30 s each), beyond which one is
    # closed as it opens; a peer in trusted_proxies (every visitor's connections) is not counted.
    connections_per_address: int = 64


# Read from the environment by the openai SDK itself: build_client leaves them out, so that the
# SDK's documented variables work as its users expect.
OPENAI_SDK_ENV = ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


@dataclass(frozen=True)
class Secrets:
    """Read from the environment only; never from config.toml and never logged."""

    openai_api_key: str = ""
    azure_openai_api_key: str = ""
    discord_token: str = ""
    sql_connection_string: str = ""
    azure_search_api_key: str = ""
    jira_email: str = ""
    jira_api_token: str = ""
    web_staff_password_hash: str = ""  # `voxdesk web-password` prints one
    web_staff_password: str = ""  # plain; hashed at start and never kept (prefer the hash)
    web_staff: str = ""  # named staff accounts, "alice:<hash>,bob:<hash>" (bot/web/security.py)
    web_session_key: str = ""  # a Fernet key; empty: one made at start (sessions end on restart)
    web_metrics_token: str = ""  # bearer token for /metrics from beyond this machine; empty: loopback only

    ENV: typing.ClassVar[dict[str, str]] = {
        "openai_api_key": "OPENAI_API_KEY",
        "azure_openai_api_key": "AZURE_OPENAI_API_KEY",
        "discord_token": "DISCORD_TOKEN",
        "sql_connection_string": "VOXDESK_SQL_CONNECTION_STRING",
        "azure_search_api_key": "AZURE_SEARCH_API_KEY",
        "jira_email": "JIRA_EMAIL",
        "jira_api_token": "JIRA_API_TOKEN",
        "web_staff_password_hash": "VOXDESK_WEB_STAFF_PASSWORD_HASH",
        "web_staff_password": "VOXDESK_WEB_STAFF_PASSWORD",
        "web_staff": "VOXDESK_WEB_STAFF",
        "web_session_key": "VOXDESK_WEB_SESSION_KEY",
        "web_metrics_token": "VOXDESK_WEB_METRICS_TOKEN",
    }

    def __repr__(self) -> str:
        shown = {name: ("set" if getattr(self, name) else "unset") for name in self.ENV}
        return f"Secrets({shown})"


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings = field(default_factory=StorageSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    conversations: ConversationSettings = field(default_factory=ConversationSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    offline: OfflineSettings = field(default_factory=OfflineSettings)
    usage: UsageSettings = field(default_factory=UsageSettings)
    tools: ToolsSettings = field(default_factory=ToolsSettings)
    odbc: OdbcSettings = field(default_factory=OdbcSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    jira: JiraSettings = field(default_factory=JiraSettings)
    discord: DiscordSettings = field(default_factory=DiscordSettings)
    news: NewsSettings = field(default_factory=NewsSettings)
    web: WebSettings = field(default_factory=WebSettings)
    secrets: Secrets = field(default_factory=Secrets)
    source: str = "defaults"  # which file the settings came from, for log lines
    # "set in <file>" or "set by VOXDESK_<SECTION>_<KEY> (the environment or .env)" by each setting
    # given ("agent.system_prompt_file"): a value refused when used, not when read, names it too.
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def storage_dir(self) -> Path:
        return Path(self.storage.dir)

    @property
    def manuals_dir(self) -> Path:
        return Path(self.storage.manuals_dir) if self.storage.manuals_dir else paths.MANUALS

    def whereabouts(self) -> str:
        """Where the settings came from and where the data goes, as absolute paths: both follow
        the working directory, which a service manager may set to something unexpected."""
        if self.source == "defaults":
            came = f"built-in settings (no {DEFAULT_CONFIG} in {Path.cwd()}: --config or VOXDESK_CONFIG)"
        else:
            came = f"settings from {Path(self.source).resolve()}"
        return f"{came}, data in {self.storage_dir.resolve()}"

    def in_effect(self, environ: typing.Mapping[str, str] = os.environ) -> str:
        """What answers the notes and where each backend is, in one line for the start of the
        log: an on-call engineer reads the configuration there rather than rebuilding it from
        config.toml, the environment and the defaults. Addresses without credentials; no secret."""
        o, t = self.openai, self.tools
        if self.agent.engine == "openai":
            if o.provider == "azure":
                where = f"Azure deployment {o.azure_deployment} at {shown_url(o.azure_endpoint)}"
            else:
                base = o.base_url or environ.get("OPENAI_BASE_URL", "") or "https://api.openai.com/v1"
                where = f"{o.model} at {shown_url(base)}"
            heard = f"transcripts {o.transcribe_model}" if o.transcribe_model else "no transcripts"
            engine = f"openai ({where}, voice {o.voice}, {heard}), fallback {self.agent.fallback}"
        else:
            engine = f"offline (recogniser {self.offline.recognizer}, voice {self.offline.voice})"
        stats = f"odbc ({self.odbc.dialect})" if t.stats == "odbc" else t.stats
        manuals = (
            f"azure ({shown_url(self.search.endpoint)}, index {self.search.index})"
            if t.manuals == "azure"
            else t.manuals
        )
        grievances = t.grievances
        if t.grievances == "jira":
            grievances = f"jira ({shown_url(self.jira.url)}, project {self.jira.project})"
        web = f"on {self.web.host}:{self.web.port}" if self.web.enabled else "off"
        return f"engine {engine}; stats {stats}, manuals {manuals}, grievances {grievances}; web {web}"

    @property
    def system_prompt_path(self) -> Path:
        return Path(self.agent.system_prompt_file) if self.agent.system_prompt_file else paths.SYSTEM_PROMPT

    def where_set(self, key: str) -> str:
        """ "; set in <file>" (or by which variable) for a setting such as "agent.system_prompt_file"
        that was given, to end a refusal with; "" for one left at its default."""
        where = self.origins.get(key)
        return f"; {where}" if where else ""

    def replace(self, **sections: typing.Any) -> Settings:
        """A copy with some settings changed: `settings.replace(agent={"engine": "openai"})`."""
        changed = {
            name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()
        }
        # A value changed here was set by no file or variable.
        kept = {
            key: where
            for key, where in self.origins.items()
            if key.partition(".")[2] not in sections.get(key.partition(".")[0], {})
        }
        return dataclasses.replace(self, **changed, origins=kept)


SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if f.name not in ("secrets", "source", "origins")
}

# The voices of OpenAI's audio models; any other name makes every request a 400.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
REPLY_FORMATS = ("opus", "wav", "mp3", "flac", "aac", "pcm16")
# What a reply's `audio` may ask for in each Azure OpenAI api-version: the enums of its
# createChatCompletionRequest's audio.voice and audio.format, in its inference.json
# (github.com/Azure/azure-rest-api-specs, specification/cognitiveservices/data-plane/AzureOpenAI/
# inference/preview/<version>/inference.json, commit 4c95bb2873f0a0c29340e1fe1e7963fcbf9dc0b2).
# Azure refuses any other value with a 400, every note. A version not here is not known to.
AZURE_REPLY_AUDIO: dict[str, dict[str, tuple[str, ...]]] = {
    "2025-01-01-preview": {
        "voice": ("alloy", "echo", "fable", "onyx", "nova", "shimmer"),
        "format": ("wav", "mp3", "flac", "opus", "pcm16"),
    },
}
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("agent", "engine"): ("offline", "openai"),
    ("openai", "voice"): OPENAI_VOICES,
    ("agent", "fallback"): ("offline", "apology"),
    ("openai", "provider"): ("openai", "azure"),
    ("openai", "safety_identifier"): ("auto", "on", "off"),
    ("openai", "reply_format"): REPLY_FORMATS,
    ("tools", "stats"): ("sqlite", "odbc"),
    ("tools", "manuals"): ("sqlite", "azure"),
    ("search", "auth"): ("key", "entra"),
    ("tools", "grievances"): ("local", "jira"),
    ("odbc", "dialect"): ("sqlserver", "sqlite"),
    ("offline", "recognizer"): ("auto", "pocketsphinx", "whisper"),
}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
    dotenv: bool = True,
) -> Settings:
    """Read the config file, apply `VOXDESK_*` overrides, read secrets, and validate it all."""
    if environ is None:
        if dotenv:
            _load_dotenv()
        environ = os.environ
    # Stripped as every VOXDESK_* value is: a CRLF file sourced by a shell leaves an unseen "\r".
    chosen = path or environ.get("VOXDESK_CONFIG", "").strip()
    raw: dict[str, typing.Any] = {}
    source = "defaults"
    if chosen:
        # "~" is the home folder, as in config.toml's paths and --config: Environment= expands none.
        file = Path(chosen).expanduser()
        if file.is_dir():
            such = file / DEFAULT_CONFIG
            raise ConfigError(f"config file {file} is a folder: name the file, such as {such}")
        if not file.is_file():
            raise ConfigError(f"config file {file} not found: pass --config PATH or unset VOXDESK_CONFIG")
        raw, source = _read_toml(file), str(file)
    elif DEFAULT_CONFIG.is_file():
        raw, source = _read_toml(DEFAULT_CONFIG), str(DEFAULT_CONFIG)

    sections: dict[str, typing.Any] = {}
    # Where each setting given was set: a value refused once built is named with it.
    origins: dict[str, str] = {}
    for name, values in raw.items():
        if isinstance(values, dict):
            _refuse_secrets_within((name,), values, source)
        elif var := _secret_variable(name):
            _refuse_secret(f"{name} in {source}", var)
        if name not in SECTIONS and not isinstance(values, dict):
            # A setting written above every [section] header, or after none.
            owners = [section for section in SECTIONS if name in _known_keys(section)]
            under = f"put it under [{owners[0]}]" if len(owners) == 1 else "put it under its [section]"
            raise ConfigError(f"{name} in {source} is outside any section: {under}")
        if name not in SECTIONS:
            close = _closest(name, SECTIONS)
            guess = f"did you mean [{close}]? " if close else ""
            raise ConfigError(f"unknown section [{name}] in {source}: {guess}known are {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{name} in {source} must be a [section] table")
        sections[name] = dict(values)
        origins.update({f"{name}.{key}": f"set in {source}" for key in values})
    links: list[str] = []
    for key, text in environ.items():
        if not key.startswith(ENV_PREFIX) and key.upper().startswith(ENV_PREFIX):
            # Names are case-sensitive here (not on Windows, whose environment reads any case):
            # voxdesk_agent_engine=openai in a unit or .env would otherwise go unread unsaid.
            log.warning("%s is not read: variable names are upper case%s", key, _upper_case_name(key))
            continue
        if not key.startswith(ENV_PREFIX) or key in _ENV_NOT_SETTINGS:
            continue
        setting = _env_setting(key)
        if _is_service_link(key, text):
            links.append(key)
            if setting is not None:
                log.warning(
                    "%s holds a service address (a Kubernetes service link), not %s.%s: ignored "
                    "(enableServiceLinks: false in the pod spec keeps such variables out)",
                    key,
                    *setting,
                )
        elif setting is None and (var := _secret_variable(key[len(ENV_PREFIX) :])):
            log.warning("%s names no setting, ignored: a secret is read from %s", key, var)
        elif setting is None:
            log.warning("%s names no setting, ignored%s", key, _closest_setting(key))
        else:
            sections.setdefault(setting[0], {})[setting[1]] = _EnvText(text)
            origins[".".join(setting)] = f"set by {key} (the environment or .env)"
    if links:
        log.info("ignored Kubernetes service-link variables: %s", ", ".join(sorted(links)))

    built = {
        name: _build_section(name, cls, sections.get(name, {}), source) for name, cls in SECTIONS.items()
    }
    secrets = Secrets(**{name: environ.get(var, "").strip() for name, var in Secrets.ENV.items()})
    with _naming_origins(origins):
        # Refused by a choice its values allow, not by its type (whose message names the file or
        # the variable): said with where it was set, which may be a file or a variable another
        # than the one the operator reads.
        for name in SECTIONS:
            _check_choices(name, built[name])
        for section, key in PATH_SETTINGS:
            built[section] = dataclasses.replace(
                built[section], **{key: _local_path(f"{section}.{key}", getattr(built[section], key))}
            )
        settings = Settings(**built, secrets=secrets, source=source, origins=origins)
        logs.mask_secrets(_values_to_mask(settings, environ))
        _check_storage_place(settings)
        _check_ranges(settings)
        _check_not_empty(settings)
        _check_jira_project(settings)
        _check_languages(settings.offline)
        _check_addresses(settings, environ)
    _check_required_secrets(settings)
    _check_azure_audio(settings)
    _warn_of_quoted_secrets(settings.secrets)
    _warn_of_short_secrets(settings, environ)
    _warn_of_another_services_key(settings, environ)
    return settings


def _warn_of_quoted_secrets(secrets: Secrets) -> None:
    # Not refused: a password may begin and end with a quote. DISCORD_TOKEN's shape is checked
    # on its own, before Discord is asked.
    for name, var in Secrets.ENV.items():
        if name != "discord_token" and in_quotes(getattr(secrets, name)):
            log.warning(
                "%s is in quotes, which are sent as part of it (docker's --env-file keeps them):"
                " remove them unless they belong to it",
                var,
            )


def _warn_of_short_secrets(settings: Settings, environ: typing.Mapping[str, str]) -> None:
    """Name each secret shorter than logs.MIN_SECRET_CHARS, which the log's mask hides only where
    it stands as a word of its own (under logs.MIN_MASKED_CHARS, nowhere): a SQL or proxy password
    may be that short, a service's key never is.
    Not refused, as the service took it; the query's credentials and the custom headers' values
    are left unsaid, being a short flag or "Bearer" as often as a secret."""
    # Not the Discord token, nor the web desk's secrets: their shapes are checked on their own.
    keys = ("openai_api_key", "azure_openai_api_key", "azure_search_api_key", "jira_api_token")
    named = [(Secrets.ENV[name], getattr(settings.secrets, name)) for name in (*keys, "web_metrics_token")]
    named += [
        (f"a password in {Secrets.ENV['sql_connection_string']}", password)
        for password in odbc_passwords(settings.secrets.sql_connection_string)
    ]
    named += [(var, environ.get(var, "")) for var in CLIENT_SECRET_ENV]
    addresses = [(var, environ.get(var, "")) for var in ("OPENAI_BASE_URL", *PROXY_ENV)]
    for section in SECTIONS:
        values = getattr(settings, section)
        addresses += [(f"{section}.{f.name}", getattr(values, f.name)) for f in dataclasses.fields(values)]
    for where, address in addresses:
        if isinstance(address, str) and "@" in address and "://" in address:
            with contextlib.suppress(ValueError):
                password = urllib.parse.unquote(urllib.parse.urlsplit(address).password or "")
                named.append((f"the password in {where}", password))
    # The shortest each place holds says what the log does with it (a braced password is found twice).
    shortest: dict[str, int] = {}
    for where, value in named:
        if 0 < len(value) < logs.MIN_SECRET_CHARS:
            shortest[where] = min(len(value), shortest.get(where, len(value)))
    for where, length in shortest.items():
        if length < logs.MIN_MASKED_CHARS:
            log.warning(
                "%s is shorter than %d characters: the log does not mask it (it would mask that word"
                " in every line), and it is guessed at once; give it its full length",
                where,
                logs.MIN_MASKED_CHARS,
            )
        else:
            log.warning(
                "%s is shorter than %d characters: the log masks it only as a word of its own (not"
                " inside a longer one), and it is easily guessed; give it its full length",
                where,
                logs.MIN_SECRET_CHARS,
            )


def reply_audio_choices(o: OpenAISettings, name: str) -> tuple[str, ...]:
    """The reply voices (`name` "voice") or formats ("format") requests may ask for: OpenAI's, and
    on Azure those of them its api-version takes."""
    every = OPENAI_VOICES if name == "voice" else REPLY_FORMATS
    if o.provider != "azure" or o.api_version not in AZURE_REPLY_AUDIO:
        return every
    return tuple(v for v in every if v in AZURE_REPLY_AUDIO[o.api_version][name])


def _check_azure_audio(settings: Settings) -> None:
    """On Azure: a reply voice or format its api-version's specification does not list has every
    note refused where the deployment's model does not take it (the fallback answers each), while
    `check`, which asks for text alone, would pass: said. Not refused: the specification lags the
    models (Azure's gpt-audio deployments take all ten voices and aac). An api-version whose
    voices and formats are not known here is said, as none of them is checked. And earlier
    replies' audio ids, which its api-versions have no place for, are not sent however many
    openai.audio_history_turns asks for: said, or a studio would count on them."""
    o = settings.openai
    if settings.agent.engine != "openai" or o.provider != "azure":
        return
    if o.api_version not in AZURE_REPLY_AUDIO:
        # Nothing to check against: every voice and format passes, and /voice offers them all,
        # while the version may refuse some of them with a 400 on every note.
        log.warning(
            "openai.api_version = %r is not one whose reply voices and formats voxdesk knows (%s):"
            " openai.voice and openai.reply_format could not be checked, and /voice offers every"
            " voice; one this version refuses has every note answered by the fallback",
            o.api_version,
            ", ".join(AZURE_REPLY_AUDIO),
        )
    for name, value in (("voice", o.voice), ("format", o.reply_format)):
        if value not in (allowed := reply_audio_choices(o, name)):
            key = "openai.voice" if name == "voice" else "openai.reply_format"
            log.warning(
                "%s = %r is not one Azure's api-version %s (openai.api_version) lists: a deployment"
                " whose model does not take it has every note refused and answered by the fallback"
                " (those it lists: %s)",
                key,
                value,
                o.api_version,
                ", ".join(allowed),
            )
    if o.audio_history_turns:
        log.warning(
            "openai.audio_history_turns = %d is not used on Azure: its api-versions (%s here) have no"
            " place for an earlier reply's audio id, so every earlier reply goes as its transcript"
            " (set it to 0 to say so)",
            o.audio_history_turns,
            o.api_version,
        )


def _warn_of_another_services_key(settings: Settings, environ: typing.Mapping[str, str]) -> None:
    # api.openai.com refuses any other key with a 401 naming no cause; an Azure OpenAI key (32 hex
    # digits, or longer) set as OPENAI_API_KEY is the usual one. Other servers' keys vary: no word.
    key, o = settings.secrets.openai_api_key, settings.openai
    to_openai = not (o.base_url or environ.get("OPENAI_BASE_URL", "").strip())
    if (
        settings.agent.engine == "openai"
        and o.provider == "openai"
        and to_openai
        and key
        and not in_quotes(key)
    ):
        if not key.startswith("sk-"):
            log.warning(
                "OPENAI_API_KEY does not begin with sk- as OpenAI's keys do: for an Azure OpenAI key set"
                ' openai.provider = "azure", openai.azure_endpoint and openai.azure_deployment, and the key'
                " as AZURE_OPENAI_API_KEY"
            )


def _check_storage_place(settings: Settings) -> None:
    # A systemd unit without WorkingDirectory= starts in /: the default storage.dir "var" is then
    # the system's /var, where init (as root) would scatter the databases among its files.
    if not settings.storage.dir.strip():
        # Path("") is the working directory: the databases would go among config.toml and .env.
        raise ConfigError(
            "storage.dir is empty: name the data folder, such as var (the default) or /srv/voxdesk/var"
        )
    folder = settings.storage_dir
    try:
        cwd = Path.cwd()
    except FileNotFoundError:
        # A release folder removed under a shell still in it: every relative path fails later
        # with a bare "[Errno 2] No such file or directory". Refused with every path absolute too:
        # multiprocessing's spawn asks os.getcwd() for each speech worker it starts, so the
        # offline engine (the default, and the default fallback) fails the same way.
        raise ConfigError(
            "the working directory no longer exists (removed after this shell entered it):"
            " cd to the bot's folder again"
        ) from None
    if not folder.is_absolute() and cwd == Path(cwd.anchor):
        raise ConfigError(
            f"storage.dir = {folder} is relative and the working directory is {cwd} (a service with no"
            f" WorkingDirectory=?), so the data would go in {cwd / folder}: set WorkingDirectory= to the"
            " bot's folder, or storage.dir to an absolute path"
        )


# Files and folders: "~" is the home folder of the user voxdesk runs as, as in a shell; a TOML
# string and a unit's Environment= expand nothing, and Path("~/x") is a folder named "~" here.
PATH_SETTINGS = (("storage", "dir"), ("storage", "manuals_dir"), ("agent", "system_prompt_file"))
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _local_path(key: str, value: str) -> str:
    if os.name != "nt" and _WINDOWS_DRIVE.match(value):
        # Elsewhere it is a relative path: a folder named "C:\voxdesk\var" in the working one.
        raise ConfigError(f"{key} = {value} is a Windows path: write this machine's, such as /srv/voxdesk")
    return os.path.expanduser(value) if value.startswith("~") else value


# Numbers that must be above zero: a limit of 0 turns, notes or connections would stop the bot
# (no turn ever answered, no query ever run) rather than switch something off. Every other number
# must not be negative, save silence_threshold_db (dBFS, at most 0).
POSITIVE = {
    ("audio", "max_bytes"), ("audio", "max_seconds"), ("agent", "max_concurrent_turns"),
    ("agent", "stuck_turn_seconds"),
    ("conversations", "idle_minutes"), ("openai", "timeout_seconds"), ("offline", "rate_wpm"),
    ("openai", "connect_timeout_seconds"), ("openai", "turn_deadline_seconds"),
    ("tools", "manual_results"), ("odbc", "pool_size"), ("odbc", "query_timeout_seconds"),
    ("search", "timeout_seconds"), ("jira", "push_interval_seconds"), ("jira", "timeout_seconds"),
    ("jira", "max_backoff_seconds"), ("discord", "flood_notes"), ("discord", "flood_seconds"),
    ("discord", "download_seconds"), ("discord", "recheck_seconds"), ("discord", "gateway_grace_seconds"),
    ("discord", "catch_up_reads_per_second"),
    ("discord", "send_seconds"), ("discord", "rate_limit_seconds"), ("news", "poll_seconds"),
    ("web", "playground_notes"), ("web", "playground_seconds"), ("web", "login_attempts"),
    ("web", "login_seconds"), ("web", "login_name_attempts"), ("web", "session_hours"),
    ("web", "playground_turns"),
    ("web", "playground_notes_per_minute"), ("web", "playground_complaints"),
    ("web", "playground_complaints_per_day"), ("web", "connections_per_address"),
}  # fmt: skip
MAX_DEFER_SECONDS = 2.5
# Each tool round is one more billed request, carrying the whole prompt and every result so far,
# within the turn's deadline: an answer needs a round or two (stats, a manual, a ticket), and past
# 10 only a model calling tools in a loop would go on, at the player's budget and a turn slot's time.
MAX_TOOL_ROUNDS = 10
# discord.py waits out every rate limit up to 30 s whatever max_ratelimit_timeout says (it takes
# max(30, the value)): a lower setting would promise a note answered later that it holds instead.
MIN_RATE_LIMIT_SECONDS = 30.0
# Each speech worker loads every speech model (about 600 MB under Whisper with all-mpnet-base-v2)
# and decodes on one core: 100 of them ran the machine out of memory at start, which read as the
# Whisper model failing to load. More than this is a second bot process's job.
MAX_SPEECH_WORKERS = 16
PRICE_KEYS = ("text_in", "text_out", "audio_in", "audio_out", "cached_in")


def check_port(port: int, given: str) -> None:
    """`given`: how the port was set, for the message (a setting, or a command's option)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"{given}: a port is 0 to 65535")


# Settings that name a thing to use: empty (a compose file's ${VAR} with VAR unset) none is named,
# and the bot ran on with a degraded engine or had every request refused. Other text settings
# mean "none" or "the default" when empty, as config.toml says.
NAMES_SOMETHING = (
    ("offline", "voice"),
    ("offline", "whisper_model"),
    ("offline", "meaning_model"),
    ("openai", "model"),
    ("openai", "api_version"),
    ("search", "index"),
    ("jira", "project"),
    ("jira", "issue_type"),
)


# Jira's project key format: a capital letter, then capitals, digits or "_", 2 to 10 in all. \Z,
# not $: $ also matches before a final line break, which would pass "GRV\n".
JIRA_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{1,9}\Z")


def _check_jira_project(settings: Settings) -> None:
    """jira.project, with Jira on: a key Jira cannot have names no project, and the Jira client
    refused it only when the backend was built, `run` stopping there on a traceback."""
    if settings.tools.grievances != "jira" or JIRA_PROJECT_KEY.match(project := settings.jira.project):
        return
    if JIRA_PROJECT_KEY.match(project.upper()):
        # Jira's keys are upper case, and its REST API takes a project key case-sensitively.
        raise ConfigError(
            f"jira.project = {project!r}: Jira project keys are upper case: set it to {project.upper()!r}"
        )
    raise ConfigError(f"jira.project = {project!r} is not a Jira project key like GRV: fix it")


def _check_not_empty(settings: Settings) -> None:
    for section, key in NAMES_SOMETHING:
        if not getattr(getattr(settings, section), key).strip():
            default = getattr(SECTIONS[section](), key)
            raise ConfigError(f"{section}.{key} is empty: name one (the default is {default!r})")


def _check_ranges(settings: Settings) -> None:
    for section in SECTIONS:
        values = getattr(settings, section)
        for f in dataclasses.fields(values):
            value = getattr(values, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            key = f"{section}.{f.name}"
            if not math.isfinite(value):
                # TOML and the environment both take inf and nan: a wait of inf never ends (a
                # grievance never pushed), and nan passes every comparison below.
                raise ConfigError(f"{key} = {value}: it must be finite")
            if (section, f.name) == ("audio", "silence_threshold_db"):
                if value > 0:
                    raise ConfigError(f"{key} = {value}: a level in dBFS is 0 or below")
            elif (section, f.name) in POSITIVE and value <= 0:
                raise ConfigError(f"{key} = {value}: it must be above 0")
            elif value < 0:
                raise ConfigError(f"{key} = {value}: it must not be negative")
    check_port(settings.web.port, f"web.port = {settings.web.port}")
    _check_workers(settings.offline.workers)
    if settings.agent.max_tool_rounds > MAX_TOOL_ROUNDS:
        raise ConfigError(
            f"agent.max_tool_rounds = {settings.agent.max_tool_rounds}: it is 0 to {MAX_TOOL_ROUNDS}"
            " (each round is another billed request of the whole prompt)"
        )
    _check_web(settings)
    if settings.discord.defer_after_seconds > MAX_DEFER_SECONDS:
        raise ConfigError(
            f"discord.defer_after_seconds = {settings.discord.defer_after_seconds}: Discord waits 3 s for a "
            f"command's first answer; at most {MAX_DEFER_SECONDS} leaves time to send it"
        )
    if settings.discord.rate_limit_seconds < MIN_RATE_LIMIT_SECONDS:
        raise ConfigError(
            f"discord.rate_limit_seconds = {settings.discord.rate_limit_seconds:g}: discord.py waits out"
            f" every rate limit up to {MIN_RATE_LIMIT_SECONDS:g} s whatever this says; set"
            f" {MIN_RATE_LIMIT_SECONDS:g} or more"
        )
    for model, prices in settings.usage.prices.items():
        if not isinstance(prices, dict):
            raise ConfigError(f"usage.prices.{model!r} must be a table of prices per 1M tokens")
        for name, price in prices.items():
            if name not in PRICE_KEYS:
                raise ConfigError(f"usage.prices.{model!r}.{name}: known prices are {', '.join(PRICE_KEYS)}")
            if isinstance(price, bool) or not isinstance(price, int | float) or not 0 <= price < math.inf:
                raise ConfigError(
                    f"usage.prices.{model!r}.{name} = {price!r}: it must be a finite number, 0 or more"
                )
    for name, row in settings.usage.price_as.items():
        if not isinstance(row, str) or row not in settings.usage.prices:
            raise ConfigError(
                f"usage.price_as.{name!r} = {row!r}: no [usage.prices] row has that name; "
                f"name one of {', '.join(settings.usage.prices)}"
            )


# Settings that hold a service's address, read by urllib.parse wherever they are shown or checked.
ADDRESS_SETTINGS = (
    ("openai", "base_url"),
    ("openai", "azure_endpoint"),
    ("search", "endpoint"),
    ("jira", "url"),
    ("discord", "api_base"),
    ("discord", "gateway_url"),
)


def _check_addresses(settings: Settings, environ: typing.Mapping[str, str]) -> None:
    """An address urllib cannot split (an unclosed "[" reads as an IPv6 host) would stop `check`
    and `run` on a traceback naming no setting. The message never shows the value: it may hold a
    password."""
    given = [
        (f"{section}.{key}", getattr(getattr(settings, section), key)) for section, key in ADDRESS_SETTINGS
    ]
    for name, address in [*given, ("OPENAI_BASE_URL", environ.get("OPENAI_BASE_URL", ""))]:
        try:
            urllib.parse.urlsplit(address.strip())
            shown_url(address)
        except ValueError as exc:
            reason = _without_user(str(exc), address)
            raise ConfigError(f"{name} cannot be read as an address ({reason}): fix it") from None


def _without_user(reason: str, address: str) -> str:
    """urllib's reason for refusing `address` without its user:password@, which the reason for a
    character NFKC turns into one of / ? # @ : quotes with the rest of the netloc."""
    rest = address.strip()
    netloc = re.split(r"[/?#]", rest.split("//", 1)[1] if "//" in rest else rest, maxsplit=1)[0]
    user, at, _ = netloc.rpartition("@")
    return reason.replace(user + at, "") if at else reason


def _check_workers(workers: int) -> None:
    if workers > MAX_SPEECH_WORKERS:
        raise ConfigError(
            f"offline.workers = {workers}: at most {MAX_SPEECH_WORKERS} (each worker loads every speech"
            " model, about 600 MB under Whisper; 0 starts one per core, up to four)"
        )
    cores = os.cpu_count() or 1
    if workers > cores:
        log.warning(
            "offline.workers = %d is more than this machine's %d cores: the extra workers decode no"
            " faster, and each holds every speech model (about 600 MB under Whisper)",
            workers,
            cores,
        )


def _check_web(settings: Settings) -> None:
    web, turns = settings.web, settings.agent.max_concurrent_turns
    # Under `voxdesk run` the playground and Discord players share the agent's turn slots.
    if web.enabled and web.playground_turns >= turns:
        raise ConfigError(
            f"web.playground_turns = {web.playground_turns}: keep it below agent.max_concurrent_turns"
            f" ({turns}), so anonymous playground notes never hold every turn Discord players need"
        )
    for proxy in web.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"web.trusted_proxies: {proxy!r} is not an IP address or network such as 10.0.0.5 or"
                " 10.0.0.0/24"
            ) from None
    for name in web.allowed_hosts:
        # As the Host header carries it, without its port: an address pasted whole (a scheme, a
        # path) or a port would match no request, and the site would answer only 421s.
        bare = name.strip().removeprefix("[").removesuffix("]")
        if name != "*" and not _is_address(bare) and (not bare or re.search(r"[/\s@:]", bare)):
            raise ConfigError(
                f"web.allowed_hosts: {name!r} is not a host name such as support.example.com"
                " (no scheme, port or path)"
            )
        if name != "*" and ("*" in bare or bare.startswith(".")):
            # Names compare whole: a pattern for every subdomain (other frameworks take
            # "*.example.com" or ".example.com") would match none, and every page would be a 421.
            raise ConfigError(
                f"web.allowed_hosts: {name!r} is a pattern, which matches no name here: list each"
                ' name whole (["support.example.com", "desk.example.com"]), or "*" for any'
            )


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _values_to_mask(settings: Settings, environ: typing.Mapping[str, str]) -> list[str]:
    """Every secret, and the parts of other values that are one: the ODBC connection string's
    password, a password in a service address (a proxy's, say)."""
    values = [getattr(settings.secrets, name) for name in Secrets.ENV]
    values += odbc_passwords(settings.secrets.sql_connection_string)
    values += [jira_basic_auth(settings.secrets.jira_email, settings.secrets.jira_api_token)]
    # Each staff account's hash ("alice:<hash>,bob:<hash>"): a line may quote one entry alone.
    values += [entry.partition(":")[2].strip() for entry in settings.secrets.web_staff.split(",")]
    values += [environ.get(name, "") for name in CLIENT_SECRET_ENV]
    # A short header value is a flag ("1", "true") as often as a secret: masked as a word of its
    # own, it would mask that word in every line.
    values += [
        v
        for v in custom_header_values(environ.get("OPENAI_CUSTOM_HEADERS", ""))
        if len(v) >= logs.MIN_SECRET_CHARS
    ]
    addresses = [environ.get("OPENAI_BASE_URL", "")]  # the SDK reads it when openai.base_url is empty
    addresses += [environ.get(name, "") for name in PROXY_ENV]
    for name in SECTIONS:
        section = getattr(settings, name)
        addresses += [getattr(section, f.name) for f in dataclasses.fields(section)]
    for address in addresses:
        if isinstance(address, str):
            # A short query value is a flag as often as a credential (?code=1), as above.
            flags = {v for v in query_secrets(address) if len(v) < logs.MIN_SECRET_CHARS}
            values += [v for v in address_secrets(address) if v not in flags]
    return values


def jira_basic_auth(email: str, token: str) -> str:
    """The credentials of the Authorization header Jira is sent ("Basic <this>"), as requests
    encodes them: str(JIRAError) prints the request's headers. Empty without a token."""
    if not token:
        return ""
    pair = f"{email}:{token}"
    try:
        encoded = pair.encode("latin1")
    except UnicodeEncodeError:
        encoded = pair.encode()
    return base64.b64encode(encoded).decode("ascii")


def address_secrets(address: str) -> list[str]:
    """The credentials an address carries: its password (as written and decoded) and its query's
    (query_secrets)."""
    values = []
    if "@" in address and "://" in address:
        with contextlib.suppress(ValueError):
            password = urllib.parse.urlsplit(address).password or ""
            values += [password, urllib.parse.unquote(password)]
    if "?" in address:
        values += query_secrets(address)
    return [v for v in values if v]


def _quoted(value: typing.Any) -> str:
    """`value` as a refusal quotes it (repr), the credentials of an address in it masked: a value
    is refused before the settings' secrets are masked, and docker's --env-file keeps the quotes
    of OPENAI_BASE_URL="https://user:pass@gateway/v1"."""
    said = repr(value)
    secrets = {
        spelt
        for text in (value if isinstance(value, list) else [value])
        if isinstance(text, str)
        for secret in address_secrets(text.strip().strip("\"'"))
        for spelt in logs.spellings(secret)
    }
    # As the value's repr spells each (it escapes a quote the secret's own repr would not: an
    # apostrophe in a value holding both quotes), longest first so none is masked but a part.
    for spelt in sorted(secrets, key=len, reverse=True):
        said = said.replace(spelt, logs.MASK)
    return said


# Query parameters that carry a credential, named as gateways and services name them: a key
# (?key=, ?api-key=, API Management's ?subscription-key=), a token, a password, an Azure SAS
# signature (sig), an Azure Functions key (code). Compared with "-" and "_" left out.
_SECRET_QUERY_NAME = re.compile(r"key|token|secret|pass|pwd|auth|credential|signature|^sig$|^code$")


def query_secrets(address: str) -> list[str]:
    """The values of an address's query parameters that carry a credential, as written and
    decoded: a library's error quoting the request's address (aiohttp's, an SDK's) prints them.
    Others (api-version and the like) are not masked, or every line naming one would lose it."""
    try:
        query = urllib.parse.urlsplit(address.strip()).query
    except ValueError:
        return []
    found = []
    for pair in re.split(r"[&;]", query):
        name, equals, value = pair.partition("=")
        plain = urllib.parse.unquote_plus(name).lower().replace("-", "").replace("_", "").strip()
        if equals and value and _SECRET_QUERY_NAME.search(plain):
            found += [value, urllib.parse.unquote_plus(value)]
    return found


# Secrets the clients voxdesk builds read from the environment themselves, besides its own: the
# openai SDK's other keys (read when a key is not given, or kept for webhooks), azure-identity's
# service principal secret and certificate password (search.auth = "entra"), and the proxy a
# client takes from HTTPS_PROXY and the like, with its password.
CLIENT_SECRET_ENV = (
    "OPENAI_ADMIN_KEY",
    "OPENAI_WEBHOOK_SECRET",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
)
PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def custom_header_values(headers: str) -> list[str]:
    """The values of OPENAI_CUSTOM_HEADERS ("Name: value" lines), which the openai SDK sends with
    every request: a gateway's key, or "Bearer <token>" and its token."""
    values = []
    for line in headers.splitlines():
        value = line.partition(":")[2].strip()
        values += [value, value.rpartition(" ")[2]]
    return values


# PWD=secret; or PWD={se;cret}, a brace inside written twice (the ODBC connection string grammar).
# The keywords odbc_stats.redact scrubs too: ClientSecret (a service principal's), KeyStoreSecret
# (Always Encrypted's), AccessToken, and ClientKey ("file:<path>,<password>").
_ODBC_PASSWORD = re.compile(
    r"(?:^|;)\s*(?:PWD|PASSWORD|CLIENTSECRET|KEYSTORESECRET|ACCESSTOKEN|CLIENTKEY)\s*=\s*"
    r"(\{(?:[^}]|\}\})*\}|[^;]*)",
    re.IGNORECASE,
)


def odbc_passwords(connection_string: str) -> list[str]:
    """The passwords and other secrets of an ODBC connection string as written, and unbraced."""
    found = []
    for match in _ODBC_PASSWORD.finditer(connection_string):
        written = match.group(1).strip()
        found.append(written)
        if written.startswith("{") and written.endswith("}"):
            found.append(written[1:-1].replace("}}", "}"))
    return found


# Secrets that share the settings' prefix are read as secrets, never as settings.
_ENV_NOT_SETTINGS = {"VOXDESK_CONFIG", *(v for v in Secrets.ENV.values() if v.startswith(ENV_PREFIX))}

# The names a studio gives a secret where a setting goes ("[openai] api_key", "[secrets]
# openai_api_key", VOXDESK_DISCORD_TOKEN), lower case with "_" for ".", and the variable it is
# read from: the refusal then says where it goes rather than listing the section's keys.
_SECRET_NAMES = {
    alias: var
    for name, var in Secrets.ENV.items()
    for alias in (name, var.lower(), var.lower().removeprefix(ENV_PREFIX.lower()))
} | {
    "openai_azure_api_key": "AZURE_OPENAI_API_KEY",
    "openai_azure_openai_api_key": "AZURE_OPENAI_API_KEY",
    "search_api_key": "AZURE_SEARCH_API_KEY",
    "odbc_connection_string": "VOXDESK_SQL_CONNECTION_STRING",
    # What the services' own pages call them: the developer portal's "bot token", an API "key",
    # Atlassian's "API token" (once a password).
    "discord_bot_token": "DISCORD_TOKEN",
    "openai_key": "OPENAI_API_KEY",
    "openai_azure_key": "AZURE_OPENAI_API_KEY",
    "search_key": "AZURE_SEARCH_API_KEY",
    "jira_token": "JIRA_API_TOKEN",
    "jira_password": "JIRA_API_TOKEN",
    "web_password": "VOXDESK_WEB_STAFF_PASSWORD",
}


def _secret_variable(*names: str) -> str | None:
    """The variable a secret written under one of these names is read from; None if none is."""
    for name in names:
        # "-" as TOML's bare keys may spell a name (api-key).
        var = _SECRET_NAMES.get(name.lower().replace(".", "_").replace("-", "_").removeprefix("secrets_"))
        if var is not None:
            return var
    return None


def _refuse_secrets_within(path: tuple[str, ...], values: dict[str, typing.Any], source: str) -> None:
    """Refuse a secret anywhere in a table of the file but under a setting's own key: in a table
    of its own too ([secrets.openai] api_key, [openai.azure] api_key, or the same as a dotted key
    or an inline table), which would otherwise be refused as an unknown table naming no variable."""
    known = _known_keys(path[0]) if len(path) == 1 else set()
    for key, value in values.items():
        if key in known:
            continue
        here = (*path, key)
        if var := _secret_variable("_".join(here), f"{path[0]}_{key}", key):
            _refuse_secret(f"{'.'.join(here)} in {source}", var)
        if isinstance(value, dict):
            _refuse_secrets_within(here, value, source)


def _refuse_secret(where: str, var: str) -> typing.NoReturn:
    # Never the value: the error line goes to a terminal or a journal.
    raise ConfigError(
        f"{where} is a secret, which a config file must not hold: delete it there, and set {var} in"
        " the environment or .env"
    )


class _EnvText(str):
    """A value from the environment: still text, converted to the field's type on build."""


DOTENV = Path(".env")  # in the working directory, like config.toml
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POWERSHELL_NAME = re.compile(r"\$env:[A-Za-z_][A-Za-z0-9_]*", re.IGNORECASE)


def _dotenv_line(text: str, name: str) -> int | None:
    """The number of the first line of a .env file that begins with `name`, or None."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().removeprefix("export ").lstrip().startswith(name):
            return number
    return None


class _NamingDotenv(logging.Filter):
    """python-dotenv's warning of a line it cannot parse ("could not parse statement starting at
    line 2") names no file: said instead by a line that names .env. A python-dotenv that words it
    otherwise has its own line shown as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("python-dotenv could not parse") or not record.args:
            return True
        line = record.args[0] if isinstance(record.args, tuple) else record.args
        log.warning(
            "%s: line %s could not be read, ignored: write NAME=value lines, such as DISCORD_TOKEN=...",
            DOTENV.resolve(),
            line,
        )
        return False


def _load_dotenv() -> None:
    try:
        from dotenv import dotenv_values
        from dotenv.parser import parse_stream
    except ImportError:  # optional: plain environment variables still work
        return
    try:
        # Read here, not by python-dotenv: before 1.2.3 it dropped the first line of a file that
        # begins with a byte-order mark (Notepad's UTF-8), and a file PowerShell 5 wrote with `>`
        # (UTF-16) stopped every command with a traceback.
        text = DOTENV.read_bytes().decode("utf-8-sig")
    except (FileNotFoundError, IsADirectoryError):  # none, or a virtualenv named .env
        return
    except UnicodeDecodeError:
        raise ConfigError(
            f"{DOTENV.resolve()} is not UTF-8 text (PowerShell 5's > writes UTF-16): save it as UTF-8"
        ) from None
    naming = _NamingDotenv()
    logging.getLogger("dotenv.main").addFilter(naming)
    try:
        # No ${VAR} expansion: a secret may hold "${".
        values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    finally:
        logging.getLogger("dotenv.main").removeFilter(naming)
    _warn_of_repeated_names(parse_stream(io.StringIO(text)))
    for var, value in values.items():
        # A key of letters and digits alone (Azure's) pasted on a line of its own reads as a name
        # declared with no value; a variable's name is written in capitals.
        secret_alone = value is None and var != var.upper()
        if secret_alone or not _VARIABLE_NAME.fullmatch(var):
            # PowerShell's `$env:DISCORD_TOKEN = "..."` and cmd's `set DISCORD_TOKEN=...` parse as
            # a name no program reads: the secret was "not set" with no word of this line.
            if _POWERSHELL_NAME.fullmatch(var):
                log.warning(
                    "%s: %r is not a variable's name, ignored: write NAME=value lines, such as"
                    " DISCORD_TOKEN=...",
                    DOTENV.resolve(),
                    var,
                )
            else:
                # Any other "name" may be a secret itself (an Atlassian token, whose "=" python-dotenv
                # splits at, pasted on a line of its own): the line is named by its number alone.
                line = _dotenv_line(text, var)
                log.warning(
                    "%s%s holds no NAME=value, ignored (not shown: it may be a secret): write NAME=value"
                    " lines, such as DISCORD_TOKEN=...",
                    DOTENV.resolve(),
                    f" line {line}" if line else ": a line",
                )
            continue
        if value is None:
            # A name alone: declared with no value, which sets nothing. Checked after the name, as
            # a token with no "=" pasted on a line of its own reads so too.
            continue
        if "\0" in value:
            # No environment variable can hold one: os.environ would stop start-up with a traceback.
            raise ConfigError(
                f"{DOTENV.resolve()}: the value of {var} holds a NUL character, which no environment"
                " variable can: remove it"
            )
        present = os.environ.get(var)
        if present is None:
            os.environ[var] = value
        elif var.startswith(ENV_PREFIX) and var not in Secrets.ENV.values():
            if present.strip() != value.strip() and _env_setting(var) is not None:
                # A setting changed in .env while a unit's Environment= or a shell profile still
                # sets the old one: the environment's is read, and nothing said so.
                log.warning(
                    "%s is set in the environment and, to another value, in %s: the environment's is used",
                    var,
                    DOTENV.resolve(),
                )
        elif var in Secrets.ENV.values() and value.strip():
            if not present.strip():
                # A secret the environment has empty is one it does not have (compose's
                # ${OPENAI_API_KEY} on a host without it, a unit's `Environment=OPENAI_API_KEY=`):
                # .env's value is taken, rather than start-up saying it is set nowhere.
                os.environ[var] = value
            elif present.strip() != value.strip():
                # A token renewed in .env while a shell profile or the unit still exports the old
                # one: Discord refuses the old one and nothing said which was sent.
                log.warning(
                    "%s is set in the environment and, to another value, in %s: the environment's is used",
                    var,
                    DOTENV.resolve(),
                )


def _warn_of_repeated_names(bindings: typing.Iterable[typing.Any]) -> None:
    """A name set on two lines of .env is said, by its lines (never its values): the last is the
    one .env gives, and the operator who changed the first saw no change."""
    earlier: dict[str, int] = {}
    for binding in bindings:
        name, line = binding.key, binding.original.line
        # A "name" that is no variable's may be a secret pasted on its own line: said elsewhere.
        if binding.error or name is None or not _VARIABLE_NAME.fullmatch(name):
            continue
        if name in earlier:
            log.warning(
                "%s: %s is set on line %d and again on line %d: .env gives line %d's",
                DOTENV.resolve(),
                name,
                earlier[name],
                line,
                line,
            )
        earlier[name] = line


def _read_toml(path: Path) -> dict[str, typing.Any]:
    try:
        # Notepad and PowerShell's `Out-File -Encoding utf8` begin a file with a byte-order mark,
        # which TOML does not allow and tomllib reads as an invalid first line.
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid TOML (it is not UTF-8 text): save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        # A Windows path in "double quotes" reads "\v" as an escape.
        hint = (
            ": write a Windows path in 'single quotes' or with forward slashes"
            if "Unescaped '\\'" in str(exc)
            else ": fix the file"
        )
        raise ConfigError(f"{path} is not valid TOML ({exc}){hint}") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}") from None


def _env_setting(key: str) -> tuple[str, str] | None:
    """The (section, key) a `VOXDESK_*` name sets, or None if it names no setting."""
    rest = key[len(ENV_PREFIX) :].lower()
    for section in sorted(SECTIONS, key=len, reverse=True):
        if rest.startswith(section + "_"):
            name = rest[len(section) + 1 :]
            known = {f.name for f in dataclasses.fields(SECTIONS[section])}
            return (section, name) if name in known else None
    return None


# What Kubernetes gives every pod for each Service in its namespace (a Service voxdesk-web:
# VOXDESK_WEB_SERVICE_HOST, VOXDESK_WEB_SERVICE_PORT[_<name>], VOXDESK_WEB_PORT=tcp://...,
# VOXDESK_WEB_PORT_8080_TCP[_PROTO|_PORT|_ADDR]).
_SERVICE_LINK_NAME = re.compile(r"_SERVICE_HOST$|_SERVICE_PORT(_\w+)?$|_PORT_\d+_(TCP|UDP|SCTP)(_\w+)?$")
_SERVICE_LINK_ADDRESS = re.compile(r"^(tcp|udp|sctp)://", re.IGNORECASE)


def _is_service_link(key: str, value: str) -> bool:
    if _SERVICE_LINK_NAME.search(key):
        return True
    return key.endswith("_PORT") and bool(_SERVICE_LINK_ADDRESS.match(value.strip()))


def _upper_case_name(key: str) -> str:
    """': set VOXDESK_X_Y (x.y)' for a name whose upper case voxdesk reads, else ''."""
    upper = key.upper()
    if setting := _env_setting(upper):
        return f": set {upper} ({'.'.join(setting)})"
    if upper in _ENV_NOT_SETTINGS:
        return f": set {upper}"
    return ""


def _known_keys(section: str) -> set[str]:
    cls = SECTIONS.get(section)
    return {f.name for f in dataclasses.fields(cls)} if cls is not None else set()


def _closest(word: str, known: typing.Iterable[str]) -> str | None:
    """The one of `known` a typo of it makes `word`, if any."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.75)
    return close[0] if close else None


def _closest_setting(key: str) -> str:
    """': did you mean VOXDESK_X_Y (x.y)?' for a name close to a setting's, else the pattern."""
    names = {
        f"{section}_{f.name}": f"{section}.{f.name}"
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }
    close = _closest(key[len(ENV_PREFIX) :].lower(), names)
    if close:
        return f": did you mean {ENV_PREFIX}{close.upper()} ({names[close]})?"
    return f": settings are {ENV_PREFIX}<SECTION>_<KEY> with a section of {', '.join(SECTIONS)}"


def _build_section(section: str, cls: type, values: dict[str, typing.Any], source: str) -> typing.Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, typing.Any] = {}
    for key, value in values.items():
        if key not in hints:
            known = [f.name for f in dataclasses.fields(cls)]
            close = _closest(key, known)
            guess = f"did you mean {close}? " if close else ""
            if owners := [f"[{name}]" for name in SECTIONS if key in _known_keys(name)]:
                # Written under the wrong header: the section that has it, not this one's keys.
                guess = f"{key} belongs under {' or '.join(owners)}; "
            raise ConfigError(
                f"unknown setting {section}.{key} in {source}: {guess}known keys are {', '.join(known)}"
            )
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value, source)
    return cls(**kwargs)


def _check_choices(section: str, values: typing.Any) -> None:
    for f in dataclasses.fields(values):
        allowed = CHOICES.get((section, f.name))
        value = getattr(values, f.name)
        if allowed and value not in allowed:
            raise ConfigError(f"{section}.{f.name} = {value!r}: choose one of {', '.join(allowed)}")


_LEADING_SETTING = re.compile(r"[a-z_]+\.[a-z_]+")


@contextlib.contextmanager
def _naming_origins(origins: dict[str, str]) -> typing.Iterator[None]:
    """A ConfigError whose message begins with a setting given in the file or the environment
    ends saying which of them set it."""
    try:
        yield
    except ConfigError as exc:
        message = str(exc)
        leading = _LEADING_SETTING.match(message)
        where = origins.get(leading.group()) if leading else None
        if where is None:
            raise
        raise ConfigError(f"{message}; {where}") from None


def _coerce(key: str, hint: typing.Any, value: typing.Any, source: str) -> typing.Any:
    origin = typing.get_origin(hint)
    from_env = isinstance(value, _EnvText)
    wanted = getattr(hint, "__name__", str(hint))
    if from_env and origin is not dict and in_quotes(str(value).strip()):
        # A storage.dir so is a folder in the working directory, not the one named; a number or a
        # switch so was "not an integer", the quotes left to be spotted in the value.
        raise ConfigError(
            f"{key}: {ENV_PREFIX}{key.replace('.', '_').upper()} = {_quoted(value)} is in quotes,"
            " which are kept as part of the value (docker's --env-file keeps them): remove them"
        )
    try:
        if hint is bool:
            if from_env:
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, bool):
                return value
            raise ValueError
        if hint is int:
            if from_env:
                return int(value.strip())
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise ValueError
        if hint is float:
            if from_env:
                return float(value.strip())
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            raise ValueError
        if hint is str:
            if from_env:
                # As numbers are: a CRLF file sourced by a shell leaves "\r" on every value, and no
                # setting's text ends in a space (a folder named "var\r" would be made).
                return str(value).strip()
            if isinstance(value, str):
                return str(value)
            raise ValueError
        if origin is list:
            (item,) = typing.get_args(hint)
            if from_env:
                parts = [p.strip() for p in value.split(",") if p.strip()]
                return [_coerce(key, item, _EnvText(p), source) for p in parts]
            if isinstance(value, list):
                return [_coerce(key, item, v, source) for v in value]
            raise ValueError
        if origin is dict:
            if from_env:
                raise ValueError
            if isinstance(value, dict):
                return value
            raise ValueError
        if isinstance(hint, types.UnionType):
            raise TypeError(f"unsupported setting type {hint}")
    except ValueError:
        if origin is list:
            wanted = "a list" + (" (comma-separated in the environment)" if from_env else "")
        elif origin is dict:
            wanted = "a table (set it in config.toml)"
        if from_env:
            given = f"{key}: {ENV_PREFIX}{key.replace('.', '_').upper()} = {_quoted(value)}"
        else:
            given = f"{key} = {_quoted(value)} in {source}"
        raise ConfigError(f"{given} is not {_article(wanted)}: fix it") from None
    raise TypeError(f"unsupported setting type {hint}")


def in_quotes(text: str) -> bool:
    """Whether `text` is wrapped in a pair of quotes, as docker's --env-file passes a value
    written NAME="value"."""
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""


def _article(wanted: str) -> str:
    if wanted.startswith("a "):
        return wanted
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}.get(
        wanted, wanted
    )


def _check_languages(offline: OfflineSettings) -> None:
    codes = offline.language_codes()
    if codes is None:
        return
    written = [c.strip().lower() for c in offline.languages.split(",") if c.strip()]
    unknown = [c for c in written if c not in WHISPER_LANGUAGES]
    if unknown or not written:
        raise ConfigError(
            f"offline.languages = {offline.languages!r}: use en, any, or Whisper language codes separated "
            f'by commas such as "en,es,fr,de"' + (f" ({', '.join(unknown)} is not one)" if unknown else "")
        )


def _check_required_secrets(settings: Settings) -> None:
    """Every missing secret and address in one error, so a deployment is fixed in one go."""
    s = settings.secrets
    missing: list[str] = []

    def need(value: str, var: str, why: str) -> None:
        if not value:
            missing.append(f"{var} is not set but {why}: set it in the environment or .env")

    def need_setting(value: str, key: str, why: str) -> None:
        if not value:
            missing.append(f"{key} is empty but {why}: set it")

    if settings.agent.engine == "openai":
        if settings.openai.provider == "azure":
            need(s.azure_openai_api_key, "AZURE_OPENAI_API_KEY", "openai.provider is azure")
            need_setting(settings.openai.azure_endpoint, "openai.azure_endpoint", "openai.provider is azure")
            need_setting(
                settings.openai.azure_deployment, "openai.azure_deployment", "openai.provider is azure"
            )
        else:
            need(s.openai_api_key, "OPENAI_API_KEY", "agent.engine is openai")
    if settings.tools.stats == "odbc":
        need(s.sql_connection_string, "VOXDESK_SQL_CONNECTION_STRING", "tools.stats is odbc")
    if settings.tools.manuals == "azure":
        if settings.search.auth == "key":
            need(s.azure_search_api_key, "AZURE_SEARCH_API_KEY", "tools.manuals is azure")
        need_setting(settings.search.endpoint, "search.endpoint", "tools.manuals is azure")
    if settings.tools.grievances == "jira":
        need(s.jira_email, "JIRA_EMAIL", "tools.grievances is jira")
        need(s.jira_api_token, "JIRA_API_TOKEN", "tools.grievances is jira")
        need_setting(settings.jira.url, "jira.url", "tools.grievances is jira")
        jira = urllib.parse.urlsplit(settings.jira.url.strip())
        # JIRA_EMAIL and JIRA_API_TOKEN go as Basic auth with every request: never in clear text
        # beyond this machine.
        if settings.jira.url and not (
            jira.hostname
            and (
                jira.scheme == "https"
                or (jira.scheme == "http" and jira.hostname in ("127.0.0.1", "localhost", "::1"))
            )
        ):
            missing.append(
                f"jira.url = {shown_url(settings.jira.url)!r} is not https: set your "
                "https://<site>.atlassian.net (plain http only for localhost)"
            )
        # Jira Cloud's API is at the site's root: a board's address pasted from the browser
        # (https://<site>.atlassian.net/jira/software/...) makes every call a 404.
        if (jira.hostname or "").endswith(".atlassian.net") and jira.path.strip("/"):
            missing.append(
                f"jira.url = {shown_url(settings.jira.url)!r} has a path: set it to"
                f" https://{jira.hostname} alone"
            )
    o = settings.openai
    if settings.agent.engine == "openai" and o.provider == "azure":
        # The portal's "Target URI" names a request, not the resource: the SDK appends
        # /openai/deployments/<deployment>/... to this, and every request is a 404.
        rest = "openai.azure_deployment and openai.api_version"
        missing += pasted_path(o.azure_endpoint, "openai.azure_endpoint", "openai", rest)
    if settings.tools.manuals == "azure":
        missing += pasted_path(settings.search.endpoint, "search.endpoint", "indexes", "search.index")
        # Refused by the service as a name, it is "not found" to every question and to `check`.
        if settings.search.index and not _SEARCH_INDEX_NAME.fullmatch(settings.search.index):
            missing.append(
                f"search.index = {settings.search.index!r} is no Azure AI Search index name: lowercase"
                " letters, digits and dashes, a letter or digit first, at most 128"
            )
    if missing:
        raise ConfigError("; ".join(missing))


_SEARCH_INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")


def pasted_path(url: str, key: str, segment: str, goes_in: str) -> list[str]:
    """[the complaint] when `url` holds a request's path (from the path segment `segment` on,
    such as "openai" or "indexes") or query, not only the service's address; [] otherwise. A
    gateway's own prefix before it (API Management's /my-openai) is kept."""
    parts = urllib.parse.urlsplit(url.strip())
    found = re.search(rf"/{segment}(?=[/(]|$)", parts.path, re.IGNORECASE)
    if found is None and "api-version" not in parts.query.lower():
        return []
    kept = parts.path[: found.start()] if found else parts.path
    host = parts.netloc.rpartition("@")[2]
    return [
        f"{key} = {shown_url(url)!r} holds a request's path or query: set it to"
        f" {parts.scheme}://{host}{kept.rstrip('/')} alone (the rest goes in {goes_in})"
    ]


def require_discord_token(settings: Settings, command: str = "run") -> str:
    """The bot token `command` (run, sync) logs in with, refused here when missing or plainly none."""
    if not settings.secrets.discord_token:
        raise ConfigError(
            f"DISCORD_TOKEN is not set but `{command}` needs it: set it in the environment or .env"
        )
    check_discord_token_shape(settings.secrets.discord_token)
    return settings.secrets.discord_token


_TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9_.-]+")
_FROM_THE_BOT_PAGE = "copy the token from the Bot page of the Discord developer portal (Reset Token)"


def check_discord_token_shape(token: str) -> None:
    """Refuse what is plainly not a bot token (never shown: it may be another secret), before
    Discord is asked. A bot token's parts have dots between them; the portal's other values
    beside it (the application id, the public key, the OAuth2 client secret) have no dot."""
    if token.lower().startswith("bot "):
        raise ConfigError('DISCORD_TOKEN begins with "Bot ": set the token alone (discord.py adds "Bot ")')
    if not _TOKEN_CHARACTERS.fullmatch(token):
        raise ConfigError(
            "DISCORD_TOKEN holds quotes, spaces or other characters no bot token has: set the token"
            " alone, unquoted (docker's --env-file keeps quotes as part of the value)"
        )
    if "." not in token:
        what = (
            "is a number, such as the application id"
            if token.isdigit()
            else "has no dot, like the client secret and the public key"
        )
        raise ConfigError(f"DISCORD_TOKEN {what}: it is not a bot token; {_FROM_THE_BOT_PAGE}")
