"""Faces and the rules that pick among them: prominence, selection by size, similarity."""

from __future__ import annotations

import numpy as np
import pytest

from face_service.faces import (
    UPRIGHT_MAX_TILT_DEGREES,
    UPRIGHT_MIN_SCORE,
    Face,
    cosine_similarity,
    face_size,
    likely_turned,
    looks_upright,
    most_prominent,
    select_faces,
    tilt_degrees,
)
from face_service.imaging import ARCFACE_TEMPLATE


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


# ---------------------------------------------------------------- is the photo likely turned?


def template_face(score: float, degrees: int = 0) -> Face:
    """A face on ArcFace's template (upright), or its landmarks as seen turned clockwise."""
    points = ARCFACE_TEMPLATE.copy()
    if degrees:
        points = rotate_points_clockwise(points, degrees)
    return Face(bbox=np.array([0, 0, 112, 112], np.float32), det_score=score, landmarks=points)


def rotate_points_clockwise(points: np.ndarray, degrees: int) -> np.ndarray:
    """Where points of a 112x112 image land when it is turned clockwise (y points down)."""
    for _ in range(degrees // 90):
        points = np.stack([112 - points[:, 1], points[:, 0]], axis=1)
    return points


@pytest.mark.parametrize(("degrees", "tilt"), [(0, 0.0), (90, 90.0), (180, 180.0), (270, 90.0)])
def test_tilt_is_the_angle_of_eyes_to_mouth_from_straight_down(degrees: int, tilt: float) -> None:
    assert tilt_degrees(template_face(0.9, degrees)) == pytest.approx(tilt, abs=1.0)


def test_a_surely_scored_upright_face_is_not_turned() -> None:
    assert not likely_turned([template_face(0.85)])
    assert looks_upright(template_face(UPRIGHT_MIN_SCORE))


def test_no_face_a_low_best_score_or_a_sideways_face_say_the_photo_is_likely_turned() -> None:
    assert likely_turned([])
    assert likely_turned([template_face(0.65), template_face(0.55)])
    assert likely_turned([template_face(0.9, 90)])
    assert likely_turned([template_face(0.9, 270)])
    assert likely_turned([template_face(0.9, 180)])


def test_the_best_scored_face_decides() -> None:
    """A surely found upright face makes a group photo upright, whatever a stray face says."""
    assert not likely_turned([template_face(0.6, 90), template_face(0.88)])
    assert likely_turned([template_face(0.75), template_face(0.95, 90)])


def test_a_face_tilted_less_than_the_limit_is_upright() -> None:
    turned = np.radians(UPRIGHT_MAX_TILT_DEGREES - 5)
    rotation = np.array([[np.cos(turned), -np.sin(turned)], [np.sin(turned), np.cos(turned)]])
    face = template_face(0.9)
    face.landmarks = (face.landmarks - 56) @ rotation.T + 56
    assert tilt_degrees(face) == pytest.approx(UPRIGHT_MAX_TILT_DEGREES - 5, abs=0.5)
    assert not likely_turned([face])
