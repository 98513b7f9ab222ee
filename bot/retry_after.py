"""A Retry-After header's wait, in either form RFC 9110 allows: seconds, or an HTTP date; and a
Unix time, as some servers send it."""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import time

# Seconds this many or more are a Unix time, as some servers send a wait's end (GitHub's
# x-ratelimit-reset style, and some gateways' Retry-After): as a duration it would be 31 years,
# and every caller would wait the longest it allows.
UNIX_TIME_FLOOR = 1e9  # 2001-09-09


def seconds_named(value: str | None, past: float | None = 0.0) -> float | None:
    """Seconds `value` asks to wait: a number of seconds ("120"; a fraction, as some proxies and
    OpenAI's own servers send, too), an HTTP date ("Wed, 21 Oct 2026 07:28:00 GMT") or a Unix
    time (UNIX_TIME_FLOOR or more), the last two counted from now, `past` once they are past:
    None for a caller with a wait of its own to fall back on, as a time past on arrival (a
    proxy's stale page, a clock behind) names none it can trust. None when it names no wait. As
    the server said it, however long: each caller bounds the wait it makes of it."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isascii():  # "²" (a stray Latin-1 byte) is a digit to str.isdigit, not to float
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if not (math.isfinite(seconds) and seconds >= 0):
                return None
            if seconds < UNIX_TIME_FLOOR:
                return seconds
            # By the server's clock, as an HTTP date is.
            seconds -= time.time()
            return seconds if seconds > 0 else past
    when = http_date(value)
    if when is None:
        return None
    seconds = when - time.time()
    return seconds if seconds > 0 else past


def http_date(value: str | None) -> float | None:
    """An HTTP date ("Wed, 21 Oct 2026 07:28:00 GMT", a Date or Retry-After header) as Unix
    seconds; None when `value` is none or no date."""
    try:
        when = email.utils.parsedate_to_datetime(value or "")
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT even when it does not say so
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
