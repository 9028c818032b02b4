"""The :class:`AccessStore` on each gallery backend: its own connection to the gallery's SQLite file
(the gallery's file lock is for the template index; keys and audit entries need none, and the
key command line writes while the service runs) or a small pool on the gallery's PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from face_service.errors import GalleryError
from face_service.gallery.access import AccessStore
from face_service.gallery.postgres_schema import SQL as POSTGRES_SQL
from face_service.gallery.postgres_schema import (
    create_access_schema,
    postgres_errors,
    transaction,
)
from face_service.gallery.sqlite_schema import SQL as SQLITE_SQL
from face_service.gallery.sqlite_schema import connect, sqlite_errors
from face_service.gallery.sqlite_schema import transaction as sqlite_transaction


class SQLiteAccessStore(AccessStore):
    """Keys and audit entries in the gallery's SQLite file (its tables created when missing)."""

    sql = SQLITE_SQL
    name_conflict = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect(Path(path))
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, sqlite_errors:
            if self._closed:
                raise GalleryError("the key store is closed")
            yield self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._read() as conn, sqlite_transaction(conn):
            yield conn

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


class PostgresAccessStore(AccessStore):
    """Keys and audit entries in the gallery's PostgreSQL database (their tables created when
    missing), shared by every API process on it."""

    sql = POSTGRES_SQL
    name_conflict = (pg_errors.UniqueViolation,)

    def __init__(self, url: str, *, max_connections: int = 4, timeout_s: float = 10.0) -> None:
        with (
            postgres_errors,
            psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout_s))) as conn,
        ):
            create_access_schema(conn)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            timeout=timeout_s,
            open=False,
            name="access",
        )
        try:
            with postgres_errors:
                self._pool.open(wait=True, timeout=timeout_s)
        except GalleryError:
            self._pool.close()
            raise

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection]:
        with postgres_errors, self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        with postgres_errors, transaction(self._pool) as conn:
            yield conn

    def close(self) -> None:
        self._pool.close()
