"""The offline engine: pocketsphinx (or Whisper, `offline.recognizer`) hears, the intent router
picks a tool, templates answer and a neural Piper voice speaks (eSpeak NG when none is installed,
or one fails its checks). No network and no downloads by default: everything comes from the
wheels (a Whisper model other than tiny.en and base, which ship in wheels, is fetched by
faster-whisper's loader). Notes in other languages (`offline.languages`) are translated into
English by Whisper before routing; replies are in English.

It is the embedded default, the fallback when a cloud engine fails, and how the tests run real
speech end to end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import re
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Literal

from bot import audio
from bot import sentences as say
from bot.config import Settings
from bot.engines.base import AudioClip, EngineReply, SpeechModelsUnavailable, Transcript, TurnState
from bot.engines.offline.hearing import (
    Heard,
    Hearing,
    WorkerHearing,
    WorkersStuck,
    default_workers,
    vote_meaning,
)
from bot.instants import instant
from bot.intent import meaning, router
from bot.intent.cues import FILING_WORDS, FUNCTION_WORDS
from bot.intent.word_tagger import word_tagger
from bot.speech.math_threads import one_blas_thread
from bot.speech.recognition import AUTO, POCKETSPHINX, WHISPER
from bot.speech.recognizer import build_domain_model, built_from_current_inputs
from bot.speech.speakable import speakable
from bot.speech.speaker import ReplySpeaker
from bot.speech.voices import AUTO as AUTO_VOICE
from bot.speech.voices import ReplyVoices
from bot.speech.whisper_recognizer import (
    ENGLISH,
    MULTILINGUAL_HINT,
    MULTILINGUAL_NAME,
    WhisperSpec,
    WhisperUnavailable,
    domain_prompt,
    is_multilingual,
    resolve_model,
)
from bot.tools.base import ToolCall
from bot.turns import PastTurn

log = logging.getLogger(__name__)

SMALLTALK = {
    router.GREETING: say.GREETING,
    router.THANKS: say.THANKS,
    router.CAPABILITIES: say.CAPABILITIES,
    router.GOODBYE: say.GOODBYE,
    router.UNSURE: say.UNSURE,
}


class OfflineEngine:
    name = "offline"

    def __init__(
        self,
        hearing: Hearing,
        voices: ReplyVoices,
        rate_wpm: int,
        speaker: ReplySpeaker | None = None,
        why_not_whisper: str = "",
    ) -> None:
        self.hearing = hearing
        self.reply_voices = voices
        self.rate_wpm = rate_wpm
        self.speaker = speaker or ReplySpeaker(voices, rate_wpm)
        self.why_not_whisper = why_not_whisper  # when pocketsphinx hears instead of a Whisper asked for

    @property
    def ready(self) -> bool:
        """What /healthz says of the engine: its speech workers can start (see WorkerHearing)."""
        return bool(getattr(self.hearing, "ready", True))

    @property
    def whisper(self) -> WhisperSpec | None:
        return getattr(self.hearing, "whisper", None)

    @property
    def english_only(self) -> bool:
        """Whether notes in other languages go unheard: pocketsphinx, or Whisper told to hear English."""
        return self.whisper is None or self.whisper.languages == ENGLISH

    async def check(self) -> str:
        """One line for `check` and the desk: the speech workers answer, the reply voice speaks,
        and which recogniser, voice (with its licence) and meaning model serve players."""
        if isinstance(self.hearing, WorkerHearing):
            await self.hearing.ping()  # workers that cannot start fail the check here
        pcm, rate = await asyncio.to_thread(speak_reply, self.reply_voices, "ready", None, self.rate_wpm)
        info = self.reply_voices.describe()
        seconds = len(pcm) / 2 / rate
        spoke = f"reply voice {info.name} ({info.engine}) spoke {seconds:.1f} s, licence: {info.licence}"
        refused = "".join(f"; {name} refused: {why}" for name, why in self.reply_voices.refused.items())
        configured = self.reply_voices.configured
        refusal_told = configured in self.reply_voices.refused
        if configured != AUTO_VOICE and not refusal_told and (why := self.reply_voices.fell_back()):
            refused += f"; not offline.voice {configured}: {why}"
        heard = describe_recognizer(self.whisper, self.why_not_whisper)
        return f"{heard}, {spoke}{refused}, {meaning.describe()}"

    async def transcribe(self, clip: AudioClip) -> Transcript | None:
        return await self.hearing.hear(clip.pcm, clip.sample_rate)

    # ---- one step -------------------------------------------------------------------------

    async def complete(self, turn: TurnState) -> EngineReply:
        if turn.rounds:
            # Every request of the note answered in one reply, in the order they were asked. As a
            # cloud engine's fallback, every round that engine ran: a ticket it filed is told.
            heard_text = turn.scratch.get("heard", "")
            # Each call's intent: its own words ("...and my achievements") and any tool it stands in for.
            asked: dict[str, router.Intent] = turn.scratch.get("asked", {})
            answers: list[str] = []
            for done in turn.rounds:
                for call, result in zip(done.calls, done.results, strict=True):
                    intent = asked.get(call.id)
                    answer = render(call.name, result.result, (intent and intent.said) or heard_text)
                    if intent and intent.rather_than == router.REGISTER:
                        answer = _ended(answer) + say.OFFER_NEW_COMPLAINT
                    if answer not in answers:  # the same lookup run twice is told once
                        answers.append(answer)
            if turn.scratch.get("ask_what_went_wrong"):
                answers.append(say.WHAT_WENT_WRONG)
            return await self._say(" ".join(answers), turn)
        if turn.text is not None:
            heard = Transcript(turn.text)
        else:
            heard = (await turn.heard if turn.heard else None) or Transcript("", act_on=False)
        if isinstance(heard, Heard) and heard.sure and turn.history:
            # The runners-up vote again in the conversation's light: "and my achievements?"
            # after a points question is clear in context even when it was not alone.
            # Off the event loop: pocketsphinx's ten transcripts take ~15 ms to route through
            # all-MiniLM-L6-v2, about 0.5 s through all-mpnet-base-v2 (Whisper's list is one).
            heard = await asyncio.to_thread(router.settle, heard.alternatives, turn.history) or heard
        # A player's words stay out of INFO, which `run` logs: a log is kept past every prune and
        # /forget, so the words go to DEBUG alone and INFO says only what was done with them.
        if not heard.act_on:
            log.info("asking again rather than acting on %s: too few transcripts agree", turn.context.who)
            log.debug("too few transcripts agree on %r", heard.text)
        turn.scratch["heard"] = heard.text
        # Off the event loop too: the meaning model takes tens of milliseconds over a ramble.
        intents = await asyncio.to_thread(router.decide_all, heard, turn.history)
        for intent in intents:
            log.info("heard %s → %s", turn.context.who, intent.name)
            log.debug("heard %r → %s %s", heard.text, intent.name, intent.arguments)
        if _answers_what_went_wrong(heard.text, turn.history) and not any(
            intent.name == router.REGISTER for intent in intents
        ):
            # The bot asked what went wrong: the player's account of it is the complaint, though
            # its words alone ("my controller stopped working") would be routed elsewhere.
            intents = [router.Intent(router.REGISTER, _complaint_about(heard.text), 1.0, said=heard.text)]
        intents, ask_what_went_wrong = _complaints_with_substance(intents, turn.history)
        turn.scratch["ask_what_went_wrong"] = ask_what_went_wrong
        tools = [intent for intent in intents if intent.is_tool]
        if ask_what_went_wrong and not tools:
            return await self._say(say.WHAT_WENT_WRONG, turn)
        if tools and turn.allow_tools:
            calls = [
                ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=intent.name, arguments=intent.arguments)
                for intent in tools
            ]
            turn.scratch["asked"] = {call.id: intent for call, intent in zip(calls, tools, strict=True)}
            return EngineReply(tool_calls=calls, user_text=heard.text)
        if isinstance(heard, Heard) and not heard.sure:
            return await self._say(say.NOT_CLEAR if self.english_only else say.NOT_CLEAR_MULTILINGUAL, turn)
        if (
            intents[0].name == router.UNSURE
            and heard.act_on
            and set(router.tokenize(heard.text)) - FUNCTION_WORDS
        ):
            # Words heard clearly that ask for nothing the bot does: saying them again won't help.
            return await self._say(say.OUT_OF_SCOPE, turn)
        return await self._say(SMALLTALK.get(intents[0].name, say.UNSURE), turn)

    async def _say(self, text: str, turn: TurnState) -> EngineReply:
        # Off the event loop: Piper takes about 80 ms of a core a second of speech on this VM.
        whole = said_aloud(text)
        said = within_spoken_limit(whole)
        if self.speaker.by_sentence:
            reply = await self.speaker.speak_soon(said, turn.voice, player=turn.context.speaker)
            return EngineReply(
                text=text,
                reply_audio=reply,
                user_text=turn.scratch.get("heard"),
                spoken_in_part=said != whole,
            )
        speech = await asyncio.to_thread(self.reply_voices.speak, said, turn.voice, self.rate_wpm)
        return EngineReply(
            text=text,
            audio=audio.pcm_to_wav(speech.pcm, speech.rate),
            audio_format="wav",
            user_text=turn.scratch.get("heard"),
            spoken_in_part=said != whole,
        )

    def voices(self) -> list[str]:
        return self.reply_voices.names()

    def forget(self, user_id: str) -> None:
        """The player's /forget: their replies' sentences, which may name their points and
        tickets, leave the sentence cache."""
        self.speaker.forget(user_id)

    async def aclose(self) -> None:
        self.speaker.close()
        await self.hearing.aclose()


# ---- speaking -------------------------------------------------------------------------------

# A ticket key. A weapon's name of its shape is spelled alike, as players say it (AK-47, which
# the voices read "ack forty-seven"), and so is its plural (AK-47s).
_KEY = re.compile(r"\b([A-Z]{2,6})-(\d+)(?=s?\b)")
# Weapons' names of a key's shape that players say as words: spelled, MAC-10 was "em ay see ten"
# for "mack ten". Whole names, each with its number: a ticket key of the same letters (MAC-14,
# where a project's key is MAC) is read back by a player and is still spelled.
_SAID_AS_WORDS = {"MAC-10": "Mac 10", "SPAS-12": "Spaz 12", "TEC-9": "Tec 9"}
# Weapons' letters that players spell as in AK-47, which the voices read as a word when their
# figures follow without a hyphen at a clause's end (mid-sentence eSpeak spells them): "An AK47."
# was "ack forty-seven", "a UMP45" "ump forty-five", "an AR15" "are fifteen". Only these: run
# together, letters are no ticket key, and the voices read most as players do (MP5, FIFA23).
_SPELLED_RUN_TOGETHER = ("AK", "AR", "UMP")
_RUN_TOGETHER = re.compile(r"\b(" + "|".join(_SPELLED_RUN_TOGETHER) + r")(\d+)(?=s?\b)")
# A lone "A" before another word is the article to eSpeak (and to Piper, which phonemizes with
# it): "P L A Y 123" came out "pee el uh why". "Eh" is the letter's name in every English voice.
_LETTER_NAMES = {"A": "Eh"}


# Amounts and clock times, which the voices read as figures: "1,234.50 dollars" was "one thousand
# two hundred thirty four point five zero dollars", "10:02" "ten zero two", "18:00" "eighteen
# zero zero"; and a day's month, which they read as a word ("Jan", "deck", "sep").
# An amount of other than cents ($1.5, $12.345) is left to the voices: cut after its whole dollars,
# it was said "1 dollar.5". An amount begins where its figures do: tried from each figure of a
# run of "1,1,1", the match was quadratic.
_DOLLARS = re.compile(r"\$(\d[\d,]*)(?:\.(\d\d))?\b(?!\.\d)|(?<![\d,])\b(\d[\d,]*)\.(\d\d) dollars\b")
_CLOCK = re.compile(r"(?<![\d:.])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_MONTHS = dict(
    zip(
        "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec".split(),
        "January February March April June July August September September October November December".split(),
        strict=True,
    )
)
# The abbreviation's dot goes only inside a sentence ("4 Dec. at 10:00"): at a sentence's end it
# is the full stop, whose loss ran two sentences into one.
_DAY_MONTH = re.compile(r"\b(\d{1,2}) (" + "|".join(_MONTHS) + r")\b(?:\.(?=\s+[a-z\d]))?")
# An ISO 8601 date, as a tool's result gives it to a cloud model, which may say it back: read as
# "two thousand twenty six dash eleven dash seventeen". Its time, if any, is left to _CLOCK.
_ISO_DATE = re.compile(
    r"\b(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"(?:[T ]([01]\d|2[0-3]):([0-5]\d)(?::[0-5]\d(?:\.\d+)?)?(Z|[+-]\d\d:?\d\d)?)?(?![\d:])"
)
_MONTH_NAMES = "January February March April May June July August September October November December".split()
# A graphics card's model number, which the voices read as a count: "G T X one thousand fifty tie"
# for the guides' GTX 1050 Ti, "R X six thousand six hundred" for RX 6600. Players say it in pairs
# ("ten fifty tee eye", "sixty-six hundred"). Only after a card series' letters: elsewhere four
# figures are a count or a year, which the voices read well. In the plural too: "RTX 3080s" was
# "three thousand eighty z", "GTX 1080 Tis" "ten eighty tiz" ("T I's" is "tee eyes").
_CARD = re.compile(r"\b(GTX|RTX|RX|GT|MX|HD) ([1-9]\d{2,3})(?:(s)\b|\b(?: (Ti)(s)?\b)?)")


def spoken(text: str) -> str:
    """Text as it should sound: ticket keys letter by letter ("G R V 14", "P L Eh Y 123") but the
    weapons players say as words ("Mac 10"), a weapon's spelled letters run into its figures
    ("AK47" as "Eh K 47"), amounts in dollars and cents, clock times as said
    ("9 oh 5", "18 hundred"), months whole, ISO dates as a day, a month and a year, graphics
    cards' model numbers in pairs ("RTX 30 60", "GTX 10 80 T I's")."""
    text = _KEY.sub(_said_key, text)
    text = _RUN_TOGETHER.sub(_spelled, text)
    text = _DOLLARS.sub(_said_dollars, text)
    text = _ISO_DATE.sub(_said_date, text)
    text = _CLOCK.sub(_said_clock, text)
    text = _DAY_MONTH.sub(lambda m: f"{m.group(1)} {_MONTHS[m.group(2)]}", text)
    return _CARD.sub(_said_card, text)


def _said_key(match: re.Match[str]) -> str:
    return _SAID_AS_WORDS.get(match.group(0)) or _spelled(match)


def _spelled(match: re.Match[str]) -> str:
    return " ".join(_LETTER_NAMES.get(c, c) for c in match.group(1)) + " " + match.group(2)


def _said_card(match: re.Match[str]) -> str:
    series, figures, plural, ti, tis = match.groups()
    if figures.endswith("000"):
        # Players say a round thousand as the voices read it, "four thousand" (Intel's HD 4000,
        # the RTX 4000 series): in pairs it would be "forty hundred", which no one says.
        return match.group(0)
    first, last = figures[:-2], figures[-2:]
    pair = "hundred" if last == "00" else f"oh {last[1]}" if last[0] == "0" else last
    said = f"{series} {first} {pair}" + ("s" if plural else "")
    return said + (" T I" if ti else "") + ("'s" if tis else "")


def _said_date(match: re.Match[str]) -> str:
    year, month, day, hour, minutes, zone = match.groups()
    try:
        datetime.date(int(year), int(month), int(day))
    except ValueError:  # 2026-02-30: said as a date, it would name a day there is not
        return match.group(0)
    said = f"{int(day)} {_MONTH_NAMES[int(month) - 1]} {year}"
    if hour is None:
        return said
    said += f" at {hour}:{minutes}"  # said as a clock is read by _CLOCK, after this
    if zone == "Z":
        return said + " UTC"
    if zone:
        hours, rest = int(zone[1:3]), int(zone[-2:])
        offset = f"{hours}" + (f" {rest}" if rest else "")
        return said + (
            " UTC" if not hours and not rest else f" UTC {'plus' if zone[0] == '+' else 'minus'} {offset}"
        )
    return said


def _said_dollars(match: re.Match[str]) -> str:
    whole = match.group(1) or match.group(3)
    cents = int(match.group(2) or match.group(4) or 0)
    said = [] if whole == "0" and cents else [f"{whole} dollar" + ("" if whole == "1" else "s")]
    if cents:
        said.append(f"{cents} cent" + ("" if cents == 1 else "s"))
    return " and ".join(said)


def _said_clock(match: re.Match[str]) -> str:
    hour, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return "midnight" if hour == 0 else f"{hour} o'clock" if hour <= 12 else f"{hour} hundred"
    return f"{hour} oh {minutes}" if minutes < 10 else f"{hour} {minutes}"


# Characters of a reply the offline engine says aloud: as many as the agent speaks of a cloud
# engine's text (agent.MAX_SPOKEN_CHARS), about three minutes. A manual's section of bullets has
# no full stop, so its "first two sentences" are all of it: 40 bullets were 3,400 characters.
# The written reply keeps every word.
MAX_SPOKEN_CHARS = 3000
_BREAKS = (re.compile(r"[.!?](?=\s|$)"), re.compile(r"[,;:](?=\s)"), re.compile(r"\S(?=\s)"))


def within_spoken_limit(said: str, limit: int = MAX_SPOKEN_CHARS) -> str:
    """`said` (spoken words) up to `limit` characters: cut at the last sentence's end that fits,
    else a clause's, else a word's, and then told that the rest is in writing."""
    if len(said) <= limit:
        return said
    room = said[: limit - len(say.MORE_IN_WRITING) - 2]
    for mark in _BREAKS:
        ends = [m.end() for m in mark.finditer(room)]
        if ends and ends[-1] > len(room) // 2:
            room = room[: ends[-1]]
            break
    return _ended(room.rstrip(" ,;:")) + " " + say.MORE_IN_WRITING


def said_aloud(text: str) -> str:
    """What of `text` the voices say, as the limit counts it: Markdown's marks and an address's
    scheme and query are not said, and took a reply of 900 spoken characters over 3,000."""
    return speakable(spoken(text))


def speak_reply(voices: ReplyVoices, text: str, voice: str | None, rate_wpm: int) -> tuple[bytes, int]:
    speech = voices.speak(within_spoken_limit(said_aloud(text)), voice, rate_wpm)
    return speech.pcm, speech.rate


# ---- complaints ----------------------------------------------------------------------------

# Words that ask to file, or point at something said before, but tell no problem: "I want to
# make a complaint", "please file that as a complaint". A ticket of only these is empty.
_NO_PROBLEM_TOLD = (
    FUNCTION_WORDS
    | FILING_WORDS
    | frozenset(
        "want wanna would like make have has got please can could need lodge submit open raise new "
        "put down send create start let let's i'd i'm i've id im one another some something formal "
        "official support help issue problem as an complaint's".split()
    )
)
_POINTERS = frozenset({"that", "it", "this"})


def _problem_words(text: str) -> set[str]:
    return set(router.tokenize(text)) - _NO_PROBLEM_TOLD


def _complaint_about(text: str) -> dict[str, Any]:
    """register_grievance's arguments for a problem told in `text`, as the router makes them."""
    words = " ".join(router.tokenize(text))
    return {"category": router.category(words), "description": text.strip()[:2000]}


_QUESTION_OPENERS = frozenset(
    "how what when where why who which can could do does did is are will would should".split()
)


def _answers_what_went_wrong(text: str, history: list[PastTurn]) -> bool:
    """A note that tells a problem right after the bot asked what went wrong, and asks nothing."""
    if not history or not history[-1].reply_text.endswith(say.WHAT_WENT_WRONG):
        return False
    words = router.tokenize(text)
    return bool(_problem_words(text)) and bool(words) and words[0] not in _QUESTION_OPENERS


def _complaints_with_substance(
    intents: list[router.Intent], history: list[PastTurn]
) -> tuple[list[router.Intent], bool]:
    """The intents with every complaint that tells no problem resolved, and whether to ask the
    player what went wrong. "File that as a complaint" files the problem of the turn before (or,
    when that turn filed it already, tells that ticket); "I want to complain" files nothing yet:
    the player is asked what happened, and their answer is the complaint."""
    kept: list[router.Intent] = []
    ask = False
    for intent in intents:
        if intent.name != router.REGISTER or _problem_words(intent.arguments.get("description", "")):
            kept.append(intent)
            continue
        before = history[-1] if history else None
        filed = [
            r["result"]["ticket_key"]
            for r in (before.tool_results if before else [])
            if r.get("name") == router.REGISTER and "ticket_key" in (r.get("result") or {})
        ]
        points_back = bool(_POINTERS & set(router.tokenize(intent.arguments.get("description", ""))))
        told = (before.user_text or "") if before else ""
        # Only a problem asked about ("my game keeps crashing, what do I do?") is "that": not a
        # greeting, a thank-you or a points question.
        asked_about = before is not None and any(r.get("name") == router.MANUALS for r in before.tool_results)
        if points_back and filed:
            kept.append(dataclasses.replace(intent, name=router.STATUS, arguments={"ticket_key": filed[-1]}))
        elif points_back and asked_about and _problem_words(told):
            kept.append(dataclasses.replace(intent, arguments=_complaint_about(told)))
        else:
            ask = True
    return kept, ask


# ---- answers --------------------------------------------------------------------------------


# What a player hears when a tool crashed, by the tool.
_UNAVAILABLE = {
    router.STATS: say.STATS_UNAVAILABLE,
    router.MANUALS: say.MANUALS_UNAVAILABLE,
    router.REGISTER: say.FILING_UNAVAILABLE,
    router.STATUS: say.TICKETS_UNAVAILABLE,
}


def render(tool: str, result: dict[str, Any], heard: str) -> str:
    if "error" in result:
        reason = result["error"]
        if reason == say.TOOL_BROKEN:  # names no topic: of two requests, which one failed?
            reason = _UNAVAILABLE.get(tool, reason)
        return say.TOOL_ERROR.format(reason=_after_sorry(reason))
    if tool == router.STATS:
        return _stats(result, heard)
    if tool == router.MANUALS:
        return _manuals(result)
    if tool == router.REGISTER:
        what = say.CATEGORY_WORDS.get(result.get("category", "other"), "general")
        return say.FILED.format(category=what, ticket_key=result["ticket_key"])
    if tool == router.STATUS:
        return _status(result)
    return say.UNSURE


def _after_sorry(reason: str) -> str:
    """A tool's reason to follow "Sorry, ": its first letter lowered, but never the word "I"."""
    first = reason.split(" ", 1)[0]
    if first == "I" or first.startswith("I'"):
        return reason
    return reason[:1].lower() + reason[1:]


def _ended(sentence: str) -> str:
    """`sentence` with a full stop, so another can follow it (a tool's own message may lack one)."""
    return sentence if sentence.rstrip().endswith((".", "!", "?")) else sentence.rstrip() + "."


# Words that ask about a stretch of time ("yesterday", "this week"), which a summary of all-time
# totals cannot answer.
_TIME_WORDS = frozenset(
    "yesterday today tonight morning afternoon evening week weekend month year season lately "
    "recently ago last".split()
)


def _stats(result: dict[str, Any], heard: str) -> str:
    if not result.get("linked"):
        return say.NO_PROFILE
    words = set(router.tokenize(heard))
    lines = [say.ALL_TIME_ONLY] if words & _TIME_WORDS else []
    achievements = result["achievements"]
    if words & {"achievements", "achievement", "trophies", "badges"}:
        if not achievements:
            lines.append(say.NO_ACHIEVEMENTS.format(player=result["player_name"]))
        else:
            # The summary lists the newest few; its count, when it has one, is of them all.
            total = max(result.get("achievement_count", 0), len(achievements))
            count, names = _count(total, "achievement"), _and(achievements)
            if total > len(achievements):
                lines.append(
                    say.ACHIEVEMENTS_LATEST.format(count=count, shown=len(achievements), names=names)
                )
            else:
                lines.append(say.ACHIEVEMENTS.format(count=count, names=names))
        return " ".join(lines)
    named = [g for g in result["games"] if set(_game(g).split()) <= words]
    for game in named:  # "how many points do I have in poker": that game's figures, not the totals
        lines.append(
            say.GAME_STATS.format(
                game=_game(game), points=game["points_earned"], games=_count(game["games_played"], "game")
            )
        )
        if game["cash_won"]:
            lines.append(say.GAME_CASH.format(cash=game["cash_won"], game=_game(game)))
        else:
            lines.append(say.GAME_NO_CASH.format(game=_game(game)))
    if named:
        return " ".join(lines)
    games = sorted(result["games"], key=lambda g: -g["points_earned"])
    if "rank" in result:
        lines.append(
            say.STATS_TOTAL.format(
                player=result["player_name"],
                points=result["total_points"],
                rank=result["rank"],
                players=result["players_ranked"],
            )
        )
    else:  # every player's total could not be read
        lines.append(
            say.STATS_TOTAL_UNRANKED.format(player=result["player_name"], points=result["total_points"])
        )
    if games:
        best = games[0]
        lines.append(
            say.BEST_GAME.format(
                game=_game(best),
                points=best["points_earned"],
                games=_count(best["games_played"], "game"),
            )
        )
    cash = sum(g["cash_won"] for g in result["games"])
    if cash:
        lines.append(say.CASH_WON.format(cash=cash))
    if achievements:
        lines.append(say.LATEST_ACHIEVEMENT.format(achievement=achievements[0]))
    return " ".join(lines)


def _game(game: dict[str, Any]) -> str:
    """A game type as said aloud: "battle royale" for battle_royale."""
    return say.GAME_WORDS.get(game["game_type"], game["game_type"])


def _manuals(result: dict[str, Any]) -> str:
    passages = result.get("passages") or []
    if not passages:
        return say.NOT_IN_GUIDES
    best = passages[0]
    sentences = re.split(r"(?<=[.!?])\s+", best["text"])
    short = " ".join(sentences[:2])
    return say.FROM_GUIDE.format(title=best["title"].split(":")[0].lower(), passage=short)


def _status(result: dict[str, Any]) -> str:
    tickets = result.get("tickets") or []
    if not tickets:
        return result.get("message") or say.NO_TICKETS
    parts = []
    more = bool(result.get("more_tickets"))
    if more:
        parts.append(say.TICKET_COUNT_AT_LEAST.format(count=_count(len(tickets), "ticket")))
    elif len(tickets) > 1:
        parts.append(say.TICKET_COUNT.format(count=_count(len(tickets), "ticket")))
    for t in tickets[:3]:
        parts.append(
            say.TICKET_LINE.format(
                ticket_key=t["ticket_key"],
                category=say.CATEGORY_WORDS.get(t["category"], "general"),
                status=say.status_said(t["status"]),
                when=_when(t["last_update"]),
                note=_record_note(t.get("note")),
            )
        )
    if more:
        parts.append(say.MORE_OLDER_TICKETS.format(count=len(tickets) - 3))
    elif len(tickets) == 4:
        parts.append(say.ONE_OLDER_TICKET)
    elif len(tickets) > 4:
        parts.append(say.OLDER_TICKETS.format(count=len(tickets) - 3))
    return " ".join(parts)


def _record_note(note: str | None) -> str:
    """Why a ticket's status is from the local record, as said after it."""
    if not note:
        return ""
    return {say.UNTRACKED_NOTE: say.FROM_UNTRACKED, say.HIDDEN_NOTE: say.FROM_HIDDEN}.get(
        note, say.FROM_LOCAL_RECORD
    )


def _when(stamp: str, now: float | None = None) -> str:
    """How long before `now` a ticket's time was. Not its date: /grievance shows the date in the
    player's own time zone, and the UTC date can be the day before or after it."""
    try:
        when = instant(stamp)
    except ValueError:
        return stamp
    minutes = int(((time.time() if now is None else now) - when.timestamp()) // 60)
    days = minutes // (24 * 60)
    if minutes < 1:
        return say.UPDATED_JUST_NOW
    if minutes < 60:
        count = _count(minutes, "minute")
    elif days < 1:
        count = _count(minutes // 60, "hour")
    elif days < 14:
        count = _count(days, "day")
    elif days < 60:
        count = _count(days // 7, "week")
    elif days < 730:
        count = _count(days // 30, "month")
    else:
        count = _count(days // 365, "year")
    return say.UPDATED_AGO.format(count=count)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ---- factories used by bot/app.py and bot/seed.py -------------------------------------------


def speech_dir(settings: Settings) -> Path:
    return settings.storage_dir / "speech"


async def build_speech_models(settings: Settings) -> str:
    started = time.perf_counter()
    sentences, words = await asyncio.to_thread(build_domain_model, settings.manuals_dir, speech_dir(settings))
    took = time.perf_counter() - started
    return f"speech: domain language model of {sentences} sentences, {words} words ({took:.1f} s)"


def stale_speech_models(settings: Settings) -> str:
    """Why the domain model `init` built is not the one it would build now, in one line ("" when
    it is). Blocking: reads the manuals. pocketsphinx hears with it, and stands in for Whisper."""
    if built_from_current_inputs(speech_dir(settings), settings.manuals_dir):
        return ""
    return (
        f"the speech model in {speech_dir(settings)} was built from other manuals or by an older "
        # A running bot's speech workers loaded the model at start: init alone changes nothing.
        "voxdesk: run `voxdesk init`, then restart the bot"
    )


def voices_dir(settings: Settings) -> Path:
    """Where a neural voice downloaded by hand goes (`python -m piper.download_voices NAME
    --data-dir var/voices`); the voice wheels are looked in first."""
    return settings.storage_dir / "voices"


def load_reply_voices(settings: Settings) -> ReplyVoices:
    """Blocking; a model is hashed and loaded once per process, then shared."""
    return ReplyVoices.load(settings.offline.voice, [voices_dir(settings)])


def whisper_dir(settings: Settings) -> Path:
    """Where Whisper base is joined from its two wheels (voxdesk[multilingual])."""
    return settings.storage_dir / "whisper"


def whisper_spec(settings: Settings) -> WhisperSpec:
    """The configured Whisper model, found (or fetched, or joined) and with its domain prompt, for
    the workers; WhisperUnavailable, in one line, when it cannot be had. Blocking."""
    folder = resolve_model(settings.offline.whisper_model, whisper_dir(settings))
    workers = settings.offline.workers or default_workers()
    # The workers share the cores: more threads than cores each only makes them wait on each other.
    threads = max(1, (os.cpu_count() or 1) // workers)
    languages = settings.offline.language_codes()
    if languages != ENGLISH and not is_multilingual(folder):
        languages = ENGLISH  # an English-only model hears English; languages_problem says so
    return WhisperSpec(str(folder), domain_prompt(settings.manuals_dir), threads, languages)


def languages_problem(settings: Settings, spec: WhisperSpec | None) -> str:
    """Why the recogniser chosen cannot hear the languages offline.languages asks for, in one
    line; "" when it can. The bot then answers English notes only."""
    asked = settings.offline.languages
    if settings.offline.language_codes() == ENGLISH or (spec is not None and spec.languages != ENGLISH):
        return ""
    model = f'offline.whisper_model = "{MULTILINGUAL_NAME}" ({MULTILINGUAL_HINT})'
    if spec is None:
        why = f'{POCKETSPHINX} hears English only; set offline.recognizer = "whisper" and {model}'
    else:
        why = f"Whisper model {settings.offline.whisper_model!r} is English-only; set {model}"
    return f"offline.languages is {asked!r} but {why}; the bot would understand English notes only"


async def choose_recognizer(settings: Settings) -> WhisperSpec | None:
    return (await _choose_recognizer(settings))[0]


async def _choose_recognizer(settings: Settings) -> tuple[WhisperSpec | None, str]:
    """Whisper's spec when it is configured (or `auto`) and loads, else None for pocketsphinx and
    why not Whisper. A Whisper model that cannot be had is logged and pocketsphinx hears instead:
    players still get answers. Under `auto` too a model whose files are missing or fail their
    hash is a warning: pocketsphinx hears players' notes far worse, and the operator should know.
    Languages the recogniser cannot hear are named once; English notes are still answered."""
    spec, why_not = None, ""
    if settings.offline.recognizer != POCKETSPHINX:
        try:
            spec = await asyncio.to_thread(whisper_spec, settings)
        except WhisperUnavailable as exc:
            why_not = str(exc)
            if settings.offline.recognizer == AUTO:
                log.warning("hearing with %s: %s", POCKETSPHINX, exc)
            else:
                said = 'offline.recognizer is "whisper" but %s; hearing with %s instead'
                log.warning(said, exc, POCKETSPHINX)
    problem = languages_problem(settings, spec)
    if problem:
        log.warning("%s", problem)
    if spec is not None:
        log.info("hearing with Whisper from %s, %d thread(s) per worker", spec.model_dir, spec.threads)
    return spec, why_not


def describe_recognizer(spec: WhisperSpec | None, why_not: str = "") -> str:
    if spec:
        languages = ""
        if spec.languages != ENGLISH:
            heard = "any" if spec.languages is None else ", ".join(spec.languages)
            languages = f"; languages {heard}, translated into English"
        return f"recogniser whisper ({spec.model_dir}{languages})"
    return f"recogniser {POCKETSPHINX}" + (f" (not Whisper: {why_not})" if why_not else "")


async def create_offline_engine(
    settings: Settings, whisper: WhisperSpec | Literal["choose"] | None = "choose", why_not: str = ""
) -> OfflineEngine:
    """`whisper`: a recogniser already chosen, Whisper's spec or None for pocketsphinx (and
    `why_not` Whisper); "choose" chooses here."""
    if whisper == "choose":
        whisper, why_not = await _choose_recognizer(settings)
    one_blas_thread()
    # Under pocketsphinx `auto` reads through all-MiniLM-L6-v2, as its hearing workers vote: the
    # engine votes again over the same ten transcripts in a conversation's light.
    understanding = vote_meaning(settings.offline.meaning_model, pocketsphinx=whisper is None)
    meaning.use(understanding)
    hearing = WorkerHearing(speech_dir(settings), settings.offline.workers, whisper, understanding)
    # This process's own models load while the workers load theirs, rather than after them. The
    # word tagger loads the meaning model too, and says if it cannot.
    loading = [
        asyncio.ensure_future(asyncio.to_thread(load_reply_voices, settings)),
        asyncio.ensure_future(asyncio.to_thread(word_tagger)),
    ]
    try:
        try:
            await hearing.start()
        except (WorkersStuck, BrokenProcessPool):
            await hearing.aclose()
            # Done before pocketsphinx is tried: its meaning model may be another, which a load
            # still under way would be remembered as.
            await asyncio.gather(*loading, return_exceptions=True)
            raise
    except WorkersStuck as exc:
        if whisper is None:
            raise SpeechModelsUnavailable(
                f"the speech workers had not loaded pocketsphinx's models after {exc.seconds:g} s,"
                " and were stopped"
            ) from None
        # A hang may be Whisper's alone (its model on a stalled mount): pocketsphinx is tried.
        why_not = f"the model in {whisper.model_dir} had not loaded after {exc.seconds:g} s"
        log.warning(
            "hearing with %s: the Whisper model in %s had not loaded after %g s (workers stopped)",
            POCKETSPHINX,
            whisper.model_dir,
            exc.seconds,
        )
        return await create_offline_engine(settings, None, why_not)
    except BrokenProcessPool:
        # A worker died loading its models; its traceback is in the log above.
        if whisper is None:
            raise SpeechModelsUnavailable(
                "the speech workers could not load pocketsphinx's models (the log says why); "
                "run `python -m bot init` to build them again"
            ) from None
        log.warning(
            "hearing with %s: the Whisper model in %s did not load (the log says why)",
            POCKETSPHINX,
            whisper.model_dir,
        )
        why_not = f"the model in {whisper.model_dir} did not load"
        return await create_offline_engine(settings, None, why_not)
    except BaseException:
        for load in loading:
            load.cancel()
        await hearing.aclose()
        raise
    try:
        voices = await loading[0]
        log.info("offline engine %s", voices.in_effect())
        await loading[1]
    except BaseException:
        loading[1].cancel()
        await hearing.aclose()
        raise
    speaker = reply_speaker(settings, voices)
    return OfflineEngine(hearing, voices, settings.offline.rate_wpm, speaker, why_not)


def reply_speaker(settings: Settings, voices: ReplyVoices) -> ReplySpeaker:
    speaker = ReplySpeaker(voices, settings.offline.rate_wpm, settings.offline.sentence_cache_mb * 1_000_000)
    speaker.by_sentence = settings.offline.speak_by_sentence
    return speaker


def settings_problem(settings: Settings, whisper: WhisperSpec | None, why_not: str) -> str:
    """Why the recogniser that hears is not the one configured, in one line ("" when it is): a
    Whisper model asked for by name that cannot be had, or languages it cannot hear. The bot
    runs, but not hearing the way it was told to. Under `auto` pocketsphinx is no failure."""
    if whisper is None and why_not and settings.offline.recognizer == WHISPER:
        return f'offline.recognizer is "whisper" but {why_not}; the bot would hear with {POCKETSPHINX}'
    return languages_problem(settings, whisper)


async def check_offline_engine(settings: Settings) -> str:
    """For `python -m bot check`: an engine as `run` would build it, checked (OfflineEngine.check)."""
    whisper, why_not = None, ""
    if settings.offline.recognizer != POCKETSPHINX:
        try:
            whisper = await asyncio.to_thread(whisper_spec, settings)
        except WhisperUnavailable as exc:
            why_not = str(exc)
    problem = settings_problem(settings, whisper, why_not)
    if problem:
        raise WhisperUnavailable(problem)
    engine = await create_offline_engine(settings, whisper, why_not)
    try:
        return await check_live_offline_engine(settings, engine)
    finally:
        await engine.aclose()


async def check_live_offline_engine(settings: Settings, engine: OfflineEngine) -> str:
    """The running bot's own engine, for the desk: no second set of speech workers."""
    problem = settings_problem(settings, engine.whisper, engine.why_not_whisper)
    if problem:
        raise WhisperUnavailable(problem)
    # Absolute: `check` is read by someone who may not know the folder the bot was started in.
    return f"offline speech: models in {speech_dir(settings).resolve()}, {await engine.check()}"


class NewsSpeaker:
    """Speech for ticket news DMs (and a cloud engine's text replies, and apologies), in the same
    voices as replies. With an offline engine running (the engine, or a cloud engine's fallback)
    it speaks through that engine's speaker: one set of voices, their warnings logged once, and
    one pool of synthesis threads for the cores. Without one, the voices load at the first DM,
    once however many DMs arrive together, and its pool is shut down with the app."""

    def __init__(self, settings: Settings, shared: ReplySpeaker | None = None) -> None:
        self._settings = settings
        self._speaker = shared
        self._owned = shared is None  # a shared speaker is closed by its engine
        self._loading = asyncio.Lock()

    async def __call__(self, text: str, voice: str | None) -> audio.ReplyAudio:
        async with self._loading:
            if self._speaker is None:
                voices = await asyncio.to_thread(load_reply_voices, self._settings)
                self._speaker = ReplySpeaker(voices, self._settings.offline.rate_wpm)
        # Not kept in the cache: what it says is rarely said twice, and must not evict the offline
        # replies' sentences.
        return await self._speaker.speak_soon(spoken(text), voice, keep=False)

    async def aclose(self) -> None:
        async with self._loading:  # a first DM still loading finishes, then is closed too
            if self._speaker is not None and self._owned:
                self._speaker.close()


def create_speaker(settings: Settings, *engines: object) -> NewsSpeaker:
    """`engines`: those the app runs; the first offline one lends its speaker."""
    shared = next((e.speaker for e in engines if isinstance(e, OfflineEngine)), None)
    return NewsSpeaker(settings, shared)
