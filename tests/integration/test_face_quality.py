"""embedding_norm as a quality signal and the min_quality option, against the real service and
models: a tiny blurred copy of a photo has a lower norm than the sharp photo, and min_quality
between the two rejects the poor face with a 422 naming both values while the sharp one passes."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image, ImageFilter

from tests.photos import wheel_photos

# The poor copy: the photo shrunk to 64 pixels on its long side, then blurred (sigma 2.5); on
# yaoming.jpg its norm measured 16.7 against the sharp photo's 24.2.
POOR_SIDE = 64
POOR_BLUR_SIGMA = 2.5
# The norms must differ by at least this much for the signal to be of use.
MIN_NORM_GAP = 3.0


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def embedding(api: httpx.Client, photo: bytes, **form: str) -> httpx.Response:
    return api.post("/embedding", files={"image": ("photo.png", photo, "image/png")}, data=form)


@pytest.fixture(scope="module")
def photos() -> tuple[bytes, bytes]:
    """(sharp, poor) copies of yaoming.jpg."""
    sharp = Image.open(wheel_photos()["yaoming"]).convert("RGB")
    poor = sharp.copy()
    poor.thumbnail((POOR_SIDE, POOR_SIDE))
    poor = poor.filter(ImageFilter.GaussianBlur(POOR_BLUR_SIGMA))
    return png(sharp), png(poor)


@pytest.fixture(scope="module")
def norms(api: httpx.Client, photos: tuple[bytes, bytes]) -> tuple[float, float]:
    found = []
    for photo in photos:
        response = embedding(api, photo)
        assert response.status_code == 200, response.text
        found.append(response.json()["face"]["embedding_norm"])
    return found[0], found[1]


def test_a_tiny_blurred_face_has_a_lower_embedding_norm(norms: tuple[float, float]) -> None:
    sharp, poor = norms
    assert sharp - poor >= MIN_NORM_GAP, norms


def test_min_quality_rejects_the_poor_face_and_keeps_the_sharp_one(
    api: httpx.Client, photos: tuple[bytes, bytes], norms: tuple[float, float]
) -> None:
    sharp_photo, poor_photo = photos
    between = round((norms[0] + norms[1]) / 2, 2)
    kept = embedding(api, sharp_photo, min_quality=str(between))
    assert kept.status_code == 200, kept.text
    rejected = embedding(api, poor_photo, min_quality=str(between))
    assert rejected.status_code == 422, rejected.text
    detail = rejected.json()["detail"]
    assert f"embedding_norm {norms[1]:.2f} is below min_quality {between:g}" in detail
    assert "'image'" in detail


def test_face_similarity_names_the_image_too_poor_to_compare(
    api: httpx.Client, photos: tuple[bytes, bytes], norms: tuple[float, float]
) -> None:
    sharp_photo, poor_photo = photos
    response = api.post(
        "/face-similarity",
        files={
            "image_a": ("a.png", sharp_photo, "image/png"),
            "image_b": ("b.png", poor_photo, "image/png"),
        },
        data={"min_quality": str(round((norms[0] + norms[1]) / 2, 2))},
    )
    assert response.status_code == 422, response.text
    assert "'image_b' is too poor to compare" in response.json()["detail"]


def test_a_negative_min_quality_is_a_422_naming_the_field(
    api: httpx.Client, photos: tuple[bytes, bytes]
) -> None:
    response = embedding(api, photos[0], min_quality="-1")
    assert response.status_code == 422
    assert "min_quality" in response.text
