"""The limits that hold on the stream, and the five 500s of issue 10, in the fast tier: the real
app and SQLite gallery on stub models (tests/fakes.py), through TestClient."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from face_service.api.admission import AdmissionLimiter
from face_service.errors import ModelUnavailableError
from face_service.settings import Settings
from tests.fakes import EMBEDDING_WIDTH, app_client, png

HUGE = "9223372036854775808"  # 2**63: one past SQLite's and PostgreSQL's bigint


def strict_json(text: str) -> object:
    """JSON as the standard has it: NaN or Infinity in an answer fails."""

    def refuse(name: str) -> None:
        raise AssertionError(f"the answer holds {name}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(tmp_path, max_request_bytes=1_000_000) as client:
        yield client


def enroll(client: TestClient, identity_id: str, **fields: str) -> object:
    return client.post(
        "/identities",
        data={"identity_id": identity_id, **fields},
        files=[("images", ("a.png", png(1), "image/png"))],
    )


# -- the five 500s


@pytest.mark.parametrize("path", ["/identities", "/records"])
@pytest.mark.parametrize("offset", [HUGE, "1000000000001", str(2**70)])
def test_huge_offsets_are_422_naming_offset(client: TestClient, path: str, offset: str) -> None:
    response = client.get(path, params={"offset": offset})
    assert response.status_code == 422
    [error] = strict_json(response.text)["detail"]
    assert error["loc"] == ["query", "offset"]
    assert client.get(path, params={"offset": "1000000000000"}).status_code == 200


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_extract_json_nested_deep_is_422_naming_the_field(client: TestClient, depth: int) -> None:
    body = '{"images": {"data": ' + "[" * depth + "]" * depth + "}}"
    response = client.post("/extract", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    [error] = strict_json(response.text)["detail"]
    assert error["loc"][1].startswith("images.data[0][0]")
    assert "nested more than 32 levels deep" in error["msg"]


def test_extract_json_within_the_depth_bound_is_read(client: TestClient) -> None:
    # 31 levels of a key that is not allowed: validation, not the depth bound, refuses it.
    extra = '{"a": ' * 30 + "1" + "}" * 30
    body = '{"images": {"data": ["x"]}, "extra": ' + extra + "}"
    response = client.post("/extract", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "nested" not in response.text


@pytest.mark.parametrize("depth", [40, 1000])
def test_enrollment_metadata_nested_deep_is_422_naming_metadata(
    client: TestClient, depth: int
) -> None:
    metadata = '{"a": ' * depth + "1" + "}" * depth
    response = enroll(client, "deep", metadata=metadata)
    assert response.status_code == 422
    [error] = strict_json(response.text)["detail"]
    assert error["loc"] == ["body", "metadata"]
    assert "a.a.a" in error["msg"]
    assert "nested more than 32 levels deep" in error["msg"]
    assert len(error["input"]) < 120  # cut short, not echoed whole
    assert client.get("/identities/deep").status_code == 404


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_threshold_is_a_valid_json_422(client: TestClient, value: str) -> None:
    embedding = ",".join(["1"] + ["0"] * (EMBEDDING_WIDTH - 1))
    body = f'{{"embedding": [{embedding}], "threshold": {value}}}'
    for path in ("/identify/embedding", "/verify/embedding"):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, path
        [error] = strict_json(response.text)["detail"]
        assert error["loc"][0] == "body"


def test_the_60000x800_uniform_png_is_a_fast_no_face_with_a_bounded_canvas(
    client: TestClient,
) -> None:
    """The no-face padded retry once asked for a 120000x120000 canvas (40 GiB)."""
    data = cv2.imencode(".png", np.zeros((800, 60000, 3), np.uint8))[1].tobytes()
    assert len(data) < 1_000_000
    detector = client.app.state.pipeline.detector  # type: ignore[attr-defined]
    shapes: list[tuple[int, ...]] = []
    predict = detector.predict

    async def recording(images: list[np.ndarray], **options: object) -> object:
        shapes.extend(image.shape for image in images)
        return await predict(images, **options)

    detector.predict = recording
    started = time.perf_counter()
    response = client.post("/embedding", files=[("image", ("wide.png", data, "image/png"))])
    took = time.perf_counter() - started
    assert response.status_code == 422
    assert response.json() == {
        "detail": "no face found in 'image'",
        "request_id": response.headers["X-Request-ID"],
    }
    assert shapes[0] == (800, 60000, 3)
    assert shapes[1][0] == shapes[1][1] <= 4096  # the padded canvas
    assert took < 10


# -- NaN and echoes


def test_metadata_nan_is_refused_not_stored_as_null(client: TestClient) -> None:
    response = enroll(client, "nan", metadata='{"a": NaN}')
    assert response.status_code == 422
    assert "NaN is not allowed" in strict_json(response.text)["detail"][0]["msg"]
    assert enroll(client, "nan", metadata='{"a": 1.5}').status_code == 201
    for value in ("NaN", "Infinity", "1e999"):
        response = client.patch(
            "/identities/nan",
            content=f'{{"metadata": {{"a": {value}}}}}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422, value
        assert "must be finite" in response.text
    assert client.get("/identities/nan").json()["metadata"] == {"a": 1.5}


def test_patch_metadata_nested_1000_deep_is_422(client: TestClient) -> None:
    assert enroll(client, "p1").status_code == 201
    metadata = '{"a": ' * 1000 + "1" + "}" * 1000
    response = client.patch(
        "/identities/p1",
        content=f'{{"metadata": {metadata}}}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "metadata.a.a" in response.text
    assert "nested more than 32" in response.text


def test_a_large_invalid_input_is_not_echoed(client: TestClient) -> None:
    big = "x" * 500_000
    response = client.post(
        "/identities/p1/merge",
        json={"source_id": big},
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert len(response.content) < 2_000
    [error] = strict_json(response.text)["detail"]
    assert error["input"] == "x" * 100 + "..."


# -- the body limit, on the stream


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"0" * size
        sent += size


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("POST", "/extract", "application/json"),
        ("POST", "/embedding", "multipart/form-data; boundary=x"),
        ("PATCH", "/identities/x", "application/json"),  # a body FastAPI itself reads
    ],
)
def test_a_chunked_body_past_the_limit_is_413(
    client: TestClient, method: str, path: str, content_type: str
) -> None:
    # A generator body is sent chunked: no Content-Length to refuse it by.
    response = client.request(
        method, path, content=chunks(5_000_000), headers={"content-type": content_type}
    )
    assert response.status_code == 413
    assert strict_json(response.text) == {
        "detail": "the request body exceeds the limit of 1000000 bytes",
        "request_id": response.headers["X-Request-ID"],
    }


def test_a_content_length_past_the_limit_is_413_at_once(client: TestClient) -> None:
    response = client.post(
        "/extract", content=b"0" * 1_000_001, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "1000001 bytes exceeds the limit of 1000000" in response.json()["detail"]


def test_a_chunked_body_within_the_limit_is_read(client: TestClient) -> None:
    response = client.post(
        "/extract",
        content=iter([b'{"images": ', b"[]}"]),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422  # read and validated, not refused by size


# -- admission and rate limit


def test_gallery_routes_are_under_admission_control(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        full = AdmissionLimiter(concurrency=1, queue=0)
        full._slots = asyncio.Semaphore(0)  # every slot taken, no room to wait
        client.app.state.admission = full  # type: ignore[attr-defined]
        embedding = [1.0] + [0.0] * (EMBEDDING_WIDTH - 1)
        requests = [
            ("GET", "/identities", None),
            ("GET", "/identities/x", None),
            ("PATCH", "/identities/x", {"name": "y"}),
            ("DELETE", "/identities/x", None),
            ("DELETE", "/identities/x/templates/t", None),
            ("POST", "/identities/x/merge", {"source_id": "y"}),
            ("GET", "/records", None),
            ("GET", "/records/r", None),
            ("DELETE", "/records/r", None),
            ("POST", "/identify/embedding", {"embedding": embedding}),
            ("POST", "/verify/embedding", {"embedding": embedding, "identity_id": "x"}),
        ]
        refused = 0
        for method, path, body in requests:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (method, path)
            assert response.headers["Retry-After"] == "1"
            assert "the service is busy" in response.json()["detail"]
            refused += 1
        assert refused == len(requests) == 11
        assert (full.running, full.waiting) == (0, 0)  # nothing was admitted
        assert client.get("/health/live").status_code == 200


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    with app_client(tmp_path, rate_limit="3/minute") as client:
        assert [client.get("/identities").status_code for _ in range(3)] == [200] * 3
        response = client.get("/identities")
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert "rate limit of 3 per 1 minute" in response.json()["detail"]
        # Probes are never limited.
        assert {client.get("/health/live").status_code for _ in range(10)} == {200}


def test_rate_limit_is_per_key_then_per_address(tmp_path: Path) -> None:
    from face_service.api.rate_limit import RateLimiter

    limiter = RateLimiter("2/minute")
    limiter.check("key:a")
    limiter.check("key:a")
    limiter.check("key:b")  # another client has its own window
    with pytest.raises(Exception, match="rate limit") as raised:
        limiter.check("key:a")
    assert raised.value.status_code == 429  # type: ignore[attr-defined]
    assert not RateLimiter("").enabled


def test_rate_limit_is_off_by_default(client: TestClient) -> None:
    assert {client.get("/identities").status_code for _ in range(50)} == {200}


def test_rate_limit_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="rate limit"):
        Settings(rate_limit="lots")


# -- error texts


def test_503_text_names_no_internal_address(client: TestClient) -> None:
    async def unavailable(*args: object, **kwargs: object) -> object:
        raise ModelUnavailableError(
            "model 'face_detector' is not available: Cannot connect to host 127.0.0.1:8400"
        )

    client.app.state.pipeline.detector.predict = unavailable  # type: ignore[attr-defined]
    response = client.post("/embedding", files=[("image", ("a.png", png(1), "image/png"))])
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {
        "detail": "the models are not available; retry shortly",
        "request_id": response.headers["X-Request-ID"],
    }


def test_a_face_in_a_60000_pixel_wide_image_is_aligned(client: TestClient) -> None:
    """OpenCV's warpAffine refuses sources of 32767 px or more: the crop takes a window."""
    image = np.full((800, 60000, 3), 128, np.uint8)
    image[0, 0] = 1  # one face for the fake detector
    data = cv2.imencode(".png", image)[1].tobytes()
    response = client.post("/embedding", files=[("image", ("wide.png", data, "image/png"))])
    assert response.status_code == 200
    assert response.json()["faces_detected"] == 1


# -- text that a store cannot hold (PostgreSQL refuses NUL; no UTF-8 for a lone surrogate)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "loc"),
    [
        ("GET", "/identities/a%00b", {}, ["path", "identity_id"]),
        ("GET", "/identities", {"params": {"name": "a\x00"}}, ["query", "name"]),
        ("GET", "/records", {"params": {"filename": "\x00"}}, ["query", "filename"]),
        ("PATCH", "/identities/x", {"content": '{"name": "a\\u0000"}'}, ["body", "name"]),
        ("PATCH", "/identities/x", {"content": '{"name": "a\\ud800"}'}, ["body", "name"]),
        (
            "PATCH",
            "/identities/x",
            {"content": '{"metadata": {"k\\u0000": 1}}'},
            ["body", "metadata"],
        ),
        ("POST", "/extract", {"data": {"filename": "a\x00"}}, ["body", "filename"]),
    ],
)
def test_unstorable_text_is_422_naming_the_field(
    client: TestClient, method: str, path: str, kwargs: dict, loc: list
) -> None:
    if "content" in kwargs:
        kwargs = {**kwargs, "headers": {"content-type": "application/json"}}
    if "data" in kwargs:
        kwargs = {**kwargs, "files": [("images", ("a.png", png(1), "image/png"))]}
    response = client.request(method, path, **kwargs)
    assert response.status_code == 422
    [error] = strict_json(response.text)["detail"]
    assert error["loc"] == loc
    assert "NUL" in error["msg"] or "surrogate" in error["msg"]


def test_json_bounds_name_the_field_in_loc(client: TestClient) -> None:
    body = '{"embedding": [1, 0], "threshold": NaN}'
    response = client.post(
        "/identify/embedding", content=body, headers={"content-type": "application/json"}
    )
    assert strict_json(response.text)["detail"] == [
        {
            "type": "value_error",
            "loc": ["body", "threshold"],
            "msg": "threshold: NaN is not allowed; numbers must be finite",
        }
    ]


def test_upload_names_are_stored_without_control_characters(client: TestClient) -> None:
    # By hand: HTTP clients percent-encode such names, but nothing obliges a client to.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="images"; filename="a\x00b\x01.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + png(1) + b"\r\n"
        b'--b\r\nContent-Disposition: form-data; name="store"\r\n\r\ntrue\r\n--b--\r\n'
    )
    response = client.post(
        "/extract", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 200
    [record] = client.get("/records").json()["items"]
    assert record["filename"] == "ab.png"
