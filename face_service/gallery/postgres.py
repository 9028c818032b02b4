"""The gallery at scale: PostgreSQL with pgvector. Templates live in a ``vector`` column with an
HNSW index (cosine); searches are exact scans below a size threshold and go through the index
above it. Several API processes can share one database."""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from face_service.errors import (
    GalleryError,
    IdentityExistsError,
    IdentityNotFoundError,
    TemplateNotFoundError,
)
from face_service.gallery.base import Gallery
from face_service.gallery.rows import clip_similarity, database_errors, utcnow
from face_service.gallery.sql import IDENTITY_COLUMNS, Dialect
from face_service.gallery.types import (
    NO_TEMPLATE_SIMILARITY,
    BulkRows,
    Identity,
    Match,
    Record,
    Scoring,
    Template,
)

R = TypeVar("R")

logger = logging.getLogger(__name__)

# An unreachable or unusable database (and a closed pool) -> GalleryError.
_pg_errors = database_errors((psycopg.OperationalError, psycopg.InterfaceError))


def _vector_dumper(oid: int) -> type:
    """A binary psycopg dumper of numpy vectors as pgvector's ``vector`` (oid of this database):
    uint16 dimension, uint16 0, big-endian float32s."""

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            vector = np.asarray(obj, dtype=">f4")
            return struct.pack(">HH", vector.shape[0], 0) + vector.tobytes()

    VectorDumper.oid = oid
    return VectorDumper


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


_SQL = Dialect(
    mark="%s",
    contains="strpos(lower({column}), lower(%s::text)) > 0",
    in_list="{column} = ANY(%s)",
    encode_list=list,
    encode_json=Jsonb,
    decode_json=lambda value: value,  # psycopg decodes jsonb
    encode_time=lambda moment: moment,
    decode_time=_utc,
)

_PG_LOCK_KEY = 0x6761_6C6C  # advisory lock: one schema creation at a time
_TEMPLATE_INDEX = "templates_embedding_hnsw"
_CENTROID_INDEX = "identities_centroid_hnsw"
_MAX_PARTITIONS = 256


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
        self.exact_search_below = exact_search_below
        if not 1 <= ef_search <= 1000:
            raise ValueError(f"ef_search must be in [1, 1000], got {ef_search}")
        if not 2 <= hnsw_m <= 100 or not 2 * hnsw_m <= hnsw_ef_construction <= 1000:
            raise ValueError(
                "hnsw_m must be in [2, 100] and hnsw_ef_construction in [2 * hnsw_m, 1000], got "
                f"{hnsw_m} and {hnsw_ef_construction}"
            )
        if not 1 <= partitions <= _MAX_PARTITIONS:
            raise ValueError(f"partitions must be in [1, {_MAX_PARTITIONS}], got {partitions}")
        self.ef_search = ef_search
        self.partitions = partitions
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.dimension = dimension
        self._count_ttl_s = count_ttl_s
        self._count_lock = threading.Lock()
        self._cached_count: tuple[float, int] | None = None
        try:
            with psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, round(connect_timeout_s))
            ) as conn:
                self._create_schema(conn)
                info = TypeInfo.fetch(conn, "vector")
                if info is None:
                    raise GalleryError("the gallery database has no pgvector 'vector' type")
                self._vector_oid = info.oid
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise GalleryError(f"the gallery database cannot be used: {error}") from error
        self._dumper = _vector_dumper(self._vector_oid)
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
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg.OperationalError as error:
            self._pool.close()
            raise GalleryError(f"the gallery database cannot be used: {error}") from error
        # After the schema: an existing gallery's own layout decides.
        self._fan_out = (
            ThreadPoolExecutor(max_connections, thread_name_prefix="gallery-scan")
            if self.partitions > 1
            else None
        )

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.adapters.register_dumper(np.ndarray, self._dumper)

    @property
    def _index_name(self) -> str:
        return _TEMPLATE_INDEX if self.scoring == "max" else _CENTROID_INDEX

    def _index_sql(self) -> str:
        if self.scoring == "max":
            target = f"{_TEMPLATE_INDEX} ON templates USING hnsw (embedding vector_cosine_ops)"
        else:
            target = f"{_CENTROID_INDEX} ON identities USING hnsw (centroid vector_cosine_ops)"
        # Integers checked in __init__: no parameter placeholders in DDL.
        options = f"m = {int(self.hnsw_m)}, ef_construction = {int(self.hnsw_ef_construction)}"
        return f"CREATE INDEX IF NOT EXISTS {target} WITH ({options})"

    @staticmethod
    def _existing_partitions(conn: psycopg.Connection) -> int | None:
        """Partitions of an existing templates table (1: not partitioned), None when none."""
        row = conn.execute(
            "SELECT c.relkind, (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) "
            "FROM pg_class c WHERE c.oid = to_regclass('templates')"
        ).fetchone()
        if row is None:
            return None
        return int(row[1]) if row[0] == "p" else 1

    def _partitioned(self, table: str, key: str) -> tuple[str, list[str]]:
        """The PARTITION BY clause of ``table`` and the statements creating its partitions."""
        count = int(self.partitions)
        if count == 1:
            return "", []
        return f" PARTITION BY HASH ({key})", [
            f"CREATE TABLE IF NOT EXISTS {table}_p{i} PARTITION OF {table} "
            f"FOR VALUES WITH (MODULUS {count}, REMAINDER {i})"
            for i in range(count)
        ]

    @staticmethod
    def _store_inline(conn: psycopg.Connection, table: str, column: str) -> None:
        """Keeps the vectors of ``column`` in the table's own pages. pgvector's type is stored
        out of line by default, and a 512-d vector is over TOAST's 2 KB threshold: every
        exact scan then fetched each vector from the TOAST table (3x slower at 20k templates),
        and the heaps were too small for PostgreSQL to give index builds parallel workers.
        Rows written before keep their place until the table is rewritten."""
        (storage,) = conn.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
            (table, column),
        ).fetchone()
        if storage != "p":
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE PLAIN")

    def _create_schema(self, conn: psycopg.Connection) -> None:
        dim = int(self.dimension)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            existing = self._existing_partitions(conn)
            if existing is not None and existing != self.partitions:
                logger.warning(
                    "the gallery tables have %d partition(s), not the %d asked for "
                    "(FACE_GALLERY_HNSW_PARTITIONS): the existing layout is kept, it is chosen "
                    "when the tables are created",
                    existing,
                    self.partitions,
                )
                self.partitions = existing
            identities_by, identities_parts = self._partitioned("identities", "identity_id")
            templates_by, templates_parts = self._partitioned("templates", "template_id")
            for statement in (
                f"""CREATE TABLE IF NOT EXISTS identities (
                    identity_id text PRIMARY KEY,
                    name text,
                    metadata jsonb NOT NULL DEFAULT '{{}}',
                    created_at timestamptz NOT NULL,
                    updated_at timestamptz NOT NULL,
                    centroid vector({dim})){identities_by}""",
                *identities_parts,
                "CREATE INDEX IF NOT EXISTS identities_created "
                "ON identities (created_at, identity_id)",
            ):
                conn.execute(statement)
            self._store_inline(conn, "identities", "centroid")
            for statement in (
                f"""CREATE TABLE IF NOT EXISTS templates (
                    seq bigserial,  -- not an identity column: partitioned only since PG 17
                    template_id text PRIMARY KEY,
                    identity_id text NOT NULL
                        REFERENCES identities (identity_id) ON DELETE CASCADE,
                    source text,
                    embedding vector({dim}) NOT NULL,
                    created_at timestamptz NOT NULL){templates_by}""",
                *templates_parts,
            ):
                conn.execute(statement)
            self._store_inline(conn, "templates", "embedding")
            for statement in (
                "CREATE INDEX IF NOT EXISTS templates_identity ON templates (identity_id, seq)",
                """CREATE TABLE IF NOT EXISTS records (
                    record_id text PRIMARY KEY,
                    filename text NOT NULL,
                    width integer NOT NULL,
                    height integer NOT NULL,
                    channels integer NOT NULL,
                    faces jsonb NOT NULL,
                    created_at timestamptz NOT NULL)""",
                "CREATE INDEX IF NOT EXISTS records_filename ON records (filename)",
                "CREATE INDEX IF NOT EXISTS records_created ON records (created_at, record_id)",
                self._index_sql(),
            ):
                conn.execute(statement)

    # -- plumbing

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

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

    @_pg_errors
    def _insert_identity(self, identity: Identity, rows: np.ndarray) -> None:
        identity_id, now = identity.identity_id, identity.created_at

        def work(conn: psycopg.Connection) -> None:
            inserted = conn.execute(
                f"INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (identity_id) DO NOTHING",
                (identity_id, identity.name, Jsonb(identity.metadata), now, now),
            ).rowcount
            if not inserted:
                raise IdentityExistsError(identity_id)
            self._write_templates(conn, identity_id, identity.templates, rows)
            self._refresh(conn, identity_id, now)

        self._write(work)

    @_pg_errors
    def _insert_templates(
        self, identity_id: str, templates: list[Template], rows: np.ndarray, now: datetime
    ) -> Identity:
        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, identity_id)
            self._write_templates(conn, identity_id, templates, rows)
            self._refresh(conn, identity_id, now)
            return _SQL.get_identity(conn, identity_id)

        return self._write(work)

    @_pg_errors
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
            return _SQL.get_identity(conn, identity_id)

        return self._write(work)

    @_pg_errors
    def _update_identity(
        self, identity_id: str, changes: dict[str, Any], now: datetime
    ) -> Identity:
        def work(conn: psycopg.Connection) -> Identity:
            _SQL.update_identity(conn, identity_id, changes, now)
            return _SQL.get_identity(conn, identity_id)

        return self._write(work)

    @_pg_errors
    def get_identity(self, *, identity_id: str) -> Identity:
        with self._transaction() as conn:
            return _SQL.get_identity(conn, identity_id)

    @_pg_errors
    def _list_identities(
        self, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        with self._transaction() as conn:
            return _SQL.list_identities(conn, offset, limit, name_contains)

    @_pg_errors
    def delete_identity(self, *, identity_id: str) -> None:
        def work(conn: psycopg.Connection) -> None:
            deleted = conn.execute(
                "DELETE FROM identities WHERE identity_id = %s", (identity_id,)
            ).rowcount
            if not deleted:
                raise IdentityNotFoundError(identity_id)

        self._write(work)

    @_pg_errors
    def delete_all(self) -> int:
        def work(conn: psycopg.Connection) -> int:
            # The table lock waits for running writes and makes the count exact; TRUNCATE
            # also empties the HNSW indexes at once.
            conn.execute("LOCK TABLE identities, templates IN ACCESS EXCLUSIVE MODE")
            (deleted,) = conn.execute("SELECT count(*) FROM identities").fetchone()
            conn.execute("TRUNCATE templates, identities")
            return deleted

        deleted = self._write(work)
        self._forget_count()
        return deleted

    @_pg_errors
    def _merge(self, target_id: str, source_id: str, now: datetime) -> Identity:
        def work(conn: psycopg.Connection) -> Identity:
            self._lock_identities(conn, target_id, source_id)
            conn.execute(
                "UPDATE templates SET identity_id = %s WHERE identity_id = %s",
                (target_id, source_id),
            )
            conn.execute("DELETE FROM identities WHERE identity_id = %s", (source_id,))
            self._refresh(conn, target_id, now)
            return _SQL.get_identity(conn, target_id)

        return self._write(work)

    @_pg_errors
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
        self._forget_count()

    # -- search

    def _forget_count(self) -> None:
        with self._count_lock:
            self._cached_count = None

    def _template_count(self) -> int:
        now = time.monotonic()
        with self._count_lock:
            cached = self._cached_count
        if cached is not None and now - cached[0] < self._count_ttl_s:
            return cached[1]
        with self._pool.connection() as conn:
            (count,) = conn.execute("SELECT count(*) FROM templates").fetchone()
        with self._count_lock:
            self._cached_count = (now, count)
        return count

    @_pg_errors
    def uses_index(self) -> bool:
        """Whether search uses the HNSW index now (the gallery is not below the threshold)."""
        return self.exact_search_below <= 0 or self._template_count() >= self.exact_search_below

    @_pg_errors
    def _search(self, query: np.ndarray, top_k: int) -> list[Match]:
        if self.uses_index():
            found = (
                self._nearest("identities", "identity_id, name", "centroid", query, top_k)
                if self.scoring == "mean"
                else self._search_max_hnsw(query, top_k)
            )
        else:
            with self._transaction() as conn:
                found = conn.execute(
                    (
                        "SELECT identity_id, name, -(centroid <#> %(q)s) AS sim FROM identities "
                        "WHERE centroid IS NOT NULL ORDER BY sim DESC, identity_id LIMIT %(k)s"
                    )
                    if self.scoring == "mean"
                    else (
                        "SELECT best.identity_id, identities.name, best.sim FROM ("
                        "SELECT identity_id, max(-(embedding <#> %(q)s)) AS sim FROM templates "
                        "GROUP BY identity_id ORDER BY sim DESC, identity_id LIMIT %(k)s) best "
                        "JOIN identities USING (identity_id) ORDER BY best.sim DESC, identity_id"
                    ),
                    {"q": query, "k": top_k},
                ).fetchall()
        return [Match(identity_id, name, clip_similarity(sim)) for identity_id, name, sim in found]

    def _tune_scan(self, conn: psycopg.Connection, rows_wanted: int) -> None:
        """``ef_search`` for this transaction's index scans, and an iterative scan only when
        more rows are wanted than ``ef_search`` yields: without a filter it gains nothing, and
        it made every search slower (100k templates, ef_search 400: p50 69.6 -> 57.8 ms)."""
        iterative = "relaxed_order" if rows_wanted > self.ef_search else "off"
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', %s, true)",
            (str(self.ef_search), iterative),
        )

    def _nearest(
        self, table: str, columns: str, vector: str, query: np.ndarray, limit: int
    ) -> list[tuple[Any, ...]]:
        """The ``limit`` rows of ``table`` nearest ``query`` through its HNSW index: ``columns``
        and the similarity, best first. The partitions of a partitioned table are scanned at
        once, each on a connection of its own: PostgreSQL runs one query on one core, and its
        merge of ordered index scans (Merge Append) cannot run in parallel."""
        statement = (
            f"SELECT {columns}, -({vector} <#> %(q)s) AS sim FROM {{relation}} "
            f"WHERE {vector} IS NOT NULL ORDER BY {vector} <=> %(q)s LIMIT %(n)s"
        )

        def scan(relation: str) -> list[tuple[Any, ...]]:
            with self._transaction() as conn:
                self._tune_scan(conn, limit)
                return conn.execute(
                    statement.format(relation=relation), {"q": query, "n": limit}
                ).fetchall()

        if self._fan_out is None:
            rows = scan(table)
        else:
            parts = [f"{table}_p{i}" for i in range(self.partitions)]
            try:
                futures = [self._fan_out.submit(scan, part) for part in parts]
            except RuntimeError as error:  # the executor is shut down: close() was called
                raise GalleryError("the gallery is closed") from error
            rows = [row for future in futures for row in future.result()]
        return sorted(rows, key=lambda row: -row[-1])[:limit]

    def _search_max_hnsw(
        self, query: np.ndarray, top_k: int
    ) -> list[tuple[str, str | None, float]]:
        """The nearest templates from the index, each identity's best kept; more templates
        when they hold too few identities."""
        wanted = max(4 * top_k, 40)
        while True:
            rows = self._nearest("templates", "identity_id", "embedding", query, wanted)
            best: dict[str, float] = {}
            for identity_id, sim in rows:
                best[identity_id] = max(sim, best.get(identity_id, sim))
            if len(best) >= top_k or len(rows) < wanted or wanted >= 100_000:
                break
            wanted *= 4
        ranked = sorted(best.items(), key=lambda item: -item[1])[:top_k]
        with self._transaction() as conn:
            names = dict(
                conn.execute(
                    "SELECT identity_id, name FROM identities WHERE identity_id = ANY(%s)",
                    ([identity_id for identity_id, _ in ranked],),
                ).fetchall()
            )
        # An identity deleted since the scan is left out.
        return [(i, names[i], sim) for i, sim in ranked if i in names]

    @_pg_errors
    def _similarity(self, query: np.ndarray, identity_id: str) -> float:
        with self._transaction() as conn:
            if self.scoring == "mean":
                row = conn.execute(
                    "SELECT -(centroid <#> %s) FROM identities WHERE identity_id = %s",
                    (query, identity_id),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT (SELECT max(-(embedding <#> %s)) FROM templates "
                    "WHERE identity_id = %s) FROM identities WHERE identity_id = %s",
                    (query, identity_id, identity_id),
                ).fetchone()
        if row is None:
            raise IdentityNotFoundError(identity_id)
        return NO_TEMPLATE_SIMILARITY if row[0] is None else clip_similarity(row[0])

    @_pg_errors
    def count(self) -> tuple[int, int]:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM identities), (SELECT count(*) FROM templates)"
            ).fetchone()
        return int(row[0]), int(row[1])

    # -- records

    @_pg_errors
    def _insert_record(self, record: Record) -> None:
        with self._transaction() as conn:
            _SQL.insert_record(conn, record)

    @_pg_errors
    def _find_records(
        self, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        with self._transaction() as conn:
            return _SQL.find_records(conn, filename_contains, offset, limit)

    @_pg_errors
    def _get_record(self, record_id: str) -> Record | None:
        with self._transaction() as conn:
            return _SQL.get_record(conn, record_id)

    @_pg_errors
    def _delete_record(self, record_id: str) -> bool:
        with self._transaction() as conn:
            return _SQL.delete_record(conn, record_id)

    # -- index, export, close

    @_pg_errors
    def drop_index(self) -> None:
        """Drops the HNSW index of the scoring in use (before a bulk load)."""
        with self._transaction() as conn:
            conn.execute(f"DROP INDEX IF EXISTS {self._index_name}")

    @_pg_errors
    def rebuild_index(self, *, maintenance_work_mem: str = "1GB") -> None:
        """(Re)builds the HNSW index of the scoring in use and analyzes the tables. The build
        graph should fit ``maintenance_work_mem`` (about 3 GB for 1M 512-d templates)."""
        with self._transaction() as conn:
            conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,)
            )
            conn.execute(f"DROP INDEX IF EXISTS {self._index_name}")
            conn.execute(self._index_sql())
        with self._pool.connection() as conn:
            conn.execute("ANALYZE identities")
            conn.execute("ANALYZE templates")

    @_pg_errors
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
        if self._fan_out is not None:
            self._fan_out.shutdown(wait=True)
