"""The HTTP contract without Triton: the real app, routes, pipeline and SQLite gallery on stub
models (tests/fakes.py), through FastAPI's TestClient. Status codes and bodies for good and bad
requests; the same requests against the real models live in tests/integration."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from face_service.settings import Settings
from tests.fakes import EMBEDDING_WIDTH, fake_services, png


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path,
        max_image_bytes=50_000,
        max_request_bytes=200_000,
        max_images_per_request=3,
    )
    with TestClient(create_app(settings, services=fake_services)) as client:
        yield client


def image(name: str, faces: int) -> tuple[str, tuple[str, bytes, str]]:
    return name, (f"{name}.png", png(faces), "image/png")


def test_health_and_liveness(client: TestClient) -> None:
    assert client.get("/health").json() == {
        "status": "ok",
        "triton": True,
        "models": {"face_detector": True, "face_recognizer": True},
        "reason": None,
        "serving": {
            name: {"backend": "python", "runtime": "openvino", "precision": "bf16"}
            for name in ("face_detector", "face_recognizer")
        },
    }
    assert client.get("/health/live").json() == {"status": "alive"}


def test_embedding_of_the_most_prominent_face(client: TestClient) -> None:
    response = client.post("/embedding", files=[image("image", 3)])
    assert response.status_code == 200
    body = response.json()
    assert len(body["embedding"]) == EMBEDDING_WIDTH
    assert body["faces_detected"] == 3
    # All three are as large; the one nearest the centre (x 70 of 160) is the subject.
    assert body["face"]["bbox"] == [20.0, 0.0, 120.0, 100.0]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "detail"),
    [
        ({"json": {"image": "x"}}, 415, "expected multipart/form-data"),
        ({"data": {"image": "x"}}, 415, "expected multipart/form-data"),
        ({"files": [("image", ("a.txt", b"hello", "text/plain"))]}, 415, "'text/plain'"),
        ({"files": [("image", ("a.png", b"not a png", "image/png"))]}, 400, "not an image"),
        ({"files": [image("image", 0)]}, 422, "no face found in 'image'"),
        ({"files": [("image", ("a.png", b"x" * 60_000, "image/png"))]}, 413, "the limit is 50000"),
        ({"files": [("other", ("a.png", png(1), "image/png"))]}, 422, None),
    ],
)
def test_embedding_refuses_bad_requests_with_a_clear_4xx(
    client: TestClient, request_kwargs: dict, status: int, detail: str | None
) -> None:
    response = client.post("/embedding", **request_kwargs)
    assert response.status_code == status, response.text
    if detail is None:  # FastAPI's validation list, naming the missing field
        assert response.json()["detail"][0]["loc"] == ["body", "image"]
    else:
        assert detail in response.json()["detail"]


def test_a_body_over_the_request_limit_is_413(client: TestClient) -> None:
    response = client.post("/extract", files=[("images", ("a.png", b"x" * 300_000, "image/png"))])
    assert response.status_code == 413
    assert "exceeds the limit of 200000" in response.json()["detail"]


def test_face_similarity_and_its_threshold(client: TestClient) -> None:
    files = [image("image_a", 1), image("image_b", 1)]
    body = client.post("/face-similarity", files=files).json()
    assert body["threshold"] == 0.28  # the recognizer's, as no setting overrides it
    assert body["same_person"] is (body["similarity"] >= 0.28)
    response = client.post("/face-similarity", files=files, data={"threshold": "2"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "threshold"]


def test_extract_multipart_json_and_its_limits(client: TestClient) -> None:
    body = client.post(
        "/extract", files=[image("images", 2), image("images", 0)], data={"limit_faces": "1"}
    ).json()
    assert [len(entry["faces"]) for entry in body["images"]] == [1, 0]
    encoded = base64.b64encode(png(2)).decode()
    body = client.post("/extract", json={"images": {"data": [encoded, "!!"]}}).json()
    assert [entry["status"] for entry in body["images"]] == ["ok", "error"]
    assert "'images.data[1]' is not valid base64" in body["images"][1]["error"]
    too_many = client.post("/extract", files=[image("images", 1)] * 4)
    assert too_many.status_code == 413
    unknown = client.post("/extract", files=[image("images", 1)], data={"bogus": "1"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "bogus"]


def test_enroll_identify_and_the_embedding_width(client: TestClient) -> None:
    enrolled = client.post(
        "/identities", files=[image("images", 1)], data={"identity_id": "ann", "name": "Ann"}
    )
    assert enrolled.status_code == 201, enrolled.text
    assert client.get("/identities/ann").json()["name"] == "Ann"
    assert (
        client.post(
            "/identities", files=[image("images", 1)], data={"identity_id": "ann"}
        ).status_code
        == 409
    )
    query = [1.0] + [0.0] * (EMBEDDING_WIDTH - 1)
    match = client.post("/identify/embedding", json={"embedding": query}).json()["faces"][0]
    assert match["match"]["identity_id"] == "ann"
    wrong = client.post("/identify/embedding", json={"embedding": [1.0] * 512})
    assert wrong.status_code == 422
    assert f"this service's embeddings have {EMBEDDING_WIDTH}" in wrong.json()["detail"]
    assert client.get("/identities/nobody").status_code == 404
