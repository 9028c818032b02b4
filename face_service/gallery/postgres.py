"""The gallery at scale, :class:`PostgresGallery`: PostgreSQL with pgvector, shared by any number
of API processes. Its writes (one transaction each, row locks, retries on deadlock), reads, bulk
loads and index maintenance; the tables are ``postgres_schema.py``'s, search is
``postgres_search.py``'s."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from face_service.errors import (
    GalleryError,
    IdentityExistsError,
    IdentityNotFoundError,
    TemplateNotFoundError,
)
from face_service.gallery.base import Gallery
from face_service.gallery.postgres_schema import (
    MAX_PARTITIONS,
    SQL,
    create_schema,
    index_name,
    index_sql,
    postgres_errors,
    transaction,
    vector_dumper,
    vector_oid,
)
from face_service.gallery.postgres_search import PostgresSearch
from face_service.gallery.rows import utcnow
from face_service.gallery.sql import IDENTITY_COLUMNS
from face_service.gallery.types import BulkRows, Identity, Match, Record, Scoring, Template

R = TypeVar("R")


class PostgresGallery(Gallery):
    """PostgreSQL + pgvector through a psycopg connection pool (thread-safe; writes are one
    transaction each, with row locks on the identities they touch, retried on deadlock).
    Search is exact (a scan) while the gallery holds fewer than ``exact_search_below``
    templates (the count is cached for ``count_ttl_s``), else it uses the HNSW index
    (``hnsw.ef_search = ef_search``). "max" scoring scans templates and keeps
    each identity's best; "mean" scans the identities' normalised centroids, which every write
    keeps up to date. The HNSW index of the scoring in use is created at start when missing,
    with ``hnsw_m`` links per node and ``hnsw_ef_construction`` (an existing index keeps the
    parameters it was built with until :meth:`rebuild_index`); after a bulk load,
    :meth:`rebuild_index` (with :meth:`drop_index` before the load) is faster.

    With ``partitions`` > 1 the identities and templates tables are hash-partitioned, each
    partition with its own HNSW graph, and an index search scans every partition at once, each
    on a pool connection of its own, then merges. A graph over 1M face embeddings cannot be
    navigated reliably (they are nearly orthogonal, and a probe is only at cosine ~0.6 from its
    template), while a graph over 1/16 of them can: the true nearest template is the nearest
    one of its own partition. The layout is chosen when the tables are created; an existing
    gallery keeps its own.

    The defaults are measured on face-like vectors (``bench/synthetic_faces.py``, README): at
    1M templates, recall@1 of known probes is 0.75 with one graph (m=24, ef_construction=128,
    ef_search 400) and 0.996 with 16 partitions; at 100k, one graph of pgvector's defaults
    (m=16, ef_construction=64, ef_search 100) reaches 0.775 and the service's 0.995."""

    def __init__(
        self,
        url: str,
        *,
        dimension: int,
        scoring: Scoring = "max",
        exact_search_below: int = 20_000,
        ef_search: int = 400,
        hnsw_m: int = 24,
        hnsw_ef_construction: int = 128,
        partitions: int = 16,
        min_connections: int = 1,
        max_connections: int = 8,
        connect_timeout_s: float = 10.0,
        count_ttl_s: float = 5.0,
    ) -> None:
        if scoring not in ("max", "mean"):
            raise ValueError(f"scoring must be 'max' or 'mean', got {scoring!r}")
        self.scoring = scoring
        if not 1 <= ef_search <= 1000:
            raise ValueError(f"ef_search must be in [1, 1000], got {ef_search}")
        if not 2 <= hnsw_m <= 100 or not 2 * hnsw_m <= hnsw_ef_construction <= 1000:
            raise ValueError(
                "hnsw_m must be in [2, 100] and hnsw_ef_construction in [2 * hnsw_m, 1000], got "
                f"{hnsw_m} and {hnsw_ef_construction}"
            )
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be in [1, {MAX_PARTITIONS}], got {partitions}")
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.dimension = dimension
        with (
            postgres_errors,
            psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s))
            ) as conn,
        ):
            # An existing gallery's own layout decides.
            partitions = create_schema(
                conn, dimension=dimension, partitions=partitions, index=self._index_sql()
            )
            self._vector_oid = vector_oid(conn)
        self._dumper = vector_dumper(self._vector_oid)
        self._pool = ConnectionPool(
            url,
            min_size=min_connections,
            max_size=max_connections,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=ConnectionPool.check_connection,
            timeout=connect_timeout_s,
            open=False,
            name="gallery",
        )
        try:
            with postgres_errors:
                self._pool.open(wait=True, timeout=connect_timeout_s)
        except GalleryError:
            self._pool.close()
            raise
        self._searcher = PostgresSearch(
            self._pool,
            scoring=scoring,
            exact_search_below=exact_search_below,
            ef_search=ef_search,
            partitions=partitions,
            threads=max_connections,
            count_ttl_s=count_ttl_s,
        )

    # The search settings in use (``partitions``: the tables' own).

    @property
    def exact_search_below(self) -> int:
        return self._searcher.exact_search_below

    @property
    def ef_search(self) -> int:
        return self._searcher.ef_search

    @property
    def partitions(self) -> int:
        return self._searcher.partitions

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.adapters.register_dumper(np.ndarray, self._dumper)

    def _index_sql(self) -> str:
        return index_sql(self.scoring, self.hnsw_m, self.hnsw_ef_construction)

    # -- plumbing

    def _transaction(self) -> AbstractContextManager[psycopg.Connection]:
        return transaction(self._pool)

    def _write(self, work: Callable[[psycopg.Connection], R]) -> R:
        """``work`` in one transaction, retried when it loses a deadlock or serialization."""
        for attempt in range(5):
            try:
                with self._transaction() as conn:
                    return work(conn)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == 4:
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    @staticmethod
    def _lock_identities(conn: psycopg.Connection, *identity_ids: str) -> None:
        """Row locks on the identities (in id order: no deadlock between two merges);
        IdentityNotFoundError for the first that does not exist."""
        found = {
            row[0]
            for row in conn.execute(
                "SELECT identity_id FROM identities WHERE identity_id = ANY(%s) "
                "ORDER BY identity_id FOR UPDATE",
                (sorted(identity_ids),),
            )
        }
        for identity_id in identity_ids:
            if identity_id not in found:
                raise IdentityNotFoundError(identity_id)

    @staticmethod
    def _refresh(conn: psycopg.Connection, identity_id: str, now: datetime) -> None:
        """The identity's centroid from its templates (NULL without any) and updated_at."""
        conn.execute(
            "UPDATE identities SET updated_at = %(now)s, centroid = (SELECT "
            "l2_normalize(avg(embedding)) FROM templates WHERE identity_id = %(id)s) "
            "WHERE identity_id = %(id)s",
            {"id": identity_id, "now": now},
        )

    @staticmethod
    def _write_templates(
        conn: psycopg.Connection, identity_id: str, templates: list[Template], rows: np.ndarray
    ) -> None:
        if not templates:
            return
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO templates (template_id, identity_id, source, embedding, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                [
                    (t.template_id, identity_id, t.source, row, t.created_at)
                    for t, row in zip(templates, rows, strict=True)
                ],
            )

    # -- identities

    @postgres_errors
    def _insert_identity(self, identity: Identity, rows: np.ndarray) -> None:
        identity_id, now = identity.identity_id, identity.created_at

        def work(conn: psycopg.Connection) -> None:
            inserted = conn.execute(
                f"INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (identity_id) DO NOTHING",
                (identity_id, identity.name, SQL.encode_json(identity.metadata), now, now),
            ).rowcount
            if not inserted:
                raise IdentityExistsError(identity_id)
            self._write_templates(conn, identity_id, identity.templates, rows)
            self._refresh(conn, identity_id, now)

        self._write(work)

    @postgres_errors
    def _insert_templates(
        self, identity_id: str, templates: list[Template], rows: np.ndarray, now: datetime
    ) -> Identity:
        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, identity_id)
            self._write_templates(conn, identity_id, templates, rows)
            self._refresh(conn, identity_id, now)
            return SQL.get_identity(conn, identity_id)

        return self._write(work)

    @postgres_errors
    def delete_template(self, *, identity_id: str, template_id: str) -> Identity:
        now = utcnow()

        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, identity_id)
            deleted = conn.execute(
                "DELETE FROM templates WHERE template_id = %s AND identity_id = %s",
                (template_id, identity_id),
            ).rowcount
            if not deleted:
                raise TemplateNotFoundError(identity_id, template_id)
            self._refresh(conn, identity_id, now)
            return SQL.get_identity(conn, identity_id)

        return self._write(work)

    @postgres_errors
    def _update_identity(
        self, identity_id: str, changes: dict[str, Any], now: datetime
    ) -> Identity:
        def work(conn: psycopg.Connection) -> Identity:
            SQL.update_identity(conn, identity_id, changes, now)
            return SQL.get_identity(conn, identity_id)

        return self._write(work)

    @postgres_errors
    def _write_face_crops(self, crops: list[tuple[str, bytes]]) -> None:
        self._write(lambda conn: SQL.save_face_crops(conn, crops))

    @postgres_errors
    def face_crop(self, *, identity_id: str, template_id: str) -> bytes | None:
        with self._transaction() as conn:
            return SQL.face_crop(conn, identity_id, template_id)

    @postgres_errors
    def get_identity(self, *, identity_id: str) -> Identity:
        with self._transaction() as conn:
            return SQL.get_identity(conn, identity_id)

    @postgres_errors
    def _list_identities(
        self, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        with self._transaction() as conn:
            return SQL.list_identities(conn, offset, limit, name_contains)

    @postgres_errors
    def delete_identity(self, *, identity_id: str) -> None:
        def work(conn: psycopg.Connection) -> None:
            deleted = conn.execute(
                "DELETE FROM identities WHERE identity_id = %s", (identity_id,)
            ).rowcount
            if not deleted:
                raise IdentityNotFoundError(identity_id)

        self._write(work)

    @postgres_errors
    def delete_all(self) -> int:
        def work(conn: psycopg.Connection) -> int:
            # The table lock waits for running writes and makes the count exact; TRUNCATE
            # also empties the HNSW indexes at once.
            conn.execute("LOCK TABLE identities, templates IN ACCESS EXCLUSIVE MODE")
            (deleted,) = conn.execute("SELECT count(*) FROM identities").fetchone()
            conn.execute("TRUNCATE template_faces, templates, identities")
            return deleted

        deleted = self._write(work)
        self._searcher.forget_count()
        return deleted

    @postgres_errors
    def _merge(self, target_id: str, source_id: str, now: datetime) -> Identity:
        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, target_id, source_id)
            conn.execute(
                "UPDATE templates SET identity_id = %s WHERE identity_id = %s",
                (target_id, source_id),
            )
            conn.execute("DELETE FROM identities WHERE identity_id = %s", (source_id,))
            self._refresh(conn, target_id, now)
            return SQL.get_identity(conn, target_id)

        return self._write(work)

    @postgres_errors
    def _insert_bulk(self, bulk: BulkRows) -> None:
        """Binary COPY of identities and templates in one transaction. With an HNSW index in
        place every row is inserted into it (slow for 100k+): :meth:`drop_index` first and
        :meth:`rebuild_index` after."""
        big_endian = bulk.embeddings.astype(">f4")
        now = bulk.created_at
        rows = list(zip(bulk.identity_ids, bulk.names, bulk.template_ids, big_endian, strict=True))
        try:
            with self._transaction() as conn, conn.cursor() as cursor:
                with cursor.copy(
                    f"COPY identities ({IDENTITY_COLUMNS}, centroid) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(
                        ["text", "text", "jsonb", "timestamptz", "timestamptz", self._vector_oid]
                    )
                    for identity_id, name, _, vector in rows:
                        copy.write_row((identity_id, name, {}, now, now, vector))
                with cursor.copy(
                    "COPY templates (template_id, identity_id, source, embedding, created_at) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "text", self._vector_oid, "timestamptz"])
                    for identity_id, _, template_id, vector in rows:
                        copy.write_row((template_id, identity_id, None, vector, now))
        except pg_errors.UniqueViolation as error:
            detail = error.diag.message_detail or ""
            match = re.search(r"\(identity_id\)=\((.*)\) already exists", detail)
            raise IdentityExistsError(match.group(1) if match else "?") from None
        self._searcher.forget_count()

    # -- search

    @postgres_errors
    def uses_index(self) -> bool:
        """Whether search uses the HNSW index now (the gallery is not below the threshold)."""
        return self._searcher.uses_index()

    @postgres_errors
    def _search(self, query: np.ndarray, top_k: int) -> list[Match]:
        return self._searcher.search(query, top_k)

    @postgres_errors
    def _similarity(self, query: np.ndarray, identity_id: str) -> float:
        return self._searcher.similarity(query, identity_id)

    @postgres_errors
    def count(self) -> tuple[int, int]:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM identities), (SELECT count(*) FROM templates)"
            ).fetchone()
        return int(row[0]), int(row[1])

    # -- records

    @postgres_errors
    def _insert_record(self, record: Record) -> None:
        with self._transaction() as conn:
            SQL.insert_record(conn, record)

    @postgres_errors
    def _find_records(
        self, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        with self._transaction() as conn:
            return SQL.find_records(conn, filename_contains, offset, limit)

    @postgres_errors
    def _get_record(self, record_id: str) -> Record | None:
        with self._transaction() as conn:
            return SQL.get_record(conn, record_id)

    @postgres_errors
    def _delete_record(self, record_id: str) -> bool:
        with self._transaction() as conn:
            return SQL.delete_record(conn, record_id)

    # -- index, export, close

    @postgres_errors
    def drop_index(self) -> None:
        """Drops the HNSW index of the scoring in use (before a bulk load)."""
        with self._transaction() as conn:
            conn.execute(f"DROP INDEX IF EXISTS {index_name(self.scoring)}")

    @postgres_errors
    def rebuild_index(self, *, maintenance_work_mem: str = "1GB") -> None:
        """(Re)builds the HNSW index of the scoring in use and analyzes the tables. The build
        graph should fit ``maintenance_work_mem`` (about 3 GB for 1M 512-d templates)."""
        with self._transaction() as conn:
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,)
            )
            conn.execute(f"DROP INDEX IF EXISTS {index_name(self.scoring)}")
            conn.execute(self._index_sql())
        with self._pool.connection() as conn:
            conn.execute("ANALYZE identities")
            conn.execute("ANALYZE templates")

    @postgres_errors
    def export_templates(self) -> tuple[list[str], list[str], np.ndarray]:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT identity_id, template_id, embedding::real[] FROM templates "
                "ORDER BY identity_id, seq"
            ).fetchall()
        matrix = np.asarray([row[2] for row in rows], np.float32).reshape(-1, self.dimension)
        return [row[0] for row in rows], [row[1] for row in rows], matrix

    def close(self) -> None:
        self._pool.close()
        self._searcher.close()
