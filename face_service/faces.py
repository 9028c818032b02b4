"""A face found in an image: its box, detection score, landmarks and, once embedded, its
embedding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Face:
    bbox: np.ndarray  # [x1, y1, x2, y2] in image pixels
    det_score: float
    landmarks: np.ndarray  # (5, 2): eyes, nose, mouth corners
    embedding: np.ndarray | None = None  # (D,), L2-normalised
    embedding_norm: float | None = None  # the norm before normalisation

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))
