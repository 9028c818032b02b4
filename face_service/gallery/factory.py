"""Opens the gallery the settings name. Two backends give the ``Gallery`` contract (``base.py``)
one behaviour:

- ``sqlite.SQLiteGallery`` (default, embedded, zero setup): a SQLite file (WAL, one transaction
  per write) plus an in-memory index of every template for exact search (``template_index.py``),
  kept in step with every write and rebuilt from the file at start.
- ``postgres.PostgresGallery`` (at scale): PostgreSQL with pgvector; an HNSW index (cosine)
  answers searches once the gallery holds at least ``exact_search_below`` templates, exact search
  below.
"""

from __future__ import annotations

from pathlib import Path

from face_service.gallery.access import AccessStore
from face_service.gallery.access_backends import PostgresAccessStore, SQLiteAccessStore
from face_service.gallery.base import Gallery
from face_service.gallery.postgres import PostgresGallery
from face_service.gallery.sqlite import SQLiteGallery
from face_service.settings import Settings

__all__ = ["open_access_store", "open_gallery"]


def open_gallery(settings: Settings, *, dimension: int) -> Gallery:
    """The gallery the settings name, for embeddings of ``dimension`` (the recognizer's): the
    SQLite file ``data_dir/gallery.sqlite3`` when ``gallery_database_url`` is unset, PostgreSQL
    for a postgresql:// (or postgres://) URL."""
    url = settings.gallery_database_url
    if not url:
        return SQLiteGallery(
            sqlite_path(settings),
            scoring=settings.gallery_scoring,
            dimension=dimension,
            search_threads=settings.gallery_search_threads,
        )
    if is_postgres(url):
        return PostgresGallery(
            url,
            scoring=settings.gallery_scoring,
            exact_search_below=settings.gallery_exact_search_below,
            ef_search=settings.gallery_hnsw_ef_search,
            hnsw_m=settings.gallery_hnsw_m,
            hnsw_ef_construction=settings.gallery_hnsw_ef_construction,
            partitions=settings.gallery_hnsw_partitions,
            dimension=dimension,
        )
    raise _unknown_scheme(url)


def open_access_store(settings: Settings) -> AccessStore:
    """The API keys and audit log in the database of the gallery the settings name."""
    url = settings.gallery_database_url
    if not url:
        return SQLiteAccessStore(sqlite_path(settings))
    if is_postgres(url):
        return PostgresAccessStore(url)
    raise _unknown_scheme(url)


def sqlite_path(settings: Settings) -> Path:
    return settings.data_dir / "gallery.sqlite3"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def is_postgres(url: str) -> bool:
    return _scheme(url) in ("postgresql", "postgres")


def _unknown_scheme(url: str) -> ValueError:
    # The URL itself is not repeated: it may hold a password.
    return ValueError(
        "gallery_database_url (FACE_GALLERY_DATABASE_URL) must be a postgresql:// or "
        f"postgres:// URL, or unset for the embedded SQLite gallery; got scheme {_scheme(url)!r}"
    )
