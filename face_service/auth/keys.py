"""API key texts: scopes and what each implies, new random keys (``fsk_<key id>_<secret>``), the
key id a text is looked up by, the HMAC-SHA256 digest that is all the database keeps of a key,
and the server secret that digest is made with (FACE_AUTH_SECRET, else a 0600 file)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from face_service.settings import Settings

logger = logging.getLogger(__name__)

Scope = Literal["read", "write", "admin", "metrics"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin", "metrics")
# admin implies write implies read; metrics (GET /metrics only, for Prometheus: no biometric
# data) stands alone, and admin implies it too.
_IMPLIED: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin", "metrics"}),
    "metrics": frozenset({"metrics"}),
}
PREFIX = "fsk"
KEY_PATTERN = re.compile(rf"^{PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{32,}})$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MIN_OPERATOR_KEY = 32  # characters of a FACE_ADMIN_KEY not made by this service
SECRET_FILE = "auth_secret"


def effective_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Every scope the given ones grant; ValueError for an unknown one."""
    granted: set[str] = set()
    for scope in scopes:
        if scope not in _IMPLIED:
            raise ValueError(f"unknown scope {scope!r}: use {', '.join(SCOPES)}")
        granted |= _IMPLIED[scope]
    return frozenset(granted)


def normal_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes as stored: known, each once, in SCOPES order; ValueError when none."""
    given = set(scopes)
    effective_scopes(given)
    if not given:
        raise ValueError(f"a key needs at least one scope of {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in given)


def new_key() -> tuple[str, str]:
    """(key id, key text): 48 random bits of id and 256 of secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def lookup_id(text: str, secret: bytes) -> str:
    """The id a key text is stored under: the id in a ``fsk_`` key, else one derived from the
    whole text with the server secret (a key an operator made up, e.g. FACE_ADMIN_KEY)."""
    match = KEY_PATTERN.match(text)
    if match:
        return match.group(1)
    return "x" + hmac.new(secret, b"key-id\0" + text.encode(), hashlib.sha256).hexdigest()[:15]


def digest(text: str, secret: bytes) -> str:
    """HMAC-SHA256 of the key text under the server secret, hex: what the database keeps."""
    return hmac.new(secret, b"key\0" + text.encode(), hashlib.sha256).hexdigest()


def matches(text: str, stored_digest: str, secret: bytes) -> bool:
    """Whether the text is the key of ``stored_digest``, in constant time."""
    return hmac.compare_digest(digest(text, secret), stored_digest)


def secret_id(secret: bytes) -> str:
    """A fingerprint of the server secret (not the secret): a key made under another one is
    recognised as such, and the log can say so."""
    return hmac.new(secret, b"secret-id", hashlib.sha256).hexdigest()[:12]


def server_secret(settings: Settings) -> bytes:
    """FACE_AUTH_SECRET, else the file data_dir/auth_secret, made (0600, 256 random bits) when
    missing. A file others can read is refused: whoever has the secret can test key guesses
    against a copy of the database."""
    if settings.auth_secret is not None:
        value = settings.auth_secret.get_secret_value()
        if len(value) < 16:
            raise ValueError("FACE_AUTH_SECRET must be at least 16 characters")
        return value.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
        logger.info("made the API key secret %s (0600); keep it with the gallery's backups", path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"the API key secret {path} is readable by others (mode {mode:o}): chmod 600 it"
        )
    value = path.read_text().strip()
    if len(value) < 16:
        raise ValueError(f"the API key secret {path} is empty or too short")
    return value.encode()
