"""The sentences the domain language model is built from.

pocketsphinx's general English model is poor at short game-support questions; a small model of
what players actually ask (the phrasings the four tools serve, the manuals' titles and key
terms, conversational openers) recognises them far better. The evaluation set's held-out
questions are deliberately not taken from here.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from bot.tools.manual_chunks import chunk_manuals

OPENERS = ["", "hey", "hi", "hello", "okay", "so", "um", "excuse me", "hey there", "please"]

STATS = [
    "how many points do i have",
    "how many points have i got",
    "what are my points",
    "what is my score",
    "what is my total score",
    "what are my stats",
    "show me my stats",
    "tell me my stats",
    "what is my rank",
    "what rank am i",
    "where am i on the leaderboard",
    "what achievements do i have",
    "what are my achievements",
    "which achievements have i earned",
    "how many games have i played",
    "how much cash have i won",
    "how much money did i win",
    "how am i doing",
    "give me my player summary",
    "what about my achievements",
    "and my rank",
    "how many points did i earn in poker",
    "how did i do in racing",
    "my battle royale stats",
    "my trivia score",
]

STATUS = [
    "what is the status of my ticket",
    "what is the status of my complaint",
    "what is the status of my grievance",
    "any update on my ticket",
    "any news on my complaint",
    "check my tickets",
    "list my tickets",
    "show my open tickets",
    "what happened to my complaint",
    "is my ticket resolved",
    "has my issue been fixed",
    "what is the status of it",
    "what is the status of ticket g r v twelve",
    "status of ticket number fourteen",
    "where is my support ticket",
    "did support answer my ticket",
]

GRIEVANCE = [
    "i want to file a complaint",
    "i want to make a complaint",
    "i want to report a problem",
    "i want to raise a grievance",
    "please open a ticket",
    "open a support ticket",
    "file a ticket for me",
    "i was charged twice",
    "i was charged but got nothing",
    "my wallet balance is wrong",
    "my money is missing from my wallet",
    "the credits i bought never showed up in my wallet",
    "my payment went through but my wallet did not update",
    "my reward points are missing",
    "i did not get my reward points",
    "my battle pass rewards never arrived",
    "my season rewards are missing",
    "the game keeps kicking me out of matches",
    "the servers are lagging and i lost my match",
    "i keep getting disconnected",
    "the game crashed and i lost my points",
    "my match history is wrong",
    "my match history is missing games",
    "my usage history is not right",
    "my play history shows games i never played",
    "i want to complain about a moderator",
    "i have a problem with my account",
    "i want to complain about the lag",
    "complain about the matchmaking",
]

SMALLTALK = [
    "hello",
    "hi there",
    "good morning",
    "good evening",
    "hey how are you",
    "thank you",
    "thanks a lot",
    "thanks",
    "cheers",
    "that is all thanks",
    "what can you do",
    "what can you help me with",
    "how can you help me",
    "who are you",
    "help",
    "goodbye",
    "bye",
]

MANUAL_QUESTIONS = [
    "how do i {x}",
    "how can i {x}",
    "can you tell me how to {x}",
    "i need help to {x}",
]
MANUAL_TASKS = [
    "pair my controller",
    "connect my controller",
    "reset my controller",
    "fix stick drift",
    "reset my password",
    "change my password",
    "change my email",
    "unlock my account",
    "turn on two factor authentication",
    "set up two factor authentication",
    "use backup codes",
    "get a refund",
    "ask for a refund",
    "restore my purchases",
    "report a cheater",
    "report a player",
    "stop the game crashing",
    "fix the crashes",
    "set parental controls",
    "limit my kid's play time",
    "set a spending limit",
    "level up my battle pass",
    "earn reward points",
    "verify my game files",
]
MANUAL_FACTS = [
    "what are the system requirements",
    "what are the minimum requirements",
    "what are the recommended specs",
    "will the game run on my pc",
    "does it run on playstation",
    "how long does a season last",
    "how does the battle pass work",
    "when does the season end",
    "what is the refund policy",
    "how long does a refund take",
    "my purchase did not arrive",
    "i bought gems but they never arrived",
    "why does the game keep crashing",
    "the game freezes",
    "someone is cheating",
    "i lost my phone and can not sign in",
    "i forgot my password",
    "my account is locked",
    "my controller will not connect",
    "how do parental controls work",
]

NUMBERS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()


def domain_sentences(manuals_dir: Path) -> list[str]:
    """Every sentence of the corpus, lower case, words only."""
    base = STATS + STATUS + GRIEVANCE + SMALLTALK + MANUAL_FACTS
    base += [q.format(x=t) for q, t in itertools.product(MANUAL_QUESTIONS, MANUAL_TASKS)]
    base += [f"what is the status of ticket {n}" for n in NUMBERS]
    sentences = [f"{o} {s}".strip() for o, s in itertools.product(OPENERS[:4], base)]
    sentences += [f"{o} {s}".strip() for o, s in itertools.product(OPENERS[4:], base[::3])]
    for chunk in chunk_manuals(manuals_dir):
        sentences.append(normalise(chunk.title.replace(":", " ")))
        sentences += [normalise(s) for s in re.split(r"[.!?]", chunk.text) if len(s.split()) >= 3]
    return [s for s in sentences if s]


_NUMBER_WORDS = {str(i): w for i, w in enumerate(["zero", *NUMBERS], start=0)}


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ").replace("’", "'")
    words = re.findall(r"[a-z']+|\d+", text)
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words if not w.isdigit() or w in _NUMBER_WORDS)
