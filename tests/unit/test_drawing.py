"""Drawing what was found onto the picture."""

from __future__ import annotations

import numpy as np

from face_service.drawing import draw_faces
from face_service.faces import Face


def test_draw_faces_draws_inside_boxes_only() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    drawn_face = Face(
        bbox=np.array([20, 20, 80, 80], np.float32),
        det_score=0.9,
        landmarks=np.array([[40, 40], [60, 40], [50, 50], [42, 65], [58, 65]], np.float32),
    )
    drawn = draw_faces(image, [drawn_face], landmarks=True, scores=False)
    assert drawn[20, 50].tolist() == [0, 255, 0]  # the box's top edge
    assert drawn[40, 40].any()  # a landmark
    assert not drawn[:, 120:].any()  # nothing far from the face
    assert not image.any()  # the input is left alone
