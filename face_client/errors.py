"""The client's exceptions: one class per family of the API's error statuses, each carrying the
status, the API's message (``detail``), the request's id and, for validation errors, the list of
what was wrong."""

from __future__ import annotations

from typing import Any

import httpx


class FaceAPIError(Exception):
    """Base class. ``status`` is the HTTP status (None when no answer came), ``detail`` the
    API's message, ``retry_after_s`` the Retry-After it sent, if any."""

    status: int | None = None

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        retry_after_s: float | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(f"{status}: {detail}" if status is not None else detail)
        if status is not None:
            self.status = status
        self.detail = detail
        self.errors = errors or []
        self.retry_after_s = retry_after_s
        self.response = response

    @property
    def request_id(self) -> str | None:
        """The service's id of the failed request (its X-Request-ID), to find it in its log."""
        return self.response.headers.get("x-request-id") if self.response is not None else None


class BadRequest(FaceAPIError):
    """400: an unreadable image, a missing confirmation."""

    status = 400


class AuthError(FaceAPIError):
    """401 or 403."""


class Unauthorized(AuthError):
    """401: no key, or not a valid one."""

    status = 401


class Forbidden(AuthError):
    """403: the key lacks the scope the route needs."""

    status = 403


class NotFound(FaceAPIError):
    """404: no such identity, template or record."""

    status = 404


class Conflict(FaceAPIError):
    """409: the identity exists already."""

    status = 409


class TooLarge(FaceAPIError):
    """413: an image or the request is over the service's limits."""

    status = 413


class UnsupportedMedia(FaceAPIError):
    """415: not multipart (or JSON where accepted), or a file that is not an image."""

    status = 415


class Unprocessable(FaceAPIError):
    """422: no face found, or a field failed validation (``errors`` lists them)."""

    status = 422


class RateLimited(FaceAPIError):
    """429: too many requests from this key or address (after the client's retries)."""

    status = 429


class Unavailable(FaceAPIError):
    """503: Triton, a model or the gallery cannot answer now, or the service is busy."""

    status = 503


class ServerError(FaceAPIError):
    """Any other 5xx."""


class ConnectionFailed(FaceAPIError):
    """No answer: the service cannot be reached, or it did not answer in time."""


ERRORS_BY_STATUS: dict[int, type[FaceAPIError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedMedia,
    422: Unprocessable,
    429: RateLimited,
    503: Unavailable,
}


def error_class(status: int) -> type[FaceAPIError]:
    if status in ERRORS_BY_STATUS:
        return ERRORS_BY_STATUS[status]
    if status >= 500:
        return ServerError
    if status in (405, 406, 411, 414, 431):
        return BadRequest
    return FaceAPIError


def detail_text(detail: object) -> str:
    """FastAPI's validation detail is a list of {loc, msg, ...}: one readable line of it."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg', item)}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def from_response(response: httpx.Response, retry_after_s: float | None) -> FaceAPIError:
    """The exception for an error answer, with the API's ``detail`` as its message."""
    errors: list[dict[str, Any]] = []
    try:
        body = response.json()
        detail: object = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text or response.reason_phrase
    if isinstance(detail, list):
        errors = [d for d in detail if isinstance(d, dict)]
    cls = error_class(response.status_code)
    return cls(
        detail_text(detail),
        status=response.status_code,
        errors=errors,
        retry_after_s=retry_after_s,
        response=response,
    )
