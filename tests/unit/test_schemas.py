"""Public response bodies."""

from __future__ import annotations

import numpy as np

from face_service.api.schemas.faces import FacePublic
from face_service.faces import Face


def test_face_public_rounds_and_lists_numpy_values() -> None:
    face = Face(
        bbox=np.array([1.23456, 2.0, 30.5, 40.25], np.float32),
        det_score=0.876543219,
        landmarks=np.arange(10, dtype=np.float32).reshape(5, 2) + 0.123,
    )
    public = FacePublic.from_face(face)
    assert public.bbox == [1.23, 2.0, 30.5, 40.25]
    assert public.det_score == 0.87654
    assert public.landmarks[0] == [0.12, 1.12]
    assert len(public.landmarks) == 5
    assert public.model_dump()["landmarks"][4] == [8.12, 9.12]
