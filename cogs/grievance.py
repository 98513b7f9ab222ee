"""/grievance status | list | file: the same tools the agent uses, typed instead of spoken."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import sentences as say
from bot.tools import CATEGORIES, TICKET_KEY, clipped
from bot.tools.base import ToolCall
from cogs.bot import VoxdeskBot
from cogs.interactions import answer_privately, caller

log = logging.getLogger(__name__)
_call_ids = itertools.count(1)


def describe_tickets(result: dict[str, Any]) -> str:
    if "error" in result:
        return say.LOOKUP_FAILED.format(reason=result["error"])
    tickets = result.get("tickets") or []
    if not tickets:
        return result.get("message") or say.NO_TICKETS_YET
    lines = [say.TICKETS_HEADING.format(count=len(tickets)) if len(tickets) > 1 else say.TICKET_HEADING]
    for t in tickets:
        updated = str(t.get("last_update", ""))[:16].replace("T", " ")
        line = say.TICKET_ROW.format(
            ticket_key=t["ticket_key"],
            category=t["category"].replace("_", " "),
            status=t["status"],
            updated=updated,
        )
        if t.get("summary"):
            line += f"\n> {t['summary']}"
        if t.get("note"):
            line += f"\n_{t['note']}_"
        lines.append(line)
    return "\n".join(lines)


class Grievances(commands.GroupCog, group_name="grievance", group_description="Your support tickets"):
    def __init__(self, bot: VoxdeskBot) -> None:
        self.bot = bot
        s = bot.discord_settings
        # Each /grievance file opens a new ticket (in Jira too, when it is on): held to the same
        # per-player limit as voice notes, so a script cannot bury the desk.
        self.filings = commands.CooldownMapping(
            commands.Cooldown(s.flood_notes, s.flood_seconds), lambda interaction: interaction.user.id
        )

    async def _run(
        self, interaction: discord.Interaction, tool: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        call = ToolCall(id=f"slash_{next(_call_ids)}", name=tool, arguments=arguments)
        result = await self.bot.core.toolbox.run(caller(interaction), call)
        return result.result

    @app_commands.command(name="status", description="The status of your tickets, or of one of them")
    @app_commands.describe(ticket="A ticket key like GRV-12; leave it out for all your tickets")
    async def status(self, interaction: discord.Interaction, ticket: str | None = None) -> None:
        typed = (ticket or "").strip()

        async def work() -> str:
            # Checked here: the tool's own refusal of a long one names the tool, for the model.
            if typed and not TICKET_KEY.match(typed.upper()):
                return say.NOT_A_TICKET_KEY.format(key=clipped(typed))
            arguments = {"ticket_key": typed} if typed else {}
            return describe_tickets(await self._run(interaction, "get_grievance_status", arguments))

        await answer_privately(interaction, work(), self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="list", description="All your tickets")
    async def list_(self, interaction: discord.Interaction) -> None:
        async def work() -> str:
            return describe_tickets(await self._run(interaction, "get_grievance_status", {}))

        await answer_privately(interaction, work(), self.bot.discord_settings.defer_after_seconds)

    @app_commands.command(name="file", description="Open a support ticket")
    @app_commands.describe(category="What it is about", description="What went wrong, in your own words")
    @app_commands.choices(
        category=[app_commands.Choice(name=c.replace("_", " "), value=c) for c in CATEGORIES]
    )
    async def file(
        self,
        interaction: discord.Interaction,
        category: app_commands.Choice[str],
        description: app_commands.Range[str, 5, 1000],
    ) -> None:
        retry_after = self.filings.update_rate_limit(interaction)  # type: ignore[arg-type]

        async def work() -> str:
            if retry_after:
                log.info("flood: /grievance file from %s refused", interaction.user.id)
                return say.FILING_TOO_FAST.format(seconds=retry_after)
            result = await self._run(
                interaction, "register_grievance", {"category": category.value, "description": description}
            )
            if "error" in result:
                if result["error"] == say.KEPT_FOR_LATER:  # not filed, but not lost either
                    return say.KEPT_FOR_LATER
                return say.FILING_FAILED.format(reason=result["error"])
            return say.SLASH_FILED.format(
                ticket_key=result["ticket_key"], category=category.name, status=result["status"]
            )

        await answer_privately(
            interaction, work(), self.bot.discord_settings.defer_after_seconds, say.CUT_SHORT_BY_RESTART
        )


async def setup(bot: VoxdeskBot) -> None:
    await bot.add_cog(Grievances(bot))
