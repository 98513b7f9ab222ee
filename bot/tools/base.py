"""What every tool is made of, and the backends the tools stand on.

Identity rule: a handler learns who is asking from `ToolContext`, which the platform adapter
fills in. No tool schema has a user, player or owner field, so the model cannot choose whose
data it reads.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# A player's tickets listed without a key: the newest this many. Spoken (the voice tool), a longer
# list is not heard to its end; the slash commands ask for more.
MAX_LISTED = 10

JSON = dict[str, Any]


# The one key of the arguments an engine could not read as JSON, which keep the text it got.
UNPARSED = "_unparsed"

# No tool's arguments nest (each is an object of strings): a model's made-up arguments nested
# hundreds deep would exhaust Python's recursion in the toolbox's checks, failing the turn.
MAX_NESTING = 20


def too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether lists and objects in `value` nest more than `limit` deep (looked at without
    recursion, so any depth is safe to ask about)."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            v
            for item in level
            if isinstance(item, dict | list)
            for v in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return True


@dataclass(frozen=True)
class ToolContext:
    user_id: str  # the platform's id for the speaker (a Discord snowflake, as text)
    display_name: str = ""
    platform: str = "discord"
    # Where they are talking (a Discord channel id): each place has its own conversation history.
    conversation: str = ""
    # What the player sent (a Discord message id): a turn run again for the same note, after a
    # crash, files no grievance twice.
    request_id: str = ""
    # What `request_id` names in a log line: a voice note, or a front end's other request (a
    # slash command), so that a grep of the log tells them apart.
    request: str = "note"
    # Categories of the grievances filed so far in this turn, in order: the second complaint of a
    # category in one note is a ticket of its own, and the same again when the note is re-run.
    filed: list[str] = field(default_factory=list, compare=False, repr=False)
    # Each complaint of this run of the turn, by its place (filed[n]): its words, and the filing
    # id chosen for it once chosen (bot/tools/__init__.py, filing_for). Cleared with `filed`.
    complaints: dict[int, str] = field(default_factory=dict, compare=False, repr=False)
    filings: dict[int, str] = field(default_factory=dict, compare=False, repr=False)
    # What each complaint of this run filed (an asyncio.Future of the tool's answer), by its
    # category and words: a model calling the tool again with the same words, side by side or in
    # a later round, is told that ticket rather than filing a second. Cleared with `filed`.
    filed_words: dict[tuple[str, str], Any] = field(default_factory=dict, compare=False, repr=False)
    # Someone speaking as a player many people share (the web playground's demo players): stats
    # are the player's, but grievances are filed and read, and the conversation kept, as this id
    # of the speaker's own, so nobody reads what another filed as the same player, and what they
    # said is not the player's (`player export`, /forget); being no Discord id, it keeps their
    # grievances out of Jira too.
    grievance_owner: str = ""
    # ... and whether the shared player's own tickets are listed to that speaker too: only the demo
    # players' (demo data). What was filed under a Discord id came from whoever holds that account.
    shared_tickets: bool = False
    # Whose daily budget the turn spends, when not the player's: as a shared player, the speaker's
    # own (a playground visitor's), so one speaker cannot spend it for everyone speaking as them.
    budget_owner: str = ""
    # A request answered once, never again after a restart (a slash command; a voice note is, by
    # the note ledger): a grievance it files is one whose key its player has not heard until the
    # front end says the answer is out (TicketNews.heard_in_answer), so a process that ends
    # before that leaves the key to ticket news.
    answered_once: bool = False
    # Whether the answer reaches the speaker alone (a DM, an ephemeral slash-command answer, the
    # web playground's session, the CLI): only then may it carry what a ticket says, which may
    # have been filed in a DM (a harassment report, payment details). False wherever others read
    # or hear the answer (a guild channel or thread) and wherever a front end does not say, so a
    # context built without it never leaks.
    private: bool = False
    # When the player sent the request, in seconds since the epoch by the platform's clock (a
    # Discord note's or command's snowflake time); 0 where a front end does not say. A /forget
    # sent after it forgets its turn too, even one that waited for a turn slot past the reset.
    sent_at: float = 0.0
    # Asked before each complaint is filed, by a front end that holds complaints to a limit of its
    # own (the playground's anonymous visitors): None when it may be filed (and it is counted),
    # else the sentence saying why it is not.
    may_file: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)
    # The places (filed[n]) `may_file` let through, kept by `refile`: the fallback filing the
    # same complaint finds that ticket again, and is neither counted for it again nor refused it.
    allowed_places: set[int] = field(default_factory=set, compare=False, repr=False)

    def refile(self) -> None:
        """Count this turn's complaints afresh (another engine runs the turn again)."""
        self.filed.clear()
        self.complaints.clear()
        self.filings.clear()
        self.filed_words.clear()

    @property
    def speaker(self) -> str:
        """Whose turns run one at a time, in order: the player's, or as a shared player the
        speaker's own (each has a conversation of its own, so nothing is shared to keep in order)."""
        return self.grievance_owner or self.user_id

    @property
    def spender(self) -> str:
        """Whose daily budget the turn spends."""
        return self.budget_owner or self.user_id

    @property
    def who(self) -> str:
        """The request and its player for a log line, worded as the Discord cog's lines word a
        note ("note 123 from 456"), so that grepping a note's id finds every line about it."""
        return (
            f"{self.request} {self.request_id} from {self.user_id}"
            if self.request_id
            else f"user {self.user_id}"
        )


@dataclass(frozen=True)
class Filing:
    """Which complaint of which turn a grievance is, for a backend to file it once: the filing id
    `choose` picks from what earlier runs of the turn filed (filing id, category, description of
    each grievance of the player under a filing id starting with `turn`, "platform:request:").
    `chosen` gives the filing ids the other complaints of this run have chosen so far: none of
    them is this complaint's, should it be kept before it chooses."""

    turn: str
    choose: Callable[[list[tuple[str, str, str]]], str]
    chosen: Callable[[], list[str]] = field(default=lambda: [])


class ToolError(Exception):
    """A failure the player may hear about, e.g. "the manuals are unavailable right now"."""


class AioodbcUnlike(RuntimeError):
    """The installed aioodbc lacks a part, none of them public, that bot.tools.odbc_stats relies
    on. Here, not there, so that the command line names it without importing aioodbc and pyodbc."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: JSON  # JSON schema of the model-supplied arguments
    handler: Callable[[ToolContext, JSON], Awaitable[JSON]]

    def spec(self) -> JSON:
        """The Chat Completions `tools` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: JSON

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class ToolResult:
    call: ToolCall
    result: JSON
    ok: bool = True
    elapsed_ms: float = 0.0

    def as_dict(self) -> JSON:
        return {
            "id": self.call.id,
            "name": self.call.name,
            "arguments": self.call.arguments,
            "result": self.result,
            "ok": self.ok,
        }


# ---- backends ---------------------------------------------------------------------------


@dataclass
class GameSummary:
    game_type: str
    games_played: int
    points_earned: int
    cash_won: float


@dataclass
class PlayerSummary:
    player_name: str
    total_points: int
    # 1 is best, by total points among all players; None when every player's total could not be read
    rank: int | None
    players_ranked: int | None
    games: list[GameSummary] = field(default_factory=list)
    achievements: list[str] = field(default_factory=list)  # the newest, at most MAX_ACHIEVEMENTS
    achievement_count: int = 0  # all of them


@dataclass
class Passage:
    title: str
    text: str
    source: str  # manual file or document key
    score: float = 0.0
    excerpt: str = ""  # the part that matched (a semantic caption or highlights), when the backend has it


# A Jira issue done without a fix, as a grievance's status keeps it (jira_tracker.status_words):
# its status or resolution one that turns the grievance down (Won't Do, Declined, Cannot
# Reproduce), or a duplicate. Jira's done category reads "resolved" only for the rest.
# bot/sentences.py's STATUS_WORDS says them to players.
DECLINED = "declined"
DUPLICATE = "duplicate"


@dataclass
class Grievance:
    key: str  # what the player is told: GRV-12 locally, the Jira key once pushed
    category: str
    description: str
    status: str  # plain words: "open", "in progress", "resolved", "closed", DECLINED, DUPLICATE
    created_at: str  # ISO 8601, UTC
    updated_at: str
    local_key: str = ""
    remote_key: str | None = None
    from_local_record: bool = False  # True when the remote tracker could not be reached
    # True when the remote tracker no longer has it (deleted, or moved out of its project): the
    # status is the local record's, and support staff work it there
    untracked: bool = False
    # True when the remote tracker has it but hides it from the bot's account (an issue security
    # level): filed, and staff see it, but its status is the local record's
    hidden: bool = False


class StatsBackend(Protocol):
    async def player_summary(self, user_id: str) -> PlayerSummary | None: ...
    async def check(self) -> str: ...
    async def aclose(self) -> None: ...


class ManualsBackend(Protocol):
    async def search(self, query: str, top: int) -> list[Passage]: ...
    async def check(self) -> str: ...
    async def aclose(self) -> None: ...


class GrievanceBackend(Protocol):
    async def register(
        self,
        user_id: str,
        category: str,
        description: str,
        filing_id: str | Filing | None = None,
        untold: bool = False,
    ) -> Grievance: ...
    async def status(self, user_id: str, key: str | None = None, limit: int = MAX_LISTED) -> list[Grievance]:
        """The player's ticket that `key` names, or without one their `limit` newest."""
        ...

    async def check(self) -> str: ...
    async def aclose(self) -> None: ...
