"""1:N search in the PostgreSQL gallery. Exact scans while the gallery holds fewer templates than
a threshold (the count cached a few seconds), HNSW index scans above it; the partitions of a
partitioned gallery are scanned at once, each on a pooled connection of its own, and merged.
"max" scoring ranks identities by their best template, "mean" by their normalised centroid."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool

from face_service.errors import GalleryError, IdentityNotFoundError
from face_service.gallery.postgres_schema import transaction
from face_service.gallery.rows import clip_similarity
from face_service.gallery.types import NO_TEMPLATE_SIMILARITY, Match, Scoring


class PostgresSearch:
    """Searches of one gallery's tables through its connection pool. Thread-safe. Errors are
    psycopg's (the gallery turns them into GalleryError), or GalleryError after :meth:`close`."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        scoring: Scoring,
        exact_search_below: int,
        ef_search: int,
        partitions: int,
        threads: int,
        count_ttl_s: float,
    ) -> None:
        self._pool = pool
        self.scoring = scoring
        self.exact_search_below = exact_search_below
        self.ef_search = ef_search
        self.partitions = partitions
        self._count_ttl_s = count_ttl_s
        self._count_lock = threading.Lock()
        self._cached_count: tuple[float, int] | None = None
        self._fan_out = (
            ThreadPoolExecutor(threads, thread_name_prefix="gallery-scan")
            if partitions > 1
            else None
        )

    def close(self) -> None:
        if self._fan_out is not None:
            self._fan_out.shutdown(wait=True)

    # -- which search

    def forget_count(self) -> None:
        """After a write that changes the count a lot (bulk load, delete all)."""
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

    def uses_index(self) -> bool:
        """Whether search uses the HNSW index now (the gallery is not below the threshold)."""
        return self.exact_search_below <= 0 or self._template_count() >= self.exact_search_below

    # -- searches

    def search(self, query: np.ndarray, top_k: int) -> list[Match]:
        """The ``top_k`` identities nearest the unit vector ``query``, best first."""
        if self.uses_index():
            found = (
                self._nearest("identities", "identity_id, name", "centroid", query, top_k)
                if self.scoring == "mean"
                else self._search_max_hnsw(query, top_k)
            )
        else:
            with transaction(self._pool) as conn:
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

    def similarity(self, query: np.ndarray, identity_id: str) -> float:
        """The unit vector ``query``'s score against one identity, exactly."""
        with transaction(self._pool) as conn:
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

    # -- index scans

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
            with transaction(self._pool) as conn:
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
        with transaction(self._pool) as conn:
            names = dict(
                conn.execute(
                    "SELECT identity_id, name FROM identities WHERE identity_id = ANY(%s)",
                    ([identity_id for identity_id, _ in ranked],),
                ).fetchall()
            )
        # An identity deleted since the scan is left out.
        return [(i, names[i], sim) for i, sim in ranked if i in names]
