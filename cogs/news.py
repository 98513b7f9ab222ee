"""Ticket news on Discord: the loop that finds and delivers it (bot/ticket_news.py), the DM in the
player's reply style, the closed-DMs notice, and where each player last sent a voice note."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
from discord.ext import commands
from discord.http import Route

from bot.audio import ReplyAudio
from bot.ticket_news import Delivery, Outcome, TicketNews
from cogs.bot import VoxdeskBot
from cogs.replies import (
    TOO_LARGE,
    VOICE_FILENAME,
    VOICE_MESSAGE_FLAG,
    VOICE_REFUSED_CODES,
    discords_trouble,
    limited_for,
    split_message,
    upload_limit,
)
from cogs.voice import carried_attachments, is_audio_attachment

log = logging.getLogger(__name__)

DMS_CLOSED = 50007  # Discord: "Cannot send messages to this user"
UNKNOWN_MEMBER, UNKNOWN_USER = 10007, 10013
FILE_FILENAME = "ticket-news.ogg"
NO_PINGS = {"parse": []}


class TicketNewsDesk(commands.Cog):
    """Runs ticket news while the bot runs, and is its `Messenger` (bot/ticket_news.py)."""

    def __init__(self, bot: VoxdeskBot) -> None:
        self.bot = bot
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._in_round = False

    @property
    def news(self) -> TicketNews:
        return self.bot.core.news

    async def cog_load(self) -> None:
        app = self.bot.app
        if app is None or not app.settings.news.enabled:  # `sync` builds no App
            return
        self._task = asyncio.create_task(self._loop(app.settings.news.poll_seconds), name="ticket-news")

    async def cog_unload(self) -> None:
        # Bot.close() unloads every extension, while its HTTP session is still open: a round in
        # progress may finish recording what it sent. Cut off after the grace period, a DM in
        # flight stays marked as being sent and is never sent again (at most once).
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        if not self._in_round:  # waiting for "ready" or for the next round: nothing to finish
            task.cancel()
        # asyncio.wait, not wait_for: a CancelledError from wait_for may be the loop's own or this
        # unload's, and an unload cancelled (a shutdown out of grace) must not carry on as if not.
        try:
            done, _ = await asyncio.wait({task}, timeout=self.bot.discord_settings.shutdown_grace_seconds)
        finally:
            task.cancel()  # no-op once it has ended; otherwise the grace is over, or this unload cancelled
        if not done:
            log.warning("ticket news round cut short by shutdown")
            await asyncio.wait({task})
        if not task.cancelled():
            task.result()

    async def _loop(self, interval: float) -> None:
        await self.bot.wait_until_ready()
        while not self._stop.is_set():
            self._in_round = True
            try:
                await self.news.run_once(self)
            except Exception:  # never dies: what was not sent stays pending in news.db
                log.exception("ticket news round failed")
            finally:
                self._in_round = False
            with contextlib.suppress(TimeoutError):  # not wait_for, which can swallow a cancel
                async with asyncio.timeout(interval):
                    await self._stop.wait()

    # ---- where each player last sent a voice note ------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None or self.bot.app is None:
            return  # a DM channel is no use for telling someone their DMs are closed
        audio = any(a.is_voice_message() or is_audio_attachment(a) for a in carried_attachments(message))
        if audio and self._answered_in(message):
            await self.news.record_channel(str(message.author.id), str(message.channel.id))

    def _answered_in(self, message: discord.Message) -> bool:
        """A channel the bot answers notes in (configured, or where it was mentioned): the bot
        posts nowhere a player has not talked to it."""
        settings = self.bot.discord_settings
        parent = getattr(message.channel, "parent_id", None)
        if message.channel.id in settings.channels or (parent is not None and parent in settings.channels):
            return True
        me = self.bot.user
        return settings.answer_mentions and me is not None and me in message.mentions

    # ---- Messenger -------------------------------------------------------------------------

    async def direct(self, delivery: Delivery) -> Outcome:
        went_out = False
        try:
            # Only the DM channel is opened: a User would need GET /users/{id} (no members intent).
            channel = await self.bot.create_dm(discord.Object(id=int(delivery.user_id)))
            async for _ in self._post(channel.id, delivery):
                went_out = True
        except discord.HTTPException as exc:
            if went_out:  # the voice message went, its transcript did not: they have the news
                log.warning(
                    "ticket news to %s only partly sent: %s %s", delivery.user_id, exc.status, exc.code
                )
                return Outcome.SENT
            if exc.code == DMS_CLOSED:
                return Outcome.DMS_CLOSED
            if discords_trouble(exc):
                # A message Discord made all the same comes back for its nonce.
                log.warning("ticket news DM to %s: Discord failed (%s)", delivery.user_id, exc.status)
                return Outcome.RETRY
            log.warning("ticket news DM to %s refused: %s %s", delivery.user_id, exc.status, exc.text)
            return Outcome.FAILED
        except (aiohttp.ClientError, ConnectionError) as exc:
            # No connection, or one that broke: what Discord made of it comes back for its nonce.
            log.warning("ticket news DM to %s: Discord unreachable (%r)", delivery.user_id, exc)
            return Outcome.SENT if went_out else Outcome.RETRY
        except discord.RateLimited as exc:
            # Limited for longer than rate_limit_seconds: a later round, not minutes of waiting.
            log.warning("ticket news DM to %s: %s", delivery.user_id, limited_for(exc))
            return Outcome.SENT if went_out else Outcome.RETRY
        return Outcome.SENT

    async def in_channel(self, user_id: str, channel_id: str, text: str) -> bool:
        if left := await self._left_place_of(int(user_id), int(channel_id)):
            # Discord refuses DMs to someone who shares no server with the bot: a player who left
            # (or was banned) cannot read the channel, nor can one removed from a private thread
            # read it. Its members would only learn that they have tickets, one maybe filed
            # against one of them.
            log.info(
                "ticket news for %s: DMs refused, and they are no longer in the %s of channel %s:"
                " not told there",
                user_id,
                left,
                channel_id,
            )
            return False
        channel = self.bot.get_partial_messageable(int(channel_id))
        # This one pings: it is for that player alone, in a busy channel. Nobody else can be pinged.
        mentions = discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(id=int(user_id))]
        )
        try:
            await channel.send(f"<@{user_id}> {text}", allowed_mentions=mentions)
        except discord.HTTPException as exc:
            log.warning("could not post in channel %s: %s %s", channel_id, exc.status, exc.code)
            return False
        except discord.RateLimited as exc:
            log.warning("could not post in channel %s: %s", channel_id, limited_for(exc))
            return False
        return True

    async def _left_place_of(self, user_id: int, channel_id: int) -> str | None:
        """What Discord says the player is no longer a member of: the server `channel_id` is in
        ("server"), or the private thread it is ("private thread"); None if neither. One member
        and one thread member looked up need no Server Members intent. A look-up that fails says
        neither: Discord's trouble must not cost a player who is still there the one notice that
        tells them."""
        place = None
        try:
            channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
            guild = getattr(channel, "guild", None)
            if guild is None:
                return None
            place = "server"
            await self.bot.http.get_member(guild.id, user_id)
            if getattr(channel, "type", None) is not discord.ChannelType.private_thread:
                return None  # a public thread shows to all who see its channel, members or not
            place = "private thread"
            await self.bot.http.get_thread_member(channel_id, user_id)
        except discord.NotFound as exc:
            return place if exc.code in (UNKNOWN_MEMBER, UNKNOWN_USER) else None
        except (discord.HTTPException, discord.RateLimited, aiohttp.ClientError, ConnectionError) as exc:
            log.warning(
                "could not learn whether %s is still in the %s of channel %s: %r",
                user_id,
                place or "server",
                channel_id,
                exc,
            )
        return None

    async def _post(self, channel_id: int, d: Delivery) -> AsyncIterator[bool]:
        """Send `d` in the player's reply style, as cogs/replies.py answers notes; yields after
        each message that went out. Audio over the upload limit goes as the text alone."""
        nonce = _nonce(d)
        audio = d.audio
        if audio is not None and audio.size > upload_limit(None):  # a DM's
            log.info("ticket news audio for %s is over a DM's upload limit: sending the text", d.user_id)
            audio = None
        try:
            async for sent in self._styled(channel_id, d, audio, nonce):
                yield sent
        except discord.HTTPException as exc:
            # Refused before anything went out: the audio rides on the first message.
            if exc.status != TOO_LARGE:
                raise
            log.info("ticket news audio refused in DM %s (%s): sending the text", channel_id, exc.code)
            async for sent in self._text(channel_id, d.text, nonce=nonce):
                yield sent

    async def _styled(
        self, channel_id: int, d: Delivery, audio: ReplyAudio | None, nonce: str
    ) -> AsyncIterator[bool]:
        if audio is None or d.mode == "text":
            async for sent in self._text(channel_id, d.text, nonce=nonce):
                yield sent
            return
        if d.mode != "file":
            try:
                await self._voice(channel_id, audio, nonce)
            except discord.HTTPException as exc:
                if exc.code not in VOICE_REFUSED_CODES:
                    raise
                log.info("voice message refused in DM %s (%s): sending a file", channel_id, exc.code)
            else:
                yield True
                if d.mode == "voice_and_text":
                    async for sent in self._text(channel_id, d.text, nonce=nonce):
                        yield sent
                return
        async for sent in self._text(channel_id, d.text if d.mode != "voice" else "", audio, nonce):
            yield sent

    async def _voice(self, channel_id: int, audio: ReplyAudio, nonce: str) -> None:
        # discord.py 2.7 cannot send voice messages: one raw request through its HTTP layer
        # (session, rate limits, retries), as cogs/replies.py does for answers.
        payload = {
            "flags": VOICE_MESSAGE_FLAG,
            "attachments": [
                {
                    "id": "0",
                    "filename": VOICE_FILENAME,
                    "duration_secs": audio.duration_secs,
                    "waveform": audio.waveform,
                }
            ],
            "allowed_mentions": NO_PINGS,
        }
        await self._request(channel_id, payload, (VOICE_FILENAME, audio.ogg), f"v{nonce}")

    async def _text(
        self, channel_id: int, text: str, file: ReplyAudio | None = None, nonce: str = ""
    ) -> AsyncIterator[bool]:
        """`text` in pieces of Discord's size; the audio file (if any) rides on the first."""
        for i, piece in enumerate(split_message(text) or [""]):
            payload: dict[str, Any] = {"content": piece, "allowed_mentions": NO_PINGS}
            upload = (FILE_FILENAME, file.ogg) if i == 0 and file is not None else None
            if upload is not None:
                payload["attachments"] = [
                    {"id": "0", "filename": FILE_FILENAME, "description": "spoken news"}
                ]
            await self._request(channel_id, payload, upload, f"t{i}.{nonce}")
            yield True

    async def _request(
        self, channel_id: int, payload: dict[str, Any], upload: tuple[str, bytes] | None, nonce: str
    ) -> None:
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
        # Where Discord made the message and its edge answered 502, discord.py sends it again, and
        # a round tries the news again after a failure: Discord returns the message it made.
        payload = {**payload, "nonce": nonce, "enforce_nonce": True}
        if upload is None:
            await self.bot.http.request(route, json=payload)
            return
        # A raw form also for the file style: discord.File would go out as octet-stream, not audio.
        filename, data = upload
        form: list[dict[str, Any]] = [
            {"name": "payload_json", "value": json.dumps(payload)},
            {"name": "files[0]", "value": data, "filename": filename, "content_type": "audio/ogg"},
        ]
        await self.bot.http.request(route, form=form)


def _nonce(d: Delivery) -> str:
    """The same for every try of one delivery's messages, and for no other delivery: a message
    Discord made at an earlier try comes back rather than being posted twice, though news it
    told was done meanwhile (the DM tried again carries less), and one that carried other news
    would not be returned in its place. By the delivery's key, not its contents, which a try
    again may narrow. At most 25 characters with the prefix each message adds (v, t0. ... t999.)."""
    if d.key is None:  # tried by a voxdesk that kept no key: the nonce it gave the DM
        items = ",".join(str(item.id) for item in sorted(d.items, key=lambda item: item.id))
        return hashlib.sha256(f"{d.user_id}:{items}".encode()).hexdigest()[:19]
    return hashlib.sha256(f"{d.user_id}:{d.key}".encode()).hexdigest()[:19]


async def setup(bot: VoxdeskBot) -> None:
    await bot.add_cog(TicketNewsDesk(bot))
