"""Posting the agent's answer: a native voice message, the transcript, or a file reply."""

from __future__ import annotations

import io
import json
import logging

import discord
from discord.http import Route

from bot.audio import ReplyAudio

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000  # characters a bot may put in one message
VOICE_MESSAGE_FLAG = discord.MessageFlags.voice.flag  # 8192
VOICE_FILENAME = "voice-message.ogg"
# Discord's answers that mean "no voice messages here": fall back to a file reply.
VOICE_REFUSED_CODES = {50173, 50013}  # cannot send voice messages in this channel; missing permissions


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Pieces of at most `limit` characters, cut at a paragraph, line or word break when possible."""
    text = text.strip()
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        if cut < limit // 2:  # no good break near the end: cut hard rather than make tiny pieces
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return pieces


def voice_message_allowed(message: discord.Message) -> bool:
    """False when the bot knows it lacks the Send Voice Messages permission where it would reply."""
    channel = message.channel
    guild = message.guild
    if guild is None or not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return True
    return channel.permissions_for(guild.me).send_voice_messages


async def send_voice_message(client: discord.Client, message: discord.Message, reply: ReplyAudio) -> None:
    """Post `reply` as a native voice message answering `message`.

    discord.py 2.7 cannot send voice messages, so this one request goes through the client's own
    HTTP layer (its session, rate limiting and retries) with a raw route and a multipart form:
    flag 8192, no content, one Ogg/Opus attachment with `duration_secs` and `waveform`.
    Raises discord.HTTPException as any other send would.
    """
    payload = {
        "flags": VOICE_MESSAGE_FLAG,
        "attachments": [
            {
                "id": "0",
                "filename": VOICE_FILENAME,
                "duration_secs": reply.duration_secs,
                "waveform": reply.waveform,
            }
        ],
        "message_reference": {"message_id": str(message.id), "fail_if_not_exists": False},
        "allowed_mentions": {"parse": [], "replied_user": False},
    }
    form = [
        {"name": "payload_json", "value": json.dumps(payload)},
        {"name": "files[0]", "value": reply.ogg, "filename": VOICE_FILENAME, "content_type": "audio/ogg"},
    ]
    route = Route("POST", "/channels/{channel_id}/messages", channel_id=message.channel.id)
    await client.http.request(route, form=form)


async def send_text(message: discord.Message, text: str, file: ReplyAudio | None = None) -> None:
    """Reply with `text` split at Discord's limit; `file` (if any) rides on the first piece."""
    pieces = split_message(text) or [""]
    for i, piece in enumerate(pieces):
        attachment = None
        if i == 0 and file is not None:
            attachment = discord.File(io.BytesIO(file.ogg), filename="reply.ogg", description="spoken reply")
        await message.reply(
            content=piece or None,
            file=attachment,  # type: ignore[arg-type]
            mention_author=False,
        )


async def send_answer(
    client: discord.Client, message: discord.Message, text: str, audio: ReplyAudio | None, mode: str
) -> str:
    """Answer with the player's chosen style (voice_and_text | voice | file | text); returns how it
    went out: voice | file | text. A refused voice message falls back to the file style."""
    if audio is None or mode == "text":
        await send_text(message, text)
        return "text"
    if mode != "file" and voice_message_allowed(message):
        try:
            await send_voice_message(client, message, audio)
        except discord.HTTPException as exc:
            if exc.code not in VOICE_REFUSED_CODES:
                raise
            log.info("voice message refused in channel %s (%s): sending a file", message.channel.id, exc.code)
        else:
            if mode == "voice_and_text" and text:
                await send_text(message, text)
            return "voice"
    await send_text(message, text if mode != "voice" else "", file=audio)
    return "file"
