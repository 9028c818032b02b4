"""The identity gallery: people, their face templates (embeddings), 1:N search, and detection
records; API keys and the audit log in the same database. Callers import from here:
:class:`Gallery` (the contract), :func:`open_gallery` (the backend the settings name),
:func:`open_access_store` (keys and audit) and the values they take and give. Modules inside
the package import each other directly, never this one."""

from face_service.gallery.access import AccessStore, ApiKey, AuditEntry, AuditFilter, StoredKey
from face_service.gallery.base import Gallery
from face_service.gallery.factory import open_access_store, open_gallery
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
    "AccessStore",
    "ApiKey",
    "AuditEntry",
    "AuditFilter",
    "BulkRows",
    "Gallery",
    "Identity",
    "Match",
    "Record",
    "RecordFace",
    "Scoring",
    "StoredKey",
    "Template",
    "open_access_store",
    "open_gallery",
]
