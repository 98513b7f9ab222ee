import asyncio
import contextlib
import datetime as dt
import logging
import random
import re
from collections.abc import Iterator

import pytest

from bot.app import running_app, storage_paths
from bot.audio import AudioError
from bot.config import UsageSettings
from bot.engines.base import AudioClip, EngineReply, Transcript, TurnState, Usage
from bot.sentences import NO_ANSWER_MADE, OVER_BUDGET
from bot.tools.base import ToolContext
from bot.usage import UsageMeter, reset_in, seconds_to_reset
from tests.audio_samples import collected, encode, speechlike
from tests.scripted_engine import BrokenEngine, ScriptedEngine, answer, calls, tone_wav_reply

from .conftest import BLAZE, NOVA, QUILL

NOTE = encode(speechlike(1.0), 48_000, "ogg")


async def test_one_turn_runs_two_tools_in_one_round_then_answers(settings) -> None:
    engine = ScriptedEngine(
        [
            calls(("get_player_stats", {}), ("get_grievance_status", {})),
            lambda turn: tone_wav_reply(
                f"You have {turn.rounds[0].results[0].result['total_points']} points"
            ),
        ]
    )
    async with running_app(settings, engine) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        history = await app.conversations.history(NOVA)
    assert [c["name"] for c in reply.tool_calls] == ["get_player_stats", "get_grievance_status"]
    points = reply.tool_results[0].result["total_points"]
    assert reply.text == f"You have {points} points"
    assert reply.user_text == "scripted words"
    assert reply.audio is not None and reply.audio.ogg.startswith(b"OggS")
    assert reply.audio.duration_secs == pytest.approx(0.5, abs=0.03)
    assert {"decode", "engine", "tools", "encode", "save"} <= set(reply.timings_ms)
    assert len(engine.seen) == 2 and engine.seen[0].audio is not None
    assert engine.seen[0].audio.seconds > 0.9
    assert [t.user_text for t in history] == ["scripted words"]
    assert history[0].tool_results[0]["name"] == "get_player_stats"


async def test_rounds_are_bounded_and_the_last_step_must_answer(settings) -> None:
    def greedy(turn: TurnState) -> EngineReply:
        if turn.allow_tools:
            return calls(("search_manuals", {"query": "refund"}))(turn)
        return tone_wav_reply("done")

    engine = ScriptedEngine([greedy])
    async with running_app(settings, engine) as app:
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "loop forever")
    assert len(reply.tool_calls) == settings.agent.max_tool_rounds == 3
    assert engine.allowed == [True, True, True, False]
    assert reply.text == "done"


async def test_an_engine_ignoring_the_bound_gets_no_more_tools_run(settings, caplog) -> None:
    engine = ScriptedEngine([calls(("get_player_stats", {}))])
    async with running_app(settings, engine) as app:
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "hi")
    assert engine.allowed == [True, True, True, False]  # three rounds of tools, then no more steps
    # Its calls past the bound were all it said: the player hears that no answer came together,
    # not an empty answer, nor that the service is down.
    assert (reply.kind, reply.text) == ("apology", NO_ANSWER_MADE)
    assert "said nothing after 3 tool rounds (agent.max_tool_rounds = 3)" in caplog.text


async def test_bad_audio_raises_audio_error_and_leaves_history_alone(settings) -> None:
    async with running_app(settings, ScriptedEngine()) as app:
        with pytest.raises(AudioError):
            await app.agent.respond(ToolContext(user_id=NOVA), b"%PDF-1.4 not a note")
        assert await app.conversations.history(NOVA) == []


async def test_an_answer_with_a_lone_surrogate_or_a_nul_is_written_without_them_and_kept(settings) -> None:
    """From a display name cut mid-character or a tool's result: the turn could not be saved
    (SQLite takes UTF-8 only), and Discord would be sent a NUL. What shows is kept."""
    engine = ScriptedEngine([lambda turn: EngineReply(text="GG Nova\ud800\x00 \U0001f3ae\u200d\u674e!\nBye")])
    async with running_app(settings, engine) as app:
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "hi")
        history = await app.conversations.history(NOVA)
    assert reply.text == "GG Nova \U0001f3ae\u200d\u674e!\nBye"
    assert [t.reply_text for t in history] == [reply.text]
    assert reply.audio is not None and reply.audio.duration_secs > 0.5


async def test_an_answer_is_written_without_direction_overrides(settings) -> None:
    """A player's name from the game's database (or a tool's result) that opens with U+202E turned
    the rest of the bot's line around where everyone in the channel reads it. Arabic with its
    right-to-left mark shows as written."""
    engine = ScriptedEngine(
        [
            lambda turn: EngineReply(
                text="\u202eNova\u2067, you have 708 points. \u0646\u0648\u0641\u0627\u200f"
            )
        ]
    )
    async with running_app(settings, engine) as app:
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "hi")
        history = await app.conversations.history(NOVA)
    assert reply.text == "Nova, you have 708 points. \u0646\u0648\u0641\u0627\u200f"
    assert [t.reply_text for t in history] == [reply.text]


def test_a_written_answer_keeps_the_line_breaks_control_characters_make() -> None:
    """A lone CR, a vertical tab or a form feed (a ticket's text from another system) was dropped,
    running one line's last word into the next line's first: "Ticket GRV-12Resolved"."""
    from bot.speech.speakable import writable

    assert (
        writable("Ticket GRV-12\rResolved\x0bBye\x0cNow\x85End\r\nok")
        == "Ticket GRV-12\nResolved\nBye\nNow\nEnd\nok"
    )


async def test_engine_failure_gives_an_apology_not_silence(settings) -> None:
    async with running_app(settings, BrokenEngine()) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.kind == "apology" and "Sorry" in reply.text


async def test_engine_failure_falls_back_to_the_other_engine_and_is_counted(settings) -> None:
    from bot import metrics

    def fallbacks(result: str) -> float:
        return (
            metrics.REGISTRY.get_sample_value(
                "voxdesk_fallbacks_total", {"engine": "scripted", "result": result}
            )
            or 0.0
        )

    before = fallbacks("answered"), fallbacks("failed")
    async with running_app(settings, BrokenEngine()) as app:
        app.agent.fallback = ScriptedEngine([answer("from the fallback")], name="backup")
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        app.agent.fallback = BrokenEngine()
        apology = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert (reply.kind, reply.text, reply.engine) == ("answer", "from the fallback", "backup")
    assert apology.kind == "apology"
    assert (fallbacks("answered"), fallbacks("failed")) == (before[0] + 1, before[1] + 1)


async def test_an_answer_with_neither_words_nor_audio_is_a_failure_not_an_empty_reply(settings) -> None:
    class Filtered(ScriptedEngine):  # a cloud model stopped by its content filter
        async def complete(self, turn: TurnState) -> EngineReply:
            return EngineReply(text=" ", audio=None)

    async with running_app(settings, Filtered()) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        app.agent.fallback = ScriptedEngine([answer("from the fallback")], name="backup")
        rescued = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
    assert reply.kind == "apology" and "Sorry" in reply.text
    assert (rescued.kind, rescued.text) == ("answer", "from the fallback")


async def test_unreadable_audio_from_the_engine_still_sends_its_answer(settings) -> None:
    class Garbled(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            if not turn.rounds:
                return calls(("register_grievance", {"category": "wallet", "description": "gems gone"}))(turn)
            return EngineReply(
                text="Filed as GRV-14.", audio=b"RIFF\x00\x00\x00\x00WAVEjunk", audio_format="wav"
            )

    async with running_app(settings, Garbled()) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        history = await app.conversations.history(NOVA)
    assert (reply.kind, reply.text) == ("answer", "Filed as GRV-14.")
    assert [t.reply_text for t in history] == ["Filed as GRV-14."]


async def test_a_note_files_at_most_three_tickets_and_a_round_runs_at_most_eight_calls(settings) -> None:
    filings = [
        ("register_grievance", {"category": "wallet", "description": f"gems gone {i}"}) for i in range(5)
    ]
    lookups = [("get_player_stats", {})] * 10
    engine = ScriptedEngine([calls(*filings), calls(*lookups), answer("done")])
    async with running_app(settings, engine) as app:
        before = len(await app.grievances.status(NOVA))
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA, request_id="n1"), "file it five times")
        after = len(await app.grievances.status(NOVA))
    assert after - before == 3
    assert [r.ok for r in reply.tool_results[:5]] == [True, True, True, False, False]
    assert [r.ok for r in reply.tool_results[5:]] == [True] * 8 + [False] * 2
    assert len(reply.tool_results) == 15  # every call answered, run or not


async def test_the_same_complaint_called_again_in_one_note_is_filed_once(settings) -> None:
    """A model calling the tool twice side by side, or again in a later round, with the same words
    files one ticket and is told its key each time; another complaint still gets its own."""
    gone = ("register_grievance", {"category": "wallet", "description": "My gems vanished after the update"})
    again = (
        "register_grievance",
        {"category": "wallet", "description": "my gems  vanished after the update "},
    )
    other = ("register_grievance", {"category": "wallet", "description": "charged twice for the battle pass"})
    engine = ScriptedEngine([calls(gone, gone), calls(again, other), answer("Filed.")])
    async with running_app(settings, engine) as app:
        before = len(await app.grievances.status(NOVA))
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA, request_id="n1"), "gems gone")
        rerun = await app.agent.respond_text(ToolContext(user_id=NOVA, request_id="n1"), "gems gone")
        after = len(await app.grievances.status(NOVA))
    keys = [r.result["ticket_key"] for r in reply.tool_results]
    assert keys[0] == keys[1] == keys[2] != keys[3] and all(r.ok for r in reply.tool_results)
    assert after - before == 2
    assert [r.result["ticket_key"] for r in rerun.tool_results] == keys  # the note heard again


async def test_arguments_nested_hundreds_deep_are_refused_and_the_rest_of_the_round_runs(settings) -> None:
    deep: object = "gems"
    for _ in range(2000):
        deep = [deep]
    engine = ScriptedEngine(
        [calls(("search_manuals", {"query": deep}), ("get_player_stats", {})), answer("ok")]
    )
    async with running_app(settings, engine) as app:
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "points")
        (kept,) = await app.conversations.history(NOVA)
    assert (reply.kind, reply.text) == ("answer", "ok")
    assert [r.ok for r in reply.tool_results] == [False, True]
    assert [r["ok"] for r in kept.tool_results] == [False, True]
    assert "nested more than 20 deep" in reply.tool_results[0].result["error"]


async def test_history_reaches_the_engine_on_the_next_turn(settings) -> None:
    engine = ScriptedEngine()
    async with running_app(settings, engine) as app:
        await app.agent.respond_text(ToolContext(user_id=NOVA), "first")
        await app.agent.respond_text(ToolContext(user_id=NOVA), "second")
        await app.agent.respond_text(ToolContext(user_id=BLAZE), "other user")
    assert [len(t.history) for t in engine.seen] == [0, 1, 0]  # one step per turn
    assert engine.seen[1].history[0].user_text == "first"


async def test_each_users_turns_stay_in_order_under_concurrency(settings) -> None:
    """Many users, several notes each, all at once: every user's turns run in arrival order,
    one at a time, while different users overlap."""
    running: dict[str, int] = {}
    overlap = {"max": 0, "now": 0}
    order: dict[str, list[str]] = {}

    class Recorder(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            user = turn.context.user_id
            running[user] = running.get(user, 0) + 1
            assert running[user] == 1, "two turns of one user ran at once"
            overlap["now"] += 1
            overlap["max"] = max(overlap["max"], overlap["now"])
            await asyncio.sleep(random.uniform(0, 0.01))
            order.setdefault(user, []).append(turn.text or "")
            overlap["now"] -= 1
            running[user] -= 1
            return EngineReply(text=f"re {turn.text}")

    users = [str(10**17 + i) for i in range(20)]
    async with running_app(settings, Recorder()) as app:
        tasks = [
            asyncio.create_task(app.agent.respond_text(ToolContext(user_id=u), f"{u}-{n}"))
            for n in range(4)
            for u in users
        ]
        replies = await asyncio.gather(*tasks)
        assert app.agent._user_locks == {}
    assert all(r.text.startswith("re ") for r in replies)
    for u in users:
        assert order[u] == [f"{u}-{n}" for n in range(4)]
    assert 1 < overlap["max"] <= settings.agent.max_concurrent_turns


async def test_one_players_turns_never_overlap_even_with_slots_to_spare(settings) -> None:
    """With more turn slots than players, only the per-player lock keeps one player's notes apart.

    Every turn is held inside the engine until each player has a turn there, so different players
    overlap by construction; a player's later notes, sent before the others' (typed turns reach
    the engine in the order sent), would be in the engine by then too were nothing stopping them.
    """
    players = [NOVA, BLAZE, QUILL]
    in_flight = dict.fromkeys(players, 0)
    peak = dict.fromkeys(players, 0)
    most_players_at_once = 0
    everyone_in = asyncio.Event()

    class Holding(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            nonlocal most_players_at_once
            user = turn.context.user_id
            in_flight[user] += 1
            peak[user] = max(peak[user], in_flight[user])
            players_in = sum(1 for n in in_flight.values() if n)
            most_players_at_once = max(most_players_at_once, players_in)
            if players_in == len(players):
                everyone_in.set()
            try:
                # Not a timing assertion: a guard so a broken lock fails the test instead of hanging it.
                await asyncio.wait_for(everyone_in.wait(), 30)
            finally:
                in_flight[user] -= 1
            return EngineReply(text=f"re {turn.text}")

    roomy = settings.replace(agent={"max_concurrent_turns": 64})
    sent = [(NOVA, n) for n in range(4)] + [(u, n) for n in range(2) for u in (BLAZE, QUILL)]
    async with running_app(roomy, Holding()) as app:
        replies = await asyncio.gather(
            *(app.agent.respond_text(ToolContext(user_id=u), f"{u}-{n}") for u, n in sent)
        )
        histories = {u: [t.user_text for t in await app.conversations.history(u)] for u in players}
    assert [r.text for r in replies] == [f"re {u}-{n}" for u, n in sent]
    assert peak == dict.fromkeys(players, 1)
    assert most_players_at_once == len(players) < roomy.agent.max_concurrent_turns
    assert histories[NOVA] == [f"{NOVA}-{n}" for n in range(4)]  # one after another, in order


async def test_the_heap_is_trimmed_once_no_turn_runs_or_waits_not_as_each_turn_ends(settings) -> None:
    """Nova's turn ends while Blaze's still runs: no trim then; one once Blaze's has ended too."""
    from bot.heap import IdleTrim

    trims: list[int] = []
    during_blaze: list[int] = []
    nova_done = asyncio.Event()

    class Staggered(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            if turn.context.user_id == BLAZE:
                # Not a timing assertion: a guard so a turn that never ends fails the test.
                await asyncio.wait_for(nova_done.wait(), 30)
                await asyncio.sleep(0.05)  # the idle timer (0 s) would fire here, were one set
                during_blaze.extend(trims)
            return EngineReply(text=f"re {turn.text}")

    async with running_app(settings, Staggered()) as app:
        app.agent.idle_trim = IdleTrim(0.0, trim=lambda: trims.append(len(trims)))

        async def nova() -> None:
            await app.agent.respond_text(ToolContext(user_id=NOVA), "hi")
            nova_done.set()

        blaze = asyncio.create_task(app.agent.respond_text(ToolContext(user_id=BLAZE), "hi"))
        await nova()
        assert not blaze.done()
        await blaze
        for _ in range(500):  # a guard, not a timing assertion: the trim runs on a thread
            if trims:
                break
            await asyncio.sleep(0.01)
    assert during_blaze == []
    assert trims == [0]


async def _timers_fired() -> None:
    """Past the loop iterations in which 0 s timers fire."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_turn_starting_cancels_every_idle_timer_set_before_it() -> None:
    """Two idle spells, then a turn: the earlier spell's timer is cancelled with the later one's."""
    from bot.heap import IdleTrim

    trims: list[int] = []
    idle = IdleTrim(0.0, trim=lambda: trims.append(1))
    idle.idle()
    idle.idle()
    idle.busy()
    await _timers_fired()
    await asyncio.gather(*idle._running)
    assert trims == []


async def test_a_trim_still_running_is_not_started_again() -> None:
    """A trim walks every arena's heap on a thread: an idle spell ending while it runs starts none."""
    import threading

    from bot.heap import IdleTrim

    started, release = threading.Event(), threading.Event()
    trims: list[int] = []

    def slow_trim() -> None:
        trims.append(1)
        started.set()
        release.wait(30)  # a guard, not a timing assertion: released below

    idle = IdleTrim(0.0, trim=slow_trim)
    idle.idle()
    await _timers_fired()
    assert await asyncio.to_thread(started.wait, 30)
    idle.idle()
    await _timers_fired()
    release.set()
    await asyncio.gather(*idle._running)
    assert trims == [1]


async def test_a_ticket_filed_is_confirmed_even_when_the_turn_cannot_be_saved(settings, caplog) -> None:
    import sqlite3

    async def locked(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    engine = ScriptedEngine(
        [
            calls(("register_grievance", {"category": "wallet", "description": "charged twice for gems"})),
            lambda turn: answer(f"Filed as {turn.rounds[0].results[0].result['ticket_key']}")(turn),
        ]
    )
    async with running_app(settings, engine) as app:
        app.conversations.history = locked  # type: ignore[method-assign]
        app.conversations.append = locked  # type: ignore[method-assign]
        reply = await app.agent.respond(ToolContext(user_id=NOVA), NOTE)
        mine = await app.grievances.status(NOVA)
    assert reply.kind == "answer" and reply.text.startswith("Filed as GRV-")
    assert [g.description for g in mine].count("charged twice for gems") == 1
    assert "could not save the turn" in caplog.text and "could not read the history" in caplog.text


async def test_the_daily_token_budget_stops_a_player_once_spent(settings) -> None:
    spend = lambda turn: EngineReply(text="ok", usage=Usage(text_in=60, audio_out=40))  # noqa: E731
    engine = ScriptedEngine([spend])
    budgeted = settings.replace(usage={"daily_tokens": 100})
    async with running_app(budgeted, engine) as app:
        first = await app.agent.respond_text(ToolContext(user_id=NOVA), "one")
        second = await app.agent.respond_text(ToolContext(user_id=NOVA), "two")
        other = await app.agent.respond_text(ToolContext(user_id=BLAZE), "three")
    assert (first.kind, second.kind, other.kind) == ("answer", "over_budget", "answer")
    assert over_budget(second.text)
    assert len(engine.seen) == 2  # the refused turn never reached the engine


async def test_a_budget_that_cannot_be_read_answers_the_note_rather_than_lose_it(settings, caplog) -> None:
    # usage.db refusing the read (damaged, or its table gone) must not fail the turn before the
    # engine is asked: every player would hear "something went wrong" while the engine and the
    # tools are fine. Spending the same database refuses to record is let through with a line too.
    import sqlite3

    from bot.usage import SCHEMA as usage_schema

    budgeted = settings.replace(usage={"daily_tokens": 100})
    async with running_app(budgeted, ScriptedEngine()) as app:
        with contextlib.closing(sqlite3.connect(storage_paths(budgeted).usage)) as other:
            other.execute("DROP TABLE usage")
            other.commit()
        caplog.set_level(logging.DEBUG, logger="bot.agent")
        for _ in range(3):
            reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "how many points do I have")
            assert reply.kind == "answer"
        # A broken usage.db fails every note alike: one ERROR for it, not one a note.
        said = [r for r in caplog.records if "could not read the budget of user" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
        # Its records fail for the same reason: said already by the read, no news.
        unrecorded = [r for r in caplog.records if "could not record the usage of user" in r.getMessage()]
        assert [r.levelno for r in unrecorded] == [logging.DEBUG] * 3
        with contextlib.closing(sqlite3.connect(storage_paths(budgeted).usage)) as other:
            other.executescript(usage_schema)
        await app.agent.respond_text(ToolContext(user_id=NOVA), "how many points do I have")
    assert "usage.db is read again" in caplog.text


async def test_a_usage_db_that_reads_but_will_not_record_is_said_once(settings, caplog) -> None:
    # A usage.db another writer holds (busy) or a full disk still reads: each note's budget read
    # succeeding must not end the outage its record then starts again, an ERROR and a "back" line
    # a note.
    import sqlite3

    budgeted = settings.replace(usage={"daily_tokens": 1000})
    async with running_app(budgeted, ScriptedEngine()) as app:
        with contextlib.closing(sqlite3.connect(storage_paths(budgeted).usage)) as other:
            other.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON usage BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
            other.commit()
        caplog.set_level(logging.DEBUG, logger="bot.agent")
        for _ in range(3):
            reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "how many points do I have")
            assert reply.kind == "answer"
    said = [r for r in caplog.records if "could not record the usage of user" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    assert "again" not in caplog.text


def over_budget(text: str | None) -> bool:
    return bool(text) and re.fullmatch(re.escape(OVER_BUDGET).replace(r"\{when\}", "in .+"), text) is not None


async def test_a_spent_budget_says_how_long_until_it_starts_afresh_not_tomorrow(tmp_path) -> None:
    # The budget starts afresh at midnight UTC: 7 pm in New York, later that same day there.
    meter = await UsageMeter.open(tmp_path / "usage.db", UsageSettings(daily_tokens=10), model="m")
    try:
        await meter.record(NOVA, "scripted", Usage(text_in=10), 0.0)
        before = seconds_to_reset()
        text = await meter.refusal(NOVA)
        after = seconds_to_reset()
    finally:
        await meter.aclose()
    assert text is not None and "tomorrow" not in text
    assert reset_in(before) in text or reset_in(after) in text
    midnight = dt.datetime(2026, 11, 18, tzinfo=dt.UTC)
    said = [
        reset_in(seconds_to_reset(midnight - dt.timedelta(minutes=m)))
        for m in (5 * 60 + 10, 120, 50, 20, 19.4, 1, 0.2)
    ]
    # Minutes rounded up: a player told "in 19 minutes" with 19.4 left would ask again too soon.
    assert said == [
        "in about 5 hours",
        "in about 2 hours",
        "in about an hour",
        "in 20 minutes",
        "in 20 minutes",
        "in a minute",
        "in a minute",
    ]
    assert reset_in(seconds_to_reset(midnight)) == "in about 24 hours"


async def test_the_daily_budget_refuses_at_exactly_the_limit_not_one_past_it(tmp_path) -> None:
    limits = UsageSettings(daily_audio_seconds=2.0, daily_tokens=100)
    meter = await UsageMeter.open(tmp_path / "usage.db", limits, model="m")
    try:
        # Every kind of token counts towards the one daily figure.
        await meter.record(NOVA, "scripted", Usage(text_in=40, text_out=30, audio_in=20, audio_out=9), 0.0)
        assert await meter.refusal(NOVA) is None  # 99 tokens
        await meter.record(NOVA, "scripted", Usage(audio_out=1), 0.0)
        assert over_budget(await meter.refusal(NOVA))  # 100: exactly the limit

        await meter.record(BLAZE, "scripted", None, 1.5)
        assert await meter.refusal(BLAZE) is None
        await meter.record(BLAZE, "scripted", None, 0.5)  # 2.0 s, exact in binary floating point
        assert over_budget(await meter.refusal(BLAZE))
        assert await meter.refusal(QUILL) is None
    finally:
        await meter.aclose()


async def test_a_complaint_filed_before_the_engine_failed_is_not_filed_again_by_the_fallback(
    settings,
) -> None:
    from bot.engines.base import EngineError

    complaint = ("register_grievance", {"category": "wallet", "description": "gems missing"})

    def fail(turn: TurnState) -> EngineReply:  # the model service drops after the tool ran
        raise EngineError("service down")

    async with running_app(settings, ScriptedEngine([calls(complaint), fail])) as app:
        # It sees the round already run, and files the same complaint again in its own first step.
        app.agent.fallback = ScriptedEngine(
            [answer("unused"), calls(complaint), answer("filed")], name="backup"
        )
        note = ToolContext(user_id=NOVA, request_id="930000000000000126")
        reply = await app.agent.respond_text(note, "my gems are missing")
        tickets = await app.grievances.status(NOVA)
    keys = [r.result["ticket_key"] for r in reply.tool_results if r.call.name == "register_grievance"]
    assert reply.engine == "backup" and len(keys) == 2 and keys[0] == keys[1]
    assert [t.description for t in tickets].count("gems missing") == 1


async def test_a_reply_the_engine_already_encoded_is_sent_as_it_is(settings) -> None:
    """The offline engine encodes as it speaks; decoding and encoding that again would cost a
    reply's worth of Opus work for nothing."""
    from bot.audio import reply_from_pcm

    ready = reply_from_pcm(b"\x00\x10" * 24_000, 24_000)

    class Encoded(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            return EngineReply(text="done", reply_audio=ready, audio=b"not audio", audio_format="wav")

    async with running_app(settings, Encoded()) as app:
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "hi")
    assert reply.audio is ready


async def test_an_apology_after_a_complaint_was_filed_gives_its_ticket_and_keeps_the_turn(settings) -> None:
    from bot.engines.base import EngineError

    def fail(turn: TurnState) -> EngineReply:
        raise EngineError("service down")

    complaint = ("register_grievance", {"category": "wallet", "description": "gems missing"})
    async with running_app(settings, ScriptedEngine([calls(complaint), fail])) as app:
        app.agent.fallback = None
        reply = await app.agent.respond_text(ToolContext(user_id=NOVA), "my gems are missing")
        history = await app.conversations.history(NOVA)
        tickets = await app.grievances.status(NOVA)
    key = next(t.key for t in tickets if t.description == "gems missing")
    assert reply.kind == "apology" and "Sorry" in reply.text and key in reply.text
    assert [t.reply_text for t in history] == [reply.text]
    assert history[0].tool_results[0]["result"]["ticket_key"] == key


async def test_a_note_answered_again_replaces_its_first_attempt_in_the_history(settings) -> None:
    engine = ScriptedEngine()  # answers "answer <turns of history it saw>"
    async with running_app(settings, engine) as app:
        note = ToolContext(user_id=NOVA, request_id="1001")
        await app.agent.respond(ToolContext(user_id=NOVA, request_id="1000"), NOTE)
        await app.agent.respond(note, NOTE)
        again = await app.agent.respond(note, NOTE)  # its answer never reached the player: heard again
        await app.agent.respond(ToolContext(user_id=NOVA, request_id="1002"), NOTE)
        history = await app.conversations.history(NOVA)
    assert again.text == "answer 2"  # it saw what its first attempt did
    assert [t.reply_text for t in history] == ["answer 0", "answer 2", "answer 2"]  # the note once


async def test_a_note_answered_again_files_nothing_twice_whatever_category_the_model_picks(settings) -> None:
    picks = iter(["wallet", "reward_points"])
    engine = ScriptedEngine(
        [
            lambda turn: calls(("register_grievance", {"category": next(picks), "description": "gems gone"}))(
                turn
            ),
            lambda turn: answer(f"Filed as {turn.rounds[0].results[0].result['ticket_key']}")(turn),
        ]
    )
    async with running_app(settings, engine) as app:
        note = ToolContext(user_id=NOVA, request_id="1001")
        first = await app.agent.respond(note, NOTE)
        again = await app.agent.respond(ToolContext(user_id=NOVA, request_id="1001"), NOTE)
        mine = await app.grievances.status(NOVA)
    assert first.text == again.text
    assert [g.description for g in mine].count("gems gone") == 1


async def test_a_turn_cut_while_it_waits_for_its_transcript_ends_cut_and_saves_nothing(settings) -> None:
    # A shutdown out of grace cancels the turn wherever it is. A cancel while it waits for the
    # transcript is the turn's, not the transcript's: it must not go on to save an answer never sent.
    class SlowEars(ScriptedEngine):
        async def transcribe(self, audio: AudioClip) -> Transcript | None:
            await asyncio.Event().wait()  # still hearing when the answer is ready
            return None

    def answer_then_cut(turn: TurnState) -> EngineReply:
        # lands when the turn next waits: for its transcript, the answer being ready
        asyncio.get_running_loop().call_soon(turning.cancel)
        return tone_wav_reply("Your refund is on its way")

    async with running_app(settings, SlowEars([answer_then_cut])) as app:
        turning = asyncio.create_task(app.agent.respond(ToolContext(user_id=NOVA), NOTE))
        with pytest.raises(asyncio.CancelledError):
            await turning
        history = await app.conversations.history(NOVA)
    assert history == []


async def test_a_turn_cut_while_the_model_thinks_stops_its_transcription(settings) -> None:
    # A transcription left running after its turn is cancelled is billed for nobody.
    hearing_started, thinking = asyncio.Event(), asyncio.Event()
    hearing: list[asyncio.Task] = []

    class SlowModel(ScriptedEngine):
        async def transcribe(self, audio: AudioClip) -> Transcript | None:
            hearing.append(asyncio.current_task())
            hearing_started.set()
            await asyncio.Event().wait()
            return None

        async def complete(self, turn: TurnState) -> EngineReply:
            thinking.set()
            await asyncio.Event().wait()
            raise AssertionError("never answers")

    async with running_app(settings, SlowModel()) as app:
        turning = asyncio.create_task(app.agent.respond(ToolContext(user_id=NOVA), NOTE))
        await hearing_started.wait()
        await thinking.wait()
        turning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turning
        await asyncio.sleep(0)
        assert hearing[0].cancelled()


@contextlib.contextmanager
def loop_errors() -> Iterator[list[str]]:
    """What the running loop's exception handler is given meanwhile ("Task exception was never
    retrieved" for an error no one read), in place of logging it; the handler put back after."""
    loop = asyncio.get_running_loop()
    said: list[str] = []
    loop.set_exception_handler(lambda _, context: said.append(context["message"]))
    try:
        yield said
    finally:
        loop.set_exception_handler(None)


async def test_a_transcription_that_failed_before_its_turn_was_cut_is_no_error_at_collection(
    settings,
) -> None:
    """A turn cut (a shutdown out of grace) after its transcription has failed must read the
    failure: left unread, asyncio logs "Task exception was never retrieved" when the task is
    collected, an ERROR with the recogniser's traceback, for a note answered after the restart."""
    import gc
    import weakref

    heard_failed, thinking = asyncio.Event(), asyncio.Event()
    heard: list[weakref.ref[asyncio.Task]] = []

    class DeafModel(ScriptedEngine):
        async def transcribe(self, audio: AudioClip) -> Transcript | None:
            heard.append(weakref.ref(asyncio.current_task()))
            heard_failed.set()
            raise ConnectionError("the transcription service hung up")

        async def complete(self, turn: TurnState) -> EngineReply:
            thinking.set()
            await asyncio.Event().wait()
            raise AssertionError("never answers")

    with loop_errors() as unread:
        async with running_app(settings, DeafModel()) as app:
            turning = asyncio.create_task(app.agent.respond(ToolContext(user_id=NOVA), NOTE))
            await heard_failed.wait()
            await thinking.wait()
            await asyncio.sleep(0)  # the transcription has ended, failed
            turning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await turning
            del turning
            await asyncio.sleep(0)
            gc.collect()
            assert heard[0]() is None  # collected: asyncio has had its say
        assert unread == []


async def test_a_transcription_that_fails_as_its_turn_is_cut_is_no_error_at_collection(settings) -> None:
    """A transcription still running when its turn is cut can end in an error rather than
    cancelled (a client whose teardown fails as it is interrupted): that error is read too, or
    asyncio logs "Task exception was never retrieved" when the task is collected."""
    import gc
    import weakref

    hearing_started, thinking = asyncio.Event(), asyncio.Event()
    heard: list[weakref.ref[asyncio.Task]] = []

    class ClumsyEars(ScriptedEngine):
        async def transcribe(self, audio: AudioClip) -> Transcript | None:
            heard.append(weakref.ref(asyncio.current_task()))
            hearing_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ConnectionError("the transcription service hung up while closing") from None
            return None

        async def complete(self, turn: TurnState) -> EngineReply:
            thinking.set()
            await asyncio.Event().wait()
            raise AssertionError("never answers")

    with loop_errors() as unread:
        async with running_app(settings, ClumsyEars()) as app:
            turning = asyncio.create_task(app.agent.respond(ToolContext(user_id=NOVA), NOTE))
            await hearing_started.wait()
            await thinking.wait()
            turning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await turning
            del turning
            task = heard[0]()
            for _ in range(20):  # a few passes of the loop: the cancel lands, then its callbacks run
                await asyncio.sleep(0)
            # Ended by its error, not cancelled (task.exception() here would read the error itself).
            assert task is not None and task.done() and not task.cancelled()
            del task
            await asyncio.sleep(0)
            gc.collect()
            assert heard[0]() is None  # collected: asyncio has had its say
        assert unread == []


async def test_a_handed_note_is_let_go_once_decoded_and_answers_one_turn(settings) -> None:
    # A note is up to audio.max_bytes: held through the model's call, each turn at once would
    # keep its note in memory for nothing once the clip the turn needs is decoded.

    from bot.agent import HandedNote

    freed: list[int] = []

    class Download(bytes):
        def __del__(self) -> None:  # bytes take no weak reference: a finalizer says it went
            freed.append(len(self))

    thinking, go_on = asyncio.Event(), asyncio.Event()

    class Thoughtful(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            thinking.set()
            await go_on.wait()
            return await super().complete(turn)

    handed = HandedNote(Download(NOTE))
    async with running_app(settings, Thoughtful()) as app:
        turning = asyncio.create_task(app.agent.respond(ToolContext(user_id=NOVA), handed))
        await thinking.wait()
        await collected(freed)
        assert freed == [len(NOTE)]  # while the model thinks
        go_on.set()
        assert (await turning).text == "answer 0"
        with pytest.raises(RuntimeError, match="handed to a turn already"):
            handed.take()


@pytest.mark.parametrize("fails", ["nothing said", "engine down"])
async def test_a_handed_note_is_heard_by_the_fallback_once_taken(settings, fails: str) -> None:
    # The bytes go once decoded; the fallback (the offline engine, or an engine over its budget)
    # hears the decoded clip the turn keeps, not the note again.
    from bot.agent import HandedNote

    heard: list[AudioClip | None] = []

    class Listening(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            heard.append(turn.audio)
            return await super().complete(turn)

    class SaysNothing(ScriptedEngine):
        async def complete(self, turn: TurnState) -> EngineReply:
            return EngineReply(text="", audio=None)

    primary = SaysNothing() if fails == "nothing said" else BrokenEngine()
    handed = HandedNote(NOTE)
    async with running_app(settings, primary) as app:
        app.agent.fallback = Listening([answer("from the fallback")], name="backup")
        reply = await app.agent.respond(ToolContext(user_id=NOVA), handed)
    assert (reply.kind, reply.text, reply.engine) == ("answer", "from the fallback", "backup")
    (clip,) = heard
    assert clip is not None and clip.seconds > 0.5 and len(clip.pcm) > 0


@pytest.mark.parametrize(
    ("text", "told"),
    [
        ("I filed that as GRV-12.", ["GRV-12"]),
        ("I filed that as GRV twelve.", ["GRV-12"]),  # a model writing its words for the voice
        ("That's ticket G R V dash one two.", ["GRV-12"]),
        ("It's in as grv twelve, and the other as SUP one oh one.", ["GRV-12", "SUP-101"]),
        ("Filed as SUP one hundred and one.", ["SUP-101"]),  # a Jira project's key, found again
        ("Filed as GRV-1.", []),  # neither of them: GRV-1 is not GRV-12
        ("Filed as GRV one.", []),
        ("Your earlier ticket, GRV one two three, is open.", []),
    ],
)
def test_a_ticket_key_is_told_however_the_answer_writes_it(text: str, told: list[str]) -> None:
    from bot.agent import Reply
    from bot.tools.base import ToolCall, ToolResult

    filed = [
        ToolResult(
            call=ToolCall(id=str(n), name="register_grievance", arguments={}),
            result={"ticket_key": key, "status": "open", "category": "wallet"},
            ok=True,
            elapsed_ms=1.0,
        )
        for n, key in enumerate(["GRV-12", "SUP-101"])
    ]
    assert Reply(text, None, None, filed, "scripted").told_keys == told


@pytest.mark.parametrize(
    ("text", "key", "named"),
    [
        ("That's GRV number twelve.", "GRV-12", True),
        ("Filed as SUP one-oh-one.", "SUP-101", True),
        ("Filed as GRV one two and SUP one oh one.", "GRV-12", True),
        ("Filed as SUP hundred and one.", "SUP-101", True),
        ("Filed as GRV one thousand two hundred.", "GRV-1200", True),
        ("Filed as GRV twenty twelve.", "GRV-2012", True),  # said as a year is
        # Read as another number, or inside another word, it is not this key: the player would
        # never hear the key, as its news is held for the answer that seemed to tell it.
        ("Filed as GRV twenty twelve.", "GRV-32", False),
        ("Filed as GRV one hundred.", "GRV-10", False),
        ("That's ticket G R V one two.", "GRV-3", False),
        ("Filed as XGRV-12.", "GRV-12", False),
        ("Both GRV and twelve other tickets are open.", "GRV-12", False),
        # A number that English does not join to the key's is another number, not more figures.
        ("Your ticket GRV fourteen two days ago was closed.", "GRV-142", False),
        ("Your ticket GRV fourteen two days ago was closed.", "GRV-14", True),
        ("I see GRV twelve, 3 more tickets are open.", "GRV-123", False),
        ("I see GRV twelve, 3 more tickets are open.", "GRV-12", True),
        ("I see GRV twelve 3 more tickets are open.", "GRV-123", False),
        ("I see GRV twelve 3 more tickets are open.", "GRV-12", True),
        ("GRV twelve three weeks ago.", "GRV-123", False),
        ("GRV twelve three weeks ago.", "GRV-12", True),
        ("GRV twenty one two days ago.", "GRV-212", False),
        ("GRV twenty one two days ago.", "GRV-21", True),
        ("GRV one hundred and one two days ago.", "GRV-101", True),
        ("GRV one hundred and one two days ago.", "GRV-1012", False),
        ("GRV one hundred two three.", "GRV-10023", False),
        # What English does join stays one number.
        ("Filed as GRV one forty two.", "GRV-142", True),
        ("Filed as GRV twelve oh five.", "GRV-1205", True),
        ("Filed as GRV nineteen eighty-four.", "GRV-1984", True),
        ("Filed as GRV twelve hundred.", "GRV-1200", True),
        ("Filed as GRV twelve hundred.", "GRV-12", False),
        ("Filed as GRV one two.", "GRV-1", False),
    ],
)
def test_a_ticket_number_said_in_words_is_read_whole(text: str, key: str, named: bool) -> None:
    from bot.agent import names_key

    assert names_key(text, key) is named


@pytest.mark.parametrize(
    ("said", "figures"),
    [
        ("seven", "7"),
        ("zero", "0"),
        ("twelve", "12"),
        ("twenty one", "21"),
        ("ninety nine", "99"),
        ("one hundred", "100"),
        ("hundred and one", "101"),
        ("one hundred and four", "104"),
        ("one hundred four", "104"),
        ("one hundred twenty three", "123"),
        ("twelve hundred", "1200"),
        ("twenty one hundred", "2100"),
        ("one thousand", "1000"),
        ("one thousand and five", "1005"),
        ("two thousand twelve", "2012"),
        ("one thousand two hundred", "1200"),
        ("ten thousand", "10000"),
        ("five hundred sixty seven thousand eight hundred and nine", "567809"),
        ("one two", "12"),
        ("one oh one", "101"),
        ("one two three four", "1234"),
        ("one forty two", "142"),
        ("twelve thirty four", "1234"),
        ("twenty twelve", "2012"),
        ("nineteen eighty four", "1984"),
        ("twelve oh five", "1205"),
        ("oh one", "01"),  # not the key 1
        ("12 three", "12"),
        # The number ends at the first word English would not join to it.
        ("fourteen two days ago", "14"),
        ("twelve three", "12"),
        ("twenty one two", "21"),
        ("forty two one", "42"),
        ("twelve 3 more", "12"),
        ("one hundred and", "100"),
        ("one hundred and one two", "101"),
        ("one hundred two three", "102"),
        ("twenty twenty", "2020"),
        ("thousand hundred", "1000"),
        ("twelve hundred thousand", "1200"),
        ("and one", None),
        ("other tickets", None),
        ("", None),
    ],
)
def test_spoken_numbers_combine_only_as_english_does(said: str, figures: str | None) -> None:
    from bot.agent import spoken_number

    assert spoken_number(said.split()) == figures


@pytest.mark.parametrize(
    ("turning", "newest", "stuck"), [(2, 300.0, True), (2, 299.0, False), (1, 900.0, False)]
)
def test_turn_slots_are_stuck_only_when_every_one_is_held_and_even_the_newest_turn_is_old(
    turning: int, newest: float, stuck: bool
) -> None:
    # Every slot taken by turns begun moments ago is a busy minute, not a hang: /healthz saying
    # not ready then would have an orchestrator restart a bot that is answering.
    from bot.agent import TurnLoad

    assert TurnLoad(slots=2, turning=turning, newest_turn_seconds=newest).stuck(300.0) is stuck


def test_the_newest_turn_is_timed_from_the_last_to_take_a_slot(monkeypatch) -> None:
    # The slots are stuck when even the latest turn to take one has held it long: timed from the
    # first, a bot busy for minutes with turns ending and beginning would look hung to /healthz.
    import types

    from bot import metrics

    now = [1000.0]
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    turning = metrics.Waiting()
    turning.enter("first")
    now[0] += 600
    turning.enter("latest")
    now[0] += 5
    assert turning.newest_seconds() == 5
    turning.leave("latest")
    assert turning.newest_seconds() == 605
