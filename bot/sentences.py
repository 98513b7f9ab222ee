"""Every sentence voxdesk says to a player, in one place.

Kept apart from the code that picks and fills them, so wording can be reviewed, changed or
translated without reading any logic, and a change of wording shows as one. Templates take named
fields (`str.format`); the code that uses them decides which to say. Not here: what staff read
(the support desk, logs, `voxdesk check`), what only the model reads (a tool's argument errors),
and the slash commands' names and descriptions, which stay beside the commands Discord reads them
from.
"""

from __future__ import annotations

import math


def too_many_unseen(count: int) -> str:
    """What a player is told of a note turned away by a catch-up that answers `count` of theirs."""
    return TOO_MANY_UNSEEN_NONE if count == 0 else TOO_MANY_UNSEEN.format(count=count)


def wait_of(seconds: float) -> str:
    """A wait as a player reads it: rounded up, so never "0 seconds", and "1 second" alone."""
    whole = max(1, math.ceil(seconds))
    return "1 second" if whole == 1 else f"{whole} seconds"


def long_wait_of(seconds: float) -> str:
    """A wait of up to a day as a player reads it: in seconds, minutes or hours, rounded up."""
    if seconds <= 60:
        return wait_of(seconds)
    if seconds <= 3600:
        minutes = math.ceil(seconds / 60)
        return f"{minutes} minutes"
    hours = math.ceil(seconds / 3600)
    return "1 hour" if hours == 1 else f"{hours} hours"


# ---- a note that cannot be answered, whichever front end took it -----------------------------

EMPTY_NOTE = "That voice note is empty. Could you record it again?"
BAD_UPLOAD = "That upload could not be read. Please record or choose the note again on the page."
NOT_AUDIO = "That file looks like {what}, not audio. Please send a voice note."
TOO_BIG = "That file is too big for me ({size_mb} MB). Please keep voice notes under {limit_mb} MB."
TOO_LONG = "That voice note is too long for me. Please keep it under {limit}."
UNREADABLE = (
    "I couldn't read that audio file. "
    "Please send a voice note or an ogg, mp3, m4a, wav, webm, flac or amr file."
)
SILENT = "That voice note has no sound in it. Could you record it again?"
NO_SOUND_TRACK = "That file has no sound track, so there's nothing for me to hear. Please send a voice note."
NOTHING_HEARD = "I couldn't hear anything in that voice note. Could you say it again?"
TOO_SHORT = "That voice note is too short for me to hear anything."
# {count}: the player's notes the read that found this one is answering, not all they sent: the
# places a recheck or a thread the bot is added to reads are read apart from the rest.
# True of a restart's or an outage's catch-up and of a private thread the bot is just added to
# alike: the bot did not see these notes as they came, away or not.
TOO_MANY_UNSEEN = (
    "You sent more notes before I could see them than I answer at once; of the ones I've just "
    "found, I'm answering {count}. Send me again whatever is still unanswered."
)
# When none of them is answered: "I'm answering 0" reads as a count, not as a sentence.
TOO_MANY_UNSEEN_NONE = (
    "You sent more notes before I could see them than I answer at once; I'm not answering the ones "
    "I've just found. Send me again whatever is still unanswered."
)
TOO_FAST = "You're sending notes faster than I can answer. Try again in {wait}."
STILL_ANSWERING = (
    "I'm still answering your earlier notes, so I haven't taken this one. "
    "Please send it again once I've answered them."
)
# The web playground: every visitor's notes together are more than it answers at once or a minute.
PLAYGROUND_BUSY = "The playground is busy answering other visitors' notes. Try again in {wait}."
UPLOAD_TOO_SLOW = "That note took too long to upload. Please send it again, or a shorter one."
# What the web's checks in front of every form (the desk's, the playground's) answer: a form that
# cannot be read, one not all there within web.security.FORM_SECONDS, one past the client's
# web.security.FORMS_PER_CLIENT being read at once, and a missing or wrong CSRF token (a page kept
# open across a restart or a logout).
FORM_UNREADABLE = "That form could not be read."
FORM_TOO_SLOW = "That form took too long to arrive: send it again."
FORMS_AT_ONCE = "Too many of your forms are still on their way. Try again in {wait}."
CSRF_REFUSED = "Missing or invalid CSRF token: reload the page and try again."
TICKETS_TOO_FAST = "You're asking for tickets faster than I can look. Try again in {wait}."
# A complaint a playground visitor asks for past the playground's daily limits (web.playground_*).
PLAYGROUND_COMPLAINTS_SPENT = (
    "Not filed: the playground takes {complaints} a day from each visitor, and you've filed "
    "yours. You can file another in {wait}."
)
PLAYGROUND_COMPLAINTS_FULL = (
    "Not filed: the playground has taken all the complaints it takes from its visitors today. "
    "You can file another in {wait}."
)

# ---- no answer this time ---------------------------------------------------------------------

VOICE_SERVICE_DOWN = (
    "Sorry, I can't answer right now because my voice service is down. Please try again in a few minutes."
)
# The voice service turned the note away for its rate limit, past the retries a turn makes, or
# holds notes back until that limit resets: it is up, and "down" would send players away for longer
# than the wait. The limit may be spent by more than this bot's notes, so the line names no cause.
VOICE_SERVICE_BUSY = (
    "Sorry, my voice service is busy right now, so I can't answer. Please try again in a minute."
)
# The same, when the limit named a wait of more than agent.A_MINUTE_OR_SO (a day's requests or
# tokens run out): "in a minute" would have players try again and again. It names no time: a day's limit
# refills over the day and lets a request in well before its reset.
VOICE_SERVICE_LIMITED = (
    "Sorry, my voice service has reached its limit for now, so I can't answer. Please try again later."
)
# The note, with what a turn sends along, is more than the voice service takes in one request,
# however long it waits; other players' notes are still answered meanwhile.
NOTE_TOO_LARGE = (
    "Sorry, that voice note is more than my voice service can take in at once. "
    "Could you send it again in shorter parts?"
)
# One note crashed the recogniser, twice; other players' notes are still answered meanwhile.
NOTE_UNHEARD = (
    "Sorry, something in that voice note tripped up my hearing, so I couldn't answer it. "
    "Could you record it again?"
)
# A note the bot died answering, more than once: answered again, it would most likely crash it anew.
NOTE_CRASHED = "Sorry, I couldn't handle that voice note. Could you record it again?"
# The model answered with nothing to say (cut off before a word, or lost in its tool calls): the
# service is up, so "try again in a few minutes" would mislead.
NO_ANSWER_MADE = (
    "Sorry, I couldn't put an answer together for that one. Could you ask again, maybe more simply?"
)
FILED_BEFORE_FAILING = "I did file your complaint before that: ticket {ticket_keys}."
FILED_BEFORE_REFUSING = "I did file your complaint: ticket {ticket_keys}."
# `when` (RESET_IN_*): the budget starts afresh at midnight UTC, for a player in another time
# zone perhaps later today, so not "tomorrow".
OVER_BUDGET = (
    "You've used up today's voice answers. I'll be happy to help again {when}; until then, "
    "the slash commands still work."
)
RESET_IN_HOURS = "in about {hours} hours"
RESET_IN_AN_HOUR = "in about an hour"
RESET_IN_MINUTES = "in {minutes} minutes"
RESET_IN_A_MINUTE = "in a minute"
REFUSAL = "Sorry, I can't help with that one. Is there something else about your games I can do?"
# Kept after an answer cut off at its length limit, in the history the model reads next turn.
CUT_OFF = "[cut off here: the answer ran past its length limit]"

# ---- the tools: a lookup that finds nothing or fails -----------------------------------------

NOT_LINKED = "This Discord account is not linked to a player profile yet."
NOT_A_TICKET_KEY = "“{key}” is not a ticket key like GRV-12."
NO_SUCH_TICKET = "No ticket {key} was found for you."
TOOL_BROKEN = "That part of me isn't working right now. Please try again in a few minutes."
STATS_UNAVAILABLE = "Player stats are unavailable right now, please try again in a few minutes."
MANUALS_UNAVAILABLE = "The game manuals are unavailable right now, please try again in a few minutes."
TICKETS_UNREACHABLE = (
    "The ticket system is unreachable right now, so I can't look that ticket up. "
    "Please try again in a few minutes."
)
LOCAL_RECORD_NOTE = "from our local record; the ticket system is unreachable"
UNTRACKED_NOTE = "from our local record; the ticket system no longer has this ticket"
HIDDEN_NOTE = (
    "from our local record; the ticket is filed and staff can see it, but the ticket system "
    "doesn't let me read its status"
)
# In place of each ticket's words, for the model to tell the player, when others read the answer.
TICKET_WORDS_KEPT = (
    "kept private in a public channel: ask in a DM or with /grievance status to hear what each ticket says"
)
KEPT_FOR_LATER = (
    "I couldn't file your complaint just now, but I've kept every word of it and it will be filed "
    "as soon as I can. Ask me about your tickets in a little while to get its number."
)
# Neither the database nor the spool could take it (a full or read-only disk): it is held in
# memory and filed when the disk takes it again, which a restart meanwhile would lose.
HELD_FOR_LATER = (
    "I couldn't file your complaint just now, but I'm holding on to it and will file it as soon as "
    "I can. Ask me about your tickets in a little while; if it isn't there, please tell me again."
)
# The same refusal in `ask`, a process that ends after its turn: nothing would hold it there.
NOT_FILED = (
    "I couldn't file your complaint: there is nowhere to save it just now, so it has NOT been "
    "filed. Please tell me again in a little while."
)
FILING_UNAVAILABLE = "Filing complaints isn't working right now, please try again in a few minutes."
TICKETS_UNAVAILABLE = "Your tickets are unavailable right now, please try again in a few minutes."

# ---- the offline engine: small talk and asking again -----------------------------------------

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
# When the recogniser doubts its words: noise, mumbling, or a language the bot does not hear.
# NOT_CLEAR when it hears English only (the default), NOT_CLEAR_MULTILINGUAL when it hears more.
NOT_CLEAR = "Sorry, I couldn't make that out. Could you say it again? I understand English only."

NOT_CLEAR_MULTILINGUAL = "Sorry, I couldn't make that out. Could you say it again?"
# Heard clearly, but nothing the bot does ("what's the weather like tomorrow").
OUT_OF_SCOPE = (
    "That's not something I can help with, sorry. I can tell you your points, rank and achievements, "
    "answer questions from the game guides, file a complaint for you, and check on your tickets."
)

# Said in place of the rest of a reply too long to say aloud (engine.MAX_SPOKEN_CHARS): the
# written reply beside the voice message has all of it.
MORE_IN_WRITING = "There's more in the written reply."

# ---- the offline engine: a tool's answer -----------------------------------------------------

TOOL_ERROR = "Sorry, {reason}"  # the tool's own reason, first letter lowered

NO_PROFILE = (
    "I couldn't find a player profile linked to your Discord account. Ask a moderator to "
    "link it, then try again."
)
NO_ACHIEVEMENTS = "{player}, you have no achievements yet. Keep playing!"
ACHIEVEMENTS = "You have {count}: {names}."
STATS_TOTAL = "{player}, you have {points:,} points, and you're ranked {rank:,} of {players:,} players."
STATS_TOTAL_UNRANKED = "{player}, you have {points:,} points. I can't see your rank right now."
BEST_GAME = "Your best game is {game}, with {points:,} points from {games}."
CASH_WON = "You've won {cash:,.2f} dollars in cash."
LATEST_ACHIEVEMENT = "Your latest achievement is {achievement}."

NOT_IN_GUIDES = "I couldn't find that in the game guides. Could you ask in other words?"
FROM_GUIDE = "From the guide on {title}: {passage}"

FILED = (
    "I've filed your {category} complaint. Your ticket number is {ticket_key}. "
    "Ask me about its status any time."
)

NO_TICKETS = "You don't have any support tickets."
TICKET_COUNT = "You have {count}."
TICKET_COUNT_AT_LEAST = "You have more than {count}. Here are the newest."
TICKET_LINE = "{ticket_key}, your {category} complaint, is {status}, last updated {when}.{note}"
# How long ago, rather than a date: a date read in UTC can be a day off from the player's own.
UPDATED_AGO = "{count} ago"
UPDATED_JUST_NOW = "just now"
FROM_LOCAL_RECORD = " That's from our local record, because the ticket system is unreachable."
FROM_UNTRACKED = " That's from our local record, because the ticket system no longer has it."
FROM_HIDDEN = (
    " That's from our local record: the ticket is filed and staff can see it, but the ticket "
    "system doesn't let me read its status."
)
OLDER_TICKETS = "And {count} older ones."
ONE_OLDER_TICKET = "And one older one."
MORE_OLDER_TICKETS = "And more than {count} older ones."
# After a status check read from a note that told of a complaint filed before: a player who
# meant a new one can say so.
WHAT_WENT_WRONG = "I can file a complaint for you. What went wrong? Tell me what happened in your next note."
OFFER_NEW_COMPLAINT = " If this is a new complaint, tell me it's a new one and what happened."
# Before the figures when a day or a week was asked about: the summary holds all-time totals only.
ALL_TIME_ONLY = "I only have your all-time totals, not figures for a day or a week."
GAME_STATS = "In {game}, you have {points:,} points from {games}."
GAME_CASH = "You've won {cash:,.2f} dollars in cash at {game}."
GAME_NO_CASH = "You haven't won any cash at {game}."
# More achievements than a summary lists: the total, then the newest.
ACHIEVEMENTS_LATEST = "You have {count}; the latest {shown} are {names}."

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
# A ticket's status as its player hears it, where its stored word is not plain enough: one staff
# closed without a fix (bot/tools/grievance_store.py's DECLINED and DUPLICATE) is never
# "resolved", nor said in a word that hides that nothing changed.
STATUS_WORDS = {"declined": "closed without a fix", "duplicate": "closed as a duplicate"}


def status_said(status: str) -> str:
    """A ticket's status in the words its player hears (STATUS_WORDS; any other as it is)."""
    return STATUS_WORDS.get(status, status)


# ---- ticket news, sent by direct message -----------------------------------------------------

NEWS_FILED = (
    'The complaint you made on {when} ("{description}") is now filed as ticket {key}. Its status is {status}.'
)
# A ticket that reached Jira only after Jira had failed: the key its player heard was the local one.
NEWS_REACHED = (
    "Your ticket {old_key} has now reached our support team as {new_key}: use {new_key} "
    "when you ask about it. Its status is {status}."
)
NEWS_REACHED_SAME_KEY = (
    "Your ticket {new_key} has now reached our support team, under the same number. Its status is {status}."
)
# A ticket already in Jira under another key: its project's key changed (same number), or staff
# moved it to another project.
NEWS_RENAMED = (
    "Your ticket {old_key} is now called {new_key}, as our support team renamed the project it is in: "
    "use {new_key} when you ask about it. Its status is {status}."
)
NEWS_MOVED = (
    "Our support team moved your ticket {old_key}, and it is now {new_key}: use {new_key} "
    "when you ask about it. Its status is {status}."
)
NEWS_STATUS = "Your ticket {key}{about} is now {status}."
NEWS_ABOUT = ' ("{about}")'
NEWS_HEADING = "News about your tickets:"
NEWS_SPOKEN_HEADING = "News about your tickets."
DMS_CLOSED_NOTICE = (
    "I have news about your tickets, but I can't send you direct messages: ask `/grievance status` "
    "to see it. Allow direct messages from this server's members to get news like this from now on."
)

# ---- Discord: notes --------------------------------------------------------------------------

DOWNLOAD_FAILED = "I couldn't download that voice note. Could you send it again?"
RESTARTING = "I'm restarting: I'll answer this note in a moment, as soon as I'm back."
COMMAND_CUT_SHORT = "I'm restarting and couldn't finish that in time. Please try again in a minute."
# Where the bot may not read the channel's history, no later process can fetch a note back to
# answer it: a note still waiting its turn at a stop, or sent during one, is asked for again.
NOTES_CUT_SHORT = (
    "I'm restarting and didn't get to your notes waiting here. Please send them again in a minute."
)
RESTARTING_SEND_AGAIN = (
    "I'm restarting and can't answer notes here just now. Please send yours again in a minute."
)
# A note whose turn a kill cut where the bot may not read history, no answer kept: its answer may
# have reached the player before the kill (the ledger refused to keep it), and no process may look.
MAYBE_UNANSWERED_SEND_AGAIN = (
    "I restarted just now. If you didn't get my answer to your voice note here, please send it again."
)
# A kept answer a stop was sending where the bot may not read history, cut by the stop's last
# seconds: the part on its way may still reach the player (Discord takes a message whose request it
# read whole), and no process may look afterwards.
STOPPING_MAYBE_UNANSWERED = (
    "I'm restarting and may not have sent my answer to your voice note here. If it doesn't come, "
    "please send the note again in a minute."
)
CUT_SHORT_BY_RESTART = (
    "I'm restarting and couldn't finish that in time. A complaint you filed is kept and will be "
    "filed; ask /grievance status in a minute."
)
OOPS = "Sorry, something went wrong on my side and I couldn't answer that note. Please try again."
# A spoken answer that came with no words to send instead, and that no upload here can carry.
SPOKEN_ANSWER_TOO_BIG = (
    "Sorry, my spoken answer to that note is too big to send here, and I have no written version "
    "of it. Could you ask again, perhaps a shorter question?"
)
SPOKEN_ANSWER_NOT_ALLOWED = (
    "Sorry, I couldn't send my spoken answer: this channel doesn't let me post voice messages or "
    "files. A moderator can allow them, or you can send me your note in a DM."
)
NOT_A_NOTE = (
    "I answer voice notes: hold the microphone button to record one (or attach an audio file), "
    "and I'll reply out loud. Try /grievance for tickets."
)
# Where only native voice messages are answered (discord.any_audio_attachment = false).
NOT_A_VOICE_MESSAGE = (
    "I answer voice messages: hold the microphone button to record one (an audio file won't do), "
    "and I'll reply out loud. Try /grievance for tickets."
)
# A voice message that came with no audio to hear (Discord sent none).
VOICE_WITHOUT_AUDIO = "That voice message reached me without its audio. Could you send it again?"
# A voice message whose attachment lacks a voice message's waveform, where only those are answered.
VOICE_WITHOUT_WAVEFORM = (
    "That voice message reached me incomplete, so I can't answer it. Could you record it again?"
)
# A forward of one of the bot's own voice answers: its words are no question of the player's.
OWN_ANSWER = (
    "That's one of my own answers, so there's nothing in it for me to answer. Send me a voice note "
    "with your question and I'll reply out loud."
)
ONE_AT_A_TIME = (
    "I answer one voice note per message, so I'll answer the first. Please send the others one by one."
)

# ---- Discord: slash commands -----------------------------------------------------------------

COMMAND_FAILED = "Sorry, that didn't work on my side. Please try again in a moment."
# A command Discord still shows as it was before an upgrade (renamed, removed, or other options).
COMMAND_OUTDATED = (
    "That command was just updated. Please try again in a minute, or reopen Discord to get its new version."
)
# A command still at work near the end of the 15 minutes Discord lets it answer in.
STILL_BUSY = "I'm still busy with that and couldn't finish it in time. Please try again later."
STILL_BUSY_FILING = (
    "I'm still busy and couldn't finish filing that in time. Your complaint is kept and will be "
    "filed; ask /grievance status later to get its number."
)
LOOKUP_FAILED = "Sorry, I couldn't look that up: {reason}"
FILING_FAILED = "Sorry, I couldn't file that: {reason}"
NO_TICKETS_YET = "You have no tickets with us. Use `/grievance file` to open one."
TICKETS_HEADING = "**Your tickets** ({count})"
# More tickets than a slash answer lists: which of them it shows.
TICKETS_HEADING_NEWEST = (
    "**Your tickets**: your {count} newest; you have more, and `/grievance status` with a key "
    "shows any of them"
)
TICKET_HEADING = "**Your ticket**"
TICKET_ROW = "`{ticket_key}` · {category} · **{status}** · updated {updated}"
TOO_MANY_FILINGS = "Not filed: one note files at most {count} tickets. Send another note for the rest."
TOO_MANY_CALLS = "Not run: at most {count} tool calls are run at once."
# In place of an older tool result of the turn, when its results are more than a request carries.
RESULT_LEFT_OUT = "Left out: too long to send again. Answer from the newer results."
BLANK_DESCRIPTION = "Not filed: the description is empty. Tell me in a few words what went wrong."
DESCRIPTION_TOO_SHORT = (
    "Not filed: that's too short for staff to act on. Tell me in a sentence what went wrong, like "
    "what you bought or did and what happened."
)
FILING_TOO_FAST = "You've filed several tickets just now. Please wait {wait} before the next."
SLASH_ALREADY_FILED = (
    "You filed this a moment ago as ticket `{ticket_key}`, so I haven't opened another. Ask "
    "`/grievance status` any time."
)
SLASH_FILED = (
    "Filed ticket `{ticket_key}` ({category}); status **{status}**. Ask `/grievance status` any time."
)
# What /forget leaves is said too, with or without a conversation to forget: a player who asked
# to be forgotten may think it was everything. For as long as the stores keep it: told news 30 days
# but each ticket's latest piece (ticket_news.py), the channels to reach a player in 90 days
# (ticket_news.KEEP_CHANNEL_SECONDS) to a year (note_ledger.KEEP_PLACE_SECONDS).
_KEPT_AFTER_FORGET = (
    "I keep your tickets and their news (the latest of each for good, the rest for a month), your"
    " /voice, /replies and /notify choices, a month of usage figures, which of your notes I've"
    " answered and where to reach you (90 days to a year); the support team can erase most of that"
    " on request."
)
NOTHING_TO_FORGET = "There was no conversation to forget; your next note starts afresh. " + _KEPT_AFTER_FORGET
FORGOTTEN = (
    "Done: I've forgotten our conversations (every DM and channel); your next note starts afresh. "
    + _KEPT_AFTER_FORGET
)
# /voice, /replies and /notify past their per-player limit, and /forget past its own.
SETTINGS_TOO_FAST = "You're changing your settings faster than I can keep up. Try again in {wait}."
FORGET_TOO_FAST = "You've asked me to forget several times just now. Try again in {wait}."
# /voice, /replies, /notify and /forget while their database refuses writes (a full or read-only disk).
SETTING_NOT_SAVED = (
    "Sorry, I couldn't save that just now, so your settings stay as they were. Please try again "
    "in a little while."
)
NOT_FORGOTTEN = (
    "Sorry, I couldn't forget our conversations just now: nothing was erased. Please try again in a "
    "little while."
)
UNKNOWN_VOICE = "I don't know the voice “{voice}”. Pick one of: {voices}."
VOICE_CHOSEN = "From now on I'll answer you in the voice **{voice}**."
REPLY_STYLE_CHOSEN = "From now on I'll answer your notes with {style}."
REPLY_STYLES = {
    "voice_and_text": "a voice message and its transcript",
    "voice": "a voice message only",
    "file": "an audio file with the transcript as its text",
    "text": "text only",
}
NEWS_ON = (
    "I'll send you a direct message when a complaint of yours is filed late or one of your tickets "
    "changes status."
)
NEWS_OFF = "No more ticket news by direct message. `/grievance status` still shows your tickets."
