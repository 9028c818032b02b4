"""Cross-origin access (CORS) for browser applications served from other origins: Starlette's
CORSMiddleware with the origins of ``FACE_CORS_ORIGINS``, or nothing at all when it is empty
(the default: a browser then keeps other origins' pages away from the API)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from face_service.settings import Settings

# What the routes use (face_service/api/routes); HEAD and OPTIONS come with GET and preflights.
ALLOWED_METHODS = ("GET", "POST", "PATCH", "DELETE")
# The headers a browser application sends: its key (either way), JSON bodies, and its own
# request id to find its requests in the service's log.
ALLOWED_HEADERS = ("X-API-Key", "Authorization", "Content-Type", "X-Request-ID")
# The headers its scripts may read besides the simple ones: the id to report, and how long to
# wait after a 429 or 503.
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")
# How long a browser may reuse a preflight's answer (Starlette's default, 10 minutes).
PREFLIGHT_MAX_AGE_S = 600


def add_cors(app: FastAPI, settings: Settings) -> None:
    """CORSMiddleware for ``settings.cors_origins``; nothing when there are none."""
    if not settings.cors_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=settings.cors_allow_credentials,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
