import sqlite3
import time

from bot import conversations
from bot.conversations import ConversationStore
from bot.engines.base import PastTurn

from .conftest import residue


def turn(i: int, at: float | None = None) -> PastTurn:
    return PastTurn(
        user_text=f"question {i}",
        reply_text=f"answer {i}",
        tool_results=[{"name": "get_player_stats", "arguments": {}, "result": {"total_points": i}}],
        audio_id=f"audio_{i}",
        audio_expires_at=int(time.time()) + 3600,
        at=at or time.time(),
    )


async def test_history_is_bounded_ordered_and_per_user(tmp_path) -> None:
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=3, idle_minutes=30)
    for i in range(5):
        await store.append("u1", turn(i))
    await store.append("u2", turn(99))
    history = await store.history("u1")
    assert [t.user_text for t in history] == ["question 2", "question 3", "question 4"]
    assert history[-1].tool_results[0]["result"] == {"total_points": 4}
    assert [t.user_text for t in await store.history("u2")] == ["question 99"]
    await store.aclose()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM turns WHERE user_id='u1'").fetchone()[0] == 3


async def test_a_tool_result_in_another_alphabet_counts_its_letters_not_their_escapes(tmp_path) -> None:
    # A manual in Cyrillic, as JSON's \\u escapes, would count six characters a letter: three
    # passages of one would push every earlier turn out of the history.
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=8, idle_minutes=30)
    cyrillic = turn(1)
    letters = conversations.MAX_HISTORY_CHARS // 3
    cyrillic.tool_results = [{"name": "search_manuals", "arguments": {}, "result": {"text": "ж" * letters}}]
    for past in (turn(0), cyrillic):
        await store.append("u1", past)
    assert [t.user_text for t in await store.history("u1")] == ["question 0", "question 1"]
    await store.aclose()


async def test_history_is_bounded_in_characters_so_one_huge_turn_is_not_sent_for_ever(tmp_path) -> None:
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=8, idle_minutes=30)
    huge = turn(1)
    huge.tool_results = [{"name": "search_manuals", "arguments": {"query": "x" * 50_000}, "result": {}}]
    for past in (turn(0), huge, turn(2), turn(3)):
        await store.append("u1", past)
    assert [t.user_text for t in await store.history("u1")] == ["question 2", "question 3"]
    assert conversations.MAX_HISTORY_CHARS == store.max_chars < 50_000
    for i in range(4, 12):  # ordinary turns all fit, up to max_turns
        await store.append("u1", turn(i))
    assert len(await store.history("u1")) == 8
    await store.aclose()


async def test_a_manual_in_another_alphabet_is_counted_in_characters_not_escapes(tmp_path) -> None:
    # Stored as JSON with \uXXXX escapes, three passages of a Russian or Japanese manual counted
    # six times their length: one search (27,000 "characters") was the whole budget, and a turn
    # with four passages left the player no history at all.
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=8, idle_minutes=30)
    passage = {"title": "Геймпад", "text": "Удерживайте кнопку синхронизации. " * 44, "source": "pad.md"}
    for i in range(3):
        past = turn(i)
        past.tool_results = [
            {"id": f"call_{i}", "name": "search_manuals", "arguments": {"query": "геймпад"},
             "result": {"passages": [passage] * 4}, "ok": True}
        ]  # fmt: skip
        await store.append("u1", past)
    history = await store.history("u1")
    assert [t.user_text for t in history] == ["question 0", "question 1", "question 2"]
    assert history[0].tool_results[0]["result"]["passages"][0] == passage
    await store.aclose()


async def test_eight_turns_that_each_read_three_of_the_longest_passages_all_fit(tmp_path) -> None:
    from bot.tools import MAX_PASSAGE_CHARS

    store = await ConversationStore.open(tmp_path / "c.db", max_turns=8, idle_minutes=30)
    passage = {"title": "Controller", "text": "Hold the sync button. " * 68, "source": "pad.md"}
    assert MAX_PASSAGE_CHARS - 100 < len(passage["text"]) <= MAX_PASSAGE_CHARS
    for i in range(8):
        past = turn(i)
        past.reply_text = "Hold the sync button for three seconds, then wait for the light. " * 4
        past.tool_results = [
            {"id": f"call_{i}", "name": "search_manuals", "arguments": {"query": "controller sync"},
             "result": {"passages": [passage] * 3}, "ok": True}
        ]  # fmt: skip
        await store.append("u1", past)
    assert len(await store.history("u1")) == 8
    await store.aclose()


async def test_history_survives_a_restart_and_reset_clears_one_user(tmp_path) -> None:
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=5, idle_minutes=30)
    await store.append("u1", turn(1))
    await store.append("u2", turn(2))
    await store.aclose()
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=5, idle_minutes=30)
    assert [t.audio_id for t in await store.history("u1")] == ["audio_1"]
    assert await store.reset("u1") == 1
    assert await store.history("u1") == []
    assert len(await store.history("u2")) == 1
    await store.aclose()


async def test_idle_conversation_starts_afresh(tmp_path) -> None:
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=5, idle_minutes=10)
    now = time.time()
    await store.append("u1", turn(1, at=now - 3600))
    assert await store.history("u1", now=now) == []
    await store.append("u1", turn(2, at=now - 60))
    assert [t.user_text for t in await store.history("u1", now=now)] == ["question 2"]
    await store.aclose()
    with sqlite3.connect(tmp_path / "c.db") as conn:  # the idle turn is gone, not just hidden
        assert conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 1


async def test_each_place_a_player_talks_in_has_its_own_conversation(tmp_path) -> None:
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=2, idle_minutes=10)
    now = time.time()
    await store.append("u1", turn(1, at=now - 3600), conversation="old channel")
    for i in range(2, 5):
        await store.append("u1", turn(i, at=now - 60 + i), conversation="dm")
    await store.append("u1", turn(9, at=now), conversation="guild channel")
    assert [t.user_text for t in await store.history("u1", "dm", now=now)] == ["question 3", "question 4"]
    assert [t.user_text for t in await store.history("u1", "guild channel", now=now)] == ["question 9"]
    assert await store.history("u1", now=now) == []
    assert await store.reset("u1") == 3  # forgetting covers every place; the idle one was gone
    await store.aclose()


async def test_a_turn_kept_since_a_time_lets_that_conversations_older_turns_go(tmp_path) -> None:
    # A turn asked without its conversation's oldest turns (too many tokens with them): they go,
    # in that place alone; a note answered again still replaces its first answer.
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=8, idle_minutes=10)
    now = time.time()
    for i in range(4):
        await store.append("u1", turn(i, at=now - 60 + i), conversation="dm", request_id=f"r{i}")
    await store.append("u1", turn(8, at=now - 30), conversation="channel")
    await store.append("u1", turn(3, at=now), conversation="dm", request_id="r3", since=now - 58)
    assert [t.user_text for t in await store.history("u1", "dm", now=now)] == ["question 2", "question 3"]
    assert [t.user_text for t in await store.history("u1", "channel", now=now)] == ["question 8"]
    await store.aclose()


async def test_the_turns_let_go_are_those_kept_before_even_with_the_clock_stepped_back(tmp_path) -> None:
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=8, idle_minutes=10)
    now = time.time()
    for i, at in enumerate([now - 60, now - 59, now - 70, now - 69]):  # stepped back 11 s after the second
        await store.append("u1", turn(i, at=at), conversation="dm")
    await store.append("u1", turn(4, at=now), conversation="dm", since=now - 59)
    kept = [t.user_text for t in await store.history("u1", "dm", now=now)]
    assert kept == ["question 1", "question 2", "question 3", "question 4"]
    await store.aclose()


async def test_a_database_from_before_places_keeps_its_turns(tmp_path) -> None:
    with sqlite3.connect(tmp_path / "c.db") as conn:
        conn.execute(
            "CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,"
            " at REAL NOT NULL, user_text TEXT, reply_text TEXT NOT NULL, tool_results TEXT NOT NULL"
            " DEFAULT '[]', audio_id TEXT, audio_expires_at INTEGER, engine TEXT NOT NULL DEFAULT '')"
        )
        conn.execute("INSERT INTO turns (user_id, at, reply_text) VALUES ('u1', ?, 'hello')", (time.time(),))
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=5, idle_minutes=10)
    assert [t.reply_text for t in await store.history("u1")] == ["hello"]
    await store.append("u1", turn(1), conversation="dm")
    assert len(await store.history("u1", "dm")) == 1
    await store.aclose()


async def test_no_column_can_hold_audio(tmp_path) -> None:
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=5, idle_minutes=10)
    await store.append("u1", turn(1))
    await store.aclose()
    with sqlite3.connect(tmp_path / "c.db") as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(turns)")]
        types = {r[2] for r in conn.execute("PRAGMA table_info(turns)")}
        rows = conn.execute("SELECT * FROM turns").fetchall()
    assert "BLOB" not in types
    assert not any(isinstance(v, bytes) for row in rows for v in row)
    assert set(columns) == {
        "id",
        "user_id",
        "at",
        "user_text",
        "reply_text",
        "tool_results",
        "audio_id",
        "audio_expires_at",
        "engine",
        "conversation",
        "request_id",
    }


def players_long_gone(db, players: int, turns: int, days_ago: float) -> None:
    """Players who each talked `turns` times in a DM and never came back, as earlier runs left them."""
    at = time.time() - days_ago * 24 * 3600
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO turns (user_id, conversation, at, user_text, reply_text)"
            " VALUES (?, 'dm', ?, 'hi', 'hello')",
            [(f"gone{p}", at + t) for p in range(players) for t in range(turns)],
        )


async def test_conversations_of_players_who_never_come_back_are_deleted_at_open_and_while_running(
    tmp_path,
) -> None:
    db = tmp_path / "c.db"
    store = await ConversationStore.open(db, max_turns=8, idle_minutes=30)
    await store.aclose()
    players_long_gone(db, players=500, turns=5, days_ago=90)
    store = await ConversationStore.open(db, max_turns=8, idle_minutes=30)  # a restart
    await store.append("u1", turn(1))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT user_id FROM turns").fetchall() == [("u1",)]
    players_long_gone(db, players=500, turns=5, days_ago=90)  # left by another process meanwhile
    await store.append("u2", turn(2, at=time.time() + 600))  # ten minutes on, another player talks
    assert [t.user_text for t in await store.history("u1")] == ["question 1"]  # idle for 10 of 30 min
    await store.aclose()
    with sqlite3.connect(db) as conn:
        assert sorted(conn.execute("SELECT user_id FROM turns").fetchall()) == [("u1",), ("u2",)]
        # One pass over the old turns through an index, not the whole table.
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + conversations.IDLE_TURNS, (0, 0))]
    assert plan and not any(step.startswith("SCAN") for step in plan), plan


async def test_players_sharing_a_channel_never_cut_or_keep_each_others_turns(tmp_path) -> None:
    db = tmp_path / "c.db"
    store = await ConversationStore.open(db, max_turns=2, idle_minutes=10)
    now = time.time()
    # Nova's turn in the channel went idle; Blaze talks there now, then Nova in her DM.
    await store.append("nova", turn(1, at=now - 3600), conversation="channel")
    await store.append("blaze", turn(2, at=now - 60), conversation="channel")
    await store.append("nova", turn(3, at=now - 50), conversation="dm")
    assert [t.user_text for t in await store.history("blaze", "channel", now=now)] == ["question 2"]
    # Turns of two players talking in one channel: each keeps their own newest, however many
    # the other has had since.
    await store.append("nova", turn(4, at=now - 40), conversation="channel")
    await store.append("blaze", turn(5, at=now - 30), conversation="channel")
    await store.append("nova", turn(6, at=now - 20), conversation="channel")
    assert [t.user_text for t in await store.history("nova", "channel", now=now)] == [
        "question 4",
        "question 6",
    ]
    assert [t.user_text for t in await store.history("blaze", "channel", now=now)] == [
        "question 2",
        "question 5",
    ]
    # Nova's channel turns go idle while Blaze still talks there: hers are deleted all the same.
    await store.append("blaze", turn(7, at=now + 500), conversation="channel")
    await store.prune(now=now + 600)
    await store.aclose()
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT user_id, user_text FROM turns ORDER BY id").fetchall()
    assert left == [("blaze", "question 5"), ("blaze", "question 7")]


async def test_a_clock_stepped_back_does_not_keep_idle_words_until_it_catches_up(tmp_path) -> None:
    # Pruned at open by a fast clock, then NTP sets it back an hour: the last prune looked an hour
    # in the future, and a silent player's words stayed that long past the idle limit.
    db = tmp_path / "c.db"
    store = await ConversationStore.open(db, max_turns=8, idle_minutes=30)
    stepped_back = time.time() - 3600
    await store.append("u1", turn(1, at=stepped_back - 31 * 60))
    await store.housekeeping(stepped_back)
    await store.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0


async def test_a_forget_holds_in_another_process_and_after_a_restart(tmp_path) -> None:
    # The /forget's time was held in the memory of the process it reached: another bot on the
    # storage folder, or this one after a restart, kept the turn of a note sent before it.
    db = tmp_path / "c.db"
    here = await ConversationStore.open(db, max_turns=5, idle_minutes=30)
    there = await ConversationStore.open(db, max_turns=5, idle_minutes=30)
    forgot = time.time()
    await here.append("u1", turn(1), "dm", sent_at=forgot - 5)
    assert await here.reset("u1", sent_at=forgot) == 1
    assert await there.append("u1", turn(2), "dm", sent_at=forgot - 1) is False
    assert await there.append("u1", turn(3), "dm", sent_at=forgot) is False  # in its millisecond
    assert await there.history("u1", "dm") == []
    await here.aclose()
    here = await ConversationStore.open(db, max_turns=5, idle_minutes=30)  # a restart
    assert await here.append("u1", turn(4), "channel", sent_at=forgot - 1) is False
    assert await here.append("u1", turn(5), "dm", sent_at=forgot + 1) is True
    assert await here.append("u2", turn(6), "dm", sent_at=forgot - 1) is True  # another player
    assert [t.user_text for t in await there.history("u1", "dm")] == ["question 5"]
    await here.aclose()
    await there.aclose()


async def test_a_forget_is_one_row_a_player_gone_with_the_idle_limit_and_no_turn(tmp_path) -> None:
    db = tmp_path / "c.db"
    store = await ConversationStore.open(db, max_turns=5, idle_minutes=10)
    now = time.time()
    assert await store.reset("u1", sent_at=now - 10) == 0  # nothing to forget: no turn counted
    assert await store.reset("u1", sent_at=now - 20) == 0  # an older /forget, answered late
    assert await store.append("u1", turn(1), "dm", sent_at=now - 11) is False  # the latest holds
    assert await store.reset("u2", sent_at=now) == 0
    with sqlite3.connect(db) as conn:
        marks = conn.execute("SELECT user_id, at FROM turns ORDER BY user_id").fetchall()
    assert marks == [("u1", now - 10), ("u2", now)]
    await store.prune(now=now + 595)  # u1's /forget idle for 10 min and 5 s, u2's not yet
    await store.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT user_id FROM turns").fetchall() == [("u2",)]


async def test_a_forget_outlives_the_idle_limit_while_a_note_sent_before_it_can_be_answered(tmp_path) -> None:
    # Pruned at the idle limit (5 min here), the /forget's row was gone while a restart's catch-up
    # (30 min back) could still answer a note sent before it, whose turn was then kept; and any
    # turn of the player's after the idle limit deleted the row with their idle conversations.
    db = tmp_path / "c.db"
    store = await ConversationStore.open(db, max_turns=5, idle_minutes=5, answered_minutes=30)
    forgot = time.time()
    await store.reset("u1", sent_at=forgot)
    await store.aclose()
    store = await ConversationStore.open(db, max_turns=5, idle_minutes=5, answered_minutes=30)
    await store.prune(now=forgot + 6 * 60)  # a restart 6 minutes on
    later = forgot + 7 * 60
    assert await store.append("u1", turn(1, at=later), "channel", sent_at=later - 1) is True
    assert await store.append("u1", turn(2, at=later), "dm", sent_at=forgot - 1) is False
    assert await store.history("u1", "dm", now=later) == []
    # Kept for the catch-up's window and a margin for a note's wait, then pruned.
    await store.prune(now=forgot + (30 * 60 + conversations.ANSWER_MARGIN_SECONDS) - 1)
    assert await store.append("u1", turn(3, at=later), "dm", sent_at=forgot - 1) is False
    await store.prune(now=forgot + (30 * 60 + conversations.ANSWER_MARGIN_SECONDS) + 1)
    await store.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM turns WHERE conversation = '/forget'").fetchone()[0] == 0


async def test_a_running_bot_forgets_idle_words_as_often_as_an_idle_limit_shorter_than_its_pruning(
    tmp_path,
) -> None:
    # idle_minutes = 1 (a studio keeping players' words as briefly as it can): pruned only every
    # PRUNE_EVERY_SECONDS, a quiet bot kept them five times as long.
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=8, idle_minutes=1)
    try:
        now = time.time()
        await store.append("u1", turn(1, at=now))
        await store.housekeeping(now)
        await store.housekeeping(now + 90)
        with sqlite3.connect(tmp_path / "c.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM turns").fetchone() == (0,)
    finally:
        await store.aclose()


async def test_forget_leaves_no_words_in_the_files_of_a_running_store(
    tmp_path, sqlite_without_secure_delete
) -> None:
    # /forget deleted the rows and left their words in the database's free space (where SQLite is
    # built without SQLITE_SECURE_DELETE: python.org's, uv's) and, while the bot ran, in its
    # write-ahead log's earlier frames, for `strings` or a backup made after it to find.
    store = await ConversationStore.open(tmp_path / "c.db", max_turns=5, idle_minutes=30)
    try:
        said = PastTurn(user_text="my zebracorn skin vanished", reply_text="Filed as GRV-3.")
        await store.append("u1", said, "dm")
        await store.append("u2", turn(2), "dm")
        assert residue(tmp_path, b"zebracorn") == ["c.db-wal"]
        assert await store.reset("u1", sent_at=time.time()) == 1
        assert residue(tmp_path, b"zebracorn") == []
        assert [t.user_text for t in await store.history("u2", "dm")] == ["question 2"]
    finally:
        await store.aclose()
    assert residue(tmp_path, b"zebracorn") == []
