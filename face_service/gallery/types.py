"""The values the gallery takes and gives: identities, their templates, search matches, detection
records, a bulk load's rows, and the markers of its API (``UNSET``, the scorings and the score of
an identity without templates). Plain data: nothing here knows a database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

__all__ = [
    "NO_TEMPLATE_SIMILARITY",
    "UNSET",
    "BulkRows",
    "Identity",
    "Match",
    "Record",
    "RecordFace",
    "Scoring",
    "Template",
]

# "max": an identity scores its best template's cosine; "mean": the cosine to the normalised
# mean of its templates.
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


@dataclass(frozen=True)
class BulkRows:
    """What a bulk load writes: one identity with one template per row of ``embeddings``."""

    identity_ids: list[str]
    names: list[str | None]
    template_ids: list[str]
    embeddings: np.ndarray
    created_at: datetime
