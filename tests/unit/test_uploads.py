"""Reading images and options out of requests (unit tests; the routes are tested in test_app.py
and test_extract.py)."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from fastapi.exceptions import RequestValidationError

from face_service.analysis import AnalysisOptions
from face_service.api.schemas.extract import DrawOptionsCreate
from face_service.api.uploads import (
    check_image_count,
    check_image_type,
    decode_base64,
    validate_options,
)
from face_service.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaTypeError
from face_service.settings import Settings


def test_base64_images_plain_and_as_data_urls() -> None:
    settings = Settings()
    encoded = base64.b64encode(b"\x89PNG...").decode()
    assert decode_base64(encoded, 0, settings) == b"\x89PNG..."
    assert decode_base64(f"data:image/png;base64,{encoded}", 0, settings) == b"\x89PNG..."


def test_bad_base64_and_oversized_images_become_errors_of_their_own() -> None:
    bad = decode_base64("not base64!", 3, Settings())
    assert isinstance(bad, InvalidImageError)
    assert "'images.data[3]' is not valid base64" in str(bad)
    big = decode_base64("A" * 4000, 0, Settings(max_image_bytes=1000))
    assert isinstance(big, ImageTooLargeError)
    assert "the limit is 1000" in str(big)


def test_image_count_limits() -> None:
    settings = Settings(max_images_per_request=2)
    check_image_count(2, settings)
    with pytest.raises(ImageTooLargeError, match="3 images in one request; the limit is 2"):
        check_image_count(3, settings)
    with pytest.raises(RequestValidationError):
        check_image_count(0, settings)


def test_image_content_types() -> None:
    check_image_type("image/webp", "image")
    check_image_type(None, "image")
    check_image_type("application/octet-stream", "image")
    with pytest.raises(
        UnsupportedMediaTypeError, match="'images\\[1\\]' has content type 'text/csv'"
    ):
        check_image_type("text/csv", "images[1]")


def test_options_from_form_strings_and_their_errors() -> None:
    options = validate_options(DrawOptionsCreate, {"limit_faces": "3", "draw_scores": "false"})
    assert (options.limit_faces, options.draw_scores, options.max_size) == (3, False, 640)
    with pytest.raises(RequestValidationError) as raised:
        validate_options(AnalysisOptions, {"max_size": "100", "typo": "1"})
    locations = [error["loc"] for error in raised.value.errors()]
    assert locations == [("body", "max_size"), ("body", "typo")]


def test_multipart_openapi_documents_the_files_and_the_options() -> None:
    from face_service.api.openapi import multipart_openapi

    extra = multipart_openapi(AnalysisOptions, "images", "images, repeated", name="TestForm")
    body = extra["requestBody"]
    assert body["content"]["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/TestForm"
    }
    schema = extra["x-form-schema"]["TestForm"]
    assert schema["required"] == ["images"]
    assert schema["properties"]["images"]["items"] == {"type": "string", "format": "binary"}
    assert "limit_faces" in schema["properties"]


def upload_paths() -> list[str]:
    """Every route that takes images as multipart/form-data, from the app's OpenAPI document."""
    from app import create_app

    paths = create_app(Settings()).openapi()["paths"]
    return sorted(
        path.replace("{identity_id}", "someone")
        for path, methods in paths.items()
        for operation in methods.values()
        if "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
    )


def test_every_upload_route_is_known() -> None:
    assert upload_paths() == [
        "/draw",
        "/embedding",
        "/extract",
        "/face-similarity",
        "/identify",
        "/identities",
        "/identities/someone/images",
        "/verify",
    ]


@pytest.mark.parametrize("path", upload_paths())
def test_a_body_that_is_not_multipart_is_415_on_every_upload_route(path: str) -> None:
    """Before FastAPI validates the form fields (which would be a 422), and before anything of
    the lifespan (Triton, the gallery) is needed: the app's lifespan does not run here."""
    from app import create_app

    async def post(body: dict) -> httpx.Response:
        # httpx's ASGI transport runs no lifespan: no Triton, no gallery.
        transport = httpx.ASGITransport(app=create_app(Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.post(path, **body)

    bodies = [{"content": b"hello", "headers": {"content-type": "text/plain"}}]
    if path != "/extract":  # /extract takes JSON bodies too
        bodies.append({"json": {"image": "abc", "identity_id": "x"}})
        bodies.append({"data": {"identity_id": "x"}})  # a urlencoded form
    for body in bodies:
        response = asyncio.run(post(body))
        assert response.status_code == 415, (path, body, response.text)
        assert "expected multipart/form-data" in response.json()["detail"]
