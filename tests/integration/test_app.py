"""The HTTP API against the real service: its own Triton, the real buffalo_s models, real photos."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from face_service.inference.model_config import resolve_precision
from face_service.testing.service_process import ServiceProcess


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def embed(api: httpx.Client, data: bytes, name: str = "photo.jpg") -> dict:
    response = api.post("/embedding", files={"image": (name, data, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def similarity(api: httpx.Client, a: bytes, b: bytes, **form: str) -> httpx.Response:
    return api.post(
        "/face-similarity",
        files={"image_a": ("a.jpg", a, "image/jpeg"), "image_b": ("b.jpg", b, "image/jpeg")},
        data=form,
    )


def test_health_is_ok_with_both_models_ready(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "triton": True,
        "models": {"face_detector": True, "face_recognizer": True},
        "reason": None,
        "serving": {
            name: {
                "backend": "python",
                "runtime": "openvino",
                "precision": resolve_precision("openvino", "auto", name),
            }
            for name in ("face_detector", "face_recognizer")
        },
    }
    assert api.get("/health/live").json() == {"status": "alive"}


def test_embedding_of_one_face_photo(api: httpx.Client, photos: dict[str, Path]) -> None:
    body = embed(api, photos["yaoming"].read_bytes())
    embedding = np.array(body["embedding"])
    assert embedding.shape == (512,)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-4)
    assert body["faces_detected"] == 1
    x1, y1, x2, y2 = body["face"]["bbox"]
    width, height = Image.open(photos["yaoming"]).size
    assert 0 <= x1 < x2 <= width
    assert 0 <= y1 < y2 <= height
    assert body["face"]["det_score"] > 0.5
    landmarks = np.array(body["face"]["landmarks"])
    assert landmarks.shape == (5, 2)
    # Eyes above the nose, nose above the mouth, all inside the box.
    assert landmarks[0, 1] < landmarks[2, 1] < landmarks[3, 1]
    assert np.all((landmarks[:, 0] > x1) & (landmarks[:, 0] < x2))


@pytest.mark.parametrize(
    ("photo", "faces"), [("players", 22), ("t1", 6), ("gdp", 5), ("tom_hanks", 1)]
)
def test_face_counts_on_real_photos(
    api: httpx.Client, photos: dict[str, Path], photo: str, faces: int
) -> None:
    media = "image/png" if photos[photo].suffix == ".png" else "image/jpeg"
    response = api.post(
        "/embedding", files={"image": (photos[photo].name, photos[photo].read_bytes(), media)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["faces_detected"] == faces


def test_most_prominent_face_is_the_largest(api: httpx.Client, photos: dict[str, Path]) -> None:
    body = embed(api, photos["players"].read_bytes())
    x1, y1, x2, y2 = body["face"]["bbox"]
    # players.jpg: the largest of 22 faces is about 41 px wide; a random one would be smaller.
    assert (x2 - x1) * (y2 - y1) > 1500


def test_same_face_after_flip_rescale_and_reencode_scores_well_above_threshold(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    original = Image.open(photos["yaoming"])
    variants = {
        "flipped": jpeg_bytes(ImageOps.mirror(original)),
        "half size": jpeg_bytes(original.resize((original.width // 2, original.height // 2))),
        "double size": jpeg_bytes(original.resize((original.width * 2, original.height * 2))),
        "jpeg quality 40": jpeg_bytes(original, quality=40),
    }
    for name, data in variants.items():
        response = similarity(api, photos["yaoming"].read_bytes(), data)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["same_person"], name
        assert body["similarity"] >= body["threshold"] + 0.3, (name, body["similarity"])


def test_different_people_score_below_threshold(api: httpx.Client, photos: dict[str, Path]) -> None:
    pairs = [("yaoming", "tom_hanks"), ("yaoming", "gdp"), ("tom_hanks", "players")]
    for a, b in pairs:
        response = similarity(api, photos[a].read_bytes(), photos[b].read_bytes())
        assert response.status_code == 200, response.text
        body = response.json()
        assert not body["same_person"], (a, b, body["similarity"])
        assert body["similarity"] < body["threshold"], (a, b)


def test_threshold_can_be_set_per_request(api: httpx.Client, photos: dict[str, Path]) -> None:
    data = photos["yaoming"].read_bytes()
    flipped = jpeg_bytes(ImageOps.mirror(Image.open(photos["yaoming"])))
    strict = similarity(api, data, flipped, threshold="0.999").json()
    assert strict["threshold"] == 0.999
    assert strict["same_person"] is False
    lenient = similarity(api, data, flipped, threshold="-1").json()
    assert lenient["same_person"] is True
    assert similarity(api, data, flipped, threshold="1.5").status_code == 422


def test_similarity_reports_both_faces(api: httpx.Client, photos: dict[str, Path]) -> None:
    body = similarity(api, photos["yaoming"].read_bytes(), photos["gdp"].read_bytes()).json()
    assert len(body["face_a"]["landmarks"]) == 5
    assert len(body["face_b"]["bbox"]) == 4
    assert -1 <= body["similarity"] <= 1


def test_face_filling_the_frame_is_found_by_the_padded_retry(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    body = embed(api, photos["yaoming"].read_bytes())
    x1, y1, x2, y2 = (int(v) for v in body["face"]["bbox"])
    tight = Image.open(photos["yaoming"]).crop((x1 + 5, y1 + 10, x2 - 5, y2 - 5))
    cropped = embed(api, jpeg_bytes(tight.resize((tight.width * 3, tight.height * 3))))
    assert cropped["faces_detected"] >= 1
    cos = float(np.dot(body["embedding"], cropped["embedding"]))
    assert cos > 0.5


def test_not_an_image_is_400(api: httpx.Client) -> None:
    response = api.post(
        "/embedding", files={"image": ("x.jpg", b"definitely not an image", "image/jpeg")}
    )
    assert response.status_code == 400
    assert "'image' is not an image" in response.json()["detail"]


def test_truncated_jpeg_is_400(api: httpx.Client, photos: dict[str, Path]) -> None:
    data = photos["yaoming"].read_bytes()
    response = api.post(
        "/embedding", files={"image": ("x.jpg", data[: len(data) // 3], "image/jpeg")}
    )
    assert response.status_code == 400
    assert "corrupt or truncated" in response.json()["detail"]


def test_empty_upload_is_400(api: httpx.Client) -> None:
    response = api.post("/embedding", files={"image": ("x.jpg", b"", "image/jpeg")})
    assert response.status_code == 400
    assert response.json()["detail"] == "'image' is empty"


def test_too_many_pixels_is_413(api: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("L", (10_000, 6_000)).save(buffer, format="PNG")  # 60 Mpx > the 50 Mpx default
    response = api.post("/embedding", files={"image": ("big.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 413
    assert "10000x6000" in response.json()["detail"]


def test_too_many_bytes_is_413(api: httpx.Client) -> None:
    one_image = 21 * 1024 * 1024  # over the 20 MiB per image
    response = api.post("/embedding", files={"image": ("big.jpg", b"\0" * one_image, "image/jpeg")})
    assert response.status_code == 413
    assert (
        f"'image' has {one_image} bytes; the limit is {20 * 1024 * 1024}"
        in response.json()["detail"]
    )
    whole_request = 65 * 1024 * 1024  # over the 64 MiB per request: refused before it is read
    response = api.post(
        "/extract", files={"images": ("big.jpg", b"\0" * whole_request, "image/jpeg")}
    )
    assert response.status_code == 413
    assert "exceeds the limit of 67108864" in response.json()["detail"]


def test_wrong_content_types_are_415(api: httpx.Client, photos: dict[str, Path]) -> None:
    as_json = api.post("/embedding", json={"image": "abc"})
    assert as_json.status_code == 415
    assert "multipart/form-data" in as_json.json()["detail"]
    as_text = api.post(
        "/embedding", files={"image": ("a.txt", photos["yaoming"].read_bytes(), "text/plain")}
    )
    assert as_text.status_code == 415
    assert "'image' has content type 'text/plain'" in as_text.json()["detail"]


def test_missing_field_is_422(api: httpx.Client, photos: dict[str, Path]) -> None:
    response = api.post(
        "/face-similarity",
        files={"image_a": ("a.jpg", photos["yaoming"].read_bytes(), "image/jpeg")},
    )
    assert response.status_code == 422
    assert any(error["loc"] == ["body", "image_b"] for error in response.json()["detail"])


def test_no_face_is_422_naming_the_image(api: httpx.Client, photos: dict[str, Path]) -> None:
    blank = jpeg_bytes(Image.new("RGB", (400, 300), (120, 160, 200)))
    response = similarity(api, photos["yaoming"].read_bytes(), blank)
    assert response.status_code == 422
    assert response.json()["detail"] == "no face found in 'image_b'"


def test_service_survives_bad_input(api: httpx.Client, photos: dict[str, Path]) -> None:
    for _ in range(3):
        api.post("/embedding", files={"image": ("x.jpg", b"\xff\xd8\xff garbage", "image/jpeg")})
    assert embed(api, photos["yaoming"].read_bytes())["faces_detected"] == 1


def test_docs_and_openapi_are_served(api: httpx.Client) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/embedding", "/face-similarity", "/health", "/health/live"} <= set(paths)
    assert "413" in paths["/embedding"]["post"]["responses"]


def test_triton_down_gives_503_then_recovers_after_restart(
    service: ServiceProcess, api: httpx.Client, photos: dict[str, Path]
) -> None:
    [pid] = service.triton_pids()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    response = api.post(
        "/embedding", files={"image": ("y.jpg", photos["yaoming"].read_bytes(), "image/jpeg")}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "not available" in response.json()["detail"]
    health = api.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["reason"]
    service.wait_healthy(timeout_s=120)
    assert embed(api, photos["yaoming"].read_bytes())["faces_detected"] == 1


def test_external_triton_serves_a_second_api_without_a_server_of_its_own(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    second = ServiceProcess(api_port=0, triton_url=service.triton_address, work_dir=tmp_path)
    with second, httpx.Client(base_url=second.url, timeout=60) as client:
        body = embed(client, photos["yaoming"].read_bytes())
        assert body["faces_detected"] == 1
        assert second.process is not None
        # Its own children only: other test runs on this machine may start Triton servers.
        children = subprocess.run(
            ["pgrep", "-P", str(second.process.pid), "-f", "tritonserver"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert children.stdout.split() == []
    assert not (tmp_path / "triton").exists()
