"""The embedded backends: player stats on SQLite and manuals in an FTS5 index (BM25 ranking)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot import sentences as say
from bot.db import (
    naming,
    only_in_log,
    open_read_only,
    open_sqlite,
    read_only_uri,
    readable,
    refuse_newer,
)
from bot.logs import Outage
from bot.tools import stats_sql
from bot.tools.base import Passage, PlayerSummary, ToolError
from bot.tools.manual_chunks import Chunk
from bot.tools.relevance import CANDIDATES_PER_RESULT, all_known, evidence

log = logging.getLogger(__name__)


# The version of bot/data/sql/sqlite/schema.sql, which `init` applies and stamps: raised with each
# change to it, so an older voxdesk refuses a players.db it would misread (stats from tables or
# columns that mean something else now) or that its `init` would "migrate" back.
PLAYERS_SCHEMA_VERSION = 1


def has_players_table(path: Path) -> bool:
    """Whether the players database at `path` has its players table, read without writing to it:
    opened for stats, an empty file would be made a database in WAL mode, and `init` would no
    longer see it as the new one it is. A database a newer voxdesk wrote raises NewerSchema: its
    tables are not this version's to judge."""
    if not only_in_log(path) and path.stat().st_size == 0:
        return False
    with readable(path) as read:
        try:
            conn = sqlite3.connect(read_only_uri(read), uri=True)
        except sqlite3.Error as exc:
            raise naming(path, exc) from exc
        with contextlib.closing(conn):
            refuse_newer(conn, path, PLAYERS_SCHEMA_VERSION)
            try:
                found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'players'")
                return found.fetchone() is not None
            except sqlite3.Error as exc:
                raise naming(path, exc) from exc


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class SqliteStats:
    """StatsBackend over the embedded players database, running the shared SQL."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._ranking = stats_sql.Ranking()
        # Each player asking while queries fail is no news to the log.
        self._outage = Outage(log, "player stats: the database answers again", logging.ERROR, logging.INFO)

    @classmethod
    async def open(cls, path: Path | str, read_only: bool = False) -> SqliteStats:
        if read_only:
            conn = await open_read_only(path, PLAYERS_SCHEMA_VERSION)
        else:
            conn = await open_sqlite(path, version=PLAYERS_SCHEMA_VERSION)
        # The game's own data, perhaps loaded from a Latin-1 source: a name whose bytes are not
        # UTF-8 shows a U+FFFD where a strict read would fail that player's every look-up.
        conn.text_factory = _lenient_text
        return cls(conn)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        cursor = await self._conn.execute(sql, tuple(params))
        return list(await cursor.fetchall())

    async def player_summary(self, user_id: str) -> PlayerSummary | None:
        try:
            summary = await stats_sql.player_summary(self._fetch, user_id, self._ranking)
        except sqlite3.Error as exc:
            self._outage.failed(str(exc), "player stats query failed: %s", exc)
            raise ToolError(say.STATS_UNAVAILABLE) from None
        self._outage.answered()
        return summary

    async def check(self) -> str:
        (count,) = (await self._fetch(stats_sql.PLAYER_COUNT, ()))[0]
        for sql in stats_sql.COLUMNS_READ:
            await self._fetch(sql, ())
        return f"embedded player database: {count} players"

    async def aclose(self) -> None:
        await self._conn.close()


# Raised with each change to the schema or to what `FtsManuals.open` migrates: an older
# voxdesk then refuses the file instead of running on a schema it does not know.
FTS_SCHEMA_VERSION = 1
FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5(
    title, text, key UNINDEXED, source UNINDEXED, tokenize = 'porter unicode61'
);
"""

# Words that carry no meaning for a search; left in, they match every manual. "s", "t", "ll"...
# are what is left of "what's", "won't", "you'll" once the apostrophe splits them.
STOPWORDS = frozenset(
    "a an and are as at be but by can could do does did for from get got have has how i i'm im "
    "in is it its me my of on or please so that the their them there this to up was we what "
    "when where which who why will with would you your tell know want need help about if "
    "s t d ll m re ve".split()
) | frozenset(
    # Spanish and French ones: a player (or the model for one) may ask in those words, and the
    # manuals' English holds some of them as the indexes read them ("no"; "nos", stemmed "no";
    # "à", folded "a"), so one of them and one word on the subject made the two words in common
    # an off-topic question needs to be answered.
    # Words that are English ones too stay searchable ("son", "comment", "plus", "ton", "car",
    # "ai", "os"): dropping one would drop the only word of a question no manual uses ("how do I
    # change my car"), and its everyday word ("change") would answer it from an unrelated manual.
    "el los las lo una unos unas del al o u e y ni pero sino que qué por para con sin sobre entre "
    "hasta desde mi mis tu tus su sus nuestro nuestra nuestros nuestras yo él ella ellos ellas "
    "usted ustedes le les nos es está están estoy soy hay cómo como cuándo cuando dónde donde "
    "cuál cuáles quién porque no sí si muy más este esta esto estos estas ese esa eso "
    "la un de en se te "
    "une des du au aux ce cet cette ces je il elle nous vous ils elles mon ma mes ta tes sa ses "
    "notre votre vos leur leurs qui quoi quel quelle quels quelles où quand pourquoi ne pas "
    "mais ou et donc j l qu n c avez avons suis sommes êtes moi toi lui pour dans sur avec "
    "à par chez est sont".split()
)
TITLE_WEIGHT = 4.0  # a match in a section's title counts four times one in its text


def words(text: str) -> list[str]:
    """The words of `text`, lowercased: runs of Unicode letters, digits and combining marks, so
    "Pokémon", "Ñandú", "Łódź" or a Devanagari word stay whole, as both indexes' tokenizers keep
    them (SQLite's unicode61; Lucene's standard tokenizer, under en.lucene). Everything else
    (spaces, punctuation, every operator of FTS5's and Azure's query syntax) only separates them.

    NFC first: the manuals are composed text, and Azure's English analyzer does not compose or
    fold accents. Each character is lowercased on its own, as Lucene does: "İ" has no one-letter
    lowercase and stays, where Python's "i" + combining dot would match nothing on Azure.
    """
    found: list[str] = []
    word: list[str] = []
    for char in unicodedata.normalize("NFC", text) + " ":
        if unicodedata.category(char)[0] in "LNM":
            lower = char.lower()
            word.append(lower if len(lower) == 1 else char)
        elif word:
            found.append("".join(word))
            word = []
    return found


def query_terms(text: str) -> list[str]:
    """The meaningful words of a question, lowercased, each once: all any manuals backend is sent."""
    return list(dict.fromkeys(w for w in words(text) if w not in STOPWORDS))


def fts_phrase(term: str) -> str:
    """`term` as an FTS5 string: whatever it holds is searched for, never read as syntax."""
    return '"' + term.replace('"', '""') + '"'


def fts_query(text: str) -> str:
    """Free text → an FTS5 query of quoted terms joined by OR (BM25 ranks by how many match).

    Quoting every term means nothing a player says can be read as FTS5 syntax.
    """
    return " OR ".join(fts_phrase(w) for w in query_terms(text))


# SQLite's "database is locked" and "busy": another process writes, and waiting is the cure.
_LOCKED = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class FtsManuals:
    """ManualsBackend over a local SQLite FTS5 index of the manuals' sections."""

    def __init__(self, conn: aiosqlite.Connection, path: Path | str = "manuals index") -> None:
        self._conn = conn
        self._path = path
        # A damaged index fails every question until the operator rebuilds it: said once.
        self._outage = Outage(
            log, "manuals search: the local index answers again", logging.ERROR, logging.INFO
        )

    @classmethod
    async def open(cls, path: Path | str, read_only: bool = False) -> FtsManuals:
        if read_only:
            return cls(await open_read_only(path, FTS_SCHEMA_VERSION), path)
        return cls(await open_sqlite(path, FTS_SCHEMA, version=FTS_SCHEMA_VERSION), path)

    def _broken(self, exc: sqlite3.Error) -> str:
        """What went wrong, in which file, and what fixes it: the index holds nothing but what
        `init` builds from the manuals, and a damaged FTS5 table cannot even be emptied, so a new
        file is the cure."""
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in _LOCKED:
            return f"{self._path}: {exc}"
        return (
            f"{self._path}: {exc}: stop the bot, delete the file and run `python -m bot init` to rebuild"
            " it from the manuals"
        )

    async def rebuild(self, chunks: list[Chunk]) -> None:
        await self._conn.execute("DELETE FROM passages")
        await self._conn.executemany(
            "INSERT INTO passages (title, text, key, source) VALUES (?, ?, ?, ?)",
            [(c.title, c.text, c.key, c.source) for c in chunks],
        )
        await self._conn.commit()

    async def search(self, query: str, top: int) -> list[Passage]:
        try:
            passages = await self._search(query, top)
        except sqlite3.Error as exc:
            reason = self._broken(exc)
            self._outage.failed(reason, "manuals search failed: %s", reason)
            raise ToolError(say.MANUALS_UNAVAILABLE) from None
        self._outage.answered()
        return passages

    async def _search(self, query: str, top: int) -> list[Passage]:
        terms = query_terms(query)
        if not terms:
            return []
        cursor = await self._conn.execute(
            "SELECT rowid, title, text, source, bm25(passages, ?, 1.0) AS score FROM passages "
            "WHERE passages MATCH ? ORDER BY score LIMIT ?",
            (TITLE_WEIGHT, fts_query(query), top * CANDIDATES_PER_RESULT),
        )
        rows = list(await cursor.fetchall())
        found = evidence(terms, [(r["title"], r["text"]) for r in rows])
        every_known = await all_known(terms, found, self._known)
        # bm25() is lower-is-better; flip it so a higher score means a better passage.
        return [
            Passage(title=r["title"], text=r["text"], source=r["source"], score=-r["score"])
            for r, e in zip(rows, found, strict=True)
            if e.answers(every_known)
        ][:top]

    async def _known(self, term: str) -> bool:
        """Whether any manual uses the word."""
        cursor = await self._conn.execute(
            "SELECT 1 FROM passages WHERE passages MATCH ? LIMIT 1", (fts_phrase(term),)
        )
        return await cursor.fetchone() is not None

    async def check(self) -> str:
        try:
            cursor = await self._conn.execute("SELECT COUNT(*) FROM passages")
            (count,) = await cursor.fetchone()  # type: ignore[misc]
            # Counting reads no part of the full-text index a question's MATCH needs.
            await self._conn.execute("SELECT 1 FROM passages WHERE passages MATCH 'manual' LIMIT 1")
        except sqlite3.Error as exc:
            raise type(exc)(self._broken(exc)) from exc
        if not count:
            return "local manuals index is empty: run `python -m bot init`"
        return f"local manuals index: {count} passages"

    async def indexed(self) -> dict[str, list[tuple[str, str, str]]]:
        """Each manual's passages as the index holds them, (key, title, text) in their order, by
        the manual's file name: what `check` compares the manuals folder with."""
        cursor = await self._conn.execute("SELECT source, key, title, text FROM passages ORDER BY rowid")
        held: dict[str, list[tuple[str, str, str]]] = {}
        for source, key, title, text in await cursor.fetchall():
            held.setdefault(source, []).append((key, title, text))
        return held

    async def aclose(self) -> None:
        await self._conn.close()
