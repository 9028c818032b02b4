"""The report of bench/gallery_scale.py: a table per backend, the skipped sizes, and the
targets met or not."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from gallery_scale_result import Result
from report import columns_table

TARGET_SQLITE_P50_MS = 50.0
TARGET_HNSW_RECALL = 0.99
TARGET_SIZE = 1_000_000


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
