"""The parts of /metrics below HTTP: the gallery count's cache and timeout, Triton's statistics
turned into counters, several processes merged through PROMETHEUS_MULTIPROC_DIR, and the
Grafana dashboard, whose every metric name must be one the service exposes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from app import create_app
from face_service.scrape_metrics import GalleryCounter, model_families
from face_service.settings import REPOSITORY_ROOT, Settings
from face_service.testing.prometheus_text import Scrape
from tests.fakes import fake_services, png

DASHBOARD = REPOSITORY_ROOT / "Docker" / "grafana" / "face-service.json"


class SlowGallery:
    """count() blocks until released; counts its calls."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def count(self) -> tuple[int, int]:
        self.calls += 1
        self.release.wait(10)
        return 7, 9


def test_a_slow_gallery_count_never_holds_a_scrape_and_counts_are_cached() -> None:
    async def scenario() -> list[object]:
        gallery = SlowGallery()
        counter = GalleryCounter(gallery, ttl_s=3600)
        first = await counter.counts(timeout_s=0.05)  # still counting: nothing known yet
        again = await counter.counts(timeout_s=0.05)  # the same count goes on, no second one
        gallery.release.set()
        done = await counter.counts(timeout_s=5)
        cached = await counter.counts(timeout_s=5)
        return [first, again, done, cached, gallery.calls]

    assert asyncio.run(scenario()) == [None, None, (7, 9), (7, 9), 1]


def test_an_expired_count_is_counted_again() -> None:
    async def scenario() -> list[object]:
        gallery = SlowGallery()
        gallery.release.set()
        counter = GalleryCounter(gallery, ttl_s=0)
        return [await counter.counts(1), await counter.counts(1), gallery.calls]

    assert asyncio.run(scenario()) == [(7, 9), (7, 9), 2]


def test_triton_statistics_versions_are_summed_per_model() -> None:
    def entry(version: str, count: int, queue_ns: int) -> dict:
        return {
            "name": "face_recognizer",
            "version": version,
            "inference_count": count * 4,
            "execution_count": count,
            "inference_stats": {"success": {"count": count}, "queue": {"ns": queue_ns}},
        }

    families = {
        family.name: family
        for family in model_families([entry("1", 2, 10**9), entry("2", 3, 5 * 10**8)])
    }
    inferences = families["face_triton_inferences"].samples
    assert [(s.labels, s.value) for s in inferences] == [({"model": "face_recognizer"}, 20.0)]
    assert families["face_triton_queue_seconds"].samples[0].value == 1.5
    requests = {
        s.labels["outcome"]: s.value for s in families["face_triton_inference_requests"].samples
    }
    assert requests == {"success": 5.0, "fail": 0.0}  # an absent phase counts 0


# Run in a fresh interpreter: the library picks multiprocess storage when it is imported.
CHILD = """
import sys
from face_service import metrics
if sys.argv[1] == "count":
    metrics.REQUESTS.labels("/embedding", "POST", "200").inc(int(sys.argv[2]))
    metrics.FACES_PER_IMAGE.observe(int(sys.argv[2]))
    metrics.REQUESTS_IN_FLIGHT.inc()
else:
    sys.stdout.write(metrics.exposition().decode())
"""


def test_processes_sharing_prometheus_multiproc_dir_are_merged(tmp_path: Path) -> None:
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def child(*arguments: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", CHILD, *arguments],
            env=environment,
            cwd=REPOSITORY_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    child("count", "2")
    child("count", "3")
    merged = Scrape(child("render"))
    assert merged.value("face_requests_total", route="/embedding", method="POST", status="200") == 5
    assert merged.value("face_faces_per_image_count") == 2
    assert merged.value("face_faces_per_image_sum") == 5
    assert merged.value("face_faces_per_image_bucket", le="2.0") == 1
    # livesum: the processes' gauges summed (their files stay until mark_process_dead)
    assert merged.value("face_requests_in_flight") == 2
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one file per process and type


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 20
    return {name for expr in expressions for name in re.findall(r"\bface_[a-z_]+\b", expr)}


def test_every_metric_the_dashboard_queries_is_exposed(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path), services=fake_services)) as client:
        client.post("/embedding", files=[("image", ("a.png", png(1), "image/png"))])
        exposed = Scrape(client.get("/metrics").text).names()
    used = dashboard_metric_names()
    assert used - exposed == set(), (
        f"the dashboard queries metrics /metrics lacks: {used - exposed}"
    )
    # and the dashboard shows each family the README promises
    for family in (
        "face_requests_total",
        "face_request_duration_seconds_bucket",
        "face_requests_in_flight",
        "face_admission_queued_requests",
        "face_admission_rejections_total",
        "face_rate_limit_rejections_total",
        "face_auth_failures_total",
        "face_faces_per_image_bucket",
        "face_recognizer_batch_size_bucket",
        "face_triton_queue_seconds_total",
        "face_triton_compute_seconds_total",
        "face_triton_up",
        "face_triton_restarts_total",
        "face_gallery_identities",
        "face_gallery_templates",
    ):
        assert family in used, family


def test_the_dashboard_panels_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
