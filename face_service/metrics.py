"""The service's Prometheus metrics that code updates as things happen (requests, admission,
faces per image, recognizer batches, auth failures, rate-limit rejections), and the text
exposition of them. They live here, below the API layer, so that the pipeline and the models
record what they do without importing face_service/api.

They are registered in a registry of the service's own (:data:`REGISTRY`, not the library's
global one), created once per process: create_app may run many times in one process (the tests)
without duplicate registrations; tests compare values before and after a request. When
``PROMETHEUS_MULTIPROC_DIR`` is set (the library's own variable: several API processes writing to
one directory) every process writes its values there and a scrape merges them with the library's
MultiProcessCollector; gauges then sum the live processes' values (``livesum``).

Values read at scrape time (Triton's statistics, health and restarts, gallery size) are in
face_service/scrape_metrics.py."""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

# No ``*_created`` series: they double the exposition and no dashboard here uses them.
disable_created_metrics()

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry(auto_describe=True)

# Request latency: /identify/embedding answers in ~5 ms, a 32-image /extract of group photos on 2
# cores takes tens of seconds (bench/RESULTS.md's throughput table: ~11 images/s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Faces the detector found in one image: portraits (0-1), group photos (5-30), crowds; NMS keeps
# at most 2000 candidates per image.
FACES_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
# Crops per recognizer call: powers of two up to well past the model's max_batch_size (32).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The label of a request whose path matches no route: raw paths would be unbounded.
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "face_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "face_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUESTS_IN_FLIGHT = Gauge(
    "face_requests_in_flight",
    "HTTP requests being answered now",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
ADMISSION_QUEUED = Gauge(
    "face_admission_queued_requests",
    "Requests waiting for an admission slot (FACE_MAX_QUEUED_REQUESTS at most)",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
ADMISSION_RUNNING = Gauge(
    "face_admission_running_requests",
    "Requests holding an admission slot (FACE_MAX_CONCURRENT_REQUESTS at most)",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
ADMISSION_REJECTIONS = Counter(
    "face_admission_rejections",
    "Requests refused with 503 because every slot was taken and the queue was full",
    registry=REGISTRY,
)
RATE_LIMIT_REJECTIONS = Counter(
    "face_rate_limit_rejections",
    "Requests refused with 429 by the per-client rate limit (FACE_RATE_LIMIT)",
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "face_auth_failures",
    "Requests refused for their API key: 401 (missing_key, invalid_key, revoked_key) or 403 "
    "(missing_scope)",
    ["status", "reason"],
    registry=REGISTRY,
)
FACES_PER_IMAGE = Histogram(
    "face_faces_per_image",
    "Faces the detector found in each decoded image (before limit_faces / min_face_size)",
    buckets=FACES_BUCKETS,
    registry=REGISTRY,
)
RECOGNIZER_BATCH_SIZE = Histogram(
    "face_recognizer_batch_size",
    "Face crops per recognizer call to Triton",
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)


def method_label(method: str) -> str:
    """The HTTP method, or ``OTHER`` for a made-up one (labels stay bounded)."""
    return method if method in KNOWN_METHODS else "OTHER"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV) or None


def exposition(collectors: Iterable[Collector] = ()) -> bytes:
    """The Prometheus text format of every metric above (merged over all processes when
    ``PROMETHEUS_MULTIPROC_DIR`` is set) followed by those of ``collectors`` (values read at
    scrape time, by this process)."""
    if multiprocess_dir() is not None:
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        text = generate_latest(merged)
    else:
        text = generate_latest(REGISTRY)
    extra = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        extra.register(collector)
    return text + generate_latest(extra)
