"""GET /metrics on the real app with stub models (tests/fakes.py): requests counted by route
TEMPLATE (never a raw id), method and status, the latency histogram's buckets, faces per image,
in-flight and admission gauges, admission / rate-limit / auth refusals, Triton down or silent,
and who may read /metrics. Metrics are per process: each test compares values before and after."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from app import create_app
from face_service.api.admission import AdmissionLimiter
from face_service.metrics import KNOWN_METHODS, LATENCY_BUCKETS, UNMATCHED_ROUTE
from face_service.settings import Settings
from face_service.testing.prometheus_text import Scrape
from tests.fakes import StubTriton, app_client, fake_services, png

ADMIN_KEY = "operator-admin-key-for-the-tests-0123456789"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path) as client:
        yield client


def scrape(client: TestClient, **headers: str) -> Scrape:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    return Scrape(response.text)


def one_image(name: str, faces: int) -> tuple[str, tuple[str, bytes, str]]:
    return name, (f"{name}.png", png(faces), "image/png")


def test_requests_are_counted_by_route_template_method_and_status(client: TestClient) -> None:
    identity_id = secrets.token_hex(16)
    before = scrape(client)
    assert client.get(f"/identities/{identity_id}").status_code == 404
    for _ in range(2):
        assert client.post("/embedding", files=[one_image("image", 1)]).status_code == 200
    assert client.get(f"/no/such/path/{identity_id}").status_code == 404
    assert client.request("BREW", "/embedding").status_code == 405
    assert client.get("/web/no-such-file.js").status_code == 404
    after = scrape(client)

    def added(**labels: str) -> float:
        return after.value("face_requests_total", **labels) - before.value(
            "face_requests_total", **labels
        )

    assert added(route="/identities/{identity_id}", method="GET", status="404") == 1
    assert added(route="/embedding", method="POST", status="200") == 2
    assert added(route=UNMATCHED_ROUTE, method="GET", status="404") == 1
    assert added(route="/embedding", method="OTHER", status="405") == 1
    assert added(route="/web/{path}", method="GET", status="404") == 1
    assert added(route="/metrics", method="GET", status="200") == 1  # the first scrape
    # No raw path or id anywhere: every route label is a template of the app's.
    assert identity_id not in after.text
    templates = {UNMATCHED_ROUTE, *client.get("/openapi.json").json()["paths"]}
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            templates.add(f"{route.path}/{{path}}")
        elif isinstance(getattr(route, "path", None), str):  # the docs and the page
            templates.add(route.path)
    for series in after.series("face_requests_total"):
        assert series["route"] in templates, series
        # (other tests of this process may have sent HEAD or a CORS preflight's OPTIONS)
        assert series["method"] in KNOWN_METHODS | {"OTHER"}, series


def test_latency_histogram_has_every_bucket_per_route(client: TestClient) -> None:
    before = scrape(client)
    for _ in range(3):
        client.post("/embedding", files=[one_image("image", 1)])
    after = scrape(client)
    labels = {"route": "/embedding", "method": "POST"}
    buckets = after.buckets("face_request_duration_seconds", **labels)
    assert sorted(float(le) for le in buckets) == [*LATENCY_BUCKETS, float("inf")]
    counts = [buckets[le] for le in sorted(buckets, key=float)]
    assert counts == sorted(counts)  # cumulative
    count = after.value("face_request_duration_seconds_count", **labels) - before.value(
        "face_request_duration_seconds_count", **labels
    )
    assert count == 3
    assert buckets["+Inf"] == after.value("face_request_duration_seconds_count", **labels)
    assert after.value("face_request_duration_seconds_sum", **labels) > before.value(
        "face_request_duration_seconds_sum", **labels
    )


def test_faces_per_image_is_one_observation_per_image(client: TestClient) -> None:
    before = scrape(client)
    files = [one_image("images", 3), one_image("images", 0), one_image("images", 2)]
    answer = client.post("/extract", files=files)
    assert answer.status_code == 200
    assert [len(image["faces"]) for image in answer.json()["images"]] == [3, 0, 2]
    after = scrape(client)

    def added(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert added("face_faces_per_image_count") == 3
    assert added("face_faces_per_image_sum") == 5
    assert added("face_faces_per_image_bucket", le="0.0") == 1
    assert added("face_faces_per_image_bucket", le="2.0") == 2
    assert added("face_faces_per_image_bucket", le="3.0") == 3


def test_in_flight_counts_the_scrape_itself_and_admission_gauges_settle(
    client: TestClient,
) -> None:
    client.post("/embedding", files=[one_image("image", 1)])
    after = scrape(client)
    assert after.value("face_requests_in_flight") == 1  # the /metrics request being answered
    assert after.value("face_admission_queued_requests") == 0
    assert after.value("face_admission_running_requests") == 0


def test_admission_gauges_follow_running_and_waiting_requests() -> None:
    from face_service.metrics import ADMISSION_QUEUED, ADMISSION_RUNNING

    async def scenario() -> tuple[float, float, float, float]:
        limiter = AdmissionLimiter(concurrency=1, queue=1)
        release = asyncio.Event()
        running0, queued0 = ADMISSION_RUNNING._value.get(), ADMISSION_QUEUED._value.get()

        async def request() -> None:
            async with limiter.slot():
                await release.wait()

        tasks = [asyncio.create_task(request()) for _ in range(2)]
        await asyncio.sleep(0.05)
        during = (
            ADMISSION_RUNNING._value.get() - running0,
            ADMISSION_QUEUED._value.get() - queued0,
        )
        release.set()
        await asyncio.gather(*tasks)
        return (
            *during,
            ADMISSION_RUNNING._value.get() - running0,
            ADMISSION_QUEUED._value.get() - queued0,
        )

    assert asyncio.run(scenario()) == (1, 1, 0, 0)


def test_admission_and_rate_limit_refusals_are_counted(tmp_path: Path) -> None:
    with app_client(tmp_path, rate_limit="3/minute") as client:
        before = scrape(client)
        full = AdmissionLimiter(concurrency=1, queue=0)
        full._slots = asyncio.Semaphore(0)  # every slot taken, no room to wait
        client.app.state.admission = full  # type: ignore[attr-defined]
        answers = [client.get("/identities").status_code for _ in range(5)]
        assert answers == [503, 503, 503, 429, 429]
        # /metrics is outside the rate limit (and admission): it still answers.
        for _ in range(4):
            after = scrape(client)
    assert (
        after.value("face_admission_rejections_total")
        - before.value("face_admission_rejections_total")
        == 3
    )
    assert (
        after.value("face_rate_limit_rejections_total")
        - before.value("face_rate_limit_rejections_total")
        == 2
    )
    assert (
        after.value("face_requests_total", route="/identities", method="GET", status="429")
        - before.value("face_requests_total", route="/identities", method="GET", status="429")
        == 2
    )


def test_triton_down_or_silent_makes_triton_up_0_and_the_scrape_still_answers(
    tmp_path: Path,
) -> None:
    class SilentTriton(StubTriton):
        async def health(self):  # type: ignore[no-untyped-def]
            await asyncio.Event().wait()  # never answers

    with app_client(tmp_path, health_timeout_s=0.2) as client:
        up = scrape(client)
        assert up.value("face_triton_up") == 1
        assert up.value("face_triton_model_ready", model="face_detector") == 1
        # Triton's own statistics (the stub's, tests/fakes.py), converted to seconds.
        assert up.value("face_triton_inferences_total", model="face_detector") == 3
        assert up.value("face_triton_executions_total", model="face_detector") == 2
        assert (
            up.value("face_triton_inference_requests_total", model="face_detector", outcome="fail")
            == 1
        )
        assert up.value("face_triton_queue_seconds_total", model="face_detector") == 1.5
        assert (
            up.value("face_triton_compute_seconds_total", model="face_detector", phase="infer")
            == 2.0
        )
        for triton in (StubTriton(ready=False), SilentTriton()):
            client.app.state.triton = triton  # type: ignore[attr-defined]
            down = scrape(client)
            assert down.value("face_triton_up") == 0
            assert down.series("face_triton_inferences_total") == []
            assert down.value("face_triton_restarts_total") == 0
            assert "face_requests_total" in down.text  # the rest is there


def test_gallery_size_is_exported(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        for identity_id in ("ann", "bob"):
            files = [one_image("images", 1), one_image("images", 1)]
            enrolled = client.post("/identities", files=files, data={"identity_id": identity_id})
            assert enrolled.status_code == 201
        after = scrape(client)
    assert after.value("face_gallery_identities") == 2
    assert after.value("face_gallery_templates") == 4


def test_openapi_documents_metrics_as_text(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"text/plain"}
    assert {"401", "403"} <= set(operation["responses"])


# -- who may read it


def auth_client(tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path, auth="required", admin_key=ADMIN_KEY)
    return TestClient(create_app(settings, services=fake_services))


def make_key(client: TestClient, name: str, *scopes: str) -> dict:
    created = client.post(
        "/keys", json={"name": name, "scopes": list(scopes)}, headers={"X-API-Key": ADMIN_KEY}
    )
    assert created.status_code == 201, created.text
    return created.json()


def test_metrics_needs_the_metrics_scope_when_keys_are_required(tmp_path: Path) -> None:
    with auth_client(tmp_path) as client:
        prometheus = make_key(client, "prometheus", "metrics")
        assert prometheus["scopes"] == ["metrics"]
        reader = make_key(client, "reader", "read")
        before = scrape(client, authorization=f"Bearer {prometheus['key']}")

        assert client.get("/metrics").status_code == 401
        bad = client.get("/metrics", headers={"X-API-Key": "fsk_0123456789ab_" + "a" * 43})
        assert bad.status_code == 401
        refused = client.get("/metrics", headers={"X-API-Key": reader["key"]})
        assert refused.status_code == 403
        assert "lacks the 'metrics' scope" in refused.json()["detail"]
        # least privilege: the metrics key reads no biometric data
        assert (
            client.get("/identities", headers={"X-API-Key": prometheus["key"]}).status_code == 403
        )
        scrape(client, **{"X-API-Key": ADMIN_KEY})  # admin implies metrics
        revoked = client.delete(f"/keys/{reader['key_id']}", headers={"X-API-Key": ADMIN_KEY})
        assert revoked.status_code == 200
        assert client.get("/identities", headers={"X-API-Key": reader["key"]}).status_code == 401
        after = scrape(client, authorization=f"Bearer {prometheus['key']}")

    def added(status: str, reason: str) -> float:
        labels = {"status": status, "reason": reason}
        return after.value("face_auth_failures_total", **labels) - before.value(
            "face_auth_failures_total", **labels
        )

    assert added("401", "missing_key") == 1
    assert added("401", "invalid_key") == 1
    assert added("401", "revoked_key") == 1
    assert added("403", "missing_scope") == 2
    assert prometheus["key"] not in after.text
    assert reader["key"] not in after.text


def test_metrics_is_open_while_keys_are_not_required(client: TestClient) -> None:
    scrape(client)


def test_the_python_client_reads_metrics_with_its_key(tmp_path: Path) -> None:
    from face_client import Client, Forbidden

    with auth_client(tmp_path) as http:
        key = make_key(http, "prometheus", "metrics")["key"]
        reader = make_key(http, "reader", "read")["key"]
        text = Client("http://testserver", api_key=key, http=http).metrics()
        assert Scrape(text).value("face_triton_up") == 1
        with pytest.raises(Forbidden, match="lacks the 'metrics' scope"):
            Client("http://testserver", api_key=reader, http=http).metrics()
