"""The flood limit's memory of a player's uses, as a catch-up weighs a note read back long after
it was sent: the times are given, so the windows are exact."""

from __future__ import annotations

import pytest

from cogs.limits import InAnyWindow, Lateness, Limits, room_for

RATE, PER = 2, 600.0
KEEP = 30 * 60 + PER  # catch_up_minutes 30
T = 1_000_000.0  # a start of time


def uses_at(times: list[float], now: float) -> list[float]:
    """A player's uses counted live at `times`, as a catch-up at `now` finds them."""
    mapping = Limits(InAnyWindow(RATE, PER, KEEP), lambda player: player)
    for at in times:
        bucket = mapping.get_bucket("nova", T + at)
        assert isinstance(bucket, InAnyWindow) and bucket.update_rate_limit(T + at) is None
    bucket = mapping.get_bucket("nova", T + now)
    assert isinstance(bucket, InAnyWindow)
    return [t - T for t in bucket.uses()]


def test_a_note_read_back_is_weighed_with_older_uses_than_the_newest_few():
    # Live at 0, 590 and 1195 (each within the limit); a note sent at 5 in a private thread the
    # bot is added to at 1200 would make three in the minutes to 590.
    assert not room_for(uses_at([0.0, 590.0, 1195.0], 1200.0), 5.0, RATE, PER)


def test_a_note_read_back_after_a_quiet_spell_is_weighed_with_the_uses_before_it():
    # Two notes at once, then nothing for more than the window: a third sent with them, read back
    # at 700, is one too many.
    assert not room_for(uses_at([0.0, 1.0], 700.0), 2.0, RATE, PER)


def test_uses_older_than_keep_before_the_newest_are_let_go():
    assert uses_at([0.0, 1000.0, 2500.0], 2500.0) == [1000.0, 2500.0]


def test_a_notes_lateness_is_never_more_than_it_was_whatever_the_clocks_read():
    # Discord's clock an hour either side of the host's, or the same: a note that came 200 s
    # after it was sent, among ones that came within a second, is 200 s late, less no more than
    # those came late themselves; one that came alone, or after a quiet spell, is on time.
    for offset in (-3600.0, 0.0, 3600.0):
        lateness = Lateness(keep=600.0)
        assert lateness.of(T + offset, now=50.0) == 0.0  # the first to come: nothing to tell by
        assert lateness.of(T + offset + 10, now=60.5) == 0.5
        assert lateness.of(T + offset + 20, now=270.0) == 200.0
        assert lateness.of(T + offset + 700, now=950.0) == 0.0  # the prompt ones are long gone


def test_a_message_as_prompt_as_the_promptest_keeps_the_mark_for_keep_seconds_more():
    # The mark is the smallest gap among the messages of the last `keep` seconds: one that came
    # exactly as promptly renews it, and a note late after that is still told it is late.
    lateness = Lateness(keep=600.0)
    assert lateness.of(T, now=10.0) == 0.0
    assert lateness.of(T + 500, now=510.0) == 0.0  # as prompt: the mark now dates from here
    assert lateness.of(T + 700, now=730.0) == 20.0


def test_a_limit_is_told_the_time_and_never_reads_the_host_clock():
    # Every limit runs on time.monotonic() or Discord's timestamps. Left out, the time is
    # discord.py's default, time.time(), and a use weighed on it against uses on the other clock:
    # a use at 0 (as a monotonic clock may read) would be taken for "now" by the host clock, and
    # the next one, a second on, asked to wait half a century.
    limit = InAnyWindow(1, 60.0)
    assert limit.update_rate_limit(0.0) is None
    assert limit.update_rate_limit(1.0) == 59.0 and limit.get_retry_after(1.0) == 59.0
    with pytest.raises(TypeError):
        limit.update_rate_limit()  # type: ignore[call-arg]
    mapping = Limits(InAnyWindow(1, 60.0), lambda player: player)
    with pytest.raises(TypeError):
        mapping.update_rate_limit("nova")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        mapping.get_bucket("nova")  # type: ignore[call-arg]
    assert mapping.update_rate_limit("nova", 5.0) is None and mapping.update_rate_limit("nova", 6.0) == 59.0


def test_a_copy_of_a_limit_is_one_told_the_time_too():
    # discord.py's CooldownMapping.copy() builds a bare CooldownMapping, which takes time.time()
    # for a use given no time: the copy must hold to the same contract, with the same players.
    mapping = Limits(InAnyWindow(1, 60.0), lambda player: player)
    assert mapping.update_rate_limit("nova", 5.0) is None
    copied = mapping.copy()
    assert isinstance(copied, Limits) and copied.update_rate_limit("nova", 6.0) == 59.0
    with pytest.raises(TypeError):
        copied.get_bucket("nova")  # type: ignore[call-arg]


def test_a_use_is_allowed_again_the_moment_the_wait_it_was_told_runs_out():
    # "One more is allowed once the oldest of the newest `rate` is `per` seconds old": the wait a
    # refused use is told ends exactly there, and a use then is let in, as room_for weighs it.
    limit = InAnyWindow(1, 60.0)
    assert limit.update_rate_limit(T) is None
    wait = limit.update_rate_limit(T + 10.0)
    assert wait == 50.0
    assert limit.get_tokens(T + 10.0 + wait) == 1 and limit.update_rate_limit(T + 10.0 + wait) is None
    assert room_for([T], T + 60.0, 1, 60.0)


def test_a_window_counted_past_full_tells_the_wait_until_enough_uses_leave_it():
    # A catch-up counts notes it answered by its own weighing, even into a full window: with three
    # uses where two are allowed, two must leave before one more fits, so the wait runs to the
    # second oldest's end, and no tokens are left (never fewer than none) until then.
    limit = InAnyWindow(2, 60.0)
    for at in (0.0, 10.0, 20.0):
        limit.count(T + at)
    assert limit.get_tokens(T + 30.0) == 0
    assert limit.get_retry_after(T + 30.0) == 40.0
    assert limit.update_rate_limit(T + 30.0) == 40.0
    assert limit.update_rate_limit(T + 70.0) is None


def test_an_older_use_counted_late_does_not_cut_short_the_players_bucket():
    # A catch-up counts a note by when it was sent, after a live one counted as it came: the
    # bucket must still live `keep` past the newest use, or the mapping drops it, and the live
    # use with it, at the next note.
    mapping = Limits(InAnyWindow(RATE, PER, KEEP), lambda player: player)
    bucket = mapping.get_bucket("nova", T + 2000.0)
    assert isinstance(bucket, InAnyWindow) and bucket.update_rate_limit(T + 2000.0) is None
    bucket.count(T + 0.0)  # read back by a catch-up, sent long before
    later = mapping.get_bucket("nova", T + 2500.0)
    assert later is bucket and [t - T for t in later.uses()] == [0.0, 2000.0]


def test_a_use_given_back_frees_its_place_in_the_window():
    limit = InAnyWindow(1, 60.0)
    assert limit.update_rate_limit(T) is None
    limit.uncount(T)
    assert limit.uses() == [] and limit.update_rate_limit(T + 1.0) is None
    limit.uncount(T + 30.0)  # none counted then: nothing given back
    assert limit.uses() == [T + 1.0]


def test_a_reset_limit_forgets_every_use():
    limit = InAnyWindow(1, 60.0)
    assert limit.update_rate_limit(T) is None
    limit.reset()
    assert limit.uses() == [] and limit.update_rate_limit(T + 1.0) is None


def test_a_lateness_mark_is_kept_for_keep_seconds_and_no_longer():
    lateness = Lateness(keep=600.0)
    assert lateness.of(T, now=10.0) == 0.0
    assert lateness.of(T + 300, now=610.0) == 300.0  # exactly `keep` on: the mark still holds
    assert lateness.of(T + 301, now=610.5) == 0.0  # past it: this one is the mark now
