"""SCRFD's outputs, as pure numpy: which output is which (grouped by their last dimension), anchor
centres, distances to boxes and keypoints, candidates above a threshold, and non-maximum
suppression. The installer checks a detector's layout with the same grouping the detector uses
to read its outputs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from face_service.errors import ModelConfigError

SCRFD_STRIDES = (8, 16, 32)
# SCRFD output groups by their last dimension: scores, boxes (distances), 5 keypoints.
SCRFD_GROUPS = {1: "score", 4: "bbox", 10: "kps"}


class ScrfdLayoutError(ValueError):
    """Outputs that are not one score, bbox and kps output per stride."""


@dataclass(frozen=True)
class ScrfdOutputs:
    """Output names per group, each in the model's order (that of the strides)."""

    scores: tuple[str, ...]
    boxes: tuple[str, ...]
    points: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [*self.scores, *self.boxes, *self.points]


def group_outputs(last_dims: Iterable[tuple[str, object]]) -> ScrfdOutputs:
    """Groups (name, last dimension) pairs into scores [.,1], boxes [.,4] and keypoints [.,10];
    raises :class:`ScrfdLayoutError` unless each group has one output per stride."""
    groups: dict[int, list[str]] = {width: [] for width in SCRFD_GROUPS}
    for name, last in last_dims:
        if not isinstance(last, int) or last not in groups:
            raise ScrfdLayoutError(
                f"output {name!r} has last dimension {last}; "
                "expected SCRFD score [.,1], bbox [.,4] or kps [.,10]"
            )
        groups[last].append(name)
    counts = {group: len(groups[width]) for width, group in SCRFD_GROUPS.items()}
    if any(count != len(SCRFD_STRIDES) for count in counts.values()):
        raise ScrfdLayoutError(
            f"expected {len(SCRFD_STRIDES)} outputs each of score, bbox and kps, found {counts}"
        )
    return ScrfdOutputs(tuple(groups[1]), tuple(groups[4]), tuple(groups[10]))


def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """(x, y) of every anchor on a ``height`` x ``width`` feature map, row-major, each location
    repeated ``num_anchors`` times: the order in which SCRFD emits its predictions."""
    ys, xs = np.mgrid[:height, :width]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, num_anchors, axis=0) if num_anchors > 1 else centers


def distance_to_box(centers: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Left/top/right/bottom distances from anchor centres to [x1, y1, x2, y2] boxes."""
    return np.concatenate([centers - distances[:, 0:2], centers + distances[:, 2:4]], axis=1)


def distance_to_points(centers: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """(dx, dy) offsets per keypoint to (N, K, 2) keypoints."""
    offsets = distances.reshape(len(distances), -1, 2)
    return centers[:, None, :] + offsets


def decode_scrfd(
    scores: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    keypoints: Sequence[np.ndarray],
    *,
    input_height: int,
    input_width: int,
    threshold: float,
    strides: Sequence[int] = SCRFD_STRIDES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates above ``threshold`` from one image's SCRFD outputs, per stride ``[A, k]``:
    boxes (N, 4), scores (N,) and landmarks (N, 5, 2) in input-canvas pixels."""
    all_boxes, all_scores, all_points = [], [], []
    for stride, score, box, points in zip(strides, scores, boxes, keypoints, strict=True):
        height, width = input_height // stride, input_width // stride
        num_anchors = score.shape[0] // (height * width)
        if num_anchors < 1 or num_anchors * height * width != score.shape[0]:
            raise ModelConfigError(
                f"stride {stride}: {score.shape[0]} predictions do not fit a {height}x{width} map"
            )
        keep = np.where(score[:, 0] >= threshold)[0]
        if keep.size == 0:
            continue
        centers = anchor_centers(height, width, stride, num_anchors)[keep]
        all_scores.append(score[keep, 0])
        all_boxes.append(distance_to_box(centers, box[keep] * stride))
        all_points.append(distance_to_points(centers, points[keep] * stride))
    if not all_scores:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32),
        )
    return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_points)


# Greedy NMS is quadratic in its candidates. SCRFD-500M at 640x640 has 16,800 anchors; a request
# with a near-zero det_threshold passed them all and NMS left 6,000 "faces" of one portrait (the
# fuzzer found it: 75 s for one /extract). Real faces are among the best-scoring candidates: a
# 22-face photo keeps its 22 well inside the first few hundred.
MAX_NMS_CANDIDATES = 2000


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    max_candidates: int = MAX_NMS_CANDIDATES,
) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first, among the
    ``max_candidates`` best-scoring boxes. Areas count the +1 pixel as InsightFace does, so that
    results match it."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")[:max_candidates]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(
            0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1
        )
        overlap = width * height / (areas[best] + areas[rest] - width * height)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)
