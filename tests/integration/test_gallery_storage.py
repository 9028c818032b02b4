"""What the gallery keeps and where: reopening, kill -9, bulk loads, ``open_gallery`` and the
settings, the PostgreSQL layout (partitions, inline vectors, per-partition index scans) and
databases that cannot be used."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from face_service.errors import GalleryError, IdentityExistsError, IdentityNotFoundError
from face_service.gallery import open_gallery
from face_service.gallery.postgres import PostgresGallery
from face_service.gallery.sqlite import SQLiteGallery
from face_service.settings import Settings
from tests.integration.gallery_support import (
    DIM,
    REPOSITORY,
    Store,
    axis,
    database_url,
    enroll,
    postgres_database,
    random_units,
    search_set,
)


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
        nowhere = database_url(store.location, "postgres").split("?")[0]
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
