"""The identity gallery's contract: :class:`Gallery`, what the API uses, whatever the backend.

The public methods here check their arguments and build what they return; the backends
(``sqlite.SQLiteGallery``, ``postgres.PostgresGallery``; ``factory.open_gallery`` picks one) fill in
the ``_``-prefixed storage steps. All methods are synchronous and thread-safe; the API calls
them in worker threads. Embeddings are L2-normalised float32 vectors of the recognizer's
dimension (the gallery normalises what it is given again, so cosine similarity is a dot
product).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from face_service.errors import IdentityExistsError, RecordNotFoundError
from face_service.gallery.rows import (
    as_unit_query,
    as_unit_rows,
    check_page,
    faces_from_json,
    faces_to_json,
    json_copy,
    new_id,
    utcnow,
)
from face_service.gallery.types import (
    UNSET,
    BulkRows,
    Identity,
    Match,
    Record,
    RecordFace,
    Scoring,
    Template,
)

__all__ = ["Gallery"]


def _check_face_crops(face_crops: Sequence[bytes | None] | None, count: int) -> None:
    if face_crops is not None and len(face_crops) != count:
        raise ValueError(f"{len(face_crops)} face crops for {count} templates")


class Gallery(ABC):
    """What the API needs from a gallery backend. Identity and template ids are strings; the
    gallery generates ids (uuid4 hex) where none is given. Errors are errors.py's
    IdentityNotFoundError, IdentityExistsError, TemplateNotFoundError, RecordNotFoundError, and
    GalleryError (503) when the database cannot be reached or used. Bad arguments (embeddings
    of the wrong shape, zero or non-finite vectors, sources not one per embedding, negative
    offset/limit, top_k < 1, merging an identity into itself) raise ValueError.

    Templates are listed in creation order (the newest last); merged templates keep their ids
    and creation times. Adding or deleting templates and merging update ``updated_at``.
    Timestamps are timezone-aware UTC datetimes. Usable as a context manager (closes).

    "max" scoring: an identity's score is the best cosine over its templates; "mean": the
    cosine to the normalised mean of its templates."""

    dimension: int
    scoring: Scoring

    # -- identities

    def create_identity(
        self,
        *,
        identity_id: str | None,
        name: str | None,
        metadata: dict[str, Any],
        embeddings: np.ndarray,
        sources: Sequence[str | None],
        face_crops: Sequence[bytes | None] | None = None,
    ) -> Identity:
        """One transaction: the identity and one template per row of ``embeddings`` (n x dim;
        n may be 0). IdentityExistsError (nothing written) when the id is taken. ``face_crops``:
        each template's face as a small JPEG (or None), stored after (see save_face_crops)."""
        rows = as_unit_rows(embeddings, self.dimension)
        _check_face_crops(face_crops, len(rows))
        now = utcnow()
        identity = Identity(
            new_id() if identity_id is None else identity_id,
            name,
            json_copy(metadata),
            now,
            now,
            self._new_templates(sources, len(rows), now),
        )
        self._insert_identity(identity, rows)
        self.save_face_crops(identity.templates, face_crops)
        return identity

    def add_templates(
        self,
        *,
        identity_id: str,
        embeddings: np.ndarray,
        sources: Sequence[str | None],
        face_crops: Sequence[bytes | None] | None = None,
    ) -> Identity:
        """One transaction: one new template per row; returns the identity, new templates last.
        ``face_crops`` as for :meth:`create_identity`."""
        rows = as_unit_rows(embeddings, self.dimension)
        _check_face_crops(face_crops, len(rows))
        now = utcnow()
        templates = self._new_templates(sources, len(rows), now)
        identity = self._insert_templates(identity_id, templates, rows, now)
        self.save_face_crops(templates, face_crops)
        return identity

    def save_face_crops(
        self, templates: Sequence[Template], face_crops: Sequence[bytes | None] | None
    ) -> None:
        """Stores each template's face crop (thumbnails only: a transaction of its own after
        the templates', so a crash between leaves a template without one, never the reverse)."""
        if face_crops is None:
            return
        _check_face_crops(face_crops, len(templates))
        pairs = [(t.template_id, c) for t, c in zip(templates, face_crops, strict=True) if c]
        if pairs:
            self._write_face_crops(pairs)

    @abstractmethod
    def face_crop(self, *, identity_id: str, template_id: str) -> bytes | None:
        """The template's stored face crop (JPEG); None when it has none. TemplateNotFoundError
        when the identity has no such template."""

    @abstractmethod
    def delete_template(self, *, identity_id: str, template_id: str) -> Identity:
        """Deleting the last template leaves the identity, without templates."""

    def update_identity(
        self, *, identity_id: str, name: str | None = UNSET, metadata: dict[str, Any] = UNSET
    ) -> Identity:
        """Sets what is given: ``name=None`` clears the name; ``metadata`` replaces the whole
        dict. Always bumps ``updated_at``."""
        changes: dict[str, Any] = {}
        if name is not UNSET:
            changes["name"] = name
        if metadata is not UNSET:
            changes["metadata"] = json_copy(metadata)
        return self._update_identity(identity_id, changes, utcnow())

    @abstractmethod
    def get_identity(self, *, identity_id: str) -> Identity: ...

    def list_identities(
        self, *, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        """A page of identities ordered by creation (then id), and how many match in all.
        ``name_contains``: a case-insensitive substring of the name (unnamed ones never match)."""
        check_page(offset, limit)
        return self._list_identities(offset, limit, name_contains)

    @abstractmethod
    def delete_identity(self, *, identity_id: str) -> None: ...

    @abstractmethod
    def delete_all(self) -> int:
        """Deletes every identity and template (not the records); returns how many identities
        were deleted."""

    def merge(self, *, target_id: str, source_id: str) -> Identity:
        """One transaction: the source's templates move to the target; the source is deleted.
        ValueError when they are the same; IdentityNotFoundError for a missing one."""
        if target_id == source_id:
            raise ValueError(f"cannot merge identity {target_id!r} into itself")
        return self._merge(target_id, source_id, utcnow())

    def add_identities_bulk(self, rows: Sequence[tuple[str, str | None, np.ndarray]]) -> int:
        """Bulk load for benchmarks and imports: (identity_id, name, one embedding) per row,
        empty metadata, in one transaction; returns how many were added. IdentityExistsError
        (nothing written) if any id is taken or repeated."""
        ids = [row[0] for row in rows]
        seen: set[str] = set()
        for identity_id in ids:
            if identity_id in seen:
                raise IdentityExistsError(identity_id)
            seen.add(identity_id)
        if not ids:
            return 0
        self._insert_bulk(
            BulkRows(
                identity_ids=ids,
                names=[row[1] for row in rows],
                template_ids=[new_id() for _ in ids],
                embeddings=as_unit_rows(np.stack([np.asarray(r[2]) for r in rows]), self.dimension),
                created_at=utcnow(),
            )
        )
        return len(ids)

    # -- search

    def search(self, embedding: np.ndarray, *, top_k: int) -> list[Match]:
        """The ``top_k`` identities most similar to ``embedding``, best first (fewer when the
        gallery holds fewer identities with templates)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return self._search(as_unit_query(embedding, self.dimension), top_k)

    def similarity(self, embedding: np.ndarray, *, identity_id: str) -> float:
        """The embedding's score against one identity (same scoring as search);
        ``NO_TEMPLATE_SIMILARITY`` (-1.0) for an identity without templates."""
        return self._similarity(as_unit_query(embedding, self.dimension), identity_id)

    @abstractmethod
    def count(self) -> tuple[int, int]:
        """(identities, templates)."""

    # -- detection records

    def save_record(
        self, *, filename: str, width: int, height: int, channels: int, faces: list[RecordFace]
    ) -> Record:
        faces = faces_from_json(json_copy(faces_to_json(faces)))
        record = Record(new_id(), filename, width, height, channels, faces, utcnow())
        self._insert_record(record)
        return record

    def find_records(
        self, *, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        """A page of records ordered by creation (then id), and how many match in all.
        ``filename_contains``: a case-insensitive substring of the filename."""
        check_page(offset, limit)
        return self._find_records(filename_contains, offset, limit)

    def get_record(self, *, record_id: str) -> Record:
        record = self._get_record(record_id)
        if record is None:
            raise RecordNotFoundError(record_id)
        return record

    def delete_record(self, *, record_id: str) -> None:
        if not self._delete_record(record_id):
            raise RecordNotFoundError(record_id)

    # -- the rest

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

    # -- what the backends store and read

    @abstractmethod
    def _insert_identity(self, identity: Identity, rows: np.ndarray) -> None:
        """Writes the identity and its templates (``rows[i]`` is ``identity.templates[i]``)."""

    @abstractmethod
    def _insert_templates(
        self, identity_id: str, templates: list[Template], rows: np.ndarray, now: datetime
    ) -> Identity: ...

    @abstractmethod
    def _write_face_crops(self, crops: list[tuple[str, bytes]]) -> None: ...

    @abstractmethod
    def _update_identity(
        self, identity_id: str, changes: dict[str, Any], now: datetime
    ) -> Identity: ...

    @abstractmethod
    def _list_identities(
        self, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]: ...

    @abstractmethod
    def _merge(self, target_id: str, source_id: str, now: datetime) -> Identity: ...

    @abstractmethod
    def _insert_bulk(self, bulk: BulkRows) -> None: ...

    @abstractmethod
    def _search(self, query: np.ndarray, top_k: int) -> list[Match]: ...

    @abstractmethod
    def _similarity(self, query: np.ndarray, identity_id: str) -> float: ...

    @abstractmethod
    def _insert_record(self, record: Record) -> None: ...

    @abstractmethod
    def _get_record(self, record_id: str) -> Record | None: ...

    @abstractmethod
    def _delete_record(self, record_id: str) -> bool:
        """Whether a record was deleted."""

    @abstractmethod
    def _find_records(
        self, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]: ...

    @staticmethod
    def _new_templates(sources: Sequence[str | None], count: int, now: datetime) -> list[Template]:
        if len(sources) != count:
            raise ValueError(
                f"{len(sources)} sources for {count} embeddings; give one per embedding"
            )
        return [Template(new_id(), source, now) for source in sources]
