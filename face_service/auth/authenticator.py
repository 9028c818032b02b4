"""Who sends a request: :class:`Authenticator` checks key texts against the key store (a short
in-process cache of stored digests in front of it), creates and revokes keys, stores the
operator's FACE_ADMIN_KEY at start, and decides from the settings whether keys are required
(FACE_AUTH, and whether FACE_HOST is beyond loopback)."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import face_service.auth.keys as keys
from face_service.errors import AuthenticationError, KeyNameExistsError
from face_service.gallery import AccessStore, ApiKey, AuditEntry, StoredKey
from face_service.gallery.rows import utcnow
from face_service.settings import Settings

logger = logging.getLogger("face_service.auth")

ADMIN_KEY_NAME = "env-admin"  # the key FACE_ADMIN_KEY is stored as
MAX_KEY_TEXT = 512  # a header longer than any key is refused before any work


@dataclass(frozen=True)
class Principal:
    """An authenticated key: its name (what logs and the audit log show), id and scopes."""

    name: str
    key_id: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def is_loopback(host: str) -> bool:
    """Whether the API listening on ``host`` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def auth_required(settings: Settings) -> bool:
    """FACE_AUTH: "required", "disabled", or "auto": required beyond loopback."""
    if settings.auth == "auto":
        return not is_loopback(settings.host)
    return settings.auth == "required"


class Authenticator:
    """Keys checked against ``store``: the stored digest of a key id is cached for
    ``cache_ttl_s`` (so a key revoked by another process or the command line stops working
    within that time; one revoked here, at once). Thread-safe; the calls that may reach the
    database are synchronous (the API calls them in worker threads)."""

    def __init__(
        self,
        store: AccessStore,
        secret: bytes,
        *,
        required: bool,
        cache_ttl_s: float = 5.0,
        cache_size: int = 4096,
    ) -> None:
        self.store = store
        self.required = required
        self._secret = secret
        self._secret_id = keys.secret_id(secret)
        self._ttl = cache_ttl_s
        self._size = cache_size
        self._cache: dict[str, tuple[float, StoredKey | None]] = {}
        self._lock = threading.Lock()

    # -- requests

    def authenticate(self, text: str | None) -> Principal:
        """The principal of a key text; AuthenticationError (401) for none, an unknown, a
        revoked or a wrong one. The text is never logged nor put in an error."""
        if not text:
            raise AuthenticationError(
                "an API key is required: send it as 'X-API-Key: <key>' or "
                "'Authorization: Bearer <key>'"
            )
        if len(text) > MAX_KEY_TEXT:
            raise AuthenticationError(
                "the API key is not valid", invalid_token=True, reason="invalid_key"
            )
        key_id = keys.lookup_id(text, self._secret)
        stored = self._stored(key_id)
        if stored is None or not keys.matches(text, stored.digest, self._secret):
            if stored is not None and stored.secret_id != self._secret_id:
                logger.warning(
                    "API key %s was stored under another server secret: give every API "
                    "process the same FACE_AUTH_SECRET",
                    key_id,
                )
            raise AuthenticationError(
                "the API key is not valid", invalid_token=True, reason="invalid_key"
            )
        if stored.key.revoked_at is not None:
            raise AuthenticationError(
                "the API key has been revoked", invalid_token=True, reason="revoked_key"
            )
        return Principal(stored.key.name, key_id, keys.effective_scopes(stored.key.scopes))

    def _stored(self, key_id: str) -> StoredKey | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        stored = self.store.find_key(key_id)
        with self._lock:
            if len(self._cache) >= self._size:
                self._cache.clear()
            self._cache[key_id] = (now, stored)
        return stored

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._cache.pop(key_id, None)

    # -- keys

    def create_key(self, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new random key: (what is stored and listed, the key text, to show once)."""
        key_id, text = keys.new_key()
        return self._store(key_id, text, name, scopes), text

    def revoke_key(self, key_id: str) -> ApiKey:
        key = self.store.revoke_key(key_id)
        self.forget(key_id)
        return key

    def _store(self, key_id: str, text: str, name: str, scopes: Iterable[str]) -> ApiKey:
        key = ApiKey(key_id, name, keys.normal_scopes(scopes), utcnow())
        stored = StoredKey(key, keys.digest(text, self._secret), self._secret_id)
        self.store.create_key(stored)
        self.forget(key_id)
        return key

    def bootstrap_admin(self, text: str) -> ApiKey | None:
        """Stores the operator's admin key (FACE_ADMIN_KEY) unless it is there: a new one
        (the variable changed) revokes the previous one; one revoked is not brought back.
        Returns the key stored now, if any."""
        if len(text) < keys.MIN_OPERATOR_KEY:
            raise ValueError(f"FACE_ADMIN_KEY must be at least {keys.MIN_OPERATOR_KEY} characters")
        key_id = keys.lookup_id(text, self._secret)
        existing = self.store.find_key(key_id)
        if existing is not None:
            if existing.key.revoked_at is not None:
                logger.warning(
                    "FACE_ADMIN_KEY (key %s) has been revoked and stays revoked: unset it or "
                    "give a new one",
                    key_id,
                )
            return None
        for key in self.store.list_keys():
            if key.name == ADMIN_KEY_NAME:
                self.revoke_key(key.key_id)
                self._audit_start("key.revoke", key)
                logger.warning(
                    "FACE_ADMIN_KEY changed: the previous one (key %s) is revoked", key.key_id
                )
        try:
            key = self._store(key_id, text, ADMIN_KEY_NAME, ["admin"])
        except KeyNameExistsError:  # another API process stored it just now
            return None
        self._audit_start("key.create", key)
        logger.info("FACE_ADMIN_KEY stored (hashed) as admin key %s %r", key_id, ADMIN_KEY_NAME)
        return key

    def _audit_start(self, action: str, key: ApiKey) -> None:
        """The audit entry of a key change made at start from FACE_ADMIN_KEY."""
        self.store.append_audit(
            AuditEntry(
                action=action,
                status=0,  # not an HTTP request
                principal="FACE_ADMIN_KEY",
                key_id=None,
                client="local",
                method="START",
                path="FACE_ADMIN_KEY",
                targets={"key_id": key.key_id, "name": key.name},
            )
        )


def log_auth_state(settings: Settings, authenticator: Authenticator) -> None:
    """What the operator must know at start: whether keys are required, and how to make one."""
    where = f"{settings.host}:{settings.port}"
    if settings.auth == "disabled":
        logger.warning(
            "AUTHENTICATION IS DISABLED (FACE_AUTH=disabled): anyone who can reach %s can read, "
            "enroll and delete biometric data and wipe the gallery. Use it only behind a "
            "gateway that authenticates every request.",
            where,
        )
        return
    if not authenticator.required:
        logger.info(
            "API keys are not required: the API listens on loopback only (%s). A proxy in "
            "front of it would expose it without keys: set FACE_AUTH=required then.",
            where,
        )
        return
    if settings.gallery_database_url and settings.auth_secret is None:
        logger.warning(
            "FACE_AUTH_SECRET is unset: keys are hashed with this host's data_dir/%s; every "
            "API process on this PostgreSQL gallery needs the same secret (set "
            "FACE_AUTH_SECRET on all of them)",
            keys.SECRET_FILE,
        )
    if authenticator.store.count_active_keys() == 0:
        logger.warning(
            "API keys are required (listening on %s) and none exists yet: every request but "
            "the health probes and the docs is answered 401. Create an admin key with "
            "`face-service-keys create --name ops --scopes admin` (same FACE_DATA_DIR / "
            "FACE_GALLERY_DATABASE_URL as the service) or start with FACE_ADMIN_KEY set.",
            where,
        )
    else:
        logger.info("API keys are required (listening on %s)", where)
