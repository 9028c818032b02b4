"""What bench/gallery_scale.py measures for one backend, size and ef_search: the Result that
the loading, the API measurement and the report fill in and read."""

from __future__ import annotations

from dataclasses import dataclass, field


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
