"""The identity gallery: people, their face templates (embeddings), 1:N search, and detection
records. Callers import from here: :class:`Gallery` (the contract), :func:`open_gallery` (the
backend the settings name) and the values it takes and gives. Modules inside the package import
each other directly, never this one."""

from face_service.gallery.base import Gallery
from face_service.gallery.factory import open_gallery
from face_service.gallery.types import (
    NO_TEMPLATE_SIMILARITY,
    UNSET,
    BulkRows,
    Identity,
    Match,
    Record,
    RecordFace,
    Scoring,
    Template,
)

__all__ = [
    "NO_TEMPLATE_SIMILARITY",
    "UNSET",
    "BulkRows",
    "Gallery",
    "Identity",
    "Match",
    "Record",
    "RecordFace",
    "Scoring",
    "Template",
    "open_gallery",
]
