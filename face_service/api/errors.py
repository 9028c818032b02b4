"""The one place where the service's errors become HTTP answers: each FaceServiceError's status,
its message as ``detail``, and Retry-After for those the client should retry."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from face_service.errors import FaceServiceError

logger = logging.getLogger("face_service")


async def face_service_error(request: Request, error: FaceServiceError) -> JSONResponse:
    headers = dict(error.headers)
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
        logger.warning("%s %s: %s", request.method, request.url.path, error)
    elif error.status_code >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": str(error)}, status_code=error.status_code, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FaceServiceError, face_service_error)  # type: ignore[arg-type]
