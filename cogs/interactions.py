"""What the slash-command cogs share: who is asking, and answering privately without missing
Discord's three-second deadline."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
import discord

from bot import sentences as say
from bot.logs import Outage
from bot.tools.base import ToolContext
from cogs.replies import limited_for, split_message

log = logging.getLogger(__name__)


def caller(interaction: discord.Interaction) -> ToolContext:
    """Identity for the tools comes from Discord's interaction, never from command arguments.
    The interaction's id files a complaint once, however often its filing is tried. Private:
    every slash command answers with `answer_privately`, which only the caller sees."""
    user = interaction.user
    return ToolContext(
        user_id=str(user.id),
        display_name=user.display_name,
        platform="discord",
        request_id=str(interaction.id),
        request="slash command",
        private=True,
        sent_at=interaction.created_at.timestamp(),
    )


# Discord takes an interaction's first response up to 3 s after it made the interaction, and
# edits and follow-ups with its token for 15 minutes.
FIRST_RESPONSE_SECONDS = 3.0
TOKEN_SECONDS = 15 * 60.0
# A command still at work this long after Discord made it is given up, so that the player is told
# while the token still takes the edit that tells them.
GIVE_UP_SECONDS = TOKEN_SECONDS - 60.0
UNKNOWN_INTERACTION = 10062  # Discord's answer to a first response past its 3 s
# Another process of this bot (a deploy overlapping) answered first, or this one did: Discord took
# its first response but answered it with a 5xx, and discord.py sent it again.
ALREADY_ACKNOWLEDGED = 40060


# The interaction the task at hand answers, and time.monotonic() when it reached the bot: set as
# the command tree takes it, in the task that sends its first response (see `arrived`).
ARRIVED: contextvars.ContextVar[tuple[int, float] | None] = contextvars.ContextVar(
    "voxdesk_interaction_arrived", default=None
)


def arrived(interaction: discord.Interaction) -> None:
    """Note that `interaction` reached the bot now, for `first_response_left`."""
    ARRIVED.set((interaction.id, time.monotonic()))


def first_response_left(interaction_id: int) -> float:
    """The seconds left of the 3 s Discord takes an interaction's first response in (see `since_made`)."""
    return FIRST_RESPONSE_SECONDS - since_made(interaction_id)


def since_made(interaction_id: int) -> float:
    """The seconds since Discord made the interaction: from the time in its id by this host's
    clock (a clock behind Discord's counts no time gone, as `age` does), and at least those since
    it reached the bot, by time.monotonic(): a clock behind Discord's would otherwise count none
    however long a command has been in hand."""
    made = discord.utils.snowflake_time(interaction_id)
    seconds = max(0.0, (discord.utils.utcnow() - made).total_seconds())
    came = ARRIVED.get()
    if came is not None and came[0] == interaction_id:
        seconds = max(seconds, time.monotonic() - came[1])
    return seconds


def age(interaction: discord.Interaction) -> float:
    """Seconds since Discord made the interaction (the time in its id), by this host's clock;
    never below 0, so a clock behind Discord's cannot push a deadline later."""
    return max(0.0, (discord.utils.utcnow() - interaction.created_at).total_seconds())


def made_at(interaction: discord.Interaction) -> float:
    """The loop's time when Discord made the interaction, for its token's deadlines, taken as a
    command's answer starts: by this host's clock, but no more than FIRST_RESPONSE_SECONDS ago.
    The answer reaches the player only once Discord takes its first response, which it does within
    those seconds of making the interaction. A clock ahead of Discord's, which would have the token
    end early (15 minutes ahead, every command given up at once), is then out by those at most."""
    return asyncio.get_running_loop().time() - min(age(interaction), FIRST_RESPONSE_SECONDS)


def _name(interaction: discord.Interaction) -> str:
    command = interaction.command
    return command.qualified_name if command is not None else "?"


async def answer_privately(
    interaction: discord.Interaction,
    work: Callable[[], Awaitable[str]],
    slow_after: float,
    cut_short: str = say.COMMAND_CUT_SHORT,
    *,
    too_slow: str = say.STILL_BUSY,
    defer_first: bool = False,
    edit_later: bool = True,
) -> None:
    """Reply ephemerally with what `work()` produces. If it is not ready `slow_after` seconds
    after Discord made the interaction (the first response is due within 3 s of that, however
    late the event reached us), defer first ("thinking…"), then put the answer in the original
    response. `defer_first`: defer before the work starts, for work that writes, which should
    not happen when Discord no longer takes the interaction (the player saw "the application
    did not respond" and will try again). Work still running GIVE_UP_SECONDS after the
    interaction was made is cancelled and the player told `too_slow`, before the token expires.

    The whole answer is in flight for a graceful shutdown (the bot's `track`): a stop waits for
    it, and one whose grace runs out cancels the work and tells the player `cut_short`, before
    the gateway closes, rather than leaving them with "the application did not respond".

    A deferred answer Discord rate limits past `discord.rate_limit_seconds` is sent once the limit
    ends, if that is within the token's life: aside (the bot's `later`), so a stop does not wait
    for it. `edit_later` False: raised instead, for a caller that tells the player another way."""
    answering = _answer(interaction, work, slow_after, cut_short, too_slow, defer_first, edit_later)
    track = getattr(interaction.client, "track", None)
    # Awaited here, so a failure reaches the command tree's error handler, which logs it once.
    await (track(answering, awaited=True, command=True) if track else answering)


async def _answer(
    interaction: discord.Interaction,
    work: Callable[[], Awaitable[str]],
    slow_after: float,
    cut_short: str,
    too_slow: str,
    defer_first: bool,
    edit_later: bool,
) -> None:
    loop = asyncio.get_running_loop()
    since = age(interaction)
    made = made_at(interaction)
    give_up_at = made + GIVE_UP_SECONDS
    task: asyncio.Future[str] | None = None
    try:
        if not defer_first:
            task = asyncio.ensure_future(work())
            # Never later than `slow_after` from now, whatever the clocks say.
            await asyncio.wait({task}, timeout=min(slow_after, max(0.0, slow_after - since)))
        if task is not None and task.done():
            pieces = split_message(task.result())
            if not await _first_response(
                interaction, interaction.response.send_message(pieces[0], ephemeral=True)
            ):
                return
        else:
            if not await _first_response(
                interaction, interaction.response.defer(ephemeral=True, thinking=True)
            ):
                if task is not None:
                    await task  # started already: its writes (a preference) are finished, not cut
                return
            task = task or asyncio.ensure_future(work())
            done, _ = await asyncio.wait({task}, timeout=max(0.0, give_up_at - loop.time()))
            if not done:
                log.warning(
                    "/%s of user %s still at work %.0f s after it was made: given up before its token ends",
                    _name(interaction),
                    interaction.user.id,
                    loop.time() - made,
                )
                await _cancelled(task)
                await _say_cut_short(interaction, too_slow)
                return
            pieces = split_message(task.result())
            try:
                await interaction.edit_original_response(content=pieces[0])
            except discord.RateLimited as exc:
                if not edit_later or not _answer_later(interaction, pieces, exc.retry_after, made):
                    raise
                return
    except asyncio.CancelledError:
        if task is None:  # cut while deferring: nothing was started
            await _say_cut_short(interaction, say.COMMAND_CUT_SHORT)
        elif not task.done() or task.cancelled():  # the work itself was cut, not its reply
            await _cancelled(task)  # a filing cut short is rolled back and kept in the spool first
            await _say_cut_short(interaction, cut_short)
        raise
    for sent, piece in enumerate(pieces[1:], start=1):
        try:
            await interaction.followup.send(piece, ephemeral=True)
        except discord.RateLimited as exc:
            # The player has the answer's start: its rest goes when the limit ends, as a deferred
            # answer's whole does, rather than never.
            if not edit_later or not _answer_later(interaction, pieces, exc.retry_after, made, sent):
                raise
            return


def _answer_later(
    interaction: discord.Interaction, pieces: list[str], retry_after: float, made: float, sent: int = 0
) -> bool:
    """Send `pieces` from the `sent`th (the first in the deferred response, the others in
    follow-ups) once Discord's rate limit of `retry_after` seconds on them ends, if that is while
    its token still takes them (with GIVE_UP_SECONDS' minute to spare; `made`, as `made_at`);
    whether it will."""
    later = getattr(interaction.client, "later", None)
    if later is None or asyncio.get_running_loop().time() - made + retry_after > GIVE_UP_SECONDS:
        return False
    if later(_edit_when_free(interaction, pieces, retry_after, made, sent)) is None:
        return False  # the bot is closing: given up as any answer limited past the cap
    log.warning(
        "/%s of user %s: answer rate limited for %.0f s; sent when the limit ends",
        _name(interaction),
        interaction.user.id,
        retry_after,
    )
    return True


async def _edit_when_free(
    interaction: discord.Interaction, pieces: list[str], retry_after: float, made: float, sent: int = 0
) -> None:
    """`sent`: pieces out already: the first in the original response, the others in follow-ups;
    `made`, as `made_at`."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(retry_after)
        try:
            # discord.py waits out each 429 up to the cap, five times a request, and a 5xx too:
            # the pieces left must not go on past the token's end, where each is refused.
            async with asyncio.timeout_at(made + TOKEN_SECONDS):
                for piece in pieces[sent:]:
                    if sent == 0:
                        await interaction.edit_original_response(content=piece)
                    else:
                        await interaction.followup.send(piece, ephemeral=True)
                    sent += 1
            return
        except discord.RateLimited as exc:
            if loop.time() - made + exc.retry_after <= GIVE_UP_SECONDS:
                retry_after = exc.retry_after
                continue
            why = limited_for(exc)
        except TimeoutError:
            why = f"its token ran out with {len(pieces) - sent} of {len(pieces)} piece(s) unsent"
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            why = str(exc)
        log.warning(
            "/%s of user %s: answer not sent after its rate limit: %s",
            _name(interaction),
            interaction.user.id,
            why,
        )
        return


async def _cancelled(task: asyncio.Future[str]) -> None:
    """Cancel `task` and wait for it to end (a filing rolls back and spools first). Its own
    CancelledError is no news; a cancel of the caller meanwhile (a stop out of grace) is raised,
    or the caller would go on as if never stopped."""
    me = asyncio.current_task()
    before = me.cancelling() if me is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if me is not None and me.cancelling() > before:
            raise


class AutocompleteNotAnError(logging.Filter):
    """discord.py sends an autocomplete's suggestions itself and logs their refusal with its
    traceback: refused as answered (40060), another process of this bot sent theirs, which is
    no error; refused as too late (10062), the event reached the bot past Discord's 3 s and the
    player has typed on, rate limited for longer than rate_limit_seconds, and not sent for a
    connection to Discord lost: Discord's trouble, said in one line. On discord.py's app-command
    logger."""

    def __init__(self) -> None:
        super().__init__()
        self.started()

    def started(self) -> None:
        """A bot starting: its first late suggestions are news."""
        # Under load every keystroke's suggestions may come late: one warning, then INFO until
        # suggestions are taken again.
        self.late = Outage(log, "autocomplete suggestions are taken again", quiet=logging.INFO)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        exc = getattr(exc, "original", exc)  # wrapped in a CommandInvokeError or not
        if isinstance(exc, discord.HTTPException) and exc.code == ALREADY_ACKNOWLEDGED:
            log.info("an autocomplete was answered by another process of this bot")
            return False
        if isinstance(exc, discord.HTTPException) and exc.code == UNKNOWN_INTERACTION:
            self.late.failed("10062", "an autocomplete was not answered: Discord no longer takes it (10062)")
            return False
        if isinstance(exc, discord.RateLimited):
            log.warning("an autocomplete was not answered: %s", limited_for(exc))
            return False
        if isinstance(exc, aiohttp.ClientError):
            # The connection to Discord dropped: each keystroke meanwhile would be a traceback.
            why = f"{type(exc).__name__}: {exc}"
            self.late.failed(type(exc).__name__, "an autocomplete was not answered: %s", why)
            return False
        return True


AUTOCOMPLETE_NOT_AN_ERROR = AutocompleteNotAnError()


async def suggest(
    interaction: discord.Interaction, choices: list[discord.app_commands.Choice[str]]
) -> list[discord.app_commands.Choice[str]]:
    """Send an autocomplete's suggestions (discord.py sends none once they are sent): taken, a run
    of late ones is over."""
    await interaction.response.autocomplete(choices)
    AUTOCOMPLETE_NOT_AN_ERROR.late.answered()
    return choices


async def _first_response(interaction: discord.Interaction, response: Awaitable[object]) -> bool:
    """Whether Discord took the interaction's first response. Refused as too late (10062), the
    player has seen "the application did not respond" and nothing can reach them through this
    interaction any more: logged, not raised, so the error handler does not try again. Refused
    as answered (40060): two bot processes got it (a deploy overlapping the old process), and
    the other one answers the player; this one leaves it, its work not started if deferred first.
    With no other bot process on this storage, the response taken was this one's own, sent again
    by discord.py after a 5xx: taken, and the work goes on (or the player would wait on
    "thinking…" for an answer never sent)."""
    try:
        await response
    except discord.RateLimited as exc:
        # Longer than Discord's 3 s for a first response leave (or than rate_limit_seconds): as
        # refused for being late, the player sees "the application did not respond" and asks again.
        log.warning(
            "/%s of user %s: interaction %s not answered, %s",
            _name(interaction),
            interaction.user.id,
            interaction.id,
            limited_for(exc),
        )
        return False
    except discord.HTTPException as exc:
        if exc.code == ALREADY_ACKNOWLEDGED:
            if _other_bot_process(interaction):
                log.info(
                    "/%s of user %s: interaction %s answered by another process of this bot",
                    _name(interaction),
                    interaction.user.id,
                    interaction.id,
                )
                return False
            log.warning(
                "/%s of user %s: interaction %s already acknowledged, and no other bot process runs"
                " on this storage: taken as this one's own response, sent again after an error",
                _name(interaction),
                interaction.user.id,
                interaction.id,
            )
            return True
        if exc.code != UNKNOWN_INTERACTION:
            raise
        log.warning(
            "/%s of user %s: Discord no longer takes interaction %s (10062), %.1f s after it made it",
            _name(interaction),
            interaction.user.id,
            interaction.id,
            since_made(interaction.id),
        )
        return False
    return True


def _other_bot_process(interaction: discord.Interaction) -> bool:
    app = getattr(interaction.client, "app", None)
    notes = getattr(app, "notes", None)
    return notes is None or bool(notes.discord_elsewhere())


async def _say_cut_short(interaction: discord.Interaction, text: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except (discord.HTTPException, aiohttp.ClientError, discord.RateLimited) as exc:
        log.warning("could not tell interaction %s it was cut short: %s", interaction.id, exc)
