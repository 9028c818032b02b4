"""When to retry a request: on 503 and 429, after the Retry-After the service asks for (else an
exponential backoff), within a bounded number of attempts and a bounded total time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts``: how many times a request is sent at most (1: never retried).
    ``max_total_s``: no retry starts if its wait would end later than this after the first
    attempt began. ``max_delay_s``: a Retry-After longer than this is not waited for (the error
    is raised at once). Without Retry-After the wait is ``backoff_s * 2**retry``."""

    attempts: int = 4
    max_total_s: float = 60.0
    max_delay_s: float = 30.0
    backoff_s: float = 0.5
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({429, 503}))
    connect_errors: bool = False  # also retry when the service cannot be reached at all

    def delay(self, retry: int, retry_after_s: float | None) -> float:
        """The wait before retry number ``retry`` (0-based)."""
        if retry_after_s is not None:
            return max(0.0, retry_after_s)
        return self.backoff_s * 2**retry

    def should_retry(self, attempt: int, started: float, wait_s: float) -> bool:
        """``attempt``: how many were sent; ``started``: time.monotonic() of the first."""
        if attempt >= self.attempts or wait_s > self.max_delay_s:
            return False
        return time.monotonic() - started + wait_s <= self.max_total_s


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
