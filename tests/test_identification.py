"""Enrollment face choice and query helpers (unit tests; the routes are tested in
test_gallery_routes.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from face_service.errors import EmbeddingError, InvalidImageError
from face_service.gallery import Match
from face_service.identification import best_match, choose_enrollment_face, unit_vector
from pipeline import Face

NOW = datetime.now(UTC)


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


def test_unit_vector_normalises_and_refuses_zero_and_nan() -> None:
    np.testing.assert_allclose(unit_vector([3.0, 4.0]), [0.6, 0.8])
    assert unit_vector([3.0, 4.0]).dtype == np.float32
    with pytest.raises(EmbeddingError, match="finite, non-zero"):
        unit_vector([0.0, 0.0])
    with pytest.raises(EmbeddingError):
        unit_vector([float("nan"), 1.0])


def test_best_match_needs_the_threshold() -> None:
    candidates = [Match("a", None, 0.5), Match("b", None, 0.2)]
    assert best_match(candidates, 0.4) == candidates[0]
    assert best_match(candidates, 0.6) is None
    assert best_match([], 0.0) is None
