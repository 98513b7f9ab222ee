"""/forget, /voice, /replies, /notify: each player's own settings, kept in the core's PreferenceStore."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable

import discord
from discord import app_commands
from discord.ext import commands

from bot import sentences as say
from bot.logs import Outage
from bot.tools import clipped
from cogs.bot import VoxdeskBot
from cogs.interactions import answer_privately, caller, suggest
from cogs.limits import InAnyWindow, Limits
from cogs.replies import literal

log = logging.getLogger(__name__)

# Per player, shared by /voice, /replies and /notify: each call writes a row, and a person trying
# the voices one by one picks a few a minute. /forget also empties the conversations' write-ahead
# log (a checkpoint of the whole file) each time: a person asks it once, not every few seconds.
CHANGES, CHANGE_SECONDS = 10, 60.0
FORGETS, FORGET_SECONDS = 3, 60.0


class PlayerSettings(commands.Cog):
    def __init__(self, bot: VoxdeskBot) -> None:
        self.bot = bot
        # Timed by time.monotonic(): a host clock set back would hold a player as long.
        self.changes = Limits(InAnyWindow(CHANGES, CHANGE_SECONDS), lambda interaction: interaction.user.id)
        self.forgets = Limits(InAnyWindow(FORGETS, FORGET_SECONDS), lambda interaction: interaction.user.id)
        # A full or read-only disk refuses every player's write alike: said once, naming the
        # file, not once (with a traceback) a command.
        self._unsaved = Outage(log, "preferences.db is written again", level=logging.ERROR)

    def _too_soon(self, interaction: discord.Interaction, limits: Limits, too_fast: str) -> str | None:
        retry_after = limits.update_rate_limit(interaction, time.monotonic())
        if not retry_after:
            return None
        command = interaction.command.qualified_name if interaction.command else "?"
        log.info("flood: /%s from %s refused", command, interaction.user.id)
        return too_fast.format(wait=say.wait_of(retry_after))

    async def _saved(self, interaction: discord.Interaction, write: Awaitable[None]) -> bool:
        """Whether a player's setting was written: preferences.db refusing it is said once, and
        its player told it is not saved; any other failure reaches the command tree's handler,
        with its traceback."""
        try:
            await write
        except sqlite3.Error as exc:
            # Full, read-only, another user's file: the error names it. Said once, then quietly
            # until a write goes through.
            command = interaction.command.qualified_name if interaction.command else "?"
            self._unsaved.failed(str(exc), "/%s of user %s not saved: %s", command, interaction.user.id, exc)
            return False
        self._unsaved.answered()
        return True

    @app_commands.command(name="forget", description="Forget our conversation so far")
    async def forget(self, interaction: discord.Interaction) -> None:
        refused = self._too_soon(interaction, self.forgets, say.FORGET_TOO_FAST)

        async def work() -> str:
            if refused:
                return refused
            asker = caller(interaction)
            try:
                removed = await self.bot.core.agent.forget(asker.user_id, asker.sent_at)
            except sqlite3.Error:
                # Logged by the agent, with the turns' saves that conversations.db refuses alike.
                return say.NOT_FORGOTTEN
            if not removed:
                return say.NOTHING_TO_FORGET
            return say.FORGOTTEN

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="voice", description="Pick the voice I answer you in")
    @app_commands.describe(voice="One of the voices I can speak with")
    async def voice(self, interaction: discord.Interaction, voice: str) -> None:
        refused = self._too_soon(interaction, self.changes, say.SETTINGS_TOO_FAST)

        async def work() -> str:
            if refused:
                return refused
            voices = self.bot.core.agent.voices()
            chosen = next((v for v in voices if v.lower() == voice.strip().lower()), None)
            if chosen is None:
                shown = ", ".join(voices[:20])
                # What was typed may be any of Discord's 6000 characters, markdown and mentions.
                return say.UNKNOWN_VOICE.format(voice=literal(clipped(voice.strip())), voices=shown)
            if not await self._saved(
                interaction, self.bot.core.preferences.set_voice(caller(interaction).user_id, chosen)
            ):
                return say.SETTING_NOT_SAVED
            return say.VOICE_CHOSEN.format(voice=chosen)

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)

    @voice.autocomplete("voice")
    async def voice_names(
        self, interaction: discord.Interaction, typed: str
    ) -> list[app_commands.Choice[str]]:
        typed = typed.strip().lower()
        voices = [v for v in self.bot.core.agent.voices() if typed in v.lower()]
        # Discord shows at most 25
        return await suggest(interaction, [app_commands.Choice(name=v, value=v) for v in voices[:25]])

    @app_commands.command(name="replies", description="How I answer your voice notes")
    @app_commands.describe(style="Voice message and transcript, voice only, an audio file, or text only")
    @app_commands.choices(
        style=[
            app_commands.Choice(name="Voice message and transcript", value="voice_and_text"),
            app_commands.Choice(name="Voice message only", value="voice"),
            app_commands.Choice(name="Audio file with the transcript", value="file"),
            app_commands.Choice(name="Text only", value="text"),
        ]
    )
    async def replies(self, interaction: discord.Interaction, style: app_commands.Choice[str]) -> None:
        refused = self._too_soon(interaction, self.changes, say.SETTINGS_TOO_FAST)

        async def work() -> str:
            if refused:
                return refused
            chosen = self.bot.core.preferences.set_reply_mode(caller(interaction).user_id, style.value)
            if not await self._saved(interaction, chosen):
                return say.SETTING_NOT_SAVED
            return say.REPLY_STYLE_CHOSEN.format(style=say.REPLY_STYLES[style.value])

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="notify", description="Ticket news by direct message: on or off")
    @app_commands.describe(news="on: a DM when your tickets are filed or change status; off: none")
    @app_commands.choices(
        news=[app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")]
    )
    async def notify(self, interaction: discord.Interaction, news: app_commands.Choice[str]) -> None:
        refused = self._too_soon(interaction, self.changes, say.SETTINGS_TOO_FAST)

        async def work() -> str:
            if refused:
                return refused
            on = news.value == "on"
            if not await self._saved(
                interaction, self.bot.core.preferences.set_notify(caller(interaction).user_id, on)
            ):
                return say.SETTING_NOT_SAVED
            if on:
                return say.NEWS_ON
            return say.NEWS_OFF

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)


async def setup(bot: VoxdeskBot) -> None:
    await bot.add_cog(PlayerSettings(bot))
