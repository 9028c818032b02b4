"""Metrics read when Prometheus scrapes, not counted by the service: Triton's health, restarts
and its OWN per-model statistics (``/v2/models/stats``: requests, executions, cumulative queue
and compute time, so queue time is Triton's measurement, not a guess), and the gallery's size.

A scrape never fails and never waits long because of what it reads: Triton is asked within the
health timeout (``FACE_HEALTH_TIMEOUT_S``) and, when it does not answer, ``face_triton_up`` is 0
and the per-model series are left out; the gallery is counted in a worker thread at most every
:data:`GALLERY_COUNT_TTL_S` and, when counting takes longer than the timeout (a huge
PostgreSQL gallery), the last count is served while the count finishes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from face_service.errors import FaceServiceError

logger = logging.getLogger(__name__)

# Gallery counts are this fresh at worst: PostgreSQL's count(*) reads the whole table (1 M
# templates: ~0.5 s), and Prometheus scrapes every 15-60 s.
GALLERY_COUNT_TTL_S = 30.0
NS = 1e-9
# Triton's compute phases (its statistics' names) -> the label value.
COMPUTE_PHASES = {"compute_input": "input", "compute_infer": "infer", "compute_output": "output"}


class TritonReader(Protocol):
    restarts: int

    async def health(self) -> Any: ...

    async def statistics(self) -> list[dict]: ...


class CountingGallery(Protocol):
    def count(self) -> tuple[int, int]: ...


class Families(Collector):
    """Metric families gathered before the exposition is written (the library's collectors
    are synchronous; Triton is asked asynchronously)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


class GalleryCounter:
    """(identities, templates), counted in a worker thread at most every ``ttl_s``."""

    def __init__(self, gallery: CountingGallery, *, ttl_s: float = GALLERY_COUNT_TTL_S) -> None:
        self.gallery = gallery
        self.ttl_s = ttl_s
        self._counted: tuple[int, int] | None = None
        self._counted_at = float("-inf")
        self._task: asyncio.Task[tuple[int, int]] | None = None

    async def counts(self, timeout_s: float) -> tuple[int, int] | None:
        """The latest count: a new one when the last is older than ``ttl_s`` and it comes
        within ``timeout_s``, else the last one (None before the first)."""
        if time.monotonic() - self._counted_at < self.ttl_s:
            return self._counted
        if self._task is None:
            self._task = asyncio.create_task(asyncio.to_thread(self.gallery.count))
        done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
        if done:
            task, self._task = self._task, None
            try:
                self._counted = task.result()
            except FaceServiceError as error:  # the database is away: keep the last count
                logger.warning("gallery count for /metrics failed: %s", error)
            self._counted_at = time.monotonic()
        return self._counted


async def triton_families(triton: TritonReader, timeout_s: float) -> list[Metric]:
    """Triton's health, restarts and per-model statistics, asked within ``timeout_s``."""
    health: Any = None
    stats: list[dict] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            health, stats = await asyncio.gather(triton.health(), _statistics(triton))
    up = GaugeMetricFamily(
        "face_triton_up", "1 when Triton answers as ready within the health timeout, else 0"
    )
    up.add_metric([], 1.0 if health is not None and health.triton else 0.0)
    ready = GaugeMetricFamily(
        "face_triton_model_ready", "1 when the model answers as ready, else 0", labels=["model"]
    )
    for model, is_ready in sorted((health.models if health is not None else {}).items()):
        ready.add_metric([model], 1.0 if is_ready else 0.0)
    restarts = CounterMetricFamily(
        "face_triton_restarts", "Times the service restarted its local Triton (watchdog)"
    )
    restarts.add_metric([], float(triton.restarts))
    return [up, ready, restarts, *model_families(stats if health is not None else [])]


async def _statistics(triton: TritonReader) -> list[dict]:
    try:
        return await triton.statistics()
    except FaceServiceError:
        return []


def model_families(stats: Sequence[dict]) -> list[Metric]:
    """Triton's statistics as counters per model (its versions summed)."""
    requests = CounterMetricFamily(
        "face_triton_inference_requests",
        "Inference requests Triton handled, by model and outcome (Triton's statistics)",
        labels=["model", "outcome"],
    )
    inferences = CounterMetricFamily(
        "face_triton_inferences",
        "Inputs Triton inferred (a batch of n counts n), by model (Triton's statistics)",
        labels=["model"],
    )
    executions = CounterMetricFamily(
        "face_triton_executions",
        "Model executions (batches run) by model: inferences / executions is the mean batch",
        labels=["model"],
    )
    queue = CounterMetricFamily(
        "face_triton_queue_seconds",
        "Time requests waited in Triton's queue (its scheduler), summed, by model",
        labels=["model"],
    )
    compute = CounterMetricFamily(
        "face_triton_compute_seconds",
        "Time Triton spent computing requests, summed, by model and phase (input, infer, output)",
        labels=["model", "phase"],
    )
    totals: dict[str, dict[str, float]] = {}
    for entry in stats:
        model = str(entry.get("name", ""))
        if not model:
            continue
        total = totals.setdefault(model, {})
        inference = entry.get("inference_stats", {})

        def add(key: str, value: float, total: dict[str, float] = total) -> None:
            total[key] = total.get(key, 0.0) + value

        add("success", float(inference.get("success", {}).get("count", 0)))
        add("fail", float(inference.get("fail", {}).get("count", 0)))
        add("inferences", float(entry.get("inference_count", 0)))
        add("executions", float(entry.get("execution_count", 0)))
        add("queue", float(inference.get("queue", {}).get("ns", 0)) * NS)
        for phase in COMPUTE_PHASES:
            add(phase, float(inference.get(phase, {}).get("ns", 0)) * NS)
    for model, total in sorted(totals.items()):
        requests.add_metric([model, "success"], total["success"])
        requests.add_metric([model, "fail"], total["fail"])
        inferences.add_metric([model], total["inferences"])
        executions.add_metric([model], total["executions"])
        queue.add_metric([model], total["queue"])
        for phase, label in COMPUTE_PHASES.items():
            compute.add_metric([model, label], total[phase])
    return [requests, inferences, executions, queue, compute]


async def gallery_families(counter: GalleryCounter, timeout_s: float) -> list[Metric]:
    identities = GaugeMetricFamily("face_gallery_identities", "Identities in the gallery")
    templates = GaugeMetricFamily("face_gallery_templates", "Templates (enrolled faces)")
    counts = await counter.counts(timeout_s)
    if counts is not None:
        identities.add_metric([], float(counts[0]))
        templates.add_metric([], float(counts[1]))
    return [identities, templates]


async def scrape_collectors(
    triton: TritonReader, counter: GalleryCounter, timeout_s: float
) -> list[Collector]:
    """Everything read at scrape time, asked at the same time, within ``timeout_s``."""
    triton_part, gallery_part = await asyncio.gather(
        triton_families(triton, timeout_s), gallery_families(counter, timeout_s)
    )
    return [Families([*triton_part, *gallery_part])]
