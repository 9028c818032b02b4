"""Each service error maps to one HTTP status and names what was wrong."""

from __future__ import annotations

import pytest

from face_service.errors import (
    FaceServiceError,
    ImageTooLargeError,
    InvalidImageError,
    ModelUnavailableError,
    NoFaceError,
    UnsupportedMediaTypeError,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidImageError, 400),
        (ImageTooLargeError, 413),
        (UnsupportedMediaTypeError, 415),
        (ModelUnavailableError, 503),
    ],
)
def test_status_codes(error: type[FaceServiceError], status: int) -> None:
    assert error.status_code == status
    assert issubclass(error, FaceServiceError)


def test_no_face_names_the_image() -> None:
    error = NoFaceError("image_b")
    assert error.status_code == 422
    assert str(error) == "no face found in 'image_b'"
    assert error.field == "image_b"
