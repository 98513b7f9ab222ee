"""Notes that ask two things at once, and rambles with one question among fillers and asides:
every request is found, each tool is called, and one reply answers them all in order."""

import pytest

from bot.app import running_app
from bot.audio import reply_from_pcm
from bot.engines.base import Transcript
from bot.intent import router
from bot.lab.samples import speak_pcm
from bot.speech.sentence_encoder import MPNET
from bot.tools.base import ToolContext
from tests.encoders import each_encoder, reading_through

from .conftest import NOVA

STATS, MANUALS, REGISTER, STATUS = router.STATS, router.MANUALS, router.REGISTER, router.STATUS


def names(text: str) -> list[str]:
    return [intent.name for intent in router.route_all(text)]


@pytest.mark.parametrize(
    ("said", "asked"),
    [
        ("what's my score and is my refund ticket done", [STATS, STATUS]),
        ("how do i enable voice chat and any news on my complaint", [MANUALS, STATUS]),
        (
            "someone stole my items in a trade and i want to report it oh and what's my rank",
            [REGISTER, STATS],
        ),
        ("how many points do i have how do i change my username", [STATS, MANUALS]),  # no joiner heard
        ("is ticket grv three closed also i need to report a bug", [STATUS, REGISTER]),
    ],
)
def test_a_note_asking_two_things_routes_to_both_tools_in_the_order_asked(
    said: str, asked: list[str]
) -> None:
    assert names(said) == asked


@pytest.mark.parametrize(
    ("said", "asked"),
    [
        # One complaint told in two clauses, with points that were lost: one ticket, no stats.
        ("i disconnected mid match and lost all my ranked points", REGISTER),
        ("please log a complaint the server crashed and ate my winnings", REGISTER),
        ("i want to complain the server crashed and my points are gone", REGISTER),
        # A problem told as the context of a how-to question is the question.
        ("the game keeps freezing what should i do", MANUALS),
        ("my joystick keeps drifting how do i fix that", MANUALS),
        # "and" inside one request.
        ("what are my points and rank", STATS),
        ("is there a way to hide my online status", MANUALS),
    ],
)
def test_one_request_told_in_several_clauses_stays_one(said: str, asked: str) -> None:
    assert names(said) == [asked]


@pytest.mark.parametrize(
    ("said", "asked"),
    [
        (
            "okay so this is kind of embarrassing i've been playing for like three months now and i still "
            "don't really get it my friend tried to explain it but he talks too fast how do i pair my "
            "controller with the console sorry that's all thanks",
            MANUALS,
        ),
        (
            "hmm okay so my little brother keeps asking me about this and i don't know the answer he's "
            "nine he plays every day after school and we both want to know how do you unlock the second "
            "map in the campaign let me know thanks",
            MANUALS,
        ),
    ],
)
def test_a_ramble_is_routed_by_its_question_not_its_asides(said: str, asked: str) -> None:
    assert names(said) == [asked]


def test_the_grievance_of_a_two_request_note_keeps_the_whole_note() -> None:
    said = "someone stole my items in a trade and i want to report it oh and what's my rank"
    register = next(i for i in router.route_all(said) if i.name == REGISTER)
    assert register.arguments["description"] == said
    assert register.arguments["category"] != "other" or "stole" in said


def test_runners_up_of_a_two_request_note_vote_for_the_pair() -> None:
    heard = [
        "what's my score and is my refund done",  # the ticket misheard: points alone
        "what's my score and my rank and is my refund ticket done",
        "what's my score and rank and is my ticket done",
        "what's my score and is my refund ticket done",
    ]
    # Routed whole, the best three lean to points; asked for everything, the last three agree.
    assert [router.route(text).name for text in heard[:3]] == [STATS] * 3
    settled = router.settle(heard)
    assert settled is not None and settled.act_on
    assert [i.name for i in router.decide_all(settled)] == [STATS, STATUS]


def test_a_held_back_note_asks_again_whatever_its_words() -> None:
    held = Transcript("what's my score and is my refund ticket done", act_on=False)
    assert [i.name for i in router.decide_all(held)] == [router.UNSURE]


async def test_both_tools_are_called_and_both_answered_in_one_reply(settings) -> None:
    async with running_app(settings) as app:
        reply = await app.agent.respond_text(
            ToolContext(user_id=NOVA), "how many points do i have and also any news on my complaint"
        )
    assert [c["name"] for c in reply.tool_calls] == [STATS, STATUS]
    stats, status = (r.result for r in reply.tool_results)
    assert str(stats["total_points"]) in reply.text
    assert all(t["ticket_key"] in reply.text for t in status["tickets"][:3])
    # The points answer comes first, as it was asked first.
    assert reply.text.index(str(stats["total_points"])) < reply.text.index(status["tickets"][0]["ticket_key"])


async def test_a_spoken_two_request_note_is_answered_in_one_spoken_reply(settings) -> None:
    pcm, rate = speak_pcm("What is my score, and also, how do I pair my controller?", "en-us", 150)
    async with running_app(settings) as app:
        reply = await app.agent.respond(ToolContext(user_id=NOVA), reply_from_pcm(pcm, rate).ogg)
    assert [c["name"] for c in reply.tool_calls] == [STATS, MANUALS]
    assert "points" in reply.text and "guide" in reply.text.lower()
    assert reply.audio is not None and reply.audio.duration_secs > 4.0


async def test_each_answer_is_given_from_its_own_request_words(settings) -> None:
    # "achievements" belongs to the how-to question: the points question is answered with points.
    async with running_app(settings) as app:
        reply = await app.agent.respond_text(
            ToolContext(user_id=NOVA), "how many points do i have and how do i unlock achievements"
        )
    assert [c["name"] for c in reply.tool_calls] == [STATS, MANUALS]
    stats = reply.tool_results[0].result
    assert reply.text.startswith(f"{stats['player_name']}, you have {stats['total_points']} points")


@pytest.mark.parametrize(
    ("said", "asked"),
    [
        # The complaint told of is the one asked after: nothing new to file.
        (
            "yesterday i make a report for a player who insult my mother in chat, is somebody looking at it",
            [STATUS],
        ),
        (
            "my sister says i play too much but whatever, the thing is last month i made a complaint "
            "because a hacker stole my sniper skin, what happened with that, is it closed",
            [STATUS],
        ),
        (
            "how do you switch weapons fast in the jungle map and did anything happen with the report i sent",
            [MANUALS, STATUS],
        ),
        # One asked to be filed again.
        (
            "i reported this crash before and it got fixed but now it is back again after the patch, "
            "please file it again",
            [REGISTER],
        ),
        # A first complaint: "never made a complaint before" tells of no earlier filing.
        ("i have never made a complaint before but this guy keeps team killing me every match", [REGISTER]),
        # "i'd put in" is what a player would do now; "i did report him" tells of a filing, and so
        # does "a report a week ago" (a noun, not a request to report).
        ("i'd put in a complaint about this guy, he keeps team killing me every match", [REGISTER]),
        ("i did report him for team killing and nothing happened", [STATUS]),
        (
            "i made a report a week ago about a guy cheating in ranked and he is still playing every match",
            [STATUS],
        ),
    ],
)
def test_a_complaint_told_as_filed_before_is_asked_after_not_filed_again(said: str, asked: list[str]) -> None:
    assert names(said) == asked


@each_encoder({MPNET.name: "the new complaint, told before the old one asked after, is read as its story"})
def test_a_new_complaint_beside_the_old_one_asked_after_is_filed(encoder) -> None:
    said = (
        "a guy called me slurs in voice chat just now and by the way did the report i made last "
        "month get anywhere"
    )
    with reading_through(encoder):
        assert names(said) == [REGISTER, STATUS]


def test_a_filing_read_as_a_status_check_keeps_its_place_in_the_order_asked() -> None:
    asked = names("i sent a complaint last week about a cheater and how do i change my crosshair")
    assert asked == [STATUS, MANUALS]


def test_a_filing_told_in_any_stretch_of_a_status_request_is_the_ticket_it_asks_after() -> None:
    # The tagger may read a status check in pieces; the old ticket named in a shorter piece is
    # still the one asked after, beside a new complaint to file.
    check = router.Intent(
        STATUS,
        said="did anything happen with it",
        stretches=("the report i made", "did anything happen with it"),
    )
    joined = "a cheater ruined my match again and the report i made did anything happen with it"
    assert not router._asks_after_filing(joined, router._words_of([check]))


async def test_a_status_check_told_as_a_filing_offers_a_new_complaint(settings) -> None:
    told = "yesterday i make a report for a player who insult my mother in chat, is somebody looking at it"
    async with running_app(settings) as app:
        ctx = ToolContext(user_id=NOVA)
        checked = await app.agent.respond_text(ctx, told)
        plain = await app.agent.respond_text(ctx, "what's the status of my tickets")
        new = await app.agent.respond_text(ctx, "it's a new one, a player insulted my mother in chat")
    assert [c["name"] for c in checked.tool_calls] == [STATUS]
    assert "new complaint" in checked.text  # a player who meant a new one hears how to say so
    assert "new complaint" not in plain.text
    assert [c["name"] for c in new.tool_calls] == [REGISTER]


def test_two_tickets_asked_by_number_are_two_status_checks() -> None:
    asked = router.route_all("what is the status of grv twelve and what is the status of grv fifteen")
    assert [(i.name, i.arguments.get("ticket_key")) for i in asked] == [
        (STATUS, "GRV-12"),
        (STATUS, "GRV-15"),
    ]


@each_encoder({MPNET.name: "'report a cheater' beside 'the status of it' is read as a how-to question"})
def test_a_filing_and_its_status_in_one_note_is_one_filing(encoder) -> None:
    with reading_through(encoder):
        # The new ticket's reply gives its key: there is no status to ask for yet.
        assert names("i want to report a cheater and what is the status of it") == [REGISTER]


@each_encoder()
async def test_it_after_a_filing_in_the_same_note_is_the_ticket_just_filed(settings, encoder) -> None:
    with reading_through(encoder):
        async with running_app(settings.replace(offline={"meaning_model": encoder.name})) as app:
            ctx = ToolContext(user_id=NOVA)
            # Filed with another request in the same note, "it" next time is still that ticket.
            filed = await app.agent.respond_text(
                ctx, "i want to report a cheater oh and how do i block someone"
            )
            later = await app.agent.respond_text(ctx, "what's the status of it")
    assert [c["name"] for c in filed.tool_calls] == [REGISTER, MANUALS]
    key = filed.tool_results[0].result["ticket_key"]
    assert later.tool_calls == [{"name": STATUS, "arguments": {"ticket_key": key}}]


def test_a_loose_general_model_transcript_files_nothing_even_as_one_of_two_requests() -> None:
    from bot.engines.offline.hearing import hear
    from bot.speech.recognizer import Hypothesis

    class Loose:
        def recognize(self, pcm: bytes, general: bool = False):  # type: ignore[no-untyped-def]
            if general:
                text = "how many points do i have and i want to report a cheater in ranked"
                return Hypothesis(text, "general", 0.0, (text,))
            return Hypothesis("the so what", "domain", 0.0, ("the so what", "um the"))

    heard = hear(Loose(), bytes(3200), 16_000)  # type: ignore[arg-type]
    assert not heard.act_on


def test_the_new_complaint_offer_follows_a_tool_message_as_its_own_sentence() -> None:
    from bot.engines.offline.engine import _ended

    assert _ended("The ticket system is unreachable") == "The ticket system is unreachable."
    assert _ended("GRV-3 is open.") == "GRV-3 is open."
