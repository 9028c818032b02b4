"""The per-client rate limit: each API key (``request.state.principal``, set by authentication)
or, without one, each client address gets ``FACE_RATE_LIMIT`` requests (e.g. ``"20/second"``,
``"20/second;600/minute"``); beyond it the API answers 429 with Retry-After. Counted in this
process's memory by the ``limits`` library (moving windows)."""

from __future__ import annotations

import contextlib
import math
import time

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from face_service.api.auth import authenticate, presented_key
from face_service.errors import AuthenticationError, RateLimitedError

# Probes must answer whoever asks, however often; a scrape must not use up a client's share
# (nor fail, leaving a gap in the graphs, while the service is busiest).
EXEMPT_PREFIXES = ("/health", "/metrics")


class RateLimiter:
    def __init__(self, spec: str) -> None:
        self.items: list[RateLimitItem] = parse_many(spec) if spec.strip() else []
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def enabled(self) -> bool:
        return bool(self.items)

    def check(self, key: str) -> None:
        """Counts one request of ``key``; raises RateLimitedError when a window is full."""
        for item in self.items:
            if not self._limiter.hit(item, key):
                reset_at = self._limiter.get_window_stats(item, key).reset_time
                wait = max(1, math.ceil(reset_at - time.time()))
                raise RateLimitedError(
                    f"rate limit of {item} exceeded for this client; retry in {wait} s", wait
                )


def client_key(request: Request) -> str:
    """The API key's name when authentication set one, else the client's address."""
    principal = getattr(request.state, "principal", None)
    if principal:
        return f"key:{principal}"
    return f"address:{request.client.host if request.client else 'unknown'}"


async def enforce_rate_limit(request: Request) -> None:
    """An app-wide dependency: counts the request against its client's limit."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None or not limiter.enabled or request.url.path.startswith(EXEMPT_PREFIXES):
        return
    # App-wide dependencies run before the routes' own, so the key is resolved here (cached on
    # the request for them). A missing or bad key is left to the route (401 where one is needed;
    # open routes take none): it is counted against its address meanwhile.
    with contextlib.suppress(AuthenticationError):
        await authenticate(request, presented_key(request))
    limiter.check(client_key(request))
