"""The measurements of bench/gallery_scale.py: exact search's top-1 and the plain float32 peer
in the benchmark's process, and one API process's latency, recall@1 and memory on a database."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import numpy as np
from gallery_scale_databases import Database, identity_id
from gallery_scale_result import Result

from face_service.settings import Settings
from face_service.testing.service_process import ServiceProcess

GALLERY_API_PORT = 3810
API_STARTUP_TIMEOUT_S = 1800.0  # the SQLite API loads every template at start
REQUEST_TIMEOUT_S = 120.0
WARMUP_QUERIES = 10


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
