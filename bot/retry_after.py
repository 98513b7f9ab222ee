"""A Retry-After header's wait, in either form RFC 9110 allows: seconds, or an HTTP date."""

from __future__ import annotations

import datetime as dt
import email.utils
import math


def seconds_named(value: str | None) -> float | None:
    """Seconds `value` asks to wait: a number of seconds ("120"; a fraction, as some proxies and
    OpenAI's own servers send, too) or an HTTP date ("Wed, 21 Oct 2026 07:28:00 GMT"), counted
    from now, 0 once it is past. None when it names no wait. As the server said it, however long:
    each caller bounds the wait it makes of it."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isascii():  # "²" (a stray Latin-1 byte) is a digit to str.isdigit, not to float
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT even when it does not say so
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
