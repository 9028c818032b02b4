"""The embedded gallery, :class:`SQLiteGallery`: a SQLite file for durability (``sqlite_schema.py``)
and an in-memory :class:`TemplateIndex` for exact search, loaded from the file at start and
updated after every commit; each write's SQL and index update, in step, under one lock."""

from __future__ import annotations

import fcntl
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from face_service.errors import (
    GalleryError,
    IdentityExistsError,
    IdentityNotFoundError,
    TemplateNotFoundError,
)
from face_service.gallery.base import Gallery
from face_service.gallery.rows import utcnow
from face_service.gallery.sql import IDENTITY_COLUMNS
from face_service.gallery.sqlite_schema import SQL, connect, encode_time, sqlite_errors, transaction
from face_service.gallery.template_index import TemplateIndex
from face_service.gallery.types import BulkRows, Identity, Match, Record, Scoring, Template

logger = logging.getLogger(__name__)

_SQL_VARIABLES = 500  # ids per IN (...) list, well below SQLite's limit
_LOAD_CHUNK = 16_384


def _marks(count: int) -> str:
    return ",".join("?" * count)


class SQLiteGallery(Gallery):
    """A SQLite file (WAL, synchronous=FULL: a commit is on disk when the call returns) and an
    in-memory index of every template for exact search, loaded at start and updated after each
    commit. One connection and one lock: calls from many threads run one at a time (a search
    over 1M templates takes ~20 ms on 2 cores, using both). One process per file: a lock file
    next to it makes a second opener fail with GalleryError, since its index would not see the
    other's writes."""

    def __init__(
        self,
        path: Path,
        *,
        dimension: int,
        scoring: Scoring = "max",
        search_threads: int = 0,
    ) -> None:
        if scoring not in ("max", "mean"):
            raise ValueError(f"scoring must be 'max' or 'mean', got {scoring!r}")
        self.path = Path(path)
        self.scoring = scoring
        self.dimension = dimension
        self._lock = threading.RLock()
        self._closed = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with ExitStack() as on_failure:  # what is open so far is closed if opening fails
            self._lock_file = (self.path.parent / (self.path.name + ".lock")).open("a+b")
            on_failure.callback(self._lock_file.close)
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                raise GalleryError(
                    f"the gallery file {self.path} is in use by another gallery or process"
                ) from error
            self._index = TemplateIndex(
                dimension, scoring, self._exact_rows, threads=search_threads
            )
            on_failure.callback(self._index.close)
            self._conn = connect(self.path)
            on_failure.callback(self._conn.close)
            self._load()
            on_failure.pop_all()  # open: close() closes them
        self._closed = False

    # -- plumbing

    @sqlite_errors
    def _load(self) -> None:
        started = time.perf_counter()
        conn, index = self._conn, self._index
        (templates,) = conn.execute("SELECT count(*) FROM templates").fetchone()
        (identities,) = conn.execute("SELECT count(*) FROM identities").fetchone()
        index.reserve(templates, identities)
        for (identity_id,) in conn.execute("SELECT identity_id FROM identities ORDER BY 1"):
            index.add_identity(identity_id)
        cursor = conn.execute(
            "SELECT identity_id, seq, embedding FROM templates ORDER BY identity_id, seq"
        )
        while chunk := cursor.fetchmany(_LOAD_CHUNK):
            owners = [identity_id for identity_id, _, _ in chunk]
            keys = np.fromiter((seq for _, seq, _ in chunk), np.int64, len(chunk))
            rows = self._decode([blob for _, _, blob in chunk])
            index.add_rows(owners, keys, rows)
            index.add_to_centroids(owners, rows)
        index.normalize_centroids()
        logger.info(
            "gallery %s: %d identities, %d templates loaded in %.2f s (%.0f MB in memory)",
            self.path,
            index.identities,
            index.templates,
            time.perf_counter() - started,
            index.nbytes / 2**20,
        )

    def _decode(self, blobs: list[bytes]) -> np.ndarray:
        row_bytes = 4 * self.dimension
        if any(len(blob) != row_bytes for blob in blobs):
            raise GalleryError(
                f"the gallery file {self.path} holds embeddings of another dimension than "
                f"{self.dimension}"
            )
        return np.frombuffer(b"".join(blobs), np.float32).reshape(-1, self.dimension)

    def _exact_rows(self, keys: np.ndarray) -> np.ndarray:
        """The stored float32 embeddings of the given seqs (the index's re-scoring; the caller
        holds the lock)."""
        wanted = keys.tolist()
        found = dict(self._rows_in("SELECT seq, embedding FROM templates WHERE seq IN", wanted))
        return self._decode([found[key] for key in wanted])

    def _rows_in(self, select: str, values: list[Any]) -> Iterator[Any]:
        """The rows of ``select`` + `` (values)``, asked in chunks that stay within SQLite's
        limit on variables."""
        for start in range(0, len(values), _SQL_VARIABLES):
            chunk = values[start : start + _SQL_VARIABLES]
            yield from self._conn.execute(f"{select} ({_marks(len(chunk))})", chunk)

    def _identity_rows(self, identity_id: str) -> np.ndarray:
        blobs = self._conn.execute(
            "SELECT embedding FROM templates WHERE identity_id = ? ORDER BY seq", (identity_id,)
        ).fetchall()
        return self._decode([blob for (blob,) in blobs])

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction (the caller holds the lock)."""
        return transaction(self._conn)

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """The lock, on an open gallery."""
        with self._lock:
            if self._closed:
                raise GalleryError("the gallery is closed")
            yield self._conn

    def _require(self, identity_id: str) -> None:
        if identity_id not in self._index:
            raise IdentityNotFoundError(identity_id)

    def _write_templates(
        self, owners: list[str], templates: list[Template], rows: np.ndarray
    ) -> np.ndarray:
        """Inserts templates (inside a transaction) and returns their seqs, given here rather
        than read back so that one executemany serves any count."""
        (last,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM templates").fetchone()
        keys = np.arange(last + 1, last + 1 + len(templates), dtype=np.int64)
        self._conn.executemany(
            "INSERT INTO templates (seq, template_id, identity_id, source, embedding, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (key, t.template_id, owner, t.source, row.tobytes(), encode_time(t.created_at))
                for key, owner, t, row in zip(keys.tolist(), owners, templates, rows, strict=True)
            ),
        )
        return keys

    def _touch(self, identity_id: str, now: datetime) -> None:
        self._conn.execute(
            "UPDATE identities SET updated_at = ? WHERE identity_id = ?",
            (encode_time(now), identity_id),
        )

    def _refresh_centroid(self, identity_id: str) -> None:
        if self.scoring == "mean":
            self._index.set_centroid(identity_id, self._identity_rows(identity_id))

    # -- identities

    @sqlite_errors
    def _insert_identity(self, identity: Identity, rows: np.ndarray) -> None:
        identity_id = identity.identity_id
        with self._open() as conn:
            if identity_id in self._index:
                raise IdentityExistsError(identity_id)
            self._index.reserve(len(rows), 1)
            with self._transaction():
                try:
                    conn.execute(
                        f"INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                        (
                            identity_id,
                            identity.name,
                            json.dumps(identity.metadata),
                            encode_time(identity.created_at),
                            encode_time(identity.updated_at),
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise IdentityExistsError(identity_id) from None
                keys = self._write_templates([identity_id] * len(rows), identity.templates, rows)
            self._index.add_identity(identity_id)
            self._index.add_rows([identity_id] * len(rows), keys, rows)
            self._refresh_centroid(identity_id)

    @sqlite_errors
    def _insert_templates(
        self, identity_id: str, templates: list[Template], rows: np.ndarray, now: datetime
    ) -> Identity:
        with self._open():
            self._require(identity_id)
            self._index.reserve(len(rows))
            with self._transaction():
                keys = self._write_templates([identity_id] * len(rows), templates, rows)
                self._touch(identity_id, now)
            self._index.add_rows([identity_id] * len(rows), keys, rows)
            self._refresh_centroid(identity_id)
            return SQL.get_identity(self._conn, identity_id)

    @sqlite_errors
    def delete_template(self, *, identity_id: str, template_id: str) -> Identity:
        with self._open() as conn:
            self._require(identity_id)
            with self._transaction():
                row = conn.execute(
                    "SELECT seq FROM templates WHERE template_id = ? AND identity_id = ?",
                    (template_id, identity_id),
                ).fetchone()
                if row is None:
                    raise TemplateNotFoundError(identity_id, template_id)
                conn.execute("DELETE FROM templates WHERE seq = ?", row)
                self._touch(identity_id, utcnow())
            self._index.remove_template(identity_id, row[0])
            self._refresh_centroid(identity_id)
            return SQL.get_identity(self._conn, identity_id)

    @sqlite_errors
    def _update_identity(
        self, identity_id: str, changes: dict[str, Any], now: datetime
    ) -> Identity:
        with self._open() as conn:
            with self._transaction():
                SQL.update_identity(conn, identity_id, changes, now)
            return SQL.get_identity(conn, identity_id)

    @sqlite_errors
    def _write_face_crops(self, crops: list[tuple[str, bytes]]) -> None:
        with self._open() as conn, self._transaction():
            SQL.save_face_crops(conn, crops)

    @sqlite_errors
    def face_crop(self, *, identity_id: str, template_id: str) -> bytes | None:
        with self._open() as conn:
            return SQL.face_crop(conn, identity_id, template_id)

    @sqlite_errors
    def get_identity(self, *, identity_id: str) -> Identity:
        with self._open() as conn:
            return SQL.get_identity(conn, identity_id)

    @sqlite_errors
    def _list_identities(
        self, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        with self._open() as conn:
            return SQL.list_identities(conn, offset, limit, name_contains)

    @sqlite_errors
    def delete_identity(self, *, identity_id: str) -> None:
        with self._open() as conn:
            with self._transaction():
                deleted = conn.execute(
                    "DELETE FROM identities WHERE identity_id = ?", (identity_id,)
                ).rowcount
                if not deleted:
                    raise IdentityNotFoundError(identity_id)
            self._index.remove_identity(identity_id)

    @sqlite_errors
    def delete_all(self) -> int:
        with self._open() as conn:
            with self._transaction():
                conn.execute("DELETE FROM templates")
                deleted = conn.execute("DELETE FROM identities").rowcount
            self._index.clear()
            return deleted

    @sqlite_errors
    def _merge(self, target_id: str, source_id: str, now: datetime) -> Identity:
        with self._open() as conn:
            self._require(target_id)
            self._require(source_id)
            with self._transaction():
                conn.execute(
                    "UPDATE templates SET identity_id = ? WHERE identity_id = ?",
                    (target_id, source_id),
                )
                conn.execute("DELETE FROM identities WHERE identity_id = ?", (source_id,))
                self._touch(target_id, now)
            self._index.merge(target_id, source_id)
            self._refresh_centroid(target_id)
            return SQL.get_identity(self._conn, target_id)

    @sqlite_errors
    def _insert_bulk(self, bulk: BulkRows) -> None:
        ids = bulk.identity_ids
        now = encode_time(bulk.created_at)
        with self._open() as conn:
            for identity_id in ids:
                if identity_id in self._index:
                    raise IdentityExistsError(identity_id)
            self._index.reserve(len(ids), len(ids))
            templates = [Template(t, None, bulk.created_at) for t in bulk.template_ids]
            with self._transaction():
                conn.executemany(
                    f"INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (?, ?, '{{}}', ?, ?)",
                    ((i, n, now, now) for i, n in zip(ids, bulk.names, strict=True)),
                )
                keys = self._write_templates(ids, templates, bulk.embeddings)
            for identity_id in ids:
                self._index.add_identity(identity_id)
            self._index.add_rows(ids, keys, bulk.embeddings)
            # New identities of one unit row each: the row is its own normalised mean.
            self._index.add_to_centroids(ids, bulk.embeddings)

    # -- search

    @sqlite_errors
    def _search(self, query: np.ndarray, top_k: int) -> list[Match]:
        with self._open() as conn:
            found = self._index.search(query, top_k)
            ids = [identity_id for identity_id, _ in found]
            names = dict(
                conn.execute(
                    f"SELECT identity_id, name FROM identities WHERE identity_id IN "
                    f"({_marks(len(ids))})",
                    ids,
                ).fetchall()
            )
        return [Match(identity_id, names.get(identity_id), sim) for identity_id, sim in found]

    @sqlite_errors
    def _similarity(self, query: np.ndarray, identity_id: str) -> float:
        with self._open():
            self._require(identity_id)
            return self._index.similarity(query, identity_id)

    @sqlite_errors
    def count(self) -> tuple[int, int]:
        with self._open():
            return self._index.identities, self._index.templates

    # -- records

    @sqlite_errors
    def _insert_record(self, record: Record) -> None:
        with self._open() as conn, self._transaction():
            SQL.insert_record(conn, record)

    @sqlite_errors
    def _find_records(
        self, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        with self._open() as conn:
            return SQL.find_records(conn, filename_contains, offset, limit)

    @sqlite_errors
    def _get_record(self, record_id: str) -> Record | None:
        with self._open() as conn:
            return SQL.get_record(conn, record_id)

    @sqlite_errors
    def _delete_record(self, record_id: str) -> bool:
        with self._open() as conn, self._transaction():
            return SQL.delete_record(conn, record_id)

    # -- export, close

    @sqlite_errors
    def export_templates(self) -> tuple[list[str], list[str], np.ndarray]:
        with self._open() as conn:
            rows = conn.execute(
                "SELECT identity_id, template_id, embedding FROM templates "
                "ORDER BY identity_id, seq"
            ).fetchall()
        return [r[0] for r in rows], [r[1] for r in rows], self._decode([r[2] for r in rows])

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            finally:
                self._index.close()
                self._lock_file.close()  # releases the flock
