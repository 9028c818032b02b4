"""Pictures of what was found: an image with each face's box, landmarks and score drawn on it."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from face_service.faces import Face

BOX_COLOUR = (0, 255, 0)
# BGR colours of the five landmarks: eyes, nose, mouth corners.
LANDMARK_COLOURS = [(255, 0, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0)]


def draw_faces(
    image: np.ndarray, faces: Sequence[Face], *, landmarks: bool, scores: bool
) -> np.ndarray:
    """A copy of the image with each face's box, and optionally its landmarks and score."""
    canvas = image.copy()
    # Lines about 1/400 of the image's long side, so that they show at any size.
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x1, y1, x2, y2 = (round(float(v)) for v in face.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOUR, thickness)
        if landmarks:
            for (x, y), colour in zip(face.landmarks, LANDMARK_COLOURS, strict=True):
                cv2.circle(canvas, (round(float(x)), round(float(y))), thickness + 1, colour, -1)
        if scores:
            cv2.putText(
                canvas,
                f"{face.det_score:.2f}",
                (x1, max(y1 - 4, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * thickness,
                BOX_COLOUR,
                thickness,
            )
    return canvas
