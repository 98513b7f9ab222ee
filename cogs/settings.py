"""/forget, /voice, /replies, /notify: each player's own settings, kept in the core's PreferenceStore."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import sentences as say
from bot.tools import clipped
from cogs.bot import VoxdeskBot
from cogs.interactions import answer_privately, caller, suggest
from cogs.replies import literal


class PlayerSettings(commands.Cog):
    def __init__(self, bot: VoxdeskBot) -> None:
        self.bot = bot

    @app_commands.command(name="forget", description="Forget our conversation so far")
    async def forget(self, interaction: discord.Interaction) -> None:
        async def work() -> str:
            asker = caller(interaction)
            removed = await self.bot.core.agent.forget(asker.user_id, asker.sent_at)
            if not removed:
                return say.NOTHING_TO_FORGET
            return say.FORGOTTEN

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="voice", description="Pick the voice I answer you in")
    @app_commands.describe(voice="One of the voices I can speak with")
    async def voice(self, interaction: discord.Interaction, voice: str) -> None:
        async def work() -> str:
            voices = self.bot.core.agent.voices()
            chosen = next((v for v in voices if v.lower() == voice.strip().lower()), None)
            if chosen is None:
                shown = ", ".join(voices[:20])
                # What was typed may be any of Discord's 6000 characters, markdown and mentions.
                return say.UNKNOWN_VOICE.format(voice=literal(clipped(voice.strip())), voices=shown)
            await self.bot.core.preferences.set_voice(caller(interaction).user_id, chosen)
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
        async def work() -> str:
            await self.bot.core.preferences.set_reply_mode(caller(interaction).user_id, style.value)
            return say.REPLY_STYLE_CHOSEN.format(style=say.REPLY_STYLES[style.value])

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="notify", description="Ticket news by direct message: on or off")
    @app_commands.describe(news="on: a DM when your tickets are filed or change status; off: none")
    @app_commands.choices(
        news=[app_commands.Choice(name="on", value="on"), app_commands.Choice(name="off", value="off")]
    )
    async def notify(self, interaction: discord.Interaction, news: app_commands.Choice[str]) -> None:
        async def work() -> str:
            on = news.value == "on"
            await self.bot.core.preferences.set_notify(caller(interaction).user_id, on)
            if on:
                return say.NEWS_ON
            return say.NEWS_OFF

        await answer_privately(interaction, work, self.bot.discord_settings.defer_after_seconds)


async def setup(bot: VoxdeskBot) -> None:
    await bot.add_cog(PlayerSettings(bot))
