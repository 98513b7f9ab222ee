"""Every sentence the offline engine says to a player, in one place.

Kept apart from the code that picks and fills them so wording can be reviewed, changed or
translated without reading the engine's logic, and a change of wording shows as one. Templates
take named fields (`str.format`); the engine decides which to say.
"""

from __future__ import annotations

# ---- small talk and asking again -------------------------------------------------------------

GREETING = "Hi! Ask me about your points, the game guides, or your support tickets."
THANKS = "You're welcome. Good luck in your next match!"
CAPABILITIES = (
    "I can tell you your points, rank and achievements, answer questions from the game guides, "
    "file a complaint for you, and check on your tickets."
)
GOODBYE = "Bye for now. Good games!"
UNSURE = (
    "Sorry, I didn't catch that. Could you say it again in other words? You can ask about your "
    "points, the game guides, or your tickets."
)
NOT_CLEAR = (
    "Sorry, it's noisy where you are and I couldn't make that out. Could you say it again, a bit "
    "closer to the microphone?"
)

# ---- a tool's answer -------------------------------------------------------------------------

TOOL_ERROR = "Sorry, {reason}"  # the tool's own reason, first letter lowered

NO_PROFILE = (
    "I couldn't find a player profile linked to your Discord account. Ask a moderator to "
    "link it, then try again."
)
NO_ACHIEVEMENTS = "{player}, you have no achievements yet. Keep playing!"
ACHIEVEMENTS = "You have {count}: {names}."
STATS_TOTAL = "{player}, you have {points} points, and you're ranked {rank} of {players} players."
BEST_GAME = "Your best game is {game}, with {points} points from {games}."
CASH_WON = "You've won {cash:.2f} dollars in cash."
LATEST_ACHIEVEMENT = "Your latest achievement is {achievement}."

NOT_IN_GUIDES = "I couldn't find that in the game guides. Could you ask in other words?"
FROM_GUIDE = "From the guide on {title}: {passage}"

FILED = (
    "I've filed your {category} complaint. Your ticket number is {ticket_key}. "
    "Ask me about its status any time."
)

NO_TICKETS = "You don't have any support tickets."
TICKET_COUNT = "You have {count}."
TICKET_LINE = "{ticket_key}, your {category} complaint, is {status}, last updated {when}.{note}"
FROM_LOCAL_RECORD = " That's from our local record, because the ticket system is unreachable."
OLDER_TICKETS = "And {count} older ones."
# After a status check read from a note that told of a complaint filed before: a player who
# meant a new one can say so.
OFFER_NEW_COMPLAINT = " If this is a new complaint, tell me it's a new one and what happened."

# ---- words inside sentences ------------------------------------------------------------------

# A grievance category as said aloud; "general" for any other.
CATEGORY_WORDS = {
    "wallet": "wallet",
    "reward_points": "reward points",
    "gaming_experience": "game experience",
    "usage_history": "usage history",
    "other": "general",
}
GAME_WORDS = {"battle_royale": "battle royale"}
