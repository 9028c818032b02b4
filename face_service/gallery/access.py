"""API keys and the audit log, kept in the gallery's database (the tables: the schema modules):
:class:`AccessStore`, their SQL written once for both backends (``access_backends.py`` gives
the connections and transactions). Keys are stored without their secret: an HMAC digest only (the
auth package computes it). Audit entries hold ids and counts only, never embeddings or images:
:func:`check_targets` refuses anything else before it is written."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from face_service.errors import KeyNameExistsError, KeyNotFoundError
from face_service.gallery.rows import check_page, utcnow
from face_service.gallery.sql import Connection, Dialect

KEY_COLUMNS = "key_id, name, scopes, created_at, revoked_at"
AUDIT_COLUMNS = (
    "seq, at, principal, key_id, action, status, client, method, path, targets, target_ids"
)
MAX_TARGET_TEXT = 200  # an id or a name; anything longer has no place in the audit log
MAX_TARGET_LIST = 1000


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: never its secret nor its digest."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class StoredKey:
    """A key with what verifies it: the HMAC digest of the key text, and which server secret
    made it (``secret_id``, a fingerprint of the secret, not the secret)."""

    key: ApiKey
    digest: str
    secret_id: str


@dataclass(frozen=True)
class AuditEntry:
    """One write: who (key name and id; None when authentication is off), what (``action``,
    e.g. ``identity.delete``), which ids (``targets``), when, from where, and its HTTP status."""

    action: str
    status: int
    principal: str | None
    key_id: str | None
    client: str | None
    method: str
    path: str
    targets: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    seq: int | None = None


@dataclass(frozen=True)
class AuditFilter:
    """Entries by key name, by action, naming an id (``target``), in a time range."""

    principal: str | None = None
    action: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def check_targets(targets: dict[str, Any]) -> dict[str, Any]:
    """``targets`` if it holds only ids, names and counts (short strings, integers, lists of
    short strings); ValueError otherwise: an embedding or an image cannot reach the log."""
    for name, value in targets.items():
        values = value if isinstance(value, list) else [value]
        if len(values) > MAX_TARGET_LIST:
            raise ValueError(f"audit target {name!r} lists more than {MAX_TARGET_LIST} values")
        for item in values:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise ValueError(f"audit target {name!r} holds a {type(item).__name__}")
            if isinstance(item, str) and len(item) > MAX_TARGET_TEXT:
                raise ValueError(f"audit target {name!r} holds a text over {MAX_TARGET_TEXT}")
    return targets


def target_ids(targets: dict[str, Any]) -> str:
    """Every string of ``targets`` between spaces (" a b "): the column a target filter scans."""
    ids = [
        item
        for value in targets.values()
        for item in (value if isinstance(value, list) else [value])
        if isinstance(item, str)
    ]
    return " " + " ".join(ids) + " "


class AccessStore(ABC):
    """API keys (create, list without secrets, revoke, find by key id) and the audit log
    (append, page). Thread-safe and synchronous, like the gallery; errors: KeyNotFoundError,
    KeyNameExistsError (an active key has that name), GalleryError (the database cannot be used)."""

    sql: Dialect
    # The driver's error for a second active key of one name (the partial unique index).
    name_conflict: tuple[type[Exception], ...]

    @abstractmethod
    def _read(self) -> AbstractContextManager[Connection]: ...

    @abstractmethod
    def _write(self) -> AbstractContextManager[Connection]:
        """One transaction; the driver's errors of an unusable database become GalleryError."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> AccessStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys

    def create_key(self, stored: StoredKey) -> ApiKey:
        key, mark = stored.key, self.sql.mark
        try:
            with self._write() as conn:
                conn.execute(
                    f"INSERT INTO api_keys ({KEY_COLUMNS}, digest, secret_id) "
                    f"VALUES ({', '.join([mark] * 7)})",
                    (
                        key.key_id,
                        key.name,
                        ",".join(key.scopes),
                        self.sql.encode_time(key.created_at),
                        None,
                        stored.digest,
                        stored.secret_id,
                    ),
                )
        except self.name_conflict:
            raise KeyNameExistsError(key.name) from None
        return key

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys {where} ORDER BY created_at, key_id", ()
            ).fetchall()
        return [self._key(row) for row in rows]

    def find_key(self, key_id: str) -> StoredKey | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {KEY_COLUMNS}, digest, secret_id FROM api_keys "
                f"WHERE key_id = {self.sql.mark}",
                (key_id,),
            ).fetchone()
        return None if row is None else StoredKey(self._key(row[:5]), row[5], row[6])

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revokes the key (a revoked one stays as it is); KeyNotFoundError."""
        mark = self.sql.mark
        with self._write() as conn:
            conn.execute(
                f"UPDATE api_keys SET revoked_at = {mark} "
                f"WHERE key_id = {mark} AND revoked_at IS NULL",
                (self.sql.encode_time(utcnow()), key_id),
            )
            row = conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = {mark}", (key_id,)
            ).fetchone()
        if row is None:
            raise KeyNotFoundError(key_id)
        return self._key(row)

    def count_active_keys(self) -> int:
        with self._read() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL", ()
            ).fetchone()
        return int(count)

    def _key(self, row: tuple[Any, ...]) -> ApiKey:
        key_id, name, scopes, created_at, revoked_at = row
        return ApiKey(
            key_id,
            name,
            tuple(scopes.split(",")),
            self.sql.decode_time(created_at),
            None if revoked_at is None else self.sql.decode_time(revoked_at),
        )

    # -- audit log

    def append_audit(self, entry: AuditEntry) -> None:
        targets = check_targets(entry.targets)
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO audit_log ({AUDIT_COLUMNS.removeprefix('seq, ')}) "
                f"VALUES ({', '.join([self.sql.mark] * 10)})",
                (
                    self.sql.encode_time(entry.at),
                    entry.principal,
                    entry.key_id,
                    entry.action,
                    entry.status,
                    entry.client,
                    entry.method,
                    entry.path,
                    self.sql.encode_json(targets),
                    target_ids(targets),
                ),
            )

    def audit_page(
        self, where: AuditFilter, *, offset: int, limit: int
    ) -> tuple[list[AuditEntry], int]:
        """A page of entries, the newest first, and how many match in all."""
        check_page(offset, limit)
        conditions, args = list(self._conditions(where))
        clause = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        mark = self.sql.mark
        with self._read() as conn:
            (total,) = conn.execute(f"SELECT count(*) FROM audit_log {clause}", args).fetchone()
            rows = conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log {clause} ORDER BY seq DESC "
                f"LIMIT {mark} OFFSET {mark}",
                [*args, limit, offset],
            ).fetchall()
        return [self._entry(row) for row in rows], int(total)

    def _conditions(self, where: AuditFilter) -> Iterator[Any]:
        """(conditions, arguments) of the filter."""
        mark, conditions, args = self.sql.mark, [], []
        for column, value in (("principal", where.principal), ("action", where.action)):
            if value is not None:
                conditions.append(f"{column} = {mark}")
                args.append(value)
        if where.target is not None:
            conditions.append(self.sql.contains.format(column="target_ids"))
            args.append(f" {where.target} ")
        if where.since is not None:
            conditions.append(f"at >= {mark}")
            args.append(self.sql.encode_time(where.since))
        if where.until is not None:
            conditions.append(f"at < {mark}")
            args.append(self.sql.encode_time(where.until))
        yield conditions
        yield args

    def _entry(self, row: tuple[Any, ...]) -> AuditEntry:
        seq, at, principal, key_id, action, status, client, method, path, targets, _ = row
        return AuditEntry(
            action=action,
            status=int(status),
            principal=principal,
            key_id=key_id,
            client=client,
            method=method,
            path=path,
            targets=self.sql.decode_json(targets),
            at=self.sql.decode_time(at),
            seq=int(seq),
        )
