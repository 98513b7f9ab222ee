"""What every fake shares: the requests it refused because the real service would have refused
them too (malformed, or asking for what the service does not do), and a check when it stops that
fails the test with the fake's own reasons, rather than leaving the test to time out waiting for
an answer that was never going to come.

A refusal a test asked for (a scripted failure, a wrong key on purpose) is not a violation; a
test that provokes real refusals on purpose calls `expect_violations()`. An answer the fake gave
that the real service never would (one its spec does not allow) fails the test whatever it
expects: it is the fake's fault, and a bot tested against it could come to rely on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar


class FakeRefused(AssertionError):
    def __init__(self, fake: Any, reasons: list[str]) -> None:
        listed = "\n".join(f"  - {r}" for r in reasons)
        super().__init__(
            f"{type(fake).__name__} refused {len(reasons)} request(s) as the real service would:\n{listed}"
        )


class Strict:
    """Mixed into each fake, which sets `violations = []` and `violations_expected = False`."""

    violations: list[str]
    violations_expected: bool
    # Replaced, never appended to in place: the empty default is shared by every fake.
    off_spec_answers: tuple[str, ...] = ()

    def refuse(self, reason: str) -> str:
        """Record why a request was refused; returns the reason, for the error body."""
        self.violations.append(reason)
        return reason

    def answered_off_spec(self, reason: str) -> None:
        """Record an answer the fake gave that the real service's spec does not allow."""
        self.off_spec_answers = (*self.off_spec_answers, reason)

    def expect_violations(self) -> None:
        """This test provokes refusals on purpose: they do not fail it."""
        self.violations_expected = True

    @property
    def unexpected_violations(self) -> list[str]:
        theirs = [] if self.violations_expected else list(self.violations)
        return [*theirs, *(f"the fake answered off spec: {r}" for r in self.off_spec_answers)]

    def check_violations(self) -> None:
        if self.unexpected_violations:
            raise FakeRefused(self, self.unexpected_violations)


class _StrictFake(Protocol):
    unexpected_violations: list[str]

    def check_violations(self) -> None: ...

    async def stop(self) -> None: ...


F = TypeVar("F", bound=_StrictFake)


@contextlib.asynccontextmanager
async def checked(fake: F) -> AsyncIterator[F]:
    """Run a started fake, stop it at the end, and fail if it refused what it should not have."""
    try:
        yield fake
    except BaseException as exc:
        if fake.unexpected_violations and not isinstance(exc, FakeRefused):
            exc.add_note(str(FakeRefused(fake, fake.unexpected_violations)))
        raise
    finally:
        await fake.stop()
    fake.check_violations()
