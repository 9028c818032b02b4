"""Faces and the rules that pick among them: prominence, selection by size, similarity."""

from __future__ import annotations

import numpy as np
import pytest

from face_service.faces import Face, cosine_similarity, face_size, most_prominent, select_faces


def face(x1: float, y1: float, x2: float, y2: float, score: float = 0.9) -> Face:
    return Face(
        bbox=np.array([x1, y1, x2, y2], np.float32), det_score=score, landmarks=np.zeros((5, 2))
    )


def test_most_prominent_is_largest_then_nearest_centre() -> None:
    small, large = face(0, 0, 10, 10), face(300, 300, 400, 400)
    assert most_prominent([small, large], 1000, 1000) is large
    edge, centre = face(0, 0, 100, 100), face(450, 450, 549, 549)
    assert most_prominent([edge, centre], 1000, 1000) is centre
    with pytest.raises(ValueError, match="no faces"):
        most_prominent([], 10, 10)


def test_most_prominent_prefers_the_centred_subject_over_a_larger_bystander_at_the_edge() -> None:
    # LFW Nia_Vardalos/4.jpg (250x250): the subject is centred, a 14% larger face at the edge.
    subject, bystander = face(71, 68, 165, 197), face(160, 41, 250, 196)
    assert most_prominent([bystander, subject], 250, 250) is subject
    # Scaling the photo does not change the choice.
    scaled = [face(*(v * 4 for v in f.bbox)) for f in (bystander, subject)]
    assert most_prominent(scaled, 1000, 1000) is scaled[1]


def test_cosine_similarity() -> None:
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(0.0)


def test_face_size_is_the_shorter_side() -> None:
    assert face_size(face(10, 20, 50, 100)) == 40


def test_select_faces_filters_small_ones_and_keeps_the_largest_in_score_order() -> None:
    faces = [
        face(0, 0, 10, 10, 0.9),
        face(0, 0, 50, 50, 0.8),
        face(0, 0, 30, 40, 0.7),
        face(0, 0, 20, 90, 0.6),
    ]
    assert select_faces(faces, min_face_size=0, limit=0) == faces
    assert select_faces(faces, min_face_size=25, limit=0) == [faces[1], faces[2]]
    assert select_faces(faces, min_face_size=0, limit=2) == [faces[1], faces[3]]
    assert select_faces(faces, min_face_size=25, limit=1) == [faces[1]]
