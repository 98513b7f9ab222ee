"""What every voxdesk process does to its log: the bot's, and its speech workers'.

Our own lines never carry a secret, but a third party's text can: an OpenAI-compatible server
whose 401 echoes the key, a client library's exception. So the root handlers mask every
configured secret value in a record's message, exception and stack text, whichever library's
logger the record came from. A logger's own filter would miss its children; a handler's sees
every record it prints.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
# Shorter values are not masked: a one-letter "secret" would mask that letter in every line.
MIN_SECRET_CHARS = 8

# Loggers that say too much at INFO, which `run` logs. HTTP clients log every request's whole
# address (which may carry a proxy's user and password: openai.base_url =
# "https://user:pass@proxy/v1"); faster-whisper logs a line for every note it hears.
QUIET_LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "azure.core.pipeline.policies.http_logging_policy",
    "faster_whisper",
)

_values: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None


def mask_secrets(values: Iterable[str]) -> None:
    """Mask these values (besides those given before) in every line the masking handlers print.
    Values given before stay masked: a key replaced in the settings may still be in flight."""
    global _values, _pattern
    wanted = _values | {v for v in values if len(v) >= MIN_SECRET_CHARS}
    if wanted == _values:
        return
    # Longest first: a secret that contains another is masked whole.
    alternatives = sorted(wanted, key=lambda v: (-len(v), v))
    _values, _pattern = frozenset(wanted), re.compile("|".join(map(re.escape, alternatives)))


def masked_values() -> tuple[str, ...]:
    """The values masked so far, for a worker process to mask the same."""
    return tuple(sorted(_values))


def masked(text: str) -> str:
    """`text` with every secret value replaced by MASK: for what no masking handler prints (a
    command's own error line, `check`'s lines, an exception's traceback on stderr)."""
    pattern = _pattern
    return text if pattern is None else pattern.sub(MASK, text)


class SecretMask(logging.Filter):
    """Replaces each secret value in a record with MASK; lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        pattern = _pattern
        if pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit: the handler reports that when it formats
            return True
        if pattern.search(message):
            record.msg, record.args = pattern.sub(MASK, message), None
        text = record.exc_text
        if record.exc_info and not text:
            text = _plain.formatException(record.exc_info)
        if text and pattern.search(text):
            # Without exc_info, so a formatter that renders the exception afresh (discord.py's
            # does, in colour) prints the masked text. The stash outlives a formatter that clears
            # exc_text after printing, for the next handler.
            record.exc_info, record.exc_text = None, pattern.sub(MASK, text)
            record.voxdesk_masked_exc_text = record.exc_text
        elif not record.exc_info and not text:
            record.exc_text = getattr(record, "voxdesk_masked_exc_text", None)
        if record.stack_info and pattern.search(record.stack_info):
            record.stack_info = pattern.sub(MASK, record.stack_info)
        return True


_plain = logging.Formatter()
SECRET_MASK = SecretMask()


def install_secret_mask(logger: logging.Logger | None = None) -> None:
    """Mask secrets in every handler the root logger (or this one) has now; call it again after
    replacing them. Adding the same filter twice keeps one."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(SECRET_MASK)


def quiet_noisy_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
