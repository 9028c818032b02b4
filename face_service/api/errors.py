"""The one place where the service's errors become HTTP answers: each FaceServiceError's status,
its message as ``detail``, and Retry-After for those the client should retry; validation errors
as FastAPI's list, with the offending inputs cut short and made JSON-safe (never echoed raw);
the router's own (404, 405) and an unexpected failure (500) alike. Every error body carries the
request's ``request_id`` (the ``X-Request-ID`` header), to find it in the log."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException

from face_service import metrics
from face_service.api.request_context import REQUEST_ID_HEADER
from face_service.errors import (
    AuthenticationError,
    FaceServiceError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceBusyError,
)

logger = logging.getLogger("face_service")


def count_refusal(error: FaceServiceError) -> None:
    """The metrics of refusals (face_service.metrics): auth failures by reason, rate-limit and
    admission rejections; counted here, once per answer, whatever raised them."""
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        metrics.AUTH_FAILURES.labels(str(error.status_code), error.reason).inc()
    elif isinstance(error, RateLimitedError):
        metrics.RATE_LIMIT_REJECTIONS.inc()
    elif isinstance(error, ServiceBusyError):
        metrics.ADMISSION_REJECTIONS.inc()


def request_id_of(request: Request) -> str | None:
    """The id RequestContextMiddleware gave the request."""
    return getattr(request.state, "request_id", None)


def error_body(request: Request, detail: object) -> dict[str, Any]:
    return {"detail": detail, "request_id": request_id_of(request)}


async def face_service_error(request: Request, error: FaceServiceError) -> JSONResponse:
    count_refusal(error)
    headers = dict(error.headers)
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
        logger.warning("%s %s: %s", request.method, request.url.path, error)
    elif error.status_code >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, error)
    # The log has the message; the client gets the public text where internals may show.
    detail = error.public_detail or str(error)
    return JSONResponse(error_body(request, detail), status_code=error.status_code, headers=headers)


# How much of an invalid input a 422 shows: enough to recognise it, never the request back.
MAX_ECHO_CHARS = 100
MAX_MESSAGE_CHARS = 300
MAX_ERRORS = 20


def safe_scalar(value: object) -> str | int | float | bool | None:
    """A JSON-safe, short stand-in for an invalid input: scalars as they are (non-finite floats
    as text), long text cut, containers and anything else only by their type."""
    if value is None or isinstance(value, bool | int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)[:40]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "..."
    return f"<{type(value).__name__}>"


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's validation list (type, loc, msg, input, ctx) with every value JSON-safe."""
    safe = []
    for error in list(errors)[:MAX_ERRORS]:
        item: dict[str, Any] = {
            "type": str(error.get("type", "value_error")),
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", ""))[:MAX_MESSAGE_CHARS],
        }
        if "input" in error:
            item["input"] = safe_scalar(error["input"])
        if isinstance(error.get("ctx"), dict):
            item["ctx"] = {str(key): safe_scalar(value) for key, value in error["ctx"].items()}
        safe.append(item)
    return safe


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body(request, safe_errors(error.errors())), status_code=422)


async def router_error(request: Request, error: HTTPException) -> Response:
    """The router's and Starlette's own errors (no such route: 404, wrong method: 405)."""
    if not is_body_allowed_for_status_code(error.status_code):
        return Response(status_code=error.status_code, headers=error.headers)
    return JSONResponse(
        error_body(request, error.detail), status_code=error.status_code, headers=error.headers
    )


async def unexpected_error(request: Request, error: Exception) -> JSONResponse:
    """A bug's answer: no internals, the id to find its traceback (the server logs it, with
    the id, after this answer)."""
    request_id = request_id_of(request)
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return JSONResponse(
        error_body(request, "internal error; the service's log has the details"),
        status_code=500,
        headers=headers,
    )


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FaceServiceError, face_service_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, router_error)  # type: ignore[arg-type]
    # Exception: Starlette calls this one outside every middleware, hence the header here.
    app.add_exception_handler(Exception, unexpected_error)
