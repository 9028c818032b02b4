"""What the gallery tests share: where a test's gallery lives (a SQLite file, or a fresh database
of the session's PostgreSQL), unit vectors to enroll and search, and small checks. The fixtures
over them (``store``, ``gallery``, ``postgres_store``) are in conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg

from face_service.gallery import Gallery
from face_service.gallery.postgres import PostgresGallery
from face_service.gallery.sqlite import SQLiteGallery

DIM = 512
REPOSITORY = Path(__file__).resolve().parent.parent


class Store:
    """Where one test's gallery lives; opens galleries on it and closes them at the end."""

    def __init__(self, backend: str, location: str, **defaults: Any) -> None:
        self.backend = backend
        self.location = location
        self.defaults = defaults
        self.opened: list[Gallery] = []

    def open(self, **options: Any) -> Gallery:
        gallery: Gallery
        options = {"dimension": DIM, **self.defaults, **options}
        if self.backend == "sqlite":
            gallery = SQLiteGallery(Path(self.location), **options)
        else:
            gallery = PostgresGallery(self.location, **options)
        self.opened.append(gallery)
        return gallery

    def close_all(self) -> None:
        for gallery in self.opened:
            gallery.close()


def database_url(url: str, database: str) -> str:
    return urlsplit(url)._replace(path=f"/{database}").geturl()


@contextmanager
def postgres_database(url: str, **defaults: Any) -> Iterator[Store]:
    """A Store on a new database of the session's PostgreSQL, dropped afterwards; ``defaults``
    are the PostgresGallery options of every gallery it opens."""
    database = f"gallery_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    store = Store("postgres", database_url(url, database), **defaults)
    try:
        yield store
    finally:
        store.close_all()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {database} WITH (FORCE)")


def unit(*pairs: tuple[int, float]) -> np.ndarray:
    """A unit vector with the given (axis, weight) components."""
    vector = np.zeros(DIM, np.float32)
    for axis, weight in pairs:
        vector[axis] = weight
    return vector / np.linalg.norm(vector)


def axis(index: int) -> np.ndarray:
    return unit((index, 1.0))


def random_units(rng: np.random.Generator, count: int) -> np.ndarray:
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def search_set(
    rng: np.random.Generator, size: int, count: int
) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """``size`` random unit vectors with their ids, and ``count`` queries (noisy views of the
    first vectors, cosine ~0.45 to their origin) with the id exact search finds for each."""
    vectors = random_units(rng, size)
    ids = [f"p{i:05d}" for i in range(len(vectors))]
    queries = vectors[:count] + 0.09 * rng.standard_normal((count, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = [ids[i] for i in np.argmax(queries @ vectors.T, axis=1)]
    return vectors, ids, queries, truth


def enroll(gallery: Gallery, *vectors: np.ndarray, **options: Any) -> str:
    options.setdefault("identity_id", None)
    options.setdefault("name", None)
    options.setdefault("metadata", {})
    identity = gallery.create_identity(
        embeddings=np.stack(vectors) if vectors else np.empty((0, DIM), np.float32),
        sources=options.pop("sources", [None] * len(vectors)),
        **options,
    )
    return identity.identity_id


def is_uuid_hex(text: str) -> bool:
    return len(text) == 32 and uuid.UUID(hex=text).version == 4


def is_utc(moment: datetime) -> bool:
    return moment.tzinfo is not None and moment.utcoffset().total_seconds() == 0
