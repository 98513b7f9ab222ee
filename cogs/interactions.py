"""What the slash-command cogs share: who is asking, and answering privately without missing
Discord's three-second deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

import aiohttp
import discord

from bot import sentences as say
from bot.tools.base import ToolContext
from cogs.replies import split_message

log = logging.getLogger(__name__)


def caller(interaction: discord.Interaction) -> ToolContext:
    """Identity for the tools comes from Discord's interaction, never from command arguments.
    The interaction's id files a complaint once, however often its filing is tried."""
    user = interaction.user
    return ToolContext(
        user_id=str(user.id),
        display_name=user.display_name,
        platform="discord",
        request_id=str(interaction.id),
    )


async def answer_privately(
    interaction: discord.Interaction,
    work: Awaitable[str],
    slow_after: float,
    cut_short: str = say.COMMAND_CUT_SHORT,
) -> None:
    """Reply ephemerally with what `work` produces. If it is not ready within `slow_after`
    seconds, defer first ("thinking…"), then put the answer in the original response.

    The whole answer is in flight for a graceful shutdown (the bot's `track`): a stop waits for
    it, and one whose grace runs out cancels the work and tells the player so, before the
    gateway closes, rather than leaving them with "the application did not respond"."""
    answering = _answer(interaction, work, slow_after, cut_short)
    track = getattr(interaction.client, "track", None)
    # Awaited here, so a failure reaches the command tree's error handler, which logs it once.
    await (track(answering, awaited=True) if track else answering)


async def _answer(
    interaction: discord.Interaction, work: Awaitable[str], slow_after: float, cut_short: str
) -> None:
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=slow_after)
        if done:
            pieces = split_message(task.result())
            await interaction.response.send_message(pieces[0], ephemeral=True)
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)
            pieces = split_message(await task)
            await interaction.edit_original_response(content=pieces[0])
    except asyncio.CancelledError:
        if not task.done() or task.cancelled():  # the work itself was cut, not its reply
            task.cancel()  # a filing cut short is rolled back and kept in the spool first
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _say_cut_short(interaction, cut_short)
        raise
    for piece in pieces[1:]:
        await interaction.followup.send(piece, ephemeral=True)


async def _say_cut_short(interaction: discord.Interaction, text: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except (discord.HTTPException, aiohttp.ClientError) as exc:
        log.warning("could not tell interaction %s it was cut short: %s", interaction.id, exc)
