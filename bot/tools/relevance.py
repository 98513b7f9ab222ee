"""Whether a manual passage answers a question: one rule for every manuals backend.

A ranker (BM25 locally, BM25 or the semantic reranker on Azure) ranks a passage that shares one
everyday word with the question ("change" of "how do I change my Minecraft skin", "than" of a
misheard "final mass in l than reading") above nothing at all, so an off-topic question would be
answered from a random manual. A passage answers with two of the question's terms, or one in its
manual's title ("refund" in Refunds), or one when the manuals use every word of the question: a
word they never use ("minecraft") says the question is about something else.

Which terms a passage holds is decided here, with the Porter stemmer both indexes use (SQLite's
`porter` tokenizer locally, Lucene's English analyzer on Azure), so "controler" still finds
"controller" and both backends keep and drop the same passages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

MIN_TERMS = 2
# Candidates read past `top`, so the passages left out leave room for the next ones that answer.
CANDIDATES_PER_RESULT = 4
_MARK = "\x02"  # highlight()'s marker for a matched word; never in a manual's text


@dataclass(frozen=True)
class Evidence:
    matched: frozenset[str]  # the question's terms the passage holds
    in_manual_title: bool  # one of them is in the manual's own title

    def answers(self, all_known: bool) -> bool:
        found = len(self.matched)
        return found >= MIN_TERMS or self.in_manual_title or (found == 1 and all_known)


def evidence(terms: Sequence[str], passages: Sequence[tuple[str, str]]) -> list[Evidence]:
    """For each (title, text), which of `terms` it holds, stemmed as the indexes stem them."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE p USING fts5(title, text, tokenize = 'porter unicode61')")
        db.executemany(
            "INSERT INTO p (rowid, title, text) VALUES (?, ?, ?)", [(i, *p) for i, p in enumerate(passages)]
        )
        matched: list[set[str]] = [set() for _ in passages]
        in_manual_title = [False] * len(passages)
        for term in terms:
            quoted = '"' + term.replace('"', '""') + '"'
            rows = db.execute("SELECT rowid, highlight(p, 0, ?, '') FROM p WHERE p MATCH ?", (_MARK, quoted))
            for rowid, title in rows:
                matched[rowid].add(term)
                # A passage's title is "<manual title>: <section heading>".
                if _MARK in title.split(": ", 1)[0]:
                    in_manual_title[rowid] = True
    finally:
        db.close()
    return [Evidence(frozenset(m), t) for m, t in zip(matched, in_manual_title, strict=True)]


async def all_known(
    terms: Sequence[str], found: Sequence[Evidence], known: Callable[[str], Awaitable[bool]]
) -> bool:
    """Whether the manuals use every word `answers` needs to know about, asking `known` (the
    backend's own index) only for the terms no candidate holds, and stopping at the first no."""
    for term in terms_to_look_up(terms, found):
        if not await known(term):
            return False
    return True


def terms_to_look_up(terms: Sequence[str], found: Sequence[Evidence]) -> list[str]:
    """The terms whose use anywhere in the manuals must be looked up before `answers` can say.

    Only a passage holding a single term, outside its manual's title, depends on it; and a term
    some candidate holds is known to be used already.
    """
    if not any(len(e.matched) == 1 and not e.in_manual_title for e in found):
        return []
    held = set().union(*(e.matched for e in found))
    return [t for t in terms if t not in held]
