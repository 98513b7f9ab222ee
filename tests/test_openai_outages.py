"""The OpenAI engine when OpenAI is slow, rate limited or failing, through the real `openai` SDK
over HTTP against the fake: the answer does not wait on the transcription, a turn sends no request
bound to fail, and notes queued behind a rate limit or an outage get the fallback at once."""

from __future__ import annotations

import pytest

from bot.app import running_app
from bot.tools.base import ToolContext
from tests.fakes.openai_server import answer, serving
from tests.test_openai import NOTE, openai_settings

from .conftest import NOVA


@pytest.fixture
async def fake():
    async with serving() as server:
        yield server


@pytest.fixture
def storage(settings):
    return settings.storage_dir


async def test_the_answer_waits_only_briefly_for_the_players_words(storage, fake) -> None:
    # The transcription would come, in time; the answer is ready long before.
    fake.transcribe_seconds = 10  # within the transcription's own timeout
    fake.script = [answer("Here now.")]
    settings = openai_settings(storage, fake, VOXDESK_OPENAI_TIMEOUT_SECONDS="30")
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        (kept,) = await app.conversations.history(NOVA)
    assert (reply.engine, reply.text, reply.user_text) == ("openai", "Here now.", None)
    assert kept.user_text is None and kept.reply_text == "Here now."
    assert len(fake.transcriptions) == 1
