"""Which face of an enrollment image becomes the template (unit tests; the routes are tested in
test_gallery_routes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from face_service.enrollment import choose_enrollment_face
from face_service.errors import InvalidImageError
from face_service.faces import Face


def face(x1: float, y1: float, x2: float, y2: float) -> Face:
    return Face(bbox=np.array([x1, y1, x2, y2]), det_score=0.9, landmarks=np.zeros((5, 2)))


def test_one_face_is_the_subject_wherever_it_is() -> None:
    corner = face(0, 0, 20, 20)
    assert choose_enrollment_face([corner], 1000, 1000) is corner


def test_centred_subject_wins_over_a_larger_bystander_at_the_edge() -> None:
    subject, bystander = face(71, 68, 165, 197), face(160, 41, 250, 196)  # LFW Nia_Vardalos/4
    assert choose_enrollment_face([bystander, subject], 250, 250) is subject


def test_a_clearly_larger_face_is_the_subject_next_to_a_small_one() -> None:
    big, small = face(300, 300, 500, 520), face(520, 300, 580, 370)
    assert choose_enrollment_face([small, big], 1000, 1000) is big


def test_group_of_similar_faces_is_ambiguous() -> None:
    group = [face(348, 116, 413, 206), face(129, 38, 194, 118), face(267, 57, 329, 154)]
    with pytest.raises(InvalidImageError, match="3 faces, none clearly the subject"):
        choose_enrollment_face(group, 500, 665)
    with pytest.raises(InvalidImageError, match="no face found"):
        choose_enrollment_face([], 10, 10)
