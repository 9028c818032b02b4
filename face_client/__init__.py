"""A Python client for the face recognition service: ``Client`` (sync) and ``AsyncClient``,
typed results (face_client.models), typed errors (face_client.errors), retries on 503/429
(face_client.retry). The ``face`` command line (face_client.cli) is built on it."""

from face_client.aio import AsyncClient
from face_client.calls import (
    DELETE_ALL_CONFIRMATION,
    UNSET,
    AuditFilter,
    DetectionOptions,
    ImageSource,
)
from face_client.client import Client
from face_client.errors import (
    AuthError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    FaceAPIError,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
)
from face_client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "DELETE_ALL_CONFIRMATION",
    "NO_RETRY",
    "UNSET",
    "AsyncClient",
    "AuditFilter",
    "AuthError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "DetectionOptions",
    "FaceAPIError",
    "Forbidden",
    "ImageSource",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMedia",
]
