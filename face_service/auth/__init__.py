"""API keys: random key texts stored only as HMAC digests (``keys``), who a request comes from
and whether keys are required (``authenticator``), and the ``face-service-keys`` command line
(``cli``). The FastAPI side (dependencies, the audit middleware) is in face_service/api."""

from face_service.auth.authenticator import (
    Authenticator,
    Principal,
    auth_required,
    is_loopback,
    log_auth_state,
)
from face_service.auth.keys import SCOPES, Scope, server_secret

__all__ = [
    "SCOPES",
    "Authenticator",
    "Principal",
    "Scope",
    "auth_required",
    "is_loopback",
    "log_auth_state",
    "server_secret",
]
