"""Photos that arrive turned (90, 180, 270 degrees clockwise, no EXIF tag) on every route that
takes one, against the real service: the same person is found, the reported rotation undoes the
turn (a photo turned 90 degrees clockwise is turned 270 more to be upright), boxes are in the
pixels of the photo as sent; upright photos are not turned; the auto_rotate option and
FACE_AUTO_ROTATE=false give the old answer."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from face_service.testing.service_process import ServiceProcess
from tests.photos import wheel_photos

TURNS = (90, 180, 270)
# Cosine between embeddings of one photo turned and upright: far above the decision threshold
# (0.28) when the face is found upright; measured 0.93-0.99 on these photos.
SAME_PHOTO_SIMILARITY = 0.8
# Boxes found in a turned photo cover the upright photo's box, turned, up to the detector's
# jitter between orientations.
MIN_BOX_IOU = 0.7


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=95)  # no EXIF tag
    return out.getvalue()


def turned(image: Image.Image, degrees: int) -> bytes:
    """The photo turned clockwise by ``degrees`` (PIL's rotate turns counter-clockwise)."""
    return jpeg(image.rotate(-degrees, expand=True)) if degrees else jpeg(image)


def turned_points(points: np.ndarray, degrees: int, width: int, height: int) -> np.ndarray:
    """(N, 2) points of a ``width`` x ``height`` photo, in that photo turned clockwise."""
    for _ in range(degrees // 90):
        points = np.stack([height - points[:, 1], points[:, 0]], axis=1)
        width, height = height, width
    return points


def turned_box(box: list[float], degrees: int, width: int, height: int) -> np.ndarray:
    """``box`` of a ``width`` x ``height`` photo, in that photo turned clockwise by ``degrees``."""
    corners = turned_points(np.array(box, dtype=float).reshape(2, 2), degrees, width, height)
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area - inter))


def undoing(degrees: int) -> int:
    """The clockwise turn that makes upright a photo turned clockwise by ``degrees``."""
    return (360 - degrees) % 360


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def embedding(api: httpx.Client, photo: bytes, **form: str) -> httpx.Response:
    return api.post("/embedding", files={"image": ("photo.jpg", photo, "image/jpeg")}, data=form)


@pytest.fixture(scope="module")
def yao() -> Image.Image:
    return Image.open(wheel_photos()["yaoming"]).convert("RGB")


@pytest.fixture(scope="module")
def hanks() -> Image.Image:
    return Image.open(wheel_photos()["tom_hanks"]).convert("RGB")


@pytest.fixture(scope="module")
def upright(api: httpx.Client, yao: Image.Image) -> dict:
    response = embedding(api, jpeg(yao))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def enrolled(api: httpx.Client, yao: Image.Image, hanks: Image.Image) -> Iterator[str]:
    """Yao Ming enrolled from his upright photo, beside Tom Hanks; his identity id. Both are
    deleted afterwards: the session's gallery is shared, and other tests identify these photos."""
    suffix = uuid.uuid4().hex[:8]
    identity_ids = [f"yao-{suffix}", f"hanks-{suffix}"]
    for identity_id, image in zip(identity_ids, (yao, hanks), strict=True):
        response = api.post(
            "/identities",
            files=[("images", ("upright.jpg", jpeg(image), "image/jpeg"))],
            data={"identity_id": identity_id},
        )
        assert response.status_code == 201, response.text
    yield identity_ids[0]
    for identity_id in identity_ids:
        assert api.delete(f"/identities/{identity_id}").status_code == 204


@pytest.mark.parametrize("degrees", TURNS)
def test_embedding_finds_the_turned_face_upright_in_the_photo_as_sent(
    api: httpx.Client, yao: Image.Image, upright: dict, degrees: int
) -> None:
    response = embedding(api, turned(yao, degrees))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["face"]["rotation"] == undoing(degrees)
    assert cosine(body["embedding"], upright["embedding"]) > SAME_PHOTO_SIMILARITY
    expected = turned_box(upright["face"]["bbox"], degrees, yao.width, yao.height)
    assert iou(np.array(body["face"]["bbox"]), expected) > MIN_BOX_IOU
    # The landmarks too, each the upright photo's, turned (within a few pixels of jitter).
    expected_points = turned_points(
        np.array(upright["face"]["landmarks"]), degrees, yao.width, yao.height
    )
    assert np.abs(np.array(body["face"]["landmarks"]) - expected_points).max() < 8


def test_an_upright_photo_is_not_turned(upright: dict) -> None:
    assert upright["face"]["rotation"] == 0


def test_auto_rotate_off_gives_the_upright_only_answer(
    api: httpx.Client, yao: Image.Image, upright: dict
) -> None:
    photo = turned(yao, 90)
    on = embedding(api, photo).json()
    off = embedding(api, photo, auto_rotate="false")
    # SCRFD may still find the sideways face upright-only, but not upright: it embeds it poorly.
    if off.status_code == 422:
        assert off.json() == {"detail": "no face found in 'image'"}
    else:
        assert off.status_code == 200
        assert off.json()["face"]["rotation"] == 0
        assert cosine(off.json()["embedding"], upright["embedding"]) < cosine(
            on["embedding"], upright["embedding"]
        )
    assert embedding(api, photo, auto_rotate="maybe").status_code == 422


def test_the_setting_off_gives_the_upright_only_answer(
    service: ServiceProcess, tmp_path: Path, yao: Image.Image
) -> None:
    photo = turned(yao, 180)
    with (
        ServiceProcess(
            api_port=0,
            triton_url=service.triton_address,
            work_dir=tmp_path,
            env={"FACE_AUTO_ROTATE": "false"},
        ) as second,
        httpx.Client(base_url=second.url, timeout=60) as client,
    ):
        plain = embedding(client, photo)
        asked = embedding(client, photo, auto_rotate="true")
    assert asked.status_code == 200
    assert asked.json()["face"]["rotation"] == undoing(180)
    assert plain.status_code == 422 or plain.json()["face"]["rotation"] == 0


@pytest.mark.parametrize("degrees", TURNS)
def test_face_similarity_of_a_turned_photo_and_an_upright_one(
    api: httpx.Client, yao: Image.Image, hanks: Image.Image, degrees: int
) -> None:
    files = {
        "image_a": ("a.jpg", jpeg(yao), "image/jpeg"),
        "image_b": ("b.jpg", turned(yao, degrees), "image/jpeg"),
    }
    body = api.post("/face-similarity", files=files).json()
    assert body["same_person"] is True
    assert body["similarity"] > SAME_PHOTO_SIMILARITY
    assert (body["face_a"]["rotation"], body["face_b"]["rotation"]) == (0, undoing(degrees))
    files["image_a"] = ("a.jpg", jpeg(hanks), "image/jpeg")
    other = api.post("/face-similarity", files=files).json()
    assert other["same_person"] is False


@pytest.mark.parametrize("degrees", [0, *TURNS])
def test_identify_and_verify_find_the_enrolled_person_in_a_turned_photo(
    api: httpx.Client, yao: Image.Image, enrolled: str, degrees: int
) -> None:
    photo = turned(yao, degrees)
    found = api.post("/identify", files={"image": ("q.jpg", photo, "image/jpeg")})
    assert found.status_code == 200, found.text
    [face] = found.json()["faces"]
    assert face["match"]["identity_id"] == enrolled
    assert face["match"]["similarity"] > SAME_PHOTO_SIMILARITY
    assert face["rotation"] == undoing(degrees)
    verified = api.post(
        "/verify",
        files={"image": ("q.jpg", photo, "image/jpeg")},
        data={"identity_id": enrolled},
    ).json()
    assert verified["verified"] is True
    assert verified["face"]["rotation"] == undoing(degrees)


def test_enrollment_from_turned_photos_matches_the_upright_photo(
    api: httpx.Client, yao: Image.Image
) -> None:
    identity_id = f"turned-yao-{uuid.uuid4().hex[:8]}"
    response = api.post(
        "/identities",
        files=[("images", (f"{d}.jpg", turned(yao, d), "image/jpeg")) for d in (90, 180)],
        data={"identity_id": identity_id},
    )
    assert response.status_code == 201, response.text
    reports = response.json()["images"]
    assert [r["status"] for r in reports] == ["enrolled", "enrolled"]
    assert [r["face"]["rotation"] for r in reports] == [undoing(90), undoing(180)]
    added = api.post(
        f"/identities/{identity_id}/images",
        files=[("images", ("270.jpg", turned(yao, 270), "image/jpeg"))],
    )
    assert added.status_code == 200, added.text
    [report] = added.json()["images"]
    assert (report["status"], report["face"]["rotation"]) == ("enrolled", undoing(270))
    verified = api.post(
        "/verify",
        files={"image": ("q.jpg", jpeg(yao), "image/jpeg")},
        data={"identity_id": identity_id},
    ).json()
    assert verified["verified"] is True
    assert verified["similarity"] > SAME_PHOTO_SIMILARITY
    assert verified["face"]["rotation"] == 0
    # Not found turned, with the option off the photo is skipped or enrolled as it is.
    refused = api.post(
        f"/identities/{identity_id}/images",
        files=[("images", ("90.jpg", turned(yao, 90), "image/jpeg"))],
        data={"auto_rotate": "false"},
    )
    assert refused.status_code in (200, 422), refused.text
    if refused.status_code == 200:
        assert refused.json()["images"][0]["face"]["rotation"] == 0
    wrong = api.post(
        f"/identities/{identity_id}/images",
        files=[("images", ("q.jpg", jpeg(yao), "image/jpeg"))],
        data={"name": "x"},
    )
    assert wrong.status_code == 422
    assert api.delete(f"/identities/{identity_id}").status_code == 204


def test_extract_and_draw_turn_by_default(api: httpx.Client, yao: Image.Image) -> None:
    photo = turned(yao, 270)
    body = api.post("/extract", files=[("images", ("t.jpg", photo, "image/jpeg"))]).json()
    [image] = body["images"]
    assert (image["rotation"], len(image["faces"])) == (undoing(270), 1)
    assert (image["width"], image["height"]) == (yao.height, yao.width)
    drawn = api.post("/draw", files={"image": ("t.jpg", photo, "image/jpeg")})
    assert drawn.status_code == 200
    assert drawn.headers["x-faces-detected"] == "1"
