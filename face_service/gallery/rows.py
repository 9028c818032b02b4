"""What the gallery's modules share below the API: new ids and times, embeddings checked and
normalised into unit rows, similarities clipped, page arguments checked, JSON copies (detection
faces to and from JSON), and what turns a database driver's errors into GalleryError."""

from __future__ import annotations

import json
import uuid
from contextlib import ContextDecorator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from face_service.errors import GalleryError
from face_service.gallery.types import RecordFace


class DatabaseErrors(ContextDecorator):
    """Turns a database driver's errors of the ``unusable`` kinds (the database unreachable,
    locked, closed or broken), but not ``except_for`` ones, into GalleryError (503): as a
    decorator of a backend's methods, or around a block (``with``)."""

    def __init__(
        self,
        unusable: tuple[type[Exception], ...],
        *,
        except_for: tuple[type[Exception], ...] = (),
    ) -> None:
        self.unusable = unusable
        self.except_for = except_for

    def __enter__(self) -> DatabaseErrors:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, self.unusable) and not isinstance(error, self.except_for):
            raise GalleryError(f"the gallery database cannot be used: {error}") from error


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_unit_rows(embeddings: Any, dimension: int) -> np.ndarray:
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


def as_unit_query(embedding: Any, dimension: int) -> np.ndarray:
    query = np.asarray(embedding, dtype=np.float32)
    if query.shape != (dimension,):
        raise ValueError(f"the embedding must be of shape ({dimension},), got {query.shape}")
    return as_unit_rows(query, dimension)[0]


def clip_similarity(similarity: float) -> float:
    """Rounding can take the cosine of a vector and itself just past 1."""
    return min(1.0, max(-1.0, float(similarity)))


def check_page(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, got {offset} and {limit}")


def json_copy(value: Any) -> Any:
    """What a JSON column gives back for ``value`` (TypeError when it is not JSON)."""
    return json.loads(json.dumps(value))


def faces_from_json(faces: list[dict[str, Any]]) -> list[RecordFace]:
    return [RecordFace(**face) for face in faces]


def faces_to_json(faces: list[RecordFace]) -> list[dict[str, Any]]:
    return [asdict(face) for face in faces]
