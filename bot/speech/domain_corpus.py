"""The sentences the domain language model is built from.

pocketsphinx's general English model is poor at short game-support questions; a small model of
what players actually ask (the phrasings the four tools serve, the manuals' titles and key
terms, conversational openers) recognises them far better. The evaluation set's held-out
questions are deliberately not taken from here.
"""

from __future__ import annotations

import itertools
import random
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
    "thanks for your help",
    "thank you very much",
    "cheers",
    "that is all thanks",
    "what can you do",
    "what can you help me with",
    "how can you help me",
    "who are you",
    "help",
    "goodbye",
    "goodbye for now",
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
    "what are the minimum specs",
    "how do i get my money back",
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

# Frames × synonyms: the many ways players name the same thing.
STATS_FRAMES = [
    "what is my {x}",
    "what's my {x}",
    "tell me my {x}",
    "read me my {x}",
    "show me my {x}",
    "give me my {x}",
    "can you tell me my {x}",
    "i'd like to know my {x}",
    "and my {x}",
    "what about my {x}",
    "check my {x}",
    "what's my current {x}",
    "what is my current {x}",
]
STATS_THINGS = [
    "points",
    "total points",
    "points total",
    "score",
    "rank",
    "ranking",
    "position",
    "standing",
    "stats",
    "player stats",
    "statistics",
    "achievements",
    "trophies",
    "badges",
    "awards",
    "winnings",
    "cash winnings",
    "summary",
    "game summary",
    "record",
    "profile",
    "level",
]
STATS_EXTRA = (
    [
        f"how many {x} have i {y}"
        for x in ("points", "games", "wins", "matches", "achievements", "trophies", "badges")
        for y in ("got", "earned", "played", "won", "unlocked")
    ]
    + [f"how much {x} have i won{t}" for x in ("cash", "money") for t in ("", " so far", " this season")]
    + [
        f"have i {v} any {x}"
        for v in ("unlocked", "earned", "got")
        for x in ("achievements", "trophies", "badges")
    ]
    + [f"how am i doing{t}" for t in (" right now", " this season", " lately", " so far")]
    + [f"am i doing well{t}" for t in ("", " this season", " lately")]
    + [
        f"how many {g}games did i play"
        for g in ("", "poker ", "trivia ", "racing ", "battle royale ", "ranked ")
    ]
)

PROBLEM_SUBJECTS = [
    "my wallet",
    "my balance",
    "my wallet balance",
    "my account balance",
    "my reward points",
    "my season rewards",
    "my battle pass rewards",
    "my match history",
    "my usage history",
    "my play history",
    "my credits",
    "my gems",
    "my payment",
    "my refund",
    "my points",
]
PROBLEMS = [
    "is wrong",
    "is missing",
    "are missing",
    "is not correct",
    "never arrived",
    "did not update",
    "disappeared",
    "was not added",
    "is empty",
    "does not add up",
]
COMPLAINT_FRAMES = [
    "i want to complain about {x}",
    "i'd like to complain about {x}",
    "i want to report a problem with {x}",
    "i want to raise a grievance about {x}",
    "please file a complaint about {x}",
    "i have a problem with {x}",
    "open a ticket about {x}",
]
COMPLAINT_TOPICS = [
    "my wallet",
    "the lag",
    "the servers",
    "the matchmaking",
    "a payment",
    "my account",
    "my reward points",
    "a moderator",
    "my match history",
    "a charge",
    "being kicked",
]
INCIDENTS = [
    "i got kicked out of the match",
    "i got disconnected in the final",
    "the game crashed during a match",
    "the game froze during a tournament",
    "i lost my points",
    "i lost my entry fee",
    "i was charged for nothing",
    "someone took money from my wallet",
    "i paid but got nothing",
    "the servers were lagging",
    "i was charged twice for the same item",
]
STATUS_FRAMES = [
    "any news on my {x}",
    "any update on my {x}",
    "what's the latest on my {x}",
    "what is the status of my {x}",
    "has anyone answered my {x}",
    "has support looked at my {x}",
    "is my {x} resolved",
    "is my {x} fixed yet",
    "is my {x} still open",
    "what happened with my {x}",
    "check on my {x}",
    "where are we with my {x}",
    "did anyone reply to my {x}",
]
STATUS_OBJECTS = ["ticket", "tickets", "complaint", "complaints", "grievance", "support ticket", "case"]
MANUAL_FRAMES_EXTRA = ["what should i do if {x}", "what do i do when {x}", "help {x}"]
MANUAL_CONDITIONS = [
    "my controller won't connect",
    "my controller keeps disconnecting",
    "the game keeps crashing",
    "the game freezes",
    "i forgot my password",
    "my account is locked",
    "i lost my phone",
    "my purchase didn't arrive",
    "my gems didn't arrive",
    "i see a cheater",
    "my stick drifts",
]
MANUAL_TOPIC_QUESTIONS = [
    "where do i {x}",
    "how long does it take to {x}",
    "is it possible to {x}",
    "what's the best way to {x}",
]

NUMBERS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()


# How players join two requests in one note ("what's my score and is my ticket done").
JOINED_BY = ["and", "and also", "oh and", "also", "plus", "and then", "and another thing"]
TWO_REQUESTS = 600  # sentences of two requests each: about a tenth of the corpus


def two_requests(groups: list[list[str]], count: int, seed: int = 18) -> list[str]:
    """`count` notes asking two things, each from a different group, joined as players join them;
    the same every build, so the language model is too."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        first, second = rng.sample(groups, 2)
        out.append(f"{rng.choice(first)} {rng.choice(JOINED_BY)} {rng.choice(second)}")
    return out


def domain_sentences(manuals_dir: Path) -> list[str]:
    """Every sentence of the corpus, lower case, words only."""
    base = STATS + STATUS + GRIEVANCE + SMALLTALK + MANUAL_FACTS
    manual_questions = [q.format(x=t) for q, t in itertools.product(MANUAL_QUESTIONS, MANUAL_TASKS)]
    base += manual_questions
    base += [f"what is the status of ticket {n}" for n in NUMBERS]
    base += [f.format(x=x) for f in STATS_FRAMES for x in STATS_THINGS] + STATS_EXTRA
    base += [f"{x} {p}" for x in PROBLEM_SUBJECTS for p in PROBLEMS]
    base += [f.format(x=x) for f in COMPLAINT_FRAMES for x in COMPLAINT_TOPICS] + INCIDENTS
    base += [f.format(x=x) for f in STATUS_FRAMES for x in STATUS_OBJECTS]
    base += [f.format(x=x) for f in MANUAL_FRAMES_EXTRA for x in MANUAL_CONDITIONS]
    base += [f.format(x=x) for f in MANUAL_TOPIC_QUESTIONS for x in MANUAL_TASKS]
    sentences = [f"{o} {s}".strip() for o, s in itertools.product(OPENERS[:4], base)]
    sentences += [f"{o} {s}".strip() for o, s in itertools.product(OPENERS[4:], base[::3])]
    sentences += two_requests([STATS, STATUS, GRIEVANCE, manual_questions], TWO_REQUESTS)
    from bot.speech.phrasings import load as load_phrasings

    sentences += [text for text, _ in load_phrasings()]
    for chunk in chunk_manuals(manuals_dir):
        sentences.append(normalise(chunk.title.replace(":", " ")))
        sentences += [normalise(s) for s in re.split(r"[.!?]", chunk.text) if len(s.split()) >= 3]
    return [s for s in sentences if s]


_NUMBER_WORDS = {str(i): w for i, w in enumerate(["zero", *NUMBERS], start=0)}


def normalise(text: str, keep_numbers: bool = False) -> str:
    """Lower case words; numbers up to fifteen spelt out. Larger numbers are dropped from the
    language model's sentences (it has no words for them) and kept, as digits, in what Whisper
    heard: it writes a ticket as "GRV-40", and the router reads the key from the digits."""
    text = text.lower().replace("-", " ").replace("’", "'")
    words = re.findall(r"[a-z']+|\d+", text)
    return " ".join(
        _NUMBER_WORDS.get(w, w) for w in words if keep_numbers or not w.isdigit() or w in _NUMBER_WORDS
    )
