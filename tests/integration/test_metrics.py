"""GET /metrics of the real service (its own Triton, the buffalo_s models, real photos): after
one /embedding of a portrait and one /extract of two group photos, the request counters, the
latency histograms, faces per image, recognizer batch sizes and Triton's own per-model
statistics moved by exactly what those requests did. Then two API processes sharing one
PROMETHEUS_MULTIPROC_DIR, with keys required, scraped with a key of the metrics scope."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from face_service.inference.names import DETECTOR_MODEL, RECOGNIZER_MODEL
from face_service.testing.prometheus_text import Scrape
from face_service.testing.service_process import ServiceProcess


def scrape(api: httpx.Client) -> Scrape:
    response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


def test_real_requests_move_the_metrics_by_exactly_what_they_did(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    identities = api.get("/identities", params={"limit": 1}).json()["total"]
    before = scrape(api)
    assert before.value("face_gallery_identities") == identities

    portrait = api.post(
        "/embedding", files={"image": ("yaoming.jpg", photos["yaoming"].read_bytes())}
    )
    assert portrait.status_code == 200, portrait.text
    files = [
        ("images", (f"{name}.jpg", photos[name].read_bytes(), "image/jpeg"))
        for name in ("gdp", "t1")
    ]
    group = api.post("/extract", files=files)
    assert group.status_code == 200, group.text
    faces = [len(image["faces"]) for image in group.json()["images"]]
    assert faces == [5, 6]
    after = scrape(api)

    def added(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    # requests by route template, and their latency histograms
    assert added("face_requests_total", route="/embedding", method="POST", status="200") == 1
    assert added("face_requests_total", route="/extract", method="POST", status="200") == 1
    assert added("face_requests_total", route="/metrics", method="GET", status="200") == 1
    for route in ("/embedding", "/extract"):
        labels = {"route": route, "method": "POST"}
        assert added("face_request_duration_seconds_count", **labels) == 1
        grown = [
            after_count - before.buckets("face_request_duration_seconds", **labels).get(le, 0.0)
            for le, after_count in sorted(
                after.buckets("face_request_duration_seconds", **labels).items(),
                key=lambda item: float(item[0]),
            )
        ]
        # one observation: 0 in the buckets below its duration, 1 from its bucket up to +Inf
        assert grown == sorted(grown)
        assert set(grown) <= {0.0, 1.0}
        assert grown[-1] == 1.0

    # faces per image: the portrait's one face, then what /extract returned for each photo
    assert added("face_faces_per_image_count") == 3
    assert added("face_faces_per_image_sum") == 1 + sum(faces)
    assert added("face_faces_per_image_bucket", le="1.0") == 1
    assert added("face_faces_per_image_bucket", le="5.0") == 2
    assert added("face_faces_per_image_bucket", le="10.0") == 3

    # recognizer calls: 1 crop for /embedding; for /extract one call of 11 (<= 32): each photo's
    # lead face (the orientation check reads its embedding norm) with its other faces, the
    # photos being upright: every face embedded once
    assert added("face_recognizer_batch_size_count") == 2
    assert added("face_recognizer_batch_size_sum") == 1 + sum(faces)
    assert added("face_recognizer_batch_size_bucket", le="1.0") == 1
    assert added("face_recognizer_batch_size_bucket", le="2.0") == 1
    assert added("face_recognizer_batch_size_bucket", le="16.0") == 2

    # Triton's own statistics: one detector request for /embedding and one per canvas shape for
    # /extract (its photos go through the detector together when their canvases match: gdp's
    # 640x512 and t1's 448x640, trimmed to their short sides, do not) and the two recognizer
    # calls above, inputs counted per image/face. Triton records a request's statistics as it
    # releases the request, which can come just after its answer reached the API: read them
    # again until both models show this test's requests (a few seconds at most), then compare
    # exactly.
    requests = {DETECTOR_MODEL: 3, RECOGNIZER_MODEL: 2}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        added("face_triton_inference_requests_total", model=model, outcome="success") < count
        for model, count in requests.items()
    ):
        time.sleep(0.2)
        after = scrape(api)
    assert after.value("face_triton_up") == 1
    for model in (DETECTOR_MODEL, RECOGNIZER_MODEL):
        assert after.value("face_triton_model_ready", model=model) == 1
        success = {"model": model, "outcome": "success"}
        assert added("face_triton_inference_requests_total", **success) == requests[model]
        assert added("face_triton_inference_requests_total", model=model, outcome="fail") == 0
        assert added("face_triton_queue_seconds_total", model=model) >= 0
        assert added("face_triton_compute_seconds_total", model=model, phase="infer") > 0
        assert after.value("face_triton_inference_requests_total", **success) > 0
    assert added("face_triton_inferences_total", model=DETECTOR_MODEL) == 1 + 2
    assert added("face_triton_inferences_total", model=RECOGNIZER_MODEL) == 1 + sum(faces)
    assert after.value("face_triton_restarts_total") >= 0
    assert "face_triton_restarts_total" in after.names()


ADMIN_KEY = "integration-metrics-admin-key-0123456789abc"


def test_two_api_processes_on_one_multiprocess_dir_answer_merged_metrics_to_a_metrics_key(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    """Two API processes (on the session's Triton) with one PROMETHEUS_MULTIPROC_DIR and keys
    required: either one's /metrics, read with a key of the metrics scope only, counts the
    requests of both."""
    shared = tmp_path / "prometheus"
    shared.mkdir()

    def api_process(name: str) -> ServiceProcess:
        return ServiceProcess(
            api_port=0,
            triton_url=service.triton_address,
            work_dir=tmp_path / name,
            env={
                "FACE_AUTH": "required",
                "FACE_ADMIN_KEY": ADMIN_KEY,
                "PROMETHEUS_MULTIPROC_DIR": str(shared),
            },
        )

    admin = {"X-API-Key": ADMIN_KEY}
    photo = {"image": ("yao.jpg", photos["yaoming"].read_bytes(), "image/jpeg")}
    with (
        api_process("first") as first,
        api_process("second") as second,
        httpx.Client(base_url=first.url, timeout=60) as one,
        httpx.Client(base_url=second.url, timeout=60) as two,
    ):
        created = one.post(
            "/keys", json={"name": "prometheus", "scopes": ["metrics"]}, headers=admin
        )
        assert created.status_code == 201, created.text
        prometheus = {"Authorization": f"Bearer {created.json()['key']}"}
        assert one.get("/metrics").status_code == 401
        assert one.post("/embedding", files=photo, headers=prometheus).status_code == 403
        assert one.post("/embedding", files=photo, headers=admin).status_code == 200
        for _ in range(2):
            assert two.post("/embedding", files=photo, headers=admin).status_code == 200
        answer = one.get("/metrics", headers=prometheus)
        assert answer.status_code == 200, answer.text
        merged = Scrape(answer.text)
    embedded = {"route": "/embedding", "method": "POST"}
    assert merged.value("face_requests_total", **embedded, status="200") == 3
    assert merged.value("face_requests_total", **embedded, status="403") == 1
    assert merged.value("face_request_duration_seconds_count", **embedded) == 4
    assert merged.value("face_faces_per_image_count") == 3
    assert merged.value("face_auth_failures_total", status="401", reason="missing_key") == 1
    assert merged.value("face_auth_failures_total", status="403", reason="missing_scope") == 1
    assert merged.value("face_requests_in_flight") == 1  # the scrape; both processes live
    assert merged.value("face_triton_up") == 1
