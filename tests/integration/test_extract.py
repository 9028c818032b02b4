"""The /extract and /draw routes against the real service."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image

from face_service.testing.service_process import ServiceProcess


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def extract(api: httpx.Client, images: list[tuple[str, bytes]], **options: object) -> dict:
    files = [("images", (name, data, "image/jpeg")) for name, data in images]
    response = api.post(
        "/extract", files=files, data={k: str(v).lower() for k, v in options.items()}
    )
    assert response.status_code == 200, response.text
    return response.json()


def boxes(image: dict) -> np.ndarray:
    return np.array([f["bbox"] for f in image["faces"]])


def test_multi_image_multipart_and_json_match_single_image_calls(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    names = ["gdp", "yaoming", "t1"]
    data = [photos[name].read_bytes() for name in names]
    together = extract(api, list(zip(names, data, strict=True)))["images"]
    as_json = api.post(
        "/extract", json={"images": {"data": [base64.b64encode(d).decode() for d in data]}}
    )
    assert as_json.status_code == 200, as_json.text
    for index, single_data in enumerate(data):
        [single] = extract(api, [(names[index], single_data)])["images"]
        for batch in (together[index], as_json.json()["images"][index]):
            assert batch["status"] == "ok"
            assert (batch["width"], batch["height"]) == (single["width"], single["height"])
            np.testing.assert_allclose(boxes(batch), boxes(single), atol=0.02)
            for a, b in zip(batch["faces"], single["faces"], strict=True):
                assert float(np.dot(a["embedding"], b["embedding"])) > 0.9999
    assert [len(image["faces"]) for image in together] == [5, 1, 6]


def test_limit_faces_returns_the_largest(api: httpx.Client, photos: dict[str, Path]) -> None:
    data = photos["players"].read_bytes()
    [everything] = extract(api, [("players", data)])["images"]
    [limited] = extract(api, [("players", data)], limit_faces=5)["images"]
    assert len(everything["faces"]) == 22
    areas = sorted(((b[2] - b[0]) * (b[3] - b[1]) for b in boxes(everything)), reverse=True)
    limited_areas = sorted(((b[2] - b[0]) * (b[3] - b[1]) for b in boxes(limited)), reverse=True)
    np.testing.assert_allclose(limited_areas, areas[:5], rtol=1e-4)


def test_min_face_size_filters(api: httpx.Client, photos: dict[str, Path]) -> None:
    data = photos["players"].read_bytes()
    [everything] = extract(api, [("players", data)])["images"]
    sizes = sorted(f["face_size"] for f in everything["faces"])
    cut = (sizes[10] + sizes[11]) / 2
    [filtered] = extract(api, [("players", data)], min_face_size=int(cut) + 1)["images"]
    assert all(f["face_size"] >= int(cut) + 1 for f in filtered["faces"])
    assert len(filtered["faces"]) == sum(1 for s in sizes if s >= int(cut) + 1)
    assert 0 < len(filtered["faces"]) < 22


def test_embed_only_on_returned_crops_gives_the_same_embeddings(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    [image] = extract(api, [("t1", photos["t1"].read_bytes())], return_face_crops=True)["images"]
    crops = [base64.b64decode(f["crop"]) for f in image["faces"]]
    assert all(Image.open(io.BytesIO(c)).size == (112, 112) for c in crops)
    again = extract(api, [(f"crop{i}", c) for i, c in enumerate(crops)], embed_only=True)["images"]
    for original, crop_result in zip(image["faces"], again, strict=True):
        [crop_face] = crop_result["faces"]
        assert float(np.dot(original["embedding"], crop_face["embedding"])) >= 0.999


def test_embed_only_refuses_images_that_are_not_crops(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    [image] = extract(api, [("gdp", photos["gdp"].read_bytes())], embed_only=True)["images"]
    assert image["status"] == "error"
    assert "embed_only expects aligned 112x112 face crops" in image["error"]


def test_one_corrupt_image_gets_its_own_error_entry(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    good = photos["yaoming"].read_bytes()
    result = extract(api, [("a", good), ("broken", good[:500]), ("b", photos["gdp"].read_bytes())])
    statuses = [(image["status"], len(image["faces"])) for image in result["images"]]
    assert statuses == [("ok", 1), ("error", 0), ("ok", 5)]
    assert "'images[1]' is a corrupt or truncated image" in result["images"][1]["error"]
    assert set(result["took_ms"]) == {"decode", "detect", "embed", "total"}


def test_options_are_validated_with_422_naming_the_field(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    files = [("images", ("y", photos["yaoming"].read_bytes(), "image/jpeg"))]
    for field, value in [
        ("max_size", "100"),
        ("det_threshold", "1.5"),
        ("limit_faces", "-1"),
        ("nope", "1"),
    ]:
        response = api.post("/extract", files=files, data={field: value})
        assert response.status_code == 422, field
        assert response.json()["detail"][0]["loc"] == ["body", field]
    bad_json = api.post("/extract", json={"images": {"data": []}})
    assert bad_json.status_code == 422
    assert bad_json.json()["detail"][0]["msg"] == "at least one image is required"


def test_too_many_images_is_413(api: httpx.Client) -> None:
    response = api.post("/extract", json={"images": {"data": ["AAAA"] * 33}})
    assert response.status_code == 413
    assert "33 images in one request; the limit is 32" in response.json()["detail"]


def test_draw_returns_the_picture_with_every_box_drawn(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    data = photos["gdp"].read_bytes()
    [found] = extract(api, [("gdp", data)])["images"]
    response = api.post("/draw", files={"image": ("gdp.jpg", data, "image/jpeg")})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-faces-detected"] == "5"
    drawn = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == original.shape
    difference = np.abs(drawn.astype(int) - original.astype(int)).sum(axis=2)
    for x1, y1, x2, y2 in boxes(found).round().astype(int):
        assert difference[max(y1, 0) : y2 + 1, max(x1, 0) : x2 + 1].max() > 100


def test_rotated_photo_is_found_with_auto_rotate_and_not_without(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    upright = Image.open(photos["yaoming"])
    [reference] = extract(api, [("upright", jpeg(upright))])["images"]
    for degrees, transpose in ((90, Image.Transpose.ROTATE_90), (180, Image.Transpose.ROTATE_180)):
        turned = jpeg(upright.transpose(transpose))  # counter-clockwise, as PIL turns
        [plain] = extract(api, [("turned", turned)], auto_rotate=False)["images"]
        [rotated] = extract(api, [("turned", turned)], auto_rotate=True)["images"]
        assert len(rotated["faces"]) == 1, degrees
        assert rotated["rotation"] == degrees
        assert (rotated["width"], rotated["height"]) == Image.open(io.BytesIO(turned)).size
        cos = float(np.dot(rotated["faces"][0]["embedding"], reference["faces"][0]["embedding"]))
        assert cos > 0.8, degrees
        assert plain["rotation"] == 0
        # Without auto_rotate SCRFD may still find the sideways face, but it embeds it poorly.
        if plain["faces"]:
            plain_cos = float(
                np.dot(plain["faces"][0]["embedding"], reference["faces"][0]["embedding"])
            )
            assert plain_cos < cos
    turned_group = jpeg(Image.open(photos["t1"]).transpose(Image.Transpose.ROTATE_270))
    [group] = extract(api, [("t1", turned_group)], auto_rotate=False)["images"]
    [group_rotated] = extract(api, [("t1", turned_group)], auto_rotate=True)["images"]
    assert len(group["faces"]) < 6
    assert len(group_rotated["faces"]) == 6
    assert group_rotated["rotation"] == 270


def test_concurrent_requests_all_get_correct_answers(
    api: httpx.Client, photos: dict[str, Path]
) -> None:
    names = ["players", "gdp", "yaoming", "t1"]
    expected = {
        name: extract(api, [(name, photos[name].read_bytes())])["images"][0] for name in names
    }

    def call(name: str) -> tuple[str, dict]:
        with httpx.Client(base_url=str(api.base_url), timeout=120) as client:
            return name, extract(client, [(name, photos[name].read_bytes())])["images"][0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, names * 4))
    for name, result in results:
        np.testing.assert_allclose(boxes(result), boxes(expected[name]), atol=0.02)
        for a, b in zip(result["faces"], expected[name]["faces"], strict=True):
            assert float(np.dot(a["embedding"], b["embedding"])) > 0.9999


def test_options_left_out_take_the_detection_settings(
    service: ServiceProcess, api: httpx.Client, photos: dict[str, Path], tmp_path: Path
) -> None:
    data = photos["players"].read_bytes()
    [default] = extract(api, [("players", data)])["images"]
    [small] = extract(api, [("players", data)], max_size=320)["images"]
    configured_service = ServiceProcess(
        api_port=0,
        triton_url=service.triton_address,
        work_dir=tmp_path,
        env={"FACE_DET_THRESHOLD": "0.8", "FACE_DETECTOR_INPUT_SIZE": "320"},
    )
    with configured_service, httpx.Client(base_url=configured_service.url, timeout=60) as client:
        [configured] = extract(client, [("players", data)])["images"]
        as_json = client.post(
            "/extract", json={"images": {"data": [base64.b64encode(data).decode()]}}
        )
        [as_default] = extract(client, [("players", data)], max_size=640, det_threshold=0.5)[
            "images"
        ]
        [at_320] = extract(client, [("players", data)], det_threshold=0.5)["images"]
        drawn = client.post("/draw", files={"image": ("players.jpg", data, "image/jpeg")})
    assert len(default["faces"]) == 22
    # At FACE_DET_THRESHOLD=0.8 and FACE_DETECTOR_INPUT_SIZE=320: exactly the faces that a
    # 320 px detection scores at 0.8 or more (5 of players.jpg's), fewer than the default finds.
    confident = [face for face in small["faces"] if face["det_score"] >= 0.8]
    assert 0 < len(configured["faces"]) == len(confident) < len(default["faces"])
    np.testing.assert_allclose(boxes(configured), boxes({"faces": confident}), atol=0.02)
    assert as_json.status_code == 200, as_json.text
    np.testing.assert_allclose(boxes(as_json.json()["images"][0]), boxes(configured), atol=0.02)
    assert drawn.status_code == 200
    assert drawn.headers["x-faces-detected"] == str(len(configured["faces"]))
    # Options given in the request win over the settings.
    np.testing.assert_allclose(boxes(as_default), boxes(default), atol=0.02)
    np.testing.assert_allclose(boxes(at_320), boxes(small), atol=0.02)
