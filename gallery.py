"""The identity gallery: people, their face templates (embeddings), 1:N search, and detection
records. Two backends with one behaviour:

- :class:`SQLiteGallery` (default, embedded, zero setup): a SQLite file (WAL, one transaction per
  write) plus an in-memory matrix of every template for exact search, kept in step with every
  write and rebuilt from the file at start.
- :class:`PostgresGallery` (at scale): PostgreSQL with pgvector; an HNSW index (cosine) answers
  searches once the gallery holds at least ``exact_search_below`` templates, exact search below.

All methods are synchronous and thread-safe; the API calls them in worker threads.
Embeddings are L2-normalised float32 vectors of the recognizer's dimension (the gallery
normalises what it is given again, so cosine similarity is a dot product).
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import re
import sqlite3
import struct
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import numpy as np

if TYPE_CHECKING:
    import psycopg

    from settings import Settings

from errors import (
    GalleryError,
    IdentityExistsError,
    IdentityNotFoundError,
    RecordNotFoundError,
    TemplateNotFoundError,
)

logger = logging.getLogger(__name__)

Scoring = Literal["max", "mean"]

# The score of an identity that has no template left (nothing to match): the lowest cosine.
NO_TEMPLATE_SIMILARITY = -1.0


class _Unset:
    """Marks an argument that was not given (as opposed to ``None``)."""


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Template:
    template_id: str
    source: str | None  # where the face came from, e.g. the uploaded file's name
    created_at: datetime


@dataclass(frozen=True)
class Identity:
    identity_id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    templates: list[Template] = field(default_factory=list)


@dataclass(frozen=True)
class Match:
    identity_id: str
    name: str | None
    similarity: float  # cosine, in [-1, 1], scored across the identity's templates


@dataclass(frozen=True)
class RecordFace:
    bbox: list[float]
    det_score: float
    landmarks: list[list[float]]
    embedding: list[float] | None


@dataclass(frozen=True)
class Record:
    record_id: str
    filename: str
    width: int
    height: int
    channels: int
    faces: list[RecordFace]
    created_at: datetime


class Gallery(ABC):
    """What the API needs from a gallery backend. Identity and template ids are strings; the
    gallery generates ids (uuid4 hex) where none is given. Errors are errors.py's
    IdentityNotFoundError, IdentityExistsError, TemplateNotFoundError, RecordNotFoundError, and
    GalleryError (503) when the database cannot be reached or used. Bad arguments (embeddings
    of the wrong shape, zero or non-finite vectors, sources not one per embedding, negative
    offset/limit, top_k < 1, merging an identity into itself) raise ValueError.

    Templates are listed in creation order (the newest last); merged templates keep their ids
    and creation times. Adding or deleting templates and merging update ``updated_at``.
    Timestamps are timezone-aware UTC datetimes. Usable as a context manager (closes)."""

    @abstractmethod
    def create_identity(
        self,
        *,
        identity_id: str | None,
        name: str | None,
        metadata: dict[str, Any],
        embeddings: np.ndarray,
        sources: list[str | None],
    ) -> Identity:
        """One transaction: the identity and one template per row of ``embeddings`` (n x dim;
        n may be 0). IdentityExistsError (nothing written) when the id is taken."""

    @abstractmethod
    def add_templates(
        self, *, identity_id: str, embeddings: np.ndarray, sources: list[str | None]
    ) -> Identity:
        """One transaction: one new template per row; returns the identity, new templates last."""

    @abstractmethod
    def delete_template(self, *, identity_id: str, template_id: str) -> Identity:
        """Deleting the last template leaves the identity, without templates."""

    @abstractmethod
    def update_identity(
        self, *, identity_id: str, name: str | None = UNSET, metadata: dict[str, Any] = UNSET
    ) -> Identity:
        """Sets what is given: ``name=None`` clears the name; ``metadata`` replaces the whole
        dict. Always bumps ``updated_at``."""

    @abstractmethod
    def get_identity(self, *, identity_id: str) -> Identity: ...

    @abstractmethod
    def list_identities(
        self, *, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        """A page of identities ordered by creation (then id), and how many match in all.
        ``name_contains``: a case-insensitive substring of the name (unnamed ones never match)."""

    @abstractmethod
    def delete_identity(self, *, identity_id: str) -> None: ...

    @abstractmethod
    def delete_all(self) -> int:
        """Deletes every identity and template (not the records); returns how many identities
        were deleted."""

    @abstractmethod
    def merge(self, *, target_id: str, source_id: str) -> Identity:
        """One transaction: the source's templates move to the target; the source is deleted.
        ValueError when they are the same; IdentityNotFoundError for a missing one."""

    @abstractmethod
    def search(self, embedding: np.ndarray, *, top_k: int) -> list[Match]:
        """The ``top_k`` identities most similar to ``embedding``, best first (fewer when the
        gallery holds fewer identities with templates). "max" scoring: the best cosine over
        the identity's templates; "mean": the cosine to the normalised mean of its templates."""

    @abstractmethod
    def similarity(self, embedding: np.ndarray, *, identity_id: str) -> float:
        """The embedding's score against one identity (same scoring as search);
        ``NO_TEMPLATE_SIMILARITY`` (-1.0) for an identity without templates."""

    @abstractmethod
    def count(self) -> tuple[int, int]:
        """(identities, templates)."""

    @abstractmethod
    def save_record(
        self, *, filename: str, width: int, height: int, channels: int, faces: list[RecordFace]
    ) -> Record: ...

    @abstractmethod
    def find_records(
        self, *, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        """A page of records ordered by creation (then id), and how many match in all.
        ``filename_contains``: a case-insensitive substring of the filename."""

    @abstractmethod
    def get_record(self, *, record_id: str) -> Record: ...

    @abstractmethod
    def delete_record(self, *, record_id: str) -> None: ...

    @abstractmethod
    def add_identities_bulk(self, rows: Sequence[tuple[str, str | None, np.ndarray]]) -> int:
        """Bulk load for benchmarks and imports: (identity_id, name, one embedding) per row,
        empty metadata, in one transaction; returns how many were added. IdentityExistsError
        (nothing written) if any id is taken or repeated."""

    @abstractmethod
    def export_templates(self) -> tuple[list[str], list[str], np.ndarray]:
        """Every template as stored in the database: (identity ids, template ids, n x dim
        float32 embeddings), grouped by identity. For checks and migrations."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_gallery(settings: Settings, *, dimension: int = 512) -> Gallery:
    """The gallery the settings name: the SQLite file ``data_dir/gallery.sqlite3`` when
    ``gallery_database_url`` is unset, PostgreSQL for a postgresql:// (or postgres://) URL."""
    url = settings.gallery_database_url
    if not url:
        return SQLiteGallery(
            settings.data_dir / "gallery.sqlite3",
            scoring=settings.gallery_scoring,
            dimension=dimension,
        )
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresGallery(
            url,
            scoring=settings.gallery_scoring,
            exact_search_below=settings.gallery_exact_search_below,
            ef_search=settings.gallery_hnsw_ef_search,
            dimension=dimension,
        )
    # The URL itself is not repeated: it may hold a password.
    raise ValueError(
        "gallery_database_url (FACE_GALLERY_DATABASE_URL) must be a postgresql:// or "
        f"postgres:// URL, or unset for the embedded SQLite gallery; got scheme {scheme!r}"
    )


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _new_id() -> str:
    return uuid.uuid4().hex


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_matrix(embeddings: Any, dimension: int) -> np.ndarray:
    """Rows as L2-normalised, C-contiguous float32; ValueError for a wrong shape or a zero or
    non-finite row."""
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dimension:
        raise ValueError(
            f"embeddings must be of shape (n, {dimension}), got {np.shape(embeddings)}"
        )
    if not np.isfinite(matrix).all():
        raise ValueError("embeddings must be finite")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("an embedding is the zero vector")
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def _as_query(embedding: Any, dimension: int) -> np.ndarray:
    query = np.asarray(embedding, dtype=np.float32)
    if query.shape != (dimension,):
        raise ValueError(f"the embedding must be of shape ({dimension},), got {query.shape}")
    return _as_matrix(query, dimension)[0]


def _check_sources(sources: Sequence[str | None], count: int) -> list[str | None]:
    sources = list(sources)
    if len(sources) != count:
        raise ValueError(f"{len(sources)} sources for {count} embeddings; give one per embedding")
    return sources


def _check_page(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, got {offset} and {limit}")


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")


def _clip(similarity: float) -> float:
    """Rounding can take the cosine of a vector and itself just past 1."""
    return min(1.0, max(-1.0, float(similarity)))


def _json_copy(value: Any) -> Any:
    """What a JSON column gives back for ``value`` (TypeError when it is not JSON)."""
    return json.loads(json.dumps(value))


def _faces_json(faces: Sequence[RecordFace]) -> list[dict[str, Any]]:
    return _json_copy([asdict(face) for face in faces])


def _faces_from_json(faces: list[dict[str, Any]]) -> list[RecordFace]:
    return [RecordFace(**face) for face in faces]


def _dedupe_bulk(
    rows: Sequence[tuple[str, str | None, np.ndarray]], dimension: int
) -> tuple[list[str], list[str | None], np.ndarray]:
    ids = [row[0] for row in rows]
    names = [row[1] for row in rows]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for identity_id in ids:
            if identity_id in seen:
                raise IdentityExistsError(identity_id)
            seen.add(identity_id)
    if not rows:
        return ids, names, np.empty((0, dimension), np.float32)
    return ids, names, _as_matrix(np.stack([np.asarray(row[2]) for row in rows]), dimension)


P = ParamSpec("P")
R = TypeVar("R")


# ---------------------------------------------------------------------------------------------
# In-memory exact search (SQLiteGallery)


class _TemplateIndex:
    """Every template's embedding as one float32 matrix (rows ``[:n]``), each row's identity as
    an integer code, for exact 1:N search with one matrix-vector product. Appends grow the
    capacity geometrically; removals move the last rows into the holes (no full copy). For
    "mean" scoring it also keeps each identity's normalised centroid. Not thread-safe: the
    owner guards it. Identity codes of deleted identities are reused."""

    def __init__(self, dimension: int, scoring: Scoring) -> None:
        self.dimension = dimension
        self.scoring = scoring
        self.clear()

    def clear(self) -> None:
        self._matrix = np.empty((0, self.dimension), np.float32)
        self._codes = np.empty(0, np.int64)
        self._template_ids: list[str] = []
        self._n = 0
        self._code_of: dict[str, int] = {}
        self._id_of: list[str | None] = []
        self._free_codes: list[int] = []
        self._centroids = np.empty((0, self.dimension), np.float32)
        self._has_centroid = np.empty(0, bool)

    # -- sizes

    @property
    def identities(self) -> int:
        return len(self._code_of)

    @property
    def templates(self) -> int:
        return self._n

    def __contains__(self, identity_id: str) -> bool:
        return identity_id in self._code_of

    @staticmethod
    def _grown(capacity: int, needed: int) -> int:
        return max(needed, capacity + capacity // 2, 1024)

    def reserve(self, rows: int, identities: int = 0) -> None:
        """Makes room for ``rows`` more templates and ``identities`` more identities, so that
        the updates after a commit cannot fail for memory."""
        needed = self._n + rows
        if needed > len(self._matrix):
            capacity = self._grown(len(self._matrix), needed)
            matrix = np.empty((capacity, self.dimension), np.float32)
            matrix[: self._n] = self._matrix[: self._n]
            codes = np.empty(capacity, np.int64)
            codes[: self._n] = self._codes[: self._n]
            self._matrix, self._codes = matrix, codes
        if self.scoring == "mean":
            needed = len(self._id_of) + max(0, identities - len(self._free_codes))
            if needed > len(self._centroids):
                capacity = self._grown(len(self._centroids), needed)
                centroids = np.empty((capacity, self.dimension), np.float32)
                centroids[: len(self._id_of)] = self._centroids[: len(self._id_of)]
                has = np.zeros(capacity, bool)
                has[: len(self._id_of)] = self._has_centroid[: len(self._id_of)]
                self._centroids, self._has_centroid = centroids, has

    # -- updates

    def add_identity(self, identity_id: str) -> int:
        self.reserve(0, 1)
        if self._free_codes:
            code = self._free_codes.pop()
            self._id_of[code] = identity_id
        else:
            code = len(self._id_of)
            self._id_of.append(identity_id)
        self._code_of[identity_id] = code
        if self.scoring == "mean":
            self._has_centroid[code] = False
        return code

    def add_rows(self, identity_id: str, template_ids: list[str], rows: np.ndarray) -> None:
        code = self._code_of[identity_id]
        self._append(np.full(len(rows), code, np.int64), template_ids, rows)
        if self.scoring == "mean":
            self._refresh_centroid(code)

    def add_identities(self, identity_ids: list[str], template_ids: list[str], rows: np.ndarray):
        """New identities with one template each."""
        self.reserve(len(rows), len(identity_ids))
        codes = np.fromiter((self.add_identity(i) for i in identity_ids), np.int64, len(rows))
        self._append(codes, template_ids, rows)
        if self.scoring == "mean":
            self._centroids[codes] = rows
            self._has_centroid[codes] = True

    def _append(self, codes: np.ndarray, template_ids: list[str], rows: np.ndarray) -> None:
        self.reserve(len(rows))
        end = self._n + len(rows)
        self._matrix[self._n : end] = rows
        self._codes[self._n : end] = codes
        self._template_ids.extend(template_ids)
        self._n = end

    def _rows_of(self, code: int) -> np.ndarray:
        return np.flatnonzero(self._codes[: self._n] == code)

    def _refresh_centroid(self, code: int) -> None:
        rows = self._rows_of(code)
        if len(rows) == 0:
            self._has_centroid[code] = False
            return
        mean = self._matrix[rows].astype(np.float64).mean(axis=0)
        norm = np.linalg.norm(mean)
        self._centroids[code] = mean / norm if norm > 0 else 0.0
        self._has_centroid[code] = True

    def _remove_rows(self, rows: np.ndarray) -> None:
        """Removes the given (unique) rows: the surviving rows of the tail fill the holes."""
        if len(rows) == 0:
            return
        rows = np.unique(rows)
        end = self._n - len(rows)
        holes = rows[rows < end]
        survivors = np.setdiff1d(np.arange(end, self._n), rows, assume_unique=True)
        self._matrix[holes] = self._matrix[survivors]
        self._codes[holes] = self._codes[survivors]
        for hole, survivor in zip(holes.tolist(), survivors.tolist(), strict=True):
            self._template_ids[hole] = self._template_ids[survivor]
        del self._template_ids[end:]
        self._n = end

    def remove_template(self, identity_id: str, template_id: str) -> None:
        code = self._code_of[identity_id]
        rows = [r for r in self._rows_of(code).tolist() if self._template_ids[r] == template_id]
        self._remove_rows(np.asarray(rows, np.int64))
        if self.scoring == "mean":
            self._refresh_centroid(code)

    def remove_identity(self, identity_id: str) -> None:
        code = self._code_of.pop(identity_id)
        self._remove_rows(self._rows_of(code))
        self._id_of[code] = None
        self._free_codes.append(code)
        if self.scoring == "mean":
            self._has_centroid[code] = False

    def merge(self, target_id: str, source_id: str) -> None:
        source = self._code_of.pop(source_id)
        target = self._code_of[target_id]
        self._codes[self._rows_of(source)] = target
        self._id_of[source] = None
        self._free_codes.append(source)
        if self.scoring == "mean":
            self._has_centroid[source] = False
            self._refresh_centroid(target)

    def refresh_all_centroids(self) -> None:
        """Every centroid from scratch (after a load)."""
        if self.scoring != "mean":
            return
        self.reserve(0)
        self._has_centroid[:] = False
        if self._n == 0:
            return
        n = self._n
        order = np.argsort(self._codes[:n], kind="stable")  # rows grouped by identity
        codes = self._codes[:n][order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        sizes = np.diff(np.r_[starts, n])
        # Identities with the same number of templates at once: one gather per template rank.
        for size in np.unique(sizes).tolist():
            group_starts = starts[sizes == size]
            for first in range(0, len(group_starts), 65536):
                chunk = group_starts[first : first + 65536]
                self._has_centroid[codes[chunk]] = True
                if size == 1:  # rows are unit vectors already
                    self._centroids[codes[chunk]] = self._matrix[order[chunk]]
                    continue
                sums = self._matrix[order[chunk]].astype(np.float64)
                for rank in range(1, size):
                    sums += self._matrix[order[chunk + rank]]
                norms = np.linalg.norm(sums, axis=1, keepdims=True)
                norms[norms == 0] = 1.0
                self._centroids[codes[chunk]] = sums / norms

    # -- queries

    def search(self, query: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        if self.scoring == "mean":
            return self._search_mean(query, top_k)
        n = self._n
        if n == 0:
            return []
        sims = self._matrix[:n] @ query
        codes = self._codes[:n]
        # The identities' best rows, best first, are the first occurrences of their codes in
        # the rows sorted by similarity: look at the best m rows, more if too few identities.
        m = min(n, max(4 * top_k, 64))
        while True:
            if m >= n:
                best = np.argsort(-sims, kind="stable")
            else:
                best = np.argpartition(sims, n - m)[n - m :]
                best = best[np.argsort(-sims[best], kind="stable")]
            unique_codes, first = np.unique(codes[best], return_index=True)
            if len(unique_codes) >= top_k or m >= n:
                break
            m = min(n, m * 4)
        rows = best[np.sort(first)[:top_k]]
        return [(self._id_of[codes[r]], _clip(sims[r])) for r in rows.tolist()]

    def _search_mean(self, query: np.ndarray, top_k: int) -> list[tuple[str, float]]:
        used = len(self._id_of)
        valid = int(self._has_centroid[:used].sum())
        k = min(top_k, valid)
        if k == 0:
            return []
        sims = self._centroids[:used] @ query
        sims[~self._has_centroid[:used]] = -np.inf
        best = np.argpartition(sims, used - k)[used - k :]
        best = best[np.argsort(-sims[best], kind="stable")]
        return [(self._id_of[c], _clip(sims[c])) for c in best.tolist()]

    def similarity(self, query: np.ndarray, identity_id: str) -> float:
        code = self._code_of[identity_id]
        if self.scoring == "mean":
            if not self._has_centroid[code]:
                return NO_TEMPLATE_SIMILARITY
            return _clip(self._centroids[code] @ query)
        rows = self._rows_of(code)
        if len(rows) == 0:
            return NO_TEMPLATE_SIMILARITY
        return _clip(np.max(self._matrix[rows] @ query))

    def snapshot(self) -> dict[str, tuple[str, np.ndarray]]:
        """template id -> (identity id, embedding): for tests."""
        return {
            self._template_ids[r]: (
                self._id_of[int(self._codes[r])],
                self._matrix[r].copy(),
            )
            for r in range(self._n)
        }


# ---------------------------------------------------------------------------------------------
# SQLite


def _sqlite_errors(method: Callable[P, R]) -> Callable[P, R]:
    """An unusable database (locked, I/O error, not a database, closed) -> GalleryError."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.OperationalError as error:
            raise GalleryError(f"the gallery database cannot be used: {error}") from error
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.IntegrityError | sqlite3.ProgrammingError):
                raise
            raise GalleryError(f"the gallery database cannot be used: {error}") from error

    return wrapper


def _ts(moment: datetime) -> str:
    # One fixed-width format in UTC: the text sorts like the time.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


_SQLITE_SCHEMA = """
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
"""


class SQLiteGallery(Gallery):
    """A SQLite file (WAL, synchronous=FULL: a commit is on disk when the call returns) and an
    in-memory matrix of every template for exact search, loaded at start and updated after each
    commit. One connection and one lock: calls from many threads run one at a time (a search
    over 100k templates takes a few ms). One process per file: a lock file next to it makes a
    second opener fail with GalleryError, since its matrix would not see the other's writes."""

    def __init__(self, path: Path, *, scoring: Scoring = "max", dimension: int = 512) -> None:
        if scoring not in ("max", "mean"):
            raise ValueError(f"scoring must be 'max' or 'mean', got {scoring!r}")
        self.path = Path(path)
        self.scoring: Scoring = scoring
        self.dimension = dimension
        self._lock = threading.RLock()
        self._closed = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.path.parent / (self.path.name + ".lock")).open("a+b")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._lock_file.close()
            raise GalleryError(
                f"the gallery file {self.path} is in use by another gallery or process"
            ) from error
        try:
            self._conn = self._connect()
            self._index = _TemplateIndex(dimension, scoring)
            self._load()
        except BaseException:
            with suppress(Exception):
                self._conn.close()
            self._lock_file.close()
            raise
        self._closed = False

    @_sqlite_errors
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn = conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise GalleryError(f"the gallery file {self.path} cannot use WAL (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.create_function("py_lower", 1, _lower, deterministic=True)
        with self._transaction():
            for statement in _SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        return conn

    @_sqlite_errors
    def _load(self) -> None:
        started = time.perf_counter()
        conn = self._conn
        index = self._index
        (templates,) = conn.execute("SELECT count(*) FROM templates").fetchone()
        (identities,) = conn.execute("SELECT count(*) FROM identities").fetchone()
        index.reserve(templates, identities)
        for (identity_id,) in conn.execute("SELECT identity_id FROM identities ORDER BY 1"):
            index.add_identity(identity_id)
        cursor = conn.execute(
            "SELECT identity_id, template_id, embedding FROM templates ORDER BY identity_id, seq"
        )
        row_bytes = 4 * self.dimension
        while chunk := cursor.fetchmany(16384):
            blobs = [blob for _, _, blob in chunk]
            if any(len(blob) != row_bytes for blob in blobs):
                raise GalleryError(
                    f"the gallery file {self.path} holds embeddings of another dimension than "
                    f"{self.dimension}"
                )
            rows = np.frombuffer(b"".join(blobs), np.float32).reshape(-1, self.dimension)
            codes = np.fromiter(
                (index._code_of[identity_id] for identity_id, _, _ in chunk), np.int64, len(chunk)
            )
            index._append(codes, [template_id for _, template_id, _ in chunk], rows)
        index.refresh_all_centroids()
        logger.info(
            "gallery %s: %d identities, %d templates loaded in %.2f s",
            self.path,
            index.identities,
            index.templates,
            time.perf_counter() - started,
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the caller holds the lock)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError("the gallery is closed")

    def _require(self, identity_id: str) -> None:
        if identity_id not in self._index:
            raise IdentityNotFoundError(identity_id)

    def _templates_of(self, identity_ids: list[str]) -> dict[str, list[Template]]:
        found: dict[str, list[Template]] = {i: [] for i in identity_ids}
        for start in range(0, len(identity_ids), 500):
            chunk = identity_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for identity_id, template_id, source, created_at in self._conn.execute(
                "SELECT identity_id, template_id, source, created_at FROM templates "
                f"WHERE identity_id IN ({marks}) ORDER BY seq",
                chunk,
            ):
                found[identity_id].append(Template(template_id, source, _dt(created_at)))
        return found

    @staticmethod
    def _identity(row: tuple[Any, ...], templates: list[Template]) -> Identity:
        identity_id, name, metadata, created_at, updated_at = row
        return Identity(
            identity_id, name, json.loads(metadata), _dt(created_at), _dt(updated_at), templates
        )

    def _get(self, identity_id: str) -> Identity:
        row = self._conn.execute(
            "SELECT identity_id, name, metadata, created_at, updated_at FROM identities "
            "WHERE identity_id = ?",
            (identity_id,),
        ).fetchone()
        if row is None:
            raise IdentityNotFoundError(identity_id)
        return self._identity(row, self._templates_of([identity_id])[identity_id])

    def _insert_templates(
        self, identity_id: str, rows: np.ndarray, sources: list[str | None], now: str
    ) -> list[str]:
        template_ids = [_new_id() for _ in range(len(rows))]
        self._conn.executemany(
            "INSERT INTO templates (template_id, identity_id, source, embedding, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (template_id, identity_id, source, row.tobytes(), now)
                for template_id, source, row in zip(template_ids, sources, rows, strict=True)
            ],
        )
        return template_ids

    def _touch(self, identity_id: str, now: str) -> None:
        self._conn.execute(
            "UPDATE identities SET updated_at = ? WHERE identity_id = ?", (now, identity_id)
        )

    # -- identities

    @_sqlite_errors
    def create_identity(
        self,
        *,
        identity_id: str | None,
        name: str | None,
        metadata: dict[str, Any],
        embeddings: np.ndarray,
        sources: list[str | None],
    ) -> Identity:
        rows = _as_matrix(embeddings, self.dimension)
        sources = _check_sources(sources, len(rows))
        metadata_json = json.dumps(metadata)
        identity_id = _new_id() if identity_id is None else identity_id
        moment = _utcnow()
        now = _ts(moment)
        with self._lock:
            self._check_open()
            if identity_id in self._index:
                raise IdentityExistsError(identity_id)
            self._index.reserve(len(rows), 1)
            with self._transaction() as conn:
                try:
                    conn.execute(
                        "INSERT INTO identities (identity_id, name, metadata, created_at, "
                        "updated_at) VALUES (?, ?, ?, ?, ?)",
                        (identity_id, name, metadata_json, now, now),
                    )
                except sqlite3.IntegrityError:
                    raise IdentityExistsError(identity_id) from None
                template_ids = self._insert_templates(identity_id, rows, sources, now)
            self._index.add_identity(identity_id)
            self._index.add_rows(identity_id, template_ids, rows)
        return Identity(
            identity_id,
            name,
            json.loads(metadata_json),
            moment,
            moment,
            [Template(t, s, moment) for t, s in zip(template_ids, sources, strict=True)],
        )

    @_sqlite_errors
    def add_templates(
        self, *, identity_id: str, embeddings: np.ndarray, sources: list[str | None]
    ) -> Identity:
        rows = _as_matrix(embeddings, self.dimension)
        sources = _check_sources(sources, len(rows))
        now = _ts(_utcnow())
        with self._lock:
            self._check_open()
            self._require(identity_id)
            self._index.reserve(len(rows))
            with self._transaction():
                template_ids = self._insert_templates(identity_id, rows, sources, now)
                self._touch(identity_id, now)
            self._index.add_rows(identity_id, template_ids, rows)
            return self._get(identity_id)

    @_sqlite_errors
    def delete_template(self, *, identity_id: str, template_id: str) -> Identity:
        now = _ts(_utcnow())
        with self._lock:
            self._check_open()
            self._require(identity_id)
            with self._transaction() as conn:
                deleted = conn.execute(
                    "DELETE FROM templates WHERE template_id = ? AND identity_id = ?",
                    (template_id, identity_id),
                ).rowcount
                if not deleted:
                    raise TemplateNotFoundError(identity_id, template_id)
                self._touch(identity_id, now)
            self._index.remove_template(identity_id, template_id)
            return self._get(identity_id)

    @_sqlite_errors
    def update_identity(
        self, *, identity_id: str, name: str | None = UNSET, metadata: dict[str, Any] = UNSET
    ) -> Identity:
        assignments = ["updated_at = ?"]
        values: list[Any] = [_ts(_utcnow())]
        if name is not UNSET:
            assignments.append("name = ?")
            values.append(name)
        if metadata is not UNSET:
            assignments.append("metadata = ?")
            values.append(json.dumps(metadata))
        with self._lock:
            self._check_open()
            with self._transaction() as conn:
                updated = conn.execute(
                    f"UPDATE identities SET {', '.join(assignments)} WHERE identity_id = ?",
                    [*values, identity_id],
                ).rowcount
                if not updated:
                    raise IdentityNotFoundError(identity_id)
            return self._get(identity_id)

    @_sqlite_errors
    def get_identity(self, *, identity_id: str) -> Identity:
        with self._lock:
            self._check_open()
            return self._get(identity_id)

    @_sqlite_errors
    def list_identities(
        self, *, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        _check_page(offset, limit)
        where, args = "", []
        if name_contains is not None:
            where, args = "WHERE instr(py_lower(name), ?) > 0", [name_contains.lower()]
        with self._lock:
            self._check_open()
            (total,) = self._conn.execute(
                f"SELECT count(*) FROM identities {where}", args
            ).fetchone()
            rows = self._conn.execute(
                "SELECT identity_id, name, metadata, created_at, updated_at FROM identities "
                f"{where} ORDER BY created_at, identity_id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            templates = self._templates_of([row[0] for row in rows])
        return [self._identity(row, templates[row[0]]) for row in rows], total

    @_sqlite_errors
    def delete_identity(self, *, identity_id: str) -> None:
        with self._lock:
            self._check_open()
            with self._transaction() as conn:
                deleted = conn.execute(
                    "DELETE FROM identities WHERE identity_id = ?", (identity_id,)
                ).rowcount
                if not deleted:
                    raise IdentityNotFoundError(identity_id)
            self._index.remove_identity(identity_id)

    @_sqlite_errors
    def delete_all(self) -> int:
        with self._lock:
            self._check_open()
            with self._transaction() as conn:
                conn.execute("DELETE FROM templates")
                deleted = conn.execute("DELETE FROM identities").rowcount
            self._index.clear()
            return deleted

    @_sqlite_errors
    def merge(self, *, target_id: str, source_id: str) -> Identity:
        if target_id == source_id:
            raise ValueError(f"cannot merge identity {target_id!r} into itself")
        now = _ts(_utcnow())
        with self._lock:
            self._check_open()
            self._require(target_id)
            self._require(source_id)
            with self._transaction() as conn:
                conn.execute(
                    "UPDATE templates SET identity_id = ? WHERE identity_id = ?",
                    (target_id, source_id),
                )
                conn.execute("DELETE FROM identities WHERE identity_id = ?", (source_id,))
                self._touch(target_id, now)
            self._index.merge(target_id, source_id)
            return self._get(target_id)

    # -- search

    @_sqlite_errors
    def search(self, embedding: np.ndarray, *, top_k: int) -> list[Match]:
        _check_top_k(top_k)
        query = _as_query(embedding, self.dimension)
        with self._lock:
            self._check_open()
            found = self._index.search(query, top_k)
            ids = [identity_id for identity_id, _ in found]
            names = dict(
                self._conn.execute(
                    "SELECT identity_id, name FROM identities "
                    f"WHERE identity_id IN ({','.join('?' * len(ids))})",
                    ids,
                ).fetchall()
            )
        return [Match(identity_id, names.get(identity_id), sim) for identity_id, sim in found]

    @_sqlite_errors
    def similarity(self, embedding: np.ndarray, *, identity_id: str) -> float:
        query = _as_query(embedding, self.dimension)
        with self._lock:
            self._check_open()
            self._require(identity_id)
            return self._index.similarity(query, identity_id)

    @_sqlite_errors
    def count(self) -> tuple[int, int]:
        with self._lock:
            self._check_open()
            return self._index.identities, self._index.templates

    # -- records

    @staticmethod
    def _record(row: tuple[Any, ...]) -> Record:
        record_id, filename, width, height, channels, faces, created_at = row
        return Record(
            record_id,
            filename,
            width,
            height,
            channels,
            _faces_from_json(json.loads(faces)),
            _dt(created_at),
        )

    @_sqlite_errors
    def save_record(
        self, *, filename: str, width: int, height: int, channels: int, faces: list[RecordFace]
    ) -> Record:
        faces_json = _faces_json(faces)
        record = Record(
            _new_id(), filename, width, height, channels, _faces_from_json(faces_json), _utcnow()
        )
        with self._lock:
            self._check_open()
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO records (record_id, filename, width, height, channels, faces, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.record_id,
                        filename,
                        width,
                        height,
                        channels,
                        json.dumps(faces_json),
                        _ts(record.created_at),
                    ),
                )
        return record

    @_sqlite_errors
    def find_records(
        self, *, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        _check_page(offset, limit)
        where, args = "", []
        if filename_contains is not None:
            where, args = "WHERE instr(py_lower(filename), ?) > 0", [filename_contains.lower()]
        with self._lock:
            self._check_open()
            (total,) = self._conn.execute(f"SELECT count(*) FROM records {where}", args).fetchone()
            rows = self._conn.execute(
                "SELECT record_id, filename, width, height, channels, faces, created_at "
                f"FROM records {where} ORDER BY created_at, record_id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [self._record(row) for row in rows], total

    @_sqlite_errors
    def get_record(self, *, record_id: str) -> Record:
        with self._lock:
            self._check_open()
            row = self._conn.execute(
                "SELECT record_id, filename, width, height, channels, faces, created_at "
                "FROM records WHERE record_id = ?",
                (record_id,),
            ).fetchone()
        if row is None:
            raise RecordNotFoundError(record_id)
        return self._record(row)

    @_sqlite_errors
    def delete_record(self, *, record_id: str) -> None:
        with self._lock:
            self._check_open()
            with self._transaction() as conn:
                deleted = conn.execute(
                    "DELETE FROM records WHERE record_id = ?", (record_id,)
                ).rowcount
            if not deleted:
                raise RecordNotFoundError(record_id)

    # -- bulk, export, close

    @_sqlite_errors
    def add_identities_bulk(self, rows: Sequence[tuple[str, str | None, np.ndarray]]) -> int:
        ids, names, matrix = _dedupe_bulk(rows, self.dimension)
        moment = _utcnow()
        now = _ts(moment)
        template_ids = [_new_id() for _ in ids]
        with self._lock:
            self._check_open()
            for identity_id in ids:
                if identity_id in self._index:
                    raise IdentityExistsError(identity_id)
            self._index.reserve(len(ids), len(ids))
            with self._transaction() as conn:
                conn.executemany(
                    "INSERT INTO identities (identity_id, name, metadata, created_at, "
                    "updated_at) VALUES (?, ?, '{}', ?, ?)",
                    ((i, n, now, now) for i, n in zip(ids, names, strict=True)),
                )
                conn.executemany(
                    "INSERT INTO templates (template_id, identity_id, source, embedding, "
                    "created_at) VALUES (?, ?, NULL, ?, ?)",
                    (
                        (t, i, matrix[r].tobytes(), now)
                        for r, (t, i) in enumerate(zip(template_ids, ids, strict=True))
                    ),
                )
            self._index.add_identities(ids, template_ids, matrix)
        return len(ids)

    @_sqlite_errors
    def export_templates(self) -> tuple[list[str], list[str], np.ndarray]:
        with self._lock:
            self._check_open()
            rows = self._conn.execute(
                "SELECT identity_id, template_id, embedding FROM templates "
                "ORDER BY identity_id, seq"
            ).fetchall()
        matrix = np.frombuffer(b"".join(r[2] for r in rows), np.float32)
        return [r[0] for r in rows], [r[1] for r in rows], matrix.reshape(-1, self.dimension)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            finally:
                self._index.clear()
                self._lock_file.close()  # releases the flock


# ---------------------------------------------------------------------------------------------
# PostgreSQL + pgvector


def _pg_errors(method: Callable[P, R]) -> Callable[P, R]:
    """An unreachable or unusable database (and a closed pool) -> GalleryError."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import psycopg

        try:
            return method(*args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise GalleryError(f"the gallery database cannot be used: {error}") from error

    return wrapper


def _vector_dumper(oid: int) -> type:
    """A binary psycopg dumper of numpy vectors as pgvector's ``vector`` (oid of this database):
    uint16 dimension, uint16 0, big-endian float32s."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            vector = np.asarray(obj, dtype=">f4")
            return struct.pack(">HH", vector.shape[0], 0) + vector.tobytes()

    VectorDumper.oid = oid
    return VectorDumper


_PG_LOCK_KEY = 0x6761_6C6C  # advisory lock: one schema creation at a time
_TEMPLATE_INDEX = "templates_embedding_hnsw"
_CENTROID_INDEX = "identities_centroid_hnsw"


class PostgresGallery(Gallery):
    """PostgreSQL + pgvector through a psycopg connection pool (thread-safe; writes are one
    transaction each, with row locks on the identities they touch, retried on deadlock).
    Search is exact (a scan) while the gallery holds fewer than ``exact_search_below``
    templates (the count is cached for ``count_ttl_s``), else it uses the HNSW index
    (``hnsw.ef_search = ef_search``, iterative scans). "max" scoring scans templates and keeps
    each identity's best; "mean" scans the identities' normalised centroids, which every write
    keeps up to date. The HNSW index of the scoring in use is created at start when missing;
    after a bulk load, :meth:`rebuild_index` (or :meth:`drop_index` before it) is faster."""

    def __init__(
        self,
        url: str,
        *,
        scoring: Scoring = "max",
        exact_search_below: int = 20_000,
        ef_search: int = 100,
        dimension: int = 512,
        min_connections: int = 1,
        max_connections: int = 8,
        connect_timeout_s: float = 10.0,
        count_ttl_s: float = 5.0,
    ) -> None:
        import psycopg
        from psycopg.types import TypeInfo
        from psycopg_pool import ConnectionPool

        if scoring not in ("max", "mean"):
            raise ValueError(f"scoring must be 'max' or 'mean', got {scoring!r}")
        self.scoring: Scoring = scoring
        self.exact_search_below = exact_search_below
        self.ef_search = ef_search
        self.dimension = dimension
        self._count_ttl_s = count_ttl_s
        self._count_lock = threading.Lock()
        self._cached_count: tuple[float, int] | None = None
        try:
            with psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s))
            ) as conn:
                self._create_schema(conn)
                info = TypeInfo.fetch(conn, "vector")
                assert info is not None
                self._vector_oid = info.oid
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise GalleryError(f"the gallery database cannot be used: {error}") from error
        self._dumper = _vector_dumper(self._vector_oid)
        self._pool = ConnectionPool(
            url,
            min_size=min_connections,
            max_size=max_connections,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=connect_timeout_s,
            open=False,
            name="gallery",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg.OperationalError as error:
            self._pool.close()
            raise GalleryError(f"the gallery database cannot be used: {error}") from error

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.adapters.register_dumper(np.ndarray, self._dumper)

    @property
    def _index_name(self) -> str:
        return _TEMPLATE_INDEX if self.scoring == "max" else _CENTROID_INDEX

    def _index_sql(self) -> str:
        if self.scoring == "max":
            target = f"{_TEMPLATE_INDEX} ON templates USING hnsw (embedding vector_cosine_ops)"
        else:
            target = f"{_CENTROID_INDEX} ON identities USING hnsw (centroid vector_cosine_ops)"
        return f"CREATE INDEX IF NOT EXISTS {target}"

    def _create_schema(self, conn: psycopg.Connection) -> None:
        dim = int(self.dimension)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            for statement in (
                f"""CREATE TABLE IF NOT EXISTS identities (
                    identity_id text PRIMARY KEY,
                    name text,
                    metadata jsonb NOT NULL DEFAULT '{{}}',
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    centroid vector({dim}))""",
                "CREATE INDEX IF NOT EXISTS identities_created "
                "ON identities (created_at, identity_id)",
                f"""CREATE TABLE IF NOT EXISTS templates (
                    seq bigint GENERATED ALWAYS AS IDENTITY,
                    template_id text PRIMARY KEY,
                    identity_id text NOT NULL
                        REFERENCES identities (identity_id) ON DELETE CASCADE,
                    source text,
                    embedding vector({dim}) NOT NULL,
                    created_at timestamptz NOT NULL)""",
                "CREATE INDEX IF NOT EXISTS templates_identity ON templates (identity_id, seq)",
                """CREATE TABLE IF NOT EXISTS records (
                    record_id text PRIMARY KEY,
                    filename text NOT NULL,
                    width integer NOT NULL,
                    height integer NOT NULL,
                    channels integer NOT NULL,
                    faces jsonb NOT NULL,
                    created_at timestamptz NOT NULL)""",
                "CREATE INDEX IF NOT EXISTS records_filename ON records (filename)",
                "CREATE INDEX IF NOT EXISTS records_created ON records (created_at, record_id)",
                self._index_sql(),
            ):
                conn.execute(statement)

    # -- plumbing

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _write(self, work: Callable[[psycopg.Connection], R]) -> R:
        """``work`` in one transaction, retried when it loses a deadlock or serialization."""
        from psycopg import errors

        for attempt in range(5):
            try:
                with self._transaction() as conn:
                    return work(conn)
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == 4:
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _lock_identities(conn: psycopg.Connection, *identity_ids: str) -> None:
        """Row locks on the identities (in id order: no deadlock between two merges);
        IdentityNotFoundError for the first that does not exist."""
        found = {
            row[0]
            for row in conn.execute(
                "SELECT identity_id FROM identities WHERE identity_id = ANY(%s) "
                "ORDER BY identity_id FOR UPDATE",
                (sorted(identity_ids),),
            )
        }
        for identity_id in identity_ids:
            if identity_id not in found:
                raise IdentityNotFoundError(identity_id)

    @staticmethod
    def _refresh(conn: psycopg.Connection, identity_id: str, now: datetime) -> None:
        """The identity's centroid from its templates (NULL without any) and updated_at."""
        conn.execute(
            "UPDATE identities SET updated_at = %(now)s, centroid = (SELECT "
            "l2_normalize(avg(embedding)) FROM templates WHERE identity_id = %(id)s) "
            "WHERE identity_id = %(id)s",
            {"id": identity_id, "now": now},
        )

    @staticmethod
    def _insert_templates(
        conn: psycopg.Connection,
        identity_id: str,
        rows: np.ndarray,
        sources: list[str | None],
        now: datetime,
    ) -> list[str]:
        template_ids = [_new_id() for _ in range(len(rows))]
        if template_ids:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO templates (template_id, identity_id, source, embedding, "
                    "created_at) VALUES (%s, %s, %s, %s, %s)",
                    [
                        (template_id, identity_id, source, row, now)
                        for template_id, source, row in zip(
                            template_ids, sources, rows, strict=True
                        )
                    ],
                )
        return template_ids

    @staticmethod
    def _templates_of(
        conn: psycopg.Connection, identity_ids: list[str]
    ) -> dict[str, list[Template]]:
        found: dict[str, list[Template]] = {i: [] for i in identity_ids}
        for identity_id, template_id, source, created_at in conn.execute(
            "SELECT identity_id, template_id, source, created_at FROM templates "
            "WHERE identity_id = ANY(%s) ORDER BY seq",
            (identity_ids,),
        ):
            found[identity_id].append(Template(template_id, source, created_at.astimezone(UTC)))
        return found

    @staticmethod
    def _identity(row: tuple[Any, ...], templates: list[Template]) -> Identity:
        identity_id, name, metadata, created_at, updated_at = row
        return Identity(
            identity_id,
            name,
            metadata,
            created_at.astimezone(UTC),
            updated_at.astimezone(UTC),
            templates,
        )

    def _get(self, conn: psycopg.Connection, identity_id: str) -> Identity:
        row = conn.execute(
            "SELECT identity_id, name, metadata, created_at, updated_at FROM identities "
            "WHERE identity_id = %s",
            (identity_id,),
        ).fetchone()
        if row is None:
            raise IdentityNotFoundError(identity_id)
        return self._identity(row, self._templates_of(conn, [identity_id])[identity_id])

    # -- identities

    @_pg_errors
    def create_identity(
        self,
        *,
        identity_id: str | None,
        name: str | None,
        metadata: dict[str, Any],
        embeddings: np.ndarray,
        sources: list[str | None],
    ) -> Identity:
        from psycopg.types.json import Jsonb

        rows = _as_matrix(embeddings, self.dimension)
        sources = _check_sources(sources, len(rows))
        metadata = _json_copy(metadata)
        new_id = _new_id() if identity_id is None else identity_id
        now = _utcnow()

        def work(conn: psycopg.Connection) -> list[str]:
            inserted = conn.execute(
                "INSERT INTO identities (identity_id, name, metadata, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (identity_id) DO NOTHING",
                (new_id, name, Jsonb(metadata), now, now),
            ).rowcount
            if not inserted:
                raise IdentityExistsError(new_id)
            template_ids = self._insert_templates(conn, new_id, rows, sources, now)
            self._refresh(conn, new_id, now)
            return template_ids

        template_ids = self._write(work)
        return Identity(
            new_id,
            name,
            metadata,
            now,
            now,
            [Template(t, s, now) for t, s in zip(template_ids, sources, strict=True)],
        )

    @_pg_errors
    def add_templates(
        self, *, identity_id: str, embeddings: np.ndarray, sources: list[str | None]
    ) -> Identity:
        rows = _as_matrix(embeddings, self.dimension)
        sources = _check_sources(sources, len(rows))
        now = _utcnow()

        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, identity_id)
            self._insert_templates(conn, identity_id, rows, sources, now)
            self._refresh(conn, identity_id, now)
            return self._get(conn, identity_id)

        return self._write(work)

    @_pg_errors
    def delete_template(self, *, identity_id: str, template_id: str) -> Identity:
        now = _utcnow()

        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, identity_id)
            deleted = conn.execute(
                "DELETE FROM templates WHERE template_id = %s AND identity_id = %s",
                (template_id, identity_id),
            ).rowcount
            if not deleted:
                raise TemplateNotFoundError(identity_id, template_id)
            self._refresh(conn, identity_id, now)
            return self._get(conn, identity_id)

        return self._write(work)

    @_pg_errors
    def update_identity(
        self, *, identity_id: str, name: str | None = UNSET, metadata: dict[str, Any] = UNSET
    ) -> Identity:
        from psycopg.types.json import Jsonb

        assignments = ["updated_at = %s"]
        values: list[Any] = [_utcnow()]
        if name is not UNSET:
            assignments.append("name = %s")
            values.append(name)
        if metadata is not UNSET:
            assignments.append("metadata = %s")
            values.append(Jsonb(_json_copy(metadata)))

        def work(conn: psycopg.Connection) -> Identity:
            updated = conn.execute(
                f"UPDATE identities SET {', '.join(assignments)} WHERE identity_id = %s",
                [*values, identity_id],
            ).rowcount
            if not updated:
                raise IdentityNotFoundError(identity_id)
            return self._get(conn, identity_id)

        return self._write(work)

    @_pg_errors
    def get_identity(self, *, identity_id: str) -> Identity:
        with self._transaction() as conn:
            return self._get(conn, identity_id)

    @_pg_errors
    def list_identities(
        self, *, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        _check_page(offset, limit)
        where = "WHERE %(f)s::text IS NULL OR strpos(lower(name), lower(%(f)s::text)) > 0"
        args = {"f": name_contains, "limit": limit, "offset": offset}
        with self._transaction() as conn:
            (total,) = conn.execute(
                f"SELECT count(*) FROM identities {where}",
                args,
            ).fetchone()
            rows = conn.execute(
                "SELECT identity_id, name, metadata, created_at, updated_at FROM identities "
                f"{where} ORDER BY created_at, identity_id LIMIT %(limit)s OFFSET %(offset)s",
                args,
            ).fetchall()
            templates = self._templates_of(conn, [row[0] for row in rows])
        return [self._identity(row, templates[row[0]]) for row in rows], total

    @_pg_errors
    def delete_identity(self, *, identity_id: str) -> None:
        def work(conn: psycopg.Connection) -> None:
            deleted = conn.execute(
                "DELETE FROM identities WHERE identity_id = %s", (identity_id,)
            ).rowcount
            if not deleted:
                raise IdentityNotFoundError(identity_id)

        self._write(work)

    @_pg_errors
    def delete_all(self) -> int:
        def work(conn: psycopg.Connection) -> int:
            # The table lock waits for running writes and makes the count exact; TRUNCATE
            # also empties the HNSW indexes at once.
            conn.execute("LOCK TABLE identities, templates IN ACCESS EXCLUSIVE MODE")
            (deleted,) = conn.execute("SELECT count(*) FROM identities").fetchone()
            conn.execute("TRUNCATE templates, identities")
            return deleted

        deleted = self._write(work)
        with self._count_lock:
            self._cached_count = None
        return deleted

    @_pg_errors
    def merge(self, *, target_id: str, source_id: str) -> Identity:
        if target_id == source_id:
            raise ValueError(f"cannot merge identity {target_id!r} into itself")
        now = _utcnow()

        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, target_id, source_id)
            conn.execute(
                "UPDATE templates SET identity_id = %s WHERE identity_id = %s",
                (target_id, source_id),
            )
            conn.execute("DELETE FROM identities WHERE identity_id = %s", (source_id,))
            self._refresh(conn, target_id, now)
            return self._get(conn, target_id)

        return self._write(work)

    # -- search

    def _template_count(self) -> int:
        now = time.monotonic()
        with self._count_lock:
            cached = self._cached_count
        if cached is not None and now - cached[0] < self._count_ttl_s:
            return cached[1]
        with self._pool.connection() as conn:
            (count,) = conn.execute("SELECT count(*) FROM templates").fetchone()
        with self._count_lock:
            self._cached_count = (now, count)
        return count

    @_pg_errors
    def uses_index(self) -> bool:
        """Whether search uses the HNSW index now (the gallery is not below the threshold)."""
        return self.exact_search_below <= 0 or self._template_count() >= self.exact_search_below

    @_pg_errors
    def search(self, embedding: np.ndarray, *, top_k: int) -> list[Match]:
        _check_top_k(top_k)
        query = _as_query(embedding, self.dimension)
        approximate = self.uses_index()
        with self._transaction() as conn:
            if approximate:
                conn.execute(
                    "SELECT set_config('hnsw.ef_search', %s, true), "
                    "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
                    (str(self.ef_search),),
                )
            if self.scoring == "mean":
                order = "centroid <=> %(q)s" if approximate else "sim DESC, identity_id"
                rows = conn.execute(
                    "SELECT identity_id, name, -(centroid <#> %(q)s) AS sim FROM identities "
                    f"WHERE centroid IS NOT NULL ORDER BY {order} LIMIT %(k)s",
                    {"q": query, "k": top_k},
                ).fetchall()
                found = sorted(rows, key=lambda row: -row[2])
            elif approximate:
                found = self._search_max_hnsw(conn, query, top_k)
            else:
                found = conn.execute(
                    "SELECT best.identity_id, identities.name, best.sim FROM ("
                    "SELECT identity_id, max(-(embedding <#> %(q)s)) AS sim FROM templates "
                    "GROUP BY identity_id ORDER BY sim DESC, identity_id LIMIT %(k)s) best "
                    "JOIN identities USING (identity_id) ORDER BY best.sim DESC, identity_id",
                    {"q": query, "k": top_k},
                ).fetchall()
        return [Match(identity_id, name, _clip(sim)) for identity_id, name, sim in found]

    @staticmethod
    def _search_max_hnsw(
        conn: psycopg.Connection, query: np.ndarray, top_k: int
    ) -> list[tuple[str, str | None, float]]:
        """The nearest templates from the index, each identity's best kept; more templates
        when they hold too few identities."""
        wanted = max(4 * top_k, 40)
        while True:
            rows = conn.execute(
                "SELECT near.identity_id, identities.name, near.sim FROM ("
                "SELECT identity_id, -(embedding <#> %(q)s) AS sim FROM templates "
                "ORDER BY embedding <=> %(q)s LIMIT %(n)s) near "
                "JOIN identities USING (identity_id)",
                {"q": query, "n": wanted},
            ).fetchall()
            best: dict[str, tuple[str, str | None, float]] = {}
            for row in rows:
                if row[0] not in best or row[2] > best[row[0]][2]:
                    best[row[0]] = row
            if len(best) >= top_k or len(rows) < wanted or wanted >= 100_000:
                return sorted(best.values(), key=lambda row: -row[2])[:top_k]
            wanted *= 4

    @_pg_errors
    def similarity(self, embedding: np.ndarray, *, identity_id: str) -> float:
        query = _as_query(embedding, self.dimension)
        with self._transaction() as conn:
            if self.scoring == "mean":
                row = conn.execute(
                    "SELECT -(centroid <#> %s) FROM identities WHERE identity_id = %s",
                    (query, identity_id),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT (SELECT max(-(embedding <#> %s)) FROM templates "
                    "WHERE identity_id = %s) FROM identities WHERE identity_id = %s",
                    (query, identity_id, identity_id),
                ).fetchone()
        if row is None:
            raise IdentityNotFoundError(identity_id)
        return NO_TEMPLATE_SIMILARITY if row[0] is None else _clip(row[0])

    @_pg_errors
    def count(self) -> tuple[int, int]:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM identities), (SELECT count(*) FROM templates)"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    # -- records

    @staticmethod
    def _record(row: tuple[Any, ...]) -> Record:
        record_id, filename, width, height, channels, faces, created_at = row
        return Record(
            record_id,
            filename,
            width,
            height,
            channels,
            _faces_from_json(faces),
            created_at.astimezone(UTC),
        )

    @_pg_errors
    def save_record(
        self, *, filename: str, width: int, height: int, channels: int, faces: list[RecordFace]
    ) -> Record:
        from psycopg.types.json import Jsonb

        faces_json = _faces_json(faces)
        record = Record(
            _new_id(), filename, width, height, channels, _faces_from_json(faces_json), _utcnow()
        )
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO records (record_id, filename, width, height, channels, faces, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    record.record_id,
                    filename,
                    width,
                    height,
                    channels,
                    Jsonb(faces_json),
                    record.created_at,
                ),
            )
        return record

    @_pg_errors
    def find_records(
        self, *, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        _check_page(offset, limit)
        where = "WHERE %(f)s::text IS NULL OR strpos(lower(filename), lower(%(f)s::text)) > 0"
        args = {"f": filename_contains, "limit": limit, "offset": offset}
        with self._transaction() as conn:
            (total,) = conn.execute(
                f"SELECT count(*) FROM records {where}",
                args,
            ).fetchone()
            rows = conn.execute(
                "SELECT record_id, filename, width, height, channels, faces, created_at "
                f"FROM records {where} ORDER BY created_at, record_id "
                "LIMIT %(limit)s OFFSET %(offset)s",
                args,
            ).fetchall()
        return [self._record(row) for row in rows], total

    @_pg_errors
    def get_record(self, *, record_id: str) -> Record:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT record_id, filename, width, height, channels, faces, created_at "
                "FROM records WHERE record_id = %s",
                (record_id,),
            ).fetchone()
        if row is None:
            raise RecordNotFoundError(record_id)
        return self._record(row)

    @_pg_errors
    def delete_record(self, *, record_id: str) -> None:
        with self._transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM records WHERE record_id = %s", (record_id,)
            ).rowcount
        if not deleted:
            raise RecordNotFoundError(record_id)

    # -- bulk, index, export, close

    @_pg_errors
    def add_identities_bulk(self, rows: Sequence[tuple[str, str | None, np.ndarray]]) -> int:
        """Binary COPY of identities and templates in one transaction. With an HNSW index in
        place every row is inserted into it (slow for 100k+): :meth:`drop_index` first and
        :meth:`rebuild_index` after."""
        from psycopg import errors

        ids, names, matrix = _dedupe_bulk(rows, self.dimension)
        if not ids:
            return 0
        big_endian = matrix.astype(">f4")
        now = _utcnow()
        try:
            with self._transaction() as conn, conn.cursor() as cursor:
                with cursor.copy(
                    "COPY identities (identity_id, name, metadata, created_at, updated_at, "
                    "centroid) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(
                        ["text", "text", "jsonb", "timestamptz", "timestamptz", self._vector_oid]
                    )
                    for identity_id, name, vector in zip(ids, names, big_endian, strict=True):
                        copy.write_row((identity_id, name, {}, now, now, vector))
                with cursor.copy(
                    "COPY templates (template_id, identity_id, source, embedding, created_at) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "text", self._vector_oid, "timestamptz"])
                    for identity_id, vector in zip(ids, big_endian, strict=True):
                        copy.write_row((_new_id(), identity_id, None, vector, now))
        except errors.UniqueViolation as error:
            detail = error.diag.message_detail or ""
            match = re.search(r"\(identity_id\)=\((.*)\) already exists", detail)
            raise IdentityExistsError(match.group(1) if match else "?") from None
        with self._count_lock:
            self._cached_count = None
        return len(ids)

    @_pg_errors
    def drop_index(self) -> None:
        """Drops the HNSW index of the scoring in use (before a bulk load)."""
        with self._transaction() as conn:
            conn.execute(f"DROP INDEX IF EXISTS {self._index_name}")

    @_pg_errors
    def rebuild_index(self, *, maintenance_work_mem: str = "1GB") -> None:
        """(Re)builds the HNSW index of the scoring in use and analyzes the tables. The build
        graph should fit ``maintenance_work_mem`` (about 3 GB for 1M 512-d templates)."""
        with self._transaction() as conn:
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,)
            )
            conn.execute(f"DROP INDEX IF EXISTS {self._index_name}")
            conn.execute(self._index_sql())
        with self._pool.connection() as conn:
            conn.execute("ANALYZE identities")
            conn.execute("ANALYZE templates")

    @_pg_errors
    def export_templates(self) -> tuple[list[str], list[str], np.ndarray]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT identity_id, template_id, embedding::real[] FROM templates "
                "ORDER BY identity_id, seq"
            ).fetchall()
        matrix = np.asarray([row[2] for row in rows], np.float32).reshape(-1, self.dimension)
        return [row[0] for row in rows], [row[1] for row in rows], matrix

    def close(self) -> None:
        self._pool.close()
