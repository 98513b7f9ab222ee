"""What the slash-command cogs share: who is asking, and answering privately without missing
Discord's three-second deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import discord

from bot.tools.base import ToolContext
from cogs.replies import split_message


def caller(interaction: discord.Interaction) -> ToolContext:
    """Identity for the tools comes from Discord's interaction, never from command arguments."""
    user = interaction.user
    return ToolContext(user_id=str(user.id), display_name=user.display_name, platform="discord")


async def answer_privately(interaction: discord.Interaction, work: Awaitable[str], slow_after: float) -> None:
    """Reply ephemerally with what `work` produces. If it is not ready within `slow_after`
    seconds, defer first ("thinking…"), then put the answer in the original response."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=slow_after)
    if done:
        pieces = split_message(task.result())
        await interaction.response.send_message(pieces[0], ephemeral=True)
    else:
        await interaction.response.defer(ephemeral=True, thinking=True)
        pieces = split_message(await task)
        await interaction.edit_original_response(content=pieces[0])
    for piece in pieces[1:]:
        await interaction.followup.send(piece, ephemeral=True)
