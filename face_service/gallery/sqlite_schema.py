"""The embedded gallery's SQLite file: its tables (the API keys and audit log included), how a
connection to it is set up (WAL, synchronous commits, foreign keys), write transactions, how
times and JSON are stored in it, the spelling of the shared statements (``sql.py``) for it, and
which sqlite3 errors mean the file cannot be used."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from face_service.errors import GalleryError
from face_service.gallery.rows import DatabaseErrors
from face_service.gallery.sql import Dialect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    identity_id TEXT PRIMARY KEY,
    name TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS identities_created ON identities (created_at, identity_id);
CREATE TABLE IF NOT EXISTS templates (
    seq INTEGER PRIMARY KEY,
    template_id TEXT NOT NULL UNIQUE,
    identity_id TEXT NOT NULL REFERENCES identities (identity_id) ON DELETE CASCADE,
    source TEXT,
    embedding BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_identity ON templates (identity_id, seq);
CREATE TABLE IF NOT EXISTS records (
    record_id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    faces TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_filename ON records (filename);
CREATE INDEX IF NOT EXISTS records_created ON records (created_at, record_id);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    digest TEXT NOT NULL,
    secret_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name)
    WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    principal TEXT,
    key_id TEXT,
    action TEXT NOT NULL,
    status INTEGER NOT NULL,
    client TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    targets TEXT NOT NULL,
    target_ids TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_action ON audit_log (action, seq);
CREATE INDEX IF NOT EXISTS audit_principal ON audit_log (principal, seq);
CREATE INDEX IF NOT EXISTS audit_at ON audit_log (at);
"""

# An unusable database (locked, I/O error, not a database, closed) -> GalleryError.
sqlite_errors = DatabaseErrors(
    (sqlite3.OperationalError, sqlite3.DatabaseError),
    except_for=(sqlite3.IntegrityError, sqlite3.ProgrammingError),
)


def encode_time(moment: datetime) -> str:
    # One fixed-width format in UTC: the text sorts like the time.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def decode_time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


SQL = Dialect(
    mark="?",
    # py_lower is Python's str.lower: SQLite's own lower() folds ASCII letters only.
    contains="instr(py_lower({column}), py_lower(?)) > 0",
    # One parameter for any count: a literal list would meet SQLite's limit on variables.
    in_list="{column} IN (SELECT value FROM json_each(?))",
    encode_list=json.dumps,
    encode_json=json.dumps,
    decode_json=json.loads,
    encode_time=encode_time,
    decode_time=decode_time,
)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on a connection in autocommit mode (``isolation_level=None``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


@sqlite_errors
def connect(path: Path) -> sqlite3.Connection:
    """A connection to the gallery file, its tables created when missing. Every commit is on
    disk when it returns (WAL, synchronous=FULL); usable from any thread, one at a time."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise GalleryError(f"the gallery file {path} cannot use WAL (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.create_function("py_lower", 1, _lower, deterministic=True)
        with transaction(conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
    except BaseException:
        with suppress(Exception):
            conn.close()
        raise
    return conn
