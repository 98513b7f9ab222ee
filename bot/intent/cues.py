"""The intent router's cue data: which words point to which intent, and how strongly.

Kept apart from the router's logic (bot/intent/router.py) so the vocabulary can be read, reviewed
and tuned as data, and a change to it shows as a change of words rather than of code. Pure data:
no imports from the rest of voxdesk.
"""

from __future__ import annotations

import re

# The intents: the four tools by their names, the kinds of small talk, and "unsure" (ask again).
STATS = "get_player_stats"
MANUALS = "search_manuals"
REGISTER = "register_grievance"
STATUS = "get_grievance_status"
GREETING, THANKS, CAPABILITIES, GOODBYE = "greeting", "thanks", "capabilities", "goodbye"
UNSURE = "unsure"
TOOLS = (STATS, MANUALS, REGISTER, STATUS)
SMALLTALK = (GREETING, THANKS, CAPABILITIES, GOODBYE)


# Cue words and their weights per intent. Multi-word cues count when all their words appear in
# order; single words match fuzzily.
CUES: dict[str, dict[str, float]] = {
    STATS: {
        "points": 2.0,
        "point": 1.5,
        "score": 2.0,
        "stats": 2.5,
        "statistics": 2.5,
        "rank": 2.5,
        "ranking": 2.5,
        "leaderboard": 3.0,
        "achievements": 3.0,
        "achievement": 3.0,
        "trophies": 2.5,
        "badges": 2.0,
        "how many games": 2.5,
        "games have i played": 2.5,
        "won": 1.0,
        "win": 0.8,
        "cash": 1.0,
        "how am i doing": 3.0,
        "my summary": 2.5,
        "player summary": 3.0,
        "my total": 1.5,
        "my record": 1.5,
        "earned": 1.0,
        "how many points": 1.5,
        "my profile": 1.5,
        "how much cash": 2.0,
        "how much money": 2.0,
        "total": 1.5,
        "ranked": 2.5,
        "rankings": 2.5,
        "standing": 2.0,
        "summary": 2.0,
        "my games": 1.5,
        "unlocked": 1.5,
        "awards": 2.0,
        "winnings": 2.0,
        "place": 1.0,
        "what's my": 1.0,  # the frame of most stats questions; its noun is often misheard
        "what is my": 1.0,
        "have i played": 2.0,
        "did i play": 2.0,
        "how well": 2.0,
        "top ten": 2.0,
        "lately": 1.5,
        "doing well": 2.0,
    },
    MANUALS: {
        "how do i": 2.0,
        "how can i": 2.0,
        "how to": 1.5,
        "how does": 1.5,
        "how long": 1.0,
        "what is the": 0.3,
        "can i": 0.8,
        "can you tell me how": 1.5,
        "what are the": 0.6,
        "pair": 2.5,
        "controller": 2.5,
        "bluetooth": 2.5,
        "drift": 2.0,
        "password": 2.5,
        "email": 1.5,
        "locked": 1.5,
        "sign in": 1.5,
        "two factor": 3.0,
        "authentication": 3.0,
        "authenticator": 3.0,
        "backup codes": 3.0,
        "refund": 2.0,
        "money back": 2.0,
        "requirements": 3.0,
        "specs": 2.5,
        "graphics card": 2.5,
        "run on": 1.5,
        "playstation": 2.0,
        "xbox": 2.0,
        "crash": 1.5,
        "crashing": 1.5,
        "freezes": 1.5,
        "freezing": 1.5,
        "drivers": 2.0,
        "parental": 3.0,
        "kid": 2.0,
        "child": 2.0,
        "play time": 2.0,
        "spending limit": 2.5,
        "battle pass": 2.0,
        "season": 1.2,
        "tier": 1.5,
        "tiers": 1.5,
        "cheater": 1.5,
        "cheating": 1.5,
        "report a player": 2.0,
        "report a cheater": 2.0,
        "restore purchases": 2.5,
        "policy": 2.0,
        "work": 0.5,
        "works": 0.5,
        "never arrived": 1.0,
        "didn't arrive": 1.0,
        "verify": 1.5,
        "files": 0.8,
        "hacker": 1.5,
        "stick": 2.0,
        "account": 1.0,
        "phone": 1.5,
        "laptop": 2.0,
        "computer": 1.5,
        "pc": 1.5,
        "end of the season": 2.0,
        "what should i do": 1.5,
        "what do i do": 1.5,
        "purchases": 1.5,
        "where do i": 1.5,
        "report a": 1.0,
        "best way": 1.5,
        "level up": 1.5,
        "graphics": 2.0,
        "minimum": 2.0,
        "startup": 1.5,
    },
    REGISTER: {
        "complain": 3.5,
        "complaint": 3.0,
        "grievance": 3.0,
        "file a": 1.5,
        "open a ticket": 3.5,
        "new ticket": 3.0,
        "raise": 1.5,
        "report a problem": 3.5,
        "problem with": 2.0,
        "charged": 3.0,
        "twice": 1.0,
        "missing": 1.5,
        "never showed": 2.0,
        "didn't get": 1.5,
        "did not get": 1.5,
        "never got": 2.0,
        "lost my": 2.0,
        "kicking me": 3.0,
        "kicked": 2.5,
        "disconnected": 2.5,
        "lagging": 2.5,
        "lag": 2.0,
        "wrong": 1.5,
        "not right": 1.5,
        "unfair": 2.0,
        "broken": 1.5,
        "scam": 2.5,
        "stolen": 2.5,
        "not working": 1.5,
        "wallet": 1.0,
        "my money": 1.5,
        "i was": 0.5,
        "keeps": 1.0,
        "reward points": 2.5,
        "are missing": 2.0,
        "is missing": 2.0,
        "is wrong": 2.0,
        "never arrived": 1.5,
        "open a": 2.0,
        "shows games": 2.0,
        "i never played": 2.0,
        "took money": 3.0,
        "not correct": 2.0,
        "rewards never": 2.0,
        "match history": 1.5,
        "my payment": 1.5,
        "rewards": 1.5,
        "showed up": 1.5,
        "is not": 1.0,
        "usage history": 1.5,
        "kicked out": 1.0,
        "entry": 1.0,
        "want to report": 3.0,
        "need to report": 3.0,
        "like to report": 3.0,
        "report this": 2.5,
        "report that": 2.5,
        "log this": 2.5,
        "harassment": 2.0,
        "bug": 1.0,
    },
    STATUS: {
        "status": 3.5,
        "update on": 3.0,
        "any update": 3.0,
        "any news": 3.0,
        "my ticket": 2.5,
        "my tickets": 3.0,
        "ticket": 1.0,
        "tickets": 1.5,
        # "my complaint" names one already filed; filing one is "complain", "file a", "open a"
        "my complaint": 4.0,
        "my complaints": 4.0,
        "my grievance": 4.0,
        "where are we": 2.0,
        "resolved": 2.5,
        "fixed yet": 2.0,
        "been fixed": 2.0,
        "what happened to": 2.5,
        "check on": 2.0,
        "list my": 2.5,
        "open tickets": 2.5,
        "support answer": 2.0,
        "heard back": 2.5,
        "where is my": 1.5,
        "g r v": 3.0,
        "grv": 3.0,
        "latest on": 2.5,
        "replied": 2.5,
        "looked at": 2.0,
        "still open": 2.5,
        "check on my": 2.0,
    },
    GREETING: {
        "hello": 3.0,
        "hi": 2.5,
        "hey": 2.0,
        "good morning": 3.0,
        "morning": 2.0,
        "evening": 2.0,
        "good evening": 3.0,
        "afternoon": 2.0,
        "good afternoon": 3.0,
        "how are you": 2.5,
        "howdy": 3.0,
        "greetings": 3.0,
        "sup": 2.0,
        "yo": 2.0,
        "anyone there": 3.0,
        "anybody there": 3.0,
    },
    THANKS: {
        "thank": 3.5,
        "thanks": 3.5,
        "cheers": 3.0,
        "appreciate": 3.0,
        "appreciated": 3.0,
        "that's all": 2.0,
        "thx": 3.5,
    },
    CAPABILITIES: {
        "what can you do": 4.0,
        "what can you help": 4.0,
        "how can you help": 4.0,
        "who are you": 4.0,
        "what are you": 4.0,
        "what you are": 3.0,
        "help me with": 2.0,
        "what do you do": 4.0,
        "what can you": 3.0,
        "how can you": 3.0,
        "able to do": 3.0,
        "ask you": 2.5,
        "how does this work": 6.0,  # outweighs the manuals' "how do": it asks about the bot
        "what do i say": 3.0,
    },
    GOODBYE: {
        "goodbye": 4.0,
        "bye": 3.5,
        "see you": 3.0,
        "take care": 3.0,
        "good night": 3.0,
        "goodnight": 3.5,
    },
}

# A grievance's category, from the words of the complaint.
CATEGORY_CUES: dict[str, dict[str, float]] = {
    "wallet": {
        "wallet": 3,
        "charged": 3,
        "money": 2,
        "payment": 2.5,
        "paid": 2,
        "credits": 2,
        "gems": 2,
        "balance": 2.5,
        "card": 1.5,
        "refund": 2,
        "bought": 1.5,
        "purchase": 1.5,
        "top up": 2,
        "dollars": 2,
    },
    "reward_points": {
        "reward": 3,
        "rewards": 3,
        "reward points": 4,
        "battle pass": 2.5,
        "season": 1.5,
        "tier": 1.5,
        "bonus": 2,
    },
    "gaming_experience": {
        "lag": 3,
        "lagging": 3,
        "kicked": 3,
        "kicking": 3,
        "disconnected": 3,
        "crash": 2.5,
        "crashed": 2.5,
        "server": 2.5,
        "servers": 2.5,
        "match": 1,
        "matchmaking": 3,
        "cheater": 2.5,
        "cheating": 2.5,
        "bug": 2.5,
        "glitch": 2.5,
        "frozen": 2,
        "freezes": 2,
        "moderator": 1.5,
        "toxic": 2.5,
    },
    "usage_history": {
        "history": 3.5,
        "usage": 3,
        "records": 2,
        "record": 1.5,
        "missing games": 2.5,
        "play history": 4,
        "match history": 4,
        "log": 1.5,
    },
}

# Ticket numbers as players say them ("g r v twenty one").
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}

# Said before the real words ("um my points are missing"); the sentence is judged without them.
OPENING_FILLERS = frozenset(
    {"um", "uh", "so", "okay", "ok", "well", "hi", "hey", "hello", "yo", "sup", "greetings"}
)
# Words that carry no request on their own: what the recogniser makes of a hum, a cough or noise
# ("a the a a a"). A transcript of nothing else, matching no cue ("who are you" does), is never
# acted on without a conversation to lean on, however its words happen to tilt the word model.
FUNCTION_WORDS = frozenset(
    "a an the and or but of to in on at for from with by it its is was be been are am i me my "
    "you your we our he she they them this that there here these those so as if then do does did "
    "about just like not um uh er ah oh eh hm hmm mm okay ok well yeah what how who why when where "
    "which".split()
)
# How a follow-up to the previous turn starts ("and my achievements?").
FOLLOW_UP = ("and", "what about", "how about", "also", "what else", "and what about")
# A ticket named by pronoun ("what's the status of it?"), meaning the one just filed.
PRONOUN_TICKET = re.compile(r"\b(it|that|that one|that ticket|this ticket|the ticket)\b")
# "my complaint" / "the complaint i filed" is one that already exists: asking about it is a status
# check, unless a word of filing now says otherwise.
EXISTING_TICKET = re.compile(
    r"\bmy (\w+ )?(complaints?|grievances?|tickets?|case)\b"
    r"|\b(complaints?|grievances?|tickets?|reports?|case) (that )?i('ve| have)? ?"
    r"(filed|sent|made|submitted|opened|raised|lodged|logged|put)\b"
)
FILING_NOW = re.compile(r"\b(file|make|open|raise|new)\b")
# A question about a problem ("how do I get a refund") is for the manuals; a statement of one
# ("I was charged twice", "my rewards never arrived") is a grievance.
QUESTION_STARTS = ("how ", "what ", "can ", "where ", "when ", "does ", "is there", "why ", "which ")
STATEMENT_STARTS = ("my ", "i ", "someone ", "somebody ", "the ")
# Words that ask how something stands: no new complaint.
STATUS_ASKED = frozenset(("status", "update"))
# How "GRV" comes out of a recogniser: letter by letter, run together, or with its last letter
# heard as a b ("grb three", "g rb 52": one in five keys on the seen neural splits).
KEY_SPELLINGS = ("g r v", "g r b", "g rv", "g rb", "gr v", "gr b", "grv", "grb")
# "the ticket i sent two weeks ago": a number that counts time is no ticket's number.
TIME_WORDS = frozenset(
    "second seconds minute minutes hour hours day days week weeks month months year years times".split()
)
# A ticket the player filed before: "the complaint i made", "i sent a report", "a while back i
# reported", "i make a report one week ago". Players who tell of one are asking after it.
_TICKET_NOUN = r"(complaints?|reports?|tickets?|grievances?)"
_FILED = r"(made|sent|filed|submitted|opened|raised|lodged|put in|reported)"
_EARLIER = (
    r"(ago|(days?|weeks?|months?|years?|while) back|the other day|last (week|month|time|night|season)"
    r"|yesterday|earlier)"
)
_I_HAVE = r"i('ve| have| had)?( already)?"
PAST_FILING = re.compile(
    rf"\b{_TICKET_NOUN}( (that|which))? {_I_HAVE} {_FILED}\b"
    rf"|\b{_I_HAVE} {_FILED}\b( \w+){{0,3}} {_TICKET_NOUN}\b"
    rf"|\b{_I_HAVE} reported\b"
    r"|\bi did (make|send|file|submit|open|raise|lodge|report|put in)\b"
    rf"|\b(make|made|send|sent|file|filed)( \w+){{0,2}} {_TICKET_NOUN}( \w+){{0,3}} {_EARLIER}\b"
    rf"|\b{_EARLIER}( \w+){{0,3}} i (make|made|send|sent|file|filed|report|reported)\b"
)
# A request to file one now: "report that guy", "i want to make a complaint", "i've a new one".
NEW_FILING = re.compile(
    # A verb asking now: not the noun after an article ("i made a report a week ago"), nor a
    # filing told ("i did report him").
    r"(?<!\ba )(?<!\bthe )(?<!\bmy )(?<!\bthat )(?<!\bthis )(?<!\bdid )"
    r"\b(report|file|log|open|raise|lodge|submit|register|record)"
    r" (it|this|that|him|her|them|the|a|an|another|my)\b"
    r"|\b(file|log|open|raise) one\b"
    r"|\b(want|like|need|have|going) to (report|complain|file|make|open|log|raise)\b"
    r"|\b(please|can you|could you) (report|file|log|open|make|write|record|register)\b"
    r"|\bwrite (him|her|them|it) up\b"
    r"|\b(new|another) (one|complaint|report|ticket|grievance|problem|issue)\b"
)

# Where a note that asks several things moves on to its next request ("what's my score, and is
# my ticket done?"), longest first: the words are dropped and a new part starts after them.
JOINERS = (
    "and another thing",
    "one more thing",
    "another thing",
    "oh yeah and",
    "and also",
    "and then",
    "but also",
    "as well as",
    "apart from that",
    "other than that",
    "oh and",
    "anyway",
    "also",
    "plus",
    "and",
    "but",
)
# The joiners that add a request ("...and also can you check ticket forty"), unlike "and", "but"
# and "anyway", which as often go on telling the same story: a long note may ask a second thing
# after one of these.
ADDING_JOINERS = tuple(j for j in JOINERS if j not in ("and", "but", "anyway"))
# Where a new request may start without a joiner ("how many points do i have how do i change my
# name": the recogniser hears no full stops). Question words and asks only: a cut before "my" or
# "is" would split one request in two ("is there a way to hide my online status").
OPENERS = (
    "how",
    "what",
    "what's",
    "whats",
    "where do",
    "where can",
    "where is",
    "where are",
    "where's",
    "when do",
    "when does",
    "when is",
    "when will",
    "why do",
    "why does",
    "why is",
    "why can't",
    "which",
    "any",
    "did",
    "i want",
    "i'd like",
    "i need",
    "show me",
    "tell me",
    "please",
    "i wanna",
    "can you",
    "could you",
    "i was wondering",
    "i'm wondering",
)
# Sign-offs and apologies end what came before: "...in the campaign let me know thanks" is a
# question, then thanks. A part they start is no request of its own.
SIGN_OFFS = ("let me know", "thanks", "thank you", "cheers", "that's all", "sorry")
# How a request of its own starts, within its first few words: "...and lost all my ranked points"
# or "the leaderboard has hackers, please report them" tell one complaint, not two requests.
REQUEST_STARTS = (
    *OPENERS,
    *"is are can could do does has have my check i'd wanna curious".split(),
    # Asked as an order: "...and tell me how ticket forty is going", "...and then list my tickets".
    *"tell give list show open file put make raise log lodge submit register report".split(),
)
# Words of loss: points that were "lost", "taken" or "reset" are part of a complaint.
LOSS_WORDS = frozenset(
    "lost lose losing loses missing gone disappeared vanished stole stolen took taken ate reset "
    "wiped dropped deducted removed".split()
)
# Words that ask for a ticket. Without one, a problem told before a how-to question ("my game
# keeps freezing, what should i do?") is the question's context, not a grievance to file.
FILING_WORDS = frozenset(
    "complain complaint complaints report reporting grievance file filing log ticket refund".split()
)
