"""The identity gallery, every test on both backends: the SQLite file with its in-memory matrix,
and a real PostgreSQL + pgvector (one fresh database per test)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg
import pytest

from face_service.errors import (
    GalleryError,
    IdentityExistsError,
    IdentityNotFoundError,
    RecordNotFoundError,
    TemplateNotFoundError,
)
from face_service.gallery import NO_TEMPLATE_SIMILARITY, Gallery, RecordFace, open_gallery
from face_service.gallery.postgres import PostgresGallery
from face_service.gallery.sqlite import SQLiteGallery
from face_service.settings import Settings

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


def _database_url(url: str, database: str) -> str:
    return urlsplit(url)._replace(path=f"/{database}").geturl()


@contextmanager
def postgres_database(url: str, **defaults: Any) -> Iterator[Store]:
    """A Store on a new database of the session's PostgreSQL, dropped afterwards; ``defaults``
    are the PostgresGallery options of every gallery it opens."""
    database = f"gallery_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    store = Store("postgres", _database_url(url, database), **defaults)
    try:
        yield store
    finally:
        store.close_all()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {database} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres", "postgres-partitioned"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every gallery behaviour is checked on the embedded backend, on PostgreSQL, and on
    PostgreSQL with hash-partitioned tables (one HNSW graph per partition)."""
    if request.param == "sqlite":
        store = Store("sqlite", str(tmp_path / "data" / "gallery.sqlite3"))
        yield store
        store.close_all()
        return
    partitions = 3 if request.param == "postgres-partitioned" else 1
    with postgres_database(request.getfixturevalue("postgres_url"), partitions=partitions) as store:
        yield store


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[Store]:
    with postgres_database(postgres_url) as store:
        yield store


@pytest.fixture
def gallery(store: Store) -> Gallery:
    return store.open()


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


# -- identities -----------------------------------------------------------------------------------


def test_create_then_get_returns_the_same_identity(gallery: Gallery) -> None:
    before = datetime.now(UTC)
    created = gallery.create_identity(
        identity_id=None,
        name="Alice",
        metadata={"team": "red", "level": 3, "tags": ["a", "b"]},
        embeddings=np.stack([axis(0), axis(1)]),
        sources=["alice1.jpg", None],
    )
    assert is_uuid_hex(created.identity_id)
    assert created.name == "Alice"
    assert created.metadata == {"team": "red", "level": 3, "tags": ["a", "b"]}
    assert [t.source for t in created.templates] == ["alice1.jpg", None]
    assert all(is_uuid_hex(t.template_id) for t in created.templates)
    assert is_utc(created.created_at)
    assert is_utc(created.updated_at)
    assert before <= created.created_at <= datetime.now(UTC)
    fetched = gallery.get_identity(identity_id=created.identity_id)
    assert fetched == created
    assert not hasattr(fetched.templates[0], "embedding")
    assert gallery.count() == (1, 2)


def test_a_given_id_is_kept_and_a_taken_id_is_refused_without_writing(gallery: Gallery) -> None:
    enroll(gallery, axis(0), identity_id="alice", name="Alice")
    with pytest.raises(IdentityExistsError) as raised:
        enroll(gallery, axis(1), axis(2), identity_id="alice", name="Other")
    assert raised.value.status_code == 409
    assert gallery.count() == (1, 1)
    assert gallery.get_identity(identity_id="alice").name == "Alice"
    assert [m.identity_id for m in gallery.search(axis(1), top_k=5)] == ["alice"]
    assert gallery.search(axis(1), top_k=5)[0].similarity == pytest.approx(0.0, abs=1e-6)


def test_an_identity_may_start_without_templates(gallery: Gallery) -> None:
    identity_id = enroll(gallery, name="Nobody")
    assert gallery.get_identity(identity_id=identity_id).templates == []
    assert gallery.count() == (1, 0)
    assert gallery.search(axis(0), top_k=3) == []
    assert gallery.similarity(axis(0), identity_id=identity_id) == NO_TEMPLATE_SIMILARITY


def test_list_pages_in_creation_order_and_filters_names_case_insensitively(
    gallery: Gallery,
) -> None:
    names = ["Alice", "alicia", "Bob", None, "ÉLODIE", "Malik"]
    ids = [enroll(gallery, axis(i), name=name) for i, name in enumerate(names)]
    page, total = gallery.list_identities(offset=0, limit=2, name_contains=None)
    assert total == 6
    assert [i.identity_id for i in page] == ids[:2]
    assert [len(i.templates) for i in page] == [1, 1]
    page, total = gallery.list_identities(offset=2, limit=3, name_contains=None)
    assert (total, [i.identity_id for i in page]) == (6, ids[2:5])
    page, total = gallery.list_identities(offset=5, limit=10, name_contains=None)
    assert (total, [i.name for i in page]) == (6, ["Malik"])
    assert gallery.list_identities(offset=10, limit=10, name_contains=None) == ([], 6)

    page, total = gallery.list_identities(offset=0, limit=10, name_contains="ALI")
    assert (total, [i.name for i in page]) == (3, ["Alice", "alicia", "Malik"])
    page, total = gallery.list_identities(offset=1, limit=1, name_contains="ali")
    assert (total, [i.name for i in page]) == (3, ["alicia"])
    page, total = gallery.list_identities(offset=0, limit=10, name_contains="élo")
    assert (total, [i.name for i in page]) == (1, ["ÉLODIE"])
    assert gallery.list_identities(offset=0, limit=10, name_contains="zz") == ([], 0)
    assert gallery.list_identities(offset=0, limit=0, name_contains=None) == ([], 6)
    with pytest.raises(ValueError, match="offset"):
        gallery.list_identities(offset=-1, limit=10, name_contains=None)


def test_update_sets_only_what_is_given(gallery: Gallery) -> None:
    identity_id = enroll(gallery, axis(0), name="Alice", metadata={"a": 1})
    created = gallery.get_identity(identity_id=identity_id)

    renamed = gallery.update_identity(identity_id=identity_id, name="Alicia")
    assert (renamed.name, renamed.metadata) == ("Alicia", {"a": 1})
    assert renamed.updated_at > created.updated_at
    assert renamed.created_at == created.created_at
    assert renamed.templates == created.templates

    retagged = gallery.update_identity(identity_id=identity_id, metadata={"b": [1, 2]})
    assert (retagged.name, retagged.metadata) == ("Alicia", {"b": [1, 2]})

    unnamed = gallery.update_identity(identity_id=identity_id, name=None)
    assert (unnamed.name, unnamed.metadata) == (None, {"b": [1, 2]})
    assert gallery.get_identity(identity_id=identity_id) == unnamed
    assert gallery.search(axis(0), top_k=1)[0].name is None

    with pytest.raises(IdentityNotFoundError) as raised:
        gallery.update_identity(identity_id="missing", name="x")
    assert raised.value.status_code == 404


def test_delete_identity_and_delete_all(gallery: Gallery) -> None:
    first = enroll(gallery, axis(0), axis(1))
    second = enroll(gallery, axis(2))
    enroll(gallery, axis(3))
    record = gallery.save_record(filename="a.jpg", width=1, height=1, channels=3, faces=[])

    gallery.delete_identity(identity_id=first)
    with pytest.raises(IdentityNotFoundError):
        gallery.get_identity(identity_id=first)
    with pytest.raises(IdentityNotFoundError):
        gallery.delete_identity(identity_id=first)
    assert gallery.count() == (2, 2)
    assert gallery.search(axis(2), top_k=10)[0].identity_id == second
    assert first not in {m.identity_id for m in gallery.search(axis(0), top_k=10)}

    assert gallery.delete_all() == 2
    assert gallery.count() == (0, 0)
    assert gallery.search(axis(2), top_k=10) == []
    assert gallery.list_identities(offset=0, limit=10, name_contains=None) == ([], 0)
    assert gallery.delete_all() == 0
    assert gallery.get_record(record_id=record.record_id) == record  # records are kept
    # The gallery still works after being emptied.
    third = enroll(gallery, axis(4))
    assert gallery.search(axis(4), top_k=1)[0].identity_id == third


def test_templates_are_added_in_order_and_deleted(gallery: Gallery) -> None:
    identity_id = enroll(gallery, axis(0), sources=["first.jpg"])
    other = enroll(gallery, axis(9))
    first = gallery.get_identity(identity_id=identity_id).templates[0]

    added = gallery.add_templates(
        identity_id=identity_id,
        embeddings=np.stack([axis(1), axis(2)]),
        sources=["second.jpg", None],
    )
    assert [t.source for t in added.templates] == ["first.jpg", "second.jpg", None]
    assert added.templates[0] == first
    assert len({t.template_id for t in added.templates}) == 3
    assert gallery.count() == (2, 4)
    assert gallery.similarity(axis(2), identity_id=identity_id) == pytest.approx(1.0, abs=1e-6)

    second = added.templates[1].template_id
    after = gallery.delete_template(identity_id=identity_id, template_id=second)
    assert [t.source for t in after.templates] == ["first.jpg", None]
    assert gallery.similarity(axis(1), identity_id=identity_id) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(TemplateNotFoundError) as raised:
        gallery.delete_template(identity_id=identity_id, template_id=second)
    assert raised.value.status_code == 404
    other_template = gallery.get_identity(identity_id=other).templates[0].template_id
    with pytest.raises(TemplateNotFoundError):
        gallery.delete_template(identity_id=identity_id, template_id=other_template)
    with pytest.raises(IdentityNotFoundError):
        gallery.delete_template(identity_id="missing", template_id=other_template)
    with pytest.raises(IdentityNotFoundError):
        gallery.add_templates(identity_id="missing", embeddings=axis(0)[None], sources=[None])
    assert gallery.count() == (2, 3)

    # The last templates go; the identity stays, without templates, and no longer matches.
    for template in after.templates:
        gallery.delete_template(identity_id=identity_id, template_id=template.template_id)
    assert gallery.get_identity(identity_id=identity_id).templates == []
    assert gallery.similarity(axis(0), identity_id=identity_id) == NO_TEMPLATE_SIMILARITY
    assert [m.identity_id for m in gallery.search(axis(0), top_k=10)] == [other]
    assert gallery.count() == (2, 1)


def test_merge_moves_templates_and_deletes_the_source(gallery: Gallery) -> None:
    target = enroll(gallery, axis(0), axis(1), name="Target")
    source = enroll(gallery, axis(2), name="Source")
    bystander = enroll(gallery, axis(3))
    source_templates = gallery.get_identity(identity_id=source).templates
    target_templates = gallery.get_identity(identity_id=target).templates

    merged = gallery.merge(target_id=target, source_id=source)
    assert (merged.identity_id, merged.name) == (target, "Target")
    assert {t.template_id for t in merged.templates} == {
        t.template_id for t in target_templates + source_templates
    }
    assert set(source_templates) <= set(merged.templates)  # ids and creation times kept
    with pytest.raises(IdentityNotFoundError):
        gallery.get_identity(identity_id=source)
    assert gallery.count() == (2, 4)
    best = gallery.search(axis(2), top_k=5)[0]
    assert (best.identity_id, best.name) == (target, "Target")
    assert best.similarity == pytest.approx(1.0, abs=1e-6)

    with pytest.raises(ValueError, match="itself"):
        gallery.merge(target_id=target, source_id=target)
    with pytest.raises(IdentityNotFoundError):
        gallery.merge(target_id=target, source_id=source)
    with pytest.raises(IdentityNotFoundError):
        gallery.merge(target_id="missing", source_id=bystander)
    assert gallery.count() == (2, 4)
    assert len(gallery.get_identity(identity_id=bystander).templates) == 1


# -- search -------------------------------------------------------------------------------------


def _scoring_gallery(store: Store, scoring: str) -> tuple[Gallery, dict[str, str]]:
    gallery = store.open(scoring=scoring)
    ids = {
        # A: two orthogonal templates, one of them exactly the query.
        "A": enroll(gallery, axis(0), axis(1), name="A"),
        # B: one template at cosine 0.9 from the query.
        "B": enroll(gallery, unit((0, 0.9), (3, np.sqrt(1 - 0.81))), name="B"),
        # C: one template at cosine 0.5.
        "C": enroll(gallery, unit((0, 0.5), (4, np.sqrt(0.75))), name="C"),
        # D: orthogonal to the query.
        "D": enroll(gallery, axis(5), name="D"),
    }
    return gallery, ids


def test_search_with_max_scoring_ranks_by_the_best_template(store: Store) -> None:
    gallery, ids = _scoring_gallery(store, "max")
    matches = gallery.search(axis(0), top_k=3)
    assert [m.name for m in matches] == ["A", "B", "C"]
    assert [m.similarity for m in matches] == pytest.approx([1.0, 0.9, 0.5], abs=1e-5)
    assert [m.identity_id for m in matches] == [ids["A"], ids["B"], ids["C"]]
    everything = gallery.search(axis(0), top_k=10)
    assert [m.name for m in everything] == ["A", "B", "C", "D"]
    assert everything[3].similarity == pytest.approx(0.0, abs=1e-6)
    assert [m.name for m in gallery.search(axis(1), top_k=1)] == ["A"]
    assert gallery.similarity(axis(0), identity_id=ids["A"]) == pytest.approx(1.0, abs=1e-6)
    assert gallery.similarity(axis(0), identity_id=ids["B"]) == pytest.approx(0.9, abs=1e-5)


def test_search_with_mean_scoring_ranks_by_the_centroid(store: Store) -> None:
    gallery, ids = _scoring_gallery(store, "mean")
    matches = gallery.search(axis(0), top_k=4)
    # A's centroid (e0 + e1) / sqrt(2) is at cosine 0.707 from e0: B (0.9) comes first.
    assert [m.name for m in matches] == ["B", "A", "C", "D"]
    expected = [0.9, np.sqrt(0.5), 0.5, 0.0]
    assert [m.similarity for m in matches] == pytest.approx(expected, abs=1e-5)
    assert gallery.similarity(axis(0), identity_id=ids["A"]) == pytest.approx(
        np.sqrt(0.5), abs=1e-5
    )
    # The centroids follow every write: a third template along e0 moves A's centroid.
    gallery.add_templates(identity_id=ids["A"], embeddings=axis(0)[None], sources=[None])
    assert gallery.similarity(axis(0), identity_id=ids["A"]) == pytest.approx(
        2 / np.sqrt(5), abs=1e-5
    )
    template = gallery.get_identity(identity_id=ids["A"]).templates[1].template_id  # e1
    gallery.delete_template(identity_id=ids["A"], template_id=template)
    assert [m.name for m in gallery.search(axis(0), top_k=1)] == ["A"]
    gallery.merge(target_id=ids["D"], source_id=ids["B"])  # D: e5 and B's vector
    d_score = gallery.similarity(axis(0), identity_id=ids["D"])
    mean = axis(5) + unit((0, 0.9), (3, np.sqrt(1 - 0.81)))
    assert d_score == pytest.approx(float(mean[0] / np.linalg.norm(mean)), abs=1e-5)
    assert [m.name for m in gallery.search(axis(0), top_k=3)] == ["A", "D", "C"]


def test_search_arguments_and_small_galleries(gallery: Gallery) -> None:
    assert gallery.search(axis(0), top_k=5) == []
    identity_id = enroll(gallery, axis(0), axis(1), axis(2))
    # One identity with many matching templates is one match.
    assert [m.identity_id for m in gallery.search(unit((0, 1), (1, 1)), top_k=5)] == [identity_id]
    # Queries are normalised.
    assert gallery.search(axis(0) * 7, top_k=1)[0].similarity == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="top_k"):
        gallery.search(axis(0), top_k=0)
    with pytest.raises(ValueError, match="shape"):
        gallery.search(np.ones(DIM + 1, np.float32), top_k=1)
    with pytest.raises(ValueError, match="zero"):
        gallery.search(np.zeros(DIM, np.float32), top_k=1)
    with pytest.raises(IdentityNotFoundError):
        gallery.similarity(axis(0), identity_id="missing")


def test_bad_embeddings_are_refused_without_writing(gallery: Gallery) -> None:
    identity_id = enroll(gallery, axis(0))
    with pytest.raises(ValueError, match="shape"):
        enroll(gallery, np.ones(DIM - 1, np.float32))
    with pytest.raises(ValueError, match="zero"):
        enroll(gallery, axis(1), np.zeros(DIM, np.float32))
    with pytest.raises(ValueError, match="finite"):
        enroll(gallery, np.full(DIM, np.nan, np.float32))
    with pytest.raises(ValueError, match="one per embedding"):
        enroll(gallery, axis(1), sources=[None, None])
    with pytest.raises(ValueError, match="one per embedding"):
        gallery.add_templates(identity_id=identity_id, embeddings=axis(1)[None], sources=[])
    assert gallery.count() == (1, 1)


def test_many_templates_per_identity_still_give_top_k_identities(gallery: Gallery) -> None:
    check_crowded_search(gallery)


def test_the_index_search_widens_when_one_identity_crowds_the_top(
    postgres_store: Store,
) -> None:
    # A small ef_search: the first index scan cannot find five identities.
    check_crowded_search(postgres_store.open(exact_search_below=0, ef_search=10))


def check_crowded_search(gallery: Gallery) -> None:
    rng = np.random.default_rng(7)
    query = random_units(rng, 1)[0]
    # The 50 templates nearest the query all belong to one identity.
    near = query + 0.3 * random_units(rng, 50)
    crowded = enroll(gallery, *near)
    others = [enroll(gallery, v) for v in random_units(rng, 20)]
    matches = gallery.search(query, top_k=5)
    assert matches[0].identity_id == crowded
    assert len(matches) == 5
    assert {m.identity_id for m in matches[1:]} <= set(others)
    sims = [m.similarity for m in matches]
    assert sims == sorted(sims, reverse=True)


# -- records ------------------------------------------------------------------------------------


def test_records_are_saved_found_and_deleted(gallery: Gallery) -> None:
    face = RecordFace(
        bbox=[1.5, 2.0, 30.25, 40.0],
        det_score=0.875,
        landmarks=[[1.0, 2.0], [3.0, 4.0]],
        embedding=[0.5, -0.25, 0.125],
    )
    first = gallery.save_record(
        filename="Holiday/Beach.JPG", width=640, height=480, channels=3, faces=[face]
    )
    second = gallery.save_record(filename="beach2.png", width=10, height=20, channels=1, faces=[])
    third = gallery.save_record(filename="office.jpg", width=1, height=1, channels=3, faces=[])
    assert is_uuid_hex(first.record_id)
    assert is_utc(first.created_at)
    assert first.faces == [face]
    assert gallery.get_record(record_id=first.record_id) == first

    assert gallery.find_records(filename_contains="BEACH", offset=0, limit=10) == (
        [first, second],
        2,
    )
    assert gallery.find_records(filename_contains="beach", offset=1, limit=10) == ([second], 2)
    assert gallery.find_records(filename_contains=None, offset=0, limit=2) == (
        [first, second],
        3,
    )
    assert gallery.find_records(filename_contains="nothing", offset=0, limit=2) == ([], 0)

    gallery.delete_record(record_id=second.record_id)
    with pytest.raises(RecordNotFoundError) as raised:
        gallery.get_record(record_id=second.record_id)
    assert raised.value.status_code == 404
    with pytest.raises(RecordNotFoundError):
        gallery.delete_record(record_id=second.record_id)
    assert gallery.find_records(filename_contains=None, offset=0, limit=10) == (
        [first, third],
        2,
    )


# -- persistence, bulk, factory, errors ------------------------------------------------------------


def test_everything_survives_a_reopen(store: Store) -> None:
    rng = np.random.default_rng(3)
    gallery = store.open()
    ids = [enroll(gallery, *random_units(rng, 3), name=f"p{i}") for i in range(20)]
    gallery.merge(target_id=ids[0], source_id=ids[1])
    gallery.delete_identity(identity_id=ids[2])
    victim = gallery.get_identity(identity_id=ids[3]).templates[0].template_id
    gallery.delete_template(identity_id=ids[3], template_id=victim)
    queries = random_units(rng, 5)
    before = [gallery.search(q, top_k=10) for q in queries]
    listed = gallery.list_identities(offset=0, limit=100, name_contains=None)
    counts = gallery.count()
    assert counts == (18, 56)
    gallery.close()

    reopened = store.open()
    assert reopened.count() == counts
    assert reopened.list_identities(offset=0, limit=100, name_contains=None) == listed
    for query, expected in zip(queries, before, strict=True):
        got = reopened.search(query, top_k=10)
        assert [m.identity_id for m in got] == [m.identity_id for m in expected]
        assert [m.similarity for m in got] == pytest.approx([m.similarity for m in expected])


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from face_service.gallery.postgres import PostgresGallery
    from face_service.gallery.sqlite import SQLiteGallery
    from pathlib import Path

    backend, location = sys.argv[1:]
    gallery = (
        SQLiteGallery(Path(location), dimension=512)
        if backend == "sqlite"
        else PostgresGallery(location, dimension=512)
    )
    vector = np.zeros(512, np.float32)
    vector[7] = 1.0
    gallery.create_identity(
        identity_id="survivor", name="S", metadata={}, embeddings=vector[None], sources=[None]
    )
    gallery.save_record(filename="kept.jpg", width=1, height=1, channels=3, faces=[])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_write_that_returned_survives_kill_9(store: Store) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, store.backend, store.location],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    gallery = store.open()
    assert gallery.get_identity(identity_id="survivor").name == "S"
    assert gallery.search(axis(7), top_k=1)[0].identity_id == "survivor"
    assert gallery.find_records(filename_contains="kept", offset=0, limit=1)[1] == 1


def test_bulk_load(store: Store) -> None:
    rng = np.random.default_rng(11)
    gallery = store.open()
    enroll(gallery, axis(0), identity_id="existing")
    vectors = random_units(rng, 300)
    rows = [(f"bulk{i:04d}", f"Person {i}" if i % 2 else None, v) for i, v in enumerate(vectors)]
    assert gallery.add_identities_bulk(rows) == 300
    assert gallery.count() == (301, 301)
    person = gallery.get_identity(identity_id="bulk0001")
    assert (person.name, person.metadata, len(person.templates)) == ("Person 1", {}, 1)
    for index in (0, 17, 299):
        match = gallery.search(vectors[index], top_k=1)[0]
        assert (match.identity_id, match.name) == rows[index][:2]
        assert match.similarity == pytest.approx(1.0, abs=1e-5)

    with pytest.raises(IdentityExistsError, match="existing"):
        gallery.add_identities_bulk([("fresh", None, axis(1)), ("existing", None, axis(2))])
    with pytest.raises(IdentityExistsError, match="twice"):
        gallery.add_identities_bulk([("twice", None, axis(1)), ("twice", None, axis(2))])
    assert gallery.count() == (301, 301)
    with pytest.raises(IdentityNotFoundError):
        gallery.get_identity(identity_id="fresh")
    assert gallery.add_identities_bulk([]) == 0


def test_open_gallery_follows_the_settings(store: Store, tmp_path: Path) -> None:
    if store.backend == "sqlite":
        settings = Settings(data_dir=tmp_path / "nested" / "data", gallery_database_url=None)
        gallery = open_gallery(settings, dimension=DIM)
        assert isinstance(gallery, SQLiteGallery)
        assert gallery.path == tmp_path / "nested" / "data" / "gallery.sqlite3"
    else:
        settings = Settings(
            gallery_database_url=store.location,
            gallery_scoring="mean",
            gallery_exact_search_below=123,
            gallery_hnsw_ef_search=77,
            gallery_hnsw_m=12,
            gallery_hnsw_ef_construction=50,
            gallery_hnsw_partitions=2,
            gallery_search_threads=1,
        )
        gallery = open_gallery(settings, dimension=DIM)
        assert isinstance(gallery, PostgresGallery)
        assert (gallery.scoring, gallery.exact_search_below, gallery.ef_search) == ("mean", 123, 77)
        assert gallery.partitions == 2
        with psycopg.connect(store.location) as conn:
            (options,) = conn.execute(
                "SELECT reloptions FROM pg_class WHERE relname = 'identities_centroid_hnsw'"
            ).fetchone()
            partitions = conn.execute(
                "SELECT inhparent::regclass::text, count(*) FROM pg_inherits "
                "WHERE inhparent IN ('identities'::regclass, 'templates'::regclass) GROUP BY 1"
            ).fetchall()
        assert sorted(options) == ["ef_construction=50", "m=12"]
        assert sorted(partitions) == [("identities", 2), ("templates", 2)]
    try:
        identity_id = enroll(gallery, axis(0))
        assert gallery.search(axis(0), top_k=1)[0].identity_id == identity_id
    finally:
        gallery.close()
    with pytest.raises(ValueError, match="gallery_database_url"):
        open_gallery(Settings(gallery_database_url="mysql://user:secret@host/db"), dimension=DIM)


def test_bad_index_parameters_are_refused_before_connecting() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(ValueError, match="ef_search must be in"):
        PostgresGallery(url, dimension=DIM, ef_search=0)
    with pytest.raises(ValueError, match="hnsw_ef_construction in"):
        PostgresGallery(url, dimension=DIM, hnsw_m=32, hnsw_ef_construction=40)
    with pytest.raises(ValueError, match=r"partitions must be in \[1, 256\], got 0"):
        PostgresGallery(url, dimension=DIM, partitions=0)


def test_an_existing_gallery_keeps_its_partitions(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    for created, asked in ((4, 1), (1, 3)):
        with postgres_database(postgres_url) as store:
            first = store.open(partitions=created)
            enroll(first, axis(0), identity_id="alice")
            first.close()
            with caplog.at_level(logging.WARNING, logger="face_service.gallery"):
                reopened = store.open(partitions=asked)
            assert reopened.partitions == created
            assert f"have {created} partition(s), not the {asked} asked for" in caplog.text
            assert reopened.search(axis(0), top_k=1)[0].identity_id == "alice"
            caplog.clear()


def test_vectors_are_stored_in_the_tables_own_pages(postgres_url: str) -> None:
    for partitions in (1, 3):
        with postgres_database(postgres_url) as store:
            gallery = store.open(scoring="mean", partitions=partitions)
            enroll(gallery, *random_units(np.random.default_rng(2), 40))
            with psycopg.connect(store.location) as conn:
                storage = conn.execute(
                    "SELECT c.relname, a.attstorage FROM pg_attribute a JOIN pg_class c "
                    "ON c.oid = a.attrelid WHERE a.attname IN ('embedding', 'centroid') "
                    "AND c.relkind IN ('r', 'p') ORDER BY 1"
                ).fetchall()
                (heap_bytes,) = conn.execute(
                    "SELECT coalesce((SELECT sum(pg_relation_size(relid)) FROM "
                    "pg_partition_tree('templates')), pg_relation_size('templates'))"
                ).fetchone()
        tables = ["identities", "templates"]
        if partitions > 1:
            tables += [f"{t}_p{i}" for t in tables for i in range(partitions)]
        assert storage == [(table, "p") for table in sorted(tables)]
        # 40 vectors of 2056 bytes in the table itself, not in its TOAST table.
        assert heap_bytes >= 40 * 2056


def test_a_partitioned_search_scans_every_partitions_index(postgres_url: str) -> None:
    vectors, ids, queries, truth = search_set(np.random.default_rng(17), 12_000, 50)
    with postgres_database(postgres_url) as store:
        gallery = store.open(
            partitions=2, exact_search_below=0, ef_search=100, hnsw_m=16, hnsw_ef_construction=64
        )
        gallery.drop_index()
        gallery.add_identities_bulk(list(zip(ids, [None] * len(ids), vectors, strict=True)))
        gallery.rebuild_index()
        found = [gallery.search(q, top_k=1)[0].identity_id for q in queries]
        gallery.close()  # its connections end, and flush their statistics
        with pytest.raises(GalleryError, match="closed"):
            gallery.search(queries[0], top_k=1)
        with psycopg.connect(store.location) as conn:
            sizes = conn.execute(
                "SELECT count(*) FROM templates GROUP BY tableoid ORDER BY 1"
            ).fetchall()
            # Each search went through each partition's own HNSW index once.
            deadline = time.monotonic() + 15
            while True:
                scans = conn.execute(
                    "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                    "WHERE indexrelname LIKE 'templates_p%%_embedding_idx' ORDER BY 1"
                ).fetchall()
                if all(n >= len(queries) for _, n in scans) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    assert scans == [(f"templates_p{i}_embedding_idx", len(queries)) for i in range(2)]
    assert len(sizes) == 2
    assert min(sizes)[0] > 5500
    assert np.mean([f == t for f, t in zip(found, truth, strict=True)]) >= 0.95


def test_an_unusable_database_is_a_gallery_error(store: Store, tmp_path: Path) -> None:
    gallery = store.open()
    enroll(gallery, axis(0), identity_id="alice")
    if store.backend == "sqlite":
        with pytest.raises(GalleryError, match="in use"):
            SQLiteGallery(Path(store.location), dimension=DIM)
        garbage = tmp_path / "garbage.sqlite3"
        garbage.write_bytes(b"this is not a database" * 100)
        with pytest.raises(GalleryError) as raised:
            SQLiteGallery(garbage, dimension=DIM)
    else:
        nowhere = _database_url(store.location, "postgres").split("?")[0]
        with pytest.raises(GalleryError) as raised:
            PostgresGallery(
                f"{nowhere}?host={tmp_path}/no-server", dimension=DIM, connect_timeout_s=2
            )
    assert raised.value.status_code == 503
    gallery.close()
    with pytest.raises(GalleryError):
        gallery.get_identity(identity_id="alice")
    with pytest.raises(GalleryError):
        gallery.search(axis(0), top_k=1)
    gallery.close()  # twice is fine


# -- concurrency --------------------------------------------------------------------------------


def _expected_scores(
    identity_ids: list[str], matrix: np.ndarray, query: np.ndarray, scoring: str
) -> dict[str, float]:
    """Brute force from the database's rows."""
    sims = matrix @ query
    scores: dict[str, float] = {}
    if scoring == "max":
        for identity_id, sim in zip(identity_ids, sims.tolist(), strict=True):
            scores[identity_id] = max(scores.get(identity_id, -2.0), sim)
        return scores
    for identity_id in set(identity_ids):
        rows = matrix[[i for i, x in enumerate(identity_ids) if x == identity_id]]
        mean = rows.astype(np.float64).mean(axis=0)
        scores[identity_id] = float(mean @ query / np.linalg.norm(mean))
    return scores


def assert_consistent(gallery: Gallery, rng: np.random.Generator, scoring: str) -> None:
    identity_ids, template_ids, matrix = gallery.export_templates()
    listed, total = gallery.list_identities(offset=0, limit=10**6, name_contains=None)
    identities, templates = gallery.count()
    assert identities == total == len(listed)
    assert templates == len(template_ids) == sum(len(i.templates) for i in listed)
    by_identity = {i.identity_id: {t.template_id for t in i.templates} for i in listed}
    assert set(identity_ids) <= set(by_identity)  # every template's identity exists
    exported: dict[str, set[str]] = {i: set() for i in by_identity}
    for identity_id, template_id in zip(identity_ids, template_ids, strict=True):
        exported[identity_id].add(template_id)
    assert exported == by_identity
    if isinstance(gallery, SQLiteGallery):  # the in-memory index holds the database's rows
        snapshot = gallery._index.snapshot()
        seqs = dict(gallery._conn.execute("SELECT template_id, seq FROM templates").fetchall())
        assert set(snapshot) == set(seqs.values())
        for row, (identity_id, template_id) in enumerate(
            zip(identity_ids, template_ids, strict=True)
        ):
            owner, dequantized = snapshot[seqs[template_id]]
            assert owner == identity_id
            # int8 codes with a per-row scale: within half a step of the stored row
            step = np.abs(matrix[row]).max() / 127
            assert np.abs(dequantized - matrix[row]).max() <= step / 2 + 1e-6
    for query in random_units(rng, 5):
        expected = _expected_scores(identity_ids, matrix, query, scoring)
        matches = gallery.search(query, top_k=len(listed) + 1)
        assert len(matches) == len(expected)
        ranked = sorted(expected.values(), reverse=True)
        for match, score in zip(matches, ranked, strict=True):
            assert match.similarity == pytest.approx(score, abs=1e-4)
            assert expected[match.identity_id] == pytest.approx(match.similarity, abs=1e-4)
        for match in matches[:5]:
            assert gallery.similarity(query, identity_id=match.identity_id) == pytest.approx(
                match.similarity, abs=1e-4
            )


@pytest.mark.parametrize("scoring", ["max", "mean"])
def test_concurrent_writes_and_searches_stay_consistent(store: Store, scoring: str) -> None:
    gallery = store.open(scoring=scoring)
    known: list[str] = [enroll(gallery, *random_units(np.random.default_rng(0), 2))]
    known_lock = threading.Lock()
    done = {"ops": 0, "searches": 0}
    deadline = time.monotonic() + 2.0

    def pick(rng: np.random.Generator) -> str:
        with known_lock:
            return known[int(rng.integers(len(known)))]

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        operations: list[Callable[[], Any]] = []

        def create() -> None:
            vectors = random_units(rng, int(rng.integers(1, 4)))
            identity_id = enroll(gallery, *vectors, name=f"w{seed}")
            with known_lock:
                known.append(identity_id)

        def add() -> None:
            gallery.add_templates(
                identity_id=pick(rng), embeddings=random_units(rng, 2), sources=["x", None]
            )

        def delete_template() -> None:
            identity = gallery.get_identity(identity_id=pick(rng))
            if identity.templates:
                template = identity.templates[int(rng.integers(len(identity.templates)))]
                gallery.delete_template(
                    identity_id=identity.identity_id, template_id=template.template_id
                )

        def delete() -> None:
            gallery.delete_identity(identity_id=pick(rng))

        def merge() -> None:
            target, source = pick(rng), pick(rng)
            if target != source:
                gallery.merge(target_id=target, source_id=source)

        def search() -> None:
            matches = gallery.search(random_units(rng, 1)[0], top_k=5)
            sims = [m.similarity for m in matches]
            assert sims == sorted(sims, reverse=True)
            assert len({m.identity_id for m in matches}) == len(matches) <= 5
            with known_lock:
                done["searches"] += 1

        def similarity() -> None:
            gallery.similarity(random_units(rng, 1)[0], identity_id=pick(rng))

        operations = [create, create, add, delete_template, delete, merge, search, search]
        operations.append(similarity)
        while time.monotonic() < deadline:
            # IdentityNotFoundError, TemplateNotFoundError: another thread got there first.
            with suppress(IdentityNotFoundError, TemplateNotFoundError):
                operations[int(rng.integers(len(operations)))]()
            with known_lock:
                done["ops"] += 1

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(worker, seed) for seed in range(8)]:
            future.result(timeout=60)  # re-raises a worker's failure
    assert done["ops"] > 200, done
    assert done["searches"] > 20, done
    assert gallery.count()[0] > 5
    assert_consistent(gallery, np.random.default_rng(99), scoring)
    # And the same after a reopen, from the stored rows alone.
    gallery.close()
    assert_consistent(store.open(scoring=scoring), np.random.default_rng(98), scoring)


# -- approximate search ---------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["max", "mean"])
def test_indexed_search_recall_and_exact_search(store: Store, scoring: str) -> None:
    vectors, ids, queries, truth = search_set(np.random.default_rng(5), 2000, 100)

    if store.backend == "postgres":
        gallery = store.open(scoring=scoring, exact_search_below=0, ef_search=100)
        gallery.drop_index()
        gallery.add_identities_bulk(list(zip(ids, [None] * len(ids), vectors, strict=True)))
        gallery.rebuild_index()
        assert isinstance(gallery, PostgresGallery)
        assert gallery.uses_index()
        exact = store.open(scoring=scoring, exact_search_below=10**9)
        assert isinstance(exact, PostgresGallery)
        assert not exact.uses_index()
    else:
        gallery = exact = store.open(scoring=scoring)
        gallery.add_identities_bulk(list(zip(ids, [None] * len(ids), vectors, strict=True)))

    found = [gallery.search(q, top_k=1)[0].identity_id for q in queries]
    recall = np.mean([f == t for f, t in zip(found, truth, strict=True)])
    assert recall >= (0.95 if store.backend == "postgres" else 1.0), recall
    exact_found = [exact.search(q, top_k=3) for q in queries]
    assert [m[0].identity_id for m in exact_found] == truth
    for query, matches in zip(queries[:10], exact_found[:10], strict=True):
        scores = vectors @ query
        best = np.argsort(-scores)[:3]
        assert [m.identity_id for m in matches] == [ids[i] for i in best]
        assert [m.similarity for m in matches] == pytest.approx(scores[best].tolist(), abs=1e-5)
