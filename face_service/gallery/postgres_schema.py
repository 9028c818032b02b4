"""The PostgreSQL gallery's database: its tables (hash-partitioned when asked, vectors kept in the
tables' own pages; the API keys and audit log) and the HNSW index of the scoring in use, created
at start or found as they are; the binary form in which numpy vectors travel as pgvector's
``vector``; transactions on pooled connections; the spelling of the shared statements
(``sql.py``) in it; and which psycopg errors mean it cannot be used."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from face_service.errors import GalleryError
from face_service.gallery.rows import DatabaseErrors
from face_service.gallery.sql import Dialect
from face_service.gallery.types import Scoring

logger = logging.getLogger(__name__)

MAX_PARTITIONS = 256
_LOCK_KEY = 0x6761_6C6C  # advisory lock: one schema creation at a time
_TEMPLATE_INDEX = "templates_embedding_hnsw"
_CENTROID_INDEX = "identities_centroid_hnsw"

# An unreachable or unusable database (and a closed pool) -> GalleryError.
postgres_errors = DatabaseErrors((psycopg.OperationalError, psycopg.InterfaceError))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


SQL = Dialect(
    mark="%s",
    contains="strpos(lower({column}), lower(%s::text)) > 0",
    in_list="{column} = ANY(%s)",
    encode_list=list,
    encode_json=Jsonb,
    decode_json=lambda value: value,  # psycopg decodes jsonb
    encode_time=lambda moment: moment,
    decode_time=_utc,
)


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A pooled connection (autocommit) in one transaction."""
    with pool.connection() as conn, conn.transaction():
        yield conn


def vector_oid(conn: psycopg.Connection) -> int:
    """The oid of pgvector's ``vector`` type in this database."""
    info = TypeInfo.fetch(conn, "vector")
    if info is None:
        raise GalleryError("the gallery database has no pgvector 'vector' type")
    return info.oid


def vector_dumper(oid: int) -> type:
    """A binary psycopg dumper of numpy vectors as pgvector's ``vector`` (oid of this database):
    uint16 dimension, uint16 0, big-endian float32s."""

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            vector = np.asarray(obj, dtype=">f4")
            return struct.pack(">HH", vector.shape[0], 0) + vector.tobytes()

    VectorDumper.oid = oid
    return VectorDumper


def index_name(scoring: Scoring) -> str:
    """The HNSW index that "max" (templates) or "mean" (centroids) scoring searches."""
    return _TEMPLATE_INDEX if scoring == "max" else _CENTROID_INDEX


def index_sql(scoring: Scoring, m: int, ef_construction: int) -> str:
    """Creates the HNSW index of ``scoring`` when missing."""
    if scoring == "max":
        target = f"{_TEMPLATE_INDEX} ON templates USING hnsw (embedding vector_cosine_ops)"
    else:
        target = f"{_CENTROID_INDEX} ON identities USING hnsw (centroid vector_cosine_ops)"
    # Integers, checked by the gallery: no parameter placeholders in DDL.
    options = f"m = {int(m)}, ef_construction = {int(ef_construction)}"
    return f"CREATE INDEX IF NOT EXISTS {target} WITH ({options})"


def create_schema(conn: psycopg.Connection, *, dimension: int, partitions: int, index: str) -> int:
    """Creates what is missing: the extension, the tables (``partitions`` hash partitions of
    identities and templates for new ones), their indexes and ``index`` (:func:`index_sql`).
    Returns the partitions of the tables: an existing gallery keeps its own."""
    dim = int(dimension)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        existing = _existing_partitions(conn)
        if existing is not None and existing != partitions:
            logger.warning(
                "the gallery tables have %d partition(s), not the %d asked for "
                "(FACE_GALLERY_HNSW_PARTITIONS): the existing layout is kept, it is chosen "
                "when the tables are created",
                existing,
                partitions,
            )
            partitions = existing
        identities_by, identities_parts = _partitioned("identities", "identity_id", partitions)
        templates_by, templates_parts = _partitioned("templates", "template_id", partitions)
        for statement in (
            f"""CREATE TABLE IF NOT EXISTS identities (
                identity_id text PRIMARY KEY,
                name text,
                metadata jsonb NOT NULL DEFAULT '{{}}',
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                centroid vector({dim})){identities_by}""",
            *identities_parts,
            "CREATE INDEX IF NOT EXISTS identities_created ON identities (created_at, identity_id)",
        ):
            conn.execute(statement)
        _store_inline(conn, "identities", "centroid")
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
        _store_inline(conn, "templates", "embedding")
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
            index,
        ):
            conn.execute(statement)
        _create_access_tables(conn)
    return partitions


def create_access_schema(conn: psycopg.Connection) -> None:
    """Creates the API key and audit tables when missing, and nothing else: what the key store
    and its command line need without knowing the embedding dimension."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        _create_access_tables(conn)


def _create_access_tables(conn: psycopg.Connection) -> None:
    for statement in (
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id text PRIMARY KEY,
            name text NOT NULL,
            scopes text NOT NULL,
            digest text NOT NULL,
            secret_id text NOT NULL,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz)""",
        "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) "
        "WHERE revoked_at IS NULL",
        """CREATE TABLE IF NOT EXISTS audit_log (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL,
            principal text,
            key_id text,
            action text NOT NULL,
            status integer NOT NULL,
            client text,
            method text NOT NULL,
            path text NOT NULL,
            targets jsonb NOT NULL,
            target_ids text NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS audit_action ON audit_log (action, seq)",
        "CREATE INDEX IF NOT EXISTS audit_principal ON audit_log (principal, seq)",
        "CREATE INDEX IF NOT EXISTS audit_at ON audit_log (at)",
    ):
        conn.execute(statement)


def _existing_partitions(conn: psycopg.Connection) -> int | None:
    """Partitions of an existing templates table (1: not partitioned), None when none."""
    row = conn.execute(
        "SELECT c.relkind, (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) "
        "FROM pg_class c WHERE c.oid = to_regclass('templates')"
    ).fetchone()
    if row is None:
        return None
    return int(row[1]) if row[0] == "p" else 1


def _partitioned(table: str, key: str, partitions: int) -> tuple[str, list[str]]:
    """The PARTITION BY clause of ``table`` and the statements creating its partitions."""
    count = int(partitions)
    if count == 1:
        return "", []
    return f" PARTITION BY HASH ({key})", [
        f"CREATE TABLE IF NOT EXISTS {table}_p{i} PARTITION OF {table} "
        f"FOR VALUES WITH (MODULUS {count}, REMAINDER {i})"
        for i in range(count)
    ]


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
